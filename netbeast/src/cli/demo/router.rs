//! The demo's router and NAT router sections: a LAN host (192.168.0.6), the
//! article's box between the networks (192.168.0.4 on the LAN, 10.10.7.1
//! towards the containers) running netbeast, and a container (10.10.7.15),
//! each in its own namespace.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
};

use anyhow::Context;

use super::{CONNECT_TIMEOUT, InterruptGuard, Step, saw, type_steps};
use crate::netns::{
    ConnectOutcome, Firewall, Netns, Server, peer_server, read_peer_line, tcp_connect, tcp_stream,
    veth_pair,
};

const LAN_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 6);
const BOX_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 4);
const BOX_DOCKER: Ipv4Addr = Ipv4Addr::new(10, 10, 7, 1);
const CONTAINER: Ipv4Addr = Ipv4Addr::new(10, 10, 7, 15);
const LAN_IFACE: &str = "nbt-lan";
const BOX_LAN_IFACE: &str = "nbt-b-lan";
const BOX_DOCKER_IFACE: &str = "nbt-b-dock";
const CONTAINER_IFACE: &str = "nbt-dock";
/// Where the container and the LAN host serve.
const PORT: u16 = 8080;

/// The three hosts. Fields drop in order: LAN host, the box (netbeast's
/// cleanup), container.
struct Hosts {
    lan: Netns,
    gateway: Netns,
    container: Netns,
    _servers: Vec<Server>,
}

impl Hosts {
    /// `route_back`: whether the container knows the way to 192.168.0.0/24
    /// (the router section) or has only its own network (the NAT section).
    fn new(tag: &str, exe: &Path, route_back: bool) -> anyhow::Result<Hosts> {
        let firewall = Firewall::netbeast(exe);
        let lan = Netns::new(&format!("{tag}-lan"))?;
        let gateway = firewall.guard(Netns::new(&format!("{tag}-box"))?);
        let container = Netns::new(&format!("{tag}-ctr"))?;
        veth_pair(
            &lan,
            LAN_IFACE,
            &format!("{LAN_HOST}/24"),
            &gateway,
            BOX_LAN_IFACE,
            &format!("{BOX_LAN}/24"),
        )?;
        veth_pair(
            &gateway,
            BOX_DOCKER_IFACE,
            &format!("{BOX_DOCKER}/24"),
            &container,
            CONTAINER_IFACE,
            &format!("{CONTAINER}/24"),
        )?;
        lan.add_route("10.10.7.0/24", BOX_LAN)?;
        if route_back {
            container.add_route("192.168.0.0/24", BOX_DOCKER)?;
        }
        gateway.sysctl("net.ipv4.ip_forward", "1")?;
        let servers = vec![
            peer_server(&container, SocketAddrV4::new(CONTAINER, PORT))?,
            peer_server(&lan, SocketAddrV4::new(LAN_HOST, PORT))?,
        ];
        println!("  LAN host   {LAN_HOST:<15} (namespace {})", lan.name());
        println!(
            "  the box    {BOX_LAN:<15} {BOX_DOCKER} (namespace {}, net.ipv4.ip_forward = 1)",
            gateway.name()
        );
        println!(
            "  container  {CONTAINER:<15} (namespace {}{})",
            container.name(),
            if route_back {
                ", route to 192.168.0.0/24 via 10.10.7.1"
            } else {
                ", no route to 192.168.0.0/24"
            }
        );
        println!("  Both the LAN host and the container serve TCP port {PORT}.");
        println!();
        println!("$ netbeast attach {BOX_LAN_IFACE} {BOX_DOCKER_IFACE}        # on the box");
        firewall
            .attach(&gateway, &[BOX_LAN_IFACE, BOX_DOCKER_IFACE])
            .context("attaching netbeast")?;
        println!();
        Ok(Hosts {
            lan,
            gateway,
            container,
            _servers: servers,
        })
    }
}

/// FORWARD's policy is ACCEPT on a fresh box; the article's rules only
/// restrict the containers' network once nothing else is forwarded.
const DROP_POLICY: Step = Step::new("", "-P FORWARD DROP", "forward nothing else");

const ROUTER_STEPS: &[Step] = &[
    DROP_POLICY,
    Step::new(
        "1",
        "-I FORWARD -s 192.168.0.0/24 -d 10.10.7.0/24 -j ACCEPT",
        "LAN to containers",
    ),
    Step::refused(
        "2",
        "-I FORWARD -s 10.10.7.0/24 -d 192.168.0.0/24 -m conntract --ctstate ESTABLISHED -j ACCEPT",
        "as the article wrote it",
    ),
    Step::new(
        "2",
        "-I FORWARD -s 10.10.7.0/24 -d 192.168.0.0/24 -m conntrack --ctstate ESTABLISHED -j ACCEPT",
        "corrected: answers only",
    ),
];

/// "A router": the LAN host opens connections to the container and gets
/// its answers; the container cannot open one to the LAN host.
pub(super) fn run_router(exe: &Path, interrupt: &InterruptGuard) -> anyhow::Result<Vec<String>> {
    let hosts = Hosts::new("demo-rt", exe, true)?;
    let mut surprises = Vec::new();
    println!("The article's rules, typed into netbeast on the box:");
    type_steps(&hosts.gateway, ROUTER_STEPS, interrupt, &mut surprises)?;
    println!();
    interrupt.check()?;
    saw(
        &format!("LAN host -> {CONTAINER}:{PORT}"),
        &tcp_connect(
            &hosts.lan,
            SocketAddrV4::new(CONTAINER, PORT),
            CONNECT_TIMEOUT,
        )?,
        &ConnectOutcome::Connected,
        &mut surprises,
    );
    saw(
        &format!("container -> {LAN_HOST}:{PORT} (a NEW connection)"),
        &tcp_connect(
            &hosts.container,
            SocketAddrV4::new(LAN_HOST, PORT),
            CONNECT_TIMEOUT,
        )?,
        &ConnectOutcome::TimedOut,
        &mut surprises,
    );
    println!();
    drop(hosts);
    println!("Cleaned up: netbeast detached, the three namespaces deleted.");
    Ok(surprises)
}

const NAT_FORWARD: &[Step] = &[
    DROP_POLICY,
    Step::new(
        "1",
        "-I FORWARD -s 192.168.0.6/32 -d 10.10.7.15/32 -j ACCEPT",
        "the LAN host to the container",
    ),
    Step::new(
        "2",
        "-I FORWARD -s 10.10.7.15/32 -d 192.168.0.6/32 -m conntrack --ctstate ESTABLISHED -j ACCEPT",
        "its answers",
    ),
];

const NAT_SNAT: &[Step] = &[Step::new(
    "3",
    "-t nat -I POSTROUTING -s 192.168.0.6/32 -d 10.10.7.15/32 -j SNAT --to 10.10.7.1",
    "hide the LAN host behind 10.10.7.1",
)];

/// "A NAT router": the container has no route back to the LAN, so the LAN
/// host reaches it only once the box hides it behind 10.10.7.1.
pub(super) fn run_nat(exe: &Path, interrupt: &InterruptGuard) -> anyhow::Result<Vec<String>> {
    let hosts = Hosts::new("demo-nat", exe, false)?;
    let mut surprises = Vec::new();
    let target = SocketAddrV4::new(CONTAINER, PORT);
    println!("The article's FORWARD rules, typed into netbeast on the box:");
    type_steps(&hosts.gateway, NAT_FORWARD, interrupt, &mut surprises)?;
    println!();
    saw(
        &format!("LAN host -> {target} (no way back yet)"),
        &tcp_connect(&hosts.lan, target, CONNECT_TIMEOUT)?,
        &ConnectOutcome::TimedOut,
        &mut surprises,
    );
    println!();
    println!("The article's SNAT:");
    type_steps(&hosts.gateway, NAT_SNAT, interrupt, &mut surprises)?;
    println!();
    interrupt.check()?;
    match tcp_stream(&hosts.lan, None, target, CONNECT_TIMEOUT)? {
        Ok(mut stream) => {
            saw(
                &format!("LAN host -> {target}"),
                &ConnectOutcome::Connected,
                &ConnectOutcome::Connected,
                &mut surprises,
            );
            match read_peer_line(&mut stream, CONNECT_TIMEOUT) {
                Ok(seen) => {
                    let ok = *seen.ip() == BOX_DOCKER;
                    println!(
                        "  {:<44} {:<22} {}",
                        "the container saw the client as",
                        seen.to_string(),
                        if ok { "ok" } else { "FAIL" }
                    );
                    if !ok {
                        surprises.push(format!(
                            "the container saw {seen}, not the box's {BOX_DOCKER}"
                        ));
                    }
                }
                Err(e) => surprises.push(format!("the container did not answer: {e}")),
            }
        }
        Err(outcome) => saw(
            &format!("LAN host -> {target}"),
            &outcome,
            &ConnectOutcome::Connected,
            &mut surprises,
        ),
    }
    println!();
    println!("$ netbeast conntrack -L        # on the box: both tuples of the translation");
    let listing = hosts.gateway.netbeast_ok(&["conntrack", "-L"])?;
    super::print_indented(&listing);
    println!();
    drop(hosts);
    println!("Cleaned up: netbeast detached, the three namespaces deleted.");
    Ok(surprises)
}
