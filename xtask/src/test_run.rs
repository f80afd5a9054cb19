//! `cargo xtask test`: every test tier in one `cargo test` run over the
//! default members (netbeast-common, netbeast, xtask; the kernel crate only
//! builds for BPF and is tested through netbeast's program tier), then one
//! summary of what passed and what did not.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::process::{Command, ExitCode, ExitStatus};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{Ctx, cmd};

/// Set for the tests when `--long` is given; long tests skip themselves
/// without it.
pub const LONG_TESTS_ENV: &str = "NETBEAST_LONG_TESTS";
/// Overrides libtest's thread count (default: one per CPU; the tests are
/// written to run in parallel).
pub const TEST_THREADS_ENV: &str = "NETBEAST_TEST_THREADS";

pub struct Options {
    pub long: bool,
    pub test_threads: Option<u32>,
    pub cargo_test_args: Vec<String>,
}

impl Options {
    pub fn from_env(long: bool, cargo_test_args: Vec<String>) -> Result<Self> {
        let test_threads = match std::env::var(TEST_THREADS_ENV) {
            Ok(value) if !value.trim().is_empty() => Some(parse_threads(&value)?),
            _ => None,
        };
        Ok(Self {
            long,
            test_threads,
            cargo_test_args,
        })
    }
}

fn parse_threads(value: &str) -> Result<u32> {
    match value.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => bail!("{TEST_THREADS_ENV} must be a whole number of threads above 0, not '{value}'"),
    }
}

/// The one `cargo test` that runs every tier. `--no-fail-fast` so that a
/// failing tier does not hide the results of the others.
pub fn command(ctx: &Ctx, options: &Options) -> Command {
    let mut test = cmd::cargo();
    test.current_dir(&ctx.root).args(["test", "--no-fail-fast"]);
    if std::io::stdout().is_terminal() && std::env::var_os("CARGO_TERM_COLOR").is_none() {
        // Our pipe would otherwise turn cargo's colours off.
        test.arg("--color=always");
    }
    test.args(&options.cargo_test_args);
    if let Some(threads) = options.test_threads {
        if !options.cargo_test_args.iter().any(|a| a == "--") {
            test.arg("--");
        }
        test.arg(format!("--test-threads={threads}"));
    }
    if options.long {
        test.env(LONG_TESTS_ENV, "1");
    }
    test
}

pub fn run(ctx: &Ctx, options: &Options) -> Result<ExitCode> {
    let mut test = command(ctx, options);
    if ctx.dry_run {
        println!("would run: {}", cmd::describe(&test));
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("running: {}", cmd::describe(&test));
    let started = Instant::now();
    // One pipe for stdout and stderr keeps cargo's "Running <binary>" lines
    // (stderr) in order with each binary's "test result:" line (stdout).
    let (reader, writer) = std::io::pipe().context("could not create a pipe")?;
    test.stdout(writer.try_clone()?).stderr(writer);
    let mut child = test
        .spawn()
        .with_context(|| format!("could not start `{}`", cmd::describe(&test)))?;
    // The Command still holds the pipe's write end; without dropping it the
    // reader would never see the end of the output.
    drop(test);
    let mut summary = Summary::default();
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    let stdout = std::io::stdout();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let mut out = stdout.lock();
        out.write_all(&line)?;
        out.flush()?;
        summary.feed(&String::from_utf8_lossy(&line));
    }
    let status = child.wait()?;
    let elapsed = started.elapsed().as_secs_f64();
    println!();
    print!("{}", summary.render(status, options.long, elapsed));
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        cmd::exit_code(status)
    })
}

/// Counts from one libtest "test result:" line.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Counts {
    pub passed: u32,
    pub failed: u32,
    pub ignored: u32,
}

#[derive(Debug)]
pub struct BinaryResult {
    /// e.g. "netbeast: unittests src/lib.rs", "network: tests/network.rs",
    /// "Doc-tests netbeast".
    pub label: String,
    /// None when the binary ended without a result line (it crashed).
    pub counts: Option<Counts>,
}

/// Follows cargo test's output and keeps one result per test binary.
#[derive(Debug, Default)]
pub struct Summary {
    pub binaries: Vec<BinaryResult>,
}

impl Summary {
    pub fn feed(&mut self, raw: &str) {
        let line = strip_ansi(raw);
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Running ") {
            self.binaries.push(BinaryResult {
                label: binary_label(rest),
                counts: None,
            });
        } else if line.starts_with("Doc-tests ") {
            self.binaries.push(BinaryResult {
                label: line.to_string(),
                counts: None,
            });
        } else if let Some(counts) = parse_result(line) {
            match self.binaries.last_mut() {
                Some(last) if last.counts.is_none() => last.counts = Some(counts),
                // A result with no "Running" line before it (output we do
                // not recognise): still count it.
                _ => self.binaries.push(BinaryResult {
                    label: "(unnamed test binary)".into(),
                    counts: Some(counts),
                }),
            }
        }
    }

    pub fn totals(&self) -> Counts {
        self.binaries
            .iter()
            .filter_map(|b| b.counts)
            .fold(Counts::default(), |sum, c| Counts {
                passed: sum.passed + c.passed,
                failed: sum.failed + c.failed,
                ignored: sum.ignored + c.ignored,
            })
    }

    pub fn render(&self, status: ExitStatus, long: bool, elapsed_secs: f64) -> String {
        let mut out = String::from("test summary:\n");
        let width = self
            .binaries
            .iter()
            .map(|b| b.label.len())
            .max()
            .unwrap_or(0);
        for binary in &self.binaries {
            let (word, counts) = match binary.counts {
                Some(c) if c.failed == 0 => ("ok", describe_counts(c)),
                Some(c) => ("FAILED", describe_counts(c)),
                None => (
                    "CRASHED",
                    "ended without a result (crash or abort: see its output above)".into(),
                ),
            };
            out.push_str(&format!("  {word:<8}{:<width$}  {counts}\n", binary.label));
        }
        let totals = self.totals();
        let crashed = self.binaries.iter().filter(|b| b.counts.is_none()).count();
        let verdict = if status.success() { "ok" } else { "FAILED" };
        let binaries = match self.binaries.len() {
            1 => "1 test binary".to_string(),
            n => format!("{n} test binaries"),
        };
        let mut line = format!(
            "xtask test: {verdict}: {} in {binaries}",
            describe_counts(totals)
        );
        if status.success() && totals.passed + totals.failed == 0 {
            line.push_str("; no test ran: check the filter");
        }
        if crashed > 0 {
            line.push_str(&format!(", {crashed} crashed"));
        }
        if !status.success() && totals.failed == 0 && crashed == 0 {
            line.push_str(&format!(
                "; cargo test itself failed ({status}): a build error? see above"
            ));
        }
        line.push_str(&format!(
            " (long tests {}, {elapsed_secs:.1} s)\n",
            if long { "on" } else { "off: --long runs them" }
        ));
        out.push_str(&line);
        out
    }
}

fn describe_counts(c: Counts) -> String {
    let mut text = format!("{} passed, {} failed", c.passed, c.failed);
    if c.ignored > 0 {
        text.push_str(&format!(", {} ignored", c.ignored));
    }
    text
}

/// "unittests src/lib.rs (target/debug/deps/netbeast-0a1b2c3d)" →
/// "netbeast: unittests src/lib.rs".
fn binary_label(running: &str) -> String {
    let Some((source, binary)) = running.rsplit_once(" (") else {
        return running.to_string();
    };
    let file = binary
        .trim_end_matches(')')
        .rsplit('/')
        .next()
        .unwrap_or(binary);
    // Strip cargo's "-<16 hex digits>" metadata suffix.
    let name = match file.rsplit_once('-') {
        Some((name, hash)) if !hash.is_empty() && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            name
        }
        _ => file,
    };
    format!("{name}: {source}")
}

/// Parses "test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; …".
fn parse_result(line: &str) -> Option<Counts> {
    let rest = line.strip_prefix("test result: ")?;
    let (_, numbers) = rest.split_once(". ")?;
    let mut counts = Counts::default();
    for part in numbers.split(';') {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse() else { continue };
        match what {
            "passed" => counts.passed = n,
            "failed" => counts.failed = n,
            "ignored" => counts.ignored = n,
            _ => {}
        }
    }
    Some(counts)
}

/// Removes terminal colour sequences (ESC [ … letter).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn ctx() -> Ctx {
        Ctx {
            root: "/repo".into(),
            dry_run: true,
        }
    }

    fn words(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .filter(|a| a != "--color=always")
            .collect()
    }

    #[test]
    fn plain_test_runs_default_members_without_workspace_flag() {
        let options = Options {
            long: false,
            test_threads: None,
            cargo_test_args: vec![],
        };
        let cmd = command(&ctx(), &options);
        assert_eq!(words(&cmd), ["test", "--no-fail-fast"]);
        assert_eq!(cmd.get_current_dir(), Some(std::path::Path::new("/repo")));
        assert!(cmd.get_envs().all(|(k, _)| k != LONG_TESTS_ENV));
    }

    #[test]
    fn long_and_threads_reach_the_tests() {
        let options = Options {
            long: true,
            test_threads: Some(3),
            cargo_test_args: vec!["parser".into()],
        };
        let cmd = command(&ctx(), &options);
        assert_eq!(
            words(&cmd),
            ["test", "--no-fail-fast", "parser", "--", "--test-threads=3"]
        );
        assert!(
            cmd.get_envs()
                .any(|(k, v)| k == LONG_TESTS_ENV && v == Some("1".as_ref()))
        );
    }

    #[test]
    fn threads_join_libtest_args_the_user_gave() {
        let options = Options {
            long: false,
            test_threads: Some(1),
            cargo_test_args: vec!["--".into(), "--nocapture".into()],
        };
        assert_eq!(
            words(&command(&ctx(), &options)),
            [
                "test",
                "--no-fail-fast",
                "--",
                "--nocapture",
                "--test-threads=1"
            ]
        );
    }

    #[test]
    fn thread_count_must_be_positive() {
        assert_eq!(parse_threads(" 4 ").unwrap(), 4);
        assert!(parse_threads("0").is_err());
        assert!(parse_threads("many").is_err());
        assert!(parse_threads("-2").is_err());
    }

    const OUTPUT: &str = "\
   Compiling netbeast v0.1.0 (/work/main/netbeast)
    Finished `test` profile [unoptimized + debuginfo] target(s) in 9.1s
     Running unittests src/lib.rs (target/debug/deps/netbeast-0f4d7f2a3c1b9e88)

running 3 tests
test rules::parse::tests::a ... ok
test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s

     Running tests/network.rs (target/debug/deps/network-11aa22bb33cc44dd)

running 2 tests
test firewall ... FAILED
test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 2.50s

     Running tests/program.rs (target/debug/deps/program-99aa22bb33cc44dd)

running 5 tests
   Doc-tests netbeast_common

running 0 tests
test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
";

    #[test]
    fn summary_follows_each_binary() {
        let mut summary = Summary::default();
        for line in OUTPUT.lines() {
            summary.feed(line);
        }
        let labels: Vec<&str> = summary.binaries.iter().map(|b| b.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "netbeast: unittests src/lib.rs",
                "network: tests/network.rs",
                "program: tests/program.rs",
                "Doc-tests netbeast_common"
            ]
        );
        assert_eq!(summary.binaries[2].counts, None, "program crashed");
        assert_eq!(
            summary.totals(),
            Counts {
                passed: 4,
                failed: 1,
                ignored: 1
            }
        );
        let text = summary.render(ExitStatus::from_raw(101 << 8), false, 12.0);
        assert!(text.contains("FAILED  network: tests/network.rs"), "{text}");
        assert!(text.contains("CRASHED program: tests/program.rs"), "{text}");
        assert!(
            text.contains(
                "xtask test: FAILED: 4 passed, 1 failed, 1 ignored in 4 test binaries, 1 crashed"
            ),
            "{text}"
        );
    }

    #[test]
    fn coloured_result_lines_are_understood() {
        let line = "test result: \u{1b}[32mok\u{1b}[0m. 7 passed; 0 failed; 2 ignored; 0 measured";
        assert_eq!(
            parse_result(&strip_ansi(line)),
            Some(Counts {
                passed: 7,
                failed: 0,
                ignored: 2
            })
        );
    }

    #[test]
    fn a_build_failure_is_not_reported_as_success() {
        let summary = Summary::default();
        let text = summary.render(ExitStatus::from_raw(101 << 8), true, 3.0);
        assert!(text.contains("xtask test: FAILED: 0 passed, 0 failed in 0 test binaries; cargo test itself failed"), "{text}");
    }
}
