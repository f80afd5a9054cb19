//! Conntrack-lite: one table per network namespace, shared by every
//! attached interface and by the TC egress program, keyed by the flow's
//! endpoints in canonical order so both directions find the same entry.
//!
//! Connections that have not seen a reply live in `CT_UNREPLIED`; the first
//! reply moves them to `CT_ESTABLISHED`. Both are LRU tables, but a flood of
//! new flows (a SYN flood from random sources) only ever inserts into the
//! first one, so it can never push established connections out.
//!
//! One tracker for both address families: the code is generic over a
//! [`Family`] (its address type, tables, where its L4 header sits, which
//! ICMP messages open, err or stay untracked); [`V4`] and [`V6`] are the
//! two instances, each with its own pair of tables (`CT6_*` for IPv6).

use aya_ebpf::{
    helpers::generated::{bpf_csum_diff, bpf_ktime_get_coarse_ns, bpf_probe_read_kernel},
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray},
};
use netbeast_common::{
    Addr6, CT_ESTABLISHED_ENTRIES, CT_NAT_INDEX_ENTRIES, CT_UNREPLIED_ENTRIES,
    CT6_ESTABLISHED_ENTRIES, CT6_NAT_INDEX_ENTRIES, CT6_UNREPLIED_ENTRIES, ConnmarkTarget,
    CtConfig, CtEntry, CtEntry6, CtEntryOf, CtKey, CtKey6, CtKeyOf, CtTuple, FlowAddr, Guard,
    connmark_target_index, ct_flags, ct_match, ct_state, ct_status, guard_kind, size, stats,
    tcp_state,
};

use crate::{
    csum::fold,
    parse::{
        ICMP_HLEN, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Packet, TCP_HLEN, load,
        opaque,
    },
    stats::bump,
};

#[map]
static CT_UNREPLIED: LruHashMap<CtKey, CtEntry> =
    LruHashMap::with_max_entries(CT_UNREPLIED_ENTRIES, 0);
#[map]
static CT_ESTABLISHED: LruHashMap<CtKey, CtEntry> =
    LruHashMap::with_max_entries(CT_ESTABLISHED_ENTRIES, 0);
/// A translated connection is seen on the wire under up to three tuples:
/// the original one (its key in the tables above), the reply one, and —
/// between the destination translation at ingress and the source
/// translation at egress — the original source with the translated
/// destination. This index maps the keys of the other two to the
/// connection's key. An entry whose connection is gone is stale: lookups
/// check that the connection still has that key, and port allocation may
/// take it over.
#[map]
pub static CT_NAT_INDEX: LruHashMap<CtKey, CtKey> =
    LruHashMap::with_max_entries(CT_NAT_INDEX_ENTRIES, 0);
/// What the `-j CONNMARK` rules of both generations do (`ConnmarkTarget`,
/// at `connmark_target_index(generation, RuleAction::arg)`).
#[map]
static CONNMARK_TARGETS: Array<ConnmarkTarget> = Array::with_max_entries(size::CONNMARK_TARGETS, 0);
/// The IPv6 connections, split as the IPv4 ones, with their own NAT
/// index (`ip6tables -t nat`).
#[map]
static CT6_UNREPLIED: LruHashMap<CtKey6, CtEntry6> =
    LruHashMap::with_max_entries(CT6_UNREPLIED_ENTRIES, 0);
#[map]
static CT6_ESTABLISHED: LruHashMap<CtKey6, CtEntry6> =
    LruHashMap::with_max_entries(CT6_ESTABLISHED_ENTRIES, 0);
#[map]
pub static CT6_NAT_INDEX: LruHashMap<CtKey6, CtKey6> =
    LruHashMap::with_max_entries(CT6_NAT_INDEX_ENTRIES, 0);

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
const TCP_URG: u8 = 0x20;
/// `ct_status` bits for the FINs seen, per direction.
const FIN_ORIGINAL: u8 = 2;
const FIN_REPLY: u8 = 4;
const NS: u64 = 1_000_000_000;
const BPF_NOEXIST: u64 = 1;

/// One direction of a flow, as seen in a packet.
#[derive(Clone, Copy)]
pub struct FlowOf<A> {
    pub src: A,
    pub dst: A,
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
}

/// An IPv4 flow.
pub type Flow = FlowOf<u32>;

impl<A: FlowAddr> FlowOf<A> {
    /// Its key in conntrack zone `zone`.
    #[inline(always)]
    pub fn key(&self, zone: u16) -> CtKeyOf<A> {
        let mut k = CtKeyOf::default();
        self.write_key(&mut k, zone);
        k
    }

    /// Writes its key in conntrack zone `zone` into `k`.
    #[inline(always)]
    pub fn write_key(&self, k: &mut CtKeyOf<A>, zone: u16) {
        set_key(
            k,
            &self.src,
            self.sport,
            &self.dst,
            self.dport,
            self.protocol,
            zone,
        )
    }
}

/// Writes the key of the flow between two endpoints, whichever way it
/// goes, in conntrack zone `zone` into `k`, field by field from where the
/// addresses are: an IPv6 key built as a value and then copied takes its 40 bytes
/// of stack (twice, with the tuples it is made of), which the IPv6
/// program's call chain has no room for.
#[inline(always)]
pub fn set_key<A: FlowAddr>(
    k: &mut CtKeyOf<A>,
    a: &A,
    a_port: u16,
    b: &A,
    b_port: u16,
    protocol: u8,
    zone: u16,
) {
    let forward = a.before(b) || (*a == *b && a_port <= b_port);
    let (lo, port_lo, hi, port_hi) = if forward {
        (a, a_port, b, b_port)
    } else {
        (b, b_port, a, a_port)
    };
    // SAFETY: valid addresses and fields of a key.
    unsafe {
        crate::mem::copy(&mut k.addr_lo, lo);
        crate::mem::copy(&mut k.addr_hi, hi);
    }
    k.port_lo = port_lo;
    k.port_hi = port_hi;
    k.protocol = protocol;
    k._pad = 0;
    k.zone = zone;
}

/// Writes the key of a connection's reply tuple into `k`; `zone` is the
/// connection's (a connection's tuples all live in its zone).
#[inline(always)]
pub fn set_reply_key<A: FlowAddr>(k: &mut CtKeyOf<A>, e: &CtEntryOf<A>, zone: u16) {
    set_key(
        k,
        &e.reply_src,
        e.reply_sport,
        &e.reply_dst,
        e.reply_dport,
        e.protocol,
        zone,
    )
}

/// Writes the key of the tuple TC egress sees in the original direction
/// (the destination already translated, the source not yet) into `k`.
#[inline(always)]
pub fn set_mid_key<A: FlowAddr>(k: &mut CtKeyOf<A>, e: &CtEntryOf<A>, zone: u16) {
    set_key(
        k,
        &e.orig_src,
        e.orig_sport,
        &e.reply_src,
        e.reply_sport,
        e.protocol,
        zone,
    )
}

/// What conntrack says about the packet being processed, and what to do
/// once it is accepted. Kept in a per-CPU map, not returned on the stack:
/// the verifier then sees one continuation after `track`, not one per path
/// through it, and the 512-byte stack keeps room for the rest.
#[repr(C)]
pub struct TrackingOf<A> {
    /// `ct_state::*` for the classifier.
    pub state: u32,
    /// 1 when `key`/`entry` is a new flow to record if the packet is accepted.
    pub pending: u32,
    /// 1 when `entry` is a copy of the packet's connection, found in a table.
    pub found: u32,
    /// 1 when the packet goes the reply way of `entry`.
    pub reply: u32,
    /// The packet's conntrack zone, set before `track` (`set_zone`): the
    /// raw table's `-j CT --zone`, else 0. Its lookups and the connection
    /// it opens are in that zone.
    pub zone: u32,
    /// The connection's key (its original tuple's).
    pub key: CtKeyOf<A>,
    pub entry: CtEntryOf<A>,
    /// Set when `key` came from `CT_NAT_INDEX` for the packet's own key
    /// `wire`: `lookup` then takes the connection only if it still has that
    /// key, before accounting the packet to it. Once tracking is done,
    /// NAT's port search builds its candidate keys in `wire` (off the
    /// stack, which the IPv6 ones would overflow).
    via_index: u32,
    pub wire: CtKeyOf<A>,
    /// The flow an ICMP error quotes, and its key: here rather than on the
    /// stack, which the IPv6 ones (40 bytes each) would overflow.
    quoted: FlowOf<A>,
    quoted_key: CtKeyOf<A>,
}

/// An IPv4 packet's tracking.
pub type Tracking = TrackingOf<u32>;

#[map]
static TRACKING: PerCpuArray<Tracking> = PerCpuArray::with_max_entries(1, 0);
#[map]
static TRACKING6: PerCpuArray<TrackingOf<Addr6>> = PerCpuArray::with_max_entries(1, 0);

/// What the tracker needs to know of an address family: its tables, its
/// packets' layout and its ICMP. Everything else is one code for both.
pub trait Family {
    type Addr: FlowAddr + 'static;
    /// The family's ICMP protocol (1, or 58 for ICMPv6).
    const ICMP: u8;
    /// Its packets can be given a conntrack zone (IPv4's raw table, `-j CT
    /// --zone`). IPv6 has no raw table yet: its keys are always of zone 0,
    /// a constant the compiler folds — the IPv6 program's call chain
    /// (`track6`, `lookup::<V6>`) is at the 512-byte stack limit, and a
    /// zone carried through it took it past.
    const ZONED: bool;
    fn unreplied() -> &'static LruHashMap<CtKeyOf<Self::Addr>, CtEntryOf<Self::Addr>>;
    fn established() -> &'static LruHashMap<CtKeyOf<Self::Addr>, CtEntryOf<Self::Addr>>;
    /// The index of translated connections' other keys; `None` where the
    /// family has no NAT.
    fn nat_index() -> Option<&'static LruHashMap<CtKeyOf<Self::Addr>, CtKeyOf<Self::Addr>>>;
    fn tracking_slot() -> Option<*mut TrackingOf<Self::Addr>>;
    /// The packet's source and destination.
    fn addresses(pkt: &Packet) -> (Self::Addr, Self::Addr);
    /// Offset of the L4 header from the frame's start, and the bytes from
    /// it to the end of the IP payload.
    fn l4(pkt: &Packet) -> (usize, usize);
    /// The sum (unfolded, little-endian words) of the pseudo-header's
    /// addresses.
    fn pseudo_addresses(pkt: &Packet) -> u64;
    /// The packet is a first fragment (more follow): its L4 checksum is
    /// the whole datagram's.
    fn first_fragment(pkt: &Packet, start: usize, end: usize) -> bool;
    /// ICMP types that quote a packet, open a connection (requests), or
    /// that conntrack leaves untracked.
    fn icmp_error(t: u32) -> bool;
    fn icmp_opens(t: u32) -> bool;
    fn icmp_untracked(t: u32) -> bool;
    /// Writes the flow of the packet an ICMP error quotes into `q`; false
    /// when it cannot be read.
    fn quoted(pkt: &Packet, start: usize, end: usize, q: &mut FlowOf<Self::Addr>) -> bool;
}

/// IPv4.
pub struct V4;
/// IPv6.
pub struct V6;

impl Family for V4 {
    type Addr = u32;
    const ICMP: u8 = IPPROTO_ICMP;
    const ZONED: bool = true;
    #[inline(always)]
    fn unreplied() -> &'static LruHashMap<CtKey, CtEntry> {
        &CT_UNREPLIED
    }
    #[inline(always)]
    fn established() -> &'static LruHashMap<CtKey, CtEntry> {
        &CT_ESTABLISHED
    }
    #[inline(always)]
    fn nat_index() -> Option<&'static LruHashMap<CtKey, CtKey>> {
        Some(&CT_NAT_INDEX)
    }
    #[inline(always)]
    fn tracking_slot() -> Option<*mut Tracking> {
        TRACKING.get_ptr_mut(0)
    }
    #[inline(always)]
    fn addresses(pkt: &Packet) -> (u32, u32) {
        (pkt.keys.src, pkt.keys.dst)
    }
    #[inline(always)]
    fn l4(pkt: &Packet) -> (usize, usize) {
        let ip_len = pkt.ip_header_len();
        (
            pkt.l2_len() + ip_len,
            pkt.total_len().saturating_sub(ip_len),
        )
    }
    #[inline(always)]
    fn pseudo_addresses(pkt: &Packet) -> u64 {
        pkt.keys.src as u64 + pkt.keys.dst as u64
    }
    #[inline(always)]
    fn first_fragment(pkt: &Packet, start: usize, end: usize) -> bool {
        match load::<u16>(start, end, pkt.l2_len() + 6) {
            Some(field) => u16::from_be(field) & IP_MORE_FRAGMENTS != 0,
            None => true,
        }
    }
    #[inline(always)]
    fn icmp_error(t: u32) -> bool {
        is_icmp_error(t)
    }
    #[inline(always)]
    fn icmp_opens(t: u32) -> bool {
        // Echo, timestamp, information and address-mask requests.
        matches!(t, 8 | 13 | 15 | 17)
    }
    #[inline(always)]
    fn icmp_untracked(_t: u32) -> bool {
        false
    }
    #[inline(always)]
    fn quoted(pkt: &Packet, start: usize, end: usize, q: &mut Flow) -> bool {
        quoted4(pkt, start, end, q)
    }
}

/// Offset masks for the IPv6 upper-layer header read back from the packet
/// slot (`Packet::walk_off`): as the parser bounds it.
const L4_OFF_MASK: usize = 0x3fff;
/// The fixed IPv6 header.
const IPV6_HLEN: usize = 40;

impl Family for V6 {
    type Addr = Addr6;
    const ICMP: u8 = IPPROTO_ICMPV6;
    const ZONED: bool = false;
    #[inline(always)]
    fn unreplied() -> &'static LruHashMap<CtKey6, CtEntry6> {
        &CT6_UNREPLIED
    }
    #[inline(always)]
    fn established() -> &'static LruHashMap<CtKey6, CtEntry6> {
        &CT6_ESTABLISHED
    }
    #[inline(always)]
    fn nat_index() -> Option<&'static LruHashMap<CtKey6, CtKey6>> {
        Some(&CT6_NAT_INDEX)
    }
    #[inline(always)]
    fn tracking_slot() -> Option<*mut TrackingOf<Addr6>> {
        TRACKING6.get_ptr_mut(0)
    }
    #[inline(always)]
    fn addresses(pkt: &Packet) -> (Addr6, Addr6) {
        let (k, w) = (&pkt.keys, &pkt.addr6);
        (
            Addr6([k.src, w[0], w[2], w[4]]),
            Addr6([k.dst, w[1], w[3], w[5]]),
        )
    }
    #[inline(always)]
    fn l4(pkt: &Packet) -> (usize, usize) {
        // The parser leaves the upper layer's offset where its walk ended.
        let l4 = pkt.walk_off as usize & L4_OFF_MASK;
        let payload_end = pkt.l3 + pkt.total_len();
        (l4, payload_end.saturating_sub(l4))
    }
    #[inline(always)]
    fn pseudo_addresses(pkt: &Packet) -> u64 {
        let (k, w) = (&pkt.keys, &pkt.addr6);
        k.src as u64
            + k.dst as u64
            + w[0] as u64
            + w[1] as u64
            + w[2] as u64
            + w[3] as u64
            + w[4] as u64
            + w[5] as u64
    }
    #[inline(always)]
    fn first_fragment(pkt: &Packet, _start: usize, _end: usize) -> bool {
        pkt.first_fragment6
    }
    #[inline(always)]
    fn icmp_error(t: u32) -> bool {
        // RFC 4443: types below 128 are errors.
        t < 128
    }
    #[inline(always)]
    fn icmp_opens(t: u32) -> bool {
        // Echo request and node information query (nf_conntrack's
        // `valid_new` for ICMPv6).
        matches!(t, 128 | 139)
    }
    #[inline(always)]
    fn icmp_untracked(t: u32) -> bool {
        // MLD queries and reports, router and neighbour solicitations and
        // advertisements: netfilter leaves them UNTRACKED (`noct_valid_new`),
        // so a stateful ruleset needs its own rules for NDP.
        matches!(t, 130 | 131 | 132 | 133 | 134 | 135 | 136 | 143)
    }
    #[inline(always)]
    fn quoted(pkt: &Packet, start: usize, end: usize, q: &mut FlowOf<Addr6>) -> bool {
        quoted6(pkt, start, end, q)
    }
}

/// The current IPv4 packet's tracking, for NAT to read and complete.
#[inline(always)]
pub fn tracking() -> Option<&'static mut Tracking> {
    tracking_of::<V4>()
}

/// The current IPv6 packet's tracking (`-m connlimit` reads its key).
#[inline(always)]
pub fn tracking6() -> Option<&'static mut TrackingOf<Addr6>> {
    tracking_of::<V6>()
}

/// The current packet's tracking in family `F`.
#[inline(always)]
pub fn tracking_of<F: Family>() -> Option<&'static mut TrackingOf<F::Addr>> {
    let t = F::tracking_slot()?;
    // SAFETY: per-CPU scratch, used by this program run only.
    Some(unsafe { &mut *t })
}

/// Leaves the current packet out of conntrack (the raw table's `-j CT
/// --notrack`): no connection, so nothing is recorded, updated, translated
/// or confirmed for it, and its state is UNTRACKED. Returns that state.
#[inline(always)]
pub fn untrack() -> u32 {
    untrack_of::<V4>()
}

/// [`untrack`] for the current IPv6 packet (`ip6tables -t raw -j CT
/// --notrack`).
#[inline(always)]
pub fn untrack6() -> u32 {
    untrack_of::<V6>()
}

#[inline(always)]
fn untrack_of<F: Family>() -> u32 {
    if let Some(t) = tracking_of::<F>() {
        t.pending = 0;
        t.found = 0;
        t.reply = 0;
        t.state = ct_state::UNTRACKED;
    }
    ct_state::UNTRACKED
}

/// Gives the current IPv4 packet its conntrack zone (from the raw
/// table's `-j CT --zone`; 0 without one) before `track`.
#[inline(always)]
pub fn set_zone(zone: u32) {
    if let Some(t) = tracking() {
        t.zone = zone & 0xffff;
    }
}

/// The state `track` found for the current IPv4 packet.
#[inline(always)]
pub fn state() -> u32 {
    state_of::<V4>()
}

/// The state `track6` found for the current IPv6 packet.
#[inline(always)]
pub fn state6() -> u32 {
    state_of::<V6>()
}

#[inline(always)]
fn state_of<F: Family>() -> u32 {
    match tracking_of::<F>() {
        Some(t) => t.state,
        None => ct_state::INVALID,
    }
}

/// The classifier's connection key (`ct_state`'s layout) for the current
/// packet in state `state`: for a packet with a connection, the
/// connection's translation, the packet's direction and the status bits
/// xt_conntrack tests; the state alone otherwise. Read at each chain: the
/// destination translation of nat PREROUTING shows from FORWARD on.
#[inline(always)]
pub fn key(state: u32) -> u32 {
    key_of_state::<V4>(state)
}

/// [`key`] for the current IPv6 packet.
#[inline(always)]
pub fn key6(state: u32) -> u32 {
    key_of_state::<V6>(state)
}

#[inline(always)]
fn key_of_state<F: Family>(state: u32) -> u32 {
    if state != ct_state::NEW && state != ct_state::ESTABLISHED && state != ct_state::RELATED {
        return state;
    }
    let Some(t) = tracking_of::<F>() else {
        return state;
    };
    let e = &t.entry;
    let mut k = state;
    if e.status & ct_status::SRC_NAT != 0 {
        k |= ct_state::SNAT;
    }
    if e.status & ct_status::DST_NAT != 0 {
        k |= ct_state::DNAT;
    }
    if t.reply != 0 {
        k |= ct_state::REPLY;
    }
    if e.status & ct_status::SEEN_REPLY != 0 {
        k |= ct_state::SEEN_REPLY;
    }
    // A connection of a table: the kernel's IPS_CONFIRMED, set when the
    // first packet left the box; a NEW one not recorded yet has not.
    if t.pending == 0 {
        k |= ct_state::CONFIRMED;
    }
    // The kernel's IPS_ASSURED for TCP: the handshake completed (it stays
    // set through the teardown). Never for UDP (see docs/FEATURES.md).
    if e.protocol == IPPROTO_TCP
        && matches!(
            e.tcp_state,
            tcp_state::ESTABLISHED | tcp_state::FIN_WAIT | tcp_state::TIME_WAIT
        )
    {
        k |= ct_state::ASSURED;
    }
    k
}

/// A `-m conntrack` guard on the current packet's connection: its tuples
/// (`guard_kind::CT_TUPLE`), protocol and remaining lifetime
/// (`CT_PROTO_EXPIRE`), read from `Tracking` as conntrack left it for this
/// packet. `state` is the packet's `ct_state` (low bits of the chain's
/// connection key). A packet without a connection passes: the match's
/// state test, a classifier key, decided for it (xt_conntrack tests
/// nothing else then).
#[inline(always)]
pub fn guard_holds(g: &Guard, state: u32) -> bool {
    if state != ct_state::NEW && state != ct_state::ESTABLISHED && state != ct_state::RELATED {
        return true;
    }
    let Some(t) = TRACKING.get(0) else {
        return false;
    };
    if t.found == 0 && t.pending == 0 {
        return false;
    }
    let e = &t.entry;
    if g.kind == guard_kind::CT_TUPLE {
        let tuple = if g._pad & ct_match::REPLY != 0 {
            CtTuple {
                src: e.reply_src,
                dst: e.reply_dst,
                sport: e.reply_sport,
                dport: e.reply_dport,
            }
        } else {
            CtTuple {
                src: e.orig_src,
                dst: e.orig_dst,
                sport: e.orig_sport,
                dport: e.orig_dport,
            }
        };
        return g.holds_ct_tuple(&tuple);
    }
    // netfilter's nf_ct_expires(): a connection not confirmed yet (its
    // first packet, still on its way) holds its timeout relative, so it
    // reads 0; a confirmed one, the time to its timeout, in whole seconds.
    let expires = if t.pending != 0 {
        0
    } else {
        (e.last_seen_ns + timeout_ns(e)).saturating_sub(now_ns()) / NS
    };
    g.holds_ct_proto_expire(e.protocol, expires)
}

/// The packet has a connection in the chain whose connection key's state
/// is `state` (the kernel's `nf_ct_get` returns one): NEW (the entry its
/// first packet will confirm), ESTABLISHED, or RELATED (the connection an
/// ICMP error quotes). Not INVALID, UNTRACKED, nor the raw chains, which
/// run before conntrack.
#[inline(always)]
fn has_connection(state: u32) -> bool {
    state == ct_state::NEW || state == ct_state::ESTABLISHED || state == ct_state::RELATED
}

/// `-m connmark` on the current packet (`state`: the chain's `ct_state`;
/// an ip6tables chain's connection is in the IPv6 tracker): its
/// connection's mark, as `-j CONNMARK` rules left it; never
/// for a packet without a connection (xt_connmark).
#[inline(always)]
pub fn connmark_holds(g: &Guard, state: u32) -> bool {
    if !has_connection(state) {
        return g.holds_connmark(None);
    }
    let mark = if crate::parse::ipv6_search() {
        connection_mark::<V6>()
    } else {
        connection_mark::<V4>()
    };
    g.holds_connmark(mark)
}

/// The mark of the current packet's connection, when it has one.
#[inline(always)]
fn connection_mark<F: Family>() -> Option<u32> {
    match tracking_of::<F>() {
        Some(t) if t.found != 0 || t.pending != 0 => Some(t.entry.mark),
        _ => None,
    }
}

/// `-j CONNMARK` entry `n` of `generation` on the current packet, whose
/// mark is `mark` (in the IPv6 tracker for an ip6tables chain): returns the
/// packet's mark after it (changed by `--restore-mark` only). The
/// connection's new mark is written at once, as xt_CONNMARK writes
/// ct->mark: into its table entry, where later packets find it even when
/// this one is dropped, and into `Tracking`, where the rules after this one
/// (`-m connmark`) and — for a connection's first packet — `confirm` find
/// it. A packet without a connection is left alone. A global function: the
/// classifier's search calls it from its loop, where inlined it would be
/// walked at every step, and its frame holds no key or entry (both are read
/// in place), so the classifier's call chain keeps its stack.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_connmark(generation: u32, n: u32, mark: u32) -> u32 {
    let Some(op) = CONNMARK_TARGETS.get(connmark_target_index(generation & 1, n)) else {
        return mark;
    };
    let Some(keys) = crate::parse::current_keys() else {
        return mark;
    };
    if !has_connection(keys.ct_state & ct_state::STATE_MASK) {
        return mark;
    }
    if crate::parse::ipv6_search() {
        apply_connmark::<V6>(op, mark)
    } else {
        apply_connmark::<V4>(op, mark)
    }
}

/// [`netbeast_connmark`] in family `F`'s tracker.
#[inline(always)]
fn apply_connmark<F: Family>(op: &ConnmarkTarget, mark: u32) -> u32 {
    let Some(t) = tracking_of::<F>() else {
        return mark;
    };
    if t.found == 0 && t.pending == 0 {
        return mark;
    }
    let (ctmark, after) = op.apply(t.entry.mark, mark);
    if ctmark != t.entry.mark {
        t.entry.mark = ctmark;
        if t.pending == 0 {
            // The key where it is, in the per-CPU scratch: no copy on the
            // stack.
            let key: *const CtKeyOf<F::Addr> = &t.key;
            // SAFETY: points into this CPU's tracking slot.
            let key = unsafe { &*key };
            if let Some(e) = F::established().get_ptr_mut(key) {
                // SAFETY: map value, valid for this program run; a word
                // store, as the kernel's WRITE_ONCE(ct->mark).
                unsafe { (*e).mark = ctmark };
            } else if let Some(e) = F::unreplied().get_ptr_mut(key) {
                // SAFETY: as above.
                unsafe { (*e).mark = ctmark };
            }
        }
    }
    after
}

#[inline(always)]
pub fn is_icmp_error(t: u32) -> bool {
    matches!(t, 3 | 4 | 5 | 11 | 12)
}

/// The flow of a packet, and whether it has the L4 header the flow needs.
/// (No `Option`: LLVM fills an empty option's payload with whatever
/// register is at hand, and the verifier then sees pointer arithmetic.)
#[inline(always)]
fn flow_of<F: Family>(pkt: &Packet) -> (FlowOf<F::Addr>, bool) {
    let ports = matches!(pkt.keys.protocol, IPPROTO_TCP | IPPROTO_UDP);
    let icmp = pkt.keys.protocol == F::ICMP;
    let (sport, dport) = if ports {
        (pkt.keys.l4a as u16, pkt.keys.l4b as u16)
    } else if icmp {
        (pkt.icmp_id, pkt.icmp_id)
    } else {
        (0, 0)
    };
    let (src, dst) = F::addresses(pkt);
    let flow = FlowOf {
        src,
        dst,
        sport,
        dport,
        protocol: pkt.keys.protocol,
    };
    (flow, pkt.l4_complete || !(ports || icmp))
}

/// The combinations of FIN, SYN, RST, ACK and URG netfilter's TCP tracker
/// takes (its `tcp_valid_flags`), one bit per combination; PSH, ECE and
/// CWR do not matter. Any other (SYN+FIN, SYN+RST, FIN alone, no flag at
/// all...) is INVALID, whatever the connection.
const TCP_VALID_FLAGS: u64 = (1 << TCP_SYN)
    | (1 << (TCP_SYN | TCP_URG))
    | (1 << (TCP_SYN | TCP_ACK))
    | (1 << TCP_RST)
    | (1 << (TCP_RST | TCP_ACK))
    | (1 << (TCP_FIN | TCP_ACK))
    | (1 << (TCP_FIN | TCP_ACK | TCP_URG))
    | (1 << TCP_ACK)
    | (1 << (TCP_ACK | TCP_URG));
const TCP_FLAGS_TRACKED: u8 = TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK | TCP_URG;

/// netfilter's `tcp_error` checks of a complete TCP header: flags in
/// `TCP_VALID_FLAGS`, a data offset of at least 20 bytes that the segment
/// holds.
#[inline(always)]
fn tcp_header_valid<F: Family>(pkt: &Packet, start: usize, end: usize) -> bool {
    if (TCP_VALID_FLAGS >> (pkt.keys.tcp_flags as u8 & TCP_FLAGS_TRACKED)) & 1 == 0 {
        return false;
    }
    let (l4, l4_len) = F::l4(pkt);
    let Some(doff) = load::<u8>(start, end, l4 + 12) else {
        return false;
    };
    let tcp_len = ((doff >> 4) as usize) * 4;
    tcp_len >= TCP_HLEN && tcp_len <= l4_len
}

/// Longest L4 message (bytes) whose checksum conntrack verifies: an
/// Ethernet MTU's worth. Longer ones (jumbo frames) are taken as they are.
const MAX_CHECKSUM_BYTES: usize = 1480;

/// The TCP, UDP or ICMP checksum of the packet is right, as netfilter's
/// `nf_ip_checksum` wants it at PREROUTING. Only packets that would open a
/// connection, and ICMP errors, pay for it: the packets of known
/// connections are taken as they are (docs/FEATURES.md).
///
/// A TCP or UDP checksum holding just the pseudo-header's sum is one left
/// to transmit offload (`CHECKSUM_PARTIAL`, what a veth peer's own sockets
/// send): the kernel trusts those, and so does this check. A UDP checksum
/// of 0 means none was sent.
///
/// `trust_first_fragments`: a first fragment's checksum is the whole
/// datagram's, which the kernel checks after reassembly when it reassembles
/// (conntrack; REJECT in INPUT): true takes it as it is. Otherwise (REJECT
/// in FORWARD, where nothing reassembles) the bytes present are checked, as
/// the kernel checks them, which a real first fragment fails.
#[inline(never)]
pub fn checksum_ok(pkt: &Packet, start: usize, end: usize, trust_first_fragments: bool) -> bool {
    checksum_ok_of::<V4>(pkt, start, end, trust_first_fragments)
}

/// [`checksum_ok`] for an IPv6 packet (REJECT's check).
#[inline(always)]
pub fn checksum_ok6(pkt: &Packet, start: usize, end: usize, trust_first_fragments: bool) -> bool {
    checksum_ok_of::<V6>(pkt, start, end, trust_first_fragments)
}

/// [`checksum_ok`] of either family: IPv6's pseudo-header holds the
/// 128-bit addresses, and ICMPv6 (unlike ICMP) sums it too.
#[inline(never)]
fn checksum_ok_of<F: Family>(
    pkt: &Packet,
    start: usize,
    end: usize,
    trust_first_fragments: bool,
) -> bool {
    let (l4, len) = F::l4(pkt);
    let len = len & 0xffff;
    if len > MAX_CHECKSUM_BYTES {
        return true;
    }
    if trust_first_fragments && F::first_fragment(pkt, start, end) {
        return true;
    }
    let protocol = pkt.keys.protocol;
    let check_at = match protocol {
        IPPROTO_TCP => 16,
        IPPROTO_UDP => 6,
        _ => 2,
    };
    let Some(check) = load::<u16>(start, end, l4 + check_at) else {
        return false;
    };
    if protocol == IPPROTO_UDP && check == 0 {
        return true;
    }
    // Sums of little-endian words, as the packet's bytes load: a one's-
    // complement sum only needs every piece at an even offset, and the
    // pseudo-header's protocol and length swapped into that order.
    let pseudo = if protocol == IPPROTO_ICMP && F::ICMP == IPPROTO_ICMP {
        0
    } else {
        F::pseudo_addresses(pkt) + ((protocol as u64) << 8) + (len as u16).swap_bytes() as u64
    };
    if fold(pseudo + sum_message(start, end, l4, len)) == 0xffff {
        return true;
    }
    // (The kernel sums ICMP and ICMPv6 messages itself: never left to
    // offload.)
    protocol != F::ICMP && crate::csum::partial(check, pseudo)
}

/// bpf_csum_diff sums at most this many bytes per call.
const CSUM_CHUNK: usize = 512;
/// The More Fragments bit of the IPv4 flags and fragment offset field.
const IP_MORE_FRAGMENTS: u16 = 0x2000;
/// Lengths are masked with this for the verifier (a power of two minus
/// one, above `MAX_CHECKSUM_BYTES`).
const MESSAGE_MASK: usize = 0x7ff;
/// `MESSAGE` in 32-bit words: any masked length, and a word of zeros after
/// it.
const MESSAGE_WORDS: usize = (MESSAGE_MASK + 1) / 4 + 1;

/// The message being checksummed, copied out of the packet: the checksum
/// helper takes a bounded length in map memory, where a loop over packet
/// bytes would make the verifier walk every length separately.
#[map]
static MESSAGE: PerCpuArray<[u32; MESSAGE_WORDS]> = PerCpuArray::with_max_entries(1, 0);

/// One's-complement sum (unfolded) of the `len` bytes at `at`, as
/// little-endian words; `len` at most `MAX_CHECKSUM_BYTES`, and the bytes
/// inside the packet (parse checked the IPv4 total length against it).
#[inline(always)]
pub(crate) fn sum_message(start: usize, end: usize, at: usize, len: usize) -> u64 {
    let len = len & MESSAGE_MASK;
    if len > MAX_CHECKSUM_BYTES || opaque(start + at + len) > end {
        return 0;
    }
    let Some(buf) = MESSAGE.get_ptr_mut(0) else {
        return 0;
    };
    let buf = buf as *mut u8;
    // SAFETY: per-CPU scratch; `len & !3` + 4 <= MESSAGE_WORDS * 4. The
    // word the message ends in is zeroed first, so the sum of whole words
    // sees zeros past an odd length.
    unsafe { core::ptr::write_unaligned(buf.add(len & (MESSAGE_MASK & !3)) as *mut u32, 0) };
    // SAFETY: `len` bytes into the scratch (room checked above), from the
    // packet bytes checked against `end`.
    let size = (len & MESSAGE_MASK) as u32;
    if unsafe { bpf_probe_read_kernel(buf as *mut _, size, (start + at) as *const _) } != 0 {
        return 0;
    }
    let words = (len + 3) & !3;
    let mut sum = 0u64;
    let mut off = 0;
    while off < MAX_CHECKSUM_BYTES {
        if off >= words {
            break;
        }
        let n = if words - off < CSUM_CHUNK {
            words - off
        } else {
            CSUM_CHUNK
        };
        // SAFETY: `n` bytes at `off` are inside the scratch.
        let part = unsafe {
            bpf_csum_diff(
                core::ptr::null_mut(),
                0,
                buf.add(off) as *mut u32,
                (n & 0x3fc) as u32,
                0,
            )
        };
        sum += part as u32 as u64;
        off += CSUM_CHUNK;
    }
    sum
}

/// (Callers compare with `now.saturating_sub(last_seen)`: another CPU may
/// have stamped the entry after this packet read the clock.)
#[inline(always)]
fn timeout_ns<A>(e: &CtEntryOf<A>) -> u64 {
    let d = CtConfig::DEFAULT;
    // SAFETY: the map's one value, valid for the run (the timeouts change
    // only at attach).
    let cfg = match crate::config::config().map(|c| unsafe { &(*c).conntrack }) {
        Some(c) if c.generic != 0 => c,
        _ => &d,
    };
    let secs = cfg.timeout_secs(e);
    secs as u64 * NS
}

/// Follows the TCP handshake and teardown well enough that closed
/// connections expire quickly.
#[inline(always)]
fn tcp_step<A>(e: &mut CtEntryOf<A>, flags: u8, reply: bool) {
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

/// True when the packet goes the other way than the connection's first one:
/// not from the original source to the original destination, nor — its
/// destination translated already — to the translated one.
#[inline(always)]
fn is_reply<A: FlowAddr>(e: &CtEntryOf<A>, flow: &FlowOf<A>) -> bool {
    let from_orig = flow.src == e.orig_src && flow.sport == e.orig_sport;
    let to_orig = flow.dst == e.orig_dst && flow.dport == e.orig_dport;
    let to_translated = flow.dst == e.reply_src && flow.dport == e.reply_sport;
    !(from_orig && (to_orig || to_translated))
}

#[inline(always)]
fn account<A>(e: &mut CtEntryOf<A>, pkt: &Packet, reply: bool, now: u64) {
    // The status and the time written only when they change: the clock
    // moves by ticks, so most packets of a busy flow find it stamped
    // already, and a store that changes nothing still dirties the line
    // the other CPUs read.
    if reply && e.status & ct_status::SEEN_REPLY == 0 {
        e.status |= ct_status::SEEN_REPLY;
    }
    let d = reply as usize & 1;
    e.packets[d] += 1;
    e.bytes[d] += pkt.total_len() as u64;
    if e.last_seen_ns != now {
        e.last_seen_ns = now;
    }
    if pkt.keys.protocol == IPPROTO_TCP {
        tcp_step(e, pkt.keys.tcp_flags as u8, reply);
    }
}

/// A new TCP SYN on a closed connection starts it over, as netfilter does.
#[inline(always)]
fn reopens<A>(e: &CtEntryOf<A>, pkt: &Packet) -> bool {
    pkt.keys.protocol == IPPROTO_TCP
        && (pkt.keys.tcp_flags as u8) & (TCP_SYN | TCP_ACK) == TCP_SYN
        && (e.tcp_state == tcp_state::CLOSE || e.tcp_state == tcp_state::TIME_WAIT)
}

/// Looks the packet up, updates the connection it belongs to, and leaves
/// the outcome for `state`, `confirm` and NAT. `nat`: translated
/// connections exist, so a miss also looks in `CT_NAT_INDEX`.
/// `verify`: check the L4 checksum of a packet that would open a
/// connection or is an ICMP error (`nf_conntrack_checksum`, on by default,
/// for packets arriving from outside).
#[inline(never)]
pub fn track(pkt: &Packet, start: usize, end: usize, nat: bool, verify: bool) {
    track_of::<V4>(pkt, start, end, nat, verify)
}

/// [`track`] for an IPv6 packet.
#[inline(never)]
pub fn track6(pkt: &Packet, start: usize, end: usize, nat: bool, verify: bool) {
    track_of::<V6>(pkt, start, end, nat, verify)
}

#[inline(always)]
fn track_of<F: Family>(pkt: &Packet, start: usize, end: usize, nat: bool, verify: bool) {
    let Some(t) = tracking_of::<F>() else {
        return;
    };
    t.pending = 0;
    t.found = 0;
    t.reply = 0;
    t.state = classify_flow::<F>(pkt, start, end, t, nat, verify);
}

/// CLOCK_MONOTONIC at tick resolution: timeouts are seconds, and the
/// precise clock costs a good part of a packet's budget in a VM.
#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// `lookup`'s answer when the key names no live connection.
const NOT_FOUND: u32 = u32::MAX;

#[inline(always)]
fn classify_flow<F: Family>(
    pkt: &Packet,
    start: usize,
    end: usize,
    t: &mut TrackingOf<F::Addr>,
    nat: bool,
    verify: bool,
) -> u32 {
    if pkt.fragment {
        // No reassembly here: fragments after the first carry no ports.
        return ct_state::UNTRACKED;
    }
    let (flow, complete) = flow_of::<F>(pkt);
    if !complete || (pkt.keys.protocol == IPPROTO_TCP && !tcp_header_valid::<F>(pkt, start, end)) {
        bump(stats::CT_INVALID);
        return ct_state::INVALID;
    }
    let icmp = pkt.keys.protocol == F::ICMP;
    if icmp && F::icmp_untracked(pkt.keys.l4a) {
        // netfilter checks the checksum of these too, before it leaves
        // them alone.
        if verify && !checksum_ok_of::<F>(pkt, start, end, true) {
            bump(stats::CT_INVALID);
            return ct_state::INVALID;
        }
        return ct_state::UNTRACKED;
    }
    if icmp && F::icmp_error(pkt.keys.l4a) {
        if verify && !checksum_ok_of::<F>(pkt, start, end, true) {
            bump(stats::CT_INVALID);
            return ct_state::INVALID;
        }
        let state = related::<F>(pkt, start, end, nat, t);
        bump(if state == ct_state::RELATED {
            stats::CT_RELATED
        } else {
            stats::CT_INVALID
        });
        return state;
    }
    // The packet's own key, built where it stays (`wire`), not on the
    // stack.
    flow.write_key(&mut t.wire, zone_of::<F>(t.zone as u16));
    // SAFETY: two fields of the tracking slot.
    unsafe { crate::mem::copy(&mut t.key, &t.wire) };
    t.via_index = 0;
    let state = lookup::<F>(t, pkt, &flow);
    if state != NOT_FOUND {
        return state;
    }
    if nat && let Some(index) = F::nat_index() {
        // SAFETY: copied out at once.
        if let Some(connection) = unsafe { index.get(&t.wire) } {
            // SAFETY: a map value and a field of the tracking slot.
            unsafe { crate::mem::copy(&mut t.key, connection) };
            t.via_index = 1;
            let state = lookup::<F>(t, pkt, &flow);
            if state != NOT_FOUND {
                return state;
            }
        }
    }
    // No connection: only packets that can open one are NEW.
    let opens = if pkt.keys.protocol == IPPROTO_TCP {
        (pkt.keys.tcp_flags as u8) & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN
    } else if icmp {
        F::icmp_opens(pkt.keys.l4a)
    } else {
        true
    };
    if !opens || (verify && !checksum_ok_of::<F>(pkt, start, end, true)) {
        bump(stats::CT_INVALID);
        return ct_state::INVALID;
    }
    let now = now_ns();
    // SAFETY: two fields of the tracking slot.
    unsafe { crate::mem::copy(&mut t.key, &t.wire) };
    // Field by field, in place: a whole entry built first would take its
    // size of the stack (128 bytes for IPv6) under the call chain.
    let e = &mut t.entry;
    e.orig_src = flow.src;
    e.orig_dst = flow.dst;
    e.orig_sport = flow.sport;
    e.orig_dport = flow.dport;
    e.protocol = flow.protocol;
    e.tcp_state = if pkt.keys.protocol == IPPROTO_TCP {
        tcp_state::SYN_SENT
    } else {
        tcp_state::NONE
    };
    e.status = 0;
    e.flags = 0;
    e.last_seen_ns = now;
    e.packets = [1, 0];
    e.bytes = [pkt.total_len() as u64, 0];
    e.reply_src = flow.dst;
    e.reply_dst = flow.src;
    e.reply_sport = flow.dport;
    e.reply_dport = flow.sport;
    // A new connection has no mark until a CONNMARK rule gives it one.
    e.mark = 0;
    t.pending = 1;
    ct_state::NEW
}

/// Finds the live connection of key `t.key`, accounts the packet to it and
/// copies it to `t.entry`; `NOT_FOUND` if there is none. Out of line: it
/// runs for the packet's own key and for the one the NAT index gives.
#[inline(never)]
fn lookup<F: Family>(t: &mut TrackingOf<F::Addr>, pkt: &Packet, flow: &FlowOf<F::Addr>) -> u32 {
    // The key where it is, in the per-CPU scratch (a copy would take its
    // size of the stack); `meet` never changes it.
    let key: *const CtKeyOf<F::Addr> = &t.key;
    // SAFETY: points into this CPU's tracking slot, valid for the run.
    let key = unsafe { &*key };
    let now = now_ns();
    if let Some(e) = F::established().get_ptr_mut(key) {
        // SAFETY: map value, valid for this program run.
        match meet::<F>(t, unsafe { &mut *e }, pkt, flow, now) {
            Met::Stale => return stale_index::<F>(&t.wire),
            Met::Gone => {
                let _ = F::established().remove(key);
            }
            Met::Live(_) => return ct_state::ESTABLISHED,
        }
    }
    if let Some(e) = F::unreplied().get_ptr_mut(key) {
        // SAFETY: map value, valid for this program run.
        let e = unsafe { &mut *e };
        match meet::<F>(t, e, pkt, flow, now) {
            Met::Stale => return stale_index::<F>(&t.wire),
            Met::Gone => {
                let _ = F::unreplied().remove(key);
            }
            Met::Live(false) => return ct_state::NEW,
            Met::Live(true) => {
                // The first reply: straight from the map value, no copy on
                // the stack.
                if F::established().insert(key, &*e, 0).is_err() {
                    bump(stats::CT_INSERT_FAILED);
                } else {
                    let _ = F::unreplied().remove(key);
                    bump(stats::CT_ESTABLISHED);
                }
                return ct_state::ESTABLISHED;
            }
        }
    }
    NOT_FOUND
}

/// What `meet` made of a connection found in a table.
enum Met {
    /// Reached through a NAT index entry it no longer has.
    Stale,
    /// Expired, or closed and reopened by this SYN: to be removed (its NAT
    /// index entries are already).
    Gone,
    /// The packet's connection, accounted; `true` for the reply direction.
    Live(bool),
}

/// The checks and accounting common to both tables.
#[inline(always)]
fn meet<F: Family>(
    t: &mut TrackingOf<F::Addr>,
    e: &mut CtEntryOf<F::Addr>,
    pkt: &Packet,
    flow: &FlowOf<F::Addr>,
    now: u64,
) -> Met {
    if t.via_index != 0 && !has_key::<F>(e, &t.wire) {
        return Met::Stale;
    }
    let reopened = reopens(e, pkt);
    if reopened || now.saturating_sub(e.last_seen_ns) > timeout_ns(e) {
        if !reopened {
            bump(stats::CT_EXPIRED);
        }
        if F::ZONED {
            forget_translation::<F>(&t.key, e, &mut t.quoted_key);
        }
        return Met::Gone;
    }
    let reply = is_reply(e, flow);
    account(e, pkt, reply, now);
    found(t, e, reply);
    Met::Live(reply)
}

/// Leaves the packet's connection for NAT: a copy of a translated one;
/// for the others only their (translation-free) status, which is all NAT
/// reads of them — most connections are not translated, and the copy is
/// not free.
#[inline(always)]
fn found<A: FlowAddr>(t: &mut TrackingOf<A>, e: &CtEntryOf<A>, reply: bool) {
    if e.status & (ct_status::DST_NAT | ct_status::SRC_NAT) != 0 {
        // SAFETY: a map value and a field of the tracking slot.
        unsafe { crate::mem::copy(&mut t.entry, e) };
    } else {
        // What `key` reads of it, and what the `-m conntrack` tuple and
        // expiry guards read (`guard_holds`).
        t.entry.status = e.status;
        t.entry.protocol = e.protocol;
        t.entry.tcp_state = e.tcp_state;
        // SAFETY: fields of a map value and of the tracking slot.
        unsafe {
            crate::mem::copy(&mut t.entry.orig_src, &e.orig_src);
            crate::mem::copy(&mut t.entry.orig_dst, &e.orig_dst);
            crate::mem::copy(&mut t.entry.reply_src, &e.reply_src);
            crate::mem::copy(&mut t.entry.reply_dst, &e.reply_dst);
        }
        t.entry.orig_sport = e.orig_sport;
        t.entry.orig_dport = e.orig_dport;
        t.entry.reply_sport = e.reply_sport;
        t.entry.reply_dport = e.reply_dport;
        t.entry.last_seen_ns = e.last_seen_ns;
        // What `-m connmark` and `-j CONNMARK` read.
        t.entry.mark = e.mark;
        // The SYN-flood shield's mark (`ct_flags::PROXIED`): a connection
        // it replayed to a server behind the router, whose packets it
        // translates.
        t.entry.flags = e.flags;
    }
    t.found = 1;
    t.reply = reply as u32;
}

/// True when translated connection `e` appears on the wire under `key`
/// (its reply tuple, or the half-translated one; the key's zone is the
/// connection's, as every key of it is). Compared in place rather than
/// against keys built as `reply_key` and `mid_key` build them: two IPv6
/// keys on the stack took the IPv6 program's deepest call chain past its
/// 512 bytes.
#[inline(always)]
fn has_key<F: Family>(e: &CtEntryOf<F::Addr>, key: &CtKeyOf<F::Addr>) -> bool {
    e.status & (ct_status::DST_NAT | ct_status::SRC_NAT) != 0
        && key.protocol == e.protocol
        && (joins(
            key,
            &e.reply_src,
            e.reply_sport,
            &e.reply_dst,
            e.reply_dport,
        ) || joins(key, &e.orig_src, e.orig_sport, &e.reply_src, e.reply_sport))
}

/// True when `key`'s endpoints are `a:a_port` and `b:b_port`, in either
/// order (`key_of` puts them in its canonical one).
#[inline(always)]
fn joins<A: FlowAddr>(key: &CtKeyOf<A>, a: &A, a_port: u16, b: &A, b_port: u16) -> bool {
    let (lo, hi) = (&key.addr_lo, &key.addr_hi);
    (*lo == *a && key.port_lo == a_port && *hi == *b && key.port_hi == b_port)
        || (*lo == *b && key.port_lo == b_port && *hi == *a && key.port_hi == a_port)
}

/// `zone` for a family whose packets have zones, else the constant 0.
#[inline(always)]
fn zone_of<F: Family>(zone: u16) -> u16 {
    if F::ZONED { zone } else { 0 }
}

/// An index entry whose connection went (evicted) and whose key another
/// connection took since: dropped, and the packet has no connection.
#[inline(always)]
fn stale_index<F: Family>(key: &CtKeyOf<F::Addr>) -> u32 {
    if let Some(index) = F::nat_index() {
        let _ = index.remove(key);
    }
    NOT_FOUND
}

/// Removes the NAT index entries of connection `e` (key `key`), which is
/// going away. The keys are built in `scratch` (the tracking slot's
/// `quoted_key`), not on the stack: two IPv6 keys there took the IPv6
/// program's call chain past its 512 bytes. (A tuple that is both the
/// reply and the half-translated one is removed twice: harmless.)
#[inline(always)]
fn forget_translation<F: Family>(
    key: &CtKeyOf<F::Addr>,
    e: &CtEntryOf<F::Addr>,
    scratch: &mut CtKeyOf<F::Addr>,
) {
    let Some(index) = F::nat_index() else {
        return;
    };
    if e.status & (ct_status::DST_NAT | ct_status::SRC_NAT) == 0 {
        return;
    }
    let zone = zone_of::<F>(key.zone);
    set_reply_key(scratch, e, zone);
    if *scratch != *key {
        let _ = index.remove(&*scratch);
    }
    set_mid_key(scratch, e, zone);
    if *scratch != *key {
        let _ = index.remove(&*scratch);
    }
}

/// True when the connection of key `key` is in a table, has not expired
/// and is not closed (RST, or FINs both ways): what `-m connlimit` counts,
/// as nf_conncount skips connections in TIME_WAIT or CLOSE.
#[inline(always)]
pub fn is_live_of<F: Family>(key: &CtKeyOf<F::Addr>) -> bool {
    // SAFETY: read in place, nothing kept (no copy on a stack that the
    // callers' frames leave short).
    let e = unsafe {
        match F::established().get(key) {
            Some(e) => e,
            None => match F::unreplied().get(key) {
                Some(e) => e,
                None => return false,
            },
        }
    };
    let closed = e.protocol == IPPROTO_TCP
        && (e.tcp_state == tcp_state::CLOSE || e.tcp_state == tcp_state::TIME_WAIT);
    !closed && now_ns().saturating_sub(e.last_seen_ns) <= timeout_ns(e)
}

/// True when a connection has key `key` in family `F`'s tables (no
/// accounting).
#[inline(always)]
pub fn exists_of<F: Family>(key: &CtKeyOf<F::Addr>) -> bool {
    // SAFETY: presence test only.
    unsafe { F::established().get(key).is_some() || F::unreplied().get(key).is_some() }
}

/// Finds the packet's connection without accounting it (the packet was
/// counted where it entered): TC egress uses it for forwarded packets, which
/// only need their source translation. Leaves `t.found`, `t.reply`,
/// `t.entry` as `track` does.
#[inline(never)]
pub fn peek(pkt: &Packet, start: usize, end: usize) {
    peek_of::<V4>(pkt, start, end)
}

/// [`peek`] for an IPv6 packet.
#[inline(never)]
pub fn peek6(pkt: &Packet, start: usize, end: usize) {
    peek_of::<V6>(pkt, start, end)
}

#[inline(always)]
fn peek_of<F: Family>(pkt: &Packet, start: usize, end: usize) {
    let Some(t) = tracking_of::<F>() else {
        return;
    };
    t.found = 0;
    t.pending = 0;
    if pkt.fragment {
        return;
    }
    let (flow, complete) = flow_of::<F>(pkt);
    if !complete {
        return;
    }
    if pkt.keys.protocol == F::ICMP && F::icmp_error(pkt.keys.l4a) {
        // Counted as RELATED (or INVALID) at ingress already.
        let _ = related::<F>(pkt, start, end, true, t);
        return;
    }
    // The zone a forwarded packet was given at ingress is not known here
    // (the kernel carries it in the skb's conntrack reference, which XDP
    // has no counterpart of): it is looked up in zone 0.
    t.zone = 0;
    if copy_connection::<F>(t, &flow.key(0), true) {
        t.reply = is_reply(&t.entry, &flow) as u32;
    }
}

/// Copies the connection a packet's key `key` belongs to into `t` (key,
/// entry, `found`), without accounting: the one under `key`, or, with
/// `nat`, the one the NAT index names for it. False when there is none.
#[inline(always)]
fn copy_connection<F: Family>(
    t: &mut TrackingOf<F::Addr>,
    key: &CtKeyOf<F::Addr>,
    nat: bool,
) -> bool {
    // The key the connection is stored under, in the tracking slot.
    // SAFETY: a field of the tracking slot and a valid key.
    unsafe { crate::mem::copy(&mut t.key, key) };
    let mut e = F::established().get_ptr(&t.key);
    if e.is_none() {
        e = F::unreplied().get_ptr(&t.key);
    }
    if e.is_none()
        && nat
        && let Some(index) = F::nat_index()
    {
        // SAFETY: copied out at once.
        if let Some(k) = unsafe { index.get(key) } {
            // SAFETY: a map value and a field of the tracking slot.
            unsafe { crate::mem::copy(&mut t.key, k) };
            e = F::established().get_ptr(&t.key);
            if e.is_none() {
                e = F::unreplied().get_ptr(&t.key);
            }
        }
    }
    let Some(e) = e else {
        return false;
    };
    // SAFETY: map value, valid for this program run.
    unsafe { crate::mem::copy(&mut t.entry, e) };
    t.found = 1;
    true
}

/// Records the connection of an accepted NEW packet (iptables confirms a
/// connection only when its first packet gets through), with the index
/// entries of its translated tuples.
#[inline(always)]
pub fn confirm() {
    confirm_of::<V4>()
}

/// [`confirm`] for an accepted IPv6 packet.
#[inline(always)]
pub fn confirm6() {
    confirm_of::<V6>()
}

#[inline(always)]
fn confirm_of<F: Family>() {
    let Some(t) = tracking_of::<F>() else {
        return;
    };
    if t.pending == 0 {
        return;
    }
    match F::unreplied().insert(&t.key, &t.entry, BPF_NOEXIST) {
        Ok(()) => bump(stats::CT_CREATED),
        // Another CPU recorded it first: fine.
        Err(e) if e == -17 => return,
        Err(_) => {
            bump(stats::CT_INSERT_FAILED);
            forget_translation::<F>(&t.key, &t.entry, &mut t.quoted_key);
            return;
        }
    }
    let Some(index) = F::nat_index() else {
        return;
    };
    if t.entry.status & (ct_status::DST_NAT | ct_status::SRC_NAT) == 0 {
        return;
    }
    // The keys built in the slot's scratch key, as `forget_translation`
    // builds them (a tuple that is both is inserted twice: harmless).
    let zone = zone_of::<F>(t.key.zone);
    set_reply_key(&mut t.quoted_key, &t.entry, zone);
    if t.quoted_key != t.key && index.insert(&t.quoted_key, &t.key, 0).is_err() {
        bump(stats::CT_INSERT_FAILED);
    }
    set_mid_key(&mut t.quoted_key, &t.entry, zone);
    if t.quoted_key != t.key && index.insert(&t.quoted_key, &t.key, 0).is_err() {
        bump(stats::CT_INSERT_FAILED);
    }
}

/// RELATED when an ICMP error quotes a packet of a tracked connection.
#[inline(always)]
fn related<F: Family>(
    pkt: &Packet,
    start: usize,
    end: usize,
    nat: bool,
    t: &mut TrackingOf<F::Addr>,
) -> u32 {
    if !F::quoted(pkt, start, end, &mut t.quoted) {
        return ct_state::INVALID;
    }
    // The error is looked up in its own zone, as the kernel looks up an
    // ICMP error with its template's zone.
    t.quoted
        .write_key(&mut t.quoted_key, zone_of::<F>(t.zone as u16));
    let key: *const CtKeyOf<F::Addr> = &t.quoted_key;
    // SAFETY: points into this CPU's tracking slot, which `copy_connection`
    // writes elsewhere (key, entry, found).
    if !copy_connection::<F>(t, unsafe { &*key }, nat) {
        return ct_state::INVALID;
    }
    // NAT translates the error as a packet going the other way than the
    // one it quotes.
    t.reply = quotes_original(&t.entry, &t.quoted) as u32;
    ct_state::RELATED
}

/// The flow of the IPv4 packet an ICMP error quotes (its header and the
/// first 8 bytes after it).
#[inline(always)]
fn quoted4(pkt: &Packet, start: usize, end: usize, q: &mut Flow) -> bool {
    let inner = opaque(pkt.l2_len() + pkt.ip_header_len() + ICMP_HLEN);
    // One read per header, each checked on its own (several `Option`s
    // destructured together let LLVM mix their payloads with pointers).
    let Some(ip) = load::<[u8; 20]>(start, end, inner) else {
        return false;
    };
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let Some(l4) = load::<[u8; 8]>(start, end, opaque(inner + (ihl & 0x3c))) else {
        return false;
    };
    if ihl < 20 {
        return false;
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
    q.src = u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]);
    q.dst = u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]);
    q.sport = sport;
    q.dport = dport;
    q.protocol = protocol;
    true
}

/// The flow of the IPv6 packet an ICMPv6 error quotes: its fixed header
/// and the first 8 bytes of what follows. A quoted packet with extension
/// headers before its upper layer is not followed (INVALID; see
/// docs/FEATURES.md). Read a word at a time straight into `q`: the 48
/// bytes held at once would spill over the stack.
#[inline(always)]
fn quoted6(pkt: &Packet, start: usize, end: usize, q: &mut FlowOf<Addr6>) -> bool {
    let (l4, _) = V6::l4(pkt);
    let inner = opaque(start + l4 + ICMP_HLEN);
    if inner + IPV6_HLEN + 8 > end {
        return false;
    }
    // SAFETY: the 48 bytes at `inner` are inside the packet (checked); one
    // load per word at 2-aligned offsets, as the parser reads addresses.
    let word = |at: usize| unsafe { core::ptr::read((inner + at) as *const u32) };
    // Byte 6 of the header, the next header: in packet order, the third
    // byte of the second word.
    let protocol = (word(4) >> 16) as u8;
    for i in 0..4 {
        q.src.0[i] = word(8 + 4 * i);
        q.dst.0[i] = word(24 + 4 * i);
    }
    let (first, second) = (word(IPV6_HLEN), word(IPV6_HLEN + 4));
    let (sport, dport) = match protocol {
        IPPROTO_TCP | IPPROTO_UDP => (
            u16::from_be(first as u16),
            u16::from_be((first >> 16) as u16),
        ),
        IPPROTO_ICMPV6 => {
            let id = u16::from_be(second as u16);
            (id, id)
        }
        _ => (0, 0),
    };
    q.sport = sport;
    q.dport = dport;
    q.protocol = protocol;
    true
}

/// True when a quoted packet went the original way: from the original
/// source, or — quoted after its source translation — from the translated
/// one.
#[inline(always)]
fn quotes_original<A: FlowAddr>(e: &CtEntryOf<A>, quoted: &FlowOf<A>) -> bool {
    (quoted.src == e.orig_src && quoted.sport == e.orig_sport)
        || (quoted.src == e.reply_dst && quoted.sport == e.reply_dport)
}

/// True when the packet's connection (found in a table) is one the shield
/// replays to a server behind the router.
#[inline(always)]
pub fn proxied() -> bool {
    match tracking() {
        Some(t) => t.found != 0 && t.entry.flags & ct_flags::PROXIED != 0,
        None => false,
    }
}

/// Records the connection of an ACK that carried a valid SYN cookie (the
/// SYN-flood shield answered its SYN, which was never tracked) as
/// ESTABLISHED: the handshake is complete, as netfilter's SYNPROXY leaves
/// it once the server has answered. Its later packets then find it.
///
/// `flags` are the entry's `ct_flags`: `ct_flags::PROXIED` for a
/// connection the shield replays to a server behind the router (FORWARD),
/// 0 otherwise.
#[inline(always)]
pub fn adopt(pkt: &Packet, flags: u8) {
    let (flow, complete) = flow_of::<V4>(pkt);
    if !complete {
        return;
    }
    let entry = CtEntry {
        orig_src: flow.src,
        orig_dst: flow.dst,
        orig_sport: flow.sport,
        orig_dport: flow.dport,
        protocol: flow.protocol,
        tcp_state: tcp_state::ESTABLISHED,
        status: ct_status::SEEN_REPLY,
        flags,
        last_seen_ns: now_ns(),
        packets: [1, 0],
        bytes: [pkt.total_len() as u64, 0],
        reply_src: flow.dst,
        reply_dst: flow.src,
        reply_sport: flow.dport,
        reply_dport: flow.sport,
        // Its SYN was answered by the shield, untracked: no rule marked it.
        mark: 0,
    };
    let Some(t) = tracking() else {
        return;
    };
    // What the chains read of it (`key`): this packet's connection, in
    // the packet's zone.
    t.state = ct_state::ESTABLISHED;
    t.pending = 0;
    t.found = 1;
    t.reply = 0;
    t.key = flow.key(t.zone as u16);
    t.entry = entry;
    match CT_ESTABLISHED.insert(&t.key, &entry, BPF_NOEXIST) {
        Ok(()) => {
            bump(stats::CT_CREATED);
            bump(stats::CT_ESTABLISHED);
        }
        // The client's ACK came twice (retransmitted): already recorded.
        Err(e) if e == -17 => {}
        Err(_) => bump(stats::CT_INSERT_FAILED),
    }
}
