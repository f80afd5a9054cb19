//! `-m iprange --src-range A-B --dst-range A-B` (each `!`-able): address
//! ranges (xt_iprange).

use super::{
    MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, missing, once, value,
};
use crate::compile::lower::{Atom, Lowering};
use crate::rules::generate::{Dice, Random, Scope};
use crate::rules::model::Match;
use crate::rules::parse::{ParseError, invalid, parse_dotted};
use netbeast_common::field;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::bang;
use crate::compile::PacketView;
use crate::rules::model::{AddrRange, Ipv4Net, Negatable};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpRange {
    pub src: Option<Negatable<AddrRange>>,
    pub dst: Option<Negatable<AddrRange>>,
}

impl MatchExt for IpRange {
    fn save(&self, out: &mut String) {
        out.push_str(" -m iprange");
        for (range, option) in [(&self.src, "--src-range"), (&self.dst, "--dst-range")] {
            if let Some(r) = range {
                let _ = write!(
                    out,
                    "{} {option} {}-{}",
                    bang(r.negated),
                    r.value.first,
                    r.value.last
                );
            }
        }
    }

    fn list(&self, out: &mut String, _numeric: bool) {
        for (range, what) in [(&self.src, "source"), (&self.dst, "destination")] {
            // libxt_iprange: `destination IP range ! A-B`.
            if let Some(r) = range {
                let _ = write!(
                    out,
                    " {what} IP range{} {}-{}",
                    bang(r.negated),
                    r.value.first,
                    r.value.last
                );
            }
        }
    }

    fn matches(&self, pkt: &PacketView) -> bool {
        let within = |range: &Option<Negatable<AddrRange>>, addr| match range {
            None => true,
            Some(r) => (r.value.first <= addr && addr <= r.value.last) != r.negated,
        };
        within(&self.src, pkt.src) && within(&self.dst, pkt.dst)
    }

    fn lower(&self) -> Lowering {
        // A range is the union of its prefixes, which are disjoint: one
        // alternative per prefix; outside it is outside each of them.
        let mut alternatives: Vec<Vec<Atom>> = vec![Vec::new()];
        for (f, range) in [(field::SRC, &self.src), (field::DST, &self.dst)] {
            let Some(range) = range else { continue };
            let prefixes = range_prefixes(range.value);
            if range.negated {
                for alt in &mut alternatives {
                    alt.extend(prefixes.iter().map(|&p| Atom::Prefix(f, p, true)));
                }
            } else {
                alternatives = alternatives
                    .iter()
                    .flat_map(|alt| {
                        prefixes.iter().map(move |&p| {
                            let mut a = alt.clone();
                            a.push(Atom::Prefix(f, p, false));
                            a
                        })
                    })
                    .collect();
            }
        }
        Lowering::Static(alternatives)
    }
}

static OPTIONS: [OptSpec; 2] = [
    OptSpec {
        names: &["src-range"],
        value: Value::One("an address range like 10.0.0.1-10.0.0.9"),
        negatable: true,
    },
    OptSpec {
        names: &["dst-range"],
        value: Value::One("an address range like 10.0.0.1-10.0.0.9"),
        negatable: true,
    },
];

pub static MODULE: MatchModule = MatchModule {
    name: "iprange",
    family: None,
    options: &OPTIONS,
    example: "e.g. -m iprange --src-range 10.0.0.1-10.0.0.9",
    implicit_protocol: None,
    parser: || Box::<IpRangeParser>::default(),
    random: Random {
        weight: 1,
        draw: random,
    },
};

#[derive(Debug, Default)]
struct IpRangeParser {
    src: Option<Negatable<AddrRange>>,
    dst: Option<Negatable<AddrRange>>,
}

/// `first-last`, or one address (a range of one), as xt_iprange reads it.
fn parse_range(option: &OptSpec, text: &str) -> Result<AddrRange, ParseError> {
    let addr = |part: &str| {
        parse_dotted(part, false).ok_or_else(|| {
            invalid(
                &option.flag(),
                "address range",
                text,
                "expected first-last IPv4 addresses like 10.0.0.1-10.0.0.9",
            )
        })
    };
    let (first, last) = match text.split_once('-') {
        Some((first, last)) => (addr(first)?, addr(last)?),
        None => (addr(text)?, addr(text)?),
    };
    // A reversed range is taken, as iptables takes it: it never matches
    // (or, negated, always does).
    Ok(AddrRange { first, last })
}

impl MatchParser for IpRangeParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        text: &[&str],
    ) -> Result<(), ParseError> {
        let range = Negatable {
            negated,
            value: parse_range(option, value(option, text))?,
        };
        let slot = if option.name() == "src-range" {
            &mut self.src
        } else {
            &mut self.dst
        };
        once(slot, range, option)
    }

    fn finish(self: Box<Self>, _: &RuleContext) -> Result<Match, ParseError> {
        if self.src.is_none() && self.dst.is_none() {
            return Err(missing(&MODULE, "--src-range or --dst-range"));
        }
        Ok(Match::IpRange(IpRange {
            src: self.src,
            dst: self.dst,
        }))
    }
}

/// The prefixes whose union is `first..=last`, disjoint, fewest first to
/// last (at most 62).
pub fn range_prefixes(range: AddrRange) -> Vec<Ipv4Net> {
    let (mut at, last) = (
        u64::from(u32::from(range.first)),
        u64::from(u32::from(range.last)),
    );
    let mut out = Vec::new();
    while at <= last {
        // The largest aligned block at `at` that stays within the range.
        let mut len = 32u32;
        while len > 0 {
            let size = 1u64 << (33 - len);
            if at % size != 0 || at + size - 1 > last {
                break;
            }
            len -= 1;
        }
        out.push(Ipv4Net::new((at as u32).into(), len as u8));
        at += 1u64 << (32 - len);
    }
    out
}

/// Mostly narrow ranges from a palette address (a few prefixes each); now
/// and then one between two (up to 62 prefixes: a rule with two takes
/// thousands of slots, which the compiler refuses at a cost).
fn random(d: &mut Dice, s: &Scope) -> Option<Match> {
    let p = s.palette;
    let range = |d: &mut Dice| {
        let a = u32::from(d.addr(p));
        let b = if d.chance(5) {
            u32::from(d.addr(p))
        } else {
            {
                let any = d.below(300) as u32;
                a.saturating_add(d.pick(&[0u32, 1, 3, 6, 200, any]))
            }
        };
        d.negatable(
            p,
            AddrRange {
                first: a.min(b).into(),
                last: a.max(b).into(),
            },
        )
    };
    let (src, dst) = match d.below(3) {
        0 => (Some(range(d)), None),
        1 => (None, Some(range(d))),
        _ => (Some(range(d)), Some(range(d))),
    };
    Some(Match::IpRange(IpRange { src, dst }))
}
