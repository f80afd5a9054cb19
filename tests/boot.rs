//! A box, not a test bench: `netbeast install-service` writes units that
//! systemd accepts, and `netbeast boot` (what the boot unit runs) attaches
//! to the configured interfaces and restores the saved ruleset, so rules
//! saved before a reboot are enforced after it on real traffic.
//!
//! Needs root. Run: `cargo test -p netbeast --test boot`.

use std::{path::PathBuf, process::Command, time::Duration};

use netbeast::netns::{
    ClientServer, ConnectOutcome, SERVER_IFACE, comparable_save, require_root, tcp_connect,
    tcp_server,
};

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
const TIMEOUT: Duration = Duration::from_secs(1);

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("nbt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn install_service_writes_units_systemd_accepts() {
    let root = TempDir::new("install");
    let out = Command::new(NETBEAST)
        .args(["install-service", "--root"])
        .arg(&root.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let units = root.0.join("etc/systemd/system");
    for (unit, verify_as) in [
        ("netbeast.service", "netbeast.service"),
        ("netbeast-daemon.service", "netbeast-daemon.service"),
        ("netbeast-daemon@.service", "netbeast-daemon@nbt-x.service"),
    ] {
        let text = std::fs::read_to_string(units.join(unit))
            .unwrap_or_else(|e| panic!("{unit} not written: {e}"));
        assert!(
            text.contains(NETBEAST),
            "{unit} does not run the installed binary:\n{text}"
        );
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(units.join(verify_as))
            .env("SYSTEMD_UNIT_PATH", format!("{}:", units.display()))
            .output()
            .expect("systemd-analyze (cargo xtask setup installs it)");
        assert!(
            out.status.success(),
            "{unit}: systemd-analyze verify failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let interfaces = root.0.join("etc/netbeast/interfaces");
    assert!(interfaces.exists(), "no example interfaces file");
}

/// The rules saved with `netbeast save` before a reboot (here: `detach
/// --all`, which removes every pin and rule as a reboot does) are enforced
/// again after `netbeast boot`, with the same listing.
#[test]
fn boot_attaches_and_restores_the_saved_ruleset() {
    require_root();
    let ClientServer { client, server } = ClientServer::new("boot").unwrap();
    let server = server.with_netbeast(NETBEAST);
    let _open = tcp_server(&server, 22).unwrap();
    let _closed = tcp_server(&server, 9999).unwrap();
    let to = |port| {
        tcp_connect(
            &client,
            std::net::SocketAddrV4::new(netbeast::netns::SERVER_ADDR, port),
            TIMEOUT,
        )
        .unwrap()
    };

    server.netbeast_ok(&["attach", SERVER_IFACE]).unwrap();
    server
        .netbeast_iptables_ok("-A INPUT -p tcp --dport 9999 -j DROP")
        .unwrap();
    server
        .netbeast_iptables_ok("-A INPUT -p tcp --dport 22 -m comment --comment ssh -j ACCEPT")
        .unwrap();
    assert_eq!(
        to(9999),
        ConnectOutcome::TimedOut,
        "the rule before the reboot"
    );
    let saved = server.netbeast_ok(&["save"]).unwrap();
    let config = TempDir::new("boot-config");
    std::fs::write(config.0.join("rules.v4"), &saved).unwrap();
    std::fs::write(
        config.0.join("interfaces"),
        format!("# the server's side\n{SERVER_IFACE} --mode skb\n"),
    )
    .unwrap();

    // The reboot: nothing of netbeast is left, port 9999 answers.
    server.netbeast_ok(&["detach", "--all"]).unwrap();
    assert_eq!(
        to(9999),
        ConnectOutcome::Connected,
        "no rules after the reboot"
    );

    let out = server
        .netbeast(&["boot", "--config-dir", &config.0.to_string_lossy()])
        .unwrap();
    assert!(
        out.status.success(),
        "netbeast boot failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let status = server.netbeast_ok(&["status"]).unwrap();
    assert!(status.contains(SERVER_IFACE), "not attached:\n{status}");
    assert_eq!(
        comparable_save(&server.netbeast_ok(&["save"]).unwrap()),
        comparable_save(&saved),
        "the restored ruleset differs from the saved one"
    );
    assert_eq!(to(9999), ConnectOutcome::TimedOut, "DROP after boot");
    assert_eq!(to(22), ConnectOutcome::Connected, "ACCEPT after boot");
}

/// A configuration that names no interface is refused with what to do.
#[test]
fn boot_without_interfaces_says_what_to_write() {
    let config = TempDir::new("boot-empty");
    std::fs::write(config.0.join("interfaces"), "# nothing yet\n").unwrap();
    let out = Command::new(NETBEAST)
        .args(["boot", "--config-dir"])
        .arg(&config.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lists no interface"), "{err}");
}

/// Shell completions name every subcommand (bash's script also parses),
/// and the manual page is roff that names them too.
#[test]
fn completions_and_manual_page() {
    let run = |args: &[&str]| {
        let out = Command::new(NETBEAST).args(args).output().unwrap();
        assert!(out.status.success(), "netbeast {args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let subcommands = [
        "attach", "detach", "iptables", "save", "restore", "lb", "boot", "daemon",
    ];
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completions", shell]);
        for sub in subcommands {
            assert!(script.contains(sub), "{shell} completions lack {sub}");
        }
    }
    let bash = run(&["completions", "bash"]);
    let out = Command::new("bash")
        .args(["-n", "-c", &bash])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the bash completion script does not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let man = run(&["manpage"]);
    assert!(
        man.starts_with(".ie") || man.contains(".TH netbeast"),
        "{man}"
    );
    for sub in subcommands {
        assert!(man.contains(sub), "the manual page lacks {sub}");
    }
}
