//! `-j DSCP` (libxt_DSCP, xt_DSCP): the packet's DSCP, the six high bits
//! of the IPv4 TOS byte or the IPv6 traffic class, is set and its two ECN
//! bits kept; non-terminating, in the mangle table only, both families.
//! In the kernel it is `-j TOS` with value `dscp << 2` and mask 0xfc
//! (`target::TOS`): the search changes its copy of the byte, the pipeline
//! writes the packet after the chain (`rules/target/tos.rs`).

use std::fmt::Write as _;

use super::{TargetModule, TargetParser, check_placement, no_suggestion};
use crate::rules::ext::dscp::{MAX_DSCP, class};
use crate::rules::ext::{OptSpec, RuleContext, Value, number};
use crate::rules::generate::Random;
use crate::rules::model::{TableName, Target};
use crate::rules::parse::ParseError;
use netbeast_common::{target as code, tos_arg};

/// `RuleAction::arg` of `-j DSCP --set-dscp dscp`: the TOS byte's six
/// high bits replaced, the ECN bits kept.
pub fn kernel_arg(dscp: u8) -> u32 {
    tos_arg(dscp << 2, 0xfc)
}

static OPTIONS: [OptSpec; 2] = [
    OptSpec {
        names: &["set-dscp"],
        value: Value::One("the DSCP to set, 0 to 63 (0x3f)"),
        negatable: false,
    },
    OptSpec {
        names: &["set-dscp-class"],
        value: Value::One("a DSCP class: CS0-CS7, BE, AF11-AF43, EF"),
        negatable: false,
    },
];

pub static MODULE: TargetModule = TargetModule {
    name: "DSCP",
    options: &OPTIONS,
    example: "-t mangle -A POSTROUTING -j DSCP --set-dscp-class EF",
    parser: || Box::new(DscpParser::default()),
    code: code::TOS,
    tables: &[TableName::Mangle],
    chains: None,
    chain_reason: "",
    save: |target, out| match target {
        Target::Dscp(dscp) => {
            let _ = write!(out, " -j DSCP --set-dscp 0x{dscp:02x}");
        }
        _ => unreachable!("the DSCP module saves DSCP"),
    },
    list: |target, out, _| match target {
        Target::Dscp(dscp) => {
            let _ = write!(out, " DSCP set 0x{dscp:02x}");
        }
        _ => unreachable!("the DSCP module lists DSCP"),
    },
    suggest: no_suggestion,
    hidden: false,
    // Not drawn: the models do not rewrite the packet; tests/mangle_ttl.rs
    // and tests/program.rs test it on packets.
    random: Random::NEVER,
};

#[derive(Clone, Debug, Default)]
struct DscpParser {
    given: Option<(&'static str, u8)>,
}

impl TargetParser for DscpParser {
    fn check_repeat(&self, option: &'static OptSpec) -> Result<(), ParseError> {
        match self.given {
            Some((first, _)) if first == option.name() => Err(ParseError::RepeatedTargetOption {
                target: "DSCP",
                option: option.flag(),
                hint: "",
            }),
            Some((first, _)) => Err(ParseError::ExclusiveTargetOptions {
                target: "DSCP",
                option: option.flag(),
                other: format!("--{first}"),
                choices: "--set-dscp or --set-dscp-class",
            }),
            None => Ok(()),
        }
    }

    fn option(&mut self, option: &'static OptSpec, values: &[&str]) -> Result<(), ParseError> {
        let text = values.first().copied().unwrap_or_default();
        let dscp = if option.name() == "set-dscp" {
            number(option, "DSCP", text, MAX_DSCP.into())? as u8
        } else {
            class(option, text)?
        };
        self.given = Some((option.name(), dscp));
        Ok(())
    }

    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Target, ParseError> {
        let Some((_, dscp)) = self.given else {
            return Err(ParseError::MissingTargetOption {
                target: "DSCP",
                option: "--set-dscp or --set-dscp-class",
                example: "; e.g. -j DSCP --set-dscp-class EF",
            });
        };
        super::refuse_outside_mangle("DSCP", rule)?;
        check_placement(&MODULE, rule)?;
        Ok(Target::Dscp(dscp))
    }

    fn boxed_clone(&self) -> Box<dyn TargetParser> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_ecn_bits() {
        // EF (0x2e) over a TOS byte with ECT(0) and an old DSCP of 0x0a.
        assert_eq!(
            netbeast_common::apply_tos(kernel_arg(0x2e), 0x0a << 2 | 0b10),
            0x2e << 2 | 0b10
        );
        assert_eq!(netbeast_common::apply_tos(kernel_arg(0), 0xff), 0x03);
    }
}
