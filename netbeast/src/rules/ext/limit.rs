//! `-m limit --limit RATE --limit-burst N`: a token bucket per rule
//! (xt_limit; nft_limit under iptables-nft). It keeps state, so the
//! classifier cannot hold it: it becomes a *guard*
//! (`netbeast_common::guard_kind::LIMIT`), one bucket per rule shared by
//! every CPU, refilled by elapsed time and capped at the burst.

use crate::rules::generate::{Dice, Random, Scope};
use std::fmt::Write as _;

use netbeast_common::{Guard, guard_kind};
use serde::{Deserialize, Serialize};

use super::{MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, number, once, value};
use crate::compile::PacketView;
use crate::compile::lower::Lowering;
use crate::rules::model::Match;
use crate::rules::parse::{ParseError, invalid};

/// The unit of a rate's period, as xt_limit stores it (`XT_LIMIT_SCALE`):
/// `--limit 50/second` is one packet every 10000 / 50 = 200 units.
pub const SCALE: u32 = 10_000;
/// iptables' defaults: `--limit 3/hour`, `--limit-burst 5`.
pub const DEFAULT_PERIOD: u32 = SCALE * 3600 / 3;
pub const DEFAULT_BURST: u32 = 5;
/// The largest `--limit-burst` iptables takes.
pub const MAX_BURST: u32 = 10_000;
/// Nanoseconds in one period unit.
const NS_PER_UNIT: u64 = 1_000_000_000 / SCALE as u64;

/// The units a rate may name after its `/`, with their length in seconds;
/// any prefix of a name will do, in any case (`/s`, `/Min`), as
/// libxt_limit reads them.
const UNITS: [(&str, u32); 4] = [
    ("second", 1),
    ("minute", 60),
    ("hour", 3600),
    ("day", 86_400),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    /// The time between packets in 1/`SCALE` seconds (xt_rateinfo's avg).
    pub period: u32,
    /// `--limit-burst`: packets the full bucket holds.
    pub burst: u32,
}

impl Default for Limit {
    fn default() -> Self {
        Limit {
            period: DEFAULT_PERIOD,
            burst: DEFAULT_BURST,
        }
    }
}

/// A rate as libxt_limit reads it: `N`, `N/second`, `N/s`, `N/min`, ...
/// (also what `-m hashlimit` reads for a packet rate). `None` when it is
/// not one; `Some(Err)` when it is faster than the unit can hold.
pub fn parse_rate(text: &str) -> Option<Result<u32, ()>> {
    let (count, seconds) = match text.split_once('/') {
        None => (text, 1),
        Some((count, unit)) => {
            if unit.is_empty() {
                return None;
            }
            let unit = unit.to_ascii_lowercase();
            let (_, seconds) = UNITS.iter().find(|(name, _)| name.starts_with(&unit))?;
            (count, *seconds)
        }
    };
    // atoi: leading digits, the rest ignored; 0 or none is no rate.
    let digits: String = count.chars().take_while(char::is_ascii_digit).collect();
    let count: u64 = digits.parse().ok().filter(|&n| n > 0)?;
    let period = u64::from(SCALE) * u64::from(seconds) / count;
    Some(if period == 0 {
        Err(())
    } else {
        Ok(period as u32)
    })
}

/// A period as iptables prints it: the largest unit among day, hour, min,
/// sec whose count of packets is whole or close to it (libxt_limit's
/// print_rate), e.g. `50/sec`, `3/hour`.
pub fn rate_text(period: u32) -> String {
    const RATES: [(&str, u64); 4] = [
        ("day", SCALE as u64 * 86_400),
        ("hour", SCALE as u64 * 3600),
        ("min", SCALE as u64 * 60),
        ("sec", SCALE as u64),
    ];
    if period == 0 {
        return "inf".into();
    }
    let period = u64::from(period);
    // Step down to a smaller unit while the period fits in it and the
    // count per that unit would not be more fraction than whole.
    let mut i = 1;
    while i < RATES.len() {
        let mult = RATES[i].1;
        if period > mult || mult / period < mult % period {
            break;
        }
        i += 1;
    }
    let (name, mult) = RATES[i - 1];
    format!("{}/{name}", mult / period)
}

impl Limit {
    /// The guard the kernel evaluates: a packet costs the period in
    /// nanoseconds, the bucket holds `burst` of them.
    pub fn guard(&self) -> Guard {
        let cost = u64::from(self.period) * NS_PER_UNIT;
        Guard {
            kind: guard_kind::LIMIT,
            a: cost,
            b: cost * u64::from(self.burst),
            ..Guard::default()
        }
    }
}

impl MatchExt for Limit {
    fn save(&self, out: &mut String) {
        let _ = write!(out, " -m limit --limit {}", rate_text(self.period));
        if self.burst != DEFAULT_BURST {
            let _ = write!(out, " --limit-burst {}", self.burst);
        }
    }

    fn list(&self, out: &mut String, _numeric: bool) {
        let _ = write!(
            out,
            " limit: avg {} burst {}",
            rate_text(self.period),
            self.burst
        );
    }

    /// A guard: not part of the rule's static match.
    fn matches(&self, _pkt: &PacketView) -> bool {
        true
    }

    fn lower(&self) -> Lowering {
        Lowering::Guard(self.guard())
    }
}

static OPTIONS: [OptSpec; 2] = [
    OptSpec {
        names: &["limit"],
        value: Value::One("a rate like 50/second (or /minute, /hour, /day)"),
        negatable: false,
    },
    OptSpec {
        names: &["limit-burst"],
        value: Value::One("a number of packets from 1 to 10000"),
        negatable: false,
    },
];

pub static MODULE: MatchModule = MatchModule {
    name: "limit",
    family: None,
    options: &OPTIONS,
    example: "e.g. -m limit --limit 50/second --limit-burst 150",
    implicit_protocol: None,
    parser: || Box::<LimitParser>::default(),
    random: Random {
        weight: 1,
        draw: random,
    },
};

#[derive(Debug, Default)]
struct LimitParser {
    period: Option<u32>,
    burst: Option<u32>,
}

impl MatchParser for LimitParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        _negated: bool,
        text: &[&str],
    ) -> Result<(), ParseError> {
        let text = value(option, text);
        if option.name() == "limit" {
            let period = match parse_rate(text) {
                Some(Ok(period)) => period,
                Some(Err(())) => {
                    return Err(invalid(
                        "--limit",
                        "rate",
                        text,
                        "rate too fast: at most 10000/second",
                    ));
                }
                None => {
                    return Err(invalid(
                        "--limit",
                        "rate",
                        text,
                        "expected a count of 1 or more, optionally followed by \
                         /second, /minute, /hour or /day (like 50/second or 3/min)",
                    ));
                }
            };
            once(&mut self.period, period, option)
        } else {
            let burst = number(option, "burst", text, MAX_BURST.into())? as u32;
            // The kernel's xt_limit refuses a burst of 0; iptables-nft
            // hands it to nft_limit, which takes it for the default.
            // netbeast does as the iptables on this machine does.
            let burst = if burst == 0 { DEFAULT_BURST } else { burst };
            once(&mut self.burst, burst, option)
        }
    }

    fn finish(self: Box<Self>, _: &RuleContext) -> Result<Match, ParseError> {
        Ok(Match::Limit(Limit {
            period: self.period.unwrap_or(DEFAULT_PERIOD),
            burst: self.burst.unwrap_or(DEFAULT_BURST),
        }))
    }
}

/// Small buckets whose periods are near the time between two packets of
/// the compiler's property test, so they drain and refill during a run;
/// with the palette's `wild` odds, any rate a user can write that prints
/// back as itself (iptables prints the others rounded).
fn random(d: &mut Dice, s: &Scope) -> Option<Match> {
    let narrow = |d: &mut Dice| Limit {
        // 1/10000 s units: 500/s to 40/s.
        period: d.pick(&[20u32, 50, 100, 250]),
        burst: d.pick(&[1u32, 2, 3]),
    };
    let limit = if d.wild(s.palette) {
        let text = format!("{}/{}", 1 + d.below(10_000), d.pick(&["s", "m", "h", "d"]));
        match parse_rate(&text) {
            Some(Ok(period)) if parse_rate(&rate_text(period)) == Some(Ok(period)) => Limit {
                period,
                burst: 1 + d.below(MAX_BURST as usize) as u32,
            },
            _ => narrow(d),
        }
    } else {
        narrow(d)
    };
    Some(Match::Limit(limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_and_print_as_iptables() {
        for (given, printed) in [
            ("50/second", "50/sec"),
            ("50/s", "50/sec"),
            ("3", "3/sec"),
            ("7/m", "7/min"),
            ("7/MIN", "7/min"),
            ("1000/hour", "1000/hour"),
            ("3/h", "3/hour"),
            ("7/day", "7/day"),
            ("1/d", "1/day"),
            ("10000/s", "10000/sec"),
            // 120/min is 2/sec to the kernel: the period is all it keeps.
            ("120/min", "2/sec"),
            ("90/min", "90/min"),
        ] {
            let period = parse_rate(given).unwrap().unwrap();
            assert_eq!(rate_text(period), printed, "{given}");
        }
        assert_eq!(parse_rate("10001/s"), Some(Err(())));
        for bad in ["0/s", "3/x", "3/", "/s", "x", "3/seconds"] {
            assert_eq!(parse_rate(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_bucket_is_the_period_times_the_burst() {
        let g = Limit {
            period: parse_rate("50/s").unwrap().unwrap(),
            burst: 150,
        }
        .guard();
        assert_eq!(g.a, 20_000_000);
        assert_eq!(g.b, 150 * 20_000_000);
        // A full bucket passes 150 packets at once, then one per 20 ms.
        let mut tat = 0;
        let now = 5_000_000_000;
        let passed = (0..400)
            .filter(|_| match netbeast_common::limit_take(tat, now, g.a, g.b) {
                Some(t) => {
                    tat = t;
                    true
                }
                None => false,
            })
            .count();
        assert_eq!(passed, 150);
        assert!(netbeast_common::limit_take(tat, now + 19_999_999, g.a, g.b).is_none());
        assert!(netbeast_common::limit_take(tat, now + 20_000_000, g.a, g.b).is_some());
    }
}
