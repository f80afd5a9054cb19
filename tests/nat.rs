//! NAT (issue 4) as network tests: the article's NAT router, a home router
//! with two hosts behind MASQUERADE, port forwarding to an address of the
//! host, to 127.0.0.1 and to a LAN server (alone and with MASQUERADE:
//! double NAT), REDIRECT, SNAT and MASQUERADE of the host's own
//! connections, what a flush of the nat table leaves working, and what a
//! flush of the connection table lets start afresh. Every scenario also
//! runs with the kernel's own iptables (`iptables_oracle`), which proves
//! the topology and the expectations; netbeast must match.
//!
//! The servers answer with the client address they saw
//! ([`peer_server`], [`udp_peer_server`]), so a test checks the
//! translation where it matters: at the far end. The routed scenarios run
//! netbeast with the XDP fast path on (POSTROUTING in XDP just before the
//! redirect) and off (the kernel forwards, POSTROUTING runs at TC egress).
//!
//! Needs root. Run: `cargo test -p netbeast --test nat`.

#[path = "support/mod.rs"]
mod support;
#[macro_use]
#[path = "support/nat_lab.rs"]
mod nat_lab;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};

use nat_lab::{
    CONNECT_TIMEOUT, TIMEOUT, TRANSFER, TRANSFER_TIMEOUT, Tuple, assert_forwarding_path,
    assert_tracked, conntrack_listing, fast_path_count, fast_path_on, prepare_host, udp_ask,
    udp_peer, udp_socket,
};
use netbeast::netns::{
    ConnectOutcome::{self, Reset, TimedOut},
    Firewall, IcmpError, Netns, UdpOutcome, peer_server, require_root, udp_exchange_from,
    udp_peer_server, veth_pair, wait_for,
};
use support::{roundtrip, stat};

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");

const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;

// ---------------------------------------------------------------------------
// Scenarios, topologies and small helpers

include!("support/scenario.rs");

/// `line` in `ns` with `firewall`, which must succeed.
#[track_caller]
fn iptables(firewall: &Firewall, ns: &Netns, line: &str) {
    firewall
        .iptables_ok(ns, line)
        .unwrap_or_else(|e| panic!("{e}"));
}

/// For failure messages: the IPv4 ruleset and connections of `ns`.
fn diagnostics(firewall: &Firewall, ns: &Netns) -> String {
    nat_lab::diagnostics(firewall, ns, false)
}

/// [`nat_lab::open`] of an IPv4 connection, within [`CONNECT_TIMEOUT`].
fn open(
    ns: &Netns,
    local: SocketAddrV4,
    server: SocketAddrV4,
    context: impl Fn() -> String,
) -> (TcpStream, SocketAddrV4) {
    let (stream, seen) = nat_lab::open(ns, local, server, CONNECT_TIMEOUT, context);
    (stream, v4(seen))
}

/// [`nat_lab::refused_or_lost`] within [`TIMEOUT`].
fn refused_or_lost(ns: &Netns, local: SocketAddrV4, server: SocketAddrV4) -> ConnectOutcome {
    nat_lab::refused_or_lost(ns, local, server, TIMEOUT)
}

/// `0.0.0.0:port`, where a server listens on every address.
fn any(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)
}

fn v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(a) => panic!("an IPv6 address in an IPv4 test: {a}"),
    }
}

// ---------------------------------------------------------------------------
// The article's NAT router

const LAN_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 6);
const ROUTER_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 4);
const ROUTER_DOCKER: Ipv4Addr = Ipv4Addr::new(10, 10, 7, 1);
const CONTAINER: Ipv4Addr = Ipv4Addr::new(10, 10, 7, 15);
const LAN_IFACE: &str = "nbt-lan";
const ROUTER_LAN_IFACE: &str = "nbt-r-lan";
const ROUTER_DOCKER_IFACE: &str = "nbt-r-dock";
const CONTAINER_IFACE: &str = "nbt-dock";

/// The article's FORWARD rules, in its order: the LAN host may open
/// connections to the container, the container may only answer.
const ARTICLE_FORWARD: [&str; 3] = [
    "-P FORWARD DROP",
    "-I FORWARD -s 192.168.0.6/32 -d 10.10.7.15/32 -j ACCEPT",
    "-I FORWARD -s 10.10.7.15/32 -d 192.168.0.6/32 -m conntrack --ctstate ESTABLISHED -j ACCEPT",
];
/// The article's SNAT, without which the container cannot answer at all.
const ARTICLE_SNAT: &str =
    "-t nat -I POSTROUTING -s 192.168.0.6/32 -d 10.10.7.15/32 -j SNAT --to 10.10.7.1";

/// LAN host — router — container. The container has only its on-link route
/// (10.10.7.0/24): it cannot answer 192.168.0.6 unless the router hides
/// the LAN host behind 10.10.7.1. Drop order: LAN host, router (netbeast
/// cleanup), container.
struct NatRouter {
    lan: Netns,
    router: Netns,
    container: Netns,
    firewall: Firewall,
}

impl NatRouter {
    fn new(tag: &str, firewall: Firewall) -> NatRouter {
        require_root();
        let setup = || -> netbeast::netns::Result<NatRouter> {
            let lan = Netns::new(&format!("{tag}-lan"))?;
            let router = firewall.guard(Netns::new(&format!("{tag}-rtr"))?);
            let container = Netns::new(&format!("{tag}-ctr"))?;
            veth_pair(
                &lan,
                LAN_IFACE,
                &format!("{LAN_HOST}/24"),
                &router,
                ROUTER_LAN_IFACE,
                &format!("{ROUTER_LAN}/24"),
            )?;
            veth_pair(
                &router,
                ROUTER_DOCKER_IFACE,
                &format!("{ROUTER_DOCKER}/24"),
                &container,
                CONTAINER_IFACE,
                &format!("{CONTAINER}/24"),
            )?;
            lan.add_route("10.10.7.0/24", ROUTER_LAN)?;
            router.sysctl("net.ipv4.ip_forward", "1")?;
            prepare_host(&lan, LAN_IFACE)?;
            prepare_host(&container, CONTAINER_IFACE)?;
            firewall.attach(&router, &[ROUTER_LAN_IFACE, ROUTER_DOCKER_IFACE])?;
            Ok(NatRouter {
                lan,
                router,
                container,
                firewall,
            })
        };
        setup().unwrap_or_else(|e| panic!("setting up the article's NAT router: {e}"))
    }

    #[track_caller]
    fn iptables(&self, line: &str) {
        iptables(&self.firewall, &self.router, line);
    }

    fn diagnostics(&self) -> String {
        format!(
            "router ruleset and connections:\n{}",
            diagnostics(&self.firewall, &self.router)
        )
    }
}

fn lan(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(LAN_HOST, port)
}

fn container(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(CONTAINER, port)
}

// The article's NAT router: with its SNAT rule the LAN host reaches the
// container over TCP and UDP, and the container sees 10.10.7.1 as the
// client; without it nothing comes back. `conntrack -L` on the router
// shows both tuples of each translated connection.
routed_scenario!(article_nat_router);
fn article_nat_router(firewall: Firewall) {
    let fast_path = fast_path_on(&firewall);
    let net = NatRouter::new("natrtr", firewall);
    let _tcp = peer_server(&net.container, any(TCP_PORT)).unwrap();
    let _udp = udp_peer_server(&net.container, any(UDP_PORT)).unwrap();
    for line in ARTICLE_FORWARD {
        net.iptables(line);
    }

    // Without the SNAT rule the container's answers have no way back.
    // Fixed source ports: the connections below must not find the entries
    // these attempts leave in conntrack.
    let outcome = refused_or_lost(&net.lan, lan(42000), container(TCP_PORT));
    assert_eq!(outcome, TimedOut, "TCP without SNAT\n{}", net.diagnostics());
    let reply =
        udp_exchange_from(&net.lan, lan(41000), container(UDP_PORT), b"query", TIMEOUT).unwrap();
    assert_eq!(
        reply,
        UdpOutcome::TimedOut,
        "UDP without SNAT\n{}",
        net.diagnostics()
    );

    net.iptables(ARTICLE_SNAT);
    let fast_before = fast_path.then(|| stat(&net.router, "fast_path"));
    let (mut stream, seen) = open(&net.lan, lan(42001), container(TCP_PORT), || {
        net.diagnostics()
    });
    assert_eq!(
        *seen.ip(),
        ROUTER_DOCKER,
        "the container must see the router's address as the TCP client\n{}",
        net.diagnostics()
    );
    roundtrip(&mut stream, &vec![7; TRANSFER], TRANSFER_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "data over the translated TCP connection: {e}\n{}",
            net.diagnostics()
        )
    });

    let reply = udp_exchange_from(
        &net.lan,
        lan(41001),
        container(UDP_PORT),
        b"query",
        CONNECT_TIMEOUT,
    )
    .unwrap();
    let udp_seen = udp_peer(&reply, b"query")
        .unwrap_or_else(|e| panic!("UDP with SNAT: {e}\n{}", net.diagnostics()));
    assert_eq!(
        udp_seen.ip(),
        ROUTER_DOCKER,
        "the container must see the router's address as the UDP client"
    );

    // Both tuples, as conntrack(8) shows them: the original from the LAN
    // host, the reply to the router's address and the port the server saw.
    assert_tracked(
        &net.firewall,
        &net.router,
        "tcp",
        Tuple::new(lan(42001), container(TCP_PORT)),
        Tuple::new(container(TCP_PORT), seen),
    );
    assert_tracked(
        &net.firewall,
        &net.router,
        "udp",
        Tuple::new(lan(41001), container(UDP_PORT)),
        Tuple::new(container(UDP_PORT), udp_seen),
    );

    if let Some(before) = fast_before {
        let fast = stat(&net.router, "fast_path") - before;
        // Both directions of a 256 KiB exchange: hundreds of segments, each
        // translated in XDP before its redirect.
        assert!(
            fast >= 100,
            "only {fast} translated packets took the XDP fast path\n{}",
            net.diagnostics()
        );
    }
}

// After `-t nat -F` new connections are no longer translated (the
// container cannot answer them), but the translated TCP connection and UDP
// flow that were open keep theirs: conntrack holds the binding.
routed_scenario!(flush_keeps_established_translations);
fn flush_keeps_established_translations(firewall: Firewall) {
    let net = NatRouter::new("natflush", firewall);
    let _tcp = peer_server(&net.container, any(TCP_PORT)).unwrap();
    let _udp = udp_peer_server(&net.container, any(UDP_PORT)).unwrap();
    for line in ARTICLE_FORWARD {
        net.iptables(line);
    }
    net.iptables(ARTICLE_SNAT);

    let (mut stream, seen) = open(&net.lan, lan(42010), container(TCP_PORT), || {
        net.diagnostics()
    });
    assert_eq!(*seen.ip(), ROUTER_DOCKER);
    roundtrip(&mut stream, b"before the flush", TRANSFER_TIMEOUT).unwrap();
    let flow = udp_socket(&net.lan, lan(41010), container(UDP_PORT));
    let udp_seen = udp_ask(&flow, b"before", CONNECT_TIMEOUT)
        .unwrap_or_else(|e| panic!("UDP before the flush: {e}\n{}", net.diagnostics()));
    assert_eq!(udp_seen.ip(), ROUTER_DOCKER);

    net.iptables("-t nat -F");

    roundtrip(&mut stream, &[3; 50_000], TRANSFER_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "the translated TCP connection after -t nat -F: {e}\n{}",
            net.diagnostics()
        )
    });
    let again = udp_ask(&flow, b"after", CONNECT_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "the translated UDP flow after -t nat -F: {e}\n{}",
            net.diagnostics()
        )
    });
    assert_eq!(
        again, udp_seen,
        "the UDP flow's binding changed with the flush"
    );

    let outcome = refused_or_lost(&net.lan, lan(42011), container(TCP_PORT));
    assert_eq!(
        outcome,
        TimedOut,
        "a new TCP connection after -t nat -F is not translated, so the container cannot answer\n{}",
        net.diagnostics()
    );
    let reply =
        udp_exchange_from(&net.lan, lan(41011), container(UDP_PORT), b"new", TIMEOUT).unwrap();
    assert_eq!(
        reply,
        UdpOutcome::TimedOut,
        "a new UDP flow after -t nat -F\n{}",
        net.diagnostics()
    );
}

// ---------------------------------------------------------------------------
// The home router: two hosts behind MASQUERADE

const HOME1: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
const HOME1_GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
const HOME2: Ipv4Addr = Ipv4Addr::new(192, 168, 2, 10);
const HOME2_GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 2, 1);
const WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const INTERNET_SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 80);
const HOME1_IFACE: &str = "nbt-h1";
const HOME2_IFACE: &str = "nbt-h2";
const ROUTER_HOME1_IFACE: &str = "nbt-r-h1";
const ROUTER_HOME2_IFACE: &str = "nbt-r-h2";
const ROUTER_WAN_IFACE: &str = "nbt-r-wan";
const SERVER_IFACE: &str = "nbt-srv";
/// The source port both home hosts use.
const SHARED_PORT: u16 = 40000;

/// Two home hosts, each on its own router interface, and a server beyond
/// the router's WAN interface with no route to the home subnets. Drop
/// order: hosts, router (netbeast cleanup), server.
struct HomeRouter {
    home1: Netns,
    home2: Netns,
    router: Netns,
    server: Netns,
    firewall: Firewall,
}

impl HomeRouter {
    fn new(tag: &str, firewall: Firewall) -> HomeRouter {
        require_root();
        let setup = || -> netbeast::netns::Result<HomeRouter> {
            let home1 = Netns::new(&format!("{tag}-h1"))?;
            let home2 = Netns::new(&format!("{tag}-h2"))?;
            let router = firewall.guard(Netns::new(&format!("{tag}-rtr"))?);
            let server = Netns::new(&format!("{tag}-srv"))?;
            for (host, iface, addr, router_iface, gateway) in [
                (
                    &home1,
                    HOME1_IFACE,
                    HOME1,
                    ROUTER_HOME1_IFACE,
                    HOME1_GATEWAY,
                ),
                (
                    &home2,
                    HOME2_IFACE,
                    HOME2,
                    ROUTER_HOME2_IFACE,
                    HOME2_GATEWAY,
                ),
            ] {
                veth_pair(
                    host,
                    iface,
                    &format!("{addr}/24"),
                    &router,
                    router_iface,
                    &format!("{gateway}/24"),
                )?;
                host.ip(&["route", "add", "default", "via", &gateway.to_string()])?;
                prepare_host(host, iface)?;
            }
            veth_pair(
                &router,
                ROUTER_WAN_IFACE,
                &format!("{WAN}/24"),
                &server,
                SERVER_IFACE,
                &format!("{INTERNET_SERVER}/24"),
            )?;
            prepare_host(&server, SERVER_IFACE)?;
            router.sysctl("net.ipv4.ip_forward", "1")?;
            firewall.attach(
                &router,
                &[ROUTER_HOME1_IFACE, ROUTER_HOME2_IFACE, ROUTER_WAN_IFACE],
            )?;
            Ok(HomeRouter {
                home1,
                home2,
                router,
                server,
                firewall,
            })
        };
        setup().unwrap_or_else(|e| panic!("setting up the home router: {e}"))
    }

    fn diagnostics(&self) -> String {
        format!(
            "router ruleset and connections:\n{}",
            diagnostics(&self.firewall, &self.router)
        )
    }
}

// Two home hosts, both from source port 40000, talk to the same server at
// once over TCP and UDP: the server sees two clients at the router's WAN
// address with two different ports (the first keeps 40000, which was
// free), and each host gets its own answers. Resets and ICMP errors about
// translated flows find their way back too.
routed_scenario!(home_router_masquerade);
fn home_router_masquerade(firewall: Firewall) {
    let net = HomeRouter::new("natmasq", firewall);
    let tcp_server = peer_server(&net.server, any(TCP_PORT)).unwrap();
    let _udp = udp_peer_server(&net.server, any(UDP_PORT)).unwrap();
    let server = |port| SocketAddrV4::new(INTERNET_SERVER, port);
    let home1 = SocketAddrV4::new(HOME1, SHARED_PORT);
    let home2 = SocketAddrV4::new(HOME2, SHARED_PORT);

    // Without MASQUERADE the server cannot answer the home subnets (another
    // source port: the attempt's conntrack entry must not be reused below).
    let outcome = refused_or_lost(
        &net.home1,
        SocketAddrV4::new(HOME1, 39999),
        server(TCP_PORT),
    );
    assert_eq!(
        outcome,
        TimedOut,
        "TCP without MASQUERADE\n{}",
        net.diagnostics()
    );

    iptables(
        &net.firewall,
        &net.router,
        &format!("-t nat -A POSTROUTING -o {ROUTER_WAN_IFACE} -j MASQUERADE"),
    );

    nat_lab::assert_two_hosts_share_a_port(
        [(&net.home1, home1.into()), (&net.home2, home2.into())],
        (&tcp_server, server(TCP_PORT).into()),
        server(UDP_PORT).into(),
        WAN.into(),
        || net.diagnostics(),
    );

    // Errors about a translated flow reach the home host: the server's
    // reset, and its ICMP port-unreachable, whose quoted headers name the
    // WAN address until the router translates them back.
    let closed = server(9);
    let outcome = refused_or_lost(&net.home1, SocketAddrV4::new(HOME1, 40001), closed);
    assert_eq!(
        outcome,
        Reset,
        "TCP to a closed port of the server\n{}",
        net.diagnostics()
    );
    let outcome = udp_exchange_from(
        &net.home1,
        SocketAddrV4::new(HOME1, 40001),
        closed,
        b"anyone?",
        CONNECT_TIMEOUT,
    )
    .unwrap();
    assert_eq!(
        outcome,
        UdpOutcome::Refused(Some(IcmpError::PORT_UNREACHABLE)),
        "UDP to a closed port of the server: the ICMP error must be translated back\n{}",
        net.diagnostics()
    );
}

// ---------------------------------------------------------------------------
// Port forwarding on a host

const HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 6);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 9);
const HOST_IFACE: &str = "nbt-host";
const CLIENT_IFACE: &str = "nbt-cli";

/// A client and the host (the article's 192.168.0.6) whose firewall
/// forwards ports to a local server. Drop order: client, host.
struct PortForward {
    client: Netns,
    host: Netns,
    firewall: Firewall,
}

impl PortForward {
    fn new(tag: &str, firewall: Firewall) -> PortForward {
        require_root();
        let setup = || -> netbeast::netns::Result<PortForward> {
            let client = Netns::new(&format!("{tag}-cli"))?;
            let host = firewall.guard(Netns::new(&format!("{tag}-host"))?);
            veth_pair(
                &client,
                CLIENT_IFACE,
                &format!("{CLIENT}/24"),
                &host,
                HOST_IFACE,
                &format!("{HOST}/24"),
            )?;
            prepare_host(&client, CLIENT_IFACE)?;
            firewall.attach(&host, &[HOST_IFACE])?;
            Ok(PortForward {
                client,
                host,
                firewall,
            })
        };
        setup().unwrap_or_else(|e| panic!("setting up the port forwarder: {e}"))
    }

    #[track_caller]
    fn iptables(&self, line: &str) {
        iptables(&self.firewall, &self.host, line);
    }

    fn diagnostics(&self) -> String {
        format!(
            "host ruleset and connections:\n{}",
            diagnostics(&self.firewall, &self.host)
        )
    }

    /// Connects from the client to the host's `port`, which a translation
    /// hands to a [`peer_server`]: the client must see the host's `port` as
    /// its peer (getpeername), the server the client as it is, and data
    /// must flow both ways. Returns the open connection.
    fn forwarded(&self, client_port: u16, port: u16) -> TcpStream {
        let local = SocketAddrV4::new(CLIENT, client_port);
        let target = SocketAddrV4::new(HOST, port);
        let (mut stream, seen) = open(&self.client, local, target, || self.diagnostics());
        assert_eq!(
            stream.peer_addr().map(v4).ok(),
            Some(target),
            "the client's getpeername must show the address it connected to"
        );
        assert_eq!(
            seen, local,
            "the server must see the client itself (no source translation)"
        );
        roundtrip(&mut stream, &[9; 100_000], TRANSFER_TIMEOUT)
            .unwrap_or_else(|e| panic!("data via {target}: {e}\n{}", self.diagnostics()));
        stream
    }
}

fn host(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(HOST, port)
}

// DNAT to an address of the host: a client connecting to host:80 is
// served by the server on 8080. After `-t nat -F` the open connection
// keeps working; a new one meets the closed port 80.
//
// The kernel tracks connections in a namespace only while some rule needs
// it: with the DNAT rule gone and no other such rule, it stops
// translating the open connection too (its next segment meets the closed
// port 80 and is reset). A filter rule on connection states, as most
// rulesets have, keeps tracking on, and the binding with it.
scenario!(port_forward_to_host_address);
fn port_forward_to_host_address(firewall: Firewall) {
    let net = PortForward::new("natpf", firewall);
    let _server = peer_server(&net.host, any(TCP_PORT)).unwrap();
    net.iptables("-A INPUT -m conntrack --ctstate INVALID -j DROP");
    let before = refused_or_lost(&net.client, SocketAddrV4::new(CLIENT, 43000), host(80));
    assert_eq!(before, Reset, "nothing listens on port 80 before the rule");

    net.iptables(
        "-t nat -I PREROUTING -d 192.168.0.6 -p tcp --dport 80 -j DNAT --to 192.168.0.6:8080",
    );
    let mut stream = net.forwarded(43001, 80);
    let client = SocketAddrV4::new(CLIENT, 43001);
    assert_tracked(
        &net.firewall,
        &net.host,
        "tcp",
        Tuple::new(client, host(80)),
        Tuple::new(host(TCP_PORT), client),
    );

    net.iptables("-t nat -F");
    roundtrip(&mut stream, &[4; 50_000], TRANSFER_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "the forwarded connection after -t nat -F: {e}\n{}",
            net.diagnostics()
        )
    });
    let after = refused_or_lost(&net.client, SocketAddrV4::new(CLIENT, 43002), host(80));
    assert_eq!(
        after,
        Reset,
        "a new connection to port 80 after -t nat -F reaches the closed port\n{}",
        net.diagnostics()
    );
}

// A REJECT behind a port forward answers as the client addressed the
// host: the kernel sends the reset or the ICMP error through the
// connection's NAT, so it comes from host:80 (and quotes the packet to
// host:80), not from the port 8080 the rule saw. A reply from 8080 would
// be ignored by the client, whose connection waits for a timeout.
scenario!(reject_behind_a_port_forward);
fn reject_behind_a_port_forward(firewall: Firewall) {
    let net = PortForward::new("natrj", firewall);
    let _server = peer_server(&net.host, any(TCP_PORT)).unwrap();
    net.iptables(
        "-t nat -I PREROUTING -d 192.168.0.6 -p tcp --dport 80 -j DNAT --to 192.168.0.6:8080",
    );
    net.iptables("-A INPUT -p tcp --dport 8080 -j REJECT --reject-with tcp-reset");
    let reset = refused_or_lost(&net.client, SocketAddrV4::new(CLIENT, 43010), host(80));
    assert_eq!(reset, Reset, "tcp-reset\n{}", net.diagnostics());
    net.iptables("-R INPUT 1 -p tcp --dport 8080 -j REJECT");
    let icmp = refused_or_lost(&net.client, SocketAddrV4::new(CLIENT, 43011), host(80));
    assert_eq!(
        icmp,
        ConnectOutcome::Refused(IcmpError::PORT_UNREACHABLE),
        "icmp-port-unreachable\n{}",
        net.diagnostics()
    );
}

// The article's port forwarder: DNAT to 127.0.0.1:8080, where a server
// listens on the loopback address only. The kernel drops packets for
// 127.0.0.0/8 that arrive on another interface unless that interface has
// route_localnet: the test sets it for iptables, as the article's reader
// must; netbeast must set it itself.
scenario!(port_forward_to_localhost);
fn port_forward_to_localhost(firewall: Firewall) {
    let is_netbeast = firewall.is_netbeast();
    let net = PortForward::new("natlo", firewall);
    let _server = peer_server(&net.host, SocketAddrV4::new(Ipv4Addr::LOCALHOST, TCP_PORT)).unwrap();
    // The server is out of the client's reach without the translation.
    let direct = refused_or_lost(
        &net.client,
        SocketAddrV4::new(CLIENT, 43010),
        host(TCP_PORT),
    );
    assert_eq!(
        direct, Reset,
        "the loopback-only server answered from outside"
    );

    if !is_netbeast {
        net.host
            .sysctl(&format!("net.ipv4.conf.{HOST_IFACE}.route_localnet"), "1")
            .unwrap();
    }
    net.iptables(
        "-t nat -I PREROUTING -d 192.168.0.6 -p tcp --dport 80 -j DNAT --to 127.0.0.1:8080",
    );
    let _stream = net.forwarded(43011, 80);
    let client = SocketAddrV4::new(CLIENT, 43011);
    assert_tracked(
        &net.firewall,
        &net.host,
        "tcp",
        Tuple::new(client, host(80)),
        Tuple::new(SocketAddrV4::new(Ipv4Addr::LOCALHOST, TCP_PORT), client),
    );
}

// REDIRECT: `--to-ports 8080` sends connections to any address of the
// host's port 81 to the local server on 8080.
scenario!(redirect_to_local_port);
fn redirect_to_local_port(firewall: Firewall) {
    let net = PortForward::new("natredir", firewall);
    let _server = peer_server(&net.host, any(TCP_PORT)).unwrap();
    let before = refused_or_lost(&net.client, SocketAddrV4::new(CLIENT, 43020), host(81));
    assert_eq!(before, Reset, "nothing listens on port 81 before the rule");
    net.iptables("-t nat -A PREROUTING -p tcp --dport 81 -j REDIRECT --to-ports 8080");
    let _stream = net.forwarded(43021, 81);
}

// ---------------------------------------------------------------------------
// Port forwarding to a LAN server, and double NAT

const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
const LAN_GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
const LAN_SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 4);
const OUTSIDE_IFACE: &str = "nbt-out";
/// The port the LAN server listens on, TCP and UDP.
const SERVICE_PORT: u16 = 8080;
/// A port DNATed to the LAN server, where nothing listens.
const CLOSED_SERVICE_PORT: u16 = 8181;

/// Whether the LAN server can answer the outside by itself.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ServerRoute {
    /// Its default route points at the router: DNAT alone suffices.
    ViaRouter,
    /// Only its on-link route: the router must also hide the client (SNAT).
    None,
}

/// A client outside (203.0.113.9) — the router (public address
/// 203.0.113.1, LAN 192.168.0.1) — a server on the LAN (192.168.0.4). The
/// client has only its on-link route, so it can reach nothing but the
/// router's public address. Drop order: client, router (netbeast
/// cleanup), server.
struct LanForward {
    client: Netns,
    router: Netns,
    server: Netns,
    firewall: Firewall,
}

impl LanForward {
    fn new(tag: &str, firewall: Firewall, route: ServerRoute) -> LanForward {
        require_root();
        let setup = || -> netbeast::netns::Result<LanForward> {
            let client = Netns::new(&format!("{tag}-cli"))?;
            let router = firewall.guard(Netns::new(&format!("{tag}-rtr"))?);
            let server = Netns::new(&format!("{tag}-srv"))?;
            veth_pair(
                &client,
                OUTSIDE_IFACE,
                &format!("{OUTSIDE}/24"),
                &router,
                ROUTER_WAN_IFACE,
                &format!("{WAN}/24"),
            )?;
            veth_pair(
                &router,
                ROUTER_LAN_IFACE,
                &format!("{LAN_GATEWAY}/24"),
                &server,
                SERVER_IFACE,
                &format!("{LAN_SERVER}/24"),
            )?;
            if route == ServerRoute::ViaRouter {
                server.ip(&["route", "add", "default", "via", &LAN_GATEWAY.to_string()])?;
            }
            prepare_host(&client, OUTSIDE_IFACE)?;
            prepare_host(&server, SERVER_IFACE)?;
            router.sysctl("net.ipv4.ip_forward", "1")?;
            firewall.attach(&router, &[ROUTER_WAN_IFACE, ROUTER_LAN_IFACE])?;
            Ok(LanForward {
                client,
                router,
                server,
                firewall,
            })
        };
        setup().unwrap_or_else(|e| panic!("setting up the router with a LAN server: {e}"))
    }

    #[track_caller]
    fn iptables(&self, line: &str) {
        iptables(&self.firewall, &self.router, line);
    }

    /// The port forward of both protocols: the router's public `port` to
    /// the LAN server's `to_port`.
    fn forward_port(&self, port: u16, to_port: u16) {
        for protocol in ["tcp", "udp"] {
            self.iptables(&format!(
                "-t nat -A PREROUTING -d {WAN} -p {protocol} --dport {port} \
                 -j DNAT --to-destination {LAN_SERVER}:{to_port}"
            ));
        }
    }

    fn diagnostics(&self) -> String {
        format!(
            "router ruleset and connections:\n{}",
            diagnostics(&self.firewall, &self.router)
        )
    }

    /// Connects from the client's `client_port` to the router's public
    /// `port`: the client's getpeername must say the public address and
    /// port it asked for. Returns the stream and the client address the
    /// LAN server saw.
    fn connect(&self, client_port: u16, port: u16) -> (TcpStream, SocketAddrV4) {
        let target = public(port);
        let (stream, seen) = open(&self.client, outside(client_port), target, || {
            self.diagnostics()
        });
        assert_eq!(
            stream.peer_addr().map(v4).ok(),
            Some(target),
            "the client's getpeername must show the router's public address\n{}",
            self.diagnostics()
        );
        (stream, seen)
    }

    /// One exchange on a client's UDP `socket` connected to the router's
    /// public address (so an answer from any other address would not be
    /// received): the client address the LAN server saw.
    fn udp(&self, socket: &UdpSocket, payload: &[u8]) -> SocketAddrV4 {
        let seen = udp_ask(socket, payload, CONNECT_TIMEOUT).unwrap_or_else(|e| {
            panic!(
                "UDP via the router's public address: {e}\n{}",
                self.diagnostics()
            )
        });
        v4(seen)
    }

    /// Public port 80 serves TCP from `client_port` and UDP from the port
    /// after it: the server sees `seen(port)` as the client, data goes both
    /// ways (on the fast path when it is on), conntrack shows both tuples.
    fn check_service(&self, client_port: u16, seen: fn(u16) -> SocketAddrV4, what: &str) {
        let fast_before = fast_path_count(&self.firewall, &self.router);
        let (mut stream, peer) = self.connect(client_port, 80);
        assert_eq!(
            peer,
            seen(client_port),
            "the LAN server's view of the {what} TCP client\n{}",
            self.diagnostics()
        );
        roundtrip(&mut stream, &vec![5; TRANSFER], TRANSFER_TIMEOUT).unwrap_or_else(|e| {
            panic!(
                "data over the {what} TCP connection: {e}\n{}",
                self.diagnostics()
            )
        });
        assert_forwarding_path(&self.firewall, &self.router, fast_before, 100, || {
            self.diagnostics()
        });
        assert_tracked(
            &self.firewall,
            &self.router,
            "tcp",
            Tuple::new(outside(client_port), public(80)),
            Tuple::new(lan_server(SERVICE_PORT), seen(client_port)),
        );
        let udp_port = client_port + 1;
        let flow = udp_socket(&self.client, outside(udp_port), public(80));
        let udp_seen = self.udp(&flow, what.as_bytes());
        assert_eq!(
            udp_seen,
            seen(udp_port),
            "the LAN server's view of the {what} UDP client\n{}",
            self.diagnostics()
        );
        assert_eq!(self.udp(&flow, b"again"), udp_seen);
        assert_tracked(
            &self.firewall,
            &self.router,
            "udp",
            Tuple::new(outside(udp_port), public(80)),
            Tuple::new(lan_server(SERVICE_PORT), seen(udp_port)),
        );
    }

    /// Public port 81 leads to a LAN port where nothing listens: the
    /// server's reset and port unreachable come back translated, so the
    /// client's kernel takes them (as from the public address).
    fn check_closed_port(&self, client_port: u16, what: &str) {
        let outcome = refused_or_lost(&self.client, outside(client_port), public(81));
        assert_eq!(
            outcome,
            Reset,
            "TCP to {what} where nothing listens\n{}",
            self.diagnostics()
        );
        let outcome = udp_exchange_from(
            &self.client,
            outside(client_port),
            public(81),
            b"anyone?",
            CONNECT_TIMEOUT,
        )
        .unwrap();
        assert_eq!(
            outcome,
            UdpOutcome::Refused(Some(IcmpError::PORT_UNREACHABLE)),
            "UDP to {what} where nothing listens\n{}",
            self.diagnostics()
        );
    }
}

fn outside(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(OUTSIDE, port)
}

fn public(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(WAN, port)
}

fn lan_server(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(LAN_SERVER, port)
}

fn lan_gateway(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(LAN_GATEWAY, port)
}

// The classic port forward: the router's public port 80 goes to a LAN
// server's 8080 (TCP and UDP), behind a FORWARD chain that lets in only
// that service and answers. The server routes back through the router, so
// it sees the client as it is; the client sees only the public address.
// A forwarded port where nothing listens answers with a reset (TCP) and a
// port unreachable (UDP), translated back, so the client hears "refused"
// at once. With the fast path off the kernel forwards and the replies'
// source is translated at TC egress; with it on, in XDP.
routed_scenario!(dnat_to_a_lan_server);
fn dnat_to_a_lan_server(firewall: Firewall) {
    let net = LanForward::new("natlan", firewall, ServerRoute::ViaRouter);
    let _tcp = peer_server(&net.server, any(SERVICE_PORT)).unwrap();
    let _udp = udp_peer_server(&net.server, any(SERVICE_PORT)).unwrap();
    net.iptables("-P FORWARD DROP");
    net.iptables("-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT");
    for protocol in ["tcp", "udp"] {
        for port in [SERVICE_PORT, CLOSED_SERVICE_PORT] {
            net.iptables(&format!(
                "-A FORWARD -d {LAN_SERVER} -p {protocol} --dport {port} -j ACCEPT"
            ));
        }
    }

    // Before the port forward, port 80 is the router's own, and closed.
    let before = refused_or_lost(&net.client, outside(44000), public(80));
    assert_eq!(
        before,
        Reset,
        "nothing listens on the router's port 80\n{}",
        net.diagnostics()
    );

    net.forward_port(80, SERVICE_PORT);
    net.forward_port(81, CLOSED_SERVICE_PORT);

    // The server sees the client itself.
    net.check_service(44001, outside, "forwarded");
    net.check_closed_port(44003, "a forwarded port");
}

// `-m conntrack --ctstate DNAT` and `--ctdir` in FORWARD: only connections
// whose destination nat PREROUTING translated get in (the client, given a
// route to the LAN, cannot reach the server directly), and their replies
// by their direction and status. netbeast decides DNAT in its XDP
// PREROUTING and must show it to FORWARD for the connection's very first
// packet, as netfilter does.
routed_scenario!(conntrack_dnat_state_and_direction);
fn conntrack_dnat_state_and_direction(firewall: Firewall) {
    let net = LanForward::new("ctdnat", firewall, ServerRoute::ViaRouter);
    let _tcp = peer_server(&net.server, any(SERVICE_PORT)).unwrap();
    let _udp = udp_peer_server(&net.server, any(SERVICE_PORT)).unwrap();
    net.client
        .ip(&[
            "route",
            "add",
            &format!("{LAN_SERVER}/32"),
            "via",
            &WAN.to_string(),
        ])
        .unwrap();
    net.iptables("-P FORWARD DROP");
    net.iptables("-A FORWARD -m conntrack --ctstate DNAT --ctdir ORIGINAL -j ACCEPT");
    net.iptables("-A FORWARD -m conntrack --ctdir REPLY --ctstatus SEEN_REPLY -j ACCEPT");
    net.forward_port(80, SERVICE_PORT);

    let direct = refused_or_lost(&net.client, outside(44020), lan_server(SERVICE_PORT));
    assert!(
        matches!(direct, TimedOut),
        "a connection to the LAN server that no DNAT translated: {direct:?} (expected dropped)\n{}",
        net.diagnostics()
    );
    net.check_service(44021, outside, "forwarded");
}

// `-m conntrack`'s tuples, protocol and expiry in FORWARD on a DNATed
// connection: the client's packets get through only by their original
// tuple (what the client sent: the router's public port 80) together with
// the reply tuple the translation made (the LAN server's port), the
// replies by their reply tuple and the time their connection has left.
// Port 81, forwarded to a closed port, fails the original port test: its
// SYN is dropped, so the client sees no reset.
routed_scenario!(conntrack_tuples_of_a_dnat_connection);
fn conntrack_tuples_of_a_dnat_connection(firewall: Firewall) {
    let net = LanForward::new("cttup", firewall, ServerRoute::ViaRouter);
    let _tcp = peer_server(&net.server, any(SERVICE_PORT)).unwrap();
    let _udp = udp_peer_server(&net.server, any(SERVICE_PORT)).unwrap();
    net.iptables("-P FORWARD DROP");
    net.iptables(&format!(
        "-A FORWARD -m conntrack --ctdir ORIGINAL ! --ctproto icmp --ctorigsrc {OUTSIDE}/24 \
         --ctorigdst {WAN} --ctorigdstport 80 --ctreplsrc {LAN_SERVER} \
         --ctreplsrcport {SERVICE_PORT} -j ACCEPT"
    ));
    net.iptables(&format!(
        "-A FORWARD -m conntrack --ctdir REPLY --ctrepldst {OUTSIDE} ! --ctrepldstport 0:1023 \
         --ctexpire 1:4294967295 -j ACCEPT"
    ));
    net.forward_port(80, SERVICE_PORT);
    net.forward_port(81, CLOSED_SERVICE_PORT);

    net.check_service(44031, outside, "forwarded by its tuples");
    let other = refused_or_lost(&net.client, outside(44032), public(81));
    assert!(
        matches!(other, TimedOut),
        "a connection whose original port is 81: {other:?} (expected dropped)\n{}",
        net.diagnostics()
    );
}

// `--ctexpire` as netfilter reads it: a connection's first packet, its
// entry not confirmed yet, has 0 seconds left; the packets after it have
// their state's timeout.
routed_scenario!(conntrack_expiry_of_first_and_later_packets);
fn conntrack_expiry_of_first_and_later_packets(firewall: Firewall) {
    let net = LanForward::new("ctexp", firewall, ServerRoute::ViaRouter);
    let _tcp = peer_server(&net.server, any(SERVICE_PORT)).unwrap();
    let _udp = udp_peer_server(&net.server, any(SERVICE_PORT)).unwrap();
    net.iptables("-P FORWARD DROP");
    net.iptables("-A FORWARD -m conntrack --ctstate NEW --ctexpire 0 -j ACCEPT");
    net.iptables("-A FORWARD -m conntrack --ctstate ESTABLISHED ! --ctexpire 0 -j ACCEPT");
    net.forward_port(80, SERVICE_PORT);
    net.check_service(44041, outside, "forwarded by their expiry");
}

// DNAT and SNAT on one connection: the LAN server has no route to the
// outside, so the router forwards its public port 80 to the server's 8080
// and MASQUERADEs what leaves by its LAN interface. The server sees the
// router's LAN address (with the client's port, which was free), the
// client sees the public address.
routed_scenario!(double_nat);
fn double_nat(firewall: Firewall) {
    let net = LanForward::new("natdbl", firewall, ServerRoute::None);
    let _tcp = peer_server(&net.server, any(SERVICE_PORT)).unwrap();
    let _udp = udp_peer_server(&net.server, any(SERVICE_PORT)).unwrap();

    // The destination translation alone: the server cannot answer.
    net.forward_port(80, SERVICE_PORT);
    let outcome = refused_or_lost(&net.client, outside(44100), public(80));
    assert_eq!(
        outcome,
        TimedOut,
        "TCP with DNAT but no SNAT\n{}",
        net.diagnostics()
    );
    let outcome =
        udp_exchange_from(&net.client, outside(44100), public(80), b"dnat", TIMEOUT).unwrap();
    assert_eq!(
        outcome,
        UdpOutcome::TimedOut,
        "UDP with DNAT but no SNAT\n{}",
        net.diagnostics()
    );

    net.iptables(&format!(
        "-t nat -A POSTROUTING -o {ROUTER_LAN_IFACE} -j MASQUERADE"
    ));
    // The server sees the router's LAN address, with the client's port
    // (free there).
    net.check_service(44101, lan_gateway, "doubly translated");
    // The server's reset and port unreachable go to the router's LAN
    // address, about a packet from it: both halves of the translation are
    // undone on the way back.
    net.forward_port(81, CLOSED_SERVICE_PORT);
    net.check_closed_port(44103, "a doubly translated port");
}

// Shifted port maps (`ports/base`) both ways: the router's public ports
// 3000-3009 go to the LAN server's 8000-8009 by their offset from 3000,
// and what leaves by the LAN interface is SNATed into 6000-6099 by the
// client's port (iptables gives SNAT's kernel target a base of 0: the port
// modulo 100). The server cannot route back, so it answers the router.
routed_scenario!(port_offsets);
fn port_offsets(firewall: Firewall) {
    let net = LanForward::new("natoff", firewall, ServerRoute::None);
    let _tcp = peer_server(&net.server, any(8005)).unwrap();
    let _udp = udp_peer_server(&net.server, any(8005)).unwrap();
    for protocol in ["tcp", "udp"] {
        net.iptables(&format!(
            "-t nat -A PREROUTING -d {WAN} -p {protocol} --dport 3000:3009 \
             -j DNAT --to-destination {LAN_SERVER}:8000-8009/3000"
        ));
        net.iptables(&format!(
            "-t nat -A POSTROUTING -o {ROUTER_LAN_IFACE} -p {protocol} \
             -j SNAT --to-source {LAN_GATEWAY}:6000-6099/7"
        ));
    }
    // 3005 is 5 past the base: the server's 8005; the client's port
    // 44105 is 5 modulo 100: 6005.
    let (_stream, seen) = open(&net.client, outside(44105), public(3005), || {
        net.diagnostics()
    });
    assert_eq!(seen, lan_gateway(6005), "TCP\n{}", net.diagnostics());
    assert_tracked(
        &net.firewall,
        &net.router,
        "tcp",
        Tuple::new(outside(44105), public(3005)),
        Tuple::new(lan_server(8005), lan_gateway(6005)),
    );
    let flow = udp_socket(&net.client, outside(44107), public(3005));
    let seen = net.udp(&flow, b"offset");
    assert_eq!(seen, lan_gateway(6007), "UDP\n{}", net.diagnostics());
    // 3004 goes to 8004, where nothing listens.
    let outcome = refused_or_lost(&net.client, outside(44110), public(3004));
    assert_eq!(outcome, Reset, "TCP to 3004\n{}", net.diagnostics());
}

/// Empties the connection table of `ns`: `netbeast conntrack -F`, or
/// conntrack(8)'s for the kernel.
fn conntrack_flush(firewall: &Firewall, ns: &Netns) {
    match firewall {
        Firewall::Netbeast { .. } => {
            support::conntrack(ns, &["-F"]);
        }
        Firewall::Iptables => {
            ns.run_ok("conntrack", &["-F"])
                .unwrap_or_else(|e| panic!("conntrack -F in {}: {e}", ns.name()));
        }
    }
}

/// Closes `stream` with a reset (SO_LINGER 0), so that neither end keeps
/// the connection's addresses in TIME_WAIT and the same client port can
/// connect again at once.
fn abort(stream: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: passes a valid linger of the given size on an open socket.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    drop(stream);
}

// After the connection table is flushed, the bindings of the double NAT
// are gone (`conntrack -L` lists none), and new traffic of the same
// tuples is translated afresh: a TCP connection from the client port of
// one that was aborted before the flush, and more datagrams of a UDP flow
// that was open across it, keep their ports and show up in `conntrack -L`
// again.
routed_scenario!(conntrack_flush_translates_afresh);
fn conntrack_flush_translates_afresh(firewall: Firewall) {
    let net = LanForward::new("natctf", firewall, ServerRoute::None);
    let _tcp = peer_server(&net.server, any(SERVICE_PORT)).unwrap();
    let _udp = udp_peer_server(&net.server, any(SERVICE_PORT)).unwrap();
    net.forward_port(80, SERVICE_PORT);
    net.iptables(&format!(
        "-t nat -A POSTROUTING -o {ROUTER_LAN_IFACE} -j MASQUERADE"
    ));

    let flow = udp_socket(&net.client, outside(44200), public(80));
    assert_eq!(net.udp(&flow, b"before"), lan_gateway(44200));
    let (mut stream, seen) = net.connect(44201, 80);
    assert_eq!(seen, lan_gateway(44201));
    roundtrip(&mut stream, b"before the flush", TRANSFER_TIMEOUT).unwrap();
    let tcp_tuples = (
        Tuple::new(outside(44201), public(80)),
        Tuple::new(lan_server(SERVICE_PORT), lan_gateway(44201)),
    );
    let udp_tuples = (
        Tuple::new(outside(44200), public(80)),
        Tuple::new(lan_server(SERVICE_PORT), lan_gateway(44200)),
    );
    assert_tracked(
        &net.firewall,
        &net.router,
        "tcp",
        tcp_tuples.0,
        tcp_tuples.1,
    );
    assert_tracked(
        &net.firewall,
        &net.router,
        "udp",
        udp_tuples.0,
        udp_tuples.1,
    );

    // The reset must have reached the server before the flush: a reset
    // the router no longer translates would leave the server's end open,
    // and the new connection below would meet it.
    abort(stream);
    let server_end = format!("{}", lan_gateway(44201));
    let closed = wait_for(CONNECT_TIMEOUT, || {
        let sockets = net.server.run_ok("ss", &["-Htn"]).unwrap();
        (!sockets.contains(&server_end)).then_some(())
    });
    assert!(
        closed.is_some(),
        "the server's end of the aborted connection is still open\n{}",
        net.diagnostics()
    );

    conntrack_flush(&net.firewall, &net.router);
    let listing = conntrack_listing(&net.firewall, &net.router, false);
    assert!(
        !listing.contains(&format!("src={OUTSIDE} ")),
        "the client's connections are still listed after conntrack -F:\n{listing}"
    );

    let (mut stream, seen) = net.connect(44201, 80);
    assert_eq!(
        seen,
        lan_gateway(44201),
        "a new connection of the same tuple after the flush\n{}",
        net.diagnostics()
    );
    roundtrip(&mut stream, &[8; 50_000], TRANSFER_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "data over the new connection after the flush: {e}\n{}",
            net.diagnostics()
        )
    });
    assert_eq!(
        net.udp(&flow, b"after"),
        lan_gateway(44200),
        "the UDP flow after the flush\n{}",
        net.diagnostics()
    );
    assert_tracked(
        &net.firewall,
        &net.router,
        "tcp",
        tcp_tuples.0,
        tcp_tuples.1,
    );
    assert_tracked(
        &net.firewall,
        &net.router,
        "udp",
        udp_tuples.0,
        udp_tuples.1,
    );
}

// ---------------------------------------------------------------------------
// SNAT of the host's own connections

const HOST_PRIMARY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const HOST_SECONDARY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);

/// A host with two addresses on its link (10.0.0.1 primary, 10.0.0.5
/// secondary) and a server beyond it (10.0.0.9): what the host itself
/// sends leaves through POSTROUTING at TC egress. Drop order: host
/// (netbeast cleanup), server.
struct OwnSnat {
    host: Netns,
    server: Netns,
    firewall: Firewall,
}

impl OwnSnat {
    fn new(tag: &str, firewall: Firewall) -> OwnSnat {
        require_root();
        let setup = || -> netbeast::netns::Result<OwnSnat> {
            let host = firewall.guard(Netns::new(&format!("{tag}-host"))?);
            let server = Netns::new(&format!("{tag}-srv"))?;
            veth_pair(
                &host,
                ROUTER_WAN_IFACE,
                &format!("{HOST_PRIMARY}/24"),
                &server,
                SERVER_IFACE,
                &format!("{PEER}/24"),
            )?;
            host.ip(&[
                "addr",
                "add",
                &format!("{HOST_SECONDARY}/24"),
                "dev",
                ROUTER_WAN_IFACE,
            ])?;
            prepare_host(&server, SERVER_IFACE)?;
            firewall.attach(&host, &[ROUTER_WAN_IFACE])?;
            Ok(OwnSnat {
                host,
                server,
                firewall,
            })
        };
        setup().unwrap_or_else(|e| panic!("setting up the host with two addresses: {e}"))
    }

    #[track_caller]
    fn iptables(&self, line: &str) {
        iptables(&self.firewall, &self.host, line);
    }

    fn diagnostics(&self) -> String {
        format!(
            "host ruleset and connections:\n{}",
            diagnostics(&self.firewall, &self.host)
        )
    }

    /// A TCP connection of the host from `local` to the server, which must
    /// see `expected` as its client; data both ways.
    fn tcp(&self, local: SocketAddrV4, expected: SocketAddrV4) {
        let (mut stream, seen) = open(&self.host, local, peer(SERVICE_PORT), || self.diagnostics());
        assert_eq!(
            seen,
            expected,
            "the client the server saw for the host's connection from {local}\n{}",
            self.diagnostics()
        );
        roundtrip(&mut stream, &vec![4; TRANSFER], TRANSFER_TIMEOUT).unwrap_or_else(|e| {
            panic!(
                "data over the host's connection from {local}: {e}\n{}",
                self.diagnostics()
            )
        });
    }

    /// Two UDP exchanges of the host from `local` with the server, which
    /// must see `expected` as its client both times.
    fn udp(&self, local: SocketAddrV4, expected: SocketAddrV4) {
        let flow = udp_socket(&self.host, local, peer(SERVICE_PORT));
        for payload in [&b"first"[..], b"second"] {
            let seen = udp_ask(&flow, payload, CONNECT_TIMEOUT).unwrap_or_else(|e| {
                panic!("UDP of the host from {local}: {e}\n{}", self.diagnostics())
            });
            assert_eq!(
                seen,
                expected.into(),
                "the client the server saw for the host's UDP from {local}\n{}",
                self.diagnostics()
            );
        }
    }
}

fn peer(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(PEER, port)
}

fn primary(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(HOST_PRIMARY, port)
}

fn secondary(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(HOST_SECONDARY, port)
}

// POSTROUTING for connections the host opens itself (TC egress): SNAT to
// the secondary address makes the server see 10.0.0.5 for TCP and UDP,
// with the source port kept (it was free), and the answers find their way
// back to the sockets on 10.0.0.1. MASQUERADE instead makes the source
// the interface's primary address, port kept: a socket bound to the
// secondary address is seen as 10.0.0.1, an unbound one stays 10.0.0.1.
// The server's reset and port unreachable reach the SNATed sockets. A
// port the primary address already uses with the server is not reused.
scenario!(snat_of_the_hosts_own_connections);
fn snat_of_the_hosts_own_connections(firewall: Firewall) {
    let net = OwnSnat::new("natown", firewall);
    let _tcp = peer_server(&net.server, any(SERVICE_PORT)).unwrap();
    let _udp = udp_peer_server(&net.server, any(SERVICE_PORT)).unwrap();

    // Without a rule the kernel's choice, the primary address, shows.
    net.tcp(any(45000), primary(45000));

    for protocol in ["tcp", "udp"] {
        net.iptables(&format!(
            "-t nat -A POSTROUTING -o {ROUTER_WAN_IFACE} -p {protocol} -d {PEER} \
             -j SNAT --to-source {HOST_SECONDARY}"
        ));
    }
    net.tcp(any(45001), secondary(45001));
    net.udp(any(45002), secondary(45002));
    assert_tracked(
        &net.firewall,
        &net.host,
        "tcp",
        Tuple::new(primary(45001), peer(SERVICE_PORT)),
        Tuple::new(peer(SERVICE_PORT), secondary(45001)),
    );
    assert_tracked(
        &net.firewall,
        &net.host,
        "udp",
        Tuple::new(primary(45002), peer(SERVICE_PORT)),
        Tuple::new(peer(SERVICE_PORT), secondary(45002)),
    );
    // The server's reset and port unreachable for a closed port go to
    // 10.0.0.5, about a packet from there: the sockets on 10.0.0.1 hear
    // them only once the router translates both back.
    let closed = peer(CLOSED_SERVICE_PORT);
    let outcome = refused_or_lost(&net.host, any(45010), closed);
    assert_eq!(
        outcome,
        Reset,
        "the host's TCP to a closed port, SNATed\n{}",
        net.diagnostics()
    );
    let outcome =
        udp_exchange_from(&net.host, any(45010), closed, b"anyone?", CONNECT_TIMEOUT).unwrap();
    assert_eq!(
        outcome,
        UdpOutcome::Refused(Some(IcmpError::PORT_UNREACHABLE)),
        "the host's UDP to a closed port, SNATed\n{}",
        net.diagnostics()
    );

    net.iptables("-t nat -F");
    for protocol in ["tcp", "udp"] {
        net.iptables(&format!(
            "-t nat -A POSTROUTING -o {ROUTER_WAN_IFACE} -p {protocol} -d {PEER} -j MASQUERADE"
        ));
    }
    net.tcp(secondary(45003), primary(45003));
    net.tcp(any(45004), primary(45004));
    net.udp(secondary(45005), primary(45005));
    assert_tracked(
        &net.firewall,
        &net.host,
        "tcp",
        Tuple::new(secondary(45003), peer(SERVICE_PORT)),
        Tuple::new(peer(SERVICE_PORT), primary(45003)),
    );
    assert_tracked(
        &net.firewall,
        &net.host,
        "udp",
        Tuple::new(secondary(45005), peer(SERVICE_PORT)),
        Tuple::new(peer(SERVICE_PORT), primary(45005)),
    );

    // A port the primary address already uses with the server is not
    // handed out again: the masqueraded socket gets another, and both
    // connections carry their own data.
    let context = || net.diagnostics();
    let (mut held, held_seen) = open(&net.host, any(45020), peer(SERVICE_PORT), context);
    assert_eq!(held_seen, primary(45020));
    let (mut moved, moved_seen) = open(&net.host, secondary(45020), peer(SERVICE_PORT), context);
    assert_eq!(
        *moved_seen.ip(),
        HOST_PRIMARY,
        "MASQUERADE of the host's own connection\n{}",
        net.diagnostics()
    );
    assert_ne!(
        moved_seen.port(),
        45020,
        "two connections from 10.0.0.1:45020 to one server\n{}",
        net.diagnostics()
    );
    for (stream, byte) in [(&mut held, 1), (&mut moved, 2)] {
        roundtrip(stream, &[byte; 50_000], TRANSFER_TIMEOUT).unwrap_or_else(|e| {
            panic!(
                "data over one of two connections from one port: {e}\n{}",
                net.diagnostics()
            )
        });
    }
    assert_tracked(
        &net.firewall,
        &net.host,
        "tcp",
        Tuple::new(secondary(45020), peer(SERVICE_PORT)),
        Tuple::new(peer(SERVICE_PORT), moved_seen),
    );
}
