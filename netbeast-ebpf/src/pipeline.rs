//! The ingress pipeline of DESIGN §3: parse, pick the chain, classify, act.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use netbeast_common::{chain, ct_state, stats, target};

use crate::{
    classify::{Keys, Verdict, active_generation, classify},
    parse::{Parsed, parse},
    reject::reject,
    route::{Path, path, reply_source},
    stats::bump,
};

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

#[inline(always)]
pub fn ingress(ctx: &XdpContext) -> u32 {
    bump(stats::PACKETS);
    let (start, end) = (ctx.data(), ctx.data_end());
    let pkt = match parse(start, end) {
        Parsed::Ipv4(pkt) => pkt,
        Parsed::NotIpv4 => {
            bump(stats::NOT_IPV4);
            return xdp_action::XDP_PASS;
        }
        Parsed::Malformed => {
            // Unparseable: the INPUT policy decides, as for a packet that
            // matches no rule (the kernel would discard most of these).
            bump(stats::MALFORMED);
            return policy_action(crate::classify::policy(active_generation(), chain::INPUT));
        }
    };
    if pkt.fragment {
        bump(stats::FRAGMENTS);
    }
    let in_ifindex = ctx.ingress_ifindex() as u32;
    let (chain, out_ifindex) = match path(ctx, &pkt) {
        Path::Local => {
            bump(stats::INPUT);
            (chain::INPUT, 0)
        }
        Path::Forward { out_ifindex } => {
            bump(stats::FORWARD);
            (chain::FORWARD, out_ifindex)
        }
        Path::Kernel => return xdp_action::XDP_PASS,
    };
    let keys = Keys {
        src: pkt.src,
        dst: pkt.dst,
        protocol: pkt.protocol,
        l4a: pkt.l4a,
        l4b: pkt.l4b,
        in_ifindex,
        out_ifindex,
        mac: pkt.src_mac,
        ct_state: ct_state::UNTRACKED,
    };
    let generation = active_generation();
    match classify(generation, chain, &keys, pkt.total_len as u64) {
        Verdict::Policy(policy) => policy_action(policy),
        Verdict::Rule(action) => match action.target {
            target::ACCEPT => {
                bump(stats::ACCEPTED);
                xdp_action::XDP_PASS
            }
            target::REJECT => {
                let src = reply_source(in_ifindex, pkt.dst, chain == chain::INPUT);
                reject(ctx, &pkt, action.reject_with, src)
            }
            _ => {
                bump(stats::DROPPED);
                xdp_action::XDP_DROP
            }
        },
    }
}
