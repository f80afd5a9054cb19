//! Crash safety (issue 12): each command that changes state is killed at
//! every one of its steps in turn — `NETBEAST_FAULT=N` makes netbeast
//! SIGKILL itself at its N-th fault point, the boundaries between steps
//! that change pins, links, maps or files — and after each kill:
//! - `status --json` says what the kernel has (checked against `bpftool`
//!   and the kernel's own lists of attached programs);
//! - the next command finds the old state or the new one, never a mix:
//!   the rules it lists are the rules the kernel enforces (a probe packet
//!   counted by the rule the listing says matches it), and no temporary
//!   file is left;
//! - running the command again completes it.
//!
//! Needs root. Run: `cargo test -p netbeast --test crash`.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use netbeast::netns::{Firewall, ListedChain, Netns, require_root, udp_send, veth_pair};
use serde_json::Value;

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
const SERVER_IF: &str = "nbt-s";
const CLIENT_IF: &str = "nbt-c";
const SERVER_ADDR: &str = "10.199.0.2";
const CLIENT_ADDR: &str = "10.199.0.1";
const RULES_ROOT: &str = "/run/netbeast";
/// No command has this many fault points: reaching it means the run never
/// ends, a bug of the harness or of the hook.
const MAX_POINTS: u32 = 64;
/// How long a probe packet may take to be counted.
const PROBE_WAIT: Duration = Duration::from_millis(1500);
/// The port the INPUT probe is sent to: the rule change under test adds
/// a rule for it, so which rule counts it tells which ruleset runs.
const PROBE_PORT: u16 = 10;

/// The rules in force before each change: port 9 dropped on the way in,
/// accepted (and counted) on the way out.
const BASE: &str = "\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p udp --dport 9 -j DROP
-A OUTPUT -p udp --dport 9 -j ACCEPT
COMMIT
";

/// A server namespace (netbeast's) and a client, joined by a veth pair.
struct Bed {
    client: Netns,
    server: Netns,
}

fn bed(tag: &str) -> Bed {
    require_root();
    let client = Netns::new(&format!("{tag}-c")).unwrap();
    let server = Netns::new(&format!("{tag}-s"))
        .unwrap()
        .with_netbeast(NETBEAST);
    veth_pair(
        &client,
        CLIENT_IF,
        &format!("{CLIENT_ADDR}/24"),
        &server,
        SERVER_IF,
        &format!("{SERVER_ADDR}/24"),
    )
    .unwrap();
    Bed { client, server }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs netbeast `args` in `ns` armed to die at fault point `n`: `None`
/// when it was killed there, its output when it ran to the end.
fn run_with_fault(ns: &Netns, args: &[&str], input: Option<&str>, n: u32) -> Option<Output> {
    let mut command = ns.command(NETBEAST);
    command.args(args).env("NETBEAST_FAULT", n.to_string());
    let out = match input {
        None => command.output().unwrap(),
        Some(text) => {
            use std::io::Write;
            command
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = command.spawn().unwrap();
            // A kill may close the pipe before all is written.
            let _ = child.stdin.take().unwrap().write_all(text.as_bytes());
            child.wait_with_output().unwrap()
        }
    };
    match out.status.signal() {
        Some(libc::SIGKILL) => None,
        Some(other) => panic!("netbeast {args:?} died of signal {other}: {}", stderr(&out)),
        None => Some(out),
    }
}

fn ok(ns: &Netns, args: &[&str]) -> String {
    ns.netbeast_ok(args)
        .unwrap_or_else(|e| panic!("netbeast {args:?}: {e}"))
}

fn restore(ns: &Netns, text: &str) {
    let out = ns.netbeast_with_input(&["restore"], text).unwrap();
    assert!(out.status.success(), "restore: {}", stderr(&out));
}

fn status(ns: &Netns) -> Value {
    let text = ok(ns, &["status", "--json"]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("status --json ({e}): {text}"))
}

fn iface<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
}

fn ids(v: &Value) -> Vec<u64> {
    let mut ids: Vec<u64> = v
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

/// The XDP program ids on `dev` in `ns`, as bpftool sees them.
fn bpftool_xdp(ns: &Netns, dev: &str) -> Vec<u64> {
    let text = ns
        .run_ok("bpftool", &["-j", "net", "show", "dev", dev])
        .unwrap_or_else(|e| panic!("bpftool net show dev {dev}: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap();
    let mut ids: Vec<u64> = v
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["xdp"].as_array().cloned().unwrap_or_default())
        .filter_map(|x| x["id"].as_u64())
        .collect();
    ids.sort();
    ids
}

/// The program ids attached to the root cgroup, as bpftool sees them.
fn bpftool_cgroup_programs() -> Vec<u64> {
    let root = netbeast::state::cgroup2_root().unwrap();
    let out = std::process::Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(&root)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

/// `status --json` agrees with the kernel about `dev`: the XDP program
/// ids it reports are bpftool's, an "attached" interface runs the pinned
/// programs, and every live socket link's program is on the root cgroup.
fn check_status_is_kernel(ns: &Netns, dev: &str, when: &str) -> Value {
    let st = status(ns);
    let kernel = bpftool_xdp(ns, dev);
    match iface(&st, dev) {
        None => assert!(
            kernel.is_empty(),
            "{when}: status does not list {dev}, bpftool shows XDP {kernel:?}: {st:#}"
        ),
        Some(i) => {
            assert_eq!(
                ids(&i["xdp"]["kernel_program_ids"]),
                kernel,
                "{when}: status and bpftool disagree on {dev}'s XDP: {st:#}"
            );
            let xdp_ours = i["xdp"]["program_id"]
                .as_u64()
                .is_some_and(|id| kernel.contains(&id));
            assert_eq!(
                i["xdp"]["enforced"].as_bool().unwrap(),
                xdp_ours,
                "{when}: status says XDP enforced={} on {dev}, bpftool {kernel:?}: {st:#}",
                i["xdp"]["enforced"]
            );
            let state = i["state"].as_str().unwrap();
            let both = xdp_ours && i["tc_egress"]["enforced"].as_bool().unwrap();
            assert_eq!(
                state == "attached",
                both,
                "{when}: {dev} is '{state}': {st:#}"
            );
            if state != "attached" && state != "detached" {
                assert!(
                    !st["mismatches"].as_array().unwrap().is_empty(),
                    "{when}: {dev} is '{state}' but status reports no mismatch: {st:#}"
                );
            }
        }
    }
    let sock = ids(&st["socket_program_ids"]);
    if !sock.is_empty() {
        let on_cgroup = bpftool_cgroup_programs();
        for id in sock {
            assert!(
                on_cgroup.contains(&id),
                "{when}: status lists socket program {id}, the root cgroup has {on_cgroup:?}"
            );
        }
    }
    st
}

fn state_dir(ns: &Netns) -> PathBuf {
    Path::new(RULES_ROOT).join(ns.id().unwrap().to_string())
}

/// No temporary or half-committed file is left in the state directory.
fn check_no_leftovers(ns: &Netns, when: &str) {
    let dir = state_dir(ns);
    let left: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.ends_with(".tmp")
                || n.starts_with("ruleset.json.")
                || n == "ruleset.next"
                || n == "guard-slots.next"
                || n == "counters.next"
        })
        .collect();
    assert!(
        left.is_empty(),
        "{when}: left in {}: {left:?}",
        dir.display()
    );
}

fn list(ns: &Netns, chain: &str) -> ListedChain {
    Firewall::netbeast(NETBEAST)
        .list(ns, chain)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Which entry of a chain counted a probe: a rule (its index) or the
/// policy; `None`: nothing counted it (no program ran).
#[derive(Debug, PartialEq, Eq)]
enum Counted {
    Rule(usize),
    Policy,
}

fn counted(before: &ListedChain, after: &ListedChain) -> Option<Counted> {
    if after.policy_packets > before.policy_packets {
        return Some(Counted::Policy);
    }
    after
        .rules
        .iter()
        .zip(&before.rules)
        .position(|(a, b)| a.packets > b.packets)
        .map(Counted::Rule)
}

/// Sends one UDP packet from `from` to `to:port` and says which entry of
/// `chain` in `counter` counted it.
fn probe(counter: &Netns, chain: &str, from: &Netns, to: &str, port: u16) -> Option<Counted> {
    let before = list(counter, chain);
    let addr = format!("{to}:{port}").parse().unwrap();
    udp_send(from, addr, b"probe", 1).unwrap();
    let start = Instant::now();
    loop {
        let after = list(counter, chain);
        if let Some(c) = counted(&before, &after) {
            return Some(c);
        }
        if start.elapsed() > PROBE_WAIT {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The INPUT probe is counted by the rule the listing says matches it
/// first (`-S` order), or by the policy when none does.
fn check_input_probe(bed: &Bed, when: &str) {
    let rules = ok(&bed.server, &["iptables", "-S", "INPUT"]);
    check_input_probe_listed(bed, &rules, when);
}

/// [`check_input_probe`] with the `-S INPUT` listing already taken.
fn check_input_probe_listed(bed: &Bed, rules: &str, when: &str) {
    let matching = rules
        .lines()
        .filter(|l| l.starts_with("-A INPUT"))
        .position(|l| l.contains(&format!("--dport {PROBE_PORT} ")));
    let expected = match matching {
        Some(i) => Counted::Rule(i),
        None => Counted::Policy,
    };
    let got = probe(&bed.server, "INPUT", &bed.client, SERVER_ADDR, PROBE_PORT);
    assert_eq!(
        got,
        Some(expected),
        "{when}: the INPUT probe to port {PROBE_PORT} was counted by {got:?}; the listing is:\n{rules}"
    );
}

/// Both hooks enforce the base rules: the INPUT probe (XDP) and an OUTPUT
/// probe (TC egress) are counted.
fn check_enforced(bed: &Bed, when: &str) {
    check_input_probe(bed, when);
    let got = probe(&bed.server, "OUTPUT", &bed.server, CLIENT_ADDR, 9);
    assert_eq!(
        got,
        Some(Counted::Rule(0)),
        "{when}: the OUTPUT probe (TC egress) was not counted by its rule"
    );
}

fn check_attached(bed: &Bed, when: &str) {
    let st = check_status_is_kernel(&bed.server, SERVER_IF, when);
    let i = iface(&st, SERVER_IF).unwrap_or_else(|| panic!("{when}: {SERVER_IF} missing: {st:#}"));
    assert_eq!(i["state"], "attached", "{when}: {st:#}");
    assert_eq!(
        st["socket_links_attached"],
        netbeast::loader::SOCK_PROGRAMS.len(),
        "{when}: {st:#}"
    );
    assert_eq!(st["mismatches"], serde_json::json!([]), "{when}: {st:#}");
    check_enforced(bed, when);
}

fn check_detached(ns: &Netns, when: &str) {
    let st = check_status_is_kernel(ns, SERVER_IF, when);
    assert!(
        iface(&st, SERVER_IF).is_none_or(|i| i["state"] == "detached"),
        "{when}: {st:#}"
    );
    assert_eq!(st["socket_links_attached"], 0, "{when}: {st:#}");
    assert_eq!(st["mismatches"], serde_json::json!([]), "{when}: {st:#}");
    // (check_status_is_kernel compared the XDP programs with bpftool's.)
    assert!(
        iface(&st, SERVER_IF).is_none_or(|i| ids(&i["xdp"]["kernel_program_ids"]).is_empty()),
        "{when}: XDP left: {st:#}"
    );
}

/// `attach` killed at each step: the kill leaves what status says; the
/// next command rolls a half attach back (or a rerun completes it), and
/// the rules are enforced exactly when status says attached.
#[test]
fn attach_killed_at_every_step() {
    let bed = bed("cr-att");
    restore(&bed.server, BASE);
    for n in 1..MAX_POINTS {
        let when = format!("attach killed at fault point {n}");
        if let Some(out) = run_with_fault(&bed.server, &["attach", SERVER_IF], None, n) {
            assert!(out.status.success(), "attach: {}", stderr(&out));
            check_attached(&bed, "attach run to the end");
            assert!(n > 10, "attach has only {} fault points", n - 1);
            return;
        }
        let st = check_status_is_kernel(&bed.server, SERVER_IF, &when);
        let hooked = iface(&st, SERVER_IF)
            .is_some_and(|i| i["xdp"]["enforced"] == true || i["tc_egress"]["enforced"] == true);
        if hooked {
            // Running it again completes it.
            ok(&bed.server, &["attach", SERVER_IF]);
            check_no_leftovers(&bed.server, &when);
            check_attached(&bed, &format!("{when}, then run again"));
            ok(&bed.server, &["detach", SERVER_IF]);
        } else {
            // The next command finds the old state: the rules, nothing
            // attached (socket programs without an interface go).
            let rules = ok(&bed.server, &["iptables", "-S"]);
            assert_eq!(
                rules.lines().filter(|l| l.starts_with("-A")).count(),
                2,
                "{when}: {rules}"
            );
        }
        check_no_leftovers(&bed.server, &when);
        check_detached(&bed.server, &format!("{when}, settled"));
    }
    panic!("attach never ran to the end");
}

/// Extra interfaces in the server, so one `attach` can serve several
/// detaches (programs load once per command, which is the slow part).
fn add_inner_veths(ns: &Netns, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let (a, b) = (format!("nbt-x{i}"), format!("nbt-y{i}"));
            ns.ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])
                .unwrap();
            ns.ip(&["link", "set", &a, "up"]).unwrap();
            ns.ip(&["link", "set", &b, "up"]).unwrap();
            a
        })
        .collect()
}

/// `detach IFACE` killed at each step: status says what the kernel has,
/// a rerun finishes the detach, and the socket programs go with the last
/// interface (their steps are the last one's).
#[test]
fn detach_killed_at_every_step() {
    let bed = bed("cr-det");
    restore(&bed.server, BASE);
    let inner = add_inner_veths(&bed.server, 2);
    let mut all: Vec<&str> = inner.iter().map(String::as_str).collect();
    all.push(SERVER_IF);
    let mut args = vec!["attach"];
    args.extend(&all);
    ok(&bed.server, &args);
    // Interfaces that are not the last: killed after the XDP unpin (half
    // detached, while others stay attached), then after both.
    for (n, dev) in [(1, &inner[0]), (2, &inner[1])] {
        let when = format!("detach {dev} killed at fault point {n}");
        assert!(
            run_with_fault(&bed.server, &["detach", dev], None, n).is_none(),
            "{when}: it ran to the end"
        );
        let st = check_status_is_kernel(&bed.server, dev, &when);
        assert_ne!(
            iface(&st, dev).unwrap()["state"],
            "attached",
            "{when}: {st:#}"
        );
        ok(&bed.server, &["detach", dev]);
        check_status_is_kernel(&bed.server, dev, &format!("{when}, run again"));
        assert!(
            bpftool_xdp(&bed.server, dev).is_empty(),
            "{when}: XDP left on {dev}"
        );
    }
    check_attached(&bed, "after detaching the other interfaces");
    for n in 1..MAX_POINTS {
        let when = format!("detach of the last interface killed at fault point {n}");
        if let Some(out) = run_with_fault(&bed.server, &["detach", SERVER_IF], None, n) {
            assert!(out.status.success(), "detach: {}", stderr(&out));
            check_detached(&bed.server, "detach run to the end");
            assert!(
                n > 6,
                "detach of the last interface has only {} fault points",
                n - 1
            );
            return;
        }
        check_status_is_kernel(&bed.server, SERVER_IF, &when);
        let out = bed.server.netbeast(&["detach", SERVER_IF]).unwrap();
        assert!(
            out.status.success(),
            "{when}: running detach again failed: {}",
            stderr(&out)
        );
        check_no_leftovers(&bed.server, &when);
        check_detached(&bed.server, &format!("{when}, run again"));
        ok(&bed.server, &["attach", SERVER_IF]);
    }
    panic!("detach never ran to the end");
}

/// A rule change killed at each step: the next command lists the old
/// ruleset or the new one, and that is the one the kernel enforces.
#[test]
fn rule_change_killed_at_every_step() {
    let bed = bed("cr-rule");
    restore(&bed.server, BASE);
    ok(&bed.server, &["attach", SERVER_IF]);
    let change = format!("-A INPUT -p udp --dport {PROBE_PORT} -j DROP");
    let mut args = vec!["iptables"];
    args.extend(change.split_whitespace());
    for n in 1..MAX_POINTS {
        let when = format!("`{change}` killed at fault point {n}");
        let finished = run_with_fault(&bed.server, &args, None, n);
        check_status_is_kernel(&bed.server, SERVER_IF, &when);
        let rules = ok(&bed.server, &["iptables", "-S", "INPUT"]);
        check_input_probe_listed(&bed, &rules, &when);
        check_no_leftovers(&bed.server, &when);
        if rules.contains(&format!("--dport {PROBE_PORT} ")) {
            ok(&bed.server, &["iptables", "-D", "INPUT", "2"]);
        }
        if let Some(out) = finished {
            assert!(out.status.success(), "{}", stderr(&out));
            assert!(n > 4, "a rule change has only {} fault points", n - 1);
            return;
        }
    }
    panic!("the rule change never ran to the end");
}

/// `-N` killed at each step. It changes no compiled table, so it is
/// recorded without a compile or a generation switch (the rule file, then
/// the commit number in `ACTIVE`, then the rename): the next command lists
/// the chain or not, the rules in force are the base rules either way,
/// their counters are counted once, and nothing is left behind.
#[test]
fn new_chain_killed_at_every_step() {
    let bed = bed("cr-newc");
    restore(&bed.server, BASE);
    ok(&bed.server, &["attach", SERVER_IF]);
    let args = ["iptables", "-N", "NBT-NEW"];
    for n in 1..MAX_POINTS {
        let when = format!("`-N NBT-NEW` killed at fault point {n}");
        let before = list(&bed.server, "INPUT");
        let finished = run_with_fault(&bed.server, &args, None, n);
        check_status_is_kernel(&bed.server, SERVER_IF, &when);
        // No traffic in between: the counts are what they were (a count
        // folded into the file while the live one runs on would show
        // twice).
        let after = list(&bed.server, "INPUT");
        assert_eq!(
            (after.policy_packets, after.rules.len()),
            (before.policy_packets, before.rules.len()),
            "{when}: INPUT's counts changed"
        );
        for (a, b) in after.rules.iter().zip(&before.rules) {
            assert_eq!(a.packets, b.packets, "{when}: a rule's count changed");
        }
        let all = ok(&bed.server, &["iptables", "-S"]);
        check_input_probe(&bed, &when);
        check_no_leftovers(&bed.server, &when);
        if all.lines().any(|l| l == "-N NBT-NEW") {
            ok(&bed.server, &["iptables", "-X", "NBT-NEW"]);
        }
        if let Some(out) = finished {
            assert!(out.status.success(), "{}", stderr(&out));
            assert!(n > 2, "-N has only {} fault points", n - 1);
            return;
        }
    }
    panic!("-N never ran to the end");
}

/// A 10,000-rule restore killed at each step: either ruleset, whole.
#[test]
fn large_restore_killed_at_every_step() {
    const RULES: usize = 10_000;
    let bed = bed("cr-rest");
    restore(&bed.server, BASE);
    ok(&bed.server, &["attach", SERVER_IF]);
    let mut big =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for i in 0..RULES - 1 {
        big += &format!(
            "-A INPUT -s 10.{}.{}.0/24 -p tcp --dport 22 -j ACCEPT\n",
            100 + i / 250,
            i % 250
        );
    }
    big += &format!("-A INPUT -p udp --dport {PROBE_PORT} -j DROP\n");
    big += "-A OUTPUT -p udp --dport 9 -j ACCEPT\nCOMMIT\n";
    for n in 1..MAX_POINTS {
        let when = format!("restore of {RULES} rules killed at fault point {n}");
        let finished = run_with_fault(&bed.server, &["restore"], Some(&big), n);
        let rules = ok(&bed.server, &["iptables", "-S", "INPUT"]);
        let count = rules.lines().filter(|l| l.starts_with("-A")).count();
        assert!(
            count == 1 || count == RULES,
            "{when}: {count} INPUT rules listed"
        );
        check_input_probe_listed(&bed, &rules, &when);
        check_no_leftovers(&bed.server, &when);
        if let Some(out) = finished {
            assert!(out.status.success(), "{}", stderr(&out));
            assert_eq!(count, RULES);
            assert!(n > 4, "a restore has only {} fault points", n - 1);
            return;
        }
        if count == RULES {
            restore(&bed.server, BASE);
        }
    }
    panic!("the restore never ran to the end");
}

/// `detach --all` killed at each step: the next command finishes it —
/// no link, pin, socket program or file of the namespace is left.
#[test]
fn detach_all_killed_at_every_step() {
    let bed = bed("cr-all");
    let id = bed.server.id().unwrap();
    let pins = Path::new("/run/netbeast/bpffs/netbeast").join(id.to_string());
    for n in 1..MAX_POINTS {
        let when = format!("detach --all killed at fault point {n}");
        restore(&bed.server, BASE);
        ok(&bed.server, &["attach", SERVER_IF]);
        let sock = ids(&status(&bed.server)["socket_program_ids"]);
        let finished = run_with_fault(&bed.server, &["detach", "--all"], None, n);
        check_status_is_kernel(&bed.server, SERVER_IF, &when);
        // Any command finishes it.
        let rules = ok(&bed.server, &["iptables", "-S"]);
        assert!(
            !rules.lines().any(|l| l.starts_with("-A")),
            "{when}: rules survived: {rules}"
        );
        check_detached(&bed.server, &when);
        assert!(!pins.exists(), "{when}: {} left", pins.display());
        assert!(!state_dir(&bed.server).exists(), "{when}: state left");
        let on_cgroup = bpftool_cgroup_programs();
        assert!(
            sock.iter().all(|id| !on_cgroup.contains(id)),
            "{when}: socket programs {sock:?} still on the root cgroup"
        );
        if let Some(out) = finished {
            assert!(out.status.success(), "{}", stderr(&out));
            assert!(n > 6, "detach --all has only {} fault points", n - 1);
            return;
        }
    }
    panic!("detach --all never ran to the end");
}
