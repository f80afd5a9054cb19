//! `-m tos --tos value[/mask]` or a name: the IPv4 TOS byte (xt_tos,
//! revision 1: `(tos & mask) == value`).

use super::{
    MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, missing, once, value,
};
use crate::compile::lower::{Atom, Lowering, keys_where};
use crate::rules::generate::{Dice, Random, Scope};
use crate::rules::model::Match;
use crate::rules::parse::{ParseError, invalid, parse_c_number_in};
use netbeast_common::field;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::bang;
use crate::compile::PacketView;

/// The symbolic values iptables accepts; each stands for `value/0x3f`.
pub const NAMES: &[(&str, u8)] = &[
    ("Minimize-Cost", 0x02),
    ("Maximize-Reliability", 0x04),
    ("Maximize-Throughput", 0x08),
    ("Minimize-Delay", 0x10),
    ("Normal-Service", 0x00),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tos {
    pub negated: bool,
    pub value: u8,
    pub mask: u8,
}

impl MatchExt for Tos {
    fn save(&self, out: &mut String) {
        let _ = write!(
            out,
            " -m tos{} --tos 0x{:02x}/0x{:02x}",
            bang(self.negated),
            self.value,
            self.mask
        );
    }

    fn list(&self, out: &mut String, numeric: bool) {
        out.push_str(" tos match");
        if self.negated {
            out.push('!');
        }
        let symbolic = (!numeric && self.mask == 0x3f)
            .then(|| NAMES.iter().find(|(_, v)| *v == self.value))
            .flatten();
        match symbolic {
            Some((name, _)) => {
                let _ = write!(out, " {name}");
            }
            None => {
                let _ = write!(out, "0x{:02x}/0x{:02x}", self.value, self.mask);
            }
        }
    }

    fn matches(&self, pkt: &PacketView) -> bool {
        (pkt.header.tos & self.mask == self.value) != self.negated
    }

    fn lower(&self) -> Lowering {
        Lowering::all(vec![Atom::Keys(
            field::TOS,
            keys_where(field::TOS, |k| {
                (k as u8 & self.mask == self.value) != self.negated
            }),
        )])
    }
}

static OPTIONS: [OptSpec; 1] = [OptSpec {
    names: &["tos"],
    value: Value::One("a value[/mask] like 0x10/0x3f, or a name like Minimize-Delay"),
    negatable: true,
}];

pub static MODULE: MatchModule = MatchModule {
    name: "tos",
    family: None,
    options: &OPTIONS,
    example: "e.g. -m tos --tos Minimize-Delay",
    implicit_protocol: None,
    parser: || Box::<TosParser>::default(),
    random: Random {
        weight: 1,
        draw: random,
    },
};

#[derive(Debug, Default)]
struct TosParser(Option<Tos>);

/// `value[/mask]` (mask 0xff when left out), or a name (`value/0x3f`), as
/// xtables' tos parser reads them.
pub(crate) fn parse_tos(option: &OptSpec, text: &str) -> Result<(u8, u8), ParseError> {
    let byte = |t: &str| parse_c_number_in(t, u8::MAX.into()).map(|n| n as u8);
    let numeric = match text.split_once('/') {
        Some((v, m)) => byte(v).zip(byte(m)),
        None => byte(text).map(|v| (v, 0xff)),
    };
    if let Some(tos) = numeric {
        return Ok(tos);
    }
    NAMES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|(_, v)| (*v, 0x3f))
        .ok_or_else(|| {
            let names: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
            invalid(
                &option.flag(),
                "TOS",
                text,
                format!(
                    "use value[/mask] (0-255 each) or one of {}",
                    names.join(", ")
                ),
            )
        })
}

impl MatchParser for TosParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        text: &[&str],
    ) -> Result<(), ParseError> {
        let (value, mask) = parse_tos(option, value(option, text))?;
        let tos = Tos {
            negated,
            value: value & mask,
            mask,
        };
        once(&mut self.0, tos, option)
    }

    fn finish(self: Box<Self>, _: &RuleContext) -> Result<Match, ParseError> {
        self.0
            .map(Match::Tos)
            .ok_or_else(|| missing(&MODULE, "--tos"))
    }
}

/// A palette TOS under a palette mask (not in nat OUTPUT).
fn random(d: &mut Dice, s: &Scope) -> Option<Match> {
    if !s.has_packet() {
        return None;
    }
    let p = s.palette;
    let (value, mask) = if d.wild(p) {
        (d.next() as u8, d.next() as u8)
    } else {
        (d.pick(p.toses), d.pick(p.tos_masks))
    };
    Some(Match::Tos(Tos {
        negated: d.chance(p.negate),
        value: value & mask,
        mask,
    }))
}
