//! `-j CHAIN` and `-g CHAIN`: a user-defined chain as the target. The
//! parser takes any `-j` name no module owns for one (checked as a chain
//! name; the command checks that it exists); the compiler flattens them.

use crate::rules::generate::{Dice, Random, Scope};
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
    tables: &[
        TableName::Filter,
        TableName::Nat,
        TableName::Raw,
        TableName::Mangle,
    ],
    chains: None,
    chain_reason: "",
    save,
    // `-L` marks a goto before the matches (`[goto] `), not here.
    list: no_columns,
    suggest: no_suggestion,
    hidden: false,
    random: Random {
        weight: 5,
        draw: random,
    },
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

/// `-j` (3 in 5) or `-g` to one of the scope's callees, if it has any.
fn random(d: &mut Dice, s: &Scope) -> Option<Target> {
    if s.callees.is_empty() {
        return None;
    }
    let chain = d.pick(s.callees);
    Some(if d.chance(60) {
        Target::Jump(chain)
    } else {
        Target::Goto(chain)
    })
}
