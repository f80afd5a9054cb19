//! The daemon's `links` service: follows the namespace's interfaces as they
//! come, go and are renamed, so the data plane follows them without a
//! netbeast command (issue 12, finding 5: iptables matches `-i`/`-o` names
//! on every packet).
//!
//! - On every rtnetlink link event (RTM_NEWLINK, RTM_DELLINK: an interface
//!   added, deleted, renamed or changed) it runs the reconciliation every
//!   command runs first (`cli::reconcile_current`): `-i`/`-o` names are
//!   resolved anew against the interfaces now present, and a vanished
//!   attached interface's links and pins are removed. Address events
//!   (RTM_NEWADDR, RTM_DELADDR, IPv4 and IPv6) too: the reconciliation
//!   then writes the interfaces' facts anew — the local addresses the XDP
//!   programs find without a FIB lookup, `-m addrtype`'s routes, each
//!   interface's primary address (MASQUERADE, REDIRECT, REJECT's source)
//!   — which were otherwise left as the last command wrote them. Events
//!   that come in a burst (a veth pair made, addressed, set up) are
//!   settled once, after [`SETTLE`].
//! - When the namespace is deleted (`ip netns del`: no name under
//!   /run/netns refers to it any more; the daemon, its last process, keeps
//!   it alive), it removes the namespace's data plane as `netbeast gc`
//!   would and stops the daemon, which exits 0.
//!
//! The events are read from a plain NETLINK_ROUTE socket rather than
//! through the `rtnetlink` crate: the service needs only to know *that* a
//! link changed — the reconciliation reads the interfaces itself — so the
//! message types are all it looks at, and a few lines of libc spare the
//! project a stack of netlink crates.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::io::unix::AsyncFd;

use super::Shutdown;

/// How long a burst of link events may last before the state is settled
/// once for all of them.
pub const SETTLE: Duration = Duration::from_millis(50);

/// How often the daemon checks that its namespace still has a name.
pub const NETNS_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Where `ip netns` names namespaces.
const NETNS_RUN_DIR: &str = "/run/netns";

/// The size of one read from the netlink socket: a burst of link messages
/// (each a few hundred bytes to a few KiB) fits.
const RECV_BUFFER: usize = 64 * 1024;

/// A NETLINK_ROUTE socket subscribed to link events.
struct LinkEvents(AsyncFd<OwnedFd>);

impl LinkEvents {
    fn open() -> Result<Self> {
        // SAFETY: socket(2) with constant arguments.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .context("cannot open a netlink socket for link events");
        }
        // SAFETY: `fd` is a new socket that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a zeroed sockaddr_nl is valid; family and groups are set.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups =
            (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
        // SAFETY: `addr` is a sockaddr_nl of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .context("cannot subscribe to link and address events (RTMGRP_LINK, *_IFADDR)");
        }
        // SAFETY: the OwnedFd keeps its descriptor open and the same for
        // as long as the AsyncFd owns it.
        let watched = unsafe { AsyncFd::register(fd) }
            .map_err(std::io::Error::from)
            .context("cannot watch the netlink socket")?;
        Ok(LinkEvents(watched))
    }

    /// Waits for messages and reads what is there: true when a link event
    /// is among them (or some were lost, which may have hidden one).
    async fn next(&self, buf: &mut [u8]) -> Result<bool> {
        loop {
            let mut guard = self.0.readable().await?;
            let read = guard.try_io(|fd| {
                // SAFETY: `buf` is writable for its length.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match read {
                Ok(Ok(n)) => return Ok(has_link_event(&buf[..n])),
                // The kernel dropped messages (a full socket buffer): some
                // may have been link events.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(true),
                Ok(Err(e)) => return Err(e).context("cannot read link events"),
                Err(_would_block) => continue,
            }
        }
    }

    /// Reads whatever has queued up without waiting: true when a link event
    /// was among it.
    fn drain(&self, buf: &mut [u8]) -> bool {
        let mut seen = false;
        loop {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe {
                libc::recv(
                    self.0.get_ref().as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                return seen || e.raw_os_error() == Some(libc::ENOBUFS);
            }
            seen |= has_link_event(&buf[..n as usize]);
        }
    }
}

/// Whether a datagram of netlink messages holds a link or address event
/// (RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR).
fn has_link_event(mut data: &[u8]) -> bool {
    const HEADER: usize = std::mem::size_of::<libc::nlmsghdr>();
    while data.len() >= HEADER {
        let len = u32::from_ne_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(data[4..6].try_into().expect("2 bytes"));
        if len < HEADER {
            break;
        }
        if matches!(
            kind,
            libc::RTM_NEWLINK | libc::RTM_DELLINK | libc::RTM_NEWADDR | libc::RTM_DELADDR
        ) {
            return true;
        }
        // Messages are 4-byte aligned (NLMSG_ALIGN).
        let step = (len + 3) & !3;
        if step > data.len() {
            break;
        }
        data = &data[step..];
    }
    false
}

/// The identity of a namespace file: (device, inode).
fn ns_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The names under /run/netns that refer to this thread's namespace.
fn names_of_this_namespace() -> Vec<String> {
    let Some(me) = ns_identity(Path::new("/proc/thread-self/ns/net")) else {
        return Vec::new();
    };
    std::fs::read_dir(NETNS_RUN_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| ns_identity(&e.path()) == Some(me))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Runs the reconciliation on a blocking thread (it takes the lock and may
/// compile a ruleset); a failure is reported and the service goes on, as a
/// command would fail and the next one try again.
async fn reconcile(why: &str) {
    let done = tokio::task::spawn_blocking(crate::cli::reconcile_current).await;
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("after {why}: {e:#}"),
        Err(e) => tracing::error!("after {why}: the reconciliation failed: {e}"),
    }
}

/// The service (see the module's comment).
///
/// The namespace's names are read here, before the daemon says it runs,
/// not when the service first polls: a namespace deleted in between would
/// otherwise leave no name to watch, and the daemon would run on.
pub fn run(shutdown: Shutdown) -> impl std::future::Future<Output = Result<()>> {
    // Named now: a name that later refers elsewhere, or none, means the
    // namespace was deleted. Unnamed (the root namespace, a container's):
    // nothing to watch.
    let me = ns_identity(Path::new("/proc/thread-self/ns/net"));
    let names = names_of_this_namespace();
    watch(shutdown, me, names)
}

async fn watch(mut shutdown: Shutdown, me: Option<(u64, u64)>, names: Vec<String>) -> Result<()> {
    let events = LinkEvents::open()?;
    let mut buf = vec![0u8; RECV_BUFFER];
    // Changes made while no daemon ran.
    reconcile("start").await;
    let mut check = tokio::time::interval(NETNS_CHECK_INTERVAL);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.stopping() => return Ok(()),
            event = events.next(&mut buf) => {
                if !event? {
                    continue;
                }
                tokio::time::sleep(SETTLE).await;
                events.drain(&mut buf);
                reconcile("a link or address event").await;
            }
            _ = check.tick(), if !names.is_empty() => {
                let named = names
                    .iter()
                    .any(|n| ns_identity(&Path::new(NETNS_RUN_DIR).join(n)) == me);
                if !named {
                    let removed = tokio::task::spawn_blocking(crate::cli::remove_current)
                        .await
                        .context("the removal of the data plane failed")??;
                    tracing::info!(
                        "network namespace {} was deleted: removed its \
                         data plane ({removed} links detached, pins, socket programs and files \
                         removed); stopping",
                        names.join(", ")
                    );
                    shutdown.stop_daemon();
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, payload: usize) -> Vec<u8> {
        let len = std::mem::size_of::<libc::nlmsghdr>() + payload;
        let mut m = vec![0u8; (len + 3) & !3];
        m[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        m[4..6].copy_from_slice(&kind.to_ne_bytes());
        m
    }

    #[test]
    fn link_events_are_found_among_messages() {
        let mut data = message(libc::RTM_NEWROUTE, 9);
        assert!(!has_link_event(&data));
        data.extend(message(libc::RTM_DELLINK, 30));
        assert!(has_link_event(&data));
        assert!(has_link_event(&message(libc::RTM_NEWLINK, 0)));
        assert!(has_link_event(&message(libc::RTM_NEWADDR, 0)));
        assert!(has_link_event(&message(libc::RTM_DELADDR, 0)));
        // A truncated or malformed datagram ends the walk, no panic.
        assert!(!has_link_event(&data[..10]));
        let mut bad = message(libc::RTM_NEWADDR, 0);
        bad[0..4].copy_from_slice(&1u32.to_ne_bytes());
        assert!(!has_link_event(&bad));
    }
}
