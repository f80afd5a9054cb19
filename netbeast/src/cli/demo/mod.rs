//! `netbeast demo`: the article, live, section by section.
//!
//! Each section builds its own hosts in network namespaces, attaches this
//! very binary where the article's box would run iptables, types the
//! article's command lines through `netbeast iptables`, drives real
//! connections, and says what the client saw. Everything a section creates
//! is removed when it ends, also after an error or Ctrl-C. `netbeast demo
//! SECTION` runs one; the run ends with a table of sections and outcomes.

mod antidos;
mod firewall;
mod lb;
mod logger;
mod portfwd;
mod router;

use std::{
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::ValueEnum;

use crate::netns::{ClientServer, ConnectOutcome, Firewall, Netns, Testbed, is_root};

/// A dropped SYN shows as a timeout; an answered one returns at once.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The article's sections, in its order.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum Section {
    /// "A firewall": examples 1-4 on INPUT.
    Firewall,
    /// "A router": FORWARD with the connection state.
    Router,
    /// "A NAT router": SNAT so a host without a route back can answer.
    Nat,
    /// "A port-forwarder": DNAT to 127.0.0.1:8080, and OUTPUT -o lo.
    Portfwd,
    /// "A load-balancer": round robin and random across three backends.
    Lb,
    /// "Anti-DoS": connlimit's 16th connection, limit's burst then rate,
    /// and hashlimit's bucket per address.
    Antidos,
    /// "A network logger": the LOG rule, `netbeast log` and its `--output`.
    Logger,
}

impl Section {
    fn title(self) -> &'static str {
        match self {
            Section::Firewall => "a firewall",
            Section::Router => "a router",
            Section::Nat => "a NAT router",
            Section::Portfwd => "a port-forwarder",
            Section::Lb => "a load-balancer",
            Section::Antidos => "anti-DoS",
            Section::Logger => "a network logger",
        }
    }

    /// Runs the section: the surprises (what did not go as the article
    /// says), or an error when it could not run at all.
    fn run(self, exe: &Path, interrupt: &InterruptGuard) -> anyhow::Result<Vec<String>> {
        match self {
            Section::Firewall => firewall::run(exe, interrupt),
            Section::Router => router::run_router(exe, interrupt),
            Section::Nat => router::run_nat(exe, interrupt),
            Section::Portfwd => portfwd::run(exe, interrupt),
            Section::Lb => lb::run(exe, interrupt),
            Section::Antidos => antidos::run(exe, interrupt),
            Section::Logger => logger::run(exe, interrupt),
        }
    }
}

/// Runs the whole demo, or one section; Err when a section could not run
/// or netbeast did not behave as the article says.
pub fn run(only: Option<Section>) -> anyhow::Result<()> {
    if !is_root() {
        bail!("netbeast demo creates network namespaces and needs root: run it with sudo");
    }
    let exe = std::env::current_exe().context("finding the netbeast binary")?;
    let interrupt = InterruptGuard::install();
    let sections: Vec<Section> = match only {
        Some(section) => vec![section],
        None => Section::value_variants().to_vec(),
    };
    println!("netbeast demo: \"iptables - a beast worth training\", section by section");
    let mut outcomes = Vec::new();
    for section in sections {
        if interrupt.check().is_err() {
            break;
        }
        println!();
        println!("=== {} ({}) ===", section.title(), name_of(section));
        println!();
        let started = Instant::now();
        let outcome = section.run(&exe, &interrupt);
        outcomes.push((section, outcome, started.elapsed()));
    }
    // Ctrl-C also reaches the commands the demo runs, so the first error
    // after it is theirs; say what really happened. Cleanup is done by now.
    if interrupt.check().is_err() {
        bail!("interrupted; the demo removed everything it had created");
    }
    println!();
    println!("{:<10} {:<18} {:>6}  outcome", "section", "", "time");
    let mut failed = Vec::new();
    for (section, outcome, took) in &outcomes {
        let text = match outcome {
            Ok(surprises) if surprises.is_empty() => "as the article says".to_string(),
            Ok(surprises) => format!("DIFFERENT: {}", surprises.join("; ")),
            Err(e) => format!("COULD NOT RUN: {e:#}"),
        };
        if !matches!(outcome, Ok(s) if s.is_empty()) {
            failed.push(name_of(*section));
        }
        println!(
            "{:<10} {:<18} {:>5.1}s  {text}",
            name_of(*section),
            section.title(),
            took.as_secs_f64()
        );
    }
    if !failed.is_empty() {
        bail!(
            "the demo did not go as the article says in: {}",
            failed.join(", ")
        );
    }
    println!();
    println!("Everything went as the article says.");
    Ok(())
}

fn name_of(section: Section) -> String {
    section
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// A client and a server namespace joined by a veth pair, the server
/// guarded by this netbeast (not attached yet): dropping it detaches
/// netbeast and deletes both namespaces.
fn testbed(exe: &Path) -> anyhow::Result<Testbed> {
    let firewall = Firewall::netbeast(exe);
    let ClientServer { client, server } =
        ClientServer::new("demo").context("creating the namespaces")?;
    Ok(Testbed {
        net: ClientServer {
            client,
            server: firewall.guard(server),
        },
        firewall,
    })
}

/// One command line of the article, as the demo types it.
struct Step {
    /// The article's number for the line, or "" when it has none.
    example: &'static str,
    rule: &'static str,
    why: &'static str,
    /// The article's literal line is wrong; netbeast must refuse it.
    refused: bool,
}

impl Step {
    const fn new(example: &'static str, rule: &'static str, why: &'static str) -> Step {
        Step {
            example,
            rule,
            why,
            refused: false,
        }
    }

    const fn refused(example: &'static str, rule: &'static str, why: &'static str) -> Step {
        Step {
            example,
            rule,
            why,
            refused: true,
        }
    }
}

/// Types `steps` into netbeast in `host` (which runs netbeast), printing
/// each line; a line that is refused or accepted against the article's
/// expectation is a surprise. Lines are split as a shell would split them,
/// so the article's quoted arguments (`--log-prefix="New incomming: "`)
/// reach netbeast as iptables would get them.
fn type_steps(
    host: &Netns,
    steps: &[Step],
    interrupt: &InterruptGuard,
    surprises: &mut Vec<String>,
) -> anyhow::Result<()> {
    for step in steps {
        interrupt.check()?;
        let number = if step.example.is_empty() {
            "   ".to_string()
        } else {
            format!("{:>2}.", step.example)
        };
        println!(
            "  {number} $ netbeast iptables {:<44} # {}",
            step.rule, step.why
        );
        let words = shlex::split(step.rule)
            .with_context(|| format!("unbalanced quotes in the demo's line {}", step.rule))?;
        let argv: Vec<&str> = std::iter::once("iptables")
            .chain(words.iter().map(String::as_str))
            .collect();
        let out = host
            .netbeast(&argv)
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
    Ok(())
}

/// Prints what a client saw against what the article says it should see.
fn saw(
    what: &str,
    outcome: &ConnectOutcome,
    expected: &ConnectOutcome,
    surprises: &mut Vec<String>,
) {
    let ok = outcome == expected;
    println!(
        "  {what:<44} {:<22} {}",
        outcome.to_string(),
        if ok { "ok" } else { "FAIL" }
    );
    if !ok {
        surprises.push(format!("{what}: {outcome} (expected {expected})"));
    }
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
