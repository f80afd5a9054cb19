//! iptables' own extension tests, in the format of its `iptables-test.py`,
//! run against netbeast's command line (issue 11: they are the acceptance
//! reference for netbeast's syntax).
//!
//! A test file (`*.t`) holds, line by line:
//! - `# ...` comments and blank lines;
//! - `:CHAIN,CHAIN`: the chains the following rules are tried in;
//! - `*table`: the table of the following rules (`-t table`);
//! - `@cmd` or `%cmd`: a command run as is (`@iptables -N FOO`);
//! - `RULE;SAVED;RESULT[;VARIANT[;ALT]]`: for each chain, `iptables -A CHAIN
//!   RULE` must succeed (RESULT `OK` or `NOMATCH`) or be refused (`FAIL`);
//!   once accepted, `-S` must list `-A CHAIN SAVED` (`=` means SAVED is RULE)
//!   for `OK` and must not for `NOMATCH`; then `-D CHAIN RULE` must delete
//!   it. VARIANT (`NFT` or `LEGACY`) scopes RESULT to that iptables build;
//!   the other build expects ALT, or the opposite of RESULT.
//!
//! Beyond iptables-test.py, the runner checks that `-D` leaves the chain
//! empty (iptables-test.py only deletes). Each file starts from an empty
//! ruleset (a fresh `nbt-` namespace for the command-line sides).
//!
//! netbeast runs in-process by default: the library's parser, `apply` (the
//! code behind `netbeast iptables`), the classifier compiler (a rule it
//! cannot compile is refused, as the command line would) and the ruleset's
//! JSON storage round trip between commands; what the command line adds
//! is loading the maps, at about a second a command, hence
//! `NETBEAST_XT_CLI=1` to run the built binary (`--netns`) instead.
//!
//! Data: netbeast's own files in `tests/fixtures/extensions/` by default,
//! every line also run through the real iptables of this machine as the
//! oracle (in its own namespace), so the data is iptables' behaviour and
//! not ours. `NETBEAST_XT_TESTS=/path/to/iptables/extensions` runs the real
//! files instead; their lines that netbeast's parser answers with "not
//! supported yet" are skipped and listed with that answer.
//!
//! Environment:
//! - `NETBEAST_XT_TESTS=DIR`: the directory of `*.t` files to run.
//! - `NETBEAST_XT_ORACLE=0|1`: run the lines through real iptables too
//!   (default: on for netbeast's data, off for `NETBEAST_XT_TESTS`).
//! - `NETBEAST_XT_VARIANT=NFT|LEGACY`: which build netbeast stands for in
//!   variant-scoped lines (default NFT, as the distribution's iptables).
//! - `NETBEAST_XT_CLI=1`: run netbeast's binary rather than its library.
//!
//! Needs root. Run: `cargo test -p netbeast --test extensions -- --nocapture`.

use std::{
    cell::RefCell,
    fmt,
    path::{Path, PathBuf},
    process::Command,
};

use netbeast::{
    compile,
    netns::{Netns, require_root},
    rules::{
        command,
        model::{Family, Ruleset},
        parse::{self, ParseError},
        save,
    },
};

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
const OWN_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/extensions");
const XT_TESTS_ENV: &str = "NETBEAST_XT_TESTS";
const ORACLE_ENV: &str = "NETBEAST_XT_ORACLE";
const VARIANT_ENV: &str = "NETBEAST_XT_VARIANT";
const CLI_ENV: &str = "NETBEAST_XT_CLI";
/// Test files run at once (each side of each file in its own namespace);
/// the machine's cores bound it further.
const MAX_PARALLEL_FILES: usize = 4;

/// Lines of netbeast's data where the iptables of this machine (1.8.9,
/// nf_tables) is known to disagree with iptables' current behaviour and its
/// own test files, which are the reference (issue 11): the oracle skips
/// them, with the reason. Keyed by file and rule, exactly as written.
const ORACLE_KNOWN_WRONG: &[(&str, &str, &str)] = &[
    (
        "tcp.t",
        "-p tcp -m tcp ! --sport 0:65535 -j DROP",
        NFT_DROPS_NEGATED_FULL_RANGE,
    ),
    (
        "tcp.t",
        "-p tcp -m tcp ! --dport : -j DROP",
        NFT_DROPS_NEGATED_FULL_RANGE,
    ),
    (
        "tcp.t",
        "-p tcp ! --sport : ! --dport :",
        NFT_DROPS_NEGATED_FULL_RANGE,
    ),
    (
        "tcp.t",
        "-p tcp -m tcp ! --sport :65535",
        NFT_DROPS_NEGATED_FULL_RANGE,
    ),
    (
        "tcp.t",
        "-p tcp -m tcp --sport 0:65535 ! --dport 0:",
        NFT_DROPS_NEGATED_FULL_RANGE,
    ),
    (
        "tcp.t",
        "-p tcp -m tcp ! --dport 0:65534",
        NFT_REWRITES_NEGATED_RANGE,
    ),
    (
        "tcp.t",
        "! -p tcp -m tcp --dport 22",
        NFT_SKIPS_PROTOCOL_CHECK,
    ),
    ("tcp.t", "! -p tcp --dport 22", NFT_SKIPS_PROTOCOL_CHECK),
    (
        "udp.t",
        "-p udp -m udp ! --sport 0:65535 -j DROP",
        NFT_DROPS_NEGATED_FULL_RANGE,
    ),
    (
        "udp.t",
        "-p udp -m udp ! --dport : -j DROP",
        NFT_DROPS_NEGATED_FULL_RANGE,
    ),
    (
        "udp.t",
        "-p udp ! --sport : ! --dport :",
        NFT_DROPS_NEGATED_FULL_RANGE,
    ),
    (
        "udp.t",
        "-p udp -m udp ! --sport :65535",
        NFT_DROPS_NEGATED_FULL_RANGE,
    ),
    (
        "udp.t",
        "-p udp -m udp --sport 0:65535 ! --dport 0:",
        NFT_DROPS_NEGATED_FULL_RANGE,
    ),
    (
        "udp.t",
        "-p udp -m udp ! --dport 0:65534",
        NFT_REWRITES_NEGATED_RANGE,
    ),
    (
        "udp.t",
        "! -p udp -m udp --dport 22",
        NFT_SKIPS_PROTOCOL_CHECK,
    ),
    ("udp.t", "! -p udp --dport 22", NFT_SKIPS_PROTOCOL_CHECK),
    ("udp.t", "-p udp -m udp --sport 9:8", UDP_RANGE_UNCHECKED),
    (
        "udp.t",
        "-p udp -m udp --dport 65535:0",
        UDP_RANGE_UNCHECKED,
    ),
    ("udp.t", "-p udp -m udp --dport 65536", UDP_RANGE_UNCHECKED),
    (
        "udp.t",
        "-p udp -m udp --sport 1:65536",
        UDP_RANGE_UNCHECKED,
    ),
    (
        "icmp.t",
        "-p icmp -m icmp ! --icmp-type 255/255",
        NFT_ICMP_255_IS_ANY,
    ),
    (
        "standard.t",
        "! -s 0.0.0.0/0 -j ACCEPT",
        NFT_REFUSES_NEGATED_ZERO_PREFIX,
    ),
    (
        "standard.t",
        "! -d 0.0.0.0/0 -j DROP",
        NFT_REFUSES_NEGATED_ZERO_PREFIX,
    ),
    (
        "standard.t",
        "--src=192.0.2.1 --dst=192.0.2.2 -jDROP",
        GETOPT_ATTACHED_VALUES,
    ),
    (
        "standard.t",
        "-d192.0.2.0/24 -s192.0.2.1",
        GETOPT_ATTACHED_VALUES,
    ),
    ("standard.t", "--protocol=udp", GETOPT_ATTACHED_VALUES),
    ("standard.t", "-ptcp", GETOPT_ATTACHED_VALUES),
    (
        "standard.t",
        "--in-interface=eth0 --out-interface=eth1",
        GETOPT_ATTACHED_VALUES,
    ),
    (
        "LOG.t",
        "-j LOG --log-prefix 123456789012345678901234567890",
        LOG_PREFIX_CUT,
    ),
    (
        "conntrack.t",
        "-m conntrack --ctproto 0",
        CONNTRACK_1_8_9_UNCHECKED,
    ),
    (
        "conntrack.t",
        "-m conntrack ! --ctproto all",
        CONNTRACK_1_8_9_UNCHECKED,
    ),
    (
        "conntrack.t",
        "-m conntrack --ctorigsrc 10.0.0.1/33",
        CONNTRACK_1_8_9_UNCHECKED,
    ),
    (
        "conntrack.t",
        "-m conntrack --ctorigsrcport 65536",
        CONNTRACK_1_8_9_UNCHECKED,
    ),
    (
        "conntrack.t",
        "-m conntrack --ctorigsrcport 4:3",
        CONNTRACK_1_8_9_UNCHECKED,
    ),
    (
        "conntrack.t",
        "-m conntrack --ctexpire 4:3",
        CONNTRACK_1_8_9_UNCHECKED,
    ),
    (
        "conntrack.t",
        "-m conntrack --ctrepldst 10.1.2.3/255.0.255.0",
        NFT_DROPS_CONNTRACK_NETMASK,
    ),
];
const NFT_DROPS_CONNTRACK_NETMASK: &str = "iptables-nft 1.8.9 lists a conntrack address \
     with a non-contiguous netmask without its mask; libxt_conntrack prints the mask \
     (xtables_ipmask_to_numeric: '/255.0.255.0') and the kernel compares under it";
const CONNTRACK_1_8_9_UNCHECKED: &str = "libxt_conntrack 1.8.9 (nf_tables) takes it and \
     lists something else (protocol 0, /32, port 0, the range as written); iptables' \
     libxt_conntrack.t expects FAIL for --ctproto 0 and reversed ranges, and the kernel's \
     own limits refuse the rest";
const LOG_PREFIX_CUT: &str = "iptables 1.8.9 cuts a --log-prefix longer than 29 characters \
     without a word; later iptables refuse it (\"Maximum prefix length 29\"), as netbeast does";
const NFT_DROPS_NEGATED_FULL_RANGE: &str = "iptables-nft 1.8.9 lists '! --sport 0:65535' \
     (a match on no packet) as nothing at all; iptables' libxt_tcp.t/libxt_udp.t expect \
     '! --sport 0:65535'";
const NFT_REWRITES_NEGATED_RANGE: &str = "iptables-nft 1.8.9 lists '! --dport 0:65534' as the \
     equivalent '--dport 65535'; iptables-legacy lists it as written";
const UDP_RANGE_UNCHECKED: &str = "libxt_udp 1.8.9 does not check port ranges; libxt_tcp \
     does, and iptables' libxt_udp.t now expects FAIL as for tcp";
const NFT_SKIPS_PROTOCOL_CHECK: &str = "iptables-nft 1.8.9 skips the kernel's check that the \
     tcp/udp match has a protocol that is not negated; iptables-legacy refuses the rule";
const NFT_ICMP_255_IS_ANY: &str = "iptables-nft 1.8.9 lists type 255 with any code as \
     'any'; iptables' libipt_icmp.t expects '--icmp-type 255/255' as written";
const NFT_REFUSES_NEGATED_ZERO_PREFIX: &str = "iptables-nft 1.8.9 builds a zero-length \
     compare the kernel refuses (EINVAL); iptables-legacy accepts and lists it as written";
const GETOPT_ATTACHED_VALUES: &str = "iptables 1.8.9 takes an attached value ('-ptcp', \
     '--src=...') as a separate word; iptables' libipt_standard.t expects it to work";

fn oracle_known_wrong(line: &Line) -> Option<&'static str> {
    ORACLE_KNOWN_WRONG
        .iter()
        .find(|(file, rule, _)| line.file == *file && line.rule == *rule)
        .map(|(.., why)| *why)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Ok,
    Fail,
    NoMatch,
}

impl Expect {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "OK" => Some(Expect::Ok),
            "FAIL" => Some(Expect::Fail),
            "NOMATCH" => Some(Expect::NoMatch),
            _ => None,
        }
    }

    /// The result for a build other than the one a line is scoped to.
    fn inverse(self) -> Self {
        match self {
            Expect::Ok => Expect::Fail,
            Expect::Fail | Expect::NoMatch => Expect::Ok,
        }
    }
}

/// One line of a test file, with what the lines before it set.
#[derive(Clone, Debug)]
struct Line {
    file: String,
    lineno: usize,
    table: Option<String>,
    chains: Vec<String>,
    rule: String,
    /// What `-S` lists after `-A CHAIN `.
    saved: String,
    /// The result scoped to a build, as written.
    expect: Expect,
    variant: Option<(String, Option<Expect>)>,
}

impl Line {
    fn expect_for(&self, variant: &str) -> Expect {
        match &self.variant {
            Some((scope, _)) if scope == variant => self.expect,
            Some((_, Some(alt))) => *alt,
            Some((_, None)) => self.expect.inverse(),
            None => self.expect,
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    /// `@cmd` / `%cmd`.
    External {
        lineno: usize,
        command: String,
    },
    Rule(Line),
}

/// Reads a test file as iptables-test.py does; a line it would reject
/// (a rule before any chain line, a RESULT that is none of OK, FAIL and
/// NOMATCH) is an error naming the line.
fn read_file(path: &Path) -> Result<Vec<Step>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into(),
    );
    let mut steps = Vec::new();
    let mut table = None;
    let mut chains: Vec<String> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let lineno = index + 1;
        let line = raw.trim_end();
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(list) = line.strip_prefix(':') {
            chains = list.split(',').map(str::to_string).collect();
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            table = Some(name.to_string());
            continue;
        }
        if let Some(command) = line.strip_prefix('@').or_else(|| line.strip_prefix('%')) {
            steps.push(Step::External {
                lineno,
                command: command.to_string(),
            });
            continue;
        }
        if chains.is_empty() {
            return Err(format!(
                "{file}:{lineno}: a rule before any ':CHAIN' line; start the file with ':INPUT'"
            ));
        }
        let fields: Vec<&str> = line.split(';').collect();
        if fields.len() < 3 {
            return Err(format!(
                "{file}:{lineno}: expected RULE;SAVED;RESULT, got '{line}'"
            ));
        }
        let bad_result = |text: &str| {
            format!("{file}:{lineno}: result '{text}' is none of OK, FAIL and NOMATCH")
        };
        let expect = Expect::parse(fields[2]).ok_or_else(|| bad_result(fields[2]))?;
        // iptables-test.py ignores an alternative result it cannot use.
        let variant = fields.get(3).map(|scope| {
            (
                scope.to_string(),
                fields.get(4).and_then(|a| Expect::parse(a)),
            )
        });
        let saved = if fields[1] == "=" {
            fields[0]
        } else {
            fields[1]
        };
        steps.push(Step::Rule(Line {
            file: file.clone(),
            lineno,
            table: table.clone(),
            chains: chains.clone(),
            rule: fields[0].to_string(),
            saved: saved.to_string(),
            expect,
            variant,
        }));
    }
    Ok(steps)
}

/// Splits a command line as the shell that iptables-test.py runs it with
/// does for these files: blanks separate words, single quotes keep text as
/// is, double quotes keep it but a backslash escapes `"` and `\`, a
/// backslash outside quotes escapes the next character.
fn shell_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unclosed ' in {text}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unclosed \" in {text}")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("unclosed \" in {text}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Where the lines run: netbeast's library or command line, or the real
/// iptables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Library,
    Cli,
    Iptables,
}

impl Side {
    fn is_netbeast(self) -> bool {
        self != Side::Iptables
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Library => "netbeast",
            Side::Cli => "netbeast-cli",
            Side::Iptables => "iptables",
        })
    }
}

struct Outcome {
    success: bool,
    stdout: String,
    stderr: String,
}

struct Runner {
    side: Side,
    /// Which command the lines are for: `iptables` or `ip6tables`.
    family: Family,
    /// The command-line sides' namespace.
    ns: Option<Netns>,
    /// The library side's ruleset, as stored between commands.
    stored: RefCell<String>,
}

impl Runner {
    fn new(side: Side, family: Family) -> Self {
        let ns = match side {
            Side::Library => None,
            Side::Cli => Some(
                Netns::new("xt")
                    .expect("creating a test namespace")
                    .with_netbeast(NETBEAST),
            ),
            Side::Iptables => Some(Netns::new("xt").expect("creating a test namespace")),
        };
        let stored = serde_json::to_string(&Ruleset::default()).unwrap();
        Runner {
            side,
            family,
            ns,
            stored: RefCell::new(stored),
        }
    }

    /// `iptables ARGS` on this side.
    fn iptables(&self, args: &[String]) -> Outcome {
        let ns = || self.ns.as_ref().unwrap();
        let output = match self.side {
            Side::Library => return self.library(args),
            // --netns: the real command-line path, without an `ip netns exec`.
            Side::Cli => Command::new(NETBEAST)
                .args(["--netns", ns().name(), self.family.command()])
                .args(args)
                .output(),
            Side::Iptables => ns().command(self.family.command()).args(args).output(),
        }
        .expect("running iptables");
        Outcome {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        }
    }

    /// For the library side: what is wrong when `netbeast save` and
    /// `netbeast restore` of the ruleset do not give it back as it is (a
    /// rule printed as another rule is lost in a reboot).
    fn round_trip_problem(&self) -> Option<String> {
        if self.side != Side::Library {
            return None;
        }
        let ruleset: Ruleset = serde_json::from_str(&self.stored.borrow()).unwrap();
        let text = save::save_family(&ruleset, self.family, true);
        let mut restored = Ruleset::default();
        let result = save::parse_restore_family(&text, None, self.family)
            .map_err(|e| e.to_string())
            .and_then(|file| {
                save::apply_restore(&mut restored, &file, false).map_err(|e| e.to_string())
            });
        match result {
            Err(e) => Some(format!("restore of its own save fails: {e}\n{text}")),
            Ok(()) if restored != ruleset => Some(format!(
                "save/restore changes the ruleset: saved\n{text}restored\n{}",
                save::save_family(&restored, self.family, true)
            )),
            Ok(()) => None,
        }
    }

    /// What `netbeast iptables ARGS` does short of loading the maps: parse,
    /// apply, compile, store.
    fn library(&self, args: &[String]) -> Outcome {
        let failed = |stderr: String| Outcome {
            success: false,
            stdout: String::new(),
            stderr,
        };
        let cmd = match parse::parse_args(args, self.family) {
            Ok(cmd) => cmd,
            Err(e) => return failed(e.to_string()),
        };
        let mut ruleset: Ruleset = serde_json::from_str(&self.stored.borrow()).unwrap();
        let out = match command::apply(&mut ruleset, &cmd) {
            Ok(out) => out,
            Err(e) => return failed(e.to_string()),
        };
        if cmd.changes_ruleset() {
            // The library side holds no ipsets: a rule naming one names a
            // set that does not exist, which the command line refuses.
            if let Some((name, _)) = netbeast::cli::ipset::named_sets(&ruleset).pop_first() {
                return failed(format!("Set {name} doesn't exist"));
            }
            if let Err(e) = compile::compile(&ruleset, &[], 1) {
                return failed(e.to_string());
            }
            *self.stored.borrow_mut() = serde_json::to_string(&ruleset).unwrap();
        }
        Outcome {
            success: true,
            stdout: out.text,
            stderr: String::new(),
        }
    }
}

#[derive(Default)]
struct Report {
    lines: usize,
    passed: usize,
    failures: Vec<String>,
    skipped: Vec<String>,
    /// Oracle lines skipped as [`ORACLE_KNOWN_WRONG`].
    known: Vec<String>,
}

impl Report {
    fn merge(&mut self, other: Report) {
        self.lines += other.lines;
        self.passed += other.passed;
        self.failures.extend(other.failures);
        self.skipped.extend(other.skipped);
        self.known.extend(other.known);
    }
}

/// The arguments of `iptables -A|-D CHAIN [-t TABLE] RULE`.
fn command_args(verb: &str, chain: &str, table: Option<&str>, rule: &[String]) -> Vec<String> {
    let mut args = vec![verb.to_string(), chain.to_string()];
    if let Some(table) = table {
        args.extend(["-t".to_string(), table.to_string()]);
    }
    args.extend(rule.iter().cloned());
    args
}

/// The rule without `-c`/`--set-counters` and its values, which `-D`
/// refuses (as iptables-test.py strips them before deleting).
fn without_counters(words: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = words.iter();
    while let Some(word) = rest.next() {
        if word == "-c" || word == "--set-counters" {
            // `-c PKTS BYTES` or `-c PKTS,BYTES`.
            if let Some(value) = rest.next()
                && !value.contains(',')
            {
                rest.next();
            }
            continue;
        }
        out.push(word.clone());
    }
    out
}

/// netbeast's parser's own answer that an extension, option or table is not
/// implemented yet: the lines a real iptables file may hold beyond netbeast.
fn not_supported_yet(args: &[String], family: Family) -> Option<String> {
    match parse::parse_args(args, family) {
        Err(
            e @ (ParseError::Unsupported { .. }
            | ParseError::UnsupportedTable(_)
            | ParseError::Ipv6Unsupported { .. }
            | ParseError::Ipv6UnsupportedTable(_)),
        ) => Some(e.to_string()),
        _ => None,
    }
}

/// The rules `-S` lists in the table, as `-A CHAIN ...` lines.
fn listed_rules(runner: &Runner, table: Option<&str>, chain: Option<&str>) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(table) = table {
        args.extend(["-t".to_string(), table.to_string()]);
    }
    args.push("-S".to_string());
    args.extend(chain.map(str::to_string));
    let listed = runner.iptables(&args);
    assert!(
        listed.success,
        "{} iptables {} failed: {}",
        runner.side,
        args.join(" "),
        listed.stderr
    );
    listed
        .stdout
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(str::to_string)
        .collect()
}

/// Runs one line in one chain; `Err` says what went wrong.
fn run_line_in_chain(
    runner: &Runner,
    line: &Line,
    chain: &str,
    words: &[String],
    expect: Expect,
) -> Result<(), String> {
    let table = line.table.as_deref();
    let append = command_args("-A", chain, table, words);
    let shown = format!("iptables {}", append.join(" "));
    let added = runner.iptables(&append);
    let delete = command_args("-D", chain, table, &without_counters(words));
    match (added.success, expect) {
        (false, Expect::Fail) => return Ok(()),
        (false, _) => return Err(format!("cannot load: {shown}: {}", added.stderr)),
        (true, Expect::Fail) => {
            let _ = runner.iptables(&delete);
            return Err(format!("should fail: {shown}"));
        }
        (true, _) => {}
    }
    if let Some(problem) = runner.round_trip_problem() {
        let _ = runner.iptables(&delete);
        return Err(format!("after {shown}: {problem}"));
    }
    let wanted = format!("-A {chain} {}", line.saved);
    let listed = listed_rules(runner, table, None);
    let found = listed.contains(&wanted);
    let mut problem = match (found, expect) {
        (false, Expect::Ok) => Some(format!(
            "cannot find '{wanted}' after {shown}; -S lists: {listed:?}"
        )),
        (true, Expect::NoMatch) => Some(format!("should not list '{wanted}' after {shown}")),
        _ => None,
    };
    let deleted = runner.iptables(&delete);
    if !deleted.success {
        problem.get_or_insert(format!(
            "cannot delete: iptables {}: {}",
            delete.join(" "),
            deleted.stderr
        ));
    } else {
        let left = listed_rules(runner, table, Some(chain));
        if !left.is_empty() {
            problem.get_or_insert(format!(
                "iptables {} left {left:?} in {chain}",
                delete.join(" ")
            ));
            // Start the next line from an empty chain all the same.
            let mut flush = vec!["-F".to_string(), chain.to_string()];
            if let Some(table) = table {
                flush.extend(["-t".to_string(), table.to_string()]);
            }
            runner.iptables(&flush);
        }
    }
    problem.map_or(Ok(()), Err)
}

/// Runs every line of one file on one side, in a fresh namespace.
fn run_file(
    (side, family): (Side, Family),
    variant: &str,
    path: &Path,
    steps: &[Step],
    report: &mut Report,
) {
    let runner = Runner::new(side, family);
    let file = path.file_name().unwrap().to_string_lossy().into_owned();
    // After an external command this side cannot run, the file's later
    // lines may depend on it (a chain it creates): they are skipped.
    let mut blocked: Option<String> = None;
    for step in steps {
        match step {
            Step::External { lineno, command } => {
                let words = shell_words(command).unwrap_or_default();
                let Some((_, args)) = words
                    .split_first()
                    .filter(|(program, _)| program.as_str() == family.command())
                else {
                    blocked.get_or_insert(format!(
                        "{file}:{lineno}: external command '{command}' is not run by this test"
                    ));
                    continue;
                };
                let done = runner.iptables(args);
                if !done.success {
                    blocked.get_or_insert(format!(
                        "{file}:{lineno}: {side} could not run '{command}': {}",
                        done.stderr
                    ));
                }
            }
            Step::Rule(line) => {
                report.lines += 1;
                let at = format!(
                    "{}:{} [{side} {}] {}",
                    line.file,
                    line.lineno,
                    family.command(),
                    line.rule
                );
                if let Some(reason) = &blocked {
                    report.skipped.push(format!("{at}: after {reason}"));
                    continue;
                }
                let words = match shell_words(&line.rule) {
                    Ok(words) => words,
                    Err(e) => {
                        report.failures.push(format!("{at}: {e}"));
                        continue;
                    }
                };
                if side.is_netbeast()
                    && let Some(reason) = line.chains.iter().find_map(|chain| {
                        not_supported_yet(
                            &command_args("-A", chain, line.table.as_deref(), &words),
                            family,
                        )
                    })
                {
                    report.skipped.push(format!("{at}: {reason}"));
                    continue;
                }
                if side == Side::Iptables
                    && let Some(reason) = oracle_known_wrong(line)
                {
                    report.known.push(format!("{at}: {reason}"));
                    report.passed += 1;
                    continue;
                }
                let expect = line.expect_for(variant);
                let mut failed = false;
                for chain in &line.chains {
                    if let Err(e) = run_line_in_chain(&runner, line, chain, &words, expect) {
                        report.failures.push(format!("{at} ({chain}): {e}"));
                        failed = true;
                        break;
                    }
                }
                if !failed {
                    report.passed += 1;
                }
            }
        }
    }
}

/// The commands iptables-test.py runs a file's lines with, by the name's
/// prefix: `libip6t_` with ip6tables, `libxt_` with both, `libipt_` and
/// netbeast's own unprefixed files with iptables; or why it runs none.
fn families_of(path: &Path) -> Result<&'static [Family], &'static str> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if name.starts_with("libarpt_") {
        Err("an arptables file")
    } else if name.starts_with("libebt_") {
        Err("an ebtables file")
    } else if name.starts_with("libip6t_") {
        Ok(&[Family::V6])
    } else if name.starts_with("libxt_") {
        Ok(&[Family::V4, Family::V6])
    } else {
        Ok(&[Family::V4])
    }
}

/// The `*.t` files of `dir`, sorted.
fn test_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "t"))
        .collect();
    files.sort();
    files
}

/// Which build the machine's iptables is, as variant-scoped lines name it.
fn iptables_variant() -> String {
    let out = Command::new("iptables")
        .arg("-V")
        .output()
        .expect("running iptables -V (the oracle needs the real iptables)");
    if String::from_utf8_lossy(&out.stdout).contains("nf_tables") {
        "NFT".to_string()
    } else {
        "LEGACY".to_string()
    }
}

#[test]
fn extension_test_files() {
    require_root();
    let real_files = std::env::var_os(XT_TESTS_ENV);
    let dir = real_files
        .as_ref()
        .map_or_else(|| PathBuf::from(OWN_DATA), PathBuf::from);
    let oracle = match std::env::var(ORACLE_ENV).as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        Ok(other) => panic!("{ORACLE_ENV}={other}: use 1 (run real iptables too) or 0"),
        Err(_) => real_files.is_none(),
    };
    let variant = std::env::var(VARIANT_ENV).unwrap_or_else(|_| "NFT".to_string());
    assert!(
        variant == "NFT" || variant == "LEGACY",
        "{VARIANT_ENV}={variant}: use NFT or LEGACY"
    );
    let mut runs: Vec<(PathBuf, Family)> = Vec::new();
    for path in test_files(&dir) {
        match families_of(&path) {
            Ok(families) => runs.extend(families.iter().map(|f| (path.clone(), *f))),
            Err(why) => println!("skipped file {}: {why}", path.display()),
        }
    }
    assert!(
        !runs.is_empty(),
        "no iptables or ip6tables *.t files in {}",
        dir.display()
    );

    let cli = match std::env::var(CLI_ENV).as_deref() {
        Ok("1") => true,
        Ok("0") | Err(_) => false,
        Ok(other) => panic!("{CLI_ENV}={other}: use 1 (run the binary) or 0"),
    };
    let ours = if cli { Side::Cli } else { Side::Library };
    let mut sides = vec![(ours, variant.clone())];
    if oracle {
        sides.push((Side::Iptables, iptables_variant()));
    }
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_PARALLEL_FILES);
    let mut reports = Vec::new();
    for (side, variant) in &sides {
        // Files in turn on each worker, reports merged in file order.
        let per_file: Vec<(Family, Report)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|worker| {
                    let runs = &runs;
                    scope.spawn(move || {
                        let mut done = Vec::new();
                        for (index, (path, family)) in runs.iter().enumerate() {
                            if index % workers != worker {
                                continue;
                            }
                            let mut report = Report::default();
                            match read_file(path) {
                                Ok(steps) => {
                                    run_file((*side, *family), variant, path, &steps, &mut report)
                                }
                                Err(e) => report.failures.push(e),
                            }
                            done.push((index, (*family, report)));
                        }
                        done
                    })
                })
                .collect();
            let mut all: Vec<(usize, (Family, Report))> = handles
                .into_iter()
                .flat_map(|h| h.join().expect("a test file's worker panicked"))
                .collect();
            all.sort_by_key(|(index, _)| *index);
            all.into_iter().map(|(_, r)| r).collect()
        });
        for family in [Family::V4, Family::V6] {
            let files = runs.iter().filter(|(_, f)| *f == family).count();
            if files == 0 {
                continue;
            }
            let mut report = Report::default();
            for (_, r) in per_file.iter().filter(|(f, _)| *f == family) {
                report.merge(Report {
                    lines: r.lines,
                    passed: r.passed,
                    failures: r.failures.clone(),
                    skipped: r.skipped.clone(),
                    known: r.known.clone(),
                });
            }
            reports.push((*side, family, files, report));
        }
    }

    let mut failed = false;
    for (side, family, files, report) in &reports {
        println!(
            "{side} ({}): {} lines of {files} files in {}: {} passed, {} failed, {} skipped",
            family.command(),
            report.lines,
            dir.display(),
            report.passed,
            report.failures.len(),
            report.skipped.len()
        );
        for skip in &report.skipped {
            println!("  skipped {skip}");
        }
        for known in &report.known {
            println!("  not checked (known iptables difference) {known}");
        }
        for failure in &report.failures {
            println!("  FAILED {failure}");
        }
        failed |= !report.failures.is_empty();
        // netbeast's own data covers only what netbeast implements.
        if real_files.is_none() && !report.skipped.is_empty() {
            println!("  netbeast's own data must not need skipping");
            failed = true;
        }
    }
    assert!(!failed, "extension test lines failed; see the list above");
}

#[test]
fn reads_the_file_format() {
    let dir = std::env::temp_dir().join(format!("nbt-xt-format-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sample.t");
    std::fs::write(
        &path,
        "# comment\n:INPUT,OUTPUT\n-p tcp;=;OK\n*nat\n:PREROUTING\n\
         @iptables -t nat -N X\n-j X;-j X;OK;NFT;FAIL\n-m bad;;FAIL;LEGACY\n",
    )
    .unwrap();
    let steps = read_file(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let Step::Rule(first) = &steps[0] else {
        panic!("{steps:?}")
    };
    assert_eq!(first.chains, ["INPUT", "OUTPUT"]);
    assert_eq!(
        (first.saved.as_str(), first.table.as_deref()),
        ("-p tcp", None)
    );
    assert!(
        matches!(&steps[1], Step::External { command, .. } if command == "iptables -t nat -N X")
    );
    let Step::Rule(jump) = &steps[2] else {
        panic!("{steps:?}")
    };
    assert_eq!(jump.table.as_deref(), Some("nat"));
    assert_eq!(jump.expect_for("NFT"), Expect::Ok);
    assert_eq!(jump.expect_for("LEGACY"), Expect::Fail);
    let Step::Rule(bad) = &steps[3] else {
        panic!("{steps:?}")
    };
    assert_eq!(bad.expect_for("NFT"), Expect::Ok);
    assert_eq!(
        shell_words(r#"-m comment --comment "a \"b\" c" 'd e' f\ g """#).unwrap(),
        ["-m", "comment", "--comment", r#"a "b" c"#, "d e", "f g", ""]
    );
}
