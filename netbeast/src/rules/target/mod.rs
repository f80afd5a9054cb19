//! Targets with a module of their own, as matches have in `rules/ext/`:
//! each owns its options and their parsing and checks, its data, its
//! `-S`/save and `-L` text, and its entry in the kernel's table of
//! targets (`netbeast_common::target::flags`: terminating, needs the
//! packet, side effect), which the compiler and the reference classifier
//! read too. The parser finds a module by its `-j` name in
//! [`TARGET_MODULES`] and hands it the options it declares.
//!
//! LOG and SYNPROXY live here so far; ACCEPT, DROP, REJECT, RETURN, the jumps and
//! the nat targets are still parsed in `parse.rs` and printed in `save.rs`
//! and `list.rs` (their flags are in the same common table).

use std::fmt::Debug;

use super::ext::{OptSpec, RuleContext};
use super::model::Target;
use super::parse::ParseError;

pub mod log;
pub mod synproxy;

/// What netbeast knows about a target of a module once it is parsed.
pub trait TargetExt {
    /// Its `-j` and options as `iptables -S` and iptables-save print
    /// them, with a leading space: ` -j LOG --log-prefix "x: "`.
    fn save(&self, out: &mut String);
    /// Its text in the last column of `iptables -L` (`numeric` for `-n`),
    /// with a leading space.
    fn list(&self, out: &mut String, numeric: bool);
    /// Its code in the kernel's table of targets (`netbeast_common::target`).
    fn code(&self) -> u32;
}

/// A target's options while they are read.
pub trait TargetParser: Debug {
    /// One of the module's options: `values` its arguments.
    fn option(&mut self, option: &'static OptSpec, values: &[&str]) -> Result<(), ParseError>;
    /// The target, once the rule is complete.
    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Target, ParseError>;
    /// A copy (the parser's state is cloned while it tries alternatives).
    fn boxed_clone(&self) -> Box<dyn TargetParser>;
}

/// A target module: its `-j` name and options.
pub struct TargetModule {
    pub name: &'static str,
    pub options: &'static [OptSpec],
    /// A rule using it, for messages.
    pub example: &'static str,
    pub parser: fn() -> Box<dyn TargetParser>,
}

impl Debug for TargetModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "-j {}", self.name)
    }
}

/// The target modules `-j` loads.
pub static TARGET_MODULES: &[&TargetModule] = &[&log::MODULE, &synproxy::MODULE];

/// The module of `-j NAME`, if a module owns it.
pub fn target_module(name: &str) -> Option<&'static TargetModule> {
    TARGET_MODULES.iter().copied().find(|m| m.name == name)
}

/// The module (if any) one of whose options is `--name`.
pub fn module_with_option(name: &str) -> Option<&'static TargetModule> {
    TARGET_MODULES
        .iter()
        .copied()
        .find(|m| m.options.iter().any(|o| o.names.contains(&name)))
}

impl Target {
    /// The target's code in the kernel's table (`netbeast_common::target`);
    /// jumps, gotos and RETURN are control flow the compiler flattens, and
    /// count as no target (`NONE`).
    pub fn code(&self) -> u32 {
        use netbeast_common::target as code;
        match self {
            Target::None | Target::Jump(_) | Target::Goto(_) | Target::Return => code::NONE,
            Target::Accept => code::ACCEPT,
            Target::Drop => code::DROP,
            Target::Reject(_) => code::REJECT,
            Target::Dnat { .. } => code::DNAT,
            Target::Snat { .. } => code::SNAT,
            Target::Masquerade { .. } => code::MASQUERADE,
            Target::Redirect { .. } => code::REDIRECT,
            Target::Log(log) => log.code(),
            Target::Synproxy(s) => s.code(),
        }
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

    /// The module of a target that has one.
    pub fn ext(&self) -> Option<&dyn TargetExt> {
        match self {
            Target::Log(log) => Some(log),
            Target::Synproxy(s) => Some(s),
            _ => None,
        }
    }
}
