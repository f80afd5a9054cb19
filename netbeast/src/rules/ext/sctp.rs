//! `-m sctp` (libxt_sctp, xt_sctp): ports, which it shares with tcp, udp
//! and dccp (`tcp.rs`: `Ports`), and `--chunk-types all|any|only
//! TYPE[:FLAGS],...`, which lives here. The chunk test reads every chunk of
//! the packet, a list no classifier key holds: it is a guard
//! (`guard_kind::SCTP_CHUNKS`) on the chunks the pipeline walks into the
//! packet's per-CPU slot (only while a rule tests them,
//! `ACTIVE_SCTP_CHUNKS`), decided by `Guard::sctp_chunks` for the
//! kernel and the models alike.

use std::fmt::Write as _;

use netbeast_common::sctp::{
    self as common, ALL, ANY, EVERY, FLAG_COUNT_SHIFT, MAX_FLAG_ENTRIES, NAMED_TYPES, ONLY,
};
use netbeast_common::{Guard, guard_kind};
use serde::{Deserialize, Serialize};

use super::tcp::{DPORT, PortsParser, SPORT, random_ports};
use super::{MatchModule, OptSpec, Value};
use crate::rules::generate::{Dice, Random};
use crate::rules::model::Negatable;
use crate::rules::parse::{ParseError, invalid};

/// libxt_sctp's chunk names, in its table's order (`NAMED_TYPES` holds
/// their numbers), and the flag letters each takes, bit 7 first: `-` is a
/// letter too (libxt_sctp looks letters up in this text), naming bit 7.
pub const CHUNK_NAMES: [(&str, &str); 22] = [
    ("DATA", "----IUBE"),
    ("INIT", "--------"),
    ("INIT_ACK", "--------"),
    ("SACK", "--------"),
    ("HEARTBEAT", "--------"),
    ("HEARTBEAT_ACK", "--------"),
    ("ABORT", "-------T"),
    ("SHUTDOWN", "--------"),
    ("SHUTDOWN_ACK", "--------"),
    ("ERROR", "--------"),
    ("COOKIE_ECHO", "--------"),
    ("COOKIE_ACK", "--------"),
    ("ECN_ECNE", "--------"),
    ("ECN_CWR", "--------"),
    ("SHUTDOWN_COMPLETE", "-------T"),
    ("I_DATA", "----IUBE"),
    ("RE_CONFIG", "--------"),
    ("PAD", "--------"),
    ("ASCONF", "--------"),
    ("ASCONF_ACK", "--------"),
    ("FORWARD_TSN", "--------"),
    ("I_FORWARD_TSN", "--------"),
];

/// `all`, `any` or `only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChunkMode {
    /// Every listed type is met (with its flags).
    All,
    /// Some listed type is met (with its flags).
    Any,
    /// Every chunk is of a listed type (with its flags).
    Only,
}

impl ChunkMode {
    fn text(self) -> &'static str {
        match self {
            ChunkMode::All => "all",
            ChunkMode::Any => "any",
            ChunkMode::Only => "only",
        }
    }

    fn bits(self) -> u32 {
        match self {
            ChunkMode::All => ALL,
            ChunkMode::Any => ANY,
            ChunkMode::Only => ONLY,
        }
    }
}

/// A flag test on the chunks of one type: `flags & mask == flag`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkFlags {
    pub chunk: u8,
    pub flag: u8,
    pub mask: u8,
}

/// `--chunk-types MODE LIST`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkTypes {
    pub mode: ChunkMode,
    /// `ALL`: every chunk type (no flags).
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub every: bool,
    /// The listed types, ascending, each once (`NONE`: none).
    pub types: Vec<u8>,
    /// The flag tests the kernel applies, one per type at most. libxt_sctp
    /// files `I_DATA`'s flags (and any flags on a type numbered past 14)
    /// under the type's place in its name table rather than its number,
    /// so the kernel never applies them and iptables never prints them:
    /// they are dropped here too (they still count towards the limit of
    /// four).
    pub flags: Vec<ChunkFlags>,
}

/// libxt_sctp's name of chunk type `t`.
fn chunk_name(t: u8) -> &'static str {
    NAMED_TYPES
        .iter()
        .position(|&n| n == t)
        .map_or("?", |i| CHUNK_NAMES[i].0)
}

/// Its flag letters (bit 7 first), for a type libxt_sctp names.
fn flag_letters(t: u8) -> &'static str {
    NAMED_TYPES
        .iter()
        .position(|&n| n == t)
        .map_or("--------", |i| CHUNK_NAMES[i].1)
}

/// `DATA:iUbE`: the flags' letters from bit 7 down, capital when the bit
/// must be set, small when clear.
fn flags_text(out: &mut String, f: &ChunkFlags) {
    if f.mask == 0 {
        return;
    }
    out.push(':');
    let letters = flag_letters(f.chunk).as_bytes();
    for bit in (0..8).rev() {
        if f.mask & 1 << bit != 0 {
            let letter = letters[7 - bit] as char;
            out.push(if f.flag & 1 << bit != 0 {
                letter
            } else {
                letter.to_ascii_lowercase()
            });
        }
    }
}

impl ChunkTypes {
    /// ` all DATA:iUbE,INIT`: libxt_sctp's print_chunks, types by number
    /// (`0x0000` with `numeric`, as `-L -n` prints them), `ALL`, `NONE`.
    pub fn text(&self, out: &mut String, numeric: bool) {
        let _ = write!(out, " {}", self.mode.text());
        if self.every {
            out.push_str(" ALL");
            return;
        }
        if self.types.is_empty() {
            out.push_str(" NONE");
            return;
        }
        for (i, &t) in self.types.iter().enumerate() {
            out.push(if i == 0 { ' ' } else { ',' });
            if numeric {
                let _ = write!(out, "0x{t:04X}");
            } else {
                out.push_str(chunk_name(t));
            }
            if let Some(f) = self.flags.iter().find(|f| f.chunk == t) {
                flags_text(out, f);
            }
        }
    }

    /// The guard the kernel evaluates.
    pub fn guard(&self, negated: bool) -> Guard {
        let mut a = 0u64;
        for &t in &self.types {
            if let Some(b) = common::type_bit(t) {
                a |= 1 << b;
            }
        }
        let (mut b, mut c) = (0u64, 0u64);
        for (i, f) in self.flags.iter().enumerate().take(MAX_FLAG_ENTRIES) {
            let entry = common::flag_entry(f.chunk, f.flag, f.mask) << (32 * (i & 1));
            if i < 2 {
                b |= entry;
            } else {
                c |= entry;
            }
        }
        Guard {
            kind: guard_kind::SCTP_CHUNKS,
            negated: u32::from(negated),
            _pad: self.mode.bits()
                | if self.every { EVERY } else { 0 }
                | (self.flags.len().min(MAX_FLAG_ENTRIES) as u32) << FLAG_COUNT_SHIFT,
            a,
            b,
            c,
            ..Guard::default()
        }
    }
}

const OPTION: &str = "--chunk-types";

/// `--chunk-types MODE LIST` as libxt_sctp reads it: the mode `all`,
/// `any` or `only` in any case; the list `ALL`, `NONE` (any case) or names
/// separated by commas (empty ones skipped), each with optional flag
/// letters after a colon.
pub fn parse_chunk_types(mode: &str, list: &str) -> Result<ChunkTypes, ParseError> {
    if list.starts_with('-') || list.starts_with('!') {
        return Err(invalid(
            OPTION,
            "chunk list",
            list,
            "--chunk-types takes two values: all, any or only, then the chunk types, \
             e.g. --chunk-types any INIT,ABORT",
        ));
    }
    let mode = match mode.to_ascii_lowercase().as_str() {
        "all" => ChunkMode::All,
        "any" => ChunkMode::Any,
        "only" => ChunkMode::Only,
        _ => {
            return Err(invalid(
                OPTION,
                "match type",
                mode,
                "the match type has to be one of all, any or only",
            ));
        }
    };
    let mut chunks = ChunkTypes {
        mode,
        every: false,
        types: Vec::new(),
        flags: Vec::new(),
    };
    if list.eq_ignore_ascii_case("ALL") {
        chunks.every = true;
        return Ok(chunks);
    }
    if list.eq_ignore_ascii_case("NONE") {
        return Ok(chunks);
    }
    // Flag entries in libxt_sctp's terms: (place in the name table, flag,
    // mask), at most four.
    let mut entries: Vec<(usize, u8, u8)> = Vec::new();
    for item in list.split(',').filter(|i| !i.is_empty()) {
        let (name, letters) = match item.split_once(':') {
            Some((name, letters)) => (name, Some(letters)),
            None => (item, None),
        };
        let Some(index) = CHUNK_NAMES
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))
        else {
            return Err(invalid(
                OPTION,
                "SCTP chunk type",
                name,
                format!(
                    "use {} (separated by commas), ALL or NONE",
                    CHUNK_NAMES.map(|(n, _)| n).join(", ")
                ),
            ));
        };
        let t = NAMED_TYPES[index];
        if let Err(at) = chunks.types.binary_search(&t) {
            chunks.types.insert(at, t);
        }
        for letter in letters.unwrap_or("").chars() {
            let valid = CHUNK_NAMES[index].1;
            let Some(place) = valid.find(letter.to_ascii_uppercase()) else {
                return Err(invalid(
                    OPTION,
                    "chunk flag",
                    item,
                    format!(
                        "{name} takes the flags {} (capital: set, small: clear)",
                        valid.replace('-', "")
                    ),
                ));
            };
            let bit = 1u8 << (7 - place);
            let set = if letter.is_ascii_uppercase() { bit } else { 0 };
            match entries.iter().position(|e| e.0 == index) {
                Some(at) => {
                    entries[at].1 |= set;
                    entries[at].2 |= bit;
                }
                None if entries.len() == MAX_FLAG_ENTRIES => {
                    return Err(invalid(
                        OPTION,
                        "chunk list",
                        list,
                        format!(
                            "flags on more than {MAX_FLAG_ENTRIES} chunk types; xt_sctp holds \
                             {MAX_FLAG_ENTRIES} (XT_NUM_SCTP_FLAGS)"
                        ),
                    ));
                }
                None => entries.push((index, set, bit)),
            }
        }
    }
    // The entries whose place is the type's number (types 0 to 14) are
    // the ones the kernel applies (see `ChunkTypes::flags`).
    chunks.flags = entries
        .into_iter()
        .filter(|&(index, ..)| NAMED_TYPES[index] as usize == index)
        .map(|(index, flag, mask)| ChunkFlags {
            chunk: index as u8,
            flag,
            mask,
        })
        .collect();
    Ok(chunks)
}

/// libxt_sctp: ports, and the chunk test.
pub static SCTP_OPTIONS: [OptSpec; 3] = [
    SPORT,
    DPORT,
    OptSpec {
        names: &["chunk-types"],
        value: Value::Two("all|any|only and a list of chunk types like INIT,DATA:Be"),
        negatable: true,
    },
];

pub static SCTP: MatchModule = MatchModule {
    name: "sctp",
    family: None,
    options: &SCTP_OPTIONS,
    example: "e.g. -p sctp --dport 3868 --chunk-types any INIT",
    parser: || Box::new(PortsParser::new(132)),
    implicit_protocol: Some(132),
    random: Random {
        weight: 6,
        draw: |d, s| {
            let mut m = random_ports(d, s, 132)?;
            if let crate::rules::model::Match::Ports(p) = &mut m
                && s.has_packet()
            {
                p.sctp_chunks = d
                    .maybe(35, random_chunk_types)
                    .map(|c| d.negatable(s.palette, c));
            }
            Some(m)
        },
    },
};

/// A chunk test: mostly the types SCTP's handshake and data carry, with
/// flag tests on DATA and ABORT now and then.
fn random_chunk_types(d: &mut Dice) -> ChunkTypes {
    let mode = d.pick(&[ChunkMode::All, ChunkMode::Any, ChunkMode::Only]);
    if d.chance(8) {
        return ChunkTypes {
            mode,
            every: d.chance(50),
            types: Vec::new(),
            flags: Vec::new(),
        };
    }
    let mut types: Vec<u8> = (0..1 + d.below(3))
        .map(|_| d.pick(&[0u8, 1, 2, 3, 6, 10, 11, 14, 64, 192]))
        .collect();
    types.sort_unstable();
    types.dedup();
    let mut flags = Vec::new();
    for &t in &types {
        if matches!(t, 0 | 6) && d.chance(40) {
            let mask = if t == 0 { 1 + d.below(15) as u8 } else { 1 };
            flags.push(ChunkFlags {
                chunk: t,
                flag: d.next() as u8 & mask,
                mask,
            });
        }
    }
    ChunkTypes {
        mode,
        every: false,
        types,
        flags,
    }
}

/// The `Negatable` the rule keeps.
pub type SctpChunks = Negatable<ChunkTypes>;

#[cfg(test)]
mod tests {
    use super::*;

    fn text(mode: &str, list: &str) -> String {
        let mut out = String::new();
        parse_chunk_types(mode, list).unwrap().text(&mut out, false);
        out
    }

    /// As iptables 1.8.9 prints them (checked on the real one): by type
    /// number, flags from bit 7 down, I_DATA's flags dropped, `-` a flag.
    #[test]
    fn lists_print_as_libxt_sctp() {
        assert_eq!(
            text("ANY", "I_DATA:I,DATA:iUbE,INIT"),
            " any DATA:iUbE,INIT,I_DATA"
        );
        assert_eq!(
            text("only", "ASCONF,ASCONF_ACK,FORWARD_TSN"),
            " only ASCONF_ACK,FORWARD_TSN,ASCONF"
        );
        assert_eq!(text("all", "all"), " all ALL");
        assert_eq!(text("any", "none"), " any NONE");
        assert_eq!(text("any", ","), " any NONE");
        assert_eq!(text("any", "data:-,INIT:-"), " any DATA:-,INIT:-");
        assert_eq!(
            text("only", "abort:t,SHUTDOWN_COMPLETE:T"),
            " only ABORT:t,SHUTDOWN_COMPLETE:T"
        );
        assert_eq!(text("any", "DATA:Ii,DATA:E"), " any DATA:IE");
        let mut numeric = String::new();
        parse_chunk_types("only", "ABORT:t,SHUTDOWN_COMPLETE:T")
            .unwrap()
            .text(&mut numeric, true);
        assert_eq!(numeric, " only 0x0006:t,0x000E:T");
        for (mode, list) in [
            ("some", "DATA"),
            ("any", "FOO"),
            ("any", "DATA:X"),
            ("any", "INIT:I"),
            ("any", "DATA:-,INIT:-,ABORT:-,SACK:-,HEARTBEAT:-"),
            ("any", "-DATA"),
        ] {
            assert!(parse_chunk_types(mode, list).is_err(), "{mode} {list}");
        }
    }
}
