//! The two-host IPv6 bed of the ip6tables network tests (ipv6_firewall.rs,
//! ipv6_stateful.rs, ipset.rs): a client and a server namespace on one
//! veth pair, `nbt6c` — `nbt6s`. Included with
//! `#[path = "support/pair6.rs"] mod pair6;`.
#![allow(dead_code)]

use netbeast::netns::{Netns, veth_pair};

/// The client and the server, named `TAG-c` and `TAG-s`: IPv4 `NET.1/24`
/// and `NET.2/24` (`net` as "10.216.0"), IPv6 `client6/64` and
/// `server6/64` (no duplicate address detection); with `netbeast`, the
/// server runs the binary `netbeast` and has it attached to `nbt6s`.
pub fn pair6(
    tag: &str,
    net: &str,
    client6: &str,
    server6: &str,
    netbeast: Option<&str>,
) -> (Netns, Netns) {
    let client = Netns::new(&format!("{tag}-c")).unwrap();
    let mut server = Netns::new(&format!("{tag}-s")).unwrap();
    if let Some(binary) = netbeast {
        server = server.with_netbeast(binary);
    }
    veth_pair(
        &server,
        "nbt6s",
        &format!("{net}.2/24"),
        &client,
        "nbt6c",
        &format!("{net}.1/24"),
    )
    .unwrap();
    for (ns, iface, addr) in [(&server, "nbt6s", server6), (&client, "nbt6c", client6)] {
        add6(ns, iface, &format!("{addr}/64"));
    }
    if netbeast.is_some() {
        server.netbeast_ok(&["attach", "nbt6s"]).unwrap();
    }
    (client, server)
}

/// Adds the IPv6 address `addr` (with its prefix length) to `iface` of
/// `ns`, without duplicate address detection.
pub fn add6(ns: &Netns, iface: &str, addr: &str) {
    ns.ip(&["-6", "addr", "add", addr, "dev", iface, "nodad"])
        .unwrap();
}
