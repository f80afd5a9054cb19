//! Program test of the IPv6 forwarding fast path (issue 16): an accepted
//! forwarded packet whose next hop the FIB knows leaves by XDP with its
//! MACs from the FIB and its hop limit − 1; without a known neighbour, or
//! with a hop limit the kernel must answer, it goes to the kernel
//! untouched.
//!
//! Needs root. Run: `cargo test -p netbeast --test forward6`.

use std::net::Ipv6Addr;

use netbeast::{
    loader::Dataplane,
    netns::{Netns, require_root},
    packet::FrameBuilder,
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

#[test]
fn ipv6_fast_path_rewrites_and_redirects() {
    require_root();
    let ns = Netns::new("fwd6").unwrap();
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
    ns.ip(&[
        "-6",
        "neigh",
        "replace",
        "fd09::5",
        "lladdr",
        "02:00:00:00:09:05",
        "dev",
        "nbtf0",
        "nud",
        "permanent",
    ])
    .unwrap();
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
    ns.in_netns(move || {
        let mut dp = Dataplane::load_private().unwrap();
        // SAFETY: NUL-terminated names; this thread is in the namespace.
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
