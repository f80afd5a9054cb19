//! The sizes of the keyed state tables: the LRU and hash maps whose entries
//! are the traffic's (conntrack, `-m recent`, connlimit, nat OUTPUT's
//! sockets, REJECT's ICMP hosts, the SYN proxy, ipset members). No compiled
//! index depends on their size, so a data plane chooses it when it makes
//! them — from the machine's memory, as the kernel sizes `nf_conntrack_max`
//! from RAM, or from `attach --table-memory` — and keeps it: every later
//! command reads their real `max_entries` back from the pins.
//!
//! A budget divides every table's default by the same factor, `k` in
//! [`TABLE_SHRINK_MAX`] parts: their proportions (conntrack's share, the
//! IPv6 tables' quarter) stay as ARCHITECTURE.md explains them.

use std::path::Path;

use netbeast_common::{
    CAPACITY_SHRINK_MAX, CONNLIMIT_LISTS, CONNLIMIT6_LISTS, CT_ESTABLISHED_ENTRIES,
    CT_NAT_INDEX_ENTRIES, CT_UNREPLIED_ENTRIES, CT6_ESTABLISHED_ENTRIES, CT6_NAT_INDEX_ENTRIES,
    CT6_UNREPLIED_ENTRIES, Capacity, ICMP_HOST_ENTRIES, ICMP6_HOST_ENTRIES, MAP_NO_PREALLOC,
    PROXIED_CONNECTIONS, RECENT_ENTRIES, SOCK_NAT_ENTRIES, TABLE_SHRINK_MAX, ipset, size,
};

use super::{LoaderError, OBJECT};

/// The keyed state tables and their default (and largest sized-from-memory)
/// entries.
pub const STATE_TABLES: [(&str, u32); 16] = [
    ("CT_UNREPLIED", CT_UNREPLIED_ENTRIES),
    ("CT_ESTABLISHED", CT_ESTABLISHED_ENTRIES),
    ("CT_NAT_INDEX", CT_NAT_INDEX_ENTRIES),
    ("CT6_UNREPLIED", CT6_UNREPLIED_ENTRIES),
    ("CT6_ESTABLISHED", CT6_ESTABLISHED_ENTRIES),
    ("CT6_NAT_INDEX", CT6_NAT_INDEX_ENTRIES),
    ("RECENT", RECENT_ENTRIES),
    ("CONNLIMIT", CONNLIMIT_LISTS),
    ("CONNLIMIT6", CONNLIMIT6_LISTS),
    ("SOCK_NAT", SOCK_NAT_ENTRIES),
    ("SOCK_NAT6", SOCK_NAT_ENTRIES),
    ("SOCK_MARK", SOCK_NAT_ENTRIES),
    ("ICMP_HOSTS", ICMP_HOST_ENTRIES),
    ("ICMP6_HOSTS", ICMP6_HOST_ENTRIES),
    ("PROXIED", PROXIED_CONNECTIONS),
    ("IPSET_MEMBERS", ipset::MEMBERS),
];

/// The share of the machine's memory the state tables get by default: a
/// 512 MiB box gives them 16 MiB (about 17,000 established IPv4
/// connections, four times the kernel's `nf_conntrack_max` there); from
/// about 6.5 GiB on, every table has its default size.
pub const RAM_SHARE: u64 = 32;

/// The kernel's `struct bucket` of a hash map (a list head and a lock):
/// what each of its power-of-two buckets costs.
const HASH_BUCKET_BYTES: u64 = 16;
/// The kernel's `struct htab_elem` before the key: what a preallocated
/// entry costs beyond its key and value (each rounded up to 8 bytes).
const HASH_ELEM_HEADER_BYTES: u64 = 48;
const MIB: f64 = 1024.0 * 1024.0;

/// How `attach --table-memory` was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableMemory {
    /// A share of the machine's memory ([`RAM_SHARE`]).
    Auto,
    /// This many bytes.
    Bytes(u64),
}

impl TableMemory {
    /// `auto`, or a size in bytes with an optional binary suffix: `64M`,
    /// `64MiB`, `1G`, `512k`, `1048576`.
    pub fn parse(text: &str) -> Result<TableMemory, String> {
        let bad = || {
            format!(
                "{text}: expected `auto` or a size such as 16M, 64MiB, 1G \
                 (K, M, G: powers of 1024; no suffix: bytes)"
            )
        };
        if text.eq_ignore_ascii_case("auto") {
            return Ok(TableMemory::Auto);
        }
        let lower = text.trim().to_ascii_lowercase();
        let unitless = lower
            .trim_end_matches("ib")
            .trim_end_matches('b')
            .to_string();
        let (digits, shift) = match unitless.chars().last() {
            Some('k') => (&unitless[..unitless.len() - 1], 10),
            Some('m') => (&unitless[..unitless.len() - 1], 20),
            Some('g') => (&unitless[..unitless.len() - 1], 30),
            _ if unitless.len() == lower.len() => (unitless.as_str(), 0),
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        n.checked_mul(1 << shift)
            .map(TableMemory::Bytes)
            .ok_or_else(bad)
    }

    /// The budget in bytes: the given one, or [`RAM_SHARE`] of `ram`.
    pub fn budget(self, ram: u64) -> u64 {
        match self {
            TableMemory::Auto => ram / RAM_SHARE,
            TableMemory::Bytes(n) => n,
        }
    }
}

/// The memory `auto` sizes from: the machine's ([`machine_memory`]), or
/// the memory limit of the cgroup this process runs in when that is lower
/// (a container's): the kernel charges BPF maps to the cgroup of the
/// process that makes them, so a share of the host's memory could pass the
/// container's limit.
pub fn memory_for_auto() -> Result<u64, LoaderError> {
    let total = machine_memory()?;
    let membership = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let limit = cgroup_memory_limit(&membership, Path::new(CGROUP_ROOT));
    Ok(limit.map_or(total, |limit| limit.min(total)))
}

/// Where the cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The lowest memory limit on the way from the root cgroup down to this
/// process's, as `membership` (the text of `/proc/self/cgroup`) names it,
/// read under `root`: cgroup v2's `memory.max` (the line `0::PATH`, the
/// unified hierarchy mounted at `root` or, on hybrid hosts, at
/// `root/unified`), and cgroup v1's `memory.limit_in_bytes` (the line of
/// the `memory` controller, mounted at `root/memory`). `None` when no
/// limit is set or the hierarchy is not mounted here (`ip netns exec`
/// mounts a /sys of its own, without the cgroup file systems).
fn cgroup_memory_limit(membership: &str, root: &Path) -> Option<u64> {
    let mut places = Vec::new();
    for line in membership.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = path.trim_start_matches('/');
        if id == "0" && controllers.is_empty() {
            for mount in [root.to_path_buf(), root.join("unified")] {
                if mount.join("cgroup.controllers").exists() {
                    places.push((mount, path, "memory.max"));
                }
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            places.push((root.join("memory"), path, "memory.limit_in_bytes"));
        }
    }
    let mut lowest: Option<u64> = None;
    for (mount, path, file) in places {
        // This cgroup and each of its ancestors: a parent's limit holds
        // for its children too.
        let mut dir = mount.join(path);
        loop {
            // "max" (v2) is no limit; v1 says so with a huge number.
            if let Some(limit) = std::fs::read_to_string(dir.join(file))
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
            {
                lowest = Some(lowest.map_or(limit, |l| l.min(limit)));
            }
            if dir == mount || !dir.pop() {
                break;
            }
        }
    }
    lowest
}

/// The machine's memory (`MemTotal`), as the kernel counts it for
/// `nf_conntrack_max`.
pub fn machine_memory() -> Result<u64, LoaderError> {
    let text = std::fs::read_to_string("/proc/meminfo").map_err(|source| LoaderError::Io {
        what: "/proc/meminfo (the machine's memory sizes the state tables)".into(),
        source,
    })?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| LoaderError::Io {
            what: "/proc/meminfo".into(),
            source: std::io::Error::other("no MemTotal line"),
        })
}

/// A size for each keyed state table, in [`STATE_TABLES`]' order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSizes {
    entries: [u32; STATE_TABLES.len()],
}

/// The layout of a table that its memory depends on.
#[derive(Clone, Copy)]
struct Layout {
    key: u32,
    value: u32,
    prealloc: bool,
}

fn layouts() -> Result<[Layout; STATE_TABLES.len()], LoaderError> {
    let object = aya_obj::Object::parse(OBJECT)
        .map_err(|e| LoaderError::Load(aya::EbpfError::ParseError(e)))?;
    let mut out = [Layout {
        key: 0,
        value: 0,
        prealloc: true,
    }; STATE_TABLES.len()];
    for (i, (name, _)) in STATE_TABLES.iter().enumerate() {
        let map = object
            .maps
            .get(*name)
            .ok_or(LoaderError::MissingMap(name))?;
        out[i] = Layout {
            key: map.key_size(),
            value: map.value_size(),
            prealloc: map.map_flags() & MAP_NO_PREALLOC == 0,
        };
    }
    Ok(out)
}

/// What the kernel charges for a hash or LRU map of `entries` (its
/// `htab_map_mem_usage`, Linux 6.x): the power-of-two bucket array, and
/// each preallocated entry with its header. An estimate: the kernel adds a
/// few fixed bytes (the map itself, per-CPU lock counters).
fn table_bytes(layout: Layout, entries: u32) -> u64 {
    let round8 = |n: u32| u64::from(n).div_ceil(8) * 8;
    let buckets = u64::from(entries).next_power_of_two() * HASH_BUCKET_BYTES;
    let elems = if layout.prealloc {
        u64::from(entries) * (HASH_ELEM_HEADER_BYTES + round8(layout.key) + round8(layout.value))
    } else {
        0
    };
    buckets + elems
}

/// The sizing a budget asks for failed.
#[derive(Debug, thiserror::Error)]
pub enum SizingError {
    #[error(
        "--table-memory {:.1} MiB is too little: the keyed state tables need at least \
         {:.1} MiB (each at 1/{TABLE_SHRINK_MAX} of its default size, TABLE_SHRINK_MAX); \
         give at least that",
        *.budget as f64 / MIB,
        *.least as f64 / MIB
    )]
    TooSmall { budget: u64, least: u64 },
    #[error(
        "--ruleset-memory {:.1} MiB is too little: the ruleset arrays need at least {:.1} MiB \
         (for {} rule slots, 1/{CAPACITY_SHRINK_MAX} of the most, CAPACITY_SHRINK_MAX); give \
         at least that",
        *.budget as f64 / MIB,
        *.least as f64 / MIB,
        Capacity::SMALLEST.slots()
    )]
    RulesetTooSmall { budget: u64, least: u64 },
    #[error(transparent)]
    Loader(#[from] LoaderError),
}

/// Every table at `k /` [`TABLE_SHRINK_MAX`] of its default, but the
/// `fixed` ones (see [`TableSizes::for_budget`]).
fn scaled(layouts: &[Layout; STATE_TABLES.len()], k: u32, fixed: &[(&str, u32)]) -> TableSizes {
    let mut entries = [0; STATE_TABLES.len()];
    for (i, (name, default)) in STATE_TABLES.iter().enumerate() {
        entries[i] = match fixed.iter().find(|(n, _)| n == name) {
            Some(&(_, n)) => n,
            None => {
                let n = (u64::from(*default) * u64::from(k) / u64::from(TABLE_SHRINK_MAX)) as u32;
                if layouts[i].prealloc || n.is_power_of_two() {
                    n
                } else {
                    n.next_power_of_two() / 2
                }
            }
        };
    }
    TableSizes { entries }
}

/// The tables `--ct-unreplied-size` and `--ct-established-size` may have
/// sized apart from the others.
const SIZED_APART: [&str; 2] = ["CT_UNREPLIED", "CT_ESTABLISHED"];

impl TableSizes {
    /// The sizing the `pinned` tables (as [`TableSizes::pinned`] reads
    /// them) were made with, for a table missing among them (one a newer
    /// version adds, or one an upgrade makes anew): the share of their
    /// defaults the others have. `None` when none is pinned.
    pub fn following(
        pinned: &[Option<u32>; STATE_TABLES.len()],
    ) -> Result<Option<TableSizes>, LoaderError> {
        let k = STATE_TABLES
            .iter()
            .zip(pinned)
            .filter(|((name, _), _)| !SIZED_APART.contains(name))
            .filter_map(|((_, default), n)| {
                n.map(|n| {
                    (u64::from(n) * u64::from(TABLE_SHRINK_MAX)).div_ceil(u64::from(*default))
                })
            })
            .max();
        let Some(k) = k else {
            return Ok(None);
        };
        let k = k.clamp(1, u64::from(TABLE_SHRINK_MAX)) as u32;
        Ok(Some(scaled(&layouts()?, k, &[])))
    }

    /// Every table at its default size.
    pub fn defaults() -> TableSizes {
        TableSizes {
            entries: STATE_TABLES.map(|(_, n)| n),
        }
    }

    /// The largest sizes, each table's default times `k /`
    /// [`TABLE_SHRINK_MAX`] (the same `k` for all; a bucket-only table —
    /// `IPSET_MEMBERS`, allocated as added — rounded down to a power of
    /// two, which is what its buckets cost), whose memory fits in `budget`
    /// bytes. `fixed` tables keep the given size and are outside the
    /// budget (`attach --ct-established-size`).
    pub fn for_budget(budget: u64, fixed: &[(&str, u32)]) -> Result<TableSizes, SizingError> {
        let layouts = layouts()?;
        let sized = |k: u32| scaled(&layouts, k, fixed);
        let scaled_bytes = |sizes: &TableSizes| -> u64 {
            STATE_TABLES
                .iter()
                .enumerate()
                .filter(|(_, (name, _))| !fixed.iter().any(|(n, _)| n == name))
                .map(|(i, _)| table_bytes(layouts[i], sizes.entries[i]))
                .sum()
        };
        for k in (1..=TABLE_SHRINK_MAX).rev() {
            let sizes = sized(k);
            if scaled_bytes(&sizes) <= budget {
                return Ok(sizes);
            }
        }
        Err(SizingError::TooSmall {
            budget,
            least: scaled_bytes(&sized(1)),
        })
    }

    /// The sizes a machine with `ram` bytes gets by default ([`RAM_SHARE`]
    /// of it; `fixed` as for [`TableSizes::for_budget`]); on a machine too
    /// small even for that, every table at its smallest.
    pub fn auto(ram: u64, fixed: &[(&str, u32)]) -> Result<TableSizes, LoaderError> {
        match TableSizes::for_budget(TableMemory::Auto.budget(ram), fixed) {
            Ok(sizes) => Ok(sizes),
            Err(SizingError::TooSmall { least, .. }) => {
                match TableSizes::for_budget(least, fixed) {
                    Ok(sizes) => Ok(sizes),
                    Err(SizingError::Loader(e)) => Err(e),
                    Err(e) => unreachable!("the least budget fits: {e}"),
                }
            }
            Err(SizingError::Loader(e)) => Err(e),
            Err(e @ SizingError::RulesetTooSmall { .. }) => unreachable!("not the tables': {e}"),
        }
    }

    /// The sizes of the tables pinned in `dir` (their real `max_entries`);
    /// `None` for a table not pinned.
    pub fn pinned(dir: &Path) -> Result<[Option<u32>; STATE_TABLES.len()], LoaderError> {
        let mut out = [None; STATE_TABLES.len()];
        for (i, (name, _)) in STATE_TABLES.iter().enumerate() {
            let path = dir.join(name);
            if path.exists() {
                let info = aya::maps::MapInfo::from_pin(&path)
                    .map_err(|source| LoaderError::Map { name, source })?;
                out[i] = Some(info.max_entries());
            }
        }
        Ok(out)
    }

    /// Each table's name and entries.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u32)> + '_ {
        STATE_TABLES
            .iter()
            .zip(self.entries)
            .map(|((name, _), n)| (*name, n))
    }

    /// The entries of the table `name`, if it is a state table.
    pub fn get(&self, name: &str) -> Option<u32> {
        self.iter().find(|(n, _)| *n == name).map(|(_, e)| e)
    }

    /// The kernel memory these sizes take (estimated, see [`table_bytes`]).
    pub fn bytes(&self) -> Result<u64, LoaderError> {
        let layouts = layouts()?;
        Ok(self
            .entries
            .iter()
            .zip(layouts)
            .map(|(&n, l)| table_bytes(l, n))
            .sum())
    }
}

/// The sizes a new data plane's maps are made with: its state tables' and
/// its ruleset arrays'.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlaneSizes {
    pub tables: TableSizes,
    pub capacity: Capacity,
}

/// The ruleset arrays' capacity ([`Capacity`]) a data plane is made with:
/// like the state tables, chosen once (`attach --ruleset-memory`, by
/// default [`RAM_SHARE`] of the machine's memory) and read back from the
/// pins by every later command.
///
/// What `capacity` costs the kernel: each array's entries times its value
/// rounded up to 8 bytes (the kernel's `array_map_mem_usage`), times the
/// possible CPUs for a per-CPU one (`COUNTERS`, `GUARD_MEMO`).
pub fn capacity_bytes(capacity: Capacity) -> Result<u64, LoaderError> {
    // Every share is exact (whole 64ths of each array), so a capacity's
    // memory is the full one's, shifted.
    Ok(full_capacity_bytes()? >> capacity.shift)
}

/// [`capacity_bytes`] of [`Capacity::FULL`], read from the object once.
fn full_capacity_bytes() -> Result<u64, LoaderError> {
    let object = aya_obj::Object::parse(OBJECT)
        .map_err(|e| LoaderError::Load(aya::EbpfError::ParseError(e)))?;
    let cpus = aya::util::nr_cpus().map_err(|(_, source)| LoaderError::Io {
        what: "the possible CPUs (/sys/devices/system/cpu/possible)".into(),
        source,
    })? as u64;
    let mut total = 0;
    for (name, entries) in size::by_capacity(Capacity::FULL) {
        let map = object.maps.get(name).ok_or(LoaderError::MissingMap(name))?;
        let value = u64::from(map.value_size()).div_ceil(8) * 8;
        // BPF_MAP_TYPE_PERCPU_ARRAY.
        let copies = if map.map_type() == 6 { cpus } else { 1 };
        total += u64::from(entries) * value * copies;
    }
    Ok(total)
}

/// The largest capacity whose arrays fit in `budget` bytes.
pub fn capacity_for_budget(budget: u64) -> Result<Capacity, SizingError> {
    let full = full_capacity_bytes()?;
    let smallest = Capacity::SMALLEST.shift;
    (0..=smallest)
        .map(|shift| Capacity { shift })
        .find(|c| full >> c.shift <= budget)
        .ok_or(SizingError::RulesetTooSmall {
            budget,
            least: full >> smallest,
        })
}

/// The capacity a machine with `ram` bytes gets by default ([`RAM_SHARE`]
/// of it); the smallest on a machine too small even for that.
pub fn auto_capacity(ram: u64) -> Result<Capacity, LoaderError> {
    match capacity_for_budget(TableMemory::Auto.budget(ram)) {
        Ok(capacity) => Ok(capacity),
        Err(SizingError::Loader(e)) => Err(e),
        Err(_) => Ok(Capacity::SMALLEST),
    }
}

/// The capacity of the ruleset arrays pinned in `dir`: the one `RULES`'
/// size gives, else the first other pinned array's (a map an upgrade makes
/// anew follows the ones kept); `None` when none is pinned or none has a
/// capacity's size.
pub fn pinned_capacity(dir: &Path) -> Result<Option<Capacity>, LoaderError> {
    for (name, full) in size::by_capacity(Capacity::FULL) {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let info = aya::maps::MapInfo::from_pin(&path)
            .map_err(|source| LoaderError::Map { name, source })?;
        if let Some(capacity) = capacity_of(name, full, info.max_entries()) {
            return Ok(Some(capacity));
        }
    }
    Ok(None)
}

/// The capacity at which array `name` (of `full` entries at
/// [`Capacity::FULL`]) has `entries`, if there is one.
pub fn capacity_of(name: &str, full: u32, entries: u32) -> Option<Capacity> {
    let slots = u64::from(entries) * u64::from(Capacity::FULL.slots()) / u64::from(full);
    let capacity = Capacity::of_slots(u32::try_from(slots).ok()?)?;
    size::by_capacity(capacity)
        .iter()
        .any(|&(n, e)| n == name && e == entries)
        .then_some(capacity)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cgroup limits `auto` reads: v1's memory controller, v2's
    /// unified hierarchy (mounted at the root or beside v1), each the
    /// lowest of the process's cgroup and its ancestors; "max" and v1's
    /// huge "no limit" are no limit below the machine's memory.
    #[test]
    fn the_cgroup_memory_limit_is_the_lowest_on_the_way_down() {
        let root = std::env::temp_dir().join(format!("nbt-cgroup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let write = |path: &str, text: &str| {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        // v1: a limit on the parent, none on the process's own cgroup.
        write("memory/memory.limit_in_bytes", "9223372036854771712\n");
        write("memory/pods/memory.limit_in_bytes", "536870912\n");
        write(
            "memory/pods/web/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        let v1 = "4:memory:/pods/web\n3:cpu,cpuacct:/other\n0::/\n";
        assert_eq!(cgroup_memory_limit(v1, &root), Some(512 << 20));
        // The root's "no limit" only: a limit above any machine's memory.
        assert!(cgroup_memory_limit("4:memory:/\n", &root).unwrap() > 1 << 60);
        // Not mounted (`ip netns exec`), or in no hierarchy: none.
        assert_eq!(cgroup_memory_limit(v1, &root.join("absent")), None);
        assert_eq!(cgroup_memory_limit("", &root), None);
        // v2 beside v1 (hybrid): the unified hierarchy's `memory.max`.
        write("unified/cgroup.controllers", "memory\n");
        write("unified/memory.max", "max\n");
        write("unified/box/memory.max", "268435456\n");
        write("unified/box/app/memory.max", "max\n");
        assert_eq!(cgroup_memory_limit("0::/box/app\n", &root), Some(256 << 20));
        assert_eq!(
            cgroup_memory_limit(&format!("{v1}0::/box/app\n"), &root),
            Some(256 << 20)
        );
        // v2 alone at the root, a container's "/" with its own limit.
        let v2 = root.join("unified");
        write("unified/memory.max", "134217728\n");
        assert_eq!(cgroup_memory_limit("0::/\n", &v2), Some(128 << 20));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(TableMemory::parse("auto"), Ok(TableMemory::Auto));
        assert_eq!(TableMemory::parse("16M"), Ok(TableMemory::Bytes(16 << 20)));
        assert_eq!(
            TableMemory::parse("16MiB"),
            Ok(TableMemory::Bytes(16 << 20))
        );
        assert_eq!(TableMemory::parse("1g"), Ok(TableMemory::Bytes(1 << 30)));
        assert_eq!(
            TableMemory::parse("512K"),
            Ok(TableMemory::Bytes(512 << 10))
        );
        assert_eq!(TableMemory::parse("4096"), Ok(TableMemory::Bytes(4096)));
        for bad in ["", "M", "16X", "-1M", "sixteen", "99999999999999G"] {
            let err = TableMemory::parse(bad).unwrap_err();
            assert!(err.contains("expected `auto` or a size"), "{bad}: {err}");
        }
    }

    /// Every table divides into [`TABLE_SHRINK_MAX`] parts exactly, and is
    /// a hash the memory model knows (LRU or allocated as added).
    #[test]
    fn every_table_shrinks_evenly_and_is_a_hash() {
        let object = aya_obj::Object::parse(OBJECT).unwrap();
        for (name, default) in STATE_TABLES {
            assert_eq!(default % TABLE_SHRINK_MAX, 0, "{name}");
            let map = &object.maps[name];
            // BPF_MAP_TYPE_HASH 1, BPF_MAP_TYPE_LRU_HASH 9.
            match map.map_type() {
                9 => assert_eq!(map.map_flags() & MAP_NO_PREALLOC, 0, "{name}"),
                1 => assert_ne!(map.map_flags() & MAP_NO_PREALLOC, 0, "{name}"),
                t => panic!("{name}: type {t}"),
            }
        }
    }

    /// The model gives today's figures (bpftool's `bytes_memlock` on Linux
    /// 6.18, rounded to 0.1 MiB: the kernel adds a few KiB per map).
    #[test]
    fn memory_model_matches_the_kernel() {
        let d = TableSizes::defaults();
        let layouts = layouts().unwrap();
        let mib = |name: &str| {
            let i = STATE_TABLES.iter().position(|(n, _)| *n == name).unwrap();
            table_bytes(layouts[i], d.entries[i]) as f64 / (1024.0 * 1024.0)
        };
        assert_eq!(mib("CT_ESTABLISHED"), 38.0);
        assert_eq!(mib("RECENT"), 23.0);
        assert_eq!(mib("IPSET_MEMBERS"), 64.0);
        assert_eq!(mib("CONNLIMIT"), 8.625);
    }

    #[test]
    fn a_budget_shrinks_every_table_alike() {
        let full = TableSizes::defaults().bytes().unwrap();
        assert_eq!(
            TableSizes::for_budget(full, &[]).unwrap(),
            TableSizes::defaults()
        );
        assert_eq!(
            TableSizes::for_budget(u64::MAX, &[]).unwrap(),
            TableSizes::defaults()
        );
        let small = TableSizes::for_budget(16 << 20, &[]).unwrap();
        assert!(small.bytes().unwrap() <= 16 << 20);
        assert!(small.bytes().unwrap() > 12 << 20, "{small:?}");
        let est = small.get("CT_ESTABLISHED").unwrap();
        let ratio = CT_ESTABLISHED_ENTRIES / est;
        assert!((8..=16).contains(&ratio), "{small:?}");
        assert_eq!(
            small.get("CT_UNREPLIED"),
            Some(CT_UNREPLIED_ENTRIES * est / CT_ESTABLISHED_ENTRIES)
        );
        assert!(small.get("IPSET_MEMBERS").unwrap().is_power_of_two());
        // Fixed tables stay outside the budget.
        let fixed = TableSizes::for_budget(16 << 20, &[("CT_ESTABLISHED", 1 << 20)]).unwrap();
        assert_eq!(fixed.get("CT_ESTABLISHED"), Some(1 << 20));
        assert!(fixed.get("CT_UNREPLIED").unwrap() >= small.get("CT_UNREPLIED").unwrap());
        let err = TableSizes::for_budget(1 << 20, &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("too little") && err.contains("at least"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_table_follows_the_pinned_ones() {
        let small = TableSizes::for_budget(16 << 20, &[("CT_ESTABLISHED", 1 << 20)]).unwrap();
        let mut pinned = small.entries.map(Some);
        let proxied = STATE_TABLES
            .iter()
            .position(|(n, _)| *n == "PROXIED")
            .unwrap();
        pinned[proxied] = None;
        let following = TableSizes::following(&pinned).unwrap().unwrap();
        assert_eq!(following.get("PROXIED"), small.get("PROXIED"));
        assert_eq!(
            TableSizes::following(&[None; STATE_TABLES.len()]).unwrap(),
            None
        );
        let full = TableSizes::defaults().entries.map(Some);
        assert_eq!(
            TableSizes::following(&full).unwrap(),
            Some(TableSizes::defaults())
        );
    }

    /// The ruleset arrays' capacity: the largest that fits a budget, the
    /// least refused below it, and each array's size names its capacity
    /// back (what later commands read from the pins).
    #[test]
    fn a_budget_picks_the_ruleset_capacity() {
        let full = capacity_bytes(Capacity::FULL).unwrap();
        let least = capacity_bytes(Capacity::SMALLEST).unwrap();
        assert_eq!(capacity_for_budget(u64::MAX).unwrap(), Capacity::FULL);
        assert_eq!(capacity_for_budget(full).unwrap(), Capacity::FULL);
        assert_eq!(capacity_for_budget(full - 1).unwrap().shift, 1);
        assert_eq!(capacity_for_budget(least).unwrap(), Capacity::SMALLEST);
        let err = capacity_for_budget(least - 1).unwrap_err().to_string();
        assert!(
            err.contains("--ruleset-memory") && err.contains("too little"),
            "{err}"
        );
        // Each halving halves the memory (the per-CPU arrays' too).
        assert_eq!(full, least * u64::from(CAPACITY_SHRINK_MAX));
        // A 512 MiB box: 16 MiB for the arrays; this machine keeps them all.
        assert!(capacity_bytes(auto_capacity(512 << 20).unwrap()).unwrap() <= 16 << 20);
        assert_eq!(auto_capacity(24 << 30).unwrap(), Capacity::FULL);
        assert_eq!(auto_capacity(1 << 20).unwrap(), Capacity::SMALLEST);
        for shift in 0..=CAPACITY_SHRINK_MAX.trailing_zeros() {
            let capacity = Capacity { shift };
            for ((name, full), (_, entries)) in size::by_capacity(Capacity::FULL)
                .into_iter()
                .zip(size::by_capacity(capacity))
            {
                assert_eq!(capacity_of(name, full, entries), Some(capacity), "{name}");
                assert_eq!(capacity_of(name, full, entries + 1), None, "{name}");
            }
        }
    }

    #[test]
    fn auto_takes_a_share_of_memory() {
        assert_eq!(TableMemory::Auto.budget(512 << 20), 16 << 20);
        let full = TableSizes::defaults().bytes().unwrap();
        // This machine's 24 GiB keep today's sizes.
        assert!(TableMemory::Auto.budget(24 << 30) >= full);
        assert_eq!(
            TableSizes::auto(24 << 30, &[]).unwrap(),
            TableSizes::defaults()
        );
        let tiny = TableSizes::auto(16 << 20, &[]).unwrap();
        assert_eq!(
            tiny.get("CT_ESTABLISHED"),
            Some(CT_ESTABLISHED_ENTRIES / TABLE_SHRINK_MAX)
        );
    }
}
