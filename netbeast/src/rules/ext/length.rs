//! `-m length --length min[:max]`: the IPv4 total length (xt_length).

use super::{
    MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, missing, once, range, value,
};
use crate::compile::lower::{Atom, Lowering, key_range, negatable};
use crate::rules::generate::{Dice, Random, Scope};
use crate::rules::model::Match;
use crate::rules::parse::ParseError;
use netbeast_common::field;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::bang;
use crate::compile::PacketView;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Length {
    pub negated: bool,
    pub min: u16,
    pub max: u16,
}

impl Length {
    fn range(&self) -> String {
        if self.min == self.max {
            self.min.to_string()
        } else {
            format!("{}:{}", self.min, self.max)
        }
    }
}

impl MatchExt for Length {
    fn save(&self, out: &mut String) {
        let _ = write!(
            out,
            " -m length{} --length {}",
            bang(self.negated),
            self.range()
        );
    }

    fn list(&self, out: &mut String, _numeric: bool) {
        let bang = if self.negated { "!" } else { "" };
        let _ = write!(out, " length {bang}{}", self.range());
    }

    fn matches(&self, pkt: &PacketView) -> bool {
        (self.min..=self.max).contains(&pkt.header.length) != self.negated
    }

    fn lower(&self) -> Lowering {
        Lowering::all(vec![Atom::Keys(
            field::LENGTH,
            negatable(
                field::LENGTH,
                key_range(self.min.into(), self.max.into()),
                self.negated,
            ),
        )])
    }
}

static OPTIONS: [OptSpec; 1] = [OptSpec {
    names: &["length"],
    value: Value::One("a length or range like 0:1500"),
    negatable: true,
}];

pub static MODULE: MatchModule = MatchModule {
    name: "length",
    family: None,
    options: &OPTIONS,
    example: "e.g. -m length --length 0:1500",
    implicit_protocol: None,
    parser: || Box::<LengthParser>::default(),
    random: Random {
        weight: 1,
        draw: random,
    },
};

#[derive(Debug, Default)]
struct LengthParser(Option<Length>);

impl MatchParser for LengthParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        text: &[&str],
    ) -> Result<(), ParseError> {
        let (min, max) = range(option, "length", value(option, text), u16::MAX.into())?;
        let length = Length {
            negated,
            min: min as u16,
            max: max as u16,
        };
        once(&mut self.0, length, option)
    }

    fn finish(self: Box<Self>, _: &RuleContext) -> Result<Match, ParseError> {
        self.0
            .map(Match::Length)
            .ok_or_else(|| missing(&MODULE, "--length"))
    }
}

/// A range between two of the palette's lengths (a packet's: not in nat
/// OUTPUT).
fn random(d: &mut Dice, s: &Scope) -> Option<Match> {
    if !s.has_packet() {
        return None;
    }
    let p = s.palette;
    let length = |d: &mut Dice| {
        if d.wild(p) {
            d.next() as u16
        } else {
            d.pick(p.lengths)
        }
    };
    let (a, b) = (length(d), length(d));
    Some(Match::Length(Length {
        negated: d.chance(p.negate),
        min: a.min(b),
        max: a.max(b),
    }))
}
