//! Kernel pktgen as the benchmark's packet generator (`--generator
//! pktgen`), driven through its procfs files
//! (Documentation/networking/pktgen.rst).
//!
//! A run: the bench core's `kpktgend_<cpu>` thread owns the generator's
//! veth (`rem_device_all`, `add_device`), the veth's device file gets the
//! traffic and `count N`, then `start` written to `pgctrl` returns once the
//! thread has sent N frames. The device file then says how many frames the
//! veth took (`pkts-sofar`), how many it refused (`errors`) and how long
//! the run took (`Result: OK: <usec>(...) usec, ...`).
//!
//! pktgen is per network namespace, and `/proc/net` is the namespace of
//! the process's main thread: a thread that entered the generator's
//! namespace finds that namespace's pktgen at [`NETNS_ROOT`]. `pgctrl`
//! acts on the namespace of the thread that writes it, so [`Pktgen`]
//! refuses to be driven from any other namespace than the one it was
//! opened in. It never runs here (this machine's kernel has no pktgen):
//! the tests below drive it against a directory standing in for procfs.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    net::Ipv4Addr,
    os::unix::fs::{FileExt, MetadataExt},
    path::{Path, PathBuf},
    time::Duration,
};

use netbeast_common::generator;

use super::{
    generator::Sent,
    live::{MAX_FRAME_SIZE, Traffic},
};
use crate::packet::MacAddr;

/// Where pktgen's files are when the module is loaded (the root
/// namespace's; every namespace has its own).
pub const ROOT: &str = "/proc/net/pktgen";
/// The pktgen of the calling thread's network namespace.
pub const NETNS_ROOT: &str = "/proc/thread-self/net/pktgen";
/// The calling thread's network namespace, whose inode names it.
const NETNS_OF_THREAD: &str = "/proc/thread-self/ns/net";
const PGCTRL: &str = "pgctrl";
/// pktgen puts a header of its own (magic, sequence number, time) in every
/// UDP payload and never sends less.
pub const HEADER_BYTES: usize = 16;
/// Ethernet, IPv4 and UDP headers and pktgen's: its smallest frame.
pub const MIN_FRAME_SIZE: usize = generator::HEADER_BYTES + HEADER_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum PktgenError {
    #[error(
        "kernel pktgen is not available: {} does not exist. It needs a kernel built with \
         CONFIG_NET_PKTGEN and the module loaded (`modprobe pktgen`); or use --generator auto \
         (the default: XDP live frames, or where the kernel refuses them the fan-out or packet \
         socket generator), which needs neither",
        root.display()
    )]
    NotAvailable { root: PathBuf },
    #[error(
        "pktgen has no thread for CPU {cpu} ({} does not exist): choose an online CPU with --cpu",
        path.display()
    )]
    NoThread { cpu: usize, path: PathBuf },
    #[error("cannot write `{command}` to {}: {source} (pktgen says: Result: {result})", path.display())]
    Write {
        path: PathBuf,
        command: String,
        #[source]
        source: io::Error,
        result: String,
    },
    #[error("pktgen refused `{command}` ({}): Result: {result}", path.display())]
    Refused {
        path: PathBuf,
        command: String,
        result: String,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the pktgen run on {device} failed: Result: {result}")]
    Run { device: String, result: String },
    #[error("{} has no {what} line; is it pktgen's device file? It reads:\n{text}", path.display())]
    Format {
        path: PathBuf,
        what: &'static str,
        text: String,
    },
    #[error(
        "--size {0}: pktgen frames are {MIN_FRAME_SIZE}..={MAX_FRAME_SIZE} bytes (pktgen puts a \
         {HEADER_BYTES}-byte header of its own in every UDP payload): choose a --size in that \
         range, or --generator auto"
    )]
    BadSize(usize),
    #[error(
        "pktgen's control file acts on the calling thread's network namespace, and this thread \
         is not in the one pktgen was opened in (a netbeast bug)"
    )]
    WrongNamespace,
    #[error("pktgen was asked to send before a device was configured (a netbeast bug)")]
    NotConfigured,
}

type Result<T, E = PktgenError> = std::result::Result<T, E>;

/// The device file of the veth the thread owns, kept open: reads and
/// writes through it reach that device whichever thread makes them.
struct Device {
    name: String,
    file: File,
}

/// pktgen of one network namespace, sending from one CPU.
pub struct Pktgen {
    root: PathBuf,
    /// `kpktgend_<cpu>`, kept open like the device file.
    thread: File,
    thread_path: PathBuf,
    /// The network namespace (its inode) the files belong to.
    netns: u64,
    device: Option<Device>,
    /// Frames pktgen counted as sent (`pkts-sofar`), all runs.
    counted: u64,
}

/// What one run did, from the device file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// Frames the device took (`pkts-sofar`).
    pub sofar: u64,
    /// Frames the device refused (`errors`): on a veth, a full ring.
    pub errors: u64,
    /// From the first frame to the last, as pktgen timed it.
    pub elapsed: Duration,
}

/// Reads the counters of a run while it goes on, from any thread.
pub struct Counters {
    file: File,
    path: PathBuf,
}

impl Counters {
    /// Frames handed to the device so far in the current run (taken or
    /// refused); None when the file cannot be read.
    pub fn handed(&self) -> Option<u64> {
        let text = read_all(&self.file).ok()?;
        current(&text).map(|(sofar, errors)| sofar + errors)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Pktgen {
    /// Fails unless pktgen's directory `root` exists.
    pub fn require(root: &Path) -> Result<()> {
        if root.is_dir() {
            Ok(())
        } else {
            Err(PktgenError::NotAvailable { root: root.into() })
        }
    }

    /// pktgen at `root` (its procfs directory, [`NETNS_ROOT`] for the
    /// calling thread's namespace), sending from CPU `cpu`.
    pub fn open(root: impl Into<PathBuf>, cpu: usize) -> Result<Pktgen> {
        let root = root.into();
        Self::require(&root)?;
        let thread_path = root.join(format!("kpktgend_{cpu}"));
        if !thread_path.exists() {
            return Err(PktgenError::NoThread {
                cpu,
                path: thread_path,
            });
        }
        let thread = open_rw(&thread_path)?;
        Ok(Pktgen {
            root,
            thread,
            thread_path,
            netns: netns_here()?,
            device: None,
            counted: 0,
        })
    }

    /// Sets up the next runs: `traffic` out of the veth `iface`.
    ///
    /// Flows: pktgen steps the source address and the source port one
    /// step per frame each, sequentially (no `IPSRC_RND`, `UDPSRC_RND`).
    /// `--flows N` becomes A addresses times P ports with A·P = N and A, P
    /// coprime ([`flow_split`]), so every address and port pair comes up
    /// exactly once in every N frames.
    pub fn configure(&mut self, traffic: &Traffic, iface: &str) -> Result<()> {
        self.check_netns()?;
        if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&traffic.size) {
            return Err(PktgenError::BadSize(traffic.size));
        }
        if self.device.as_ref().map(|d| d.name.as_str()) != Some(iface) {
            // pktgen's rem_device_all waits 125 ms for its thread: done
            // only when the device changes.
            self.device = None;
            pgset(&self.thread, &self.thread_path, "rem_device_all")?;
            pgset(
                &self.thread,
                &self.thread_path,
                &format!("add_device {iface}"),
            )?;
            let path = self.root.join(iface);
            self.device = Some(Device {
                name: iface.into(),
                file: open_rw(&path)?,
            });
        }
        let device = self.device.as_ref().expect("just set");
        let path = self.root.join(&device.name);
        for command in device_commands(traffic) {
            pgset(&device.file, &path, &command)?;
        }
        Ok(())
    }

    /// Sends `frames` frames and waits until they are sent. The calling
    /// thread must be in pktgen's namespace: `pgctrl` starts the threads
    /// of the writer's namespace.
    pub fn send(&mut self, frames: u32) -> Result<Sent> {
        self.check_netns()?;
        let device = self.device.as_ref().ok_or(PktgenError::NotConfigured)?;
        let path = self.root.join(&device.name);
        pgset(&device.file, &path, &format!("count {frames}"))?;
        let pgctrl = self.root.join(PGCTRL);
        // pgctrl has no Result line: what the run did is in the device file.
        write_command(&pgctrl, "start").map_err(|source| PktgenError::Write {
            path: pgctrl.clone(),
            command: "start".into(),
            source,
            result: "-".into(),
        })?;
        let text = read_all(&device.file).map_err(|source| PktgenError::Read {
            path: path.clone(),
            source,
        })?;
        let run = run_of(&device.name, &path, &text)?;
        self.counted += run.sofar;
        Ok(Sent {
            frames: run.sofar + run.errors,
            elapsed: run.elapsed,
        })
    }

    /// A reader of the current run's counters for another thread.
    pub fn counters(&self) -> Result<Counters> {
        let device = self.device.as_ref().ok_or(PktgenError::NotConfigured)?;
        let path = self.root.join(&device.name);
        let file = device
            .file
            .try_clone()
            .map_err(|source| PktgenError::Read {
                path: path.clone(),
                source,
            })?;
        Ok(Counters { file, path })
    }

    /// Frames pktgen counted as sent (`pkts-sofar`) over all runs.
    pub fn counted(&self) -> u64 {
        self.counted
    }

    fn check_netns(&self) -> Result<()> {
        if netns_here()? == self.netns {
            Ok(())
        } else {
            Err(PktgenError::WrongNamespace)
        }
    }
}

/// The device file's commands for `traffic`, in the order written.
fn device_commands(t: &Traffic) -> Vec<String> {
    let (addresses, ports) = flow_split(t.flows);
    let last_source = Ipv4Addr::from(u32::from(t.first_source) + addresses - 1);
    // The source port range is min..max, max excluded; min = max is one
    // port.
    let port_end = if ports > 1 {
        t.first_port as u32 + ports
    } else {
        t.first_port as u32
    };
    vec![
        // A new frame for every send, so address and port can step (a veth
        // cannot take one frame shared by several sends anyway).
        "clone_skb 0".into(),
        // Frames the stack may keep and change, as a NIC's are: a shared
        // frame would be copied by every receiver that writes to it.
        "flag !SHARED".into(),
        // The timestamp is for pktgen's own receiver, which is not used:
        // it would only cost a clock read per frame.
        "flag NO_TIMESTAMP".into(),
        format!("pkt_size {}", t.size),
        "delay 0".into(),
        format!("src_mac {}", mac(t.src_mac)),
        format!("dst_mac {}", mac(t.dst_mac)),
        format!("dst_min {}", t.destination),
        format!("dst_max {}", t.destination),
        format!("src_min {}", t.first_source),
        format!("src_max {last_source}"),
        format!("udp_src_min {}", t.first_port),
        format!("udp_src_max {port_end}"),
        format!("udp_dst_min {}", t.dport),
        format!("udp_dst_max {}", t.dport),
    ]
}

/// `flows` as (addresses, ports): the most addresses (at most
/// `generator::ADDRESSES`, as the live-frames generator uses) that divide
/// `flows` and are coprime with the ports that make up the rest. pktgen
/// steps address and port together, so the pair repeats after lcm(A, P)
/// frames, which is A·P only when they are coprime.
pub fn flow_split(flows: u32) -> (u32, u32) {
    let addresses = (1..=flows.clamp(1, generator::ADDRESSES))
        .rev()
        .find(|a| flows.is_multiple_of(*a) && gcd(*a, flows / a) == 1)
        .unwrap_or(1);
    (addresses, flows.max(1) / addresses)
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn mac(m: MacAddr) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

fn open_rw(path: &Path) -> Result<File> {
    // Append: procfs ignores the offset; a plain file standing in for
    // procfs keeps every command written.
    OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .map_err(|source| PktgenError::Read {
            path: path.into(),
            source,
        })
}

/// One command in one write, as pktgen parses them.
fn write_command(path: &Path, command: &str) -> io::Result<()> {
    OpenOptions::new()
        .append(true)
        .open(path)?
        .write_all(format!("{command}\n").as_bytes())
}

/// Writes `command` to the pktgen file `file` and checks its `Result:`
/// line, as pktgen's own scripts do.
fn pgset(file: &File, path: &Path, command: &str) -> Result<()> {
    let written = (&*file).write_all(format!("{command}\n").as_bytes());
    let text = read_all(file);
    let result = text
        .as_deref()
        .ok()
        .and_then(result_of)
        .unwrap_or("(no Result line)")
        .to_string();
    if let Err(source) = written {
        return Err(PktgenError::Write {
            path: path.into(),
            command: command.into(),
            source,
            result,
        });
    }
    text.map_err(|source| PktgenError::Read {
        path: path.into(),
        source,
    })?;
    if result.starts_with("OK") {
        Ok(())
    } else {
        Err(PktgenError::Refused {
            path: path.into(),
            command: command.into(),
            result,
        })
    }
}

/// The whole file from its start (seq_file reads restart at offset 0).
fn read_all(file: &File) -> io::Result<String> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = file.read_at(&mut chunk, bytes.len() as u64)?;
        if n == 0 {
            return Ok(String::from_utf8_lossy(&bytes).into_owned());
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
}

fn netns_here() -> Result<u64> {
    std::fs::metadata(NETNS_OF_THREAD)
        .map(|m| m.ino())
        .map_err(|source| PktgenError::Read {
            path: NETNS_OF_THREAD.into(),
            source,
        })
}

/// The text of a pktgen file's `Result:` line to the end of the file
/// (pktgen's last line; a run's result takes two lines).
fn result_of(text: &str) -> Option<&str> {
    let at = text.rfind("Result: ")?;
    Some(text[at + "Result: ".len()..].trim())
}

/// `pkts-sofar` and `errors` of the device file's `Current:` section.
fn current(text: &str) -> Option<(u64, u64)> {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("pkts-sofar:"))?;
    let mut words = line.split_whitespace();
    let mut value = |name: &str| -> Option<u64> {
        words.find(|w| *w == name)?;
        words.next()?.parse().ok()
    };
    let sofar = value("pkts-sofar:")?;
    let errors = value("errors:")?;
    Some((sofar, errors))
}

/// The run the device file `path` of `device` reports, or why there is
/// none.
fn run_of(device: &str, path: &Path, text: &str) -> Result<Run> {
    parse_run(text).map_err(|e| match e {
        RunError::Failed(result) => PktgenError::Run {
            device: device.into(),
            result,
        },
        RunError::Missing(what) => PktgenError::Format {
            path: path.into(),
            what,
            text: text.into(),
        },
    })
}

#[derive(Debug, PartialEq, Eq)]
enum RunError {
    /// The Result line, verbatim, when it is not `OK`.
    Failed(String),
    /// What the file does not say.
    Missing(&'static str),
}

/// A finished run from the device file: `Result: OK: <usec>(c..+d..) usec,
/// <sofar> (<size>byte,<frags>frags)` and the `Current:` counters.
fn parse_run(text: &str) -> Result<Run, RunError> {
    let result = result_of(text).ok_or(RunError::Missing("Result:"))?;
    let Some(ok) = result.strip_prefix("OK: ") else {
        return Err(RunError::Failed(result.into()));
    };
    let usec: u64 = ok
        .split(['(', ' '])
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or(RunError::Failed(result.into()))?;
    let (sofar, errors) = current(text).ok_or(RunError::Missing("pkts-sofar: ... errors:"))?;
    Ok(Run {
        sofar,
        errors,
        elapsed: Duration::from_micros(usec),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{collections::HashSet, fs};

    /// A directory standing in for /proc/net/pktgen: plain files with
    /// pktgen's texts, to which the commands are appended.
    struct FakeProcfs {
        dir: PathBuf,
    }

    /// The device file of a finished run of 1,000 frames, 3 refused, as
    /// pktgen_if_show prints it.
    const FINISHED: &str = "\
Params: count 1000  min_pkt_size: 64  max_pkt_size: 64
     frags: 0  delay: 0  clone_skb: 0  ifname: g0
     flows: 0 flowlen: 0
     queue_map_min: 0  queue_map_max: 0
     dst_min: 198.18.0.254  dst_max: 198.18.0.254
     src_min: 198.18.0.1  src_max: 198.18.0.1
     src_mac: 02:00:00:00:00:01 dst_mac: 02:00:00:00:00:02
     udp_src_min: 1024  udp_src_max: 1024  udp_dst_min: 9  udp_dst_max: 9
     src_mac_count: 0  dst_mac_count: 0
     Flags: NO_TIMESTAMP
Current:
     pkts-sofar: 1000  errors: 3
     started: 1234567us  stopped: 1235067us idle: 12us
     seq_num: 1001  cur_dst_mac_offset: 0  cur_src_mac_offset: 0
     cur_saddr: 198.18.0.1  cur_daddr: 198.18.0.254
     cur_udp_dst: 9  cur_udp_src: 1024
     cur_queue_map: 0
     flows: 0
Result: OK: 500(c488+d12) usec, 1000 (64byte,0frags)
  2000000pps 1024Mb/sec (1024000000bps) errors: 3
";

    impl FakeProcfs {
        fn new(tag: &str) -> FakeProcfs {
            let dir = std::env::temp_dir()
                .join(format!("netbeast-fake-pktgen-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            fs::write(
                dir.join("pgctrl"),
                "Packet Generator for packet performance testing. Version: 2.75\n",
            )
            .unwrap();
            for cpu in 0..2 {
                fs::write(
                    dir.join(format!("kpktgend_{cpu}")),
                    "Running: \nStopped: \nResult: OK: add_device=g0\n",
                )
                .unwrap();
            }
            for dev in ["g0", "g1"] {
                fs::write(dir.join(dev), FINISHED).unwrap();
            }
            FakeProcfs { dir }
        }

        /// What was appended to `file` after its seeded text.
        fn written(&self, file: &str, seed: &str) -> Vec<String> {
            let text = fs::read_to_string(self.dir.join(file)).unwrap();
            let rest = text.strip_prefix(seed).unwrap_or_else(|| {
                panic!("{file} lost its seeded text:\n{text}");
            });
            rest.lines().map(str::to_string).collect()
        }
    }

    impl Drop for FakeProcfs {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    const THREAD_SEED: &str = "Running: \nStopped: \nResult: OK: add_device=g0\n";

    fn traffic(flows: u32) -> Traffic {
        Traffic::example(flows, 64)
    }

    #[test]
    fn configure_and_send_write_the_documented_sequence() {
        let fake = FakeProcfs::new("sequence");
        let mut pktgen = Pktgen::open(&fake.dir, 1).unwrap();
        pktgen.configure(&traffic(300), "g0").unwrap();
        let sent = pktgen.send(1000).unwrap();

        assert_eq!(
            fake.written("kpktgend_1", THREAD_SEED),
            ["rem_device_all", "add_device g0"]
        );
        assert!(fake.written("kpktgend_0", THREAD_SEED).is_empty());
        // 300 flows: 100 addresses (.1 to .100) times 3 ports (1024..1027).
        assert_eq!(
            fake.written("g0", FINISHED),
            [
                "clone_skb 0",
                "flag !SHARED",
                "flag NO_TIMESTAMP",
                "pkt_size 64",
                "delay 0",
                "src_mac 02:00:00:00:00:01",
                "dst_mac 02:00:00:00:00:02",
                "dst_min 198.18.0.254",
                "dst_max 198.18.0.254",
                "src_min 198.18.0.1",
                "src_max 198.18.0.100",
                "udp_src_min 1024",
                "udp_src_max 1027",
                "udp_dst_min 9",
                "udp_dst_max 9",
                "count 1000",
            ]
        );
        assert_eq!(
            fake.written(
                "pgctrl",
                "Packet Generator for packet performance testing. Version: 2.75\n"
            ),
            ["start"]
        );
        // Taken and refused frames were all handed to the veth.
        assert_eq!(sent.frames, 1003);
        assert_eq!(sent.elapsed, Duration::from_micros(500));
        assert_eq!(pktgen.counted(), 1000);
        assert_eq!(pktgen.counters().unwrap().handed(), Some(1003));
    }

    #[test]
    fn one_flow_is_one_address_and_one_port() {
        let fake = FakeProcfs::new("oneflow");
        let mut pktgen = Pktgen::open(&fake.dir, 0).unwrap();
        pktgen.configure(&traffic(1), "g0").unwrap();
        let written = fake.written("g0", FINISHED);
        for line in [
            "src_min 198.18.0.1",
            "src_max 198.18.0.1",
            "udp_src_min 1024",
            "udp_src_max 1024",
        ] {
            assert!(written.iter().any(|l| l == line), "{line}: {written:?}");
        }
    }

    /// The thread is given a device only when it changes (rem_device_all
    /// costs 125 ms); the device file gets the traffic every time.
    #[test]
    fn the_thread_changes_device_only_when_asked_for_another() {
        let fake = FakeProcfs::new("switch");
        let mut pktgen = Pktgen::open(&fake.dir, 1).unwrap();
        pktgen.configure(&traffic(1), "g0").unwrap();
        pktgen.configure(&traffic(1), "g0").unwrap();
        pktgen.configure(&traffic(1), "g1").unwrap();
        pktgen.send(10).unwrap();
        assert_eq!(
            fake.written("kpktgend_1", THREAD_SEED),
            [
                "rem_device_all",
                "add_device g0",
                "rem_device_all",
                "add_device g1"
            ]
        );
        let g0 = fake.written("g0", FINISHED);
        assert_eq!(g0.iter().filter(|l| *l == "pkt_size 64").count(), 2);
        assert!(!g0.iter().any(|l| l.starts_with("count")), "{g0:?}");
        assert_eq!(fake.written("g1", FINISHED).last().unwrap(), "count 10");
    }

    #[test]
    fn a_missing_pktgen_says_how_to_get_it() {
        let root = std::env::temp_dir().join(format!("netbeast-no-pktgen-{}", std::process::id()));
        let e = Pktgen::open(&root, 0).err().expect("no pktgen there");
        let text = e.to_string();
        assert!(matches!(e, PktgenError::NotAvailable { .. }), "{text}");
        for needed in [
            "not available",
            "CONFIG_NET_PKTGEN",
            "modprobe pktgen",
            "--generator auto",
        ] {
            assert!(text.contains(needed), "{needed}: {text}");
        }
        assert!(matches!(
            Pktgen::require(&root),
            Err(PktgenError::NotAvailable { .. })
        ));
        let fake = FakeProcfs::new("nothread");
        assert!(matches!(
            Pktgen::open(&fake.dir, 7),
            Err(PktgenError::NoThread { cpu: 7, .. })
        ));
    }

    /// A command pktgen does not take leaves `Result: ERROR ...` (or another
    /// text) in the file: it comes back verbatim, and nothing is sent.
    #[test]
    fn a_refused_command_is_reported_verbatim() {
        let fake = FakeProcfs::new("refused");
        let error = "ERROR: can not add device g0";
        fs::write(
            fake.dir.join("kpktgend_1"),
            format!("Running: \nStopped: \nResult: {error}\n"),
        )
        .unwrap();
        let mut pktgen = Pktgen::open(&fake.dir, 1).unwrap();
        let e = pktgen.configure(&traffic(1), "g0").unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, PktgenError::Refused { .. }), "{text}");
        assert!(text.contains(&format!("Result: {error}")), "{text}");
        assert!(text.contains("rem_device_all"), "{text}");
        assert!(matches!(pktgen.send(1), Err(PktgenError::NotConfigured)));
        assert!(
            fake.written(
                "pgctrl",
                "Packet Generator for packet performance testing. Version: 2.75\n"
            )
            .is_empty()
        );
    }

    #[test]
    fn a_failed_run_is_reported_verbatim() {
        let failed = FINISHED.replace(
            "Result: OK: 500(c488+d12) usec, 1000 (64byte,0frags)\n  2000000pps 1024Mb/sec (1024000000bps) errors: 3\n",
            "Result: ERROR: pkt_dev->odev == NULL in setup_inject.\n",
        );
        let e = run_of("g0", Path::new("/fake/g0"), &failed).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, PktgenError::Run { .. }), "{text}");
        assert!(
            text.contains("g0 failed: Result: ERROR: pkt_dev->odev == NULL in setup_inject."),
            "{text}"
        );
        let e = run_of(
            "g0",
            Path::new("/fake/g0"),
            "Result: OK: 12(c10+d2) usec, 5 (64byte,0frags)\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("/fake/g0 has no pkts-sofar"), "{e}");
    }

    #[test]
    fn sizes_pktgen_cannot_send_are_refused() {
        let fake = FakeProcfs::new("size");
        let mut pktgen = Pktgen::open(&fake.dir, 1).unwrap();
        let small = Traffic {
            size: MIN_FRAME_SIZE - 1,
            ..traffic(1)
        };
        let e = pktgen.configure(&small, "g0").unwrap_err();
        assert!(matches!(e, PktgenError::BadSize(57)), "{e}");
        assert!(e.to_string().contains("--generator auto"), "{e}");
        assert!(fake.written("kpktgend_1", THREAD_SEED).is_empty());
        let largest = Traffic {
            size: MAX_FRAME_SIZE,
            ..traffic(1)
        };
        pktgen.configure(&largest, "g0").unwrap();
    }

    #[test]
    fn results_parse() {
        assert_eq!(
            parse_run(FINISHED),
            Ok(Run {
                sofar: 1000,
                errors: 3,
                elapsed: Duration::from_micros(500)
            })
        );
        // A run still going: counters, but no OK result.
        let running = FINISHED.replace(
            "Result: OK: 500(c488+d12) usec, 1000 (64byte,0frags)\n  2000000pps 1024Mb/sec (1024000000bps) errors: 3\n",
            "Result: Starting\n",
        );
        assert_eq!(
            parse_run(&running),
            Err(RunError::Failed("Starting".into()))
        );
        assert_eq!(current(&running), Some((1000, 3)));
        assert_eq!(
            parse_run("Params: count 1\n"),
            Err(RunError::Missing("Result:"))
        );
        assert_eq!(
            parse_run("Result: OK: 12(c10+d2) usec, 5 (64byte,0frags)\n"),
            Err(RunError::Missing("pkts-sofar: ... errors:"))
        );
        assert_eq!(
            result_of("Running: g0 \nStopped: \nResult: OK: add_device=g0\n"),
            Some("OK: add_device=g0")
        );
    }

    /// Simulates pktgen's sequential stepping (mod_cur_headers: the address
    /// wraps after src_max, the port before udp_src_max, both step before
    /// each frame) over the commands written: N flows give N distinct
    /// pairs in every N frames, within the generator's addresses.
    #[test]
    fn every_flow_count_gives_that_many_pairs() {
        for flows in [
            1,
            2,
            7,
            250,
            251,
            300,
            500,
            997,
            1000,
            4096,
            generator::MAX_FLOWS,
        ] {
            let t = traffic(flows);
            let commands = device_commands(&t);
            let value = |name: &str| -> String {
                commands
                    .iter()
                    .find_map(|c| c.strip_prefix(&format!("{name} ")))
                    .unwrap()
                    .to_string()
            };
            let smin = u32::from(value("src_min").parse::<Ipv4Addr>().unwrap());
            let smax = u32::from(value("src_max").parse::<Ipv4Addr>().unwrap());
            let pmin: u32 = value("udp_src_min").parse().unwrap();
            let pmax: u32 = value("udp_src_max").parse().unwrap();
            assert!(smax - smin < generator::ADDRESSES, "{flows}: {commands:?}");
            assert!(pmax <= u16::MAX as u32, "{flows}");
            let (mut addr, mut port) = (smin, pmin);
            let mut pairs = HashSet::new();
            for _ in 0..flows {
                if pmin < pmax {
                    port += 1;
                    if port >= pmax {
                        port = pmin;
                    }
                }
                if smin < smax {
                    addr += 1;
                    if addr > smax {
                        addr = smin;
                    }
                }
                pairs.insert((addr, port));
            }
            assert_eq!(pairs.len(), flows as usize, "{flows} flows: {commands:?}");
        }
        assert_eq!(flow_split(250), (250, 1));
        assert_eq!(flow_split(300), (100, 3));
        assert_eq!(flow_split(997), (1, 997));
    }
}
