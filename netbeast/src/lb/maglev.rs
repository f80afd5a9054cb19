//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), with weights as
//! Katran has them: a lookup table of prime size `M` in which every backend
//! owns about `M × weight / total` entries, filled so that removing one
//! backend moves little beyond that backend's own entries.
//!
//! Written here rather than taken from a crate: the `maglev` crate on
//! crates.io has no weights, hashes backends with a hasher the standard
//! library does not promise to keep stable (two boxes behind ECMP must
//! build the same table), and returns a table of backend values where the
//! kernel needs one of compact ids. The algorithm is a few dozen lines.

use netbeast_common::lb::MAX_BACKENDS;

/// Table size when there are few backends: the paper's and Katran's 65,537
/// (prime).
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;
/// Entries per backend, at least: past 655 backends the table grows to the
/// smallest prime ≥ this × backends, so each backend still owns about 100
/// entries and shares stay within a few percent.
pub const ENTRIES_PER_BACKEND: u32 = 100;
/// Largest weight a backend may have. Each fill round gives a backend
/// `weight` turns; a bound keeps one round short beside the table.
pub const MAX_WEIGHT: u32 = 1000;

/// One backend as Maglev sees it: a stable id (what the table holds), the
/// bytes that name it (its address and port: they seed its permutation, so
/// every box derives the same one), and its weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u16,
    pub name: [u8; 6],
    pub weight: u32,
}

/// The table size for `backends` backends: 65,537 or the smallest prime
/// ≥ 100 × backends.
pub fn table_size(backends: usize) -> u32 {
    let want = (backends as u32).saturating_mul(ENTRIES_PER_BACKEND);
    if want <= DEFAULT_TABLE_SIZE {
        return DEFAULT_TABLE_SIZE;
    }
    let mut n = want | 1;
    while !is_prime(n) {
        n += 2;
    }
    n
}

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// A fixed 64-bit hash of `bytes` with `seed` (FNV-1a, then murmur3's
/// finalizer for avalanche): the same on every box and every build.
fn hash(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

const OFFSET_SEED: u64 = 0x6d61_676c_6576_0001;
const SKIP_SEED: u64 = 0x6d61_676c_6576_0002;

/// Builds the lookup table of size `size` (a prime: every skip is then
/// coprime with it, so each permutation visits every entry). Members of
/// weight 0 own nothing. Empty when no member has a weight.
///
/// Fill: in rounds, each member in turn claims its next preferred free
/// entry, `weight` times per round (Katran's weighting). Members are taken
/// in the order of their names, so the table does not depend on the order
/// they were added in.
pub fn build(members: &[Member], size: u32) -> Vec<u16> {
    assert!(is_prime(size), "the Maglev table size must be prime");
    assert!(members.len() <= MAX_BACKENDS as usize);
    let mut members: Vec<&Member> = members.iter().filter(|m| m.weight > 0).collect();
    if members.is_empty() {
        return Vec::new();
    }
    members.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    let m = size as u64;
    // Member i's k-th preferred entry is (offset + k × skip) mod m; each
    // next one is the last plus skip, less m once past the end. Walked that
    // way, a probe is an add and a compare instead of a 64-bit division:
    // filling the ~100,000 entries of 1,000 backends takes about M ln M
    // probes, and the division was most of a backend change's time.
    // (The table is the very one the formula gives: see the test
    // `incremental_walk_is_the_formula`.)
    let perms: Vec<(u32, u32)> = members
        .iter()
        .map(|b| {
            let offset = hash(&b.name, OFFSET_SEED) % m;
            let skip = hash(&b.name, SKIP_SEED) % (m - 1) + 1;
            (offset as u32, skip as u32)
        })
        .collect();
    // Entry < size and skip < size, so their sum stays below 2^32.
    let step = |entry: u32, skip: u32| {
        let next = entry + skip;
        if next >= size { next - size } else { next }
    };
    let mut preferred: Vec<u32> = perms.iter().map(|(offset, _)| *offset).collect();
    let mut table = vec![u16::MAX; size as usize];
    let mut filled = 0u32;
    'fill: loop {
        for (i, b) in members.iter().enumerate() {
            let skip = perms[i].1;
            for _ in 0..b.weight.min(MAX_WEIGHT) {
                let mut entry = preferred[i];
                while table[entry as usize] != u16::MAX {
                    entry = step(entry, skip);
                }
                table[entry as usize] = b.id;
                preferred[i] = step(entry, skip);
                filled += 1;
                if filled == size {
                    break 'fill;
                }
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn members(n: usize) -> Vec<Member> {
        (0..n)
            .map(|i| {
                let addr = [10, 1, (i >> 8) as u8, i as u8];
                Member {
                    id: i as u16,
                    name: [addr[0], addr[1], addr[2], addr[3], 0x1f, 0x90],
                    weight: 1,
                }
            })
            .collect()
    }

    fn shares(table: &[u16]) -> HashMap<u16, usize> {
        let mut counts = HashMap::new();
        for id in table {
            *counts.entry(*id).or_insert(0) += 1;
        }
        counts
    }

    /// The paper's fill, each preferred entry computed from its index.
    fn build_by_formula(members: &[Member], size: u32) -> Vec<u16> {
        let mut members: Vec<&Member> = members.iter().filter(|m| m.weight > 0).collect();
        members.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        let m = size as u64;
        let perms: Vec<(u64, u64)> = members
            .iter()
            .map(|b| {
                (
                    hash(&b.name, OFFSET_SEED) % m,
                    hash(&b.name, SKIP_SEED) % (m - 1) + 1,
                )
            })
            .collect();
        let mut next = vec![0u64; members.len()];
        let mut table = vec![u16::MAX; size as usize];
        let mut filled = 0;
        'fill: loop {
            for (i, b) in members.iter().enumerate() {
                for _ in 0..b.weight.min(MAX_WEIGHT) {
                    let (offset, skip) = perms[i];
                    let mut entry = (offset + next[i] * skip) % m;
                    while table[entry as usize] != u16::MAX {
                        next[i] += 1;
                        entry = (offset + next[i] * skip) % m;
                    }
                    table[entry as usize] = b.id;
                    next[i] += 1;
                    filled += 1;
                    if filled == size {
                        break 'fill;
                    }
                }
            }
        }
        table
    }

    /// Two boxes behind ECMP, or two versions of netbeast, must build the
    /// same table: the fast walk gives exactly the formula's.
    #[test]
    fn incremental_walk_is_the_formula() {
        for (n, size) in [
            (3, 65_537),
            (100, 65_537),
            (1000, table_size(1000)),
            (7, 13),
        ] {
            let mut ms = members(n);
            ms[0].weight = 2;
            assert_eq!(
                build(&ms, size),
                build_by_formula(&ms, size),
                "{n} backends"
            );
        }
    }

    #[test]
    fn sizes_are_prime_and_large_enough() {
        assert_eq!(table_size(3), 65_537);
        assert_eq!(table_size(655), 65_537);
        for n in [656, 1000, MAX_BACKENDS as usize] {
            let size = table_size(n);
            assert!(is_prime(size) && size >= 100 * n as u32, "{n}: {size}");
            assert!(size <= netbeast_common::lb::TABLE_CAPACITY);
        }
        assert_eq!(table_size(1000), 100_003);
    }

    #[test]
    fn thousand_backends_share_evenly() {
        let m = members(1000);
        let size = table_size(m.len());
        let table = build(&m, size);
        assert!(table.iter().all(|id| *id != u16::MAX));
        let counts = shares(&table);
        assert_eq!(counts.len(), 1000);
        let max = *counts.values().max().unwrap() as f64;
        let min = *counts.values().min().unwrap() as f64;
        eprintln!(
            "1,000 backends, table {size}: max/min share {:.4}",
            max / min
        );
        assert!(max / min <= 1.05, "max/min share {}", max / min);
    }

    #[test]
    fn removing_one_of_a_thousand_moves_few_other_flows() {
        let m = members(1000);
        let size = table_size(m.len());
        let before = build(&m, size);
        let removed = 417u16;
        let rest: Vec<Member> = m.iter().filter(|b| b.id != removed).cloned().collect();
        let after = build(&rest, size);
        let unrelated = before.iter().filter(|id| **id != removed).count();
        let moved = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| **b != removed && b != a)
            .count();
        let fraction = moved as f64 / unrelated as f64;
        eprintln!(
            "1 of 1,000 backends removed: {:.4}% of unrelated flows moved",
            fraction * 100.0
        );
        assert!(fraction <= 0.01, "{:.4} of unrelated flows moved", fraction);
        // The removed backend's entries all went elsewhere.
        assert!(after.iter().all(|id| *id != removed));
    }

    #[test]
    fn weights_one_two_one() {
        let mut m = members(3);
        m[1].weight = 2;
        let table = build(&m, DEFAULT_TABLE_SIZE);
        let counts = shares(&table);
        let total = table.len() as f64;
        for (id, want) in [(0u16, 0.25), (1, 0.5), (2, 0.25)] {
            let got = counts[&id] as f64 / total;
            assert!(
                (got - want).abs() < 0.001,
                "backend {id}: {got} (want {want})"
            );
        }
    }

    #[test]
    fn weight_zero_owns_nothing_and_order_does_not_matter() {
        let mut m = members(4);
        m[2].weight = 0;
        let table = build(&m, DEFAULT_TABLE_SIZE);
        assert!(!table.contains(&2));
        let mut reversed = m.clone();
        reversed.reverse();
        assert_eq!(build(&reversed, DEFAULT_TABLE_SIZE), table);
        assert!(build(&[], DEFAULT_TABLE_SIZE).is_empty());
    }
}
