//! `netbeast boot` and `netbeast install-service`: a box, not a test bench.
//!
//! At boot (dist/netbeast.service, before the network comes up) netbeast
//! attaches to the interfaces listed in `CONFIG_DIR/interfaces` and restores
//! `CONFIG_DIR/rules.v4`, which `netbeast save > /etc/netbeast/rules.v4`
//! wrote — what iptables-persistent does with `/etc/iptables/rules.v4`.
//! Each step runs as its own netbeast command (this binary), so it takes
//! the lock, reconciles and reports exactly as when typed.

use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};

/// Where the boot unit reads its configuration.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/netbeast";
/// One interface per line, optionally with `attach` options.
pub const INTERFACES_FILE: &str = "interfaces";
/// The saved ruleset, iptables-save format.
pub const RULES_FILE: &str = "rules.v4";

/// The units `install-service` writes, as shipped in dist/.
const UNITS: [(&str, &str); 3] = [
    (
        "netbeast.service",
        include_str!("../../../dist/netbeast.service"),
    ),
    (
        "netbeast-daemon.service",
        include_str!("../../../dist/netbeast-daemon.service"),
    ),
    (
        "netbeast-daemon@.service",
        include_str!("../../../dist/netbeast-daemon@.service"),
    ),
];

/// The path the shipped units name for the binary.
const UNIT_BINARY: &str = "/usr/bin/netbeast";

const INTERFACES_EXAMPLE: &str = "\
# The interfaces netbeast attaches to at boot (netbeast.service), one per
# line, each optionally followed by `netbeast attach` options, e.g.
#   eth0
#   eth1 --mode skb
";

/// The `attach` argument lists of `interfaces`: one per line that is not
/// blank or a `#` comment.
pub fn parse_interfaces(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// Attaches and restores as the configuration in `dir` says.
pub fn run(dir: &Path) -> Result<()> {
    let exe = std::env::current_exe().context("finding the netbeast binary")?;
    let interfaces = dir.join(INTERFACES_FILE);
    let text = std::fs::read_to_string(&interfaces).with_context(|| {
        format!(
            "cannot read {}: list the interfaces to attach to there, one per line \
             (`netbeast install-service` writes an example)",
            interfaces.display()
        )
    })?;
    let lines = parse_interfaces(&text);
    if lines.is_empty() {
        bail!(
            "{} lists no interface: add one per line (e.g. `eth0`)",
            interfaces.display()
        );
    }
    for args in &lines {
        println!("netbeast boot: attach {}", args.join(" "));
        let mut attach = vec!["attach"];
        attach.extend(args.iter().map(String::as_str));
        netbeast(&exe, &attach)?;
    }
    let rules = dir.join(RULES_FILE);
    if rules.exists() {
        println!("netbeast boot: restore {}", rules.display());
        netbeast(&exe, &["restore", &rules.to_string_lossy()])?;
    } else {
        println!(
            "netbeast boot: no {} (save one with `netbeast save > {}`): the ruleset stays empty",
            rules.display(),
            rules.display()
        );
    }
    Ok(())
}

/// Runs this binary with `args`; its own messages pass through.
fn netbeast(exe: &Path, args: &[&str]) -> Result<()> {
    let status = Command::new(exe)
        .args(args)
        .status()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    if !status.success() {
        bail!("`netbeast {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Writes the systemd units under `root` (`/` for the real system), with
/// this binary's path in them, and an example interfaces file if there is
/// none; prints what to do next.
pub fn install(root: &Path) -> Result<()> {
    let exe = std::env::current_exe().context("finding the netbeast binary")?;
    let exe = exe.to_string_lossy();
    let units = root.join("etc/systemd/system");
    std::fs::create_dir_all(&units)
        .with_context(|| format!("cannot create {}", units.display()))?;
    for (name, text) in UNITS {
        let path = units.join(name);
        std::fs::write(&path, text.replace(UNIT_BINARY, &exe))
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    let config = root.join(DEFAULT_CONFIG_DIR.trim_start_matches('/'));
    std::fs::create_dir_all(&config)
        .with_context(|| format!("cannot create {}", config.display()))?;
    let interfaces = config.join(INTERFACES_FILE);
    if !interfaces.exists() {
        std::fs::write(&interfaces, INTERFACES_EXAMPLE)
            .with_context(|| format!("cannot write {}", interfaces.display()))?;
        println!("wrote {} (add your interfaces)", interfaces.display());
    }
    println!(
        "next: list the interfaces in {}, save the rules with `netbeast save > {}`, then \
         `systemctl daemon-reload && systemctl enable netbeast` (and `netbeast-daemon` for \
         logs, health checks and metrics)",
        interfaces.display(),
        config.join(RULES_FILE).display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_lines_become_attach_arguments() {
        let text = "# comment\n\neth0\n  eth1 --mode skb  # the slow one\n";
        assert_eq!(
            parse_interfaces(text),
            vec![
                vec!["eth0".to_string()],
                vec!["eth1".to_string(), "--mode".into(), "skb".into()]
            ]
        );
        assert!(parse_interfaces(INTERFACES_EXAMPLE).is_empty());
    }
}
