//! `-m state --state LIST` (libxt_state) and `-m conntrack --ctstate LIST`
//! (libxt_conntrack): the packet's connection tracking state.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{MatchExt, bang};
use crate::compile::PacketView;
use crate::rules::model::{CtStates, StateModule};

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
}
