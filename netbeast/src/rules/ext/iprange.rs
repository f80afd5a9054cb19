//! `-m iprange --src-range A-B --dst-range A-B` (each `!`-able): address
//! ranges (xt_iprange).

use super::{
    MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, missing, once, value,
};
use crate::rules::model::Match;
use crate::rules::parse::{ParseError, invalid, parse_dotted};
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

impl MatchExt for IpRange {
    fn save(&self, out: &mut String) {
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

    fn list(&self, out: &mut String, _numeric: bool) {
        for (range, what) in [(&self.src, "source"), (&self.dst, "destination")] {
            // libxt_iprange: `destination IP range ! A-B`.
            if let Some(r) = range {
                let _ = write!(
                    out,
                    " {what} IP range{} {}-{}",
                    bang(r.negated),
                    r.value.first,
                    r.value.last
                );
            }
        }
    }

    fn matches(&self, pkt: &PacketView) -> bool {
        let within = |range: &Option<Negatable<AddrRange>>, addr| match range {
            None => true,
            Some(r) => (r.value.first <= addr && addr <= r.value.last) != r.negated,
        };
        within(&self.src, pkt.src) && within(&self.dst, pkt.dst)
    }
}

static OPTIONS: [OptSpec; 2] = [
    OptSpec {
        names: &["src-range"],
        value: Value::One("an address range like 10.0.0.1-10.0.0.9"),
        negatable: true,
    },
    OptSpec {
        names: &["dst-range"],
        value: Value::One("an address range like 10.0.0.1-10.0.0.9"),
        negatable: true,
    },
];

pub static MODULE: MatchModule = MatchModule {
    name: "iprange",
    options: &OPTIONS,
    example: "e.g. -m iprange --src-range 10.0.0.1-10.0.0.9",
    implicit_protocol: None,
    parser: || Box::<IpRangeParser>::default(),
};

#[derive(Debug, Default)]
struct IpRangeParser {
    src: Option<Negatable<AddrRange>>,
    dst: Option<Negatable<AddrRange>>,
}

/// `first-last`, or one address (a range of one), as xt_iprange reads it.
fn parse_range(option: &OptSpec, text: &str) -> Result<AddrRange, ParseError> {
    let addr = |part: &str| {
        parse_dotted(part, false).ok_or_else(|| {
            invalid(
                &option.flag(),
                "address range",
                text,
                "expected first-last IPv4 addresses like 10.0.0.1-10.0.0.9",
            )
        })
    };
    let (first, last) = match text.split_once('-') {
        Some((first, last)) => (addr(first)?, addr(last)?),
        None => (addr(text)?, addr(text)?),
    };
    // A reversed range is taken, as iptables takes it: it never matches
    // (or, negated, always does).
    Ok(AddrRange { first, last })
}

impl MatchParser for IpRangeParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        text: &[&str],
    ) -> Result<(), ParseError> {
        let range = Negatable {
            negated,
            value: parse_range(option, value(option, text))?,
        };
        let slot = if option.name() == "src-range" {
            &mut self.src
        } else {
            &mut self.dst
        };
        once(slot, range, option)
    }

    fn finish(self: Box<Self>, _: &RuleContext) -> Result<Match, ParseError> {
        if self.src.is_none() && self.dst.is_none() {
            return Err(missing(&MODULE, "--src-range or --dst-range"));
        }
        Ok(Match::IpRange(IpRange {
            src: self.src,
            dst: self.dst,
        }))
    }
}
