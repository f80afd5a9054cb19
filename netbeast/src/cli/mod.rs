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
pub mod boot;
pub mod conntrack;
pub mod demo;
mod getopt;
pub mod ipset;
pub mod lb;
pub mod log;
mod plane;
pub mod recent;
mod saverestore;
pub mod trace;

use std::{
    ffi::OsString,
    io::Write,
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use netbeast_common::{CtConfig, stats};
use serde_json::json;

use crate::{
    compile::BUILTIN_CHAINS,
    loader::{Dataplane, sizing::TableMemory},
    rules::{
        command, journal,
        model::{Counter, Family, Ruleset, Target},
        parse::{self, Problem},
        save,
    },
    state::{self, Namespace},
};
use plane::open;
pub(crate) use plane::{reconcile_current, remove_current};

/// Set once stdout's reader has gone.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// See [`out!`].
pub(crate) fn write_out(text: &str) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    // Raw bytes of a comment leave as the bytes they were.
    let bytes = crate::rawtext::to_bytes(text);
    if let Err(e) = stdout.write_all(&bytes).and_then(|()| stdout.flush()) {
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
        /// auto: XDP_REDIRECT into native XDP devices, a TC-level redirect
        /// into veths (whose other end takes XDP_REDIRECT only when it runs
        /// XDP) and devices in generic mode; on: XDP_REDIRECT everywhere,
        /// and REJECT replies and SYN cookies with XDP_TX (for peers that
        /// run XDP); off: the kernel forwards.
        #[arg(long, value_enum, default_value_t = FastPath::Auto)]
        fast_path: FastPath,
        /// A conntrack timeout, NAME=SECONDS (repeatable). Names:
        /// tcp-syn-sent, tcp-syn-recv, tcp-established, tcp-fin-wait,
        /// tcp-time-wait, tcp-close, udp, udp-stream, icmp, generic.
        #[arg(long = "ct-timeout", value_name = "NAME=SECONDS")]
        ct_timeouts: Vec<String>,
        /// Memory for the keyed state tables (conntrack, -m recent,
        /// connlimit, nat OUTPUT's sockets, REJECT's ICMP hosts, the SYN
        /// proxy, ipset members), like 16M, 64MiB or 1G; auto (the default):
        /// a 32nd of the machine's memory (or of the memory limit of the
        /// cgroup netbeast runs in, when lower: a container's), every table
        /// at its default size from about 6.5 GiB on. Each table gets the same share of its
        /// default. Chosen when the data plane is created and kept for its
        /// life (`status` shows it); a different one later is refused: to
        /// change it, `netbeast detach --all` first.
        #[arg(long, value_name = "SIZE", value_parser = TableMemory::parse)]
        table_memory: Option<TableMemory>,
        /// Memory for the ruleset arrays (rules, their counters, match
        /// classes, guards, translations, hashlimit buckets), like 8M or
        /// 64MiB; auto (the default): a 32nd of the machine's memory (or of
        /// its cgroup's limit, when lower), the most rules (524,288 rule
        /// slots) from about 4.8 GiB on. Each array gets the same share, a
        /// power of two from 1/64 (8,192 rule slots, 2.3 MiB); `status`
        /// shows it. Chosen when the data plane
        /// is created and kept for its life: to change it, `netbeast
        /// detach --all` first.
        #[arg(long, value_name = "SIZE", value_parser = TableMemory::parse)]
        ruleset_memory: Option<TableMemory>,
        /// Capacity of the table of connections without a reply yet
        /// (default: sized with the others, see --table-memory; outside its
        /// budget when given; fixed when the data plane is created).
        #[arg(long, value_name = "ENTRIES")]
        ct_unreplied_size: Option<u32>,
        /// Capacity of the table of connections that saw a reply (as
        /// --ct-unreplied-size).
        #[arg(long, value_name = "ENTRIES")]
        ct_established_size: Option<u32>,
        /// Shield these listening ports from SYN floods (like 80,443 or
        /// 8000:8010; `none` removes the shield): SYNs to them are answered
        /// with SYN cookies in XDP, before the rules, and only clients that
        /// answer the cookie reach the listener (-j SYNPROXY --sack-perm
        /// --timestamp --mss 1460 and the listeners' own --wscale, for
        /// each). Sets the namespace's net.ipv4.tcp_syncookies and
        /// tcp_timestamps to 2.
        #[arg(long, value_name = "PORTS")]
        syn_flood_guard: Option<String>,
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
        args: Vec<OsString>,
    },
    /// ip6tables syntax, verbatim, for the IPv6 ruleset (separate from the
    /// IPv4 one, as in iptables).
    #[command(disable_help_flag = true)]
    Ip6tables {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// ipset syntax, verbatim (ipset 7.17's commands, output and exit
    /// codes): sets that `-m set --match-set` matches.
    #[command(disable_help_flag = true)]
    Ipset {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Print the ruleset in iptables-save format (iptables-save's options:
    /// -c, -t TABLE, -f FILE; -h lists them; -6 first: the IPv6 ruleset,
    /// as ip6tables-save prints it).
    #[command(disable_help_flag = true)]
    Save {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Replace the ruleset from iptables-save format, atomically
    /// (iptables-restore's options: -n, -c, -t, -T TABLE, FILE; -h lists them;
    /// -6 first: the IPv6 ruleset, from ip6tables-save format).
    #[command(disable_help_flag = true)]
    Restore {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
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
        /// With -L: the connections of one family only, ipv4 or ipv6
        /// (both without it, as conntrack(8) lists them).
        #[arg(
            short = 'f',
            long = "family",
            value_name = "FAMILY",
            conflicts_with = "count"
        )]
        family: Option<String>,
    },
    /// The -m recent lists (/proc/net/xt_recent's): -L [NAME].
    Recent {
        /// List the addresses of every list, or of list NAME.
        #[arg(short = 'L', long = "list", required = true)]
        list: bool,
        name: Option<String>,
    },
    /// Data plane statistics.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// The LOG rules' events: the kernel's LOG lines (timestamp and host
    /// first, as syslog writes them) or JSON, to stdout, a file or syslog.
    Log(log::LogArgs),
    /// Which rules packets meet, in order, and what finally happens to
    /// them: live packets matching iptables matches (e.g. -p tcp --dport
    /// 80), or one described with --packet and run through the data plane
    /// without sending it.
    Trace(trace::TraceArgs),
    /// Load-balanced services: VIP:PORT to backends, Maglev, health checks.
    Lb {
        #[command(subcommand)]
        command: lb::LbCommand,
    },
    /// At boot (dist/netbeast.service): attach to the interfaces listed in
    /// CONFIG_DIR/interfaces, then restore CONFIG_DIR/rules.v4.
    Boot {
        #[arg(long, value_name = "DIR", default_value = boot::DEFAULT_CONFIG_DIR)]
        config_dir: std::path::PathBuf,
    },
    /// Write netbeast's systemd units (boot, daemon) and an example
    /// /etc/netbeast/interfaces under ROOT.
    InstallService {
        #[arg(long, value_name = "ROOT", default_value = "/")]
        root: std::path::PathBuf,
    },
    /// Print a shell completion script (e.g. `netbeast completions bash >
    /// /etc/bash_completion.d/netbeast`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page, roff (e.g. `netbeast manpage | man -l -`).
    Manpage,
    /// Run the long-lived part of netbeast in this network namespace until
    /// SIGTERM: following interfaces, draining logs, health checks, metrics.
    Daemon(crate::daemon::DaemonArgs),
    /// The article, section by section, on hosts in network namespaces it
    /// creates and removes: firewall, router, nat, portfwd, lb, antidos, logger.
    Demo {
        /// Run only this section.
        #[arg(value_enum)]
        section: Option<demo::Section>,
    },
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
    crate::profile::start();
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
        "iptables"
            | "iptables-legacy"
            | "iptables-nft"
            | "iptables-save"
            | "iptables-restore"
            | "ip6tables"
            | "ip6tables-legacy"
            | "ip6tables-nft"
            | "ip6tables-save"
            | "ip6tables-restore"
            | "ipset"
    );
    // The iptables names take their arguments as text that may carry raw
    // bytes (a comment's, as iptables takes them).
    let mut args: Vec<String> = Vec::new();
    if multi_call {
        args = match raw_args(&prog, &args_os) {
            Ok(args) => args,
            Err(code) => return code,
        };
    }
    let result = match prog.as_str() {
        "iptables" | "iptables-legacy" | "iptables-nft" => {
            return run_iptables(&args.split_off(1), Family::V4);
        }
        "ip6tables" | "ip6tables-legacy" | "ip6tables-nft" => {
            return run_iptables(&args.split_off(1), Family::V6);
        }
        "ipset" => return ipset::main(&args.split_off(1)),
        "iptables-save" => return saverestore::save_main(&prog, &args.split_off(1), Family::V4),
        "iptables-restore" => {
            return saverestore::restore_main(&prog, &args.split_off(1), Family::V4);
        }
        "ip6tables-save" => return saverestore::save_main(&prog, &args.split_off(1), Family::V6),
        "ip6tables-restore" => {
            return saverestore::restore_main(&prog, &args.split_off(1), Family::V6);
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
                Command::Iptables { args } => {
                    return match raw_args("iptables", &args) {
                        Ok(args) => run_iptables(&args, Family::V4),
                        Err(code) => code,
                    };
                }
                Command::Ipset { args } => {
                    return match raw_args("ipset", &args) {
                        Ok(args) => ipset::main(&args),
                        Err(code) => code,
                    };
                }
                Command::Ip6tables { args } => {
                    return match raw_args("ip6tables", &args) {
                        Ok(args) => run_iptables(&args, Family::V6),
                        Err(code) => code,
                    };
                }
                Command::Attach {
                    ifaces,
                    mode,
                    fast_path,
                    ct_timeouts,
                    table_memory,
                    ruleset_memory,
                    ct_unreplied_size,
                    ct_established_size,
                    syn_flood_guard,
                } => plane::run_attach(
                    &ifaces,
                    mode,
                    fast_path,
                    &ct_timeouts,
                    &plane::TableRequest {
                        memory: table_memory,
                        ruleset_memory,
                        ct_unreplied: ct_unreplied_size,
                        ct_established: ct_established_size,
                    },
                    syn_flood_guard.as_deref(),
                ),
                Command::Detach { ifaces, all } => plane::run_detach(&ifaces, all),
                Command::Status { json } => plane::run_status(json),
                Command::Gc => plane::run_gc(),
                Command::Save { args } => {
                    return match raw_args("netbeast save", &args) {
                        Ok(args) => {
                            let (family, args) = family_flag(args);
                            saverestore::save_main("netbeast save", &args, family)
                        }
                        Err(code) => code,
                    };
                }
                Command::Restore { args } => {
                    return match raw_args("netbeast restore", &args) {
                        Ok(args) => {
                            let (family, args) = family_flag(args);
                            saverestore::restore_main("netbeast restore", &args, family)
                        }
                        Err(code) => code,
                    };
                }
                Command::Stats { json } => run_stats(json),
                Command::Conntrack {
                    dump,
                    flush,
                    family,
                    ..
                } => family
                    .as_deref()
                    .map_or(
                        Ok(conntrack::FamilyFilter::Both),
                        conntrack::FamilyFilter::parse,
                    )
                    .and_then(|family| {
                        conntrack::run(
                            if dump {
                                conntrack::Action::List
                            } else if flush {
                                conntrack::Action::Flush
                            } else {
                                conntrack::Action::Count
                            },
                            family,
                        )
                    }),
                Command::Log(args) => log::run(args),
                Command::Trace(args) => trace::run(args),
                Command::Recent { name, .. } => recent::run(name.as_deref()),
                Command::Lb { command } => lb::run(command),
                Command::Boot { config_dir } => boot::run(&config_dir),
                Command::Completions { shell } => {
                    let mut command = <Cli as clap::CommandFactory>::command();
                    let mut text = Vec::new();
                    clap_complete::generate(shell, &mut command, "netbeast", &mut text);
                    out!("{}", String::from_utf8_lossy(&text));
                    Ok(())
                }
                Command::Manpage => {
                    let mut text = Vec::new();
                    clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                        // An administrator's command, like iptables(8).
                        .section("8")
                        .render(&mut text)
                        .context("cannot render the manual page")
                        .map(|()| out!("{}", String::from_utf8_lossy(&text)))
                }
                Command::InstallService { root } => boot::install(&root),
                Command::Daemon(args) => crate::daemon::run(args),
                Command::Demo { section } => demo::run(section),
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

/// Arguments as text that may carry raw bytes ([`crate::rawtext`]); one
/// holding a character reserved for them is refused (exit 2).
/// `netbeast save -6` / `restore -6`: a leading `-6` (or `--ipv6`) picks
/// the IPv6 ruleset, `-4` the IPv4 one (the default); the rest are
/// iptables-save's or iptables-restore's options.
fn family_flag(mut args: Vec<String>) -> (Family, Vec<String>) {
    let family = match args.first().map(String::as_str) {
        Some("-6" | "--ipv6") => Family::V6,
        Some("-4" | "--ipv4") => Family::V4,
        _ => return (Family::V4, args),
    };
    args.remove(0);
    (family, args)
}

fn raw_args(prog: &str, args: &[OsString]) -> Result<Vec<String>, ExitCode> {
    args.iter()
        .enumerate()
        .map(|(i, a)| {
            crate::rawtext::from_os(a).map_err(|e| {
                eprintln!("{prog}: argument {i}: {e}");
                ExitCode::from(parse::Problem::Parameter as u8)
            })
        })
        .collect()
}

/// The error and its causes on one line (raw bytes shown as `\xFF`).
fn chain_of(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = crate::rawtext::display(&cause.to_string());
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// iptables' exit code for an error: the class of the first cause that
/// has one (a parse error inside a restore line, say), else 1.
fn problem_of(e: &anyhow::Error) -> Problem {
    e.chain()
        .find_map(|cause| {
            if let Some(e) = cause.downcast_ref::<save::RestoreError>() {
                Some(e.problem())
            } else if let Some(e) = cause.downcast_ref::<parse::ParseError>() {
                Some(e.problem())
            } else if let Some(state::StateError::LockBusy { .. }) = cause.downcast_ref() {
                Some(Problem::Resource)
            } else {
                cause
                    .downcast_ref::<command::CommandError>()
                    .map(command::CommandError::problem)
            }
        })
        .unwrap_or(Problem::Other)
}

/// Adds the live counters of the active generation to the counter bases
/// stored with the rules.
pub(super) fn fold_counters(dp: &Dataplane, ruleset: &mut Ruleset) -> Result<()> {
    for (c, (family, table, name)) in BUILTIN_CHAINS.into_iter().enumerate() {
        if !family.tables().contains(&table) {
            continue;
        }
        let Some(ch) = ruleset.table_in_mut(family, table).chain_mut(name) else {
            continue;
        };
        let (rules, policy) = dp.chain_counters(c as u32, ch.rules.len())?;
        for (rule, live) in ch.rules.iter_mut().zip(rules) {
            rule.counter = add(rule.counter, live);
        }
        ch.policy_counter = add(ch.policy_counter, policy);
    }
    // User-defined chains' rules count in their own range: the tables'
    // chains in `Ruleset::tables` order
    // (`compile::user_chain_counters`).
    let total: usize = ruleset
        .tables()
        .into_iter()
        .flat_map(|(_, t)| &t.chains)
        .filter(|c| c.policy.is_none())
        .map(|c| c.rules.len())
        .sum();
    let live = dp.user_chain_counters(total)?;
    let mut live = live.into_iter();
    for chain in ruleset
        .tables_mut()
        .into_iter()
        .flat_map(|(_, t)| &mut t.chains)
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

/// True when the filter table holds a `-j SYNPROXY` rule.
pub(super) fn has_synproxy(ruleset: &Ruleset) -> bool {
    ruleset
        .filter
        .chains
        .iter()
        .flat_map(|c| &c.rules)
        .any(|r| matches!(r.target, Target::Synproxy(_)))
}

/// Says so when a `-j SYNPROXY` rule offers a window shift other than the
/// one this namespace's listeners choose: the client would then scale the
/// server's windows wrongly (ARCHITECTURE.md "The SYN-flood shield").
pub(super) fn warn_synproxy_wscale(ruleset: &Ruleset) {
    let listener = listener_wscale();
    for chain in &ruleset.filter.chains {
        for (i, rule) in chain.rules.iter().enumerate() {
            if let Target::Synproxy(s) = &rule.target
                && let Some(w) = s.wscale
                && u32::from(w) != listener
            {
                eprintln!(
                    "warning: rule {} of {}: -j SYNPROXY --wscale {w}, but this namespace's \
                     listeners use a window shift of {listener} (from net.ipv4.tcp_rmem and \
                     net.core.rmem_max): clients will misread the server's windows; use \
                     --wscale {listener}",
                    i + 1,
                    chain.name
                );
            }
        }
    }
}

/// The sysctls the SYN-flood shield needs in its namespace (see
/// docs/ARCHITECTURE.md "The SYN-flood shield"): `tcp_syncookies` 2, so
/// the listener takes the cookies of the shield (it only checks cookies
/// while it is "flooded", which the shield can mark only then), and
/// `tcp_timestamps` 2 (timestamps without a per-connection random
/// offset), so the options the cookie carries in the timestamp reach the
/// listener as the shield wrote them. A `tcp_timestamps` of 0 is left as
/// it is (then the shield must not offer timestamps).
pub(super) fn shield_sysctls() -> Result<()> {
    for (name, wanted, keep_if) in [
        ("tcp_syncookies", "2", None),
        ("tcp_timestamps", "2", Some("0")),
    ] {
        let path = format!("/proc/sys/net/ipv4/{name}");
        let now = std::fs::read_to_string(&path).unwrap_or_default();
        if now.trim() == wanted || keep_if == Some(now.trim()) {
            continue;
        }
        std::fs::write(&path, wanted).with_context(|| {
            format!(
                "cannot set net.ipv4.{name} to {wanted} ({path}), which the SYN-flood shield needs"
            )
        })?;
    }
    Ok(())
}

/// The window shift this namespace's listeners choose (the kernel's
/// tcp_select_initial_window with default buffers: the log2 of the
/// largest receive buffer, `tcp_rmem`'s maximum or `rmem_max`, minus 15,
/// within 0..=14). A shield must offer exactly it: the listener scales its
/// windows by its own shift, the client by the one the SYN-ACK offered.
pub(super) fn listener_wscale() -> u32 {
    let read = |path: &str| -> u64 {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.split_whitespace().last().and_then(|n| n.parse().ok()))
            .unwrap_or(0)
    };
    let space = read("/proc/sys/net/ipv4/tcp_rmem").max(read("/proc/sys/net/core/rmem_max"));
    let log2 = 63 - space.max(1).leading_zeros();
    log2.saturating_sub(15)
        .min(netbeast_common::synproxy::MAX_WSCALE)
}

/// The SYN-ACK options of `attach --syn-flood-guard`: what Linux itself
/// negotiates (MSS 1460 on Ethernet, SACK, timestamps, the listeners' own
/// window shift).
pub(super) fn guard_options() -> u32 {
    use netbeast_common::synproxy::*;
    1460 | MSS | SACK_PERM | TIMESTAMP | WSCALE | (listener_wscale() << WSCALE_SHIFT)
}

/// `--syn-flood-guard`'s ports: a comma-separated list of ports and
/// ranges (`a:b`), or `none`.
pub(super) fn parse_guard_ports(text: &str) -> Result<Vec<u16>> {
    if text == "none" {
        return Ok(Vec::new());
    }
    let mut ports = Vec::new();
    for part in text.split(',') {
        let port = |p: &str| -> Result<u16> {
            match p.parse::<u16>() {
                Ok(n) if n != 0 => Ok(n),
                _ => bail!(
                    "--syn-flood-guard {text}: '{p}' is not a port (1 to 65535); give ports \
                     and ranges like 80,443,8000:8010, or none"
                ),
            }
        };
        match part.split_once(':') {
            Some((a, b)) => {
                let (a, b) = (port(a)?, port(b)?);
                if a > b {
                    bail!("--syn-flood-guard {text}: the range {part} runs backwards ({b}:{a}?)");
                }
                ports.extend(a..=b);
            }
            None => ports.push(port(part)?),
        }
    }
    ports.sort_unstable();
    ports.dedup();
    Ok(ports)
}

fn run_iptables(args: &[String], family: Family) -> ExitCode {
    // -L names hosts and services unless -n, as iptables does.
    crate::rules::names::use_system_names();
    let result = (|| -> Result<String> {
        if let Some(i) = crate::rawtext::check_args(args) {
            return Err(parse::ParseError::InvalidValue {
                option: format!("argument {}", i + 1),
                what: "text",
                value: crate::rawtext::display(&args[i]),
                reason: "it is not valid UTF-8; netbeast takes raw bytes only in a --comment"
                    .into(),
            }
            .into());
        }
        let cmd = parse::parse_args(args, family)?;
        crate::profile::phase("parse the command");
        // `-h` and `-V` answer from the binary alone: no namespace state,
        // lock or pins are made for them (a version check in a namespace
        // netbeast never ran in must leave nothing behind).
        if matches!(cmd.action, parse::Action::Help | parse::Action::Version) {
            return Ok(command::apply(&mut Ruleset::default(), &cmd)?.text);
        }
        let ns = Namespace::current()?;
        let changes = cmd.changes_ruleset();
        let _lock = ns.lock_within(cmd.wait_seconds.map(std::time::Duration::from_secs))?;
        crate::profile::phase("namespace, lock");
        // `-N` and `-X` change no compiled table: they are recorded
        // without a compile (`plane::commit_unchanged_tables`), on the
        // rule file's own counter bases.
        let tables_unchanged = matches!(
            cmd.action,
            parse::Action::NewChain { .. } | parse::Action::DeleteChain { .. }
        );
        let (mut ruleset, dp) = plane::open_stored(&ns, changes)?;
        // `-N` and `-X CHAIN` print nothing a counter shows and report
        // their edit of the chain list: applied to the rule file's bases
        // as they are, without a copy of the ruleset or its live counters
        // (at 100,000 rules two copies and the counters were half a `-N`).
        let bases_only = changes && cmd.edits_chain_list();
        let mut stored = (changes && tables_unchanged && !bases_only).then(|| ruleset.clone());
        // A command that reads prints counters only with `-v` (`-C`
        // never): the others skip reading every live counter.
        let counted = changes || cmd.verbose;
        if let Some(dp) = &dp
            && counted
            && !bases_only
        {
            fold_counters(dp, &mut ruleset)?;
        }
        crate::profile::phase("read the counters");
        // A one-rule command reports its splice, `-N` and `-X CHAIN`
        // their chain; the others are diffed against a copy of the ruleset
        // before them.
        let before = (changes && !cmd.is_one_rule_change() && !bases_only).then(|| ruleset.clone());
        let out = command::apply(&mut ruleset, &cmd)?;
        crate::profile::phase("apply the command");
        // What changed, counters aside: one splice for a one-rule command,
        // which the journal records instead of the whole rule file.
        let change = match (out.splice, out.chain_edit, &before) {
            (Some(splice), _, _) => Some(journal::splice_change(
                &ruleset, cmd.family, cmd.table, splice,
            )),
            (None, Some(edit), _) => Some(journal::chain_edit_change(
                &ruleset, cmd.family, cmd.table, edit,
            )),
            (None, None, Some(before)) => Some(journal::diff(before, &ruleset)),
            (None, None, None) => None,
        };
        crate::profile::phase("diff the ruleset");
        let moved = match (&before, &change) {
            (Some(before), Some(change)) => {
                !change.is_empty() || journal::counters_differ(before, &ruleset)
            }
            // A splice: the rules changed (or were replaced by equal ones,
            // which restarts their counters, as iptables' -R does).
            (None, Some(_)) => true,
            _ => false,
        };
        if moved {
            check_sets(&ns, &ruleset)?;
            let mut dp = dp.expect("opened with create");
            match &mut stored {
                Some(stored) => {
                    command::apply(stored, &cmd)?;
                    // The change is the same on the bases: only counters
                    // tell `stored` from `ruleset`.
                    plane::commit_unchanged_tables(&ns, &mut dp, stored, change.as_ref())?;
                }
                // On the bases already.
                None if bases_only => {
                    plane::commit_unchanged_tables(&ns, &mut dp, &ruleset, change.as_ref())?
                }
                None => plane::commit_change(&ns, &mut dp, &ruleset, change.as_ref())?,
            }
        }
        // The process ends here: freeing 100,000 rules one by one only
        // costs time (3 ms), the exit frees them at once.
        std::mem::forget(ruleset);
        Ok(out.text)
    })();
    crate::profile::report();
    match result {
        Ok(text) => {
            out!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let name = family.command();
            eprintln!("{name}: {}", chain_of(&e));
            let problem = problem_of(&e);
            if problem == Problem::Parameter {
                eprintln!("Try `netbeast {name} -h' for more information.");
            }
            ExitCode::from(problem as u8)
        }
    }
}

/// Refuses a ruleset whose `-m set` names a set that does not exist or
/// is of the other family, as xt_set's checkentry does (nothing is
/// applied).
pub(super) fn check_sets(ns: &Namespace, ruleset: &Ruleset) -> Result<()> {
    if let Some((option, name, reason)) = ipset::refused_sets(ns, ruleset)? {
        return Err(parse::ParseError::InvalidValue {
            option: option.into(),
            what: "set",
            value: name,
            reason,
        }
        .into());
    }
    Ok(())
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
