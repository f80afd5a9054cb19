//! `-j TCPMSS` (libxt_TCPMSS, xt_TCPMSS): the MSS option of a TCP
//! segment (a SYN, in practice) lowered to `--set-mss N` or to the path
//! MTU less the IP and TCP headers (`--clamp-mss-to-pmtu`), or added to a
//! segment without one; non-terminating, in every table, both families,
//! for `-p tcp` rules only (the kernel registers it for TCP), the clamp
//! only in FORWARD, OUTPUT and POSTROUTING (where a route is known). As
//! iptables-nft (1.8.9) takes them: the last of the two options wins, and
//! the rule need not say `--syn`. The search records what the rules ask
//! for; the pipeline writes the segment as it leaves
//! (`netbeast-ebpf/src/tcpmss.rs`, docs/ARCHITECTURE.md "-j TCPMSS").

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

use super::{TargetModule, TargetParser, check_placement, no_suggestion};
use crate::rules::ext::{OptSpec, RuleContext, Value};
use crate::rules::generate::Random;
use crate::rules::model::{Family, TableName, Target};
use crate::rules::parse::ParseError;
use netbeast_common::{target as code, tcpmss};

/// What a `-j TCPMSS` rule lowers the MSS to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Tcpmss {
    /// `--set-mss N`.
    Set(u16),
    /// `--clamp-mss-to-pmtu`.
    Clamp,
}

impl Tcpmss {
    /// `RuleAction::arg` (`netbeast_common::tcpmss`).
    pub fn kernel_arg(&self) -> u32 {
        match self {
            Tcpmss::Set(mss) => tcpmss::SET | u32::from(*mss),
            Tcpmss::Clamp => tcpmss::CLAMP,
        }
    }
}

/// The chains where the kernel takes `--clamp-mss-to-pmtu` (xt_TCPMSS's
/// checkentry: a route must be known).
const CLAMP_CHAINS: &[&str] = &["FORWARD", "OUTPUT", "POSTROUTING"];

static OPTIONS: [OptSpec; 2] = [
    OptSpec {
        names: &["set-mss"],
        value: Value::One("the MSS to lower the option to, 0 to 65515 (ip6tables: 65495)"),
        negatable: false,
    },
    OptSpec {
        names: &["clamp-mss-to-pmtu"],
        value: Value::None,
        negatable: false,
    },
];

pub static MODULE: TargetModule = TargetModule {
    name: "TCPMSS",
    options: &OPTIONS,
    example: "-t mangle -A FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu",
    parser: || Box::new(TcpmssParser::default()),
    code: code::TCPMSS,
    tables: &[
        TableName::Filter,
        TableName::Nat,
        TableName::Mangle,
        TableName::Raw,
    ],
    chains: None,
    chain_reason: "",
    save: |target, out| match target {
        Target::Tcpmss(Tcpmss::Set(mss)) => {
            let _ = write!(out, " -j TCPMSS --set-mss {mss}");
        }
        Target::Tcpmss(Tcpmss::Clamp) => out.push_str(" -j TCPMSS --clamp-mss-to-pmtu"),
        _ => unreachable!("the TCPMSS module saves TCPMSS"),
    },
    list: |target, out, _| match target {
        Target::Tcpmss(Tcpmss::Set(mss)) => {
            let _ = write!(out, " TCPMSS set {mss}");
        }
        Target::Tcpmss(Tcpmss::Clamp) => out.push_str(" TCPMSS clamp to PMTU"),
        _ => unreachable!("the TCPMSS module lists TCPMSS"),
    },
    suggest: no_suggestion,
    hidden: false,
    // Not drawn: the models do not rewrite the packet; tests/tcpmss.rs
    // tests it on packets.
    random: Random::NEVER,
};

#[derive(Clone, Debug, Default)]
struct TcpmssParser {
    set: bool,
    clamp: bool,
    /// The last option given: it wins (libxt_TCPMSS writes both into one
    /// field).
    last: Option<TcpmssValue>,
}

/// An option as read, before the family's ceiling is known.
#[derive(Clone, Copy, Debug)]
enum TcpmssValue {
    Set(u64, &'static OptSpec),
    Clamp,
}

impl TargetParser for TcpmssParser {
    fn check_repeat(&self, option: &'static OptSpec) -> Result<(), ParseError> {
        let given = if option.name() == "set-mss" {
            self.set
        } else {
            self.clamp
        };
        if given {
            return Err(ParseError::RepeatedTargetOption {
                target: "TCPMSS",
                option: option.flag(),
                hint: "",
            });
        }
        Ok(())
    }

    fn option(&mut self, option: &'static OptSpec, values: &[&str]) -> Result<(), ParseError> {
        if option.name() == "set-mss" {
            let text = values.first().copied().unwrap_or_default();
            let mss = crate::rules::parse::parse_c_number_in(text, u16::MAX.into())
                .ok_or_else(|| out_of_range(option, text, tcpmss::MAX_MSS_IPV4))?;
            self.set = true;
            self.last = Some(TcpmssValue::Set(mss, option));
        } else {
            self.clamp = true;
            self.last = Some(TcpmssValue::Clamp);
        }
        Ok(())
    }

    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Target, ParseError> {
        let target = match self.last {
            None => {
                return Err(ParseError::MissingTargetOption {
                    target: "TCPMSS",
                    option: "--set-mss or --clamp-mss-to-pmtu",
                    example: "; e.g. -j TCPMSS --clamp-mss-to-pmtu",
                });
            }
            Some(TcpmssValue::Clamp) => Tcpmss::Clamp,
            Some(TcpmssValue::Set(mss, option)) => {
                let max = match rule.family {
                    Family::V4 => tcpmss::MAX_MSS_IPV4,
                    Family::V6 => tcpmss::MAX_MSS_IPV6,
                };
                if mss > u64::from(max) {
                    return Err(out_of_range(option, &mss.to_string(), max));
                }
                Tcpmss::Set(mss as u16)
            }
        };
        if rule.plain_protocol() != Some(6) {
            return Err(ParseError::KernelRefuses {
                what: "-j TCPMSS without -p tcp".into(),
                reason: "the MSS is a TCP option: say -p tcp (usually with --tcp-flags SYN,RST \
                         SYN, the segments that carry it)"
                    .into(),
            });
        }
        if target == Tcpmss::Clamp
            && rule.table.builtin_chains().contains(&rule.chain)
            && !CLAMP_CHAINS.contains(&rule.chain)
        {
            return Err(ParseError::KernelRefuses {
                what: format!("-j TCPMSS --clamp-mss-to-pmtu in {}", rule.chain),
                reason: "the path MTU is known only once the packet is routed: clamp in \
                         FORWARD, OUTPUT or POSTROUTING, or use --set-mss"
                    .into(),
            });
        }
        check_placement(&MODULE, rule)?;
        Ok(Target::Tcpmss(target))
    }

    fn boxed_clone(&self) -> Box<dyn TargetParser> {
        Box::new(self.clone())
    }
}

/// libxt_TCPMSS's refusal of a `--set-mss` past the family's ceiling.
fn out_of_range(option: &OptSpec, text: &str, max: u32) -> ParseError {
    crate::rules::parse::invalid(
        &option.flag(),
        "MSS",
        text,
        format!("expected a number from 0 to {max} (65535 less the IP and TCP headers)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use netbeast_common::tcpmss::merge;

    #[test]
    fn rules_come_down_to_the_lowest_value_and_the_clamp() {
        let set = |mss: u16| Tcpmss::Set(mss).kernel_arg();
        let state = merge(merge(merge(0, set(1400)), set(1300)), set(1350));
        assert_eq!(state, tcpmss::SET | 1300);
        let state = merge(state, Tcpmss::Clamp.kernel_arg());
        assert_eq!(state, tcpmss::SET | tcpmss::CLAMP | 1300);
        assert_eq!(merge(0, Tcpmss::Clamp.kernel_arg()), tcpmss::CLAMP);
        // --set-mss 0 is a value, not "none".
        assert_eq!(merge(state, set(0)), tcpmss::SET | tcpmss::CLAMP);
    }
}
