//! `-m ipv6header --header LIST [--soft]` (`!`; libip6t_ipv6header,
//! ip6tables only): which extension headers the packet has, and what ends
//! its chain (no next header, ESP, or an upper-layer protocol). Without
//! `--soft` the set must be exactly the list; with it, each listed header
//! must be there (none of them with `!`).
//!
//! A guard on the packet (`guard_kind::IPV6_HEADER`): the IPv6 parser
//! gathers the headers' bits as ip6t_ipv6header does; the test is
//! `Guard::holds_ipv6_header`, shared with the kernel. A later fragment's
//! chain ends, for netbeast, with what its fragment header names (the
//! kernel would read the fragment's payload as headers).

use std::fmt::Write as _;

use netbeast_common::{Guard, guard_kind, ipv6_mask};
use serde::{Deserialize, Serialize};

use super::{
    MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, bang, missing, value,
};
use crate::compile::PacketView;
use crate::compile::lower::Lowering;
use crate::rules::generate::{Dice, Random, Scope};
use crate::rules::model::{Family, Match};
use crate::rules::parse::{ParseError, invalid};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv6Header {
    pub negated: bool,
    /// The listed headers (`ipv6_mask::*`).
    pub headers: u8,
    pub soft: bool,
}

/// The header bits in libip6t_ipv6header's order, with the protocol
/// number behind each and the name `-S`/`-L` print (this machine's
/// /etc/protocols names, as ip6tables looks them up).
const HEADERS: [(u8, u8, &str); 8] = [
    (ipv6_mask::HOPOPTS, 0, "hop-by-hop"),
    (ipv6_mask::DSTOPTS, 60, "ipv6-opts"),
    (ipv6_mask::ROUTING, 43, "ipv6-route"),
    (ipv6_mask::FRAGMENT, 44, "ipv6-frag"),
    (ipv6_mask::AH, 51, "ah"),
    (ipv6_mask::ESP, 50, "esp"),
    (ipv6_mask::NONE, 59, "ipv6-nonxt"),
    (ipv6_mask::PROTO, 255, "protocol"),
];

/// libip6t_ipv6header's own names (and numbers) beside the protocol
/// names.
const OWN_NAMES: [(&str, u8); 18] = [
    ("hop-by-hop", 0),
    ("protocol", 255),
    ("hop", 0),
    ("dst", 60),
    ("route", 43),
    ("frag", 44),
    ("auth", 51),
    ("esp", 50),
    ("none", 59),
    ("prot", 255),
    ("0", 0),
    ("60", 60),
    ("43", 43),
    ("44", 44),
    ("51", 51),
    ("50", 50),
    ("59", 59),
    ("255", 255),
];

impl Ipv6Header {
    fn guard(&self) -> Guard {
        Guard {
            kind: guard_kind::IPV6_HEADER,
            a: u64::from(self.headers),
            b: if self.negated { 0xff } else { 0 },
            c: u64::from(self.soft),
            ..Guard::default()
        }
    }

    fn names(&self) -> String {
        HEADERS
            .iter()
            .filter(|(bit, ..)| self.headers & bit != 0)
            .map(|(.., name)| *name)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl MatchExt for Ipv6Header {
    fn save(&self, out: &mut String) {
        let _ = write!(
            out,
            " -m ipv6header{} --header {}",
            bang(self.negated),
            self.names()
        );
        if self.soft {
            out.push_str(" --soft");
        }
    }

    /// ` ipv6header flags:!ipv6-nonxt soft`, numerically `flags:!0x02`.
    fn list(&self, out: &mut String, numeric: bool) {
        out.push_str(" ipv6header");
        let _ = write!(out, " flags:{}", if self.negated { "!" } else { "" });
        if numeric {
            let _ = write!(out, "0x{:02X}", self.headers);
        } else {
            out.push_str(&self.names());
        }
        if self.soft {
            out.push_str(" soft");
        }
    }

    fn matches(&self, pkt: &PacketView) -> bool {
        pkt.addr6.is_some() && self.guard().holds_ipv6_header(&pkt.header.ipv6_ext)
    }

    fn lower(&self) -> Lowering {
        Lowering::Guarded(vec![Vec::new()], vec![self.guard()])
    }
}

static OPTIONS: [OptSpec; 2] = [
    OptSpec {
        names: &["header"],
        value: Value::One("headers like hop-by-hop,ipv6-route,protocol"),
        negatable: true,
    },
    OptSpec {
        names: &["soft"],
        value: Value::None,
        negatable: false,
    },
];

pub static MODULE: MatchModule = MatchModule {
    name: "ipv6header",
    family: Some(Family::V6),
    options: &OPTIONS,
    example: "e.g. -m ipv6header --header ipv6-route --soft",
    implicit_protocol: None,
    parser: || Box::<Ipv6HeaderParser>::default(),
    random: Random {
        weight: 1,
        draw: random,
    },
};

#[derive(Debug, Default)]
struct Ipv6HeaderParser {
    header: Option<(bool, u8)>,
    soft: bool,
}

/// One name of `--header`: its bit.
fn header_bit(option: &OptSpec, name: &str) -> Result<u8, ParseError> {
    let number = OWN_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| *p)
        .or_else(|| {
            // A protocol name, not a number (ip6tables looks names up).
            (!name.starts_with(|c: char| c.is_ascii_digit()))
                .then(|| crate::rules::parse::parse_protocol(name).ok())
                .flatten()
        });
    number
        .and_then(|p| HEADERS.iter().find(|(_, n, _)| *n == p))
        .map(|(bit, ..)| *bit)
        .ok_or_else(|| {
            invalid(
                &option.flag(),
                "header",
                name,
                "use hop-by-hop, ipv6-opts (dst), ipv6-route (route), ipv6-frag (frag), \
                 ah (auth), esp, ipv6-nonxt (none) or protocol (prot)",
            )
        })
}

impl MatchParser for Ipv6HeaderParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        values: &[&str],
    ) -> Result<(), ParseError> {
        if option.name() == "soft" {
            if self.soft {
                return Err(ParseError::Repeated {
                    option: option.flag(),
                    hint: "",
                });
            }
            self.soft = true;
            return Ok(());
        }
        let mut bits = 0;
        for name in value(option, values).split(',') {
            bits |= header_bit(option, name)?;
        }
        super::once(&mut self.header, (negated, bits), option)
    }

    fn finish(self: Box<Self>, _: &RuleContext) -> Result<Match, ParseError> {
        let (negated, headers) = self.header.ok_or_else(|| missing(&MODULE, "--header"))?;
        Ok(Match::Ipv6Header(Ipv6Header {
            negated,
            headers,
            soft: self.soft,
        }))
    }
}

/// Drawn for ip6tables rulesets (the differential harness's IPv6 mode).
fn random(d: &mut Dice, _: &Scope) -> Option<Match> {
    // One to three of the headers (`protocol` among them), exact or soft.
    let mut headers = 0;
    for _ in 0..1 + d.below(3) {
        headers |= d.pick(&HEADERS).0;
    }
    Some(Match::Ipv6Header(Ipv6Header {
        negated: d.chance(25),
        headers,
        soft: d.chance(50),
    }))
}
