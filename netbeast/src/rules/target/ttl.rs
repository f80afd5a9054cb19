//! `-j TTL` (iptables, libipt_TTL / xt_TTL) and `-j HL` (ip6tables,
//! libip6t_HL / xt_HL): the packet's TTL or hop limit is set, raised or
//! lowered (clamped to 0..=255), non-terminating, in the mangle table only,
//! as the kernel's checkentry allows them. The search applies it to its
//! copy of the byte at once; the pipeline writes the packet (and, for
//! IPv4, fixes the header checksum) once the chain is decided, so later
//! chains' `-m ttl` / `-m hl` and the receiver see the new value
//! (docs/ARCHITECTURE.md, "-j TTL / -j HL").

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

use super::{TargetModule, TargetParser, check_placement, no_suggestion};
use crate::rules::ext::{OptSpec, RuleContext, Value, number};
use crate::rules::generate::Random;
use crate::rules::model::{Family, TableName, Target};
use crate::rules::parse::ParseError;
use netbeast_common::{target as code, ttl_arg, ttl_mode};

/// What a `-j TTL` or `-j HL` rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TtlMode {
    Set,
    Inc,
    Dec,
}

/// A `-j TTL` / `-j HL` rule: what xt_TTL's and xt_HL's info hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ttl {
    pub mode: TtlMode,
    pub value: u8,
}

impl Ttl {
    /// `RuleAction::arg`: the kernel's mode above the value.
    pub fn kernel_arg(&self) -> u32 {
        let mode = match self.mode {
            TtlMode::Set => ttl_mode::SET,
            TtlMode::Inc => ttl_mode::INC,
            TtlMode::Dec => ttl_mode::DEC,
        };
        ttl_arg(mode, self.value)
    }

    /// The TTL after this rule.
    pub fn apply(&self, ttl: u8) -> u8 {
        netbeast_common::apply_ttl(self.kernel_arg(), ttl)
    }
}

/// The two twins' words: iptables' TTL, ip6tables' HL.
struct Names {
    target: &'static str,
    /// The option prefix: `ttl` (`--ttl-set`) or `hl`.
    prefix: &'static str,
    family: Family,
    /// What the other family calls it, for the refusal.
    twin: &'static str,
}

const TTL_NAMES: Names = Names {
    target: "TTL",
    prefix: "ttl",
    family: Family::V4,
    twin: "ip6tables sets the hop limit with -j HL --hl-set N",
};

const HL_NAMES: Names = Names {
    target: "HL",
    prefix: "hl",
    family: Family::V6,
    twin: "iptables sets the TTL with -j TTL --ttl-set N",
};

const MANGLE: &[TableName] = &[TableName::Mangle];

static TTL_OPTIONS: [OptSpec; 3] = [
    OptSpec {
        names: &["ttl-set"],
        value: Value::One("the TTL to set, 0 to 255"),
        negatable: false,
    },
    OptSpec {
        names: &["ttl-dec"],
        value: Value::One("how much to lower the TTL by, 1 to 255 (not below 0)"),
        negatable: false,
    },
    OptSpec {
        names: &["ttl-inc"],
        value: Value::One("how much to raise the TTL by, 1 to 255 (not above 255)"),
        negatable: false,
    },
];

static HL_OPTIONS: [OptSpec; 3] = [
    OptSpec {
        names: &["hl-set"],
        value: Value::One("the hop limit to set, 0 to 255"),
        negatable: false,
    },
    OptSpec {
        names: &["hl-dec"],
        value: Value::One("how much to lower the hop limit by, 1 to 255 (not below 0)"),
        negatable: false,
    },
    OptSpec {
        names: &["hl-inc"],
        value: Value::One("how much to raise the hop limit by, 1 to 255 (not above 255)"),
        negatable: false,
    },
];

pub static TTL: TargetModule = TargetModule {
    name: "TTL",
    options: &TTL_OPTIONS,
    example: "-t mangle -A POSTROUTING -j TTL --ttl-set 64",
    parser: || Box::new(TtlParser::new(&TTL_NAMES)),
    code: code::TTL,
    tables: MANGLE,
    chains: None,
    chain_reason: "",
    save: |target, out| match target {
        Target::Ttl(t) => save(&TTL_NAMES, t, out),
        _ => unreachable!("the TTL module saves TTL"),
    },
    list: |target, out, _| match target {
        Target::Ttl(t) => list(&TTL_NAMES, t, out),
        _ => unreachable!("the TTL module lists TTL"),
    },
    suggest: no_suggestion,
    hidden: false,
    // Not drawn: the models (reference and compiled) do not rewrite the
    // packet; tests/mangle.rs and tests/program.rs test it on packets.
    random: Random::NEVER,
};

pub static HL: TargetModule = TargetModule {
    name: "HL",
    options: &HL_OPTIONS,
    example: "-t mangle -A POSTROUTING -j HL --hl-set 64",
    parser: || Box::new(TtlParser::new(&HL_NAMES)),
    code: code::TTL,
    tables: MANGLE,
    chains: None,
    chain_reason: "",
    save: |target, out| match target {
        Target::Hl(t) => save(&HL_NAMES, t, out),
        _ => unreachable!("the HL module saves HL"),
    },
    list: |target, out, _| match target {
        Target::Hl(t) => list(&HL_NAMES, t, out),
        _ => unreachable!("the HL module lists HL"),
    },
    suggest: no_suggestion,
    hidden: false,
    random: Random::NEVER,
};

/// ` -j TTL --ttl-set 42`, as iptables-save prints it.
fn save(names: &Names, t: &Ttl, out: &mut String) {
    let op = match t.mode {
        TtlMode::Set => "set",
        TtlMode::Inc => "inc",
        TtlMode::Dec => "dec",
    };
    let _ = write!(
        out,
        " -j {} --{}-{op} {}",
        names.target, names.prefix, t.value
    );
}

/// ` TTL set to 42`, `-L`'s last column as libipt_TTL / libip6t_HL print it.
fn list(names: &Names, t: &Ttl, out: &mut String) {
    let op = match t.mode {
        TtlMode::Set => "set to",
        TtlMode::Inc => "increment by",
        TtlMode::Dec => "decrement by",
    };
    let _ = write!(out, " {} {op} {}", names.target, t.value);
}

#[derive(Clone, Debug)]
struct TtlParser {
    target: &'static str,
    prefix: &'static str,
    family: Family,
    twin: &'static str,
    given: Option<(&'static str, Ttl)>,
}

impl TtlParser {
    fn new(names: &Names) -> TtlParser {
        TtlParser {
            target: names.target,
            prefix: names.prefix,
            family: names.family,
            twin: names.twin,
            given: None,
        }
    }
}

impl TargetParser for TtlParser {
    fn check_repeat(&self, option: &'static OptSpec) -> Result<(), ParseError> {
        match self.given {
            Some((first, _)) if first == option.name() => Err(ParseError::RepeatedTargetOption {
                target: self.target,
                option: option.flag(),
                hint: "",
            }),
            Some((first, _)) => Err(ParseError::ExclusiveTargetOptions {
                target: self.target,
                option: option.flag(),
                other: format!("--{first}"),
                choices: if self.target == "TTL" {
                    "--ttl-set, --ttl-dec or --ttl-inc"
                } else {
                    "--hl-set, --hl-dec or --hl-inc"
                },
            }),
            None => Ok(()),
        }
    }

    fn option(&mut self, option: &'static OptSpec, values: &[&str]) -> Result<(), ParseError> {
        let text = values.first().copied().unwrap_or_default();
        let what = if self.target == "TTL" {
            "TTL"
        } else {
            "hop limit"
        };
        let value = number(option, what, text, u8::MAX.into())? as u8;
        let op = option
            .name()
            .strip_prefix(self.prefix)
            .and_then(|o| o.strip_prefix('-'))
            .unwrap_or_default();
        let mode = match op {
            "set" => TtlMode::Set,
            "inc" => TtlMode::Inc,
            "dec" => TtlMode::Dec,
            _ => unreachable!("{} is one of {}'s options", option.flag(), self.target),
        };
        // libipt_TTL refuses a change of 0: it would change nothing.
        if mode != TtlMode::Set && value == 0 {
            return Err(crate::rules::parse::invalid(
                &option.flag(),
                what,
                text,
                format!(
                    "{} takes 1 to 255: a change of 0 does nothing",
                    option.flag()
                ),
            ));
        }
        self.given = Some((option.name(), Ttl { mode, value }));
        Ok(())
    }

    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Target, ParseError> {
        if rule.family != self.family {
            return Err(crate::rules::parse::invalid(
                "-j",
                "target",
                self.target,
                format!(
                    "-j {} is a target of {}, not of {}; {}",
                    self.target,
                    self.family.command(),
                    rule.family.command(),
                    self.twin
                ),
            ));
        }
        let Some((_, ttl)) = self.given else {
            return Err(ParseError::MissingTargetOption {
                target: self.target,
                option: if self.target == "TTL" {
                    "--ttl-set, --ttl-dec or --ttl-inc"
                } else {
                    "--hl-set, --hl-dec or --hl-inc"
                },
                example: if self.target == "TTL" {
                    "; e.g. -j TTL --ttl-set 64"
                } else {
                    "; e.g. -j HL --hl-set 64"
                },
            });
        };
        super::refuse_outside_mangle(self.target, rule)?;
        let module = if self.target == "TTL" { &TTL } else { &HL };
        check_placement(module, rule)?;
        Ok(if self.target == "TTL" {
            Target::Ttl(ttl)
        } else {
            Target::Hl(ttl)
        })
    }

    fn boxed_clone(&self) -> Box<dyn TargetParser> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_clamp_as_xt_ttl() {
        let t = |mode, value| Ttl { mode, value };
        assert_eq!(t(TtlMode::Set, 5).apply(64), 5);
        assert_eq!(t(TtlMode::Set, 0).apply(64), 0);
        assert_eq!(t(TtlMode::Inc, 1).apply(63), 64);
        assert_eq!(t(TtlMode::Inc, 200).apply(100), 255);
        assert_eq!(t(TtlMode::Dec, 3).apply(64), 61);
        assert_eq!(t(TtlMode::Dec, 200).apply(100), 0);
    }
}
