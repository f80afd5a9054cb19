//! Network tests of conntrack for IPv6 (issue 16, tier 3): the article's
//! stateful firewall and its router, written for ip6tables, on real IPv6
//! sockets (addresses from fd00::/8, neighbour discovery live). Each runs
//! twice, with netbeast attached and with the kernel's own ip6tables (the
//! oracle): every probe must end the same way on both, and the oracle
//! must give the outcomes the scenario is about.
//!
//! Needs root. Run: `cargo test -p netbeast --test ipv6_stateful`.

use std::{
    net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use netbeast::netns::{Netns, require_root, veth_pair};

#[path = "support/pair6.rs"]
mod pair6;
use pair6::{add6, pair6};

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
/// A dropped SYN or datagram costs one timeout; an answer takes
/// microseconds (neighbour discovery included).
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Connected,
    Refused,
    TimedOut,
    Answered,
    /// EACCES: an ICMPv6 "administratively prohibited".
    Denied,
    /// ENETUNREACH: an ICMPv6 "no route".
    NoRoute,
    /// EPERM: the kernel's OUTPUT hook dropped the host's own datagram.
    NotPermitted,
}
use Outcome::*;

fn v6(a: &str) -> Ipv6Addr {
    a.parse().unwrap()
}

/// A TCP connection from inside `ns` to `to:port`.
fn connect(ns: &Netns, to: &str, port: u16) -> Outcome {
    let addr = SocketAddr::from((v6(to), port));
    ns.in_netns(move || match TcpStream::connect_timeout(&addr, TIMEOUT) {
        Ok(_) => Connected,
        Err(e) => error_outcome(&e),
    })
    .unwrap()
}

fn error_outcome(e: &std::io::Error) -> Outcome {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Refused,
        Some(libc::EACCES) => Denied,
        Some(libc::ENETUNREACH) => NoRoute,
        Some(libc::EPERM) => NotPermitted,
        _ => TimedOut,
    }
}

/// A datagram from a socket of `ns` connected to `to:port`, and what the
/// socket hears back: an echo, or the error an ICMPv6 answer made.
fn connected_exchange(ns: &Netns, to: &str, port: u16) -> Outcome {
    let socket = ns.in_netns(|| UdpSocket::bind("[::]:0").unwrap()).unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    socket.connect(SocketAddr::from((v6(to), port))).unwrap();
    if let Err(e) = socket.send(b"hello") {
        return error_outcome(&e);
    }
    let mut buf = [0u8; 16];
    match socket.recv(&mut buf) {
        Ok(_) => Answered,
        Err(e) => error_outcome(&e),
    }
}

/// A UDP echo server in `ns` on `port`, answering until the socket goes
/// with the namespace (the thread ends on the first error).
fn udp_echo(ns: &Netns, port: u16) {
    let socket = ns
        .in_netns(move || UdpSocket::bind(format!("[::]:{port}")).unwrap())
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    });
}

/// One datagram from inside `ns` to `to:port` and its echo.
fn exchange(ns: &Netns, to: &str, port: u16) -> Outcome {
    exchange_from(ns, "::", to, port)
}

/// One ping from inside `ns`.
fn ping(ns: &Netns, to: &str) -> Outcome {
    let out = ns.run("ping", &["-6", "-c", "1", "-W", "2", to]).unwrap();
    if out.status.success() {
        Answered
    } else {
        TimedOut
    }
}

/// Forgets the namespace's neighbours, so the next packet needs neighbour
/// discovery again.
fn flush_neighbours(ns: &Netns) {
    ns.ip(&["-6", "neigh", "flush", "all"]).unwrap();
}

fn ip6tables(ns: &Netns, netbeast: bool, line: &str) {
    let args: Vec<&str> = line.split_whitespace().collect();
    if netbeast {
        let args: Vec<&str> = ["ip6tables"].into_iter().chain(args).collect();
        ns.netbeast_ok(&args).unwrap();
    } else {
        ns.run_ok("ip6tables", &args).unwrap();
    }
}

// ---------------------------------------------------------------------------
// The stateful host

const CLIENT6: &str = "fd00:16::1";
const SERVER6: &str = "fd00:16::2";

/// The README's firewall for IPv6 ("The same firewall for IPv6"), read
/// from the README itself so that what a user copies is what runs here:
/// the article's stateful host written with ip6tables (INPUT policy DROP,
/// ESTABLISHED,RELATED accepted, ssh open) and the two ICMPv6 rules IPv6
/// needs besides: neighbour discovery (and MLD), which conntrack leaves
/// UNTRACKED, and pings, which it calls NEW. Each line is a `netbeast
/// ip6tables` command; what follows it is what both ip6tables take.
fn readme_host_rules() -> Vec<String> {
    let rules = readme_ipv6_block(0);
    assert_eq!(
        rules,
        [
            "-P INPUT DROP",
            "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            NDP_RULE,
            "-A INPUT -p ipv6-icmp -m conntrack --ctstate NEW -j ACCEPT",
            "-A INPUT -p tcp --dport 22 -j ACCEPT",
        ],
        "the README's IPv6 firewall changed: update the probes below with it"
    );
    rules
}

/// The `netbeast ip6tables` commands of the `n`th sh block of the
/// README's IPv6 section, as ip6tables arguments (comments dropped).
fn readme_ipv6_block(n: usize) -> Vec<String> {
    const README: &str = include_str!("../README.md");
    const SECTION: &str = "### The same firewall for IPv6";
    let section = &README[README.find(SECTION).expect("the README's IPv6 section")..];
    let section = &section[..section[SECTION.len()..]
        .find("\n### ")
        .map_or(section.len(), |end| end + SECTION.len())];
    let block = section
        .split("```sh\n")
        .nth(n + 1)
        .and_then(|b| b.split("```").next())
        .unwrap_or_else(|| panic!("sh block {n} of the README's IPv6 section"));
    block
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.strip_prefix("netbeast ip6tables ")
                .unwrap_or_else(|| panic!("the README's IPv6 blocks run only ip6tables: {l}"))
                .to_string()
        })
        .collect()
}

/// The README's rule for neighbour discovery.
const NDP_RULE: &str = "-A INPUT -p ipv6-icmp -m conntrack --ctstate UNTRACKED -j ACCEPT";

struct Host {
    client: Netns,
    server: Netns,
    netbeast: bool,
    _listeners: Vec<TcpListener>,
}

impl Host {
    /// A host with the README's stateful firewall.
    fn new(tag: &str, netbeast: bool) -> Host {
        Host::with_rules(tag, netbeast, &readme_host_rules())
    }

    fn with_rules(tag: &str, netbeast: bool, rules: &[String]) -> Host {
        let binary = netbeast.then_some(NETBEAST);
        let (client, server) = pair6(tag, "10.216.1", CLIENT6, SERVER6, binary);
        let mut listeners: Vec<TcpListener> = server
            .in_netns(|| {
                [22, 80]
                    .map(|p| TcpListener::bind(format!("[::]:{p}")).unwrap())
                    .into()
            })
            .unwrap();
        listeners.push(
            client
                .in_netns(|| TcpListener::bind("[::]:8080").unwrap())
                .unwrap(),
        );
        udp_echo(&client, 5353);
        for line in rules {
            ip6tables(&server, netbeast, line);
        }
        Host {
            client,
            server,
            netbeast,
            _listeners: listeners,
        }
    }

    /// What each probe does, in `HOST_PROBES`' order.
    fn probe(&self) -> Vec<Outcome> {
        flush_neighbours(&self.client);
        flush_neighbours(&self.server);
        vec![
            connect(&self.client, SERVER6, 22),
            connect(&self.client, SERVER6, 80),
            connect(&self.server, CLIENT6, 8080),
            connect(&self.server, CLIENT6, 8081),
            exchange(&self.server, CLIENT6, 5353),
            ping(&self.client, SERVER6),
        ]
    }
}

const HOST_PROBES: [&str; 6] = [
    "client -> server:22 (open)",
    "client -> server:80 (listening, not allowed)",
    "server -> client:8080 (its answers are ESTABLISHED)",
    "server -> client:8081 (closed: the RST is ESTABLISHED too)",
    "server -> client UDP 5353 (the answer is ESTABLISHED)",
    "client pings the server",
];

#[test]
fn ipv6_stateful_host_like_ip6tables() {
    require_root();
    let beds = [Host::new("v6st-nb", true), Host::new("v6st-ipt", false)];
    let [nb, ipt] = [&beds[0], &beds[1]].map(Host::probe);
    assert_eq!(
        ipt,
        [Connected, TimedOut, Connected, Refused, Answered, Answered],
        "the oracle itself ({HOST_PROBES:?})"
    );
    assert_eq!(nb, ipt, "netbeast against ip6tables ({HOST_PROBES:?})");

    // OUTPUT (TC egress for netbeast): the host's own connections to one
    // port are dropped on their way out.
    for bed in &beds {
        ip6tables(
            &bed.server,
            bed.netbeast,
            "-A OUTPUT -o nbt6s -p tcp --dport 8080 -j DROP",
        );
    }
    let [nb, ipt] = [&beds[0], &beds[1]].map(|b| {
        vec![
            connect(&b.server, CLIENT6, 8080),
            connect(&b.server, CLIENT6, 8081),
        ]
    });
    assert_eq!(ipt, [TimedOut, Refused], "the oracle with an OUTPUT drop");
    assert_eq!(nb, ipt, "netbeast with an OUTPUT drop");

    // Without the rule for neighbour discovery, the server never answers
    // the client's solicitation: nothing gets through, not even ssh.
    for bed in &beds {
        ip6tables(
            &bed.server,
            bed.netbeast,
            &NDP_RULE.replacen("-A ", "-D ", 1),
        );
    }
    let [nb, ipt] = [&beds[0], &beds[1]].map(|b| {
        flush_neighbours(&b.client);
        flush_neighbours(&b.server);
        connect(&b.client, SERVER6, 22)
    });
    assert_eq!(ipt, TimedOut, "the oracle without the NDP rule");
    assert_eq!(nb, ipt, "netbeast without the NDP rule");

    let stats = beds[0].server.netbeast_ok(&["stats"]).unwrap();
    let created = stats
        .lines()
        .find_map(|l| l.strip_prefix("ct_created "))
        .map(|v| v.trim().parse::<u64>().unwrap())
        .unwrap();
    assert!(created >= 4, "IPv6 connections were tracked:\n{stats}");
}

/// The README's stateless firewall for IPv6 (the article's examples 1–2
/// with the two neighbour discovery rules before them): ssh gets in and
/// port 80 does not; without the two NDP rules nothing does, not even
/// ssh. netbeast and ip6tables alike.
#[test]
fn ipv6_stateless_readme_firewall_keeps_ndp_working() {
    require_root();
    let rules = readme_ipv6_block(1);
    let ndp: Vec<&String> = rules.iter().filter(|r| r.contains("icmpv6-type")).collect();
    assert_eq!(
        ndp.len(),
        2,
        "the README's stateless block has its two NDP rules: {rules:?}"
    );
    let beds = [
        Host::with_rules("v6nd-nb", true, &rules),
        Host::with_rules("v6nd-ipt", false, &rules),
    ];
    let probe = |b: &Host| {
        flush_neighbours(&b.client);
        flush_neighbours(&b.server);
        vec![
            connect(&b.client, SERVER6, 22),
            connect(&b.client, SERVER6, 80),
        ]
    };
    let [nb, ipt] = [&beds[0], &beds[1]].map(probe);
    assert_eq!(ipt, [Connected, TimedOut], "the oracle with the NDP rules");
    assert_eq!(nb, ipt, "netbeast with the NDP rules");
    for bed in &beds {
        for rule in &ndp {
            ip6tables(&bed.server, bed.netbeast, &rule.replacen("-A ", "-D ", 1));
        }
    }
    let [nb, ipt] = [&beds[0], &beds[1]].map(probe);
    assert_eq!(
        ipt,
        [TimedOut, TimedOut],
        "the oracle without the NDP rules"
    );
    assert_eq!(nb, ipt, "netbeast without the NDP rules");
}

// ---------------------------------------------------------------------------
// conntrack -L -f ipv6

/// A conntrack line reduced to what both sides must agree on: protocol,
/// state, the tuples' addresses and well-known ports, the flags; the
/// timeout, counters, identifiers, ephemeral ports and conntrack-tools'
/// `mark=`/`use=` (netbeast has neither) are dropped.
fn comparable(line: &str) -> String {
    line.split_whitespace()
        .enumerate()
        .filter(|(i, word)| {
            *i != 2
                && !["packets=", "bytes=", "mark=", "use=", "id="]
                    .iter()
                    .any(|p| word.starts_with(p))
        })
        .map(|(_, word)| match word.split_once('=') {
            Some((k @ ("sport" | "dport"), port)) if port.parse::<u16>().unwrap() >= 1024 => {
                match port {
                    "5353" => word.to_string(),
                    _ => format!("{k}=EPHEMERAL"),
                }
            }
            _ => word.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The conntrack listing of a bed's server: `netbeast conntrack` or the
/// kernel's `conntrack`, with `args`.
fn conntrack_list(bed: &Host, args: &[&str]) -> Vec<String> {
    let out = if bed.netbeast {
        let all: Vec<&str> = ["conntrack"]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        bed.server.netbeast_ok(&all).unwrap()
    } else {
        let out = bed.server.run("conntrack", args).unwrap();
        assert!(out.status.success(), "conntrack {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut lines: Vec<String> = out.lines().map(comparable).collect();
    lines.sort();
    lines
}

/// `netbeast conntrack -L -f ipv6` lists the IPv6 connections as
/// conntrack(8) lists the kernel's: an ssh connection held open, a ping
/// (`icmpv6   58 … type=128`) and a UDP exchange the server began; `-f
/// ipv4` lists none of them, plain `-L` lists them too and `-C` counts
/// them.
#[test]
fn ipv6_conntrack_list_like_conntrack() {
    require_root();
    let beds = [Host::new("v6ct-nb", true), Host::new("v6ct-ipt", false)];
    let listings = beds.each_ref().map(|b| {
        let ssh = b
            .client
            .in_netns(|| TcpStream::connect_timeout(&SocketAddr::from((v6(SERVER6), 22)), TIMEOUT))
            .unwrap()
            .expect("ssh is open");
        assert_eq!(ping(&b.client, SERVER6), Answered);
        assert_eq!(exchange(&b.server, CLIENT6, 5353), Answered);
        let v6 = conntrack_list(b, &["-L", "-f", "ipv6"]);
        let v4 = conntrack_list(b, &["-L", "-f", "ipv4"]);
        let all = conntrack_list(b, &["-L"]);
        drop(ssh);
        (v6, v4, all)
    });
    let (nb, ipt) = (&listings[0], &listings[1]);
    assert_eq!(
        ipt.0,
        [
            "icmpv6 58 src=fd00:16::1 dst=fd00:16::2 type=128 code=0 src=fd00:16::2 dst=fd00:16::1 type=129 code=0",
            "tcp 6 ESTABLISHED src=fd00:16::1 dst=fd00:16::2 sport=EPHEMERAL dport=22 src=fd00:16::2 dst=fd00:16::1 sport=22 dport=EPHEMERAL [ASSURED]",
            "udp 17 src=fd00:16::2 dst=fd00:16::1 sport=EPHEMERAL dport=5353 src=fd00:16::1 dst=fd00:16::2 sport=5353 dport=EPHEMERAL",
        ],
        "the oracle itself"
    );
    assert_eq!(
        nb.0, ipt.0,
        "netbeast conntrack -L -f ipv6 against conntrack"
    );
    assert_eq!(nb.1, ipt.1, "-f ipv4");
    assert_eq!(nb.2, ipt.2, "both families");
    let count = beds[0].server.netbeast_ok(&["conntrack", "-C"]).unwrap();
    assert_eq!(
        count.trim(),
        nb.2.len().to_string(),
        "-C counts both families"
    );
}

// ---------------------------------------------------------------------------
// REJECT

/// REJECT rules after the stateful host's: a bare client (its veth runs no
/// XDP program, so netbeast's replies take the TC hand-off) sees each
/// answer as the error ip6tables' answer gives it.
const REJECT_RULES: &[&str] = &[
    "-A INPUT -p tcp --dport 80 -j REJECT --reject-with tcp-reset",
    "-A INPUT -p tcp --dport 81 -j REJECT",
    "-A INPUT -p tcp --dport 82 -j REJECT --reject-with icmp6-adm-prohibited",
    "-A INPUT -p tcp --dport 83 -j REJECT --reject-with no-route",
    "-A INPUT -p udp --dport 5000 -j REJECT",
];

#[test]
fn ipv6_reject_like_ip6tables() {
    require_root();
    let beds = [Host::new("v6rj-nb", true), Host::new("v6rj-ipt", false)];
    for bed in &beds {
        for line in REJECT_RULES {
            ip6tables(&bed.server, bed.netbeast, line);
        }
    }
    let [nb, ipt] = [&beds[0], &beds[1]].map(|b| {
        vec![
            connect(&b.client, SERVER6, 80),
            connect(&b.client, SERVER6, 81),
            connect(&b.client, SERVER6, 82),
            connect(&b.client, SERVER6, 83),
            connected_exchange(&b.client, SERVER6, 5000),
            connect(&b.client, SERVER6, 84),
        ]
    });
    assert_eq!(
        ipt,
        [Refused, Refused, Denied, NoRoute, Refused, TimedOut],
        "the oracle itself (tcp-reset, icmp6-port-unreachable, adm-prohibited, no-route, \
         UDP port unreachable, dropped by the policy)"
    );
    assert_eq!(nb, ipt, "netbeast against ip6tables");
    let stats = beds[0].server.netbeast_ok(&["stats"]).unwrap();
    let rejected = stats
        .lines()
        .find_map(|l| l.strip_prefix("rejected "))
        .map(|v| v.trim().parse::<u64>().unwrap())
        .unwrap();
    assert!(rejected >= 5, "netbeast answered:\n{stats}");
}

/// REJECT in OUTPUT: the server's own connections and datagrams to the
/// client are answered on the server itself, as ip6tables answers them.
const OUTPUT_REJECT_RULES: &[&str] = &[
    "-A OUTPUT -o nbt6s -p tcp --dport 8080 -j REJECT --reject-with tcp-reset",
    "-A OUTPUT -o nbt6s -p tcp --dport 8081 -j REJECT",
    "-A OUTPUT -o nbt6s -p tcp --dport 8082 -j REJECT --reject-with icmp6-adm-prohibited",
    "-A OUTPUT -o nbt6s -p udp --dport 5353 -j REJECT",
];

#[test]
fn ipv6_output_reject_like_ip6tables() {
    require_root();
    let beds = [Host::new("v6or-nb", true), Host::new("v6or-ipt", false)];
    for bed in &beds {
        // The answer comes back in by `lo` with ip6tables, where conntrack
        // calls it INVALID (its connection was never confirmed) and the
        // host's DROP policy would take it; netbeast hands it to the stack
        // past INPUT (docs/FEATURES.md). INPUT is opened so that both
        // show what OUTPUT did.
        ip6tables(&bed.server, bed.netbeast, "-P INPUT ACCEPT");
        for line in OUTPUT_REJECT_RULES {
            ip6tables(&bed.server, bed.netbeast, line);
        }
    }
    let [nb, ipt] = [&beds[0], &beds[1]].map(|b| {
        vec![
            connect(&b.server, CLIENT6, 8080),
            connect(&b.server, CLIENT6, 8081),
            connect(&b.server, CLIENT6, 8082),
            connected_exchange(&b.server, CLIENT6, 5354),
        ]
    });
    assert_eq!(
        ipt,
        [Refused, Refused, Denied, Refused],
        "the oracle itself (tcp-reset, port-unreachable, adm-prohibited on the host's own \
         connects; a datagram to a closed port of the client, untouched: the client's answer)"
    );
    assert_eq!(nb, ipt, "netbeast against ip6tables");
    // A rejected datagram: ip6tables fails the send itself (EPERM: an
    // NF_DROP at LOCAL_OUT), then its error arrives; at TC egress the send
    // has succeeded already, so the socket sees the error: ECONNREFUSED
    // (docs/FEATURES.md, "A datagram dropped by OUTPUT").
    let [nb, ipt] = [&beds[0], &beds[1]].map(|b| connected_exchange(&b.server, CLIENT6, 5353));
    assert_eq!(ipt, NotPermitted, "the oracle: send() fails");
    assert_eq!(nb, Refused, "netbeast: the error reaches the socket");
    let stats = beds[0].server.netbeast_ok(&["stats"]).unwrap();
    let rejected = stats
        .lines()
        .find_map(|l| l.strip_prefix("rejected "))
        .map(|v| v.trim().parse::<u64>().unwrap())
        .unwrap();
    assert!(rejected >= 4, "netbeast answered in OUTPUT:\n{stats}");
}

// ---------------------------------------------------------------------------
// The router

const LAN_HOST: &str = "fd00:1::6";
const ROUTER_LAN: &str = "fd00:1::4";
const ROUTER_WAN: &str = "fd00:2::1";
const WAN_HOST: &str = "fd00:2::15";

/// The article's router, in ip6tables: the LAN host may open connections
/// to the WAN host, whose answers (ESTABLISHED) come back; the WAN host
/// may open none towards the LAN.
const ROUTER_RULES: &[&str] = &[
    "-P FORWARD DROP",
    "-I FORWARD -s fd00:1::6/128 -d fd00:2::15/128 -j ACCEPT",
    "-I FORWARD -s fd00:2::15/128 -d fd00:1::6/128 -m conntrack --ctstate ESTABLISHED -j ACCEPT",
];

struct Router {
    lan: Netns,
    router: Netns,
    wan: Netns,
    _listeners: Vec<TcpListener>,
}

impl Router {
    fn new(tag: &str, netbeast: bool) -> Router {
        let lan = Netns::new(&format!("{tag}-l")).unwrap();
        let mut router = Netns::new(&format!("{tag}-r")).unwrap();
        let wan = Netns::new(&format!("{tag}-w")).unwrap();
        if netbeast {
            router = router.with_netbeast(NETBEAST);
        }
        veth_pair(
            &router,
            "nbt6rl",
            "10.216.2.4/24",
            &lan,
            "nbt6l",
            "10.216.2.6/24",
        )
        .unwrap();
        veth_pair(
            &router,
            "nbt6rw",
            "10.216.3.1/24",
            &wan,
            "nbt6w",
            "10.216.3.15/24",
        )
        .unwrap();
        add6(&router, "nbt6rl", &format!("{ROUTER_LAN}/64"));
        add6(&router, "nbt6rw", &format!("{ROUTER_WAN}/64"));
        add6(&lan, "nbt6l", &format!("{LAN_HOST}/64"));
        add6(&wan, "nbt6w", &format!("{WAN_HOST}/64"));
        router.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
        lan.ip(&["-6", "route", "add", "default", "via", ROUTER_LAN])
            .unwrap();
        wan.ip(&["-6", "route", "add", "default", "via", ROUTER_WAN])
            .unwrap();
        if netbeast {
            router.netbeast_ok(&["attach", "nbt6rl", "nbt6rw"]).unwrap();
        }
        for line in ROUTER_RULES {
            ip6tables(&router, netbeast, line);
        }
        let listeners = vec![
            wan.in_netns(|| TcpListener::bind("[::]:80").unwrap())
                .unwrap(),
            lan.in_netns(|| TcpListener::bind("[::]:8080").unwrap())
                .unwrap(),
        ];
        udp_echo(&wan, 53);
        udp_echo(&lan, 53);
        Router {
            lan,
            router,
            wan,
            _listeners: listeners,
        }
    }

    fn probe(&self) -> Vec<Outcome> {
        for ns in [&self.lan, &self.router, &self.wan] {
            flush_neighbours(ns);
        }
        vec![
            connect(&self.lan, WAN_HOST, 80),
            connect(&self.lan, WAN_HOST, 81),
            exchange(&self.lan, WAN_HOST, 53),
            connect(&self.wan, LAN_HOST, 8080),
            exchange(&self.wan, LAN_HOST, 53),
        ]
    }
}

const ROUTER_PROBES: [&str; 5] = [
    "LAN -> WAN:80",
    "LAN -> WAN:81 (closed: the RST comes back ESTABLISHED)",
    "LAN -> WAN UDP 53",
    "WAN -> LAN:8080 (NEW from the WAN: dropped)",
    "WAN -> LAN UDP 53 (dropped)",
];

#[test]
fn ipv6_router_like_ip6tables() {
    require_root();
    let beds = [Router::new("v6rt-nb", true), Router::new("v6rt-ipt", false)];
    let [nb, ipt] = [&beds[0], &beds[1]].map(Router::probe);
    assert_eq!(
        ipt,
        [Connected, Refused, Answered, TimedOut, TimedOut],
        "the oracle itself ({ROUTER_PROBES:?})"
    );
    assert_eq!(nb, ipt, "netbeast against ip6tables ({ROUTER_PROBES:?})");
    let stats = beds[0].router.netbeast_ok(&["stats"]).unwrap();
    let forwarded = stats
        .lines()
        .find_map(|l| l.strip_prefix("forward "))
        .map(|v| v.trim().parse::<u64>().unwrap())
        .unwrap();
    assert!(
        forwarded > 0,
        "netbeast judged the forwarded packets:\n{stats}"
    );
    let fast = stats
        .lines()
        .find_map(|l| l.strip_prefix("fast_path "))
        .map(|v| v.trim().parse::<u64>().unwrap())
        .unwrap();
    assert!(
        fast > 0,
        "accepted forwarded packets took the fast path:\n{stats}"
    );
}

// ---------------------------------------------------------------------------
// -m iprange on real IPv6 traffic

/// Sources inside and around the range fd00:17::10-fd00:17::1f.
const RANGE_SOURCES: [&str; 5] = [
    "fd00:17::f",
    "fd00:17::10",
    "fd00:17::17",
    "fd00:17::1f",
    "fd00:17::20",
];

/// One datagram from `from` (an address of `ns`, or `::` for the one the
/// route gives) to `to:port`, and its echo.
fn exchange_from(ns: &Netns, from: &str, to: &str, port: u16) -> Outcome {
    let bind = SocketAddr::from((v6(from), 0));
    let socket = ns.in_netns(move || UdpSocket::bind(bind).unwrap()).unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    socket
        .send_to(b"hello", SocketAddr::from((v6(to), port)))
        .unwrap();
    let mut buf = [0u8; 16];
    match socket.recv_from(&mut buf) {
        Ok((5, _)) if &buf[..5] == b"hello" => Answered,
        _ => TimedOut,
    }
}

/// `-m iprange --src-range` and `! --src-range` with IPv6 ranges, on
/// datagrams from five real sources around the range's ends, with
/// netbeast and with ip6tables (the oracle): port 7000 drops the range,
/// port 7001 everything outside it.
#[test]
fn ipv6_iprange_like_ip6tables() {
    require_root();
    let run = |tag: &str, netbeast: bool| -> Vec<Outcome> {
        let binary = netbeast.then_some(NETBEAST);
        let (client, server) = pair6(tag, "10.216.7", RANGE_SOURCES[0], "fd00:17::2", binary);
        for a in &RANGE_SOURCES[1..] {
            add6(&client, "nbt6c", &format!("{a}/64"));
        }
        udp_echo(&server, 7000);
        udp_echo(&server, 7001);
        for line in [
            "-A INPUT -p udp --dport 7000 -m iprange --src-range fd00:17::10-fd00:17::1f -j DROP",
            "-A INPUT -p udp --dport 7001 -m iprange ! --src-range fd00:17::10-fd00:17::1f -j DROP",
        ] {
            ip6tables(&server, netbeast, line);
        }
        let mut out = Vec::new();
        for port in [7000, 7001] {
            for a in RANGE_SOURCES {
                out.push(exchange_from(&client, a, "fd00:17::2", port));
            }
        }
        out
    };
    let ipt = run("v6ipr-ipt", false);
    assert_eq!(
        ipt,
        [
            Answered, TimedOut, TimedOut, TimedOut, Answered, // 7000: the range dropped
            TimedOut, Answered, Answered, Answered, TimedOut, // 7001: outside dropped
        ],
        "the oracle itself ({RANGE_SOURCES:?})"
    );
    let nb = run("v6ipr-nb", true);
    assert_eq!(nb, ipt, "netbeast against ip6tables ({RANGE_SOURCES:?})");
}

// ---------------------------------------------------------------------------
// -m connlimit on real IPv6 connections

/// The article's connlimit rule for ip6tables with `--connlimit-mask 64`,
/// on real TCP connections, netbeast and ip6tables (the oracle): 15
/// connections from one address come up and stay, the 16th is reset; a
/// second address of the same /64 (the route's preferred source changed)
/// is reset too, as the /64 shares one count.
#[test]
fn ipv6_connlimit_like_ip6tables() {
    require_root();
    let run = |tag: &str, netbeast: bool| -> Vec<Outcome> {
        let binary = netbeast.then_some(NETBEAST);
        let (client, server) = pair6(tag, "10.216.8", "fd00:18::1", "fd00:18::2", binary);
        add6(&client, "nbt6c", "fd00:18::99/64");
        let src = |a: &str| {
            client
                .ip(&[
                    "-6",
                    "route",
                    "replace",
                    "fd00:18::2/128",
                    "dev",
                    "nbt6c",
                    "src",
                    a,
                ])
                .unwrap();
        };
        src("fd00:18::1");
        let _listener = server
            .in_netns(|| TcpListener::bind("[::]:80").unwrap())
            .unwrap();
        ip6tables(
            &server,
            netbeast,
            "-A INPUT -p tcp --syn --dport 80 -m connlimit --connlimit-above 15 --connlimit-mask 64 -j REJECT --reject-with tcp-reset",
        );
        let to = SocketAddr::from((v6("fd00:18::2"), 80));
        let open = || {
            client
                .in_netns(move || TcpStream::connect_timeout(&to, TIMEOUT))
                .unwrap()
        };
        let held: Vec<TcpStream> = (0..15)
            .map(|i| open().unwrap_or_else(|e| panic!("connection {i}: {e}")))
            .collect();
        let mut out = vec![open().map_or_else(|e| error_outcome(&e), |_| Connected)];
        src("fd00:18::99");
        out.push(open().map_or_else(|e| error_outcome(&e), |_| Connected));
        drop(held);
        out
    };
    let ipt = run("v6cl-ipt", false);
    assert_eq!(ipt, [Refused, Refused], "the oracle itself");
    let nb = run("v6cl-nb", true);
    assert_eq!(nb, ipt, "netbeast against ip6tables");
}

// ---------------------------------------------------------------------------
// -m hashlimit on real IPv6 datagrams

/// `-m hashlimit --hashlimit-mode srcip --hashlimit-srcmask 64` on real
/// IPv6 datagrams, against ip6tables: two sources of one /64 share a
/// bucket (the first spends its burst of 3, the second gets nothing), a
/// source of another /64 has its own. At 1/min nothing refills during the
/// test, so the counts are exact.
#[test]
fn ipv6_hashlimit_like_ip6tables() {
    require_root();
    const SOURCES: [&str; 3] = ["fd00:18::1", "fd00:18::77", "fd00:19::1"];
    let run = |tag: &str, netbeast: bool| -> Vec<usize> {
        let binary = netbeast.then_some(NETBEAST);
        let (client, server) = pair6(tag, "10.216.9", "fd00:18::1", "fd00:18::2", binary);
        add6(&client, "nbt6c", "fd00:18::77/64");
        add6(&client, "nbt6c", "fd00:19::1/64");
        server
            .ip(&["-6", "route", "add", "fd00:19::/64", "dev", "nbt6s"])
            .unwrap();
        for line in [
            "-A INPUT -p udp --dport 9 -m hashlimit --hashlimit-upto 1/min --hashlimit-burst 3 \
             --hashlimit-mode srcip --hashlimit-srcmask 64 --hashlimit-name nb6 -j ACCEPT",
            "-A INPUT -p udp --dport 9 -j DROP",
        ] {
            ip6tables(&server, netbeast, line);
        }
        let receiver = server
            .in_netns(|| UdpSocket::bind("[::]:9").unwrap())
            .unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let to = SocketAddr::from((v6("fd00:18::2"), 9));
        client
            .in_netns(|| {
                for src in SOURCES {
                    let socket = UdpSocket::bind(SocketAddr::from((v6(src), 0))).unwrap();
                    for _ in 0..5 {
                        socket.send_to(b"probe", to).unwrap();
                        // In order: the first source's datagrams meet the
                        // shared bucket first.
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            })
            .unwrap();
        let mut got = vec![0; SOURCES.len()];
        let mut buf = [0u8; 64];
        while let Ok((_, from)) = receiver.recv_from(&mut buf) {
            if let Some(i) = SOURCES.iter().position(|s| from.ip() == v6(s)) {
                got[i] += 1;
            }
        }
        got
    };
    let ipt = run("v6hl-ipt", false);
    assert_eq!(ipt, [3, 0, 3], "the oracle itself");
    let nb = run("v6hl-nb", true);
    assert_eq!(nb, ipt, "netbeast against ip6tables");
}

// ---------------------------------------------------------------------------
// -m addrtype on real IPv6 datagrams

/// One datagram from inside `ns` to the all-nodes group of its interface
/// `iface` on `port`, and an echo back (from whichever node answers).
fn exchange_all_nodes(ns: &Netns, iface: &str, port: u16) -> Outcome {
    let name = std::ffi::CString::new(iface).unwrap();
    let socket = ns
        .in_netns(move || {
            // SAFETY: a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert_ne!(ifindex, 0, "no interface {name:?}");
            (UdpSocket::bind("[::]:0").unwrap(), ifindex)
        })
        .unwrap();
    let (socket, ifindex) = socket;
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    let group = std::net::SocketAddrV6::new(v6("ff02::1"), port, 0, ifindex);
    socket.send_to(b"hello", group).unwrap();
    let mut buf = [0u8; 16];
    match socket.recv_from(&mut buf) {
        Ok((5, _)) if &buf[..5] == b"hello" => Answered,
        _ => TimedOut,
    }
}

/// The server's addresses the addrtype probes go to: its address on the
/// link (`nbt6s`), one on its `lo` (the client routes it through the
/// server), and the link's all-nodes group.
const ADDRTYPE_DESTINATIONS: [&str; 3] = ["fd00:18::2 (nbt6s)", "fd00:99::1 (lo)", "ff02::1"];

/// `-m addrtype --dst-type LOCAL`, `MULTICAST`, `! LOCAL` and `LOCAL
/// --limit-iface-in` in INPUT, and `--src-type LOCAL --limit-iface-out` on
/// the echoes in OUTPUT, one port each, on datagrams to the server's
/// address on the link, its address on `lo` and the all-nodes group; with
/// netbeast and with ip6tables (the oracle).
#[test]
fn ipv6_addrtype_like_ip6tables() {
    require_root();
    let run = |tag: &str, netbeast: bool| -> Vec<Outcome> {
        let binary = netbeast.then_some(NETBEAST);
        let (client, server) = pair6(tag, "10.216.8", "fd00:18::1", "fd00:18::2", binary);
        add6(&server, "lo", "fd00:99::1/128");
        client
            .ip(&["-6", "route", "add", "fd00:99::/64", "via", "fd00:18::2"])
            .unwrap();
        let lines = [
            "-A INPUT -p udp --dport 7000 -m addrtype --dst-type LOCAL -j DROP",
            "-A INPUT -p udp --dport 7001 -m addrtype --dst-type MULTICAST -j DROP",
            "-A INPUT -p udp --dport 7002 -m addrtype ! --dst-type LOCAL -j DROP",
            "-A INPUT -p udp --dport 7003 -m addrtype --dst-type LOCAL --limit-iface-in -j DROP",
            // The echo's source on its way out of nbt6s.
            "-A OUTPUT -p udp --sport 7004 -m addrtype --src-type LOCAL --limit-iface-out -j DROP",
        ];
        let mut out = Vec::new();
        for (port, line) in (7000..).zip(lines) {
            udp_echo(&server, port);
            ip6tables(&server, netbeast, line);
            out.push(exchange(&client, "fd00:18::2", port));
            out.push(exchange(&client, "fd00:99::1", port));
            out.push(exchange_all_nodes(&client, "nbt6c", port));
        }
        out
    };
    let ipt = run("v6at-ipt", false);
    assert_eq!(
        ipt,
        [
            TimedOut, TimedOut, Answered, // LOCAL dropped
            Answered, Answered, TimedOut, // MULTICAST dropped
            Answered, Answered, TimedOut, // ! LOCAL dropped
            // LOCAL on the input interface only: the lo address's lookup
            // bound to nbt6s finds no route (UNREACHABLE).
            TimedOut, Answered, Answered,
            // The echo's source, LOCAL on its way out of nbt6s: the
            // link's address (the source the kernel picks for the
            // client, whichever address it asked) or the link-local one
            // that answers the group.
            TimedOut, TimedOut, TimedOut,
        ],
        "the oracle itself ({ADDRTYPE_DESTINATIONS:?} for each rule)"
    );
    let nb = run("v6at-nb", true);
    assert_eq!(
        nb, ipt,
        "netbeast against ip6tables ({ADDRTYPE_DESTINATIONS:?} for each rule)"
    );
}
