//! `netbeast trace` (issue 15): a ruleset with user-defined chains, a
//! RETURN and LOG rules on a server namespace; packets sent for real from
//! a client namespace (live) and packets described on the command line
//! (`--packet`, run through the real program with BPF_PROG_TEST_RUN) must
//! list exactly the rules the reference classifier acts on for them, in
//! order, and the right fate. Tracing must be off again afterwards.
//!
//! Needs root; every test makes its own `nbt-` namespaces.

use std::{
    net::SocketAddrV4,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

#[path = "support/mod.rs"]
mod support;

use netbeast::{
    compile::{
        Interface,
        reference::{HeaderFields, L4Header, PacketView, classify_table},
    },
    netns::{
        CLIENT_ADDR, ClientServer, SERVER_ADDR, SERVER_IFACE, require_root, tcp_connect, udp_send,
    },
    rules::{command, model::Ruleset, parse},
};
use netbeast_common::ct_state;
use serde_json::Value;

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");

/// Jumps into two user-defined chains, a RETURN out of a chain entered
/// from another user chain, a RETURN to INPUT, LOG rules on the way, and
/// verdicts in INPUT and in a user chain.
const RULES: &[&str] = &[
    "-N WEB",
    "-N CHECK",
    "-A INPUT -p tcp -j WEB",
    "-A INPUT -p udp --dport 53 -j CHECK",
    "-A INPUT -p tcp --dport 22 -j ACCEPT",
    "-A INPUT -p tcp --dport 81 -j REJECT --reject-with tcp-reset",
    "-A WEB -p tcp --dport 80 -j LOG --log-prefix web:",
    "-A WEB -s 10.199.0.0/24 -p tcp --dport 80 -j CHECK",
    "-A WEB -p tcp --dport 81 -j RETURN",
    "-A WEB -p tcp --dport 80 -j ACCEPT",
    "-A CHECK -p tcp -j RETURN",
    "-A CHECK -j LOG --log-prefix check:",
    "-A CHECK -j ACCEPT",
];

fn ruleset() -> Ruleset {
    let mut rules = Ruleset::default();
    for line in RULES {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        let cmd = parse::parse_iptables_args(&args).unwrap();
        command::apply(&mut rules, &cmd).unwrap();
    }
    rules
}

fn ifindex(net: &ClientServer) -> u32 {
    net.server
        .ip(&["-o", "link", "show", "dev", SERVER_IFACE])
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The (chain, 1-based rule) list the reference classifier acts on for a
/// packet from the client to the server's `dport`.
fn reference(net: &ClientServer, protocol: u8, sport: u16, dport: u16) -> Vec<(String, u64)> {
    reference_in(net, &ruleset().filter, None, protocol, sport, dport)
}

/// [`reference`] in `table`'s INPUT, for an IPv6 packet with `addr6`.
fn reference_in(
    net: &ClientServer,
    table: &netbeast::rules::model::Table,
    addr6: Option<(std::net::Ipv6Addr, std::net::Ipv6Addr)>,
    protocol: u8,
    sport: u16,
    dport: u16,
) -> Vec<(String, u64)> {
    let in_ifindex = ifindex(net);
    let pkt = PacketView {
        src: CLIENT_ADDR,
        dst: SERVER_ADDR,
        addr6,
        protocol,
        fragment_offset_nonzero: false,
        l4: Some(L4Header::Ports {
            source: sport,
            destination: dport,
        }),
        in_ifindex,
        out_ifindex: 0,
        mac_source: [0; 6],
        ct_state: ct_state::UNTRACKED,
        header: HeaderFields::default(),
    };
    let interfaces = [Interface {
        ifindex: in_ifindex,
        name: SERVER_IFACE.into(),
    }];
    classify_table(table, "INPUT", &interfaces, &pkt)
        .into_iter()
        .map(|r| (r.chain, r.rule as u64 + 1))
        .collect()
}

/// The (chain, rule) list of a trace's JSON object.
fn traced(v: &Value) -> Vec<(String, u64)> {
    v["rules"]
        .as_array()
        .unwrap_or_else(|| panic!("no rules in {v}"))
        .iter()
        .map(|r| {
            assert_eq!(r["table"], "filter", "{v}");
            (
                r["chain"].as_str().unwrap().to_string(),
                r["rule"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn setup(tag: &str) -> ClientServer {
    let net = support::netbeast_server(tag, NETBEAST);
    for line in RULES {
        net.server.netbeast_iptables_ok(line).unwrap();
    }
    net
}

/// The three packets of the test, and what the reference says of each:
/// (protocol, dport, fate's first word, rules it must meet).
const CASES: [(u8, u16, &str, usize); 3] = [
    // INPUT 1 → WEB 1 (LOG) → WEB 2 → CHECK 1 (RETURN) → WEB 4 ACCEPT.
    (6, 80, "accepted", 5),
    // INPUT 1 → WEB 3 (RETURN) → INPUT 4 REJECT.
    (6, 81, "rejected", 3),
    // INPUT 2 → CHECK 2 (LOG) → CHECK 3 ACCEPT.
    (17, 53, "accepted", 3),
];

/// Checks a live trace `v` (of packets matching `filter`): it lists the
/// `n` rules `reference` gives for the packet's source port (the client's
/// own choice, read from the trace), in order, and the fate starts with
/// `fate`.
fn assert_live(
    v: &Value,
    filter: &[&str],
    n: usize,
    fate: &str,
    reference: impl FnOnce(u16) -> Vec<(String, u64)>,
) {
    let packet = v["packet"].as_str().unwrap();
    let sport: u16 = packet
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no source port in {packet}"));
    let want = reference(sport);
    assert_eq!(
        want.len(),
        n,
        "the reference's rules for {packet}: {want:?}"
    );
    assert_eq!(traced(v), want, "{filter:?}: {v}");
    assert!(v["fate"].as_str().unwrap().starts_with(fate), "{v}");
    assert_eq!(v["in"], SERVER_IFACE, "{v}");
}

fn assert_trace_off(net: &ClientServer) {
    let word = net
        .server
        .in_netns(|| {
            let ns = netbeast::state::Namespace::current().unwrap();
            netbeast::loader::Dataplane::open_pinned(&ns.maps_dir())
                .unwrap()
                .active_word()
                .unwrap()
        })
        .unwrap();
    assert_eq!(
        word & netbeast_common::ACTIVE_TRACE,
        0,
        "tracing is off once netbeast trace ended"
    );
}

/// `netbeast trace --json --packet DESC`: the trace must list the `n`
/// rules the reference classifier acts on (`want`), in order, and end in
/// `fate`; returns it.
#[track_caller]
fn described(
    net: &ClientServer,
    desc: &str,
    want: &[(String, u64)],
    n: usize,
    fate: &str,
) -> Value {
    let out = net
        .server
        .netbeast_ok(&["trace", "--json", "--packet", desc])
        .unwrap_or_else(|e| panic!("netbeast trace --packet '{desc}': {e}"));
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(want.len(), n, "the reference's rules for {desc}: {want:?}");
    assert_eq!(traced(&v), want, "{desc}: {v}");
    assert!(v["fate"].as_str().unwrap().starts_with(fate), "{desc}: {v}");
    v
}

#[test]
fn described_packets_list_the_reference_rules() {
    require_root();
    let net = setup("trcd");
    for (protocol, dport, fate, n) in CASES {
        let name = if protocol == 6 { "tcp" } else { "udp" };
        let desc = format!("{name} {CLIENT_ADDR}:40000 > {SERVER_ADDR}:{dport} in {SERVER_IFACE}");
        let v = described(
            &net,
            &desc,
            &reference(&net, protocol, 40000, dport),
            n,
            fate,
        );
        let xdp = if fate == "accepted" {
            "XDP_PASS"
        } else {
            "XDP_PASS|XDP_TX"
        };
        assert!(xdp.contains(v["xdp"].as_str().unwrap()), "{desc}: {v}");
    }
    // Text output names the rules as -S prints them.
    let text = net
        .server
        .netbeast_ok(&[
            "trace",
            "--packet",
            &format!("tcp {CLIENT_ADDR}:40000 > {SERVER_ADDR}:80 syn in {SERVER_IFACE}"),
        ])
        .unwrap();
    assert!(
        text.contains("filter CHECK rule 1: -A CHECK -p tcp -j RETURN  => RETURN"),
        "{text}"
    );
    assert!(text.contains("=> accepted by WEB rule 4"), "{text}");
    // Nothing was left in conntrack, and tracing is off.
    assert_trace_off(&net);
    // Bad descriptions are refused with the reason.
    let out = net
        .server
        .netbeast(&["trace", "--packet", "tcp 1.2.3.4:1 > 5.6.7.8:2 syn"])
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("add 'in IFACE'"), "{err}");
    let out = net
        .server
        .netbeast(&["trace", "--packet", "tcp 1.2.3.4:1 > 5.6.7.8:2 in lo"])
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lo is not attached"), "{err}");
}

/// Runs `netbeast trace --json --count 1 FILTER` in the server's namespace
/// while the client sends `send` until the trace has its packet.
fn live_trace(net: &ClientServer, filter: &[&str], send: impl Fn()) -> Value {
    let child = Command::new(NETBEAST)
        .args([
            "--netns",
            net.server.name(),
            "trace",
            "--json",
            "--count",
            "1",
        ])
        .args(filter)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn netbeast trace");
    let pid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(30);
    // Until the trace has switched tracing on and seen one packet.
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    while !waiter.is_finished() {
        if Instant::now() > deadline {
            // SAFETY: signals the child this test spawned.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            break;
        }
        send();
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = waiter.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "netbeast trace {filter:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .next()
        .unwrap_or_else(|| panic!("netbeast trace {filter:?} showed no packet"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn live_packets_list_the_reference_rules() {
    require_root();
    let net = setup("trcl");
    let to = |port| SocketAddrV4::new(SERVER_ADDR, port);
    for (protocol, dport, fate, n) in CASES {
        let port = dport.to_string();
        let filter: Vec<&str> = if protocol == 6 {
            vec!["-p", "tcp", "--dport", &port, "-s", "10.199.0.1"]
        } else {
            vec!["-p", "udp", "--dport", &port, "-i", SERVER_IFACE]
        };
        let v = live_trace(&net, &filter, || {
            if protocol == 6 {
                let _ = tcp_connect(&net.client, to(dport), Duration::from_millis(200));
            } else {
                let _ = udp_send(&net.client, to(dport), b"trace", 1);
            }
        });
        assert_live(&v, &filter, n, fate, |sport| {
            reference(&net, protocol, sport, dport)
        });
    }
    assert_trace_off(&net);
    // A filter with a target, or a stateful match, is refused.
    let out = net
        .server
        .netbeast(&["trace", "-p", "tcp", "-j", "ACCEPT"])
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("matches only, not a target"),
        "{out:?}"
    );
}

// ---------------------------------------------------------------------------
// IPv6 (issue 16): the same ruleset written for ip6tables.

const CLIENT6: &str = "fd00:15::1";
const SERVER6: &str = "fd00:15::2";

/// `RULES` for ip6tables: the client's /64 instead of its /24.
fn rules6() -> Vec<String> {
    RULES
        .iter()
        .map(|l| l.replace("10.199.0.0/24", "fd00:15::/64"))
        .collect()
}

fn ruleset6() -> Ruleset {
    let mut rules = Ruleset::default();
    for line in rules6() {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        let cmd = parse::parse_ip6tables_args(&args).unwrap();
        command::apply(&mut rules, &cmd).unwrap();
    }
    rules
}

/// `reference` for an IPv6 packet from CLIENT6 to SERVER6.
fn reference6(net: &ClientServer, protocol: u8, sport: u16, dport: u16) -> Vec<(String, u64)> {
    let addr6 = Some((CLIENT6.parse().unwrap(), SERVER6.parse().unwrap()));
    reference_in(net, &ruleset6().filter6, addr6, protocol, sport, dport)
}

/// The client and server with IPv6 addresses and the ruleset for ip6tables
/// (no IPv4 rules: an IPv4 trace would show none).
fn setup6(tag: &str) -> ClientServer {
    let ClientServer { client, server } =
        ClientServer::new(tag).expect("client and server namespaces");
    let net = ClientServer {
        client,
        server: server.with_netbeast(NETBEAST),
    };
    for (ns, iface, addr) in [
        (&net.server, SERVER_IFACE, SERVER6),
        (&net.client, netbeast::netns::CLIENT_IFACE, CLIENT6),
    ] {
        ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{addr}/64"),
            "dev",
            iface,
            "nodad",
        ])
        .unwrap();
    }
    net.server
        .netbeast_ok(&["attach", SERVER_IFACE])
        .expect("attaching netbeast");
    for line in rules6() {
        let args: Vec<&str> = ["ip6tables"]
            .into_iter()
            .chain(line.split_whitespace())
            .collect();
        net.server.netbeast_ok(&args).unwrap();
    }
    net
}

/// `--packet` with IPv6 addresses (`tcp [fd00:15::1]:40000 >
/// [fd00:15::2]:80 in nbt-s`): the rules of the IPv6 ruleset the reference
/// acts on, in order, and the fate; an ICMPv6 description too.
#[test]
fn described_ipv6_packets_list_the_reference_rules() {
    require_root();
    let net = setup6("trc6d");
    for (protocol, dport, fate, n) in CASES {
        let name = if protocol == 6 { "tcp" } else { "udp" };
        let desc = format!("{name} [{CLIENT6}]:40000 > [{SERVER6}]:{dport} in {SERVER_IFACE}");
        let v = described(
            &net,
            &desc,
            &reference6(&net, protocol, 40000, dport),
            n,
            fate,
        );
        let packet = v["packet"].as_str().unwrap();
        assert!(
            packet.starts_with(&format!("{name} [{CLIENT6}]:40000 > [{SERVER6}]:{dport}")),
            "{desc}: {v}"
        );
    }
    let text = net
        .server
        .netbeast_ok(&[
            "trace",
            "--packet",
            &format!("tcp [{CLIENT6}]:40000 > [{SERVER6}]:80 syn in {SERVER_IFACE}"),
        ])
        .unwrap();
    assert!(
        text.contains(
            "filter WEB rule 2: -A WEB -s fd00:15::/64 -p tcp -m tcp --dport 80 -j CHECK"
        ),
        "{text}"
    );
    assert!(text.contains("=> accepted by WEB rule 4"), "{text}");
    // ICMPv6 meets no rule of INPUT: the policy.
    let text = net
        .server
        .netbeast_ok(&[
            "trace",
            "--packet",
            &format!("icmp6 {CLIENT6} > {SERVER6} echo-request in {SERVER_IFACE}"),
        ])
        .unwrap();
    assert!(
        text.contains(&format!(
            "packet icmp6 {CLIENT6} > {SERVER6} type 128 code 0"
        )),
        "{text}"
    );
    assert!(text.contains("filter INPUT policy  => ACCEPT"), "{text}");
    assert_trace_off(&net);
}

/// Live IPv6 packets from the client: the same rules as the reference.
#[test]
fn live_ipv6_packets_list_the_reference_rules() {
    require_root();
    let net = setup6("trc6l");
    let to =
        |port| std::net::SocketAddr::from((SERVER6.parse::<std::net::Ipv6Addr>().unwrap(), port));
    for (protocol, dport, fate, n) in CASES {
        let port = dport.to_string();
        let proto = if protocol == 6 { "tcp" } else { "udp" };
        let filter = vec!["-p", proto, "--dport", &port];
        let v = live_trace(&net, &filter, || {
            let addr = to(dport);
            if protocol == 6 {
                let _ = net.client.in_netns(move || {
                    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                });
            } else {
                let _ = net.client.in_netns(move || {
                    let s = std::net::UdpSocket::bind("[::]:0").unwrap();
                    s.send_to(b"trace", addr)
                });
            }
        });
        assert_live(&v, &filter, n, fate, |sport| {
            reference6(&net, protocol, sport, dport)
        });
    }
    assert_trace_off(&net);
}

/// The mangle table's chains are reported as the filter table's are, for
/// both families: a described packet lists the mangle PREROUTING rule it
/// met (a MARK), then filter INPUT's. (IPv6's mangle chains were not
/// reported until this test.)
#[test]
fn mangle_chains_are_traced_for_both_families() {
    require_root();
    let net = setup6("trcmg");
    for (tool, desc) in [
        (
            "iptables",
            format!("tcp {CLIENT_ADDR}:40000 > {SERVER_ADDR}:80 syn in {SERVER_IFACE}"),
        ),
        (
            "ip6tables",
            format!("tcp [{CLIENT6}]:40000 > [{SERVER6}]:80 syn in {SERVER_IFACE}"),
        ),
    ] {
        net.server
            .netbeast_ok(&[
                tool,
                "-t",
                "mangle",
                "-A",
                "PREROUTING",
                "-p",
                "tcp",
                "--dport",
                "80",
                "-j",
                "MARK",
                "--set-mark",
                "0x7",
            ])
            .unwrap();
        let text = net
            .server
            .netbeast_ok(&["trace", "--packet", &desc])
            .unwrap();
        assert!(
            text.contains(
                "mangle PREROUTING rule 1: -A PREROUTING -p tcp -m tcp --dport 80 -j MARK --set-xmark 0x7/0xffffffff"
            ),
            "{tool}: {text}"
        );
        let mangle = text.find("mangle PREROUTING").unwrap();
        let input = text.find("filter ").unwrap_or(usize::MAX);
        assert!(mangle < input, "{tool}: mangle before filter: {text}");
    }
    assert_trace_off(&net);
}
