//! `cargo xtask package`: a Debian package of netbeast, built with
//! `dpkg-deb` from a staging tree this module lays out.
//!
//! Why not cargo-deb: the package holds generated files (completions and
//! the man page come from the binary being packaged, the iptables links
//! from the names it answers to), and Debian's own `dpkg-deb` is on every
//! machine this builds on; cargo-deb would be one more tool to build before
//! the first package, for a layout of about twenty files.
//!
//! The package never replaces the system's iptables: the multi-call links
//! live in their own directory, [`LINK_DIR`], which a user (or a private
//! mount namespace, as the real-client tests do) puts first in PATH.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

/// Where the binary goes; the systemd units in `dist/` run it from there.
pub const BINARY: &str = "usr/bin/netbeast";
/// The multi-call links' own directory (never /usr/sbin, iptables' home).
pub const LINK_DIR: &str = "usr/lib/netbeast/bin";
/// Names netbeast answers to when run through a link (its `$0` dispatch).
pub const LINK_NAMES: &[&str] = &["iptables", "iptables-save", "iptables-restore"];
/// The units shipped from `dist/`.
const UNITS: &[&str] = &[
    "netbeast.service",
    "netbeast-daemon.service",
    "netbeast-daemon@.service",
];
const UNIT_DIR: &str = "usr/lib/systemd/system";
/// Shell completions: the shell's name for `netbeast completions`, and the
/// file Debian's shells read them from.
const COMPLETIONS: &[(&str, &str)] = &[
    ("bash", "usr/share/bash-completion/completions/netbeast"),
    ("zsh", "usr/share/zsh/vendor-completions/_netbeast"),
    ("fish", "usr/share/fish/vendor_completions.d/netbeast.fish"),
];
const MAN_PAGE: &str = "usr/share/man/man8/netbeast.8.gz";
const DOC_DIR: &str = "usr/share/doc/netbeast";

/// Maintainer scripts: only a systemd reload, and only on a live system
/// (not when dpkg installs into another root, `DPKG_ROOT`, or in a chroot
/// without systemd). Units are not enabled: `systemctl enable netbeast`
/// is the administrator's decision, as with iptables-persistent.
const RELOAD: &str = "#!/bin/sh\nset -e\n\
    if [ -z \"$DPKG_ROOT\" ] && [ -d /run/systemd/system ]; then\n\
    \tsystemctl daemon-reload >/dev/null || true\nfi\n";

/// Builds `netbeast_<version>_<arch>.deb` in `out_dir` from `binary` and the
/// workspace at `root`; returns its path.
pub fn build(root: &Path, binary: &Path, out_dir: &Path) -> Result<PathBuf> {
    ensure!(
        binary.is_file(),
        "{} does not exist: build netbeast first (cargo build --release -p netbeast)",
        binary.display()
    );
    let version = version_of(binary)?;
    let arch = output("dpkg", &["--print-architecture"])?;
    let stage = out_dir.join(format!("netbeast_{version}_{arch}"));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("clearing {}", stage.display()))?;
    }

    let bin = stage.join(BINARY);
    create_parent(&bin)?;
    fs::copy(binary, &bin).with_context(|| format!("copying {}", binary.display()))?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))?;
    // As Debian's dh_strip does; the BPF object netbeast loads is data in
    // .rodata, not a symbol or debug section, so it stays whole.
    let status = Command::new("strip")
        .args(["--strip-unneeded"])
        .arg(&bin)
        .status()
        .context("could not run strip (apt install binutils)")?;
    ensure!(
        status.success(),
        "strip {} failed ({status})",
        bin.display()
    );

    let links = stage.join(LINK_DIR);
    fs::create_dir_all(&links)?;
    for name in LINK_NAMES {
        symlink("../../../bin/netbeast", links.join(name))
            .with_context(|| format!("linking {name}"))?;
    }

    for unit in UNITS {
        let to = stage.join(UNIT_DIR).join(unit);
        create_parent(&to)?;
        fs::copy(root.join("dist").join(unit), &to)
            .with_context(|| format!("copying dist/{unit}"))?;
    }

    for (shell, path) in COMPLETIONS {
        let text = run_binary(binary, &["completions", shell])?;
        write(&stage.join(path), &text, 0o644)?;
    }

    let man = run_binary(binary, &["manpage"])?;
    let man_path = stage.join(MAN_PAGE);
    create_parent(&man_path)?;
    gzip(&man, &man_path)?;

    let doc = stage.join(DOC_DIR);
    write(&doc.join("copyright"), COPYRIGHT.as_bytes(), 0o644)?;
    fs::copy(root.join("README.md"), doc.join("README.md"))?;

    let debian = stage.join("DEBIAN");
    write(
        &debian.join("control"),
        control(&version, &arch, installed_size_kib(&stage)?).as_bytes(),
        0o644,
    )?;
    for script in ["postinst", "postrm"] {
        write(&debian.join(script), RELOAD.as_bytes(), 0o755)?;
    }

    let deb = out_dir.join(format!("netbeast_{version}_{arch}.deb"));
    let status = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&stage)
        .arg(&deb)
        .status()
        .context("could not run dpkg-deb (apt install dpkg-dev)")?;
    ensure!(status.success(), "dpkg-deb --build failed ({status})");
    fs::remove_dir_all(&stage)?;
    Ok(deb)
}

const COPYRIGHT: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
Upstream-Name: netbeast\n\
\n\
Files: *\n\
Copyright: the netbeast authors\n\
License: MIT OR Apache-2.0\n";

fn control(version: &str, arch: &str, installed_kib: u64) -> String {
    format!(
        "Package: netbeast\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: netbeast authors <netbeast@localhost>\n\
         Installed-Size: {installed_kib}\n\
         Depends: libc6\n\
         Section: net\n\
         Priority: optional\n\
         Homepage: https://github.com/netbeast/netbeast\n\
         Description: iptables' jobs at XDP/TC speed\n \
         Firewall, router, NAT, port-forwarder, load balancer, anti-DoS and\n \
         logger in XDP and TC programs, driven by iptables command lines.\n \
         The iptables, iptables-save and iptables-restore links are installed\n \
         in /{LINK_DIR}, never over the system's own.\n"
    )
}

/// "netbeast 0.1.0" → "0.1.0".
fn version_of(binary: &Path) -> Result<String> {
    let text = run_binary(binary, &["--version"])?;
    let text = String::from_utf8(text).context("netbeast --version is not UTF-8")?;
    match text.split_whitespace().collect::<Vec<_>>()[..] {
        ["netbeast", version] => Ok(version.to_string()),
        _ => bail!("unexpected `netbeast --version` output: {text:?}"),
    }
}

fn run_binary(binary: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new(binary)
        .args(args)
        .output()
        .with_context(|| format!("could not run {}", binary.display()))?;
    ensure!(
        out.status.success(),
        "`netbeast {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(out.stdout)
}

fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("could not run {program}"))?;
    ensure!(
        out.status.success(),
        "`{program} {}` failed",
        args.join(" ")
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Debian wants man pages compressed reproducibly (`gzip -9n`).
fn gzip(data: &[u8], to: &Path) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .args(["-9n"])
        .stdin(std::process::Stdio::piped())
        .stdout(fs::File::create(to)?)
        .spawn()
        .context("could not run gzip")?;
    child.stdin.take().expect("piped").write_all(data)?;
    ensure!(child.wait()?.success(), "gzip failed");
    Ok(())
}

fn installed_size_kib(stage: &Path) -> Result<u64> {
    let text = output("du", &["-sk", "--apparent-size", &stage.to_string_lossy()])?;
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("unexpected du output {text:?}"))
}

fn create_parent(path: &Path) -> Result<()> {
    let parent = path.parent().expect("staged paths have a parent");
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    create_parent(path)?;
    fs::write(path, data).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A scratch directory removed however the test ends.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Every path under `root` (but dpkg's own database and log, which
    /// record the history) with what it is: a file's bytes, a link's
    /// target, or a directory.
    fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        let mut todo = vec![root.to_path_buf()];
        while let Some(dir) = todo.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                if rel.starts_with("var/lib/dpkg") || rel.starts_with("var/log") {
                    continue;
                }
                let meta = fs::symlink_metadata(&path).unwrap();
                let what = if meta.is_symlink() {
                    format!("-> {}", fs::read_link(&path).unwrap().display())
                } else if meta.is_dir() {
                    todo.push(path.clone());
                    "dir".to_string()
                } else {
                    format!("{} bytes {:x}", meta.len(), fs::read(&path).unwrap().len())
                };
                out.insert(rel, what);
            }
        }
        out
    }

    fn dpkg(root: &Path, args: &[&str]) -> std::process::Output {
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            // Maintainer scripts run here with DPKG_ROOT set, and ours do
            // nothing then: the machine running the test is not touched.
            .arg("--force-script-chrootless")
            // The scratch root has no libc6 package to satisfy Depends.
            .arg("--force-depends")
            .args(args)
            .output()
            .expect("running dpkg")
    }

    /// The package installs into an empty root with every file where
    /// Debian and our units expect it, its links run netbeast as
    /// iptables, and purging it leaves the root exactly as it was.
    #[test]
    fn package_installs_and_purges_leaving_the_root_as_it_was() {
        let root = crate::workspace_root();
        let binary = crate::target_dir(&root).join("debug").join("netbeast");
        assert!(
            binary.is_file(),
            "{} is missing: `cargo test` at the workspace root builds it; alone, run `cargo build -p netbeast` first",
            binary.display()
        );
        let scratch = Scratch(std::env::temp_dir().join(format!("nbt-deb-{}", std::process::id())));
        let out_dir = scratch.0.join("out");
        let sysroot = scratch.0.join("root");
        for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/log"] {
            fs::create_dir_all(sysroot.join(dir)).unwrap();
        }
        for file in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
            fs::write(sysroot.join(file), "").unwrap();
        }
        fs::create_dir_all(&out_dir).unwrap();
        let deb = build(&root, &binary, &out_dir).expect("building the package");

        let field =
            |name: &str| output("dpkg-deb", &["--field", &deb.to_string_lossy(), name]).unwrap();
        assert_eq!(field("Package"), "netbeast");
        assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));

        let before = tree(&sysroot);
        let installed = dpkg(&sysroot, &["--install", &deb.to_string_lossy()]);
        assert!(
            installed.status.success(),
            "dpkg --install: {}",
            String::from_utf8_lossy(&installed.stderr)
        );
        for path in [BINARY, MAN_PAGE, "usr/share/doc/netbeast/copyright"]
            .into_iter()
            .chain(COMPLETIONS.iter().map(|(_, p)| *p))
            .map(String::from)
            .chain(UNITS.iter().map(|u| format!("{UNIT_DIR}/{u}")))
        {
            let meta = fs::metadata(sysroot.join(&path)).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert!(meta.len() > 0, "{path} is empty");
        }
        for name in LINK_NAMES {
            let link = sysroot.join(LINK_DIR).join(name);
            assert_eq!(
                fs::canonicalize(&link).unwrap(),
                fs::canonicalize(sysroot.join(BINARY)).unwrap(),
                "{name} does not lead to the packaged binary"
            );
            let out = Command::new(&link).arg("-V").output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("netbeast"),
                "{name} -V through the link: {text}"
            );
        }
        let man = Command::new("gzip")
            .args(["-dc"])
            .arg(sysroot.join(MAN_PAGE))
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&man.stdout).contains(".TH netbeast 8"),
            "the man page is not netbeast(8)"
        );
        // Nothing outside the package's own files appeared.
        let listed = dpkg(&sysroot, &["--listfiles", "netbeast"]);
        let owned: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(|l| l.trim_start_matches('/').to_string())
            .collect();
        for path in tree(&sysroot).keys() {
            let path = path.to_string_lossy();
            assert!(
                before.contains_key(Path::new(path.as_ref())) || owned.iter().any(|o| *o == path),
                "{path} was installed but is not the package's"
            );
        }

        let purged = dpkg(&sysroot, &["--purge", "netbeast"]);
        assert!(
            purged.status.success(),
            "dpkg --purge: {}",
            String::from_utf8_lossy(&purged.stderr)
        );
        assert_eq!(tree(&sysroot), before, "the purge left the root changed");
        assert!(!dpkg(&sysroot, &["--status", "netbeast"]).status.success());
    }
}
