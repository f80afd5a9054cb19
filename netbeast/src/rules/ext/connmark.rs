//! `-m connmark [!] --mark value[/mask]` (xt_connmark): the mark of the
//! packet's connection, as `-j CONNMARK` rules (`rules/target/connmark.rs`)
//! set it. A guard, as `-m mark` is: a CONNMARK rule earlier in the same
//! search can change the mark, and a classifier field is looked up once,
//! before the search. A packet without a connection (INVALID, UNTRACKED,
//! the raw chains) never matches, negated or not, as in the kernel.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

use super::mark::{MarkMask, MarkOptionParser, random_mark};
use super::{MatchExt, MatchModule, OptSpec, Value, bang};
use crate::compile::PacketView;
use crate::compile::lower::Lowering;
use crate::rules::generate::Random;
use crate::rules::model::Match;
use netbeast_common::guard_kind;

/// A `-m connmark` match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connmark {
    pub negated: bool,
    pub mark: MarkMask,
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
        Lowering::Guard(self.mark.guard(guard_kind::CONNMARK, self.negated))
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
    parser: || {
        Box::new(MarkOptionParser::new(&MODULE, |negated, mark| {
            Match::Connmark(Connmark { negated, mark })
        }))
    },
    // A connection mark under a mask. The models run no CONNMARK rule: a
    // packet with a connection has mark 0 there, one without none.
    random: Random {
        weight: 1,
        draw: |d, s| {
            random_mark(d, s).map(|(negated, mark)| Match::Connmark(Connmark { negated, mark }))
        },
    },
};
