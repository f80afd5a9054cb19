//! ipset on netbeast (issue 18): the `ipset` command (a multi-call link to
//! the netbeast binary) against the real ipset 7.17 in a twin namespace —
//! output, messages and exit codes command by command — and `-m set`
//! rules on real TCP, each scenario also run with the kernel's iptables
//! and ipset as the oracle.
//!
//! Needs root and the `ipset` package (`cargo xtask setup`). Run:
//! `cargo test -p netbeast --test ipset`.

use std::process::Output;
use std::time::{Duration, Instant};

use netbeast::netns::{
    CLIENT_ADDR,
    ConnectOutcome::{Connected, TimedOut},
    Firewall, Netns, SERVER_IFACE, Testbed, require_root, tcp_server, veth_pair,
};

#[path = "support/pair6.rs"]
mod pair6;
use pair6::pair6;

#[path = "support/links.rs"]
mod links;
use links::Links;

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
const TIMEOUT: Duration = Duration::from_secs(1);

include!("support/scenario.rs");

/// `ipset ARGS` in the server: the real one under iptables, netbeast's
/// (`netbeast ipset`) under netbeast.
fn ipset(bed: &Testbed, args: &str) -> Output {
    let args: Vec<&str> = args.split_whitespace().collect();
    match &bed.firewall {
        Firewall::Iptables => bed.server().run("ipset", &args).unwrap(),
        Firewall::Netbeast { .. } => {
            let mut argv = vec!["ipset"];
            argv.extend(&args);
            bed.server().netbeast(&argv).unwrap()
        }
    }
}

fn ipset_ok(bed: &Testbed, args: &str) {
    let out = ipset(bed, args);
    assert!(
        out.status.success(),
        "ipset {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn testbed(tag: &str, firewall: Firewall) -> Testbed {
    require_root();
    Testbed::new(tag, firewall).unwrap_or_else(|e| panic!("setting up the testbed: {e}"))
}

fn expect(bed: &Testbed, when: &str, expected: &[(u16, netbeast::netns::ConnectOutcome)]) {
    let ports: Vec<u16> = expected.iter().map(|(p, _)| *p).collect();
    let got = bed.connect(&ports, TIMEOUT).unwrap();
    assert_outcomes(when, "port ", expected, &got, || {
        bed.save().unwrap_or_default()
    });
}

// A blocklist: the client's address in a hash:ip set that a DROP rule
// matches. Adding and deleting it takes effect with no ruleset change.
scenario!(hash_ip_blocklist);
fn hash_ip_blocklist(firewall: Firewall) {
    let bed = testbed("set-ip", firewall);
    let _servers: Vec<_> = [22, 23]
        .into_iter()
        .map(|p| tcp_server(bed.server(), p).unwrap())
        .collect();
    ipset_ok(&bed, "create blk hash:ip");
    bed.iptables_ok("-A INPUT -m set --match-set blk src -j DROP")
        .unwrap();
    assert!(
        bed.save()
            .unwrap()
            .contains("-A INPUT -m set --match-set blk src -j DROP\n"),
        "{}",
        bed.save().unwrap()
    );
    expect(&bed, "empty set", &[(22, Connected), (23, Connected)]);
    ipset_ok(&bed, &format!("add blk {CLIENT_ADDR}"));
    expect(&bed, "client in the set", &[(22, TimedOut), (23, TimedOut)]);
    ipset_ok(&bed, &format!("del blk {CLIENT_ADDR}"));
    ipset_ok(&bed, "add blk 10.199.0.77");
    expect(
        &bed,
        "a neighbour in the set",
        &[(22, Connected), (23, Connected)],
    );
    // A set in use cannot go.
    let out = ipset(&bed, "destroy blk");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "ipset v7.17: Set cannot be destroyed: it is in use by a kernel component\n"
    );
}

// Two dimensions and negation: hash:ip,port with src,dst drops one port of
// the client; `!` over a hash:net allow list drops what is not in it; a
// bitmap:port set matches destination ports.
scenario!(ports_nets_and_negation);
fn ports_nets_and_negation(firewall: Firewall) {
    let bed = testbed("set-port", firewall);
    let _servers: Vec<_> = [22, 23, 24, 25]
        .into_iter()
        .map(|p| tcp_server(bed.server(), p).unwrap())
        .collect();
    ipset_ok(&bed, "create pair hash:ip,port");
    ipset_ok(&bed, &format!("add pair {CLIENT_ADDR},tcp:23"));
    ipset_ok(&bed, &format!("add pair {CLIENT_ADDR},udp:22"));
    ipset_ok(&bed, "create allow hash:net");
    ipset_ok(&bed, "add allow 192.0.2.0/24");
    ipset_ok(&bed, "create ports bitmap:port range 0-1024");
    ipset_ok(&bed, "add ports 25");
    bed.iptables_ok("-A INPUT -m set --match-set pair src,dst -j DROP")
        .unwrap();
    bed.iptables_ok("-A INPUT -p tcp --dport 24 -m set ! --match-set allow src -j DROP")
        .unwrap();
    bed.iptables_ok("-A INPUT -m set --match-set ports dst -j DROP")
        .unwrap();
    // One direction for a two-dimension set never matches (xt_set).
    bed.iptables_ok("-A INPUT -m set --match-set pair src -j DROP")
        .unwrap();
    expect(
        &bed,
        "pair, allow list, ports",
        &[
            (22, Connected),
            (23, TimedOut),
            (24, TimedOut),
            (25, TimedOut),
        ],
    );
    ipset_ok(&bed, "add allow 10.199.0.0/16");
    ipset_ok(&bed, "del ports 25");
    expect(
        &bed,
        "client's net allowed, port 25 out of the set",
        &[
            (22, Connected),
            (23, TimedOut),
            (24, Connected),
            (25, Connected),
        ],
    );
}

// Members with a timeout leave by themselves; swap exchanges what two sets
// hold under the rules that name them.
scenario!(timeout_and_swap);
fn timeout_and_swap(firewall: Firewall) {
    let bed = testbed("set-tmo", firewall);
    let _server = tcp_server(bed.server(), 22).unwrap();
    ipset_ok(&bed, "create blk hash:net timeout 600");
    ipset_ok(&bed, "create next hash:net timeout 600");
    bed.iptables_ok("-A INPUT -m set --match-set blk src -j DROP")
        .unwrap();
    ipset_ok(&bed, "add blk 10.199.0.0/24 timeout 2");
    let added = Instant::now();
    expect(&bed, "member for 2 s", &[(22, TimedOut)]);
    std::thread::sleep(Duration::from_secs(3).saturating_sub(added.elapsed()));
    expect(&bed, "member expired", &[(22, Connected)]);
    ipset_ok(&bed, &format!("add next {CLIENT_ADDR}"));
    ipset_ok(&bed, "swap blk next");
    expect(&bed, "swapped in", &[(22, TimedOut)]);
    ipset_ok(&bed, "flush blk");
    expect(&bed, "flushed", &[(22, Connected)]);
}

// `-j SET` (xt_SET): a port knock. A SYN to 1111 adds its source to a set
// with a timeout, which opens port 22; a SYN to 2222 deletes it, which
// closes it again. The member the packet added is listed and saved with
// the set's timeout.
scenario!(port_knock_with_set_target);
fn port_knock_with_set_target(firewall: Firewall) {
    let bed = testbed("set-knock", firewall);
    let _server = tcp_server(bed.server(), 22).unwrap();
    ipset_ok(&bed, "create knocked hash:ip timeout 600");
    for rule in [
        "-A INPUT -p tcp --dport 1111 -j SET --add-set knocked src",
        "-A INPUT -p tcp --dport 1111 -j DROP",
        "-A INPUT -p tcp --dport 2222 -j SET --del-set knocked src",
        "-A INPUT -p tcp --dport 2222 -j DROP",
        "-A INPUT -p tcp --dport 22 -m set ! --match-set knocked src -j DROP",
    ] {
        bed.iptables_ok(rule).unwrap();
    }
    let saved = bed.save().unwrap();
    assert!(
        saved.contains("-A INPUT -p tcp -m tcp --dport 1111 -j SET --add-set knocked src\n")
            && saved.contains("-A INPUT -p tcp -m tcp --dport 2222 -j SET --del-set knocked src\n"),
        "{saved}"
    );
    expect(&bed, "closed", &[(22, TimedOut)]);
    expect(&bed, "knock", &[(1111, TimedOut)]);
    expect(&bed, "opened by the knock", &[(22, Connected)]);
    let client = CLIENT_ADDR.to_string();
    // The member the packet added, with the set's timeout counting down.
    for command in ["list knocked", "save knocked"] {
        let out = ipset(&bed, command);
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains(&client))
            .unwrap_or_else(|| panic!("ipset {command}: no member {CLIENT_ADDR}:\n{text}"));
        let left: u32 = line
            .split_whitespace()
            .skip_while(|w| *w != "timeout")
            .nth(1)
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("ipset {command}: no timeout in {line:?}"));
        assert!((590..=600).contains(&left), "ipset {command}: {line:?}");
    }
    expect(&bed, "close", &[(2222, TimedOut)]);
    expect(&bed, "closed again", &[(22, TimedOut)]);
    let out = ipset(&bed, "list knocked");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&client),
        "deleted by the packet"
    );
    // A set a rule writes cannot go either.
    let out = ipset(&bed, "destroy knocked");
    assert_eq!(out.status.code(), Some(1));
}

// xt_SET's checks when the rule is added: the set must exist and be of
// the rule's family (exit 2, nothing added).
scenario!(set_target_needs_an_existing_set);
fn set_target_needs_an_existing_set(firewall: Firewall) {
    let bed = testbed("set-chk", firewall);
    let out = bed.iptables("-A INPUT -j SET --add-set nope src").unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    ipset_ok(&bed, "create six hash:ip family inet6");
    let out = bed.iptables("-A INPUT -j SET --del-set six src").unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(!bed.save().unwrap().contains("SET"));
}

/// Output made comparable across two implementations: the random hash seed
/// and the memory size (each implementation's own structures) blanked,
/// and members — listed in hash order by the kernel — sorted.
fn comparable(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut block: Vec<String> = Vec::new();
    let flush = |block: &mut Vec<String>, out: &mut Vec<String>| {
        block.sort();
        out.append(block);
    };
    for line in text.lines() {
        let mut line = line.to_string();
        if let Some(i) = line.find("initval 0x") {
            line.replace_range(i + 8..i + 18, "SEED");
        }
        if line.starts_with("Size in memory: ") {
            line = "Size in memory: N".into();
        }
        let member = line.starts_with("add ")
            || (!line.contains(": ") && !line.starts_with("create ") && !line.is_empty());
        if member {
            block.push(line);
        } else {
            flush(&mut block, &mut out);
            out.push(line);
        }
    }
    flush(&mut block, &mut out);
    out
}

/// Remaining timeouts tick between the two runs: a member line's last
/// number may differ by one second.
fn same_line(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let split = |l: &str| {
        l.rsplit_once(" timeout ")
            .and_then(|(head, n)| Some((head.to_string(), n.parse::<i64>().ok()?)))
    };
    matches!((split(a), split(b)), (Some((ha, na)), Some((hb, nb))) if ha == hb && (na - nb).abs() <= 1)
}

/// Every command of a session through the real ipset and netbeast's link,
/// in twin namespaces: stdout, stderr and exit code alike.
#[test]
fn ipset_command_line_matches_real_ipset() {
    require_root();
    let link = Links::new("ipset-cli");
    let real = Netns::new("ipset-real").unwrap();
    let ours = Netns::new("ipset-ours").unwrap().with_netbeast(NETBEAST);
    veth_pair(
        &ours,
        SERVER_IFACE,
        "10.199.9.1/24",
        &ours,
        "nbt-peer",
        "10.199.9.2/24",
    )
    .unwrap();
    ours.netbeast_ok(&["attach", SERVER_IFACE]).unwrap();
    let session = [
        "create foo hash:ip timeout 300",
        "add foo 10.0.0.1",
        "add foo 10.0.0.2 timeout 50",
        "add foo 10.0.0.1",
        "add foo 10.0.0.1 -exist",
        "add foo 300.1.1.1",
        "test foo 10.0.0.1",
        "test foo 10.0.0.9",
        "create n hash:net family inet6 maxelem 100",
        "add n 2001:db8::/64",
        "add n 10.0.0.1",
        "create ip hash:ip,port",
        "add ip 10.1.1.1,tcp:80",
        "add ip 10.1.1.2,udp:53",
        "add ip 10.1.1.3,80",
        "add ip 10.1.1.1,icmp:8/0",
        "add ip 10.1.1.1,icmp:echo-reply",
        "add ip 10.1.1.1,gre:0",
        "add ip 10.1.1.1,gre:5",
        "add ip 10.1.1.4,tcp:80-82",
        "add ip 10.1.1.1",
        "add ip 10.1.1.1,foo:3",
        "del ip 10.9.9.9,tcp:1",
        "create np hash:net,port",
        "add np 10.0.0.0/8,tcp:22",
        "create bp bitmap:port range 0-1024",
        "add bp 22",
        "add bp tcp:80",
        "add bp 2000",
        "create b2 bitmap:port",
        "create nn hash:net",
        "add nn 10.0.0.1",
        "add nn 10.1.2.3/8",
        "add nn 10.9.0.1-10.9.0.6",
        "add nn 0.0.0.0/0",
        "create x hash:ip",
        "add x 10.0.0.0/30",
        "create h hash:ip hashsize 100 maxelem 2",
        "add h 1.1.1.1",
        "add h 1.1.1.2",
        "add h 1.1.1.3",
        "create foo hash:ip",
        "create q hash:foo",
        "create q hash:ip bogus 1",
        "bogus",
        "add nope 1.2.3.4",
        "list",
        "save",
        "list -t",
        "-n list",
        "list x",
        "list nope",
        "swap nn foo",
        "create w hash:net",
        "swap nn w",
        "save nn",
        "save w",
        "rename w ww",
        "del x 10.0.0.1",
        "test x 10.0.0.1",
        "flush x",
        "list x",
        "destroy ww",
        "destroy nosuch",
        "list -n",
        "destroy",
        "list",
    ];
    for line in session {
        let args: Vec<&str> = line.split_whitespace().collect();
        let want = real.run("ipset", &args).unwrap();
        let got = ours.run(link.path("ipset"), &args).unwrap();
        let (wo, go) = (
            String::from_utf8_lossy(&want.stdout),
            String::from_utf8_lossy(&got.stdout),
        );
        let (wl, gl) = (comparable(&wo), comparable(&go));
        assert!(
            wl.len() == gl.len()
                && wl.iter().zip(&gl).all(|(a, b)| same_line(a, b))
                && wo.ends_with('\n') == go.ends_with('\n'),
            "ipset {line}: stdout differs\nreal:\n{wo}\nnetbeast:\n{go}"
        );
        assert_eq!(
            String::from_utf8_lossy(&got.stderr),
            String::from_utf8_lossy(&want.stderr),
            "ipset {line}: stderr"
        );
        assert_eq!(
            got.status.code(),
            want.status.code(),
            "ipset {line}: exit code"
        );
    }
}

/// `ipset restore` of a save, and the time one element takes to add: the
/// map write itself (one syscall) and a whole restore's per-line cost.
/// Printed, not asserted (the machine's load varies).
#[test]
fn restore_round_trip_and_cost() {
    require_root();
    let ours = Netns::new("ipset-rest").unwrap().with_netbeast(NETBEAST);
    veth_pair(
        &ours,
        SERVER_IFACE,
        "10.199.9.1/24",
        &ours,
        "nbt-peer",
        "10.199.9.2/24",
    )
    .unwrap();
    ours.netbeast_ok(&["attach", SERVER_IFACE]).unwrap();
    const N: u32 = 20_000;
    let mut input = String::from("create big hash:ip maxelem 100000\ncreate nets hash:net\n");
    for i in 0..N {
        input += &format!("add big 10.{}.{}.{}\n", i >> 16, (i >> 8) & 255, i & 255);
    }
    input += "add nets 192.168.0.0/16\nadd nets 172.16.1.0/24\n";
    let started = Instant::now();
    let out = ours
        .netbeast_with_input(&["ipset", "restore"], &input)
        .unwrap();
    let elapsed = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "restore of {N} elements: {elapsed:?}, {:.1} us per element",
        elapsed.as_secs_f64() * 1e6 / f64::from(N)
    );
    let saved = ours.netbeast_ok(&["ipset", "save"]).unwrap();
    assert_eq!(
        saved.lines().filter(|l| l.starts_with("add big ")).count(),
        N as usize
    );
    assert!(saved.contains("add nets 172.16.1.0/24\n"), "{saved}");
    // Saved, destroyed, restored: the same save.
    ours.netbeast_ok(&["ipset", "destroy"]).unwrap();
    let out = ours
        .netbeast_with_input(&["ipset", "restore"], &saved)
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut again: Vec<_> = ours
        .netbeast_ok(&["ipset", "save"])
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let mut before: Vec<_> = saved.lines().map(str::to_string).collect();
    again.sort();
    before.sort();
    assert_eq!(again, before);
    // A restore error names its line and stops there.
    let out = ours
        .netbeast_with_input(
            &["ipset", "restore"],
            "add big 10.250.0.1\nadd nosuch 1.2.3.4\n",
        )
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "ipset v7.17: Error in line 2: The set with the given name does not exist\n"
    );
    // One `ipset add` command, process start to exit.
    let started = Instant::now();
    ours.netbeast_ok(&["ipset", "add", "big", "10.251.0.1"])
        .unwrap();
    println!("one `netbeast ipset add` process: {:?}", started.elapsed());
}

/// IPv6: `ip6tables -m set` with inet6 sets (hash:ip,port with `src,dst`,
/// `!` over a hash:net), on real TCP; netbeast and the kernel alike.
fn ipv6_sets(netbeast: bool) {
    use std::net::{SocketAddr, TcpListener, TcpStream};
    require_root();
    const CLIENT6: &str = "fd00:18::1";
    const SERVER6: &str = "fd00:18::2";
    let tag = if netbeast { "set6-nb" } else { "set6-ipt" };
    let binary = netbeast.then_some(NETBEAST);
    let (client, server) = pair6(tag, "10.218.0", CLIENT6, SERVER6, binary);
    let _listeners: Vec<TcpListener> = server
        .in_netns(|| {
            [22, 23, 24]
                .iter()
                .map(|p| TcpListener::bind(format!("[::]:{p}")).unwrap())
                .collect()
        })
        .unwrap();
    let output = |program: &str, line: &str| {
        let args: Vec<&str> = line.split_whitespace().collect();
        if netbeast {
            let mut argv = vec![program];
            argv.extend(&args);
            server.netbeast(&argv).unwrap()
        } else {
            server.run(program, &args).unwrap()
        }
    };
    let run = |program: &str, line: &str| {
        let out = output(program, line);
        assert!(
            out.status.success(),
            "{program} {line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let connects = || -> Vec<bool> {
        client
            .in_netns(|| {
                [22u16, 23, 24]
                    .iter()
                    .map(|&p| {
                        let addr: SocketAddr = format!("[{SERVER6}]:{p}").parse().unwrap();
                        TcpStream::connect_timeout(&addr, TIMEOUT).is_ok()
                    })
                    .collect()
            })
            .unwrap()
    };
    run("ipset", "create p6 hash:ip,port family inet6");
    run("ipset", &format!("add p6 {CLIENT6},tcp:23"));
    run("ipset", "create n6 hash:net family inet6");
    run("ipset", "add n6 fd00:18::/64");
    // An inet set in an ip6tables rule is refused (exit 2).
    run("ipset", "create v4 hash:ip");
    let refused = output("ip6tables", "-A INPUT -m set --match-set v4 src -j DROP");
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("The protocol family of set v4 is IPv4, which is not applicable."),
        "{refused:?}"
    );
    run(
        "ip6tables",
        "-A INPUT -m set --match-set p6 src,dst -j DROP",
    );
    run(
        "ip6tables",
        "-A INPUT -p tcp --dport 24 -m set ! --match-set n6 src -j DROP",
    );
    assert_eq!(connects(), [true, false, true], "netbeast: {netbeast}");
    run("ipset", "del n6 fd00:18::/64");
    run("ipset", "add n6 fd00:99::/64");
    run("ipset", &format!("del p6 {CLIENT6},tcp:23"));
    assert_eq!(connects(), [true, true, false], "netbeast: {netbeast}");
}

#[test]
fn ipv6_sets_netbeast() {
    ipv6_sets(true);
}

#[test]
fn ipv6_sets_iptables_oracle() {
    ipv6_sets(false);
}
