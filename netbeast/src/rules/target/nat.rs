//! The nat table's translations: `-j DNAT`, `-j SNAT` (libxt_NAT),
//! `-j MASQUERADE` (libxt_MASQUERADE) and `-j REDIRECT` (libxt_REDIRECT).
//! One file, as one extension file of iptables does most of it: they share
//! the address and port ranges, the flags and their texts. Each is its
//! own module, with the options, chains and example iptables gives it.

use crate::rules::generate::{Dice, Random, Scope};
use std::fmt::Write as _;

use netbeast_common::{NatAddrs6, NatTarget, nat_flags, target as code};

use super::{TargetModule, TargetParser, check_placement};
use crate::rules::ext::{OptSpec, RuleContext, Value};
use crate::rules::model::{
    AddrRange, AddrRange6, Family, NatFlags, NatTo, PortRange, TableName, Target,
};
use crate::rules::parse::{ParseError, invalid, parse_c_number_in, parse_dotted, parse_port};
use std::net::Ipv6Addr;

const NAT: &[TableName] = &[TableName::Nat];

const TO_EXPECTED: &str =
    "an address, a range or a port, like 10.0.0.2, 10.0.0.2-10.0.0.9:8080 or :8080";
const PORTS_EXPECTED: &str = "a port or range like 8080 or 1024-2000";

const TO_DESTINATION: OptSpec = OptSpec {
    names: &["to-destination"],
    value: Value::One(TO_EXPECTED),
    negatable: false,
};
const TO_SOURCE: OptSpec = OptSpec {
    names: &["to-source"],
    value: Value::One(TO_EXPECTED),
    negatable: false,
};
const TO_PORTS: OptSpec = OptSpec {
    names: &["to-ports"],
    value: Value::One(PORTS_EXPECTED),
    negatable: false,
};
const RANDOM: OptSpec = OptSpec {
    names: &["random"],
    value: Value::None,
    negatable: false,
};
const RANDOM_FULLY: OptSpec = OptSpec {
    names: &["random-fully"],
    value: Value::None,
    negatable: false,
};
const PERSISTENT: OptSpec = OptSpec {
    names: &["persistent"],
    value: Value::None,
    negatable: false,
};

/// The options of each target, as libxt_NAT, libxt_MASQUERADE and
/// libxt_REDIRECT define them (iptables 1.8).
static DNAT_OPTIONS: [OptSpec; 3] = [TO_DESTINATION, RANDOM, PERSISTENT];
static SNAT_OPTIONS: [OptSpec; 4] = [TO_SOURCE, RANDOM, RANDOM_FULLY, PERSISTENT];
static MASQUERADE_OPTIONS: [OptSpec; 3] = [TO_PORTS, RANDOM, RANDOM_FULLY];
static REDIRECT_OPTIONS: [OptSpec; 2] = [TO_PORTS, RANDOM];

pub static DNAT: TargetModule = TargetModule {
    name: "DNAT",
    options: &DNAT_OPTIONS,
    example: "-t nat -A PREROUTING -p tcp --dport 80 -j DNAT --to-destination 10.0.0.2:8080",
    parser: || Box::new(NatParser::new(&DNAT)),
    code: code::DNAT,
    tables: NAT,
    chains: Some(&["PREROUTING", "OUTPUT"]),
    chain_reason: "DNAT changes where a new connection goes, before it is routed: use it in \
                   PREROUTING (arriving packets) or OUTPUT (locally sent ones)",
    save,
    list,
    suggest: |word| suggest("--to-destination", word),
    hidden: false,
    random: Random {
        weight: 3,
        draw: |d, s| random(d, s, &DNAT),
    },
};

pub static SNAT: TargetModule = TargetModule {
    name: "SNAT",
    options: &SNAT_OPTIONS,
    example: "-t nat -A POSTROUTING -o eth0 -j SNAT --to-source 203.0.113.1",
    parser: || Box::new(NatParser::new(&SNAT)),
    code: code::SNAT,
    tables: NAT,
    // The kernel takes SNAT in INPUT too; netbeast refuses nat INPUT
    // rules as a whole (the parser says so).
    chains: Some(&["POSTROUTING", "INPUT"]),
    chain_reason: "SNAT changes the source of a new connection once it is routed: use it in \
                   POSTROUTING",
    save,
    list,
    suggest: |word| suggest("--to-source", word),
    hidden: false,
    random: Random {
        weight: 3,
        draw: |d, s| random(d, s, &SNAT),
    },
};

pub static MASQUERADE: TargetModule = TargetModule {
    name: "MASQUERADE",
    options: &MASQUERADE_OPTIONS,
    example: "-t nat -A POSTROUTING -o eth0 -j MASQUERADE",
    parser: || Box::new(NatParser::new(&MASQUERADE)),
    code: code::MASQUERADE,
    tables: NAT,
    chains: Some(&["POSTROUTING"]),
    chain_reason: "MASQUERADE takes the address of the interface a packet leaves through, \
                   which is known in POSTROUTING only",
    save,
    list,
    suggest: |word| suggest("--to-ports", word),
    hidden: false,
    random: Random {
        weight: 2,
        draw: |d, s| random(d, s, &MASQUERADE),
    },
};

pub static REDIRECT: TargetModule = TargetModule {
    name: "REDIRECT",
    options: &REDIRECT_OPTIONS,
    example: "-t nat -A PREROUTING -p tcp --dport 80 -j REDIRECT --to-ports 8080",
    parser: || Box::new(NatParser::new(&REDIRECT)),
    code: code::REDIRECT,
    tables: NAT,
    chains: Some(&["PREROUTING", "OUTPUT"]),
    chain_reason: "REDIRECT sends a new connection to this host, before it is routed: use it \
                   in PREROUTING (arriving packets) or OUTPUT (locally sent ones)",
    save,
    list,
    suggest: |word| suggest("--to-ports", word),
    hidden: false,
    random: Random {
        weight: 2,
        draw: |d, s| random(d, s, &REDIRECT),
    },
};

/// A bare word that reads as a translation was probably meant for the
/// target's main option.
fn suggest(option: &str, word: &str) -> Option<String> {
    (parse_nat_to("", word, false).is_ok() || parse_nat_ports("", word).is_ok())
        .then(|| format!(" (did you mean {option} {word}?)"))
}

// ---------------------------------------------------------------- values

/// A port a translation leads to: 0-65535 or a service name. Port 0 is
/// accepted as iptables accepts it (libxt_REDIRECT.t: `--to-ports 0` is OK).
fn parse_nat_port(option: &str, text: &str) -> Result<u16, ParseError> {
    parse_port(option, text).map_err(|_| {
        invalid(
            option,
            "port",
            text,
            "use a number 0-65535 or a service name like http or https",
        )
    })
}

/// The port part of the nat targets: `port` or `first-last`, as
/// libxt_NAT and libxt_REDIRECT read it (a dash, not a colon). A range has
/// numbers at both ends; a text that does not start with a number is one
/// service name as a whole, dashes and all (`ftp-data`), so `ftp-ssh` and
/// `10-ssh` are refused as iptables refuses them.
pub fn parse_nat_ports(option: &str, text: &str) -> Result<PortRange, ParseError> {
    let numeric = |part: &str| {
        parse_c_number_in(part, u16::MAX.into())
            .map(|n| n as u16)
            .ok_or_else(|| {
                invalid(
                    option,
                    "port range",
                    text,
                    "a port range takes numbers at both ends, like 1024-2048",
                )
            })
    };
    let (first, last) = match text.split_once('-') {
        Some((first, last)) if parse_c_number_in(first, u16::MAX.into()).is_some() => {
            (numeric(first)?, numeric(last)?)
        }
        _ => {
            let port = parse_nat_port(option, text)?;
            (port, port)
        }
    };
    if first > last {
        return Err(invalid(
            option,
            "port range",
            text,
            "the first port is larger than the last; write it as low-high",
        ));
    }
    Ok(PortRange { first, last })
}

/// `first[-last]` of either family, each end read by `addr`; `last` below
/// `first` refused.
fn addr_range<A: Copy + Ord>(
    option: &str,
    text: &str,
    addr_text: &str,
    addr: impl Fn(&str) -> Result<A, ParseError>,
) -> Result<(A, A), ParseError> {
    let (first, last) = match addr_text.split_once('-') {
        Some((first, last)) => (addr(first)?, addr(last)?),
        None => {
            let one = addr(addr_text)?;
            (one, one)
        }
    };
    if first > last {
        return Err(invalid(
            option,
            "address range",
            text,
            "the first address is larger than the last; write it as low-high",
        ));
    }
    Ok((first, last))
}

/// `--to-destination`/`--to-source`: `ip[-ip][:port[-port[/base]]]`;
/// either part may be left out, not both. `zero_base`: a base port of 0 is
/// taken (SNAT's, see `NatParser::kernel_to`).
pub fn parse_nat_to(option: &str, text: &str, zero_base: bool) -> Result<NatTo, ParseError> {
    let (addr_text, port_text) = match text.split_once(':') {
        Some((addr, ports)) => (addr, Some(ports)),
        None => (text, None),
    };
    let addr = |one: &str| {
        parse_dotted(one, false).ok_or_else(|| {
            let reason = if one.is_empty() {
                "an address range has two ends: first-last".to_string()
            } else if one.chars().any(|c| c.is_ascii_alphabetic()) {
                "host names are not resolved; give an IPv4 address like 10.0.0.2".to_string()
            } else {
                "expected ip[-ip][:port[-port]], like 10.0.0.2, 10.0.0.2-10.0.0.9 or \
                 10.0.0.2:8080"
                    .to_string()
            };
            invalid(option, "address", text, reason)
        })
    };
    let addrs = match addr_text {
        "" => None,
        _ => {
            let (first, last) = addr_range(option, text, addr_text, addr)?;
            Some(AddrRange { first, last })
        }
    };
    let (ports, offset) = parse_to_ports(option, text, port_text, zero_base)?;
    if addrs.is_none() && ports.is_none() {
        return Err(invalid(
            option,
            "translation",
            text,
            "give an address, a port or both, like 10.0.0.2, :8080 or 10.0.0.2:8080",
        ));
    }
    Ok(NatTo {
        addrs,
        ports,
        offset,
        addrs6: None,
    })
}

/// The port part of `--to-destination`/`--to-source` (after the colon):
/// `port[-port[/base]]`, or nothing.
fn parse_to_ports(
    option: &str,
    text: &str,
    port_text: Option<&str>,
    zero_base: bool,
) -> Result<(Option<PortRange>, Option<u16>), ParseError> {
    Ok(match port_text {
        None => (None, None),
        // `first-last/base`: a shifted port map, checked as libxt_NAT
        // checks it (a range of numbers before the slash, a base port
        // 1-65535 or a service name after it).
        Some(ports) if let Some((range, base)) = ports.split_once('/') => {
            if !range.contains('-')
                || parse_c_number_in(range.split('-').next().unwrap_or(""), u16::MAX.into())
                    .is_none()
            {
                return Err(invalid(
                    option,
                    "port offset",
                    text,
                    "a shifted port map is a range and a base port, like 1000-2000/3000",
                ));
            }
            let range = parse_nat_ports(option, range)?;
            let base = parse_port(option, base)
                .ok()
                .filter(|&base| base != 0 || zero_base)
                .ok_or_else(|| {
                    invalid(
                        option,
                        "port offset",
                        text,
                        "the base port after / is a port from 1 to 65535",
                    )
                })?;
            (Some(range), Some(base))
        }
        Some(ports) => (Some(parse_nat_ports(option, ports)?), None),
    })
}

/// ip6tables' `--to-destination`/`--to-source` (libxt_NAT for IPv6):
/// `[ip[-ip]]:port[-port[/base]]` with the brackets, which set the
/// address apart from the port; `ip[-ip]` alone without them (so
/// `2001:db8::1:1024` is an address, as ip6tables reads it); `:port…`
/// alone keeps the address.
pub fn parse_nat_to6(option: &str, text: &str, zero_base: bool) -> Result<NatTo, ParseError> {
    let bad = |reason: &str| invalid(option, "address", text, reason.to_string());
    let (addr_text, port_text) = if let Some(rest) = text.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return Err(bad(
                "an address in brackets needs its closing ], like [fd00::2]:8080",
            ));
        };
        match after {
            "" => (addr, None),
            _ => match after.strip_prefix(':') {
                Some(ports) => (addr, Some(ports)),
                None => {
                    return Err(bad(
                        "a port follows the brackets after a colon, like [fd00::2]:8080",
                    ));
                }
            },
        }
    } else if let Some(ports) = text.strip_prefix(':') {
        ("", Some(ports))
    } else {
        (text, None)
    };
    let addr = |one: &str| {
        one.parse::<Ipv6Addr>().map_err(|_| {
            let reason = if one.is_empty() {
                "an address range has two ends: first-last"
            } else if one.parse::<std::net::Ipv4Addr>().is_ok() {
                "ip6tables translates to IPv6 addresses, like fd00::2; use iptables for IPv4"
            } else {
                "expected [ip[-ip]]:port or ip[-ip], like [fd00::2]:8080, fd00::2-fd00::9 \
                 or :8080 (host names are not resolved)"
            };
            bad(reason)
        })
    };
    let addrs6 = match addr_text {
        "" if port_text.is_some() && !text.starts_with('[') => None,
        "" => {
            return Err(bad(
                "give an address inside the brackets, like [fd00::2]:8080",
            ));
        }
        _ => {
            let (first, last) = addr_range(option, text, addr_text, addr)?;
            Some(AddrRange6 { first, last })
        }
    };
    let (ports, offset) = parse_to_ports(option, text, port_text, zero_base)?;
    if addrs6.is_none() && ports.is_none() {
        return Err(invalid(
            option,
            "translation",
            text,
            "give an address, a port or both, like fd00::2, :8080 or [fd00::2]:8080",
        ));
    }
    Ok(NatTo {
        addrs: None,
        ports,
        offset,
        addrs6,
    })
}

// ---------------------------------------------------------------- texts

/// `ip[-ip][:port[-port]]`, as libxt_NAT prints a range.
pub fn nat_to_text(to: &NatTo) -> String {
    let mut out = String::new();
    // ip6tables brackets the addresses when a port follows.
    if let Some(AddrRange6 { first, last }) = to.addrs6 {
        let bracket = to.ports.is_some();
        if bracket {
            out.push('[');
        }
        let _ = write!(out, "{first}");
        if first != last {
            let _ = write!(out, "-{last}");
        }
        if bracket {
            out.push(']');
        }
    }
    if let Some(AddrRange { first, last }) = to.addrs {
        let _ = write!(out, "{first}");
        if first != last {
            let _ = write!(out, "-{last}");
        }
    }
    if let Some(ports) = to.ports {
        let _ = write!(out, ":{}", nat_ports_text(ports));
        if let Some(base) = to.offset {
            let _ = write!(out, "/{base}");
        }
    }
    out
}

/// `port` or `first-last`, as the nat targets print ports.
pub fn nat_ports_text(ports: PortRange) -> String {
    if ports.first == ports.last {
        ports.first.to_string()
    } else {
        format!("{}-{}", ports.first, ports.last)
    }
}

/// The flags in libxt_NAT's order (which every nat target follows),
/// whatever order they were typed: `prefix` is ` --` for save, ` ` for -L.
fn write_flags(out: &mut String, flags: &NatFlags, prefix: &str) {
    for (set, flag) in [
        (flags.random, "random"),
        (flags.random_fully, "random-fully"),
        (flags.persistent, "persistent"),
    ] {
        if set {
            let _ = write!(out, "{prefix}{flag}");
        }
    }
}

fn save(target: &Target, out: &mut String) {
    let flags = match target {
        Target::Dnat { to, flags } => {
            let _ = write!(out, " -j DNAT --to-destination {}", nat_to_text(to));
            flags
        }
        Target::Snat { to, flags } => {
            let _ = write!(out, " -j SNAT --to-source {}", nat_to_text(to));
            flags
        }
        Target::Masquerade { ports, flags } | Target::Redirect { ports, flags } => {
            let _ = write!(out, " -j {}", target.name());
            if let Some(ports) = ports {
                let _ = write!(out, " --to-ports {}", nat_ports_text(*ports));
            }
            flags
        }
        _ => unreachable!("the nat modules save nat targets"),
    };
    write_flags(out, flags, " --");
}

/// As libxt_NAT, libxt_MASQUERADE and libxt_REDIRECT print them.
fn list(target: &Target, out: &mut String, _numeric: bool) {
    let flags = match target {
        Target::Dnat { to, flags } | Target::Snat { to, flags } => {
            let _ = write!(out, " to:{}", nat_to_text(to));
            flags
        }
        Target::Masquerade { ports, flags } => {
            if let Some(ports) = ports {
                let _ = write!(out, " masq ports: {}", nat_ports_text(*ports));
            }
            flags
        }
        Target::Redirect { ports, flags } => {
            if let Some(ports) = ports {
                let _ = write!(out, " redir ports {}", nat_ports_text(*ports));
            }
            flags
        }
        _ => unreachable!("the nat modules list nat targets"),
    };
    write_flags(out, flags, " ");
}

/// The kernel's form of a rule's translation (`None` for other targets).
/// An ip6tables rule's addresses are in its [`kernel6`] part, and its
/// `nat_flags::ADDR` here.
pub fn kernel(target: &Target) -> Option<NatTarget> {
    let (addrs, ports, offset, flags) = match target {
        Target::Dnat { to, flags } | Target::Snat { to, flags } => {
            (to.addrs, to.ports, to.offset, flags)
        }
        Target::Masquerade { ports, flags } | Target::Redirect { ports, flags } => {
            (None, *ports, None, flags)
        }
        _ => return None,
    };
    let v6 = kernel6(target).is_some();
    let mut nat = NatTarget {
        // The kernel picks a random port for either.
        flags: if flags.random || flags.random_fully {
            nat_flags::RANDOM
        } else {
            0
        },
        ..NatTarget::default()
    };
    if let Some(addrs) = addrs {
        nat.addr_first = u32::from(addrs.first);
        nat.addr_last = u32::from(addrs.last);
        nat.flags |= nat_flags::ADDR;
    }
    if v6 {
        nat.flags |= nat_flags::ADDR;
    }
    if let Some(ports) = ports {
        nat.port_first = ports.first;
        nat.port_last = ports.last;
        nat.flags |= nat_flags::PORTS;
    }
    if let (Some(base), Some(_)) = (offset, ports) {
        nat.port_base = base;
        nat.flags |= nat_flags::OFFSET;
    }
    Some(nat)
}

/// The IPv6 addresses of an ip6tables rule's translation, as the kernel
/// holds them (`NAT6_ADDRS`, words in packet order); `None` without.
pub fn kernel6(target: &Target) -> Option<NatAddrs6> {
    let (Target::Dnat { to, .. } | Target::Snat { to, .. }) = target else {
        return None;
    };
    let range = to.addrs6?;
    Some(NatAddrs6 {
        first: crate::loader::addr6_words(&range.first),
        last: crate::loader::addr6_words(&range.last),
    })
}

// ---------------------------------------------------------------- parsing

/// A nat target while its options are read.
#[derive(Clone, Debug)]
struct NatParser {
    module: &'static TargetModule,
    /// `--to-destination`/`--to-source` as typed (the option's name and
    /// its value), read by `finish`.
    to_text: Option<(String, String)>,
    /// `--to-destination`/`--to-source`, and the text as typed.
    to: Option<(NatTo, String)>,
    /// `--to-ports`, and the text as typed.
    ports: Option<(PortRange, String)>,
    flags: NatFlags,
    /// Options given, to refuse repeats.
    seen: Vec<&'static str>,
}

impl NatParser {
    fn new(module: &'static TargetModule) -> Self {
        NatParser {
            module,
            to_text: None,
            to: None,
            ports: None,
            flags: NatFlags::default(),
            seen: Vec::new(),
        }
    }

    /// The translation as the kernel will hold it: SNAT's target
    /// (revision 0, `nf_nat_ipv4_multi_range_compat`) has no field for a
    /// shifted port map's base, so iptables passes the offset flag with a
    /// base of 0 — the kernel maps from port 0 and `-S` prints `/0`.
    /// DNAT's (revision 2) keeps the base given.
    fn kernel_to(&self, to: NatTo) -> NatTo {
        match (self.module.code, to.offset) {
            (code::SNAT, Some(_)) => NatTo {
                offset: Some(0),
                ..to
            },
            _ => to,
        }
    }

    /// DNAT's `--to-destination`, SNAT's `--to-source`.
    fn to_option(&self) -> Option<&'static str> {
        match self.module.code {
            code::DNAT => Some("--to-destination"),
            code::SNAT => Some("--to-source"),
            _ => None,
        }
    }
}

impl TargetParser for NatParser {
    fn check_repeat(&self, option: &'static OptSpec) -> Result<(), ParseError> {
        if !self.seen.contains(&option.name()) {
            return Ok(());
        }
        let to = matches!(option.name(), "to-destination" | "to-source");
        Err(ParseError::RepeatedTargetOption {
            target: self.module.name,
            option: option.flag(),
            hint: if to {
                "; netbeast translates to one address range (ip-ip) and one port range"
            } else {
                ""
            },
        })
    }

    fn option(&mut self, option: &'static OptSpec, values: &[&str]) -> Result<(), ParseError> {
        self.seen.push(option.name());
        let name = &option.flag();
        match option.name() {
            "to-destination" | "to-source" => {
                // SNAT's base is 0 once stored, and printed so: netbeast
                // takes `/0` back from its own save, where iptables-restore
                // refuses the line iptables-save wrote.
                // Read once the family is known (`finish`): ip6tables
                // writes `[fd00::2]:8080`.
                self.to_text = Some((name.to_string(), values[0].to_string()))
            }
            "to-ports" => {
                self.ports = Some((parse_nat_ports(name, values[0])?, values[0].to_string()))
            }
            "random" => self.flags.random = true,
            "random-fully" => self.flags.random_fully = true,
            "persistent" => self.flags.persistent = true,
            other => unreachable!("--{other} is no nat option"),
        }
        Ok(())
    }

    /// The mandatory option, ports only for TCP and UDP, then the table
    /// and chain.
    fn finish(mut self: Box<Self>, rule: &RuleContext) -> Result<Target, ParseError> {
        if let Some((name, text)) = self.to_text.take() {
            let zero_base = self.module.code == code::SNAT;
            let to = match rule.family {
                Family::V4 => parse_nat_to(&name, &text, zero_base)?,
                Family::V6 => parse_nat_to6(&name, &text, zero_base)?,
            };
            self.to = Some((to, text));
        }
        let given_ports = match (&self.to, &self.ports) {
            (Some((to, text)), _) if to.ports.is_some() => Some((
                self.to_option().expect("only DNAT and SNAT have --to"),
                text,
            )),
            (_, Some((_, text))) => Some(("--to-ports", text)),
            _ => None,
        };
        let to = match self.to_option() {
            Some(option) => Some(self.to.as_ref().map(|(to, _)| self.kernel_to(*to)).ok_or(
                ParseError::MissingTargetOption {
                    target: self.module.name,
                    option,
                    example: if self.module.code == code::DNAT {
                        "; e.g. -j DNAT --to-destination 10.0.0.2:8080"
                    } else {
                        "; e.g. -j SNAT --to-source 203.0.113.1"
                    },
                },
            )?),
            None => None,
        };
        if let Some((option, value)) = given_ports {
            match rule.plain_protocol() {
                Some(6 | 17) => {}
                Some(132 | 33) => {
                    return Err(ParseError::Unsupported {
                        what: "port translation for SCTP and DCCP".into(),
                        hint: "; netbeast translates TCP and UDP ports".into(),
                    });
                }
                _ => {
                    return Err(ParseError::NatPortsNeedProtocol {
                        option,
                        value: value.clone(),
                    });
                }
            }
        }
        check_placement(self.module, rule)?;
        let ports = self.ports.map(|(ports, _)| ports);
        let flags = self.flags;
        Ok(match (self.module.code, to) {
            (code::DNAT, Some(to)) => Target::Dnat { to, flags },
            (code::SNAT, Some(to)) => Target::Snat { to, flags },
            (code::MASQUERADE, _) => Target::Masquerade { ports, flags },
            (code::REDIRECT, _) => Target::Redirect { ports, flags },
            _ => unreachable!("DNAT and SNAT have their --to"),
        })
    }

    fn boxed_clone(&self) -> Box<dyn TargetParser> {
        Box::new(self.clone())
    }
}

// ---------------------------------------------------------------- random

/// Only where the module may be: the nat table, reached only from its
/// chains (SNAT from POSTROUTING: netbeast has no nat INPUT). Translations
/// from the palette's (few, so rules share them), ports only in TCP and
/// UDP rules, the flags the target takes.
fn random(d: &mut Dice, s: &Scope, module: &'static TargetModule) -> Option<Target> {
    let chains: &[&str] = match module.code {
        code::SNAT => &["POSTROUTING"],
        _ => module.chains.unwrap_or(&[]),
    };
    if s.table != TableName::Nat || !s.only_from(chains) {
        return None;
    }
    let p = s.palette;
    let with_ports = matches!(s.plain_protocol(), Some(6 | 17));
    let ports = |d: &mut Dice| {
        let port = |d: &mut Dice| {
            if d.wild(p) {
                d.next() as u16
            } else {
                d.pick(p.nat_ports)
            }
        };
        let a = port(d);
        let b = if d.chance(40) { port(d) } else { a };
        PortRange {
            first: a.min(b),
            last: a.max(b),
        }
    };
    let takes = |name: &str| module.options.iter().any(|o| o.name() == name);
    let flags = NatFlags {
        random: takes("random") && d.chance(20),
        random_fully: takes("random-fully") && d.chance(10),
        persistent: takes("persistent") && d.chance(10),
    };
    let to = |d: &mut Dice| {
        let addrs = d.maybe(80, |d| {
            let addr = |d: &mut Dice| {
                if d.wild(p) {
                    d.next() as u32
                } else {
                    u32::from_be_bytes(d.pick(p.nat_addrs))
                }
            };
            let a = addr(d);
            let b = if d.chance(30) { addr(d) } else { a };
            AddrRange {
                first: a.min(b).into(),
                last: a.max(b).into(),
            }
        });
        let port_range = (with_ports && (addrs.is_none() || d.chance(50))).then(|| ports(d));
        let to = match (addrs, port_range) {
            (None, None) if with_ports => NatTo {
                addrs: None,
                ports: Some(ports(d)),
                offset: None,
                addrs6: None,
            },
            (None, None) => NatTo {
                addrs: Some(AddrRange {
                    first: p.nat_addrs[0].into(),
                    last: p.nat_addrs[0].into(),
                }),
                ports: None,
                offset: None,
                addrs6: None,
            },
            (addrs, ports) => NatTo {
                addrs,
                ports,
                offset: None,
                addrs6: None,
            },
        };
        // A shifted port map, DNAT's only: SNAT's prints a base of 0,
        // which no parser takes back (as iptables). Only on a real range:
        // iptables prints `port/base` for a range of one, which it cannot
        // read back either.
        let offset = match to.ports {
            Some(r) if module.code == code::DNAT && r.first < r.last && d.chance(25) => {
                Some(if d.wild(p) {
                    (d.next() as u16).max(1)
                } else {
                    d.pick(p.nat_ports).max(1)
                })
            }
            _ => None,
        };
        NatTo { offset, ..to }
    };
    let own_ports = |d: &mut Dice| if with_ports { d.maybe(50, ports) } else { None };
    Some(match module.code {
        code::DNAT => Target::Dnat { to: to(d), flags },
        code::SNAT => Target::Snat { to: to(d), flags },
        code::MASQUERADE => Target::Masquerade {
            ports: own_ports(d),
            flags,
        },
        _ => Target::Redirect {
            ports: own_ports(d),
            flags,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ip6tables 1.8.9's `--to-destination` texts: as typed, and as its
    /// `-S`/save print them (the `to:` of `-L` is the same text).
    /// Measured in a namespace with the real ip6tables.
    const IP6TABLES: &[(&str, &str)] = &[
        ("[fd00::2]:8080", "[fd00::2]:8080"),
        ("fd00::2", "fd00::2"),
        ("[fd00::2]", "fd00::2"),
        ("[fd00::2]:80-90", "[fd00::2]:80-90"),
        ("[fd00::2-fd00::9]:80", "[fd00::2-fd00::9]:80"),
        ("fd00::2-fd00::9", "fd00::2-fd00::9"),
        (":8080", ":8080"),
        ("[fd00::2]:80-90/100", "[fd00::2]:80-90/100"),
        ("2001:db8::1", "2001:db8::1"),
        // No brackets: all of it is the address.
        ("2001:db8::1:1024", "2001:db8::1:1024"),
    ];

    #[test]
    fn ipv6_translations_read_and_print_as_ip6tables() {
        for (typed, printed) in IP6TABLES {
            let to = parse_nat_to6("--to-destination", typed, false)
                .unwrap_or_else(|e| panic!("{typed}: {e}"));
            assert_eq!(nat_to_text(&to), *printed, "{typed}");
            assert_eq!(to.addrs, None, "{typed}: no IPv4 range");
            // What it prints reads back as the same translation.
            assert_eq!(
                parse_nat_to6("--to-destination", printed, false).unwrap(),
                to,
                "{printed}"
            );
        }
        let to = parse_nat_to6("--to-destination", "[fd00::2-fd00::9]:80-90/100", false).unwrap();
        assert_eq!(
            to.addrs6,
            Some(AddrRange6 {
                first: "fd00::2".parse().unwrap(),
                last: "fd00::9".parse().unwrap(),
            })
        );
        assert_eq!(
            to.ports,
            Some(PortRange {
                first: 80,
                last: 90
            })
        );
        assert_eq!(to.offset, Some(100));
        let to = parse_nat_to6("--to-destination", "2001:db8::1:1024", false).unwrap();
        assert_eq!(to.ports, None, "an unbracketed text is one address");
    }

    #[test]
    fn ipv6_translations_refused_with_reasons() {
        for (text, why) in [
            ("[fd00::2", "closing ]"),
            ("[fd00::2]8080", "after a colon"),
            ("[]:80", "inside the brackets"),
            ("10.0.0.2", "use iptables for IPv4"),
            ("[10.0.0.2]:80", "use iptables for IPv4"),
            ("host.example", "host names are not resolved"),
            ("fd00::9-fd00::2", "low-high"),
            ("[fd00::2]:90-80", "low-high"),
            ("[fd00::2]:99999", "port"),
            (":", "port"),
        ] {
            let e = parse_nat_to6("--to-destination", text, false)
                .expect_err(text)
                .to_string();
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    /// An IPv4 rule's translation prints as before: the IPv6 field is only
    /// ever set by ip6tables' reading.
    #[test]
    fn ipv4_translations_are_untouched() {
        let to = parse_nat_to("--to-destination", "10.0.0.2-10.0.0.9:80-90", false).unwrap();
        assert_eq!(to.addrs6, None);
        assert_eq!(nat_to_text(&to), "10.0.0.2-10.0.0.9:80-90");
        assert!(parse_nat_to("--to-destination", "[fd00::2]:80", false).is_err());
    }
}
