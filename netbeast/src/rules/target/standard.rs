//! The standard targets without options (libxt_standard): ACCEPT, DROP,
//! RETURN, and CONTINUE (no target at all: the rule only counts).

use crate::rules::generate::Random;
use std::fmt::Write as _;

use netbeast_common::target as code;

use super::{Plain, TargetModule, no_columns, no_suggestion};
use crate::rules::model::{TableName, Target};

/// Every table (the name is older than the raw table).
const BOTH: &[TableName] = &[
    TableName::Filter,
    TableName::Nat,
    TableName::Raw,
    TableName::Mangle,
];

/// ` -j NAME`.
fn save(target: &Target, out: &mut String) {
    let _ = write!(out, " -j {}", target.name());
}

pub static ACCEPT: TargetModule = TargetModule {
    name: "ACCEPT",
    options: &[],
    example: "-j ACCEPT",
    parser: || {
        Box::new(Plain {
            module: &ACCEPT,
            target: Target::Accept,
        })
    },
    code: code::ACCEPT,
    tables: BOTH,
    chains: None,
    chain_reason: "",
    save,
    list: no_columns,
    suggest: no_suggestion,
    hidden: false,
    random: Random {
        weight: 2,
        draw: |_, _| Some(Target::Accept),
    },
};

/// In the filter and raw tables: iptables refuses filtering in nat.
pub static DROP: TargetModule = TargetModule {
    name: "DROP",
    options: &[],
    example: "-j DROP",
    parser: || {
        Box::new(Plain {
            module: &DROP,
            target: Target::Drop,
        })
    },
    code: code::DROP,
    tables: &[TableName::Filter, TableName::Raw, TableName::Mangle],
    chains: None,
    chain_reason: "",
    save,
    list: no_columns,
    suggest: no_suggestion,
    hidden: false,
    random: Random {
        weight: 2,
        draw: |_, s| (s.table != TableName::Nat).then_some(Target::Drop),
    },
};

/// Control flow the compiler flattens: no code of its own in the kernel.
pub static RETURN: TargetModule = TargetModule {
    name: "RETURN",
    options: &[],
    example: "-j RETURN",
    parser: || {
        Box::new(Plain {
            module: &RETURN,
            target: Target::Return,
        })
    },
    code: code::NONE,
    tables: BOTH,
    chains: None,
    chain_reason: "",
    save,
    list: no_columns,
    suggest: no_suggestion,
    hidden: false,
    random: Random {
        weight: 1,
        draw: |_, _| Some(Target::Return),
    },
};

/// iptables-nft's name for no target: the rule is stored, and printed,
/// without `-j`.
pub static CONTINUE: TargetModule = TargetModule {
    name: "CONTINUE",
    options: &[],
    example: "",
    parser: || {
        Box::new(Plain {
            module: &CONTINUE,
            target: Target::None,
        })
    },
    code: code::NONE,
    tables: BOTH,
    chains: None,
    chain_reason: "",
    save: super::no_text,
    list: no_columns,
    suggest: no_suggestion,
    hidden: true,
    random: Random {
        weight: 2,
        draw: |_, _| Some(Target::None),
    },
};
