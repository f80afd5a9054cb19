//! The article's load balancer ("A load-balancer" section), verbatim, on
//! real TCP connections: three backends 10.10.7.14/15/16:8080 behind
//! 192.168.0.4:80, round robin with `-m statistic --mode nth` and random
//! with `--mode random`. Every scenario also runs with the kernel's own
//! iptables (`iptables_oracle`), which proves the topology and the
//! expectations; netbeast must match.
//!
//! Needs root. Run: `cargo test -p netbeast --test lb`.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use netbeast::netns::{
    ConnectOutcome, Firewall, Netns, Server, peer_server, require_root, tcp_connect, veth_pair,
    wait_for,
};

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The article's addresses, used only inside the test's namespaces.
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 9);
const VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 4);
const BACKEND_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 10, 7, 1);
const BACKENDS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 10, 7, 14),
    Ipv4Addr::new(10, 10, 7, 15),
    Ipv4Addr::new(10, 10, 7, 16),
];
const BACKEND_PORT: u16 = 8080;

const CLIENT_IFACE: &str = "nbt-lb-c";
const ROUTER_CLIENT_IFACE: &str = "nbt-lb-rc";
const ROUTER_BACKEND_IFACE: &str = "nbt-lb-rb";
const BACKEND_IFACE: &str = "nbt-lb-b";

macro_rules! scenario {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[test]
            fn netbeast() {
                super::$name(Firewall::netbeast(NETBEAST));
            }

            #[test]
            fn iptables_oracle() {
                super::$name(Firewall::Iptables);
            }
        }
    };
}

/// A client (192.168.0.9) — the balancer (192.168.0.4, and 10.10.7.1 on
/// the backends' side) — one namespace holding the three backends'
/// addresses, each with its own server. Drop order: servers, client,
/// balancer (netbeast cleanup), backends.
struct Balancer {
    servers: Vec<Server>,
    client: Netns,
    router: Netns,
    _backends: Netns,
    firewall: Firewall,
}

impl Balancer {
    fn new(tag: &str, firewall: Firewall) -> Balancer {
        require_root();
        let setup = || -> netbeast::netns::Result<Balancer> {
            let client = Netns::new(&format!("{tag}-cli"))?;
            let router = firewall.guard(Netns::new(&format!("{tag}-lb"))?);
            let backends = Netns::new(&format!("{tag}-be"))?;
            veth_pair(
                &client,
                CLIENT_IFACE,
                &format!("{CLIENT}/24"),
                &router,
                ROUTER_CLIENT_IFACE,
                &format!("{VIP}/24"),
            )?;
            veth_pair(
                &router,
                ROUTER_BACKEND_IFACE,
                &format!("{BACKEND_GATEWAY}/24"),
                &backends,
                BACKEND_IFACE,
                &format!("{}/24", BACKENDS[0]),
            )?;
            for b in &BACKENDS[1..] {
                backends.ip(&["addr", "add", &format!("{b}/24"), "dev", BACKEND_IFACE])?;
            }
            backends.ip(&[
                "route",
                "add",
                "default",
                "via",
                &BACKEND_GATEWAY.to_string(),
            ])?;
            router.sysctl("net.ipv4.ip_forward", "1")?;
            firewall.attach(&router, &[ROUTER_CLIENT_IFACE, ROUTER_BACKEND_IFACE])?;
            let servers = BACKENDS
                .iter()
                .map(|&b| peer_server(&backends, SocketAddrV4::new(b, BACKEND_PORT)))
                .collect::<netbeast::netns::Result<Vec<Server>>>()?;
            Ok(Balancer {
                servers,
                client,
                router,
                _backends: backends,
                firewall,
            })
        };
        setup().unwrap_or_else(|e| panic!("setting up the load balancer: {e}"))
    }

    #[track_caller]
    fn iptables(&self, line: &str) {
        self.firewall
            .iptables_ok(&self.router, line)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn diagnostics(&self) -> String {
        match &self.firewall {
            Firewall::Netbeast { .. } => self
                .router
                .netbeast_ok(&["save"])
                .unwrap_or_else(|e| e.to_string()),
            Firewall::Iptables => self
                .router
                .run_ok("iptables-save", &["-c"])
                .unwrap_or_else(|e| e.to_string()),
        }
    }

    fn served(&self) -> Vec<u64> {
        self.servers.iter().map(Server::served).collect()
    }

    /// Opens `n` connections to the VIP one after another: the index of
    /// the backend each one landed on.
    fn connections(&self, n: usize) -> Vec<usize> {
        let mut landed = Vec::with_capacity(n);
        for i in 0..n {
            let before = self.served();
            let outcome = tcp_connect(&self.client, SocketAddrV4::new(VIP, 80), CONNECT_TIMEOUT)
                .unwrap_or_else(|e| panic!("connection {i}: {e}"));
            assert_eq!(
                outcome,
                ConnectOutcome::Connected,
                "connection {i} to {VIP}:80\n{}",
                self.diagnostics()
            );
            // The backend accepts a moment after the client's connect.
            let which = wait_for(CONNECT_TIMEOUT, || {
                let now = self.served();
                let moved: Vec<usize> = (0..now.len()).filter(|&b| now[b] != before[b]).collect();
                (!moved.is_empty()).then_some(moved)
            })
            .unwrap_or_else(|| {
                panic!(
                    "connection {i}: no backend accepted it\n{}",
                    self.diagnostics()
                )
            });
            assert_eq!(which.len(), 1, "connection {i} reached {which:?}");
            landed.push(which[0]);
        }
        landed
    }
}

/// The article's rules, with the `-m state --state NEW` the brief adds
/// (a no-op in the nat table: only a connection's first packet gets
/// there). `balance` is the statistic match of the first two rules.
fn article_rules(net: &Balancer, balance: [&str; 2]) {
    let head = format!("-t nat -A PREROUTING -p tcp -d {VIP} --dport 80 -m state --state NEW");
    for (b, statistic) in balance.iter().enumerate() {
        net.iptables(&format!(
            "{head} {statistic} -j DNAT --to-destination {}:{BACKEND_PORT}",
            BACKENDS[b]
        ));
    }
    net.iptables(&format!(
        "{head} -j DNAT --to-destination {}:{BACKEND_PORT}",
        BACKENDS[2]
    ));
}

// Round robin: `--every 3 --packet 0`, then `--every 2 --packet 0`, then
// the rest. Measured with iptables 1.8.9 here: 14, 15, 16, 14, 15, 16, ...
scenario!(round_robin);
fn round_robin(firewall: Firewall) {
    let net = Balancer::new("lbrr", firewall);
    article_rules(
        &net,
        [
            "-m statistic --mode nth --every 3 --packet 0",
            "-m statistic --mode nth --every 2 --packet 0",
        ],
    );
    let landed = net.connections(30);
    let want: Vec<usize> = (0..30).map(|i| i % 3).collect();
    assert_eq!(landed, want, "backends in turn\n{}", net.diagnostics());
}

// Random: probability 0.33, then 0.5 of the rest, then the rest: about a
// third each. Each backend's share within a binomial bound (p ≥ 0.001).
scenario!(random);
fn random(firewall: Firewall) {
    let net = Balancer::new("lbrnd", firewall);
    article_rules(
        &net,
        [
            "-m statistic --mode random --probability 0.33",
            "-m statistic --mode random --probability 0.5",
        ],
    );
    let n = 240;
    let landed = net.connections(n);
    let shares = [0.33, 0.67 * 0.5, 0.67 * 0.5];
    for (b, p) in shares.iter().enumerate() {
        let k = landed.iter().filter(|&&l| l == b).count();
        let (mean, sd) = (n as f64 * p, (n as f64 * p * (1.0 - p)).sqrt());
        // Two-sided z for p = 0.001.
        assert!(
            (k as f64 - mean).abs() <= 3.29 * sd,
            "backend {} got {k} of {n} connections, expected {mean:.0} ± {:.0}",
            BACKENDS[b],
            3.29 * sd
        );
    }
}
