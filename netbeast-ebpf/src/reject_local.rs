//! REJECT in OUTPUT: the host's own packet is turned into the reply a
//! remote REJECT would have sent (ICMP destination-unreachable quoting it,
//! or a TCP RST) and handed back to the host's stack on the same interface,
//! so the local sender sees the error at once, as with iptables.
//!
//! TC gives byte-level helpers (load/store bytes, change head and tail),
//! so no packet pointer needs to satisfy the verifier here.

use aya_ebpf::{
    bindings::{BPF_F_INGRESS, TC_ACT_SHOT},
    helpers::generated::{
        bpf_redirect, bpf_skb_change_head, bpf_skb_change_tail, bpf_skb_load_bytes,
    },
    macros::map,
    maps::PerCpuArray,
    programs::TcContext,
};
use netbeast_common::{TCP_FLAGS_NONE, ct_state, reject, stats};

use crate::{
    classify::Keys,
    csum::fold,
    parse::{ETH_HLEN, ICMP_HLEN, IPPROTO_ICMP, IPPROTO_TCP, Packet, TCP_HLEN, opaque},
    stats::bump,
};

const IP_HLEN: usize = 20;
/// Room for the original IP header (up to 60 bytes) and up to 20 bytes
/// after it (84: the bound the verifier sees, 20 + 63).
const MAX_QUOTE: usize = 84;
const REPLY_TTL: u8 = 64;
/// The ICMP type of every answer but a reset.
const ICMP_DEST_UNREACH: u32 = 3;
#[map]
static QUOTE: PerCpuArray<[u8; MAX_QUOTE]> = PerCpuArray::with_max_entries(1, 0);

/// The loopback device is ifindex 1 in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

fn shot() -> i32 {
    bump(stats::REJECT_SILENT);
    TC_ACT_SHOT
}

fn sum16(bytes: &[u8]) -> u64 {
    let mut sum = 0u64;
    let mut i = 0;
    while i + 1 < bytes.len() {
        sum += u16::from_be_bytes([bytes[i], bytes[i + 1]]) as u64;
        i += 2;
    }
    if i < bytes.len() {
        sum += (bytes[i] as u64) << 8;
    }
    sum
}

fn ipv4_header(total: u16, df: bool, tos: u8, proto: u8, src: u32, dst: u32) -> [u8; IP_HLEN] {
    let mut h = [0u8; IP_HLEN];
    h[0] = 0x45;
    h[1] = tos;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    if df {
        h[6] = 0x40;
    }
    h[8] = REPLY_TTL;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.to_ne_bytes());
    h[16..20].copy_from_slice(&dst.to_ne_bytes());
    let check = !fold(sum16(&h));
    h[10..12].copy_from_slice(&check.to_be_bytes());
    h
}

/// The source of the ICMP error the kernel's REJECT sends about the host's
/// own packet (`icmp_send()`): the packet's destination when that is one of
/// the host's addresses (its route is local), else the address the host
/// reaches itself by — the packet's own source. (A TCP reset is sent from
/// the destination either way.) The reply crosses OUTPUT with it
/// (`reply_keys`), so rules on the error's source count as iptables'.
fn error_source(pkt: &Packet) -> u32 {
    let dst = pkt.keys.dst;
    // SAFETY: only tested for presence.
    let local =
        unsafe { crate::route::LOCAL_ADDRS.get(&dst) }.is_some() || u32::from_be(dst) >> 24 == 127;
    if local { dst } else { pkt.keys.src }
}

/// The Ethernet header of the reply: the original with its MACs swapped.
fn swapped(eth: [u8; ETH_HLEN]) -> [u8; ETH_HLEN] {
    let mut out = eth;
    out[0..6].copy_from_slice(&eth[6..12]);
    out[6..12].copy_from_slice(&eth[0..6]);
    out
}

/// What `build_reply` made of the packet.
#[repr(u32)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The packet is the reply now.
    Built,
    /// No reply is sent (as iptables sends none).
    None,
    /// The namespace's ICMP rate limits held the error back.
    RateLimited,
}

/// Turns the packet into its reply.
#[inline(never)]
pub fn build_reply(ctx: &TcContext, pkt: &Packet, with: u32) -> Reply {
    // The host's own broadcasts and multicasts meet no reply either.
    if pkt.l3 != ETH_HLEN || pkt.fragment || crate::reject::group_destination(pkt.keys.dst) {
        return Reply::None;
    }
    let Ok(eth) = ctx.load::<[u8; ETH_HLEN]>(0) else {
        return Reply::None;
    };
    let built = if with == reject::TCP_RESET {
        // A reset is no ICMP error: nf_send_reset() sends it unlimited.
        tcp_reset(ctx, pkt, eth)
    } else if pkt.keys.protocol == IPPROTO_ICMP
        && (!pkt.l4_complete || crate::reject::icmp_send_refuses(pkt.keys.l4a))
    {
        // Never an ICMP error about an ICMP error.
        false
    } else if !crate::icmp_limit::allow(pkt.keys.src, ICMP_DEST_UNREACH, false) {
        // icmp_send()'s limits: the error goes to this host, by loopback,
        // which spares it the per-host bucket, not the namespace's budget.
        return Reply::RateLimited;
    } else {
        icmp_unreachable(ctx, pkt, eth, crate::reject::icmp_code(with))
    };
    if built { Reply::Built } else { Reply::None }
}

/// A rate-limited error: the packet is dropped, unanswered.
pub fn rate_limited() -> i32 {
    bump(stats::REJECT_RATE_LIMITED);
    TC_ACT_SHOT
}

/// The classifier keys of the reply `build_reply` made. iptables sends that
/// reply from the host, so it crosses OUTPUT itself, leaving by `lo` with
/// no connection of its own (INVALID): a chain that rejects everything
/// swallows its own replies and the sender sees a timeout, as with iptables.
pub fn reply_keys(ctx: &TcContext, pkt: &Packet, with: u32) -> (Keys, u64) {
    let (protocol, l4a, l4b) = if with == reject::TCP_RESET {
        (IPPROTO_TCP, pkt.keys.l4b, pkt.keys.l4a)
    } else {
        (IPPROTO_ICMP, 3, crate::reject::icmp_code(with) as u32)
    };
    let length = (ctx.len() as u64).saturating_sub(ETH_HLEN as u64);
    // The reply's own header fields, read back from the frame it now is.
    let tos = ctx.load::<u8>(ETH_HLEN + 1).unwrap_or(0);
    let tcp_flags = if protocol == IPPROTO_TCP {
        match ctx.load::<u8>(ETH_HLEN + IP_HLEN + 13) {
            Ok(flags) => flags as u16,
            Err(_) => TCP_FLAGS_NONE as u16,
        }
    } else {
        TCP_FLAGS_NONE as u16
    };
    let src = if with == reject::TCP_RESET {
        pkt.keys.dst
    } else {
        error_source(pkt)
    };
    let keys = Keys {
        src,
        dst: pkt.keys.src,
        protocol,
        ttl: REPLY_TTL,
        tos,
        _pad: 0,
        tcp_flags,
        length: length as u16,
        l4a,
        l4b,
        in_ifindex: 0,
        out_ifindex: LOOPBACK_IFINDEX,
        mac: 0,
        eth_dst: 0,
        ct_state: ct_state::INVALID,
    };
    (keys, length)
}

/// Hands the reply to this host's stack on the interface it was leaving by.
pub fn deliver(ifindex: u32) -> i32 {
    bump(stats::REJECTED);
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(ifindex, BPF_F_INGRESS as u64) as i32 }
}

pub fn silent() -> i32 {
    shot()
}

fn tcp_reset(ctx: &TcContext, pkt: &Packet, eth: [u8; ETH_HLEN]) -> bool {
    if pkt.keys.protocol != IPPROTO_TCP || !pkt.l4_complete || pkt.header_len != IP_HLEN {
        return false;
    }
    let Ok(tcp) = ctx.load::<[u8; TCP_HLEN]>(ETH_HLEN + IP_HLEN) else {
        return false;
    };
    let flags = tcp[13];
    if flags & 0x04 != 0 {
        return false;
    }
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let ack_seq = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    let tcp_len = ((tcp[12] >> 4) as usize) * 4;
    let payload = pkt.total_len().saturating_sub(IP_HLEN + tcp_len) as u32;
    let (rst_seq, rst_ack, rst_flags) = if flags & 0x10 != 0 {
        (ack_seq, 0, 0x04)
    } else {
        let mut ack = seq.wrapping_add(payload);
        if flags & 0x02 != 0 {
            ack = ack.wrapping_add(1);
        }
        if flags & 0x01 != 0 {
            ack = ack.wrapping_add(1);
        }
        (0, ack, 0x14)
    };
    let mut rst = [0u8; TCP_HLEN];
    rst[0..2].copy_from_slice(&tcp[2..4]);
    rst[2..4].copy_from_slice(&tcp[0..2]);
    rst[4..8].copy_from_slice(&rst_seq.to_be_bytes());
    rst[8..12].copy_from_slice(&rst_ack.to_be_bytes());
    rst[12] = 5 << 4;
    rst[13] = rst_flags;
    let pseudo = (u32::from_be(pkt.keys.src) >> 16) as u64
        + (u32::from_be(pkt.keys.src) & 0xffff) as u64
        + (u32::from_be(pkt.keys.dst) >> 16) as u64
        + (u32::from_be(pkt.keys.dst) & 0xffff) as u64
        + IPPROTO_TCP as u64
        + TCP_HLEN as u64;
    let check = !fold(pseudo + sum16(&rst));
    rst[16..18].copy_from_slice(&check.to_be_bytes());
    let ip = ipv4_header(
        (IP_HLEN + TCP_HLEN) as u16,
        true,
        0,
        IPPROTO_TCP,
        pkt.keys.dst,
        pkt.keys.src,
    );
    // SAFETY: helper call on our skb.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, (ETH_HLEN + IP_HLEN + TCP_HLEN) as u32, 0) } != 0 {
        return false;
    }
    ctx.store(0, &swapped(eth), 0).is_ok()
        && ctx.store(ETH_HLEN, &ip, 0).is_ok()
        && ctx.store(ETH_HLEN + IP_HLEN, &rst, 0).is_ok()
}

fn icmp_unreachable(ctx: &TcContext, pkt: &Packet, eth: [u8; ETH_HLEN], code: u8) -> bool {
    // RFC 792 asks for 8 bytes past the IP header. A TCP packet of this host
    // still carries a partial checksum that the kernel will not let us cut
    // (bpf_skb_change_tail refuses to trim below it), so TCP quotes its
    // whole fixed header.
    let past = if pkt.keys.protocol == IPPROTO_TCP {
        TCP_HLEN
    } else {
        8
    };
    let q = pkt.ip_header_len() + past;
    let quoted = if pkt.total_len() < q {
        pkt.total_len()
    } else {
        q
    };
    // The quote lives in a per-CPU map: the stack (512 bytes for the whole
    // call chain) has no room for it next to the classifier.
    let Some(quote) = QUOTE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU scratch, used by this program run only.
    let quote = unsafe { &mut *quote };
    // The fixed 20 bytes first, then the rest, each with a length the
    // verifier can bound away from zero.
    let Ok(head) = ctx.load::<[u8; IP_HLEN]>(ETH_HLEN) else {
        return false;
    };
    quote[..IP_HLEN].copy_from_slice(&head);
    if quoted < IP_HLEN || quoted > IP_HLEN + 63 {
        return false;
    }
    // Laundered, then masked: LLVM would otherwise fold the mask away and
    // hand the helper a length the verifier cannot bound.
    let len = (opaque(quoted - IP_HLEN) as u32) & 0x3f;
    let n = IP_HLEN + len as usize;
    if len != 0 {
        // SAFETY: `len` (1..=63) bytes fit in `quote[IP_HLEN..]` (64).
        let rc = unsafe {
            bpf_skb_load_bytes(
                ctx.skb.skb as *const _,
                (ETH_HLEN + IP_HLEN) as u32,
                quote.as_mut_ptr().add(IP_HLEN) as *mut _,
                len,
            )
        };
        if rc != 0 {
            return false;
        }
    }
    let mut icmp = [0u8; ICMP_HLEN];
    icmp[0] = 3;
    icmp[1] = code;
    let check = !fold(sum16(&icmp) + sum16(&quote[..n]));
    icmp[2..4].copy_from_slice(&check.to_be_bytes());
    let tos = (pkt.keys.tos & 0x1e) | 0xc0;
    let total = (IP_HLEN + ICMP_HLEN + quoted) as u16;
    // Sent from the rejected packet's destination, not from the host's own
    // address as the kernel's error is (`error_source`): handed to the
    // stack on this interface, a packet from a local address is a martian.
    // The keys it crosses OUTPUT with are the kernel's (`reply_keys`).
    let ip = ipv4_header(total, false, tos, IPPROTO_ICMP, pkt.keys.dst, pkt.keys.src);
    let grow = (IP_HLEN + ICMP_HLEN) as u32;
    // SAFETY: helper calls on our skb. The original IP header then sits
    // right where the quote goes: [eth][new ip][icmp][old ip...].
    unsafe {
        if bpf_skb_change_head(ctx.skb.skb, grow, 0) != 0 {
            return false;
        }
        let len = (ETH_HLEN + IP_HLEN + ICMP_HLEN + quoted) as u32;
        if bpf_skb_change_tail(ctx.skb.skb, len, 0) != 0 {
            return false;
        }
    }
    ctx.store(0, &swapped(eth), 0).is_ok()
        && ctx.store(ETH_HLEN, &ip, 0).is_ok()
        && ctx.store(ETH_HLEN + IP_HLEN, &icmp, 0).is_ok()
}
