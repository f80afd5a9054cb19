//! The stateful guards' per-CPU scratch, in one map: the keys they build
//! (the guards run at the end of a deep call chain whose 512-byte stack
//! has no room for an IPv6 key), `-m hashlimit`'s scan of a set,
//! `-m connlimit`'s walks, and the zeroed
//! values new entries are inserted from (too big for the stack), and the
//! guards' search sequences. One map rather than one each: a program may
//! use at most 64 maps, and the IPv4 XDP program is near that.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use netbeast_common::{
    Addr6, ConnlimitKey6, ConnlimitList, ConnlimitList6, HashlimitKey, RecentEntry, RecentKey,
};

use crate::{connlimit::Walk, hashlimit::Scan};

#[repr(C)]
pub struct GuardScratch {
    /// First: 8-byte aligned, read as words (`HASHLIMIT_KEY_WORDS`).
    pub hashlimit_key: HashlimitKey,
    pub hashlimit_scan: Scan,
    pub recent_key: RecentKey,
    pub list_key6: ConnlimitKey6,
    pub walk: Walk<u32>,
    pub walk6: Walk<Addr6>,
    /// Never written: all zeros, what a new entry starts from.
    pub empty_list: ConnlimitList,
    pub empty_list6: ConnlimitList6,
    pub empty_recent: RecentEntry,
    /// This CPU's last search sequence (a search with guards takes the
    /// next): the guard outcomes in `GUARD_MEMO` of older ones are stale.
    pub guard_seq: u64,
    /// The sequence of the guard walk under way on this CPU
    /// (`netbeast_guards`' `seq`), shifted for its memo words: read from
    /// here at each memo write rather than kept in a register, which the
    /// calls in between made LLVM spill to a stack slot of the IPv4 XDP
    /// program's deepest call chain (ARCHITECTURE "Verifier").
    pub guard_walk_seq: u64,
}

#[map]
static GUARD_SCRATCH: PerCpuArray<GuardScratch> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's scratch: a raw pointer, as several of its fields are used
/// at once (take them with `&raw mut (*p).field`).
#[inline(always)]
pub fn guard_scratch() -> Option<*mut GuardScratch> {
    GUARD_SCRATCH.get_ptr_mut(0)
}
