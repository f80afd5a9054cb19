//! The benchmark's packet generators behind one interface (`--generator`):
//! the XDP live-frames generator ([`super::live`]), for kernels that refuse
//! live frames an XDP fan-out of packet-socket frames
//! ([`super::fanout`]) or a raw packet socket alone ([`super::packet`])
//! (`auto`, the default, takes the first of these three the kernel
//! allows), and the kernel's pktgen ([`super::pktgen`]). All send a
//! configured traffic out of one veth, a given number of frames per run,
//! from the bench core, and report what they handed to the veth; the
//! rounds, the measuring window and the accounting (bench::traffic) are
//! the same for all.
//!
//! What differs is where the veth counts the frames: live frames and the
//! fan-out's go through its `ndo_xdp_xmit`, which counts what it takes and refuses
//! (ethtool `tx_queue_0_xdp_xmit`, `..._errors`); the socket's and
//! pktgen's go through `ndo_start_xmit`, which counts only what it refuses
//! (the device's `tx_dropped`), and the sender counts what it handed over
//! itself.

use std::{
    fs::File,
    io,
    os::unix::fs::FileExt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::Serialize;

use super::{
    ethtool::{VethStats, counter},
    fanout::{FanoutError, FanoutFrames},
    live::{LiveError, LiveFrames, Traffic},
    packet::{PacketFrames, Rewrite},
    pktgen::{self, Pktgen, PktgenError},
};
use crate::netns::Netns;

/// Which generator makes the traffic (`--generator`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum GeneratorKind {
    /// XDP live frames where the kernel allows them, else `fanout`, else
    /// `packet`.
    #[default]
    Auto,
    /// XDP live frames: BPF_PROG_TEST_RUN of an XDP_TX program.
    Xdp,
    /// Packet-socket frames fanned out by XDP: each into `FANOUT` XDP
    /// frames (a devmap broadcast, each copy rewritten by its program).
    Fanout,
    /// A raw packet socket (AF_PACKET, sendmmsg, PACKET_QDISC_BYPASS).
    Packet,
    /// The kernel's pktgen (needs /proc/net/pktgen).
    Pktgen,
}

#[derive(Debug, thiserror::Error)]
pub enum GeneratorError {
    #[error(transparent)]
    Live(#[from] LiveError),
    /// Boxed: the largest of these errors, by far.
    #[error(transparent)]
    Fanout(Box<FanoutError>),
    #[error(transparent)]
    Pktgen(#[from] PktgenError),
    #[error("the packet-socket generator failed: {0}")]
    Packet(#[source] io::Error),
    #[error("cannot read the counters of the generator's veth: {0}")]
    Counters(#[source] io::Error),
    #[error(
        "--generator pktgen with --family 6: netbeast configures pktgen for IPv4 frames only; \
         use --generator auto (the default)"
    )]
    PktgenIpv6,
}

impl From<FanoutError> for GeneratorError {
    fn from(e: FanoutError) -> Self {
        GeneratorError::Fanout(Box::new(e))
    }
}

impl GeneratorKind {
    /// Fails when this generator cannot run on this machine; nothing is
    /// set up yet.
    pub fn require(self) -> Result<(), GeneratorError> {
        match self {
            GeneratorKind::Auto
            | GeneratorKind::Xdp
            | GeneratorKind::Fanout
            | GeneratorKind::Packet => Ok(()),
            GeneratorKind::Pktgen => Ok(Pktgen::require(pktgen::ROOT.as_ref())?),
        }
    }

    /// Fails when this generator cannot send `traffic` (frame size, flows).
    pub fn check(self, traffic: &Traffic) -> Result<(), GeneratorError> {
        traffic.check()?;
        if self == GeneratorKind::Pktgen && traffic.ip == super::planes::Ip::V6 {
            return Err(GeneratorError::PktgenIpv6);
        }
        if self == GeneratorKind::Pktgen && traffic.size < pktgen::MIN_FRAME_SIZE {
            return Err(PktgenError::BadSize(traffic.size).into());
        }
        Ok(())
    }
}

/// One run of a generator.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    /// Frames handed to the veth, whether it took them or refused them.
    pub frames: u64,
    /// From the first frame to the last, receiver softirqs included.
    pub elapsed: Duration,
}

/// The generator's end of one veth pair, with its counters.
pub struct Port {
    pub iface: String,
    pub ifindex: u32,
    stats: VethStats,
    dev: NetDev,
}

impl Port {
    /// The veth `iface` (index `ifindex`) of namespace `ns`.
    pub fn open(ns: &Netns, iface: &str, ifindex: u32) -> io::Result<Port> {
        Ok(Port {
            iface: iface.into(),
            ifindex,
            stats: VethStats::open(ns, iface)?,
            dev: NetDev::open(ns)?,
        })
    }
}

/// What a veth has done so far with the frames handed to it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Handover {
    /// Put on the peer's ring.
    pub accepted: u64,
    /// Refused: the peer's ring was full.
    pub refused: u64,
}

enum Engine {
    Xdp(LiveFrames),
    Fanout(Box<FanoutFrames>),
    Packet(PacketFrames),
    Pktgen(Pktgen),
}

/// A loaded generator.
pub struct Generator {
    engine: Engine,
    /// Frames asked for, all runs.
    asked: u64,
}

/// Reads, from another thread while a run goes on, how many frames the
/// generator has handed to the veth in this run.
pub enum HandedCounter<'a> {
    Veth { stats: &'a VethStats, base: u64 },
    Packet { handed: Arc<AtomicU64>, base: u64 },
    Pktgen(pktgen::Counters),
}

impl HandedCounter<'_> {
    pub fn get(&self) -> Option<u64> {
        match self {
            HandedCounter::Veth { stats, base } => Some(xdp_handed(stats).ok()? - base),
            HandedCounter::Packet { handed, base } => Some(handed.load(Ordering::Relaxed) - base),
            HandedCounter::Pktgen(counters) => counters.handed(),
        }
    }
}

fn xdp_handed(stats: &VethStats) -> io::Result<u64> {
    Ok(stats.get(counter::XDP_XMIT)? + stats.get(counter::XDP_XMIT_ERRORS)?)
}

impl Generator {
    /// Loads the generator and checks that it can send. Call it on a
    /// thread that is in the generator's namespace and pinned to `cpu`.
    pub fn open(kind: GeneratorKind, cpu: usize) -> Result<Generator, GeneratorError> {
        let live = || -> Result<Generator, LiveError> {
            let mut live = LiveFrames::load()?;
            let probe = live.probe()?;
            Ok(Generator {
                engine: Engine::Xdp(live),
                asked: probe.frames,
            })
        };
        let fanout = || -> Result<Generator, FanoutError> {
            Ok(Generator {
                engine: Engine::Fanout(Box::new(FanoutFrames::open()?)),
                asked: 0,
            })
        };
        let packet = || Generator {
            engine: Engine::Packet(PacketFrames::default()),
            asked: 0,
        };
        match kind {
            GeneratorKind::Xdp => Ok(live()?),
            GeneratorKind::Fanout => Ok(fanout()?),
            GeneratorKind::Packet => Ok(packet()),
            GeneratorKind::Auto => match live() {
                Err(LiveError::NoLiveFrames(_)) => match fanout() {
                    Err(FanoutError::Refused { .. }) => Ok(packet()),
                    other => Ok(other?),
                },
                other => Ok(other?),
            },
            GeneratorKind::Pktgen => Ok(Generator {
                engine: Engine::Pktgen(Pktgen::open(pktgen::NETNS_ROOT, cpu)?),
                asked: 0,
            }),
        }
    }

    pub fn kind(&self) -> GeneratorKind {
        match self.engine {
            Engine::Xdp(_) => GeneratorKind::Xdp,
            Engine::Fanout(_) => GeneratorKind::Fanout,
            Engine::Packet(_) => GeneratorKind::Packet,
            Engine::Pktgen(_) => GeneratorKind::Pktgen,
        }
    }

    /// For the report.
    pub fn describe(&self) -> &'static str {
        match self.engine {
            Engine::Xdp(_) => {
                "XDP live frames (BPF_PROG_TEST_RUN, BPF_F_TEST_XDP_LIVE_FRAMES), one pinned core"
            }
            Engine::Fanout(_) => super::fanout::DESCRIPTION,
            Engine::Packet(_) => {
                "AF_PACKET sendmmsg with PACKET_QDISC_BYPASS (ndo_start_xmit into the veth; \
                 this kernel refuses XDP live frames), one pinned core"
            }
            Engine::Pktgen(_) => {
                "kernel pktgen (the bench core's kpktgend thread, ndo_start_xmit into the veth)"
            }
        }
    }

    /// Sets up the next runs: `traffic` out of `port`. Call it on a thread
    /// in the generator's namespace (pktgen's files are that namespace's).
    pub fn configure(&mut self, traffic: &Traffic, port: &Port) -> Result<(), GeneratorError> {
        match &mut self.engine {
            Engine::Xdp(live) => live.configure(traffic, port.ifindex)?,
            Engine::Fanout(fanout) => fanout.configure(traffic, port.ifindex)?,
            Engine::Packet(packet) => {
                traffic.check()?;
                packet
                    .configure(
                        traffic.template(),
                        Rewrite::Udp(traffic.config()),
                        port.ifindex,
                    )
                    .map_err(GeneratorError::Packet)?
            }
            Engine::Pktgen(pktgen) => pktgen.configure(traffic, &port.iface)?,
        }
        Ok(())
    }

    /// Sends `frames` frames and returns when they are all handed over. Call
    /// it on a thread in the generator's namespace, pinned to the bench CPU.
    pub fn send(&mut self, frames: u32) -> Result<Sent, GeneratorError> {
        let sent = match &mut self.engine {
            Engine::Xdp(live) => live.send(frames)?,
            Engine::Fanout(fanout) => fanout.send(frames)?,
            Engine::Packet(packet) => packet.send(frames).map_err(GeneratorError::Packet)?,
            Engine::Pktgen(pktgen) => pktgen.send(frames)?,
        };
        // The fan-out sends whole fan-outs: more than asked for, maybe.
        self.asked += sent.frames;
        Ok(sent)
    }

    /// The frames handed over in the next run on `port`, for another
    /// thread.
    pub fn handed_counter<'a>(&self, port: &'a Port) -> Result<HandedCounter<'a>, GeneratorError> {
        Ok(match &self.engine {
            Engine::Xdp(_) | Engine::Fanout(_) => HandedCounter::Veth {
                stats: &port.stats,
                base: xdp_handed(&port.stats).map_err(GeneratorError::Counters)?,
            },
            Engine::Packet(packet) => {
                let handed = packet.handed();
                let base = handed.load(Ordering::Relaxed);
                HandedCounter::Packet { handed, base }
            }
            Engine::Pktgen(pktgen) => HandedCounter::Pktgen(pktgen.counters()?),
        })
    }

    /// What `port`'s veth has done with the frames of this generator,
    /// `handed` of which it was given in all.
    pub fn handover(&self, port: &Port, handed: u64) -> io::Result<Handover> {
        match self.engine {
            Engine::Xdp(_) | Engine::Fanout(_) => Ok(Handover {
                accepted: port.stats.get(counter::XDP_XMIT)?,
                refused: port.stats.get(counter::XDP_XMIT_ERRORS)?,
            }),
            Engine::Packet(_) | Engine::Pktgen(_) => {
                let refused = port.dev.tx_dropped(&port.iface)?;
                Ok(Handover {
                    accepted: handed.saturating_sub(refused),
                    refused,
                })
            }
        }
    }

    /// Frames the generator itself counted, all runs (the XDP program's
    /// counter; pktgen's `pkts-sofar`): to set against [`Generator::asked`].
    pub fn counted(&self) -> Result<u64, GeneratorError> {
        Ok(match &self.engine {
            Engine::Xdp(live) => live.generated()?,
            Engine::Fanout(fanout) => fanout.generated()?,
            Engine::Packet(packet) => packet.made(),
            Engine::Pktgen(pktgen) => pktgen.counted(),
        })
    }

    pub fn asked(&self) -> u64 {
        self.asked
    }
}

/// `/proc/net/dev` of one namespace, opened there and read from any thread:
/// the only place a veth's `tx_dropped` shows (ethtool has it not).
struct NetDev {
    file: File,
}

impl NetDev {
    fn open(ns: &Netns) -> io::Result<NetDev> {
        let file = ns
            .in_netns(|| File::open("/proc/thread-self/net/dev"))
            .map_err(io::Error::other)??;
        Ok(NetDev { file })
    }

    fn tx_dropped(&self, iface: &str) -> io::Result<u64> {
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.file.read_at(&mut chunk, bytes.len() as u64)?;
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&chunk[..n]);
        }
        tx_dropped_of(&String::from_utf8_lossy(&bytes), iface).ok_or_else(|| {
            io::Error::other(format!("/proc/net/dev has no transmit drops for {iface}"))
        })
    }
}

/// The transmit `drop` column of `iface` in a `/proc/net/dev` text:
/// `iface: ` then 8 receive counters, then bytes, packets, errs, drop.
fn tx_dropped_of(text: &str, iface: &str) -> Option<u64> {
    let line = text.lines().find_map(|l| {
        let (name, rest) = l.split_once(':')?;
        (name.trim() == iface).then_some(rest)
    })?;
    line.split_whitespace().nth(11)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmit_drops_are_read_from_proc_net_dev() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
    g0: 1000      10    1    2    3     4          5         6     6400     100    7   42    0     0       0          0
   g10: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16
";
        assert_eq!(tx_dropped_of(text, "g0"), Some(42));
        assert_eq!(tx_dropped_of(text, "g10"), Some(12));
        assert_eq!(tx_dropped_of(text, "lo"), Some(0));
        assert_eq!(tx_dropped_of(text, "g1"), None);
    }

    fn traffic(size: usize) -> Traffic {
        Traffic::example(1, size)
    }

    /// pktgen never sends less than its own header: a size the live-frames
    /// generator takes is refused for pktgen, before anything is set up.
    #[test]
    fn each_generator_checks_its_own_sizes() {
        let small = traffic(super::super::live::MIN_FRAME_SIZE);
        assert!(GeneratorKind::Xdp.check(&small).is_ok());
        assert!(matches!(
            GeneratorKind::Pktgen.check(&small),
            Err(GeneratorError::Pktgen(PktgenError::BadSize(42)))
        ));
        assert!(GeneratorKind::Pktgen.check(&traffic(64)).is_ok());
        assert!(matches!(
            GeneratorKind::Pktgen.check(&traffic(2000)),
            Err(GeneratorError::Live(LiveError::BadSize(2000)))
        ));
    }
}
