//! The FORWARD fast path: an accepted forwarded packet whose next hop the
//! FIB already knows is rewritten (MACs, TTL) and redirected out of its
//! interface here, without entering the kernel's stack.

use aya_ebpf::{bindings::xdp_action, helpers::generated::bpf_redirect, programs::XdpContext};
use netbeast_common::{iface_path, stats};

use crate::{
    handoff,
    nat::{self, Side, XdpFrame},
    parse::{ETH_HLEN, Packet, current_packet_mut, load},
    route::NextHop,
    stats::bump,
};

/// How an accepted forwarded packet leaves.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// The kernel routes it (XDP_PASS, untouched).
    Kernel,
    /// XDP_REDIRECT: the interface takes redirected frames.
    Redirect,
    /// Handed to the ingress interface's TC program, which redirects it
    /// (a veth whose other end runs no XDP).
    ViaTc,
}

/// How an accepted packet from `in_ifindex` leaving by `out_ifindex` can
/// take the fast path (the IPv6 program's way: it caches no route).
#[inline(always)]
pub fn fast_path(pkt: &Packet, in_ifindex: u32, out_ifindex: u32) -> Way {
    way(pkt, handoff::paths(out_ifindex), handoff::paths(in_ifindex))
}

/// How an accepted packet leaving through `hop` can take the fast path,
/// with the interfaces' bits that came with the next hop (`NextHop`,
/// cached with the route: a cache hit needs neither hash lookup).
#[inline(always)]
pub fn fast_path_of(pkt: &Packet, hop: &NextHop) -> Way {
    way(pkt, hop.out_paths, hop.in_paths)
}

/// Never for VLAN-tagged frames, which the kernel forwards by
/// sub-interface, nor into interfaces outside the fast path (`IFACE_PATHS`,
/// written by userspace: `out`, `in_` their bits).
#[inline(always)]
fn way(pkt: &Packet, out: u32, in_: u32) -> Way {
    if pkt.l3 != ETH_HLEN {
        return Way::Kernel;
    }
    if out & iface_path::FORWARD_REDIRECT != 0 {
        Way::Redirect
    } else if out & iface_path::FORWARD_VIA_TC != 0 && in_ & iface_path::TC_INGRESS != 0 {
        Way::ViaTc
    } else {
        Way::Kernel
    }
}

/// The tail of an accepted FORWARD packet (IPv4): the way out its cached
/// or looked-up next hop allows (`Packet::next_hop`), the source NAT of a
/// frame redirected here (`translations` non-zero: the connection's
/// translations apply), then [`forward`]; XDP_PASS leaves it to the kernel
/// (which routes it, TC egress translating it). A BPF global function,
/// verified once on its own: inlined, the verifier walked the source NAT
/// and the rewrite again for every state the chains left, which with the
/// route cache took the IPv4 program past its million instructions.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_forward_xdp(
    ctx: *mut aya_ebpf::bindings::xdp_md,
    out_ifindex: u32,
    translations: u32,
) -> u32 {
    let Some(pkt) = current_packet_mut() else {
        return xdp_action::XDP_PASS;
    };
    if ctx.is_null() {
        return xdp_action::XDP_PASS;
    }
    let ctx = XdpContext::new(ctx);
    let way = fast_path_of(pkt, &pkt.next_hop);
    if way == Way::Kernel {
        return crate::handoff::pass(&ctx, ctx.ingress_ifindex() as u32, pkt.search.mark);
    }
    // Handed off, the frame still crosses the TC egress program, which
    // applies the source NAT then.
    if translations != 0 && way == Way::Redirect {
        nat::translate(&XdpFrame::new(&ctx), pkt, Side::Source);
    }
    let hop = pkt.next_hop;
    forward(&ctx, out_ifindex, &hop, way, pkt.keys.ttl)
}

/// Sends a packet `fast_path` allows out of `out_ifindex` the `way` it
/// found, or returns XDP_PASS to leave it to the kernel untouched. `ttl`:
/// the TTL it leaves with, as the chains after the routing decision saw
/// it (the frame's less one, or what mangle's `-j TTL` made of it).
#[inline(always)]
pub fn forward(ctx: &XdpContext, out_ifindex: u32, hop: &NextHop, way: Way, ttl: u8) -> u32 {
    // The hand-off's tag first, once the frame holds the bytes written
    // below (so a slot is used only for a frame that then carries its tag:
    // `handoff::leave` counts on it): a frame that cannot be handed off
    // goes to the kernel as it came.
    if ctx.data() + ETH_HLEN + 12 > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    let Some(src_mac) = source_mac(hop, out_ifindex, way) else {
        return xdp_action::XDP_PASS;
    };
    let (start, end) = (ctx.data(), ctx.data_end());
    // TTL and header checksum at fixed offsets: one 12-byte window covers
    // bytes 0..12 of the IP header (TTL at 8, checksum at 10..12).
    let Some(mut ip) = load::<[u8; 12]>(start, end, ETH_HLEN) else {
        return xdp_action::XDP_PASS;
    };
    // RFC 1624 incremental update: TTL is the high byte of a 16-bit word.
    let old = u16::from_be_bytes([ip[8], ip[9]]);
    ip[8] = ttl;
    let new = u16::from_be_bytes([ip[8], ip[9]]);
    let check = u16::from_be_bytes([ip[10], ip[11]]);
    let mut sum = (!check as u32) + (!old as u32) + new as u32;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    let check = !(sum as u16);
    ip[10..12].copy_from_slice(&check.to_be_bytes());
    let p = start + ETH_HLEN;
    if p + 12 > end || start + 12 > end {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: both windows checked against the packet end just above.
    unsafe {
        core::ptr::write_unaligned(p as *mut [u8; 12], ip);
        crate::mem::write_bytes(start as *mut u8, hop.dst_mac);
        crate::mem::write_bytes((start + 6) as *mut u8, src_mac);
    }
    bump(stats::FAST_PATH);
    if way == Way::ViaTc {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(out_ifindex, 0) as u32 }
}

/// The source MAC a forwarded frame leaves with: the next hop's, or for a
/// frame handed off to TC the tag that stands for it there
/// (`handoff::stash`); None when it cannot be handed off.
#[inline(always)]
fn source_mac(hop: &NextHop, out_ifindex: u32, way: Way) -> Option<[u8; 6]> {
    if way == Way::ViaTc {
        handoff::stash(netbeast_common::handoff::MAGIC, out_ifindex, hop.src_mac)
    } else {
        Some(hop.src_mac)
    }
}

/// [`forward`] for IPv6: the hop limit `hops` (the frame's − 1, or what
/// mangle's `-j HL` made of it; the IPv6 header has no checksum to
/// update), the MACs from the FIB, out the `way` found.
#[inline(always)]
pub fn forward6(ctx: &XdpContext, out_ifindex: u32, hop: &NextHop, way: Way, hops: u8) -> u32 {
    // As for IPv4: the tag once the frame is known to hold what is written.
    if ctx.data() + ETH_HLEN + 8 > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    let Some(src_mac) = source_mac(hop, out_ifindex, way) else {
        return xdp_action::XDP_PASS;
    };
    let (start, end) = (ctx.data(), ctx.data_end());
    // Bytes 0..8 of the IPv6 header: the hop limit is byte 7.
    let Some(mut ip) = load::<[u8; 8]>(start, end, ETH_HLEN) else {
        return xdp_action::XDP_PASS;
    };
    ip[7] = hops;
    let p = start + ETH_HLEN;
    if p + 8 > end || start + 12 > end {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: both windows checked against the packet end just above.
    unsafe {
        core::ptr::write_unaligned(p as *mut [u8; 8], ip);
        crate::mem::write_bytes(start as *mut u8, hop.dst_mac);
        crate::mem::write_bytes((start + 6) as *mut u8, src_mac);
    }
    bump(stats::FAST_PATH);
    if way == Way::ViaTc {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(out_ifindex, 0) as u32 }
}
