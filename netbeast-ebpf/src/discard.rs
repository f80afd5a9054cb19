//! Frames the kernel discards before netfilter ever sees them: a unicast
//! destination MAC of another host (`PACKET_OTHERHOST`, dropped by
//! `ip_rcv_core`), a bad IPv4 header checksum (same place), and martian
//! sources and destinations (`ip_route_input_slow`, `ip_route_input_mc`,
//! `fib_validate_source`). iptables never counts nor answers them, so
//! netbeast leaves them to the kernel untouched: no chain runs, no counter
//! moves, and REJECT cannot turn them into replies (a reflector otherwise,
//! answering spoofed loopback or multicast sources).
//!
//! The common packet pays one array lookup, a compare of its MAC, the
//! header checksum and a few compares of its addresses' first bytes; the
//! detailed martian rules run only for the unusual first bytes.

use aya_ebpf::{macros::map, maps::Array};
use netbeast_common::{iface_guard, size};

use crate::{
    csum::fold,
    parse::{Packet, load, opaque},
    route::cached_local,
};

/// ifindex → `iface_guard` entry, written by userspace for the namespace's
/// interfaces (not `lo`, whose traffic the kernel routes as its own).
#[map]
static IFACE_GUARDS: Array<u64> = Array::with_max_entries(size::IFACE_GUARDS, 0);

const IPPROTO_IGMP: u8 = 2;
const IP_HLEN: usize = 20;

/// True when the kernel would discard the packet before its PREROUTING
/// hook (or in the routing decision that precedes INPUT and FORWARD).
#[inline(always)]
pub fn kernel_discards(start: usize, end: usize, pkt: &Packet, in_ifindex: u32) -> bool {
    let guard = match IFACE_GUARDS.get(in_ifindex) {
        Some(g) => *g,
        None => 0,
    };
    if guard == 0 {
        return false;
    }
    // One bounds check for the IPv4 header, then plain loads: `load`'s
    // unaligned reads would be split into byte loads, and BPF has one load
    // instruction whatever the alignment (see parse.rs).
    let ip = opaque(start + pkt.l2_len());
    if ip + IP_HLEN > end {
        return false;
    }
    // The parser's word of the destination MAC (its low six bytes, little
    // endian; the ingress parser always reads it):
    // bit 0 is the group bit (broadcast, multicast), which the kernel
    // accepts as PACKET_BROADCAST or PACKET_MULTICAST.
    let dst_mac = pkt.keys.eth_dst;
    if dst_mac & 1 == 0 && (dst_mac ^ guard) & iface_guard::MAC_MASK != 0 {
        return true;
    }
    // SAFETY: the 20 bytes at ip are inside the packet (checked).
    !unsafe { header_checksum_ok(ip, start, end, pkt) } || martian(pkt, guard)
}

/// The IPv4 header at `ip` sums to 0xffff (RFC 1071), options included.
///
/// # Safety
/// The 20 bytes at `ip` are inside the packet.
#[inline(always)]
unsafe fn header_checksum_ok(ip: usize, start: usize, end: usize, pkt: &Packet) -> bool {
    // The fixed 20 bytes in three loads; a one's-complement sum does not
    // care about byte order or word size as long as it is folded in the
    // end, so little-endian 64- and 32-bit words do.
    // SAFETY: in bounds (caller).
    let (a, b, c) = unsafe {
        (
            core::ptr::read(ip as *const u64),
            core::ptr::read((ip + 8) as *const u64),
            core::ptr::read((ip + 16) as *const u32),
        )
    };
    let l3 = pkt.l2_len();
    let mut sum = (a & 0xffff_ffff) + (a >> 32) + (b & 0xffff_ffff) + (b >> 32) + c as u64;
    let header_len = pkt.ip_header_len();
    if header_len > IP_HLEN {
        sum += options_sum(start, end, l3 + IP_HLEN, header_len - IP_HLEN);
    }
    fold(sum) == 0xffff
}

/// Sum of the IP options (`len` bytes, a multiple of 4, at most 40): only
/// packets with options run it.
#[inline(always)]
fn options_sum(start: usize, end: usize, at: usize, len: usize) -> u64 {
    let mut sum = 0u64;
    let mut i = 0;
    while i < 40 {
        if i >= len {
            break;
        }
        let Some(w) = load::<u32>(start, end, at + i) else {
            return sum;
        };
        sum += w as u64;
        i += 4;
    }
    sum
}

/// A martian source or destination as the kernel's input route sees it
/// (with `rp_filter` off and `accept_local` off, their defaults).
#[inline(always)]
fn martian(pkt: &Packet, guard: u64) -> bool {
    // The first octets, as the addresses sit in the packet (the low byte of
    // a little-endian load).
    let (s8, d8) = (pkt.keys.src & 0xff, pkt.keys.dst & 0xff);
    // Ordinary addresses: a few compares and on to the one check every
    // packet gets, one of the host's own addresses as the source
    // (fib_validate_source).
    if s8 == 0 || s8 == 127 || s8 >= 224 || d8 == 0 || d8 == 127 {
        return unusual_martian(
            u32::from_be(pkt.keys.src),
            u32::from_be(pkt.keys.dst),
            pkt.keys.protocol,
            guard,
        );
    }
    cached_local(pkt.keys.src)
}

/// The rules for sources and destinations in 0/8, 127/8 and 224/3.
#[inline(never)]
fn unusual_martian(src: u32, dst: u32, protocol: u8, guard: u64) -> bool {
    let localnet = guard & iface_guard::ROUTE_LOCALNET != 0;
    let (s8, d8) = (src >> 24, dst >> 24);
    let own_source = || cached_local(src.to_be());
    // Multicast and limited-broadcast sources never.
    if (224..240).contains(&s8) || src == u32::MAX {
        return true;
    }
    if (224..240).contains(&d8) {
        // ip_route_input_mc: a zero source only to link-local groups
        // (224.0.0.0/24) or for IGMP.
        if s8 == 127 {
            return !localnet;
        }
        if s8 == 0 {
            return dst >> 8 != 0xe0_0000 && protocol != IPPROTO_IGMP;
        }
        return own_source();
    }
    // The limited broadcast (and 0.0.0.0 → 0.0.0.0) takes a zero source:
    // DHCP.
    if dst == u32::MAX || (src == 0 && dst == 0) {
        return s8 != 0 && own_source();
    }
    if s8 == 0 || d8 == 0 {
        return true;
    }
    if (s8 == 127 || d8 == 127) && !localnet {
        return true;
    }
    own_source()
}

/// True when the frame went to an Ethernet broadcast or multicast address
/// (the group bit, the low bit of the parser's destination MAC word): the
/// kernel does not route those on (`ip_forward` drops what is not
/// `PACKET_HOST` before its FORWARD hook).
#[inline(always)]
pub fn link_group_frame(pkt: &Packet) -> bool {
    pkt.keys.eth_dst & 1 != 0
}

/// `ip6_rcv_core`'s drops of an IPv6 packet, before its PREROUTING hook:
/// a unicast frame for another host's MAC, the loopback address as source
/// or destination, a multicast source, a multicast
/// destination of scope 0 (reserved) or 1 (interface-local). ip6tables
/// never counts nor answers them; netbeast leaves them to the kernel
/// untouched, as IPv4's [`kernel_discards`] does: `DISCARD6`.
///
/// `NOT_FORWARDED6` too: what `ip6_forward` refuses before its FORWARD
/// hook, should the route say forward: a frame to a link-level group
/// (not `PACKET_HOST`), the unspecified source. Neither: 0.
///
/// Inlined, on the packet the IPv6 parser just wrote (it was a BPF global
/// function, which cost every IPv6 packet a call and a second lookup of
/// the packet's slot; the verifier walks it once, near the program's
/// start, where few states reach it).
pub const DISCARD6: u32 = 1;
pub const NOT_FORWARDED6: u32 = 2;

#[inline(always)]
pub fn discards6(pkt: &Packet, in_ifindex: u32) -> u32 {
    let guard = match IFACE_GUARDS.get(in_ifindex) {
        Some(g) => *g,
        None => 0,
    };
    // Interfaces netbeast is attached to have an entry; others (none
    // here) are not judged.
    if guard == 0 {
        return 0;
    }
    let dst_mac = pkt.keys.eth_dst;
    if dst_mac & 1 == 0 && (dst_mac ^ guard) & iface_guard::MAC_MASK != 0 {
        return DISCARD6;
    }
    // The addresses' words as they sit in the packet (little-endian
    // loads): the first in the keys, the other three in `addr6`.
    let (s0, d0) = (pkt.keys.src, pkt.keys.dst);
    let w = &pkt.addr6;
    let (s, d) = ([s0, w[0], w[2], w[4]], [d0, w[1], w[3], w[5]]);
    // ::1, in packet order: three zero words and 0x00000001 big-endian.
    let loopback = |a: [u32; 4]| a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == 1u32.to_be();
    if loopback(s) || loopback(d) {
        return DISCARD6;
    }
    // ff00::/8 sources. (An IPv4-mapped source is not dropped here: the
    // kernel's FORWARD and INPUT see it; its transports refuse it later.)
    if s0 & 0xff == 0xff {
        return DISCARD6;
    }
    // Multicast destinations of scope 0 or 1: the scope is the low
    // nibble of the second byte.
    if d0 & 0xff == 0xff && (d0 >> 8) & 0x0e == 0 {
        return DISCARD6;
    }
    let unspecified = s0 == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0;
    if dst_mac & 1 != 0 || unspecified {
        return NOT_FORWARDED6;
    }
    0
}
