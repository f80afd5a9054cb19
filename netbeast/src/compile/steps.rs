//! The kernel search's budget: how many steps one packet may take in a
//! chain beyond its verdict, and the two ways the compiler bounds them.
//!
//! The search goes from candidate slot to candidate slot (the AND of the
//! packet's field classes) until a slot with a verdict acts. Two kinds of
//! candidates cost a step without ending it: a slot without a verdict the
//! packet acts on (a count-only rule, LOG, MARK, a jump, goto or RETURN:
//! at most `MAX_NONTERMINATING_RULES`), and a slot with a guard chain it
//! reaches, which it may go past when a guard fails (at most
//! `MAX_GUARDED_SLOTS`). The kernel's loops stop there, so the compiler
//! refuses a chain unless it can show no packet takes more:
//!
//! - the *walk's* bound (`flatten.rs`) adds the steps of a chain's rules,
//!   jumps included, in order: exact for a chain whose rules can all meet
//!   one packet, and cheap, but blind to rules no one packet can meet
//!   together. kube-proxy's services chain has a jump per service
//!   (`-d VIP -p tcp --dport P`), each to a cascade of guarded jumps and
//!   MARKs: 1,000 services add up to thousands of steps, while a packet
//!   meets one service's.
//! - the *classes'* bound ([`class_steps`]), taken when the walk's passes a
//!   limit: a packet's candidates are a subset of the class of each field
//!   the search always looks up, so no packet takes more steps than the
//!   class with the most step slots of any one such field holds. The
//!   destination's classes give the services chain its one service's
//!   worth.

use netbeast_common::{CLASS_ALL, field, field::Kind, target};

use super::{Class, CompiledChain};

/// How many steps of the kernel's search one packet may take in a chain
/// beyond its verdict: slots without a verdict it acts on, and slots with
/// a guard chain it reaches (which it may go past when a guard fails).
/// The two are bounded separately (each maximum over the packets on its
/// own: a bound on their sum).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Steps {
    pub passes: usize,
    pub guarded: usize,
}

impl Steps {
    pub(super) fn max(self, other: Steps) -> Steps {
        Steps {
            passes: self.passes.max(other.passes),
            guarded: self.guarded.max(other.guarded),
        }
    }

    pub(super) fn min(self, other: Steps) -> Steps {
        Steps {
            passes: self.passes.min(other.passes),
            guarded: self.guarded.min(other.guarded),
        }
    }

    pub(super) fn plus(self, other: Steps) -> Steps {
        Steps {
            passes: self.passes + other.passes,
            guarded: self.guarded + other.guarded,
        }
    }
}

/// The classes' bound on `chain`'s steps (see the module's comment):
/// for each field the kernel's search looks up for every packet, the most
/// step slots one of the field's classes holds; the least of those.
/// `classes` are the ruleset's, in id order. A chain with no such field gets its step
/// slots' count, which no packet can pass either.
pub(super) fn class_steps(chain: &CompiledChain, classes: &[Class]) -> Steps {
    let words = chain.rules.len().div_ceil(64);
    let (mut passes, mut guarded) = (vec![0u64; words], vec![0u64; words]);
    for (slot, rule) in chain.rules.iter().enumerate() {
        let (word, bit) = (slot / 64, 1u64 << (slot % 64));
        if rule.guard != 0 {
            guarded[word] |= bit;
        } else if target::flags(rule.target) & target::flag::TERMINATING == 0 {
            passes[word] |= bit;
        }
    }
    let count = |mask: &[u64]| mask.iter().map(|w| w.count_ones() as usize).sum();
    let all = Steps {
        passes: count(&passes),
        guarded: count(&guarded),
    };
    // Class ids follow one another from the first one's (the generation's
    // base).
    let base = classes.first().map_or(0, |c| c.id);
    let of_class = |id: u32| -> Steps {
        if id == CLASS_ALL {
            return all;
        }
        let class = &classes[(id - base) as usize];
        debug_assert_eq!(class.id, id);
        let mut steps = Steps::default();
        for (w, word) in class.nonzero() {
            steps.passes += (word & passes.get(w).copied().unwrap_or(0)).count_ones() as usize;
            steps.guarded += (word & guarded.get(w).copied().unwrap_or(0)).count_ones() as usize;
        }
        steps
    };
    let mut bound = all;
    for f in (0..field::COUNT).filter(|&f| always_looked_up(chain, f)) {
        let mut ids = field_classes(chain, f);
        ids.sort_unstable();
        ids.dedup();
        let most = ids
            .into_iter()
            .map(of_class)
            .fold(Steps::default(), Steps::max);
        bound = bound.min(most);
    }
    bound
}

/// Whether the search looks field `f` up for every packet of `chain`
/// (`CompiledRuleset::looked_up`): a field the chain uses, unless it is an
/// IPv6 address word behind its direction's lead word (looked up only when
/// the lead word's class is not the default).
fn always_looked_up(chain: &CompiledChain, f: usize) -> bool {
    let config = &chain.config;
    if config.fields_used & (1 << f) == 0 {
        return false;
    }
    if !matches!(field::KINDS[f], Kind::Prefix) {
        return true;
    }
    match netbeast_common::addr6_lead(config.addr6_lead, field::is_source(f)) {
        Some(w) => w == field::addr_word(f),
        None => true,
    }
}

/// Every class a packet can get for field `f` of `chain` (with repeats).
fn field_classes(chain: &CompiledChain, f: usize) -> Vec<u32> {
    let mut ids = vec![chain.config.default_class[f]];
    match field::KINDS[f] {
        Kind::Prefix => ids.extend(
            chain
                .addr_prefixes
                .iter()
                .filter(|p| p.field == f)
                .map(|p| p.class),
        ),
        Kind::Keys(_) => ids.extend_from_slice(&chain.key_classes[f]),
        Kind::Iface => ids.extend(
            chain
                .ifaces
                .iter()
                .filter(|e| e.field == f)
                .map(|e| e.class),
        ),
        Kind::Mac => ids.extend(chain.macs.iter().map(|e| e.class)),
    }
    ids
}
