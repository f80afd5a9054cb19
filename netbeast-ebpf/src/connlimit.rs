//! `-m connlimit`: the live connections of a masked address, counted from
//! netbeast's own conntrack. Each rule (guard) keeps, per masked address, a
//! bounded list of the conntrack keys it has seen; every check drops the
//! ones conntrack no longer has live (closed by FIN/RST, expired, evicted),
//! adds the packet's own connection, and counts — exact without any hook on
//! conntrack's expiry, as the kernel's nf_conncount does with its lists.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::bpf_loop,
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use netbeast_common::{
    CONNLIMIT_LISTS, CONNLIMIT_SLOTS, ConnlimitKey, ConnlimitList, CtKey, stats,
};

use crate::{
    classify::{compare_exchange, spin_lock},
    conntrack,
    stats::bump,
};

#[map]
static CONNLIMIT: LruHashMap<ConnlimitKey, ConnlimitList> =
    LruHashMap::with_max_entries(CONNLIMIT_LISTS, 0);
/// An empty list to insert from (too big for the stack), never written.
#[map]
static CONNLIMIT_EMPTY: PerCpuArray<ConnlimitList> = PerCpuArray::with_max_entries(1, 0);

/// Tries to take a list's lock before giving up. The holder runs one check
/// (at most `CONNLIMIT_SLOTS` conntrack lookups) with softirqs off, so it
/// lets go within microseconds; a check that gives up does not match and
/// is counted (`stats::CONNLIMIT_CONTENDED`).
const CONNLIMIT_SPINS: u32 = 4096;
const BPF_NOEXIST: u64 = 1;

/// One check's walk over a list, for `bpf_loop`: per-CPU scratch, as the
/// stack below the classifier's frames has no room for it.
#[map]
static WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

/// One check's walk over a list, for `bpf_loop`.
#[repr(C)]
struct Walk {
    own: CtKey,
    count: u32,
    /// 1 once the packet's own connection was found in the list.
    seen: u32,
    /// The first free slot, `CONNLIMIT_SLOTS` for none.
    free: u32,
}

/// What `bpf_loop` hands every slot's step: the list (a pointer into a
/// map value cannot be kept in another map value) and the walk.
#[repr(C)]
struct WalkContext<'a> {
    list: *mut ConnlimitList,
    walk: &'a mut Walk,
}

/// One slot of a list: counted if live (or the packet's own), freed if
/// conntrack no longer has it live.
extern "C" fn walk_slot(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `WalkContext` given to bpf_loop.
    let ctx = unsafe { &mut *(ctx as *mut WalkContext) };
    let list = ctx.list;
    let walk = &mut *ctx.walk;
    let i = index as usize;
    if i >= CONNLIMIT_SLOTS {
        return 1;
    }
    // SAFETY: the list is ours while the lock is held; `i` is in bounds.
    let slot = unsafe { &mut (*list).conns[i] };
    if slot.protocol != 0 {
        if *slot == walk.own {
            walk.seen = 1;
            walk.count += 1;
            return 0;
        }
        if conntrack::is_live(slot) {
            walk.count += 1;
            return 0;
        }
        slot.protocol = 0;
    }
    if walk.free == CONNLIMIT_SLOTS as u32 {
        walk.free = index as u32;
    }
    0
}

/// Counts the live connections of list (`guard`: the rule's state slot,
/// `addr`), the packet's
/// own connection `own` (`own.protocol` 0: it has none; its zone in bits
/// 48–63 of `own_hi`) included and
/// recorded. `u32::MAX` when the list could not be had (lock contended, no
/// room in the table). A global function, verified once.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_connlimit(guard: u32, addr: u32, own_lo: u64, own_hi: u64) -> u32 {
    let own = CtKey {
        addr_lo: own_lo as u32,
        addr_hi: (own_lo >> 32) as u32,
        port_lo: own_hi as u16,
        port_hi: (own_hi >> 16) as u16,
        protocol: (own_hi >> 32) as u8,
        _pad: 0,
        // Its zone: the list counted is that zone's.
        zone: (own_hi >> 48) as u16,
    };
    // One list per zone, as xt_connlimit counts per zone.
    let key = ConnlimitKey {
        guard: guard as u16,
        zone: own.zone,
        addr,
    };
    let mut list = CONNLIMIT.get_ptr_mut(&key);
    if list.is_none() {
        if own.protocol == 0 {
            // Nothing recorded and nothing to record.
            return 0;
        }
        let Some(empty) = CONNLIMIT_EMPTY.get(0) else {
            return u32::MAX;
        };
        // Another CPU may insert it first: either way it is there now.
        let _ = CONNLIMIT.insert(&key, empty, BPF_NOEXIST);
        list = CONNLIMIT.get_ptr_mut(&key);
    }
    let Some(list) = list else {
        return u32::MAX;
    };
    // SAFETY: a map value, valid for this program run; `lock` is its
    // first word, 8-byte aligned.
    let lock = unsafe { &raw mut (*list).lock };
    if !spin_lock(lock, CONNLIMIT_SPINS) {
        bump(stats::CONNLIMIT_CONTENDED);
        return u32::MAX;
    }
    let Some(walk) = WALK.get_ptr_mut(0) else {
        compare_exchange(lock, 1, 0);
        return u32::MAX;
    };
    // SAFETY: this CPU's scratch, for this program run.
    let walk = unsafe { &mut *walk };
    walk.own = own;
    walk.count = 0;
    walk.seen = u32::from(own.protocol == 0);
    walk.free = CONNLIMIT_SLOTS as u32;
    let mut ctx = WalkContext { list, walk };
    // bpf_loop: the verifier checks one slot's step once, not once per
    // slot and per path through the ones before.
    // SAFETY: `walk_slot` has the callback signature bpf_loop expects, and
    // `ctx` outlives the call.
    unsafe {
        bpf_loop(
            CONNLIMIT_SLOTS as u32,
            walk_slot as *mut c_void,
            &mut ctx as *mut WalkContext as *mut c_void,
            0,
        );
    }
    let walk = ctx.walk;
    let mut count = walk.count;
    if walk.seen == 0 {
        // The packet's connection counts whether or not there is room to
        // remember it (a full list is more than any limit allowed).
        count += 1;
        let free = walk.free as usize;
        if free < CONNLIMIT_SLOTS {
            // SAFETY: the list is ours while the lock is held.
            unsafe { (*list).conns[free] = own };
        }
    }
    compare_exchange(lock, 1, 0);
    count
}
