//! `-m addrtype --src-type T[,T...] --dst-type T[,T...]` (each `!`-able,
//! with `--limit-iface-in/out`): the type the kernel's local routing table
//! gives an address (xt_addrtype, revision 1).

use std::fmt::Write as _;

use netbeast_common::addr_type;
use serde::{Deserialize, Serialize};

use super::bang;
use crate::compile::PacketView;
use crate::rules::model::Negatable;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrType {
    /// A mask of `1 << addr_type::*`.
    pub src: Option<Negatable<u16>>,
    pub dst: Option<Negatable<u16>>,
    pub limit_iface_in: bool,
    pub limit_iface_out: bool,
}

/// `LOCAL,UNICAST`: the names of a mask's types, in type order.
pub fn types_text(mask: u16) -> String {
    addr_type::NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

impl AddrType {
    pub fn save(&self, out: &mut String) {
        out.push_str(" -m addrtype");
        for (types, option) in [(&self.src, "--src-type"), (&self.dst, "--dst-type")] {
            if let Some(t) = types {
                let _ = write!(out, "{} {option} {}", bang(t.negated), types_text(t.value));
            }
        }
        if self.limit_iface_in {
            out.push_str(" --limit-iface-in");
        }
        if self.limit_iface_out {
            out.push_str(" --limit-iface-out");
        }
    }

    pub fn list(&self, out: &mut String) {
        out.push_str(" ADDRTYPE match");
        for (types, what) in [(&self.src, "src-type"), (&self.dst, "dst-type")] {
            if let Some(t) = types {
                let bang = if t.negated { "!" } else { "" };
                let _ = write!(out, " {what} {bang}{}", types_text(t.value));
            }
        }
        if self.limit_iface_in {
            out.push_str(" limit-in");
        }
        if self.limit_iface_out {
            out.push_str(" limit-out");
        }
    }

    pub fn matches(&self, pkt: &PacketView) -> bool {
        let holds = |types: &Option<Negatable<u16>>, of: u32| match types {
            None => true,
            Some(t) => (t.value & (1 << of) != 0) != t.negated,
        };
        holds(&self.src, pkt.header.src_type) && holds(&self.dst, pkt.header.dst_type)
    }
}
