//! `-j SET --add-set NAME DIRS [--exist] [--timeout N] / --del-set NAME
//! DIRS` (libxt_SET revision 3, xt_SET): a non-terminating target that
//! adds the packet's key to an ipset of `netbeast ipset`, or deletes it.
//! The kernel's side is a guard (`guard_kind::SET_WRITE`) appended after
//! the rule's own guards, so it runs exactly when the rule matched; the
//! rule's slot itself counts and goes on, as a rule without a target
//! (docs/ARCHITECTURE.md "ipsets").

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{TargetModule, TargetParser, check_placement, no_suggestion};
use crate::rules::ext::set::{name_number, parse_directions, parse_set_name};
use crate::rules::ext::{OptSpec, RuleContext, Value};
use crate::rules::generate::Random;
use crate::rules::model::{Family, TableName, Target};
use crate::rules::parse::{ParseError, invalid};
use netbeast_common::{Guard, guard_kind, ipset, target as code};

/// The longest `--timeout` ipset takes (its `IPSET_MAX_TIMEOUT`, in
/// seconds: what fits a u32 of milliseconds halved).
pub const MAX_TIMEOUT: u32 = 2_147_483;

/// One of the target's sets: its name and, per dimension, `true` for dst.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SetRef {
    pub name: String,
    pub dst: Vec<bool>,
}

impl SetRef {
    fn directions(&self) -> String {
        self.dst
            .iter()
            .map(|&d| if d { "dst" } else { "src" })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `ipset::*` direction bits, as the `SET` match's guard holds
    /// them.
    fn flags(&self) -> u32 {
        let mut flags = (self.dst.len() as u32) << ipset::DIMS_SHIFT;
        for (i, &d) in self.dst.iter().enumerate() {
            if d {
                flags |= ipset::DIR_DST << i;
            }
        }
        flags
    }
}

/// A `-j SET` rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SetTarget {
    pub add: Option<SetRef>,
    pub del: Option<SetRef>,
    /// `--exist`: an existing member of the add set gets its timeout
    /// renewed (without it the member is left as it is, as xt_SET).
    pub exist: bool,
    /// `--timeout N` for added members; `None`: the set's default.
    pub timeout: Option<u32>,
    /// An ip6tables rule: a set of the other family is refused.
    pub v6: bool,
}

impl SetTarget {
    /// The sets it names, add set first.
    pub fn sets(&self) -> impl Iterator<Item = &SetRef> {
        self.add.iter().chain(self.del.iter())
    }

    /// The kernel's work, in xt_SET's order (add, then delete): one
    /// `SET_WRITE` guard per set.
    pub fn guards(&self) -> Vec<Guard> {
        let family = if self.v6 { ipset::V6 } else { 0 };
        let mut out = Vec::new();
        if let Some(add) = &self.add {
            let mut flags = add.flags() | family | ipset::ADD;
            if self.exist {
                flags |= ipset::EXIST;
            }
            if self.timeout.is_some() {
                flags |= ipset::TIMEOUT;
            }
            out.push(Guard {
                kind: guard_kind::SET_WRITE,
                _pad: flags,
                a: u64::from(name_number(&add.name)),
                b: u64::from(self.timeout.unwrap_or(0)),
                ..Guard::default()
            });
        }
        if let Some(del) = &self.del {
            out.push(Guard {
                kind: guard_kind::SET_WRITE,
                _pad: del.flags() | family | ipset::DEL,
                a: u64::from(name_number(&del.name)),
                ..Guard::default()
            });
        }
        out
    }
}

static OPTIONS: [OptSpec; 5] = [
    OptSpec {
        names: &["add-set"],
        value: Value::Two("a set's name and src|dst[,src|dst]"),
        negatable: false,
    },
    OptSpec {
        names: &["del-set"],
        value: Value::Two("a set's name and src|dst[,src|dst]"),
        negatable: false,
    },
    OptSpec {
        names: &["exist"],
        value: Value::None,
        negatable: false,
    },
    OptSpec {
        names: &["timeout"],
        value: Value::One("seconds, like 600"),
        negatable: false,
    },
    OptSpec {
        names: &["map-set"],
        value: Value::Two("a set's name and src|dst[,src|dst]"),
        negatable: false,
    },
];

const ALL_TABLES: &[TableName] = &[
    TableName::Filter,
    TableName::Nat,
    TableName::Raw,
    TableName::Mangle,
];

pub static MODULE: TargetModule = TargetModule {
    name: "SET",
    options: &OPTIONS,
    example: "-p tcp --dport 23 -j SET --add-set scanners src",
    parser: || Box::new(SetParser::default()),
    // Counted and passed over as a rule without a target: its work is its
    // last guard's.
    code: code::NONE,
    tables: ALL_TABLES,
    chains: None,
    chain_reason: "",
    save: |target, out| match target {
        Target::Set(s) => save(s, out),
        _ => unreachable!("the SET module saves SET"),
    },
    list: |target, out, _| match target {
        Target::Set(s) => list(s, out),
        _ => unreachable!("the SET module lists SET"),
    },
    suggest: no_suggestion,
    hidden: false,
    // Not drawn: what it does lies in the sets, which the models do not
    // hold; tests/program.rs and tests/ipset.rs test it through the kernel.
    random: Random::NEVER,
};

/// As iptables-save prints it: the sets, then `--exist`, `--timeout`.
fn save(s: &SetTarget, out: &mut String) {
    out.push_str(" -j SET");
    if let Some(add) = &s.add {
        let _ = write!(out, " --add-set {} {}", add.name, add.directions());
    }
    if let Some(del) = &s.del {
        let _ = write!(out, " --del-set {} {}", del.name, del.directions());
    }
    if s.exist {
        out.push_str(" --exist");
    }
    if let Some(t) = s.timeout {
        let _ = write!(out, " --timeout {t}");
    }
}

/// `-L`'s last column, as libxt_SET prints it (`add-set foo src exist
/// timeout 10`).
fn list(s: &SetTarget, out: &mut String) {
    if let Some(add) = &s.add {
        let _ = write!(out, " add-set {} {}", add.name, add.directions());
    }
    if let Some(del) = &s.del {
        let _ = write!(out, " del-set {} {}", del.name, del.directions());
    }
    if s.exist {
        out.push_str(" exist");
    }
    if let Some(t) = s.timeout {
        let _ = write!(out, " timeout {t}");
    }
}

#[derive(Clone, Debug, Default)]
struct SetParser {
    add: Option<SetRef>,
    del: Option<SetRef>,
    exist: bool,
    timeout: Option<u32>,
}

impl TargetParser for SetParser {
    fn check_repeat(&self, option: &'static OptSpec) -> Result<(), ParseError> {
        let given = match option.name() {
            "add-set" => self.add.is_some(),
            "del-set" => self.del.is_some(),
            "exist" => self.exist,
            "timeout" => self.timeout.is_some(),
            _ => false,
        };
        if given {
            return Err(ParseError::RepeatedTargetOption {
                target: "SET",
                option: option.flag(),
                hint: "",
            });
        }
        Ok(())
    }

    fn option(&mut self, option: &'static OptSpec, values: &[&str]) -> Result<(), ParseError> {
        let flag = option.flag();
        match option.name() {
            "add-set" | "del-set" => {
                let name = parse_set_name(&flag, values[0])?;
                let dst = parse_directions(&flag, values[1])?;
                let set = Some(SetRef { name, dst });
                if option.name() == "add-set" {
                    self.add = set;
                } else {
                    self.del = set;
                }
            }
            "exist" => self.exist = true,
            "timeout" => {
                let text = values[0];
                let t = text
                    .parse::<u32>()
                    .ok()
                    .filter(|&t| t <= MAX_TIMEOUT)
                    .ok_or_else(|| {
                        invalid(
                            &flag,
                            "timeout",
                            text,
                            format!("expected seconds from 0 to {MAX_TIMEOUT}"),
                        )
                    })?;
                self.timeout = Some(t);
            }
            _ => {
                return Err(ParseError::Unsupported {
                    what: "-j SET --map-set".into(),
                    hint: "; it writes the packet's mark, priority or queue from the set's \
                           skbinfo, and netbeast's sets have no skbinfo yet"
                        .into(),
                });
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Target, ParseError> {
        if self.add.is_none() && self.del.is_none() {
            return Err(ParseError::MissingTargetOption {
                target: "SET",
                option: "--add-set or --del-set",
                example: "; e.g. -j SET --add-set scanners src",
            });
        }
        // libxt_SET's own checks: both options belong to the add set.
        for (given, what) in [
            (self.exist, "--exist"),
            (self.timeout.is_some(), "--timeout"),
        ] {
            if given && self.add.is_none() {
                return Err(ParseError::IllegalOption {
                    option: what.to_string(),
                    command: "-j SET without --add-set".into(),
                    reason: "it applies to the members --add-set adds (as in iptables)",
                });
            }
        }
        check_placement(&MODULE, rule)?;
        if rule.table != TableName::Filter {
            return Err(ParseError::Unsupported {
                what: format!("-j SET in the {} table", rule.table.as_str()),
                hint: "; netbeast writes ipsets from the filter table only".into(),
            });
        }
        Ok(Target::Set(SetTarget {
            add: self.add,
            del: self.del,
            exist: self.exist,
            timeout: self.timeout,
            v6: rule.family == Family::V6,
        }))
    }

    fn boxed_clone(&self) -> Box<dyn TargetParser> {
        Box::new(self.clone())
    }
}
