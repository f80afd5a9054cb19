//! Helpers shared by the conntrack network tests (router.rs, output.rs,
//! stateful.rs): a TCP echo server and long-lived connections (to show that
//! data keeps flowing both ways), netbeast's statistics, and a raw frame
//! sender for floods. Included with `#[path = "support/mod.rs"] mod support;`.
#![allow(dead_code)]

use std::{
    io::{self, Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use netbeast::netns::Netns;

/// How often blocked helper threads look at their stop flag.
const POLL: Duration = Duration::from_millis(50);

/// A TCP server that echoes every byte back, one thread per connection;
/// stops on drop.
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Listens on `0.0.0.0:port` in `ns` and echoes.
pub fn echo_server(ns: &Netns, port: u16) -> EchoServer {
    let listener = ns
        .in_netns(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))
        .unwrap()
        .unwrap_or_else(|e| panic!("listening on {port} in {}: {e}", ns.name()));
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut workers = Vec::new();
        while !flag.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let flag = flag.clone();
                    workers.push(std::thread::spawn(move || echo(stream, &flag)));
                }
                Err(_) => std::thread::sleep(POLL / 5),
            }
        }
        for w in workers {
            let _ = w.join();
        }
    });
    EchoServer {
        stop,
        thread: Some(thread),
    }
}

fn echo(mut stream: TcpStream, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(POLL));
    let mut buf = [0u8; 16384];
    while !stop.load(Ordering::SeqCst) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// Connects from `ns` (the socket stays in `ns` for its whole life).
pub fn connect(ns: &Netns, addr: SocketAddrV4, timeout: Duration) -> io::Result<TcpStream> {
    ns.in_netns(|| TcpStream::connect_timeout(&addr.into(), timeout))
        .unwrap()
}

/// Sends `data` on `stream` and reads the echo back, within `timeout`.
pub fn roundtrip(stream: &mut TcpStream, data: &[u8], timeout: Duration) -> Result<(), String> {
    let writer = {
        let mut s = stream.try_clone().map_err(|e| e.to_string())?;
        let data = data.to_vec();
        std::thread::spawn(move || s.write_all(&data).map_err(|e| format!("sending: {e}")))
    };
    let deadline = Instant::now() + timeout;
    let mut got = Vec::with_capacity(data.len());
    let mut buf = [0u8; 16384];
    let result = loop {
        if got.len() >= data.len() {
            break if got[..data.len()] == *data {
                Ok(())
            } else {
                Err("the echo differs from what was sent".to_string())
            };
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(format!(
                "{} of {} echoed bytes arrived within {timeout:?}",
                got.len(),
                data.len()
            ));
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => break Err(format!("closed after {} echoed bytes", got.len())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A signal (a child of another test thread ending) interrupts
            // the receive: read again (a full run once failed on EINTR).
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => break Err(format!("receiving: {e}")),
        }
    };
    if result.is_err() {
        // Unblocks the writer if the path is dead.
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    match writer.join() {
        Ok(Ok(())) => result,
        Ok(Err(e)) => result.and(Err(e)),
        Err(_) => result.and(Err("the writer panicked".to_string())),
    }
}

/// A connection from `ns` to `addr` that exchanges `len` bytes each way.
pub fn echo_exchange(
    ns: &Netns,
    addr: SocketAddrV4,
    len: usize,
    timeout: Duration,
) -> Result<(), String> {
    let mut stream = connect(ns, addr, timeout).map_err(|e| format!("connecting: {e}"))?;
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    roundtrip(&mut stream, &data, timeout)
}

/// `netbeast stats --json` in `ns`, one statistic by name.
pub fn stat(ns: &Netns, name: &str) -> u64 {
    let text = ns
        .netbeast_ok(&["stats", "--json"])
        .unwrap_or_else(|e| panic!("netbeast stats in {}: {e}", ns.name()));
    let value: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("netbeast stats --json is not JSON ({e}): {text}"));
    value[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no statistic {name} in {text}"))
}

/// `netbeast conntrack ARGS` in `ns`: (stdout, stderr); the command must succeed.
pub fn conntrack(ns: &Netns, args: &[&str]) -> (String, String) {
    let mut argv = vec!["conntrack"];
    argv.extend_from_slice(args);
    let out = ns
        .netbeast(&argv)
        .unwrap_or_else(|e| panic!("netbeast conntrack in {}: {e}", ns.name()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "netbeast {argv:?} failed: {stderr}{stdout}"
    );
    (stdout, stderr)
}

/// The MAC address of `iface` in `ns` (`ip -o link show`).
pub fn mac_of(ns: &Netns, iface: &str) -> [u8; 6] {
    ns.mac(iface).unwrap()
}

/// Sends ready-made Ethernet frames out of `iface` of `ns` through an
/// AF_PACKET socket, as a packet generator would: at most `frames.len()`
/// frames, and no longer than `budget`. Returns how many were sent.
pub fn send_raw_frames(ns: &Netns, iface: &str, frames: &[Vec<u8>], budget: Duration) -> usize {
    ns.send_frames(iface, frames, budget).unwrap()
}

/// For failure messages: netbeast's statistics and connection table in
/// `ns`, or nothing when the firewall is iptables.
pub fn diagnostics(ns: &Netns, firewall: &netbeast::netns::Firewall) -> String {
    if !firewall.is_netbeast() {
        return String::new();
    }
    let stats = ns.netbeast_ok(&["stats"]).unwrap_or_else(|e| e.to_string());
    let table = ns
        .netbeast(&["conntrack", "-L"])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| e.to_string());
    let table: String = table.lines().take(20).collect::<Vec<_>>().join("\n");
    format!("\nnetbeast stats:\n{stats}\nconntrack -L (first 20):\n{table}")
}

/// A client and a server (`ClientServer::new(tag)`), the server running
/// the netbeast binary `netbeast`, attached to its interface.
pub fn netbeast_server(tag: &str, netbeast: &str) -> netbeast::netns::ClientServer {
    use netbeast::netns::{ClientServer, SERVER_IFACE};
    let ClientServer { client, server } =
        ClientServer::new(tag).expect("client and server namespaces");
    let net = ClientServer {
        client,
        server: server.with_netbeast(netbeast),
    };
    net.server
        .netbeast_ok(&["attach", SERVER_IFACE])
        .expect("attaching netbeast");
    net
}

/// Spawns `netbeast --netns NS daemon ARGS`, waits until it says it runs,
/// and returns the child with the lines it printed so far on stderr.
pub fn start_daemon(
    ns: &Netns,
    args: &[&str],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_netbeast"))
        .args(["--netns", ns.name(), "daemon"])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn netbeast daemon");
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the daemon did not say it runs within 20 s");
        if line.contains("SIGTERM stops it") {
            return (child, rx);
        }
    }
}

/// Scrapes `netbeast daemon --metrics ADDR` from inside `ns` (retrying
/// while the daemon starts its listener) and parses the answer with a
/// Prometheus text-format parser.
pub fn scrape_metrics(ns: &Netns, addr: &str) -> prometheus_parse::Scrape {
    let addr = addr.to_string();
    let body = ns
        .in_netns(move || {
            let mut last = None;
            for _ in 0..50 {
                match TcpStream::connect(&addr) {
                    Ok(mut s) => {
                        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                            .unwrap();
                        let mut text = String::new();
                        s.read_to_string(&mut text).unwrap();
                        return text;
                    }
                    Err(e) => last = Some(e),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            panic!("the metrics endpoint did not answer: {last:?}");
        })
        .unwrap();
    let (head, text) = body.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{text}");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("the Prometheus text format")
}

/// The value of the first sample of `name` whose labels include `labels`;
/// panics listing what the scrape has when there is none.
#[track_caller]
pub fn metric_value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| {
            let seen: Vec<_> = scrape
                .samples
                .iter()
                .map(|s| (&s.metric, &s.labels))
                .collect();
            panic!("no {name} {labels:?} in {seen:?}")
        });
    match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name} is {other:?}"),
    }
}

/// A loopback address for a daemon's `--metrics` in a test's namespace
/// (each namespace has its own loopback; the port varies by process so
/// two runs of a test binary do not meet).
pub fn metrics_addr() -> String {
    format!("127.0.0.1:{}", 9100 + (std::process::id() % 500) as u16)
}
