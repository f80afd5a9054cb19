//! Network tests of `-j TCPMSS` (issue 18's mangle targets; an edge
//! router's MSS clamping): real TCP connections through a router (and from
//! a host's own sockets), the segments captured as they reach the peer's
//! bare interface, their MSS option read there, on netbeast and on the
//! kernel's iptables / ip6tables (the oracle), over IPv4 and IPv6:
//!
//! - `--set-mss` lowers the SYN's and the SYN-ACK's option, never raises
//!   it;
//! - `--clamp-mss-to-pmtu` lowers it to the lower of the route's MTU
//!   towards the destination and the one back to the source, less the
//!   headers (a smaller device MTU on one side, a route MTU on the other);
//! - a rule without `--syn` also adds the option (536; IPv6 1220) to every
//!   segment without payload that lacks it, as the kernel does;
//! - the host's OUTPUT;
//!
//! each with the senders' checksum offload on (their segments carry only
//! the pseudo-header's sum, `CHECKSUM_PARTIAL`) and off (full checksums
//! the receiver verifies). The capture checks every segment's checksum too:
//! whole, or a pseudo-header sum that offload completes.
//!
//! Needs root. Run: `cargo test -p netbeast --test tcpmss`.

use std::{
    io::Read,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use netbeast::netns::{Firewall, Netns, require_root, tcp_stream, veth_pair};

#[path = "support/pair6.rs"]
mod pair6;

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
const TIMEOUT: Duration = Duration::from_secs(3);
const PORT: u16 = 5060;
/// What the test's sockets send after the handshake, so that segments
/// with payload pass too (and are left alone).
const DATA: &[u8] = b"how big may my segments be?";

include!("support/scenario.rs");

/// One TCP segment as it reached an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Segment {
    syn: bool,
    ack: bool,
    payload: usize,
    mss: Option<u16>,
    /// The checksum holds: whole, or just the pseudo-header's sum (left to
    /// transmit offload).
    checksum_ok: bool,
}

/// The segments arriving at an interface, read by a thread from an
/// AF_PACKET socket until [`Capture::stop`].
struct Capture {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Segment>>,
}

impl Capture {
    fn start(ns: &Netns, iface: &str) -> Capture {
        let name = std::ffi::CString::new(iface).unwrap();
        let fd = ns
            .in_netns(|| {
                // SAFETY: a NUL-terminated name.
                let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
                assert_ne!(ifindex, 0, "no interface {iface}");
                let protocol = (libc::ETH_P_ALL as u16).to_be() as i32;
                // SAFETY: socket returns a new fd or -1.
                let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, protocol) };
                assert!(
                    fd >= 0,
                    "AF_PACKET socket: {}",
                    std::io::Error::last_os_error()
                );
                // SAFETY: fd is fresh and owned here.
                let socket = unsafe { OwnedFd::from_raw_fd(fd) };
                // SAFETY: an all-zero sockaddr_ll is valid; completed below.
                let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                addr.sll_family = libc::AF_PACKET as u16;
                addr.sll_protocol = protocol as u16;
                addr.sll_ifindex = ifindex as i32;
                // SAFETY: addr is a valid sockaddr_ll of the size given.
                let r = unsafe {
                    libc::bind(
                        socket.as_raw_fd(),
                        &addr as *const _ as *const libc::sockaddr,
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    )
                };
                assert_eq!(
                    r,
                    0,
                    "binding to {iface}: {}",
                    std::io::Error::last_os_error()
                );
                let timeout = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 50_000,
                };
                // SAFETY: a valid timeval of the size given.
                unsafe {
                    libc::setsockopt(
                        socket.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_RCVTIMEO,
                        &timeout as *const _ as *const libc::c_void,
                        std::mem::size_of::<libc::timeval>() as u32,
                    )
                };
                socket
            })
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut segments = Vec::new();
            let mut buf = [0u8; 2048];
            while !stopped.load(Ordering::Relaxed) {
                // SAFETY: an all-zero sockaddr_ll is valid; the kernel fills it.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                // SAFETY: buf and from are valid for the sizes given.
                let n = unsafe {
                    libc::recvfrom(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr() as *mut libc::c_void,
                        buf.len(),
                        0,
                        &mut from as *mut _ as *mut libc::sockaddr,
                        &mut len,
                    )
                };
                if n <= 0 || from.sll_pkttype == libc::PACKET_OUTGOING as u8 {
                    continue;
                }
                if let Some(segment) = segment(&buf[..n as usize]) {
                    segments.push(segment);
                }
            }
            segments
        });
        Capture { stop, thread }
    }

    fn stop(self) -> Vec<Segment> {
        // Let the last segments arrive.
        std::thread::sleep(Duration::from_millis(200));
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Reads an Ethernet frame's TCP segment (IPv4 or IPv6 without extension
/// headers, as the tests send them).
fn segment(frame: &[u8]) -> Option<Segment> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(14..)?;
    let (tcp, pseudo) = match ethertype {
        0x0800 if ip[9] == 6 => {
            let ihl = usize::from(ip[0] & 0xf) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let tcp = ip.get(ihl..total)?;
            let mut pseudo = sum16(&ip[12..20]);
            pseudo += 6 + tcp.len() as u32;
            (tcp, pseudo)
        }
        0x86dd if ip[6] == 6 => {
            let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let tcp = ip.get(40..40 + payload)?;
            let mut pseudo = sum16(&ip[8..40]);
            pseudo += 6 + tcp.len() as u32;
            (tcp, pseudo)
        }
        _ => return None,
    };
    let header = usize::from(tcp.get(12)? >> 4) * 4;
    let options = tcp.get(20..header)?;
    let mut mss = None;
    let mut i = 0;
    while i < options.len() {
        match options[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let len = usize::from(*options.get(i + 1)?);
                if kind == 2 && len == 4 {
                    mss = Some(u16::from_be_bytes([options[i + 2], options[i + 3]]));
                }
                i += len.max(2);
            }
        }
    }
    let whole = fold(pseudo + sum16(tcp)) == 0xffff;
    let check = u16::from_be_bytes([tcp[16], tcp[17]]);
    let partial = check == fold(pseudo) || (check == 0xffff && fold(pseudo) == 0);
    Some(Segment {
        syn: tcp[13] & 0x02 != 0,
        ack: tcp[13] & 0x10 != 0,
        payload: tcp.len() - header,
        mss,
        checksum_ok: whole || partial,
    })
}

fn sum16(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// A client, a router and a server, each link IPv4 and IPv6
/// (10.231.1.0/24 and fd00:31:1::/64 on the client's side, 10.231.2.0/24
/// and fd00:31:2::/64 on the server's), the firewall on both of the
/// router's interfaces.
struct Router {
    client: Netns,
    router: Netns,
    server: Netns,
    firewall: Firewall,
    v6: bool,
}

const CLIENT_IF: &str = "nbt-mc";
const ROUTER_CLIENT_IF: &str = "nbt-mr0";
const ROUTER_SERVER_IF: &str = "nbt-mr1";
const SERVER_IF: &str = "nbt-ms";

impl Router {
    fn new(tag: &str, firewall: Firewall, v6: bool) -> Router {
        require_root();
        let client = Netns::new(&format!("{tag}-c")).unwrap();
        let router = firewall.guard(Netns::new(&format!("{tag}-r")).unwrap());
        let server = Netns::new(&format!("{tag}-s")).unwrap();
        for (host, host_if, router_if, n) in [
            (&client, CLIENT_IF, ROUTER_CLIENT_IF, 1),
            (&server, SERVER_IF, ROUTER_SERVER_IF, 2),
        ] {
            veth_pair(
                &router,
                router_if,
                &format!("10.231.{n}.1/24"),
                host,
                host_if,
                &format!("10.231.{n}.2/24"),
            )
            .unwrap();
            pair6::add6(&router, router_if, &format!("fd00:31:{n}::1/64"));
            pair6::add6(host, host_if, &format!("fd00:31:{n}::2/64"));
            host.ip(&["route", "add", "default", "via", &format!("10.231.{n}.1")])
                .unwrap();
            host.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &format!("fd00:31:{n}::1"),
            ])
            .unwrap();
        }
        router.sysctl("net.ipv4.ip_forward", "1").unwrap();
        router.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
        firewall
            .attach(&router, &[ROUTER_CLIENT_IF, ROUTER_SERVER_IF])
            .unwrap();
        Router {
            client,
            router,
            server,
            firewall,
            v6,
        }
    }

    fn server_addr(&self) -> SocketAddr {
        if self.v6 {
            SocketAddr::new(IpAddr::V6("fd00:31:2::2".parse().unwrap()), PORT)
        } else {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 231, 2, 2)), PORT)
        }
    }

    fn rule(&self, line: &str) {
        if self.v6 {
            self.firewall.ip6tables_ok(&self.router, line)
        } else {
            self.firewall.iptables_ok(&self.router, line)
        }
        .unwrap_or_else(|e| panic!("{line}: {e}"));
    }

    fn ruleset(&self) -> String {
        let listing = if self.v6 {
            self.firewall.ip6tables_ok(&self.router, "-t mangle -S")
        } else {
            self.firewall.iptables_ok(&self.router, "-t mangle -S")
        };
        listing.unwrap_or_else(|e| e.to_string())
    }

    /// Transmit checksum offload off on the hosts' interfaces: their
    /// segments then carry whole checksums, which the receiver checks.
    fn full_checksums(&self) {
        for (ns, iface) in [(&self.client, CLIENT_IF), (&self.server, SERVER_IF)] {
            ns.run_ok("ethtool", &["-K", iface, "tx", "off"]).unwrap();
        }
    }

    /// One connection from the client to the server, with data both ways:
    /// the segments that reached the server and those that reached the
    /// client.
    fn connection(&self) -> (Vec<Segment>, Vec<Segment>) {
        let at_server = Capture::start(&self.server, SERVER_IF);
        let at_client = Capture::start(&self.client, CLIENT_IF);
        exchange(&self.client, &self.server, None, self.server_addr());
        (at_server.stop(), at_client.stop())
    }
}

/// A listener at `to` in `server` that reads what a client sends and
/// answers it; one connection from `client` (bound to `local` if given)
/// that sends [`DATA`] and reads it back.
fn exchange(client: &Netns, server: &Netns, local: Option<SocketAddr>, to: SocketAddr) {
    let listener = server
        .in_netns(|| std::net::TcpListener::bind(to))
        .unwrap()
        .unwrap();
    let served = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept()?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf)?;
        std::io::Write::write_all(&mut stream, &buf[..n])?;
        Ok::<_, std::io::Error>(n)
    });
    let mut stream = tcp_stream(client, local, to, TIMEOUT)
        .unwrap()
        .unwrap_or_else(|outcome| panic!("connecting to {to}: {outcome:?}"));
    std::io::Write::write_all(&mut stream, DATA).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut back = vec![0u8; DATA.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, DATA);
    drop(stream);
    assert_eq!(served.join().unwrap().unwrap(), DATA.len());
}

/// The MSS of the first SYN (`ack`: SYN-ACK) among `segments`.
fn syn_mss(segments: &[Segment], ack: bool) -> Option<u16> {
    segments
        .iter()
        .find(|s| s.syn && s.ack == ack)
        .unwrap_or_else(|| panic!("no SYN (ack {ack}) among {segments:#?}"))
        .mss
}

fn checksums_hold(what: &str, segments: &[Segment]) {
    let bad: Vec<_> = segments.iter().filter(|s| !s.checksum_ok).collect();
    assert!(
        bad.is_empty(),
        "{what}: segments with a bad checksum: {bad:#?}"
    );
}

// `--set-mss` on a router: the SYN's 1460 (IPv6 1440) and the SYN-ACK's
// become 1000; a higher value leaves them. With offload (partial sums)
// and without.
scenario!(set_mss_on_a_router, without skb);
fn set_mss_on_a_router(firewall: Firewall) {
    for v6 in [false, true] {
        let bed = Router::new(if v6 { "mss6" } else { "mss4" }, firewall.clone(), v6);
        bed.rule("-t mangle -A FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss 1000");
        bed.rule("-t mangle -A FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss 1200");
        for full in [false, true] {
            if full {
                bed.full_checksums();
            }
            let (at_server, at_client) = bed.connection();
            let what = format!("v6 {v6}, full checksums {full}\n{}", bed.ruleset());
            assert_eq!(syn_mss(&at_server, false), Some(1000), "SYN: {what}");
            assert_eq!(syn_mss(&at_client, true), Some(1000), "SYN-ACK: {what}");
            checksums_hold(&what, &at_server);
            checksums_hold(&what, &at_client);
            // Only SYNs: the other segments keep their options.
            assert!(
                at_server.iter().filter(|s| !s.syn).all(|s| s.mss.is_none()),
                "{what}: {at_server:#?}"
            );
        }
    }
}

// `--clamp-mss-to-pmtu`: the server's link has MTU 1400 (both ends), the
// router's end of the client's link 1300: both directions' SYNs leave
// with the lower of the way on and the way back, less the headers (1260;
// IPv6 1240).
scenario!(clamp_to_the_path_mtu, without skb);
fn clamp_to_the_path_mtu(firewall: Firewall) {
    for v6 in [false, true] {
        let bed = Router::new(if v6 { "clamp6" } else { "clamp4" }, firewall.clone(), v6);
        bed.router
            .ip(&["link", "set", ROUTER_SERVER_IF, "mtu", "1400"])
            .unwrap();
        bed.server
            .ip(&["link", "set", SERVER_IF, "mtu", "1400"])
            .unwrap();
        // The client's own end keeps 1500 (its SYN offers 1460; IPv6
        // 1440): only the router's way back to it is narrower.
        bed.router
            .ip(&["link", "set", ROUTER_CLIENT_IF, "mtu", "1300"])
            .unwrap();
        bed.rule(
            "-t mangle -A FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu",
        );
        let (at_server, at_client) = bed.connection();
        let want = if v6 { 1300 - 60 } else { 1300 - 40 };
        let what = format!("v6 {v6}\n{}", bed.ruleset());
        assert_eq!(syn_mss(&at_server, false), Some(want), "SYN: {what}");
        assert_eq!(syn_mss(&at_client, true), Some(want), "SYN-ACK: {what}");
        checksums_hold(&what, &at_server);
        checksums_hold(&what, &at_client);
    }
}

// A rule without `--syn` (iptables-nft takes it): the SYNs' options are
// lowered, and every segment without payload that has no MSS option gets
// one (536; IPv6 1220, the defaults, below the rule's 1000 and 1300): the
// handshake's last ACK, the pure ACKs, the FINs. Segments with payload
// keep their options.
scenario!(segments_without_the_option_get_it, without skb);
fn segments_without_the_option_get_it(firewall: Firewall) {
    for v6 in [false, true] {
        let bed = Router::new(if v6 { "add6" } else { "add4" }, firewall.clone(), v6);
        let value = if v6 { 1300 } else { 1000 };
        bed.rule(&format!(
            "-t mangle -A FORWARD -p tcp -j TCPMSS --set-mss {value}"
        ));
        for full in [false, true] {
            if full {
                bed.full_checksums();
            }
            let (at_server, at_client) = bed.connection();
            let what = format!("v6 {v6}, full checksums {full}\n{}", bed.ruleset());
            let default = if v6 { 1220 } else { 536 };
            for (side, segments) in [("server", &at_server), ("client", &at_client)] {
                checksums_hold(&what, segments);
                for s in segments.iter() {
                    let want = match (s.syn, s.payload) {
                        (true, _) => Some(value),
                        (false, 0) => Some(default),
                        (false, _) => None,
                    };
                    assert_eq!(s.mss, want, "at the {side}: {s:?}\n{what}");
                }
                assert!(
                    segments.iter().any(|s| !s.syn && s.payload == 0),
                    "{side}: no segment without payload: {segments:#?}"
                );
            }
        }
    }
}

// The host's own connections: OUTPUT's `--set-mss` lowers the SYN the
// client's firewall sends (and POSTROUTING's), the server sees it.
scenario!(the_hosts_own_syns, without skb);
fn the_hosts_own_syns(firewall: Firewall) {
    require_root();
    for v6 in [false, true] {
        let tag = if v6 { "own6" } else { "own4" };
        let (host, server) = pair6::pair6(tag, "10.232.0", "fd00:32::1", "fd00:32::2", None);
        let host = firewall.guard(host);
        firewall.attach(&host, &["nbt6c"]).unwrap();
        let run = |line: &str| {
            if v6 {
                firewall.ip6tables_ok(&host, line)
            } else {
                firewall.iptables_ok(&host, line)
            }
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        };
        run("-t mangle -A OUTPUT -p tcp --syn -j TCPMSS --set-mss 900");
        run("-A OUTPUT -p tcp --syn -j TCPMSS --set-mss 1100");
        let to = if v6 {
            SocketAddr::new(IpAddr::V6("fd00:32::2".parse::<Ipv6Addr>().unwrap()), PORT)
        } else {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 232, 0, 2)), PORT)
        };
        let at_server = Capture::start(&server, "nbt6s");
        exchange(&host, &server, None, to);
        let segments = at_server.stop();
        assert_eq!(
            syn_mss(&segments, false),
            Some(900),
            "v6 {v6}: {segments:#?}"
        );
        checksums_hold(&format!("v6 {v6}"), &segments);
    }
}
