//! `-m set [!] --match-set NAME src|dst[,src|dst]...`: is the packet's
//! address (and port) a member of the ipset NAME (xt_set, revision 4)?
//! The sets are `netbeast ipset`'s (`cli/ipset.rs`); the kernel's side is
//! `netbeast-ebpf/src/ipset.rs`, a guard: one lookup per match, whatever
//! the set's size.

use crate::rules::generate::{Dice, Random, Scope};

use netbeast_common::{Guard, guard_kind, ipset};
use serde::{Deserialize, Serialize};

use super::{MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value};
use crate::compile::PacketView;
use crate::compile::lower::Lowering;
use crate::rules::model::{Family, Match, TableName};
use crate::rules::parse::{ParseError, invalid};

/// The most directions a match gives (xt_set's `IPSET_DIM_MAX`).
pub const MAX_DIRECTIONS: usize = 6;
/// The longest set name (ipset's `IPSET_MAXNAMELEN` 32, with the NUL).
pub const MAX_NAME_LEN: usize = 31;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetMatch {
    pub name: String,
    /// Per dimension: `true` for dst, `false` for src.
    pub dst: Vec<bool>,
    pub negated: bool,
    /// The rule's family: a set of the other one never matches it.
    #[serde(default)]
    pub v6: bool,
}

/// A set's number in the kernel's keys (FNV-1a of its name, as the
/// recent and hashlimit names).
pub fn name_number(name: &str) -> u32 {
    super::hashlimit::name_number(name)
}

impl SetMatch {
    pub fn guard(&self) -> Guard {
        let mut flags = (self.dst.len() as u32) << ipset::DIMS_SHIFT;
        for (i, &d) in self.dst.iter().enumerate() {
            if d {
                flags |= ipset::DIR_DST << i;
            }
        }
        if self.v6 {
            flags |= ipset::V6;
        }
        Guard {
            kind: guard_kind::SET,
            negated: u32::from(self.negated),
            _pad: flags,
            a: u64::from(name_number(&self.name)),
            ..Guard::default()
        }
    }

    fn directions(&self) -> String {
        self.dst
            .iter()
            .map(|&d| if d { "dst" } else { "src" })
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl MatchExt for SetMatch {
    fn save(&self, out: &mut String) {
        out.push_str(" -m set");
        if self.negated {
            out.push_str(" !");
        }
        out.push_str(&format!(" --match-set {} {}", self.name, self.directions()));
    }

    fn list(&self, out: &mut String, _numeric: bool) {
        if self.negated {
            out.push_str(" !");
        }
        out.push_str(&format!(" match-set {} {}", self.name, self.directions()));
    }

    /// A guard: the set's members are the kernel's, not the rule's.
    fn matches(&self, _pkt: &PacketView) -> bool {
        true
    }

    fn lower(&self) -> Lowering {
        Lowering::Guard(self.guard())
    }
}

static OPTIONS: [OptSpec; 1] = [OptSpec {
    // `--set` is xt_set's older name for it.
    names: &["match-set", "set"],
    value: Value::Two("a set's name and src|dst[,src|dst]"),
    negatable: true,
}];

pub static MODULE: MatchModule = MatchModule {
    name: "set",
    family: None,
    options: &OPTIONS,
    example: "e.g. -m set --match-set blocklist src",
    implicit_protocol: None,
    parser: || Box::<SetParser>::default(),
    // Never drawn: whether it matches depends on the sets' members, which
    // no ruleset holds.
    random: Random {
        weight: 0,
        draw: random,
    },
};

#[derive(Debug, Default)]
struct SetParser {
    set: Option<(String, Vec<bool>, bool)>,
}

impl MatchParser for SetParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        text: &[&str],
    ) -> Result<(), ParseError> {
        let (name, dirs) = (text[0], text[1]);
        if self.set.is_some() {
            return Err(ParseError::Repeated {
                option: option.flag(),
                hint: "",
            });
        }
        let name = parse_set_name("--match-set", name)?;
        let dst = parse_directions("--match-set", dirs)?;
        self.set = Some((name, dst, negated));
        Ok(())
    }

    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Match, ParseError> {
        let Some((name, dst, negated)) = self.set else {
            return Err(super::missing(&MODULE, "--match-set"));
        };
        if rule.table != TableName::Filter {
            return Err(ParseError::Unsupported {
                what: format!("-m set in the {} table", rule.table.as_str()),
                hint: "; netbeast matches ipsets in the filter table only".into(),
            });
        }
        Ok(Match::Set(SetMatch {
            name,
            dst,
            negated,
            v6: rule.family == Family::V6,
        }))
    }
}

/// A set's name as `option` gives it.
pub fn parse_set_name(option: &str, name: &str) -> Result<String, ParseError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(invalid(
            option,
            "set name",
            name,
            format!("expected 1 to {MAX_NAME_LEN} characters"),
        ));
    }
    Ok(name.to_string())
}

/// `src|dst[,src|dst]...` as `option` gives it: per dimension, `true` for
/// dst.
pub fn parse_directions(option: &str, dirs: &str) -> Result<Vec<bool>, ParseError> {
    let mut dst = Vec::new();
    for d in dirs.split(',') {
        dst.push(match d {
            "src" => false,
            "dst" => true,
            _ => {
                return Err(invalid(
                    option,
                    "direction",
                    dirs,
                    "expected src or dst, comma-separated, like src or dst,dst",
                ));
            }
        });
    }
    if dst.len() > MAX_DIRECTIONS {
        return Err(invalid(
            option,
            "direction",
            dirs,
            format!("at most {MAX_DIRECTIONS} directions"),
        ));
    }
    Ok(dst)
}

fn random(_d: &mut Dice, _s: &Scope) -> Option<Match> {
    None
}
