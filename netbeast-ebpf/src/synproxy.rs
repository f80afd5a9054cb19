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
    bindings::{bpf_sock_tuple, iphdr, tcphdr, xdp_action},
    helpers::generated::{
        bpf_ktime_get_coarse_ns, bpf_loop, bpf_sk_release, bpf_skc_lookup_tcp,
        bpf_tcp_gen_syncookie, bpf_tcp_raw_check_syncookie_ipv4, bpf_tcp_raw_gen_syncookie_ipv4,
        bpf_xdp_load_bytes,
    },
    macros::map,
    maps::{Array, HashMap, PerCpuArray, ProgramArray},
    programs::XdpContext,
};
use netbeast_common::{ct_state, size, stats, synproxy};

use crate::{
    conntrack,
    csum::fold,
    handoff,
    parse::{IPPROTO_TCP, Packet, current_packet, store},
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
static SYN_GUARD_PORTS: HashMap<u16, u32> = HashMap::with_max_entries(size::SYN_GUARD_PORTS, 0);

/// How many ports `SYN_GUARD_PORTS` holds (entry 0): a packet looks them
/// up only while there is one.
#[map]
static SYN_GUARD_COUNT: Array<u32> = Array::with_max_entries(1, 0);

/// Copies of the headers the helpers read (they take memory the verifier
/// can bound; the frame's TCP header has a variable length), kept off the
/// 512-byte stack.
#[repr(C)]
struct Scratch {
    ip: [u8; IP_HLEN],
    tcp: [u8; 64],
    /// The ACK's header turned into a SYN, for `bpf_tcp_gen_syncookie`.
    syn: [u8; 20],
}

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// What a client's SYN offered.
struct Offer {
    seq: u32,
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
static SHIELD: ProgramArray = ProgramArray::with_max_entries(2, 0);
const SHIELD_PROGRAM: u32 = 0;
const MAIN_PROGRAM: u32 = 1;

/// Why the shield was called.
const MODE_RULE: u32 = 1;
const MODE_GUARD: u32 = 2;

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
pub fn enter_rule(ctx: &XdpContext, options: u32, in_ifindex: u32, tracking: bool) -> u32 {
    enter(ctx, MODE_RULE, options, in_ifindex, tracking);
    bump(stats::SYNPROXY_DROPPED);
    xdp_action::XDP_DROP
}

/// True while `attach --syn-flood-guard` protects a port.
#[inline(always)]
pub fn guarding() -> bool {
    SYN_GUARD_COUNT.get(0).copied().unwrap_or(0) != 0
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
    // SAFETY: a tail call; on failure (no program in the slot) it returns.
    unsafe { SHIELD.tail_call(ctx, SHIELD_PROGRAM) };
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
    let outcome = shield(ctx, pkt, call.options, call.in_ifindex, tracking);
    if call.mode == MODE_RULE {
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
) -> Outcome {
    if pkt.keys.protocol != IPPROTO_TCP || pkt.fragment || !pkt.l4_complete {
        return Outcome::NotMine;
    }
    let flags = pkt.keys.tcp_flags as u8;
    if flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN {
        let action = answer_syn(ctx, pkt, options);
        if action == xdp_action::XDP_TX {
            bump(stats::SYNPROXY_COOKIES);
            return Outcome::Done(handoff::reply(ctx, action, in_ifindex));
        }
        bump(stats::SYNPROXY_DROPPED);
        return Outcome::Done(xdp_action::XDP_DROP);
    }
    if flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_ACK && cookie_ack(ctx, pkt) {
        if tracking {
            conntrack::adopt(pkt);
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
    let mut w = OptionWalk {
        at: 20,
        len: len as u64,
        wscale: 0,
        sack: 0,
        has_ts: 0,
        tsval: 0,
    };
    // SAFETY: `option_step` has the callback signature bpf_loop expects,
    // and `w` outlives the call. Each step moves on by one byte at least.
    unsafe {
        bpf_loop(
            MAX_OPTION_BYTES as u32,
            option_step as *mut c_void,
            &mut w as *mut OptionWalk as *mut c_void,
            0,
        );
    }
    Offer {
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
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
fn answer_syn(ctx: &XdpContext, pkt: &Packet, options: u32) -> u32 {
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
    h[14..16].copy_from_slice(&SYNACK_WINDOW.to_be_bytes());
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
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU scratch, used by this program run only.
    let s = unsafe { &mut *s };
    if copy_headers(ctx, pkt, s).is_none() {
        return false;
    }
    // SAFETY: both point into the scratch map value, 20 bytes each at least.
    let valid = unsafe {
        bpf_tcp_raw_check_syncookie_ipv4(
            s.ip.as_mut_ptr() as *mut iphdr,
            s.tcp.as_mut_ptr() as *mut tcphdr,
        )
    } == 0;
    if !valid {
        return false;
    }
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    tuple.__bindgen_anon_1.ipv4.saddr = pkt.keys.src;
    tuple.__bindgen_anon_1.ipv4.daddr = pkt.keys.dst;
    tuple.__bindgen_anon_1.ipv4.sport = (pkt.keys.l4a as u16).to_be();
    tuple.__bindgen_anon_1.ipv4.dport = (pkt.keys.l4b as u16).to_be();
    // SAFETY: helper call; the socket is released below.
    let sk = unsafe {
        bpf_skc_lookup_tcp(
            ctx.ctx as *mut _,
            &mut tuple,
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
