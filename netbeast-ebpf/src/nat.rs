//! The nat table's translations (`--to-destination`, `--to-source`,
//! `--to-ports`): one `NatTarget` per nat rule, written by userspace with the
//! ruleset at `nat_target_index(generation, n)`, where `n` is the rule's
//! `RuleAction::arg`.

use aya_ebpf::{macros::map, maps::Array};
use netbeast_common::{NatTarget, size};

#[map]
pub static NAT_TARGETS: Array<NatTarget> = Array::with_max_entries(size::NAT_TARGETS, 0);
