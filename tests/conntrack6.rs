//! Program tests of conntrack for IPv6 (issue 16): sequences of crafted
//! IPv6 frames through the real XDP programs with `BPF_PROG_TEST_RUN`,
//! checking the state ip6tables would give each packet (NEW, ESTABLISHED,
//! RELATED, INVALID, UNTRACKED) and what the IPv6 connection tables hold.
//! Same method as `tests/conntrack.rs`: every host of the conversation is
//! an address of the test namespace (on `lo`), so both directions meet
//! INPUT; five counting rules, one per state, open the IPv6 INPUT chain
//! and exactly one of them must count each packet.
//!
//! Needs root. Run: `cargo test -p netbeast --test conntrack6`.

use std::net::Ipv6Addr;

use netbeast::{
    loader::Dataplane,
    netns::{Netns, require_root},
    packet::{FrameBuilder, icmp6_type, ipv6_ext, tcp_flags},
};
use netbeast_common::{Addr6, CtEntry6, chain, ct_status, stats, tcp_state};

#[path = "support/ct_lab.rs"]
mod ct_lab;
use ct_lab::{CLIENT_MAC, CLIENT_PORT, Lab, SERVER_MAC, Seen, XDP_DROP, XDP_PASS, ruleset};

fn client() -> Ipv6Addr {
    "fd00:16::1".parse().unwrap()
}
fn server() -> Ipv6Addr {
    "fd00:16::2".parse().unwrap()
}
/// A router between them, which may send ICMPv6 errors about their traffic.
fn router() -> Ipv6Addr {
    "fd00:16::fe".parse().unwrap()
}

/// Loads the data plane in a fresh namespace with the three hosts'
/// addresses on `lo`, installs the counting rules and then `rules` (IPv6
/// rules, as `ip6tables` takes them; a line starting with `4 ` is an
/// IPv4 one), and runs `body` inside the namespace.
fn lab(tag: &str, rules: &[&str], body: impl FnOnce(&mut Lab) + Send) {
    require_root();
    let ns = Netns::new(&format!("ct6-{tag}")).expect("creating the test namespace");
    for host in [client(), server(), router()] {
        ns.ip(&["-6", "addr", "add", &format!("{host}/128"), "dev", "lo"])
            .expect("adding a host address");
    }
    let ruleset = ruleset(rules, true);
    let shown = format!("{rules:?}");
    let six = rules.iter().filter(|r| r.starts_with("-A ")).count();
    ns.in_netns(move || {
        let mut dp = Dataplane::load_private()
            .unwrap_or_else(|e| panic!("loading the data plane failed: {e}"));
        dp.apply(&ruleset, &[])
            .unwrap_or_else(|e| panic!("applying {shown} failed: {e}"));
        body(&mut Lab {
            dp,
            input: chain::INPUT6,
            rules: six,
        });
    })
    .expect("entering the test namespace");
}

impl Lab {
    /// The IPv6 entry whose original direction is `src:sport → dst:dport`,
    /// and whether it sits in the established table.
    fn entry(
        &self,
        src: Ipv6Addr,
        sport: u16,
        dst: Ipv6Addr,
        dport: u16,
    ) -> Option<(CtEntry6, bool)> {
        let found: Vec<(CtEntry6, bool)> = self
            .dp
            .conntrack_entries6()
            .expect("reading the IPv6 conntrack tables")
            .into_iter()
            .filter(|(_, e, _)| {
                e.orig_src == raw(src)
                    && e.orig_dst == raw(dst)
                    && e.orig_sport == sport
                    && e.orig_dport == dport
            })
            .map(|(_, e, established)| (e, established))
            .collect();
        assert!(found.len() <= 1, "{src} has {} entries", found.len());
        found.into_iter().next()
    }

    fn entry_count(&self) -> usize {
        self.dp.conntrack_entries6().expect("reading").len()
    }
}

/// An address as the kernel's key holds it: four words in packet order.
fn raw(a: Ipv6Addr) -> Addr6 {
    let o = a.octets();
    Addr6(std::array::from_fn(|i| {
        u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
    }))
}

fn c2s(dport: u16, flags: u8) -> FrameBuilder {
    FrameBuilder::tcp6_segment(client(), CLIENT_PORT, server(), dport, flags, 1000, &[])
        .src_mac(CLIENT_MAC)
        .dst_mac(SERVER_MAC)
}

fn s2c(sport: u16, flags: u8) -> FrameBuilder {
    FrameBuilder::tcp6_segment(server(), sport, client(), CLIENT_PORT, flags, 5000, &[])
        .src_mac(SERVER_MAC)
        .dst_mac(CLIENT_MAC)
}

fn udp(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> FrameBuilder {
    FrameBuilder::udp6_with(src, sport, dst, dport, b"hello")
}

fn echo(src: Ipv6Addr, dst: Ipv6Addr, icmp_type: u8, id: u16) -> FrameBuilder {
    let id = id.to_be_bytes();
    FrameBuilder::icmp6(src, dst, icmp_type, 0, [id[0], id[1], 0, 1], b"ping")
}

const SYN: u8 = tcp_flags::SYN;
const SYN_ACK: u8 = tcp_flags::SYN | tcp_flags::ACK;
const ACK: u8 = tcp_flags::ACK;
const FIN_ACK: u8 = tcp_flags::FIN | tcp_flags::ACK;
const RST: u8 = tcp_flags::RST;

#[test]
fn tcp6_handshake_and_teardown() {
    lab("tcp", &[], |lab| {
        lab.expect("client SYN", &c2s(22, SYN), "NEW");
        let (e, established) = lab
            .entry(client(), CLIENT_PORT, server(), 22)
            .expect("the SYN opened a connection");
        assert!(!established);
        assert_eq!(e.tcp_state, tcp_state::SYN_SENT);
        assert_eq!(e.protocol, 6);
        assert_eq!(e.bytes[0], 60, "IPv6 header and TCP header");
        lab.expect("server SYN-ACK", &s2c(22, SYN_ACK), "ESTABLISHED");
        lab.expect("client ACK", &c2s(22, ACK), "ESTABLISHED");
        let (e, established) = lab.entry(client(), CLIENT_PORT, server(), 22).unwrap();
        assert!(established, "the reply moved it to the established table");
        assert_eq!(e.tcp_state, tcp_state::ESTABLISHED);
        assert_eq!(e.packets, [2, 1]);
        assert_ne!(e.status & ct_status::SEEN_REPLY, 0);
        lab.expect("client FIN", &c2s(22, FIN_ACK), "ESTABLISHED");
        lab.expect("server FIN", &s2c(22, FIN_ACK), "ESTABLISHED");
        let (e, _) = lab.entry(client(), CLIENT_PORT, server(), 22).unwrap();
        assert_eq!(e.tcp_state, tcp_state::TIME_WAIT);
        lab.expect("a new SYN reopens it", &c2s(22, SYN), "NEW");
        lab.expect("RST of the reopened one", &s2c(22, RST), "ESTABLISHED");
        let (e, _) = lab.entry(client(), CLIENT_PORT, server(), 22).unwrap();
        assert_eq!(e.tcp_state, tcp_state::CLOSE);
        // Invalid without a connection, or with flags netfilter refuses.
        lab.expect("ACK of no connection", &c2s(23, ACK), "INVALID");
        lab.expect(
            "SYN+FIN",
            &c2s(24, tcp_flags::SYN | tcp_flags::FIN),
            "INVALID",
        );
        assert_eq!(lab.entry_count(), 1);
        assert!(
            lab.dp.conntrack_entries().unwrap().is_empty(),
            "IPv6 connections live in their own tables"
        );
    });
}

#[test]
fn tcp6_behind_extension_headers() {
    lab("ext", &[], |lab| {
        let syn = c2s(80, SYN)
            .ipv6_ext(ipv6_ext::HOP_BY_HOP, 0)
            .ipv6_ext(ipv6_ext::DEST_OPTS, 1);
        lab.expect("SYN after hop-by-hop and destination options", &syn, "NEW");
        let reply = s2c(80, SYN_ACK).ipv6_ext(ipv6_ext::ROUTING, 0);
        lab.expect("SYN-ACK after a routing header", &reply, "ESTABLISHED");
        // A non-first fragment carries no ports: UNTRACKED, as the
        // non-first IPv4 fragments (no reassembly in XDP).
        let later = c2s(80, ACK).ipv6_fragment(8, false);
        lab.expect("a later fragment", &later, "UNTRACKED");
    });
}

#[test]
fn udp6_and_icmp6_echo() {
    lab("udp", &[], |lab| {
        let out = udp(client(), 5353, server(), 53);
        lab.expect("query", &out, "NEW");
        lab.expect("query again before any answer", &out, "NEW");
        lab.expect("answer", &udp(server(), 53, client(), 5353), "ESTABLISHED");
        let (e, established) = lab.entry(client(), 5353, server(), 53).unwrap();
        assert!(established);
        assert_eq!(e.packets, [2, 1]);

        let request = echo(client(), server(), icmp6_type::ECHO_REQUEST, 0x4242);
        lab.expect("echo request", &request, "NEW");
        lab.expect(
            "echo reply",
            &echo(server(), client(), icmp6_type::ECHO_REPLY, 0x4242),
            "ESTABLISHED",
        );
        let (e, established) = lab
            .entry(client(), 0x4242, server(), 0x4242)
            .expect("tracked by its identifier");
        assert!(established);
        assert_eq!(e.protocol, 58);
        lab.expect(
            "unsolicited echo reply",
            &echo(server(), client(), icmp6_type::ECHO_REPLY, 0x9999),
            "INVALID",
        );
        lab.expect(
            "a redirect opens nothing",
            &FrameBuilder::icmp6(
                router(),
                client(),
                icmp6_type::REDIRECT,
                0,
                [0; 4],
                &[0; 32],
            ),
            "INVALID",
        );
        assert_eq!(lab.entry_count(), 2);
    });
}

/// Neighbour discovery and MLD are ICMPv6 that netfilter leaves
/// UNTRACKED: a stateful ruleset needs its own rules for them.
#[test]
fn ndp_and_mld_are_untracked() {
    lab("ndp", &[], |lab| {
        let solicited = "ff02::1:ff00:2".parse().unwrap();
        let mut target = server().octets().to_vec();
        target.extend_from_slice(&[1, 1, 0x02, 0xc1, 0x1e, 0, 0, 1]);
        let ns = FrameBuilder::icmp6(
            client(),
            solicited,
            icmp6_type::NEIGHBOUR_SOLICITATION,
            0,
            [0; 4],
            &target,
        )
        .hop_limit(255);
        lab.expect("neighbour solicitation", &ns, "UNTRACKED");
        let na = FrameBuilder::icmp6(
            server(),
            client(),
            icmp6_type::NEIGHBOUR_ADVERTISEMENT,
            0,
            [0x60, 0, 0, 0],
            &server().octets(),
        )
        .hop_limit(255);
        lab.expect("neighbour advertisement", &na, "UNTRACKED");
        for (what, t) in [
            ("router solicitation", 133),
            ("router advertisement", 134),
            ("MLD query", 130),
            ("MLDv2 report", 143),
        ] {
            let msg =
                FrameBuilder::icmp6(client(), "ff02::1".parse().unwrap(), t, 0, [0; 4], &[0; 16]);
            lab.expect(what, &msg, "UNTRACKED");
        }
        let mut bad = ns.build();
        // The checksum's low byte.
        bad[14 + 40 + 3] ^= 0xff;
        let seen = {
            let before = lab.counts();
            let out = lab.dp.test_run_xdp(&bad, 0).unwrap();
            let after = lab.counts();
            (before[3] + 1 == after[3], out.action)
        };
        assert_eq!(
            seen,
            (true, XDP_PASS),
            "a solicitation with a bad checksum is INVALID"
        );
        assert_eq!(lab.entry_count(), 0, "NDP opens nothing");
    });
}

#[test]
fn icmp6_errors_about_tracked_flows_are_related() {
    lab("related", &[], |lab| {
        let out = udp(client(), 5353, server(), 53);
        lab.expect("UDP to the server", &out, "NEW");
        let syn = c2s(443, SYN);
        lab.expect("SYN to the server", &syn, "NEW");
        let ping = echo(client(), server(), icmp6_type::ECHO_REQUEST, 7);
        lab.expect("ping", &ping, "NEW");
        let related = lab.stat(stats::CT_RELATED);
        let error = |from: Ipv6Addr, t: u8, code: u8, quoted: &FrameBuilder| {
            FrameBuilder::icmp6_error(from, client(), t, code, &quoted.build_ipv6())
        };
        lab.expect(
            "port unreachable from the server about the UDP flow",
            &error(server(), icmp6_type::DEST_UNREACHABLE, 4, &out),
            "RELATED",
        );
        lab.expect(
            "administratively prohibited from a router about the TCP flow",
            &error(router(), icmp6_type::DEST_UNREACHABLE, 1, &syn),
            "RELATED",
        );
        lab.expect(
            "packet too big about the TCP flow",
            &error(router(), icmp6_type::PACKET_TOO_BIG, 0, &syn),
            "RELATED",
        );
        lab.expect(
            "time exceeded about the ping",
            &error(router(), icmp6_type::TIME_EXCEEDED, 0, &ping),
            "RELATED",
        );
        assert_eq!(lab.stat(stats::CT_RELATED) - related, 4);
        lab.expect(
            "port unreachable about a flow nobody opened",
            &error(
                server(),
                icmp6_type::DEST_UNREACHABLE,
                4,
                &udp(client(), 7777, server(), 53),
            ),
            "INVALID",
        );
        lab.expect(
            "an error quoting nothing",
            &FrameBuilder::icmp6(server(), client(), 1, 4, [0; 4], &[]),
            "INVALID",
        );
        let mut bad = error(server(), icmp6_type::DEST_UNREACHABLE, 4, &out).build();
        bad[14 + 40 + 2] ^= 0x55;
        let before = lab.counts();
        lab.dp.test_run_xdp(&bad, 0).unwrap();
        assert_eq!(
            lab.counts()[3],
            before[3] + 1,
            "an error with a bad checksum is INVALID"
        );
        assert_eq!(lab.entry_count(), 3, "ICMPv6 errors open nothing");
        let (e, _) = lab.entry(client(), 5353, server(), 53).unwrap();
        assert_eq!(e.status & ct_status::SEEN_REPLY, 0, "an error is no reply");
    });
}

#[test]
fn bad_checksums6_are_invalid() {
    lab("csum", &[], |lab| {
        let mut bad_udp = udp(client(), 1000, server(), 53).build();
        // A payload byte: "hello" becomes "hellp".
        bad_udp[14 + 40 + 8 + 4] ^= 0x1f;
        let before = lab.counts();
        lab.dp.test_run_xdp(&bad_udp, 0).unwrap();
        assert_eq!(
            lab.counts()[3],
            before[3] + 1,
            "UDP with a bad checksum is INVALID"
        );
        let mut syn = c2s(22, SYN).build();
        syn[14 + 40 + 16] ^= 0x01;
        let before = lab.counts();
        lab.dp.test_run_xdp(&syn, 0).unwrap();
        assert_eq!(
            lab.counts()[3],
            before[3] + 1,
            "a SYN with a bad checksum is INVALID"
        );
        let mut ping = echo(client(), server(), icmp6_type::ECHO_REQUEST, 1).build();
        ping[14 + 40 + 2] ^= 0x01;
        let before = lab.counts();
        lab.dp.test_run_xdp(&ping, 0).unwrap();
        assert_eq!(
            lab.counts()[3],
            before[3] + 1,
            "a ping with a bad checksum is INVALID"
        );
        lab.expect(
            "control: UDP with a right checksum is NEW",
            &udp(client(), 1001, server(), 53),
            "NEW",
        );
        lab.expect(
            "control: a SYN with a payload of odd length",
            &FrameBuilder::tcp6_segment(client(), 1, server(), 22, SYN, 1, b"odd"),
            "NEW",
        );
        // A first fragment's checksum is the whole datagram's: taken as it
        // is (netfilter checks the reassembled one).
        let mut first = udp(client(), 1002, server(), 53)
            .ipv6_fragment(0, true)
            .build();
        first[14 + 40 + 8 + 6] ^= 0x5a;
        let before = lab.counts();
        lab.dp.test_run_xdp(&first, 0).unwrap();
        assert_eq!(lab.counts()[0], before[0] + 1, "a first fragment is NEW");
        // The same bytes without the More Fragments bit: a whole datagram
        // with a bad checksum.
        let mut whole = first.clone();
        whole[14 + 40 + 3] &= !1;
        let mut whole_port = whole.clone();
        whole_port[14 + 40 + 8] ^= 0x01;
        let before = lab.counts();
        lab.dp.test_run_xdp(&whole_port, 0).unwrap();
        assert_eq!(
            lab.counts()[3],
            before[3] + 1,
            "control: the whole datagram is INVALID"
        );
        assert_eq!(lab.entry_count(), 3);
    });
}

/// The stateful host of the article for IPv6: INPUT policy DROP,
/// ESTABLISHED,RELATED accepted, one open port, NDP allowed. Only
/// accepted packets open connections.
#[test]
fn stateful_host6_verdicts() {
    let rules = [
        "-P INPUT DROP",
        "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
        "-A INPUT -p ipv6-icmp -m conntrack --ctstate UNTRACKED -j ACCEPT",
        "-A INPUT -p tcp --dport 22 -j ACCEPT",
        // The IPv4 ruleset stays apart: its own policy, no effect here.
        "4 -P INPUT DROP",
    ];
    lab("host", &rules, |lab| {
        let created = lab.stat(stats::CT_CREATED);
        assert_eq!(
            lab.send("SYN to a closed port", &c2s(23, SYN)).action,
            XDP_DROP
        );
        assert_eq!(lab.entry_count(), 0, "a dropped SYN opens nothing");
        assert_eq!(
            lab.send("its SYN-ACK", &s2c(23, SYN_ACK)),
            Seen {
                state: "INVALID",
                action: XDP_DROP
            }
        );
        assert_eq!(lab.send("SYN to ssh", &c2s(22, SYN)).action, XDP_PASS);
        assert_eq!(lab.stat(stats::CT_CREATED), created + 1);
        assert_eq!(lab.send("SYN-ACK back", &s2c(22, SYN_ACK)).action, XDP_PASS);
        assert_eq!(lab.send("ACK", &c2s(22, ACK)).action, XDP_PASS);
        assert_eq!(
            lab.send(
                "port unreachable about ssh",
                &FrameBuilder::icmp6_error(
                    router(),
                    client(),
                    icmp6_type::DEST_UNREACHABLE,
                    3,
                    &c2s(22, ACK).build_ipv6()
                )
            ),
            Seen {
                state: "RELATED",
                action: XDP_PASS
            }
        );
        let ns = FrameBuilder::icmp6(
            client(),
            "ff02::1:ff00:2".parse().unwrap(),
            icmp6_type::NEIGHBOUR_SOLICITATION,
            0,
            [0; 4],
            &server().octets(),
        )
        .hop_limit(255);
        assert_eq!(lab.send("neighbour solicitation", &ns).action, XDP_PASS);
        assert_eq!(
            lab.send(
                "ping (no rule for it)",
                &echo(client(), server(), icmp6_type::ECHO_REQUEST, 3)
            ),
            Seen {
                state: "NEW",
                action: XDP_DROP
            }
        );
        // UDP: dropped, and its answer is NEW (not a reply), dropped too.
        assert_eq!(
            lab.send("UDP", &udp(client(), 9, server(), 9)).action,
            XDP_DROP
        );
        assert_eq!(
            lab.send("UDP back", &udp(server(), 9, client(), 9)),
            Seen {
                state: "NEW",
                action: XDP_DROP
            }
        );
        assert_eq!(lab.entry_count(), 1);
    });
}

#[test]
fn checksum_offload_is_trusted() {
    lab("partial", &[], |lab| {
        // A TCP checksum holding only the pseudo-header's sum: what a veth
        // peer's own sockets send, left to offload.
        let full = c2s(22, SYN).build();
        let mut partial = full.clone();
        let l4 = &full[14 + 40..];
        let src = client().octets();
        let dst = server().octets();
        let mut sum: u32 = 0;
        for pair in src.chunks(2).chain(dst.chunks(2)) {
            sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
        }
        sum += l4.len() as u32 + 6;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        partial[14 + 40 + 16..14 + 40 + 18].copy_from_slice(&(sum as u16).to_be_bytes());
        let before = lab.counts();
        let out = lab.dp.test_run_xdp(&partial, 0).unwrap();
        assert_eq!(out.action, XDP_PASS);
        assert_eq!(lab.counts()[0], before[0] + 1, "NEW");
    });
}
