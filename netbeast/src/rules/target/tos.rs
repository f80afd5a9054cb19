//! `-j TOS` (libxt_TOS revision 1, xt_TOS): the packet's TOS byte (IPv6:
//! traffic class) becomes `(tos & !mask) ^ value`; non-terminating, in
//! the mangle table only, both families. Every option comes down to one
//! value/mask pair, which the rule keeps and iptables-save prints
//! (`--set-tos 0x10/0x3f`); `-L` names the operation (`TOS or 0x02`).
//! The search changes its copy of the byte at once; the pipeline writes
//! the packet (and fixes the IPv4 header checksum) once the chain is
//! decided (`rewrite.rs` in the kernel programs).

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

use super::{TargetModule, TargetParser, check_placement, no_suggestion};
use crate::rules::ext::tos::{NAMES, parse_tos};
use crate::rules::ext::{OptSpec, RuleContext, Value, number};
use crate::rules::generate::Random;
use crate::rules::model::{TableName, Target};
use crate::rules::parse::ParseError;
use netbeast_common::{target as code, tos_arg};

/// A `-j TOS` rule: what xt_TOS's info holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TosTarget {
    pub value: u8,
    pub mask: u8,
}

impl TosTarget {
    /// `RuleAction::arg`: the mask above the value.
    pub fn kernel_arg(&self) -> u32 {
        tos_arg(self.value, self.mask)
    }

    /// The TOS byte after this rule.
    pub fn apply(&self, tos: u8) -> u8 {
        netbeast_common::apply_tos(self.kernel_arg(), tos)
    }
}

static OPTIONS: [OptSpec; 4] = [
    OptSpec {
        names: &["set-tos"],
        value: Value::One(
            "value[/mask] (the mask's bits cleared, then the value XORed in; mask 0xff when \
             left out), or a name such as Minimize-Delay (value/0x3f)",
        ),
        negatable: false,
    },
    OptSpec {
        names: &["and-tos"],
        value: Value::One("bits to keep, like 0xfc"),
        negatable: false,
    },
    OptSpec {
        names: &["or-tos"],
        value: Value::One("bits to set, like 0x10"),
        negatable: false,
    },
    OptSpec {
        names: &["xor-tos"],
        value: Value::One("bits to flip, like 0x10"),
        negatable: false,
    },
];

const CHOICES: &str = "--set-tos, --and-tos, --or-tos or --xor-tos";

pub static MODULE: TargetModule = TargetModule {
    name: "TOS",
    options: &OPTIONS,
    example: "-t mangle -A POSTROUTING -j TOS --set-tos Minimize-Delay",
    parser: || Box::new(TosParser::default()),
    code: code::TOS,
    tables: &[TableName::Mangle],
    chains: None,
    chain_reason: "",
    save: |target, out| match target {
        Target::Tos(t) => {
            let _ = write!(out, " -j TOS --set-tos 0x{:02x}/0x{:02x}", t.value, t.mask);
        }
        _ => unreachable!("the TOS module saves TOS"),
    },
    list: |target, out, numeric| match target {
        Target::Tos(t) => list(t, out, numeric),
        _ => unreachable!("the TOS module lists TOS"),
    },
    suggest: no_suggestion,
    hidden: false,
    // Not drawn: the models do not rewrite the packet.
    random: Random::NEVER,
};

/// `-L`'s last column as libxt_TOS prints it: with `-n` the pair; else a
/// name for `value/0x3f` (printed as iptables 1.8.9 does, two spaces in
/// front and none after "set"), else the operation the pair amounts to.
fn list(t: &TosTarget, out: &mut String, numeric: bool) {
    let symbolic = (!numeric && t.mask == 0x3f)
        .then(|| NAMES.iter().find(|(_, v)| *v == t.value))
        .flatten();
    let _ = if numeric {
        write!(out, " TOS set 0x{:02x}/0x{:02x}", t.value, t.mask)
    } else if let Some((name, _)) = symbolic {
        write!(out, "  TOS set{name}")
    } else if t.value == 0 {
        write!(out, " TOS and 0x{:02x}", !t.mask)
    } else if t.value == t.mask {
        write!(out, " TOS or 0x{:02x}", t.value)
    } else if t.mask == 0 {
        write!(out, " TOS xor 0x{:02x}", t.value)
    } else {
        write!(out, " TOS set 0x{:02x}/0x{:02x}", t.value, t.mask)
    };
}

#[derive(Clone, Debug, Default)]
struct TosParser {
    given: Option<(&'static str, TosTarget)>,
}

impl TargetParser for TosParser {
    fn check_repeat(&self, option: &'static OptSpec) -> Result<(), ParseError> {
        match self.given {
            Some((first, _)) if first == option.name() => Err(ParseError::RepeatedTargetOption {
                target: "TOS",
                option: option.flag(),
                hint: "",
            }),
            Some((first, _)) => Err(ParseError::ExclusiveTargetOptions {
                target: "TOS",
                option: option.flag(),
                other: format!("--{first}"),
                choices: CHOICES,
            }),
            None => Ok(()),
        }
    }

    fn option(&mut self, option: &'static OptSpec, values: &[&str]) -> Result<(), ParseError> {
        let text = values.first().copied().unwrap_or_default();
        let byte = |text| number(option, "TOS", text, u8::MAX.into()).map(|n| n as u8);
        let (value, mask) = match option.name() {
            "set-tos" => parse_tos(option, text)?,
            "and-tos" => (0, !byte(text)?),
            "or-tos" => {
                let v = byte(text)?;
                (v, v)
            }
            "xor-tos" => (byte(text)?, 0),
            other => unreachable!("--{other} is one of TOS's options"),
        };
        self.given = Some((option.name(), TosTarget { value, mask }));
        Ok(())
    }

    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Target, ParseError> {
        let Some((_, tos)) = self.given else {
            return Err(ParseError::MissingTargetOption {
                target: "TOS",
                option: CHOICES,
                example: "; e.g. -j TOS --set-tos Minimize-Delay",
            });
        };
        super::refuse_outside_mangle("TOS", rule)?;
        check_placement(&MODULE, rule)?;
        Ok(Target::Tos(tos))
    }

    fn boxed_clone(&self) -> Box<dyn TargetParser> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_as_xt_tos() {
        let t = |value, mask| TosTarget { value, mask };
        assert_eq!(t(0x10, 0x3f).apply(0xe3), 0xd0);
        assert_eq!(t(0x12, 0x12).apply(0x01), 0x13);
        assert_eq!(t(0x12, 0x00).apply(0x13), 0x01);
        assert_eq!(t(0x00, 0xed).apply(0xff), 0x12);
        assert_eq!(t(0x1f, 0xff).apply(0xaa), 0x1f);
    }
}
