//! `-j SYNPROXY` (libxt_SYNPROXY, xt_SYNPROXY): the SYN-flood shield.
//! A SYN is answered with a SYN cookie from XDP; an ACK carrying a valid
//! cookie goes on to the local listener (docs/ARCHITECTURE.md "The
//! SYN-flood shield"). Its options, checks and texts as iptables has them.

use std::fmt::Write as _;

use netbeast_common::synproxy as opt;

/// TCP's protocol number.
const IPPROTO_TCP: u8 = 6;
use serde::{Deserialize, Serialize};

use super::{TargetModule, TargetParser, no_suggestion};
use crate::rules::ext::{OptSpec, RuleContext, Value};
use crate::rules::generate::Random;
use crate::rules::model::{TableName, Target};
use crate::rules::parse::{ParseError, invalid};

/// A `-j SYNPROXY` rule's options: what its SYN-ACKs offer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Synproxy {
    /// `--mss`: the MSS option of the SYN-ACK (none without it).
    pub mss: Option<u16>,
    /// `--wscale`: the window shift offered (the listener's own: see
    /// ARCHITECTURE.md).
    pub wscale: Option<u8>,
    pub sack_perm: bool,
    pub timestamp: bool,
    pub ecn: bool,
}

impl Synproxy {
    /// The options as the kernel reads them (`netbeast_common::synproxy`).
    pub fn kernel(&self) -> u32 {
        let mut bits = 0;
        if let Some(mss) = self.mss {
            bits |= opt::MSS | mss as u32;
        }
        if let Some(w) = self.wscale {
            bits |= opt::WSCALE | ((w as u32 & opt::WSCALE_MASK) << opt::WSCALE_SHIFT);
        }
        if self.sack_perm {
            bits |= opt::SACK_PERM;
        }
        if self.timestamp {
            bits |= opt::TIMESTAMP;
        }
        if self.ecn {
            bits |= opt::ECN;
        }
        bits
    }
}

impl Synproxy {
    /// Its `-j` and options as `-S` and iptables-save print them.
    pub fn save(&self, out: &mut String) {
        // libxt_SYNPROXY's order, whatever the order given.
        out.push_str(" -j SYNPROXY");
        if self.sack_perm {
            out.push_str(" --sack-perm");
        }
        if self.timestamp {
            out.push_str(" --timestamp");
        }
        if let Some(w) = self.wscale {
            let _ = write!(out, " --wscale {w}");
        }
        if let Some(mss) = self.mss {
            let _ = write!(out, " --mss {mss}");
        }
        if self.ecn {
            out.push_str(" --ecn");
        }
    }

    /// Its text in the last column of `-L`.
    pub fn list(&self, out: &mut String, _numeric: bool) {
        // As iptables prints it, a space after each word.
        out.push_str(" SYNPROXY ");
        if self.sack_perm {
            out.push_str("sack-perm ");
        }
        if self.timestamp {
            out.push_str("timestamp ");
        }
        if let Some(w) = self.wscale {
            let _ = write!(out, "wscale {w} ");
        }
        if let Some(mss) = self.mss {
            let _ = write!(out, "mss {mss} ");
        }
        if self.ecn {
            out.push_str("ecn ");
        }
    }
}

static OPTIONS: [OptSpec; 5] = [
    OptSpec {
        names: &["mss"],
        value: Value::One("an MSS, 0 to 65535"),
        negatable: false,
    },
    OptSpec {
        names: &["wscale"],
        value: Value::One("a window shift, 0 to 14"),
        negatable: false,
    },
    OptSpec {
        names: &["sack-perm"],
        value: Value::None,
        negatable: false,
    },
    OptSpec {
        names: &["timestamp"],
        value: Value::None,
        negatable: false,
    },
    OptSpec {
        names: &["ecn"],
        value: Value::None,
        negatable: false,
    },
];

pub static MODULE: TargetModule = TargetModule {
    name: "SYNPROXY",
    options: &OPTIONS,
    example: "-p tcp --dport 80 -m conntrack --ctstate INVALID,UNTRACKED -j SYNPROXY \
              --sack-perm --timestamp --wscale 7 --mss 1460",
    parser: || Box::new(SynproxyParser::default()),
    code: netbeast_common::target::SYNPROXY,
    tables: &[TableName::Filter],
    chains: Some(&["INPUT", "FORWARD"]),
    chain_reason: "SYNPROXY answers SYNs arriving from outside: use it in INPUT (or FORWARD)",
    save: |target, out| match target {
        Target::Synproxy(synproxy) => synproxy.save(out),
        _ => unreachable!("the SYNPROXY module saves SYNPROXY"),
    },
    list: |target, out, numeric| match target {
        Target::Synproxy(synproxy) => synproxy.list(out, numeric),
        _ => unreachable!("the SYNPROXY module lists SYNPROXY"),
    },
    suggest: no_suggestion,
    hidden: false,
    // Not drawn: its effect is an answer to a SYN (a cookie) and a
    // conntrack entry made from an ACK, which neither the reference
    // classifier nor the differential harness models; tests/program.rs and
    // tests/synflood.rs test it on packets.
    random: Random::NEVER,
};

#[derive(Clone, Debug, Default)]
struct SynproxyParser {
    synproxy: Synproxy,
    /// Options given so far: each may be given once.
    seen: Vec<&'static str>,
}

/// A number option in decimal, `0x` hex or `0` octal (strtoul with base
/// 0, as xtables reads them), at most `max`.
fn number(option: &'static str, text: &str, max: u32, why: &str) -> Result<u32, ParseError> {
    let n = if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16).ok()
    } else if text.len() > 1 && text.starts_with('0') {
        u32::from_str_radix(&text[1..], 8).ok()
    } else {
        text.parse::<u32>().ok()
    };
    n.filter(|n| *n <= max)
        .ok_or_else(|| invalid(option, "value", text, why))
}

impl TargetParser for SynproxyParser {
    fn option(&mut self, option: &'static OptSpec, values: &[&str]) -> Result<(), ParseError> {
        let name = option.name();
        if self.seen.contains(&name) {
            return Err(ParseError::RepeatedTargetOption {
                target: "SYNPROXY",
                option: option.flag(),
                hint: "",
            });
        }
        self.seen.push(name);
        match name {
            // iptables keeps the low 16 bits of a larger number (70000
            // becomes 4464); netbeast refuses it.
            "mss" => {
                self.synproxy.mss = Some(number(
                    "--mss",
                    values[0],
                    u16::MAX as u32,
                    "an MSS is 0 to 65535 bytes (a TCP option of 16 bits)",
                )? as u16)
            }
            // iptables takes any number and the kernel any shift; TCP
            // caps shifts at 14 (RFC 7323), so netbeast refuses more.
            "wscale" => {
                self.synproxy.wscale = Some(number(
                    "--wscale",
                    values[0],
                    opt::MAX_WSCALE,
                    "a window shift is 0 to 14 (RFC 7323)",
                )? as u8)
            }
            "sack-perm" => self.synproxy.sack_perm = true,
            "timestamp" => self.synproxy.timestamp = true,
            "ecn" => self.synproxy.ecn = true,
            _ => unreachable!("every option of OPTIONS is handled"),
        }
        Ok(())
    }

    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Target, ParseError> {
        // The kernel's checks (iptables reports them as "Invalid argument").
        if rule.table != TableName::Filter {
            return Err(ParseError::WrongChain {
                option: "-j SYNPROXY".into(),
                chain: format!("the {} table", rule.table.as_str()),
                reason: "SYNPROXY is a target of the filter table's INPUT and FORWARD chains",
            });
        }
        if matches!(rule.chain, "OUTPUT") {
            return Err(ParseError::WrongChain {
                option: "-j SYNPROXY".into(),
                chain: rule.chain.into(),
                reason: "SYNPROXY answers SYNs arriving from outside: use it in INPUT (or \
                         FORWARD)",
            });
        }
        if rule.plain_protocol() != Some(IPPROTO_TCP) {
            return Err(ParseError::NeedsProtocol {
                option: "-j SYNPROXY".into(),
                needs: "-p tcp (not negated): it answers TCP SYNs".into(),
            });
        }
        Ok(Target::Synproxy(self.synproxy))
    }

    fn boxed_clone(&self) -> Box<dyn TargetParser> {
        Box::new(self.clone())
    }
}
