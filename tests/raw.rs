//! Network tests of the raw table (issue 14): its PREROUTING runs before
//! conntrack and nat PREROUTING, its OUTPUT before conntrack; `-j CT
//! --notrack` and `-j NOTRACK` leave a flow out of conntrack, so that
//! `--state UNTRACKED` matches it and no connection is recorded. Every
//! scenario also runs against the kernel's iptables (`iptables_oracle`).
//!
//! Needs root. Run: `cargo test -p netbeast --test raw`.

use std::{net::SocketAddrV4, time::Duration};

use netbeast::netns::{
    ConnectOutcome::{self, Connected, Reset, TimedOut},
    Firewall, SERVER_IFACE, Testbed, require_root, tcp_connect_all, tcp_server,
};

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
/// A dropped SYN costs one timeout; an answered one takes microseconds.
const TIMEOUT: Duration = Duration::from_secs(1);

include!("support/scenario.rs");

fn testbed(tag: &str, firewall: Firewall) -> Testbed {
    require_root();
    Testbed::new(tag, firewall).unwrap_or_else(|e| panic!("setting up the testbed: {e}"))
}

fn rule(bed: &Testbed, line: &str) {
    if let Err(e) = bed.iptables_ok(line) {
        panic!("{line}: {e}");
    }
}

/// Connects to every address at once and checks each outcome.
fn expect(bed: &Testbed, when: &str, expected: &[(SocketAddrV4, ConnectOutcome)]) {
    let addrs: Vec<SocketAddrV4> = expected.iter().map(|(a, _)| *a).collect();
    let outcomes = tcp_connect_all(bed.client(), &addrs, TIMEOUT).unwrap();
    assert_outcomes(when, "", expected, &outcomes, || {
        bed.save().unwrap_or_default()
    });
}

/// The container address of Docker's rule, given to the server (as
/// Docker gives it to a container behind the host), with a route to it
/// from the client.
const CONTAINER: std::net::Ipv4Addr = std::net::Ipv4Addr::new(172, 17, 0, 2);

/// Docker 28 guards a container's address with a raw PREROUTING drop of
/// packets for it that do not come from its bridge, verbatim; packets
/// for the host's own address still pass, and an ACCEPT in raw before it
/// ends only the raw chain (filter still decides).
fn docker_guard(firewall: Firewall) {
    let bed = testbed("raw-docker", firewall);
    bed.server()
        .ip(&[
            "addr",
            "add",
            &format!("{CONTAINER}/32"),
            "dev",
            SERVER_IFACE,
        ])
        .unwrap();
    bed.client()
        .ip(&[
            "route",
            "add",
            &format!("{CONTAINER}/32"),
            "via",
            &bed.net.server_addr(0).ip().to_string(),
        ])
        .unwrap();
    let _server = tcp_server(bed.server(), 80).unwrap();
    let container = SocketAddrV4::new(CONTAINER, 80);
    let host = bed.net.server_addr(80);
    expect(
        &bed,
        "no rules",
        &[(container, Connected), (host, Connected)],
    );
    rule(
        &bed,
        "-t raw -A PREROUTING -d 172.17.0.2/32 ! -i docker0 -j DROP",
    );
    expect(
        &bed,
        "Docker's raw rule",
        &[(container, TimedOut), (host, Connected)],
    );
    // ACCEPT ends the raw chain only: the filter table still rejects.
    rule(
        &bed,
        &format!("-t raw -I PREROUTING -i {SERVER_IFACE} -p tcp -j ACCEPT"),
    );
    rule(
        &bed,
        "-A INPUT -p tcp -d 172.17.0.2 -j REJECT --reject-with tcp-reset",
    );
    expect(
        &bed,
        "a raw ACCEPT before Docker's rule, a filter REJECT after",
        &[(container, Reset), (host, Connected)],
    );
    // The raw policy drops what no rule accepts, before conntrack.
    rule(&bed, "-t raw -F");
    rule(&bed, "-t raw -P PREROUTING DROP");
    expect(
        &bed,
        "raw PREROUTING policy DROP",
        &[(container, TimedOut), (host, TimedOut)],
    );
    rule(&bed, "-t raw -P PREROUTING ACCEPT");
    expect(
        &bed,
        "raw PREROUTING policy ACCEPT again",
        &[(container, Reset), (host, Connected)],
    );
}

scenario!(docker_guard);

/// The connections conntrack holds for TCP port `port` of the server:
/// `netbeast conntrack -L` or the kernel's `conntrack -L`.
fn connections_to(bed: &Testbed, port: u16) -> usize {
    let out = if bed.firewall.is_netbeast() {
        bed.server().netbeast_ok(&["conntrack", "-L"]).unwrap()
    } else {
        let out = bed.server().run("conntrack", &["-L", "-p", "tcp"]).unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let needle = format!("dport={port} ");
    out.lines().filter(|l| l.contains(&needle)).count()
}

/// Ports 81 and 83 untracked by the raw table, 82 tracked; INPUT lets
/// 81 in only untracked and 82 only NEW/ESTABLISHED, and resets the rest.
/// The same lines for iptables and ip6tables.
const NOTRACK_RULES: [&str; 7] = [
    "-t raw -A PREROUTING -p tcp -m multiport --dports 81,83 -j CT --notrack",
    "-t raw -A OUTPUT -p tcp -m multiport --sports 81,83 -j NOTRACK",
    "-A INPUT -p tcp --dport 81 -m state --state UNTRACKED -j ACCEPT",
    "-A INPUT -p tcp --dport 82 -m conntrack --ctstate NEW,ESTABLISHED -j ACCEPT",
    "-A INPUT -p tcp -j REJECT --reject-with tcp-reset",
    // The SYN-ACK of port 81 gets out only if it is untracked too.
    "-A OUTPUT -p tcp --sport 81 -m conntrack --ctstate UNTRACKED -j ACCEPT",
    "-A OUTPUT -p tcp --sport 81 -j DROP",
];

/// `-j CT --notrack` (PREROUTING) and `-j NOTRACK` (OUTPUT) leave port
/// 81's connection out of conntrack: filter sees it UNTRACKED both ways
/// and conntrack records nothing; port 82, tracked, is NEW then
/// ESTABLISHED; a third port, untracked but met by a rule that wants
/// UNTRACKED only from another port, is reset.
fn notrack_makes_untracked(firewall: Firewall) {
    let bed = testbed("raw-notrack", firewall);
    let servers: Vec<_> = [81, 82, 83]
        .into_iter()
        .map(|p| tcp_server(bed.server(), p).unwrap())
        .collect();
    for line in NOTRACK_RULES {
        rule(&bed, line);
    }
    let at = |p| bed.net.server_addr(p);
    expect(
        &bed,
        "notrack on 81 and 83",
        &[(at(81), Connected), (at(82), Connected), (at(83), Reset)],
    );
    assert_eq!(
        connections_to(&bed, 81),
        0,
        "an untracked connection was recorded"
    );
    assert_eq!(
        connections_to(&bed, 82),
        1,
        "the tracked connection is missing"
    );
    // Without the raw OUTPUT rule the SYN-ACK is tracked (a NEW reply
    // of no connection), so OUTPUT drops it.
    rule(
        &bed,
        "-t raw -D OUTPUT -p tcp -m multiport --sports 81,83 -j NOTRACK",
    );
    expect(
        &bed,
        "notrack at PREROUTING only",
        &[(at(81), TimedOut), (at(82), Connected)],
    );
    drop(servers);
}

scenario!(notrack_makes_untracked);

/// `-j CT --zone`: one UDP tuple (10.0.0.1:5000 → 10.0.0.2:7) arriving on
/// two interfaces that raw PREROUTING puts in zones 1 and 2 is two
/// connections, as the kernel keys conntrack by zone: `conntrack -L`
/// shows both, `zone=1` and `zone=2`; `-m connlimit` counts each zone's
/// connections apart (xt_connlimit keys its counts by zone), so its
/// count-only rule over one connection per address matches neither
/// packet, while a third connection of zone 1 (another source port) is
/// over the limit of that zone. A later `-j NOTRACK` in the
/// same chain changes nothing for them (xt_CT: the first template stays).
/// Frames are sent raw from the outside namespace, so no ARP or routing
/// decides which interface they take.
fn zones_keep_one_tuple_apart(firewall: Firewall) {
    use netbeast::{netns::veth_pair, packet::FrameBuilder};
    use std::net::Ipv4Addr;
    require_root();
    let outside = netbeast::netns::Netns::new("zone-o").expect("outside namespace");
    let host = firewall.guard(netbeast::netns::Netns::new("zone-h").expect("host namespace"));
    let (a_out, a_in, b_out, b_in) = ("nbtza0", "nbtza1", "nbtzb0", "nbtzb1");
    veth_pair(&outside, a_out, "10.0.0.1/24", &host, a_in, "10.0.0.2/24").expect("veth a");
    veth_pair(&outside, b_out, "10.0.1.1/24", &host, b_in, "10.0.1.2/24").expect("veth b");
    // 10.0.0.1 also arrives on b: no reverse-path filter may drop it there.
    for iface in ["all", "default", a_in, b_in] {
        host.sysctl(&format!("net.ipv4.conf.{iface}.rp_filter"), "0")
            .expect("rp_filter");
    }
    firewall.attach(&host, &[a_in, b_in]).expect("attach");
    for line in [
        "-t raw -A PREROUTING -i nbtza1 -j CT --zone 1",
        "-t raw -A PREROUTING -i nbtzb1 -j CT --zone 2",
        "-t raw -A PREROUTING -p udp --dport 7 -j NOTRACK",
        "-A INPUT -p udp --dport 7",
        "-A INPUT -p udp --dport 7 -m connlimit --connlimit-above 1 --connlimit-mask 32",
    ] {
        firewall
            .iptables_ok(&host, line)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    let frame = |out: &str, into: &str, sport: u16| {
        FrameBuilder::udp(
            Ipv4Addr::new(10, 0, 0, 1),
            sport,
            Ipv4Addr::new(10, 0, 0, 2),
            7,
        )
        .src_mac(outside.mac(out).expect("mac"))
        .dst_mac(host.mac(into).expect("mac"))
        .payload(b"zone")
        .build()
    };
    for (out, into, sport) in [
        (a_out, a_in, 5000),
        (b_out, b_in, 5000),
        (a_out, a_in, 5001),
    ] {
        let sent = outside
            .send_frames(out, &[frame(out, into, sport)], Duration::from_secs(1))
            .expect("sending");
        assert_eq!(sent, 1, "frame out of {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let listing = if firewall.is_netbeast() {
        host.netbeast_ok(&["conntrack", "-L"]).unwrap()
    } else {
        let out = host.run("conntrack", &["-L", "-p", "udp"]).unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let lines: Vec<&str> = listing
        .lines()
        .filter(|l| l.contains("sport=5000 dport=7 "))
        .collect();
    assert_eq!(lines.len(), 2, "one connection per zone:\n{listing}");
    for zone in [1, 2] {
        let needle = format!(" zone={zone}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&needle) && l.contains("[UNREPLIED]")),
            "no connection in zone {zone}:\n{listing}"
        );
    }
    let input = firewall.list(&host, "INPUT").expect("listing INPUT");
    assert_eq!(input.rules[0].packets, 3, "{:?}", input.rules[0].line);
    assert_eq!(
        input.rules[1].packets, 1,
        "connlimit counts zone 1's second connection only: {:?}",
        input.rules[1].line
    );
}

scenario!(zones_keep_one_tuple_apart);

/// IPv6 addresses of the ip6tables scenario: the client, the host, and a
/// container address the host holds as Docker's bridge would hand it on.
const CLIENT6: &str = "fd00:14::1";
const HOST6: &str = "fd00:14::2";
const CONTAINER6: &str = "fd00:dead:beef::2";

/// A TCP connection from `ns` to `[addr]:port`, its outcome.
fn connect6(ns: &netbeast::netns::Netns, addr: &str, port: u16) -> ConnectOutcome {
    let to = std::net::SocketAddr::from((addr.parse::<std::net::Ipv6Addr>().unwrap(), port));
    ns.in_netns(
        move || match std::net::TcpStream::connect_timeout(&to, TIMEOUT) {
            Ok(_) => Connected,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Reset,
            Err(_) => TimedOut,
        },
    )
    .unwrap()
}

/// ip6tables' raw table on real IPv6 traffic (neighbour discovery live):
/// Docker 28's IPv6 raw drop verbatim (`-d fd00:dead:beef::2/128 ! -i
/// docker0 -p tcp -m tcp --dport 80 -j DROP`) stops direct connections to
/// the container address while the host's own address answers; a raw
/// PREROUTING DROP policy stops everything (neighbour solicitations too);
/// `-j CT --notrack` in PREROUTING and `-j NOTRACK` in OUTPUT make port
/// 81's connection UNTRACKED both ways (filter accepts it as such, and
/// conntrack records none), port 82 stays tracked, port 83 (untracked,
/// no rule for it) is reset; without the OUTPUT rule the SYN-ACK is
/// tracked and dropped.
fn ipv6_raw_table(firewall: Firewall) {
    use netbeast::netns::{Netns, veth_pair};
    require_root();
    let client = Netns::new("raw6-c").expect("client namespace");
    let host = firewall.guard(Netns::new("raw6-h").expect("host namespace"));
    veth_pair(
        &host,
        "nbtr6h",
        "10.216.6.2/24",
        &client,
        "nbtr6c",
        "10.216.6.1/24",
    )
    .expect("veth");
    for (ns, iface, addr) in [
        (&host, "nbtr6h", format!("{HOST6}/64")),
        (&host, "nbtr6h", format!("{CONTAINER6}/128")),
        (&client, "nbtr6c", format!("{CLIENT6}/64")),
    ] {
        ns.ip(&["-6", "addr", "add", &addr, "dev", iface, "nodad"])
            .unwrap();
    }
    client
        .ip(&[
            "-6",
            "route",
            "add",
            &format!("{CONTAINER6}/128"),
            "via",
            HOST6,
        ])
        .unwrap();
    firewall.attach(&host, &["nbtr6h"]).expect("attach");
    let _listeners: Vec<std::net::TcpListener> = host
        .in_netns(|| {
            [80, 81, 82, 83]
                .map(|p| std::net::TcpListener::bind(format!("[::]:{p}")).unwrap())
                .into()
        })
        .unwrap();
    let rule = |line: &str| {
        firewall
            .ip6tables_ok(&host, line)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    };
    let probe = |when: &str, expected: &[(&str, u16, ConnectOutcome)]| {
        for ns in [&client, &host] {
            ns.ip(&["-6", "neigh", "flush", "all"]).unwrap();
        }
        let wrong: Vec<String> = expected
            .iter()
            .map(|(addr, port, want)| (addr, port, want, connect6(&client, addr, *port)))
            .filter(|(_, _, want, got)| *want != got)
            .map(|(addr, port, want, got)| format!("[{addr}]:{port}: expected {want}, got {got}"))
            .collect();
        assert!(wrong.is_empty(), "{when}:\n  {}", wrong.join("\n  "));
    };
    probe(
        "no rules",
        &[(CONTAINER6, 80, Connected), (HOST6, 80, Connected)],
    );
    rule(
        "-t raw -A PREROUTING -d fd00:dead:beef::2/128 ! -i docker0 -p tcp -m tcp --dport 80 -j DROP",
    );
    probe(
        "Docker 28's IPv6 raw rule",
        &[(CONTAINER6, 80, TimedOut), (HOST6, 80, Connected)],
    );
    rule("-t raw -P PREROUTING DROP");
    probe(
        "raw PREROUTING policy DROP (neighbour discovery too)",
        &[(HOST6, 80, TimedOut)],
    );
    rule("-t raw -P PREROUTING ACCEPT");
    rule("-t raw -F");
    for line in NOTRACK_RULES {
        rule(line);
    }
    probe(
        "notrack on 81 and 83",
        &[
            (HOST6, 81, Connected),
            (HOST6, 82, Connected),
            (HOST6, 83, Reset),
        ],
    );
    let listing = if firewall.is_netbeast() {
        host.netbeast_ok(&["conntrack", "-L", "-f", "ipv6"])
            .unwrap()
    } else {
        let out = host
            .run("conntrack", &["-L", "-f", "ipv6", "-p", "tcp"])
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let count = |port: u16| {
        let needle = format!("dport={port} ");
        listing.lines().filter(|l| l.contains(&needle)).count()
    };
    assert_eq!(
        count(81),
        0,
        "an untracked connection was recorded:\n{listing}"
    );
    assert_eq!(
        count(82),
        1,
        "the tracked connection is missing:\n{listing}"
    );
    rule("-t raw -D OUTPUT -p tcp -m multiport --sports 81,83 -j NOTRACK");
    probe(
        "notrack at PREROUTING only",
        &[(HOST6, 81, TimedOut), (HOST6, 82, Connected)],
    );
}

scenario!(ipv6_raw_table);
