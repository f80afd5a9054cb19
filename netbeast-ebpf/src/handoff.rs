//! The ways a finished frame leaves: `XDP_TX` or `XDP_REDIRECT` where the
//! interface takes them, else a hand-off to netbeast's TC ingress program.
//!
//! A native XDP program on a veth sends `XDP_TX` and `XDP_REDIRECT` frames
//! straight to the other end's NAPI queue, which exists only when that end
//! runs XDP itself: into a container's bare veth they are lost. So the XDP
//! program builds the frame as usual (a REJECT reply, a forwarded frame with
//! its MACs and TTL rewritten), tags it "send me out of ifindex N" and
//! passes it up; the TC ingress program of the same interface, the first
//! thing to see it as an skb, sends it there with `bpf_redirect` — the
//! ordinary transmit path, which every device takes.
//!
//! The tag is the frame's source MAC (`handoff::TAG_PREFIX`, the CPU, a
//! slot of this CPU's `HANDOFF_RING` and the slot's sequence); the slot
//! holds the order and the real source MAC, which the TC program writes
//! back before it acts. Frames with tags never merge in GRO (their MAC
//! headers differ), and XDP metadata is not needed: some kernels refuse
//! `bpf_xdp_adjust_meta` to XDP programs.
//!
//! A frame from the wire may carry a source MAC that starts with the tag's
//! prefix (a locally administered MAC may): passed up as it came, the TC
//! program would read it as a tag. So every XDP program's `XDP_PASS` goes
//! through [`leave`], which gives such a frame a tag of its own whose
//! order only writes its MAC back (`handoff::RESTORE_MAGIC`), unless this
//! run already tagged it.

use aya_ebpf::{
    bindings::{TC_ACT_OK, xdp_action},
    helpers::generated::{
        bpf_get_smp_processor_id, bpf_map_lookup_percpu_elem, bpf_redirect, bpf_skb_store_bytes,
    },
    macros::map,
    maps::{HashMap, PerCpuArray},
    programs::{TcContext, XdpContext},
};
use netbeast_common::{MAP_NO_PREALLOC, handoff, iface_path, size, stats};

use crate::stats::bump;

/// ifindex → `iface_path` bits, written by userspace for the interfaces
/// netbeast is attached to.
#[map]
static IFACE_PATHS: HashMap<u32, u32> = HashMap::with_max_entries(size::IFACES, MAP_NO_PREALLOC);

/// A handed-off frame's order: `magic` (`handoff::MAGIC` or
/// `MARK_MAGIC`; 0 once read) and its word, the source MAC the tag
/// replaced, and the sequence the tag carries.
#[repr(C)]
pub struct Slot {
    magic: u32,
    word: u32,
    mac: [u8; 6],
    tag: u16,
}

/// Per CPU, `handoff::RING` slots used in turn, and after them one whose
/// `word` counts the slots used (the next one's sequence) and whose
/// `magic` is `handoff::RESTORE_MAGIC` from the arrival of a frame whose
/// source MAC looks like a tag ([`arrive`]) until the next slot is used
/// (0 then): at that frame's `XDP_PASS`, it says that no order was filed
/// for it.
#[map]
static HANDOFF_RING: PerCpuArray<Slot> = PerCpuArray::with_max_entries(handoff::RING + 1, 0);

/// The `iface_path` bits of `ifindex` (0 when it has none).
#[inline(always)]
pub fn paths(ifindex: u32) -> u32 {
    // SAFETY: copied out at once.
    unsafe { IFACE_PATHS.get(&ifindex) }.copied().unwrap_or(0)
}

/// Files the order `magic`/`word` in this CPU's next slot with the real
/// source MAC `mac`, and returns the tag to write in its place; None (the
/// caller takes its other way) on a CPU past `handoff::MAX_CPUS`.
#[inline(always)]
pub fn stash(magic: u32, word: u32, mac: [u8; 6]) -> Option<[u8; 6]> {
    // SAFETY: plain helper call.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    if cpu >= handoff::MAX_CPUS {
        return None;
    }
    let counter = HANDOFF_RING.get_ptr_mut(handoff::RING)?;
    // SAFETY: per-CPU slots, written by this CPU's program runs only
    // (the TC program clears a slot's magic, nothing else).
    let seq = unsafe { core::ptr::read_volatile(&(*counter).word) };
    unsafe {
        core::ptr::write_volatile(&mut (*counter).word, seq.wrapping_add(1));
        core::ptr::write_volatile(&mut (*counter).magic, 0);
    }
    let index = seq % handoff::RING;
    let tag = (seq / handoff::RING) as u16;
    let slot = HANDOFF_RING.get_ptr_mut(index)?;
    // SAFETY: as above.
    unsafe {
        core::ptr::write_volatile(&mut (*slot).word, word);
        core::ptr::write_volatile(&mut (*slot).tag, tag);
        crate::mem::write_bytes((*slot).mac.as_mut_ptr(), mac);
        core::ptr::write_volatile(&mut (*slot).magic, magic);
    }
    let [p0, p1] = handoff::TAG_PREFIX;
    let [t0, t1] = tag.to_be_bytes();
    Some([p0, p1, cpu as u8, index as u8, t0, t1])
}

/// Tags the finished frame with the order `magic`/`word`; false (nothing
/// changed) when it cannot be, and the caller takes its other way.
#[inline(always)]
fn tag_frame(ctx: &XdpContext, magic: u32, word: u32) -> bool {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 12 > end {
        return false;
    }
    // SAFETY: bytes 6..12 are inside the packet (checked just above).
    let mac = unsafe { core::ptr::read_unaligned((start + 6) as *const [u8; 6]) };
    let Some(tag) = stash(magic, word, mac) else {
        return false;
    };
    // SAFETY: as above.
    unsafe { crate::mem::write_bytes((start + 6) as *mut u8, tag) };
    true
}

/// True when the frame's source MAC starts with the tag's prefix.
#[inline(always)]
fn looks_tagged(start: usize, end: usize) -> bool {
    if start + 8 > end {
        return false;
    }
    // SAFETY: bytes 6..8 are inside the packet (checked just above).
    let prefix = unsafe { core::ptr::read_unaligned((start + 6) as *const [u8; 2]) };
    prefix == handoff::TAG_PREFIX
}

/// At the entry of `netbeast_xdp` (the program attached to the
/// interface): a frame whose source MAC looks like a tag is noted in the
/// ring's counter slot, for [`leave`]. Other frames pay two bytes read.
#[inline(always)]
pub fn arrive(ctx: &XdpContext) {
    if looks_tagged(ctx.data(), ctx.data_end()) {
        netbeast_lookalike_arrived();
    }
}

/// [`arrive`]'s note. Out of line, as a global function: the map key
/// then lives in this frame, not in the entry's, whose call chains use
/// all of the 512 bytes of stack.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_lookalike_arrived() -> u32 {
    if let Some(counter) = HANDOFF_RING.get_ptr_mut(handoff::RING) {
        // SAFETY: this CPU's counter slot (see `stash`).
        unsafe { core::ptr::write_volatile(&mut (*counter).magic, handoff::RESTORE_MAGIC) };
    }
    0
}

/// The end of every XDP program that sees frames from the wire: returns
/// `action`, after giving an `XDP_PASS` frame whose source MAC looks like
/// a tag, and that this run filed no order for, a tag whose order only
/// writes that MAC back (`netbeast_lookalike`). Other frames pay one
/// comparison.
#[inline(always)]
pub fn leave(ctx: &XdpContext, action: u32) -> u32 {
    netbeast_lookalike(ctx.ctx, action)
}

/// [`leave`] itself, returning `action`. A BPF global function, verified
/// once (inlined, the verifier walked it again for every state the
/// pipeline ends in), called last: the entry keeps nothing across it.
/// Writes only the frame's bytes (no helper that moves the packet).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_lookalike(ctx: *mut aya_ebpf::bindings::xdp_md, action: u32) -> u32 {
    if action != xdp_action::XDP_PASS || ctx.is_null() {
        return action;
    }
    let ctx = XdpContext::new(ctx);
    if !looks_tagged(ctx.data(), ctx.data_end()) {
        return action;
    }
    let Some(counter) = HANDOFF_RING.get_ptr_mut(handoff::RING) else {
        return action;
    };
    // A slot used since the frame arrived is this run's order, whose tag
    // the frame carries now (`stash` clears the note; a frame whose MAC
    // did not look like a tag on arrival has one now only from `stash`).
    // SAFETY: this CPU's counter slot (see `stash`).
    if unsafe { core::ptr::read_volatile(&(*counter).magic) } != handoff::RESTORE_MAGIC {
        return action;
    }
    // Without a TC ingress program nothing reads tags: the frame goes up
    // as it came.
    if paths(ctx.ingress_ifindex() as u32) & iface_path::TC_INGRESS == 0 {
        return action;
    }
    if tag_frame(&ctx, handoff::RESTORE_MAGIC, 0) {
        bump(stats::TAG_LOOKALIKE);
    }
    action
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
        let _ = tag_frame(ctx, handoff::MARK_MAGIC, mark);
    }
    xdp_action::XDP_PASS
}

/// The action that sends the REJECT reply `reject` built (`action`, an
/// `XDP_TX` when there is one) back out of `in_ifindex`.
#[inline(always)]
pub fn reply(ctx: &XdpContext, action: u32, in_ifindex: u32) -> u32 {
    const WANTED: u32 = iface_path::REJECT_VIA_TC | iface_path::TC_INGRESS;
    if action == xdp_action::XDP_TX
        && paths(in_ifindex) & WANTED == WANTED
        && tag_frame(ctx, handoff::MAGIC, in_ifindex)
    {
        return xdp_action::XDP_PASS;
    }
    action
}

/// TC ingress: sends a frame the XDP program handed off out of the
/// interface its slot names, gives a frame passed up with a mark that
/// mark, after writing back its source MAC (only that for a frame whose
/// own MAC looked like a tag); every other frame goes on untouched.
#[inline(always)]
pub fn ingress(ctx: &TcContext) -> i32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 12 > end {
        return TC_ACT_OK;
    }
    // SAFETY: bytes 6..12 are inside the packet (checked just above).
    let m = unsafe { core::ptr::read_unaligned((start + 6) as *const [u8; 6]) };
    if [m[0], m[1]] != handoff::TAG_PREFIX {
        return TC_ACT_OK;
    }
    let (cpu, index, tag) = (m[2] as u32, m[3] as u32, u16::from_be_bytes([m[4], m[5]]));
    // The slot of the CPU that tagged the frame (the same one, unless
    // receive packet steering moved the skb).
    // SAFETY: the map is a per-CPU array of `Slot`s; the key lives on the
    // stack for the call; a CPU out of range gives null.
    let slot = unsafe {
        bpf_map_lookup_percpu_elem(
            &HANDOFF_RING as *const PerCpuArray<Slot> as *mut core::ffi::c_void,
            &index as *const u32 as *const core::ffi::c_void,
            cpu,
        )
    } as *mut Slot;
    if slot.is_null() {
        return TC_ACT_OK;
    }
    // SAFETY: a valid slot (non-null lookup).
    let (magic, word, mac, slot_tag) = unsafe {
        (
            core::ptr::read_volatile(&(*slot).magic),
            core::ptr::read_volatile(&(*slot).word),
            core::ptr::read_volatile(&(*slot).mac),
            core::ptr::read_volatile(&(*slot).tag),
        )
    };
    if slot_tag != tag
        || magic != handoff::MAGIC
            && magic != handoff::MARK_MAGIC
            && magic != handoff::RESTORE_MAGIC
    {
        return TC_ACT_OK;
    }
    // Read once: the slot never acts on a second frame.
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(&mut (*slot).magic, 0) };
    // SAFETY: the skb is this program's; 6 bytes from the stack.
    let stored = unsafe {
        bpf_skb_store_bytes(
            ctx.skb.skb,
            6,
            mac.as_ptr() as *const core::ffi::c_void,
            6,
            0,
        )
    };
    if stored != 0 || magic == handoff::RESTORE_MAGIC {
        return TC_ACT_OK;
    }
    if magic == handoff::MARK_MAGIC {
        // SAFETY: TC programs may write skb->mark.
        unsafe { (*ctx.skb.skb).mark = word };
        return TC_ACT_OK;
    }
    // SAFETY: plain helper call.
    unsafe { bpf_redirect(word, 0) as i32 }
}
