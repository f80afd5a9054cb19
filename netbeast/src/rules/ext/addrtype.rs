//! `-m addrtype --src-type T[,T...] --dst-type T[,T...]` (each `!`-able,
//! with `--limit-iface-in/out`): the type the kernel's local routing table
//! gives an address (xt_addrtype, revision 1). With an interface limit, a
//! route's type counts only when the route goes out of the packet's input
//! (output) interface, else the address is UNICAST: bits of the address
//! type key (`addr_type::ON_IN`, `ON_OUT`), which the kernel sets from the
//! route's interface in the `ADDR_TYPES` trie.
//!
//! ip6tables' match (xt_addrtype's `match_type6`) tests each type of the
//! mask instead (`addr_type::key6`, `matches6`), with the IPv6 routes in
//! `ADDR_TYPES6`; it refuses BROADCAST, BLACKHOLE and PROHIBIT and past.

use super::{
    MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, missing, once, value,
};
use crate::compile::lower::{Atom, Lowering, keys_where};
use crate::rules::generate::{Dice, Random, Scope};
use crate::rules::model::{Family, Match};
use crate::rules::parse::{ParseError, invalid};
use netbeast_common::field;
use std::fmt::Write as _;

use netbeast_common::addr_type;
use serde::{Deserialize, Serialize};

use super::bang;
use crate::compile::PacketView;
use crate::rules::model::Negatable;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrType {
    /// A mask of `1 << addr_type::*`.
    pub src: Option<Negatable<u16>>,
    pub dst: Option<Negatable<u16>>,
    pub limit_iface_in: bool,
    pub limit_iface_out: bool,
    /// An ip6tables rule: its keys are `addr_type::key6`'s.
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub v6: bool,
}

/// `LOCAL,UNICAST`: the names of a mask's types, in type order.
pub fn types_text(mask: u16) -> String {
    addr_type::NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

impl MatchExt for AddrType {
    fn save(&self, out: &mut String) {
        out.push_str(" -m addrtype");
        for (types, option) in [(&self.src, "--src-type"), (&self.dst, "--dst-type")] {
            if let Some(t) = types {
                let _ = write!(out, "{} {option} {}", bang(t.negated), types_text(t.value));
            }
        }
        if self.limit_iface_in {
            out.push_str(" --limit-iface-in");
        }
        if self.limit_iface_out {
            out.push_str(" --limit-iface-out");
        }
    }

    fn list(&self, out: &mut String, _numeric: bool) {
        out.push_str(" ADDRTYPE match");
        for (types, what) in [(&self.src, "src-type"), (&self.dst, "dst-type")] {
            if let Some(t) = types {
                let bang = if t.negated { "!" } else { "" };
                let _ = write!(out, " {what} {bang}{}", types_text(t.value));
            }
        }
        if self.limit_iface_in {
            out.push_str(" limit-in");
        }
        if self.limit_iface_out {
            out.push_str(" limit-out");
        }
    }

    fn matches(&self, pkt: &PacketView) -> bool {
        let holds = |types: &Option<Negatable<u16>>, key: u32| match types {
            None => true,
            Some(t) => self.holds(t, key),
        };
        holds(&self.src, pkt.header.src_type) && holds(&self.dst, pkt.header.dst_type)
    }

    fn lower(&self) -> Lowering {
        let set = |f: usize, types: &Negatable<u16>| {
            Atom::Keys(f, keys_where(f, |k| self.holds(types, k)))
        };
        let mut atoms = Vec::new();
        atoms.extend(self.src.as_ref().map(|t| set(field::SRC_TYPE, t)));
        atoms.extend(self.dst.as_ref().map(|t| set(field::DST_TYPE, t)));
        Lowering::all(atoms)
    }
}

impl AddrType {
    /// The type the match sees in an address type key (`addr_type::*`),
    /// with its interface limit.
    pub fn type_of(&self, key: u32) -> u32 {
        addr_type::limited(key, self.limit_iface_in, self.limit_iface_out)
    }

    /// Whether `types` (with its `!`) holds for an address with key `key`.
    pub fn holds(&self, types: &Negatable<u16>, key: u32) -> bool {
        let (limit_in, limit_out) = (self.limit_iface_in, self.limit_iface_out);
        let held = if self.v6 {
            addr_type::matches6(types.value, key, limit_in, limit_out)
        } else {
            types.value & (1 << self.type_of(key)) != 0
        };
        held != types.negated
    }
}

static OPTIONS: [OptSpec; 4] = [
    OptSpec {
        names: &["src-type"],
        value: Value::One("address types like LOCAL or UNICAST,BROADCAST"),
        negatable: true,
    },
    OptSpec {
        names: &["dst-type"],
        value: Value::One("address types like LOCAL or UNICAST,BROADCAST"),
        negatable: true,
    },
    OptSpec {
        names: &["limit-iface-in"],
        value: Value::None,
        negatable: false,
    },
    OptSpec {
        names: &["limit-iface-out"],
        value: Value::None,
        negatable: false,
    },
];

pub static MODULE: MatchModule = MatchModule {
    name: "addrtype",
    family: None,
    options: &OPTIONS,
    example: "e.g. -m addrtype --dst-type LOCAL",
    implicit_protocol: None,
    parser: || Box::<AddrTypeParser>::default(),
    random: Random {
        weight: 1,
        draw: random,
    },
};

#[derive(Debug, Default)]
struct AddrTypeParser {
    src: Option<Negatable<u16>>,
    dst: Option<Negatable<u16>>,
    limit_in: Option<()>,
    limit_out: Option<()>,
}

/// `LOCAL,UNICAST` (any case) as a mask of `1 << addr_type::*`.
fn parse_types(option: &OptSpec, text: &str) -> Result<u16, ParseError> {
    let mut mask = 0u16;
    for name in text.split(',') {
        let Some(t) = addr_type::NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
        else {
            return Err(invalid(
                &option.flag(),
                "address type",
                name,
                format!("use {}", addr_type::NAMES.join(", ")),
            ));
        };
        mask |= 1 << t;
    }
    Ok(mask)
}

impl MatchParser for AddrTypeParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        text: &[&str],
    ) -> Result<(), ParseError> {
        match option.name() {
            "src-type" | "dst-type" => {
                let types = Negatable {
                    negated,
                    value: parse_types(option, value(option, text))?,
                };
                let slot = if option.name() == "src-type" {
                    &mut self.src
                } else {
                    &mut self.dst
                };
                once(slot, types, option)
            }
            "limit-iface-in" => once(&mut self.limit_in, (), option),
            _ => once(&mut self.limit_out, (), option),
        }
    }

    /// xt_addrtype's checkentry: a type to test, one interface limit at
    /// most, and only where that interface is known.
    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Match, ParseError> {
        if self.src.is_none() && self.dst.is_none() {
            return Err(missing(&MODULE, "--src-type or --dst-type"));
        }
        let v6 = rule.family == Family::V6;
        let refused =
            self.src.iter().chain(&self.dst).fold(0, |m, t| m | t.value) & addr_type::REFUSED6;
        if v6 && refused != 0 {
            return Err(ParseError::KernelRefuses {
                what: format!("-m addrtype {}", types_text(refused)),
                reason: "IPv6 has no BROADCAST addresses, and ip6tables does not match \
                         BLACKHOLE, PROHIBIT, THROW, NAT or XRESOLVE; use UNSPEC, UNICAST, \
                         LOCAL, ANYCAST, MULTICAST or UNREACHABLE"
                    .into(),
            });
        }
        let (limit_iface_in, limit_iface_out) = (self.limit_in.is_some(), self.limit_out.is_some());
        if limit_iface_in && limit_iface_out {
            return Err(ParseError::IllegalOption {
                option: "--limit-iface-out".into(),
                command: "--limit-iface-in".into(),
                reason: "the kernel takes one interface limit per -m addrtype",
            });
        }
        if limit_iface_in && matches!(rule.chain, "OUTPUT" | "POSTROUTING") {
            return Err(ParseError::WrongChain {
                option: "--limit-iface-in".into(),
                chain: rule.chain.into(),
                reason: "locally generated packets have no input interface",
            });
        }
        if limit_iface_out && matches!(rule.chain, "PREROUTING" | "INPUT") {
            return Err(ParseError::WrongChain {
                option: "--limit-iface-out".into(),
                chain: rule.chain.into(),
                reason: "the output interface is not known yet there",
            });
        }
        Ok(Match::AddrType(AddrType {
            src: self.src,
            dst: self.dst,
            limit_iface_in,
            limit_iface_out,
            v6,
        }))
    }
}

/// One or two palette types for the source, the destination or both.
fn random(d: &mut Dice, s: &Scope) -> Option<Match> {
    let p = s.palette;
    let v6 = s.family == Family::V6;
    let types = |d: &mut Dice| {
        let mut mask = 0u16;
        for _ in 0..1 + d.below(2) {
            mask |= 1 << d.pick(p.addr_types);
        }
        // The types ip6tables refuses.
        if v6 {
            mask &= !addr_type::REFUSED6;
            if mask == 0 {
                mask = 1 << addr_type::LOCAL;
            }
        }
        d.negatable(p, mask)
    };
    let (src, dst) = match d.below(3) {
        0 => (Some(types(d)), None),
        1 => (None, Some(types(d))),
        _ => (Some(types(d)), Some(types(d))),
    };
    // An interface limit where every chain that may reach the rule has
    // that interface (the parser and the kernel refuse it elsewhere).
    let may = |chains: &[&str]| {
        s.builtin.is_none_or(|c| chains.contains(&c)) && (s.hooks.is_empty() || s.only_from(chains))
    };
    // Not for IPv6 route types (LOCAL, ANYCAST, UNREACHABLE): the
    // kernel's lookup is then bound to the limiting interface, and an
    // address routed through another one is UNREACHABLE unless a route
    // through that one covers it, which netbeast does not model
    // (docs/FEATURES.md, a deviation).
    let route_types = 1 << addr_type::LOCAL | 1 << addr_type::ANYCAST | 1 << addr_type::UNREACHABLE;
    let bound = v6
        && [&src, &dst]
            .iter()
            .any(|t| t.as_ref().is_some_and(|t| t.value & route_types != 0));
    let limit_in = !bound && may(&["PREROUTING", "INPUT", "FORWARD"]) && d.chance(25);
    let limit_out =
        !bound && !limit_in && may(&["FORWARD", "OUTPUT", "POSTROUTING"]) && d.chance(25);
    Some(Match::AddrType(AddrType {
        src,
        dst,
        limit_iface_in: limit_in,
        limit_iface_out: limit_out,
        v6,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::parse::{Problem, parse_ip6tables_args};
    use addr_type::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    /// xt_addrtype's `match_type6`: every type of the mask is a test that
    /// must hold; of LOCAL, ANYCAST and UNREACHABLE one must.
    #[test]
    fn ipv6_types_are_tests_that_all_hold() {
        let key = |w: [u32; 4], kind: Option<u32>| key6(w, kind, 0, 0);
        let local = key([0xfd00_0000, 0, 0, 1], Some(LOCAL));
        let routed = key([0x2001_0db8, 0, 0, 1], Some(UNICAST));
        let group = key([0xff02_0000, 0, 0, 1], Some(MULTICAST));
        let any = key([0; 4], None);
        let mapped = key([0, 0, 0xffff, 0x0a00_0001], Some(UNICAST));
        let nowhere = key([0x2001_0db8, 0, 0, 2], None);
        let anycast = key([0xfd00_0000, 0, 0, 0], Some(ANYCAST));
        let mask = |types: &[u32]| types.iter().fold(0u16, |m, t| m | 1 << t);
        let holds = |types: &[u32], k: u32| matches6(mask(types), k, false, false);
        assert!(holds(&[LOCAL], local) && !holds(&[LOCAL], routed) && !holds(&[LOCAL], group));
        assert!(holds(&[UNICAST], local) && holds(&[UNICAST], routed) && !holds(&[UNICAST], group));
        assert!(holds(&[MULTICAST], group) && !holds(&[MULTICAST], local));
        // Both must hold: no address is multicast and local.
        assert!(!holds(&[MULTICAST, LOCAL], group) && !holds(&[MULTICAST, LOCAL], local));
        assert!(holds(&[UNICAST, LOCAL], local) && !holds(&[UNICAST, LOCAL], routed));
        assert!(holds(&[UNSPEC], any) && !holds(&[UNSPEC], routed));
        // IPv4-mapped addresses are neither unicast nor multicast.
        assert!(!holds(&[UNICAST], mapped) && !holds(&[MULTICAST], mapped));
        // No route: UNREACHABLE; of the lookup's types one is enough.
        assert!(holds(&[UNREACHABLE], nowhere) && holds(&[LOCAL, UNREACHABLE], nowhere));
        assert!(!holds(&[UNREACHABLE], routed));
        assert!(holds(&[ANYCAST], anycast) && holds(&[UNICAST, ANYCAST], anycast));
        // --limit-iface-in: LOCAL only on the local route's interface.
        let on_lo = key6([0xfd00_0000, 0, 0, 1], Some(route_value(LOCAL, 1)), 7, 0);
        let on_7 = key6([0xfd00_0000, 0, 0, 1], Some(route_value(LOCAL, 7)), 7, 0);
        assert!(!matches6(mask(&[LOCAL]), on_lo, true, false));
        assert!(matches6(mask(&[LOCAL]), on_7, true, false));
        assert!(matches6(mask(&[LOCAL]), on_lo, false, false));
    }

    /// ip6tables refuses BROADCAST, BLACKHOLE, PROHIBIT and past them with
    /// "Invalid argument" (exit 4); iptables takes them.
    #[test]
    fn ip6tables_refuses_the_types_ipv6_lacks() {
        for types in [
            "BROADCAST",
            "LOCAL,BLACKHOLE",
            "PROHIBIT",
            "THROW",
            "NAT",
            "XRESOLVE",
        ] {
            let line = format!("-A INPUT -m addrtype --dst-type {types} -j DROP");
            let err = parse_ip6tables_args(&args(&line)).unwrap_err();
            assert_eq!(err.problem(), Problem::Resource, "{line}: {err}");
            assert!(err.to_string().contains("Invalid argument"), "{err}");
            crate::rules::parse::parse_iptables_args(&args(&line)).unwrap();
        }
        let line = "-A INPUT -m addrtype ! --src-type UNSPEC,MULTICAST --dst-type LOCAL -j DROP";
        parse_ip6tables_args(&args(line)).unwrap();
    }
}
