//! `-m tcp` and `-m udp` (libxt_tcp, libxt_udp): ports, and TCP's flag
//! tests `--tcp-flags MASK COMP` and `--syn` (`FIN,SYN,RST,ACK SYN`), and
//! `--tcp-option N` (a guard, `guard_kind::TCP_OPTION`: a set of option
//! kinds is no small key; the pipeline walks the options only while a rule
//! tests them).

use crate::compile::lower::{Atom, Lowering, REAL_L4, key_range, keys_where, negatable_l4};
use crate::rules::generate::{Dice, Random, Scope};
use netbeast_common::{Guard, TCP_FLAGS_NONE, field, guard_kind};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, bang};
use crate::compile::PacketView;
use crate::rules::model::{Family, Match, Negatable, PortRange};
use crate::rules::names::Names;
use crate::rules::parse::parse_port;

use crate::rules::parse::{ParseError, invalid};

/// Flag names in the order iptables prints them; `ALL` and `NONE` are
/// taken on input only.
pub const FLAG_NAMES: &[(&str, u8)] = &[
    ("FIN", 0x01),
    ("SYN", 0x02),
    ("RST", 0x04),
    ("PSH", 0x08),
    ("ACK", 0x10),
    ("URG", 0x20),
    ("ALL", 0x3f),
    ("NONE", 0x00),
];

/// `--syn`'s flags.
pub const SYN: TcpFlags = TcpFlags {
    mask: 0x17,
    comp: 0x02,
};

/// `(flags & mask) == comp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpFlags {
    pub mask: u8,
    pub comp: u8,
}

/// `FIN,SYN,RST,ACK`: the names of a flag set, `NONE` for none.
pub fn flags_text(mut flags: u8) -> String {
    let mut names = Vec::new();
    while flags != 0 {
        let Some((name, bit)) = FLAG_NAMES[..6].iter().find(|(_, bit)| flags & bit != 0) else {
            break;
        };
        names.push(*name);
        flags &= !bit;
    }
    if names.is_empty() {
        "NONE".to_string()
    } else {
        names.join(",")
    }
}

impl TcpFlags {
    pub fn matches(&self, flags: u8) -> bool {
        flags & self.mask == self.comp
    }
}

/// `SYN,ACK` (any case), `ALL` or `NONE` as a flag set.
pub fn parse_flags(text: &str) -> Result<u8, ParseError> {
    let mut flags = 0;
    for name in text.split(',') {
        let Some((_, bit)) = FLAG_NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        else {
            return Err(invalid(
                "--tcp-flags",
                "TCP flag",
                name,
                "use FIN, SYN, RST, PSH, ACK, URG, ALL or NONE, separated by commas",
            ));
        };
        flags |= bit;
    }
    Ok(flags)
}

/// `-m tcp` / `-m udp` / `-m dccp` / `-m sctp` (also loaded by `-p tcp`
/// etc. on their first option): ports, and for TCP the flag tests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    /// 6 (tcp), 17 (udp), 33 (dccp) or 132 (sctp).
    pub protocol: u8,
    pub sport: Option<Negatable<PortRange>>,
    pub dport: Option<Negatable<PortRange>>,
    /// `--tcp-flags` / `--syn` (TCP only).
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub tcp_flags: Option<Negatable<TcpFlags>>,
    /// `--tcp-option N` (TCP only; 1..=255).
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub tcp_option: Option<Negatable<u8>>,
    /// `--chunk-types MODE LIST` (SCTP only; `sctp.rs`).
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub sctp_chunks: Option<Negatable<super::sctp::ChunkTypes>>,
    /// `--dccp-types` and `--dccp-option` (DCCP only; `dccp.rs`).
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub dccp: Option<super::dccp::DccpTests>,
}

/// The match's name (its module's) for a protocol of [`Ports`].
pub fn module_name(protocol: u8) -> &'static str {
    match protocol {
        6 => "tcp",
        17 => "udp",
        33 => "dccp",
        _ => "sctp",
    }
}

/// Whether the match keeps a port option that covers every port: libxt_dccp
/// and libxt_sctp have a flag per option and print `--sport 0:65535`;
/// libxt_tcp and libxt_udp store the full range for "any port".
fn keeps_full_range(protocol: u8) -> bool {
    matches!(protocol, 33 | 132)
}

/// The full range: what the kernel stores for "any port".
pub fn is_any_port(range: &PortRange) -> bool {
    range.first == 0 && range.last == u16::MAX
}

/// `22`, `1024:65535`.
pub fn port_range_text(range: PortRange) -> String {
    if range.first == range.last {
        range.first.to_string()
    } else {
        format!("{}:{}", range.first, range.last)
    }
}

/// libxt_tcp's print_ports: ` dpt:22`, ` dpts:1000:2000`, ` dpt:!22`;
/// each port as `port` writes it (a number, or a service name).
fn list_ports(
    out: &mut String,
    name: &str,
    ports: &Option<Negatable<PortRange>>,
    port: impl Fn(u16) -> String,
) {
    let Some(ports) = ports else {
        return;
    };
    if is_any_port(&ports.value) && !ports.negated {
        return;
    }
    let bang = if ports.negated { "!" } else { "" };
    let range = ports.value;
    if range.first == range.last {
        let _ = write!(out, " {name}:{bang}{}", port(range.first));
    } else {
        let _ = write!(
            out,
            " {name}s:{bang}{}:{}",
            port(range.first),
            port(range.last)
        );
    }
}

impl MatchExt for Ports {
    fn save(&self, out: &mut String) {
        let name = module_name(self.protocol);
        let _ = write!(out, " -m {name}");
        for (flag, ports) in [("--sport", &self.sport), ("--dport", &self.dport)] {
            // As libxt_tcp: the full range means "any port" and is not
            // printed — unless negated: `! --sport 0:65535` matches nothing.
            if let Some(ports) = ports
                .as_ref()
                .filter(|p| p.negated || !is_any_port(&p.value) || keeps_full_range(self.protocol))
            {
                let _ = write!(
                    out,
                    "{} {flag} {}",
                    bang(ports.negated),
                    port_range_text(ports.value)
                );
            }
        }
        if let Some(c) = &self.sctp_chunks {
            let _ = write!(out, "{} --chunk-types", bang(c.negated));
            c.value.text(out, false);
        }
        if let Some(d) = &self.dccp {
            d.save(out);
        }
        if let Some(o) = &self.tcp_option {
            let _ = write!(out, "{} --tcp-option {}", bang(o.negated), o.value);
        }
        if let Some(f) = &self.tcp_flags {
            let _ = write!(
                out,
                "{} --tcp-flags {} {}",
                bang(f.negated),
                flags_text(f.value.mask),
                flags_text(f.value.comp)
            );
        }
    }

    fn list(&self, out: &mut String, numeric: bool) {
        self.list_with(out, numeric, |p| p.to_string());
    }

    fn list_named(&self, out: &mut String, names: &Names, _protocol: u8) {
        self.list_with(out, false, |p| names.service(p, self.protocol));
    }

    fn matches(&self, pkt: &PacketView) -> bool {
        let Some((s, d)) = pkt.ports() else {
            return false;
        };
        let holds = |r: &Option<Negatable<PortRange>>, port| {
            r.as_ref()
                .is_none_or(|r| r.value.contains(port) != r.negated)
        };
        holds(&self.sport, s)
            && holds(&self.dport, d)
            && self.tcp_flags.as_ref().is_none_or(|f| {
                pkt.tcp_flags()
                    .is_some_and(|flags| f.value.matches(flags) != f.negated)
            })
    }

    fn lower(&self) -> Lowering {
        let ports = |r: &Option<Negatable<PortRange>>| match r {
            Some(r) => negatable_l4(
                key_range(r.value.first.into(), r.value.last.into()),
                r.negated,
            ),
            None => vec![REAL_L4],
        };
        // Even without --sport or --dport, `-m tcp`/`-m udp` needs a port
        // header: it never matches fragments or short headers.
        let mut atoms = vec![
            Atom::Keys(field::L4A, ports(&self.sport)),
            Atom::Keys(field::L4B, ports(&self.dport)),
        ];
        if let Some(f) = &self.tcp_flags {
            // The flag bytes it holds for, never `TCP_FLAGS_NONE` (a packet
            // without a whole TCP header fails the test, negated or not).
            atoms.push(Atom::Keys(
                field::TCP_FLAGS,
                keys_where(field::TCP_FLAGS, |k| {
                    k < TCP_FLAGS_NONE && f.value.matches(k as u8) != f.negated
                }),
            ));
        }
        let mut guards = Vec::new();
        // The guard alone tells a packet whose options it could not read:
        // no flags atom here, which would turn on the drop of TCP headers
        // cut before their flags (`ACTIVE_TCP_FLAGS`) for a rule that does
        // not test them.
        if let Some(o) = &self.tcp_option {
            guards.push(Guard {
                kind: guard_kind::TCP_OPTION,
                negated: u32::from(o.negated),
                a: u64::from(o.value),
                ..Guard::default()
            });
        }
        // After the ports, as xt_sctp tests them.
        if let Some(c) = &self.sctp_chunks {
            guards.push(c.value.guard(c.negated));
        }
        // After the ports too, as xt_dccp.
        if let Some(g) = self.dccp.as_ref().and_then(super::dccp::DccpTests::guard) {
            guards.push(g);
        }
        if guards.is_empty() {
            Lowering::all(atoms)
        } else {
            Lowering::Guarded(vec![atoms], guards)
        }
    }

    fn check(&self, protocol: Option<u8>) -> Result<(), String> {
        if protocol != Some(self.protocol) || !matches!(self.protocol, 6 | 17 | 33 | 132) {
            return Err(
                "--sport/--dport need `-p tcp`, `-p udp`, `-p dccp` or `-p sctp`".to_string(),
            );
        }
        if self.sctp_chunks.is_some() && self.protocol != 132 {
            return Err("--chunk-types needs `-p sctp`".to_string());
        }
        if let Some(d) = &self.dccp {
            if self.protocol != 33 {
                return Err("--dccp-types/--dccp-option need `-p dccp`".to_string());
            }
            if d.option.as_ref().is_some_and(|o| o.value == 0) {
                return Err("--dccp-option needs an option number from 1 to 255".to_string());
            }
        }
        if self.tcp_flags.is_some() && self.protocol != 6 {
            return Err("--tcp-flags/--syn need `-p tcp`".to_string());
        }
        if self
            .tcp_option
            .as_ref()
            .is_some_and(|o| o.value == 0 || self.protocol != 6)
        {
            return Err(
                "--tcp-option needs `-p tcp` and an option number from 1 to 255".to_string(),
            );
        }
        Ok(())
    }
}

const PORT: &str = "a port or range like 22 or 1024:65535";

pub(super) const SPORT: OptSpec = OptSpec {
    names: &["sport", "source-port"],
    value: Value::One(PORT),
    negatable: true,
};

pub(super) const DPORT: OptSpec = OptSpec {
    names: &["dport", "destination-port"],
    value: Value::One(PORT),
    negatable: true,
};

static UDP_OPTIONS: [OptSpec; 2] = [SPORT, DPORT];

static TCP_OPTIONS: [OptSpec; 5] = [
    SPORT,
    DPORT,
    OptSpec {
        names: &["syn"],
        value: Value::None,
        negatable: true,
    },
    OptSpec {
        names: &["tcp-flags"],
        value: Value::Two("two flag lists like SYN,ACK,FIN,RST SYN"),
        negatable: true,
    },
    OptSpec {
        names: &["tcp-option"],
        value: Value::One("a TCP option number"),
        negatable: true,
    },
];

pub static TCP: MatchModule = MatchModule {
    name: "tcp",
    family: None,
    options: &TCP_OPTIONS,
    example: "e.g. -p tcp --dport 22",
    parser: || Box::new(PortsParser::new(6)),
    implicit_protocol: Some(6),
    random: Random {
        weight: 6,
        draw: |d, s| random_ports(d, s, 6),
    },
};

pub static UDP: MatchModule = MatchModule {
    name: "udp",
    family: None,
    options: &UDP_OPTIONS,
    example: "e.g. -p udp --dport 53",
    parser: || Box::new(PortsParser::new(17)),
    implicit_protocol: Some(17),
    random: Random {
        weight: 6,
        draw: |d, s| random_ports(d, s, 17),
    },
};

/// The parser of tcp, udp, dccp and sctp (`sctp.rs` and `dccp.rs` add
/// their tests).
#[derive(Debug)]
pub(super) struct PortsParser {
    ports: Ports,
}

impl PortsParser {
    pub(super) fn new(protocol: u8) -> Self {
        PortsParser {
            ports: Ports {
                protocol,
                sport: None,
                dport: None,
                tcp_flags: None,
                tcp_option: None,
                sctp_chunks: None,
                dccp: None,
            },
        }
    }
}

/// `--sport`/`--dport`: `port`, `first:last`, `:last` or `first:`.
pub fn parse_port_range(option: &str, text: &str) -> Result<PortRange, ParseError> {
    let Some((first, last)) = text.split_once(':') else {
        let port = parse_port(option, text)?;
        return Ok(PortRange {
            first: port,
            last: port,
        });
    };
    let first = if first.is_empty() {
        0
    } else {
        parse_port(option, first)?
    };
    let last = if last.is_empty() {
        u16::MAX
    } else {
        parse_port(option, last)?
    };
    if first > last {
        return Err(invalid(
            option,
            "port range",
            text,
            "the first port is larger than the last; write it as low:high",
        ));
    }
    Ok(PortRange { first, last })
}

impl MatchParser for PortsParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        values: &[&str],
    ) -> Result<(), ParseError> {
        let ports = &mut self.ports;
        match option.name() {
            "sport" | "dport" => {
                let value = parse_port_range(&option.flag(), values[0])?;
                let slot = if option.name() == "sport" {
                    &mut ports.sport
                } else {
                    &mut ports.dport
                };
                if slot.is_some() {
                    return Err(ParseError::Repeated {
                        option: option.flag(),
                        hint: "; use -m multiport for several ports",
                    });
                }
                *slot = Some(Negatable { negated, value });
                Ok(())
            }
            "syn" | "tcp-flags" => {
                let value = if option.name() == "syn" {
                    SYN
                } else {
                    TcpFlags {
                        mask: parse_flags(values[0])?,
                        comp: parse_flags(values[1])?,
                    }
                };
                if ports.tcp_flags.is_some() {
                    return Err(ParseError::Repeated {
                        option: "--syn/--tcp-flags".into(),
                        hint: "; one -m tcp takes one of them",
                    });
                }
                ports.tcp_flags = Some(Negatable { negated, value });
                Ok(())
            }
            "tcp-option" => {
                // libxt_tcp: 1 to 255 (0 is the kernel's "no option test").
                let value = super::number(option, "TCP option", values[0], 255)
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| {
                        invalid(
                            &option.flag(),
                            "TCP option",
                            values[0],
                            "expected an option kind from 1 to 255 (2 is MSS, 3 window scale, \
                             4 SACK permitted, 8 timestamps)",
                        )
                    })?;
                super::once(
                    &mut ports.tcp_option,
                    Negatable {
                        negated,
                        value: value as u8,
                    },
                    option,
                )
            }
            "dccp-types" => {
                let value = super::dccp::parse_types(values[0])?;
                let tests = ports.dccp.get_or_insert_default();
                super::once(&mut tests.types, Negatable { negated, value }, option)
            }
            "dccp-option" => {
                let value = super::dccp::parse_option(option, values[0])?;
                let tests = ports.dccp.get_or_insert_default();
                super::once(&mut tests.option, Negatable { negated, value }, option)
            }
            "chunk-types" => super::once(
                &mut ports.sctp_chunks,
                Negatable {
                    negated,
                    value: super::sctp::parse_chunk_types(values[0], values[1])?,
                },
                option,
            ),
            _ => Err(ParseError::Unsupported {
                what: format!("{} (-m {})", option.flag(), module_name(ports.protocol)),
                hint: "; netbeast matches its --sport and --dport".into(),
            }),
        }
    }

    /// The rule's protocol must be the match's, not negated (the kernel
    /// refuses it otherwise).
    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Match, ParseError> {
        let mut ports = self.ports;
        let wanted = ports.protocol;
        if rule.plain_protocol() != Some(wanted) {
            let name = module_name(wanted);
            let option = match (rule.implicit, &ports.dport, &ports.sport) {
                (true, Some(_), _) => "--dport".to_string(),
                (true, None, Some(_)) => "--sport".to_string(),
                (true, None, None) if wanted == 33 => "--dccp-types/--dccp-option".to_string(),
                (true, None, None) => "--syn/--tcp-flags/--tcp-option".to_string(),
                _ => format!("-m {name}"),
            };
            return Err(ParseError::NeedsProtocol {
                option,
                needs: format!("-p {name} (not negated) earlier in the rule"),
            });
        }
        // The full range is what the kernel stores for "any port": not
        // printed, so only kept when negated (a rule that matches nothing).
        let keep_full = keeps_full_range(wanted);
        let real = |p: Option<Negatable<PortRange>>| {
            p.filter(|p| p.negated || keep_full || !is_any_port(&p.value))
        };
        ports.sport = real(ports.sport);
        ports.dport = real(ports.dport);
        Ok(Match::Ports(ports))
    }
}

impl Ports {
    /// `-L`'s text, ports written by `port`.
    fn list_with(&self, out: &mut String, numeric: bool, port: impl Fn(u16) -> String) {
        let _ = write!(out, " {}", module_name(self.protocol));
        list_ports(out, "spt", &self.sport, &port);
        list_ports(out, "dpt", &self.dport, &port);
        // libxt_sctp: ` ! any DATA,INIT`, types as numbers with -n.
        if let Some(c) = &self.sctp_chunks {
            if c.negated {
                out.push_str(" !");
            }
            c.value.text(out, numeric);
        }
        // libxt_dccp: ` ! REQUEST,SYNC option=!5`.
        if let Some(d) = &self.dccp {
            d.list(out, numeric);
        }
        // libxt_tcp: ` option=2`, ` option=!2`.
        if let Some(o) = &self.tcp_option {
            let bang = if o.negated { "!" } else { "" };
            let _ = write!(out, " option={bang}{}", o.value);
        }
        // libxt_tcp: ` flags:FIN,SYN,RST,ACK/SYN`, `flags:!...`;
        // numerically ` flags:0x17/0x02`.
        if let Some(f) = &self.tcp_flags {
            let bang = if f.negated { "!" } else { "" };
            let (mask, comp) = (f.value.mask, f.value.comp);
            let _ = if numeric {
                write!(out, " flags:{bang}0x{mask:02X}/0x{comp:02X}")
            } else {
                write!(
                    out,
                    " flags:{bang}{}/{}",
                    flags_text(mask),
                    flags_text(comp)
                )
            };
        }
    }
}

/// A ports match of `protocol` (only in a rule of that protocol): source
/// and destination ports, and for TCP now and then a flags test and an
/// option test (not in nat OUTPUT, which has no packet). tcp and udp store the full range as
/// no test, as their parser does.
pub(super) fn random_ports(d: &mut Dice, s: &Scope, protocol: u8) -> Option<Match> {
    if s.plain_protocol() != Some(protocol) {
        return None;
    }
    let p = s.palette;
    let port = |d: &mut Dice, percent| {
        d.maybe(percent, |d| d.port_range(p))
            .map(|r| d.negatable(p, r))
            .filter(|r| r.negated || !matches!(protocol, 6 | 17) || !is_any_port(&r.value))
    };
    let sport = port(d, 45);
    let dport = port(d, 65);
    let tcp_flags = (protocol == 6 && s.has_packet())
        .then(|| d.maybe(30, random_flags))
        .flatten()
        .map(|f| d.negatable(p, f));
    // The options SYNs carry (MSS, window scale, SACK permitted,
    // timestamps), no-op, and a rare one.
    // Not in ip6tables rules: the IPv6 data plane does not read TCP
    // options yet (the parser refuses `--tcp-option` there).
    let tcp_option = (protocol == 6 && s.has_packet() && s.family == Family::V4)
        .then(|| d.maybe(15, |d| d.pick(&[1u8, 2, 3, 4, 8, 30])))
        .flatten()
        .map(|o| d.negatable(p, o));
    Some(Match::Ports(Ports {
        protocol,
        sport,
        dport,
        tcp_flags,
        tcp_option,
        sctp_chunks: None,
        dccp: None,
    }))
}

/// `--tcp-flags MASK COMP`: the common tests (`--syn`, SYN,ACK, RST, ALL
/// NONE) and random ones.
fn random_flags(d: &mut Dice) -> TcpFlags {
    if d.chance(60) {
        d.pick(&[
            SYN,
            TcpFlags {
                mask: 0x12,
                comp: 0x12,
            },
            TcpFlags {
                mask: 0x04,
                comp: 0x04,
            },
            TcpFlags {
                mask: 0x3f,
                comp: 0x00,
            },
        ])
    } else {
        let mask = d.next() as u8 & 0x3f;
        TcpFlags {
            mask,
            comp: d.next() as u8 & mask,
        }
    }
}
