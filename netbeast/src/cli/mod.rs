//! The command line of DESIGN §6. One function per verb; every verb that
//! touches the data plane runs under the namespace lock.

/// Writes to stdout, like `print!`; once the reader has gone (a closed
/// pipe: `netbeast save | head -1`), the rest is dropped quietly, as
/// iptables ends there, instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_out(&format!($($arg)*))
    };
}

/// [`out!`] with a newline.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_out(&format!("{}\n", format_args!($($arg)*)))
    };
}

pub mod bench;
pub mod conntrack;
pub mod demo;
pub mod log;
mod plane;

use std::{
    ffi::OsString,
    io::{Read, Write},
    path::PathBuf,
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use netbeast_common::{CtConfig, stats};
use serde_json::json;

use crate::{
    compile::{CHAIN_NAMES, NAT_CHAIN_NAMES},
    loader::{ConntrackSizes, Dataplane},
    rules::{
        command,
        model::{Counter, Ruleset, TableName, Target},
        parse, save,
    },
    state::{self, Namespace},
};
use plane::{commit, open};

/// Set once stdout's reader has gone.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// See [`out!`].
pub(crate) fn write_out(text: &str) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
        } else {
            eprintln!("netbeast: cannot write to standard output: {e}");
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
        }
    }
}

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
    /// Attached interfaces (what the kernel runs on each hook), rule
    /// counts, statistics, and any mismatch between them and the state.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Remove the pins, links, socket programs and files of network
    /// namespaces that no longer exist.
    Gc,
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
    /// The LOG rules' events: the kernel's LOG lines (timestamp and host
    /// first, as syslog writes them) or JSON, to stdout, a file or syslog.
    Log(log::LogArgs),
    /// Run the long-lived part of netbeast in this network namespace until
    /// SIGTERM: following interfaces, draining logs, health checks, metrics.
    Daemon(crate::daemon::DaemonArgs),
    /// The article's firewall on a built-in demo topology (namespaces it
    /// creates and removes).
    Demo,
    /// Measure netbeast against iptables and nftables on the same traffic,
    /// and the XDP program's own cost.
    Bench(bench::BenchArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum FastPath {
    Auto,
    On,
    Off,
}

#[derive(Clone, Copy, ValueEnum)]
pub(super) enum Mode {
    Auto,
    Native,
    Skb,
}

/// Entry point: dispatches on the program name first, so links named
/// `iptables`, `iptables-save` and `iptables-restore` behave as those.
pub fn main() -> ExitCode {
    let args_os: Vec<OsString> = std::env::args_os().collect();
    let prog = args_os
        .first()
        .map(|a| {
            let a = a.to_string_lossy();
            a.rsplit('/').next().unwrap_or(&a).to_string()
        })
        .unwrap_or_default();
    let multi_call = matches!(
        prog.as_str(),
        "iptables" | "iptables-legacy" | "iptables-nft" | "iptables-save" | "iptables-restore"
    );
    // The iptables names take their arguments as text; an argument that is
    // not UTF-8 is refused with its position rather than a panic.
    let mut args: Vec<String> = Vec::with_capacity(args_os.len());
    if multi_call {
        for (i, a) in args_os.iter().enumerate() {
            match a.to_str() {
                Some(a) => args.push(a.to_string()),
                None => {
                    eprintln!(
                        "{prog}: argument {i} ({}) is not valid UTF-8, which netbeast cannot \
                         take yet",
                        a.to_string_lossy()
                    );
                    return ExitCode::from(2);
                }
            }
        }
    }
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
            let cli = match Cli::try_parse_from(&args_os) {
                Ok(cli) => cli,
                Err(e) => {
                    // clap's own message (help, version, or the error with
                    // its exit code); a closed pipe ends it quietly.
                    let _ = e.print();
                    return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
                }
            };
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
                } => plane::run_attach(
                    &ifaces,
                    mode,
                    fast_path,
                    &ct_timeouts,
                    ConntrackSizes {
                        unreplied: ct_unreplied_size,
                        established: ct_established_size,
                    },
                ),
                Command::Detach { ifaces, all } => plane::run_detach(&ifaces, all),
                Command::Status { json } => plane::run_status(json),
                Command::Gc => plane::run_gc(),
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
                Command::Log(args) => log::run(args),
                Command::Daemon(args) => crate::daemon::run(args),
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
pub(super) fn fold_counters(dp: &Dataplane, ruleset: &mut Ruleset) -> Result<()> {
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

/// True when a nat rule sends connections to 127.0.0.0/8 (the article's
/// `-j DNAT --to 127.0.0.1:8080`).
pub(super) fn dnats_to_loopback(ruleset: &Ruleset) -> bool {
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
pub(super) fn route_localnet(iface: &str) -> Result<()> {
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
            out!("{text}");
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
    out!("{}", save::save(&ruleset, counters));
    Ok(())
}

fn run_restore(
    noflush: bool,
    counters: bool,
    test: bool,
    table: Option<&str>,
    file: Option<PathBuf>,
) -> Result<()> {
    let (bytes, source) = match &file {
        Some(path) => (
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
            path.display().to_string(),
        ),
        None => {
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .context("cannot read standard input")?;
            (b, "standard input".to_string())
        }
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|b| **b == b'\n').count() + 1;
        anyhow::anyhow!(
            "{source}: line {line}: not valid UTF-8 (byte {at}); netbeast reads rule files as UTF-8 \
             text; nothing was applied"
        )
    })?;
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
pub(super) fn parse_timeouts(mut config: CtConfig, specs: &[String]) -> Result<CtConfig> {
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

/// The ruleset with every rule's and policy's counters (stored base +
/// live), and the data plane's `stats`, read under the namespace's lock:
/// what the daemon's metrics serve.
pub(crate) fn counters_snapshot() -> Result<(Ruleset, Vec<u64>)> {
    let ns = Namespace::current()?;
    let _lock = ns.lock()?;
    let (ruleset, dp) = open(&ns, false)?;
    let stats = match &dp {
        Some(dp) => dp.stats()?,
        None => vec![0; stats::COUNT as usize],
    };
    Ok((ruleset, stats))
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
        outln!("{}", serde_json::to_string_pretty(&m)?);
    } else {
        for (n, v) in stats::NAMES.iter().zip(&stats) {
            outln!("{n:<16} {v}");
        }
    }
    Ok(())
}
