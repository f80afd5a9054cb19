//! `netbeast bench --scenario control-plane`: what one iptables call costs
//! with netbeast, iptables-nft and iptables-legacy, at growing rule counts,
//! in namespaces of its own (DESIGN §14, issue 17). Each call is a whole
//! process, as fail2ban, Docker and kube-proxy make them, timed from spawn
//! to exit; the figure is the median over the rounds, the planes measured
//! in turn within each round so a drift of the machine hits them alike.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::netns::Netns;

/// One iptables call measured: a label and its arguments (after
/// `iptables`). `{n}` is replaced by a number unique to the round, so a
/// rule added and deleted again never collides with the ruleset's.
struct Op {
    label: &'static str,
    args: &'static str,
    /// The call's exit status on every plane: `-C` of a missing rule is 1.
    status: i32,
}

/// In the order run: each round adds and deletes its own rules, so the
/// ruleset is back to its N rules after every round.
const OPS: &[Op] = &[
    Op {
        label: "-C (rule missing)",
        args: "-C INPUT -s 203.0.113.{n} -j DROP",
        status: 1,
    },
    Op {
        label: "-A",
        args: "-A INPUT -s 203.0.113.{n} -j DROP",
        status: 0,
    },
    Op {
        label: "-D by spec",
        args: "-D INPUT -s 203.0.113.{n} -j DROP",
        status: 0,
    },
    Op {
        label: "-I 1",
        args: "-I INPUT 1 -s 198.51.100.{n} -j DROP",
        status: 0,
    },
    Op {
        label: "-D 1",
        args: "-D INPUT 1",
        status: 0,
    },
    Op {
        label: "-N",
        args: "-N NBT{n}",
        status: 0,
    },
    Op {
        label: "-X (empty chain)",
        args: "-X NBT{n}",
        status: 0,
    },
    Op {
        label: "-S INPUT",
        args: "-S INPUT",
        status: 0,
    },
    Op {
        label: "-L -n",
        args: "-L INPUT -n",
        status: 0,
    },
];

/// A firewall whose calls are measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Plane {
    Netbeast,
    IptablesNft,
    IptablesLegacy,
}

impl Plane {
    pub const ALL: [Plane; 3] = [Plane::Netbeast, Plane::IptablesNft, Plane::IptablesLegacy];

    fn name(self) -> &'static str {
        match self {
            Plane::Netbeast => "netbeast",
            Plane::IptablesNft => "iptables-nft",
            Plane::IptablesLegacy => "iptables-legacy",
        }
    }

    /// The program and leading arguments of one iptables call.
    fn iptables(self, netbeast: &Path) -> (PathBuf, Vec<&'static str>) {
        match self {
            Plane::Netbeast => (netbeast.to_path_buf(), vec!["iptables"]),
            Plane::IptablesNft => ("iptables-nft".into(), vec![]),
            Plane::IptablesLegacy => ("iptables-legacy".into(), vec![]),
        }
    }

    fn restore(self, netbeast: &Path) -> (PathBuf, Vec<&'static str>) {
        match self {
            Plane::Netbeast => (netbeast.to_path_buf(), vec!["restore"]),
            Plane::IptablesNft => ("iptables-nft-restore".into(), vec![]),
            Plane::IptablesLegacy => ("iptables-legacy-restore".into(), vec![]),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub op: String,
    pub rules: usize,
    pub plane: Plane,
    /// Median wall time of one call, milliseconds.
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub rounds: usize,
    pub rows: Vec<Row>,
}

/// `n` INPUT rules in iptables-restore format, each distinct.
pub fn ruleset(n: usize) -> String {
    let mut text =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for i in 0..n {
        text.push_str(&format!(
            "-A INPUT -s 10.{}.{}.{}/32 -p tcp -m tcp --dport {} -j DROP\n",
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff,
            1024 + (i % 60000)
        ));
    }
    text.push_str("COMMIT\n");
    text
}

/// Service `k`'s lines of a kube-proxy 1.29 nat table (iptables mode):
/// its KUBE-SERVICES jump, and its chain's and its two endpoint chains'
/// rules, the endpoints `endpoints` (chain name, address).
fn kube_service(k: usize, endpoints: &[(String, String)]) -> (String, Vec<String>) {
    let vip = format!("10.96.{}.{}", 1 + k / 250, k % 250 + 1);
    let (svc, name) = (format!("KUBE-SVC-B{k:05}"), format!("bench/svc{k}"));
    let jump = format!(
        "-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment \"{name} cluster IP\" \
         -m tcp --dport 80 -j {svc}"
    );
    let mut lines = vec![format!(
        "-A {svc} ! -s 10.244.0.0/16 -d {vip}/32 -p tcp -m comment --comment \"{name} \
         cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ"
    )];
    for (e, (sep, _)) in endpoints.iter().enumerate() {
        lines.push(if e + 1 < endpoints.len() {
            format!("-A {svc} -m statistic --mode random --probability 0.50000000000 -j {sep}")
        } else {
            format!("-A {svc} -j {sep}")
        });
    }
    for (sep, ep) in endpoints {
        lines.push(format!("-A {sep} -s {ep}/32 -j KUBE-MARK-MASQ"));
        lines.push(format!(
            "-A {sep} -p tcp -m tcp -j DNAT --to-destination {ep}:8080"
        ));
    }
    (jump, lines)
}

/// Service `k`'s two endpoint chains; `generation` names a later set
/// (what a sync moves the service to).
fn kube_endpoints(k: usize, generation: usize) -> Vec<(String, String)> {
    (0..2)
        .map(|e| {
            let n = 2 * k + e + generation * 131_072;
            (
                format!("KUBE-SEP-B{k:05}-{generation}-{e}"),
                format!("10.{}.{}.{}", 244 + n / 65_536 % 8, n / 256 % 256, n % 256),
            )
        })
        .collect()
}

/// kube-proxy's nat table with `services` services of two endpoints each
/// (every endpoint a pod address of its own), and its rule count.
pub fn kube_ruleset(services: usize) -> (String, usize) {
    let mut text = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n\
         :KUBE-POSTROUTING - [0:0]\n",
    );
    let (mut jumps, mut chains) = (Vec::new(), Vec::new());
    for k in 0..services {
        let endpoints = kube_endpoints(k, 0);
        text.push_str(&format!(":KUBE-SVC-B{k:05} - [0:0]\n"));
        for (sep, _) in &endpoints {
            text.push_str(&format!(":{sep} - [0:0]\n"));
        }
        let (jump, lines) = kube_service(k, &endpoints);
        jumps.push(jump);
        chains.extend(lines);
    }
    let fixed = [
        "-A PREROUTING -j KUBE-SERVICES",
        "-A OUTPUT -j KUBE-SERVICES",
        "-A POSTROUTING -j KUBE-POSTROUTING",
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
        "-A KUBE-POSTROUTING -j MASQUERADE --random-fully",
    ];
    let rules = fixed.len() + jumps.len() + chains.len();
    for line in fixed
        .iter()
        .map(|l| l.to_string())
        .chain(jumps)
        .chain(chains)
    {
        text.push_str(&line);
        text.push('\n');
    }
    text.push_str("COMMIT\n");
    (text, rules)
}

/// kube-proxy's partial sync after service `k`'s endpoints changed (for
/// `--noflush`): KUBE-SERVICES declared and written whole, as every sync
/// does, the service's chain rewritten for two new endpoint chains, the
/// old ones flushed and deleted. `generation`: the endpoints it moves
/// from (the next one is where it moves to).
pub fn kube_sync(services: usize, k: usize, generation: usize) -> String {
    let (old, new) = (
        kube_endpoints(k, generation),
        kube_endpoints(k, generation + 1),
    );
    let mut lines = vec![
        "*nat".to_string(),
        ":KUBE-SERVICES - [0:0]".to_string(),
        format!(":KUBE-SVC-B{k:05} - [0:0]"),
    ];
    lines.extend(
        new.iter()
            .chain(&old)
            .map(|(sep, _)| format!(":{sep} - [0:0]")),
    );
    let mut own = Vec::new();
    for j in 0..services {
        let endpoints = if j == k {
            new.clone()
        } else {
            kube_endpoints(j, 0)
        };
        let (jump, rules) = kube_service(j, &endpoints);
        lines.push(jump);
        if j == k {
            own = rules;
        }
    }
    lines.extend(own);
    lines.extend(old.iter().map(|(sep, _)| format!("-X {sep}")));
    lines.push("COMMIT".to_string());
    lines.join("\n") + "\n"
}

/// Runs `program args` in `ns` (`ip netns exec`, the same for every
/// plane), feeding `input`; Err with its output when it fails.
fn call(
    ns: &Netns,
    program: &Path,
    args: &[&str],
    input: Option<&str>,
    status: i32,
) -> Result<Duration> {
    use std::io::Write;
    let mut command = ns.command(program);
    command.args(args);
    command.stdout(std::process::Stdio::null());
    command.stderr(std::process::Stdio::piped());
    if input.is_some() {
        command.stdin(std::process::Stdio::piped());
    }
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run {}", program.display()))?;
    if let Some(input) = input {
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let took = started.elapsed();
    if out.status.code() != Some(status) {
        bail!(
            "{} {} exited with {}, not {status}: {}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(took)
}

fn stats(samples: &mut [f64]) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    (median, samples[0], samples[samples.len() - 1])
}

/// Measures every op at every rule count on every plane, then a restore
/// of kube-proxy's ruleset and one partial sync per round at every count
/// of `services`.
pub fn run(
    netbeast: &Path,
    rules: &[usize],
    services: &[usize],
    rounds: usize,
    planes: &[Plane],
) -> Result<Report> {
    let mut rows = Vec::new();
    for &n in rules {
        let text = ruleset(n);
        let hosts = hosts(netbeast, planes)?;
        let mut restore: Vec<Vec<f64>> = vec![Vec::new(); hosts.len()];
        let mut samples: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); OPS.len()]; hosts.len()];
        for round in 0..rounds {
            for (h, (plane, ns)) in hosts.iter().enumerate() {
                let (program, lead) = plane.restore(netbeast);
                let took = call(ns, &program, &lead, Some(&text), 0)
                    .with_context(|| format!("{}: restore of {n} rules", plane.name()))?;
                restore[h].push(took.as_secs_f64() * 1e3);
                let (program, lead) = plane.iptables(netbeast);
                for (o, op) in OPS.iter().enumerate() {
                    let args = op.args.replace("{n}", &(round % 250 + 1).to_string());
                    let mut all: Vec<&str> = lead.clone();
                    all.extend(args.split_whitespace());
                    let took = call(ns, &program, &all, None, op.status)
                        .with_context(|| format!("{}: {}", plane.name(), op.label))?;
                    samples[h][o].push(took.as_secs_f64() * 1e3);
                }
            }
        }
        for (h, (plane, _)) in hosts.iter().enumerate() {
            let (median_ms, min_ms, max_ms) = stats(&mut restore[h]);
            rows.push(Row {
                op: format!("restore of {n} rules"),
                rules: n,
                plane: *plane,
                median_ms,
                min_ms,
                max_ms,
            });
            for (o, op) in OPS.iter().enumerate() {
                let (median_ms, min_ms, max_ms) = stats(&mut samples[h][o]);
                rows.push(Row {
                    op: op.label.to_string(),
                    rules: n,
                    plane: *plane,
                    median_ms,
                    min_ms,
                    max_ms,
                });
            }
        }
    }
    for &n in services {
        let (text, count) = kube_ruleset(n);
        let hosts = hosts(netbeast, planes)?;
        let mut restore: Vec<Vec<f64>> = vec![Vec::new(); hosts.len()];
        let mut sync: Vec<Vec<f64>> = vec![Vec::new(); hosts.len()];
        for round in 0..rounds {
            // Each round moves another service, from its first endpoints
            // (the restore puts them back).
            let changes = kube_sync(n, (round * 7919) % n, 0);
            for (h, (plane, ns)) in hosts.iter().enumerate() {
                let (program, lead) = plane.restore(netbeast);
                let took = call(ns, &program, &lead, Some(&text), 0).with_context(|| {
                    format!("{}: restore of kube-proxy's {n} services", plane.name())
                })?;
                restore[h].push(took.as_secs_f64() * 1e3);
                let mut noflush = lead.clone();
                noflush.push("--noflush");
                let took = call(ns, &program, &noflush, Some(&changes), 0).with_context(|| {
                    format!("{}: kube-proxy's sync of {n} services", plane.name())
                })?;
                sync[h].push(took.as_secs_f64() * 1e3);
            }
        }
        for (h, (plane, _)) in hosts.iter().enumerate() {
            for (op, samples) in [
                (format!("kube-proxy restore, {n} services"), &mut restore[h]),
                (format!("kube-proxy sync, {n} services"), &mut sync[h]),
            ] {
                let (median_ms, min_ms, max_ms) = stats(samples);
                rows.push(Row {
                    op,
                    rules: count,
                    plane: *plane,
                    median_ms,
                    min_ms,
                    max_ms,
                });
            }
        }
    }
    Ok(Report { rounds, rows })
}

/// One namespace per plane: netbeast attached to a veth of its own, the
/// kernel's iptables in theirs.
fn hosts(netbeast: &Path, planes: &[Plane]) -> Result<Vec<(Plane, Netns)>> {
    let mut hosts = Vec::new();
    for &plane in planes {
        let ns = Netns::new(&format!("bench-cp-{}", plane.name()))?;
        if plane == Plane::Netbeast {
            let ns = ns.with_netbeast(netbeast);
            ns.ip(&[
                "link", "add", "nbt-cp0", "type", "veth", "peer", "name", "nbt-cp1",
            ])?;
            ns.ip(&["link", "set", "nbt-cp0", "up"])?;
            ns.ip(&["link", "set", "nbt-cp1", "up"])?;
            ns.netbeast_ok(&["attach", "nbt-cp0"])?;
            hosts.push((plane, ns));
        } else {
            hosts.push((plane, ns));
        }
    }
    Ok(hosts)
}

/// The report as a table: one line per op and rule count, a column per
/// plane, and netbeast's time over iptables-nft's.
pub fn print(report: &Report) {
    println!(
        "control plane: one call, wall ms (median of {} rounds; spawn to exit)",
        report.rounds
    );
    let planes: Vec<Plane> = Plane::ALL
        .into_iter()
        .filter(|p| report.rows.iter().any(|r| r.plane == *p))
        .collect();
    print!("{:<34} {:>7}", "call", "rules");
    for p in &planes {
        print!(" {:>16}", p.name());
    }
    println!(" {:>14}", "netbeast/nft");
    let mut seen: Vec<(String, usize)> = Vec::new();
    for row in &report.rows {
        let key = (row.op.clone(), row.rules);
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let of = |p: Plane| {
            report
                .rows
                .iter()
                .find(|r| r.op == row.op && r.rules == row.rules && r.plane == p)
                .map(|r| r.median_ms)
        };
        print!("{:<34} {:>7}", row.op, row.rules);
        for p in &planes {
            match of(*p) {
                Some(ms) => print!(" {ms:>16.1}"),
                None => print!(" {:>16}", "-"),
            }
        }
        match (of(Plane::Netbeast), of(Plane::IptablesNft)) {
            (Some(a), Some(b)) if b > 0.0 => println!(" {:>14.2}", a / b),
            _ => println!(" {:>14}", "-"),
        }
    }
}
