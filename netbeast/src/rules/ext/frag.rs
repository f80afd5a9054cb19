//! `-m frag` (libip6t_frag, ip6tables only): the first fragment header's
//! identification (`--fragid`, `!`), reserved fields (`--fragres`),
//! position (`--fragfirst`, `--fragmore`, `--fraglast`); never a packet
//! without a fragment header. `--fraglen` is taken and printed as
//! ip6tables does, and tested by neither: the kernel's ip6t_frag reads
//! no length.
//!
//! A guard on the packet (`guard_kind::IPV6_FRAG`): the IPv6 parser
//! records the first fragment header; the test is
//! `Guard::holds_ipv6_frag`, shared with the kernel.

use std::fmt::Write as _;

use netbeast_common::{Guard, guard_kind, ipv6_test};
use serde::{Deserialize, Serialize};

use super::{MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, bang, once, value};
use crate::compile::PacketView;
use crate::compile::lower::Lowering;
use crate::rules::generate::{Dice, Random, Scope};
use crate::rules::model::{Family, Match, Negatable};
use crate::rules::parse::ParseError;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frag {
    /// `--fragid`: (first, last), 0:4294967295 when not given.
    pub ids: Negatable<(u32, u32)>,
    /// `--fraglen`, printed only.
    pub len: Option<Negatable<u32>>,
    pub reserved: bool,
    pub first: bool,
    pub more: bool,
    pub last: bool,
}

/// Every identification: the range a rule without `--fragid` holds.
const ALL: (u32, u32) = (0, u32::MAX);

impl Frag {
    fn guard(&self) -> Guard {
        let mut tests = ipv6_test::RANGE;
        if self.ids.negated {
            tests |= ipv6_test::RANGE << ipv6_test::INVERT_SHIFT;
        }
        for (set, bit) in [
            (self.reserved, ipv6_test::FRAG_RES),
            (self.first, ipv6_test::FRAG_FIRST),
            (self.more, ipv6_test::FRAG_MORE),
            (self.last, ipv6_test::FRAG_LAST),
        ] {
            if set {
                tests |= bit;
            }
        }
        let (lo, hi) = self.ids.value;
        Guard {
            kind: guard_kind::IPV6_FRAG,
            _pad: tests,
            b: u64::from(lo) | u64::from(hi) << 32,
            ..Guard::default()
        }
    }

    fn shows_ids(&self) -> bool {
        self.ids.value != ALL || self.ids.negated
    }
}

impl MatchExt for Frag {
    fn save(&self, out: &mut String) {
        out.push_str(" -m frag");
        if self.shows_ids() {
            let (lo, hi) = self.ids.value;
            let _ = write!(out, "{} --fragid ", bang(self.ids.negated));
            if lo == hi {
                let _ = write!(out, "{lo}");
            } else {
                let _ = write!(out, "{lo}:{hi}");
            }
        }
        if let Some(l) = &self.len {
            let _ = write!(out, "{} --fraglen {}", bang(l.negated), l.value);
        }
        for (set, name) in [
            (self.reserved, " --fragres"),
            (self.first, " --fragfirst"),
            (self.more, " --fragmore"),
            (self.last, " --fraglast"),
        ] {
            if set {
                out.push_str(name);
            }
        }
    }

    /// libip6t_frag's print: ` frag ids:1:42 length:8 reserved first`
    /// (` frag ` alone when nothing is tested).
    fn list(&self, out: &mut String, _numeric: bool) {
        out.push_str(" frag ");
        let inv = |n: bool| if n { "!" } else { "" };
        if self.shows_ids() {
            let (lo, hi) = self.ids.value;
            let n = inv(self.ids.negated);
            if lo == hi {
                let _ = write!(out, "id:{n}{lo}");
            } else {
                let _ = write!(out, "ids:{n}{lo}:{hi}");
            }
        }
        if let Some(l) = &self.len {
            let _ = write!(out, " length:{}{}", inv(l.negated), l.value);
        }
        for (set, name) in [
            (self.reserved, " reserved"),
            (self.first, " first"),
            (self.more, " more"),
            (self.last, " last"),
        ] {
            if set {
                out.push_str(name);
            }
        }
    }

    fn matches(&self, pkt: &PacketView) -> bool {
        pkt.addr6.is_some() && self.guard().holds_ipv6_frag(&pkt.header.ipv6_ext)
    }

    fn lower(&self) -> Lowering {
        Lowering::Guarded(vec![Vec::new()], vec![self.guard()])
    }
}

static OPTIONS: [OptSpec; 6] = [
    OptSpec {
        names: &["fragid"],
        value: Value::One("an identification or range like 1:42"),
        negatable: true,
    },
    OptSpec {
        names: &["fraglen"],
        value: Value::One("a length"),
        negatable: true,
    },
    OptSpec {
        names: &["fragres"],
        value: Value::None,
        negatable: false,
    },
    OptSpec {
        names: &["fragfirst"],
        value: Value::None,
        negatable: false,
    },
    OptSpec {
        names: &["fragmore"],
        value: Value::None,
        negatable: false,
    },
    OptSpec {
        names: &["fraglast"],
        value: Value::None,
        negatable: false,
    },
];

pub static MODULE: MatchModule = MatchModule {
    name: "frag",
    family: Some(Family::V6),
    options: &OPTIONS,
    example: "e.g. -m frag --fragmore",
    implicit_protocol: None,
    parser: || Box::<FragParser>::default(),
    random: Random {
        weight: 1,
        draw: random,
    },
};

#[derive(Debug, Default)]
struct FragParser {
    ids: Option<Negatable<(u32, u32)>>,
    len: Option<Negatable<u32>>,
    flags: [Option<bool>; 4],
}

impl MatchParser for FragParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        values: &[&str],
    ) -> Result<(), ParseError> {
        let max = u64::from(u32::MAX);
        match option.name() {
            "fragid" => {
                let (lo, hi) = super::range(option, "identification", value(option, values), max)?;
                let value = (lo as u32, hi as u32);
                once(&mut self.ids, Negatable { negated, value }, option)
            }
            "fraglen" => {
                let value = super::number(option, "length", value(option, values), max)? as u32;
                once(&mut self.len, Negatable { negated, value }, option)
            }
            name => {
                let i = match name {
                    "fragres" => 0,
                    "fragfirst" => 1,
                    "fragmore" => 2,
                    _ => 3,
                };
                // More fragments and the last one exclude each other, as
                // libip6t_frag's option table has it.
                let (more, last) = (self.flags[2].is_some(), self.flags[3].is_some());
                if i == 2 && last || i == 3 && more {
                    let other = if i == 2 { "--fraglast" } else { "--fragmore" };
                    return Err(ParseError::IllegalOption {
                        option: option.flag(),
                        command: other.into(),
                        reason: "a fragment is the last one or more follow it, not both",
                    });
                }
                once(&mut self.flags[i], true, option)
            }
        }
    }

    fn finish(self: Box<Self>, _: &RuleContext) -> Result<Match, ParseError> {
        Ok(Match::Frag(Frag {
            ids: self.ids.unwrap_or(Negatable {
                negated: false,
                value: ALL,
            }),
            len: self.len,
            reserved: self.flags[0].is_some(),
            first: self.flags[1].is_some(),
            more: self.flags[2].is_some(),
            last: self.flags[3].is_some(),
        }))
    }
}

/// Identification ranges around the probes' (the differential harness's
/// IPv6 probes carry their number, 10000 and up), or every one; the
/// position and reserved tests now and then.
fn random(d: &mut Dice, s: &Scope) -> Option<Match> {
    let ids = if d.chance(40) {
        ALL
    } else {
        d.pick(&[
            (0, 30_000),
            (30_000, 65_535),
            (20_000, 20_000),
            (70_000, u32::MAX),
        ])
    };
    Some(Match::Frag(Frag {
        ids: d.negatable(s.palette, ids),
        len: d
            .maybe(10, |d| d.pick(&[0u32, 8]))
            .map(|l| d.negatable(s.palette, l)),
        reserved: d.chance(10),
        first: d.chance(20),
        more: d.chance(15),
        last: d.chance(15),
    }))
}
