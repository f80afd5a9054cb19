//! REJECT for IPv6 (ip6tables' REJECT): the reply is built in place over
//! the offending frame, as `reject.rs` does for IPv4, and leaves the way
//! IPv4 replies do (`XDP_TX`, or the TC hand-off into bare veths): an
//! ICMPv6 destination unreachable quoting as much of the packet as fits in
//! the minimum MTU (RFC 4443 2.4 (c)), or a TCP RST.

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, xdp_action},
    helpers::generated::{
        bpf_fib_lookup, bpf_skb_change_head, bpf_skb_change_tail, bpf_xdp_adjust_head,
    },
    programs::{TcContext, XdpContext},
};
use netbeast_common::{Addr6, TCP_FLAGS_NONE, ct_state, reject, stats};

use crate::{
    conntrack::{V6, checksum_ok6, sum_message},
    csum::fold,
    parse::{ETH_HLEN, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Packet, TCP_HLEN, load, store},
    reject::{MAX_L2, set_len, write_l2},
    stats::bump,
};

const IPV6_HLEN: usize = 40;
const ICMP6_HLEN: usize = 8;
/// The minimum IPv6 MTU: an ICMPv6 error is no longer (RFC 4443 2.4 (c)).
const MIN_MTU: usize = 1280;
/// The most of the offending packet an error quotes.
const MAX_QUOTE: usize = MIN_MTU - IPV6_HLEN - ICMP6_HLEN;
/// Hop limit of generated replies (Linux's default `hop_limit`).
const REPLY_HOP_LIMIT: u8 = 64;
const ICMP6_DEST_UNREACHABLE: u8 = 1;
/// ICMPv6 redirect: icmpv6_send() never answers one, like the errors.
const ICMP6_REDIRECT: u32 = 137;
const TCP_FLAG_FIN: u8 = 0x01;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_RST: u8 = 0x04;
const TCP_FLAG_ACK: u8 = 0x10;
const AF_INET6: u8 = 10;
/// The loopback device is ifindex 1 in every network namespace: where the
/// answers to the host's own packets leave by (`-o lo`).
const LOOPBACK_IFINDEX: u32 = 1;
/// `bpf_fib_lookup` flag: choose the source address for the route.
const FIB_LOOKUP_SRC: u32 = 16;

fn silent() -> u32 {
    bump(stats::REJECT_SILENT);
    xdp_action::XDP_DROP
}

/// The packet's source and destination.
#[inline(always)]
fn addresses(pkt: &Packet) -> (Addr6, Addr6) {
    let (k, w) = (&pkt.keys, &pkt.addr6);
    (
        Addr6([k.src, w[0], w[2], w[4]]),
        Addr6([k.dst, w[1], w[3], w[5]]),
    )
}

/// Turns the frame into the reply and returns the XDP action. `local`:
/// the packet is for this host (INPUT6), so the ICMPv6 error comes from
/// the address it was sent to; else (FORWARD6) from the address the
/// kernel would choose for the route back. Out of line: its own frame.
#[inline(never)]
pub fn reject6(ctx: &XdpContext, pkt: &Packet, with: u32, in_ifindex: u32, local: bool) -> u32 {
    let (src, dst) = addresses(pkt);
    // As icmp6_send() and nf_send_reset6(): never a later fragment, a
    // multicast destination, a frame sent to a link-level group, an
    // unspecified or multicast source; nor an IPv4-mapped source
    // (::ffff:0:0/96), to which the kernel's answer finds no route.
    if pkt.fragment
        || pkt.keys.dst & 0xff == 0xff
        || pkt.keys.src & 0xff == 0xff
        || src == Addr6::default()
        || (pkt.keys.src == 0 && pkt.addr6[0] == 0 && pkt.addr6[2] == 0xffffu32.to_be())
        || pkt.keys.eth_dst & 1 != 0
        || pkt.l2_len() > MAX_L2
    {
        return silent();
    }
    let protocol = pkt.keys.protocol;
    // Never an ICMPv6 error about an ICMPv6 error or redirect (RFC 4443
    // 2.4 (e)), nor about a message cut before its type.
    if protocol == IPPROTO_ICMPV6
        && (!pkt.l4_complete || pkt.keys.l4a < 128 || pkt.keys.l4a == ICMP6_REDIRECT)
    {
        return silent();
    }
    // nf_send_unreach6() and nf_send_reset6() check the offending
    // packet's checksum first: no answer to a corrupt packet.
    if matches!(protocol, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMPV6)
        && !checksum_ok6(pkt, ctx.data(), ctx.data_end(), local)
    {
        return silent();
    }
    let action = if with == reject::TCP_RESET {
        // A reset is no ICMPv6 error: nf_send_reset6() sends it unlimited.
        tcp_reset6(ctx, pkt, &src, &dst)
    } else if !crate::icmp_limit::allow6(&src) {
        // The namespace's ICMPv6 rate limits, as icmp6_send() applies
        // them after the checks above (and before its route lookup).
        bump(stats::REJECT_RATE_LIMITED);
        return xdp_action::XDP_DROP;
    } else {
        let code = icmp6_code(with);
        let from = if local {
            dst
        } else {
            match route_source(ctx, &src, in_ifindex) {
                Some(from) => from,
                None => return silent(),
            }
        };
        unreachable6(ctx, pkt, code, &from, &src)
    };
    if action == xdp_action::XDP_TX {
        bump(stats::REJECTED);
    } else {
        bump(stats::REJECT_SILENT);
    }
    action
}

/// The source address the kernel picks for a packet to `to` (what
/// icmp6_send() answers a forwarded packet from).
#[inline(always)]
fn route_source(ctx: &XdpContext, to: &Addr6, in_ifindex: u32) -> Option<Addr6> {
    let mut params = core::mem::MaybeUninit::uninit();
    // SAFETY: plain-old-data struct of integers; all-zero is valid.
    let params: &mut aya_ebpf::bindings::bpf_fib_lookup =
        unsafe { crate::mem::zeroed(&mut params) };
    params.family = AF_INET6;
    params.ifindex = in_ifindex;
    params.__bindgen_anon_4.ipv6_dst = to.0;
    // SAFETY: params is a valid, writable bpf_fib_lookup on the stack.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            params,
            core::mem::size_of::<aya_ebpf::bindings::bpf_fib_lookup>() as i32,
            FIB_LOOKUP_SRC,
        )
    } as u32;
    if rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH {
        return None;
    }
    // SAFETY: the kernel wrote the source for the AF_INET6 lookup.
    Some(Addr6(unsafe { params.__bindgen_anon_3.ipv6_src }))
}

/// Writes an IPv6 header at `l2`.
#[inline(always)]
fn write_ipv6(
    start: usize,
    end: usize,
    l2: usize,
    tclass: u8,
    payload: u16,
    next: u8,
    src: &Addr6,
    dst: &Addr6,
) -> bool {
    let p = payload.to_be_bytes();
    let first = [
        0x60 | (tclass >> 4),
        tclass << 4,
        0,
        0,
        p[0],
        p[1],
        next,
        REPLY_HOP_LIMIT,
    ];
    store(start, end, l2, first)
        && store(start, end, l2 + 8, src.0)
        && store(start, end, l2 + 24, dst.0)
}

/// The pseudo-header's sum (RFC 8200 8.1) as little-endian words, the way
/// `sum_message` sums the message.
#[inline(always)]
fn pseudo_sum(src: &Addr6, dst: &Addr6, next: u8, len: usize) -> u64 {
    let mut sum = ((next as u64) << 8) + (len as u16).swap_bytes() as u64;
    for i in 0..4 {
        sum += src.0[i] as u64 + dst.0[i] as u64;
    }
    sum
}

fn unreachable6(ctx: &XdpContext, pkt: &Packet, code: u8, from: &Addr6, to: &Addr6) -> u32 {
    let l2 = pkt.l2_len();
    let quoted = if pkt.total_len() < MAX_QUOTE {
        pkt.total_len()
    } else {
        MAX_QUOTE
    };
    let grow = IPV6_HLEN + ICMP6_HLEN;
    // SAFETY: plain helper call on our context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(grow as i32)) } != 0 {
        return xdp_action::XDP_DROP;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    // New layout: [L2][IPv6][ICMPv6][the offending packet, cut at
    // MAX_QUOTE]; the offending packet already sits where the quote goes.
    if !write_l2(start, end, l2, grow) {
        return xdp_action::XDP_DROP;
    }
    let message = ICMP6_HLEN + quoted;
    if !write_ipv6(start, end, l2, 0, message as u16, IPPROTO_ICMPV6, from, to) {
        return xdp_action::XDP_DROP;
    }
    let icmp = l2 + IPV6_HLEN;
    if !store(
        start,
        end,
        icmp,
        [ICMP6_DEST_UNREACHABLE, code, 0, 0, 0, 0, 0, 0],
    ) {
        return xdp_action::XDP_DROP;
    }
    if !set_len(ctx, icmp + message) {
        return xdp_action::XDP_DROP;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    let sum =
        pseudo_sum(from, to, IPPROTO_ICMPV6, message) + sum_message(start, end, icmp, message);
    // Summed as little-endian words: stored the same way round.
    if !store(start, end, icmp + 2, (!fold(sum)).to_ne_bytes()) {
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_TX
}

fn tcp_reset6(ctx: &XdpContext, pkt: &Packet, src: &Addr6, dst: &Addr6) -> u32 {
    let Some(rst) = rst_of(pkt, ctx.data(), ctx.data_end()) else {
        return xdp_action::XDP_DROP;
    };
    let l2 = pkt.l2_len();
    if !set_len(ctx, l2 + IPV6_HLEN + TCP_HLEN) {
        return xdp_action::XDP_DROP;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    if !write_l2(start, end, l2, 0) {
        return xdp_action::XDP_DROP;
    }
    if !write_rst(start, end, l2, pkt, &rst, src, dst) {
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_TX
}

/// The sequence numbers and flags of the RST answering a TCP segment.
struct Rst {
    seq: u32,
    ack: u32,
    flags: u8,
}

/// RFC 793 reset generation, as nf_send_reset6() does it, from the
/// offending segment at `(start, end)`; `None` when there is none to send
/// (not a whole TCP header, or a RST itself).
#[inline(always)]
fn rst_of(pkt: &Packet, start: usize, end: usize) -> Option<Rst> {
    if pkt.keys.protocol != IPPROTO_TCP || !pkt.l4_complete {
        return None;
    }
    let (tcp, l4_len) = <V6 as crate::conntrack::Family>::l4(pkt);
    let seq = load::<u32>(start, end, tcp + 4)?;
    let ack_seq = load::<u32>(start, end, tcp + 8)?;
    let doff = load::<u8>(start, end, tcp + 12)?;
    let flags = load::<u8>(start, end, tcp + 13)?;
    if flags & TCP_FLAG_RST != 0 {
        return None;
    }
    let payload = l4_len.saturating_sub(((doff >> 4) as usize) * 4) as u32;
    Some(if flags & TCP_FLAG_ACK != 0 {
        Rst {
            seq: u32::from_be(ack_seq),
            ack: 0,
            flags: TCP_FLAG_RST,
        }
    } else {
        let mut ack = u32::from_be(seq).wrapping_add(payload);
        if flags & TCP_FLAG_SYN != 0 {
            ack = ack.wrapping_add(1);
        }
        if flags & TCP_FLAG_FIN != 0 {
            ack = ack.wrapping_add(1);
        }
        Rst {
            seq: 0,
            ack,
            flags: TCP_FLAG_RST | TCP_FLAG_ACK,
        }
    })
}

/// Writes the IPv6 header and the RST at `l2`, from the offending
/// segment's destination `dst` back to its source `src`.
#[inline(always)]
fn write_rst(
    start: usize,
    end: usize,
    l2: usize,
    pkt: &Packet,
    rst: &Rst,
    src: &Addr6,
    dst: &Addr6,
) -> bool {
    // nf_send_reset6(): the offending packet's traffic class without ECN.
    let tclass = pkt.keys.tos & !3;
    if !write_ipv6(
        start,
        end,
        l2,
        tclass,
        TCP_HLEN as u16,
        IPPROTO_TCP,
        dst,
        src,
    ) {
        return false;
    }
    let mut hdr = [0u8; TCP_HLEN];
    hdr[0..2].copy_from_slice(&(pkt.keys.l4b as u16).to_be_bytes());
    hdr[2..4].copy_from_slice(&(pkt.keys.l4a as u16).to_be_bytes());
    hdr[4..8].copy_from_slice(&rst.seq.to_be_bytes());
    hdr[8..12].copy_from_slice(&rst.ack.to_be_bytes());
    hdr[12] = 5 << 4;
    hdr[13] = rst.flags;
    // Little-endian words, as the pseudo-header's.
    let mut sum = pseudo_sum(dst, src, IPPROTO_TCP, TCP_HLEN);
    let mut i = 0;
    while i < TCP_HLEN {
        sum += u16::from_le_bytes([hdr[i], hdr[i + 1]]) as u64;
        i += 2;
    }
    hdr[16..18].copy_from_slice(&(!fold(sum)).to_le_bytes());
    store(start, end, l2 + IPV6_HLEN, hdr)
}

// ------------------------------------------------------------ OUTPUT

/// REJECT in OUTPUT (ip6tables' OUTPUT chain at TC egress): the host's own
/// packet is turned into the answer ip6tables would give it — an ICMPv6
/// destination unreachable or a TCP RST — to be handed back to the host's
/// stack (`reject_local::deliver`), so the sender sees the error at once.
/// As the kernel's, the ICMPv6 error goes from the host's address to
/// itself (the route back to the sender is the loopback's: measured with
/// ip6tables, `fd00:77::1 > fd00:77::1`), the RST from the address the
/// packet was sent to. False when there is no answer to send (the packet
/// is then dropped silently, as ip6tables does). Out of line: its own
/// frame.
#[inline(never)]
pub fn build_local_reply6(ctx: &TcContext, pkt: &Packet, with: u32) -> bool {
    let (src, dst) = addresses(pkt);
    // As `reject6`: never a later fragment, a multicast destination, an
    // unspecified or multicast source; and, as IPv4's OUTPUT REJECT, not
    // a VLAN-tagged frame.
    if pkt.l3 != ETH_HLEN
        || pkt.fragment
        || pkt.keys.dst & 0xff == 0xff
        || pkt.keys.src & 0xff == 0xff
        || src == Addr6::default()
    {
        return false;
    }
    if pkt.keys.protocol == IPPROTO_ICMPV6
        && (!pkt.l4_complete || pkt.keys.l4a < 128 || pkt.keys.l4a == ICMP6_REDIRECT)
    {
        return false;
    }
    // No checksum check: the host's own packets carry checksums their
    // device has yet to finish (the kernel trusts those too).
    if with == reject::TCP_RESET {
        let Some(rst) = rst_of(pkt, ctx.data(), ctx.data_end()) else {
            return false;
        };
        local_rst6(ctx, pkt, &rst, &src, &dst)
    } else {
        local_unreachable6(ctx, pkt, icmp6_code(with), &src)
    }
}

/// The ICMPv6 code of a REJECT answer (`reject::ICMP6_*`).
#[inline(always)]
fn icmp6_code(with: u32) -> u8 {
    let index = with.wrapping_sub(reject::ICMP6_FIRST) as usize;
    match reject::ICMP6_CODES.get(index) {
        Some(code) => *code,
        // An IPv4 code in an IPv6 rule (the parser never makes one): the
        // default answer.
        None => reject::ICMP6_CODES[3],
    }
}

/// Makes the first `len` bytes of the frame linear and writable, and gives
/// them as `(start, end)`.
#[inline(always)]
fn pulled(ctx: &TcContext, len: usize) -> Option<(usize, usize)> {
    ctx.pull_data(len as u32).ok()?;
    Some((ctx.data(), ctx.data_end()))
}

fn local_rst6(ctx: &TcContext, pkt: &Packet, rst: &Rst, src: &Addr6, dst: &Addr6) -> bool {
    let len = ETH_HLEN + IPV6_HLEN + TCP_HLEN;
    // SAFETY: helper call on our skb.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, len as u32, 0) } != 0 {
        return false;
    }
    let Some((start, end)) = pulled(ctx, len) else {
        return false;
    };
    write_l2(start, end, ETH_HLEN, 0) && write_rst(start, end, ETH_HLEN, pkt, rst, src, dst)
}

fn local_unreachable6(ctx: &TcContext, pkt: &Packet, code: u8, to: &Addr6) -> bool {
    let quoted = if pkt.total_len() < MAX_QUOTE {
        pkt.total_len()
    } else {
        MAX_QUOTE
    };
    let grow = IPV6_HLEN + ICMP6_HLEN;
    let message = ICMP6_HLEN + quoted;
    let len = ETH_HLEN + IPV6_HLEN + message;
    // SAFETY: helper calls on our skb. The offending packet then sits
    // right where the quote goes: [eth][new IPv6][ICMPv6][old IPv6...].
    unsafe {
        if bpf_skb_change_head(ctx.skb.skb, grow as u32, 0) != 0 {
            return false;
        }
        if bpf_skb_change_tail(ctx.skb.skb, len as u32, 0) != 0 {
            return false;
        }
    }
    let Some((start, end)) = pulled(ctx, len) else {
        return false;
    };
    if !write_l2(start, end, ETH_HLEN, grow)
        || !write_ipv6(
            start,
            end,
            ETH_HLEN,
            0,
            message as u16,
            IPPROTO_ICMPV6,
            to,
            to,
        )
    {
        return false;
    }
    let icmp = ETH_HLEN + IPV6_HLEN;
    if !store(
        start,
        end,
        icmp,
        [ICMP6_DEST_UNREACHABLE, code, 0, 0, 0, 0, 0, 0],
    ) {
        return false;
    }
    let sum = pseudo_sum(to, to, IPPROTO_ICMPV6, message) + sum_message(start, end, icmp, message);
    // Summed as little-endian words: stored the same way round.
    store(start, end, icmp + 2, (!fold(sum)).to_ne_bytes())
}

/// The classifier keys of the answer `build_local_reply6` made, written
/// over the packet's own (`pkt` is the per-CPU packet slot, whose address
/// words the classifier reads): ip6tables sends that answer from the host,
/// so it crosses OUTPUT itself, leaving by `lo` with no connection of its
/// own (INVALID); a chain that rejects everything swallows its own answers
/// and the sender sees a timeout, as with ip6tables. Returns the answer's
/// length for the counters.
#[inline(always)]
pub fn local_reply_keys6(ctx: &TcContext, pkt: &mut Packet, with: u32) -> u64 {
    let length = (ctx.len() as u64).saturating_sub(ETH_HLEN as u64);
    let k = &mut pkt.keys;
    let w = &mut pkt.addr6;
    if with == reject::TCP_RESET {
        // From the destination back to the source.
        let (src, dst) = (k.src, k.dst);
        k.src = dst;
        k.dst = src;
        let (sport, dport) = (k.l4a, k.l4b);
        k.l4a = dport;
        k.l4b = sport;
        k.protocol = IPPROTO_TCP;
        k.tcp_flags = match ctx.load::<u8>(ETH_HLEN + IPV6_HLEN + 13) {
            Ok(flags) => flags as u16,
            Err(_) => TCP_FLAGS_NONE as u16,
        };
        *w = [w[1], w[0], w[3], w[2], w[5], w[4]];
        k.tos &= !3;
    } else {
        // From the source to itself.
        k.dst = k.src;
        *w = [w[0], w[0], w[2], w[2], w[4], w[4]];
        k.protocol = IPPROTO_ICMPV6;
        k.l4a = ICMP6_DEST_UNREACHABLE as u32;
        k.l4b = icmp6_code(with) as u32;
        k.tcp_flags = TCP_FLAGS_NONE as u16;
        k.tos = 0;
    }
    k.ttl = REPLY_HOP_LIMIT;
    k.length = length as u16;
    k.in_ifindex = 0;
    k.out_ifindex = LOOPBACK_IFINDEX;
    k.mac = 0;
    k.eth_dst = 0;
    k.ct_state = ct_state::INVALID;
    length
}
