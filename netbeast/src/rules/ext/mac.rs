//! `-m mac --mac-source ADDRESS` (libxt_mac): the source MAC, known only
//! on arrival (PREROUTING, INPUT, FORWARD).

use crate::compile::lower::{Atom, Lowering};
use crate::rules::generate::{Dice, Random, Scope};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, bang, missing, once};
use crate::compile::PacketView;
use crate::rules::model::{Match, Negatable};
use crate::rules::parse::{ParseError, invalid};

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

    fn lower(&self) -> Lowering {
        Lowering::all(vec![Atom::Mac(self.0.value, self.0.negated)])
    }
}

static OPTIONS: [OptSpec; 1] = [OptSpec {
    names: &["mac-source"],
    value: Value::One("a MAC address like aa:bb:cc:dd:ee:ff"),
    negatable: true,
}];

pub static MODULE: MatchModule = MatchModule {
    name: "mac",
    family: None,
    options: &OPTIONS,
    example: "e.g. -m mac --mac-source aa:bb:cc:dd:ee:ff",
    parser: || Box::<MacParser>::default(),
    implicit_protocol: None,
    random: Random {
        weight: 2,
        draw: random,
    },
};

#[derive(Debug, Default)]
struct MacParser(Option<MacSource>);

fn parse_mac(text: &str) -> Result<[u8; 6], ParseError> {
    let bad = || {
        invalid(
            "--mac-source",
            "MAC address",
            text,
            "expected six hex bytes like aa:bb:cc:dd:ee:ff",
        )
    };
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        if part.is_empty() || part.len() > 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    Ok(mac)
}

impl MatchParser for MacParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        values: &[&str],
    ) -> Result<(), ParseError> {
        let value = parse_mac(values[0])?;
        once(&mut self.0, MacSource(Negatable { negated, value }), option)
    }

    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Match, ParseError> {
        let mac = self.0.ok_or_else(|| missing(&MODULE, "--mac-source"))?;
        // User-defined chains may hold it; jumping to them from OUTPUT is
        // refused when the ruleset is checked (as the kernel does).
        if matches!(rule.chain, "OUTPUT" | "POSTROUTING") {
            return Err(ParseError::WrongChain {
                option: "-m mac".into(),
                chain: rule.chain.into(),
                reason: "a packet's source MAC is only known on arrival, in INPUT or FORWARD",
            });
        }
        Ok(Match::MacSource(mac))
    }
}

/// Only where packets have a source MAC (not reached from OUTPUT or
/// POSTROUTING).
fn random(d: &mut Dice, s: &Scope) -> Option<Match> {
    if !s.has_mac() {
        return None;
    }
    let mac = if d.wild(s.palette) {
        let n = d.next().to_be_bytes();
        [n[0], n[1], n[2], n[3], n[4], n[5]]
    } else {
        d.pick(s.palette.macs)
    };
    Some(Match::MacSource(MacSource(d.negatable(s.palette, mac))))
}
