//! Key sets (sorted, disjoint inclusive ranges) and their algebra, and
//! what the two L4 fields imply of each other.

/// Sorted, disjoint, non-adjacent inclusive ranges of L4 keys.
pub type Keys = Vec<(u32, u32)>;

/// The keys a port or ICMP type/code can take: never `L4_NONE` or
/// `L4_FRAGMENT`, so even a negated port match fails on those packets.
const REAL: (u32, u32) = (0, 65535);

/// A conjunction of conditions on L4A and L4B.
type Term = [Option<Keys>; 2];

/// Sorts and merges ranges into a `Keys`.
pub(crate) fn normalize(mut ranges: Vec<(u32, u32)>) -> Keys {
    ranges.sort_unstable();
    let mut out: Keys = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        if lo > hi {
            continue;
        }
        match out.last_mut() {
            Some(last) if lo <= last.1 + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// The keys of `within` that are not in `keys`.
pub(crate) fn complement(keys: &Keys, within: (u32, u32)) -> Keys {
    let mut out = Vec::new();
    let mut next = within.0;
    for &(lo, hi) in keys {
        let lo = lo.max(within.0);
        let hi = hi.min(within.1);
        if lo > hi {
            continue;
        }
        if lo > next {
            out.push((next, lo - 1));
        }
        next = hi + 1;
    }
    if next <= within.1 {
        out.push((next, within.1));
    }
    out
}

pub(super) fn intersect(a: &Keys, b: &Keys) -> Keys {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let lo = a[i].0.max(b[j].0);
        let hi = a[i].1.min(b[j].1);
        if lo <= hi {
            out.push((lo, hi));
        }
        if a[i].1 < b[j].1 { i += 1 } else { j += 1 }
    }
    out
}

/// Whether two key sets share a key.
pub(super) fn overlap(a: &Keys, b: &Keys) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].0.max(b[j].0) <= a[i].1.min(b[j].1) {
            return true;
        }
        if a[i].1 < b[j].1 { i += 1 } else { j += 1 }
    }
    false
}

/// A packet's two L4 keys are both real (ports, type/code), both
/// `L4_NONE` or both `L4_FRAGMENT`. So a condition that every real key
/// meets (`-m tcp` without ports, `! -f`) is implied by a condition on the
/// other field that only real keys meet, and dropping it spares the kernel
/// a lookup.
pub(super) fn drop_implied(term: &mut Term) {
    let only_real = |keys: &Option<Keys>| {
        keys.as_ref()
            .is_some_and(|k| k.last().is_some_and(|&(_, hi)| hi <= REAL.1))
    };
    let every_real = |keys: &Option<Keys>| {
        keys.as_ref()
            .is_some_and(|k| k.first().is_some_and(|&(lo, hi)| lo == 0 && hi >= REAL.1))
    };
    if every_real(&term[0]) && only_real(&term[1]) {
        term[0] = None;
    } else if every_real(&term[1]) && only_real(&term[0]) {
        term[1] = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complement_and_intersect() {
        let k = normalize(vec![(5, 9), (1, 2), (3, 3), (20, 20), (6, 7)]);
        assert_eq!(k, vec![(1, 3), (5, 9), (20, 20)]);
        assert_eq!(
            complement(&k, REAL),
            vec![(0, 0), (4, 4), (10, 19), (21, 65535)]
        );
        assert_eq!(complement(&vec![REAL], REAL), vec![]);
        assert_eq!(
            intersect(&k, &vec![(0, 1), (8, 25)]),
            vec![(1, 1), (8, 9), (20, 20)]
        );
    }
}
