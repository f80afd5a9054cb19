//! The kernel's LOG line (nf_log_syslog's IPv4 and IPv6 loggers), byte for byte,
//! from the bytes the kernel side copied: written from the kernel's
//! behaviour (which header it reads, how much must be there, what it
//! prints when it is not), checked against lines Linux printed for the
//! same frames (`tests/fixtures/kernel-log/`).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use netbeast_common::log_flags;

/// What the line is made from.
pub struct LineInput<'a> {
    /// The rule's `--log-*` switches (`log_flags::*`).
    pub flags: u8,
    /// The interfaces' names; `in_name` is `None` where the packet has no
    /// input interface (OUTPUT, POSTROUTING): the kernel then prints no
    /// MAC part.
    pub in_name: Option<&'a str>,
    pub out_name: Option<&'a str>,
    /// The frame's first bytes (the kernel side copies at most
    /// `LOG_CAPTURE_BYTES`) and its whole length.
    pub frame: &'a [u8],
    pub frame_len: usize,
    /// Where the IPv4 or IPv6 header starts.
    pub l3: usize,
    /// The sending socket's owner (uid, gid), when known.
    pub owner: Option<(u32, u32)>,
}

/// The line after the prefix: `IN=eth0 OUT= MAC=... SRC=... `, trailing
/// space included, as the kernel prints it.
pub fn body(input: &LineInput) -> String {
    let mut m = String::with_capacity(256);
    let _ = write!(
        m,
        "IN={} OUT={} ",
        input.in_name.unwrap_or(""),
        input.out_name.unwrap_or("")
    );
    if input.in_name.is_some() {
        mac_header(&mut m, input);
    }
    let ip = input.frame.get(input.l3..).unwrap_or(&[]);
    let on_wire = input.frame_len.saturating_sub(input.l3);
    if ip.first().is_some_and(|b| b >> 4 == 6) {
        // skb->len at the hooks: the IPv6 packet, trimmed to its header
        // and payload length on input (ipv6_rcv); a jumbogram's (payload
        // length 0) is what arrived.
        let total = ip
            .get(4..6)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
            .filter(|&t| t != 0)
            .map_or(on_wire, |t| t + IPV6_HLEN);
        let packet = Packet {
            bytes: ip,
            len: total.min(on_wire),
        };
        ipv6(&mut m, &packet, input, 0);
        return m;
    }
    // skb->len at the hooks: the IPv4 packet, trimmed to its total length
    // on input (ip_rcv), which netbeast's frames may still carry padding
    // beyond.
    let total = ip
        .get(2..4)
        .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        .filter(|&t| t != 0)
        .unwrap_or(on_wire);
    let packet = Packet {
        bytes: ip,
        len: total.min(on_wire),
    };
    ipv4(&mut m, &packet, input, 0);
    m
}

/// The IPv4 packet as the kernel's `skb_header_pointer` sees it: `len`
/// bytes, of which the first `bytes.len()` were copied.
struct Packet<'a> {
    bytes: &'a [u8],
    len: usize,
}

impl Packet<'_> {
    /// `n` bytes at `off`, or `None` where the kernel's read fails (past
    /// the packet's end).
    fn get(&self, off: usize, n: usize) -> Option<&[u8]> {
        if off.checked_add(n)? > self.len {
            return None;
        }
        self.bytes.get(off..off + n)
    }

    /// `skb->len - off`, as the kernel prints it in `INCOMPLETE [n bytes]`
    /// (an unsigned difference).
    fn rest(&self, off: usize) -> u32 {
        (self.len as u32).wrapping_sub(off as u32)
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn hex_upper(m: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(m, "{b:02X}");
    }
}

/// `MAC=dst:src:type ` (the Ethernet header, 14 bytes), or with
/// `--log-macdecode` `MACSRC=... MACDST=... MACPROTO=0800 `.
fn mac_header(m: &mut String, input: &LineInput) {
    let Some(eth) = input.frame.get(..14) else {
        m.push_str("MAC= ");
        return;
    };
    if input.flags & log_flags::MAC_DECODE != 0 {
        let mac = |b: &[u8]| {
            b.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        let _ = write!(
            m,
            "MACSRC={} MACDST={} MACPROTO={:04x} ",
            mac(&eth[6..12]),
            mac(&eth[0..6]),
            be16(input.frame, input.l3.max(14) - 2)
        );
        return;
    }
    m.push_str("MAC=");
    for (i, b) in eth.iter().enumerate() {
        if i > 0 {
            m.push(':');
        }
        let _ = write!(m, "{b:02x}");
    }
    m.push(' ');
}

/// ICMP types below this whose message must be this long for the kernel
/// to print more than its type and code.
const ICMP_REQUIRED: [usize; 19] = [
    4, // echo reply
    0,
    0,      // (1, 2)
    8 + 20, // destination unreachable
    8 + 20, // source quench
    8 + 20, // redirect
    0,
    0, // (6, 7)
    4, // echo request
    0,
    0,      // (9, 10)
    8 + 20, // time exceeded
    8 + 20, // parameter problem
    20,     // timestamp
    20,     // timestamp reply
    0,
    0,  // (15, 16)
    12, // address mask request
    12, // address mask reply
];

/// One IPv4 header and what follows it, at `iphoff`; an ICMP error's
/// quoted packet once (at `iphoff` > 0).
fn ipv4(m: &mut String, p: &Packet, input: &LineInput, iphoff: usize) {
    let Some(ih) = p.get(iphoff, 20) else {
        m.push_str("TRUNCATED");
        return;
    };
    let flags = input.flags;
    let src = Ipv4Addr::new(ih[12], ih[13], ih[14], ih[15]);
    let dst = Ipv4Addr::new(ih[16], ih[17], ih[18], ih[19]);
    let _ = write!(m, "SRC={src} DST={dst} ");
    let tos = ih[1];
    let _ = write!(
        m,
        "LEN={} TOS=0x{:02X} PREC=0x{:02X} TTL={} ID={} ",
        be16(ih, 2),
        tos & 0x1e,
        tos & 0xe0,
        ih[8],
        be16(ih, 4)
    );
    let frag = be16(ih, 6);
    if frag & 0x8000 != 0 {
        m.push_str("CE ");
    }
    if frag & 0x4000 != 0 {
        m.push_str("DF ");
    }
    if frag & 0x2000 != 0 {
        m.push_str("MF ");
    }
    let offset = frag & 0x1fff;
    if offset != 0 {
        let _ = write!(m, "FRAG:{offset} ");
    }
    let ihl = (ih[0] & 0x0f) as usize * 4;
    if flags & log_flags::IP_OPTIONS != 0 && ihl > 20 {
        let Some(opt) = p.get(iphoff + 20, ihl - 20) else {
            m.push_str("TRUNCATED");
            return;
        };
        m.push_str("OPT (");
        hex_upper(m, opt);
        m.push_str(") ");
    }
    let l4 = iphoff + ihl;
    let fragment = offset != 0;
    match ih[9] {
        6 => {
            if !tcp(m, p, fragment, l4, flags) {
                return;
            }
        }
        17 | 136 => {
            if !udp(m, p, ih[9], fragment, l4) {
                return;
            }
        }
        1 => {
            m.push_str("PROTO=ICMP ");
            if !fragment {
                icmp(m, p, input, iphoff, l4);
            }
        }
        51 => {
            if !fragment {
                m.push_str("PROTO=AH ");
                match p.get(l4, 12) {
                    Some(ah) => {
                        let _ = write!(m, "SPI=0x{:x} ", be32(ah, 4));
                    }
                    None => {
                        let _ = write!(m, "INCOMPLETE [{} bytes] ", p.rest(l4));
                    }
                }
            }
        }
        50 => {
            m.push_str("PROTO=ESP ");
            if !fragment {
                match p.get(l4, 8) {
                    Some(esp) => {
                        let _ = write!(m, "SPI=0x{:x} ", be32(esp, 0));
                    }
                    None => {
                        let _ = write!(m, "INCOMPLETE [{} bytes] ", p.rest(l4));
                    }
                }
            }
        }
        other => {
            let _ = write!(m, "PROTO={other} ");
        }
    }
    if flags & log_flags::UID != 0
        && iphoff == 0
        && let Some((uid, gid)) = input.owner
    {
        let _ = write!(m, "UID={uid} GID={gid} ");
    }
}

/// The UDP (or UDP-Lite) part; `false` when the kernel stops the line
/// there.
fn udp(m: &mut String, p: &Packet, protocol: u8, fragment: bool, off: usize) -> bool {
    m.push_str(if protocol == 17 {
        "PROTO=UDP "
    } else {
        "PROTO=UDPLITE "
    });
    if fragment {
        return true;
    }
    let Some(uh) = p.get(off, 8) else {
        let _ = write!(m, "INCOMPLETE [{} bytes] ", p.rest(off));
        return false;
    };
    let _ = write!(
        m,
        "SPT={} DPT={} LEN={} ",
        be16(uh, 0),
        be16(uh, 2),
        be16(uh, 4)
    );
    true
}

/// The TCP part; `false` when the kernel stops the line there.
fn tcp(m: &mut String, p: &Packet, fragment: bool, off: usize, flags: u8) -> bool {
    m.push_str("PROTO=TCP ");
    if fragment {
        return true;
    }
    let Some(th) = p.get(off, 20) else {
        let _ = write!(m, "INCOMPLETE [{} bytes] ", p.rest(off));
        return false;
    };
    let _ = write!(m, "SPT={} DPT={} ", be16(th, 0), be16(th, 2));
    if flags & log_flags::TCP_SEQUENCE != 0 {
        let _ = write!(m, "SEQ={} ACK={} ", be32(th, 4), be32(th, 8));
    }
    let _ = write!(m, "WINDOW={} ", be16(th, 14));
    // The three reserved bits between the data offset and AE.
    let _ = write!(m, "RES=0x{:02x} ", (th[12] & 0x0e) << 2);
    let bits = th[13];
    for (set, name) in [
        (th[12] & 0x01 != 0, "AE "),
        (bits & 0x80 != 0, "CWR "),
        (bits & 0x40 != 0, "ECE "),
        (bits & 0x20 != 0, "URG "),
        (bits & 0x10 != 0, "ACK "),
        (bits & 0x08 != 0, "PSH "),
        (bits & 0x04 != 0, "RST "),
        (bits & 0x02 != 0, "SYN "),
        (bits & 0x01 != 0, "FIN "),
    ] {
        if set {
            m.push_str(name);
        }
    }
    let _ = write!(m, "URGP={} ", be16(th, 18));
    let doff = (th[12] >> 4) as usize * 4;
    if flags & log_flags::TCP_OPTIONS != 0 && doff > 20 {
        let Some(opt) = p.get(off + 20, doff - 20) else {
            m.push_str("OPT (TRUNCATED)");
            return false;
        };
        m.push_str("OPT (");
        hex_upper(m, opt);
        m.push_str(") ");
    }
    true
}

fn icmp(m: &mut String, p: &Packet, input: &LineInput, iphoff: usize, off: usize) {
    let Some(ich) = p.get(off, 8) else {
        let _ = write!(m, "INCOMPLETE [{} bytes] ", p.rest(off));
        return;
    };
    let (t, code) = (ich[0], ich[1]);
    let _ = write!(m, "TYPE={t} CODE={code} ");
    if let Some(&required) = ICMP_REQUIRED.get(t as usize)
        && required != 0
        && (p.rest(off) as usize) < required
    {
        let _ = write!(m, "INCOMPLETE [{} bytes] ", p.rest(off));
        return;
    }
    match t {
        0 | 8 => {
            let _ = write!(m, "ID={} SEQ={} ", be16(ich, 4), be16(ich, 6));
        }
        12 => {
            let _ = write!(m, "PARAMETER={} ", ich[4]);
        }
        3 | 4 | 5 | 11 => {
            if t == 5 {
                let _ = write!(
                    m,
                    "GATEWAY={} ",
                    Ipv4Addr::new(ich[4], ich[5], ich[6], ich[7])
                );
            }
            if iphoff == 0 {
                m.push('[');
                ipv4(m, p, input, off + 8);
                m.push_str("] ");
            }
            if t == 3 && code == 4 {
                let _ = write!(m, "MTU={} ", be16(ich, 6));
            }
        }
        _ => {}
    }
}

/// The fixed IPv6 header's length.
const IPV6_HLEN: usize = 40;

/// IPv6 next-header values the logger walks as extension headers (the
/// kernel's `nf_ip6_ext_hdr`, less no-next-header, which ends the walk).
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_ESP: u8 = 50;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;

/// One IPv6 header, its extension headers and what follows them, at
/// `off`; an ICMPv6 error's quoted packet once (`off` > 0). Addresses are
/// printed as eight groups of four hex digits (`%pI6`), extension headers
/// only with `--log-ip-options` (`OPT ( ... ) `), a fragment header always.
fn ipv6(m: &mut String, p: &Packet, input: &LineInput, off: usize) {
    let Some(ih) = p.get(off, IPV6_HLEN) else {
        m.push_str("TRUNCATED");
        return;
    };
    let flags = input.flags;
    let options = flags & log_flags::IP_OPTIONS != 0;
    let addr = |at: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&ih[at..at + 16]);
        Ipv6Addr::from(a)
    };
    let groups = |a: Ipv6Addr| {
        a.segments()
            .iter()
            .map(|g| format!("{g:04x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    let _ = write!(m, "SRC={} DST={} ", groups(addr(8)), groups(addr(24)));
    let first = be32(ih, 0);
    let _ = write!(
        m,
        "LEN={} TC={} HOPLIMIT={} FLOWLBL={} ",
        be16(ih, 4) as usize + IPV6_HLEN,
        (first & 0x0ff0_0000) >> 20,
        ih[7],
        first & 0x000f_ffff
    );
    let mut fragment = false;
    let mut ptr = off + IPV6_HLEN;
    let mut current = ih[6];
    while matches!(
        current,
        NEXTHDR_HOP
            | NEXTHDR_ROUTING
            | NEXTHDR_FRAGMENT
            | NEXTHDR_ESP
            | NEXTHDR_AUTH
            | NEXTHDR_DEST
    ) {
        // Every extension header starts with its next header and length.
        let Some(hp) = p.get(ptr, 2) else {
            m.push_str("TRUNCATED");
            return;
        };
        let (next, hdrlen) = (hp[0], hp[1] as usize);
        if options {
            m.push_str("OPT ( ");
        }
        let len = match current {
            NEXTHDR_FRAGMENT => {
                m.push_str("FRAG:");
                let Some(fh) = p.get(ptr, 8) else {
                    m.push_str("TRUNCATED ");
                    return;
                };
                let frag_off = be16(fh, 2);
                let _ = write!(m, "{} ", frag_off & 0xfff8);
                if frag_off & 1 != 0 {
                    m.push_str("INCOMPLETE ");
                }
                let _ = write!(m, "ID:{:08x} ", be32(fh, 4));
                if frag_off & 0xfff8 != 0 {
                    fragment = true;
                }
                8
            }
            NEXTHDR_DEST | NEXTHDR_ROUTING | NEXTHDR_HOP => {
                if fragment {
                    if options {
                        m.push(')');
                    }
                    return;
                }
                (hdrlen + 1) * 8
            }
            NEXTHDR_AUTH => {
                if options {
                    m.push_str("AH ");
                    if fragment {
                        m.push(')');
                        return;
                    }
                    let Some(ah) = p.get(ptr, 12) else {
                        let _ = write!(m, "INCOMPLETE [{} bytes] )", p.rest(ptr));
                        return;
                    };
                    let _ = write!(m, "SPI=0x{:x} ", be32(ah, 4));
                }
                (hdrlen + 2) * 4
            }
            // ESP ends the walk: what follows is encrypted.
            _ => {
                if options {
                    m.push_str("ESP ");
                    if fragment {
                        m.push(')');
                        return;
                    }
                    let Some(esp) = p.get(ptr, 8) else {
                        let _ = write!(m, "INCOMPLETE [{} bytes] )", p.rest(ptr));
                        return;
                    };
                    let _ = write!(m, "SPI=0x{:x} )", be32(esp, 0));
                }
                return;
            }
        };
        if options {
            m.push_str(") ");
        }
        current = next;
        ptr += len;
    }
    match current {
        6 => {
            if !tcp(m, p, fragment, ptr, flags) {
                return;
            }
        }
        17 | 136 => {
            if !udp(m, p, current, fragment, ptr) {
                return;
            }
        }
        58 => {
            m.push_str("PROTO=ICMPv6 ");
            if !fragment && !icmp6(m, p, input, off, ptr) {
                return;
            }
        }
        other => {
            let _ = write!(m, "PROTO={other} ");
        }
    }
    if flags & log_flags::UID != 0
        && off == 0
        && let Some((uid, gid)) = input.owner
    {
        let _ = write!(m, "UID={uid} GID={gid} ");
    }
}

/// The ICMPv6 part after `PROTO=ICMPv6 `; `false` when the kernel stops
/// the line there.
fn icmp6(m: &mut String, p: &Packet, input: &LineInput, ip6off: usize, off: usize) -> bool {
    let Some(ic) = p.get(off, 8) else {
        let _ = write!(m, "INCOMPLETE [{} bytes] ", p.rest(off));
        return false;
    };
    let (t, code) = (ic[0], ic[1]);
    let _ = write!(m, "TYPE={t} CODE={code} ");
    match t {
        // Echo request and reply.
        128 | 129 => {
            let _ = write!(m, "ID={} SEQ={} ", be16(ic, 4), be16(ic, 6));
        }
        // Destination unreachable, packet too big, time exceeded,
        // parameter problem: the quoted packet, once.
        1..=4 => {
            if t == 4 {
                let _ = write!(m, "POINTER={:08x} ", be32(ic, 4));
            }
            if ip6off == 0 {
                m.push('[');
                ipv6(m, p, input, off + 8);
                m.push_str("] ");
            }
            if t == 2 {
                let _ = write!(m, "MTU={} ", be32(ic, 4));
            }
        }
        _ => {}
    }
    true
}
