//! `-m state --state LIST` (libxt_state) and `-m conntrack` (libxt_conntrack):
//! the packet's connection tracking state (`--ctstate`, with SNAT and DNAT),
//! its direction (`--ctdir`) and its connection's status (`--ctstatus`).
//! All three are bits of one classifier key, the connection key
//! (`ct_state::*`), which the kernel's pipeline fills from conntrack before
//! every chain.

use crate::compile::lower::{Atom, Lowering, keys_where};
use crate::rules::generate::{Dice, Random, Scope};
use netbeast_common::{ct_state, field};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, bang, missing};
use crate::compile::PacketView;
use crate::rules::model::{CtStates, Match, StateModule};
use crate::rules::parse::{ParseError, invalid};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnState {
    /// Which module it was written with, so it prints back the same way.
    pub module: StateModule,
    /// `! --ctstate`.
    pub negated: bool,
    /// `--ctstate` / `--state`; empty when the match has none (`-m
    /// conntrack --ctdir REPLY`).
    pub states: CtStates,
    /// `--ctdir`: `Some(true)` for REPLY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<bool>,
    /// `[!] --ctstatus`: (negated, mask of the kernel's `IPS_*` bits,
    /// [`STATUSES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<(bool, u8)>,
}

/// `--ctstatus` names and their `IPS_*` bits, in the order iptables
/// prints them (NONE, mask 0, prints when no other does).
pub const STATUSES: [(&str, u8); 4] = [
    ("EXPECTED", 1),
    ("SEEN_REPLY", 2),
    ("ASSURED", 4),
    ("CONFIRMED", 8),
];

fn status_text(mask: u8) -> String {
    if mask == 0 {
        return "NONE".to_string();
    }
    STATUSES
        .iter()
        .filter(|(_, b)| mask & b != 0)
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

impl ConnState {
    /// A `-m state --state` / `-m conntrack --ctstate` match of `states`.
    pub fn states(module: StateModule, negated: bool, states: CtStates) -> Self {
        ConnState {
            module,
            negated,
            states,
            dir: None,
            status: None,
        }
    }

    /// Whether a packet with connection key `key` (`ct_state`'s layout)
    /// meets the match, as xt_conntrack decides: the state test (the
    /// connection's SNAT/DNAT count as states too); then, for a packet
    /// without a connection (INVALID, UNTRACKED), nothing else is tested
    /// and the match holds only if it has a state test; else direction and
    /// status.
    pub fn holds_key(&self, key: u32) -> bool {
        let state = key & ct_state::STATE_MASK;
        if state > ct_state::UNTRACKED {
            return false;
        }
        let has_connection = matches!(
            state,
            ct_state::NEW | ct_state::ESTABLISHED | ct_state::RELATED
        );
        let has_states = self.states.0 != 0;
        if has_states {
            let mut bits = 1u8 << state;
            if has_connection && key & ct_state::SNAT != 0 {
                bits |= CtStates::SNAT;
            }
            if has_connection && key & ct_state::DNAT != 0 {
                bits |= CtStates::DNAT;
            }
            if (self.states.0 & bits != 0) == self.negated {
                return false;
            }
        }
        if !has_connection {
            return has_states;
        }
        if let Some(reply) = self.dir
            && (key & ct_state::REPLY != 0) != reply
        {
            return false;
        }
        if let Some((negated, mask)) = self.status {
            let status = (((key >> ct_state::STATUS_SHIFT) & 7) << 1) as u8;
            if (status & mask != 0) == negated {
                return false;
            }
        }
        true
    }
}

impl MatchExt for ConnState {
    fn save(&self, out: &mut String) {
        let (name, flag) = match self.module {
            StateModule::State => ("state", "--state"),
            StateModule::Conntrack => ("conntrack", "--ctstate"),
        };
        let _ = write!(out, " -m {name}");
        self.options(out, flag, "--");
    }

    fn list(&self, out: &mut String, _numeric: bool) {
        let name = match self.module {
            StateModule::State => "state",
            StateModule::Conntrack => "ctstate",
        };
        self.options(out, name, "");
    }

    fn matches(&self, pkt: &PacketView) -> bool {
        self.holds_key(pkt.ct_state)
    }

    fn lower(&self) -> Lowering {
        Lowering::all(vec![Atom::Keys(
            field::CT_STATE,
            keys_where(field::CT_STATE, |k| self.holds_key(k)),
        )])
    }
}

impl ConnState {
    /// The options in libxt_conntrack's order, each with its `!` before it
    /// (`prefix` is `--` for `-S`, nothing for `-L`; `state` the state
    /// option's name).
    fn options(&self, out: &mut String, state: &str, prefix: &str) {
        if self.states.0 != 0 {
            let _ = write!(out, "{} {state} {}", bang(self.negated), self.states.text());
        }
        if let Some((negated, mask)) = self.status {
            let _ = write!(
                out,
                "{} {prefix}ctstatus {}",
                bang(negated),
                status_text(mask)
            );
        }
        if let Some(reply) = self.dir {
            let dir = if reply { "REPLY" } else { "ORIGINAL" };
            let _ = write!(out, " {prefix}ctdir {dir}");
        }
    }
}

const STATES: &str = "a list of states like ESTABLISHED,RELATED";

static STATE_OPTIONS: [OptSpec; 1] = [OptSpec {
    names: &["state"],
    value: Value::One(STATES),
    negatable: true,
}];

/// libxt_conntrack's options: those on the connection's tuple, protocol
/// and expiry are known so that they get a clear "not supported yet".
static CONNTRACK_OPTIONS: [OptSpec; 13] = [
    OptSpec {
        names: &["ctstate"],
        value: Value::One(STATES),
        negatable: true,
    },
    OptSpec {
        names: &["ctstatus"],
        value: Value::One("a list of NONE, EXPECTED, SEEN_REPLY, ASSURED, CONFIRMED"),
        negatable: true,
    },
    OptSpec {
        names: &["ctdir"],
        value: Value::One("ORIGINAL or REPLY"),
        negatable: false,
    },
    unsupported(&["ctproto"]),
    unsupported(&["ctorigsrc"]),
    unsupported(&["ctorigdst"]),
    unsupported(&["ctreplsrc"]),
    unsupported(&["ctrepldst"]),
    unsupported(&["ctorigsrcport"]),
    unsupported(&["ctorigdstport"]),
    unsupported(&["ctreplsrcport"]),
    unsupported(&["ctrepldstport"]),
    unsupported(&["ctexpire"]),
];

const fn unsupported(names: &'static [&'static str]) -> OptSpec {
    OptSpec {
        names,
        value: Value::One("a value"),
        negatable: true,
    }
}

pub static STATE: MatchModule = MatchModule {
    name: "state",
    options: &STATE_OPTIONS,
    example: "e.g. -m state --state ESTABLISHED,RELATED",
    parser: || Box::new(ConnStateParser::new(StateModule::State)),
    implicit_protocol: None,
    random: Random {
        weight: 2,
        draw: |d, s| random(d, s, StateModule::State),
    },
};

pub static CONNTRACK: MatchModule = MatchModule {
    name: "conntrack",
    options: &CONNTRACK_OPTIONS,
    example: "e.g. -m conntrack --ctstate ESTABLISHED,RELATED",
    parser: || Box::new(ConnStateParser::new(StateModule::Conntrack)),
    implicit_protocol: None,
    random: Random {
        weight: 2,
        draw: |d, s| random(d, s, StateModule::Conntrack),
    },
};

#[derive(Debug)]
struct ConnStateParser {
    module: StateModule,
    states: Option<(bool, CtStates)>,
    dir: Option<bool>,
    status: Option<(bool, u8)>,
}

impl ConnStateParser {
    fn new(module: StateModule) -> Self {
        ConnStateParser {
            module,
            states: None,
            dir: None,
            status: None,
        }
    }
}

/// `SEEN_REPLY,ASSURED` (any case) as a mask of `IPS_*` bits.
fn parse_statuses(option: &str, text: &str) -> Result<u8, ParseError> {
    let mut mask = 0;
    for item in text.split(',') {
        let upper = item.to_ascii_uppercase();
        if upper == "NONE" {
            continue;
        }
        match STATUSES.iter().find(|(n, _)| *n == upper) {
            Some((_, bit)) => mask |= bit,
            None => {
                return Err(invalid(
                    option,
                    "status",
                    item,
                    "the statuses are NONE, EXPECTED, SEEN_REPLY, ASSURED and CONFIRMED, \
                     listed with commas",
                ));
            }
        }
    }
    Ok(mask)
}

/// `NEW,ESTABLISHED` (any case).
fn parse_ct_states(option: &str, module: StateModule, text: &str) -> Result<CtStates, ParseError> {
    let mut states = CtStates::default();
    for item in text.split(',') {
        let upper = item.to_ascii_uppercase();
        if let Some((_, state)) = CtStates::NAMES.iter().find(|(n, _)| *n == upper) {
            states = states.with(*state);
            continue;
        }
        if module == StateModule::Conntrack
            && let Some((_, bit)) = CtStates::NAT_NAMES.iter().find(|(n, _)| *n == upper)
        {
            states = CtStates(states.0 | bit);
            continue;
        }
        let reason = match (upper.as_str(), module) {
            ("", _) => "a state is missing; list states with commas and no spaces, like ESTABLISHED,RELATED".to_string(),
            ("SNAT" | "DNAT", _) => format!(
                "{upper} is a state of -m conntrack --ctstate; -m state knows INVALID, NEW, ESTABLISHED, RELATED and UNTRACKED"
            ),
            (_, StateModule::State) => "the states are INVALID, NEW, ESTABLISHED, RELATED and UNTRACKED".to_string(),
            (_, StateModule::Conntrack) => "the states are INVALID, NEW, ESTABLISHED, RELATED, UNTRACKED, SNAT and DNAT".to_string(),
        };
        return Err(invalid(option, "state", item, reason));
    }
    Ok(states)
}

impl MatchParser for ConnStateParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        values: &[&str],
    ) -> Result<(), ParseError> {
        let repeated = || ParseError::Repeated {
            option: option.flag(),
            hint: "; give each option once (list values with commas)",
        };
        match option.name() {
            "state" | "ctstate" => {
                let value = parse_ct_states(&option.flag(), self.module, values[0])?;
                if self.states.is_some() {
                    return Err(repeated());
                }
                self.states = Some((negated, value));
            }
            "ctstatus" => {
                let mask = parse_statuses(&option.flag(), values[0])?;
                if self.status.is_some() {
                    return Err(repeated());
                }
                self.status = Some((negated, mask));
            }
            "ctdir" => {
                let reply = match values[0].to_ascii_uppercase().as_str() {
                    "ORIGINAL" => false,
                    "REPLY" => true,
                    _ => {
                        return Err(invalid(
                            &option.flag(),
                            "direction",
                            values[0],
                            "the directions are ORIGINAL and REPLY",
                        ));
                    }
                };
                if self.dir.is_some() {
                    return Err(repeated());
                }
                self.dir = Some(reply);
            }
            _ => {
                return Err(ParseError::Unsupported {
                    what: format!("{} (-m conntrack)", option.flag()),
                    hint: "; netbeast's -m conntrack matches the state (--ctstate, SNAT and DNAT \
                           included), --ctstatus and --ctdir, not yet the connection's tuple, \
                           protocol or expiry"
                        .into(),
                });
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>, _: &RuleContext) -> Result<Match, ParseError> {
        let module = match self.module {
            StateModule::State => &STATE,
            StateModule::Conntrack => &CONNTRACK,
        };
        let option = match self.module {
            StateModule::State => "--state",
            StateModule::Conntrack => "--ctstate",
        };
        if self.states.is_none() && self.dir.is_none() && self.status.is_none() {
            return Err(missing(module, option));
        }
        let (negated, states) = self.states.unwrap_or_default();
        Ok(Match::ConnState(ConnState {
            module: self.module,
            negated,
            states,
            dir: self.dir,
            status: self.status,
        }))
    }
}

/// A non-empty set of states, sometimes negated; for -m conntrack also
/// SNAT/DNAT among them, `--ctdir` and `--ctstatus`, or those alone.
fn random(d: &mut Dice, _: &Scope, module: StateModule) -> Option<Match> {
    let conntrack = module == StateModule::Conntrack;
    let states = if conntrack && d.chance(20) {
        CtStates(0)
    } else if conntrack {
        CtStates(d.below(127) as u8 + 1)
    } else {
        CtStates((d.below(31) + 1) as u8)
    };
    let dir = (conntrack && d.chance(30)).then(|| d.chance(50));
    let status = (conntrack && d.chance(30)).then(|| (d.chance(25), d.below(16) as u8));
    let (dir, status) = if states.0 == 0 && dir.is_none() && status.is_none() {
        (Some(false), status)
    } else {
        (dir, status)
    };
    Some(Match::ConnState(ConnState {
        module,
        negated: states.0 != 0 && d.chance(25),
        states,
        dir,
        status,
    }))
}
