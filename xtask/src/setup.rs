//! `cargo xtask setup`: check every thing netbeast needs and install only
//! what is missing, one line per step. With nothing missing it runs a handful
//! of read-only checks and takes well under a second.

use std::fmt::Display;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Result, bail};

use crate::{Ctx, cmd};

/// A Debian package and the command it provides, for machines without dpkg.
struct Package {
    name: &'static str,
    command: &'static str,
}

/// What the tests, the demo and the benchmarks run (TOOLCHAIN.md §6).
const REQUIRED_PACKAGES: &[Package] = &[
    Package {
        name: "iproute2",
        command: "ip",
    },
    Package {
        name: "iptables",
        command: "iptables",
    },
    Package {
        name: "nftables",
        command: "nft",
    },
    Package {
        name: "ethtool",
        command: "ethtool",
    },
    // tests/daemon.rs verifies the shipped systemd units.
    Package {
        name: "systemd",
        command: "systemd-analyze",
    },
    // tests/state.rs, crash.rs and daemon.rs make and read maps with it.
    Package {
        name: "bpftool",
        command: "bpftool",
    },
    // tests/ipset.rs compares netbeast's ipset with the real one.
    Package {
        name: "ipset",
        command: "ipset",
    },
    // tests/fail2ban.rs runs fail2ban (only inside its test namespaces, in
    // a private mount namespace and with a private configuration). Its
    // service is not started by the install (see `Apt::install`).
    Package {
        name: "fail2ban",
        command: "fail2ban-server",
    },
    // tests/ufw.rs runs ufw on private copies of its files, in namespaces.
    Package {
        name: "ufw",
        command: "ufw",
    },
    // `cargo xtask package` strips the binary, as dh_strip does.
    Package {
        name: "binutils",
        command: "strip",
    },
];

/// For looking at traffic by hand; nothing automated depends on them.
const MANUAL_TOOLS: &[Package] = &[
    Package {
        name: "tcpdump",
        command: "tcpdump",
    },
    Package {
        name: "iputils-ping",
        command: "ping",
    },
    Package {
        name: "conntrack",
        command: "conntrack",
    },
    Package {
        name: "netsniff-ng",
        command: "trafgen",
    },
];

const BPFFS: &str = "/sys/fs/bpf";

/// How many lines of a failed installer's output to show.
const FAILURE_TAIL_LINES: usize = 15;

#[derive(Clone, Copy, PartialEq)]
enum Status {
    Ok,
    Installed,
    Missing,
    Warning,
    Failed,
}

/// Collects the outcome of every step so that setup can go on after a
/// failure (the user learns everything that is wrong in one run) and still
/// fail at the end.
struct Steps {
    failed: Vec<String>,
    dry_run: bool,
}

impl Steps {
    fn report(&mut self, status: Status, step: &str, detail: impl Display) {
        let word = match status {
            Status::Ok => "ok",
            Status::Installed => "installed",
            Status::Missing => "missing",
            Status::Warning => "warning",
            Status::Failed => "FAILED",
        };
        println!("setup: {word:<9} {step}: {detail}");
        // A dry run that finds something missing must not look like success.
        if status == Status::Failed || status == Status::Missing {
            self.failed.push(step.to_string());
        }
    }
}

pub fn run(ctx: &Ctx) -> Result<()> {
    let started = Instant::now();
    let mut steps = Steps {
        failed: Vec::new(),
        dry_run: ctx.dry_run,
    };
    let mut apt = Apt::default();
    packages(&mut steps, &mut apt, "packages", REQUIRED_PACKAGES, true);
    packages(&mut steps, &mut apt, "manual tools", MANUAL_TOOLS, false);
    let rustc = RustcInfo::read();
    rust_src(&mut steps, rustc.as_ref());
    bpf_linker(&mut steps, rustc.as_ref());
    bpffs(&mut steps);
    bpffs_alias(&mut steps);
    let elapsed = started.elapsed().as_secs_f64();
    if steps.failed.is_empty() {
        println!("setup: done in {elapsed:.1} s");
        Ok(())
    } else if ctx.dry_run {
        // A dry run goes on, so that it can show what the task runs next.
        println!(
            "setup: would install: {} (dry run, nothing changed)",
            steps.failed.join(", ")
        );
        Ok(())
    } else {
        bail!(
            "setup failed for: {}; see the FAILED lines above for what to do",
            steps.failed.join(", ")
        )
    }
}

// ---------------------------------------------------------------------------
// Debian packages

/// Debian's hook that tells package scripts whether they may start a
/// service.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// Runs `apt-get update` at most once per setup, and only when something
/// has to be installed.
#[derive(Default)]
struct Apt {
    updated: bool,
}

impl Apt {
    fn install(&mut self, names: &[&str]) -> Result<(), String> {
        if !self.updated {
            let out = cmd::capture("apt-get", ["-q", "update"])
                .ok_or("apt-get not found: install the packages with your package manager")?;
            if !out.status.success() {
                return Err(format!(
                    "`apt-get update` failed:\n{}",
                    cmd::tail(&out, FAILURE_TAIL_LINES)
                ));
            }
            self.updated = true;
        }
        // The packages' services must not start on this host: fail2ban's
        // would run its stock sshd jail against the host's own firewall,
        // and the tests run every such program only inside their own
        // namespaces. invoke-rc.d asks policy-rc.d, and 101 says "not
        // now"; one already in place is left as it is.
        let policy = std::path::Path::new(POLICY_RC_D);
        let placed = !policy.exists()
            && std::fs::write(policy, "#!/bin/sh\nexit 101\n").is_ok()
            && std::fs::set_permissions(
                policy,
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .is_ok();
        let out = Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(names)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output();
        if placed {
            let _ = std::fs::remove_file(policy);
        }
        let out = out.map_err(|e| format!("could not run apt-get: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`apt-get install {}` failed:\n{}",
                names.join(" "),
                cmd::tail(&out, FAILURE_TAIL_LINES)
            ))
        }
    }
}

fn packages(steps: &mut Steps, apt: &mut Apt, step: &str, wanted: &[Package], required: bool) {
    let all: Vec<&str> = wanted.iter().map(|p| p.name).collect();
    let Some(missing) = missing_packages(wanted) else {
        // No dpkg: not Debian. Fall back to the commands themselves.
        let absent: Vec<&str> = wanted
            .iter()
            .filter(|p| cmd::find_program(p.command).is_none())
            .map(|p| p.name)
            .collect();
        if absent.is_empty() {
            steps.report(Status::Ok, step, all.join(" "));
        } else {
            let status = if required {
                Status::Failed
            } else {
                Status::Warning
            };
            steps.report(
                status,
                step,
                format!(
                    "not a Debian system (no dpkg-query) and {} not found: install them with your package manager",
                    absent.join(" ")
                ),
            );
        }
        return;
    };
    if missing.is_empty() {
        steps.report(Status::Ok, step, all.join(" "));
        return;
    }
    let names = missing.join(" ");
    if steps.dry_run {
        steps.report(
            if required { Status::Missing } else { Status::Warning },
            step,
            format!("{names} (would run: apt-get update; DEBIAN_FRONTEND=noninteractive apt-get install -y {names})"),
        );
        return;
    }
    let problem = if required {
        Status::Failed
    } else {
        Status::Warning
    };
    if !cmd::is_root() {
        steps.report(
            problem,
            step,
            format!("{names} missing; run setup as root (`sudo -E env \"PATH=$PATH\" cargo xtask setup`) or `apt-get install {names}`"),
        );
        return;
    }
    println!("setup: ...       {step}: installing {names} with apt-get");
    match apt.install(&missing) {
        Ok(()) => steps.report(Status::Installed, step, names),
        Err(why) if required => steps.report(
            Status::Failed,
            step,
            format!("{why}    install {names} by hand, then run `cargo xtask setup` again"),
        ),
        Err(_) => {
            // One unavailable tool must not cost the others: retry one by one.
            let mut installed = Vec::new();
            let mut unavailable = Vec::new();
            for name in &missing {
                match apt.install(&[name]) {
                    Ok(()) => installed.push(*name),
                    Err(_) => unavailable.push(*name),
                }
            }
            if !installed.is_empty() {
                steps.report(Status::Installed, step, installed.join(" "));
            }
            steps.report(
                Status::Warning,
                step,
                format!(
                    "{} not available from apt; only needed for manual checks",
                    unavailable.join(" ")
                ),
            );
        }
    }
}

/// Packages of `wanted` that dpkg does not list as installed; `None` when
/// there is no dpkg.
fn missing_packages(wanted: &[Package]) -> Option<Vec<&'static str>> {
    // dpkg-query exits 1 when some name is unknown, but still lists the
    // others: its output is the answer, not its status.
    let out = cmd::capture(
        "dpkg-query",
        std::iter::once("-W")
            .chain(std::iter::once("-f=${Package} ${Status}\\n"))
            .chain(wanted.iter().map(|p| p.name)),
    )?;
    let listing = String::from_utf8_lossy(&out.stdout);
    Some(
        wanted
            .iter()
            .map(|p| p.name)
            .filter(|name| !dpkg_lists_installed(&listing, name))
            .collect(),
    )
}

/// True when a `${Package} ${Status}` listing shows `name` installed
/// ("install ok installed", or "hold ok installed").
fn dpkg_lists_installed(listing: &str, name: &str) -> bool {
    listing.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some(name) && words.last() == Some("installed")
    })
}

// ---------------------------------------------------------------------------
// Rust: rust-src and bpf-linker

/// What `rustc -vV` and `rustc --print sysroot` say about the active toolchain.
struct RustcInfo {
    release: String,
    llvm_major: u32,
}

impl RustcInfo {
    fn read() -> Option<Self> {
        let verbose = cmd::stdout_of("rustc", ["-vV"])?;
        Some(Self {
            release: field(&verbose, "release:")?.to_string(),
            llvm_major: llvm_major_of_rustc(&verbose)?,
        })
    }
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .map(str::trim)
}

/// The major of "LLVM version: 22.1.2" in `rustc -vV`.
fn llvm_major_of_rustc(verbose: &str) -> Option<u32> {
    field(verbose, "LLVM version:")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

fn rust_src(steps: &mut Steps, rustc: Option<&RustcInfo>) {
    const STEP: &str = "rust-src";
    let Some(rustc) = rustc else {
        steps.report(
            Status::Failed,
            STEP,
            "rustc -vV did not run: install Rust with rustup (https://rustup.rs)",
        );
        return;
    };
    let Some(installed) = cmd::stdout_of("rustup", ["component", "list", "--installed"]) else {
        // Not a rustup toolchain: the sources are either there or not.
        let there = cmd::stdout_of("rustc", ["--print", "sysroot"])
            .map(|s| {
                Path::new(s.trim())
                    .join("lib/rustlib/src/rust/library/core")
                    .is_dir()
            })
            .unwrap_or(false);
        if there {
            steps.report(Status::Ok, STEP, format!("rustc {}", rustc.release));
        } else {
            steps.report(
                Status::Failed,
                STEP,
                "no rustup and no library sources in the sysroot: the eBPF build needs `-Z build-std=core`; install Rust with rustup",
            );
        }
        return;
    };
    if installed.lines().any(|l| l.trim() == "rust-src") {
        steps.report(Status::Ok, STEP, format!("rustc {}", rustc.release));
        return;
    }
    if steps.dry_run {
        steps.report(
            Status::Missing,
            STEP,
            "would run: rustup component add rust-src",
        );
        return;
    }
    match cmd::capture("rustup", ["component", "add", "rust-src"]) {
        Some(out) if out.status.success() => {
            steps.report(Status::Installed, STEP, format!("rustc {}", rustc.release))
        }
        Some(out) => steps.report(
            Status::Failed,
            STEP,
            format!(
                "`rustup component add rust-src` failed (network?):\n{}",
                cmd::tail(&out, FAILURE_TAIL_LINES)
            ),
        ),
        None => steps.report(Status::Failed, STEP, "could not run rustup"),
    }
}

/// What the bpf-linker on PATH is, as far as running it can tell.
#[derive(Debug, PartialEq)]
enum Linker {
    Missing,
    /// Installed but does not start, usually because the libLLVM it was
    /// linked against went away with a toolchain update.
    Broken(String),
    Ready {
        version: String,
        /// None when LLVM is linked statically and the major cannot be read.
        llvm_major: Option<u32>,
    },
}

fn inspect_bpf_linker() -> Linker {
    if cmd::find_program("bpf-linker").is_none() {
        return Linker::Missing;
    }
    let Some(out) = cmd::capture("bpf-linker", ["--version"]) else {
        return Linker::Broken("could not start".into());
    };
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        return Linker::Broken(
            why.lines()
                .next()
                .unwrap_or("exits with an error")
                .to_string(),
        );
    }
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // The dynamic loader's own report (what `ldd` prints) names the libLLVM
    // actually loaded; it runs nothing of the program.
    let loaded = Command::new("bpf-linker")
        .arg("--version")
        .env("LD_TRACE_LOADED_OBJECTS", "1")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    Linker::Ready {
        version,
        llvm_major: linked_llvm_major(&loaded),
    }
}

/// The LLVM major in a loader line such as
/// `libLLVM.so.22.1-rust-1.95.0-stable => /…/libLLVM.so.22.1-rust-1.95.0-stable (0x…)`
/// or `libLLVM-19.so.1 => …`.
fn linked_llvm_major(loaded: &str) -> Option<u32> {
    let soname = loaded
        .split_whitespace()
        .find(|word| word.starts_with("libLLVM"))?;
    let rest = soname
        .strip_prefix("libLLVM.so.")
        .or_else(|| soname.strip_prefix("libLLVM-"))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn bpf_linker(steps: &mut Steps, rustc: Option<&RustcInfo>) {
    const STEP: &str = "bpf-linker";
    let Some(rustc) = rustc else {
        steps.report(Status::Failed, STEP, "needs rustc (see the rust-src line)");
        return;
    };
    let want = rustc.llvm_major;
    let reinstall = match inspect_bpf_linker() {
        Linker::Ready {
            version,
            llvm_major: Some(major),
        } if major == want => {
            steps.report(
                Status::Ok,
                STEP,
                format!("{version}, LLVM {major} as rustc"),
            );
            return;
        }
        Linker::Ready {
            version,
            llvm_major: None,
        } => {
            steps.report(
                Status::Ok,
                STEP,
                format!("{version} (LLVM linked statically, its major cannot be checked; rustc has LLVM {want})"),
            );
            return;
        }
        Linker::Ready {
            llvm_major: Some(major),
            ..
        } => {
            println!(
                "setup: ...       {STEP}: linked against LLVM {major}, rustc has LLVM {want}: rebuilding it"
            );
            true
        }
        Linker::Broken(why) => {
            println!("setup: ...       {STEP}: installed but broken ({why}): rebuilding it");
            true
        }
        Linker::Missing => false,
    };
    if steps.dry_run {
        steps.report(
            Status::Missing,
            STEP,
            format!("would run: LLVM_PREFIX={} cargo install bpf-linker --no-default-features --features llvm-{want}",
                llvm_prefix().map(|p| p.display().to_string()).unwrap_or_else(|_| "?".into())),
        );
        return;
    }
    match install_bpf_linker(want, reinstall) {
        Ok(()) => match inspect_bpf_linker() {
            Linker::Ready { version, llvm_major } if llvm_major.is_none_or(|m| m == want) => {
                steps.report(Status::Installed, STEP, format!("{version}, LLVM {want} as rustc"))
            }
            other => steps.report(
                Status::Failed,
                STEP,
                format!("installed, but the bpf-linker on PATH is {other:?}: is ~/.cargo/bin on PATH, ahead of other copies?"),
            ),
        },
        Err(why) => steps.report(Status::Failed, STEP, format!("{why:#}")),
    }
}

/// A lasting home for the libLLVM links: the installed binary keeps this
/// path as its rpath (TOOLCHAIN.md §2).
fn llvm_prefix() -> Result<PathBuf> {
    let data = match std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            Some(home) => PathBuf::from(home).join(".local/share"),
            None => bail!("HOME is not set: cannot choose where to keep the LLVM links"),
        },
    };
    Ok(data.join("netbeast/llvm"))
}

/// The toolchain's shared libLLVM, e.g. `libLLVM.so.22.1-rust-1.95.0-stable`.
fn is_rust_libllvm(file_name: &str, major: u32) -> bool {
    file_name.starts_with(&format!("libLLVM.so.{major}.")) && file_name.contains("-rust-")
}

fn install_bpf_linker(major: u32, reinstall: bool) -> Result<()> {
    let sysroot = cmd::stdout_of("rustc", ["--print", "sysroot"])
        .map(|s| PathBuf::from(s.trim()))
        .ok_or_else(|| anyhow::anyhow!("`rustc --print sysroot` failed"))?;
    let sysroot_lib = sysroot.join("lib");
    let libllvm = std::fs::read_dir(&sysroot_lib)?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| is_rust_libllvm(n, major))
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no libLLVM.so.{major}.*-rust-* in {}: this toolchain does not ship a shared LLVM; install an LLVM {major} development package and `cargo install bpf-linker` against it",
                sysroot_lib.display()
            )
        })?;
    let prefix = llvm_prefix()?;
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib)?;
    // `libLLVM.so` is what the build links; the file's own name is its
    // soname, which the loader looks up through the rpath at run time, so
    // bpf-linker starts even outside cargo (no rustup LD_LIBRARY_PATH).
    let soname = libllvm
        .file_name()
        .expect("a file from read_dir has a name");
    for link in [lib.join("libLLVM.so"), lib.join(soname)] {
        if link.symlink_metadata().is_ok() {
            std::fs::remove_file(&link)?;
        }
        symlink(&libllvm, &link)?;
    }
    let mut install = cmd::cargo();
    install
        .args([
            "install",
            "bpf-linker",
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{major}"))
        .env("LLVM_PREFIX", &prefix);
    if reinstall {
        install.arg("--force");
    }
    println!(
        "setup: ...       bpf-linker: building it against rustc's LLVM {major} (a few minutes): {}",
        cmd::describe(&install)
    );
    let out = install.output()?;
    if !out.status.success() {
        bail!(
            "`{}` failed:\n{}    fix the cause above, then run `cargo xtask setup` again",
            cmd::describe(&install),
            cmd::tail(&out, FAILURE_TAIL_LINES)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// bpffs

fn bpffs(steps: &mut Steps) {
    const STEP: &str = "bpffs";
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if bpffs_mounted(&mounts) {
        steps.report(Status::Ok, STEP, format!("mounted at {BPFFS}"));
        return;
    }
    if steps.dry_run {
        steps.report(
            Status::Missing,
            STEP,
            format!("would run: mount -t bpf bpf {BPFFS}"),
        );
        return;
    }
    if !cmd::is_root() {
        // Everything that pins needs root anyway, and netbeast mounts it
        // itself when it runs as root: not a reason to fail a build.
        steps.report(
            Status::Warning,
            STEP,
            format!(
                "not mounted at {BPFFS}; netbeast (run as root) mounts it, or run setup as root"
            ),
        );
        return;
    }
    match cmd::capture("mount", ["-t", "bpf", "bpf", BPFFS]) {
        Some(out) if out.status.success() => {
            steps.report(Status::Installed, STEP, format!("mounted at {BPFFS}"))
        }
        Some(out) => steps.report(
            Status::Failed,
            STEP,
            format!(
                "`mount -t bpf bpf {BPFFS}` failed: {}    does this kernel have CONFIG_BPF_SYSCALL?",
                cmd::tail(&out, 3).trim_start()
            ),
        ),
        None => steps.report(Status::Failed, STEP, "could not run mount"),
    }
}

/// netbeast's second view of bpffs, outside /sys: `ip netns exec` remounts
/// /sys (hiding /sys/fs/bpf) but keeps /run, so commands run through it still
/// reach the same pins (netbeast's state.rs, BPFFS_ALIAS).
const BPFFS_ALIAS: &str = "/run/netbeast/bpffs";

fn bpffs_alias(steps: &mut Steps) {
    const STEP: &str = "bpffs alias";
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounted_at(&mounts, BPFFS_ALIAS) {
        steps.report(Status::Ok, STEP, format!("{BPFFS} also at {BPFFS_ALIAS}"));
        return;
    }
    if steps.dry_run || !cmd::is_root() || !bpffs_mounted(&mounts) {
        steps.report(
            Status::Warning,
            STEP,
            format!(
                "{BPFFS_ALIAS} not mounted; netbeast (run as root outside `ip netns exec`) binds it"
            ),
        );
        return;
    }
    let _ = std::fs::create_dir_all(BPFFS_ALIAS);
    match cmd::capture("mount", ["--bind", BPFFS, BPFFS_ALIAS]) {
        Some(out) if out.status.success() => steps.report(
            Status::Installed,
            STEP,
            format!("{BPFFS} bound at {BPFFS_ALIAS}"),
        ),
        _ => steps.report(
            Status::Failed,
            STEP,
            format!("`mount --bind {BPFFS} {BPFFS_ALIAS}` failed"),
        ),
    }
}

fn mounted_at(proc_mounts: &str, path: &str) -> bool {
    proc_mounts.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&path) && fields.get(2) == Some(&"bpf")
    })
}

fn bpffs_mounted(proc_mounts: &str) -> bool {
    proc_mounts.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&BPFFS) && fields.get(2) == Some(&"bpf")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUSTC_VV: &str = "rustc 1.95.0 (59807616e 2026-04-14)\nbinary: rustc\n\
        commit-hash: 59807616e1fa2540724bfbac14d7976d7e4a3860\ncommit-date: 2026-04-14\n\
        host: x86_64-unknown-linux-gnu\nrelease: 1.95.0\nLLVM version: 22.1.2\n";

    #[test]
    fn llvm_major_comes_from_rustc_vv() {
        assert_eq!(llvm_major_of_rustc(RUSTC_VV), Some(22));
        assert_eq!(field(RUSTC_VV, "release:"), Some("1.95.0"));
        assert_eq!(llvm_major_of_rustc("rustc 1.95.0\n"), None);
    }

    #[test]
    fn linked_llvm_major_reads_the_loader_report() {
        let rust = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibLLVM.so.22.1-rust-1.95.0-stable => \
            /root/.rustup/toolchains/stable/lib/libLLVM.so.22.1-rust-1.95.0-stable (0x7f00)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x7f00)\n";
        assert_eq!(linked_llvm_major(rust), Some(22));
        let debian = "\tlibLLVM-19.so.1 => /usr/lib/x86_64-linux-gnu/libLLVM-19.so.1 (0x7f00)\n";
        assert_eq!(linked_llvm_major(debian), Some(19));
        let static_llvm = "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x7f00)\n";
        assert_eq!(linked_llvm_major(static_llvm), None);
    }

    #[test]
    fn only_the_toolchains_shared_libllvm_of_that_major_is_picked() {
        assert!(is_rust_libllvm("libLLVM.so.22.1-rust-1.95.0-stable", 22));
        assert!(!is_rust_libllvm("libLLVM-22-rust-1.95.0-stable.so", 22)); // a linker script
        assert!(!is_rust_libllvm("libLLVM.so.21.1-rust-1.90.0-stable", 22));
        assert!(!is_rust_libllvm("libLLVM.so.221.1-rust-9.0.0-stable", 22));
        assert!(!is_rust_libllvm("librustc_driver-6108105cd7e839cf.so", 22));
    }

    #[test]
    fn dpkg_listing_counts_only_installed_packages() {
        let listing = "iproute2 install ok installed\niptables deinstall ok config-files\n\
            nftables hold ok installed\nethtool install ok half-configured\n";
        assert!(dpkg_lists_installed(listing, "iproute2"));
        assert!(!dpkg_lists_installed(listing, "iptables"));
        assert!(dpkg_lists_installed(listing, "nftables"));
        assert!(!dpkg_lists_installed(listing, "ethtool"));
        assert!(!dpkg_lists_installed(listing, "tcpdump"));
        // A prefix of another package's name is not that package.
        assert!(!dpkg_lists_installed(listing, "iproute"));
    }

    #[test]
    fn bpffs_needs_type_bpf_at_the_right_place() {
        assert!(bpffs_mounted(
            "sysfs /sys sysfs rw 0 0\nbpf /sys/fs/bpf bpf rw,relatime 0 0\n"
        ));
        assert!(!bpffs_mounted("sysfs /sys sysfs rw 0 0\n"));
        assert!(!bpffs_mounted("none /sys/fs/bpf tmpfs rw 0 0\n"));
        assert!(!bpffs_mounted("bpf /run/bpf bpf rw 0 0\n"));
    }
}
