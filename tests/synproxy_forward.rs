//! `-j SYNPROXY` in FORWARD (issue 14): a server behind the router,
//! protected from a SYN flood as the kernel's SYNPROXY protects it. A
//! client namespace, a router namespace (forwarding, netbeast attached to
//! both its interfaces, or real iptables: the oracle, in a twin topology)
//! and a server namespace whose own SYN cookies are off, so the server
//! cannot defend itself.
//!
//! iptables' SYNPROXY recipe (iptables-extensions(8)), verbatim but in
//! FORWARD, on the router; a flood of spoofed-source SYNs from the
//! client's side while 100 real clients connect and exchange data; then
//! bulk data both ways on a few connections, with one server segment in
//! `DROP_EVERY` dropped by the router so the client reports SACK blocks
//! (which the proxy must translate into the server's numbering).
//!
//! - At least 99% of the clients get through, the server never sees a
//!   spoofed SYN (a counting rule in the server's namespace), its listen
//!   queue never overflows.
//! - The bulk transfers arrive intact (every segment's sequence numbers
//!   and timestamps translated), the server used SACK recovery and
//!   discarded no SACK block as invalid.
//!
//! Needs root. Run: `cargo test -p netbeast --test synproxy_forward`.

#[path = "support/mod.rs"]
mod support;

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    thread,
    time::Duration,
};

use netbeast::{
    netns::{Firewall, Netns, ROUTED_CLIENT_IFACE, ROUTED_SERVER_ADDR, Routed, require_root},
    packet::FrameBuilder,
};

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
const PORT: u16 = 80;
/// Real clients under the flood, and the share that must get through.
const CLIENTS: usize = 100;
const MIN_SUCCESS_PERCENT: usize = 99;
const CLIENT_THREADS: usize = 10;
/// Bytes each client sends (and gets back).
const CLIENT_BYTES: usize = 3000;
/// A client's connect and echo must finish within this: room for one SYN
/// retransmission (after 1 s), as the flood may overrun the veth queue.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(4000);
/// Distinct spoofed SYNs, sent over and over while the clients connect.
const FLOOD_FRAMES: usize = 20_000;
/// Spoofed sources: `10.199.1.SPOOF_FIRST ..= SPOOF_LAST`, the client's
/// subnet without the real client (.2) and the router (.1).
const SPOOF_FIRST: u8 = 10;
const SPOOF_LAST: u8 = 250;
const FLOOD_HEAD_START: Duration = Duration::from_millis(500);
/// Bulk connections after the flood, and the bytes each echoes both ways.
const BULK_CONNECTIONS: usize = 3;
const BULK_BYTES: usize = 4 << 20;
const BULK_TIMEOUT: Duration = Duration::from_secs(60);
/// During the bulk phase the router drops one server data segment in this
/// many, so the client reports the ones after it with SACK blocks.
const DROP_EVERY: u32 = 40;

/// The recipe of iptables-extensions(8), in FORWARD (its `--wscale` is
/// the server's own shift, filled in).
fn recipe(wscale: u32) -> [String; 3] {
    [
        "-t raw -A PREROUTING -p tcp --dport 80 --syn -j CT --notrack".into(),
        format!(
            "-A FORWARD -p tcp --dport 80 -m conntrack --ctstate INVALID,UNTRACKED -j SYNPROXY --sack-perm --timestamp --wscale {wscale} --mss 1460"
        ),
        "-A FORWARD -m conntrack --ctstate INVALID -j DROP".into(),
    ]
}

/// The window shift the server's listener picks (from its largest
/// receive buffer, as tcp_select_initial_window), which the rule offers.
fn listener_wscale(ns: &Netns) -> u32 {
    let rmem: u64 = ns
        .sysctl_get("net.ipv4.tcp_rmem")
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    let rmem_max: u64 = ns
        .sysctl_get("net.core.rmem_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (63 - rmem.max(rmem_max).leading_zeros())
        .saturating_sub(15)
        .min(14)
}

/// TcpExt counter `name` of `ns`.
fn tcp_ext(ns: &Netns, name: &str) -> u64 {
    let out = ns.run_ok("cat", &["/proc/net/netstat"]).unwrap();
    let mut lines = out.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no TcpExt {name} in /proc/net/netstat"))
}

/// Spoofed SYNs to the server from the client's subnet, as the client's
/// interface sends them to the router.
fn flood_frames(routed: &Routed) -> Vec<Vec<u8>> {
    let src_mac = support::mac_of(&routed.client, ROUTED_CLIENT_IFACE);
    let dst_mac = support::mac_of(&routed.router, netbeast::netns::ROUTER_CLIENT_IFACE);
    let sources = (SPOOF_LAST - SPOOF_FIRST) as usize + 1;
    (0..FLOOD_FRAMES)
        .map(|i| {
            let source = Ipv4Addr::new(10, 199, 1, SPOOF_FIRST + (i % sources) as u8);
            let sport = 1024 + ((i / sources) * 7 % 60_000) as u16;
            FrameBuilder::tcp(source, sport, ROUTED_SERVER_ADDR, PORT)
                .seq(0x1000_0000u32.wrapping_mul(i as u32 + 1))
                .tcp_options(&[2, 4, 0x05, 0xb4, 4, 2, 1, 3, 3, 7])
                .src_mac(src_mac)
                .dst_mac(dst_mac)
                .build()
        })
        .collect()
}

/// SYNs from the spoofed range that reached the server (a counting rule
/// of the server's own, real iptables: the server is not under test).
fn spoofed_syns_at_server(server: &Netns) -> u64 {
    let out = server
        .run_ok("iptables", &["-L", "INPUT", "-v", "-x", "-n"])
        .unwrap();
    out.lines()
        .find(|l| l.contains("source IP range"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counting rule in the server's INPUT:\n{out}"))
}

struct Outcome {
    succeeded: usize,
    flood_sent: usize,
    spoofed_at_server: u64,
    listen_drops: u64,
    bulk: Vec<Result<(), String>>,
    sack_recoveries: u64,
    sack_discards: u64,
    diagnostics: String,
}

fn run(firewall: Firewall, shielded: bool) -> Outcome {
    require_root();
    let tag = if firewall.is_netbeast() {
        "synfwd-nb"
    } else {
        "synfwd-ipt"
    };
    let netbeast = firewall.is_netbeast();
    let routed = Routed::new(tag, firewall).unwrap();
    let server = &routed.server;
    // The server cannot defend itself: what reaches it fills its queue.
    server.sysctl("net.ipv4.tcp_syncookies", "0").unwrap();
    server
        .run_ok(
            "iptables",
            &[
                "-A",
                "INPUT",
                "-p",
                "tcp",
                "--syn",
                "-m",
                "iprange",
                "--src-range",
                &format!("10.199.1.{SPOOF_FIRST}-10.199.1.{SPOOF_LAST}"),
            ],
        )
        .unwrap();
    if !netbeast {
        routed
            .router
            .sysctl("net.netfilter.nf_conntrack_tcp_loose", "0")
            .unwrap();
    }
    if shielded {
        for line in recipe(listener_wscale(server)) {
            routed
                .iptables_ok(&line)
                .unwrap_or_else(|e| panic!("{line}: {e}"));
        }
    }
    let _echo = support::echo_server(server, PORT);
    let frames = flood_frames(&routed);
    let drops_before = tcp_ext(server, "ListenOverflows") + tcp_ext(server, "ListenDrops");
    let addr = SocketAddrV4::new(ROUTED_SERVER_ADDR, PORT);

    let stop = AtomicBool::new(false);
    let flood_sent = AtomicUsize::new(0);
    let succeeded = AtomicUsize::new(0);
    let next = AtomicUsize::new(0);
    thread::scope(|scope| {
        // Until the clients are done, and one whole pass at least (a
        // loaded machine may finish the clients sooner).
        let flooder = scope.spawn(|| {
            while !stop.load(Ordering::SeqCst) || flood_sent.load(Ordering::SeqCst) < FLOOD_FRAMES {
                let n = support::send_raw_frames(
                    &routed.client,
                    ROUTED_CLIENT_IFACE,
                    &frames,
                    Duration::from_secs(5),
                );
                flood_sent.fetch_add(n, Ordering::SeqCst);
            }
        });
        thread::sleep(FLOOD_HEAD_START);
        let clients: Vec<_> = (0..CLIENT_THREADS)
            .map(|_| {
                scope.spawn(|| {
                    while next.fetch_add(1, Ordering::SeqCst) < CLIENTS {
                        if support::echo_exchange(
                            &routed.client,
                            addr,
                            CLIENT_BYTES,
                            CLIENT_TIMEOUT,
                        )
                        .is_ok()
                        {
                            succeeded.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        flooder.join().unwrap();
    });
    let spoofed_at_server = spoofed_syns_at_server(server);
    let listen_drops =
        tcp_ext(server, "ListenOverflows") + tcp_ext(server, "ListenDrops") - drops_before;

    // Bulk both ways, with losses the client reports by SACK.
    let mut bulk = Vec::new();
    let (mut sack_recoveries, mut sack_discards) = (0, 0);
    if succeeded.load(Ordering::SeqCst) > 0 {
        routed
            .iptables_ok(&format!(
                "-I FORWARD 1 -p tcp --sport 80 -m length --length 1000:65535 -m statistic --mode nth --every {DROP_EVERY} --packet 0 -j DROP"
            ))
            .unwrap();
        let recoveries_before = tcp_ext(server, "TCPSackRecovery");
        let discards_before = tcp_ext(server, "TCPSACKDiscard");
        bulk = thread::scope(|scope| {
            let workers: Vec<_> = (0..BULK_CONNECTIONS)
                .map(|_| {
                    scope.spawn(|| {
                        support::echo_exchange(&routed.client, addr, BULK_BYTES, BULK_TIMEOUT)
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        sack_recoveries = tcp_ext(server, "TCPSackRecovery") - recoveries_before;
        sack_discards = tcp_ext(server, "TCPSACKDiscard") - discards_before;
    }
    let diagnostics = support::diagnostics(&routed.router, &routed.firewall);
    let outcome = Outcome {
        succeeded: succeeded.load(Ordering::SeqCst),
        flood_sent: flood_sent.load(Ordering::SeqCst),
        spoofed_at_server,
        listen_drops,
        bulk,
        sack_recoveries,
        sack_discards,
        diagnostics,
    };
    eprintln!(
        "{tag} shielded={shielded}: {} of {CLIENTS} clients through {} flood SYNs; spoofed SYNs at \
         the server {}, listen drops {}; bulk {:?}; SACK recoveries {}, SACK blocks discarded {}",
        outcome.succeeded,
        outcome.flood_sent,
        outcome.spoofed_at_server,
        outcome.listen_drops,
        outcome.bulk,
        outcome.sack_recoveries,
        outcome.sack_discards
    );
    outcome
}

fn assert_shielded(firewall: Firewall) {
    let name = if firewall.is_netbeast() {
        "netbeast"
    } else {
        "iptables"
    };
    let o = run(firewall, true);
    let needed = CLIENTS * MIN_SUCCESS_PERCENT / 100;
    assert!(o.flood_sent >= FLOOD_FRAMES, "the flood was not sent");
    assert!(
        o.succeeded >= needed,
        "{name}: {} of {CLIENTS} clients got through a flood of {} SYNs (at least {needed} \
         must){}",
        o.succeeded,
        o.flood_sent,
        o.diagnostics
    );
    assert_eq!(
        o.spoofed_at_server, 0,
        "{name}: spoofed SYNs reached the server{}",
        o.diagnostics
    );
    assert_eq!(
        o.listen_drops, 0,
        "{name}: the server's listen queue overflowed{}",
        o.diagnostics
    );
    assert_eq!(o.bulk.len(), BULK_CONNECTIONS);
    for (i, r) in o.bulk.iter().enumerate() {
        assert!(
            r.is_ok(),
            "{name}: bulk connection {i} ({BULK_BYTES} bytes each way): {r:?}{}",
            o.diagnostics
        );
    }
    assert!(
        o.sack_recoveries > 0,
        "{name}: the server never recovered a loss by SACK: the test's losses did not happen{}",
        o.diagnostics
    );
    assert_eq!(
        o.sack_discards, 0,
        "{name}: the server discarded SACK blocks as invalid (untranslated?){}",
        o.diagnostics
    );
}

#[test]
fn forward_synproxy_recipe_on_netbeast_protects_a_server_behind_the_router() {
    assert_shielded(Firewall::netbeast(NETBEAST));
}

/// The oracle: the same recipe on the kernel's iptables.
#[test]
fn forward_synproxy_recipe_on_iptables_protects_a_server_behind_the_router() {
    assert_shielded(Firewall::Iptables);
}

/// Without the recipe the flood reaches the server and stops real clients:
/// the tests above can fail.
#[test]
fn without_the_recipe_the_flood_reaches_the_server() {
    let o = run(Firewall::netbeast(NETBEAST), false);
    let needed = CLIENTS * MIN_SUCCESS_PERCENT / 100;
    assert!(
        o.spoofed_at_server > 0 && o.succeeded < needed,
        "without a shield {} of {CLIENTS} clients got through and {} spoofed SYNs reached the \
         server: the flood is too weak to test the shield",
        o.succeeded,
        o.spoofed_at_server
    );
}
