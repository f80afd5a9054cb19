//! `-m icmp --icmp-type TYPE[/CODE]|any` (libipt_icmp), also loaded by
//! `-p icmp` on its first option.

use crate::compile::lower::{Atom, Lowering, REAL_L4, negatable_l4, single};
use netbeast_common::field;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, bang, missing};
use crate::compile::PacketView;
use crate::rules::model::{IcmpType, Match, Negatable};
use crate::rules::parse::{ParseError, icmp_type_name, parse_icmp_type};

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
        if !numeric && let Some(name) = icmp_type_name(icmp_type, code_min, code_max) {
            let bang = if self.0.negated { "!" } else { "" };
            let _ = write!(out, " {bang}{name}");
            return;
        }
        if self.0.negated {
            out.push_str(" !");
        }
        let _ = write!(out, "type {icmp_type}");
        if code_min == code_max {
            let _ = write!(out, " code {code_min}");
        } else if code_min != 0 || code_max != 0xFF {
            let _ = write!(out, " codes {code_min}-{code_max}");
        }
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
        let (t, negated) = (self.0.value, self.0.negated);
        let key = |v: u8| single(v.into());
        Lowering::Static(match t {
            IcmpType::Any => vec![vec![Atom::Keys(
                field::L4A,
                negatable_l4(vec![REAL_L4], negated),
            )]],
            IcmpType::Type {
                icmp_type,
                code: None,
            } => vec![vec![Atom::Keys(
                field::L4A,
                negatable_l4(key(icmp_type), negated),
            )]],
            IcmpType::Type {
                icmp_type,
                code: Some(code),
            } if !negated => vec![vec![
                Atom::Keys(field::L4A, key(icmp_type)),
                Atom::Keys(field::L4B, key(code)),
            ]],
            // Not (type T and code C) = type is not T, or type is T and
            // code is not C: two disjoint alternatives.
            IcmpType::Type {
                icmp_type,
                code: Some(code),
            } => vec![
                vec![Atom::Keys(field::L4A, negatable_l4(key(icmp_type), true))],
                vec![
                    Atom::Keys(field::L4A, key(icmp_type)),
                    Atom::Keys(field::L4B, negatable_l4(key(code), true)),
                ],
            ],
        })
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
    options: &OPTIONS,
    example: "e.g. -p icmp --icmp-type echo-request",
    parser: || Box::<IcmpParser>::default(),
    implicit_protocol: Some(1),
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
