//! The benchmark's packet generator (DESIGN §8). `netbeast bench` runs this
//! program with `BPF_PROG_TEST_RUN` in live-frames mode on one end of a veth
//! pair: every frame it returns `XDP_TX` for leaves through that veth and
//! arrives at the other end, where the data plane under test receives it.
//!
//! Live frames are recycled pages that the kernel does not rewrite from
//! `data_in`, and a receiver may have changed them in place (a router
//! rewrites MACs and TTL or hop limit, NAT the destination). So the program
//! first copies the template's headers over the frame, then gives it its
//! flow: frame `n` belongs to flow `n % flows`, whose source address (the
//! last 32 bits of an IPv6 one) and port it stores, with the checksum that
//! covers them: IPv4's header checksum (the template's UDP checksum is 0,
//! none, and stays valid), or IPv6's UDP checksum (mandatory, and it covers
//! the addresses through the pseudo-header), each updated from a sum of the
//! rest that userspace computed once.

use aya_ebpf::{
    bindings::{BPF_F_BROADCAST, xdp_action},
    macros::map,
    maps::{Array, DevMap, PerCpuArray},
    programs::XdpContext,
};
use netbeast_common::generator::{
    self, HEADER_BYTES, HEADER_BYTES6, IP_CHECKSUM, IP_SOURCE, IP6_SOURCE_LOW, TCP_CHECKSUM,
    TCP_SOURCE_PORT, TEMPLATE_WORDS, UDP_SOURCE_PORT, UDP6_CHECKSUM, UDP6_SOURCE_PORT,
};

use crate::csum::fold;

/// Frames generated on each CPU: the sequence number of the next frame.
#[map]
static GENERATED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// `netbeast_common::generator::*` entries.
#[map]
static GENERATOR_CONFIG: Array<u32> = Array::with_max_entries(generator::CONFIG_ENTRIES, 0);

/// The first `HEADER_BYTES` (IPv6: `HEADER_BYTES6`) of the template frame.
#[map]
static GENERATOR_TEMPLATE: Array<[u64; TEMPLATE_WORDS]> = Array::with_max_entries(1, 0);

#[inline(always)]
fn config(index: u32) -> u32 {
    GENERATOR_CONFIG.get(index).copied().unwrap_or(0)
}

/// Copies the first `BYTES` of `template` over the frame at `start`:
/// whole words, then the last `BYTES % 8` bytes (2 or 6).
///
/// # Safety
/// `start + BYTES` must be within the frame (checked by the caller against
/// `data_end`).
#[inline(always)]
unsafe fn copy_template<const BYTES: usize>(start: usize, template: &[u64; TEMPLATE_WORDS]) {
    let mut i = 0;
    while i < BYTES / 8 {
        // SAFETY: word i ends at 8 * (i + 1) <= BYTES.
        unsafe { core::ptr::write_unaligned((start + 8 * i) as *mut u64, template[i]) };
        i += 1;
    }
    // Little-endian words: the template's next bytes are the low ones.
    let last = template[BYTES / 8];
    let at = start + 8 * (BYTES / 8);
    // SAFETY: the tail ends at BYTES.
    unsafe {
        if BYTES % 8 >= 4 {
            core::ptr::write_unaligned(at as *mut u32, last as u32);
            core::ptr::write_unaligned((at + 4) as *mut u16, (last >> 32) as u16);
        } else {
            core::ptr::write_unaligned(at as *mut u16, last as u16);
        }
    }
}

/// The live-frames generator: each frame made goes back out of its veth.
#[inline(always)]
pub fn generate(ctx: &XdpContext) -> u32 {
    make(ctx, xdp_action::XDP_TX)
}

/// Turns the frame at `ctx` into the generator's next frame and returns
/// `made` (the verdict that sends it), or `XDP_ABORTED` when it cannot.
#[inline(always)]
fn make(ctx: &XdpContext, made: u32) -> u32 {
    let Some(seq) = GENERATED.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: this CPU's slot; nothing else runs on it meanwhile.
    let n = unsafe {
        let n = *seq;
        *seq = n + 1;
        n
    };
    let Some(template) = GENERATOR_TEMPLATE.get(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let (start, end) = (ctx.data(), ctx.data_end());
    let ipv6 = config(generator::IPV6) != 0;
    if ipv6 {
        if start + HEADER_BYTES6 > end {
            return xdp_action::XDP_ABORTED;
        }
        // SAFETY: checked above.
        unsafe { copy_template::<HEADER_BYTES6>(start, template) };
    } else {
        if start + HEADER_BYTES > end {
            return xdp_action::XDP_ABORTED;
        }
        // SAFETY: checked above.
        unsafe { copy_template::<HEADER_BYTES>(start, template) };
    }
    let flows = config(generator::FLOWS);
    if flows <= 1 {
        return made;
    }
    let flow = (n % flows as u64) as u32;
    let source = config(generator::FIRST_SOURCE) + flow % generator::ADDRESSES;
    let port = config(generator::FIRST_PORT) + flow / generator::ADDRESSES;
    let source_sum = (source >> 16) as u64 + (source & 0xffff) as u64;
    let sum = config(generator::HEADER_SUM) as u64 + source_sum;
    if ipv6 {
        let udp_sum = !fold(sum + (port & 0xffff) as u64);
        // UDP sends a zero sum as all ones (RFC 768; 0 is "none", which
        // IPv6 does not allow).
        let udp_sum = if udp_sum == 0 { 0xffff } else { udp_sum };
        // SAFETY: all three stores end before HEADER_BYTES6, checked above.
        unsafe {
            core::ptr::write_unaligned((start + IP6_SOURCE_LOW) as *mut u32, source.to_be());
            core::ptr::write_unaligned(
                (start + UDP6_SOURCE_PORT) as *mut u16,
                (port as u16).to_be(),
            );
            core::ptr::write_unaligned((start + UDP6_CHECKSUM) as *mut u16, udp_sum.to_be());
        }
        return made;
    }
    // SAFETY: all three stores end before HEADER_BYTES, checked above.
    unsafe {
        core::ptr::write_unaligned((start + IP_SOURCE) as *mut u32, source.to_be());
        core::ptr::write_unaligned((start + IP_CHECKSUM) as *mut u16, (!fold(sum)).to_be());
        core::ptr::write_unaligned((start + UDP_SOURCE_PORT) as *mut u16, (port as u16).to_be());
    }
    made
}

/// The fan-out generator's devmap (`--generator fanout`): `FANOUT`
/// entries, all the generator's port, each with
/// `netbeast_fanout_generator` as its program.
#[map]
static GENERATOR_FANOUT: DevMap = DevMap::with_max_entries(generator::FANOUT, 0);

/// The fan-out generator's entry, on the receiving end of its own veth
/// pair: every frame that arrives goes to every entry of
/// `GENERATOR_FANOUT` (the kernel clones it for each), each copy through
/// [`generate_copy`] and out of the generator's port with `ndo_xdp_xmit`.
#[inline(always)]
pub fn fan_out() -> u32 {
    GENERATOR_FANOUT
        .redirect(0, BPF_F_BROADCAST as u64)
        .unwrap_or(xdp_action::XDP_ABORTED)
}

/// Each copy of a fanned-out frame, as the devmap entry's program: made
/// into the generator's next frame as [`generate`] makes it. A devmap
/// program's `XDP_PASS` transmits the frame.
#[inline(always)]
pub fn generate_copy(ctx: &XdpContext) -> u32 {
    make(ctx, xdp_action::XDP_PASS)
}

/// The SYN generator's configuration (`generator::FLOWS` ... `TCP_SUM`).
#[map]
static SYN_GENERATOR_CONFIG: Array<u32> = Array::with_max_entries(generator::SYN_CONFIG_ENTRIES, 0);

/// The first `SYN_BYTES` of the SYN template.
#[map]
static SYN_GENERATOR_TEMPLATE: Array<[u64; generator::SYN_TEMPLATE_WORDS]> =
    Array::with_max_entries(1, 0);

#[inline(always)]
fn syn_config(index: u32) -> u32 {
    SYN_GENERATOR_CONFIG.get(index).copied().unwrap_or(0)
}

/// `bench --scenario synflood`'s generator: like [`generate`], with a TCP
/// SYN whose checksum it recomputes for each flow's source.
#[inline(always)]
pub fn generate_syn(ctx: &XdpContext) -> u32 {
    const BYTES: usize = generator::SYN_BYTES;
    let Some(seq) = GENERATED.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: this CPU's slot; nothing else runs on it meanwhile.
    let n = unsafe {
        let n = *seq;
        *seq = n + 1;
        n
    };
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + BYTES > end {
        return xdp_action::XDP_ABORTED;
    }
    let Some(template) = SYN_GENERATOR_TEMPLATE.get(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: every store ends before start + BYTES, checked above (9
    // words, then the last 2 bytes).
    unsafe {
        let mut i = 0;
        while i < BYTES / 8 {
            core::ptr::write_unaligned((start + 8 * i) as *mut u64, template[i]);
            i += 1;
        }
        let tail = (template[BYTES / 8] & 0xffff) as u16;
        core::ptr::write_unaligned((start + BYTES - 2) as *mut u16, tail);
    }
    let flows = syn_config(generator::FLOWS).max(1);
    let flow = (n % flows as u64) as u32;
    let source = syn_config(generator::FIRST_SOURCE) + flow % generator::ADDRESSES;
    let port = syn_config(generator::FIRST_PORT) + flow / generator::ADDRESSES;
    let source_sum = (source >> 16) as u64 + (source & 0xffff) as u64;
    let ip_sum = syn_config(generator::HEADER_SUM) as u64 + source_sum;
    let tcp_sum = syn_config(generator::TCP_SUM) as u64 + source_sum + (port & 0xffff) as u64;
    // SAFETY: all four stores end before BYTES, checked above.
    unsafe {
        core::ptr::write_unaligned((start + IP_SOURCE) as *mut u32, source.to_be());
        core::ptr::write_unaligned((start + IP_CHECKSUM) as *mut u16, (!fold(ip_sum)).to_be());
        core::ptr::write_unaligned((start + TCP_SOURCE_PORT) as *mut u16, (port as u16).to_be());
        core::ptr::write_unaligned((start + TCP_CHECKSUM) as *mut u16, (!fold(tcp_sum)).to_be());
    }
    xdp_action::XDP_TX
}
