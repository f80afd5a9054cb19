//! `-m icmp --icmp-type TYPE[/CODE]|any` (libipt_icmp), also loaded by
//! `-p icmp` on its first option.

use crate::compile::lower::{Atom, Lowering, REAL_L4, key_range, negatable_l4, single};
use crate::rules::generate::{Dice, Random, Scope};
use netbeast_common::field;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, bang, missing};
use crate::compile::PacketView;
use crate::rules::model::{Family, IcmpType, Match, Negatable};
use crate::rules::parse::{ParseError, invalid, parse_c_number_in};

/// The ICMP type test; serialized as its inner value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Icmp(pub Negatable<IcmpType>);

impl Icmp {
    /// (type, lowest code, highest code) as the kernel's match holds them:
    /// `any` is type 0xff with every code.
    fn kernel_form(&self) -> (u8, u8, u8) {
        match self.0.value {
            IcmpType::Any => (0xFF, 0, 0xFF),
            IcmpType::Type { icmp_type, code } => match code {
                None => (icmp_type, 0, 0xFF),
                Some(code) => (icmp_type, code, code),
            },
        }
    }
}

impl MatchExt for Icmp {
    fn save(&self, out: &mut String) {
        let text = match self.0.value {
            IcmpType::Any => "any".to_string(),
            IcmpType::Type {
                icmp_type,
                code: None,
            } => icmp_type.to_string(),
            IcmpType::Type {
                icmp_type,
                code: Some(code),
            } => format!("{icmp_type}/{code}"),
        };
        let _ = write!(out, " -m icmp{} --icmp-type {text}", bang(self.0.negated));
    }

    /// libipt_icmp's print: ` icmp echo-request`, or numerically
    /// ` icmptype 8`, ` icmptype 3 code 3`, ` icmp !type 255`.
    fn list(&self, out: &mut String, numeric: bool) {
        let (icmp_type, code_min, code_max) = self.kernel_form();
        out.push_str(" icmp");
        list_type(
            out,
            ICMP_TYPES,
            (icmp_type, code_min, code_max),
            self.0.negated,
            numeric,
        );
    }

    fn matches(&self, pkt: &PacketView) -> bool {
        let Some((icmp_type, code)) = pkt.icmp() else {
            return false;
        };
        let hit = match self.0.value {
            IcmpType::Any => true,
            IcmpType::Type {
                icmp_type: want,
                code: want_code,
            } => icmp_type == want && want_code.is_none_or(|c| c == code),
        };
        hit != self.0.negated
    }

    fn lower(&self) -> Lowering {
        let negated = self.0.negated;
        match self.0.value {
            IcmpType::Any => Lowering::Static(vec![vec![Atom::Keys(
                field::L4A,
                negatable_l4(vec![REAL_L4], negated),
            )]]),
            IcmpType::Type { icmp_type, code } => {
                let codes = code.map_or((0, 0xFF), |c| (c, c));
                type_code_lowering(icmp_type, codes, negated)
            }
        }
    }

    fn check(&self, protocol: Option<u8>) -> Result<(), String> {
        if protocol != Some(1) {
            return Err("--icmp-type needs `-p icmp`".to_string());
        }
        Ok(())
    }
}

static OPTIONS: [OptSpec; 1] = [OptSpec {
    names: &["icmp-type"],
    value: Value::One("an ICMP type like echo-request or 8"),
    negatable: true,
}];

pub static MODULE: MatchModule = MatchModule {
    name: "icmp",
    family: Some(Family::V4),
    options: &OPTIONS,
    example: "e.g. -p icmp --icmp-type echo-request",
    parser: || Box::<IcmpParser>::default(),
    implicit_protocol: Some(1),
    random: Random {
        weight: 8,
        draw: random,
    },
};

#[derive(Debug, Default)]
struct IcmpParser(Option<Icmp>);

impl MatchParser for IcmpParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        values: &[&str],
    ) -> Result<(), ParseError> {
        let value = parse_icmp_type(values[0])?;
        if self.0.is_some() {
            return Err(ParseError::Repeated {
                option: option.flag(),
                hint: "; write one rule per ICMP type",
            });
        }
        self.0 = Some(Icmp(Negatable { negated, value }));
        Ok(())
    }

    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Match, ParseError> {
        if rule.plain_protocol() != Some(1) {
            let option = if self.0.is_some() {
                "--icmp-type"
            } else {
                "-m icmp"
            };
            return Err(ParseError::NeedsProtocol {
                option: option.into(),
                needs: "-p icmp (not negated) earlier in the rule".into(),
            });
        }
        self.0
            .map(Match::Icmp)
            .ok_or_else(|| missing(&MODULE, "--icmp-type"))
    }
}

/// A type test, with its codes `lo..=hi` (every code: 0..=255), on the
/// L4 keys, which hold an ICMP or ICMPv6 packet's type and code
/// (`PacketView::l4_keys`).
pub(crate) fn type_code_lowering(icmp_type: u8, (lo, hi): (u8, u8), negated: bool) -> Lowering {
    let key = |v: u8| single(v.into());
    let codes = key_range(lo.into(), hi.into());
    Lowering::Static(match (lo, hi) {
        (0, 0xFF) => vec![vec![Atom::Keys(
            field::L4A,
            negatable_l4(key(icmp_type), negated),
        )]],
        _ if !negated => vec![vec![
            Atom::Keys(field::L4A, key(icmp_type)),
            Atom::Keys(field::L4B, codes),
        ]],
        // Not (type T and code in C) = type is not T, or type is T and
        // code is not in C: two disjoint alternatives.
        _ => vec![
            vec![Atom::Keys(field::L4A, negatable_l4(key(icmp_type), true))],
            vec![
                Atom::Keys(field::L4A, key(icmp_type)),
                Atom::Keys(field::L4B, negatable_l4(codes, true)),
            ],
        ],
    })
}

/// A type and code range as libipt_icmp and libip6t_icmp6 print them in
/// `-L`: its name (`!` before it when negated), or numerically `type 8`,
/// `type 3 code 3`, `!type 255`.
pub(crate) fn list_type(
    out: &mut String,
    names: TypeNames,
    (icmp_type, code_min, code_max): (u8, u8, u8),
    negated: bool,
    numeric: bool,
) {
    if !numeric
        && let Some((name, ..)) = names
            .iter()
            .find(|(_, t, lo, hi)| (*t, *lo, *hi) == (icmp_type, code_min, code_max))
    {
        let bang = if negated { "!" } else { "" };
        let _ = write!(out, " {bang}{name}");
        return;
    }
    if negated {
        out.push_str(" !");
    }
    let _ = write!(out, "type {icmp_type}");
    if code_min == code_max {
        let _ = write!(out, " code {code_min}");
    } else if code_min != 0 || code_max != 0xFF {
        let _ = write!(out, " codes {code_min}-{code_max}");
    }
}

/// A table of type names: (name, type, code_min, code_max); the first
/// entry for a (type, codes) triple is the name `-L` prints.
pub type TypeNames = &'static [(&'static str, u8, u8, u8)];

/// How one of the ICMP type options reads its value.
pub(crate) struct TypeOption {
    /// `--icmp-type` or `--icmpv6-type`.
    pub option: &'static str,
    /// "ICMP type" or "ICMPv6 type".
    pub what: &'static str,
    pub names: TypeNames,
    /// What to write instead of an unknown name.
    pub hint: &'static str,
}

/// A type name (or unambiguous prefix, any case), `type` or `type/code`,
/// as xtables reads them: (type, lowest code, highest code).
pub(crate) fn parse_type_code(text: &str, spec: &TypeOption) -> Result<(u8, u8, u8), ParseError> {
    let lower = text.to_ascii_lowercase();
    let exact = spec
        .names
        .iter()
        .find(|(name, ..)| name.eq_ignore_ascii_case(text));
    let named = match exact {
        Some(entry) => Some(entry),
        None => {
            let mut candidates = spec
                .names
                .iter()
                .filter(|(name, ..)| name.to_ascii_lowercase().starts_with(&lower));
            let first = candidates.next();
            if let (Some(a), Some(b)) = (first, candidates.next()) {
                return Err(invalid(
                    spec.option,
                    spec.what,
                    text,
                    format!("ambiguous: '{}' or '{}'?", a.0, b.0),
                ));
            }
            first
        }
    };
    match named {
        Some((_, t, lo, hi)) => Ok((*t, *lo, *hi)),
        None => parse_numeric_type(text, spec),
    }
}

/// ICMP names: (name, type, code_min, code_max), in libxt_icmp's order; the
/// first entry for a (type, codes) triple is the name `-L` prints.
pub const ICMP_TYPES: TypeNames = &[
    ("any", 0xFF, 0, 0xFF),
    ("echo-reply", 0, 0, 0xFF),
    ("pong", 0, 0, 0xFF),
    ("destination-unreachable", 3, 0, 0xFF),
    ("network-unreachable", 3, 0, 0),
    ("host-unreachable", 3, 1, 1),
    ("protocol-unreachable", 3, 2, 2),
    ("port-unreachable", 3, 3, 3),
    ("fragmentation-needed", 3, 4, 4),
    ("source-route-failed", 3, 5, 5),
    ("network-unknown", 3, 6, 6),
    ("host-unknown", 3, 7, 7),
    ("network-prohibited", 3, 9, 9),
    ("host-prohibited", 3, 10, 10),
    ("TOS-network-unreachable", 3, 11, 11),
    ("TOS-host-unreachable", 3, 12, 12),
    ("communication-prohibited", 3, 13, 13),
    ("host-precedence-violation", 3, 14, 14),
    ("precedence-cutoff", 3, 15, 15),
    ("source-quench", 4, 0, 0xFF),
    ("redirect", 5, 0, 0xFF),
    ("network-redirect", 5, 0, 0),
    ("host-redirect", 5, 1, 1),
    ("TOS-network-redirect", 5, 2, 2),
    ("TOS-host-redirect", 5, 3, 3),
    ("echo-request", 8, 0, 0xFF),
    ("ping", 8, 0, 0xFF),
    ("router-advertisement", 9, 0, 0xFF),
    ("router-solicitation", 10, 0, 0xFF),
    ("time-exceeded", 11, 0, 0xFF),
    ("ttl-exceeded", 11, 0, 0xFF),
    ("ttl-zero-during-transit", 11, 0, 0),
    ("ttl-zero-during-reassembly", 11, 1, 1),
    ("parameter-problem", 12, 0, 0xFF),
    ("ip-header-bad", 12, 0, 0),
    ("required-option-missing", 12, 1, 1),
    ("timestamp-request", 13, 0, 0xFF),
    ("timestamp-reply", 14, 0, 0xFF),
    ("address-mask-request", 17, 0, 0xFF),
    ("address-mask-reply", 18, 0, 0xFF),
];

/// The `-L` name of an ICMP type and code range, if it has one.
pub fn icmp_type_name(icmp_type: u8, code_min: u8, code_max: u8) -> Option<&'static str> {
    ICMP_TYPES
        .iter()
        .find(|(_, t, lo, hi)| (*t, *lo, *hi) == (icmp_type, code_min, code_max))
        .map(|(name, ..)| *name)
}

const ICMP_OPTION: TypeOption = TypeOption {
    option: "--icmp-type",
    what: "ICMP type",
    names: ICMP_TYPES,
    hint: "use a name like echo-request, echo-reply, destination-unreachable, port-unreachable, time-exceeded or any, or type[/code] with numbers 0-255",
};

/// `--icmp-type`: a name (or unambiguous prefix), `type` or `type/code`.
pub fn parse_icmp_type(text: &str) -> Result<IcmpType, ParseError> {
    match parse_type_code(text, &ICMP_OPTION)? {
        (0xFF, 0, 0xFF) => Ok(IcmpType::Any),
        (t, 0, 0xFF) => Ok(IcmpType::Type {
            icmp_type: t,
            code: None,
        }),
        (t, lo, hi) if lo == hi => Ok(IcmpType::Type {
            icmp_type: t,
            code: Some(lo),
        }),
        _ => Err(code_range_unsupported(text, &ICMP_OPTION)),
    }
}

/// The answer to a code range (`3/1:5`), which netbeast does not take yet.
pub(crate) fn code_range_unsupported(text: &str, spec: &TypeOption) -> ParseError {
    invalid(
        spec.option,
        spec.what,
        text,
        format!(
            "{} code ranges are not supported yet; give one code, like 3/3",
            spec.what.trim_end_matches(" type")
        ),
    )
}

fn parse_numeric_type(text: &str, spec: &TypeOption) -> Result<(u8, u8, u8), ParseError> {
    let unknown = || invalid(spec.option, spec.what, text, spec.hint);
    let byte = |s: &str| parse_c_number_in(s, 255).map(|n| n as u8);
    let (type_text, code_text) = match text.split_once('/') {
        Some((t, c)) => (t, Some(c)),
        None => (text, None),
    };
    if type_text.contains(':') {
        return Err(invalid(
            spec.option,
            spec.what,
            text,
            format!("{} ranges are not supported", spec.what),
        ));
    }
    let icmp_type = byte(type_text).ok_or_else(unknown)?;
    let (code_min, code_max) = match code_text {
        None => (0, 0xFF),
        Some(code) => match code.split_once(':') {
            Some((lo, hi)) => (byte(lo).ok_or_else(unknown)?, byte(hi).ok_or_else(unknown)?),
            None => {
                let code = byte(code).ok_or_else(unknown)?;
                (code, code)
            }
        },
    };
    Ok((icmp_type, code_min, code_max))
}

/// A type (and code) from the palette, `any` now and then, in an ICMP rule.
fn random(d: &mut Dice, s: &Scope) -> Option<Match> {
    if s.plain_protocol() != Some(1) {
        return None;
    }
    let value = if d.chance(10) {
        IcmpType::Any
    } else if d.wild(s.palette) {
        let icmp_type = d.next() as u8;
        let code = d.maybe(50, |d| d.next() as u8);
        // Type 255 without a code is how `any` is stored.
        if icmp_type == 255 && code.is_none() {
            IcmpType::Any
        } else {
            IcmpType::Type { icmp_type, code }
        }
    } else {
        let (icmp_type, code) = d.pick(s.palette.icmp);
        IcmpType::Type { icmp_type, code }
    };
    Some(Match::Icmp(Icmp(d.negatable(s.palette, value))))
}
