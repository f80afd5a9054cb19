//! `-j MARK` (libxt_MARK revision 2, xt_MARK): sets the packet's mark,
//! non-terminating, in every table and chain as in iptables. Every option
//! comes down to one value/mask pair, the new mark being `(mark & ~mask)
//! ^ value` ([`netbeast_common::MarkTarget`]); that pair is what the rule
//! keeps and iptables-save prints (`--set-xmark V/M`), and `-L` names the
//! operation it amounts to (`MARK or 0x4000`).

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

use super::{TargetModule, TargetParser, check_placement, no_suggestion};
use crate::rules::ext::mark::{MarkMask, mark_number, parse_mark_mask};
use crate::rules::ext::{OptSpec, RuleContext, Value};
use crate::rules::generate::Random;
use crate::rules::model::{TableName, Target};
use crate::rules::parse::ParseError;
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
    random: Random::NEVER,
};

/// `-L`'s last column, as libxt_MARK names the operation.
fn list(m: &Mark, out: &mut String) {
    list_set(out, "MARK", m.value, m.mask);
}

/// ` MARK or 0x4000`: the operation a value/mask pair amounts to, as
/// libxt_MARK and libxt_CONNMARK name it after their `name`.
pub(super) fn list_set(out: &mut String, name: &str, value: u32, mask: u32) {
    let _ = if value == 0 {
        write!(out, " {name} and {:#x}", !mask)
    } else if value == mask {
        write!(out, " {name} or {value:#x}")
    } else if mask == 0 {
        write!(out, " {name} xor {value:#x}")
    } else if mask == u32::MAX {
        write!(out, " {name} set {value:#x}")
    } else {
        write!(out, " {name} xset {value:#x}/{mask:#x}")
    };
}

/// A 32-bit number of a mark option (`--and-mark`, `--ctmask`, ...).
pub(super) fn mark_word(flag: &str, text: &str) -> Result<u32, ParseError> {
    mark_number(
        flag,
        text,
        text,
        "expected a number from 0 to 4294967295 (0xffffffff)",
    )
}

/// The value/mask pair (the new mark is `(mark & ~mask) ^ value`) of a
/// set operation, as libxt_MARK and libxt_CONNMARK make it: `name` is
/// `set-xmark`, `set-mark`, `and-mark`, `or-mark` or `xor-mark`; `None`
/// for any other option.
pub(super) fn set_operation(
    name: &str,
    flag: &str,
    text: &str,
) -> Option<Result<MarkMask, ParseError>> {
    let pair = |value, mask| Ok(MarkMask { value, mask });
    Some(match name {
        "set-xmark" => parse_mark_mask(flag, text),
        // There is no "set" in the kernel: the bits of the value are
        // cleared too, so that the XOR sets them.
        "set-mark" => parse_mark_mask(flag, text).map(|m| MarkMask {
            value: m.value,
            mask: m.mask | m.value,
        }),
        "and-mark" => mark_word(flag, text).and_then(|m| pair(0, !m)),
        "or-mark" => mark_word(flag, text).and_then(|v| pair(v, v)),
        "xor-mark" => mark_word(flag, text).and_then(|v| pair(v, 0)),
        _ => return None,
    })
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
        let m = set_operation(option.name(), &flag, text)
            .unwrap_or_else(|| unreachable!("{flag} is one of MARK's set operations"))?;
        let mark = Mark {
            value: m.value,
            mask: m.mask,
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
