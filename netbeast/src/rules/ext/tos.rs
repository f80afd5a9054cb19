//! `-m tos --tos value[/mask]` or a name: the IPv4 TOS byte (xt_tos,
//! revision 1: `(tos & mask) == value`).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::bang;
use crate::compile::PacketView;

/// The symbolic values iptables accepts; each stands for `value/0x3f`.
pub const NAMES: &[(&str, u8)] = &[
    ("Minimize-Cost", 0x02),
    ("Maximize-Reliability", 0x04),
    ("Maximize-Throughput", 0x08),
    ("Minimize-Delay", 0x10),
    ("Normal-Service", 0x00),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tos {
    pub negated: bool,
    pub value: u8,
    pub mask: u8,
}

impl Tos {
    pub fn save(&self, out: &mut String) {
        let _ = write!(
            out,
            " -m tos{} --tos 0x{:02x}/0x{:02x}",
            bang(self.negated),
            self.value,
            self.mask
        );
    }

    pub fn list(&self, out: &mut String, numeric: bool) {
        out.push_str(" tos match");
        if self.negated {
            out.push('!');
        }
        let symbolic = (!numeric && self.mask == 0x3f)
            .then(|| NAMES.iter().find(|(_, v)| *v == self.value))
            .flatten();
        match symbolic {
            Some((name, _)) => {
                let _ = write!(out, "{name}");
            }
            None => {
                let _ = write!(out, "0x{:02x}/0x{:02x}", self.value, self.mask);
            }
        }
    }

    pub fn matches(&self, pkt: &PacketView) -> bool {
        (pkt.header.tos & self.mask == self.value) != self.negated
    }
}
