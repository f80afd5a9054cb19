//! The forwarding route cache's epoch and lease (netbeast-ebpf `route.rs`,
//! `netbeast_common::route_cache`), as userspace writes them: the commands
//! raise their word when the interfaces' fast-path ways change; the route
//! watcher (the daemon's `routes` service, `daemon/routes.rs`) raises its
//! word on every rtnetlink change and holds the lease that lets the XDP
//! program use the cache at all.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use aya::maps::MapData;
use netbeast_common::route_cache;

use super::config::{ConfigMemory, NAME, map_data};
use super::{Dataplane, LoaderError, map_err};

/// The clock the XDP program compares the lease with
/// (`bpf_ktime_get_coarse_ns`: CLOCK_MONOTONIC).
pub fn monotonic_ns() -> u64 {
    // SAFETY: a zeroed timespec is valid; clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The epoch words of `CONFIG`'s value, mapped into this process: each
/// writer loads and stores its own word atomically, in place. A map update
/// (`bpf_map_update_elem`) would write all of them, undoing a word another
/// process (the daemon, a command) raised in between.
struct Words(ConfigMemory);

impl Words {
    fn map(map: &MapData) -> Result<Words, LoaderError> {
        Ok(Words(ConfigMemory::map(map)?))
    }

    fn word(&self, word: u32) -> &AtomicU64 {
        self.0.route_word(word)
    }

    fn get(&self, word: u32) -> u64 {
        self.word(word).load(Ordering::SeqCst)
    }

    fn set(&self, word: u32, value: u64) {
        self.word(word).store(value, Ordering::SeqCst)
    }

    /// Adds one to `word` (each word has one writer; atomic all the same).
    fn raise(&self, word: u32) {
        self.word(word).fetch_add(1, Ordering::SeqCst);
    }
}

/// The route cache's epoch and lease (in the pinned `CONFIG` map) of a
/// namespace's data plane, as the route watcher
/// holds it: it outlives no data plane (a new one, after `detach --all`,
/// has new pins: [`RouteEpoch::is_current`]).
pub struct RouteEpoch {
    words: Words,
    path: PathBuf,
    inode: u64,
}

fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

impl RouteEpoch {
    /// Opens the `CONFIG` map pinned in `maps_dir`.
    pub fn open(maps_dir: &Path) -> Result<RouteEpoch, LoaderError> {
        let path = maps_dir.join(NAME);
        let map = MapData::from_pin(&path).map_err(map_err(NAME))?;
        let words = Words::map(&map)?;
        let inode = inode(&path).unwrap_or(0);
        Ok(RouteEpoch { words, path, inode })
    }

    /// Whether the pin is still the map this was opened on.
    pub fn is_current(&self) -> bool {
        inode(&self.path) == Some(self.inode)
    }

    /// Every cached route is stale from now on: called after each change
    /// the kernel announced (and when the watcher starts, for the changes
    /// made while none watched).
    pub fn invalidate(&mut self) -> Result<(), LoaderError> {
        self.words.raise(route_cache::WATCH_EPOCH);
        Ok(())
    }

    /// Lets the XDP program use the cache for `lease` from now.
    pub fn renew(&mut self, lease: Duration) -> Result<(), LoaderError> {
        let until = monotonic_ns() + lease.as_nanos() as u64;
        self.words.set(route_cache::LEASE_UNTIL, until);
        Ok(())
    }

    /// Stops the use of the cache at once (the watcher stops).
    pub fn release(&mut self) -> Result<(), LoaderError> {
        self.words.set(route_cache::LEASE_UNTIL, 0);
        Ok(())
    }

    /// The watcher's word (what it has raised).
    pub fn watch_epoch(&self) -> Result<u64, LoaderError> {
        Ok(self.words.get(route_cache::WATCH_EPOCH))
    }

    /// Until when the lease runs (CLOCK_MONOTONIC ns; 0: none).
    pub fn lease_until(&self) -> Result<u64, LoaderError> {
        Ok(self.words.get(route_cache::LEASE_UNTIL))
    }
}

impl Dataplane {
    /// Raises the commands' epoch word: every cached route is
    /// stale (its `IFACE_PATHS` bits may be). The commands write it under
    /// the namespace lock; no one else does.
    pub(super) fn bump_route_epoch(&mut self) -> Result<(), LoaderError> {
        let words = Words::map(map_data(self.map_mut(NAME)?)?)?;
        words.raise(route_cache::USER_EPOCH);
        Ok(())
    }

    /// What the route watcher does, for a data plane of this process (the
    /// program tests): `lease` Some renews it, None releases it;
    /// `invalidate` raises the watcher's word.
    pub fn route_cache_watch(
        &mut self,
        invalidate: bool,
        lease: Option<Duration>,
    ) -> Result<(), LoaderError> {
        let words = Words::map(map_data(self.map_mut(NAME)?)?)?;
        if invalidate {
            words.raise(route_cache::WATCH_EPOCH);
        }
        let until = lease.map_or(0, |l| monotonic_ns() + l.as_nanos() as u64);
        words.set(route_cache::LEASE_UNTIL, until);
        Ok(())
    }
}
