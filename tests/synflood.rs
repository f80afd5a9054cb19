//! The SYN-flood shield (issue 14, "Beyond iptables"), on real TCP: a
//! flood of spoofed-source SYNs (crafted frames from an AF_PACKET socket
//! in the client namespace) hits a listening port while 200 real clients
//! connect and exchange data.
//!
//! - netbeast's shield (`attach --syn-flood-guard`, or a `-j SYNPROXY`
//!   rule): at least 99% of the clients succeed, the listener's SYN queue
//!   never overflows (TcpExtListenOverflows/ListenDrops unchanged), the
//!   SYNs were answered by XDP (the kernel sent no cookie of its own).
//! - No shield, and the server namespace's own `tcp_syncookies` off: the
//!   same flood fills the SYN queue and real connections fail (so the
//!   test above can fail).
//! - iptables' own SYNPROXY recipe, verbatim, as the oracle of what the
//!   shield must achieve, and the same recipe given to netbeast (its raw
//!   table's `-j CT --notrack` makes the SYNs UNTRACKED, which is what
//!   sends them to SYNPROXY).
//!
//! Needs root. Run: `cargo test -p netbeast --test synflood`.

#[path = "support/mod.rs"]
mod support;

use std::{
    net::SocketAddrV4,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    thread,
    time::Duration,
};

use netbeast::{
    netns::{CLIENT_IFACE, Firewall, SERVER_ADDR, SERVER_IFACE, Testbed, require_root},
    packet::spoofed_syns,
};

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
const PORT: u16 = 80;
/// Real clients, and the share of them that must get through.
const CLIENTS: usize = 200;
const MIN_SUCCESS_PERCENT: usize = 99;
/// Clients connecting at once.
const CLIENT_THREADS: usize = 10;
/// A client's connect and echo must finish within this (the kernel
/// retransmits a dropped SYN after 1 s, then 3 s).
const CLIENT_TIMEOUT: Duration = Duration::from_millis(2500);
/// Distinct spoofed SYNs in the flood (sources .10 to .250 of the /24,
/// every port): sent over and over while the clients connect.
const FLOOD_FRAMES: usize = 20_000;
/// How long the flood runs before the clients start: long enough to fill
/// a SYN queue many times over.
const FLOOD_HEAD_START: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Shield {
    /// `attach --syn-flood-guard 80`.
    Guard,
    /// A `-j SYNPROXY` rule in INPUT.
    Rule,
    /// netbeast attached, no shield; the server's tcp_syncookies off.
    None,
    /// The kernel's iptables: the SYNPROXY recipe of iptables-extensions(8).
    Iptables,
    /// netbeast given that recipe's rules verbatim.
    Recipe,
}

/// The SYNPROXY recipe of iptables-extensions(8), verbatim (port 80).
const RECIPE: [&str; 3] = [
    "-t raw -A PREROUTING -p tcp --dport 80 --syn -j CT --notrack",
    "-A INPUT -p tcp --dport 80 -m conntrack --ctstate INVALID,UNTRACKED -j SYNPROXY --sack-perm --timestamp --wscale 7 --mss 1460",
    "-A INPUT -m conntrack --ctstate INVALID -j DROP",
];

/// The window shift the server's listener uses (tcp_select_initial_window:
/// from the largest receive buffer), which a SYNPROXY rule must offer.
fn listener_wscale(bed: &Testbed) -> u32 {
    let rmem: u64 = bed
        .server()
        .sysctl_get("net.ipv4.tcp_rmem")
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    let rmem_max: u64 = bed
        .server()
        .sysctl_get("net.core.rmem_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (63 - rmem.max(rmem_max).leading_zeros())
        .saturating_sub(15)
        .min(14)
}

/// The SYNs of spoofed clients of the server's /24, from the client's
/// interface.
fn flood_frames(bed: &Testbed) -> Vec<Vec<u8>> {
    spoofed_syns(
        FLOOD_FRAMES,
        SERVER_ADDR,
        PORT,
        support::mac_of(bed.client(), CLIENT_IFACE),
        support::mac_of(bed.server(), SERVER_IFACE),
    )
}

/// TcpExt counter `name` of the namespace (`/proc/net/netstat`).
fn tcp_ext(bed: &Testbed, name: &str) -> u64 {
    let out = bed.server().run_ok("cat", &["/proc/net/netstat"]).unwrap();
    let mut lines = out.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no TcpExt {name} in /proc/net/netstat"))
}

/// What one run under the flood gave.
struct Outcome {
    succeeded: usize,
    flood_sent: usize,
    listen_drops: u64,
    kernel_cookies: u64,
    diagnostics: String,
}

fn run(shield: Shield) -> Outcome {
    require_root();
    let firewall = match shield {
        Shield::Guard => Firewall::netbeast_with(NETBEAST, &["--syn-flood-guard", "80"]),
        Shield::Rule | Shield::None | Shield::Recipe => Firewall::netbeast(NETBEAST),
        Shield::Iptables => Firewall::Iptables,
    };
    let bed = Testbed::new(&format!("synflood-{shield:?}"), firewall).unwrap();
    match shield {
        Shield::Rule => {
            let wscale = listener_wscale(&bed);
            bed.iptables_ok(&format!(
                "-A INPUT -p tcp --dport 80 -m conntrack --ctstate NEW,INVALID,UNTRACKED -j SYNPROXY --sack-perm --timestamp --wscale {wscale} --mss 1460"
            ))
            .unwrap();
        }
        Shield::None => bed.server().sysctl("net.ipv4.tcp_syncookies", "0").unwrap(),
        Shield::Iptables => {
            let s = bed.server();
            s.sysctl("net.ipv4.tcp_syncookies", "1").unwrap();
            s.sysctl("net.ipv4.tcp_timestamps", "1").unwrap();
            s.sysctl("net.netfilter.nf_conntrack_tcp_loose", "0")
                .unwrap();
            for line in RECIPE {
                bed.iptables_ok(line).unwrap();
            }
        }
        // netbeast needs none of the recipe's sysctls: its conntrack never
        // makes a connection of a lone ACK (nf_conntrack_tcp_loose=0), and
        // it sets the listener's cookie sysctls itself.
        // Its `--wscale 7` may be below the listener's own shift (10 on
        // this machine's buffers): the client then reads the listener's
        // windows as smaller than they are, which is slower but safe.
        Shield::Recipe => {
            for line in RECIPE {
                bed.iptables_ok(line)
                    .unwrap_or_else(|e| panic!("{line}: {e}"));
            }
        }
        Shield::Guard => {}
    }
    let _server = support::echo_server(bed.server(), PORT);
    let frames = flood_frames(&bed);
    let drops_before = tcp_ext(&bed, "ListenOverflows") + tcp_ext(&bed, "ListenDrops");
    let cookies_before = tcp_ext(&bed, "SyncookiesSent");

    let stop = AtomicBool::new(false);
    let flood_sent = AtomicUsize::new(0);
    let succeeded = AtomicUsize::new(0);
    let next = AtomicUsize::new(0);
    thread::scope(|scope| {
        let flooder = scope.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                let n = support::send_raw_frames(
                    bed.client(),
                    CLIENT_IFACE,
                    &frames,
                    Duration::from_secs(5),
                );
                flood_sent.fetch_add(n, Ordering::SeqCst);
            }
        });
        thread::sleep(FLOOD_HEAD_START);
        let mut clients = Vec::new();
        for _ in 0..CLIENT_THREADS {
            clients.push(scope.spawn(|| {
                while next.fetch_add(1, Ordering::SeqCst) < CLIENTS {
                    if support::echo_exchange(
                        bed.client(),
                        SocketAddrV4::new(SERVER_ADDR, PORT),
                        3000,
                        CLIENT_TIMEOUT,
                    )
                    .is_ok()
                    {
                        succeeded.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }));
        }
        for c in clients {
            c.join().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        flooder.join().unwrap();
    });
    let diagnostics = support::diagnostics(bed.server(), &bed.firewall);
    let outcome = Outcome {
        succeeded: succeeded.load(Ordering::SeqCst),
        flood_sent: flood_sent.load(Ordering::SeqCst),
        listen_drops: tcp_ext(&bed, "ListenOverflows") + tcp_ext(&bed, "ListenDrops")
            - drops_before,
        kernel_cookies: tcp_ext(&bed, "SyncookiesSent") - cookies_before,
        diagnostics,
    };
    eprintln!(
        "{shield:?}: {} of {CLIENTS} clients through {} flood SYNs; listen drops {}, kernel cookies {}",
        outcome.succeeded, outcome.flood_sent, outcome.listen_drops, outcome.kernel_cookies
    );
    outcome
}

fn assert_shielded(shield: Shield) {
    let o = run(shield);
    let needed = CLIENTS * MIN_SUCCESS_PERCENT / 100;
    assert!(
        o.succeeded >= needed,
        "{shield:?}: {} of {CLIENTS} clients got through a flood of {} SYNs (at least {needed} \
         must){}",
        o.succeeded,
        o.flood_sent,
        o.diagnostics
    );
    assert_eq!(
        o.listen_drops, 0,
        "{shield:?}: the listener's SYN queue overflowed under the flood{}",
        o.diagnostics
    );
    assert!(o.flood_sent >= FLOOD_FRAMES, "the flood was not sent");
    if shield != Shield::Iptables {
        // The SYNs never reached the kernel: XDP answered them.
        assert_eq!(
            o.kernel_cookies, 0,
            "{shield:?}: the kernel answered SYNs itself{}",
            o.diagnostics
        );
    }
}

#[test]
fn guard_keeps_clients_connecting_through_a_syn_flood() {
    assert_shielded(Shield::Guard);
}

#[test]
fn synproxy_rule_keeps_clients_connecting_through_a_syn_flood() {
    assert_shielded(Shield::Rule);
}

/// The oracle: iptables' SYNPROXY recipe verbatim does what the shield
/// must do.
#[test]
fn iptables_synproxy_keeps_clients_connecting_through_a_syn_flood() {
    assert_shielded(Shield::Iptables);
}

/// iptables' recipe given to netbeast, verbatim: without the raw table's
/// `-j CT --notrack` the SYNs would be NEW, miss the SYNPROXY rule and
/// reach the listener, which would answer with cookies of its own.
#[test]
fn iptables_recipe_on_netbeast_keeps_clients_connecting_through_a_syn_flood() {
    assert_shielded(Shield::Recipe);
}

/// Without a shield (and the kernel's own cookies off) the same flood
/// fills the SYN queue and real clients fail: the tests above can fail.
#[test]
fn without_a_shield_the_flood_stops_clients() {
    let o = run(Shield::None);
    let needed = CLIENTS * MIN_SUCCESS_PERCENT / 100;
    assert!(
        o.succeeded < needed && o.listen_drops > 0,
        "without a shield {} of {CLIENTS} clients got through a flood of {} SYNs and the \
         listener dropped {} SYNs: the flood is too weak to test the shield",
        o.succeeded,
        o.flood_sent,
        o.listen_drops
    );
}
