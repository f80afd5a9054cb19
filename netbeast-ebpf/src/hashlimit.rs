//! `-m hashlimit`: a token bucket per key — the packet's masked addresses
//! and ports that the rule's `--hashlimit-mode` names — in the table of its
//! `--hashlimit-name` (xt_hashlimit). Tables are told apart by the name's
//! number in the key, not by the rule, so a table keeps its buckets across
//! ruleset changes as the kernel's do by name. Every bucket is one word
//! (as `-m limit`'s, see `netbeast_common::limit_take`) updated with
//! compare-and-exchange: exact for every CPU.
//!
//! The buckets live in one BPF array of sets (`HASHLIMIT`): a key's bucket
//! is in one of the `HASHLIMIT_WAYS` slots of the set its hash names. A
//! lookup is an inlined array access and at most eight key compares in
//! one set, where the LRU hash it replaced cost a helper call and two
//! cache misses (docs/BENCHMARKS.md); and the table can be bounded per
//! name: `HASHLIMIT_TABLES` holds each table's `--hashlimit-htable-max`
//! and its live count (see `netbeast_hashlimit_slot`).
//!
//! A packet meets a rule's hashlimit in three global functions the guard
//! walk calls one after the other: `netbeast_hashlimit_key` builds its
//! key (IPv4 or IPv6 addresses) in the per-CPU scratch,
//! `netbeast_hashlimit_slot` finds or makes the key's bucket,
//! `netbeast_hashlimit` takes the packet's cost from it.

use aya_ebpf::{
    helpers::generated::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, HashMap},
};
use netbeast_common::{
    HASHLIMIT_KEY_WORDS, HASHLIMIT_SETS, HASHLIMIT_WAYS, HashlimitBucket, HashlimitSet,
    HashlimitTable, L4_FRAGMENT, MAP_NO_PREALLOC, MAX_HASHLIMIT_TABLES, hashlimit,
    hashlimit_byte_cost, hashlimit_byte_take, hashlimit_set_of_words, limit_take, stats,
};

use crate::{
    classify::{compare_exchange, fetch_add},
    parse::{current_addr6, current_keys},
    recent::prefix_word,
    scratch::guard_scratch,
    stats::bump,
};

#[map]
static HASHLIMIT: Array<HashlimitSet> = Array::with_max_entries(HASHLIMIT_SETS, 0);

/// Each table's `--hashlimit-htable-max` (written by the loader) and live
/// bucket count (kept here), by name number and family
/// (`HashlimitKey::table`: a key's first word).
#[map]
static HASHLIMIT_TABLES: HashMap<u64, HashlimitTable> =
    HashMap::with_max_entries(MAX_HASHLIMIT_TABLES, MAP_NO_PREALLOC);

/// What `make`'s scan of a set found: the first free way, the stalest
/// bucket of the key's table and of any table, and their times. In the
/// guards' per-CPU scratch (`scratch::GuardScratch`).
#[repr(C)]
pub struct Scan {
    free: u64,
    own: u64,
    any: u64,
    own_last: u64,
    any_last: u64,
}

/// As `-m limit`'s `LIMIT_TRIES`.
const TRIES: u32 = 16;
const NS_PER_MS: u64 = 1_000_000;
/// Tries to take one from a table's live count: a lost race leaves the
/// count one too high (the table then fills one bucket early), never low.
const DECREMENT_TRIES: u32 = 4;

/// Takes one from the live count at `p`, unless it is 0.
#[inline(always)]
fn decrement(p: *mut u64) {
    for _ in 0..DECREMENT_TRIES {
        // SAFETY: a map value's aligned word.
        let seen = unsafe { core::ptr::read_volatile(p) };
        if seen == 0 || compare_exchange(p, seen, seen - 1) == seen {
            return;
        }
    }
}

/// Builds the current packet's bucket key (its table's name number from
/// `c`, the masked fields `settings` names) in the per-CPU scratch, where
/// [`netbeast_hashlimit_slot`] finds it; 0 when the packet has no bucket: a
/// fragment when ports are hashed (xt_hashlimit drops it). A global
/// function apart from the ones that find the bucket and take the credit,
/// all called by the guards: their frames side by side, not one above the
/// other, keep the
/// deepest call chain (entry, classifier, its loop's step, guards, this)
/// within 512 bytes of stack.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_hashlimit_key(settings: u32, c: u64) -> u32 {
    let Some(keys) = current_keys() else {
        return 0;
    };
    let ports = settings & (hashlimit::SRCPORT | hashlimit::DSTPORT) != 0;
    if ports && keys.l4a == L4_FRAGMENT {
        return 0;
    }
    let srclen = (settings >> hashlimit::SRCMASK_SHIFT) & hashlimit::MASK_BITS;
    let dstlen = (settings >> hashlimit::DSTMASK_SHIFT) & hashlimit::MASK_BITS;
    // Ports of TCP and UDP (the others have none: 0).
    let has_ports = keys.protocol == 6 || keys.protocol == 17;
    let sport = if has_ports && settings & hashlimit::SRCPORT != 0 {
        keys.l4a & 0xffff
    } else {
        0
    };
    let dport = if has_ports && settings & hashlimit::DSTPORT != 0 {
        keys.l4b & 0xffff
    } else {
        0
    };
    // The key is built in the per-CPU scratch: the guard runs at the end of
    // a deep call chain whose stack has no room for two IPv6 addresses.
    // SAFETY: a field of this CPU's scratch.
    let Some(key) = guard_scratch().map(|p| unsafe { &raw mut (*p).hashlimit_key }) else {
        return 0;
    };
    // SAFETY: this CPU's scratch, used by this program run only.
    let key = unsafe { &mut *key };
    key.name = c as u32;
    key.ports = sport << 16 | dport;
    key._pad = 0;
    // The addresses' 32 bytes cleared as four word stores: `key.src = [0;
    // 4]` and `key.dst = [0; 4]` compiled to a call of a byte-by-byte
    // memset loop, some 18-30 ns of every packet's ~275 (docs/BENCHMARKS.md).
    // SAFETY: words 1 to 4 of the 8-byte aligned key are `src` and `dst`.
    unsafe {
        let words = (&raw mut *key).cast::<u64>();
        for i in 1..5 {
            core::ptr::write_volatile(words.add(i), 0);
        }
    }
    let (src_on, dst_on) = (
        settings & hashlimit::SRCIP != 0,
        settings & hashlimit::DSTIP != 0,
    );
    if settings & hashlimit::V6 != 0 {
        let Some(w) = current_addr6() else {
            return 0;
        };
        key.v6 = 1;
        // The addresses' other three words (see `Packet::addr6`).
        if src_on {
            key.src = [
                keys.src & prefix_word(srclen, 0),
                w[0] & prefix_word(srclen, 1),
                w[2] & prefix_word(srclen, 2),
                w[4] & prefix_word(srclen, 3),
            ];
        }
        if dst_on {
            key.dst = [
                keys.dst & prefix_word(dstlen, 0),
                w[1] & prefix_word(dstlen, 1),
                w[3] & prefix_word(dstlen, 2),
                w[5] & prefix_word(dstlen, 3),
            ];
        }
    } else {
        key.v6 = 0;
        if src_on {
            key.src[0] = keys.src & mask(srclen);
        }
        if dst_on {
            key.dst[0] = keys.dst & mask(dstlen);
        }
    }
    1
}

/// The bucket of the current packet's key, which `netbeast_hashlimit_key`
/// built in the scratch, for a hashlimit guard (`c` its name's number and
/// expiry in ms), made when its set has none: `set << 3 | way` in
/// `HASHLIMIT`, or `u64::MAX` when the packet gets none (a key its full
/// table has no room for).
///
/// A new bucket takes a free slot of its set while its table holds
/// fewer buckets than its `--hashlimit-htable-max`; with none free, the
/// slot of the set's stalest bucket (of any table); once the table holds
/// its max, that of the stalest of its own buckets in the set, or none
/// at all (`stats::HASHLIMIT_FULL`; xt_hashlimit drops every new key's
/// packet then). A replaced bucket still live counts as evicted.
///
/// A global function, verified once, that the guard walk calls between
/// `netbeast_hashlimit_key` and `netbeast_hashlimit` rather than from
/// either: the guards' calls are the IPv4 program's deepest chain, and
/// two frames in a row there pass the verifier's 512 bytes.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_hashlimit_slot(c: u64) -> u64 {
    const MISSING: u64 = u64::MAX;
    let Some(scratch) = guard_scratch() else {
        return MISSING;
    };
    // SAFETY: this CPU's scratch, the key `netbeast_hashlimit_key` wrote
    // for this packet; 8-byte aligned (`HashlimitKey`'s alignment), so
    // read as its words.
    let key = unsafe { &raw const (*scratch).hashlimit_key } as *const [u64; HASHLIMIT_KEY_WORDS];
    // SAFETY: as above.
    let key = unsafe { &*key };
    // The set among those of the data plane's capacity (a power of two).
    let index = hashlimit_set_of_words(key) & (crate::classify::capacity().hashlimit_sets() - 1);
    let Some(set) = HASHLIMIT.get_ptr_mut(index) else {
        return MISSING;
    };
    for w in 0..HASHLIMIT_WAYS {
        // SAFETY: a map value valid for this run; the slot starts with
        // its key's words at an 8-byte aligned offset.
        let (last, words) = unsafe {
            let slot = &raw const (*set).slots[w];
            (
                core::ptr::read_volatile(&raw const (*slot).bucket.last_ns),
                slot as *const u64,
            )
        };
        // Word by word, up to the first that differs: each word read
        // (volatile) only once the ones before it matched. The key's
        // words loaded at once for every way were spilled, and the frame
        // took the deepest call chain past its 512 bytes.
        let mut same = 0;
        while same < HASHLIMIT_KEY_WORDS {
            // SAFETY: as above; `same` below the key's words.
            let (a, b) = unsafe {
                (
                    core::ptr::read_volatile(words.add(same)),
                    core::ptr::read_volatile(&raw const key[same]),
                )
            };
            if a != b {
                break;
            }
            same += 1;
        }
        if last != 0 && same == HASHLIMIT_KEY_WORDS {
            return u64::from(index) << 3 | w as u64;
        }
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // At most 2^32 ms: no overflow in ns.
    let way = make(set, key, now, (c >> 32) * NS_PER_MS);
    if way >= HASHLIMIT_WAYS as u32 {
        return MISSING;
    }
    u64::from(index) << 3 | u64::from(way)
}

/// Makes the bucket of `key` (its words) in `set` at `now` (see
/// `netbeast_hashlimit_slot`); its way, or `HASHLIMIT_WAYS` for none.
#[inline(always)]
fn make(set: *mut HashlimitSet, key: &[u64; HASHLIMIT_KEY_WORDS], now: u64, expire_ns: u64) -> u32 {
    const NONE: u32 = HASHLIMIT_WAYS as u32;
    // The key's table: its first word (name number and family).
    let name = key[0];
    let table = HASHLIMIT_TABLES.get_ptr_mut(&name);
    // A name the loader did not write (a ruleset older than the table
    // map): no max, no count.
    let full = match table {
        // SAFETY: a map value's aligned words.
        Some(t) => unsafe { core::ptr::read_volatile(&raw const (*t).live) >= (*t).max },
        None => false,
    };
    // The scan's choices live in a per-CPU scratch, not in registers:
    // the verifier tracks a register's constants (which way is free, which
    // is stalest) and would walk every combination of the eight ways; a
    // value read back from a map is just a number to it.
    let Some(scratch) = guard_scratch() else {
        return NONE;
    };
    // SAFETY: this CPU's scratch; nothing else runs on it meanwhile.
    let scan = unsafe { &mut (*scratch).hashlimit_scan };
    // Field by field, volatile: the struct written whole becomes a
    // `memset` call, a byte loop (`mem`).
    // SAFETY: fields of this CPU's scratch.
    unsafe {
        core::ptr::write_volatile(&mut scan.free, u64::from(NONE));
        core::ptr::write_volatile(&mut scan.own, u64::from(NONE));
        core::ptr::write_volatile(&mut scan.any, u64::from(NONE));
        core::ptr::write_volatile(&mut scan.own_last, u64::MAX);
        core::ptr::write_volatile(&mut scan.any_last, u64::MAX);
    }
    for w in 0..HASHLIMIT_WAYS {
        // SAFETY: a map value valid for this run.
        let (last, slot_name) = unsafe {
            let slot = &raw const (*set).slots[w];
            (
                core::ptr::read_volatile(&raw const (*slot).bucket.last_ns),
                // The slot key's table: its first word.
                core::ptr::read_volatile(slot as *const u64),
            )
        };
        if last == 0 {
            if scan.free == u64::from(NONE) {
                scan.free = w as u64;
            }
            continue;
        }
        if last < scan.any_last {
            (scan.any, scan.any_last) = (w as u64, last);
        }
        if slot_name == name && last < scan.own_last {
            (scan.own, scan.own_last) = (w as u64, last);
        }
    }
    let free = core::hint::black_box(scan.free);
    let way = if !full && free != u64::from(NONE) {
        free
    } else if !full {
        scan.any
    } else if scan.own != u64::from(NONE) {
        scan.own
    } else {
        bump(stats::HASHLIMIT_FULL);
        return NONE;
    };
    if way >= u64::from(NONE) {
        return NONE;
    }
    let way = way as u32;
    // SAFETY: a map value valid for this run; `way` below the set's length.
    let slot = unsafe { &raw mut (*set).slots[way as usize] };
    // SAFETY: as above.
    let (old_last, old_name, old_expire) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*slot).bucket.last_ns),
            core::ptr::read_volatile(slot as *const u64),
            (*slot).expire_ns,
        )
    };
    // Claimed by moving its time: another CPU making a bucket in the same
    // slot at once loses, and its packet counts as contended. Until the
    // key is written below, a packet of the old key may still find (and
    // spend) the slot: the new key's bucket is reset after it.
    // SAFETY: as above.
    if compare_exchange(unsafe { &raw mut (*slot).bucket.last_ns }, old_last, now) != old_last {
        bump(stats::HASHLIMIT_CONTENDED);
        return NONE;
    }
    let replaced_other = old_last != 0 && old_name != name;
    if old_last != 0 && now.saturating_sub(old_last) <= old_expire {
        bump(stats::HASHLIMIT_EVICTED);
    }
    if replaced_other {
        if let Some(t) = HASHLIMIT_TABLES.get_ptr_mut(&old_name) {
            // SAFETY: a map value's aligned word.
            decrement(unsafe { &raw mut (*t).live });
        }
    }
    if old_last == 0 || replaced_other {
        if let Some(t) = table {
            // SAFETY: as above.
            fetch_add(unsafe { &raw mut (*t).live });
        }
    }
    // SAFETY: as above; the key is the slot's first words.
    unsafe {
        let words = slot as *mut u64;
        for (i, k) in key.iter().enumerate() {
            core::ptr::write_volatile(words.add(i), core::ptr::read_volatile(k));
        }
        (*slot).expire_ns = expire_ns;
        core::ptr::write_volatile(&raw mut (*slot).bucket.tat, 0);
        core::ptr::write_volatile(&raw mut (*slot).bucket.window, 0);
    }
    bump(stats::HASHLIMIT_NEW);
    way
}

/// The network-order mask of a prefix length.
#[inline(always)]
fn mask(len: u32) -> u32 {
    if len == 0 {
        0
    } else if len >= 32 {
        u32::MAX
    } else {
        (u32::MAX << (32 - len)).to_be()
    }
}

/// Takes the current packet's cost from its bucket, `slot` (what
/// `netbeast_hashlimit_slot` returned for the guard); 1 when the bucket
/// had it, 0 when it had not or there is none. `settings` is the guard's
/// `_pad` (`hashlimit::*`), `cost` and `depth` in ns (bytes mode: a
/// chunk's cost, and the burst's refills), `c` its name's number and
/// expiry (ms). A global function, verified once.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_hashlimit(
    settings: u32,
    cost: u64,
    depth: u64,
    c: u64,
    slot: u64,
) -> u32 {
    let Some(keys) = current_keys() else {
        return 0;
    };
    if slot == u64::MAX {
        return 0;
    }
    let way = (slot & 7) as usize;
    let Some(set) = HASHLIMIT.get_ptr_mut((slot >> 3) as u32) else {
        return 0;
    };
    if way >= HASHLIMIT_WAYS {
        return 0;
    }
    // SAFETY: a map value valid for this run; `way` below the set's length.
    let bucket = unsafe { &raw mut (*set).slots[way].bucket };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // At most 2^32 ms: no overflow in ns.
    let expire = (c >> 32) * NS_PER_MS;
    if settings & hashlimit::RATE_MATCH != 0 {
        return rate_match(bucket, settings, cost, depth, now, expire, keys.length);
    }
    let bytes = settings & hashlimit::BYTES != 0;
    // Bytes mode: `cost` is a chunk's, the depth one second and `depth`
    // the refills of the rule's burst.
    let (cost, refills) = if bytes {
        (hashlimit_byte_cost(u32::from(keys.length), cost), depth)
    } else {
        (cost, 0)
    };
    // SAFETY: a map value, valid for this program run; `tat` is its first
    // word, 8-byte aligned, `window` (the refills spent) its third.
    let (tat_p, used_p, last) = unsafe {
        (
            &raw mut (*bucket).tat,
            &raw mut (*bucket).window,
            (*bucket).last_ns,
        )
    };
    // SAFETY: as above.
    unsafe { (*bucket).last_ns = now };
    // SAFETY: as above.
    let mut expected = unsafe { core::ptr::read_volatile(tat_p) };
    // Idle past its expiry: the kernel would have dropped the entry, and
    // a new one starts full, with all its refills.
    let mut tat = if last != 0 && now.saturating_sub(last) > expire {
        if bytes {
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(used_p, 0) };
        }
        0
    } else {
        expected
    };
    for _ in 0..TRIES {
        let step = if bytes {
            // SAFETY: as above.
            let used = unsafe { core::ptr::read_volatile(used_p) };
            hashlimit_byte_take(tat, used, now, cost, refills)
        } else {
            limit_take(tat, now, cost, depth).map(|new| (new, false))
        };
        let Some((new, refilled)) = step else {
            return 0;
        };
        let seen = compare_exchange(tat_p, expected, new);
        if seen == expected {
            if refilled {
                // Counted once the refill is taken: two CPUs refilling
                // at the same moment may both take the last one (the
                // kernel's entry lock makes it one).
                fetch_add_n(used_p, 1);
            }
            return 1;
        }
        // Another CPU took credit meanwhile: start from its state.
        expected = seen;
        tat = seen;
    }
    bump(stats::HASHLIMIT_CONTENDED);
    0
}

/// Adds `v` to the word at `p` atomically (for every CPU) and returns the
/// value before (see `classify::fetch_add`, which adds one).
#[inline(always)]
fn fetch_add_n(p: *mut u64, v: u64) -> u64 {
    let mut v = v;
    // SAFETY: `p` points to a u64 of a map value (8-byte aligned); the
    // instruction reads and writes only that word.
    unsafe {
        core::arch::asm!(
            "{v} = atomic_fetch_add((u64 *)({p} + 0), {v})",
            p = in(reg) p,
            v = inout(reg) v,
        );
    }
    v
}

/// `--hashlimit-rate-match` (xt_hashlimit revision 3): the key's packets
/// (or bytes) are counted per window of the rule's interval. When a
/// packet comes a whole interval or more after its window began, a new
/// window begins, remembering whether the old one's count, over the time
/// it lasted, was above `rate` per interval. A packet is under the limit
/// while the last window was not and its own brings this window's count
/// to `burst` at most (the count goes on growing over the limit). The
/// window's start is claimed with compare-and-exchange, so one CPU rolls
/// it over; counts are atomic adds. 1 when under the limit.
#[inline(always)]
fn rate_match(
    bucket: *mut HashlimitBucket,
    settings: u32,
    rate: u64,
    burst: u64,
    now: u64,
    expire_ns: u64,
    length: u16,
) -> u32 {
    // SAFETY: a map value, valid for this program run; its words are
    // 8-byte aligned.
    let (start_p, window_p, last) = unsafe {
        (
            &raw mut (*bucket).tat,
            &raw mut (*bucket).window,
            (*bucket).last_ns,
        )
    };
    // SAFETY: as above.
    unsafe { (*bucket).last_ns = now };
    let interval_ms = u64::from((settings >> hashlimit::INTERVAL_SHIFT) & 0xff).max(1) * 1000;
    // SAFETY: as above.
    let start = unsafe { core::ptr::read_volatile(start_p) };
    // A new key, or one idle past its expiry (the kernel would have
    // dropped its entry): a fresh window from now.
    if start == 0 || (last != 0 && now.saturating_sub(last) > expire_ns) {
        if compare_exchange(start_p, start, now) == start {
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(window_p, 0) };
        }
    } else {
        let delta_ms = now.saturating_sub(start) / NS_PER_MS;
        if delta_ms >= interval_ms && compare_exchange(start_p, start, now) == start {
            // SAFETY: as above.
            let count = unsafe { core::ptr::read_volatile(window_p) } >> 1;
            // As the kernel compares them (count × interval > time the
            // window lasted × rate), divided out: BPF has no overflow
            // checked 64-bit multiply. Both factors are held to 32 bits
            // (a window of 49 days, a rate of 4 GB/s).
            let allowed = delta_ms
                .min(u64::from(u32::MAX))
                .wrapping_mul(rate.min(u64::from(u32::MAX)))
                / interval_ms;
            let over = count > allowed;
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(window_p, over as u64) };
        }
    }
    let cost = if settings & hashlimit::BYTES != 0 {
        u64::from(length)
    } else {
        1
    };
    let before = fetch_add_n(window_p, cost << 1);
    let count = (before >> 1) + cost;
    (before & 1 == 0 && count <= burst) as u32
}
