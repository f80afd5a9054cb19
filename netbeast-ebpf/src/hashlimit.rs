//! `-m hashlimit`: a token bucket per key — the packet's masked addresses
//! and ports that the rule's `--hashlimit-mode` names — in the table of its
//! `--hashlimit-name` (xt_hashlimit). Tables are told apart by the name's
//! number in the key, not by the rule, so a table keeps its buckets across
//! ruleset changes as the kernel's do by name. Every bucket is one word
//! (as `-m limit`'s, see `netbeast_common::limit_take`) updated with
//! compare-and-exchange: exact for every CPU.

use aya_ebpf::{helpers::generated::bpf_ktime_get_ns, macros::map, maps::LruHashMap};
use netbeast_common::{
    HASHLIMIT_ENTRIES, HashlimitBucket, HashlimitKey, L4_FRAGMENT, hashlimit, hashlimit_byte_cost,
    hashlimit_byte_take, limit_take, stats,
};

use crate::{
    classify::compare_exchange,
    parse::{current_addr6, current_keys},
    recent::prefix_word,
    stats::bump,
};

#[map]
static HASHLIMIT: LruHashMap<HashlimitKey, HashlimitBucket> =
    LruHashMap::with_max_entries(HASHLIMIT_ENTRIES, 0);

/// As `-m limit`'s `LIMIT_TRIES`.
const TRIES: u32 = 16;
const BPF_NOEXIST: u64 = 1;
const NS_PER_MS: u64 = 1_000_000;

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

/// Builds the current packet's bucket key (its table's name number from
/// `c`, the masked fields `settings` names) in the per-CPU scratch, where
/// [`netbeast_hashlimit`] finds it; 0 when the packet has no bucket: a
/// fragment when ports are hashed (xt_hashlimit drops it). A global
/// function apart from the one that takes the credit, both called by the
/// guards: the two frames side by side, not one above the other, keep the
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
    let Some(key) = crate::scratch::guard_scratch().map(|p| unsafe { &raw mut (*p).hashlimit_key })
    else {
        return 0;
    };
    // SAFETY: this CPU's scratch, used by this program run only.
    let key = unsafe { &mut *key };
    key.name = c as u32;
    key.ports = sport << 16 | dport;
    key.src = [0; 4];
    key.dst = [0; 4];
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

/// Takes the current packet's cost from its bucket, whose key
/// [`netbeast_hashlimit_key`] built; 1 when the bucket had it. `settings`
/// is the guard's `_pad` (`hashlimit::*`), `cost` and `depth` in ns (bytes
/// mode: a chunk's cost, and the burst's refills), `c` its name's number
/// and expiry (ms). A global function, verified once.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_hashlimit(settings: u32, cost: u64, depth: u64, c: u64) -> u32 {
    let (Some(keys), Some(scratch)) = (current_keys(), crate::scratch::guard_scratch()) else {
        return 0;
    };
    // SAFETY: a field of this CPU's scratch, written by
    // `netbeast_hashlimit_key` for this packet.
    let key: &HashlimitKey = unsafe { &*(&raw const (*scratch).hashlimit_key) };
    if settings & hashlimit::RATE_MATCH != 0 {
        return rate_match(key, settings, cost, depth, c >> 32, keys.length);
    }
    let bytes = settings & hashlimit::BYTES != 0;
    // Bytes mode: `cost` is a chunk's, the depth one second and `depth`
    // the refills of the rule's burst.
    let (cost, refills) = if bytes {
        (hashlimit_byte_cost(u32::from(keys.length), cost), depth)
    } else {
        (cost, 0)
    };
    let mut bucket = HASHLIMIT.get_ptr_mut(key);
    if bucket.is_none() {
        let _ = HASHLIMIT.insert(key, &HashlimitBucket::default(), BPF_NOEXIST);
        bump(stats::HASHLIMIT_NEW);
        bucket = HASHLIMIT.get_ptr_mut(key);
    }
    let Some(bucket) = bucket else {
        return 0;
    };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
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
    // At most 2^32 ms: no overflow in ns.
    let expire = (c >> 32) * NS_PER_MS;
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
    key: &HashlimitKey,
    settings: u32,
    rate: u64,
    burst: u64,
    expire_ms: u64,
    length: u16,
) -> u32 {
    let mut bucket = HASHLIMIT.get_ptr_mut(key);
    if bucket.is_none() {
        let _ = HASHLIMIT.insert(key, &HashlimitBucket::default(), BPF_NOEXIST);
        bump(stats::HASHLIMIT_NEW);
        bucket = HASHLIMIT.get_ptr_mut(key);
    }
    let Some(bucket) = bucket else {
        return 0;
    };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
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
    if start == 0 || (last != 0 && now.saturating_sub(last) > expire_ms * NS_PER_MS) {
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
