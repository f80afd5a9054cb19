//! `-m dscp --dscp N` / `--dscp-class NAME`: the DSCP, the TOS byte's top
//! six bits (xt_dscp).

use super::{
    MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, missing, number, value,
};
use crate::compile::lower::{Atom, Lowering, keys_where};
use crate::rules::generate::{Dice, Random, Scope};
use crate::rules::model::Match;
use crate::rules::parse::{ParseError, invalid};
use netbeast_common::field;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::compile::PacketView;

/// `--dscp-class` names and their DSCP values (RFC 2474, 2597, 3246).
pub const CLASSES: &[(&str, u8)] = &[
    ("CS0", 0x00),
    ("CS1", 0x08),
    ("CS2", 0x10),
    ("CS3", 0x18),
    ("CS4", 0x20),
    ("CS5", 0x28),
    ("CS6", 0x30),
    ("CS7", 0x38),
    ("BE", 0x00),
    ("AF11", 0x0a),
    ("AF12", 0x0c),
    ("AF13", 0x0e),
    ("AF21", 0x12),
    ("AF22", 0x14),
    ("AF23", 0x16),
    ("AF31", 0x1a),
    ("AF32", 0x1c),
    ("AF33", 0x1e),
    ("AF41", 0x22),
    ("AF42", 0x24),
    ("AF43", 0x26),
    ("EF", 0x2e),
];

/// The DSCP value of class `text` (any case), for `--dscp-class` and
/// DSCP's `--set-dscp-class`.
pub(crate) fn class(option: &'static OptSpec, text: &str) -> Result<u8, ParseError> {
    CLASSES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = CLASSES.iter().map(|(n, _)| *n).collect();
            invalid(
                &option.flag(),
                "DSCP class",
                text,
                format!("use one of {}", names.join(", ")),
            )
        })
}

/// The largest DSCP (six bits).
pub const MAX_DSCP: u8 = 0x3f;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dscp {
    pub negated: bool,
    pub dscp: u8,
}

impl MatchExt for Dscp {
    fn save(&self, out: &mut String) {
        let bang = if self.negated { "! " } else { "" };
        let _ = write!(out, " -m dscp {bang}--dscp 0x{:02x}", self.dscp);
    }

    fn list(&self, out: &mut String, _numeric: bool) {
        let bang = if self.negated { "!" } else { "" };
        let _ = write!(out, " DSCP match {bang}0x{:02x}", self.dscp);
    }

    fn matches(&self, pkt: &PacketView) -> bool {
        (pkt.header.tos >> 2 == self.dscp) != self.negated
    }

    fn lower(&self) -> Lowering {
        Lowering::all(vec![Atom::Keys(
            field::TOS,
            keys_where(field::TOS, |k| {
                ((k >> 2) as u8 == self.dscp) != self.negated
            }),
        )])
    }
}

static OPTIONS: [OptSpec; 2] = [
    OptSpec {
        names: &["dscp"],
        value: Value::One("a DSCP value from 0 to 0x3f"),
        negatable: true,
    },
    OptSpec {
        names: &["dscp-class"],
        value: Value::One("a DSCP class like EF, AF41 or CS1"),
        negatable: true,
    },
];

pub static MODULE: MatchModule = MatchModule {
    name: "dscp",
    family: None,
    options: &OPTIONS,
    example: "e.g. -m dscp --dscp-class EF",
    implicit_protocol: None,
    parser: || Box::<DscpParser>::default(),
    random: Random {
        weight: 1,
        draw: random,
    },
};

#[derive(Debug, Default)]
struct DscpParser(Option<Dscp>);

impl MatchParser for DscpParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        text: &[&str],
    ) -> Result<(), ParseError> {
        if self.0.is_some() {
            return Err(ParseError::Repeated {
                option: "--dscp/--dscp-class".into(),
                hint: "; -m dscp takes one value (add another -m dscp)",
            });
        }
        let text = value(option, text);
        let dscp = if option.name() == "dscp" {
            number(option, "DSCP", text, MAX_DSCP.into())? as u8
        } else {
            class(option, text)?
        };
        self.0 = Some(Dscp { negated, dscp });
        Ok(())
    }

    fn finish(self: Box<Self>, _: &RuleContext) -> Result<Match, ParseError> {
        self.0
            .map(Match::Dscp)
            .ok_or_else(|| missing(&MODULE, "--dscp or --dscp-class"))
    }
}

/// The DSCP of a palette TOS (not in nat OUTPUT).
fn random(d: &mut Dice, s: &Scope) -> Option<Match> {
    if !s.has_packet() {
        return None;
    }
    let dscp = if d.wild(s.palette) {
        d.below(usize::from(MAX_DSCP) + 1) as u8
    } else {
        d.pick(s.palette.toses) >> 2
    };
    Some(Match::Dscp(Dscp {
        negated: d.chance(s.palette.negate),
        dscp,
    }))
}
