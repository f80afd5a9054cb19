//! Applying a parsed iptables command to the in-memory ruleset, with
//! iptables' semantics and errors: positions are 1-based, `-I` accepts one
//! past the end, `-D` by specification removes the first equal rule, `-Z`
//! zeroes policy counters too. A command either applies whole or not at
//! all.

use thiserror::Error;

use super::list::{self, ListFormat};
use super::model::{Chain, Counter, Family, Match, Rule, Ruleset, Table, TableName, Target};
use super::parse::{Action, IptablesCommand, Problem};
use super::save::{CounterStyle, rule_spec};

/// What a command did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// True when the ruleset changed and must be stored and compiled.
    pub changed: bool,
    /// What to print on stdout (listings, `-v` echoes, help).
    pub text: String,
    /// Where a one-rule command (`-A`, `-I`, `-R`, `-D`) changed its
    /// table: what the journal records, known without comparing the
    /// ruleset before and after (which would need a copy of it).
    pub splice: Option<Splice>,
    /// Where `-N` added, or `-X CHAIN` removed, a chain: likewise the
    /// journal's change without a copy of the ruleset.
    pub chain_edit: Option<ChainEdit>,
}

/// One user-defined chain added to or removed from a table's chain list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainEdit {
    /// Now at this place in the table's chains, empty.
    Added(usize),
    /// Was at this place.
    Removed(usize),
}

/// One chain's rules `start..start + removed` replaced by the `inserted`
/// rules now at `start..start + inserted`; the chain's place in its table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Splice {
    pub chain: usize,
    pub start: usize,
    pub removed: usize,
    pub inserted: usize,
}

/// A command that cannot apply to the ruleset as it is; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CommandError {
    #[error("chain '{chain}' does not exist{hint}")]
    NoSuchChain { chain: String, hint: String },
    #[error(
        "bad rule (does a matching rule exist in that chain?): no rule in {chain} is '{rule}'; see them with -S {chain}"
    )]
    NoMatchingRule { chain: String, rule: String },
    #[error("index of {operation} too big: {chain} {has}, so {usage}")]
    IndexTooBig {
        operation: &'static str,
        chain: String,
        has: String,
        usage: String,
    },
    #[error("can't set a policy on {chain}: only built-in chains have one")]
    NoPolicy { chain: String },
    #[error("chain '{chain}' already exists")]
    ChainExists { chain: String },
    #[error("{chain} is a built-in chain: {reason}")]
    BuiltinChain { chain: String, reason: &'static str },
    #[error("chain '{chain}' is not empty ({rules}); flush it first with -F {chain}")]
    ChainNotEmpty { chain: String, rules: String },
    #[error("chain '{chain}' is still the target of {uses}; delete or replace those rules first")]
    ChainInUse { chain: String, uses: String },
    #[error("jump target '{chain}' does not exist{hint}")]
    NoSuchTarget { chain: String, hint: String },
    #[error(
        "cannot jump to the built-in chain {chain}: -j and -g lead to user-defined chains only"
    )]
    JumpToBuiltin { chain: String },
    #[error(
        "chains jump in a loop ({path}), which iptables refuses (too many levels of links); \
         remove one of these jumps"
    )]
    Loop { path: String },
    #[error(
        "chains jump more than {limit} levels deep ({path}), which iptables refuses (too many \
         links; MAX_JUMP_DEPTH, nf_tables' limit); merge some of these chains"
    )]
    TooDeep { path: String, limit: usize },
    #[error(
        "rule {rule} of chain {chain} matches the source MAC (-m mac), but {builtin} reaches it \
         ({path}): {why}; jump to {chain} from {instead} only"
    )]
    MacFromOutput {
        chain: String,
        rule: usize,
        builtin: &'static str,
        path: String,
        why: &'static str,
        instead: &'static str,
    },
    #[error(
        "rule {rule} of the nat chain {chain} is -j {target}, but {builtin} reaches it ({path}), \
         where the kernel refuses it: {reason}"
    )]
    NatTargetFromChain {
        chain: String,
        rule: usize,
        target: &'static str,
        builtin: &'static str,
        path: String,
        reason: &'static str,
    },
}

impl CommandError {
    /// The exit code iptables gives: its parser already refuses a jump to
    /// a chain that does not exist (a parameter problem); everything else
    /// here is what its kernel refuses.
    pub fn problem(&self) -> Problem {
        match self {
            CommandError::NoSuchTarget { .. } => Problem::Parameter,
            _ => Problem::Other,
        }
    }
}

/// How deep user-defined chains may nest below a built-in chain: the
/// kernel's nf_tables (which runs iptables on this and most current
/// systems) refuses a 16th level (NFT_JUMP_STACK_SIZE), so a ruleset
/// netbeast accepts also loads into iptables.
pub const MAX_JUMP_DEPTH: usize = 15;

/// The text of `iptables -h`.
pub const HELP: &str = "\
Usage: iptables -[ACD] chain rule-specification [options]
       iptables -I chain [rulenum] rule-specification [options]
       iptables -R chain rulenum rule-specification [options]
       iptables -D chain rulenum [options]
       iptables -[LS] [chain [rulenum]] [options]
       iptables -[FZ] [chain] [options]
       iptables -P chain target [options]
       iptables -h (print this help information)

netbeast implements the filter table (chains INPUT, FORWARD, OUTPUT) and the
nat table (-t nat: PREROUTING, OUTPUT, POSTROUTING), with user-defined chains.

Commands:
  --append  -A chain            Append to chain
  --check   -C chain            Check for the existence of a rule
  --delete  -D chain            Delete matching rule from chain
  --delete  -D chain rulenum    Delete rule rulenum (1 = first) from chain
  --insert  -I chain [rulenum]  Insert in chain as rulenum (default 1=first)
  --replace -R chain rulenum    Replace rule rulenum (1 = first) in chain
  --list    -L [chain [rulenum]]  List the rules in a chain or all chains
  --list-rules -S [chain [rulenum]]  Print the rules in a chain or all chains
  --flush   -F [chain]          Delete all rules in chain or all chains
  --zero    -Z [chain [rulenum]]  Zero counters in chain or all chains
  --policy  -P chain target     Change policy on chain to target (ACCEPT or DROP)
  --new-chain -N chain          Create a new user-defined chain
  --delete-chain -X [chain]     Delete a user-defined chain (empty, unreferenced)
  --rename-chain -E old-chain new-chain
                                Change chain name (jumps to it follow)

Options:
[!] --protocol  -p proto        protocol: by number or name, eg. `tcp'
[!] --source    -s address[/mask][,...]  source specification
[!] --destination -d address[/mask][,...]  destination specification
[!] --in-interface -i input name[+]  network interface name ([+] for wildcard)
[!] --out-interface -o output name[+]  network interface name ([+] for wildcard)
[!] --fragment  -f              match second or further fragments only
 --jump -j target               ACCEPT, DROP, REJECT [--reject-with type],
                                RETURN or a user-defined chain; in -t nat:
                                DNAT --to-destination ip[-ip][:port[-port]]
                                  [--random] [--persistent],
                                SNAT --to-source ip[-ip][:port[-port]]
                                  [--random] [--random-fully] [--persistent],
                                MASQUERADE [--to-ports port[-port]]
                                  [--random] [--random-fully],
                                REDIRECT [--to-ports port[-port]] [--random]
 --goto -g chain                jump to chain with no return
 --match -m match               tcp, udp (--sport, --dport [!] port[:port]),
                                icmp ([!] --icmp-type type[/code]),
                                multiport ([!] --sports/--dports/--ports list),
                                mac ([!] --mac-source XX:XX:XX:XX:XX:XX),
                                comment (--comment text)
  --numeric     -n              numeric output of addresses and ports
  --table       -t table        table to manipulate: filter (default) or nat
  --verbose     -v              verbose mode
  --wait        -w [seconds]    maximum wait for the lock (exit 4 after);
                                without seconds or -w: wait for it
  --line-numbers                print line numbers when listing
  --exact       -x              expand numbers (display exact values)
  --set-counters -c PKTS BYTES  set the counter during insert/append
";

/// Applies `cmd` to the ruleset. On error the ruleset is unchanged.
pub fn apply(ruleset: &mut Ruleset, cmd: &IptablesCommand) -> Result<CommandOutput, CommandError> {
    let table = ruleset.table_in_mut(cmd.family, cmd.table);
    if !cmd.changes_ruleset() {
        // `-C`, `-S`, `-L` (without `-Z`), help and version read the
        // table and change nothing (a copy was a quarter of a `-C` at
        // 10,000 rules).
        return execute(table, cmd);
    }
    if let Some(splice) = one_rule_splice(table, cmd)? {
        return apply_splice(table, cmd, splice);
    }
    // `-N` and `-X CHAIN` change the table in place: `execute` refuses
    // them before it changes anything, and an empty chain no rule jumps
    // to changes nothing `check_table` checks (at 100,000 rules the copy
    // and the check were a quarter of a `-N`).
    match &cmd.action {
        Action::NewChain { chain } => {
            let output = execute(table, cmd)?;
            let at = table.chain_index(chain).expect("the chain -N added");
            return Ok(CommandOutput {
                chain_edit: Some(ChainEdit::Added(at)),
                ..output
            });
        }
        Action::DeleteChain { chain: Some(name) } => {
            let at = table.chain_index(name);
            let output = execute(table, cmd)?;
            return Ok(CommandOutput {
                chain_edit: Some(ChainEdit::Removed(at.expect("the chain -X removed"))),
                ..output
            });
        }
        _ => {}
    }
    let mut scratch = table.clone();
    let output = execute(&mut scratch, cmd)?;
    check_table(&scratch)?;
    *table = scratch;
    Ok(output)
}

/// Where `cmd` will change `table` when it is a one-rule command (`-A`,
/// `-I`, `-R`, `-D` by number, `-D` of one rule by specification), which
/// [`execute`] refuses before it changes anything; `None` for the others
/// (several rules deleted by specification: one may be missing after
/// another was removed), which are applied to a copy. Errors are
/// [`execute`]'s own.
fn one_rule_splice(table: &Table, cmd: &IptablesCommand) -> Result<Option<Splice>, CommandError> {
    let chain_at = |name: &str| match table.chain_index(name) {
        Some(index) => Ok(index),
        None => Err(CommandError::NoSuchChain {
            chain: name.to_string(),
            hint: no_such_chain_hint(table, name),
        }),
    };
    let splice = |chain, start, removed, inserted| Splice {
        chain,
        start,
        removed,
        inserted,
    };
    if !cmd.is_one_rule_change() {
        return Ok(None);
    }
    Ok(Some(match &cmd.action {
        Action::Append { chain, rules } => {
            check_targets(table, rules)?;
            let c = chain_at(chain)?;
            splice(c, table.chains[c].rules.len(), 0, rules.len())
        }
        Action::Insert {
            chain,
            position,
            rules,
        } => {
            check_targets(table, rules)?;
            let c = chain_at(chain)?;
            let index = checked_index(&table.chains[c], *position, Operation::Insert)?;
            splice(c, index, 0, rules.len())
        }
        Action::Delete { chain, rules } => {
            check_targets(table, rules)?;
            let c = chain_at(chain)?;
            splice(c, find_rule(&table.chains[c], &rules[0])?, 1, 0)
        }
        Action::DeleteAt { chain, position } => {
            let c = chain_at(chain)?;
            let index = checked_index(&table.chains[c], *position, Operation::Delete)?;
            splice(c, index, 1, 0)
        }
        Action::Replace {
            chain,
            position,
            rule,
        } => {
            check_targets(table, std::slice::from_ref(rule))?;
            let c = chain_at(chain)?;
            let index = checked_index(&table.chains[c], *position, Operation::Replace)?;
            splice(c, index, 1, 1)
        }
        _ => unreachable!("is_one_rule_change names the actions above"),
    }))
}

/// Applies a one-rule command in place, without a copy of the table: the
/// checks [`execute`] makes before it changes anything have passed
/// ([`one_rule_splice`]), and when the table's own checks refuse the
/// result, the splice is undone.
fn apply_splice(
    table: &mut Table,
    cmd: &IptablesCommand,
    splice: Splice,
) -> Result<CommandOutput, CommandError> {
    let range = splice.start..splice.start + splice.removed;
    let removed: Vec<Rule> = table.chains[splice.chain].rules[range].to_vec();
    let mut output = execute(table, cmd)?;
    if let Err(e) = check_table(table) {
        table.chains[splice.chain]
            .rules
            .splice(splice.start..splice.start + splice.inserted, removed);
        return Err(e);
    }
    output.splice = Some(splice);
    Ok(output)
}

/// Applies `cmd` to `table` in place; on error, `table` may be half changed
/// (callers work on a copy: [`apply`], and restore for a whole file).
pub(crate) fn execute(
    table: &mut Table,
    cmd: &IptablesCommand,
) -> Result<CommandOutput, CommandError> {
    let verbose = cmd.verbose;
    let mut text = String::new();
    match &cmd.action {
        Action::Append { rules, .. }
        | Action::Insert { rules, .. }
        | Action::Delete { rules, .. }
        | Action::Check { rules, .. } => check_targets(table, rules)?,
        Action::Replace { rule, .. } => check_targets(table, std::slice::from_ref(rule))?,
        _ => {}
    }
    match &cmd.action {
        Action::Append { chain, rules } => {
            let chain = chain_mut(table, chain)?;
            echo_rules(&mut text, cmd.family, verbose, rules);
            chain.rules.extend(rules.iter().cloned());
        }
        Action::Insert {
            chain,
            position,
            rules,
        } => {
            let chain = chain_mut(table, chain)?;
            let index = checked_index(chain, *position, Operation::Insert)?;
            echo_rules(&mut text, cmd.family, verbose, rules);
            // As iptables: each rule goes in at the same place, so with
            // several addresses the last one ends up first.
            for rule in rules {
                chain.rules.insert(index, rule.clone());
            }
        }
        Action::Delete { chain, rules } => {
            let chain = chain_mut(table, chain)?;
            echo_rules(&mut text, cmd.family, verbose, rules);
            for rule in rules {
                let index = find_rule(chain, rule)?;
                chain.rules.remove(index);
            }
        }
        Action::DeleteAt { chain, position } => {
            let chain = chain_mut(table, chain)?;
            let index = checked_index(chain, *position, Operation::Delete)?;
            chain.rules.remove(index);
        }
        Action::Replace {
            chain,
            position,
            rule,
        } => {
            let chain = chain_mut(table, chain)?;
            let index = checked_index(chain, *position, Operation::Replace)?;
            echo_rules(&mut text, cmd.family, verbose, std::slice::from_ref(rule));
            chain.rules[index] = rule.clone();
        }
        Action::Check { chain, rules } => {
            let chain = chain_mut(table, chain)?;
            echo_rules(&mut text, cmd.family, verbose, rules);
            for rule in rules {
                find_rule(chain, rule)?;
            }
        }
        Action::List {
            chain,
            position,
            numeric,
            exact,
            line_numbers,
            zero,
        } => {
            let format = ListFormat {
                verbose,
                numeric: *numeric,
                exact: *exact,
                line_numbers: *line_numbers,
                names: if *numeric {
                    None
                } else {
                    super::names::system()
                },
                family: cmd.family,
            };
            text = listing(table, chain.as_deref(), *position, &format)?;
            if *zero {
                text.push_str(&zero_counters(table, chain.as_deref(), *position, verbose)?);
            }
        }
        Action::ListRules {
            chain,
            position,
            zero,
        } => {
            text = rule_listing(table, chain.as_deref(), *position, verbose)?;
            if *zero {
                text.push_str(&zero_counters(table, chain.as_deref(), *position, verbose)?);
            }
        }
        Action::Flush { chain } => {
            for chain in selected_chains(table, chain.as_deref())? {
                if verbose {
                    text.push_str(&format!("Flushing chain `{}'\n", chain.name));
                }
                chain.rules.clear();
            }
        }
        Action::Zero { chain, position } => {
            text = zero_counters(table, chain.as_deref(), *position, verbose)?;
        }
        Action::SetPolicy {
            chain,
            policy,
            counter,
        } => {
            let chain = chain_mut(table, chain)?;
            if chain.policy.is_none() {
                return Err(CommandError::NoPolicy {
                    chain: chain.name.clone(),
                });
            }
            chain.policy = Some(*policy);
            if let Some(counter) = counter {
                chain.policy_counter = *counter;
            }
        }
        Action::NewChain { chain } => {
            if table.chain(chain).is_some() {
                return Err(CommandError::ChainExists {
                    chain: chain.clone(),
                });
            }
            insert_user_chain(
                table,
                Chain {
                    name: chain.clone(),
                    policy: None,
                    policy_counter: Counter::default(),
                    rules: Vec::new(),
                },
            );
        }
        Action::DeleteChain { chain: Some(name) } => {
            let chain = chain_ref(table, name)?;
            check_deletable(table, chain)?;
            table.chains.retain(|c| c.name != *name);
        }
        Action::DeleteChain { chain: None } => {
            // All or nothing, as iptables: every user-defined chain must be
            // empty and unreferenced (the jumps gathered once: kube-proxy
            // has tens of thousands of chains).
            let referenced: std::collections::HashSet<&str> = table
                .chains
                .iter()
                .flat_map(|c| &c.rules)
                .filter_map(|r| r.target.chain())
                .collect();
            for chain in table.chains.iter().filter(|c| c.policy.is_none()) {
                if referenced.contains(chain.name.as_str()) || !chain.rules.is_empty() {
                    check_deletable(table, chain)?;
                }
            }
            if verbose {
                for chain in table.chains.iter().filter(|c| c.policy.is_none()) {
                    text.push_str(&format!("Deleting chain `{}'\n", chain.name));
                }
            }
            table.chains.retain(|c| c.policy.is_some());
        }
        Action::RenameChain { chain, new_name } => {
            let old = chain_ref(table, chain)?;
            if old.policy.is_some() {
                return Err(CommandError::BuiltinChain {
                    chain: chain.clone(),
                    reason: "only user-defined chains can be renamed",
                });
            }
            if table.chain(new_name).is_some() {
                return Err(CommandError::ChainExists {
                    chain: new_name.clone(),
                });
            }
            let index = table.chain_index(chain).expect("found above");
            let mut renamed = table.chains.remove(index);
            renamed.name = new_name.clone();
            insert_user_chain(table, renamed);
            // Jumps follow the chain, as in iptables.
            for rule in table.chains.iter_mut().flat_map(|c| &mut c.rules) {
                match &mut rule.target {
                    Target::Jump(to) | Target::Goto(to) if to == chain => *to = new_name.clone(),
                    _ => {}
                }
            }
        }
        Action::Help => text = HELP.to_string(),
        Action::Version => text = version_text(cmd.family),
    }
    Ok(CommandOutput {
        changed: cmd.changes_ruleset(),
        text,
        splice: None,
        chain_edit: None,
    })
}

/// The iptables release whose syntax, listings and save format netbeast
/// follows (checked against it in the tests). `--version` names it first,
/// as the programs that drive iptables read the first `vX.Y.Z` they see:
/// kube-proxy turns off `-C`, `-w` and `--random-fully` below 1.4.11/1.6.2,
/// ufw refuses what it reads as older than 1.4.
pub const IPTABLES_COMPAT_VERSION: &str = "1.8.9";

/// `iptables --version` / `ip6tables --version`: the iptables release it
/// stands in for, then netbeast's own version and tables.
pub fn version_text(family: Family) -> String {
    let (program, tables) = match family {
        Family::V4 => ("iptables", "filter, nat, raw and mangle tables"),
        Family::V6 => ("ip6tables", "filter, nat, raw and mangle tables"),
    };
    format!(
        "{program} v{IPTABLES_COMPAT_VERSION} (netbeast {}; {tables})\n",
        env!("CARGO_PKG_VERSION")
    )
}

fn chain_mut<'t>(table: &'t mut Table, name: &str) -> Result<&'t mut Chain, CommandError> {
    match table.chain_index(name) {
        Some(index) => Ok(&mut table.chains[index]),
        None => Err(CommandError::NoSuchChain {
            chain: name.to_string(),
            hint: no_such_chain_hint(table, name),
        }),
    }
}

fn no_such_chain_hint(table: &Table, name: &str) -> String {
    if let Some(chain) = table
        .chains
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case(name))
    {
        return format!(
            " (chain names are case-sensitive: did you mean {}?)",
            chain.name
        );
    }
    if table.name == TableName::Filter && matches!(name, "PREROUTING" | "POSTROUTING") {
        return format!(
            " in the filter table; {name} is a chain of the nat table: add -t nat (or -t raw \
             for PREROUTING, before connection tracking, or -t mangle)"
        );
    }
    if table.name == TableName::Nat && name == "FORWARD" {
        return " in the nat table; FORWARD is a chain of the filter table: leave out -t nat"
            .to_string();
    }
    if table.name == TableName::Raw && matches!(name, "INPUT" | "FORWARD" | "POSTROUTING") {
        return format!(
            " in the raw table, which has PREROUTING and OUTPUT only (it runs before \
             connection tracking); {name} is a chain of the {} table",
            if name == "POSTROUTING" {
                "nat"
            } else {
                "filter"
            }
        );
    }
    format!(
        "; the {} table has {} (-N {name} creates it)",
        table.name.as_str(),
        chain_names(table)
    )
}

/// The table's chain names for a message, the first few of them.
fn chain_names(table: &Table) -> String {
    const SHOWN: usize = 8;
    let mut names: Vec<&str> = table
        .chains
        .iter()
        .take(SHOWN)
        .map(|c| c.name.as_str())
        .collect();
    if table.chains.len() > SHOWN {
        names.push("...");
    }
    names.join(", ")
}

/// Every `-j CHAIN`/`-g CHAIN` of `rules` leads to an existing user-defined
/// chain, as iptables checks when it reads the rule.
fn check_targets(table: &Table, rules: &[Rule]) -> Result<(), CommandError> {
    for rule in rules {
        let Some(name) = rule.target.chain() else {
            continue;
        };
        match table.chain(name) {
            Some(chain) if chain.policy.is_some() => {
                return Err(CommandError::JumpToBuiltin {
                    chain: name.to_string(),
                });
            }
            Some(_) => {}
            None => {
                let upper = name.to_ascii_uppercase();
                let hint = if super::target::target_module(&upper).is_some() {
                    format!(" (targets are upper case: did you mean -j {upper}?)")
                } else {
                    format!("; create it first with -N {name}")
                };
                return Err(CommandError::NoSuchTarget {
                    chain: name.to_string(),
                    hint,
                });
            }
        }
    }
    Ok(())
}

/// Inserts a user-defined chain where iptables lists it: after the
/// built-in chains, in byte order of the names.
fn insert_user_chain(table: &mut Table, chain: Chain) {
    let at = table.user_chain_position(&chain.name);
    table.chains.insert(at, chain);
}

/// The rules that jump or go to `chain`, as `(chain, 1-based position)`.
pub(crate) fn references<'t>(table: &'t Table, chain: &str) -> Vec<(&'t str, usize)> {
    table
        .chains
        .iter()
        .flat_map(|c| {
            c.rules
                .iter()
                .enumerate()
                .filter(|(_, r)| r.target.chain() == Some(chain))
                .map(|(i, _)| (c.name.as_str(), i + 1))
        })
        .collect()
}

/// `-X`: only an empty user-defined chain no rule jumps to can go.
fn check_deletable(table: &Table, chain: &Chain) -> Result<(), CommandError> {
    if chain.policy.is_some() {
        return Err(CommandError::BuiltinChain {
            chain: chain.name.clone(),
            reason: "only user-defined chains can be deleted (-F empties it)",
        });
    }
    let uses = references(table, &chain.name);
    if !uses.is_empty() {
        const SHOWN: usize = 4;
        let mut listed: Vec<String> = uses
            .iter()
            .take(SHOWN)
            .map(|(c, n)| format!("{c} rule {n}"))
            .collect();
        if uses.len() > SHOWN {
            listed.push(format!("{} more", uses.len() - SHOWN));
        }
        let count = if uses.len() == 1 {
            "1 rule".to_string()
        } else {
            format!("{} rules", uses.len())
        };
        return Err(CommandError::ChainInUse {
            chain: chain.name.clone(),
            uses: format!("{count} ({})", listed.join(", ")),
        });
    }
    if !chain.rules.is_empty() {
        let rules = match chain.rules.len() {
            1 => "1 rule".to_string(),
            n => format!("{n} rules"),
        };
        return Err(CommandError::ChainNotEmpty {
            chain: chain.name.clone(),
            rules,
        });
    }
    Ok(())
}

/// What iptables and the kernel check when a ruleset is committed: jumps
/// never loop nor nest deeper than [`MAX_JUMP_DEPTH`], and the rules a
/// built-in chain reaches through user-defined chains are valid there
/// (`-m mac` only before routing, each nat target in its own chains).
/// Chains no built-in chain reaches are not checked, as in iptables.
pub(crate) fn check_table(table: &Table) -> Result<(), CommandError> {
    let index: std::collections::HashMap<&str, usize> = table
        .chains
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let jumps = Jumps::of(table, &index);
    check_jumps(table, &jumps)?;
    let has_mac = |rule: &Rule| {
        rule.matches
            .iter()
            .any(|m| matches!(m, Match::MacSource(_)))
    };
    // The chains a walk must read the rules of: those with such a rule.
    let holding = |bad: &dyn Fn(&Rule) -> bool| -> Vec<bool> {
        table
            .chains
            .iter()
            .map(|c| c.rules.iter().any(bad))
            .collect()
    };
    let with_mac = holding(&has_mac);
    // xt_mac's hooks: before routing and on local delivery.
    let mac_refused: &[(&'static str, &'static str)] = match table.name {
        TableName::Filter => &[("OUTPUT", "locally sent packets have no source MAC yet")],
        TableName::Nat => &[
            ("OUTPUT", "locally sent packets have no source MAC yet"),
            (
                "POSTROUTING",
                "the kernel matches the source MAC only on arrival, not after routing",
            ),
        ],
        TableName::Raw => &[("OUTPUT", "locally sent packets have no source MAC yet")],
        TableName::Mangle => &[
            ("OUTPUT", "locally sent packets have no source MAC yet"),
            (
                "POSTROUTING",
                "the kernel matches the source MAC only on arrival, not after routing",
            ),
        ],
    };
    let instead = match table.name {
        TableName::Filter => "INPUT or FORWARD",
        TableName::Nat | TableName::Raw => "PREROUTING",
        TableName::Mangle => "PREROUTING, INPUT or FORWARD",
    };
    for &(builtin, why) in mac_refused.iter().filter(|_| with_mac.contains(&true)) {
        if let Some((chain, rule, path)) =
            reached_rule(table, (&index, &jumps), builtin, &with_mac, has_mac)
        {
            return Err(CommandError::MacFromOutput {
                chain: table.chains[chain].name.clone(),
                rule: rule + 1,
                builtin,
                path,
                why,
                instead,
            });
        }
    }
    if table.name == TableName::Nat {
        let with_nat = holding(&|rule: &Rule| rule.target.nat_chains().is_some());
        for &builtin in TableName::Nat.builtin_chains() {
            let misplaced = |rule: &Rule| {
                rule.target
                    .nat_chains()
                    .is_some_and(|allowed| !allowed.contains(&builtin))
            };
            if let Some((chain, rule, path)) =
                reached_rule(table, (&index, &jumps), builtin, &with_nat, misplaced)
            {
                let target = &table.chains[chain].rules[rule].target;
                return Err(CommandError::NatTargetFromChain {
                    chain: table.chains[chain].name.clone(),
                    rule: rule + 1,
                    target: target.builtin_name(),
                    builtin,
                    path,
                    reason: target.chain_reason(),
                });
            }
        }
    }
    Ok(())
}

/// Each chain's jumps and gotos, resolved to the chain they enter, in rule
/// order. Made once per check: the checks walk the chains up to seven
/// times (loops, then `-m mac` and the nat targets per built-in chain),
/// and reading every rule and looking its target up by name each time was
/// most of a kube-proxy restore's check (110,000 rules, 30,000 chains).
struct Jumps(Vec<Vec<usize>>);

impl Jumps {
    fn of(table: &Table, index: &std::collections::HashMap<&str, usize>) -> Jumps {
        Jumps(
            table
                .chains
                .iter()
                .map(|c| {
                    // Targets are checked when rules are added; a missing
                    // one leads nowhere.
                    c.rules
                        .iter()
                        .filter_map(|r| index.get(r.target.chain()?).copied())
                        .collect()
                })
                .collect(),
        )
    }
}

/// What iptables checks when a ruleset is committed: from the built-in
/// chains, jumps never loop and never nest deeper than [`MAX_JUMP_DEPTH`].
/// Chains no built-in chain reaches are not checked, as in iptables.
fn check_jumps(table: &Table, jumps: &Jumps) -> Result<(), CommandError> {
    /// Per chain: not visited, on the current path, or done with the
    /// deepest path below it (in chains, itself included).
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Mark {
        New,
        OnPath,
        Done(usize),
    }
    struct Walk<'t> {
        table: &'t Table,
        jumps: &'t Jumps,
        marks: Vec<Mark>,
        path: Vec<usize>,
        /// The callee on the deepest path below each done chain.
        deepest: Vec<Option<usize>>,
    }
    impl Walk<'_> {
        fn name(&self, chain: usize) -> &str {
            &self.table.chains[chain].name
        }

        /// The depth below `chain`, counting `chain` itself.
        fn visit(&mut self, chain: usize) -> Result<usize, CommandError> {
            match self.marks[chain] {
                Mark::Done(depth) => return Ok(depth),
                Mark::OnPath => {
                    let from = self.path.iter().position(|&c| c == chain).unwrap_or(0);
                    let mut names: Vec<&str> =
                        self.path[from..].iter().map(|&c| self.name(c)).collect();
                    names.push(self.name(chain));
                    return Err(CommandError::Loop {
                        path: names.join(" -> "),
                    });
                }
                Mark::New => {}
            }
            self.marks[chain] = Mark::OnPath;
            self.path.push(chain);
            let mut depth = 1;
            let jumps = self.jumps;
            for &callee in &jumps.0[chain] {
                let below = self.visit(callee)?;
                if below + 1 > depth {
                    depth = below + 1;
                    self.deepest[chain] = Some(callee);
                }
            }
            self.path.pop();
            self.marks[chain] = Mark::Done(depth);
            Ok(depth)
        }
    }
    let mut walk = Walk {
        table,
        jumps,
        marks: vec![Mark::New; table.chains.len()],
        path: Vec::new(),
        deepest: vec![None; table.chains.len()],
    };
    for (builtin, _) in table
        .chains
        .iter()
        .enumerate()
        .filter(|(_, c)| c.policy.is_some())
    {
        // The built-in chain is level 0.
        let levels = walk.visit(builtin)? - 1;
        if levels > MAX_JUMP_DEPTH {
            let mut names = vec![walk.name(builtin).to_string()];
            let mut at = builtin;
            while let Some(next) = walk.deepest[at] {
                names.push(walk.name(next).to_string());
                at = next;
            }
            return Err(CommandError::TooDeep {
                path: names.join(" -> "),
                limit: MAX_JUMP_DEPTH,
            });
        }
    }
    Ok(())
}

/// The first rule `bad` says of, among the rules of `builtin` and of the
/// chains it reaches: (chain index, 0-based rule, the chains from
/// `builtin` to it). Breadth first, so the path is a shortest one. Runs
/// after the loop check, so the walk ends. Only the chains `holding`
/// marks (those with a rule `bad` may say of) have their rules read.
fn reached_rule(
    table: &Table,
    (index, jumps): (&std::collections::HashMap<&str, usize>, &Jumps),
    builtin: &str,
    holding: &[bool],
    bad: impl Fn(&Rule) -> bool,
) -> Option<(usize, usize, String)> {
    let &start = index.get(builtin)?;
    let mut via: Vec<Option<usize>> = vec![None; table.chains.len()];
    let mut seen = vec![false; table.chains.len()];
    let mut queue = std::collections::VecDeque::from([start]);
    seen[start] = true;
    while let Some(at) = queue.pop_front() {
        let chain = &table.chains[at];
        if holding[at]
            && let Some(n) = chain.rules.iter().position(&bad)
        {
            let mut names = vec![chain.name.as_str()];
            let mut back = at;
            while let Some(from) = via[back] {
                names.push(&table.chains[from].name);
                back = from;
            }
            names.reverse();
            return Some((at, n, names.join(" -> ")));
        }
        for &callee in &jumps.0[at] {
            if !seen[callee] {
                seen[callee] = true;
                via[callee] = Some(at);
                queue.push_back(callee);
            }
        }
    }
    None
}

/// The chain named, or every chain when none is.
fn selected_chains<'t>(
    table: &'t mut Table,
    name: Option<&str>,
) -> Result<Vec<&'t mut Chain>, CommandError> {
    match name {
        None => Ok(table.chains.iter_mut().collect()),
        Some(name) => Ok(vec![chain_mut(table, name)?]),
    }
}

fn chain_ref<'t>(table: &'t Table, name: &str) -> Result<&'t Chain, CommandError> {
    table.chain(name).ok_or_else(|| CommandError::NoSuchChain {
        chain: name.to_string(),
        hint: no_such_chain_hint(table, name),
    })
}

#[derive(Clone, Copy)]
enum Operation {
    Insert,
    Delete,
    Replace,
}

/// The 0-based index for a 1-based position, or iptables' "index too big".
fn checked_index(
    chain: &Chain,
    position: usize,
    operation: Operation,
) -> Result<usize, CommandError> {
    let len = chain.rules.len();
    let last = match operation {
        Operation::Insert => len + 1,
        _ => len,
    };
    if (1..=last).contains(&position) {
        return Ok(position - 1);
    }
    let (operation, flag) = match operation {
        Operation::Insert => ("insertion", "-I"),
        Operation::Delete => ("deletion", "-D"),
        Operation::Replace => ("replacement", "-R"),
    };
    let has = match len {
        0 => "has no rules".to_string(),
        1 => "has 1 rule".to_string(),
        n => format!("has {n} rules"),
    };
    let usage = if last == 0 {
        format!("there is nothing to {flag}")
    } else if last == 1 {
        format!("{flag} {} takes position 1 only", chain.name)
    } else {
        format!("{flag} {} takes a position from 1 to {last}", chain.name)
    };
    Err(CommandError::IndexTooBig {
        operation,
        chain: chain.name.clone(),
        has,
        usage,
    })
}

/// The first rule with the same specification, as `-D` and `-C` look for.
fn find_rule(chain: &Chain, rule: &Rule) -> Result<usize, CommandError> {
    chain
        .rules
        .iter()
        .position(|r| r.same_spec(rule))
        .ok_or_else(|| CommandError::NoMatchingRule {
            chain: chain.name.clone(),
            rule: rule_spec(&chain.name, rule, CounterStyle::Omit),
        })
}

fn echo_rules(text: &mut String, family: Family, verbose: bool, rules: &[Rule]) {
    if verbose {
        rules
            .iter()
            .for_each(|r| text.push_str(&list::echo_rule(r, family)));
    }
}

fn listing(
    table: &Table,
    chain: Option<&str>,
    position: Option<usize>,
    format: &ListFormat,
) -> Result<String, CommandError> {
    Ok(match (chain, position) {
        (None, _) => list::list_chains(table, format),
        (Some(name), None) => list::list_chain(table, chain_ref(table, name)?, format),
        (Some(name), Some(position)) => list::list_rule(chain_ref(table, name)?, position, format),
    })
}

fn rule_listing(
    table: &Table,
    chain: Option<&str>,
    position: Option<usize>,
    counters: bool,
) -> Result<String, CommandError> {
    Ok(match (chain, position) {
        (None, _) => list::list_rules(&table.chains, counters),
        (Some(name), None) => list::list_rules([chain_ref(table, name)?], counters),
        (Some(name), Some(position)) => {
            list::list_rule_spec(chain_ref(table, name)?, position, counters)
        }
    })
}

/// `-Z`: every counter of the chains (rules and policy), or one rule's.
fn zero_counters(
    table: &mut Table,
    chain: Option<&str>,
    position: Option<usize>,
    verbose: bool,
) -> Result<String, CommandError> {
    let mut text = String::new();
    if let (Some(name), Some(position)) = (chain, position) {
        let chain = chain_mut(table, name)?;
        // A position past the end zeroes nothing and is no error, as in
        // iptables 1.8 (nf_tables), the oracle here.
        if let Some(rule) = position.checked_sub(1).and_then(|i| chain.rules.get_mut(i)) {
            rule.counter = Counter::default();
        }
        return Ok(text);
    }
    for chain in selected_chains(table, chain)? {
        if verbose {
            text.push_str(&format!("Zeroing chain `{}'\n", chain.name));
        }
        chain.policy_counter = Counter::default();
        chain
            .rules
            .iter_mut()
            .for_each(|r| r.counter = Counter::default());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::rules::model::Policy;
    use crate::rules::parse::parse_iptables_args;
    use crate::rules::save::{save, test_command};

    /// The first `vX.Y.Z` of `--version`, read as kube-proxy and ufw read
    /// it, is the iptables release netbeast follows, not netbeast's own
    /// 0.x (which they took for an iptables too old for `-C` and `-w`).
    #[test]
    fn version_reads_as_the_iptables_it_stands_for() {
        for (family, program) in [(Family::V4, "iptables"), (Family::V6, "ip6tables")] {
            let text = version_text(family);
            let first = text
                .split_whitespace()
                .find_map(|w| w.strip_prefix('v'))
                .expect("a vX.Y.Z word");
            assert_eq!(first, IPTABLES_COMPAT_VERSION, "{text}");
            let parts: Vec<u32> = first.split('.').map(|p| p.parse().unwrap()).collect();
            assert!(parts >= vec![1, 6, 2], "{text}");
            assert!(text.starts_with(&format!("{program} v")), "{text}");
            assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
        }
    }

    fn run(ruleset: &mut Ruleset, line: &str) -> Result<CommandOutput, CommandError> {
        apply(ruleset, &test_command(line))
    }

    fn run_ok(ruleset: &mut Ruleset, line: &str) -> CommandOutput {
        run(ruleset, line).unwrap_or_else(|e| panic!("'{line}': {e}"))
    }

    fn ruleset(lines: &[&str]) -> Ruleset {
        let mut ruleset = Ruleset::default();
        for line in lines {
            run_ok(&mut ruleset, line);
        }
        ruleset
    }

    /// The chain's rules as -S prints them.
    fn rules_of(ruleset: &Ruleset, chain: &str) -> Vec<String> {
        let chain = ruleset.filter.chain(chain).unwrap();
        chain
            .rules
            .iter()
            .map(|r| rule_spec(&chain.name, r, CounterStyle::Omit))
            .collect()
    }

    /// Runs a failing command and checks that nothing changed.
    fn fails(ruleset: &mut Ruleset, line: &str) -> String {
        let before = ruleset.clone();
        let error = run(ruleset, line).expect_err(line).to_string();
        assert_eq!(*ruleset, before, "'{line}' failed but changed the ruleset");
        error
    }

    /// The article's firewall section: the order that makes 22 and 5432
    /// open, 8080 closed (after the DROP), and OUTPUT rejecting the rest.
    #[test]
    fn article_firewall() {
        let mut r = Ruleset::default();
        run_ok(&mut r, "-A INPUT -p tcp --dport 22 -j ACCEPT");
        run_ok(&mut r, "-A INPUT -j DROP");
        run_ok(&mut r, "-A INPUT -p tcp --dport 8080 -j ACCEPT");
        run_ok(&mut r, "-I INPUT -p tcp --dport 5432 -j ACCEPT");
        run_ok(
            &mut r,
            "-A OUTPUT -d 192.168.0.1 -p udp --dport 53 -j ACCEPT",
        );
        run_ok(&mut r, "-A OUTPUT -j REJECT");
        run_ok(
            &mut r,
            "-I OUTPUT -d 192.168.0.0/24 -p tcp --dport 443 -j ACCEPT",
        );
        assert_eq!(
            rules_of(&r, "INPUT"),
            [
                "-A INPUT -p tcp -m tcp --dport 5432 -j ACCEPT",
                "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT",
                "-A INPUT -j DROP",
                "-A INPUT -p tcp -m tcp --dport 8080 -j ACCEPT",
            ]
        );
        assert_eq!(
            rules_of(&r, "OUTPUT"),
            [
                "-A OUTPUT -d 192.168.0.0/24 -p tcp -m tcp --dport 443 -j ACCEPT",
                "-A OUTPUT -d 192.168.0.1/32 -p udp -m udp --dport 53 -j ACCEPT",
                "-A OUTPUT -j REJECT --reject-with icmp-port-unreachable",
            ]
        );
    }

    #[test]
    fn append_reports_a_change() {
        let mut r = Ruleset::default();
        let out = run_ok(&mut r, "-A INPUT -j DROP");
        assert_eq!(
            out,
            CommandOutput {
                changed: true,
                text: String::new(),
                splice: Some(Splice {
                    chain: 0,
                    start: 0,
                    removed: 0,
                    inserted: 1
                }),
                chain_edit: None,
            }
        );
    }

    #[test]
    fn insert_positions() {
        let mut r = ruleset(&["-A INPUT -s 1.1.1.1", "-A INPUT -s 2.2.2.2"]);
        run_ok(&mut r, "-I INPUT 2 -s 3.3.3.3");
        run_ok(&mut r, "-I INPUT 4 -s 4.4.4.4");
        run_ok(&mut r, "-I INPUT -s 5.5.5.5");
        assert_eq!(
            rules_of(&r, "INPUT"),
            [
                "-A INPUT -s 5.5.5.5/32",
                "-A INPUT -s 1.1.1.1/32",
                "-A INPUT -s 3.3.3.3/32",
                "-A INPUT -s 2.2.2.2/32",
                "-A INPUT -s 4.4.4.4/32",
            ]
        );
        let message = fails(&mut r, "-I INPUT 7 -j DROP");
        assert_eq!(
            message,
            "index of insertion too big: INPUT has 5 rules, so -I INPUT takes a position from 1 to 6"
        );
        run_ok(&mut r, "-I FORWARD 1 -j DROP");
        assert_err_contains(
            fails(&mut r, "-I OUTPUT 2 -j DROP"),
            "OUTPUT has no rules, so -I OUTPUT takes position 1 only",
        );
    }

    #[test]
    fn insert_with_several_addresses_reverses_like_iptables() {
        let r = ruleset(&["-A INPUT -j DROP", "-I INPUT -s 1.1.1.1,2.2.2.2 -j ACCEPT"]);
        assert_eq!(
            rules_of(&r, "INPUT"),
            [
                "-A INPUT -s 2.2.2.2/32 -j ACCEPT",
                "-A INPUT -s 1.1.1.1/32 -j ACCEPT",
                "-A INPUT -j DROP",
            ]
        );
    }

    fn assert_err_contains(message: String, needle: &str) {
        assert!(message.contains(needle), "'{message}' lacks '{needle}'");
    }

    /// Issue 11: `-i +` is every interface, the same rule as no `-i`, as
    /// iptables stores it: `-D` finds it under either spelling, and a
    /// save/restore (which prints no `-i`) keeps it the same rule.
    #[test]
    fn any_interface_is_the_same_rule_as_none() {
        for (add, delete) in [
            ("-A FORWARD -i + -j ACCEPT", "-D FORWARD -j ACCEPT"),
            ("-A FORWARD -j ACCEPT", "-D FORWARD -i + -j ACCEPT"),
            ("-A FORWARD -o + -p tcp", "-D FORWARD -p tcp"),
        ] {
            let mut r = ruleset(&[add]);
            assert_eq!(rules_of(&r, "FORWARD").len(), 1, "{add}");
            run_ok(&mut r, delete);
            assert!(rules_of(&r, "FORWARD").is_empty(), "{add} then {delete}");
        }
        // Negated, it matches nothing and stays a rule of its own.
        let mut r = ruleset(&["-A FORWARD ! -i + -j DROP"]);
        assert_eq!(rules_of(&r, "FORWARD"), ["-A FORWARD ! -i + -j DROP"]);
        fails(&mut r, "-D FORWARD -j DROP");
        // iptables refuses `-i +` where there is no input interface.
        assert!(parse_iptables_args(&["-A", "OUTPUT", "-i", "+"].map(String::from)).is_err());
    }

    #[test]
    fn delete_by_spec_removes_the_first_equal_rule() {
        let mut r = ruleset(&[
            "-A INPUT -p tcp --dport 22 -j ACCEPT",
            "-A INPUT -j DROP",
            "-A INPUT -p tcp --dport 22 -j ACCEPT",
        ]);
        r.filter.chain_mut("INPUT").unwrap().rules[2].counter = Counter {
            packets: 9,
            bytes: 9,
        };
        // Written differently, same rule: -m tcp and a service name.
        run_ok(&mut r, "-D INPUT -p tcp -m tcp --dport ssh -j ACCEPT");
        let input = &r.filter.chain("INPUT").unwrap().rules;
        assert_eq!(input.len(), 2);
        assert_eq!(input[1].counter.packets, 9, "the first equal rule goes");
        let message = fails(&mut r, "-D INPUT -p tcp --dport 23 -j ACCEPT");
        assert_eq!(
            message,
            "bad rule (does a matching rule exist in that chain?): no rule in INPUT is '-A INPUT -p tcp -m tcp --dport 23 -j ACCEPT'; see them with -S INPUT"
        );
        // The target is part of the specification.
        fails(&mut r, "-D INPUT -p tcp --dport 22 -j DROP");
    }

    #[test]
    fn delete_several_addresses_is_all_or_nothing() {
        let mut r = ruleset(&["-A INPUT -s 1.1.1.1 -j DROP", "-A INPUT -s 2.2.2.2 -j DROP"]);
        fails(&mut r, "-D INPUT -s 1.1.1.1,3.3.3.3 -j DROP");
        run_ok(&mut r, "-D INPUT -s 2.2.2.2,1.1.1.1 -j DROP");
        assert!(r.filter.chain("INPUT").unwrap().rules.is_empty());
    }

    #[test]
    fn delete_by_number() {
        let mut r = ruleset(&[
            "-A INPUT -s 1.1.1.1",
            "-A INPUT -s 2.2.2.2",
            "-A INPUT -s 3.3.3.3",
        ]);
        run_ok(&mut r, "-D INPUT 2");
        assert_eq!(
            rules_of(&r, "INPUT"),
            ["-A INPUT -s 1.1.1.1/32", "-A INPUT -s 3.3.3.3/32"]
        );
        assert_eq!(
            fails(&mut r, "-D INPUT 3"),
            "index of deletion too big: INPUT has 2 rules, so -D INPUT takes a position from 1 to 2"
        );
        assert_err_contains(
            fails(&mut r, "-D FORWARD 1"),
            "FORWARD has no rules, so there is nothing to -D",
        );
    }

    #[test]
    fn replace() {
        let mut r = ruleset(&["-A INPUT -c 5 5 -j ACCEPT", "-A INPUT -j DROP"]);
        run_ok(&mut r, "-R INPUT 1 -p tcp --dport 80 -j ACCEPT");
        assert_eq!(
            rules_of(&r, "INPUT"),
            [
                "-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT",
                "-A INPUT -j DROP"
            ]
        );
        assert_eq!(
            r.filter.chain("INPUT").unwrap().rules[0].counter,
            Counter::default(),
            "a replaced rule starts from zero, as in iptables"
        );
        run_ok(&mut r, "-R INPUT 2 -c 3 4 -j REJECT");
        assert_eq!(
            r.filter.chain("INPUT").unwrap().rules[1].counter,
            Counter {
                packets: 3,
                bytes: 4
            }
        );
        assert_err_contains(
            fails(&mut r, "-R INPUT 3 -j DROP"),
            "index of replacement too big: INPUT has 2 rules",
        );
    }

    #[test]
    fn check() {
        let mut r = ruleset(&["-A INPUT -p tcp --dport 22 -j ACCEPT"]);
        let out = run_ok(&mut r, "-C INPUT -p tcp --dport 22 -j ACCEPT");
        assert!(!out.changed);
        assert_err_contains(
            fails(&mut r, "-C INPUT -p tcp --dport 22 -j DROP"),
            "bad rule (does a matching rule exist in that chain?)",
        );
    }

    #[test]
    fn unknown_chains() {
        let mut r = Ruleset::default();
        assert_eq!(
            fails(&mut r, "-A FOO -j DROP"),
            "chain 'FOO' does not exist; the filter table has INPUT, FORWARD, OUTPUT (-N FOO creates it)"
        );
        assert_eq!(
            fails(&mut r, "-A input -j DROP"),
            "chain 'input' does not exist (chain names are case-sensitive: did you mean INPUT?)"
        );
        assert_err_contains(
            fails(&mut r, "-A PREROUTING -j DROP"),
            "chain 'PREROUTING' does not exist in the filter table; PREROUTING is a chain of the nat table: add -t nat",
        );
        for line in [
            "-L FOO",
            "-S FOO",
            "-F FOO",
            "-Z FOO",
            "-P FOO DROP",
            "-D FOO 1",
            "-R FOO 1 -j DROP",
            "-C FOO -j DROP",
        ] {
            assert_err_contains(fails(&mut r, line), "chain 'FOO' does not exist");
        }
    }

    #[test]
    fn flush() {
        let mut r = ruleset(&["-A INPUT -j DROP", "-A OUTPUT -j DROP", "-P INPUT DROP"]);
        run_ok(&mut r, "-F INPUT");
        assert!(r.filter.chain("INPUT").unwrap().rules.is_empty());
        assert_eq!(r.filter.chain("OUTPUT").unwrap().rules.len(), 1);
        assert_eq!(r.filter.chain("INPUT").unwrap().policy, Some(Policy::Drop));
        let out = run_ok(&mut r, "-v -F");
        assert_eq!(
            out.text,
            "Flushing chain `INPUT'\nFlushing chain `FORWARD'\nFlushing chain `OUTPUT'\n"
        );
        assert!(r.filter.chains.iter().all(|c| c.rules.is_empty()));
    }

    #[test]
    fn policy() {
        let mut r = Ruleset::default();
        run_ok(&mut r, "-P FORWARD DROP");
        assert_eq!(
            r.filter.chain("FORWARD").unwrap().policy,
            Some(Policy::Drop)
        );
        run_ok(&mut r, "-P FORWARD ACCEPT -c 10 20");
        let forward = r.filter.chain("FORWARD").unwrap();
        assert_eq!(forward.policy, Some(Policy::Accept));
        assert_eq!(
            forward.policy_counter,
            Counter {
                packets: 10,
                bytes: 20
            }
        );
        let mut user = r.clone();
        user.filter.chains.push(Chain {
            name: "MINE".into(),
            policy: None,
            policy_counter: Counter::default(),
            rules: Vec::new(),
        });
        assert_eq!(
            fails(&mut user, "-P MINE DROP"),
            "can't set a policy on MINE: only built-in chains have one"
        );
    }

    fn counted() -> Ruleset {
        let mut r = ruleset(&[
            "-A INPUT -c 1 100 -j ACCEPT",
            "-A INPUT -c 2 200",
            "-A OUTPUT -c 3 300",
        ]);
        for chain in &mut r.filter.chains {
            chain.policy_counter = Counter {
                packets: 7,
                bytes: 700,
            };
        }
        r
    }

    fn all_counters(r: &Ruleset) -> Vec<u64> {
        r.filter
            .chains
            .iter()
            .flat_map(|c| {
                std::iter::once(c.policy_counter.packets)
                    .chain(c.rules.iter().map(|r| r.counter.packets))
            })
            .collect()
    }

    #[test]
    fn zero() {
        let mut r = counted();
        run_ok(&mut r, "-Z INPUT 2");
        assert_eq!(all_counters(&r), [7, 1, 0, 7, 7, 3]);
        run_ok(&mut r, "-Z INPUT");
        assert_eq!(all_counters(&r), [0, 0, 0, 7, 7, 3]);
        let out = run_ok(&mut r, "-Z -v");
        assert_eq!(
            out.text,
            "Zeroing chain `INPUT'\nZeroing chain `FORWARD'\nZeroing chain `OUTPUT'\n"
        );
        assert_eq!(all_counters(&r), [0, 0, 0, 0, 0, 0]);
        // Past the end: nothing zeroed, no error (iptables 1.8 likewise).
        let mut r = counted();
        run_ok(&mut r, "-Z INPUT 3");
        assert_eq!(all_counters(&r), all_counters(&counted()));
    }

    #[test]
    fn list_then_zero() {
        let mut r = counted();
        let out = run_ok(&mut r, "-L INPUT -v -Z");
        assert!(out.changed);
        assert!(
            out.text
                .contains("Chain INPUT (policy ACCEPT 7 packets, 700 bytes)"),
            "{}",
            out.text
        );
        assert!(
            out.text.contains("    1   100 ACCEPT"),
            "listed before zeroing: {}",
            out.text
        );
        assert_eq!(all_counters(&r), [0, 0, 0, 7, 7, 3]);
        let out = run_ok(&mut r, "-S OUTPUT -Z -v");
        assert_eq!(
            out.text,
            "-P OUTPUT ACCEPT -c 7 700\n-A OUTPUT -c 3 300\nZeroing chain `OUTPUT'\n"
        );
        assert_eq!(all_counters(&r), [0, 0, 0, 7, 0, 0]);
    }

    #[test]
    fn listings_do_not_change_anything() {
        let mut r = ruleset(&["-A INPUT -p tcp --dport 22 -j ACCEPT"]);
        let before = r.clone();
        let out = run_ok(&mut r, "-L -n");
        assert!(!out.changed);
        assert!(out.text.starts_with("Chain INPUT (policy ACCEPT)\n"));
        assert!(out.text.contains("tcp dpt:22"));
        let out = run_ok(&mut r, "-S");
        assert_eq!(
            out.text,
            "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n"
        );
        assert_eq!(
            run_ok(&mut r, "-S INPUT 1").text,
            "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n"
        );
        assert_eq!(run_ok(&mut r, "-L INPUT 5").text, "");
        assert!(
            run_ok(&mut r, "-L OUTPUT")
                .text
                .starts_with("Chain OUTPUT (policy ACCEPT)\ntarget")
        );
        assert_eq!(r, before);
    }

    #[test]
    fn verbose_changes_echo_the_rules() {
        let mut r = Ruleset::default();
        let out = run_ok(
            &mut r,
            "-v -A INPUT -s 1.2.3.4,5.6.7.0/24 -p tcp --dport 22 -j ACCEPT",
        );
        assert_eq!(
            out.text,
            "ACCEPT  tcp opt -- in * out *  1.2.3.4  -> 0.0.0.0/0   tcp dpt:22\nACCEPT  tcp opt -- in * out *  5.6.7.0/24  -> 0.0.0.0/0   tcp dpt:22\n"
        );
        assert_eq!(run_ok(&mut r, "-v -D INPUT 1").text, "");
    }

    #[test]
    fn help_and_version() {
        let mut r = Ruleset::default();
        assert!(run_ok(&mut r, "-h").text.contains("--append  -A chain"));
        assert!(run_ok(&mut r, "-V").text.starts_with("iptables v"));
    }

    #[test]
    fn same_result_as_restoring_the_save() {
        let r = ruleset(&[
            "-A INPUT -p tcp --dport 22 -j ACCEPT",
            "-A INPUT -m mac --mac-source aa:bb:cc:dd:ee:ff -m comment --comment \"lab box\" -j DROP",
            "-P FORWARD DROP",
        ]);
        let text = save(&r, true);
        let mut restored = Ruleset::default();
        let file = crate::rules::save::parse_restore(&text).unwrap();
        crate::rules::save::apply_restore(&mut restored, &file, false).unwrap();
        assert_eq!(restored, r);
    }

    fn chain_names(r: &Ruleset) -> Vec<&str> {
        r.filter.chains.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn user_chains_are_created_sorted_like_iptables() {
        let mut r = ruleset(&["-N ZED", "-N ALPHA", "-N mid", "-N BETA"]);
        assert_eq!(
            chain_names(&r),
            ["INPUT", "FORWARD", "OUTPUT", "ALPHA", "BETA", "ZED", "mid"]
        );
        assert_eq!(fails(&mut r, "-N ZED"), "chain 'ZED' already exists");
        assert_eq!(fails(&mut r, "-N INPUT"), "chain 'INPUT' already exists");
        assert_eq!(
            fails(&mut r, "-P ZED DROP"),
            "can't set a policy on ZED: only built-in chains have one"
        );
    }

    #[test]
    fn jumps_need_an_existing_user_chain() {
        let mut r = ruleset(&["-N MINE"]);
        run_ok(&mut r, "-A INPUT -p tcp -j MINE");
        run_ok(&mut r, "-A FORWARD -g MINE");
        run_ok(&mut r, "-A MINE -j RETURN");
        assert_eq!(rules_of(&r, "INPUT"), ["-A INPUT -p tcp -j MINE"]);
        assert_eq!(rules_of(&r, "FORWARD"), ["-A FORWARD -g MINE"]);
        assert_eq!(rules_of(&r, "MINE"), ["-A MINE -j RETURN"]);
        assert_eq!(
            fails(&mut r, "-A INPUT -j NOPE"),
            "jump target 'NOPE' does not exist; create it first with -N NOPE"
        );
        assert_eq!(
            fails(&mut r, "-A INPUT -j accept"),
            "jump target 'accept' does not exist (targets are upper case: did you mean -j ACCEPT?)"
        );
        assert_eq!(
            fails(&mut r, "-A INPUT -j OUTPUT"),
            "cannot jump to the built-in chain OUTPUT: -j and -g lead to user-defined chains only"
        );
        assert_err_contains(fails(&mut r, "-I MINE -g INPUT"), "built-in chain INPUT");
        assert_err_contains(fails(&mut r, "-R INPUT 1 -j NOPE"), "'NOPE' does not exist");
        // -D and -C by specification find jump rules like any other.
        run_ok(&mut r, "-C INPUT -p tcp -j MINE");
        run_ok(&mut r, "-D FORWARD -g MINE");
        assert!(r.filter.chain("FORWARD").unwrap().rules.is_empty());
    }

    #[test]
    fn loops_and_depth_are_refused_like_iptables() {
        let mut r = ruleset(&["-N A", "-N B", "-N C", "-A A -j B", "-A B -j C"]);
        // Not reachable from a built-in chain yet: iptables accepts loops
        // there (they can never run).
        run_ok(&mut r, "-A C -g A");
        assert_eq!(
            fails(&mut r, "-A INPUT -j B"),
            "chains jump in a loop (B -> C -> A -> B), which iptables refuses (too many levels of links); remove one of these jumps"
        );
        run_ok(&mut r, "-D C 1");
        run_ok(&mut r, "-A INPUT -j A");
        assert_err_contains(fails(&mut r, "-A A -j A"), "loop (A -> A)");
        // MAX_JUMP_DEPTH chains below a built-in chain are fine, one more
        // is not (nf_tables' limit, which iptables on this system has).
        let mut deep = Ruleset::default();
        for n in 1..=MAX_JUMP_DEPTH + 1 {
            run_ok(&mut deep, &format!("-N C{n}"));
        }
        run_ok(&mut deep, "-A INPUT -j C1");
        for n in 1..MAX_JUMP_DEPTH {
            run_ok(&mut deep, &format!("-A C{n} -j C{}", n + 1));
        }
        let message = fails(
            &mut deep,
            &format!("-A C{MAX_JUMP_DEPTH} -j C{}", MAX_JUMP_DEPTH + 1),
        );
        assert_err_contains(
            message.clone(),
            "chains jump more than 15 levels deep (INPUT -> C1 -> C2",
        );
        assert_err_contains(message, "C15 -> C16)");
    }

    #[test]
    fn mac_match_only_where_a_mac_is_known() {
        let mut r = ruleset(&[
            "-N M",
            "-N N",
            "-A M -m mac --mac-source 02:00:00:00:00:01 -j DROP",
            "-A N -j M",
        ]);
        run_ok(&mut r, "-A INPUT -j N");
        run_ok(&mut r, "-A FORWARD -j M");
        assert_eq!(
            fails(&mut r, "-A OUTPUT -g N"),
            "rule 1 of chain M matches the source MAC (-m mac), but OUTPUT reaches it (OUTPUT -> N -> M): locally sent packets have no source MAC yet; jump to M from INPUT or FORWARD only"
        );
    }

    #[test]
    fn delete_chain_like_iptables() {
        let mut r = ruleset(&[
            "-N A",
            "-N B",
            "-N EMPTY",
            "-A A -j ACCEPT",
            "-A INPUT -j B",
            "-A FORWARD -g B",
        ]);
        assert_eq!(
            fails(&mut r, "-X A"),
            "chain 'A' is not empty (1 rule); flush it first with -F A"
        );
        assert_eq!(
            fails(&mut r, "-X B"),
            "chain 'B' is still the target of 2 rules (INPUT rule 1, FORWARD rule 1); delete or replace those rules first"
        );
        assert_eq!(
            fails(&mut r, "-X INPUT"),
            "INPUT is a built-in chain: only user-defined chains can be deleted (-F empties it)"
        );
        assert_err_contains(fails(&mut r, "-X NOPE"), "chain 'NOPE' does not exist");
        // -X alone deletes every user-defined chain, or none.
        assert_err_contains(fails(&mut r, "-X"), "chain 'A' is not empty");
        run_ok(&mut r, "-X EMPTY");
        assert_eq!(chain_names(&r), ["INPUT", "FORWARD", "OUTPUT", "A", "B"]);
        // The classic reset: flush everything, then delete every chain.
        run_ok(&mut r, "-F");
        let out = run_ok(&mut r, "-v -X");
        assert_eq!(out.text, "Deleting chain `A'\nDeleting chain `B'\n");
        assert_eq!(chain_names(&r), ["INPUT", "FORWARD", "OUTPUT"]);
    }

    #[test]
    fn rename_chain_moves_the_jumps() {
        let mut r = ruleset(&["-N B", "-N D", "-A INPUT -j B", "-A D -g B", "-A B -j DROP"]);
        run_ok(&mut r, "-E B Z");
        assert_eq!(chain_names(&r), ["INPUT", "FORWARD", "OUTPUT", "D", "Z"]);
        assert_eq!(rules_of(&r, "INPUT"), ["-A INPUT -j Z"]);
        assert_eq!(rules_of(&r, "D"), ["-A D -g Z"]);
        assert_eq!(rules_of(&r, "Z"), ["-A Z -j DROP"]);
        assert_eq!(fails(&mut r, "-E Z D"), "chain 'D' already exists");
        assert_eq!(
            fails(&mut r, "-E INPUT X"),
            "INPUT is a built-in chain: only user-defined chains can be renamed"
        );
        assert_err_contains(fails(&mut r, "-E NOPE X"), "chain 'NOPE' does not exist");
    }

    #[test]
    fn flush_zero_and_list_cover_user_chains() {
        let mut r = ruleset(&[
            "-N U",
            "-N V",
            "-A U -c 5 50 -j ACCEPT",
            "-A INPUT -c 1 10 -j U",
            "-A U -p tcp --dport 22 -g V",
        ]);
        let listing = run_ok(&mut r, "-L -n -v -x").text;
        assert!(listing.contains("\nChain U (1 references)\n"), "{listing}");
        assert!(listing.contains("\nChain V (1 references)\n"), "{listing}");
        assert!(
            listing.contains("       1       10 U          0    --  *      *       0.0.0.0/0            0.0.0.0/0           \n"),
            "{listing}"
        );
        assert!(
            listing.contains(" V          6    --  *      *       0.0.0.0/0            0.0.0.0/0           [goto]  tcp dpt:22\n"),
            "{listing}"
        );
        assert_eq!(
            run_ok(&mut r, "-S").text,
            "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n-N U\n-N V\n-A INPUT -j U\n-A U -j ACCEPT\n-A U -p tcp -m tcp --dport 22 -g V\n"
        );
        assert_eq!(
            run_ok(&mut r, "-S U").text,
            "-N U\n-A U -j ACCEPT\n-A U -p tcp -m tcp --dport 22 -g V\n"
        );
        assert_eq!(
            run_ok(&mut r, "-S U 2").text,
            "-A U -p tcp -m tcp --dport 22 -g V\n"
        );
        run_ok(&mut r, "-Z U");
        assert_eq!(
            r.filter.chain("U").unwrap().rules[0].counter,
            Counter::default()
        );
        assert_eq!(r.filter.chain("INPUT").unwrap().rules[0].counter.packets, 1);
        run_ok(&mut r, "-F");
        assert!(r.filter.chains.iter().all(|c| c.rules.is_empty()));
        assert_eq!(chain_names(&r), ["INPUT", "FORWARD", "OUTPUT", "U", "V"]);
    }

    /// The nat chain's rules as -S prints them.
    fn nat_rules_of(ruleset: &Ruleset, chain: &str) -> Vec<String> {
        let chain = ruleset.nat.chain(chain).unwrap();
        chain
            .rules
            .iter()
            .map(|r| rule_spec(&chain.name, r, CounterStyle::Omit))
            .collect()
    }

    #[test]
    fn every_command_works_on_the_nat_table() {
        let mut r = Ruleset::default();
        run_ok(&mut r, "-t nat -A POSTROUTING -o eth0 -j MASQUERADE");
        run_ok(
            &mut r,
            "-t nat -I POSTROUTING -s 10.0.0.0/8 -o eth0 -j SNAT --to 1.2.3.4",
        );
        run_ok(
            &mut r,
            "-t nat -A PREROUTING -p tcp --dport 80 -j DNAT --to 10.0.0.2",
        );
        run_ok(
            &mut r,
            "-t nat -R PREROUTING 1 -p tcp --dport 80 -j DNAT --to 10.0.0.3:8080",
        );
        run_ok(&mut r, "-t nat -C POSTROUTING -o eth0 -j MASQUERADE");
        assert_eq!(
            nat_rules_of(&r, "POSTROUTING"),
            [
                "-A POSTROUTING -s 10.0.0.0/8 -o eth0 -j SNAT --to-source 1.2.3.4",
                "-A POSTROUTING -o eth0 -j MASQUERADE"
            ]
        );
        assert_eq!(
            nat_rules_of(&r, "PREROUTING"),
            ["-A PREROUTING -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.3:8080"]
        );
        // The filter table is not touched, and the tables do not mix.
        assert!(r.filter.is_pristine());
        assert_err_contains(
            fails(&mut r, "-C POSTROUTING -o eth0 -j ACCEPT"),
            "chain 'POSTROUTING' does not exist in the filter table; POSTROUTING is a chain of the nat table: add -t nat",
        );
        assert_err_contains(
            fails(&mut r, "-t nat -A FORWARD -j ACCEPT"),
            "chain 'FORWARD' does not exist in the nat table; FORWARD is a chain of the filter table: leave out -t nat",
        );
        // -D by specification and by number.
        run_ok(&mut r, "-t nat -D POSTROUTING -o eth0 -j MASQUERADE");
        assert_err_contains(
            fails(&mut r, "-t nat -D POSTROUTING -o eth0 -j MASQUERADE"),
            "no rule in POSTROUTING is '-A POSTROUTING -o eth0 -j MASQUERADE'",
        );
        run_ok(&mut r, "-t nat -D POSTROUTING 1");
        assert!(r.nat.chain("POSTROUTING").unwrap().rules.is_empty());
        // Listings.
        let out = run_ok(&mut r, "-t nat -S");
        assert_eq!(
            out.text,
            "-P PREROUTING ACCEPT\n-P INPUT ACCEPT\n-P OUTPUT ACCEPT\n-P POSTROUTING ACCEPT\n-A PREROUTING -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.3:8080\n"
        );
        let out = run_ok(&mut r, "-t nat -L PREROUTING -n");
        assert_eq!(
            out.text,
            "Chain PREROUTING (policy ACCEPT)\ntarget     prot opt source               destination         \nDNAT       6    --  0.0.0.0/0            0.0.0.0/0            tcp dpt:80 to:10.0.0.3:8080\n"
        );
        assert!(
            run_ok(&mut r, "-L")
                .text
                .starts_with("Chain INPUT (policy ACCEPT)")
        );
        // User-defined chains: -N, -E, -X, jumps.
        run_ok(&mut r, "-t nat -N PORTS");
        run_ok(
            &mut r,
            "-t nat -A PORTS -p udp --dport 53 -j DNAT --to 10.0.0.53",
        );
        run_ok(&mut r, "-t nat -A PREROUTING -j PORTS");
        run_ok(&mut r, "-t nat -E PORTS FORWARDS");
        assert_eq!(
            nat_rules_of(&r, "PREROUTING")[1],
            "-A PREROUTING -j FORWARDS"
        );
        assert_err_contains(
            fails(&mut r, "-t nat -X FORWARDS"),
            "chain 'FORWARDS' is still the target of 1 rule (PREROUTING rule 2)",
        );
        assert_err_contains(
            fails(&mut r, "-A INPUT -j FORWARDS"),
            "jump target 'FORWARDS' does not exist",
        );
        // -Z, -P ACCEPT with counters, -F, -X.
        r.nat.chain_mut("PREROUTING").unwrap().rules[0].counter = Counter {
            packets: 5,
            bytes: 300,
        };
        run_ok(&mut r, "-t nat -P OUTPUT ACCEPT -c 7 70");
        assert_eq!(r.nat.chain("OUTPUT").unwrap().policy_counter.packets, 7);
        run_ok(&mut r, "-t nat -Z");
        assert!(r.nat.chains.iter().all(|c| {
            c.policy_counter == Counter::default()
                && c.rules
                    .iter()
                    .all(|rule| rule.counter == Counter::default())
        }));
        run_ok(&mut r, "-t nat -F");
        run_ok(&mut r, "-t nat -X");
        assert!(r.nat.is_pristine());
    }

    #[test]
    fn nat_targets_reached_from_the_wrong_chain_are_refused() {
        let mut r = ruleset(&[
            "-t nat -N FWD",
            "-t nat -N OUT",
            "-t nat -N DEEP",
            "-t nat -A FWD -p tcp --dport 80 -j DNAT --to 10.0.0.2",
            "-t nat -A OUT -j DEEP",
            "-t nat -A DEEP -j MASQUERADE",
        ]);
        // Unreached, anything goes (as in iptables); from the right chains too.
        run_ok(&mut r, "-t nat -A PREROUTING -j FWD");
        run_ok(&mut r, "-t nat -A OUTPUT -j FWD");
        run_ok(&mut r, "-t nat -A POSTROUTING -j OUT");
        assert_eq!(
            fails(&mut r, "-t nat -A POSTROUTING -j FWD"),
            "rule 1 of the nat chain FWD is -j DNAT, but POSTROUTING reaches it (POSTROUTING -> FWD), where the kernel refuses it: DNAT changes where a new connection goes, before it is routed: use it in PREROUTING (arriving packets) or OUTPUT (locally sent ones)"
        );
        assert_eq!(
            fails(&mut r, "-t nat -I PREROUTING -g OUT"),
            "rule 1 of the nat chain DEEP is -j MASQUERADE, but PREROUTING reaches it (PREROUTING -> OUT -> DEEP), where the kernel refuses it: MASQUERADE takes the address of the interface a packet leaves through, which is known in POSTROUTING only"
        );
        // Adding the rule to a chain already reached is checked the same way.
        assert_err_contains(
            fails(&mut r, "-t nat -A FWD -j SNAT --to-source 1.2.3.4"),
            "rule 2 of the nat chain FWD is -j SNAT, but PREROUTING reaches it (PREROUTING -> FWD)",
        );
        assert_err_contains(
            fails(&mut r, "-t nat -A DEEP -j REDIRECT"),
            "rule 2 of the nat chain DEEP is -j REDIRECT, but POSTROUTING reaches it (POSTROUTING -> OUT -> DEEP)",
        );
        // -m mac: nat PREROUTING only.
        run_ok(&mut r, "-t nat -N MAC");
        run_ok(
            &mut r,
            "-t nat -A MAC -m mac --mac-source 02:00:00:00:00:01 -j ACCEPT",
        );
        run_ok(&mut r, "-t nat -A PREROUTING -j MAC");
        assert_eq!(
            fails(&mut r, "-t nat -A POSTROUTING -j MAC"),
            "rule 1 of chain MAC matches the source MAC (-m mac), but POSTROUTING reaches it (POSTROUTING -> MAC): the kernel matches the source MAC only on arrival, not after routing; jump to MAC from PREROUTING only"
        );
        assert_err_contains(
            fails(&mut r, "-t nat -A OUTPUT -j MAC"),
            "but OUTPUT reaches it (OUTPUT -> MAC): locally sent packets have no source MAC yet; jump to MAC from PREROUTING only",
        );
    }

    #[test]
    fn parsed_commands_are_applied_verbatim() {
        // A command built by the parser directly (no test helper in between).
        let args: Vec<String> = ["-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT"]
            .map(String::from)
            .into();
        let mut r = Ruleset::default();
        apply(&mut r, &parse_iptables_args(&args).unwrap()).unwrap();
        assert_eq!(rules_of(&r, "OUTPUT"), ["-A OUTPUT -o lo -j ACCEPT"]);
    }
}
