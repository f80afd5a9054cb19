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
//! Needs root. Run: `cargo test -p netbeast --test icmp_limit`.

use std::{
    net::{SocketAddr, SocketAddrV4, UdpSocket},
    time::Duration,
};

use netbeast::netns::{
    CLIENT_ADDR, ConnectOutcome, Firewall, Netns, SERVER_ADDR, Testbed, require_root,
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
