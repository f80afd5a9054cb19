//! `-j TCPMSS` (xt_TCPMSS): a TCP segment's MSS option lowered to
//! `--set-mss`'s value or to the path MTU less the headers
//! (`--clamp-mss-to-pmtu`), or added to a segment without one and without
//! payload, as the kernel's `tcpmss_mangle_packet` does it:
//!
//! - the option walk is the kernel's (an EOL or NOP, or a length of 0,
//!   steps one byte; the walk goes on past an EOL);
//! - an option already at or below the value is left (the MSS is never
//!   raised);
//! - a segment without the option gets it only when it carries no
//!   payload and its header has room (data offset below 15), with at most
//!   536 (IPv6: 1220), the MSS a peer assumes without one; the option goes
//!   first, the others move 4 bytes on;
//! - a segment shorter than its TCP header, and a clamp whose path MTU is
//!   not above the headers, are dropped (the kernel's NF_DROP);
//! - a later fragment is left alone.
//!
//! The search only records what the rules asked for
//! (`netbeast_common::tcpmss::merge`: nothing reads the option between
//! two rules, and each lowers it to its own value, so the rules come down
//! to the lowest value and whether a clamp was met); the pipeline calls
//! the writer once, as the packet leaves (`apply_xdp`, `apply_tc`).
//! Deviation: a packet the kernel would drop at the rule is dropped as it
//! leaves, so the rules after it count it.
//!
//! The path MTU is the kernel's: the route's MTU to the destination and
//! the one of the route back to the source, the lower (`tcpmss_reverse_mtu`),
//! each read with `bpf_fib_lookup` asking for a length no route takes
//! (65,535), which answers FRAG_NEEDED with the route's MTU; only a
//! segment a clamp rule met pays for it. The host's own packets (TC
//! egress) have a local source, whose route (loopback) never lowers it.
//!
//! The TCP checksum: updated incrementally (RFC 1624), unless it holds
//! only the pseudo-header's sum (`CHECKSUM_PARTIAL`, a veth peer's own
//! segments: transmit offload completes it over the bytes as they are
//! then): an option rewritten in place then needs nothing, a segment that
//! grew gets the new pseudo-header's sum — what the kernel's
//! `inet_proto_csum_replace2` does with such a segment.

use aya_ebpf::{
    bindings::{
        __sk_buff, BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LOOKUP_OUTPUT,
        bpf_fib_lookup as FibParams, xdp_md,
    },
    helpers::generated::{
        bpf_fib_lookup, bpf_skb_change_tail, bpf_skb_pull_data, bpf_xdp_adjust_tail,
    },
};
use netbeast_common::tcpmss;

use crate::{
    csum::{fold, partial, replace},
    parse::{Packet, load, opaque},
};

/// [`word`]'s family bit, above `tcpmss`'s.
const IPV6: u32 = 1 << 18;
/// The writer's answers: nothing more to do, drop the packet, or add the
/// option (`INSERT` with the MSS in the low 16 bits).
const DONE: u32 = 0;
const DROP: u32 = 1;
const INSERT: u32 = 1 << 31;

const TCPOPT_MSS: u8 = 2;
const TCPOLEN_MSS: usize = 4;
const TCP_HLEN: usize = 20;
/// The data offset's ceiling: 15 words.
const MAX_TCP_HLEN: usize = 60;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const IPPROTO_TCP: u8 = 6;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// The L4 offset's bound for the verifier (the IPv6 walk's own bound).
const L4_MASK: u32 = crate::parse::WALK_OFF_MASK;
/// A length no route's MTU reaches: the lookup answers FRAG_NEEDED with
/// the route's MTU in `mtu_result`.
const PROBE_LEN: u16 = 0xffff;
/// A route that gave no MTU (none found): no bound, as the kernel's ~0.
const NO_MTU: u32 = u32::MAX;

/// The word the global functions take: what the rules asked for, and the
/// family.
#[inline(always)]
fn word(pkt: &Packet, ipv6: bool) -> u32 {
    pkt.search.mss | if ipv6 { IPV6 } else { 0 }
}

/// As an arriving packet leaves XDP (to the stack, the fast path or the
/// hand-off): the MSS the rules asked for written into it. `l4` is the TCP
/// header's offset, `in_ifindex` the interface it came in on (the clamp's
/// routes are looked up from there). True when the kernel would have
/// dropped it.
#[inline(always)]
pub fn apply_xdp(ctx: *mut xdp_md, pkt: &Packet, l4: usize, ipv6: bool, in_ifindex: u32) -> bool {
    if pkt.search.mss == 0 || pkt.fragment {
        return false;
    }
    netbeast_tcpmss_xdp(
        ctx,
        pkt.l2_len() as u32,
        l4 as u32,
        word(pkt, ipv6),
        in_ifindex,
    ) == DROP
}

/// [`apply_xdp`] for the host's packets at TC egress, leaving by
/// `out_ifindex`.
#[inline(always)]
pub fn apply_tc(
    skb: *mut __sk_buff,
    pkt: &Packet,
    l4: usize,
    ipv6: bool,
    out_ifindex: u32,
) -> bool {
    if pkt.search.mss == 0 || pkt.fragment {
        return false;
    }
    netbeast_tcpmss_tc(
        skb,
        pkt.l2_len() as u32,
        l4 as u32,
        word(pkt, ipv6),
        out_ifindex,
    ) == DROP
}

/// The writer for an XDP frame whose IP header is at `l3` and TCP header
/// at `l4`. Returns [`DROP`] when the kernel would drop the packet.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_tcpmss_xdp(
    ctx: *mut xdp_md,
    l3: u32,
    l4: u32,
    word: u32,
    in_ifindex: u32,
) -> u32 {
    if ctx.is_null() {
        return DONE;
    }
    write(&Xdp(ctx), l3, l4, word, in_ifindex)
}

/// [`netbeast_tcpmss_xdp`] for the host's packets at TC egress, leaving
/// by `out_ifindex`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_tcpmss_tc(
    skb: *mut __sk_buff,
    l3: u32,
    l4: u32,
    word: u32,
    out_ifindex: u32,
) -> u32 {
    if skb.is_null() {
        return DONE;
    }
    write(&Tc(skb), l3, l4, word, out_ifindex)
}

/// What the writer needs of its context: the packet's bytes, the routes'
/// MTU and room for 4 more bytes.
trait Frame {
    /// The packet's `data` and `data_end`, read anew.
    fn bounds(&self) -> (usize, usize);
    /// The clamp's path MTU for the packet from `src` to `dst`; `ifindex`
    /// is the interface given to the writer.
    fn path_mtu(&self, src: &[u32; 4], dst: &[u32; 4], ifindex: u32, word: u32) -> u32;
    /// Makes the packet end at `need` (past `end`, its end now); false
    /// when it cannot.
    fn grow(&self, start: usize, end: usize, need: usize) -> bool;
}

/// An arriving packet at XDP: both routes looked up as its arrival
/// interface sees them.
struct Xdp(*mut xdp_md);

impl Frame for Xdp {
    #[inline(always)]
    fn bounds(&self) -> (usize, usize) {
        // SAFETY: the context's data pointers, read as the verifier allows.
        unsafe { ((*self.0).data as usize, (*self.0).data_end as usize) }
    }

    #[inline(always)]
    fn path_mtu(&self, src: &[u32; 4], dst: &[u32; 4], ifindex: u32, word: u32) -> u32 {
        let out = route_mtu(self.0 as *mut _, src, dst, ifindex, 0, word);
        let back = route_mtu(self.0 as *mut _, dst, src, ifindex, 0, word);
        out.min(back)
    }

    #[inline(always)]
    fn grow(&self, _start: usize, end: usize, need: usize) -> bool {
        // An Ethernet frame's padding past the IP datagram may already
        // give the room. SAFETY: the helper checks the frame's tailroom.
        need <= end || unsafe { bpf_xdp_adjust_tail(self.0 as *mut _, (need - end) as i32) } == 0
    }
}

/// The host's packet at TC egress: the route out is its own (the
/// interface is known); the route back to the host's own source is a
/// local one, which never lowers the MTU.
struct Tc(*mut __sk_buff);

impl Frame for Tc {
    #[inline(always)]
    fn bounds(&self) -> (usize, usize) {
        // SAFETY: the context's data pointers, read as the verifier allows.
        unsafe { ((*self.0).data as usize, (*self.0).data_end as usize) }
    }

    #[inline(always)]
    fn path_mtu(&self, src: &[u32; 4], dst: &[u32; 4], ifindex: u32, word: u32) -> u32 {
        route_mtu(
            self.0 as *mut _,
            src,
            dst,
            ifindex,
            BPF_FIB_LOOKUP_OUTPUT,
            word,
        )
    }

    #[inline(always)]
    fn grow(&self, start: usize, _end: usize, need: usize) -> bool {
        let len = (need - start) as u32;
        // SAFETY: the helpers resize and linearize the skb.
        unsafe { bpf_skb_change_tail(self.0, len, 0) == 0 && bpf_skb_pull_data(self.0, len) == 0 }
    }
}

/// The writer: the option lowered in place, or added to a segment without
/// one (the frame grows, then the bytes move).
#[inline(always)]
fn write<F: Frame>(frame: &F, l3: u32, l4: u32, word: u32, ifindex: u32) -> u32 {
    let (l3, l4) = ((l3 & 0x1f) as usize, (l4 & L4_MASK) as usize);
    let (start, end) = frame.bounds();
    let mtu = if word & tcpmss::CLAMP != 0 {
        let Some((src, dst)) = addresses(start, end, l3, word) else {
            return DONE;
        };
        frame.path_mtu(&src, &dst, ifindex, word)
    } else {
        NO_MTU
    };
    let r = inspect(start, end, l3, l4, word, mtu);
    if r & INSERT == 0 {
        return r;
    }
    let Some(need) = grown_end(start, end, l3, l4, word) else {
        return DONE;
    };
    if !frame.grow(start, end, need) {
        return DONE;
    }
    let (start, end) = frame.bounds();
    insert(start, end, l3, l4, r & tcpmss::VALUE, word);
    DONE
}

/// The IP addresses (IPv4 in the first word), source and destination.
#[inline(always)]
fn addresses(start: usize, end: usize, l3: usize, word: u32) -> Option<([u32; 4], [u32; 4])> {
    if word & IPV6 != 0 {
        let a = load::<[[u32; 4]; 2]>(start, end, l3 + 8)?;
        Some((a[0], a[1]))
    } else {
        let a = load::<[u32; 2]>(start, end, l3 + 12)?;
        Some(([a[0], 0, 0, 0], [a[1], 0, 0, 0]))
    }
}

/// The MTU of the route from `src` to `dst` (network order), looked up as
/// `flags` and `ifindex` say; [`NO_MTU`] when no route answers.
#[inline(always)]
fn route_mtu(
    ctx: *mut core::ffi::c_void,
    src: &[u32; 4],
    dst: &[u32; 4],
    ifindex: u32,
    flags: u32,
    word: u32,
) -> u32 {
    let mut params = core::mem::MaybeUninit::uninit();
    // SAFETY: plain-old-data struct of integers; all-zero is a valid value.
    let params: &mut FibParams = unsafe { crate::mem::zeroed(&mut params) };
    params.l4_protocol = IPPROTO_TCP;
    params.ifindex = ifindex;
    params.__bindgen_anon_1.tot_len = PROBE_LEN;
    if word & IPV6 != 0 {
        params.family = AF_INET6;
        params.__bindgen_anon_3.ipv6_src = *src;
        params.__bindgen_anon_4.ipv6_dst = *dst;
    } else {
        params.family = AF_INET;
        params.__bindgen_anon_3.ipv4_src = src[0];
        params.__bindgen_anon_4.ipv4_dst = dst[0];
    }
    // SAFETY: params is a valid, writable bpf_fib_lookup on the stack.
    let rc =
        unsafe { bpf_fib_lookup(ctx, params, core::mem::size_of::<FibParams>() as i32, flags) };
    if rc as u32 == BPF_FIB_LKUP_RET_FRAG_NEEDED {
        // SAFETY: the union holds the MTU after FRAG_NEEDED.
        u32::from(unsafe { params.__bindgen_anon_1.mtu_result })
    } else {
        NO_MTU
    }
}

/// The segment's length as its IP header gives it, and the IP headers'
/// length before it.
#[inline(always)]
fn segment_len(start: usize, end: usize, l3: usize, l4: usize, word: u32) -> Option<usize> {
    let headers = l4.checked_sub(l3)?;
    let datagram = if word & IPV6 != 0 {
        u16::from_be_bytes(load::<[u8; 2]>(start, end, l3 + 4)?) as usize + IPV6_HLEN
    } else {
        u16::from_be_bytes(load::<[u8; 2]>(start, end, l3 + 2)?) as usize
    };
    datagram.checked_sub(headers)
}

/// The first look: lowers an MSS option in place, or says the option is
/// to be added ([`INSERT`] and its value), or that the packet is dropped.
#[inline(always)]
fn inspect(start: usize, end: usize, l3: usize, l4: usize, word: u32, mtu: u32) -> u32 {
    let ipv6 = word & IPV6 != 0;
    let Some(len) = segment_len(start, end, l3, l4, word) else {
        return DONE;
    };
    if len < TCP_HLEN {
        return DROP;
    }
    let Some(offset) = load::<u8>(start, end, l4 + 12) else {
        return DONE;
    };
    let hdrlen = ((offset >> 4) as usize) * 4;
    if len < hdrlen || hdrlen < TCP_HLEN {
        return DROP;
    }
    let mut newmss = if word & tcpmss::SET != 0 {
        word & tcpmss::VALUE
    } else {
        u32::MAX
    };
    if word & tcpmss::CLAMP != 0 {
        let minlen = (if ipv6 { IPV6_HLEN } else { IPV4_HLEN } + TCP_HLEN) as u32;
        if mtu <= minlen {
            return DROP;
        }
        newmss = newmss.min(mtu - minlen);
    }
    let newmss = newmss.min(0xffff);
    let mut i = TCP_HLEN;
    for _ in 0..MAX_TCP_HLEN - TCP_HLEN {
        if i + TCPOLEN_MSS > hdrlen {
            break;
        }
        let Some(opt) = load::<[u8; 4]>(start, end, l4 + (i & 63)) else {
            return DONE;
        };
        if opt[0] == TCPOPT_MSS && opt[1] == TCPOLEN_MSS as u8 {
            let old = u16::from_be_bytes([opt[2], opt[3]]) as u32;
            if old <= newmss {
                return DONE;
            }
            lower(
                start,
                end,
                l3,
                l4,
                i & 63,
                len,
                old as u16,
                newmss as u16,
                word,
            );
            return DONE;
        }
        i += if opt[0] <= 1 || opt[1] == 0 {
            1
        } else {
            opt[1] as usize
        };
    }
    // No option: added only to a segment without payload whose header has
    // room; with at most the MSS a peer assumes without one.
    if len > hdrlen || hdrlen >= MAX_TCP_HLEN {
        return DONE;
    }
    let default = if ipv6 {
        tcpmss::DEFAULT_MSS_IPV6
    } else {
        tcpmss::DEFAULT_MSS_IPV4
    };
    INSERT | newmss.min(default)
}

/// Where the segment ends once the option is added (it has no payload:
/// its end is its header's).
#[inline(always)]
fn grown_end(start: usize, end: usize, l3: usize, l4: usize, word: u32) -> Option<usize> {
    let len = segment_len(start, end, l3, l4, word)?;
    Some(start + l4 + (len & 0x3f) + TCPOLEN_MSS)
}

/// The pseudo-header's one's-complement sum of a TCP segment of `len`
/// bytes (big-endian words).
#[inline(always)]
fn pseudo(start: usize, end: usize, l3: usize, len: usize, word: u32) -> u64 {
    let Some((src, dst)) = addresses(start, end, l3, word) else {
        return 0;
    };
    let words = if word & IPV6 != 0 { 4 } else { 1 };
    let mut sum = IPPROTO_TCP as u64 + (len & 0xffff) as u64;
    for i in 0..4 {
        if i < words {
            for a in [src[i], dst[i]] {
                let a = u32::from_be(a);
                sum += (a >> 16) as u64 + (a & 0xffff) as u64;
            }
        }
    }
    sum
}

/// Writes `new` over the MSS option at `at` in the TCP header (whose
/// value is `old`), with the checksum.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn lower(
    start: usize,
    end: usize,
    l3: usize,
    l4: usize,
    at: usize,
    len: usize,
    old: u16,
    new: u16,
    word: u32,
) {
    let sum = pseudo(start, end, l3, len, word);
    let tcp = opaque(start + l4);
    let p = opaque(tcp + (at & 63));
    let c = opaque(tcp + 16);
    if p + TCPOLEN_MSS > end || c + 2 > end {
        return;
    }
    // SAFETY: the option's 4 bytes and the checksum's 2 are in the frame
    // (checked above).
    unsafe {
        let check = u16::from_be_bytes([*(c as *const u8), *((c + 1) as *const u8)]);
        let v = new.to_be_bytes();
        *((p + 2) as *mut u8) = v[0];
        *((p + 3) as *mut u8) = v[1];
        if !partial(check, sum) {
            let check = replace(check, old, new).to_be_bytes();
            *(c as *mut u8) = check[0];
            *((c + 1) as *mut u8) = check[1];
        }
    }
}

/// Adds the MSS option `mss` in front of the segment's options (which
/// move 4 bytes on into the room made past its end), with the data
/// offset, the checksum and the IP header's length.
#[inline(always)]
fn insert(start: usize, end: usize, l3: usize, l4: usize, mss: u32, word: u32) {
    let Some(len) = segment_len(start, end, l3, l4, word) else {
        return;
    };
    let len = len & 0x3f;
    let sum = pseudo(start, end, l3, len, word);
    let new_sum = pseudo(start, end, l3, len + TCPOLEN_MSS, word);
    let tcp = opaque(start + l4);
    if tcp + len + TCPOLEN_MSS > end || tcp + TCP_HLEN > end {
        return;
    }
    // SAFETY: every access below is inside `tcp .. tcp + len + 4`, checked
    // above against the frame's end (each one checked again for the
    // verifier).
    unsafe {
        let byte = |at: usize| -> Option<*mut u8> {
            let p = opaque(tcp + (at & 63));
            (p + 1 <= end).then_some(p as *mut u8)
        };
        let options = len.saturating_sub(TCP_HLEN);
        for k in 0..MAX_TCP_HLEN - TCP_HLEN {
            if k >= options {
                break;
            }
            let from = TCP_HLEN + options - 1 - k;
            let (Some(src), Some(dst)) = (byte(from), byte(from + TCPOLEN_MSS)) else {
                return;
            };
            *dst = *src;
        }
        let Some(check_at) = byte(16) else { return };
        let Some(check_lo) = byte(17) else { return };
        let Some(offset_at) = byte(12) else { return };
        let Some(flags_at) = byte(13) else { return };
        let option = [TCPOPT_MSS, TCPOLEN_MSS as u8, (mss >> 8) as u8, mss as u8];
        for (i, b) in option.iter().enumerate() {
            let Some(p) = byte(TCP_HLEN + i) else { return };
            *p = *b;
        }
        let check = u16::from_be_bytes([*check_at, *check_lo]);
        let old_offset = u16::from_be_bytes([*offset_at, *flags_at]);
        *offset_at += (TCPOLEN_MSS as u8 / 4) << 4;
        let new_offset = u16::from_be_bytes([*offset_at, *flags_at]);
        let check = if partial(check, sum) {
            fold(new_sum)
        } else {
            let c = replace(check, len as u16, (len + TCPOLEN_MSS) as u16);
            let c = replace(c, 0, u16::from_be_bytes([option[0], option[1]]));
            let c = replace(c, 0, u16::from_be_bytes([option[2], option[3]]));
            replace(c, old_offset, new_offset)
        }
        .to_be_bytes();
        *check_at = check[0];
        *check_lo = check[1];
    }
    // The IP header's length: IPv4's total length (and its checksum),
    // IPv6's payload length.
    let ip = opaque(start + l3);
    if ip + 12 > end {
        return;
    }
    // SAFETY: the 12 bytes at `ip` are in the frame (checked above).
    unsafe {
        let p = ip as *mut u8;
        if word & IPV6 != 0 {
            let old = u16::from_be_bytes([*p.add(4), *p.add(5)]);
            let new = (old.wrapping_add(TCPOLEN_MSS as u16)).to_be_bytes();
            *p.add(4) = new[0];
            *p.add(5) = new[1];
        } else {
            let old = u16::from_be_bytes([*p.add(2), *p.add(3)]);
            let new = old.wrapping_add(TCPOLEN_MSS as u16);
            let check = u16::from_be_bytes([*p.add(10), *p.add(11)]);
            let check = replace(check, old, new).to_be_bytes();
            let new = new.to_be_bytes();
            *p.add(2) = new[0];
            *p.add(3) = new[1];
            *p.add(10) = check[0];
            *p.add(11) = check[1];
        }
    }
}
