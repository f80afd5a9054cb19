//! `netbeast trace`: which rules a packet meets, in order, and what finally
//! happens to it — for live packets matching a filter, or for a packet
//! described on the command line and run through the real program with
//! `BPF_PROG_TEST_RUN` (nothing is sent).

use std::{
    collections::HashSet,
    net::IpAddr,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    loader::Dataplane,
    packet::FrameBuilder,
    state::{self, Namespace},
    trace::{
        Filter, Grouper, Namer, PacketTrace, decode, describe, describe::Transport, id_cpu,
        open_reports,
    },
};

use super::plane::open;

/// Packets `netbeast trace` shows when neither `--count` nor `--timeout`
/// bounds it.
pub const DEFAULT_COUNT: u64 = 10;
/// A packet whose CPU reported nothing for this long is complete.
const QUIET: Duration = Duration::from_millis(100);
/// How long the loop waits for reports before it looks at the clock.
const POLL: Duration = Duration::from_millis(100);
/// The source MAC of a described packet (locally administered).
const DESCRIBED_SOURCE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

#[derive(clap::Args, Debug, Clone)]
pub struct TraceArgs {
    /// Run this packet through the data plane instead of watching live
    /// ones (nothing is sent), e.g. 'tcp 10.0.0.5:1234 > 10.0.0.1:80 syn in
    /// eth0'. Grammar: PROTO SRC > DST [tcp flags | icmp type] [ttl N] in
    /// IFACE; PROTO tcp, udp or icmp.
    #[arg(long, value_name = "DESC", conflicts_with_all = ["count", "timeout"])]
    pub packet: Option<String>,
    /// Stop after this many matching packets (default 10 unless --timeout
    /// is given).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
    /// One JSON object per packet.
    #[arg(long)]
    pub json: bool,
    /// Only packets matching these iptables matches (as their first chain
    /// sees them), e.g. -p tcp --dport 80 -s 10.0.0.5.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "MATCH"
    )]
    pub matches: Vec<String>,
}

/// Set by SIGINT/SIGTERM: stop, switch tracing off, exit.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Tracing is on while this lives: dropping it (the end, an error, ^C)
/// clears `ACTIVE_TRACE`, under the lock, as a ruleset change writes the
/// same word.
struct Tracing {
    ns: Namespace,
    dp: Dataplane,
}

impl Tracing {
    fn start(ns: Namespace, mut dp: Dataplane) -> Result<Tracing> {
        dp.set_trace(true)?;
        Ok(Tracing { ns, dp })
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        let _lock = self.ns.lock();
        if let Err(e) = self.dp.set_trace(false) {
            eprintln!(
                "netbeast: cannot switch tracing off ({e}); every packet is still traced: \
                 run netbeast trace --count 1 again to clear it"
            );
        }
    }
}

fn iface(ifindex: u32) -> String {
    crate::log::iface_name(ifindex).unwrap_or_else(|| "-".into())
}

fn print(p: &PacketTrace, json: bool) {
    if json {
        outln!("{}", p.json(&iface));
    } else {
        out!("{}", p.text(&iface));
    }
}

/// The filter takes every argument after its first match (iptables
/// options start with `-` too): trace's own options written after it are
/// taken back out (no iptables match has options of these names).
fn own_options(mut args: TraceArgs) -> Result<TraceArgs> {
    let mut matches = Vec::new();
    let mut rest = std::mem::take(&mut args.matches).into_iter();
    while let Some(a) = rest.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = |what: &str| -> Result<String> {
            match inline.clone().or_else(|| rest.next()) {
                Some(v) => Ok(v),
                None => bail!("{name} needs {what}"),
            }
        };
        match name.as_str() {
            "--json" if inline.is_none() => args.json = true,
            "--count" => {
                let v = value("a number of packets")?;
                args.count = Some(
                    v.parse()
                        .with_context(|| format!("--count {v}: give a number of packets"))?,
                );
            }
            "--timeout" => {
                let v = value("a number of seconds")?;
                args.timeout = Some(
                    v.parse()
                        .with_context(|| format!("--timeout {v}: give a number of seconds"))?,
                );
            }
            "--packet" => bail!(
                "--packet traces the packet it describes: drop the filter, which is for live \
                 packets"
            ),
            _ => matches.push(a),
        }
    }
    args.matches = matches;
    Ok(args)
}

pub fn run(args: TraceArgs) -> Result<()> {
    let args = own_options(args)?;
    let ns = Namespace::current()?;
    ns.check_pins_visible()?;
    if !ns.has_dataplane() {
        bail!(
            "no netbeast data plane in this network namespace: attach one first (netbeast \
             attach IFACE)"
        );
    }
    if let Some(desc) = &args.packet {
        if !args.matches.is_empty() {
            bail!(
                "--packet traces the packet it describes: drop the filter ({}), which is for \
                 live packets",
                args.matches.join(" ")
            );
        }
        return run_described(&ns, desc, args.json);
    }
    if let Some(t) = args.timeout
        && !(t > 0.0 && t.is_finite())
    {
        bail!("--timeout {t}: give a number of seconds above 0");
    }
    if args.count == Some(0) {
        bail!("--count 0: give at least 1 packet");
    }
    let filter = Filter::parse(&args.matches)?;
    let count = match (args.count, args.timeout) {
        (None, None) => Some(DEFAULT_COUNT),
        (c, _) => c,
    };
    let deadline = args
        .timeout
        .map(|t| Instant::now() + Duration::from_secs_f64(t));
    // SAFETY: `on_signal` only stores into an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }

    let lock = ns.lock()?;
    let (ruleset, dp) = open(&ns, false)?;
    let dp = dp.context("no netbeast data plane in this network namespace")?;
    let links = state::links();
    let mut namer = Namer::new(ruleset, state::interfaces(&links), compiling(&ns, &dp));
    let routes: Vec<_> = crate::local_routes::local_routes().unwrap_or_default();
    let mut ring = open_reports(&ns.maps_dir())?;
    // Reports of an earlier trace that nobody read.
    while ring.next().is_some() {}
    let tracing = Tracing::start(ns, dp)?;
    drop(lock);

    let mut grouper = Grouper::default();
    let mut shown = 0u64;
    let done = |shown: u64| count.is_some_and(|c| shown >= c);
    let show = |packets: Vec<PacketTrace>, shown: &mut u64, namer: &Namer| {
        for p in packets {
            if done(*shown) {
                return;
            }
            let Some(first) = p.chains.first() else {
                continue;
            };
            if filter.matches(first, namer.interfaces(), &routes) {
                print(&p, args.json);
                *shown += 1;
            }
        }
    };
    loop {
        while let Some(item) = ring.next() {
            let Some(ev) = decode(&item) else { continue };
            drop(item);
            if !namer.agrees(&tracing.dp, &ev)? {
                // A rule change since: name the slots from the new ruleset.
                let ruleset = tracing.ns.load_ruleset()?;
                namer.reload(
                    ruleset,
                    state::interfaces(&state::links()),
                    compiling(&tracing.ns, &tracing.dp),
                );
                if !namer.agrees(&tracing.dp, &ev)? {
                    eprintln!(
                        "netbeast: a report of chain {} does not fit the ruleset on file \
                         (changed again meanwhile?): skipped",
                        crate::trace::chain_name(ev.chain).1
                    );
                    continue;
                }
            }
            let run = namer.name(&ev)?;
            let closed = grouper.add(ev.id, run);
            show(closed, &mut shown, &namer);
        }
        show(grouper.close_older(QUIET), &mut shown, &namer);
        let timed_out = deadline.is_some_and(|d| Instant::now() >= d);
        if done(shown) || timed_out || INTERRUPTED.load(Ordering::Relaxed) {
            break;
        }
        crate::log::wait_readable(&ring, POLL);
    }
    show(grouper.close_older(Duration::ZERO), &mut shown, &namer);
    let lost = tracing.dp.stats()?[netbeast_common::stats::TRACE_LOST as usize];
    drop(tracing);
    if lost > 0 && !args.json {
        eprintln!(
            "netbeast: {lost} chain reports lost so far (trace_lost): the trace ring buffer \
             was full; narrow the traffic or read faster"
        );
    }
    Ok(())
}

/// The frame of a described packet, as it would arrive on `dst_mac`'s
/// interface.
fn frame_of(d: &describe::Described, dst_mac: [u8; 6]) -> Vec<u8> {
    let b = match (d.src, d.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => match d.transport {
            Transport::Tcp {
                sport,
                dport,
                flags,
            } => FrameBuilder::tcp(src, sport, dst, dport).tcp_flags(flags),
            Transport::Udp { sport, dport } => FrameBuilder::udp(src, sport, dst, dport),
            Transport::Icmp { icmp_type, code } | Transport::Icmp6 { icmp_type, code } => {
                if icmp_type == 8 || icmp_type == 0 {
                    FrameBuilder::icmp(src, dst, icmp_type, code).payload(&[0, 1, 0, 1])
                } else {
                    FrameBuilder::icmp(src, dst, icmp_type, code)
                }
            }
        }
        .ttl(d.ttl),
        (src, dst) => {
            let (src, dst) = (v6_of(src), v6_of(dst));
            match d.transport {
                Transport::Tcp {
                    sport,
                    dport,
                    flags,
                } => FrameBuilder::tcp6_segment(src, sport, dst, dport, flags, 1, &[]),
                Transport::Udp { sport, dport } => FrameBuilder::udp6(src, sport, dst, dport),
                Transport::Icmp { icmp_type, code } | Transport::Icmp6 { icmp_type, code } => {
                    // An echo's identifier and sequence; zeros for the rest.
                    let rest = if icmp_type == 128 || icmp_type == 129 {
                        [0, 1, 0, 1]
                    } else {
                        [0; 4]
                    };
                    FrameBuilder::icmp6(src, dst, icmp_type, code, rest, &[])
                }
            }
            .hop_limit(d.ttl)
        }
    };
    b.src_mac(DESCRIBED_SOURCE_MAC).dst_mac(dst_mac).build()
}

/// An address of an IPv6 description (the parser made both IPv6).
fn v6_of(a: IpAddr) -> std::net::Ipv6Addr {
    match a {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

/// The first 32-bit word of an address, as the kernel's keys hold it
/// (`keys.src` / `keys.dst`: packet order).
fn first_word(a: IpAddr) -> u32 {
    match a {
        IpAddr::V4(a) => u32::from_ne_bytes(a.octets()),
        IpAddr::V6(a) => {
            let o = a.octets();
            u32::from_ne_bytes([o[0], o[1], o[2], o[3]])
        }
    }
}

/// `--packet`: one run of the namespace's XDP program, with its maps, on
/// the described frame, traced; what it left in conntrack is removed.
fn run_described(ns: &Namespace, desc: &str, json: bool) -> Result<()> {
    let d = describe::parse(desc)?;
    let links = state::links();
    let Some(link) = links.iter().find(|l| l.name == d.in_iface) else {
        bail!(
            "no interface {} in this network namespace (ip link lists them)",
            d.in_iface
        );
    };
    if ns.iface_record(link.ifindex).is_none() {
        bail!(
            "{} is not attached: packets arriving there never meet netbeast's rules \
             (netbeast attach {} first)",
            d.in_iface,
            d.in_iface
        );
    }
    let frame = frame_of(&d, link.mac.unwrap_or([0; 6]));

    let lock = ns.lock()?;
    let (ruleset, dp) = open(ns, false)?;
    let mut dp = dp.context("no netbeast data plane in this network namespace")?;
    let mut namer = Namer::new(ruleset, state::interfaces(&links), compiling(ns, &dp));
    let before: HashSet<_> = dp.conntrack_entries()?.into_iter().map(|e| e.0).collect();
    let before6: HashSet<_> = dp.conntrack_entries6()?.into_iter().map(|e| e.0).collect();
    let mut ring = open_reports(&ns.maps_dir())?;
    while ring.next().is_some() {}
    // The run reports from this CPU: stay on it.
    // SAFETY: plain libc calls on this thread's own affinity.
    let cpu = unsafe {
        let cpu = libc::sched_getcpu();
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
        cpu as u64
    };
    dp.set_trace(true)?;
    let result = dp.test_run_xdp(&frame, link.ifindex);
    dp.set_trace(false)?;
    let output = result?;

    // This run's reports: this CPU's, from the first whose packet is ours.
    let (src, dst) = (first_word(d.src), first_word(d.dst));
    let mut id = None;
    let mut trace = PacketTrace {
        id: 0,
        chains: Vec::new(),
    };
    while let Some(item) = ring.next() {
        let Some(ev) = decode(&item) else { continue };
        drop(item);
        if id_cpu(ev.id) != cpu {
            continue;
        }
        if id.is_none() && ev.keys.src == src && ev.keys.dst == dst {
            id = Some(ev.id);
        }
        if id == Some(ev.id) {
            if !namer.agrees(&dp, &ev)? {
                bail!("the ruleset changed during the run: run the trace again");
            }
            trace.chains.push(namer.name(&ev)?);
        }
    }
    trace.id = id.unwrap_or(0);
    // A described packet leaves no connection behind.
    match d.src {
        IpAddr::V4(_) => {
            for (key, _, _) in dp.conntrack_entries()? {
                if !before.contains(&key) && [key.addr_lo, key.addr_hi].contains(&src) {
                    dp.remove_conntrack_entry(&key)?;
                }
            }
        }
        IpAddr::V6(_) => {
            for (key, _, _) in dp.conntrack_entries6()? {
                let ours = [key.addr_lo.0[0], key.addr_hi.0[0]].contains(&src);
                if !before6.contains(&key) && ours {
                    dp.remove_conntrack_entry6(&key)?;
                }
            }
        }
    }
    drop(lock);

    let action = match output.action {
        0 => "XDP_ABORTED",
        1 => "XDP_DROP",
        2 => "XDP_PASS",
        3 => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "?",
    };
    if trace.chains.is_empty() {
        let why = "no chain ran: the kernel takes it before netbeast's chains (no route, a \
                   TTL that expires here, a martian address, a later fragment for the host, \
                   an IPv6 packet while the IPv6 ruleset is empty)";
        if json {
            outln!(
                "{}",
                serde_json::json!({"packet": desc, "rules": [], "fate": why, "xdp": action})
            );
        } else {
            outln!("packet {desc}\n  => {why} ({action})");
        }
        return Ok(());
    }
    if json {
        let mut v = trace.json(&iface);
        v["xdp"] = serde_json::json!(action);
        outln!("{v}");
    } else {
        out!("{}", trace.text(&iface));
        outln!("  (the program returned {action}; nothing was sent)");
    }
    Ok(())
}

/// How the loader compiled the generation the kernel runs (the coarsening
/// it started from, `compile::compile_hinted`, and the data plane's
/// capacity): the trace's compile does the same, to name the same slots.
fn compiling(ns: &Namespace, dp: &Dataplane) -> crate::compile::Compiling {
    crate::compile::Compiling {
        hint: dp.commit_seq().ok().and_then(|seq| ns.coarsening(seq)),
        capacity: dp.capacity(),
    }
}
