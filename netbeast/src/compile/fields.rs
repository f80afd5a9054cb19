//! One table per field: every key of the field mapped to the class of the
//! slots it satisfies. Each builder starts from the vector of a key that no
//! rule names and changes only the bits of rules that name the key, so the
//! cost follows the number of rules and distinct values, not the key space.

use std::collections::{BTreeMap, HashMap};

use netbeast_common::field;

use super::classes::{Bits, Interner, Undo};
use super::{AddrPrefix, ChainPlan, CompileError, IfaceClass, Interface, MacClass};
use crate::rules::model::{IfaceName, Ipv4Net};

/// The start vector: every slot set except those in `constrained`, which
/// the caller decides one by one.
fn unconstrained(plan: &ChainPlan<'_>, words: usize) -> Bits {
    Bits::ones(plan.slots.len(), words)
}

/// The slots that constrain each field, in slot order: the builders read
/// only those. One pass over the chain's slots: a pass per field read every
/// slot once for each of the 26 fields (at 100,000 rules, 20 MiB of slots
/// each time), most of the builders' time.
pub(super) fn constrained(plan: &ChainPlan<'_>) -> [Vec<usize>; field::COUNT] {
    let mut by_field: [Vec<usize>; field::COUNT] = Default::default();
    for (slot, s) in plan.slots.iter().enumerate() {
        let t = &s.term;
        for (f, _) in t.keys.iter() {
            by_field[f].push(slot);
        }
        for f in field::ADDR_FIELDS {
            if !t.prefix_atoms(f).is_empty() {
                by_field[f].push(slot);
            }
        }
        for (f, atoms) in [
            (field::IN_IFACE, &t.in_iface),
            (field::OUT_IFACE, &t.out_iface),
        ] {
            if !atoms.is_empty() {
                by_field[f].push(slot);
            }
        }
        if !t.mac.is_empty() {
            by_field[field::MAC_SOURCE].push(slot);
        }
    }
    by_field
}

pub(super) struct AddrTable {
    pub used: bool,
    pub default_class: u32,
    pub prefixes: Vec<AddrPrefix>,
}

/// The LPM entries of `field::SRC` or `field::DST`.
///
/// An address whose longest named prefix is `P` lies in exactly the named
/// prefixes that cover `P` (named prefixes nest or are disjoint). So a
/// slot's atoms (prefix or negated prefix, all of which must hold) have the
/// same truth at `P` as at its parent in the prefix tree, except the atoms
/// that name `P` itself: the vector of `P` is its parent's with the slots
/// that name `P` decided again. Prefixes sorted by (address, length) come
/// in tree pre-order; one vector walks the tree, and a stack holds the
/// current path with where each step's changes start, to take them back
/// when the walk leaves the step's subtree.
pub(super) fn addresses(
    plan: &ChainPlan<'_>,
    f: usize,
    constrained: &[usize],
    interner: &mut Interner,
) -> Result<AddrTable, CompileError> {
    let atoms_of = |slot: usize| plan.slots[slot].term.prefix_atoms(f);
    let mut named: Vec<(Ipv4Net, usize)> = Vec::new();
    // The vector of an address outside every named prefix: the slots whose
    // atoms on this field are all negated.
    let mut outside = unconstrained(plan, interner.words());
    for &slot in constrained {
        let atoms = atoms_of(slot);
        for &(net, _) in atoms {
            named.push((net, slot));
        }
        if atoms.iter().any(|&(_, negated)| !negated) {
            outside.clear(slot);
        }
    }
    named.sort_unstable_by_key(|&(n, slot)| (u32::from(n.addr), n.prefix_len, slot));
    named.dedup();

    let root = Ipv4Net::new(0.into(), 0);
    let mut prefixes = Vec::new();
    let mut v = outside;
    let mut undo = Undo::default();
    let mut stack: Vec<(Ipv4Net, usize)> = Vec::new();
    let mut i = 0;
    // The root comes first whether or not a rule names it.
    let mut next_net = Some(root);
    while let Some(net) = next_net {
        while let Some(&(top, mark)) = stack.last()
            && !top.covers(&net)
        {
            undo.back_to(&mut v, mark);
            stack.pop();
        }
        let mark = undo.mark();
        while i < named.len() && named[i].0 == net {
            let slot = named[i].1;
            let holds = atoms_of(slot)
                .iter()
                .all(|(p, negated)| p.covers(&net) != *negated);
            undo.assign(&mut v, slot, holds);
            i += 1;
        }
        let class = interner.intern(&v, (plan.name, plan.slots.len()), f)?;
        prefixes.push(AddrPrefix {
            field: f,
            net,
            class,
        });
        stack.push((net, mark));
        next_net = named.get(i).map(|n| n.0);
    }
    Ok(AddrTable {
        used: !named.is_empty(),
        default_class: prefixes[0].class,
        prefixes,
    })
}

pub(super) struct ArrayTable {
    pub used: bool,
    /// The class of a key no slot constrains the field for: only read
    /// where a lookup can miss, which an array's never does; kept for
    /// uniformity (see `CompiledChain::config`).
    pub default_class: u32,
    /// The class of every key of the field; empty when no slot constrains
    /// the field (the kernel never looks it up).
    pub table: Vec<u32>,
}

/// The table of key field `f` (`field::Kind::Keys(n)`: protocol, the L4
/// keys, connection state, TCP flags, length, TTL, TOS, packet type,
/// address types): a sweep over the sorted boundaries of every slot's key
/// ranges. Between two boundaries the vector is constant, so each segment
/// is interned once, and the cost follows the rules' ranges, not the keys.
pub(super) fn keys(
    plan: &ChainPlan<'_>,
    f: usize,
    constrained: &[usize],
    interner: &mut Interner,
) -> Result<ArrayTable, CompileError> {
    let (_, last) = super::term::universe(f);
    let n = last as usize + 1;
    let mut v = unconstrained(plan, interner.words());
    let default_class = interner.intern(&v, (plan.name, plan.slots.len()), f)?;
    if constrained.is_empty() {
        return Ok(ArrayTable {
            used: false,
            default_class,
            table: Vec::new(),
        });
    }
    // (key, slot): the slot's membership flips at key. A slot's ranges are
    // disjoint and non-adjacent, so flips never cancel out.
    let mut flips: Vec<(u32, u32)> = Vec::new();
    for &slot in constrained {
        let keys = plan.slots[slot]
            .term
            .keys
            .get(f)
            .expect("a constrained slot has the field's keys");
        v.clear(slot);
        for &(lo, hi) in keys {
            flips.push((lo, slot as u32));
            if (hi as usize) + 1 < n {
                flips.push((hi + 1, slot as u32));
            }
        }
    }
    flips.sort_unstable();
    let mut table = vec![0u32; n];
    let mut i = 0;
    let mut start = 0usize;
    loop {
        while i < flips.len() && flips[i].0 as usize == start {
            v.flip(flips[i].1 as usize);
            i += 1;
        }
        let end = flips.get(i).map_or(n, |&(key, _)| key as usize);
        let class = interner.intern(&v, (plan.name, plan.slots.len()), f)?;
        fill(&mut table[start..end], class);
        if end == n {
            break;
        }
        start = end;
    }
    Ok(ArrayTable {
        used: true,
        default_class,
        table,
    })
}

/// `slice.fill(value)` by doubling memcpys: the same in release builds,
/// and ~10x faster in the debug builds that run the property tests, where
/// the element-wise `fill` loop dominated the compile time.
fn fill(slice: &mut [u32], value: u32) {
    let Some(first) = slice.first_mut() else {
        return;
    };
    *first = value;
    let mut filled = 1;
    while filled < slice.len() {
        let n = filled.min(slice.len() - filled);
        slice.copy_within(0..n, filled);
        filled += n;
    }
}

pub(super) struct EntryTable<T> {
    pub used: bool,
    pub default_class: u32,
    pub entries: Vec<T>,
}

/// Whether `pattern` matches an interface that is not in the compiler's
/// list: only a lone `+` matches every name, known or not.
fn matches_unknown(pattern: &IfaceName) -> bool {
    pattern.wildcard && pattern.name.is_empty()
}

/// The classes of the listed interfaces for `field::IN_IFACE` or
/// `field::OUT_IFACE`. Only interfaces whose class differs from the default
/// (an interface no pattern names) get an entry. A slot's atoms (patterns,
/// maybe negated) must all hold.
pub(super) fn interfaces(
    plan: &ChainPlan<'_>,
    f: usize,
    constrained: &[usize],
    interfaces: &[&Interface],
    interner: &mut Interner,
) -> Result<EntryTable<IfaceClass>, CompileError> {
    let atoms_of = |slot: usize| {
        let t = &plan.slots[slot].term;
        if f == field::IN_IFACE {
            &t.in_iface
        } else {
            &t.out_iface
        }
    };
    // Slots grouped by pattern, so each (interface, pattern) pair is tested once.
    let mut patterns: Vec<(&IfaceName, Vec<usize>)> = Vec::new();
    let mut index: HashMap<(&str, bool), usize> = HashMap::new();
    let mut unknown = unconstrained(plan, interner.words());
    for &slot in constrained {
        let atoms = atoms_of(slot);
        for &(pattern, _) in atoms {
            let at = *index
                .entry((pattern.name.as_str(), pattern.wildcard))
                .or_insert_with(|| {
                    patterns.push((pattern, Vec::new()));
                    patterns.len() - 1
                });
            if patterns[at].1.last() != Some(&slot) {
                patterns[at].1.push(slot);
            }
        }
        let holds = atoms
            .iter()
            .all(|&(p, negated)| matches_unknown(p) != negated);
        unknown.assign(slot, holds);
    }
    let default_class = interner.intern(&unknown, (plan.name, plan.slots.len()), f)?;
    let mut entries = Vec::new();
    let mut touched: Vec<usize> = Vec::new();
    // The name's changes to `unknown`, taken back after its class.
    let mut undo = Undo::default();
    for iface in interfaces {
        // The slots with a pattern that judges this name otherwise than an
        // unknown name: decided again.
        touched.clear();
        for (pattern, slots) in &patterns {
            if pattern.matches(&iface.name) != matches_unknown(pattern) {
                touched.extend(slots);
            }
        }
        if touched.is_empty() {
            continue;
        }
        touched.sort_unstable();
        touched.dedup();
        for &slot in &touched {
            let holds = atoms_of(slot)
                .iter()
                .all(|&(p, negated)| p.matches(&iface.name) != negated);
            undo.assign(&mut unknown, slot, holds);
        }
        let class = interner.intern(&unknown, (plan.name, plan.slots.len()), f);
        undo.back_to(&mut unknown, 0);
        let class = class?;
        if class != default_class {
            entries.push(IfaceClass {
                field: f,
                ifindex: iface.ifindex,
                class,
            });
        }
    }
    Ok(EntryTable {
        used: !patterns.is_empty(),
        default_class,
        entries,
    })
}

/// The classes of the source MACs rules name. A rule may carry several
/// `-m mac` matches, all of which must hold. An unknown MAC equals none of
/// them, so the default vector holds rules whose MAC matches are all
/// negated.
pub(super) fn macs(
    plan: &ChainPlan<'_>,
    slots: &[usize],
    interner: &mut Interner,
) -> Result<EntryTable<MacClass>, CompileError> {
    // (slot, its MAC conditions as (mac, negated)).
    type Conditions = Vec<([u8; 6], bool)>;
    let mut constrained: Vec<(usize, Conditions)> = Vec::new();
    // BTreeMap: entries come out in a stable order.
    let mut by_mac: BTreeMap<[u8; 6], Vec<usize>> = BTreeMap::new();
    let mut unknown = unconstrained(plan, interner.words());
    for &slot in slots {
        let macs: Conditions = plan.slots[slot].term.mac.clone();
        unknown.assign(slot, macs.iter().all(|&(_, negated)| negated));
        for &(mac, _) in &macs {
            let rules = by_mac.entry(mac).or_default();
            if rules.last() != Some(&constrained.len()) {
                rules.push(constrained.len());
            }
        }
        constrained.push((slot, macs));
    }
    let default_class =
        interner.intern(&unknown, (plan.name, plan.slots.len()), field::MAC_SOURCE)?;
    let mut entries = Vec::new();
    let mut undo = Undo::default();
    for (mac, rules) in &by_mac {
        for &at in rules {
            let (slot, conditions) = &constrained[at];
            let holds = conditions
                .iter()
                .all(|(named, negated)| (named == mac) != *negated);
            undo.assign(&mut unknown, *slot, holds);
        }
        let class = interner.intern(&unknown, (plan.name, plan.slots.len()), field::MAC_SOURCE);
        undo.back_to(&mut unknown, 0);
        let class = class?;
        if class != default_class {
            entries.push(MacClass { mac: *mac, class });
        }
    }
    Ok(EntryTable {
        used: !constrained.is_empty(),
        default_class,
        entries,
    })
}
