//! The kernel's first-match search over class vectors, step for step, so
//! that tests of the compiled tables test what the kernel computes.

use netbeast_common::{ClassVector, SUMMARY_WORDS};

/// The lowest rule slot `>= start` and `< rule_count` whose bit is set in
/// every vector. `vectors` holds one class vector per used field; an unused
/// field counts as all ones, so with no used field every slot below
/// `rule_count` matches.
///
/// Kernel order: AND the summaries, visit their set bits `w` in ascending
/// order, AND the rule words `w`, stop at the first non-zero result. The
/// words below `start` are masked off, in the summary and in the word that
/// holds `start`.
pub(super) fn first_match(vectors: &[&ClassVector], rule_count: u32, start: u32) -> Option<u32> {
    if start >= rule_count {
        return None;
    }
    let start = start as usize;
    let first_word = start / 64;
    for sw in first_word / 64..SUMMARY_WORDS {
        let mut summary = vectors.iter().fold(u64::MAX, |acc, v| acc & v.summary[sw]);
        if sw == first_word / 64 {
            summary &= u64::MAX << (first_word % 64);
        }
        while summary != 0 {
            let w = sw * 64 + summary.trailing_zeros() as usize;
            summary &= summary - 1;
            let mut acc = vectors.iter().fold(u64::MAX, |acc, v| acc & v.words[w]);
            if w == first_word {
                acc &= u64::MAX << (start % 64);
            }
            if acc != 0 {
                let slot = (w * 64) as u32 + acc.trailing_zeros();
                // Only reachable with no used field: real vectors have no
                // bits at or past rule_count.
                return (slot < rule_count).then_some(slot);
            }
        }
    }
    None
}
