//! The article's anti-DoS section, as network tests against the kernel's
//! iptables as the oracle (issue 14):
//!
//! ```text
//! iptables -A INPUT -p tcp --syn --dport 80 -m connlimit --connlimit-above 15 --connlimit-mask 32 -j REJECT --reject-with tcp-reset
//! iptables -A INPUT -m state --state RELATED,ESTABLISHED -m limit --limit 50/second --limit-burst 150 -j ACCEPT
//! ```
//!
//! connlimit: every scenario runs with netbeast and with iptables (the
//! `scenario!` macro), on real TCP connections.
//!
//! limit: netbeast and iptables each guard a server namespace of their own
//! [`Testbed`] (twins: same addresses, same rules); one sender thread
//! sends the *same packet train* to both, each datagram to one and then
//! the other, so both buckets see the same arrival times to within
//! microseconds. What each server's socket receives is what its
//! firewall accepted.
//!
//! Needs root. Run: `cargo test -p netbeast --test antidos`.

#[path = "support/mod.rs"]
mod support;

use std::{
    net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket},
    thread,
    time::{Duration, Instant},
};

use netbeast::netns::{
    CLIENT_ADDR, CLIENT_IFACE, ConnectOutcome, Firewall, SERVER_ADDR, Testbed, require_root,
    tcp_stream,
};

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");

include!("support/scenario.rs");

/// The article's connlimit rule, with the mask given.
fn connlimit_rule(mask: u8) -> String {
    format!(
        "-A INPUT -p tcp --syn --dport 80 -m connlimit --connlimit-above 15 --connlimit-mask {mask} -j REJECT --reject-with tcp-reset"
    )
}

/// A second client address in the first one's /24.
const CLIENT_ADDR2: Ipv4Addr = Ipv4Addr::new(10, 199, 0, 3);
const TIMEOUT: Duration = Duration::from_secs(3);

/// A connection to the server's port 80 from `from`, checked with an echo.
fn open(bed: &Testbed, from: Ipv4Addr) -> Result<TcpStream, ConnectOutcome> {
    let mut stream = tcp_stream(
        bed.client(),
        Some(SocketAddrV4::new(from, 0)),
        SocketAddrV4::new(SERVER_ADDR, 80),
        TIMEOUT,
    )
    .expect("entering the client namespace")?;
    support::roundtrip(&mut stream, b"ping", TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "{:?}: a connection that came up carries no data: {e}",
            bed.firewall
        )
    });
    Ok(stream)
}

/// Opens `n` connections from `from`, which must all come up.
fn open_all(bed: &Testbed, from: Ipv4Addr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            open(bed, from).unwrap_or_else(|o| {
                panic!(
                    "{:?}: connection {} from {from} failed: {o:?}",
                    bed.firewall,
                    i + 1
                )
            })
        })
        .collect()
}

/// Closes connections and waits until both ends have closed (conntrack
/// sees FINs both ways).
fn close_all(streams: Vec<TcpStream>) {
    for s in &streams {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    drop(streams);
    thread::sleep(Duration::from_millis(300));
}

/// 15 connections from one client hold, the 16th is reset; closing one
/// lets a new one in; with mask 24 two addresses of one /24 share the 15.
fn article_connlimit_rule(firewall: Firewall) {
    require_root();
    let bed = Testbed::new("connlimit", firewall).expect("building the testbed");
    bed.client()
        .ip(&[
            "addr",
            "add",
            &format!("{CLIENT_ADDR2}/24"),
            "dev",
            CLIENT_IFACE,
        ])
        .expect("adding the second client address");
    let _server = support::echo_server(bed.server(), 80);
    bed.iptables_ok(&connlimit_rule(32)).unwrap();
    let mut held = open_all(&bed, CLIENT_ADDR, 15);
    let fw = &bed.firewall;
    assert_eq!(
        open(&bed, CLIENT_ADDR).map(|_| ()),
        Err(ConnectOutcome::Reset),
        "{fw:?}: the 16th connection from one address"
    );
    // Another address has its own 15.
    let other = open_all(&bed, CLIENT_ADDR2, 3);
    // One closes: a new one gets its slot, and the next is reset again.
    close_all(vec![held.pop().unwrap()]);
    held.push(
        open(&bed, CLIENT_ADDR)
            .unwrap_or_else(|o| panic!("{fw:?}: a connection after one of the 15 closed: {o:?}")),
    );
    assert_eq!(
        open(&bed, CLIENT_ADDR).map(|_| ()),
        Err(ConnectOutcome::Reset),
        "{fw:?}: the 16th again"
    );
    close_all(held);
    close_all(other);

    // /24: both addresses count together.
    bed.iptables_ok("-F INPUT").unwrap();
    bed.iptables_ok(&connlimit_rule(24)).unwrap();
    let mut held = open_all(&bed, CLIENT_ADDR, 8);
    held.extend(open_all(&bed, CLIENT_ADDR2, 7));
    for from in [CLIENT_ADDR2, CLIENT_ADDR] {
        assert_eq!(
            open(&bed, from).map(|_| ()),
            Err(ConnectOutcome::Reset),
            "{fw:?}: a 16th connection from {from} of the /24"
        );
    }
    close_all(vec![held.remove(0)]);
    held.push(
        open(&bed, CLIENT_ADDR2)
            .unwrap_or_else(|o| panic!("{fw:?}: /24: a connection after one closed: {o:?}")),
    );
    close_all(held);
}

scenario!(article_connlimit_rule);

/// The server's port and the client's.
const SERVER_PORT: u16 = 5001;
const CLIENT_PORT: u16 = 5002;
/// How long a server waits for more datagrams before it stops counting.
const QUIET: Duration = Duration::from_millis(700);

/// A server socket that counts the datagrams it receives until `QUIET`
/// passes without one.
fn count_received(socket: UdpSocket) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        socket.set_read_timeout(Some(QUIET)).unwrap();
        let mut buf = [0u8; 2048];
        let mut n = 0;
        while socket.recv(&mut buf).is_ok() {
            n += 1;
        }
        n
    })
}

/// One twin: its testbed, with `rules` applied, and a UDP flow the server
/// opened (so the client's datagrams are ESTABLISHED to its conntrack).
struct Twin {
    bed: Testbed,
    client: UdpSocket,
    server: UdpSocket,
}

fn twin(tag: &str, firewall: Firewall, rules: &[&str]) -> Twin {
    let bed = Testbed::new(tag, firewall).expect("building the testbed");
    for line in rules {
        bed.iptables_ok(line)
            .unwrap_or_else(|e| panic!("{:?}: {line}: {e}", bed.firewall));
    }
    let server = bed
        .server()
        .in_netns(|| UdpSocket::bind(SocketAddrV4::new(SERVER_ADDR, SERVER_PORT)))
        .unwrap()
        .expect("binding the server socket");
    let client = bed
        .client()
        .in_netns(|| UdpSocket::bind(SocketAddrV4::new(CLIENT_ADDR, CLIENT_PORT)))
        .unwrap()
        .expect("binding the client socket");
    client
        .connect(SocketAddrV4::new(SERVER_ADDR, SERVER_PORT))
        .unwrap();
    // The server speaks first: the client's datagrams are its replies.
    server
        .send_to(b"hello", SocketAddrV4::new(CLIENT_ADDR, CLIENT_PORT))
        .unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 64];
    client
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("{:?}: the server's first datagram: {e}", bed.firewall));
    Twin {
        bed,
        client,
        server,
    }
}

/// The article's limit rule, then a DROP: a burst of 200 ESTABLISHED
/// datagrams at once (the bucket holds 150), then 200 more at 100 per
/// second (the bucket refills at 50). netbeast must accept what iptables
/// accepts, within 1%.
#[test]
fn article_limit_rule_accepts_what_iptables_accepts() {
    require_root();
    let rules = [
        "-A INPUT -m state --state RELATED,ESTABLISHED -m limit --limit 50/second --limit-burst 150 -j ACCEPT",
        "-A INPUT -j DROP",
    ];
    let twins = [
        twin("lim-nb", Firewall::netbeast(NETBEAST), &rules),
        twin("lim-ipt", Firewall::Iptables, &rules),
    ];
    let counters: Vec<_> = twins
        .iter()
        .map(|t| count_received(t.server.try_clone().unwrap()))
        .collect();
    const BURST: usize = 200;
    const PACED: usize = 200;
    const GAP: Duration = Duration::from_millis(10);
    let start = Instant::now();
    for i in 0..BURST + PACED {
        if i >= BURST {
            // Paced: on a schedule from the start, so that a late wake-up
            // does not stretch the train.
            let due = start + GAP * (i - BURST + 1) as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
        }
        // Alternate who goes first, so neither is always a little later.
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for t in order {
            twins[t].client.send(&[i as u8; 32]).unwrap();
        }
    }
    let took = start.elapsed().as_secs_f64();
    let accepted: Vec<usize> = counters.into_iter().map(|c| c.join().unwrap()).collect();
    let (netbeast, iptables) = (accepted[0], accepted[1]);
    eprintln!(
        "train of {} in {took:.3} s: netbeast accepted {netbeast}, iptables {iptables}",
        BURST + PACED
    );
    // What the bucket allows: 150 at once, then 50/s over the train.
    let most = 150 + (took * 50.0).ceil() as usize + 1;
    assert!(
        (150..=most).contains(&iptables),
        "the oracle accepted {iptables}, expected 150..={most}: the train was not what this test means"
    );
    let tolerance = (iptables as f64 * 0.01).ceil() as usize;
    assert!(
        netbeast.abs_diff(iptables) <= tolerance,
        "netbeast accepted {netbeast}, iptables {iptables} (tolerance {tolerance})"
    );
    drop(twins.into_iter().map(|t| t.bed).collect::<Vec<_>>());
}
