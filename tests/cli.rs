//! The command line against real iptables 1.8, the oracle (issue 12):
//! exit codes and option handling of `iptables`, `iptables-save` and
//! `iptables-restore` (netbeast run through links with those names, and as
//! `netbeast save` / `netbeast restore`).
//!
//! Each case runs the same command line in two twin namespaces, one with
//! real iptables and one with netbeast, both holding the same ruleset, and
//! compares the exit codes, the gist of the message (words both must say),
//! and afterwards the rulesets (`iptables -S`), so a refused command is
//! seen to have applied nothing.
//!
//! Not followed: quirks of iptables-nft's kernel side, where it reports
//! nf_tables' errno as exit 4 (`-A USR -j INPUT`, `-X INPUT` on a chain
//! with rules) or deletes an empty built-in chain (`-X INPUT`): netbeast
//! refuses both with exit 1, as iptables-legacy does.
//!
//! Needs root. Run: `cargo test -p netbeast --test cli`.

use std::{
    path::{Path, PathBuf},
    process::Output,
};

use netbeast::netns::{Netns, comparable_save, require_root};

#[path = "support/links.rs"]
mod links;
use links::Links;

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");

/// The ruleset both namespaces start each case from.
const SETUP: &[&str] = &["-N USR", "-A USR -j ACCEPT", "-A INPUT -p udp -j USR"];

/// A restore file that changes the ruleset, to see it is not applied when
/// the command line is refused.
const RESTORE_FILE: &str =
    "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n";

/// Which program a case runs.
#[derive(Clone, Copy, Debug)]
enum Tool {
    Iptables,
    Save,
    Restore,
}

/// What both messages must say (lower case), or each its own words where
/// they differ in wording but agree in meaning.
#[derive(Clone, Copy, Debug)]
enum Gist {
    /// No message at all.
    Quiet,
    Both(&'static str),
    Each {
        iptables: &'static str,
        netbeast: &'static str,
    },
}

struct Case {
    tool: Tool,
    /// Arguments; `{file}` is a restore file with [`RESTORE_FILE`], or with
    /// `file` when given.
    args: &'static [&'static str],
    file: Option<&'static str>,
    rc: i32,
    gist: Gist,
}

const fn case(tool: Tool, args: &'static [&'static str], rc: i32, gist: Gist) -> Case {
    Case {
        tool,
        args,
        file: None,
        rc,
        gist,
    }
}

use Gist::{Both, Each, Quiet};
use Tool::{Iptables, Restore, Save};

const CASES: &[Case] = &[
    // Finding 11 of issue 12.
    case(
        Iptables,
        &["-A", "INPUT", "-j", "NOPE"],
        2,
        Both("'nope' does not exist"),
    ),
    case(Iptables, &["-P", "INPUT", ""], 1, Both("policy")),
    case(Iptables, &["-P", "INPUT", "NOPE"], 1, Both("policy")),
    case(Iptables, &["-P", "INPUT", "accept"], 1, Both("policy")),
    case(
        Iptables,
        &["-C", "FOO "],
        1,
        Each {
            iptables: "bad rule",
            netbeast: "no such chain",
        },
    ),
    case(Iptables, &["-Z", "USR", "3"], 0, Quiet),
    case(
        Iptables,
        &["-Z", "USR", "0"],
        2,
        Both("invalid rule number"),
    ),
    case(
        Iptables,
        &["-A", "INPUT", "--bogus"],
        2,
        Both("unknown option"),
    ),
    case(Iptables, &["-t", "bogus", "-L"], 3, Both("bogus")),
    case(Iptables, &["-N", "FOO "], 2, Both("invalid chain name")),
    case(
        Iptables,
        &["-A", "FOO ", "-j", "ACCEPT"],
        1,
        Each {
            iptables: "no chain/target/match",
            netbeast: "no such chain",
        },
    ),
    case(Iptables, &["-A", "NOPE", "-j", "ACCEPT"], 1, Quiet),
    case(
        Iptables,
        &["-D", "USR", "3"],
        1,
        Both("index of deletion too big"),
    ),
    case(Iptables, &["-N", "USR"], 1, Both("already exists")),
    case(Iptables, &["-L", "USR", "3"], 0, Quiet),
    case(
        Iptables,
        &["-A", "INPUT", "-p", "bogus"],
        2,
        Both("protocol"),
    ),
    case(
        Restore,
        &["--tset", "{file}"],
        1,
        Both("unrecognized option '--tset'"),
    ),
    case(Restore, &["-X", "{file}"], 1, Both("invalid option -- 'x'")),
    case(
        Restore,
        &["{file}", "{file}"],
        1,
        Both("unknown arguments found on commandline"),
    ),
    case(Restore, &["-T"], 1, Both("requires an argument")),
    case(Restore, &["--table"], 1, Both("requires an argument")),
    case(Restore, &["-nt", "{file}"], 0, Quiet),
    case(Restore, &["--test", "--noflush", "{file}"], 0, Quiet),
    case(Restore, &["--te", "-Tfilter", "{file}"], 0, Quiet),
    case(Restore, &["-t", "--table=filter", "-w", "{file}"], 0, Quiet),
    case(Restore, &["-t", "-w", "3", "{file}"], 0, Quiet),
    case(Save, &["-t", "bogus"], 1, Both("bogus")),
    case(Save, &["--bogus"], 1, Both("unrecognized option '--bogus'")),
    case(
        Save,
        &["extra"],
        1,
        Both("unknown arguments found on commandline"),
    ),
    case(Save, &["-t"], 1, Both("requires an argument")),
    Case {
        file: Some("*filter\n-A INPUT -j NOPE\nCOMMIT\n"),
        ..case(Restore, &["{file}"], 2, Both("'nope' does not exist"))
    },
    Case {
        file: Some("*filter\n-A INPUT -p tcp --dport 22 -j ACCEPT\n-A INPUT --bogus\nCOMMIT\n"),
        ..case(Restore, &["{file}"], 2, Both("--bogus"))
    },
    Case {
        file: Some("*filter\n:INPUT BOGUS [0:0]\nCOMMIT\n"),
        ..case(Restore, &["{file}"], 1, Both("policy"))
    },
    Case {
        file: Some("*filter\n-A INPUT -j ACCEPT\n"),
        ..case(Restore, &["{file}"], 1, Both("commit expected"))
    },
];

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_lowercase()
}

/// Runs the case's command line in `ns` with `program`.
fn run(ns: &Netns, program: &Path, prefix: &[&str], case: &Case, file: &Path) -> Output {
    let args: Vec<String> = prefix
        .iter()
        .map(|a| a.to_string())
        .chain(
            case.args
                .iter()
                .map(|a| a.replace("{file}", file.to_str().unwrap())),
        )
        .collect();
    ns.run(program, &args).unwrap()
}

/// Resets `ns` to [`SETUP`] with `iptables` (the real one or a link),
/// unless it holds `setup` (its `-S` after a reset) already.
fn reset(ns: &Netns, iptables: &Path, restore: &Path, setup: &mut Option<String>) {
    if setup.as_deref().is_some_and(|s| *s == rules(ns, iptables)) {
        return;
    }
    let flush = ns
        .command(restore)
        .arg("/dev/stdin")
        .stdin(std::process::Stdio::piped())
        .spawn();
    let mut child = flush.unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n",
        )
        .unwrap();
    assert!(child.wait().unwrap().success(), "flush with {restore:?}");
    for line in SETUP {
        let args: Vec<&str> = line.split_whitespace().collect();
        ns.run_ok(iptables, &args)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    *setup = Some(rules(ns, iptables));
}

fn rules(ns: &Netns, iptables: &Path) -> String {
    ns.run_ok(iptables, &["-S"]).unwrap()
}

#[test]
fn exit_codes_and_options_as_iptables() {
    require_root();
    let oracle = Netns::new("cli-ipt").unwrap();
    let beast = Netns::new("cli-nb").unwrap().with_netbeast(NETBEAST);
    let links = Links::new("cli");
    let file = links.dir().join("rules");
    let real = |name: &str| PathBuf::from(name);

    let (mut oracle_setup, mut beast_setup) = (None, None);
    let mut failures = Vec::new();
    for case in CASES {
        std::fs::write(&file, case.file.unwrap_or(RESTORE_FILE)).unwrap();
        let (tool, subcommand) = match case.tool {
            Iptables => ("iptables", None),
            Save => ("iptables-save", Some("save")),
            Restore => ("iptables-restore", Some("restore")),
        };
        reset(
            &oracle,
            &real("iptables"),
            &real("iptables-restore"),
            &mut oracle_setup,
        );
        let expected = run(&oracle, &real(tool), &[], case, &file);
        let expected_rules = rules(&oracle, &real("iptables"));
        let mut runs = vec![(tool.to_string(), links.path(tool), Vec::new())];
        if let Some(sub) = subcommand {
            runs.push((
                format!("netbeast {sub}"),
                PathBuf::from(NETBEAST),
                vec![sub],
            ));
        }
        for (name, program, prefix) in runs {
            reset(
                &beast,
                &links.path("iptables"),
                &links.path("iptables-restore"),
                &mut beast_setup,
            );
            let got = run(&beast, &program, &prefix, case, &file);
            let what = format!("`{name} {}`", case.args.join(" "));
            let (rc, want_rc) = (got.status.code(), expected.status.code());
            if want_rc != Some(case.rc) {
                failures.push(format!(
                    "{what}: real iptables exits {want_rc:?}, the table says {}; fix the table",
                    case.rc
                ));
            }
            if rc != want_rc {
                failures.push(format!(
                    "{what}: exit {rc:?}, iptables {want_rc:?} (stderr: {})",
                    text(&got.stderr).trim()
                ));
            }
            let (said, oracle_said) = (text(&got.stderr), text(&expected.stderr));
            let gist_ok = match case.gist {
                Quiet => said.trim().is_empty() || rc != Some(0),
                Both(words) => said.contains(words) && oracle_said.contains(words),
                Each { iptables, netbeast } => {
                    said.contains(netbeast) && oracle_said.contains(iptables)
                }
            };
            if !gist_ok {
                failures.push(format!(
                    "{what}: the messages miss {:?}: netbeast said {:?}, iptables {:?}",
                    case.gist,
                    said.trim(),
                    oracle_said.trim()
                ));
            }
            let got_rules = rules(&beast, &links.path("iptables"));
            if got_rules != expected_rules {
                failures.push(format!(
                    "{what}: the rules differ afterwards:\nnetbeast:\n{got_rules}iptables:\n{expected_rules}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Rules whose listing names ports (22, 80, 443, 53, 514 per protocol, and
/// one without a service), hosts (127.0.0.1 is `localhost` in /etc/hosts;
/// 10.0.0.1 has no name and no DNS server is reachable from the test
/// namespace) and networks (127.0.0.0 is `loopback` in /etc/networks).
const NAMED_RULES: &[&str] = &[
    "-N USR",
    "-A INPUT -p tcp --dport 22 -j ACCEPT",
    "-A INPUT -p tcp -m multiport --dports 22,80,443,7777 -j ACCEPT",
    "-A INPUT -p udp -m multiport --sports 53,1000:2000 -j ACCEPT",
    "-A INPUT -s 127.0.0.1 -d 10.1.2.0/24 -p tcp --sport 80:443 -j ACCEPT",
    "-A INPUT -p udp --dport 53 -j USR",
    "-A INPUT -p tcp --dport 7777 ! -s 10.0.0.1 -j DROP",
    "-A INPUT -d 127.0.0.0/8 -j DROP",
    "-A INPUT -p tcp ! --dport 443 -j DROP",
    "-A INPUT -p udp --dport 514 -j DROP",
    "-A INPUT -p tcp --dport 514 -j DROP",
    "-A INPUT -p icmp --icmp-type echo-request -j ACCEPT",
    "-A INPUT ! -p udp -s 192.168.0.0/16 -j DROP",
    "-A USR -d 127.0.0.1 -p udp --sport 53 -j ACCEPT",
    "-A OUTPUT -p tcp --sport 80 -j REJECT",
    "-t nat -A PREROUTING -p tcp --dport 80 -j DNAT --to-destination 127.0.0.1:8080",
    "-t nat -A POSTROUTING -s 10.0.0.0/8 -o lo -j MASQUERADE",
    // The raw table: iptables' SYNPROXY recipe, Docker 28's guard of a
    // container address, the old NOTRACK name, a user chain.
    "-t raw -A PREROUTING -p tcp --dport 80 --syn -j CT --notrack",
    "-t raw -A PREROUTING -d 172.17.0.2/32 ! -i docker0 -j DROP",
    "-t raw -N RAWUSR",
    "-t raw -A OUTPUT -p udp -j RAWUSR",
    "-t raw -A RAWUSR -p udp --sport 53 -j NOTRACK",
    "-t raw -A RAWUSR -j CT",
    "-t raw -A RAWUSR -j LOG",
    "-t raw -A RAWUSR -j RETURN",
    "-t raw -P OUTPUT DROP",
];

/// `-L` without `-n` names hosts, networks and services as iptables does,
/// and `-n` prints what iptables 1.8 prints: the same rules listed by both,
/// compared byte for byte.
#[test]
fn listings_name_things_as_iptables() {
    require_root();
    let oracle = Netns::new("cli-lipt").unwrap();
    let beast = Netns::new("cli-lnb").unwrap().with_netbeast(NETBEAST);
    let links = Links::new("cli");
    let netbeast = links.path("iptables");
    for line in NAMED_RULES {
        let args: Vec<&str> = line.split_whitespace().collect();
        oracle.run_ok("iptables", &args).unwrap();
        beast
            .run_ok(&netbeast, &args)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    let mut failures = Vec::new();
    for listing in [
        "-L",
        "-L -n",
        "-L -v",
        "-L -n -v -x --line-numbers",
        "-L INPUT 4",
        "-L USR",
        "-t nat -L",
        "-t nat -L -n",
        "-t raw -L",
        "-t raw -L -n -v -x --line-numbers",
        "-t raw -S",
    ] {
        let args: Vec<&str> = listing.split_whitespace().collect();
        let want = oracle.run_ok("iptables", &args).unwrap();
        let got = beast.run_ok(&netbeast, &args).unwrap();
        if got != want {
            failures.push(format!(
                "`iptables {listing}` differs:\nnetbeast:\n{got}iptables:\n{want}"
            ));
        }
    }
    // iptables-save prints the raw table first, whatever order the tables
    // were made in.
    let want = comparable_save(&oracle.run_ok("iptables-save", &[] as &[&str]).unwrap());
    let got = comparable_save(
        &beast
            .run_ok(links.path("iptables-save"), &[] as &[&str])
            .unwrap(),
    );
    if got != want {
        failures.push(format!(
            "iptables-save differs:\nnetbeast:\n{got}\niptables:\n{want}"
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `OsString` from bytes, for arguments that are not UTF-8.
fn raw(bytes: &[u8]) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    std::ffi::OsString::from_vec(bytes.to_vec())
}

/// The lines of a save that hold rules (the rest carries dates and names).
fn rule_lines(save: &[u8]) -> Vec<Vec<u8>> {
    save.split(|b| *b == b'\n')
        .filter(|l| l.starts_with(b"-A "))
        .map(<[u8]>::to_vec)
        .collect()
}

/// iptables takes comments as bytes (`--comment $'\xff'`) and prints them
/// back as bytes in -S, -L and iptables-save; netbeast too, and a save
/// holding them restores. Raw bytes anywhere else are refused, with the
/// argument or line, and nothing is applied.
#[test]
fn comments_are_bytes_as_iptables() {
    require_root();
    let oracle = Netns::new("cli-bipt").unwrap();
    let beast = Netns::new("cli-bnb").unwrap().with_netbeast(NETBEAST);
    let links = Links::new("cli");
    let netbeast = links.path("iptables");
    let comment = raw(b"a\xffb \xc3\xa9 \"q\"");
    for (ns, program) in [
        (&oracle, PathBuf::from("iptables")),
        (&beast, netbeast.clone()),
    ] {
        let args = [
            raw(b"-A"),
            raw(b"INPUT"),
            raw(b"-m"),
            raw(b"comment"),
            raw(b"--comment"),
            comment.clone(),
            raw(b"-j"),
            raw(b"ACCEPT"),
        ];
        let out = ns.run(&program, &args).unwrap();
        assert!(out.status.success(), "{program:?}: {}", text(&out.stderr));
    }
    for listing in [&["-S"][..], &["-L", "INPUT"], &["-L", "INPUT", "-n", "-v"]] {
        let want = oracle.run("iptables", listing).unwrap().stdout;
        let got = beast.run(&netbeast, listing).unwrap().stdout;
        assert_eq!(
            got,
            want,
            "iptables {listing:?}:\nnetbeast: {}\niptables: {}",
            text(&got),
            text(&want)
        );
    }
    let want_save = oracle.run("iptables-save", &[] as &[&str]).unwrap().stdout;
    let got_save = beast.netbeast(&["save"]).unwrap().stdout;
    assert_eq!(rule_lines(&got_save), rule_lines(&want_save));

    // iptables' own save, bytes and all, restores into netbeast.
    let file = links.dir().join("saved");
    std::fs::write(&file, &want_save).unwrap();
    beast.netbeast_ok(&["iptables", "-F"]).unwrap();
    let restored = beast
        .netbeast(&[raw(b"restore"), file.clone().into()])
        .unwrap();
    assert!(restored.status.success(), "{}", text(&restored.stderr));
    assert_eq!(
        beast.run(&netbeast, &["-S"]).unwrap().stdout,
        oracle.run("iptables", &["-S"]).unwrap().stdout
    );

    // Raw bytes outside a comment: refused, with where, nothing applied.
    let before = beast.run(&netbeast, &["-S"]).unwrap().stdout;
    let out = beast
        .run(
            &netbeast,
            &[
                raw(b"-A"),
                raw(b"INPUT"),
                raw(b"-i"),
                raw(b"x\xff"),
                raw(b"-j"),
                raw(b"DROP"),
            ],
        )
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("argument 4"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(
        &file,
        b"*filter\n-A INPUT -m comment --comment \"ok \xff\" -j ACCEPT\n-A INPUT -i x\xff -j DROP\nCOMMIT\n",
    )
    .unwrap();
    let out = beast
        .netbeast(&[raw(b"restore"), file.clone().into()])
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("line 3"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(beast.run(&netbeast, &["-S"]).unwrap().stdout, before);
}

/// Argument lists with bytes that are not UTF-8, to every subcommand and
/// name, and outputs into closed pipes: whatever the outcome, never a
/// panic (a backtrace, exit 101).
#[test]
fn no_panic_on_raw_bytes_or_closed_pipes() {
    require_root();
    let ns = Netns::new("cli-fuzz").unwrap().with_netbeast(NETBEAST);
    let links = Links::new("cli");
    // Rules enough that listings outgrow a pipe's buffer.
    let mut restore = String::from("*filter\n");
    for port in 1..=3000 {
        restore.push_str(&format!("-A INPUT -p tcp --dport {port} -j ACCEPT\n"));
    }
    restore.push_str("COMMIT\n");
    let out = ns.netbeast_with_input(&["restore"], &restore).unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    let mut failures = Vec::new();
    let mut check = |what: String, out: &Output| {
        let said = text(&out.stderr);
        if said.contains("panicked") || out.status.code() == Some(101) {
            failures.push(format!("{what}: {said}"));
        }
    };
    // A small deterministic generator (xorshift), so a failure reproduces.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let words: &[&[u8]] = &[
        b"-A",
        b"INPUT",
        b"-j",
        b"ACCEPT",
        b"--comment",
        b"-m",
        b"comment",
        b"-i",
        b"-L",
        b"-S",
        b"-n",
        b"-t",
        b"nat",
        b"-c",
        b"-T",
        b"--table",
        b"-f",
        b"--",
        b"-",
        b"\xff",
        b"\xc3",
        b"a\xfe\xfd",
        b"\xf4\x8f\xbf\xbf",
        b"\xed\xa0\x80",
        b"x=\xff",
        b"--comment=\xff",
    ];
    let programs: Vec<(String, PathBuf, Vec<&[u8]>)> = vec![
        ("iptables".into(), links.path("iptables"), vec![]),
        ("iptables-save".into(), links.path("iptables-save"), vec![]),
        (
            "iptables-restore -t".into(),
            links.path("iptables-restore"),
            vec![b"-t"],
        ),
        (
            "netbeast iptables".into(),
            NETBEAST.into(),
            vec![b"iptables"],
        ),
        ("netbeast save".into(), NETBEAST.into(), vec![b"save"]),
        (
            "netbeast restore -t".into(),
            NETBEAST.into(),
            vec![b"restore", b"-t"],
        ),
        ("netbeast status".into(), NETBEAST.into(), vec![b"status"]),
        ("netbeast stats".into(), NETBEAST.into(), vec![b"stats"]),
        (
            "netbeast conntrack".into(),
            NETBEAST.into(),
            vec![b"conntrack"],
        ),
        ("netbeast detach".into(), NETBEAST.into(), vec![b"detach"]),
        ("netbeast attach".into(), NETBEAST.into(), vec![b"attach"]),
        ("netbeast".into(), NETBEAST.into(), vec![]),
    ];
    for (name, program, prefix) in &programs {
        for _ in 0..12 {
            let n = (next() % 6) as usize;
            let mut args: Vec<std::ffi::OsString> = prefix.iter().map(|p| raw(p)).collect();
            for _ in 0..n {
                args.push(raw(words[(next() % words.len() as u64) as usize]));
            }
            // Standard input is empty, so a restore reads nothing. In the
            // links' directory: `iptables-save -f -i` writes the file `-i`
            // where it runs.
            let out = ns
                .command(program)
                .args(&args)
                .current_dir(links.dir())
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            check(format!("{name} {args:?}"), &out);
        }
    }
    // Outputs into pipes whose reader has gone.
    for args in [
        &["iptables", "-L", "-n"][..],
        &["iptables", "-L"],
        &["iptables", "-S"],
        &["iptables", "-h"],
        &["save"],
        &["save", "-h"],
        &["status"],
        &["stats"],
        &["--help"],
    ] {
        let mut child = ns
            .command(NETBEAST)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        check(format!("netbeast {args:?} | (closed)"), &out);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `-w SECONDS` bounds the wait for the lock: while another command holds
/// it, `iptables -w 1` and `iptables-restore -w 1` give up after a second
/// with iptables' exit code for a busy resource, 4, and apply nothing.
/// (No oracle: iptables-nft takes no lock; this is iptables-legacy's
/// behaviour, which netbeast's lock is modelled on.)
#[test]
fn a_busy_lock_gives_exit_4_after_wait_seconds() {
    use std::os::fd::AsRawFd;
    require_root();
    let ns = Netns::new("cli-lock").unwrap().with_netbeast(NETBEAST);
    let links = Links::new("cli");
    ns.run_ok(links.path("iptables"), &["-N", "USR"]).unwrap();
    let before = rules(&ns, &links.path("iptables"));
    let dir = std::path::Path::new("/run/netbeast/locks");
    std::fs::create_dir_all(dir).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(ns.id().unwrap().to_string()))
        .unwrap();
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let file = links.dir().join("rules");
    std::fs::write(&file, RESTORE_FILE).unwrap();
    for (program, args) in [
        ("iptables", vec!["-w", "1", "-A", "INPUT", "-j", "ACCEPT"]),
        ("iptables-restore", vec!["-w", "1", file.to_str().unwrap()]),
    ] {
        let started = std::time::Instant::now();
        let out = ns.run(links.path(program), &args).unwrap();
        let took = started.elapsed();
        assert_eq!(
            out.status.code(),
            Some(4),
            "{program} {args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("stopped waiting after 1s"),
            "{}",
            text(&out.stderr)
        );
        assert!(
            took >= std::time::Duration::from_secs(1) && took < std::time::Duration::from_secs(5),
            "{program} gave up after {took:?}"
        );
    }
    drop(lock);
    assert_eq!(rules(&ns, &links.path("iptables")), before);
    // Free again: -w 1 succeeds.
    ns.run_ok(
        links.path("iptables"),
        &["-w", "1", "-A", "USR", "-j", "ACCEPT"],
    )
    .unwrap();
}
