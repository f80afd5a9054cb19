//! `-j CHAIN` and `-g CHAIN`: a user-defined chain as the target. The
//! parser takes any `-j` name no module owns for one (checked as a chain
//! name; the command checks that it exists); the compiler flattens them.

use std::fmt::Write as _;

use netbeast_common::target as code;

use super::{TargetModule, no_columns, no_suggestion};
use crate::rules::model::{TableName, Target};

/// Not in [`super::TARGET_MODULES`]: no `-j` name loads it.
pub static MODULE: TargetModule = TargetModule {
    name: "",
    options: &[],
    example: "-j MYCHAIN",
    parser: || unreachable!("jumps are read by the parser's -j and -g"),
    code: code::NONE,
    tables: &[TableName::Filter, TableName::Nat],
    chains: None,
    chain_reason: "",
    save,
    // `-L` marks a goto before the matches (`[goto] `), not here.
    list: no_columns,
    suggest: no_suggestion,
    hidden: false,
};

fn save(target: &Target, out: &mut String) {
    match target {
        Target::Jump(chain) => {
            let _ = write!(out, " -j {chain}");
        }
        Target::Goto(chain) => {
            let _ = write!(out, " -g {chain}");
        }
        _ => unreachable!("the jump module saves jumps"),
    }
}
