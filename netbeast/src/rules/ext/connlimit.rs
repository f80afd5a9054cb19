//! `-m connlimit --connlimit-upto|--connlimit-above N --connlimit-mask M
//! --connlimit-saddr|--connlimit-daddr` (`!` before upto/above): the number
//! of live connections of the packet's masked source (or destination)
//! address (xt_connlimit). Counted from netbeast's own conntrack by the
//! kernel (`netbeast-ebpf/src/connlimit.rs`), so it is a *guard*.

use crate::rules::generate::{Dice, Random, Scope};
use std::fmt::Write as _;

use netbeast_common::{
    CONNLIMIT_DADDR, CONNLIMIT_SLOTS, CONNLIMIT_UNREACHABLE, CONNLIMIT_V6, Guard, guard_kind,
};
use serde::{Deserialize, Serialize};

use super::{MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, number, once, value};
use crate::compile::PacketView;
use crate::compile::lower::Lowering;
use crate::rules::model::{Family, Match, TableName};
use crate::rules::parse::ParseError;

/// The largest limit netbeast can count past: a list remembers
/// `CONNLIMIT_SLOTS` connections per address and rule.
pub const MAX_CONNLIMIT: u32 = CONNLIMIT_SLOTS as u32 - 1;

/// Whether netbeast can decide a limit: one its lists count past, or one
/// no count can reach (`CONNLIMIT_UNREACHABLE`: more than the conntrack
/// tables hold), such as iptables' own test of the largest 32-bit limit.
pub fn limit_supported(limit: u32) -> bool {
    limit <= MAX_CONNLIMIT || limit >= CONNLIMIT_UNREACHABLE
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connlimit {
    /// The limit N.
    pub limit: u32,
    /// `--connlimit-above N` (matches past N); `--connlimit-upto N`
    /// otherwise. `!` swaps them, as libxt_connlimit stores it.
    pub above: bool,
    /// `--connlimit-mask`: the prefix length (0 to 32, 128 for ip6tables).
    pub mask: u8,
    /// `--connlimit-daddr`: count per destination address.
    pub daddr: bool,
    /// An ip6tables rule: IPv6 addresses and connections are counted.
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub v6: bool,
}

impl Connlimit {
    /// A limit no count reaches: `--connlimit-above` never holds,
    /// `--connlimit-upto` always does, whatever the connections.
    pub fn unreachable(&self) -> bool {
        self.limit >= CONNLIMIT_UNREACHABLE
    }

    fn mask_bits(&self) -> u32 {
        if self.mask == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.mask))
        }
    }

    /// The guard the kernel evaluates.
    pub fn guard(&self) -> Guard {
        // IPv6: the prefix length, which the kernel widens to four words.
        let mask = if self.v6 {
            u64::from(self.mask) | CONNLIMIT_V6
        } else {
            u64::from(self.mask_bits().to_be())
        };
        Guard {
            kind: guard_kind::CONNLIMIT,
            negated: u32::from(!self.above),
            a: u64::from(self.limit),
            b: mask | if self.daddr { CONNLIMIT_DADDR } else { 0 },
            ..Guard::default()
        }
    }
}

impl MatchExt for Connlimit {
    fn save(&self, out: &mut String) {
        let _ = write!(
            out,
            " -m connlimit --connlimit-{} {} --connlimit-mask {} --connlimit-{}",
            if self.above { "above" } else { "upto" },
            self.limit,
            self.mask,
            if self.daddr { "daddr" } else { "saddr" }
        );
    }

    fn list(&self, out: &mut String, _numeric: bool) {
        let _ = write!(
            out,
            " #conn {}/{} {} {}",
            if self.daddr { "dst" } else { "src" },
            self.mask,
            if self.above { ">" } else { "<=" },
            self.limit
        );
    }

    /// A guard: not part of the rule's static match; a limit no count
    /// reaches is decided here.
    fn matches(&self, _pkt: &PacketView) -> bool {
        !(self.unreachable() && self.above)
    }

    fn lower(&self) -> Lowering {
        match (self.unreachable(), self.above) {
            // Nothing to count: no list, no lock, no conntrack needed.
            (true, true) => Lowering::Static(Vec::new()),
            (true, false) => Lowering::always(),
            (false, _) => Lowering::Guard(self.guard()),
        }
    }
}

static OPTIONS: [OptSpec; 5] = [
    OptSpec {
        names: &["connlimit-upto"],
        value: Value::One("a number of connections"),
        negatable: true,
    },
    OptSpec {
        names: &["connlimit-above"],
        value: Value::One("a number of connections"),
        negatable: true,
    },
    OptSpec {
        names: &["connlimit-mask"],
        value: Value::One("a prefix length from 0 to 32 (128 for ip6tables)"),
        negatable: false,
    },
    OptSpec {
        names: &["connlimit-saddr"],
        value: Value::None,
        negatable: false,
    },
    OptSpec {
        names: &["connlimit-daddr"],
        value: Value::None,
        negatable: false,
    },
];

pub static MODULE: MatchModule = MatchModule {
    name: "connlimit",
    family: None,
    options: &OPTIONS,
    example: "e.g. -m connlimit --connlimit-above 15 --connlimit-mask 32",
    implicit_protocol: None,
    parser: || Box::<ConnlimitParser>::default(),
    random: Random {
        weight: 1,
        draw: random,
    },
};

#[derive(Debug, Default)]
struct ConnlimitParser {
    /// (limit, above) after `!`.
    limit: Option<(u32, bool)>,
    /// The option that gave it, for messages.
    limit_option: Option<&'static str>,
    mask: Option<u8>,
    /// Which of saddr/daddr was given.
    direction: Option<bool>,
}

impl MatchParser for ConnlimitParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        text: &[&str],
    ) -> Result<(), ParseError> {
        let together = |other: &str| ParseError::IllegalOption {
            option: option.flag(),
            command: other.to_string(),
            reason: "give one of them",
        };
        match option.name() {
            "connlimit-upto" | "connlimit-above" => {
                let text = value(option, text);
                let limit = number(option, "limit", text, u32::MAX.into())? as u32;
                // iptables takes any 32-bit limit; netbeast's per-address
                // lists have room for MAX_CONNLIMIT connections, and a
                // limit past what conntrack can hold needs no count.
                if !limit_supported(limit) {
                    return Err(ParseError::Unsupported {
                        what: format!("{} {text}", option.flag()),
                        hint: format!(
                            ": netbeast counts at most {MAX_CONNLIMIT} connections per address \
                             and rule (CONNLIMIT_SLOTS in netbeast-common); give a limit up to \
                             {MAX_CONNLIMIT}, or {CONNLIMIT_UNREACHABLE} or more, which no count \
                             reaches (CONNLIMIT_UNREACHABLE: more connections than netbeast's \
                             conntrack holds)"
                        ),
                    });
                }
                let above = (option.name() == "connlimit-above") != negated;
                if let Some(first) = self.limit_option {
                    return Err(together(first));
                }
                self.limit_option = Some(if option.name() == "connlimit-above" {
                    "--connlimit-above"
                } else {
                    "--connlimit-upto"
                });
                self.limit = Some((limit, above));
                Ok(())
            }
            "connlimit-mask" => {
                let text = value(option, text);
                // xtables reads a prefix length up to 128 for either
                // family; an IPv4 rule keeps the first 32 bits of it.
                let mask = number(option, "prefix length", text, 128)? as u8;
                once(&mut self.mask, mask, option)
            }
            name => {
                let daddr = name == "connlimit-daddr";
                match self.direction {
                    Some(d) if d != daddr => Err(together(if d {
                        "--connlimit-daddr"
                    } else {
                        "--connlimit-saddr"
                    })),
                    _ => {
                        self.direction = Some(daddr);
                        Ok(())
                    }
                }
            }
        }
    }

    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Match, ParseError> {
        let Some((limit, above)) = self.limit else {
            return Err(super::missing(
                &MODULE,
                "--connlimit-above or --connlimit-upto",
            ));
        };
        if rule.table != TableName::Filter {
            return Err(ParseError::Unsupported {
                what: format!("-m connlimit in the {} table", rule.table.as_str()),
                hint: "; netbeast counts connections in the filter table only".into(),
            });
        }
        let v6 = rule.family == Family::V6;
        let full = if v6 { 128 } else { 32 };
        Ok(Match::Connlimit(Connlimit {
            limit,
            above,
            mask: self.mask.unwrap_or(full).min(full),
            daddr: self.direction.unwrap_or(false),
            v6,
        }))
    }
}

/// Filter table only. The compiler's models see each packet as its
/// address's only connection: limit 0 matches it with above, 1 does not.
fn random(d: &mut Dice, s: &Scope) -> Option<Match> {
    if s.table != TableName::Filter {
        return None;
    }
    let wild = d.wild(s.palette);
    Some(Match::Connlimit(Connlimit {
        limit: if wild {
            if d.chance(10) {
                CONNLIMIT_UNREACHABLE + d.below(2) as u32 * (u32::MAX - CONNLIMIT_UNREACHABLE)
            } else {
                d.below(MAX_CONNLIMIT as usize + 1) as u32
            }
        } else {
            d.below(2) as u32
        },
        above: d.chance(50),
        mask: if wild {
            d.below(33) as u8
        } else {
            d.pick(&[0u8, 24, 32])
        },
        daddr: d.chance(30),
        v6: false,
    }))
}

#[cfg(test)]
mod tests {
    use crate::rules::parse::{ParseError, parse_iptables_args};

    fn parse(line: &str) -> Result<(), ParseError> {
        let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        parse_iptables_args(&args).map(|_| ())
    }

    /// Limits its lists count past, and limits no count reaches, are taken;
    /// those in between are refused naming both ways out.
    #[test]
    fn limits_netbeast_can_decide() {
        for limit in [0, 63, super::CONNLIMIT_UNREACHABLE, u32::MAX] {
            for option in ["--connlimit-above", "--connlimit-upto"] {
                let line = format!("-A INPUT -m connlimit {option} {limit}");
                assert!(parse(&line).is_ok(), "{line}");
            }
        }
        for limit in [64, super::CONNLIMIT_UNREACHABLE - 1] {
            let line = format!("-A INPUT -m connlimit --connlimit-above {limit}");
            match parse(&line) {
                Err(e @ ParseError::Unsupported { .. }) => {
                    let text = e.to_string();
                    assert!(
                        text.contains("up to 63") && text.contains("33554433"),
                        "{text}"
                    );
                }
                other => panic!("{line}: {other:?}"),
            }
        }
    }
}
