//! Address classes by hashed prefix lengths: the fast way to look up the
//! source and destination address fields.
//!
//! An address field whose prefixes (other than `0.0.0.0/0`) have at most
//! `MAX_ADDR_HASH_LENGTHS` distinct lengths is looked up by probing, for
//! each of those lengths from the longest, the address masked to that
//! length in one hash table shared by all chains (`ADDR_HASH`); the first
//! hit is the longest matching prefix, and no hit means the `/0` class. A
//! block list of host addresses (all `/32`) costs one probe, whatever its
//! size. Each prefix sits in the first of its two buckets that has room
//! (moving others aside when both are full, as cuckoo hashing does), so a
//! lookup reads the second bucket only when the first is full; a field
//! whose prefixes do not fit, or that names more lengths, uses the LPM
//! trie.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use netbeast_common::{
    ADDR_HASH_WAYS, ADDR_TRIE, AddrSlot, MAX_ADDR_HASH_LENGTHS, addr_hash_base, addr_hash_buckets,
    field,
};

use super::CompiledChain;
use crate::rules::model::prefix_mask;

/// Moves of other prefixes one insertion may make before it gives up.
const MAX_KICKS: usize = 500;

/// The buckets of one generation's region that hold prefixes, by index in
/// the region. Keys carry no epoch yet (the loader adds it).
#[derive(Default)]
pub struct AddrHash {
    pub buckets: BTreeMap<u32, [AddrSlot; ADDR_HASH_WAYS]>,
    /// The buckets that are the first bucket of a prefix placed in its
    /// second: a lookup that misses in one of them must read the second
    /// bucket. The loader seals every other bucket it writes
    /// (`AddrSlot::sealed`), so a miss there reads one bucket, full or not.
    pub overflowed: BTreeSet<u32>,
}

impl AddrHash {
    /// The class of `addr` for address field `f` of the chain whose
    /// `addr_table` is `table`, probing as the kernel does; `None` when no
    /// probed length holds it (the field's default class applies).
    pub fn class(
        &self,
        table: u32,
        f: usize,
        lengths: &[u8; MAX_ADDR_HASH_LENGTHS],
        addr: Ipv4Addr,
    ) -> Option<u32> {
        lengths
            .iter()
            .take_while(|&&len| len != 0)
            .find_map(|&len| {
                let masked = u32::from(addr) & prefix_mask(len);
                self.find(addr_hash_base(table, f as u32, len.into(), masked))
            })
    }

    /// The kernel's probe (see [`Self::probe`]).
    fn find(&self, base: u64) -> Option<u32> {
        self.probe(base).0
    }

    /// The class of key `base` and how many buckets the kernel reads to
    /// find it or to know it is absent (1 or 2): the first bucket, then the
    /// second only when the first is full (a prefix goes to its second
    /// bucket only then) and not sealed.
    pub fn probe(&self, base: u64) -> (Option<u32>, usize) {
        let (b1, b2) = addr_hash_buckets(base);
        let empty = [AddrSlot::default(); ADDR_HASH_WAYS];
        let first = self.buckets.get(&b1).unwrap_or(&empty);
        if let Some(s) = first.iter().find(|s| s.key == base) {
            return (Some(s.class), 1);
        }
        // The kernel stops at a sealed bucket (the loader seals every
        // written bucket that is not `overflowed`) and at one with room.
        if !self.overflowed.contains(&b1) || first[ADDR_HASH_WAYS - 1].key == 0 {
            return (None, 1);
        }
        let second = self.buckets.get(&b2).unwrap_or(&empty);
        (second.iter().find(|s| s.key == base).map(|s| s.class), 2)
    }
}

/// Builds the table as the kernel reads it: bucket contents during the
/// placement, with an undo log so a field that does not fit leaves no trace.
struct Placer {
    buckets: HashMap<u32, Vec<(u64, u32)>>,
    undo: Vec<(u32, Vec<(u64, u32)>)>,
}

impl Placer {
    fn bucket(&mut self, b: u32) -> &mut Vec<(u64, u32)> {
        let current = self.buckets.entry(b).or_default();
        self.undo.push((b, current.clone()));
        self.buckets.get_mut(&b).expect("just inserted")
    }

    fn len(&self, b: u32) -> usize {
        self.buckets.get(&b).map_or(0, Vec::len)
    }

    /// Places `entry` (key base, class); `false` when it found no room.
    /// A prefix goes to its first bucket when that has room, else to its
    /// second: so a prefix is in its second bucket only while its first is
    /// full (no bucket ever loses a slot), and a lookup that misses in a
    /// first bucket with room is over after one bucket.
    fn insert(&mut self, mut entry: (u64, u32)) -> bool {
        for kick in 0..MAX_KICKS {
            let (b1, b2) = addr_hash_buckets(entry.0);
            for b in [b1, b2] {
                if self.len(b) < ADDR_HASH_WAYS {
                    self.bucket(b).push(entry);
                    return true;
                }
            }
            // Both full: take a slot of one of them (alternating, and
            // rotating through the ways) and place its prefix again. Both
            // buckets stay full.
            let b = if kick % 2 == 0 { b1 } else { b2 };
            let way = (kick / 2) % ADDR_HASH_WAYS;
            entry = std::mem::replace(&mut self.bucket(b)[way], entry);
        }
        false
    }

    fn rollback(&mut self) {
        while let Some((b, old)) = self.undo.pop() {
            self.buckets.insert(b, old);
        }
    }
}

/// Decides for every used address field of every chain whether it is
/// hashed (its lengths into `config.addr_lengths`) or looked up in the
/// trie (`ADDR_TRIE`), and places the hashed prefixes.
pub(super) fn build(chains: &mut [CompiledChain]) -> AddrHash {
    let mut placer = Placer {
        buckets: HashMap::new(),
        undo: Vec::new(),
    };
    for (c, chain) in chains.iter_mut().enumerate() {
        chain.config.addr_table = c as u32;
        for (i, f) in field::ADDR_FIELDS.into_iter().enumerate() {
            chain.config.addr_lengths[i] = [0; MAX_ADDR_HASH_LENGTHS];
            if chain.config.fields_used & (1 << f) == 0 {
                continue;
            }
            let entries: Vec<_> = chain
                .addr_prefixes
                .iter()
                .filter(|p| p.field == f && p.net.prefix_len > 0)
                .collect();
            let mut lengths: Vec<u8> = entries.iter().map(|p| p.net.prefix_len).collect();
            lengths.sort_unstable_by(|a, b| b.cmp(a));
            lengths.dedup();
            let fits = lengths.len() <= MAX_ADDR_HASH_LENGTHS && {
                placer.undo.clear();
                let placed = entries.iter().all(|p| {
                    let base = addr_hash_base(
                        c as u32,
                        f as u32,
                        p.net.prefix_len.into(),
                        u32::from(p.net.addr),
                    );
                    placer.insert((base, p.class))
                });
                if !placed {
                    placer.rollback();
                }
                placed
            };
            if fits {
                chain.config.addr_lengths[i][..lengths.len()].copy_from_slice(&lengths);
            } else {
                chain.config.addr_lengths[i][0] = ADDR_TRIE;
            }
        }
    }
    // Marked from the final placement, so prefixes that kicks moved back
    // to their first bucket leave no mark behind.
    let mut overflowed = BTreeSet::new();
    for (&b, entries) in &placer.buckets {
        for &(key, _) in entries {
            let first = addr_hash_buckets(key).0;
            if first != b {
                overflowed.insert(first);
            }
        }
    }
    let buckets = placer
        .buckets
        .into_iter()
        .filter(|(_, entries)| !entries.is_empty())
        .map(|(b, entries)| {
            let mut slots = [AddrSlot::default(); ADDR_HASH_WAYS];
            for (slot, (key, class)) in slots.iter_mut().zip(entries) {
                *slot = AddrSlot {
                    key,
                    class,
                    sealed: 0,
                };
            }
            (b, slots)
        })
        .collect();
    AddrHash {
        buckets,
        overflowed,
    }
}
