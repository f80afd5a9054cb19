//! The ways a finished frame leaves: `XDP_TX` or `XDP_REDIRECT` where the
//! interface takes them, else a hand-off to netbeast's TC ingress program.
//!
//! A native XDP program on a veth sends `XDP_TX` and `XDP_REDIRECT` frames
//! straight to the other end's NAPI queue, which exists only when that end
//! runs XDP itself: into a container's bare veth they are lost. So the XDP
//! program builds the frame as usual (a REJECT reply, a forwarded frame with
//! its MACs and TTL rewritten), writes "send me out of ifindex N" in the
//! frame's metadata and passes it up; the TC ingress program of the same
//! interface, the first thing to see it as an skb, sends it there with
//! `bpf_redirect` — the ordinary transmit path, which every device takes.

use aya_ebpf::{
    bindings::{TC_ACT_OK, xdp_action},
    helpers::generated::{bpf_redirect, bpf_xdp_adjust_meta},
    macros::map,
    maps::HashMap,
    programs::{TcContext, XdpContext},
};
use netbeast_common::{handoff, iface_path, size};

/// ifindex → `iface_path` bits, written by userspace for the interfaces
/// netbeast is attached to.
#[map]
static IFACE_PATHS: HashMap<u32, u32> = HashMap::with_max_entries(size::IFACES, 0);

/// The `iface_path` bits of `ifindex` (0 when it has none).
#[inline(always)]
pub fn paths(ifindex: u32) -> u32 {
    // SAFETY: copied out at once.
    unsafe { IFACE_PATHS.get(&ifindex) }.copied().unwrap_or(0)
}

/// Marks the frame for the TC ingress program to send out of `ifindex`.
/// Must run before the frame is rewritten: false (nothing changed) when
/// the driver keeps no metadata, and the caller takes its other way.
/// Invalidates every packet pointer taken before it.
#[inline(always)]
pub fn mark(ctx: &XdpContext, ifindex: u32) -> bool {
    write_meta(ctx, handoff::MAGIC, ifindex)
}

/// Writes `magic` and `word` in front of the frame (its metadata); false
/// when the driver keeps none.
#[inline(always)]
fn write_meta(ctx: &XdpContext, magic: u32, word: u32) -> bool {
    // SAFETY: plain helper call on our context.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -(handoff::LEN as i32)) } != 0 {
        return false;
    }
    let (meta, data) = (ctx.metadata(), ctx.data());
    if meta + handoff::LEN > data {
        return false;
    }
    // SAFETY: the 8 metadata bytes lie below `data` (checked just above).
    unsafe {
        core::ptr::write_unaligned(meta as *mut u32, magic);
        core::ptr::write_unaligned((meta + 4) as *mut u32, word);
    }
    true
}

/// XDP_PASS for a frame the kernel takes on from here (local delivery, or
/// its forwarding), carrying the packet mark `mark` the chains gave it to
/// the TC ingress program of `in_ifindex`, which makes it the skb's mark
/// (`handoff::MARK_MAGIC`): what iptables' `-j MARK` does for the stack
/// after it (policy routing by fwmark, a listener's `tcp_fwmark_accept`).
/// Nothing is written for mark 0, or where no TC ingress program runs.
/// Out of line: a call from the entry's shallow frame, off the
/// classifier's chain.
#[inline(never)]
pub fn pass(ctx: &XdpContext, in_ifindex: u32, mark: u32) -> u32 {
    if mark != 0 && paths(in_ifindex) & iface_path::TC_INGRESS != 0 {
        let _ = write_meta(ctx, handoff::MARK_MAGIC, mark);
    }
    xdp_action::XDP_PASS
}

/// The action that sends the REJECT reply `reject` built (`action`, an
/// `XDP_TX` when there is one) back out of `in_ifindex`.
#[inline(always)]
pub fn reply(ctx: &XdpContext, action: u32, in_ifindex: u32) -> u32 {
    const WANTED: u32 = iface_path::REJECT_VIA_TC | iface_path::TC_INGRESS;
    if action == xdp_action::XDP_TX && paths(in_ifindex) & WANTED == WANTED && mark(ctx, in_ifindex)
    {
        return xdp_action::XDP_PASS;
    }
    action
}

/// TC ingress: sends a frame the XDP program handed off out of the
/// interface it names, gives a frame passed up with a mark that mark;
/// every other frame goes on untouched.
#[inline(always)]
pub fn ingress(ctx: &TcContext) -> i32 {
    // SAFETY: the context's skb pointer is valid for the program run.
    let (meta, data) = unsafe { ((*ctx.skb.skb).data_meta as usize, ctx.data()) };
    if meta + handoff::LEN > data {
        return TC_ACT_OK;
    }
    // SAFETY: the 8 metadata bytes lie below `data` (checked just above).
    let (magic, ifindex) = unsafe {
        (
            core::ptr::read_unaligned(meta as *const u32),
            core::ptr::read_unaligned((meta + 4) as *const u32),
        )
    };
    if magic != handoff::MAGIC && magic != handoff::MARK_MAGIC {
        return TC_ACT_OK;
    }
    // Metadata can travel with the skb (into the next namespace over a
    // veth): never act on the same mark twice.
    // SAFETY: as above.
    unsafe { core::ptr::write_unaligned(meta as *mut u32, 0) };
    if magic == handoff::MARK_MAGIC {
        // SAFETY: TC programs may write skb->mark.
        unsafe { (*ctx.skb.skb).mark = ifindex };
        return TC_ACT_OK;
    }
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(ifindex, 0) as i32 }
}
