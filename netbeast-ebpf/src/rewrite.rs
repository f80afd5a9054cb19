//! The header bytes a mangle chain's `-j TTL` / `-j HL` / `-j TOS` /
//! `-j DSCP` rules changed, written into the packet once the chain is
//! decided (the search changed only its copies, `SearchState::ttl` and
//! `tos`), as xt_TTL, xt_HL, xt_TOS and xt_DSCP write them: the bytes,
//! and for IPv4 the header checksum updated incrementally (RFC 1624, the
//! kernel's `csum_replace2`); the IPv6 header has no checksum.
//!
//! Direct packet access through a pointer each global function derives
//! from its own context, never a helper that changes packet data
//! (`bpf_xdp_store_bytes` / `bpf_skb_store_bytes`): those made the
//! verifier drop every packet pointer the pipeline held (the first try of
//! TTL, docs/ARCHITECTURE.md). Global functions, verified once rather than
//! at each mangle chain's call site.

use aya_ebpf::{
    bindings::{__sk_buff, xdp_md},
    programs::XdpContext,
};

use crate::{
    classify::{REWRITE_TOS, REWRITE_TTL},
    csum::replace,
    parse::Packet,
};

/// [`word`]'s bits above the TTL and TOS bytes.
const WRITE_TTL: u32 = 1 << 16;
const WRITE_TOS: u32 = 1 << 17;
const IPV6: u32 = 1 << 18;

/// The word the global functions take: the TTL byte (bits 0..8), the TOS
/// byte (8..16), which of them to write, the family. 0: nothing to write
/// (the rules left both as they were).
#[inline(always)]
fn word(pkt: &mut Packet, forwarded: bool, ipv6: bool) -> u32 {
    let (ttl, tos) = (pkt.search.ttl as u8, pkt.search.tos as u8);
    let mut w = 0;
    if pkt.search.rewrite & REWRITE_TTL != 0 && ttl != pkt.keys.ttl {
        pkt.keys.ttl = ttl;
        // A forwarded packet's chains after the routing decision see its
        // TTL one lower than the frame's until the way out lowers it:
        // the frame keeps one more (255 at most) for the kernel's
        // ip_forward to lower; the fast path writes `Keys::ttl` itself.
        let byte = if forwarded {
            ttl.saturating_add(1)
        } else {
            ttl
        };
        w |= byte as u32 | WRITE_TTL;
    }
    if pkt.search.rewrite & REWRITE_TOS != 0 && tos != pkt.keys.tos {
        pkt.keys.tos = tos;
        w |= (tos as u32) << 8 | WRITE_TOS;
    }
    if w != 0 && ipv6 {
        w |= IPV6;
    }
    w
}

/// After a mangle chain whose search changed the TTL (hop limit) or the
/// TOS byte (traffic class): the chains after it read the new values
/// (`-m ttl`, `-m hl`, `-m tos`, `-m dscp`, the routing) and the frame
/// gets them. `forwarded`: the chain runs after the routing decision of a
/// forwarded packet (mangle FORWARD, POSTROUTING at XDP).
#[inline(always)]
pub fn after_chain_xdp(ctx: &XdpContext, pkt: &mut Packet, forwarded: bool, ipv6: bool) {
    if pkt.search.rewrite == 0 {
        return;
    }
    let w = word(pkt, forwarded, ipv6);
    if w != 0 {
        netbeast_rewrite_xdp(ctx.ctx, pkt.l2_len() as u32, w);
    }
}

/// [`after_chain_xdp`] for the host's packets at TC egress (OUTPUT,
/// POSTROUTING): the frame leaves with the values themselves.
#[inline(always)]
pub fn after_chain_tc(skb: *mut __sk_buff, pkt: &mut Packet, ipv6: bool) {
    if pkt.search.rewrite == 0 {
        return;
    }
    let w = word(pkt, false, ipv6);
    if w != 0 {
        netbeast_rewrite_tc(skb, pkt.l2_len() as u32, w);
    }
}

/// Writes [`word`] into the XDP frame whose IP header starts at `l3`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_rewrite_xdp(ctx: *mut xdp_md, l3: u32, word: u32) -> u32 {
    if ctx.is_null() {
        return 0;
    }
    let ctx = XdpContext::new(ctx);
    rewrite(ctx.data(), ctx.data_end(), l3, word)
}

/// [`netbeast_rewrite_xdp`] for a TC packet (its headers already pulled
/// into the linear area by the egress parser).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_rewrite_tc(skb: *mut __sk_buff, l3: u32, word: u32) -> u32 {
    if skb.is_null() {
        return 0;
    }
    // SAFETY: the context's data pointers, read as the verifier allows.
    let (start, end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    rewrite(start, end, l3, word)
}

/// The write itself: 1 when done, 0 when the header is not in the frame's
/// linear bytes (never for a packet the parser read).
#[inline(always)]
fn rewrite(start: usize, end: usize, l3: u32, word: u32) -> u32 {
    // The link header's length (Ethernet, one or two VLAN tags), bounded
    // for the verifier as `Packet::l2_len` is.
    let ip = start + (l3 & 0x1f) as usize;
    let (ttl, tos) = (word as u8, (word >> 8) as u8);
    if word & IPV6 != 0 {
        if ip + 8 > end {
            return 0;
        }
        // SAFETY: the 8 bytes at `ip` are in the frame (checked above).
        unsafe {
            let p = ip as *mut u8;
            if word & WRITE_TTL != 0 {
                *p.add(7) = ttl;
            }
            if word & WRITE_TOS != 0 {
                // The traffic class: the low 4 bits of byte 0 (after the
                // version), the high 4 of byte 1 (before the flow label).
                *p = (*p & 0xf0) | tos >> 4;
                *p.add(1) = (*p.add(1) & 0x0f) | tos << 4;
            }
        }
        return 1;
    }
    if ip + 12 > end {
        return 0;
    }
    // SAFETY: the 12 bytes at `ip` are in the frame (checked above).
    unsafe {
        let p = ip as *mut u8;
        let mut check = u16::from_be_bytes([*p.add(10), *p.add(11)]);
        if word & WRITE_TTL != 0 {
            // The TTL is the high byte of the header's fifth 16-bit word
            // (the protocol its low byte).
            let old = u16::from_be_bytes([*p.add(8), *p.add(9)]);
            check = replace(check, old, u16::from_be_bytes([ttl, *p.add(9)]));
            *p.add(8) = ttl;
        }
        if word & WRITE_TOS != 0 {
            // The TOS is the low byte of the first word (version, IHL).
            let old = u16::from_be_bytes([*p, *p.add(1)]);
            check = replace(check, old, u16::from_be_bytes([*p, tos]));
            *p.add(1) = tos;
        }
        let check = check.to_be_bytes();
        *p.add(10) = check[0];
        *p.add(11) = check[1];
    }
    1
}
