//! `-m multiport --sports|--dports|--ports LIST` (libxt_multiport): up to
//! 15 ports or ranges.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::tcp::port_range_text;
use super::{MatchExt, bang};
use crate::compile::PacketView;
use crate::rules::model::{MultiportKind, PortRange};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Multiport {
    pub kind: MultiportKind,
    pub negated: bool,
    pub ports: Vec<PortRange>,
}

/// `22,80,1000:2000`.
pub fn port_list_text(ports: &[PortRange]) -> String {
    ports
        .iter()
        .map(|p| port_range_text(*p))
        .collect::<Vec<_>>()
        .join(",")
}

impl MatchExt for Multiport {
    fn save(&self, out: &mut String) {
        let flag = match self.kind {
            MultiportKind::Source => "--sports",
            MultiportKind::Destination => "--dports",
            MultiportKind::Either => "--ports",
        };
        let _ = write!(
            out,
            " -m multiport{} {flag} {}",
            bang(self.negated),
            port_list_text(&self.ports)
        );
    }

    fn list(&self, out: &mut String, _numeric: bool) {
        let kind = match self.kind {
            MultiportKind::Source => "sports",
            MultiportKind::Destination => "dports",
            MultiportKind::Either => "ports",
        };
        let bang = if self.negated { " !" } else { "" };
        let _ = write!(
            out,
            " multiport {kind} {bang}{}",
            port_list_text(&self.ports)
        );
    }

    fn matches(&self, pkt: &PacketView) -> bool {
        let Some((s, d)) = pkt.ports() else {
            return false;
        };
        let hit = self.ports.iter().any(|r| match self.kind {
            MultiportKind::Source => r.contains(s),
            MultiportKind::Destination => r.contains(d),
            MultiportKind::Either => r.contains(s) || r.contains(d),
        });
        hit != self.negated
    }
}
