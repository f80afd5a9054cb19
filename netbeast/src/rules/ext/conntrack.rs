//! `-m state --state LIST` (libxt_state) and `-m conntrack --ctstate LIST`
//! (libxt_conntrack): the packet's connection tracking state.

use crate::compile::lower::{Atom, Lowering, keys_where};
use netbeast_common::field;
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
    pub negated: bool,
    pub states: CtStates,
}

impl MatchExt for ConnState {
    fn save(&self, out: &mut String) {
        let (name, flag) = match self.module {
            StateModule::State => ("state", "--state"),
            StateModule::Conntrack => ("conntrack", "--ctstate"),
        };
        let _ = write!(
            out,
            " -m {name}{} {flag} {}",
            bang(self.negated),
            self.states.text()
        );
    }

    fn list(&self, out: &mut String, _numeric: bool) {
        let name = match self.module {
            StateModule::State => "state",
            StateModule::Conntrack => "ctstate",
        };
        // libxt_conntrack prints the `!` before the name: "! ctstate NEW".
        let bang = if self.negated { "! " } else { "" };
        let _ = write!(out, " {bang}{name} {}", self.states.text());
    }

    fn matches(&self, pkt: &PacketView) -> bool {
        self.states.contains(pkt.ct_state) != self.negated
    }

    fn lower(&self) -> Lowering {
        let mask = self.states.0;
        Lowering::all(vec![Atom::Keys(
            field::CT_STATE,
            keys_where(field::CT_STATE, |k| (mask & (1 << k) != 0) != self.negated),
        )])
    }
}

const STATES: &str = "a list of states like ESTABLISHED,RELATED";

static STATE_OPTIONS: [OptSpec; 1] = [OptSpec {
    names: &["state"],
    value: Value::One(STATES),
    negatable: true,
}];

/// libxt_conntrack's options: only `--ctstate` is implemented, the others
/// are known so that they get a clear "not supported yet".
static CONNTRACK_OPTIONS: [OptSpec; 13] = [
    OptSpec {
        names: &["ctstate"],
        value: Value::One(STATES),
        negatable: true,
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
    unsupported(&["ctstatus"]),
    unsupported(&["ctexpire"]),
    unsupported(&["ctdir"]),
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
};

pub static CONNTRACK: MatchModule = MatchModule {
    name: "conntrack",
    options: &CONNTRACK_OPTIONS,
    example: "e.g. -m conntrack --ctstate ESTABLISHED,RELATED",
    parser: || Box::new(ConnStateParser::new(StateModule::Conntrack)),
    implicit_protocol: None,
};

#[derive(Debug)]
struct ConnStateParser {
    module: StateModule,
    states: Option<(bool, CtStates)>,
}

impl ConnStateParser {
    fn new(module: StateModule) -> Self {
        ConnStateParser {
            module,
            states: None,
        }
    }
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
        let reason = match (upper.as_str(), module) {
            ("", _) => "a state is missing; list states with commas and no spaces, like ESTABLISHED,RELATED".to_string(),
            ("SNAT" | "DNAT", StateModule::Conntrack) => {
                return Err(ParseError::Unsupported {
                    what: format!("the {upper} connection state ({option} {upper})"),
                    hint: "; netbeast matches INVALID, NEW, ESTABLISHED, RELATED and UNTRACKED (whether a \
                           connection was translated is not matched yet)"
                        .into(),
                });
            }
            ("SNAT" | "DNAT", StateModule::State) => format!(
                "{upper} is a state of -m conntrack --ctstate; -m state knows INVALID, NEW, ESTABLISHED, RELATED and UNTRACKED"
            ),
            _ => "the states are INVALID, NEW, ESTABLISHED, RELATED and UNTRACKED".to_string(),
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
        if !matches!(option.name(), "state" | "ctstate") {
            return Err(ParseError::Unsupported {
                what: format!("{} (-m conntrack)", option.flag()),
                hint: "; netbeast matches the connection state only: -m conntrack --ctstate LIST"
                    .into(),
            });
        }
        let value = parse_ct_states(&option.flag(), self.module, values[0])?;
        if self.states.is_some() {
            return Err(ParseError::Repeated {
                option: option.flag(),
                hint: "; list the states with commas",
            });
        }
        self.states = Some((negated, value));
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
        let (negated, states) = self.states.ok_or_else(|| missing(module, option))?;
        Ok(Match::ConnState(ConnState {
            module: self.module,
            negated,
            states,
        }))
    }
}
