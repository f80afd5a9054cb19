//! The parts of the test topologies only the tests use: UDP clients, the
//! routed client — router — server topology, and readers of `save` output
//! and error messages. Built for the library's unit tests and, through the
//! `testkit` feature that netbeast's dev-dependency on itself turns on, for
//! the integration tests; the shipped binary (`demo`, `bench`) never links
//! them. A child of `netns`, so it shares the socket helpers there without
//! making them public.

use super::*;

/// Answers every datagram received on `bind` (IPv4 or IPv6) in `ns` with
/// the sender's [`peer_line`] followed by the datagram itself.
pub fn udp_peer_server(ns: &Netns, bind: impl Into<SocketAddr>) -> Result<Server> {
    let bind = bind.into();
    let socket = ns
        .in_netns(|| UdpSocket::bind(bind))?
        .map_err(|source| ns.io_error(&format!("binding udp {bind}"), source))?;
    let setup = || -> io::Result<(SocketAddr, StopSignal)> {
        socket.set_nonblocking(true)?;
        Ok((socket.local_addr()?, StopSignal::new()?))
    };
    let (local, stop) =
        setup().map_err(|source| ns.io_error("setting up the udp peer server", source))?;
    let stop = Arc::new(stop);
    let served = Arc::new(AtomicU64::new(0));
    let (thread_stop, thread_served) = (stop.clone(), served.clone());
    let thread = std::thread::Builder::new()
        .name(format!("nbt-udppeer-{}", local.port()))
        .spawn(move || {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while thread_stop.wait_readable(socket.as_raw_fd()) {
                while let Ok((len, peer)) = socket.recv_from(&mut buf) {
                    thread_served.fetch_add(1, Ordering::SeqCst);
                    let mut reply = peer_line(peer).into_bytes();
                    reply.extend_from_slice(&buf[..len]);
                    let _ = socket.send_to(&reply, peer);
                }
            }
        })
        .map_err(|source| ns.io_error("starting the udp peer server thread", source))?;
    Ok(Server {
        local,
        served,
        stop,
        thread: Some(thread),
    })
}

/// What a UDP client saw after sending one datagram on a connected socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpOutcome {
    /// The first datagram that came back.
    Reply(Vec<u8>),
    /// ECONNREFUSED on recv: an ICMP error (port-unreachable) came back.
    Refused(Option<IcmpError>),
    /// EHOSTUNREACH and kin on recv.
    Unreachable {
        errno: i32,
        icmp: Option<IcmpError>,
    },
    /// Nothing came back within the timeout.
    TimedOut,
    Error(String),
}

impl fmt::Display for UdpOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UdpOutcome::Reply(data) => write!(f, "reply of {} bytes", data.len()),
            UdpOutcome::Refused(Some(icmp)) => write!(f, "refused ({icmp})"),
            UdpOutcome::Refused(None) => write!(f, "refused"),
            UdpOutcome::Unreachable { errno, icmp } => {
                write!(f, "{}", io::Error::from_raw_os_error(*errno))?;
                match icmp {
                    Some(icmp) => write!(f, " ({icmp})"),
                    None => Ok(()),
                }
            }
            UdpOutcome::TimedOut => write!(f, "timed out (no answer)"),
            UdpOutcome::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// Sends `payload` from `ns` to `addr` on a connected UDP socket and waits up
/// to `timeout` for a reply or an error (a connected socket receives ICMP
/// errors as ECONNREFUSED and kin).
pub fn udp_exchange(
    ns: &Netns,
    addr: SocketAddrV4,
    payload: &[u8],
    timeout: Duration,
) -> Result<UdpOutcome> {
    udp_exchange_from(
        ns,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        addr,
        payload,
        timeout,
    )
}

/// [`udp_exchange`] from a socket bound to `local` (a chosen source port),
/// IPv4 or IPv6.
pub fn udp_exchange_from(
    ns: &Netns,
    local: impl Into<SocketAddr>,
    addr: impl Into<SocketAddr>,
    payload: &[u8],
    timeout: Duration,
) -> Result<UdpOutcome> {
    let (local, addr) = (local.into(), addr.into());
    ns.in_netns(|| match exchange_here(local, addr, payload, timeout) {
        Ok(outcome) => outcome,
        Err(e) => UdpOutcome::Error(e.to_string()),
    })
}

fn exchange_here(
    local: SocketAddr,
    addr: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> io::Result<UdpOutcome> {
    let socket = UdpSocket::bind(local)?;
    set_recverr(socket.as_raw_fd(), addr.is_ipv6())?;
    socket.connect(addr)?;
    socket.send(payload)?;
    socket.set_read_timeout(Some(timeout))?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    match socket.recv(&mut buf) {
        Ok(len) => {
            buf.truncate(len);
            Ok(UdpOutcome::Reply(buf))
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(UdpOutcome::TimedOut)
        }
        Err(e) => {
            let icmp = read_icmp_error(socket.as_raw_fd());
            Ok(match e.raw_os_error() {
                Some(libc::ECONNREFUSED) => UdpOutcome::Refused(icmp),
                Some(
                    errno @ (libc::EHOSTUNREACH
                    | libc::ENETUNREACH
                    | libc::EACCES
                    | libc::EPERM
                    | libc::ENOPROTOOPT),
                ) => UdpOutcome::Unreachable { errno, icmp },
                _ => UdpOutcome::Error(e.to_string()),
            })
        }
    }
}

/// Sends `count` datagrams of `payload` from `ns` to `addr` and returns how
/// many the kernel took. Each is `20 + 8 + payload.len()` bytes of IPv4, the
/// size iptables' byte counters add up.
pub fn udp_send(ns: &Netns, addr: SocketAddrV4, payload: &[u8], count: usize) -> Result<usize> {
    ns.in_netns(|| -> io::Result<usize> {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        let mut sent = 0;
        for _ in 0..count {
            socket.send_to(payload, addr)?;
            sent += 1;
        }
        Ok(sent)
    })?
    .map_err(|source| ns.io_error(&format!("sending udp to {addr}"), source))
}

/// Connects from `ns` to `addr` and reads what the server says first (the
/// [`banner`] of a [`tcp_server`]); Err is the outcome when no connection came up.
pub fn tcp_banner(
    ns: &Netns,
    addr: SocketAddrV4,
    timeout: Duration,
) -> Result<Result<String, ConnectOutcome>> {
    ns.in_netns(|| {
        let socket = match connect_socket(None, addr.into(), timeout) {
            Ok(Ok(socket)) => socket,
            Ok(Err(outcome)) => return Err(outcome),
            Err(e) => return Err(ConnectOutcome::Error(e.to_string())),
        };
        let mut stream = std::net::TcpStream::from(socket);
        let mut text = String::new();
        let read = stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_read_timeout(Some(timeout)))
            .and_then(|()| stream.read_to_string(&mut text));
        match read {
            Ok(_) => Ok(text),
            Err(e) => Err(ConnectOutcome::Error(format!("reading the banner: {e}"))),
        }
    })
}

/// Interfaces and addresses of [`Routed`]: client — router — server, one
/// subnet on each side.
pub const ROUTED_CLIENT_IFACE: &str = "nbt-c";
pub const ROUTER_CLIENT_IFACE: &str = "nbt-r0";
pub const ROUTER_SERVER_IFACE: &str = "nbt-r1";
pub const ROUTED_SERVER_IFACE: &str = "nbt-s";
pub const ROUTED_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 199, 1, 2);
pub const ROUTER_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 199, 1, 1);
pub const ROUTER_SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 199, 2, 1);
pub const ROUTED_SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 199, 2, 2);

/// Three hosts: `client` and `server` on two subnets, `router` between them
/// with forwarding on, guarded by a [`Firewall`] attached to both of its
/// interfaces. Fields drop in order: client, router (firewall cleanup), server.
#[derive(Debug)]
pub struct Routed {
    pub client: Netns,
    pub router: Netns,
    pub server: Netns,
    pub firewall: Firewall,
}

impl Routed {
    pub fn new(tag: &str, firewall: Firewall) -> Result<Self> {
        let client = Netns::new(&format!("{tag}-c"))?;
        let router = firewall.guard(Netns::new(&format!("{tag}-r"))?);
        let server = Netns::new(&format!("{tag}-s"))?;
        let prefixed = |addr: Ipv4Addr| format!("{addr}/{TOPOLOGY_PREFIX_LEN}");
        veth_pair(
            &client,
            ROUTED_CLIENT_IFACE,
            &prefixed(ROUTED_CLIENT_ADDR),
            &router,
            ROUTER_CLIENT_IFACE,
            &prefixed(ROUTER_CLIENT_ADDR),
        )?;
        veth_pair(
            &router,
            ROUTER_SERVER_IFACE,
            &prefixed(ROUTER_SERVER_ADDR),
            &server,
            ROUTED_SERVER_IFACE,
            &prefixed(ROUTED_SERVER_ADDR),
        )?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        client.ip(&[
            "route",
            "add",
            "default",
            "via",
            &ROUTER_CLIENT_ADDR.to_string(),
        ])?;
        server.ip(&[
            "route",
            "add",
            "default",
            "via",
            &ROUTER_SERVER_ADDR.to_string(),
        ])?;
        // The hosts' ends stay bare: what the router's program forwards
        // or sends back must reach them without a program there.
        firewall.attach(&router, &[ROUTER_CLIENT_IFACE, ROUTER_SERVER_IFACE])?;
        Ok(Routed {
            client,
            router,
            server,
            firewall,
        })
    }

    /// Deletes the router's interface towards the server and makes it
    /// again (a VPN reconnecting): same name, new ifindex, the server's
    /// default route back.
    pub fn recreate_server_link(&self) -> Result<()> {
        self.router.ip(&["link", "del", ROUTER_SERVER_IFACE])?;
        veth_pair(
            &self.router,
            ROUTER_SERVER_IFACE,
            &format!("{ROUTER_SERVER_ADDR}/{TOPOLOGY_PREFIX_LEN}"),
            &self.server,
            ROUTED_SERVER_IFACE,
            &format!("{ROUTED_SERVER_ADDR}/{TOPOLOGY_PREFIX_LEN}"),
        )?;
        self.server.add_route("default", ROUTER_SERVER_ADDR)
    }

    /// [`Firewall::iptables_ok`] in the router.
    pub fn iptables_ok(&self, line: &str) -> Result<String> {
        self.firewall.iptables_ok(&self.router, line)
    }
}

/// `save` output made comparable across time: comment lines (with dates)
/// dropped, chain counters (`[12:720]`) blanked.
pub fn comparable_save(save: &str) -> String {
    save.lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| match (line.starts_with(':'), line.rfind('[')) {
            (true, Some(at)) => format!("{}[*]", &line[..at]),
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether an error message points at line `n` ("line 6", "line: 6", "line 6:").
pub fn mentions_line(message: &str, n: usize) -> bool {
    let lower = message.to_lowercase();
    lower.match_indices("line").any(|(at, word)| {
        let rest = lower[at + word.len()..].trim_start_matches([' ', ':', '#']);
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse() == Ok(n)
    })
}
