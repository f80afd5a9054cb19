//! netbeast's kernel side. This file holds only the entry points; each
//! feature lives in its own module with the maps it owns.
#![no_std]
// The atomic fetch-add of nth counters is BPF assembly (classify.rs
// `fetch_add`); the build runs with RUSTC_BOOTSTRAP=1 (TOOLCHAIN.md).
#![feature(asm_experimental_arch)]
#![no_main]

mod classify;
mod config;
mod connlimit;
mod conntrack;
mod csum;
mod dccp;
mod discard;
mod forward;
mod generator;
mod handoff;
mod hashlimit;
mod icmp_limit;
mod ipset;
mod ipv6;
mod lb;
mod log;
mod mem;
mod nat;
mod nat_sock;
mod parse;
mod pipeline;
mod recent;
mod redirect_floor;
mod reject;
mod reject6;
mod reject_local;
mod rewrite;
mod route;
mod scratch;
mod stats;
mod synproxy;
mod tcpmss;
mod trace;

use aya_ebpf::{
    macros::{cgroup_sock_addr, classifier, xdp},
    programs::{SockAddrContext, TcContext, XdpContext},
};

/// XDP ingress: conntrack, INPUT and FORWARD filter chains, forwarding
/// fast path.
#[xdp]
pub fn netbeast_xdp(ctx: XdpContext) -> u32 {
    handoff::arrive(&ctx);
    handoff::leave(&ctx, pipeline::ingress(&ctx))
}

/// XDP ingress for IPv6, reached by a tail call from `netbeast_xdp`: the
/// IPv6 filter chains (`ip6tables`).
#[xdp]
pub fn netbeast_xdp6(ctx: XdpContext) -> u32 {
    handoff::leave(&ctx, ipv6::program(&ctx))
}

/// TC egress: the OUTPUT chain for locally generated packets, and the
/// conntrack entries of the connections this host opens.
#[classifier]
pub fn netbeast_tc_egress(ctx: TcContext) -> i32 {
    pipeline::egress(&ctx)
}

/// TC egress for IPv6, reached by a tail call from `netbeast_tc_egress`:
/// the host's own IPv6 packets (conntrack, ip6tables' OUTPUT chain).
#[classifier]
pub fn netbeast_tc_egress6(ctx: TcContext) -> i32 {
    ipv6::egress(&ctx)
}

/// TC ingress: sends on the frames the XDP program handed off (REJECT
/// replies and fast-path frames for veths whose other end runs no XDP).
#[classifier]
pub fn netbeast_tc_ingress(ctx: TcContext) -> i32 {
    handoff::ingress(&ctx)
}

/// `bench --scenario synflood`'s generator: TCP SYNs from many sources.
#[xdp]
pub fn netbeast_syn_generator(ctx: XdpContext) -> u32 {
    generator::generate_syn(&ctx)
}

/// The SYN-flood shield (`-j SYNPROXY`, `attach --syn-flood-guard`),
/// tail-called by `netbeast_xdp`.
#[xdp]
pub fn netbeast_shield(ctx: XdpContext) -> u32 {
    handoff::leave(&ctx, synproxy::run(&ctx))
}

/// `-j SYNPROXY` in FORWARD: the replay of a valid client to the server
/// behind the router and the translation of its connection, tail-called by
/// the shield and by `netbeast_xdp`.
#[xdp]
pub fn netbeast_synfwd(ctx: XdpContext) -> u32 {
    handoff::leave(&ctx, synproxy::run_forward(&ctx))
}

/// `-t nat OUTPUT` for local sockets: translates the destination of a
/// `connect` (TCP, UDP).
#[cgroup_sock_addr(connect4)]
pub fn netbeast_connect4(ctx: SockAddrContext) -> i32 {
    nat_sock::translate(&ctx, false)
}

/// `-t nat OUTPUT` for datagrams sent with an address (unconnected UDP).
#[cgroup_sock_addr(sendmsg4)]
pub fn netbeast_sendmsg4(ctx: SockAddrContext) -> i32 {
    nat_sock::translate(&ctx, true)
}

/// The source of datagrams received from a translated destination, as the
/// application addressed it.
#[cgroup_sock_addr(recvmsg4)]
pub fn netbeast_recvmsg4(ctx: SockAddrContext) -> i32 {
    nat_sock::reverse(&ctx)
}

/// The peer of a translated socket, as the application addressed it.
#[cgroup_sock_addr(getpeername4)]
pub fn netbeast_getpeername4(ctx: SockAddrContext) -> i32 {
    nat_sock::reverse(&ctx)
}

/// `ip6tables -t nat OUTPUT` for local IPv6 sockets: as `connect4`.
#[cgroup_sock_addr(connect6)]
pub fn netbeast_connect6(ctx: SockAddrContext) -> i32 {
    nat_sock::translate6(&ctx, false)
}

/// As `sendmsg4`, for IPv6 datagrams.
#[cgroup_sock_addr(sendmsg6)]
pub fn netbeast_sendmsg6(ctx: SockAddrContext) -> i32 {
    nat_sock::translate6(&ctx, true)
}

/// As `recvmsg4`, for IPv6 datagrams.
#[cgroup_sock_addr(recvmsg6)]
pub fn netbeast_recvmsg6(ctx: SockAddrContext) -> i32 {
    nat_sock::reverse6(&ctx)
}

/// As `getpeername4`, for IPv6 sockets.
#[cgroup_sock_addr(getpeername6)]
pub fn netbeast_getpeername6(ctx: SockAddrContext) -> i32 {
    nat_sock::reverse6(&ctx)
}

/// The benchmark's floor: drops everything, doing nothing else. The fastest
/// any XDP program can go on this machine.
#[xdp]
pub fn netbeast_floor(_ctx: XdpContext) -> u32 {
    aya_ebpf::bindings::xdp_action::XDP_DROP
}

/// The forwarding benchmarks' floor: redirects every frame out of the
/// router's other interface, doing nothing else (DESIGN §8).
#[xdp]
pub fn netbeast_redirect_floor(ctx: XdpContext) -> u32 {
    redirect_floor::redirect(&ctx)
}

/// The benchmark's packet generator: run in live-frames mode, it sends
/// every frame back out of its veth with XDP_TX (DESIGN §8).
#[xdp]
pub fn netbeast_generator(ctx: XdpContext) -> u32 {
    generator::generate(&ctx)
}

/// The fan-out generator's entry (`bench --generator fanout`), on its own
/// veth: every arriving frame to each entry of its devmap (DESIGN §8).
#[xdp]
pub fn netbeast_fanout(_ctx: XdpContext) -> u32 {
    generator::fan_out()
}

/// The fan-out generator's devmap program: each copy made into the
/// generator's next frame, then transmitted.
#[xdp(map = "devmap")]
pub fn netbeast_fanout_generator(ctx: XdpContext) -> u32 {
    generator::generate_copy(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
