//! Network tests of netbeast's per-namespace state (DESIGN §5-§6): attach and
//! `detach --all` leave nothing behind, concurrent invocations are
//! serialized, and a bad restore applies nothing.
//!
//! Needs root. Run: `cargo test -p netbeast --test state`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use netbeast::netns::{
    ConnectOutcome::{Connected, TimedOut},
    Firewall, SERVER_IFACE, Testbed, comparable_save, mentions_line, require_root, tcp_server,
};

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
const TIMEOUT: Duration = Duration::from_secs(1);
const PIN_ROOT: &str = "/sys/fs/bpf/netbeast";
const RULES_ROOT: &str = "/run/netbeast";

/// Runs a scenario with netbeast and with the kernel's iptables (the oracle).
macro_rules! scenario {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[test]
            fn netbeast() {
                super::$name(Firewall::netbeast(NETBEAST));
            }

            #[test]
            fn iptables_oracle() {
                super::$name(Firewall::Iptables);
            }
        }
    };
}

fn testbed(tag: &str, firewall: Firewall) -> Testbed {
    require_root();
    Testbed::new(tag, firewall).unwrap_or_else(|e| panic!("setting up the testbed: {e}"))
}

fn save(bed: &Testbed) -> String {
    bed.save().unwrap_or_else(|e| panic!("{e}"))
}

fn xdp_attached(bed: &Testbed) -> bool {
    bed.server().has_xdp(SERVER_IFACE).unwrap()
}

/// Attach pins state for the namespace and hooks the interface; detach --all
/// removes the program, the pins and the rule files, and traffic flows as if
/// netbeast had never been there.
#[test]
fn detach_all_leaves_nothing_behind() {
    let bed = testbed("st-detach", Firewall::netbeast(NETBEAST));
    let server = bed.server();
    let id = server.id().unwrap();
    let pins = Path::new(PIN_ROOT).join(id.to_string());
    let rules = Path::new(RULES_ROOT).join(id.to_string());
    let _ssh = tcp_server(server, 22).unwrap();

    server
        .netbeast_iptables_ok("-A INPUT -p tcp --dport 22 -j DROP")
        .unwrap();
    assert!(
        xdp_attached(&bed),
        "no xdp program on {SERVER_IFACE} after attach"
    );
    assert!(pins.is_dir(), "{} missing after attach", pins.display());
    assert!(
        rules.is_dir(),
        "{} missing after a rule change",
        rules.display()
    );
    let status = server.netbeast_ok(&["status", "--json"]).unwrap();
    let status: serde_json::Value = serde_json::from_str(&status)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {status}"));
    assert!(
        status.to_string().contains(SERVER_IFACE),
        "status --json does not mention {SERVER_IFACE}: {status}"
    );
    let outcome = bed.connect(&[22], TIMEOUT).unwrap();
    assert_eq!(outcome, [TimedOut], "the DROP rule is not in force");

    server.netbeast_ok(&["detach", "--all"]).unwrap();
    assert!(!xdp_attached(&bed), "xdp program left on {SERVER_IFACE}");
    assert!(!pins.exists(), "{} left behind", pins.display());
    assert!(!rules.exists(), "{} left behind", rules.display());
    let outcome = bed.connect(&[22], TIMEOUT).unwrap();
    assert_eq!(
        outcome,
        [Connected],
        "traffic still filtered after detach --all"
    );

    // Once more: detach --all with nothing attached is not an error, and a
    // new attach starts from an empty ruleset.
    server.netbeast_ok(&["detach", "--all"]).unwrap();
    server.netbeast_ok(&["attach", SERVER_IFACE]).unwrap();
    let rules_after = save(&bed);
    assert!(
        !rules_after.lines().any(|l| l.starts_with("-A ")),
        "rules survived detach --all:\n{rules_after}"
    );
    assert_eq!(bed.connect(&[22], TIMEOUT).unwrap(), [Connected]);
}

/// An upgrade finds the pins of the netbeast before it. Per-run scratch
/// maps are not pinned, so one an older version left under a scratch name,
/// laid out differently (here: an 8-byte `PACKET` where the programs keep
/// a whole parsed packet), cannot stop the new programs from loading.
#[test]
fn scratch_maps_of_an_older_version_do_not_break_attach() {
    let bed = testbed("st-upgrade", Firewall::netbeast(NETBEAST));
    let server = bed.server();
    let id = server.id().unwrap();
    let pins = Path::new(PIN_ROOT).join(id.to_string());
    let _ssh = tcp_server(server, 22).unwrap();
    server
        .netbeast_iptables_ok("-A INPUT -p tcp --dport 22 -j DROP")
        .unwrap();
    server.netbeast_ok(&["detach", SERVER_IFACE]).unwrap();
    let old = pins.join("maps").join("PACKET");
    let out = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(&old)
        .args([
            "type",
            "percpu_array",
            "key",
            "4",
            "value",
            "8",
            "entries",
            "1",
        ])
        .args(["name", "PACKET"])
        .output()
        .expect("bpftool runs (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "bpftool map create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.netbeast_ok(&["attach", SERVER_IFACE]).unwrap();
    assert_eq!(
        bed.connect(&[22], TIMEOUT).unwrap(),
        [TimedOut],
        "the rule is not in force after attaching over an old scratch pin"
    );
    server.netbeast_ok(&["detach", "--all"]).unwrap();
    assert!(!pins.exists(), "{} left behind", pins.display());
}

/// Detaching one interface by name removes its program; the pins stay for
/// the namespace's other interfaces until detach --all.
#[test]
fn detach_by_name_unhooks_the_interface() {
    let bed = testbed("st-detach1", Firewall::netbeast(NETBEAST));
    let server = bed.server();
    let _ssh = tcp_server(server, 22).unwrap();
    server.netbeast_iptables_ok("-A INPUT -j DROP").unwrap();
    assert_eq!(bed.connect(&[22], TIMEOUT).unwrap(), [TimedOut]);
    server.netbeast_ok(&["detach", SERVER_IFACE]).unwrap();
    assert!(!xdp_attached(&bed), "xdp program left on {SERVER_IFACE}");
    assert_eq!(bed.connect(&[22], TIMEOUT).unwrap(), [Connected]);
}

/// Run through links named `iptables`, `iptables-save` and
/// `iptables-restore`, the binary behaves as those commands, so the article's
/// lines work unchanged (DESIGN §6).
#[test]
fn links_named_like_iptables_behave_like_it() {
    let bed = testbed("st-links", Firewall::netbeast(NETBEAST));
    let server = bed.server();
    let _servers = [22, 8080].map(|port| tcp_server(server, port).unwrap());
    let links = LinkDir::new();

    let iptables = links.link("iptables");
    for line in [
        "-A INPUT -p tcp --dport 22 -j ACCEPT",
        "-w -A INPUT -j DROP",
    ] {
        let args: Vec<&str> = line.split_whitespace().collect();
        server
            .run_ok(&iptables, &args)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let bad = server
        .run(
            &iptables,
            &["-A", "INPUT", "-p", "tcp", "8080", "-j", "ACCEPT"],
        )
        .unwrap();
    assert!(
        !bad.status.success(),
        "`iptables -A INPUT -p tcp 8080 -j ACCEPT` succeeded"
    );
    assert_eq!(
        bed.connect(&[22, 8080], TIMEOUT).unwrap(),
        [Connected, TimedOut]
    );

    let saved = server
        .run_ok(links.link("iptables-save"), &[] as &[&str])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(comparable_save(&saved), comparable_save(&save(&bed)));
    let appended = saved.lines().filter(|l| l.starts_with("-A INPUT")).count();
    assert_eq!(appended, 2, "{saved}");

    // Feeding the save back through iptables-restore keeps the same ruleset.
    let mut child = server
        .command(links.link("iptables-restore"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(saved.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "iptables-restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(comparable_save(&save(&bed)), comparable_save(&saved));
}

/// A temporary directory of symlinks to the netbeast binary, removed on drop.
struct LinkDir(PathBuf);

impl LinkDir {
    fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("nbt-links-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        LinkDir(dir)
    }

    fn link(&self, name: &str) -> PathBuf {
        let path = self.0.join(name);
        if !path.exists() {
            std::os::unix::fs::symlink(NETBEAST, &path).unwrap();
        }
        path
    }
}

impl Drop for LinkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// Ten processes appending one rule each at the same moment leave ten rules
// (DESIGN §5: invocations are serialized, like iptables -w).
scenario!(concurrent_appends_all_land);
fn concurrent_appends_all_land(firewall: Firewall) {
    const WRITERS: u16 = 10;
    let bed = testbed("st-concur", firewall.clone());
    let children: Vec<_> = (0..WRITERS)
        .map(|i| {
            let port = (2000 + i).to_string();
            let args = ["-A", "INPUT", "-p", "tcp", "--dport", &port, "-j", "ACCEPT"];
            let mut command = match &firewall {
                Firewall::Netbeast { binary, .. } => {
                    let mut c = bed.server().command(binary);
                    c.arg("iptables");
                    c
                }
                // The kernel's iptables needs -w to wait for its lock.
                Firewall::Iptables => {
                    let mut c = bed.server().command("iptables");
                    c.arg("-w");
                    c
                }
            };
            command
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a concurrent append failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let saved = save(&bed);
    let mut ports: Vec<u16> = saved
        .lines()
        .filter(|l| l.starts_with("-A INPUT"))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "--dport").unwrap();
            words[at + 1].parse().unwrap()
        })
        .collect();
    ports.sort();
    let expected: Vec<u16> = (2000..2000 + WRITERS).collect();
    assert_eq!(
        ports, expected,
        "rules after {WRITERS} concurrent appends:\n{saved}"
    );
}

// A restore file with one bad line fails, names the line, and applies
// nothing: neither the ruleset nor the traffic changes. A good file, from
// stdin or a path, replaces the ruleset; --noflush appends to it.
scenario!(restore_is_atomic);
fn restore_is_atomic(firewall: Firewall) {
    const GOOD: &str = "\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp --dport 22 -j ACCEPT
-A INPUT -j DROP
COMMIT
";
    // Line 6 is the article's example 3, verbatim.
    const BAD: &str = "\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp --dport 5432 -j ACCEPT
-A INPUT -p tcp 8080 -j ACCEPT
-A INPUT -p tcp --dport 8080 -j ACCEPT
COMMIT
";
    const BAD_LINE: usize = 6;
    const NOFLUSH: &str = "\
*filter
-I INPUT -p tcp --dport 5432 -j ACCEPT
COMMIT
";

    let bed = testbed("st-restore", firewall);
    let _servers: Vec<_> = [22, 5432, 8080]
        .into_iter()
        .map(|port| tcp_server(bed.server(), port).unwrap())
        .collect();
    bed.iptables_ok("-A INPUT -p udp --dport 53 -j ACCEPT")
        .unwrap();

    // A good file from stdin replaces what was there.
    let out = bed.restore(&[], GOOD).unwrap();
    assert!(
        out.status.success(),
        "restore of a good file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved = save(&bed);
    let rules: Vec<&str> = saved.lines().filter(|l| l.starts_with("-A ")).collect();
    assert_eq!(
        rules.len(),
        2,
        "restore did not replace the ruleset:\n{saved}"
    );
    assert!(
        !saved.contains("--dport 53"),
        "restore did not flush:\n{saved}"
    );
    let before = comparable_save(&saved);
    let expected = [Connected, TimedOut, TimedOut];
    let outcomes = bed.connect(&[22, 5432, 8080], TIMEOUT).unwrap();
    assert_eq!(
        outcomes, expected,
        "traffic on 22, 5432, 8080 after the good restore"
    );

    // A bad file, from stdin and from a path, and with --noflush: nothing applied.
    let path = std::env::temp_dir().join(format!(
        "nbt-restore-{}-{}.rules",
        std::process::id(),
        bed.server().name()
    ));
    std::fs::write(&path, BAD).unwrap();
    let path_arg = path.to_str().unwrap();
    for (args, input) in [
        (vec![], BAD),
        (vec![path_arg], ""),
        (vec!["--noflush"], BAD),
    ] {
        let out = bed.restore(&args, input).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "restore {args:?} of a bad file succeeded"
        );
        assert!(
            mentions_line(&stderr, BAD_LINE),
            "restore {args:?} should name line {BAD_LINE}: {stderr}"
        );
        assert_eq!(
            comparable_save(&save(&bed)),
            before,
            "restore {args:?} of a bad file changed the ruleset"
        );
    }
    let _ = std::fs::remove_file(&path);
    let outcomes = bed.connect(&[22, 5432, 8080], TIMEOUT).unwrap();
    assert_eq!(
        outcomes, expected,
        "traffic on 22, 5432, 8080 after the failed restores"
    );

    // --noflush keeps the rules and adds the new one.
    let out = bed.restore(&["--noflush"], NOFLUSH).unwrap();
    assert!(
        out.status.success(),
        "restore --noflush: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved = save(&bed);
    let rules: Vec<&str> = saved.lines().filter(|l| l.starts_with("-A ")).collect();
    assert_eq!(rules.len(), 3, "restore --noflush:\n{saved}");
    assert!(rules[0].contains("--dport 5432"), "-I went first:\n{saved}");
    let outcomes = bed.connect(&[22, 5432, 8080], TIMEOUT).unwrap();
    assert_eq!(
        outcomes,
        [Connected, Connected, TimedOut],
        "traffic after --noflush"
    );
}
