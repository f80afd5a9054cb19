//! The article's router ("A router"), as a network test: a LAN host
//! (192.168.0.6), a router (192.168.0.4 on the LAN, 10.10.7.1 towards the
//! containers) and a "docker" host (10.10.7.15), each in its own namespace.
//! The router forwards with FORWARD policy DROP and the article's two rules:
//!
//! ```text
//! iptables -I FORWARD -s 192.168.0.6/32 -d 10.10.7.15/32 -j ACCEPT
//! iptables -I FORWARD -s 10.10.7.15/32 -d 192.168.0.6/32 -m conntrack --ctstate ESTABLISHED -j ACCEPT
//! ```
//!
//! so the LAN host can open connections to the docker host and get its
//! answers, and the docker host cannot open connections to the LAN host.
//! Every scenario also runs with the kernel's own iptables in the router
//! (`iptables_oracle`), which proves the expectations; netbeast must match.
//!
//! Needs root. Run: `cargo test -p netbeast --test router`.

#[path = "support/mod.rs"]
mod support;

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use netbeast::netns::{
    ConnectOutcome::{Connected, TimedOut},
    Firewall, Netns, require_root, tcp_connect, veth_pair,
};
use support::{conntrack, echo_exchange, echo_server, stat};

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
const TIMEOUT: Duration = Duration::from_secs(1);
/// Long enough for 256 KiB each way on a loaded two-core machine.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes each way in a data exchange: many full-size segments in both
/// directions, far more than a handshake.
const TRANSFER: usize = 256 * 1024;

const LAN_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 6);
const ROUTER_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 4);
const ROUTER_DOCKER: Ipv4Addr = Ipv4Addr::new(10, 10, 7, 1);
const DOCKER_HOST: Ipv4Addr = Ipv4Addr::new(10, 10, 7, 15);
const LAN_IFACE: &str = "nbt-lan";
const ROUTER_LAN_IFACE: &str = "nbt-r-lan";
const ROUTER_DOCKER_IFACE: &str = "nbt-r-dock";
const DOCKER_IFACE: &str = "nbt-dock";

/// The article's two rules, in the order it gives them (`-I` puts the
/// second one first).
const ARTICLE_RULES: [&str; 2] = [
    "-I FORWARD -s 192.168.0.6/32 -d 10.10.7.15/32 -j ACCEPT",
    "-I FORWARD -s 10.10.7.15/32 -d 192.168.0.6/32 -m conntrack --ctstate ESTABLISHED -j ACCEPT",
];

// The hosts' veths are bare (no XDP program): the default attach reaches
// them through the TC hand-off.
include!("support/scenario.rs");

/// The three namespaces; drop order: LAN host, router (netbeast cleanup),
/// docker host.
struct Article {
    lan: Netns,
    router: Netns,
    docker: Netns,
    firewall: Firewall,
}

impl Article {
    fn new(tag: &str, firewall: Firewall) -> Article {
        require_root();
        let setup = || -> netbeast::netns::Result<Article> {
            let lan = Netns::new(&format!("{tag}-lan"))?;
            let router = firewall.guard(Netns::new(&format!("{tag}-rtr"))?);
            let docker = Netns::new(&format!("{tag}-dock"))?;
            veth_pair(
                &lan,
                LAN_IFACE,
                &format!("{LAN_HOST}/24"),
                &router,
                ROUTER_LAN_IFACE,
                &format!("{ROUTER_LAN}/24"),
            )?;
            veth_pair(
                &router,
                ROUTER_DOCKER_IFACE,
                &format!("{ROUTER_DOCKER}/24"),
                &docker,
                DOCKER_IFACE,
                &format!("{DOCKER_HOST}/24"),
            )?;
            // "Routes on both sides": each host reaches the other subnet
            // through the router.
            lan.add_route("10.10.7.0/24", ROUTER_LAN)?;
            docker.add_route("192.168.0.0/24", ROUTER_DOCKER)?;
            router.sysctl("net.ipv4.ip_forward", "1")?;
            // The hosts' ends stay bare, as a container's veth is: no XDP
            // program, default offloads (their TCP and UDP frames leave
            // CHECKSUM_PARTIAL, which the TC hand-off keeps as it is).
            firewall.attach(&router, &[ROUTER_LAN_IFACE, ROUTER_DOCKER_IFACE])?;
            Ok(Article {
                lan,
                router,
                docker,
                firewall,
            })
        };
        setup().unwrap_or_else(|e| panic!("setting up the article's router: {e}"))
    }

    fn iptables(&self, line: &str) {
        self.firewall
            .iptables_ok(&self.router, line)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn ruleset(&self) -> String {
        self.firewall.save(&self.router).unwrap_or_default()
            + &support::diagnostics(&self.router, &self.firewall)
    }
}

// The article's router: the LAN host's connections to the docker host
// carry data both ways; the docker host cannot open connections to the LAN
// host; without the ctstate condition it can.
scenario!(article_router);
fn article_router(firewall: Firewall) {
    let is_netbeast = firewall.is_netbeast();
    let net = Article::new("rtr", firewall);
    let _docker_service = echo_server(&net.docker, 8080);
    let _lan_service = echo_server(&net.lan, 22);
    let docker_service = SocketAddrV4::new(DOCKER_HOST, 8080);
    let lan_service = SocketAddrV4::new(LAN_HOST, 22);

    // Before any rule (policy ACCEPT): both ways work, so the topology does.
    echo_exchange(&net.lan, docker_service, 1000, TRANSFER_TIMEOUT)
        .unwrap_or_else(|e| panic!("LAN -> docker before any rule: {e}"));
    assert_eq!(
        tcp_connect(&net.docker, lan_service, TIMEOUT).unwrap(),
        Connected,
        "docker -> LAN before any rule"
    );

    net.iptables("-P FORWARD DROP");
    for rule in ARTICLE_RULES {
        net.iptables(rule);
    }
    let fast_before =
        is_netbeast.then(|| (stat(&net.router, "fast_path"), stat(&net.router, "forward")));
    echo_exchange(&net.lan, docker_service, TRANSFER, TRANSFER_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "LAN -> docker with the article's rules: {e}\nruleset:\n{}",
            net.ruleset()
        )
    });
    let docker_to_lan = tcp_connect(&net.docker, lan_service, TIMEOUT).unwrap();
    assert_eq!(
        docker_to_lan,
        TimedOut,
        "docker -> LAN must not open a connection with the article's rules\nruleset:\n{}",
        net.ruleset()
    );
    // The docker host's answers are what the ESTABLISHED rule lets through:
    // its counter moved, the DROP policy's too (the refused SYNs).
    let forward = net.firewall.list(&net.router, "FORWARD").unwrap();
    assert!(
        forward.rules[0].packets > 0 && forward.policy_packets > 0,
        "FORWARD counters: {forward:?}"
    );

    if let Some((before, forward_before)) = fast_before {
        // Nothing here is idle long enough to expire; an expiry means the
        // table lost a live connection.
        assert_eq!(
            stat(&net.router, "ct_expired"),
            0,
            "a live connection was found expired (last_seen_ns later than the reader's now?)"
        );
        let fast = stat(&net.router, "fast_path") - before;
        let forwarded = stat(&net.router, "forward") - forward_before;
        // Both directions of a 256 KiB exchange, into the hosts' bare
        // veths: all but the few packets sent before the neighbours were
        // known (and the refused SYNs) take the fast path. (In generic
        // mode the hosts' TSO super-packets count one each: fewer, bigger.)
        assert!(
            fast >= 20 && fast * 10 >= forwarded.saturating_sub(10) * 8,
            "only {fast} of {forwarded} forwarded packets took the fast path"
        );
        // The connection is tracked on the router, in conntrack(8)'s words.
        let (listing, _) = conntrack(&net.router, &["-L"]);
        assert!(
            listing.lines().any(|l| l.starts_with("tcp ")
                && l.contains(&format!("src={LAN_HOST} dst={DOCKER_HOST} "))
                && l.contains(" dport=8080 ")),
            "conntrack -L in the router:\n{listing}"
        );
    }

    // Without the ctstate condition, the docker host may open connections.
    net.iptables(&format!("-D {}", &ARTICLE_RULES[1][3..]));
    net.iptables("-I FORWARD -s 10.10.7.15/32 -d 192.168.0.6/32 -j ACCEPT");
    echo_exchange(&net.docker, lan_service, TRANSFER, TRANSFER_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "docker -> LAN without the ctstate condition: {e}\nruleset:\n{}",
            net.ruleset()
        )
    });
    echo_exchange(&net.lan, docker_service, TRANSFER, TRANSFER_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "LAN -> docker without the ctstate condition: {e}\nruleset:\n{}",
            net.ruleset()
        )
    });
}

// Rule changes never flush conntrack: connections opened while both
// directions were allowed keep working under the article's rules, the
// docker host's one included (its packets are ESTABLISHED now), while a
// new connection from the docker host is refused.
scenario!(rule_changes_keep_connections);
fn rule_changes_keep_connections(firewall: Firewall) {
    let net = Article::new("rtrchg", firewall);
    let _docker_service = echo_server(&net.docker, 8080);
    let _lan_service = echo_server(&net.lan, 22);
    let lan_service = SocketAddrV4::new(LAN_HOST, 22);
    net.iptables("-P FORWARD DROP");
    net.iptables("-A FORWARD -s 192.168.0.6/32 -d 10.10.7.15/32 -j ACCEPT");
    // NEW,ESTABLISHED is every connection, but it makes iptables track
    // from the start: the kernel's conntrack runs in a namespace only once
    // a rule needs it, and would pick up the open connections later as NEW.
    net.iptables(
        "-A FORWARD -s 10.10.7.15/32 -d 192.168.0.6/32 -m conntrack --ctstate NEW,ESTABLISHED -j ACCEPT",
    );
    let mut from_lan =
        support::connect(&net.lan, SocketAddrV4::new(DOCKER_HOST, 8080), TIMEOUT).unwrap();
    let mut from_docker = support::connect(&net.docker, lan_service, TIMEOUT).unwrap();
    support::roundtrip(&mut from_lan, b"hello", TIMEOUT).unwrap();
    support::roundtrip(&mut from_docker, b"hello", TIMEOUT).unwrap();

    net.iptables("-F FORWARD");
    for rule in ARTICLE_RULES {
        net.iptables(rule);
    }
    support::roundtrip(&mut from_lan, &[1; 20000], TRANSFER_TIMEOUT)
        .unwrap_or_else(|e| panic!("the LAN host's connection after the rule change: {e}"));
    support::roundtrip(&mut from_docker, &[2; 20000], TRANSFER_TIMEOUT).unwrap_or_else(|e| {
        panic!("the docker host's established connection after the rule change: {e}")
    });
    assert_eq!(
        tcp_connect(&net.docker, lan_service, TIMEOUT).unwrap(),
        TimedOut,
        "a new docker -> LAN connection under the article's rules\nruleset:\n{}",
        net.ruleset()
    );
}
