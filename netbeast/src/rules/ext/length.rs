//! `-m length --length min[:max]`: the IPv4 total length (xt_length).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::bang;
use crate::compile::PacketView;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Length {
    pub negated: bool,
    pub min: u16,
    pub max: u16,
}

impl Length {
    pub fn save(&self, out: &mut String) {
        let _ = write!(
            out,
            " -m length{} --length {}",
            bang(self.negated),
            self.range()
        );
    }

    pub fn list(&self, out: &mut String) {
        let bang = if self.negated { "!" } else { "" };
        let _ = write!(out, " length {bang}{}", self.range());
    }

    fn range(&self) -> String {
        if self.min == self.max {
            self.min.to_string()
        } else {
            format!("{}:{}", self.min, self.max)
        }
    }

    pub fn matches(&self, pkt: &PacketView) -> bool {
        (self.min..=self.max).contains(&pkt.header.length) != self.negated
    }
}
