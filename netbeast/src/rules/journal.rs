//! What one commit changed in the rule model, small enough to append to a
//! journal instead of rewriting the whole rule file (issue 17; the files
//! and their crash protocol are in `state.rs`, ARCHITECTURE.md "The rule
//! file's journal").
//!
//! A [`Change`] names, per table, the chains that changed and, for each,
//! one splice of its rule list: the rules between a common prefix and a
//! common suffix of the old and new lists. `-A`, `-I`, `-D` and `-R` are
//! one splice of one rule; `-P` a header; `-N`/`-X` a new chain list.
//! Counters are not part of a change: every commit stores all of them in
//! a binary file beside the journal ([`encode_counters`]), since a
//! generation switch restarts the kernel's, and a change that moved only
//! counters (`-Z`) is then an empty change.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::command::{ChainEdit, Splice};
use super::save::Touched;
// A change and the counter file name a table by its place in
// `ALL_TABLES` (`Ruleset::tables`), of which there are `TABLES`.
use super::model::{
    ALL_TABLES, Chain, Counter, Family, Policy, Rule, Ruleset, TABLES, Table, TableName,
};

fn table(ruleset: &Ruleset, i: usize) -> &Table {
    ruleset.tables()[i].1
}

fn table_mut(ruleset: &mut Ruleset, i: usize) -> &mut Table {
    ruleset
        .tables_mut()
        .into_iter()
        .nth(i)
        .expect("a table's place")
        .1
}

/// One commit's change to the rule model, without counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub tables: Vec<TableChange>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableChange {
    /// The table's place in [`TABLES`] order.
    pub table: usize,
    /// The new list of chains, when chains came, went or were renamed:
    /// each continues an old chain (by its index) or is new, whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<Vec<ChainSource>>,
    /// The chains (by index in the new list) whose header or rules changed.
    pub chains: Vec<ChainChange>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChainSource {
    Old(usize),
    New(Chain),
}

/// A chain's new header, and its rules `start..start + removed` replaced
/// by `rules`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainChange {
    pub index: usize,
    pub name: String,
    pub policy: Option<Policy>,
    pub start: usize,
    pub removed: usize,
    pub rules: Vec<Rule>,
}

impl Change {
    /// True when the rules are as they were (the counters may not be).
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// How many rules the change carries whole: what appending it costs.
    pub fn rule_count(&self) -> usize {
        self.tables
            .iter()
            .map(|t| {
                let new: usize = t
                    .layout
                    .iter()
                    .flatten()
                    .map(|s| match s {
                        ChainSource::New(c) => c.rules.len(),
                        ChainSource::Old(_) => 0,
                    })
                    .sum();
                new + t.chains.iter().map(|c| c.rules.len()).sum::<usize>()
            })
            .sum()
    }
}

/// The place in [`TABLES`] order of the table `name` of `family`'s
/// ruleset ([`Ruleset::table_in`]).
pub fn table_index(family: Family, name: TableName) -> usize {
    ALL_TABLES
        .iter()
        .position(|&t| t == (family, name))
        .unwrap_or_else(|| unreachable!("{name:?} of {family:?} is in ALL_TABLES"))
}

/// The change a one-rule command made, from the splice it reports
/// ([`command::Splice`](super::command::Splice)) and the ruleset after
/// it: what [`diff`] finds, without a copy of the ruleset before.
pub fn splice_change(after: &Ruleset, family: Family, name: TableName, splice: Splice) -> Change {
    let t = table_index(family, name);
    let chain = &table(after, t).chains[splice.chain];
    Change {
        tables: vec![TableChange {
            table: t,
            layout: None,
            chains: vec![ChainChange {
                index: splice.chain,
                name: chain.name.clone(),
                policy: chain.policy,
                start: splice.start,
                removed: splice.removed,
                rules: chain.rules[splice.start..splice.start + splice.inserted]
                    .iter()
                    .map(|r| Rule {
                        counter: Counter::default(),
                        ..r.clone()
                    })
                    .collect(),
            }],
        }],
    }
}

/// The change `-N` or `-X CHAIN` made ([`ChainEdit`]), from the ruleset
/// after it: a new chain list, every other chain continuing its old one.
pub fn chain_edit_change(
    after: &Ruleset,
    family: Family,
    name: TableName,
    edit: ChainEdit,
) -> Change {
    let t = table_index(family, name);
    let chains = &table(after, t).chains;
    let layout = match edit {
        ChainEdit::Added(at) => (0..chains.len())
            .map(|i| match i.cmp(&at) {
                std::cmp::Ordering::Less => ChainSource::Old(i),
                std::cmp::Ordering::Equal => ChainSource::New(without_counters(&chains[at])),
                std::cmp::Ordering::Greater => ChainSource::Old(i - 1),
            })
            .collect(),
        ChainEdit::Removed(at) => (0..=chains.len())
            .filter(|&j| j != at)
            .map(ChainSource::Old)
            .collect(),
    };
    Change {
        tables: vec![TableChange {
            table: t,
            layout: Some(layout),
            chains: Vec::new(),
        }],
    }
}

/// Equal rules, whatever their counters: those are stored apart.
fn same_rule(a: &Rule, b: &Rule) -> bool {
    if a.counter == b.counter {
        a == b
    } else {
        let mut b = b.clone();
        b.counter = a.counter;
        *a == b
    }
}

/// The change that turns `before` into `after` (counters aside). Its cost
/// is one comparison per rule, as `before != after` was.
pub fn diff(before: &Ruleset, after: &Ruleset) -> Change {
    diff_touched(before, after, &vec![Touched::All; TABLES])
}

/// What [`diff_touched`] reads of the ruleset before a restore: the
/// tables `touched` names, with every chain's name and policy but the
/// rules of the chains it compares only. A restore keeps this instead of
/// a copy of the whole ruleset (kube-proxy's sync names a few chains of
/// 110,000 rules), and applies itself to the ruleset in place.
pub fn diffed_part(before: &Ruleset, touched: &[Touched]) -> Ruleset {
    let mut part = Ruleset::default();
    for ((t, (_, into)), (_, from)) in part
        .tables_mut()
        .into_iter()
        .enumerate()
        .zip(before.tables())
        .take(TABLES)
    {
        into.chains = match &touched[t] {
            Touched::None => Vec::new(),
            Touched::All => from.chains.clone(),
            Touched::Chains(names) => from
                .chains
                .iter()
                .map(|c| Chain {
                    name: c.name.clone(),
                    policy: c.policy,
                    policy_counter: c.policy_counter,
                    rules: if names.contains(&c.name) {
                        c.rules.clone()
                    } else {
                        Vec::new()
                    },
                })
                .collect(),
        };
    }
    part
}

/// [`diff`], comparing only what `touched` says a restore can have
/// changed (`save::touched`): kube-proxy's sync names a few chains of a
/// ruleset of 110,000 rules, and comparing them all was a seventh of it.
/// `before` may be the whole ruleset or its [`diffed_part`].
pub fn diff_touched(before: &Ruleset, after: &Ruleset, touched: &[Touched]) -> Change {
    let mut tables = Vec::new();
    for (t, touched) in touched.iter().enumerate().take(TABLES) {
        let compared = |name: &str| match touched {
            Touched::None => false,
            Touched::Chains(names) => names.contains(name),
            Touched::All => true,
        };
        if *touched == Touched::None {
            continue;
        }
        let (old, new) = (table(before, t), table(after, t));
        let same_names = old.chains.len() == new.chains.len()
            && old
                .chains
                .iter()
                .zip(&new.chains)
                .all(|(a, b)| a.name == b.name);
        let mut change = TableChange {
            table: t,
            layout: None,
            chains: Vec::new(),
        };
        if same_names {
            for (i, (a, b)) in old.chains.iter().zip(&new.chains).enumerate() {
                if compared(&b.name) {
                    change.chains.extend(chain_change(i, a, b));
                }
            }
        } else {
            let by_name: HashMap<&str, usize> = old
                .chains
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.as_str(), i))
                .collect();
            let mut layout = Vec::with_capacity(new.chains.len());
            for (i, b) in new.chains.iter().enumerate() {
                match by_name.get(b.name.as_str()) {
                    Some(&j) => {
                        layout.push(ChainSource::Old(j));
                        if compared(&b.name) {
                            change.chains.extend(chain_change(i, &old.chains[j], b));
                        }
                    }
                    None => layout.push(ChainSource::New(without_counters(b))),
                }
            }
            change.layout = Some(layout);
        }
        if change.layout.is_some() || !change.chains.is_empty() {
            tables.push(change);
        }
    }
    Change { tables }
}

fn without_counters(chain: &Chain) -> Chain {
    let mut chain = chain.clone();
    chain.policy_counter = Counter::default();
    for rule in &mut chain.rules {
        rule.counter = Counter::default();
    }
    chain
}

fn chain_change(index: usize, a: &Chain, b: &Chain) -> Option<ChainChange> {
    let (x, y) = (&a.rules, &b.rules);
    let prefix = x.iter().zip(y).take_while(|(p, q)| same_rule(p, q)).count();
    let room = x.len().min(y.len()) - prefix;
    let suffix = x
        .iter()
        .rev()
        .zip(y.iter().rev())
        .take(room)
        .take_while(|(p, q)| same_rule(p, q))
        .count();
    let rules_same = prefix + suffix == x.len() && x.len() == y.len();
    if rules_same && a.name == b.name && a.policy == b.policy {
        return None;
    }
    Some(ChainChange {
        index,
        name: b.name.clone(),
        policy: b.policy,
        start: prefix,
        removed: x.len() - prefix - suffix,
        rules: y[prefix..y.len() - suffix]
            .iter()
            .map(|r| Rule {
                counter: Counter::default(),
                ..r.clone()
            })
            .collect(),
    })
}

/// Why a stored change does not fit the ruleset it is applied to: the
/// journal does not continue that rule file.
#[derive(Debug, thiserror::Error)]
#[error("the change names {what}, which the ruleset it follows does not have")]
pub struct Mismatch {
    what: String,
}

/// Applies `change` to `ruleset` (counters of changed rules zero; the
/// counter file sets them all).
pub fn apply(ruleset: &mut Ruleset, change: &Change) -> Result<(), Mismatch> {
    apply_all(ruleset, std::iter::once(change)).map_err(|(_, e)| e)
}

/// [`apply`] of `changes` in order, each chain's rules moved once: a
/// chain's changes are kept as [`Pieces`] until the last is in. A journal
/// of 64 one-rule changes near the head of a chain of 100,000 rules moved
/// every rule 64 times (a `Vec::splice` each, 30 MB), and reading the
/// rule file took 1 ms more per record. On a change that does not fit,
/// its number among `changes` and why.
pub fn apply_all<'c>(
    ruleset: &mut Ruleset,
    changes: impl IntoIterator<Item = &'c Change>,
) -> Result<(), (usize, Mismatch)> {
    let mut pieces: Vec<Vec<Option<Pieces>>> = (0..TABLES)
        .map(|t| table(ruleset, t).chains.iter().map(|_| None).collect())
        .collect();
    let mut result = Ok(());
    for (n, change) in changes.into_iter().enumerate() {
        if let Err(e) = apply_one(ruleset, &mut pieces, change) {
            result = Err((n, e));
            break;
        }
    }
    for (t, pieces) in pieces.into_iter().enumerate() {
        for (chain, p) in table_mut(ruleset, t).chains.iter_mut().zip(pieces) {
            if let Some(p) = p {
                let old = std::mem::take(&mut chain.rules);
                chain.rules = p.rules(old);
            }
        }
    }
    result
}

fn apply_one(
    ruleset: &mut Ruleset,
    pieces: &mut [Vec<Option<Pieces>>],
    change: &Change,
) -> Result<(), Mismatch> {
    let mismatch = |what: String| Mismatch { what };
    for tc in &change.tables {
        if tc.table >= TABLES {
            return Err(mismatch(format!("table {}", tc.table)));
        }
        let table = table_mut(ruleset, tc.table);
        let pieces = &mut pieces[tc.table];
        if let Some(layout) = &tc.layout {
            let mut old: Vec<Option<(Chain, Option<Pieces>)>> = std::mem::take(&mut table.chains)
                .into_iter()
                .zip(std::mem::take(pieces))
                .map(Some)
                .collect();
            for source in layout {
                let (chain, p) = match source {
                    ChainSource::Old(j) => old
                        .get_mut(*j)
                        .and_then(Option::take)
                        .ok_or_else(|| mismatch(format!("chain {j} of table {}", tc.table)))?,
                    ChainSource::New(c) => (c.clone(), None),
                };
                table.chains.push(chain);
                pieces.push(p);
            }
        }
        for cc in &tc.chains {
            let chain = table
                .chains
                .get_mut(cc.index)
                .ok_or_else(|| mismatch(format!("chain {} of table {}", cc.index, tc.table)))?;
            let p = pieces[cc.index].get_or_insert_with(|| Pieces::of(chain.rules.len()));
            if cc.start + cc.removed > p.len {
                return Err(mismatch(format!(
                    "rules {}..{} of chain {}",
                    cc.start,
                    cc.start + cc.removed,
                    chain.name
                )));
            }
            chain.name = cc.name.clone();
            chain.policy = cc.policy;
            p.splice(cc.start, cc.removed, cc.rules.clone());
        }
    }
    Ok(())
}

/// A chain's rules while changes are applied: runs of the rules it had
/// (start, count; in order, since a change never moves rules past each
/// other) and rules the changes brought.
struct Pieces {
    pieces: Vec<Piece>,
    len: usize,
}

enum Piece {
    Kept(usize, usize),
    New(Vec<Rule>),
}

impl Piece {
    fn len(&self) -> usize {
        match self {
            Piece::Kept(_, n) => *n,
            Piece::New(rules) => rules.len(),
        }
    }
}

impl Pieces {
    /// The `len` rules a chain has, unchanged.
    fn of(len: usize) -> Pieces {
        Pieces {
            pieces: (len > 0)
                .then_some(Piece::Kept(0, len))
                .into_iter()
                .collect(),
            len,
        }
    }

    /// The index of the first piece at rule `at`, a piece split there if
    /// one spans it.
    fn split(&mut self, at: usize) -> usize {
        let mut pos = 0;
        for i in 0..self.pieces.len() {
            let n = self.pieces[i].len();
            if pos == at {
                return i;
            }
            if at < pos + n {
                let k = at - pos;
                let rest = match &mut self.pieces[i] {
                    Piece::Kept(start, count) => {
                        *count = k;
                        Piece::Kept(*start + k, n - k)
                    }
                    Piece::New(rules) => Piece::New(rules.split_off(k)),
                };
                self.pieces.insert(i + 1, rest);
                return i + 1;
            }
            pos += n;
        }
        self.pieces.len()
    }

    /// Rules `start..start + removed` replaced by `rules`.
    fn splice(&mut self, start: usize, removed: usize, rules: Vec<Rule>) {
        let from = self.split(start);
        let to = self.split(start + removed);
        self.len = self.len - removed + rules.len();
        let new = (!rules.is_empty()).then_some(Piece::New(rules));
        self.pieces.splice(from..to, new);
    }

    /// The chain's rules, made of `old` (the rules it had) and the new ones.
    fn rules(self, old: Vec<Rule>) -> Vec<Rule> {
        let mut out = Vec::with_capacity(self.len);
        let mut old = old.into_iter();
        let mut at = 0;
        for piece in self.pieces {
            match piece {
                Piece::Kept(start, count) => {
                    if start > at {
                        old.nth(start - at - 1);
                    }
                    out.extend(old.by_ref().take(count));
                    at = start + count;
                }
                Piece::New(rules) => out.extend(rules),
            }
        }
        out
    }
}

/// Every counter of `ruleset` in a fixed order (per table, per chain: the
/// policy's, then each rule's), little-endian packets and bytes.
pub fn encode_counters(ruleset: &Ruleset) -> Vec<u8> {
    let mut out = Vec::new();
    for t in 0..TABLES {
        for chain in &table(ruleset, t).chains {
            for c in
                std::iter::once(&chain.policy_counter).chain(chain.rules.iter().map(|r| &r.counter))
            {
                out.extend_from_slice(&c.packets.to_le_bytes());
                out.extend_from_slice(&c.bytes.to_le_bytes());
            }
        }
    }
    out
}

/// True when some counter of `a` is not `b`'s (the two hold the same
/// chains and rules: their [`diff`] is empty).
pub fn counters_differ(a: &Ruleset, b: &Ruleset) -> bool {
    (0..TABLES).any(|t| {
        table(a, t)
            .chains
            .iter()
            .zip(&table(b, t).chains)
            .any(|(x, y)| {
                x.policy_counter != y.policy_counter
                    || x.rules
                        .iter()
                        .zip(&y.rules)
                        .any(|(p, q)| p.counter != q.counter)
            })
    })
}

/// Bytes one counter takes in [`encode_counters`].
const COUNTER_BYTES: usize = 16;

/// Sets the counters of `ruleset` from [`encode_counters`]' bytes; false
/// (and nothing set) when they are not as many as its rules and policies.
pub fn decode_counters(ruleset: &mut Ruleset, bytes: &[u8]) -> bool {
    let count: usize = (0..TABLES)
        .flat_map(|t| &table(ruleset, t).chains)
        .map(|c| 1 + c.rules.len())
        .sum();
    if bytes.len() != count * COUNTER_BYTES {
        return false;
    }
    let mut words = bytes
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")));
    let mut next = || Counter {
        packets: words.next().expect("counted"),
        bytes: words.next().expect("counted"),
    };
    for t in 0..TABLES {
        for chain in &mut table_mut(ruleset, t).chains {
            chain.policy_counter = next();
            for rule in &mut chain.rules {
                rule.counter = next();
            }
        }
    }
    true
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rules::{command, generate::Dice, model::Family, parse::parse_args};

    fn run(ruleset: &mut Ruleset, line: &str) {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        let cmd = parse_args(&args, Family::V4).unwrap();
        command::apply(ruleset, &cmd).unwrap();
    }

    /// A random command of the kinds a client sends one at a time, valid
    /// for `ruleset`.
    pub(crate) fn random_command(dice: &mut Dice, ruleset: &Ruleset) -> String {
        let chains = ["INPUT", "FORWARD", "OUTPUT", "web", "ssh"];
        let user: Vec<&str> = ruleset
            .filter
            .chains
            .iter()
            .filter(|c| c.policy.is_none())
            .map(|c| c.name.as_str())
            .collect();
        let chain = loop {
            let c = dice.pick(&chains);
            if ["INPUT", "FORWARD", "OUTPUT"].contains(&c) || user.contains(&c) {
                break c;
            }
        };
        let len = ruleset.filter.chain(chain).map_or(0, |c| c.rules.len());
        let target = if !user.is_empty() && dice.chance(20) {
            dice.pick(&user).to_string()
        } else {
            dice.pick(&["ACCEPT", "DROP", "RETURN"]).to_string()
        };
        let spec = format!(
            "-s 10.{}.{}.0/24 -p tcp --dport {} -j {target}",
            dice.below(4),
            dice.below(4),
            1 + dice.below(3)
        );
        match dice.below(12) {
            0..=3 => format!("-A {chain} {spec}"),
            4..=5 => format!("-I {chain} {} {spec}", 1 + dice.below(len + 1)),
            6 if len > 0 => format!("-D {chain} {}", 1 + dice.below(len)),
            7 if len > 0 => format!("-R {chain} {} {spec}", 1 + dice.below(len)),
            8 => format!(
                "-P {} {}",
                dice.pick(&["INPUT", "FORWARD"]),
                dice.pick(&["ACCEPT", "DROP"])
            ),
            9 if !user.contains(&"web") => "-N web".into(),
            10 if !user.contains(&"ssh") => "-N ssh".into(),
            11 if len > 0 => format!("-Z {chain}"),
            11 if !user.is_empty() => format!("-X {}", dice.pick(&user)),
            11 => format!("-F {chain}"),
            _ => format!("-A {chain} -j ACCEPT"),
        }
    }

    /// Random sequences of single commands: each change, applied to the
    /// ruleset before it, gives the ruleset after it (counters aside), and
    /// the counter file restores the counters.
    #[test]
    fn a_change_applied_to_the_old_ruleset_gives_the_new_one() {
        let mut dice = Dice(17);
        for _ in 0..300 {
            let mut ruleset = Ruleset::default();
            for step in 0..20 {
                let before = ruleset.clone();
                let line = random_command(&mut dice, &ruleset);
                let args: Vec<String> = line.split_whitespace().map(String::from).collect();
                let cmd = parse_args(&args, Family::V4).unwrap();
                if command::apply(&mut ruleset, &cmd).is_err() {
                    ruleset = before;
                    continue;
                }
                // Counters move as the kernel's would between calls.
                for (i, rule) in ruleset
                    .filter
                    .chains
                    .iter_mut()
                    .flat_map(|c| &mut c.rules)
                    .enumerate()
                {
                    rule.counter.packets += (i + step) as u64;
                }
                let change = diff(&before, &ruleset);
                let mut replayed = before.clone();
                apply(&mut replayed, &change).unwrap();
                assert!(decode_counters(&mut replayed, &encode_counters(&ruleset)));
                assert_eq!(replayed, ruleset, "after `{line}`: {change:?}");
                assert!(
                    change.rule_count() <= 1,
                    "`{line}` carried {} rules",
                    change.rule_count()
                );
            }
        }
    }

    /// Random sequences of commands, with some that fail (a missing rule
    /// or chain, a position past the end, a jump loop the table's checks
    /// refuse after the splice is made): a one-rule command reports its
    /// splice, and the change built from it, applied to the ruleset
    /// before, gives the ruleset after, as [`diff`]'s does; a command that
    /// fails leaves the ruleset as it was.
    #[test]
    fn a_one_rule_command_s_splice_is_its_change() {
        let mut dice = Dice(1717);
        let (mut spliced, mut edited, mut loops) = (0, 0, 0);
        for _ in 0..300 {
            let mut ruleset = Ruleset::default();
            for _ in 0..25 {
                let before = ruleset.clone();
                let line = match dice.below(8) {
                    0 => format!(
                        "-D INPUT -s 10.{}.{}.0/24 -p tcp --dport 1 -j DROP",
                        dice.below(4),
                        dice.below(4)
                    ),
                    1 => format!("-A INPUT -s 10.0.0.{},10.0.1.0/24 -j DROP", dice.below(3)),
                    2 => format!("-I FORWARD {} -j ACCEPT", 1 + dice.below(4)),
                    // A loop when `ssh` jumps to `web` and `web` to `ssh`.
                    3 if ruleset.filter.chain("web").is_some()
                        && ruleset.filter.chain("ssh").is_some() =>
                    {
                        let (a, b) = dice.pick(&[("web", "ssh"), ("ssh", "web")]);
                        format!("-A {a} -j {b}")
                    }
                    4 => format!("-D OUTPUT {}", 1 + dice.below(3)),
                    _ => random_command(&mut dice, &ruleset),
                };
                let args: Vec<String> = line.split_whitespace().map(String::from).collect();
                let cmd = parse_args(&args, Family::V4).unwrap();
                let out = match command::apply(&mut ruleset, &cmd) {
                    Ok(out) => out,
                    Err(e) => {
                        assert_eq!(ruleset, before, "`{line}` failed but changed the ruleset");
                        // The splice was made, then undone.
                        loops += usize::from(matches!(e, command::CommandError::Loop { .. }));
                        continue;
                    }
                };
                assert_eq!(out.splice.is_some(), cmd.is_one_rule_change(), "{line}");
                let change = match (out.splice, out.chain_edit) {
                    (Some(splice), _) => {
                        spliced += 1;
                        splice_change(&ruleset, cmd.family, cmd.table, splice)
                    }
                    // `-N`, `-X CHAIN`: the chain list's edit.
                    (None, Some(edit)) => {
                        edited += 1;
                        chain_edit_change(&ruleset, cmd.family, cmd.table, edit)
                    }
                    (None, None) => continue,
                };
                let mut replayed = before.clone();
                apply(&mut replayed, &change).unwrap();
                assert!(decode_counters(&mut replayed, &encode_counters(&ruleset)));
                assert_eq!(replayed, ruleset, "after `{line}`: {change:?}");
                let mut diffed = before.clone();
                apply(&mut diffed, &diff(&before, &ruleset)).unwrap();
                assert!(decode_counters(&mut diffed, &encode_counters(&ruleset)));
                assert_eq!(diffed, replayed, "after `{line}`");
            }
        }
        assert!(spliced > 3000, "only {spliced} one-rule commands applied");
        assert!(edited > 100, "only {edited} chains added or removed");
        assert!(loops > 10, "only {loops} jump loops refused");
    }

    /// A restore's diff compares only the chains the restore can have
    /// changed, and finds what comparing every chain finds.
    #[test]
    fn a_restore_s_touched_chains_hold_its_whole_change() {
        use crate::rules::save;
        let mut dice = Dice(1818);
        let (mut compared, mut changed) = (0, 0);
        for _ in 0..400 {
            let mut ruleset = Ruleset::default();
            for _ in 0..12 {
                let line = random_command(&mut dice, &ruleset);
                let args: Vec<String> = line.split_whitespace().map(String::from).collect();
                let _ = command::apply(&mut ruleset, &parse_args(&args, Family::V4).unwrap());
            }
            let noflush = dice.chance(75);
            let mut text = String::from("*filter\n");
            if dice.chance(40) {
                let chain = dice.pick(&[":web - [0:0]", ":ssh - [0:0]", ":INPUT DROP [0:0]"]);
                text.push_str(chain);
                text.push('\n');
            }
            // Lines valid one after another, as a client writes them.
            let mut scratch = ruleset.clone();
            for _ in 0..1 + dice.below(4) {
                let line = random_command(&mut dice, &scratch);
                let args: Vec<String> = line.split_whitespace().map(String::from).collect();
                let _ = command::apply(&mut scratch, &parse_args(&args, Family::V4).unwrap());
                text.push_str(&line);
                text.push('\n');
            }
            text.push_str("COMMIT\n");
            let file = save::parse_restore(&text).unwrap();
            let Ok(after) = save::restored(ruleset.clone(), &file, noflush) else {
                continue;
            };
            let whole = diff(&ruleset, &after);
            let which = save::touched(&file, noflush);
            let touched = diff_touched(&ruleset, &after, &which);
            assert_eq!(touched, whole, "noflush {noflush}:\n{text}");
            let part = diff_touched(&diffed_part(&ruleset, &which), &after, &which);
            assert_eq!(part, whole, "noflush {noflush}, diffed part:\n{text}");
            compared += 1;
            changed += usize::from(!whole.is_empty());
        }
        assert!(
            compared > 250 && changed > 200,
            "{compared} restores, {changed} changed"
        );
    }

    /// Splices kept as pieces give the rules that splicing the vector
    /// each time gives, over random splices (rules told apart by their
    /// counters).
    #[test]
    fn pieces_splice_as_the_vector_does() {
        let rule = |n: u64| Rule {
            counter: Counter {
                packets: n,
                bytes: 0,
            },
            ..Rule::new(crate::rules::model::Target::Accept)
        };
        let mut dice = Dice(1919);
        let mut below = |n: usize| dice.below(n);
        let mut next = 1000u64;
        for _ in 0..300 {
            let len = below(40);
            let old: Vec<Rule> = (0..len as u64).map(rule).collect();
            let mut model = old.clone();
            let mut pieces = Pieces::of(len);
            for _ in 0..below(12) {
                let start = below(model.len() + 1);
                let removed = below(model.len() - start + 1);
                let new: Vec<Rule> = (0..below(4))
                    .map(|_| {
                        next += 1;
                        rule(next)
                    })
                    .collect();
                model.splice(start..start + removed, new.iter().cloned());
                pieces.splice(start, removed, new);
                assert_eq!(pieces.len, model.len());
            }
            assert_eq!(pieces.rules(old), model);
        }
    }

    #[test]
    fn one_rule_change_carries_one_rule() {
        let mut ruleset = Ruleset::default();
        for i in 0..50 {
            run(&mut ruleset, &format!("-A INPUT -s 10.0.0.{i} -j DROP"));
        }
        for line in [
            "-A INPUT -s 10.1.0.1 -j DROP",
            "-I INPUT 7 -s 10.1.0.2 -j DROP",
            "-D INPUT 20",
            "-R INPUT 30 -s 10.1.0.3 -j ACCEPT",
            "-D INPUT -s 10.0.0.40 -j DROP",
        ] {
            let before = ruleset.clone();
            run(&mut ruleset, line);
            let change = diff(&before, &ruleset);
            assert_eq!(
                change.rule_count(),
                usize::from(!line.starts_with("-D")),
                "{line}"
            );
            let removed: usize = change.tables[0].chains.iter().map(|c| c.removed).sum();
            assert_eq!(
                removed,
                usize::from(line.starts_with("-D") || line.starts_with("-R")),
                "{line}"
            );
        }
        let before = ruleset.clone();
        run(&mut ruleset, "-Z INPUT");
        assert!(diff(&before, &ruleset).is_empty(), "-Z moves counters only");
    }

    #[test]
    fn a_change_that_does_not_fit_is_refused() {
        let mut ruleset = Ruleset::default();
        run(&mut ruleset, "-A INPUT -j DROP");
        let change = diff(&Ruleset::default(), &ruleset);
        let mut other = Ruleset::default();
        run(&mut other, "-P INPUT DROP");
        // Removing past the end of a chain.
        let mut wrong = change.clone();
        wrong.tables[0].chains[0].removed = 5;
        assert!(apply(&mut other, &wrong).is_err());
        assert!(!decode_counters(&mut other, &[0; 3]));
    }
}
