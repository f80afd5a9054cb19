//! `netbeast bench --scenario lb`: what balancing a new connection costs
//! the XDP program, with 3, 100, 1,000 backends, for a `netbeast lb`
//! service (Maglev) and for the kube-proxy shape of `-m statistic` rules
//! (nat PREROUTING: `--probability 1/n, 1/(n-1), …` each with its DNAT),
//! and what a backend change costs at each size.
//!
//! Measured with BPF_PROG_TEST_RUN of the real XDP program, on the first
//! packet of a UDP flow to the VIP. DROP rules in FORWARD and INPUT behind
//! the balancing (the test run's namespace may not forward, or may have no
//! route: the kernel path) keep the connection from being confirmed, so
//! every run is a first packet again (checked: no conntrack entry after a
//! run): the cost is the balancing path (parse, conntrack miss, the pick
//! and the DNAT, routing), not an established flow's. Each data plane's output frame is checked to be DNATed to one
//! of its backends before anything is timed.
//!
//! iptables and nftables cannot be measured this way (they are not XDP
//! programs); live traffic through a router, as `dnat` does, is the next
//! step (docs/BENCHMARKS.md).

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use serde::Serialize;

use crate::{
    lb::{Check, Health, Scheduler, Services},
    loader::Dataplane,
    packet::FrameBuilder,
    rules::{model::Ruleset, save},
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const PORT: u16 = 9;
/// XDP_DROP and XDP_PASS, as BPF_PROG_TEST_RUN reports them.
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
/// Flows (source ports) the timed runs cycle over.
const FRAMES: usize = 1024;
/// Offset of the IPv4 destination address in the untagged test frame.
const DST_OFFSET: usize = 14 + 16;

/// Backend `i`: 10.64.0.0/10, one address each.
fn backend(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 0)) + i as u32 + 1)
}

#[derive(Clone, Debug, Serialize)]
pub struct LbRow {
    pub label: String,
    pub backends: usize,
    /// Median over the rounds, nanoseconds per first packet.
    pub ns_per_packet: f64,
    pub min_ns: f64,
    pub max_ns: f64,
    /// Distinct backends chosen for 300 flows.
    pub distinct_backends: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChangeRow {
    pub backends: usize,
    /// Median time to add one backend to a service of `backends`: the
    /// Maglev table rebuilt, written into the inactive generation, switched.
    pub add_backend_ms: f64,
    pub max_ms: f64,
    /// Of that, the median time to build the Maglev table alone (the rest
    /// is the map writes and the switch).
    pub build_ms: f64,
    pub table_size: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct LbReport {
    /// Timed runs per data plane and round (one first packet each).
    pub repeat: u32,
    pub rounds: usize,
    pub rows: Vec<LbRow>,
    pub changes: Vec<ChangeRow>,
}

/// The kube-proxy / article shape: n DNAT rules, each taking `1/(n-i)` of
/// what reaches it, the last one the rest; then FORWARD drops.
fn statistic_text(n: usize) -> String {
    let mut text = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n",
    );
    for i in 0..n {
        let statistic = if i + 1 < n {
            format!(
                " -m statistic --mode random --probability {:.10}",
                1.0 / (n - i) as f64
            )
        } else {
            String::new()
        };
        text += &format!(
            "-A PREROUTING -d {VIP}/32 -p udp -m udp --dport {PORT}{statistic} -j DNAT \
             --to-destination {}:{PORT}\n",
            backend(i)
        );
    }
    text += "COMMIT\n";
    text + &forward_drop_text()
}

fn forward_drop_text() -> String {
    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
     -A INPUT -j DROP\n-A FORWARD -j DROP\nCOMMIT\n"
        .to_string()
}

fn ruleset_of(text: &str) -> Result<Ruleset> {
    let file = save::parse_restore(text)?;
    let mut ruleset = Ruleset::default();
    save::apply_restore(&mut ruleset, &file, false)?;
    Ok(ruleset)
}

/// A service VIP:9/udp over `n` backends on `dp`; the services, to change
/// later.
fn lb_service(dp: &mut Dataplane, n: usize) -> Result<Services> {
    let mut services = Services::default();
    services.add(
        format!("{VIP}:{PORT}/udp").parse()?,
        Scheduler::Maglev,
        Health {
            check: Check::None,
            interval_ms: 2000,
            rise: 2,
            fall: 3,
        },
    )?;
    let s = &mut services.services[0];
    let mut fresh = Vec::new();
    for i in 0..n {
        fresh.extend(s.add_backend(backend(i), PORT, 1)?);
    }
    s.install(dp, &fresh, false)?;
    Ok(services)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs of [`spread`].
const SPREAD_RUNS: usize = 300;

/// Distinct backends over [`SPREAD_RUNS`] first packets from as many
/// source ports: each data plane must really spread its connections (a
/// cascade cut short would pick among its first rules only).
fn spread(dp: &mut Dataplane, n: usize, what: &str) -> Result<usize> {
    let mut seen = std::collections::HashSet::new();
    for i in 0..SPREAD_RUNS {
        let frame = FrameBuilder::udp(CLIENT, 10_000 + i as u16, VIP, PORT).build();
        seen.insert(check_balanced(dp, &frame, n, what)?);
    }
    Ok(seen.len())
}

/// Checks that one run of `frame` through `dp` is dropped by FORWARD after
/// a DNAT to one of the first `n` backends; returns the backend.
fn check_balanced(dp: &mut Dataplane, frame: &[u8], n: usize, what: &str) -> Result<Ipv4Addr> {
    let out = dp.test_run_xdp(frame, 1)?;
    // Dropped by FORWARD or INPUT, or passed to the kernel where the test
    // run's namespace has no route to the backend: either way unconfirmed.
    ensure!(
        out.action == XDP_DROP || out.action == XDP_PASS,
        "{what}: XDP action {} for the first packet",
        out.action
    );
    ensure!(
        dp.conntrack_entries()?.is_empty(),
        "{what}: the first packet was recorded as a connection: later runs would not \
         measure balancing"
    );
    let dst = Ipv4Addr::from(<[u8; 4]>::try_from(&out.frame[DST_OFFSET..DST_OFFSET + 4])?);
    ensure!(
        (0..n).any(|i| backend(i) == dst),
        "{what}: the first packet went to {dst}, not to a backend"
    );
    Ok(dst)
}

pub fn run(backend_counts: &[usize], repeat: u32, rounds: usize) -> Result<LbReport> {
    ensure!(
        !backend_counts.is_empty() && rounds > 0,
        "nothing to measure"
    );
    let frame = FrameBuilder::udp(CLIENT, 4000, VIP, PORT).build();
    let mut planes: Vec<(String, usize, Dataplane, usize)> = Vec::new();
    for &n in backend_counts {
        let mut dp = Dataplane::load_private()?;
        dp.apply(&ruleset_of(&forward_drop_text())?, &[])?;
        lb_service(&mut dp, n)?;
        let what = format!("netbeast lb (maglev), {n} backends");
        check_balanced(&mut dp, &frame, n, &what)?;
        let distinct = spread(&mut dp, n, &what)?;
        planes.push((what, n, dp, distinct));
    }
    for &n in backend_counts {
        let mut dp = Dataplane::load_private()?;
        dp.apply(&ruleset_of(&statistic_text(n))?, &[])
            .with_context(|| format!("the -m statistic cascade of {n} backends"))?;
        let what = format!("netbeast -m statistic, {n} backends");
        check_balanced(&mut dp, &frame, n, &what)?;
        let distinct = spread(&mut dp, n, &what)?;
        planes.push((what, n, dp, distinct));
    }
    // One run per call, each on a fresh copy of a frame: with `repeat`, the
    // kernel runs the program again on the frame the last run left, which
    // here is DNATed to a backend, so every run after the first would miss
    // the service. The kernel times each call's run alone (not the
    // syscall); frames cycle over FRAMES source ports (flows).
    let frames: Vec<Vec<u8>> = (0..FRAMES)
        .map(|i| FrameBuilder::udp(CLIENT, 20_000 + i as u16, VIP, PORT).build())
        .collect();
    let mut samples = vec![Vec::new(); planes.len()];
    for _ in 0..rounds {
        for (i, (_, _, dp, _)) in planes.iter_mut().enumerate() {
            let mut total = Duration::ZERO;
            for k in 0..repeat as usize {
                let (_, t) = dp.test_run_repeat(&frames[k % FRAMES], 1, false)?;
                total += t;
            }
            samples[i].push(total.as_secs_f64() * 1e9 / repeat as f64);
        }
    }
    let rows = planes
        .iter()
        .zip(samples.iter_mut())
        .map(|((label, n, _, distinct), s)| LbRow {
            label: label.clone(),
            backends: *n,
            distinct_backends: *distinct,
            min_ns: s.iter().copied().fold(f64::MAX, f64::min),
            max_ns: s.iter().copied().fold(0.0, f64::max),
            ns_per_packet: median(s),
        })
        .collect();
    drop(planes);

    // A backend change: one more backend, the table rebuilt and switched.
    let mut changes = Vec::new();
    for &n in backend_counts {
        let mut dp = Dataplane::load_private()?;
        let mut services = lb_service(&mut dp, n)?;
        let mut times = Vec::new();
        let mut builds = Vec::new();
        for r in 0..rounds.max(3) {
            let s = &mut services.services[0];
            let started = Instant::now();
            s.plan(false)?;
            builds.push(started.elapsed().as_secs_f64() * 1e3);
            let started = Instant::now();
            let fresh: Vec<u16> = s
                .add_backend(backend(n + r), PORT, 1)?
                .into_iter()
                .collect();
            s.install(&mut dp, &fresh, false)?;
            times.push(started.elapsed());
            // Back to n for the next round (not timed).
            s.backends.retain(|b| b.addr != backend(n + r));
            s.install(&mut dp, &[], false)?;
        }
        let mut ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        let max_ms = times.iter().max().copied().unwrap_or(Duration::ZERO);
        changes.push(ChangeRow {
            backends: n,
            add_backend_ms: median(&mut ms),
            max_ms: max_ms.as_secs_f64() * 1e3,
            build_ms: median(&mut builds),
            table_size: services.services[0].table_size,
        });
    }
    Ok(LbReport {
        repeat,
        rounds,
        rows,
        changes,
    })
}

pub fn print(report: &LbReport) {
    println!(
        "Balancing a new connection, BPF_PROG_TEST_RUN, first UDP packets of {} flows x {} rounds \
         (median, min-max)",
        report.repeat, report.rounds
    );
    println!(
        "{:<40} {:>10} {:>19} {:>14}",
        "data plane", "ns/packet", "min-max", "backends/300"
    );
    for r in &report.rows {
        println!(
            "{:<40} {:>10.1} {:>19} {:>14}",
            r.label,
            r.ns_per_packet,
            format!("{:.1}-{:.1}", r.min_ns, r.max_ns),
            r.distinct_backends
        );
    }
    println!("Adding a backend to a netbeast lb service (rebuild, write, switch):");
    for c in &report.changes {
        println!(
            "  {:>5} backends (table {:>6}): {:.2} ms (max {:.2}; the table's build alone {:.2})",
            c.backends, c.table_size, c.add_backend_ms, c.max_ms, c.build_ms
        );
    }
}
