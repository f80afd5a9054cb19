//! `-m rt` (libip6t_rt, ip6tables only): the first routing header's type,
//! segments left and length (`--rt-type`, `--rt-segsleft`, `--rt-len`,
//! each with `!`); never a packet without a routing header. ufw writes
//! `-m rt --rt-type 0 -j DROP` against type-0 source routing.
//!
//! A guard on the packet (`guard_kind::IPV6_RT`): the IPv6 parser records
//! the first routing header; the test is `Guard::holds_ipv6_rt`, shared
//! with the kernel. The type-0 address options (`--rt-0-res`,
//! `--rt-0-addrs`, `--rt-0-not-strict`) are not supported yet.

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
pub struct Rt {
    pub rt_type: Option<Negatable<u32>>,
    /// `--rt-segsleft`: (first, last), 0:4294967295 when not given.
    pub segsleft: Negatable<(u32, u32)>,
    /// `--rt-len`, in bytes (the whole header).
    pub len: Option<Negatable<u32>>,
}

/// Every segments-left value: the range a rule without `--rt-segsleft`
/// holds.
const ALL: (u32, u32) = (0, u32::MAX);

impl Rt {
    fn guard(&self) -> Guard {
        let mut tests = ipv6_test::RANGE;
        if self.segsleft.negated {
            tests |= ipv6_test::RANGE << ipv6_test::INVERT_SHIFT;
        }
        let mut a = 0u64;
        if let Some(t) = &self.rt_type {
            tests |= ipv6_test::RT_TYPE;
            if t.negated {
                tests |= ipv6_test::RT_TYPE << ipv6_test::INVERT_SHIFT;
            }
            a |= u64::from(t.value);
        }
        if let Some(l) = &self.len {
            tests |= ipv6_test::RT_LEN;
            if l.negated {
                tests |= ipv6_test::RT_LEN << ipv6_test::INVERT_SHIFT;
            }
            a |= u64::from(l.value) << 32;
        }
        let (lo, hi) = self.segsleft.value;
        Guard {
            kind: guard_kind::IPV6_RT,
            _pad: tests,
            a,
            b: u64::from(lo) | u64::from(hi) << 32,
            ..Guard::default()
        }
    }
}

impl MatchExt for Rt {
    fn save(&self, out: &mut String) {
        out.push_str(" -m rt");
        if let Some(t) = &self.rt_type {
            let _ = write!(out, "{} --rt-type {}", bang(t.negated), t.value);
        }
        let (lo, hi) = self.segsleft.value;
        if (lo, hi) != ALL || self.segsleft.negated {
            let _ = write!(out, "{} --rt-segsleft ", bang(self.segsleft.negated));
            if lo == hi {
                let _ = write!(out, "{lo}");
            } else {
                let _ = write!(out, "{lo}:{hi}");
            }
        }
        if let Some(l) = &self.len {
            let _ = write!(out, "{} --rt-len {}", bang(l.negated), l.value);
        }
    }

    /// libip6t_rt's print: ` rt type:!1 segslefts:12:23 length:42`.
    fn list(&self, out: &mut String, _numeric: bool) {
        out.push_str(" rt");
        let inv = |n: bool| if n { "!" } else { "" };
        if let Some(t) = &self.rt_type {
            let _ = write!(out, " type:{}{}", inv(t.negated), t.value);
        }
        let (lo, hi) = self.segsleft.value;
        if (lo, hi) != ALL || self.segsleft.negated {
            let n = inv(self.segsleft.negated);
            if lo == hi {
                let _ = write!(out, " segsleft:{n}{lo}");
            } else {
                let _ = write!(out, " segslefts:{n}{lo}:{hi}");
            }
        }
        if let Some(l) = &self.len {
            let _ = write!(out, " length:{}{}", inv(l.negated), l.value);
        }
    }

    fn matches(&self, pkt: &PacketView) -> bool {
        pkt.addr6.is_some() && self.guard().holds_ipv6_rt(&pkt.header.ipv6_ext)
    }

    fn lower(&self) -> Lowering {
        Lowering::Guarded(vec![Vec::new()], vec![self.guard()])
    }
}

static OPTIONS: [OptSpec; 6] = [
    OptSpec {
        names: &["rt-type"],
        value: Value::One("a routing header type"),
        negatable: true,
    },
    OptSpec {
        names: &["rt-segsleft"],
        value: Value::One("segments left, a number or range like 1:23"),
        negatable: true,
    },
    OptSpec {
        names: &["rt-len"],
        value: Value::One("the routing header's length in bytes"),
        negatable: true,
    },
    OptSpec {
        names: &["rt-0-res"],
        value: Value::None,
        negatable: false,
    },
    OptSpec {
        names: &["rt-0-addrs"],
        value: Value::One("type-0 addresses"),
        negatable: false,
    },
    OptSpec {
        names: &["rt-0-not-strict"],
        value: Value::None,
        negatable: false,
    },
];

pub static MODULE: MatchModule = MatchModule {
    name: "rt",
    family: Some(Family::V6),
    options: &OPTIONS,
    example: "e.g. -m rt --rt-type 0",
    implicit_protocol: None,
    parser: || Box::<RtParser>::default(),
    random: Random {
        weight: 1,
        draw: random,
    },
};

#[derive(Debug, Default)]
struct RtParser {
    rt_type: Option<Negatable<u32>>,
    segsleft: Option<Negatable<(u32, u32)>>,
    len: Option<Negatable<u32>>,
}

impl MatchParser for RtParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        values: &[&str],
    ) -> Result<(), ParseError> {
        let max = u64::from(u32::MAX);
        match option.name() {
            "rt-type" => {
                let value = super::number(option, "type", value(option, values), max)? as u32;
                once(&mut self.rt_type, Negatable { negated, value }, option)
            }
            "rt-segsleft" => {
                let (lo, hi) = super::range(option, "segments left", value(option, values), max)?;
                let value = (lo as u32, hi as u32);
                once(&mut self.segsleft, Negatable { negated, value }, option)
            }
            "rt-len" => {
                let value = super::number(option, "length", value(option, values), max)? as u32;
                once(&mut self.len, Negatable { negated, value }, option)
            }
            other => Err(ParseError::Unsupported {
                what: format!("-m rt --{other}"),
                hint: "; netbeast's -m rt tests --rt-type, --rt-segsleft and --rt-len".into(),
            }),
        }
    }

    fn finish(self: Box<Self>, _: &RuleContext) -> Result<Match, ParseError> {
        Ok(Match::Rt(Rt {
            rt_type: self.rt_type,
            segsleft: self.segsleft.unwrap_or(Negatable {
                negated: false,
                value: ALL,
            }),
            len: self.len,
        }))
    }
}

/// Drawn for ip6tables rulesets (the differential harness's IPv6 mode).
fn random(d: &mut Dice, s: &Scope) -> Option<Match> {
    // The types, lengths and segments left the differential harness's
    // probes carry, and others.
    let p = s.palette;
    let rt_type = d
        .maybe(50, |d| d.pick(&[0u32, 2, 4]))
        .map(|t| d.negatable(p, t));
    let segsleft = if d.chance(50) {
        ALL
    } else {
        d.pick(&[(0, 0), (1, 1), (0, 3), (2, u32::MAX)])
    };
    let len = d
        .maybe(30, |d| d.pick(&[8u32, 16, 24, 40]))
        .map(|l| d.negatable(p, l));
    Some(Match::Rt(Rt {
        rt_type,
        segsleft: d.negatable(p, segsleft),
        len,
    }))
}
