//! Network tests of INPUT versus FORWARD (DESIGN §2): a router namespace
//! between a client and a server, with netbeast attached to both router
//! interfaces. Packets to the router's own addresses meet INPUT; packets
//! passing through meet FORWARD, and only FORWARD.
//!
//! Every scenario also runs against the kernel's own iptables in the router
//! namespace (`iptables_oracle`).
//!
//! Needs root. Run: `cargo test -p netbeast --test forward`.

use std::net::SocketAddrV4;
use std::time::Duration;

use netbeast::netns::{
    ConnectOutcome::{Connected, Refused, TimedOut},
    Firewall, IcmpError, ROUTED_SERVER_ADDR, ROUTER_CLIENT_ADDR, ROUTER_SERVER_ADDR, Routed,
    require_root, tcp_connect_all, tcp_server,
};

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
const TIMEOUT: Duration = Duration::from_secs(1);

include!("support/scenario.rs");

// INPUT rules guard the router itself (both of its addresses), FORWARD rules
// guard what passes through; neither leaks into the other. Forwarded
// REJECTs answer the client like iptables does.
scenario!(input_and_forward_are_separate);
fn input_and_forward_are_separate(firewall: Firewall) {
    require_root();
    let bed = Routed::new("fwd", firewall).unwrap_or_else(|e| panic!("setting up: {e}"));
    let _router_servers = [22, 443].map(|port| tcp_server(&bed.router, port).unwrap());
    let _servers = [22, 80, 443, 8443].map(|port| tcp_server(&bed.server, port).unwrap());
    let router_near = |port| SocketAddrV4::new(ROUTER_CLIENT_ADDR, port);
    let router_far = |port| SocketAddrV4::new(ROUTER_SERVER_ADDR, port);
    let server = |port| SocketAddrV4::new(ROUTED_SERVER_ADDR, port);
    let targets = [
        router_near(22),
        router_far(22),
        router_near(443),
        server(22),
        server(80),
        server(443),
        server(8443),
    ];
    let before = tcp_connect_all(&bed.client, &targets, TIMEOUT).unwrap();
    assert!(
        before.iter().all(|o| *o == Connected),
        "before any rule: {before:?}"
    );

    for rule in [
        "-A INPUT -p tcp --dport 22 -j DROP",
        "-A FORWARD -p tcp --dport 443 -j DROP",
        "-A FORWARD -p tcp --dport 8443 -j REJECT",
    ] {
        bed.iptables_ok(rule).unwrap_or_else(|e| panic!("{e}"));
    }
    let expected = [
        (router_near(22), TimedOut),
        (router_far(22), TimedOut),
        (router_near(443), Connected),
        (server(22), Connected),
        (server(80), Connected),
        (server(443), TimedOut),
        (server(8443), Refused(IcmpError::PORT_UNREACHABLE)),
    ];
    let after = tcp_connect_all(&bed.client, &targets, TIMEOUT).unwrap();
    assert_outcomes(
        "with INPUT dropping 22 and FORWARD dropping 443, rejecting 8443",
        "",
        &expected,
        &after,
        || bed.firewall.save(&bed.router).unwrap_or_default(),
    );
}
