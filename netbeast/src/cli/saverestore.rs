//! `iptables-save` and `iptables-restore`, under those names and as `netbeast
//! save` / `netbeast restore`: the options of iptables 1.8's tools, read
//! by one getopt-like parser ([`super::getopt`]) so every name accepts and
//! refuses the same things. An option error exits 1, as those tools do,
//! and applies nothing.

use std::{io::Read, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, Result, bail};

use super::{
    chain_of,
    getopt::{Arg, Item, Opt, getopt},
    plane::{commit_change, open},
    problem_of,
};
use std::os::unix::ffi::OsStringExt;

use crate::{
    rawtext,
    rules::{
        journal,
        model::{Family, TableName},
        save,
    },
    state::{self, Namespace},
};

/// iptables-save's options (1.8). `-b` is refused by iptables too, with a
/// notice; `-M` names a modprobe that netbeast never needs.
const SAVE_OPTIONS: &[Opt] = &[
    Opt::new('b', "binary", Arg::None),
    Opt::new('c', "counters", Arg::None),
    Opt::new('d', "dump", Arg::None),
    Opt::new('t', "table", Arg::Required),
    Opt::new('M', "modprobe", Arg::Required),
    Opt::new('f', "file", Arg::Required),
    Opt::new('V', "version", Arg::None),
    Opt::new('h', "help", Arg::None),
];

/// iptables-restore's options (1.8).
const RESTORE_OPTIONS: &[Opt] = &[
    Opt::new('b', "binary", Arg::None),
    Opt::new('c', "counters", Arg::None),
    Opt::new('v', "verbose", Arg::None),
    Opt::new('V', "version", Arg::None),
    Opt::new('t', "test", Arg::None),
    Opt::new('h', "help", Arg::None),
    Opt::new('n', "noflush", Arg::None),
    Opt::new('T', "table", Arg::Required),
    Opt::new('M', "modprobe", Arg::Required),
    Opt::new('w', "wait", Arg::OptionalNumber),
    Opt::new('W', "wait-interval", Arg::Required),
];

const SAVE_USAGE: &str = "\
Usage: {prog} [-c] [-t table] [-f file] [-M command] [-V] [-h]
Prints the ruleset in iptables-save format.
  -c, --counters        print rule and policy counters ([packets:bytes])
  -t, --table TABLE     only this table (filter, nat or raw)
  -f, --file FILE       write to FILE instead of standard output
  -d, --dump            print the ruleset (the default)
  -M, --modprobe CMD    accepted; netbeast loads no kernel modules
  -V, --version         print the version
  -h, --help            print this help
";

const RESTORE_USAGE: &str = "\
Usage: {prog} [-c] [-v] [-V] [-t] [-h] [-n] [-T table] [-M command] [-w [secs]] [file]
Replaces the ruleset from iptables-save format, atomically: a file with one
bad line applies nothing. Reads standard input when no file is given.
  -c, --counters        restore the [packets:bytes] counters too
  -n, --noflush         append to the current chains instead of replacing them
  -t, --test            only parse and check the file; change nothing
  -T, --table TABLE     restore only this table's sections (filter, nat or raw)
  -v, --verbose         accepted; the ruleset changes in one step
  -w, --wait [SECS]     give up (exit 4) when the lock is not free within
                        SECS; without SECS, or without -w, wait for it
  -W, --wait-interval USECS  accepted, as -w
  -M, --modprobe CMD    accepted; netbeast loads no kernel modules
  -V, --version         print the version
  -h, --help            print this help
";

/// What a command line asked of save or restore, or why it ended early.
enum Parsed<T> {
    Run(T),
    /// `-h` or `-V`: printed, nothing else to do.
    Done,
}

/// Options read; on error the message is printed and the exit code given.
fn read_options(prog: &str, spec: &[Opt], args: &[String]) -> Result<Vec<Item>, ExitCode> {
    getopt(spec, args).map_err(|e| {
        eprintln!("{prog}: {e}");
        eprintln!("Try `{prog} -h' for more information.");
        ExitCode::FAILURE
    })
}

fn version(prog: &str) {
    outln!(
        "{prog} v{} (netbeast {})",
        crate::rules::command::IPTABLES_COMPAT_VERSION,
        env!("CARGO_PKG_VERSION")
    );
}

/// `iptables-save ARGS` / `netbeast save ARGS`.
pub fn save_main(prog: &str, args: &[String], family: Family) -> ExitCode {
    let items = match read_options(prog, SAVE_OPTIONS, args) {
        Ok(items) => items,
        Err(code) => return code,
    };
    finish(
        prog,
        parse_save(prog, items, family).and_then(|p| match p {
            Parsed::Run(options) => run_save(&options, family),
            Parsed::Done => Ok(()),
        }),
    )
}

/// `iptables-restore ARGS` / `netbeast restore ARGS`.
pub fn restore_main(prog: &str, args: &[String], family: Family) -> ExitCode {
    let items = match read_options(prog, RESTORE_OPTIONS, args) {
        Ok(items) => items,
        Err(code) => return code,
    };
    finish(
        prog,
        parse_restore(prog, items, family).and_then(|p| match p {
            Parsed::Run(options) => run_restore(&options, family),
            Parsed::Done => Ok(()),
        }),
    )
}

fn finish(prog: &str, result: Result<()>) -> ExitCode {
    crate::profile::report();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{prog}: {}", chain_of(&e));
            ExitCode::from(problem_of(&e) as u8)
        }
    }
}

/// A table named by `-t`/`-T`: the ones netbeast has, or why not.
fn table_option(option: &str, name: &str, family: Family) -> Result<TableName> {
    match name {
        "filter" => Ok(TableName::Filter),
        "security" if family == Family::V6 => {
            bail!(
                "{option} {name}: netbeast has no IPv6 {name} table yet; it has the IPv6 filter, \
                 nat, raw and mangle tables"
            )
        }
        "nat" => Ok(TableName::Nat),
        "raw" => Ok(TableName::Raw),
        "mangle" => Ok(TableName::Mangle),
        "security" => {
            bail!(
                "{option} {name}: netbeast has no {name} table; it implements filter, nat, raw \
                 and mangle"
            )
        }
        _ => bail!(
            "{option} {name}: table `{name}' does not exist (tables: filter, nat, raw, mangle)"
        ),
    }
}

/// iptables' words for operands it does not take.
fn unknown_arguments(extra: &[String]) -> anyhow::Error {
    anyhow::anyhow!(
        "Unknown arguments found on commandline: {}",
        extra.join(" ")
    )
}

struct SaveOptions {
    counters: bool,
    table: Option<TableName>,
    file: Option<PathBuf>,
}

fn parse_save(prog: &str, items: Vec<Item>, family: Family) -> Result<Parsed<SaveOptions>> {
    let mut options = SaveOptions {
        counters: false,
        table: None,
        file: None,
    };
    let mut extra = Vec::new();
    for item in items {
        match item {
            Item::Opt("counters", _) => options.counters = true,
            Item::Opt("table", Some(t)) => options.table = Some(table_option("-t", &t, family)?),
            Item::Opt("file", Some(f)) => options.file = Some(path(&f)),
            Item::Opt("binary", _) => eprintln!("-b/--binary option is not implemented"),
            Item::Opt("version", _) => {
                version(prog);
                return Ok(Parsed::Done);
            }
            Item::Opt("help", _) => {
                out!("{}", SAVE_USAGE.replace("{prog}", prog));
                return Ok(Parsed::Done);
            }
            // --dump is what save does anyway; --modprobe has nothing to load.
            Item::Opt(_, _) => {}
            Item::Operand(word) => extra.push(word),
        }
    }
    if !extra.is_empty() {
        return Err(unknown_arguments(&extra));
    }
    Ok(Parsed::Run(options))
}

fn run_save(options: &SaveOptions, family: Family) -> Result<()> {
    let ns = Namespace::current()?;
    let _lock = ns.lock()?;
    let (ruleset, _) = open(&ns, false)?;
    let text = match options.table {
        None => save::save_family(&ruleset, family, options.counters),
        Some(table) => save::save_table(ruleset.table_in(family, table), options.counters),
    };
    match &options.file {
        None => out!("{text}"),
        Some(path) => std::fs::write(path, rawtext::to_bytes(&text))
            .with_context(|| format!("cannot write {}", path.display()))?,
    }
    Ok(())
}

struct RestoreOptions {
    /// `-w SECONDS`: how long to wait for the lock at most.
    wait: Option<Duration>,
    noflush: bool,
    counters: bool,
    test: bool,
    table: Option<String>,
    file: Option<PathBuf>,
}

fn parse_restore(prog: &str, items: Vec<Item>, family: Family) -> Result<Parsed<RestoreOptions>> {
    let mut options = RestoreOptions {
        wait: None,
        noflush: false,
        counters: false,
        test: false,
        table: None,
        file: None,
    };
    let mut files = Vec::new();
    for item in items {
        match item {
            Item::Opt("noflush", _) => options.noflush = true,
            Item::Opt("counters", _) => options.counters = true,
            Item::Opt("test", _) => options.test = true,
            Item::Opt("table", Some(t)) => {
                table_option("-T", &t, family)?;
                options.table = Some(t);
            }
            Item::Opt(name @ ("wait" | "wait-interval"), Some(v)) => {
                let Ok(number) = v.parse::<u64>() else {
                    bail!("--{name} {v}: expected a whole number");
                };
                if name == "wait" {
                    options.wait = Some(Duration::from_secs(number));
                }
            }
            Item::Opt("binary", _) => eprintln!("-b/--binary option is not implemented"),
            Item::Opt("version", _) => {
                version(prog);
                return Ok(Parsed::Done);
            }
            Item::Opt("help", _) => {
                out!("{}", RESTORE_USAGE.replace("{prog}", prog));
                return Ok(Parsed::Done);
            }
            // --verbose, --wait without a time, --modprobe: nothing to do.
            Item::Opt(_, _) => {}
            Item::Operand(word) => files.push(word),
        }
    }
    if files.len() > 1 {
        return Err(unknown_arguments(&files[1..]));
    }
    options.file = files.pop().as_deref().map(path);
    Ok(Parsed::Run(options))
}

/// A restore file as text: raw bytes are taken in comments only, as the
/// command line takes them ([`rawtext::check_args`]); anywhere else the
/// file is refused with the line.
fn restore_text(bytes: &[u8], source: &str) -> Result<String> {
    let line_of = |at: usize| bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
    let text = rawtext::from_bytes(bytes).map_err(|e| {
        anyhow::anyhow!("{source}: line {}: {e}; nothing was applied", line_of(e.at))
    })?;
    for (index, line) in text.lines().enumerate() {
        if !rawtext::has_raw(line) {
            continue;
        }
        let outside_comment = match save::split_restore_line(line) {
            Ok(words) => rawtext::check_args(&words).is_some(),
            Err(_) => true,
        };
        if outside_comment {
            bail!(
                "{source}: line {}: not valid UTF-8 outside a --comment ({}); netbeast takes raw \
                 bytes only in comments; nothing was applied",
                index + 1,
                rawtext::display(line).trim()
            );
        }
    }
    Ok(text)
}

/// A file name given as text (which may carry raw bytes).
fn path(text: &str) -> PathBuf {
    PathBuf::from(std::ffi::OsString::from_vec(rawtext::to_bytes(text)))
}

fn run_restore(options: &RestoreOptions, family: Family) -> Result<()> {
    let (bytes, source) = match &options.file {
        Some(path) => (
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
            path.display().to_string(),
        ),
        None => {
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .context("cannot read standard input")?;
            (b, "standard input".to_string())
        }
    };
    let text = restore_text(&bytes, &source)?;
    let mut parsed = save::parse_restore_family(&text, options.table.as_deref(), family)?;
    if !options.counters {
        // As iptables-restore: counters in the file count only with -c.
        parsed.strip_counters();
    }
    let ns = Namespace::current()?;
    let _lock = ns.lock_within(options.wait)?;
    let (before, dp) = open(&ns, !options.test)?;
    // What the diff below reads of the ruleset before: the chains the
    // restore can change, not a copy of all of them.
    let touched = save::touched(&parsed, options.noflush);
    let diffed = journal::diffed_part(&before, &touched);
    let ruleset = save::restored(before, &parsed, options.noflush)?;
    crate::profile::phase("apply the restore");
    super::check_sets(&ns, &ruleset)?;
    if options.test {
        // Compile too, so limits are checked without touching the maps.
        crate::compile::compile(&ruleset, &state::interfaces(&state::links()), 0)?;
        return Ok(());
    }
    let mut dp = dp.expect("opened with create");
    // What changed, counters aside: kube-proxy's sync writes its whole
    // services chain and a few service chains, nearly all as they were,
    // so the journal takes the change rather than the rule file being
    // written whole (`state::Namespace::write_pending_change`; a change
    // past `JOURNAL_MAX_RULES` still is).
    let change = journal::diff_touched(&diffed, &ruleset, &touched);
    drop(diffed);
    crate::profile::phase("diff the ruleset");
    commit_change(&ns, &mut dp, &ruleset, Some(&change))?;
    // The process ends here: the exit frees the ruleset at once, not rule
    // by rule.
    std::mem::forget(ruleset);
    Ok(())
}
