//! `netbeast bench`: the cost of the data plane, measured in one run.
//!
//! Traffic ([`traffic`]): netbeast, iptables and nftables receive the same
//! traffic on a veth pair, scenario by scenario (drop, pass, forward,
//! dnat), at growing rule counts, from the XDP live-frames generator or
//! the kernel's pktgen ([`generator`]).
//!
//! Program cost: BPF_PROG_TEST_RUN of the real XDP program on a 64-byte UDP
//! frame, repeated, at growing rule counts where only the last rule matches,
//! next to a do-nothing XDP_DROP program (the floor). Ruleset change cost:
//! the time to compile and install a ruleset of the largest size.

pub mod control;
mod ethtool;
pub mod fanout;
pub mod generator;
pub mod lb;
pub mod live;
pub mod napi;
pub mod packet;
pub mod pktgen;
pub mod planes;
pub mod plot;
pub mod synflood;
pub mod traffic;

use crate::rules::model::Ports;
use std::{net::Ipv4Addr, time::Instant};

use anyhow::{Result, ensure};
use serde::Serialize;

use crate::{
    loader::Dataplane,
    packet::FrameBuilder,
    rules::{
        model::{Ipv4Net, Match, Negatable, Policy, PortRange, Rule, Ruleset, Target},
        save,
    },
};

/// XDP_DROP and XDP_REDIRECT, as BPF_PROG_TEST_RUN reports them.
const XDP_DROP: u32 = 1;
const XDP_REDIRECT: u32 = 4;
const SOURCE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const DESTINATION: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// `lo`'s ifindex: where `BPF_PROG_TEST_RUN` frames arrive.
const LOOPBACK_IFINDEX: u32 = 1;
const DPORT: u16 = 9;

#[derive(Clone, Debug, Serialize)]
pub struct CostRow {
    pub label: String,
    pub rules: usize,
    /// Median over the rounds, nanoseconds per packet.
    pub ns_per_packet: f64,
    pub min_ns: f64,
    pub max_ns: f64,
    /// Median cost divided by the 1-rule cost.
    pub ratio_to_one_rule: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub repeat: u32,
    pub rounds: usize,
    pub floor_ns: f64,
    /// The pipeline without a search: no rules, policy DROP (parse,
    /// conntrack, route, counters), in ns per packet.
    pub no_rules_ns: f64,
    pub rows: Vec<CostRow>,
    /// Seconds to restore the largest ruleset from iptables-save text:
    /// parse, compile, write the maps, switch.
    pub install_seconds: f64,
    pub install_rules: usize,
    /// The 1-rule chain behind a rule every packet meets that has no
    /// verdict: what a LOG rule costs, in parts, and what the `limit`
    /// scenario's hashlimit rule costs ([`Front`]).
    pub log_rows: Vec<CostRow>,
    /// The forwarding path's variants (issue 20), frames arriving on a
    /// router's veth: where a forwarded packet's nanoseconds go.
    pub forward_rows: Vec<CostRow>,
    /// The IPv6 program on the drop scenario's ip6tables rulesets (issue
    /// 16): the INPUT policy alone, then each rule count.
    pub ipv6_rows: Vec<CostRow>,
}

/// What stands in front of the one DROP rule in the LOG rows of the
/// program cost: the search going on past a rule without a verdict
/// (`Count`), that plus a LOG event refused by a full ring buffer
/// (`LogLost`), that plus an event written (`LogKept`); and the `limit`
/// scenario's hashlimit rule (`Hashlimit`: the guard path of one key,
/// hot in the cache, so its instructions).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Front {
    Count,
    LogLost,
    LogKept,
    Hashlimit,
}

impl Front {
    const ALL: [Front; 4] = [
        Front::Count,
        Front::LogLost,
        Front::LogKept,
        Front::Hashlimit,
    ];

    fn label(self) -> &'static str {
        match self {
            Front::Count => "1 rule behind a count-only rule",
            Front::LogLost => "1 rule behind LOG, ring full",
            Front::LogKept => "1 rule behind LOG, events kept",
            Front::Hashlimit => "1 rule behind limit's hashlimit rule",
        }
    }

    /// LOG events one packet gives.
    fn events(self) -> usize {
        usize::from(matches!(self, Front::LogLost | Front::LogKept))
    }

    fn ruleset(self) -> Result<Ruleset> {
        let front = match self {
            Front::Count => format!("-p udp -m udp --dport {DPORT}"),
            Front::LogLost | Front::LogKept => planes::LOG_RULE.to_string(),
            Front::Hashlimit => planes::HASHLIMIT_RULE.to_string(),
        };
        let text = format!(
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT {front}\n\
             -A INPUT -p udp -m udp --dport {DPORT} -j DROP\nCOMMIT\n"
        );
        let file = save::parse_restore(&text)?;
        let mut ruleset = Ruleset::default();
        save::apply_restore(&mut ruleset, &file, false)?;
        Ok(ruleset)
    }
}

/// Test runs per call for `Front::LogKept`: few enough that their events
/// fit the ring buffer, which is drained between calls, so every reserve
/// succeeds.
const KEPT_RUNS_PER_CALL: u32 = 2048;

/// One round of a LOG row: `repeat` runs, ns per run.
fn log_row_round(
    front: Front,
    dp: &mut Dataplane,
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    frame: &[u8],
    repeat: u32,
) -> Result<f64> {
    if front != Front::LogKept {
        let (_, t) = dp.test_run_repeat(frame, repeat, false)?;
        return Ok(t.as_secs_f64() * 1e9);
    }
    let calls = repeat.div_ceil(KEPT_RUNS_PER_CALL).max(1);
    let mut total = 0.0;
    for _ in 0..calls {
        while ring.next().is_some() {}
        let (_, t) = dp.test_run_repeat(frame, KEPT_RUNS_PER_CALL, false)?;
        total += t.as_secs_f64() * 1e9;
    }
    let kept = ring_len(ring);
    ensure!(
        kept == KEPT_RUNS_PER_CALL as usize,
        "the LOG row meant to keep every event kept {kept} of {KEPT_RUNS_PER_CALL}"
    );
    Ok(total / calls as f64)
}

fn ring_len(ring: &mut aya::maps::RingBuf<aya::maps::MapData>) -> usize {
    let mut n = 0;
    while ring.next().is_some() {
        n += 1;
    }
    n
}

/// `n` INPUT rules: `n - 1` that differ from the packet only in their
/// source address, then `-p udp --dport 9 -j DROP`, the one that matches.
pub fn last_rule_matches(n: usize) -> Ruleset {
    let mut ruleset = Ruleset::default();
    let input = ruleset.filter.chain_mut("INPUT").expect("built-in chain");
    for i in 0..n {
        let mut rule = Rule::new(Target::Drop);
        rule.protocol = Some(Negatable::is(17));
        if i + 1 < n {
            let addr = Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8);
            rule.source = Some(Negatable::is(Ipv4Net::new(addr, 32)));
        }
        rule.matches.push(Match::Ports(Ports {
            protocol: 17,
            sport: None,
            dport: Some(Negatable::is(PortRange {
                first: DPORT,
                last: DPORT,
            })),
            tcp_flags: None,
            tcp_option: None,
            sctp_chunks: None,
            dccp: None,
        }));
        input.rules.push(rule);
    }
    ruleset
}

/// `ruleset` with `-p tcp --syn -j DROP` first in INPUT: a rule the
/// benchmark's UDP packets never match, which makes the chain look up the
/// protocol and TCP flags fields too (issue 11's check that a new static
/// field costs what the old ones do).
pub fn behind_syn_rule(mut ruleset: Ruleset) -> Ruleset {
    let mut syn = Rule::new(Target::Drop);
    syn.protocol = Some(Negatable::is(6));
    syn.matches.push(Match::Ports(Ports {
        protocol: 6,
        sport: None,
        dport: None,
        tcp_flags: Some(Negatable::is(crate::rules::ext::tcp::SYN)),
        tcp_option: None,
        sctp_chunks: None,
        dccp: None,
    }));
    let input = ruleset.filter.chain_mut("INPUT").expect("built-in chain");
    input.rules.insert(0, syn);
    ruleset
}

impl CostRow {
    /// A row of `rules` rules from its rounds' ns per packet (the ratio
    /// left for the caller).
    fn of_samples(label: String, rules: usize, s: &mut [f64]) -> CostRow {
        CostRow {
            label,
            rules,
            min_ns: s.iter().copied().fold(f64::MAX, f64::min),
            max_ns: s.iter().copied().fold(0.0, f64::max),
            ns_per_packet: median(s),
            ratio_to_one_rule: 0.0,
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the program-cost benchmark. Data planes are interleaved round by
/// round so machine noise hits every row alike.
pub fn program_cost(rule_counts: &[usize], repeat: u32, rounds: usize) -> Result<Report> {
    ensure!(!rule_counts.is_empty() && rounds > 0, "nothing to measure");
    let frame = FrameBuilder::udp(SOURCE, 4000, DESTINATION, DPORT).build();
    // The test runs arrive on lo, whose frames the kernel takes as the
    // host's own; a guard entry for it makes the program check them as it
    // checks a NIC's (MAC, header checksum, martians), as in production.
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&frame[..6]);
    let guards = [(LOOPBACK_IFINDEX, mac, false)];
    let mut planes = Vec::new();
    let shapes = [(false, ""), (true, " behind a --syn rule")];
    for (syn, suffix) in shapes {
        for &n in rule_counts {
            let mut dp = Dataplane::load_private()?;
            dp.set_local_addresses(&[DESTINATION])?;
            dp.set_interface_guards(&guards)?;
            let ruleset = last_rule_matches(n);
            dp.apply(
                &if syn {
                    behind_syn_rule(ruleset)
                } else {
                    ruleset
                },
                &[],
            )?;
            let (verdict, _) = dp.test_run_repeat(&frame, 1, false)?;
            ensure!(
                verdict == XDP_DROP,
                "with {n} rules{suffix} the last rule did not drop the packet (XDP action {verdict})"
            );
            planes.push((n, suffix, dp));
        }
    }
    // Policy DROP, like the rule that matches in the other rows: no
    // connection is confirmed, so every run takes the same path.
    let mut no_rules_ruleset = Ruleset::default();
    no_rules_ruleset
        .filter
        .chain_mut("INPUT")
        .expect("built-in chain")
        .policy = Some(Policy::Drop);
    let mut empty = Dataplane::load_private()?;
    empty.set_local_addresses(&[DESTINATION])?;
    empty.set_interface_guards(&guards)?;
    empty.apply(&no_rules_ruleset, &[])?;
    let mut samples = vec![Vec::new(); planes.len()];
    let mut floor = Vec::new();
    let mut no_rules = Vec::new();
    for _ in 0..rounds {
        let (_, t) = planes[0].2.test_run_repeat(&frame, repeat, true)?;
        floor.push(t.as_secs_f64() * 1e9);
        let (_, t) = empty.test_run_repeat(&frame, repeat, false)?;
        no_rules.push(t.as_secs_f64() * 1e9);
        for (i, (_, _, dp)) in planes.iter_mut().enumerate() {
            let (_, t) = dp.test_run_repeat(&frame, repeat, false)?;
            samples[i].push(t.as_secs_f64() * 1e9);
        }
    }
    let floor_ns = median(&mut floor);
    let no_rules_ns = median(&mut no_rules);
    drop(empty);
    let mut log_rows = log_rows(&frame, &guards, repeat, rounds)?;
    let mut rows: Vec<CostRow> = planes
        .iter()
        .zip(samples.iter_mut())
        .map(|((n, suffix, _), s)| {
            let min_ns = s.iter().copied().fold(f64::MAX, f64::min);
            let max_ns = s.iter().copied().fold(0.0, f64::max);
            CostRow {
                label: format!("netbeast, {n} rules{suffix}"),
                rules: *n,
                ns_per_packet: median(s),
                min_ns,
                max_ns,
                ratio_to_one_rule: 0.0,
            }
        })
        .collect();
    let base = rows[0].ns_per_packet;
    for r in &mut rows {
        r.ratio_to_one_rule = r.ns_per_packet / base;
    }
    drop(planes);
    for r in &mut log_rows {
        r.ratio_to_one_rule = r.ns_per_packet / base;
    }

    // What `netbeast restore FILE` does with the largest ruleset: parse the
    // iptables-save text, build the ruleset, compile, write the maps, switch.
    let install_rules = *rule_counts.iter().max().expect("not empty");
    let text = save::save(&last_rule_matches(install_rules), false);
    let mut dp = Dataplane::load_private()?;
    let started = Instant::now();
    let file = save::parse_restore(&text)?;
    let mut ruleset = Ruleset::default();
    save::apply_restore(&mut ruleset, &file, false)?;
    dp.apply(&ruleset, &[])?;
    let install_seconds = started.elapsed().as_secs_f64();
    ensure!(
        ruleset.filter.chain("INPUT").map(|c| c.rules.len()) == Some(install_rules),
        "the restored ruleset lost rules"
    );

    // As many forwarded packets per round as `repeat` asks for, in calls
    // of FORWARD_REPEAT (at most FORWARD_CALLS).
    let calls = (repeat / FORWARD_REPEAT).clamp(1, FORWARD_CALLS as u32) as usize;
    let forward_rows = forward_cost(rounds, calls)?;
    let ipv6_rows = ipv6_cost(rule_counts, &guards, repeat, rounds)?;

    Ok(Report {
        repeat,
        rounds,
        floor_ns,
        no_rules_ns,
        rows,
        install_seconds,
        install_rules,
        log_rows,
        forward_rows,
        ipv6_rows,
    })
}

/// The IPv6 rows of the program cost: a 64-byte IPv6 UDP frame through
/// the IPv6 program (the tail call from the IPv4 program's parse
/// included), under the INPUT policy DROP alone and under the drop
/// scenario's ip6tables ruleset of each rule count (`n - 1` rules with
/// `/128` sources the packet does not have, then the one that drops it),
/// interleaved round by round.
fn ipv6_cost(
    rule_counts: &[usize],
    guards: &[(u32, [u8; 6], bool)],
    repeat: u32,
    rounds: usize,
) -> Result<Vec<CostRow>> {
    use planes::{Ip, Plane, Scenario};
    let (src, dst) = (Ip::V6.addr(SOURCE), Ip::V6.addr(DESTINATION));
    let (std::net::IpAddr::V6(src), std::net::IpAddr::V6(dst)) = (src, dst) else {
        unreachable!("Ip::V6 writes IPv6 addresses")
    };
    let frame = FrameBuilder::udp6(src, 4000, dst, DPORT).build();
    let policy_only =
        "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
            .to_string();
    let mut texts = vec![("IPv6, no rules, DROP".to_string(), 0, policy_only)];
    for &n in rule_counts {
        texts.push((
            format!("IPv6, {n} rules"),
            n,
            planes::iptables_text(Scenario::Drop, Plane::Netbeast, n, Ip::V6, false),
        ));
    }
    let mut planes = Vec::new();
    for (label, n, text) in texts {
        let file = save::parse_restore_family(&text, None, crate::rules::model::Family::V6)?;
        let mut ruleset = Ruleset::default();
        save::apply_restore(&mut ruleset, &file, false)?;
        let mut dp = Dataplane::load_private()?;
        dp.set_local_addresses6(&[dst])?;
        dp.set_interface_guards(guards)?;
        dp.apply(&ruleset, &[])?;
        let (verdict, _) = dp.test_run_repeat(&frame, 1, false)?;
        ensure!(
            verdict == XDP_DROP,
            "{label}: the IPv6 frame was not dropped (XDP action {verdict})"
        );
        planes.push((label, n, dp));
    }
    let mut samples = vec![Vec::new(); planes.len()];
    for _ in 0..rounds {
        for (i, (_, _, dp)) in planes.iter_mut().enumerate() {
            let (_, t) = dp.test_run_repeat(&frame, repeat, false)?;
            samples[i].push(t.as_secs_f64() * 1e9);
        }
    }
    let mut rows: Vec<CostRow> = planes
        .iter()
        .zip(samples.iter_mut())
        .map(|((label, n, _), s)| CostRow::of_samples(label.clone(), *n, s))
        .collect();
    // The column is "vs 1 rule": the first rule count's row.
    let base = rows.get(1).map_or(1.0, |r| r.ns_per_packet);
    for r in &mut rows {
        r.ratio_to_one_rule = r.ns_per_packet / base;
    }
    Ok(rows)
}

/// The LOG rows ([`Front`]), interleaved round by round.
fn log_rows(
    frame: &[u8],
    guards: &[(u32, [u8; 6], bool)],
    repeat: u32,
    rounds: usize,
) -> Result<Vec<CostRow>> {
    let mut planes = Vec::new();
    for front in Front::ALL {
        let mut dp = Dataplane::load_private()?;
        dp.set_local_addresses(&[DESTINATION])?;
        dp.set_interface_guards(guards)?;
        dp.apply(&front.ruleset()?, &[])?;
        let (verdict, _) = dp.test_run_repeat(frame, 1, false)?;
        ensure!(
            verdict == XDP_DROP,
            "{}: the DROP rule did not drop the packet (XDP action {verdict})",
            front.label()
        );
        let mut ring = dp.take_log_events()?;
        let logged = ring_len(&mut ring);
        let want = front.events();
        ensure!(
            logged == want,
            "{}: one packet gave {logged} LOG events, not {want}",
            front.label()
        );
        planes.push((front, dp, ring));
    }
    let mut samples = vec![Vec::new(); planes.len()];
    for _ in 0..rounds {
        for (i, (front, dp, ring)) in planes.iter_mut().enumerate() {
            samples[i].push(log_row_round(*front, dp, ring, frame, repeat)?);
        }
    }
    Ok(planes
        .iter()
        .zip(samples.iter_mut())
        .map(|((front, _, _), s)| CostRow::of_samples(front.label().to_string(), 1, s))
        .collect())
}

/// Runs per `BPF_PROG_TEST_RUN` call of a forwarded frame: the fast path
/// lowers the TTL of the one frame the call repeats on, so a call must end
/// before the TTL of 255 runs out (at 1 the kernel's path takes over).
const FORWARD_REPEAT: u32 = 250;
/// The most calls per round and variant (100,000 packets).
const FORWARD_CALLS: usize = 400;

/// The XDP program's cost on the forwarding path's variants (issue 20's
/// profile): a router namespace with two veths, a static neighbour behind
/// one, the program's frames arriving on the other (`ingress_ifindex`, so
/// the FIB lookup is the real one). Rows, against a bare XDP_DROP: a local
/// drop (no FIB lookup), a FORWARD drop (the FIB lookup and the chain), a
/// FORWARD accept on the fast path (plus the rewrite, the interfaces' ways
/// and the redirect helper), and the same behind a `--ctstate ESTABLISHED`
/// rule (plus conntrack); the last two again with the route cache in use
/// (the FIB lookup answered from the cache). `XDP_REDIRECT` in a test run only records the
/// target: the transmit is not in these figures.
fn forward_cost(rounds: usize, calls: usize) -> Result<Vec<CostRow>> {
    use netbeast_common::iface_path::FORWARD_REDIRECT;
    const IN: &str = "nbb-in";
    const OUT: &str = "nbb-out";
    let client = Ipv4Addr::new(10, 8, 0, 5);
    let server = Ipv4Addr::new(10, 9, 0, 5);
    let router_in = Ipv4Addr::new(10, 8, 0, 1);
    let ns = crate::netns::Netns::new("bench-fwdcost")?;
    ns.ip(&["link", "add", IN, "type", "veth", "peer", "name", OUT])?;
    for (iface, addr) in [(IN, "10.8.0.1/24"), (OUT, "10.9.0.1/24")] {
        ns.ip(&["addr", "add", addr, "dev", iface])?;
        ns.ip(&["link", "set", iface, "up"])?;
    }
    ns.sysctl("net.ipv4.ip_forward", "1")?;
    ns.ip(&[
        "neigh",
        "replace",
        &server.to_string(),
        "lladdr",
        "02:00:00:00:09:05",
        "dev",
        OUT,
        "nud",
        "permanent",
    ])?;
    let accept: &[&str] = &["-A FORWARD -p udp --dport 9 -j ACCEPT"];
    let stateful: &[&str] = &[
        "-A FORWARD -m conntrack --ctstate ESTABLISHED -j ACCEPT",
        "-A FORWARD -p udp --dport 9 -j ACCEPT",
    ];
    // The last field: the route cache in use (a lease granted here, as the
    // daemon's route watcher grants it; no change happens during the run).
    let variants: [(&str, &[&str], Ipv4Addr, u32, bool); 6] = [
        (
            "local drop (INPUT)",
            &["-A INPUT -p udp --dport 9 -j DROP"],
            router_in,
            XDP_DROP,
            false,
        ),
        (
            "FORWARD drop",
            &["-A FORWARD -p udp --dport 9 -j DROP"],
            server,
            XDP_DROP,
            false,
        ),
        (
            "FORWARD accept, fast path",
            accept,
            server,
            XDP_REDIRECT,
            false,
        ),
        (
            "FORWARD ctstate + accept",
            stateful,
            server,
            XDP_REDIRECT,
            false,
        ),
        ("accept, cached route", accept, server, XDP_REDIRECT, true),
        (
            "ctstate + accept, cached",
            stateful,
            server,
            XDP_REDIRECT,
            true,
        ),
    ];
    ns.in_netns(|| -> Result<Vec<CostRow>> {
        let in_ifindex = crate::state::ifindex(IN)?;
        let out_ifindex = crate::state::ifindex(OUT)?;
        let mut planes = Vec::new();
        for (label, lines, dst, expected, cached) in variants {
            let mut dp = Dataplane::load_private()?;
            if cached {
                dp.route_cache_watch(true, Some(std::time::Duration::from_secs(3600)))?;
            }
            dp.set_local_addresses(&[router_in, Ipv4Addr::new(10, 9, 0, 1)])?;
            dp.set_interface_paths(&[
                (in_ifindex, FORWARD_REDIRECT),
                (out_ifindex, FORWARD_REDIRECT),
            ])?;
            let mut ruleset = Ruleset::default();
            for line in lines {
                let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
                let cmd = crate::rules::parse::parse_iptables_args(&args)?;
                crate::rules::command::apply(&mut ruleset, &cmd)?;
            }
            dp.apply(&ruleset, &[])?;
            let frame = FrameBuilder::udp(client, 4000, dst, DPORT).ttl(255).build();
            let (verdict, _) = dp.test_run_repeat_on(&frame, 1, false, in_ifindex)?;
            ensure!(
                verdict == expected,
                "{label}: XDP action {verdict}, expected {expected} (is the route or \
                 neighbour missing?)"
            );
            planes.push((label, frame, dp));
        }
        let mut floor = Vec::new();
        let mut samples = vec![Vec::new(); planes.len()];
        for _ in 0..rounds {
            let mean = |dp: &mut Dataplane, frame: &[u8], bare: bool| -> Result<f64> {
                let mut total = 0.0;
                for _ in 0..calls {
                    let (_, t) = dp.test_run_repeat_on(frame, FORWARD_REPEAT, bare, in_ifindex)?;
                    total += t.as_secs_f64() * 1e9;
                }
                Ok(total / calls as f64)
            };
            let (_, frame, dp) = &mut planes[0];
            floor.push(mean(dp, frame, true)?);
            for (i, (_, frame, dp)) in planes.iter_mut().enumerate() {
                samples[i].push(mean(dp, frame, false)?);
            }
        }
        let floor_ns = median(&mut floor);
        let mut rows = vec![CostRow {
            label: "floor (bare XDP_DROP)".into(),
            rules: 0,
            ns_per_packet: floor_ns,
            min_ns: floor.iter().copied().fold(f64::MAX, f64::min),
            max_ns: floor.iter().copied().fold(0.0, f64::max),
            ratio_to_one_rule: 0.0,
        }];
        for ((label, _, _), s) in planes.iter().zip(samples.iter_mut()) {
            let min_ns = s.iter().copied().fold(f64::MAX, f64::min);
            let max_ns = s.iter().copied().fold(0.0, f64::max);
            rows.push(CostRow {
                label: (*label).into(),
                rules: 0,
                ns_per_packet: median(s),
                min_ns,
                max_ns,
                ratio_to_one_rule: 0.0,
            });
        }
        // The column is "vs local drop" here.
        let base = rows[1].ns_per_packet;
        for r in &mut rows {
            r.ratio_to_one_rule = r.ns_per_packet / base;
        }
        Ok(rows)
    })?
}

pub fn print(report: &Report) {
    println!(
        "XDP program cost, BPF_PROG_TEST_RUN, 64-byte UDP, repeat {} x {} rounds (median, min-max)",
        report.repeat, report.rounds
    );
    println!(
        "{:<40} {:>10} {:>19} {:>10}",
        "data plane", "ns/packet", "min-max", "vs 1 rule"
    );
    println!(
        "{:<40} {:>10.1} {:>19} {:>10}",
        "floor (bare XDP_DROP)", report.floor_ns, "", ""
    );
    println!(
        "{:<40} {:>10.1} {:>19} {:>10}",
        "netbeast, no rules, DROP", report.no_rules_ns, "", ""
    );
    for r in report
        .rows
        .iter()
        .chain(&report.log_rows)
        .chain(&report.ipv6_rows)
    {
        println!(
            "{:<40} {:>10.1} {:>19} {:>9.2}x",
            r.label,
            r.ns_per_packet,
            format!("{:.1}-{:.1}", r.min_ns, r.max_ns),
            r.ratio_to_one_rule
        );
    }
    println!(
        "restore of {} rules (parse, compile, write maps, switch): {:.3} s",
        report.install_rules, report.install_seconds
    );
    if !report.forward_rows.is_empty() {
        println!(
            "forwarding path, frames on a router's veth, 1 rule, {} runs per call x {} rounds \
             (median, min-max)",
            FORWARD_REPEAT, report.rounds
        );
        println!(
            "{:<28} {:>10} {:>19} {:>10}",
            "variant", "ns/packet", "min-max", "vs local"
        );
        for r in &report.forward_rows {
            println!(
                "{:<28} {:>10.1} {:>19} {:>9.2}x",
                r.label,
                r.ns_per_packet,
                format!("{:.1}-{:.1}", r.min_ns, r.max_ns),
                r.ratio_to_one_rule
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The benchmark's ruleset really has its match on the last rule.
    #[test]
    fn only_the_last_rule_matches() {
        let rs = last_rule_matches(50);
        let input = rs.filter.chain("INPUT").unwrap();
        let pkt = crate::compile::reference::PacketView {
            src: SOURCE,
            dst: DESTINATION,
            addr6: None,
            protocol: 17,
            fragment_offset_nonzero: false,
            l4: Some(crate::compile::reference::L4Header::Ports {
                source: 4000,
                destination: DPORT,
            }),
            in_ifindex: 0,
            out_ifindex: 0,
            mac_source: [0; 6],
            ct_state: netbeast_common::ct_state::NEW,
            header: Default::default(),
        };
        assert_eq!(
            crate::compile::reference::classify(input, &[], &pkt),
            vec![49]
        );
    }
}
