//! The demo's port-forwarder section: a LAN box (192.168.0.4) and the host
//! of the article's application (192.168.0.6) running netbeast. First the
//! LAN box reaches the host's port 80, served by an application that
//! listens on 127.0.0.1:8080 only (nat PREROUTING); then an application on
//! the host talks to 127.0.0.1:80 and reaches 192.168.0.4:80 (nat OUTPUT).

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

const LAN_BOX: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 4);
const HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 6);
const LAN_BOX_IFACE: &str = "nbt-lanbox";
const HOST_IFACE: &str = "nbt-host";

const PREROUTING: &[Step] = &[Step::new(
    "",
    "-t nat -I PREROUTING -d 192.168.0.6 -p tcp --dport 80 -j DNAT --to 127.0.0.1:8080",
    "192.168.0.6:80 to 127.0.0.1:8080",
)];

const OUTPUT: &[Step] = &[Step::new(
    "",
    "-t nat -I OUTPUT -o lo -p tcp -s 127.0.0.1 --dport 80 -j DNAT --to 192.168.0.4:80",
    "127.0.0.1:80 to 192.168.0.4:80",
)];

pub(super) fn run(exe: &Path, interrupt: &InterruptGuard) -> anyhow::Result<Vec<String>> {
    let firewall = Firewall::netbeast(exe);
    // Drop order: the LAN box, then the host (netbeast's cleanup).
    let lan = Netns::new("demo-pf-lan")?;
    let host = firewall.guard(Netns::new("demo-pf-host")?);
    veth_pair(
        &lan,
        LAN_BOX_IFACE,
        &format!("{LAN_BOX}/24"),
        &host,
        HOST_IFACE,
        &format!("{HOST}/24"),
    )?;
    let loopback_app = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080);
    let lan_web = SocketAddrV4::new(LAN_BOX, 80);
    let app = peer_server(&host, loopback_app)?;
    let web = peer_server(&lan, lan_web)?;
    println!(
        "  LAN box  {LAN_BOX:<12} (namespace {}), a web server on port 80",
        lan.name()
    );
    println!(
        "  host     {HOST:<12} (namespace {}), its application on {loopback_app} only",
        host.name()
    );
    println!();
    println!("$ netbeast attach {HOST_IFACE}        # on the host");
    firewall
        .attach(&host, &[HOST_IFACE])
        .context("attaching netbeast")?;
    println!();

    let mut surprises = Vec::new();
    let host_80 = SocketAddrV4::new(HOST, 80);
    saw(
        &format!("LAN box -> {host_80} (nothing listens)"),
        &tcp_connect(&lan, host_80, CONNECT_TIMEOUT)?,
        &ConnectOutcome::Reset,
        &mut surprises,
    );
    println!("The article's port forward, typed into netbeast on the host:");
    type_steps(&host, PREROUTING, interrupt, &mut surprises)?;
    served_by(
        &lan,
        host_80,
        &app,
        "the application on 127.0.0.1:8080",
        &mut surprises,
    )?;
    println!();

    interrupt.check()?;
    let loopback_80 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 80);
    saw(
        &format!("host -> {loopback_80} (nothing listens)"),
        &tcp_connect(&host, loopback_80, CONNECT_TIMEOUT)?,
        &ConnectOutcome::Reset,
        &mut surprises,
    );
    println!("The article's OUTPUT port forward, for the host's own connections:");
    type_steps(&host, OUTPUT, interrupt, &mut surprises)?;
    served_by(
        &host,
        loopback_80,
        &web,
        "the LAN box's web server",
        &mut surprises,
    )?;
    println!();
    drop((app, web));
    drop(host);
    drop(lan);
    println!("Cleaned up: netbeast detached, both namespaces deleted.");
    Ok(surprises)
}

/// Connects from `from` to `target` and checks that `server` took the
/// connection and answered.
fn served_by(
    from: &Netns,
    target: SocketAddrV4,
    server: &Server,
    server_name: &str,
    surprises: &mut Vec<String>,
) -> anyhow::Result<()> {
    let what = format!(
        "{} -> {target}",
        if target.ip().is_loopback() {
            "host"
        } else {
            "LAN box"
        }
    );
    let before = server.served();
    match tcp_stream(from, None, target, CONNECT_TIMEOUT)? {
        Ok(mut stream) => {
            let answered = read_peer_line(&mut stream, CONNECT_TIMEOUT);
            let took_it = server.served_within(before + 1, CONNECT_TIMEOUT) > before;
            if answered.is_ok() && took_it {
                let peer = stream
                    .peer_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                println!(
                    "  {what:<44} {:<22} ok",
                    format!("served by {}", server.local_addr())
                );
                println!("    ({server_name}; the client's socket still says it talks to {peer})");
            } else {
                println!("  {what:<44} {:<22} FAIL", "not served as expected");
                surprises.push(format!(
                    "{what}: not served by {server_name} ({answered:?})"
                ));
            }
        }
        Err(outcome) => saw(&what, &outcome, &ConnectOutcome::Connected, surprises),
    }
    Ok(())
}
