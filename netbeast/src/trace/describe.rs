//! The packet `netbeast trace --packet` runs through the data plane,
//! described in a few words, tcpdump-like:
//!
//! ```text
//! DESC  := PROTO SRC > DST [WORD...] in IFACE [WORD...]
//! PROTO := tcp | udp | icmp | icmp6 (or ipv6-icmp, icmpv6)
//! SRC, DST := A.B.C.D:PORT | [IPV6]:PORT  (tcp, udp)
//!           | A.B.C.D (icmp) | IPV6 (icmp6)
//! WORD  := tcp flags:  syn ack fin rst psh urg ece cwr  (default: syn alone)
//!        | icmp type:  a name or TYPE[/CODE] as --icmp-type (icmp6:
//!                      --icmpv6-type) takes it (default: echo-request)
//!        | ttl N       the TTL, or an IPv6 packet's hop limit (default 64)
//!        | in IFACE    the interface it arrives on (required)
//! ```
//!
//! e.g. `tcp 10.0.0.5:1234 > 10.0.0.1:80 syn in eth0`,
//! `icmp 10.0.0.5 > 10.0.0.1 echo-request in eth0`,
//! `tcp [fd00::5]:1234 > [fd00::1]:80 syn in eth0` (an IPv6 address with a
//! port is bracketed, as in URLs and ip6tables' `--to-destination`).

use std::net::IpAddr;

use crate::rules::{
    ext::{icmp::parse_icmp_type, icmp6::parse_icmp6_type},
    model::IcmpType,
};

/// What the grammar accepts, for the messages.
pub const GRAMMAR: &str = "PROTO SRC > DST [FLAGS|ICMP-TYPE] [ttl N] in IFACE, with PROTO tcp, \
     udp, icmp or icmp6, SRC and DST A.B.C.D:PORT or [IPV6]:PORT for tcp and udp (the address \
     alone for icmp and icmp6), FLAGS tcp flags (syn ack fin rst psh urg ece cwr), e.g. 'tcp \
     10.0.0.5:1234 > 10.0.0.1:80 syn in eth0' or 'tcp [fd00::5]:1234 > [fd00::1]:80 syn in \
     eth0'";

/// TCP flag names and their bits.
const TCP_FLAGS: [(&str, u8); 8] = [
    ("fin", 0x01),
    ("syn", 0x02),
    ("rst", 0x04),
    ("psh", 0x08),
    ("ack", 0x10),
    ("urg", 0x20),
    ("ece", 0x40),
    ("cwr", 0x80),
];

/// The TTL of a described packet unless it says otherwise (Linux's
/// default).
pub const DEFAULT_TTL: u8 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp { sport: u16, dport: u16, flags: u8 },
    Udp { sport: u16, dport: u16 },
    Icmp { icmp_type: u8, code: u8 },
    Icmp6 { icmp_type: u8, code: u8 },
}

/// A described packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Described {
    /// Both of one family (the parser checks).
    pub src: IpAddr,
    pub dst: IpAddr,
    pub transport: Transport,
    pub ttl: u8,
    /// The interface it arrives on.
    pub in_iface: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DescribeError {
    #[error("the packet description is empty: write {GRAMMAR}")]
    Empty,
    #[error("unknown protocol '{0}': the description starts with tcp, udp, icmp or icmp6")]
    Protocol(String),
    #[error("'{0}' is not SRC > DST: write {GRAMMAR}")]
    Shape(String),
    #[error("bad {what} '{text}': {why}")]
    Endpoint {
        what: &'static str,
        text: String,
        why: String,
    },
    #[error("'{word}' means nothing for a {protocol} packet here: write {GRAMMAR}")]
    Word {
        word: String,
        protocol: &'static str,
    },
    #[error("'{0}' needs a value after it")]
    Missing(&'static str),
    #[error("ttl '{0}': give a number from 1 to 255")]
    Ttl(String),
    #[error("bad ICMP type '{text}': {why}")]
    IcmpType { text: String, why: String },
    #[error("say which interface the packet arrives on: add 'in IFACE' (e.g. 'in eth0')")]
    NoInterface,
    #[error("{0} is given twice")]
    Twice(&'static str),
    #[error(
        "the source and the destination are of two families ({src} > {dst}): give two IPv4 or \
         two IPv6 addresses"
    )]
    Families { src: IpAddr, dst: IpAddr },
    #[error("{protocol} is {family}: give {family} addresses ({hint})")]
    ProtocolFamily {
        protocol: &'static str,
        family: &'static str,
        hint: &'static str,
    },
}

/// Parses a description.
pub fn parse(text: &str) -> Result<Described, DescribeError> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let Some(&proto) = words.first() else {
        return Err(DescribeError::Empty);
    };
    let proto = proto.to_ascii_lowercase();
    let protocol: &'static str = match proto.as_str() {
        "tcp" => "tcp",
        "udp" => "udp",
        "icmp" => "icmp",
        "icmp6" | "ipv6-icmp" | "icmpv6" => "icmp6",
        _ => return Err(DescribeError::Protocol(proto)),
    };
    if words.len() < 4 || words[2] != ">" {
        return Err(DescribeError::Shape(text.trim().to_string()));
    }
    let ports = protocol == "tcp" || protocol == "udp";
    let (src, sport) = endpoint("source", words[1], ports)?;
    let (dst, dport) = endpoint("destination", words[3], ports)?;
    if src.is_ipv4() != dst.is_ipv4() {
        return Err(DescribeError::Families { src, dst });
    }
    match protocol {
        "icmp" if src.is_ipv6() => {
            return Err(DescribeError::ProtocolFamily {
                protocol,
                family: "IPv4",
                hint: "write icmp6 for ICMPv6",
            });
        }
        "icmp6" if src.is_ipv4() => {
            return Err(DescribeError::ProtocolFamily {
                protocol,
                family: "IPv6",
                hint: "write icmp for ICMP",
            });
        }
        _ => {}
    }
    let mut flags = 0u8;
    let mut icmp: Option<(u8, u8)> = None;
    let mut ttl = None;
    let mut in_iface = None;
    let mut rest = words[4..].iter();
    while let Some(&word) = rest.next() {
        let lower = word.to_ascii_lowercase();
        match lower.as_str() {
            "in" => {
                let name = rest.next().ok_or(DescribeError::Missing("in"))?;
                if in_iface.replace(name.to_string()).is_some() {
                    return Err(DescribeError::Twice("in"));
                }
            }
            "ttl" => {
                let value = rest.next().ok_or(DescribeError::Missing("ttl"))?;
                let n = value
                    .parse::<u8>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| DescribeError::Ttl(value.to_string()))?;
                if ttl.replace(n).is_some() {
                    return Err(DescribeError::Twice("ttl"));
                }
            }
            _ if protocol == "tcp" => {
                // "syn,ack" as well as "syn ack".
                for name in lower.split(',').filter(|n| !n.is_empty()) {
                    let Some((_, bit)) = TCP_FLAGS.iter().find(|(n, _)| *n == name) else {
                        return Err(DescribeError::Word {
                            word: word.to_string(),
                            protocol,
                        });
                    };
                    flags |= bit;
                }
            }
            _ if protocol == "icmp6" => {
                if icmp.is_some() {
                    return Err(DescribeError::Twice("the ICMPv6 type"));
                }
                icmp = Some(parse_icmp6_type(word).map_err(|e| DescribeError::IcmpType {
                    text: word.to_string(),
                    why: e.to_string(),
                })?);
            }
            _ if protocol == "icmp" => {
                if icmp.is_some() {
                    return Err(DescribeError::Twice("the ICMP type"));
                }
                let parsed = parse_icmp_type(word).map_err(|e| DescribeError::IcmpType {
                    text: word.to_string(),
                    why: e.to_string(),
                })?;
                icmp = Some(match parsed {
                    IcmpType::Type { icmp_type, code } => (icmp_type, code.unwrap_or(0)),
                    IcmpType::Any => {
                        return Err(DescribeError::IcmpType {
                            text: word.to_string(),
                            why: "a packet has one type: name it (e.g. echo-request)".into(),
                        });
                    }
                });
            }
            _ => {
                return Err(DescribeError::Word {
                    word: word.to_string(),
                    protocol,
                });
            }
        }
    }
    let in_iface = in_iface.ok_or(DescribeError::NoInterface)?;
    let transport = match protocol {
        "tcp" => Transport::Tcp {
            sport,
            dport,
            flags: if flags == 0 { 0x02 } else { flags },
        },
        "udp" => Transport::Udp { sport, dport },
        "icmp6" => {
            let (icmp_type, code) = icmp.unwrap_or((128, 0));
            Transport::Icmp6 { icmp_type, code }
        }
        _ => {
            let (icmp_type, code) = icmp.unwrap_or((8, 0));
            Transport::Icmp { icmp_type, code }
        }
    };
    Ok(Described {
        src,
        dst,
        transport,
        ttl: ttl.unwrap_or(DEFAULT_TTL),
        in_iface,
    })
}

fn endpoint(what: &'static str, text: &str, ports: bool) -> Result<(IpAddr, u16), DescribeError> {
    let bad = |why: &str| DescribeError::Endpoint {
        what,
        text: text.to_string(),
        why: why.to_string(),
    };
    // `[v6]:port`, `a.b.c.d:port`, or the address alone (no ports).
    let (addr, port) = match (ports, text.strip_prefix('[')) {
        (true, Some(rest)) => match rest.split_once("]:") {
            Some((a, p)) => (a, Some(p)),
            None => return Err(bad("an IPv6 address with a port is [ADDRESS]:PORT")),
        },
        (true, None) => match text.rsplit_once(':') {
            Some((a, p)) if !a.contains(':') => (a, Some(p)),
            _ => {
                return Err(bad(
                    "tcp and udp need ADDRESS:PORT, e.g. 10.0.0.1:80 or [fd00::1]:80",
                ));
            }
        },
        (false, _) if text.parse::<IpAddr>().is_ok() => (text, None),
        (false, _) if text.contains(']') || text.matches(':').count() == 1 => {
            return Err(bad("icmp has no ports: give the address alone"));
        }
        (false, _) => (text, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| bad("not an IP address (A.B.C.D, or IPv6 like fd00::1)"))?;
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| bad("the port is a number from 0 to 65535"))?,
        None => 0,
    };
    Ok((addr, port))
}

/// The words of `flags`, as `parse` takes them (`SYN,ACK` style).
pub fn flag_names(flags: u8) -> String {
    let names: Vec<String> = TCP_FLAGS
        .iter()
        .filter(|(_, bit)| flags & bit != 0)
        .map(|(n, _)| n.to_ascii_uppercase())
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_example_parses() {
        let d = parse("tcp 10.0.0.5:1234 > 10.0.0.1:80 syn in eth0").unwrap();
        assert_eq!(d.src, IpAddr::from([10, 0, 0, 5]));
        assert_eq!(d.dst, IpAddr::from([10, 0, 0, 1]));
        assert_eq!(
            d.transport,
            Transport::Tcp {
                sport: 1234,
                dport: 80,
                flags: 0x02
            }
        );
        assert_eq!(d.in_iface, "eth0");
        assert_eq!(d.ttl, DEFAULT_TTL);
    }

    #[test]
    fn flags_icmp_types_and_ttl() {
        let d = parse("tcp 1.2.3.4:1 > 5.6.7.8:2 syn,ack psh in a0 ttl 3").unwrap();
        assert_eq!(
            d.transport,
            Transport::Tcp {
                sport: 1,
                dport: 2,
                flags: 0x1a
            }
        );
        assert_eq!(d.ttl, 3);
        for (desc, want) in [
            (
                "icmp 1.2.3.4 > 5.6.7.8 in a0",
                Transport::Icmp {
                    icmp_type: 8,
                    code: 0,
                },
            ),
            (
                "icmp 1.2.3.4 > 5.6.7.8 port-unreachable in a0",
                Transport::Icmp {
                    icmp_type: 3,
                    code: 3,
                },
            ),
            (
                "udp 1.2.3.4:53 > 5.6.7.8:53 in a0",
                Transport::Udp {
                    sport: 53,
                    dport: 53,
                },
            ),
        ] {
            assert_eq!(parse(desc).unwrap().transport, want, "{desc}");
        }
    }

    #[test]
    fn ipv6_packets() {
        let d = parse("tcp [fd00::5]:1234 > [fd00::1]:80 syn in eth0").unwrap();
        assert_eq!(d.src, "fd00::5".parse::<IpAddr>().unwrap());
        assert_eq!(d.dst, "fd00::1".parse::<IpAddr>().unwrap());
        assert_eq!(
            d.transport,
            Transport::Tcp {
                sport: 1234,
                dport: 80,
                flags: 0x02
            }
        );
        let d = parse("icmp6 fd00::5 > ff02::1 in eth0 ttl 255").unwrap();
        assert_eq!(
            d.transport,
            Transport::Icmp6 {
                icmp_type: 128,
                code: 0
            }
        );
        assert_eq!(d.ttl, 255);
        for (desc, want) in [
            (
                "ipv6-icmp fd00::5 > fd00::1 neighbour-solicitation in eth0",
                Transport::Icmp6 {
                    icmp_type: 135,
                    code: 0,
                },
            ),
            (
                "udp [::1]:53 > [fd00::1]:53 in lo",
                Transport::Udp {
                    sport: 53,
                    dport: 53,
                },
            ),
        ] {
            assert_eq!(parse(desc).unwrap().transport, want, "{desc}");
        }
    }

    #[test]
    fn mistakes_get_clear_errors() {
        let err = |t: &str| parse(t).unwrap_err().to_string();
        assert!(err("").contains("empty"));
        assert!(err("sctp 1.2.3.4:1 > 5.6.7.8:2 in a0").contains("unknown protocol 'sctp'"));
        assert!(err("tcp 1.2.3.4:1 5.6.7.8:2 in a0").contains("is not SRC > DST"));
        assert!(err("tcp 1.2.3.4 > 5.6.7.8:2 in a0").contains("ADDRESS:PORT"));
        assert!(err("icmp 1.2.3.4:1 > 5.6.7.8 in a0").contains("icmp has no ports"));
        assert!(err("tcp 1.2.3.400:1 > 5.6.7.8:2 in a0").contains("not an IP address"));
        assert!(err("tcp fd00::1:1 > [fd00::2]:2 in a0").contains("[fd00::1]:80"));
        assert!(err("tcp [fd00::1]:1 > 5.6.7.8:2 in a0").contains("two families"));
        assert!(err("icmp fd00::1 > fd00::2 in a0").contains("write icmp6"));
        assert!(err("icmp6 1.2.3.4 > 5.6.7.8 in a0").contains("write icmp for ICMP"));
        assert!(err("icmp6 fd00::1 > fd00::2 bogus in a0").contains("bad ICMP type 'bogus'"));
        assert!(err("tcp 1.2.3.4:99999 > 5.6.7.8:2 in a0").contains("port is a number"));
        assert!(err("tcp 1.2.3.4:1 > 5.6.7.8:2 syn").contains("add 'in IFACE'"));
        assert!(err("tcp 1.2.3.4:1 > 5.6.7.8:2 sin in a0").contains("'sin' means nothing"));
        assert!(err("udp 1.2.3.4:1 > 5.6.7.8:2 syn in a0").contains("'syn' means nothing"));
        assert!(err("tcp 1.2.3.4:1 > 5.6.7.8:2 in").contains("'in' needs a value"));
        assert!(err("tcp 1.2.3.4:1 > 5.6.7.8:2 ttl 0 in a0").contains("1 to 255"));
        assert!(err("icmp 1.2.3.4 > 5.6.7.8 bogus in a0").contains("bad ICMP type 'bogus'"));
        assert!(err("tcp 1.2.3.4:1 > 5.6.7.8:2 in a0 in a1").contains("given twice"));
    }
}
