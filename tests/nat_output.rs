//! The article's OUTPUT DNAT for locally generated connections, as a
//! network test of netbeast's cgroup socket programs:
//!
//! ```text
//! iptables -t nat -I OUTPUT -o lo -p tcp -s 127.0.0.1 --dport 80 -j DNAT --to 192.168.0.4:80
//! ```
//!
//! (and the same line for UDP). A client of the router namespace
//! (192.168.0.1) connects to 127.0.0.1:80, where nothing listens, and is
//! served by the server namespace (192.168.0.4:80), while `getpeername`
//! still says 127.0.0.1:80; UDP the same, on connected and unconnected
//! sockets. A third namespace's 127.0.0.1:80 stays its own, although the
//! socket programs are attached to the root cgroup, which every namespace
//! shares.
//!
//! The kernel's iptables is the oracle, with what it needs on top of the
//! article's line to work at all (measured here: with the line alone the
//! connection times out, since the translated packet leaves with source
//! 127.0.0.1): `route_localnet`, a MASQUERADE of 127.0.0.1 and
//! `arp_announce=2`. netbeast translates the socket before routing, so the
//! kernel picks a proper source itself and needs none of them.
//!
//! The same for ip6tables' nat OUTPUT and IPv6 sockets (`output_dnat6`).
//!
//! Needs root. Run: `cargo test -p netbeast --test nat_output`.

#[path = "support/mod.rs"]
mod support;

use std::{
    io::Read,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    path::PathBuf,
    time::Duration,
};

use netbeast::{
    loader::{SOCK_ATTACH_TYPES, SOCK_PROGRAMS, cgroup_program_ids, pinned_link_program},
    netns::{
        ConnectOutcome, Firewall, Netns, UdpOutcome, banner, parse_peer_addr, peer_server,
        read_peer_addr, require_root, tcp_connect, tcp_server, udp_echo_server, udp_exchange,
        udp_peer_server, veth_pair, wait_for,
    },
    state,
};

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
const TIMEOUT: Duration = Duration::from_secs(2);

const ROUTER: &str = "192.168.0.1/24";
const SERVER: &str = "192.168.0.4/24";
const ROUTER_IFACE: &str = "nbt-r";
const SERVER_IFACE: &str = "nbt-s";
const LOOPBACK_80: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 80);
const RULES: [&str; 2] = [
    "-t nat -I OUTPUT -o lo -p tcp -s 127.0.0.1 --dport 80 -j DNAT --to 192.168.0.4:80",
    "-t nat -I OUTPUT -o lo -p udp -s 127.0.0.1 --dport 80 -j DNAT --to 192.168.0.4:80",
];

include!("support/scenario.rs");

/// Fields drop in order: the namespaces without netbeast, then the router,
/// whose drop runs `netbeast detach --all`.
struct Net {
    other: Netns,
    server: Netns,
    router: Netns,
    firewall: Firewall,
}

impl Net {
    fn new(tag: &str, firewall: Firewall) -> Net {
        require_root();
        let setup = || -> netbeast::netns::Result<Net> {
            let router = firewall.guard(Netns::new(&format!("{tag}-rtr"))?);
            let server = Netns::new(&format!("{tag}-srv"))?;
            let other = Netns::new(&format!("{tag}-oth"))?;
            veth_pair(&router, ROUTER_IFACE, ROUTER, &server, SERVER_IFACE, SERVER)?;
            firewall.attach(&router, &[ROUTER_IFACE])?;
            if !firewall.is_netbeast() {
                // What the kernel's DNAT of 127.0.0.1 to another host needs.
                router.sysctl("net.ipv4.conf.all.route_localnet", "1")?;
                router.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
                firewall.iptables_ok(
                    &router,
                    &format!("-t nat -A POSTROUTING -s 127.0.0.1 -o {ROUTER_IFACE} -j MASQUERADE"),
                )?;
            }
            Ok(Net {
                other,
                server,
                router,
                firewall,
            })
        };
        setup().unwrap_or_else(|e| panic!("setting up the namespaces: {e}"))
    }

    fn iptables(&self, line: &str) {
        self.firewall
            .iptables_ok(&self.router, line)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The router's pinned socket links: (pin, program id).
    fn sock_links(&self) -> Vec<(PathBuf, u32)> {
        let id = self.router.id().unwrap();
        let links = PathBuf::from(state::BPFFS)
            .join("netbeast")
            .join(id.to_string())
            .join("links");
        SOCK_PROGRAMS
            .iter()
            .map(|(_, pin)| {
                let path = links.join(pin);
                let prog = pinned_link_program(&path)
                    .unwrap_or_else(|| panic!("no link pinned at {}", path.display()));
                (path, prog)
            })
            .collect()
    }
}

/// Program ids of `links` attached to the root cgroup, hook by hook.
fn attached_of(links: &[(PathBuf, u32)]) -> Vec<u32> {
    let root = state::cgroup2_root().unwrap();
    links
        .iter()
        .zip(SOCK_ATTACH_TYPES)
        .filter(|((_, prog), hook)| cgroup_program_ids(&root, *hook).unwrap().contains(prog))
        .map(|((_, prog), _)| *prog)
        .collect()
}

/// Connects to 127.0.0.1:80 from `ns`: the first line the server sends and
/// the peer `getpeername` reports.
fn tcp_via_loopback(ns: &Netns) -> (String, SocketAddr) {
    ns.in_netns(|| {
        let mut s = TcpStream::connect_timeout(&LOOPBACK_80.into(), TIMEOUT)
            .unwrap_or_else(|e| panic!("connecting to {LOOPBACK_80} in {}: {e}", ns.name()));
        let peer = s.peer_addr().unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        (text, peer)
    })
    .unwrap()
}

/// What an unconnected UDP socket of `ns` gets back for a datagram sent to
/// 127.0.0.1:80: the echo and its source.
fn udp_unconnected(ns: &Netns, payload: &[u8]) -> (Vec<u8>, SocketAddr) {
    ns.in_netns(|| {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.send_to(payload, LOOPBACK_80).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = s
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("no echo on an unconnected socket: {e}"));
        (buf[..n].to_vec(), from)
    })
    .unwrap()
}

/// The same on a connected UDP socket: echo, source and `getpeername`.
fn udp_connected(ns: &Netns, payload: &[u8]) -> (Vec<u8>, SocketAddr, SocketAddr) {
    ns.in_netns(|| {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.connect(LOOPBACK_80).unwrap();
        s.send(payload).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = s
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("no echo on a connected socket: {e}"));
        (buf[..n].to_vec(), from, s.peer_addr().unwrap())
    })
    .unwrap()
}

scenario!(output_dnat_to_another_host);
fn output_dnat_to_another_host(firewall: Firewall) {
    let net = Net::new("natout", firewall);
    let tcp = tcp_server(&net.server, 80).unwrap();
    let udp = udp_echo_server(&net.server, 80).unwrap();
    let own = tcp_server(&net.other, 80).unwrap();

    let before = tcp_connect(&net.router, LOOPBACK_80, TIMEOUT).unwrap();
    assert!(
        before.is_refused(),
        "nothing listens on the router's 127.0.0.1:80, yet: {before}"
    );
    for line in RULES {
        net.iptables(line);
    }

    let (text, peer) = tcp_via_loopback(&net.router);
    assert_eq!(text, banner(80));
    assert_eq!(
        peer,
        SocketAddr::V4(LOOPBACK_80),
        "getpeername of a TCP client"
    );
    assert_eq!(
        tcp.served_within(1, TIMEOUT),
        1,
        "the server namespace served it"
    );

    let (echo, from) = udp_unconnected(&net.router, b"unconnected");
    assert_eq!(echo, b"unconnected");
    assert_eq!(from, SocketAddr::V4(LOOPBACK_80), "recvfrom's source");
    let (echo, from, peer) = udp_connected(&net.router, b"connected");
    assert_eq!(echo, b"connected");
    assert_eq!(from, SocketAddr::V4(LOOPBACK_80), "recvfrom's source");
    assert_eq!(
        peer,
        SocketAddr::V4(LOOPBACK_80),
        "getpeername of a UDP client"
    );
    assert_eq!(
        udp.served_within(2, TIMEOUT),
        2,
        "the server namespace echoed"
    );

    // The other namespace's 127.0.0.1:80 is its own.
    let (text, peer) = tcp_via_loopback(&net.other);
    assert_eq!(text, banner(80));
    assert_eq!(peer, SocketAddr::V4(LOOPBACK_80));
    assert_eq!(own.served_within(1, TIMEOUT), 1);
    assert_eq!(
        tcp.served(),
        1,
        "the other namespace's connection was translated"
    );

    if net.firewall.is_netbeast() {
        // Three sockets translated: TCP connect, sendto, UDP connect.
        assert_eq!(support::stat(&net.router, "nat_socket"), 3);
    }

    // Without the rules, 127.0.0.1:80 is the router's own again.
    for line in RULES {
        net.iptables(&line.replace(" -I ", " -D "));
    }
    let after = tcp_connect(&net.router, LOOPBACK_80, TIMEOUT).unwrap();
    assert!(after.is_refused(), "tcp after -D: {after}");
    let after = udp_exchange(&net.router, LOOPBACK_80, b"gone", TIMEOUT).unwrap();
    assert!(
        matches!(after, UdpOutcome::Refused(_)),
        "udp after -D: {after}"
    );
    assert_eq!(tcp.served(), 1);
    assert_eq!(udp.served(), 2);
}

// A mark nat OUTPUT sets is the connection's first packet's, as in the
// kernel, where nat OUTPUT sees only that packet (kube-proxy's
// KUBE-MARK-MASQ for the node's own connections to a service): filter
// OUTPUT's `-m mark` rule counts one packet per connection, the SYN, and
// the rest of the connection passes unmarked.
scenario!(nat_output_marks_the_first_packet);
fn nat_output_marks_the_first_packet(firewall: Firewall) {
    let net = Net::new("natmark", firewall);
    let server = tcp_server(&net.server, 80).unwrap();
    for line in [
        "-t nat -A OUTPUT -p tcp --dport 80 -j MARK --set-mark 0x10",
        "-A OUTPUT -p tcp --dport 80 -m mark --mark 0x10 -j ACCEPT",
        "-A OUTPUT -p tcp --dport 80 -j ACCEPT",
    ] {
        net.iptables(line);
    }
    let server_80 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 4), 80);
    for i in 0..2 {
        let outcome = tcp_connect(&net.router, server_80, TIMEOUT).unwrap();
        assert_eq!(outcome, ConnectOutcome::Connected, "connection {i}");
    }
    assert_eq!(server.served_within(2, TIMEOUT), 2);
    // Each connection's SYN marked, its ACK and FIN (at least) not.
    let counted = || {
        let output = net.firewall.list(&net.router, "OUTPUT").unwrap();
        (output.rules[0].packets, output.rules[1].packets)
    };
    let settled = wait_for(TIMEOUT, || {
        let (marked, unmarked) = counted();
        (unmarked >= 4).then_some((marked, unmarked))
    });
    let (marked, unmarked) = counted();
    assert!(
        settled.is_some() && marked == 2,
        "filter OUTPUT counted {marked} marked and {unmarked} unmarked packets of two \
         connections (wanted 2 marked, the SYNs, and at least 4 unmarked)"
    );
}

/// A test that fails leaves nothing attached: the socket programs hang on
/// the root cgroup, shared by the whole host, and go with their pins when
/// the router namespace's guard runs `netbeast detach --all` during the
/// unwinding.
#[test]
fn a_failing_test_leaves_no_socket_program_attached() {
    let links = std::sync::Mutex::new(Vec::new());
    let outcome = std::panic::catch_unwind(|| {
        let net = Net::new("natfail", Firewall::netbeast(NETBEAST));
        let pinned = net.sock_links();
        assert_eq!(
            attached_of(&pinned).len(),
            SOCK_PROGRAMS.len(),
            "attach put all four socket programs on the root cgroup"
        );
        *links.lock().unwrap() = pinned;
        panic!("deliberate: a test failing with netbeast attached");
    });
    assert!(outcome.is_err());
    let links = links.into_inner().unwrap();
    assert_eq!(links.len(), SOCK_PROGRAMS.len(), "the links were seen");
    assert_eq!(
        attached_of(&links),
        Vec::<u32>::new(),
        "socket programs left on the root cgroup"
    );
    for (pin, _) in &links {
        assert!(!pin.exists(), "{} is still pinned", pin.display());
    }
}

/// `netbeast detach IFACE` of the last attached interface takes the socket
/// programs away too; attaching again brings them back.
#[test]
fn detaching_the_last_interface_detaches_the_socket_programs() {
    let net = Net::new("natdet", Firewall::netbeast(NETBEAST));
    let first = net.sock_links();
    net.router.netbeast_ok(&["detach", ROUTER_IFACE]).unwrap();
    assert_eq!(attached_of(&first), Vec::<u32>::new());
    for (pin, _) in &first {
        assert!(!pin.exists(), "{} is still pinned", pin.display());
    }
    net.firewall.attach(&net.router, &[ROUTER_IFACE]).unwrap();
    let again = net.sock_links();
    assert_eq!(attached_of(&again).len(), SOCK_PROGRAMS.len());
}

// ---------------------------------------------------------------------------
// ip6tables' nat OUTPUT

const ROUTER6: &str = "fd00:b::1";
const SERVER6: &str = "fd00:b::15";
/// On the server's link, but no host has it: only a translation makes a
/// connection to it work.
const VIRTUAL6: &str = "fd00:b::99";
const REDIRECTED6: &str = "fd00:b::98";

fn v6(addr: &str, port: u16) -> SocketAddr {
    SocketAddr::new(addr.parse().unwrap(), port)
}

/// Connects from `ns` to `to` over TCP: the peer the server saw (its peer
/// line) and the one `getpeername` reports.
fn tcp_peers6(ns: &Netns, to: SocketAddr) -> (SocketAddr, SocketAddr) {
    ns.in_netns(|| {
        let mut s = TcpStream::connect_timeout(&to, TIMEOUT)
            .unwrap_or_else(|e| panic!("connecting to {to} in {}: {e}", ns.name()));
        let peer = s.peer_addr().unwrap();
        let seen = read_peer_addr(&mut s, TIMEOUT).unwrap();
        (seen, peer)
    })
    .unwrap()
}

/// Sends a datagram from an unconnected UDP socket of `ns` to `to`: the
/// peer the server saw and the source of its answer.
fn udp_peers6(ns: &Netns, to: SocketAddr) -> (SocketAddr, SocketAddr) {
    ns.in_netns(|| {
        let s = UdpSocket::bind("[::]:0").unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.send_to(b"who", to).unwrap();
        let mut buf = [0u8; 128];
        let (n, from) = s
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("no answer from {to} in {}: {e}", ns.name()));
        (parse_peer_addr(&buf[..n]).expect("a peer line"), from)
    })
    .unwrap()
}

// `ip6tables -t nat -A OUTPUT ... -j DNAT` and `-j REDIRECT` for the
// host's own IPv6 sockets: a connection (TCP, and UDP datagrams) to an
// address no host has reaches the server it is translated to, which sees
// the router's address; `getpeername` and `recvfrom` still say the
// address the application used; REDIRECT reaches a listener of the
// router itself. As with the kernel's ip6tables (packets rewritten after
// routing); netbeast rewrites the socket's destination before it.
scenario!(output_dnat6);
fn output_dnat6(firewall: Firewall) {
    require_root();
    let router = firewall.guard(Netns::new("nato6-rtr").unwrap());
    let server = Netns::new("nato6-srv").unwrap();
    veth_pair(
        &router,
        ROUTER_IFACE,
        &format!("{ROUTER6}/64"),
        &server,
        SERVER_IFACE,
        &format!("{SERVER6}/64"),
    )
    .unwrap();
    firewall.attach(&router, &[ROUTER_IFACE]).unwrap();
    // Duplicate address detection done: a tentative source is no source.
    for ns in [&router, &server] {
        let settled = wait_for(Duration::from_secs(10), || {
            let tentative = ns.ip(&["-6", "addr", "show", "tentative"]).ok()?;
            tentative.trim().is_empty().then_some(())
        });
        assert!(settled.is_some(), "DAD still running in {}", ns.name());
    }
    let _tcp = peer_server(&server, v6("::", 8080)).unwrap();
    let _udp = udp_peer_server(&server, v6("::", 8080)).unwrap();
    let _local = peer_server(&router, v6("::", 8081)).unwrap();
    let ip6tables = |line: &str| {
        firewall
            .ip6tables_ok(&router, line)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    for protocol in ["tcp", "udp"] {
        ip6tables(&format!(
            "-t nat -A OUTPUT -d {VIRTUAL6}/128 -p {protocol} --dport 80 \
             -j DNAT --to-destination [{SERVER6}]:8080"
        ));
    }
    ip6tables(&format!(
        "-t nat -A OUTPUT -d {REDIRECTED6}/128 -p tcp --dport 80 -j REDIRECT --to-ports 8081"
    ));

    let virtual80 = v6(VIRTUAL6, 80);
    let (seen, peer) = tcp_peers6(&router, virtual80);
    assert_eq!(seen.ip(), v6(ROUTER6, 0).ip(), "the client the server saw");
    assert_eq!(peer, virtual80, "getpeername of a TCP client");
    let (seen, from) = udp_peers6(&router, virtual80);
    assert_eq!(
        seen.ip(),
        v6(ROUTER6, 0).ip(),
        "the UDP client the server saw"
    );
    assert_eq!(from, virtual80, "recvfrom's source");
    let (_, peer) = tcp_peers6(&router, v6(REDIRECTED6, 80));
    assert_eq!(
        peer,
        v6(REDIRECTED6, 80),
        "getpeername of a redirected client"
    );
    if firewall.is_netbeast() {
        // TCP connect, sendto, and the redirected connect.
        assert_eq!(support::stat(&router, "nat_socket"), 3);
    }
}
