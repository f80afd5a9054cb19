//! The SYN-flood shield (`-j SYNPROXY`, `attach --syn-flood-guard`): a SYN
//! is answered here with a SYN cookie and never reaches the kernel, so a
//! flood of spoofed SYNs cannot fill a listener's SYN queue; the client's
//! ACK, if its cookie is valid, goes on to the local listener, which takes
//! it through its own cookie check and opens the connection with the
//! options the cookie carries (docs/ARCHITECTURE.md "The SYN-flood
//! shield").
//!
//! The cookie is the kernel's own (`bpf_tcp_raw_gen_syncookie_ipv4`: the
//! same secret and encoding as the listener's `cookie_v4_check`); window
//! scale, SACK and ECN ride in the low bits of the timestamp value, as the
//! kernel's own cookies carry them. The listener only looks at cookies
//! after it sent some itself (`tcp_synq_no_recent_overflow`), so before
//! passing a valid ACK on, the shield marks the listener as flooded with
//! `bpf_tcp_gen_syncookie` — the one helper that does, and only when the
//! namespace's `net.ipv4.tcp_syncookies` is 2, which netbeast sets.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{bpf_sock_tuple, iphdr, tcphdr, xdp_action, xdp_md},
    helpers::generated::{
        bpf_ktime_get_coarse_ns, bpf_loop, bpf_sk_release, bpf_skc_lookup_tcp,
        bpf_tcp_gen_syncookie, bpf_tcp_raw_check_syncookie_ipv4, bpf_tcp_raw_gen_syncookie_ipv4,
        bpf_xdp_load_bytes, bpf_xdp_store_bytes,
    },
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, ProgramArray},
    programs::XdpContext,
};
use netbeast_common::{
    CtKey, MAP_NO_PREALLOC, PROXIED_CONNECTIONS, ct_flags, ct_state, size, stats, synproxy,
};

use crate::{
    conntrack,
    csum::{fold, partial},
    handoff,
    parse::{IPPROTO_TCP, Packet, current_packet, load, store},
    reject::{MAX_L2, set_len, write_ipv4, write_l2},
    stats::bump,
};

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
const TCP_ECE: u8 = 0x40;
const TCP_CWR: u8 = 0x80;
const IP_HLEN: usize = 20;
/// The SYN-ACK's TCP header: 20 bytes and 20 of options (MSS, SACK
/// permitted, timestamps, window scale; NOPs for those not offered), one
/// fixed layout so the frame has one length.
const SYNACK_TCP_LEN: usize = 40;
/// The window the SYN-ACK advertises (never scaled in a SYN): the most a
/// SYN can say, as the kernel's own cookie SYN-ACKs do with its default
/// buffers. The listener's real window follows in its first segments.
const SYNACK_WINDOW: u16 = 65535;
/// Low bits of the timestamp value that carry the options (the kernel's
/// `TSBITS`, `TS_OPT_*`): the client's window shift (15: none), SACK, ECN.
const TS_OPT_BITS: u32 = 6;
const TS_OPT_WSCALE_NONE: u32 = 0xf;
const TS_OPT_SACK: u32 = 1 << 4;
const TS_OPT_ECN: u32 = 1 << 5;
/// TCP option kinds.
const OPT_EOL: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
const OPT_WSCALE: u8 = 3;
const OPT_SACK_PERM: u8 = 4;
const OPT_TIMESTAMP: u8 = 8;
/// Option bytes a TCP header can hold.
const MAX_OPTION_BYTES: usize = 40;

/// Ports `attach --syn-flood-guard` protects → their `synproxy::*`
/// options.
#[map]
static SYN_GUARD_PORTS: HashMap<u16, u32> =
    HashMap::with_max_entries(size::SYN_GUARD_PORTS, MAP_NO_PREALLOC);

/// Copies of the headers the helpers read (they take memory the verifier
/// can bound; the frame's TCP header has a variable length), kept off the
/// 512-byte stack.
#[repr(C)]
struct Scratch {
    ip: [u8; IP_HLEN],
    tcp: [u8; 64],
    /// The ACK's header turned into a SYN, for `bpf_tcp_gen_syncookie`.
    syn: [u8; 20],
    /// A TCP header being built (FORWARD), written into the frame from
    /// here: on the stack it would take the global functions' frames past
    /// the 512 bytes the call chain may use.
    out: [u8; 64],
}

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// What a client's SYN offered (or, for an ACK or a SYN-ACK, the
/// timestamps it carries).
struct Offer {
    seq: u32,
    /// The timestamp echo (meaningful when `tsval` is some).
    tsecr: u32,
    /// Its window shift (capped at 14, as the kernel caps it), if any.
    wscale: Option<u32>,
    sack: bool,
    tsval: Option<u32>,
    ecn: bool,
}

/// What the shield does with the packet.
enum Outcome {
    /// Send or drop now: the SYN-ACK went out (or could not be built).
    Done(u32),
    /// A valid cookie: the packet goes on, its connection recorded.
    Pass,
    /// Not the shield's: no valid cookie on an ACK of no connection, or
    /// a segment it has nothing to say about.
    NotMine,
}

/// The shield's program in `SHIELD` (the XDP program tail-calls it, so
/// the verifier checks it on its own, not inside the main program's
/// million-instruction budget), and the main program, for the shield to
/// hand a packet back to the rules.
#[map]
static SHIELD: ProgramArray = ProgramArray::with_max_entries(3, 0);
const SHIELD_PROGRAM: u32 = 0;
const MAIN_PROGRAM: u32 = 1;
/// The FORWARD half (`netbeast_synfwd`): the replay of a valid client's
/// ACK to the server and the translation of its connection. A program of
/// its own: its stack and verifier budget are its own too (inside the
/// shield's, the two went past the 512 bytes a call chain may use).
const FORWARD_PROGRAM: u32 = 2;

/// Why the shield was called.
const MODE_RULE: u32 = 1;
const MODE_GUARD: u32 = 2;
/// `-j SYNPROXY` in FORWARD: a server behind the router.
const MODE_FORWARD: u32 = 3;
/// A packet of a connection replayed to a server behind the router
/// (`ct_flags::PROXIED`): translated, or (the server's SYN-ACK) turned
/// into the packet that opens the client's window.
const MODE_TRANSLATE: u32 = 4;

/// What the main program tells the shield (per CPU: a tail call stays on
/// its CPU, within one program run).
#[repr(C)]
struct ShieldCall {
    mode: u32,
    /// `synproxy::*` options.
    options: u32,
    in_ifindex: u32,
    tracking: u32,
    /// Set by the shield before it hands a packet back to the main
    /// program, which then takes it to the rules without calling the
    /// shield again.
    judged: u32,
}

#[map]
static SHIELD_CALLS: PerCpuArray<ShieldCall> = PerCpuArray::with_max_entries(1, 0);

/// `-j SYNPROXY` in INPUT: the shield takes the packet and gives the
/// verdict (a tail call: returns only if the shield is not loaded, and
/// the packet is then dropped, as xt_SYNPROXY drops what it cannot use).
#[inline(always)]
pub fn enter_rule(
    ctx: &XdpContext,
    options: u32,
    in_ifindex: u32,
    tracking: bool,
    forward: bool,
) -> u32 {
    let mode = if forward { MODE_FORWARD } else { MODE_RULE };
    enter(ctx, mode, options, in_ifindex, tracking);
    bump(stats::SYNPROXY_DROPPED);
    xdp_action::XDP_DROP
}

/// A packet of a connection the shield replayed to a server behind the
/// router, accepted by FORWARD: the shield translates it and the kernel
/// forwards it (a tail call: returns only if the shield is not loaded,
/// and the packet, which the server could not make sense of, is dropped).
#[inline(always)]
pub fn enter_translate(ctx: &XdpContext, in_ifindex: u32) -> u32 {
    enter(ctx, MODE_TRANSLATE, 0, in_ifindex, true);
    bump(stats::SYNPROXY_DROPPED);
    xdp_action::XDP_DROP
}

/// True while `attach --syn-flood-guard` protects a port.
#[inline(always)]
pub fn guarding() -> bool {
    // SAFETY: the map's one value, valid for the run.
    crate::config::config().map_or(0, |c| unsafe {
        core::ptr::read_volatile(&(*c).syn_guard_ports)
    }) != 0
}

/// `attach --syn-flood-guard`: SYNs and connection-less ACKs to a
/// guarded port go to the shield before the rules. Returns (the packet
/// goes on to the rules) when the packet is not one of those, or comes
/// back from the shield, or the shield is not loaded.
#[inline(always)]
pub fn enter_guard(ctx: &XdpContext, pkt: &Packet, ct_state: u32, in_ifindex: u32, tracking: bool) {
    let Some(call) = SHIELD_CALLS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU, this program run's.
    let call = unsafe { &mut *call };
    if call.judged != 0 {
        // Back from the shield: the rules' turn. Cleared first, whatever
        // the packet is now (a valid ACK comes back ESTABLISHED), so the
        // mark never outlives its packet.
        call.judged = 0;
        return;
    }
    if pkt.keys.protocol != IPPROTO_TCP
        || pkt.fragment
        || !pkt.l4_complete
        // A packet of a known connection is not for the shield.
        || ct_state == ct_state::ESTABLISHED
        || ct_state == ct_state::RELATED
    {
        return;
    }
    let flags = pkt.keys.tcp_flags as u8 & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN);
    if flags != TCP_SYN && flags != TCP_ACK {
        return;
    }
    // SAFETY: copied out at once.
    let Some(options) = (unsafe { SYN_GUARD_PORTS.get(&(pkt.keys.l4b as u16)) }).copied() else {
        return;
    };
    enter(ctx, MODE_GUARD, options, in_ifindex, tracking);
}

#[inline(always)]
fn enter(ctx: &XdpContext, mode: u32, options: u32, in_ifindex: u32, tracking: bool) {
    let Some(call) = SHIELD_CALLS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU, this program run's.
    let call = unsafe { &mut *call };
    call.mode = mode;
    call.options = options;
    call.in_ifindex = in_ifindex;
    call.tracking = tracking as u32;
    call.judged = 0;
    let slot = if mode == MODE_TRANSLATE {
        FORWARD_PROGRAM
    } else {
        SHIELD_PROGRAM
    };
    // SAFETY: a tail call; on failure (no program in the slot) it returns.
    unsafe { SHIELD.tail_call(ctx, slot) };
}

/// The FORWARD program (`FORWARD_PROGRAM`): translates a replayed
/// connection's packet, or replays a valid client's ACK to the server as
/// its SYN. Whatever it cannot use is dropped, as xt_SYNPROXY drops it.
#[inline(always)]
pub fn run_forward(ctx: &XdpContext) -> u32 {
    let (Some(call), Some(pkt)) = (SHIELD_CALLS.get_ptr_mut(0), current_packet()) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: per-CPU, this program run's.
    let call = unsafe { &*call };
    if call.mode == MODE_TRANSLATE {
        return netbeast_synproxy_translate(ctx.ctx);
    }
    let flags = pkt.keys.tcp_flags as u8 & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN);
    // The connection lives in conntrack (its mark, the translation's key):
    // without tracking nothing could be replayed.
    if call.mode == MODE_FORWARD
        && pkt.keys.protocol == IPPROTO_TCP
        && !pkt.fragment
        && pkt.l4_complete
        && flags == TCP_ACK
        && call.tracking != 0
        && cookie_valid(ctx, pkt, true)
    {
        let action = netbeast_synproxy_server_syn(ctx.ctx, call.options);
        if action == xdp_action::XDP_PASS {
            bump(stats::SYNPROXY_ACCEPTED);
            return action;
        }
    }
    bump(stats::SYNPROXY_DROPPED);
    xdp_action::XDP_DROP
}

/// The shield's program: answers a SYN with a cookie, passes an ACK with
/// a valid one; for a rule, drops the rest; for the guard, hands the rest
/// (and the valid ACK, to meet the rules as its connection's packet)
/// back to the main program.
#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    let (Some(call), Some(pkt)) = (SHIELD_CALLS.get_ptr_mut(0), current_packet()) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: per-CPU, this program run's.
    let call = unsafe { &mut *call };
    let tracking = call.tracking != 0;
    let forward = call.mode == MODE_FORWARD;
    let outcome = shield(ctx, pkt, call.options, call.in_ifindex, tracking, forward);
    if call.mode == MODE_RULE || forward {
        return match outcome {
            Outcome::Done(action) => action,
            Outcome::Pass => xdp_action::XDP_PASS,
            Outcome::NotMine => {
                bump(stats::SYNPROXY_DROPPED);
                xdp_action::XDP_DROP
            }
        };
    }
    match outcome {
        Outcome::Done(action) => action,
        Outcome::Pass | Outcome::NotMine => {
            call.judged = 1;
            // SAFETY: a tail call; returns only if it failed.
            unsafe { SHIELD.tail_call(ctx, MAIN_PROGRAM) };
            call.judged = 0;
            xdp_action::XDP_PASS
        }
    }
}

#[inline(always)]
fn shield(
    ctx: &XdpContext,
    pkt: &Packet,
    options: u32,
    in_ifindex: u32,
    tracking: bool,
    forward: bool,
) -> Outcome {
    if pkt.keys.protocol != IPPROTO_TCP || pkt.fragment || !pkt.l4_complete {
        return Outcome::NotMine;
    }
    let flags = pkt.keys.tcp_flags as u8;
    if flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN {
        // For a server behind the router the SYN-ACK advertises a zero
        // window, as xt_SYNPROXY's does: the client sends nothing before
        // the server has answered, when the shield opens the window.
        let window = if forward { 0 } else { SYNACK_WINDOW };
        let action = answer_syn(ctx, pkt, options, window);
        if action == xdp_action::XDP_TX {
            bump(stats::SYNPROXY_COOKIES);
            return Outcome::Done(handoff::reply(ctx, action, in_ifindex));
        }
        bump(stats::SYNPROXY_DROPPED);
        return Outcome::Done(xdp_action::XDP_DROP);
    }
    if forward {
        // The rest is the FORWARD program's (returns only if it is not
        // loaded: then nothing is replayed).
        // SAFETY: a tail call.
        unsafe { SHIELD.tail_call(ctx, FORWARD_PROGRAM) };
        return Outcome::NotMine;
    }
    if flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_ACK && cookie_ack(ctx, pkt) {
        if tracking {
            conntrack::adopt(pkt, 0);
        }
        bump(stats::SYNPROXY_ACCEPTED);
        return Outcome::Pass;
    }
    Outcome::NotMine
}

/// Copies the IPv4 header (its first 20 bytes) and the TCP header (with
/// its options, `doff * 4` bytes, returned) into the scratch area.
#[inline(always)]
fn copy_headers(ctx: &XdpContext, pkt: &Packet, s: &mut Scratch) -> Option<usize> {
    let l3 = pkt.l2_len() as u32;
    let l4 = l3 + pkt.ip_header_len() as u32;
    // SAFETY: helper calls writing into the scratch map value, sizes
    // bounded by the arrays.
    if unsafe { bpf_xdp_load_bytes(ctx.ctx, l3, s.ip.as_mut_ptr() as *mut _, IP_HLEN as u32) } != 0
        || unsafe { bpf_xdp_load_bytes(ctx.ctx, l4, s.tcp.as_mut_ptr() as *mut _, 20) } != 0
    {
        return None;
    }
    let len = ((s.tcp[12] >> 4) as usize * 4) & 0x3c;
    if len < 20 {
        return None;
    }
    if len > 20 {
        let more = (len - 20) as u32 & 0x3f;
        // SAFETY: as above; at most 40 bytes after the first 20 of 64.
        if more == 0
            || more > MAX_OPTION_BYTES as u32
            || unsafe {
                bpf_xdp_load_bytes(ctx.ctx, l4 + 20, s.tcp.as_mut_ptr().add(20) as *mut _, more)
            } != 0
        {
            return None;
        }
    }
    Some(len)
}

/// Where the option walk of a SYN is (`bpf_loop`'s context).
#[repr(C)]
struct OptionWalk {
    /// Offset of the next option in the TCP header.
    at: u64,
    /// The header's length.
    len: u64,
    /// The client's window shift + 1 (0: none).
    wscale: u32,
    sack: u32,
    /// 1 when `tsval` holds the client's timestamp value.
    has_ts: u32,
    tsval: u32,
    tsecr: u32,
}

/// One option of the walk; returns 1 (stop) at the end of the options.
/// In `bpf_loop`, so the verifier checks one step, not every option of
/// every path into the shield.
extern "C" fn option_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `OptionWalk` given to bpf_loop.
    let w = unsafe { &mut *(ctx as *mut OptionWalk) };
    let Some(s) = SCRATCH.get_ptr(0) else {
        return 1;
    };
    // SAFETY: per-CPU scratch, filled by `copy_headers` of this run.
    let t = unsafe { &(*s).tcp };
    let i = w.at as usize;
    let len = w.len as usize;
    if i >= len || i >= 60 {
        return 1;
    }
    let kind = t[i & 63];
    if kind == OPT_EOL {
        return 1;
    }
    if kind == OPT_NOP {
        w.at += 1;
        return 0;
    }
    let size = t[(i + 1) & 63] as usize;
    if size < 2 || i + size > len {
        return 1;
    }
    match (kind, size) {
        (OPT_WSCALE, 3) => {
            let shift = t[(i + 2) & 63] as u32;
            w.wscale = 1 + if shift > synproxy::MAX_WSCALE {
                synproxy::MAX_WSCALE
            } else {
                shift
            };
        }
        (OPT_SACK_PERM, 2) => w.sack = 1,
        (OPT_TIMESTAMP, 10) => {
            w.has_ts = 1;
            w.tsval = u32::from_be_bytes([
                t[(i + 2) & 63],
                t[(i + 3) & 63],
                t[(i + 4) & 63],
                t[(i + 5) & 63],
            ]);
            w.tsecr = u32::from_be_bytes([
                t[(i + 6) & 63],
                t[(i + 7) & 63],
                t[(i + 8) & 63],
                t[(i + 9) & 63],
            ]);
        }
        // MSS is read by the cookie helper itself.
        _ => {}
    }
    w.at += size as u64;
    0
}

/// Reads what the SYN offers from its options, as tcp_parse_options does.
#[inline(always)]
fn offer(s: &Scratch, len: usize) -> Offer {
    let t = &s.tcp;
    // Linux clients (most SYNs, and the floods that copy them) lay their
    // options out one way: MSS, SACK permitted, timestamps, NOP, window
    // scale. Read in place, without the walk.
    if len == 40
        && t[20] == OPT_MSS
        && t[21] == 4
        && t[24] == OPT_SACK_PERM
        && t[25] == 2
        && t[26] == OPT_TIMESTAMP
        && t[27] == 10
        && t[36] == OPT_NOP
        && t[37] == OPT_WSCALE
        && t[38] == 3
    {
        let shift = t[39] as u32;
        return Offer {
            seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
            tsecr: u32::from_be_bytes([t[32], t[33], t[34], t[35]]),
            wscale: Some(if shift > synproxy::MAX_WSCALE {
                synproxy::MAX_WSCALE
            } else {
                shift
            }),
            sack: true,
            tsval: Some(u32::from_be_bytes([t[28], t[29], t[30], t[31]])),
            ecn: t[13] & (TCP_ECE | TCP_CWR) == TCP_ECE | TCP_CWR,
        };
    }
    let mut w = core::mem::MaybeUninit::uninit();
    // SAFETY: integers; all-zero is a valid value.
    let w: &mut OptionWalk = unsafe { crate::mem::zeroed(&mut w) };
    w.at = 20;
    w.len = len as u64;
    // SAFETY: `option_step` has the callback signature bpf_loop expects,
    // and `w` outlives the call. Each step moves on by one byte at least.
    unsafe {
        bpf_loop(
            MAX_OPTION_BYTES as u32,
            option_step as *mut c_void,
            w as *mut OptionWalk as *mut c_void,
            0,
        );
    }
    Offer {
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        tsecr: w.tsecr,
        wscale: if w.wscale != 0 {
            Some(w.wscale - 1)
        } else {
            None
        },
        sack: w.sack != 0,
        tsval: if w.has_ts != 0 { Some(w.tsval) } else { None },
        ecn: t[13] & (TCP_ECE | TCP_CWR) == TCP_ECE | TCP_CWR,
    }
}

/// The timestamp value of a cookie SYN-ACK: now in milliseconds (the
/// clock the listener's own timestamps follow once `tcp_timestamps` is 2,
/// so they go on from it without a jump back) with the options in its low
/// bits, and never after now (cookie_init_timestamp's rule).
#[inline(always)]
fn cookie_tsval(options: u32) -> u32 {
    // The coarse clock (the last tick) is never ahead of the listener's,
    // and costs less.
    // SAFETY: no preconditions.
    let now = (unsafe { bpf_ktime_get_coarse_ns() } / 1_000_000) as u32;
    let mut ts = (now & !((1 << TS_OPT_BITS) - 1)) | options;
    if (ts.wrapping_sub(now) as i32) > 0 {
        ts = ts.wrapping_sub(1 << TS_OPT_BITS);
    }
    ts
}

/// Turns the SYN into a SYN-ACK whose sequence number is its cookie;
/// `XDP_TX`, or `XDP_DROP` when the frame cannot be rewritten.
#[inline(always)]
fn answer_syn(ctx: &XdpContext, pkt: &Packet, options: u32, window: u16) -> u32 {
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: per-CPU scratch, used by this program run only.
    let s = unsafe { &mut *s };
    let Some(len) = copy_headers(ctx, pkt, s) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: both point into the scratch map value; `len` is the TCP
    // header's length (20..=60), within the 64-byte copy.
    let cookie = unsafe {
        bpf_tcp_raw_gen_syncookie_ipv4(
            s.ip.as_mut_ptr() as *mut iphdr,
            s.tcp.as_mut_ptr() as *mut tcphdr,
            len as u32 & 0x3c,
        )
    };
    if cookie < 0 {
        return xdp_action::XDP_DROP;
    }
    let cookie = cookie as u32;
    let offer = offer(s, len);
    // What the SYN-ACK offers: what the rule allows of what the client
    // offered. Window scale and SACK travel in the timestamp, so without
    // timestamps they are not offered (as xt_SYNPROXY).
    let tsval = if options & synproxy::TIMESTAMP != 0 {
        offer.tsval
    } else {
        None
    };
    let wscale = tsval.is_some() && options & synproxy::WSCALE != 0 && offer.wscale.is_some();
    let sack = tsval.is_some() && options & synproxy::SACK_PERM != 0 && offer.sack;
    let ecn = tsval.is_some() && options & synproxy::ECN != 0 && offer.ecn;
    let mut ts_options = if wscale {
        offer.wscale.unwrap_or(TS_OPT_WSCALE_NONE)
    } else {
        TS_OPT_WSCALE_NONE
    };
    if sack {
        ts_options |= TS_OPT_SACK;
    }
    if ecn {
        ts_options |= TS_OPT_ECN;
    }

    let (src, dst) = (pkt.keys.src, pkt.keys.dst);
    let (sport, dport) = (pkt.keys.l4a as u16, pkt.keys.l4b as u16);
    let l2 = pkt.l2_len();
    if l2 > MAX_L2 || !set_len(ctx, l2 + IP_HLEN + SYNACK_TCP_LEN) {
        return xdp_action::XDP_DROP;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    if !write_l2(start, end, l2, 0)
        || !write_ipv4(
            start,
            end,
            l2,
            IP_HLEN,
            0,
            (IP_HLEN + SYNACK_TCP_LEN) as u16,
            true,
            IPPROTO_TCP,
            dst,
            src,
        )
    {
        return xdp_action::XDP_DROP;
    }
    let mut h = [0u8; SYNACK_TCP_LEN];
    h[0..2].copy_from_slice(&dport.to_be_bytes());
    h[2..4].copy_from_slice(&sport.to_be_bytes());
    h[4..8].copy_from_slice(&cookie.to_be_bytes());
    h[8..12].copy_from_slice(&offer.seq.wrapping_add(1).to_be_bytes());
    h[12] = ((SYNACK_TCP_LEN / 4) as u8) << 4;
    h[13] = TCP_SYN | TCP_ACK | if ecn { TCP_ECE } else { 0 };
    h[14..16].copy_from_slice(&window.to_be_bytes());
    // Options, NOPs where one is not offered.
    let mut o = [OPT_NOP; 20];
    if options & synproxy::MSS != 0 {
        let mss = (options & synproxy::MSS_MASK) as u16;
        o[0] = OPT_MSS;
        o[1] = 4;
        o[2..4].copy_from_slice(&mss.to_be_bytes());
    }
    if sack {
        o[4] = OPT_SACK_PERM;
        o[5] = 2;
    }
    if let Some(ecr) = tsval {
        o[6] = OPT_TIMESTAMP;
        o[7] = 10;
        o[8..12].copy_from_slice(&cookie_tsval(ts_options).to_be_bytes());
        o[12..16].copy_from_slice(&ecr.to_be_bytes());
    }
    if wscale {
        o[17] = OPT_WSCALE;
        o[18] = 3;
        o[19] = ((options >> synproxy::WSCALE_SHIFT) & synproxy::WSCALE_MASK) as u8;
    }
    h[20..40].copy_from_slice(&o);
    let src_h = u32::from_be(dst);
    let dst_h = u32::from_be(src);
    let mut sum: u64 = (src_h >> 16) as u64
        + (src_h & 0xffff) as u64
        + (dst_h >> 16) as u64
        + (dst_h & 0xffff) as u64
        + IPPROTO_TCP as u64
        + SYNACK_TCP_LEN as u64;
    let mut i = 0;
    while i < SYNACK_TCP_LEN {
        sum += u16::from_be_bytes([h[i], h[i + 1]]) as u64;
        i += 2;
    }
    h[16..18].copy_from_slice(&(!fold(sum)).to_be_bytes());
    if !store(start, end, l2 + IP_HLEN, h) {
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_TX
}

/// True when the ACK carries a valid cookie and the local listener of its
/// port will take it (marked as flooded, see the module's comment).
#[inline(always)]
fn cookie_ack(ctx: &XdpContext, pkt: &Packet) -> bool {
    if !cookie_valid(ctx, pkt, false) {
        return false;
    }
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU scratch, used by this program run only.
    let s = unsafe { &mut *s };
    let mut tuple = core::mem::MaybeUninit::uninit();
    // SAFETY: plain-old-data union of integers; all-zero is a valid value.
    let tuple: &mut bpf_sock_tuple = unsafe { crate::mem::zeroed(&mut tuple) };
    tuple.__bindgen_anon_1.ipv4.saddr = pkt.keys.src;
    tuple.__bindgen_anon_1.ipv4.daddr = pkt.keys.dst;
    tuple.__bindgen_anon_1.ipv4.sport = (pkt.keys.l4a as u16).to_be();
    tuple.__bindgen_anon_1.ipv4.dport = (pkt.keys.l4b as u16).to_be();
    // SAFETY: helper call; the socket is released below.
    let sk = unsafe {
        bpf_skc_lookup_tcp(
            ctx.ctx as *mut _,
            tuple,
            12,
            u64::MAX, // BPF_F_CURRENT_NETNS
            0,
        )
    };
    if sk.is_null() {
        bump(stats::SYNPROXY_NO_LISTENER);
        return true;
    }
    // The ACK's ports and sequence as a bare SYN: what the helper wants
    // to see before it marks the listener.
    let mut k = 0;
    while k < 20 {
        s.syn[k] = s.tcp[k];
        k += 1;
    }
    s.syn[12] = 5 << 4;
    s.syn[13] = TCP_SYN;
    // SAFETY: `sk` is a live socket reference; the headers are in the
    // scratch map value.
    let marked = unsafe {
        bpf_tcp_gen_syncookie(
            sk as *mut _,
            s.ip.as_mut_ptr() as *mut _,
            IP_HLEN as u32,
            s.syn.as_mut_ptr() as *mut tcphdr,
            20,
        )
    };
    // SAFETY: releases the reference taken above.
    unsafe { bpf_sk_release(sk as *mut _) };
    if marked < 0 {
        // Not a listener (an established socket took the tuple), or one
        // whose accept queue is full, or tcp_syncookies is not 2: the
        // kernel answers the ACK as it would without the shield.
        bump(stats::SYNPROXY_NO_LISTENER);
    }
    true
}

/// True when the ACK carries a valid cookie; its headers are then in the
/// scratch area. With `probe`, also a zero-window probe that carries one:
/// the cookie SYN-ACK of FORWARD opens no window, so a client whose ACK was
/// lost (a flood overruns the interface's queue) sends nothing but probes,
/// which repeat the sequence number before the one the ACK had (RFC 9293
/// 3.8.6.1). xt_SYNPROXY drops them and the connection hangs until the
/// client gives up; the shield takes the probe for the ACK it stands for
/// (its sequence moved on by one in the scratch copy, which the replay
/// reads), so the connection opens one probe interval later.
#[inline(always)]
fn cookie_valid(ctx: &XdpContext, pkt: &Packet, probe: bool) -> bool {
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU scratch, used by this program run only.
    let s = unsafe { &mut *s };
    let Some(len) = copy_headers(ctx, pkt, s) else {
        return false;
    };
    // SAFETY: both point into the scratch map value, 20 bytes each at least.
    let check = |s: &mut Scratch| unsafe {
        bpf_tcp_raw_check_syncookie_ipv4(
            s.ip.as_mut_ptr() as *mut iphdr,
            s.tcp.as_mut_ptr() as *mut tcphdr,
        )
    };
    if check(s) == 0 {
        return true;
    }
    if !probe || pkt.total_len() != pkt.ip_header_len() + len {
        return false;
    }
    let seq = u32::from_be_bytes([s.tcp[4], s.tcp[5], s.tcp[6], s.tcp[7]]).wrapping_add(1);
    s.tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    check(s) == 0
}

// ---------------------------------------------------------------------
// FORWARD: a server behind the router (xt_SYNPROXY's replay). The client's
// ACK with a valid cookie becomes the SYN to the server; the server's
// SYN-ACK becomes the segment that opens the client's window (and draws
// from the client the ACK that completes the server's handshake); every
// later packet of the connection has its sequence numbers (and timestamps)
// moved between the cookie's numbering, which the client knows, and the
// server's own (docs/ARCHITECTURE.md "The SYN-flood shield").
// ---------------------------------------------------------------------

/// The SYN went to the server, which has not answered yet.
const PROXY_SYN_SENT: u32 = 1;
/// The server answered: the connection's packets are translated.
const PROXY_OPEN: u32 = 2;

/// The MSS values a SYN cookie encodes (the kernel's `msstab`, in index
/// order): the cookie helper gives the check's result, not the MSS, so the
/// shield finds the index itself (see `cookie_mss`).
const COOKIE_MSS: [u16; 4] = [536, 1300, 1440, 1460];
/// The MSS of a client whose cookie's index cannot be read (the minute
/// counter moved on since the SYN-ACK): TCP's default (RFC 9293), safe for
/// any path.
const DEFAULT_MSS: u16 = 536;
/// The cookie's low bits that hold the hash plus the MSS index (the kernel's
/// `COOKIEBITS`; the minute counter is above them).
const COOKIE_DATA_MASK: u32 = (1 << 24) - 1;

/// What the shield keeps of a connection it replayed: the kernel's
/// `nf_conn_synproxy` and `nf_conn_seqadj` in one.
#[repr(C)]
#[derive(Clone, Copy)]
struct Proxied {
    /// `PROXY_*`.
    state: u32,
    /// The cookie: the initial sequence number the client was given.
    isn: u32,
    /// The timestamp value of the cookie SYN-ACK (the client's echo).
    its: u32,
    /// Added to the server's sequence numbers towards the client (the
    /// cookie less the server's own initial sequence number); taken from
    /// the client's acknowledgements and SACK blocks towards the server.
    off: u32,
    /// Taken from the server's timestamp values towards the client, added
    /// to the client's echoes towards the server (the kernel's `tsoff`).
    tsoff: u32,
    /// The window shift the client was offered (the rule's `--wscale`, 0
    /// when none was agreed): the server's SYN-ACK window is unscaled.
    wscale: u32,
    /// 1 when timestamps were agreed.
    ts: u32,
}

/// The connections replayed to servers behind the router, by conntrack key.
#[map]
static PROXIED: LruHashMap<CtKey, Proxied> = LruHashMap::with_max_entries(PROXIED_CONNECTIONS, 0);

/// The pseudo-header's one's-complement sum (big-endian words) of a TCP
/// segment of `len` bytes between `src` and `dst` (network order).
#[inline(always)]
fn pseudo(src: u32, dst: u32, len: usize) -> u64 {
    let (s, d) = (u32::from_be(src), u32::from_be(dst));
    (s >> 16) as u64
        + (s & 0xffff) as u64
        + (d >> 16) as u64
        + (d & 0xffff) as u64
        + IPPROTO_TCP as u64
        + (len & 0xffff) as u64
}

/// The 16-bit words of a 32-bit field, one's-complement summed.
#[inline(always)]
fn words(v: [u8; 4]) -> u64 {
    u16::from_be_bytes([v[0], v[1]]) as u64 + u16::from_be_bytes([v[2], v[3]]) as u64
}

/// The MSS the client's cookie encodes. The kernel's cookie is the hash of
/// the connection plus the SYN's sequence, the minute counter above
/// `COOKIE_DATA_MASK` and (a second hash plus the MSS index) below it; the
/// same connection's cookie made now for a SYN without an MSS option
/// (index 0) differs from it by the index alone, within the same minute.
#[inline(always)]
fn cookie_mss(s: &mut Scratch, cookie: u32, client_isn: u32) -> u16 {
    let mut k = 0;
    while k < 20 {
        s.syn[k] = s.tcp[k];
        k += 1;
    }
    s.syn[4..8].copy_from_slice(&client_isn.to_be_bytes());
    s.syn[12] = 5 << 4;
    s.syn[13] = TCP_SYN;
    // SAFETY: both point into the scratch map value; a bare 20-byte header.
    let made = unsafe {
        bpf_tcp_raw_gen_syncookie_ipv4(
            s.ip.as_mut_ptr() as *mut iphdr,
            s.syn.as_mut_ptr() as *mut tcphdr,
            20,
        )
    };
    if made < 0 {
        return DEFAULT_MSS;
    }
    let index = cookie.wrapping_sub(made as u32) & COOKIE_DATA_MASK;
    if index < COOKIE_MSS.len() as u32 {
        COOKIE_MSS[index as usize & 3]
    } else {
        DEFAULT_MSS
    }
}

/// The client's ACK carried a valid cookie (its headers in the scratch
/// area): records the connection and turns the ACK into the SYN the client
/// would have sent the server — its initial sequence number, the MSS the
/// cookie encodes, the window shift and SACK its timestamp echo carries, its
/// timestamp — which the kernel then forwards (`XDP_PASS`). The ACK itself,
/// and any data on it, goes no further, as with xt_SYNPROXY.
///
/// A BPF global function, verified once on its own (inlined, the shield's
/// program went past the verifier's million instructions); the packet is
/// the one in `PACKET`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_synproxy_server_syn(ctx: *mut xdp_md, options: u32) -> u32 {
    let Some(pkt) = current_packet() else {
        return xdp_action::XDP_DROP;
    };
    if ctx.is_null() {
        return xdp_action::XDP_DROP;
    }
    let ctx = &XdpContext::new(ctx);
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: per-CPU scratch, used by this program run only.
    let s = unsafe { &mut *s };
    let len = ((s.tcp[12] >> 4) as usize * 4) & 0x3c;
    let echo = offer(s, len);
    let t = &s.tcp;
    let ack = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
    let client_isn = echo.seq.wrapping_sub(1);
    let cookie = ack.wrapping_sub(1);
    let window = [t[14], t[15]];
    let ports = [t[0], t[1], t[2], t[3]];
    let old_check = u16::from_be_bytes([t[16], t[17]]);
    let mss = cookie_mss(s, cookie, client_isn);
    // What the cookie SYN-ACK agreed rides in the low bits of the echo.
    let (wscale, sack, ts) = match echo.tsval {
        Some(_) => {
            let bits = echo.tsecr & ((1 << TS_OPT_BITS) - 1);
            (bits & 0xf, bits & TS_OPT_SACK != 0, true)
        }
        None => (TS_OPT_WSCALE_NONE, false, false),
    };
    let (src, dst) = (pkt.keys.src, pkt.keys.dst);
    let partial_sum = partial(
        old_check,
        pseudo(src, dst, pkt.total_len() - pkt.ip_header_len()),
    );

    conntrack::adopt(pkt, ct_flags::PROXIED);
    let Some(tr) = conntrack::tracking() else {
        return xdp_action::XDP_DROP;
    };
    let conn = Proxied {
        state: PROXY_SYN_SENT,
        isn: cookie,
        its: echo.tsecr,
        off: 0,
        tsoff: 0,
        wscale: if wscale != TS_OPT_WSCALE_NONE {
            (options >> synproxy::WSCALE_SHIFT) & synproxy::WSCALE_MASK
        } else {
            0
        },
        ts: ts as u32,
    };
    if PROXIED.insert(&tr.key, &conn, 0).is_err() {
        return xdp_action::XDP_DROP;
    }

    let l2 = pkt.l2_len();
    if l2 > MAX_L2 || !set_len(ctx, l2 + IP_HLEN + SYNACK_TCP_LEN) {
        return xdp_action::XDP_DROP;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    if !write_ipv4(
        start,
        end,
        l2,
        IP_HLEN,
        0,
        (IP_HLEN + SYNACK_TCP_LEN) as u16,
        true,
        IPPROTO_TCP,
        src,
        dst,
    ) {
        return xdp_action::XDP_DROP;
    }
    let h = &mut s.out;
    let mut k = 0;
    while k < SYNACK_TCP_LEN {
        // Volatile: a plain loop of stores becomes a `memset` call, a byte
        // loop of its own (`mem`).
        // SAFETY: a byte of the scratch's header.
        unsafe { core::ptr::write_volatile(&mut h[k], if k < 20 { 0 } else { OPT_NOP }) };
        k += 1;
    }
    h[0..4].copy_from_slice(&ports);
    h[4..8].copy_from_slice(&client_isn.to_be_bytes());
    h[12] = ((SYNACK_TCP_LEN / 4) as u8) << 4;
    h[13] = TCP_SYN;
    h[14..16].copy_from_slice(&window);
    h[20] = OPT_MSS;
    h[21] = 4;
    h[22..24].copy_from_slice(&mss.to_be_bytes());
    if sack {
        h[24] = OPT_SACK_PERM;
        h[25] = 2;
    }
    if let Some(tsval) = echo.tsval {
        h[26] = OPT_TIMESTAMP;
        h[27] = 10;
        h[28..32].copy_from_slice(&tsval.to_be_bytes());
        h[32..36].copy_from_slice(&0u32.to_be_bytes());
    }
    if wscale != TS_OPT_WSCALE_NONE {
        h[37] = OPT_WSCALE;
        h[38] = 3;
        h[39] = wscale as u8;
    }
    let sum = pseudo(src, dst, SYNACK_TCP_LEN);
    let check = if partial_sum {
        fold(sum)
    } else {
        let mut sum = sum;
        let mut i = 0;
        while i < SYNACK_TCP_LEN {
            sum += u16::from_be_bytes([h[i], h[i + 1]]) as u64;
            i += 2;
        }
        !fold(sum)
    };
    h[16..18].copy_from_slice(&check.to_be_bytes());
    // SAFETY: helper call reading the scratch map value (40 of 64 bytes).
    if unsafe {
        bpf_xdp_store_bytes(
            ctx.ctx,
            (l2 + IP_HLEN) as u32,
            h.as_mut_ptr() as *mut _,
            SYNACK_TCP_LEN as u32,
        )
    } != 0
    {
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_PASS
}

/// The segment that opens the client's window: 20 bytes of header, the
/// timestamps (NOP, NOP, 10 bytes) and one byte of data.
const OPEN_TS_LEN: usize = 33;
/// The same without timestamps.
const OPEN_LEN: usize = 21;

/// A packet of a replayed connection, accepted by FORWARD: see the
/// section's comment. The kernel forwards what comes out (`XDP_PASS`).
/// A BPF global function, as `netbeast_synproxy_server_syn`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_synproxy_translate(ctx: *mut xdp_md) -> u32 {
    let Some(pkt) = current_packet() else {
        return xdp_action::XDP_DROP;
    };
    if ctx.is_null() {
        return xdp_action::XDP_DROP;
    }
    let ctx = &XdpContext::new(ctx);
    if pkt.keys.protocol != IPPROTO_TCP || pkt.fragment || !pkt.l4_complete {
        return xdp_action::XDP_PASS;
    }
    let Some(t) = conntrack::tracking() else {
        return xdp_action::XDP_DROP;
    };
    let reply = t.reply != 0;
    let Some(c) = PROXIED.get_ptr_mut(&t.key) else {
        // Evicted from the table: nothing to translate with.
        return xdp_action::XDP_PASS;
    };
    // SAFETY: map value, valid for this program run.
    let c = unsafe { &mut *c };
    let flags = pkt.keys.tcp_flags as u8 & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN);
    if c.state == PROXY_SYN_SENT {
        if reply && flags == TCP_SYN | TCP_ACK {
            return open_client(ctx, pkt, c);
        }
        if reply && flags & TCP_RST != 0 {
            // The server refused: the client's connection is reset (its
            // next expected sequence is the cookie's).
            return reset_client(ctx, pkt, c.isn.wrapping_add(1));
        }
        // The client was given no window: nothing of it belongs to the
        // server before the server answered.
        bump(stats::SYNPROXY_DROPPED);
        return xdp_action::XDP_DROP;
    }
    translate_open(ctx, pkt, c, reply)
}

/// The server's SYN-ACK: records the translation (the kernel's seqadj
/// offset and `tsoff`) and turns the SYN-ACK into the segment that opens
/// the client's window. One frame must do two things (XDP sends one): it
/// carries the server's window, and one byte the client already has (its
/// sequence is the cookie, one before what the client expects), which the
/// client acknowledges at once — that acknowledgement, translated, is the
/// ACK that completes the server's handshake.
#[inline(always)]
fn open_client(ctx: &XdpContext, pkt: &Packet, c: &mut Proxied) -> u32 {
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: per-CPU scratch, used by this program run only.
    let s = unsafe { &mut *s };
    let Some(len) = copy_headers(ctx, pkt, s) else {
        return xdp_action::XDP_DROP;
    };
    let synack = offer(s, len);
    let t = &s.tcp;
    let ack = [t[8], t[9], t[10], t[11]];
    let window = u16::from_be_bytes([t[14], t[15]]) >> (c.wscale & 0xf);
    let old_check = u16::from_be_bytes([t[16], t[17]]);
    c.off = c.isn.wrapping_sub(synack.seq);
    let ts = match synack.tsval {
        Some(tsval) if c.ts != 0 => {
            c.tsoff = tsval.wrapping_sub(c.its);
            true
        }
        _ => false,
    };
    c.state = PROXY_OPEN;
    let (src, dst) = (pkt.keys.src, pkt.keys.dst);
    let partial_sum = partial(
        old_check,
        pseudo(src, dst, pkt.total_len() - pkt.ip_header_len()),
    );
    let tcp_len = if ts { OPEN_TS_LEN } else { OPEN_LEN };
    let ports = [t[0], t[1], t[2], t[3]];
    let ecr = synack.tsecr;
    let h = &mut s.out;
    let mut k = 0;
    while k < OPEN_TS_LEN + 1 {
        // Volatile, as above.
        // SAFETY: a byte of the scratch's header.
        unsafe { core::ptr::write_volatile(&mut h[k], 0) };
        k += 1;
    }
    h[0..4].copy_from_slice(&ports);
    h[4..8].copy_from_slice(&c.isn.to_be_bytes());
    h[8..12].copy_from_slice(&ack);
    h[13] = TCP_ACK;
    h[14..16].copy_from_slice(&window.to_be_bytes());
    if ts {
        h[12] = 8 << 4;
        h[20] = OPT_NOP;
        h[21] = OPT_NOP;
        h[22] = OPT_TIMESTAMP;
        h[23] = 10;
        // The server's clock less tsoff is the cookie's, which the client
        // last saw.
        h[24..28].copy_from_slice(&c.its.to_be_bytes());
        h[28..32].copy_from_slice(&ecr.to_be_bytes());
    } else {
        h[12] = 5 << 4;
    }
    // The byte of data (already acknowledged by the client) is 0, at
    // `tcp_len - 1`: it adds nothing to the sum.
    let sum = pseudo(src, dst, tcp_len);
    let check = if partial_sum {
        fold(sum)
    } else {
        let mut sum = sum;
        let mut i = 0;
        while i < OPEN_TS_LEN - 1 {
            sum += u16::from_be_bytes([h[i], h[i + 1]]) as u64;
            i += 2;
        }
        !fold(sum)
    };
    h[16..18].copy_from_slice(&check.to_be_bytes());
    let l2 = pkt.l2_len();
    if l2 > MAX_L2 || !set_len(ctx, l2 + IP_HLEN + tcp_len) {
        return xdp_action::XDP_DROP;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    if !write_ipv4(
        start,
        end,
        l2,
        IP_HLEN,
        0,
        (IP_HLEN + tcp_len) as u16,
        true,
        IPPROTO_TCP,
        src,
        dst,
    ) {
        return xdp_action::XDP_DROP;
    }
    // The header and its byte of data. The byte sits right after the
    // header (20 bytes without timestamps: `h[20]` is 0 then too).
    let n = if ts { OPEN_TS_LEN } else { OPEN_LEN } as u32;
    // SAFETY: helper call reading the scratch map value (at most 33 of 64
    // bytes).
    if unsafe { bpf_xdp_store_bytes(ctx.ctx, (l2 + IP_HLEN) as u32, h.as_mut_ptr() as *mut _, n) }
        != 0
    {
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_PASS
}

/// The server's reset of the replayed SYN, given the sequence number the
/// client's connection expects.
#[inline(always)]
fn reset_client(ctx: &XdpContext, pkt: &Packet, seq: u32) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    let l4 = (pkt.l2_len() + pkt.ip_header_len()) & 0xff;
    let (Some(old), Some(check)) = (
        load::<[u8; 4]>(start, end, l4 + 4),
        load::<[u8; 2]>(start, end, l4 + 16),
    ) else {
        return xdp_action::XDP_DROP;
    };
    let check = u16::from_be_bytes(check);
    let sum = pseudo(
        pkt.keys.src,
        pkt.keys.dst,
        pkt.total_len() - pkt.ip_header_len(),
    );
    let new = seq.to_be_bytes();
    if !store(start, end, l4 + 4, new) {
        return xdp_action::XDP_DROP;
    }
    if !partial(check, sum) {
        let delta = fold(words([!old[0], !old[1], !old[2], !old[3]]) + words(new));
        let check = !fold((!check) as u64 + delta as u64);
        if !store(start, end, l4 + 16, check.to_be_bytes()) {
            return xdp_action::XDP_DROP;
        }
    }
    xdp_action::XDP_PASS
}

/// Option kind of SACK blocks.
const OPT_SACK: u8 = 5;
/// SACK blocks an option holds at most (40 bytes of options: 2 + 4 × 8).
const MAX_SACK_BLOCKS: usize = 4;

/// Where the options of an open connection's packet are (`bpf_loop`'s
/// context): the walk only finds them, in the scratch copy of the header;
/// the translation then patches them outside the loop.
#[repr(C)]
struct LocateWalk {
    /// Offset of the next option in the TCP header.
    at: u64,
    /// The header's length.
    len: u64,
    /// Offset of the timestamps option (0: none).
    ts_at: u32,
    /// Offset and length of the SACK option (0: none).
    sack_at: u32,
    sack_len: u32,
}

/// Writes `new` over the header's 32-bit field at `at` (in the scratch
/// copy) and adds the checksum's change to `delta` (RFC 1624). A field at
/// an odd offset straddles the checksum's words: its change, summed as if
/// aligned, is the byte-swapped one.
#[inline(always)]
fn patch32(t: &mut [u8; 64], at: usize, new: u32, delta: &mut u64) {
    let old = [
        t[at & 63],
        t[(at + 1) & 63],
        t[(at + 2) & 63],
        t[(at + 3) & 63],
    ];
    let new_bytes = new.to_be_bytes();
    t[at & 63] = new_bytes[0];
    t[(at + 1) & 63] = new_bytes[1];
    t[(at + 2) & 63] = new_bytes[2];
    t[(at + 3) & 63] = new_bytes[3];
    let d = fold(words([!old[0], !old[1], !old[2], !old[3]]) + words(new_bytes));
    let d = if at & 1 == 1 { d.swap_bytes() } else { d };
    // Folded at once: kept within 16 bits, the walk's state is the same
    // from one option to the next, which lets the verifier's check of the
    // `bpf_loop` callback converge.
    *delta = fold(*delta + d as u64) as u64;
}

/// The 32-bit field at `at` of the header.
#[inline(always)]
fn field32(t: &[u8; 64], at: usize) -> u32 {
    u32::from_be_bytes([
        t[at & 63],
        t[(at + 1) & 63],
        t[(at + 2) & 63],
        t[(at + 3) & 63],
    ])
}

/// One option of an open connection's packet; returns 1 (stop) at the end
/// of the options. In `bpf_loop`: the verifier checks one step.
extern "C" fn locate_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `LocateWalk` given to bpf_loop.
    let w = unsafe { &mut *(ctx as *mut LocateWalk) };
    let Some(s) = SCRATCH.get_ptr(0) else {
        return 1;
    };
    // SAFETY: per-CPU scratch, filled by `copy_headers` of this run.
    let t = unsafe { &(*s).tcp };
    let i = w.at as usize;
    let len = w.len as usize;
    if i >= len || i >= 60 {
        return 1;
    }
    let kind = t[i & 63];
    if kind == OPT_EOL {
        return 1;
    }
    if kind == OPT_NOP {
        w.at += 1;
        return 0;
    }
    let size = t[(i + 1) & 63] as usize;
    if size < 2 || i + size > len {
        return 1;
    }
    if kind == OPT_TIMESTAMP && size == 10 {
        w.ts_at = i as u32;
    } else if kind == OPT_SACK {
        w.sack_at = i as u32;
        w.sack_len = size as u32;
    }
    w.at += size as u64;
    0
}

/// Translates a packet of an open replayed connection in place: towards
/// the client the server's sequence number and timestamp value, towards
/// the server the client's acknowledgement, SACK blocks and timestamp echo
/// (the kernel's seqadj and synproxy_tstamp_adjust); the TCP checksum
/// follows (RFC 1624), unless left to offload. The header is translated in
/// the scratch copy (the option walk in `bpf_loop`) and written back.
#[inline(always)]
fn translate_open(ctx: &XdpContext, pkt: &Packet, c: &Proxied, reply: bool) -> u32 {
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: per-CPU scratch, used by this program run only.
    let s = unsafe { &mut *s };
    let Some(len) = copy_headers(ctx, pkt, s) else {
        return xdp_action::XDP_DROP;
    };
    let t = &mut s.tcp;
    let check = u16::from_be_bytes([t[16], t[17]]);
    let sum = pseudo(
        pkt.keys.src,
        pkt.keys.dst,
        pkt.total_len() - pkt.ip_header_len(),
    );
    let mut delta = 0u64;
    if reply {
        let seq = field32(t, 4);
        patch32(t, 4, seq.wrapping_add(c.off), &mut delta);
    } else if t[13] & TCP_ACK != 0 {
        let ack = field32(t, 8);
        patch32(t, 8, ack.wrapping_sub(c.off), &mut delta);
    }
    let mut w = LocateWalk {
        at: 20,
        len: len as u64,
        ts_at: 0,
        sack_at: 0,
        sack_len: 0,
    };
    if len > 20 {
        // SAFETY: `locate_step` has the callback signature bpf_loop
        // expects, and `w` outlives the call. Each step moves on by one
        // byte at least.
        unsafe {
            bpf_loop(
                MAX_OPTION_BYTES as u32,
                locate_step as *mut c_void,
                &mut w as *mut LocateWalk as *mut c_void,
                0,
            );
        }
    }
    let t = &mut s.tcp;
    if w.ts_at != 0 && c.ts != 0 {
        let at = w.ts_at as usize & 63;
        if reply {
            let tsval = field32(t, at + 2);
            patch32(t, at + 2, tsval.wrapping_sub(c.tsoff), &mut delta);
        } else {
            let tsecr = field32(t, at + 6);
            patch32(t, at + 6, tsecr.wrapping_add(c.tsoff), &mut delta);
        }
    }
    if w.sack_at != 0 && !reply {
        let blocks = (w.sack_len as usize).saturating_sub(2);
        if blocks % 8 != 0 {
            bump(stats::SYNPROXY_DROPPED);
            return xdp_action::XDP_DROP;
        }
        // Each edge of each block is a sequence number of the server's.
        let at = w.sack_at as usize & 63;
        let mut e = 0;
        while e < MAX_SACK_BLOCKS * 2 {
            if 4 * (e + 1) > blocks {
                break;
            }
            let edge_at = at + 2 + 4 * e;
            let edge = field32(t, edge_at);
            patch32(t, edge_at, edge.wrapping_sub(c.off), &mut delta);
            e += 1;
        }
    }
    let t = &mut s.tcp;
    if !partial(check, sum) {
        let check = !fold((!check) as u64 + delta);
        t[16..18].copy_from_slice(&check.to_be_bytes());
    }
    let l4 = (pkt.l2_len() + pkt.ip_header_len()) as u32;
    let len = len as u32 & 0x3c;
    // SAFETY: helper calls reading the scratch map value, sizes bounded by
    // its array (20, then at most 40 more).
    if unsafe { bpf_xdp_store_bytes(ctx.ctx, l4, t.as_mut_ptr() as *mut _, 20) } != 0 {
        return xdp_action::XDP_DROP;
    }
    let more = len.saturating_sub(20) & 0x3f;
    if more > 0
        && more <= MAX_OPTION_BYTES as u32
        && unsafe { bpf_xdp_store_bytes(ctx.ctx, l4 + 20, t.as_mut_ptr().add(20) as *mut _, more) }
            != 0
    {
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_PASS
}
