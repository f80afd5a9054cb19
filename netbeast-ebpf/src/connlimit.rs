//! `-m connlimit`: the live connections of a masked address, counted from
//! netbeast's own conntrack. Each rule (guard) keeps, per masked address, a
//! bounded list of the conntrack keys it has seen; every check drops the
//! ones conntrack no longer has live (closed by FIN/RST, expired, evicted),
//! adds the packet's own connection, and counts — exact without any hook on
//! conntrack's expiry, as the kernel's nf_conncount does with its lists.

use core::ffi::c_void;

use aya_ebpf::{helpers::generated::bpf_loop, macros::map, maps::LruHashMap};
use netbeast_common::{
    Addr6, CONNLIMIT_DADDR, CONNLIMIT_LISTS, CONNLIMIT_SLOTS, CONNLIMIT6_LISTS, ConnlimitKey,
    ConnlimitKey6, ConnlimitList, ConnlimitList6, ConnlimitListOf, CtKeyOf, stats,
};

use crate::{
    classify::{compare_exchange, spin_lock},
    conntrack::{self, Family, V4, V6},
    parse::{current_addr6, current_keys},
    recent::prefix_word,
    scratch::guard_scratch,
    stats::bump,
};

#[map]
static CONNLIMIT: LruHashMap<ConnlimitKey, ConnlimitList> =
    LruHashMap::with_max_entries(CONNLIMIT_LISTS, 0);
/// ip6tables rules' lists: IPv6 addresses, IPv6 conntrack keys.
#[map]
static CONNLIMIT6: LruHashMap<ConnlimitKey6, ConnlimitList6> =
    LruHashMap::with_max_entries(CONNLIMIT6_LISTS, 0);

/// Tries to take a list's lock before giving up. The holder runs one check
/// (at most `CONNLIMIT_SLOTS` conntrack lookups) with softirqs off, so it
/// lets go within microseconds; a check that gives up does not match and
/// is counted (`stats::CONNLIMIT_CONTENDED`).
const CONNLIMIT_SPINS: u32 = 4096;
const BPF_NOEXIST: u64 = 1;

/// One check's walk over a list, for `bpf_loop`: in the per-CPU scratch
/// (`scratch::GuardScratch`), as the stack below the classifier's frames
/// has no room for it.
#[repr(C)]
pub struct Walk<A> {
    own: CtKeyOf<A>,
    count: u32,
    /// 1 once the packet's own connection was found in the list.
    seen: u32,
    /// The first free slot, `CONNLIMIT_SLOTS` for none.
    free: u32,
}

/// What `bpf_loop` hands every slot's step: the list (a pointer into a
/// map value cannot be kept in another map value) and the walk.
#[repr(C)]
struct WalkContext<'a, A> {
    list: *mut ConnlimitListOf<CtKeyOf<A>>,
    walk: &'a mut Walk<A>,
}

/// What a family's lists are kept in.
trait Lists: Family {
    type ListKey: 'static;
    fn lists() -> &'static LruHashMap<Self::ListKey, ConnlimitListOf<CtKeyOf<Self::Addr>>>;
    fn empty() -> Option<&'static ConnlimitListOf<CtKeyOf<Self::Addr>>>;
    fn walk() -> Option<*mut Walk<Self::Addr>>;
}

impl Lists for V4 {
    type ListKey = ConnlimitKey;
    #[inline(always)]
    fn lists() -> &'static LruHashMap<ConnlimitKey, ConnlimitList> {
        &CONNLIMIT
    }
    #[inline(always)]
    fn empty() -> Option<&'static ConnlimitList> {
        // SAFETY: a field of this CPU's scratch that is never written.
        guard_scratch().map(|p| unsafe { &*(&raw const (*p).empty_list) })
    }
    #[inline(always)]
    fn walk() -> Option<*mut Walk<u32>> {
        // SAFETY: a field of this CPU's scratch.
        guard_scratch().map(|p| unsafe { &raw mut (*p).walk })
    }
}

impl Lists for V6 {
    type ListKey = ConnlimitKey6;
    #[inline(always)]
    fn lists() -> &'static LruHashMap<ConnlimitKey6, ConnlimitList6> {
        &CONNLIMIT6
    }
    #[inline(always)]
    fn empty() -> Option<&'static ConnlimitList6> {
        // SAFETY: a field of this CPU's scratch that is never written.
        guard_scratch().map(|p| unsafe { &*(&raw const (*p).empty_list6) })
    }
    #[inline(always)]
    fn walk() -> Option<*mut Walk<Addr6>> {
        // SAFETY: a field of this CPU's scratch.
        guard_scratch().map(|p| unsafe { &raw mut (*p).walk6 })
    }
}

/// One slot of a list: counted if live (or the packet's own), freed if
/// conntrack no longer has it live.
extern "C" fn walk_slot<F: Lists>(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `WalkContext` given to bpf_loop.
    let ctx = unsafe { &mut *(ctx as *mut WalkContext<F::Addr>) };
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
        if conntrack::is_live_of::<F>(slot) {
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

/// Counts the live connections of the list at `key`, the packet's own
/// connection (already in the walk's `own`; `protocol` 0: it has none)
/// included and recorded. `u32::MAX` when the list could not be had.
#[inline(always)]
fn count<F: Lists>(key: &F::ListKey, walk: *mut Walk<F::Addr>) -> u32 {
    // SAFETY: this CPU's scratch, for this program run.
    let walk = unsafe { &mut *walk };
    let own_protocol = walk.own.protocol;
    let mut list = F::lists().get_ptr_mut(key);
    if list.is_none() {
        if own_protocol == 0 {
            // Nothing recorded and nothing to record.
            return 0;
        }
        let Some(empty) = F::empty() else {
            return u32::MAX;
        };
        // Another CPU may insert it first: either way it is there now.
        let _ = F::lists().insert(key, empty, BPF_NOEXIST);
        list = F::lists().get_ptr_mut(key);
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
    walk.count = 0;
    walk.seen = u32::from(own_protocol == 0);
    walk.free = CONNLIMIT_SLOTS as u32;
    let mut ctx = WalkContext { list, walk };
    // bpf_loop: the verifier checks one slot's step once, not once per
    // slot and per path through the ones before.
    // SAFETY: `walk_slot` has the callback signature bpf_loop expects, and
    // `ctx` outlives the call.
    unsafe {
        bpf_loop(
            CONNLIMIT_SLOTS as u32,
            walk_slot::<F> as *mut c_void,
            &mut ctx as *mut WalkContext<F::Addr> as *mut c_void,
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
            unsafe { crate::mem::copy(&mut (*list).conns[free], &walk.own) };
        }
    }
    compare_exchange(lock, 1, 0);
    count
}

/// `-m connlimit` for the current packet: the live connections of its
/// masked source (or destination) address's list for the rule whose state
/// slot is `guard`, its own connection (from the tracker of its family)
/// included and recorded. `b` is the guard's (`CONNLIMIT_DADDR`,
/// `CONNLIMIT_V6`, and the IPv4 mask or the IPv6 prefix length in its low
/// 32 bits). `u32::MAX` when the list could not be had (lock contended,
/// no room in the table). A global function, verified once, that reads
/// everything itself: inlined into the guards' loop, the reading took
/// their frame, and the deepest call chain, past 512 bytes.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_connlimit(guard: u32, b: u64) -> u32 {
    let daddr = b & CONNLIMIT_DADDR != 0;
    let Some(keys) = current_keys() else {
        return u32::MAX;
    };
    let Some(walk) = <V4 as Lists>::walk() else {
        return u32::MAX;
    };
    // SAFETY: this CPU's scratch, for this program run.
    let own = unsafe { &mut (*walk).own };
    match conntrack::tracking() {
        // SAFETY: this CPU's scratch and tracking slot.
        Some(t) if t.found != 0 || t.pending != 0 => unsafe { crate::mem::copy(own, &t.key) },
        // No connection: nothing recorded, the default zone's list.
        _ => (own.protocol, own.zone) = (0, 0),
    }
    let addr = if daddr { keys.dst } else { keys.src };
    // One list per zone, as xt_connlimit counts per zone.
    count::<V4>(
        &ConnlimitKey {
            guard: guard as u16,
            zone: own.zone,
            addr: addr & b as u32,
        },
        walk,
    )
}

/// [`netbeast_connlimit`] for an ip6tables rule (`CONNLIMIT_V6`): the
/// list of the IPv6 address under a prefix of `b`'s low bits, the packet's
/// own connection from the IPv6 tracker. Its own global function: with
/// both families in one, the frame took the deepest call chain past 512
/// bytes.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_connlimit6(guard: u32, b: u64) -> u32 {
    let (daddr, prefix) = (b & CONNLIMIT_DADDR != 0, b as u32);
    let (Some(keys), Some(w), Some(scratch)) = (current_keys(), current_addr6(), guard_scratch())
    else {
        return u32::MAX;
    };
    // SAFETY: fields of this CPU's scratch, used by this program run only.
    let (key, walk) = unsafe { (&mut (*scratch).list_key6, &raw mut (*scratch).walk6) };
    key.guard = guard as u16;
    // The address's other three words (see `Packet::addr6`).
    key.addr = if daddr {
        [keys.dst, w[1], w[3], w[5]]
    } else {
        [keys.src, w[0], w[2], w[4]]
    };
    for (i, word) in key.addr.iter_mut().enumerate() {
        *word &= prefix_word(prefix, i as u32);
    }
    // SAFETY: as above.
    let own = unsafe { &mut (*walk).own };
    match conntrack::tracking6() {
        // SAFETY: this CPU's scratch and tracking slot.
        Some(t) if t.found != 0 || t.pending != 0 => unsafe { crate::mem::copy(own, &t.key) },
        _ => (own.protocol, own.zone) = (0, 0),
    }
    // One list per zone, as for IPv4.
    key.zone = own.zone;
    count::<V6>(key, walk)
}
