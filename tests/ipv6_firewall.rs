//! Network test of the IPv6 filter chains (issue 16, tier 3): a client
//! and a server namespace joined by a veth pair, IPv6 addresses from
//! fd00::/8 with neighbour discovery live, real TCP sockets. The same
//! ip6tables ruleset runs with netbeast attached to the server's veth and,
//! in a twin testbed, with the kernel's own ip6tables (the oracle); every
//! connection must end the same way on both.
//!
//! Needs root. Run: `cargo test -p netbeast --test ipv6_firewall`.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use netbeast::netns::{Netns, require_root};

#[path = "support/pair6.rs"]
mod pair6;
use pair6::pair6;

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
/// A dropped SYN costs one timeout; an answered one takes microseconds.
const TIMEOUT: Duration = Duration::from_secs(1);
const CLIENT6: &str = "fd00:16::1";
const SERVER6: &str = "fd00:16::2";
const PORTS: [u16; 5] = [22, 80, 81, 82, 443];

include!("support/ipv6_bed.rs");

/// The ruleset steps and what each port does after each, for both.
const STEPS: &[&[&str]] = &[
    &[],
    &[
        "-P INPUT DROP",
        // NDP and the rest of ICMPv6: without it the neighbours never
        // resolve under a DROP policy, as with ip6tables.
        "-A INPUT -p ipv6-icmp -j ACCEPT",
        "-A INPUT -p tcp --dport 22 -j ACCEPT",
        "-A INPUT -s fd00:16::1 -p tcp --dport 80 -j ACCEPT",
        "-A INPUT -s fd00:99::/64 -p tcp --dport 81 -j ACCEPT",
        "-A INPUT ! -s fd00:16::/64 -p tcp --dport 82 -j ACCEPT",
        "-A INPUT -p tcp --dport 443 -j ACCEPT",
    ],
    &["-I INPUT 3 -s fd00:16::/48 -p tcp -m multiport --dports 81,82 -j ACCEPT"],
    &["-I INPUT 1 -s fd00:16::1/128 -p tcp --dport 22 -j DROP"],
    &[
        "-P INPUT ACCEPT",
        "-F INPUT",
        "-A INPUT -p tcp --dport 80 -j DROP",
    ],
];

#[test]
fn ipv6_input_like_ip6tables() {
    require_root();
    let beds = [Bed::new("v6fw-nb", true), Bed::new("v6fw-ipt", false)];
    let mut failures = Vec::new();
    for (i, step) in STEPS.iter().enumerate() {
        for bed in &beds {
            for line in *step {
                bed.ip6tables(line);
            }
        }
        let [nb, ipt] = [&beds[0], &beds[1]].map(Bed::connect_all);
        if nb != ipt {
            failures.push(format!(
                "after step {i} {step:?}: ports {PORTS:?}\n  netbeast  {nb:?}\n  ip6tables {ipt:?}"
            ));
        }
        // The steps are chosen so that each shows something happening.
        if i == 1 {
            assert_eq!(
                ipt,
                [
                    Outcome::Connected,
                    Outcome::Connected,
                    Outcome::TimedOut,
                    Outcome::TimedOut,
                    Outcome::Refused
                ],
                "the oracle itself"
            );
        }
    }
    // netbeast counted what it judged.
    let stats = beds[0].server.netbeast_ok(&["stats"]).unwrap();
    let ipv6 = stats
        .lines()
        .find_map(|l| l.strip_prefix("ipv6 "))
        .map(|v| v.trim().parse::<u64>().unwrap())
        .unwrap();
    assert!(ipv6 > 0, "no IPv6 packet judged:\n{stats}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
