//! Network tests of connection marks (issue 18): `-j CONNMARK` sets,
//! saves and restores the mark a connection keeps in conntrack, `-m
//! connmark` reads it, at XDP ingress (INPUT) and at TC egress (OUTPUT),
//! on real TCP connections. Every scenario also runs against the kernel's
//! iptables (`iptables_oracle`).
//!
//! Needs root. Run: `cargo test -p netbeast --test connmark`.

use std::{net::SocketAddrV4, time::Duration};

use netbeast::netns::{Firewall, Testbed, banner, require_root, tcp_banner, tcp_server};

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
/// A banner that does not come within this did not come.
const TIMEOUT: Duration = Duration::from_secs(1);

include!("support/scenario.rs");

fn testbed(tag: &str, firewall: Firewall) -> Testbed {
    require_root();
    Testbed::new(tag, firewall).unwrap_or_else(|e| panic!("setting up the testbed: {e}"))
}

/// Whether the client gets the server's banner from `addr`: the server
/// accepted the connection (its handshake's last ACK got in) and its data
/// got out.
fn served(bed: &Testbed, addr: SocketAddrV4) -> bool {
    matches!(
        tcp_banner(bed.client(), addr, TIMEOUT).unwrap(),
        Ok(text) if text == banner(addr.port())
    )
}

/// The conntrack lines of TCP connections to `port`: `netbeast conntrack
/// -L` or the kernel's `conntrack -L`.
fn connections_to(bed: &Testbed, port: u16) -> Vec<String> {
    let out = if bed.firewall.is_netbeast() {
        bed.server().netbeast_ok(&["conntrack", "-L"]).unwrap()
    } else {
        let out = bed.server().run("conntrack", &["-L", "-p", "tcp"]).unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let needle = format!("dport={port} ");
    out.lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

/// A connection marked by its SYN is let in by its mark alone (the
/// filter drops every other TCP segment), and its replies out by the same
/// mark; one whose SYN is accepted unmarked never completes; a packet
/// mark saved into the connection at ingress is restored into the
/// server's reply packets at egress. conntrack shows the mark.
fn connection_marks_let_connections_through(firewall: Firewall) {
    let bed = testbed("connmark", firewall);
    let servers: Vec<_> = [8080, 7070, 9090]
        .into_iter()
        .map(|p| tcp_server(bed.server(), p).unwrap())
        .collect();
    for line in [
        "-A INPUT -p tcp --dport 8080 --syn -j CONNMARK --set-mark 0x1",
        "-A INPUT -p tcp --dport 7070 --syn -j MARK --set-mark 0x2",
        "-A INPUT -p tcp --dport 7070 --syn -j CONNMARK --save-mark",
        "-A INPUT -m connmark --mark 0x1/0x1 -j ACCEPT",
        "-A INPUT -p tcp --dport 7070 -m connmark --mark 0x2 -j ACCEPT",
        "-A INPUT -p tcp --dport 9090 --syn -j ACCEPT",
        "-A INPUT -p tcp -j DROP",
        "-A OUTPUT -p tcp --sport 8080 -m connmark ! --mark 0x1/0x1 -j DROP",
        "-A OUTPUT -p tcp --sport 7070 -j CONNMARK --restore-mark",
        "-A OUTPUT -p tcp --sport 7070 -m mark ! --mark 0x2 -j DROP",
    ] {
        if let Err(e) = bed.iptables_ok(line) {
            panic!("{line}: {e}");
        }
    }
    let at = |p| bed.net.server_addr(p);
    let ruleset = || bed.save().unwrap_or_default();
    assert!(
        served(&bed, at(8080)),
        "the connection marked by its SYN was not served\n{}",
        ruleset()
    );
    assert!(
        served(&bed, at(7070)),
        "the connection whose mark was saved and restored was not served\n{}",
        ruleset()
    );
    assert!(
        !served(&bed, at(9090)),
        "an unmarked connection got past the DROP\n{}",
        ruleset()
    );
    let lines = connections_to(&bed, 8080);
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l.contains(" mark=1")),
        "conntrack does not show the connection's mark: {lines:?}"
    );
    let lines = connections_to(&bed, 7070);
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l.contains(" mark=2")),
        "conntrack does not show the saved mark: {lines:?}"
    );
    drop(servers);
}

scenario!(connection_marks_let_connections_through);
