//! What the nat network tests share (nat.rs for IPv4, nat6.rs for IPv6):
//! the three-way routed scenario, the hosts' ends of links, conntrack(8)
//! listings and their tuples, clients of the peer servers (which answer
//! with the client address they saw), and which way the router forwarded.
//! Addresses are `SocketAddr`, so one helper serves both families.
//! Included with `#[macro_use] #[path = "support/nat_lab.rs"] mod nat_lab;`
//! beside `mod support;`.
#![allow(dead_code)]

use std::{
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use netbeast::netns::{
    ConnectOutcome, Firewall, Netns, Server, UdpOutcome, parse_peer_addr, read_peer_addr,
    tcp_stream,
};

use crate::support::{self, roundtrip, stat};

/// How long an attempt that must fail is given: a dropped SYN or datagram
/// costs this much.
pub const TIMEOUT: Duration = Duration::from_secs(1);
/// How long an attempt that must work is given, on a loaded two-core
/// machine (neighbour discovery included).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(20);
/// Bytes each way on a translated connection: hundreds of full-size
/// segments in both directions, every one of them rewritten.
pub const TRANSFER: usize = 256 * 1024;

/// Runs a routed scenario with netbeast's fast path as `attach` sets it
/// by default (into the hosts' bare veths: the TC hand-off) and off, and
/// with the kernel's tables (the oracle test is `iptables_oracle`, or the
/// name given second: `ip6tables_oracle`).
macro_rules! routed_scenario {
    ($name:ident) => {
        routed_scenario!($name, iptables_oracle);
    };
    ($name:ident, $oracle:ident) => {
        mod $name {
            use super::*;

            #[test]
            fn netbeast_fast_path() {
                super::$name(Firewall::netbeast(NETBEAST));
            }

            #[test]
            fn netbeast_kernel_forwarding() {
                super::$name(Firewall::netbeast_with(NETBEAST, &["--fast-path", "off"]));
            }

            #[test]
            fn $oracle() {
                super::$name(Firewall::Iptables);
            }
        }
    };
}

/// Whether `firewall` is netbeast with its forwarding fast path on.
pub fn fast_path_on(firewall: &Firewall) -> bool {
    match firewall {
        Firewall::Netbeast { attach_args, .. } => !attach_args
            .windows(2)
            .any(|w| w[0] == "--fast-path" && w[1] == "off"),
        Firewall::Iptables => false,
    }
}

/// A host's end of a link: no program (the router's fast path reaches a
/// bare veth), transmit checksum offload off: the XDP program rewrites
/// addresses and ports with full-checksum arithmetic, which a
/// CHECKSUM_PARTIAL frame's pseudo-header sum does not follow.
pub fn prepare_host(host: &Netns, iface: &str) -> netbeast::netns::Result<()> {
    host.run_ok("ethtool", &["-K", iface, "tx", "off"])?;
    Ok(())
}

/// conntrack(8)'s arguments that list one family's connections.
fn listing_args(ipv6: bool) -> &'static [&'static str] {
    if ipv6 { &["-L", "-f", "ipv6"] } else { &["-L"] }
}

/// For failure messages: every table of the IPv4 (`ipv6`: IPv6) ruleset
/// and the connection table, as each firewall shows them.
pub fn diagnostics(firewall: &Firewall, ns: &Netns, ipv6: bool) -> String {
    let save = match (firewall, ipv6) {
        (Firewall::Netbeast { .. }, false) => ns.netbeast_ok(&["save"]),
        (Firewall::Netbeast { .. }, true) => ns.netbeast_ok(&["save", "-6"]),
        (Firewall::Iptables, false) => ns.run_ok("iptables-save", &[] as &[&str]),
        (Firewall::Iptables, true) => ns.run_ok("ip6tables-save", &[] as &[&str]),
    };
    let save = save.unwrap_or_else(|e| e.to_string());
    match firewall {
        Firewall::Netbeast { .. } => save + &support::diagnostics(ns, firewall),
        Firewall::Iptables => {
            let args = listing_args(ipv6);
            let table = ns
                .run_ok("conntrack", args)
                .unwrap_or_else(|e| e.to_string());
            format!("{save}\nconntrack {}:\n{table}", args.join(" "))
        }
    }
}

/// The connection table of one family in conntrack(8)'s words: `netbeast
/// conntrack -L [-f ipv6]`, or conntrack(8) itself for the kernel.
pub fn conntrack_listing(firewall: &Firewall, ns: &Netns, ipv6: bool) -> String {
    let args = listing_args(ipv6);
    match firewall {
        Firewall::Netbeast { .. } => support::conntrack(ns, args).0,
        Firewall::Iptables => ns
            .run_ok("conntrack", args)
            .unwrap_or_else(|e| panic!("conntrack {args:?} in {}: {e}", ns.name())),
    }
}

/// One direction of a connection as conntrack(8) prints it (ports 0 for
/// ICMP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub src: std::net::IpAddr,
    pub dst: std::net::IpAddr,
    pub sport: u16,
    pub dport: u16,
}

impl Tuple {
    pub fn new(src: impl Into<SocketAddr>, dst: impl Into<SocketAddr>) -> Tuple {
        let (src, dst) = (src.into(), dst.into());
        Tuple {
            src: src.ip(),
            dst: dst.ip(),
            sport: src.port(),
            dport: dst.port(),
        }
    }
}

/// The tuples of one `conntrack -L` line, in order (original, reply): each
/// `src=` starts one; counters and flags in between are skipped.
pub fn tuples(line: &str) -> Vec<Tuple> {
    let unspecified = std::net::IpAddr::from([0u8; 4]);
    let mut found: Vec<Tuple> = Vec::new();
    for word in line.split_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        if key == "src" {
            found.push(Tuple {
                src: value.parse().unwrap_or(unspecified),
                dst: unspecified,
                sport: 0,
                dport: 0,
            });
            continue;
        }
        let Some(t) = found.last_mut() else { continue };
        match key {
            "dst" => t.dst = value.parse().unwrap_or(unspecified),
            "sport" => t.sport = value.parse().unwrap_or(0),
            "dport" => t.dport = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    found
}

/// Asserts that the connection table of `ns` lists a `protocol`
/// connection with these original and reply tuples (in the listing of
/// their family).
pub fn assert_tracked(
    firewall: &Firewall,
    ns: &Netns,
    protocol: &str,
    original: Tuple,
    reply: Tuple,
) {
    let listing = conntrack_listing(firewall, ns, original.src.is_ipv6());
    let found = listing.lines().any(|line| {
        line.split_whitespace().next() == Some(protocol) && tuples(line) == [original, reply]
    });
    assert!(
        found,
        "no {protocol} connection {original:?} with reply {reply:?} in conntrack -L of {}:\n{listing}",
        ns.name()
    );
}

/// Opens a TCP connection from `ns` (from `local`) to a peer server at
/// `server`, within `timeout`, and returns it with the client address the
/// server saw.
pub fn open(
    ns: &Netns,
    local: impl Into<SocketAddr>,
    server: impl Into<SocketAddr>,
    timeout: Duration,
    context: impl Fn() -> String,
) -> (TcpStream, SocketAddr) {
    let (local, server) = (local.into(), server.into());
    let mut stream = tcp_stream(ns, Some(local), server, timeout)
        .unwrap()
        .unwrap_or_else(|outcome| {
            panic!(
                "{local} -> {server}: {outcome}, expected a connection\n{}",
                context()
            )
        });
    let seen = read_peer_addr(&mut stream, timeout).unwrap_or_else(|e| {
        panic!(
            "{local} -> {server}: connected, but the server did not answer: {e}\n{}",
            context()
        )
    });
    (stream, seen)
}

/// What a TCP connection attempt from `local` to `server` came to within
/// `timeout`, when it must not come up.
pub fn refused_or_lost(
    ns: &Netns,
    local: impl Into<SocketAddr>,
    server: impl Into<SocketAddr>,
    timeout: Duration,
) -> ConnectOutcome {
    let (local, server) = (local.into(), server.into());
    match tcp_stream(ns, Some(local), server, timeout).unwrap() {
        Ok(stream) => panic!(
            "{local} -> {server} connected (as {:?}), expected no connection",
            stream.local_addr()
        ),
        Err(outcome) => outcome,
    }
}

/// The client address a udp peer server saw in `reply`, which must echo
/// `payload` after it.
pub fn udp_peer(reply: &UdpOutcome, payload: &[u8]) -> Result<SocketAddr, String> {
    let UdpOutcome::Reply(bytes) = reply else {
        return Err(format!("no answer: {reply}"));
    };
    let peer = parse_peer_addr(bytes)
        .ok_or_else(|| format!("not a peer line: {:?}", String::from_utf8_lossy(bytes)))?;
    let rest = &bytes[bytes.iter().position(|&b| b == b'\n').unwrap_or(0) + 1..];
    if rest != payload {
        return Err(format!(
            "the answer echoes {:?}, not {:?}",
            String::from_utf8_lossy(rest),
            String::from_utf8_lossy(payload)
        ));
    }
    Ok(peer)
}

/// A UDP socket in `ns`, bound to `local` and connected to `server`, kept
/// open across several exchanges (one conntrack entry for all of them).
pub fn udp_socket(
    ns: &Netns,
    local: impl Into<SocketAddr>,
    server: impl Into<SocketAddr>,
) -> UdpSocket {
    let (local, server) = (local.into(), server.into());
    ns.in_netns(|| {
        let socket = UdpSocket::bind(local)?;
        socket.connect(server)?;
        Ok::<_, std::io::Error>(socket)
    })
    .unwrap()
    .unwrap_or_else(|e| panic!("udp socket {local} -> {server} in {}: {e}", ns.name()))
}

/// One datagram on `socket` and the answer of a udp peer server: the
/// client address it saw.
pub fn udp_ask(
    socket: &UdpSocket,
    payload: &[u8],
    timeout: Duration,
) -> Result<SocketAddr, String> {
    socket.send(payload).map_err(|e| format!("sending: {e}"))?;
    socket
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 2048];
    let outcome = match socket.recv(&mut buf) {
        Ok(n) => {
            buf.truncate(n);
            UdpOutcome::Reply(buf)
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            UdpOutcome::TimedOut
        }
        Err(e) => UdpOutcome::Error(e.to_string()),
    };
    udp_peer(&outcome, payload)
}

/// The router's `fast_path` statistic, when `firewall` is netbeast.
pub fn fast_path_count(firewall: &Firewall, router: &Netns) -> Option<u64> {
    firewall.is_netbeast().then(|| stat(router, "fast_path"))
}

/// Asserts which way the router forwarded since `before`: with the fast
/// path on, at least `least` packets in XDP (each translated there just
/// before its redirect); with it off, none, so the kernel forwarded them
/// all and TC egress translated their source.
pub fn assert_forwarding_path(
    firewall: &Firewall,
    router: &Netns,
    before: Option<u64>,
    least: u64,
    context: impl Fn() -> String,
) {
    let Some(before) = before else { return };
    let fast = stat(router, "fast_path") - before;
    if fast_path_on(firewall) {
        assert!(
            fast >= least,
            "only {fast} translated packets took the XDP fast path\n{}",
            context()
        );
    } else {
        assert_eq!(
            fast,
            0,
            "packets took the XDP fast path, which is off\n{}",
            context()
        );
    }
}

/// Two hosts, both from the same source port (`hosts`: each host and its
/// address), talk at once to a server behind a source translation to
/// `translated`: its peer servers (`tcp`, and `udp_server`) see both at
/// `translated` with two different ports (the first keeps its own, which
/// was free), both TCP connections carry their own [`TRANSFER`] bytes both
/// ways at the same time, and each UDP flow keeps its binding. The first
/// UDP flow is answered before the second starts, so it keeps its port.
pub fn assert_two_hosts_share_a_port(
    hosts: [(&Netns, SocketAddr); 2],
    tcp: (&Server, SocketAddr),
    udp_server: SocketAddr,
    translated: IpAddr,
    context: impl Fn() -> String + Sync,
) {
    let shared = hosts[0].1.port();
    let [(mut first, seen1), (mut second, seen2)] =
        hosts.map(|(host, local)| open(host, local, tcp.1, CONNECT_TIMEOUT, &context));
    let udp_flows = hosts.map(|(host, local)| udp_socket(host, local, udp_server));
    let udp = |flow: &UdpSocket, payload: &[u8]| {
        udp_ask(flow, payload, CONNECT_TIMEOUT)
            .unwrap_or_else(|e| panic!("UDP {:?}: {e}\n{}", flow.local_addr(), context()))
    };
    let udp1 = udp(&udp_flows[0], b"one");
    let udp2 = udp(&udp_flows[1], b"two");
    for (what, seen1, seen2) in [("TCP", seen1, seen2), ("UDP", udp1, udp2)] {
        assert_eq!(
            (seen1.ip(), seen2.ip()),
            (translated, translated),
            "the server must see both {what} clients at {translated}\n{}",
            context()
        );
        assert_eq!(
            seen1.port(),
            shared,
            "the first {what} client keeps its source port, which was free\n{}",
            context()
        );
        assert_ne!(
            seen2.port(),
            seen1.port(),
            "two {what} clients from the same address and port to one server\n{}",
            context()
        );
    }
    assert_eq!(tcp.0.served_within(2, CONNECT_TIMEOUT), 2);
    std::thread::scope(|scope| {
        let a = scope.spawn(|| roundtrip(&mut first, &vec![1; TRANSFER], TRANSFER_TIMEOUT));
        let b = scope.spawn(|| roundtrip(&mut second, &vec![2; TRANSFER], TRANSFER_TIMEOUT));
        for (who, result) in [("first", a.join()), ("second", b.join())] {
            result
                .expect("roundtrip thread")
                .unwrap_or_else(|e| panic!("the {who} host's connection: {e}\n{}", context()));
        }
    });
    for (flow, payload, seen) in [(&udp_flows[0], b"ONE", udp1), (&udp_flows[1], b"TWO", udp2)] {
        assert_eq!(udp(flow, payload), seen, "a UDP flow changed its binding");
    }
}
