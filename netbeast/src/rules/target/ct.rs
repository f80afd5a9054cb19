//! `-j CT` and its old name `-j NOTRACK` (libxt_CT, xt_CT): the raw
//! table's say over connection tracking. `--notrack` leaves the packet
//! out of conntrack (state UNTRACKED, no entry made or updated); a bare
//! `-j CT` attaches the default template, which changes nothing.
//! `--ctevents` and `--expevents` choose which conntrack events the
//! connection reports to listeners (`conntrack -E`): netbeast's conntrack
//! reports none, so they change nothing a packet meets either; they are
//! kept and printed as libxt_CT prints them. `--zone N` puts the packet's
//! connection in conntrack zone N (its lookup, the connection it opens,
//! NAT's choice of a free tuple and connlimit's count all in that zone:
//! the same tuple in two zones is two connections); `--zone 0` is the
//! default zone (libxt_CT does not even print it). The first CT rule a
//! packet meets decides, as xt_CT leaves a packet with a template alone,
//! so a bare `-j CT` (the default template) before a `--notrack` keeps
//! the packet tracked. The other options (helpers, zones of one
//! direction or from the mark, timeout policies) need parts of conntrack
//! netbeast does not have: "not supported yet", with the reason.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

use super::{TargetModule, TargetParser, check_placement, no_suggestion};
use crate::rules::ext::{OptSpec, RuleContext, Value};
use crate::rules::generate::Random;
use crate::rules::model::{TableName, Target};
use crate::rules::parse::{ParseError, invalid, parse_c_number_in};
use netbeast_common::target as code;

/// A `-j CT` / `-j NOTRACK` rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ct {
    /// `--notrack` (always, for `-j NOTRACK`).
    pub notrack: bool,
    /// Written `-j NOTRACK`: iptables keeps the name it was given (`-S`
    /// prints it back, `-D ... -j CT --notrack` does not delete it).
    pub alias: bool,
    /// `--ctevents`: bit `n` for the `n`th name of [`CT_EVENTS`] (the
    /// kernel's `IPCT_*` numbers). Stored and printed only: netbeast's
    /// conntrack sends no events.
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub ct_events: u16,
    /// `--expevents`: bit `n` for the `n`th name of [`EXP_EVENTS`].
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub exp_events: u16,
    /// `--zone N`: the conntrack zone (both directions); 0 is the default
    /// zone, which libxt_CT does not print.
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub zone: u16,
}

/// libxt_CT's conntrack event names, in the order of the kernel's
/// `IPCT_*` bits and of the text it prints (`natseqinfo` is `IPCT_SEQADJ`).
pub const CT_EVENTS: [&str; 10] = [
    "new",
    "related",
    "destroy",
    "reply",
    "assured",
    "protoinfo",
    "helper",
    "mark",
    "natseqinfo",
    "secmark",
];

/// libxt_CT's expectation event names (`IPEXP_NEW`).
pub const EXP_EVENTS: [&str; 1] = ["new"];

/// `new,related,...` as libxt_CT reads it: names split at every comma,
/// each exactly one of `names` (case matters; an empty one is unknown).
fn parse_events(option: &str, names: &[&str], text: &str) -> Result<u16, ParseError> {
    let mut mask = 0;
    for event in text.split(',') {
        let Some(bit) = names.iter().position(|n| *n == event) else {
            return Err(invalid(
                option,
                "event",
                event,
                format!("unknown event type; use {}", names.join(", ")),
            ));
        };
        mask |= 1 << bit;
    }
    Ok(mask)
}

/// ` PREFIX new,related`: the names of the bits of `mask`, in table order.
fn events_text(out: &mut String, prefix: &str, names: &[&str], mask: u16) {
    if mask == 0 {
        return;
    }
    let set: Vec<&str> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & 1 << i != 0)
        .map(|(_, n)| *n)
        .collect();
    let _ = write!(out, " {prefix} {}", set.join(","));
}

/// The raw table is the only one xt_CT registers in.
const RAW: &[TableName] = &[TableName::Raw];

/// `CT`'s options: `--notrack`, the event masks and `--zone N` are taken;
/// the others are declared so that they get "not supported yet" rather
/// than "unknown".
static OPTIONS: [OptSpec; 8] = [
    OptSpec {
        names: &["notrack"],
        value: Value::None,
        negatable: false,
    },
    OptSpec {
        names: &["helper"],
        value: Value::One("a conntrack helper name"),
        negatable: false,
    },
    OptSpec {
        names: &["ctevents"],
        value: Value::One("a list of conntrack events"),
        negatable: false,
    },
    OptSpec {
        names: &["expevents"],
        value: Value::One("a list of expectation events"),
        negatable: false,
    },
    OptSpec {
        names: &["zone"],
        value: Value::One("a zone id"),
        negatable: false,
    },
    OptSpec {
        names: &["zone-orig"],
        value: Value::One("a zone id"),
        negatable: false,
    },
    OptSpec {
        names: &["zone-reply"],
        value: Value::One("a zone id"),
        negatable: false,
    },
    OptSpec {
        names: &["timeout"],
        value: Value::One("a timeout policy name"),
        negatable: false,
    },
];

/// Why each option other than `--notrack` is not supported yet.
fn unsupported_reason(option: &str) -> &'static str {
    match option {
        "helper" => {
            "; netbeast's conntrack has no helpers (ftp, sip, ...) to attach, so no RELATED \
             data connections are expected"
        }
        "zone" | "zone-orig" | "zone-reply" => {
            "; netbeast's conntrack keeps one zone per connection, for both directions \
             (--zone N is taken): a zone of one direction only, or taken from the packet's \
             mark, is not kept"
        }
        _ => {
            "; netbeast's conntrack timeouts are set per namespace with attach --ct-timeout \
             NAME=SECONDS, not per rule"
        }
    }
}

pub static MODULE: TargetModule = TargetModule {
    name: "CT",
    options: &OPTIONS,
    example: "-t raw -A PREROUTING -p tcp --dport 80 --syn -j CT --notrack",
    parser: || {
        Box::new(CtParser {
            alias: false,
            ct: Ct::default(),
            zone_given: false,
        })
    },
    code: code::NONE,
    tables: RAW,
    chains: None,
    chain_reason: "",
    save: |target, out| match target {
        Target::Ct(ct) => ct.save(out),
        _ => unreachable!("the CT module saves CT"),
    },
    list: |target, out, _| match target {
        Target::Ct(ct) => ct.list(out),
        _ => unreachable!("the CT module lists CT"),
    },
    suggest: no_suggestion,
    hidden: false,
    // Not drawn: its effect (no connection) is a conntrack matter, which
    // neither the reference classifier nor the differential harness
    // models; tests/program.rs, tests/raw.rs and tests/synflood.rs test
    // it on packets.
    random: Random::NEVER,
};

/// `-j NOTRACK`: xtables' alias of `-j CT --notrack`, printed as given.
pub static NOTRACK: TargetModule = TargetModule {
    name: "NOTRACK",
    options: &[],
    example: "-t raw -A PREROUTING -p tcp --dport 80 --syn -j NOTRACK",
    parser: || {
        Box::new(CtParser {
            alias: true,
            ct: Ct {
                notrack: true,
                alias: true,
                ..Ct::default()
            },
            zone_given: false,
        })
    },
    code: code::NOTRACK,
    tables: RAW,
    chains: None,
    chain_reason: "",
    save: MODULE.save,
    list: MODULE.list,
    suggest: no_suggestion,
    hidden: false,
    random: Random::NEVER,
};

impl Ct {
    /// Its module: the alias keeps its own name.
    pub fn module(&self) -> &'static TargetModule {
        if self.alias { &NOTRACK } else { &MODULE }
    }

    /// Its kernel code: NOTRACK when it leaves the packet untracked, else
    /// CT (a template: the zone, which is the rule's argument). Both take
    /// the packet's one template, so the first decides.
    pub fn code(&self) -> u32 {
        if self.notrack {
            code::NOTRACK
        } else {
            code::CT
        }
    }

    /// ` -j CT --notrack`, ` -j NOTRACK`, ` -j CT --ctevents new,related`
    /// or ` -j CT`, as libxt_CT saves them.
    pub fn save(&self, out: &mut String) {
        if self.alias {
            out.push_str(" -j NOTRACK");
            return;
        }
        out.push_str(" -j CT");
        if self.notrack {
            out.push_str(" --notrack");
        }
        events_text(out, "--ctevents", &CT_EVENTS, self.ct_events);
        events_text(out, "--expevents", &EXP_EVENTS, self.exp_events);
        if self.zone != 0 {
            let _ = write!(out, " --zone {}", self.zone);
        }
    }

    /// The last column of `-L`: ` NOTRACK`, ` CT notrack`, ` CT ctevents
    /// new` or ` CT`.
    pub fn list(&self, out: &mut String) {
        if self.alias {
            out.push_str(" NOTRACK");
            return;
        }
        out.push_str(" CT");
        if self.notrack {
            out.push_str(" notrack");
        }
        events_text(out, "ctevents", &CT_EVENTS, self.ct_events);
        events_text(out, "expevents", &EXP_EVENTS, self.exp_events);
        if self.zone != 0 {
            let _ = write!(out, " zone {}", self.zone);
        }
    }
}

#[derive(Clone, Debug)]
struct CtParser {
    /// Parsing `-j NOTRACK`, which takes no option.
    alias: bool,
    ct: Ct,
    /// `--zone` was given (once, as libxt_CT allows).
    zone_given: bool,
}

impl TargetParser for CtParser {
    fn check_repeat(&self, option: &'static OptSpec) -> Result<(), ParseError> {
        let given = match option.name() {
            "notrack" => self.ct.notrack,
            "ctevents" => self.ct.ct_events != 0,
            "expevents" => self.ct.exp_events != 0,
            "zone" => self.zone_given,
            _ => false,
        };
        if given {
            return Err(ParseError::RepeatedTargetOption {
                target: "CT",
                option: option.flag(),
                hint: "",
            });
        }
        Ok(())
    }

    fn option(&mut self, option: &'static OptSpec, values: &[&str]) -> Result<(), ParseError> {
        match option.name() {
            "notrack" => {
                self.ct.notrack = true;
                Ok(())
            }
            "ctevents" => {
                self.ct.ct_events = parse_events(&option.flag(), &CT_EVENTS, values[0])?;
                Ok(())
            }
            "expevents" => {
                self.ct.exp_events = parse_events(&option.flag(), &EXP_EVENTS, values[0])?;
                Ok(())
            }
            name @ ("zone" | "zone-orig" | "zone-reply") => {
                // libxt_CT: `mark` or a number (C notation) up to 65535.
                let text = values[0];
                let zone = if text.eq_ignore_ascii_case("mark") {
                    None
                } else {
                    Some(
                        parse_c_number_in(text.trim_start(), u64::from(u16::MAX)).ok_or_else(
                            || {
                                invalid(
                                    &option.flag(),
                                    "zone ID",
                                    text,
                                    "expected a zone number from 0 to 65535, or mark",
                                )
                            },
                        )?,
                    )
                };
                // A zone for both directions (0, the default zone, is a
                // bare `-j CT`, as libxt_CT prints it).
                if name == "zone"
                    && let Some(zone) = zone
                {
                    self.zone_given = true;
                    self.ct.zone = zone as u16;
                    return Ok(());
                }
                Err(ParseError::Unsupported {
                    what: format!("-j CT --{name} {text}"),
                    hint: format!("{}; -j CT --notrack is supported", unsupported_reason(name)),
                })
            }
            other => Err(ParseError::Unsupported {
                what: format!("-j CT --{other}"),
                hint: format!(
                    "{}; -j CT --notrack is supported",
                    unsupported_reason(other)
                ),
            }),
        }
    }

    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Target, ParseError> {
        let module = if self.alias { &NOTRACK } else { &MODULE };
        check_placement(module, rule)?;
        Ok(Target::Ct(self.ct))
    }

    fn boxed_clone(&self) -> Box<dyn TargetParser> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::model::Family;
    use crate::rules::parse::parse_args;

    fn parse_error(line: &str) -> String {
        let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        match parse_args(&args, Family::V4) {
            Ok(_) => panic!("{line}: accepted"),
            Err(e) => e.to_string(),
        }
    }

    /// CT is the raw table's; outside it the answer says where it goes,
    /// and its options other than --notrack say why they are not there.
    #[test]
    fn placement_and_unsupported_options_are_explained() {
        for line in [
            "-A INPUT -j CT --notrack",
            "-t nat -A PREROUTING -j CT --notrack",
            "-A INPUT -j NOTRACK",
        ] {
            let e = parse_error(line);
            assert!(
                e.contains("in the raw table only") && e.contains("iptables -t raw -A PREROUTING"),
                "{line}: {e}"
            );
        }
        let e = parse_error("-t raw -A PREROUTING -j CT --zone-orig 1");
        assert!(e.contains("not supported yet") && e.contains("zone"), "{e}");
        let e = parse_error("-t raw -A PREROUTING -j CT --notrack --notrack");
        assert!(e.contains("--notrack"), "{e}");
        let e = parse_error("-t raw -A PREROUTING -j REJECT");
        assert!(
            e.contains("in the filter table only") && e.contains("iptables -A INPUT -j REJECT"),
            "{e}"
        );
    }

    /// The event masks are read as libxt_CT reads them and printed in its
    /// table's order; zones other than 0 are refused with the reason, a
    /// zone past 16 bits as invalid.
    #[test]
    fn events_and_zones() {
        let target = |line: &str| {
            let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            let cmd = parse_args(&args, Family::V4).unwrap_or_else(|e| panic!("{line}: {e}"));
            let crate::rules::parse::Action::Append { rules, .. } = cmd.action else {
                panic!("{line}: not an append");
            };
            match &rules[0].target {
                Target::Ct(ct) => ct.clone(),
                other => panic!("{line}: {other:?}"),
            }
        };
        let ct =
            target("-t raw -A PREROUTING -j CT --ctevents mark,new,secmark,new --expevents new");
        let (mut save, mut list) = (String::new(), String::new());
        ct.save(&mut save);
        ct.list(&mut list);
        assert_eq!(save, " -j CT --ctevents new,mark,secmark --expevents new");
        assert_eq!(list, " CT ctevents new,mark,secmark expevents new");
        assert_eq!(ct.code(), code::CT, "a template, in the default zone");
        assert_eq!(ct.zone, 0);
        let ct = target("-t raw -A OUTPUT -j CT --notrack --ctevents natseqinfo");
        save.clear();
        ct.save(&mut save);
        assert_eq!(save, " -j CT --notrack --ctevents natseqinfo");
        assert_eq!(ct.code(), code::NOTRACK);
        for zero in ["0", "0x0", "00"] {
            assert_eq!(
                target(&format!("-t raw -A PREROUTING -j CT --zone {zero}")),
                Ct::default()
            );
        }
        for bad in [
            "--ctevents New",
            "--ctevents new,",
            "--ctevents bogus",
            "--expevents related",
            "--zone 65536",
            "--zone -1",
            "--zone-orig x",
        ] {
            let e = parse_error(&format!("-t raw -A PREROUTING -j CT {bad}"));
            assert!(!e.contains("not supported yet"), "{bad}: {e}");
        }
        for unsupported in ["--zone mark", "--zone-orig 0", "--zone-reply 7"] {
            let e = parse_error(&format!("-t raw -A PREROUTING -j CT {unsupported}"));
            assert!(
                e.contains("not supported yet") && e.contains("--zone N is taken"),
                "{unsupported}: {e}"
            );
        }
        // Zones for both directions, read as libxt_CT reads them (C
        // notation, up to 65535) and printed after the events.
        for (text, zone) in [("65535", 65535), ("0x10", 16), ("010", 8), ("1", 1)] {
            let ct = target(&format!(
                "-t raw -A PREROUTING -j CT --zone {text} --ctevents new"
            ));
            assert_eq!(ct.zone, zone, "{text}");
            assert_eq!(ct.code(), code::CT);
            let (mut save, mut list) = (String::new(), String::new());
            ct.save(&mut save);
            ct.list(&mut list);
            assert_eq!(save, format!(" -j CT --ctevents new --zone {zone}"));
            assert_eq!(list, format!(" CT ctevents new zone {zone}"));
        }
        let ct = target("-t raw -A OUTPUT -j CT --notrack --zone 3");
        assert_eq!((ct.code(), ct.zone), (code::NOTRACK, 3));
        let e = parse_error("-t raw -A PREROUTING -j CT --zone 1 --zone 2");
        assert!(e.contains("--zone"), "{e}");
        let e = parse_error("-t raw -A PREROUTING -j CT --ctevents new --ctevents new");
        assert!(e.contains("--ctevents"), "{e}");
    }

    #[test]
    fn texts_are_libxt_cts() {
        let mut out = String::new();
        let forms = [
            (true, false, " -j CT --notrack", " CT notrack"),
            (true, true, " -j NOTRACK", " NOTRACK"),
            (false, false, " -j CT", " CT"),
        ];
        for (notrack, alias, save, list) in forms {
            let ct = Ct {
                notrack,
                alias,
                ..Ct::default()
            };
            out.clear();
            ct.save(&mut out);
            assert_eq!(out, save);
            out.clear();
            ct.list(&mut out);
            assert_eq!(out, list);
        }
        assert_eq!(Ct::default().code(), code::CT);
        assert_eq!(
            Ct {
                notrack: true,
                ..Ct::default()
            }
            .code(),
            code::NOTRACK
        );
    }
}
