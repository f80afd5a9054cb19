//! `-m iprange --src-range A-B --dst-range A-B` (each `!`-able): address
//! ranges (xt_iprange), IPv4 for iptables and IPv6 for ip6tables.
//!
//! Both lower to prefixes, so a range costs what its prefixes cost in the
//! classifier, flat in the rule count, with no kernel code. An IPv4 range
//! outside of which a packet must be is its prefixes negated, one atom
//! each. An IPv6 prefix is a conjunction of up to four word atoms, whose
//! negation is no atom (and the conjunction of a hundred negated ones no
//! small set of terms): a negated IPv6 range is the prefixes of its
//! complement instead, `[::, first - 1]` and `[last + 1, ffff:…]`, at most
//! 254 disjoint alternatives (`range_prefixes6`).

use super::{
    MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, missing, once, value,
};
use crate::compile::lower::{Atom, Lowering};
use crate::rules::generate::{Dice, Random, Scope};
use crate::rules::model::Match;
use crate::rules::parse::{ParseError, invalid, parse_dotted};
use netbeast_common::field;
use std::fmt::Write as _;
use std::net::Ipv6Addr;

use serde::{Deserialize, Serialize};

use super::bang;
use crate::compile::PacketView;
use crate::rules::model::{AddrRange, AddrRange6, Family, Ipv4Net, Ipv6Net, Negatable};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpRange {
    pub src: Option<Negatable<AddrRange>>,
    pub dst: Option<Negatable<AddrRange>>,
    /// An ip6tables rule's ranges (`src`/`dst` are then `None`).
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub src6: Option<Negatable<AddrRange6>>,
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub dst6: Option<Negatable<AddrRange6>>,
}

/// The ranges of one option as text: (negated, first, last).
type Shown = Option<(bool, String, String)>;

impl IpRange {
    /// Each option's range as its family prints it.
    fn shown(&self) -> [(Shown, &'static str, &'static str); 2] {
        let v4 = |r: &Option<Negatable<AddrRange>>| {
            r.as_ref().map(|r| {
                (
                    r.negated,
                    r.value.first.to_string(),
                    r.value.last.to_string(),
                )
            })
        };
        let v6 = |r: &Option<Negatable<AddrRange6>>| {
            r.as_ref().map(|r| {
                (
                    r.negated,
                    r.value.first.to_string(),
                    r.value.last.to_string(),
                )
            })
        };
        [
            (v4(&self.src).or(v6(&self.src6)), "--src-range", "source"),
            (
                v4(&self.dst).or(v6(&self.dst6)),
                "--dst-range",
                "destination",
            ),
        ]
    }
}

impl MatchExt for IpRange {
    fn save(&self, out: &mut String) {
        out.push_str(" -m iprange");
        for (range, option, _) in self.shown() {
            if let Some((negated, first, last)) = range {
                let _ = write!(out, "{} {option} {first}-{last}", bang(negated));
            }
        }
    }

    fn list(&self, out: &mut String, _numeric: bool) {
        for (range, _, what) in self.shown() {
            // libxt_iprange: `destination IP range ! A-B`.
            if let Some((negated, first, last)) = range {
                let _ = write!(out, " {what} IP range{} {first}-{last}", bang(negated));
            }
        }
    }

    fn matches(&self, pkt: &PacketView) -> bool {
        if self.src6.is_some() || self.dst6.is_some() {
            // An IPv4 packet never reaches an ip6tables rule.
            let Some((src, dst)) = pkt.addr6 else {
                return false;
            };
            let within = |range: &Option<Negatable<AddrRange6>>, addr| match range {
                None => true,
                Some(r) => (r.value.first <= addr && addr <= r.value.last) != r.negated,
            };
            return within(&self.src6, src) && within(&self.dst6, dst);
        }
        let within = |range: &Option<Negatable<AddrRange>>, addr| match range {
            None => true,
            Some(r) => (r.value.first <= addr && addr <= r.value.last) != r.negated,
        };
        within(&self.src, pkt.src) && within(&self.dst, pkt.dst)
    }

    fn lower(&self) -> Lowering {
        if self.src6.is_some() || self.dst6.is_some() {
            return self.lower6();
        }
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

impl IpRange {
    /// An ip6tables rule's ranges: each option is the union of its
    /// prefixes (those of its complement when negated), each prefix the
    /// conjunction of its words' atoms; the options ANDed.
    fn lower6(&self) -> Lowering {
        let mut alternatives: Vec<Vec<Atom>> = vec![Vec::new()];
        for (source, range) in [(true, &self.src6), (false, &self.dst6)] {
            let Some(range) = range else { continue };
            let (first, last) = (u128::from(range.value.first), u128::from(range.value.last));
            let mut prefixes = Vec::new();
            match (range.negated, first <= last) {
                (false, true) => prefixes = range_prefixes6(first, last),
                // A reversed range holds nothing, as iptables takes it.
                (false, false) => {}
                (true, false) => prefixes.push(Ipv6Net::new(Ipv6Addr::UNSPECIFIED, 0)),
                (true, true) => {
                    if first > 0 {
                        prefixes.extend(range_prefixes6(0, first - 1));
                    }
                    if last < u128::MAX {
                        prefixes.extend(range_prefixes6(last + 1, u128::MAX));
                    }
                }
            }
            let conjunctions: Vec<Vec<Atom>> = prefixes
                .iter()
                .map(|p| {
                    p.words()
                        .into_iter()
                        .enumerate()
                        .filter_map(|(word, w)| {
                            w.map(|w| Atom::Prefix(field::addr_field(source, word), w, false))
                        })
                        .collect()
                })
                .collect();
            alternatives = alternatives
                .iter()
                .flat_map(|alt| {
                    conjunctions.iter().map(move |c| {
                        let mut a = alt.clone();
                        a.extend(c.iter().cloned());
                        a
                    })
                })
                .collect();
        }
        Lowering::Static(alternatives)
    }
}

static OPTIONS: [OptSpec; 2] = [
    OptSpec {
        names: &["src-range"],
        value: Value::One(
            "an address range like 10.0.0.1-10.0.0.9 (fd00::1-fd00::9 for ip6tables)",
        ),
        negatable: true,
    },
    OptSpec {
        names: &["dst-range"],
        value: Value::One(
            "an address range like 10.0.0.1-10.0.0.9 (fd00::1-fd00::9 for ip6tables)",
        ),
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

/// The options' texts, read in `finish`, which knows the family.
#[derive(Debug, Default)]
struct IpRangeParser {
    src: Option<Negatable<String>>,
    dst: Option<Negatable<String>>,
}

/// An ip6tables range: `first-last`, or one address.
fn parse_range6(option: &OptSpec, text: &str) -> Result<AddrRange6, ParseError> {
    let addr = |part: &str| {
        part.parse::<Ipv6Addr>().map_err(|_| {
            invalid(
                &option.flag(),
                "address range",
                text,
                "expected first-last IPv6 addresses like fd00::1-fd00::9",
            )
        })
    };
    let (first, last) = match text.split_once('-') {
        Some((first, last)) => (addr(first)?, addr(last)?),
        None => (addr(text)?, addr(text)?),
    };
    Ok(AddrRange6 { first, last })
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
            value: value(option, text).to_string(),
        };
        let slot = if option.name() == "src-range" {
            &mut self.src
        } else {
            &mut self.dst
        };
        once(slot, range, option)
    }

    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Match, ParseError> {
        if self.src.is_none() && self.dst.is_none() {
            return Err(missing(&MODULE, "--src-range or --dst-range"));
        }
        let option = |name: &str| {
            OPTIONS
                .iter()
                .find(|o| o.name() == name)
                .expect("an iprange option")
        };
        let read = |name: &str, text: &Option<Negatable<String>>| -> Result<_, ParseError> {
            text.as_ref()
                .map(|t| {
                    parse_range(option(name), &t.value).map(|value| Negatable {
                        negated: t.negated,
                        value,
                    })
                })
                .transpose()
        };
        let read6 = |name: &str, text: &Option<Negatable<String>>| -> Result<_, ParseError> {
            text.as_ref()
                .map(|t| {
                    parse_range6(option(name), &t.value).map(|value| Negatable {
                        negated: t.negated,
                        value,
                    })
                })
                .transpose()
        };
        Ok(Match::IpRange(match rule.family {
            Family::V4 => IpRange {
                src: read("src-range", &self.src)?,
                dst: read("dst-range", &self.dst)?,
                src6: None,
                dst6: None,
            },
            Family::V6 => IpRange {
                src: None,
                dst: None,
                src6: read6("src-range", &self.src)?,
                dst6: read6("dst-range", &self.dst)?,
            },
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

/// The IPv6 prefixes whose union is `first..=last` (`first <= last`),
/// disjoint, fewest from first to last (at most 254).
pub fn range_prefixes6(first: u128, last: u128) -> Vec<Ipv6Net> {
    let mut out = Vec::new();
    let mut at = first;
    loop {
        // The largest aligned block at `at` that stays within the range:
        // its size is bounded by `at`'s alignment and by what is left.
        let align = if at == 0 { 128 } else { at.trailing_zeros() };
        let left = last - at;
        let fits = if left == u128::MAX {
            128
        } else {
            127 - (left + 1).leading_zeros()
        };
        let bits = align.min(fits);
        out.push(Ipv6Net::new(Ipv6Addr::from(at), (128 - bits) as u8));
        if bits == 128 {
            break;
        }
        let size = 1u128 << bits;
        match at.checked_add(size) {
            Some(next) if next - 1 < last => at = next,
            _ => break,
        }
    }
    out
}

/// Mostly narrow ranges from a palette address (a few prefixes each); now
/// and then one between two (up to 62 prefixes: a rule with two takes
/// thousands of slots, which the compiler refuses at a cost).
fn random(d: &mut Dice, s: &Scope) -> Option<Match> {
    let p = s.palette;
    if s.family == Family::V6 {
        // The same shapes over the IPv6 palette: narrow mostly, now and
        // then between two addresses; never negated: the complement of a
        // 128-bit range is up to 254 prefixes, which with a second range
        // in the rule passes the compiler's MAX_TERMS_PER_RULE (a refusal
        // with its own message, not a difference to draw again and again).
        // A wide range beside a second range passes it too (254 prefixes
        // times the other's): a rule with both draws them narrow (at most
        // 16 prefixes each).
        let range6 = |d: &mut Dice, wide: bool| {
            let a = u128::from(d.addr6(p));
            let b = if wide && d.chance(5) {
                u128::from(d.addr6(p))
            } else {
                let any = d.below(300) as u128;
                a.saturating_add(d.pick(&[0u128, 1, 3, 6, 200, any]))
            };
            Negatable {
                negated: false,
                value: AddrRange6 {
                    first: a.min(b).into(),
                    last: a.max(b).into(),
                },
            }
        };
        let (src6, dst6) = match d.below(3) {
            0 => (Some(range6(d, true)), None),
            1 => (None, Some(range6(d, true))),
            _ => (Some(range6(d, false)), Some(range6(d, false))),
        };
        return Some(Match::IpRange(IpRange {
            src: None,
            dst: None,
            src6,
            dst6,
        }));
    }
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
    Some(Match::IpRange(IpRange {
        src,
        dst,
        src6: None,
        dst6: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prefixes cover the range exactly, disjoint and in order, and
    /// there are at most 254 of them (the whole space is one).
    #[test]
    fn ipv6_range_prefixes_cover_the_range() {
        let a = |t: &str| u128::from(t.parse::<Ipv6Addr>().unwrap());
        for (first, last, count) in [
            (a("2001:db8::1"), a("2001:db8::10"), 5),
            (0, u128::MAX, 1),
            (1, u128::MAX - 1, 254),
            (a("fd00::"), a("fd00::ffff"), 1),
            (7, 7, 1),
            (a("2001:db8::11"), u128::MAX, 0),
        ] {
            let prefixes = range_prefixes6(first, last);
            if count != 0 {
                assert_eq!(prefixes.len(), count, "{first:x}-{last:x}");
            }
            assert!(prefixes.len() <= 254);
            let mut at = first;
            for p in &prefixes {
                let start = u128::from(p.addr);
                assert_eq!(start, at, "{first:x}-{last:x}: {p}");
                let size_less_one = !crate::rules::model::prefix_mask6(p.prefix_len);
                let end = start + size_less_one;
                assert!(end <= last);
                at = end.wrapping_add(1);
            }
            assert_eq!(at, last.wrapping_add(1), "{first:x}-{last:x}: ends short");
        }
    }
}
