//! Host, network and service names for `iptables -L` without `-n`, found
//! where iptables finds them: services in /etc/services (per protocol, the
//! first entry for a port, as getservbyport), networks in /etc/networks
//! (getnetbyaddr), hosts through the C library's resolver (getnameinfo:
//! /etc/hosts, then DNS as /etc/nsswitch.conf says).
//!
//! Unlike iptables, which waits for each reverse DNS answer in turn (a
//! listing can hang for minutes without a reachable DNS server), a listing
//! looks up all its addresses at once and waits at most
//! [`HOST_LOOKUP_TIMEOUT`]; an address without an answer by then is
//! printed as a number.
//!
//! Listings stay pure functions of the ruleset: they get names only from
//! a [`Names`] in their [`super::list::ListFormat`]. The command line
//! turns the system's names on ([`use_system_names`]); library users and
//! unit tests get numbers unless they ask.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

/// How long a listing waits, in all, for reverse DNS answers.
pub const HOST_LOOKUP_TIMEOUT: Duration = Duration::from_millis(800);

/// How many host lookups run at once.
pub const MAX_LOOKUP_THREADS: usize = 32;

/// Where host names come from.
#[derive(Debug)]
enum Hosts {
    /// The C library's resolver (getnameinfo).
    System,
    /// A fixed table (tests).
    Fixed(HashMap<Ipv4Addr, String>),
}

/// The names one listing may print.
#[derive(Debug)]
pub struct Names {
    /// (port, IP protocol number) → the first service name.
    services: HashMap<(u16, u8), String>,
    /// Network number (host order) → the first network name.
    networks: HashMap<u32, String>,
    hosts: Hosts,
    /// Answers found so far; `None`: the address has no name (or no answer
    /// came in time).
    host_cache: Mutex<HashMap<Ipv4Addr, Option<String>>>,
}

impl PartialEq for Names {
    /// One set of names is only ever equal to itself (listings compare
    /// formats, not name tables).
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Names {}

static SYSTEM: OnceLock<Names> = OnceLock::new();
static SYSTEM_ON: AtomicBool = AtomicBool::new(false);

/// Turns the system's names on for this process's listings (the command
/// line does, as iptables resolves unless given `-n`).
pub fn use_system_names() {
    SYSTEM_ON.store(true, Ordering::Relaxed);
}

/// The system's names, once [`use_system_names`] turned them on; the
/// files are read at the first listing that needs them, so commands that
/// list nothing pay nothing.
pub fn system() -> Option<&'static Names> {
    SYSTEM_ON.load(Ordering::Relaxed).then(|| {
        SYSTEM.get_or_init(|| {
            let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
            Names::from_files(
                &read("/etc/services"),
                &read("/etc/networks"),
                Hosts::System,
            )
        })
    })
}

impl Names {
    fn from_files(services: &str, networks: &str, hosts: Hosts) -> Self {
        Names {
            services: parse_services(services),
            networks: parse_networks(networks),
            hosts,
            host_cache: Mutex::new(HashMap::new()),
        }
    }

    /// Names from the text of a services and a networks file and a fixed
    /// host table, for tests.
    pub fn fixed(services: &str, networks: &str, hosts: &[(Ipv4Addr, &str)]) -> Self {
        let hosts = hosts.iter().map(|(a, n)| (*a, n.to_string())).collect();
        Names::from_files(services, networks, Hosts::Fixed(hosts))
    }

    /// The service on `port` for IP protocol `protocol`, or the number.
    pub fn service(&self, port: u16, protocol: u8) -> String {
        self.services
            .get(&(port, protocol))
            .cloned()
            .unwrap_or_else(|| port.to_string())
    }

    /// Looks up the names of `addrs` (those not known yet) all at once,
    /// waiting at most [`HOST_LOOKUP_TIMEOUT`].
    pub fn prefetch_hosts(&self, addrs: impl IntoIterator<Item = Ipv4Addr>) {
        let mut cache = self.host_cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut wanted: Vec<Ipv4Addr> = addrs
            .into_iter()
            .filter(|a| !cache.contains_key(a))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        match &self.hosts {
            Hosts::Fixed(table) => {
                for addr in wanted {
                    cache.insert(addr, table.get(&addr).cloned());
                }
            }
            Hosts::System => {
                let (tx, rx) = mpsc::channel();
                let queue = Arc::new(Mutex::new(wanted.clone()));
                // A bounded pool: a listing of ten thousand addresses does
                // not start ten thousand threads. Lookups still running at
                // the deadline are abandoned; their threads end with their
                // answers or with the process.
                for _ in 0..wanted.len().min(MAX_LOOKUP_THREADS) {
                    let (tx, queue) = (tx.clone(), queue.clone());
                    let _ = std::thread::Builder::new()
                        .name("host-lookup".into())
                        .spawn(move || {
                            loop {
                                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                                let Some(addr) = next else { break };
                                if tx.send((addr, reverse_lookup(addr))).is_err() {
                                    break;
                                }
                            }
                        });
                }
                drop(tx);
                let deadline = Instant::now() + HOST_LOOKUP_TIMEOUT;
                while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                    match rx.recv_timeout(left) {
                        Ok((addr, name)) => {
                            cache.insert(addr, name);
                        }
                        Err(_) => break,
                    }
                }
                // What is left is printed as numbers; the workers stop.
                queue.lock().unwrap_or_else(|e| e.into_inner()).clear();
                for addr in wanted {
                    cache.entry(addr).or_insert(None);
                }
            }
        }
    }

    /// `addr` as `iptables -L` names it: its host name, else its network
    /// name, else the number. Only prefetched addresses get a host name.
    pub fn address(&self, addr: Ipv4Addr) -> String {
        let cache = self.host_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Some(host)) = cache.get(&addr) {
            return host.clone();
        }
        self.networks
            .get(&u32::from(addr))
            .cloned()
            .unwrap_or_else(|| addr.to_string())
    }
}

/// IP protocol numbers of the protocol names services files use.
fn protocol_number(name: &str) -> Option<u8> {
    match name {
        "tcp" => Some(6),
        "udp" => Some(17),
        "dccp" => Some(33),
        "sctp" => Some(132),
        _ => None,
    }
}

/// `name port/protocol [aliases] [# comment]` lines; the first name for a
/// port and protocol wins, as getservbyport reads the file.
fn parse_services(text: &str) -> HashMap<(u16, u8), String> {
    let mut services = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let (Some(name), Some(port_proto)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some((port, proto)) = port_proto.split_once('/') else {
            continue;
        };
        if let (Ok(port), Some(proto)) = (port.parse::<u16>(), protocol_number(proto)) {
            services
                .entry((port, proto))
                .or_insert_with(|| name.to_string());
        }
    }
    services
}

/// `name number [aliases]` lines, the number as inet_network reads it
/// (`127.0.0.0`; a short `10` is the number 10, as in glibc).
fn parse_networks(text: &str) -> HashMap<u32, String> {
    let mut networks = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let (Some(name), Some(number)) = (fields.next(), fields.next()) else {
            continue;
        };
        let parts: Option<Vec<u32>> = number
            .split('.')
            .map(|p| p.parse::<u8>().ok().map(u32::from))
            .collect();
        let Some(parts) = parts.filter(|p| (1..=4).contains(&p.len())) else {
            continue;
        };
        let value = parts.iter().fold(0u32, |acc, p| (acc << 8) | p);
        networks.entry(value).or_insert_with(|| name.to_string());
    }
    networks
}

/// The host name of `addr` (getnameinfo with NI_NAMEREQD), if it has one.
fn reverse_lookup(addr: Ipv4Addr) -> Option<String> {
    // SAFETY: a zeroed sockaddr_in is valid; the fields set below make it
    // an AF_INET address.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_addr.s_addr = u32::from(addr).to_be();
    let mut host = [0 as libc::c_char; libc::NI_MAXHOST as usize];
    // SAFETY: the pointers and lengths describe `sin` and `host`, which
    // live across the call; getnameinfo is thread-safe.
    let rc = unsafe {
        libc::getnameinfo(
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: on success getnameinfo wrote a NUL-terminated string.
    let name = unsafe { std::ffi::CStr::from_ptr(host.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICES: &str = "\
# comment
ssh\t\t22/tcp\t\t\t\t# SSH Remote Login Protocol
domain\t\t53/tcp
domain\t\t53/udp
shell\t\t514/tcp\t\tcmd syslog\t# no passwords used
syslog\t\t514/udp
shell2\t\t514/tcp
";
    const NETWORKS: &str = "default\t\t0.0.0.0\nloopback\t127.0.0.0\nten\t10\n";

    #[test]
    fn services_per_protocol_first_wins() {
        let names = Names::fixed(SERVICES, "", &[]);
        assert_eq!(names.service(22, 6), "ssh");
        assert_eq!(names.service(22, 17), "22");
        assert_eq!(names.service(514, 6), "shell");
        assert_eq!(names.service(514, 17), "syslog");
        assert_eq!(names.service(7777, 6), "7777");
    }

    #[test]
    fn hosts_then_networks_then_numbers() {
        let localhost = Ipv4Addr::new(127, 0, 0, 1);
        let names = Names::fixed("", NETWORKS, &[(localhost, "localhost")]);
        // Not prefetched yet: no host name.
        assert_eq!(names.address(localhost), "127.0.0.1");
        names.prefetch_hosts([localhost, Ipv4Addr::new(127, 0, 0, 0)]);
        assert_eq!(names.address(localhost), "localhost");
        assert_eq!(names.address(Ipv4Addr::new(127, 0, 0, 0)), "loopback");
        // "10" is the number 10 (0.0.0.10), not 10.0.0.0, as in glibc.
        assert_eq!(names.address(Ipv4Addr::new(10, 0, 0, 0)), "10.0.0.0");
        assert_eq!(names.address(Ipv4Addr::new(0, 0, 0, 10)), "ten");
    }

    /// The system resolver answers from /etc/hosts for 127.0.0.1 (every
    /// system has it) within the timeout.
    #[test]
    fn system_resolver_reads_etc_hosts() {
        let names = Names::from_files("", "", Hosts::System);
        let localhost = Ipv4Addr::new(127, 0, 0, 1);
        let started = Instant::now();
        names.prefetch_hosts([localhost]);
        assert!(started.elapsed() < HOST_LOOKUP_TIMEOUT + Duration::from_millis(200));
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let first = hosts.lines().find_map(|l| {
            let mut f = l.split('#').next()?.split_whitespace();
            (f.next()? == "127.0.0.1").then(|| f.next().map(str::to_string))?
        });
        if let Some(first) = first {
            assert_eq!(names.address(localhost), first);
        }
    }
}
