//! `-m hl --hl-eq|--hl-lt|--hl-gt N` (`! --hl-eq`): the IPv6 hop limit
//! (libip6t_hl, ip6tables only), the twin of IPv4's `-m ttl`: the same
//! tests on the same classifier field (`field::TTL` holds the hop limit of
//! an IPv6 packet).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::ttl::TtlOp;
use super::{
    MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, missing, number, value,
};
use crate::compile::PacketView;
use crate::compile::lower::Lowering;
use crate::rules::generate::{Dice, Random, Scope};
use crate::rules::model::{Family, Match};
use crate::rules::parse::ParseError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hl {
    pub op: TtlOp,
    pub value: u8,
}

impl Hl {
    fn option(self) -> &'static str {
        match self.op {
            TtlOp::Eq => "--hl-eq",
            TtlOp::Ne => "! --hl-eq",
            TtlOp::Lt => "--hl-lt",
            TtlOp::Gt => "--hl-gt",
        }
    }
}

impl MatchExt for Hl {
    fn save(&self, out: &mut String) {
        let _ = write!(out, " -m hl {} {}", self.option(), self.value);
    }

    fn list(&self, out: &mut String, _numeric: bool) {
        let _ = write!(out, " HL match HL {} {}", self.op.symbol(), self.value);
    }

    fn matches(&self, pkt: &PacketView) -> bool {
        self.op.holds(pkt.header.ttl, self.value)
    }

    fn lower(&self) -> Lowering {
        self.op.lower(self.value)
    }
}

static OPTIONS: [OptSpec; 3] = [
    OptSpec {
        names: &["hl-eq"],
        value: Value::One("a hop limit from 0 to 255"),
        negatable: true,
    },
    OptSpec {
        names: &["hl-lt"],
        value: Value::One("a hop limit from 0 to 255"),
        negatable: false,
    },
    OptSpec {
        names: &["hl-gt"],
        value: Value::One("a hop limit from 0 to 255"),
        negatable: false,
    },
];

pub static MODULE: MatchModule = MatchModule {
    name: "hl",
    family: Some(Family::V6),
    options: &OPTIONS,
    example: "e.g. -m hl --hl-lt 5",
    implicit_protocol: None,
    parser: || Box::<HlParser>::default(),
    random: Random {
        weight: 1,
        draw: random,
    },
};

#[derive(Debug, Default)]
struct HlParser(Option<Hl>);

impl MatchParser for HlParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        text: &[&str],
    ) -> Result<(), ParseError> {
        // One test per match, as libip6t_hl's exclusions have it.
        if let Some(have) = &self.0 {
            return Err(ParseError::IllegalOption {
                option: option.flag(),
                command: have.option().to_string(),
                reason: "-m hl takes one of --hl-eq, --hl-lt and --hl-gt; \
                         add another -m hl for a second test",
            });
        }
        let value = number(option, "hop limit", value(option, text), u8::MAX.into())? as u8;
        self.0 = Some(Hl {
            op: TtlOp::of(option.name(), negated),
            value,
        });
        Ok(())
    }

    fn finish(self: Box<Self>, _: &RuleContext) -> Result<Match, ParseError> {
        self.0
            .map(Match::Hl)
            .ok_or_else(|| missing(&MODULE, "--hl-eq, --hl-lt or --hl-gt"))
    }
}

/// One of the four tests on one of the palette's TTLs (hop limits).
fn random(d: &mut Dice, s: &Scope) -> Option<Match> {
    if !s.has_packet() {
        return None;
    }
    Some(Match::Hl(Hl {
        op: d.pick(&TtlOp::ALL),
        value: d.pick(s.palette.ttls),
    }))
}
