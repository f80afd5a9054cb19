//! Network tests of netbeast's per-namespace state (DESIGN §5-§6): attach and
//! `detach --all` leave nothing behind, concurrent invocations are
//! serialized, and a bad restore applies nothing.
//!
//! Needs root. Run: `cargo test -p netbeast --test state`.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use netbeast::netns::{
    ConnectOutcome::{Connected, TimedOut},
    Firewall, Netns, SERVER_IFACE, Testbed, comparable_save, mentions_line, require_root,
    tcp_server,
};

#[path = "support/links.rs"]
mod links;
use links::Links;

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
const TIMEOUT: Duration = Duration::from_secs(1);
const PIN_ROOT: &str = "/sys/fs/bpf/netbeast";
const RULES_ROOT: &str = "/run/netbeast";

include!("support/scenario.rs");

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

/// Pins of another netbeast version whose layout differs (here GUARDS
/// with 32-byte entries, as before the anti-DoS guards grew them to 40).
/// While that version's programs still run on an interface, `attach` and
/// a rule change refuse with what happened and the way out; once the
/// interface is detached, `attach` upgrades: GUARDS is made anew (and the
/// user told what that resets), the maps whose layout did not change are
/// kept — a tracked connection is still tracked — and the rules are
/// enforced again.
#[test]
fn pins_of_another_layout_are_migrated_keeping_conntrack() {
    let bed = testbed("st-layout", Firewall::netbeast(NETBEAST));
    let server = bed.server();
    let id = server.id().unwrap();
    let pins = Path::new(PIN_ROOT).join(id.to_string());
    let _ssh = tcp_server(server, 22).unwrap();
    let (held, port) = held_connection(&bed);
    let tracked = |when: &str| {
        let listed = server.netbeast_ok(&["conntrack", "-L"]).unwrap();
        assert!(
            listed.contains(&format!("sport={port} dport=22")),
            "{when}: the held connection (from port {port}) is not tracked:\n{listed}"
        );
    };
    tracked("before the upgrade");
    let guards = pins.join("maps").join("GUARDS");
    std::fs::remove_file(&guards).unwrap();
    let out = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(&guards)
        .args(["type", "array", "key", "4", "value", "32", "entries", "16"])
        .args(["name", "GUARDS"])
        .output()
        .expect("bpftool runs (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "bpftool map create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (args, way_out) in [
        (vec!["attach", SERVER_IFACE], "netbeast detach"),
        (
            vec![
                "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP",
            ],
            "netbeast attach",
        ),
    ] {
        let out = server.netbeast(&args).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded over old pins");
        assert!(
            err.contains("another netbeast version")
                && err.contains("GUARDS")
                && err.contains(way_out),
            "{args:?}: {err}"
        );
    }
    // status explains the state in one line instead of failing to open
    // the old maps.
    let status = server.netbeast_ok(&["status"]).unwrap();
    assert!(
        status.contains("mismatch: the data plane was made by another netbeast version")
            && status.contains("GUARDS")
            && status.contains("`netbeast detach`"),
        "{status}"
    );
    server.netbeast_ok(&["detach", SERVER_IFACE]).unwrap();
    // RULES as a build of 16,384 slots per chain had it: the same entry
    // size, fewer entries (18 chains of 16,384). Its size is part of the
    // layout: kept, it would hold only part of a large ruleset.
    let rules = pins.join("maps").join("RULES");
    std::fs::remove_file(&rules).unwrap();
    let out = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(&rules)
        .args([
            "type", "array", "key", "4", "value", "16", "entries", "294912",
        ])
        .args(["name", "RULES"])
        .output()
        .expect("bpftool runs");
    assert!(
        out.status.success(),
        "bpftool map create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = server.netbeast(&["attach", SERVER_IFACE]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("attach over the old pins said:\n{err}");
    assert!(out.status.success(), "attach after detach: {err}");
    assert!(
        err.contains("upgrade: GUARDS") && err.contains("made anew"),
        "the upgrade says what it made anew: {err}"
    );
    assert!(
        err.contains("upgrade: RULES") && err.contains("294912 entries"),
        "a ruleset table of another size is made anew: {err}"
    );
    assert!(
        !err.contains("CT_ESTABLISHED"),
        "conntrack's maps did not change: kept, not reported: {err}"
    );
    tracked("after the upgrade");
    assert!(
        save(&bed).contains("-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT"),
        "the rules are kept: {}",
        save(&bed)
    );
    server
        .netbeast_iptables_ok("-A INPUT -p tcp --dport 22 -j DROP")
        .unwrap();
    assert_eq!(bed.connect(&[22], TIMEOUT).unwrap(), [TimedOut]);
    tracked("with the rules changed");
    drop(held);
}

/// `bpftool` with `args`, which must succeed; its stdout.
/// A connection from the client to the server's port 22, tracked: a rule
/// on connection states turns conntrack on. Its local port names it in
/// `conntrack -L`.
fn held_connection(bed: &Testbed) -> (std::net::TcpStream, u16) {
    bed.server()
        .netbeast_iptables_ok("-A INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT")
        .unwrap();
    let held = netbeast::netns::tcp_stream(
        bed.client(),
        None,
        std::net::SocketAddrV4::new(netbeast::netns::SERVER_ADDR, 22),
        TIMEOUT,
    )
    .unwrap()
    .expect("a connection to port 22");
    let port = held.local_addr().unwrap().port();
    (held, port)
}

fn bpftool(args: &[&str]) -> String {
    let out = std::process::Command::new("bpftool")
        .args(args)
        .output()
        .expect("bpftool runs (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Little-endian bytes as bpftool's hex arguments.
fn hex_args(bytes: &[u8]) -> Vec<String> {
    bytes.iter().map(|b| format!("0x{b:02x}")).collect()
}

/// An upgrade from a version that kept the conntrack timeouts, the route
/// cache's epoch and the SYN-flood shield's port count in maps of their
/// own (`CT_CONFIG`, `ROUTE_EPOCH`, `SYN_GUARD_COUNT`): `attach` makes
/// `CONFIG`, folds their values into it (the timeouts set with
/// `--ct-timeout` stay in force, the cached routes' epoch goes on) and
/// removes their pins; conntrack is kept.
#[test]
fn pins_of_the_single_value_maps_fold_into_config() {
    let bed = testbed("st-config", Firewall::netbeast(NETBEAST));
    let server = bed.server();
    let id = server.id().unwrap();
    let pins = Path::new(PIN_ROOT).join(id.to_string());
    let maps = pins.join("maps");
    let _ssh = tcp_server(server, 22).unwrap();
    let (held, port) = held_connection(&bed);
    let tracked = |when: &str| {
        let listed = server.netbeast_ok(&["conntrack", "-L"]).unwrap();
        listed
            .lines()
            .find(|l| l.contains(&format!("sport={port} dport=22")))
            .unwrap_or_else(|| {
                panic!("{when}: the held connection (from port {port}) is not tracked:\n{listed}")
            })
            .to_string()
    };
    tracked("before the upgrade");
    server.netbeast_ok(&["detach", SERVER_IFACE]).unwrap();
    // The older version's pins: CONFIG did not exist, these did; its
    // verified programs (another build's) are not reused.
    std::fs::remove_file(maps.join("CONFIG")).unwrap();
    let _ = std::fs::remove_dir_all(pins.join("programs"));
    // Timeouts in CtConfig's order: udp (the 7th) 100, the others (all
    // TCP states among them) 7777.
    let timeouts: Vec<u8> = (0..10u32)
        .flat_map(|i| if i == 6 { 100u32 } else { 7777 }.to_le_bytes())
        .collect();
    let epoch: Vec<u8> = [5u64, 9, 0].iter().flat_map(|w| w.to_le_bytes()).collect();
    for (name, value, flags) in [
        ("CT_CONFIG", &timeouts, "0"),
        ("ROUTE_EPOCH", &epoch, "1024"),
        ("SYN_GUARD_COUNT", &vec![0u8; 4], "0"),
    ] {
        let path = maps.join(name);
        let path = path.to_str().unwrap();
        let size = value.len().to_string();
        bpftool(&[
            "map", "create", path, "type", "array", "key", "4", "value", &size, "entries", "1",
            "name", name, "flags", flags,
        ]);
        let mut update = vec![
            "map", "update", "pinned", path, "key", "0", "0", "0", "0", "value",
        ];
        let hex = hex_args(value);
        update.extend(hex.iter().map(String::as_str));
        bpftool(&update);
    }
    let out = server.netbeast(&["attach", SERVER_IFACE]).unwrap();
    assert!(
        out.status.success(),
        "attach over the old pins: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["CT_CONFIG", "ROUTE_EPOCH", "SYN_GUARD_COUNT"] {
        assert!(!maps.join(name).exists(), "the retired pin {name} is left");
    }
    let dump: serde_json::Value = serde_json::from_str(&bpftool(&[
        "-j",
        "map",
        "dump",
        "pinned",
        maps.join("CONFIG").to_str().unwrap(),
    ]))
    .unwrap();
    let value: Vec<u8> = dump[0]["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
        .collect();
    let config: netbeast_common::Config =
        unsafe { std::ptr::read_unaligned(value.as_ptr().cast()) };
    assert_eq!(value.len(), size_of::<netbeast_common::Config>());
    assert_eq!(config.conntrack.tcp_established, 7777, "{config:?}");
    assert_eq!(config.conntrack.tcp_fin_wait, 7777, "{config:?}");
    assert_eq!(config.conntrack.udp, 100, "{config:?}");
    // (attach raises the commands' word as it rewrites the interfaces.)
    assert!(
        config.route_epoch[0] == 5 && (9..20).contains(&config.route_epoch[1]),
        "the route cache's epoch goes on: {config:?}"
    );
    // `conntrack -L` reads the timeouts where the data plane does: the held connection's
    // remaining time (in whichever TCP state) counts down from 7777 s.
    let line = tracked("after the upgrade");
    let remaining: u64 = line
        .split_whitespace()
        .nth(2)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no timeout in {line}"));
    assert!(
        (7700..=7777).contains(&remaining),
        "the timeout set before the upgrade is in force: {line}"
    );
    drop(held);
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
    let links = Links::new("links");

    let iptables = links.path("iptables");
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
        .run_ok(links.path("iptables-save"), &[] as &[&str])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(comparable_save(&saved), comparable_save(&save(&bed)));
    let appended = saved.lines().filter(|l| l.starts_with("-A INPUT")).count();
    assert_eq!(appended, 2, "{saved}");

    // Feeding the save back through iptables-restore keeps the same ruleset.
    let mut child = server
        .command(links.path("iptables-restore"))
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

// Ten processes appending one rule each at the same moment leave ten rules
// (DESIGN §5: invocations are serialized, like iptables -w).
scenario!(concurrent_appends_all_land, without skb);
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
scenario!(restore_is_atomic, without skb);
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

// ---------------------------------------------------------------------------
// Namespace and interface churn (issue 12): state is found by numbers the
// kernel reuses; what it belongs to is checked, never assumed.

fn status_json(ns: &Netns) -> serde_json::Value {
    let text = ns.netbeast_ok(&["status", "--json"]).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("status --json ({e}): {text}"))
}

fn json_ids(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
        .unwrap_or_default()
}

/// Program ids on the root cgroup (bpftool's view).
fn root_cgroup_programs() -> Vec<u64> {
    let root = netbeast::state::cgroup2_root().unwrap();
    let out = std::process::Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(&root)
        .output()
        .expect("bpftool runs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

/// A veth pair inside `ns`, both ends up; `index` pins the first end's
/// ifindex.
fn inner_veth(ns: &Netns, a: &str, b: &str, index: Option<u32>) {
    let index = index.map(|i| i.to_string());
    let mut args = vec!["link", "add", a];
    if let Some(i) = &index {
        args.extend(["index", i.as_str()]);
    }
    args.extend(["type", "veth", "peer", "name", b]);
    ns.ip(&args).unwrap();
    ns.ip(&["link", "set", a, "up"]).unwrap();
    ns.ip(&["link", "set", b, "up"]).unwrap();
}

fn ifindex_in(ns: &Netns, dev: &str) -> u32 {
    let text = ns.ip(&["-o", "link", "show", "dev", dev]).unwrap();
    text.split(':').next().unwrap().trim().parse().unwrap()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A namespace that gets the inode of a deleted one (the kernel hands the
/// lowest free inode number to the next namespace) must not inherit its
/// state: not its rules, not its "attached" interfaces, not its socket
/// programs. Other processes may take a freed inode first, so the test
/// moves the old namespace's state under the new namespace's inode, which
/// is exactly what reuse looks like from the state's side.
#[test]
fn a_namespace_reusing_an_inode_starts_empty() {
    require_root();
    let old = Netns::new("st-old").unwrap().with_netbeast(NETBEAST);
    inner_veth(&old, "nbt-v0", "nbt-v1", None);
    old.netbeast_ok(&["attach", "nbt-v0"]).unwrap();
    old.netbeast_iptables_ok("-A INPUT -p icmp -j DROP")
        .unwrap();
    old.netbeast_iptables_ok("-P INPUT DROP").unwrap();
    let sock = json_ids(&status_json(&old)["socket_program_ids"]);
    let new = Netns::new("st-new").unwrap().with_netbeast(NETBEAST);
    inner_veth(&new, "nbt-v0", "nbt-v1", None);
    let (old_id, new_id) = (old.id().unwrap(), new.id().unwrap());
    for root in ["/run/netbeast/bpffs/netbeast", RULES_ROOT] {
        let from = Path::new(root).join(old_id.to_string());
        let to = Path::new(root).join(new_id.to_string());
        std::fs::rename(&from, &to)
            .unwrap_or_else(|e| panic!("moving {} to {}: {e}", from.display(), to.display()));
    }
    drop(old);

    // status reports the state as a dead namespace's, not as its own.
    let status = status_json(&new);
    assert_eq!(status["attached"], serde_json::json!([]), "{status:#}");
    assert!(
        status["mismatches"]
            .to_string()
            .contains("deleted network namespace"),
        "{status:#}"
    );
    // The first command removes it: no rules, no policy, nothing attached.
    let out = new.netbeast(&["iptables", "-S"]).unwrap();
    let rules = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(
        rules, "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n",
        "the dead namespace's rules were adopted"
    );
    assert!(
        stderr_of(&out).contains("no longer exists"),
        "the removal is not reported: {}",
        stderr_of(&out)
    );
    let on_cgroup = root_cgroup_programs();
    assert_eq!(
        sock.len(),
        netbeast::loader::SOCK_PROGRAMS.len(),
        "the old namespace's socket programs"
    );
    assert!(
        sock.iter().all(|id| !on_cgroup.contains(id)),
        "the dead namespace's socket programs {sock:?} still run on the root cgroup"
    );
    let out = new.netbeast_ok(&["attach", "nbt-v0"]).unwrap();
    assert!(!out.contains("already attached"), "{out}");
    assert!(new.has_xdp("nbt-v0").unwrap(), "attach did not attach");
}

/// An interface that takes the ifindex of a deleted, attached one is not
/// "already attached"; and the deleted one detaches by its name.
#[test]
fn a_new_interface_with_a_reused_ifindex_is_not_attached() {
    require_root();
    let ns = Netns::new("st-ifidx").unwrap().with_netbeast(NETBEAST);
    inner_veth(&ns, "nbt-l1", "nbt-p1", None);
    inner_veth(&ns, "nbt-l3", "nbt-p3", None);
    ns.netbeast_ok(&["attach", "nbt-l1", "nbt-l3"]).unwrap();
    let reused = ifindex_in(&ns, "nbt-l3");
    ns.ip(&["link", "del", "nbt-l1"]).unwrap();
    ns.ip(&["link", "del", "nbt-l3"]).unwrap();
    inner_veth(&ns, "nbt-l2", "nbt-p2", Some(reused));

    let status = status_json(&ns);
    assert_eq!(status["attached"], serde_json::json!([]), "{status:#}");
    let out = ns.netbeast(&["detach", "nbt-l1"]).unwrap();
    assert!(
        out.status.success(),
        "detach of a deleted interface: {}",
        stderr_of(&out)
    );
    let out = ns.netbeast_ok(&["attach", "nbt-l2"]).unwrap();
    assert!(!out.contains("already attached"), "{out}");
    assert!(ns.has_xdp("nbt-l2").unwrap(), "nbt-l2 has no XDP program");
    let status = status_json(&ns);
    assert_eq!(status["attached"][0]["name"], "nbt-l2", "{status:#}");
    assert_eq!(status["mismatches"], serde_json::json!([]), "{status:#}");
}

/// A namespace deleted while attached leaves its pins, socket programs and
/// files behind (nothing runs in it any more to remove them); `netbeast
/// gc` removes them.
#[test]
fn gc_removes_what_a_deleted_namespace_left() {
    require_root();
    // No netbeast guard: the namespace is deleted as a user would.
    let ns = Netns::new("st-gc").unwrap();
    inner_veth(&ns, "nbt-g0", "nbt-g1", None);
    let run = |args: &[&str]| ns.run_ok(NETBEAST, args).unwrap();
    run(&["attach", "nbt-g0"]);
    run(&["iptables", "-A", "INPUT", "-j", "DROP"]);
    let status: serde_json::Value = serde_json::from_str(&run(&["status", "--json"])).unwrap();
    let sock = json_ids(&status["socket_program_ids"]);
    assert_eq!(sock.len(), netbeast::loader::SOCK_PROGRAMS.len());
    let id = ns.id().unwrap();
    let pins = Path::new("/run/netbeast/bpffs/netbeast").join(id.to_string());
    let rules = Path::new(RULES_ROOT).join(id.to_string());
    let lock = Path::new("/run/netbeast/locks").join(id.to_string());
    drop(ns);
    assert!(
        pins.exists() && rules.exists(),
        "the state went with the namespace"
    );

    // The kernel tears a deleted namespace down in the background
    // (cleanup_net): until then its devices, and the links on them, still
    // exist, and gc rightly keeps it. A test beside this one may also get
    // the freed inode; its first netbeast command then removes the dead
    // owner's state itself (the identity check, tested on its own above).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = std::process::Command::new(NETBEAST)
            .arg("gc")
            .output()
            .unwrap();
        assert!(out.status.success(), "gc: {}", stderr_of(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains(&id.to_string()) || !pins.exists() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gc never removed {id} within 20 s: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for path in [&pins, &rules, &lock] {
        assert!(!path.exists(), "{} left after gc", path.display());
    }
    let on_cgroup = root_cgroup_programs();
    assert!(
        sock.iter().all(|p| !on_cgroup.contains(p)),
        "socket programs {sock:?} still on the root cgroup after gc"
    );
}

/// A failed attach leaves nothing: a typo attaches nothing and creates no
/// state; an interface that cannot take the program undoes the others.
#[test]
fn a_failed_attach_leaves_nothing() {
    require_root();
    let ns = Netns::new("st-fail").unwrap().with_netbeast(NETBEAST);
    inner_veth(&ns, "nbt-f0", "nbt-f1", None);
    let id = ns.id().unwrap();
    let pins = Path::new("/run/netbeast/bpffs/netbeast").join(id.to_string());
    let rules = Path::new(RULES_ROOT).join(id.to_string());

    let out = ns.netbeast(&["attach", "nbt-f0", "nbt-nosuch"]).unwrap();
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("nbt-nosuch"),
        "{}",
        stderr_of(&out)
    );
    assert!(
        !pins.exists(),
        "{} created by a failed attach",
        pins.display()
    );
    assert!(
        !rules.exists(),
        "{} created by a failed attach",
        rules.display()
    );

    // lo has no native XDP.
    let out = ns
        .netbeast(&["attach", "--mode", "native", "nbt-f0", "lo"])
        .unwrap();
    assert!(!out.status.success(), "native XDP on lo was accepted");
    assert!(!ns.has_xdp("nbt-f0").unwrap(), "nbt-f0 left attached");
    let status = status_json(&ns);
    assert_eq!(status["attached"], serde_json::json!([]), "{status:#}");
    assert_eq!(status["socket_links_attached"], 0, "{status:#}");
    assert!(!pins.exists(), "{} left by a failed attach", pins.display());
}

/// `detach --all` leaves the lock file in place: commands waiting on it
/// must not end up holding a lock that newer commands no longer take.
#[test]
fn detach_all_keeps_the_lock_file() {
    use std::os::fd::AsRawFd;
    require_root();
    let ns = Netns::new("st-lock").unwrap().with_netbeast(NETBEAST);
    ns.netbeast_iptables_ok("-A INPUT -j ACCEPT").unwrap();
    let lock = Path::new("/run/netbeast/locks").join(ns.id().unwrap().to_string());
    let hold = |what: &str| {
        let file = std::fs::File::open(&lock)
            .unwrap_or_else(|e| panic!("{what}: {}: {e}", lock.display()));
        // SAFETY: flock on an open fd.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
        file
    };
    // Held here, it makes a command wait: it is the lock commands take.
    let held = hold("before detach --all");
    let mut waiting = ns
        .command(NETBEAST)
        .args(["iptables", "-A", "INPUT", "-j", "DROP"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "a command ran while {} was held",
        lock.display()
    );
    drop(held);
    assert!(waiting.wait().unwrap().success());
    let before = hold("after a command").metadata().unwrap().ino();
    ns.netbeast_ok(&["detach", "--all"]).unwrap();
    let after = std::fs::metadata(&lock)
        .unwrap_or_else(|e| panic!("detach --all removed {}: {e}", lock.display()))
        .ino();
    assert_eq!(before, after, "detach --all replaced the lock file");
}

/// `-V` and `-h` (through `netbeast iptables`, `ip6tables` and the
/// links' names) answer without making anything for the namespace: no
/// pins, no state directory, no lock. A version check by a program in a
/// namespace netbeast never ran in leaves it as it was.
#[test]
fn version_and_help_leave_no_state() {
    require_root();
    let ns = Netns::new("st-version").unwrap().with_netbeast(NETBEAST);
    let id = ns.id().unwrap();
    let dirs = [
        PIN_ROOT,
        "/run/netbeast/bpffs/netbeast",
        "/run/netbeast",
        "/run/netbeast/locks",
    ]
    .map(|dir| Path::new(dir).join(id.to_string()));
    // A lock file outlives its namespace by design, and a new namespace
    // may get a dead one's inode: what counts is what the commands make.
    let before = dirs.clone().map(|p| p.exists());
    for args in [
        vec!["iptables", "-V"],
        vec!["iptables", "--version"],
        vec!["iptables", "-h"],
        vec!["ip6tables", "-V"],
        vec!["save", "--version"],
    ] {
        let out = ns.netbeast(&args).unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr_of(&out));
        for (path, existed) in dirs.iter().zip(before) {
            assert!(
                existed || !path.exists(),
                "{args:?} made {}",
                path.display()
            );
        }
    }
}

/// A command that only reads or changes rules never mounts bpffs: with no
/// bpffs visible (a private mount namespace without it), it refuses and
/// says how to fix it, and the real data plane and its rules stay as
/// they were.
#[test]
fn rule_commands_refuse_without_bpffs() {
    require_root();
    let ns = Netns::new("st-nobpf").unwrap().with_netbeast(NETBEAST);
    ns.netbeast_iptables_ok("-A INPUT -p tcp --dport 22 -j DROP")
        .unwrap();
    let script = format!(
        "umount -l /run/netbeast/bpffs 2>/dev/null; \
         while mountpoint -q /sys/fs/bpf; do umount -l /sys/fs/bpf || exit 99; done; \
         {NETBEAST} --netns {} iptables -D INPUT 1; rc=$?; \
         if mountpoint -q /sys/fs/bpf; then echo MOUNTED >&2; fi; exit $rc",
        ns.name()
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert_ne!(
        out.status.code(),
        Some(99),
        "could not unmount bpffs: {err}"
    );
    assert!(
        !out.status.success(),
        "the rule change succeeded without bpffs"
    );
    assert!(
        !err.contains("MOUNTED"),
        "a rule command mounted bpffs: {err}"
    );
    assert!(err.contains("bpffs"), "the refusal does not say why: {err}");
    let rules = ns.netbeast_ok(&["iptables", "-S", "INPUT"]).unwrap();
    assert!(
        rules.contains("--dport 22"),
        "the rule was deleted:\n{rules}"
    );
}

/// Closed pipes and arguments that are not UTF-8 end in a message or
/// quietly, never in a panic.
#[test]
fn no_panic_on_closed_pipes_or_bad_bytes() {
    const RULES: usize = 2_000;
    require_root();
    let ns = Netns::new("st-pipe").unwrap().with_netbeast(NETBEAST);
    let mut text =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for i in 0..RULES {
        text += &format!("-A INPUT -s 10.{}.{}.0/24 -j ACCEPT\n", i / 250, i % 250);
    }
    text += "COMMIT\n";
    let out = ns.netbeast_with_input(&["restore"], &text).unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    // Rules in a namespace where nothing is attached: status says, in
    // one line, that they are enforced nowhere.
    let status = ns.netbeast_ok(&["status"]).unwrap();
    assert!(
        status.contains("attached: none — the rules and policies below are enforced nowhere"),
        "{status}"
    );
    for args in ["save", "iptables -L -n", "iptables -S", "status"] {
        let script = format!(
            "{NETBEAST} --netns {} {args} | head -c 1 >/dev/null; echo rc=${{PIPESTATUS[0]}}",
            ns.name()
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &script])
            .output()
            .unwrap();
        let err = stderr_of(&out);
        assert!(!err.contains("panicked"), "`{args} | head` panicked: {err}");
        let rc = String::from_utf8_lossy(&out.stdout);
        assert!(!rc.contains("rc=101"), "`{args} | head`: {rc} {err}");
    }
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"\xff");
    let links = Links::new("links");
    for (program, prefix) in [
        (PathBuf::from(NETBEAST), vec!["iptables"]),
        (links.path("iptables"), vec![]),
    ] {
        let out = ns
            .command(&program)
            .args(&prefix)
            .args(["-A", "INPUT", "-m", "comment", "--comment"])
            .arg(bad)
            .args(["-j", "ACCEPT"])
            .output()
            .unwrap();
        let err = stderr_of(&out);
        assert!(!err.contains("panicked"), "{program:?}: {err}");
        assert_ne!(out.status.code(), Some(101), "{program:?}: {err}");
    }
    // A restore file that is not UTF-8 outside a comment (where iptables
    // takes bytes, and netbeast too): refused, with the line.
    let file = std::env::temp_dir().join(format!("nbt-bad-utf8-{}.rules", std::process::id()));
    std::fs::write(
        &file,
        b"*filter\n-A INPUT -m comment --comment \xff -j ACCEPT\n-A INPUT -i x\xff -j ACCEPT\nCOMMIT\n",
    )
    .unwrap();
    let out = ns
        .netbeast(&["restore".as_ref(), file.as_os_str()])
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let err = stderr_of(&out);
    assert!(!out.status.success(), "a non-UTF-8 file was applied");
    assert!(
        mentions_line(&err, 3),
        "the refusal does not name line 3: {err}"
    );
}

/// `-o NAME` follows the interface of that name: deleted and made again
/// (a VPN reconnecting), it has a new ifindex, and the next netbeast
/// command compiles the rule against it (iptables matches names on every
/// packet; netbeast resolves them whenever the interfaces changed).
#[test]
fn an_output_interface_rule_follows_a_recreated_interface() {
    use netbeast::netns::{ROUTED_SERVER_ADDR, ROUTER_SERVER_IFACE, Routed, udp_send};
    const PORT: u16 = 10;
    require_root();
    let firewall = Firewall::netbeast(NETBEAST);
    let bed = Routed::new("st-oif", firewall.clone()).unwrap();
    bed.iptables_ok(&format!(
        "-A FORWARD -o {ROUTER_SERVER_IFACE} -p udp --dport {PORT} -j DROP"
    ))
    .unwrap();
    // Which FORWARD entry counts a datagram from the client to the server.
    let probe = |when: &str| -> String {
        let before = firewall.list(&bed.router, "FORWARD").unwrap();
        let to = std::net::SocketAddrV4::new(ROUTED_SERVER_ADDR, PORT);
        let start = std::time::Instant::now();
        loop {
            udp_send(&bed.client, to, b"probe", 1).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            let after = firewall.list(&bed.router, "FORWARD").unwrap();
            if after.rules[0].packets > before.rules[0].packets {
                return "rule".into();
            }
            if after.policy_packets > before.policy_packets {
                return "policy".into();
            }
            assert!(
                start.elapsed() < Duration::from_secs(3),
                "{when}: no FORWARD counter moved"
            );
        }
    };
    assert_eq!(probe("before"), "rule");
    bed.recreate_server_link().unwrap();
    // Any command notices.
    bed.router.netbeast_ok(&["iptables", "-S"]).unwrap();
    assert_eq!(
        probe("after the interface was made again"),
        "rule",
        "the -o rule no longer matches the recreated {ROUTER_SERVER_IFACE}"
    );
}

/// Workers that append rules (one by one and by `restore --noflush`) while
/// another attaches and detaches the interface and others clear the state
/// with `detach --all` before it all starts: every change is serialized.
/// The end state is what the operations imply in any order — every rule
/// appended after the last `detach --all`, the interface as its last
/// command left it, nothing reported out of line with the kernel.
#[test]
fn concurrent_attach_detach_and_rule_changes_serialize() {
    const APPENDERS: u16 = 6;
    const APPENDS_EACH: u16 = 3;
    const RESTORES: u16 = 3;
    require_root();
    let bed = testbed("st-mix", Firewall::netbeast(NETBEAST));
    let server = bed.server();
    // A first round with detach --all racing the appends: the lock keeps
    // each whole; afterwards the state is either empty or holds rules.
    let racers: Vec<_> = (0..APPENDERS)
        .map(|i| {
            let port = (1000 + i).to_string();
            server
                .command(NETBEAST)
                .args([
                    "iptables", "-A", "INPUT", "-p", "tcp", "--dport", &port, "-j", "ACCEPT",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .chain(std::iter::once(
            server
                .command(NETBEAST)
                .args(["detach", "--all"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ))
        .collect();
    for child in racers {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
    }
    server.netbeast_ok(&["detach", "--all"]).unwrap();

    let mut children = Vec::new();
    for i in 0..APPENDERS {
        let mut script = String::new();
        for j in 0..APPENDS_EACH {
            let port = 2000 + i * 100 + j;
            script += &format!(
                "{NETBEAST} iptables -A INPUT -p tcp --dport {port} -j ACCEPT || exit 1; "
            );
        }
        children.push(
            server
                .command("sh")
                .args(["-c", &script])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    let mut script = String::new();
    for r in 0..RESTORES {
        script += &format!(
            "printf '*filter\\n-A INPUT -p udp --dport {} -j ACCEPT\\nCOMMIT\\n' | {NETBEAST} restore --noflush || exit 1; ",
            3000 + r
        );
    }
    children.push(
        server
            .command("sh")
            .args(["-c", &script])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let toggles = format!(
        "{NETBEAST} attach {SERVER_IFACE} || exit 1; {NETBEAST} detach {SERVER_IFACE} || exit 1; \
         {NETBEAST} attach {SERVER_IFACE} || exit 1"
    );
    children.push(
        server
            .command("sh")
            .args(["-c", &toggles])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "a worker failed: {}", stderr_of(&out));
    }
    let saved = save(&bed);
    let rules = saved.lines().filter(|l| l.starts_with("-A INPUT")).count();
    assert_eq!(
        rules,
        usize::from(APPENDERS * APPENDS_EACH + RESTORES),
        "rules after the concurrent changes:\n{saved}"
    );
    let status = status_json(server);
    assert_eq!(status["attached"][0]["name"], SERVER_IFACE, "{status:#}");
    assert_eq!(status["mismatches"], serde_json::json!([]), "{status:#}");
    assert!(xdp_attached(&bed));
}

/// `status` reports the kernel memory of every pinned map as the kernel
/// counts it (issue 17: the footprint on small machines): the same figure
/// as bpftool's `bytes_memlock` for each map, and their sum.
#[test]
fn status_reports_the_memory_of_every_map() {
    let bed = testbed("st-mem", Firewall::netbeast(NETBEAST));
    let server = bed.server();
    server
        .netbeast_iptables_ok("-A INPUT -p tcp --dport 22 -j DROP")
        .unwrap();
    let status = status_json(server);
    let maps = status["map_memory"]
        .as_object()
        .unwrap_or_else(|| panic!("no map_memory in status --json: {status}"));
    assert_eq!(maps.len(), netbeast::loader::MAP_NAMES.len(), "{status}");
    let pins = PathBuf::from(status["pins"].as_str().expect("pins")).join("maps");
    let mut total = 0;
    for name in netbeast::loader::MAP_NAMES {
        let reported = maps[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} missing from map_memory: {status}"));
        let out = server
            .command("bpftool")
            .args(["-j", "map", "show", "pinned"])
            .arg(pins.join(name))
            .output()
            .expect("bpftool runs");
        let shown: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("bpftool map show {name} ({e}): {out:?}"));
        assert_eq!(
            Some(reported),
            shown["bytes_memlock"].as_u64(),
            "{name}: status and bpftool disagree"
        );
        total += reported;
    }
    assert_eq!(status["map_memory_bytes"].as_u64(), Some(total));
    let text = server.netbeast_ok(&["status"]).unwrap();
    assert!(text.contains("BPF map memory: "), "{text}");
}

/// 1,000 single-rule changes (`-I 1`, `-A`, `-D` by specification) from
/// four processes at a time leave exactly the rules the operations imply
/// (issue 17): each writer owns its addresses, so its rules' order in the
/// chain is its own sequence's, whatever the others did in between; and
/// `save` of the result restores to the same ruleset.
#[test]
fn concurrent_single_rule_changes_leave_the_implied_ruleset() {
    const WRITERS: usize = 4;
    const OPS_PER_WRITER: usize = 250;
    let bed = testbed("st-conc", Firewall::netbeast(NETBEAST));
    let server = bed.server();
    let rule = |w: usize, i: usize| format!("-s 10.{}.{}.{}/32 -j DROP", 100 + w, i / 256, i % 256);
    // What each writer's rules must be at the end, in chain order.
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); WRITERS];
    let mut scripts: Vec<Vec<String>> = vec![Vec::new(); WRITERS];
    for w in 0..WRITERS {
        let mut mine: std::collections::VecDeque<String> = Default::default();
        for i in 0..OPS_PER_WRITER {
            let line = match i % 4 {
                0 => {
                    mine.push_front(rule(w, i));
                    format!("-I INPUT 1 {}", rule(w, i))
                }
                1 | 2 => {
                    mine.push_back(rule(w, i));
                    format!("-A INPUT {}", rule(w, i))
                }
                _ => {
                    // The rule appended two steps before.
                    let gone = rule(w, i - 2);
                    mine.retain(|r| *r != gone);
                    format!("-D INPUT {gone}")
                }
            };
            scripts[w].push(line);
        }
        expected[w] = mine.into_iter().collect();
    }
    std::thread::scope(|s| {
        for script in &scripts {
            s.spawn(move || {
                for line in script {
                    server
                        .netbeast_iptables_ok(line)
                        .unwrap_or_else(|e| panic!("`{line}`: {e}"));
                }
            });
        }
    });
    let listed = server.netbeast_iptables_ok("-S INPUT").unwrap();
    let rules: Vec<String> = listed
        .lines()
        .filter_map(|l| l.strip_prefix("-A INPUT "))
        .map(str::to_owned)
        .collect();
    let total: usize = expected.iter().map(Vec::len).sum();
    assert_eq!(rules.len(), total, "rules listed:\n{listed}");
    for (w, want) in expected.iter().enumerate() {
        let prefix = format!("-s 10.{}.", 100 + w);
        let got: Vec<&String> = rules.iter().filter(|r| r.starts_with(&prefix)).collect();
        assert_eq!(
            got.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            want.iter().map(String::as_str).collect::<Vec<_>>(),
            "writer {w}'s rules"
        );
    }
    // The whole ruleset survives save and restore.
    let saved = save(&bed);
    let out = server.netbeast_with_input(&["restore"], &saved).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(comparable_save(&save(&bed)), comparable_save(&saved));
    assert_eq!(
        server.netbeast_iptables_ok("-S INPUT").unwrap(),
        listed,
        "the rules after restoring the saved ruleset"
    );
}

/// `-N` and `-X` are recorded without a compile or a generation switch
/// (issue 17): the live counters run on, so the rule file must keep its
/// counter bases, not the folded totals. A rule's count is the same
/// before and after them, and traffic after them still counts once.
#[test]
fn new_and_deleted_chains_keep_the_counters() {
    const PORT: u16 = 9;
    const DATAGRAMS: usize = 5;
    let bed = testbed("st-chains", Firewall::netbeast(NETBEAST));
    let server = bed.server();
    server
        .netbeast_iptables_ok(&format!("-A INPUT -p udp --dport {PORT} -j DROP"))
        .unwrap();
    let counted = || {
        let listed = server.netbeast_iptables_ok("-S INPUT -v").unwrap();
        listed
            .lines()
            .find(|l| l.contains(&format!("--dport {PORT}")))
            .unwrap_or_else(|| panic!("the rule is gone:\n{listed}"))
            .to_owned()
    };
    let send = || {
        let to = std::net::SocketAddrV4::new(netbeast::netns::SERVER_ADDR, PORT);
        netbeast::netns::udp_send(bed.client(), to, b"x", DATAGRAMS).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    };
    send();
    let before = counted();
    assert!(
        before.contains(&format!("-c {DATAGRAMS} ")),
        "{DATAGRAMS} datagrams not counted: {before}"
    );
    server.netbeast_iptables_ok("-N NBT-NEW").unwrap();
    assert_eq!(counted(), before, "the count after -N");
    send();
    let twice = counted();
    assert!(
        twice.contains(&format!("-c {} ", 2 * DATAGRAMS)),
        "after -N and {DATAGRAMS} more datagrams: {twice}"
    );
    server.netbeast_iptables_ok("-X NBT-NEW").unwrap();
    assert_eq!(counted(), twice, "the count after -X");
    let chains = server.netbeast_iptables_ok("-S").unwrap();
    assert!(!chains.contains("NBT-NEW"), "{chains}");
    // A rule change after them folds the right totals.
    server.netbeast_iptables_ok("-A INPUT -j ACCEPT").unwrap();
    assert_eq!(counted(), twice, "the count after a compiled change");
}
