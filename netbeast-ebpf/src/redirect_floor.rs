//! The forwarding benchmarks' floor (DESIGN §8): a bare XDP program that
//! sends every frame out of the router's other interface, writing only the
//! MAC addresses a forwarder must write. What XDP forwarding can do at most
//! on the topology; netbeast's fast path is measured against it.

use aya_ebpf::{
    bindings::xdp_action, helpers::generated::bpf_redirect, macros::map, maps::Array,
    programs::XdpContext,
};
use netbeast_common::redirect_floor::{CONFIG_BYTES, DST_MAC, IFINDEX, SRC_MAC};

/// Where to send frames: `netbeast_common::redirect_floor` layout, written
/// by `netbeast bench` (one loaded copy of the object per attachment).
#[map]
static REDIRECT_FLOOR: Array<[u8; CONFIG_BYTES]> = Array::with_max_entries(1, 0);

#[inline(always)]
pub fn redirect(ctx: &XdpContext) -> u32 {
    let Some(config) = REDIRECT_FLOOR.get(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 12 > end {
        return xdp_action::XDP_DROP;
    }
    let mut ifindex = [0u8; 4];
    ifindex.copy_from_slice(&config[IFINDEX..IFINDEX + 4]);
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&config[DST_MAC..DST_MAC + 6]);
    macs[6..].copy_from_slice(&config[SRC_MAC..SRC_MAC + 6]);
    // SAFETY: the 12 bytes at `start` are inside the frame (checked above).
    unsafe { core::ptr::write_unaligned(start as *mut [u8; 12], macs) };
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(u32::from_le_bytes(ifindex), 0) as u32 }
}
