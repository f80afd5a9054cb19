//! `-j CONNMARK` (libxt_CONNMARK revision 2, xt_CONNMARK): the mark of
//! the packet's connection, non-terminating, in every table and chain as
//! in iptables. Three operations, as the kernel holds them
//! ([`netbeast_common::ConnmarkTarget`]): set (`--set-xmark` and its
//! spellings `--set-mark`, `--and-mark`, `--or-mark`, `--xor-mark`), save
//! the packet's mark into the connection's (`--save-mark`), restore the
//! packet's mark from it (`--restore-mark`), with masks (`--ctmask`,
//! `--nfmask`, `--mask` for both) and a shift (`--left-shift-mark`,
//! `--right-shift-mark`). Options apply in the order given, as
//! libxt_CONNMARK's do (`--set-mark 1 --mask 3` is `0x1/0x3`, `--mask 3
//! --set-mark 1` is `0x1/0xffffffff`); the rule keeps the result and
//! iptables-save prints it (`--set-xmark V/M`, `--save-mark --nfmask N
//! --ctmask C`).

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

use super::{TargetModule, TargetParser, check_placement, no_suggestion};
use crate::rules::ext::{OptSpec, RuleContext, Value};
use crate::rules::generate::Random;
use crate::rules::model::{TableName, Target};
use crate::rules::parse::{ParseError, invalid, parse_c_number_in};
use netbeast_common::{ConnmarkTarget, connmark_mode, target as code};

/// A `-j CONNMARK` rule: what xt_CONNMARK holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Connmark {
    /// `connmark_mode::*`.
    pub mode: u8,
    pub ctmark: u32,
    pub ctmask: u32,
    pub nfmask: u32,
    pub shift_right: bool,
    pub shift_bits: u8,
}

impl Connmark {
    /// What the kernel's table entry holds.
    pub fn kernel(&self) -> ConnmarkTarget {
        ConnmarkTarget {
            ctmark: self.ctmark,
            ctmask: self.ctmask,
            nfmask: self.nfmask,
            mode: self.mode,
            shift_right: u8::from(self.shift_right),
            shift_bits: self.shift_bits,
            _pad: 0,
        }
    }

    /// libxt_CONNMARK's name of the shift.
    fn shift_name(&self) -> &'static str {
        if self.shift_right {
            "right-shift-mark"
        } else {
            "left-shift-mark"
        }
    }
}

const ALL_TABLES: &[TableName] = &[
    TableName::Filter,
    TableName::Nat,
    TableName::Raw,
    TableName::Mangle,
];

/// The operations, one of which a rule gives.
const CHOICES: &str =
    "--set-xmark, --set-mark, --and-mark, --or-mark, --xor-mark, --save-mark or --restore-mark";

const OPERATIONS: [&str; 7] = [
    "set-xmark",
    "set-mark",
    "and-mark",
    "or-mark",
    "xor-mark",
    "save-mark",
    "restore-mark",
];

static OPTIONS: [OptSpec; 12] = [
    OptSpec {
        names: &["set-xmark"],
        value: Value::One("value[/ctmask]: the bits of ctmask cleared, then value XORed in"),
        negatable: false,
    },
    OptSpec {
        names: &["set-mark"],
        value: Value::One("value[/mask]: the bits of mask cleared, then value ORed in"),
        negatable: false,
    },
    OptSpec {
        names: &["and-mark"],
        value: Value::One("a mask to AND the connection's mark with, like 0xff"),
        negatable: false,
    },
    OptSpec {
        names: &["or-mark"],
        value: Value::One("bits to set in the connection's mark, like 0x1"),
        negatable: false,
    },
    OptSpec {
        names: &["xor-mark"],
        value: Value::One("bits to flip in the connection's mark, like 0x1"),
        negatable: false,
    },
    OptSpec {
        names: &["save-mark"],
        value: Value::None,
        negatable: false,
    },
    OptSpec {
        names: &["restore-mark"],
        value: Value::None,
        negatable: false,
    },
    OptSpec {
        names: &["left-shift-mark"],
        value: Value::One("a number of bits from 0 to 32"),
        negatable: false,
    },
    OptSpec {
        names: &["right-shift-mark"],
        value: Value::One("a number of bits from 0 to 32"),
        negatable: false,
    },
    OptSpec {
        names: &["ctmask"],
        value: Value::One("the connection mark's bits to use, like 0xff"),
        negatable: false,
    },
    OptSpec {
        names: &["nfmask"],
        value: Value::One("the packet mark's bits to use, like 0xff"),
        negatable: false,
    },
    OptSpec {
        names: &["mask"],
        value: Value::One("the bits of both marks to use (--ctmask and --nfmask), like 0xff"),
        negatable: false,
    },
];

pub static MODULE: TargetModule = TargetModule {
    name: "CONNMARK",
    options: &OPTIONS,
    example: "-t mangle -A PREROUTING -j CONNMARK --restore-mark",
    parser: || Box::new(ConnmarkParser::default()),
    code: code::CONNMARK,
    tables: ALL_TABLES,
    chains: None,
    chain_reason: "",
    save: |target, out| match target {
        Target::Connmark(c) => save(c, out),
        _ => unreachable!("the CONNMARK module saves CONNMARK"),
    },
    list: |target, out, _| match target {
        Target::Connmark(c) => list(c, out),
        _ => unreachable!("the CONNMARK module lists CONNMARK"),
    },
    suggest: no_suggestion,
    hidden: false,
    // Not drawn: the models (reference and compiled) carry no connection
    // mark; tests/program.rs and tests/connmark.rs test it on packets
    // through the kernel.
    random: Random::NEVER,
};

/// iptables-save's text (libxt_CONNMARK revision 2).
fn save(c: &Connmark, out: &mut String) {
    let _ = match c.mode {
        connmark_mode::SET => write!(
            out,
            " -j CONNMARK --set-xmark {:#x}/{:#x}",
            c.ctmark, c.ctmask
        ),
        connmark_mode::SAVE => write!(
            out,
            " -j CONNMARK --save-mark --nfmask {:#x} --ctmask {:#x}",
            c.nfmask, c.ctmask
        ),
        _ => write!(
            out,
            " -j CONNMARK --restore-mark --nfmask {:#x} --ctmask {:#x}",
            c.nfmask, c.ctmask
        ),
    };
    if c.shift_bits != 0 {
        let _ = write!(out, " --{} {}", c.shift_name(), c.shift_bits);
    }
}

/// `-L`'s last column, as libxt_CONNMARK names the operation.
fn list(c: &Connmark, out: &mut String) {
    let _ = match c.mode {
        connmark_mode::SET => {
            super::mark::list_set(out, "CONNMARK", c.ctmark, c.ctmask);
            Ok(())
        }
        connmark_mode::SAVE if c.nfmask == u32::MAX && c.ctmask == u32::MAX => {
            write!(out, " CONNMARK save")
        }
        connmark_mode::SAVE if c.nfmask == c.ctmask => {
            write!(out, " CONNMARK save mask {:#x}", c.nfmask)
        }
        connmark_mode::SAVE => write!(
            out,
            " CONNMARK save nfmask {:#x} ctmask ~{:#x}",
            c.nfmask, c.ctmask
        ),
        _ if c.ctmask == u32::MAX && c.nfmask == u32::MAX => write!(out, " CONNMARK restore"),
        _ if c.ctmask == c.nfmask => write!(out, " CONNMARK restore mask {:#x}", c.ctmask),
        _ => write!(
            out,
            " CONNMARK restore ctmask {:#x} nfmask ~{:#x}",
            c.ctmask, c.nfmask
        ),
    };
    if c.shift_bits != 0 {
        let _ = write!(out, " {} {}", c.shift_name(), c.shift_bits);
    }
}

/// The options as libxt_CONNMARK takes them: each once, the operations
/// exclusive, `--mask` exclusive with `--ctmask` and `--nfmask`; each
/// applied in turn to the target as xt_CONNMARK's defaults start it
/// (both masks every bit, no shift).
#[derive(Clone, Debug)]
struct ConnmarkParser {
    given: Vec<&'static str>,
    operation: Option<&'static str>,
    target: Connmark,
}

impl Default for ConnmarkParser {
    fn default() -> Self {
        ConnmarkParser {
            given: Vec::new(),
            operation: None,
            target: Connmark {
                mode: connmark_mode::SET,
                ctmark: 0,
                ctmask: u32::MAX,
                nfmask: u32::MAX,
                shift_right: false,
                shift_bits: 0,
            },
        }
    }
}

impl TargetParser for ConnmarkParser {
    fn check_repeat(&self, option: &'static OptSpec) -> Result<(), ParseError> {
        let name = option.name();
        if self.given.contains(&name) {
            return Err(ParseError::RepeatedTargetOption {
                target: "CONNMARK",
                option: option.flag(),
                hint: "",
            });
        }
        let other = if OPERATIONS.contains(&name) {
            self.operation
        } else if name == "mask" {
            self.given
                .iter()
                .copied()
                .find(|g| *g == "ctmask" || *g == "nfmask")
        } else if name == "ctmask" || name == "nfmask" {
            self.given.iter().copied().find(|g| *g == "mask")
        } else {
            None
        };
        match other {
            Some(other) => Err(ParseError::ExclusiveTargetOptions {
                target: "CONNMARK",
                option: option.flag(),
                other: format!("--{other}"),
                choices: if OPERATIONS.contains(&name) {
                    CHOICES
                } else {
                    "--mask, or --ctmask and --nfmask"
                },
            }),
            None => Ok(()),
        }
    }

    fn option(&mut self, option: &'static OptSpec, values: &[&str]) -> Result<(), ParseError> {
        let flag = option.flag();
        let name = option.name();
        let text = values.first().copied().unwrap_or_default();
        let word = || super::mark::mark_word(&flag, text);
        let t = &mut self.target;
        if let Some(set) = super::mark::set_operation(name, &flag, text) {
            let m = set?;
            t.mode = connmark_mode::SET;
            t.ctmark = m.value;
            t.ctmask = m.mask;
        }
        match name {
            "set-xmark" | "set-mark" | "and-mark" | "or-mark" | "xor-mark" => {}
            "save-mark" => t.mode = connmark_mode::SAVE,
            "restore-mark" => t.mode = connmark_mode::RESTORE,
            "ctmask" => t.ctmask = word()?,
            "nfmask" => t.nfmask = word()?,
            "mask" => {
                let m = word()?;
                t.ctmask = m;
                t.nfmask = m;
            }
            _ => {
                // The shifts: libxt_CONNMARK's bounds, 0 to 32 bits.
                let bits = parse_c_number_in(text, 32).ok_or_else(|| {
                    invalid(
                        &flag,
                        "shift",
                        text,
                        "expected a number of bits from 0 to 32",
                    )
                })?;
                t.shift_right = name == "right-shift-mark";
                t.shift_bits = bits as u8;
            }
        }
        if OPERATIONS.contains(&name) {
            self.operation = Some(name);
        }
        self.given.push(name);
        Ok(())
    }

    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Target, ParseError> {
        if self.operation.is_none() {
            return Err(ParseError::MissingTargetOption {
                target: "CONNMARK",
                option: CHOICES,
                example: "; e.g. -j CONNMARK --restore-mark or -j CONNMARK --set-mark 0x1",
            });
        }
        check_placement(&MODULE, rule)?;
        let mut target = self.target;
        // A set ignores the packet's mask (`--mask` gave it one too), and
        // iptables-save does not print it: the rule keeps the default, so
        // that a saved rule restores as the same rule.
        if target.mode == connmark_mode::SET {
            target.nfmask = u32::MAX;
        }
        Ok(Target::Connmark(target))
    }

    fn boxed_clone(&self) -> Box<dyn TargetParser> {
        Box::new(self.clone())
    }
}
