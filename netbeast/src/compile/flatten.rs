//! User-defined chains, compiled away: each built-in chain becomes one flat
//! list of slots that the kernel searches for the first match as before, so
//! a jump costs nothing per packet.
//!
//! Walking a chain keeps `reach`, the packets that get to the current rule
//! (disjoint [`Term`]s). A rule becomes the slots `reach AND rule`, with its
//! target and its own counter. Then, by target:
//!
//! - ACCEPT, DROP, REJECT: nothing more; first-match semantics means a
//!   packet that took one of these slots never sees a later one.
//! - no target: a slot without a verdict (the kernel counts it and goes on).
//! - `-j CHAIN`: a slot without a verdict (the jump's counter), then CHAIN's
//!   rules walked with `reach AND rule`, inline. A packet that comes back
//!   (CHAIN ended, or RETURNed) simply goes on with the slots that follow,
//!   which are the rest of this chain.
//! - `-g CHAIN`: the same, but the packets that went there must not come
//!   back to this chain: the rest of it gets `reach AND NOT rule`. What
//!   follows this chain's slots is its caller's rest (or the policy), which
//!   is where iptables returns them.
//! - RETURN: a slot without a verdict, and `reach AND NOT rule` for the
//!   rest of the chain; in a built-in chain that leads to the policy, as in
//!   iptables.
//!
//! `NOT rule` is a union of terms (see `term.rs`), so a conditional RETURN
//! or goto multiplies the slots of the rules after it by the number of
//! atoms of its condition, less the cases other conditions rule out.
//! [`MAX_TERMS_PER_RULE`] bounds that; past it the chain is refused with an
//! error naming the rule.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    rc::Rc,
};

use netbeast_common::{LogTarget, NatAddrs6, NatTarget, RuleAction, target};

use super::guards::{self, GuardTable};
use super::steps::Steps;
use super::term::{self, Term};
use super::{CompileError, Limits, action};
use crate::rules::model::{
    Chain, Family, Ipv4Net, Policy, Rule, Ruleset, Table, TableName, Target,
};

/// How many disjoint cases (terms) the packets reaching one rule may be
/// split into by conditional RETURN and goto rules before it, and how many
/// slots one rule may become. Past it the chain is refused: the slots
/// would crowd out the per-chain limit anyway.
pub const MAX_TERMS_PER_RULE: usize = 1024;

#[cfg(test)]
thread_local! {
    /// How many walks this thread (a test's) copied rather than walked.
    pub(super) static REUSED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How deep the compiler follows jumps; the command layer refuses rulesets
/// past `rules::command::MAX_JUMP_DEPTH` (and loops) before they get here.
const MAX_DEPTH: usize = crate::rules::command::MAX_JUMP_DEPTH;

/// The RETURN and goto rules of a chain walked so far, as their terms,
/// indexed by their positive source prefix: a rule only needs the `NOT` of
/// those whose source prefixes can meet its own, so an allow list of
/// thousands of `-s A -j RETURN` costs O(n log n), not O(n²).
#[derive(Default)]
struct Exits<'t, 'a> {
    /// Borrowed from `Prepared`, or owned when the walk took the rule's
    /// terms (a built-in chain's).
    list: Vec<Cow<'t, [Term<'a>]>>,
    /// (network address, prefix length) of a positive source atom → the
    /// guards whose every term has one.
    by_source: BTreeMap<(u32, u8), Vec<usize>>,
    /// Guards with a term that has no positive source atom.
    other: Vec<usize>,
}

impl<'t, 'a> Exits<'t, 'a> {
    fn push(&mut self, terms: Cow<'t, [Term<'a>]>) {
        let n = self.list.len();
        let sources: Option<Vec<Ipv4Net>> = terms.iter().map(Term::positive_source).collect();
        self.list.push(terms);
        match sources {
            Some(sources) => {
                for s in sources {
                    let ids = self
                        .by_source
                        .entry((u32::from(s.addr), s.prefix_len))
                        .or_default();
                    if ids.last() != Some(&n) {
                        ids.push(n);
                    }
                }
            }
            None => self.other.push(n),
        }
    }

    /// The guards that may meet one of `terms`, in the order they came.
    fn relevant(&self, terms: &[Term<'a>]) -> Vec<&[Term<'a>]> {
        let mut ids: Vec<usize> = Vec::new();
        for t in terms {
            let Some(p) = t.positive_source() else {
                return self.list.iter().map(|g| &**g).collect();
            };
            ids.extend(&self.other);
            // Guards on a prefix that covers p (or is p)...
            for len in 0..=p.prefix_len {
                let q = Ipv4Net::new(p.addr, len);
                if let Some(found) = self.by_source.get(&(u32::from(q.addr), len)) {
                    ids.extend(found);
                }
            }
            // ...or that p covers: they start inside p and are longer.
            let first = u32::from(p.addr);
            let last = first | !crate::rules::model::prefix_mask(p.prefix_len);
            for (&(_, len), found) in self.by_source.range((first, 0)..=(last, 32)) {
                if len > p.prefix_len {
                    ids.extend(found);
                }
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter().map(|n| &*self.list[n]).collect()
    }
}

/// The slots of a user-defined chain a built-in chain jumps to, kept for
/// the table's other built-in chains: kube-proxy's nat PREROUTING and
/// OUTPUT both jump to KUBE-SERVICES, 110,000 slots at 10,000 services,
/// and walking them twice was half a sync's flatten. The walk of a chain
/// depends on its table, the chain, the terms that enter it and the
/// built-in chain only through the counters (relative to the built-in
/// chain's base: shifted), the checks of targets that are refused in some
/// built-in chains (made again for each rule the slots stand for) and the
/// slot limit (checked on the total). Guard chains are interned: the first
/// walk's heads are the second's.
pub(super) struct Walked<'a> {
    table: usize,
    callee: usize,
    entry: Vec<Term<'a>>,
    /// The built-in chain (`chain::*` order) whose plan holds the slots,
    /// and where.
    plan: usize,
    slots: std::ops::Range<usize>,
    /// That chain's `ChainConfig::counter_base`.
    counter_base: u32,
    steps: Steps,
}

/// A walk is kept for reuse from this many slots on: smaller ones cost
/// less to walk again than to look up.
pub(super) const REUSED_WALK_SLOTS: usize = 256;

/// What a [`Flattener`] shares with the walks of the built-in chains
/// before it.
pub(super) struct Reuse<'r, 'a> {
    pub walked: &'r mut Vec<Walked<'a>>,
    /// The plans of the built-in chains flattened so far.
    pub earlier: &'r [super::ChainPlan<'a>],
    /// The table's place in `ALL_TABLES`.
    pub table: usize,
    /// This built-in chain's, in `chain::*` order.
    pub builtin: usize,
}

/// One rule slot: a term, what the first packet to match it gets, and the
/// rule it stands for. The term is shared: a walk another built-in chain
/// reuses ([`Walked`]) copies its slots without copying their terms (nat
/// OUTPUT's 110,000 slots of kube-proxy's services are PREROUTING's), and
/// the slot vector stays small while it grows.
pub(super) struct Slot<'a> {
    pub term: Rc<Term<'a>>,
    pub action: RuleAction,
    /// (index of the chain in the table, 0-based rule index).
    pub owner: (usize, usize),
}

/// A hotdrop prefix's terms and the head of its guard chain.
type HotdropSlots<'a> = (Vec<Term<'a>>, u32);

/// What compiling one table needs from every rule, computed once.
pub(super) struct Prepared<'a> {
    pub table: &'a Table,
    index: HashMap<&'a str, usize>,
    /// `terms[chain][rule]`: the rule's condition.
    terms: Vec<Vec<Vec<Term<'a>>>>,
    /// Per chain of the table: the number of its first rule counter among
    /// the user-defined chains' counters (`None` for built-in chains).
    user_counter: Vec<Option<u32>>,
    /// `nat_args[chain][rule]`: the number of the rule's translation in
    /// the ruleset's `nat_targets`, or of a LOG rule in its `log_targets`
    /// (0 for other rules).
    nat_args: Vec<Vec<u32>>,
    /// `own_guards[chain][rule]`: the numbers of the rule's guards (its
    /// stateful matches), in match order; empty for most rules.
    own_guards: Vec<Vec<Vec<u32>>>,
    /// `own_head[chain][rule]`: the head of the guard chain the rule's
    /// slots walk (`guards::OwnGuards::head`).
    own_head: Vec<Vec<u32>>,
    /// `hotdrop[chain][rule]`: for a rule with a hotdrop prefix
    /// (`guards::hotdrop_prefix`), the prefix's terms and the head of its
    /// guard chain: slots put ahead of the rule's.
    hotdrop: Vec<Vec<Option<HotdropSlots<'a>>>>,
    /// `held[chain][rule]`: for a rule with guards, its terms AND "every
    /// own guard held" — what its jump passes on to the callee, and what
    /// the rules after its RETURN or goto get the `NOT` of.
    held: Vec<Vec<Option<Vec<Term<'a>>>>>,
    /// The user-defined chains' counters numbered so far, this table's
    /// included: where the next table's start.
    pub user_counters_end: u32,
}

impl<'a> Prepared<'a> {
    /// Checks every rule and computes its terms. The table's user-defined
    /// chains' counters are numbered from `first_user_counter` on (the nat
    /// table's follow the filter table's); its translations are added to
    /// `nat_targets`.
    pub fn new(
        table: &'a Table,
        family: Family,
        // The rule the compile takes for rule `r` of chain `c` (a
        // coarsened copy, or the rule itself).
        rule_of: impl Fn(usize, usize, &'a Rule) -> &'a Rule,
        first_user_counter: u32,
        nat_targets: &mut NatTargets,
        log_targets: &mut Vec<LogTarget>,
        mark_targets: &mut Vec<netbeast_common::MarkTarget>,
        connmark_targets: &mut Vec<netbeast_common::ConnmarkTarget>,
        guard_table: &mut GuardTable,
        limits: Limits,
    ) -> Result<Self, CompileError> {
        let mut terms = Vec::with_capacity(table.chains.len());
        let mut nat_args = Vec::with_capacity(table.chains.len());
        let mut own_guards = Vec::with_capacity(table.chains.len());
        let mut own_head = Vec::with_capacity(table.chains.len());
        let mut hotdrop = Vec::with_capacity(table.chains.len());
        let mut held = Vec::with_capacity(table.chains.len());
        for (c, chain) in table.chains.iter().enumerate() {
            let mut rules = Vec::with_capacity(chain.rules.len());
            let mut args = Vec::with_capacity(chain.rules.len());
            let mut owns = Vec::with_capacity(chain.rules.len());
            let mut heads = Vec::with_capacity(chain.rules.len());
            let mut drops = Vec::with_capacity(chain.rules.len());
            let mut helds = Vec::with_capacity(chain.rules.len());
            for (i, rule) in chain.rules.iter().enumerate() {
                let rule = rule_of(c, i, rule);
                let invalid = |problem: String| CompileError::InvalidRule {
                    chain: chain.name.clone(),
                    rule: i + 1,
                    problem,
                };
                super::validate_rule(rule).map_err(invalid)?;
                validate_target(table.name, &rule.target).map_err(invalid)?;
                validate_family(family, rule).map_err(invalid)?;
                let guards::OwnGuards {
                    numbers: own,
                    head,
                    prefix,
                } = guard_table.own_guards(table.name, &chain.name, i, rule)?;
                heads.push(head);
                drops.push(
                    prefix.map(|(matches, head)| (term::rule_terms_through(rule, matches), head)),
                );
                let rule_terms = term::rule_terms(rule);
                helds.push((!own.is_empty()).then(|| {
                    let all_held = Term {
                        req: own.iter().map(|&g| (g, true)).collect(),
                        ..Term::default()
                    };
                    term::and_all(&rule_terms, &[all_held], limits.terms_per_rule)
                }));
                owns.push(own);
                rules.push(rule_terms);
                args.push(match (&rule.target, nat_target(&rule.target)) {
                    (_, Some(wanted)) => {
                        let addrs6 = crate::rules::target::nat::kernel6(&rule.target);
                        nat_targets.intern(wanted, addrs6, limits.nat_targets)?
                    }
                    // Each LOG rule its own entry, numbered in table,
                    // chain and rule order: the number finds the rule.
                    (Target::Log(log), None) => {
                        let n = log_targets.len() as u32;
                        if n >= limits.log_targets {
                            return Err(CompileError::TooManyLogTargets {
                                limit: limits.log_targets as usize,
                            });
                        }
                        log_targets.push(log.kernel(n));
                        n
                    }
                    (Target::Synproxy(synproxy), None) => synproxy.kernel(),
                    // One entry per distinct operation (kube-proxy's one
                    // `--or-mark 0x4000` serves every service).
                    (Target::Mark(mark), None) => {
                        let kernel = mark.kernel();
                        match mark_targets.iter().position(|m| *m == kernel) {
                            Some(n) => n as u32,
                            None => {
                                let n = mark_targets.len() as u32;
                                if n >= limits.mark_targets {
                                    return Err(CompileError::TooManyMarkTargets {
                                        limit: limits.mark_targets as usize,
                                    });
                                }
                                mark_targets.push(kernel);
                                n
                            }
                        }
                    }
                    // Likewise one entry per distinct CONNMARK operation.
                    (Target::Connmark(connmark), None) => {
                        let kernel = connmark.kernel();
                        match connmark_targets.iter().position(|m| *m == kernel) {
                            Some(n) => n as u32,
                            None => {
                                let n = connmark_targets.len() as u32;
                                if n >= limits.connmark_targets {
                                    return Err(CompileError::TooManyConnmarkTargets {
                                        limit: limits.connmark_targets as usize,
                                    });
                                }
                                connmark_targets.push(kernel);
                                n
                            }
                        }
                    }
                    _ => 0,
                });
            }
            terms.push(rules);
            nat_args.push(args);
            own_guards.push(owns);
            own_head.push(heads);
            hotdrop.push(drops);
            held.push(helds);
        }
        let mut user_counter = Vec::with_capacity(table.chains.len());
        let mut next = first_user_counter;
        for chain in &table.chains {
            if chain.policy.is_some() {
                user_counter.push(None);
            } else {
                user_counter.push(Some(next));
                next += chain.rules.len() as u32;
            }
        }
        if next > limits.ruleset_counters {
            return Err(CompileError::TooManyRulesetRules {
                rules: next as usize,
                limit: limits.ruleset_counters as usize,
            });
        }
        Ok(Prepared {
            table,
            index: table
                .chains
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.as_str(), i))
                .collect(),
            terms,
            user_counter,
            nat_args,
            own_guards,
            own_head,
            hotdrop,
            held,
            user_counters_end: next,
        })
    }

    pub fn chain_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The rules' terms of the built-in chain `name`, moved out for its
    /// one walk (`Flattener::run`): nothing can jump to a chain with a
    /// policy. `None` when the table has no such chain with a policy.
    pub fn take_terms(&mut self, name: &str) -> Option<Vec<Vec<Term<'a>>>> {
        let c = self.chain_index(name)?;
        self.table.chains[c]
            .policy
            .is_some()
            .then(|| std::mem::take(&mut self.terms[c]))
    }
}

/// A rule of the other family's addresses, or (IPv6) with what the IPv6
/// data plane does not have yet: refused for a hand-edited rule file as
/// the parser refuses it.
fn validate_family(family: Family, rule: &Rule) -> Result<(), String> {
    match family {
        Family::V4 if rule.source6.is_some() || rule.destination6.is_some() => {
            Err("an IPv6 address in an IPv4 rule".into())
        }
        Family::V6 if rule.source.is_some() || rule.destination.is_some() => {
            Err("an IPv4 address in an IPv6 rule".into())
        }
        Family::V6 if rule.fragment.is_some() => Err("-f in an IPv6 rule".into()),
        Family::V6 => crate::rules::parse::check_ipv6_rule(&rule.matches, &rule.target)
            .map_err(|e| e.to_string()),
        Family::V4 => Ok(()),
    }
}

/// Targets the table refuses (their module's tables), checked again here
/// because a wrong one would make the kernel act on a packet in a hook
/// that cannot do it.
fn validate_target(table: TableName, target: &Target) -> Result<(), String> {
    match target.module() {
        Some(module) if !module.tables.contains(&table) => Err(match table {
            TableName::Filter | TableName::Raw | TableName::Mangle => format!(
                "-j {} is a target of the {} table, not of the {} table",
                module.name,
                module.tables.first().map_or("", |t| t.as_str()),
                table.as_str()
            ),
            TableName::Nat => format!(
                "-j {} filters, which the nat table does not (iptables refuses it there too)",
                module.name
            ),
        }),
        _ => Ok(()),
    }
}

/// The kernel's form of a nat rule's translation.
fn nat_target(target: &Target) -> Option<NatTarget> {
    crate::rules::target::nat::kernel(target)
}

/// The translations of a ruleset, each once: rules that translate alike
/// share an entry.
#[derive(Default)]
pub(super) struct NatTargets {
    pub list: Vec<NatTarget>,
    /// The IPv6 addresses of each entry of `list` (zero for IPv4's).
    pub addrs6: Vec<NatAddrs6>,
    /// The whole translation → number.
    numbers: HashMap<(NatTarget, NatAddrs6), u32>,
}

impl NatTargets {
    fn intern(
        &mut self,
        nat: NatTarget,
        addrs6: Option<NatAddrs6>,
        limit: u32,
    ) -> Result<u32, CompileError> {
        let addrs6 = addrs6.unwrap_or_default();
        let key = (nat, addrs6);
        if let Some(&n) = self.numbers.get(&key) {
            return Ok(n);
        }
        if self.list.len() as u32 >= limit {
            return Err(CompileError::TooManyNatTargets {
                limit: limit as usize,
            });
        }
        let n = self.list.len() as u32;
        self.list.push(nat);
        self.addrs6.push(addrs6);
        self.numbers.insert(key, n);
        Ok(n)
    }
}

/// The counters of user-defined chains' rules, as the kernel numbers them
/// (from `ChainConfig::user_counter_base`, see
/// `netbeast_common::counter_layout`): each user-defined chain of each
/// table in `ALL_TABLES` order (`Ruleset::tables`), in table order, with
/// the number of its first rule's counter.
pub fn user_chain_counters(ruleset: &Ruleset) -> Vec<(Family, TableName, &Chain, u32)> {
    let mut next = 0;
    ruleset
        .tables()
        .into_iter()
        .flat_map(|(family, table)| {
            table
                .chains
                .iter()
                .filter(|c| c.policy.is_none())
                .map(move |c| (family, table.name, c))
        })
        .map(|(family, table, c)| {
            let first = next;
            next += c.rules.len() as u32;
            (family, table, c, first)
        })
        .collect()
}

/// The packets that enter a chain's walk.
enum Entry<'a> {
    /// Every packet (a built-in chain), with its rules' terms, which the
    /// walk moves into the slots.
    All(Vec<Vec<Term<'a>>>),
    /// Those of these terms (a jump's); the rules' terms stay in
    /// `Prepared` and are copied into each product.
    Terms(Vec<Term<'a>>),
}

/// Flattens one built-in chain into slots.
pub(super) struct Flattener<'p, 'g, 'r, 'a> {
    prepared: &'p Prepared<'a>,
    guard_table: &'g mut GuardTable,
    /// The built-in chain's `ChainConfig::counter_base` and the user
    /// chains' `user_counter_base`: a user chain's rule `n` counts at
    /// `user_counter_base + n`, relative to the chain's base.
    counters: (u32, u32),
    name: &'static str,
    limits: Limits,
    reuse: Reuse<'r, 'a>,
    pub slots: Vec<Slot<'a>>,
}

impl<'p, 'g, 'r, 'a> Flattener<'p, 'g, 'r, 'a> {
    pub fn new(
        prepared: &'p Prepared<'a>,
        guard_table: &'g mut GuardTable,
        counters: (u32, u32),
        name: &'static str,
        limits: Limits,
        reuse: Reuse<'r, 'a>,
    ) -> Self {
        Flattener {
            prepared,
            guard_table,
            counters,
            name,
            limits,
            reuse,
            slots: Vec::new(),
        }
    }

    /// The slots of the built-in chain `name`, its policy (a chain missing
    /// from the table is empty with an ACCEPT policy), and how many steps
    /// (slots without a verdict, guarded slots) one packet takes at most.
    ///
    /// `terms` are the chain's rules' terms (`Prepared::take_terms`);
    /// `None`: they are in `Prepared`.
    pub fn run(
        mut self,
        terms: Option<Vec<Vec<Term<'a>>>>,
    ) -> Result<(Vec<Slot<'a>>, u32, Steps), CompileError> {
        let Some(chain) = self.prepared.chain_index(self.name) else {
            return Ok((Vec::new(), target::ACCEPT, Steps::default()));
        };
        let policy = match self.prepared.table.chains[chain].policy {
            Some(Policy::Accept) | None => target::ACCEPT,
            Some(Policy::Drop) => target::DROP,
        };
        // A slot per rule at least: the vector is not grown (and its
        // slots of some 200 bytes copied) a dozen times at 10,000 rules.
        self.slots
            .reserve(self.prepared.table.chains[chain].rules.len());
        let entry = match terms {
            Some(terms) => Entry::All(terms),
            None => Entry::Terms(vec![Term::default()]),
        };
        // Checked against the kernel's budget once the classes are built
        // (`steps.rs`): they can bound it more tightly.
        let steps = self.walk(chain, entry, &mut vec![chain])?;
        Ok((self.slots, policy, steps))
    }

    /// The slots of `chain`'s rules for the packets in `entry` (the
    /// packets that enter the chain); `path` holds the chains entered to get
    /// here (for loops and messages).
    ///
    /// The packets that reach rule `r` are `entry AND NOT g` for every
    /// conditional RETURN or goto `g` before it. That is computed per rule,
    /// starting from the rule's own terms, rather than once for all later
    /// rules: most of a rule's conditions contradict or imply most atoms of
    /// the negations, so the cases stay few.
    ///
    /// Returns how many slots without a verdict one packet can act on in
    /// this chain (and those it enters), at most: the kernel's search takes
    /// a step for each, and has `MAX_NONTERMINATING_RULES` of them. A packet
    /// takes at most one slot per rule, and none of a chain's rules after a
    /// RETURN or goto it took (they carry `NOT` that rule), so a whole allow
    /// list of RETURNs costs one.
    ///
    /// Guards (stateful matches) change three things. A slot with a guard
    /// chain (its rule's own guards, or requirements its term carries) may
    /// be reached and passed without acting (a guard failed): it is a step
    /// of its own (`Steps::guarded`), and a guarded verdict does not end
    /// the chain. A guarded jump passes "its guards held" on to the callee
    /// (requirements in the callee's terms, checked against the outcome the
    /// jump's slot recorded, never evaluated again). A guarded RETURN or
    /// goto gives the later rules `NOT (static AND held)`: their packets
    /// either failed its static match, or passed it and failed a guard.
    fn walk(
        &mut self,
        chain: usize,
        entry: Entry<'a>,
        path: &mut Vec<usize>,
    ) -> Result<Steps, CompileError> {
        let prepared = self.prepared;
        let table = prepared.table;
        // The RETURNs and gotos seen so far in this chain, as their terms.
        let mut guards = Exits::default();
        // Slots without a verdict a packet still in this chain may have
        // acted on, and the most any packet acts on before it leaves.
        let (mut passed, mut most) = (Steps::default(), Steps::default());
        let (entry, mut taken) = match entry {
            Entry::All(terms) => (None, Some(terms.into_iter())),
            Entry::Terms(terms) => (Some(terms), None),
        };
        for (r, rule) in table.chains[chain].rules.iter().enumerate() {
            let mine = taken
                .as_mut()
                .map(|t| t.next().expect("a rule's terms for each rule"));
            let terms: &[Term<'a>] = match &mine {
                Some(mine) => mine,
                None => &prepared.terms[chain][r],
            };
            let own = &prepared.own_guards[chain][r];
            // What this rule's exit (jump, RETURN, goto) stands for:
            // borrowed from `prepared`, unless it is the terms taken.
            let exit: Cow<'p, [Term<'a>]> = match (&prepared.held[chain][r], &mine) {
                (Some(held), _) => Cow::Borrowed(held),
                (None, None) => Cow::Borrowed(&prepared.terms[chain][r]),
                (None, Some(_)) if matches!(rule.target, Target::Return | Target::Goto(_)) => {
                    Cow::Owned(terms.to_vec())
                }
                // Not an exit: never used.
                (None, Some(_)) => Cow::Borrowed(&[]),
            };
            // Nothing gets past an unconditional verdict, RETURN or goto;
            // a guard can always fail.
            let ends_chain = terms.iter().any(Term::is_true)
                && own.is_empty()
                && (rule.target.terminates()
                    || matches!(rule.target, Target::Return | Target::Goto(_)));
            // Checked before and after each product: the products stop one
            // term past the limit, so a count past it means "refuse", and a
            // smaller one is whole.
            self.check_terms(chain, r, terms.len())?;
            let hit = match mine {
                // Every packet enters: `terms AND true`, without a copy.
                Some(mine) => mine.into_iter().filter_map(term::simplified).collect(),
                None => term::and_all(
                    &prepared.terms[chain][r],
                    entry
                        .as_deref()
                        .expect("a walk has its rules' terms or an entry"),
                    self.limits.terms_per_rule,
                ),
            };
            let mut hit = self.past_exits(chain, r, hit, &guards)?;
            if hit.is_empty() {
                continue;
            }
            self.check_terms(chain, r, hit.len())?;
            let counter = match prepared.user_counter[chain] {
                None => r as u32,
                Some(first) => self.counters.1 + first + r as u32 - self.counters.0,
            };
            self.check_nat_chain(chain, r)?;
            self.check_needs_packet(chain, r)?;
            let verdict = action(&rule.target, counter, prepared.nat_args[chain][r]);
            // A hotdrop prefix's slots first (`guards::hotdrop_prefix`):
            // they never act, but drop what the rule's SCTP or DCCP match
            // drops before the rule's later matches are tested.
            if let Some((prefix, prefix_head)) = &prepared.hotdrop[chain][r] {
                let ahead = match entry.as_deref() {
                    None => prefix
                        .iter()
                        .cloned()
                        .filter_map(term::simplified)
                        .collect(),
                    Some(entry) => term::and_all(prefix, entry, self.limits.terms_per_rule),
                };
                let ahead = self.past_exits(chain, r, ahead, &guards)?;
                self.check_slots(ahead.len())?;
                passed = passed.plus(Steps {
                    passes: 0,
                    guarded: ahead.len(),
                });
                for t in ahead {
                    // The prefix's chain is at most as long as the rule's.
                    self.push_slot(chain, r, t, own.len(), *prefix_head, verdict)?;
                }
            }
            self.check_slots(hit.len())?;
            let own_head = prepared.own_head[chain][r];
            // How many of the rule's slots have a guard chain, and whether
            // some have none.
            let mut guarded = 0usize;
            let mut plain = false;
            // The slots own their terms: moved there, unless they are also
            // what enters a jump's callee (below).
            let terms_of_slots = if matches!(rule.target, Target::Jump(_) | Target::Goto(_)) {
                hit.clone()
            } else {
                std::mem::take(&mut hit)
            };
            for t in terms_of_slots {
                if own.is_empty() && !t.has_requirements() {
                    plain = true;
                } else {
                    guarded += 1;
                }
                self.push_slot(chain, r, t, own.len(), own_head, verdict)?;
            }
            // The steps the rule may cost: a packet acts on at most one of
            // its slots (they are disjoint), but may reach several with a
            // guard chain (terms that differ only in requirements, like
            // "g failed" and "g held, h failed", are alike to the
            // classes), each a step whether it acts or not.
            let step = Steps {
                passes: usize::from(plain && !rule.target.terminates()),
                guarded,
            };
            let guarded = guarded > 0;
            match &rule.target {
                Target::Jump(callee) | Target::Goto(callee) => {
                    let callee = self.callee(chain, r, callee, path)?;
                    // The packets that enter: those that took this slot,
                    // its guards held.
                    let enter = if own.is_empty() {
                        hit
                    } else {
                        let all_held = Term {
                            req: own.iter().map(|&g| (g, true)).collect(),
                            ..Term::default()
                        };
                        term::and_all(&hit, &[all_held], self.limits.terms_per_rule)
                    };
                    path.push(callee);
                    let inside = self.walk_or_reuse(callee, enter, path)?;
                    path.pop();
                    if matches!(rule.target, Target::Goto(_)) {
                        guards.push(exit);
                        if own.is_empty() {
                            most = most.max(passed.plus(step).plus(inside));
                        } else {
                            // A failed guard stays in this chain, having
                            // reached (not acted on) the callee's slots.
                            passed = passed.plus(step).plus(inside);
                        }
                    } else {
                        passed = passed.plus(step).plus(inside);
                    }
                }
                Target::Return => {
                    guards.push(exit);
                    if own.is_empty() {
                        most = most.max(passed.plus(step));
                    } else {
                        passed = passed.plus(step);
                    }
                }
                // No target, LOG: count (and log), search on.
                t if !t.terminates() => passed = passed.plus(step),
                _ => {
                    if guarded {
                        passed = passed.plus(step);
                    }
                }
            }
            if ends_chain {
                break;
            }
        }
        Ok(most.max(passed))
    }

    /// [`Flattener::walk`] of the chain `callee` for the packets in
    /// `enter`, or, for a chain a built-in chain jumps to, the slots an
    /// earlier built-in chain of the table walked for the same packets
    /// ([`Walked`]), copied.
    fn walk_or_reuse(
        &mut self,
        callee: usize,
        enter: Vec<Term<'a>>,
        path: &mut Vec<usize>,
    ) -> Result<Steps, CompileError> {
        // `path`: this built-in chain and the callee.
        if self.limits.reused_walk_slots == usize::MAX || path.len() != 2 {
            return self.walk(callee, Entry::Terms(enter), path);
        }
        let (table, builtin) = (self.reuse.table, self.reuse.builtin);
        // An earlier built-in chain's: this one's slots are still being
        // made (a second jump of this chain to the callee walks it again).
        let found = self
            .reuse
            .walked
            .iter()
            .find(|w| {
                w.plan < builtin && w.table == table && w.callee == callee && w.entry == enter
            })
            .map(|w| (w.plan, w.slots.clone(), w.counter_base, w.steps));
        if let Some((plan, range, base, steps)) = found {
            let plans = self.reuse.earlier;
            let earlier: &[Slot<'a>] = &plans[plan].slots[range];
            let mut checked = None;
            for s in earlier {
                if checked != Some(s.owner) {
                    self.check_nat_chain(s.owner.0, s.owner.1)?;
                    self.check_needs_packet(s.owner.0, s.owner.1)?;
                    checked = Some(s.owner);
                }
            }
            let total = self.slots.len() + earlier.len();
            if total > self.limits.rules_per_chain {
                return Err(CompileError::TooManyRules {
                    chain: self.name.to_string(),
                    slots: total,
                    limit: self.limits.rules_per_chain,
                });
            }
            // The same rules' counters, relative to this chain's base.
            let shift = base.wrapping_sub(self.counters.0);
            self.slots.extend(earlier.iter().map(|s| Slot {
                term: s.term.clone(),
                action: RuleAction {
                    counter: s.action.counter.wrapping_add(shift),
                    ..s.action
                },
                owner: s.owner,
            }));
            #[cfg(test)]
            REUSED.set(REUSED.get() + 1);
            return Ok(steps);
        }
        let start = self.slots.len();
        let entry = enter.clone();
        let steps = self.walk(callee, Entry::Terms(enter), path)?;
        if self.slots.len() - start >= self.limits.reused_walk_slots {
            self.reuse.walked.push(Walked {
                table,
                callee,
                entry,
                plan: builtin,
                slots: start..self.slots.len(),
                counter_base: self.counters.0,
                steps,
            });
        }
        Ok(steps)
    }

    /// The chain a jump of rule `r` of `chain` enters, checked.
    fn callee(
        &self,
        chain: usize,
        r: usize,
        name: &str,
        path: &[usize],
    ) -> Result<usize, CompileError> {
        let table = self.prepared.table;
        let invalid = |problem: String| CompileError::InvalidRule {
            chain: table.chains[chain].name.clone(),
            rule: r + 1,
            problem,
        };
        let callee = self
            .prepared
            .chain_index(name)
            .ok_or_else(|| invalid(format!("it jumps to chain {name}, which does not exist")))?;
        if table.chains[callee].policy.is_some() {
            return Err(invalid(format!(
                "it jumps to the built-in chain {name}; only user-defined chains can be jumped to"
            )));
        }
        if path.contains(&callee) || path.len() > MAX_DEPTH {
            let mut names: Vec<&str> = path
                .iter()
                .map(|&c| table.chains[c].name.as_str())
                .collect();
            names.push(name);
            return Err(CompileError::JumpLoop {
                path: names.join(" -> "),
                limit: MAX_DEPTH,
            });
        }
        Ok(callee)
    }

    /// A nat target reached from a built-in chain where the kernel refuses
    /// it (DNAT from POSTROUTING, say, through a user-defined chain).
    fn check_nat_chain(&self, chain: usize, r: usize) -> Result<(), CompileError> {
        let table = self.prepared.table;
        let target = &table.chains[chain].rules[r].target;
        match target.nat_chains() {
            Some(allowed) if !allowed.contains(&self.name) => Err(CompileError::NatTargetInChain {
                builtin: self.name.to_string(),
                chain: table.chains[chain].name.clone(),
                rule: r + 1,
                target: target.name().to_string(),
                reason: target.chain_reason(),
            }),
            _ => Ok(()),
        }
    }

    /// A target that acts on the packet's bytes (LOG) cannot run in nat
    /// OUTPUT, which netbeast does on sockets, before any packet exists.
    fn check_needs_packet(&self, chain: usize, r: usize) -> Result<(), CompileError> {
        let table = self.prepared.table;
        let target = &table.chains[chain].rules[r].target;
        if let Target::Synproxy(_) = target
            && self.name != "INPUT"
            && self.name != "FORWARD"
        {
            return Err(CompileError::InvalidRule {
                chain: table.chains[chain].name.clone(),
                rule: r + 1,
                problem: format!(
                    "-j SYNPROXY answers SYNs arriving from outside, and {} reaches it; \
                     use it in INPUT or FORWARD",
                    self.name
                ),
            });
        }
        if table.name == TableName::Nat && self.name == "OUTPUT" && target.needs_packet() {
            return Err(CompileError::InvalidRule {
                chain: table.chains[chain].name.clone(),
                rule: r + 1,
                problem: format!(
                    "-j {} needs the packet, and nat OUTPUT reaches it, which netbeast does \
                     on sockets before any packet exists; put the rule in the filter table's \
                     OUTPUT chain",
                    target.name()
                ),
            });
        }
        Ok(())
    }

    /// `hit`, the packets that reach rule `r` of `chain`, less those the
    /// chain's RETURNs and gotos before it (`exits`) took away.
    fn past_exits(
        &self,
        chain: usize,
        r: usize,
        mut hit: Vec<Term<'a>>,
        exits: &Exits<'_, 'a>,
    ) -> Result<Vec<Term<'a>>, CompileError> {
        self.check_terms(chain, r, hit.len())?;
        for exit in exits.relevant(&hit) {
            if hit.is_empty() {
                break;
            }
            hit = term::and_not(hit, exit, self.limits.terms_per_rule);
            self.check_terms(chain, r, hit.len())?;
        }
        Ok(hit)
    }

    /// Room in the chain for `more` slots.
    fn check_slots(&self, more: usize) -> Result<(), CompileError> {
        if self.slots.len() + more > self.limits.rules_per_chain {
            return Err(CompileError::TooManyRules {
                chain: self.name.to_string(),
                slots: self.slots.len() + more,
                limit: self.limits.rules_per_chain,
            });
        }
        Ok(())
    }

    /// A slot of rule `r` of `chain` for the packets of `t`, acting as
    /// `verdict` once its requirements and then the guard chain at
    /// `own_head` (of a rule with `own` guards) held.
    fn push_slot(
        &mut self,
        chain: usize,
        r: usize,
        t: Term<'a>,
        own: usize,
        own_head: u32,
        verdict: RuleAction,
    ) -> Result<(), CompileError> {
        self.check_guard_chain(chain, r, t.req.len() + own)?;
        let head = self.guard_table.chain(&t.req, own_head)?;
        self.slots.push(Slot {
            term: Rc::new(t),
            action: RuleAction {
                guard: head,
                ..verdict
            },
            owner: (chain, r),
        });
        Ok(())
    }

    /// A slot of rule `r` of `chain` whose guard chain has `len` records.
    fn check_guard_chain(&self, chain: usize, r: usize, len: usize) -> Result<(), CompileError> {
        if len > guards::MAX_CHAIN {
            return Err(CompileError::TooManyGuardChecks {
                builtin: self.name.to_string(),
                chain: self.prepared.table.chains[chain].name.clone(),
                rule: r + 1,
                limit: guards::MAX_CHAIN,
            });
        }
        Ok(())
    }

    fn check_terms(&self, chain: usize, r: usize, terms: usize) -> Result<(), CompileError> {
        if terms > self.limits.terms_per_rule {
            return Err(CompileError::TooManyTerms {
                builtin: self.name.to_string(),
                chain: self.prepared.table.chains[chain].name.clone(),
                rule: r + 1,
                limit: self.limits.terms_per_rule,
            });
        }
        Ok(())
    }
}
