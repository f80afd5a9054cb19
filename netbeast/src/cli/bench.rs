//! `netbeast bench`: netbeast against iptables and nftables on the same
//! traffic (bench::traffic), and the XDP program's own cost
//! (bench::program_cost), in one run.

use std::{io::IsTerminal, path::PathBuf};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use serde_json::json;

use crate::bench::{
    self,
    generator::GeneratorKind,
    planes::{Family, Scenario},
    traffic::{self, Options},
};

/// Longest measurement `--seconds` takes: a longer one only heats the VM.
const MAX_SECONDS: f64 = 60.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchScenario {
    /// Traffic to this host, dropped by the last rule.
    Drop,
    /// Traffic to this host, accepted by the last rule.
    Pass,
    /// Traffic through a router, accepted by the last FORWARD rule.
    Forward,
    /// Traffic through a router, translated by the last DNAT rule.
    Dnat,
    /// The XDP program alone, BPF_PROG_TEST_RUN (no veth, no stack).
    ProgramCost,
    /// `drop` behind a `-m hashlimit` rule with a bucket per flow (run it
    /// with `drop` and `--flows 100000` to compare).
    Limit,
    /// `drop` behind a `-j LOG` rule every packet meets, with `netbeast
    /// log --follow` draining the events (run it with `drop` to compare:
    /// issue 15's target is ≥ 0.8×).
    Log,
    /// One iptables call (-C, -A, -D, -I, -N/-X, -S, -L, restore) as a
    /// whole process: netbeast, iptables-nft and iptables-legacy; and a
    /// kube-proxy ruleset's restore and partial sync (--services). Not in
    /// the default list; its rule counts default to 1000,10000.
    ControlPlane,
    /// Balancing: many flows (--flows) through the router to a VIP with
    /// --backends backends, netbeast lb (Maglev), netbeast and iptables
    /// `-m statistic` DNAT cascades and an nftables numgen map; and the
    /// XDP program's cost of a new connection with a backend change
    /// (BPF_PROG_TEST_RUN).
    Lb,
    /// Spoofed SYNs answered with SYN cookies per second: netbeast's
    /// shield, iptables SYNPROXY, the kernel's own syncookies. Not in the
    /// default list.
    Synflood,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// What to measure [default: drop,pass,forward,dnat,limit,program-cost;
    /// with --family 6: drop,pass,forward].
    #[arg(long, value_enum, value_delimiter = ',')]
    scenario: Vec<BenchScenario>,
    /// The IP version of the traffic and rules: 4 (iptables) or 6
    /// (ip6tables, and nftables' ip6 family; drop, pass and forward, the
    /// xdp generator).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=6))]
    family: u8,
    /// Data planes to compare (the floor, a bare XDP_DROP receiver, the
    /// forwarding floor of `forward` and `dnat`, a bare XDP_REDIRECT to the
    /// router's other interface, and the kernel without a firewall are
    /// always measured).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "netbeast,iptables,nftables"
    )]
    planes: Vec<Family>,
    /// Rule counts to measure, the match always on the last rule
    /// [default: 1,100,1000,10000; control-plane: 1000,10000].
    #[arg(long, value_delimiter = ',')]
    rules: Vec<usize>,
    /// control-plane: kube-proxy rulesets to restore and partially sync,
    /// as services of two endpoints each (0: none).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    services: Vec<usize>,
    /// Rounds; every data plane is measured once per round, interleaved.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds of traffic per data plane and round.
    #[arg(long, default_value_t = 0.5)]
    seconds: f64,
    /// Frame size in bytes, Ethernet header to the end of the UDP payload.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Flows (source address and port pairs) the traffic is spread over;
    /// with several counts (`1,1000,100000,1000000`) the traffic scenarios
    /// run once per count, and a table compares each count with the first.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    flows: Vec<u32>,
    /// forward and dnat: a first FORWARD rule accepting ESTABLISHED
    /// connections, as a stateful firewall has (every packet then meets
    /// the connection table; one-way traffic stays NEW and reaches the
    /// last rule).
    #[arg(long)]
    stateful: bool,
    /// The CPU the generator runs on, and every receiver unless
    /// --receiver-cpu is given (default: the last).
    #[arg(long)]
    cpu: Option<usize>,
    /// The CPU the receivers run on: each receiving veth's NAPI made a
    /// kernel thread (`threaded`), pinned there, SCHED_FIFO, so that the
    /// receiver does not share the generator's core (a router's sink runs
    /// in its thread; `log` stays on the generator's core). On the 2-vCPU
    /// VM of docs/BENCHMARKS.md this measured far lower than the shared
    /// core ("A core for the receivers"): compare within one setting
    /// [default: none, the receivers run in the generator's softirq].
    #[arg(long, value_name = "CPU")]
    receiver_cpu: Option<usize>,
    /// The packet generator: `xdp`, XDP live frames from BPF_PROG_TEST_RUN;
    /// `packet`, a raw packet socket (slower: a system call and a socket
    /// buffer per frame, for kernels that refuse live frames); `auto`, live
    /// frames where the kernel allows them, else `packet`; or `pktgen`, the
    /// kernel's, which needs /proc/net/pktgen (CONFIG_NET_PKTGEN, `modprobe
    /// pktgen`) and frames of 58 bytes or more.
    #[arg(long, value_enum, default_value = "auto")]
    generator: GeneratorKind,
    /// lb: backend counts to measure (at most 1,024, MAX_BACKENDS).
    #[arg(long, value_delimiter = ',', default_value = "3,100,1000")]
    backends: Vec<usize>,
    /// program-cost: packets per BPF_PROG_TEST_RUN call.
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    /// One short round with small rule counts: a check that every scenario
    /// runs, not a measure.
    #[arg(long)]
    quick: bool,
    /// The report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Also draw throughput against rule count as SVG into this file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

/// Rule counts of the traffic and program-cost scenarios when --rules is
/// not given.
const DEFAULT_RULES: [usize; 4] = [1, 100, 1000, 10000];
/// Rule counts of the control-plane scenario when --rules is not given.
const CONTROL_PLANE_RULES: [usize; 2] = [1000, 10000];

/// Scenarios when --scenario is not given, per family.
const DEFAULT_SCENARIOS: [BenchScenario; 6] = [
    BenchScenario::Drop,
    BenchScenario::Pass,
    BenchScenario::Forward,
    BenchScenario::Dnat,
    BenchScenario::Limit,
    BenchScenario::ProgramCost,
];
const DEFAULT_SCENARIOS_V6: [BenchScenario; 3] = [
    BenchScenario::Drop,
    BenchScenario::Pass,
    BenchScenario::Forward,
];

pub fn run(mut args: BenchArgs) -> Result<()> {
    crate::state::require_root()?;
    let ip = match args.family {
        4 => bench::planes::Ip::V4,
        6 => bench::planes::Ip::V6,
        other => bail!("--family {other}: the IP version is 4 or 6"),
    };
    if args.scenario.is_empty() {
        args.scenario = match ip {
            bench::planes::Ip::V4 => DEFAULT_SCENARIOS.to_vec(),
            bench::planes::Ip::V6 => DEFAULT_SCENARIOS_V6.to_vec(),
        };
    }
    if ip == bench::planes::Ip::V6 {
        let other: Vec<String> = args
            .scenario
            .iter()
            .filter(|s| !DEFAULT_SCENARIOS_V6.contains(s))
            .filter_map(|s| s.to_possible_value().map(|v| v.get_name().to_string()))
            .collect();
        if !other.is_empty() {
            bail!(
                "--family 6 measures drop, pass and forward; not supported for IPv6 yet: {} \
                 (IPv6 has no nat, and the other scenarios' rules and programs are IPv4's)",
                other.join(", ")
            );
        }
    }
    let control_rules_given = !args.rules.is_empty();
    if args.rules.is_empty() {
        args.rules = DEFAULT_RULES.to_vec();
    }
    if let Some(n) = args
        .rules
        .iter()
        .find(|n| **n == 0 || **n > netbeast_common::MAX_RULES_PER_CHAIN)
    {
        bail!(
            "--rules {n}: each count must be 1..={} (MAX_RULES_PER_CHAIN)",
            netbeast_common::MAX_RULES_PER_CHAIN
        );
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if !(args.seconds > 0.0 && args.seconds <= MAX_SECONDS) {
        bail!("--seconds must be more than 0 and at most {MAX_SECONDS}");
    }
    let scenarios: Vec<Scenario> = Scenario::ALL
        .into_iter()
        .filter(|s| {
            args.scenario.iter().any(|a| {
                matches!(
                    (a, s),
                    (BenchScenario::Drop, Scenario::Drop)
                        | (BenchScenario::Pass, Scenario::Pass)
                        | (BenchScenario::Forward, Scenario::Forward)
                        | (BenchScenario::Dnat, Scenario::Dnat)
                        | (BenchScenario::Limit, Scenario::Limit)
                        | (BenchScenario::Log, Scenario::Log)
                        | (BenchScenario::Lb, Scenario::Lb)
                )
            })
        })
        .collect();
    let mut rules = args.rules.clone();
    rules.sort_unstable();
    rules.dedup();
    let mut options = Options {
        scenarios,
        families: args.planes.clone(),
        rules: rules.clone(),
        backends: Vec::new(),
        rounds: args.rounds,
        seconds: args.seconds,
        size: args.size,
        flows: 1,
        stateful: args.stateful,
        cpu: args.cpu.unwrap_or_else(traffic::default_cpu),
        receiver_cpu: args.receiver_cpu,
        generator: args.generator,
        batch: bench::live::BATCH_SIZE,
        quick: false,
        ip,
    };
    let (mut cost_rules, mut repeat, mut cost_rounds) = (rules, args.repeat, args.rounds);
    let mut backends = args.backends.clone();
    if args.quick {
        options = options.quick();
        (cost_rules, repeat, cost_rounds) = (vec![1, 100], 10_000, 1);
        backends = vec![3, 10];
    }
    if let Some(n) = backends
        .iter()
        .find(|n| **n == 0 || **n > netbeast_common::lb::MAX_BACKENDS as usize)
    {
        bail!(
            "--backends {n}: each count must be 1..={} (netbeast_common::lb::MAX_BACKENDS)",
            netbeast_common::lb::MAX_BACKENDS
        );
    }
    backends.sort_unstable();
    backends.dedup();
    options.backends = backends.clone();

    let control = if args.scenario.contains(&BenchScenario::ControlPlane) {
        let exe = std::env::current_exe().context("finding the netbeast binary")?;
        let (counts, services, rounds) = if args.quick {
            (vec![10, 100], vec![20], 2)
        } else if !control_rules_given {
            (
                CONTROL_PLANE_RULES.to_vec(),
                args.services.clone(),
                args.rounds,
            )
        } else {
            (args.rules.clone(), args.services.clone(), args.rounds)
        };
        let services: Vec<usize> = services.into_iter().filter(|&n| n > 0).collect();
        Some(bench::control::run(
            &exe,
            &counts,
            &services,
            rounds,
            &bench::control::Plane::ALL,
        )?)
    } else {
        None
    };

    let mut flows = args.flows.clone();
    flows.sort_unstable();
    flows.dedup();
    let max = netbeast_common::generator::MAX_FLOWS;
    if let Some(n) = flows.iter().find(|n| **n == 0 || **n > max) {
        bail!("--flows {n}: each count must be 1..={max} (generator::MAX_FLOWS)");
    }
    // One traffic report per flow count, in ascending order.
    let mut by_flows = Vec::new();
    if !options.scenarios.is_empty() {
        for &n in &flows {
            options.flows = n;
            by_flows.push((n, traffic::run(&options, std::io::stderr().is_terminal())?));
        }
    }
    let traffic_report = by_flows.first().map(|(_, r)| r.clone());
    let cost = if args.scenario.contains(&BenchScenario::ProgramCost) {
        Some(bench::program_cost(&cost_rules, repeat, cost_rounds)?)
    } else {
        None
    };
    let synflood = if args.scenario.contains(&BenchScenario::Synflood) {
        let rounds = if args.quick { 1 } else { args.rounds };
        Some(bench::synflood::run(
            &bench::synflood::Defence::ALL,
            &bench::synflood::Chain::ALL,
            rounds,
            args.cpu.unwrap_or_else(traffic::default_cpu),
        )?)
    } else {
        None
    };
    let lb = if args.scenario.contains(&BenchScenario::Lb) {
        Some(bench::lb::run(&backends, repeat, cost_rounds)?)
    } else {
        None
    };
    if let (Some(path), Some(report)) = (&args.plot, &traffic_report) {
        std::fs::write(path, bench::plot::svg(report).map_err(anyhow::Error::msg)?)
            .with_context(|| format!("cannot write the plot to {}", path.display()))?;
    }
    if args.json {
        let v = json!({
            "traffic": traffic_report,
            "traffic_by_flows": (by_flows.len() > 1).then(|| by_flows
                .iter()
                .map(|(n, r)| json!({ "flows": n, "traffic": r }))
                .collect::<Vec<_>>()),
            "program_cost": cost,
            "control_plane": control,
            "lb": lb,
            "synflood": synflood,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for (i, (_, report)) in by_flows.iter().enumerate() {
        if i > 0 {
            println!();
        }
        traffic::print(report);
    }
    if by_flows.len() > 1 {
        println!();
        traffic::print_flows(&by_flows);
    }
    if let Some(cost) = &cost {
        if traffic_report.is_some() {
            println!();
        }
        bench::print(cost);
    }
    if let Some(control) = &control {
        if traffic_report.is_some() || cost.is_some() {
            println!();
        }
        bench::control::print(control);
    }
    if let Some(lb) = &lb {
        if traffic_report.is_some() || cost.is_some() {
            println!();
        }
        bench::lb::print(lb);
    }
    if let Some(report) = &synflood {
        println!();
        bench::synflood::print(report);
    }
    if let Some(path) = &args.plot {
        if traffic_report.is_some() {
            println!("plot: {}", path.display());
        } else {
            println!("no plot: --plot draws the traffic scenarios, and none was run");
        }
    }
    Ok(())
}
