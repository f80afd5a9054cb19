//! The data plane's settings of one value each, in one map (`CONFIG`,
//! `netbeast_common::Config`): the route cache's epoch and lease, the
//! conntrack timeouts, the SYN-flood shield's port count, REJECT's ICMP
//! rate limits and their namespace-wide budget. They had a single-entry
//! map each; a program may use at most 64 maps (`MAX_USED_MAPS`), which
//! the IPv4 XDP program had reached. Each reader still makes one lookup
//! (an array lookup the verifier inlines) and reads its fields.

use aya_ebpf::{bindings::BPF_F_MMAPABLE, macros::map, maps::Array};
use netbeast_common::Config;

/// Mmapable: each userspace writer stores its own fields in place (see
/// `Config`); a map update would write every field.
#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// The one value: a raw pointer, valid for the program run. Fields other
/// writers change meanwhile are read once each (`read_volatile`).
#[inline(always)]
pub fn config() -> Option<*mut Config> {
    CONFIG.get_ptr_mut(0)
}
