//! `-m hashlimit`: a token bucket per key — the packet's masked addresses
//! and ports that `--hashlimit-mode` names — in the table named by
//! `--hashlimit-name` (xt_hashlimit, revision 3 as iptables 1.8 uses it).
//! `--hashlimit-upto RATE` matches while the key's bucket has credit,
//! `--hashlimit-above RATE` once it has none (`!` swaps them). A rate is
//! in packets (`50/sec`, as `-m limit` reads it, in microseconds) or in
//! bytes (`10kb/s`). The kernel's side is `netbeast-ebpf/src/hashlimit.rs`.

use crate::rules::generate::{Dice, Random, Scope};
use std::fmt::Write as _;

use netbeast_common::{Guard, guard_kind, hashlimit as bits};
use serde::{Deserialize, Serialize};

use super::{MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, number, once, value};
use crate::compile::PacketView;
use crate::compile::lower::Lowering;
use crate::rules::model::{Family, Match, TableName};
use crate::rules::parse::{ParseError, invalid};

/// Packet rates are periods in microseconds (XT_HASHLIMIT_SCALE_v2).
pub const SCALE: u64 = 1_000_000;
/// iptables' defaults and bounds.
pub const DEFAULT_BURST: u64 = 5;
pub const MAX_BURST: u64 = 1_000_000;
pub const DEFAULT_GCINTERVAL: u32 = 1000;
/// The expiry of a bytes-mode bucket unless given, in seconds, without
/// and with a `--hashlimit-burst` (libxt_hashlimit's defaults).
const BYTE_EXPIRE: u32 = 15;
const BYTE_EXPIRE_BURST: u32 = 60;
/// The hash table size xt_hashlimit picks without `--hashlimit-htable-size`
/// on a machine of 1 GiB or more (it scales down below that), and the
/// factor from it to the default `--hashlimit-htable-max`.
pub const DEFAULT_HTABLE_SIZE: u64 = 8192;
const MAX_PER_SIZE: u64 = 8;
/// The longest `--hashlimit-name` (the kernel's name field holds 32 bytes
/// with the final NUL).
pub const MAX_NAME_LEN: usize = 31;
/// The longest `--hashlimit-rate-interval` netbeast takes, in seconds: it
/// travels in 8 bits of the guard (`hashlimit::INTERVAL_SHIFT`). iptables
/// takes any 32-bit number.
pub const MAX_RATE_INTERVAL: u32 = 255;

fn one() -> u32 {
    1
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HashRate {
    /// One packet every `period` microseconds.
    Packets { period: u64 },
    /// Bytes per second, kept as xt_hashlimit keeps it (`cost`: 2^32 - 1
    /// over the rate in 16-byte chunks, plus one), so it prints back the
    /// same.
    Bytes { cost: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hashlimit {
    pub name: String,
    /// `--hashlimit-above`: matches over the rate.
    pub above: bool,
    pub rate: HashRate,
    /// Packets the full bucket holds (packets mode); in bytes mode the
    /// refills of a second each that `--hashlimit-burst` allows a key (its
    /// bytes over the rate's, rounded up, as xt_hashlimit keeps it), 0
    /// without one.
    pub burst: u64,
    /// `hashlimit::SRCIP | SRCPORT | DSTIP | DSTPORT`.
    pub mode: u32,
    pub srcmask: u8,
    pub dstmask: u8,
    pub size: u32,
    pub max: u32,
    pub gcinterval: u32,
    /// Idle buckets expire after this many ms.
    pub expire: u32,
    /// `--hashlimit-rate-match` (xt_hashlimit revision 3): the key's rate
    /// is measured over windows of `interval` seconds instead of drawn
    /// from a bucket; under the limit while the last window was not over
    /// the rate and this one has not passed the rate plus the burst.
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub rate_match: bool,
    /// `--hashlimit-rate-interval`, seconds (1 unless given).
    #[serde(default = "one")]
    pub interval: u32,
    /// An ip6tables rule: its keys are IPv6 addresses, its masks prefix
    /// lengths up to 128 (128 unless given, and not printed then).
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub v6: bool,
}

/// As xt_hashlimit: bytes per second to its cost encoding, and back.
fn bytes_to_cost(bytes: u64) -> u64 {
    let chunks = (bytes >> bits::BYTE_SHIFT) as u32;
    u64::from(u32::MAX / chunks.wrapping_add(1).max(1))
}

fn cost_to_bytes(cost: u64) -> u64 {
    let r = u64::from(u32::MAX)
        .checked_div(cost)
        .unwrap_or(u64::from(u32::MAX));
    r.saturating_sub(1) << bits::BYTE_SHIFT
}

/// A packet rate: `N[/second|/minute|/hour|/day]` (any prefix, any
/// case): its period in microseconds and the unit's seconds.
fn parse_packet_rate(text: &str) -> Option<Result<(u64, u64), ()>> {
    let (count, seconds) = match text.split_once('/') {
        None => (text, 1),
        Some((count, unit)) => {
            if unit.is_empty() {
                return None;
            }
            let unit = unit.to_ascii_lowercase();
            let seconds = [
                ("second", 1),
                ("minute", 60),
                ("hour", 3600),
                ("day", 86_400),
            ]
            .iter()
            .find(|(name, _)| name.starts_with(&unit))?
            .1;
            (count, seconds)
        }
    };
    let digits: String = count.chars().take_while(char::is_ascii_digit).collect();
    let count: u64 = digits.parse().ok().filter(|&n| n > 0)?;
    let period = SCALE * seconds / count;
    Some(if period == 0 {
        Err(())
    } else {
        Ok((period, seconds))
    })
}

/// A byte rate: `N[k|m]b/s`. `None` when the text is not one.
fn parse_byte_rate(text: &str) -> Option<Result<u64, String>> {
    let at = text.find("b/s")?;
    if at == 0 {
        return None;
    }
    let factor = match text.as_bytes()[at - 1] {
        b'm' => 1024 * 1024,
        b'k' => 1024,
        _ => 1,
    };
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    let count: u64 = digits.parse().ok().filter(|&n| n > 0)?;
    let cost = bytes_to_cost(count.saturating_mul(factor));
    Some(if cost == 0 {
        Err(format!("rate too high \"{text}\""))
    } else {
        Ok(cost)
    })
}

/// A period in microseconds as iptables prints it, and the printed unit's
/// length in ms (an expiry of that length is not printed).
fn rate_text(period: u64) -> (String, u32) {
    const RATES: [(&str, u64); 4] = [
        ("day", SCALE * 86_400),
        ("hour", SCALE * 3600),
        ("min", SCALE * 60),
        ("sec", SCALE),
    ];
    let mut i = 1;
    while i < RATES.len() {
        let mult = RATES[i].1;
        if period > mult || mult / period < mult % period {
            break;
        }
        i += 1;
    }
    let (name, mult) = RATES[i - 1];
    (
        format!("{}/{name}", mult / period),
        (mult / SCALE * 1000) as u32,
    )
}

const BYTE_UNITS: [(&str, u64); 3] = [("m", 1 << 20), ("k", 1 << 10), ("", 1)];

/// A byte rate's cost as iptables prints it: `10kb/s`.
fn bytes_text(cost: u64) -> String {
    let r = cost_to_bytes(cost);
    let (name, thresh) = BYTE_UNITS
        .iter()
        .take(2)
        .find(|(_, t)| r >= *t && bytes_to_cost(r & !(t - 1)) == cost)
        .copied()
        .unwrap_or(BYTE_UNITS[2]);
    format!("{}{name}b/s", r / thresh)
}

/// A bytes-mode burst (refills of the rate's second) as iptables prints
/// it: their bytes in the largest unit they reach, rounded down (`400kb`).
fn byte_burst_text(cost: u64, refills: u64) -> String {
    let r = cost_to_bytes(cost).saturating_mul(refills);
    let (name, thresh) = BYTE_UNITS
        .iter()
        .find(|(_, t)| r >= *t)
        .copied()
        .unwrap_or(BYTE_UNITS[2]);
    format!("{}{name}b", r / thresh)
}

/// The time in ns a bytes-mode packet costs per 16-byte chunk: xt_hashlimit
/// charges a chunk `cost` / 2^32 of the bucket's second.
fn chunk_ns(cost: u64) -> u64 {
    ((u128::from(bits::BYTES_DEPTH_NS) * u128::from(cost)) >> 32) as u64
}

/// `--hashlimit-burst`'s text as libxt_hashlimit reads it: a number,
/// times 1024 or 1024² after `k` or `m` (an optional `b` after them).
/// `None` when it is not one; the flag says whether a unit was given.
fn parse_burst(text: &str) -> Option<(u64, bool)> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let n: u64 = text[..digits].parse().ok()?;
    let factor = match &text[digits..] {
        "" => return Some((n, false)),
        "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        _ => return None,
    };
    Some((n.checked_mul(factor)?, true))
}

/// The name's number in the kernel's keys (FNV-1a): tables are told apart
/// by name, so a table keeps its buckets whatever rules name it.
pub fn name_number(name: &str) -> u32 {
    name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn mode_text(mode: u32, separator: char) -> String {
    [
        (bits::SRCIP, "srcip"),
        (bits::SRCPORT, "srcport"),
        (bits::DSTIP, "dstip"),
        (bits::DSTPORT, "dstport"),
    ]
    .iter()
    .filter(|(bit, _)| mode & bit != 0)
    .map(|(_, name)| *name)
    .collect::<Vec<_>>()
    .join(&separator.to_string())
}

impl Hashlimit {
    /// A mask that goes without saying: the whole address.
    fn full_mask(&self) -> u8 {
        if self.v6 { 128 } else { 32 }
    }

    /// The family's bit for the guard.
    fn family_bit(&self) -> u32 {
        if self.v6 { bits::V6 } else { 0 }
    }

    /// The rate's text and the expiry that goes without saying.
    fn rate_and_quantum(&self) -> (String, u32) {
        match self.rate {
            HashRate::Packets { period } => rate_text(period),
            HashRate::Bytes { cost } if self.burst != 0 => {
                (bytes_text(cost), BYTE_EXPIRE_BURST * 1000)
            }
            HashRate::Bytes { cost } => (bytes_text(cost), BYTE_EXPIRE * 1000),
        }
    }

    /// The burst as iptables prints it after the rate (`prefix` before
    /// `burst`), if it prints one.
    fn burst_text(&self, out: &mut String, prefix: &str) {
        match self.rate {
            HashRate::Packets { .. } => {
                let _ = write!(out, " {prefix}burst {}", self.burst);
            }
            HashRate::Bytes { cost } if self.burst != 0 => {
                let _ = write!(out, " {prefix}burst {}", byte_burst_text(cost, self.burst));
            }
            HashRate::Bytes { .. } => {}
        }
    }

    /// The rate-match mode's guard parameters (as xt_hashlimit's
    /// `rateinfo_init` for revision 3): the rate a window may reach (its
    /// `prev_window` test) and the count a packet may bring the window to
    /// (its burst), in packets or bytes.
    fn rate_match_limits(&self) -> (u64, u64) {
        match self.rate {
            // Packets per second, whole, plus the burst.
            HashRate::Packets { period } => {
                let rate = SCALE / period.max(1);
                (rate, rate + self.burst)
            }
            // Bytes per second, as the kernel derives it from the cost;
            // a burst is that many seconds of it.
            HashRate::Bytes { cost } => {
                let rate = cost_to_bytes(cost);
                (rate, rate.saturating_mul(self.burst.max(1)))
            }
        }
    }

    /// The most buckets the table holds, as xt_hashlimit derives it from
    /// `--hashlimit-htable-max` and `-size`: 8 × the size when no max is
    /// given, never below the size; at most `HASHLIMIT_ENTRIES`, what
    /// all tables hold together.
    pub fn table_max(&self) -> u64 {
        let size = if self.size == 0 {
            DEFAULT_HTABLE_SIZE
        } else {
            u64::from(self.size)
        };
        let max = match u64::from(self.max) {
            0 => MAX_PER_SIZE * size,
            max => max.max(size),
        };
        max.min(u64::from(netbeast_common::HASHLIMIT_ENTRIES))
    }

    /// Its table as `HASHLIMIT_TABLES` knows it: the name's number and
    /// the family (IPv4 and IPv6 tables of one name are apart, as in
    /// xt_hashlimit), the first word of its keys.
    pub fn table(&self) -> u64 {
        netbeast_common::HashlimitKey {
            name: name_number(&self.name),
            v6: u32::from(self.v6),
            ..Default::default()
        }
        .table()
    }

    /// The guard the kernel evaluates.
    pub fn guard(&self) -> Guard {
        if self.rate_match {
            let (rate, burst) = self.rate_match_limits();
            let bytes = match self.rate {
                HashRate::Bytes { .. } => bits::BYTES,
                HashRate::Packets { .. } => 0,
            };
            return Guard {
                kind: guard_kind::HASHLIMIT,
                negated: u32::from(self.above),
                _pad: self.mode
                    | self.family_bit()
                    | bytes
                    | bits::RATE_MATCH
                    | u32::from(self.srcmask) << bits::SRCMASK_SHIFT
                    | u32::from(self.dstmask) << bits::DSTMASK_SHIFT
                    | self.interval.min(MAX_RATE_INTERVAL) << bits::INTERVAL_SHIFT,
                a: rate,
                b: burst,
                c: u64::from(name_number(&self.name)) | u64::from(self.expire) << 32,
                ..Guard::default()
            };
        }
        let (cost, depth, mode) = match self.rate {
            HashRate::Packets { period } => {
                let cost = period.saturating_mul(1000);
                (cost, cost.saturating_mul(self.burst), self.mode)
            }
            // The depth is always one second: `b` carries the burst's
            // refills instead (netbeast_common::hashlimit_byte_take).
            HashRate::Bytes { cost } => (chunk_ns(cost), self.burst, self.mode | bits::BYTES),
        };
        Guard {
            kind: guard_kind::HASHLIMIT,
            negated: u32::from(self.above),
            _pad: mode
                | self.family_bit()
                | u32::from(self.srcmask) << bits::SRCMASK_SHIFT
                | u32::from(self.dstmask) << bits::DSTMASK_SHIFT,
            a: cost,
            b: depth,
            c: u64::from(name_number(&self.name)) | u64::from(self.expire) << 32,
            ..Guard::default()
        }
    }

    /// The table options, as `save` (`--hashlimit-` before each) or `list`
    /// print them.
    fn table_text(&self, out: &mut String, prefix: &str, quantum: u32) {
        if self.size != 0 {
            let _ = write!(out, " {prefix}htable-size {}", self.size);
        }
        if self.max != 0 {
            let _ = write!(out, " {prefix}htable-max {}", self.max);
        }
        if self.gcinterval != DEFAULT_GCINTERVAL {
            let _ = write!(out, " {prefix}htable-gcinterval {}", self.gcinterval);
        }
        if self.expire != quantum {
            let _ = write!(out, " {prefix}htable-expire {}", self.expire);
        }
        if self.srcmask != self.full_mask() {
            let _ = write!(out, " {prefix}srcmask {}", self.srcmask);
        }
        if self.dstmask != self.full_mask() {
            let _ = write!(out, " {prefix}dstmask {}", self.dstmask);
        }
    }
}

impl MatchExt for Hashlimit {
    fn save(&self, out: &mut String) {
        let (rate, quantum) = self.rate_and_quantum();
        let which = if self.above { "above" } else { "upto" };
        let _ = write!(out, " -m hashlimit --hashlimit-{which} {rate}");
        self.burst_text(out, "--hashlimit-");
        if self.mode != 0 {
            let _ = write!(out, " --hashlimit-mode {}", mode_text(self.mode, ','));
        }
        let _ = write!(out, " --hashlimit-name {}", self.name);
        self.table_text(out, "--hashlimit-", quantum);
        // libxt_hashlimit prints the interval only with rate-match.
        if self.rate_match {
            out.push_str(" --hashlimit-rate-match");
            if self.interval != 1 {
                let _ = write!(out, " --hashlimit-rate-interval {}", self.interval);
            }
        }
    }

    fn list(&self, out: &mut String, _numeric: bool) {
        let (mut rate, quantum) = self.rate_and_quantum();
        // iptables 1.8.9 lists a packet rate per interval (10/sec over 5
        // seconds reads 2/sec).
        if let HashRate::Packets { period } = self.rate
            && self.interval > 1
        {
            rate = rate_text(period.saturating_mul(u64::from(self.interval))).0;
        }
        let which = if self.above { "above" } else { "up to" };
        let _ = write!(out, " limit: {which} {rate}");
        self.burst_text(out, "");
        if self.mode != 0 {
            let _ = write!(out, " mode {}", mode_text(self.mode, '-'));
        }
        self.table_text(out, "", quantum);
        if self.rate_match {
            out.push_str(" rate-match");
            if self.interval != 1 {
                let _ = write!(out, " rate-interval {}", self.interval);
            }
        }
    }

    /// A guard: not part of the rule's static match.
    fn matches(&self, _pkt: &PacketView) -> bool {
        true
    }

    fn lower(&self) -> Lowering {
        Lowering::Guard(self.guard())
    }
}

const RATE: &str = "a rate like 50/sec or 10kb/s";

static OPTIONS: [OptSpec; 13] = [
    OptSpec {
        names: &["hashlimit-upto", "hashlimit"],
        value: Value::One(RATE),
        negatable: true,
    },
    OptSpec {
        names: &["hashlimit-above"],
        value: Value::One(RATE),
        negatable: true,
    },
    OptSpec {
        names: &["hashlimit-burst"],
        value: Value::One(
            "a number of packets from 1 to 1000000, or of bytes like 400kb with a byte rate",
        ),
        negatable: false,
    },
    OptSpec {
        names: &["hashlimit-mode"],
        value: Value::One("a list of srcip, srcport, dstip, dstport"),
        negatable: false,
    },
    OptSpec {
        names: &["hashlimit-name"],
        value: Value::One("the table's name"),
        negatable: false,
    },
    OptSpec {
        names: &["hashlimit-srcmask"],
        value: Value::One("a prefix length from 0 to 32 (128 for ip6tables)"),
        negatable: false,
    },
    OptSpec {
        names: &["hashlimit-dstmask"],
        value: Value::One("a prefix length from 0 to 32 (128 for ip6tables)"),
        negatable: false,
    },
    OptSpec {
        names: &["hashlimit-htable-size"],
        value: Value::One("a number of hash buckets"),
        negatable: false,
    },
    OptSpec {
        names: &["hashlimit-htable-max"],
        value: Value::One("a number of entries"),
        negatable: false,
    },
    OptSpec {
        names: &["hashlimit-htable-gcinterval"],
        value: Value::One("milliseconds"),
        negatable: false,
    },
    OptSpec {
        names: &["hashlimit-htable-expire"],
        value: Value::One("milliseconds"),
        negatable: false,
    },
    OptSpec {
        names: &["hashlimit-rate-match"],
        value: Value::None,
        negatable: false,
    },
    OptSpec {
        names: &["hashlimit-rate-interval"],
        value: Value::One("seconds"),
        negatable: false,
    },
];

pub static MODULE: MatchModule = MatchModule {
    name: "hashlimit",
    family: None,
    options: &OPTIONS,
    example: "e.g. -m hashlimit --hashlimit-upto 50/sec --hashlimit-mode srcip --hashlimit-name http",
    implicit_protocol: None,
    parser: || Box::<HashlimitParser>::default(),
    random: Random {
        weight: 1,
        draw: random,
    },
};

#[derive(Debug, Default)]
struct HashlimitParser {
    /// (rate, above, the rate unit's seconds) and the option that gave it.
    rate: Option<(HashRate, bool, u64)>,
    rate_option: Option<&'static str>,
    /// The number, and whether it had a unit (`400kb`).
    burst: Option<(u64, bool)>,
    mode: Option<u32>,
    name: Option<String>,
    /// The masks' texts, read in `finish`, which knows the family.
    srcmask: Option<String>,
    dstmask: Option<String>,
    size: Option<u32>,
    max: Option<u32>,
    gcinterval: Option<u32>,
    expire: Option<u32>,
    rate_match: bool,
    interval: Option<u32>,
}

fn u32_option(option: &'static OptSpec, text: &str) -> Result<u32, ParseError> {
    Ok(number(option, "value", text, u32::MAX.into())? as u32)
}

impl MatchParser for HashlimitParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        text: &[&str],
    ) -> Result<(), ParseError> {
        match option.name() {
            "hashlimit-rate-match" => {
                self.rate_match = true;
                Ok(())
            }
            "hashlimit-rate-interval" => {
                let text = value(option, text);
                let n = u32_option(option, text)?;
                if n == 0 {
                    return Err(invalid(
                        &option.flag(),
                        "interval",
                        text,
                        "expected a number of seconds from 1",
                    ));
                }
                if n > MAX_RATE_INTERVAL {
                    return Err(ParseError::Unsupported {
                        what: format!("--hashlimit-rate-interval {n}"),
                        hint: format!(
                            "; netbeast measures rates over at most {MAX_RATE_INTERVAL} seconds \
                             (MAX_RATE_INTERVAL)"
                        ),
                    });
                }
                once(&mut self.interval, n, option)
            }
            "hashlimit-upto" | "hashlimit-above" => {
                let text = value(option, text);
                let above = (option.name() == "hashlimit-above") != negated;
                let (rate, unit) = match parse_byte_rate(text) {
                    Some(Ok(cost)) => (HashRate::Bytes { cost }, 0),
                    Some(Err(reason)) => return Err(invalid(&option.flag(), "rate", text, reason)),
                    None => match parse_packet_rate(text) {
                        Some(Ok((period, unit))) => (HashRate::Packets { period }, unit),
                        Some(Err(())) => {
                            return Err(invalid(
                                &option.flag(),
                                "rate",
                                text,
                                "rate too fast: at most 1000000/second",
                            ));
                        }
                        None => {
                            return Err(invalid(
                                &option.flag(),
                                "rate",
                                text,
                                "expected packets like 50/sec (or /minute, /hour, /day) or bytes like 10kb/s",
                            ));
                        }
                    },
                };
                if let Some(first) = self.rate_option {
                    return Err(ParseError::IllegalOption {
                        option: option.flag(),
                        command: first.to_string(),
                        reason: "give one of them",
                    });
                }
                self.rate_option = Some(if option.name() == "hashlimit-above" {
                    "--hashlimit-above"
                } else {
                    "--hashlimit-upto"
                });
                self.rate = Some((rate, above, unit));
                Ok(())
            }
            "hashlimit-burst" => {
                let text = value(option, text);
                // As libxt_hashlimit: a plain number is packets (at most
                // MAX_BURST), one with a unit is bytes; which one the rate
                // wants is checked once the rate is known.
                let burst = match parse_burst(text) {
                    Some((n, false)) if (1..=MAX_BURST).contains(&n) => (n, false),
                    Some((n, true)) if n > 0 => (n, true),
                    _ => {
                        return Err(invalid(
                            &option.flag(),
                            "burst",
                            text,
                            "expected packets from 1 to 1000000, or bytes like 400kb (b, kb, mb)",
                        ));
                    }
                };
                once(&mut self.burst, burst, option)
            }
            "hashlimit-mode" => {
                let text = value(option, text);
                let mut mode = 0;
                for word in text.split(',') {
                    mode |= match word {
                        "srcip" => bits::SRCIP,
                        "srcport" => bits::SRCPORT,
                        "dstip" => bits::DSTIP,
                        "dstport" => bits::DSTPORT,
                        _ => {
                            return Err(invalid(
                                &option.flag(),
                                "mode",
                                text,
                                "expected a comma-separated list of srcip, srcport, dstip, dstport",
                            ));
                        }
                    };
                }
                once(&mut self.mode, mode, option)
            }
            "hashlimit-name" => {
                let text = value(option, text);
                if text.is_empty() || text.len() > MAX_NAME_LEN {
                    return Err(invalid(
                        &option.flag(),
                        "name",
                        text,
                        format!("expected 1 to {MAX_NAME_LEN} characters"),
                    ));
                }
                once(&mut self.name, text.to_string(), option)
            }
            "hashlimit-srcmask" | "hashlimit-dstmask" => {
                let text = value(option, text);
                // Read as far as either family allows; `finish` holds an
                // IPv4 rule to 32.
                number(option, "prefix length", text, 128)?;
                let slot = if option.name() == "hashlimit-srcmask" {
                    &mut self.srcmask
                } else {
                    &mut self.dstmask
                };
                once(slot, text.to_string(), option)
            }
            name => {
                let n = u32_option(option, value(option, text))?;
                let slot = match name {
                    "hashlimit-htable-size" => &mut self.size,
                    "hashlimit-htable-max" => &mut self.max,
                    "hashlimit-htable-gcinterval" => &mut self.gcinterval,
                    _ => &mut self.expire,
                };
                once(slot, n, option)
            }
        }
    }

    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Match, ParseError> {
        let Some((rate, above, unit)) = self.rate else {
            return Err(super::missing(
                &MODULE,
                "--hashlimit-upto or --hashlimit-above",
            ));
        };
        let Some(name) = self.name.clone() else {
            return Err(super::missing(&MODULE, "--hashlimit-name"));
        };
        if rule.table != TableName::Filter {
            return Err(ParseError::Unsupported {
                what: format!("-m hashlimit in the {} table", rule.table.as_str()),
                hint: "; netbeast keeps hashlimit buckets in the filter table only".into(),
            });
        }
        let (burst, default_expire) = match rate {
            HashRate::Packets { .. } => match self.burst {
                None => (DEFAULT_BURST, unit as u32 * 1000),
                // libxt_hashlimit takes a unit here too (400kb is 409600
                // packets), within the same bound.
                Some((n, _)) if n <= MAX_BURST => (n, unit as u32 * 1000),
                Some((n, _)) => {
                    return Err(invalid(
                        "--hashlimit-burst",
                        "burst",
                        &n.to_string(),
                        "expected 1 to 1000000 packets with a packet rate",
                    ));
                }
            },
            HashRate::Bytes { cost } => match self.burst {
                None => (0, BYTE_EXPIRE * 1000),
                // The burst's bytes as refills of the rate's second,
                // rounded up; never less than one second.
                Some((bytes, _)) => {
                    let rate = cost_to_bytes(cost).max(1);
                    if bytes < rate {
                        return Err(invalid(
                            "--hashlimit-burst",
                            "burst",
                            &bytes.to_string(),
                            format!("burst cannot be smaller than {rate}b (the rate's second)"),
                        ));
                    }
                    (bytes.div_ceil(rate), BYTE_EXPIRE_BURST * 1000)
                }
            },
        };
        let v6 = rule.family == Family::V6;
        let full: u64 = if v6 { 128 } else { 32 };
        let mask = |which: &'static str, text: &Option<String>| -> Result<u8, ParseError> {
            let Some(text) = text else {
                return Ok(full as u8);
            };
            let option = OPTIONS
                .iter()
                .find(|o| o.name() == which)
                .expect("a hashlimit mask option");
            Ok(number(option, "prefix length", text, full)? as u8)
        };
        let srcmask = mask("hashlimit-srcmask", &self.srcmask)?;
        let dstmask = mask("hashlimit-dstmask", &self.dstmask)?;
        Ok(Match::Hashlimit(Hashlimit {
            name,
            above,
            rate,
            burst,
            mode: self.mode.unwrap_or(0),
            srcmask,
            dstmask,
            size: self.size.unwrap_or(0),
            max: self.max.unwrap_or(0),
            gcinterval: self.gcinterval.unwrap_or(DEFAULT_GCINTERVAL),
            expire: self.expire.unwrap_or(default_expire),
            rate_match: self.rate_match,
            // Without rate-match iptables takes the interval and drops it
            // (-S does not print it): kept only with rate-match, so that a
            // saved rule restores as itself.
            interval: if self.rate_match {
                self.interval.unwrap_or(1)
            } else {
                1
            },
            v6,
        }))
    }
}

/// Filter table only. Small packet buckets like `-m limit`'s, upto or
/// above, on the palette's names; with the palette's `wild` odds, any
/// options a user can write, read by the parser (so the defaults are its
/// own) and kept when they print back as themselves (iptables rounds some
/// rates when it prints them).
fn random(d: &mut Dice, s: &Scope) -> Option<Match> {
    if s.table != TableName::Filter {
        return None;
    }
    if d.wild(s.palette)
        && let Some(m) = random_text(d)
    {
        return Some(m);
    }
    Some(Match::Hashlimit(Hashlimit {
        name: d.pick(s.palette.names).to_string(),
        above: d.chance(50),
        // Microseconds: 2 ms to 30 ms.
        rate: HashRate::Packets {
            period: d.pick(&[2_000u64, 5_000, 10_000, 30_000]),
        },
        burst: d.pick(&[1u64, 2, 3]),
        mode: d.below(16) as u32,
        srcmask: 32,
        dstmask: 32,
        size: 0,
        max: 0,
        gcinterval: DEFAULT_GCINTERVAL,
        expire: 1000,
        rate_match: false,
        interval: 1,
        v6: false,
    }))
}

fn random_text(d: &mut Dice) -> Option<Match> {
    let bytes = d.chance(20);
    let rate = if bytes {
        format!("{}kb/s", 1 + d.below(4096))
    } else {
        format!(
            "{}/{}",
            1 + d.below(1_000_000),
            d.pick(&["s", "m", "h", "d"])
        )
    };
    let name: String = (0..1 + d.below(8))
        .map(|_| (b'a' + d.below(26) as u8) as char)
        .collect();
    let mut line = format!(
        "-A INPUT -m hashlimit --hashlimit-{} {rate} --hashlimit-name {name} \
         --hashlimit-srcmask {} --hashlimit-dstmask {} --hashlimit-htable-size {} \
         --hashlimit-htable-max {}",
        if d.chance(50) { "above" } else { "upto" },
        d.below(33),
        d.below(33),
        d.below(3) * 1000,
        d.below(3) * 5000,
    );
    if !bytes {
        line += &format!(" --hashlimit-burst {}", 1 + d.below(1_000_000));
    } else if d.chance(50) {
        // Bytes: a burst of some seconds of the rate, in any unit.
        let kb = rate.trim_end_matches("kb/s").parse::<u64>().unwrap_or(1);
        let burst = kb * (1 + d.below(100) as u64);
        line += &match d.below(3) {
            0 => format!(" --hashlimit-burst {burst}kb"),
            1 => format!(" --hashlimit-burst {}b", burst * 1024),
            _ => format!(" --hashlimit-burst {}mb", burst.div_ceil(1024)),
        };
    }
    let mode = d.below(16);
    if mode != 0 {
        let names = ["srcip", "srcport", "dstip", "dstport"];
        let list: Vec<&str> = (0..4)
            .filter(|b| mode & 1 << b != 0)
            .map(|b| names[b])
            .collect();
        line += &format!(" --hashlimit-mode {}", list.join(","));
    }
    if d.chance(50) {
        line += &format!(" --hashlimit-htable-expire {}", 1 + d.below(100_000));
    }
    let first_match = |line: &str| {
        let words: Vec<String> = line.split_whitespace().map(String::from).collect();
        match crate::rules::parse::parse_iptables_args(&words) {
            Ok(crate::rules::parse::IptablesCommand {
                action: crate::rules::parse::Action::Append { rules, .. },
                ..
            }) => rules.into_iter().next()?.matches.into_iter().next(),
            _ => None,
        }
    };
    let m = first_match(&line)?;
    let mut again = "-A INPUT".to_string();
    m.ext().save(&mut again);
    (first_match(&again).as_ref() == Some(&m)).then_some(m)
}

/// Every `-m hashlimit` table a ruleset names: its [`Hashlimit::table`]
/// and [`Hashlimit::table_max`]. Where rules naming one table disagree, the
/// first rule (table, chain, rule order) decides, as the kernel's table
/// keeps the options of the rule that made it.
pub fn tables(ruleset: &crate::rules::model::Ruleset) -> Vec<(u64, u64)> {
    let mut seen = std::collections::BTreeMap::new();
    let tables = ruleset.tables();
    for rule in tables
        .iter()
        .flat_map(|(_, t)| &t.chains)
        .flat_map(|c| &c.rules)
    {
        for m in &rule.matches {
            if let Match::Hashlimit(h) = m {
                seen.entry(h.table()).or_insert_with(|| h.table_max());
            }
        }
    }
    seen.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_rates_print_as_iptables() {
        for (given, printed) in [
            ("10kb/s", "10kb/s"),
            ("4kb/s", "4kb/s"),
            ("10mb/s", "10mb/s"),
            ("123456b/s", "123456b/s"),
            ("512b/s", "512b/s"),
            ("1mb/s", "1mb/s"),
        ] {
            let Some(Ok(cost)) = parse_byte_rate(given) else {
                panic!("{given}");
            };
            assert_eq!(bytes_text(cost), printed, "{given}");
        }
    }

    #[test]
    fn packet_rates_print_as_iptables() {
        for (given, printed, quantum) in [
            ("50/sec", "50/sec", 1000),
            ("1000000/sec", "1000000/sec", 1000),
            ("7/min", "7/min", 60_000),
            ("1/day", "1/day", 86_400_000),
            ("3", "3/sec", 1000),
        ] {
            let (period, _) = parse_packet_rate(given).unwrap().unwrap();
            assert_eq!(rate_text(period), (printed.to_string(), quantum), "{given}");
        }
        assert_eq!(parse_packet_rate("1000001/s"), Some(Err(())));
    }

    /// The table bound, as xt_hashlimit's `htable_create` derives it.
    #[test]
    fn table_max_is_the_kernels() {
        let with = |size: u32, max: u32| {
            let rule = format!(
                "-A INPUT -m hashlimit --hashlimit-upto 1/sec --hashlimit-name t \
                 --hashlimit-htable-size {size} --hashlimit-htable-max {max}"
            );
            let words: Vec<String> = rule.split_whitespace().map(String::from).collect();
            match crate::rules::parse::parse_iptables_args(&words) {
                Ok(crate::rules::parse::IptablesCommand {
                    action: crate::rules::parse::Action::Append { rules, .. },
                    ..
                }) => match &rules[0].matches[0] {
                    Match::Hashlimit(h) => h.table_max(),
                    other => panic!("{rule}: {other:?}"),
                },
                other => panic!("{rule}: {other:?}"),
            }
        };
        // No max: 8 × the size (8192 unless given).
        assert_eq!(with(0, 0), 65_536);
        assert_eq!(with(100, 0), 800);
        // A max below the size is raised to it.
        assert_eq!(with(0, 2), 8192);
        assert_eq!(with(2, 2), 2);
        assert_eq!(with(2, 3), 3);
        // At most what all tables hold together.
        assert_eq!(
            with(0, 1_000_000),
            u64::from(netbeast_common::HASHLIMIT_ENTRIES)
        );
    }
}
