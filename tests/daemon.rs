//! `netbeast daemon`: runs in a namespace, stops cleanly on SIGTERM, and
//! its systemd units pass `systemd-analyze verify`.
//!
//! Needs root. Run: `cargo test -p netbeast --test daemon`.

#[path = "support/mod.rs"]
mod support;

use support::start_daemon;

#[path = "support/pair6.rs"]
mod pair6;
use pair6::add6;

use std::{process::Command, time::Duration};

use netbeast::{
    daemon::SHUTDOWN_GRACE,
    netns::{Netns, require_root},
};

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");

#[test]
fn stops_cleanly_on_sigterm() {
    require_root();
    let ns = Netns::new("daemon").unwrap().with_netbeast(NETBEAST);
    let (mut child, lines) = start_daemon(&ns, &[]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the daemon exited by itself"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + SHUTDOWN_GRACE + Duration::from_secs(2);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not stop within {SHUTDOWN_GRACE:?} of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "daemon exit status {status}");
    let said: Vec<String> = lines.try_iter().collect();
    assert!(
        said.iter().any(|l| l.contains("stopping")),
        "no stop message: {said:?}"
    );
}

/// The shipped units are valid for systemd (with the binary path pointed at
/// the one under test, as a package would install it).
#[test]
fn systemd_units_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("systemd-analyze is missing: `cargo xtask setup` installs it (package systemd)");
    }
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist");
    let dir = std::env::temp_dir().join(format!("nbt-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut verified = 0;
    for entry in std::fs::read_dir(&dist).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "service") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("/usr/bin/netbeast", NETBEAST);
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        // A template is verified through an instance of it.
        let unit = dir.join(name.replace("@.service", "@nbt-x.service"));
        std::fs::write(dir.join(&name), &text).unwrap();
        let target = if name.contains('@') {
            &unit
        } else {
            &dir.join(&name)
        };
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(target)
            .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: systemd-analyze verify failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        verified += 1;
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        verified >= 2,
        "expected the daemon units in dist/, found {verified}"
    );
}

/// Stops a daemon child when dropped (SIGTERM, then SIGKILL), so a failing
/// test leaves no process behind.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let deadline = std::time::Instant::now() + SHUTDOWN_GRACE + Duration::from_secs(1);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Issue 12, finding 5: `-A FORWARD -o IF -j DROP`, then IF is deleted and
/// made again (a VPN reconnecting) with a new ifindex. Without the daemon
/// (and no netbeast command), forwarded packets pass; with it running,
/// they are dropped again within a second, no netbeast command run
/// (iptables matches names on every packet).
#[test]
fn an_output_interface_rule_follows_a_recreated_interface_live() {
    use netbeast::netns::{
        Firewall, ROUTED_SERVER_ADDR, ROUTER_SERVER_IFACE, Routed, udp_echo_server, udp_send,
    };
    use std::time::Instant;
    const PORT: u16 = 10;
    /// How soon the rule must hold again after the interface is back:
    /// alone the daemon takes 20 ms (three runs, 2026-12-07), but during
    /// the whole suite on two cores it once took 1.01 s, so the test
    /// allows 1.5 s. Without the daemon datagrams pass for all of WATCH.
    const FOLLOW_WITHIN: Duration = Duration::from_millis(1500);
    /// How long probes run after the interface is back.
    const WATCH: Duration = Duration::from_millis(2500);
    require_root();
    let bed = Routed::new("dm-oif", Firewall::netbeast(NETBEAST)).unwrap();
    bed.iptables_ok(&format!(
        "-A FORWARD -o {ROUTER_SERVER_IFACE} -p udp --dport {PORT} -j DROP"
    ))
    .unwrap();
    let server = udp_echo_server(&bed.server, PORT).unwrap();
    let to = std::net::SocketAddrV4::new(ROUTED_SERVER_ADDR, PORT);
    let recreate = || {
        bed.recreate_server_link().unwrap();
        Instant::now()
    };
    // Probes every 20 ms for WATCH after `back`: when the last one arrived.
    let last_arrival = |back: Instant| -> Option<Duration> {
        let mut last = None;
        while back.elapsed() < WATCH {
            let before = server.served();
            let sent_at = back.elapsed();
            udp_send(&bed.client, to, b"probe", 1).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            if server.served() > before {
                last = Some(sent_at);
            }
        }
        last
    };
    assert_eq!(
        last_arrival(Instant::now()),
        None,
        "the rule drops at first"
    );

    // Without the daemon the recreated interface escapes the rule.
    let back = recreate();
    assert!(
        last_arrival(back).is_some(),
        "datagrams were dropped without the daemon: the test shows nothing"
    );

    // With it (which settles what changed before it started), it does not.
    let (child, lines) = start_daemon(&bed.router, &[]);
    let daemon = Running(child);
    let last = last_arrival(Instant::now());
    assert!(
        last.is_none_or(|t| t < FOLLOW_WITHIN),
        "the daemon did not settle the interface changed before it started ({last:?}): {:?}",
        lines.try_iter().collect::<Vec<_>>()
    );
    let back = recreate();
    let last = last_arrival(back);
    eprintln!("last datagram through after the interface came back: {last:?}");
    assert!(
        last.is_none_or(|t| t < FOLLOW_WITHIN),
        "forwarded datagrams still passed {last:?} after {ROUTER_SERVER_IFACE} was made again \
         (allowed: {FOLLOW_WITHIN:?}); the daemon said {:?}",
        lines.try_iter().collect::<Vec<_>>()
    );
    drop(daemon);
}

/// `ip netns del` while the daemon runs: the daemon removes the namespace's
/// data plane (as `netbeast gc` would) and exits 0, leaving no pins, no
/// socket programs on the root cgroup and no /run/netbeast/<id>.
#[test]
fn a_deleted_namespace_takes_its_data_plane_along() {
    require_root();
    // No netbeast guard: the namespace is deleted as a user would.
    let ns = Netns::new("dm-del").unwrap();
    ns.ip(&[
        "link", "add", "nbt-d0", "type", "veth", "peer", "name", "nbt-d1",
    ])
    .unwrap();
    for dev in ["nbt-d0", "nbt-d1"] {
        ns.ip(&["link", "set", dev, "up"]).unwrap();
    }
    let run = |args: &[&str]| {
        let out = Command::new(NETBEAST)
            .args(["--netns", ns.name()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["attach", "nbt-d0"]);
    run(&["iptables", "-A", "INPUT", "-j", "DROP"]);
    let status: serde_json::Value = serde_json::from_str(&run(&["status", "--json"])).unwrap();
    let sock: Vec<u64> = status["socket_program_ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .collect();
    assert!(!sock.is_empty(), "no socket programs to watch: {status}");
    let id = ns.id().unwrap();
    let paths: Vec<std::path::PathBuf> = [
        "/sys/fs/bpf/netbeast",
        "/run/netbeast/bpffs/netbeast",
        "/run/netbeast",
        "/run/netbeast/locks",
    ]
    .iter()
    .map(|d| std::path::Path::new(d).join(id.to_string()))
    .collect();
    assert!(
        paths.iter().any(|p| p.exists()),
        "no state to remove: {paths:?}"
    );

    let (child, lines) = start_daemon(&ns, &[]);
    let mut daemon = Running(child);
    let out = Command::new("ip")
        .args(["netns", "del", ns.name()])
        .output()
        .unwrap();
    assert!(out.status.success(), "ip netns del failed");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon still runs 5 s after its namespace was deleted: {:?}",
            lines.try_iter().collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let said: Vec<String> = lines.try_iter().collect();
    assert!(status.success(), "daemon exit status {status}: {said:?}");
    for path in &paths {
        assert!(!path.exists(), "{} left: {said:?}", path.display());
    }
    let root = netbeast::state::cgroup2_root().unwrap();
    let out = Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(&root)
        .output()
        .expect("bpftool runs");
    let on_cgroup: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let on_cgroup: Vec<u64> = on_cgroup
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_u64())
        .collect();
    assert!(
        sock.iter().all(|p| !on_cgroup.contains(p)),
        "socket programs {sock:?} still on the root cgroup: {said:?}"
    );
}

/// Sets a permanent ARP entry with SIOCSARP in the calling thread's
/// namespace: a neighbour change made by one syscall, so its time is known.
fn set_arp(addr: std::net::Ipv4Addr, mac: [u8; 6], dev: &str) {
    // SAFETY: plain-old-data structs, zeroed then filled; the socket is
    // closed below.
    unsafe {
        let mut req: libc::arpreq = std::mem::zeroed();
        let pa = &mut req.arp_pa as *mut libc::sockaddr as *mut libc::sockaddr_in;
        (*pa).sin_family = libc::AF_INET as u16;
        (*pa).sin_addr.s_addr = u32::from_ne_bytes(addr.octets());
        req.arp_ha.sa_family = libc::ARPHRD_ETHER;
        for (i, b) in mac.iter().enumerate() {
            req.arp_ha.sa_data[i] = *b as libc::c_char;
        }
        req.arp_flags = libc::ATF_COM | libc::ATF_PERM;
        for (i, b) in dev.bytes().enumerate() {
            req.arp_dev[i] = b as libc::c_char;
        }
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(fd >= 0);
        let rc = libc::ioctl(fd, libc::SIOCSARP, &req);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(rc, 0, "SIOCSARP: {err}");
    }
}

/// The forwarding route cache (issue 20) while the daemon runs: its
/// `routes` service holds the lease (the cache is in use), raises the epoch
/// after each change the kernel announces — how long after a neighbour
/// change is measured and printed (the staleness window) — a blackhole
/// route stops forwarded datagrams at once and its removal lets them through
/// again, and SIGTERM releases the lease.
#[test]
fn the_route_cache_follows_the_kernel_while_the_daemon_runs() {
    use netbeast::loader::route_watch::RouteEpoch;
    use netbeast::netns::{
        Firewall, ROUTED_SERVER_ADDR, ROUTER_SERVER_IFACE, Routed, udp_echo_server, udp_send,
    };
    use netbeast::state::Namespace;
    use std::time::Instant;
    const PORT: u16 = 10;
    /// Changes timed for the window.
    const SAMPLES: usize = 50;
    /// What the test allows the window (a loaded 2-core machine); the
    /// figures are printed.
    const WINDOW_LIMIT: Duration = Duration::from_millis(200);
    require_root();
    let bed = Routed::new("dm-rc", Firewall::netbeast(NETBEAST)).unwrap();
    bed.iptables_ok("-A FORWARD -p udp -j ACCEPT").unwrap();
    let server = udp_echo_server(&bed.server, PORT).unwrap();
    let to = std::net::SocketAddrV4::new(ROUTED_SERVER_ADDR, PORT);
    let through = |n: u64| -> u64 {
        let before = server.served();
        udp_send(&bed.client, to, b"probe", n as usize).unwrap();
        server.served_within(before + n, Duration::from_millis(300)) - before
    };
    let maps = bed
        .router
        .in_netns(|| Namespace::current().unwrap().maps_dir())
        .unwrap();
    let open = || {
        bed.router
            .in_netns(|| RouteEpoch::open(&maps).unwrap())
            .unwrap()
    };
    assert_eq!(
        open().lease_until().unwrap(),
        0,
        "no lease before the daemon"
    );

    let (child, lines) = start_daemon(&bed.router, &[]);
    let daemon = Running(child);
    let epoch = open();
    wait_for_lease(&epoch, &lines);
    assert_eq!(through(20), 20, "forwarded with the cache in use");

    // The window: from just before a neighbour change (one syscall) to the
    // epoch's move, polled.
    let mut windows: Vec<Duration> = bed
        .router
        .in_netns(|| {
            (0..SAMPLES)
                .map(|i| {
                    let before = epoch.watch_epoch().unwrap();
                    let t0 = Instant::now();
                    set_arp(
                        std::net::Ipv4Addr::new(10, 199, 2, 77),
                        [2, 0, 0, 0, 0x77, i as u8],
                        ROUTER_SERVER_IFACE,
                    );
                    while epoch.watch_epoch().unwrap() == before {
                        assert!(
                            t0.elapsed() < WINDOW_LIMIT * 10,
                            "the epoch did not move after a neighbour change"
                        );
                        std::hint::spin_loop();
                    }
                    let w = t0.elapsed();
                    std::thread::sleep(Duration::from_millis(5));
                    w
                })
                .collect()
        })
        .unwrap();
    windows.sort();
    eprintln!(
        "staleness window (neighbour change to epoch raised), {SAMPLES} changes: min {:?}, \
         median {:?}, p90 {:?}, max {:?}",
        windows[0],
        windows[SAMPLES / 2],
        windows[SAMPLES * 9 / 10],
        windows[SAMPLES - 1]
    );
    assert!(
        windows[SAMPLES / 2] < WINDOW_LIMIT,
        "median window {:?} (allowed {WINDOW_LIMIT:?})",
        windows[SAMPLES / 2]
    );

    // A route change, live: a blackhole for the server stops the datagrams
    // whose route the cache held.
    assert_eq!(through(20), 20);
    bed.router
        .ip(&[
            "route",
            "add",
            "blackhole",
            &format!("{ROUTED_SERVER_ADDR}/32"),
        ])
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        through(20),
        0,
        "forwarded on a cached route after a blackhole route was added"
    );
    bed.router
        .ip(&[
            "route",
            "del",
            "blackhole",
            &format!("{ROUTED_SERVER_ADDR}/32"),
        ])
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(through(20), 20, "the route is back");

    drop(daemon);
    assert_eq!(
        epoch.lease_until().unwrap(),
        0,
        "SIGTERM released the lease"
    );
}

/// The IPv6 route cache (`ROUTE_CACHE6`) under the same lease: while the
/// daemon runs, every IPv6 route change raises the epoch (the watcher
/// hears RTNLGRP_IPV6_ROUTE; before, only IPv4's groups), IPv6 datagrams
/// through the router are forwarded on cached routes, and a blackhole for
/// the server, then its removal, stops and restarts them at once.
#[test]
fn the_ipv6_route_cache_follows_ipv6_route_changes() {
    use netbeast::loader::route_watch::RouteEpoch;
    use netbeast::netns::{
        Firewall, ROUTED_CLIENT_IFACE, ROUTED_SERVER_IFACE, ROUTER_CLIENT_IFACE,
        ROUTER_SERVER_IFACE, Routed,
    };
    use netbeast::state::Namespace;
    use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
    use std::time::Instant;
    const PORT: u16 = 10;
    const SERVER6: &str = "fd00:c2::2";
    require_root();
    let bed = Routed::new("dm-rc6", Firewall::netbeast(NETBEAST)).unwrap();
    for (ns, iface, addr) in [
        (&bed.client, ROUTED_CLIENT_IFACE, "fd00:c1::2/64"),
        (&bed.router, ROUTER_CLIENT_IFACE, "fd00:c1::1/64"),
        (&bed.router, ROUTER_SERVER_IFACE, "fd00:c2::1/64"),
        (&bed.server, ROUTED_SERVER_IFACE, "fd00:c2::2/64"),
    ] {
        add6(ns, iface, addr);
    }
    bed.client
        .ip(&["-6", "route", "add", "default", "via", "fd00:c1::1"])
        .unwrap();
    bed.server
        .ip(&["-6", "route", "add", "default", "via", "fd00:c2::1"])
        .unwrap();
    bed.router
        .sysctl("net.ipv6.conf.all.forwarding", "1")
        .unwrap();
    bed.firewall
        .ip6tables_ok(&bed.router, "-A FORWARD -p udp -j ACCEPT")
        .unwrap();
    let server = bed
        .server
        .in_netns(|| UdpSocket::bind((Ipv6Addr::UNSPECIFIED, PORT)).unwrap())
        .unwrap();
    server
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let to: SocketAddr = format!("[{SERVER6}]:{PORT}").parse().unwrap();
    // Datagrams sent, and how many the server got.
    let through = |n: usize| -> usize {
        send_udp6(&bed.client, to, n);
        let mut buf = [0u8; 64];
        let mut got = 0;
        while got < n && server.recv_from(&mut buf).is_ok() {
            got += 1;
        }
        got
    };
    let maps = bed
        .router
        .in_netns(|| Namespace::current().unwrap().maps_dir())
        .unwrap();
    let (child, lines) = start_daemon(&bed.router, &[]);
    let daemon = Running(child);
    let epoch = bed
        .router
        .in_netns(|| RouteEpoch::open(&maps).unwrap())
        .unwrap();
    wait_for_lease(&epoch, &lines);
    // Every IPv6 route change raises the epoch (no traffic meanwhile: no
    // neighbour event moves it instead).
    for i in 0..10 {
        let before = epoch.watch_epoch().unwrap();
        let route = format!("fd00:99:{i}::/64");
        bed.router
            .ip(&["-6", "route", "add", "blackhole", &route])
            .unwrap();
        let t0 = Instant::now();
        while epoch.watch_epoch().unwrap() == before {
            assert!(
                t0.elapsed() < Duration::from_secs(1),
                "the epoch did not move after an IPv6 route change"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // The first datagrams resolve the neighbours (the kernel forwards
    // those); the next ones take the cached route.
    through(5);
    assert_eq!(through(20), 20, "forwarded with the cache in use");
    for (change, want, what) in [
        (
            "add",
            0,
            "forwarded on a cached route after a blackhole route was added",
        ),
        ("del", 20, "the route is back"),
    ] {
        bed.router
            .ip(&[
                "-6",
                "route",
                change,
                "blackhole",
                &format!("{SERVER6}/128"),
            ])
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(through(20), want, "{what}");
    }
    drop(daemon);
}

/// The local addresses the IPv6 XDP program finds without a FIB lookup
/// (`LOCAL_ADDR6_CACHE`) follow the host's addresses while the daemon
/// runs: once an address is deleted, a datagram to it is FORWARD's (the
/// kernel would route it back out), no longer INPUT's. Without the
/// daemon hearing address events, the cache kept the address until the
/// next netbeast command.
#[test]
fn local_addresses_follow_address_changes_while_the_daemon_runs() {
    use netbeast::netns::{CLIENT_IFACE, SERVER_IFACE};
    const GONE: &str = "fd00:d::9";
    require_root();
    let net = support::netbeast_server("dm-addr", NETBEAST);
    for (ns, iface, addr) in [
        (&net.client, CLIENT_IFACE, "fd00:d::1/64"),
        (&net.server, SERVER_IFACE, "fd00:d::2/64"),
        (&net.server, SERVER_IFACE, "fd00:d::9/64"),
    ] {
        add6(ns, iface, addr);
    }
    net.server
        .sysctl("net.ipv6.conf.all.forwarding", "1")
        .unwrap();
    // Rules after the addresses: their commit writes the cache with GONE.
    for line in [
        "-A INPUT -d fd00:d::9/128 -p udp",
        "-A FORWARD -d fd00:d::9/128 -p udp -j DROP",
    ] {
        let args: Vec<&str> = ["ip6tables"]
            .into_iter()
            .chain(line.split_whitespace())
            .collect();
        net.server.netbeast_ok(&args).unwrap();
    }
    // Nobody answers neighbour solicitations for GONE once it is deleted:
    // the client keeps the server's MAC for it.
    let link = net
        .server
        .ip(&["-o", "link", "show", "dev", SERVER_IFACE])
        .unwrap();
    let mac = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap()
        .to_string();
    net.client
        .ip(&[
            "-6",
            "neigh",
            "replace",
            GONE,
            "lladdr",
            &mac,
            "dev",
            CLIENT_IFACE,
            "nud",
            "permanent",
        ])
        .unwrap();
    let send = |n: usize| {
        send_udp6(&net.client, format!("[{GONE}]:9").parse().unwrap(), n);
        std::thread::sleep(Duration::from_millis(200));
    };
    let count = |chain: &str| -> u64 {
        let listing = net
            .server
            .netbeast_ok(&["ip6tables", "-L", chain, "-v", "-x", "-n"])
            .unwrap();
        listing
            .lines()
            .nth(2)
            .and_then(|l| l.split_whitespace().next())
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no rule 1 in:\n{listing}"))
    };
    let (child, _lines) = start_daemon(&net.server, &[]);
    let _daemon = Running(child);
    send(5);
    assert_eq!((count("INPUT"), count("FORWARD")), (5, 0), "GONE is local");
    net.server
        .ip(&["-6", "addr", "del", "fd00:d::9/64", "dev", SERVER_IFACE])
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    send(5);
    assert_eq!(
        (count("INPUT"), count("FORWARD")),
        (5, 5),
        "a deleted address is no longer INPUT's"
    );
}

/// Sends `n` datagrams from `ns` to `to` over IPv6.
fn send_udp6(ns: &Netns, to: std::net::SocketAddr, n: usize) {
    ns.in_netns(|| {
        let socket = std::net::UdpSocket::bind((std::net::Ipv6Addr::UNSPECIFIED, 0)).unwrap();
        for _ in 0..n {
            socket.send_to(b"probe", to).unwrap();
        }
    })
    .unwrap();
}

/// Waits until the daemon (whose stderr lines are `lines`) holds the route
/// cache's lease.
fn wait_for_lease(
    epoch: &netbeast::loader::route_watch::RouteEpoch,
    lines: &std::sync::mpsc::Receiver<String>,
) {
    use netbeast::loader::route_watch::monotonic_ns;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while epoch.lease_until().unwrap() <= monotonic_ns() {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon took no lease on the route cache: {:?}",
            lines.try_iter().collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
