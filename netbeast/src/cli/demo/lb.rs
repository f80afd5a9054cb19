//! The demo's load-balancer section: a client (192.168.0.9), the article's
//! box (192.168.0.4, and 10.10.7.1 towards the containers) running
//! netbeast, and three containers 10.10.7.14/15/16 serving port 8080. The
//! article's round-robin rules, then its random ones, typed as written.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
};

use anyhow::{Context, bail};

use super::{CONNECT_TIMEOUT, InterruptGuard, Step, type_steps};
use crate::netns::{
    ConnectOutcome, Firewall, Netns, Server, peer_server, tcp_connect, veth_pair, wait_for,
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 9);
const VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 4);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 10, 7, 1);
const BACKENDS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 10, 7, 14),
    Ipv4Addr::new(10, 10, 7, 15),
    Ipv4Addr::new(10, 10, 7, 16),
];
const BACKEND_PORT: u16 = 8080;
const CLIENT_IFACE: &str = "nbt-cli";
const BOX_CLIENT_IFACE: &str = "nbt-b-cli";
const BOX_BACKEND_IFACE: &str = "nbt-b-be";
const BACKEND_IFACE: &str = "nbt-be";

/// Connections for round robin: twice around.
const ROUND_ROBIN_CONNECTIONS: usize = 6;
/// Connections for random: with p = 1/3 each, a backend gets none of 30
/// with probability (2/3)^30 < 6e-6.
const RANDOM_CONNECTIONS: usize = 30;

const ROUND_ROBIN: &[Step] = &[
    Step::new(
        "",
        "-A PREROUTING -t nat -p tcp -d 192.168.0.4 --dport 80 -m statistic --mode nth --every 3 --packet 0 -j DNAT --to-destination 10.10.7.14:8080",
        "every 3rd",
    ),
    Step::new(
        "",
        "-A PREROUTING -t nat -p tcp -d 192.168.0.4 --dport 80 -m statistic --mode nth --every 2 --packet 0 -j DNAT --to-destination 10.10.7.15:8080",
        "every 2nd of the rest",
    ),
    Step::new(
        "",
        "-A PREROUTING -t nat -p tcp -d 192.168.0.4 --dport 80 -j DNAT --to-destination 10.10.7.16:8080",
        "the rest",
    ),
];

const RANDOM: &[Step] = &[
    Step::new(
        "",
        "-A PREROUTING -t nat -p tcp -d 192.168.0.4 --dport 80 -m statistic --mode random --probability 0.33 -j DNAT --to-destination 10.10.7.14:8080",
        "a third",
    ),
    Step::new(
        "",
        "-A PREROUTING -t nat -p tcp -d 192.168.0.4 --dport 80 -m statistic --mode random --probability 0.5 -j DNAT --to-destination 10.10.7.15:8080",
        "half of the rest",
    ),
    Step::new(
        "",
        "-A PREROUTING -t nat -p tcp -d 192.168.0.4 --dport 80 -j DNAT --to-destination 10.10.7.16:8080",
        "the rest",
    ),
];

pub(super) fn run(exe: &Path, interrupt: &InterruptGuard) -> anyhow::Result<Vec<String>> {
    let firewall = Firewall::netbeast(exe);
    // Drop order: servers, client, the box (netbeast's cleanup), backends.
    let client = Netns::new("demo-lb-cli")?;
    let gateway = firewall.guard(Netns::new("demo-lb-box")?);
    let backends = Netns::new("demo-lb-be")?;
    veth_pair(
        &client,
        CLIENT_IFACE,
        &format!("{CLIENT}/24"),
        &gateway,
        BOX_CLIENT_IFACE,
        &format!("{VIP}/24"),
    )?;
    veth_pair(
        &gateway,
        BOX_BACKEND_IFACE,
        &format!("{GATEWAY}/24"),
        &backends,
        BACKEND_IFACE,
        &format!("{}/24", BACKENDS[0]),
    )?;
    for b in &BACKENDS[1..] {
        backends.ip(&["addr", "add", &format!("{b}/24"), "dev", BACKEND_IFACE])?;
    }
    backends.add_route("default", GATEWAY)?;
    gateway.sysctl("net.ipv4.ip_forward", "1")?;
    let servers = BACKENDS
        .iter()
        .map(|&b| peer_server(&backends, SocketAddrV4::new(b, BACKEND_PORT)))
        .collect::<crate::netns::Result<Vec<Server>>>()?;
    println!("  client      {CLIENT:<12} (namespace {})", client.name());
    println!(
        "  the box     {VIP:<12} {GATEWAY} (namespace {})",
        gateway.name()
    );
    println!(
        "  containers  10.10.7.14, .15, .16, each serving port {BACKEND_PORT} (namespace {})",
        backends.name()
    );
    println!();
    println!("$ netbeast attach {BOX_CLIENT_IFACE} {BOX_BACKEND_IFACE}        # on the box");
    firewall
        .attach(&gateway, &[BOX_CLIENT_IFACE, BOX_BACKEND_IFACE])
        .context("attaching netbeast")?;
    println!();

    let mut surprises = Vec::new();
    println!("Round robin, the article's rules typed into netbeast on the box:");
    type_steps(&gateway, ROUND_ROBIN, interrupt, &mut surprises)?;
    let landed = connections(&client, &servers, ROUND_ROBIN_CONNECTIONS)?;
    let sequence: Vec<String> = landed.iter().map(|&b| BACKENDS[b].to_string()).collect();
    let expected: Vec<usize> = (0..ROUND_ROBIN_CONNECTIONS).map(|i| i % 3).collect();
    let ok = landed == expected;
    println!(
        "  {ROUND_ROBIN_CONNECTIONS} connections to {VIP}:80 went to: {}  {}",
        sequence.join(", "),
        if ok { "ok" } else { "FAIL" }
    );
    if !ok {
        surprises.push(format!("round robin went to {}", sequence.join(", ")));
    }
    println!();

    interrupt.check()?;
    println!("$ netbeast iptables -t nat -F        # then random, as the article types it:");
    firewall.iptables(&gateway, "-t nat -F")?;
    type_steps(&gateway, RANDOM, interrupt, &mut surprises)?;
    let landed = connections(&client, &servers, RANDOM_CONNECTIONS)?;
    let counts: Vec<usize> = (0..BACKENDS.len())
        .map(|b| landed.iter().filter(|&&l| l == b).count())
        .collect();
    let ok = counts.iter().all(|&c| c > 0);
    println!(
        "  {RANDOM_CONNECTIONS} connections to {VIP}:80: {}  {}",
        BACKENDS
            .iter()
            .zip(&counts)
            .map(|(b, c)| format!("{b} got {c}"))
            .collect::<Vec<_>>()
            .join(", "),
        if ok { "ok" } else { "FAIL" }
    );
    if !ok {
        surprises.push(format!("random gave the backends {counts:?}"));
    }
    println!();
    drop(servers);
    drop(client);
    drop(gateway);
    drop(backends);
    println!("Cleaned up: netbeast detached, the three namespaces deleted.");
    Ok(surprises)
}

/// Opens `n` connections to the VIP one after another: the backend each
/// one landed on.
fn connections(client: &Netns, servers: &[Server], n: usize) -> anyhow::Result<Vec<usize>> {
    let served = || servers.iter().map(Server::served).collect::<Vec<u64>>();
    let mut landed = Vec::with_capacity(n);
    for i in 0..n {
        let before = served();
        let outcome = tcp_connect(client, SocketAddrV4::new(VIP, 80), CONNECT_TIMEOUT)?;
        if outcome != ConnectOutcome::Connected {
            bail!("connection {i} to {VIP}:80: {outcome}");
        }
        // The backend accepts a moment after the client's connect.
        let which = wait_for(CONNECT_TIMEOUT, || {
            let now = served();
            (0..now.len()).find(|&b| now[b] != before[b])
        });
        match which {
            Some(b) => landed.push(b),
            None => bail!("connection {i} to {VIP}:80: no backend accepted it"),
        }
    }
    Ok(landed)
}
