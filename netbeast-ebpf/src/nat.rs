//! Network address translation (`-t nat`): the translations the compiler
//! writes for DNAT, SNAT, MASQUERADE and REDIRECT rules.

use aya_ebpf::{macros::map, maps::Array};
use netbeast_common::{NatTarget, size};

/// What each nat rule translates to, both generations: a rule's
/// `RuleAction::arg` is its number, found at `nat_target_index(generation,
/// arg)`.
#[map]
static NAT_TARGETS: Array<NatTarget> = Array::with_max_entries(size::NAT_TARGETS, 0);
