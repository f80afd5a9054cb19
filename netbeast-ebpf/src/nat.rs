//! Packet NAT: the nat table's PREROUTING and POSTROUTING (DESIGN §2–§3).
//!
//! A connection's translation is decided on its first packet and stored
//! in its conntrack entry as netfilter's reply tuple; every later packet of
//! either direction is rewritten from it. As in netfilter, a packet gets
//! two halves of that rewrite at two places:
//!
//! - the **destination side** (DNAT of the original direction, the undoing
//!   of SNAT on replies) at XDP ingress, before the routing decision, so the
//!   kernel and the filter chains see where the packet really goes;
//! - the **source side** (SNAT of the original direction, the undoing of
//!   DNAT on replies) after the filter chains: in XDP just before a
//!   fast-path redirect, or at TC egress for packets the kernel routes or
//!   sends. It can't happen earlier for packets the kernel handles: a packet
//!   that arrives with one of the host's own addresses as its source is a
//!   martian to the kernel.
//!
//! Both places rewrite through [`Frame`], one implementation per context.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    macros::map,
    maps::Array,
    programs::{TcContext, XdpContext},
};
use netbeast_common::{
    Addr6, CtEntryOf, FlowAddr, NAT_PORT_ATTEMPTS, NatAddrs6, NatTarget, ct_status, nat_flags,
    nat_offset_port, nat_target_index, size, stats, target,
};

use crate::{
    conntrack::{
        Family, TrackingOf, V4, V6, exists_of, is_icmp_error, set_key, tracking, tracking_of,
    },
    csum::fold,
    parse::{
        ICMP_HLEN, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Packet, load,
        load_addr6, opaque, store, store_addr6,
    },
    route::{iface_addr, iface_addr6},
    stats::bump,
};

/// The translations of the active ruleset's nat rules (`RuleAction::arg`).
#[map]
pub static NAT_TARGETS: Array<NatTarget> = Array::with_max_entries(size::NAT_TARGETS, 0);
/// The IPv6 addresses of the ip6tables nat rules' translations, at the
/// index of their `NAT_TARGETS` entry.
#[map]
static NAT6_ADDRS: Array<NatAddrs6> = Array::with_max_entries(size::NAT6_ADDRS, 0);

/// 127.0.0.1 as it sits in a packet: where REDIRECT sends local packets.
const LOOPBACK: u32 = u32::from_ne_bytes([127, 0, 0, 1]);
const BPF_NOEXIST: u64 = 1;

/// Which half of a translation to apply.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Destination,
    Source,
}

/// How a packet's L4 checksum depends on what NAT rewrites.
#[derive(Clone, Copy)]
pub struct L4Checksum {
    /// Offset of the checksum field; 0 when the packet has none to update.
    pub offset: usize,
    /// UDP: a checksum of zero means "none" and stays zero.
    pub udp: bool,
}

/// Header rewrites with checksum updates, over the two program contexts.
pub trait Frame {
    /// Replaces the IPv4 address at `offset` (`old` → `new`, both as they
    /// sit in the packet), fixing the IPv4 header checksum and, through the
    /// pseudo header, the L4 one.
    fn set_addr(&self, offset: usize, ip_check: usize, l4: L4Checksum, old: u32, new: u32);
    /// Replaces the IPv6 address at `offset` (words as they sit in the
    /// packet), fixing the L4 checksum through the pseudo header (IPv6
    /// has no header checksum).
    fn set_addr6(&self, offset: usize, l4: L4Checksum, old: &[u32; 4], new: &[u32; 4]);
    /// Replaces the port at `offset` (host byte order values).
    fn set_port(&self, offset: usize, l4: L4Checksum, old: u16, new: u16);
    /// The first `len` bytes of the packet (fewer if it is shorter) as a
    /// directly writable window `(start, end)`. For ICMP errors, whose
    /// checksums don't involve offloads and which NAT edits in place.
    fn window(&self, len: usize) -> (usize, usize);
}

/// RFC 1624: the checksum `check` after 16-bit words whose sum was
/// `old_sum` became words summing to `new_sum` (big-endian numbers):
/// ~C' = ~C + ~m + m', with ~m the one's-complement negation of the sum.
#[inline(always)]
fn updated(check: u16, old_sum: u64, new_sum: u64) -> u16 {
    let neg_old = (!fold(old_sum)) as u64;
    !fold((!check) as u64 + neg_old + new_sum)
}

#[inline(always)]
fn words(addr: u32) -> u64 {
    let a = u32::from_be(addr);
    (a >> 16) as u64 + (a & 0xffff) as u64
}

/// [`words`] of an IPv6 address.
#[inline(always)]
fn words6(addr: &[u32; 4]) -> u64 {
    words(addr[0]) + words(addr[1]) + words(addr[2]) + words(addr[3])
}

pub struct XdpFrame {
    start: usize,
    end: usize,
}

impl XdpFrame {
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        XdpFrame {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }

    #[inline(always)]
    fn store<T: Copy>(&self, offset: usize, value: T) -> bool {
        store(self.start, self.end, offset, value)
    }

    #[inline(always)]
    fn fix(&self, offset: usize, old_sum: u64, new_sum: u64, udp: bool) {
        patch_check(self.start, self.end, offset, old_sum, new_sum, udp);
    }
}

impl Frame for XdpFrame {
    #[inline(always)]
    fn set_addr(&self, offset: usize, ip_check: usize, l4: L4Checksum, old: u32, new: u32) {
        if !self.store(offset, new) {
            return;
        }
        self.fix(ip_check, words(old), words(new), false);
        if l4.offset != 0 {
            self.fix(l4.offset, words(old), words(new), l4.udp);
        }
    }

    #[inline(always)]
    fn set_addr6(&self, offset: usize, l4: L4Checksum, old: &[u32; 4], new: &[u32; 4]) {
        if !store_addr6(self.start, self.end, offset, new) {
            return;
        }
        if l4.offset != 0 {
            self.fix(l4.offset, words6(old), words6(new), l4.udp);
        }
    }

    #[inline(always)]
    fn set_port(&self, offset: usize, l4: L4Checksum, old: u16, new: u16) {
        if !self.store(offset, new.to_be()) {
            return;
        }
        if l4.offset != 0 {
            self.fix(l4.offset, old as u64, new as u64, l4.udp);
        }
    }

    #[inline(always)]
    fn window(&self, _len: usize) -> (usize, usize) {
        (self.start, self.end)
    }
}

/// TC: the kernel's helpers, which also know how to update a checksum the
/// NIC has yet to finish (CHECKSUM_PARTIAL, as on locally sent packets).
pub struct TcFrame<'a> {
    ctx: &'a TcContext,
}

impl<'a> TcFrame<'a> {
    #[inline(always)]
    pub fn new(ctx: &'a TcContext) -> Self {
        TcFrame { ctx }
    }

    #[inline(always)]
    fn l4_flags(l4: L4Checksum, size: u64) -> u64 {
        let mangled = if l4.udp {
            BPF_F_MARK_MANGLED_0 as u64
        } else {
            0
        };
        size | mangled
    }
}

impl Frame for TcFrame<'_> {
    #[inline(always)]
    fn set_addr(&self, offset: usize, ip_check: usize, l4: L4Checksum, old: u32, new: u32) {
        if l4.offset != 0 {
            let flags = Self::l4_flags(l4, 4) | BPF_F_PSEUDO_HDR as u64;
            let _ = self
                .ctx
                .l4_csum_replace(l4.offset, old as u64, new as u64, flags);
        }
        let _ = self
            .ctx
            .l3_csum_replace(ip_check, old as u64, new as u64, 4);
        let _ = self.ctx.store(offset, &new, 0);
    }

    #[inline(always)]
    fn set_addr6(&self, offset: usize, l4: L4Checksum, old: &[u32; 4], new: &[u32; 4]) {
        if l4.offset != 0 {
            let flags = Self::l4_flags(l4, 4) | BPF_F_PSEUDO_HDR as u64;
            for i in 0..4 {
                let _ = self
                    .ctx
                    .l4_csum_replace(l4.offset, old[i] as u64, new[i] as u64, flags);
            }
        }
        let _ = self.ctx.store(offset, new, 0);
    }

    #[inline(always)]
    fn set_port(&self, offset: usize, l4: L4Checksum, old: u16, new: u16) {
        if l4.offset != 0 {
            let flags = Self::l4_flags(l4, 2);
            let _ =
                self.ctx
                    .l4_csum_replace(l4.offset, old.to_be() as u64, new.to_be() as u64, flags);
        }
        let _ = self.ctx.store(offset, &new.to_be(), 0);
    }

    #[inline(always)]
    fn window(&self, len: usize) -> (usize, usize) {
        let frame_len = self.ctx.len() as usize;
        let want = if frame_len < len { frame_len } else { len };
        // Also makes the bytes writable (skb_ensure_writable).
        let _ = self.ctx.pull_data(want as u32);
        (self.ctx.data(), self.ctx.data_end())
    }
}

/// The address and port the packet's `side` becomes, from its connection;
/// `None` when that side is not translated.
#[inline(always)]
fn rewrite_of<A: FlowAddr>(t: &TrackingOf<A>, side: Side) -> Option<(A, u16)> {
    if t.found == 0 && t.pending == 0 {
        return None;
    }
    let e = &t.entry;
    let reply = t.reply != 0;
    let (flag, addr, port) = match (side, reply) {
        (Side::Destination, false) => (ct_status::DST_NAT, e.reply_src, e.reply_sport),
        (Side::Destination, true) => (ct_status::SRC_NAT, e.orig_src, e.orig_sport),
        (Side::Source, false) => (ct_status::SRC_NAT, e.reply_dst, e.reply_dport),
        (Side::Source, true) => (ct_status::DST_NAT, e.orig_dst, e.orig_dport),
    };
    if e.status & flag == 0 {
        return None;
    }
    Some((addr, port))
}

/// Rewrites `side` of the packet as its connection says, and keeps `pkt`
/// (the parsed copy the classifier reads) in step.
#[inline(always)]
pub fn translate<F: Frame>(frame: &F, pkt: &mut Packet, side: Side) {
    let Some(t) = tracking() else {
        return;
    };
    let Some((addr, port)) = rewrite_of(t, side) else {
        return;
    };
    if pkt.keys.protocol == IPPROTO_ICMP && is_icmp_error(pkt.keys.l4a) {
        icmp_error(frame, pkt, side, addr, port);
        return;
    }
    if let Side::Destination = side {
        pkt.dnat_from = (pkt.keys.dst, pkt.keys.l4b | DNAT_FROM_SET);
    }
    rewrite(frame, pkt, side, addr, port);
}

/// Set in `Packet::dnat_from`'s port word when it holds a destination.
const DNAT_FROM_SET: u32 = 1 << 16;

/// Gives the packet back the destination it had before [`translate`]
/// rewrote it in this run, if it did: a REJECT answers as the client
/// addressed it, as the kernel's reply through the connection's NAT does
/// (a reset from the forwarded port, an ICMP error quoting what was sent).
#[inline(always)]
pub fn untranslate<F: Frame>(frame: &F, pkt: &mut Packet) {
    let (addr, port) = pkt.dnat_from;
    if port & DNAT_FROM_SET == 0 {
        return;
    }
    pkt.dnat_from = (0, 0);
    rewrite(frame, pkt, Side::Destination, addr, port as u16);
}

/// Writes `addr` and `port` into `side` of the packet (the port of TCP and
/// UDP only), fixing the checksums, and keeps `pkt` in step.
#[inline(always)]
fn rewrite<F: Frame>(frame: &F, pkt: &mut Packet, side: Side, addr: u32, port: u16) {
    let l3 = pkt.l2_len();
    let l4 = l3 + pkt.ip_header_len();
    let ports = matches!(pkt.keys.protocol, IPPROTO_TCP | IPPROTO_UDP) && pkt.l4_complete;
    let l4sum = match pkt.keys.protocol {
        IPPROTO_TCP if pkt.l4_complete => L4Checksum {
            offset: l4 + 16,
            udp: false,
        },
        IPPROTO_UDP if pkt.l4_complete => L4Checksum {
            offset: l4 + 6,
            udp: true,
        },
        _ => L4Checksum {
            offset: 0,
            udp: false,
        },
    };
    let (old_addr, addr_at, old_port, port_at) = match side {
        Side::Destination => (pkt.keys.dst, l3 + 16, pkt.keys.l4b, l4 + 2),
        Side::Source => (pkt.keys.src, l3 + 12, pkt.keys.l4a, l4),
    };
    if addr != old_addr {
        frame.set_addr(addr_at, l3 + 10, l4sum, old_addr, addr);
    }
    if ports && port as u32 != old_port {
        frame.set_port(port_at, l4sum, old_port as u16, port);
    }
    match side {
        Side::Destination => {
            pkt.keys.dst = addr;
            if ports {
                pkt.keys.l4b = port as u32;
            }
        }
        Side::Source => {
            pkt.keys.src = addr;
            if ports {
                pkt.keys.l4a = port as u32;
            }
        }
    }
}

/// [`translate`] for an IPv6 packet: no header checksum to fix; the L4
/// checksum (ICMPv6's too) covers the addresses through the pseudo header.
#[inline(always)]
fn translate6<F: Frame>(frame: &F, pkt: &mut Packet, side: Side) {
    let Some(t) = tracking_of::<V6>() else {
        return;
    };
    let Some((addr, port)) = rewrite_of(t, side) else {
        return;
    };
    let protocol = pkt.keys.protocol;
    if protocol == IPPROTO_ICMPV6 && V6::icmp_error(pkt.keys.l4a) {
        icmp_error6(frame, pkt, side, &addr, port);
        return;
    }
    if let Side::Destination = side {
        pkt.dnat_from6 = address6(pkt, side).0;
        pkt.dnat_from = (0, pkt.keys.l4b | DNAT_FROM_SET);
    }
    rewrite6(frame, pkt, side, &addr, port);
}

/// [`untranslate`] for an IPv6 packet.
#[inline(always)]
fn untranslate6<F: Frame>(frame: &F, pkt: &mut Packet) {
    let port = pkt.dnat_from.1;
    if port & DNAT_FROM_SET == 0 {
        return;
    }
    pkt.dnat_from = (0, 0);
    let addr = Addr6(pkt.dnat_from6);
    rewrite6(frame, pkt, Side::Destination, &addr, port as u16);
}

/// [`rewrite`] for an IPv6 packet: no header checksum to fix; the L4
/// checksum (ICMPv6's too) covers the addresses through the pseudo header.
#[inline(always)]
fn rewrite6<F: Frame>(frame: &F, pkt: &mut Packet, side: Side, addr: &Addr6, port: u16) {
    let protocol = pkt.keys.protocol;
    let (l4, _) = V6::l4(pkt);
    let ports = matches!(protocol, IPPROTO_TCP | IPPROTO_UDP) && pkt.l4_complete;
    let l4sum = L4Checksum {
        offset: match protocol {
            _ if !pkt.l4_complete => 0,
            IPPROTO_TCP => l4 + 16,
            IPPROTO_UDP => l4 + 6,
            IPPROTO_ICMPV6 => l4 + 2,
            _ => 0,
        },
        udp: protocol == IPPROTO_UDP,
    };
    let old = address6(pkt, side);
    let (addr_at, old_port, port_at) = match side {
        Side::Destination => (pkt.l2_len() + 24, pkt.keys.l4b, l4 + 2),
        Side::Source => (pkt.l2_len() + 8, pkt.keys.l4a, l4),
    };
    if *addr != old {
        frame.set_addr6(addr_at, l4sum, &old.0, &addr.0);
    }
    if ports && port as u32 != old_port {
        frame.set_port(port_at, l4sum, old_port as u16, port);
    }
    set_address6(pkt, side, addr);
    if ports {
        match side {
            Side::Destination => pkt.keys.l4b = port as u32,
            Side::Source => pkt.keys.l4a = port as u32,
        }
    }
}

/// The packet's address on `side` (its destination or source), as the
/// tracker reads a packet's addresses.
#[inline(always)]
fn address6(pkt: &Packet, side: Side) -> Addr6 {
    let (src, dst) = V6::addresses(pkt);
    match side {
        Side::Destination => dst,
        Side::Source => src,
    }
}

/// Keeps the parsed copy in step with a rewritten address.
#[inline(always)]
fn set_address6(pkt: &mut Packet, side: Side, addr: &Addr6) {
    let a = &addr.0;
    match side {
        Side::Destination => {
            pkt.keys.dst = a[0];
            pkt.addr6[1] = a[1];
            pkt.addr6[3] = a[2];
            pkt.addr6[5] = a[3];
        }
        Side::Source => {
            pkt.keys.src = a[0];
            pkt.addr6[0] = a[1];
            pkt.addr6[2] = a[2];
            pkt.addr6[4] = a[3];
        }
    }
}

/// Bytes of an ICMPv6 error NAT reads and edits: Ethernet with two VLAN
/// tags, the outer IPv6 header, extension headers up to the parser's
/// bound, the ICMPv6 header, the quoted IPv6 header and a quoted TCP
/// header.
const ICMP6_ERROR_WINDOW: usize = 22 + 40 + 256 + ICMP_HLEN + 40 + 20;

/// An ICMPv6 error about a translated connection, as [`icmp_error`] does
/// for ICMP: the outer address like any packet going its way, the quoted
/// packet (its fixed header followed by its L4 header: one with extension
/// headers is left as it is) back to what its sender saw, ports included.
/// The ICMPv6 checksum covers the outer addresses (pseudo header) and
/// every word changed in the message. Inlined into the global functions
/// that translate (verified once): a call of its own stacked its frame on
/// theirs.
#[inline(always)]
fn icmp_error6<F: Frame>(frame: &F, pkt: &mut Packet, side: Side, addr: &Addr6, port: u16) {
    let (start, end) = frame.window(ICMP6_ERROR_WINDOW);
    let (l4, _) = V6::l4(pkt);
    let l4 = opaque(l4);
    let inner = opaque(l4 + ICMP_HLEN);
    let destination = side == Side::Destination;
    let outer_old = address6(pkt, side);
    let outer_at = pkt.l2_len() + if destination { 24 } else { 8 };
    // Words of the ICMPv6 message (and its pseudo header) before and after.
    let mut old_sum = 0u64;
    let mut new_sum = 0u64;
    if outer_old != *addr && store_addr6(start, end, outer_at, &addr.0) {
        old_sum += words6(&outer_old.0);
        new_sum += words6(&addr.0);
    }
    set_address6(pkt, side, addr);
    // The quoted packet: its source when the error's destination changes.
    let Some(next) = load::<u8>(start, end, inner + 6) else {
        return finish6(start, end, l4, old_sum, new_sum);
    };
    let inner_at = inner + if destination { 8 } else { 24 };
    let Some(inner_old) = load_addr6(start, end, inner_at) else {
        return finish6(start, end, l4, old_sum, new_sum);
    };
    let il4 = inner + 40;
    let port_at = if destination { il4 } else { il4 + 2 };
    let ported = matches!(next, IPPROTO_TCP | IPPROTO_UDP);
    let l4_check = match next {
        IPPROTO_TCP => il4 + 16,
        IPPROTO_UDP => il4 + 6,
        IPPROTO_ICMPV6 => il4 + 2,
        _ => 0,
    };
    if Addr6(inner_old) != *addr && store_addr6(start, end, inner_at, &addr.0) {
        old_sum += words6(&inner_old);
        new_sum += words6(&addr.0);
        if l4_check != 0 {
            let (o, n) = patch_check(
                start,
                end,
                l4_check,
                words6(&inner_old),
                words6(&addr.0),
                next == IPPROTO_UDP,
            );
            old_sum += o as u64;
            new_sum += n as u64;
        }
    }
    let port_old = match load::<[u8; 2]>(start, end, port_at) {
        Some(p) if ported => u16::from_be_bytes(p),
        _ => port,
    };
    if ported {
        let udp = next == IPPROTO_UDP;
        let (o, n) = quoted_port(start, end, port_at, l4_check, udp, port_old, port);
        old_sum += o;
        new_sum += n;
    }
    finish6(start, end, l4, old_sum, new_sum)
}

/// Replaces the port at `at` of the packet an ICMP error quotes (`old` →
/// `new`) and patches the quoted TCP/UDP checksum at `check` for it;
/// returns the sums of every word changed (the port, the checksum), which
/// the error's own checksum covers.
#[inline(always)]
fn quoted_port(
    start: usize,
    end: usize,
    at: usize,
    check: usize,
    udp: bool,
    old: u16,
    new: u16,
) -> (u64, u64) {
    if old == new || !store(start, end, at, new.to_be()) {
        return (0, 0);
    }
    let (o, n) = patch_check(start, end, check, old as u64, new as u64, udp);
    (old as u64 + o as u64, new as u64 + n as u64)
}

/// The ICMPv6 checksum after the changes summed in `old_sum`/`new_sum`.
#[inline(always)]
fn finish6(start: usize, end: usize, l4: usize, old_sum: u64, new_sum: u64) {
    if old_sum != new_sum {
        patch_check(start, end, l4 + 2, old_sum, new_sum, false);
    }
}

/// Bytes of an ICMP error NAT reads and edits: Ethernet with two VLAN
/// tags, the longest outer IPv4 header, the ICMP header, the longest quoted
/// IPv4 header and a quoted TCP header.
const ICMP_ERROR_WINDOW: usize = 22 + 60 + ICMP_HLEN + 60 + 20;

/// Replaces the big-endian 16-bit checksum at `offset` after words summing
/// to `old_sum` became words summing to `new_sum`; returns the (old, new)
/// checksum values, 0 and 0 when it couldn't or needn't (`udp`: a checksum
/// of zero means none and stays zero; a result of zero is sent as 0xffff,
/// RFC 768).
#[inline(always)]
fn patch_check(
    start: usize,
    end: usize,
    offset: usize,
    old_sum: u64,
    new_sum: u64,
    udp: bool,
) -> (u16, u16) {
    let Some(check) = load::<[u8; 2]>(start, end, offset) else {
        return (0, 0);
    };
    let check = u16::from_be_bytes(check);
    if udp && check == 0 {
        return (0, 0);
    }
    let mut new = updated(check, old_sum, new_sum);
    if udp && new == 0 {
        new = 0xffff;
    }
    if !store(start, end, offset, new.to_be_bytes()) {
        return (0, 0);
    }
    (check, new)
}

/// An ICMP error about a translated connection, translated as netfilter
/// does: the outer header like any packet going its way (addresses only),
/// the quoted packet — which went the other way — back to what its sender
/// saw: the destination side of the error is the source side of the quoted
/// packet and vice versa, ports included. Every word changed inside the
/// ICMP message enters the ICMP checksum, the quoted headers' own
/// checksums included.
#[inline(never)]
fn icmp_error<F: Frame>(frame: &F, pkt: &mut Packet, side: Side, addr: u32, port: u16) {
    let (start, end) = frame.window(ICMP_ERROR_WINDOW);
    let l3 = pkt.l2_len();
    let l4 = opaque(l3 + pkt.ip_header_len());
    let inner = opaque(l4 + ICMP_HLEN);
    let destination = side == Side::Destination;
    // Outer header.
    let outer_at = if destination { l3 + 16 } else { l3 + 12 };
    let Some(outer_old) = load::<u32>(start, end, outer_at) else {
        return;
    };
    if outer_old != addr && store(start, end, outer_at, addr) {
        patch_check(start, end, l3 + 10, words(outer_old), words(addr), false);
    }
    if destination {
        pkt.keys.dst = addr;
    } else {
        pkt.keys.src = addr;
    }
    // Quoted header: its source when the error's destination changes.
    let Some(ihl) = load::<u8>(start, end, inner) else {
        return;
    };
    let ihl = ((ihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return;
    }
    let Some(protocol) = load::<u8>(start, end, inner + 9) else {
        return;
    };
    let inner_at = if destination { inner + 12 } else { inner + 16 };
    let Some(inner_old) = load::<u32>(start, end, inner_at) else {
        return;
    };
    let il4 = opaque(inner + (ihl & 0x3c));
    let port_at = if destination { il4 } else { il4 + 2 };
    let ported = matches!(protocol, IPPROTO_TCP | IPPROTO_UDP);
    let port_old = match load::<[u8; 2]>(start, end, port_at) {
        Some(p) if ported => u16::from_be_bytes(p),
        _ => port,
    };
    // Words of the ICMP message before and after.
    let mut old_sum = 0u64;
    let mut new_sum = 0u64;
    if inner_old != addr && store(start, end, inner_at, addr) {
        old_sum += words(inner_old);
        new_sum += words(addr);
        let (o, n) = patch_check(start, end, inner + 10, words(inner_old), words(addr), false);
        old_sum += o as u64;
        new_sum += n as u64;
        // The quoted L4 checksum covers the addresses (pseudo header),
        // when the quote holds it.
        let l4_check = match protocol {
            IPPROTO_TCP => il4 + 16,
            IPPROTO_UDP => il4 + 6,
            _ => 0,
        };
        if l4_check != 0 {
            let (o, n) = patch_check(
                start,
                end,
                l4_check,
                words(inner_old),
                words(addr),
                protocol == IPPROTO_UDP,
            );
            old_sum += o as u64;
            new_sum += n as u64;
        }
    }
    if ported {
        let check = if protocol == IPPROTO_TCP {
            il4 + 16
        } else {
            il4 + 6
        };
        let udp = protocol == IPPROTO_UDP;
        let (o, n) = quoted_port(start, end, port_at, check, udp, port_old, port);
        old_sum += o;
        new_sum += n;
    }
    if old_sum != new_sum {
        patch_check(start, end, l4 + 2, old_sum, new_sum, false);
    }
}

/// The translation of a nat chain's verdict, if it is one of `wanted`
/// (DNAT/REDIRECT or SNAT/MASQUERADE), with its number. The pipeline runs
/// the chain itself: nested in here, the classifier's stack frame would
/// come on top of ours.
#[inline(always)]
fn nat_rule(generation: u32, verdict: (u32, u32), wanted: [u32; 2]) -> Option<(u32, NatTarget)> {
    let (target, arg) = verdict;
    // (A policy is never one of them.)
    if target != wanted[0] && target != wanted[1] {
        return None;
    }
    let to = NAT_TARGETS.get(nat_target_index(
        crate::classify::capacity(),
        generation,
        arg,
    ))?;
    Some((target, *to))
}

/// What NAT needs to know of an address family besides conntrack's: where
/// its translations' addresses come from.
pub trait NatFamily: Family {
    /// Where REDIRECT sends a local socket's packets.
    const LOOPBACK: Self::Addr;
    /// The address `hash` picks from the range of translation `n` of
    /// `generation` (`to`).
    fn range_addr(generation: u32, n: u32, to: &NatTarget, hash: u32) -> Option<Self::Addr>;
    /// The address MASQUERADE and REDIRECT take from interface `ifindex`.
    fn iface_addr(ifindex: u32) -> Option<Self::Addr>;
}

impl NatFamily for V4 {
    const LOOPBACK: u32 = LOOPBACK;
    #[inline(always)]
    fn range_addr(_generation: u32, _n: u32, to: &NatTarget, hash: u32) -> Option<u32> {
        Some(pick(to.addr_first, to.addr_last, hash).to_be())
    }
    #[inline(always)]
    fn iface_addr(ifindex: u32) -> Option<u32> {
        iface_addr(ifindex)
    }
}

impl NatFamily for V6 {
    /// ::1.
    const LOOPBACK: Addr6 = Addr6([0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])]);
    #[inline(always)]
    fn range_addr(generation: u32, n: u32, _to: &NatTarget, hash: u32) -> Option<Addr6> {
        let range = NAT6_ADDRS.get(nat_target_index(crate::classify::capacity(), generation, n))?;
        Some(Addr6(pick6(&range.first, &range.last, hash)))
    }
    #[inline(always)]
    fn iface_addr(ifindex: u32) -> Option<Addr6> {
        iface_addr6(ifindex).map(Addr6)
    }
}

/// An address of the IPv6 range `first..=last` picked by `hash`, word by
/// word as nf_nat picks one (`find_best_ips_proto`): each word in its own
/// range until one is below its range's end, every word after it from
/// the whole word.
#[inline(always)]
fn pick6(first: &[u32; 4], last: &[u32; 4], hash: u32) -> [u32; 4] {
    let mut out = [0u32; 4];
    let mut full = false;
    let mut h = hash;
    for i in 0..4 {
        let (lo, hi) = if full {
            (0, u32::MAX)
        } else {
            (u32::from_be(first[i]), u32::from_be(last[i]))
        };
        out[i] = pick(lo, hi, h).to_be();
        full = full || out[i] != last[i];
        h = h.rotate_left(11).wrapping_mul(0x9e37_79b1);
    }
    out
}

/// Attempt `attempt` of a shifted port map (`nat_flags::OFFSET`) for the
/// original `port`.
#[inline(always)]
pub fn offset_port(to: &NatTarget, port: u16, attempt: u32) -> u16 {
    let span = if to.port_last < to.port_first {
        1
    } else {
        (to.port_last - to.port_first) as u32 + 1
    };
    nat_offset_port(to.port_first, span, port, to.port_base, attempt)
}

/// A value of `first..=last` picked by `hash`.
#[inline(always)]
pub fn pick(first: u32, last: u32, hash: u32) -> u32 {
    // In u64 so that the span of 0..=u32::MAX is not zero; a zero check
    // the compiler can see, so no panic path reaches the verifier.
    let span = (last as u64).saturating_sub(first as u64) + 1;
    if last <= first || span == 0 {
        return first;
    }
    first.wrapping_add((hash as u64 % span) as u32)
}

#[inline(always)]
fn flow_hash<A: FlowAddr>(e: &CtEntryOf<A>) -> u32 {
    let h = e.orig_src.fold()
        ^ e.orig_dst.fold().rotate_left(7)
        ^ ((e.orig_sport as u32) << 16)
        ^ e.orig_dport as u32;
    h.wrapping_mul(0x9e37_79b1)
}

/// True when the packet opens a new connection: the nat chains decide its
/// translation (`pending` and `prerouting`/`postrouting`).
#[inline(always)]
pub fn pending() -> bool {
    pending_of::<V4>()
}

/// [`pending`] for the current IPv6 packet.
#[inline(always)]
pub fn pending6() -> bool {
    pending_of::<V6>()
}

#[inline(always)]
fn pending_of<F: Family>() -> bool {
    matches!(tracking_of::<F>(), Some(t) if t.pending != 0)
}

/// nat PREROUTING's `verdict` for a new connection's first packet, which
/// arrived on `in_ifindex` (0: a local socket): DNAT or REDIRECT, recorded
/// in the pending conntrack entry (applied by `translate`).
#[inline(never)]
pub fn prerouting(generation: u32, verdict: (u32, u32), in_ifindex: u32) {
    prerouting_of::<V4>(generation, verdict, in_ifindex)
}

#[inline(always)]
fn prerouting_of<F: NatFamily>(generation: u32, verdict: (u32, u32), in_ifindex: u32) {
    let Some(t) = tracking_of::<F>() else {
        return;
    };
    if t.pending == 0 {
        return;
    }
    let Some((kind, to)) = nat_rule(generation, verdict, [target::DNAT, target::REDIRECT]) else {
        return;
    };
    let e = &mut t.entry;
    let hash = flow_hash(e);
    let addr = if kind == target::REDIRECT {
        if in_ifindex == 0 {
            F::LOOPBACK
        } else {
            match F::iface_addr(in_ifindex) {
                Some(a) => a,
                // iptables drops what it can't redirect.
                None => e.orig_dst,
            }
        }
    } else if to.flags & nat_flags::ADDR != 0 {
        match F::range_addr(generation, verdict.1, &to, hash) {
            Some(a) => a,
            None => e.orig_dst,
        }
    } else {
        e.orig_dst
    };
    let ported = matches!(e.protocol, IPPROTO_TCP | IPPROTO_UDP);
    let port = if ported && to.flags & nat_flags::OFFSET != 0 {
        // A shifted port map: the port at the original one's offset from
        // the base (nf_nat's first choice for it; the reply tuple differs
        // from other connections' by their sources).
        offset_port(&to, e.orig_dport, 0)
    } else if ported && to.flags & nat_flags::PORTS != 0 {
        pick(to.port_first as u32, to.port_last as u32, hash >> 16) as u16
    } else {
        e.orig_dport
    };
    if addr == e.orig_dst && port == e.orig_dport {
        return;
    }
    e.reply_src = addr;
    e.reply_sport = port;
    e.status |= ct_status::DST_NAT;
    bump(stats::NAT_DNAT);
}

/// nat POSTROUTING's `verdict` for a new connection leaving by
/// `out_ifindex`: SNAT or MASQUERADE, with a source port that keeps the
/// reply tuple unique. Returns false when the packet must be dropped (no
/// free port, or no address to masquerade with).
#[inline(never)]
pub fn postrouting(generation: u32, verdict: (u32, u32), out_ifindex: u32) -> bool {
    postrouting_of::<V4>(generation, verdict, out_ifindex)
}

#[inline(always)]
fn postrouting_of<F: NatFamily>(generation: u32, verdict: (u32, u32), out_ifindex: u32) -> bool {
    let Some(t) = tracking_of::<F>() else {
        return true;
    };
    if t.pending == 0 {
        return true;
    }
    let Some((kind, to)) = nat_rule(generation, verdict, [target::SNAT, target::MASQUERADE]) else {
        return true;
    };
    let hash = flow_hash(&t.entry);
    let addr = if kind == target::MASQUERADE {
        F::iface_addr(out_ifindex)
    } else if to.flags & nat_flags::ADDR != 0 {
        F::range_addr(generation, verdict.1, &to, hash)
    } else {
        Some(t.entry.orig_src)
    };
    let Some(addr) = addr else {
        // No address to masquerade with: iptables drops.
        bump(stats::NAT_EXHAUSTED);
        return false;
    };
    let sport = t.entry.orig_sport;
    let ported = matches!(t.entry.protocol, IPPROTO_TCP | IPPROTO_UDP);
    let (first, last) = if !ported {
        (sport, sport)
    } else if to.flags & nat_flags::PORTS != 0 {
        (to.port_first, to.port_last)
    } else if sport < 1024 {
        (1, 1023)
    } else {
        (1024, 65535)
    };
    let random = to.flags & nat_flags::RANDOM != 0;
    // A shifted port map starts the search at the source port's offset
    // from the base, as nf_nat does, instead of a hashed port; the
    // original port is still kept when it is in the range and free
    // (nf_nat tries the original tuple first for SNAT).
    let start = if ported && to.flags & nat_flags::OFFSET != 0 {
        Start::Offset(sport.wrapping_sub(to.port_base))
    } else {
        Start::Hash(hash)
    };
    if !allocate::<F>(t, addr, first, last, start, random) {
        bump(stats::NAT_EXHAUSTED);
        return false;
    }
    true
}

/// Where `allocate`'s search through a port range starts.
#[derive(Clone, Copy)]
enum Start {
    /// At a port picked by the flow's hash.
    Hash(u32),
    /// At a shifted port map's offset, counted on in 16 bits as nf_nat
    /// counts it (`nat_offset_port`).
    Offset(u16),
}

/// Claims a source `addr:port` for the pending connection `t`: the
/// original port when it is in range and free (unless `random`), else the
/// next free one from `start`. The claim is the connection's reply
/// key entering `CT_NAT_INDEX` (no-exist insert: two CPUs can't both win
/// it), unless a live connection already has that key.
#[inline(always)]
fn allocate<F: Family>(
    t: &mut TrackingOf<F::Addr>,
    addr: F::Addr,
    first: u16,
    last: u16,
    start: Start,
    random: bool,
) -> bool {
    let Some(index) = F::nat_index() else {
        return false;
    };
    let zone = t.key.zone;
    let (e, own, key) = (&mut t.entry, &t.key, &mut t.wire);
    if last < first {
        return false;
    }
    let span = (last - first) as u32 + 1;
    if span == 0 {
        return false;
    }
    let keep = !random && e.orig_sport >= first && e.orig_sport <= last;
    // Plain numbers before the loop, which the verifier walks once per
    // attempt: a shifted port map counts in 16 bits (`nat_offset_port`).
    let (at, wrap) = match start {
        Start::Hash(hash) => (hash % span, u32::MAX),
        Start::Offset(off) => (off as u32, 0xffff),
    };
    // The search's own attempts count from 0 after the kept port.
    let skip = keep as u32;
    let mut i = 0;
    while i < NAT_PORT_ATTEMPTS {
        let port = if keep && i == 0 {
            e.orig_sport
        } else {
            (first as u32 + (at.wrapping_add(i - skip) & wrap) % span) as u16
        };
        i += 1;
        if addr == e.orig_src && port == e.orig_sport {
            // Nothing to translate: the connection's own key is the claim.
            return true;
        }
        // The connection's zone: a port is free when no connection of
        // that zone has the tuple (as nf_nat's unique-tuple check). Built
        // in the tracking slot's scratch key, not on the stack.
        set_key(
            key,
            &e.reply_src,
            e.reply_sport,
            &addr,
            port,
            e.protocol,
            zone,
        );
        if exists_of::<F>(key) {
            continue;
        }
        let claimed = match index.insert(&*key, own, BPF_NOEXIST) {
            Ok(()) => true,
            // Taken: only by a connection that is gone may it be taken
            // over.
            // SAFETY: read in place (a map value may be a lookup's key).
            Err(_) => match unsafe { index.get(&*key) } {
                Some(owner) if !exists_of::<F>(owner) => index.insert(&*key, own, 0).is_ok(),
                _ => false,
            },
        };
        if claimed {
            e.reply_dst = addr;
            e.reply_dport = port;
            e.status |= ct_status::SRC_NAT;
            bump(stats::NAT_SNAT);
            return true;
        }
        if span == 1 {
            break;
        }
    }
    false
}

// ---------------------------------------------------------------- IPv6
//
// The IPv6 program reaches its NAT through BPF global functions, each
// verified once on its own: as static calls, the verifier walked the port
// search and the rewrites again for every state the IPv6 chains left,
// past the million instructions allowed. The packet is in its per-CPU
// slot (`current_packet_mut`); the side is `SIDE_*`.

/// `Side::Destination` as a global function's argument.
pub const SIDE_DESTINATION: u32 = 0;
/// `Side::Source` as a global function's argument.
pub const SIDE_SOURCE: u32 = 1;

#[inline(always)]
fn side_of(side: u32) -> Side {
    if side == SIDE_SOURCE {
        Side::Source
    } else {
        Side::Destination
    }
}

/// [`prerouting`] for ip6tables' nat PREROUTING verdict `target`/`arg`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_nat6_prerouting(
    generation: u32,
    target: u32,
    arg: u32,
    in_ifindex: u32,
) -> u32 {
    prerouting_of::<V6>(generation, (target, arg), in_ifindex);
    0
}

/// [`postrouting`] for ip6tables' nat POSTROUTING verdict `target`/`arg`:
/// 1 when the packet must be dropped.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_nat6_postrouting(
    generation: u32,
    target: u32,
    arg: u32,
    out_ifindex: u32,
) -> u32 {
    !postrouting_of::<V6>(generation, (target, arg), out_ifindex) as u32
}

/// [`translate6`] of the current XDP packet's `side`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_translate6_xdp(ctx: *mut aya_ebpf::bindings::xdp_md, side: u32) -> u32 {
    let Some(pkt) = crate::parse::current_packet_mut() else {
        return 0;
    };
    if ctx.is_null() {
        return 0;
    }
    let ctx = XdpContext::new(ctx);
    translate6(&XdpFrame::new(&ctx), pkt, side_of(side));
    0
}

/// [`untranslate6`] of the current XDP packet: before REJECT answers it.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_untranslate6_xdp(ctx: *mut aya_ebpf::bindings::xdp_md) -> u32 {
    let Some(pkt) = crate::parse::current_packet_mut() else {
        return 0;
    };
    if ctx.is_null() {
        return 0;
    }
    let ctx = XdpContext::new(ctx);
    untranslate6(&XdpFrame::new(&ctx), pkt);
    0
}

/// [`translate6`] of the current TC packet's `side`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_translate6_tc(
    skb: *mut aya_ebpf::bindings::__sk_buff,
    side: u32,
) -> u32 {
    let Some(pkt) = crate::parse::current_packet_mut() else {
        return 0;
    };
    if skb.is_null() {
        return 0;
    }
    let ctx = TcContext::new(skb);
    translate6(&TcFrame::new(&ctx), pkt, side_of(side));
    0
}
