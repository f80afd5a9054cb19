//! The forwarding route cache's epoch and lease (netbeast-ebpf `route.rs`,
//! `netbeast_common::route_cache`), as userspace writes them: the commands
//! raise their word when the interfaces' fast-path ways change; the route
//! watcher (the daemon's `routes` service, `daemon/routes.rs`) raises its
//! word on every rtnetlink change and holds the lease that lets the XDP
//! program use the cache at all.

use std::{
    borrow::BorrowMut,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::maps::{Array, Map, MapData};
use netbeast_common::route_cache;

use super::{Dataplane, LoaderError, map_err};

const NAME: &str = "ROUTE_EPOCH";

/// The clock the XDP program compares the lease with
/// (`bpf_ktime_get_coarse_ns`: CLOCK_MONOTONIC).
pub fn monotonic_ns() -> u64 {
    // SAFETY: a zeroed timespec is valid; clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Adds one to word `word` of the epoch map (each word has one writer).
fn raise<T: BorrowMut<MapData>>(map: &mut Array<T, u64>, word: u32) -> Result<(), LoaderError> {
    let now = map.get(&word, 0).map_err(map_err(NAME))?;
    map.set(word, now.wrapping_add(1), 0).map_err(map_err(NAME))
}

/// The pinned epoch map of a namespace's data plane, as the route watcher
/// holds it: it outlives no data plane (a new one, after `detach --all`,
/// has new pins: [`RouteEpoch::is_current`]).
pub struct RouteEpoch {
    map: Array<MapData, u64>,
    path: PathBuf,
    inode: u64,
}

fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

impl RouteEpoch {
    /// Opens the epoch map pinned in `maps_dir`.
    pub fn open(maps_dir: &Path) -> Result<RouteEpoch, LoaderError> {
        let path = maps_dir.join(NAME);
        let map = MapData::from_pin(&path)
            .and_then(Map::from_map_data)
            .and_then(Array::try_from)
            .map_err(map_err(NAME))?;
        let inode = inode(&path).unwrap_or(0);
        Ok(RouteEpoch { map, path, inode })
    }

    /// Whether the pin is still the map this was opened on.
    pub fn is_current(&self) -> bool {
        inode(&self.path) == Some(self.inode)
    }

    /// Every cached route is stale from now on: called after each change
    /// the kernel announced (and when the watcher starts, for the changes
    /// made while none watched).
    pub fn invalidate(&mut self) -> Result<(), LoaderError> {
        raise(&mut self.map, route_cache::WATCH_EPOCH)
    }

    /// Lets the XDP program use the cache for `lease` from now.
    pub fn renew(&mut self, lease: Duration) -> Result<(), LoaderError> {
        let until = monotonic_ns() + lease.as_nanos() as u64;
        self.map
            .set(route_cache::LEASE_UNTIL, until, 0)
            .map_err(map_err(NAME))
    }

    /// Stops the use of the cache at once (the watcher stops).
    pub fn release(&mut self) -> Result<(), LoaderError> {
        self.map
            .set(route_cache::LEASE_UNTIL, 0, 0)
            .map_err(map_err(NAME))
    }

    /// The watcher's word (what it has raised).
    pub fn watch_epoch(&self) -> Result<u64, LoaderError> {
        self.map
            .get(&route_cache::WATCH_EPOCH, 0)
            .map_err(map_err(NAME))
    }

    /// Until when the lease runs (CLOCK_MONOTONIC ns; 0: none).
    pub fn lease_until(&self) -> Result<u64, LoaderError> {
        self.map
            .get(&route_cache::LEASE_UNTIL, 0)
            .map_err(map_err(NAME))
    }
}

impl Dataplane {
    /// Raises the commands' word of `ROUTE_EPOCH`: every cached route is
    /// stale (its `IFACE_PATHS` bits may be). The commands write it under
    /// the namespace lock; no one else does.
    pub(super) fn bump_route_epoch(&mut self) -> Result<(), LoaderError> {
        let mut epoch: Array<&mut MapData, u64> =
            Array::try_from(self.map_mut(NAME)?).map_err(map_err(NAME))?;
        raise(&mut epoch, route_cache::USER_EPOCH)
    }

    /// What the route watcher does, for a data plane of this process (the
    /// program tests): `lease` Some renews it, None releases it;
    /// `invalidate` raises the watcher's word.
    pub fn route_cache_watch(
        &mut self,
        invalidate: bool,
        lease: Option<Duration>,
    ) -> Result<(), LoaderError> {
        let mut epoch: Array<&mut MapData, u64> =
            Array::try_from(self.map_mut(NAME)?).map_err(map_err(NAME))?;
        if invalidate {
            raise(&mut epoch, route_cache::WATCH_EPOCH)?;
        }
        let until = lease.map_or(0, |l| monotonic_ns() + l.as_nanos() as u64);
        epoch
            .set(route_cache::LEASE_UNTIL, until, 0)
            .map_err(map_err(NAME))
    }
}
