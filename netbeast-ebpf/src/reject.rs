//! REJECT: the reply is built in place over the offending frame and sent back
//! out of the interface it came from (XDP_TX), as iptables' REJECT target
//! would send it: an ICMP destination-unreachable quoting the packet, or a
//! TCP RST.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use netbeast_common::{addr_type, reject, stats};

use crate::{
    classify::addr_type_of,
    conntrack::checksum_ok,
    csum::{fold, sum_bytes},
    parse::{
        ICMP_HLEN, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Packet, TCP_HLEN, load, opaque, store,
    },
    stats::bump,
};

/// Longest L2 header we parse: Ethernet plus two VLAN tags.
pub(crate) const MAX_L2: usize = 22;
const IP_HLEN: usize = 20;
/// Bytes of the offending packet's payload quoted after its IP header
/// (RFC 792's minimum).
const QUOTED_PAYLOAD: usize = 8;
/// TTL of generated replies (Linux's default ip_default_ttl).
const REPLY_TTL: u8 = 64;
const IP_OPTION_NOP: u8 = 1;
/// The ICMP type of every answer but a reset.
const ICMP_DEST_UNREACH: u32 = 3;
const TCP_FLAG_FIN: u8 = 0x01;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_RST: u8 = 0x04;
const TCP_FLAG_ACK: u8 = 0x10;

#[inline(always)]
fn is_special(addr_be: u32) -> bool {
    let a = u32::from_be(addr_be);
    a == 0 || a >> 28 == 0xe || a == u32::MAX
}

/// A destination the kernel's REJECT never answers (RFC 1122 3.2.2): the
/// route it takes is a broadcast or a multicast one (`RTCF_BROADCAST`,
/// `RTCF_MULTICAST`) — 0.0.0.0/8, 255.255.255.255, 224.0.0.0/4, and the
/// broadcast addresses of this host's subnets (the local table's
/// `broadcast` routes, which `-m addrtype` reads too).
#[inline(always)]
pub fn group_destination(dst_be: u32) -> bool {
    matches!(
        addr_type_of(dst_be),
        addr_type::BROADCAST | addr_type::MULTICAST
    )
}

/// The ICMP types Linux's icmp_send() will not answer: the ones its
/// `icmp_pointers` table marks as errors (destination unreachable, source
/// quench, redirect, time exceeded, parameter problem, and the types it
/// discards: 1, 2, 6, 7, 9, 10), one bit per type.
const ICMP_ERROR_TYPES: u32 = (1 << 1)
    | (1 << 2)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 6)
    | (1 << 7)
    | (1 << 9)
    | (1 << 10)
    | (1 << 11)
    | (1 << 12);
/// The last ICMP type Linux knows (NR_ICMP_TYPES); icmp_send() takes any
/// type above it for an error.
const LAST_ICMP_TYPE: u32 = 18;

/// True when icmp_send() stays silent about an ICMP message of `icmp_type`.
#[inline(always)]
pub fn icmp_send_refuses(icmp_type: u32) -> bool {
    icmp_type > LAST_ICMP_TYPE || (ICMP_ERROR_TYPES >> icmp_type) & 1 != 0
}

pub fn icmp_code(with: u32) -> u8 {
    match with {
        reject::ICMP_NET_UNREACHABLE => 0,
        reject::ICMP_HOST_UNREACHABLE => 1,
        reject::ICMP_PROTO_UNREACHABLE => 2,
        reject::ICMP_NET_PROHIBITED => 9,
        reject::ICMP_HOST_PROHIBITED => 10,
        reject::ICMP_ADMIN_PROHIBITED => 13,
        _ => 3,
    }
}

fn silent() -> u32 {
    bump(stats::REJECT_SILENT);
    xdp_action::XDP_DROP
}

/// Turns the frame into the reply and returns the XDP action. Kept out of
/// line: a BPF subprogram has its own stack frame, so the verifier never
/// mixes the classifier's spilled pointers with the reply's scalars.
#[inline(never)]
/// `local`: the packet is for this host (INPUT), whose datagrams the
/// kernel reassembles before REJECT sees them.
pub fn reject(ctx: &XdpContext, pkt: &Packet, with: u32, reply_src: u32, local: bool) -> u32 {
    // Like the kernel's icmp_send() and nf_send_reset(): never answer
    // fragments, broadcasts or multicasts (sources included: a reply to
    // them would reach many).
    if pkt.fragment
        || group_destination(pkt.keys.dst)
        || is_special(pkt.keys.src)
        || pkt.l2_len() > MAX_L2
        || pkt.ip_header_len() < IP_HLEN
    {
        return silent();
    }
    // nf_send_unreach() and nf_send_reset() verify the offending packet's
    // TCP, UDP or ICMP checksum first: no answer to a corrupt packet, nor,
    // across the host, to a first fragment (its checksum covers the whole
    // datagram, which INPUT sees reassembled).
    if matches!(pkt.keys.protocol, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP)
        && !checksum_ok(pkt, ctx.data(), ctx.data_end(), local)
    {
        return silent();
    }
    let action = if with == reject::TCP_RESET {
        // A reset is no ICMP error: nf_send_reset() sends it unlimited.
        tcp_reset(ctx, pkt)
    } else if !icmp_answers(ctx, pkt) {
        xdp_action::XDP_DROP
    } else if !crate::icmp_limit::allow(pkt.keys.src, ICMP_DEST_UNREACH, true) {
        // The namespace's ICMP rate limits, as icmp_send() applies them
        // after the checks above.
        bump(stats::REJECT_RATE_LIMITED);
        return xdp_action::XDP_DROP;
    } else {
        icmp_unreachable(ctx, pkt, icmp_code(with), reply_src)
    };
    if action == xdp_action::XDP_TX {
        bump(stats::REJECTED);
    } else {
        bump(stats::REJECT_SILENT);
    }
    action
}

/// Writes the reply's Ethernet (+VLAN) header at the frame start from the
/// original one found `from` bytes further on, swapping the MAC addresses.
#[inline(always)]
pub(crate) fn write_l2(start: usize, end: usize, l2: usize, from: usize) -> bool {
    let end = opaque(end);
    let (Some(dst), Some(src)) = (
        load::<[u8; 6]>(start, end, from),
        load::<[u8; 6]>(start, end, from + 6),
    ) else {
        return false;
    };
    // Ethertype and VLAN tags, copied backwards so an overlapping move is
    // safe whichever way it goes.
    let mut i = MAX_L2;
    while i > 12 {
        i -= 1;
        if i < l2 {
            let Some(b) = load::<u8>(start, end, from + i) else {
                return false;
            };
            if !store(start, end, i, b) {
                return false;
            }
        }
    }
    store(start, end, 0, src) && store(start, end, 6, dst)
}

/// Writes an IPv4 header of `header_len` bytes at `l2`: 20 bytes of fields,
/// then NOP options up to `header_len` (how a TCP reset keeps the offending
/// packet's header length without echoing its options).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_ipv4(
    start: usize,
    end: usize,
    l2: usize,
    header_len: usize,
    tos: u8,
    total: u16,
    df: bool,
    proto: u8,
    src: u32,
    dst: u32,
) -> bool {
    let options = header_len.saturating_sub(IP_HLEN) & 0x3c;
    let mut i = 0;
    while i < 40 {
        if i < options && !store(start, end, l2 + IP_HLEN + i, IP_OPTION_NOP) {
            return false;
        }
        i += 1;
    }
    let mut hdr = [0u8; IP_HLEN];
    hdr[0] = 0x40 | ((IP_HLEN + options) / 4) as u8;
    hdr[1] = tos;
    hdr[2..4].copy_from_slice(&total.to_be_bytes());
    if df {
        hdr[6] = 0x40;
    }
    hdr[8] = REPLY_TTL;
    hdr[9] = proto;
    hdr[12..16].copy_from_slice(&src.to_ne_bytes());
    hdr[16..20].copy_from_slice(&dst.to_ne_bytes());
    // Each 16-bit word of NOP options is 0x0101.
    let mut sum: u64 = 0x0101 * (options as u64 / 2);
    let mut i = 0;
    while i < IP_HLEN {
        sum += u16::from_be_bytes([hdr[i], hdr[i + 1]]) as u64;
        i += 2;
    }
    let check = !fold(sum);
    hdr[10..12].copy_from_slice(&check.to_be_bytes());
    store(start, end, l2, hdr)
}

/// Moves the frame end so the frame is `len` bytes long.
#[inline(always)]
pub(crate) fn set_len(ctx: &XdpContext, len: usize) -> bool {
    let cur = ctx.data_end() - ctx.data();
    if cur == len {
        return true;
    }
    // SAFETY: plain helper call on our context.
    unsafe { bpf_xdp_adjust_tail(ctx.ctx, len as i32 - cur as i32) == 0 }
}

/// Whether icmp_send() answers the frame at all (checked before its rate
/// limits): never a link-level broadcast or multicast frame, nor an ICMP
/// error.
#[inline(always)]
fn icmp_answers(ctx: &XdpContext, pkt: &Packet) -> bool {
    // (A 6-byte load: the verifier cannot bound a 1-byte load at offset 0
    // from the `p >= end` test LLVM turns its check into.)
    match load::<[u8; 6]>(ctx.data(), ctx.data_end(), 0) {
        Some(dst_mac) if dst_mac[0] & 1 == 0 => {}
        _ => return false,
    }
    // Never answer an ICMP error with another one (RFC 1122 3.2.2): two
    // hosts would bounce errors forever.
    !(pkt.keys.protocol == IPPROTO_ICMP && (!pkt.l4_complete || icmp_send_refuses(pkt.keys.l4a)))
}

/// The ICMP error, once `icmp_answers` and the rate limits let it go.
fn icmp_unreachable(ctx: &XdpContext, pkt: &Packet, code: u8, reply_src: u32) -> u32 {
    let l2 = pkt.l2_len();
    let quoted = {
        let q = pkt.ip_header_len() + QUOTED_PAYLOAD;
        if pkt.total_len() < q {
            pkt.total_len()
        } else {
            q
        }
    };
    let grow = IP_HLEN + ICMP_HLEN;
    // SAFETY: plain helper call on our context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(grow as i32)) } != 0 {
        return xdp_action::XDP_DROP;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    // New layout: [L2][IP][ICMP][quoted original IP header + 8 bytes]; the
    // original IP header already sits right where the quote goes.
    if !write_l2(start, end, l2, grow) {
        return xdp_action::XDP_DROP;
    }
    let total = (IP_HLEN + ICMP_HLEN + quoted) as u16;
    // icmp_send(): precedence "internet control", original TOS bits kept.
    let tos = (pkt.keys.tos & 0x1e) | 0xc0;
    if !write_ipv4(
        start,
        end,
        l2,
        IP_HLEN,
        tos,
        total,
        false,
        IPPROTO_ICMP,
        reply_src,
        pkt.keys.src,
    ) {
        return xdp_action::XDP_DROP;
    }
    let icmp = l2 + IP_HLEN;
    if !store(start, end, icmp, [3u8, code, 0, 0, 0, 0, 0, 0]) {
        return xdp_action::XDP_DROP;
    }
    if !set_len(ctx, l2 + IP_HLEN + ICMP_HLEN + quoted) {
        return xdp_action::XDP_DROP;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    let sum =
        sum_bytes::<{ ICMP_HLEN + 60 + QUOTED_PAYLOAD }>(start + icmp, ICMP_HLEN + quoted, end);
    if !store(start, end, icmp + 2, (!fold(sum)).to_be_bytes()) {
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_TX
}

fn tcp_reset(ctx: &XdpContext, pkt: &Packet) -> u32 {
    if pkt.keys.protocol != IPPROTO_TCP || !pkt.l4_complete {
        return xdp_action::XDP_DROP;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    let tcp = pkt.l2_len() + pkt.ip_header_len();
    // One read per field, each checked on its own: several `Option`s
    // destructured together let LLVM mix their payloads with pointers.
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
    let tcp_len = ((doff >> 4) as usize) * 4;
    let payload = pkt
        .total_len()
        .saturating_sub(pkt.ip_header_len() + tcp_len) as u32;
    // RFC 793 reset generation, as nf_send_reset() does it.
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
    // The TCP header stays where it is: the reply keeps the offending
    // packet's IP header length, its options turned into NOPs.
    let ip_len = pkt.ip_header_len();
    if !set_len(ctx, l2 + ip_len + TCP_HLEN) {
        return xdp_action::XDP_DROP;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    if !write_l2(start, end, l2, 0) {
        return xdp_action::XDP_DROP;
    }
    let total = (ip_len + TCP_HLEN) as u16;
    if !write_ipv4(
        start,
        end,
        l2,
        ip_len,
        0,
        total,
        true,
        IPPROTO_TCP,
        pkt.keys.dst,
        pkt.keys.src,
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
    // Pseudo-header: addresses, protocol, TCP length.
    let mut sum: u64 = (u32::from_be(pkt.keys.src) >> 16) as u64
        + (u32::from_be(pkt.keys.src) & 0xffff) as u64
        + (u32::from_be(pkt.keys.dst) >> 16) as u64
        + (u32::from_be(pkt.keys.dst) & 0xffff) as u64
        + IPPROTO_TCP as u64
        + TCP_HLEN as u64;
    let mut i = 0;
    while i < TCP_HLEN {
        sum += u16::from_be_bytes([hdr[i], hdr[i + 1]]) as u64;
        i += 2;
    }
    hdr[16..18].copy_from_slice(&(!fold(sum)).to_be_bytes());
    if !store(start, end, l2 + ip_len, hdr) {
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_TX
}
