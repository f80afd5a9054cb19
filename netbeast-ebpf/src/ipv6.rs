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
        BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_OK, TC_ACT_SHOT, bpf_fib_lookup as FibParams, xdp_action,
    },
    helpers::generated::bpf_fib_lookup,
    macros::map,
    maps::{PerCpuArray, ProgramArray},
    programs::{TcContext, XdpContext},
};
use netbeast_common::{TCP_FLAGS_CUT, chain, ct_state, stats, target};

use crate::{
    classify::{Active, Verdict, classify},
    conntrack,
    forward::{Way, fast_path, forward6},
    nat::{SIDE_DESTINATION, SIDE_SOURCE},
    parse::{
        ICMP_HLEN, IPPROTO_ICMPV6, Packet, Parsed, Parsed6, load, parse, parse_ingress, parse_ipv6,
    },
    pipeline::{trace, trace_id},
    reject_local,
    route::NextHop,
    stats::bump,
};

const AF_INET6: u8 = 10;

/// `netbeast_xdp6` at index 0, set by the loader when it loads the XDP
/// programs. Pinned: a program array's entries go with its last user
/// reference.
#[map]
pub static IPV6_INGRESS: ProgramArray = ProgramArray::with_max_entries(1, 0);
/// `netbeast_tc_egress6` at index 0, tail-called by `netbeast_tc_egress`
/// for the host's own IPv6 packets; set by the loader, pinned likewise.
#[map]
pub static IPV6_EGRESS: ProgramArray = ProgramArray::with_max_entries(1, 0);

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

/// The MACs of the current packet's next hop, when the FIB knows them:
/// per-CPU scratch rather than the entry's stack, which the classifier's
/// call chain leaves no room to grow (nor an `Option` returned: LLVM
/// copies an empty one's unwritten payload, which the verifier refuses).
#[map]
static NEXT_HOP6: PerCpuArray<NextHop> = PerCpuArray::with_max_entries(1, 0);

/// Where an IPv6 packet goes.
enum Path6 {
    Local,
    /// Out of this interface; true when the FIB knows the neighbour (the
    /// fast path can take it), whose MACs are then in `NEXT_HOP6`.
    Forward(u32, bool),
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
    let in_ifindex = ctx.ingress_ifindex() as u32;
    // A packet from the wire has no mark (the slot keeps the last one's).
    pkt.search.mark = 0;
    pkt.search.mss = 0;
    pkt.search.trace_id = trace_id(active);
    // What the kernel drops before PREROUTING is never a chain's, as for
    // IPv4 (discard.rs).
    let kernel = crate::discard::discards6(pkt, in_ifindex);
    if kernel & crate::discard::DISCARD6 != 0 {
        bump(stats::KERNEL_DROPPED);
        return xdp_action::XDP_PASS;
    }
    // SAFETY: a field of the per-CPU packet slot (see `Packet::kernel6`).
    unsafe { core::ptr::write_volatile(&mut pkt.kernel6, kernel) };
    // As for IPv4: a TCP header cut before its flags cannot be judged by
    // the rules that test them.
    if active.tcp_flags() && pkt.keys.tcp_flags == TCP_FLAGS_CUT as u16 {
        bump(stats::TCP_CUT);
        return xdp_action::XDP_DROP;
    }
    let generation = active.generation();
    // ip6tables' raw PREROUTING, before conntrack and routing, as for
    // IPv4 (pipeline.rs): a DROP costs no lookup, `-j CT --notrack`
    // leaves the packet UNTRACKED.
    let untracked = if active.raw() {
        let verdict = raw6(pkt, generation, chain::RAW6_PREROUTING, in_ifindex, 0);
        if pkt.search.log_count != 0 {
            log6(ctx, generation, chain::RAW6_PREROUTING, in_ifindex as u64);
        }
        if crate::pipeline::raw_drops(&verdict) {
            bump(stats::DROPPED);
            return xdp_action::XDP_DROP;
        }
        pkt.search.untrack != 0
    } else {
        false
    };
    // What -m ipv6header, -m rt and -m frag read, from the parser's walk:
    // made only while a rule reads it (the guards run only then).
    if active.ipv6_headers() {
        crate::parse::netbeast_ipv6_facts(pkt.keys.protocol as u32);
    }
    // `-m sctp --chunk-types` and `-m dccp`'s types and options: the IPv4
    // program's walk, from where the extension headers end (only while a
    // rule tests them).
    if active.bits() & (netbeast_common::ACTIVE_SCTP_CHUNKS | netbeast_common::ACTIVE_DCCP) != 0 {
        crate::parse::netbeast_sctp_walk_xdp(ctx.ctx, active.bits(), 1);
    }
    // Conntrack before routing, as for IPv4: the destination NAT gives
    // (nat PREROUTING, or the undoing of SNAT on a reply) decides where
    // the packet goes.
    let (active, state) = if untracked {
        (active.untracked(), conntrack::untrack6())
    } else {
        let state = connection_state(pkt, start, end, active, true);
        (active, state)
    };
    // ip6tables' mangle PREROUTING, after conntrack and before nat
    // PREROUTING, as the kernel's hook priorities order them.
    if active.mangle()
        && mangle6_drops_xdp(
            ctx,
            pkt,
            generation,
            chain::MANGLE6_PREROUTING,
            in_ifindex as u64,
            state,
        )
    {
        bump(stats::DROPPED);
        return xdp_action::XDP_DROP;
    }
    if active.translations() {
        // Cleared only where translations run (REJECT reads it only there).
        pkt.dnat_from = (0, 0);
        if active.nat() && crate::nat::pending6() {
            let verdict = run_chain6(
                pkt,
                generation,
                chain::NAT6_PREROUTING,
                in_ifindex as u64,
                conntrack::key6(state),
            );
            if pkt.search.log_count != 0 {
                log6(ctx, generation, chain::NAT6_PREROUTING, in_ifindex as u64);
            }
            let (target, arg) = verdict.words();
            crate::nat::netbeast_nat6_prerouting(generation, target, arg, in_ifindex);
        }
        crate::nat::netbeast_translate6_xdp(ctx.ctx, SIDE_DESTINATION);
    }
    let (chain, out_ifindex, neighbour) = match path6(ctx, pkt, in_ifindex) {
        Path6::Local => {
            bump(stats::INPUT);
            (chain::INPUT6, 0, false)
        }
        Path6::Forward(..)
            // SAFETY: as where it was written.
            if unsafe { core::ptr::read_volatile(&pkt.kernel6) } & crate::discard::NOT_FORWARDED6
                != 0 =>
        {
            bump(stats::KERNEL_DROPPED);
            return xdp_action::XDP_PASS;
        }
        Path6::Forward(out, neighbour) => {
            bump(stats::FORWARD);
            // ip6_forward() lowers the hop limit before the FORWARD hook:
            // `-m hl` there sees it one lower (`path6` forwards only hop
            // limits above 1). The frame's is lowered on the way out.
            pkt.keys.ttl = pkt.keys.ttl.wrapping_sub(1);
            (chain::FORWARD6, out, neighbour)
        }
        Path6::Kernel => {
            bump(stats::KERNEL_ROUTED);
            return xdp_action::XDP_PASS;
        }
    };
    bump(stats::IPV6);
    // ip6tables' mangle INPUT or FORWARD, before filter's (IPv4's in
    // pipeline.rs; the chain numbers in the same order).
    const { assert!(chain::FORWARD6 - chain::INPUT6 == chain::MANGLE_FORWARD - chain::MANGLE_INPUT) };
    if active.mangle()
        && mangle6_drops_xdp(
            ctx,
            pkt,
            generation,
            chain::mangle6(chain::MANGLE_INPUT + chain - chain::INPUT6),
            in_ifindex as u64 | (out_ifindex as u64) << 32,
            state,
        )
    {
        bump(stats::DROPPED);
        return xdp_action::XDP_DROP;
    }
    pkt.keys.in_ifindex = in_ifindex;
    pkt.keys.out_ifindex = out_ifindex;
    pkt.keys.ct_state = conntrack::key6(state);
    let decided = classify(
        generation,
        chain,
        &pkt.keys,
        pkt.keys.length as u64,
        &mut pkt.search,
    );
    trace(pkt, generation, chain, &decided);
    let (verdict, with) = match decided {
        Verdict::Policy(policy) => (policy, 0),
        Verdict::Rule(action) => (action.target, action.arg),
    };
    // The LOG rules the chain met, before the verdict takes the frame.
    if pkt.search.log_count != 0 {
        log6(
            ctx,
            generation,
            chain,
            in_ifindex as u64 | (out_ifindex as u64) << 32,
        );
    }
    // mangle POSTROUTING for a forwarded packet FORWARD accepts.
    if verdict == target::ACCEPT
        && chain == chain::FORWARD6
        && active.mangle()
        && mangle6_drops_xdp(
            ctx,
            pkt,
            generation,
            chain::MANGLE6_POSTROUTING,
            (out_ifindex as u64) << 32,
            state,
        )
    {
        bump(stats::DROPPED);
        return xdp_action::XDP_DROP;
    }
    match verdict {
        target::ACCEPT => {
            if active.nat() && chain == chain::FORWARD6 && crate::nat::pending6() {
                let ifaces = (out_ifindex as u64) << 32;
                let verdict = run_chain6(
                    pkt,
                    generation,
                    chain::NAT6_POSTROUTING,
                    ifaces,
                    conntrack::key6(state),
                );
                if pkt.search.log_count != 0 {
                    log6(ctx, generation, chain::NAT6_POSTROUTING, ifaces);
                }
                let (target, arg) = verdict.words();
                if crate::nat::netbeast_nat6_postrouting(generation, target, arg, out_ifindex) != 0
                {
                    bump(stats::DROPPED);
                    return xdp_action::XDP_DROP;
                }
            }
            if active.tracking() {
                conntrack::confirm6();
            }
            // `-j TCPMSS`, as the packet leaves (the frame may grow).
            if crate::tcpmss::apply_xdp(ctx.ctx, pkt, l4_offset(pkt), true, in_ifindex) {
                bump(stats::DROPPED);
                return xdp_action::XDP_DROP;
            }
            bump(stats::ACCEPTED);
            // A forwarded packet whose next hop the FIB knows leaves by
            // the fast path, as IPv4 does, with its source translation
            // when redirected here (a frame handed off to TC, and one the
            // kernel routes, cross TC egress, which translates it then).
            let Some(hop) = NEXT_HOP6.get(0).filter(|_| neighbour) else {
                return crate::handoff::pass(ctx, in_ifindex, pkt.search.mark);
            };
            match fast_path(pkt, in_ifindex, out_ifindex) {
                Way::Kernel => crate::handoff::pass(ctx, in_ifindex, pkt.search.mark),
                way => {
                    if active.translations() && way == Way::Redirect {
                        crate::nat::netbeast_translate6_xdp(ctx.ctx, SIDE_SOURCE);
                    }
                    forward6(ctx, out_ifindex, hop, way, pkt.keys.ttl)
                }
            }
        }
        target::DROP => {
            bump(stats::DROPPED);
            xdp_action::XDP_DROP
        }
        target::REJECT => {
            // The ICMPv6 type, for the messages no error may answer.
            read_icmp6(pkt, start, end);
            if active.translations() {
                crate::nat::netbeast_untranslate6_xdp(ctx.ctx);
            }
            let action =
                crate::reject6::reject6(ctx, pkt, with, in_ifindex, chain == chain::INPUT6);
            crate::handoff::reply(ctx, action, in_ifindex)
        }
        // The IPv6 ruleset has no other verdicts yet (the parser and the
        // compiler refuse them): taken as no target, never as a drop.
        _ => {
            bump(stats::UNKNOWN_TARGET);
            xdp_action::XDP_PASS
        }
    }
}

/// Runs ip6tables mangle `chain` on the packet (`ifaces`: the input
/// interface, the output one in the high half), with its LOG events: true
/// when it drops the packet.
#[inline(always)]
fn mangle6_drops_xdp(
    ctx: &XdpContext,
    pkt: &mut Packet,
    generation: u32,
    chain: u32,
    ifaces: u64,
    state: u32,
) -> bool {
    let drops = mangle6_drops(pkt, generation, chain, ifaces, state);
    if pkt.search.log_count != 0 {
        log6(ctx, generation, chain, ifaces);
    }
    // `-j HL`: the chains after this one, and the frame, get the new hop
    // limit (one more in the frame of a forwarded packet, see there).
    let forwarded = chain == chain::MANGLE6_FORWARD || chain == chain::MANGLE6_POSTROUTING;
    crate::rewrite::after_chain_xdp(ctx, pkt, forwarded, true);
    drops
}

/// [`mangle6_drops`] for the host's packets at TC egress, with `-j HL`'s
/// rewrite.
#[inline(always)]
fn mangle6_drops_tc(
    ctx: &TcContext,
    pkt: &mut Packet,
    generation: u32,
    chain: u32,
    ifaces: u64,
    state: u32,
) -> bool {
    let drops = mangle6_drops(pkt, generation, chain, ifaces, state);
    crate::rewrite::after_chain_tc(ctx.skb.skb, pkt, true);
    drops
}

/// Runs ip6tables chain `chain` on the packet (`ifaces`: the input
/// interface, the output one in the high half; `ct_key`: its conntrack
/// state as the classifier's key), reported to a running trace.
#[inline(always)]
fn run_chain6(pkt: &mut Packet, generation: u32, chain: u32, ifaces: u64, ct_key: u32) -> Verdict {
    pkt.keys.in_ifindex = ifaces as u32;
    pkt.keys.out_ifindex = (ifaces >> 32) as u32;
    pkt.keys.ct_state = ct_key;
    let verdict = classify(
        generation,
        chain,
        &pkt.keys,
        pkt.keys.length as u64,
        &mut pkt.search,
    );
    trace(pkt, generation, chain, &verdict);
    verdict
}

/// The search of an ip6tables mangle chain: true when it drops the packet
/// (ACCEPT ends only the chain).
#[inline(always)]
fn mangle6_drops(pkt: &mut Packet, generation: u32, chain: u32, ifaces: u64, state: u32) -> bool {
    let verdict = run_chain6(pkt, generation, chain, ifaces, conntrack::key6(state));
    crate::pipeline::raw_drops(&verdict)
}

/// Runs a raw chain of ip6tables: its rules see no connection yet (state
/// INVALID, as in the kernel, where conntrack's hook comes after raw's).
#[inline(always)]
fn raw6(
    pkt: &mut Packet,
    generation: u32,
    chain: u32,
    in_ifindex: u32,
    out_ifindex: u32,
) -> Verdict {
    let ifaces = in_ifindex as u64 | (out_ifindex as u64) << 32;
    run_chain6(pkt, generation, chain, ifaces, ct_state::INVALID)
}

/// The events of the LOG rules the chain met. Out of line, so that the
/// event's `Where` is not in the program's own frame: with it there, the
/// frame plus conntrack's deepest calls (`track6`, `lookup::<V6>`) passed
/// the verifier's 512 bytes of stack.
#[inline(never)]
fn log6(ctx: &XdpContext, generation: u32, chain: u32, ifaces: u64) -> u32 {
    let Some(pkt) = crate::parse::current_packet() else {
        return 0;
    };
    let at = crate::log::Where {
        generation,
        chain,
        in_ifindex: ifaces as u32,
        out_ifindex: (ifaces >> 32) as u32,
        frame_len: (ctx.data_end() - ctx.data()) as u32,
        l3_offset: pkt.l2_len() as u32,
        // No short event for IPv6: the line reads the extension headers,
        // so the whole capture is taken (protocol 0).
        l4_offset: 0,
        protocol: 0,
    };
    crate::log::emit_xdp(ctx, &pkt.search, &at);
    0
}

/// INPUT6 for multicast destinations (NDP, MLD), the host's own addresses
/// (`LOCAL_ADDR6_CACHE`) and what the FIB says is local; FORWARD6 for a
/// route with hop limit to spare; else the kernel, which drops or answers
/// before any chain.
#[inline(always)]
fn path6(ctx: &XdpContext, pkt: &Packet, in_ifindex: u32) -> Path6 {
    // ff00::/8: the first byte of the first word, in packet order.
    if pkt.keys.dst & 0xff == 0xff {
        return Path6::Local;
    }
    let w = &pkt.addr6;
    if crate::route::cached_local6([pkt.keys.dst, w[1], w[3], w[5]]) {
        return Path6::Local;
    }
    Path6::decode(fib6(ctx, pkt, in_ifindex))
}

impl Path6 {
    /// As a plain word, for `fib6` to return across its call: every bit
    /// set on every way out (an enum's unused payload is whatever register
    /// LLVM has at hand, a pointer at times, which the verifier refuses to
    /// shift). Kernel 0, Local 1, Forward `2 | known << 2 | out << 32`.
    #[inline(always)]
    fn encode(self) -> u64 {
        match self {
            Path6::Kernel => 0,
            Path6::Local => 1,
            Path6::Forward(out, known) => 2 | u64::from(known) << 2 | u64::from(out) << 32,
        }
    }

    #[inline(always)]
    fn decode(word: u64) -> Path6 {
        match word & 3 {
            1 => Path6::Local,
            2 => Path6::Forward((word >> 32) as u32, word & 4 != 0),
            _ => Path6::Kernel,
        }
    }
}

/// Out of line: the FIB parameters live in this call's frame. A route the
/// cache holds (`route::cached_route6`, valid while the daemon's route
/// watcher holds its lease) costs an array lookup instead of the FIB's
/// trie walk and neighbour lookup; a FIB answer with a known neighbour is
/// kept there.
#[inline(never)]
fn fib6(ctx: &XdpContext, pkt: &Packet, in_ifindex: u32) -> u64 {
    let (k, w) = (&pkt.keys, &pkt.addr6);
    let src = [k.src, w[0], w[2], w[4]];
    let dst = [k.dst, w[1], w[3], w[5]];
    if let Some((out_ifindex, slot)) =
        crate::route::cached_route6(&src, &dst, in_ifindex, k.protocol)
    {
        // As for a FIB answer: ip6_forward() answers hop limit ≤ 1.
        if k.ttl <= 1 {
            return Path6::Kernel.encode();
        }
        if let Some(hop) = NEXT_HOP6.get_ptr_mut(0) {
            let m = slot.macs;
            // SAFETY: per-CPU scratch, used by this program run only.
            unsafe {
                (*hop).dst_mac = [m[0], m[1], m[2], m[3], m[4], m[5]];
                (*hop).src_mac = [m[6], m[7], m[8], m[9], m[10], m[11]];
            }
            return Path6::Forward(out_ifindex, true).encode();
        }
    }
    let epoch = crate::route::route_epoch();
    let mut params = core::mem::MaybeUninit::uninit();
    // SAFETY: plain-old-data struct of integers; all-zero is a valid value.
    let params: &mut FibParams = unsafe { crate::mem::zeroed(&mut params) };
    params.family = AF_INET6;
    params.l4_protocol = k.protocol;
    params.ifindex = in_ifindex;
    params.__bindgen_anon_3.ipv6_src = src;
    params.__bindgen_anon_4.ipv6_dst = dst;
    // SAFETY: params is a valid, writable bpf_fib_lookup on the stack.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            params,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    } as u32;
    let path = match rc {
        BPF_FIB_LKUP_RET_NOT_FWDED | BPF_FIB_LKUP_RET_FWD_DISABLED => Path6::Local,
        // ip6_forward() answers hop limit ≤ 1 before the FORWARD hook.
        BPF_FIB_LKUP_RET_SUCCESS if k.ttl > 1 => {
            let known = match NEXT_HOP6.get_ptr_mut(0) {
                Some(hop) => {
                    // SAFETY: per-CPU scratch, used by this program run only.
                    unsafe {
                        crate::mem::write_bytes((*hop).src_mac.as_mut_ptr(), params.smac);
                        crate::mem::write_bytes((*hop).dst_mac.as_mut_ptr(), params.dmac);
                    }
                    true
                }
                None => false,
            };
            crate::route::remember6(
                &src,
                &dst,
                (in_ifindex, params.ifindex, k.protocol),
                (params.dmac, params.smac),
                epoch,
            );
            Path6::Forward(params.ifindex, known)
        }
        BPF_FIB_LKUP_RET_NO_NEIGH if k.ttl > 1 => Path6::Forward(params.ifindex, false),
        _ => Path6::Kernel,
    };
    path.encode()
}

/// The packet's conntrack state, as `pipeline::connection_state` gives an
/// IPv4 packet's: UNTRACKED while no rule needs tracking (`active`, which
/// also says whether translated connections may exist: a miss then looks
/// in their index). `from_outside`: checksums are verified (netfilter
/// does at PREROUTING only).
#[inline(always)]
fn connection_state(
    pkt: &mut Packet,
    start: usize,
    end: usize,
    active: Active,
    from_outside: bool,
) -> u32 {
    if !active.tracking() {
        return ct_state::UNTRACKED;
    }
    read_icmp6(pkt, start, end);
    conntrack::track6(pkt, start, end, active.translations(), from_outside);
    conntrack::state6()
}

/// The ICMPv6 header's type and code (as the L4 keys, as ICMP's are) and
/// identifier, for conntrack: `l4_complete` when its 8 bytes are in the
/// payload. The parser's upper-layer offset (`walk_off`) says where it is.
#[inline(always)]
fn read_icmp6(pkt: &mut Packet, start: usize, end: usize) {
    if pkt.keys.protocol != IPPROTO_ICMPV6 || pkt.fragment {
        return;
    }
    let l4 = pkt.walk_off as usize & WALK_OFF_MASK;
    if l4 + ICMP_HLEN > pkt.l3 + pkt.total_len() {
        pkt.l4_complete = false;
        return;
    }
    let Some(h) = load::<[u8; 8]>(start, end, l4) else {
        pkt.l4_complete = false;
        return;
    };
    pkt.keys.l4a = h[0] as u32;
    pkt.keys.l4b = h[1] as u32;
    pkt.icmp_id = u16::from_be_bytes([h[4], h[5]]);
    pkt.l4_complete = true;
}

/// As the parser bounds its walk's offset (parse.rs `WALK_OFF_MASK`).
const WALK_OFF_MASK: usize = 0x3fff;

/// From `netbeast_tc_egress`, for the host's own IPv6 packet: the IPv6
/// egress program when an IPv6 ruleset is in use, else untouched.
#[inline(always)]
pub fn egress_hand_off(ctx: &TcContext) -> i32 {
    if Active::read().ipv6() {
        // SAFETY: a tail call from the program's entry; it returns only when
        // the array has no program (then the packet leaves untouched).
        unsafe { IPV6_EGRESS.tail_call(ctx, 0) };
    }
    TC_ACT_OK
}

/// `netbeast_tc_egress6`: a packet the host sends (`netbeast_tc_egress`
/// pulled its headers into the linear part and checked it is not a
/// forwarded one). Tracked without checksum checks (netfilter verifies at
/// PREROUTING only), then the OUTPUT chain of ip6tables with `-o` = the
/// interface; ACCEPT confirms its connection, so replies to the host's
/// own connections are ESTABLISHED at ingress.
#[inline(always)]
pub fn egress(ctx: &TcContext) -> i32 {
    let active = Active::read();
    if !active.ipv6() {
        return TC_ACT_OK;
    }
    // SAFETY: the context's skb pointer is valid for the program run.
    let (ingress_ifindex, ifindex) =
        unsafe { ((*ctx.skb.skb).ingress_ifindex, (*ctx.skb.skb).ifindex) };
    if ingress_ifindex != 0 {
        // Forwarded (handed off for its source translation only): judged
        // at XDP ingress.
        if active.translations() {
            forwarded_source_nat6(ctx);
        }
        return TC_ACT_OK;
    }
    let (start, end, frame_len) = (ctx.data(), ctx.data_end(), ctx.len() as usize);
    let Parsed::Ipv6(l3) = parse(start, end, frame_len) else {
        return TC_ACT_OK;
    };
    // The host's own packets: a malformed one is the host's business (the
    // receiver's stack judges it), as for IPv4 at egress.
    let Parsed6::Packet(pkt) = parse_ipv6(start, end, l3, frame_len) else {
        return TC_ACT_OK;
    };
    bump(stats::OUTPUT);
    bump(stats::IPV6);
    // The host's packet carries its socket's mark (SO_MARK) into OUTPUT;
    // what `-j MARK` makes of it is written back below (as for IPv4).
    // SAFETY: the context's skb pointer is valid for the program run.
    let socket_mark = unsafe { (*ctx.skb.skb).mark };
    pkt.search.mark = socket_mark;
    pkt.search.mss = 0;
    pkt.search.trace_id = trace_id(active);
    // The facts of this packet's extension headers, as at ingress: left
    // out, OUTPUT's -m rt, -m frag and -m ipv6header read those of the
    // last packet this CPU parsed (an ICMPv6 error the kernel sends
    // while it handles the packet it is about: that one's).
    if active.ipv6_headers() {
        crate::parse::netbeast_ipv6_facts(pkt.keys.protocol as u32);
    }
    if active.bits() & (netbeast_common::ACTIVE_SCTP_CHUNKS | netbeast_common::ACTIVE_DCCP) != 0 {
        crate::parse::netbeast_sctp_walk_tc(ctx.skb.skb, active.bits(), 1);
    }
    let generation = active.generation();
    // ip6tables' raw OUTPUT, before conntrack (see `ingress`).
    let untracked = if active.raw() {
        let verdict = raw6(pkt, generation, chain::RAW6_OUTPUT, 0, ifindex);
        if crate::pipeline::raw_drops(&verdict) {
            bump(stats::DROPPED);
            return TC_ACT_SHOT;
        }
        pkt.search.untrack != 0
    } else {
        false
    };
    let (active, state) = if untracked {
        (active.untracked(), conntrack::untrack6())
    } else {
        (active, connection_state(pkt, start, end, active, false))
    };
    // mangle OUTPUT: after conntrack, before filter OUTPUT. (No LOG events
    // from the IPv6 egress program yet, filter's OUTPUT's neither.)
    if active.mangle()
        && mangle6_drops_tc(
            ctx,
            pkt,
            generation,
            chain::MANGLE6_OUTPUT,
            (ifindex as u64) << 32,
            state,
        )
    {
        bump(stats::DROPPED);
        return TC_ACT_SHOT;
    }
    // nat OUTPUT's mark for the connection's first packet (as for IPv4).
    if active.nat() && crate::nat::pending6() {
        if let Some(mark) = crate::nat_sock::take_mark(ctx.skb.skb as *mut _) {
            pkt.search.mark = mark;
        }
    }
    pkt.keys.in_ifindex = 0;
    pkt.keys.out_ifindex = ifindex;
    pkt.keys.ct_state = conntrack::key6(state);
    let decided = classify(
        generation,
        chain::OUTPUT6,
        &pkt.keys,
        pkt.keys.length as u64,
        &mut pkt.search,
    );
    trace(pkt, generation, chain::OUTPUT6, &decided);
    let (verdict, with) = match decided {
        Verdict::Policy(policy) => (policy, 0),
        Verdict::Rule(action) => (action.target, action.arg),
    };
    match verdict {
        target::ACCEPT => {
            // mangle POSTROUTING, after filter OUTPUT.
            if active.mangle()
                && mangle6_drops_tc(
                    ctx,
                    pkt,
                    generation,
                    chain::MANGLE6_POSTROUTING,
                    (ifindex as u64) << 32,
                    state,
                )
            {
                bump(stats::DROPPED);
                return TC_ACT_SHOT;
            }
            if active.nat() && crate::nat::pending6() {
                let verdict = run_chain6(
                    pkt,
                    generation,
                    chain::NAT6_POSTROUTING,
                    (ifindex as u64) << 32,
                    conntrack::key6(state),
                );
                let (target, arg) = verdict.words();
                if crate::nat::netbeast_nat6_postrouting(generation, target, arg, ifindex) != 0 {
                    bump(stats::DROPPED);
                    return TC_ACT_SHOT;
                }
            }
            if active.tracking() {
                conntrack::confirm6();
            }
            if active.translations() {
                crate::nat::netbeast_translate6_tc(ctx.skb.skb, SIDE_SOURCE);
            }
            // `-j TCPMSS`, as the packet leaves (the skb may grow).
            if crate::tcpmss::apply_tc(ctx.skb.skb, pkt, l4_offset(pkt), true, ifindex) {
                bump(stats::DROPPED);
                return TC_ACT_SHOT;
            }
            // The mark the chains left is the packet's from here on, as
            // for IPv4.
            if pkt.search.mark != socket_mark {
                // SAFETY: TC programs may write skb->mark.
                unsafe { (*ctx.skb.skb).mark = pkt.search.mark };
            }
            bump(stats::ACCEPTED);
            TC_ACT_OK
        }
        target::DROP => {
            bump(stats::DROPPED);
            TC_ACT_SHOT
        }
        target::REJECT => {
            // The ICMPv6 type, for the messages no error may answer.
            read_icmp6(pkt, start, end);
            if !crate::reject6::build_local_reply6(ctx, pkt, with) {
                return reject_local::silent();
            }
            // The answer crosses OUTPUT itself, as ip6tables sends it.
            let bytes = crate::reject6::local_reply_keys6(ctx, pkt, with);
            match classify(
                generation,
                chain::OUTPUT6,
                &pkt.keys,
                bytes,
                &mut pkt.search,
            ) {
                Verdict::Policy(target::ACCEPT) => reject_local::deliver(ifindex),
                Verdict::Rule(a) if a.target == target::ACCEPT => reject_local::deliver(ifindex),
                _ => reject_local::silent(),
            }
        }
        // As at ingress: never a drop for a code this program does not know.
        _ => {
            bump(stats::UNKNOWN_TARGET);
            TC_ACT_OK
        }
    }
}

/// The source half of the translation of an IPv6 packet the kernel
/// forwards (its destination half was done at XDP ingress), as
/// `pipeline::forwarded_source_nat` does an IPv4 one's.
#[inline(never)]
fn forwarded_source_nat6(ctx: &TcContext) {
    let (start, end, frame_len) = (ctx.data(), ctx.data_end(), ctx.len() as usize);
    let Parsed::Ipv6(l3) = parse(start, end, frame_len) else {
        return;
    };
    let Parsed6::Packet(pkt) = parse_ipv6(start, end, l3, frame_len) else {
        return;
    };
    read_icmp6(pkt, start, end);
    conntrack::peek6(pkt, start, end);
    crate::nat::netbeast_translate6_tc(ctx.skb.skb, SIDE_SOURCE);
}

/// The upper-layer header's offset in the frame, where the parser's
/// extension-header walk left it.
#[inline(always)]
fn l4_offset(pkt: &Packet) -> usize {
    // SAFETY: a plain load from the per-CPU slot.
    (unsafe { core::ptr::read_volatile(&pkt.walk_off) } & crate::parse::WALK_OFF_MASK) as usize
}
