//! The demo's firewall section: a client and a server namespace joined by
//! a veth pair, netbeast attached to the server's veth, the article's
//! firewall examples typed through `netbeast iptables`, real TCP
//! connections from the client, and the rule counters.

use std::path::Path;

use anyhow::{Context, bail};

use super::{CONNECT_TIMEOUT, InterruptGuard, Step, print_indented, type_steps};
use crate::netns::{
    CLIENT_ADDR, CLIENT_IFACE, ConnectOutcome, SERVER_ADDR, SERVER_IFACE, tcp_server,
};

const STEPS: &[Step] = &[
    Step::new("1", "-A INPUT -p tcp --dport 22 -j ACCEPT", "accept ssh"),
    Step::new("2", "-A INPUT -j DROP", "drop everything else"),
    Step::refused(
        "3",
        "-A INPUT -p tcp 8080 -j ACCEPT",
        "as the article wrote it",
    ),
    Step::new(
        "3",
        "-A INPUT -p tcp --dport 8080 -j ACCEPT",
        "corrected, but appended after the DROP",
    ),
    Step::refused(
        "4",
        "-I INPUT -p tcp 5432 -j ACCEPT",
        "as the article wrote it",
    ),
    Step::new(
        "4",
        "-I INPUT -p tcp --dport 5432 -j ACCEPT",
        "corrected, inserted at the top",
    ),
];

/// What the client should see on each port, and why.
struct Probe {
    port: u16,
    service: &'static str,
    open: bool,
    because: &'static str,
}

const PROBES: &[Probe] = &[
    Probe {
        port: 22,
        service: "ssh",
        open: true,
        because: "rule 1 accepts it",
    },
    Probe {
        port: 5432,
        service: "postgres",
        open: true,
        because: "rule 4 was inserted before the DROP",
    },
    Probe {
        port: 8080,
        service: "http-alt",
        open: false,
        because: "rule 3 comes after the DROP",
    },
    Probe {
        port: 9000,
        service: "other",
        open: false,
        because: "no rule accepts it: the DROP",
    },
];

/// The article's eight firewall examples (the first four, on INPUT).
pub(super) fn run(exe: &Path, interrupt: &InterruptGuard) -> anyhow::Result<Vec<String>> {
    println!("Two hosts in their own network namespaces, joined by a veth pair:");
    // Dropping `bed` detaches netbeast and deletes both namespaces.
    let bed = super::testbed(exe)?;
    println!(
        "  client  {CLIENT_ADDR:<12} {CLIENT_IFACE:<6} (namespace {})",
        bed.client().name()
    );
    println!(
        "  server  {SERVER_ADDR:<12} {SERVER_IFACE:<6} (namespace {})",
        bed.server().name()
    );
    interrupt.check()?;

    println!();
    println!("$ netbeast attach {SERVER_IFACE}        # in the server's namespace");
    let attach = bed
        .server()
        .netbeast(&["attach", SERVER_IFACE])
        .context("running netbeast attach")?;
    print_indented(&String::from_utf8_lossy(&attach.stdout));
    print_indented(&String::from_utf8_lossy(&attach.stderr));
    if !attach.status.success() {
        bail!("netbeast attach {SERVER_IFACE} failed; see above");
    }

    let _servers = PROBES
        .iter()
        .map(|probe| tcp_server(bed.server(), probe.port))
        .collect::<Result<Vec<_>, _>>()
        .context("starting the servers")?;
    let ports: Vec<String> = PROBES.iter().map(|p| p.port.to_string()).collect();
    println!();
    println!("The server listens on TCP ports {}.", ports.join(", "));
    println!();

    println!("The article's rules, typed into netbeast (same syntax as iptables):");
    let mut surprises = Vec::new();
    type_steps(bed.server(), STEPS, interrupt, &mut surprises)?;
    println!();

    interrupt.check()?;
    println!(
        "The client connects to each port (a dropped connection attempt times out after {} s):",
        CONNECT_TIMEOUT.as_secs()
    );
    let port_numbers: Vec<u16> = PROBES.iter().map(|p| p.port).collect();
    let outcomes = bed
        .connect(&port_numbers, CONNECT_TIMEOUT)
        .context("connecting from the client")?;
    println!(
        "  {:<6} {:<9} {:<9} {:<22} {:<6} why",
        "port", "service", "expected", "the client saw", "result"
    );
    for (probe, outcome) in PROBES.iter().zip(&outcomes) {
        let got_through = *outcome == ConnectOutcome::Connected;
        let blocked_as_expected = !probe.open && *outcome == ConnectOutcome::TimedOut;
        let as_expected = if probe.open {
            got_through
        } else {
            blocked_as_expected
        };
        if !as_expected {
            surprises.push(format!("port {}: {outcome}", probe.port));
        }
        println!(
            "  {:<6} {:<9} {:<9} {:<22} {:<6} {}",
            probe.port,
            probe.service,
            if probe.open { "open" } else { "blocked" },
            outcome.to_string(),
            if as_expected { "ok" } else { "FAIL" },
            probe.because
        );
    }
    println!(
        "  (\"timed out\": netbeast dropped the connection attempt in XDP, so no answer came back.)"
    );
    println!();

    interrupt.check()?;
    println!("The rules with their counters; the DROP counts the attempts it blocked:");
    println!("$ netbeast iptables -L -v -n --line-numbers");
    let listing = bed
        .iptables_ok("-L -v -n --line-numbers")
        .context("listing the rules")?;
    print_indented(&listing);
    println!();

    drop(_servers);
    drop(bed);
    println!("Cleaned up: netbeast detached, both namespaces deleted.");
    Ok(surprises)
}
