//! The header bytes a mangle chain's `-j TTL` / `-j HL` rules changed,
//! written into the packet once the chain is decided (the search changed
//! only its copy, `SearchState::ttl`), as xt_TTL and xt_HL write them: the
//! byte, and for IPv4 the header checksum updated incrementally (RFC 1624,
//! the kernel's `csum_replace2`); the IPv6 header has no checksum.
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

use crate::parse::Packet;

/// [`word`]'s bits above the TTL byte.
const WRITE_TTL: u32 = 1 << 16;
const IPV6: u32 = 1 << 17;

/// The word the global functions take: the byte to write, what to write,
/// the family.
#[inline(always)]
fn word(ttl: u8, ipv6: bool) -> u32 {
    ttl as u32 | WRITE_TTL | if ipv6 { IPV6 } else { 0 }
}

/// After a mangle chain whose search changed the TTL (hop limit): the
/// chains after it read the new value (`-m ttl`, `-m hl`) and the frame
/// gets it. `forwarded`: the chain runs after the routing decision of a
/// forwarded packet (mangle FORWARD, POSTROUTING at XDP), whose TTL the
/// chains see one lower than the frame's until the way out lowers it (the
/// fast path's rewrite, or the kernel's ip_forward): the frame keeps one
/// more, so that it leaves with the value the rules gave (255 at most).
#[inline(always)]
pub fn after_chain_xdp(ctx: &XdpContext, pkt: &mut Packet, forwarded: bool, ipv6: bool) {
    let ttl = pkt.search.ttl as u8;
    if pkt.search.rewrite == 0 || ttl == pkt.keys.ttl {
        return;
    }
    pkt.keys.ttl = ttl;
    let byte = if forwarded {
        ttl.saturating_add(1)
    } else {
        ttl
    };
    netbeast_rewrite_xdp(ctx.ctx, pkt.l2_len() as u32, word(byte, ipv6));
}

/// [`after_chain_xdp`] for the host's packets at TC egress (OUTPUT,
/// POSTROUTING): the frame leaves with the value itself.
#[inline(always)]
pub fn after_chain_tc(skb: *mut __sk_buff, pkt: &mut Packet, ipv6: bool) {
    let ttl = pkt.search.ttl as u8;
    if pkt.search.rewrite == 0 || ttl == pkt.keys.ttl {
        return;
    }
    pkt.keys.ttl = ttl;
    netbeast_rewrite_tc(skb, pkt.l2_len() as u32, word(ttl, ipv6));
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
    let ttl = word as u8;
    if word & IPV6 != 0 {
        if ip + 8 > end {
            return 0;
        }
        // SAFETY: the 8 bytes at `ip` are in the frame (checked above).
        unsafe { *((ip + 7) as *mut u8) = ttl };
        return 1;
    }
    if ip + 12 > end {
        return 0;
    }
    // SAFETY: the 12 bytes at `ip` are in the frame (checked above).
    unsafe {
        let p = ip as *mut u8;
        // The TTL is the high byte of the header's fifth 16-bit word
        // (the protocol its low byte): HC' = ~(~HC + ~m + m').
        let old = u16::from_be_bytes([*p.add(8), *p.add(9)]);
        let new = u16::from_be_bytes([ttl, *p.add(9)]);
        let check = u16::from_be_bytes([*p.add(10), *p.add(11)]);
        let check = crate::csum::fold((!check) as u64 + (!old) as u64 + new as u64);
        let check = (!check).to_be_bytes();
        *p.add(8) = ttl;
        *p.add(10) = check[0];
        *p.add(11) = check[1];
    }
    1
}
