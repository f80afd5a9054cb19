//! `-m mac --mac-source ADDRESS` (libxt_mac): the source MAC, known only
//! on arrival (PREROUTING, INPUT, FORWARD).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{MatchExt, bang};
use crate::compile::PacketView;
use crate::rules::model::Negatable;

/// Serialized as its inner value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacSource(pub Negatable<[u8; 6]>);

/// Lower case, as iptables 1.8 prints MAC addresses.
pub fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl MatchExt for MacSource {
    fn save(&self, out: &mut String) {
        let _ = write!(
            out,
            " -m mac{} --mac-source {}",
            bang(self.0.negated),
            mac_text(&self.0.value)
        );
    }

    fn list(&self, out: &mut String, _numeric: bool) {
        let bang = if self.0.negated { "! " } else { "" };
        let _ = write!(out, " MAC {bang}{}", mac_text(&self.0.value));
    }

    fn matches(&self, pkt: &PacketView) -> bool {
        (self.0.value == pkt.mac_source) != self.0.negated
    }
}
