//! `-j LOG`'s side effect: one event per LOG rule a packet met, with what
//! the kernel's LOG line needs (the rule's options, the interfaces, the
//! frame's first `LOG_CAPTURE_BYTES`, the socket's owner), put into a ring
//! buffer for userspace to format (`netbeast log`, the daemon). The
//! classifier records the LOG rules it meets (`SearchState::log_args`);
//! the pipeline calls [`emit_xdp`] or [`emit_tc`] once the chain is
//! decided, before anything rewrites the frame. Never waits: a full
//! buffer loses the event (`stats::LOG_LOST`), never the packet.

use aya_ebpf::{
    bindings::{__sk_buff, xdp_md},
    helpers::generated::{
        bpf_get_socket_uid, bpf_ktime_get_boot_ns, bpf_sk_fullsock, bpf_skb_load_bytes,
        bpf_xdp_load_bytes,
    },
    macros::map,
    maps::{Array, RingBuf},
    programs::{TcContext, XdpContext},
};
use netbeast_common::{
    LOG_CAPTURE_BYTES, LOG_EVENT_HAS_UID, LOG_RING_BYTES, LOG_SHORT_CAPTURE_BYTES,
    LOG_SHORT_EVENT_BYTES, LogEvent, LogTarget, MAX_LOGS_PER_SEARCH, log_flags, log_target_index,
    size, stats,
};

const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
const IPPROTO_UDPLITE: u32 = 136;

use crate::{classify::SearchState, stats::bump};

/// The options of every LOG rule of both generations (written by the
/// loader with the rest of a ruleset).
#[map]
static LOG_TARGETS: Array<LogTarget> = Array::with_max_entries(size::LOG_TARGETS, 0);

/// The events, for `netbeast log` and the daemon.
#[map]
static LOG_EVENTS: RingBuf = RingBuf::with_byte_size(LOG_RING_BYTES, 0);

/// Where the packet was when it met the rules: the chain and its
/// interfaces, and the frame's length and IPv4 offset.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Where {
    pub generation: u32,
    pub chain: u32,
    pub in_ifindex: u32,
    pub out_ifindex: u32,
    pub frame_len: u32,
    pub l3_offset: u32,
    /// Where the L4 header starts, and the IPv4 protocol: what decides how
    /// much of the frame the line reads. (Four u32s with the two above, so
    /// that the struct stays 32 bytes on the callers' stacks, which are at
    /// the verifier's limit.)
    pub l4_offset: u32,
    pub protocol: u32,
}

/// Reserves an event of type `R` (a `LogEvent`, or a [`ShortEvent`]: the
/// fields before the frame, then room for the frame's first bytes) and fills everything but the frame;
/// `None` (counted as lost) when the buffer is full or the rule is gone.
#[inline(always)]
fn start<R: 'static>(at: &Where, target: &LogTarget) -> Option<*mut LogEvent> {
    let Some(mut entry) = LOG_EVENTS.reserve::<R>(0) else {
        bump(stats::LOG_LOST);
        return None;
    };
    let ev = entry.as_mut_ptr().cast::<LogEvent>();
    core::mem::forget(entry);
    // SAFETY: `ev` is the reserved entry, `size_of::<R>()` bytes, which hold every
    // field before `frame`; written field by field before it is submitted.
    unsafe {
        (*ev).boot_ns = bpf_ktime_get_boot_ns();
        // Word by word: a struct assignment becomes a byte loop the
        // verifier walks forty times.
        let from = (target as *const LogTarget).cast::<u64>();
        let to = core::ptr::addr_of_mut!((*ev).target).cast::<u64>();
        for w in 0..size_of::<LogTarget>() / 8 {
            core::ptr::write_volatile(to.add(w), core::ptr::read_volatile(from.add(w)));
        }
        (*ev).chain = at.chain;
        (*ev).in_ifindex = at.in_ifindex;
        (*ev).out_ifindex = at.out_ifindex;
        (*ev).frame_len = at.frame_len;
        (*ev).l3_offset = at.l3_offset;
        // Volatile: adjacent zero stores become a `memset` call, a byte
        // loop (`mem`).
        core::ptr::write_volatile(&mut (*ev).captured, 0);
        core::ptr::write_volatile(&mut (*ev).uid, 0);
        core::ptr::write_volatile(&mut (*ev).gid, 0);
        core::ptr::write_volatile(&mut (*ev).event_flags, 0);
        core::ptr::write_volatile(&mut (*ev)._pad, 0);
    }
    Some(ev)
}

/// A `LogEvent` cut after `LOG_SHORT_CAPTURE_BYTES` of frame: what a
/// TCP or UDP packet's line needs, in less of the ring (fewer cache lines
/// to write and to read).
#[repr(C, align(8))]
struct ShortEvent([u8; LOG_SHORT_EVENT_BYTES]);

/// The rule's options, or `None` (counted as lost) when the rule is gone.
#[inline(always)]
fn target_of(at: &Where, arg: u32) -> Option<&'static LogTarget> {
    let target = LOG_TARGETS.get(log_target_index(at.generation & 1, arg));
    if target.is_none() {
        bump(stats::LOG_LOST);
    }
    target
}

/// Bytes of the frame the rule's line reads, when they fit a short event:
/// through the TCP header (its options only with `--log-tcp-options`) or
/// the UDP header. Any other packet (ICMP quotes a packet, other
/// protocols' headers vary) takes a whole capture: `None`.
#[inline(always)]
fn short_capture(at: &Where, target: &LogTarget) -> Option<u32> {
    let l4 = match at.protocol {
        IPPROTO_TCP if target.flags & log_flags::TCP_OPTIONS == 0 => 20,
        IPPROTO_UDP | IPPROTO_UDPLITE => 8,
        _ => return None,
    };
    let need = at.l4_offset + l4;
    if need > LOG_SHORT_CAPTURE_BYTES as u32 {
        return None;
    }
    let len = if at.frame_len < need {
        at.frame_len
    } else {
        need
    };
    // 1..=LOG_SHORT_CAPTURE_BYTES (a power of two) as the verifier can
    // follow it: a clamp compiles to tests whose bounds it loses. `len` is
    // never 0 (the frame holds at least the headers parsed).
    const _: () = assert!(LOG_SHORT_CAPTURE_BYTES.is_power_of_two());
    Some((len.wrapping_sub(1) & (LOG_SHORT_CAPTURE_BYTES as u32 - 1)) + 1)
}

/// Bytes of the frame to copy: at most `LOG_CAPTURE_BYTES`, at least one
/// (the copy helpers refuse zero), bounded for the verifier.
#[inline(always)]
fn capture_len(frame_len: usize) -> u32 {
    let len = if frame_len > LOG_CAPTURE_BYTES {
        LOG_CAPTURE_BYTES
    } else {
        frame_len
    };
    (len as u32).clamp(1, LOG_CAPTURE_BYTES as u32)
}

/// Reserves the event for rule `arg`, short when the line needs few bytes
/// of the frame: the event and the bytes to copy into its frame.
#[inline(always)]
fn reserve(at: &Where, arg: u32) -> Option<(*mut LogEvent, u32)> {
    let target = target_of(at, arg)?;
    match short_capture(at, target) {
        Some(len) => Some((start::<ShortEvent>(at, target)?, len)),
        None => Some((
            start::<LogEvent>(at, target)?,
            capture_len(at.frame_len as usize),
        )),
    }
}

#[inline(always)]
fn submit(ev: *mut LogEvent) {
    // SAFETY: `ev` came from `bpf_ringbuf_reserve` and is submitted once.
    unsafe { aya_ebpf::helpers::generated::bpf_ringbuf_submit(ev.cast(), 0) };
    bump(stats::LOG_EVENTS);
}

/// Emits the events of the LOG rules `st` recorded, for an XDP frame.
#[inline(always)]
pub fn emit_xdp(ctx: &XdpContext, st: &SearchState, at: &Where) {
    netbeast_log_xdp(ctx.ctx, st, at);
}

/// [`emit_xdp`] as a BPF global function: the verifier checks it once, on
/// its own, rather than at every place a chain may have logged and for
/// every state the pipeline reaches it in (which took the program past the
/// verifier's budget). `ctx` is the program's own context (its BTF type
/// is `xdp_md`, which the verifier recognizes).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_log_xdp(
    ctx: *mut xdp_md,
    st: *const SearchState,
    at: *const Where,
) -> u32 {
    if ctx.is_null() || st.is_null() || at.is_null() {
        return 0;
    }
    // SAFETY: non-null pointers to whole values, checked by the verifier
    // at every call.
    let (st, at) = unsafe { (&*st, &*at) };
    for i in 0..MAX_LOGS_PER_SEARCH {
        if i as u32 >= st.log_count {
            break;
        }
        let Some((ev, len)) = reserve(at, st.log_args[i]) else {
            continue;
        };
        // SAFETY: the reservation holds `len` bytes of `frame`.
        let copied = unsafe { bpf_xdp_load_bytes(ctx, 0, (*ev).frame.as_mut_ptr().cast(), len) };
        // SAFETY: as in `start`.
        unsafe { (*ev).captured = if copied == 0 { len } else { 0 } };
        submit(ev);
    }
    0
}

/// Emits the events of the LOG rules `st` recorded, for a TC packet; with
/// `--log-uid`, the owner of the sending socket when there is one.
#[inline(always)]
pub fn emit_tc(ctx: &TcContext, st: &SearchState, at: &Where) {
    netbeast_log_tc(ctx.skb.skb, st, at);
}

/// [`emit_tc`] as a BPF global function (see [`netbeast_log_xdp`]).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_log_tc(
    skb: *mut __sk_buff,
    st: *const SearchState,
    at: *const Where,
) -> u32 {
    if skb.is_null() || st.is_null() || at.is_null() {
        return 0;
    }
    // SAFETY: as in `netbeast_log_xdp`.
    let (st, at) = unsafe { (&*st, &*at) };
    for i in 0..MAX_LOGS_PER_SEARCH {
        if i as u32 >= st.log_count {
            break;
        }
        let Some((ev, len)) = reserve(at, st.log_args[i]) else {
            continue;
        };
        // SAFETY: the reservation holds `len` bytes of `frame`; `skb` is
        // the program's context.
        unsafe {
            let copied = bpf_skb_load_bytes(skb.cast(), 0, (*ev).frame.as_mut_ptr().cast(), len);
            (*ev).captured = if copied == 0 { len } else { 0 };
            if (*ev).target.flags & log_flags::UID != 0 {
                let sk = (*skb).__bindgen_anon_2.sk;
                if !sk.is_null() && !bpf_sk_fullsock(sk).is_null() {
                    let uid = bpf_get_socket_uid(skb);
                    (*ev).uid = uid;
                    (*ev).gid = socket_gid(uid);
                    (*ev).event_flags = LOG_EVENT_HAS_UID;
                }
            }
        }
        submit(ev);
    }
    0
}

/// The group of the sending socket's owner. A TC program has no helper
/// for the socket file's credentials, which the kernel's LOG prints; the
/// sending task's are the same ones whenever the owner sends (what
/// `--log-uid` is for: which local user talks), and are taken then.
/// Otherwise (a timer retransmits, another user's task) the gid is
/// unknown: `u32::MAX`, which the formatter prints as the kernel prints
/// an unmapped id (65534, the overflow gid).
#[inline(always)]
fn socket_gid(uid: u32) -> u32 {
    // SAFETY: plain helper call.
    let ids = unsafe { aya_ebpf::helpers::generated::bpf_get_current_uid_gid() };
    if ids as u32 == uid {
        (ids >> 32) as u32
    } else {
        u32::MAX
    }
}
