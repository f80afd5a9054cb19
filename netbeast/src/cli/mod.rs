//! The command line of DESIGN §6. One function per verb; every verb that
//! touches the data plane runs under the namespace lock.

pub mod bench;
pub mod conntrack;
pub mod demo;

use std::{io::Read, path::PathBuf, process::ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use netbeast_common::{CtConfig, chain, size, stats};
use serde_json::json;

use crate::{
    compile::{CHAIN_NAMES, NAT_CHAIN_NAMES},
    loader::{AttachMode, ConntrackSizes, Dataplane},
    rules::{
        command,
        model::{Counter, Policy, Ruleset, TableName, Target},
        parse, save,
    },
    state::{self, Namespace},
};

#[derive(Parser)]
#[command(name = "netbeast", version, about = "iptables' jobs at XDP speed")]
struct Cli {
    /// Run in the network namespace /run/netns/NAME (like `ip netns exec`).
    #[arg(long, global = true, value_name = "NAME")]
    netns: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the data plane (once per network namespace) and attach it.
    Attach {
        #[arg(required = true, value_name = "IFACE")]
        ifaces: Vec<String>,
        #[arg(long, value_enum, default_value_t = Mode::Auto)]
        mode: Mode,
        /// Send accepted forwarded packets out of these interfaces from XDP.
        /// auto: yes, except on veths (their peer must run an XDP program
        /// for redirected frames to arrive; say `on` when it does).
        #[arg(long, value_enum, default_value_t = FastPath::Auto)]
        fast_path: FastPath,
        /// A conntrack timeout, NAME=SECONDS (repeatable). Names:
        /// tcp-syn-sent, tcp-syn-recv, tcp-established, tcp-fin-wait,
        /// tcp-time-wait, tcp-close, udp, udp-stream, icmp, generic.
        #[arg(long = "ct-timeout", value_name = "NAME=SECONDS")]
        ct_timeouts: Vec<String>,
        /// Capacity of the table of connections without a reply yet (fixed
        /// when the data plane is created).
        #[arg(long, default_value_t = netbeast_common::CT_UNREPLIED_ENTRIES)]
        ct_unreplied_size: u32,
        /// Capacity of the table of connections that saw a reply (fixed
        /// when the data plane is created).
        #[arg(long, default_value_t = netbeast_common::CT_ESTABLISHED_ENTRIES)]
        ct_established_size: u32,
    },
    /// Detach from interfaces; --all also removes every rule and pin.
    Detach {
        #[arg(value_name = "IFACE", required_unless_present = "all")]
        ifaces: Vec<String>,
        #[arg(long, conflicts_with = "ifaces")]
        all: bool,
    },
    /// Attached interfaces, rule counts and statistics.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// iptables syntax, verbatim: -A, -I, -D, -R, -L, -S, -F, -P, -Z ...
    #[command(disable_help_flag = true)]
    Iptables {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Print the ruleset in iptables-save format.
    Save {
        /// Print rule counters too ([packets:bytes]).
        #[arg(short, long)]
        counters: bool,
    },
    /// Replace the ruleset from iptables-save format, atomically.
    Restore {
        /// Append to the current chains instead of replacing them.
        #[arg(short, long)]
        noflush: bool,
        /// Restore the [packets:bytes] counters too (otherwise they start at 0).
        #[arg(short, long)]
        counters: bool,
        /// Only parse and check the file; change nothing.
        #[arg(short = 't', long = "test")]
        test: bool,
        /// Restore only this table's sections and skip the others (as
        /// iptables-restore -T), e.g. the filter table of a file with nat rules.
        #[arg(short = 'T', long = "table", value_name = "TABLE")]
        table: Option<String>,
        /// The file (standard input when absent).
        file: Option<PathBuf>,
    },
    /// The connection tracking table, like conntrack(8): -L, -F or -C.
    #[command(group(clap::ArgGroup::new("action").required(true).args(["dump", "flush", "count"])))]
    Conntrack {
        /// List the connections, one per line.
        #[arg(short = 'L', long)]
        dump: bool,
        /// Delete every connection.
        #[arg(short = 'F', long)]
        flush: bool,
        /// Print the number of connections.
        #[arg(short = 'C', long)]
        count: bool,
    },
    /// Data plane statistics.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// The article's firewall on a built-in demo topology (namespaces it
    /// creates and removes).
    Demo,
    /// Measure netbeast against iptables and nftables on the same traffic,
    /// and the XDP program's own cost.
    Bench(bench::BenchArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FastPath {
    Auto,
    On,
    Off,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Auto,
    Native,
    Skb,
}

/// Entry point: dispatches on the program name first, so links named
/// `iptables`, `iptables-save` and `iptables-restore` behave as those.
pub fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().collect();
    let prog = args
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .unwrap_or_default();
    let result = match prog.as_str() {
        "iptables" | "iptables-legacy" | "iptables-nft" => {
            return run_iptables(&args.split_off(1));
        }
        "iptables-save" => run_save(args.iter().skip(1).any(|a| a == "-c" || a == "--counters")),
        "iptables-restore" => {
            let rest = args.split_off(1);
            let noflush = rest.iter().any(|a| a == "-n" || a == "--noflush");
            let test = rest.iter().any(|a| a == "-t" || a == "--test");
            let counters = rest.iter().any(|a| a == "-c" || a == "--counters");
            // -T TABLE / --table=TABLE: its value is not the file.
            let table_at = rest.iter().position(|a| a == "-T" || a == "--table");
            let table = table_at.and_then(|i| rest.get(i + 1).cloned()).or_else(|| {
                rest.iter()
                    .find_map(|a| a.strip_prefix("--table=").map(str::to_string))
            });
            let file = rest
                .iter()
                .enumerate()
                .find(|(i, a)| !a.starts_with('-') && table_at.is_none_or(|t| *i != t + 1))
                .map(|(_, a)| PathBuf::from(a));
            run_restore(noflush, counters, test, table.as_deref(), file)
        }
        _ => {
            let cli = Cli::parse();
            if let Some(ns) = &cli.netns
                && let Err(e) = state::enter_netns(ns)
            {
                eprintln!("netbeast: {e}");
                return ExitCode::FAILURE;
            }
            match cli.command {
                Command::Iptables { args } => return run_iptables(&args),
                Command::Attach {
                    ifaces,
                    mode,
                    fast_path,
                    ct_timeouts,
                    ct_unreplied_size,
                    ct_established_size,
                } => run_attach(
                    &ifaces,
                    mode,
                    fast_path,
                    &ct_timeouts,
                    ConntrackSizes {
                        unreplied: ct_unreplied_size,
                        established: ct_established_size,
                    },
                ),
                Command::Detach { ifaces, all } => run_detach(&ifaces, all),
                Command::Status { json } => run_status(json),
                Command::Save { counters } => run_save(counters),
                Command::Restore {
                    noflush,
                    counters,
                    test,
                    table,
                    file,
                } => run_restore(noflush, counters, test, table.as_deref(), file),
                Command::Stats { json } => run_stats(json),
                Command::Conntrack { dump, flush, .. } => conntrack::run(if dump {
                    conntrack::Action::List
                } else if flush {
                    conntrack::Action::Flush
                } else {
                    conntrack::Action::Count
                }),
                Command::Demo => demo::run(),
                Command::Bench(args) => bench::run(args),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netbeast: {}", chain_of(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line.
fn chain_of(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// Adds the live counters of the active generation to the counter bases
/// stored with the rules.
fn fold_counters(dp: &Dataplane, ruleset: &mut Ruleset) -> Result<()> {
    let builtins = CHAIN_NAMES
        .iter()
        .map(|name| (TableName::Filter, name))
        .chain(NAT_CHAIN_NAMES.iter().map(|name| (TableName::Nat, name)));
    for (c, (table, name)) in builtins.enumerate() {
        let Some(ch) = ruleset.table_mut(table).chain_mut(name) else {
            continue;
        };
        let (rules, policy) = dp.chain_counters(c as u32, ch.rules.len())?;
        for (rule, live) in ch.rules.iter_mut().zip(rules) {
            rule.counter = add(rule.counter, live);
        }
        ch.policy_counter = add(ch.policy_counter, policy);
    }
    // User-defined chains' rules count in their own range: the filter
    // table's chains in table order, then the nat table's.
    let total: usize = [&ruleset.filter, &ruleset.nat]
        .iter()
        .flat_map(|t| &t.chains)
        .filter(|c| c.policy.is_none())
        .map(|c| c.rules.len())
        .sum();
    let live = dp.user_chain_counters(total)?;
    let mut live = live.into_iter();
    for chain in [&mut ruleset.filter, &mut ruleset.nat]
        .into_iter()
        .flat_map(|t| &mut t.chains)
        .filter(|c| c.policy.is_none())
    {
        for (rule, live) in chain.rules.iter_mut().zip(&mut live) {
            rule.counter = add(rule.counter, live);
        }
    }
    Ok(())
}

fn add(a: Counter, b: Counter) -> Counter {
    Counter {
        packets: a.packets.wrapping_add(b.packets),
        bytes: a.bytes.wrapping_add(b.bytes),
    }
}

/// The namespace's ruleset with current counters, and its data plane when
/// one exists (or `create` asks for one).
fn open(ns: &Namespace, create: bool) -> Result<(Ruleset, Option<Dataplane>)> {
    let mut ruleset = ns.load_ruleset()?;
    if !create && !ns.has_dataplane() {
        return Ok((ruleset, None));
    }
    let dp = Dataplane::open_pinned(&ns.maps_dir())?;
    fold_counters(&dp, &mut ruleset)?;
    Ok((ruleset, Some(dp)))
}

/// Compiles and installs `ruleset` (one atomic switch), refreshes the
/// addresses the data plane treats as local, then stores the ruleset.
fn commit(ns: &Namespace, dp: &mut Dataplane, ruleset: &Ruleset) -> Result<()> {
    let links = state::links();
    dp.apply(ruleset, &state::interfaces(&links))?;
    let local: Vec<_> = links.iter().flat_map(|l| l.addrs.iter().copied()).collect();
    dp.set_local_addresses(&local)?;
    let primary: Vec<_> = links
        .iter()
        .filter_map(|l| l.addrs.first().map(|a| (l.ifindex, *a)))
        .collect();
    dp.set_interface_addresses(&primary)?;
    dp.set_fast_path_interfaces(&fast_path_interfaces(ns))?;
    if dnats_to_loopback(ruleset) {
        for (_, name) in attached(ns) {
            route_localnet(&name)?;
        }
    }
    // After route_localnet: it decides whether 127.0.0.0/8 is a martian.
    let guards: Vec<_> = links
        .iter()
        .filter(|l| l.ifindex != LOOPBACK_IFINDEX)
        .filter_map(|l| {
            l.mac
                .map(|mac| (l.ifindex, mac, state::route_localnet(&l.name)))
        })
        .collect();
    for (ifindex, _, _) in guards.iter().filter(|g| g.0 >= size::IFACE_GUARDS) {
        eprintln!(
            "netbeast: interface {ifindex} is past IFACE_GUARDS ({}): frames the kernel \
             discards before netfilter (foreign MAC, bad checksum, martians) are filtered \
             and counted there; raise size::IFACE_GUARDS to cover it",
            size::IFACE_GUARDS
        );
    }
    dp.set_interface_guards(&guards)?;
    ns.save_ruleset(ruleset)?;
    Ok(())
}

/// `lo`'s ifindex in every network namespace: its traffic is the host's
/// own, which the kernel routes without the martian checks.
const LOOPBACK_IFINDEX: u32 = 1;

/// True when a nat rule sends connections to 127.0.0.0/8 (the article's
/// `-j DNAT --to 127.0.0.1:8080`).
fn dnats_to_loopback(ruleset: &Ruleset) -> bool {
    ruleset.nat.chains.iter().flat_map(|c| &c.rules).any(|r| {
        matches!(&r.target, Target::Dnat { to, .. }
            if to.addrs.is_some_and(|a| a.first.is_loopback() || a.last.is_loopback()))
    })
}

/// Lets the kernel accept packets for 127.0.0.0/8 arriving on `iface` (and
/// send their replies out of it), which a DNAT to a loopback address needs:
/// without `route_localnet` the kernel drops them as martians. iptables
/// users set it by hand; netbeast does it for the interfaces it is attached
/// to, when a rule needs it.
fn route_localnet(iface: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv4/conf/{iface}/route_localnet");
    std::fs::write(&path, "1").with_context(|| {
        format!(
            "cannot enable route_localnet on {iface} ({path}), which a DNAT to 127.0.0.0/8 needs"
        )
    })
}

fn run_iptables(args: &[String]) -> ExitCode {
    let cmd = match parse::parse_iptables_args(args) {
        Ok(cmd) => cmd,
        Err(e) => {
            eprintln!("iptables: {e}");
            eprintln!("Try `netbeast iptables -h' for more information.");
            return ExitCode::from(2);
        }
    };
    let result = (|| -> Result<String> {
        let ns = Namespace::current()?;
        let changes = cmd.changes_ruleset();
        let _lock = ns.lock()?;
        let (mut ruleset, dp) = open(&ns, changes)?;
        let before = ruleset.clone();
        let out = command::apply(&mut ruleset, &cmd)?;
        if changes && ruleset != before {
            let mut dp = dp.expect("opened with create");
            commit(&ns, &mut dp, &ruleset)?;
        }
        Ok(out.text)
    })();
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("iptables: {}", chain_of(&e));
            ExitCode::FAILURE
        }
    }
}

fn run_save(counters: bool) -> Result<()> {
    let ns = Namespace::current()?;
    let _lock = ns.lock()?;
    let (ruleset, _) = open(&ns, false)?;
    print!("{}", save::save(&ruleset, counters));
    Ok(())
}

fn run_restore(
    noflush: bool,
    counters: bool,
    test: bool,
    table: Option<&str>,
    file: Option<PathBuf>,
) -> Result<()> {
    let text = match &file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read standard input")?;
            s
        }
    };
    let mut parsed = save::parse_restore_table(&text, table)?;
    if !counters {
        // As iptables-restore: counters in the file count only with -c.
        parsed.strip_counters();
    }
    let ns = Namespace::current()?;
    let _lock = ns.lock()?;
    let (mut ruleset, dp) = open(&ns, !test)?;
    save::apply_restore(&mut ruleset, &parsed, noflush)?;
    if test {
        // Compile too, so limits are checked without touching the maps.
        crate::compile::compile(&ruleset, &state::interfaces(&state::links()), 0)?;
        return Ok(());
    }
    let mut dp = dp.expect("opened with create");
    commit(&ns, &mut dp, &ruleset)
}

/// Applies `NAME=SECONDS` overrides to conntrack timeouts.
fn parse_timeouts(mut config: CtConfig, specs: &[String]) -> Result<CtConfig> {
    for spec in specs {
        let Some((name, secs)) = spec.split_once('=') else {
            bail!("--ct-timeout {spec}: expected NAME=SECONDS, e.g. --ct-timeout udp=60");
        };
        let secs: u32 = secs.parse().ok().filter(|s| *s > 0).with_context(|| {
            format!("--ct-timeout {spec}: SECONDS must be a whole number above 0")
        })?;
        let slot = match name {
            "tcp-syn-sent" => &mut config.tcp_syn_sent,
            "tcp-syn-recv" => &mut config.tcp_syn_recv,
            "tcp-established" => &mut config.tcp_established,
            "tcp-fin-wait" => &mut config.tcp_fin_wait,
            "tcp-time-wait" => &mut config.tcp_time_wait,
            "tcp-close" => &mut config.tcp_close,
            "udp" => &mut config.udp,
            "udp-stream" => &mut config.udp_stream,
            "icmp" => &mut config.icmp,
            "generic" => &mut config.generic,
            other => bail!(
                "--ct-timeout {spec}: unknown timeout '{other}'; one of tcp-syn-sent, tcp-syn-recv, \
                 tcp-established, tcp-fin-wait, tcp-time-wait, tcp-close, udp, udp-stream, icmp, generic"
            ),
        };
        *slot = secs;
    }
    Ok(config)
}

fn run_attach(
    ifaces: &[String],
    mode: Mode,
    fast_path: FastPath,
    ct_timeouts: &[String],
    ct_sizes: ConntrackSizes,
) -> Result<()> {
    for (name, size) in [
        ("--ct-unreplied-size", ct_sizes.unreplied),
        ("--ct-established-size", ct_sizes.established),
    ] {
        if !(1024..=(1 << 24)).contains(&size) {
            bail!("{name} {size}: choose between 1024 and 16777216 entries");
        }
    }
    // Bad input changes nothing: check the timeouts before touching state.
    parse_timeouts(CtConfig::DEFAULT, ct_timeouts)?;
    let ns = Namespace::current()?;
    let _lock = ns.lock()?;
    let existed = ns.has_dataplane();
    let mut ruleset = ns.load_ruleset()?;
    let mut dp = Dataplane::open_pinned_with(&ns.maps_dir(), Some(ct_sizes))?;
    fold_counters(&dp, &mut ruleset)?;
    let defaults = ConntrackSizes {
        unreplied: netbeast_common::CT_UNREPLIED_ENTRIES,
        established: netbeast_common::CT_ESTABLISHED_ENTRIES,
    };
    if existed && ct_sizes != defaults {
        eprintln!(
            "warning: the conntrack tables already exist and keep their sizes; \
             `netbeast detach --all` first to change them"
        );
    }
    let timeouts = parse_timeouts(dp.conntrack_config()?, ct_timeouts)?;
    dp.set_conntrack_config(&timeouts)?;
    let links_dir = ns.links_dir();
    std::fs::create_dir_all(&links_dir)
        .with_context(|| format!("cannot create {}", links_dir.display()))?;
    // Resolve every name first: a typo attaches nothing.
    let targets = ifaces
        .iter()
        .map(|i| Ok((i, state::ifindex(i)?)))
        .collect::<Result<Vec<_>>>()?;
    // The ruleset goes in before any packet can reach the program.
    commit(&ns, &mut dp, &ruleset)?;
    // `-t nat OUTPUT` for local sockets: once per namespace, not per interface.
    if !Dataplane::sock_attached(&links_dir) {
        let cgroup = state::cgroup2_root()?;
        dp.attach_sock(&cgroup, Some(&links_dir))?;
    }
    for (name, ifindex) in targets {
        let on = match fast_path {
            FastPath::On => true,
            FastPath::Off => false,
            FastPath::Auto => state::driver(name).as_deref() != Some("veth"),
        };
        // bpffs holds only BPF objects: the choice lives with the rule file.
        let marker = ns.state_dir.join(format!("fastpath-{ifindex}"));
        std::fs::write(&marker, if on { "on" } else { "off" })
            .with_context(|| format!("cannot write {}", marker.display()))?;
        let pin = links_dir.join(format!("xdp-{ifindex}"));
        if pin.exists() {
            println!("{name}: already attached");
            continue;
        }
        let wanted = match mode {
            Mode::Auto => AttachMode::Auto,
            Mode::Native => AttachMode::Native,
            Mode::Skb => AttachMode::Skb,
        };
        let used = dp.attach(name, ifindex, wanted, &pin)?;
        let egress_pin = links_dir.join(format!("tc-{ifindex}"));
        if let Err(e) = dp.attach_egress(name, &egress_pin) {
            // Leave nothing half-attached.
            Dataplane::detach(&pin)?;
            return Err(e.into());
        }
        if let (Mode::Auto, AttachMode::Skb) = (mode, used) {
            eprintln!(
                "warning: {name}: native XDP is not available, attached in generic (skb) mode"
            )
        }
        let how = if used == AttachMode::Skb {
            "generic (skb) XDP"
        } else {
            "native XDP"
        };
        let fast = if on {
            "forwarding fast path on"
        } else {
            "forwarding fast path off"
        };
        println!("{name}: attached ({how}, {fast})");
    }
    // Now that the links exist, the fast path may use them.
    commit(&ns, &mut dp, &ruleset)?;
    Ok(())
}

fn run_detach(ifaces: &[String], all: bool) -> Result<()> {
    let ns = Namespace::current()?;
    let _lock = ns.lock()?;
    let links_dir = ns.links_dir();
    if all {
        if let Ok(entries) = std::fs::read_dir(&links_dir) {
            for e in entries.flatten() {
                Dataplane::detach(&e.path())?;
            }
        }
        ns.remove_all()?;
        println!("detached everywhere; rules and state removed");
        return Ok(());
    }
    for name in ifaces {
        let ifindex = state::ifindex(name)?;
        let pin = links_dir.join(format!("xdp-{ifindex}"));
        if !pin.exists() {
            bail!("{name} is not attached (`netbeast status` lists attached interfaces)");
        }
        Dataplane::detach(&pin)?;
        Dataplane::detach(&links_dir.join(format!("tc-{ifindex}")))?;
        let _ = std::fs::remove_file(ns.state_dir.join(format!("fastpath-{ifindex}")));
        println!("{name}: detached");
    }
    // The socket programs serve the namespace while any interface is attached.
    if attached(&ns).is_empty() {
        Dataplane::detach_sock(&links_dir)?;
    }
    // The fast path must stop using what is gone.
    if ns.has_dataplane() {
        Dataplane::open_pinned(&ns.maps_dir())?
            .set_fast_path_interfaces(&fast_path_interfaces(&ns))?;
    }
    Ok(())
}

/// Attached interfaces whose fast-path marker says on.
fn fast_path_interfaces(ns: &Namespace) -> Vec<u32> {
    attached(ns)
        .into_iter()
        .filter(|(i, _)| {
            std::fs::read_to_string(ns.state_dir.join(format!("fastpath-{i}")))
                .is_ok_and(|s| s == "on")
        })
        .map(|(i, _)| i)
        .collect()
}

/// Attached interfaces: (ifindex, name) from the link pins.
fn attached(ns: &Namespace) -> Vec<(u32, String)> {
    let links = state::links();
    let mut out: Vec<(u32, String)> = std::fs::read_dir(ns.links_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let ifindex: u32 = name.strip_prefix("xdp-")?.parse().ok()?;
            let iface = links
                .iter()
                .find(|l| l.ifindex == ifindex)
                .map_or_else(|| format!("(gone, ifindex {ifindex})"), |l| l.name.clone());
            Some((ifindex, iface))
        })
        .collect();
    out.sort();
    out
}

fn run_status(json_out: bool) -> Result<()> {
    let ns = Namespace::current()?;
    let _lock = ns.lock()?;
    let (ruleset, dp) = open(&ns, false)?;
    let ifaces = attached(&ns);
    let builtins = CHAIN_NAMES
        .iter()
        .map(|name| (TableName::Filter, name))
        .chain(NAT_CHAIN_NAMES.iter().map(|name| (TableName::Nat, name)));
    let chains: Vec<_> = builtins
        .filter_map(|(table, n)| Some((table, ruleset.table(table).chain(n)?)))
        .map(|(table, c)| {
            let policy = match c.policy {
                Some(Policy::Drop) => "DROP",
                _ => "ACCEPT",
            };
            (table.as_str(), c.name.clone(), c.rules.len(), policy)
        })
        .collect();
    let stats = match &dp {
        Some(dp) => dp.stats()?,
        None => vec![0; stats::COUNT as usize],
    };
    if json_out {
        let v = json!({
            "netns": ns.id,
            "pins": ns.pin_dir,
            "attached": ifaces.iter().map(|(i, n)| json!({"ifindex": i, "name": n})).collect::<Vec<_>>(),
            "socket_nat": Dataplane::sock_attached(&ns.links_dir()),
            "chains": chains.iter().map(|(t, n, r, p)| json!({"table": t, "name": n, "rules": r, "policy": p})).collect::<Vec<_>>(),
            "stats": stats::NAMES.iter().zip(&stats).map(|(n, v)| (n.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "network namespace {} (pins in {})",
        ns.id,
        ns.pin_dir.display()
    );
    if ifaces.is_empty() {
        println!("attached: none (`netbeast attach IFACE`)");
    } else {
        let names: Vec<_> = ifaces.iter().map(|(_, n)| n.as_str()).collect();
        println!("attached: {}", names.join(", "));
    }
    if Dataplane::sock_attached(&ns.links_dir()) {
        println!("local sockets: nat OUTPUT attached to the root cgroup");
    }
    for (table, name, rules, policy) in &chains {
        println!("{table} {name}: {rules} rules, policy {policy}");
    }
    println!(
        "packets {} (input {}, forward {}), accepted {}, dropped {}, rejected {}",
        stats[stats::PACKETS as usize],
        stats[stats::INPUT as usize],
        stats[stats::FORWARD as usize],
        stats[stats::ACCEPTED as usize],
        stats[stats::DROPPED as usize],
        stats[stats::REJECTED as usize]
    );
    let _ = chain::COUNT;
    Ok(())
}

fn run_stats(json_out: bool) -> Result<()> {
    let ns = Namespace::current()?;
    let _lock = ns.lock()?;
    let (_, dp) = open(&ns, false)?;
    let stats = match &dp {
        Some(dp) => dp.stats()?,
        None => vec![0; stats::COUNT as usize],
    };
    if json_out {
        let m: serde_json::Map<_, _> = stats::NAMES
            .iter()
            .zip(&stats)
            .map(|(n, v)| (n.to_string(), json!(v)))
            .collect();
        println!("{}", serde_json::to_string_pretty(&m)?);
    } else {
        for (n, v) in stats::NAMES.iter().zip(&stats) {
            println!("{n:<16} {v}");
        }
    }
    Ok(())
}
