// The IPv6 testbed shared by the IPv6 network tests, pulled in with
// `include!`: a client and a server namespace joined by a veth pair,
// IPv6 addresses from fd00::/8 with neighbour discovery live, listeners
// on `PORTS` but 443. It expects `NETBEAST`, `TIMEOUT`, `CLIENT6`,
// `SERVER6` and `PORTS` in scope, and `SocketAddr`, `TcpListener`,
// `TcpStream`, `Netns` and `pair6` (support/pair6.rs).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Connected,
    Refused,
    TimedOut,
}

struct Bed {
    client: Netns,
    server: Netns,
    netbeast: bool,
    /// Kept open: the kernel completes handshakes on a listening socket
    /// without anyone accepting.
    _listeners: Vec<TcpListener>,
}

impl Bed {
    fn new(tag: &str, netbeast: bool) -> Bed {
        let binary = netbeast.then_some(NETBEAST);
        let (client, server) = pair6(tag, "10.216.0", CLIENT6, SERVER6, binary);
        let listeners = server
            .in_netns(|| {
                PORTS
                    .iter()
                    .filter(|p| **p != 443)
                    .map(|p| TcpListener::bind(format!("[::]:{p}")).unwrap())
                    .collect()
            })
            .unwrap();
        Bed {
            client,
            server,
            netbeast,
            _listeners: listeners,
        }
    }

    fn ip6tables(&self, line: &str) {
        let args: Vec<&str> = line.split_whitespace().collect();
        if self.netbeast {
            let args: Vec<&str> = ["ip6tables"].into_iter().chain(args).collect();
            self.server.netbeast_ok(&args).unwrap();
        } else {
            self.server.run_ok("ip6tables", &args).unwrap();
        }
    }

    fn connect_all(&self) -> Vec<Outcome> {
        let server: std::net::Ipv6Addr = SERVER6.parse().unwrap();
        self.client
            .in_netns(|| {
                std::thread::scope(|s| {
                    let handles: Vec<_> = PORTS
                        .iter()
                        .map(|&port| {
                            s.spawn(move || connect(SocketAddr::from((server, port))))
                        })
                        .collect();
                    handles.into_iter().map(|h| h.join().unwrap()).collect()
                })
            })
            .unwrap()
    }
}

/// How a TCP connection to `addr` ends within `TIMEOUT`.
fn connect(addr: SocketAddr) -> Outcome {
    match TcpStream::connect_timeout(&addr, TIMEOUT) {
        Ok(_) => Outcome::Connected,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
        Err(_) => Outcome::TimedOut,
    }
}
