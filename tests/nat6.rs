//! IPv6 nat (`ip6tables -t nat`) as network tests, the IPv6 twin of
//! nat.rs: the article's NAT router with SNAT (and what `-t nat -F`
//! leaves working), two LAN hosts behind MASQUERADE from one source port,
//! port forwarding to a LAN server (DNAT; alone and with MASQUERADE:
//! double NAT), REDIRECT and DNAT to the router itself, SNAT and
//! MASQUERADE of the router's own connections, long transfers
//! through SNAT and DNAT (every segment rewritten, checksums right), resets
//! and ICMPv6 errors translated back, an ICMPv6 echo through SNAT, and
//! both tuples of each translated connection in `conntrack -L -f ipv6`. Every scenario also runs with the kernel's own
//! ip6tables (`ip6tables_oracle`), which proves the topology and the
//! expectations; netbeast must match, with its XDP fast path on and off.
//!
//! The servers answer with the client address they saw ([`peer_server`],
//! [`udp_peer_server`]), so a test checks the translation at the far end.
//! Addresses are from fd00::/8, without duplicate address detection;
//! neighbour discovery is live (the first packet of a flow waits for it).
//!
//! Needs root. Run: `cargo test -p netbeast --test nat6`.

#[path = "support/mod.rs"]
mod support;
#[macro_use]
#[path = "support/nat_lab.rs"]
mod nat_lab;

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use nat_lab::{
    CONNECT_TIMEOUT, TIMEOUT, TRANSFER, TRANSFER_TIMEOUT, Tuple, prepare_host, refused_or_lost,
    tuples, udp_ask, udp_socket,
};
use netbeast::netns::{
    ConnectOutcome::{self, Reset, TimedOut},
    Firewall, IcmpError, Netns, Server, UdpOutcome, peer_server, require_root, udp_exchange_from,
    udp_peer_server, veth_pair,
};
use support::roundtrip;

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");

/// The port the servers listen on, TCP and UDP.
const PORT: u16 = 8080;

// ---------------------------------------------------------------------------
// The topology and small helpers

/// One link of the topology: a host's end and the router's, each with its
/// address in the link's /64.
struct Link {
    host_iface: &'static str,
    host: Ipv6Addr,
    router_iface: &'static str,
    router: Ipv6Addr,
}

/// Whether the server can answer the hosts by itself.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ServerRoute {
    /// Its default route points at the router: DNAT alone suffices.
    ViaRouter,
    /// Only its on-link route: the router must hide the hosts (SNAT).
    None,
}

/// Hosts — router — server: each host on its own link to the router (its
/// default route points there), the server on the router's [`SERVER_LINK`].
/// Forwarding on in the router; the firewall attached to all its
/// interfaces. Drop order: hosts, router (netbeast cleanup), server.
struct Routed6 {
    hosts: Vec<Netns>,
    router: Netns,
    server: Netns,
    firewall: Firewall,
}

impl Routed6 {
    fn new(tag: &str, firewall: Firewall, links: &[Link], route: ServerRoute) -> Routed6 {
        require_root();
        let setup = || -> netbeast::netns::Result<Routed6> {
            let hosts = (0..links.len())
                .map(|i| Netns::new(&format!("{tag}-h{i}")))
                .collect::<netbeast::netns::Result<Vec<_>>>()?;
            let router = firewall.guard(Netns::new(&format!("{tag}-rtr"))?);
            let server = Netns::new(&format!("{tag}-srv"))?;
            for (host, link) in hosts.iter().zip(links).chain([(&server, &SERVER_LINK)]) {
                veth_pair(
                    &router,
                    link.router_iface,
                    &format!("{}/64", link.router),
                    host,
                    link.host_iface,
                    &format!("{}/64", link.host),
                )?;
                prepare_host(host, link.host_iface)?;
            }
            for (host, link) in hosts.iter().zip(links) {
                default_route(host, link.router)?;
            }
            if route == ServerRoute::ViaRouter {
                default_route(&server, SERVER_LINK.router)?;
            }
            router.sysctl("net.ipv6.conf.all.forwarding", "1")?;
            let ifaces: Vec<&str> = links
                .iter()
                .chain([&SERVER_LINK])
                .map(|l| l.router_iface)
                .collect();
            firewall.attach(&router, &ifaces)?;
            Ok(Routed6 {
                hosts,
                router,
                server,
                firewall,
            })
        };
        setup().unwrap_or_else(|e| panic!("setting up the IPv6 router ({tag}): {e}"))
    }

    /// `line` in the router with ip6tables, which must succeed.
    #[track_caller]
    fn ip6tables(&self, line: &str) {
        self.firewall
            .ip6tables_ok(&self.router, line)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// For failure messages: the router's IPv6 ruleset and connections.
    fn diagnostics(&self) -> String {
        format!(
            "router ruleset and connections:\n{}",
            nat_lab::diagnostics(&self.firewall, &self.router, true)
        )
    }

    /// The router's IPv6 connections in conntrack(8)'s words.
    fn conntrack_listing(&self) -> String {
        nat_lab::conntrack_listing(&self.firewall, &self.router, true)
    }

    /// Asserts that the router tracks a `protocol` connection with these
    /// original and reply tuples.
    fn assert_tracked(&self, protocol: &str, original: Tuple, reply: Tuple) {
        nat_lab::assert_tracked(&self.firewall, &self.router, protocol, original, reply);
    }

    /// The router's `fast_path` statistic, when the firewall is netbeast.
    fn fast_path_count(&self) -> Option<u64> {
        nat_lab::fast_path_count(&self.firewall, &self.router)
    }

    /// Asserts which way the router forwarded since `before`: with the
    /// fast path on, at least 100 packets in XDP; with it off, none.
    fn assert_forwarding_path(&self, before: Option<u64>) {
        nat_lab::assert_forwarding_path(&self.firewall, &self.router, before, 100, || {
            self.diagnostics()
        });
    }

    /// A TCP connection from `host` (bound to `local`) to a [`peer_server`]
    /// at `server`, and the client address the server saw.
    fn open(&self, host: &Netns, local: SocketAddr, server: SocketAddr) -> (TcpStream, SocketAddr) {
        nat_lab::open(host, local, server, CONNECT_TIMEOUT, || self.diagnostics())
    }

    /// `len` bytes each way over `stream`, which must all come back.
    fn transfer(&self, stream: &mut TcpStream, len: usize, what: &str) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        roundtrip(stream, &data, TRANSFER_TIMEOUT).unwrap_or_else(|e| {
            panic!(
                "{len} bytes over the {what} TCP connection: {e}\n{}",
                self.diagnostics()
            )
        });
    }

    /// One exchange on a UDP `socket` connected to a [`udp_peer_server`]
    /// (so an answer from any other address would not be received): the
    /// client address the server saw.
    fn udp(&self, socket: &UdpSocket, payload: &[u8]) -> SocketAddr {
        udp_ask(socket, payload, CONNECT_TIMEOUT).unwrap_or_else(|e| {
            panic!(
                "UDP {:?} -> {:?}: {e}\n{}",
                socket.local_addr(),
                socket.peer_addr(),
                self.diagnostics()
            )
        })
    }

    /// What a TCP connection attempt and a UDP exchange from `host` (from
    /// `local`) to `target` came to within `timeout`, when neither must
    /// get an answer from a server.
    fn unanswered(
        &self,
        host: &Netns,
        local: SocketAddr,
        target: SocketAddr,
        timeout: Duration,
    ) -> (ConnectOutcome, UdpOutcome) {
        let tcp = refused_or_lost(host, local, target, timeout);
        let udp = udp_exchange_from(host, local, target, b"anyone?", timeout).unwrap();
        (tcp, udp)
    }
}

fn default_route(ns: &Netns, gateway: Ipv6Addr) -> netbeast::netns::Result<()> {
    ns.ip(&["-6", "route", "add", "default", "via", &gateway.to_string()])?;
    Ok(())
}

fn at(ip: Ipv6Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(ip), port)
}

/// `[::]:port`, where a server listens on every address.
fn any(port: u16) -> SocketAddr {
    at(Ipv6Addr::UNSPECIFIED, port)
}

/// Peer servers, TCP and UDP, on `[::]:PORT` of `ns`; they stop on drop.
fn serve(ns: &Netns) -> (Server, Server) {
    let tcp = peer_server(ns, any(PORT)).unwrap();
    (tcp, udp_peer_server(ns, any(PORT)).unwrap())
}

/// What [`Routed6::unanswered`] sees when a server refuses: a reset, and
/// an ICMPv6 port unreachable.
const REFUSED: (ConnectOutcome, UdpOutcome) = (
    Reset,
    UdpOutcome::Refused(Some(IcmpError::PORT_UNREACHABLE6)),
);
/// What [`Routed6::unanswered`] sees when nothing comes back.
const LOST: (ConnectOutcome, UdpOutcome) = (TimedOut, UdpOutcome::TimedOut);

// ---------------------------------------------------------------------------
// The article's NAT router, for IPv6

const LAN_HOST: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xa, 0, 0, 0, 0, 0, 6);
const ROUTER_LAN: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xa, 0, 0, 0, 0, 0, 4);
/// A second LAN host, on its own link to the router.
const LAN_HOST2: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xc, 0, 0, 0, 0, 0, 6);
const ROUTER_LAN2: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xc, 0, 0, 0, 0, 0, 4);
const ROUTER_SERVER: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xb, 0, 0, 0, 0, 0, 1);
const SERVER: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xb, 0, 0, 0, 0, 0, 0x15);
const ROUTER_SERVER_IFACE: &str = "nbt-r-srv";

const SERVER_LINK: Link = Link {
    host_iface: "nbt-srv",
    host: SERVER,
    router_iface: ROUTER_SERVER_IFACE,
    router: ROUTER_SERVER,
};
/// The article's LAN hosts (fd00:a::6, and fd00:c::6 for MASQUERADE).
const LAN_LINKS: [Link; 2] = [
    Link {
        host_iface: "nbt-lan",
        host: LAN_HOST,
        router_iface: "nbt-r-lan",
        router: ROUTER_LAN,
    },
    Link {
        host_iface: "nbt-lan2",
        host: LAN_HOST2,
        router_iface: "nbt-r-lan2",
        router: ROUTER_LAN2,
    },
];

/// The article's FORWARD rules for ip6tables, in its order: the LAN host
/// may open connections to the server, the server may only answer.
const ARTICLE_FORWARD: [&str; 3] = [
    "-P FORWARD DROP",
    "-I FORWARD -s fd00:a::6/128 -d fd00:b::15/128 -j ACCEPT",
    "-I FORWARD -s fd00:b::15/128 -d fd00:a::6/128 -m conntrack --ctstate ESTABLISHED -j ACCEPT",
];
/// The article's SNAT, without which the server cannot answer at all.
const ARTICLE_SNAT: &str =
    "-t nat -I POSTROUTING -s fd00:a::6/128 -d fd00:b::15/128 -j SNAT --to-source fd00:b::1";

fn server(port: u16) -> SocketAddr {
    at(SERVER, port)
}

/// Whether one ICMPv6 echo from `ns` to `to` is answered within 2 s.
fn ping(ns: &Netns, to: Ipv6Addr) -> bool {
    let to = to.to_string();
    let out = ns
        .run("ping", &["-6", "-n", "-c", "1", "-W", "2", &to])
        .unwrap_or_else(|e| panic!("ping in {}: {e}", ns.name()));
    out.status.success()
}

// The article's NAT router for IPv6: the server has only its on-link
// route, so without the SNAT rule nothing comes back (TCP, UDP, ICMPv6
// echo); with it the LAN host reaches the server and the server sees
// fd00:b::1 as the client. 256 KiB each way over the translated TCP
// connection (every segment rewritten, its checksum right). `conntrack
// -L -f ipv6` on the router shows both tuples of each translation,
// the echo's too.
routed_scenario!(article_nat_router, ip6tables_oracle);
fn article_nat_router(firewall: Firewall) {
    let net = Routed6::new("n6art", firewall, &LAN_LINKS[..1], ServerRoute::None);
    let lan_host = &net.hosts[0];
    let lan = |port| at(LAN_HOST, port);
    let _servers = serve(&net.server);
    for line in ARTICLE_FORWARD {
        net.ip6tables(line);
    }

    // Without the SNAT rule the server's answers have no way back. Fixed
    // source ports: the connections below must not find the entries these
    // attempts leave in conntrack.
    let outcome = net.unanswered(lan_host, lan(42000), server(PORT), TIMEOUT);
    assert_eq!(
        outcome,
        LOST,
        "TCP and UDP without SNAT\n{}",
        net.diagnostics()
    );
    assert!(
        !ping(lan_host, SERVER),
        "an echo without SNAT was answered\n{}",
        net.diagnostics()
    );

    net.ip6tables(ARTICLE_SNAT);
    let fast_before = net.fast_path_count();
    let (mut stream, seen) = net.open(lan_host, lan(42001), server(PORT));
    assert_eq!(
        seen.ip(),
        ROUTER_SERVER,
        "the server must see the router's address as the TCP client\n{}",
        net.diagnostics()
    );
    net.transfer(&mut stream, TRANSFER, "SNATed");
    net.assert_forwarding_path(fast_before);

    let flow = udp_socket(lan_host, lan(41001), server(PORT));
    let udp_seen = net.udp(&flow, b"query");
    assert_eq!(
        udp_seen.ip(),
        ROUTER_SERVER,
        "the server must see the router's address as the UDP client\n{}",
        net.diagnostics()
    );
    assert_eq!(net.udp(&flow, b"again"), udp_seen, "the UDP flow's binding");

    assert!(
        ping(lan_host, SERVER),
        "an ICMPv6 echo through SNAT was not answered\n{}",
        net.diagnostics()
    );

    // Both tuples, as conntrack(8) shows them: the original from the LAN
    // host, the reply to the router's address and the port the server saw.
    net.assert_tracked(
        "tcp",
        Tuple::new(lan(42001), server(PORT)),
        Tuple::new(server(PORT), seen),
    );
    net.assert_tracked(
        "udp",
        Tuple::new(lan(41001), server(PORT)),
        Tuple::new(server(PORT), udp_seen),
    );
    // The answered echo's reply tuple goes to the router's address: the
    // server saw the echo from there. (The unanswered echo before the SNAT
    // rule, another ping with another id, left its own entry.)
    let listing = net.conntrack_listing();
    let translated = [
        (IpAddr::V6(LAN_HOST), IpAddr::V6(SERVER)),
        (IpAddr::V6(SERVER), IpAddr::V6(ROUTER_SERVER)),
    ];
    let echo = listing.lines().any(|line| {
        let addresses: Vec<(IpAddr, IpAddr)> =
            tuples(line).iter().map(|t| (t.src, t.dst)).collect();
        line.split_whitespace().next() == Some("icmpv6") && addresses == translated
    });
    assert!(
        echo,
        "no icmpv6 echo {translated:?} in the router's conntrack -L -f ipv6:\n{listing}"
    );
}

// After `ip6tables -t nat -F` new connections are no longer translated
// (the server cannot answer them), but the translated TCP connection and
// UDP flow that were open keep theirs: conntrack holds the binding.
routed_scenario!(flush_keeps_established_translations, ip6tables_oracle);
fn flush_keeps_established_translations(firewall: Firewall) {
    let net = Routed6::new("n6flush", firewall, &LAN_LINKS[..1], ServerRoute::None);
    let lan_host = &net.hosts[0];
    let lan = |port| at(LAN_HOST, port);
    let _servers = serve(&net.server);
    for line in ARTICLE_FORWARD.into_iter().chain([ARTICLE_SNAT]) {
        net.ip6tables(line);
    }
    let (mut stream, seen) = net.open(lan_host, lan(42010), server(PORT));
    assert_eq!(seen.ip(), ROUTER_SERVER, "TCP\n{}", net.diagnostics());
    net.transfer(&mut stream, 1000, "SNATed");
    let flow = udp_socket(lan_host, lan(41010), server(PORT));
    let udp_seen = net.udp(&flow, b"before");
    assert_eq!(udp_seen.ip(), ROUTER_SERVER, "UDP\n{}", net.diagnostics());

    net.ip6tables("-t nat -F");

    net.transfer(&mut stream, 50_000, "SNATed, after -t nat -F,");
    assert_eq!(
        net.udp(&flow, b"after"),
        udp_seen,
        "the UDP flow's binding changed with the flush\n{}",
        net.diagnostics()
    );
    let outcome = net.unanswered(lan_host, lan(42011), server(PORT), TIMEOUT);
    assert_eq!(
        outcome,
        LOST,
        "new TCP and UDP after -t nat -F are not translated, so the server cannot answer\n{}",
        net.diagnostics()
    );
}

/// The source port both LAN hosts use.
const SHARED_PORT: u16 = 40000;

// Two LAN hosts, both from source port 40000, talk to the same server at
// once over TCP and UDP behind MASQUERADE: the server sees two clients at
// fd00:b::1 with two different ports (the first keeps 40000, which was
// free), and each host gets its own answers. The server's reset and its
// ICMPv6 port unreachable about a translated flow find their way back.
routed_scenario!(masquerade_two_lan_hosts, ip6tables_oracle);
fn masquerade_two_lan_hosts(firewall: Firewall) {
    let net = Routed6::new("n6masq", firewall, &LAN_LINKS, ServerRoute::None);
    let (tcp_server, _udp) = serve(&net.server);
    let hosts = [
        (&net.hosts[0], at(LAN_HOST, SHARED_PORT)),
        (&net.hosts[1], at(LAN_HOST2, SHARED_PORT)),
    ];

    // Without MASQUERADE the server cannot answer the LAN (another source
    // port: the attempt's conntrack entry must not be reused below).
    let outcome = net.unanswered(hosts[0].0, at(LAN_HOST, 39999), server(PORT), TIMEOUT);
    assert_eq!(
        outcome,
        LOST,
        "TCP and UDP without MASQUERADE\n{}",
        net.diagnostics()
    );

    net.ip6tables(&format!(
        "-t nat -A POSTROUTING -o {ROUTER_SERVER_IFACE} -j MASQUERADE"
    ));

    nat_lab::assert_two_hosts_share_a_port(
        hosts,
        (&tcp_server, server(PORT)),
        server(PORT),
        IpAddr::V6(ROUTER_SERVER),
        || net.diagnostics(),
    );

    // Errors about a translated flow reach the LAN host: the server's
    // reset, and its ICMPv6 port unreachable, whose quoted headers name the
    // router's address until the router translates them back.
    let (tcp, udp) = net.unanswered(hosts[0].0, at(LAN_HOST, 40001), server(9), CONNECT_TIMEOUT);
    assert_eq!(
        (tcp, udp),
        REFUSED,
        "TCP and UDP to a closed port of the server: the reset and the ICMPv6 error \
         must be translated back\n{}",
        net.diagnostics()
    );
}

// ---------------------------------------------------------------------------
// Port forwarding: to a LAN server, and to the router itself

const OUTSIDE: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xd, 0, 0, 0, 0, 0, 9);
const PUBLIC: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xd, 0, 0, 0, 0, 0, 1);
const ROUTER_WAN_IFACE: &str = "nbt-r-wan";
/// A client outside (fd00:d::9), on the router's public side (fd00:d::1).
const OUTSIDE_LINK: [Link; 1] = [Link {
    host_iface: "nbt-out",
    host: OUTSIDE,
    router_iface: ROUTER_WAN_IFACE,
    router: PUBLIC,
}];
/// A port nothing forwards, where nothing listens on the router.
const CLOSED_PORT: u16 = 82;
/// A port of the server where nothing listens.
const CLOSED_SERVER_PORT: u16 = 8181;

fn outside(port: u16) -> SocketAddr {
    at(OUTSIDE, port)
}

fn public(port: u16) -> SocketAddr {
    at(PUBLIC, port)
}

/// The router's address on the server's link.
fn router_server(port: u16) -> SocketAddr {
    at(ROUTER_SERVER, port)
}

impl Routed6 {
    /// The port forward of both protocols: what comes in by the public
    /// interface for `port` goes to `to`.
    fn forward_port(&self, port: u16, to: SocketAddr) {
        for protocol in ["tcp", "udp"] {
            self.ip6tables(&format!(
                "-t nat -A PREROUTING -i {ROUTER_WAN_IFACE} -p {protocol} --dport {port} \
                 -j DNAT --to-destination {to}"
            ));
        }
    }

    /// From the outside client's `client_port` to the router's public
    /// `port`, which a translation hands to a peer server at `served`: the
    /// client's getpeername shows the public address and port, the server
    /// sees `seen(client_port)` as the client, `len` bytes go both ways,
    /// and the router tracks both tuples. Then the same for UDP from the
    /// port after `client_port`.
    fn check_forwarded(
        &self,
        client_port: u16,
        port: u16,
        served: SocketAddr,
        seen: fn(u16) -> SocketAddr,
        len: usize,
    ) {
        let client = &self.hosts[0];
        let target = public(port);
        let fast_before = self.fast_path_count();
        let (mut stream, peer) = self.open(client, outside(client_port), target);
        assert_eq!(
            stream.peer_addr().ok(),
            Some(target),
            "the client's getpeername must show the address it connected to"
        );
        assert_eq!(
            peer,
            seen(client_port),
            "the server's view of the TCP client via {target}\n{}",
            self.diagnostics()
        );
        self.transfer(&mut stream, len, &format!("forwarded {target}"));
        if served.ip() == SERVER {
            self.assert_forwarding_path(fast_before);
        }
        self.assert_tracked(
            "tcp",
            Tuple::new(outside(client_port), target),
            Tuple::new(served, seen(client_port)),
        );

        let udp_port = client_port + 1;
        let flow = udp_socket(client, outside(udp_port), target);
        for payload in [&b"first"[..], b"second"] {
            assert_eq!(
                self.udp(&flow, payload),
                seen(udp_port),
                "the server's view of the UDP client via {target}\n{}",
                self.diagnostics()
            );
        }
        self.assert_tracked(
            "udp",
            Tuple::new(outside(udp_port), target),
            Tuple::new(served, seen(udp_port)),
        );
    }

    /// TCP and UDP from the outside client's `client_port` to the router's
    /// public `port` are refused: a reset and an ICMPv6 port unreachable
    /// come back (from the router itself, or from a server behind a
    /// translation, translated back), so the client hears "refused" at once.
    fn check_refused(&self, client_port: u16, port: u16, what: &str) {
        let outcome = self.unanswered(
            &self.hosts[0],
            outside(client_port),
            public(port),
            CONNECT_TIMEOUT,
        );
        assert_eq!(
            outcome,
            REFUSED,
            "TCP and UDP to the router's port {port}, {what}\n{}",
            self.diagnostics()
        );
    }
}

// The classic port forward: the router's public port 80 goes to the LAN
// server's 8080 (TCP and UDP; `-i` the public interface). The server
// routes back through the router, so it sees the client as it is; the
// client sees only the public address. 256 KiB each way over the DNATed
// connection. Port 82, not forwarded, is the router's and closed, as
// without nat; port 81, forwarded to a server port where nothing listens,
// is refused by the server, its reset and ICMPv6 error translated back.
routed_scenario!(dnat_to_a_lan_server, ip6tables_oracle);
fn dnat_to_a_lan_server(firewall: Firewall) {
    let net = Routed6::new("n6dnat", firewall, &OUTSIDE_LINK, ServerRoute::ViaRouter);
    let _servers = serve(&net.server);
    net.check_refused(44000, CLOSED_PORT, "before any rule");

    net.forward_port(80, server(PORT));
    net.forward_port(81, server(CLOSED_SERVER_PORT));
    net.check_forwarded(44001, 80, server(PORT), outside, TRANSFER);
    net.check_refused(44003, CLOSED_PORT, "which nothing forwards");
    net.check_refused(44004, 81, "forwarded where nothing listens");
}

// Docker's port publishing for IPv6: its nat PREROUTING rule sends what
// is addressed to the host itself (`-m addrtype --dst-type LOCAL`) to the
// DOCKER chain, which DNATs the published port 80 (TCP and UDP, not from
// the containers' side) to the LAN server's 8080. The same port addressed
// to the server itself is forwarded untouched, where nothing listens:
// refused, not DNATed.
routed_scenario!(docker_publishes_local_ports, ip6tables_oracle);
fn docker_publishes_local_ports(firewall: Firewall) {
    let net = Routed6::new("n6dock", firewall, &OUTSIDE_LINK, ServerRoute::ViaRouter);
    let _servers = serve(&net.server);
    net.ip6tables("-t nat -N DOCKER");
    net.ip6tables("-t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER");
    for protocol in ["tcp", "udp"] {
        net.ip6tables(&format!(
            "-t nat -A DOCKER ! -i {ROUTER_SERVER_IFACE} -p {protocol} --dport 80 \
             -j DNAT --to-destination {}",
            server(PORT)
        ));
    }
    net.check_forwarded(44201, 80, server(PORT), outside, TRANSFER);
    let outcome = net.unanswered(&net.hosts[0], outside(44203), server(80), CONNECT_TIMEOUT);
    assert_eq!(
        outcome,
        REFUSED,
        "TCP and UDP to the server's own port 80: not LOCAL to the router, not DNATed\n{}",
        net.diagnostics()
    );
    net.check_refused(44205, CLOSED_PORT, "not published");
}

// DNAT and MASQUERADE on one connection: the LAN server has only its
// on-link route, so the router forwards its public port 80 to the
// server's 8080 and MASQUERADEs what leaves towards the server. Without
// the MASQUERADE nothing comes back; with it the server sees the router's
// address (with the client's port, which was free), the client the public
// one, and the server's refusals of port 81 are translated back through
// both halves.
routed_scenario!(double_nat, ip6tables_oracle);
fn double_nat(firewall: Firewall) {
    let net = Routed6::new("n6dbl", firewall, &OUTSIDE_LINK, ServerRoute::None);
    let _servers = serve(&net.server);
    net.forward_port(80, server(PORT));
    net.forward_port(81, server(CLOSED_SERVER_PORT));
    let outcome = net.unanswered(&net.hosts[0], outside(44100), public(80), TIMEOUT);
    assert_eq!(
        outcome,
        LOST,
        "TCP and UDP with DNAT but no MASQUERADE\n{}",
        net.diagnostics()
    );

    net.ip6tables(&format!(
        "-t nat -A POSTROUTING -o {ROUTER_SERVER_IFACE} -j MASQUERADE"
    ));
    net.check_forwarded(44101, 80, server(PORT), router_server, TRANSFER);
    net.check_refused(44103, 81, "forwarded where nothing listens, masqueraded");
}

// The router's own services: REDIRECT sends its port 80 (TCP and UDP) to
// a server on the router's [::]:8080, and DNAT to the router's public
// address does the same for port 81. The client sees the answers come from
// the address and port it asked; the server on the router sees the client
// itself. Port 82 stays closed.
routed_scenario!(redirect_and_dnat_to_the_router, ip6tables_oracle);
fn redirect_and_dnat_to_the_router(firewall: Firewall) {
    let net = Routed6::new("n6redir", firewall, &OUTSIDE_LINK, ServerRoute::ViaRouter);
    let _servers = serve(&net.router);
    net.check_refused(45000, 80, "before any rule");

    for protocol in ["tcp", "udp"] {
        net.ip6tables(&format!(
            "-t nat -A PREROUTING -p {protocol} --dport 80 -j REDIRECT --to-ports {PORT}"
        ));
        net.ip6tables(&format!(
            "-t nat -A PREROUTING -d {PUBLIC}/128 -p {protocol} --dport 81 \
             -j DNAT --to-destination [{PUBLIC}]:{PORT}"
        ));
    }
    net.check_forwarded(45001, 80, public(PORT), outside, 100_000);
    net.check_forwarded(45003, 81, public(PORT), outside, 100_000);
    net.check_refused(45005, CLOSED_PORT, "which nothing redirects");
}

// A REJECT behind a DNAT to the router itself answers as the client
// addressed it: the reset and the ICMPv6 port unreachable come from (and
// quote) the public port 81, as ip6tables' replies through the
// connection's NAT do, not from the port 8080 the INPUT rule saw.
routed_scenario!(reject_behind_a_dnat, ip6tables_oracle);
fn reject_behind_a_dnat(firewall: Firewall) {
    let net = Routed6::new("n6rjct", firewall, &OUTSIDE_LINK, ServerRoute::ViaRouter);
    let _servers = serve(&net.router);
    for protocol in ["tcp", "udp"] {
        net.ip6tables(&format!(
            "-t nat -A PREROUTING -d {PUBLIC}/128 -p {protocol} --dport 81 \
             -j DNAT --to-destination [{PUBLIC}]:{PORT}"
        ));
    }
    net.ip6tables(&format!(
        "-A INPUT -p tcp --dport {PORT} -j REJECT --reject-with tcp-reset"
    ));
    net.ip6tables(&format!("-A INPUT -p udp --dport {PORT} -j REJECT"));
    net.check_refused(45010, 81, "rejected behind the DNAT");
}

// ---------------------------------------------------------------------------
// SNAT of the router's own connections

/// A second address of the router on the server's link, deprecated
/// (`preferred_lft 0`) so that the kernel never picks it as a source by
/// itself: only a socket bound to it, or a translation, uses it.
const SECONDARY: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xb, 0, 0, 0, 0, 0, 5);

fn secondary(port: u16) -> SocketAddr {
    at(SECONDARY, port)
}

impl Routed6 {
    /// A TCP connection and a UDP flow of the router itself from `local`
    /// to the server, which must see `expected` as its client both times;
    /// data both ways; the router tracks both tuples.
    fn check_own(&self, local: SocketAddr, expected: SocketAddr) {
        let (mut stream, seen) = self.open(&self.router, local, server(PORT));
        let flow = udp_socket(&self.router, local, server(PORT));
        let udp_seen = self.udp(&flow, b"own");
        assert_eq!(
            (seen, udp_seen),
            (expected, expected),
            "the client the server saw for the router's TCP and UDP from {local}\n{}",
            self.diagnostics()
        );
        self.transfer(&mut stream, TRANSFER, &format!("router's own from {local}"));
        for protocol in ["tcp", "udp"] {
            self.assert_tracked(
                protocol,
                Tuple::new(local, server(PORT)),
                Tuple::new(server(PORT), expected),
            );
        }
    }
}

// POSTROUTING for the connections the router opens itself (TC egress):
// SNAT to its second address makes the server see fd00:b::5 for TCP and
// UDP, source ports kept (they were free), and the answers reach the
// sockets on fd00:b::1, the server's reset and ICMPv6 port unreachable
// too. MASQUERADE instead gives a socket bound to the second address the
// interface's preferred one, fd00:b::1.
routed_scenario!(snat_of_the_routers_own_connections, ip6tables_oracle);
fn snat_of_the_routers_own_connections(firewall: Firewall) {
    let net = Routed6::new("n6own", firewall, &[], ServerRoute::None);
    let secondary_cidr = format!("{SECONDARY}/64");
    net.router
        .ip(&[
            "-6",
            "addr",
            "add",
            &secondary_cidr,
            "dev",
            ROUTER_SERVER_IFACE,
            "nodad",
            "preferred_lft",
            "0",
        ])
        .unwrap();
    let _servers = serve(&net.server);

    // Without a rule the socket's own address shows.
    let (_, seen) = net.open(&net.router, secondary(45000), server(PORT));
    assert_eq!(seen, secondary(45000), "without a rule");

    for protocol in ["tcp", "udp"] {
        net.ip6tables(&format!(
            "-t nat -A POSTROUTING -o {ROUTER_SERVER_IFACE} -p {protocol} -d {SERVER}/128 \
             -j SNAT --to-source {SECONDARY}"
        ));
    }
    net.check_own(router_server(45001), secondary(45001));
    let outcome = net.unanswered(
        &net.router,
        router_server(45002),
        server(CLOSED_SERVER_PORT),
        CONNECT_TIMEOUT,
    );
    assert_eq!(
        outcome,
        REFUSED,
        "the router's TCP and UDP to a closed port of the server, SNATed\n{}",
        net.diagnostics()
    );

    net.ip6tables("-t nat -F");
    net.ip6tables(&format!(
        "-t nat -A POSTROUTING -o {ROUTER_SERVER_IFACE} -j MASQUERADE"
    ));
    net.check_own(secondary(45003), router_server(45003));
}
