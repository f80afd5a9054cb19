//! `netbeast bench`, traffic part: netbeast, iptables and nftables on the
//! same traffic, in one run (issue 5, DESIGN §8).
//!
//! Topology, all in namespaces made here and removed on the way out:
//!
//! ```text
//!   generator ns        one ns per (scenario, data plane, rule count)
//!   g0, g1, ... ------> nbb-in    (drop, pass: the receiver)
//!               ------> nbb-in [router] nbb-out ------> s0, s1, ... sink ns
//!                                                (forward, dnat; XDP_DROP)
//! ```
//!
//! Every data plane is set up before the first measurement and stays up,
//! so the rounds interleave all of them (A B C … A B C …) and machine noise
//! hits every row alike. A measurement sends a calibrated number of frames
//! from the generator (one pinned core; XDP live frames, or pktgen with
//! `--generator pktgen`, see bench::generator) into one receiver; a
//! thread on another core reads the receiver's veth counter while the
//! generator is still sending, and the rate is frames taken per second over
//! that window. At the end every frame sent is accounted for from
//! independent counters: dropped by the data plane, received (UDP layer of
//! the receiver, or the sink behind the router), or lost on a veth ring
//! that was full; what is left is `unaccounted`.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{
    ethtool::{VethStats, counter},
    generator::{Generator, GeneratorError, GeneratorKind, HandedCounter, Port},
    live::{BareXdp, LiveError, Traffic, pin_to_cpu},
    napi::{self, NapiError, NapiThread},
    planes::{self, Family, Ip, Plane, PlaneError, Scenario},
};
use crate::{
    netns::{Netns, NetnsError},
    packet::MacAddr,
};

/// The receiving veth in every receiver or router namespace.
const RX_IFACE: &str = "nbb-in";
/// The router's way to the sink.
const ROUTER_OUT_IFACE: &str = "nbb-out";
/// First run of a calibration: small, so a slow receiver answers quickly.
const CALIBRATION_FRAMES: u32 = 4096;
/// How long an IPv6 receiver's stack sends frames of its own after its
/// interfaces come up: its unsolicited MLD reports (two, a random delay of
/// up to `mldv2_unsolicited_report_interval`, 1 s, apart); router
/// solicitations are off (`router_solicitations` 0).
const IPV6_SETTLE: Duration = Duration::from_secs(3);
/// Most frames in one run (BPF_PROG_TEST_RUN's repeat is a u32).
const MAX_FRAMES: u32 = 1 << 30;
/// How long a receiver may take to empty its ring after the generator
/// stopped before the run is declared stuck.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
const DRAIN_POLL: Duration = Duration::from_micros(200);
/// How often the window reads the receiver's counter during a run.
const SAMPLE_PERIOD: Duration = Duration::from_millis(5);
/// Pause between setting up and measuring.
const SETTLE: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("netbeast bench needs root (namespaces, XDP programs, iptables): run it with sudo")]
    NotRoot,
    #[error(
        "`{tool}` is not installed: install the Debian package `{package}` (apt-get install {package}), or leave its data plane out with --planes"
    )]
    MissingTool { tool: String, package: String },
    #[error(transparent)]
    Live(#[from] LiveError),
    #[error(transparent)]
    Generator(#[from] GeneratorError),
    #[error(transparent)]
    Plane(#[from] PlaneError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Napi(#[from] NapiError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("cannot read the veth statistics of {iface}: {source}")]
    Stats {
        iface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
    #[error("interrupted; the benchmark's namespaces and programs are removed")]
    Interrupted,
    #[error(
        "{what}: the receiver did not take the frames off its ring within {DRAIN_TIMEOUT:?} \
         ({taken} of {accepted})"
    )]
    Stuck {
        what: String,
        taken: u64,
        accepted: u64,
    },
}

type Result<T, E = BenchError> = std::result::Result<T, E>;

/// What to measure and how.
#[derive(Clone, Debug, Serialize)]
pub struct Options {
    pub scenarios: Vec<Scenario>,
    #[serde(skip)]
    pub families: Vec<Family>,
    pub rules: Vec<usize>,
    /// `lb`'s axis: backends behind the VIP.
    pub backends: Vec<usize>,
    pub rounds: usize,
    /// Target duration of one measurement.
    pub seconds: f64,
    /// Frame size, Ethernet header to the end of the payload.
    pub size: usize,
    pub flows: u32,
    /// `--stateful`: forward and dnat's FORWARD starts with a rule
    /// accepting ESTABLISHED (`planes::STATEFUL_RULE`).
    pub stateful: bool,
    /// The core the generator (and, without `receiver_cpu`, every
    /// receiver's softirq) runs on.
    pub cpu: usize,
    /// `--receiver-cpu`: the core the receivers run on, as pinned threaded
    /// NAPIs (bench::napi); None: in the generator's softirq, on `cpu`.
    pub receiver_cpu: Option<usize>,
    pub generator: GeneratorKind,
    /// Frames per live-frames batch (`--generator xdp`).
    pub batch: u32,
    /// A check, not a measure (`--quick`).
    pub quick: bool,
    /// `--family`: IPv4 traffic and iptables rules, or IPv6 traffic and
    /// ip6tables rules (the same subnets written into 2001:2::/48).
    pub ip: Ip,
}

impl Options {
    /// `--quick`: every scenario and data plane once, with small rule
    /// counts and short runs. A check that everything runs, not a measure.
    pub fn quick(mut self) -> Options {
        // Ten rules: the matching one behind nine that are not, as in a
        // full run, in a fraction of its setup time.
        self.rules = vec![10];
        self.rounds = 1;
        self.seconds = 0.02;
        self.quick = true;
        self
    }
}

/// The conntrack table size (entries) netbeast is attached with for
/// `flows` flows: the default sizes, or twice the flows rounded up to a
/// power of two (an LRU table may evict before it is full: its free
/// entries sit in per-CPU lists).
pub fn conntrack_size(flows: u32) -> u32 {
    let default =
        netbeast_common::CT_UNREPLIED_ENTRIES.max(netbeast_common::CT_ESTABLISHED_ENTRIES);
    flows.saturating_mul(2).next_power_of_two().max(default)
}

/// The core the generator runs on by default: the last one.
pub fn default_cpu() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()) - 1
}

/// One row of the report: a data plane at a rule count in a scenario.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub scenario: Scenario,
    pub plane: Plane,
    pub label: String,
    /// None for the reference rows (floor, kernel), which have no rules.
    /// In `lb`, the number of backends behind the VIP (the scenario's axis,
    /// [`Scenario::axis`]).
    pub rules: Option<usize>,
    /// Why this row was not measured (None when it was).
    pub unavailable: Option<String>,
    /// Median packets per second over the rounds, with min and max.
    pub pps: Option<f64>,
    pub pps_min: Option<f64>,
    pub pps_max: Option<f64>,
    pub samples: Vec<f64>,
    /// Samples taken over a whole run, less its fixed cost, because the
    /// generator finished before a mid-run window could be read.
    pub whole_run_samples: usize,
    /// The median divided by the iptables row's of the same scenario and
    /// rule count.
    pub ratio_to_iptables: Option<f64>,
    /// The median divided by the floor's: the bare XDP_DROP receiver, or for
    /// the routed scenarios the bare XDP_REDIRECT forwarder.
    pub ratio_to_floor: Option<f64>,
    pub frames_per_run: u32,
    /// Frames the generator handed to this receiver's veth (taken or
    /// refused), calibration included.
    pub sent: u64,
    /// Frames the generator's veth put on the receiver's ring.
    pub on_ring: u64,
    /// Delivered: to the receiver's UDP layer (local scenarios) or to the
    /// sink behind the router (forwarding scenarios).
    pub received: u64,
    /// Dropped by the data plane (its own counters).
    pub dropped: u64,
    /// Lost on a veth whose ring was full (the kernel's veth counters).
    pub lost: u64,
    /// sent − received − dropped − lost: frames no counter explains.
    pub unaccounted: i64,
    /// Packets counted by the matching (last) rule, for data planes with
    /// rules.
    pub matched: Option<u64>,
    /// `dnat`: packets the DNAT rule counted, one per connection (NAT rules
    /// see only a connection's first packet).
    pub translated: Option<u64>,
    /// `lb`: connections each backend was given, by the data plane's own
    /// counters (None where it has none per backend: nftables' map).
    pub backend_connections: Option<Vec<u64>>,
    /// `--stateful` forward and dnat: the connections the data plane's
    /// table holds after the run (`planes::connections`), one per flow.
    pub connections: Option<u64>,
    /// `--receiver-cpu`: where the receiver ran.
    pub receiver_thread: Option<ReceiverThread>,
}

/// The receiving veth's NAPI thread of a row (`--receiver-cpu`).
#[derive(Clone, Debug, Serialize)]
pub struct ReceiverThread {
    /// The CPU it was pinned to.
    pub cpu: usize,
    /// The CPU it last ran on (/proc/PID/stat), read after the rounds.
    pub last_cpu: Option<usize>,
    /// Seconds it ran over the whole benchmark (/proc/PID/schedstat).
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub kernel: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub iptables: String,
    pub nft: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub what: String,
    pub wanted: f64,
    pub measured: Option<f64>,
    pub met: Option<bool>,
}

impl Target {
    /// A target of at least `wanted`, met when `measured` (if there is a
    /// figure) reaches it.
    fn new(what: &str, wanted: f64, measured: Option<f64>) -> Target {
        Target {
            what: what.to_string(),
            wanted,
            measured,
            met: measured.map(|m| m >= wanted),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TrafficReport {
    pub command: String,
    pub date: String,
    pub machine: Machine,
    pub options: Options,
    pub generator: &'static str,
    /// The floor: packets per second into a bare XDP_DROP program.
    pub floor_pps: Option<f64>,
    /// The forwarding floor: packets per second a bare XDP program
    /// redirects from the router's one interface out of the other (the
    /// `forward` scenario's row); the yardstick of `forward` and `dnat`.
    pub redirect_floor_pps: Option<f64>,
    pub rows: Vec<Row>,
    /// Frames the generator counted itself (the XDP program's counter,
    /// pktgen's `pkts-sofar`), against the frames asked for.
    pub generator_counted: u64,
    pub generator_asked: u64,
    pub targets: Vec<Target>,
    pub seconds_total: f64,
}

/// Counters of one receiver, read before and after the whole run.
#[derive(Clone, Copy, Debug, Default)]
struct Snapshot {
    /// Frames the generator's veth put on the receiver's ring.
    accepted: u64,
    /// Frames it refused (the ring was full).
    refused: u64,
    rx_drops: u64,
    rx_xdp_drops: u64,
    udp: u64,
    sink_packets: u64,
    out_tx_dropped: u64,
    out_xmit_errors: u64,
    netbeast_dropped: u64,
    /// `--receiver-cpu`: nanoseconds the receiver's NAPI thread has run,
    /// and the CPU it last ran on.
    napi_ns: u64,
    napi_last_cpu: Option<usize>,
}

struct Receiver {
    /// `log`'s reader, draining the LOG events while the traffic runs;
    /// first, so that it ends before its namespace goes.
    _reader: Option<LogReader>,
    /// The route watcher of a routed netbeast plane (its route cache).
    _watcher: Option<RouteWatcher>,
    scenario: Scenario,
    plane: Plane,
    rules: Option<usize>,
    ns: Netns,
    /// The generator's end of this receiver's veth pair.
    port: Port,
    rx_stats: VethStats,
    sink_stats: Option<VethStats>,
    out_stats: Option<VethStats>,
    traffic: Traffic,
    frames_per_run: u32,
    /// Seconds of a run that carry no traffic (page pool set-up and
    /// tear-down in the kernel), measured with one-batch runs.
    overhead: f64,
    samples: Vec<f64>,
    /// Rounds whose rate is the whole run's (the window did not fit).
    whole_run_samples: usize,
    /// Frames the generator handed to this receiver's veth.
    sent: u64,
    base: Snapshot,
    /// `--receiver-cpu`: the receiving veth's NAPI thread.
    napi: Option<NapiThread>,
}

/// Keeps the process `command` starts off `avoid_cpu` (the generator's),
/// on a machine with more than one CPU.
fn off_cpu(command: &mut std::process::Command, avoid_cpu: usize) {
    use std::os::unix::process::CommandExt;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus > 1 {
        // SAFETY: only async-signal-safe libc calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                for c in (0..cpus).filter(|&c| c != avoid_cpu) {
                    libc::CPU_SET(c, &mut set);
                }
                libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
                Ok(())
            });
        }
    }
}

/// `netbeast log --follow` in a receiver's namespace, writing to
/// /dev/null: the reader the issue's LOG cost target assumes, kept off the
/// generator's CPU (a reader there would take its time, not the data
/// plane's). Killed on drop.
struct LogReader(std::process::Child);

impl LogReader {
    fn start(netbeast: &std::path::Path, ns: &Netns, avoid_cpu: usize) -> Result<LogReader> {
        let mut command = std::process::Command::new(netbeast);
        command
            .args([
                "--netns",
                ns.name(),
                "log",
                "--follow",
                "--output",
                "/dev/null",
            ])
            .stdin(std::process::Stdio::null());
        off_cpu(&mut command, avoid_cpu);
        let child = command
            .spawn()
            .map_err(|e| BenchError::Setup(format!("cannot start netbeast log --follow: {e}")))?;
        Ok(LogReader(child))
    }
}

impl Drop for LogReader {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `netbeast daemon` in a routed netbeast plane's router namespace, kept
/// off the generator's CPU: its route watcher holds the lease that lets the
/// XDP program use the route cache (`daemon/routes.rs`). Stopped with
/// SIGTERM on drop, which releases the lease.
struct RouteWatcher(std::process::Child);

/// How long the daemon may take to hold the route cache's lease.
const ROUTE_WATCHER_START: Duration = Duration::from_secs(10);

impl RouteWatcher {
    fn start(netbeast: &std::path::Path, ns: &Netns, avoid_cpu: usize) -> Result<RouteWatcher> {
        let mut command = std::process::Command::new(netbeast);
        command
            .args(["--netns", ns.name(), "daemon"])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        off_cpu(&mut command, avoid_cpu);
        let child = command
            .spawn()
            .map_err(|e| BenchError::Setup(format!("cannot start netbeast daemon: {e}")))?;
        let watcher = RouteWatcher(child);
        let maps = ns
            .in_netns(|| crate::state::Namespace::current().map(|n| n.maps_dir()))
            .map_err(|e| BenchError::Setup(format!("{e}")))?
            .map_err(|e| BenchError::Setup(format!("{e}")))?;
        let deadline = Instant::now() + ROUTE_WATCHER_START;
        loop {
            let lease = crate::loader::route_watch::RouteEpoch::open(&maps)
                .and_then(|e| e.lease_until())
                .unwrap_or(0);
            if lease > crate::loader::route_watch::monotonic_ns() {
                return Ok(watcher);
            }
            if Instant::now() > deadline {
                return Err(BenchError::Setup(format!(
                    "netbeast daemon took no lease on the route cache within \
                     {ROUTE_WATCHER_START:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RouteWatcher {
    fn drop(&mut self) {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

impl Receiver {
    fn what(&self) -> String {
        match self.rules {
            Some(n) => format!(
                "{} {}, {n} {}",
                self.scenario.name(),
                self.plane.label(self.scenario),
                self.scenario.axis()
            ),
            None => format!(
                "{} {}",
                self.scenario.name(),
                self.plane.label(self.scenario)
            ),
        }
    }

    fn snapshot(&self, generator: &Generator) -> Result<Snapshot> {
        let stats = |s: &VethStats, name: &str, iface: &str| {
            s.get(name).map_err(|source| BenchError::Stats {
                iface: iface.to_string(),
                source,
            })
        };
        let rx = self.rx_stats.read().map_err(|source| BenchError::Stats {
            iface: RX_IFACE.into(),
            source,
        })?;
        let handover = generator
            .handover(&self.port, self.sent)
            .map_err(|source| BenchError::Stats {
                iface: self.port.iface.clone(),
                source,
            })?;
        let mut s = Snapshot {
            accepted: handover.accepted,
            refused: handover.refused,
            rx_drops: rx.get(counter::RX_DROPS).copied().unwrap_or(0),
            rx_xdp_drops: rx.get(counter::RX_XDP_DROPS).copied().unwrap_or(0),
            ..Snapshot::default()
        };
        if let Some(sink) = &self.sink_stats {
            s.sink_packets = stats(sink, counter::RX_XDP_PACKETS, "sink")?;
        } else {
            s.udp = planes::udp_delivered(&self.ns, self.traffic.ip)?;
        }
        if let Some(out) = &self.out_stats {
            s.out_xmit_errors = stats(out, counter::XDP_XMIT_ERRORS, ROUTER_OUT_IFACE)?;
            s.out_tx_dropped = planes::tx_dropped(&self.ns, ROUTER_OUT_IFACE)?;
        }
        if self.plane.family() == Some(Family::Netbeast) {
            s.netbeast_dropped = planes::netbeast_dropped(&self.ns)?;
        }
        if let Some(thread) = &self.napi {
            let (ns, cpu) = thread.usage().ok_or_else(|| {
                BenchError::Setup(format!(
                    "the NAPI thread {} of {} is gone: was the receiver's XDP program or GRO \
                     changed during the run?",
                    thread.pid,
                    self.what()
                ))
            })?;
            s.napi_ns = ns;
            s.napi_last_cpu = Some(cpu);
        }
        Ok(s)
    }
}

/// A progress line on stderr, rewritten in place (only on a terminal):
/// steps done of the phase, what runs now, and the time left.
struct Progress {
    bar: indicatif::ProgressBar,
    /// Steps started in this phase; the bar shows those finished.
    started: u64,
}

impl Progress {
    fn new(enabled: bool) -> Progress {
        let bar = if enabled {
            indicatif::ProgressBar::with_draw_target(
                Some(0),
                indicatif::ProgressDrawTarget::stderr(),
            )
        } else {
            indicatif::ProgressBar::hidden()
        };
        let style =
            indicatif::ProgressStyle::with_template("[{bar:24}] {pos}/{len} {msg} ~{eta} left")
                .expect("a valid progress template")
                .progress_chars("# ");
        bar.set_style(style);
        Progress { bar, started: 0 }
    }

    fn phase(&mut self, total: usize) {
        self.bar.set_length(total as u64);
        self.bar.set_position(0);
        self.bar.reset_eta();
        self.started = 0;
    }

    fn step(&mut self, what: &str) {
        self.bar.set_position(self.started);
        self.bar.set_message(what.to_string());
        self.started += 1;
    }

    fn finish(&mut self) {
        self.bar.finish_and_clear();
    }
}

pub(super) fn mac_of(ns: &Netns, iface: &str) -> Result<(MacAddr, u32)> {
    let text = ns.ip(&["-j", "link", "show", "dev", iface])?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| BenchError::Setup(format!("ip -j link: {e}")))?;
    let addr = v[0]["address"].as_str().unwrap_or_default();
    let bytes: Vec<u8> = addr
        .split(':')
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .collect();
    let mac: MacAddr = bytes
        .try_into()
        .map_err(|_| BenchError::Setup(format!("{iface} has no MAC address ({addr:?})")))?;
    let ifindex = v[0]["ifindex"].as_u64().unwrap_or(0) as u32;
    Ok((mac, ifindex))
}

/// IPv6 off (no neighbour discovery chatter on the links) and no reverse
/// path filter (the generator's sources are not routed back).
fn prepare(ns: &Netns, forwarding: bool, ip: Ip) -> Result<()> {
    // IPv4 traffic: IPv6 off, so that no neighbour discovery, MLD or
    // router solicitation adds frames to the counts. IPv6 traffic needs it
    // on (addresses are added without DAD, neighbours written by hand).
    let ipv6_off = if ip == Ip::V6 { "0" } else { "1" };
    for (key, value) in [
        ("net.ipv6.conf.all.disable_ipv6", ipv6_off),
        ("net.ipv6.conf.default.disable_ipv6", ipv6_off),
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
        ("net.ipv6.conf.default.router_solicitations", "0"),
    ] {
        ns.sysctl(key, value)?;
    }
    if forwarding {
        match ip {
            Ip::V4 => ns.sysctl("net.ipv4.ip_forward", "1")?,
            Ip::V6 => ns.sysctl("net.ipv6.conf.all.forwarding", "1")?,
        }
    }
    Ok(())
}

/// The address standing for `addr` in the benchmark's family, in its
/// subnet, on `iface` (IPv6 without duplicate address detection: the
/// address is usable at once and nothing else is sent).
fn add_address(ns: &Netns, ip: Ip, addr: Ipv4Addr, iface: &str) -> Result<()> {
    let cidr = format!("{}/{}", ip.addr(addr), ip.prefix_len(planes::PREFIX_LEN));
    match ip {
        Ip::V4 => ns.ip(&["addr", "add", &cidr, "dev", iface])?,
        Ip::V6 => ns.ip(&["-6", "addr", "add", &cidr, "dev", iface, "nodad"])?,
    };
    Ok(())
}

fn stats(ns: &Netns, iface: &str) -> Result<VethStats> {
    VethStats::open(ns, iface).map_err(|source| BenchError::Stats {
        iface: iface.to_string(),
        source,
    })
}

struct Bench {
    options: Options,
    netbeast_binary: PathBuf,
    generator: Generator,
    bare: BareXdp,
    receivers: Vec<Receiver>,
    unavailable: Vec<Row>,
    /// Dropped last: the receivers' namespaces go first.
    gen_ns: Netns,
    sink_ns: Option<Netns>,
}

/// What the tools need: root, and the programs of the chosen data planes.
fn check_tools(options: &Options) -> Result<()> {
    if !crate::netns::is_root() {
        return Err(BenchError::NotRoot);
    }
    let mut tools = vec!["ip"];
    if options.families.contains(&Family::Iptables) {
        tools.extend(["iptables", "iptables-restore"]);
    }
    if options.families.contains(&Family::Nftables) {
        tools.push("nft");
    }
    for tool in tools {
        if planes::find_program(tool).is_none() {
            return Err(BenchError::MissingTool {
                tool: tool.into(),
                package: planes::package_of(tool).into(),
            });
        }
    }
    Ok(())
}

impl Bench {
    fn new(options: &Options) -> Result<Bench> {
        check_tools(options)?;
        // The generator, frame size and flows are checked before anything
        // is built.
        options.generator.require()?;
        let traffic = Traffic {
            src_mac: [0; 6],
            dst_mac: [0; 6],
            first_source: planes::LOCAL_FIRST_SOURCE,
            first_port: planes::FIRST_PORT,
            destination: planes::LOCAL_RECEIVER,
            dport: planes::DPORT,
            flows: options.flows,
            size: options.size,
            ip: options.ip,
        };
        options.generator.check(&traffic)?;
        if let Some(cpu) = options.receiver_cpu {
            napi::check_cpu(cpu, Some(options.cpu))?;
        }
        // `ip netns exec` hides /sys/fs/bpf: netbeast finds its pins through
        // the alias this mounts (see state.rs).
        crate::state::bpffs_root(true)?;
        let netbeast_binary = std::env::current_exe()
            .map_err(|e| BenchError::Setup(format!("cannot find the netbeast binary: {e}")))?;
        let gen_ns = Netns::new("bench-gen")?;
        // The generator's namespace sends nothing of its own: IPv6 off.
        prepare(&gen_ns, false, Ip::V4)?;
        // Opened in its namespace, where it also checks that it can send
        // (before any receiver is built).
        let (kind, cpu) = (options.generator, options.cpu);
        let generator = gen_ns.in_netns(|| -> Result<Generator> {
            pin_to_cpu(cpu)?;
            Ok(Generator::open(kind, cpu)?)
        })??;
        let bare = BareXdp::load()?;
        Ok(Bench {
            options: options.clone(),
            netbeast_binary,
            generator,
            bare,
            receivers: Vec::new(),
            unavailable: Vec::new(),
            gen_ns,
            sink_ns: None,
        })
    }

    fn build(&mut self, scenario: Scenario, plane: Plane, rules: Option<usize>) -> Result<()> {
        let index = self.receivers.len();
        let tag = format!(
            "bench-{}-{}-{}",
            scenario.name(),
            plane.id(),
            rules.map_or("ref".to_string(), |n| n.to_string())
        );
        let mut ns = Netns::new(&tag)?;
        if plane.family() == Some(Family::Netbeast) {
            ns = ns.with_netbeast(&self.netbeast_binary);
        }
        let routed = scenario.routed();
        let ip = self.options.ip;
        prepare(&ns, routed, ip)?;
        let gen_iface = format!("g{index}");
        self.gen_ns.ip(&[
            "link",
            "add",
            &gen_iface,
            "type",
            "veth",
            "peer",
            "name",
            RX_IFACE,
            "netns",
            ns.name(),
        ])?;
        self.gen_ns.ip(&["link", "set", &gen_iface, "up"])?;
        // With TSO on, a veth hands the skbs a kernel generator (pktgen)
        // sends to its peer's backlog instead of the NAPI ring the
        // receivers are counted on (veth_skb_is_eligible_for_gro); XDP
        // frames do not care.
        self.gen_ns.set_tso(&gen_iface, false)?;
        let (rx_addr, destination, first_source) = match scenario {
            Scenario::Drop | Scenario::Pass | Scenario::Limit | Scenario::Log => (
                planes::LOCAL_RECEIVER,
                planes::LOCAL_RECEIVER,
                planes::LOCAL_FIRST_SOURCE,
            ),
            Scenario::Forward => (planes::ROUTER_IN, planes::SINK, planes::ROUTED_FIRST_SOURCE),
            Scenario::Dnat | Scenario::Lb => (
                planes::ROUTER_IN,
                planes::ROUTER_IN,
                planes::ROUTED_FIRST_SOURCE,
            ),
        };
        add_address(&ns, ip, rx_addr, RX_IFACE)?;
        ns.ip(&["link", "set", RX_IFACE, "up"])?;
        // DESIGN §8: frames for netfilter enter the stack through GRO; a
        // veth without NAPI (no XDP program, GRO off) silently refuses
        // what the generator sends.
        ns.set_gro(RX_IFACE, true)?;

        let (mut sink_stats, mut out_stats) = (None, None);
        // The sink's MAC, the next hop of routed scenarios.
        let mut next_hop = None;
        if routed {
            if self.sink_ns.is_none() {
                let sink = Netns::new("bench-sink")?;
                // The sink counts in XDP, before any stack: IPv6 off.
                prepare(&sink, false, Ip::V4)?;
                self.sink_ns = Some(sink);
            }
            let sink = self.sink_ns.as_ref().expect("just made");
            let sink_iface = format!("s{index}");
            ns.ip(&[
                "link",
                "add",
                ROUTER_OUT_IFACE,
                "type",
                "veth",
                "peer",
                "name",
                &sink_iface,
                "netns",
                sink.name(),
            ])?;
            add_address(&ns, ip, planes::ROUTER_OUT, ROUTER_OUT_IFACE)?;
            ns.ip(&["link", "set", ROUTER_OUT_IFACE, "up"])?;
            sink.ip(&["link", "set", &sink_iface, "up"])?;
            // The sink counts and drops in XDP: it costs the shared core
            // as little as a receiver can.
            let bare = &mut self.bare;
            sink.in_netns(|| bare.attach_drop(&sink_iface))??;
            let (sink_mac, _) = mac_of(sink, &sink_iface)?;
            next_hop = Some(sink_mac);
            let mac = sink_mac.map(|b| format!("{b:02x}")).join(":");
            ns.ip(&[
                "neigh",
                "replace",
                &ip.addr(planes::SINK).to_string(),
                "lladdr",
                &mac,
                "dev",
                ROUTER_OUT_IFACE,
                "nud",
                "permanent",
            ])?;
            if scenario == Scenario::Lb {
                // Every backend is reached through the sink, which counts
                // them all alike.
                ns.ip(&[
                    "route",
                    "add",
                    &format!("{}/{}", planes::BACKEND_NET, planes::BACKEND_PREFIX_LEN),
                    "via",
                    &planes::SINK.to_string(),
                    "dev",
                    ROUTER_OUT_IFACE,
                ])?;
            }
            sink_stats = Some(stats(sink, &sink_iface)?);
            out_stats = Some(stats(&ns, ROUTER_OUT_IFACE)?);
        }

        match plane {
            Plane::Floor => {
                let bare = &mut self.bare;
                ns.in_netns(|| bare.attach_drop(RX_IFACE))??;
            }
            Plane::RedirectFloor => {
                let sink_mac = next_hop.ok_or_else(|| {
                    BenchError::Setup("the redirect floor needs a routed scenario".into())
                })?;
                let (out_mac, out_ifindex) = mac_of(&ns, ROUTER_OUT_IFACE)?;
                let bare = &mut self.bare;
                ns.in_netns(|| bare.attach_redirect(RX_IFACE, out_ifindex, sink_mac, out_mac))??;
            }
            Plane::Netbeast | Plane::NetbeastStatistic => {
                let mut args = vec!["attach", RX_IFACE];
                if routed {
                    // The sink runs an XDP program, so frames redirected to
                    // it arrive: the fast path works here as on a NIC.
                    args.extend([ROUTER_OUT_IFACE, "--fast-path", "on"]);
                }
                args.extend(["--mode", "native"]);
                // Tables that hold every flow: one with fewer entries than
                // flows would measure its evictions, not its lookups.
                let size = conntrack_size(self.options.flows).to_string();
                args.extend(["--ct-unreplied-size", &size, "--ct-established-size", &size]);
                ns.netbeast_ok(&args)?;
            }
            _ => {}
        }
        if let Some(n) = rules {
            planes::load_rules(&ns, scenario, plane, n, ip, self.options.stateful)?;
        }

        let (src_mac, gen_ifindex) = mac_of(&self.gen_ns, &gen_iface)?;
        let (dst_mac, _) = mac_of(&ns, RX_IFACE)?;
        let traffic = Traffic {
            src_mac,
            dst_mac,
            first_source,
            first_port: planes::FIRST_PORT,
            destination,
            dport: planes::DPORT,
            flows: self.options.flows,
            size: self.options.size,
            ip,
        };
        traffic.check()?;
        let port = Port::open(&self.gen_ns, &gen_iface, gen_ifindex).map_err(|source| {
            BenchError::Stats {
                iface: gen_iface.clone(),
                source,
            }
        })?;
        let rx_stats = stats(&ns, RX_IFACE)?;
        let reader = if scenario == Scenario::Log && plane == Plane::Netbeast {
            Some(LogReader::start(
                &self.netbeast_binary,
                &ns,
                self.options.cpu,
            )?)
        } else {
            None
        };
        // A routed netbeast plane runs as a router would: with the daemon,
        // whose route watcher lets the fast path use its route cache.
        let watcher = if routed && plane.family() == Some(Family::Netbeast) {
            Some(RouteWatcher::start(
                &self.netbeast_binary,
                &ns,
                self.options.cpu,
            )?)
        } else {
            None
        };
        let mut receiver = Receiver {
            _reader: reader,
            _watcher: watcher,
            scenario,
            plane,
            rules,
            ns,
            port,
            rx_stats,
            sink_stats,
            out_stats,
            traffic,
            frames_per_run: 0,
            overhead: 0.0,
            samples: Vec::new(),
            whole_run_samples: 0,
            sent: 0,
            base: Snapshot::default(),
            napi: None,
        };
        // Last: the NAPIs are on now (XDP programs attached, GRO on) and
        // stay on until the namespaces go.
        // A routed scenario's sink is not threaded: the router's thread
        // hands it the frames, so its NAPI runs in that thread's softirq,
        // on the receivers' core, as it runs on the generator's without
        // --receiver-cpu.
        if let Some(cpu) = self
            .options
            .receiver_cpu
            .filter(|_| scenario.own_receiver_core())
        {
            receiver.napi = Some(napi::thread_and_pin(&receiver.ns, RX_IFACE, cpu)?);
        }
        receiver.base = receiver.snapshot(&self.generator)?;
        self.receivers.push(receiver);
        Ok(())
    }

    /// IPv6: waits out what the receivers' stacks send of their own once
    /// their interfaces are up (a router's MLD reports reach the sink,
    /// which counts every frame), then takes every receiver's counters
    /// again as the base of its figures.
    fn settle(&mut self) -> Result<()> {
        if self.options.ip != Ip::V6 {
            return Ok(());
        }
        std::thread::sleep(IPV6_SETTLE);
        for i in 0..self.receivers.len() {
            let base = self.receivers[i].snapshot(&self.generator)?;
            self.receivers[i].base = base;
        }
        Ok(())
    }

    /// Sends `frames` into receiver `i` and waits until it has taken off
    /// its ring every frame the veth accepted.
    ///
    /// With `window`, a second thread (on another core) also reads the
    /// receiver's counter while the generator runs ([`sample_window`]): the
    /// rate over that window leaves out each run's fixed start and end (the
    /// kernel sets up and tears down a page pool per BPF_PROG_TEST_RUN
    /// call, ~15 ms here; pktgen's control file waits 125 ms before it
    /// looks whether its thread is done).
    fn run_once(&mut self, i: usize, frames: u32, window: Option<f64>) -> Result<RunOutcome> {
        let cpu = self.options.cpu;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let receiver_cpu = self
            .options
            .receiver_cpu
            .filter(|_| self.receivers[i].napi.is_some());
        let sampler_cpu = sampler_cpu(cpu, receiver_cpu, cpus);
        let r = &mut self.receivers[i];
        let generator = &mut self.generator;
        let gen_ns = &self.gen_ns;
        let (traffic, port, rx_stats) = (&r.traffic, &r.port, &r.rx_stats);
        gen_ns.in_netns(|| generator.configure(traffic, port))??;
        let stats_error = |source| BenchError::Stats {
            iface: port.iface.clone(),
            source,
        };
        let before = generator.handover(port, r.sent).map_err(stats_error)?;
        let rx0 = rx_stats
            .get(counter::RX_XDP_PACKETS)
            .map_err(|source| BenchError::Stats {
                iface: RX_IFACE.into(),
                source,
            })?;
        let handed = generator.handed_counter(port)?;
        let handed_before = r.sent;
        let done = AtomicBool::new(false);
        let (outcome, window_rate) = std::thread::scope(|scope| {
            let sampler = window.map(|seconds| {
                let done = &done;
                let window = Window {
                    rx: rx_stats,
                    rx0,
                    handed: &handed,
                    frames,
                    seconds,
                };
                scope.spawn(move || {
                    if let Some(c) = sampler_cpu {
                        let _ = pin_to_cpu(c);
                    }
                    sample_window(&window, done)
                })
            });
            let outcome = gen_ns.in_netns(|| -> Result<(u64, u64, u64, f64)> {
                pin_to_cpu(cpu)?;
                let sent = generator.send(frames);
                let returned = Instant::now();
                done.store(true, Ordering::SeqCst);
                let sent = sent?;
                let after = generator
                    .handover(port, handed_before + sent.frames)
                    .map_err(stats_error)?;
                // pktgen's is handed over less the veth's drops: a drop
                // that was not this run's must not make it wrap.
                let accepted = after.accepted.saturating_sub(before.accepted);
                loop {
                    let taken = rx_stats.get(counter::RX_XDP_PACKETS).map_err(|source| {
                        BenchError::Stats {
                            iface: RX_IFACE.into(),
                            source,
                        }
                    })? - rx0;
                    if taken >= accepted || returned.elapsed() > DRAIN_TIMEOUT {
                        let seconds = (sent.elapsed + returned.elapsed()).as_secs_f64();
                        return Ok((sent.frames, taken, accepted, seconds));
                    }
                    std::thread::sleep(DRAIN_POLL);
                }
            });
            done.store(true, Ordering::SeqCst);
            let window_rate = sampler.and_then(|s| s.join().ok().flatten());
            (outcome, window_rate)
        });
        let (sent, taken, accepted, seconds) = outcome??;
        r.sent += sent;
        if taken < accepted {
            return Err(BenchError::Stuck {
                what: r.what(),
                taken,
                accepted,
            });
        }
        Ok(RunOutcome {
            taken,
            seconds,
            window_rate,
        })
    }

    /// Finds the number of frames that takes about `--seconds` to send.
    /// A run's fixed cost (a one-batch run) is taken out first.
    fn calibrate(&mut self, i: usize) -> Result<()> {
        let target = self.options.seconds;
        let mut overhead = f64::MAX;
        for _ in 0..2 {
            let batch = super::live::BATCH_SIZE;
            overhead = overhead.min(self.run_once(i, batch, None)?.seconds);
        }
        self.receivers[i].overhead = overhead;
        let mut frames = CALIBRATION_FRAMES;
        loop {
            let seconds = self.run_once(i, frames, None)?.seconds - overhead;
            if seconds >= target / 4.0 || frames >= MAX_FRAMES / 8 {
                self.receivers[i].frames_per_run = scaled_frames(frames, seconds, target);
                return Ok(());
            }
            frames *= 8;
        }
    }

    fn measure(&mut self, progress: &mut Progress) -> Result<()> {
        let n = self.receivers.len();
        progress.phase(n * (self.options.rounds + 1));
        // Namespaces removed during setup (the NAT probe) are cleaned up by
        // the kernel in the background: let that pass before calibrating.
        std::thread::sleep(SETTLE);
        for i in 0..n {
            check_interrupted()?;
            progress.step(&format!("calibrating {}", self.receivers[i].what()));
            self.calibrate(i)?;
        }
        for round in 0..self.options.rounds {
            for i in 0..n {
                check_interrupted()?;
                progress.step(&format!(
                    "round {}/{}: {}",
                    round + 1,
                    self.options.rounds,
                    self.receivers[i].what()
                ));
                let frames = self.receivers[i].frames_per_run;
                let target = self.options.seconds;
                let run = self.run_once(i, frames, Some(target))?;
                let r = &mut self.receivers[i];
                let traffic_seconds = (run.seconds - r.overhead).max(run.seconds / 2.0);
                match run.window_rate {
                    Some(rate) => r.samples.push(rate),
                    None => {
                        // The window did not fit in the run: the whole run,
                        // less its fixed cost, is the measure.
                        r.whole_run_samples += 1;
                        r.samples.push(run.taken as f64 / traffic_seconds);
                    }
                }
                // Follow the machine: a calibration made in a slow moment
                // must not shrink every later run.
                r.frames_per_run = scaled_frames(frames, traffic_seconds, target);
            }
        }
        Ok(())
    }

    /// Rows with every frame accounted for.
    fn rows(&self) -> Result<Vec<Row>> {
        let mut rows = Vec::new();
        // Let the last softirqs and counters settle.
        std::thread::sleep(Duration::from_millis(100));
        for r in &self.receivers {
            let now = r.snapshot(&self.generator)?;
            let b = &r.base;
            let counters = planes::rule_counters(&r.ns, r.scenario, r.plane, r.traffic.ip)?;
            let backend_connections = planes::backend_connections(&r.ns, r.scenario, r.plane)?;
            let connections =
                if planes::stateful_in(r.scenario, self.options.stateful) && r.plane.has_rules() {
                    Some(planes::connections(&r.ns, r.plane)?)
                } else {
                    None
                };
            let dropped = match r.plane {
                Plane::Floor => now.rx_xdp_drops - b.rx_xdp_drops,
                Plane::Kernel => 0,
                Plane::Netbeast | Plane::NetbeastStatistic => {
                    now.netbeast_dropped - b.netbeast_dropped
                }
                _ => counters.map_or(0, |c| c.dropped),
            };
            let received = if r.sink_stats.is_some() {
                now.sink_packets - b.sink_packets
            } else {
                now.udp - b.udp
            };
            let lost = (now.refused - b.refused)
                + (now.rx_drops - b.rx_drops)
                + (now.out_xmit_errors - b.out_xmit_errors)
                + (now.out_tx_dropped - b.out_tx_dropped);
            let unaccounted = r.sent as i64 - received as i64 - dropped as i64 - lost as i64;
            let mut samples = r.samples.clone();
            let (median, min, max) = spread(&mut samples);
            rows.push(Row {
                scenario: r.scenario,
                plane: r.plane,
                label: r.plane.label_in(r.scenario, r.traffic.ip),
                rules: r.rules,
                unavailable: None,
                pps: median,
                pps_min: min,
                pps_max: max,
                samples: r.samples.clone(),
                whole_run_samples: r.whole_run_samples,
                ratio_to_iptables: None,
                ratio_to_floor: None,
                frames_per_run: r.frames_per_run,
                sent: r.sent,
                on_ring: now.accepted - b.accepted,
                received,
                dropped,
                lost,
                unaccounted,
                matched: counters.map(|c| c.matched),
                translated: counters.and_then(|c| c.translated),
                backend_connections,
                connections,
                receiver_thread: r.napi.as_ref().map(|t| ReceiverThread {
                    cpu: t.cpu,
                    last_cpu: now.napi_last_cpu,
                    seconds: now.napi_ns.saturating_sub(b.napi_ns) as f64 / 1e9,
                }),
            });
        }
        rows.extend(self.unavailable.iter().cloned());
        Ok(rows)
    }
}

/// Where the window's reader runs: on a core of neither the generator nor
/// the receivers if there is one; else off the receivers' own core
/// (`--receiver-cpu`), which it would take time from, onto the
/// generator's; else off the generator's. None on one CPU.
fn sampler_cpu(generator: usize, receiver: Option<usize>, cpus: usize) -> Option<usize> {
    let free = (1..cpus)
        .map(|k| (generator + k) % cpus)
        .find(|&c| Some(c) != receiver);
    match (free, receiver) {
        (Some(c), _) => Some(c),
        (None, Some(_)) => Some(generator),
        (None, None) => None,
    }
}

/// Frames for a run of `target` seconds, from a run of `frames` that
/// carried traffic for `seconds`; at most 4 times more or less at once.
fn scaled_frames(frames: u32, seconds: f64, target: f64) -> u32 {
    let factor = (target / seconds.max(1e-6)).clamp(0.25, 4.0);
    (frames as f64 * factor).clamp(super::live::BATCH_SIZE as f64, MAX_FRAMES as f64) as u32
}

struct RunOutcome {
    /// Frames the receiver took off its ring.
    taken: u64,
    /// From the start of the generator's run until the receiver had taken
    /// every frame.
    seconds: f64,
    /// Frames per second the receiver took in the middle of the run.
    window_rate: Option<f64>,
}

/// Where a run's window reads the receiver's counter.
struct Window<'a> {
    rx: &'a VethStats,
    rx0: u64,
    /// The generator's side: the window counts only while it still had
    /// frames to send.
    handed: &'a HandedCounter<'a>,
    frames: u32,
    /// Expected duration of the run's traffic.
    seconds: f64,
}

/// The receiver's rate while the generator was still sending: the counter
/// is read every `SAMPLE_PERIOD`, from 10% of the expected traffic time to
/// the last reading before the generator had handed over its last frame.
/// None when that window is shorter than a quarter of the expected time.
fn sample_window(w: &Window, done: &AtomicBool) -> Option<f64> {
    let read = |s: &VethStats, name| s.get(name).ok();
    let waiting = Instant::now();
    while read(w.rx, counter::RX_XDP_PACKETS)? == w.rx0 {
        if done.load(Ordering::SeqCst) || waiting.elapsed() > DRAIN_TIMEOUT {
            return None;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    std::thread::sleep(Duration::from_secs_f64(w.seconds * 0.1));
    let mut first = None;
    let mut last = None;
    loop {
        let (t, c) = (Instant::now(), read(w.rx, counter::RX_XDP_PACKETS)?);
        // Read after the receiver's counter: if the generator still had
        // frames then, it was sending all along up to `t`.
        let handed = w.handed.get()?;
        if handed >= w.frames as u64 || done.load(Ordering::SeqCst) {
            break;
        }
        first.get_or_insert((t, c));
        last = Some((t, c));
        std::thread::sleep(SAMPLE_PERIOD);
    }
    let ((t1, c1), (t2, c2)) = (first?, last?);
    let seconds = (t2 - t1).as_secs_f64();
    if seconds < w.seconds / 4.0 {
        return None;
    }
    Some((c2 - c1) as f64 / seconds)
}

/// Set by SIGINT or SIGTERM: the benchmark stops at the next step and
/// its guards remove every namespace, instead of dying with them in place.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn catch_interrupts() {
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_interrupt as *const () as libc::sighandler_t,
        );
    }
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err(BenchError::Interrupted);
    }
    Ok(())
}

/// Median, min and max (None for no samples).
fn spread(samples: &mut [f64]) -> (Option<f64>, Option<f64>, Option<f64>) {
    if samples.is_empty() {
        return (None, None, None);
    }
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    let median = if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    };
    (Some(median), Some(samples[0]), Some(samples[n - 1]))
}

pub(crate) fn unavailable_row(
    scenario: Scenario,
    plane: Plane,
    rules: Option<usize>,
    why: String,
) -> Row {
    Row {
        scenario,
        plane,
        label: plane.label(scenario),
        rules,
        unavailable: Some(why),
        pps: None,
        pps_min: None,
        pps_max: None,
        samples: Vec::new(),
        whole_run_samples: 0,
        ratio_to_iptables: None,
        ratio_to_floor: None,
        frames_per_run: 0,
        sent: 0,
        on_ring: 0,
        received: 0,
        dropped: 0,
        lost: 0,
        unaccounted: 0,
        matched: None,
        translated: None,
        backend_connections: None,
        connections: None,
        receiver_thread: None,
    }
}

/// Runs the traffic benchmark. `progress` shows a progress line on stderr.
pub fn run(options: &Options, progress: bool) -> Result<TrafficReport> {
    let started = Instant::now();
    let mut progress = Progress::new(progress);
    catch_interrupts();
    let mut bench = Bench::new(options)?;
    let mut plan: Vec<(Scenario, Plane, Option<usize>)> = Vec::new();
    // The floor is every row's yardstick: always measured.
    plan.push((Scenario::Drop, Plane::Floor, None));
    for &scenario in &options.scenarios {
        for &plane in scenario.planes() {
            match plane.family() {
                None if plane == Plane::Floor => {}
                None => plan.push((scenario, plane, None)),
                Some(f) if options.families.contains(&f) => {
                    let counts = if scenario == Scenario::Lb {
                        &options.backends
                    } else {
                        &options.rules
                    };
                    for &n in counts {
                        plan.push((scenario, plane, Some(n)));
                    }
                }
                Some(_) => {}
            }
        }
    }
    progress.phase(plan.len());
    let mut refused: Vec<(Scenario, String)> = Vec::new();
    for (scenario, plane, rules) in plan {
        let what = match rules {
            Some(n) => format!(
                "setting up {} {}, {n} {}",
                scenario.name(),
                plane.label(scenario),
                scenario.axis()
            ),
            None => format!("setting up {} {}", scenario.name(), plane.label(scenario)),
        };
        check_interrupted()?;
        progress.step(&what);
        if plane == Plane::Netbeast && scenario == Scenario::Dnat {
            // Ask netbeast itself whether it takes the nat table, rather
            // than assume: a netbeast without NAT gets a row that says so.
            let known = refused
                .iter()
                .find(|(s, _)| *s == scenario)
                .map(|(_, w)| w.clone());
            let why = match known {
                Some(why) => Some(why),
                None => {
                    let probe =
                        Netns::new("bench-nat-probe")?.with_netbeast(&bench.netbeast_binary);
                    match planes::netbeast_accepts(&probe, scenario, options.ip, options.stateful)?
                    {
                        Ok(()) => None,
                        Err(message) => {
                            let why = format!(
                                "not available in netbeast yet (netbeast restore: {message})"
                            );
                            refused.push((scenario, why.clone()));
                            Some(why)
                        }
                    }
                }
            };
            if let Some(why) = why {
                bench
                    .unavailable
                    .push(unavailable_row(scenario, plane, rules, why));
                continue;
            }
        }
        bench.build(scenario, plane, rules)?;
    }
    bench.settle()?;
    bench.measure(&mut progress)?;
    progress.finish();
    let mut rows = bench.rows()?;
    let generator_counted = bench.generator.counted()?;
    let floor_pps = rows
        .iter()
        .find(|r| r.plane == Plane::Floor)
        .and_then(|r| r.pps);
    // Each routed scenario is measured against its own redirect floor.
    let redirect_floors: Vec<(Scenario, f64)> = rows
        .iter()
        .filter(|r| r.plane == Plane::RedirectFloor)
        .filter_map(|r| Some((r.scenario, r.pps?)))
        .collect();
    let redirect_floor_pps = redirect_floors
        .iter()
        .find(|(s, _)| *s == Scenario::Forward)
        .or(redirect_floors.first())
        .map(|(_, pps)| *pps);
    let reference: Vec<(Scenario, Option<usize>, f64)> = rows
        .iter()
        .filter(|r| r.plane == Plane::Iptables)
        .filter_map(|r| Some((r.scenario, r.rules, r.pps?)))
        .collect();
    for row in &mut rows {
        if let Some(pps) = row.pps {
            let floor = if row.scenario.routed() {
                redirect_floors
                    .iter()
                    .find(|(s, _)| *s == row.scenario)
                    .map(|(_, f)| *f)
            } else {
                floor_pps
            };
            row.ratio_to_floor = floor.map(|f| pps / f);
            row.ratio_to_iptables = reference
                .iter()
                .find(|(s, n, _)| *s == row.scenario && *n == row.rules)
                .map(|(_, _, base)| pps / base);
        }
    }
    sort_rows(&mut rows);
    let targets = match options.ip {
        Ip::V4 => targets(&rows, floor_pps, &redirect_floors),
        Ip::V6 => targets6(&rows),
    };
    let report = TrafficReport {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        date: today(),
        machine: machine(),
        options: options.clone(),
        generator: bench.generator.describe(),
        floor_pps,
        redirect_floor_pps,
        rows,
        generator_counted,
        generator_asked: bench.generator.asked(),
        targets,
        seconds_total: 0.0,
    };
    drop(bench);
    Ok(TrafficReport {
        seconds_total: started.elapsed().as_secs_f64(),
        ..report
    })
}

/// Scenario order, then rule count (reference rows first), then plane.
fn sort_rows(rows: &mut [Row]) {
    rows.sort_by_key(|r| (r.scenario, r.rules.map_or(0, |n| n + 1), r.plane));
}

fn pps_of(rows: &[Row], scenario: Scenario, plane: Plane, rules: usize) -> Option<f64> {
    rows.iter()
        .find(|r| r.scenario == scenario && r.plane == plane && r.rules == Some(rules))
        .and_then(|r| r.pps)
}

/// The targets of issue 5, read from the drop scenario, issue 4's,
/// read from the dnat scenario, and issue 20's, forward and dnat against
/// their redirect floor.
fn targets(rows: &[Row], floor: Option<f64>, redirect_floors: &[(Scenario, f64)]) -> Vec<Target> {
    let redirect_floor = |scenario| {
        redirect_floors
            .iter()
            .find(|(s, _)| *s == scenario)
            .map(|(_, f)| *f)
    };
    let forward = |n| pps_of(rows, Scenario::Forward, Plane::Netbeast, n);
    let nb = |n| pps_of(rows, Scenario::Drop, Plane::Netbeast, n);
    let ipt = |n| pps_of(rows, Scenario::Drop, Plane::Iptables, n);
    let dnat = |plane| pps_of(rows, Scenario::Dnat, plane, 1);
    let log = |n| pps_of(rows, Scenario::Log, Plane::Netbeast, n);
    let lb = |plane, n| pps_of(rows, Scenario::Lb, plane, n);
    let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
    let target = Target::new;
    vec![
        target(
            "drop, 1 rule: netbeast / iptables filter INPUT",
            2.5,
            ratio(nb(1), ipt(1)),
        ),
        target("drop, 1 rule: netbeast / floor", 0.75, ratio(nb(1), floor)),
        target(
            "drop, 1,000 rules: netbeast / iptables filter INPUT",
            50.0,
            ratio(nb(1000), ipt(1000)),
        ),
        target(
            "drop: netbeast at 10,000 rules / netbeast at 1 rule",
            0.9,
            ratio(nb(10_000), nb(1)),
        ),
        target(
            "dnat, 1 rule: netbeast / iptables DNAT + FORWARD",
            3.0,
            ratio(dnat(Plane::Netbeast), dnat(Plane::Iptables)),
        ),
        target(
            "forward, 1 rule: netbeast / redirect floor",
            0.75,
            ratio(forward(1), redirect_floor(Scenario::Forward)),
        ),
        target(
            "forward, 10,000 rules: netbeast / redirect floor",
            0.75,
            ratio(forward(10_000), redirect_floor(Scenario::Forward)),
        ),
        target(
            "dnat, 1 rule: netbeast / redirect floor",
            0.6,
            ratio(dnat(Plane::Netbeast), redirect_floor(Scenario::Dnat)),
        ),
        target(
            "log, 1 rule: LOG hit by every packet, reader draining / drop",
            0.8,
            ratio(log(1), nb(1)),
        ),
        target(
            "lb, 3 backends: netbeast lb / iptables -m statistic",
            3.0,
            ratio(lb(Plane::Netbeast, 3), lb(Plane::Iptables, 3)),
        ),
        target(
            "lb: netbeast lb at 1,000 backends / at 3",
            0.9,
            ratio(lb(Plane::Netbeast, 1000), lb(Plane::Netbeast, 3)),
        ),
    ]
}

/// Issue 16's targets for `--family 6`, read from the drop scenario: "as
/// for IPv4", against ip6tables.
fn targets6(rows: &[Row]) -> Vec<Target> {
    let nb = |n| pps_of(rows, Scenario::Drop, Plane::Netbeast, n);
    let ipt = |n| pps_of(rows, Scenario::Drop, Plane::Iptables, n);
    let target = Target::new;
    vec![
        target(
            "drop, 1 rule: netbeast / ip6tables filter INPUT",
            3.0,
            nb(1).zip(ipt(1)).map(|(a, b)| a / b),
        ),
        target(
            "drop: netbeast at 10,000 rules / netbeast at 1 rule",
            0.9,
            nb(10_000).zip(nb(1)).map(|(a, b)| a / b),
        ),
    ]
}

fn machine() -> Machine {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let nft = std::process::Command::new("nft")
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    Machine {
        kernel,
        cpu_model,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        iptables: planes::iptables_version(),
        nft,
    }
}

/// Today's date (UTC), YYYY-MM-DD.
pub fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// A rate for people: Mpps down to 1 Mpps, kpps below.
pub fn rate(pps: f64) -> String {
    if pps >= 1e6 {
        format!("{:.2} Mpps", pps / 1e6)
    } else if pps >= 1e3 {
        format!("{:.1} kpps", pps / 1e3)
    } else {
        format!("{pps:.0} pps")
    }
}

fn short_rate(pps: f64) -> String {
    if pps >= 1e6 {
        format!("{:.2}M", pps / 1e6)
    } else {
        format!("{:.1}k", pps / 1e3)
    }
}

/// `--flows` with several counts: each measured row's median at every
/// count, the last count's against the first's, and the same ratio of the
/// rates against their run's floor (which cancels a shared machine's drift
/// between the runs). Issue 20's target: netbeast at 1,000,000 flows ≥ 0.7
/// × at 1 flow.
pub fn print_flows(reports: &[(u32, TrafficReport)]) {
    let Some((first, base)) = reports.first() else {
        return;
    };
    let (last, _) = reports.last().expect("not empty");
    let counts: String = reports
        .iter()
        .map(|(n, _)| format!("{:>14}", format!("{n} flows")))
        .collect();
    println!(
        "flows    {:<34} {:>8} {counts}  {:>9} {:>9}",
        "data plane",
        "rules",
        format!("{last}/{first}"),
        "vs floor"
    );
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if a > 0.0 => format!("{:.2}", b / a),
        _ => "-".into(),
    };
    for row in base.rows.iter().filter(|r| r.pps.is_some()) {
        let same: Vec<Option<&Row>> = reports
            .iter()
            .map(|(_, r)| {
                r.rows.iter().find(|x| {
                    x.scenario == row.scenario && x.plane == row.plane && x.rules == row.rules
                })
            })
            .collect();
        let at = |i: usize, f: fn(&Row) -> Option<f64>| same.get(i).copied().flatten().and_then(f);
        let n = same.len() - 1;
        println!(
            "{:<8} {:<34} {:>8} {}  {:>9} {:>9}",
            row.scenario.name(),
            row.label,
            row.rules.map_or("-".to_string(), |n| n.to_string()),
            same.iter()
                .map(|r| format!(
                    "{:>14}",
                    r.and_then(|r| r.pps).map_or("-".to_string(), rate)
                ))
                .collect::<String>(),
            ratio(at(0, |r| r.pps), at(n, |r| r.pps)),
            ratio(at(0, |r| r.ratio_to_floor), at(n, |r| r.ratio_to_floor)),
        );
    }
}

/// The table for the terminal (and docs/BENCHMARKS.md).
pub fn print(report: &TrafficReport) {
    let o = &report.options;
    println!("generator: {}", report.generator);
    let cores = match o.receiver_cpu {
        Some(r) => format!(
            "generator on CPU {}, receivers on CPU {r} (threaded NAPI{})",
            o.cpu,
            if o.scenarios.contains(&Scenario::Log) {
                "; log's on the generator's"
            } else {
                ""
            }
        ),
        None => format!("generator and receivers on CPU {}", o.cpu),
    };
    println!(
        "{}-byte UDP, {} flow{}, {cores}, {} round{} of ~{} s per data plane (median, min-max)",
        o.size,
        o.flows,
        if o.flows == 1 { "" } else { "s" },
        o.rounds,
        if o.rounds == 1 { "" } else { "s" },
        o.seconds
    );
    if o.quick {
        println!(
            "--quick: a check that every scenario runs and every frame is accounted for; \
             runs this short are no measure of speed"
        );
    }
    if let Some(floor) = report.floor_pps {
        println!("floor (bare XDP_DROP receiver): {}", rate(floor));
    }
    if let Some(floor) = report.redirect_floor_pps {
        println!(
            "forwarding floor (bare XDP_REDIRECT to the other interface): {}; \
             `vs floor` of forward and dnat is against it",
            rate(floor)
        );
    }
    let mut current = None;
    let mut problems = Vec::new();
    let mut whole_runs = false;
    for r in &report.rows {
        if current != Some(r.scenario) {
            current = Some(r.scenario);
            println!();
            println!(
                "{:<8} {:<34} {:>8} {:>11} {:>17} {:>8} {:>8} {:>9}",
                r.scenario.name(),
                "data plane",
                r.scenario.axis(),
                "rate",
                "min-max",
                "vs ipt",
                "vs floor",
                "lost"
            );
        }
        let rules = r.rules.map_or("-".to_string(), |n| n.to_string());
        if let Some(why) = &r.unavailable {
            println!("{:<8} {:<34} {:>8} {why}", "", r.label, rules);
            continue;
        }
        let ratio = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.2}x"));
        let spread = match (r.pps_min, r.pps_max) {
            (Some(a), Some(b)) => format!("{}-{}", short_rate(a), short_rate(b)),
            _ => "-".into(),
        };
        let marker = if r.whole_run_samples > 0 {
            whole_runs = true;
            "*"
        } else {
            ""
        };
        println!(
            "{:<8} {:<34} {:>8} {:>11} {:>17} {:>8} {:>8} {:>9}",
            "",
            r.label,
            rules,
            r.pps.map_or("-".into(), |p| format!("{marker}{}", rate(p))),
            spread,
            ratio(r.ratio_to_iptables),
            ratio(r.ratio_to_floor),
            r.lost
        );
        if r.unaccounted != 0 {
            problems.push(format!(
                "{} {} ({rules} rules): {} of {} frames unaccounted for (received {}, dropped {}, lost {})",
                r.scenario.name(),
                r.label,
                r.unaccounted,
                r.sent,
                r.received,
                r.dropped,
                r.lost
            ));
        }
    }
    println!();
    println!(
        "lost = frames a full veth ring refused (the receiver fell behind the generator); every other frame was dropped or received as its data plane's counters say."
    );
    if whole_runs {
        println!(
            "* some rounds ended before their measuring window: their rate is the whole run's, less the run's fixed cost."
        );
    }
    if report.generator_counted != report.generator_asked {
        problems.push(format!(
            "the generator counted {} frames, {} were asked for",
            report.generator_counted, report.generator_asked
        ));
    }
    for p in &problems {
        println!("warning: {p}");
    }
    if o.quick {
        return;
    }
    println!();
    match o.ip {
        Ip::V4 => println!("targets (issues 5, 4, 20 and 13):"),
        Ip::V6 => println!("targets (issue 16, IPv6):"),
    }
    for t in &report.targets {
        let measured = t
            .measured
            .map_or("not measured".to_string(), |m| format!("{m:.2}"));
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "-",
        };
        println!(
            "  {:<56} >= {:<5} measured {:<12} {verdict}",
            t.what, t.wanted, measured
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_reader_keeps_off_the_receivers_core() {
        // Shared core: the reader on the other one, as before.
        assert_eq!(sampler_cpu(1, None, 2), Some(0));
        assert_eq!(sampler_cpu(0, None, 2), Some(1));
        assert_eq!(sampler_cpu(0, None, 1), None);
        // Two CPUs, the receivers on the other: the generator's.
        assert_eq!(sampler_cpu(1, Some(0), 2), Some(1));
        // A third CPU for the reader.
        assert_eq!(sampler_cpu(1, Some(2), 4), Some(3));
        assert_eq!(sampler_cpu(3, Some(0), 4), Some(1));
    }

    #[test]
    fn conntrack_tables_hold_twice_the_flows() {
        let default = netbeast_common::CT_ESTABLISHED_ENTRIES;
        assert_eq!(conntrack_size(1), default);
        assert_eq!(conntrack_size(100_000), default);
        assert_eq!(conntrack_size(1_000_000), 1 << 21);
        assert_eq!(
            conntrack_size(netbeast_common::generator::MAX_FLOWS),
            1 << 21
        );
    }

    #[test]
    fn spread_takes_the_middle() {
        assert_eq!(spread(&mut []), (None, None, None));
        assert_eq!(
            spread(&mut [3.0, 1.0, 2.0]),
            (Some(2.0), Some(1.0), Some(3.0))
        );
        assert_eq!(
            spread(&mut [4.0, 1.0, 2.0, 3.0]),
            (Some(2.5), Some(1.0), Some(4.0))
        );
    }

    #[test]
    fn dates_are_civil() {
        let d = today();
        assert_eq!(d.len(), 10, "{d}");
        assert!(d.starts_with("20"), "{d}");
    }

    #[test]
    fn a_missing_tool_names_its_package() {
        let e = BenchError::MissingTool {
            tool: "nft".into(),
            package: planes::package_of("nft").into(),
        };
        let text = e.to_string();
        assert!(text.contains("apt-get install nftables"), "{text}");
        assert!(text.contains("--planes"), "{text}");
        assert_eq!(planes::package_of("iptables-restore"), "iptables");
    }

    #[test]
    fn rates_read_well() {
        assert_eq!(rate(9_600_000.0), "9.60 Mpps");
        assert_eq!(rate(83_200.0), "83.2 kpps");
        assert_eq!(rate(12.0), "12 pps");
    }
}
