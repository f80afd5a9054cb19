//! Ethernet frames, built in plain Rust.
//!
//! The program tests feed frames from [`FrameBuilder`] to the XDP program;
//! the benchmark's generator and `netbeast trace --packet` build theirs with
//! the same builder. The builder writes correct lengths and checksums unless
//! told otherwise: every field a malformed-input test needs to lie about
//! (IHL, total length, checksums, truncation) has an override, which is why
//! it is not a crate's builder (etherparse's writes only well-formed
//! headers). What comes back is read by the tests with the `etherparse`
//! crate (`tests/support/frames.rs`):
//!
//! ```
//! use std::net::Ipv4Addr;
//!
//! use etherparse::{SlicedPacket, TransportSlice};
//! use netbeast::packet::FrameBuilder;
//!
//! let frame = FrameBuilder::udp(Ipv4Addr::new(10, 0, 0, 1), 5000, Ipv4Addr::new(10, 0, 0, 2), 53)
//!     .vlan(100)
//!     .payload(b"hello")
//!     .build();
//! let parsed = SlicedPacket::from_ethernet(&frame).unwrap();
//! let Some(TransportSlice::Udp(udp)) = parsed.transport else { panic!("not udp") };
//! assert_eq!((udp.destination_port(), udp.payload()), (53, &b"hello"[..]));
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

pub type MacAddr = [u8; 6];

pub const BROADCAST_MAC: MacAddr = [0xff; 6];
/// Source MAC of built frames unless set: locally administered, unicast.
pub const DEFAULT_SRC_MAC: MacAddr = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
/// Destination MAC of built frames unless set.
pub const DEFAULT_DST_MAC: MacAddr = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];

pub const ETH_HEADER_LEN: usize = 14;
pub const VLAN_TAG_LEN: usize = 4;
pub const IPV4_HEADER_LEN: usize = 20;
/// The largest IPv4 header: IHL is four bits of 32-bit words.
pub const IPV4_MAX_HEADER_LEN: usize = 60;
pub const IPV6_HEADER_LEN: usize = 40;
pub const TCP_HEADER_LEN: usize = 20;
pub const TCP_MAX_HEADER_LEN: usize = 60;
pub const UDP_HEADER_LEN: usize = 8;
pub const ICMP_HEADER_LEN: usize = 8;
pub const ARP_LEN: usize = 28;
/// An ICMP error quotes the offending IP header and this many bytes of what
/// follows it (RFC 792), as iptables' REJECT does.
pub const ICMP_QUOTED_DATA_LEN: usize = 8;
/// TTL of built packets unless set; also what Linux puts in its replies.
pub const DEFAULT_TTL: u8 = 64;

/// IPv6 extension header types (next-header values).
pub mod ipv6_ext {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const AH: u8 = 51;
    pub const ESP: u8 = 50;
    pub const NO_NEXT: u8 = 59;
    pub const DEST_OPTS: u8 = 60;
}

/// The Internet checksum of a TCP or UDP header and payload `l4` over the
/// IPv6 pseudo-header (RFC 8200 §8.1).
pub fn ipv6_l4_checksum(src: Ipv6Addr, dst: Ipv6Addr, protocol: u8, l4: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(l4.len() as u32).to_be_bytes());
    add(&[0, 0, 0, protocol]);
    add(l4);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let sum = !(sum as u16);
    // UDP sends a zero sum as all ones.
    if sum == 0 { 0xffff } else { sum }
}

pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const IPV6: u16 = 0x86dd;
    /// 802.1Q customer tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service tag (outer tag of QinQ).
    pub const QINQ: u16 = 0x88a8;
}

pub mod ip_proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const GRE: u8 = 47;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;
}

/// SCTP chunk types the tests use (RFC 9260).
pub mod sctp_chunk {
    pub const DATA: u8 = 0;
    pub const INIT: u8 = 1;
    pub const INIT_ACK: u8 = 2;
    pub const SACK: u8 = 3;
    pub const ABORT: u8 = 6;
    pub const COOKIE_ECHO: u8 = 10;
    pub const COOKIE_ACK: u8 = 11;
    pub const SHUTDOWN_COMPLETE: u8 = 14;
    pub const PAD: u8 = 132;
}

/// One SCTP chunk: type, flags, its length field (header and `value`),
/// `value`, then zeros up to a multiple of 4 bytes.
pub fn sctp_chunk(chunk_type: u8, flags: u8, value: &[u8]) -> Vec<u8> {
    let len = u16::try_from(4 + value.len()).expect("an SCTP chunk is at most 65535 bytes");
    let mut chunk = vec![chunk_type, flags];
    chunk.extend_from_slice(&len.to_be_bytes());
    chunk.extend_from_slice(value);
    chunk.resize(chunk.len().next_multiple_of(4), 0);
    chunk
}

/// CRC32c (Castagnoli, reflected), as SCTP's checksum (RFC 9260 appendix A).
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                crc >> 1 ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// ICMPv6 types (RFC 4443, RFC 4861).
pub mod icmp6_type {
    pub const DEST_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
    pub const NEIGHBOUR_SOLICITATION: u8 = 135;
    pub const NEIGHBOUR_ADVERTISEMENT: u8 = 136;
    pub const REDIRECT: u8 = 137;
}

pub mod icmp_type {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const SOURCE_QUENCH: u8 = 4;
    pub const REDIRECT: u8 = 5;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAMETER_PROBLEM: u8 = 12;

    /// Types whose message quotes the offending datagram (RFC 1122 3.2.2).
    pub fn is_error(icmp_type: u8) -> bool {
        matches!(
            icmp_type,
            DEST_UNREACHABLE | SOURCE_QUENCH | REDIRECT | TIME_EXCEEDED | PARAMETER_PROBLEM
        )
    }
}

/// Codes of ICMP destination unreachable (type 3).
pub mod unreachable_code {
    pub const NET: u8 = 0;
    pub const HOST: u8 = 1;
    pub const PROTOCOL: u8 = 2;
    pub const PORT: u8 = 3;
    pub const NET_PROHIBITED: u8 = 9;
    pub const HOST_PROHIBITED: u8 = 10;
    /// "Communication administratively prohibited" (RFC 1812).
    pub const ADMIN_PROHIBITED: u8 = 13;
}

// ---------------------------------------------------------------------------
// Checksums

/// Sum of big-endian 16-bit words, an odd last byte padded with zero
/// (RFC 1071), not yet folded.
fn sum_words(bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(2);
    let mut sum: u64 = chunks
        .by_ref()
        .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The Internet checksum (RFC 1071) of `bytes`: what goes in a checksum field
/// that was zero while summing. Over bytes that already hold a correct
/// checksum, the result is 0.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    !fold(sum_words(bytes))
}

/// Sum of the TCP/UDP pseudo-header (RFC 793, RFC 768).
fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4_len: usize) -> u64 {
    sum_words(&src.octets()) + sum_words(&dst.octets()) + u64::from(protocol) + l4_len as u64
}

/// Checksum of a TCP or UDP segment (checksum field zeroed) over the IPv4
/// pseudo-header. For UDP a result of 0 must be sent as 0xffff, since 0 means
/// "no checksum"; [`FrameBuilder`] does that.
pub fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, segment: &[u8]) -> u16 {
    !fold(pseudo_header_sum(src, dst, protocol, segment.len()) + sum_words(segment))
}

// ---------------------------------------------------------------------------
// Builder

/// One 802.1Q/802.1ad tag: its TPID and TCI (priority, DEI, VLAN id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanTag {
    pub tpid: u16,
    pub tci: u16,
}

impl VlanTag {
    /// An 802.1Q tag with priority 0.
    pub fn dot1q(vlan_id: u16) -> Self {
        VlanTag {
            tpid: ethertype::VLAN,
            tci: vlan_id & 0x0fff,
        }
    }
    /// An 802.1ad service tag (the outer tag of QinQ) with priority 0.
    pub fn dot1ad(vlan_id: u16) -> Self {
        VlanTag {
            tpid: ethertype::QINQ,
            tci: vlan_id & 0x0fff,
        }
    }
    pub fn vlan_id(&self) -> u16 {
        self.tci & 0x0fff
    }
}

/// How a built TCP, UDP or ICMP message fills its checksum field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksum {
    Correct,
    /// 0: "no checksum" for UDP, simply wrong for TCP and ICMP.
    Zero,
    Value(u16),
    /// The correct value with some bits flipped: wrong whatever the message.
    Wrong,
    /// What a sender that leaves the checksum to transmit offload
    /// (`CHECKSUM_PARTIAL`) puts there: the pseudo-header's sum alone (TCP
    /// and UDP only; a veth peer's own sockets send these).
    Partial,
}

/// Builds one Ethernet frame. Start from the constructor of what the frame
/// carries ([`FrameBuilder::tcp`], [`FrameBuilder::udp`], ...), adjust, then
/// [`build`](FrameBuilder::build). Setters that belong to another kind of
/// frame (say `seq` on a UDP frame) panic: that is a bug in the caller.
#[derive(Clone, Debug)]
pub struct FrameBuilder {
    src_mac: MacAddr,
    dst_mac: MacAddr,
    /// Outermost first.
    vlans: Vec<VlanTag>,
    body: Body,
    truncate_to: Option<usize>,
    pad_to: Option<usize>,
}

#[derive(Clone, Debug)]
enum Body {
    Ipv4(Ipv4Spec),
    Ipv6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        /// The upper-layer protocol, after the extension headers.
        next_header: u8,
        hop_limit: u8,
        /// Extension headers in packet order: each one's type and its
        /// bytes (its first byte, the next header, is written by `build`).
        extensions: Vec<(u8, Vec<u8>)>,
        /// Overrides the payload length field (a lie, for malformed frames).
        payload_len: Option<u16>,
        payload: Vec<u8>,
    },
    Raw {
        ethertype: u16,
        payload: Vec<u8>,
    },
}

#[derive(Clone, Debug)]
struct Ipv4Spec {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    tos: u8,
    ttl: u8,
    id: u16,
    dont_fragment: bool,
    more_fragments: bool,
    /// In 8-byte units, as on the wire.
    fragment_offset: u16,
    options: Vec<u8>,
    protocol: Option<u8>,
    ihl: Option<u8>,
    total_length: Option<u16>,
    checksum: Option<u16>,
    transport: TransportSpec,
}

#[derive(Clone, Debug)]
enum TransportSpec {
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        urgent: u16,
        options: Vec<u8>,
        payload: Vec<u8>,
        checksum: Checksum,
    },
    Udp {
        sport: u16,
        dport: u16,
        length: Option<u16>,
        payload: Vec<u8>,
        checksum: Checksum,
    },
    Icmp {
        icmp_type: u8,
        code: u8,
        /// The second word: id and sequence for echo, unused or MTU for
        /// errors.
        rest: [u8; 4],
        payload: Vec<u8>,
        checksum: Checksum,
    },
    /// Anything else: the bytes after the IP header, as given.
    Raw { protocol: u8, payload: Vec<u8> },
}

impl TransportSpec {
    fn protocol(&self) -> u8 {
        match self {
            TransportSpec::Tcp { .. } => ip_proto::TCP,
            TransportSpec::Udp { .. } => ip_proto::UDP,
            TransportSpec::Icmp { .. } => ip_proto::ICMP,
            TransportSpec::Raw { protocol, .. } => *protocol,
        }
    }
}

/// Pads IP or TCP options to whole 32-bit words with End-of-Options bytes.
fn pad_options(options: &[u8]) -> Vec<u8> {
    let mut padded = options.to_vec();
    padded.resize(options.len().next_multiple_of(4), 0);
    padded
}

impl FrameBuilder {
    fn with_body(body: Body) -> Self {
        FrameBuilder {
            src_mac: DEFAULT_SRC_MAC,
            dst_mac: DEFAULT_DST_MAC,
            vlans: Vec::new(),
            body,
            truncate_to: None,
            pad_to: None,
        }
    }

    fn ipv4_with(src: Ipv4Addr, dst: Ipv4Addr, transport: TransportSpec) -> Self {
        Self::with_body(Body::Ipv4(Ipv4Spec {
            src,
            dst,
            tos: 0,
            ttl: DEFAULT_TTL,
            id: 0,
            dont_fragment: false,
            more_fragments: false,
            fragment_offset: 0,
            options: Vec::new(),
            protocol: None,
            ihl: None,
            total_length: None,
            checksum: None,
            transport,
        }))
    }

    /// A TCP SYN with sequence number 1, window 64240 and no payload.
    pub fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Self {
        Self::ipv4_with(
            src,
            dst,
            TransportSpec::Tcp {
                sport,
                dport,
                seq: 1,
                ack: 0,
                flags: tcp_flags::SYN,
                window: 64240,
                urgent: 0,
                options: Vec::new(),
                payload: Vec::new(),
                checksum: Checksum::Correct,
            },
        )
    }

    /// A UDP datagram with no payload and a correct checksum.
    pub fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Self {
        Self::ipv4_with(
            src,
            dst,
            TransportSpec::Udp {
                sport,
                dport,
                length: None,
                payload: Vec::new(),
                checksum: Checksum::Correct,
            },
        )
    }

    /// Any ICMP message; the second word is zero (see [`icmp_rest`](Self::icmp_rest)).
    pub fn icmp(src: Ipv4Addr, dst: Ipv4Addr, icmp_type: u8, code: u8) -> Self {
        Self::ipv4_with(
            src,
            dst,
            TransportSpec::Icmp {
                icmp_type,
                code,
                rest: [0; 4],
                payload: Vec::new(),
                checksum: Checksum::Correct,
            },
        )
    }

    /// An ICMP echo request (ping).
    pub fn icmp_echo_request(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16) -> Self {
        let [a, b] = id.to_be_bytes();
        let [c, d] = seq.to_be_bytes();
        Self::icmp(src, dst, icmp_type::ECHO_REQUEST, 0).icmp_rest([a, b, c, d])
    }

    /// An ICMP error about `original`, an IPv4 packet (header first, as
    /// [`build_ipv4`](Self::build_ipv4) returns): the message quotes its
    /// header and the first 8 bytes after it.
    pub fn icmp_error(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        icmp_type: u8,
        code: u8,
        original: &[u8],
    ) -> Self {
        let header_len = original
            .first()
            .map_or(IPV4_HEADER_LEN, |b| usize::from(b & 0x0f) * 4);
        let quoted = &original[..original.len().min(header_len + ICMP_QUOTED_DATA_LEN)];
        Self::icmp(src, dst, icmp_type, code).payload(quoted)
    }

    /// An SCTP packet: the common header (ports, verification tag 1, the
    /// CRC32c checksum over the packet as a receiver checks it) and then
    /// `chunks` as given (see [`sctp_chunk`]).
    pub fn sctp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, chunks: &[u8]) -> Self {
        let mut packet = Vec::with_capacity(12 + chunks.len());
        packet.extend_from_slice(&sport.to_be_bytes());
        packet.extend_from_slice(&dport.to_be_bytes());
        packet.extend_from_slice(&1u32.to_be_bytes());
        packet.extend_from_slice(&[0; 4]);
        packet.extend_from_slice(chunks);
        let sum = crc32c(&packet);
        // Sent least significant byte first (the kernel's `__le32`).
        packet[8..12].copy_from_slice(&sum.to_le_bytes());
        Self::ipv4(src, dst, ip_proto::SCTP).payload(&packet)
    }

    /// An IPv4 packet of protocol `protocol` whose payload is given raw.
    pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8) -> Self {
        Self::ipv4_with(
            src,
            dst,
            TransportSpec::Raw {
                protocol,
                payload: Vec::new(),
            },
        )
    }

    /// An IPv6 packet with the given next header and a raw payload.
    pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8) -> Self {
        Self::with_body(Body::Ipv6 {
            src,
            dst,
            next_header,
            hop_limit: DEFAULT_TTL,
            extensions: Vec::new(),
            payload_len: None,
            payload: Vec::new(),
        })
    }

    /// An IPv6 TCP SYN (20-byte header, checksum over the IPv6
    /// pseudo-header, as if there were no extension headers).
    pub fn tcp6(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> Self {
        let mut tcp = Vec::with_capacity(20);
        tcp.extend_from_slice(&sport.to_be_bytes());
        tcp.extend_from_slice(&dport.to_be_bytes());
        tcp.extend_from_slice(&1u32.to_be_bytes());
        tcp.extend_from_slice(&0u32.to_be_bytes());
        tcp.extend_from_slice(&[5 << 4, tcp_flags::SYN]);
        tcp.extend_from_slice(&64240u16.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]);
        let sum = ipv6_l4_checksum(src, dst, ip_proto::TCP, &tcp);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
        Self::ipv6(src, dst, ip_proto::TCP).payload(&tcp)
    }

    /// An IPv6 UDP datagram with no payload and a correct checksum.
    pub fn udp6(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> Self {
        let mut udp = Vec::with_capacity(8);
        udp.extend_from_slice(&sport.to_be_bytes());
        udp.extend_from_slice(&dport.to_be_bytes());
        udp.extend_from_slice(&8u16.to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        let sum = ipv6_l4_checksum(src, dst, ip_proto::UDP, &udp);
        udp[6..8].copy_from_slice(&sum.to_be_bytes());
        Self::ipv6(src, dst, ip_proto::UDP).payload(&udp)
    }

    /// An IPv6 TCP segment with these flags, sequence number and payload
    /// (20-byte header, checksum over the IPv6 pseudo-header).
    pub fn tcp6_segment(
        src: Ipv6Addr,
        sport: u16,
        dst: Ipv6Addr,
        dport: u16,
        flags: u8,
        seq: u32,
        payload: &[u8],
    ) -> Self {
        let mut tcp = Vec::with_capacity(20 + payload.len());
        tcp.extend_from_slice(&sport.to_be_bytes());
        tcp.extend_from_slice(&dport.to_be_bytes());
        tcp.extend_from_slice(&seq.to_be_bytes());
        tcp.extend_from_slice(&0u32.to_be_bytes());
        tcp.extend_from_slice(&[5 << 4, flags]);
        tcp.extend_from_slice(&64240u16.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]);
        tcp.extend_from_slice(payload);
        let sum = ipv6_l4_checksum(src, dst, ip_proto::TCP, &tcp);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
        Self::ipv6(src, dst, ip_proto::TCP).payload(&tcp)
    }

    /// An IPv6 UDP datagram carrying `payload`, with a correct checksum.
    pub fn udp6_with(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, payload: &[u8]) -> Self {
        let len = u16::try_from(8 + payload.len()).expect("UDP datagram over 65535 bytes");
        let mut udp = Vec::with_capacity(usize::from(len));
        udp.extend_from_slice(&sport.to_be_bytes());
        udp.extend_from_slice(&dport.to_be_bytes());
        udp.extend_from_slice(&len.to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(payload);
        let sum = ipv6_l4_checksum(src, dst, ip_proto::UDP, &udp);
        udp[6..8].copy_from_slice(&sum.to_be_bytes());
        Self::ipv6(src, dst, ip_proto::UDP).payload(&udp)
    }

    /// An ICMPv6 message (RFC 4443): type, code, its second word `rest`
    /// (identifier and sequence of an echo, unused or MTU or pointer of an
    /// error) and `body`, the checksum over the IPv6 pseudo-header.
    pub fn icmp6(
        src: Ipv6Addr,
        dst: Ipv6Addr,
        icmp_type: u8,
        code: u8,
        rest: [u8; 4],
        body: &[u8],
    ) -> Self {
        let mut icmp = vec![icmp_type, code, 0, 0];
        icmp.extend_from_slice(&rest);
        icmp.extend_from_slice(body);
        let sum = ipv6_l4_checksum(src, dst, ip_proto::ICMPV6, &icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        Self::ipv6(src, dst, ip_proto::ICMPV6).payload(&icmp)
    }

    /// An ICMPv6 error quoting `quoted` (an IPv6 packet, see
    /// [`build_ipv6`](Self::build_ipv6)).
    pub fn icmp6_error(
        src: Ipv6Addr,
        dst: Ipv6Addr,
        icmp_type: u8,
        code: u8,
        quoted: &[u8],
    ) -> Self {
        Self::icmp6(src, dst, icmp_type, code, [0; 4], quoted)
    }

    /// The IPv6 packet alone (no Ethernet header), e.g. to quote in
    /// [`icmp6_error`](Self::icmp6_error).
    pub fn build_ipv6(&self) -> Vec<u8> {
        assert!(
            matches!(self.body, Body::Ipv6 { .. }),
            "build_ipv6() applies to IPv6 frames only"
        );
        let frame = self.build();
        frame[ETH_HEADER_LEN + 4 * self.vlans.len()..].to_vec()
    }

    /// Appends an IPv6 extension header of type `kind` (hop-by-hop 0,
    /// routing 43, destination options 60, AH 51) of `units` length
    /// units past the first (8 bytes each; AH: 4-byte words past the first
    /// two), padded with zeros. Headers go in the order appended.
    pub fn ipv6_ext(mut self, kind: u8, units: u8) -> Self {
        let len = if kind == ipv6_ext::AH {
            (units as usize + 2) * 4
        } else {
            (units as usize + 1) * 8
        };
        let mut bytes = vec![0u8; len];
        bytes[1] = units;
        if let Body::Ipv6 { extensions, .. } = &mut self.body {
            extensions.push((kind, bytes));
        }
        self
    }

    /// Appends an IPv6 fragment header: `offset` in 8-byte units, `more`
    /// fragments following, identification 0x1234.
    pub fn ipv6_fragment(mut self, offset: u16, more: bool) -> Self {
        let mut bytes = vec![0u8; 8];
        bytes[2..4].copy_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
        bytes[4..8].copy_from_slice(&0x1234u32.to_be_bytes());
        if let Body::Ipv6 { extensions, .. } = &mut self.body {
            extensions.push((ipv6_ext::FRAGMENT, bytes));
        }
        self
    }

    /// Appends an IPv6 routing header of type `rt_type` with
    /// `segments_left`, `units` 8-byte units past the first (zeros).
    pub fn ipv6_routing(mut self, rt_type: u8, segments_left: u8, units: u8) -> Self {
        let mut bytes = vec![0u8; (units as usize + 1) * 8];
        bytes[1] = units;
        bytes[2] = rt_type;
        bytes[3] = segments_left;
        if let Body::Ipv6 { extensions, .. } = &mut self.body {
            extensions.push((ipv6_ext::ROUTING, bytes));
        }
        self
    }

    /// Writes `len` into the IPv6 payload length field, whatever follows.
    pub fn ipv6_payload_len(mut self, len: u16) -> Self {
        if let Body::Ipv6 { payload_len, .. } = &mut self.body {
            *payload_len = Some(len);
        }
        self
    }

    /// An ARP request "who has `target_ip`? tell `sender_ip`", broadcast.
    pub fn arp_request(sender_mac: MacAddr, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Self {
        let mut arp = Vec::with_capacity(ARP_LEN);
        arp.extend_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
        arp.extend_from_slice(&ethertype::IPV4.to_be_bytes());
        arp.extend_from_slice(&[6, 4]);
        arp.extend_from_slice(&1u16.to_be_bytes()); // request
        arp.extend_from_slice(&sender_mac);
        arp.extend_from_slice(&sender_ip.octets());
        arp.extend_from_slice(&[0; 6]);
        arp.extend_from_slice(&target_ip.octets());
        Self::raw(ethertype::ARP, &arp)
            .src_mac(sender_mac)
            .dst_mac(BROADCAST_MAC)
    }

    /// Any EtherType with a raw payload.
    pub fn raw(ethertype: u16, payload: &[u8]) -> Self {
        Self::with_body(Body::Raw {
            ethertype,
            payload: payload.to_vec(),
        })
    }

    // -- Ethernet ----------------------------------------------------------

    pub fn src_mac(mut self, mac: MacAddr) -> Self {
        self.src_mac = mac;
        self
    }

    pub fn dst_mac(mut self, mac: MacAddr) -> Self {
        self.dst_mac = mac;
        self
    }

    /// Adds an 802.1Q tag inside those already added (call twice for QinQ
    /// with two 802.1Q tags; see [`vlan_tag`](Self::vlan_tag) for 802.1ad).
    pub fn vlan(self, vlan_id: u16) -> Self {
        self.vlan_tag(VlanTag::dot1q(vlan_id))
    }

    /// Adds any tag inside those already added.
    pub fn vlan_tag(mut self, tag: VlanTag) -> Self {
        self.vlans.push(tag);
        self
    }

    /// Appends zero bytes after the packet (Ethernet padding, outside the IP
    /// total length) until the frame is `len` bytes: 60 makes the smallest
    /// frame Ethernet allows (64 with the FCS the NIC adds).
    pub fn pad_to(mut self, len: usize) -> Self {
        self.pad_to = Some(len);
        self
    }

    /// Cuts the finished frame to `len` bytes (no effect when shorter), after
    /// every length and checksum was computed on the whole frame.
    pub fn truncate(mut self, len: usize) -> Self {
        self.truncate_to = Some(len);
        self
    }

    // -- IPv4 --------------------------------------------------------------

    fn ipv4_spec(&mut self, setter: &str) -> &mut Ipv4Spec {
        match &mut self.body {
            Body::Ipv4(spec) => spec,
            _ => panic!("{setter}() applies to IPv4 frames only"),
        }
    }

    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ipv4_spec("ttl").ttl = ttl;
        self
    }

    /// The IPv6 hop limit.
    pub fn hop_limit(mut self, hops: u8) -> Self {
        match &mut self.body {
            Body::Ipv6 { hop_limit, .. } => *hop_limit = hops,
            _ => panic!("hop_limit() applies to IPv6 frames only"),
        }
        self
    }

    pub fn tos(mut self, tos: u8) -> Self {
        self.ipv4_spec("tos").tos = tos;
        self
    }

    pub fn ip_id(mut self, id: u16) -> Self {
        self.ipv4_spec("ip_id").id = id;
        self
    }

    pub fn dont_fragment(mut self) -> Self {
        self.ipv4_spec("dont_fragment").dont_fragment = true;
        self
    }

    pub fn more_fragments(mut self) -> Self {
        self.ipv4_spec("more_fragments").more_fragments = true;
        self
    }

    /// Fragment offset in 8-byte units (as on the wire); non-zero makes a
    /// non-first fragment. The transport header is still written, so a test
    /// can check that its bytes are not taken for ports.
    pub fn fragment_offset(mut self, units: u16) -> Self {
        assert!(
            units <= 0x1fff,
            "fragment offset {units} does not fit 13 bits"
        );
        self.ipv4_spec("fragment_offset").fragment_offset = units;
        self
    }

    /// IP options, padded with End-of-Options to whole words; IHL follows.
    pub fn ip_options(mut self, options: &[u8]) -> Self {
        let padded = pad_options(options);
        assert!(
            IPV4_HEADER_LEN + padded.len() <= IPV4_MAX_HEADER_LEN,
            "{} bytes of IP options do not fit a 60-byte header",
            padded.len()
        );
        self.ipv4_spec("ip_options").options = padded;
        self
    }

    /// Writes `protocol` in the IP header whatever the payload is.
    pub fn ip_protocol(mut self, protocol: u8) -> Self {
        self.ipv4_spec("ip_protocol").protocol = Some(protocol);
        self
    }

    /// Writes `ihl` (4 bits, in words) instead of the true header length.
    pub fn ihl(mut self, ihl: u8) -> Self {
        assert!(ihl <= 0x0f, "IHL {ihl} does not fit 4 bits");
        self.ipv4_spec("ihl").ihl = Some(ihl);
        self
    }

    /// Writes `total_length` instead of the true IP length.
    pub fn total_length(mut self, total_length: u16) -> Self {
        self.ipv4_spec("total_length").total_length = Some(total_length);
        self
    }

    /// Writes `checksum` instead of the correct IP header checksum.
    pub fn ip_checksum(mut self, checksum: u16) -> Self {
        self.ipv4_spec("ip_checksum").checksum = Some(checksum);
        self
    }

    // -- Transport ---------------------------------------------------------

    fn transport(&mut self, setter: &str) -> &mut TransportSpec {
        &mut self.ipv4_spec(setter).transport
    }

    /// The bytes after the transport header (after the IP header for raw
    /// IPv4, after the Ethernet header for raw frames, after the IPv6
    /// header for IPv6).
    pub fn payload(mut self, bytes: &[u8]) -> Self {
        let slot = match &mut self.body {
            Body::Ipv4(spec) => match &mut spec.transport {
                TransportSpec::Tcp { payload, .. }
                | TransportSpec::Udp { payload, .. }
                | TransportSpec::Icmp { payload, .. }
                | TransportSpec::Raw { payload, .. } => payload,
            },
            Body::Ipv6 { payload, .. } | Body::Raw { payload, .. } => payload,
        };
        *slot = bytes.to_vec();
        self
    }

    /// How the TCP, UDP or ICMP checksum field is filled.
    pub fn l4_checksum(mut self, value: Checksum) -> Self {
        match self.transport("l4_checksum") {
            TransportSpec::Tcp { checksum, .. }
            | TransportSpec::Udp { checksum, .. }
            | TransportSpec::Icmp { checksum, .. } => *checksum = value,
            TransportSpec::Raw { .. } => panic!("l4_checksum() applies to TCP, UDP and ICMP only"),
        }
        self
    }

    fn tcp_spec(&mut self, setter: &str) -> TcpFields<'_> {
        match self.transport(setter) {
            TransportSpec::Tcp {
                seq,
                ack,
                flags,
                window,
                urgent,
                options,
                ..
            } => TcpFields {
                seq,
                ack,
                flags,
                window,
                urgent,
                options,
            },
            _ => panic!("{setter}() applies to TCP frames only"),
        }
    }

    /// TCP flags, from [`tcp_flags`] (replaces the default SYN).
    pub fn tcp_flags(mut self, flags: u8) -> Self {
        *self.tcp_spec("tcp_flags").flags = flags;
        self
    }

    pub fn seq(mut self, seq: u32) -> Self {
        *self.tcp_spec("seq").seq = seq;
        self
    }

    /// The acknowledgment number (the ACK flag is set by `tcp_flags`).
    pub fn ack(mut self, ack: u32) -> Self {
        *self.tcp_spec("ack").ack = ack;
        self
    }

    pub fn window(mut self, window: u16) -> Self {
        *self.tcp_spec("window").window = window;
        self
    }

    pub fn urgent_pointer(mut self, urgent: u16) -> Self {
        *self.tcp_spec("urgent_pointer").urgent = urgent;
        self
    }

    /// TCP options, padded with End-of-Options to whole words; the data
    /// offset follows.
    pub fn tcp_options(mut self, options: &[u8]) -> Self {
        let padded = pad_options(options);
        assert!(
            TCP_HEADER_LEN + padded.len() <= TCP_MAX_HEADER_LEN,
            "{} bytes of TCP options do not fit a 60-byte header",
            padded.len()
        );
        *self.tcp_spec("tcp_options").options = padded;
        self
    }

    /// Writes `length` in the UDP header instead of the true length.
    pub fn udp_length(mut self, value: u16) -> Self {
        match self.transport("udp_length") {
            TransportSpec::Udp { length, .. } => *length = Some(value),
            _ => panic!("udp_length() applies to UDP frames only"),
        }
        self
    }

    /// The second word of an ICMP message (echo id and sequence, or the
    /// unused/MTU word of errors).
    pub fn icmp_rest(mut self, value: [u8; 4]) -> Self {
        match self.transport("icmp_rest") {
            TransportSpec::Icmp { rest, .. } => *rest = value,
            _ => panic!("icmp_rest() applies to ICMP frames only"),
        }
        self
    }

    // -- Output ------------------------------------------------------------

    /// The whole frame.
    pub fn build(&self) -> Vec<u8> {
        let mut frame = Vec::with_capacity(128);
        frame.extend_from_slice(&self.dst_mac);
        frame.extend_from_slice(&self.src_mac);
        for tag in &self.vlans {
            frame.extend_from_slice(&tag.tpid.to_be_bytes());
            frame.extend_from_slice(&tag.tci.to_be_bytes());
        }
        match &self.body {
            Body::Ipv4(spec) => {
                frame.extend_from_slice(&ethertype::IPV4.to_be_bytes());
                frame.extend_from_slice(&build_ipv4(spec));
            }
            Body::Ipv6 {
                src,
                dst,
                next_header,
                hop_limit,
                extensions,
                payload_len,
                payload,
            } => {
                frame.extend_from_slice(&ethertype::IPV6.to_be_bytes());
                frame.extend_from_slice(&[0x60, 0, 0, 0]);
                let ext_len: usize = extensions.iter().map(|(_, b)| b.len()).sum();
                let len = payload_len.unwrap_or_else(|| {
                    u16::try_from(ext_len + payload.len()).expect("IPv6 payload over 65535 bytes")
                });
                frame.extend_from_slice(&len.to_be_bytes());
                let first = extensions.first().map_or(*next_header, |(kind, _)| *kind);
                frame.extend_from_slice(&[first, *hop_limit]);
                frame.extend_from_slice(&src.octets());
                frame.extend_from_slice(&dst.octets());
                for (i, (_, bytes)) in extensions.iter().enumerate() {
                    let next = extensions
                        .get(i + 1)
                        .map_or(*next_header, |(kind, _)| *kind);
                    frame.push(next);
                    frame.extend_from_slice(&bytes[1..]);
                }
                frame.extend_from_slice(payload);
            }
            Body::Raw { ethertype, payload } => {
                frame.extend_from_slice(&ethertype.to_be_bytes());
                frame.extend_from_slice(payload);
            }
        }
        if let Some(len) = self.pad_to
            && frame.len() < len
        {
            frame.resize(len, 0);
        }
        if let Some(len) = self.truncate_to {
            frame.truncate(len);
        }
        frame
    }

    /// One fragment of the datagram this builder makes, as a frame: `len`
    /// bytes of what follows its IP header, from byte `offset` (a multiple
    /// of 8), with More Fragments set when `more`. The header is the
    /// datagram's with its fragment field, total length and checksum
    /// rewritten; `len` past the datagram's end is cut there. The L4
    /// checksum is the whole datagram's: several fragments reassemble into
    /// it (tiny first fragments, RFC 1858; overlaps, RFC 3128).
    pub fn fragment(&self, offset: usize, len: usize, more: bool) -> Vec<u8> {
        assert!(
            offset.is_multiple_of(8),
            "fragment offset {offset} is not a multiple of 8"
        );
        let ip = self.build_ipv4();
        let header_len = usize::from(ip[0] & 0x0f) * 4;
        let payload = &ip[header_len..];
        let from = offset.min(payload.len());
        let to = (offset + len).min(payload.len());
        let mut header = ip[..header_len].to_vec();
        let total = u16::try_from(header_len + to - from).expect("fragment over 65535 bytes");
        header[2..4].copy_from_slice(&total.to_be_bytes());
        let field = (u16::from(more) << 13) | (offset / 8) as u16;
        header[6..8].copy_from_slice(&field.to_be_bytes());
        header[10..12].copy_from_slice(&[0, 0]);
        let checksum = internet_checksum(&header);
        header[10..12].copy_from_slice(&checksum.to_be_bytes());
        let mut frame = self.build();
        frame.truncate(ETH_HEADER_LEN + 4 * self.vlans.len());
        frame.extend_from_slice(&header);
        frame.extend_from_slice(&payload[from..to]);
        frame
    }

    /// The IPv4 packet alone (no Ethernet header, no truncation), e.g. to
    /// quote in [`icmp_error`](Self::icmp_error).
    pub fn build_ipv4(&self) -> Vec<u8> {
        match &self.body {
            Body::Ipv4(spec) => build_ipv4(spec),
            _ => panic!("build_ipv4() applies to IPv4 frames only"),
        }
    }
}

struct TcpFields<'a> {
    seq: &'a mut u32,
    ack: &'a mut u32,
    flags: &'a mut u8,
    window: &'a mut u16,
    urgent: &'a mut u16,
    options: &'a mut Vec<u8>,
}

fn fill_checksum(
    bytes: &mut [u8],
    at: usize,
    rule: Checksum,
    correct: impl FnOnce(&[u8]) -> u16,
    pseudo: Option<u64>,
) {
    let value = match rule {
        Checksum::Correct => correct(bytes),
        Checksum::Zero => 0,
        Checksum::Value(v) => v,
        Checksum::Wrong => correct(bytes) ^ 0x0f0f,
        Checksum::Partial => {
            fold(pseudo.expect("a partial checksum needs a pseudo-header (TCP or UDP)"))
        }
    };
    bytes[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

fn build_transport(spec: &Ipv4Spec) -> Vec<u8> {
    let (src, dst) = (spec.src, spec.dst);
    match &spec.transport {
        TransportSpec::Tcp {
            sport,
            dport,
            seq,
            ack,
            flags,
            window,
            urgent,
            options,
            payload,
            checksum,
        } => {
            let header_len = TCP_HEADER_LEN + options.len();
            let mut seg = Vec::with_capacity(header_len + payload.len());
            seg.extend_from_slice(&sport.to_be_bytes());
            seg.extend_from_slice(&dport.to_be_bytes());
            seg.extend_from_slice(&seq.to_be_bytes());
            seg.extend_from_slice(&ack.to_be_bytes());
            seg.push(((header_len / 4) as u8) << 4);
            seg.push(*flags);
            seg.extend_from_slice(&window.to_be_bytes());
            seg.extend_from_slice(&[0, 0]);
            seg.extend_from_slice(&urgent.to_be_bytes());
            seg.extend_from_slice(options);
            seg.extend_from_slice(payload);
            let pseudo = pseudo_header_sum(src, dst, ip_proto::TCP, seg.len());
            fill_checksum(
                &mut seg,
                16,
                *checksum,
                |s| l4_checksum(src, dst, ip_proto::TCP, s),
                Some(pseudo),
            );
            seg
        }
        TransportSpec::Udp {
            sport,
            dport,
            length,
            payload,
            checksum,
        } => {
            let true_len = u16::try_from(UDP_HEADER_LEN + payload.len())
                .expect("UDP datagram over 65535 bytes");
            let mut seg = Vec::with_capacity(usize::from(true_len));
            seg.extend_from_slice(&sport.to_be_bytes());
            seg.extend_from_slice(&dport.to_be_bytes());
            seg.extend_from_slice(&length.unwrap_or(true_len).to_be_bytes());
            seg.extend_from_slice(&[0, 0]);
            seg.extend_from_slice(payload);
            let pseudo = pseudo_header_sum(src, dst, ip_proto::UDP, seg.len());
            fill_checksum(
                &mut seg,
                6,
                *checksum,
                |s| {
                    match l4_checksum(src, dst, ip_proto::UDP, s) {
                        // 0 on the wire means "no checksum" (RFC 768).
                        0 => 0xffff,
                        sum => sum,
                    }
                },
                Some(pseudo),
            );
            seg
        }
        TransportSpec::Icmp {
            icmp_type,
            code,
            rest,
            payload,
            checksum,
        } => {
            let mut msg = Vec::with_capacity(ICMP_HEADER_LEN + payload.len());
            msg.extend_from_slice(&[*icmp_type, *code, 0, 0]);
            msg.extend_from_slice(rest);
            msg.extend_from_slice(payload);
            fill_checksum(&mut msg, 2, *checksum, internet_checksum, None);
            msg
        }
        TransportSpec::Raw { payload, .. } => payload.clone(),
    }
}

fn build_ipv4(spec: &Ipv4Spec) -> Vec<u8> {
    let l4 = build_transport(spec);
    let header_len = IPV4_HEADER_LEN + spec.options.len();
    let true_total = u16::try_from(header_len + l4.len()).expect("IPv4 packet over 65535 bytes");
    let ihl = spec.ihl.unwrap_or((header_len / 4) as u8);
    let flags_fragment = (u16::from(spec.dont_fragment) << 14)
        | (u16::from(spec.more_fragments) << 13)
        | spec.fragment_offset;
    let mut ip = Vec::with_capacity(usize::from(true_total));
    ip.push(0x40 | ihl);
    ip.push(spec.tos);
    ip.extend_from_slice(&spec.total_length.unwrap_or(true_total).to_be_bytes());
    ip.extend_from_slice(&spec.id.to_be_bytes());
    ip.extend_from_slice(&flags_fragment.to_be_bytes());
    ip.push(spec.ttl);
    ip.push(spec.protocol.unwrap_or_else(|| spec.transport.protocol()));
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(&spec.src.octets());
    ip.extend_from_slice(&spec.dst.octets());
    ip.extend_from_slice(&spec.options);
    // Over the header as written, whatever IHL claims.
    let checksum = spec.checksum.unwrap_or_else(|| internet_checksum(&ip));
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    ip.extend_from_slice(&l4);
    ip
}

// ---------------------------------------------------------------------------
// Floods

/// Distinct spoofed sources of [`spoofed_syns`]: hosts .10 to .249 of the
/// target's /24.
pub const SPOOFED_SOURCES: usize = 240;

/// `count` SYNs of a flood from spoofed sources of `target`'s /24 (hosts
/// .10 to .249, a new source port each round of them) to `target:port`,
/// with the options Linux sends (MSS 1460, SACK permitted, timestamps,
/// window shift 7), between the given MAC addresses.
pub fn spoofed_syns(
    count: usize,
    target: Ipv4Addr,
    port: u16,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
) -> Vec<Vec<u8>> {
    let [a, b, c, _] = target.octets();
    (0..count)
        .map(|i| {
            let source = Ipv4Addr::new(a, b, c, 10 + (i % SPOOFED_SOURCES) as u8);
            let sport = 1024 + ((i / SPOOFED_SOURCES) * 7 % 60_000) as u16;
            FrameBuilder::tcp(source, sport, target, port)
                .seq(0x1000_0000u32.wrapping_mul(i as u32 + 1))
                .tcp_options(&[2, 4, 0x05, 0xb4, 4, 2, 1, 3, 3, 7])
                .src_mac(src_mac)
                .dst_mac(dst_mac)
                .build()
        })
        .collect()
}

/// `aa:bb:cc:dd:ee:ff`, as iptables prints MAC addresses.
pub fn format_mac(mac: &MacAddr) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The tests' frame reader (etherparse), for the builder's round trips.
#[cfg(test)]
#[path = "../../tests/support/frames.rs"]
pub mod frames;

#[cfg(test)]
mod tests {
    use super::{frames::*, *};

    fn be16(bytes: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([bytes[at], bytes[at + 1]])
    }

    const A: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 199);

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    #[test]
    fn rfc1071_example_sum() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum_words(&bytes)), 0xddf2);
        assert_eq!(internet_checksum(&bytes), !0xddf2);
        // An odd length pads with a zero byte on the right.
        assert_eq!(fold(sum_words(&[0x12, 0x34, 0x56])), 0x6834);
    }

    #[test]
    fn known_ipv4_header_checksum() {
        // The classic example header (UDP, 192.168.0.1 → 192.168.0.199),
        // checksum b861.
        let header = hex("4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7");
        assert!(ipv4_checksum_ok(&header));
        let mut zeroed = header.clone();
        zeroed[10..12].fill(0);
        assert_eq!(internet_checksum(&zeroed), 0xb861);
        let built = FrameBuilder::ipv4(A, B, ip_proto::UDP)
            .dont_fragment()
            .payload(&[0; 0x73 - 20])
            .build_ipv4();
        assert_eq!(built[..20], header[..]);
        let mut wrong = header.clone();
        wrong[8] = 0x3f; // TTL changed, checksum not
        assert!(!ipv4_checksum_ok(&wrong));
        assert!(!ipv4_checksum_ok(&header[..19]));
    }

    // Frames whose checksums `tcpdump -vv` (which verifies IP, TCP, UDP and
    // ICMP checksums) reported correct, cross-checked with a separate Python
    // implementation; hex as `tcpdump -xx` printed them.
    const TCP_SYN_VECTOR: &str = "0200 0000 0002 0200 0000 0001 0800 4500
        002c 1234 4000 4006 1496 0a00 0001 0a00 0002 d431 0016
        0000 03e8 0000 0000 6002 faf0 b103 0000 0204 05b4";
    const UDP_VECTOR: &str = "0200 0000 0002 0200 0000 0001 0800 4500
        0021 0000 0000 4011 66ca 0a00 0001 0a00 0002 1388 0035
        000d 9442 6865 6c6c 6f";
    const ICMP_ECHO_VECTOR: &str = "0200 0000 0002 0200 0000 0001 0800 4500
        0020 0000 0000 4001 66db 0a00 0001 0a00 0002 0800 18ec
        0042 0001 7069 6e67";

    const X: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const Y: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    #[test]
    fn builder_matches_verified_vectors() {
        let syn = FrameBuilder::tcp(X, 54321, Y, 22)
            .ip_id(0x1234)
            .dont_fragment()
            .seq(1000)
            .tcp_options(&[2, 4, 0x05, 0xb4])
            .build();
        assert_eq!(syn, hex(TCP_SYN_VECTOR));
        let udp = FrameBuilder::udp(X, 5000, Y, 53).payload(b"hello").build();
        assert_eq!(udp, hex(UDP_VECTOR));
        let echo = FrameBuilder::icmp_echo_request(X, Y, 0x42, 1)
            .payload(b"ping")
            .build();
        assert_eq!(echo, hex(ICMP_ECHO_VECTOR));
        for frame in [&syn, &udp, &echo] {
            assert!(ipv4_checksum_ok(&frame[ETH_HEADER_LEN..]));
            assert!(l4_checksum_ok(&frame[ETH_HEADER_LEN..]));
        }
    }

    #[test]
    fn corrupted_l4_checksums_are_caught() {
        for frame in [hex(TCP_SYN_VECTOR), hex(UDP_VECTOR), hex(ICMP_ECHO_VECTOR)] {
            let ip = &frame[ETH_HEADER_LEN..];
            for at in 20..ip.len() {
                let mut bad = ip.to_vec();
                bad[at] ^= 0x01;
                assert!(!l4_checksum_ok(&bad), "flipping byte {at} went unnoticed");
            }
            // The pseudo-header covers the addresses (not ICMP's).
            let mut moved = ip.to_vec();
            moved[19] ^= 0x01;
            assert_eq!(l4_checksum_ok(&moved), ip[9] == ip_proto::ICMP);
        }
    }

    #[test]
    fn udp_checksum_zero_means_none_and_zero_sum_is_sent_as_ffff() {
        let frame = FrameBuilder::udp(X, 1, Y, 2)
            .l4_checksum(Checksum::Zero)
            .payload(b"abc")
            .build();
        let parsed = parse_frame(&frame).unwrap();
        let Transport::Udp(udp) = &parsed.ipv4().unwrap().transport else {
            panic!("not udp")
        };
        assert_eq!(udp.checksum, 0);
        assert!(udp.checksum_ok);
        // A payload word equal to the probe's checksum `!S` makes the folded
        // sum S + !S = 0xffff, so the complement is 0 and must go out as
        // 0xffff.
        let probe = FrameBuilder::udp(X, 1, Y, 2).payload(&[0, 0]).build_ipv4();
        let fix = be16(&probe, 26).to_be_bytes();
        let zero_sum = FrameBuilder::udp(X, 1, Y, 2).payload(&fix).build_ipv4();
        assert_eq!(be16(&zero_sum, 26), 0xffff);
        assert!(l4_checksum_ok(&zero_sum));
    }

    #[test]
    fn tcp_round_trip() {
        let frame = FrameBuilder::tcp(A, 40000, B, 443)
            .src_mac([0xaa, 0xbb, 0xcc, 0, 0, 1])
            .dst_mac([0xaa, 0xbb, 0xcc, 0, 0, 2])
            .vlan(10)
            .vlan(20)
            .ttl(17)
            .tos(0x10)
            .ip_id(777)
            .ip_options(&[0x94, 0x04, 0, 0]) // router alert
            .tcp_flags(tcp_flags::PSH | tcp_flags::ACK)
            .seq(0xdead_beef)
            .ack(0x0102_0304)
            .window(1000)
            .tcp_options(&[1, 1, 1]) // NOPs, padded to a word
            .payload(b"GET / HTTP/1.0\r\n\r\n")
            .build();
        let f = parse_frame(&frame).unwrap();
        assert_eq!(f.src_mac, [0xaa, 0xbb, 0xcc, 0, 0, 1]);
        assert_eq!(f.dst_mac, [0xaa, 0xbb, 0xcc, 0, 0, 2]);
        assert_eq!(f.vlan_ids(), vec![10, 20]);
        assert_eq!(f.ethertype, ethertype::IPV4);
        assert_eq!(f.l3_offset, 22);
        let ip = f.ipv4().unwrap();
        let h = &ip.header;
        assert_eq!(
            (h.ihl, h.tos, h.ttl, h.id, h.protocol),
            (6, 0x10, 17, 777, ip_proto::TCP)
        );
        assert_eq!((h.src, h.dst), (A, B));
        assert_eq!(h.options, vec![0x94, 0x04, 0, 0]);
        assert_eq!(usize::from(h.total_length), 24 + 24 + 18);
        assert!(h.checksum_ok);
        assert!(ip.trailer.is_empty());
        let Transport::Tcp(tcp) = &ip.transport else {
            panic!("not tcp")
        };
        assert_eq!((tcp.sport, tcp.dport), (40000, 443));
        assert_eq!((tcp.seq, tcp.ack), (0xdead_beef, 0x0102_0304));
        assert_eq!(tcp.flags, tcp_flags::PSH | tcp_flags::ACK);
        assert_eq!((tcp.data_offset, tcp.window), (6, 1000));
        assert_eq!(tcp.options, vec![1, 1, 1, 0]);
        assert_eq!(tcp.payload, b"GET / HTTP/1.0\r\n\r\n");
        assert!(tcp.checksum_ok);
    }

    #[test]
    fn icmp_error_quotes_header_and_eight_bytes() {
        let original = FrameBuilder::udp(A, 1234, B, 53)
            .payload(&[7; 100])
            .ip_id(99);
        let original_ip = original.build_ipv4();
        let frame = FrameBuilder::icmp_error(
            B,
            A,
            icmp_type::DEST_UNREACHABLE,
            unreachable_code::PORT,
            &original_ip,
        )
        .build();
        let f = parse_frame(&frame).unwrap();
        let ip = f.ipv4().unwrap();
        assert!(ip.header.checksum_ok);
        let Transport::Icmp(icmp) = &ip.transport else {
            panic!("not icmp")
        };
        assert_eq!((icmp.icmp_type, icmp.code), (3, 3));
        assert!(icmp.checksum_ok);
        assert_eq!(icmp.payload, original_ip[..28]);
        let quoted = icmp.quoted.as_ref().unwrap();
        assert_eq!(
            (quoted.header.src, quoted.header.dst, quoted.header.id),
            (A, B, 99)
        );
        assert_eq!(usize::from(quoted.header.total_length), 20 + 8 + 100);
        assert!(quoted.header.checksum_ok);
        assert_eq!(quoted.data, original_ip[20..28]);
        assert_eq!(quoted.raw, original_ip[..28]);
    }

    #[test]
    fn echo_round_trip() {
        let frame = FrameBuilder::icmp_echo_request(A, B, 0x1234, 7)
            .payload(&[1, 2, 3])
            .build();
        let f = parse_frame(&frame).unwrap();
        let Transport::Icmp(icmp) = &f.ipv4().unwrap().transport else {
            panic!("not icmp")
        };
        assert_eq!((icmp.icmp_type, icmp.code), (icmp_type::ECHO_REQUEST, 0));
        assert_eq!(icmp.rest, [0x12, 0x34, 0, 7]);
        assert_eq!(icmp.payload, vec![1, 2, 3]);
        assert!(icmp.quoted.is_none());
        assert!(icmp.checksum_ok);
    }

    #[test]
    fn fragments() {
        let later = FrameBuilder::udp(A, 1, B, 22)
            .more_fragments()
            .fragment_offset(185)
            .ip_id(5)
            .build();
        let f = parse_frame(&later).unwrap();
        let ip = f.ipv4().unwrap();
        assert!(ip.header.is_later_fragment());
        assert!(ip.header.more_fragments && !ip.header.dont_fragment);
        assert_eq!(ip.header.fragment_offset, 185);
        // The would-be UDP header is plain data in a later fragment.
        assert_eq!(ip.transport, Transport::Fragment(later[34..].to_vec()));
        assert!(!l4_checksum_ok(&later[ETH_HEADER_LEN..]));
        assert_eq!(be16(&later, 20), 0x2000 | 185);
        let first = FrameBuilder::udp(A, 1, B, 22).more_fragments().build();
        let f = parse_frame(&first).unwrap();
        let Transport::Udp(udp) = &f.ipv4().unwrap().transport else {
            panic!("first fragment has its header")
        };
        assert_eq!(udp.dport, 22);
        assert!(
            !udp.checksum_ok,
            "a first fragment's checksum cannot be checked"
        );
    }

    #[test]
    fn overrides_write_lies_and_parser_reports_them() {
        let base = || FrameBuilder::udp(A, 1, B, 2).payload(&[0; 10]);
        let short_ihl = base().ihl(4).build();
        assert_eq!(short_ihl[14], 0x44);
        assert_eq!(parse_frame(&short_ihl), Err(PacketError::IhlTooSmall(4)));
        // Checksum stays correct over the header as written, so the IHL
        // lie is the only thing wrong with it.
        assert!(ipv4_checksum_ok(&base().ihl(5).build()[14..]));

        let long_ihl = base().ihl(15).truncate(14 + 40).build();
        assert!(matches!(
            parse_frame(&long_ihl),
            Err(PacketError::Truncated { .. })
        ));

        let too_long = base().total_length(1000).build();
        assert_eq!(be16(&too_long, 16), 1000);
        assert!(
            ipv4_checksum_ok(&too_long[14..]),
            "checksum follows the written length"
        );
        assert!(matches!(
            parse_frame(&too_long),
            Err(PacketError::Truncated { needed: 1000, .. })
        ));

        let too_short = base().total_length(12).build();
        assert!(matches!(
            parse_frame(&too_short),
            Err(PacketError::TotalLengthTooSmall {
                total_length: 12,
                ..
            })
        ));

        let bad_sum = base().ip_checksum(0xbeef).build();
        let f = parse_frame(&bad_sum).unwrap();
        assert_eq!(f.ipv4().unwrap().header.checksum, 0xbeef);
        assert!(!f.ipv4().unwrap().header.checksum_ok);

        let cut = base().truncate(10).build();
        assert_eq!(cut.len(), 10);
        assert!(matches!(
            parse_frame(&cut),
            Err(PacketError::Truncated { .. })
        ));

        let tcp_cut = FrameBuilder::tcp(A, 1, B, 2)
            .truncate(14 + 20 + 10)
            .total_length(30)
            .build();
        assert!(matches!(
            parse_frame(&tcp_cut),
            Err(PacketError::Truncated {
                what: "TCP header",
                ..
            })
        ));

        let proto = FrameBuilder::udp(A, 1, B, 2)
            .ip_protocol(ip_proto::GRE)
            .build();
        let f = parse_frame(&proto).unwrap();
        assert!(matches!(f.ipv4().unwrap().transport, Transport::Other(_)));

        let wrong_udp = FrameBuilder::udp(A, 1, B, 2)
            .l4_checksum(Checksum::Value(0x1234))
            .build();
        let f = parse_frame(&wrong_udp).unwrap();
        let Transport::Udp(udp) = &f.ipv4().unwrap().transport else {
            panic!("not udp")
        };
        assert_eq!(udp.checksum, 0x1234);
        assert!(!udp.checksum_ok);
    }

    #[test]
    fn padding_is_a_trailer() {
        assert_eq!(FrameBuilder::udp(A, 1, B, 2).build().len(), 42);
        let frame = FrameBuilder::udp(A, 1, B, 2).pad_to(60).build();
        assert_eq!(frame.len(), 60);
        assert_eq!(
            FrameBuilder::udp(A, 1, B, 2)
                .payload(&[0; 30])
                .pad_to(60)
                .build()
                .len(),
            72
        );
        let f = parse_frame(&frame).unwrap();
        let ip = f.ipv4().unwrap();
        assert_eq!(ip.trailer, vec![0; 18]);
        let Transport::Udp(udp) = &ip.transport else {
            panic!("not udp")
        };
        assert!(udp.checksum_ok && udp.payload.is_empty());
    }

    #[test]
    fn ipv6_arp_and_raw() {
        let v6 = FrameBuilder::ipv6(
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
            ip_proto::ICMPV6,
        )
        .payload(&[128, 0, 0, 0])
        .vlan(3)
        .build();
        let f = parse_frame(&v6).unwrap();
        assert_eq!(f.ethertype, ethertype::IPV6);
        assert_eq!(f.vlan_ids(), vec![3]);
        let Network::Other(bytes) = &f.network else {
            panic!("ipv6 is not parsed further")
        };
        assert_eq!(bytes.len(), 44);
        assert_eq!(bytes[0] >> 4, 6);
        assert_eq!(be16(bytes, 4), 4);
        assert_eq!(bytes[6], ip_proto::ICMPV6);

        let mac = [2, 0, 0, 0, 0, 9];
        let arp = FrameBuilder::arp_request(mac, A, B).build();
        assert_eq!(arp.len(), ETH_HEADER_LEN + ARP_LEN);
        let f = parse_frame(&arp).unwrap();
        assert_eq!(
            (f.dst_mac, f.src_mac, f.ethertype),
            (BROADCAST_MAC, mac, ethertype::ARP)
        );
        let Network::Other(bytes) = &f.network else {
            panic!("arp is not parsed further")
        };
        assert_eq!(bytes[..8], [0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(bytes[8..14], mac);
        assert_eq!(bytes[14..18], A.octets());
        assert_eq!(bytes[24..28], B.octets());
    }

    #[test]
    fn qinq_tags() {
        let frame = FrameBuilder::udp(A, 1, B, 2)
            .vlan_tag(VlanTag::dot1ad(100))
            .vlan_tag(VlanTag {
                tpid: ethertype::VLAN,
                tci: (5 << 13) | 200,
            })
            .build();
        assert_eq!(
            frame[12..20],
            [0x88, 0xa8, 0x00, 100, 0x81, 0x00, 0xa0, 200]
        );
        let f = parse_frame(&frame).unwrap();
        assert_eq!(f.vlan_ids(), vec![100, 200]);
        assert_eq!(f.vlans[1].tci >> 13, 5);
        assert!(f.ipv4().is_some());
    }

    #[test]
    #[should_panic(expected = "seq() applies to TCP frames only")]
    fn wrong_setter_panics() {
        let _ = FrameBuilder::udp(A, 1, B, 2).seq(5);
    }

    #[test]
    fn mac_format() {
        assert_eq!(
            format_mac(&[0, 0x1b, 0x21, 0xab, 0xcd, 0xef]),
            "00:1b:21:ab:cd:ef"
        );
    }
}
