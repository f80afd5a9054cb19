//! Program tests of REJECT for IPv6 (issue 16): crafted frames through the
//! real XDP programs with `BPF_PROG_TEST_RUN`; every reply is checked byte
//! by byte (Ethernet, IPv6 header, ICMPv6 or TCP header, the quote) and its
//! checksum recomputed; the packets icmpv6_send() and nf_send_reset6()
//! never answer are dropped silently.
//!
//! Needs root. Run: `cargo test -p netbeast --test reject6`.

use std::net::Ipv6Addr;

use netbeast::{
    loader::Dataplane,
    netns::{Netns, require_root},
    packet::{FrameBuilder, icmp6_type, ip_proto, ipv6_l4_checksum, tcp_flags},
    rules::{command, model::Ruleset, parse},
};
use netbeast_common::stats;

const XDP_DROP: u32 = 1;
const XDP_TX: u32 = 3;
const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0x1e, 0x00, 0x00, 0x01];
const SERVER_MAC: [u8; 6] = [0x02, 0x5e, 0x7e, 0x00, 0x00, 0x02];
const ETH: usize = 14;

fn v6(a: &str) -> Ipv6Addr {
    a.parse().unwrap()
}
const CLIENT: &str = "fd00:16::1";
const SERVER: &str = "fd00:16::2";

fn ruleset(lines: &[&str]) -> Ruleset {
    let mut rules = Ruleset::default();
    for line in lines {
        let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let cmd = parse::parse_ip6tables_args(&args)
            .unwrap_or_else(|e| panic!("rule {line:?} does not parse: {e}"));
        command::apply(&mut rules, &cmd)
            .unwrap_or_else(|e| panic!("rule {line:?} cannot be applied: {e}"));
    }
    rules
}

/// A namespace where SERVER is local, the data plane loaded; `setup` may
/// add to it before `body` runs inside.
fn lab(tag: &str, setup: impl FnOnce(&Netns), body: impl FnOnce(&mut Dataplane) + Send) {
    require_root();
    let ns = Netns::new(&format!("rj6-{tag}")).unwrap();
    ns.ip(&["-6", "addr", "add", &format!("{SERVER}/128"), "dev", "lo"])
        .unwrap();
    setup(&ns);
    ns.in_netns(move || {
        let mut dp = Dataplane::load_private().unwrap();
        body(&mut dp);
    })
    .unwrap();
}

fn apply(dp: &mut Dataplane, lines: &[&str]) {
    dp.apply(&ruleset(lines), &[]).unwrap();
}

fn run(dp: &mut Dataplane, frame: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
    let out = dp.test_run_xdp(frame, ifindex).unwrap();
    assert_ne!(out.action, 0, "XDP_ABORTED");
    (out.action, out.frame)
}

fn stat(dp: &Dataplane, index: u32) -> u64 {
    dp.stats().unwrap()[index as usize]
}

fn from_client(b: FrameBuilder) -> FrameBuilder {
    b.src_mac(CLIENT_MAC).dst_mac(SERVER_MAC)
}

fn udp(dport: u16, payload: &[u8]) -> FrameBuilder {
    from_client(FrameBuilder::udp6_with(
        v6(CLIENT),
        40000,
        v6(SERVER),
        dport,
        payload,
    ))
}

fn tcp(dport: u16, flags: u8, seq: u32, payload: &[u8]) -> FrameBuilder {
    from_client(FrameBuilder::tcp6_segment(
        v6(CLIENT),
        40000,
        v6(SERVER),
        dport,
        flags,
        seq,
        payload,
    ))
}

fn addr(bytes: &[u8]) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(bytes).unwrap())
}

/// The IPv6 header of a reply: addresses, next header, hop limit 64,
/// payload length; returns the payload.
fn check_ipv6<'a>(
    reply: &'a [u8],
    request: &[u8],
    next: u8,
    from: Ipv6Addr,
    to: Ipv6Addr,
) -> &'a [u8] {
    assert_eq!(
        &reply[..6],
        &request[6..12],
        "destination MAC: the sender's"
    );
    assert_eq!(
        &reply[6..12],
        &request[..6],
        "source MAC: the one it was sent to"
    );
    assert_eq!(&reply[12..14], &[0x86, 0xdd], "ethertype IPv6");
    let ip = &reply[ETH..];
    assert_eq!(ip[0] >> 4, 6, "version");
    assert_eq!(ip[6], next, "next header");
    assert_eq!(ip[7], 64, "hop limit");
    assert_eq!(addr(&ip[8..24]), from, "source");
    assert_eq!(addr(&ip[24..40]), to, "destination");
    let len = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    assert_eq!(
        ip.len(),
        40 + len,
        "payload length is what follows the header"
    );
    &ip[40..]
}

/// An ICMPv6 destination unreachable of `code` from `from` quoting the
/// request's IPv6 packet (cut at 1232 bytes), with a valid checksum.
fn check_unreachable(reply: &[u8], request: &[u8], code: u8, from: Ipv6Addr) {
    let client = v6(CLIENT);
    let icmp = check_ipv6(reply, request, ip_proto::ICMPV6, from, client);
    assert_eq!(icmp[0], icmp6_type::DEST_UNREACHABLE, "type");
    assert_eq!(icmp[1], code, "code");
    assert_eq!(&icmp[4..8], &[0; 4], "unused word");
    let original = &request[ETH..];
    let quoted = original.len().min(1232);
    assert_eq!(
        &icmp[8..],
        &original[..quoted],
        "the quote: the packet, cut at 1232 bytes"
    );
    let mut zeroed = icmp.to_vec();
    zeroed[2..4].copy_from_slice(&[0, 0]);
    let want = ipv6_l4_checksum(from, client, ip_proto::ICMPV6, &zeroed);
    assert_eq!(
        u16::from_be_bytes([icmp[2], icmp[3]]),
        want,
        "ICMPv6 checksum"
    );
}

/// A TCP RST from the request's destination, as RFC 793 builds it.
fn check_reset(reply: &[u8], request: &[u8], seq: u32, ack: u32, flags: u8) {
    let (client, server) = (v6(CLIENT), v6(SERVER));
    let tcp = check_ipv6(reply, request, ip_proto::TCP, server, client);
    assert_eq!(tcp.len(), 20, "a bare TCP header");
    let orig = &request[ETH + 40..];
    assert_eq!(
        &tcp[0..2],
        &orig[2..4],
        "source port: the request's destination port"
    );
    assert_eq!(
        &tcp[2..4],
        &orig[0..2],
        "destination port: the request's source port"
    );
    assert_eq!(
        u32::from_be_bytes(tcp[4..8].try_into().unwrap()),
        seq,
        "sequence"
    );
    assert_eq!(
        u32::from_be_bytes(tcp[8..12].try_into().unwrap()),
        ack,
        "acknowledgment"
    );
    assert_eq!(tcp[12], 5 << 4, "data offset");
    assert_eq!(tcp[13], flags, "flags");
    let mut zeroed = tcp.to_vec();
    zeroed[16..18].copy_from_slice(&[0, 0]);
    let want = ipv6_l4_checksum(server, client, ip_proto::TCP, &zeroed);
    assert_eq!(u16::from_be_bytes([tcp[16], tcp[17]]), want, "TCP checksum");
}

#[test]
fn reject6_answers_with_icmp6_and_resets() {
    lab(
        "answers",
        |_| {},
        |dp| {
            let server = v6(SERVER);
            for (with, code) in [
                ("", 4),
                ("--reject-with icmp6-port-unreachable", 4),
                ("--reject-with port-unreach", 4),
                ("--reject-with icmp6-no-route", 0),
                ("--reject-with no-route", 0),
                ("--reject-with icmp6-adm-prohibited", 1),
                ("--reject-with adm-prohibited", 1),
                ("--reject-with icmp6-addr-unreachable", 3),
                ("--reject-with addr-unreach", 3),
                ("--reject-with icmp6-policy-fail", 5),
                ("--reject-with icmp6-reject-route", 6),
            ] {
                let rule = format!("-A INPUT -p udp --dport 53 -j REJECT {with}");
                apply(dp, &[rule.as_str()]);
                let request = udp(53, b"query").build();
                let rejected = stat(dp, stats::REJECTED);
                let (action, reply) = run(dp, &request, 0);
                assert_eq!(action, XDP_TX, "{rule}: answered");
                check_unreachable(&reply, &request, code, server);
                assert_eq!(stat(dp, stats::REJECTED), rejected + 1, "{rule}: counted");
            }
            apply(dp, &["-A INPUT -j REJECT"]);
            // A ping is answered too (informational), an odd length quoted.
            let ping = from_client(FrameBuilder::icmp6(
                v6(CLIENT),
                server,
                icmp6_type::ECHO_REQUEST,
                0,
                [0, 1, 0, 1],
                b"odd",
            ))
            .build();
            let (action, reply) = run(dp, &ping, 0);
            assert_eq!(action, XDP_TX, "a ping is rejected with an error");
            check_unreachable(&reply, &ping, 4, server);
            // A big datagram: the quote stops at the minimum MTU.
            let big = udp(9, &[0xab; 1400]).build();
            let (action, reply) = run(dp, &big, 0);
            assert_eq!(action, XDP_TX);
            assert_eq!(reply.len(), ETH + 1280, "the error fills the minimum MTU");
            check_unreachable(&reply, &big, 4, server);
            // A VLAN-tagged frame keeps its tag.
            let tagged = udp(9, b"x").vlan(7).build();
            let (action, reply) = run(dp, &tagged, 0);
            assert_eq!(action, XDP_TX);
            assert_eq!(&reply[12..18], &tagged[12..18], "the VLAN tag stays");

            apply(
                dp,
                &["-A INPUT -p tcp --dport 22 -j REJECT --reject-with tcp-reset"],
            );
            let syn = tcp(22, tcp_flags::SYN, 1000, &[]).build();
            let (action, reply) = run(dp, &syn, 0);
            assert_eq!(action, XDP_TX, "a SYN is reset");
            check_reset(&reply, &syn, 0, 1001, tcp_flags::RST | tcp_flags::ACK);
            let data = tcp(22, tcp_flags::PSH, 5000, b"hello").build();
            let (action, reply) = run(dp, &data, 0);
            assert_eq!(action, XDP_TX);
            check_reset(&reply, &data, 0, 5005, tcp_flags::RST | tcp_flags::ACK);
            let mut ack = tcp(22, tcp_flags::ACK, 7000, &[]).build();
            // Acknowledgment number 0x01020304, the checksum made right again.
            ack[ETH + 40 + 8..ETH + 40 + 12].copy_from_slice(&[1, 2, 3, 4]);
            ack[ETH + 40 + 16..ETH + 40 + 18].copy_from_slice(&[0, 0]);
            let sum = ipv6_l4_checksum(v6(CLIENT), server, ip_proto::TCP, &ack[ETH + 40..]);
            ack[ETH + 40 + 16..ETH + 40 + 18].copy_from_slice(&sum.to_be_bytes());
            let (action, reply) = run(dp, &ack, 0);
            assert_eq!(action, XDP_TX);
            check_reset(&reply, &ack, 0x0102_0304, 0, tcp_flags::RST);
        },
    );
}

/// The ICMPv6 limits as the commands write them (here by hand): each
/// source address, all 128 bits of it, has a bucket of 6 errors (one per
/// ratelimit ms after); the held back are dropped and counted; a reset is
/// no ICMPv6 error; not limited, every one is answered.
#[test]
fn reject6_errors_obey_the_icmpv6_limits() {
    lab(
        "limits",
        |_| {},
        |dp| {
            // A budget that never runs out, 10 s a token per host (a new host
            // counts as last answered 60 s ago: 6 tokens, its bucket full).
            dp.set_icmp_limits(&netbeast_common::IcmpLimits {
                ratelimit_ms: 0,
                ratemask: 0,
                msgs_per_sec: 1_000_000,
                msgs_burst: 1_000_000,
            })
            .unwrap();
            dp.set_icmp6_limit(netbeast_common::icmp6_limit(Some(10_000)))
                .unwrap();
            apply(
                dp,
                &[
                    "-A INPUT -p udp --dport 9 -j REJECT",
                    "-A INPUT -p tcp --dport 22 -j REJECT --reject-with tcp-reset",
                ],
            );
            let from = |src: &str| {
                from_client(FrameBuilder::udp6_with(v6(src), 40000, v6(SERVER), 9, b"x")).build()
            };
            let answered = |dp: &mut Dataplane, src: &str, n: usize| {
                (0..n)
                    .filter(|_| run(dp, &from(src), 0).0 == XDP_TX)
                    .count()
            };
            let limited = stat(dp, stats::REJECT_RATE_LIMITED);
            assert_eq!(answered(dp, CLIENT, 10), 6, "a host's burst of 6");
            assert_eq!(
                stat(dp, stats::REJECT_RATE_LIMITED),
                limited + 4,
                "the errors held back are counted"
            );
            // Another host, differing in the last bits only: its own bucket.
            assert_eq!(answered(dp, "fd00:16::3", 10), 6, "another host's burst");
            // The empty bucket does not hold back resets.
            let syn = tcp(22, tcp_flags::SYN, 1000, &[]).build();
            assert_eq!(run(dp, &syn, 0).0, XDP_TX, "a reset is no ICMPv6 error");
            // Type 1 out of net.ipv6.icmp.ratemask: no limit.
            dp.set_icmp6_limit(netbeast_common::icmp6_limit(None))
                .unwrap();
            assert_eq!(answered(dp, CLIENT, 10), 10, "not limited");
            // A ratelimit of 0: no per-host limit, and the bucket left
            // empty (the kernel's inet_peer_xrlim_allow with a period 0).
            dp.set_icmp6_limit(netbeast_common::icmp6_limit(Some(0)))
                .unwrap();
            assert_eq!(answered(dp, "fd00:16::4", 10), 10, "no per-host limit");
            dp.set_icmp6_limit(netbeast_common::icmp6_limit(Some(10_000)))
                .unwrap();
            assert_eq!(
                answered(dp, "fd00:16::4", 1),
                0,
                "a host answered without a per-host limit has no token"
            );
        },
    );
}

#[test]
fn reject6_stays_silent() {
    lab(
        "silent",
        |_| {},
        |dp| {
            apply(dp, &["-A INPUT -j REJECT"]);
            let client = v6(CLIENT);
            let cases: Vec<(&str, Vec<u8>)> = vec![
                (
                    "to a multicast address",
                    from_client(FrameBuilder::udp6_with(client, 1, v6("ff02::1"), 9, b"x")).build(),
                ),
                (
                    "to a link-level multicast frame",
                    udp(9, b"x").dst_mac([0x33, 0x33, 0, 0, 0, 1]).build(),
                ),
                (
                    "from the unspecified address",
                    from_client(FrameBuilder::udp6_with(v6("::"), 1, v6(SERVER), 9, b"x")).build(),
                ),
                (
                    "an ICMPv6 error",
                    from_client(FrameBuilder::icmp6_error(
                        client,
                        v6(SERVER),
                        icmp6_type::DEST_UNREACHABLE,
                        4,
                        &udp(9, b"x").build_ipv6(),
                    ))
                    .build(),
                ),
                (
                    "a redirect",
                    from_client(FrameBuilder::icmp6(
                        client,
                        v6(SERVER),
                        icmp6_type::REDIRECT,
                        0,
                        [0; 4],
                        &[0; 32],
                    ))
                    .build(),
                ),
                (
                    "a later fragment",
                    udp(9, b"xxxxxxxx").ipv6_fragment(8, false).build(),
                ),
                {
                    let mut bad = udp(9, b"x").build();
                    bad[ETH + 40 + 8] ^= 1;
                    ("a bad UDP checksum", bad)
                },
            ];
            for (what, frame) in cases {
                let silent = stat(dp, stats::REJECT_SILENT);
                let (action, _) = run(dp, &frame, 0);
                assert_eq!(action, XDP_DROP, "{what}: dropped");
                assert_eq!(
                    stat(dp, stats::REJECT_SILENT),
                    silent + 1,
                    "{what}: counted silent"
                );
            }
            apply(dp, &["-A INPUT -p tcp -j REJECT --reject-with tcp-reset"]);
            let silent = stat(dp, stats::REJECT_SILENT);
            let (action, _) = run(dp, &tcp(22, tcp_flags::RST, 1, &[]).build(), 0);
            assert_eq!(action, XDP_DROP, "a RST is never answered");
            assert_eq!(stat(dp, stats::REJECT_SILENT), silent + 1);
        },
    );
}

/// REJECT in FORWARD answers from the address the host would send from
/// to the packet's source (icmp6_send()'s source selection), here the
/// address of the interface the packet came in by.
#[test]
fn reject6_in_forward_answers_from_the_route_back() {
    lab(
        "fwd",
        |ns| {
            ns.ip(&[
                "link", "add", "nbtr0", "type", "veth", "peer", "name", "nbtr1",
            ])
            .unwrap();
            for iface in ["nbtr0", "nbtr1"] {
                ns.ip(&["link", "set", iface, "up"]).unwrap();
            }
            ns.ip(&["-6", "addr", "add", "fd09::1/64", "dev", "nbtr0", "nodad"])
                .unwrap();
            ns.ip(&["-6", "addr", "add", "fd08::1/64", "dev", "nbtr1", "nodad"])
                .unwrap();
            ns.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
        },
        |dp| {
            apply(
                dp,
                &["-A FORWARD -j REJECT --reject-with icmp6-adm-prohibited"],
            );
            // SAFETY: a NUL-terminated name; this thread is in the lab's
            // namespace.
            let ifindex = unsafe { libc::if_nametoindex(c"nbtr1".as_ptr()) };
            assert_ne!(ifindex, 0, "nbtr1 exists in the lab");
            let request = from_client(FrameBuilder::udp6_with(
                v6("fd08::5"),
                1,
                v6("fd09::5"),
                9,
                b"x",
            ))
            .build();
            let (action, reply) = run(dp, &request, ifindex);
            assert_eq!(action, XDP_TX, "answered");
            let icmp = check_ipv6(
                &reply,
                &request,
                ip_proto::ICMPV6,
                v6("fd08::1"),
                v6("fd08::5"),
            );
            assert_eq!((icmp[0], icmp[1]), (1, 1));
            let mut zeroed = icmp.to_vec();
            zeroed[2..4].copy_from_slice(&[0, 0]);
            let want = ipv6_l4_checksum(v6("fd08::1"), v6("fd08::5"), ip_proto::ICMPV6, &zeroed);
            assert_eq!(u16::from_be_bytes([icmp[2], icmp[3]]), want, "checksum");
        },
    );
}

// ---------------------------------------------------------------- OUTPUT

/// TC's answers: `TC_ACT_SHOT` for a silent drop, `TC_ACT_REDIRECT` for the
/// answer handed back to the host (the test run does not send it).
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

/// A frame the host (SERVER) sends to CLIENT.
fn from_server(b: FrameBuilder) -> FrameBuilder {
    b.src_mac(SERVER_MAC).dst_mac(CLIENT_MAC)
}

fn run_output(dp: &mut Dataplane, frame: &[u8]) -> (u32, Vec<u8>) {
    let out = dp.test_run_tc_egress(frame).unwrap();
    (out.action, out.frame)
}

/// REJECT in OUTPUT for IPv6: the host's own packet becomes the answer
/// ip6tables gives it, handed back to the host. As measured with
/// ip6tables, the ICMPv6 error goes from the sender's address to itself,
/// the RST from the address the segment was for; each is byte-checked
/// with its checksum recomputed. The answer crosses OUTPUT itself: a chain
/// that rejects everything swallows it (no error about an error), as
/// ip6tables' does.
#[test]
fn reject6_in_output_answers_the_hosts_own_packets() {
    lab(
        "output",
        |_| {},
        |dp| {
            let (client, server) = (v6(CLIENT), v6(SERVER));
            for (with, code) in [
                ("", 4),
                ("--reject-with icmp6-adm-prohibited", 1),
                ("--reject-with icmp6-no-route", 0),
                ("--reject-with icmp6-addr-unreachable", 3),
            ] {
                let rule = format!("-A OUTPUT -p udp --dport 53 -j REJECT {with}");
                apply(dp, &[rule.as_str()]);
                let request =
                    from_server(FrameBuilder::udp6_with(server, 40000, client, 53, b"query"))
                        .build();
                let rejected = stat(dp, stats::REJECTED);
                let (action, reply) = run_output(dp, &request);
                assert_eq!(action, TC_ACT_REDIRECT, "{rule}: answered");
                let icmp = check_ipv6(&reply, &request, ip_proto::ICMPV6, server, server);
                assert_eq!((icmp[0], icmp[1]), (1, code), "{rule}: type and code");
                assert_eq!(&icmp[4..8], &[0; 4], "unused word");
                assert_eq!(&icmp[8..], &request[ETH..], "the whole packet quoted");
                let mut zeroed = icmp.to_vec();
                zeroed[2..4].copy_from_slice(&[0, 0]);
                let want = ipv6_l4_checksum(server, server, ip_proto::ICMPV6, &zeroed);
                assert_eq!(u16::from_be_bytes([icmp[2], icmp[3]]), want, "checksum");
                assert_eq!(stat(dp, stats::REJECTED), rejected + 1, "{rule}: counted");
            }
            // A big datagram: the quote stops at the minimum MTU.
            let big = from_server(FrameBuilder::udp6_with(
                server,
                1,
                client,
                53,
                &[0xcd; 1400],
            ))
            .build();
            let (action, reply) = run_output(dp, &big);
            assert_eq!(action, TC_ACT_REDIRECT);
            assert_eq!(reply.len(), ETH + 1280, "the error fills the minimum MTU");
            let icmp = check_ipv6(&reply, &big, ip_proto::ICMPV6, server, server);
            assert_eq!(&icmp[8..], &big[ETH..ETH + 1232], "the quote, cut");
            let mut zeroed = icmp.to_vec();
            zeroed[2..4].copy_from_slice(&[0, 0]);
            let want = ipv6_l4_checksum(server, server, ip_proto::ICMPV6, &zeroed);
            assert_eq!(u16::from_be_bytes([icmp[2], icmp[3]]), want, "checksum");

            apply(
                dp,
                &["-A OUTPUT -p tcp --dport 22 -j REJECT --reject-with tcp-reset"],
            );
            let syn = from_server(FrameBuilder::tcp6_segment(
                server,
                40000,
                client,
                22,
                tcp_flags::SYN,
                1000,
                &[],
            ))
            .build();
            let (action, reply) = run_output(dp, &syn);
            assert_eq!(action, TC_ACT_REDIRECT, "a SYN is reset");
            let tcp = check_ipv6(&reply, &syn, ip_proto::TCP, client, server);
            assert_eq!(tcp.len(), 20, "a bare TCP header");
            assert_eq!(&tcp[0..2], &22u16.to_be_bytes(), "from the port it was for");
            assert_eq!(&tcp[2..4], &40000u16.to_be_bytes(), "to the sender's");
            assert_eq!(&tcp[4..8], &[0; 4], "sequence 0");
            assert_eq!(&tcp[8..12], &1001u32.to_be_bytes(), "acknowledges the SYN");
            assert_eq!(tcp[13], tcp_flags::RST | tcp_flags::ACK, "flags");
            let mut zeroed = tcp.to_vec();
            zeroed[16..18].copy_from_slice(&[0, 0]);
            let want = ipv6_l4_checksum(client, server, ip_proto::TCP, &zeroed);
            assert_eq!(u16::from_be_bytes([tcp[16], tcp[17]]), want, "TCP checksum");

            // Everything rejected: the answer is rejected in turn, and no
            // error answers an error.
            apply(dp, &["-A OUTPUT -j REJECT"]);
            let request =
                from_server(FrameBuilder::udp6_with(server, 40000, client, 53, b"q")).build();
            let silent = stat(dp, stats::REJECT_SILENT);
            let (action, _) = run_output(dp, &request);
            assert_eq!(
                action, TC_ACT_SHOT,
                "the answer swallowed by its own OUTPUT"
            );
            assert_eq!(stat(dp, stats::REJECT_SILENT), silent + 1, "counted silent");
            // Unless OUTPUT lets ICMPv6 out, as `-o lo` sees the answer.
            let lo = netbeast::compile::Interface {
                ifindex: 1,
                name: "lo".to_string(),
            };
            let rules = ruleset(&[
                "-A OUTPUT -o lo -p ipv6-icmp -j ACCEPT",
                "-A OUTPUT -j REJECT",
            ]);
            dp.apply(&rules, &[lo]).unwrap();
            let (action, _) = run_output(dp, &request);
            assert_eq!(action, TC_ACT_REDIRECT, "the answer leaves by lo");
            // Nothing answers a multicast destination.
            let multicast =
                from_server(FrameBuilder::udp6_with(server, 1, v6("ff02::1"), 53, b"q")).build();
            let (action, _) = run_output(dp, &multicast);
            assert_eq!(action, TC_ACT_SHOT, "a multicast destination: no answer");
        },
    );
}
