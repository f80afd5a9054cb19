//! Compiles a ruleset into the classifier tables of DESIGN §4.
//!
//! The kernel finds the first matching rule of a chain without walking the
//! rules: every field of the packet (source, destination, protocol, the two
//! L4 keys, interfaces, source MAC) is looked up in a table that gives a
//! *class*, and the class's bit vector has bit `r` set when rule slot `r`
//! accepts that key. ANDing the vectors of the used fields and taking the
//! lowest set bit gives the first match. This module builds those tables and
//! also emulates the kernel's search ([`CompiledRuleset::classify`]) so that
//! property tests can compare it with iptables' linear semantics
//! ([`reference::classify`]).
//!
//! # Rule slots
//!
//! A class vector can only express a conjunction of per-field conditions.
//! Two iptables matches are disjunctions across the two L4 fields:
//!
//! - `-m multiport --ports P` (source *or* destination port in `P`), and
//! - `! --icmp-type T/C` (type is not `T` *or* code is not `C`).
//!
//! Such a rule is expanded into several consecutive *slots* that share the
//! rule's target and counter (`--ports P` becomes "sport in P" and "sport not
//! in P, dport in P"). The slots of one rule are made disjoint, so a
//! non-terminating rule never acts twice on one packet. The per-chain limit
//! [`MAX_RULES_PER_CHAIN`] counts slots: a `--ports` rule or a negated
//! `--icmp-type T/C` rule takes two (a rule with k of them at most 2^k), a
//! rule that can never match (`! --icmp-type any`, `-f` with a port match)
//! none, every other rule one. Negated `--ports` is a plain conjunction
//! ("sport not in P and dport not in P") and takes one slot.
//!
//! # Semantics worth knowing
//!
//! - `-p 0` is `-p all`: iptables never tests protocol 0, even with `!`.
//! - Port, multiport and ICMP matches (also a bare `-m tcp`) never match a
//!   non-first fragment or a first fragment whose L4 header is cut short,
//!   even when negated. iptables drops the latter packet outright
//!   ("hotdrop") when it reaches such a rule; here the match is just false.
//! - An ifindex missing from the interface list given to [`compile`] takes
//!   the default class: only `-i +` (and negations of other patterns)
//!   match it. Recompile when interfaces come and go.
//! - The filter table's INPUT, FORWARD and OUTPUT and the nat table's
//!   PREROUTING, POSTROUTING and OUTPUT are compiled (`chain::*` order); a
//!   chain missing from the model is empty with an ACCEPT policy. The nat
//!   table's INPUT is not implemented: a ruleset with rules there is
//!   refused. User-defined chains are inlined into the built-in chains that
//!   reach them (`flatten.rs`): slots are then conjunctions of several
//!   rules' conditions and negations of RETURN/goto conditions (`term.rs`),
//!   and every field builder takes a slot's atoms on its field as a
//!   conjunction.
//! - In a nat chain, the first matching slot with a verdict decides a new
//!   connection's translation: DNAT, SNAT, MASQUERADE or REDIRECT (its
//!   `RuleAction::arg` numbers the translation in
//!   [`CompiledRuleset::nat_targets`]), or ACCEPT (and a chain's end or
//!   RETURN, the ACCEPT policy): no translation.

mod addr_hash;
mod classes;
mod fields;
mod flatten;
pub mod guards;
mod l4;
pub mod lower;
pub mod reference;
mod search;
mod steps;
mod term;
#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;

pub use netbeast_common::Guard;
use netbeast_common::{
    ACTIVE_NAT, ACTIVE_TCP_FLAGS, ACTIVE_TRACKING, ADDR_KEY_HEADER_BITS, ADDR_TRIE, AddrKey,
    Capacity, ChainConfig, ClassVector, GENERATIONS, Held, KEY_CHUNK, LogTarget,
    MAX_ADDR_HASH_LENGTHS, MAX_CLASS_WORDS, MAX_CLASSES, MAX_GUARDED_SLOTS, MAX_GUARDS,
    MAX_GUARDS_PER_RULE, MAX_LOG_TARGETS, MAX_NAT_TARGETS, MAX_RULES_PER_CHAIN,
    MAX_RULESET_COUNTERS, MAX_RULESET_SLOTS, NatTarget, RuleAction, TCP_FLAGS_NONE, chain, field,
    field::Kind, guard_kind, size, target,
};

use crate::rules::model::{ALL_TABLES, Family, Ipv4Net, Rule, Ruleset, Table, TableName, Target};

pub use addr_hash::AddrHash;
pub use classes::PackedClasses;
pub use flatten::{MAX_TERMS_PER_RULE, user_chain_counters};
pub use reference::{ConnectionView, HeaderFields, L4Header, PacketView, RuleRef};

use classes::Interner;
use flatten::{Flattener, NatTargets, Prepared, Slot};
use guards::GuardTable;
pub use guards::{
    GuardIdentity, GuardOracle, GuardSlots, GuardState, SlotPlan, assign_state_slots,
};
use steps::Steps;

/// A network interface of the namespace. `-i`/`-o` name patterns are
/// resolved against this list when compiling; the kernel only sees ifindexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub ifindex: u32,
    pub name: String,
}

/// Names of the filter chains the classifier knows, in `chain::*` order.
pub const CHAIN_NAMES: [&str; chain::FILTER_COUNT] = ["INPUT", "FORWARD", "OUTPUT"];
/// Names of the nat chains, in `chain::NAT_*` order (from `chain::FILTER_COUNT`).
pub const NAT_CHAIN_NAMES: [&str; chain::IPV4_COUNT - chain::FILTER_COUNT] =
    ["PREROUTING", "POSTROUTING", "OUTPUT"];
/// Every chain the classifier knows, in `chain::*` order: its family,
/// table and name.
pub const BUILTIN_CHAINS: [(Family, TableName, &str); chain::COUNT] = [
    (Family::V4, TableName::Filter, "INPUT"),
    (Family::V4, TableName::Filter, "FORWARD"),
    (Family::V4, TableName::Filter, "OUTPUT"),
    (Family::V4, TableName::Nat, "PREROUTING"),
    (Family::V4, TableName::Nat, "POSTROUTING"),
    (Family::V4, TableName::Nat, "OUTPUT"),
    (Family::V6, TableName::Filter, "INPUT"),
    (Family::V6, TableName::Filter, "FORWARD"),
    (Family::V6, TableName::Filter, "OUTPUT"),
    (Family::V4, TableName::Raw, "PREROUTING"),
    (Family::V4, TableName::Raw, "OUTPUT"),
    (Family::V4, TableName::Mangle, "PREROUTING"),
    (Family::V4, TableName::Mangle, "INPUT"),
    (Family::V4, TableName::Mangle, "FORWARD"),
    (Family::V4, TableName::Mangle, "OUTPUT"),
    (Family::V4, TableName::Mangle, "POSTROUTING"),
    // 16 to 18: the IPv6 nat table's; then the IPv6 raw and mangle tables'.
    (Family::V6, TableName::Nat, "PREROUTING"),
    (Family::V6, TableName::Nat, "POSTROUTING"),
    (Family::V6, TableName::Nat, "OUTPUT"),
    (Family::V6, TableName::Raw, "PREROUTING"),
    (Family::V6, TableName::Raw, "OUTPUT"),
    (Family::V6, TableName::Mangle, "PREROUTING"),
    (Family::V6, TableName::Mangle, "INPUT"),
    (Family::V6, TableName::Mangle, "FORWARD"),
    (Family::V6, TableName::Mangle, "OUTPUT"),
    (Family::V6, TableName::Mangle, "POSTROUTING"),
];

pub use netbeast_common::MAX_NONTERMINATING_RULES;

/// Interface entries one generation may hold: the `IFACES` map holds both
/// generations.
pub const MAX_IFACE_ENTRIES: usize = size::IFACES as usize / GENERATIONS;
/// MAC entries one generation may hold: the `MACS` map holds both generations.
pub const MAX_MAC_ENTRIES: usize = size::MACS as usize / GENERATIONS;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompileError {
    #[error(
        "chain {chain} needs {slots} rule slots or more, more than the limit of {limit} per \
         chain (MAX_RULES_PER_CHAIN); remove rules (a `-m multiport --ports` rule or a \
         `! --icmp-type TYPE/CODE` rule takes two slots, a `-m iprange` rule one per prefix \
         of its range, and the rules of a user-defined chain take slots in every chain that \
         jumps to it)"
    )]
    TooManyRules {
        chain: String,
        slots: usize,
        limit: usize,
    },
    #[error(
        "the ruleset has {rules} rules and built-in chain policies, more than the limit of \
         {limit} (MAX_RULESET_COUNTERS: each has a counter; every table and chain, built-in \
         or user-defined, together); remove rules or chains"
    )]
    TooManyRulesetRules { rules: usize, limit: usize },
    #[error(
        "the ruleset's chains need {slots} rule slots together, more than the limit of {limit} \
         (MAX_RULESET_SLOTS, for every built-in chain of every table; the rules of a \
         user-defined chain take slots in every chain that jumps to it); remove rules"
    )]
    TooManyRulesetSlots { slots: usize, limit: usize },
    #[error(
        "the ruleset needs more than {limit} distinct -j MARK operations (MAX_MARK_TARGETS); \
         rules that set the same mark share one: make them jump to one chain that sets it"
    )]
    TooManyMarkTargets { limit: usize },
    #[error(
        "the ruleset needs more than {limit} distinct -j CONNMARK operations \
         (MAX_CONNMARK_TARGETS); rules that do the same share one: make them jump to one chain \
         that does it"
    )]
    TooManyConnmarkTargets { limit: usize },
    #[error(
        "the nat table needs more than {limit} distinct translations (MAX_NAT_TARGETS): \
         DNAT/SNAT/MASQUERADE/REDIRECT rules that translate to the same addresses, ports and \
         options share one; use fewer distinct --to-destination, --to-source and --to-ports"
    )]
    TooManyNatTargets { limit: usize },
    #[error(
        "the ruleset has more than {limit} LOG rules (MAX_LOG_TARGETS); merge LOG rules \
         (a user-defined chain with one LOG rule can serve several matches)"
    )]
    TooManyLogTargets { limit: usize },
    #[error(
        "rule {rule} of the nat chain {chain} is -j {target}, but {builtin} reaches it, where \
         the kernel refuses it: {reason}"
    )]
    NatTargetInChain {
        builtin: String,
        chain: String,
        rule: usize,
        target: String,
        reason: &'static str,
    },
    #[error(
        "the nat table's INPUT chain has {rules} rules; netbeast does not implement nat INPUT \
         (SNAT of connections to this host): remove them with iptables -t nat -F INPUT"
    )]
    NatInputRules { rules: usize },
    #[error(
        "chains jump in a loop or more than {limit} levels deep ({path}); remove one of these jumps"
    )]
    JumpLoop { path: String, limit: usize },
    #[error(
        "rule {rule} of chain {chain} (reached from {builtin}) would need more than {limit} \
         rule slots (MAX_TERMS_PER_RULE): the conditional RETURN and -g rules before it in \
         its chain, or its own conditions, split the packets that reach it into too many \
         cases; make those RETURN/-g conditions simpler (one match each), or move them into \
         the rule that jumps to {chain}"
    )]
    TooManyTerms {
        builtin: String,
        chain: String,
        rule: usize,
        limit: usize,
    },
    #[error(
        "a packet can pass {passes} rules without a verdict in chain {chain} (no target, LOG, \
         MARK and the like, jumps, gotos and RETURNs, counting the chains it jumps to), more \
         than the limit of {limit} (MAX_NONTERMINATING_RULES): the kernel acts on at most \
         {limit} of them per packet; give some a terminating target, remove them, or make \
         them exclusive (e.g. different destinations or ports)"
    )]
    TooManyNonTerminating {
        chain: String,
        passes: usize,
        limit: usize,
    },
    #[error(
        "a packet can reach {slots} rule slots with a statistic match (or inside a chain \
         jumped to by one) in chain {chain}, more than the limit of {limit} (MAX_GUARDED_SLOTS): \
         the kernel visits each one it reaches; use fewer guarded rules on one path (e.g. \
         split a long -m statistic cascade by destination into separate chains)"
    )]
    TooManyGuardedSlots {
        chain: String,
        slots: usize,
        limit: usize,
    },
    #[error(
        "the ruleset needs more than {limit} guard records (MAX_GUARDS: one per -m statistic \
         match, plus the checks of guarded jumps, RETURNs and gotos); use fewer -m statistic \
         rules"
    )]
    TooManyGuards { limit: usize },
    #[error(
        "the ruleset has more than {limit} matches that keep state of their own rule \
         (MAX_STATEFUL_GUARDS: -m statistic --mode nth, -m limit, -m connlimit); use fewer"
    )]
    TooManyStatefulGuards { limit: usize },
    #[error(
        "rule {rule} of chain {chain} (reached from {builtin}) would check more than {limit} \
         guard outcomes (MAX_GUARD_CHAIN): the -m statistic jumps that lead to it and the \
         guarded RETURN/-g rules before it add up; nest fewer guarded jumps, or give fewer \
         RETURN/-g rules of that chain a -m statistic match"
    )]
    TooManyGuardChecks {
        builtin: String,
        chain: String,
        rule: usize,
        limit: usize,
    },
    #[error(
        "the ruleset needs more than {limit} distinct match classes (MAX_CLASSES), reached at \
         the {field} of chain {chain}; use fewer distinct addresses, port ranges, interfaces or \
         mac addresses (e.g. merge rules that differ only in them with multiport or a wider prefix)"
    )]
    TooManyClasses {
        limit: u32,
        chain: String,
        field: &'static str,
    },
    #[error(
        "the ruleset's key fields (protocol, ports, ICMP types, connection states, TCP flags, \
         length, TTL, TOS, packet and address types) need more than {limit} chunks of 64 \
         keys' classes: wide or scattered port and length ranges each take up to 1,025; use \
         fewer distinct ranges, or merge them"
    )]
    TooManyKeyChunks { limit: u32 },
    #[error(
        "the ruleset's match classes need more than {limit} words of rule bits \
         (MAX_CLASS_WORDS), most of them for the {field} field: many distinct addresses, \
         ports or interfaces combined with many rules that do not name one; use fewer rules, \
         or merge rules that differ only in an address or port (a wider prefix, multiport)"
    )]
    TooManyClassWords { limit: u32, field: &'static str },
    #[error(
        "the ruleset needs {entries} {what} entries, more than the limit of {limit} per \
         generation ({constant}); name fewer {what}s in rules"
    )]
    TooManyEntries {
        what: &'static str,
        entries: usize,
        limit: usize,
        constant: &'static str,
    },
    #[error(
        "rule {rule} of chain {chain} (reached from the nat table's OUTPUT) matches on the \
         {field}, which nat OUTPUT cannot see: netbeast runs that chain when a local socket \
         connects or sends, before any packet exists; match on it in the filter table's \
         OUTPUT instead, or remove the match"
    )]
    NatOutputField {
        chain: String,
        rule: usize,
        field: &'static str,
    },
    #[error("rule {rule} of chain {chain}: {problem}")]
    InvalidRule {
        chain: String,
        /// 1-based, as `--line-numbers` shows it.
        rule: usize,
        problem: String,
    },
    #[error("generation {generation} does not exist: generations are 0 to {}", GENERATIONS - 1)]
    InvalidGeneration { generation: u32 },
}

impl CompileError {
    /// Whether a larger [`Capacity`] would lift this limit (the ruleset
    /// arrays' limits: [`Limits::of`]).
    pub fn is_capacity(&self) -> bool {
        matches!(
            self,
            CompileError::TooManyRulesetRules { .. }
                | CompileError::TooManyRulesetSlots { .. }
                | CompileError::TooManyNatTargets { .. }
                | CompileError::TooManyGuards { .. }
                | CompileError::TooManyClasses { .. }
                | CompileError::TooManyClassWords { .. }
                | CompileError::TooManyKeyChunks { .. }
        )
    }
}

/// The classifier tables of one ruleset for one generation, ready to be
/// written to the maps. Plain data: every table is complete (no lazy parts).
pub struct CompiledRuleset {
    /// The generation the class ids belong to.
    pub generation: u32,
    /// The ruleset arrays' capacity it was compiled for: where its
    /// generation's regions start ([`Capacity`]).
    pub capacity: Capacity,
    /// Indexed by `chain::INPUT`, `chain::FORWARD`, `chain::OUTPUT`,
    /// `chain::NAT_PREROUTING`, `chain::NAT_POSTROUTING`, `chain::NAT_OUTPUT`.
    pub chains: [CompiledChain; chain::COUNT],
    /// Every distinct class vector of the ruleset (all chains and fields), in
    /// id order: `classes[n].id == generation * capacity.classes() + n`.
    pub classes: Vec<Class>,
    /// The same classes packed as the kernel reads them.
    pub packed: PackedClasses,
    /// The hashed address prefixes of every chain whose
    /// `config.addr_lengths` says so (the others use `addr_prefixes` in
    /// the LPM trie).
    pub addr_hash: AddrHash,
    /// Rules of all user-defined chains (the filter table's, the nat
    /// table's, the IPv6 filter table's, the raw table's, then the mangle
    /// table's): their counters are `user_counter_base + 0..user_chain_rules`
    /// (every chain's `config.user_counter_base`), numbered as
    /// [`user_chain_counters`] says.
    pub user_chain_rules: u32,
    /// The translations of the nat rules, each once: the `NAT_TARGETS`
    /// map value at `nat_target_index(generation, n)` for `n` in order.
    /// A DNAT/SNAT/MASQUERADE/REDIRECT slot's `RuleAction::arg` is its `n`.
    pub nat_targets: Vec<NatTarget>,
    /// The IPv6 addresses of each of `nat_targets` (the `NAT6_ADDRS` map,
    /// at the same indexes; zero for IPv4's).
    pub nat_addrs6: Vec<netbeast_common::NatAddrs6>,
    /// Every LOG rule's options (filter table, then nat; chains and rules
    /// in order): the `LOG_TARGETS` map value at `log_target_index(generation,
    /// n)`; a LOG slot's `RuleAction::arg` is its `n`.
    pub log_targets: Vec<LogTarget>,
    /// Every distinct `-j MARK` operation, each once: the `MARK_TARGETS`
    /// map value at `mark_target_index(generation, n)`; a MARK slot's
    /// `RuleAction::arg` is its `n`.
    pub mark_targets: Vec<netbeast_common::MarkTarget>,
    /// Every distinct `-j CONNMARK` operation, each once: the
    /// `CONNMARK_TARGETS` map value at `connmark_target_index(generation,
    /// n)`; a CONNMARK slot's `RuleAction::arg` is its `n`.
    pub connmark_targets: Vec<netbeast_common::ConnmarkTarget>,
    /// The guard records: the `GUARDS` map value at
    /// `guard_index(generation, n)` for `n` in order. A slot's
    /// `RuleAction::guard` is 1 + the number of the first record of its
    /// chain (0: none). Each stateful match of a rule has one record (its
    /// state, for the kinds that keep it per rule, in the state slot `c`
    /// that the loader gives it: see [`assign_state_slots`]); the others
    /// are requirements (`guard_kind::REQUIRE`).
    pub guards: Vec<Guard>,
    /// For each guard record, the rule and match it belongs to: (table,
    /// rule, index among the rule's guards); `None` for requirements.
    pub guard_owners: Vec<Option<(TableName, RuleRef, usize)>>,
    /// For each guard record that keeps state of its own rule, its
    /// identity across ruleset changes (see [`assign_state_slots`]).
    pub guard_identities: Vec<Option<GuardIdentity>>,
    /// Every `-m hashlimit` table the ruleset names: its name's number
    /// and family (`HashlimitKey::table`) and the most buckets it holds
    /// (`HASHLIMIT_TABLES`).
    pub hashlimit_tables: Vec<(u64, u64)>,
    /// The address field coarsened because the classes overflowed
    /// ([`compile_hinted`]), or `None`.
    pub coarsened: Option<Coarsening>,
}

/// One chain's tables.
pub struct CompiledChain {
    /// The `CHAINS` map value at `chain_index(generation, chain)`.
    /// `default_class[f]` is the class of a key with no entry: what
    /// `IN_IFACE`, `OUT_IFACE` and `MAC_SOURCE` lookups that miss must use.
    /// The other fields never miss; theirs are the `/0` class (addresses)
    /// and, for key fields, the class of a key no slot constrains.
    pub config: ChainConfig,
    /// One entry per rule slot (`config.rule_count` of them), in slot order:
    /// the `RULES` map value at `rule_index(generation, config.rule_base,
    /// slot)`.
    /// `target` is `target::ACCEPT`, `DROP`, `REJECT` (with `arg`
    /// one of `reject::*`), `DNAT`, `SNAT`, `MASQUERADE`, `REDIRECT` (with
    /// `arg` the number of the translation in
    /// [`CompiledRuleset::nat_targets`]) or `NONE` (count, then search on
    /// from the next slot); `counter` is the user's rule (0-based position in the chain)
    /// the slot belongs to, which differs from the slot number after a rule
    /// that was expanded into several slots, or, for the rule of a
    /// user-defined chain inlined here, its counter relative to the chain's
    /// `config.counter_base`. Jumps, gotos and RETURNs are `NONE` slots: they count, and
    /// the slots that follow do what iptables does next.
    pub rules: Vec<RuleAction>,
    /// For every slot, the rule it stands for: (chain name, 0-based rule).
    pub owners: Vec<RuleRef>,
    /// Rules of the built-in chain itself: its counters are
    /// `counter_index(generation, config.counter_base + 0..builtin_rules)`,
    /// its policy's `config.policy_counter`.
    pub builtin_rules: u32,
    /// The most slots without a verdict (count-only rules, jumps, gotos,
    /// RETURNs) one packet can act on in this chain: at most
    /// `MAX_NONTERMINATING_RULES`, the kernel search's budget.
    pub max_passes: usize,
    /// The most slots with a guard chain one packet can reach in this
    /// chain: at most `MAX_GUARDED_SLOTS`.
    pub max_guarded: usize,
    /// LPM entries for `field::SRC` and `field::DST`. Each field has its
    /// `0.0.0.0/0` entry, so a lookup always finds a prefix.
    pub addr_prefixes: Vec<AddrPrefix>,
    /// For every key field `f` (`field::Kind::Keys(n)`) the class of each
    /// of its `n` keys, when a slot constrains it (`config.fields_used`);
    /// empty for unused fields and fields of other kinds. See
    /// [`CompiledChain::key_chunk`] for the map layout.
    pub key_classes: [Vec<u32>; field::COUNT],
    /// Interfaces whose class differs from `config.default_class[field]`
    /// (`field::IN_IFACE` / `field::OUT_IFACE`); every other ifindex, known
    /// or not, takes the default class.
    pub ifaces: Vec<IfaceClass>,
    /// Source MACs whose class differs from
    /// `config.default_class[field::MAC_SOURCE]`.
    pub macs: Vec<MacClass>,
}

/// One prefix of an address LPM trie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrPrefix {
    /// `field::SRC` or `field::DST`.
    pub field: usize,
    pub net: Ipv4Net,
    pub class: u32,
}

impl AddrPrefix {
    /// The trie key and its prefix length in bits, header included.
    pub fn trie_key(&self, generation: u32, chain: u32) -> (u32, AddrKey) {
        let key = AddrKey {
            generation: generation as u8,
            chain: chain as u8,
            field: self.field as u8,
            addr: self.net.addr.octets(),
        };
        (ADDR_KEY_HEADER_BITS + u32::from(self.net.prefix_len), key)
    }
}

/// The class of one interface for one field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfaceClass {
    /// `field::IN_IFACE` or `field::OUT_IFACE`.
    pub field: usize,
    pub ifindex: u32,
    pub class: u32,
}

/// The class of one source MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacClass {
    pub mac: [u8; 6],
    pub class: u32,
}

/// A distinct class vector and its id.
pub struct Class {
    pub id: u32,
    /// The rule bits' non-zero words, as pairs `index, word` in index
    /// order (see [`Class::nonzero`], [`Class::bits`], [`Class::vector`]).
    pub words: Box<[u64]>,
}

impl CompiledChain {
    /// A copy of the tables of this chain's fields.
    fn tables(&self) -> FieldTables {
        FieldTables {
            default_class: self.config.default_class,
            fields_used: self.config.fields_used,
            addr_prefixes: self.addr_prefixes.clone(),
            key_classes: self.key_classes.clone(),
            ifaces: self.ifaces.clone(),
            macs: self.macs.clone(),
        }
    }

    /// The class of `key` of key field `f` as the kernel finds it: in the
    /// field's stored chunks, else the field's default class
    /// ([`netbeast_common::key_chunk_at`]). Only for fields in
    /// `config.fields_used`.
    pub fn key_class(&self, f: usize, key: u32) -> u32 {
        match netbeast_common::key_chunk_at(0, self.config.key_span[f], f, key) {
            Some(_) => self.key_classes[f][key as usize],
            None => self.config.default_class[f],
        }
    }

    /// The `KEY_CLASSES` indexes and values of key field `f`'s stored
    /// chunks, in order (see [`netbeast_common::key_chunk_at`]).
    pub fn stored_key_chunks(&self, f: usize) -> impl Iterator<Item = (u32, [u32; KEY_CHUNK])> {
        let (base, span) = (self.config.key_base[f], self.config.key_span[f]);
        let (first, count) = (span & 0xffff, span >> 16);
        // Nothing for a field that is not a key field.
        let tail = field::key_chunks(f).checked_sub(1);
        (first..first + count)
            .chain(tail)
            .enumerate()
            .map(move |(i, chunk)| (base + i as u32, self.key_chunk(f, chunk as usize)))
    }

    /// Chunk `chunk` (0..`field::key_chunks(f)`) of key field `f`'s
    /// table: keys `chunk * KEY_CHUNK ..`. Past the
    /// last key the chunk is padded with the last key's class; no packet
    /// has those keys (the kernel checks). Only for fields in
    /// `config.fields_used`.
    pub fn key_chunk(&self, f: usize, chunk: usize) -> [u32; KEY_CHUNK] {
        let table = &self.key_classes[f];
        let pad = table.last().copied().unwrap_or_default();
        let mut out = [pad; KEY_CHUNK];
        let start = chunk * KEY_CHUNK;
        let end = (start + KEY_CHUNK).min(table.len());
        if start < end {
            out[..end - start].copy_from_slice(&table[start..end]);
        }
        out
    }
}

/// Limits the compiler enforces; lowered in tests to reach them cheaply.
#[derive(Clone, Copy)]
struct Limits {
    rules_per_chain: usize,
    nonterminating_rules: usize,
    terms_per_rule: usize,
    classes: u32,
    class_words: u32,
    iface_entries: usize,
    mac_entries: usize,
    ruleset_counters: u32,
    ruleset_slots: u32,
    nat_targets: u32,
    log_targets: u32,
    mark_targets: u32,
    connmark_targets: u32,
    guarded_slots: usize,
    guards: u32,
    /// What `classes`, `class_words`, `ruleset_counters`, `ruleset_slots`,
    /// `nat_targets` and `guards` are the share of (see [`Limits::of`]).
    capacity: Capacity,
    /// Take the classes' bound on the search's steps even when the walk's
    /// is within the budget (tests compare it with the emulated search).
    class_steps_always: bool,
    /// Copy the slots of a user-defined chain that another built-in chain
    /// of the table jumped to with the same entry, when it has at least
    /// this many (`flatten::Walked`); `usize::MAX`: never. Tests compare
    /// with walking it again, and reuse every walk.
    reused_walk_slots: usize,
}

const LIMITS: Limits = Limits {
    rules_per_chain: MAX_RULES_PER_CHAIN,
    nonterminating_rules: MAX_NONTERMINATING_RULES,
    terms_per_rule: MAX_TERMS_PER_RULE,
    classes: MAX_CLASSES,
    class_words: MAX_CLASS_WORDS,
    iface_entries: MAX_IFACE_ENTRIES,
    mac_entries: MAX_MAC_ENTRIES,
    ruleset_counters: MAX_RULESET_COUNTERS,
    ruleset_slots: MAX_RULESET_SLOTS,
    nat_targets: MAX_NAT_TARGETS,
    log_targets: MAX_LOG_TARGETS,
    mark_targets: netbeast_common::MAX_MARK_TARGETS,
    connmark_targets: netbeast_common::MAX_CONNMARK_TARGETS,
    guarded_slots: MAX_GUARDED_SLOTS,
    guards: MAX_GUARDS,
    capacity: Capacity::FULL,
    class_steps_always: false,
    reused_walk_slots: flatten::REUSED_WALK_SLOTS,
};

impl Limits {
    /// [`LIMITS`] with the ruleset arrays' limits of `capacity`.
    fn of(capacity: Capacity) -> Limits {
        Limits {
            classes: capacity.classes(),
            class_words: capacity.class_words(),
            ruleset_counters: capacity.counters(),
            ruleset_slots: capacity.rules(),
            nat_targets: capacity.nat_targets(),
            guards: capacity.guards(),
            capacity,
            ..LIMITS
        }
    }
}

/// Compiles the filter table's INPUT, FORWARD and OUTPUT chains and the
/// nat table's PREROUTING, POSTROUTING and OUTPUT for `generation`,
/// resolving interface names through `interfaces`.
pub fn compile(
    ruleset: &Ruleset,
    interfaces: &[Interface],
    generation: u32,
) -> Result<CompiledRuleset, CompileError> {
    compile_with_limits(ruleset, interfaces, generation, LIMITS, None)
}

/// [`compile`] for a data plane of `how.capacity`, trying first the
/// coarsening the previous compile of the namespace needed (`how.hint`,
/// [`CompiledRuleset::coarsened`]).
///
/// A ruleset whose classes overflow is flattened twice: once to find the
/// overflow, once coarsened. At kube-proxy's 10,000 services each flatten
/// is half a second, and every sync overflows again. With the hint the
/// coarsened compile comes first; should it fail, the ruleset is compiled
/// as [`compile`] does. The hint is dropped once the ruleset has fewer than
/// half the rules it had when the overflow was seen
/// ([`HINT_KEPT_DOWN_TO`]): a ruleset that shrank may fit uncoarsened, and
/// would otherwise carry the coarsened addresses' guard checks for good.
/// So the result depends on the hint; `netbeast trace`, which compiles the
/// ruleset again to name the kernel's slots, compiles with the same one.
pub fn compile_hinted(
    ruleset: &Ruleset,
    interfaces: &[Interface],
    generation: u32,
    how: Compiling,
) -> Result<CompiledRuleset, CompileError> {
    compile_with_limits(
        ruleset,
        interfaces,
        generation,
        Limits::of(how.capacity),
        how.hint,
    )
}

/// How the loader compiles a namespace's ruleset ([`compile_hinted`]):
/// the same compile names the same slots (`netbeast trace` compiles it
/// again so).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compiling {
    /// The coarsening the namespace's previous compile needed.
    pub hint: Option<Coarsening>,
    /// The data plane's ruleset arrays' capacity.
    pub capacity: Capacity,
}

/// A coarsening hint is used while the ruleset holds at least this
/// fraction (1 / `HINT_KEPT_DOWN_TO`) of the rules it had when its
/// classes overflowed.
pub const HINT_KEPT_DOWN_TO: usize = 2;

/// How a compile coarsened an address field (`coarsened`): the field, and
/// the ruleset's rule count when the overflow that made it was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Coarsening {
    /// The source address (else the destination).
    pub source: bool,
    pub rules: usize,
}

impl Coarsening {
    /// The coarsening of the IPv4 address field named `field` (as
    /// `field::NAMES` names it), seen at `rules` rules; `None` for a field
    /// that is not one.
    fn of(field: &str, rules: usize) -> Option<Coarsening> {
        let source = [field::SRC, field::DST]
            .into_iter()
            .find(|&f| field::NAMES[f] == field)?
            == field::SRC;
        Some(Coarsening { source, rules })
    }
}

/// A built-in chain with its rules (and the user-defined chains it jumps
/// to) expanded into slots, before any table is built.
struct ChainPlan<'a> {
    /// The table the chain belongs to (slot owners index its chains).
    table: &'a Table,
    name: &'static str,
    policy: u32,
    slots: Vec<Slot<'a>>,
    /// Slots without a verdict one packet can act on, and slots with a
    /// guard chain it can reach, at most.
    steps: Steps,
    builtin_rules: u32,
}

/// Compiles `ruleset`; when its classes overflow `CLASS_WORDS` through an
/// IPv4 address field, once more with that field's addresses in
/// user-defined chains coarsened ([`coarsened`]).
fn compile_with_limits(
    ruleset: &Ruleset,
    interfaces: &[Interface],
    generation: u32,
    limits: Limits,
    hint: Option<Coarsening>,
) -> Result<CompiledRuleset, CompileError> {
    let rules = ruleset.rule_count();
    if let Some(hint) = hint
        && rules >= hint.rules / HINT_KEPT_DOWN_TO
        && let Some(coarse) = coarsened(ruleset, hint.source)
        && let Ok(mut compiled) = compile_once(ruleset, &coarse, interfaces, generation, limits)
    {
        compiled.coarsened = Some(hint);
        return Ok(compiled);
    }
    match compile_once(ruleset, &Coarse::default(), interfaces, generation, limits) {
        Err(CompileError::TooManyClassWords { field, .. })
            if let Some(how) = Coarsening::of(field, rules)
                && let Some(coarse) = coarsened(ruleset, how.source) =>
        {
            // Should the coarse ruleset fail too, the first error says
            // what to change.
            let first = CompileError::TooManyClassWords {
                limit: limits.class_words,
                field,
            };
            crate::profile::phase("compile: overflowed, coarsened");
            let mut compiled = compile_once(ruleset, &coarse, interfaces, generation, limits)
                .map_err(|_| first)?;
            compiled.coarsened = Some(how);
            Ok(compiled)
        }
        compiled => compiled,
    }
}

/// Distinct prefixes a coarsened field's addresses fall into, at most.
const COARSE_PREFIXES: usize = 64;

/// `ruleset` with the IPv4 source addresses (`source`; else the
/// destination addresses) coarsened in the rules of user-defined chains,
/// or `None` when that changes none.
///
/// The bit vectors a field's classes hold grow as its distinct addresses
/// times the slots that name none. kube-proxy's endpoint chains each test
/// one pod's source (`-s 10.244.1.5/32 -j KUBE-MARK-MASQ`), and inlined
/// into the services chain, tens of thousands of such addresses meet
/// tens of thousands of slots that name no source: every source class is
/// nearly the whole chain. Coarsened, such an address is a guard
/// (`guard_kind::ADDR_MASK`, as a non-contiguous netmask is) that tests it
/// whole, and the classes see only its prefix of the longest length at
/// which the field's coarsened addresses fall into at most
/// `COARSE_PREFIXES` prefixes (10.244.0.0/16): a handful of classes. The
/// price is a guard check when the slot is a candidate, which the
/// search's step bounds (`steps.rs`) count: a chain where that adds up
/// stays refused. Built-in chains' rules are left as they are: a rule
/// there is one slot, in no fan-out.
fn coarsened(ruleset: &Ruleset, source: bool) -> Option<Coarse> {
    let address = |r: &Rule| {
        let net = if source {
            r.source.as_ref()
        } else {
            r.destination.as_ref()
        }?;
        (!net.negated && net.value.mask.is_none() && net.value.prefix_len > 0).then_some(net.value)
    };
    // The rules of user-defined IPv4 chains, by (table, chain, rule).
    let user_rules = || {
        ruleset
            .tables()
            .into_iter()
            .enumerate()
            .filter(|(_, (family, _))| *family == Family::V4)
            .flat_map(|(t, (_, table))| {
                table
                    .chains
                    .iter()
                    .enumerate()
                    .filter(|(_, chain)| chain.policy.is_none())
                    .flat_map(move |(c, chain)| {
                        chain
                            .rules
                            .iter()
                            .enumerate()
                            .map(move |(r, rule)| ((t, c, r), rule))
                    })
            })
    };
    let nets: Vec<Ipv4Net> = user_rules().filter_map(|(_, rule)| address(rule)).collect();
    // The longest length at which the addresses fall into few prefixes.
    let len = (0..=32u8).rev().find(|&len| {
        let mask = crate::rules::model::prefix_mask(len);
        let mut prefixes: Vec<u32> = nets.iter().map(|n| u32::from(n.addr) & mask).collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        prefixes.len() <= COARSE_PREFIXES
    })?;
    let mut rules = std::collections::HashMap::new();
    for (at, rule) in user_rules() {
        let Some(net) = address(rule).filter(|n| n.prefix_len > len) else {
            continue;
        };
        let mut coarse = rule.clone();
        let value = if source {
            &mut coarse.source
        } else {
            &mut coarse.destination
        };
        let value = &mut value.as_mut().expect("the address just read").value;
        value.mask = Some(Ipv4Addr::from(crate::rules::model::prefix_mask(
            net.prefix_len,
        )));
        value.prefix_len = len;
        rules.insert(at, coarse);
    }
    (!rules.is_empty()).then_some(Coarse { rules })
}

/// A ruleset's coarsened rules ([`coarsened`]), which the compile takes in
/// place of the rules at their (table of `Ruleset::tables`, chain, rule):
/// kube-proxy's 20,000 endpoint rules, not a copy of its 110,000.
#[derive(Default)]
pub(super) struct Coarse {
    rules: std::collections::HashMap<(usize, usize, usize), Rule>,
}

impl Coarse {
    /// The rule the compile takes for rule `r` of chain `c` of table `t`.
    pub(super) fn rule<'r>(&'r self, (t, c, r): (usize, usize, usize), rule: &'r Rule) -> &'r Rule {
        self.rules.get(&(t, c, r)).unwrap_or(rule)
    }
}

#[cfg(test)]
thread_local! {
    /// How many times `compile_once` ran on this thread (a test's).
    static COMPILES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn compile_once(
    ruleset: &Ruleset,
    coarse: &Coarse,
    interfaces: &[Interface],
    generation: u32,
    limits: Limits,
) -> Result<CompiledRuleset, CompileError> {
    #[cfg(test)]
    COMPILES.set(COMPILES.get() + 1);
    if generation as usize >= GENERATIONS {
        return Err(CompileError::InvalidGeneration { generation });
    }
    let nat_input = ruleset.nat.chain("INPUT").map_or(0, |c| c.rules.len());
    if nat_input > 0 {
        return Err(CompileError::NatInputRules { rules: nat_input });
    }
    let mut nat_targets = NatTargets::default();
    let mut log_targets = Vec::new();
    let mut mark_targets = Vec::new();
    let mut connmark_targets = Vec::new();
    let mut guard_table = GuardTable::new(limits.guards);
    // Each table's user-defined chains count after the previous table's
    // (`user_chain_counters`), in `ALL_TABLES` order.
    let mut user_counters_end = 0;
    let mut prepare = |t, table, family| {
        let prepared = Prepared::new(
            table,
            family,
            |c, r, rule| coarse.rule((t, c, r), rule),
            user_counters_end,
            &mut nat_targets,
            &mut log_targets,
            &mut mark_targets,
            &mut connmark_targets,
            &mut guard_table,
            limits,
        )?;
        user_counters_end = prepared.user_counters_end;
        Ok::<_, CompileError>(prepared)
    };
    let mut tables = ruleset
        .tables()
        .into_iter()
        .enumerate()
        .map(|(t, (family, table))| prepare(t, table, family))
        .collect::<Result<Vec<_>, _>>()?;
    let table_of = |family, table| {
        ALL_TABLES
            .iter()
            .position(|&t| t == (family, table))
            .unwrap_or_else(|| unreachable!("{table:?} of {family:?}"))
    };
    // A built-in chain is walked once (nothing jumps to it): its rules'
    // terms move into its slots rather than being copied there.
    let mut roots: Vec<_> = BUILTIN_CHAINS
        .into_iter()
        .map(|(family, table, name)| tables[table_of(family, table)].take_terms(name))
        .collect();
    let builtins = BUILTIN_CHAINS
        .into_iter()
        .map(|(family, table, name)| (&tables[table_of(family, table)], name));
    // The counters' layout (`counter_layout`): each built-in chain's rules
    // and policy, then the user-defined chains' rules.
    let mut builtin_rules = [0u32; chain::COUNT];
    for (c, (prepared, name)) in builtins.clone().enumerate() {
        builtin_rules[c] = prepared.table.chain(name).map_or(0, |c| c.rules.len()) as u32;
    }
    let counted =
        builtin_rules.iter().map(|&n| u64::from(n) + 1).sum::<u64>() + u64::from(user_counters_end);
    let layout = netbeast_common::counter_layout(&builtin_rules, user_counters_end)
        .filter(|_| counted <= u64::from(limits.ruleset_counters));
    let Some((counter_bases, user_counter_base)) = layout else {
        return Err(CompileError::TooManyRulesetRules {
            rules: counted as usize,
            limit: limits.ruleset_counters as usize,
        });
    };
    let mut plans: Vec<ChainPlan<'_>> = Vec::with_capacity(chain::COUNT);
    // The walks of chains that built-in chains jump to, for the table's
    // other built-in chains that jump to them too.
    let mut walked = Vec::new();
    for (builtin, (prepared, name)) in builtins.enumerate() {
        let (family, table, _) = BUILTIN_CHAINS[builtin];
        let reuse = flatten::Reuse {
            walked: &mut walked,
            earlier: &plans,
            table: table_of(family, table),
            builtin,
        };
        let (slots, policy, steps) = Flattener::new(
            prepared,
            &mut guard_table,
            (counter_bases[builtin].0, user_counter_base),
            name,
            limits,
            reuse,
        )
        .run(std::mem::take(&mut roots[builtin]))?;
        plans.push(ChainPlan {
            table: prepared.table,
            name,
            policy,
            slots,
            steps,
            builtin_rules: builtin_rules[builtin],
        });
    }
    // Each chain's slots after the previous chain's in the generation's
    // share of `RULES`.
    let total_slots: usize = plans.iter().map(|p| p.slots.len()).sum();
    if total_slots > limits.ruleset_slots as usize {
        return Err(CompileError::TooManyRulesetSlots {
            slots: total_slots,
            limit: limits.ruleset_slots as usize,
        });
    }
    crate::profile::phase("compile: prepare, flatten");
    // Every vector has the same length so that identical rule sets of
    // different chains deduplicate into one class.
    let words = plans
        .iter()
        .map(|p| p.slots.len().div_ceil(64))
        .max()
        .unwrap_or(0)
        .max(1);
    let interfaces = dedup_interfaces(interfaces);
    // A slot adds a class or two for each field it names, seldom more.
    let slots: usize = plans.iter().map(|p| p.slots.len()).sum();
    let mut interner = Interner::new(
        generation * limits.capacity.classes(),
        words,
        (limits.classes, limits.class_words),
        2 * slots + 64,
    );
    let mut chains: Vec<CompiledChain> = Vec::with_capacity(chain::COUNT);
    for (c, plan) in plans.iter().enumerate() {
        // A chain whose slots have the terms of an earlier chain's (nat
        // PREROUTING and OUTPUT that both only jump to kube-proxy's
        // KUBE-SERVICES) has its tables too.
        let same = plans[..c]
            .iter()
            .position(|earlier| same_terms(earlier, plan));
        #[cfg(test)]
        let same = same.filter(|_| REUSE_TABLES.get());
        #[cfg(test)]
        TABLES_REUSED.set(TABLES_REUSED.get() + usize::from(same.is_some()));
        let tables = match same {
            Some(earlier) => chains[earlier].tables(),
            None => field_tables(plan, &interfaces, &mut interner)?,
        };
        chains.push(compile_chain(plan, tables)?);
    }
    crate::profile::phase("compile: fields, classes");
    let iface_entries: usize = chains.iter().map(|c| c.ifaces.len()).sum();
    if iface_entries > limits.iface_entries {
        return Err(CompileError::TooManyEntries {
            what: "interface",
            entries: iface_entries,
            limit: limits.iface_entries,
            constant: "MAX_IFACE_ENTRIES",
        });
    }
    let mac_entries: usize = chains.iter().map(|c| c.macs.len()).sum();
    if mac_entries > limits.mac_entries {
        return Err(CompileError::TooManyEntries {
            what: "mac address",
            entries: mac_entries,
            limit: limits.mac_entries,
            constant: "MAX_MAC_ENTRIES",
        });
    }
    let chains: [CompiledChain; chain::COUNT] = match chains.try_into() {
        Ok(chains) => chains,
        Err(_) => unreachable!("one compiled chain per name of CHAIN_NAMES"),
    };
    let user_chain_rules = user_counters_end;
    let mut chains = chains;
    place_key_chunks(&mut chains, generation, limits)?;
    let mut rule_base = 0;
    for (c, compiled) in chains.iter_mut().enumerate() {
        compiled.config.rule_base = rule_base;
        rule_base += compiled.config.rule_count;
        (compiled.config.counter_base, compiled.config.policy_counter) = counter_bases[c];
        compiled.config.user_counter_base = user_counter_base;
    }
    for (compiled, plan) in chains.iter_mut().zip(&plans) {
        compiled.owners = plan
            .slots
            .iter()
            .map(|s| RuleRef {
                chain: plan.table.chains[s.owner.0].name.clone(),
                rule: s.owner.1,
            })
            .collect();
    }
    crate::profile::phase("compile: owners");
    let heaviest = interner.heaviest_field();
    let classes = interner.into_classes();
    for (compiled, plan) in chains.iter_mut().zip(&plans) {
        let steps = within_budget(compiled, plan, &classes, limits)?;
        (compiled.max_passes, compiled.max_guarded) = (steps.passes, steps.guarded);
    }
    crate::profile::phase("compile: search budget");
    let packed = PackedClasses::pack(
        generation * limits.capacity.classes(),
        generation * limits.capacity.class_words(),
        &classes,
        limits.class_words,
        heaviest,
    )?;
    crate::profile::phase("compile: pack classes");
    let addr_hash = addr_hash::build(&mut chains);
    crate::profile::phase("compile: address hash");
    Ok(CompiledRuleset {
        generation,
        capacity: limits.capacity,
        chains,
        classes,
        packed,
        addr_hash,
        user_chain_rules,
        nat_targets: nat_targets.list,
        nat_addrs6: nat_targets.addrs6,
        log_targets,
        mark_targets,
        connmark_targets,
        guards: guard_table.records,
        guard_owners: guard_table.owners,
        guard_identities: guard_table.identities,
        hashlimit_tables: crate::rules::ext::hashlimit::tables(ruleset),
        coarsened: None,
    })
}

/// Gives each key field of each chain its stored chunks in its
/// generation's region of `KEY_CLASSES` (`ChainConfig::key_base`,
/// `key_span`): the chunks between the first and the last that are not
/// all of the field's most common whole-chunk class, which becomes the
/// field's `default_class`, then the field's last chunk (see
/// [`netbeast_common::key_chunk_at`]); at their home in a full region,
/// else one field after another.
fn place_key_chunks(
    chains: &mut [CompiledChain; chain::COUNT],
    generation: u32,
    limits: Limits,
) -> Result<(), CompileError> {
    let limit = limits.capacity.key_chunks();
    let region = generation * limit;
    // A region that holds every chain's whole tables (the full capacity)
    // gives each field a home of its own, where its chunks keep their
    // place from one ruleset to the next: a change rewrites the chunks
    // that changed (`written`). A smaller one has them one after another.
    let homes = limit >= netbeast_common::MAX_KEY_CHUNKS;
    let mut used = 0u32;
    for (c, compiled) in chains.iter_mut().enumerate() {
        for f in 0..field::COUNT {
            if !matches!(field::KINDS[f], Kind::Keys(_))
                || compiled.config.fields_used & (1 << f) == 0
            {
                continue;
            }
            let (first, count, default) = key_span_of(&compiled.key_classes[f], f);
            let at = if homes {
                c as u32 * field::KEY_CHUNKS_PER_CHAIN + field::key_chunk_offset(f) + first
            } else {
                used
            };
            if at + count + 1 > limit {
                return Err(CompileError::TooManyKeyChunks { limit });
            }
            compiled.config.key_base[f] = region + at;
            compiled.config.key_span[f] = netbeast_common::key_span(first, count);
            compiled.config.default_class[f] = default;
            used += count + 1;
        }
    }
    Ok(())
}

/// Of key field `f`'s `table` (a class per key): the first chunk and the
/// number of chunks to store before its last chunk, and the class of every
/// key in the others.
fn key_span_of(table: &[u32], f: usize) -> (u32, u32, u32) {
    let tail = field::key_chunks(f) as usize - 1;
    // The class of each chunk but the last whose keys all have one.
    let whole: Vec<Option<u32>> = table
        .chunks(KEY_CHUNK)
        .take(tail)
        .map(|keys| keys.iter().all(|&k| k == keys[0]).then_some(keys[0]))
        .collect();
    let mut counts = std::collections::HashMap::<u32, usize>::new();
    for class in whole.iter().flatten() {
        *counts.entry(*class).or_default() += 1;
    }
    // The most common, the lowest id among equals (the same every compile).
    let Some(default) = counts
        .into_iter()
        .max_by_key(|&(class, n)| (n, std::cmp::Reverse(class)))
        .map(|(class, _)| class)
    else {
        return (0, tail as u32, table.last().copied().unwrap_or_default());
    };
    let stored = |c: &usize| whole[*c] != Some(default);
    let Some(first) = (0..tail).find(stored) else {
        return (0, 0, default);
    };
    let last = (0..tail).rfind(stored).unwrap_or(first);
    (first as u32, (last - first + 1) as u32, default)
}

/// The most steps one packet takes in `plan`'s chain (`steps.rs`): the
/// flatten walk's bound, or when that passes the kernel's budget, the
/// classes' where it is lower; refused when still past it.
fn within_budget(
    compiled: &CompiledChain,
    plan: &ChainPlan<'_>,
    classes: &[Class],
    limits: Limits,
) -> Result<Steps, CompileError> {
    let over =
        |s: Steps| s.passes > limits.nonterminating_rules || s.guarded > limits.guarded_slots;
    let steps = if over(plan.steps) || limits.class_steps_always {
        plan.steps.min(steps::class_steps(compiled, classes))
    } else {
        plan.steps
    };
    if steps.passes > limits.nonterminating_rules {
        return Err(CompileError::TooManyNonTerminating {
            chain: plan.name.to_string(),
            passes: steps.passes,
            limit: limits.nonterminating_rules,
        });
    }
    if steps.guarded > limits.guarded_slots {
        return Err(CompileError::TooManyGuardedSlots {
            chain: plan.name.to_string(),
            slots: steps.guarded,
            limit: limits.guarded_slots,
        });
    }
    Ok(steps)
}

/// The first entry of each ifindex wins, as the reference resolves them.
fn dedup_interfaces(interfaces: &[Interface]) -> Vec<&Interface> {
    let mut seen = std::collections::HashSet::new();
    interfaces
        .iter()
        .filter(|i| seen.insert(i.ifindex))
        .collect()
}

/// The checks the tables rely on. The parser already refuses these rules;
/// they are repeated here because a wrong table would silently misclassify.
pub(super) fn validate_rule(rule: &Rule) -> Result<(), String> {
    for net in [&rule.source, &rule.destination].into_iter().flatten() {
        if net.value.prefix_len > 32 {
            return Err(format!(
                "prefix length {} is longer than 32",
                net.value.prefix_len
            ));
        }
    }
    let protocol = match &rule.protocol {
        Some(p) if !p.negated => Some(p.value),
        _ => None,
    };
    // What each match needs of the rule (the L4 keys hold ports only for
    // TCP and UDP, type/code only for ICMP), asked of its module.
    for m in &rule.matches {
        m.ext().check(protocol)?;
    }
    // The limit is on matches; the (at most two) guards of -s/-d under a
    // non-contiguous netmask come on top, within the slot's guard chain
    // (MAX_GUARD_CHAIN, checked when the chain is flattened).
    let guards = guards::rule_guards(rule).count() - guards::address_guards(rule).count();
    if guards > MAX_GUARDS_PER_RULE as usize {
        return Err(format!(
            "it has {guards} guards (stateful matches like -m statistic or -m limit; \
             -m conntrack's tuple, protocol and expiry tests, one per tuple and one for \
             the rest; --tcp-option), more than the limit of {MAX_GUARDS_PER_RULE} per \
             rule (MAX_GUARDS_PER_RULE); split it into rules that jump to a chain"
        ));
    }
    Ok(())
}

/// What a slot of `target` does; `nat` is the number of its translation
/// (nat targets) or of its LOG rule (LOG).
fn action(target: &Target, counter: u32, nat: u32) -> RuleAction {
    // The module's code; its argument: the answer (REJECT), or the
    // number of the rule's translation or LOG entry.
    let arg = match target {
        Target::Reject(with) => crate::rules::target::reject::kernel_code(*with),
        // The conntrack zone its template gives.
        Target::Ct(ct) => u32::from(ct.zone),
        // The mode and value, in the word itself.
        Target::Ttl(ttl) | Target::Hl(ttl) => ttl.kernel_arg(),
        Target::Tos(tos) => tos.kernel_arg(),
        Target::Dscp(dscp) => crate::rules::target::dscp::kernel_arg(*dscp),
        Target::Tcpmss(mss) => mss.kernel_arg(),
        // SYNPROXY's options sit in the same per-rule table.
        _ if target.is_nat()
            || matches!(
                target,
                Target::Log(_) | Target::Synproxy(_) | Target::Mark(_) | Target::Connmark(_)
            ) =>
        {
            nat
        }
        _ => 0,
    };
    let target = target.code();
    RuleAction {
        target,
        arg,
        counter,
        guard: 0,
    }
}

/// `ChainConfig::addr6_lead`'s value for the source (`source`) or the
/// destination of an IPv6 chain: 1 + the word to look up first, or 0.
/// A word qualifies when no slot negates a word of the address and every
/// slot that constrains the address constrains that word; of those, the
/// one with the most distinct prefixes, which tells addresses apart best.
/// None where at most one word is looked up (nothing to skip).
fn addr6_lead_of(
    plan: &ChainPlan<'_>,
    fields_used: u32,
    prefixes: &[AddrPrefix],
    source: bool,
) -> u32 {
    let words: [usize; 4] = std::array::from_fn(|w| field::addr_field(source, w));
    if words
        .iter()
        .filter(|&&f| fields_used & (1 << f) != 0)
        .count()
        < 2
    {
        return 0;
    }
    let mut qualifies = [true; 4];
    for slot in &plan.slots {
        let atoms = words.map(|f| slot.term.prefix_atoms(f));
        if atoms.iter().any(|a| a.iter().any(|&(_, negated)| negated)) {
            return 0;
        }
        if atoms.iter().all(|a| a.is_empty()) {
            continue;
        }
        for (q, a) in qualifies.iter_mut().zip(&atoms) {
            *q &= !a.is_empty();
        }
    }
    let distinct = |f: usize| prefixes.iter().filter(|p| p.field == f).count();
    (0..4)
        .filter(|&w| qualifies[w])
        .max_by_key(|&w| (distinct(words[w]), std::cmp::Reverse(w)))
        .map_or(0, |w| w as u32 + 1)
}

#[cfg(test)]
thread_local! {
    /// How many chains this thread (a test's) took the tables of an
    /// earlier chain for, and whether it may.
    static TABLES_REUSED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    static REUSE_TABLES: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// What a chain's field builders make: the tables of every field.
struct FieldTables {
    default_class: [u32; field::COUNT],
    fields_used: u32,
    addr_prefixes: Vec<AddrPrefix>,
    key_classes: [Vec<u32>; field::COUNT],
    ifaces: Vec<IfaceClass>,
    macs: Vec<MacClass>,
}

/// True when two chains have slots of equal terms, so equal tables (the
/// terms are all the field builders read, besides the interfaces).
fn same_terms(a: &ChainPlan<'_>, b: &ChainPlan<'_>) -> bool {
    !a.slots.is_empty()
        && a.slots.len() == b.slots.len()
        && a.slots
            .iter()
            .zip(&b.slots)
            .all(|(x, y)| std::rc::Rc::ptr_eq(&x.term, &y.term) || x.term == y.term)
}

fn field_tables(
    plan: &ChainPlan<'_>,
    interfaces: &[&Interface],
    interner: &mut Interner,
) -> Result<FieldTables, CompileError> {
    let mut default_class = [0u32; field::COUNT];
    let mut fields_used = 0u32;

    let mut addr_prefixes = Vec::new();
    let mut key_classes: [Vec<u32>; field::COUNT] = Default::default();
    let mut ifaces = Vec::new();
    let mut macs = Vec::new();
    let constrained = fields::constrained(plan);
    // Every field, as its kind says.
    for f in 0..field::COUNT {
        let (used, default) = match field::KINDS[f] {
            Kind::Prefix => {
                let table = fields::addresses(plan, f, &constrained[f], interner)?;
                // The IPv6 words past the first only where used: IPv4
                // chains (and their tables) stay as they were.
                if table.used || field::addr_word(f) == 0 {
                    addr_prefixes.extend(table.prefixes);
                }
                (table.used, table.default_class)
            }
            Kind::Keys(_) => {
                let table = fields::keys(plan, f, &constrained[f], interner)?;
                key_classes[f] = table.table;
                (table.used, table.default_class)
            }
            Kind::Iface => {
                let table = fields::interfaces(plan, f, &constrained[f], interfaces, interner)?;
                ifaces.extend(table.entries);
                (table.used, table.default_class)
            }
            Kind::Mac => {
                let table = fields::macs(plan, &constrained[f], interner)?;
                macs.extend(table.entries);
                (table.used, table.default_class)
            }
        };
        fields_used |= u32::from(used) << f;
        default_class[f] = default;
    }
    Ok(FieldTables {
        default_class,
        fields_used,
        addr_prefixes,
        key_classes,
        ifaces,
        macs,
    })
}

fn compile_chain(plan: &ChainPlan<'_>, tables: FieldTables) -> Result<CompiledChain, CompileError> {
    if plan.table.name == TableName::Nat && plan.name == "OUTPUT" {
        check_socket_fields(plan)?;
    }
    let fields_used = tables.fields_used;
    let addr6_lead = addr6_lead_of(plan, fields_used, &tables.addr_prefixes, true)
        | addr6_lead_of(plan, fields_used, &tables.addr_prefixes, false) << 4;

    let rules = plan.slots.iter().map(|slot| slot.action).collect();

    Ok(CompiledChain {
        config: ChainConfig {
            policy: plan.policy,
            rule_count: plan.slots.len() as u32,
            fields_used,
            addr_epoch: 0,
            default_class: tables.default_class,
            // Set for the whole ruleset by `addr_hash::build`.
            addr_lengths: [[0; MAX_ADDR_HASH_LENGTHS]; field::ADDR_FIELDS.len()],
            addr_table: 0,
            // Set for the whole ruleset once every chain is compiled.
            rule_base: 0,
            counter_base: 0,
            policy_counter: 0,
            user_counter_base: 0,
            // Set for the whole ruleset once every chain is compiled
            // (`place_key_chunks`).
            key_base: [0; field::COUNT],
            key_span: [0; field::COUNT],
            addr6_lead,
        },
        rules,
        addr_prefixes: tables.addr_prefixes,
        key_classes: tables.key_classes,
        ifaces: tables.ifaces,
        macs: tables.macs,
        owners: Vec::new(),
        builtin_rules: plan.builtin_rules,
        // Set once the classes are built (`within_budget`).
        max_passes: 0,
        max_guarded: 0,
    })
}

impl CompiledRuleset {
    /// True when a nat chain has a rule a packet can reach: new connections
    /// must then go through the nat chains (`ACTIVE_NAT`).
    pub fn has_nat_rules(&self) -> bool {
        let nat6 = chain::NAT6_PREROUTING as usize..=chain::NAT6_OUTPUT as usize;
        self.chains[chain::FILTER_COUNT..chain::IPV4_COUNT]
            .iter()
            .chain(&self.chains[nat6])
            .any(|c| c.config.rule_count > 0)
    }

    /// True when the raw chains of either family have a rule or a DROP
    /// policy: packets must then go through them before conntrack
    /// (`ACTIVE_RAW`; the IPv6 program runs its own raw chains under the
    /// same bit).
    pub fn has_raw_rules(&self) -> bool {
        self.table_in_use(|_, table| table == TableName::Raw)
    }

    /// True when a built-in chain of the tables `which` picks has a rule
    /// or a DROP policy.
    fn table_in_use(&self, which: impl Fn(Family, TableName) -> bool) -> bool {
        BUILTIN_CHAINS
            .iter()
            .zip(&self.chains)
            .filter(|((family, table, _), _)| which(*family, *table))
            .any(|(_, c)| {
                c.config.rule_count > 0 || c.config.policy != netbeast_common::target::ACCEPT
            })
    }

    /// True when the mangle chains have a rule or a DROP policy: packets
    /// must then go through them at the mangle hooks (`ACTIVE_MANGLE`).
    /// Either family's: one bit, as the two programs test it at the same
    /// hooks.
    pub fn has_mangle_rules(&self) -> bool {
        // Both families' mangle chains: `ACTIVE_MANGLE` serves both.
        self.table_in_use(|_, table| table == TableName::Mangle)
    }

    /// True when the IPv6 chains have a rule or a DROP policy: IPv6
    /// packets must then go through them (`ACTIVE_IPV6`).
    pub fn has_ipv6_rules(&self) -> bool {
        self.table_in_use(|family, _| family == Family::V6)
    }

    /// True when a rule of any chain looks at the connection state
    /// (`-m state`, `-m conntrack`).
    pub fn uses_conntrack_state(&self) -> bool {
        self.chains
            .iter()
            .any(|c| c.config.fields_used & (1 << field::CT_STATE) != 0)
    }

    /// The bits of the `ACTIVE` word this ruleset needs besides its
    /// generation: `ACTIVE_NAT` with nat rules, and `ACTIVE_TRACKING`
    /// with nat rules, connection-state matches (a translation lives in
    /// its connection's conntrack entry) or `-m connlimit`.
    pub fn active_flags(&self) -> u32 {
        let nat = self.has_nat_rules();
        let mut flags = 0;
        if nat {
            flags |= ACTIVE_NAT;
        }
        if self.has_ipv6_rules() {
            flags |= netbeast_common::ACTIVE_IPV6;
        }
        if self.has_raw_rules() {
            flags |= netbeast_common::ACTIVE_RAW;
        }
        if self.has_mangle_rules() {
            flags |= netbeast_common::ACTIVE_MANGLE;
        }
        // `-m connlimit` counts conntrack's connections; `-m conntrack`'s
        // tuple, protocol and expiry guards read them.
        // `-m connmark` and `-j CONNMARK` read and write conntrack's
        // entries.
        let counts_connections = self.guards.iter().any(|g| {
            matches!(
                g.kind,
                guard_kind::CONNLIMIT
                    | guard_kind::CT_TUPLE
                    | guard_kind::CT_PROTO_EXPIRE
                    | guard_kind::CONNMARK
            )
        }) || !self.connmark_targets.is_empty();
        // `-j SYNPROXY` in FORWARD replays the handshake to the server and
        // translates the connection's sequence numbers from then on: it
        // finds the connection in conntrack.
        let proxies_forward = self.chains[netbeast_common::chain::FORWARD as usize]
            .rules
            .iter()
            .any(|r| r.target == netbeast_common::target::SYNPROXY);
        // A `-j CT` template (a zone) is xt_CT's say over conntrack, which
        // its rule loads (nf_ct_netns_get): connections are then tracked,
        // in the zone it gives, as `conntrack -L` shows them.
        let ct_template = self.chains.iter().any(|c| {
            c.rules
                .iter()
                .any(|r| r.target == netbeast_common::target::CT)
        });
        if nat
            || self.uses_conntrack_state()
            || counts_connections
            || proxies_forward
            || ct_template
        {
            flags |= ACTIVE_TRACKING;
        }
        if self
            .chains
            .iter()
            .any(|c| c.config.fields_used & (1 << field::TCP_FLAGS) != 0)
        {
            flags |= ACTIVE_TCP_FLAGS;
        }
        if self.guards.iter().any(|g| g.kind == guard_kind::TCP_OPTION) {
            flags |= netbeast_common::ACTIVE_TCP_OPTIONS;
        }
        if self
            .guards
            .iter()
            .any(|g| g.kind == guard_kind::SCTP_CHUNKS)
        {
            flags |= netbeast_common::ACTIVE_SCTP_CHUNKS;
        }
        if self.guards.iter().any(|g| g.kind == guard_kind::DCCP) {
            flags |= netbeast_common::ACTIVE_DCCP;
        }
        if self.guards.iter().any(|g| {
            matches!(
                g.kind,
                guard_kind::IPV6_HEADER | guard_kind::IPV6_RT | guard_kind::IPV6_FRAG
            )
        }) {
            flags |= netbeast_common::ACTIVE_IPV6_HEADERS;
        }
        flags
    }

    /// The class vector of `id`, if `id` is one of this ruleset's classes.
    pub fn class(&self, id: u32) -> Option<Box<ClassVector>> {
        let n = id.checked_sub(self.generation * self.capacity.classes())?;
        let class = self.classes.get(n as usize)?;
        (class.id == id).then(|| class.vector())
    }

    /// The class id the kernel would look up for `field` of `pkt` in `chain`.
    /// Whether the kernel's search looks field `f` up for `pkt`: a field
    /// the chain uses, unless it is an IPv6 address word whose direction's
    /// lead word has the default class (`ChainConfig::addr6_lead`).
    pub fn looked_up(&self, chain: u32, f: usize, pkt: &PacketView) -> bool {
        let config = &self.chains[chain as usize].config;
        if config.fields_used & (1 << f) == 0 {
            return false;
        }
        if !matches!(field::KINDS[f], Kind::Prefix) {
            return true;
        }
        let source = field::is_source(f);
        match netbeast_common::addr6_lead(config.addr6_lead, source) {
            Some(w) if w != field::addr_word(f) => {
                let lead = field::addr_field(source, w);
                self.class_of(chain, lead, pkt) != config.default_class[lead]
            }
            _ => true,
        }
    }

    pub fn class_of(&self, chain: u32, f: usize, pkt: &PacketView) -> u32 {
        let c = &self.chains[chain as usize];
        let default = c.config.default_class[f];
        match f {
            f if matches!(field::KINDS[f], Kind::Prefix) => {
                let addr = pkt.addr_word(f);
                let lengths = &c.config.addr_lengths[field::addr_slot(f)];
                if lengths[0] == ADDR_TRIE {
                    longest_prefix(&c.addr_prefixes, f, addr).unwrap_or(default)
                } else {
                    self.addr_hash
                        .class(c.config.addr_table, f, lengths, addr)
                        .unwrap_or(default)
                }
            }
            f if matches!(field::KINDS[f], Kind::Keys(_)) => c.key_class(f, packet_key(f, pkt)),
            field::IN_IFACE | field::OUT_IFACE => {
                let ifindex = if f == field::IN_IFACE {
                    pkt.in_ifindex
                } else {
                    pkt.out_ifindex
                };
                c.ifaces
                    .iter()
                    .find(|e| e.field == f && e.ifindex == ifindex)
                    .map_or(default, |e| e.class)
            }
            field::MAC_SOURCE => c
                .macs
                .iter()
                .find(|e| e.mac == pkt.mac_source)
                .map_or(default, |e| e.class),
            _ => unreachable!("field {f} does not exist"),
        }
    }

    /// What the kernel does with `pkt` in `chain`: the rules it acts on, in
    /// order — every matching rule without a verdict (including jumps,
    /// gotos and RETURNs), then the first one with a verdict. Empty, or
    /// ending in a rule without a verdict, means the chain policy applies.
    ///
    /// Mirrors the kernel search exactly (summary words, then rule words);
    /// panics if a table names a class that does not exist, which would be a
    /// compiler bug.
    ///
    /// Guards (`-m statistic`) are evaluated with a fresh [`GuardState`]
    /// (nth counts at 0, a fixed seed): for a sequence of packets with
    /// persistent state, use [`CompiledRuleset::classify_with`].
    pub fn classify(&self, chain: u32, pkt: &PacketView) -> Vec<RuleRef> {
        self.classify_with(chain, pkt, &mut GuardState::default())
    }

    /// [`CompiledRuleset::classify`], deciding guards with `oracle`.
    pub fn classify_with(
        &self,
        chain: u32,
        pkt: &PacketView,
        oracle: &mut dyn GuardOracle,
    ) -> Vec<RuleRef> {
        let c = &self.chains[chain as usize];
        self.classify_slots_with(chain, pkt, oracle)
            .into_iter()
            .map(|slot| c.owners[slot as usize].clone())
            .collect()
    }

    /// [`CompiledRuleset::classify`], as the slots the kernel acts on.
    pub fn classify_slots(&self, chain: u32, pkt: &PacketView) -> Vec<u32> {
        self.classify_slots_with(chain, pkt, &mut GuardState::default())
    }

    /// Walks the guard chain that starts at `head` (`RuleAction::guard`)
    /// as the kernel does: requirements against `memo` (the outcomes of
    /// the guards evaluated so far for this packet in this chain), then
    /// the rule's own guards through `oracle`, recording each outcome;
    /// stops at the first that fails or drops the packet.
    fn guards_hold(
        &self,
        head: u32,
        memo: &mut std::collections::HashMap<u32, bool>,
        oracle: &mut dyn GuardOracle,
        pkt: &PacketView,
    ) -> Held {
        let mut next = head;
        for _ in 0..guards::MAX_CHAIN {
            if next == 0 {
                return Held::Holds;
            }
            let n = next - 1;
            let g = &self.guards[n as usize];
            if g.kind == guard_kind::REQUIRE {
                if memo.get(&(g.a as u32)) != Some(&(g.negated == 0)) {
                    return Held::Fails;
                }
            } else {
                let (table, rule, i) = self.guard_owners[n as usize]
                    .as_ref()
                    .expect("a guard record that is not a requirement has an owner");
                let held = g.outcome(oracle.decide(*table, rule, *i, g, pkt));
                memo.insert(n, held == Held::Holds);
                if held != Held::Holds {
                    return held;
                }
            }
            next = g.next;
        }
        panic!("guard chain at {head} is longer than MAX_GUARD_CHAIN");
    }

    /// [`CompiledRuleset::classify_slots`], deciding guards with `oracle`.
    pub fn classify_slots_with(
        &self,
        chain: u32,
        pkt: &PacketView,
        oracle: &mut dyn GuardOracle,
    ) -> Vec<u32> {
        self.search_slots(chain, pkt, oracle).0
    }

    /// The slots the kernel acts on, and the steps of its search the
    /// compiler bounds: (slots with a guard chain reached, slots without a
    /// guard chain or a verdict acted on) — see `CompiledChain::max_guarded`
    /// and `max_passes`.
    pub fn search_slots(
        &self,
        chain: u32,
        pkt: &PacketView,
        oracle: &mut dyn GuardOracle,
    ) -> (Vec<u32>, (usize, usize)) {
        let mut memo = std::collections::HashMap::new();
        let (mut guarded, mut passes) = (0, 0);
        let c = &self.chains[chain as usize];
        let ids: Vec<u32> = (0..field::COUNT)
            .filter(|&f| self.looked_up(chain, f, pkt))
            .map(|f| self.class_of(chain, f, pkt))
            .collect();
        let mut hits = Vec::new();
        let mut start = 0;
        while let Some(slot) = search::first_match(&self.packed, &ids, c.config.rule_count, start) {
            // The kernel's loop is bounded by the rule count; this one
            // relies on the search moving forward.
            assert!(
                slot >= start,
                "search went back from slot {start} to {slot}"
            );
            let rule = &c.rules[slot as usize];
            start = slot + 1;
            if rule.guard != 0 {
                guarded += 1;
                match self.guards_hold(rule.guard, &mut memo, oracle, pkt) {
                    Held::Holds => {}
                    // Not matched after all: not counted, the search goes on.
                    Held::Fails => continue,
                    // Dropped on the spot: nothing more is met.
                    Held::Hotdrop => break,
                }
            }
            // The kernel's table of targets decides, as in the kernel.
            let terminating = target::flags(rule.target) & target::flag::TERMINATING != 0;
            if rule.guard == 0 && !terminating {
                passes += 1;
            }
            hits.push(slot);
            if terminating {
                break;
            }
        }
        (hits, (guarded, passes))
    }
}

/// The key the kernel looks up for key field `f` of `pkt`.
fn packet_key(f: usize, pkt: &PacketView) -> u32 {
    let h = &pkt.header;
    match f {
        field::PROTO => pkt.protocol.into(),
        field::L4A => pkt.l4_keys().0,
        field::L4B => pkt.l4_keys().1,
        field::CT_STATE => pkt.ct_state,
        field::TCP_FLAGS => pkt.tcp_flags().map_or(TCP_FLAGS_NONE, u32::from),
        field::LENGTH => h.length.into(),
        field::TTL => h.ttl.into(),
        field::TOS => h.tos.into(),
        field::PKTTYPE => h.pkttype,
        field::SRC_TYPE => h.src_type,
        field::DST_TYPE => h.dst_type,
        _ => unreachable!("field {f} has no key"),
    }
}

/// The nat OUTPUT chain runs on sockets (connect, sendmsg), before any
/// packet: the fields only a packet has cannot be looked up there.
fn check_socket_fields(plan: &ChainPlan<'_>) -> Result<(), CompileError> {
    const PACKET_ONLY: [usize; 4] = [field::TCP_FLAGS, field::LENGTH, field::TTL, field::TOS];
    for s in &plan.slots {
        // The guards that read the packet (--tcp-option) or its conntrack
        // entry (-m conntrack's tuples, protocol, expiry): a socket that
        // connects has neither yet.
        let rule = &plan.table.chains[s.owner.0].rules[s.owner.1];
        if let Some(g) = guards::rule_guards(rule).find(|g| {
            matches!(
                g.kind,
                guard_kind::TCP_OPTION
                    | guard_kind::SCTP_CHUNKS
                    | guard_kind::DCCP
                    | guard_kind::CT_TUPLE
                    | guard_kind::CT_PROTO_EXPIRE
                    | guard_kind::MARK
                    | guard_kind::CONNMARK
                    | guard_kind::IPV6_HEADER
                    | guard_kind::IPV6_RT
                    | guard_kind::IPV6_FRAG
            )
        }) {
            return Err(CompileError::NatOutputField {
                chain: plan.table.chains[s.owner.0].name.clone(),
                rule: s.owner.1 + 1,
                field: match g.kind {
                    guard_kind::TCP_OPTION => "tcp options (--tcp-option)",
                    guard_kind::SCTP_CHUNKS => "sctp chunks (--chunk-types)",
                    guard_kind::DCCP => "dccp types and options (--dccp-types, --dccp-option)",
                    // The socket programs run before there is a packet,
                    // hence no mark to test (iptables' nat OUTPUT sees the
                    // socket's SO_MARK; not carried there yet).
                    guard_kind::MARK => "packet mark (-m mark)",
                    // Nor a connection: the socket programs run before it
                    // exists.
                    guard_kind::CONNMARK => "connection mark (-m connmark)",
                    guard_kind::IPV6_HEADER | guard_kind::IPV6_RT | guard_kind::IPV6_FRAG => {
                        "IPv6 extension headers (-m ipv6header, -m rt, -m frag)"
                    }
                    _ => "connection's tuple, protocol or expiry (-m conntrack)",
                },
            });
        }
        if let Some(&f) = PACKET_ONLY.iter().find(|&&f| s.term.keys.get(f).is_some()) {
            return Err(CompileError::NatOutputField {
                chain: plan.table.chains[s.owner.0].name.clone(),
                rule: s.owner.1 + 1,
                field: field::NAMES[f],
            });
        }
    }
    Ok(())
}

fn longest_prefix(prefixes: &[AddrPrefix], f: usize, addr: Ipv4Addr) -> Option<u32> {
    prefixes
        .iter()
        .filter(|p| p.field == f && p.net.contains(addr))
        .max_by_key(|p| p.net.prefix_len)
        .map(|p| p.class)
}
