//! Conditions on packets as the classifier can hold them: a [`Term`] is a
//! conjunction of per-field *atoms* ("source in 10.0.0.0/8", "protocol is
//! not udp", "destination port in 22..=23"), the shape one rule slot has.
//!
//! Flattening user-defined chains ANDs rules together (a jump rule and the
//! rules of the chain it enters) and ANDs in negations (the rules after a
//! conditional RETURN only see packets that did not match it). A conjunction
//! of terms is a term. A negation of a term is not, but it is a union of
//! disjoint terms: not (a1 and a2 and ... and ak) = (not a1) or (a1 and not
//! a2) or ... — and the negation of every atom is an atom. Disjoint terms
//! matter: a packet then matches at most one of the slots they become, so a
//! rule without a verdict never counts a packet twice.

use netbeast_common::{L4_KEYS, ct_state};

use super::l4::{self, Keys};
use crate::rules::model::{IfaceName, Ipv4Net, Match, Rule};

/// Every key of an L4 field, real ports/types and the special ones.
const ALL_L4_KEYS: (u32, u32) = (0, L4_KEYS as u32 - 1);

/// A conjunction of atoms, one list per field. `(value, negated)` atoms hold
/// when the packet's field equals / lies in `value`, or not when negated.
/// An empty list (or `None` for L4) does not constrain the field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Term<'a> {
    pub src: Vec<(Ipv4Net, bool)>,
    pub dst: Vec<(Ipv4Net, bool)>,
    /// Never protocol 0: `-p all` constrains nothing.
    pub proto: Vec<(u8, bool)>,
    /// L4A and L4B key sets (sets are closed under complement, so no atoms).
    pub l4: [Option<Keys>; 2],
    pub in_iface: Vec<(&'a IfaceName, bool)>,
    pub out_iface: Vec<(&'a IfaceName, bool)>,
    pub mac: Vec<([u8; 6], bool)>,
    /// The connection states (`ct_state::*` keys, one bit each) the packet
    /// may be in; a set, like the L4 keys.
    pub ct: Option<u8>,
    /// Requirement atoms `(guard, held)`: guard number `guard` (a rule's
    /// stateful match, see `netbeast_common::Guard`) was evaluated for this
    /// packet and held, or failed. No class holds them: the kernel checks
    /// them against the outcomes it recorded (`guard_kind::REQUIRE`). They
    /// come from guarded jumps (the callee's slots require the guards
    /// held) and guarded RETURNs/gotos (the later rules get `NOT (static
    /// AND held)`). A requirement only appears in terms that also carry
    /// the static atoms of the guard's rule, so the guard was evaluated
    /// whenever the rest of the term holds, and `NOT (g held)` is `g
    /// failed`.
    pub req: Vec<(u32, bool)>,
}

/// Every connection-state key, as a mask.
const ALL_CT_STATES: u8 = ((1u16 << ct_state::KEYS) - 1) as u8;

/// One atom of a term, for negation.
enum Atom<'a> {
    Src(Ipv4Net, bool),
    Dst(Ipv4Net, bool),
    Proto(u8, bool),
    L4(usize, Keys),
    InIface(&'a IfaceName, bool),
    OutIface(&'a IfaceName, bool),
    Mac([u8; 6], bool),
    Ct(u8),
    Req(u32, bool),
}

impl<'a> Term<'a> {
    /// True when no atom constrains anything: every packet matches.
    pub fn is_true(&self) -> bool {
        self.atom_count() == 0
    }

    fn atom_count(&self) -> usize {
        self.src.len()
            + self.dst.len()
            + self.proto.len()
            + self.l4.iter().flatten().count()
            + self.in_iface.len()
            + self.out_iface.len()
            + self.mac.len()
            + usize::from(self.ct.is_some())
            + self.req.len()
    }

    /// True when the term carries requirement atoms (its slot is checked
    /// against recorded guard outcomes).
    pub fn has_requirements(&self) -> bool {
        !self.req.is_empty()
    }

    fn atoms(&self) -> Vec<Atom<'a>> {
        let mut atoms = Vec::with_capacity(self.atom_count());
        // Cheap, discriminating fields first: the negation's first terms
        // are then the ones most other terms contradict.
        atoms.extend(self.proto.iter().map(|&(p, n)| Atom::Proto(p, n)));
        atoms.extend(self.ct.map(Atom::Ct));
        atoms.extend(
            self.l4
                .iter()
                .enumerate()
                .filter_map(|(i, k)| k.clone().map(|k| Atom::L4(i, k))),
        );
        atoms.extend(self.src.iter().map(|&(p, n)| Atom::Src(p, n)));
        atoms.extend(self.dst.iter().map(|&(p, n)| Atom::Dst(p, n)));
        atoms.extend(self.in_iface.iter().map(|&(p, n)| Atom::InIface(p, n)));
        atoms.extend(self.out_iface.iter().map(|&(p, n)| Atom::OutIface(p, n)));
        atoms.extend(self.mac.iter().map(|&(m, n)| Atom::Mac(m, n)));
        // Requirements last, in guard order: the negation's alternatives
        // `(static atoms hold) AND (g failed)` then carry every static atom
        // of g's rule, so g was evaluated when they hold; and a rule's
        // second guard is required failed only with its first held (the
        // kernel stops at a rule's first failed guard, as iptables does).
        atoms.extend(self.req.iter().map(|&(g, held)| Atom::Req(g, held)));
        atoms
    }

    fn push(&mut self, atom: Atom<'a>) {
        match atom {
            Atom::Src(p, n) => self.src.push((p, n)),
            Atom::Dst(p, n) => self.dst.push((p, n)),
            Atom::Proto(p, n) => self.proto.push((p, n)),
            Atom::L4(i, k) => {
                self.l4[i] = Some(match self.l4[i].take() {
                    Some(have) => l4::intersect(&have, &k),
                    None => k,
                })
            }
            Atom::InIface(p, n) => self.in_iface.push((p, n)),
            Atom::OutIface(p, n) => self.out_iface.push((p, n)),
            Atom::Mac(m, n) => self.mac.push((m, n)),
            Atom::Ct(mask) => self.ct = Some(self.ct.map_or(mask, |have| have & mask)),
            Atom::Req(g, held) => self.req.push((g, held)),
        }
    }

    /// `self AND other`, simplified; `None` when no packet can match it.
    pub fn and(&self, other: &Term<'a>) -> Option<Term<'a>> {
        let mut t = self.clone();
        t.src.extend_from_slice(&other.src);
        t.dst.extend_from_slice(&other.dst);
        t.proto.extend_from_slice(&other.proto);
        for i in 0..2 {
            if let Some(k) = &other.l4[i] {
                t.push(Atom::L4(i, k.clone()));
            }
        }
        t.in_iface.extend_from_slice(&other.in_iface);
        t.out_iface.extend_from_slice(&other.out_iface);
        t.mac.extend_from_slice(&other.mac);
        if let Some(mask) = other.ct {
            t.push(Atom::Ct(mask));
        }
        t.req.extend_from_slice(&other.req);
        t.simplify().then_some(t)
    }

    /// The positive source prefix, if the term has one (at most one once
    /// simplified).
    pub fn positive_source(&self) -> Option<Ipv4Net> {
        self.src
            .iter()
            .find(|(_, negated)| !negated)
            .map(|(p, _)| *p)
    }

    /// True when no packet can match both terms, as far as a quick look at
    /// their positive atoms shows (false: maybe they meet). Both must be
    /// simplified, so each field holds at most one positive address,
    /// protocol or MAC atom.
    pub fn disjoint_from(&self, other: &Term<'_>) -> bool {
        fn positive<T: Copy>(atoms: &[(T, bool)]) -> Option<T> {
            atoms.iter().find(|(_, negated)| !negated).map(|(v, _)| *v)
        }
        let nets_apart =
            |a: &[(Ipv4Net, bool)], b: &[(Ipv4Net, bool)]| match (positive(a), positive(b)) {
                (Some(p), Some(q)) => !p.covers(&q) && !q.covers(&p),
                _ => false,
            };
        let values_apart = |a: &[(u8, bool)], b: &[(u8, bool)]| match (positive(a), positive(b)) {
            (Some(p), Some(q)) => p != q,
            (Some(p), None) => b.iter().any(|&(v, negated)| negated && v == p),
            (None, Some(q)) => a.iter().any(|&(v, negated)| negated && v == q),
            (None, None) => false,
        };
        let keys_apart = |a: &Option<Keys>, b: &Option<Keys>| match (a, b) {
            (Some(a), Some(b)) => !l4::overlap(a, b),
            _ => false,
        };
        nets_apart(&self.src, &other.src)
            || nets_apart(&self.dst, &other.dst)
            || values_apart(&self.proto, &other.proto)
            || keys_apart(&self.l4[0], &other.l4[0])
            || keys_apart(&self.l4[1], &other.l4[1])
            || matches!((self.ct, other.ct), (Some(a), Some(b)) if a & b == 0)
            || self
                .req
                .iter()
                .any(|&(g, held)| other.req.contains(&(g, !held)))
            || matches!(
                (positive(&self.mac), positive(&other.mac)),
                (Some(a), Some(b)) if a != b
            )
    }

    /// `NOT self` as disjoint terms (none when `self` is always true).
    pub fn negate(&self) -> Vec<Term<'a>> {
        let atoms = self.atoms();
        let mut out = Vec::with_capacity(atoms.len());
        let mut prefix = Term::default();
        for atom in atoms {
            let mut t = prefix.clone();
            t.push(negated(&atom));
            if t.simplify() {
                out.push(t);
            }
            prefix.push(atom);
        }
        out
    }

    /// Puts each field's atoms in a canonical, shorter form and tells
    /// whether the term can still match. The satisfiability test is
    /// conservative: a term it keeps may still match nothing (it then only
    /// costs a slot), but a term it drops never matches.
    fn simplify(&mut self) -> bool {
        simplify_prefixes(&mut self.src)
            && simplify_prefixes(&mut self.dst)
            && simplify_values(&mut self.proto)
            && simplify_values(&mut self.mac)
            && self.l4.iter().flatten().all(|k| !k.is_empty())
            && self.ct != Some(0)
            && simplify_ifaces(&mut self.in_iface)
            && simplify_ifaces(&mut self.out_iface)
            && simplify_requirements(&mut self.req)
    }
}

fn negated<'a>(atom: &Atom<'a>) -> Atom<'a> {
    match *atom {
        Atom::Src(p, n) => Atom::Src(p, !n),
        Atom::Dst(p, n) => Atom::Dst(p, !n),
        Atom::Proto(p, n) => Atom::Proto(p, !n),
        Atom::L4(i, ref k) => Atom::L4(i, l4::complement(k, ALL_L4_KEYS)),
        Atom::InIface(p, n) => Atom::InIface(p, !n),
        Atom::OutIface(p, n) => Atom::OutIface(p, !n),
        Atom::Mac(m, n) => Atom::Mac(m, !n),
        Atom::Ct(mask) => Atom::Ct(!mask & ALL_CT_STATES),
        Atom::Req(g, held) => Atom::Req(g, !held),
    }
}

/// Requirement atoms: each guard once, in guard-number order (a rule's
/// guards are numbered in match order, so this keeps them in the order
/// the kernel evaluates them); a guard required both held and failed
/// leaves nothing.
fn simplify_requirements(atoms: &mut Vec<(u32, bool)>) -> bool {
    if atoms.len() < 2 {
        return true;
    }
    atoms.sort_unstable();
    atoms.dedup();
    !atoms.windows(2).any(|w| w[0].0 == w[1].0)
}

/// Address atoms: the positive prefixes must nest (the longest one says
/// it all), a negated prefix that covers it leaves nothing, and negated
/// prefixes outside it, or inside another negated prefix, say nothing.
fn simplify_prefixes(atoms: &mut Vec<(Ipv4Net, bool)>) -> bool {
    if atoms.len() < 2 {
        return true;
    }
    let mut inside: Option<Ipv4Net> = None;
    for &(p, negated) in atoms.iter() {
        if negated {
            continue;
        }
        inside = match inside {
            None => Some(p),
            Some(q) if q.covers(&p) => Some(p),
            Some(q) if p.covers(&q) => Some(q),
            Some(_) => return false,
        };
    }
    let mut outside: Vec<Ipv4Net> = atoms
        .iter()
        .filter(|(_, negated)| *negated)
        .map(|(p, _)| *p)
        .collect();
    if let Some(q) = inside {
        if outside.iter().any(|n| n.covers(&q)) {
            return false;
        }
        outside.retain(|n| q.covers(n));
    }
    // In (address, length) order a prefix comes after every prefix that
    // covers it, and the kept ones are disjoint: only the last kept one can
    // cover the next.
    // Stable sort: adaptive, and the atoms mostly come sorted already.
    outside.sort_by_key(|n| (u32::from(n.addr), n.prefix_len));
    let mut kept: Vec<Ipv4Net> = Vec::with_capacity(outside.len());
    for n in outside {
        if !kept.last().is_some_and(|k| k.covers(&n)) {
            kept.push(n);
        }
    }
    atoms.clear();
    atoms.extend(inside.map(|q| (q, false)));
    atoms.extend(kept.into_iter().map(|n| (n, true)));
    true
}

/// Equality atoms (protocol, MAC): one positive value says it all, and
/// contradicts any other positive value or its own negation.
fn simplify_values<T: Copy + PartialEq + Ord>(atoms: &mut Vec<(T, bool)>) -> bool {
    if atoms.len() < 2 {
        return true;
    }
    let mut is: Option<T> = None;
    for &(v, negated) in atoms.iter() {
        if !negated {
            match is {
                Some(w) if w != v => return false,
                _ => is = Some(v),
            }
        }
    }
    match is {
        Some(v) => {
            if atoms.iter().any(|&(w, negated)| negated && w == v) {
                return false;
            }
            atoms.clear();
            atoms.push((v, false));
        }
        None => {
            atoms.sort_unstable();
            atoms.dedup();
        }
    }
    true
}

/// Interface atoms: a few contradictions are caught (the same pattern
/// given and negated, two exact names, an exact name another pattern
/// rules out); the rest is kept as is.
fn simplify_ifaces(atoms: &mut Vec<(&IfaceName, bool)>) -> bool {
    if atoms.len() < 2 {
        return true;
    }
    atoms.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    for (i, &(a, an)) in atoms.iter().enumerate() {
        for &(b, bn) in &atoms[i + 1..] {
            if a == b && an != bn {
                return false;
            }
        }
    }
    let exact: Vec<&IfaceName> = atoms
        .iter()
        .filter(|(p, negated)| !negated && !p.wildcard)
        .map(|(p, _)| *p)
        .collect();
    if let Some(name) = exact.first() {
        if exact.iter().any(|e| e.name != name.name) {
            return false;
        }
        // Every other atom is decided by the exact name.
        let holds = atoms
            .iter()
            .all(|(p, negated)| p.matches(&name.name) != *negated);
        if !holds {
            return false;
        }
        atoms.retain(|(p, negated)| !*negated && !p.wildcard);
        atoms.truncate(1);
    }
    true
}

/// A rule's condition as disjoint terms: one per L4 alternative of
/// [`l4::expand`] (a `--ports` match or a negated `--icmp-type T/C` is a
/// disjunction), none when the rule can never match.
pub(super) fn rule_terms(rule: &Rule) -> Vec<Term<'_>> {
    let mut base = Term::default();
    if let Some(s) = &rule.source {
        base.src.push((net(s.value), s.negated));
    }
    if let Some(d) = &rule.destination {
        base.dst.push((net(d.value), d.negated));
    }
    // `-p 0` is `-p all`: iptables never tests protocol 0, even with `!`.
    if let Some(p) = &rule.protocol
        && p.value != 0
    {
        base.proto.push((p.value, p.negated));
    }
    if let Some(i) = &rule.in_iface {
        base.in_iface.push((&i.value, i.negated));
    }
    if let Some(o) = &rule.out_iface {
        base.out_iface.push((&o.value, o.negated));
    }
    for m in &rule.matches {
        match m {
            Match::MacSource(mac) => base.mac.push((mac.value, mac.negated)),
            Match::ConnState {
                states, negated, ..
            } => {
                let mask = if *negated { !states.0 } else { states.0 } & ALL_CT_STATES;
                base.ct = Some(base.ct.map_or(mask, |have| have & mask));
            }
            _ => {}
        }
    }
    if !base.simplify() {
        return Vec::new();
    }
    l4::expand(rule)
        .into_iter()
        .map(|l4| Term { l4, ..base.clone() })
        .collect()
}

/// Host bits cleared, as the tries need.
fn net(n: Ipv4Net) -> Ipv4Net {
    Ipv4Net::new(n.addr, n.prefix_len)
}

/// `terms AND other` for disjunctions of disjoint terms (the result is
/// disjoint too), dropping what cannot match.
pub(super) fn and_all<'a>(terms: &[Term<'a>], other: &[Term<'a>]) -> Vec<Term<'a>> {
    let mut out = Vec::with_capacity(terms.len() * other.len());
    for t in terms {
        for u in other {
            if let Some(both) = t.and(u) {
                out.push(both);
            }
        }
    }
    out
}

/// `terms AND NOT (other)`, where `other` is a disjunction of terms: each
/// of `other`'s terms is negated in turn.
pub(super) fn and_not<'a>(terms: Vec<Term<'a>>, other: &[Term<'a>]) -> Vec<Term<'a>> {
    let mut out = terms;
    for g in other {
        // A term that cannot meet `g` is all in `NOT g`: no split. The
        // quick test settles most pairs (an allow list of RETURNs meets
        // every later rule this way) without building anything.
        if out.iter().all(|t| t.disjoint_from(g)) {
            continue;
        }
        let mut not_g: Option<Vec<Term<'a>>> = None;
        let mut next = Vec::with_capacity(out.len());
        for t in out {
            if t.disjoint_from(g) || t.and(g).is_none() {
                next.push(t);
                continue;
            }
            let not_g = not_g.get_or_insert_with(|| g.negate());
            next.extend(not_g.iter().filter_map(|u| t.and(u)));
        }
        out = next;
        if out.is_empty() {
            break;
        }
    }
    out
}

/// Whether `addr` satisfies the address atoms `atoms` (for tests).
#[cfg(test)]
pub(super) fn addr_holds(atoms: &[(Ipv4Net, bool)], addr: std::net::Ipv4Addr) -> bool {
    atoms
        .iter()
        .all(|(p, negated)| p.contains(addr) != *negated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn p(a: [u8; 4], len: u8) -> Ipv4Net {
        Ipv4Net::new(Ipv4Addr::from(a), len)
    }

    #[test]
    fn prefixes_simplify_and_contradict() {
        let mut atoms = vec![(p([10, 0, 0, 0], 8), false), (p([10, 1, 0, 0], 16), false)];
        assert!(simplify_prefixes(&mut atoms));
        assert_eq!(atoms, vec![(p([10, 1, 0, 0], 16), false)]);
        let mut atoms = vec![(p([10, 1, 0, 0], 16), false), (p([10, 0, 0, 0], 8), true)];
        assert!(!simplify_prefixes(&mut atoms));
        let mut atoms = vec![(p([10, 0, 0, 0], 8), false), (p([11, 0, 0, 0], 8), false)];
        assert!(!simplify_prefixes(&mut atoms));
        let mut atoms = vec![
            (p([10, 0, 0, 0], 8), false),
            (p([10, 1, 0, 0], 16), true),
            (p([10, 1, 2, 0], 24), true),
            (p([192, 168, 0, 0], 16), true),
        ];
        assert!(simplify_prefixes(&mut atoms));
        assert_eq!(
            atoms,
            vec![(p([10, 0, 0, 0], 8), false), (p([10, 1, 0, 0], 16), true)]
        );
    }

    #[test]
    fn negation_is_disjoint_and_complete() {
        let mut t = Term::default();
        t.src.push((p([10, 0, 0, 0], 8), false));
        t.dst.push((p([192, 168, 0, 0], 16), true));
        t.proto.push((6, false));
        let not = t.negate();
        assert_eq!(not.len(), 3);
        // Every combination of the three atoms: exactly one of t and its
        // negation's terms holds.
        for bits in 0..8u8 {
            let proto = if bits & 1 != 0 { 6 } else { 17 };
            let src = if bits & 2 != 0 {
                [10, 1, 1, 1]
            } else {
                [11, 1, 1, 1]
            };
            let dst = if bits & 4 != 0 {
                [192, 168, 1, 1]
            } else {
                [1, 1, 1, 1]
            };
            let holds = |t: &Term| {
                t.proto.iter().all(|&(v, n)| (v == proto) != n)
                    && addr_holds(&t.src, Ipv4Addr::from(src))
                    && addr_holds(&t.dst, Ipv4Addr::from(dst))
            };
            let count = not.iter().filter(|u| holds(u)).count() + usize::from(holds(&t));
            assert_eq!(count, 1, "bits {bits:03b}");
        }
        assert!(Term::default().negate().is_empty(), "not true is false");
    }
}
