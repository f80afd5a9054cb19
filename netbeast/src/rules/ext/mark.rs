//! `-m mark [!] --mark value[/mask]` (xt_mark): the packet's mark, as
//! `-j MARK` rules (`rules/target/mark.rs`) set it. A guard on the mark
//! the search carries (`SearchState::mark` in the kernel), not a
//! classifier field: the mark changes during a search (a MARK rule before
//! the match), and a field is looked up once, before the search.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

use super::{
    MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, bang, missing, once, value,
};
use crate::compile::PacketView;
use crate::compile::lower::Lowering;
use crate::rules::generate::{Dice, Random, Scope};
use crate::rules::model::Match;
use crate::rules::parse::{ParseError, invalid, parse_c_number_in};
use netbeast_common::{Guard, guard_kind};

/// A mark and the mask it is compared under (`0xffffffff`: every bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkMask {
    pub value: u32,
    pub mask: u32,
}

impl MarkMask {
    /// `0xV` alone when the mask is every bit, else `0xV/0xM`: how
    /// libxt_mark and libxt_connmark print a mark.
    pub fn text(&self) -> String {
        if self.mask == u32::MAX {
            format!("{:#x}", self.value)
        } else {
            format!("{:#x}/{:#x}", self.value, self.mask)
        }
    }

    /// The guard of a `--mark` test of `kind` (`MARK`, `CONNMARK`): the
    /// value in `a`, the mask in `b`.
    pub fn guard(&self, kind: u32, negated: bool) -> Guard {
        Guard {
            kind,
            negated: u32::from(negated),
            a: self.value.into(),
            b: self.mask.into(),
            ..Guard::default()
        }
    }
}

/// `value[/mask]` as xtables reads a mark (numbers in C's bases, 32 bits;
/// the mask every bit when left out), for `option`.
pub fn parse_mark_mask(option: &str, text: &str) -> Result<MarkMask, ParseError> {
    let number = |part: &str| {
        mark_number(
            option,
            part,
            text,
            "expected value[/mask], each a number from 0 to 4294967295 (0xffffffff)",
        )
    };
    Ok(match text.split_once('/') {
        Some((v, m)) => MarkMask {
            value: number(v)?,
            mask: number(m)?,
        },
        None => MarkMask {
            value: number(text)?,
            mask: u32::MAX,
        },
    })
}

/// `part` of the value `text` of a mark option as a 32-bit number (C's
/// bases), or the error naming the whole value with `hint`.
pub fn mark_number(option: &str, part: &str, text: &str, hint: &str) -> Result<u32, ParseError> {
    parse_c_number_in(part, u32::MAX.into())
        .map(|n| n as u32)
        .ok_or_else(|| invalid(option, "mark", text, hint.to_string()))
}

/// A `-m mark` match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub negated: bool,
    pub mark: MarkMask,
}

impl MatchExt for Mark {
    fn save(&self, out: &mut String) {
        let _ = write!(
            out,
            " -m mark{} --mark {}",
            bang(self.negated),
            self.mark.text()
        );
    }

    fn list(&self, out: &mut String, _numeric: bool) {
        // libxt_mark: "mark match", then "! " when negated.
        let bang = if self.negated { "! " } else { "" };
        let _ = write!(out, " mark match {bang}{}", self.mark.text());
    }

    /// Its static part: none (the mark is the guard's).
    fn matches(&self, _pkt: &PacketView) -> bool {
        true
    }

    fn lower(&self) -> Lowering {
        Lowering::Guard(self.mark.guard(guard_kind::MARK, self.negated))
    }
}

static OPTIONS: [OptSpec; 1] = [OptSpec {
    names: &["mark"],
    value: Value::One("a mark like 0x4000 or 0x4000/0x4000"),
    negatable: true,
}];

pub static MODULE: MatchModule = MatchModule {
    name: "mark",
    family: None,
    options: &OPTIONS,
    example: "e.g. -m mark --mark 0x4000/0x4000",
    implicit_protocol: None,
    parser: || {
        Box::new(MarkOptionParser::new(&MODULE, |negated, mark| {
            Match::Mark(Mark { negated, mark })
        }))
    },
    random: Random {
        weight: 1,
        draw: |d, s| random_mark(d, s).map(|(negated, mark)| Match::Mark(Mark { negated, mark })),
    },
};

/// The parser of a match whose one option is `[!] --mark value[/mask]`
/// (`-m mark`, `-m connmark`): `make` builds the match from it.
#[derive(Debug)]
pub(super) struct MarkOptionParser {
    module: &'static MatchModule,
    make: fn(bool, MarkMask) -> Match,
    given: Option<(bool, MarkMask)>,
}

impl MarkOptionParser {
    pub(super) fn new(module: &'static MatchModule, make: fn(bool, MarkMask) -> Match) -> Self {
        MarkOptionParser {
            module,
            make,
            given: None,
        }
    }
}

impl MatchParser for MarkOptionParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        text: &[&str],
    ) -> Result<(), ParseError> {
        let mark = parse_mark_mask(&option.flag(), value(option, text))?;
        once(&mut self.given, (negated, mark), option)
    }

    fn finish(self: Box<Self>, _: &RuleContext) -> Result<Match, ParseError> {
        self.given
            .map(|(negated, mark)| (self.make)(negated, mark))
            .ok_or_else(|| missing(self.module, "--mark"))
    }
}

/// A mark under a mask for a random `--mark` test, and whether it is
/// negated (none where the rule has no packet). The models' packets carry
/// no mark (0), nor their connections: a test drawn with value 0 under
/// its mask holds for them, others do not.
pub(super) fn random_mark(d: &mut Dice, s: &Scope) -> Option<(bool, MarkMask)> {
    if !s.has_packet() {
        return None;
    }
    let mask = if d.chance(30) {
        u32::MAX
    } else {
        d.next() as u32
    };
    let value = if d.chance(50) { 0 } else { d.next() as u32 };
    Some((d.chance(s.palette.negate), MarkMask { value, mask }))
}
