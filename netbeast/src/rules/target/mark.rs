//! `-j MARK` (libxt_MARK revision 2, xt_MARK): sets the packet's mark,
//! non-terminating, in every table and chain as in iptables. Every option
//! comes down to one value/mask pair, the new mark being `(mark & ~mask)
//! ^ value` ([`netbeast_common::MarkTarget`]); that pair is what the rule
//! keeps and iptables-save prints (`--set-xmark V/M`), and `-L` names the
//! operation it amounts to (`MARK or 0x4000`).

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

use super::{TargetModule, TargetParser, check_placement, no_suggestion};
use crate::rules::ext::mark::parse_mark_mask;
use crate::rules::ext::{OptSpec, RuleContext, Value};
use crate::rules::generate::Random;
use crate::rules::model::{TableName, Target};
use crate::rules::parse::{ParseError, invalid, parse_c_number_in};
use netbeast_common::{MarkTarget, target as code};

/// A `-j MARK` rule: the pair xt_MARK holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mark {
    pub value: u32,
    pub mask: u32,
}

impl Mark {
    /// What the kernel's table entry holds.
    pub fn kernel(&self) -> MarkTarget {
        MarkTarget {
            value: self.value,
            mask: self.mask,
        }
    }

    /// The mark after this rule.
    pub fn apply(&self, mark: u32) -> u32 {
        self.kernel().apply(mark)
    }
}

const ALL_TABLES: &[TableName] = &[
    TableName::Filter,
    TableName::Nat,
    TableName::Raw,
    TableName::Mangle,
];

/// The operations, one of which a rule gives.
const CHOICES: &str = "--set-xmark, --set-mark, --and-mark, --or-mark or --xor-mark";

static OPTIONS: [OptSpec; 5] = [
    OptSpec {
        names: &["set-xmark"],
        value: Value::One("value[/mask]: the bits of mask cleared, then value XORed in"),
        negatable: false,
    },
    OptSpec {
        names: &["set-mark"],
        value: Value::One("value[/mask]: the bits of mask cleared, then value ORed in"),
        negatable: false,
    },
    OptSpec {
        names: &["and-mark"],
        value: Value::One("a mask to AND the mark with, like 0xffffbfff"),
        negatable: false,
    },
    OptSpec {
        names: &["or-mark"],
        value: Value::One("bits to set, like 0x4000"),
        negatable: false,
    },
    OptSpec {
        names: &["xor-mark"],
        value: Value::One("bits to flip, like 0x4000"),
        negatable: false,
    },
];

pub static MODULE: TargetModule = TargetModule {
    name: "MARK",
    options: &OPTIONS,
    example: "-t nat -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
    parser: || Box::new(MarkParser::default()),
    code: code::MARK,
    tables: ALL_TABLES,
    chains: None,
    chain_reason: "",
    save: |target, out| match target {
        Target::Mark(m) => {
            let _ = write!(out, " -j MARK --set-xmark {:#x}/{:#x}", m.value, m.mask);
        }
        _ => unreachable!("the MARK module saves MARK"),
    },
    list: |target, out, _| match target {
        Target::Mark(m) => list(m, out),
        _ => unreachable!("the MARK module lists MARK"),
    },
    suggest: no_suggestion,
    hidden: false,
    // Not drawn: the models (reference and compiled) do not carry a mark
    // through a search; tests/program.rs and tests/mark.rs test it on
    // packets through the kernel.
    random: Random {
        weight: 0,
        draw: |_, _| None,
    },
};

/// `-L`'s last column, as libxt_MARK names the operation.
fn list(m: &Mark, out: &mut String) {
    let _ = if m.value == 0 {
        write!(out, " MARK and {:#x}", !m.mask)
    } else if m.value == m.mask {
        write!(out, " MARK or {:#x}", m.value)
    } else if m.mask == 0 {
        write!(out, " MARK xor {:#x}", m.value)
    } else if m.mask == u32::MAX {
        write!(out, " MARK set {:#x}", m.value)
    } else {
        write!(out, " MARK xset {:#x}/{:#x}", m.value, m.mask)
    };
}

#[derive(Clone, Debug, Default)]
struct MarkParser {
    /// The option given and the pair it made.
    given: Option<(&'static str, Mark)>,
}

impl TargetParser for MarkParser {
    fn check_repeat(&self, option: &'static OptSpec) -> Result<(), ParseError> {
        match self.given {
            Some((first, _)) if first == option.name() => Err(ParseError::RepeatedTargetOption {
                target: "MARK",
                option: option.flag(),
                hint: "",
            }),
            Some((first, _)) => Err(ParseError::ExclusiveTargetOptions {
                target: "MARK",
                option: option.flag(),
                other: format!("--{first}"),
                choices: CHOICES,
            }),
            None => Ok(()),
        }
    }

    fn option(&mut self, option: &'static OptSpec, values: &[&str]) -> Result<(), ParseError> {
        let flag = option.flag();
        let text = values.first().copied().unwrap_or_default();
        let word = || {
            parse_c_number_in(text, u32::MAX.into())
                .map(|n| n as u32)
                .ok_or_else(|| {
                    invalid(
                        &flag,
                        "mark",
                        text,
                        "expected a number from 0 to 4294967295 (0xffffffff)",
                    )
                })
        };
        let mark = match option.name() {
            "set-xmark" => {
                let m = parse_mark_mask(&flag, text)?;
                Mark {
                    value: m.value,
                    mask: m.mask,
                }
            }
            // xt_MARK has no "set": the bits of the value are cleared too,
            // so that the XOR sets them.
            "set-mark" => {
                let m = parse_mark_mask(&flag, text)?;
                Mark {
                    value: m.value,
                    mask: m.mask | m.value,
                }
            }
            "and-mark" => Mark {
                value: 0,
                mask: !word()?,
            },
            "or-mark" => {
                let v = word()?;
                Mark { value: v, mask: v }
            }
            _ => Mark {
                value: word()?,
                mask: 0,
            },
        };
        self.given = Some((option.name(), mark));
        Ok(())
    }

    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Target, ParseError> {
        let Some((_, mark)) = self.given else {
            return Err(ParseError::MissingTargetOption {
                target: "MARK",
                option: "--set-xmark, --set-mark, --and-mark, --or-mark or --xor-mark",
                example: "; e.g. -j MARK --or-mark 0x4000",
            });
        };
        check_placement(&MODULE, rule)?;
        Ok(Target::Mark(mark))
    }

    fn boxed_clone(&self) -> Box<dyn TargetParser> {
        Box::new(self.clone())
    }
}
