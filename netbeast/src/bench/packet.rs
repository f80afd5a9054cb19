//! The AF_PACKET generator (`--generator packet`): for kernels that refuse
//! XDP live frames (`BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`
//! answers EPERM on some hardened kernels, this machine's among them).
//!
//! It sends the same frames as the XDP generators — the template, each
//! frame rewritten for its flow exactly as `netbeast_generator` and
//! `netbeast_syn_generator` do (`Rewrite`, checked against the programs in
//! `tests/bench.rs`) — in batches of `sendmmsg` on a raw packet socket
//! bound to the veth, with `PACKET_QDISC_BYPASS` (straight to the device's
//! `ndo_start_xmit`, as pktgen). The receiver's softirq runs on the sending
//! core after each frame, so one pinned core carries both, as with live
//! frames; what it costs more is the system call and the socket buffer of
//! every frame, which the receiver then turns into an XDP buffer: rates
//! are lower than with live frames, for every data plane alike.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use netbeast_common::generator::{
    self, ADDRESSES, FIRST_PORT, FIRST_SOURCE, FLOWS, HEADER_SUM, IP_CHECKSUM, IP_SOURCE,
    IP6_SOURCE_LOW, IPV6, TCP_CHECKSUM, TCP_SOURCE_PORT, TCP_SUM, UDP_SOURCE_PORT, UDP6_CHECKSUM,
    UDP6_SOURCE_PORT,
};

use super::generator::Sent;

/// Frames per `sendmmsg` call.
pub const BATCH: usize = 64;

/// How a frame differs from the template: the per-flow fields the XDP
/// generators write, with the configuration array they read.
#[derive(Clone, Debug)]
pub enum Rewrite {
    /// `netbeast_generator`: UDP over IPv4 or IPv6 (`generator::IPV6`).
    Udp([u32; generator::CONFIG_ENTRIES as usize]),
    /// `netbeast_syn_generator`: TCP SYNs over IPv4.
    Syn([u32; generator::SYN_CONFIG_ENTRIES as usize]),
}

/// A one's-complement sum folded to 16 bits (csum.rs's `fold`).
fn fold(mut sum: u64) -> u16 {
    for _ in 0..3 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn put16(frame: &mut [u8], at: usize, v: u16) {
    frame[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn put32(frame: &mut [u8], at: usize, v: u32) {
    frame[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

impl Rewrite {
    /// Makes the template copy `frame` into frame number `n` (from 0), as
    /// the generator program makes its `n`th frame.
    pub fn apply(&self, frame: &mut [u8], n: u64) {
        let c: &[u32] = match self {
            Rewrite::Udp(c) => c,
            Rewrite::Syn(c) => c,
        };
        let flows = c[FLOWS as usize];
        if matches!(self, Rewrite::Udp(_)) && flows <= 1 {
            return;
        }
        let flow = (n % u64::from(flows.max(1))) as u32;
        let source = c[FIRST_SOURCE as usize] + flow % ADDRESSES;
        let port = c[FIRST_PORT as usize] + flow / ADDRESSES;
        let source_sum = u64::from(source >> 16) + u64::from(source & 0xffff);
        let sum = u64::from(c[HEADER_SUM as usize]) + source_sum;
        match self {
            Rewrite::Udp(c) if c[IPV6 as usize] != 0 => {
                let udp = !fold(sum + u64::from(port & 0xffff));
                put32(frame, IP6_SOURCE_LOW, source);
                put16(frame, UDP6_SOURCE_PORT, port as u16);
                put16(frame, UDP6_CHECKSUM, if udp == 0 { 0xffff } else { udp });
            }
            Rewrite::Udp(_) => {
                put32(frame, IP_SOURCE, source);
                put16(frame, IP_CHECKSUM, !fold(sum));
                put16(frame, UDP_SOURCE_PORT, port as u16);
            }
            Rewrite::Syn(c) => {
                let tcp = u64::from(c[TCP_SUM as usize]) + source_sum + u64::from(port & 0xffff);
                put32(frame, IP_SOURCE, source);
                put16(frame, IP_CHECKSUM, !fold(sum));
                put16(frame, TCP_SOURCE_PORT, port as u16);
                put16(frame, TCP_CHECKSUM, !fold(tcp));
            }
        }
    }
}

/// A raw packet socket bound to one device, and what it sends.
pub struct PacketFrames {
    socket: Option<OwnedFd>,
    template: Vec<u8>,
    rewrite: Rewrite,
    /// Frames made so far: the next frame's number.
    made: u64,
    /// Frames the device was handed (taken or refused), all runs; read by
    /// other threads while a run goes on.
    handed: Arc<AtomicU64>,
}

impl Default for PacketFrames {
    fn default() -> Self {
        PacketFrames {
            socket: None,
            template: Vec::new(),
            rewrite: Rewrite::Udp([0; generator::CONFIG_ENTRIES as usize]),
            made: 0,
            handed: Arc::default(),
        }
    }
}

impl PacketFrames {
    /// Sends `template`, rewritten per frame by `rewrite`, out of
    /// `ifindex` from now on. Call it on a thread in the device's
    /// namespace: the socket belongs to the namespace it is made in.
    pub fn configure(
        &mut self,
        template: Vec<u8>,
        rewrite: Rewrite,
        ifindex: u32,
    ) -> io::Result<()> {
        // Protocol 0: the socket receives nothing, it only sends.
        // SAFETY: plain system calls; the fd is owned at once.
        let socket = unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            OwnedFd::from_raw_fd(fd)
        };
        let one: libc::c_int = 1;
        // SAFETY: an int option of the right size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: sockaddr_ll is plain data; zero is a valid start.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: a sockaddr_ll of its own size.
        let rc = unsafe {
            libc::bind(
                socket.as_raw_fd(),
                &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        self.socket = Some(socket);
        self.template = template;
        self.rewrite = rewrite;
        Ok(())
    }

    /// The counter of frames handed to the device, all runs.
    pub fn handed(&self) -> Arc<AtomicU64> {
        self.handed.clone()
    }

    /// Frames made so far, all runs.
    pub fn made(&self) -> u64 {
        self.made
    }

    /// Sends `frames` frames. A frame the device refuses (its peer's ring
    /// full: `ENOBUFS`) counts as handed, as the device counts it dropped.
    pub fn send(&mut self, frames: u32) -> io::Result<Sent> {
        let Some(socket) = &self.socket else {
            return Err(io::Error::other("the packet generator is not configured"));
        };
        let size = self.template.len();
        let mut buffer: Vec<u8> = self.template.repeat(BATCH);
        let mut iovecs: Vec<libc::iovec> = buffer
            .chunks_mut(size)
            .map(|f| libc::iovec {
                iov_base: f.as_mut_ptr() as *mut libc::c_void,
                iov_len: size,
            })
            .collect();
        // SAFETY: mmsghdr is plain data; each points at its own iovec.
        let mut messages: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .map(|iov| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = iov as *mut libc::iovec;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let started = Instant::now();
        let mut left = frames as usize;
        while left > 0 {
            let batch = left.min(BATCH);
            for (i, frame) in buffer.chunks_mut(size).take(batch).enumerate() {
                self.rewrite.apply(frame, self.made + i as u64);
            }
            let mut done = 0;
            while done < batch {
                // SAFETY: `batch - done` messages from `done` on, each with
                // one iovec into `buffer`, alive for the call.
                let n = unsafe {
                    libc::sendmmsg(
                        socket.as_raw_fd(),
                        messages[done..].as_mut_ptr(),
                        (batch - done) as u32,
                        0,
                    )
                };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    match e.raw_os_error() {
                        // Handed and refused (counted in tx_dropped).
                        Some(libc::ENOBUFS) => done += 1,
                        Some(libc::EINTR) => {}
                        _ => return Err(e),
                    }
                } else {
                    done += n as usize;
                }
            }
            self.made += batch as u64;
            self.handed.fetch_add(batch as u64, Ordering::Relaxed);
            left -= batch;
        }
        Ok(Sent {
            frames: frames as u64,
            elapsed: started.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::{
        bench::{live::Traffic, planes::Ip},
        packet::{internet_checksum, ipv6_l4_checksum, l4_checksum},
    };

    /// Every rewritten frame has its flow's source and valid checksums;
    /// with one flow the template goes out as it is. (That the frames are
    /// the XDP generator's own: `tests/bench.rs`.)
    #[test]
    fn rewritten_frames_have_their_flows_and_valid_checksums() {
        for ip in [Ip::V4, Ip::V6] {
            let mut traffic = Traffic::example(1000, 80);
            traffic.ip = ip;
            let template = traffic.template();
            let rewrite = Rewrite::Udp(traffic.config());
            for n in [0u64, 1, 249, 250, 999, 1000, 123_456] {
                let mut frame = template.clone();
                rewrite.apply(&mut frame, n);
                let (addr, port) = traffic.flow_source((n % 1000) as u32);
                match traffic.ip.addr(addr) {
                    IpAddr::V4(a) => {
                        assert_eq!(frame[26..30], a.octets());
                        assert_eq!(frame[34..36], port.to_be_bytes());
                        assert_eq!(internet_checksum(&frame[14..34]), 0, "frame {n}");
                    }
                    IpAddr::V6(a) => {
                        assert_eq!(frame[22..38], a.octets());
                        assert_eq!(frame[54..56], port.to_be_bytes());
                        let dst: [u8; 16] = frame[38..54].try_into().unwrap();
                        let mut udp = frame[54..].to_vec();
                        let sent = u16::from_be_bytes([udp[6], udp[7]]);
                        udp[6..8].fill(0);
                        let sum = ipv6_l4_checksum(a, dst.into(), 17, &udp);
                        assert_eq!(sum, sent, "frame {n}");
                    }
                }
            }
            let mut one = traffic.clone();
            one.flows = 1;
            let mut frame = template.clone();
            Rewrite::Udp(one.config()).apply(&mut frame, 7);
            assert_eq!(
                frame,
                one.template(),
                "one flow sends the template as it is"
            );
        }
    }

    /// The SYN generator's frames: each flow's source, valid IPv4 and TCP
    /// checksums.
    #[test]
    fn rewritten_syns_have_valid_checksums() {
        let dst = Ipv4Addr::new(10, 0, 0, 2);
        let (template, config) = crate::bench::synflood::template(dst);
        let rewrite = Rewrite::Syn(config);
        for n in [0u64, 1, 250, 4_000, 1_000_000] {
            let mut frame = template.clone();
            rewrite.apply(&mut frame, n);
            assert_eq!(internet_checksum(&frame[14..34]), 0, "frame {n}");
            let src = Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]);
            let mut tcp = frame[34..].to_vec();
            let sent = u16::from_be_bytes([tcp[16], tcp[17]]);
            tcp[16..18].fill(0);
            assert_eq!(l4_checksum(src, dst, 6, &tcp), sent, "frame {n}");
        }
    }
}
