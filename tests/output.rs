//! The article's firewall examples 5–8, written correctly, as a network
//! test of the OUTPUT chain (TC egress):
//!
//! ```text
//! iptables -I OUTPUT -o eth1 -j ACCEPT                                  # 5, -o for the printed -i
//! iptables -A OUTPUT -d 192.168.0.1 -p udp --dport 53 -j ACCEPT         # 6. DNS at the router
//! iptables -A OUTPUT -j REJECT                                          # 7. nothing else goes out
//! iptables -I OUTPUT -d 192.168.0.0/24 -p tcp --dport 443 -j ACCEPT     # 8. HTTPS in the LAN
//! ```
//!
//! The host (192.168.0.6) sits on a LAN (its `eth0`) with its router
//! (192.168.0.1, which also answers for 192.168.0.7 and, beyond it,
//! 10.10.7.1) and on a second link (its `eth1`) to a management host
//! (172.16.0.2). The host can reach the router's DNS port, HTTPS anywhere in
//! its /24 and everything through eth1; everything else it sends is
//! rejected before it leaves. The same lines run with the kernel's iptables
//! (`iptables_oracle`), which proves the expectations.
//!
//! Needs root. Run: `cargo test -p netbeast --test output`.

#[path = "support/mod.rs"]
mod support;

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use netbeast::netns::{
    ConnectOutcome::{self, Connected, Refused, TimedOut},
    Firewall, IcmpError, Netns, require_root, tcp_connect_all, tcp_server, udp_echo_server,
    veth_pair,
};

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
const TIMEOUT: Duration = Duration::from_secs(1);
/// For probes that expect an answer (a connection, a reset, an ICMP
/// error): long enough for the SYN's first retransmission, so one answer
/// lost to the kernel's ICMP rate limits (shared by parallel tests) does
/// not read as a drop. An answered probe returns at once.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

const HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 6);
const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
/// Another LAN address (the router answers for it too).
const LAN_PEER: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 7);
/// An address beyond the router, outside the host's /24.
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(10, 10, 7, 1);
const HOST_MGMT: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);
const MGMT: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 2);
/// The host's interfaces: the article's eth0 (LAN) and eth1.
const ETH0: &str = "nbt-eth0";
const ETH1: &str = "nbt-eth1";

include!("support/scenario.rs");

/// Drop order: router, management host, then the host (netbeast cleanup).
struct Lan {
    router: Netns,
    mgmt: Netns,
    host: Netns,
    firewall: Firewall,
}

impl Lan {
    fn new(tag: &str, firewall: Firewall) -> Lan {
        require_root();
        let setup = || -> netbeast::netns::Result<Lan> {
            let host = firewall.guard(Netns::new(&format!("{tag}-host"))?);
            let router = Netns::new(&format!("{tag}-rtr"))?;
            let mgmt = Netns::new(&format!("{tag}-mgmt"))?;
            veth_pair(
                &host,
                ETH0,
                &format!("{HOST}/24"),
                &router,
                "nbt-lan",
                &format!("{ROUTER}/24"),
            )?;
            router.ip(&["addr", "add", &format!("{LAN_PEER}/24"), "dev", "nbt-lan"])?;
            router.ip(&["addr", "add", &format!("{OUTSIDE}/32"), "dev", "lo"])?;
            host.ip(&["route", "add", "default", "via", &ROUTER.to_string()])?;
            veth_pair(
                &host,
                ETH1,
                &format!("{HOST_MGMT}/24"),
                &mgmt,
                "nbt-mgmt",
                &format!("{MGMT}/24"),
            )?;
            firewall.attach(&host, &[ETH0, ETH1])?;
            Ok(Lan {
                router,
                mgmt,
                host,
                firewall,
            })
        };
        setup().unwrap_or_else(|e| panic!("setting up the LAN: {e}"))
    }

    fn iptables(&self, line: &str) {
        self.firewall
            .iptables_ok(&self.host, line)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn ruleset(&self) -> String {
        self.firewall.save(&self.host).unwrap_or_default()
    }

    /// The article's examples 5–8 with the host's real interface names.
    fn article_rules(&self) {
        for line in [
            format!("-I OUTPUT -o {ETH1} -j ACCEPT"),
            "-A OUTPUT -d 192.168.0.1 -p udp --dport 53 -j ACCEPT".to_string(),
            "-A OUTPUT -j REJECT".to_string(),
            "-I OUTPUT -d 192.168.0.0/24 -p tcp --dport 443 -j ACCEPT".to_string(),
        ] {
            self.iptables(&line);
        }
    }
}

fn at(addr: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(addr, port)
}

/// Checks TCP outcomes from the host, naming each wrong one.
fn expect_tcp(net: &Lan, when: &str, expected: &[(SocketAddrV4, ConnectOutcome)]) {
    let addrs: Vec<SocketAddrV4> = expected.iter().map(|(a, _)| *a).collect();
    let timeout = if expected.iter().any(|(_, want)| *want == TimedOut) {
        TIMEOUT
    } else {
        ANSWER_TIMEOUT
    };
    let got = tcp_connect_all(&net.host, &addrs, timeout).unwrap();
    assert_outcomes(when, "tcp ", expected, &got, || net.ruleset());
}

const REFUSED: ConnectOutcome = Refused(IcmpError::PORT_UNREACHABLE);

/// What a UDP sender on a connected socket sees: the error of `send`, if
/// any, then what `recv` gets.
#[derive(Debug, PartialEq, Eq)]
struct UdpProbe {
    send_error: Option<i32>,
    recv: Recv,
}

#[derive(Debug, PartialEq, Eq)]
enum Recv {
    Echo,
    Refused,
    Nothing,
    Other(i32),
}

fn udp_probe(net: &Lan, addr: SocketAddrV4) -> UdpProbe {
    net.host
        .in_netns(|| {
            let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
            socket.connect(addr).unwrap();
            socket.set_read_timeout(Some(TIMEOUT)).unwrap();
            let send_error = socket.send(b"query").err().and_then(|e| e.raw_os_error());
            let mut buf = [0u8; 64];
            let recv = match socket.recv(&mut buf) {
                Ok(n) if &buf[..n] == b"query" => Recv::Echo,
                Ok(_) => Recv::Other(0),
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => Recv::Refused,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    Recv::Nothing
                }
                Err(e) => Recv::Other(e.raw_os_error().unwrap_or(-1)),
            };
            UdpProbe { send_error, recv }
        })
        .unwrap()
}

// What the host may send under the article's rules, and that nothing else
// gets out. The exact way a blocked sender learns it differs: iptables
// fails `send` with EPERM at once for UDP, and the ICMP error its REJECT
// makes for TCP is itself rejected by rule 7 (it goes out through `lo`),
// so a blocked connect times out, with iptables as with netbeast.
scenario!(article_examples_5_to_8);
fn article_examples_5_to_8(firewall: Firewall) {
    let net = Lan::new("out", firewall);
    let _router_tcp = [22, 80, 443].map(|p| tcp_server(&net.router, p).unwrap());
    let router_udp = [53, 123].map(|p| udp_echo_server(&net.router, p).unwrap());
    let _mgmt_tcp = [22, 80].map(|p| tcp_server(&net.mgmt, p).unwrap());
    let _mgmt_udp = udp_echo_server(&net.mgmt, 53).unwrap();

    let targets = [
        at(ROUTER, 443),
        at(LAN_PEER, 443),
        at(ROUTER, 80),
        at(ROUTER, 22),
        at(OUTSIDE, 443),
        at(MGMT, 22),
        at(MGMT, 80),
    ];
    let all_open: Vec<_> = targets.iter().map(|a| (*a, Connected)).collect();
    expect_tcp(&net, "before any rule", &all_open);

    net.article_rules();
    expect_tcp(
        &net,
        "with the article's examples 5-8",
        &[
            (at(ROUTER, 443), Connected),
            (at(LAN_PEER, 443), Connected),
            (at(ROUTER, 80), TimedOut),
            (at(ROUTER, 22), TimedOut),
            (at(OUTSIDE, 443), TimedOut),
            (at(MGMT, 22), Connected),
            (at(MGMT, 80), Connected),
        ],
    );
    let served_123 = router_udp[1].served();
    for (addr, allowed) in [
        (at(ROUTER, 53), true),
        (at(ROUTER, 123), false),
        (at(LAN_PEER, 53), false),
        (at(MGMT, 53), true),
    ] {
        let got = udp_probe(&net, addr);
        let ok = if allowed {
            got == UdpProbe {
                send_error: None,
                recv: Recv::Echo,
            }
        } else {
            got.recv != Recv::Echo
        };
        assert!(
            ok,
            "udp {addr} ({}): got {got:?}\nruleset:\n{}",
            if allowed { "allowed" } else { "rejected" },
            net.ruleset()
        );
    }
    assert_eq!(
        router_udp[1].served(),
        served_123,
        "a rejected datagram reached the router"
    );

    // Every OUTPUT rule counted packets; the REJECT rule the blocked ones.
    let output = net.firewall.list(&net.host, "OUTPUT").unwrap();
    assert!(
        output.rules.iter().all(|r| r.packets > 0),
        "OUTPUT counters: {output:#?}"
    );
}

// REJECT in OUTPUT tells the local sender at once ("connection refused"),
// as with iptables once the ICMP error it generates may reach the host
// (`-o lo` accepted first, as firewalls written this way do).
scenario!(rejects_reach_the_local_sender);
fn rejects_reach_the_local_sender(firewall: Firewall) {
    let net = Lan::new("outrej", firewall);
    let _router_tcp = tcp_server(&net.router, 80).unwrap();
    let _router_udp = udp_echo_server(&net.router, 123).unwrap();
    net.article_rules();
    net.iptables("-I OUTPUT -o lo -j ACCEPT");
    expect_tcp(
        &net,
        "a connect that REJECT refuses",
        &[(at(ROUTER, 80), REFUSED), (at(OUTSIDE, 443), REFUSED)],
    );
    let got = udp_probe(&net, at(ROUTER, 123));
    assert_eq!(
        got.recv,
        Recv::Refused,
        "a rejected datagram's sender must get ECONNREFUSED on its connected socket: {got:?}\nruleset:\n{}",
        net.ruleset()
    );
}

// Blocked traffic never leaves the host: the router sees none of it.
scenario!(rejected_traffic_stays_home);
fn rejected_traffic_stays_home(firewall: Firewall) {
    let net = Lan::new("outhome", firewall);
    let server = tcp_server(&net.router, 80).unwrap();
    let dns = udp_echo_server(&net.router, 123).unwrap();
    net.article_rules();
    let outcomes = tcp_connect_all(&net.host, &[at(ROUTER, 80)], TIMEOUT).unwrap();
    assert_ne!(outcomes[0], Connected, "{}", net.ruleset());
    let got = udp_probe(&net, at(ROUTER, 123));
    assert_ne!(got.recv, Recv::Echo);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        server.served(),
        0,
        "a rejected connection reached the server"
    );
    assert_eq!(dns.served(), 0, "a rejected datagram reached the server");
}

// OUTPUT sees every packet the host sends, data segments included: a byte
// counter adds up the data, and a DROP rule added under an established
// connection stops its data (as in iptables, whose OUTPUT hook sees the
// same packets before segmentation).
scenario!(output_rules_see_data_segments);
fn output_rules_see_data_segments(firewall: Firewall) {
    let net = Lan::new("outdata", firewall);
    let _echo = support::echo_server(&net.router, 8080);
    net.iptables("-A OUTPUT -p tcp --dport 8080");
    const BULK: usize = 100 * 1024;
    support::echo_exchange(&net.host, at(ROUTER, 8080), BULK, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("bulk exchange: {e}"));
    let counted = net.firewall.list(&net.host, "OUTPUT").unwrap().rules[0].bytes;
    assert!(
        counted >= BULK as u64,
        "the OUTPUT rule counted {counted} bytes of a {BULK}-byte upload\n{}",
        net.ruleset()
    );

    let mut session = support::connect(&net.host, at(ROUTER, 8080), TIMEOUT).unwrap();
    support::roundtrip(&mut session, b"before the rule", TIMEOUT).unwrap();
    net.iptables("-I OUTPUT -p tcp --dport 8080 -j DROP");
    let after = support::roundtrip(&mut session, &[9; 5000], Duration::from_secs(2));
    assert!(
        after.is_err(),
        "5000 bytes went out and came back through -I OUTPUT -p tcp --dport 8080 -j DROP\n{}",
        net.ruleset()
    );
}
