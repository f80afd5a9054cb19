//! `-m hashlimit`: a token bucket per key — the packet's masked addresses
//! and ports that the rule's `--hashlimit-mode` names — in the table of its
//! `--hashlimit-name` (xt_hashlimit). Tables are told apart by the name's
//! number in the key, not by the rule, so a table keeps its buckets across
//! ruleset changes as the kernel's do by name. Every bucket is one word
//! (as `-m limit`'s, see `netbeast_common::limit_take`) updated with
//! compare-and-exchange: exact for every CPU.

use aya_ebpf::{helpers::generated::bpf_ktime_get_ns, macros::map, maps::LruHashMap};
use netbeast_common::{
    HASHLIMIT_ENTRIES, HashlimitBucket, HashlimitKey, L4_FRAGMENT, hashlimit, limit_take, stats,
};

use crate::{classify::compare_exchange, parse::current_keys, stats::bump};

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

/// Takes the current packet's cost from its bucket; 1 when the bucket had
/// it. `settings` is the guard's `_pad` (`hashlimit::*`), `cost` and
/// `depth` in ns, `c` its name's number and expiry (ms). A fragment when
/// ports are hashed has no bucket: 0 (xt_hashlimit drops it). A global
/// function, verified once.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_hashlimit(settings: u32, cost: u64, depth: u64, c: u64) -> u32 {
    let Some(keys) = current_keys() else {
        return 0;
    };
    let ports = settings & (hashlimit::SRCPORT | hashlimit::DSTPORT) != 0;
    if ports && keys.l4a == L4_FRAGMENT {
        return 0;
    }
    let srcmask = mask((settings >> hashlimit::SRCMASK_SHIFT) & 0x3f);
    let dstmask = mask((settings >> hashlimit::DSTMASK_SHIFT) & 0x3f);
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
    let key = HashlimitKey {
        name: c as u32,
        src: if settings & hashlimit::SRCIP != 0 {
            keys.src & srcmask
        } else {
            0
        },
        dst: if settings & hashlimit::DSTIP != 0 {
            keys.dst & dstmask
        } else {
            0
        },
        ports: sport << 16 | dport,
    };
    let cost = if settings & hashlimit::BYTES != 0 {
        let chunks = u64::from(keys.length) >> hashlimit::BYTE_SHIFT;
        // Capped at one second's worth (no 128-bit multiply on BPF).
        if chunks != 0 && cost > hashlimit::BYTES_DEPTH_NS / chunks {
            hashlimit::BYTES_DEPTH_NS
        } else {
            chunks * cost
        }
    } else {
        cost
    };
    let mut bucket = HASHLIMIT.get_ptr_mut(&key);
    if bucket.is_none() {
        let _ = HASHLIMIT.insert(&key, &HashlimitBucket::default(), BPF_NOEXIST);
        bump(stats::HASHLIMIT_NEW);
        bucket = HASHLIMIT.get_ptr_mut(&key);
    }
    let Some(bucket) = bucket else {
        return 0;
    };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a map value, valid for this program run; `tat` is its first
    // word, 8-byte aligned.
    let (tat_p, last) = unsafe { (&raw mut (*bucket).tat, (*bucket).last_ns) };
    // SAFETY: as above.
    unsafe { (*bucket).last_ns = now };
    // At most 2^32 ms: no overflow in ns.
    let expire = (c >> 32) * NS_PER_MS;
    // SAFETY: as above.
    let mut expected = unsafe { core::ptr::read_volatile(tat_p) };
    // Idle past its expiry: the kernel would have dropped the entry, and
    // a new one starts full.
    let mut tat = if last != 0 && now.saturating_sub(last) > expire {
        0
    } else {
        expected
    };
    for _ in 0..TRIES {
        let Some(new) = limit_take(tat, now, cost, depth) else {
            return 0;
        };
        let seen = compare_exchange(tat_p, expected, new);
        if seen == expected {
            return 1;
        }
        // Another CPU took credit meanwhile: start from its state.
        expected = seen;
        tat = seen;
    }
    bump(stats::HASHLIMIT_CONTENDED);
    0
}
