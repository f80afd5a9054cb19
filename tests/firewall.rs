//! Network tests of the filter table (DESIGN §7, tier 3): a client and a
//! server namespace joined by a veth pair, netbeast attached to the server's
//! veth, real TCP/UDP sockets checking what gets through.
//!
//! Every scenario also runs against the kernel's own iptables in the server
//! namespace (`iptables_oracle`): the expectations are what iptables does,
//! and netbeast (`netbeast`, `netbeast_skb`) must do the same.
//!
//! Needs root. Run: `cargo test -p netbeast --test firewall`.

use std::time::Duration;

use netbeast::netns::{
    ConnectOutcome::{self, Connected, Refused, Reset, TimedOut, Unreachable},
    Firewall, IcmpError, Testbed, UdpOutcome, comparable_save, require_root, tcp_server,
    udp_echo_server, udp_exchange, udp_send, wait_for,
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
        panic!("{e}");
    }
}

fn save(bed: &Testbed) -> String {
    bed.save().unwrap_or_else(|e| panic!("{e}"))
}

/// Connects to every port at once and checks each outcome, naming the port
/// and the ruleset when one differs.
fn expect(bed: &Testbed, when: &str, expected: &[(u16, ConnectOutcome)]) {
    let ports: Vec<u16> = expected.iter().map(|(port, _)| *port).collect();
    let outcomes = bed.connect(&ports, TIMEOUT).unwrap();
    assert_outcomes(when, "port ", expected, &outcomes, || {
        bed.save().unwrap_or_default()
    });
}

/// The `-A INPUT` lines of a save, in order.
fn input_rules(save: &str) -> Vec<String> {
    save.lines()
        .filter(|l| l.starts_with("-A INPUT"))
        .map(str::to_owned)
        .collect()
}

// The article's firewall examples 1-4: 22 is accepted, everything else
// dropped, 8080 stays closed because it was appended after the DROP, 5432 is
// open because it was inserted before it.
scenario!(article_examples);
fn article_examples(firewall: Firewall) {
    let bed = testbed("fw-article", firewall);
    let servers: Vec<_> = [22, 5432, 8080, 9000]
        .into_iter()
        .map(|port| tcp_server(bed.server(), port).unwrap())
        .collect();
    expect(
        &bed,
        "before any rule",
        &[
            (22, Connected),
            (5432, Connected),
            (8080, Connected),
            (9000, Connected),
        ],
    );

    rule(&bed, "-A INPUT -p tcp --dport 22 -j ACCEPT");
    rule(&bed, "-A INPUT -j DROP");
    rule(&bed, "-A INPUT -p tcp --dport 8080 -j ACCEPT");
    rule(&bed, "-I INPUT -p tcp --dport 5432 -j ACCEPT");

    let rules = input_rules(&save(&bed));
    let order = ["--dport 5432", "--dport 22", "-j DROP", "--dport 8080"];
    assert_eq!(rules.len(), 4, "{rules:#?}");
    for (line, part) in rules.iter().zip(order) {
        assert!(
            line.contains(part),
            "expected {part:?} in {line:?}: {rules:#?}"
        );
    }

    expect(
        &bed,
        "after the article's rules 1-4",
        &[
            (22, Connected),
            (5432, Connected),
            (8080, TimedOut),
            (9000, TimedOut),
        ],
    );
    // One connection each before the rules, one more for 22 and 5432 after.
    let expected = [2, 2, 1, 1];
    let served: Vec<u64> = servers
        .iter()
        .zip(expected)
        .map(|(server, n)| server.served_within(n, TIMEOUT))
        .collect();
    assert_eq!(
        served, expected,
        "connections accepted on 22, 5432, 8080, 9000"
    );
}

// The article's literal lines 3-5 are wrong; they must fail with a useful
// message and change nothing, in the ruleset or on the wire.
scenario!(article_broken_lines);
fn article_broken_lines(firewall: Firewall) {
    let is_netbeast = matches!(firewall, Firewall::Netbeast { .. });
    let bed = testbed("fw-broken", firewall);
    let _servers: Vec<_> = [22, 5432, 8080]
        .into_iter()
        .map(|port| tcp_server(bed.server(), port).unwrap())
        .collect();
    rule(&bed, "-A INPUT -p tcp --dport 22 -j ACCEPT");
    rule(&bed, "-A INPUT -j DROP");
    let before = comparable_save(&save(&bed));

    for line in [
        "-A INPUT -p tcp 8080 -j ACCEPT",
        "-I INPUT -p tcp 5432 -j ACCEPT",
        "-I OUTPUT -i eth1 -j ACCEPT",
    ] {
        let out = bed.iptables(line).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "`iptables {line}` succeeded");
        assert!(
            !stderr.trim().is_empty(),
            "`iptables {line}` failed silently"
        );
        if is_netbeast {
            if line.contains("-i eth1") {
                assert!(
                    stderr.contains("-i") && stderr.contains("OUTPUT"),
                    "`iptables {line}` should say -i is not valid in OUTPUT: {stderr}"
                );
            } else {
                let port = line.split_whitespace().nth(4).unwrap();
                assert!(
                    stderr.contains(&format!("unexpected argument '{port}'")),
                    "`iptables {line}` should name the stray argument: {stderr}"
                );
                assert!(
                    stderr.contains(&format!("--dport {port}")),
                    "`iptables {line}` should suggest --dport {port}: {stderr}"
                );
            }
        }
        assert_eq!(
            comparable_save(&save(&bed)),
            before,
            "`iptables {line}` changed the ruleset"
        );
    }
    // A parser that dropped the stray port would have let all TCP in.
    expect(
        &bed,
        "after the broken lines",
        &[(22, Connected), (5432, TimedOut), (8080, TimedOut)],
    );
}

// REJECT answers at once, the way the client's kernel understands: ICMP
// port-unreachable by default (connection refused), a TCP reset, or the ICMP
// error asked for. Every port has a listener, so an answer can only come from
// the firewall.
scenario!(reject_variants);
fn reject_variants(firewall: Firewall) {
    let bed = testbed("fw-reject", firewall);
    let _servers: Vec<_> = (22..=27)
        .map(|port| tcp_server(bed.server(), port).unwrap())
        .collect();
    let _udp = [53, 54].map(|port| udp_echo_server(bed.server(), port).unwrap());
    rule(&bed, "-A INPUT -p tcp --dport 23 -j REJECT");
    rule(
        &bed,
        "-A INPUT -p tcp --dport 24 -j REJECT --reject-with tcp-reset",
    );
    rule(
        &bed,
        "-A INPUT -p tcp --dport 25 -j REJECT --reject-with icmp-host-unreachable",
    );
    rule(
        &bed,
        "-A INPUT -p tcp --dport 26 -j REJECT --reject-with icmp-net-unreachable",
    );
    rule(
        &bed,
        "-A INPUT -p tcp --dport 27 -j REJECT --reject-with icmp-admin-prohibited",
    );
    rule(&bed, "-A INPUT -p udp --dport 53 -j REJECT");

    expect(
        &bed,
        "with REJECT rules",
        &[
            (22, Connected),
            (23, Refused(IcmpError::PORT_UNREACHABLE)),
            (24, Reset),
            (
                25,
                Unreachable {
                    errno: libc::EHOSTUNREACH,
                    icmp: Some(IcmpError::HOST_UNREACHABLE),
                },
            ),
            (
                26,
                Unreachable {
                    errno: libc::ENETUNREACH,
                    icmp: Some(IcmpError::NET_UNREACHABLE),
                },
            ),
            (
                27,
                Unreachable {
                    errno: libc::EHOSTUNREACH,
                    icmp: Some(IcmpError::ADMIN_PROHIBITED),
                },
            ),
        ],
    );

    let client = bed.client();
    let udp = udp_exchange(client, bed.net.server_addr(53), b"query", TIMEOUT).unwrap();
    assert_eq!(
        udp,
        UdpOutcome::Refused(Some(IcmpError::PORT_UNREACHABLE)),
        "udp to a REJECTed port"
    );
    let udp = udp_exchange(client, bed.net.server_addr(54), b"query", TIMEOUT).unwrap();
    assert_eq!(
        udp,
        UdpOutcome::Reply(b"query".to_vec()),
        "udp to an open port"
    );
}

// Per-rule counters count exactly the packets that matched, and bytes as
// iptables does: the IPv4 total length. -Z zeroes them.
scenario!(counters_match_traffic);
fn counters_match_traffic(firewall: Firewall) {
    const DROPPED: u64 = 25;
    const DROPPED_PAYLOAD: usize = 100;
    const ECHOED: u64 = 7;
    const ECHOED_PAYLOAD: usize = 33;
    const IP_UDP_HEADERS: u64 = 20 + 8;

    let bed = testbed("fw-count", firewall);
    let _echo = udp_echo_server(bed.server(), 7001).unwrap();
    rule(&bed, "-A INPUT -p udp --dport 7000 -j DROP");
    rule(&bed, "-A INPUT -p udp --dport 7001 -j ACCEPT");
    rule(&bed, "-A INPUT -p udp --dport 7002 -j ACCEPT");

    for _ in 0..ECHOED {
        let reply = udp_exchange(
            bed.client(),
            bed.net.server_addr(7001),
            &[b'e'; ECHOED_PAYLOAD],
            TIMEOUT,
        )
        .unwrap();
        assert!(matches!(reply, UdpOutcome::Reply(_)), "echo: {reply}");
    }
    let sent = udp_send(
        bed.client(),
        bed.net.server_addr(7000),
        &[b'd'; DROPPED_PAYLOAD],
        DROPPED as usize,
    )
    .unwrap();
    assert_eq!(sent as u64, DROPPED);

    let expected = vec![
        (DROPPED, DROPPED * (IP_UDP_HEADERS + DROPPED_PAYLOAD as u64)),
        (ECHOED, ECHOED * (IP_UDP_HEADERS + ECHOED_PAYLOAD as u64)),
        (0, 0),
    ];
    let counters = |bed: &Testbed| -> Vec<(u64, u64)> {
        let chain = bed.list("INPUT").unwrap_or_else(|e| panic!("{e}"));
        chain.rules.iter().map(|r| (r.packets, r.bytes)).collect()
    };
    // Dropped datagrams are counted when they arrive, a moment after send().
    let seen = wait_for(Duration::from_secs(3), || {
        let now = counters(&bed);
        (now == expected).then_some(now)
    });
    assert_eq!(
        seen.unwrap_or_else(|| counters(&bed)),
        expected,
        "(packets, bytes) per INPUT rule after {DROPPED} dropped and {ECHOED} echoed datagrams"
    );

    rule(&bed, "-Z INPUT");
    assert_eq!(counters(&bed), vec![(0, 0); 3], "after -Z INPUT");
    udp_send(bed.client(), bed.net.server_addr(7000), b"x", 1).unwrap();
    let seen = wait_for(Duration::from_secs(3), || {
        (counters(&bed)[0] == (1, 29)).then_some(())
    });
    assert!(seen.is_some(), "counting after -Z: {:?}", counters(&bed));
}

// -D (by spec and by number), -R, -P, -F change what live traffic meets,
// each at once.
scenario!(rule_changes_apply_to_live_traffic);
fn rule_changes_apply_to_live_traffic(firewall: Firewall) {
    let bed = testbed("fw-live", firewall);
    let _servers: Vec<_> = [22, 80, 443]
        .into_iter()
        .map(|port| tcp_server(bed.server(), port).unwrap())
        .collect();
    rule(&bed, "-A INPUT -p tcp --dport 22 -j ACCEPT");
    rule(&bed, "-A INPUT -p tcp --dport 80 -j DROP");
    rule(&bed, "-A INPUT -p tcp --dport 443 -j DROP");
    expect(
        &bed,
        "22 accepted, 80 and 443 dropped",
        &[(22, Connected), (80, TimedOut), (443, TimedOut)],
    );

    rule(&bed, "-D INPUT -p tcp --dport 80 -j DROP");
    expect(
        &bed,
        "after -D by spec of the 80 rule",
        &[(22, Connected), (80, Connected), (443, TimedOut)],
    );

    rule(&bed, "-R INPUT 2 -p tcp --dport 443 -j REJECT");
    expect(
        &bed,
        "after -R of rule 2 with a REJECT",
        &[(80, Connected), (443, Refused(IcmpError::PORT_UNREACHABLE))],
    );

    rule(&bed, "-D INPUT 2");
    expect(
        &bed,
        "after -D of rule 2 by number",
        &[(22, Connected), (80, Connected), (443, Connected)],
    );

    rule(&bed, "-P INPUT DROP");
    expect(
        &bed,
        "after -P INPUT DROP",
        &[(22, Connected), (80, TimedOut), (443, TimedOut)],
    );

    rule(&bed, "-F INPUT");
    expect(
        &bed,
        "after -F INPUT with policy DROP",
        &[(22, TimedOut), (80, TimedOut)],
    );

    rule(&bed, "-P INPUT ACCEPT");
    expect(
        &bed,
        "after -P INPUT ACCEPT",
        &[(22, Connected), (80, Connected), (443, Connected)],
    );
}
