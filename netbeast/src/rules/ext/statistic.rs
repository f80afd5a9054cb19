//! `-m statistic --mode random --probability P` and `--mode nth --every N
//! --packet P` (`!` before either): the load balancer's match
//! (xt_statistic). It keeps state, so the classifier cannot hold it: it
//! becomes a *guard*, which the kernel evaluates after a slot's other
//! matches hold (`netbeast_common::Guard`).

use crate::compile::lower::Lowering;
use crate::rules::generate::{Dice, Random, Scope};
use std::fmt::Write as _;

use netbeast_common::{Guard, guard_kind};
use serde::{Deserialize, Serialize};

use super::{MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, number, value};
use crate::compile::PacketView;
use crate::rules::model::Match;
use crate::rules::parse::{ParseError, invalid};

/// `--probability 1` as the kernel holds it: the random number's low 31
/// bits are compared with it.
pub const PROBABILITY_ONE: u32 = 0x8000_0000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatisticMode {
    /// Matches when `(random & 0x7fffffff) < probability`.
    Random { probability: u32 },
    /// Matches packet `packet`, `packet + every`, ... of those that reach
    /// the rule (0-based).
    Nth { every: u32, packet: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statistic {
    pub negated: bool,
    pub mode: StatisticMode,
}

impl Statistic {
    /// The probability as iptables prints it: `0.33000000007`.
    fn probability_text(probability: u32) -> String {
        format!(
            "{:.11}",
            f64::from(probability) / f64::from(PROBABILITY_ONE)
        )
    }

    /// The guard the kernel evaluates (its `next` and `state` are the
    /// compiler's to set).
    pub fn guard(&self) -> Guard {
        let (kind, a, b) = match self.mode {
            StatisticMode::Random { probability } => {
                (guard_kind::STATISTIC_RANDOM, u64::from(probability), 0)
            }
            StatisticMode::Nth { every, packet } => (
                guard_kind::STATISTIC_NTH,
                u64::from(every),
                u64::from(packet),
            ),
        };
        Guard {
            kind,
            negated: u32::from(self.negated),
            a,
            b,
            ..Guard::default()
        }
    }
}

impl MatchExt for Statistic {
    fn save(&self, out: &mut String) {
        let bang = if self.negated { " !" } else { "" };
        match self.mode {
            StatisticMode::Random { probability } => {
                let _ = write!(
                    out,
                    " -m statistic --mode random{bang} --probability {}",
                    Self::probability_text(probability)
                );
            }
            StatisticMode::Nth { every, packet } => {
                let _ = write!(
                    out,
                    " -m statistic --mode nth{bang} --every {every} --packet {packet}"
                );
            }
        }
    }

    fn list(&self, out: &mut String, _numeric: bool) {
        let bang = if self.negated { " !" } else { "" };
        match self.mode {
            StatisticMode::Random { probability } => {
                let _ = write!(
                    out,
                    " statistic mode random{bang} probability {}",
                    Self::probability_text(probability)
                );
            }
            StatisticMode::Nth { every, packet } => {
                let _ = write!(out, " statistic mode nth{bang} every {every}");
                if packet != 0 {
                    let _ = write!(out, " packet {packet}");
                }
            }
        }
    }

    /// A guard: not part of the rule's static match.
    fn matches(&self, _pkt: &PacketView) -> bool {
        true
    }

    fn lower(&self) -> Lowering {
        Lowering::Guard(self.guard())
    }
}

static OPTIONS: [OptSpec; 4] = [
    OptSpec {
        names: &["mode"],
        value: Value::One("random or nth"),
        negatable: false,
    },
    OptSpec {
        names: &["probability"],
        value: Value::One("a probability from 0 to 1 like 0.25"),
        negatable: true,
    },
    OptSpec {
        names: &["every"],
        value: Value::One("a number of packets like 3"),
        negatable: true,
    },
    OptSpec {
        names: &["packet"],
        value: Value::One("the packet of each round that matches, from 0 to --every minus 1"),
        negatable: false,
    },
];

pub static MODULE: MatchModule = MatchModule {
    name: "statistic",
    family: None,
    options: &OPTIONS,
    example: "e.g. -m statistic --mode nth --every 3 --packet 0",
    implicit_protocol: None,
    parser: || Box::<StatisticParser>::default(),
    random: Random {
        weight: 3,
        draw: random,
    },
};

#[derive(Debug, Default)]
struct StatisticParser {
    mode: Option<&'static str>,
    probability: Option<u32>,
    every: Option<u32>,
    packet: Option<u32>,
    negated: bool,
}

/// `lround(0x80000000 * p)`, as libxt_statistic stores a probability.
fn parse_probability(option: &OptSpec, text: &str) -> Result<u32, ParseError> {
    let p: f64 = text
        .parse()
        .ok()
        .filter(|p: &f64| (0.0..=1.0).contains(p))
        .ok_or_else(|| {
            invalid(
                &option.flag(),
                "probability",
                text,
                "expected a number from 0 to 1, like 0.25",
            )
        })?;
    Ok((f64::from(PROBABILITY_ONE) * p).round() as u32)
}

impl MatchParser for StatisticParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        text: &[&str],
    ) -> Result<(), ParseError> {
        let text = value(option, text);
        let repeated = match option.name() {
            "mode" => self.mode.is_some(),
            "probability" => self.probability.is_some(),
            "every" => self.every.is_some(),
            _ => self.packet.is_some(),
        };
        if repeated {
            return Err(ParseError::Repeated {
                option: option.flag(),
                hint: "",
            });
        }
        // As libxt_statistic: a `!` before any option inverts the match.
        self.negated |= negated;
        match option.name() {
            "mode" => {
                self.mode = Some(match text {
                    "random" => "random",
                    "nth" => "nth",
                    _ => {
                        return Err(invalid("--mode", "mode", text, "use random or nth"));
                    }
                })
            }
            "probability" => self.probability = Some(parse_probability(option, text)?),
            "every" => {
                let every = number(option, "count", text, u32::MAX.into())? as u32;
                if every == 0 {
                    return Err(invalid(&option.flag(), "count", text, "expected 1 or more"));
                }
                self.every = Some(every);
            }
            _ => self.packet = Some(number(option, "packet", text, u32::MAX.into())? as u32),
        }
        Ok(())
    }

    fn finish(self: Box<Self>, _: &RuleContext) -> Result<Match, ParseError> {
        let both = |a: &str, b: &str| ParseError::Unsupported {
            what: format!("{a} together with {b}"),
            hint: "; --probability goes with --mode random, --every and --packet with --mode nth"
                .into(),
        };
        let mode = match (self.mode, self.probability, self.every, self.packet) {
            (None, ..) => {
                return Err(ParseError::MissingModuleOption {
                    module: "-m statistic".into(),
                    option: "--mode",
                    example: MODULE.example,
                });
            }
            (Some(_), Some(_), Some(_), _) => return Err(both("--probability", "--every")),
            (Some(_), Some(_), None, Some(_)) => return Err(both("--probability", "--packet")),
            (Some("random"), Some(probability), None, None) => {
                StatisticMode::Random { probability }
            }
            (Some("random"), None, ..) => {
                return Err(ParseError::MissingModuleOption {
                    module: "-m statistic --mode random".into(),
                    option: "--probability",
                    example: "e.g. -m statistic --mode random --probability 0.5",
                });
            }
            (Some(_), _, Some(every), Some(packet)) => {
                if packet >= every {
                    return Err(invalid(
                        "--packet",
                        "packet",
                        &packet.to_string(),
                        format!("the --packet p must be 0 <= p <= n-1 (here n is {every})"),
                    ));
                }
                StatisticMode::Nth { every, packet }
            }
            (Some(_), ..) => {
                return Err(ParseError::MissingModuleOption {
                    module: "-m statistic --mode nth".into(),
                    option: "--every and --packet",
                    example: MODULE.example,
                });
            }
        };
        Ok(Match::Statistic(Statistic {
            negated: self.negated,
            mode,
        }))
    }
}

/// nth with small rounds (so packets hit every phase), random with
/// probabilities 0, 1 and between.
fn random(d: &mut Dice, s: &Scope) -> Option<Match> {
    let mode = if d.chance(50) {
        let every = if d.wild(s.palette) {
            1 + d.below(1000) as u32
        } else {
            d.pick(&[1u32, 2, 3, 4])
        };
        StatisticMode::Nth {
            every,
            packet: d.below(every as usize) as u32,
        }
    } else {
        let p = d.pick(&[0.0, 0.25, 0.5, 0.9, 1.0]);
        StatisticMode::Random {
            probability: (p * f64::from(PROBABILITY_ONE)) as u32,
        }
    };
    Some(Match::Statistic(Statistic {
        negated: d.chance(25),
        mode,
    }))
}
