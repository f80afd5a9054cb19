//! `-j CT` and its old name `-j NOTRACK` (libxt_CT, xt_CT): the raw
//! table's say over connection tracking. `--notrack` leaves the packet
//! out of conntrack (state UNTRACKED, no entry made or updated); a bare
//! `-j CT` attaches the default template, which changes nothing. The
//! other options (helpers, zones, event masks, timeout policies) need
//! parts of conntrack netbeast does not have: "not supported yet", with
//! the reason.

use serde::{Deserialize, Serialize};

use super::{TargetModule, TargetParser, check_placement, no_suggestion};
use crate::rules::ext::{OptSpec, RuleContext, Value};
use crate::rules::generate::Random;
use crate::rules::model::{TableName, Target};
use crate::rules::parse::ParseError;
use netbeast_common::target as code;

/// A `-j CT` / `-j NOTRACK` rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ct {
    /// `--notrack` (always, for `-j NOTRACK`).
    pub notrack: bool,
    /// Written `-j NOTRACK`: iptables keeps the name it was given (`-S`
    /// prints it back, `-D ... -j CT --notrack` does not delete it).
    pub alias: bool,
}

/// The raw table is the only one xt_CT registers in.
const RAW: &[TableName] = &[TableName::Raw];

/// `CT`'s options. Only `--notrack` is implemented; the others are
/// declared so that they get "not supported yet" rather than "unknown".
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
        "ctevents" | "expevents" => {
            "; netbeast's conntrack sends no events (conntrack -E), so there is nothing to \
             filter"
        }
        "zone" | "zone-orig" | "zone-reply" => {
            "; netbeast's conntrack has one zone per network namespace (zone 0)"
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
    random: Random {
        weight: 0,
        draw: |_, _| None,
    },
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
            },
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
    random: Random {
        weight: 0,
        draw: |_, _| None,
    },
};

impl Ct {
    /// Its module: the alias keeps its own name.
    pub fn module(&self) -> &'static TargetModule {
        if self.alias { &NOTRACK } else { &MODULE }
    }

    /// Its kernel code: NOTRACK when it leaves the packet untracked, else
    /// no target at all (a bare `-j CT` changes nothing).
    pub fn code(&self) -> u32 {
        if self.notrack {
            code::NOTRACK
        } else {
            code::NONE
        }
    }

    /// ` -j CT --notrack`, ` -j NOTRACK` or ` -j CT`, as libxt_CT saves them.
    pub fn save(&self, out: &mut String) {
        if self.alias {
            out.push_str(" -j NOTRACK");
        } else if self.notrack {
            out.push_str(" -j CT --notrack");
        } else {
            out.push_str(" -j CT");
        }
    }

    /// The last column of `-L`: ` NOTRACK`, ` CT notrack` or ` CT`.
    pub fn list(&self, out: &mut String) {
        if self.alias {
            out.push_str(" NOTRACK");
        } else if self.notrack {
            out.push_str(" CT notrack");
        } else {
            out.push_str(" CT");
        }
    }
}

#[derive(Clone, Debug)]
struct CtParser {
    /// Parsing `-j NOTRACK`, which takes no option.
    alias: bool,
    ct: Ct,
}

impl TargetParser for CtParser {
    fn check_repeat(&self, option: &'static OptSpec) -> Result<(), ParseError> {
        if option.name() == "notrack" && self.ct.notrack {
            return Err(ParseError::RepeatedTargetOption {
                target: "CT",
                option: "--notrack".into(),
                hint: "",
            });
        }
        Ok(())
    }

    fn option(&mut self, option: &'static OptSpec, _values: &[&str]) -> Result<(), ParseError> {
        match option.name() {
            "notrack" => {
                self.ct.notrack = true;
                Ok(())
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
        let e = parse_error("-t raw -A PREROUTING -j CT --zone 1");
        assert!(e.contains("not supported yet") && e.contains("zone"), "{e}");
        let e = parse_error("-t raw -A PREROUTING -j CT --notrack --notrack");
        assert!(e.contains("--notrack"), "{e}");
        let e = parse_error("-t raw -A PREROUTING -j REJECT");
        assert!(
            e.contains("in the filter table only") && e.contains("iptables -A INPUT -j REJECT"),
            "{e}"
        );
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
            let ct = Ct { notrack, alias };
            out.clear();
            ct.save(&mut out);
            assert_eq!(out, save);
            out.clear();
            ct.list(&mut out);
            assert_eq!(out, list);
        }
        assert_eq!(Ct::default().code(), code::NONE);
        assert_eq!(
            Ct {
                notrack: true,
                alias: false
            }
            .code(),
            code::NOTRACK
        );
    }
}
