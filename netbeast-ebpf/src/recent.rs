//! `-m recent`: per-name lists of addresses with the times their packets
//! were seen (xt_recent). `--set` records the packet's masked address,
//! `--rcheck` asks whether it is listed (seen `--hitcount` times within
//! `--seconds`), `--update` does the same and records this packet when it
//! matches, `--remove` takes the address off. Lists are told apart by the
//! name's number in the key, so they outlive ruleset changes and every
//! rule naming one shares it, as the kernel's `/proc/net/xt_recent/NAME`
//! lists do. `netbeast recent -L` reads them.

use aya_ebpf::{helpers::generated::bpf_ktime_get_ns, macros::map, maps::LruHashMap};
use netbeast_common::{RECENT_ENTRIES, RECENT_STAMPS, RecentEntry, RecentKey, recent, stats};

use crate::{
    classify::{compare_exchange, spin_lock},
    parse::{current_addr6, current_keys},
    stats::bump,
};

#[map]
static RECENT: LruHashMap<RecentKey, RecentEntry> = LruHashMap::with_max_entries(RECENT_ENTRIES, 0);
/// An empty entry to insert from (too big for the stack), never written.

/// Tries to take an entry's lock before giving up (as connlimit's).
const SPINS: u32 = 4096;
const BPF_NOEXIST: u64 = 1;
const NS: u64 = 1_000_000_000;
const _: () = assert!(RECENT_STAMPS.is_power_of_two(), "the ring index is masked");

/// Word `i` (0..4) of the IPv6 mask of `prefix` leading ones, in network
/// byte order.
#[inline(always)]
pub fn prefix_word(prefix: u32, i: u32) -> u32 {
    let bits = prefix.saturating_sub(32 * i).min(32);
    if bits == 0 {
        0
    } else {
        (u32::MAX << (32 - bits)).to_be()
    }
}

/// Records a packet's time and TTL in an entry whose lock is held.
#[inline(always)]
fn stamp(e: &mut RecentEntry, now: u64, ttl: u32) {
    let i = e.index as usize & (RECENT_STAMPS - 1);
    e.stamps[i] = now;
    e.index = (i as u32 + 1) & (RECENT_STAMPS as u32 - 1);
    if (e.count as usize) < RECENT_STAMPS {
        e.count += 1;
    }
    e.ttl = ttl;
}

/// Evaluates a `-m recent` match for the current packet: 1 when it
/// matches (`!` applied), 0 when not. `flags` are `recent::*`, `c` the
/// name's number and mask. A global function, verified once.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_recent(
    flags: u32,
    invert: u32,
    seconds: u64,
    hitcount: u64,
    c: u64,
) -> u32 {
    let Some(keys) = current_keys() else {
        return 0;
    };
    let dest = flags & recent::DEST != 0;
    let Some(key) = crate::scratch::guard_scratch().map(|p| unsafe { &raw mut (*p).recent_key })
    else {
        return 0;
    };
    // SAFETY: this CPU's scratch, used by this program run only.
    let key = unsafe { &mut *key };
    key.name = c as u32;
    key.v6 = 0;
    key.addr = [if dest { keys.dst } else { keys.src }, 0, 0, 0];
    if flags & recent::V6 != 0 {
        let Some(w) = current_addr6() else {
            return 0;
        };
        key.v6 = 1;
        let prefix = (c >> 32) as u32;
        key.addr[0] &= prefix_word(prefix, 0);
        // The address's other three words (see `Packet::addr6`: source
        // words at even indexes, destination at odd), each loaded, masked
        // and stored in turn: loaded all at once, LLVM spilled two of them,
        // and this frame is the deepest of the IPv4 XDP program's call
        // chain (ARCHITECTURE "Verifier").
        let side = usize::from(dest);
        for i in 1..4 {
            // SAFETY: `2 * (i - 1) + side` is at most 5, within the array.
            let word = unsafe { core::ptr::read_volatile(&raw const w[2 * (i - 1) + side]) };
            key.addr[i] = word & prefix_word(prefix, i as u32);
        }
    } else {
        key.addr[0] &= (c >> 32) as u32;
    }
    let key: &RecentKey = key;
    let ttl = u32::from(keys.ttl);
    let mut ret = invert != 0;
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let found = match RECENT.get_ptr_mut(key) {
        // --rttl: an entry of another TTL is not this packet's.
        // SAFETY: a map value; a racy read of one word is fine here.
        Some(e) if flags & recent::TTL != 0 && unsafe { (*e).ttl } != ttl => None,
        other => other,
    };
    let Some(e) = found else {
        if flags & recent::SET == 0 {
            return u32::from(ret);
        }
        let Some(empty) =
            crate::scratch::guard_scratch().map(|p| unsafe { &*(&raw const (*p).empty_recent) })
        else {
            return 0;
        };
        // Another CPU may insert it first: either way it is there now.
        let _ = RECENT.insert(key, empty, BPF_NOEXIST);
        let Some(e) = RECENT.get_ptr_mut(key) else {
            return 0;
        };
        // SAFETY: a map value, valid for this program run.
        let e = unsafe { &mut *e };
        if !lock(e) {
            return 0;
        }
        stamp(e, now, ttl);
        compare_exchange(&raw mut e.lock, 1, 0);
        return u32::from(!ret);
    };
    // SAFETY: a map value, valid for this program run.
    let e = unsafe { &mut *e };
    if !lock(e) {
        return 0;
    }
    let mut remove = false;
    if flags & recent::SET != 0 {
        ret = !ret;
    } else if flags & recent::REMOVE != 0 {
        remove = true;
        ret = !ret;
    } else if flags & (recent::CHECK | recent::UPDATE) != 0 {
        let since = now.saturating_sub(seconds * NS);
        let hits = count_hits(e, seconds, since);
        let want = if hitcount == 0 { 1 } else { hitcount };
        if hits >= want {
            ret = !ret;
        }
        if flags & recent::REAP != 0 && e.count != 0 {
            // The entry's newest time is older than --seconds: it goes.
            let i = (e.index as usize).wrapping_sub(1) & (RECENT_STAMPS - 1);
            // SAFETY: in bounds (masked).
            let last = unsafe { core::ptr::read_volatile(&raw const e.stamps[i]) };
            remove = last < since;
        }
    }
    if !remove && (flags & recent::SET != 0 || (flags & recent::UPDATE != 0 && ret)) {
        stamp(e, now, ttl);
    }
    compare_exchange(&raw mut e.lock, 1, 0);
    if remove {
        let _ = RECENT.remove(key);
    }
    u32::from(ret)
}

/// The entry's times since `since` (all with `seconds` 0). Out of line,
/// reading in place: inlined, LLVM copied the array to the stack that the
/// classifier's frames leave short.
#[inline(never)]
fn count_hits(e: &RecentEntry, seconds: u64, since: u64) -> u64 {
    let count = e.count as usize;
    let stamps = e.stamps.as_ptr();
    let mut hits = 0;
    for i in 0..RECENT_STAMPS {
        if i >= count {
            break;
        }
        // SAFETY: `i` is below the array's length.
        let t = unsafe { *stamps.add(i) };
        if seconds == 0 || t >= since {
            hits += 1;
        }
    }
    hits
}

/// Takes an entry's lock; false (counted) when other CPUs held it all
/// along.
#[inline(always)]
fn lock(e: &mut RecentEntry) -> bool {
    if spin_lock(&raw mut e.lock, SPINS) {
        return true;
    }
    bump(stats::RECENT_CONTENDED);
    false
}
