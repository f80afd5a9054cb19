//! The fan-out generator (`--generator fanout`): native XDP frames for the
//! receivers on kernels that refuse XDP live frames.
//!
//! In the generator's namespace it makes a veth pair of its own
//! ([`INJECT_IFACE`] → [`FANOUT_IFACE`]) and attaches `netbeast_fanout` to
//! the second end: every frame arriving there is redirected with
//! `BPF_F_BROADCAST` to all `generator::FANOUT` entries of the devmap
//! `GENERATOR_FANOUT`, which all name the generator's port. The kernel
//! clones the frame for each entry and runs the entry's program,
//! `netbeast_fanout_generator`, on each copy: the live-frames generator's
//! own rewrite (template headers, the flow's source and checksum, the
//! `GENERATED` counter), after which the copy leaves the port through
//! `ndo_xdp_xmit`, as a live frame would. Frames are injected with the
//! packet socket of [`super::packet`]: one system call and one socket
//! buffer per `FANOUT` frames the receiver gets, instead of per frame.
//!
//! Everything runs on the sending core: each injected frame's softirq (the
//! fan-out, then the receiver's NAPI poll) runs right after it is sent, so
//! the receiver's ring (256 frames) takes all `FANOUT` copies at once.

use std::{
    fs::File,
    io,
    os::fd::AsRawFd,
    process::Command,
    sync::{Arc, atomic::AtomicU64},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{DevMap, MapData, xdp::XdpMapError},
    programs::{ProgramError, Xdp, XdpMode},
};
use netbeast_common::generator::{self, FANOUT};

use super::{
    generator::Sent,
    live::{self, LiveError, OBJECT, Traffic},
    packet::{PacketFrames, Rewrite},
};

/// The generator's own veth pair: frames are injected into the first end
/// and fanned out where they arrive, at the second.
pub const INJECT_IFACE: &str = "nbg-y";
pub const FANOUT_IFACE: &str = "nbg-x";

/// The generator in the report.
pub const DESCRIPTION: &str = "AF_PACKET frames fanned out by XDP: each into 64 XDP frames by a \
     devmap broadcast, each rewritten by the devmap's program (ndo_xdp_xmit into the veth; this \
     kernel refuses XDP live frames), one pinned core";

const FANOUT_PROGRAM: &str = "netbeast_fanout";
const COPY_PROGRAM: &str = "netbeast_fanout_generator";
const DEVMAP: &str = "GENERATOR_FANOUT";

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error(transparent)]
    Live(#[from] LiveError),
    #[error(
        "this kernel refuses the fan-out generator ({what}: {source}); --generator packet or \
         auto sends from a packet socket instead"
    )]
    Refused {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("the fan-out generator's veth pair {INJECT_IFACE}/{FANOUT_IFACE}: {0}")]
    Veth(String),
    #[error("the fan-out generator's packet socket failed: {0}")]
    Inject(#[source] io::Error),
    #[error("cannot duplicate the fd of {COPY_PROGRAM}: {0}")]
    ProgramFd(#[source] io::Error),
    #[error("map {DEVMAP}: {0}")]
    DevMap(#[source] XdpMapError),
}

/// Whether `e` means the kernel does not have or allows what was asked.
fn refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | libc::EPERM)
    )
}

/// The system call error inside an aya program error, if it is one.
fn program_io_error(e: &ProgramError) -> Option<&io::Error> {
    match e {
        ProgramError::SyscallError(s) => Some(&s.io_error),
        ProgramError::LoadError { io_error, .. } => Some(io_error),
        _ => None,
    }
}

fn run_ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn ifindex(name: &str) -> Result<u32, FanoutError> {
    let c = std::ffi::CString::new(name).expect("no NUL in an interface name");
    // SAFETY: a NUL-terminated name.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(FanoutError::Veth(format!(
            "no interface {name}: {}",
            io::Error::last_os_error()
        ))),
        i => Ok(i),
    }
}

/// The fan-out generator's veth pair, deleted (in the namespace it was
/// made in, whichever thread drops it) with this value.
struct VethPair {
    netns: File,
}

impl VethPair {
    /// Makes the pair, both ends up, in the calling thread's namespace.
    fn make() -> Result<VethPair, FanoutError> {
        let netns = File::open("/proc/thread-self/ns/net")
            .map_err(|e| FanoutError::Veth(format!("cannot open the namespace: {e}")))?;
        run_ip(&[
            "link",
            "add",
            INJECT_IFACE,
            "type",
            "veth",
            "peer",
            "name",
            FANOUT_IFACE,
        ])
        .map_err(FanoutError::Veth)?;
        let pair = VethPair { netns };
        for iface in [INJECT_IFACE, FANOUT_IFACE] {
            run_ip(&["link", "set", iface, "up"]).map_err(FanoutError::Veth)?;
        }
        Ok(pair)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let fd = self.netns.as_raw_fd();
        let _ = std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    // SAFETY: setns on a namespace fd that outlives this
                    // thread; it changes only this thread.
                    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } == 0 {
                        let _ = run_ip(&["link", "del", INJECT_IFACE]);
                    }
                })
                .join()
        });
    }
}

/// The loaded fan-out generator, its veth pair and its injecting socket.
pub struct FanoutFrames {
    /// Dropped before the pair: the XDP attachment goes first.
    ebpf: Ebpf,
    injector: PacketFrames,
    inject_ifindex: u32,
    /// The ifindex every devmap entry names now.
    target: u32,
    _pair: VethPair,
}

/// `live::program`, with a load the kernel refuses told apart (`auto`
/// then falls back to the packet socket).
fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, FanoutError> {
    super::live::program(ebpf, name).map_err(|e| match e {
        LiveError::Program { name, source } => match program_io_error(&source) {
            Some(e) if refused(e) => FanoutError::Refused {
                what: format!("loading {name}"),
                source: io::Error::new(e.kind(), source.to_string()),
            },
            _ => LiveError::Program { name, source }.into(),
        },
        e => e.into(),
    })
}

impl FanoutFrames {
    /// Makes the veth pair in the calling thread's namespace, loads and
    /// attaches the programs and points the devmap at the pair's first end,
    /// which checks that the kernel takes devmap programs. The calling
    /// thread must stay in that namespace for every later call.
    pub fn open() -> Result<FanoutFrames, FanoutError> {
        let pair = VethPair::make()?;
        let inject_ifindex = ifindex(INJECT_IFACE)?;
        let mut ebpf = EbpfLoader::new().load(OBJECT).map_err(LiveError::Load)?;
        program(&mut ebpf, COPY_PROGRAM)?;
        program(&mut ebpf, FANOUT_PROGRAM)?
            .attach(FANOUT_IFACE, XdpMode::Driver)
            .map_err(|source| match program_io_error(&source) {
                Some(e) if refused(e) => FanoutError::Refused {
                    what: format!("attaching {FANOUT_PROGRAM} to {FANOUT_IFACE}"),
                    source: io::Error::new(e.kind(), source.to_string()),
                },
                _ => LiveError::Attach {
                    name: FANOUT_PROGRAM,
                    iface: FANOUT_IFACE.into(),
                    source,
                }
                .into(),
            })?;
        let mut fanout = FanoutFrames {
            ebpf,
            injector: PacketFrames::default(),
            inject_ifindex,
            target: 0,
            _pair: pair,
        };
        fanout.point_at(inject_ifindex)?;
        Ok(fanout)
    }

    /// Every devmap entry to `ifindex`, with the rewriting program.
    fn point_at(&mut self, ifindex: u32) -> Result<(), FanoutError> {
        if self.target == ifindex {
            return Ok(());
        }
        let copy = program(&mut self.ebpf, COPY_PROGRAM)?
            .fd()
            .map_err(|source| LiveError::Program {
                name: COPY_PROGRAM,
                source,
            })?
            .try_clone()
            .map_err(FanoutError::ProgramFd)?;
        let map = self
            .ebpf
            .map_mut(DEVMAP)
            .ok_or(LiveError::MissingMap(DEVMAP))?;
        let mut devmap: DevMap<&mut MapData> =
            DevMap::try_from(map).map_err(|source| LiveError::Map {
                name: DEVMAP,
                source,
            })?;
        for i in 0..FANOUT {
            devmap
                .set(i, ifindex, Some(&copy), 0)
                .map_err(|e| match &e {
                    XdpMapError::ChainedProgramNotSupported => FanoutError::Refused {
                        what: format!("{DEVMAP} with a program"),
                        source: io::Error::from_raw_os_error(libc::EOPNOTSUPP),
                    },
                    XdpMapError::MapError(aya::maps::MapError::SyscallError(s))
                        if refused(&s.io_error) =>
                    {
                        FanoutError::Refused {
                            what: format!("{DEVMAP} entry {i} to ifindex {ifindex}"),
                            source: io::Error::new(s.io_error.kind(), s.io_error.to_string()),
                        }
                    }
                    _ => FanoutError::DevMap(e),
                })?;
        }
        self.target = ifindex;
        Ok(())
    }

    /// Sets the frames and flows of the next runs, and the device (in the
    /// calling thread's namespace, the one of [`FanoutFrames::open`]) they
    /// leave.
    pub fn configure(&mut self, traffic: &Traffic, ifindex: u32) -> Result<(), FanoutError> {
        traffic.check()?;
        live::write_config(&mut self.ebpf, traffic)?;
        self.point_at(ifindex)?;
        // The injected frame only carries the size: each copy gets the
        // template's headers and its flow from the devmap program.
        let mut one_flow = traffic.config();
        one_flow[generator::FLOWS as usize] = 1;
        self.injector
            .configure(
                traffic.template(),
                Rewrite::Udp(one_flow),
                self.inject_ifindex,
            )
            .map_err(FanoutError::Inject)
    }

    /// Frames asked for `frames`: whole fan-outs.
    pub fn rounded(frames: u32) -> u64 {
        u64::from(frames.div_ceil(FANOUT)) * u64::from(FANOUT)
    }

    /// Sends at least `frames` frames out of the configured device, rounded
    /// up to whole fan-outs ([`FanoutFrames::rounded`], the count in
    /// `Sent`).
    pub fn send(&mut self, frames: u32) -> Result<Sent, FanoutError> {
        let injected = self
            .injector
            .send(frames.div_ceil(FANOUT))
            .map_err(FanoutError::Inject)?;
        Ok(Sent {
            frames: injected.frames * u64::from(FANOUT),
            elapsed: injected.elapsed,
        })
    }

    /// Frames injected into the pair, all runs (for tests: each is
    /// `FANOUT` frames out of the port).
    pub fn injected(&self) -> Arc<AtomicU64> {
        self.injector.handed()
    }

    /// Frames the devmap program has made so far, all CPUs.
    pub fn generated(&self) -> Result<u64, FanoutError> {
        Ok(live::generated(&self.ebpf)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_has_the_fanout() {
        assert!(DESCRIPTION.contains(&format!(" {FANOUT} XDP frames")));
    }

    #[test]
    fn sends_are_rounded_up_to_whole_fanouts() {
        let k = u64::from(FANOUT);
        assert_eq!(FanoutFrames::rounded(1), k);
        assert_eq!(FanoutFrames::rounded(FANOUT), k);
        assert_eq!(FanoutFrames::rounded(FANOUT + 1), 2 * k);
        assert_eq!(
            FanoutFrames::rounded(u32::MAX),
            u64::from(u32::MAX.div_ceil(FANOUT)) * k
        );
    }
}
