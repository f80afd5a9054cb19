//! The IPv6 ingress path (docs/ARCHITECTURE.md, "IPv6"): the IPv6 filter
//! chains of `ip6tables` on the same classifier, with the address in four
//! stacked 32-bit fields. Its own XDP program (`netbeast_xdp6`), reached
//! from `netbeast_xdp` by a tail call right after the Ethernet header:
//! verified on its own (the IPv4 program stays under the verifier's
//! budget, its instruction count unchanged), and running on a fresh stack
//! (a call from the IPv4 entry would stack its 200-byte frame under the
//! classifier's, past the 512 bytes allowed).

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_NOT_FWDED,
        BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams, xdp_action,
    },
    helpers::generated::bpf_fib_lookup,
    macros::map,
    maps::ProgramArray,
    programs::XdpContext,
};
use netbeast_common::{TCP_FLAGS_CUT, chain, ct_state, stats, target};

use crate::{
    classify::{Active, Verdict, classify},
    conntrack,
    parse::{Packet, Parsed, Parsed6, parse_ingress, parse_ipv6},
    stats::bump,
};

const AF_INET6: u8 = 10;

/// `netbeast_xdp6` at index 0, set by the loader when it loads the XDP
/// programs. Pinned: a program array's entries go with its last user
/// reference.
#[map]
pub static IPV6_INGRESS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// From `netbeast_xdp`, for an IPv6 frame: the IPv6 program when an IPv6
/// ruleset is in use, else untouched as before.
#[inline(always)]
pub fn hand_off(ctx: &XdpContext) -> u32 {
    if Active::read().ipv6() {
        // SAFETY: a tail call from the program's entry; it returns only when
        // the array has no program (then the frame passes untouched).
        unsafe { IPV6_INGRESS.tail_call(ctx, 0) };
    }
    bump(stats::NOT_IPV4);
    xdp_action::XDP_PASS
}

/// `netbeast_xdp6`: an IPv6 frame handed off by `netbeast_xdp`.
#[inline(always)]
pub fn program(ctx: &XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    match parse_ingress(start, end, end - start) {
        Parsed::Ipv6(l3) => ingress(ctx, l3),
        _ => {
            bump(stats::NOT_IPV4);
            xdp_action::XDP_PASS
        }
    }
}

/// Where an IPv6 packet goes.
enum Path6 {
    Local,
    Forward(u32),
    Kernel,
}

/// An IPv6 frame whose header starts at `l3`.
#[inline(always)]
fn ingress(ctx: &XdpContext, l3: usize) -> u32 {
    let active = Active::read();
    if !active.ipv6() {
        // The ruleset changed since the hand-off: untouched.
        bump(stats::NOT_IPV4);
        return xdp_action::XDP_PASS;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    let pkt = match parse_ipv6(start, end, l3, end - start) {
        Parsed6::Packet(pkt) => pkt,
        Parsed6::Kernel => {
            bump(stats::KERNEL_DROPPED);
            return xdp_action::XDP_PASS;
        }
        Parsed6::Malformed => {
            bump(stats::IPV6_MALFORMED);
            return xdp_action::XDP_DROP;
        }
        Parsed6::TooDeep => {
            bump(stats::IPV6_EXT_TOO_DEEP);
            return xdp_action::XDP_DROP;
        }
    };
    // As for IPv4: a TCP header cut before its flags cannot be judged by
    // the rules that test them.
    if active.tcp_flags() && pkt.keys.tcp_flags == TCP_FLAGS_CUT as u16 {
        bump(stats::TCP_CUT);
        return xdp_action::XDP_DROP;
    }
    let in_ifindex = ctx.ingress_ifindex() as u32;
    let (chain, out_ifindex) = match path6(ctx, pkt, in_ifindex) {
        Path6::Local => {
            bump(stats::INPUT);
            (chain::INPUT6, 0)
        }
        Path6::Forward(out) => {
            bump(stats::FORWARD);
            (chain::FORWARD6, out)
        }
        Path6::Kernel => {
            bump(stats::KERNEL_ROUTED);
            return xdp_action::XDP_PASS;
        }
    };
    bump(stats::IPV6);
    // What -m ipv6header, -m rt and -m frag read, from the parser's walk.
    crate::parse::netbeast_ipv6_facts(pkt.keys.protocol as u32);
    pkt.keys.in_ifindex = in_ifindex;
    pkt.keys.out_ifindex = out_ifindex;
    pkt.keys.ct_state = conntrack::key(ct_state::UNTRACKED);
    let generation = active.generation();
    let verdict = match classify(
        generation,
        chain,
        &pkt.keys,
        pkt.keys.length as u64,
        &mut pkt.search,
    ) {
        Verdict::Policy(policy) => policy,
        Verdict::Rule(action) => action.target,
    };
    // The LOG rules the chain met, before the verdict takes the frame.
    if pkt.search.log_count != 0 {
        let at = crate::log::Where {
            generation,
            chain,
            in_ifindex,
            out_ifindex,
            frame_len: (end - start) as u32,
            l3_offset: pkt.l2_len() as u32,
            // No short event for IPv6: the line reads the extension
            // headers, so the whole capture is taken (protocol 0).
            l4_offset: 0,
            protocol: 0,
        };
        crate::log::emit_xdp(ctx, &pkt.search, &at);
    }
    match verdict {
        target::ACCEPT => {
            bump(stats::ACCEPTED);
            // Forwarded packets too: the kernel routes them (no fast path
            // for IPv6 yet).
            xdp_action::XDP_PASS
        }
        target::DROP => {
            bump(stats::DROPPED);
            xdp_action::XDP_DROP
        }
        // The IPv6 ruleset has no other verdicts yet (the parser and the
        // compiler refuse them): taken as no target, never as a drop.
        _ => {
            bump(stats::UNKNOWN_TARGET);
            xdp_action::XDP_PASS
        }
    }
}

/// INPUT6 for multicast destinations (NDP, MLD) and what the FIB says is
/// local; FORWARD6 for a route with hop limit to spare; else the kernel,
/// which drops or answers before any chain.
#[inline(always)]
fn path6(ctx: &XdpContext, pkt: &Packet, in_ifindex: u32) -> Path6 {
    // ff00::/8: the first byte of the first word, in packet order.
    if pkt.keys.dst & 0xff == 0xff {
        return Path6::Local;
    }
    fib6(ctx, pkt, in_ifindex)
}

/// Out of line: the FIB parameters live in this call's frame.
#[inline(never)]
fn fib6(ctx: &XdpContext, pkt: &Packet, in_ifindex: u32) -> Path6 {
    // SAFETY: plain-old-data struct of integers; all-zero is a valid value.
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    params.family = AF_INET6;
    params.l4_protocol = pkt.keys.protocol;
    params.ifindex = in_ifindex;
    let (k, w) = (&pkt.keys, &pkt.addr6);
    params.__bindgen_anon_3.ipv6_src = [k.src, w[0], w[2], w[4]];
    params.__bindgen_anon_4.ipv6_dst = [k.dst, w[1], w[3], w[5]];
    // SAFETY: params is a valid, writable bpf_fib_lookup on the stack.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            &mut params,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    } as u32;
    match rc {
        BPF_FIB_LKUP_RET_NOT_FWDED | BPF_FIB_LKUP_RET_FWD_DISABLED => Path6::Local,
        // ip6_forward() answers hop limit ≤ 1 before the FORWARD hook.
        BPF_FIB_LKUP_RET_SUCCESS | BPF_FIB_LKUP_RET_NO_NEIGH if pkt.keys.ttl > 1 => {
            Path6::Forward(params.ifindex)
        }
        _ => Path6::Kernel,
    }
}
