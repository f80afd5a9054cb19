//! Program tests of the IPv6 forwarding fast path (issue 16): an accepted
//! forwarded packet whose next hop the FIB knows leaves by XDP with its
//! MACs from the FIB and its hop limit − 1; without a known neighbour, or
//! with a hop limit the kernel must answer, it goes to the kernel
//! untouched. And ip6tables' nat on that path, checksums checked; and
//! ip6tables' `-m addrtype` on the router's INPUT and FORWARD.
//!
//! Needs root. Run: `cargo test -p netbeast --test forward6`.

use std::net::Ipv6Addr;

use netbeast::{
    loader::Dataplane,
    local_routes::local_routes6,
    netns::{Netns, require_root},
    packet::{FrameBuilder, ip_proto, ipv6_l4_checksum},
    rules::{command, model::Ruleset, parse},
};
use netbeast_common::{iface_path, stats};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;
const NEIGHBOUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x09, 0x05];

fn v6(a: &str) -> Ipv6Addr {
    a.parse().unwrap()
}

fn ruleset(lines: &[&str]) -> Ruleset {
    let mut rules = Ruleset::default();
    for line in lines {
        let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let cmd = parse::parse_ip6tables_args(&args).unwrap();
        command::apply(&mut rules, &cmd).unwrap();
    }
    rules
}

/// A router namespace: nbtf1 (fd08::1/64, where packets come in) and
/// nbtf0 (fd09::1/64, the way out), forwarding on, the neighbours
/// `NEIGHBOUR_MAC` fd09::5 and fd08::5 known. Returns it with nbtf0's MAC.
fn router(tag: &str) -> (Netns, Vec<u8>) {
    require_root();
    let ns = Netns::new(tag).unwrap();
    ns.ip(&[
        "link", "add", "nbtf0", "type", "veth", "peer", "name", "nbtf1",
    ])
    .unwrap();
    for iface in ["nbtf0", "nbtf1"] {
        ns.ip(&["link", "set", iface, "up"]).unwrap();
    }
    ns.ip(&["-6", "addr", "add", "fd09::1/64", "dev", "nbtf0", "nodad"])
        .unwrap();
    ns.ip(&["-6", "addr", "add", "fd08::1/64", "dev", "nbtf1", "nodad"])
        .unwrap();
    ns.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
    for (addr, dev) in [("fd09::5", "nbtf0"), ("fd08::5", "nbtf1")] {
        ns.ip(&[
            "-6",
            "neigh",
            "replace",
            addr,
            "lladdr",
            "02:00:00:00:09:05",
            "dev",
            dev,
            "nud",
            "permanent",
        ])
        .unwrap();
    }
    let link = ns.ip(&["-o", "link", "show", "nbtf0"]).unwrap();
    let out_mac: Vec<u8> = link
        .split("link/ether ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    (ns, out_mac)
}

/// A private data plane in the router's namespace (the caller's thread
/// there) with both interfaces on the fast path, and (nbtf0, nbtf1)'s
/// indexes.
fn dataplane() -> (Dataplane, u32, u32) {
    let mut dp = Dataplane::load_private().unwrap();
    // SAFETY: NUL-terminated names; the caller's thread is in the namespace.
    let (out, input) = unsafe {
        (
            libc::if_nametoindex(c"nbtf0".as_ptr()),
            libc::if_nametoindex(c"nbtf1".as_ptr()),
        )
    };
    dp.set_interface_paths(&[
        (out, iface_path::FORWARD_REDIRECT),
        (input, iface_path::FORWARD_REDIRECT),
    ])
    .unwrap();
    (dp, out, input)
}

#[test]
fn ipv6_fast_path_rewrites_and_redirects() {
    let (ns, out_mac) = router("fwd6");
    ns.in_netns(move || {
        let (mut dp, _, input) = dataplane();
        dp.apply(
            &ruleset(&["-P FORWARD DROP", "-A FORWARD -p udp --dport 53 -j ACCEPT"]),
            &[],
        )
        .unwrap();
        let frame = |to: &str, dport: u16, hops: u8| {
            FrameBuilder::udp6_with(v6("fd08::5"), 1000, v6(to), dport, b"query")
                .hop_limit(hops)
                .build()
        };
        let fast = |dp: &Dataplane| dp.stats().unwrap()[stats::FAST_PATH as usize];

        let before = fast(&dp);
        let request = frame("fd09::5", 53, 64);
        let run = dp.test_run_xdp(&request, input).unwrap();
        assert_eq!(run.action, XDP_REDIRECT, "accepted, neighbour known");
        let reply = run.frame;
        assert_eq!(&reply[..6], &NEIGHBOUR_MAC, "destination MAC from the FIB");
        assert_eq!(&reply[6..12], out_mac.as_slice(), "source MAC: the way out");
        assert_eq!(reply[14 + 7], 63, "hop limit - 1");
        assert_eq!(&reply[12..14 + 7], &request[12..14 + 7], "header unchanged");
        assert_eq!(&reply[14 + 8..], &request[14 + 8..], "the rest unchanged");
        assert_eq!(fast(&dp), before + 1, "counted");

        let unknown = frame("fd09::6", 53, 64);
        let run = dp.test_run_xdp(&unknown, input).unwrap();
        assert_eq!(run.action, XDP_PASS, "no neighbour yet: the kernel's");
        assert_eq!(run.frame, unknown, "untouched");
        let last_hop = frame("fd09::5", 53, 1);
        let run = dp.test_run_xdp(&last_hop, input).unwrap();
        assert_eq!(run.action, XDP_PASS, "hop limit 1: the kernel answers it");
        assert_eq!(run.frame, last_hop, "untouched");
        let run = dp.test_run_xdp(&frame("fd09::5", 54, 64), input).unwrap();
        assert_eq!(run.action, XDP_DROP, "the FORWARD policy");
        assert_eq!(fast(&dp), before + 1);
    })
    .unwrap();
}

/// ip6tables' mangle `-j HL` on the fast path: the frame leaves with the
/// hop limit the chains gave it, as ip6tables' would (PREROUTING's value
/// lowered by the forwarding, FORWARD's and POSTROUTING's as set:
/// `--hl-inc 1` in FORWARD hides the router, 0 leaves as 0, 255 as 255),
/// and a hop
/// limit of 1 given in PREROUTING goes to the kernel, which answers it.
#[test]
fn hop_limits_set_in_mangle_leave_by_the_fast_path() {
    let (ns, _) = router("fwd6-hl");
    ns.in_netns(move || {
        let (mut dp, _, input) = dataplane();
        dp.apply(
            &ruleset(&[
                "-t mangle -A FORWARD -p udp --dport 53 -j HL --hl-inc 1",
                "-t mangle -A POSTROUTING -p udp --dport 54 -j HL --hl-set 1",
                "-t mangle -A PREROUTING -p udp --dport 55 -j HL --hl-set 10",
                "-t mangle -A POSTROUTING -p udp --dport 56 -j HL --hl-set 0",
                "-t mangle -A PREROUTING -p udp --dport 57 -j HL --hl-set 1",
                "-t mangle -A PREROUTING -p udp --dport 58 -j HL --hl-set 200",
                "-t mangle -A FORWARD -p udp --dport 58 -j HL --hl-dec 50",
                "-t mangle -A POSTROUTING -p udp --dport 59 -j HL --hl-set 255",
            ]),
            &[],
        )
        .unwrap();
        let frame = |dport: u16| {
            FrameBuilder::udp6_with(v6("fd08::5"), 1000, v6("fd09::5"), dport, b"query")
                .hop_limit(64)
                .build()
        };
        for (dport, hops) in [(53, 64), (54, 1), (55, 9), (56, 0), (58, 149), (59, 255)] {
            let request = frame(dport);
            let run = dp.test_run_xdp(&request, input).unwrap();
            assert_eq!(run.action, XDP_REDIRECT, "port {dport}: the fast path");
            assert_eq!(run.frame[14 + 7], hops, "port {dport}: the hop limit");
            assert_eq!(
                &run.frame[14 + 8..],
                &request[14 + 8..],
                "port {dport}: the rest"
            );
        }
        let request = frame(57);
        let run = dp.test_run_xdp(&request, input).unwrap();
        assert_eq!(
            run.action, XDP_PASS,
            "hop limit 1 from PREROUTING: the kernel's"
        );
        assert_eq!(run.frame[14 + 7], 1, "the hop limit PREROUTING gave");
    })
    .unwrap();
}

/// The endpoints of an IPv6 frame (Ethernet, no extension headers) and
/// whether its L4 checksum (TCP, UDP, ICMPv6: over the pseudo-header) is
/// valid.
#[derive(Debug, PartialEq, Eq)]
struct Wire6 {
    src: Ipv6Addr,
    sport: u16,
    dst: Ipv6Addr,
    dport: u16,
    l4_ok: bool,
}

fn wire6(frame: &[u8]) -> Wire6 {
    let ip = &frame[14..];
    let addr = |at: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&ip[at..at + 16]).unwrap());
    let (src, dst, l4) = (addr(8), addr(24), &ip[40..]);
    let ported = matches!(ip[6], ip_proto::TCP | ip_proto::UDP);
    let port = |at: usize| {
        if ported {
            u16::from_be_bytes([l4[at], l4[at + 1]])
        } else {
            0
        }
    };
    Wire6 {
        src,
        sport: port(0),
        dst,
        dport: port(2),
        // (0xffff: the sum over a valid segment, checksum included.)
        l4_ok: ipv6_l4_checksum(src, dst, ip[6], l4) == 0xffff,
    }
}

fn endpoints(src: &str, sport: u16, dst: &str, dport: u16) -> Wire6 {
    Wire6 {
        src: v6(src),
        sport,
        dst: v6(dst),
        dport,
        l4_ok: true,
    }
}

/// ip6tables' nat in the XDP program: DNAT before the routing decision,
/// MASQUERADE before the fast path's redirect, the replies translated
/// back, ICMPv6 errors about a translated connection with their quoted
/// packet translated too — every checksum valid (TCP, UDP and ICMPv6 sum
/// the addresses in their pseudo-header), each translation decided once.
#[test]
fn ipv6_nat_rewrites_with_valid_checksums() {
    let (ns, _) = router("nat6");
    ns.in_netns(move || {
        let (mut dp, out, input) = dataplane();
        dp.set_interface_addresses6(&[(out, v6("fd09::1")), (input, v6("fd08::1"))])
            .unwrap();
        dp.apply(
            &ruleset(&[
                "-t nat -A PREROUTING -p tcp --dport 80 -j DNAT --to-destination [fd09::5]:8080",
                "-t nat -A PREROUTING -p udp --dport 53 -j DNAT --to-destination [fd09::5]:5353",
                "-t nat -A PREROUTING -p ipv6-icmp --icmpv6-type echo-request -j DNAT --to-destination fd09::5",
                "-t nat -A POSTROUTING -d fd09::/64 -j MASQUERADE",
            ]),
            &[],
        )
        .unwrap();
        let run = |dp: &mut Dataplane, frame: &[u8], ingress: u32| {
            let run = dp.test_run_xdp(frame, ingress).unwrap();
            assert_eq!(run.action, XDP_REDIRECT, "forwarded by the fast path");
            run.frame
        };
        let before = dp.stats().unwrap();

        // TCP: the destination DNATed at ingress, the source masqueraded
        // on the way out (its port kept: free); the reply back the other
        // way, both halves undone.
        let segment = |src: &str, sport, dst: &str, dport, flags, payload: &[u8]| {
            FrameBuilder::tcp6_segment(v6(src), sport, v6(dst), dport, flags, 1, payload).build()
        };
        let syn = segment("fd08::5", 1000, "fd08::1", 80, 0x02, b"");
        let out_syn = run(&mut dp, &syn, input);
        assert_eq!(wire6(&out_syn), endpoints("fd09::1", 1000, "fd09::5", 8080));
        let syn_ack = segment("fd09::5", 8080, "fd09::1", 1000, 0x12, b"");
        let back = run(&mut dp, &syn_ack, out);
        assert_eq!(wire6(&back), endpoints("fd08::1", 80, "fd08::5", 1000));
        let ack = segment("fd08::5", 1000, "fd08::1", 80, 0x10, b"GET / HTTP/1.0\r\n\r\n");
        let out_ack = run(&mut dp, &ack, input);
        assert_eq!(wire6(&out_ack), endpoints("fd09::1", 1000, "fd09::5", 8080));

        // UDP, and an ICMPv6 port unreachable about it from the server:
        // as netfilter translates one, it looks like an answer from where
        // the client sent the datagram, which it quotes as the client
        // sent it.
        let query = FrameBuilder::udp6_with(v6("fd08::5"), 2000, v6("fd08::1"), 53, b"query").build();
        let sent = run(&mut dp, &query, input);
        assert_eq!(wire6(&sent), endpoints("fd09::1", 2000, "fd09::5", 5353));
        let unreachable =
            FrameBuilder::icmp6_error(v6("fd09::5"), v6("fd09::1"), 1, 4, &sent[14..]).build();
        let error = run(&mut dp, &unreachable, out);
        let w = wire6(&error);
        assert_eq!((w.src, w.dst, w.l4_ok), (v6("fd08::1"), v6("fd08::5"), true));
        assert_eq!(
            wire6(&[&error[..14], &error[14 + 48..]].concat()),
            endpoints("fd08::5", 2000, "fd08::1", 53),
            "the quoted datagram as the client sent it, its checksum valid"
        );

        // An ICMPv6 echo: the addresses only (its checksum covers them).
        let echo =
            FrameBuilder::icmp6(v6("fd08::5"), v6("fd08::1"), 128, 0, [0, 7, 0, 1], b"ping").build();
        let w = wire6(&run(&mut dp, &echo, input));
        assert_eq!((w.src, w.dst, w.l4_ok), (v6("fd09::1"), v6("fd09::5"), true));

        let after = dp.stats().unwrap();
        let delta = |n: u32| after[n as usize] - before[n as usize];
        assert_eq!(delta(stats::NAT_DNAT), 3, "one DNAT per connection");
        assert_eq!(delta(stats::NAT_SNAT), 3, "one MASQUERADE per connection");
        let listed = dp.conntrack_entries6().unwrap();
        assert_eq!(listed.len(), 3, "{listed:?}");
    })
    .unwrap();
}

/// ip6tables' `-m addrtype` (issue 16 / 18) as xt_addrtype's `match_type6`
/// gives it — each type of the mask a test that must hold (MULTICAST,
/// UNICAST, UNSPEC from the address, LOCAL and UNREACHABLE from the
/// routes `local_routes6` reads), `!` and `--limit-iface-in` — on frames
/// from fd08::5 into the router, whose `lo` has fd0c::1 besides.
#[test]
fn ipv6_addrtype_local_unicast_multicast() {
    let (ns, _) = router("at6");
    ns.ip(&["link", "set", "lo", "up"]).unwrap();
    ns.ip(&["-6", "addr", "add", "fd0c::1/128", "dev", "lo", "nodad"])
        .unwrap();
    ns.in_netns(move || {
        let (mut dp, _, input) = dataplane();
        dp.set_address_types6(&local_routes6().unwrap()).unwrap();
        dp.apply(
            &ruleset(&[
                "-A INPUT -p udp --dport 1 -m addrtype --dst-type LOCAL -j DROP",
                "-A INPUT -p udp --dport 2 -m addrtype ! --dst-type LOCAL -j DROP",
                "-A INPUT -p udp --dport 3 -m addrtype --dst-type MULTICAST -j DROP",
                "-A INPUT -p udp --dport 4 -m addrtype --dst-type LOCAL --limit-iface-in -j DROP",
                "-A INPUT -p udp --dport 5 -m addrtype --src-type UNICAST --dst-type UNICAST -j DROP",
                // Both tests must hold: no address is both.
                "-A INPUT -p udp --dport 6 -m addrtype --dst-type MULTICAST,LOCAL -j DROP",
                "-A INPUT -p udp --dport 7 -m addrtype --src-type UNSPEC -j DROP",
                "-A INPUT -p udp --dport 8 -m addrtype ! --src-type LOCAL --dst-type UNICAST,LOCAL -j DROP",
                "-A FORWARD -p udp --dport 9 -m addrtype --dst-type UNICAST ! --src-type LOCAL -j DROP",
                "-A FORWARD -p udp --dport 10 -m addrtype --dst-type LOCAL -j DROP",
                "-A FORWARD -p udp --dport 11 -m addrtype ! --dst-type UNREACHABLE -j DROP",
            ]),
            &[],
        )
        .unwrap();
        let run = |dp: &mut Dataplane, from: &str, to: &str, dport: u16| {
            let frame = FrameBuilder::udp6_with(v6(from), 1000, v6(to), dport, b"x").build();
            dp.test_run_xdp(&frame, input).unwrap().action
        };
        let cases: [(&str, &str, u16, u32); 20] = [
            ("fd08::5", "fd08::1", 1, XDP_DROP),
            ("fd08::5", "fd0c::1", 1, XDP_DROP),
            ("fd08::5", "ff02::1", 1, XDP_PASS),
            ("fd08::5", "fd08::1", 2, XDP_PASS),
            ("fd08::5", "ff02::1", 2, XDP_DROP),
            ("fd08::5", "ff02::1", 3, XDP_DROP),
            ("fd08::5", "fd08::1", 3, XDP_PASS),
            // The route of fd08::1 goes out of the input interface; that
            // of fd0c::1 out of lo.
            ("fd08::5", "fd08::1", 4, XDP_DROP),
            ("fd08::5", "fd0c::1", 4, XDP_PASS),
            ("fd08::5", "fd08::1", 5, XDP_DROP),
            ("fd08::5", "ff02::1", 5, XDP_PASS),
            ("::", "ff02::1", 5, XDP_PASS),
            ("fd08::5", "ff02::1", 6, XDP_PASS),
            ("fd08::5", "fd08::1", 6, XDP_PASS),
            ("::", "ff02::1", 7, XDP_DROP),
            ("fd08::5", "ff02::1", 7, XDP_PASS),
            ("fd08::5", "fd08::1", 8, XDP_DROP),
            // Forwarded (accepted: redirected to the known neighbour).
            ("fd08::5", "fd09::5", 9, XDP_DROP),
            ("fd08::5", "fd09::5", 10, XDP_REDIRECT),
            ("fd08::5", "fd09::5", 11, XDP_DROP),
        ];
        let got: Vec<_> = cases
            .iter()
            .map(|&(from, to, dport, _)| (from, to, dport, run(&mut dp, from, to, dport)))
            .collect();
        let want: Vec<_> = cases.to_vec();
        assert_eq!(got, want, "(source, destination, port, XDP action)");
    })
    .unwrap();
}
