//! The keyed state tables sized from memory (issue 17's memory target): a
//! data plane made with `attach --table-memory` has smaller conntrack,
//! recent, connlimit, socket, ICMP-host, SYN-proxy and ipset tables, as the
//! kernel's own map info shows; `status` reports the lower memory; later
//! commands and attaches keep the tables (and the connections in them); a
//! conflicting size is refused, saying how to change it; and a full
//! `IPSET_MEMBERS` says which table and how to grow it.
//!
//! Needs root. Run: `cargo test -p netbeast --test table_memory`.

#[path = "support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use netbeast::loader::sizing::{STATE_TABLES, TableSizes, capacity_for_budget, machine_memory};
use netbeast::netns::{ConnectOutcome, Firewall, Netns, SERVER_ADDR, Testbed, require_root};
use netbeast_common::{Capacity, size};

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
const TIMEOUT: Duration = Duration::from_secs(2);
const MIB: u64 = 1024 * 1024;

fn testbed(tag: &str, attach_args: &[&str]) -> Testbed {
    require_root();
    Testbed::new(tag, Firewall::netbeast_with(NETBEAST, attach_args))
        .unwrap_or_else(|e| panic!("setting up the testbed: {e}"))
}

fn status_json(ns: &Netns) -> serde_json::Value {
    let text = ns.netbeast_ok(&["status", "--json"]).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("status --json ({e}): {text}"))
}

/// Each state table's `max_entries` as the kernel reports it (bpftool's
/// map info of the pin), by name.
fn kernel_sizes(ns: &Netns) -> Vec<(&'static str, u64)> {
    pinned_sizes(ns, STATE_TABLES.iter().map(|(name, _)| *name))
}

/// The `max_entries` of each map of `names` pinned in `ns`'s data plane,
/// as bpftool reads them.
fn pinned_sizes(ns: &Netns, names: impl Iterator<Item = &'static str>) -> Vec<(&'static str, u64)> {
    let status = status_json(ns);
    let maps = PathBuf::from(status["pins"].as_str().expect("pins")).join("maps");
    names
        .map(|name| {
            let out = ns
                .command("bpftool")
                .args(["-j", "map", "show", "pinned"])
                .arg(maps.join(name))
                .output()
                .expect("bpftool runs (cargo xtask setup installs it)");
            let info: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("bpftool map show {name} ({e}): {out:?}"));
            let n = info["max_entries"]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: no max_entries in {info}"));
            (name, n)
        })
        .collect()
}

fn expected(sizes: &TableSizes) -> Vec<(&'static str, u64)> {
    sizes.iter().map(|(n, e)| (n, u64::from(e))).collect()
}

/// One round trip on an open connection: what the echo server sends back.
fn round_trip(stream: &mut TcpStream, what: &str) -> Result<(), String> {
    let message = format!("ping {what}");
    stream
        .write_all(message.as_bytes())
        .map_err(|e| format!("{what}: write: {e}"))?;
    let mut buf = vec![0u8; message.len()];
    stream
        .read_exact(&mut buf)
        .map_err(|e| format!("{what}: no echo: {e}"))?;
    if buf != message.as_bytes() {
        return Err(format!(
            "{what}: echoed {:?}",
            String::from_utf8_lossy(&buf)
        ));
    }
    Ok(())
}

/// `--table-memory 16M` (what a 512 MiB machine gets by default): every
/// state table is made smaller than its default, as the kernel's map info
/// shows, and `status` reports them and their lower memory; conntrack works
/// at that size (a TCP connection through a stateful ruleset with a DROP
/// policy); a second attach without the flag, one with the same flag, and
/// a rule change keep the tables and the tracked connection; another size
/// is refused with the way to get it, and changes nothing.
#[test]
fn small_table_memory_sizes_the_state_tables_for_the_data_planes_life() {
    let bed = testbed("tm-small", &["--table-memory", "16M"]);
    let server = bed.server();
    let wanted = TableSizes::for_budget(16 * MIB, &[]).unwrap();
    let sizes = kernel_sizes(server);
    assert_eq!(sizes, expected(&wanted), "max_entries of the state tables");
    for ((name, default), (_, n)) in STATE_TABLES.iter().zip(&sizes) {
        assert!(
            *n < u64::from(*default),
            "{name}: {n} entries, not below its default {default}"
        );
    }
    let status = status_json(server);
    let state = status["state_table_memory_bytes"].as_u64().unwrap();
    assert!(
        (8 * MIB..=16 * MIB).contains(&state),
        "state tables take {state} bytes with --table-memory 16M: {status:#}"
    );
    for (name, n) in &sizes {
        assert_eq!(
            status["state_tables"][name].as_u64(),
            Some(*n),
            "{status:#}"
        );
    }
    // All tables at their defaults take more than 200 MiB: the total
    // shows the difference.
    let full = TableSizes::defaults().bytes().unwrap();
    assert!(full > 200 * MIB);
    let total = status["map_memory_bytes"].as_u64().unwrap();
    let text = server.netbeast_ok(&["status"]).unwrap();
    let established = wanted.get("CT_ESTABLISHED").unwrap();
    assert!(
        text.contains(&format!(
            "state tables: {:.1} MiB of it",
            state as f64 / MIB as f64
        )) && text.contains(&format!("conntrack {established} established")),
        "{text}"
    );

    // Conntrack at this size: only connections it tracks get through.
    let _echo = support::echo_server(server, 22);
    for rule in [
        "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
        "-A INPUT -p tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT",
        "-P INPUT DROP",
    ] {
        server.netbeast_iptables_ok(rule).unwrap();
    }
    let mut held = netbeast::netns::tcp_stream(
        bed.client(),
        None,
        SocketAddrV4::new(SERVER_ADDR, 22),
        TIMEOUT,
    )
    .unwrap()
    .expect("a connection to port 22 through the stateful rules");
    held.set_read_timeout(Some(TIMEOUT)).unwrap();
    round_trip(&mut held, "after connecting").unwrap();
    let port = held.local_addr().unwrap().port();
    let tracked = |when: &str| {
        let listed = server.netbeast_ok(&["conntrack", "-L"]).unwrap();
        assert!(
            listed
                .lines()
                .any(|l| l.contains(&format!("sport={port} dport=22")) && l.contains("ESTABLISHED")),
            "{when}: the held connection (from port {port}) is not tracked:\n{listed}"
        );
    };
    tracked("after connecting");

    // The tables stay as made: attach again (without the flag, and with
    // the same one), change a rule.
    server
        .netbeast_ok(&["attach", netbeast::netns::SERVER_IFACE])
        .unwrap();
    server
        .netbeast_ok(&[
            "attach",
            netbeast::netns::SERVER_IFACE,
            "--table-memory",
            "16M",
        ])
        .unwrap();
    server
        .netbeast_iptables_ok("-I INPUT 1 -s 10.99.99.99 -j DROP")
        .unwrap();
    assert_eq!(kernel_sizes(server), sizes, "after attaching again");
    tracked("after attaching again");
    round_trip(&mut held, "after attaching again").unwrap();

    // Another size is refused, and changes nothing.
    for args in [
        &["--table-memory", "64M"][..],
        &["--table-memory", "auto"][..],
        &["--ct-established-size", "1024"][..],
    ] {
        let out = server
            .netbeast(&[&["attach", netbeast::netns::SERVER_IFACE][..], args].concat())
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "attach {args:?} succeeded over 16M tables"
        );
        assert!(
            err.contains("were sized when it was made")
                && err.contains(&format!("CT_ESTABLISHED has {established} entries"))
                && err.contains("netbeast detach --all"),
            "attach {args:?}: {err}"
        );
    }
    assert_eq!(kernel_sizes(server), sizes, "after the refused attaches");
    tracked("after the refused attaches");
    round_trip(&mut held, "after the refused attaches").unwrap();
    assert_eq!(
        status_json(server)["map_memory_bytes"].as_u64(),
        Some(total)
    );

    // A table missing beside the others (PROXIED, which older versions did
    // not pin; or one an upgrade makes anew) is made at their share, by
    // the next command that opens the data plane.
    let pins = PathBuf::from(status["pins"].as_str().unwrap()).join("maps");
    std::fs::remove_file(pins.join("PROXIED")).unwrap();
    server
        .netbeast_iptables_ok("-D INPUT -s 10.99.99.99 -j DROP")
        .unwrap();
    assert_eq!(kernel_sizes(server), sizes, "PROXIED made anew");
    server
        .netbeast_ok(&["attach", netbeast::netns::SERVER_IFACE])
        .unwrap();
    tracked("after PROXIED was made anew");
    round_trip(&mut held, "after PROXIED was made anew").unwrap();
}

/// Without `--table-memory` the tables are sized from the machine's
/// memory: a 32nd of it, which on a machine of 6.5 GiB or more keeps every
/// table at its default size (this one's 24 GiB do).
#[test]
fn default_sizes_follow_the_machine_memory() {
    let bed = testbed("tm-auto", &[]);
    let ram = machine_memory().unwrap();
    let auto = TableSizes::auto(ram, &[]).unwrap();
    assert_eq!(kernel_sizes(bed.server()), expected(&auto));
    if ram >= 8 << 30 {
        assert_eq!(auto, TableSizes::defaults(), "{ram} bytes of memory");
    }
    // --ct-*-size still sets its table, outside the budget, which the
    // other tables share.
    let bed = testbed(
        "tm-ct",
        &["--table-memory", "16M", "--ct-established-size", "100000"],
    );
    let sizes = kernel_sizes(bed.server());
    let fixed = TableSizes::for_budget(16 * MIB, &[("CT_ESTABLISHED", 100_000)]).unwrap();
    assert_eq!(sizes, expected(&fixed));
    assert_eq!(fixed.get("CT_ESTABLISHED"), Some(100_000));
    let small = TableSizes::for_budget(16 * MIB, &[]).unwrap();
    for (name, n) in sizes {
        assert!(n >= u64::from(small.get(name).unwrap()), "{name}: {n}");
    }
}

/// A budget below the tables' smallest sizes is refused before anything is
/// made, naming the least that works.
#[test]
fn too_small_a_budget_is_refused() {
    require_root();
    let ns = Netns::new("tm-tiny").unwrap().with_netbeast(NETBEAST);
    ns.run("ip", &["link", "add", "nbt-tm0", "type", "dummy"])
        .unwrap();
    for (flag, constant) in [
        ("--table-memory", "TABLE_SHRINK_MAX"),
        ("--ruleset-memory", "CAPACITY_SHRINK_MAX"),
    ] {
        let out = ns.netbeast(&["attach", "nbt-tm0", flag, "1M"]).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains(&format!("{flag} 1.0 MiB is too little"))
                && err.contains("at least")
                && err.contains(constant),
            "{err}"
        );
    }
    let out = ns
        .netbeast(&["attach", "nbt-tm0", "--table-memory", "lots"])
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("expected `auto` or a size"),
        "{err}"
    );
    let status = status_json(&ns);
    assert_eq!(status["map_memory_bytes"].as_u64(), Some(0), "{status:#}");
}

/// At the smallest sizing `IPSET_MEMBERS` holds 65,536 members: a set
/// whose own maxelem allows more reaches it, and the member past it is
/// refused naming the table, its real size and how to grow it.
#[test]
fn a_full_member_table_says_how_to_grow_it() {
    let bed = testbed("tm-ipset", &["--table-memory", "4M"]);
    let server = bed.server();
    let capacity = TableSizes::for_budget(4 * MIB, &[])
        .unwrap()
        .get("IPSET_MEMBERS")
        .unwrap();
    assert_eq!(
        capacity,
        netbeast_common::ipset::MEMBERS / netbeast_common::TABLE_SHRINK_MAX
    );
    server
        .netbeast_ok(&["ipset", "create", "big", "hash:ip", "maxelem", "1000000"])
        .unwrap();
    server
        .netbeast_ok(&["ipset", "add", "big", "10.0.0.0/16"])
        .unwrap();
    let mut refused = None;
    for i in 0..256u64 {
        let out = server
            .netbeast(&["ipset", "add", "big", &format!("10.1.0.{i}")])
            .unwrap();
        if !out.status.success() {
            refused = Some((i, String::from_utf8_lossy(&out.stderr).into_owned()));
            break;
        }
    }
    let (added, err) = refused.expect("the member table never filled");
    assert!(
        u64::from(capacity).abs_diff(65_536 + added) <= 64,
        "{added} members past 65,536 went in"
    );
    assert!(
        err.contains("fill IPSET_MEMBERS")
            && err.contains(&format!("({capacity} entries"))
            && err.contains("--table-memory"),
        "{err}"
    );
}

/// Each ruleset array's `max_entries` as the kernel reports it, for the
/// ones a [`Capacity`] sizes (not `GUARD_MEMO`: each program load makes
/// its own, unpinned).
fn ruleset_sizes(ns: &Netns) -> Vec<(&'static str, u64)> {
    let names = size::by_capacity(Capacity::FULL).map(|(name, _)| name);
    pinned_sizes(ns, names.into_iter().filter(|n| *n != "GUARD_MEMO"))
}

/// `--ruleset-memory 3M` (a 512 MiB box's `auto` gives 16M): the ruleset
/// arrays are made at their smallest capacity (8,192 rule slots), as the
/// kernel's map info and `status` show, and the rules work in both
/// generations at that size: the programs find each generation's rules,
/// classes, counters, translations and guards where userspace wrote them
/// (had they used the build's full regions, every lookup of generation 1
/// would fall past the arrays' end). A ruleset that does not fit is refused
/// saying how to grow the arrays, and changes nothing; another size for
/// the existing data plane is refused too.
#[test]
fn small_ruleset_memory_sizes_the_ruleset_arrays() {
    let bed = testbed(
        "tm-rules",
        &["--table-memory", "16M", "--ruleset-memory", "3M"],
    );
    let (server, client) = (bed.server(), bed.client());
    let capacity = capacity_for_budget(3 * MIB).unwrap();
    assert_eq!(capacity, Capacity::SMALLEST);
    let wanted: Vec<(&str, u64)> = size::by_capacity(capacity)
        .iter()
        .filter(|(name, _)| *name != "GUARD_MEMO")
        .map(|&(name, n)| (name, u64::from(n)))
        .collect();
    assert_eq!(ruleset_sizes(server), wanted, "the ruleset arrays' sizes");
    let status = status_json(server);
    let slots = Capacity::SMALLEST.slots();
    assert_eq!(slots, 8192);
    assert_eq!(
        status["ruleset_slots"].as_u64(),
        Some(u64::from(slots)),
        "{status:#}"
    );
    let ruleset_memory = status["ruleset_memory_bytes"].as_u64().unwrap();
    assert!(ruleset_memory <= 3 * MIB, "{status:#}");
    let text = server.netbeast_ok(&["status"]).unwrap();
    assert!(text.contains(&format!("{slots} rule slots")), "{text}");

    let _ssh = support::echo_server(server, 22);
    let _web = support::echo_server(server, 80);
    let _tls = support::echo_server(server, 443);
    let at = |port| SocketAddrV4::new(SERVER_ADDR, port);
    let outcomes = |when: &str| -> Vec<bool> {
        netbeast::netns::tcp_connect_all(client, &[at(22), at(80), at(2222)], TIMEOUT)
            .unwrap()
            .iter()
            .map(|o| match o {
                ConnectOutcome::Connected => true,
                o if o.is_refused() => false,
                o => panic!("{when}: {o}"),
            })
            .collect()
    };
    // Each change writes the other generation: the checks after two
    // changes in a row see both.
    server
        .netbeast_iptables_ok("-A INPUT -p tcp --dport 80 -j REJECT --reject-with tcp-reset")
        .unwrap();
    server
        .netbeast_iptables_ok(&format!(
            "-t nat -A PREROUTING -p tcp --dport 2222 -j DNAT --to-destination {SERVER_ADDR}:443"
        ))
        .unwrap();
    assert_eq!(outcomes("generation a"), [true, false, true]);
    server
        .netbeast_iptables_ok("-I INPUT 1 -p tcp --dport 22 -j REJECT --reject-with tcp-reset")
        .unwrap();
    assert_eq!(outcomes("generation b"), [false, false, true]);
    server
        .netbeast_iptables_ok("-D INPUT -p tcp --dport 80 -j REJECT --reject-with tcp-reset")
        .unwrap();
    assert_eq!(outcomes("generation a again"), [false, true, true]);
    // The counter of the rule the last two checks met, read from both
    // generations' regions (a SYN each).
    let listed = server.netbeast_iptables_ok("-L INPUT -v -n -x").unwrap();
    let packets: u64 = listed
        .lines()
        .find(|l| l.contains("dpt:22"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no count for the port 22 rule:\n{listed}"));
    assert!(packets >= 2, "{packets} packets counted:\n{listed}");
    // A guard (connlimit's record in GUARDS): one connection to port 80
    // at a time.
    server
        .netbeast_iptables_ok(
            "-I INPUT 1 -p tcp --syn --dport 80 -m connlimit --connlimit-above 1 -j REJECT \
             --reject-with tcp-reset",
        )
        .unwrap();
    let held = netbeast::netns::tcp_stream(client, None, at(80), TIMEOUT)
        .unwrap()
        .expect("the first connection to port 80");
    assert_eq!(outcomes("with one connection held"), [false, false, true]);
    drop(held);

    // A ruleset past the capacity (5,000 rules, each its own source: more
    // than its 4,096 match classes) is refused, and changes nothing.
    let rules = || {
        let filter = server.netbeast_iptables_ok("-S").unwrap();
        filter + &server.netbeast_iptables_ok("-t nat -S").unwrap()
    };
    let before = rules();
    let mut big = String::from("*filter\n");
    for i in 0..5000u32 {
        big.push_str(&format!(
            "-A INPUT -s 10.{}.{}.{}/32 -j DROP\n",
            100 + i / 65536,
            (i / 256) % 256,
            i % 256
        ));
    }
    big.push_str("COMMIT\n");
    let out = server
        .netbeast_with_input(&["restore", "--noflush"], &big)
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "5,000 rules went into 4,096 classes");
    assert!(
        err.contains(&format!("hold {slots} rule slots")) && err.contains("--ruleset-memory"),
        "{err}"
    );
    assert_eq!(rules(), before);
    assert_eq!(outcomes("after the refused restore"), [false, true, true]);

    // The size stays for the data plane's life.
    let out = server
        .netbeast(&[
            "attach",
            netbeast::netns::SERVER_IFACE,
            "--ruleset-memory",
            "64M",
        ])
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("were sized when it was made"),
        "{err}"
    );
    server
        .netbeast_ok(&["attach", netbeast::netns::SERVER_IFACE])
        .unwrap();
    assert_eq!(ruleset_sizes(server), wanted, "after attaching again");
}

/// A memory cgroup of the test's own below the test process's, with a
/// limit; removed on drop (once the processes in it have ended).
struct MemoryCgroup {
    dir: PathBuf,
}

impl MemoryCgroup {
    fn new(tag: &str, limit: u64) -> MemoryCgroup {
        let membership = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let name = format!("nbt-{tag}-{}", std::process::id());
        for line in membership.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let path = path.trim_start_matches('/');
            // cgroup v1's memory controller, or v2's unified hierarchy
            // (at the root, or beside v1) where it has the controller.
            let place = if controllers.split(',').any(|c| c == "memory") {
                Some((
                    PathBuf::from("/sys/fs/cgroup/memory"),
                    "memory.limit_in_bytes",
                ))
            } else if controllers.is_empty() {
                ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
                    .into_iter()
                    .map(PathBuf::from)
                    .find(|m| {
                        std::fs::read_to_string(m.join(path).join("cgroup.controllers"))
                            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
                    })
                    .map(|m| (m, "memory.max"))
            } else {
                None
            };
            let Some((mount, file)) = place else {
                continue;
            };
            let parent = mount.join(path);
            if file == "memory.max" {
                // The children get the controller (refused where the
                // parent holds processes: then this place will not do).
                let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+memory");
            }
            let dir = parent.join(&name);
            let _ = std::fs::remove_dir(&dir);
            if std::fs::create_dir(&dir).is_ok()
                && std::fs::write(dir.join(file), limit.to_string()).is_ok()
            {
                return MemoryCgroup { dir };
            }
            let _ = std::fs::remove_dir(&dir);
        }
        panic!(
            "no memory cgroup to make below this process's ({membership}): \
             the test needs cgroup v1's memory controller or v2's"
        );
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            eprintln!("removing {}: {e}", self.dir.display());
        }
    }
}

/// In a container, `auto` sizes from the container's memory limit, not
/// the host's: the kernel charges BPF maps to the cgroup of the process
/// that makes them. netbeast attached from a cgroup limited to 512 MiB
/// (entered with `nsenter`, which keeps the cgroup file systems that `ip
/// netns exec` hides) makes the state tables and ruleset arrays a 512 MiB
/// machine gets, where this host's memory would give the largest.
#[test]
fn auto_follows_the_cgroup_memory_limit() {
    require_root();
    const LIMIT: u64 = 512 * MIB;
    let ns = Netns::new("tm-cg").unwrap().with_netbeast(NETBEAST);
    ns.ip(&[
        "link", "add", "nbv0", "type", "veth", "peer", "name", "nbv1",
    ])
    .unwrap();
    ns.ip(&["link", "set", "nbv0", "up"]).unwrap();
    ns.ip(&["link", "set", "nbv1", "up"]).unwrap();
    let cgroup = MemoryCgroup::new("tm-cg", LIMIT);
    let script = format!(
        "echo $$ > {procs} && exec nsenter --net=/run/netns/{ns} {NETBEAST} attach nbv0",
        procs = cgroup.dir.join("cgroup.procs").display(),
        ns = ns.name(),
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "attach in the cgroup: {out:?}");
    let tables = TableSizes::auto(LIMIT, &[]).unwrap();
    assert_ne!(
        tables,
        TableSizes::defaults(),
        "512 MiB gets smaller tables"
    );
    assert_eq!(kernel_sizes(&ns), expected(&tables));
    let capacity = netbeast::loader::sizing::auto_capacity(LIMIT).unwrap();
    assert_ne!(capacity, Capacity::FULL);
    let status = status_json(&ns);
    assert_eq!(
        status["ruleset_slots"].as_u64(),
        Some(u64::from(capacity.slots())),
        "{status:#}"
    );
    drop(ns);
    drop(cgroup);
}
