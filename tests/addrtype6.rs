//! Program tests of ip6tables' `-m addrtype` (issue 16 / 18): the IPv6
//! address types as xt_addrtype's `match_type6` gives them — each type of
//! the mask a test that must hold (MULTICAST, UNICAST, UNSPEC from the
//! address, LOCAL from the routes), `!` and `--limit-iface-in` — on frames
//! run through the XDP program (BPF_PROG_TEST_RUN) in a namespace whose
//! routes `local_routes6` read.
//!
//! Needs root. Run: `cargo test -p netbeast --test addrtype6`.

use std::net::Ipv6Addr;

use netbeast::{
    loader::Dataplane,
    local_routes::local_routes6,
    netns::{Netns, require_root},
    packet::FrameBuilder,
    rules::{command, model::Ruleset, parse},
};
use netbeast_common::iface_path;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

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

/// Frames come in by nbta1 (fd0a::1/64) from fd0a::5; nbta0 has
/// fd0b::1/64 (the way on for FORWARD, forwarding on), `lo` fd0c::1.
#[test]
fn ipv6_addrtype_local_unicast_multicast() {
    require_root();
    let ns = Netns::new("at6").unwrap();
    ns.ip(&[
        "link", "add", "nbta0", "type", "veth", "peer", "name", "nbta1",
    ])
    .unwrap();
    for iface in ["nbta0", "nbta1", "lo"] {
        ns.ip(&["link", "set", iface, "up"]).unwrap();
    }
    for (addr, dev) in [
        ("fd0b::1/64", "nbta0"),
        ("fd0a::1/64", "nbta1"),
        ("fd0c::1/128", "lo"),
    ] {
        ns.ip(&["-6", "addr", "add", addr, "dev", dev, "nodad"])
            .unwrap();
    }
    ns.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
    ns.in_netns(move || {
        let mut dp = Dataplane::load_private().unwrap();
        // SAFETY: NUL-terminated names; this thread is in the namespace.
        let (out, input) = unsafe {
            (
                libc::if_nametoindex(c"nbta0".as_ptr()),
                libc::if_nametoindex(c"nbta1".as_ptr()),
            )
        };
        dp.set_interface_paths(&[
            (out, iface_path::FORWARD_REDIRECT),
            (input, iface_path::FORWARD_REDIRECT),
        ])
        .unwrap();
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
            ("fd0a::5", "fd0a::1", 1, XDP_DROP),
            ("fd0a::5", "fd0c::1", 1, XDP_DROP),
            ("fd0a::5", "ff02::1", 1, XDP_PASS),
            ("fd0a::5", "fd0a::1", 2, XDP_PASS),
            ("fd0a::5", "ff02::1", 2, XDP_DROP),
            ("fd0a::5", "ff02::1", 3, XDP_DROP),
            ("fd0a::5", "fd0a::1", 3, XDP_PASS),
            // The route of fd0a::1 goes out of the input interface; that
            // of fd0c::1 out of lo.
            ("fd0a::5", "fd0a::1", 4, XDP_DROP),
            ("fd0a::5", "fd0c::1", 4, XDP_PASS),
            ("fd0a::5", "fd0a::1", 5, XDP_DROP),
            ("fd0a::5", "ff02::1", 5, XDP_PASS),
            ("::", "ff02::1", 5, XDP_PASS),
            ("fd0a::5", "ff02::1", 6, XDP_PASS),
            ("fd0a::5", "fd0a::1", 6, XDP_PASS),
            ("::", "ff02::1", 7, XDP_DROP),
            ("fd0a::5", "ff02::1", 7, XDP_PASS),
            ("fd0a::5", "fd0a::1", 8, XDP_DROP),
            // Forwarded (accepted: no neighbour known, the kernel's).
            ("fd0a::5", "fd0b::5", 9, XDP_DROP),
            ("fd0a::5", "fd0b::5", 10, XDP_PASS),
            ("fd0a::5", "fd0b::5", 11, XDP_DROP),
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
