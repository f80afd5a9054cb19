//! `-m connmark [!] --mark value[/mask]` (xt_connmark): the mark of the
//! packet's connection, as `-j CONNMARK` rules (`rules/target/connmark.rs`)
//! set it. A guard, as `-m mark` is: a CONNMARK rule earlier in the same
//! search can change the mark, and a classifier field is looked up once,
//! before the search. A packet without a connection (INVALID, UNTRACKED,
//! the raw chains) never matches, negated or not, as in the kernel.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

use super::mark::{MarkMask, parse_mark_mask};
use super::{
    MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, bang, missing, once, value,
};
use crate::compile::PacketView;
use crate::compile::lower::Lowering;
use crate::rules::generate::{Dice, Random, Scope};
use crate::rules::model::Match;
use crate::rules::parse::ParseError;
use netbeast_common::{Guard, guard_kind};

/// A `-m connmark` match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connmark {
    pub negated: bool,
    pub mark: MarkMask,
}

impl Connmark {
    fn guard(&self) -> Guard {
        Guard {
            kind: guard_kind::CONNMARK,
            negated: u32::from(self.negated),
            a: self.mark.value.into(),
            b: self.mark.mask.into(),
            ..Guard::default()
        }
    }
}

impl MatchExt for Connmark {
    fn save(&self, out: &mut String) {
        let _ = write!(
            out,
            " -m connmark{} --mark {}",
            bang(self.negated),
            self.mark.text()
        );
    }

    fn list(&self, out: &mut String, _numeric: bool) {
        // libxt_connmark: "connmark match ", then "!" when negated, then
        // " " and the mark (two spaces when not negated).
        let bang = if self.negated { "!" } else { "" };
        let _ = write!(out, " connmark match {bang} {}", self.mark.text());
    }

    /// Its static part: none (the connection's mark is the guard's).
    fn matches(&self, _pkt: &PacketView) -> bool {
        true
    }

    fn lower(&self) -> Lowering {
        Lowering::Guard(self.guard())
    }
}

static OPTIONS: [OptSpec; 1] = [OptSpec {
    names: &["mark"],
    value: Value::One("a mark like 0x1 or 0x1/0xff"),
    negatable: true,
}];

pub static MODULE: MatchModule = MatchModule {
    name: "connmark",
    family: None,
    options: &OPTIONS,
    example: "e.g. -m connmark --mark 0x1/0xff",
    implicit_protocol: None,
    parser: || Box::<ConnmarkParser>::default(),
    random: Random {
        weight: 1,
        draw: random,
    },
};

#[derive(Debug, Default)]
struct ConnmarkParser(Option<Connmark>);

impl MatchParser for ConnmarkParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        text: &[&str],
    ) -> Result<(), ParseError> {
        let mark = parse_mark_mask(&option.flag(), value(option, text))?;
        once(&mut self.0, Connmark { negated, mark }, option)
    }

    fn finish(self: Box<Self>, _: &RuleContext) -> Result<Match, ParseError> {
        self.0
            .map(Match::Connmark)
            .ok_or_else(|| missing(&MODULE, "--mark"))
    }
}

/// A connection mark under a mask. The models run no CONNMARK rule: a
/// packet with a connection has mark 0 there, one without none.
fn random(d: &mut Dice, s: &Scope) -> Option<Match> {
    if !s.has_packet() {
        return None;
    }
    let p = s.palette;
    let mask = if d.chance(30) {
        u32::MAX
    } else {
        d.next() as u32
    };
    let value = if d.chance(50) { 0 } else { d.next() as u32 };
    Some(Match::Connmark(Connmark {
        negated: d.chance(p.negate),
        mark: MarkMask { value, mask },
    }))
}
