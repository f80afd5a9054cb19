//! Network test of the IPv6 mangle table (`ip6tables -t mangle`, issue
//! 18): its chains run in the IPv6 programs where the kernel's mangle
//! hooks are (PREROUTING, INPUT at XDP ingress after conntrack and before
//! filter's INPUT; OUTPUT and POSTROUTING for the host's packets at TC
//! egress), with `-j MARK`, `-j CONNMARK` and `-m mark`/`-m connmark` on
//! IPv6 packets and connections. The same ip6tables lines run with
//! netbeast attached to the server's veth and, in a twin testbed, with the
//! kernel's ip6tables (the oracle): every connection must end the same way
//! on both, and the SYN counter of a mangle rule count alike.
//!
//! Needs root. Run: `cargo test -p netbeast --test mangle6`.

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
const CLIENT6: &str = "fd00:18::1";
const SERVER6: &str = "fd00:18::2";
const PORTS: [u16; 5] = [22, 80, 81, 82, 443];

include!("support/ipv6_bed.rs");

use Outcome::{Connected, Refused, TimedOut};

/// The ruleset steps and what ports `PORTS` do after each (ip6tables'
/// outcome, which netbeast's must equal).
const STEPS: &[(&[&str], [Outcome; 5])] = &[
    (
        &[
            // 80: a mark from mangle PREROUTING, read by filter INPUT.
            "-t mangle -A PREROUTING -p tcp --dport 80 -j MARK --set-mark 0x5",
            "-t mangle -A PREROUTING -p tcp --syn -m multiport --dports 22,80",
            // 82: a connection mark set in mangle PREROUTING, read by
            // filter INPUT's -m connmark.
            "-t mangle -A PREROUTING -p tcp --dport 82 -j CONNMARK --set-mark 0x3",
            // 81: mangle INPUT's DROP.
            "-t mangle -A INPUT -p tcp --dport 81 -j DROP",
            // 22: the host's replies leave only with mangle OUTPUT's mark.
            "-t mangle -A OUTPUT -p tcp --sport 22 -j MARK --set-mark 0x7",
            // 443: its reset dropped in mangle POSTROUTING.
            "-t mangle -A POSTROUTING -p tcp --sport 443 -j DROP",
            "-A INPUT -p tcp --dport 80 -m mark --mark 0x5 -j REJECT --reject-with tcp-reset",
            "-A INPUT -p tcp --dport 82 -m connmark --mark 0x3 -j REJECT --reject-with tcp-reset",
            "-A OUTPUT -p tcp --sport 22 -m mark ! --mark 0x7 -j DROP",
        ],
        [Connected, Refused, TimedOut, Refused, TimedOut],
    ),
    (
        &["-t mangle -F"],
        [TimedOut, Connected, Connected, Connected, Refused],
    ),
    (
        // CONNMARK --save-mark / --restore-mark through the connection:
        // the SYN's mark saved, restored on the reply's way out (a
        // connection of IPv6's tracker, both ways).
        &[
            "-t mangle -A PREROUTING -p tcp --dport 22 -j MARK --set-mark 0x7",
            "-t mangle -A PREROUTING -j CONNMARK --save-mark",
            "-t mangle -A OUTPUT -j CONNMARK --restore-mark",
            // The DROP policy of a mangle chain (NDP let through).
            "-t mangle -A INPUT -p ipv6-icmp -j ACCEPT",
            "-t mangle -A INPUT -p tcp -m multiport --dports 22,80,82,443 -j ACCEPT",
            "-t mangle -P INPUT DROP",
        ],
        [Connected, Connected, TimedOut, Connected, Refused],
    ),
];

#[test]
fn ipv6_mangle_like_ip6tables() {
    require_root();
    let beds = [Bed::new("mgl6-nb", true), Bed::new("mgl6-ipt", false)];
    let mut failures = Vec::new();
    for (i, (step, expected)) in STEPS.iter().enumerate() {
        for bed in &beds {
            for line in *step {
                bed.ip6tables(line);
            }
        }
        let [nb, ipt] = [&beds[0], &beds[1]].map(Bed::connect_all);
        // The steps are chosen so that each shows something happening.
        assert_eq!(ipt, *expected, "the oracle itself, after step {i}");
        if nb != ipt {
            failures.push(format!(
                "after step {i} {step:?}: ports {PORTS:?}\n  netbeast  {nb:?}\n  ip6tables {ipt:?}"
            ));
        }
        if i == 0 {
            // The SYN counter of mangle PREROUTING's second rule.
            let counts = beds.each_ref().map(|bed| syn_count(bed, "PREROUTING", 2));
            if counts[0] != counts[1] {
                failures.push(format!(
                    "mangle PREROUTING's SYN counter: netbeast {}, ip6tables {}",
                    counts[0], counts[1]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A chain's first matching slot sees its own chain's family, whatever
/// the last search on the CPU was: `-j CONNMARK` and `-m connmark` find
/// the connection in the tracker of the packet's family. (Until this test,
/// a first slot read the family of the previous search on the CPU, so an
/// IPv6 SYN right after an IPv4 packet lost its connection mark: the
/// REJECT below let it through, and likewise the other way round.) The
/// client is pinned to one CPU, where the veth runs the server's XDP
/// program for its packets, and alternates the families.
#[test]
fn connmark_in_a_first_slot_follows_the_packets_family() {
    require_root();
    let beds = [Bed::new("cmf6-nb", true), Bed::new("cmf6-ipt", false)];
    for bed in &beds {
        for tool in ["iptables", "ip6tables"] {
            for line in [
                // A UDP probe's search runs past its first slot (a rule
                // without a target): the search after it starts on a CPU
                // whose last chain is of this family.
                "-A INPUT -p udp --dport 9",
                "-t mangle -A PREROUTING -p tcp --dport 82 -j CONNMARK --set-mark 0x3",
                "-A INPUT -p tcp --dport 82 -m connmark --mark 0x3 -j REJECT --reject-with tcp-reset",
            ] {
                let args: Vec<&str> = line.split_whitespace().collect();
                if bed.netbeast {
                    let args: Vec<&str> = [tool].into_iter().chain(args).collect();
                    bed.server.netbeast_ok(&args).unwrap();
                } else {
                    bed.server.run_ok(tool, &args).unwrap();
                }
            }
        }
    }
    let server6: std::net::IpAddr = SERVER6.parse().unwrap();
    let server4: std::net::IpAddr = "10.216.0.2".parse().unwrap();
    let outcomes = beds.each_ref().map(|bed| {
        bed.client
            .in_netns(|| {
                pin_to_cpu(0);
                let mut seen = Vec::new();
                for _ in 0..4 {
                    for (probe, target) in [(server4, server6), (server6, server4)] {
                        let bind = if probe.is_ipv4() {
                            "0.0.0.0:0"
                        } else {
                            "[::]:0"
                        };
                        let udp = std::net::UdpSocket::bind(bind).unwrap();
                        udp.send_to(b"probe", SocketAddr::from((probe, 9))).unwrap();
                        seen.push(connect(SocketAddr::from((target, 82))));
                    }
                }
                seen
            })
            .unwrap()
    });
    assert_eq!(outcomes[1], [Refused; 8], "the oracle: every SYN rejected");
    assert_eq!(
        outcomes[0], outcomes[1],
        "netbeast (IPv6 and IPv4 SYNs alternating) against iptables"
    );
}

/// Pins the calling thread to `cpu`.
fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write within it
    // and sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0,
            "sched_setaffinity"
        );
    }
}

/// The packet count of rule `n` of mangle `chain`, as `ip6tables -t mangle
/// -L CHAIN -v -x -n` prints it.
fn syn_count(bed: &Bed, chain: &str, n: usize) -> u64 {
    let args = ["-t", "mangle", "-L", chain, "-v", "-x", "-n"];
    let listing = if bed.netbeast {
        let args: Vec<&str> = ["ip6tables"].into_iter().chain(args).collect();
        bed.server.netbeast_ok(&args).unwrap()
    } else {
        bed.server.run_ok("ip6tables", &args).unwrap()
    };
    listing
        .lines()
        .nth(1 + n)
        .and_then(|l| l.split_whitespace().next())
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no rule {n} in:\n{listing}"))
}
