//! `netbeast demo`: the firewall section of the article, live.
//!
//! Builds a client and a server namespace joined by a veth pair, attaches
//! this very binary to the server's veth, applies the article's firewall
//! examples through `netbeast iptables`, drives real TCP connections from the
//! client and shows what got through and the rule counters. Everything it
//! creates is removed at the end, also after an error or Ctrl-C.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::netns::{
    CLIENT_ADDR, CLIENT_IFACE, ClientServer, ConnectOutcome, Firewall, SERVER_ADDR, SERVER_IFACE,
    Testbed, is_root, tcp_server,
};

/// A dropped SYN shows as a timeout; an answered one returns at once.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One step of the article's example list, as the demo types it.
struct Step {
    /// The article's number for the rule.
    example: u8,
    rule: &'static str,
    why: &'static str,
    /// The article's literal line is wrong; netbeast must refuse it.
    refused: bool,
}

const STEPS: &[Step] = &[
    Step {
        example: 1,
        rule: "-A INPUT -p tcp --dport 22 -j ACCEPT",
        why: "accept ssh",
        refused: false,
    },
    Step {
        example: 2,
        rule: "-A INPUT -j DROP",
        why: "drop everything else",
        refused: false,
    },
    Step {
        example: 3,
        rule: "-A INPUT -p tcp 8080 -j ACCEPT",
        why: "as the article wrote it",
        refused: true,
    },
    Step {
        example: 3,
        rule: "-A INPUT -p tcp --dport 8080 -j ACCEPT",
        why: "corrected, but appended after the DROP",
        refused: false,
    },
    Step {
        example: 4,
        rule: "-I INPUT -p tcp --dport 5432 -j ACCEPT",
        why: "inserted at the top",
        refused: false,
    },
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

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns Ctrl-C (and SIGTERM) into a flag the demo checks between steps, so
/// it stops through its normal error path and its guards clean up; restores
/// the previous handlers when dropped.
struct InterruptGuard {
    previous: [(libc::c_int, libc::sighandler_t); 2],
}

impl InterruptGuard {
    fn install() -> Self {
        let handler = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let previous = [libc::SIGINT, libc::SIGTERM]
            .map(|signal| (signal, unsafe { libc::signal(signal, handler) }));
        InterruptGuard { previous }
    }

    fn check(&self) -> anyhow::Result<()> {
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        Ok(())
    }
}

impl Drop for InterruptGuard {
    fn drop(&mut self) {
        for (signal, handler) in self.previous {
            // SAFETY: puts back the handler that was installed before.
            unsafe { libc::signal(signal, handler) };
        }
    }
}

/// Runs the demo; Err when setting up fails or netbeast did not behave as
/// the article says.
pub fn run() -> anyhow::Result<()> {
    if !is_root() {
        bail!("netbeast demo creates network namespaces and needs root: run it with sudo");
    }
    let exe = std::env::current_exe().context("finding the netbeast binary")?;
    let interrupt = InterruptGuard::install();
    let result = demo(&exe, &interrupt);
    // Ctrl-C also reaches the commands the demo runs, so the first error
    // after it is theirs; say what really happened. Cleanup is done by now.
    if interrupt.check().is_err() {
        bail!("interrupted; the demo removed everything it had created");
    }
    result
}

fn demo(exe: &std::path::Path, interrupt: &InterruptGuard) -> anyhow::Result<()> {
    println!("netbeast demo: the firewall examples of \"iptables - a beast worth training\"");
    println!();
    println!("Two hosts in their own network namespaces, joined by a veth pair:");
    let firewall = Firewall::netbeast(exe);
    let ClientServer { client, server } =
        ClientServer::new("demo").context("creating the namespaces")?;
    // From here on, dropping `bed` detaches netbeast and deletes both namespaces.
    let bed = Testbed {
        net: ClientServer {
            client,
            server: firewall.guard(server),
        },
        firewall,
    };
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
    for step in STEPS {
        interrupt.check()?;
        println!(
            "  {}. $ netbeast iptables {:<42} # {}",
            step.example, step.rule, step.why
        );
        let out = bed
            .iptables(step.rule)
            .with_context(|| format!("running netbeast iptables {}", step.rule))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        match (out.status.success(), step.refused) {
            (false, true) => println!(
                "       refused, nothing changed: {}",
                stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("")
            ),
            (true, false) => {}
            (true, true) => {
                println!("       ACCEPTED, but this line is wrong and should have been refused");
                surprises.push(format!("`{}` was accepted", step.rule));
            }
            (false, false) => bail!("netbeast iptables {} failed: {}", step.rule, stderr.trim()),
        }
    }
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

    if !surprises.is_empty() {
        bail!(
            "the demo did not go as the article says: {}",
            surprises.join("; ")
        );
    }
    println!("Everything went as the article says.");
    Ok(())
}

fn print_indented(text: &str) {
    for line in text.trim_end().lines().map(str::trim_end) {
        if line.is_empty() {
            println!();
        } else {
            println!("  {line}");
        }
    }
}
