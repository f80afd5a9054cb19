//! Network tests of the mangle table's `-j TTL` (iptables) and `-j HL`
//! (ip6tables), issue 18: on real UDP datagrams, the TTL (hop limit) the
//! receiver's socket reads (`IP_RECVTTL`, `IPV6_RECVHOPLIMIT`) after the
//! chains rewrote it, on the host (PREROUTING, INPUT, OUTPUT, POSTROUTING)
//! and on a router (PREROUTING before the forwarding's decrement, FORWARD
//! and POSTROUTING after it), and what later chains' `-m ttl` / `-m hl`
//! see. An IPv4 datagram that arrives at all had a valid header checksum
//! (the receiving kernel drops the others in `ip_rcv`). Every scenario
//! runs on netbeast and on the kernel's iptables (the oracle), and each
//! expected value is the kernel's.
//!
//! Needs root. Run: `cargo test -p netbeast --test mangle_ttl`.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    time::Duration,
};

use netbeast::netns::{
    ConnectOutcome, Firewall, Netns, ROUTED_SERVER_ADDR, Routed, SERVER_ADDR, Testbed,
    require_root, veth_pair,
};

#[path = "support/pair6.rs"]
mod pair6;
use pair6::pair6;

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
/// How long a receiver waits for a datagram that was dropped.
const TIMEOUT: Duration = Duration::from_millis(700);
/// The TTL (hop limit) every probe leaves its sender with.
const SENT_TTL: u8 = 64;
/// The TOS byte (traffic class) every probe leaves with: DSCP 0x0a
/// (AF11), ECN 01 (ECT(1)), so that a rule that keeps the ECN bits shows
/// it.
const SENT_TOS: u8 = 0x29;
const CLIENT6: &str = "fd00:19::1";
const SERVER6: &str = "fd00:19::2";

include!("support/scenario.rs");

/// A socket bound to `port` in `ns` that reports each datagram's TTL (hop
/// limit).
fn receiver(ns: &Netns, v6: bool, port: u16) -> UdpSocket {
    ns.in_netns(|| -> io::Result<UdpSocket> {
        let socket = if v6 {
            UdpSocket::bind((Ipv6Addr::UNSPECIFIED, port))?
        } else {
            UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))?
        };
        let (level, options) = if v6 {
            (
                libc::IPPROTO_IPV6,
                [libc::IPV6_RECVHOPLIMIT, libc::IPV6_RECVTCLASS],
            )
        } else {
            (libc::IPPROTO_IP, [libc::IP_RECVTTL, libc::IP_RECVTOS])
        };
        for name in options {
            set_int(&socket, level, name, 1)?;
        }
        socket.set_read_timeout(Some(TIMEOUT))?;
        Ok(socket)
    })
    .unwrap()
    .unwrap()
}

/// Sets an int socket option.
fn set_int(
    socket: &UdpSocket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt on an open socket with an int option.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What the receiver read of a datagram's header: its TTL (hop limit)
/// and TOS byte (traffic class).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    ttl: u8,
    tos: u8,
}

/// The TTL and TOS of the next datagram `socket` receives; `None` when
/// none comes within `TIMEOUT`.
fn received(socket: &UdpSocket) -> Option<Seen> {
    let mut data = [0u8; 64];
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control);
    // SAFETY: recvmsg into the buffers described by `msg`.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return None;
    }
    let (mut ttl, mut tos) = (None, None);
    // SAFETY: walking the control messages the kernel wrote into `msg`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let (level, kind) = ((*c).cmsg_level, (*c).cmsg_type);
            let data = libc::CMSG_DATA(c);
            let int = || std::ptr::read_unaligned(data as *const libc::c_int) as u8;
            match (level, kind) {
                (libc::IPPROTO_IP, libc::IP_TTL) | (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                    ttl = Some(int())
                }
                // IP_TOS comes as one byte, IPV6_TCLASS as an int.
                (libc::IPPROTO_IP, libc::IP_TOS) => tos = Some(*data),
                (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => tos = Some(int()),
                _ => {}
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    match (ttl, tos) {
        (Some(ttl), Some(tos)) => Some(Seen { ttl, tos }),
        _ => panic!("a datagram without its TTL and TOS control messages"),
    }
}

/// Sends one datagram from `from` to `to` with TTL (hop limit) `SENT_TTL`
/// and TOS `SENT_TOS` and returns what the receiver in `at` read, `None`
/// when it did not arrive.
fn probe_all(from: &Netns, at: &Netns, to: SocketAddr) -> Option<Seen> {
    let v6 = to.is_ipv6();
    let rx = receiver(at, v6, to.port());
    from.in_netns(|| -> io::Result<()> {
        let socket = if v6 {
            UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))?
        } else {
            UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?
        };
        if v6 {
            set_int(
                &socket,
                libc::IPPROTO_IPV6,
                libc::IPV6_UNICAST_HOPS,
                SENT_TTL.into(),
            )?;
            set_int(
                &socket,
                libc::IPPROTO_IPV6,
                libc::IPV6_TCLASS,
                SENT_TOS.into(),
            )?;
        } else {
            socket.set_ttl(SENT_TTL.into())?;
            set_int(&socket, libc::IPPROTO_IP, libc::IP_TOS, SENT_TOS.into())?;
        }
        socket.send_to(b"ttl probe", to)?;
        Ok(())
    })
    .unwrap()
    .unwrap();
    received(&rx)
}

/// The TTL [`probe_all`] received.
fn probe(from: &Netns, at: &Netns, to: SocketAddr) -> Option<u8> {
    probe_all(from, at, to).map(|seen| seen.ttl)
}

/// The TOS byte [`probe_all`] received.
fn probe_tos(from: &Netns, at: &Netns, to: SocketAddr) -> Option<u8> {
    probe_all(from, at, to).map(|seen| seen.tos)
}

/// Neighbour discovery first: a datagram sent while a neighbour entry on
/// its way is still being resolved may be lost. Sends one that no rule
/// touches (to `to`, a port the scenario's rules leave alone) until one
/// arrives.
fn warm_up(from: &Netns, at: &Netns, to: SocketAddr) {
    assert!(
        (0..5).any(|_| probe_all(from, at, to).is_some()),
        "no datagram from {} reaches {to}",
        from.name()
    );
}

/// Checks each probe's received TTL (or TOS, or both) against the
/// expected one; all wrong ones are named, with the ruleset.
fn expect_ttls<T: PartialEq + std::fmt::Debug>(
    when: &str,
    got: &[(u16, Option<T>)],
    expected: &[(u16, Option<T>)],
    ruleset: impl FnOnce() -> String,
) {
    let wrong: Vec<String> = expected
        .iter()
        .zip(got)
        .filter(|(want, got)| want != got)
        .map(|((port, want), (_, got))| format!("port {port}: expected {want:?}, received {got:?}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "{when}:\n  {}\nruleset:\n{}",
        wrong.join("\n  "),
        ruleset()
    );
}

/// On the host, for IPv4: mangle PREROUTING's and INPUT's TTL rules
/// change what the local socket reads (set, raised, lowered to 0 — local
/// delivery does not test it — and two rules of one chain, the second
/// acting on the first's value); filter INPUT's `-m ttl` sees the value
/// mangle PREROUTING gave (7002 accepted only with it); mangle OUTPUT's
/// and POSTROUTING's change the host's own datagrams, and filter OUTPUT's
/// `-m ttl` sees OUTPUT's (7102 leaves only with it).
fn host_ttl(firewall: Firewall) {
    require_root();
    let bed = Testbed::new("ttl-host", firewall).unwrap_or_else(|e| panic!("testbed: {e}"));
    let ruleset =
        || bed.iptables_ok("-t mangle -S").unwrap_or_default() + &bed.save().unwrap_or_default();
    for line in [
        "-t mangle -A PREROUTING -p udp --dport 7001 -j TTL --ttl-set 5",
        "-t mangle -A PREROUTING -p udp --dport 7002 -j TTL --ttl-set 9",
        "-t mangle -A INPUT -p udp --dport 7003 -j TTL --ttl-inc 100",
        "-t mangle -A INPUT -p udp --dport 7004 -j TTL --ttl-dec 200",
        "-t mangle -A PREROUTING -p udp --dport 7005 -j TTL --ttl-set 10",
        "-t mangle -A PREROUTING -p udp --dport 7005 -j TTL --ttl-inc 5",
        "-t mangle -A INPUT -p udp --dport 7006 -m ttl --ttl-eq 64 -j TTL --ttl-dec 1",
        "-A INPUT -p udp --dport 7002 -m ttl --ttl-eq 9 -j ACCEPT",
        "-A INPUT -p udp --dport 7002 -j DROP",
        "-t mangle -A OUTPUT -p udp --dport 7101 -j TTL --ttl-set 7",
        "-t mangle -A POSTROUTING -p udp --dport 7102 -j TTL --ttl-dec 4",
        "-t mangle -A OUTPUT -p udp --dport 7103 -j TTL --ttl-set 33",
        "-A OUTPUT -p udp --dport 7103 -m ttl ! --ttl-eq 33 -j DROP",
    ] {
        bed.iptables_ok(line)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    let to_server = |port| SocketAddr::from((SERVER_ADDR, port));
    let to_client = |port| SocketAddr::from((netbeast::netns::CLIENT_ADDR, port));
    let mut got = Vec::new();
    for port in [7001, 7002, 7003, 7004, 7005, 7006] {
        got.push((port, probe(bed.client(), bed.server(), to_server(port))));
    }
    for port in [7101, 7102, 7103] {
        got.push((port, probe(bed.server(), bed.client(), to_client(port))));
    }
    expect_ttls(
        "mangle TTL rules on the host",
        &got,
        &[
            (7001, Some(5)),
            (7002, Some(9)),
            (7003, Some(164)),
            (7004, Some(0)),
            (7005, Some(15)),
            (7006, Some(63)),
            (7101, Some(7)),
            (7102, Some(60)),
            (7103, Some(33)),
        ],
        ruleset,
    );
}

scenario!(host_ttl);

/// On a router, for IPv4: a TTL set in mangle PREROUTING is lowered by the
/// forwarding after it (5 arrives as 4), one set in POSTROUTING arrives as
/// set (1), FORWARD's `--ttl-inc 1` undoes the router's decrement (the
/// "hide the router" trick: 64 arrives as 64), filter FORWARD's `-m ttl`
/// sees the value PREROUTING gave less the decrement (19), and a TTL of 1
/// given in PREROUTING expires at the router. A TCP connection through
/// the router whose every packet mangle POSTROUTING rewrites still comes
/// up (its IPv4 checksums stay valid both ways).
fn router_ttl(firewall: Firewall) {
    require_root();
    let bed = Routed::new("ttl-fwd", firewall).unwrap_or_else(|e| panic!("setting up: {e}"));
    let ruleset = || {
        bed.iptables_ok("-t mangle -S").unwrap_or_default()
            + &bed.firewall.save(&bed.router).unwrap_or_default()
    };
    for line in [
        "-t mangle -A PREROUTING -p udp --dport 7201 -j TTL --ttl-set 5",
        "-t mangle -A POSTROUTING -p udp --dport 7202 -j TTL --ttl-set 1",
        "-t mangle -A FORWARD -p udp --dport 7203 -j TTL --ttl-inc 1",
        "-t mangle -A PREROUTING -p udp --dport 7204 -j TTL --ttl-set 20",
        "-A FORWARD -p udp --dport 7204 -m ttl --ttl-eq 19 -j ACCEPT",
        "-A FORWARD -p udp --dport 7204 -j DROP",
        "-t mangle -A PREROUTING -p udp --dport 7205 -j TTL --ttl-set 1",
        "-t mangle -A POSTROUTING -p udp --dport 7206 -j TTL --ttl-dec 10",
        "-t mangle -A POSTROUTING -p tcp -j TTL --ttl-set 200",
    ] {
        bed.iptables_ok(line)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    let to_server = |port| SocketAddr::from((ROUTED_SERVER_ADDR, port));
    let got: Vec<_> = [7201, 7202, 7203, 7204, 7205, 7206]
        .into_iter()
        .map(|port| (port, probe(&bed.client, &bed.server, to_server(port))))
        .collect();
    expect_ttls(
        "mangle TTL rules on the router",
        &got,
        &[
            (7201, Some(4)),
            (7202, Some(1)),
            (7203, Some(64)),
            (7204, Some(19)),
            (7205, None),
            (7206, Some(53)),
        ],
        ruleset,
    );
    let _server = netbeast::netns::tcp_server(&bed.server, 8080).unwrap();
    let outcome = netbeast::netns::tcp_connect(
        &bed.client,
        std::net::SocketAddrV4::new(ROUTED_SERVER_ADDR, 8080),
        Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(
        outcome,
        ConnectOutcome::Connected,
        "a TCP connection through TTL-rewriting POSTROUTING:\n{}",
        ruleset()
    );
}

scenario!(router_ttl);

/// On the host, for IPv6: ip6tables' mangle `-j HL` in PREROUTING, INPUT
/// (hop limits raised, set, lowered; filter INPUT's `-m hl` seeing
/// PREROUTING's value), OUTPUT and POSTROUTING (the host's own datagrams,
/// filter OUTPUT's `-m hl` seeing OUTPUT's value).
fn host_hl(firewall: Firewall) {
    require_root();
    let (client, server) = pair6("hl-host", "10.217.0", CLIENT6, SERVER6, None);
    let server = firewall.guard(server);
    firewall.attach(&server, &["nbt6s"]).unwrap();
    let ruleset = || {
        firewall
            .ip6tables_ok(&server, "-t mangle -S")
            .unwrap_or_default()
    };
    for line in [
        // Neighbour discovery keeps its hop limit of 255.
        "-t mangle -A PREROUTING -p udp --dport 7301 -j HL --hl-set 5",
        "-t mangle -A PREROUTING -p udp --dport 7302 -j HL --hl-set 9",
        "-t mangle -A INPUT -p udp --dport 7303 -j HL --hl-inc 100",
        "-t mangle -A INPUT -p udp --dport 7304 -j HL --hl-dec 200",
        "-A INPUT -p udp --dport 7302 -m hl --hl-eq 9 -j ACCEPT",
        "-A INPUT -p udp --dport 7302 -j DROP",
        "-t mangle -A OUTPUT -p udp --dport 7401 -j HL --hl-set 7",
        "-t mangle -A POSTROUTING -p udp --dport 7402 -j HL --hl-dec 4",
        "-t mangle -A OUTPUT -p udp --dport 7403 -j HL --hl-set 33",
        "-A OUTPUT -p udp --dport 7403 -m hl ! --hl-eq 33 -j DROP",
    ] {
        firewall
            .ip6tables_ok(&server, line)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    let s6: Ipv6Addr = SERVER6.parse().unwrap();
    let c6: Ipv6Addr = CLIENT6.parse().unwrap();
    warm_up(&client, &server, SocketAddr::from((IpAddr::V6(s6), 7300)));
    let mut got = Vec::new();
    for port in [7301, 7302, 7303, 7304] {
        got.push((
            port,
            probe(&client, &server, SocketAddr::from((IpAddr::V6(s6), port))),
        ));
    }
    for port in [7401, 7402, 7403] {
        got.push((
            port,
            probe(&server, &client, SocketAddr::from((IpAddr::V6(c6), port))),
        ));
    }
    expect_ttls(
        "mangle HL rules on the host",
        &got,
        &[
            (7301, Some(5)),
            (7302, Some(9)),
            (7303, Some(164)),
            (7304, Some(0)),
            (7401, Some(7)),
            (7402, Some(60)),
            (7403, Some(33)),
        ],
        ruleset,
    );
}

scenario!(host_hl, without skb);

/// `-j DSCP` and `-j TOS` (both families' mangle), on real datagrams: the
/// TOS byte (traffic class) the receiver reads (`IP_RECVTOS`,
/// `IPV6_RECVTCLASS`) after mangle PREROUTING, INPUT, OUTPUT and
/// POSTROUTING (the host's own datagrams) changed it — DSCP keeping the
/// ECN bits, TOS's set (a name: `value/0x3f`), and, or, xor — and later
/// chains' `-m tos` / `-m dscp` reading the new byte; a TTL and a DSCP
/// changed by one chain together (two checksum updates).
fn host_tos(firewall: Firewall) {
    require_root();
    let bed = Testbed::new("tos-host", firewall).unwrap_or_else(|e| panic!("testbed: {e}"));
    let ruleset =
        || bed.iptables_ok("-t mangle -S").unwrap_or_default() + &bed.save().unwrap_or_default();
    for line in [
        "-t mangle -A PREROUTING -p udp --dport 7011 -j DSCP --set-dscp-class EF",
        "-t mangle -A INPUT -p udp --dport 7012 -j TOS --set-tos Minimize-Delay",
        "-t mangle -A PREROUTING -p udp --dport 7013 -j TOS --and-tos 0xf0",
        "-A INPUT -p udp --dport 7013 -m tos ! --tos 0x20 -j DROP",
        "-t mangle -A PREROUTING -p udp --dport 7014 -j TTL --ttl-set 3",
        "-t mangle -A PREROUTING -p udp --dport 7014 -j DSCP --set-dscp 8",
        "-t mangle -A OUTPUT -p udp --dport 7111 -j TOS --or-tos 0x10",
        "-t mangle -A POSTROUTING -p udp --dport 7112 -j DSCP --set-dscp 0",
        "-t mangle -A OUTPUT -p udp --dport 7113 -j TOS --xor-tos 0xff",
        "-A OUTPUT -p udp --dport 7113 -m dscp ! --dscp 0x35 -j DROP",
    ] {
        bed.iptables_ok(line)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    let to_server = |port| SocketAddr::from((SERVER_ADDR, port));
    let to_client = |port| SocketAddr::from((netbeast::netns::CLIENT_ADDR, port));
    let mut got = Vec::new();
    for port in [7011, 7012, 7013, 7014] {
        got.push((port, probe_all(bed.client(), bed.server(), to_server(port))));
    }
    for port in [7111, 7112, 7113] {
        got.push((port, probe_all(bed.server(), bed.client(), to_client(port))));
    }
    let seen = |ttl, tos| Some(Seen { ttl, tos });
    expect_ttls(
        "mangle TOS and DSCP rules on the host",
        &got,
        &[
            (7011, seen(SENT_TTL, 0x2e << 2 | 0x01)),
            (7012, seen(SENT_TTL, 0x10)),
            (7013, seen(SENT_TTL, 0x20)),
            (7014, seen(3, 8 << 2 | 0x01)),
            (7111, seen(SENT_TTL, 0x39)),
            (7112, seen(SENT_TTL, 0x01)),
            (7113, seen(SENT_TTL, 0xd6)),
        ],
        ruleset,
    );
}

scenario!(host_tos);

/// On a router, IPv4: a DSCP class set in mangle POSTROUTING and a TOS
/// value/mask set in PREROUTING reach the server; filter FORWARD's
/// `-m dscp` reads PREROUTING's.
fn router_tos(firewall: Firewall) {
    require_root();
    let bed = Routed::new("tos-fwd", firewall).unwrap_or_else(|e| panic!("setting up: {e}"));
    let ruleset = || {
        bed.iptables_ok("-t mangle -S").unwrap_or_default()
            + &bed.firewall.save(&bed.router).unwrap_or_default()
    };
    for line in [
        "-t mangle -A POSTROUTING -p udp --dport 7211 -j DSCP --set-dscp-class AF41",
        "-t mangle -A PREROUTING -p udp --dport 7212 -j TOS --set-tos 0x04/0x0c",
        "-A FORWARD -p udp --dport 7212 -m dscp ! --dscp 0x09 -j DROP",
    ] {
        bed.iptables_ok(line)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    let to_server = |port| SocketAddr::from((ROUTED_SERVER_ADDR, port));
    let got: Vec<_> = [7211, 7212]
        .into_iter()
        .map(|port| (port, probe_tos(&bed.client, &bed.server, to_server(port))))
        .collect();
    expect_ttls(
        "mangle TOS and DSCP rules on the router",
        &got,
        &[(7211, Some(0x22 << 2 | 0x01)), (7212, Some(0x25))],
        ruleset,
    );
}

scenario!(router_tos);

/// On the host, IPv6: ip6tables' `-j DSCP` and `-j TOS` on the traffic
/// class, in PREROUTING, INPUT, OUTPUT and POSTROUTING. (netbeast's
/// ip6tables has no `-m dscp` / `-m tos` yet to read it in a later chain.)
fn host_tclass(firewall: Firewall) {
    require_root();
    let (client, server) = pair6("tc6-host", "10.218.0", CLIENT6, SERVER6, None);
    let server = firewall.guard(server);
    firewall.attach(&server, &["nbt6s"]).unwrap();
    let ruleset = || {
        firewall
            .ip6tables_ok(&server, "-t mangle -S")
            .unwrap_or_default()
    };
    for line in [
        "-t mangle -A PREROUTING -p udp --dport 7311 -j DSCP --set-dscp-class EF",
        "-t mangle -A INPUT -p udp --dport 7312 -j TOS --xor-tos 0x0f",
        "-t mangle -A OUTPUT -p udp --dport 7411 -j TOS --set-tos 0x10",
        "-t mangle -A POSTROUTING -p udp --dport 7412 -j DSCP --set-dscp 0x3f",
    ] {
        firewall
            .ip6tables_ok(&server, line)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    let s6: Ipv6Addr = SERVER6.parse().unwrap();
    let c6: Ipv6Addr = CLIENT6.parse().unwrap();
    warm_up(&client, &server, SocketAddr::from((IpAddr::V6(s6), 7300)));
    let mut got = Vec::new();
    for port in [7311, 7312] {
        got.push((
            port,
            probe_tos(&client, &server, SocketAddr::from((IpAddr::V6(s6), port))),
        ));
    }
    for port in [7411, 7412] {
        got.push((
            port,
            probe_tos(&server, &client, SocketAddr::from((IpAddr::V6(c6), port))),
        ));
    }
    expect_ttls(
        "mangle TOS and DSCP rules on the host, IPv6",
        &got,
        &[
            (7311, Some(0x2e << 2 | 0x01)),
            (7312, Some(0x26)),
            (7411, Some(0x10)),
            (7412, Some(0xfd)),
        ],
        ruleset,
    );
}

scenario!(host_tclass, without skb);

/// An IPv6 router between a client and a server (`TAG-c`, `TAG-r`,
/// `TAG-s`: fd00:1a::/64 and fd00:1b::/64), forwarding on, the firewall
/// attached to both of the router's interfaces.
struct Routed6 {
    client: Netns,
    router: Netns,
    server: Netns,
}

const SERVER6_ROUTED: &str = "fd00:1b::2";

impl Routed6 {
    fn new(tag: &str, firewall: &Firewall) -> Routed6 {
        let client = Netns::new(&format!("{tag}-c")).unwrap();
        let router = firewall.guard(Netns::new(&format!("{tag}-r")).unwrap());
        let server = Netns::new(&format!("{tag}-s")).unwrap();
        for (host, host_if, router_if, net4, net6) in [
            (&client, "nbt-c6", "nbt-r0", "10.219.1", "fd00:1a"),
            (&server, "nbt-s6", "nbt-r1", "10.219.2", "fd00:1b"),
        ] {
            veth_pair(
                &router,
                router_if,
                &format!("{net4}.1/24"),
                host,
                host_if,
                &format!("{net4}.2/24"),
            )
            .unwrap();
            pair6::add6(&router, router_if, &format!("{net6}::1/64"));
            pair6::add6(host, host_if, &format!("{net6}::2/64"));
            host.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &format!("{net6}::1"),
            ])
            .unwrap();
        }
        router.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
        firewall.attach(&router, &["nbt-r0", "nbt-r1"]).unwrap();
        Routed6 {
            client,
            router,
            server,
        }
    }
}

/// On an IPv6 router: ip6tables' `-j HL` in mangle PREROUTING is lowered
/// by the forwarding after it (5 arrives as 4; 1 expires at the router),
/// FORWARD's `--hl-inc 1` hides the router, POSTROUTING's value arrives as
/// set, and filter FORWARD's `-m hl` sees PREROUTING's value less one.
fn router_hl(firewall: Firewall) {
    require_root();
    let bed = Routed6::new("hl-fwd", &firewall);
    let ruleset = || {
        firewall
            .ip6tables_ok(&bed.router, "-t mangle -S")
            .unwrap_or_default()
            + &firewall.ip6tables_ok(&bed.router, "-S").unwrap_or_default()
    };
    for line in [
        "-t mangle -A PREROUTING -p udp --dport 7501 -j HL --hl-set 5",
        "-t mangle -A POSTROUTING -p udp --dport 7502 -j HL --hl-set 1",
        "-t mangle -A FORWARD -p udp --dport 7503 -j HL --hl-inc 1",
        "-t mangle -A PREROUTING -p udp --dport 7504 -j HL --hl-set 20",
        "-A FORWARD -p udp --dport 7504 -m hl --hl-eq 19 -j ACCEPT",
        "-A FORWARD -p udp --dport 7504 -j DROP",
        "-t mangle -A PREROUTING -p udp --dport 7505 -j HL --hl-set 1",
    ] {
        firewall
            .ip6tables_ok(&bed.router, line)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    let s6: Ipv6Addr = SERVER6_ROUTED.parse().unwrap();
    warm_up(
        &bed.client,
        &bed.server,
        SocketAddr::from((IpAddr::V6(s6), 7500)),
    );
    let got: Vec<_> = [7501, 7502, 7503, 7504, 7505]
        .into_iter()
        .map(|port| {
            let to = SocketAddr::from((IpAddr::V6(s6), port));
            (port, probe(&bed.client, &bed.server, to))
        })
        .collect();
    expect_ttls(
        "mangle HL rules on the IPv6 router",
        &got,
        &[
            (7501, Some(4)),
            (7502, Some(1)),
            (7503, Some(64)),
            (7504, Some(19)),
            (7505, None),
        ],
        ruleset,
    );
}

scenario!(router_hl, without skb);
