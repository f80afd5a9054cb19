//! The two L4 fields: key sets of the port, ICMP and fragment matches, and
//! the expansion of rules whose L4 condition is a disjunction into slots.

use crate::rules::model::{Icmp, Multiport, Ports};
use netbeast_common::{L4_FRAGMENT, L4_NONE, MAX_RULES_PER_CHAIN};

use crate::rules::model::{IcmpType, Match, MultiportKind, Negatable, PortRange, Rule};

/// Sorted, disjoint, non-adjacent inclusive ranges of L4 keys.
pub(super) type Keys = Vec<(u32, u32)>;

/// The keys a port or ICMP type/code can take: never `L4_NONE` or
/// `L4_FRAGMENT`, so even a negated port match fails on those packets.
const REAL: (u32, u32) = (0, 65535);

/// A conjunction of conditions on L4A and L4B.
type Term = [Option<Keys>; 2];

fn single(key: u32) -> Keys {
    vec![(key, key)]
}

/// Sorts and merges ranges into a `Keys`.
fn normalize(mut ranges: Vec<(u32, u32)>) -> Keys {
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

fn ports(ranges: &[PortRange]) -> Keys {
    normalize(
        ranges
            .iter()
            .map(|r| (u32::from(r.first), u32::from(r.last)))
            .collect(),
    )
}

/// The keys of `within` that are not in `keys`.
pub(super) fn complement(keys: &Keys, within: (u32, u32)) -> Keys {
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

/// `keys`, or the real keys outside `keys` when negated.
fn negatable(keys: Keys, negated: bool) -> Keys {
    if negated {
        complement(&keys, REAL)
    } else {
        keys
    }
}

/// The L4 condition of one match as a disjunction of disjoint terms; `None`
/// for matches that do not look at L4 keys.
fn condition(m: &Match) -> Option<Vec<Term>> {
    match m {
        // Even without --sport or --dport, `-m tcp`/`-m udp` needs a port
        // header: it never matches fragments or short headers.
        Match::Ports(Ports { sport, dport, .. }) => {
            let keys = |r: &Option<Negatable<PortRange>>| match r {
                Some(r) => negatable(single_range(r.value), r.negated),
                None => vec![REAL],
            };
            Some(vec![[Some(keys(sport)), Some(keys(dport))]])
        }
        Match::Icmp(Icmp(t)) => Some(match (t.value, t.negated) {
            (IcmpType::Any, negated) => vec![[Some(negatable(vec![REAL], negated)), None]],
            (
                IcmpType::Type {
                    icmp_type,
                    code: None,
                },
                negated,
            ) => vec![[Some(negatable(single(u32::from(icmp_type)), negated)), None]],
            (
                IcmpType::Type {
                    icmp_type,
                    code: Some(code),
                },
                false,
            ) => vec![[
                Some(single(u32::from(icmp_type))),
                Some(single(u32::from(code))),
            ]],
            // Not (type T and code C) = type is not T, or type is T and
            // code is not C: two disjoint slots.
            (
                IcmpType::Type {
                    icmp_type,
                    code: Some(code),
                },
                true,
            ) => vec![
                [Some(negatable(single(u32::from(icmp_type)), true)), None],
                [
                    Some(single(u32::from(icmp_type))),
                    Some(negatable(single(u32::from(code)), true)),
                ],
            ],
        }),
        Match::Multiport(Multiport {
            kind,
            negated,
            ports: list,
        }) => {
            let set = ports(list);
            Some(match (kind, negated) {
                (MultiportKind::Source, &n) => vec![[Some(negatable(set, n)), None]],
                (MultiportKind::Destination, &n) => vec![[None, Some(negatable(set, n))]],
                // Source in P, or source not in P and destination in P: the
                // second slot excludes the first so that a non-terminating
                // rule acts once.
                (MultiportKind::Either, false) => vec![
                    [Some(set.clone()), None],
                    [Some(negatable(set.clone(), true)), Some(set)],
                ],
                // Neither source nor destination in P: one conjunction.
                (MultiportKind::Either, true) => {
                    let outside = negatable(set, true);
                    vec![[Some(outside.clone()), Some(outside)]]
                }
            })
        }
        Match::MacSource(_)
        | Match::Comment(_)
        | Match::ConnState(_)
        | Match::Length(_)
        | Match::Ttl(_)
        | Match::IpRange(_)
        | Match::PktType(_)
        | Match::AddrType(_)
        | Match::Tos(_)
        | Match::Dscp(_)
        | Match::Statistic(_) => None,
    }
}

fn single_range(r: PortRange) -> Keys {
    normalize(vec![(u32::from(r.first), u32::from(r.last))])
}

/// AND of two conditions on one field.
fn both(a: &Option<Keys>, b: &Option<Keys>) -> Option<Keys> {
    match (a, b) {
        (None, x) | (x, None) => x.clone(),
        (Some(a), Some(b)) => Some(intersect(a, b)),
    }
}

/// The rule's L4 conditions as disjoint conjunctions, one per slot. Terms
/// that no key satisfies are dropped: a rule that can never match (such as
/// `! --icmp-type any`, or `-f` with a port match) takes no slot at all.
///
/// k `--ports` matches multiply into up to 2^k terms; past
/// `MAX_RULES_PER_CHAIN` the rule cannot fit in any chain, so the expansion
/// stops there (and the caller reports the limit) instead of exhausting
/// memory.
pub(super) fn expand(rule: &Rule) -> Vec<Term> {
    let mut terms: Vec<Term> = vec![[None, None]];
    if let Some(fragment) = rule.fragment {
        // `-f` holds only for non-first fragments, `! -f` for everything else.
        let keys = if fragment {
            single(L4_FRAGMENT)
        } else {
            vec![(0, L4_NONE)]
        };
        terms[0][0] = Some(keys);
    }
    let satisfiable = |t: &Term| {
        t.iter()
            .all(|keys| keys.as_ref().is_none_or(|k| !k.is_empty()))
    };
    for m in &rule.matches {
        let Some(alternatives) = condition(m) else {
            continue;
        };
        let mut next = Vec::with_capacity(terms.len() * alternatives.len());
        for t in &terms {
            for alt in &alternatives {
                let term = [both(&t[0], &alt[0]), both(&t[1], &alt[1])];
                if satisfiable(&term) {
                    next.push(term);
                }
            }
        }
        terms = next;
        if terms.len() > MAX_RULES_PER_CHAIN {
            terms.truncate(MAX_RULES_PER_CHAIN + 1);
            break;
        }
    }
    terms.retain(satisfiable);
    for t in &mut terms {
        drop_implied(t);
    }
    terms
}

/// A packet's two L4 keys are both real (ports, type/code), both
/// `L4_NONE` or both `L4_FRAGMENT`. So a condition that every real key
/// meets (`-m tcp` without ports, `! -f`) is implied by a condition on the
/// other field that only real keys meet, and dropping it spares the kernel
/// a lookup.
fn drop_implied(term: &mut Term) {
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
