//! `-m pkttype --pkt-type unicast|broadcast|multicast|otherhost`: the
//! link-layer packet type (xt_pkttype).

use super::{
    MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, missing, once, value,
};
use crate::compile::lower::{Atom, Lowering, negatable, single};
use crate::rules::generate::{Dice, Random, Scope};
use crate::rules::model::Match;
use crate::rules::parse::{ParseError, invalid};
use netbeast_common::field;
use std::fmt::Write as _;

use netbeast_common::pkttype;
use serde::{Deserialize, Serialize};

use super::bang;
use crate::compile::PacketView;

/// Names as iptables takes them, with their `pkttype::*` value; the first
/// name of a value is the one it prints.
pub const NAMES: &[(&str, u32)] = &[
    ("unicast", pkttype::HOST),
    ("broadcast", pkttype::BROADCAST),
    ("multicast", pkttype::MULTICAST),
    ("otherhost", pkttype::OTHERHOST),
    ("host", pkttype::HOST),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PktType {
    pub negated: bool,
    /// `pkttype::*`.
    pub kind: u32,
}

impl PktType {
    pub fn name(&self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, k)| *k == self.kind)
            .map_or("unknown", |(n, _)| n)
    }
}

impl MatchExt for PktType {
    fn save(&self, out: &mut String) {
        let _ = write!(
            out,
            " -m pkttype{} --pkt-type {}",
            bang(self.negated),
            self.name()
        );
    }

    fn list(&self, out: &mut String, _numeric: bool) {
        let op = if self.negated { "!=" } else { "=" };
        let _ = write!(out, " PKTTYPE {op} {}", self.name());
    }

    fn matches(&self, pkt: &PacketView) -> bool {
        (pkt.header.pkttype == self.kind) != self.negated
    }

    fn lower(&self) -> Lowering {
        Lowering::all(vec![Atom::Keys(
            field::PKTTYPE,
            negatable(field::PKTTYPE, single(self.kind), self.negated),
        )])
    }
}

static OPTIONS: [OptSpec; 1] = [OptSpec {
    names: &["pkt-type"],
    value: Value::One("unicast, broadcast or multicast"),
    negatable: true,
}];

pub static MODULE: MatchModule = MatchModule {
    name: "pkttype",
    family: None,
    options: &OPTIONS,
    example: "e.g. -m pkttype --pkt-type broadcast",
    implicit_protocol: None,
    parser: || Box::<PktTypeParser>::default(),
    random: Random {
        weight: 1,
        draw: random,
    },
};

#[derive(Debug, Default)]
struct PktTypeParser(Option<PktType>);

impl MatchParser for PktTypeParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        text: &[&str],
    ) -> Result<(), ParseError> {
        let text = value(option, text);
        let kind = NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(text))
            .map(|(_, kind)| *kind)
            .ok_or_else(|| {
                invalid(
                    &option.flag(),
                    "packet type",
                    text,
                    "use unicast, broadcast, multicast or otherhost",
                )
            })?;
        once(&mut self.0, PktType { negated, kind }, option)
    }

    fn finish(self: Box<Self>, _: &RuleContext) -> Result<Match, ParseError> {
        self.0
            .map(Match::PktType)
            .ok_or_else(|| missing(&MODULE, "--pkt-type"))
    }
}

fn random(d: &mut Dice, s: &Scope) -> Option<Match> {
    Some(Match::PktType(PktType {
        negated: d.chance(s.palette.negate),
        kind: d.pick(s.palette.pkttypes),
    }))
}
