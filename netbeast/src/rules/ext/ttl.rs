//! `-m ttl --ttl-eq|--ttl-lt|--ttl-gt N` (`! --ttl-eq`): the IPv4 TTL
//! (ipt_ttl).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::compile::PacketView;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TtlOp {
    /// `--ttl-eq N`
    Eq,
    /// `! --ttl-eq N`
    Ne,
    /// `--ttl-lt N`
    Lt,
    /// `--ttl-gt N`
    Gt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ttl {
    pub op: TtlOp,
    pub value: u8,
}

impl Ttl {
    pub fn save(&self, out: &mut String) {
        let option = match self.op {
            TtlOp::Eq => " --ttl-eq",
            TtlOp::Ne => " ! --ttl-eq",
            TtlOp::Lt => " --ttl-lt",
            TtlOp::Gt => " --ttl-gt",
        };
        let _ = write!(out, " -m ttl{option} {}", self.value);
    }

    pub fn list(&self, out: &mut String) {
        let op = match self.op {
            TtlOp::Eq => "==",
            TtlOp::Ne => "!=",
            TtlOp::Lt => "<",
            TtlOp::Gt => ">",
        };
        let _ = write!(out, " TTL match TTL {op} {}", self.value);
    }

    pub fn matches(&self, pkt: &PacketView) -> bool {
        let ttl = pkt.header.ttl;
        match self.op {
            TtlOp::Eq => ttl == self.value,
            TtlOp::Ne => ttl != self.value,
            TtlOp::Lt => ttl < self.value,
            TtlOp::Gt => ttl > self.value,
        }
    }
}
