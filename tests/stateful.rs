//! The classic stateful host, as a network test: INPUT policy DROP, replies
//! and related ICMP errors accepted, one open port.
//!
//! ```text
//! iptables -P INPUT DROP
//! iptables -A INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT
//! iptables -A INPUT -p tcp --dport 22 -j ACCEPT
//! ```
//!
//! The host is the server namespace of a [`Testbed`] (10.199.0.2), its peer
//! the client namespace (10.199.0.1). Connections the host opens work (TCP
//! and UDP), unsolicited ones from the peer do not (except to port 22), and
//! ICMP errors about the host's own flows still arrive. A SYN flood from
//! random sources, sent by a raw packet generator in the peer, leaves an
//! established connection working. Every scenario also runs with the
//! kernel's iptables (`iptables_oracle`); `netbeast conntrack` is checked on
//! live connections.
//!
//! Needs root. Run: `cargo test -p netbeast --test stateful`.

#[path = "support/mod.rs"]
mod support;

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use netbeast::{
    netns::{
        CLIENT_ADDR, CLIENT_IFACE,
        ConnectOutcome::{Connected, Reset, TimedOut},
        Firewall, IcmpError, SERVER_ADDR, SERVER_IFACE, Testbed, UdpOutcome, require_root,
        tcp_banner, tcp_connect_all, tcp_server, udp_echo_server, udp_exchange,
    },
    packet::FrameBuilder,
};
use netbeast_common::CT_UNREPLIED_ENTRIES;
use support::{conntrack, echo_exchange, echo_server, mac_of, roundtrip, send_raw_frames, stat};

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
const TIMEOUT: Duration = Duration::from_secs(1);
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);

/// The host's stateful INPUT chain.
const STATEFUL: [&str; 3] = [
    "-P INPUT DROP",
    "-A INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT",
    "-A INPUT -p tcp --dport 22 -j ACCEPT",
];

/// SYNs the flood sends: three times what the unreplied table holds.
const FLOOD_FRAMES: usize = 3 * CT_UNREPLIED_ENTRIES as usize;
/// The flood stops after this long, sent or not.
const FLOOD_BUDGET: Duration = Duration::from_secs(30);

include!("support/scenario.rs");

fn stateful_host(tag: &str, firewall: Firewall) -> Testbed {
    require_root();
    let bed = Testbed::new(tag, firewall).unwrap_or_else(|e| panic!("setting up: {e}"));
    for line in STATEFUL {
        bed.iptables_ok(line).unwrap_or_else(|e| panic!("{e}"));
    }
    // The peer answers closed UDP ports with ICMP errors; no rate limit
    // may swallow one.
    bed.client()
        .sysctl("net.ipv4.icmp_ratelimit", "0")
        .expect("turning off the peer's ICMP rate limit");
    bed
}

fn peer(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(CLIENT_ADDR, port)
}

fn host(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(SERVER_ADDR, port)
}

// Outgoing connections work, unsolicited incoming ones don't, ICMP errors
// about the host's flows arrive (RELATED) and stop arriving without RELATED.
scenario!(classic_stateful_host);
fn classic_stateful_host(firewall: Firewall) {
    let bed = stateful_host("stateful", firewall);
    let (host_ns, peer_ns) = (bed.server(), bed.client());
    let _host_tcp = [22, 80].map(|p| tcp_server(host_ns, p).unwrap());
    let _host_udp = udp_echo_server(host_ns, 53).unwrap();
    let _peer_echo = echo_server(peer_ns, 8080);
    let _peer_tcp = tcp_server(peer_ns, 443).unwrap();
    let _peer_udp = udp_echo_server(peer_ns, 5353).unwrap();
    let ruleset = || bed.save().unwrap_or_default() + &support::diagnostics(host_ns, &bed.firewall);

    // The host's own connections: data both ways.
    echo_exchange(host_ns, peer(8080), 128 * 1024, TRANSFER_TIMEOUT)
        .unwrap_or_else(|e| panic!("host -> peer TCP: {e}\nruleset:\n{}", ruleset()));
    let banner = tcp_banner(host_ns, peer(443), TIMEOUT).unwrap();
    assert_eq!(
        banner,
        Ok(netbeast::netns::banner(443)),
        "host -> peer TCP banner"
    );
    assert_eq!(
        udp_exchange(host_ns, peer(5353), b"query", TIMEOUT).unwrap(),
        UdpOutcome::Reply(b"query".to_vec()),
        "host -> peer UDP\nruleset:\n{}",
        ruleset()
    );

    // Unsolicited connections from the peer: only port 22.
    let incoming = tcp_connect_all(peer_ns, &[host(22), host(80)], TIMEOUT).unwrap();
    assert_eq!(
        incoming,
        [Connected, TimedOut],
        "peer -> host 22 and 80\nruleset:\n{}",
        ruleset()
    );
    assert_eq!(
        udp_exchange(peer_ns, host(53), b"query", TIMEOUT).unwrap(),
        UdpOutcome::TimedOut,
        "peer -> host UDP"
    );

    // Errors about the host's own flows: a reset for TCP (ESTABLISHED: the
    // answer to its SYN), an ICMP port-unreachable for UDP (RELATED).
    assert_eq!(
        tcp_connect_all(host_ns, &[peer(9)], TIMEOUT).unwrap(),
        [Reset],
        "host -> closed peer TCP port"
    );
    assert_eq!(
        udp_exchange(host_ns, peer(9), b"anyone?", TIMEOUT).unwrap(),
        UdpOutcome::Refused(Some(IcmpError::PORT_UNREACHABLE)),
        "host -> closed peer UDP port: the ICMP error is RELATED\nruleset:\n{}",
        ruleset()
    );

    // Without RELATED the error is dropped; the host waits in vain.
    bed.iptables_ok("-R INPUT 1 -m state --state ESTABLISHED -j ACCEPT")
        .unwrap();
    assert_eq!(
        udp_exchange(host_ns, peer(9), b"anyone?", TIMEOUT).unwrap(),
        UdpOutcome::TimedOut,
        "host -> closed peer UDP port without RELATED\nruleset:\n{}",
        ruleset()
    );
    assert_eq!(
        udp_exchange(host_ns, peer(5353), b"query", TIMEOUT).unwrap(),
        UdpOutcome::Reply(b"query".to_vec()),
        "host -> peer UDP without RELATED"
    );
}

// A SYN flood from random sources to the open port does not push out an
// established connection: it keeps carrying data, and netbeast's
// `conntrack -L` still lists it.
scenario!(syn_flood_spares_established_connections);
fn syn_flood_spares_established_connections(firewall: Firewall) {
    let is_netbeast = firewall.is_netbeast();
    let bed = stateful_host("flood", firewall);
    let (host_ns, peer_ns) = (bed.server(), bed.client());
    let _ssh = echo_server(host_ns, 22);
    let mut session = support::connect(peer_ns, host(22), TIMEOUT)
        .unwrap_or_else(|e| panic!("peer -> host:22 before the flood: {e}"));
    roundtrip(&mut session, b"before the flood", TIMEOUT).unwrap();
    let session_port = session.local_addr().unwrap().port();

    let (peer_mac, host_mac) = (mac_of(peer_ns, CLIENT_IFACE), mac_of(host_ns, SERVER_IFACE));
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let frames: Vec<Vec<u8>> = (0..FLOOD_FRAMES)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // 10.128.0.0/9: nowhere the host can answer, every SYN a new flow.
            let src = Ipv4Addr::from(0x0a80_0000 | (seed as u32 & 0x007f_ffff));
            FrameBuilder::tcp(src, (seed >> 40) as u16 | 1024, SERVER_ADDR, 22)
                .src_mac(peer_mac)
                .dst_mac(host_mac)
                .build()
        })
        .collect();
    let created_before = is_netbeast.then(|| stat(host_ns, "ct_created"));
    let started = Instant::now();
    let sent = send_raw_frames(peer_ns, CLIENT_IFACE, &frames, FLOOD_BUDGET);
    let took = started.elapsed();
    assert!(
        sent > CT_UNREPLIED_ENTRIES as usize,
        "the generator sent only {sent} SYNs in {took:?}"
    );

    roundtrip(&mut session, b"after the flood", TRANSFER_TIMEOUT).unwrap_or_else(|e| {
        panic!("the established connection after {sent} SYNs in {took:?}: {e}")
    });
    roundtrip(&mut session, &[5; 50_000], TRANSFER_TIMEOUT)
        .unwrap_or_else(|e| panic!("bulk data after the flood: {e}"));

    if let Some(before) = created_before {
        let created = stat(host_ns, "ct_created") - before;
        assert!(
            created > u64::from(CT_UNREPLIED_ENTRIES),
            "the flood opened {created} connections: it did not overflow the unreplied table ({CT_UNREPLIED_ENTRIES})"
        );
        let (listing, summary) = conntrack(host_ns, &["-L"]);
        let wanted = format!(
            " ESTABLISHED src={CLIENT_ADDR} dst={SERVER_ADDR} sport={session_port} dport=22 "
        );
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with("tcp ") && l.contains(&wanted) && l.ends_with("[ASSURED]")),
            "conntrack -L after the flood lacks{wanted}({} lines; {summary})",
            listing.lines().count()
        );
        let unreplied = listing
            .lines()
            .filter(|l| l.contains("[UNREPLIED]"))
            .count();
        assert!(
            unreplied <= CT_UNREPLIED_ENTRIES as usize,
            "{unreplied} unreplied connections listed, the table holds {CT_UNREPLIED_ENTRIES}"
        );
    }
}

/// `netbeast conntrack -L | -C | -F` on live connections of the stateful
/// host.
#[test]
fn conntrack_command_lists_counts_and_flushes() {
    let bed = stateful_host("ctcli", Firewall::netbeast(NETBEAST));
    let (host_ns, peer_ns) = (bed.server(), bed.client());
    let _peer_echo = echo_server(peer_ns, 8080);
    let _peer_udp = udp_echo_server(peer_ns, 5353).unwrap();
    let _ssh = echo_server(host_ns, 22);

    let (count, _) = conntrack(host_ns, &["-C"]);
    assert_eq!(count.trim(), "0", "a fresh data plane tracks nothing");

    // The host opens a TCP connection (kept open) and a UDP flow; the peer
    // opens one to the open port.
    let mut outgoing = support::connect(host_ns, peer(8080), TIMEOUT).unwrap();
    roundtrip(&mut outgoing, &[1; 3000], TIMEOUT).unwrap();
    let out_port = outgoing.local_addr().unwrap().port();
    let udp = udp_exchange(host_ns, peer(5353), b"query", TIMEOUT).unwrap();
    assert_eq!(udp, UdpOutcome::Reply(b"query".to_vec()));
    let mut incoming = support::connect(peer_ns, host(22), TIMEOUT).unwrap();
    roundtrip(&mut incoming, b"hello", TIMEOUT).unwrap();
    let in_port = incoming.local_addr().unwrap().port();

    let (listing, summary) = conntrack(host_ns, &["-L"]);
    let lines: Vec<&str> = listing.lines().collect();
    let find = |what: &str, needles: &[String]| {
        lines
            .iter()
            .find(|l| needles.iter().all(|n| l.contains(n.as_str())))
            .unwrap_or_else(|| panic!("conntrack -L has no {what} line:\n{listing}"))
            .to_string()
    };
    let tcp_out = find(
        "outgoing TCP",
        &[format!(
            " ESTABLISHED src={SERVER_ADDR} dst={CLIENT_ADDR} sport={out_port} dport=8080 packets="
        )],
    );
    assert!(tcp_out.starts_with("tcp      6 43"), "{tcp_out}");
    assert!(
        tcp_out.contains(&format!(
            " src={CLIENT_ADDR} dst={SERVER_ADDR} sport=8080 dport={out_port} packets="
        )),
        "{tcp_out}"
    );
    assert!(tcp_out.ends_with(" [ASSURED]"), "{tcp_out}");
    let tcp_in = find(
        "incoming TCP",
        &[format!(
            " src={CLIENT_ADDR} dst={SERVER_ADDR} sport={in_port} dport=22 "
        )],
    );
    assert!(tcp_in.contains(" ESTABLISHED "), "{tcp_in}");
    let udp_line = find(
        "UDP",
        &[
            format!(" src={SERVER_ADDR} dst={CLIENT_ADDR} "),
            " dport=5353 ".into(),
        ],
    );
    assert!(udp_line.starts_with("udp      17 "), "{udp_line}");
    assert!(
        udp_line.contains(" packets=1 bytes=33 src=") && !udp_line.contains("UNREPLIED"),
        "one 5-byte datagram each way (33 bytes of IPv4): {udp_line}"
    );
    let shown = lines.len();
    assert!(shown >= 3, "{listing}");
    assert!(
        summary.contains(&format!("{shown} flow entries have been shown.")),
        "summary: {summary}"
    );

    let (count, _) = conntrack(host_ns, &["--count"]);
    assert_eq!(count.trim(), shown.to_string(), "-C counts what -L shows");

    let (out, said) = conntrack(host_ns, &["-F"]);
    assert!(
        out.is_empty(),
        "-F prints on stderr, as conntrack does: {out}"
    );
    let deleted: usize = said
        .rsplit('(')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("-F says how many it deleted: {said}"));
    assert!(
        deleted >= shown,
        "-F deleted {deleted}, -L showed {shown}: {said}"
    );
    let (count, _) = conntrack(host_ns, &["-C"]);
    assert_eq!(count.trim(), "0", "after -F");
    let (listing, summary) = conntrack(host_ns, &["--dump"]);
    assert!(listing.is_empty(), "after -F: {listing}");
    assert!(
        summary.contains(" 0 flow entries have been shown."),
        "{summary}"
    );

    // New connections are tracked again.
    echo_exchange(host_ns, peer(8080), 1000, TIMEOUT).unwrap();
    let (count, _) = conntrack(host_ns, &["-C"]);
    assert_eq!(count.trim(), "1", "the new connection");

    // One action at a time, as conntrack(8).
    let out = host_ns.netbeast(&["conntrack", "-L", "-F"]).unwrap();
    assert!(!out.status.success(), "-L with -F must be refused");
    let out = host_ns.netbeast(&["conntrack"]).unwrap();
    assert!(!out.status.success(), "an action is required");

    // Byte and packet counters are the kernel's: the outgoing TCP flow
    // carried 3000 bytes each way on top of its handshake (checked last:
    // it is the kernel's accounting, not the command, that it tests).
    let bytes: Vec<u64> = tcp_out
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("bytes="))
        .map(|b| b.parse().unwrap())
        .collect();
    assert!(
        bytes.len() == 2 && bytes.iter().all(|b| *b > 3000),
        "the kernel's byte counts of 3000 bytes each way (TC egress must count data segments): {tcp_out}"
    );
}

/// Without a data plane there is nothing to track, which is no error.
#[test]
fn conntrack_command_without_a_data_plane() {
    require_root();
    let ns = netbeast::netns::Netns::new("ctnone")
        .unwrap()
        .with_netbeast(NETBEAST);
    let (count, _) = conntrack(&ns, &["-C"]);
    assert_eq!(count.trim(), "0");
    let (listing, summary) = conntrack(&ns, &["-L"]);
    assert!(listing.is_empty());
    assert!(
        summary.contains("0 flow entries have been shown."),
        "{summary}"
    );
}
