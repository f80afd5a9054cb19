//! The `CONFIG` map's one value (`netbeast_common::Config`) as userspace
//! reads and writes it: through the map's memory mapping
//! (`BPF_F_MMAPABLE`), each field in place. A map update
//! (`bpf_map_update_elem`) would write the whole value, undoing what
//! another writer changed in between: the daemon's route watcher its
//! epoch word and lease, a command its own word, the data plane the ICMP
//! budget.

use std::{
    mem::offset_of,
    os::fd::{AsFd, AsRawFd},
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};

use aya::maps::{Map, MapData};
use netbeast_common::{Config, CtConfig, IcmpLimits, icmp6_limit, route_cache};

use super::{Dataplane, LoaderError};

/// The map's name (its pin's, too).
pub const NAME: &str = "CONFIG";

/// The value, mapped into this process.
pub struct ConfigMemory {
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is shared memory accessed only through atomics and
// volatile reads and writes of plain integers, so moving it to another
// thread or sharing it is as safe as an `AtomicU64`'s (the daemon's tests
// read the epoch from a thread in another namespace).
unsafe impl Send for ConfigMemory {}
unsafe impl Sync for ConfigMemory {}

impl ConfigMemory {
    pub fn map(map: &MapData) -> Result<ConfigMemory, LoaderError> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let len = size_of::<Config>().div_ceil(page) * page;
        // SAFETY: a shared mapping of an array map's values (the kernel
        // checks the map is BPF_F_MMAPABLE and the length fits it).
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(LoaderError::Io {
                what: format!("map {NAME} as memory (mmap)"),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(ConfigMemory {
            base: base.cast(),
            len,
        })
    }

    /// The field at `offset` of the value (which starts the mapping,
    /// page-aligned, so every field is aligned as `Config` lays it out).
    fn at<T>(&self, offset: usize) -> *mut T {
        debug_assert!(offset + size_of::<T>() <= size_of::<Config>());
        // SAFETY: within the mapping (the value is its first bytes).
        unsafe { self.base.add(offset).cast() }
    }

    /// Word `word` of `route_epoch` (`route_cache::WATCH_EPOCH`, ...).
    pub fn route_word(&self, word: u32) -> &AtomicU64 {
        assert!(word < route_cache::EPOCH_WORDS);
        let p = self.at::<AtomicU64>(offset_of!(Config, route_epoch) + 8 * word as usize);
        // SAFETY: an aligned u64 of the mapping, for as long as `self`.
        unsafe { &*p }
    }

    pub fn syn_guard_ports(&self) -> &AtomicU32 {
        // SAFETY: an aligned u32 of the mapping, for as long as `self`.
        unsafe { &*self.at::<AtomicU32>(offset_of!(Config, syn_guard_ports)) }
    }

    /// The conntrack timeouts as stored (all zero: never set).
    pub fn conntrack(&self) -> CtConfig {
        // SAFETY: an aligned CtConfig (plain u32s) of the mapping.
        unsafe { std::ptr::read_volatile(self.at(offset_of!(Config, conntrack))) }
    }

    /// Written only at attach, under the namespace lock; the data plane
    /// may read a mix of old and new timeouts while it is written.
    pub fn set_conntrack(&self, config: &CtConfig) {
        // SAFETY: as in `conntrack`.
        unsafe { std::ptr::write_volatile(self.at(offset_of!(Config, conntrack)), *config) }
    }

    pub fn icmp_limits(&self) -> IcmpLimits {
        // SAFETY: an aligned IcmpLimits (plain u32s) of the mapping.
        unsafe { std::ptr::read_volatile(self.at(offset_of!(Config, icmp_limits))) }
    }

    /// Written by the commands, under the namespace lock; a packet may
    /// meet a mix of old and new limits while they are written.
    pub fn set_icmp_limits(&self, limits: &IcmpLimits) {
        // SAFETY: as in `icmp_limits`.
        unsafe { std::ptr::write_volatile(self.at(offset_of!(Config, icmp_limits)), *limits) }
    }

    /// `Config::icmp6_limit`.
    pub fn icmp6_limit(&self) -> &AtomicU32 {
        // SAFETY: an aligned u32 of the mapping, for as long as `self`.
        unsafe { &*self.at::<AtomicU32>(offset_of!(Config, icmp6_limit)) }
    }
}

impl Drop for ConfigMemory {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// The map data of a loaded or pinned `CONFIG`.
pub(super) fn map_data(map: &Map) -> Result<&MapData, LoaderError> {
    match map {
        Map::Array(data) => Ok(data),
        _ => Err(LoaderError::MissingMap(NAME)),
    }
}

/// The namespace's limits on the ICMP errors it sends
/// (`/proc/sys/net/ipv4/icmp_ratelimit`, `icmp_ratemask`,
/// `icmp_msgs_per_sec`, `icmp_msgs_burst`, of the calling thread's
/// namespace, as sysctls are), which
/// REJECT's errors obey as the kernel's do. A value that cannot be read is
/// 0 (no limit of its kind).
pub fn icmp_limits_of_namespace() -> IcmpLimits {
    let read = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(0)
    };
    IcmpLimits {
        ratelimit_ms: read("icmp_ratelimit"),
        ratemask: read("icmp_ratemask"),
        msgs_per_sec: read("icmp_msgs_per_sec"),
        msgs_burst: read("icmp_msgs_burst"),
    }
}

/// ICMPv6 destination unreachable: the one type ip6tables' REJECT sends.
const ICMP6_DEST_UNREACH: u32 = 1;

/// Whether `net.ipv6.icmp.ratemask`'s list form ("0-1,3-127": the types
/// limited, ranges and single types separated by commas) holds `icmp_type`;
/// None when it does not parse.
pub fn ratemask6_holds(list: &str, icmp_type: u32) -> Option<bool> {
    let mut holds = false;
    for part in list.trim().split(',').filter(|p| !p.trim().is_empty()) {
        let (from, to) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?),
            None => {
                let t = part.trim().parse::<u32>().ok()?;
                (t, t)
            }
        };
        holds |= (from..=to).contains(&icmp_type);
    }
    Some(holds)
}

/// The limits of REJECT's ICMPv6 errors in the namespace, as
/// `Config::icmp6_limit` holds them: its `/proc/sys/net/ipv6/icmp/ratelimit`
/// (ms; of the calling thread's namespace, as sysctls are), or not limited
/// when `ratemask` leaves their type out. Without IPv6 (no such files):
/// not limited; a ratelimit that does not parse: 0, no per-host limit; a
/// ratemask that does not parse: the kernel's default, which holds type 1.
pub fn icmp6_limit_of_namespace() -> u32 {
    let read = |name: &str| std::fs::read_to_string(format!("/proc/sys/net/ipv6/icmp/{name}")).ok();
    let Some(ratelimit) = read("ratelimit") else {
        return icmp6_limit(None);
    };
    let limited = read("ratemask")
        .and_then(|m| ratemask6_holds(&m, ICMP6_DEST_UNREACH))
        .unwrap_or(true);
    icmp6_limit(limited.then(|| ratelimit.trim().parse::<u32>().unwrap_or(0)))
}

impl Dataplane {
    /// `CONFIG`'s value, mapped.
    pub(super) fn config_memory(&self) -> Result<ConfigMemory, LoaderError> {
        ConfigMemory::map(map_data(self.map(NAME)?)?)
    }

    /// Writes the namespace's ICMP rate limits
    /// ([`icmp_limits_of_namespace`]) where REJECT reads them, when they
    /// changed.
    pub fn set_icmp_limits(&mut self, limits: &IcmpLimits) -> Result<(), LoaderError> {
        let config = self.config_memory()?;
        if config.icmp_limits() != *limits {
            config.set_icmp_limits(limits);
        }
        Ok(())
    }

    /// The ICMP rate limits REJECT obeys now.
    pub fn icmp_limits(&self) -> Result<IcmpLimits, LoaderError> {
        Ok(self.config_memory()?.icmp_limits())
    }

    /// Writes the limits of REJECT's ICMPv6 errors
    /// ([`icmp6_limit_of_namespace`]) where it reads them.
    pub fn set_icmp6_limit(&mut self, limit: u32) -> Result<(), LoaderError> {
        self.config_memory()?
            .icmp6_limit()
            .store(limit, Ordering::SeqCst);
        Ok(())
    }

    /// The limits REJECT's ICMPv6 errors obey now (`Config::icmp6_limit`).
    pub fn icmp6_limit(&self) -> Result<u32, LoaderError> {
        Ok(self.config_memory()?.icmp6_limit().load(Ordering::SeqCst))
    }

    /// Fills a `CONFIG` this load made (a new data plane, an upgrade from
    /// a version that kept its fields in maps of their own, or a layout
    /// change): the values of those maps' pins, when there are, then the
    /// pins removed; the SYN-flood shield's port count from its ports.
    pub(super) fn fill_new_config(&mut self, dir: &std::path::Path) -> Result<(), LoaderError> {
        use aya::maps::Array;
        let config = self.config_memory()?;
        let retired = |name: &str| MapData::from_pin(dir.join(name)).ok();
        if let Some(data) = retired("CT_CONFIG")
            && let Ok(map) = Array::<_, CtConfig>::try_from(Map::Array(data))
            && let Ok(value) = map.get(&0, 0)
        {
            config.set_conntrack(&value);
        }
        match retired("ROUTE_EPOCH").and_then(|data| {
            Array::<_, [u64; route_cache::EPOCH_WORDS as usize]>::try_from(Map::Array(data)).ok()
        }) {
            // The cached routes were stamped with these words: kept,
            // they stay valid exactly as long as they would have.
            Some(map) => {
                if let Ok(words) = map.get(&0, 0) {
                    for (i, w) in words.iter().enumerate() {
                        config.route_word(i as u32).store(*w, Ordering::SeqCst);
                    }
                }
            }
            // No epoch to carry on (a new data plane, or a `CONFIG` of
            // another layout made anew): a pinned route cache may hold
            // slots stamped under the old one's. Starting the commands'
            // word at the clock's value makes every old stamp stale.
            None => config
                .route_word(route_cache::USER_EPOCH)
                .store(super::route_watch::monotonic_ns(), Ordering::SeqCst),
        }
        let ports = self.syn_guard_ports()?.len() as u32;
        config.syn_guard_ports().store(ports, Ordering::SeqCst);
        for name in RETIRED {
            match std::fs::remove_file(dir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(LoaderError::Io {
                        what: format!(
                            "the pin {} (its value moved into {NAME})",
                            dir.join(name).display()
                        ),
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}

/// The pins of the single-value maps `CONFIG` replaced: an upgrade folds
/// their values into it and removes them.
pub const RETIRED: [&str; 3] = ["CT_CONFIG", "ROUTE_EPOCH", "SYN_GUARD_COUNT"];

#[cfg(test)]
mod ratemask_tests {
    use super::*;

    #[test]
    fn the_ipv6_ratemask_is_a_list_of_types_and_ranges() {
        // The kernel's default: every error but packet too big.
        assert_eq!(ratemask6_holds("0-1,3-127\n", 1), Some(true));
        assert_eq!(ratemask6_holds("0-1,3-127", 2), Some(false));
        assert_eq!(ratemask6_holds("0,2-127", 1), Some(false));
        assert_eq!(ratemask6_holds("1", 1), Some(true));
        assert_eq!(ratemask6_holds("", 1), Some(false));
        assert_eq!(ratemask6_holds("1-x", 1), None);
    }
}
