//! The pipelines of DESIGN §3: parse, track, pick the chain, classify, act.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    programs::{TcContext, XdpContext},
};
use netbeast_common::{TCP_FLAGS_CUT, chain, ct_state, stats, target};

use crate::{
    classify::{Active, Verdict, classify},
    conntrack::{self, confirm, peek, track},
    discard::{kernel_discards, link_group_frame},
    forward::netbeast_forward_xdp,
    handoff,
    log::{self, Where},
    nat::{self, Side, TcFrame, XdpFrame},
    parse::{Packet, Parsed, parse, parse_ingress},
    reject::reject,
    reject_local,
    route::{Path, path, reply_source},
    stats::bump,
    synproxy,
};

/// The packet's connection tracking state: UNTRACKED while no rule needs
/// tracking (as with iptables, which loads conntrack on demand).
/// `from_outside`: the packet came in on an interface (netfilter verifies
/// L4 checksums at PREROUTING only, not for the host's own packets).
#[inline(always)]
fn connection_state(
    active: Active,
    pkt: &Packet,
    start: usize,
    end: usize,
    from_outside: bool,
) -> u32 {
    if !active.tracking() {
        return ct_state::UNTRACKED;
    }
    // The zone the raw table's `-j CT --zone` gave it (0 without one: the
    // pipeline clears the template for each packet, the raw chain's search
    // sets it). Read from the packet slot, not kept in a local: one more
    // live value in the entry's frame took the IPv4 program's call chain
    // past the 512 bytes of stack.
    conntrack::set_zone(pkt.search.ct_template);
    track(pkt, start, end, active.translations(), from_outside);
    conntrack::state()
}

/// True when a raw or mangle chain's outcome drops the packet (a DROP
/// rule or a DROP policy); anything else lets it go on (ACCEPT ends only
/// that chain). Both families' programs.
#[inline(always)]
pub fn raw_drops(verdict: &Verdict) -> bool {
    match verdict {
        Verdict::Policy(policy) => *policy == target::DROP,
        Verdict::Rule(action) => action.target == target::DROP,
    }
}

/// Runs mangle `chain` on an arriving packet, with its LOG events and
/// trace: true when it drops the packet (a DROP rule or policy; ACCEPT
/// ends only the mangle chain, as in the kernel, whose later hooks still
/// run).
#[inline(always)]
fn mangle_drops_xdp(
    ctx: &XdpContext,
    pkt: &mut Packet,
    generation: u32,
    chain: u32,
    in_ifindex: u32,
    out_ifindex: u32,
    ct_state: u32,
) -> bool {
    let verdict = run_chain(generation, chain, pkt, in_ifindex, out_ifindex, ct_state);
    log_xdp(ctx, pkt, generation, chain, in_ifindex, out_ifindex);
    trace(pkt, generation, chain, &verdict);
    // `-j TTL`: the chains after this one, and the frame, get the new TTL.
    let forwarded = chain == chain::MANGLE_FORWARD || chain == chain::MANGLE_POSTROUTING;
    crate::rewrite::after_chain_xdp(ctx, pkt, forwarded, false);
    raw_drops(&verdict)
}

/// [`mangle_drops_xdp`] for the host's packets at TC egress.
#[inline(always)]
fn mangle_drops_tc(
    ctx: &TcContext,
    pkt: &mut Packet,
    generation: u32,
    chain: u32,
    out_ifindex: u32,
    ct_state: u32,
) -> bool {
    let verdict = run_chain(generation, chain, pkt, 0, out_ifindex, ct_state);
    log_tc(ctx, pkt, generation, chain, out_ifindex);
    trace(pkt, generation, chain, &verdict);
    crate::rewrite::after_chain_tc(ctx.skb.skb, pkt, false);
    raw_drops(&verdict)
}

#[inline(always)]
fn policy_action(policy: u32) -> u32 {
    if policy == target::DROP {
        bump(stats::DROPPED);
        xdp_action::XDP_DROP
    } else {
        bump(stats::ACCEPTED);
        xdp_action::XDP_PASS
    }
}

/// Runs `chain` on the packet with the given interfaces and state.
#[inline(always)]
fn run_chain(
    generation: u32,
    chain: u32,
    pkt: &mut Packet,
    in_ifindex: u32,
    out_ifindex: u32,
    ct_state: u32,
) -> Verdict {
    pkt.keys.in_ifindex = in_ifindex;
    pkt.keys.out_ifindex = out_ifindex;
    pkt.keys.ct_state = conntrack::key(ct_state);
    classify(
        generation,
        chain,
        &pkt.keys,
        pkt.total_len() as u64,
        &mut pkt.search,
    )
}

#[inline(always)]
pub fn ingress(ctx: &XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    let pkt = match parse_ingress(start, end, end - start) {
        Parsed::Ipv4(pkt) => pkt,
        Parsed::NotIpv4 => {
            bump(stats::NOT_IPV4);
            return xdp_action::XDP_PASS;
        }
        Parsed::Ipv6(_) => return crate::ipv6::hand_off(ctx),
        Parsed::Malformed => {
            // Unparseable: the INPUT policy decides, as for a packet that
            // matches no rule (the kernel would discard most of these).
            bump(stats::MALFORMED);
            let generation = Active::read().generation();
            return policy_action(crate::classify::policy(generation, chain::INPUT));
        }
    };
    let in_ifindex = ctx.ingress_ifindex() as u32;
    // What the kernel drops before netfilter is no chain's: passed on for
    // the kernel to drop, uncounted and never answered.
    if kernel_discards(start, end, pkt, in_ifindex) {
        bump(stats::KERNEL_DROPPED);
        return xdp_action::XDP_PASS;
    }
    if pkt.fragment {
        bump(stats::FRAGMENTS);
    }
    let active = Active::read();
    pkt.search.trace_id = trace_id(active);
    // A packet from the wire has no mark yet (skb->mark 0 in the kernel's
    // PREROUTING); `-j MARK` rules set it as the chains run.
    pkt.search.mark = 0;
    pkt.search.mss = 0;
    // No conntrack template until raw PREROUTING gives one (`-j CT`).
    pkt.search.ct_template = 0;
    if active.l4_walks() {
        if active.tcp_options() {
            crate::parse::read_tcp_options(pkt, start, end);
        }
        crate::parse::netbeast_sctp_walk_xdp(ctx.ctx, active.bits(), 0);
    }
    // RFC 1858: a TCP header cut before its flags cannot be judged by the
    // rules that test them (its flags arrive with a later fragment, after
    // the verdict).
    if active.tcp_flags() && pkt.keys.tcp_flags == TCP_FLAGS_CUT as u16 {
        bump(stats::TCP_CUT);
        return xdp_action::XDP_DROP;
    }
    let generation = active.generation();
    // The raw table's PREROUTING comes first, before conntrack, as in the
    // kernel (NF_IP_PRI_RAW): what it drops costs no conntrack lookup,
    // and what it marks `-j CT --notrack` conntrack never sees (state
    // UNTRACKED, no entry made or updated, no nat). Its rules see no
    // connection yet: `--state INVALID`, as in the kernel.
    let mut untracked = false;
    if active.raw() {
        let verdict = run_chain(
            generation,
            chain::RAW_PREROUTING,
            pkt,
            in_ifindex,
            0,
            ct_state::INVALID,
        );
        log_xdp(ctx, pkt, generation, chain::RAW_PREROUTING, in_ifindex, 0);
        trace(pkt, generation, chain::RAW_PREROUTING, &verdict);
        if raw_drops(&verdict) {
            bump(stats::DROPPED);
            return xdp_action::XDP_DROP;
        }
        untracked = pkt.search.untrack != 0;
    }
    let tracking = active.tracking() && !untracked;
    let nat = active.nat() && !untracked;
    let translations = active.translations() && !untracked;
    // Conntrack before routing: the destination NAT gives (PREROUTING,
    // or the undoing of SNAT on a reply) decides where the packet goes.
    let ct_state = if untracked {
        conntrack::untrack()
    } else {
        connection_state(active, pkt, start, end, true)
    };
    // mangle PREROUTING: after conntrack, before nat PREROUTING's (and the
    // translation it decides), as the kernel's hook priorities order them.
    if active.mangle()
        && mangle_drops_xdp(
            ctx,
            pkt,
            generation,
            chain::MANGLE_PREROUTING,
            in_ifindex,
            0,
            ct_state,
        )
    {
        bump(stats::DROPPED);
        return xdp_action::XDP_DROP;
    }
    if translations {
        // What a translation below overwrites, REJECT puts back; cleared
        // only where translations run (REJECT reads it only there).
        pkt.dnat_from = (0, 0);
        // A service's DNAT comes first (DESIGN §10): a balanced connection
        // skips nat PREROUTING, as after a DNAT rule.
        let balanced = active.lb() && nat::pending() && crate::lb::balance();
        if nat && !balanced && nat::pending() {
            let verdict = run_chain(
                generation,
                chain::NAT_PREROUTING,
                pkt,
                in_ifindex,
                0,
                ct_state,
            );
            log_xdp(ctx, pkt, generation, chain::NAT_PREROUTING, in_ifindex, 0);
            trace(pkt, generation, chain::NAT_PREROUTING, &verdict);
            nat::prerouting(generation, verdict.words(), in_ifindex);
        }
        nat::translate(&XdpFrame::new(ctx), pkt, Side::Destination);
    }
    let (chain, out_ifindex) = match path(ctx, pkt) {
        Path::Local => {
            bump(stats::INPUT);
            (chain::INPUT, 0)
        }
        Path::Forward { .. } if link_group_frame(pkt) => {
            bump(stats::KERNEL_DROPPED);
            return xdp_action::XDP_PASS;
        }
        Path::Forward { out_ifindex } => {
            bump(stats::FORWARD);
            // ip_forward() lowers the TTL before the FORWARD hook: `-m ttl`
            // there sees it one lower (`path` forwards only TTLs above 1).
            pkt.keys.ttl = pkt.keys.ttl.wrapping_sub(1);
            (chain::FORWARD, out_ifindex)
        }
        Path::Kernel => {
            bump(stats::KERNEL_ROUTED);
            return xdp_action::XDP_PASS;
        }
    };
    // mangle INPUT or FORWARD, before filter's (chain numbers in the same
    // order: INPUT 0 → MANGLE_INPUT, FORWARD 1 → MANGLE_FORWARD). Here,
    // right after the routing decision, rather than just before filter's
    // run: there the verifier walked the rest of the pipeline again for
    // the states this call leaves (IPv4 program +100,000 instructions).
    // So an INPUT datagram's later fragments run it each, where the
    // kernel runs it once on the reassembled datagram.
    const { assert!(chain::MANGLE_FORWARD - chain::MANGLE_INPUT == chain::FORWARD - chain::INPUT) };
    if active.mangle()
        && mangle_drops_xdp(
            ctx,
            pkt,
            generation,
            chain::MANGLE_INPUT + chain - chain::INPUT,
            in_ifindex,
            out_ifindex,
            ct_state,
        )
    {
        bump(stats::DROPPED);
        return xdp_action::XDP_DROP;
    }
    // The kernel reassembles local datagrams before its INPUT hook, so
    // iptables' INPUT never sees a later fragment on its own: it judges the
    // whole datagram, whose verdict is the first fragment's (same header,
    // with the ports). Later fragments go to the reassembly, which completes
    // only if the first fragment was let through.
    if chain == chain::INPUT && pkt.fragment {
        return xdp_action::XDP_PASS;
    }
    // The SYN-flood guard of `attach --syn-flood-guard` comes before the
    // rules: SYNs to its ports never reach them (nor the kernel), and an
    // ACK with a valid cookie comes back to meet them as its connection's
    // packet.
    if chain == chain::INPUT && synproxy::guarding() {
        synproxy::enter_guard(ctx, pkt, ct_state, in_ifindex, tracking);
    }
    let decided = run_chain(generation, chain, pkt, in_ifindex, out_ifindex, ct_state);
    trace(pkt, generation, chain, &decided);
    let (verdict, reject_with) = match decided {
        Verdict::Policy(policy) => (policy, 0),
        Verdict::Rule(action) => (action.target, action.arg),
    };
    log_xdp(ctx, pkt, generation, chain, in_ifindex, out_ifindex);
    // mangle POSTROUTING for every forwarded packet FORWARD accepts,
    // before nat POSTROUTING (which sees a connection's first only).
    // Before the `match` rather than in its ACCEPT arm: there it cost the
    // verifier 66,000 more instructions.
    if verdict == target::ACCEPT
        && chain == chain::FORWARD
        && active.mangle()
        && mangle_drops_xdp(
            ctx,
            pkt,
            generation,
            chain::MANGLE_POSTROUTING,
            0,
            out_ifindex,
            ct_state,
        )
    {
        bump(stats::DROPPED);
        return xdp_action::XDP_DROP;
    }
    match verdict {
        target::ACCEPT => {
            if nat && chain == chain::FORWARD && nat::pending() {
                let verdict = run_chain(
                    generation,
                    chain::NAT_POSTROUTING,
                    pkt,
                    0,
                    out_ifindex,
                    ct_state,
                );
                log_xdp(ctx, pkt, generation, chain::NAT_POSTROUTING, 0, out_ifindex);
                trace(pkt, generation, chain::NAT_POSTROUTING, &verdict);
                if !nat::postrouting(generation, verdict.words(), out_ifindex) {
                    bump(stats::DROPPED);
                    return xdp_action::XDP_DROP;
                }
            }
            if tracking {
                confirm();
            }
            // `-j TCPMSS`, as the packet leaves (the frame may grow).
            let l4 = pkt.l2_len() + pkt.ip_header_len();
            if crate::tcpmss::apply_xdp(ctx.ctx, pkt, l4, false, in_ifindex) {
                bump(stats::DROPPED);
                return xdp_action::XDP_DROP;
            }
            bump(stats::ACCEPTED);
            if chain != chain::FORWARD {
                return handoff::pass(ctx, in_ifindex, pkt.search.mark);
            }
            // A connection `-j SYNPROXY` replayed to the server: the shield
            // translates its sequence numbers (and answers the server's
            // SYN-ACK), then the kernel forwards it.
            if tracking && conntrack::proxied() {
                return synproxy::enter_translate(ctx, in_ifindex);
            }
            // The way out (fast path or the kernel's) and the source NAT
            // of a redirected frame, in a global function (see there).
            forward_tail(ctx, out_ifindex, translations)
        }
        target::REJECT => {
            if translations {
                nat::untranslate(&XdpFrame::new(ctx), pkt);
            }
            let local = chain == chain::INPUT;
            let src = reply_source(in_ifindex, pkt.keys.dst, local);
            let action = reject(ctx, pkt, reject_with, src, local);
            handoff::reply(ctx, action, in_ifindex)
        }
        target::DROP => {
            bump(stats::DROPPED);
            xdp_action::XDP_DROP
        }
        // Only in INPUT (a listener of this host) and FORWARD (a server
        // behind the router): the compiler refuses it elsewhere.
        target::SYNPROXY if chain == chain::INPUT || chain == chain::FORWARD => {
            synproxy::enter_rule(
                ctx,
                reject_with,
                in_ifindex,
                tracking,
                chain == chain::FORWARD,
            )
        }
        // Not a filter verdict (the classifier never ends a search on a
        // code outside the targets table): the packet goes on.
        _ => {
            bump(stats::UNKNOWN_TARGET);
            xdp_action::XDP_PASS
        }
    }
}

/// Calls [`netbeast_forward_xdp`] with the program's context.
#[inline(always)]
fn forward_tail(ctx: &XdpContext, out_ifindex: u32, translations: bool) -> u32 {
    netbeast_forward_xdp(ctx.ctx, out_ifindex, translations as u32)
}

/// The packet's trace id: 0 (not traced) unless `netbeast trace` runs.
#[inline(always)]
pub fn trace_id(active: Active) -> u64 {
    if active.trace() {
        crate::trace::packet_id()
    } else {
        0
    }
}

/// Reports a chain's run on a traced packet (one test otherwise).
#[inline(always)]
pub fn trace(pkt: &Packet, generation: u32, chain: u32, verdict: &Verdict) {
    if pkt.search.trace_id != 0 {
        crate::trace::emit(generation, chain, &pkt.keys, &pkt.search, verdict);
    }
}

/// Emits the events of the LOG rules the last chain met (usually none:
/// one test).
#[inline(always)]
fn log_xdp(
    ctx: &XdpContext,
    pkt: &Packet,
    generation: u32,
    chain: u32,
    in_ifindex: u32,
    out_ifindex: u32,
) {
    if pkt.search.log_count != 0 {
        let at = Where {
            generation,
            chain,
            in_ifindex,
            out_ifindex,
            frame_len: (ctx.data_end() - ctx.data()) as u32,
            l3_offset: pkt.l2_len() as u32,
            l4_offset: (pkt.l2_len() + pkt.ip_header_len()) as u32,
            protocol: pkt.keys.protocol as u32,
        };
        log::emit_xdp(ctx, &pkt.search, &at);
    }
}

/// [`log_xdp`] for TC.
#[inline(always)]
fn log_tc(ctx: &TcContext, pkt: &Packet, generation: u32, chain: u32, out_ifindex: u32) {
    if pkt.search.log_count != 0 {
        let at = Where {
            generation,
            chain,
            in_ifindex: 0,
            out_ifindex,
            frame_len: ctx.len(),
            l3_offset: pkt.l2_len() as u32,
            l4_offset: (pkt.l2_len() + pkt.ip_header_len()) as u32,
            protocol: pkt.keys.protocol as u32,
        };
        log::emit_tc(ctx, &pkt.search, &at);
    }
}

/// Bytes the egress parser needs linear: Ethernet, the longest IPv4 header
/// and a TCP header.
const EGRESS_PULL: usize = 14 + 60 + 20;

/// Big packets of the host (GSO, paged) keep only part of their headers
/// in the linear area: pulls in what the parser reads. Returns the linear
/// window and the whole frame's length.
#[inline(always)]
fn pull_headers(ctx: &TcContext) -> (usize, usize, usize) {
    let frame_len = ctx.len() as usize;
    let want = if frame_len < EGRESS_PULL {
        frame_len
    } else {
        EGRESS_PULL
    };
    let _ = ctx.pull_data(want as u32);
    (ctx.data(), ctx.data_end(), frame_len)
}

/// TC egress: only locally generated packets are OUTPUT's; forwarded ones
/// (they came in on an interface) were filtered by FORWARD at ingress.
#[inline(always)]
pub fn egress(ctx: &TcContext) -> i32 {
    // SAFETY: the context's skb pointer is valid for the program run.
    let (ingress_ifindex, ifindex) =
        unsafe { ((*ctx.skb.skb).ingress_ifindex, (*ctx.skb.skb).ifindex) };
    let active = Active::read();
    if ingress_ifindex != 0 {
        // Forwarded: judged at XDP ingress; only its source NAT is left
        // (an IPv6 packet's in the IPv6 egress program).
        if active.translations() && forwarded_source_nat(ctx) {
            return crate::ipv6::egress_hand_off(ctx);
        }
        return TC_ACT_OK;
    }
    let (start, end, frame_len) = pull_headers(ctx);
    let pkt = match parse(start, end, frame_len) {
        Parsed::Ipv4(pkt) => pkt,
        Parsed::Ipv6(_) => return crate::ipv6::egress_hand_off(ctx),
        _ => return TC_ACT_OK,
    };
    bump(stats::OUTPUT);
    pkt.search.trace_id = trace_id(active);
    // The host's packet carries its socket's mark (SO_MARK) into OUTPUT,
    // as in the kernel; what `-j MARK` makes of it is written back below.
    // SAFETY: the context's skb pointer is valid for the program run.
    let socket_mark = unsafe { (*ctx.skb.skb).mark };
    pkt.search.mark = socket_mark;
    pkt.search.mss = 0;
    // No conntrack template until raw OUTPUT gives one (`-j CT`).
    pkt.search.ct_template = 0;
    if active.l4_walks() {
        if active.tcp_options() {
            crate::parse::read_tcp_options(pkt, start, end);
        }
        crate::parse::netbeast_sctp_walk_tc(ctx.skb.skb, active.bits(), 0);
    }
    // The raw table's OUTPUT, before conntrack (see `ingress`).
    let mut untracked = false;
    if active.raw() {
        let generation = active.generation();
        let verdict = run_chain(
            generation,
            chain::RAW_OUTPUT,
            pkt,
            0,
            ifindex,
            ct_state::INVALID,
        );
        log_tc(ctx, pkt, generation, chain::RAW_OUTPUT, ifindex);
        trace(pkt, generation, chain::RAW_OUTPUT, &verdict);
        if raw_drops(&verdict) {
            bump(stats::DROPPED);
            return TC_ACT_SHOT;
        }
        untracked = pkt.search.untrack != 0;
    }
    let tracking = active.tracking() && !untracked;
    let nat = active.nat() && !untracked;
    let translations = active.translations() && !untracked;
    let ct_state = if untracked {
        conntrack::untrack()
    } else {
        connection_state(active, pkt, start, end, false)
    };
    // mangle OUTPUT: after conntrack, before filter OUTPUT.
    if active.mangle()
        && mangle_drops_tc(
            ctx,
            pkt,
            active.generation(),
            chain::MANGLE_OUTPUT,
            ifindex,
            ct_state,
        )
    {
        bump(stats::DROPPED);
        return TC_ACT_SHOT;
    }
    // nat OUTPUT ran on the socket at connect (`nat_sock`); the mark it
    // gave is the first packet's, from here on.
    if nat && nat::pending() {
        if let Some(mark) = crate::nat_sock::take_mark(ctx.skb.skb as *mut _) {
            pkt.search.mark = mark;
        }
    }
    let decided = run_chain(
        active.generation(),
        chain::OUTPUT,
        pkt,
        0,
        ifindex,
        ct_state,
    );
    trace(pkt, active.generation(), chain::OUTPUT, &decided);
    let (verdict, reject_with) = match decided {
        Verdict::Policy(policy) => (policy, 0),
        Verdict::Rule(action) => (action.target, action.arg),
    };
    log_tc(ctx, pkt, active.generation(), chain::OUTPUT, ifindex);
    match verdict {
        target::ACCEPT => {
            // mangle POSTROUTING, before nat POSTROUTING.
            if active.mangle()
                && mangle_drops_tc(
                    ctx,
                    pkt,
                    active.generation(),
                    chain::MANGLE_POSTROUTING,
                    ifindex,
                    ct_state,
                )
            {
                bump(stats::DROPPED);
                return TC_ACT_SHOT;
            }
            if nat && nat::pending() {
                let generation = active.generation();
                let verdict = run_chain(
                    generation,
                    chain::NAT_POSTROUTING,
                    pkt,
                    0,
                    ifindex,
                    ct_state,
                );
                log_tc(ctx, pkt, generation, chain::NAT_POSTROUTING, ifindex);
                trace(pkt, generation, chain::NAT_POSTROUTING, &verdict);
                if !nat::postrouting(generation, verdict.words(), ifindex) {
                    bump(stats::DROPPED);
                    return TC_ACT_SHOT;
                }
            }
            if tracking {
                confirm();
            }
            if translations {
                nat::translate(&TcFrame::new(ctx), pkt, Side::Source);
            }
            // `-j TCPMSS`, as the packet leaves (the skb may grow).
            let l4 = pkt.l2_len() + pkt.ip_header_len();
            if crate::tcpmss::apply_tc(ctx.skb.skb, pkt, l4, false, ifindex) {
                bump(stats::DROPPED);
                return TC_ACT_SHOT;
            }
            // The mark the chains left is the packet's from here on (the
            // qdiscs and tc filters after netbeast), as iptables' skb->mark
            // is; a veth into another namespace scrubs it either way.
            if pkt.search.mark != socket_mark {
                // SAFETY: TC programs may write skb->mark.
                unsafe { (*ctx.skb.skb).mark = pkt.search.mark };
            }
            bump(stats::ACCEPTED);
            TC_ACT_OK
        }
        target::REJECT => {
            match reject_local::build_reply(ctx, pkt, reject_with) {
                reject_local::Reply::Built => {}
                reject_local::Reply::None => return reject_local::silent(),
                reject_local::Reply::RateLimited => return reject_local::rate_limited(),
            }
            let (keys, bytes) = reject_local::reply_keys(ctx, pkt, reject_with);
            match classify(
                active.generation(),
                chain::OUTPUT,
                &keys,
                bytes,
                &mut pkt.search,
            ) {
                Verdict::Policy(target::ACCEPT) => reject_local::deliver(ifindex),
                Verdict::Rule(a) if a.target == target::ACCEPT => reject_local::deliver(ifindex),
                _ => reject_local::silent(),
            }
        }
        target::DROP => {
            bump(stats::DROPPED);
            TC_ACT_SHOT
        }
        // As at ingress: an unknown code is never a drop.
        _ => {
            bump(stats::UNKNOWN_TARGET);
            TC_ACT_OK
        }
    }
}

/// The source half of the translation of a packet the kernel forwards
/// (its destination half was done at XDP ingress). True for an IPv6
/// packet, which the IPv6 egress program translates.
#[inline(never)]
fn forwarded_source_nat(ctx: &TcContext) -> bool {
    let (start, end, frame_len) = pull_headers(ctx);
    let pkt = match parse(start, end, frame_len) {
        Parsed::Ipv4(pkt) => pkt,
        Parsed::Ipv6(_) => return true,
        _ => return false,
    };
    peek(pkt, start, end);
    nat::translate(&TcFrame::new(ctx), pkt, Side::Source);
    false
}
