//! A container host (issue 20): a router namespace between two hosts whose
//! ends of the veths are bare, as a container's are (no XDP program, no
//! netbeast, default offloads), and `netbeast attach` with no options
//! (native XDP). REJECT replies must reach the sender, from INPUT and from
//! FORWARD, as a reset or an ICMP error; forwarded traffic must take the
//! fast path (its counter moves); `status --json` says which way each
//! takes and why. Every scenario runs against the kernel's iptables too,
//! which proves what the hosts must see.
//!
//! Needs root. Run: `cargo test -p netbeast --test veth`.

#[path = "support/mod.rs"]
mod support;

use std::{net::SocketAddrV4, time::Duration};

use netbeast::netns::{
    ConnectOutcome::{Refused, Reset},
    Firewall, IcmpError, ROUTED_CLIENT_IFACE, ROUTED_SERVER_ADDR, ROUTED_SERVER_IFACE,
    ROUTER_CLIENT_ADDR, ROUTER_CLIENT_IFACE, ROUTER_SERVER_IFACE, Routed, UdpOutcome, require_root,
    tcp_connect, udp_exchange,
};
use support::{echo_exchange, echo_server, stat};

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
const TIMEOUT: Duration = Duration::from_secs(2);
const TRANSFER: usize = 256 * 1024;
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);

include!("support/scenario.rs");

fn routed(tag: &str, firewall: Firewall) -> Routed {
    require_root();
    let net = Routed::new(tag, firewall).unwrap_or_else(|e| panic!("{tag}: {e}"));
    for (host, iface) in [
        (&net.client, ROUTED_CLIENT_IFACE),
        (&net.server, ROUTED_SERVER_IFACE),
    ] {
        assert!(
            !host.has_xdp(iface).unwrap(),
            "{iface} must stay bare: it runs an XDP program"
        );
    }
    net
}

scenario!(rejects_reach_bare_senders, without skb);
fn rejects_reach_bare_senders(firewall: Firewall) {
    let net = routed("veth-rej", firewall);
    for line in [
        "-A INPUT -p tcp --dport 9999 -j REJECT --reject-with tcp-reset",
        "-A INPUT -p tcp --dport 9998 -j REJECT",
        "-A INPUT -p udp --dport 9997 -j REJECT --reject-with icmp-admin-prohibited",
        "-A FORWARD -p tcp --dport 81 -j REJECT --reject-with tcp-reset",
        "-A FORWARD -p tcp --dport 82 -j REJECT --reject-with icmp-host-prohibited",
        "-A FORWARD -p udp --dport 83 -j REJECT",
    ] {
        net.iptables_ok(line).unwrap_or_else(|e| panic!("{e}"));
    }
    let router = |port| SocketAddrV4::new(ROUTER_CLIENT_ADDR, port);
    let server = |port| SocketAddrV4::new(ROUTED_SERVER_ADDR, port);
    let tcp = |addr| tcp_connect(&net.client, addr, TIMEOUT).unwrap();
    let udp = |addr| udp_exchange(&net.client, addr, b"probe", TIMEOUT).unwrap();
    assert_eq!(tcp(router(9999)), Reset, "INPUT tcp-reset");
    assert_eq!(
        tcp(router(9998)),
        Refused(IcmpError::PORT_UNREACHABLE),
        "INPUT port-unreachable"
    );
    assert!(
        matches!(
            udp(router(9997)),
            UdpOutcome::Unreachable {
                icmp: Some(IcmpError::ADMIN_PROHIBITED),
                ..
            }
        ),
        "INPUT udp admin-prohibited"
    );
    assert_eq!(tcp(server(81)), Reset, "FORWARD tcp-reset");
    assert!(
        matches!(
            tcp(server(82)),
            netbeast::netns::ConnectOutcome::Unreachable {
                icmp: Some(IcmpError::HOST_PROHIBITED),
                ..
            }
        ),
        "FORWARD host-prohibited"
    );
    assert_eq!(
        udp(server(83)),
        UdpOutcome::Refused(Some(IcmpError::PORT_UNREACHABLE)),
        "FORWARD udp port-unreachable"
    );
    if net.firewall.is_netbeast() {
        assert_eq!(stat(&net.router, "rejected"), 6, "every REJECT answered");
    }
}

scenario!(forwarding_into_bare_veths_takes_the_fast_path, without skb);
fn forwarding_into_bare_veths_takes_the_fast_path(firewall: Firewall) {
    let net = routed("veth-fwd", firewall);
    let _echo = echo_server(&net.server, 7);
    net.iptables_ok("-P FORWARD DROP").unwrap();
    net.iptables_ok("-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT")
        .unwrap();
    net.iptables_ok("-A FORWARD -p tcp --dport 7 -j ACCEPT")
        .unwrap();
    let before = net
        .firewall
        .is_netbeast()
        .then(|| stat(&net.router, "fast_path"));
    echo_exchange(
        &net.client,
        SocketAddrV4::new(ROUTED_SERVER_ADDR, 7),
        TRANSFER,
        TRANSFER_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("client -> server through the router: {e}"));
    let Some(before) = before else { return };
    // Both directions of a 256 KiB exchange: hundreds of segments, into
    // each bare veth.
    let fast = stat(&net.router, "fast_path") - before;
    assert!(
        fast >= 100,
        "only {fast} forwarded packets took the fast path into the bare veths"
    );
    let status: serde_json::Value = serde_json::from_str(
        &net.router
            .netbeast_ok(&["status", "--json"])
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap();
    for iface in [ROUTER_CLIENT_IFACE, ROUTER_SERVER_IFACE] {
        let entry = status["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == iface)
            .unwrap_or_else(|| panic!("{iface} missing from status: {status:#}"));
        let paths = &entry["paths"];
        assert_eq!(paths["driver"], "veth", "{paths:#}");
        assert_eq!(paths["xdp_mode"], "native", "{paths:#}");
        assert_eq!(paths["reject"], "TC redirect", "{paths:#}");
        assert_eq!(paths["fast_path"], "TC redirect", "{paths:#}");
        assert!(
            paths["reject_why"].as_str().is_some_and(|w| !w.is_empty())
                && paths["fast_path_why"]
                    .as_str()
                    .is_some_and(|w| !w.is_empty()),
            "{paths:#}"
        );
        assert_eq!(entry["tc_ingress"]["enforced"], true, "{entry:#}");
    }
}
