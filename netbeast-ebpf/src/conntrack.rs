//! Conntrack-lite: one table per network namespace, shared by every
//! attached interface and by the TC egress program, keyed by the flow's
//! endpoints in canonical order so both directions find the same entry.
//!
//! Connections that have not seen a reply live in `CT_UNREPLIED`; the first
//! reply moves them to `CT_ESTABLISHED`. Both are LRU tables, but a flood of
//! new flows (a SYN flood from random sources) only ever inserts into the
//! first one, so it can never push established connections out.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray},
};
use netbeast_common::{
    CT_ESTABLISHED_ENTRIES, CT_UNREPLIED_ENTRIES, CtConfig, CtEntry, CtKey, ct_state, ct_status,
    stats, tcp_state,
};

use crate::{
    parse::{ICMP_HLEN, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Packet, load, opaque},
    stats::bump,
};

#[map]
static CT_UNREPLIED: LruHashMap<CtKey, CtEntry> =
    LruHashMap::with_max_entries(CT_UNREPLIED_ENTRIES, 0);
#[map]
static CT_ESTABLISHED: LruHashMap<CtKey, CtEntry> =
    LruHashMap::with_max_entries(CT_ESTABLISHED_ENTRIES, 0);
/// Timeouts; all zero (never written) means netfilter's defaults.
#[map]
static CT_CONFIG: Array<CtConfig> = Array::with_max_entries(1, 0);

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
/// `ct_status` bits for the FINs seen, per direction.
const FIN_ORIGINAL: u8 = 2;
const FIN_REPLY: u8 = 4;
const NS: u64 = 1_000_000_000;
const BPF_NOEXIST: u64 = 1;

/// One direction of a flow, as seen in a packet.
#[derive(Clone, Copy)]
pub struct Flow {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
}

impl Flow {
    fn key(&self) -> CtKey {
        let forward = (self.src, self.sport) <= (self.dst, self.dport);
        let (addr_lo, port_lo, addr_hi, port_hi) = if forward {
            (self.src, self.sport, self.dst, self.dport)
        } else {
            (self.dst, self.dport, self.src, self.sport)
        };
        CtKey {
            addr_lo,
            addr_hi,
            port_lo,
            port_hi,
            protocol: self.protocol,
            _pad: [0; 3],
        }
    }
}

/// What conntrack says about the packet being processed, and what to do
/// once it is accepted. Kept in a per-CPU map, not returned on the stack:
/// the verifier then sees one continuation after `track`, not one per path
/// through it, and the 512-byte stack keeps room for the rest.
#[repr(C)]
pub struct Tracking {
    /// `ct_state::*` for the classifier.
    state: u32,
    /// 1 when `key`/`entry` is a new flow to record if the packet is accepted.
    pending: u32,
    key: CtKey,
    entry: CtEntry,
}

#[map]
static TRACKING: PerCpuArray<Tracking> = PerCpuArray::with_max_entries(1, 0);

/// The state `track` found for the current packet.
#[inline(always)]
pub fn state() -> u32 {
    match TRACKING.get(0) {
        Some(t) => t.state,
        None => ct_state::INVALID,
    }
}

#[inline(always)]
fn is_icmp_error(t: u32) -> bool {
    matches!(t, 3 | 4 | 5 | 11 | 12)
}

/// The flow of a packet, and whether it has the L4 header the flow needs.
/// (No `Option`: LLVM fills an empty option's payload with whatever
/// register is at hand, and the verifier then sees pointer arithmetic.)
#[inline(always)]
fn flow_of(pkt: &Packet) -> (Flow, bool) {
    let ports = matches!(pkt.protocol, IPPROTO_TCP | IPPROTO_UDP);
    let icmp = pkt.protocol == IPPROTO_ICMP;
    let (sport, dport) = if ports {
        (pkt.l4a as u16, pkt.l4b as u16)
    } else if icmp {
        (pkt.icmp_id, pkt.icmp_id)
    } else {
        (0, 0)
    };
    let flow = Flow {
        src: pkt.src,
        dst: pkt.dst,
        sport,
        dport,
        protocol: pkt.protocol,
    };
    (flow, pkt.l4_complete || !(ports || icmp))
}

/// (Callers compare with `now.saturating_sub(last_seen)`: another CPU may
/// have stamped the entry after this packet read the clock.)
#[inline(always)]
fn timeout_ns(e: &CtEntry) -> u64 {
    let d = CtConfig::DEFAULT;
    let cfg = match CT_CONFIG.get(0) {
        Some(c) if c.generic != 0 => c,
        _ => &d,
    };
    let secs = cfg.timeout_secs(e);
    secs as u64 * NS
}

/// Follows the TCP handshake and teardown well enough that closed
/// connections expire quickly.
#[inline(always)]
fn tcp_step(e: &mut CtEntry, flags: u8, reply: bool) {
    if flags & TCP_RST != 0 {
        e.tcp_state = tcp_state::CLOSE;
    } else if flags & TCP_SYN != 0 {
        if reply && flags & TCP_ACK != 0 && e.tcp_state == tcp_state::SYN_SENT {
            e.tcp_state = tcp_state::SYN_RECV;
        }
    } else if flags & TCP_FIN != 0 {
        e.status |= if reply { FIN_REPLY } else { FIN_ORIGINAL };
        e.tcp_state = if e.status & (FIN_REPLY | FIN_ORIGINAL) == FIN_REPLY | FIN_ORIGINAL {
            tcp_state::TIME_WAIT
        } else {
            tcp_state::FIN_WAIT
        };
    } else if flags & TCP_ACK != 0
        && (e.tcp_state == tcp_state::SYN_RECV || e.tcp_state == tcp_state::SYN_SENT)
        && e.status & ct_status::SEEN_REPLY != 0
    {
        e.tcp_state = tcp_state::ESTABLISHED;
    }
}

/// True when the packet goes the other way than the connection's first one.
#[inline(always)]
fn is_reply(e: &CtEntry, flow: &Flow) -> bool {
    !(flow.src == e.orig_src && flow.sport == e.orig_sport && flow.dst == e.orig_dst)
}

#[inline(always)]
fn account(e: &mut CtEntry, pkt: &Packet, reply: bool, now: u64) {
    if reply {
        e.status |= ct_status::SEEN_REPLY;
    }
    let d = reply as usize & 1;
    e.packets[d] += 1;
    e.bytes[d] += pkt.total_len as u64;
    e.last_seen_ns = now;
    if pkt.protocol == IPPROTO_TCP {
        tcp_step(e, pkt.tcp_flags, reply);
    }
}

/// A new TCP SYN on a closed connection starts it over, as netfilter does.
#[inline(always)]
fn reopens(e: &CtEntry, pkt: &Packet) -> bool {
    pkt.protocol == IPPROTO_TCP
        && pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
        && (e.tcp_state == tcp_state::CLOSE || e.tcp_state == tcp_state::TIME_WAIT)
}

/// Looks the packet up, updates the connection it belongs to, and leaves
/// the outcome for `state` and `confirm`.
#[inline(never)]
pub fn track(pkt: &Packet, start: usize, end: usize) {
    let Some(t) = TRACKING.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, used by this program run only.
    let t = unsafe { &mut *t };
    t.pending = 0;
    t.state = classify_flow(pkt, start, end, t);
}

#[inline(always)]
fn classify_flow(pkt: &Packet, start: usize, end: usize, t: &mut Tracking) -> u32 {
    let none = |state: u32| state;
    if pkt.fragment {
        // No reassembly here: fragments after the first carry no ports.
        return none(ct_state::UNTRACKED);
    }
    let (flow, complete) = flow_of(pkt);
    if !complete {
        bump(stats::CT_INVALID);
        return none(ct_state::INVALID);
    }
    if pkt.protocol == IPPROTO_ICMP && is_icmp_error(pkt.l4a) {
        return none(related(pkt, start, end));
    }
    let key = flow.key();
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(e) = CT_ESTABLISHED.get_ptr_mut(&key) {
        // SAFETY: map value, valid for this program run.
        let e = unsafe { &mut *e };
        if now.saturating_sub(e.last_seen_ns) > timeout_ns(e) || reopens(e, pkt) {
            if !reopens(e, pkt) {
                bump(stats::CT_EXPIRED);
            }
            let _ = CT_ESTABLISHED.remove(&key);
        } else {
            account(e, pkt, is_reply(e, &flow), now);
            return none(ct_state::ESTABLISHED);
        }
    }
    if let Some(e) = CT_UNREPLIED.get_ptr_mut(&key) {
        // SAFETY: map value, valid for this program run.
        let e = unsafe { &mut *e };
        if now.saturating_sub(e.last_seen_ns) > timeout_ns(e) || reopens(e, pkt) {
            if !reopens(e, pkt) {
                bump(stats::CT_EXPIRED);
            }
            let _ = CT_UNREPLIED.remove(&key);
        } else {
            let reply = is_reply(e, &flow);
            account(e, pkt, reply, now);
            if !reply {
                return none(ct_state::NEW);
            }
            // Straight from the map value: no 56-byte copy on the stack.
            if CT_ESTABLISHED.insert(&key, &*e, 0).is_err() {
                bump(stats::CT_INSERT_FAILED);
            } else {
                let _ = CT_UNREPLIED.remove(&key);
                bump(stats::CT_ESTABLISHED);
            }
            return none(ct_state::ESTABLISHED);
        }
    }
    // No connection: only packets that can open one are NEW.
    let opens = match pkt.protocol {
        IPPROTO_TCP => pkt.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN,
        // Echo, timestamp, information and address-mask requests.
        IPPROTO_ICMP => matches!(pkt.l4a, 8 | 13 | 15 | 17),
        _ => true,
    };
    if !opens {
        bump(stats::CT_INVALID);
        return none(ct_state::INVALID);
    }
    t.key = key;
    t.entry = CtEntry {
        orig_src: flow.src,
        orig_dst: flow.dst,
        orig_sport: flow.sport,
        orig_dport: flow.dport,
        protocol: flow.protocol,
        tcp_state: if pkt.protocol == IPPROTO_TCP {
            tcp_state::SYN_SENT
        } else {
            tcp_state::NONE
        },
        status: 0,
        _pad: 0,
        last_seen_ns: now,
        packets: [1, 0],
        bytes: [pkt.total_len as u64, 0],
        reply_src: flow.dst,
        reply_dst: flow.src,
        reply_sport: flow.dport,
        reply_dport: flow.sport,
    };
    t.pending = 1;
    ct_state::NEW
}

/// Records the connection of an accepted NEW packet (iptables confirms a
/// connection only when its first packet gets through).
#[inline(always)]
pub fn confirm() {
    let Some(t) = TRACKING.get(0) else {
        return;
    };
    if t.pending != 0 {
        match CT_UNREPLIED.insert(&t.key, &t.entry, BPF_NOEXIST) {
            Ok(()) => bump(stats::CT_CREATED),
            // Another CPU recorded it first: fine.
            Err(e) if e == -17 => {}
            Err(_) => bump(stats::CT_INSERT_FAILED),
        }
    }
}

/// RELATED when an ICMP error quotes a packet of a tracked connection.
#[inline(always)]
fn related(pkt: &Packet, start: usize, end: usize) -> u32 {
    let inner = opaque(pkt.l2_len() + pkt.ip_header_len() + ICMP_HLEN);
    // One read per header, each checked on its own (several `Option`s
    // destructured together let LLVM mix their payloads with pointers).
    let Some(ip) = load::<[u8; 20]>(start, end, inner) else {
        bump(stats::CT_INVALID);
        return ct_state::INVALID;
    };
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let Some(l4) = load::<[u8; 8]>(start, end, opaque(inner + (ihl & 0x3c))) else {
        bump(stats::CT_INVALID);
        return ct_state::INVALID;
    };
    if ihl < 20 {
        bump(stats::CT_INVALID);
        return ct_state::INVALID;
    }
    let protocol = ip[9];
    let (sport, dport) = match protocol {
        IPPROTO_TCP | IPPROTO_UDP => (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        ),
        IPPROTO_ICMP => {
            let id = u16::from_be_bytes([l4[4], l4[5]]);
            (id, id)
        }
        _ => (0, 0),
    };
    let key = Flow {
        src: u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]),
        dst: u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]),
        sport,
        dport,
        protocol,
    }
    .key();
    // SAFETY: presence test only.
    let found = unsafe { CT_ESTABLISHED.get(&key).is_some() || CT_UNREPLIED.get(&key).is_some() };
    if found {
        bump(stats::CT_RELATED);
        ct_state::RELATED
    } else {
        bump(stats::CT_INVALID);
        ct_state::INVALID
    }
}
