//! Test topologies in network namespaces: the hosts of the network tests,
//! `netbeast demo` and `netbeast bench`.
//!
//! Everything here happens inside namespaces this module created (names start
//! with [`NAME_PREFIX`]); the root namespace's interfaces, routes and firewall
//! are never touched. The only external tool is `ip` (iproute2); the rest is
//! raw syscalls.
//!
//! - [`Netns`] creates a namespace and deletes it on drop, even while a panic
//!   unwinds; with [`Netns::with_netbeast`] it first runs
//!   `netbeast detach --all` there, so no pins outlive the test.
//! - [`veth_pair`] joins two namespaces; [`ClientServer`] (two hosts) and
//!   [`Routed`] (client, router, server) are the usual topologies. Their
//!   hosts' veths are bare, as containers' are: netbeast must reach them
//!   without a program there ([`Netns::attach_xdp_pass`] is for the
//!   `--fast-path on` case, whose XDP_REDIRECT needs one).
//! - [`Firewall`] drives netbeast or, as the oracle, the kernel's iptables
//!   with the same command lines; [`Testbed`] is a [`ClientServer`] whose
//!   server it guards.
//! - [`Netns::in_netns`] runs a closure on a thread that has entered the
//!   namespace, so plain std sockets live there. [`tcp_server`],
//!   [`udp_echo_server`], [`tcp_connect`] and [`udp_exchange`] build on it and
//!   report what a client sees in the kernel's own terms (refused by a reset or
//!   by which ICMP error, timed out, ...). [`peer_server`] and
//!   [`udp_peer_server`] answer with the client address they saw, which is
//!   what a NAT test checks; [`tcp_stream`] and [`udp_exchange_from`] choose
//!   the client's source port.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Every namespace this module creates is named `nbt-<tag>-<pid>-<counter>`.
pub const NAME_PREFIX: &str = "nbt-";
/// Where `ip netns` keeps its namespaces (bind mounts of nsfs inodes).
pub const NETNS_RUN_DIR: &str = "/run/netns";
/// The kernel's limit on interface names (IFNAMSIZ - 1).
pub const MAX_IFACE_NAME_LEN: usize = 15;
/// A tag longer than this would make namespace names unwieldy in `ip netns list`.
pub const MAX_TAG_LEN: usize = 40;
/// Largest UDP datagram the echo server and [`udp_exchange`] handle.
pub const MAX_DATAGRAM: usize = 65_535;

/// Interface and addresses of [`ClientServer`]. Every test has its own
/// namespaces, so all of them can use the same names without colliding.
pub const CLIENT_IFACE: &str = "nbt-c";
pub const SERVER_IFACE: &str = "nbt-s";
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 199, 0, 1);
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 199, 0, 2);
pub const TOPOLOGY_PREFIX_LEN: u8 = 24;

/// Errors of the namespace toolkit.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespaces need root: run this as root (e.g. with sudo)")]
    NotRoot,
    #[error(
        "namespace tag {0:?} is not usable: use 1 to {MAX_TAG_LEN} characters from [A-Za-z0-9_-]"
    )]
    BadTag(String),
    #[error(
        "interface name {0:?} is not usable: use 1 to {MAX_IFACE_NAME_LEN} characters, no '/', ':' or whitespace"
    )]
    BadIfaceName(String),
    #[error("could not run `{command}`: {source} (is iproute2 installed?)")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed ({status}): {}", stderr.trim())]
    CommandFailed {
        command: String,
        status: ExitStatus,
        stdout: String,
        stderr: String,
    },
    #[error("could not enter network namespace {name}: {source}")]
    Enter {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("in network namespace {name}: {what}: {source}")]
    Io {
        name: String,
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("namespace {0} has no netbeast binary: create it with Netns::with_netbeast")]
    NoNetbeast(String),
}

pub type Result<T, E = NetnsError> = std::result::Result<T, E>;

// What only the tests use lives in `testkit` (see there), re-exported here so
// a test names it as it names the rest of `netns`.
#[cfg(any(test, feature = "testkit"))]
mod testkit;
#[cfg(any(test, feature = "testkit"))]
pub use testkit::*;

/// Panics with a clear message unless the process runs as root. Network tests
/// call it first, so a non-root run fails in one readable line.
#[track_caller]
pub fn require_root() {
    if !is_root() {
        panic!("{}", NetnsError::NotRoot);
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A named network namespace (`ip netns add`), deleted on drop.
///
/// Drop order: XDP_PASS links closed, `netbeast detach --all` inside it (if
/// [`Netns::with_netbeast`] was used), SIGKILL to any process still in it,
/// then `ip netns del`.
/// Drop runs while a failing test unwinds, so nothing is left behind.
#[derive(Debug)]
pub struct Netns {
    name: String,
    netbeast: Option<PathBuf>,
    /// BPF links of [`Netns::attach_xdp_pass`], closed before the namespace goes.
    xdp_links: Mutex<Vec<OwnedFd>>,
}

impl Netns {
    /// Creates `nbt-<tag>-<pid>-<n>` with `lo` up. The pid and a process-wide
    /// counter keep names unique across parallel tests and test binaries.
    pub fn new(tag: &str) -> Result<Self> {
        if !is_root() {
            return Err(NetnsError::NotRoot);
        }
        if tag.is_empty()
            || tag.len() > MAX_TAG_LEN
            || !tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(NetnsError::BadTag(tag.to_owned()));
        }
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(remove_stale_namespaces);

        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("{NAME_PREFIX}{tag}-{pid}-{n}");
            if Path::new(NETNS_RUN_DIR).join(&name).exists() {
                // Left by an earlier process with the same pid; never reuse it.
                continue;
            }
            run_checked(Command::new("ip").args(["netns", "add", &name]))?;
            let ns = Netns {
                name,
                netbeast: None,
                xdp_links: Mutex::new(Vec::new()),
            };
            ns.ip(&["link", "set", "lo", "up"])?;
            return Ok(ns);
        }
    }

    /// Makes every [`Netns::netbeast`] call run `binary`, and makes drop run
    /// `binary detach --all` here before the namespace goes: XDP programs go
    /// with the interfaces, but pins in bpffs and the rule files would stay.
    pub fn with_netbeast(mut self, binary: impl Into<PathBuf>) -> Self {
        self.netbeast = Some(binary.into());
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(&self.name)
    }

    /// The namespace's inode number: the id netbeast names its state after
    /// (`/sys/fs/bpf/netbeast/<id>/`, `/run/netbeast/<id>/`).
    pub fn id(&self) -> Result<u64> {
        std::fs::metadata(self.path())
            .map(|m| m.ino())
            .map_err(|source| self.io_error("reading the namespace inode", source))
    }

    /// A command that runs `program` inside the namespace
    /// (`ip netns exec <name> program`), to be completed by the caller.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Runs `program args...` inside the namespace; any exit status is returned.
    pub fn run<S: AsRef<OsStr>>(&self, program: impl AsRef<OsStr>, args: &[S]) -> Result<Output> {
        run_output(self.command(program).args(args))
    }

    /// Runs `program args...` inside the namespace and returns its stdout;
    /// a non-zero exit is an error carrying stderr.
    pub fn run_ok<S: AsRef<OsStr>>(
        &self,
        program: impl AsRef<OsStr>,
        args: &[S],
    ) -> Result<String> {
        run_checked(self.command(program).args(args))
    }

    /// `ip -n <name> args...`, which must succeed; returns stdout.
    pub fn ip<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String> {
        run_checked(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Runs the netbeast binary given to [`Netns::with_netbeast`] inside the
    /// namespace; any exit status is returned.
    pub fn netbeast<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Output> {
        run_output(self.netbeast_command()?.args(args))
    }

    /// Like [`Netns::netbeast`], but a non-zero exit is an error; returns stdout.
    pub fn netbeast_ok<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String> {
        run_checked(self.netbeast_command()?.args(args))
    }

    /// Like [`Netns::netbeast`], with `input` on stdin (`netbeast restore`).
    pub fn netbeast_with_input<S: AsRef<OsStr>>(&self, args: &[S], input: &str) -> Result<Output> {
        let mut command = self.netbeast_command()?;
        command.args(args);
        with_input(command, input)
    }

    /// `netbeast iptables <args>`, where `args` is one iptables line split on
    /// whitespace (`"-A INPUT -p tcp --dport 22 -j ACCEPT"`); any exit status.
    pub fn netbeast_iptables(&self, args: &str) -> Result<Output> {
        let mut argv = vec!["iptables"];
        argv.extend(args.split_whitespace());
        self.netbeast(&argv)
    }

    /// `netbeast iptables <args>`, which must succeed; returns stdout.
    pub fn netbeast_iptables_ok(&self, args: &str) -> Result<String> {
        let mut argv = vec!["iptables"];
        argv.extend(args.split_whitespace());
        self.netbeast_ok(&argv)
    }

    fn netbeast_command(&self) -> Result<Command> {
        let binary = self
            .netbeast
            .as_ref()
            .ok_or_else(|| NetnsError::NoNetbeast(self.name.clone()))?;
        Ok(self.command(binary))
    }

    /// The MAC address of `iface` in this namespace.
    pub fn mac(&self, iface: &str) -> Result<[u8; 6]> {
        let text = self.ip(&["-o", "link", "show", "dev", iface])?;
        let bad = || NetnsError::Io {
            name: self.name.clone(),
            what: format!("reading {iface}'s MAC address from `ip link`: {text}"),
            source: io::ErrorKind::InvalidData.into(),
        };
        let word = text
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .ok_or_else(bad)?;
        let mut mac = [0u8; 6];
        let mut parts = word.split(':');
        for byte in mac.iter_mut() {
            *byte = parts
                .next()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(bad)?;
        }
        Ok(mac)
    }

    /// Sends ready-made Ethernet frames out of `iface` through an AF_PACKET
    /// socket, as a packet generator would: at most `frames.len()` frames,
    /// and for no longer than `budget`. Returns how many were sent.
    pub fn send_frames(&self, iface: &str, frames: &[Vec<u8>], budget: Duration) -> Result<usize> {
        let io_error = |what: &str, source| NetnsError::Io {
            name: self.name.clone(),
            what: what.to_string(),
            source,
        };
        let name =
            std::ffi::CString::new(iface).map_err(|_| NetnsError::BadIfaceName(iface.into()))?;
        self.in_netns(|| {
            // SAFETY: a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            if ifindex == 0 {
                return Err(io_error(
                    &format!("finding {iface}"),
                    io::Error::last_os_error(),
                ));
            }
            // SAFETY: socket returns a new fd or -1.
            let fd =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(io_error("an AF_PACKET socket", io::Error::last_os_error()));
            }
            // SAFETY: fd is fresh and owned here.
            let socket = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: an all-zero sockaddr_ll is valid; the fields set below complete it.
            let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = ifindex as i32;
            addr.sll_halen = 6;
            let started = Instant::now();
            let mut sent = 0;
            for frame in frames {
                if started.elapsed() > budget {
                    break;
                }
                // SAFETY: frame and addr are valid for the lengths given.
                let n = unsafe {
                    libc::sendto(
                        socket.as_raw_fd(),
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&raw const addr).cast(),
                        mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                    )
                };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() == Some(libc::ENOBUFS) {
                        // The veth queue is full: let the receiver catch up.
                        std::thread::sleep(Duration::from_micros(100));
                        continue;
                    }
                    return Err(io_error("sending a raw frame", e));
                }
                sent += 1;
            }
            Ok(sent)
        })?
    }

    /// Runs `f` on a new thread that has entered this namespace and returns
    /// its result; a panic in `f` resumes here. Sockets created in `f` belong
    /// to the namespace for their whole life, whichever thread uses them later.
    pub fn in_netns<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let file = File::open(self.path()).map_err(|source| NetnsError::Enter {
            name: self.name.clone(),
            source,
        })?;
        std::thread::scope(|scope| {
            let thread = scope.spawn(move || {
                // SAFETY: setns on a valid namespace fd; CLONE_NEWNET changes
                // only this thread, which ends when `f` returns.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(NetnsError::Enter {
                        name: self.name.clone(),
                        source: io::Error::last_os_error(),
                    });
                }
                drop(file);
                Ok(f())
            });
            match thread.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Sets a sysctl of this namespace, e.g. `sysctl("net.ipv4.ip_forward", "1")`,
    /// by writing `/proc/sys/...` from a thread inside it (network sysctls are
    /// resolved against the writer's namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = sysctl_path(key);
        self.in_netns(|| std::fs::write(&path, value))?
            .map_err(|source| self.io_error(&format!("writing {}", path.display()), source))
    }

    /// Reads a sysctl of this namespace.
    pub fn sysctl_get(&self, key: &str) -> Result<String> {
        let path = sysctl_path(key);
        self.in_netns(|| std::fs::read_to_string(&path))?
            .map(|v| v.trim().to_owned())
            .map_err(|source| self.io_error(&format!("reading {}", path.display()), source))
    }

    /// `ip route add <dest> via <gateway>` in this namespace.
    pub fn add_route(&self, dest: &str, gateway: Ipv4Addr) -> Result<()> {
        self.ip(&["route", "add", dest, "via", &gateway.to_string()])
            .map(drop)
    }

    /// Attaches an XDP program that passes every frame to `iface`, for the
    /// namespace's lifetime.
    ///
    /// A veth whose peer runs XDP needs this to receive what the peer's
    /// program sends back with `XDP_TX` (netbeast's REJECT replies): the
    /// kernel queues such frames on the receiving veth but schedules its NAPI
    /// only when that veth has an XDP program of its own (`veth_xdp_flush`).
    /// Without one, a reply waits until unrelated traffic arrives. GRO on (see
    /// [`Netns::set_gro`]) is enough for `XDP_REDIRECT`, not for `XDP_TX`.
    pub fn attach_xdp_pass(&self, iface: &str) -> Result<()> {
        check_iface_name(iface)?;
        let link = self
            .in_netns(|| attach_xdp_pass_here(iface))?
            .map_err(|source| {
                self.io_error(&format!("attaching an XDP_PASS program to {iface}"), source)
            })?;
        self.xdp_links
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(link);
        Ok(())
    }

    /// Whether `iface` has an XDP program, in any mode (`ip -d link show`).
    pub fn has_xdp(&self, iface: &str) -> Result<bool> {
        let link = self.ip(&["-d", "link", "show", "dev", iface])?;
        // Whole words only: names (link-netns ...) may contain "xdp" too.
        Ok(link.split_whitespace().any(|word| {
            matches!(word, "xdp" | "xdpgeneric" | "xdpoffload" | "xdpmulti")
                || word.starts_with("prog/xdp")
        }))
    }

    /// Turns GRO on or off for `iface` (the `ethtool -K IFACE gro on` ioctl):
    /// the receiving veth of a benchmark against iptables needs it (DESIGN §8),
    /// and a veth takes `XDP_REDIRECT`ed frames only with NAPI, which GRO
    /// (or an XDP program) turns on.
    pub fn set_gro(&self, iface: &str, on: bool) -> Result<()> {
        check_iface_name(iface)?;
        self.in_netns(|| ethtool_set_value(iface, ETHTOOL_SGRO, on as u32))?
            .map_err(|source| self.io_error(&format!("setting gro on {iface}"), source))
    }

    /// Turns TSO (every TCP segmentation offload) on or off for `iface`
    /// (the `ethtool -K IFACE tso off` ioctl).
    pub fn set_tso(&self, iface: &str, on: bool) -> Result<()> {
        check_iface_name(iface)?;
        self.in_netns(|| ethtool_set_value(iface, ETHTOOL_STSO, on as u32))?
            .map_err(|source| self.io_error(&format!("setting tso on {iface}"), source))
    }

    /// Pids of processes whose network namespace is this one (`ip netns pids`).
    pub fn pids(&self) -> Result<Vec<i32>> {
        let out = run_checked(Command::new("ip").args(["netns", "pids", &self.name]))?;
        Ok(out
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect())
    }

    fn io_error(&self, what: &str, source: io::Error) -> NetnsError {
        NetnsError::Io {
            name: self.name.clone(),
            what: what.to_owned(),
            source,
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Detaches the XDP_PASS programs while their interfaces still exist.
        self.xdp_links
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
        if let Some(binary) = &self.netbeast {
            match run_checked(self.command(binary).args(["detach", "--all"])) {
                Ok(_) => {}
                Err(e) => eprintln!("netns cleanup: {e}"),
            }
        }
        let me = std::process::id() as i32;
        for pid in self.pids().unwrap_or_default() {
            if pid != me {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if let Err(e) = run_checked(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("netns cleanup: {e}");
        }
    }
}

/// Creates a veth pair with one end in each namespace, gives each end its
/// address (`"10.0.0.1/24"`, or an IPv6 one, `"fd00::1/64"`, added
/// `nodad` so that it is usable at once) and brings both up. The pair is
/// created inside `a`, so the root namespace never sees it.
pub fn veth_pair(
    a: &Netns,
    a_iface: &str,
    a_addr: &str,
    b: &Netns,
    b_iface: &str,
    b_addr: &str,
) -> Result<()> {
    check_iface_name(a_iface)?;
    check_iface_name(b_iface)?;
    a.ip(&[
        "link", "add", a_iface, "type", "veth", "peer", "name", b_iface, "netns", &b.name,
    ])?;
    for (ns, iface, addr) in [(a, a_iface, a_addr), (b, b_iface, b_addr)] {
        add_addr(ns, addr, iface)?;
        ns.ip(&["link", "set", iface, "up"])?;
    }
    Ok(())
}

/// Adds `addr` (`"10.0.0.1/24"` or `"fd00::1/64"`) to `iface` in `ns`; an
/// IPv6 address `nodad`, usable at once rather than after duplicate
/// address detection.
pub fn add_addr(ns: &Netns, addr: &str, iface: &str) -> Result<()> {
    let mut args = vec!["addr", "add", addr, "dev", iface];
    if addr.contains(':') {
        args.push("nodad");
    }
    ns.ip(&args)?;
    Ok(())
}

/// Two hosts on one link: `client` ([`CLIENT_IFACE`], [`CLIENT_ADDR`]) and
/// `server` ([`SERVER_IFACE`], [`SERVER_ADDR`]). Fields drop in order:
/// client first, then server (with its netbeast cleanup).
#[derive(Debug)]
pub struct ClientServer {
    pub client: Netns,
    pub server: Netns,
}

impl ClientServer {
    /// Namespaces `nbt-<tag>-c-…` and `nbt-<tag>-s-…`, joined by a veth pair.
    /// The client's veth is bare, as a container's is: netbeast's REJECT
    /// replies must reach it without any program there.
    pub fn new(tag: &str) -> Result<Self> {
        let client = Netns::new(&format!("{tag}-c"))?;
        let server = Netns::new(&format!("{tag}-s"))?;
        veth_pair(
            &client,
            CLIENT_IFACE,
            &format!("{CLIENT_ADDR}/{TOPOLOGY_PREFIX_LEN}"),
            &server,
            SERVER_IFACE,
            &format!("{SERVER_ADDR}/{TOPOLOGY_PREFIX_LEN}"),
        )?;
        Ok(ClientServer { client, server })
    }

    /// The server's address and `port`.
    pub fn server_addr(&self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(SERVER_ADDR, port)
    }
}

// ---------------------------------------------------------------------------
// Servers

/// Wakes a server thread blocked in poll(2) when its handle is dropped, so
/// servers neither spin nor wait for a timeout to stop.
#[derive(Debug)]
struct StopSignal(OwnedFd);

impl StopSignal {
    fn new() -> io::Result<Self> {
        // SAFETY: eventfd returns a new fd or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        Ok(StopSignal(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn raise(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our own eventfd.
        unsafe { libc::write(self.0.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Blocks until `fd` is readable (true) or the stop signal is raised (false).
    fn wait_readable(&self, fd: RawFd) -> bool {
        let mut fds = [
            libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        loop {
            // SAFETY: fds is a valid array of two pollfd.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return false;
            }
            if fds[1].revents != 0 {
                return false;
            }
            if fds[0].revents != 0 {
                return true;
            }
        }
    }
}

/// A running server; stops (and joins its thread) on drop.
#[derive(Debug)]
pub struct Server {
    local: SocketAddr,
    served: Arc<AtomicU64>,
    stop: Arc<StopSignal>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Connections accepted (TCP) or datagrams echoed (UDP) so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }

    /// [`Server::served`] once it reaches `count`, or when `timeout` passes.
    /// The server thread accepts a moment after the client's connect returns,
    /// so a test reads this rather than [`Server::served`] right away.
    pub fn served_within(&self, count: u64, timeout: Duration) -> u64 {
        wait_for(timeout, || {
            let served = self.served();
            (served >= count).then_some(served)
        })
        .unwrap_or_else(|| self.served())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.raise();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The first line a [`tcp_server`] sends on every connection.
pub fn banner(port: u16) -> String {
    format!("netbeast test server on port {port}\n")
}

/// Listens on `0.0.0.0:port` in `ns`; every connection gets [`banner`] and is
/// closed. One thread, one connection at a time: bounded however hard a test
/// pushes.
pub fn tcp_server(ns: &Netns, port: u16) -> Result<Server> {
    let listener = ns
        .in_netns(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))?
        .map_err(|source| ns.io_error(&format!("listening on tcp port {port}"), source))?;
    let setup = || -> io::Result<(SocketAddr, StopSignal)> {
        listener.set_nonblocking(true)?;
        Ok((listener.local_addr()?, StopSignal::new()?))
    };
    let (local, stop) =
        setup().map_err(|source| ns.io_error("setting up the tcp server", source))?;
    let stop = Arc::new(stop);
    let served = Arc::new(AtomicU64::new(0));
    let (thread_stop, thread_served) = (stop.clone(), served.clone());
    let message = banner(local.port());
    let thread = std::thread::Builder::new()
        .name(format!("nbt-tcp-{}", local.port()))
        .spawn(move || {
            while thread_stop.wait_readable(listener.as_raw_fd()) {
                // Nonblocking: a connection that was reset before accept
                // leaves poll readable but accept empty-handed.
                let Ok((mut stream, _)) = listener.accept() else {
                    continue;
                };
                thread_served.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = stream.write_all(message.as_bytes());
            }
        })
        .map_err(|source| ns.io_error("starting the tcp server thread", source))?;
    Ok(Server {
        local,
        served,
        stop,
        thread: Some(thread),
    })
}

/// Echoes every datagram received on `0.0.0.0:port` in `ns` back to its sender.
pub fn udp_echo_server(ns: &Netns, port: u16) -> Result<Server> {
    let socket = ns
        .in_netns(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)))?
        .map_err(|source| ns.io_error(&format!("binding udp port {port}"), source))?;
    let setup = || -> io::Result<(SocketAddr, StopSignal)> {
        socket.set_nonblocking(true)?;
        Ok((socket.local_addr()?, StopSignal::new()?))
    };
    let (local, stop) =
        setup().map_err(|source| ns.io_error("setting up the udp server", source))?;
    let stop = Arc::new(stop);
    let served = Arc::new(AtomicU64::new(0));
    let (thread_stop, thread_served) = (stop.clone(), served.clone());
    let thread = std::thread::Builder::new()
        .name(format!("nbt-udp-{}", local.port()))
        .spawn(move || {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while thread_stop.wait_readable(socket.as_raw_fd()) {
                while let Ok((len, peer)) = socket.recv_from(&mut buf) {
                    thread_served.fetch_add(1, Ordering::SeqCst);
                    let _ = socket.send_to(&buf[..len], peer);
                }
            }
        })
        .map_err(|source| ns.io_error("starting the udp server thread", source))?;
    Ok(Server {
        local,
        served,
        stop,
        thread: Some(thread),
    })
}

/// The line a [`peer_server`] or [`udp_peer_server`] answers with first:
/// the client's address and port as the server saw them, so a test behind
/// NAT can check what the translation made of the client.
pub fn peer_line(peer: SocketAddr) -> String {
    format!("{peer}\n")
}

/// The IPv4 peer address at the start of `text`, as [`peer_line`] wrote
/// it ([`parse_peer_addr`] for either family).
pub fn parse_peer_line(text: &[u8]) -> Option<SocketAddrV4> {
    match parse_peer_addr(text)? {
        SocketAddr::V4(addr) => Some(addr),
        SocketAddr::V6(_) => None,
    }
}

/// The peer address (IPv4 or IPv6) at the start of `text`, as
/// [`peer_line`] wrote it.
pub fn parse_peer_addr(text: &[u8]) -> Option<SocketAddr> {
    let end = text.iter().position(|&b| b == b'\n')?;
    std::str::from_utf8(&text[..end]).ok()?.parse().ok()
}

/// Listens on `bind` in `ns` (`0.0.0.0:port`, or one address such as
/// `127.0.0.1:port`, or an IPv6 one); every connection first gets the
/// [`peer_line`] of its client, then an echo of whatever it sends until it
/// closes. One thread per connection, so several clients can hold
/// connections at once.
pub fn peer_server(ns: &Netns, bind: impl Into<SocketAddr>) -> Result<Server> {
    let bind = bind.into();
    let listener = ns
        .in_netns(|| TcpListener::bind(bind))?
        .map_err(|source| ns.io_error(&format!("listening on tcp {bind}"), source))?;
    let setup = || -> io::Result<(SocketAddr, StopSignal)> {
        listener.set_nonblocking(true)?;
        Ok((listener.local_addr()?, StopSignal::new()?))
    };
    let (local, stop) =
        setup().map_err(|source| ns.io_error("setting up the tcp peer server", source))?;
    let stop = Arc::new(stop);
    let served = Arc::new(AtomicU64::new(0));
    let (thread_stop, thread_served) = (stop.clone(), served.clone());
    let thread = std::thread::Builder::new()
        .name(format!("nbt-peer-{}", local.port()))
        .spawn(move || {
            let mut workers = Vec::new();
            while thread_stop.wait_readable(listener.as_raw_fd()) {
                let Ok((stream, peer)) = listener.accept() else {
                    continue;
                };
                thread_served.fetch_add(1, Ordering::SeqCst);
                let stop = thread_stop.clone();
                workers.push(std::thread::spawn(move || peer_echo(stream, peer, &stop)));
            }
            for worker in workers {
                let _ = worker.join();
            }
        })
        .map_err(|source| ns.io_error("starting the tcp peer server thread", source))?;
    Ok(Server {
        local,
        served,
        stop,
        thread: Some(thread),
    })
}

/// How long a server waits for a client that does not read its answers.
const SERVER_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

fn peer_echo(mut stream: std::net::TcpStream, peer: SocketAddr, stop: &StopSignal) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(SERVER_WRITE_TIMEOUT));
    if stream.write_all(peer_line(peer).as_bytes()).is_err() {
        return;
    }
    let mut buf = vec![0u8; 16 * 1024];
    while stop.wait_readable(stream.as_raw_fd()) {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Clients

/// An ICMP error as the client's kernel received it (read from the socket's
/// error queue with `IP_RECVERR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpError {
    pub icmp_type: u8,
    pub code: u8,
}

impl IcmpError {
    pub const NET_UNREACHABLE: IcmpError = IcmpError::unreachable(0);
    pub const HOST_UNREACHABLE: IcmpError = IcmpError::unreachable(1);
    pub const PROTOCOL_UNREACHABLE: IcmpError = IcmpError::unreachable(2);
    pub const PORT_UNREACHABLE: IcmpError = IcmpError::unreachable(3);
    pub const NET_PROHIBITED: IcmpError = IcmpError::unreachable(9);
    pub const HOST_PROHIBITED: IcmpError = IcmpError::unreachable(10);
    pub const ADMIN_PROHIBITED: IcmpError = IcmpError::unreachable(13);
    /// ICMPv6 destination unreachable (type 1), port unreachable (code 4).
    pub const PORT_UNREACHABLE6: IcmpError = IcmpError {
        icmp_type: 1,
        code: 4,
    };

    const fn unreachable(code: u8) -> IcmpError {
        IcmpError { icmp_type: 3, code }
    }
}

impl fmt::Display for IcmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The names iptables' --reject-with uses.
        let name = match (self.icmp_type, self.code) {
            (3, 0) => "net-unreachable",
            (3, 1) => "host-unreachable",
            (3, 2) => "proto-unreachable",
            (3, 3) => "port-unreachable",
            (3, 9) => "net-prohibited",
            (3, 10) => "host-prohibited",
            (3, 13) => "admin-prohibited",
            (1, 4) => return write!(f, "icmp6 port-unreachable"),
            (t, c) => return write!(f, "icmp type {t} code {c}"),
        };
        write!(f, "icmp {name}")
    }
}

/// What a TCP client saw when it tried to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectOutcome {
    /// The handshake completed.
    Connected,
    /// ECONNREFUSED with no ICMP error queued: a TCP RST answered the SYN
    /// (a closed port, or REJECT --reject-with tcp-reset).
    Reset,
    /// ECONNREFUSED caused by an ICMP error (REJECT's default, port-unreachable).
    Refused(IcmpError),
    /// EHOSTUNREACH, ENETUNREACH and kin; the ICMP error that caused it, if any.
    Unreachable { errno: i32, icmp: Option<IcmpError> },
    /// No answer within the timeout: the SYN (or its answer) was dropped.
    TimedOut,
    /// Anything else, as the OS describes it.
    Error(String),
}

impl ConnectOutcome {
    /// What `connect` reports as "connection refused": a reset or an ICMP
    /// port-unreachable.
    pub fn is_refused(&self) -> bool {
        matches!(self, ConnectOutcome::Reset | ConnectOutcome::Refused(_))
    }

    fn from_errno(errno: i32, icmp: Option<IcmpError>) -> Self {
        match errno {
            libc::ECONNREFUSED => match icmp {
                Some(icmp) => ConnectOutcome::Refused(icmp),
                None => ConnectOutcome::Reset,
            },
            libc::ECONNRESET => ConnectOutcome::Reset,
            libc::ETIMEDOUT => ConnectOutcome::TimedOut,
            libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::EACCES
            | libc::EPERM
            | libc::ENOPROTOOPT => ConnectOutcome::Unreachable { errno, icmp },
            _ => ConnectOutcome::Error(io::Error::from_raw_os_error(errno).to_string()),
        }
    }
}

impl fmt::Display for ConnectOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectOutcome::Connected => write!(f, "connected"),
            ConnectOutcome::Reset => write!(f, "refused (tcp reset)"),
            ConnectOutcome::Refused(icmp) => write!(f, "refused ({icmp})"),
            ConnectOutcome::Unreachable { errno, icmp } => {
                write!(f, "{}", io::Error::from_raw_os_error(*errno))?;
                match icmp {
                    Some(icmp) => write!(f, " ({icmp})"),
                    None => Ok(()),
                }
            }
            ConnectOutcome::TimedOut => write!(f, "timed out (no answer)"),
            ConnectOutcome::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// Connects from `ns` to `addr` and classifies the result; `timeout` bounds
/// the whole attempt (use ~1 s: a dropped SYN then costs one second).
pub fn tcp_connect(ns: &Netns, addr: SocketAddrV4, timeout: Duration) -> Result<ConnectOutcome> {
    ns.in_netns(|| connect_here(addr, timeout))
}

/// [`tcp_connect`] to several addresses at once, so a test with many dropped
/// ports waits one timeout, not one per port. Outcomes are in `addrs` order.
pub fn tcp_connect_all(
    ns: &Netns,
    addrs: &[SocketAddrV4],
    timeout: Duration,
) -> Result<Vec<ConnectOutcome>> {
    ns.in_netns(|| {
        // Threads spawned here share this thread's network namespace.
        std::thread::scope(|scope| {
            let attempts: Vec<_> = addrs
                .iter()
                .map(|&addr| scope.spawn(move || connect_here(addr, timeout)))
                .collect();
            attempts
                .into_iter()
                .map(|a| a.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    })
}

/// A TCP connection from `ns` (bound to `local` when given) to `addr`
/// (IPv4 or IPv6), blocking, for a test that keeps it open and talks on it;
/// Err is what the client saw when no connection came up. The socket stays
/// in `ns`.
pub fn tcp_stream<A: Into<SocketAddr>>(
    ns: &Netns,
    local: Option<A>,
    addr: A,
    timeout: Duration,
) -> Result<Result<std::net::TcpStream, ConnectOutcome>> {
    let (local, addr) = (local.map(Into::into), addr.into());
    ns.in_netns(|| {
        let socket = match connect_socket(local, addr, timeout) {
            Ok(Ok(socket)) => socket,
            Ok(Err(outcome)) => return Err(outcome),
            Err(e) => return Err(ConnectOutcome::Error(e.to_string())),
        };
        let stream = std::net::TcpStream::from(socket);
        stream
            .set_nonblocking(false)
            .map_err(|e| ConnectOutcome::Error(e.to_string()))?;
        Ok(stream)
    })
}

/// Reads the [`peer_line`] a [`peer_server`] sends first on `stream`,
/// within `timeout`: an IPv4 address ([`read_peer_addr`] for either family).
pub fn read_peer_line(
    stream: &mut std::net::TcpStream,
    timeout: Duration,
) -> Result<SocketAddrV4, String> {
    match read_peer_addr(stream, timeout)? {
        SocketAddr::V4(addr) => Ok(addr),
        SocketAddr::V6(addr) => Err(format!("not a peer line: {:?}", peer_line(addr.into()))),
    }
}

/// [`read_peer_line`] for a server of either family.
pub fn read_peer_addr(
    stream: &mut std::net::TcpStream,
    timeout: Duration,
) -> Result<SocketAddr, String> {
    let deadline = Instant::now() + timeout;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte: whatever follows the line belongs to the caller.
    while line.last() != Some(&b'\n') {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no peer line within {timeout:?} (got {:?})",
                String::from_utf8_lossy(&line)
            ));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut byte) {
            Ok(0) => {
                return Err(format!(
                    "closed before a peer line (got {:?})",
                    String::from_utf8_lossy(&line)
                ));
            }
            Ok(_) => line.push(byte[0]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("reading the peer line: {e}")),
        }
    }
    parse_peer_addr(&line)
        .ok_or_else(|| format!("not a peer line: {:?}", String::from_utf8_lossy(&line)))
}

fn connect_here(addr: SocketAddrV4, timeout: Duration) -> ConnectOutcome {
    match connect_socket(None, addr.into(), timeout) {
        Ok(Ok(_connected)) => ConnectOutcome::Connected,
        Ok(Err(outcome)) => outcome,
        Err(e) => ConnectOutcome::Error(e.to_string()),
    }
}

/// A nonblocking connect with IP_RECVERR set, so that after a failure the
/// error queue tells an ICMP port-unreachable from a TCP reset (both are
/// ECONNREFUSED to connect(2)). Ok(Ok) is the connected, nonblocking socket.
/// With `local`, the socket is bound there first (SO_REUSEADDR, so a port
/// in TIME_WAIT from an earlier test step is no obstacle).
fn connect_socket(
    local: Option<SocketAddr>,
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<Result<OwnedFd, ConnectOutcome>> {
    let deadline = Instant::now() + timeout;
    let family = if addr.is_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    // SAFETY: socket returns a new fd or -1.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    set_recverr(socket.as_raw_fd(), addr.is_ipv6())?;
    if let Some(local) = local {
        bind_reusable(socket.as_raw_fd(), local)?;
    }
    let (sa, len) = sockaddr(addr);
    // SAFETY: sa holds a valid sockaddr of length len.
    let rc = unsafe { libc::connect(socket.as_raw_fd(), (&raw const sa).cast(), len) };
    let errno = if rc == 0 {
        0
    } else {
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINPROGRESS) => {
                if !poll_until(socket.as_raw_fd(), libc::POLLOUT, deadline)? {
                    return Ok(Err(ConnectOutcome::TimedOut));
                }
                socket_error(socket.as_raw_fd())?
            }
            errno => errno.unwrap_or(libc::EIO),
        }
    };
    if errno == 0 {
        return Ok(Ok(socket));
    }
    let icmp = read_icmp_error(socket.as_raw_fd());
    Ok(Err(ConnectOutcome::from_errno(errno, icmp)))
}

fn bind_reusable(fd: RawFd, local: SocketAddr) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: passes a valid c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&raw const on).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let (sa, len) = sockaddr(local);
    // SAFETY: sa holds a valid sockaddr of length len.
    let rc = unsafe { libc::bind(fd, (&raw const sa).cast(), len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Queues ICMP (`ipv6`: ICMPv6) errors on the socket for [`read_icmp_error`].
fn set_recverr(fd: RawFd, ipv6: bool) -> io::Result<()> {
    let on: libc::c_int = 1;
    let (level, option) = if ipv6 {
        (libc::SOL_IPV6, libc::IPV6_RECVERR)
    } else {
        (libc::SOL_IP, libc::IP_RECVERR)
    };
    // SAFETY: passes a valid c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            option,
            (&raw const on).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn socket_error(fd: RawFd) -> io::Result<i32> {
    let mut err: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: err and len are valid for writing.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut err).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(err)
}

/// Waits until `fd` has one of `events`; false when `deadline` passes first.
fn poll_until(fd: RawFd, events: libc::c_short, deadline: Instant) -> io::Result<bool> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: pfd is a valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n > 0 {
            return Ok(true);
        }
    }
}

/// The ICMP error queued on a socket with IP_RECVERR, if there is one.
fn read_icmp_error(fd: RawFd) -> Option<IcmpError> {
    let mut data = [0u8; 512];
    let mut control = [0u64; 64]; // u64 for cmsg alignment
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid; the fields set below point to live buffers.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control) as _;
    // SAFETY: msg describes valid buffers; MSG_ERRQUEUE never blocks.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if n < 0 {
        return None;
    }
    // SAFETY: walking the control buffer the kernel just filled, with the libc macros.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let (level, kind) = ((*cmsg).cmsg_level, (*cmsg).cmsg_type);
            if (level, kind) == (libc::SOL_IP, libc::IP_RECVERR)
                || (level, kind) == (libc::SOL_IPV6, libc::IPV6_RECVERR)
            {
                let ee = libc::CMSG_DATA(cmsg) as *const libc::sock_extended_err;
                let ee = std::ptr::read_unaligned(ee);
                if ee.ee_origin == libc::SO_EE_ORIGIN_ICMP
                    || ee.ee_origin == libc::SO_EE_ORIGIN_ICMP6
                {
                    return Some(IcmpError {
                        icmp_type: ee.ee_type,
                        code: ee.ee_code,
                    });
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    None
}

/// `addr` as the kernel takes it: a sockaddr_in or sockaddr_in6 in a
/// sockaddr_storage, and its length.
fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(addr) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: addr.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*addr.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(addr) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: addr.port().to_be(),
                sin6_flowinfo: addr.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: addr.ip().octets(),
                },
                sin6_scope_id: addr.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

// ---------------------------------------------------------------------------
// A firewall on one host of a topology

/// What filters a host's traffic in a scenario: netbeast, or the kernel's own
/// iptables as the oracle. Scenarios drive both with the same iptables
/// command lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firewall {
    /// netbeast attached (XDP) to the host's interfaces; `attach` gets
    /// `attach_args` after the interfaces (e.g. `--mode skb`).
    Netbeast {
        binary: PathBuf,
        attach_args: Vec<String>,
    },
    /// The kernel's own iptables in the host's namespace: the oracle. What it
    /// does with a scenario is what netbeast must do.
    Iptables,
}

impl Firewall {
    /// netbeast attached in its default mode.
    pub fn netbeast(binary: impl Into<PathBuf>) -> Self {
        Firewall::Netbeast {
            binary: binary.into(),
            attach_args: Vec::new(),
        }
    }

    /// netbeast attached with extra `attach` arguments, e.g. `["--mode", "skb"]`.
    pub fn netbeast_with(binary: impl Into<PathBuf>, attach_args: &[&str]) -> Self {
        Firewall::Netbeast {
            binary: binary.into(),
            attach_args: attach_args.iter().map(|a| a.to_string()).collect(),
        }
    }

    pub fn is_netbeast(&self) -> bool {
        matches!(self, Firewall::Netbeast { .. })
    }

    /// Makes `host` clean up after this firewall when it drops (netbeast:
    /// `detach --all`; iptables rules go with the namespace).
    pub fn guard(&self, host: Netns) -> Netns {
        match self {
            Firewall::Netbeast { binary, .. } => host.with_netbeast(binary),
            Firewall::Iptables => host,
        }
    }

    /// Attaches netbeast to `ifaces` of `host` (a no-op for iptables, which
    /// sees every interface). `host` must come from [`Firewall::guard`].
    pub fn attach(&self, host: &Netns, ifaces: &[&str]) -> Result<()> {
        if let Firewall::Netbeast { attach_args, .. } = self {
            let mut args = vec!["attach"];
            args.extend_from_slice(ifaces);
            args.extend(attach_args.iter().map(String::as_str));
            host.netbeast_ok(&args)?;
        }
        Ok(())
    }

    /// One iptables command line in `host`, without the leading `iptables`
    /// (`"-A INPUT -p tcp --dport 22 -j ACCEPT"`), split on whitespace; any
    /// exit status.
    pub fn iptables(&self, host: &Netns, line: &str) -> Result<Output> {
        match self {
            Firewall::Netbeast { .. } => host.netbeast_iptables(line),
            Firewall::Iptables => {
                let args: Vec<&str> = line.split_whitespace().collect();
                host.run("iptables", &args)
            }
        }
    }

    /// Like [`Firewall::iptables`], but the command must succeed; returns stdout.
    pub fn iptables_ok(&self, host: &Netns, line: &str) -> Result<String> {
        let output = self.iptables(host, line)?;
        checked(format!("iptables {line} (in {})", host.name()), output)
    }

    /// [`Firewall::iptables_ok`] with ip6tables: `netbeast ip6tables
    /// LINE` or the kernel's `ip6tables LINE`.
    pub fn ip6tables_ok(&self, host: &Netns, line: &str) -> Result<String> {
        let args: Vec<&str> = line.split_whitespace().collect();
        let output = match self {
            Firewall::Netbeast { .. } => {
                let argv: Vec<&str> = ["ip6tables"].into_iter().chain(args).collect();
                host.netbeast(&argv)?
            }
            Firewall::Iptables => host.run("ip6tables", &args)?,
        };
        checked(format!("ip6tables {line} (in {})", host.name()), output)
    }

    /// The ruleset of `host` in iptables-save format (`netbeast save`,
    /// `iptables-save -t filter`).
    pub fn save(&self, host: &Netns) -> Result<String> {
        match self {
            Firewall::Netbeast { .. } => host.netbeast_ok(&["save"]),
            Firewall::Iptables => host.run_ok("iptables-save", &["-t", "filter"]),
        }
    }

    /// `netbeast restore ARGS` / `iptables-restore ARGS` in `host`, with
    /// `input` on stdin; any exit status.
    pub fn restore(&self, host: &Netns, args: &[&str], input: &str) -> Result<Output> {
        self.restore_family(host, false, args, input)
    }

    /// [`Firewall::restore`] of the IPv6 ruleset with `v6`: `netbeast
    /// restore -6 ARGS` / `ip6tables-restore ARGS`.
    pub fn restore_family(
        &self,
        host: &Netns,
        v6: bool,
        args: &[&str],
        input: &str,
    ) -> Result<Output> {
        match self {
            Firewall::Netbeast { .. } => {
                let mut argv = vec!["restore"];
                if v6 {
                    argv.push("-6");
                }
                argv.extend_from_slice(args);
                host.netbeast_with_input(&argv, input)
            }
            Firewall::Iptables => {
                let program = if v6 {
                    "ip6tables-restore"
                } else {
                    "iptables-restore"
                };
                let mut command = host.command(program);
                command.args(args);
                with_input(command, input)
            }
        }
    }

    /// Every table of `host`'s IPv4 ruleset (IPv6 with `v6`), with counters
    /// when `counters`, as `iptables-save [-c]` (`ip6tables-save [-c]`)
    /// prints it.
    pub fn save_all(&self, host: &Netns, v6: bool, counters: bool) -> Result<String> {
        let mut args = Vec::new();
        if v6 && self.is_netbeast() {
            args.push("-6");
        }
        if counters {
            args.push("-c");
        }
        match (self, v6) {
            (Firewall::Netbeast { .. }, _) => {
                args.insert(0, "save");
                host.netbeast_ok(&args)
            }
            (Firewall::Iptables, false) => host.run_ok("iptables-save", &args),
            (Firewall::Iptables, true) => host.run_ok("ip6tables-save", &args),
        }
    }

    /// Chain `chain` of `iptables -L CHAIN -v -x -n --line-numbers` in `host`.
    pub fn list(&self, host: &Netns, chain: &str) -> Result<ListedChain> {
        let line = format!("-L {chain} -v -x -n --line-numbers");
        let text = self.iptables_ok(host, &line)?;
        parse_listing(&text, chain).ok_or_else(|| NetnsError::CommandFailed {
            command: format!("iptables {line}"),
            status: ExitStatus::default(),
            stdout: text.clone(),
            stderr: format!("unreadable listing of chain {chain}:\n{text}"),
        })
    }
}

/// A [`ClientServer`] pair whose server is guarded by a [`Firewall`]
/// attached to [`SERVER_IFACE`].
#[derive(Debug)]
pub struct Testbed {
    pub net: ClientServer,
    pub firewall: Firewall,
}

impl Testbed {
    /// Builds the pair and attaches the firewall to the server's veth; with
    /// netbeast, dropping the testbed runs `detach --all` in the server.
    pub fn new(tag: &str, firewall: Firewall) -> Result<Self> {
        let ClientServer { client, server } = ClientServer::new(tag)?;
        let net = ClientServer {
            client,
            server: firewall.guard(server),
        };
        firewall.attach(&net.server, &[SERVER_IFACE])?;
        Ok(Testbed { net, firewall })
    }

    pub fn client(&self) -> &Netns {
        &self.net.client
    }

    pub fn server(&self) -> &Netns {
        &self.net.server
    }

    /// [`Firewall::iptables`] in the server.
    pub fn iptables(&self, line: &str) -> Result<Output> {
        self.firewall.iptables(&self.net.server, line)
    }

    /// [`Firewall::iptables_ok`] in the server.
    pub fn iptables_ok(&self, line: &str) -> Result<String> {
        self.firewall.iptables_ok(&self.net.server, line)
    }

    /// [`Firewall::save`] of the server.
    pub fn save(&self) -> Result<String> {
        self.firewall.save(&self.net.server)
    }

    /// [`Firewall::restore`] in the server.
    pub fn restore(&self, args: &[&str], input: &str) -> Result<Output> {
        self.firewall.restore(&self.net.server, args, input)
    }

    /// [`Firewall::list`] of the server.
    pub fn list(&self, chain: &str) -> Result<ListedChain> {
        self.firewall.list(&self.net.server, chain)
    }

    /// Connects from the client to each server port at once.
    pub fn connect(&self, ports: &[u16], timeout: Duration) -> Result<Vec<ConnectOutcome>> {
        let addrs: Vec<_> = ports.iter().map(|&p| self.net.server_addr(p)).collect();
        tcp_connect_all(&self.net.client, &addrs, timeout)
    }
}

/// Polls `probe` every few milliseconds until it returns Some or `timeout`
/// passes; for effects that land asynchronously (counters of packets still
/// in flight).
pub fn wait_for<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Reading `iptables -L -v -x -n` listings

/// One chain of an `iptables -L -v -x -n [--line-numbers]` listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedChain {
    pub name: String,
    /// `ACCEPT`/`DROP` for built-in chains; None for user chains.
    pub policy: Option<String>,
    pub policy_packets: u64,
    pub policy_bytes: u64,
    pub rules: Vec<ListedRule>,
}

/// One rule line of a verbose listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRule {
    pub packets: u64,
    pub bytes: u64,
    pub target: String,
    /// The whole line, for messages.
    pub line: String,
}

/// Finds chain `name` in a verbose, exact (`-v -x`) listing and reads its
/// counters. None when the chain is missing or the listing is not verbose.
pub fn parse_listing(listing: &str, name: &str) -> Option<ListedChain> {
    let mut lines = listing.lines();
    let header = lines.find(|l| l.split_whitespace().nth(1) == Some(name))?;
    // "Chain INPUT (policy ACCEPT 3 packets, 180 bytes)" / "Chain X (1 references)"
    let words: Vec<&str> = header
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    let (policy, policy_packets, policy_bytes) = match words.as_slice() {
        [
            "Chain",
            _,
            "policy",
            policy,
            packets,
            "packets",
            bytes,
            "bytes",
            ..,
        ] => (
            Some((*policy).to_owned()),
            packets.parse().ok()?,
            bytes.parse().ok()?,
        ),
        ["Chain", ..] => (None, 0, 0),
        _ => return None,
    };
    let columns: Vec<&str> = lines.next()?.split_whitespace().collect();
    let numbered = columns.first() == Some(&"num");
    let skip = usize::from(numbered);
    if columns.get(skip) != Some(&"pkts") {
        return None;
    }
    let mut rules = Vec::new();
    for line in lines.take_while(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        rules.push(ListedRule {
            packets: fields.get(skip)?.parse().ok()?,
            bytes: fields.get(skip + 1)?.parse().ok()?,
            target: fields.get(skip + 2)?.to_string(),
            line: line.to_owned(),
        });
    }
    Some(ListedChain {
        name: name.to_owned(),
        policy,
        policy_packets,
        policy_bytes,
        rules,
    })
}

// ---------------------------------------------------------------------------
// Small helpers

fn check_iface_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > MAX_IFACE_NAME_LEN
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(NetnsError::BadIfaceName(name.to_owned()));
    }
    Ok(())
}

fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `command` with `input` on its stdin; any exit status.
fn with_input(mut command: Command, input: &str) -> Result<Output> {
    let text = describe(&command);
    let spawn_error = |source| NetnsError::Spawn {
        command: text.clone(),
        source,
    };
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    // Written from a thread: a child that prints a lot before reading all of
    // its input would otherwise deadlock against us.
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_owned();
    let writer = std::thread::spawn(move || {
        // The child may exit early on bad input; a broken pipe is its answer.
        let _ = stdin.write_all(input.as_bytes());
    });
    let output = child.wait_with_output().map_err(spawn_error)?;
    let _ = writer.join();
    Ok(output)
}

fn run_output(command: &mut Command) -> Result<Output> {
    command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetnsError::Spawn {
            command: describe(command),
            source,
        })
}

fn run_checked(command: &mut Command) -> Result<String> {
    let output = run_output(command)?;
    checked(describe(command), output)
}

/// stdout of a command that succeeded; its stderr in the error otherwise.
fn checked(command: String, output: Output) -> Result<String> {
    if !output.status.success() {
        return Err(NetnsError::CommandFailed {
            command,
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Deletes namespaces this module named (`nbt-<tag>-<pid>-<n>`) whose
/// process is gone: a test killed by a timeout or SIGKILL could not run its
/// guards. A namespace of a live process, or named any other way, is kept.
fn remove_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir(NETNS_RUN_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
            continue;
        };
        let mut parts = rest.rsplitn(3, '-');
        let (Some(n), Some(pid), Some(_tag)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(_), Ok(pid)) = (n.parse::<u32>(), pid.parse::<u32>()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_PASS: i32 = 2;

/// The leading fields of `union bpf_attr` for BPF_PROG_LOAD; the kernel
/// zero-fills the rest.
#[repr(C)]
#[derive(Default)]
struct BpfProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The leading fields of `union bpf_attr` for BPF_LINK_CREATE.
#[repr(C)]
#[derive(Default)]
struct BpfLinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: attr is a live, initialized bpf_attr prefix of the given size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<libc::c_void>(),
            mem::size_of::<T>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Loads `r0 = XDP_PASS; exit` and attaches it to `iface` of the calling
/// thread's namespace with a BPF link; closing the link detaches it.
fn attach_xdp_pass_here(iface: &str) -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(iface).map_err(io::Error::other)?;
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    // struct bpf_insn: code, dst_reg | src_reg << 4, off, imm.
    #[repr(C)]
    struct Insn(u8, u8, i16, i32);
    let program = [
        Insn(0xb7, 0, 0, XDP_PASS), // BPF_ALU64 | BPF_MOV | BPF_K: r0 = XDP_PASS
        Insn(0x95, 0, 0, 0),        // BPF_JMP | BPF_EXIT
    ];
    let license = c"GPL";
    let mut prog_name = [0u8; 16];
    prog_name[..8].copy_from_slice(b"nbt_pass");
    let mut load = BpfProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: program.len() as u32,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name,
        expected_attach_type: BPF_XDP,
        ..Default::default()
    };
    let prog = bpf(BPF_PROG_LOAD, &mut load)?;
    let mut link = BpfLinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: 0,
    };
    bpf(BPF_LINK_CREATE, &mut link)
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_STSO: u32 = 0x0000_001f;
const ETHTOOL_SGRO: u32 = 0x0000_002c;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with the `ifr_data` member of its union (40 bytes on 64-bit).
#[repr(C)]
struct IfreqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// One ethtool "set value" ioctl on `iface` of the calling thread's namespace.
fn ethtool_set_value(iface: &str, cmd: u32, data: u32) -> io::Result<()> {
    let mut value = EthtoolValue { cmd, data };
    let mut ifr = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: (&raw mut value).cast(),
        _pad: [0; 16],
    };
    ifr.name[..iface.len()].copy_from_slice(iface.as_bytes());
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    // SAFETY: ifr points to a live ethtool_value for the duration of the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCETHTOOL as _, &raw mut ifr) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(1);

    #[test]
    fn names_are_unique_and_namespace_is_removed_on_drop() {
        require_root();
        let a = Netns::new("unit").unwrap();
        let b = Netns::new("unit").unwrap();
        assert_ne!(a.name(), b.name());
        assert!(a.name().starts_with("nbt-unit-"), "{}", a.name());
        let path = a.path();
        assert!(path.exists());
        // lo is up inside a fresh namespace.
        let lo = a.ip(&["-o", "link", "show", "lo"]).unwrap();
        assert!(lo.contains("UP"), "lo is not up: {lo}");
        drop(a);
        assert!(!path.exists(), "{} still exists after drop", path.display());
        assert!(b.path().exists(), "dropping one namespace removed another");
    }

    #[test]
    fn namespace_is_removed_when_a_test_panics() {
        require_root();
        let mut path = PathBuf::new();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let ns = Netns::new("unit-panic").unwrap();
            path = ns.path();
            panic!("on purpose");
        }));
        assert!(result.is_err());
        assert!(!path.as_os_str().is_empty());
        assert!(!path.exists(), "{} survived the panic", path.display());
    }

    #[test]
    fn drop_kills_processes_left_in_the_namespace() {
        require_root();
        let ns = Netns::new("unit-pids").unwrap();
        let child = ns.command("sleep").arg("30").spawn().unwrap();
        // `ip netns exec` execs sleep, so the child's pid ends up in the namespace.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ns.pids().unwrap().contains(&(child.id() as i32)) {
            assert!(
                Instant::now() < deadline,
                "sleep never entered the namespace"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut child = child;
        drop(ns);
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn id_is_the_inode_seen_from_inside() {
        require_root();
        let ns = Netns::new("unit-id").unwrap();
        let inside = ns
            .in_netns(|| std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino()))
            .unwrap()
            .unwrap();
        assert_eq!(ns.id().unwrap(), inside);
        let root = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        assert_ne!(inside, root, "in_netns did not leave the root namespace");
    }

    #[test]
    fn veth_pair_carries_tcp_and_udp_between_namespaces() {
        require_root();
        let net = ClientServer::new("unit-veth").unwrap();
        let tcp = tcp_server(&net.server, 5000).unwrap();
        let udp = udp_echo_server(&net.server, 5001).unwrap();

        let outcome = tcp_connect(&net.client, net.server_addr(5000), TIMEOUT).unwrap();
        assert_eq!(outcome, ConnectOutcome::Connected);
        let text = tcp_banner(&net.client, net.server_addr(5000), TIMEOUT).unwrap();
        assert_eq!(text, Ok(banner(5000)));
        assert_eq!(tcp.served_within(2, TIMEOUT), 2);

        let reply = udp_exchange(&net.client, net.server_addr(5001), b"ping", TIMEOUT).unwrap();
        assert_eq!(reply, UdpOutcome::Reply(b"ping".to_vec()));
        assert_eq!(udp.served_within(1, TIMEOUT), 1);

        // The client's namespace has no server: the address is not even local there.
        let outcome =
            tcp_connect(&net.client, SocketAddrV4::new(CLIENT_ADDR, 5000), TIMEOUT).unwrap();
        assert_eq!(outcome, ConnectOutcome::Reset);
    }

    #[test]
    fn peer_servers_report_the_client_address_they_saw() {
        require_root();
        let net = ClientServer::new("unit-peer").unwrap();
        let _tcp = peer_server(&net.server, net.server_addr(5000)).unwrap();
        let _udp = udp_peer_server(&net.server, net.server_addr(5001)).unwrap();
        let local = SocketAddrV4::new(CLIENT_ADDR, 40000);

        let mut first = tcp_stream(&net.client, Some(local), net.server_addr(5000), TIMEOUT)
            .unwrap()
            .unwrap();
        assert_eq!(read_peer_line(&mut first, TIMEOUT), Ok(local));
        // A second connection while the first is open: each has its thread.
        let mut second = tcp_stream(&net.client, None, net.server_addr(5000), TIMEOUT)
            .unwrap()
            .unwrap();
        let seen = read_peer_line(&mut second, TIMEOUT).unwrap();
        assert_eq!(SocketAddr::V4(seen), second.local_addr().unwrap());
        for (stream, text) in [(&mut first, b"one"), (&mut second, b"two")] {
            stream.write_all(text).unwrap();
            let mut echo = [0u8; 3];
            stream.read_exact(&mut echo).unwrap();
            assert_eq!(&echo, text);
        }

        let reply =
            udp_exchange_from(&net.client, local, net.server_addr(5001), b"ping", TIMEOUT).unwrap();
        let mut expected = peer_line(SocketAddr::V4(local)).into_bytes();
        expected.extend_from_slice(b"ping");
        assert_eq!(reply, UdpOutcome::Reply(expected));
        assert_eq!(
            parse_peer_line(b"10.0.0.1:80\nrest"),
            Some("10.0.0.1:80".parse().unwrap())
        );
        assert_eq!(parse_peer_line(b"10.0.0.1:80"), None);
    }

    #[test]
    fn peer_servers_and_clients_speak_ipv6() {
        require_root();
        let net = ClientServer::new("unit-peer6").unwrap();
        for (ns, iface, addr) in [
            (&net.client, CLIENT_IFACE, "fd00:199::1/64"),
            (&net.server, SERVER_IFACE, "fd00:199::2/64"),
        ] {
            ns.ip(&["-6", "addr", "add", addr, "dev", iface, "nodad"])
                .unwrap();
        }
        let at = |addr: &str, port| SocketAddr::new(addr.parse().unwrap(), port);
        let (local, server) = (at("fd00:199::1", 40000), at("fd00:199::2", 5000));
        let _tcp = peer_server(&net.server, at("::", 5000)).unwrap();
        let _udp = udp_peer_server(&net.server, at("::", 5000)).unwrap();

        let mut stream = tcp_stream(&net.client, Some(local), server, TIMEOUT)
            .unwrap()
            .unwrap();
        assert_eq!(read_peer_addr(&mut stream, TIMEOUT), Ok(local));
        let reply = udp_exchange_from(&net.client, local, server, b"ping", TIMEOUT).unwrap();
        let mut expected = peer_line(local).into_bytes();
        expected.extend_from_slice(b"ping");
        assert_eq!(reply, UdpOutcome::Reply(expected));
        assert_eq!(parse_peer_addr(b"[fd00::1]:80\n"), Some(at("fd00::1", 80)));
        assert_eq!(parse_peer_line(b"[fd00::1]:80\n"), None, "not IPv4");

        // A closed port: a reset, and an ICMPv6 port unreachable read from
        // the socket's error queue.
        let closed = at("fd00:199::2", 5001);
        let outcome = tcp_stream(&net.client, None, closed, TIMEOUT).unwrap();
        assert_eq!(outcome.err(), Some(ConnectOutcome::Reset));
        let reply = udp_exchange_from(&net.client, local, closed, b"ping", TIMEOUT).unwrap();
        assert_eq!(
            reply,
            UdpOutcome::Refused(Some(IcmpError::PORT_UNREACHABLE6))
        );
    }

    #[test]
    fn outcomes_are_classified_as_the_kernel_reports_them() {
        require_root();
        let net = ClientServer::new("unit-out").unwrap();
        let open = tcp_server(&net.server, 80).unwrap();
        // Nothing listens on 81: the server's kernel answers with a reset.
        let closed = net.server_addr(81);
        // The server's own stack rejects 82 with ICMP (real iptables in the
        // server namespace, used here only to produce genuine ICMP errors).
        net.server
            .run_ok(
                "iptables",
                &["-A", "INPUT", "-p", "tcp", "--dport", "82", "-j", "REJECT"],
            )
            .unwrap();
        net.server
            .run_ok(
                "iptables",
                &[
                    "-A",
                    "INPUT",
                    "-p",
                    "tcp",
                    "--dport",
                    "83",
                    "-j",
                    "REJECT",
                    "--reject-with",
                    "icmp-host-unreachable",
                ],
            )
            .unwrap();
        net.server
            .run_ok(
                "iptables",
                &["-A", "INPUT", "-p", "tcp", "--dport", "84", "-j", "DROP"],
            )
            .unwrap();
        let addrs: Vec<_> = (80..=84).map(|p| net.server_addr(p)).collect();
        let started = Instant::now();
        let outcomes = tcp_connect_all(&net.client, &addrs, TIMEOUT).unwrap();
        assert!(
            started.elapsed() < TIMEOUT * 3,
            "attempts did not run in parallel"
        );
        assert_eq!(
            outcomes,
            vec![
                ConnectOutcome::Connected,
                ConnectOutcome::Reset,
                ConnectOutcome::Refused(IcmpError::PORT_UNREACHABLE),
                ConnectOutcome::Unreachable {
                    errno: libc::EHOSTUNREACH,
                    icmp: Some(IcmpError::HOST_UNREACHABLE)
                },
                ConnectOutcome::TimedOut,
            ]
        );
        assert_eq!(open.served_within(1, TIMEOUT), 1);
        assert_eq!(closed.port(), 81);

        // UDP to a port nothing listens on: the server's kernel sends
        // port-unreachable, the connected client socket sees ECONNREFUSED.
        let outcome = udp_exchange(&net.client, net.server_addr(9), b"x", TIMEOUT).unwrap();
        assert_eq!(
            outcome,
            UdpOutcome::Refused(Some(IcmpError::PORT_UNREACHABLE))
        );
    }

    #[test]
    fn the_client_is_bare_and_xdp_pass_attaches_on_demand() {
        require_root();
        let net = ClientServer::new("unit-xdp").unwrap();
        assert!(
            !net.client.has_xdp(CLIENT_IFACE).unwrap(),
            "an XDP program on the client, which must be bare as a container's end"
        );
        net.client.attach_xdp_pass(CLIENT_IFACE).unwrap();
        assert!(
            net.client.has_xdp(CLIENT_IFACE).unwrap(),
            "no XDP program on the client after attach_xdp_pass"
        );
        assert!(
            !net.server.has_xdp(SERVER_IFACE).unwrap(),
            "XDP program on the server"
        );
        let _tcp = tcp_server(&net.server, 5000).unwrap();
        let outcome = tcp_connect(&net.client, net.server_addr(5000), TIMEOUT).unwrap();
        assert_eq!(outcome, ConnectOutcome::Connected);
    }

    #[test]
    fn sysctl_is_set_inside_the_namespace_only() {
        require_root();
        let ns = Netns::new("unit-sysctl").unwrap();
        let root_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
        ns.sysctl("net.ipv4.ip_forward", "1").unwrap();
        assert_eq!(ns.sysctl_get("net.ipv4.ip_forward").unwrap(), "1");
        let seen_by_tool = ns
            .run_ok("cat", &["/proc/sys/net/ipv4/ip_forward"])
            .unwrap();
        assert_eq!(seen_by_tool.trim(), "1");
        let root_after = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
        assert_eq!(root_before, root_after);
    }

    #[test]
    fn routes_reach_a_host_behind_a_router() {
        require_root();
        // client 10.1.0.2 — router — 10.2.0.2 server
        let client = Netns::new("unit-rt-c").unwrap();
        let router = Netns::new("unit-rt-r").unwrap();
        let server = Netns::new("unit-rt-s").unwrap();
        veth_pair(&client, "c0", "10.1.0.2/24", &router, "r0", "10.1.0.1/24").unwrap();
        veth_pair(&router, "r1", "10.2.0.1/24", &server, "s0", "10.2.0.2/24").unwrap();
        router.sysctl("net.ipv4.ip_forward", "1").unwrap();
        client
            .add_route("10.2.0.0/24", Ipv4Addr::new(10, 1, 0, 1))
            .unwrap();
        server
            .add_route("10.1.0.0/24", Ipv4Addr::new(10, 2, 0, 1))
            .unwrap();
        let _tcp = tcp_server(&server, 7000).unwrap();
        let outcome = tcp_connect(
            &client,
            SocketAddrV4::new(Ipv4Addr::new(10, 2, 0, 2), 7000),
            TIMEOUT,
        )
        .unwrap();
        assert_eq!(outcome, ConnectOutcome::Connected);
    }

    #[test]
    fn bad_names_are_refused_before_anything_is_created() {
        require_root();
        assert!(matches!(Netns::new("a b"), Err(NetnsError::BadTag(_))));
        assert!(matches!(Netns::new(""), Err(NetnsError::BadTag(_))));
        let a = Netns::new("unit-names").unwrap();
        let err = veth_pair(
            &a,
            "much-too-long-name",
            "10.0.0.1/24",
            &a,
            "x",
            "10.0.0.2/24",
        )
        .unwrap_err();
        assert!(matches!(err, NetnsError::BadIfaceName(_)), "{err}");
        assert!(err.to_string().contains("15 characters"), "{err}");
    }

    #[test]
    fn servers_stop_when_dropped() {
        require_root();
        let net = ClientServer::new("unit-stop").unwrap();
        let server = tcp_server(&net.server, 6000).unwrap();
        let started = Instant::now();
        drop(server);
        assert!(started.elapsed() < Duration::from_millis(500));
        let outcome = tcp_connect(&net.client, net.server_addr(6000), TIMEOUT).unwrap();
        assert_eq!(outcome, ConnectOutcome::Reset, "port 6000 still listens");
        // The port can be bound again at once.
        let _again = tcp_server(&net.server, 6000).unwrap();
    }

    #[test]
    fn verbose_listings_are_read() {
        let listing = "\
Chain INPUT (policy DROP 7 packets, 420 bytes)
num      pkts      bytes target     prot opt in     out     source               destination
1          10     1280 ACCEPT     udp  --  *      *       0.0.0.0/0            0.0.0.0/0            udp dpt:7000
2           0        0 DROP       all  --  *      *       0.0.0.0/0            0.0.0.0/0

Chain FORWARD (policy ACCEPT 0 packets, 0 bytes)
    pkts      bytes target     prot opt in     out     source               destination
";
        let input = parse_listing(listing, "INPUT").unwrap();
        assert_eq!(input.policy.as_deref(), Some("DROP"));
        assert_eq!((input.policy_packets, input.policy_bytes), (7, 420));
        assert_eq!(input.rules.len(), 2);
        assert_eq!((input.rules[0].packets, input.rules[0].bytes), (10, 1280));
        assert_eq!(input.rules[1].target, "DROP");
        let forward = parse_listing(listing, "FORWARD").unwrap();
        assert!(forward.rules.is_empty());
        assert!(parse_listing(listing, "OUTPUT").is_none());
    }

    #[test]
    fn saves_compare_without_dates_and_counters() {
        let a = "# Generated by iptables-save v1.8.9 on Sat\n*filter\n:INPUT ACCEPT [3:180]\n-A INPUT -j DROP\nCOMMIT\n";
        let b = "# Generated by netbeast on Sun\n*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j DROP\nCOMMIT\n";
        assert_eq!(comparable_save(a), comparable_save(b));
        let c = "*filter\n:INPUT DROP [0:0]\n-A INPUT -j DROP\nCOMMIT\n";
        assert_ne!(comparable_save(a), comparable_save(c));
    }

    #[test]
    fn line_numbers_are_found_in_messages() {
        assert!(mentions_line("Error occurred at line: 6", 6));
        assert!(mentions_line(
            "restore: line 6: unexpected argument '8080'",
            6
        ));
        assert!(mentions_line("Line 12 failed", 12));
        assert!(!mentions_line("Error occurred at line: 16", 6));
        assert!(!mentions_line("unexpected argument '6'", 6));
    }
}
