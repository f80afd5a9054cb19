//! The demo's logger section: the article's LOG rule on real connections,
//! the kernel's own line format read with `netbeast log`, and the same
//! lines written to a file of the user's choosing (what the article says
//! iptables cannot do), then `netbeast trace` on a described packet.

use std::path::Path;

use anyhow::Context;

use super::{CONNECT_TIMEOUT, InterruptGuard, Step, print_indented, saw, type_steps};
use crate::netns::{
    CLIENT_ADDR, ConnectOutcome, SERVER_ADDR, SERVER_IFACE, tcp_connect, tcp_server,
};

const STEPS: &[Step] = &[Step::new(
    "",
    r#"-I INPUT -m conntrack --ctstate NEW -j LOG --log-prefix="New incomming: ""#,
    "log every new connection",
)];

const PREFIX: &str = "New incomming: ";

pub(super) fn run(exe: &Path, interrupt: &InterruptGuard) -> anyhow::Result<Vec<String>> {
    // Dropping `bed` detaches netbeast and deletes both namespaces.
    let bed = super::testbed(exe)?;
    println!(
        "A client and a server ({SERVER_ADDR}), netbeast attached to the server's {SERVER_IFACE}."
    );
    bed.server()
        .netbeast_ok(&["attach", SERVER_IFACE])
        .context("running netbeast attach")?;
    let _servers = [tcp_server(bed.server(), 22)?, tcp_server(bed.server(), 80)?];
    let mut surprises = Vec::new();
    println!();
    println!(
        "The article's rule (a LOG rule does not decide: the next rule, here the policy, does):"
    );
    type_steps(bed.server(), STEPS, interrupt, &mut surprises)?;
    println!();

    let connect = |port: u16, surprises: &mut Vec<String>| -> anyhow::Result<()> {
        interrupt.check()?;
        let outcome = tcp_connect(bed.client(), bed.net.server_addr(port), CONNECT_TIMEOUT)?;
        saw(
            &format!("the client connects to port {port}"),
            &outcome,
            &ConnectOutcome::Connected,
            surprises,
        );
        Ok(())
    };
    connect(22, &mut surprises)?;
    println!();
    println!("$ netbeast log          # the kernel's own line format, as syslog would write it");
    let text = bed.server().netbeast_ok(&["log"]).context("netbeast log")?;
    print_indented(&text);
    expect_line(&text, 22, "netbeast log", &mut surprises);

    println!();
    connect(80, &mut surprises)?;
    let file = std::env::temp_dir().join(format!("{}.log", bed.server().name()));
    let _remove = RemoveOnDrop(&file);
    let shown = file.display().to_string();
    println!();
    println!("$ netbeast log --output {shown}    # any file, not only syslog");
    bed.server()
        .netbeast_ok(&["log", "--output", &shown])
        .context("netbeast log --output")?;
    let written = std::fs::read_to_string(&file).with_context(|| format!("reading {shown}"))?;
    println!("$ cat {shown}");
    print_indented(&written);
    expect_line(&written, 80, "the file", &mut surprises);

    println!();
    println!("And \"to see how far does the packet go\" without a LOG rule in every chain:");
    let packet = format!("tcp {CLIENT_ADDR}:40000 > {SERVER_ADDR}:22 syn in {SERVER_IFACE}");
    println!("$ netbeast trace --packet '{packet}'");
    let trace = bed
        .server()
        .netbeast_ok(&["trace", "--packet", &packet])
        .context("netbeast trace --packet")?;
    print_indented(&trace);
    let traced = trace.contains(PREFIX) && trace.contains("=> accepted");
    if !traced {
        surprises.push("netbeast trace did not show the LOG rule, then the packet accepted".into());
    }

    drop(_servers);
    drop(bed);
    println!();
    println!("Cleaned up: netbeast detached, both namespaces deleted.");
    Ok(surprises)
}

/// `text` must hold exactly one line, the LOG line of the SYN to `port`.
fn expect_line(text: &str, port: u16, what: &str, surprises: &mut Vec<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let dpt = format!(" DPT={port} ");
    let ok = lines.len() == 1
        && lines[0].contains(&format!("kernel: {PREFIX}IN={SERVER_IFACE} OUT= "))
        && lines[0].contains(&dpt)
        && lines[0].contains(" SYN ");
    if !ok {
        surprises.push(format!(
            "{what}: expected one LOG line for the SYN to port {port}, got {} lines",
            lines.len()
        ));
    }
}

/// Removes the demo's log file however the section ends.
struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}
