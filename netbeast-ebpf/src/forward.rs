//! The FORWARD fast path: an accepted forwarded packet whose next hop the
//! FIB already knows is rewritten (MACs, TTL) and redirected out of its
//! interface here, without entering the kernel's stack.

use aya_ebpf::{
    bindings::xdp_action, helpers::generated::bpf_redirect, macros::map, maps::HashMap,
    programs::XdpContext,
};
use netbeast_common::{size, stats};

use crate::{
    parse::{ETH_HLEN, Packet, load},
    route::NextHop,
    stats::bump,
};

/// Interfaces a redirected frame can leave by (ifindex → 1), written by
/// userspace: ones netbeast is attached to (so an XDP program is loaded
/// there, which most drivers need to transmit redirected frames), except
/// veths unless asked (a veth delivers redirected frames only when its peer
/// runs an XDP program, which netbeast cannot see from here).
#[map]
static FAST_PATH_IFACES: HashMap<u32, u32> = HashMap::with_max_entries(size::IFACES, 0);

/// True when an accepted packet leaving by `out_ifindex` can take the
/// fast path: not for VLAN-tagged frames, which the kernel forwards by
/// sub-interface, nor for interfaces outside the fast path.
#[inline(always)]
pub fn fast_path(pkt: &Packet, out_ifindex: u32) -> bool {
    // SAFETY: presence test only.
    pkt.l3 == ETH_HLEN && unsafe { FAST_PATH_IFACES.get(&out_ifindex) }.is_some()
}

/// Sends a packet `fast_path` allows out of `out_ifindex` (XDP_REDIRECT),
/// or returns XDP_PASS to leave it to the kernel.
#[inline(always)]
pub fn forward(ctx: &XdpContext, out_ifindex: u32, hop: &NextHop) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    // TTL and header checksum at fixed offsets: one 12-byte window covers
    // bytes 0..12 of the IP header (TTL at 8, checksum at 10..12).
    let Some(mut ip) = load::<[u8; 12]>(start, end, ETH_HLEN) else {
        return xdp_action::XDP_PASS;
    };
    // RFC 1624 incremental update: TTL is the high byte of a 16-bit word.
    let old = u16::from_be_bytes([ip[8], ip[9]]);
    ip[8] = ip[8].wrapping_sub(1);
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
        core::ptr::write_unaligned(start as *mut [u8; 6], hop.dst_mac);
        core::ptr::write_unaligned((start + 6) as *mut [u8; 6], hop.src_mac);
    }
    bump(stats::FAST_PATH);
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(out_ifindex, 0) as u32 }
}
