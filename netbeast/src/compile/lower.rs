//! The vocabulary in which every extension module says what its match is
//! to the classifier (`MatchExt::lower`): conditions on classifier fields
//! (atoms), as disjoint alternatives, or a guard for what no field holds.
//! `term::rule_terms` ANDs a rule's lowered matches into its terms.

use netbeast_common::Guard;

pub use super::l4::Keys;
use super::l4::{complement, normalize};
use super::term::universe;
use crate::rules::model::Ipv4Net;

/// One condition on one classifier field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Atom {
    /// The packet's key of key field `.0` (`field::Kind::Keys`) is in the
    /// set: sorted, disjoint, non-adjacent inclusive ranges.
    Keys(usize, Keys),
    /// Address field `.0` (`field::SRC`/`DST`) is in the prefix (not in
    /// it, when `.2`).
    Prefix(usize, Ipv4Net, bool),
    /// The source MAC is this one (is not, when `.1`).
    Mac([u8; 6], bool),
}

/// What a match is to the classifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lowering {
    /// Alternatives, each a conjunction of atoms, pairwise disjoint (a
    /// packet meets at most one, so a rule without a verdict acts once).
    /// No alternative: the match never holds; one empty one: always.
    Static(Vec<Vec<Atom>>),
    /// A match no field can hold (it keeps state, or draws a random
    /// number): the kernel evaluates it after the rule's static part.
    Guard(Guard),
    /// A static part (as `Static`) and guards evaluated after it, in
    /// order: a match whose options are partly a classifier key and
    /// partly what no field holds (`-m conntrack --ctstate NEW --ctorigdst
    /// A`, `-m tcp --dport 22 --tcp-option 2`).
    Guarded(Vec<Vec<Atom>>, Vec<Guard>),
}

impl Lowering {
    /// One conjunction.
    pub fn all(atoms: Vec<Atom>) -> Self {
        Lowering::Static(vec![atoms])
    }

    /// A match every packet meets (`-m comment`).
    pub fn always() -> Self {
        Lowering::Static(vec![Vec::new()])
    }
}

/// The L4 keys a port or an ICMP type/code can take: never `L4_NONE` or
/// `L4_FRAGMENT`, so even a negated port match fails on those packets.
pub const REAL_L4: (u32, u32) = (0, 65535);

/// One key.
pub fn single(key: u32) -> Keys {
    vec![(key, key)]
}

/// `first..=last` (nothing when `first > last`).
pub fn key_range(first: u32, last: u32) -> Keys {
    normalize(vec![(first, last)])
}

/// The union of inclusive ranges, as a key set.
pub fn key_set(ranges: Vec<(u32, u32)>) -> Keys {
    normalize(ranges)
}

/// The keys of field `f` that satisfy `holds`, as sorted ranges.
pub fn keys_where(f: usize, holds: impl Fn(u32) -> bool) -> Keys {
    let (lo, hi) = universe(f);
    let mut out: Keys = Vec::new();
    for k in lo..=hi {
        if !holds(k) {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.1 + 1 == k => last.1 = k,
            _ => out.push((k, k)),
        }
    }
    out
}

/// `keys`, or the other keys of field `f` when negated.
pub fn negatable(f: usize, keys: Keys, negated: bool) -> Keys {
    if negated {
        complement(&keys, universe(f))
    } else {
        keys
    }
}

/// `keys`, or the other real L4 keys ([`REAL_L4`]) when negated.
pub fn negatable_l4(keys: Keys, negated: bool) -> Keys {
    if negated {
        complement(&keys, REAL_L4)
    } else {
        keys
    }
}
