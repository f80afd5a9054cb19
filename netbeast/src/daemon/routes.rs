//! The daemon's `routes` service: the route watcher that makes the
//! forwarding fast path's route cache (netbeast-ebpf `route.rs`) safe to use.
//!
//! The XDP program may keep a FIB lookup's answer (next hop, MACs, way out)
//! per CPU and reuse it for the next packets of the same lookup, sparing the
//! lookup (~80% of what forwarding costs over a local drop). An answer is
//! wrong as soon as the kernel changes a route, a neighbour, an address, a
//! policy rule, a nexthop object, a link or the forwarding sysctl. This
//! kernel lets no BPF program watch those changes (no kprobes, fexit
//! refused), so this service watches them from userspace: it subscribes to
//! the rtnetlink groups that announce each of them, and after every message
//! (or a lost one: ENOBUFS) raises the cache's epoch, which stales every
//! cached answer. The cache is used only under a lease the service renews
//! ([`RENEW`], [`LEASE`]) and releases when it stops: with no watcher,
//! every packet takes the FIB lookup as before.
//!
//! What this leaves, and DESIGN/ARCHITECTURE say so: between the kernel's
//! change and the epoch's write (the announcement's delivery, this thread's
//! wake-up and one map write: tens of microseconds idle, more on a loaded
//! machine; `tests/forward.rs` measures it), packets whose answer was cached
//! still take the old route; and a watcher killed without a chance to
//! release (SIGKILL) leaves the cache in use until its lease runs out.
//!
//! It runs on a thread of its own, blocking on the netlink socket, rather
//! than on the daemon's single-threaded runtime, where a busy service would
//! stretch that window.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{Service, Shutdown};
use crate::loader::route_watch::RouteEpoch;
use crate::state::Namespace;

/// How long the XDP program may use the cache after a renewal: what a
/// watcher killed without releasing leaves (at most) unwatched.
pub const LEASE: Duration = Duration::from_millis(1000);

/// How often the lease is renewed (and the data plane's pins looked for).
pub const RENEW: Duration = Duration::from_millis(200);

/// The socket's receive buffer: a burst of route changes (a table of
/// thousands of routes flushed) queues here; beyond it the kernel drops
/// messages and says so (ENOBUFS), which invalidates the cache as well.
const RECV_BUFFER_BYTES: libc::c_int = 4 << 20;

/// The rtnetlink groups whose messages announce a change of what an IPv4
/// or IPv6 FIB lookup answers: links (up/down, MTU, MAC), neighbours (ARP
/// and NDP alike), addresses (their routes go with them, unannounced),
/// routes, policy rules, netconf (the forwarding sysctls) of both
/// families, nexthop objects.
pub const GROUPS: [u32; 11] = [
    libc::RTNLGRP_LINK,
    libc::RTNLGRP_NEIGH,
    libc::RTNLGRP_IPV4_IFADDR,
    libc::RTNLGRP_IPV4_ROUTE,
    libc::RTNLGRP_IPV4_RULE,
    libc::RTNLGRP_IPV4_NETCONF,
    libc::RTNLGRP_IPV6_IFADDR,
    libc::RTNLGRP_IPV6_ROUTE,
    libc::RTNLGRP_IPV6_RULE,
    libc::RTNLGRP_IPV6_NETCONF,
    libc::RTNLGRP_NEXTHOP,
];

const SOL_NETLINK: libc::c_int = 270;
const NETLINK_ADD_MEMBERSHIP: libc::c_int = 1;

/// A blocking NETLINK_ROUTE socket subscribed to [`GROUPS`], whose reads
/// time out after [`RENEW`].
fn open_socket() -> Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .context("cannot open a netlink socket for route changes");
    }
    // SAFETY: `fd` is a new socket that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let set = |level, name, value: &[u8], what: &str| -> Result<()> {
        // SAFETY: `value` is readable for its length.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                name,
                value.as_ptr().cast(),
                value.len() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context(what.to_string());
        }
        Ok(())
    };
    // SAFETY: a zeroed sockaddr_nl is valid.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `addr` is a sockaddr_nl of the size given.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot bind the netlink socket");
    }
    for group in GROUPS {
        set(
            SOL_NETLINK,
            NETLINK_ADD_MEMBERSHIP,
            &group.to_ne_bytes(),
            &format!("cannot subscribe to rtnetlink group {group}"),
        )?;
    }
    // Root may exceed net.core.rmem_max (SO_RCVBUFFORCE); else the default.
    let _ = set(
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        &RECV_BUFFER_BYTES.to_ne_bytes(),
        "",
    );
    let timeout = libc::timeval {
        tv_sec: RENEW.as_secs() as libc::time_t,
        tv_usec: RENEW.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: timeval is plain old data.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&timeout as *const libc::timeval).cast::<u8>(),
            std::mem::size_of::<libc::timeval>(),
        )
    };
    set(
        libc::SOL_SOCKET,
        libc::SO_RCVTIMEO,
        bytes,
        "cannot set the netlink socket's timeout",
    )?;
    Ok(fd)
}

/// What one wait on the socket brought.
enum Wake {
    /// Messages of the groups: something changed.
    Change,
    /// Messages were lost (the buffer was full): something changed.
    Lost,
    /// Nothing within [`RENEW`].
    Quiet,
}

fn wait(fd: &OwnedFd, buf: &mut [u8]) -> Result<Wake> {
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n > 0 {
        return Ok(Wake::Change);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOBUFS) => Ok(Wake::Lost),
        Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(Wake::Quiet),
        _ if n == 0 => Ok(Wake::Quiet),
        _ => Err(e).context("cannot read route changes from the netlink socket"),
    }
}

/// The watcher's loop, until `stop`: keeps the namespace's epoch map open
/// (again after the data plane is made anew), raises its epoch after every
/// change, renews the lease, and releases it when it ends.
fn watch(stop: &AtomicBool) -> Result<()> {
    // Subscribed before the epoch is first raised: a change after that
    // raise is then announced on this socket.
    let socket = open_socket()?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut epoch: Option<RouteEpoch> = None;
    let mut renewed = Instant::now() - RENEW;
    let mut result = Ok(());
    while !stop.load(Ordering::Relaxed) {
        if renewed.elapsed() >= RENEW {
            renewed = Instant::now();
            if epoch.as_ref().is_some_and(|e| !e.is_current()) {
                // The data plane was made anew: its map is not this one.
                epoch = None;
            }
            if epoch.is_none() {
                epoch = open_current();
            }
            if let Some(e) = epoch.as_mut()
                && let Err(err) = e.renew(LEASE)
            {
                tracing::warn!("cannot renew the route cache's lease: {err}");
                epoch = None;
            }
        }
        let wake = match wait(&socket, &mut buf) {
            Ok(w) => w,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        if let (Some(e), Wake::Change | Wake::Lost) = (epoch.as_mut(), &wake)
            && let Err(err) = e.invalidate()
        {
            // A failed write must not leave the lease running.
            let _ = e.release();
            tracing::warn!("cannot invalidate the route cache: {err}; lease released");
            epoch = None;
        }
    }
    if let Some(mut e) = epoch
        && let Err(err) = e.release()
    {
        tracing::warn!("cannot release the route cache's lease: {err}");
    }
    result
}

/// The epoch map of this namespace's data plane, raised once (whatever the
/// cache holds was filled while no one watched), or None with no data plane.
fn open_current() -> Option<RouteEpoch> {
    let ns = Namespace::current().ok()?;
    if !ns.has_dataplane() {
        return None;
    }
    match RouteEpoch::open(&ns.maps_dir()) {
        Ok(mut e) => match e.invalidate() {
            Ok(()) => {
                tracing::info!(
                    "route cache enabled: following route, neighbour, address, rule and link \
                     changes (lease {LEASE:?}, renewed every {RENEW:?})"
                );
                Some(e)
            }
            Err(err) => {
                tracing::warn!("cannot invalidate the route cache: {err}; not enabling it");
                None
            }
        },
        // An older data plane without the cache: nothing to watch.
        Err(err) => {
            tracing::debug!("no route cache in this data plane: {err}");
            None
        }
    }
}

/// The service: the watcher's thread, stopped (and its lease released)
/// when the daemon stops.
pub fn service(shutdown: &Shutdown) -> Service {
    let mut shutdown = shutdown.clone();
    Service::new("routes", async move {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("netbeast-routes".into())
            .spawn(move || watch(&flag))
            .context("cannot start the route watcher's thread")?;
        let thread = tokio::task::spawn_blocking(move || thread.join());
        tokio::pin!(thread);
        tokio::select! {
            _ = shutdown.stopping() => {}
            done = &mut thread => {
                return match done {
                    Ok(Ok(r)) => r,
                    _ => Err(anyhow::anyhow!("the route watcher's thread panicked")),
                };
            }
        }
        stop.store(true, Ordering::Relaxed);
        // It sees the flag within one RENEW and releases the lease.
        match thread.await {
            Ok(Ok(r)) => r,
            _ => Err(anyhow::anyhow!("the route watcher's thread panicked")),
        }
    })
}
