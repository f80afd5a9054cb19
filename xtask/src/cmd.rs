//! Small helpers around `std::process::Command`: show what runs, honour
//! `--dry-run`, and answer "is this program here?" questions.

use std::ffi::OsStr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, ExitStatus, Output, Stdio};

use anyhow::{Context, Result};

use crate::Ctx;

/// The cargo that runs us (cargo sets `CARGO`), so a rustup toolchain
/// override stays in force for the builds we start.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The command line as a person would type it, with the environment it sets.
pub fn describe(cmd: &Command) -> String {
    let mut words = Vec::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            words.push(format!(
                "{}={}",
                key.to_string_lossy(),
                quote(value.to_string_lossy().as_ref())
            ));
        }
    }
    let program = cmd.get_program().to_string_lossy();
    // `cargo` from $CARGO is a full path; the short name reads better.
    let program = if program.ends_with("/cargo") {
        "cargo".into()
    } else {
        program
    };
    words.push(quote(&program));
    words.extend(cmd.get_args().map(|a| quote(&a.to_string_lossy())));
    words.join(" ")
}

fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Runs `cmd` with the terminal attached, after printing it; in a dry run
/// only prints it and reports success.
pub fn run(ctx: &Ctx, cmd: &mut Command) -> Result<ExitStatus> {
    if ctx.dry_run {
        println!("would run: {}", describe(cmd));
        return Ok(ExitStatus::from_raw(0));
    }
    eprintln!("running: {}", describe(cmd));
    cmd.status()
        .with_context(|| format!("could not start `{}`", describe(cmd)))
}

/// Runs a check quietly and returns its output; `None` when the program
/// cannot be started at all (not installed, or its libraries are missing
/// in a way the loader reports before main).
pub fn capture<I, S>(program: &str, args: I) -> Option<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
}

/// Stdout of a successful check, else `None`.
pub fn stdout_of<I, S>(program: &str, args: I) -> Option<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    capture(program, args)
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last `n` lines of a failed command's output, to show what went wrong
/// without flooding the terminal.
pub fn tail(out: &Output, n: usize) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("    | {l}\n"))
        .collect()
}

/// Where `name` would be found on PATH.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// True for an effective uid of 0, read from /proc so that xtask needs no
/// libc binding.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| effective_uid(&status))
        == Some(0)
}

fn effective_uid(proc_status: &str) -> Option<u32> {
    let line = proc_status.lines().find(|l| l.starts_with("Uid:"))?;
    // Uid: real effective saved filesystem
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Exit code of a child, with the shell's 128 + signal convention when it
/// was killed.
pub fn exit_code(status: ExitStatus) -> ExitCode {
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_uid_is_the_second_number() {
        let status = "Name:\tcargo\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(effective_uid(status), Some(0));
        let status = "Uid:\t0\t1000\t1000\t1000\n";
        assert_eq!(effective_uid(status), Some(1000));
        assert_eq!(effective_uid("Name: x\n"), None);
    }

    #[test]
    fn describe_shows_env_and_quotes_only_when_needed() {
        let mut cmd = Command::new("cargo");
        cmd.env("NETBEAST_LONG_TESTS", "1")
            .args(["test", "--no-fail-fast", "a b", "it's"]);
        assert_eq!(
            describe(&cmd),
            r"NETBEAST_LONG_TESTS=1 cargo test --no-fail-fast 'a b' 'it'\''s'"
        );
    }

    #[test]
    fn exit_code_follows_the_child() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), ExitCode::from(3));
        // Killed by SIGKILL (9): the shell would say 137.
        assert_eq!(exit_code(ExitStatus::from_raw(9)), ExitCode::from(137));
    }
}
