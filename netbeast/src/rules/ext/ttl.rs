//! `-m ttl --ttl-eq|--ttl-lt|--ttl-gt N` (`! --ttl-eq`): the IPv4 TTL
//! (ipt_ttl).

use super::{
    MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, missing, number, value,
};
use crate::compile::lower::{Atom, Lowering, key_range, negatable, single};
use crate::rules::generate::{Dice, Random, Scope};
use crate::rules::model::{Family, Match};
use crate::rules::parse::ParseError;
use netbeast_common::field;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::compile::PacketView;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TtlOp {
    /// `--ttl-eq N`
    Eq,
    /// `! --ttl-eq N`
    Ne,
    /// `--ttl-lt N`
    Lt,
    /// `--ttl-gt N`
    Gt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ttl {
    pub op: TtlOp,
    pub value: u8,
}

impl MatchExt for Ttl {
    fn save(&self, out: &mut String) {
        let _ = write!(out, " -m ttl {} {}", self.op.option(), self.value);
    }

    fn list(&self, out: &mut String, _numeric: bool) {
        let _ = write!(out, " TTL match TTL {} {}", self.op.symbol(), self.value);
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
        names: &["ttl-eq"],
        value: Value::One("a TTL from 0 to 255"),
        negatable: true,
    },
    OptSpec {
        names: &["ttl-lt"],
        value: Value::One("a TTL from 0 to 255"),
        negatable: false,
    },
    OptSpec {
        names: &["ttl-gt"],
        value: Value::One("a TTL from 0 to 255"),
        negatable: false,
    },
];

pub static MODULE: MatchModule = MatchModule {
    name: "ttl",
    family: Some(Family::V4),
    options: &OPTIONS,
    example: "e.g. -m ttl --ttl-lt 5",
    implicit_protocol: None,
    parser: || Box::<TtlParser>::default(),
    random: Random {
        weight: 1,
        draw: random,
    },
};

#[derive(Debug, Default)]
struct TtlParser(Option<Ttl>);

impl MatchParser for TtlParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        text: &[&str],
    ) -> Result<(), ParseError> {
        if let Some(have) = &self.0 {
            return Err(ParseError::Unsupported {
                what: format!("{} together with {}", option.flag(), have.op.option()),
                hint: "; -m ttl takes one of --ttl-eq, --ttl-lt and --ttl-gt (add another -m ttl)"
                    .into(),
            });
        }
        let value = number(option, "TTL", value(option, text), u8::MAX.into())? as u8;
        self.0 = Some(Ttl {
            op: TtlOp::of(option.name(), negated),
            value,
        });
        Ok(())
    }

    fn finish(self: Box<Self>, _: &RuleContext) -> Result<Match, ParseError> {
        self.0
            .map(Match::Ttl)
            .ok_or_else(|| missing(&MODULE, "--ttl-eq, --ttl-lt or --ttl-gt"))
    }
}

impl TtlOp {
    pub const ALL: [TtlOp; 4] = [TtlOp::Eq, TtlOp::Ne, TtlOp::Lt, TtlOp::Gt];

    /// The test an option names (`ttl-eq`, `hl-lt`, ...; `!` only with
    /// `-eq`): -m ttl's and -m hl's options differ in their prefix only.
    pub fn of(option: &str, negated: bool) -> TtlOp {
        match (option.rsplit('-').next(), negated) {
            (Some("eq"), false) => TtlOp::Eq,
            (Some("eq"), true) => TtlOp::Ne,
            (Some("lt"), _) => TtlOp::Lt,
            _ => TtlOp::Gt,
        }
    }

    /// The comparison as `-L` prints it.
    pub fn symbol(self) -> &'static str {
        match self {
            TtlOp::Eq => "==",
            TtlOp::Ne => "!=",
            TtlOp::Lt => "<",
            TtlOp::Gt => ">",
        }
    }

    /// Whether a TTL (or IPv6 hop limit) of `have` passes the test of `value`.
    pub fn holds(self, have: u8, value: u8) -> bool {
        match self {
            TtlOp::Eq => have == value,
            TtlOp::Ne => have != value,
            TtlOp::Lt => have < value,
            TtlOp::Gt => have > value,
        }
    }

    /// The test on `field::TTL`, which holds the IPv4 TTL or the IPv6 hop
    /// limit.
    pub fn lower(self, value: u8) -> Lowering {
        let v = u32::from(value);
        // `--ttl-lt 0` and `--ttl-gt 255` match nothing.
        let keys = match self {
            TtlOp::Eq => single(v),
            TtlOp::Ne => negatable(field::TTL, single(v), true),
            TtlOp::Lt if v == 0 => Vec::new(),
            TtlOp::Lt => key_range(0, v - 1),
            TtlOp::Gt if v == 255 => Vec::new(),
            TtlOp::Gt => key_range(v + 1, 255),
        };
        Lowering::all(vec![Atom::Keys(field::TTL, keys)])
    }

    /// The option that gives this test.
    pub fn option(self) -> &'static str {
        match self {
            TtlOp::Eq => "--ttl-eq",
            TtlOp::Ne => "! --ttl-eq",
            TtlOp::Lt => "--ttl-lt",
            TtlOp::Gt => "--ttl-gt",
        }
    }
}

/// One of the four tests on one of the palette's TTLs (not in nat OUTPUT).
fn random(d: &mut Dice, s: &Scope) -> Option<Match> {
    if !s.has_packet() {
        return None;
    }
    let value = if d.wild(s.palette) {
        d.next() as u8
    } else {
        d.pick(s.palette.ttls)
    };
    Some(Match::Ttl(Ttl {
        op: d.pick(&TtlOp::ALL),
        value,
    }))
}
