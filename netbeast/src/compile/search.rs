//! The kernel's first-match search over class vectors, step for step and
//! through the packed tables it reads, so that tests of the compiled tables
//! test what the kernel computes.

use netbeast_common::{CLASS_ALL, SUMMARY_WORDS};

use super::classes::PackedClasses;

/// Chains of at most this many slots are searched in word 0 alone (the
/// kernel's `SMALL_CHAIN`).
pub(super) const SMALL_CHAIN: u32 = 64;

/// The lowest rule slot `>= start` and `< rule_count` whose bit is set in
/// every class of `ids` (one per used field); an unused field counts as all
/// ones, so with no used field every slot below `rule_count` matches.
///
/// Kernel order. [`CLASS_ALL`] (every slot accepts the value) is left out.
/// A search from slot 0 tries word 0 first (each header's `first_word`
/// when `first` is 0); then, in a chain of more than `SMALL_CHAIN` slots,
/// the blocks set in the AND of the headers' `blocks`, in ascending order,
/// each block's words set in the AND of the fields' block summaries, in
/// ascending order, ANDing the packed words `w`; the first non-zero result
/// decides. The words below `start` are masked off, in the
/// candidates and in the word that holds `start`.
pub(super) fn first_match(
    packed: &PackedClasses,
    ids: &[u32],
    rule_count: u32,
    start: u32,
) -> Option<u32> {
    if start >= rule_count {
        return None;
    }
    let header = |id: u32| {
        packed
            .header(id)
            .unwrap_or_else(|| panic!("class {id} does not exist"))
    };
    // A value every slot of the chain accepts is skipped like an unused
    // field.
    let ids: Vec<u32> = ids.iter().copied().filter(|&id| id != CLASS_ALL).collect();
    let ids = &ids[..];
    let found = |w: usize, acc: u64| {
        let slot = (w * 64) as u32 + acc.trailing_zeros();
        // Only reachable with no used field: real vectors have no bits at
        // or past rule_count.
        (slot < rule_count).then_some(slot)
    };
    if start == 0 {
        let mut acc = ids.iter().fold(u64::MAX, |acc, &id| {
            let h = header(id);
            acc & if h.first == 0 { h.first_word } else { 0 }
        });
        if rule_count < 64 {
            acc &= (1u64 << rule_count) - 1;
        }
        if acc != 0 {
            return found(0, acc);
        }
        if rule_count <= SMALL_CHAIN {
            return None;
        }
    }
    let start = start as usize;
    let mut candidates = vec![0usize];
    if rule_count > SMALL_CHAIN {
        let blocks = ids
            .iter()
            .fold(u64::MAX, |acc, &id| acc & header(id).blocks);
        for b in (0..SUMMARY_WORDS).filter(|b| blocks & (1 << b) != 0) {
            let words = ids
                .iter()
                .fold(u64::MAX, |acc, &id| acc & packed.block(id, b));
            candidates.extend(
                (0..64)
                    .filter(|i| words & (1 << i) != 0)
                    .map(|i| b * 64 + i)
                    .filter(|&w| w > 0),
            );
        }
    }
    for w in candidates.into_iter().filter(|&w| w >= start / 64) {
        let mut acc = ids
            .iter()
            .fold(u64::MAX, |acc, &id| acc & packed.word(id, w));
        if w == 0 && rule_count < 64 {
            acc &= (1u64 << rule_count) - 1;
        }
        if w == start / 64 {
            acc &= u64::MAX << (start % 64);
        }
        if acc != 0 {
            return found(w, acc);
        }
    }
    None
}
