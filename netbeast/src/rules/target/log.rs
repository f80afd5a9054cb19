//! `-j LOG` (libxt_LOG): a non-terminating target whose side effect is a
//! line in the kernel's LOG format (`crate::log` formats it from the
//! kernel's event). Its options, checks and texts as iptables has them.

use crate::rules::generate::{Dice, Random, Scope};
use std::fmt::Write as _;

use netbeast_common::{LOG_PREFIX_MAX, LogTarget, log_flags};
use serde::{Deserialize, Serialize};

use super::{TargetModule, TargetParser, check_placement, no_suggestion};
use crate::rules::ext::{OptSpec, RuleContext, Value, comment::quote};
use crate::rules::model::{TableName, Target};
use crate::rules::parse::{ParseError, invalid};
use netbeast_common::target as code;

/// syslog's LOG_WARNING: the level of a rule without `--log-level`.
pub const DEFAULT_LEVEL: u8 = 4;

/// A `-j LOG` rule's options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Log {
    /// `--log-prefix`, at most `LOG_PREFIX_MAX` bytes, no newline.
    pub prefix: String,
    /// `--log-level`, 0 (emerg) to 7 (debug).
    pub level: u8,
    /// `log_flags::*` (the kernel's `XT_LOG_*` bits).
    pub flags: u8,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            prefix: String::new(),
            level: DEFAULT_LEVEL,
            flags: 0,
        }
    }
}

/// The switches in the order libxt_LOG prints them: (flag, save option,
/// `-L` word).
const SWITCHES: [(u8, &str, &str); 5] = [
    (log_flags::TCP_SEQUENCE, "log-tcp-sequence", "tcp-sequence"),
    (log_flags::TCP_OPTIONS, "log-tcp-options", "tcp-options"),
    (log_flags::IP_OPTIONS, "log-ip-options", "ip-options"),
    (log_flags::UID, "log-uid", "uid"),
    (log_flags::MAC_DECODE, "log-macdecode", "macdecode"),
];

/// The names `--log-level` takes (xtables' table, `error` and `panic`
/// deprecated but accepted).
const LEVEL_NAMES: [(&str, u8); 9] = [
    ("alert", 1),
    ("crit", 2),
    ("debug", 7),
    ("emerg", 0),
    ("error", 3),
    ("info", 6),
    ("notice", 5),
    ("panic", 0),
    ("warning", 4),
];

/// The name `-L` prints for a level: the first of syslog.h's
/// `prioritynames` with that value.
fn level_name(level: u8) -> Option<&'static str> {
    const NAMES: [&str; 8] = [
        "emerg", "alert", "crit", "err", "warn", "notice", "info", "debug",
    ];
    NAMES.get(level as usize).copied()
}

/// `--log-level`: a number 0..=7 (decimal, `0x` hex or `0` octal, as
/// strtoul with base 0) or one of [`LEVEL_NAMES`].
pub fn parse_level(text: &str) -> Result<u8, ParseError> {
    let number = if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16).ok()
    } else if text.len() > 1 && text.starts_with('0') {
        u32::from_str_radix(&text[1..], 8).ok()
    } else {
        text.parse::<u32>().ok()
    };
    if let Some(n) = number.filter(|n| *n <= 7) {
        return Ok(n as u8);
    }
    LEVEL_NAMES
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, level)| *level)
        .ok_or_else(|| {
            invalid(
                "--log-level",
                "log level",
                text,
                "expected 0 to 7 or one of emerg, alert, crit, error, warning, notice, info, debug",
            )
        })
}

impl Log {
    /// What the kernel copies into each event of this rule; `rule` is
    /// its number among the ruleset's LOG rules.
    pub fn kernel(&self, rule: u32) -> LogTarget {
        let mut prefix = [0u8; LOG_PREFIX_MAX + 3];
        let bytes = self.prefix.as_bytes();
        let n = bytes.len().min(LOG_PREFIX_MAX);
        prefix[..n].copy_from_slice(&bytes[..n]);
        LogTarget {
            prefix,
            level: self.level,
            flags: self.flags,
            _pad: [0; 2],
            rule,
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

impl Log {
    /// ` -j LOG` and its options, as libxt_LOG saves them.
    pub fn save(&self, out: &mut String) {
        out.push_str(" -j LOG");
        if !self.prefix.is_empty() {
            let _ = write!(out, " --log-prefix {}", quote(&self.prefix));
        }
        if self.level != DEFAULT_LEVEL {
            let _ = write!(out, " --log-level {}", self.level);
        }
        for (flag, option, _) in SWITCHES {
            if self.has(flag) {
                let _ = write!(out, " --{option}");
            }
        }
    }

    /// Its `-L` column, as libxt_LOG prints it.
    pub fn list(&self, out: &mut String, numeric: bool) {
        out.push_str(" LOG");
        if numeric {
            let _ = write!(out, " flags {} level {}", self.flags, self.level);
        } else {
            match level_name(self.level) {
                Some(name) => {
                    let _ = write!(out, " level {name}");
                }
                None => {
                    let _ = write!(out, " UNKNOWN level {}", self.level);
                }
            }
            for (flag, _, word) in SWITCHES {
                if self.has(flag) {
                    let _ = write!(out, " {word}");
                }
            }
        }
        if !self.prefix.is_empty() {
            let _ = write!(out, " prefix \"{}\"", self.prefix);
        }
    }
}

static OPTIONS: [OptSpec; 7] = [
    OptSpec {
        names: &["log-level"],
        value: Value::One(
            "a log level: 0 to 7, or emerg, alert, crit, error, warning, notice, info, debug",
        ),
        negatable: false,
    },
    OptSpec {
        names: &["log-prefix"],
        value: Value::One("a prefix of at most 29 characters, quoted if it has spaces"),
        negatable: false,
    },
    OptSpec {
        names: &["log-tcp-sequence"],
        value: Value::None,
        negatable: false,
    },
    OptSpec {
        names: &["log-tcp-options"],
        value: Value::None,
        negatable: false,
    },
    OptSpec {
        names: &["log-ip-options"],
        value: Value::None,
        negatable: false,
    },
    OptSpec {
        names: &["log-uid"],
        value: Value::None,
        negatable: false,
    },
    OptSpec {
        names: &["log-macdecode"],
        value: Value::None,
        negatable: false,
    },
];

pub static MODULE: TargetModule = TargetModule {
    name: "LOG",
    options: &OPTIONS,
    example: "-j LOG --log-prefix \"dropped: \" --log-level info",
    parser: || Box::new(LogParser::default()),
    code: code::LOG,
    tables: &[
        TableName::Filter,
        TableName::Nat,
        TableName::Raw,
        TableName::Mangle,
    ],
    chains: None,
    chain_reason: "",
    save: |target, out| match target {
        Target::Log(log) => log.save(out),
        _ => unreachable!("the LOG module saves LOG"),
    },
    list: |target, out, numeric| match target {
        Target::Log(log) => log.list(out, numeric),
        _ => unreachable!("the LOG module lists LOG"),
    },
    suggest: no_suggestion,
    hidden: false,
    random: Random {
        weight: 1,
        draw: random,
    },
};

#[derive(Clone, Debug, Default)]
struct LogParser {
    log: Log,
    /// Options given so far: each may be given once.
    seen: Vec<&'static str>,
}

impl TargetParser for LogParser {
    fn option(&mut self, option: &'static OptSpec, values: &[&str]) -> Result<(), ParseError> {
        let name = option.name();
        if self.seen.contains(&name) {
            return Err(ParseError::RepeatedTargetOption {
                target: "LOG",
                option: option.flag(),
                hint: "",
            });
        }
        self.seen.push(name);
        match name {
            "log-level" => self.log.level = parse_level(values[0])?,
            "log-prefix" => self.log.prefix = parse_prefix(values[0])?,
            _ => {
                let (flag, _, _) = SWITCHES
                    .iter()
                    .find(|(_, o, _)| *o == name)
                    .expect("every switch of OPTIONS is in SWITCHES");
                self.log.flags |= flag;
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Target, ParseError> {
        if rule.table == TableName::Nat && rule.chain == "OUTPUT" {
            return Err(ParseError::Unsupported {
                what: "-j LOG in the nat table's OUTPUT chain".into(),
                hint: "; netbeast translates local connections at their socket, before there \
                       is a packet to log: log them in the filter table's OUTPUT chain instead \
                       (iptables -A OUTPUT ... -j LOG)"
                    .into(),
            });
        }
        check_placement(&MODULE, rule)?;
        Ok(Target::Log(self.log))
    }

    fn boxed_clone(&self) -> Box<dyn TargetParser> {
        Box::new(self.clone())
    }
}

/// `--log-prefix`: 1 to `LOG_PREFIX_MAX` bytes, no newline (iptables'
/// checks; iptables 1.8.9 silently cut longer prefixes, later ones refuse
/// them as netbeast does).
pub fn parse_prefix(text: &str) -> Result<String, ParseError> {
    if text.is_empty() {
        return Err(invalid(
            "--log-prefix",
            "prefix",
            text,
            "the prefix must have at least one character (leave --log-prefix out for none)",
        ));
    }
    if text.contains('\n') {
        return Err(invalid(
            "--log-prefix",
            "prefix",
            text,
            "newlines are not allowed in a log prefix",
        ));
    }
    if text.len() > LOG_PREFIX_MAX {
        return Err(invalid(
            "--log-prefix",
            "prefix",
            text,
            format!(
                "at most {LOG_PREFIX_MAX} characters (the kernel's limit), this one has {}; \
                 shorten it",
                text.len()
            ),
        ));
    }
    Ok(text.to_string())
}

/// Not where there is no packet (nat OUTPUT); the defaults, or with the
/// palette's `wild` odds any options.
fn random(d: &mut Dice, s: &Scope) -> Option<Target> {
    if !s.has_packet() {
        return None;
    }
    let mut log = Log::default();
    if d.wild(s.palette) {
        log.prefix = d.text(LOG_PREFIX_MAX);
        log.level = d.below(8) as u8;
        log.flags = SWITCHES
            .iter()
            .filter(|_| d.chance(30))
            .fold(0, |flags, (flag, _, _)| flags | flag);
    }
    Some(Target::Log(log))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_as_iptables_reads_them() {
        for (text, level) in [
            ("0", 0),
            ("7", 7),
            ("0x3", 3),
            ("04", 4),
            ("alert", 1),
            ("error", 3),
            ("panic", 0),
            ("warning", 4),
            ("debug", 7),
        ] {
            assert_eq!(parse_level(text).unwrap(), level, "{text}");
        }
        for bad in ["8", "warn", "err", "bad", "", "-1", "WARNING"] {
            assert!(parse_level(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn prefixes_up_to_29_bytes() {
        assert!(parse_prefix(&"x".repeat(29)).is_ok());
        let err = parse_prefix(&"x".repeat(30)).unwrap_err().to_string();
        assert!(err.contains("at most 29"), "{err}");
        assert!(parse_prefix("").is_err());
        assert!(parse_prefix("a\nb").is_err());
    }

    /// The article's rule, as the shell hands it over (`--opt=value`).
    #[test]
    fn the_articles_rule_parses_and_saves() {
        let args: Vec<String> = [
            "-I",
            "INPUT",
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-j",
            "LOG",
            "--log-prefix=New incomming: ",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let cmd = crate::rules::parse::parse_iptables_args(&args).unwrap();
        let mut ruleset = crate::rules::model::Ruleset::default();
        crate::rules::command::apply(&mut ruleset, &cmd).unwrap();
        let rule = &ruleset.filter.chain("INPUT").unwrap().rules[0];
        assert_eq!(
            rule.target,
            Target::Log(Log {
                prefix: "New incomming: ".into(),
                ..Log::default()
            })
        );
        assert!(!rule.target.terminates());
        let mut s = String::new();
        if let Target::Log(log) = &rule.target {
            log.save(&mut s);
        }
        assert_eq!(s, " -j LOG --log-prefix \"New incomming: \"");
    }

    #[test]
    fn listings_as_libxt_log_prints_them() {
        let log = Log {
            prefix: "New incomming: ".into(),
            level: 3,
            flags: log_flags::UID | log_flags::MAC_DECODE,
        };
        let mut s = String::new();
        log.save(&mut s);
        assert_eq!(
            s,
            " -j LOG --log-prefix \"New incomming: \" --log-level 3 --log-uid --log-macdecode"
        );
        let mut l = String::new();
        log.list(&mut l, false);
        assert_eq!(l, " LOG level err uid macdecode prefix \"New incomming: \"");
        let mut n = String::new();
        log.list(&mut n, true);
        assert_eq!(n, " LOG flags 40 level 3 prefix \"New incomming: \"");
    }
}
