//! `bench --scenario synflood`: spoofed SYNs per second answered with a
//! SYN-ACK (a cookie) by netbeast's shield (`attach --syn-flood-guard`),
//! by iptables' SYNPROXY recipe, and by the kernel's own syncookies on a
//! listening socket (`tcp_syncookies=2`), on one core; for a server on the
//! receiver (INPUT) and for one behind it, the receiver a router
//! (FORWARD: netbeast's and iptables' SYNPROXY recipe in FORWARD, or the
//! server's own syncookies through the router).
//!
//! The live-frames generator (`netbeast_syn_generator`) sends TCP SYNs
//! from up to 64,000 sources out of one end of a veth pair; the receiver
//! namespace answers; the answers come back to the generator's end, where
//! a bare XDP_DROP program counts them (`rx_queue_0_xdp_drops`). The rate
//! is answers per second of generator run time (the receiver's softirq
//! runs on the generator's core, right after each batch, DESIGN §8).

use std::{
    net::{Ipv4Addr, TcpListener},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData},
    programs::{ProgramError, TestRun, TestRunAttrs, TestRunOptions, Xdp},
};
use netbeast_common::generator;
use serde::Serialize;

use super::{
    ethtool::{VethStats, counter},
    live::{BATCH_SIZE, BareXdp, live_frames_refused, pin_to_cpu},
    packet::{PacketFrames, Rewrite},
};
use crate::{netns::Netns, packet::FrameBuilder};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netbeast"));
const SYN_GENERATOR: &str = "netbeast_syn_generator";
const GEN_IFACE: &str = "nbsyn-g";
const RX_IFACE: &str = "nbsyn-r";
const GEN_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// In another /24 than the sources: the stack answers them through one
/// gateway (below), not one neighbour entry each.
const RX_ADDR: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 254);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 253);
/// FORWARD: the router's interface towards the server, the server's, and
/// their addresses (a /24 of their own).
const FWD_IFACE: &str = "nbsyn-f";
const SERVER_IFACE: &str = "nbsyn-s";
const FWD_ADDR: Ipv4Addr = Ipv4Addr::new(198, 20, 0, 254);
const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 20, 0, 1);
const PREFIX_LEN: u8 = 24;
const DPORT: u16 = 80;
/// Spoofed sources: `generator::ADDRESSES` addresses × 256 ports.
const FLOWS: u32 = generator::ADDRESSES * 256;
/// SYNs per generator run (one `BPF_PROG_TEST_RUN`).
const FRAMES_PER_RUN: u32 = 1 << 20;

/// What answers the SYNs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Defence {
    /// `netbeast attach --syn-flood-guard 80`.
    Netbeast,
    /// iptables' SYNPROXY recipe (raw notrack, SYNPROXY, INVALID DROP).
    IptablesSynproxy,
    /// A listener with `net.ipv4.tcp_syncookies=2`, no firewall.
    KernelSyncookies,
    /// The floor: a bare XDP program that sends every SYN back as it came
    /// (its MACs swapped, `XDP_REDIRECT` to its own interface), building
    /// no answer. No defence can answer faster on this path; measured in
    /// INPUT only, as the path is the same for both chains.
    Reflector,
}

impl Defence {
    pub const ALL: [Defence; 4] = [
        Defence::Reflector,
        Defence::Netbeast,
        Defence::IptablesSynproxy,
        Defence::KernelSyncookies,
    ];

    /// Its name in the report: netbeast protects a local port with
    /// `--syn-flood-guard` and a server behind it with iptables' recipe.
    pub fn name(self, chain: Chain) -> &'static str {
        match self {
            Defence::Netbeast if chain == Chain::Forward => "netbeast SYNPROXY recipe (XDP)",
            Defence::Netbeast => "netbeast --syn-flood-guard (XDP)",
            Defence::IptablesSynproxy => "iptables SYNPROXY",
            Defence::KernelSyncookies => "kernel syncookies (listener)",
            Defence::Reflector => "floor (bare XDP reflector)",
        }
    }
}

/// Where the protected server is: on the receiver (INPUT), or behind it,
/// the receiver forwarding (FORWARD).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Chain {
    Input,
    Forward,
}

impl Chain {
    pub const ALL: [Chain; 2] = [Chain::Input, Chain::Forward];

    pub fn name(self) -> &'static str {
        match self {
            Chain::Input => "INPUT",
            Chain::Forward => "FORWARD",
        }
    }

    /// Where the SYNs go: the receiver, or the server behind it.
    fn destination(self) -> Ipv4Addr {
        match self {
            Chain::Input => RX_ADDR,
            Chain::Forward => SERVER_ADDR,
        }
    }
}

/// iptables' SYNPROXY recipe (iptables-extensions(8)) in `chain`, as
/// iptables and netbeast both take it.
fn synproxy_recipe(chain: Chain) -> [String; 3] {
    let c = chain.name();
    [
        "-t raw -A PREROUTING -p tcp --dport 80 --syn -j CT --notrack".into(),
        format!(
            "-A {c} -p tcp --dport 80 -m conntrack --ctstate INVALID,UNTRACKED -j SYNPROXY --sack-perm --timestamp --wscale 7 --mss 1460"
        ),
        format!("-A {c} -m conntrack --ctstate INVALID -j DROP"),
    ]
}

/// One defence's measurement in one chain: every round's rates.
#[derive(Clone, Debug, Serialize)]
pub struct SynRow {
    pub defence: Defence,
    pub chain: Chain,
    /// SYN-ACKs per second, per round.
    pub answered_pps: Vec<f64>,
    /// SYNs sent per second, per round.
    pub sent_pps: Vec<f64>,
    /// Answers / SYNs sent, all rounds.
    pub answered_share: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SynReport {
    pub cpu: usize,
    pub flows: u32,
    pub rows: Vec<SynRow>,
}

/// The template SYN (flow 0) and the generator's configuration for it.
pub(crate) fn template(dst: Ipv4Addr) -> (Vec<u8>, [u32; generator::SYN_CONFIG_ENTRIES as usize]) {
    // The options of a Linux client: MSS 1460, SACK permitted, timestamps,
    // NOP, window scale 7.
    let options = [
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
    ];
    let frame = FrameBuilder::tcp(GEN_ADDR, 1024, dst, DPORT)
        .seq(0x1234_5678)
        .tcp_options(&options)
        .src_mac([2, 0, 0, 0, 0, 1])
        .dst_mac([2, 0, 0, 0, 0, 2])
        .build();
    let mut c = [0u32; generator::SYN_CONFIG_ENTRIES as usize];
    c[generator::FLOWS as usize] = FLOWS;
    c[generator::FIRST_SOURCE as usize] = u32::from(GEN_ADDR);
    c[generator::FIRST_PORT as usize] = 1024;
    // IPv4 header without its checksum (bytes 10-11) and source (12-15).
    let ip = &frame[14..34];
    let mut sum: u32 = 0;
    for (i, w) in ip.chunks(2).enumerate() {
        if !(5..8).contains(&i) {
            sum += u16::from_be_bytes([w[0], w[1]]) as u32;
        }
    }
    c[generator::HEADER_SUM as usize] = sum;
    // TCP: pseudo-header without the source, header without the checksum
    // (16-17) and source port (0-1).
    let tcp = &frame[34..];
    let dst = u32::from(dst);
    let mut sum: u32 = (dst >> 16) + (dst & 0xffff) + 6 + tcp.len() as u32;
    for (i, w) in tcp.chunks(2).enumerate() {
        if i != 0 && i != 8 {
            sum += u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]) as u32;
        }
    }
    c[generator::TCP_SUM as usize] = sum;
    (frame, c)
}

/// The generator program with its maps; the packet socket that stands in
/// for it where the kernel refuses live frames.
struct SynGenerator {
    ebpf: Ebpf,
    frame: Vec<u8>,
    config: [u32; generator::SYN_CONFIG_ENTRIES as usize],
    packet: Option<PacketFrames>,
}

impl SynGenerator {
    fn load(gen_mac: [u8; 6], rx_mac: [u8; 6], dst: Ipv4Addr) -> Result<SynGenerator> {
        let mut ebpf = EbpfLoader::new()
            .load(OBJECT)
            .context("loading the eBPF object")?;
        let (mut frame, config) = template(dst);
        frame[0..6].copy_from_slice(&rx_mac);
        frame[6..12].copy_from_slice(&gen_mac);
        // The template's checksums stay right: MACs are not in them.
        {
            let map = ebpf
                .map_mut("SYN_GENERATOR_CONFIG")
                .context("SYN_GENERATOR_CONFIG missing: rebuild netbeast")?;
            let mut a: Array<&mut MapData, u32> = Array::try_from(map)?;
            for (i, v) in config.iter().enumerate() {
                a.set(i as u32, v, 0)?;
            }
        }
        {
            let map = ebpf
                .map_mut("SYN_GENERATOR_TEMPLATE")
                .context("SYN_GENERATOR_TEMPLATE missing: rebuild netbeast")?;
            let mut a: Array<&mut MapData, [u64; generator::SYN_TEMPLATE_WORDS]> =
                Array::try_from(map)?;
            let mut bytes = [0u8; 8 * generator::SYN_TEMPLATE_WORDS];
            bytes[..generator::SYN_BYTES].copy_from_slice(&frame[..generator::SYN_BYTES]);
            let mut words = [0u64; generator::SYN_TEMPLATE_WORDS];
            for (w, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
                *w = u64::from_ne_bytes(chunk.try_into().expect("8 bytes"));
            }
            a.set(0, words, 0)?;
        }
        let xdp: &mut Xdp = ebpf
            .program_mut(SYN_GENERATOR)
            .context("the SYN generator is missing: rebuild netbeast")?
            .try_into()?;
        xdp.load().context("loading the SYN generator")?;
        Ok(SynGenerator {
            ebpf,
            frame,
            config,
            packet: None,
        })
    }

    /// Sends `frames` SYNs out of `ifindex` (the calling thread must be in
    /// its namespace); returns the run's wall time. Live frames, or the
    /// same SYNs from a packet socket (`bench::packet`) once the kernel
    /// has refused live frames.
    fn send(&mut self, ifindex: u32, frames: u32) -> Result<Duration> {
        if let Some(packet) = &mut self.packet {
            return Ok(packet
                .send(frames)
                .context("the packet generator failed")?
                .elapsed);
        }
        let xdp: &mut Xdp = self
            .ebpf
            .program_mut(SYN_GENERATOR)
            .expect("loaded")
            .try_into()?;
        let md: [u32; 6] = [0, self.frame.len() as u32, 0, ifindex, 0, 0];
        let ctx: Vec<u8> = md.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let started = Instant::now();
        let run = xdp.test_run(TestRunOptions {
            data_in: Some(&self.frame),
            ctx_in: Some(&ctx),
            repeat: frames,
            attrs: TestRunAttrs::new().xdp_live_frames(BATCH_SIZE),
            ..TestRunOptions::new()
        });
        match run {
            Ok(_) => Ok(started.elapsed()),
            Err(ProgramError::SyscallError(e)) if live_frames_refused(&e.io_error) => {
                let mut packet = PacketFrames::default();
                packet
                    .configure(self.frame.clone(), Rewrite::Syn(self.config), ifindex)
                    .context("opening the packet generator")?;
                self.packet = Some(packet);
                self.send(ifindex, frames)
            }
            Err(e) => Err(e).context("the live-frames generator failed"),
        }
    }
}

fn netbeast_in(ns: &Netns, binary: &PathBuf, args: &[&str]) -> Result<()> {
    let out = ns.command(binary).args(args).output()?;
    if !out.status.success() {
        bail!(
            "netbeast {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Measures every defence in `defences` in every chain of `chains`,
/// `rounds` rounds each (interleaved), on `cpu`.
pub fn run(defences: &[Defence], chains: &[Chain], rounds: usize, cpu: usize) -> Result<SynReport> {
    crate::state::bpffs_root(true)?;
    let binary = std::env::current_exe().context("finding the netbeast binary")?;
    let cases: Vec<(Chain, Defence)> = chains
        .iter()
        .flat_map(|&chain| defences.iter().map(move |&defence| (chain, defence)))
        .filter(|&(chain, defence)| defence != Defence::Reflector || chain == Chain::Input)
        .collect();
    let mut rows: Vec<SynRow> = cases
        .iter()
        .map(|&(chain, defence)| SynRow {
            defence,
            chain,
            answered_pps: Vec::new(),
            sent_pps: Vec::new(),
            answered_share: 0.0,
        })
        .collect();
    let mut totals = vec![(0u64, 0u64); cases.len()];
    for _ in 0..rounds {
        for (i, &(chain, defence)) in cases.iter().enumerate() {
            let (answered, sent, time) = measure(defence, chain, &binary, cpu)?;
            rows[i]
                .answered_pps
                .push(answered as f64 / time.as_secs_f64());
            rows[i].sent_pps.push(sent as f64 / time.as_secs_f64());
            totals[i].0 += answered;
            totals[i].1 += sent;
        }
    }
    for (row, (answered, sent)) in rows.iter_mut().zip(totals) {
        row.answered_share = answered as f64 / sent.max(1) as f64;
    }
    Ok(SynReport {
        cpu,
        flows: FLOWS,
        rows,
    })
}

/// One round of one defence on a topology of its own: (SYN-ACKs, SYNs,
/// generator time).
fn measure(
    defence: Defence,
    chain: Chain,
    binary: &PathBuf,
    cpu: usize,
) -> Result<(u64, u64, Duration)> {
    let gen_ns = Netns::new("bench-syngen")?;
    let mut rx_ns = Netns::new("bench-synrx")?;
    if defence == Defence::Netbeast {
        rx_ns = rx_ns.with_netbeast(binary);
    }
    // FORWARD: the server, behind the receiver; dropped after it.
    let server_ns = match chain {
        Chain::Input => None,
        Chain::Forward => Some(Netns::new("bench-synsrv")?),
    };
    gen_ns.ip(&[
        "link",
        "add",
        GEN_IFACE,
        "type",
        "veth",
        "peer",
        "name",
        RX_IFACE,
        "netns",
        rx_ns.name(),
    ])?;
    gen_ns.ip(&["link", "set", GEN_IFACE, "up"])?;
    rx_ns.ip(&[
        "addr",
        "add",
        &format!("{RX_ADDR}/{PREFIX_LEN}"),
        "dev",
        RX_IFACE,
    ])?;
    rx_ns.ip(&["link", "set", RX_IFACE, "up"])?;
    rx_ns.ip(&["link", "set", "lo", "up"])?;
    // Frames for the stack enter through GRO (DESIGN §8).
    rx_ns.set_gro(RX_IFACE, true)?;
    // The answers need a next hop: every spoofed source is the generator.
    let (gen_mac, ifindex) = super::traffic::mac_of(&gen_ns, GEN_IFACE)?;
    let (rx_mac, _) = super::traffic::mac_of(&rx_ns, RX_IFACE)?;
    if let Some(server) = &server_ns {
        rx_ns.ip(&[
            "link",
            "add",
            FWD_IFACE,
            "type",
            "veth",
            "peer",
            "name",
            SERVER_IFACE,
            "netns",
            server.name(),
        ])?;
        rx_ns.ip(&[
            "addr",
            "add",
            &format!("{FWD_ADDR}/{PREFIX_LEN}"),
            "dev",
            FWD_IFACE,
        ])?;
        rx_ns.ip(&["link", "set", FWD_IFACE, "up"])?;
        rx_ns.sysctl("net.ipv4.ip_forward", "1")?;
        server.ip(&[
            "addr",
            "add",
            &format!("{SERVER_ADDR}/{PREFIX_LEN}"),
            "dev",
            SERVER_IFACE,
        ])?;
        server.ip(&["link", "set", SERVER_IFACE, "up"])?;
        server.ip(&["link", "set", "lo", "up"])?;
        server.ip(&["route", "add", "default", "via", &FWD_ADDR.to_string()])?;
    }
    // Attached while the round runs.
    let mut reflector = BareXdp::load()?;
    let listener_ns = server_ns.as_ref().unwrap_or(&rx_ns);
    let _listener = listener_ns
        .in_netns(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, DPORT)))?
        .context("listening on port 80 in the server")?;
    match (defence, chain) {
        (Defence::Netbeast, Chain::Forward) => {
            // Both of the router's interfaces, and iptables' recipe in
            // FORWARD as written.
            netbeast_in(
                &rx_ns,
                binary,
                &["attach", RX_IFACE, FWD_IFACE, "--fast-path", "on"],
            )?;
            for line in synproxy_recipe(chain) {
                rx_ns
                    .netbeast_iptables_ok(&line)
                    .with_context(|| format!("netbeast iptables {line}"))?;
            }
        }
        (Defence::Netbeast, Chain::Input) => {
            netbeast_in(
                &rx_ns,
                binary,
                // The generator's end runs XDP: answers leave with XDP_TX.
                &[
                    "attach",
                    RX_IFACE,
                    "--syn-flood-guard",
                    "80",
                    "--fast-path",
                    "on",
                ],
            )?;
        }
        (Defence::IptablesSynproxy, _) => {
            rx_ns.sysctl("net.ipv4.tcp_syncookies", "1")?;
            rx_ns.sysctl("net.netfilter.nf_conntrack_tcp_loose", "0")?;
            for line in synproxy_recipe(chain) {
                let args: Vec<&str> = line.split_whitespace().collect();
                rx_ns.run_ok("iptables", &args)?;
            }
        }
        (Defence::KernelSyncookies, _) => {
            listener_ns.sysctl("net.ipv4.tcp_syncookies", "2")?;
        }
        (Defence::Reflector, _) => {
            let (_, rx_ifindex) = super::traffic::mac_of(&rx_ns, RX_IFACE)?;
            rx_ns
                .in_netns(|| reflector.attach_redirect(RX_IFACE, rx_ifindex, gen_mac, rx_mac))??;
        }
    }
    {
        // The stack answers through its neighbour table: one permanent
        // entry per spoofed source would be 64,000; a route through a
        // gateway with a permanent neighbour entry is one.
        let gw = GATEWAY;
        rx_ns.ip(&[
            "neigh",
            "add",
            &gw.to_string(),
            "lladdr",
            &mac_text(gen_mac),
            "dev",
            RX_IFACE,
            "nud",
            "permanent",
        ])?;
        rx_ns.ip(&["route", "add", "198.18.0.0/16", "via", &gw.to_string()])?;
    }
    // The generator's end drops (and counts) what comes back.
    let mut bare = BareXdp::load()?;
    gen_ns.in_netns(|| bare.attach_drop(GEN_IFACE))??;
    let gen_stats = VethStats::open(&gen_ns, GEN_IFACE)?;
    let before = gen_stats.get(counter::RX_XDP_DROPS)?;
    let mut generator = SynGenerator::load(gen_mac, rx_mac, chain.destination())?;
    let time = gen_ns.in_netns(|| -> Result<Duration> {
        pin_to_cpu(cpu)?;
        generator.send(ifindex, FRAMES_PER_RUN)
    })??;
    // Answers handed to the generator's ring after the run ended.
    std::thread::sleep(Duration::from_millis(200));
    let answered = gen_stats.get(counter::RX_XDP_DROPS)? - before;
    Ok((answered, FRAMES_PER_RUN as u64, time))
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The median of `v`.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

pub fn print(report: &SynReport) {
    println!(
        "synflood: spoofed SYNs ({} sources) answered with a SYN cookie, one core (CPU {})",
        report.flows, report.cpu
    );
    println!(
        "{:<34} {:<8} {:>14} {:>14} {:>9} {:>12} {:>9}  rounds (answered/s)",
        "defence", "chain", "answered/s", "offered/s", "answered", "vs SYNPROXY", "vs floor"
    );
    let floor = report
        .rows
        .iter()
        .find(|r| r.defence == Defence::Reflector)
        .map(|r| median(&r.answered_pps))
        .filter(|f| *f > 0.0);
    for row in &report.rows {
        // Against iptables' SYNPROXY in the same chain.
        let iptables = report
            .rows
            .iter()
            .find(|r| r.defence == Defence::IptablesSynproxy && r.chain == row.chain)
            .map(|r| median(&r.answered_pps));
        let answered = median(&row.answered_pps);
        let ratio = iptables
            .filter(|i| *i > 0.0)
            .map_or("-".to_string(), |i| format!("{:.1}x", answered / i));
        let rounds: Vec<String> = row
            .answered_pps
            .iter()
            .map(|r| super::traffic::rate(*r))
            .collect();
        let of_floor = floor.map_or("-".to_string(), |f| format!("{:.2}x", answered / f));
        println!(
            "{:<34} {:<8} {:>14} {:>14} {:>8.1}% {:>12} {:>9}  {}",
            row.defence.name(row.chain),
            row.chain.name(),
            super::traffic::rate(answered),
            super::traffic::rate(median(&row.sent_pps)),
            100.0 * row.answered_share,
            ratio,
            of_floor,
            rounds.join(", ")
        );
    }
}
