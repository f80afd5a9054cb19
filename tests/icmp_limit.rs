//! REJECT's ICMP errors obey the namespace's ICMP rate limits, as the
//! kernel's `icmp_send` applies them: with the defaults
//! (`net.ipv4.icmp_ratelimit` 1000 ms, a bucket 6 deep per destination
//! host) a client sending 200 datagrams in a fifth of a second to a port
//! that REJECT answers gets 6 port unreachables, not 200; with
//! `icmp_ratelimit` 0, or type 3 out of `icmp_ratemask`, it gets one for
//! each. A TCP reset is no ICMP error: never limited, even to a host whose
//! bucket is empty. OUTPUT's errors (to this host, by loopback) skip the
//! per-host limit. On netbeast (which reads the sysctls at each command)
//! and on the kernel's iptables (the oracle).
//!
//!
//! ip6tables' REJECT obeys `icmp6_send`'s limits: a bucket per host, one
//! token per `net.ipv6.icmp.ratelimit` ms, 6 deep, for the types in
//! `net.ipv6.icmp.ratemask`. This kernel (6.18.y, like 7.0: upstream
//! 0201eedb69b2) no longer shortens the period for hosts behind shorter
//! prefixes: three client addresses behind a /120, the /64 they share and
//! the default route get 6 errors each at once, then one a second, all
//! three alike (the scaling would have given 4 and 16 a second).
//! The namespace-wide budget is one for both families: IPv6 errors find
//! what IPv4's spent.
//!
//! Needs root. Run: `cargo test -p netbeast --test icmp_limit`.

use std::{
    net::{Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket},
    time::Duration,
};

use netbeast::netns::{
    CLIENT_ADDR, CLIENT_IFACE, ConnectOutcome, Firewall, Netns, SERVER_ADDR, SERVER_IFACE, Testbed,
    add_addr, require_root,
};

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");

include!("support/scenario.rs");

/// The ICMP destination-unreachable messages `ns` has received
/// (`IcmpInDestUnreachs` of /proc/net/snmp, which is per namespace).
fn unreachables_received(ns: &Netns) -> u64 {
    let snmp = ns
        .in_netns(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))
        .unwrap()
        .unwrap();
    let mut icmp = snmp.lines().filter(|l| l.starts_with("Icmp:"));
    let (names, values) = (icmp.next().unwrap(), icmp.next().unwrap());
    let at = names
        .split_whitespace()
        .position(|n| n == "InDestUnreachs")
        .unwrap();
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

/// Sends `n` datagrams from `ns` to `to`, one a millisecond, and returns
/// how many destination unreachables arrived (after a settling pause).
fn burst(ns: &Netns, to: SocketAddrV4, n: usize) -> u64 {
    let before = unreachables_received(ns);
    ns.in_netns(|| {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..n {
            let _ = socket.send_to(b"x", SocketAddr::V4(to));
            std::thread::sleep(Duration::from_millis(1));
        }
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    unreachables_received(ns) - before
}

/// `netbeast stats`' count of errors the limits held back.
fn rate_limited(bed: &Testbed) -> u64 {
    let stats = bed.server().netbeast_ok(&["stats"]).unwrap();
    stats
        .lines()
        .find_map(|l| l.strip_prefix("reject_rate_limited "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no reject_rate_limited in:\n{stats}"))
}

scenario!(reject_obeys_the_icmp_rate_limits);
fn reject_obeys_the_icmp_rate_limits(firewall: Firewall) {
    require_root();
    let netbeast = firewall.is_netbeast();
    let bed = Testbed::new("icmprl", firewall).unwrap_or_else(|e| panic!("setting up: {e}"));
    bed.iptables_ok("-A INPUT -p udp --dport 9 -j REJECT")
        .unwrap();
    bed.iptables_ok("-A INPUT -p tcp --dport 11 -j REJECT --reject-with tcp-reset")
        .unwrap();
    let to = SocketAddrV4::new(SERVER_ADDR, 9);
    // The defaults: a burst of 6, then one a second.
    let server = bed.server();
    assert_eq!(
        server.sysctl_get("net.ipv4.icmp_ratelimit").unwrap(),
        "1000"
    );
    assert_eq!(server.sysctl_get("net.ipv4.icmp_ratemask").unwrap(), "6168");
    let got = burst(bed.client(), to, 200);
    assert_eq!(got, 6, "port unreachables for 200 datagrams in 0.2 s");
    if netbeast {
        assert_eq!(rate_limited(&bed), 194, "the errors held back are counted");
    }
    // The client's bucket is empty now; resets are no ICMP errors.
    let resets = bed.connect(&[11; 20], Duration::from_secs(2)).unwrap();
    assert!(
        resets.iter().all(|r| *r == ConnectOutcome::Reset),
        "20 connects to a tcp-reset port: {resets:?}"
    );
    // Without the per-host limit (read by the next command, as any
    // change of the namespace's settings), every one is answered: the
    // namespace-wide budget (1000 a second, 50 deep) holds 20.
    server.sysctl("net.ipv4.icmp_ratelimit", "0").unwrap();
    bed.iptables_ok("-A INPUT -p udp --dport 10 -j REJECT")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let got = burst(bed.client(), to, 20);
    assert_eq!(
        got, 20,
        "port unreachables for 20 datagrams, no per-host limit"
    );
    // Type 3 out of the mask: no limit at all, the per-host one back on.
    server.sysctl("net.ipv4.icmp_ratelimit", "1000").unwrap();
    server.sysctl("net.ipv4.icmp_ratemask", "0").unwrap();
    bed.iptables_ok("-A INPUT -p udp --dport 12 -j REJECT")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let got = burst(bed.client(), to, 20);
    assert_eq!(
        got, 20,
        "port unreachables for 20 datagrams, type 3 not in icmp_ratemask"
    );
    // OUTPUT's errors go to this host by loopback, which the per-host
    // limit spares: only the namespace-wide budget (1000 a second, 50
    // deep) applies, and one datagram a millisecond never exhausts it.
    server.sysctl("net.ipv4.icmp_ratemask", "6168").unwrap();
    bed.iptables_ok("-A OUTPUT -p udp --dport 9 -j REJECT")
        .unwrap();
    let got = burst(server, SocketAddrV4::new(CLIENT_ADDR, 9), 200);
    assert_eq!(
        got, 200,
        "OUTPUT's port unreachables for 200 local datagrams in 0.2 s"
    );
}

/// The ICMPv6 destination-unreachable messages `ns` has received
/// (`Icmp6InDestUnreachs` of /proc/net/snmp6, per namespace).
fn unreachables6_received(ns: &Netns) -> u64 {
    let snmp6 = ns
        .in_netns(|| std::fs::read_to_string("/proc/thread-self/net/snmp6"))
        .unwrap()
        .unwrap();
    snmp6
        .lines()
        .find_map(|l| l.strip_prefix("Icmp6InDestUnreachs"))
        .map(|v| v.trim().parse().unwrap())
        .expect("Icmp6InDestUnreachs in snmp6")
}

/// Sends `n` datagrams from `from` in `ns` to `to`, one a millisecond.
fn send6(ns: &Netns, from: Ipv6Addr, to: SocketAddrV6, n: usize) {
    ns.in_netns(|| {
        let socket = UdpSocket::bind(SocketAddr::V6(SocketAddrV6::new(from, 0, 0, 0))).unwrap();
        for _ in 0..n {
            let _ = socket.send_to(b"x", SocketAddr::V6(to));
            std::thread::sleep(Duration::from_millis(1));
        }
    })
    .unwrap();
}

/// [`burst`] for IPv6, from `from`.
fn burst6(ns: &Netns, from: Ipv6Addr, to: SocketAddrV6, n: usize) -> u64 {
    let before = unreachables6_received(ns);
    send6(ns, from, to, n);
    std::thread::sleep(Duration::from_millis(300));
    unreachables6_received(ns) - before
}

/// Two bursts of 20 datagrams from `from`, 1.15 s apart: the errors each
/// got. The first empties the host's bucket (6 errors); in the 1.2 s
/// until the second it gains 1 token at 1000 ms a token (4 at 250 ms, all
/// 6 at 62 ms).
fn two_bursts6(ns: &Netns, from: Ipv6Addr, to: SocketAddrV6) -> (u64, u64) {
    let before = unreachables6_received(ns);
    send6(ns, from, to, 20);
    std::thread::sleep(Duration::from_millis(50));
    let between = unreachables6_received(ns);
    std::thread::sleep(Duration::from_millis(1100));
    send6(ns, from, to, 20);
    std::thread::sleep(Duration::from_millis(300));
    let after = unreachables6_received(ns);
    (between - before, after - between)
}

const SERVER6: &str = "fd00:61::2";
/// The client on the server's /64.
const NEIGHBOUR6: &str = "fd00:61::1";
/// A client address behind a /120 route.
const BEHIND_120: &str = "fd00:62::1";
/// A client address behind the default route.
const BEHIND_DEFAULT: &str = "fd00:63::1";

fn v6(a: &str) -> Ipv6Addr {
    a.parse().unwrap()
}

scenario!(ip6tables_reject_obeys_the_icmpv6_rate_limits);
fn ip6tables_reject_obeys_the_icmpv6_rate_limits(firewall: Firewall) {
    require_root();
    let netbeast = firewall.is_netbeast();
    let bed = Testbed::new("icmp6rl", firewall).unwrap_or_else(|e| panic!("setting up: {e}"));
    let (client, server) = (bed.client(), bed.server());
    add_addr(server, &format!("{SERVER6}/64"), SERVER_IFACE).unwrap();
    for a in [
        format!("{NEIGHBOUR6}/64"),
        format!("{BEHIND_120}/128"),
        format!("{BEHIND_DEFAULT}/128"),
    ] {
        add_addr(client, &a, CLIENT_IFACE).unwrap();
    }
    server
        .ip(&["-6", "route", "add", "fd00:62::/120", "via", NEIGHBOUR6])
        .unwrap();
    server
        .ip(&["-6", "route", "add", "default", "via", NEIGHBOUR6])
        .unwrap();
    // Both neighbours resolved first (that takes up to a second here; the
    // kernel's errors would wait for it).
    client
        .run_ok(
            "ping",
            &["-6", "-c3", "-i0.2", "-W2", "-I", NEIGHBOUR6, SERVER6],
        )
        .unwrap();
    assert_eq!(
        server.sysctl_get("net.ipv6.icmp.ratemask").unwrap(),
        "0-1,3-127",
        "the kernel's default: errors limited, packet too big not"
    );
    server.sysctl("net.ipv6.icmp.ratelimit", "1000").unwrap();
    // The namespace-wide budget (shared with IPv4) out of the way.
    server
        .sysctl("net.ipv4.icmp_msgs_per_sec", "100000")
        .unwrap();
    server.sysctl("net.ipv4.icmp_msgs_burst", "100000").unwrap();
    // The command reads the sysctls.
    bed.firewall
        .ip6tables_ok(server, "-A INPUT -p udp --dport 9 -j REJECT")
        .unwrap();
    let to = SocketAddrV6::new(v6(SERVER6), 9, 0, 0);

    // One token a second, whatever the route back to the host.
    for (from, route) in [
        (BEHIND_DEFAULT, "the default route"),
        (NEIGHBOUR6, "the /64"),
        (BEHIND_120, "a /120"),
    ] {
        assert_eq!(
            two_bursts6(client, v6(from), to),
            (6, 1),
            "errors to {from}, behind {route}: 20 datagrams, 1.2 s, 20 more"
        );
    }
    if netbeast {
        assert_eq!(
            rate_limited(&bed),
            3 * (14 + 19),
            "the errors held back are counted"
        );
    }

    // Without the per-host limit (read by the next command), every one is
    // answered, even behind the /120 whose bucket is empty.
    server.sysctl("net.ipv6.icmp.ratelimit", "0").unwrap();
    bed.firewall
        .ip6tables_ok(server, "-A INPUT -p udp --dport 10 -j REJECT")
        .unwrap();
    let got = burst6(client, v6(BEHIND_120), to, 20);
    assert_eq!(got, 20, "net.ipv6.icmp.ratelimit 0: no per-host limit");

    // Back on, with type 1 out of the ratemask: not limited at all.
    server.sysctl("net.ipv6.icmp.ratelimit", "1000").unwrap();
    server.sysctl("net.ipv6.icmp.ratemask", "0,2-127").unwrap();
    bed.firewall
        .ip6tables_ok(server, "-A INPUT -p udp --dport 11 -j REJECT")
        .unwrap();
    let got = burst6(client, v6(NEIGHBOUR6), to, 20);
    assert_eq!(got, 20, "type 1 out of net.ipv6.icmp.ratemask");
    // Back in, 4 s a token: the /120 host's bucket is empty, as errors
    // sent without a per-host limit leave it (the kernel's
    // inet_peer_xrlim_allow with a period of 0), and gains no token in
    // the second since.
    server.sysctl("net.ipv6.icmp.ratelimit", "4000").unwrap();
    server
        .sysctl("net.ipv6.icmp.ratemask", "0-1,3-127")
        .unwrap();
    bed.firewall
        .ip6tables_ok(server, "-A INPUT -p udp --dport 12 -j REJECT")
        .unwrap();
    let got = burst6(client, v6(BEHIND_120), to, 20);
    assert_eq!(got, 0, "type 1 back in net.ipv6.icmp.ratemask");

    // OUTPUT's errors go to this host, by loopback, which the per-host
    // limit spares (and nf_send_unreach6 gives the host's own packet the
    // loopback device, which icmp6_send spares the budget): all answered.
    bed.firewall
        .ip6tables_ok(server, "-A OUTPUT -p udp --dport 9 -j REJECT")
        .unwrap();
    let got = burst6(
        server,
        v6(SERVER6),
        SocketAddrV6::new(v6(NEIGHBOUR6), 9, 0, 0),
        100,
    );
    assert_eq!(got, 100, "OUTPUT's errors for 100 local datagrams in 0.1 s");
}

scenario!(icmp_and_icmpv6_errors_share_the_budget);
fn icmp_and_icmpv6_errors_share_the_budget(firewall: Firewall) {
    require_root();
    let bed = Testbed::new("icmp6bg", firewall).unwrap_or_else(|e| panic!("setting up: {e}"));
    let (client, server) = (bed.client(), bed.server());
    add_addr(server, &format!("{SERVER6}/64"), SERVER_IFACE).unwrap();
    add_addr(client, &format!("{NEIGHBOUR6}/64"), CLIENT_IFACE).unwrap();
    client
        .run_ok("ping", &["-6", "-c3", "-i0.2", "-W2", SERVER6])
        .unwrap();
    // No per-host limits; a budget of 10 errors, 10 more a second, from
    // the start (a budget's credit is only cut to its burst when spent).
    server.sysctl("net.ipv4.icmp_ratelimit", "0").unwrap();
    server.sysctl("net.ipv6.icmp.ratelimit", "0").unwrap();
    server.sysctl("net.ipv4.icmp_msgs_per_sec", "10").unwrap();
    server.sysctl("net.ipv4.icmp_msgs_burst", "10").unwrap();
    bed.iptables_ok("-A INPUT -p udp --dport 9 -j REJECT")
        .unwrap();
    bed.firewall
        .ip6tables_ok(server, "-A INPUT -p udp --dport 9 -j REJECT")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    // 100 IPv4 datagrams, then at once 100 IPv6 ones: the IPv6 errors
    // find the budget the IPv4 ones spent (with a budget of their own
    // they would get about 10 too).
    let (before4, before6) = (
        unreachables_received(client),
        unreachables6_received(client),
    );
    client
        .in_netns(|| {
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            for _ in 0..100 {
                let _ = socket.send_to(b"x", SocketAddrV4::new(SERVER_ADDR, 9));
                std::thread::sleep(Duration::from_millis(1));
            }
        })
        .unwrap();
    send6(
        client,
        v6(NEIGHBOUR6),
        SocketAddrV6::new(v6(SERVER6), 9, 0, 0),
        100,
    );
    std::thread::sleep(Duration::from_millis(300));
    let got4 = unreachables_received(client) - before4;
    let got6 = unreachables6_received(client) - before6;
    eprintln!("budget 10: {got4} ICMP and then {got6} ICMPv6 errors");
    assert!(
        (4..=20).contains(&got4),
        "a budget of 10: {got4} ICMP errors for 100 datagrams"
    );
    assert!(
        got6 <= 5,
        "the budget the ICMP errors spent: {got6} ICMPv6 errors for 100 datagrams"
    );
}
