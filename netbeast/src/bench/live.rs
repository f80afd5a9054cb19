//! The live-frames packet generator of DESIGN §8 and the bare XDP programs
//! the benchmark attaches (the floor receiver, the forwarding sink).
//!
//! `netbeast_generator` (netbeast-ebpf generator.rs) returns `XDP_TX` for
//! every frame. Run with `BPF_PROG_TEST_RUN` in live-frames mode
//! (`BPF_F_TEST_XDP_LIVE_FRAMES`), the kernel turns each `XDP_TX` into a
//! transmit on the device named by the context's `ingress_ifindex`: the
//! frames leave one end of a veth pair and reach the other. The receiver's
//! work runs in the softirq of the same CPU, right after each batch, so one
//! pinned core carries both the generator and the data plane under test.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Instant,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray},
    programs::{ProgramError, TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
};
use netbeast_common::generator;

use super::generator::Sent;
use super::planes::Ip;
use crate::packet::{Checksum, FrameBuilder, MacAddr};

/// The kernel object built by build.rs (the same one the loader embeds).
pub(super) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netbeast"));

const GENERATOR_PROGRAM: &str = "netbeast_generator";
const FLOOR_PROGRAM: &str = "netbeast_floor";
const REDIRECT_FLOOR_PROGRAM: &str = "netbeast_redirect_floor";
const REDIRECT_FLOOR_MAP: &str = "REDIRECT_FLOOR";
/// Frames per live-frames batch: the kernel flushes the transmit queue and
/// lets the receiver's softirq run after each batch.
pub const BATCH_SIZE: u32 = 64;
/// The largest batch the kernel accepts (TEST_XDP_MAX_BATCH).
pub const MAX_BATCH_SIZE: u32 = 256;
/// XDP_TX as BPF_PROG_TEST_RUN reports it.
const XDP_TX: u32 = 3;
/// Ethernet + IPv4 + UDP headers: the smallest frame the generator sends.
pub const MIN_FRAME_SIZE: usize = generator::HEADER_BYTES;
/// An Ethernet frame without FCS at the veth's default 1500-byte MTU.
pub const MAX_FRAME_SIZE: usize = 1514;

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("cannot load the netbeast eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("program {0} is missing from the eBPF object (a build mismatch: rebuild netbeast)")]
    MissingProgram(&'static str),
    #[error("map {0} is missing from the eBPF object (a build mismatch: rebuild netbeast)")]
    MissingMap(&'static str),
    #[error("the kernel rejected {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(
        "this kernel has no XDP live-frames mode for BPF_PROG_TEST_RUN, or refuses it (Linux 5.18 \
         or newer, not hardened against it, is needed; --generator fanout, packet or auto send \
         without live frames): {0}"
    )]
    NoLiveFrames(#[source] ProgramError),
    #[error("the packet generator failed: {0}")]
    Send(#[source] ProgramError),
    #[error("the generator returned XDP action {0} instead of XDP_TX (3)")]
    NotTx(u32),
    #[error("cannot attach {name} to {iface}: {source}")]
    Attach {
        name: &'static str,
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error(
        "cannot pin the generator to CPU {cpu}: {source} (this machine has CPUs 0 to {last}: choose one with --cpu)"
    )]
    Pin {
        cpu: usize,
        last: usize,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "--flows {0}: the generator spreads frames over 1..={max} flows (generator::MAX_FLOWS)",
        max = generator::MAX_FLOWS
    )]
    TooManyFlows(u32),
    #[error(
        "--size {0}: frames are {MIN_FRAME_SIZE}..={MAX_FRAME_SIZE} bytes (Ethernet header to the end of the UDP payload, no FCS)"
    )]
    BadSize(usize),
    #[error(
        "--size {0} with --family 6: an IPv6 UDP frame is {IPV6_MIN_FRAME_SIZE}..={MAX_FRAME_SIZE} \
         bytes (Ethernet header to the end of the UDP payload, no FCS)"
    )]
    Ipv6Size(usize),
}

/// Ethernet, IPv6 and UDP headers: the smallest IPv6 frame the benchmark
/// sends.
pub const IPV6_MIN_FRAME_SIZE: usize = generator::HEADER_BYTES6;

/// What one generator run sends: a UDP frame and the flows it is spread over.
#[derive(Clone, Debug)]
pub struct Traffic {
    pub src_mac: MacAddr,
    /// The receiver's MAC, so the kernel does not discard frames as
    /// addressed to another host before netfilter sees them.
    pub dst_mac: MacAddr,
    /// Flow `f` comes from `first_source + f % ADDRESSES`, port
    /// `first_port + f / ADDRESSES`.
    pub first_source: Ipv4Addr,
    pub first_port: u16,
    pub destination: Ipv4Addr,
    pub dport: u16,
    pub flows: u32,
    /// Frame length, Ethernet header to the end of the payload.
    pub size: usize,
    /// IPv4, or IPv6 with the addresses above written into
    /// `planes::BENCH_NET6`.
    pub ip: Ip,
}

impl Traffic {
    /// A traffic for tests: `flows` flows from 198.18.0.1:1024 on, frames of
    /// `size` bytes.
    #[cfg(test)]
    pub fn example(flows: u32, size: usize) -> Traffic {
        Traffic {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            first_source: Ipv4Addr::new(198, 18, 0, 1),
            first_port: 1024,
            destination: Ipv4Addr::new(198, 18, 0, 254),
            dport: 9,
            flows,
            size,
            ip: Ip::V4,
        }
    }

    pub fn check(&self) -> Result<(), LiveError> {
        if self.flows == 0 || self.flows > generator::MAX_FLOWS {
            return Err(LiveError::TooManyFlows(self.flows));
        }
        if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&self.size) {
            return Err(LiveError::BadSize(self.size));
        }
        if self.ip == Ip::V6 && self.size < IPV6_MIN_FRAME_SIZE {
            return Err(LiveError::Ipv6Size(self.size));
        }
        Ok(())
    }

    /// The frame of flow 0. IPv4: the UDP checksum is 0 ("none"): the
    /// generator rewrites source address and port and keeps only the IPv4
    /// checksum right. IPv6: the UDP checksum is the real one, which the
    /// generator updates for each flow's source.
    pub fn template(&self) -> Vec<u8> {
        match (
            self.ip.addr(self.first_source),
            self.ip.addr(self.destination),
        ) {
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                // IPv6 has no "no checksum" for UDP (RFC 8200).
                let payload = vec![0u8; self.size - IPV6_MIN_FRAME_SIZE];
                FrameBuilder::udp6_with(src, self.first_port, dst, self.dport, &payload)
                    .src_mac(self.src_mac)
                    .dst_mac(self.dst_mac)
                    .build()
            }
            _ => FrameBuilder::udp(
                self.first_source,
                self.first_port,
                self.destination,
                self.dport,
            )
            .src_mac(self.src_mac)
            .dst_mac(self.dst_mac)
            .payload(&vec![0u8; self.size - MIN_FRAME_SIZE])
            .l4_checksum(Checksum::Zero)
            .build(),
        }
    }

    /// The address and port flow `f` is sent from (as the generator does it).
    pub fn flow_source(&self, f: u32) -> (Ipv4Addr, u16) {
        let addr = u32::from(self.first_source) + f % generator::ADDRESSES;
        let port = self.first_port as u32 + f / generator::ADDRESSES;
        (Ipv4Addr::from(addr), port as u16)
    }

    /// The bytes of the template the generator copies over every frame.
    fn header_bytes(&self) -> usize {
        match self.ip {
            Ip::V4 => generator::HEADER_BYTES,
            Ip::V6 => generator::HEADER_BYTES6,
        }
    }

    /// The template's headers as the generator copies them, in words.
    fn header_words(&self) -> [u64; generator::TEMPLATE_WORDS] {
        let frame = self.template();
        let mut bytes = [0u8; 8 * generator::TEMPLATE_WORDS];
        let n = self.header_bytes();
        bytes[..n].copy_from_slice(&frame[..n]);
        let mut words = [0u64; generator::TEMPLATE_WORDS];
        for (w, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
            *w = u64::from_ne_bytes(chunk.try_into().expect("8 bytes"));
        }
        words
    }

    /// The generator's configuration array for this traffic.
    pub fn config(&self) -> [u32; generator::CONFIG_ENTRIES as usize] {
        let frame = self.template();
        let sum = match self.ip {
            // One's-complement sum of the IPv4 header without its checksum
            // (bytes 10-11) and source address (12-15).
            Ip::V4 => {
                let mut ip = frame[14..34].to_vec();
                ip[10..16].fill(0);
                word_sum(&ip)
            }
            // The UDP checksum's sum (pseudo-header: source, destination,
            // length, next header; then the UDP header, with the payload,
            // all zeros) without the checksum, the source's last 32 bits
            // and the source port, which the generator adds per flow.
            Ip::V6 => {
                let mut addresses = frame[22..54].to_vec();
                addresses[12..16].fill(0);
                let mut udp = frame[54..].to_vec();
                udp[0..2].fill(0);
                udp[6..8].fill(0);
                word_sum(&addresses)
                    + word_sum(&(udp.len() as u32).to_be_bytes())
                    + u32::from(frame[14 + 6])
                    + word_sum(&udp)
            }
        };
        let mut c = [0u32; generator::CONFIG_ENTRIES as usize];
        c[generator::FLOWS as usize] = self.flows;
        c[generator::FIRST_SOURCE as usize] = u32::from(self.first_source);
        c[generator::FIRST_PORT as usize] = self.first_port as u32;
        c[generator::HEADER_SUM as usize] = sum;
        c[generator::IPV6 as usize] = u32::from(self.ip == Ip::V6);
        c
    }
}

/// The sum of `bytes` as big-endian 16-bit words (an odd last byte padded
/// with zero), unfolded: at most 1,514 bytes, far from overflowing.
fn word_sum(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum()
}

/// The loaded generator program with its maps, and what it sends.
pub struct LiveFrames {
    ebpf: Ebpf,
    /// The frame of flow 0 (`Traffic::template`) and the device it leaves.
    frame: Vec<u8>,
    ifindex: u32,
}

pub(super) fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut Xdp, LiveError> {
    let xdp: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or(LiveError::MissingProgram(name))?
        .try_into()
        .map_err(|source| LiveError::Program { name, source })?;
    if xdp.fd().is_err() {
        xdp.load()
            .map_err(|source| LiveError::Program { name, source })?;
    }
    Ok(xdp)
}

impl LiveFrames {
    pub fn load() -> Result<LiveFrames, LiveError> {
        let mut ebpf = EbpfLoader::new().load(OBJECT).map_err(LiveError::Load)?;
        program(&mut ebpf, GENERATOR_PROGRAM)?;
        Ok(LiveFrames {
            ebpf,
            frame: Vec::new(),
            ifindex: 0,
        })
    }

    /// One frame out of `lo`: the kernel refuses live frames outright when
    /// it has no such mode. The calling thread must be in the namespace
    /// whose `lo` it is.
    pub fn probe(&mut self) -> Result<Sent, LiveError> {
        run(&mut self.ebpf, &[0u8; MIN_FRAME_SIZE], 1, 1)
    }

    /// Sets the frames and flows of the next runs, and the device (in the
    /// namespace of the thread that calls [`LiveFrames::send`]) they leave.
    pub fn configure(&mut self, traffic: &Traffic, ifindex: u32) -> Result<(), LiveError> {
        traffic.check()?;
        write_config(&mut self.ebpf, traffic)?;
        self.frame = traffic.template();
        self.ifindex = ifindex;
        Ok(())
    }

    /// Frames the program has generated so far, all CPUs.
    pub fn generated(&self) -> Result<u64, LiveError> {
        generated(&self.ebpf)
    }

    /// Runs the generator once outside live-frames mode and returns the
    /// frame it made (the next of the sequence on the calling thread's
    /// CPU): what `bench::packet::Rewrite` is checked against.
    pub fn make_one(&mut self) -> Result<Vec<u8>, LiveError> {
        let xdp = program(&mut self.ebpf, GENERATOR_PROGRAM)?;
        let mut out = vec![0u8; self.frame.len()];
        xdp.test_run(TestRunOptions {
            data_in: Some(&self.frame),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        })
        .map_err(LiveError::Send)?;
        Ok(out)
    }

    /// Sends `frames` copies of the configured frame (rewritten per flow)
    /// out of the configured device. The calling thread must be in the
    /// device's network namespace (the kernel resolves the ifindex there)
    /// and should be pinned to one CPU ([`pin_to_cpu`]).
    pub fn send(&mut self, frames: u32) -> Result<Sent, LiveError> {
        run(&mut self.ebpf, &self.frame, self.ifindex, frames)
    }
}

/// Writes `traffic` into the generator's maps (of `ebpf`, the whole
/// object: the live-frames and the fan-out generators share them).
pub(super) fn write_config(ebpf: &mut Ebpf, traffic: &Traffic) -> Result<(), LiveError> {
    const NAME: &str = "GENERATOR_CONFIG";
    let map = ebpf.map_mut(NAME).ok_or(LiveError::MissingMap(NAME))?;
    let mut config: Array<&mut MapData, u32> =
        Array::try_from(map).map_err(|source| LiveError::Map { name: NAME, source })?;
    for (i, v) in traffic.config().iter().enumerate() {
        config
            .set(i as u32, v, 0)
            .map_err(|source| LiveError::Map { name: NAME, source })?;
    }
    const TEMPLATE: &str = "GENERATOR_TEMPLATE";
    let map = ebpf
        .map_mut(TEMPLATE)
        .ok_or(LiveError::MissingMap(TEMPLATE))?;
    let mut template: Array<&mut MapData, [u64; generator::TEMPLATE_WORDS]> = Array::try_from(map)
        .map_err(|source| LiveError::Map {
            name: TEMPLATE,
            source,
        })?;
    template
        .set(0, traffic.header_words(), 0)
        .map_err(|source| LiveError::Map {
            name: TEMPLATE,
            source,
        })
}

/// Frames the generator's programs (of `ebpf`) have made so far, all CPUs.
pub(super) fn generated(ebpf: &Ebpf) -> Result<u64, LiveError> {
    const NAME: &str = "GENERATED";
    let map = ebpf.map(NAME).ok_or(LiveError::MissingMap(NAME))?;
    let counter: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(map).map_err(|source| LiveError::Map { name: NAME, source })?;
    let values = counter
        .get(&0, 0)
        .map_err(|source| LiveError::Map { name: NAME, source })?;
    Ok(values.iter().sum())
}

fn run(ebpf: &mut Ebpf, frame: &[u8], ifindex: u32, frames: u32) -> Result<Sent, LiveError> {
    let xdp = program(ebpf, GENERATOR_PROGRAM)?;
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
    // rx_queue_index, egress_ifindex.
    let md: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
    let ctx: Vec<u8> = md.iter().flat_map(|v| v.to_ne_bytes()).collect();
    let started = Instant::now();
    let result = xdp.test_run(TestRunOptions {
        data_in: Some(frame),
        ctx_in: Some(&ctx),
        repeat: frames,
        attrs: TestRunAttrs::new().xdp_live_frames(BATCH_SIZE),
        ..TestRunOptions::new()
    });
    let elapsed = started.elapsed();
    let result = result.map_err(|e| match &e {
        ProgramError::SyscallError(s) if live_frames_refused(&s.io_error) => {
            LiveError::NoLiveFrames(e)
        }
        _ => LiveError::Send(e),
    })?;
    // In live-frames mode the return value is that of the run, which
    // is 0 on success; verdicts other than XDP_TX show up as missing
    // frames on the receiver, caught by the cross-check.
    if result.return_value != 0 && result.return_value != XDP_TX {
        return Err(LiveError::NotTx(result.return_value));
    }
    // Every frame asked for is handed to the veth (the test run's repeat
    // count, cross-checked with the program's own counter).
    Ok(Sent {
        frames: frames as u64,
        elapsed,
    })
}

/// Whether a live-frames run failed because the kernel has no such mode
/// (EINVAL, EOPNOTSUPP) or refuses it (EPERM, on hardened kernels).
pub fn live_frames_refused(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | libc::EPERM)
    )
}

/// Bare XDP programs for receivers: `netbeast_floor` (XDP_DROP everything)
/// and `netbeast_redirect_floor` (every frame out of another interface).
/// Attachments last as long as this value.
pub struct BareXdp {
    ebpf: Ebpf,
    /// One loaded object per redirect floor: each has its own target in
    /// its own map (ifindexes of different namespaces can be equal).
    redirects: Vec<Ebpf>,
}

impl BareXdp {
    pub fn load() -> Result<BareXdp, LiveError> {
        let mut ebpf = EbpfLoader::new().load(OBJECT).map_err(LiveError::Load)?;
        program(&mut ebpf, FLOOR_PROGRAM)?;
        Ok(BareXdp {
            ebpf,
            redirects: Vec::new(),
        })
    }

    /// Attaches a redirect floor natively to `iface`: every frame gets
    /// `dst_mac` and `src_mac` and leaves by `out_ifindex`. The calling
    /// thread must be in the interface's network namespace.
    pub fn attach_redirect(
        &mut self,
        iface: &str,
        out_ifindex: u32,
        dst_mac: MacAddr,
        src_mac: MacAddr,
    ) -> Result<(), LiveError> {
        use netbeast_common::redirect_floor::{CONFIG_BYTES, DST_MAC, IFINDEX, SRC_MAC};
        let mut ebpf = EbpfLoader::new().load(OBJECT).map_err(LiveError::Load)?;
        let mut config = [0u8; CONFIG_BYTES];
        config[IFINDEX..IFINDEX + 4].copy_from_slice(&out_ifindex.to_le_bytes());
        config[DST_MAC..DST_MAC + 6].copy_from_slice(&dst_mac);
        config[SRC_MAC..SRC_MAC + 6].copy_from_slice(&src_mac);
        let map_err = |source| LiveError::Map {
            name: REDIRECT_FLOOR_MAP,
            source,
        };
        let mut map: Array<&mut MapData, [u8; CONFIG_BYTES]> = Array::try_from(
            ebpf.map_mut(REDIRECT_FLOOR_MAP)
                .ok_or(LiveError::MissingMap(REDIRECT_FLOOR_MAP))?,
        )
        .map_err(map_err)?;
        map.set(0, config, 0).map_err(map_err)?;
        program(&mut ebpf, REDIRECT_FLOOR_PROGRAM)?
            .attach(iface, XdpMode::Driver)
            .map_err(|source| LiveError::Attach {
                name: REDIRECT_FLOOR_PROGRAM,
                iface: iface.to_string(),
                source,
            })?;
        self.redirects.push(ebpf);
        Ok(())
    }

    /// Attaches the XDP_DROP program natively to `iface`. The calling thread
    /// must be in the interface's network namespace.
    pub fn attach_drop(&mut self, iface: &str) -> Result<(), LiveError> {
        let xdp = program(&mut self.ebpf, FLOOR_PROGRAM)?;
        xdp.attach(iface, XdpMode::Driver)
            .map_err(|source| LiveError::Attach {
                name: FLOOR_PROGRAM,
                iface: iface.to_string(),
                source,
            })?;
        Ok(())
    }
}

/// Pins the calling thread to `cpu`: the generator and the receiver's
/// softirqs then share that one core.
pub fn pin_to_cpu(cpu: usize) -> Result<(), LiveError> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: cpu_set_t is plain data; CPU_SET and sched_setaffinity get a
    // valid set; pid 0 is the calling thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= libc::CPU_SETSIZE as usize {
            -1
        } else {
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
        }
    };
    if rc != 0 {
        return Err(LiveError::Pin {
            cpu,
            last: cpus - 1,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::frames::{ipv4_checksum_ok, parse_frame};

    fn traffic(flows: u32) -> Traffic {
        Traffic::example(flows, 64)
    }

    #[test]
    fn template_has_the_asked_size_and_no_udp_checksum() {
        let t = traffic(1);
        let frame = t.template();
        assert_eq!(frame.len(), 64);
        assert_eq!(&frame[40..42], &[0, 0], "udp checksum");
        assert!(ipv4_checksum_ok(&frame[14..34]));
        parse_frame(&frame).unwrap();
    }

    /// The checksum the program computes (header sum without checksum and
    /// source, plus the source) equals a full recomputation, for every flow.
    #[test]
    fn per_flow_checksum_matches_a_full_recomputation() {
        let t = traffic(1000);
        let c = t.config();
        for f in [0, 1, 249, 250, 999] {
            let (addr, port) = t.flow_source(f);
            let a = u32::from(addr);
            let mut sum =
                c[generator::HEADER_SUM as usize] as u64 + (a >> 16) as u64 + (a & 0xffff) as u64;
            while sum >> 16 != 0 {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            let mut want = Traffic {
                first_source: addr,
                first_port: port,
                flows: 1,
                ..t.clone()
            }
            .template();
            let expected = u16::from_be_bytes([want[24], want[25]]);
            assert_eq!(!(sum as u16), expected, "flow {f}");
            want[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
            assert!(ipv4_checksum_ok(&want[14..34]));
        }
    }

    /// `--family 6`: an IPv6 UDP frame of the asked size between the
    /// addresses standing for the IPv4 ones, with a valid UDP checksum
    /// (IPv6 has no "none"); frames too short for its headers are refused.
    #[test]
    fn ipv6_template_is_an_ipv6_datagram() {
        let t = Traffic {
            ip: Ip::V6,
            ..traffic(1)
        };
        t.check().unwrap();
        let frame = t.template();
        assert_eq!(frame.len(), 64);
        assert_eq!(&frame[12..14], &[0x86, 0xdd], "ethertype");
        assert_eq!(frame[14 + 6], 17, "next header UDP");
        let src = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&frame[22..38]).unwrap());
        let dst = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&frame[38..54]).unwrap());
        assert_eq!(src.to_string(), "2001:2::c612:1");
        assert_eq!(dst.to_string(), "2001:2::c612:fe");
        let udp = &frame[54..];
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 9, "destination port");
        let mut zeroed = udp.to_vec();
        zeroed[6..8].fill(0);
        assert_eq!(
            crate::packet::ipv6_l4_checksum(src, dst, 17, &zeroed),
            u16::from_be_bytes([udp[6], udp[7]]),
            "udp checksum"
        );
        assert!(
            Traffic {
                ip: Ip::V6,
                ..traffic(generator::MAX_FLOWS)
            }
            .check()
            .is_ok()
        );
        assert!(matches!(
            Traffic {
                ip: Ip::V6,
                ..Traffic::example(1, 60)
            }
            .check(),
            Err(LiveError::Ipv6Size(60))
        ));
    }

    /// IPv6: what the program writes for flow `f` (the source's last 32
    /// bits, the port, and the UDP checksum from the configured sum, as
    /// generator.rs computes it) is the frame built for that flow from
    /// scratch, byte for byte, for frames of every parity and a sum that
    /// folds to all ones.
    #[test]
    fn per_flow_ipv6_udp_checksum_matches_a_full_recomputation() {
        for size in [62, 64, 65, 200, 1514] {
            let t = Traffic {
                ip: Ip::V6,
                ..Traffic::example(100_000, size)
            };
            let c = t.config();
            assert_eq!(c[generator::IPV6 as usize], 1);
            let mut frame = t.template();
            for f in [0, 1, 249, 250, 999, 99_999] {
                let (addr, port) = t.flow_source(f);
                let a = u32::from(addr);
                let mut sum = c[generator::HEADER_SUM as usize] as u64
                    + (a >> 16) as u64
                    + (a & 0xffff) as u64
                    + port as u64;
                while sum >> 16 != 0 {
                    sum = (sum & 0xffff) + (sum >> 16);
                }
                let udp_sum = match !(sum as u16) {
                    0 => 0xffff,
                    s => s,
                };
                frame[34..38].copy_from_slice(&a.to_be_bytes());
                frame[54..56].copy_from_slice(&port.to_be_bytes());
                frame[60..62].copy_from_slice(&udp_sum.to_be_bytes());
                let want = Traffic {
                    first_source: addr,
                    first_port: port,
                    flows: 1,
                    ..t.clone()
                }
                .template();
                assert_eq!(frame, want, "size {size}, flow {f}");
            }
        }
    }

    /// The generator copies the whole IPv6 header chain up to UDP's
    /// checksum, and only IPv4's headers for IPv4.
    #[test]
    fn the_template_words_hold_each_familys_headers() {
        let t6 = Traffic {
            ip: Ip::V6,
            ..traffic(1)
        };
        let frame = t6.template();
        let bytes: Vec<u8> = t6
            .header_words()
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        assert_eq!(&bytes[..62], &frame[..62]);
        let t4 = traffic(1);
        let bytes: Vec<u8> = t4
            .header_words()
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        assert_eq!(&bytes[..42], &t4.template()[..42]);
        assert!(bytes[42..].iter().all(|b| *b == 0));
        assert_eq!(t4.config()[generator::IPV6 as usize], 0);
    }

    #[test]
    fn flows_are_distinct_sources() {
        let t = traffic(2000);
        let mut seen = std::collections::HashSet::new();
        for f in 0..2000 {
            assert!(seen.insert(t.flow_source(f)), "flow {f} repeats a source");
        }
        assert_eq!(t.flow_source(250), (Ipv4Addr::new(198, 18, 0, 1), 1025));
    }

    #[test]
    fn limits_are_checked() {
        assert!(matches!(
            traffic(0).check(),
            Err(LiveError::TooManyFlows(0))
        ));
        assert!(traffic(generator::MAX_FLOWS).check().is_ok());
        let small = Traffic {
            size: 41,
            ..traffic(1)
        };
        assert!(matches!(small.check(), Err(LiveError::BadSize(41))));
    }
}
