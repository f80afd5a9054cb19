//! Frames taken apart for the tests' checks, on the `etherparse` crate.
//!
//! [`netbeast::packet::FrameBuilder`] writes the frames the tests send
//! (lies included); this module reads what comes back. Headers are read by
//! etherparse's slices and checksums summed by its `Sum16BitWords`, so a
//! mistake in the builder's own checksum code cannot hide behind the same
//! mistake in the check. The owned types below are what the tests compare
//! and match on.
//!
//! Included with `#[path = "support/frames.rs"] mod frames;` by the
//! integration tests, and by the library's own unit tests (the builder's
//! round trips) through `netbeast::packet::frames`.
#![allow(dead_code)]

use std::net::Ipv4Addr;

use etherparse::{
    Ethernet2HeaderSlice, Icmpv4Slice, Ipv4HeaderSlice, SingleVlanHeaderSlice, TcpHeaderSlice,
    UdpHeaderSlice, checksum::Sum16BitWords, err,
};
use netbeast::packet::{
    ETH_HEADER_LEN, ICMP_HEADER_LEN, IPV4_HEADER_LEN, MacAddr, TCP_HEADER_LEN, UDP_HEADER_LEN,
    VLAN_TAG_LEN, VlanTag, ethertype, icmp_type, ip_proto,
};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PacketError {
    #[error("{what} is cut short: needs {needed} bytes, the frame has {available}")]
    Truncated {
        what: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("IPv4 header has version {0}, expected 4")]
    NotIpv4Version(u8),
    #[error("IPv4 header length (IHL) {0} is below the minimum of 5 words")]
    IhlTooSmall(u8),
    #[error("IPv4 total length {total_length} is smaller than the {header_len}-byte header")]
    TotalLengthTooSmall {
        total_length: u16,
        header_len: usize,
    },
    #[error("TCP data offset {0} is below the minimum of 5 words")]
    TcpOffsetTooSmall(u8),
    #[error("UDP length {length} does not fit the {available} bytes after the IP header")]
    BadUdpLength { length: u16, available: usize },
}

/// etherparse's "too short" answer, named after the header that was.
fn truncated(what: &'static str) -> impl Fn(err::LenError) -> PacketError {
    move |e| PacketError::Truncated {
        what,
        needed: e.required_len,
        available: e.len,
    }
}

fn need(what: &'static str, bytes: &[u8], needed: usize) -> Result<(), PacketError> {
    if bytes.len() < needed {
        Err(PacketError::Truncated {
            what,
            needed,
            available: bytes.len(),
        })
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Checksums, checked

/// True when `bytes` sum to a correct Internet checksum (RFC 1071): the
/// one's complement of their sum, checksum field included, is 0.
fn sums_to_zero(sum: Sum16BitWords) -> bool {
    sum.ones_complement() == 0
}

/// True when the IPv4 header at the start of `ip` (length from its IHL) has
/// a correct header checksum. False when the bytes are too short to hold the
/// header or IHL is below 5.
pub fn ipv4_checksum_ok(ip: &[u8]) -> bool {
    Ipv4HeaderSlice::from_slice(ip)
        .is_ok_and(|h| sums_to_zero(Sum16BitWords::new().add_slice(h.slice())))
}

/// True when the TCP, UDP or ICMP message of the IPv4 packet `ip` (header
/// first, L4 length from total length minus IHL) has a correct checksum: over
/// the pseudo-header for TCP and UDP, over the message alone for ICMP. A UDP
/// checksum of 0 ("none sent") counts as correct. False for other protocols,
/// for non-first fragments, and when the lengths don't fit the bytes.
pub fn l4_checksum_ok(ip: &[u8]) -> bool {
    let Ok(h) = Ipv4HeaderSlice::from_slice(ip) else {
        return false;
    };
    let (header_len, total_len) = (h.slice().len(), usize::from(h.total_len()));
    if total_len < header_len || total_len > ip.len() || h.fragments_offset().value() != 0 {
        return false;
    }
    let segment = &ip[header_len..total_len];
    let pseudo = || {
        Sum16BitWords::new()
            .add_slice(&h.source())
            .add_slice(&h.destination())
            .add_2bytes([0, h.protocol().0])
            .add_2bytes((segment.len() as u16).to_be_bytes())
            .add_slice(segment)
    };
    match h.protocol().0 {
        ip_proto::TCP => segment.len() >= TCP_HEADER_LEN && sums_to_zero(pseudo()),
        ip_proto::UDP => {
            segment.len() >= UDP_HEADER_LEN && (segment[6..8] == [0, 0] || sums_to_zero(pseudo()))
        }
        ip_proto::ICMP => {
            segment.len() >= ICMP_HEADER_LEN
                && sums_to_zero(Sum16BitWords::new().add_slice(segment))
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Parsed frames

/// A parsed Ethernet frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub dst_mac: MacAddr,
    pub src_mac: MacAddr,
    /// Outermost first.
    pub vlans: Vec<VlanTag>,
    /// The EtherType after the tags.
    pub ethertype: u16,
    /// Where the network header starts: 14 plus 4 per VLAN tag.
    pub l3_offset: usize,
    pub network: Network,
}

impl Frame {
    pub fn vlan_ids(&self) -> Vec<u16> {
        self.vlans.iter().map(VlanTag::vlan_id).collect()
    }

    pub fn ipv4(&self) -> Option<&Ipv4Packet> {
        match &self.network {
            Network::Ipv4(ip) => Some(ip),
            Network::Other(_) => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Network {
    Ipv4(Ipv4Packet),
    /// Any other EtherType: the bytes after the Ethernet header and tags.
    Other(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4Header {
    /// In 32-bit words.
    pub ihl: u8,
    pub tos: u8,
    pub total_length: u16,
    pub id: u16,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    /// In 8-byte units.
    pub fragment_offset: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub checksum: u16,
    pub checksum_ok: bool,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub options: Vec<u8>,
}

impl Ipv4Header {
    pub fn header_len(&self) -> usize {
        usize::from(self.ihl) * 4
    }

    /// A non-first fragment: carries no transport header.
    pub fn is_later_fragment(&self) -> bool {
        self.fragment_offset != 0
    }

    /// Parses the header at the start of `bytes`; the total length is not
    /// checked against the bytes (quoted headers in ICMP errors are alone).
    pub fn parse(bytes: &[u8]) -> Result<Ipv4Header, PacketError> {
        let h = Ipv4HeaderSlice::from_slice(bytes).map_err(|e| match e {
            err::ipv4::HeaderSliceError::Len(e) if e.required_len == IPV4_HEADER_LEN => {
                truncated("IPv4 header")(e)
            }
            err::ipv4::HeaderSliceError::Len(e) => truncated("IPv4 header with options")(e),
            err::ipv4::HeaderSliceError::Content(err::ipv4::HeaderError::UnexpectedVersion {
                version_number,
            }) => PacketError::NotIpv4Version(version_number),
            err::ipv4::HeaderSliceError::Content(
                err::ipv4::HeaderError::HeaderLengthSmallerThanHeader { ihl },
            ) => PacketError::IhlTooSmall(ihl),
        })?;
        let raw = h.slice();
        Ok(Ipv4Header {
            ihl: h.ihl(),
            tos: raw[1],
            total_length: h.total_len(),
            id: h.identification(),
            dont_fragment: h.dont_fragment(),
            more_fragments: h.more_fragments(),
            fragment_offset: h.fragments_offset().value(),
            ttl: h.ttl(),
            protocol: h.protocol().0,
            checksum: h.header_checksum(),
            checksum_ok: sums_to_zero(Sum16BitWords::new().add_slice(raw)),
            src: h.source_addr(),
            dst: h.destination_addr(),
            options: h.options().to_vec(),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4Packet {
    pub header: Ipv4Header,
    pub transport: Transport,
    /// Bytes of the frame after the IP total length (Ethernet padding).
    pub trailer: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp(TcpSegment),
    Udp(UdpDatagram),
    Icmp(IcmpMessage),
    /// A non-first fragment's bytes: no transport header in them.
    Fragment(Vec<u8>),
    /// Another protocol's bytes.
    Other(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSegment {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    /// In 32-bit words.
    pub data_offset: u8,
    /// The low 8 flag bits (`netbeast::packet::tcp_flags`).
    pub flags: u8,
    pub window: u16,
    pub checksum: u16,
    pub urgent: u16,
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
    /// Over the pseudo-header; false for a first fragment (data missing).
    pub checksum_ok: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpDatagram {
    pub sport: u16,
    pub dport: u16,
    pub length: u16,
    pub checksum: u16,
    /// The bytes after the header, up to the UDP length.
    pub payload: Vec<u8>,
    /// Over the pseudo-header; true when the checksum is 0 (none sent).
    pub checksum_ok: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcmpMessage {
    pub icmp_type: u8,
    pub code: u8,
    pub checksum: u16,
    pub checksum_ok: bool,
    /// The second word: echo id and sequence, or unused/MTU for errors.
    pub rest: [u8; 4],
    pub payload: Vec<u8>,
    /// For error types, the datagram the error is about.
    pub quoted: Option<QuotedDatagram>,
}

/// What an ICMP error quotes: an IPv4 header and the bytes after it
/// (normally the first 8 of its payload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotedDatagram {
    pub header: Ipv4Header,
    pub data: Vec<u8>,
    /// The quoted bytes exactly as they are in the message.
    pub raw: Vec<u8>,
}

/// Parses a frame down to its transport header. Fails when a header the
/// frame claims to have is cut short or impossible (IHL < 5, total length
/// beyond the frame or below the header); use it on replies, which must be
/// well formed.
pub fn parse_frame(frame: &[u8]) -> Result<Frame, PacketError> {
    let eth = Ethernet2HeaderSlice::from_slice(frame).map_err(truncated("Ethernet header"))?;
    let mut at = ETH_HEADER_LEN;
    let mut vlans = Vec::new();
    let mut ethertype = eth.ether_type().0;
    while ethertype == ethertype::VLAN || ethertype == ethertype::QINQ {
        let tag = SingleVlanHeaderSlice::from_slice(&frame[at..]).map_err(|e| {
            PacketError::Truncated {
                what: "VLAN tag",
                needed: at + e.required_len,
                available: frame.len(),
            }
        })?;
        let tci = tag.slice();
        vlans.push(VlanTag {
            tpid: ethertype,
            tci: u16::from_be_bytes([tci[0], tci[1]]),
        });
        ethertype = tag.ether_type().0;
        at += VLAN_TAG_LEN;
    }
    let rest = &frame[at..];
    let network = if ethertype == ethertype::IPV4 {
        Network::Ipv4(parse_ipv4(rest)?)
    } else {
        Network::Other(rest.to_vec())
    };
    Ok(Frame {
        dst_mac: eth.destination(),
        src_mac: eth.source(),
        vlans,
        ethertype,
        l3_offset: at,
        network,
    })
}

/// Parses an IPv4 packet (header first) and its transport header.
pub fn parse_ipv4(bytes: &[u8]) -> Result<Ipv4Packet, PacketError> {
    let header = Ipv4Header::parse(bytes)?;
    let header_len = header.header_len();
    let total_len = usize::from(header.total_length);
    if total_len < header_len {
        return Err(PacketError::TotalLengthTooSmall {
            total_length: header.total_length,
            header_len,
        });
    }
    need("IPv4 packet (total length)", bytes, total_len)?;
    let body = &bytes[header_len..total_len];
    let checksum_ok = !header.more_fragments && l4_checksum_ok(&bytes[..total_len]);
    let transport = if header.is_later_fragment() {
        Transport::Fragment(body.to_vec())
    } else {
        match header.protocol {
            ip_proto::TCP => Transport::Tcp(parse_tcp(body, checksum_ok)?),
            ip_proto::UDP => Transport::Udp(parse_udp(body, checksum_ok)?),
            ip_proto::ICMP => Transport::Icmp(parse_icmp(body, checksum_ok)?),
            _ => Transport::Other(body.to_vec()),
        }
    };
    Ok(Ipv4Packet {
        header,
        transport,
        trailer: bytes[total_len..].to_vec(),
    })
}

fn parse_tcp(body: &[u8], checksum_ok: bool) -> Result<TcpSegment, PacketError> {
    let tcp = TcpHeaderSlice::from_slice(body).map_err(|e| match e {
        err::tcp::HeaderSliceError::Len(e) if e.required_len == TCP_HEADER_LEN => {
            truncated("TCP header")(e)
        }
        err::tcp::HeaderSliceError::Len(e) => truncated("TCP header with options")(e),
        err::tcp::HeaderSliceError::Content(err::tcp::HeaderError::DataOffsetTooSmall {
            data_offset,
        }) => PacketError::TcpOffsetTooSmall(data_offset),
    })?;
    let header_len = tcp.slice().len();
    Ok(TcpSegment {
        sport: tcp.source_port(),
        dport: tcp.destination_port(),
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        data_offset: tcp.data_offset(),
        flags: tcp.slice()[13],
        window: tcp.window_size(),
        checksum: tcp.checksum(),
        urgent: tcp.urgent_pointer(),
        options: tcp.options().to_vec(),
        payload: body[header_len..].to_vec(),
        checksum_ok,
    })
}

fn parse_udp(body: &[u8], checksum_ok: bool) -> Result<UdpDatagram, PacketError> {
    let udp = UdpHeaderSlice::from_slice(body).map_err(truncated("UDP header"))?;
    let length = udp.length();
    if usize::from(length) < UDP_HEADER_LEN || usize::from(length) > body.len() {
        return Err(PacketError::BadUdpLength {
            length,
            available: body.len(),
        });
    }
    Ok(UdpDatagram {
        sport: udp.source_port(),
        dport: udp.destination_port(),
        length,
        checksum: udp.checksum(),
        payload: body[UDP_HEADER_LEN..usize::from(length)].to_vec(),
        checksum_ok,
    })
}

fn parse_icmp(body: &[u8], checksum_ok: bool) -> Result<IcmpMessage, PacketError> {
    let icmp = Icmpv4Slice::from_slice(body).map_err(truncated("ICMP header"))?;
    // The eight-byte header whatever the type: etherparse's payload starts
    // after it for every type but timestamps, which netbeast never builds.
    let payload = &body[ICMP_HEADER_LEN..];
    let quoted = if icmp_type::is_error(icmp.type_u8()) {
        let header = Ipv4Header::parse(payload)?;
        Some(QuotedDatagram {
            data: payload[header.header_len()..].to_vec(),
            header,
            raw: payload.to_vec(),
        })
    } else {
        None
    };
    Ok(IcmpMessage {
        icmp_type: icmp.type_u8(),
        code: icmp.code_u8(),
        checksum: icmp.checksum(),
        checksum_ok,
        rest: icmp.bytes5to8(),
        payload: payload.to_vec(),
        quoted,
    })
}
