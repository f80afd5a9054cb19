//! Program tests of conntrack-lite (issue 3): sequences of frames through the
//! real XDP program with `BPF_PROG_TEST_RUN`, checking the state iptables
//! would give each packet (NEW, ESTABLISHED, RELATED, INVALID) and what the
//! connection table holds afterwards.
//!
//! Each lab makes a namespace, loads the data plane there with private maps
//! and treats both test hosts as local addresses, so that both directions of
//! a conversation go through INPUT: a packet "from the other side" is just a
//! frame with the addresses swapped. The state of every packet is read from
//! the counters of five non-terminating rules, one per state, that come
//! first in INPUT (`-A INPUT -m state --state NEW`, ...): exactly one of them
//! must count each packet.
//!
//! Needs root. Run: `cargo test -p netbeast --test conntrack`.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use netbeast::{
    cli::conntrack::{entry_line, monotonic_now_ns},
    loader::Dataplane,
    netns::{Netns, require_root},
    packet::{FrameBuilder, icmp_type, tcp_flags, unreachable_code},
};
use netbeast_common::{
    CT_UNREPLIED_ENTRIES, CtConfig, CtEntry, chain, ct_status, stats, tcp_state,
};

#[path = "support/ct_lab.rs"]
mod ct_lab;
use ct_lab::{CLIENT_MAC, CLIENT_PORT, Lab, SERVER_MAC, STATES, Seen, XDP_DROP, XDP_PASS, ruleset};

const XDP_TX: u32 = 3;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// A router between them, which may send ICMP errors about their traffic.
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);

// ---------------------------------------------------------------------------
// The lab

/// Loads the data plane in a fresh namespace, installs the counting rules
/// followed by `rules`, and runs `body` inside the namespace.
fn lab(tag: &str, rules: &[&str], body: impl FnOnce(&mut Lab) + Send) {
    require_root();
    let ns = Netns::new(&format!("ct-{tag}")).expect("creating the test namespace");
    let ruleset = ruleset(rules, false);
    let shown = format!("{rules:?}");
    ns.in_netns(move || {
        let mut dp = Dataplane::load_private()
            .unwrap_or_else(|e| panic!("loading the XDP program failed: {e}"));
        dp.apply(&ruleset, &[])
            .unwrap_or_else(|e| panic!("applying {shown} failed: {e}"));
        // Every host of the conversation is "this host": both directions
        // meet INPUT.
        dp.set_local_addresses(&[CLIENT, SERVER, ROUTER])
            .expect("setting the local addresses");
        body(&mut Lab {
            dp,
            input: chain::INPUT,
            rules: rules.len(),
        });
    })
    .expect("entering the test namespace");
}

/// What happened to one packet.
impl Lab {
    /// The entry whose original direction is `src:sport → dst:dport`, and
    /// whether it sits in the established table. Panics if it is in both.
    fn entry(
        &self,
        src: Ipv4Addr,
        sport: u16,
        dst: Ipv4Addr,
        dport: u16,
    ) -> Option<(CtEntry, bool)> {
        let found: Vec<(CtEntry, bool)> = self
            .dp
            .conntrack_entries()
            .expect("reading the conntrack tables")
            .into_iter()
            .filter(|(_, e, _)| {
                e.orig_src == raw(src)
                    && e.orig_dst == raw(dst)
                    && e.orig_sport == sport
                    && e.orig_dport == dport
            })
            .map(|(_, e, established)| (e, established))
            .collect();
        assert!(
            found.len() <= 1,
            "{src}:{sport} -> {dst}:{dport} has {} entries: {found:?}",
            found.len()
        );
        found.into_iter().next()
    }

    fn entry_count(&self) -> usize {
        self.dp
            .conntrack_entries()
            .expect("reading the conntrack tables")
            .len()
    }
}

fn raw(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

// ---------------------------------------------------------------------------
// Frames

/// A TCP segment of the client → server direction.
fn c2s(dport: u16, flags: u8) -> FrameBuilder {
    FrameBuilder::tcp(CLIENT, CLIENT_PORT, SERVER, dport)
        .src_mac(CLIENT_MAC)
        .dst_mac(SERVER_MAC)
        .tcp_flags(flags)
        .seq(1000)
}

/// A TCP segment of the server → client direction.
fn s2c(sport: u16, flags: u8) -> FrameBuilder {
    FrameBuilder::tcp(SERVER, sport, CLIENT, CLIENT_PORT)
        .src_mac(SERVER_MAC)
        .dst_mac(CLIENT_MAC)
        .tcp_flags(flags)
        .seq(5000)
}

fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> FrameBuilder {
    FrameBuilder::udp(src, sport, dst, dport).payload(b"hello")
}

const SYN: u8 = tcp_flags::SYN;
const SYN_ACK: u8 = tcp_flags::SYN | tcp_flags::ACK;
const ACK: u8 = tcp_flags::ACK;
const PSH_ACK: u8 = tcp_flags::PSH | tcp_flags::ACK;
const FIN_ACK: u8 = tcp_flags::FIN | tcp_flags::ACK;
const RST: u8 = tcp_flags::RST;

/// IPv4 total length of a frame: what conntrack counts in `bytes`.
fn ip_len(frame: &FrameBuilder) -> u64 {
    frame.build_ipv4().len() as u64
}

// ---------------------------------------------------------------------------
// TCP

#[test]
fn tcp_handshake_data_and_teardown() {
    lab("tcp", &[], |lab| {
        let syn = c2s(22, SYN);
        lab.expect("client SYN", &syn, "NEW");
        let (e, established) = lab
            .entry(CLIENT, CLIENT_PORT, SERVER, 22)
            .expect("SYN recorded");
        assert!(
            !established,
            "an unreplied connection is in the unreplied table"
        );
        assert_eq!(e.tcp_state, tcp_state::SYN_SENT);
        assert_eq!(e.status & ct_status::SEEN_REPLY, 0);
        assert_eq!((e.packets, e.bytes), ([1, 0], [ip_len(&syn), 0]));

        lab.expect("retransmitted SYN", &syn, "NEW");
        let created = lab.stat(stats::CT_CREATED);
        assert_eq!(
            lab.entry_count(),
            1,
            "a retransmission is the same connection"
        );

        let syn_ack = s2c(22, SYN_ACK);
        lab.expect("server SYN-ACK (the first reply)", &syn_ack, "ESTABLISHED");
        let (e, established) = lab
            .entry(CLIENT, CLIENT_PORT, SERVER, 22)
            .expect("still tracked");
        assert!(
            established,
            "the first reply moves the connection to the established table"
        );
        assert_ne!(e.status & ct_status::SEEN_REPLY, 0);
        assert_eq!(e.tcp_state, tcp_state::SYN_RECV);

        lab.expect("client ACK", &c2s(22, ACK), "ESTABLISHED");
        let data = c2s(22, PSH_ACK).payload(&[7; 100]);
        lab.expect("client data", &data, "ESTABLISHED");
        let answer = s2c(22, PSH_ACK).payload(&[8; 40]);
        lab.expect("server data", &answer, "ESTABLISHED");
        let (e, _) = lab.entry(CLIENT, CLIENT_PORT, SERVER, 22).unwrap();
        assert_eq!(e.tcp_state, tcp_state::ESTABLISHED);
        assert_eq!(e.packets, [4, 2]);
        assert_eq!(
            e.bytes,
            [
                2 * ip_len(&syn) + ip_len(&c2s(22, ACK)) + ip_len(&data),
                ip_len(&syn_ack) + ip_len(&answer)
            ]
        );
        assert_eq!(
            lab.stat(stats::CT_CREATED),
            created,
            "no second entry was created"
        );

        lab.expect("client FIN", &c2s(22, FIN_ACK), "ESTABLISHED");
        assert_eq!(
            lab.entry(CLIENT, CLIENT_PORT, SERVER, 22)
                .unwrap()
                .0
                .tcp_state,
            tcp_state::FIN_WAIT
        );
        lab.expect("server FIN", &s2c(22, FIN_ACK), "ESTABLISHED");
        assert_eq!(
            lab.entry(CLIENT, CLIENT_PORT, SERVER, 22)
                .unwrap()
                .0
                .tcp_state,
            tcp_state::TIME_WAIT
        );
        lab.expect("last ACK", &c2s(22, ACK), "ESTABLISHED");

        // conntrack -L shows it as conntrack(8) would.
        let config = lab.dp.conntrack_config().unwrap();
        let (e, _) = lab.entry(CLIENT, CLIENT_PORT, SERVER, 22).unwrap();
        let line = entry_line(&e, monotonic_now_ns(), &config).expect("live entry");
        assert!(
            line.starts_with("tcp      6 1")
                && line.contains(
                    " TIME_WAIT src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=22 packets=6 "
                ),
            "{line}"
        );
        assert!(
            line.contains(" src=10.0.0.2 dst=10.0.0.1 sport=22 dport=40000 packets=3 "),
            "{line}"
        );
    });
}

#[test]
fn tcp_reset_closes_and_a_new_syn_reopens() {
    lab("rst", &[], |lab| {
        lab.expect("SYN", &c2s(80, SYN), "NEW");
        lab.expect("SYN-ACK", &s2c(80, SYN_ACK), "ESTABLISHED");
        lab.expect("ACK", &c2s(80, ACK), "ESTABLISHED");
        lab.expect("server RST", &s2c(80, RST), "ESTABLISHED");
        let (e, _) = lab
            .entry(CLIENT, CLIENT_PORT, SERVER, 80)
            .expect("tracked until it expires");
        assert_eq!(
            e.tcp_state,
            tcp_state::CLOSE,
            "a reset closes the connection"
        );
        let config = lab.dp.conntrack_config().unwrap();
        let left = netbeast::cli::conntrack::remaining_secs(&e, monotonic_now_ns(), &config)
            .expect("not expired yet");
        assert!(
            left <= u64::from(CtConfig::DEFAULT.tcp_close),
            "a closed connection expires quickly: {left} s left"
        );

        // The same ports again: a new connection, as netfilter treats a SYN
        // on a closed one.
        lab.expect("SYN on the closed connection", &c2s(80, SYN), "NEW");
        let (e, _) = lab
            .entry(CLIENT, CLIENT_PORT, SERVER, 80)
            .expect("reopened");
        assert_eq!(e.tcp_state, tcp_state::SYN_SENT);
    });
}

#[test]
fn tcp_without_a_connection_is_invalid() {
    lab(
        "invalid",
        &["-A INPUT -m state --state INVALID -j DROP"],
        |lab| {
            let invalid = lab.stat(stats::CT_INVALID);
            for (what, frame) in [
                ("a lone ACK", c2s(22, ACK)),
                ("a lone SYN-ACK", s2c(22, SYN_ACK)),
                ("a lone RST", c2s(22, RST)),
                ("a lone FIN", c2s(22, FIN_ACK)),
                ("data without a connection", c2s(22, PSH_ACK).payload(b"x")),
            ] {
                let seen = lab.send(what, &frame);
                assert_eq!(
                    seen,
                    Seen {
                        state: "INVALID",
                        action: XDP_DROP
                    },
                    "{what}"
                );
            }
            // A TCP header cut short inside a valid IP packet: malformed.
            let short = c2s(22, SYN).truncate(14 + 20 + 10).total_length(30);
            let seen = lab.send("a TCP header cut short", &short);
            assert_eq!(
                seen,
                Seen {
                    state: "INVALID",
                    action: XDP_DROP
                }
            );
            assert_eq!(lab.entry_count(), 0, "INVALID packets open nothing");
            assert_eq!(lab.stat(stats::CT_INVALID) - invalid, 6);
        },
    );
}

// ---------------------------------------------------------------------------
// UDP and ICMP

#[test]
fn udp_new_until_the_reply() {
    lab("udp", &[], |lab| {
        let out = udp(CLIENT, 5353, SERVER, 53);
        let back = udp(SERVER, 53, CLIENT, 5353);
        lab.expect("query", &out, "NEW");
        lab.expect("second query before any answer", &out, "NEW");
        let (e, established) = lab.entry(CLIENT, 5353, SERVER, 53).expect("tracked");
        assert!(!established);
        assert_eq!(e.packets, [2, 0]);
        lab.expect("answer", &back, "ESTABLISHED");
        lab.expect("next query", &out, "ESTABLISHED");
        let (e, established) = lab.entry(CLIENT, 5353, SERVER, 53).expect("tracked");
        assert!(established);
        assert_eq!(e.packets, [3, 1]);
        assert_ne!(e.status & ct_status::SEEN_REPLY, 0);
        // Another source port is another flow.
        lab.expect(
            "query from another port",
            &udp(CLIENT, 5354, SERVER, 53),
            "NEW",
        );
        assert_eq!(lab.entry_count(), 2);
    });
}

#[test]
fn icmp_echo_request_and_reply() {
    lab("echo", &[], |lab| {
        let request = FrameBuilder::icmp_echo_request(CLIENT, SERVER, 0x4242, 1).payload(b"ping");
        let reply = FrameBuilder::icmp(SERVER, CLIENT, icmp_type::ECHO_REPLY, 0)
            .icmp_rest([0x42, 0x42, 0, 1])
            .payload(b"ping");
        lab.expect("echo request", &request, "NEW");
        lab.expect("echo reply", &reply, "ESTABLISHED");
        let (e, established) = lab
            .entry(CLIENT, 0x4242, SERVER, 0x4242)
            .expect("tracked by id");
        assert!(established);
        assert_eq!(e.packets, [1, 1]);
        // A reply nobody asked for (another identifier) opens nothing.
        let stray = FrameBuilder::icmp(SERVER, CLIENT, icmp_type::ECHO_REPLY, 0)
            .icmp_rest([0x99, 0x99, 0, 1]);
        lab.expect("unsolicited echo reply", &stray, "INVALID");
        lab.expect(
            "echo request with another id",
            &FrameBuilder::icmp_echo_request(CLIENT, SERVER, 0x4343, 1),
            "NEW",
        );
        assert_eq!(lab.entry_count(), 2);
    });
}

#[test]
fn icmp_errors_about_tracked_flows_are_related() {
    lab("related", &[], |lab| {
        let out = udp(CLIENT, 5353, SERVER, 53);
        lab.expect("UDP to the server", &out, "NEW");
        let syn = c2s(443, SYN);
        lab.expect("SYN to the server", &syn, "NEW");
        let related = lab.stat(stats::CT_RELATED);

        let unreachable = |from: Ipv4Addr, code: u8, original: &FrameBuilder| {
            FrameBuilder::icmp_error(
                from,
                CLIENT,
                icmp_type::DEST_UNREACHABLE,
                code,
                &original.build_ipv4(),
            )
        };
        lab.expect(
            "port unreachable from the server about the UDP flow",
            &unreachable(SERVER, unreachable_code::PORT, &out),
            "RELATED",
        );
        lab.expect(
            "host unreachable from a router about the UDP flow",
            &unreachable(ROUTER, unreachable_code::HOST, &out),
            "RELATED",
        );
        lab.expect(
            "admin prohibited from a router about the TCP flow",
            &unreachable(ROUTER, unreachable_code::ADMIN_PROHIBITED, &syn),
            "RELATED",
        );
        let ttl = FrameBuilder::icmp_error(
            ROUTER,
            CLIENT,
            icmp_type::TIME_EXCEEDED,
            0,
            &out.build_ipv4(),
        );
        lab.expect("time exceeded about the UDP flow", &ttl, "RELATED");
        assert_eq!(lab.stat(stats::CT_RELATED) - related, 4);

        lab.expect(
            "port unreachable about a flow nobody opened",
            &unreachable(
                SERVER,
                unreachable_code::PORT,
                &udp(CLIENT, 7777, SERVER, 53),
            ),
            "INVALID",
        );
        lab.expect(
            "an ICMP error quoting nothing",
            &FrameBuilder::icmp(SERVER, CLIENT, icmp_type::DEST_UNREACHABLE, 3),
            "INVALID",
        );
        assert_eq!(lab.entry_count(), 2, "ICMP errors open no connection");
        let (e, _) = lab.entry(CLIENT, 5353, SERVER, 53).unwrap();
        assert_eq!(
            e.status & ct_status::SEEN_REPLY,
            0,
            "an ICMP error is no reply"
        );
    });
}

// ---------------------------------------------------------------------------
// Only accepted packets open connections

#[test]
fn only_accepted_packets_open_connections() {
    let rules = [
        "-A INPUT -p udp --dport 9 -j DROP",
        "-A INPUT -p tcp --dport 23 -j DROP",
        "-A INPUT -p tcp --dport 24 -j REJECT --reject-with tcp-reset",
        "-A INPUT -p udp --dport 25 -j REJECT",
    ];
    lab("accepted", &rules, |lab| {
        let created = lab.stat(stats::CT_CREATED);
        let seen = lab.send("UDP to a dropped port", &udp(CLIENT, 1000, SERVER, 9));
        assert_eq!(
            seen,
            Seen {
                state: "NEW",
                action: XDP_DROP
            }
        );
        let seen = lab.send("SYN to a dropped port", &c2s(23, SYN));
        assert_eq!(
            seen,
            Seen {
                state: "NEW",
                action: XDP_DROP
            }
        );
        let seen = lab.send("SYN to a rejected port", &c2s(24, SYN));
        assert_eq!(
            seen,
            Seen {
                state: "NEW",
                action: XDP_TX
            }
        );
        let seen = lab.send("UDP to a rejected port", &udp(CLIENT, 1000, SERVER, 25));
        assert_eq!(
            seen,
            Seen {
                state: "NEW",
                action: XDP_TX
            }
        );
        assert_eq!(
            lab.entry_count(),
            0,
            "dropped and rejected packets open nothing"
        );
        assert_eq!(lab.stat(stats::CT_CREATED), created);

        // So what comes back is not a reply.
        lab.expect("SYN-ACK for the dropped SYN", &s2c(23, SYN_ACK), "INVALID");
        lab.expect(
            "UDP back from the dropped port",
            &udp(SERVER, 9, CLIENT, 1000),
            "NEW",
        );
        // That one was accepted: it opened a connection of its own, the
        // other way round.
        let (_, established) = lab
            .entry(SERVER, 9, CLIENT, 1000)
            .expect("opened by the server");
        assert!(!established);
        assert_eq!(lab.stat(stats::CT_CREATED), created + 1);
    });
}

/// The classic stateful host (INPUT policy DROP, ESTABLISHED,RELATED
/// accepted, one open port), as verdicts on packets.
#[test]
fn stateful_host_verdicts() {
    let rules = [
        "-P INPUT DROP",
        "-A INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT",
        "-A INPUT -p tcp --dport 22 -j ACCEPT",
    ];
    lab("host", &rules, |lab| {
        let dropped = |lab: &mut Lab, what: &str, frame: &FrameBuilder| {
            assert_eq!(lab.send(what, frame).action, XDP_DROP, "{what}");
        };
        dropped(lab, "SYN to a closed port", &c2s(80, SYN));
        assert_eq!(lab.entry_count(), 0);
        dropped(lab, "its SYN-ACK", &s2c(80, SYN_ACK));
        lab.expect("SYN to the open port", &c2s(22, SYN), "NEW");
        lab.expect("its SYN-ACK", &s2c(22, SYN_ACK), "ESTABLISHED");
        lab.expect("data", &c2s(22, PSH_ACK).payload(b"hi"), "ESTABLISHED");
        dropped(lab, "UDP to anything", &udp(CLIENT, 1000, SERVER, 53));
        // An error about the open connection gets in; one about nothing does not.
        let about_ssh = FrameBuilder::icmp_error(
            ROUTER,
            SERVER,
            icmp_type::DEST_UNREACHABLE,
            unreachable_code::HOST,
            &s2c(22, PSH_ACK).build_ipv4(),
        );
        lab.expect("ICMP error about the ssh connection", &about_ssh, "RELATED");
        let about_nothing = FrameBuilder::icmp_error(
            ROUTER,
            SERVER,
            icmp_type::DEST_UNREACHABLE,
            unreachable_code::HOST,
            &s2c(8080, PSH_ACK).build_ipv4(),
        );
        dropped(lab, "ICMP error about nothing", &about_nothing);
    });
}

// ---------------------------------------------------------------------------
// Timeouts

#[test]
fn expired_connections_start_over() {
    lab("expiry", &[], |lab| {
        let config = CtConfig {
            udp: 1,
            udp_stream: 1,
            ..CtConfig::DEFAULT
        };
        lab.dp
            .set_conntrack_config(&config)
            .expect("setting timeouts");
        assert_eq!(lab.dp.conntrack_config().unwrap(), config);
        let out = udp(CLIENT, 5353, SERVER, 53);
        lab.expect("query", &out, "NEW");
        let (e, _) = lab.entry(CLIENT, 5353, SERVER, 53).unwrap();
        assert!(entry_line(&e, monotonic_now_ns(), &config).is_some());
        std::thread::sleep(Duration::from_millis(1300));
        assert_eq!(
            entry_line(&e, monotonic_now_ns(), &config),
            None,
            "conntrack -L leaves expired entries out"
        );
        let expired = lab.stat(stats::CT_EXPIRED);
        lab.expect(
            "answer after the timeout",
            &udp(SERVER, 53, CLIENT, 5353),
            "NEW",
        );
        assert_eq!(lab.stat(stats::CT_EXPIRED) - expired, 1);
        assert!(
            lab.entry(SERVER, 53, CLIENT, 5353).is_some(),
            "the late answer opened a connection of its own"
        );
    });
}

/// Two CPUs handle the two directions of a connection at once: one may
/// read the clock, then find the entry stamped by the other a moment
/// later. That entry is fresh, not expired.
#[test]
fn an_entry_stamped_later_by_another_cpu_is_fresh() {
    lab("clock", &[], |lab| {
        lab.expect("query", &udp(CLIENT, 5353, SERVER, 53), "NEW");
        lab.expect("answer", &udp(SERVER, 53, CLIENT, 5353), "ESTABLISHED");
        let (key, mut entry, established) = lab
            .dp
            .conntrack_entries()
            .unwrap()
            .into_iter()
            .next()
            .expect("the flow is tracked");
        assert!(established);
        // Stamped 1 ms after whatever "now" the next packet reads.
        entry.last_seen_ns = monotonic_now_ns() + 1_000_000;
        lab.dp
            .set_conntrack_entry(&key, &entry, true)
            .expect("staging the entry");
        let expired = lab.stat(stats::CT_EXPIRED);
        lab.expect(
            "next query, read against an entry stamped a moment later",
            &udp(CLIENT, 5353, SERVER, 53),
            "ESTABLISHED",
        );
        assert_eq!(lab.stat(stats::CT_EXPIRED), expired, "counted as expired");
    });
}

// ---------------------------------------------------------------------------
// A SYN flood does not push established connections out

/// xorshift: a reproducible stream of "random" sources.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Frames of the flood: more than the unreplied table holds.
const FLOOD_FRAMES: u32 = 3 * CT_UNREPLIED_ENTRIES;

#[test]
fn syn_flood_leaves_established_connections_alone() {
    lab("flood", &[], |lab| {
        lab.expect("SYN", &c2s(22, SYN), "NEW");
        lab.expect("SYN-ACK", &s2c(22, SYN_ACK), "ESTABLISHED");
        lab.expect("ACK", &c2s(22, ACK), "ESTABLISHED");
        let udp_flow = udp(CLIENT, 5353, SERVER, 53);
        lab.expect("UDP query", &udp_flow, "NEW");
        lab.expect("UDP answer", &udp(SERVER, 53, CLIENT, 5353), "ESTABLISHED");

        let created = lab.stat(stats::CT_CREATED);
        let mut random = Random(0x9e37_79b9_7f4a_7c15);
        let started = Instant::now();
        for _ in 0..FLOOD_FRAMES {
            let r = random.next();
            // 10.128.0.0/9, random ports: every SYN a new flow.
            let src = Ipv4Addr::from(0x0a80_0000 | (r as u32 & 0x007f_ffff));
            let frame = FrameBuilder::tcp(src, (r >> 32) as u16 | 1024, SERVER, 80).build();
            let out = lab.dp.test_run_xdp(&frame, 0).expect("flood frame");
            assert_eq!(
                out.action, XDP_PASS,
                "flood SYNs are accepted (policy ACCEPT)"
            );
        }
        let took = started.elapsed();
        let flooded = lab.stat(stats::CT_CREATED) - created;
        assert!(
            flooded > u64::from(CT_UNREPLIED_ENTRIES),
            "the flood recorded {flooded} connections in {took:?}, expected more than the unreplied table's {CT_UNREPLIED_ENTRIES}"
        );
        let entries = lab.dp.conntrack_entries().unwrap();
        let unreplied = entries
            .iter()
            .filter(|(_, _, established)| !established)
            .count();
        assert!(
            unreplied <= CT_UNREPLIED_ENTRIES as usize,
            "{unreplied} unreplied entries in a table of {CT_UNREPLIED_ENTRIES}"
        );

        lab.expect(
            "ssh data after the flood",
            &c2s(22, PSH_ACK).payload(b"still here"),
            "ESTABLISHED",
        );
        lab.expect(
            "ssh answer after the flood",
            &s2c(22, PSH_ACK).payload(b"yes"),
            "ESTABLISHED",
        );
        lab.expect("UDP after the flood", &udp_flow, "ESTABLISHED");
        let (e, established) = lab
            .entry(CLIENT, CLIENT_PORT, SERVER, 22)
            .expect("ssh survived the flood");
        assert!(established);
        assert_eq!(e.tcp_state, tcp_state::ESTABLISHED);
        assert!(
            lab.entry(CLIENT, 5353, SERVER, 53)
                .is_some_and(|(_, est)| est)
        );
    });
}

// ---------------------------------------------------------------------------
// -m conntrack: direction and status

/// `--ctdir` and `--ctstatus` on a TCP handshake, as xt_conntrack reads
/// them: the first SYN is ORIGINAL and not CONFIRMED yet (conntrack
/// confirms a connection when its first packet leaves), a retransmission
/// is; the SYN-ACK goes the REPLY way and has SEEN_REPLY; the ACK that
/// completes the handshake makes it ASSURED; `--ctstatus NONE` is an empty
/// mask that never matches (and `! --ctstatus NONE` always does). A packet
/// without a connection (INVALID) meets a conntrack match only through
/// its state test: `--ctstate INVALID --ctdir REPLY` holds for it.
#[test]
fn conntrack_direction_and_status() {
    let rules = [
        "-A INPUT -m conntrack --ctdir ORIGINAL",
        "-A INPUT -m conntrack --ctdir REPLY",
        "-A INPUT -m conntrack --ctstatus SEEN_REPLY",
        "-A INPUT -m conntrack --ctstatus CONFIRMED",
        "-A INPUT -m conntrack --ctstatus ASSURED",
        "-A INPUT -m conntrack --ctstatus NONE",
        "-A INPUT -m conntrack ! --ctstatus NONE",
        "-A INPUT -m conntrack --ctstate INVALID --ctdir REPLY",
        "-A INPUT -m conntrack --ctstatus EXPECTED,ASSURED --ctdir REPLY",
    ];
    lab("ctdir", &rules, |lab| {
        let mut check = |what: &str, frame: &FrameBuilder, state: &str, want: &[usize]| {
            let before = lab.counts();
            lab.expect(what, frame, state);
            let after = lab.counts();
            let moved: Vec<usize> = (0..rules.len())
                .filter(|&i| after[STATES.len() + i] != before[STATES.len() + i])
                .collect();
            assert_eq!(
                moved,
                want,
                "{what}: conntrack rules counted {:?}, expected {:?}",
                moved.iter().map(|&i| rules[i]).collect::<Vec<_>>(),
                want.iter().map(|&i| rules[i]).collect::<Vec<_>>()
            );
        };
        check("client SYN", &c2s(22, SYN), "NEW", &[0, 6]);
        check("retransmitted SYN", &c2s(22, SYN), "NEW", &[0, 3, 6]);
        check(
            "server SYN-ACK",
            &s2c(22, SYN_ACK),
            "ESTABLISHED",
            &[1, 2, 3, 6],
        );
        check("client ACK", &c2s(22, ACK), "ESTABLISHED", &[0, 2, 3, 4, 6]);
        check(
            "server data",
            &s2c(22, PSH_ACK).payload(&[1; 10]),
            "ESTABLISHED",
            &[1, 2, 3, 4, 6, 8],
        );
        check("ACK of no connection", &c2s(23, ACK), "INVALID", &[7]);
    });
}
