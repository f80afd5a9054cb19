//! `-m dccp` (libxt_dccp, xt_dccp): ports, which it shares with tcp, udp
//! and sctp (`tcp.rs`: `Ports`), and the packet type and option tests,
//! which live here: `[!] --dccp-types TYPE[,TYPE...]` and `[!]
//! --dccp-option N`. Both read the DCCP header beyond the ports, which no
//! classifier key holds: they are one guard (`guard_kind::DCCP`) on what
//! the pipeline reads of the header into the packet's per-CPU slot (only
//! while a rule tests them, `ACTIVE_DCCP`), decided by
//! `Guard::dccp` for the kernel and the models alike.

use std::fmt::Write as _;

use netbeast_common::dccp::{self as common, INVALID, INVALID_TYPES};
use netbeast_common::{Guard, guard_kind};
use serde::{Deserialize, Serialize};

use super::tcp::{DPORT, PortsParser, SPORT, random_ports};
use super::{MatchModule, OptSpec, Value, bang};
use crate::rules::generate::{Dice, Random};
use crate::rules::model::{Match, Negatable};
use crate::rules::parse::{ParseError, invalid};

/// libxt_dccp's packet type names, by type number; INVALID stands for
/// types 10 to 15.
pub const TYPE_NAMES: [&str; 11] = [
    "REQUEST", "RESPONSE", "DATA", "ACK", "DATAACK", "CLOSEREQ", "CLOSE", "RESET", "SYNC",
    "SYNCACK", "INVALID",
];

/// The DCCP tests of one `-m dccp`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DccpTests {
    /// `--dccp-types`: bit `t` for type `t` (INVALID sets 10 to 15).
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub types: Option<Negatable<u16>>,
    /// `--dccp-option N` (1..=255).
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub option: Option<Negatable<u8>>,
}

/// `REQUEST,SYNC`: libxt_dccp's print_types — by name from type 0 up,
/// stopping at INVALID; by number (every bit) when `numeric`.
pub fn types_text(out: &mut String, mut types: u16, numeric: bool) {
    let mut first = true;
    while types != 0 {
        let t = types.trailing_zeros() as u8;
        if !first {
            out.push(',');
        }
        first = false;
        if numeric {
            let _ = write!(out, "{t}");
        } else {
            out.push_str(TYPE_NAMES[usize::from(t.min(INVALID))]);
            if t >= INVALID {
                break;
            }
        }
        types &= !(1 << t);
    }
}

/// `--dccp-types` as libxt_dccp reads it: names in any case separated by
/// commas (empty ones skipped, so an empty list is a test no packet
/// passes); INVALID adds types 11 to 15.
pub fn parse_types(text: &str) -> Result<u16, ParseError> {
    let mut mask = 0u16;
    for name in text.split(',').filter(|n| !n.is_empty()) {
        let Some(t) = TYPE_NAMES.iter().position(|n| n.eq_ignore_ascii_case(name)) else {
            return Err(invalid(
                "--dccp-types",
                "DCCP packet type",
                name,
                format!(
                    "Unknown DCCP type `{name}'; use {} (separated by commas)",
                    TYPE_NAMES.join(", ")
                ),
            ));
        };
        mask |= 1 << t;
    }
    if mask & 1 << INVALID != 0 {
        mask |= INVALID_TYPES;
    }
    Ok(mask)
}

/// `--dccp-option N`: 1 to 255, as libxt_dccp takes it (0, padding, is
/// refused there).
pub fn parse_option(option: &OptSpec, text: &str) -> Result<u8, ParseError> {
    super::number(option, "DCCP option", text, 255)
        .ok()
        .filter(|&n| n >= 1)
        .map(|n| n as u8)
        .ok_or_else(|| {
            invalid(
                &option.flag(),
                "DCCP option",
                text,
                "bad value for option \"--dccp-option\", or out of range (1-255): \
                 expected an option type like 32 (Change L) or 41 (Timestamp)",
            )
        })
}

impl DccpTests {
    /// ` --dccp-types REQUEST ! --dccp-option 5`: libxt_dccp's save text
    /// (`!` before the option).
    pub fn save(&self, out: &mut String) {
        if let Some(t) = &self.types {
            let _ = write!(out, "{} --dccp-types ", bang(t.negated));
            types_text(out, t.value, false);
        }
        if let Some(o) = &self.option {
            let _ = write!(out, "{} --dccp-option {}", bang(o.negated), o.value);
        }
    }

    /// ` ! REQUEST,SYNC option=!5`: libxt_dccp's `-L` text (types by
    /// number with `-n`).
    pub fn list(&self, out: &mut String, numeric: bool) {
        if let Some(t) = &self.types {
            out.push_str(if t.negated { " ! " } else { " " });
            types_text(out, t.value, numeric);
        }
        if let Some(o) = &self.option {
            let _ = write!(
                out,
                " option={}{}",
                if o.negated { "!" } else { "" },
                o.value
            );
        }
    }

    /// The guard the kernel evaluates, `None` without a test.
    pub fn guard(&self) -> Option<Guard> {
        if self.types.is_none() && self.option.is_none() {
            return None;
        }
        let mut bits = 0;
        if let Some(t) = &self.types {
            bits |= common::TYPES | if t.negated { common::TYPES_NEGATED } else { 0 };
        }
        if let Some(o) = &self.option {
            bits |= common::OPTION | if o.negated { common::OPTION_NEGATED } else { 0 };
        }
        Some(Guard {
            kind: guard_kind::DCCP,
            _pad: bits,
            a: self.types.as_ref().map_or(0, |t| u64::from(t.value)),
            b: self.option.as_ref().map_or(0, |o| u64::from(o.value)),
            ..Guard::default()
        })
    }
}

/// libxt_dccp: ports, the packet type and the option tests.
static DCCP_OPTIONS: [OptSpec; 4] = [
    SPORT,
    DPORT,
    OptSpec {
        names: &["dccp-types"],
        value: Value::One("a list of DCCP packet types like REQUEST,RESPONSE"),
        negatable: true,
    },
    OptSpec {
        names: &["dccp-option"],
        value: Value::One("a DCCP option number"),
        negatable: true,
    },
];

pub static DCCP: MatchModule = MatchModule {
    name: "dccp",
    family: None,
    options: &DCCP_OPTIONS,
    example: "e.g. -p dccp --dport 5004 --dccp-types REQUEST",
    parser: || Box::new(PortsParser::new(33)),
    implicit_protocol: Some(33),
    random: Random {
        weight: 6,
        draw: |d, s| {
            let mut m = random_ports(d, s, 33)?;
            if let Match::Ports(p) = &mut m
                && s.has_packet()
            {
                p.dccp = d.maybe(40, |d| random_tests(d, s.palette));
            }
            Some(m)
        },
    },
};

/// A type test (the handshake's types, INVALID, now and then none) and
/// an option test (options DCCP stacks send, a rare one), or both.
fn random_tests(d: &mut Dice, p: &crate::rules::generate::Palette) -> DccpTests {
    // At least one type: an empty list saves as `--dccp-types ` with
    // nothing after it, which iptables-restore (and netbeast's) reads as
    // taking the next word.
    let types = d.maybe(70, |d| {
        let mut mask = 0u16;
        for _ in 0..1 + d.below(3) {
            mask |= 1 << d.pick(&[0u8, 1, 2, 3, 4, 7, 8, 10]);
        }
        if mask & 1 << INVALID != 0 {
            mask |= INVALID_TYPES;
        }
        mask
    });
    let option = if types.is_none() || d.chance(40) {
        Some(d.pick(&[1u8, 2, 32, 33, 34, 41, 42, 43, 44, 200]))
    } else {
        None
    };
    DccpTests {
        types: types.map(|t| d.negatable(p, t)),
        option: option.map(|o| d.negatable(p, o)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netbeast_common::Held;

    fn tests(types: Option<(&str, bool)>, option: Option<(u8, bool)>) -> DccpTests {
        DccpTests {
            types: types.map(|(t, negated)| Negatable {
                negated,
                value: parse_types(t).unwrap(),
            }),
            option: option.map(|(value, negated)| Negatable { negated, value }),
        }
    }

    /// As iptables 1.8.9 prints them (checked on the real one): by type
    /// number, INVALID last and standing for 10 to 15, which `-n` lists.
    #[test]
    fn types_print_as_libxt_dccp() {
        let all = "REQUEST,RESPONSE,DATA,ACK,DATAACK,CLOSEREQ,CLOSE,RESET,SYNC,SYNCACK,INVALID";
        let texts = |t: DccpTests| {
            let (mut save, mut list, mut numeric) = (String::new(), String::new(), String::new());
            t.save(&mut save);
            t.list(&mut list, false);
            t.list(&mut numeric, true);
            [save, list, numeric]
        };
        assert_eq!(
            texts(tests(Some((all, false)), None)),
            [
                format!(" --dccp-types {all}"),
                format!(" {all}"),
                " 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15".to_string()
            ]
        );
        assert_eq!(
            texts(tests(Some(("sync,request", true)), Some((5, false)))),
            [
                " ! --dccp-types REQUEST,SYNC --dccp-option 5",
                " ! REQUEST,SYNC option=5",
                " ! 0,8 option=5"
            ]
        );
        assert_eq!(
            texts(tests(Some(("INVALID,DATA", false)), Some((255, true)))),
            [
                " --dccp-types DATA,INVALID ! --dccp-option 255",
                " DATA,INVALID option=!255",
                " 2,10,11,12,13,14,15 option=!255"
            ]
        );

        // Empty names are skipped: an empty list is kept, printed empty.
        assert_eq!(parse_types(",,DATA,,").unwrap(), 1 << 2);
        let mut save = String::new();
        tests(Some(("", false)), None).save(&mut save);
        assert_eq!(save, " --dccp-types ");
        assert!(parse_types("DATA,FOO").is_err());
    }

    #[test]
    fn option_numbers_as_libxt_dccp() {
        let spec = &DCCP_OPTIONS[3];
        assert_eq!(parse_option(spec, "255").unwrap(), 255);
        assert_eq!(parse_option(spec, "0x10").unwrap(), 16);
        for bad in ["0", "256", "-1", "abc", ""] {
            assert!(parse_option(spec, bad).is_err(), "{bad}");
        }
    }

    /// The guard's test on the facts of real headers: type, options as
    /// the kernel walks them, the header that cannot be read.
    #[test]
    fn guard_decides_as_xt_dccp() {
        let header = |type_byte: u8, doff: u8, options: &[u8]| {
            let mut h = vec![0u8; 12];
            h[4] = doff;
            h[8] = type_byte;
            // REQUEST's service code, when the type is REQUEST.
            if type_byte >> 1 == 0 {
                h.extend_from_slice(&[0; 4]);
            }
            h.extend_from_slice(options);
            common::facts(&h)
        };
        let request = |options: &[u8]| header(0, (16 + options.len() as u8).div_ceil(4), options);
        let held = |t: &DccpTests, f| t.guard().unwrap().dccp(&f);
        let holds = |t: &DccpTests, f| held(t, f) == Held::Holds;
        let req = tests(Some(("REQUEST", false)), None);
        assert!(holds(&req, request(&[])));
        assert!(!holds(&req, header(2 << 1, 3, &[])));
        assert!(holds(
            &tests(Some(("REQUEST", true)), None),
            header(2 << 1, 3, &[])
        ));
        // Type 12 is INVALID's.
        assert!(holds(
            &tests(Some(("INVALID", false)), None),
            header(12 << 1, 3, &[])
        ));
        let opt = |n, negated| tests(None, Some((n, negated)));
        assert!(holds(
            &opt(41, false),
            request(&[41, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        ));
        assert!(!holds(
            &opt(41, true),
            request(&[41, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        ));
        // A length of 0 steps one byte: its length byte is the next type.
        assert!(holds(&opt(7, false), request(&[44, 0, 7, 0])));
        // A length past the area ends the walk.
        assert!(!holds(&opt(7, false), request(&[44, 9, 7, 0])));
        // Options past the datagram: the kernel drops the packet, negated
        // or not.
        let truncated = header(0, 8, &[41, 4]);
        assert_eq!(truncated.status, common::status::TYPE_ONLY);
        assert_eq!(held(&opt(41, false), truncated), Held::Hotdrop);
        assert_eq!(held(&opt(41, true), truncated), Held::Hotdrop);
        // ... after a type test that held; one that fails decides first.
        let both = tests(Some(("REQUEST", true)), Some((41, true)));
        assert_eq!(held(&both, header(2 << 1, 8, &[])), Held::Hotdrop);
        assert!(holds(&both, header(2 << 1, 3, &[])));
        assert_eq!(held(&both, header(0, 8, &[])), Held::Fails);
        // A data offset short of the type's header.
        assert_eq!(held(&opt(41, true), header(3 << 1, 3, &[])), Held::Hotdrop);
        // No whole generic header: dropped whatever the tests.
        assert_eq!(
            held(&tests(Some(("DATA", true)), None), common::facts(&[0; 11])),
            Held::Hotdrop
        );
    }
}
