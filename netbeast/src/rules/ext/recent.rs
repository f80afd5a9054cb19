//! `-m recent --set|--rcheck|--update|--remove [--seconds S [--reap]]
//! [--hitcount N] [--rttl] [--name NAME] [--mask M] [--rsource|--rdest]`
//! (`!` before the command): per-name lists of recently seen addresses
//! (xt_recent), as ufw's `limit` rules use them. The kernel's side is
//! `netbeast-ebpf/src/recent.rs`; `netbeast recent -L` reads the lists.

use crate::rules::generate::{Dice, Random, Scope};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use netbeast_common::{Guard, RECENT_STAMPS, guard_kind, recent as bits};
use serde::{Deserialize, Serialize};

use super::{MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, number, once, value};
use crate::compile::PacketView;
use crate::compile::lower::Lowering;
use crate::rules::model::{Family, Match, TableName};
use crate::rules::parse::{ParseError, invalid, parse_dotted};

/// The list a rule names without `--name`.
pub const DEFAULT_NAME: &str = "DEFAULT";
/// The longest `--name` (xt_recent's name field, 200 bytes with the NUL).
pub const MAX_NAME_LEN: usize = 199;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecentCommand {
    Set,
    Check,
    Update,
    Remove,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recent {
    pub command: RecentCommand,
    pub negated: bool,
    pub seconds: u32,
    pub reap: bool,
    pub hitcount: u32,
    pub rttl: bool,
    pub name: String,
    /// `--mask` of an iptables rule (all ones for an ip6tables one, whose
    /// mask is `mask6`).
    pub mask: Ipv4Addr,
    /// `--mask` of an ip6tables rule (which lists IPv6 addresses): set
    /// exactly when the rule is ip6tables'. A prefix mask (leading ones):
    /// the kernel's key carries its length.
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub mask6: Option<Ipv6Addr>,
    /// `--rdest`: the destination address is listed.
    pub rdest: bool,
}

/// The list's number in the kernel's keys (FNV-1a, as hashlimit's).
pub fn name_number(name: &str) -> u32 {
    super::hashlimit::name_number(name)
}

impl Recent {
    /// The guard the kernel evaluates.
    pub fn guard(&self) -> Guard {
        let command = match self.command {
            RecentCommand::Set => bits::SET,
            RecentCommand::Check => bits::CHECK,
            RecentCommand::Update => bits::UPDATE,
            RecentCommand::Remove => bits::REMOVE,
        };
        let flags = command
            | if self.reap { bits::REAP } else { 0 }
            | if self.rttl { bits::TTL } else { 0 }
            | if self.rdest { bits::DEST } else { 0 }
            | if self.mask6.is_some() { bits::V6 } else { 0 };
        let mask = match self.mask6 {
            Some(mask6) => u128::from(mask6).leading_ones(),
            None => u32::from(self.mask).to_be(),
        };
        Guard {
            kind: guard_kind::RECENT,
            negated: u32::from(self.negated),
            _pad: flags,
            a: u64::from(self.seconds),
            b: u64::from(self.hitcount),
            c: u64::from(name_number(&self.name)) | u64::from(mask) << 32,
            ..Guard::default()
        }
    }
}

impl Recent {
    /// `--mask` as iptables or ip6tables prints it.
    fn shown_mask(&self) -> String {
        match self.mask6 {
            Some(mask6) => mask6.to_string(),
            None => self.mask.to_string(),
        }
    }
}

impl MatchExt for Recent {
    fn save(&self, out: &mut String) {
        out.push_str(" -m recent");
        if self.negated {
            out.push_str(" !");
        }
        out.push_str(match self.command {
            RecentCommand::Set => " --set",
            RecentCommand::Check => " --rcheck",
            RecentCommand::Update => " --update",
            RecentCommand::Remove => " --remove",
        });
        if self.seconds != 0 {
            let _ = write!(out, " --seconds {}", self.seconds);
        }
        if self.reap {
            out.push_str(" --reap");
        }
        if self.hitcount != 0 {
            let _ = write!(out, " --hitcount {}", self.hitcount);
        }
        if self.rttl {
            out.push_str(" --rttl");
        }
        let _ = write!(out, " --name {} --mask {}", self.name, self.shown_mask());
        out.push_str(if self.rdest { " --rdest" } else { " --rsource" });
    }

    fn list(&self, out: &mut String, _numeric: bool) {
        if self.negated {
            out.push_str(" !");
        }
        out.push_str(" recent:");
        out.push_str(match self.command {
            RecentCommand::Set => " SET",
            RecentCommand::Check => " CHECK",
            RecentCommand::Update => " UPDATE",
            RecentCommand::Remove => " REMOVE",
        });
        if self.seconds != 0 {
            let _ = write!(out, " seconds: {}", self.seconds);
        }
        if self.reap {
            out.push_str(" reap");
        }
        if self.hitcount != 0 {
            let _ = write!(out, " hit_count: {}", self.hitcount);
        }
        if self.rttl {
            out.push_str(" TTL-Match");
        }
        let _ = write!(
            out,
            " name: {} side: {} mask: {}",
            self.name,
            if self.rdest { "dest" } else { "source" },
            self.shown_mask()
        );
    }

    /// A guard: not part of the rule's static match.
    fn matches(&self, _pkt: &PacketView) -> bool {
        true
    }

    fn lower(&self) -> Lowering {
        Lowering::Guard(self.guard())
    }
}

static OPTIONS: [OptSpec; 12] = [
    OptSpec {
        names: &["set"],
        value: Value::None,
        negatable: true,
    },
    OptSpec {
        names: &["rcheck"],
        value: Value::None,
        negatable: true,
    },
    OptSpec {
        names: &["update"],
        value: Value::None,
        negatable: true,
    },
    OptSpec {
        names: &["remove"],
        value: Value::None,
        negatable: true,
    },
    OptSpec {
        names: &["seconds"],
        value: Value::One("a number of seconds"),
        negatable: false,
    },
    OptSpec {
        names: &["reap"],
        value: Value::None,
        negatable: false,
    },
    OptSpec {
        names: &["hitcount"],
        value: Value::One("a number of packets"),
        negatable: false,
    },
    OptSpec {
        names: &["rttl"],
        value: Value::None,
        negatable: false,
    },
    OptSpec {
        names: &["name"],
        value: Value::One("the list's name"),
        negatable: false,
    },
    OptSpec {
        names: &["mask"],
        value: Value::One("a netmask like 255.255.255.0 (ffff:ffff:ffff:ffff:: for ip6tables)"),
        negatable: false,
    },
    OptSpec {
        names: &["rsource"],
        value: Value::None,
        negatable: false,
    },
    OptSpec {
        names: &["rdest"],
        value: Value::None,
        negatable: false,
    },
];

pub static MODULE: MatchModule = MatchModule {
    name: "recent",
    family: None,
    options: &OPTIONS,
    example: "e.g. -m recent --update --seconds 30 --hitcount 6",
    implicit_protocol: None,
    parser: || Box::<RecentParser>::default(),
    random: Random {
        weight: 1,
        draw: random,
    },
};

#[derive(Debug, Default)]
struct RecentParser {
    command: Option<(RecentCommand, &'static str)>,
    negated: bool,
    seconds: Option<u32>,
    reap: bool,
    hitcount: Option<u32>,
    rttl: bool,
    name: Option<String>,
    /// `--mask`'s text, read in `finish`, which knows the family.
    mask: Option<String>,
    rdest: Option<bool>,
}

impl MatchParser for RecentParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        text: &[&str],
    ) -> Result<(), ParseError> {
        let command = match option.name() {
            "set" => Some(RecentCommand::Set),
            "rcheck" => Some(RecentCommand::Check),
            "update" => Some(RecentCommand::Update),
            "remove" => Some(RecentCommand::Remove),
            _ => None,
        };
        if let Some(command) = command {
            if let Some((_, first)) = self.command {
                return Err(ParseError::IllegalOption {
                    option: option.flag(),
                    command: first.to_string(),
                    reason: "give one of --set, --rcheck, --update, --remove",
                });
            }
            self.command = Some((
                command,
                ["--set", "--rcheck", "--update", "--remove"][command as usize],
            ));
            self.negated = negated;
            return Ok(());
        }
        match option.name() {
            "seconds" => {
                let n = number(option, "seconds", value(option, text), u32::MAX.into())? as u32;
                once(&mut self.seconds, n, option)
            }
            "hitcount" => {
                let text = value(option, text);
                let n = number(option, "hit count", text, u32::MAX.into())? as u32;
                if n as usize > RECENT_STAMPS {
                    return Err(invalid(
                        &option.flag(),
                        "hit count",
                        text,
                        format!(
                            "netbeast remembers the last {RECENT_STAMPS} packets of an address \
                             (RECENT_STAMPS in netbeast-common)"
                        ),
                    ));
                }
                once(&mut self.hitcount, n, option)
            }
            "name" => {
                let text = value(option, text);
                if text.is_empty() || text.len() > MAX_NAME_LEN {
                    return Err(invalid(
                        "--name",
                        "name",
                        text,
                        format!("expected 1 to {MAX_NAME_LEN} characters"),
                    ));
                }
                once(&mut self.name, text.to_string(), option)
            }
            "mask" => once(&mut self.mask, value(option, text).to_string(), option),
            "reap" => {
                self.reap = true;
                Ok(())
            }
            "rttl" => {
                self.rttl = true;
                Ok(())
            }
            // The last of --rsource/--rdest counts, as in libxt_recent.
            side => {
                self.rdest = Some(side == "rdest");
                Ok(())
            }
        }
    }

    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Match, ParseError> {
        let Some((command, flag)) = self.command else {
            return Err(super::missing(
                &MODULE,
                "--set, --rcheck, --update or --remove",
            ));
        };
        if self.rttl && command == RecentCommand::Set {
            return Err(ParseError::IllegalOption {
                option: "--rttl".into(),
                command: flag.into(),
                reason: "--rttl goes with --rcheck or --update",
            });
        }
        let seconds = self.seconds.unwrap_or(0);
        if self.reap && seconds == 0 {
            return Err(ParseError::InvalidValue {
                option: "--reap".into(),
                what: "option",
                value: "--reap".into(),
                reason: "--reap also requires --seconds".into(),
            });
        }
        if !matches!(rule.table, TableName::Filter | TableName::Nat) {
            return Err(ParseError::Unsupported {
                what: format!("-m recent in the {} table", rule.table.as_str()),
                hint: "; netbeast keeps recent lists in the filter and nat tables".into(),
            });
        }
        let (mask, mask6) = match (rule.family, &self.mask) {
            (Family::V4, None) => (Ipv4Addr::BROADCAST, None),
            (Family::V6, None) => (Ipv4Addr::BROADCAST, Some(Ipv6Addr::from(u128::MAX))),
            (Family::V4, Some(text)) => {
                let mask = parse_dotted(text, true).ok_or_else(|| {
                    invalid(
                        "--mask",
                        "netmask",
                        text,
                        "expected a netmask like 255.255.255.0",
                    )
                })?;
                (mask, None)
            }
            (Family::V6, Some(text)) => (Ipv4Addr::BROADCAST, Some(ipv6_mask(text)?)),
        };
        Ok(Match::Recent(Recent {
            command,
            negated: self.negated,
            seconds,
            reap: self.reap,
            hitcount: self.hitcount.unwrap_or(0),
            rttl: self.rttl,
            name: self.name.unwrap_or_else(|| DEFAULT_NAME.to_string()),
            mask,
            mask6,
            rdest: self.rdest.unwrap_or(false),
        }))
    }
}

/// An ip6tables `--mask`: an IPv6 address whose bits are leading ones
/// (ffff:ffff:ffff:ffff:: keeps a /64). The kernel takes any mask;
/// netbeast's key carries a prefix length, so a mask with holes is
/// refused with the prefix that would do.
fn ipv6_mask(text: &str) -> Result<Ipv6Addr, ParseError> {
    let mask: Ipv6Addr = text.parse().map_err(|_| {
        invalid(
            "--mask",
            "netmask",
            text,
            "expected an IPv6 netmask like ffff:ffff:ffff:ffff::",
        )
    })?;
    let bits = u128::from(mask);
    let ones = bits.leading_ones();
    if ones < 128 && bits << ones != 0 {
        return Err(invalid(
            "--mask",
            "netmask",
            text,
            format!(
                "netbeast takes IPv6 recent masks of leading ones only (a prefix), \
                 e.g. {}",
                Ipv6Addr::from(if ones == 0 {
                    0
                } else {
                    u128::MAX << (128 - ones)
                })
            ),
        ));
    }
    Ok(mask)
}

/// Filter table only: every command on the palette's lists with short
/// windows (in the compiler test's clock a packet comes every few ms, so
/// 1 s holds hundreds); with the palette's `wild` odds, any.
fn random(d: &mut Dice, s: &Scope) -> Option<Match> {
    if s.table != TableName::Filter {
        return None;
    }
    let command = d.pick(&[
        RecentCommand::Set,
        RecentCommand::Check,
        RecentCommand::Update,
        RecentCommand::Remove,
    ]);
    let check = matches!(command, RecentCommand::Check | RecentCommand::Update);
    let wild = d.wild(s.palette);
    let seconds = if wild {
        d.below(100) as u32
    } else {
        d.pick(&[0u32, 1])
    };
    let mask_len = if wild { d.below(33) as u32 } else { 32 };
    Some(Match::Recent(Recent {
        command,
        negated: d.chance(25),
        seconds,
        reap: seconds != 0 && d.chance(30),
        hitcount: if wild {
            d.below(33) as u32
        } else {
            d.pick(&[0u32, 1, 3])
        },
        rttl: wild && check && d.chance(30),
        name: if wild && d.chance(50) {
            (0..1 + d.below(12))
                .map(|_| d.pick(b"aZ0_q") as char)
                .collect()
        } else {
            d.pick(s.palette.names).to_string()
        },
        mask: Ipv4Addr::from(if mask_len == 0 {
            0
        } else {
            u32::MAX << (32 - mask_len)
        }),
        mask6: None,
        rdest: d.chance(30),
    }))
}
