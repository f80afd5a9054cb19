//! Global per-CPU counters, indexed by `netbeast_common::stats`.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use netbeast_common::stats;

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stats::COUNT, 0);

#[inline(always)]
pub fn bump(index: u32) {
    if let Some(slot) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *slot += 1 };
    }
}
