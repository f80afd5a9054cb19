//! `-m icmp6 --icmpv6-type TYPE[/CODE]` (libip6t_icmp6, ip6tables only),
//! also loaded by `-p ipv6-icmp` / `-p icmpv6` on its first option.
//!
//! Unlike IPv4's `icmp` there is no `any`: type 255 is only type 255, as
//! the kernel's icmp6 match has no wildcard type.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::icmp::{
    TypeNames, TypeOption, code_range_unsupported, list_type, parse_type_code, type_code_lowering,
};
use super::{MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, bang, missing};
use crate::compile::PacketView;
use crate::compile::lower::Lowering;
use crate::rules::generate::{Dice, Random, Scope};
use crate::rules::model::{Family, Match};
use crate::rules::parse::ParseError;

/// ICMPv6's protocol number (`-p ipv6-icmp`, `-p icmpv6`).
pub const IPPROTO_ICMPV6: u8 = 58;

/// The ICMPv6 type test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Icmp6 {
    pub negated: bool,
    pub icmp_type: u8,
    /// The codes `lo..=hi` (`type/lo:hi`; every code is 0..=255), as the
    /// kernel's match holds them (a reversed range matches no code).
    pub codes: (u8, u8),
}

impl Icmp6 {
    /// (type, lowest code, highest code) as the kernel's match holds them.
    fn kernel_form(&self) -> (u8, u8, u8) {
        (self.icmp_type, self.codes.0, self.codes.1)
    }
}

impl MatchExt for Icmp6 {
    /// Always numeric, as icmp6_save prints it: `--icmpv6-type 1/0`.
    fn save(&self, out: &mut String) {
        let _ = write!(
            out,
            " -m icmp6{} --icmpv6-type {}",
            bang(self.negated),
            self.icmp_type
        );
        // The lowest code only, as icmp6_save prints a range.
        if self.codes != (0, 0xFF) {
            let _ = write!(out, "/{}", self.codes.0);
        }
    }

    /// ` ipv6-icmp echo-request`, numerically ` ipv6-icmptype 128`.
    fn list(&self, out: &mut String, numeric: bool) {
        out.push_str(" ipv6-icmp");
        list_type(out, ICMPV6_TYPES, self.kernel_form(), self.negated, numeric);
    }

    fn matches(&self, pkt: &PacketView) -> bool {
        let Some((icmp_type, code)) = pkt.icmp6() else {
            return false;
        };
        let hit = icmp_type == self.icmp_type && (self.codes.0..=self.codes.1).contains(&code);
        hit != self.negated
    }

    fn lower(&self) -> Lowering {
        type_code_lowering(self.icmp_type, self.codes, self.negated)
    }

    fn check(&self, protocol: Option<u8>) -> Result<(), String> {
        if protocol != Some(IPPROTO_ICMPV6) {
            return Err("--icmpv6-type needs `-p ipv6-icmp`".to_string());
        }
        Ok(())
    }
}

static OPTIONS: [OptSpec; 1] = [OptSpec {
    names: &["icmpv6-type"],
    value: Value::One("an ICMPv6 type like echo-request or 128"),
    negatable: true,
}];

pub static MODULE: MatchModule = MatchModule {
    name: "icmp6",
    family: Some(Family::V6),
    options: &OPTIONS,
    example: "e.g. -p ipv6-icmp --icmpv6-type echo-request",
    parser: || Box::<Icmp6Parser>::default(),
    implicit_protocol: Some(IPPROTO_ICMPV6),
    random: Random {
        weight: 8,
        draw: random,
    },
};

const ICMPV6_OPTION: TypeOption = TypeOption {
    option: "--icmpv6-type",
    what: "ICMPv6 type",
    names: ICMPV6_TYPES,
    hint: "use a name like echo-request, neighbour-solicitation, router-advertisement, \
           destination-unreachable or packet-too-big, or type[/code] with numbers 0-255",
};

/// An ICMPv6 type and code as `--icmpv6-type` names one (`echo-request`,
/// `1/4`, `128`): a type alone has code 0. Ranges of codes are refused.
pub fn parse_icmp6_type(text: &str) -> Result<(u8, u8), ParseError> {
    match parse_type_code(text, &ICMPV6_OPTION)? {
        (t, 0, 0xFF) => Ok((t, 0)),
        (t, lo, hi) if lo == hi => Ok((t, lo)),
        _ => Err(code_range_unsupported(text, &ICMPV6_OPTION)),
    }
}

#[derive(Debug, Default)]
struct Icmp6Parser(Option<Icmp6>);

impl MatchParser for Icmp6Parser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        values: &[&str],
    ) -> Result<(), ParseError> {
        if self.0.is_some() {
            return Err(ParseError::Repeated {
                option: option.flag(),
                hint: "; write one rule per ICMPv6 type",
            });
        }
        let (icmp_type, lo, hi) = parse_type_code(values[0], &ICMPV6_OPTION)?;
        // ip6tables takes `type/lo:hi` but saves only `type/lo`: such a rule
        // would come back from a save as another rule.
        if lo != hi && (lo, hi) != (0, 0xFF) {
            return Err(code_range_unsupported(values[0], &ICMPV6_OPTION));
        }
        self.0 = Some(Icmp6 {
            negated,
            icmp_type,
            codes: (lo, hi),
        });
        Ok(())
    }

    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Match, ParseError> {
        if rule.plain_protocol() != Some(IPPROTO_ICMPV6) {
            let option = if self.0.is_some() {
                "--icmpv6-type"
            } else {
                "-m icmp6"
            };
            return Err(ParseError::NeedsProtocol {
                option: option.into(),
                needs: "-p ipv6-icmp (not negated) earlier in the rule".into(),
            });
        }
        self.0
            .map(Match::Icmp6)
            .ok_or_else(|| missing(&MODULE, "--icmpv6-type"))
    }
}

/// libip6t_icmp6's names, in its order (aliases after the name `-L`
/// prints).
pub const ICMPV6_TYPES: TypeNames = &[
    ("destination-unreachable", 1, 0, 0xFF),
    ("no-route", 1, 0, 0),
    ("communication-prohibited", 1, 1, 1),
    ("beyond-scope", 1, 2, 2),
    ("address-unreachable", 1, 3, 3),
    ("port-unreachable", 1, 4, 4),
    ("failed-policy", 1, 5, 5),
    ("reject-route", 1, 6, 6),
    ("packet-too-big", 2, 0, 0xFF),
    ("time-exceeded", 3, 0, 0xFF),
    ("ttl-exceeded", 3, 0, 0xFF),
    ("ttl-zero-during-transit", 3, 0, 0),
    ("ttl-zero-during-reassembly", 3, 1, 1),
    ("parameter-problem", 4, 0, 0xFF),
    ("bad-header", 4, 0, 0),
    ("unknown-header-type", 4, 1, 1),
    ("unknown-option", 4, 2, 2),
    ("echo-request", 128, 0, 0xFF),
    ("ping", 128, 0, 0xFF),
    ("echo-reply", 129, 0, 0xFF),
    ("pong", 129, 0, 0xFF),
    ("mld-listener-query", 130, 0, 0xFF),
    ("mld-listener-report", 131, 0, 0xFF),
    ("mld-listener-done", 132, 0, 0xFF),
    ("mld-listener-reduction", 132, 0, 0xFF),
    ("router-solicitation", 133, 0, 0xFF),
    ("router-advertisement", 134, 0, 0xFF),
    ("neighbour-solicitation", 135, 0, 0xFF),
    ("neighbor-solicitation", 135, 0, 0xFF),
    ("neighbour-advertisement", 136, 0, 0xFF),
    ("neighbor-advertisement", 136, 0, 0xFF),
    ("redirect", 137, 0, 0xFF),
];

/// A type (and code) in an ICMPv6 rule; the differential harness draws
/// IPv4 rulesets only so far, where it never applies.
fn random(d: &mut Dice, s: &Scope) -> Option<Match> {
    if s.plain_protocol() != Some(IPPROTO_ICMPV6) {
        return None;
    }
    let (_, icmp_type, lo, hi) = d.pick(ICMPV6_TYPES);
    Some(Match::Icmp6(Icmp6 {
        negated: d.chance(20),
        icmp_type,
        codes: (lo, hi),
    }))
}
