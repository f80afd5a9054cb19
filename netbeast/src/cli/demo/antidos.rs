//! The demo's anti-DoS section: the article's two rules on real traffic.
//! connlimit lets 15 connections from one address hold and resets the
//! 16th; limit lets a burst of 150 packets through and then 50 a second;
//! the README's hashlimit line does what the article meant by "each IP
//! address separately"; and beyond the article, `attach --syn-flood-guard`
//! keeps real clients connecting through a flood of spoofed SYNs.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context;

use super::{CONNECT_TIMEOUT, InterruptGuard, Step, print_indented, saw, type_steps};
use crate::netns::{
    CLIENT_ADDR, CLIENT_IFACE, ConnectOutcome, Netns, SERVER_ADDR, SERVER_IFACE, Testbed,
    tcp_stream,
};
use crate::packet::{SPOOFED_SOURCES, spoofed_syns};

const CONNLIMIT: &[Step] = &[Step::new(
    "",
    "-A INPUT -p tcp --syn --dport 80 -m connlimit --connlimit-above 15 --connlimit-mask 32 -j REJECT --reject-with tcp-reset",
    "at most 15 connections per address",
)];

const LIMIT: &[Step] = &[
    Step::new("", "-F INPUT", "start over"),
    Step::new(
        "",
        "-A INPUT -m state --state RELATED,ESTABLISHED -m limit --limit 50/second --limit-burst 150 -j ACCEPT",
        "the article's limit",
    ),
    Step::new("", "-A INPUT -j DROP", "what the limit does not accept"),
];

const HASHLIMIT: &[Step] = &[
    Step::new("", "-F INPUT", "start over"),
    Step::new(
        "",
        "-A INPUT -m state --state RELATED,ESTABLISHED -m hashlimit --hashlimit-upto 50/sec --hashlimit-burst 150 --hashlimit-mode srcip --hashlimit-name per-ip -j ACCEPT",
        "one bucket per source",
    ),
    Step::new("", "-A INPUT -j DROP", "what the buckets do not accept"),
];

const SHIELD_RESET: &[Step] = &[Step::new("", "-F INPUT", "start over")];

/// The SYN-flood shield's port, the flood's distinct spoofed sources, and
/// the real clients that must connect through it.
const SHIELD_PORT: u16 = 8080;
const FLOOD_FRAMES: usize = 20_000;
const SHIELD_CLIENTS: usize = 50;
/// A client's connect and greeting must finish within this: a SYN lost in
/// the flooded link is sent again after 1 s and 3 s, as the kernel
/// retransmits.
const SHIELD_CLIENT_TIMEOUT: Duration = Duration::from_secs(4);
/// The flood is sent in rounds of `FLOOD_FRAMES`, at most one per this
/// (80,000 SYNs a second): a flood, yet one that leaves the 2 cores of a
/// small machine room for the clients the demo is about.
const FLOOD_ROUND: Duration = Duration::from_millis(250);
/// How long the flood runs before the first client connects.
const FLOOD_HEAD_START: Duration = Duration::from_millis(300);

/// The article's connection limit, and the burst its limit rule allows.
const MAX_CONNECTIONS: usize = 15;
const BURST: usize = 150;
const RATE_PER_SECOND: f64 = 50.0;
/// Datagrams each client sends at once: more than the burst.
const TRAIN: usize = 400;
/// A server stops counting once no datagram came for this long.
const QUIET: Duration = Duration::from_millis(300);
/// A second client address, in the first one's /24.
const CLIENT_ADDR2: Ipv4Addr = Ipv4Addr::new(10, 199, 0, 3);
const UDP_PORT: u16 = 5001;

pub(super) fn run(exe: &Path, interrupt: &InterruptGuard) -> anyhow::Result<Vec<String>> {
    // Dropping `bed` detaches netbeast and deletes both namespaces.
    let bed = super::testbed(exe)?;
    bed.client()
        .ip(&[
            "addr",
            "add",
            &format!("{CLIENT_ADDR2}/24"),
            "dev",
            CLIENT_IFACE,
        ])
        .context("adding the client's second address")?;
    println!(
        "A client ({CLIENT_ADDR} and {CLIENT_ADDR2}) and a server ({SERVER_ADDR}), netbeast attached to the server's {SERVER_IFACE}."
    );
    bed.server()
        .netbeast_ok(&["attach", SERVER_IFACE])
        .context("running netbeast attach")?;
    let mut surprises = Vec::new();

    println!();
    println!("The article's connection limit:");
    type_steps(bed.server(), CONNLIMIT, interrupt, &mut surprises)?;
    connlimit(&bed, interrupt, &mut surprises)?;

    println!();
    println!("The article's rate limit, on a UDP flow the server opened (so it is ESTABLISHED):");
    type_steps(bed.server(), LIMIT, interrupt, &mut surprises)?;
    let flow = Flow::open(&bed, CLIENT_ADDR)?;
    let first = Instant::now();
    let got = flow.train()?;
    saw_count(
        &format!("{TRAIN} datagrams at once"),
        got,
        BURST,
        &mut surprises,
    );
    interrupt.check()?;
    thread::sleep(Duration::from_secs(1));
    let waited = first.elapsed().as_secs_f64();
    let refill = ((waited * RATE_PER_SECOND) as usize).min(BURST);
    println!("  ({waited:.1} s later: the bucket has refilled by 50 a second)");
    let got = flow.train()?;
    saw_count(
        &format!("{TRAIN} more at once"),
        got,
        refill,
        &mut surprises,
    );
    drop(flow);

    println!();
    println!(
        "-m limit is one bucket for everyone; the article meant one per address. The README's hashlimit line:"
    );
    type_steps(bed.server(), HASHLIMIT, interrupt, &mut surprises)?;
    let flows = [
        Flow::open(&bed, CLIENT_ADDR)?,
        Flow::open(&bed, CLIENT_ADDR2)?,
    ];
    let counts = thread::scope(|s| {
        let handles = flows.each_ref().map(|f| s.spawn(move || f.train()));
        handles.map(|h| h.join().expect("a sender thread panicked"))
    });
    for (flow, got) in flows.iter().zip(counts) {
        saw_count(
            &format!("{TRAIN} at once from {}", flow.from),
            got?,
            BURST,
            &mut surprises,
        );
    }
    println!();
    println!("$ netbeast iptables -L INPUT -v -n");
    print_indented(&bed.iptables_ok("-L INPUT -v -n")?);
    drop(flows);

    println!();
    println!(
        "Beyond the article: a SYN flood from {SPOOFED_SOURCES} spoofed addresses, answered in XDP with SYN cookies:"
    );
    type_steps(bed.server(), SHIELD_RESET, interrupt, &mut surprises)?;
    syn_flood(&bed, interrupt, &mut surprises)?;
    drop(bed);
    println!();
    println!("Cleaned up: netbeast detached, both namespaces deleted.");
    Ok(surprises)
}

/// 15 connections hold, the 16th is reset, and one closing lets one in.
fn connlimit(
    bed: &Testbed,
    interrupt: &InterruptGuard,
    surprises: &mut Vec<String>,
) -> anyhow::Result<()> {
    let _server = HoldingServer::start(bed.server(), 80)?;
    let connect = || {
        tcp_stream(
            bed.client(),
            None,
            SocketAddrV4::new(SERVER_ADDR, 80),
            CONNECT_TIMEOUT,
        )
        .context("entering the client namespace")
    };
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        interrupt.check()?;
        match connect()? {
            Ok(stream) => held.push(stream),
            Err(outcome) => {
                saw(
                    &format!("connection {}", held.len() + 1),
                    &outcome,
                    &ConnectOutcome::Connected,
                    surprises,
                );
                return Ok(());
            }
        }
    }
    println!(
        "  {:<44} {:<22} ok",
        format!("connections 1-{MAX_CONNECTIONS}, held open"),
        ConnectOutcome::Connected.to_string()
    );
    let sixteenth = outcome_of(connect()?);
    saw(
        &format!("connection {}", MAX_CONNECTIONS + 1),
        &sixteenth,
        &ConnectOutcome::Reset,
        surprises,
    );
    // The client closes one; once both ends have closed it no longer counts.
    drop(held.pop());
    thread::sleep(Duration::from_millis(300));
    saw(
        "after one of the 15 closed, a new one",
        &outcome_of(connect()?),
        &ConnectOutcome::Connected,
        surprises,
    );
    Ok(())
}

fn outcome_of(result: Result<TcpStream, ConnectOutcome>) -> ConnectOutcome {
    match result {
        Ok(_) => ConnectOutcome::Connected,
        Err(outcome) => outcome,
    }
}

/// Prints how many datagrams got through against what the rule allows
/// (within 2, for the tokens that refill while the train is sent).
fn saw_count(what: &str, got: usize, expected: usize, surprises: &mut Vec<String>) {
    let ok = got.abs_diff(expected) <= 2;
    println!(
        "  {what:<44} {:<22} {}",
        format!("{got} got through"),
        if ok { "ok" } else { "FAIL" }
    );
    if !ok {
        surprises.push(format!("{what}: {got} got through (expected {expected})"));
    }
}

/// A UDP flow the server opened, so the client's datagrams are ESTABLISHED.
struct Flow {
    from: Ipv4Addr,
    client: UdpSocket,
    server: UdpSocket,
}

impl Flow {
    fn open(bed: &Testbed, from: Ipv4Addr) -> anyhow::Result<Flow> {
        let port = if from == CLIENT_ADDR {
            UDP_PORT
        } else {
            UDP_PORT + 1
        };
        let server = bind(bed.server(), SocketAddrV4::new(SERVER_ADDR, port))?;
        let client = bind(bed.client(), SocketAddrV4::new(from, port))?;
        client.connect(SocketAddrV4::new(SERVER_ADDR, port))?;
        server.send_to(b"hello", SocketAddrV4::new(from, port))?;
        client.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        let mut buf = [0u8; 16];
        client
            .recv(&mut buf)
            .with_context(|| format!("the server's first datagram to {from} did not arrive"))?;
        server.set_read_timeout(Some(QUIET))?;
        Ok(Flow {
            from,
            client,
            server,
        })
    }

    /// Sends `TRAIN` datagrams at once; how many the server received.
    fn train(&self) -> anyhow::Result<usize> {
        for i in 0..TRAIN {
            self.client.send(&(i as u32).to_be_bytes())?;
        }
        let mut buf = [0u8; 64];
        let mut got = 0;
        while self.server.recv(&mut buf).is_ok() {
            got += 1;
        }
        Ok(got)
    }
}

fn bind(ns: &Netns, addr: SocketAddrV4) -> anyhow::Result<UdpSocket> {
    ns.in_netns(|| UdpSocket::bind(addr))?
        .with_context(|| format!("binding {addr} in {}", ns.name()))
}

/// A TCP server that keeps every connection open until its client closes
/// it, so the connections count for connlimit while they are held.
struct HoldingServer {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl HoldingServer {
    fn start(ns: &Netns, port: u16) -> anyhow::Result<HoldingServer> {
        // Reads until the client closes, then closes too.
        HoldingServer::start_with(ns, port, |mut stream| {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
            let _ = stream.read(&mut [0u8; 64]);
        })
    }

    /// A server that runs `serve` on its own thread for each connection.
    fn start_with(ns: &Netns, port: u16, serve: fn(TcpStream)) -> anyhow::Result<HoldingServer> {
        let listener = ns
            .in_netns(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))?
            .with_context(|| format!("listening on port {port}"))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut readers = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => readers.push(thread::spawn(move || {
                        let _ = stream.set_nonblocking(false);
                        serve(stream);
                    })),
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
            drop(readers);
        });
        Ok(HoldingServer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for HoldingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `attach --syn-flood-guard`: a flood of spoofed SYNs while real clients
/// connect and read the server's greeting. Every client gets through, the
/// listener's queue never overflows and the kernel sends no cookie of its
/// own: XDP answered the SYNs.
fn syn_flood(
    bed: &Testbed,
    interrupt: &InterruptGuard,
    surprises: &mut Vec<String>,
) -> anyhow::Result<()> {
    let port = SHIELD_PORT.to_string();
    println!("      $ netbeast attach {SERVER_IFACE} --syn-flood-guard {port}");
    bed.server()
        .netbeast_ok(&["attach", SERVER_IFACE, "--syn-flood-guard", &port])
        .context("running netbeast attach --syn-flood-guard")?;
    let _server = echo_server(bed.server(), SHIELD_PORT)?;
    let (client_mac, server_mac) = (
        bed.client().mac(CLIENT_IFACE)?,
        bed.server().mac(SERVER_IFACE)?,
    );
    let frames = spoofed_syns(
        FLOOD_FRAMES,
        SERVER_ADDR,
        SHIELD_PORT,
        client_mac,
        server_mac,
    );
    let before = TcpCounters::read(bed.server())?;
    let stop = AtomicBool::new(false);
    let (sent, connected) = thread::scope(|scope| -> anyhow::Result<(usize, usize)> {
        let flooder = scope.spawn(|| -> anyhow::Result<usize> {
            let mut sent = 0;
            while !stop.load(Ordering::SeqCst) {
                let round = Instant::now();
                sent += bed
                    .client()
                    .send_frames(CLIENT_IFACE, &frames, FLOOD_ROUND)?;
                thread::sleep(FLOOD_ROUND.saturating_sub(round.elapsed()));
            }
            Ok(sent)
        });
        thread::sleep(FLOOD_HEAD_START);
        let mut connected = 0;
        for _ in 0..SHIELD_CLIENTS {
            if interrupt.check().is_err() {
                break;
            }
            if let Ok(Ok(mut stream)) = tcp_stream(
                bed.client(),
                None,
                SocketAddrV4::new(SERVER_ADDR, SHIELD_PORT),
                SHIELD_CLIENT_TIMEOUT,
            ) {
                // The client speaks first, as HTTP's do: its data carries
                // the cookie's ACK again if the first one drowned in the
                // flood (a server that spoke first would wait forever on a
                // connection only the client knows, with any SYN cookies).
                let mut echo = [0u8; GREETING.len()];
                let _ = stream.set_read_timeout(Some(SHIELD_CLIENT_TIMEOUT));
                if stream.write_all(GREETING).is_ok()
                    && stream.read_exact(&mut echo).is_ok()
                    && echo == *GREETING
                {
                    connected += 1;
                }
            }
        }
        stop.store(true, Ordering::SeqCst);
        let sent = flooder.join().expect("the flooding thread panicked")?;
        Ok((sent, connected))
    })?;
    interrupt.check()?;
    let after = TcpCounters::read(bed.server())?;
    let ok = connected == SHIELD_CLIENTS;
    println!(
        "  {:<44} {:<22} {}",
        format!("{SHIELD_CLIENTS} clients under {sent} spoofed SYNs"),
        format!("{connected} connected"),
        if ok { "ok" } else { "FAIL" }
    );
    if !ok {
        surprises.push(format!(
            "SYN flood: {connected} of {SHIELD_CLIENTS} clients connected through the shield"
        ));
    }
    let (drops, cookies) = (
        after.listen_drops - before.listen_drops,
        after.kernel_cookies - before.kernel_cookies,
    );
    let quiet = drops == 0 && cookies == 0;
    println!(
        "  {:<44} {:<22} {}",
        "the server's kernel: listen drops, own cookies",
        format!("{drops}, {cookies}"),
        if quiet { "ok" } else { "FAIL" }
    );
    if !quiet {
        surprises.push(format!(
            "SYN flood: the listener dropped {drops} SYNs and the kernel sent {cookies} cookies itself"
        ));
    }
    println!(
        "      $ netbeast status                                          # its SYN-flood guard line"
    );
    let status = bed.server().netbeast_ok(&["status"])?;
    print_indented(
        &status
            .lines()
            .filter(|l| l.starts_with("SYN-flood guard"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    Ok(())
}

/// What a shielded connection says, and reads back from the server.
const GREETING: &[u8; 6] = b"hello\n";

/// The two TcpExt counters that show who answered a flood: the listener's
/// queue overflowing, and the kernel sending SYN cookies itself.
struct TcpCounters {
    listen_drops: u64,
    kernel_cookies: u64,
}

impl TcpCounters {
    fn read(ns: &Netns) -> anyhow::Result<TcpCounters> {
        let text = ns.run_ok("cat", &["/proc/net/netstat"])?;
        let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
        let (names, values) = (
            lines
                .next()
                .context("no TcpExt names in /proc/net/netstat")?,
            lines
                .next()
                .context("no TcpExt values in /proc/net/netstat")?,
        );
        let counter = |name: &str| -> anyhow::Result<u64> {
            names
                .split_whitespace()
                .zip(values.split_whitespace())
                .find(|(n, _)| *n == name)
                .and_then(|(_, v)| v.parse().ok())
                .with_context(|| format!("no TcpExt {name} in /proc/net/netstat"))
        };
        Ok(TcpCounters {
            listen_drops: counter("ListenOverflows")? + counter("ListenDrops")?,
            kernel_cookies: counter("SyncookiesSent")?,
        })
    }
}

/// A TCP server that sends every connection's first words back, then
/// closes it.
fn echo_server(ns: &Netns, port: u16) -> anyhow::Result<HoldingServer> {
    HoldingServer::start_with(ns, port, |mut stream| {
        let mut words = [0u8; GREETING.len()];
        let _ = stream.set_read_timeout(Some(SHIELD_CLIENT_TIMEOUT));
        if stream.read_exact(&mut words).is_ok() {
            let _ = stream.write_all(&words);
        }
    })
}
