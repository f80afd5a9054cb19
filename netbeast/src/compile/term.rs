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

use netbeast_common::{L4_FRAGMENT, L4_NONE, TCP_FLAGS_NONE, field, field::Kind};

use super::flatten::MAX_TERMS_PER_RULE;

use super::l4::{self, Keys};
use super::lower::{self, Lowering, negatable, single};
use crate::rules::model::{IfaceName, Ipv4Net, Rule};

/// The keys `0..n` of key field `f` (`field::Kind::Keys(n)`), as one range.
pub(super) fn universe(f: usize) -> (u32, u32) {
    match field::KINDS[f] {
        Kind::Keys(n) => (0, n - 1),
        kind => unreachable!("field {f} is a {kind:?} field, not a key field"),
    }
}

/// Whether field `f` is looked up by key (`field::Kind::Keys`).
pub(super) fn is_key_field(f: usize) -> bool {
    matches!(field::KINDS[f], Kind::Keys(_))
}

/// A conjunction of atoms, one list per field. `(value, negated)` atoms hold
/// when the packet's field equals / lies in `value`, or not when negated.
/// An empty list (or `None` for a key field) does not constrain the field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Term<'a> {
    pub src: Vec<(Ipv4Net, bool)>,
    pub dst: Vec<(Ipv4Net, bool)>,
    /// Atoms on the IPv6 address words past the first (`field::SRC6_1` ..
    /// `DST6_3`, indexed by `field::addr_slot(f) - 2`); an IPv6 rule's
    /// word 0 atoms are in `src`/`dst`. `None` (in IPv4 chains, and IPv6
    /// terms with no such atom) is six empty lists: a term is a slot's
    /// condition, and a chain of kube-proxy's has 110,000 slots.
    pub words: Option<Box<WordAtoms>>,
    /// The key set of every key field (`field::Kind::Keys`: protocol, L4
    /// keys, connection state, TCP flags, length, TTL, TOS, packet type,
    /// address types): the keys the packet's value may take. Sets are
    /// closed under complement and intersection, so a field needs no list
    /// of atoms. `None` for the fields of other kinds, and for a key field
    /// no atom constrains (a set of every key becomes `None`).
    pub keys: KeySets,
    pub in_iface: Vec<(&'a IfaceName, bool)>,
    pub out_iface: Vec<(&'a IfaceName, bool)>,
    pub mac: Vec<([u8; 6], bool)>,
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

/// The atoms of each IPv6 address word past the first (`Term::words`).
type WordAtoms = [Vec<(Ipv4Net, bool)>; 6];

/// An empty atom list, for a term without IPv6 word atoms.
static NO_ATOMS: Vec<(Ipv4Net, bool)> = Vec::new();

/// The key sets of a term's key fields (`Term::keys`), sparse: only the
/// fields some atom constrains, ascending by field. Most slots constrain
/// two or three of the 22 fields; a dense array of them took two thirds
/// of a slot's 830 bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct KeySets(Vec<(u8, Keys)>);

impl KeySets {
    /// The key set of field `f`; `None` when nothing constrains it.
    pub fn get(&self, f: usize) -> Option<&Keys> {
        self.0
            .binary_search_by_key(&(f as u8), |&(g, _)| g)
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// Sets (or with `None` clears) field `f`'s key set.
    pub fn set(&mut self, f: usize, keys: Option<Keys>) {
        match (self.0.binary_search_by_key(&(f as u8), |&(g, _)| g), keys) {
            (Ok(i), Some(keys)) => self.0[i].1 = keys,
            (Ok(i), None) => {
                self.0.remove(i);
            }
            (Err(i), Some(keys)) => self.0.insert(i, (f as u8, keys)),
            (Err(_), None) => {}
        }
    }

    /// Field `f`'s key set, cleared.
    pub fn take(&mut self, f: usize) -> Option<Keys> {
        let i = self.0.binary_search_by_key(&(f as u8), |&(g, _)| g).ok()?;
        Some(self.0.remove(i).1)
    }

    /// The constrained fields and their key sets, ascending by field.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Keys)> {
        self.0.iter().map(|(f, k)| (usize::from(*f), k))
    }

    /// How many fields are constrained.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    fn retain(&mut self, mut keep: impl FnMut(usize, &Keys) -> bool) {
        self.0.retain(|(f, k)| keep(usize::from(*f), k));
    }
}

/// One atom of a term, for negation.
enum Atom<'a> {
    Src(Ipv4Net, bool),
    Dst(Ipv4Net, bool),
    /// A prefix atom on an IPv6 address word past the first: its index in
    /// `Term::words`.
    Word(usize, Ipv4Net, bool),
    /// The packet's key of field `.0` is in the set.
    Key(usize, Keys),
    InIface(&'a IfaceName, bool),
    OutIface(&'a IfaceName, bool),
    Mac([u8; 6], bool),
    Req(u32, bool),
}

/// The key fields in the order negation splits on them: cheap,
/// discriminating fields first (protocol, connection state), so the
/// negation's first terms are the ones most other terms contradict.
fn key_order() -> impl Iterator<Item = usize> {
    [field::PROTO, field::CT_STATE]
        .into_iter()
        .chain((0..field::COUNT).filter(|&f| f != field::PROTO && f != field::CT_STATE))
        .filter(|&f| is_key_field(f))
}

impl<'a> Term<'a> {
    /// True when no atom constrains anything: every packet matches.
    pub fn is_true(&self) -> bool {
        self.atom_count() == 0
    }

    fn atom_count(&self) -> usize {
        self.src.len()
            + self.dst.len()
            + self.words().map(Vec::len).sum::<usize>()
            + self.keys.len()
            + self.in_iface.len()
            + self.out_iface.len()
            + self.mac.len()
            + self.req.len()
    }

    /// The atoms on address field `f` (`field::ADDR_FIELDS`).
    pub fn prefix_atoms(&self, f: usize) -> &Vec<(Ipv4Net, bool)> {
        match f {
            field::SRC => &self.src,
            field::DST => &self.dst,
            _ => match &self.words {
                Some(words) => &words[field::addr_slot(f) - 2],
                None => &NO_ATOMS,
            },
        }
    }

    /// The atoms of each IPv6 word past the first, in `words` order.
    fn words(&self) -> impl Iterator<Item = &Vec<(Ipv4Net, bool)>> {
        self.words.iter().flat_map(|w| w.iter())
    }

    fn words_mut(&mut self) -> &mut WordAtoms {
        self.words.get_or_insert_with(Box::default)
    }

    pub fn prefix_atoms_mut(&mut self, f: usize) -> &mut Vec<(Ipv4Net, bool)> {
        match f {
            field::SRC => &mut self.src,
            field::DST => &mut self.dst,
            _ => &mut self.words_mut()[field::addr_slot(f) - 2],
        }
    }

    /// True when the term carries requirement atoms (its slot is checked
    /// against recorded guard outcomes).
    pub fn has_requirements(&self) -> bool {
        !self.req.is_empty()
    }

    fn atoms(&self) -> Vec<Atom<'a>> {
        let mut atoms = Vec::with_capacity(self.atom_count());
        atoms.extend(key_order().filter_map(|f| self.keys.get(f).map(|k| Atom::Key(f, k.clone()))));
        atoms.extend(self.src.iter().map(|&(p, n)| Atom::Src(p, n)));
        atoms.extend(self.dst.iter().map(|&(p, n)| Atom::Dst(p, n)));
        for (i, w) in self.words().enumerate() {
            atoms.extend(w.iter().map(|&(p, n)| Atom::Word(i, p, n)));
        }
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

    /// ANDs key set `k` into field `f`.
    fn and_keys(&mut self, f: usize, k: &Keys) {
        let keys = match self.keys.take(f) {
            Some(have) => l4::intersect(&have, k),
            None => k.clone(),
        };
        self.keys.set(f, Some(keys));
    }

    /// ANDs in an atom a match lowered to.
    fn push_lowered(&mut self, atom: &lower::Atom) {
        match atom {
            lower::Atom::Keys(f, k) => self.and_keys(*f, k),
            lower::Atom::Prefix(f, p, negated) => {
                self.prefix_atoms_mut(*f).push((net(*p), *negated))
            }
            lower::Atom::Mac(m, negated) => self.mac.push((*m, *negated)),
        }
    }

    fn push(&mut self, atom: Atom<'a>) {
        match atom {
            Atom::Src(p, n) => self.src.push((p, n)),
            Atom::Dst(p, n) => self.dst.push((p, n)),
            Atom::Word(i, p, n) => self.words_mut()[i].push((p, n)),
            Atom::Key(f, k) => self.and_keys(f, &k),
            Atom::InIface(p, n) => self.in_iface.push((p, n)),
            Atom::OutIface(p, n) => self.out_iface.push((p, n)),
            Atom::Mac(m, n) => self.mac.push((m, n)),
            Atom::Req(g, held) => self.req.push((g, held)),
        }
    }

    /// `self AND other`, simplified; `None` when no packet can match it.
    pub fn and(&self, other: &Term<'a>) -> Option<Term<'a>> {
        let mut t = self.clone();
        t.src.extend_from_slice(&other.src);
        t.dst.extend_from_slice(&other.dst);
        if let Some(other) = &other.words {
            for (w, o) in t.words_mut().iter_mut().zip(other.iter()) {
                w.extend_from_slice(o);
            }
        }
        for (f, k) in other.keys.iter() {
            t.and_keys(f, k);
        }
        t.in_iface.extend_from_slice(&other.in_iface);
        t.out_iface.extend_from_slice(&other.out_iface);
        t.mac.extend_from_slice(&other.mac);
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
    /// their positive atoms and key sets shows (false: maybe they meet).
    /// Both must be simplified, so each field holds at most one positive
    /// address or MAC atom.
    pub fn disjoint_from(&self, other: &Term<'_>) -> bool {
        fn positive<T: Copy>(atoms: &[(T, bool)]) -> Option<T> {
            atoms.iter().find(|(_, negated)| !negated).map(|(v, _)| *v)
        }
        let nets_apart =
            |a: &[(Ipv4Net, bool)], b: &[(Ipv4Net, bool)]| match (positive(a), positive(b)) {
                (Some(p), Some(q)) => !p.covers(&q) && !q.covers(&p),
                _ => false,
            };
        let keys_apart = self
            .keys
            .iter()
            .any(|(f, a)| other.keys.get(f).is_some_and(|b| !l4::overlap(a, b)));
        keys_apart
            || nets_apart(&self.src, &other.src)
            || nets_apart(&self.dst, &other.dst)
            || match (&self.words, &other.words) {
                (Some(a), Some(b)) => a.iter().zip(b.iter()).any(|(a, b)| nets_apart(a, b)),
                _ => false,
            }
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
        if self.keys.iter().any(|(_, k)| k.is_empty()) {
            return false;
        }
        // Every key: no constraint, and no lookup.
        self.keys.retain(|f, k| k[..] != [universe(f)]);
        simplify_prefixes(&mut self.src)
            && simplify_prefixes(&mut self.dst)
            && self.simplify_words()
            && simplify_values(&mut self.mac)
            && simplify_ifaces(&mut self.in_iface)
            && simplify_ifaces(&mut self.out_iface)
            && simplify_requirements(&mut self.req)
    }
}

impl Term<'_> {
    /// Simplifies the IPv6 word atoms; none left is `None`, so that equal
    /// terms compare equal.
    fn simplify_words(&mut self) -> bool {
        let Some(words) = self.words.as_deref_mut() else {
            return true;
        };
        if !words.iter_mut().all(simplify_prefixes) {
            return false;
        }
        if words.iter().all(Vec::is_empty) {
            self.words = None;
        }
        true
    }
}

/// The negation of an atom: the other truth of an address, interface or
/// MAC atom; the complement of a key set within its field's keys.
fn negated<'a>(atom: &Atom<'a>) -> Atom<'a> {
    match *atom {
        Atom::Src(p, n) => Atom::Src(p, !n),
        Atom::Dst(p, n) => Atom::Dst(p, !n),
        Atom::Word(i, p, n) => Atom::Word(i, p, !n),
        Atom::Key(f, ref k) => Atom::Key(f, l4::complement(k, universe(f))),
        Atom::InIface(p, n) => Atom::InIface(p, !n),
        Atom::OutIface(p, n) => Atom::OutIface(p, !n),
        Atom::Mac(m, n) => Atom::Mac(m, !n),
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
    // `0.0.0.0/0` holds for every address: no constraint, and no lookup.
    atoms.retain(|(p, negated)| *negated || p.prefix_len != 0);
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

/// A rule's condition as disjoint terms: its address, interface, protocol
/// and fragment options ANDed with what each match lowers to
/// (`MatchExt::lower`): one term per combination of the matches'
/// alternatives (a `--ports` match or a negated `--icmp-type T/C` has two;
/// a positive `-m iprange` range one per prefix), none when the rule can
/// never match. A match that lowers to a guard adds no atom. Past
/// `MAX_TERMS_PER_RULE` terms the compiler refuses the rule
/// (`CompileError::TooManyTerms`): the expansion stops one past it,
/// bounding memory (two wide ranges are 62 × 62 prefixes, times the L4
/// alternatives), and the caller reports the limit.
pub(super) fn rule_terms(rule: &Rule) -> Vec<Term<'_>> {
    rule_terms_through(rule, rule.matches.len())
}

/// [`rule_terms`] of the rule's address part and its first `matches`
/// matches (a hotdrop prefix, `guards::hotdrop_prefix`).
pub(super) fn rule_terms_through(rule: &Rule, matches: usize) -> Vec<Term<'_>> {
    let mut base = Term::default();
    // A non-contiguous netmask is a guard (`guards::address_guards`); the
    // prefix of its leading ones, which holds every address it takes,
    // narrows the search when it is not negated (a negated one is the
    // guard alone: outside the prefix is not all of its complement).
    for (atoms, addr) in [
        (&mut base.src, &rule.source),
        (&mut base.dst, &rule.destination),
    ] {
        match addr {
            Some(a) if a.value.mask.is_none() => atoms.push((net(a.value), a.negated)),
            Some(a) if !a.negated && a.value.prefix_len > 0 => atoms.push((net(a.value), false)),
            _ => {}
        }
    }
    // An IPv6 prefix is the conjunction of its words' 32-bit prefixes; `!`
    // negates the whole conjunction, which is not one term: the rule
    // becomes the disjoint terms of its negation (see `negate`), each
    // ANDed with the rest of the rule below.
    // `None`: no IPv6 address option, nothing to AND in (the terms are
    // built without a copy of `base`; the flatten takes this per rule).
    let mut alternatives: Option<Vec<Term<'_>>> = None;
    for (source, addr) in [(true, &rule.source6), (false, &rule.destination6)] {
        let Some(a) = addr else { continue };
        let mut conj = Term::default();
        for (word, p) in a.value.words().into_iter().enumerate() {
            if let Some(p) = p {
                conj.prefix_atoms_mut(field::addr_field(source, word))
                    .push((p, false));
            }
        }
        let parts = if a.negated { conj.negate() } else { vec![conj] };
        alternatives = Some(match alternatives {
            None => parts.into_iter().filter_map(simplified).collect(),
            Some(alternatives) => alternatives
                .iter()
                .flat_map(|t| parts.iter().filter_map(move |p| t.and(p)))
                .collect(),
        });
    }
    // `-p 0` is `-p all`: iptables never tests protocol 0, even with `!`.
    if let Some(p) = &rule.protocol
        && p.value != 0
    {
        base.and_keys(
            field::PROTO,
            &negatable(field::PROTO, single(p.value.into()), p.negated),
        );
    }
    if let Some(i) = &rule.in_iface {
        base.in_iface.push((&i.value, i.negated));
    }
    if let Some(o) = &rule.out_iface {
        base.out_iface.push((&o.value, o.negated));
    }
    if let Some(fragment) = rule.fragment {
        // `-f` holds only for non-first fragments, `! -f` for everything else.
        let keys = if fragment {
            single(L4_FRAGMENT)
        } else {
            vec![(0, L4_NONE)]
        };
        base.and_keys(field::L4A, &keys);
    }
    if !base.simplify() {
        return Vec::new();
    }
    let mut terms: Vec<Term<'_>> = match alternatives {
        None => simplified(base).into_iter().collect(),
        Some(alternatives) => alternatives.iter().filter_map(|a| base.and(a)).collect(),
    };
    for m in &rule.matches[..matches] {
        let (Lowering::Static(alternatives) | Lowering::Guarded(alternatives, _)) = m.ext().lower()
        else {
            continue;
        };
        let mut next = Vec::with_capacity(terms.len() * alternatives.len());
        for t in terms {
            // Each alternative gets a copy of `t`, the last one `t` itself.
            let mut t = Some(t);
            for (i, alternative) in alternatives.iter().enumerate() {
                let mut u = if i + 1 < alternatives.len() {
                    t.clone()
                } else {
                    t.take()
                }
                .expect("taken by the last alternative only");
                for atom in alternative {
                    u.push_lowered(atom);
                }
                if u.simplify() {
                    next.push(u);
                }
            }
            if next.len() > MAX_TERMS_PER_RULE {
                next.truncate(MAX_TERMS_PER_RULE + 1);
                break;
            }
        }
        terms = next;
    }
    for t in &mut terms {
        drop_implied(t);
    }
    terms
}

/// `t AND true`: `t` simplified, `None` when it can match nothing.
pub(super) fn simplified(mut t: Term<'_>) -> Option<Term<'_>> {
    t.simplify().then_some(t)
}

/// A packet has a TCP flags key other than `TCP_FLAGS_NONE` only when it
/// is TCP with a whole header, and then its L4 keys are its ports. So a
/// term whose flags set leaves `TCP_FLAGS_NONE` out implies `-p tcp` and
/// any L4 condition every port meets (`-p tcp --syn` is one lookup, of the
/// flags): dropping them spares the kernel lookups.
fn drop_implied(t: &mut Term<'_>) {
    let mut l4 = [t.keys.take(field::L4A), t.keys.take(field::L4B)];
    l4::drop_implied(&mut l4);
    let [a, b] = l4;
    t.keys.set(field::L4A, a);
    t.keys.set(field::L4B, b);
    let flags_only_tcp = t
        .keys
        .get(field::TCP_FLAGS)
        .is_some_and(|k| k.last().is_some_and(|&(_, hi)| hi < TCP_FLAGS_NONE));
    if !flags_only_tcp {
        return;
    }
    if t.keys.get(field::PROTO).map(|k| &k[..]) == Some(&[(6, 6)]) {
        t.keys.set(field::PROTO, None);
    }
    for f in [field::L4A, field::L4B] {
        if t.keys
            .get(f)
            .is_some_and(|k| k.first().is_some_and(|&(lo, hi)| lo == 0 && hi >= 65535))
        {
            t.keys.set(f, None);
        }
    }
}

/// Host bits cleared, as the tries need.
fn net(n: Ipv4Net) -> Ipv4Net {
    Ipv4Net::new(n.addr, n.prefix_len)
}

/// `terms AND other` for disjunctions of disjoint terms (the result is
/// disjoint too), dropping what cannot match.
///
/// Stops one term past `limit`: the caller refuses a rule with more terms
/// than that (`CompileError::TooManyTerms`), and the product of two large
/// disjunctions would otherwise be built whole first (a random ruleset of
/// nested jumps took gigabytes).
pub(super) fn and_all<'a>(terms: &[Term<'a>], other: &[Term<'a>], limit: usize) -> Vec<Term<'a>> {
    let mut out = Vec::with_capacity((terms.len() * other.len()).min(limit + 1));
    for t in terms {
        for u in other {
            if let Some(both) = t.and(u) {
                out.push(both);
                if out.len() > limit {
                    return out;
                }
            }
        }
    }
    out
}

/// `terms AND NOT (other)`, where `other` is a disjunction of terms: each
/// of `other`'s terms is negated in turn. Stops one term past `limit`, as
/// [`and_all`] does.
pub(super) fn and_not<'a>(terms: Vec<Term<'a>>, other: &[Term<'a>], limit: usize) -> Vec<Term<'a>> {
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
            if next.len() > limit {
                return next;
            }
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
        t.keys.set(field::PROTO, Some(vec![(6, 6)]));
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
                t.keys
                    .get(field::PROTO)
                    .is_none_or(|k| k.iter().any(|&(lo, hi)| (lo..=hi).contains(&proto)))
                    && addr_holds(&t.src, Ipv4Addr::from(src))
                    && addr_holds(&t.dst, Ipv4Addr::from(dst))
            };
            let count = not.iter().filter(|u| holds(u)).count() + usize::from(holds(&t));
            assert_eq!(count, 1, "bits {bits:03b}");
        }
        assert!(Term::default().negate().is_empty(), "not true is false");
    }
}
