//! Guards: the matches of a rule that no class can hold, because they keep
//! state or draw a random number (`-m statistic`; later `limit`,
//! `hashlimit`, `connlimit`, `recent`, `quota`).
//!
//! Each such match of a rule gets one guard *number* for the whole ruleset
//! generation (its record in `GUARDS`, its state in `GUARD_STATE`): every
//! slot of the rule — its disjoint terms, the copies of a user-defined
//! chain inlined at several jumps — shares it, as iptables has one match
//! instance per rule. A slot's `RuleAction::guard` names the head of its
//! *guard chain*: first the requirements its term carries (guard `g` was
//! evaluated for this packet and held / failed: `guard_kind::REQUIRE`),
//! then its rule's own guards in match order. Requirement records are
//! interned by (guard, outcome, next), so slots with the same requirements
//! share them.
//!
//! The models of both sides evaluate guards through one [`GuardOracle`]:
//! the reference classifier for each rule whose static matches hold, the
//! compiled one for each slot whose class bits match, as the kernel does.
//! [`GuardState`] keeps nth counts per (table, rule, match) and draws
//! random numbers from a seeded generator, so the same seed gives both
//! sides the same draws when they evaluate the same guards in the same
//! order — which is what the property test checks.

use std::collections::{HashMap, HashSet};

use netbeast_common::{
    GUARD_HOTDROP_ONLY, Guard, Held, MAX_GUARD_CHAIN, MAX_STATEFUL_GUARDS, STATE_SLOTS, guard_kind,
    hashlimit, hashlimit_byte_cost, hashlimit_byte_take, limit_take,
};

use super::PacketView;
use super::lower::Lowering;
use super::reference::RuleRef;
use super::{CompileError, CompiledRuleset};
use crate::rules::model::{Rule, TableName};
use crate::rules::save::{CounterStyle, rule_spec};

/// The guard records of one generation, and who owns each.
#[derive(Default)]
pub(super) struct GuardTable {
    pub records: Vec<Guard>,
    /// For each record, the rule whose match it is (`None` for a
    /// requirement record): (table, rule, index of the match among the
    /// rule's guards).
    pub owners: Vec<Option<(TableName, RuleRef, usize)>>,
    /// For each record that keeps state of its own rule
    /// (`Guard::has_state_slot`), its [`GuardIdentity`]; `None` for the
    /// others.
    pub identities: Vec<Option<GuardIdentity>>,
    /// (required guard, held, next) → requirement record number.
    requirements: HashMap<(u32, bool, u32), u32>,
    /// (table, rule text) → how many rules of that text were numbered so
    /// far (the chain is in the text): the next one's occurrence.
    occurrences: HashMap<(TableName, String), u32>,
    limit: u32,
    /// Records with an identity so far (at most `MAX_STATEFUL_GUARDS`).
    stateful: u32,
}

impl GuardTable {
    pub fn new(limit: u32) -> Self {
        GuardTable {
            limit,
            ..GuardTable::default()
        }
    }

    fn add(
        &mut self,
        guard: Guard,
        owner: Option<(TableName, RuleRef, usize)>,
    ) -> Result<u32, CompileError> {
        if self.records.len() as u32 >= self.limit {
            return Err(CompileError::TooManyGuards {
                limit: self.limit as usize,
            });
        }
        self.records.push(guard);
        self.owners.push(owner);
        self.identities.push(None);
        Ok(self.records.len() as u32 - 1)
    }

    /// Numbers the stateful matches of `rule` (rule `r` of `chain` in
    /// `table`), chained in match order: the rule's own guards.
    ///
    /// For a rule with a hotdrop prefix ([`hotdrop_prefix`]), whose
    /// guards up to the one that can drop the packet are `p` of them, the
    /// prefix's chain is those `p` guards, then a hotdrop test only
    /// ([`GUARD_HOTDROP_ONLY`]) of each guard of the match that can drop
    /// it; the rule's chain then *requires* the first `p` held (the
    /// prefix's slots come first and evaluated them for this packet:
    /// evaluated again, a limit would be spent twice) and evaluates the
    /// rest.
    pub fn own_guards(
        &mut self,
        table: TableName,
        chain: &str,
        r: usize,
        rule: &Rule,
    ) -> Result<OwnGuards, CompileError> {
        let numbers = self.number(table, chain, r, rule)?;
        let Some(prefix) = hotdrop_prefix(rule) else {
            let head = numbers.first().map_or(0, |&g| g + 1);
            return Ok(OwnGuards {
                numbers,
                head,
                prefix: None,
            });
        };
        // The prefix's guards are the rule's first ones: the matches
        // before the one that drops, then that match's.
        let through = rule_guards_through(rule, prefix.matches).count();
        let before = through - prefix.dropping;
        let owner = RuleRef {
            chain: chain.to_string(),
            rule: r,
        };
        let mut tests = Vec::with_capacity(prefix.dropping);
        for (n, &number) in numbers.iter().enumerate().take(through).skip(before) {
            let mut g = self.records[number as usize];
            if g.can_hotdrop() {
                g.negated |= GUARD_HOTDROP_ONLY;
            }
            g.next = 0;
            tests.push(self.add(g, Some((table, owner.clone(), n)))?);
        }
        for pair in tests.windows(2) {
            self.records[pair[0] as usize].next = pair[1] + 1;
        }
        if before > 0 {
            self.records[numbers[before - 1] as usize].next = tests[0] + 1;
        }
        let prefix_head = if before > 0 { numbers[0] } else { tests[0] } + 1;
        let required: Vec<(u32, bool)> = numbers[..before].iter().map(|&g| (g, true)).collect();
        let head = self.chain(&required, numbers[before] + 1)?;
        Ok(OwnGuards {
            numbers,
            head,
            prefix: Some((prefix.matches, prefix_head)),
        })
    }

    /// The records of `rule`'s guards, chained in match order.
    fn number(
        &mut self,
        table: TableName,
        chain: &str,
        r: usize,
        rule: &Rule,
    ) -> Result<Vec<u32>, CompileError> {
        let guards: Vec<Guard> = rule_guards(rule).collect();
        // Rules are numbered in chain order, so the occurrence of a text
        // counts the rules of the same text above this one.
        let text = guards
            .iter()
            .any(Guard::has_state_slot)
            .then(|| rule_spec(chain, rule, CounterStyle::Omit));
        let occurrence = text.as_ref().map(|text| {
            let seen = self.occurrences.entry((table, text.clone())).or_insert(0);
            *seen += 1;
            *seen - 1
        });
        let first = self.records.len() as u32;
        let mut numbers = Vec::with_capacity(guards.len());
        for (n, mut g) in guards.iter().copied().enumerate() {
            // The next record is the next guard of the rule (numbered
            // right after), or none after the last.
            g.next = if n + 1 < guards.len() {
                first + n as u32 + 2
            } else {
                0
            };
            let owner = RuleRef {
                chain: chain.to_string(),
                rule: r,
            };
            let number = self.add(g, Some((table, owner, n)))?;
            if let (true, Some(text), Some(occurrence)) = (g.has_state_slot(), &text, occurrence) {
                if self.stateful >= MAX_STATEFUL_GUARDS {
                    return Err(CompileError::TooManyStatefulGuards {
                        limit: MAX_STATEFUL_GUARDS as usize,
                    });
                }
                self.stateful += 1;
                self.identities[number as usize] = Some(guard_identity(table, text, occurrence, n));
            }
            numbers.push(number);
        }
        Ok(numbers)
    }

    /// The head (`RuleAction::guard`: 1 + record number, 0 for none) of
    /// the chain that checks `requirements`, in order, then goes on to the
    /// rule's own guards starting at `own` (a head too).
    pub fn chain(&mut self, requirements: &[(u32, bool)], own: u32) -> Result<u32, CompileError> {
        let mut next = own;
        for &(g, held) in requirements.iter().rev() {
            next = match self.requirements.get(&(g, held, next)) {
                Some(&n) => n + 1,
                None => {
                    let record = Guard {
                        kind: guard_kind::REQUIRE,
                        next,
                        negated: u32::from(!held),
                        _pad: 0,
                        a: u64::from(g),
                        b: 0,
                        c: 0,
                    };
                    let n = self.add(record, None)?;
                    self.requirements.insert((g, held, next), n);
                    n + 1
                }
            };
        }
        Ok(next)
    }
}

/// Who a guard that keeps state of its own rule is, across ruleset
/// changes: FNV-1a (128-bit) of its table, its rule's text as `-S` prints
/// it (chain included, counters left out), the rule's *occurrence* (how
/// many rules of the same text come before it in the chain) and which of
/// the rule's stateful matches it is. A rule that a change does not touch
/// keeps its identity, wherever it moves in the chain and however often
/// its chain is inlined; a rule whose text changes is a new rule.
pub type GuardIdentity = u128;

fn guard_identity(table: TableName, text: &str, occurrence: u32, n: usize) -> GuardIdentity {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut h = OFFSET;
    // Fields separated by a byte no rule text holds.
    for part in [
        table.as_str().as_bytes(),
        b"\0",
        text.as_bytes(),
        b"\0",
        &occurrence.to_le_bytes(),
        &(n as u32).to_le_bytes(),
    ] {
        for &b in part {
            h = (h ^ u128::from(b)).wrapping_mul(PRIME);
        }
    }
    h
}

/// Where each stateful guard of a running generation keeps its state:
/// identity → state slot (`Guard::c`: the `GUARD_STATE` index and the
/// `CONNLIMIT` lists' key), for guards that keep state of their own rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuardSlots {
    pub slots: HashMap<GuardIdentity, u32>,
    /// How the generation's compile coarsened addresses: the next
    /// compile's first try (`compile::compile_hinted`). Kept with the
    /// slots because both describe the generation the kernel runs, under
    /// the same commit protocol.
    pub coarsened: Option<super::Coarsening>,
}

/// What giving a new generation its state slots changes.
#[derive(Clone, Debug, Default)]
pub struct SlotPlan {
    /// The new generation's slots.
    pub slots: GuardSlots,
    /// Slots that start from nothing: the loader zeroes them (and drops
    /// their connlimit lists) before the switch. No running rule uses
    /// them, so nothing a packet does in between is lost.
    pub fresh: Vec<u32>,
    /// Of those, the slots of connlimit guards.
    pub fresh_connlimit: Vec<u32>,
    /// Slots the previous generation used and the new one does not: freed
    /// after the switch.
    pub freed: Vec<u32>,
    /// Guards that kept the slot (and state) they had.
    pub kept: usize,
}

/// Gives every guard of `compiled` that keeps state of its own rule a
/// state slot (`Guard::c`): the one its identity had in `previous` (the
/// running generation's), else one that generation does not use, so it
/// keeps its state in place across the switch and a new rule never shares
/// a live one. Without `previous` (a lost record) every guard starts fresh
/// in its generation's half of the slots, in order: a running generation
/// placed the same way is not disturbed. (An upgrade from a version whose
/// slots were laid out otherwise makes `GUARD_STATE` anew: its size is
/// the build's.)
pub fn assign_state_slots(
    compiled: &mut CompiledRuleset,
    previous: Option<&GuardSlots>,
) -> SlotPlan {
    let mut plan = SlotPlan::default();
    plan.slots.coarsened = compiled.coarsened;
    let generation = compiled.generation;
    let mut used: HashSet<u32> = previous
        .map(|p| p.slots.values().copied().collect())
        .unwrap_or_default();
    let mut candidate = 0u32;
    // The stateful guards in order: the fallback slots' numbers.
    let mut ordinal = 0u32;
    for (guard, identity) in compiled.guards.iter_mut().zip(&compiled.guard_identities) {
        let Some(identity) = *identity else {
            continue;
        };
        let n = ordinal;
        ordinal += 1;
        let kept = previous.and_then(|p| p.slots.get(&identity).copied());
        let slot = match (previous, kept) {
            (_, Some(slot)) => {
                plan.kept += 1;
                slot
            }
            // The generation's own half: what the other generation's
            // fallback never takes.
            (None, None) => generation * MAX_STATEFUL_GUARDS + n,
            (Some(_), None) => {
                // The running generation uses at most MAX_STATEFUL_GUARDS
                // slots and this one at most as many: STATE_SLOTS holds
                // both.
                while used.contains(&candidate) {
                    candidate += 1;
                }
                debug_assert!(candidate < STATE_SLOTS);
                candidate
            }
        };
        if kept.is_none() {
            used.insert(slot);
            plan.fresh.push(slot);
            if guard.kind == guard_kind::CONNLIMIT {
                plan.fresh_connlimit.push(slot);
            }
        }
        guard.c = u64::from(slot);
        plan.slots.slots.insert(identity, slot);
    }
    if let Some(previous) = previous {
        plan.freed = previous
            .slots
            .iter()
            .filter(|(identity, _)| !plan.slots.slots.contains_key(*identity))
            .map(|(_, &slot)| slot)
            .collect();
        plan.freed.sort_unstable();
    }
    plan
}

/// A rule's guards as the compiler numbered them (`GuardTable::own_guards`).
pub(super) struct OwnGuards {
    /// The records of the rule's guards, in match order.
    pub numbers: Vec<u32>,
    /// The head of the chain the rule's slots walk (`RuleAction::guard`:
    /// 1 + record number, 0 for none).
    pub head: u32,
    /// The rule's hotdrop prefix ([`hotdrop_prefix`]): its number of
    /// matches, and the head of the chain its slots walk.
    pub prefix: Option<(usize, u32)>,
}

/// A rule cut after its first match that can drop the packet on the spot
/// (`Guard::can_hotdrop`: xt_sctp's chunk walk, xt_dccp), when a later
/// match of the rule can fail. iptables tests a rule's matches in order,
/// so such a match drops a packet it cannot read before the later ones
/// are tested; the classifier tests a rule's static matches (a later
/// `-m mac`, `-m iprange`) before its guards. The compiler puts the slots
/// of the cut rule ahead of the rule's own, with that match's guards
/// testing only whether they drop the packet (`GUARD_HOTDROP_ONLY`): they
/// never hold, so the cut rule never counts or acts, but it drops what
/// iptables drops (docs/ARCHITECTURE.md, "Guards").
pub(super) struct HotdropPrefix {
    /// The prefix is the rule's address part and its first `matches`
    /// matches (through the one that can drop the packet), no target.
    pub matches: usize,
    /// How many guards that match has.
    pub dropping: usize,
}

pub(super) fn hotdrop_prefix(rule: &Rule) -> Option<HotdropPrefix> {
    // Only `-m sctp --chunk-types` and `-m dccp` tests can: a cheap test
    // first, as every rule comes here.
    if !rule.matches.iter().any(|m| {
        matches!(m, crate::rules::model::Match::Ports(p) if p.sctp_chunks.is_some() || p.dccp.is_some())
    }) {
        return None;
    }
    let lowered: Vec<Lowering> = rule.matches.iter().map(|m| m.ext().lower()).collect();
    let guards_of = |l: &Lowering| match l {
        Lowering::Guard(g) => vec![*g],
        Lowering::Guarded(_, guards) => guards.clone(),
        Lowering::Static(_) => Vec::new(),
    };
    let k = lowered
        .iter()
        .position(|l| guards_of(l).iter().any(Guard::can_hotdrop))?;
    // A later match that always holds (`-m comment`) cannot fail.
    if lowered[k + 1..].iter().all(|l| *l == Lowering::always()) {
        return None;
    }
    Some(HotdropPrefix {
        matches: k + 1,
        dropping: guards_of(&lowered[k]).len(),
    })
}

/// The guards of a rule's stateful matches, in match order, unchained.
pub(super) fn rule_guards(rule: &Rule) -> impl Iterator<Item = Guard> + '_ {
    // A `-j SET`'s work last, so it runs only once every match held.
    rule_guards_through(rule, rule.matches.len()).chain(target_guards(rule))
}

/// The guards of a rule's addresses and of its first `matches` matches.
pub(super) fn rule_guards_through(rule: &Rule, matches: usize) -> impl Iterator<Item = Guard> + '_ {
    // The addresses first, as iptables tests them before any match: a
    // stateful match after them sees only the packets they let through.
    address_guards(rule).chain(
        rule.matches[..matches]
            .iter()
            .flat_map(|m| match m.ext().lower() {
                Lowering::Guard(guard) => vec![guard],
                Lowering::Guarded(_, guards) => guards,
                Lowering::Static(_) => Vec::new(),
            }),
    )
}

/// The guards that do a target's work (`-j SET`): they always hold.
pub(super) fn target_guards(rule: &Rule) -> impl Iterator<Item = Guard> + '_ {
    match &rule.target {
        crate::rules::model::Target::Set(s) => s.guards(),
        _ => Vec::new(),
    }
    .into_iter()
}

/// `-s`/`-d` under a non-contiguous netmask: no prefix holds exactly the
/// addresses such a mask takes, so the classifier holds the prefix of its
/// leading ones (`term::rule_terms`, not for `!`) and this guard the whole
/// comparison (docs/ARCHITECTURE.md, "Non-contiguous netmasks").
pub(super) fn address_guards(rule: &Rule) -> impl Iterator<Item = Guard> + '_ {
    [(0u32, &rule.source), (1, &rule.destination)]
        .into_iter()
        .filter_map(|(side, net)| {
            let net = net.as_ref()?;
            let mask = net.value.mask?;
            Some(Guard {
                kind: guard_kind::ADDR_MASK,
                next: 0,
                negated: u32::from(net.negated),
                _pad: side,
                a: u64::from(u32::from(mask)) << 32 | u64::from(u32::from(net.value.addr)),
                b: 0,
                c: 0,
            })
        })
}

/// Records a slot's guard chain may hold, checked by the compiler.
pub const MAX_CHAIN: usize = MAX_GUARD_CHAIN as usize;

/// Decides a rule's stateful matches for the userspace models.
pub trait GuardOracle {
    /// Evaluates match `n` (0-based among `rule`'s guards) of `rule` in
    /// `table` for the current packet: advances its state, draws what it
    /// draws, and says whether it holds (or drops the packet).
    fn decide(
        &mut self,
        table: TableName,
        rule: &RuleRef,
        n: usize,
        guard: &Guard,
        pkt: &PacketView,
    ) -> Held;
}

/// The state of every guard as the kernel keeps it: nth counts and limit
/// buckets per rule and match (one per rule, shared by all its slots), a
/// random number generator (splitmix64, seeded) standing in for
/// `bpf_get_prandom_u32`, and a clock standing in for `bpf_ktime_get_ns`
/// that only [`GuardState::advance`] moves.
#[derive(Clone, Debug, Default)]
pub struct GuardState {
    counts: HashMap<(TableName, RuleRef, usize), u64>,
    rng: u64,
    now: u64,
    /// `-m recent` lists by name number: the models have no packet, so
    /// one address per list (stamps, newest last).
    recent: HashMap<u32, Vec<u64>>,
    /// Bytes-mode `-m hashlimit` refills spent, per rule and match.
    refills: HashMap<(TableName, RuleRef, usize), u64>,
}

impl GuardState {
    pub fn new(seed: u64) -> Self {
        GuardState {
            counts: HashMap::new(),
            rng: seed,
            // Not 0: the kernel's clock counts from boot.
            now: 1,
            recent: HashMap::new(),
            refills: HashMap::new(),
        }
    }

    /// Moves the clock on by `ns` nanoseconds (limit buckets refill).
    pub fn advance(&mut self, ns: u64) {
        self.now += ns;
    }

    fn random(&mut self) -> u32 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as u32
    }
}

impl GuardState {
    /// `-m recent` as the kernel's `netbeast_recent` decides it (without
    /// `--rttl`: the models see one TTL), for one address per list.
    fn recent(&mut self, guard: &Guard) -> bool {
        use netbeast_common::{RECENT_STAMPS, recent as bits};
        let flags = guard._pad;
        let name = guard.c as u32;
        let mut ret = guard.negated != 0;
        let now = self.now;
        let Some(stamps) = self.recent.get_mut(&name) else {
            if flags & bits::SET == 0 {
                return ret;
            }
            self.recent.insert(name, vec![now]);
            return !ret;
        };
        let mut remove = false;
        if flags & bits::SET != 0 {
            ret = !ret;
        } else if flags & bits::REMOVE != 0 {
            remove = true;
            ret = !ret;
        } else if flags & (bits::CHECK | bits::UPDATE) != 0 {
            let since = now.saturating_sub(guard.a * 1_000_000_000);
            let hits = stamps
                .iter()
                .filter(|&&t| guard.a == 0 || t >= since)
                .count() as u64;
            if hits >= guard.b.max(1) {
                ret = !ret;
            }
            if flags & bits::REAP != 0 && stamps.last().is_some_and(|&t| t < since) {
                remove = true;
            }
        }
        if remove {
            self.recent.remove(&name);
        } else if flags & bits::SET != 0 || (flags & bits::UPDATE != 0 && ret) {
            stamps.push(now);
            if stamps.len() > RECENT_STAMPS {
                stamps.remove(0);
            }
        }
        ret
    }
}

impl GuardOracle for GuardState {
    fn decide(
        &mut self,
        table: TableName,
        rule: &RuleRef,
        n: usize,
        guard: &Guard,
        pkt: &PacketView,
    ) -> Held {
        match packet_guard(guard, pkt) {
            Some(held) => held,
            None => Held::of(self.holds(table, rule, n, guard, pkt)),
        }
    }
}

impl GuardState {
    /// [`GuardOracle::decide`] for the guards that keep state.
    fn holds(
        &mut self,
        table: TableName,
        rule: &RuleRef,
        n: usize,
        guard: &Guard,
        pkt: &PacketView,
    ) -> bool {
        if guard.kind == guard_kind::RECENT {
            return self.recent(guard);
        }
        if guard.kind == guard_kind::SET_WRITE {
            // A target's work, into sets the models do not hold.
            return true;
        }
        if guard.kind == guard_kind::SET {
            // The models hold no ipset: every set is empty to them.
            return guard.negated != 0;
        }
        if guard.kind == guard_kind::CONNLIMIT {
            // The models have no conntrack: each packet is its address's
            // only connection (what the kernel counts for a first one).
            return (1 > guard.a) != (guard.negated != 0);
        }
        if guard.kind == guard_kind::HASHLIMIT
            && guard._pad & (hashlimit::BYTES | hashlimit::RATE_MATCH) == hashlimit::BYTES
        {
            // Bytes mode: the packet's length, and the refills its burst
            // has spent, as the kernel keeps them.
            let key = (table, rule.clone(), n);
            let tat = self.counts.get(&key).copied().unwrap_or(0);
            let used = self.refills.entry(key.clone()).or_insert(0);
            let cost = hashlimit_byte_cost(u32::from(pkt.header.length), guard.a);
            let under = match hashlimit_byte_take(tat, *used, self.now, cost, guard.b) {
                Some((new, refilled)) => {
                    *used += u64::from(refilled);
                    self.counts.insert(key, new);
                    true
                }
                None => false,
            };
            return under != (guard.negated != 0);
        }
        if guard.kind == guard_kind::LIMIT || guard.kind == guard_kind::HASHLIMIT {
            // The bucket's state, as the kernel keeps it in GUARD_STATE;
            // hashlimit's models have no packet: one bucket per rule (the
            // kernel's for a mode of none), evaluated in the same order.
            let tat = self.counts.entry((table, rule.clone(), n)).or_insert(0);
            let invert = guard.kind == guard_kind::HASHLIMIT && guard.negated != 0;
            let under = match limit_take(*tat, self.now, guard.a, guard.b) {
                Some(new) => {
                    *tat = new;
                    true
                }
                None => false,
            };
            return under != invert;
        }
        let count = if guard.counts() {
            let c = self.counts.entry((table, rule.clone(), n)).or_insert(0);
            let before = *c;
            *c += 1;
            before
        } else {
            0
        };
        let random = if guard.kind == guard_kind::STATISTIC_RANDOM {
            self.random()
        } else {
            0
        };
        guard.holds(count, random)
    }
}

/// The guards that are functions of the packet and its connection, as the
/// kernel's `packet_guard` decides them (`-m conntrack`'s tuples, protocol
/// and expiry, `--tcp-option`, the SCTP chunks, DCCP's types and options,
/// ...); `None` for the other kinds.
pub fn packet_guard(guard: &Guard, pkt: &PacketView) -> Option<Held> {
    match guard.kind {
        guard_kind::SCTP_CHUNKS => Some(guard.sctp_chunks(&pkt.sctp_chunks())),
        guard_kind::DCCP => Some(guard.dccp(&pkt.dccp_facts())),
        _ => packet_test(guard, pkt).map(Held::of),
    }
}

/// [`packet_guard`]'s kinds that only hold or fail.
fn packet_test(guard: &Guard, pkt: &PacketView) -> Option<bool> {
    use netbeast_common::{ct_match, ct_state};
    match guard.kind {
        guard_kind::TCP_OPTION => Some(guard.holds_tcp_option(pkt.tcp_options().as_ref())),
        guard_kind::IPV6_HEADER => Some(guard.holds_ipv6_header(&pkt.header.ipv6_ext)),
        guard_kind::IPV6_RT => Some(guard.holds_ipv6_rt(&pkt.header.ipv6_ext)),
        guard_kind::IPV6_FRAG => Some(guard.holds_ipv6_frag(&pkt.header.ipv6_ext)),
        guard_kind::ADDR_MASK => Some(guard.holds_addr_mask(pkt.src.into(), pkt.dst.into())),
        // The models run no MARK rule: their packets keep the mark they
        // came with, which is none (0), as a packet from the wire.
        guard_kind::MARK => Some(guard.holds_mark(0)),
        // Nor any CONNMARK rule: a packet with a connection has mark 0
        // there, one without (INVALID, UNTRACKED) none, which never
        // matches.
        guard_kind::CONNMARK => {
            let state = pkt.ct_state & ct_state::STATE_MASK;
            let connected = matches!(
                state,
                ct_state::NEW | ct_state::ESTABLISHED | ct_state::RELATED
            );
            Some(guard.holds_connmark(connected.then_some(0)))
        }
        guard_kind::CT_TUPLE | guard_kind::CT_PROTO_EXPIRE => {
            let state = pkt.ct_state & ct_state::STATE_MASK;
            if !matches!(
                state,
                ct_state::NEW | ct_state::ESTABLISHED | ct_state::RELATED
            ) {
                return Some(true);
            }
            let c = &pkt.header.connection;
            Some(if guard.kind == guard_kind::CT_TUPLE {
                let tuple = if guard._pad & ct_match::REPLY != 0 {
                    &c.reply
                } else {
                    &c.orig
                };
                guard.holds_ct_tuple(tuple)
            } else {
                guard.holds_ct_proto_expire(c.protocol, c.expires)
            })
        }
        _ => None,
    }
}
