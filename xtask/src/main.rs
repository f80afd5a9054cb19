//! `cargo xtask`: everything a fresh machine needs to build, test and try
//! netbeast, behind one command per job. Plain `std::process::Command` calls
//! so that what runs is what a person would type.

mod cmd;
mod package;
mod setup;
mod test_run;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Set up this machine, build, test and try netbeast",
    after_help = "A fresh machine needs only: cargo xtask demo   (or)   cargo xtask test"
)]
struct Cli {
    /// Check what is there, then print the commands that would run instead of running them
    #[arg(long, global = true)]
    dry_run: bool,
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what this machine lacks (Debian packages, rust-src, bpf-linker) and mount bpffs;
    /// quick when nothing is missing
    Setup,
    /// Setup, then build the release binary (target/release/netbeast)
    Build,
    /// Setup, then run every test tier: unit, program (BPF_PROG_TEST_RUN) and network
    /// (namespaces); needs root
    Test {
        /// Also run the long tests (exported to the tests as NETBEAST_LONG_TESTS=1)
        #[arg(long)]
        long: bool,
        /// Passed to `cargo test` as they are, e.g. a test name filter: `cargo xtask test -- parser`.
        /// NETBEAST_TEST_THREADS=N sets libtest's --test-threads
        #[arg(last = true)]
        cargo_test_args: Vec<String>,
    },
    /// Setup, build, then run `netbeast demo`: the article, section by section, on throwaway
    /// network namespaces; needs root
    Demo,
    /// Setup, build, then run `netbeast bench ARGS...` (`--help` goes to netbeast)
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup, build, then make the Debian package target/debian/netbeast_VERSION_ARCH.deb:
    /// the binary, the iptables links in /usr/lib/netbeast/bin (never over the system's),
    /// the systemd units, completions and the man page
    Package,
}

/// What every task needs to know about this run.
pub struct Ctx {
    /// The workspace root; every command runs there.
    pub root: PathBuf,
    pub dry_run: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = Ctx {
        root: workspace_root(),
        dry_run: cli.dry_run,
    };
    match run(&ctx, cli.task) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(ctx: &Ctx, task: Task) -> Result<ExitCode> {
    match task {
        Task::Setup => {
            setup::run(ctx)?;
            Ok(ExitCode::SUCCESS)
        }
        Task::Build => {
            setup::run(ctx)?;
            build_release(ctx)?;
            Ok(ExitCode::SUCCESS)
        }
        Task::Test {
            long,
            cargo_test_args,
        } => {
            // Checked before setup: the answer is the same either way, and
            // it is the one thing the user must change.
            require_root(
                ctx,
                "test",
                "the program and network tiers load BPF programs and create network namespaces",
            )?;
            let options = test_run::Options::from_env(long, cargo_test_args)?;
            setup::run(ctx)?;
            test_run::run(ctx, &options)
        }
        Task::Demo => {
            require_root(
                ctx,
                "demo",
                "it creates network namespaces and attaches BPF programs",
            )?;
            setup::run(ctx)?;
            build_release(ctx)?;
            run_netbeast(ctx, &["demo".to_string()])
        }
        Task::Bench { args } => {
            setup::run(ctx)?;
            build_release(ctx)?;
            let mut netbeast_args = vec!["bench".to_string()];
            netbeast_args.extend(args);
            run_netbeast(ctx, &netbeast_args)
        }
        Task::Package => {
            setup::run(ctx)?;
            build_release(ctx)?;
            let binary = target_dir(&ctx.root).join("release").join("netbeast");
            let out_dir = target_dir(&ctx.root).join("debian");
            if ctx.dry_run {
                println!(
                    "would package {} into {}",
                    binary.display(),
                    out_dir.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            std::fs::create_dir_all(&out_dir)
                .with_context(|| format!("creating {}", out_dir.display()))?;
            let deb = package::build(&ctx.root, &binary, &out_dir)?;
            println!("{}", deb.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// xtask lives one level below the workspace root; the path is fixed at
/// compile time, so `cargo xtask` works from any directory of the checkout.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace")
        .to_path_buf()
}

fn require_root(ctx: &Ctx, task: &str, why: &str) -> Result<()> {
    if cmd::is_root() {
        return Ok(());
    }
    if ctx.dry_run {
        eprintln!(
            "warning: `cargo xtask {task}` needs root ({why}); this dry run goes on without it"
        );
        return Ok(());
    }
    bail!(
        "`cargo xtask {task}` needs root: {why}; run it as root, e.g. `sudo -E env \"PATH=$PATH\" cargo xtask {task}`"
    )
}

fn build_release(ctx: &Ctx) -> Result<()> {
    let mut build = cmd::cargo();
    build
        .args(["build", "--release", "-p", "netbeast"])
        .current_dir(&ctx.root);
    let status = cmd::run(ctx, &mut build)?;
    if !status.success() {
        bail!("`{}` failed ({status})", cmd::describe(&build));
    }
    Ok(())
}

/// Runs the release binary with `args` and hands back its exit code, so that
/// `cargo xtask demo` fails exactly when `netbeast demo` does.
fn run_netbeast(ctx: &Ctx, args: &[String]) -> Result<ExitCode> {
    let binary = target_dir(&ctx.root).join("release").join("netbeast");
    if !ctx.dry_run && !binary.exists() {
        bail!(
            "{} is missing after the build; is CARGO_TARGET_DIR pointing somewhere else?",
            binary.display()
        );
    }
    let mut netbeast = Command::new(&binary);
    netbeast.args(args).current_dir(&ctx.root);
    let status = cmd::run(ctx, &mut netbeast)
        .with_context(|| format!("could not run {}", binary.display()))?;
    Ok(cmd::exit_code(status))
}

/// Where cargo puts its output: the same rules cargo follows for the
/// environment, else `<root>/target`.
fn target_dir(root: &Path) -> PathBuf {
    for var in ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"] {
        if let Some(dir) = std::env::var_os(var).filter(|d| !d.is_empty()) {
            // Child cargo runs in `root`, so a relative dir is relative to it.
            return root.join(dir);
        }
    }
    root.join("target")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bench_forwards_every_argument_including_help() {
        let cli = Cli::try_parse_from(["cargo xtask", "bench", "--rules", "10000", "--help"])
            .expect("bench takes any arguments");
        match cli.task {
            Task::Bench { args } => assert_eq!(args, ["--rules", "10000", "--help"]),
            _ => panic!("parsed as another task"),
        }
    }

    #[test]
    fn test_takes_long_and_cargo_args_after_double_dash() {
        let cli = Cli::try_parse_from(["cargo xtask", "test", "--long", "--", "parser"])
            .expect("valid test invocation");
        match cli.task {
            Task::Test {
                long,
                cargo_test_args,
            } => {
                assert!(long);
                assert_eq!(cargo_test_args, ["parser"]);
            }
            _ => panic!("parsed as another task"),
        }
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml"))
            .expect("workspace Cargo.toml is readable");
        assert!(manifest.contains("[workspace]"));
    }
}
