//! One module per target, as matches have in `rules/ext/`: each owns its
//! options and their parsing, its checks (which tables and chains, which
//! protocols, as the kernel's checkentry makes them), its `-S`/save and
//! `-L` text, its code in the kernel's table of targets
//! (`netbeast_common::target::flags`: terminating, needs the packet, side
//! effect — which the compiler, the reference classifier and the kernel
//! all read), and how to generate random instances of it.
//!
//! The parser finds a module by its `-j` name in [`TARGET_MODULES`] and
//! hands it the options it declares; its "unknown target / not supported
//! yet / needs -j X before it" answers come from this registry. A `-j`
//! name no module owns is a user-defined chain ([`jump`]).

use std::fmt::Debug;

use super::ext::{OptSpec, RuleContext};
use super::model::{TableName, Target};
use super::parse::ParseError;
use crate::rules::generate::Random;

pub mod connmark;
pub mod ct;
pub mod dscp;
pub mod jump;
pub mod log;
pub mod mark;
pub mod nat;
pub mod reject;
pub mod set;
pub mod standard;
pub mod synproxy;
pub mod tcpmss;
pub mod tos;
pub mod ttl;

/// A target's options while they are read.
pub trait TargetParser: Debug {
    /// Called before `option`'s values are read: a module that refuses a
    /// repeated option says so here, before a missing value would.
    fn check_repeat(&self, _option: &'static OptSpec) -> Result<(), ParseError> {
        Ok(())
    }
    /// One of the module's options: `values` its arguments.
    fn option(&mut self, option: &'static OptSpec, values: &[&str]) -> Result<(), ParseError>;
    /// The target, once the rule is complete: its own checks, then
    /// [`check_placement`].
    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Target, ParseError>;
    /// A copy (the parser's state is cloned while it tries alternatives).
    fn boxed_clone(&self) -> Box<dyn TargetParser>;
}

/// A target module: everything netbeast knows about one `-j` target.
pub struct TargetModule {
    /// Its `-j` name.
    pub name: &'static str,
    pub options: &'static [OptSpec],
    /// A rule using it, for messages (`-t nat -A ...` for the nat targets).
    pub example: &'static str,
    pub parser: fn() -> Box<dyn TargetParser>,
    /// Its code in the kernel's table of targets (`netbeast_common::target`),
    /// whose flags say what it does.
    pub code: u32,
    /// The tables iptables accepts it in (of netbeast's three).
    pub tables: &'static [TableName],
    /// The built-in chains of its table where the kernel accepts it (and
    /// the user-defined chains only they reach); `None`: every chain.
    pub chains: Option<&'static [&'static str]>,
    /// Why it is refused in the other chains.
    pub chain_reason: &'static str,
    /// Its options as `iptables -S` and iptables-save print them, with a
    /// leading space: ` -j LOG --log-prefix "x: "`.
    pub save: fn(&Target, &mut String),
    /// Its options in the last column of `iptables -L` (`numeric` for
    /// `-n`), with a leading space.
    pub list: fn(&Target, &mut String, bool),
    /// For a bare word on the command line after `-j NAME`: the option it
    /// was probably meant for (` (did you mean --to-ports 8080?)`).
    pub suggest: fn(&str) -> Option<String>,
    /// Accepted but not offered in messages (`CONTINUE`).
    pub hidden: bool,
    /// How to draw random instances of it (`rules/generate.rs`).
    pub random: Random<Target>,
}

impl Debug for TargetModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "-j {}", self.name)
    }
}

/// The target modules `-j` loads, in the order messages list them.
pub static TARGET_MODULES: &[&TargetModule] = &[
    &standard::ACCEPT,
    &standard::DROP,
    &reject::MODULE,
    &standard::RETURN,
    &log::MODULE,
    &nat::DNAT,
    &nat::SNAT,
    &nat::MASQUERADE,
    &nat::REDIRECT,
    &synproxy::MODULE,
    &ct::MODULE,
    &ct::NOTRACK,
    &mark::MODULE,
    &connmark::MODULE,
    &set::MODULE,
    &ttl::TTL,
    &ttl::HL,
    &tos::MODULE,
    &dscp::MODULE,
    &tcpmss::MODULE,
    &standard::CONTINUE,
];

/// Targets iptables has and netbeast does not implement yet: they get "not
/// supported yet" rather than being taken for a chain name.
pub const NOT_SUPPORTED_YET: &[&str] = &[
    "AUDIT",
    "CHECKSUM",
    "CLASSIFY",
    "CLUSTERIP",
    "CONNSECMARK",
    "DNPT",
    "ECN",
    "HMARK",
    "IDLETIMER",
    "LED",
    "NETMAP",
    "NFLOG",
    "NFQUEUE",
    "QUEUE",
    "RATEEST",
    "SECMARK",
    "SNPT",
    "TCPOPTSTRIP",
    "TEE",
    "TPROXY",
    "TRACE",
    "ULOG",
];

/// The module of `-j NAME`, if a module owns it.
pub fn target_module(name: &str) -> Option<&'static TargetModule> {
    TARGET_MODULES.iter().copied().find(|m| m.name == name)
}

/// The modules one of whose options is `--name` (typed in full).
pub fn modules_with_option(name: &str) -> Vec<&'static TargetModule> {
    TARGET_MODULES
        .iter()
        .copied()
        .filter(|m| m.options.iter().any(|o| o.names.contains(&name)))
        .collect()
}

/// The targets netbeast offers, for messages: `ACCEPT, DROP, ..., REDIRECT`.
pub fn offered() -> Vec<&'static str> {
    TARGET_MODULES
        .iter()
        .filter(|m| !m.hidden)
        .map(|m| m.name)
        .collect()
}

impl TargetModule {
    /// Only the nat table has it: a translation.
    pub fn translates(&self) -> bool {
        self.tables == [TableName::Nat]
    }
}

/// The checks every target gets once its own are done, as the kernel makes
/// them: its table, and, in the built-in chains of the nat table, its
/// chain (user-defined chains are checked by what reaches them).
pub fn check_placement(module: &TargetModule, rule: &RuleContext) -> Result<(), ParseError> {
    if !module.tables.contains(&rule.table) {
        return Err(match rule.table {
            TableName::Nat if module.tables.contains(&TableName::Filter) => {
                ParseError::NatFiltering {
                    target: module.name,
                    fix: format!(
                        "filter in the filter table instead (without -t nat), e.g. iptables -A \
                         FORWARD ... -j {}",
                        module.name
                    ),
                }
            }
            TableName::Filter if module.tables == [TableName::Nat] => {
                ParseError::NatTargetOutsideNat {
                    target: module.name,
                    table: rule.table.as_str(),
                    example: module
                        .example
                        .strip_prefix("-t nat -A ")
                        .unwrap_or(module.example),
                }
            }
            TableName::Filter | TableName::Nat | TableName::Raw | TableName::Mangle => {
                ParseError::TargetOutsideTable {
                    target: module.name,
                    table: rule.table.as_str(),
                    tables: module
                        .tables
                        .iter()
                        .map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(" and "),
                    // The filter targets' examples name no chain.
                    example: if module.example.starts_with("-t ") {
                        module.example.to_string()
                    } else {
                        format!("-A INPUT {}", module.example)
                    },
                }
            }
        });
    }
    if let Some(allowed) = module.chains
        && rule.table.builtin_chains().contains(&rule.chain)
        && !allowed.contains(&rule.chain)
    {
        return Err(ParseError::NatWrongChain {
            target: module.name,
            chain: rule.chain.to_string(),
            reason: module.chain_reason,
        });
    }
    Ok(())
}

/// The mangle-only targets (TTL, HL, TOS, DSCP): the kernel registers
/// them for the mangle table alone and refuses them elsewhere (iptables
/// exits 4, "Invalid argument").
pub(crate) fn refuse_outside_mangle(target: &str, rule: &RuleContext) -> Result<(), ParseError> {
    if rule.table == TableName::Mangle {
        return Ok(());
    }
    Err(ParseError::KernelRefuses {
        what: format!("-j {target} in the {} table", rule.table.as_str()),
        reason: format!(
            "it is a target of the mangle table only, as in {} -t mangle -A POSTROUTING ... \
             -j {target}",
            rule.family.command()
        ),
    })
}

/// A target without options (ACCEPT, DROP, RETURN, CONTINUE).
#[derive(Clone, Debug)]
pub(crate) struct Plain {
    pub module: &'static TargetModule,
    pub target: Target,
}

impl TargetParser for Plain {
    fn option(&mut self, option: &'static OptSpec, _values: &[&str]) -> Result<(), ParseError> {
        unreachable!(
            "-j {} declares no option, yet got {}",
            self.module.name,
            option.flag()
        )
    }

    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Target, ParseError> {
        check_placement(self.module, rule)?;
        Ok(self.target)
    }

    fn boxed_clone(&self) -> Box<dyn TargetParser> {
        Box::new(self.clone())
    }
}

/// Nothing to print.
pub(crate) fn no_text(_: &Target, _: &mut String) {}
pub(crate) fn no_columns(_: &Target, _: &mut String, _: bool) {}
pub(crate) fn no_suggestion(_: &str) -> Option<String> {
    None
}

impl Target {
    /// The module that owns this target: `None` for a rule without one.
    pub fn module(&self) -> Option<&'static TargetModule> {
        Some(match self {
            Target::None => return None,
            Target::Jump(_) | Target::Goto(_) => &jump::MODULE,
            Target::Accept => &standard::ACCEPT,
            Target::Drop => &standard::DROP,
            Target::Return => &standard::RETURN,
            Target::Reject(_) => &reject::MODULE,
            Target::Dnat { .. } => &nat::DNAT,
            Target::Snat { .. } => &nat::SNAT,
            Target::Masquerade { .. } => &nat::MASQUERADE,
            Target::Redirect { .. } => &nat::REDIRECT,
            Target::Log(_) => &log::MODULE,
            Target::Synproxy(_) => &synproxy::MODULE,
            Target::Ct(ct) => ct.module(),
            Target::Mark(_) => &mark::MODULE,
            Target::Connmark(_) => &connmark::MODULE,
            Target::Set(_) => &set::MODULE,
            Target::Ttl(_) => &ttl::TTL,
            Target::Hl(_) => &ttl::HL,
            Target::Tos(_) => &tos::MODULE,
            Target::Dscp(_) => &dscp::MODULE,
            Target::Tcpmss(_) => &tcpmss::MODULE,
        })
    }

    /// The target's code in the kernel's table (`netbeast_common::target`);
    /// jumps, gotos and RETURN are control flow the compiler flattens, and
    /// count as no target (`NONE`).
    pub fn code(&self) -> u32 {
        if let Target::Ct(ct) = self {
            return ct.code();
        }
        self.module()
            .map_or(netbeast_common::target::NONE, |m| m.code)
    }

    /// Its flags in the one table of targets (`netbeast_common::target::flags`).
    pub fn flags(&self) -> u32 {
        netbeast_common::target::flags(self.code())
    }

    /// The first rule with it ends the chain (a verdict, or the nat
    /// table's decision).
    pub fn terminates(&self) -> bool {
        self.flags() & netbeast_common::target::flag::TERMINATING != 0
    }

    /// It acts on the packet's bytes, so it cannot run where there is no
    /// packet (nat OUTPUT, done on sockets).
    pub fn needs_packet(&self) -> bool {
        self.flags() & netbeast_common::target::flag::NEEDS_PACKET != 0
    }

    /// Its `-j`/`-g` and options as `-S` and iptables-save print them.
    pub fn save(&self, out: &mut String) {
        if let Some(module) = self.module() {
            (module.save)(self, out);
        }
    }

    /// Its options in the last column of `-L`.
    pub fn list(&self, out: &mut String, numeric: bool) {
        if let Some(module) = self.module() {
            (module.list)(self, out, numeric);
        }
    }
}
