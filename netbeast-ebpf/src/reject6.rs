//! REJECT for IPv6 (ip6tables' REJECT): the reply is built in place over
//! the offending frame, as `reject.rs` does for IPv4, and leaves the way
//! IPv4 replies do (`XDP_TX`, or the TC hand-off into bare veths): an
//! ICMPv6 destination unreachable quoting as much of the packet as fits in
//! the minimum MTU (RFC 4443 2.4 (c)), or a TCP RST.

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, xdp_action},
    helpers::generated::{bpf_fib_lookup, bpf_xdp_adjust_head},
    programs::XdpContext,
};
use netbeast_common::{Addr6, reject, stats};

use crate::{
    conntrack::{V6, checksum_ok6, sum_message},
    csum::fold,
    parse::{IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Packet, TCP_HLEN, load, store},
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
    // unspecified or multicast source.
    if pkt.fragment
        || pkt.keys.dst & 0xff == 0xff
        || pkt.keys.src & 0xff == 0xff
        || src == Addr6::default()
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
        tcp_reset6(ctx, pkt, &src, &dst)
    } else {
        let index = with.wrapping_sub(reject::ICMP6_FIRST) as usize;
        let code = match reject::ICMP6_CODES.get(index) {
            Some(code) => *code,
            // An IPv4 code in an IPv6 rule (the parser never makes one):
            // the default answer.
            None => reject::ICMP6_CODES[3],
        };
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
    // SAFETY: plain-old-data struct of integers; all-zero is valid.
    let mut params: aya_ebpf::bindings::bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.family = AF_INET6;
    params.ifindex = in_ifindex;
    params.__bindgen_anon_4.ipv6_dst = to.0;
    // SAFETY: params is a valid, writable bpf_fib_lookup on the stack.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            &mut params,
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
    if pkt.keys.protocol != IPPROTO_TCP || !pkt.l4_complete {
        return xdp_action::XDP_DROP;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    let (tcp, l4_len) = <V6 as crate::conntrack::Family>::l4(pkt);
    let Some(seq) = load::<u32>(start, end, tcp + 4) else {
        return xdp_action::XDP_DROP;
    };
    let Some(ack_seq) = load::<u32>(start, end, tcp + 8) else {
        return xdp_action::XDP_DROP;
    };
    let Some(doff) = load::<u8>(start, end, tcp + 12) else {
        return xdp_action::XDP_DROP;
    };
    let Some(flags) = load::<u8>(start, end, tcp + 13) else {
        return xdp_action::XDP_DROP;
    };
    if flags & TCP_FLAG_RST != 0 {
        return xdp_action::XDP_DROP;
    }
    let payload = l4_len.saturating_sub(((doff >> 4) as usize) * 4) as u32;
    // RFC 793 reset generation, as nf_send_reset6() does it.
    let (rst_seq, rst_ack, rst_flags) = if flags & TCP_FLAG_ACK != 0 {
        (u32::from_be(ack_seq), 0u32, TCP_FLAG_RST)
    } else {
        let mut ack = u32::from_be(seq).wrapping_add(payload);
        if flags & TCP_FLAG_SYN != 0 {
            ack = ack.wrapping_add(1);
        }
        if flags & TCP_FLAG_FIN != 0 {
            ack = ack.wrapping_add(1);
        }
        (0u32, ack, TCP_FLAG_RST | TCP_FLAG_ACK)
    };
    let l2 = pkt.l2_len();
    if !set_len(ctx, l2 + IPV6_HLEN + TCP_HLEN) {
        return xdp_action::XDP_DROP;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    if !write_l2(start, end, l2, 0) {
        return xdp_action::XDP_DROP;
    }
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
        return xdp_action::XDP_DROP;
    }
    let mut hdr = [0u8; TCP_HLEN];
    hdr[0..2].copy_from_slice(&(pkt.keys.l4b as u16).to_be_bytes());
    hdr[2..4].copy_from_slice(&(pkt.keys.l4a as u16).to_be_bytes());
    hdr[4..8].copy_from_slice(&rst_seq.to_be_bytes());
    hdr[8..12].copy_from_slice(&rst_ack.to_be_bytes());
    hdr[12] = 5 << 4;
    hdr[13] = rst_flags;
    // Little-endian words, as the pseudo-header's.
    let mut sum = pseudo_sum(dst, src, IPPROTO_TCP, TCP_HLEN);
    let mut i = 0;
    while i < TCP_HLEN {
        sum += u16::from_le_bytes([hdr[i], hdr[i + 1]]) as u64;
        i += 2;
    }
    hdr[16..18].copy_from_slice(&(!fold(sum)).to_le_bytes());
    if !store(start, end, l2 + IPV6_HLEN, hdr) {
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_TX
}
