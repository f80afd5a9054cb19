//! `-m iprange --src-range A-B --dst-range A-B` (each `!`-able): address
//! ranges (xt_iprange).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::bang;
use crate::compile::PacketView;
use crate::rules::model::{AddrRange, Negatable};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpRange {
    pub src: Option<Negatable<AddrRange>>,
    pub dst: Option<Negatable<AddrRange>>,
}

impl IpRange {
    pub fn save(&self, out: &mut String) {
        out.push_str(" -m iprange");
        for (range, option) in [(&self.src, "--src-range"), (&self.dst, "--dst-range")] {
            if let Some(r) = range {
                let _ = write!(
                    out,
                    "{} {option} {}-{}",
                    bang(r.negated),
                    r.value.first,
                    r.value.last
                );
            }
        }
    }

    pub fn list(&self, out: &mut String) {
        for (range, what) in [(&self.src, "source"), (&self.dst, "destination")] {
            if let Some(r) = range {
                let _ = write!(
                    out,
                    "{} {what} IP range {}-{}",
                    bang(r.negated),
                    r.value.first,
                    r.value.last
                );
            }
        }
    }

    pub fn matches(&self, pkt: &PacketView) -> bool {
        let within = |range: &Option<Negatable<AddrRange>>, addr| match range {
            None => true,
            Some(r) => (r.value.first <= addr && addr <= r.value.last) != r.negated,
        };
        within(&self.src, pkt.src) && within(&self.dst, pkt.dst)
    }
}
