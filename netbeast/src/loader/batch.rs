//! Many entries of an array map in one system call: `BPF_MAP_LOOKUP_BATCH`
//! and `BPF_MAP_UPDATE_BATCH` (Linux 5.6). aya 0.14 has one call per
//! entry; at 10,000 rules a commit made some 40,000 of them, most of its
//! map time (docs/BENCHMARKS.md, "The control plane"). Used for the plain
//! and per-CPU arrays that hold a generation's tables and counters.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use aya::{Pod, maps::Map};

use super::{LoaderError, map_err};

/// `enum bpf_cmd` values of the two commands.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// Entries per system call: a bound on the buffers a call copies, large
/// enough that a 100,000-rule chain takes a handful of calls.
pub const BATCH_ENTRIES: usize = 16_384;

/// `union bpf_attr`'s member for the batch commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn fd_of<'a>(map: &'a Map, name: &'static str) -> Result<BorrowedFd<'a>, LoaderError> {
    match map {
        Map::Array(data) | Map::PerCpuArray(data) | Map::HashMap(data) => Ok(data.fd().as_fd()),
        _ => Err(LoaderError::Io {
            what: format!("map {name} in batches"),
            source: std::io::Error::other(
                "batches are only used for array maps and hash maps keyed by a u32",
            ),
        }),
    }
}

/// Refuses a map whose entries are not `V`s (pins of another netbeast
/// version) with the error aya's typed maps give, as the per-entry path
/// did: the kernel would otherwise stride through the buffers by its own
/// value size and misread every entry.
fn check_layout<V: Pod>(map: &Map, name: &'static str) -> Result<(), LoaderError> {
    use aya::maps::{Array, HashMap, MapData, PerCpuArray};
    match map {
        Map::PerCpuArray(_) => PerCpuArray::<&MapData, V>::try_from(map).map(drop),
        Map::HashMap(_) => HashMap::<&MapData, u32, V>::try_from(map).map(drop),
        _ => Array::<&MapData, V>::try_from(map).map(drop),
    }
    .map_err(map_err(name))
}

fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> std::io::Result<()> {
    // SAFETY: `attr` is a valid, fully initialized bpf_attr prefix of the
    // size given; the pointers in it point at buffers of `count` entries
    // that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as u32,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The size of one value in a batch buffer: per-CPU maps take one copy per
/// possible CPU, each rounded up to 8 bytes, as the kernel lays them out.
fn value_stride<V>(per_cpu: Option<usize>) -> usize {
    match per_cpu {
        None => std::mem::size_of::<V>(),
        Some(cpus) => std::mem::size_of::<V>().next_multiple_of(8) * cpus,
    }
}

fn batch_error(name: &'static str, what: &str, source: std::io::Error) -> LoaderError {
    LoaderError::Io {
        what: format!("map {name} ({what} in batches, BPF_MAP_*_BATCH, Linux 5.6 or later)"),
        source,
    }
}

/// Writes `entries` (index, value) into the array `map`. `bytes` gives
/// each value's bytes in the map's layout (for per-CPU arrays, `cpus`
/// copies).
fn update_raw(
    map: &Map,
    name: &'static str,
    indexes: &[u32],
    values: &[u8],
    stride: usize,
) -> Result<(), LoaderError> {
    let fd = fd_of(map, name)?;
    debug_assert_eq!(values.len(), indexes.len() * stride);
    for (keys, values) in indexes
        .chunks(BATCH_ENTRIES)
        .zip(values.chunks(BATCH_ENTRIES * stride))
    {
        let mut attr = BatchAttr {
            keys: keys.as_ptr() as u64,
            values: values.as_ptr() as u64,
            count: keys.len() as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        bpf(BPF_MAP_UPDATE_BATCH, &mut attr).map_err(|e| batch_error(name, "writing", e))?;
        if attr.count as usize != keys.len() {
            return Err(batch_error(
                name,
                "writing",
                std::io::Error::other(format!(
                    "the kernel wrote {} of {} entries",
                    attr.count,
                    keys.len()
                )),
            ));
        }
    }
    Ok(())
}

/// Writes `values[i]` at index `indexes[i]` of the array `map` (or key
/// `indexes[i]` of a hash map keyed by a `u32`).
pub fn update<V: Pod>(
    map: &Map,
    name: &'static str,
    indexes: &[u32],
    values: &[V],
) -> Result<(), LoaderError> {
    assert_eq!(indexes.len(), values.len(), "one value per index");
    check_layout::<V>(map, name)?;
    // SAFETY: `V: Pod` is plain data without padding the kernel could
    // leak or misread; a slice of them is its bytes.
    let bytes = unsafe {
        std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
    };
    update_raw(map, name, indexes, bytes, value_stride::<V>(None))
}

/// Writes `value` on every CPU at each of `indexes` of the per-CPU array
/// `map`.
pub fn update_per_cpu<V: Pod>(
    map: &Map,
    name: &'static str,
    indexes: &[u32],
    value: V,
    cpus: usize,
) -> Result<(), LoaderError> {
    check_layout::<V>(map, name)?;
    let stride = value_stride::<V>(Some(cpus));
    let copy = std::mem::size_of::<V>().next_multiple_of(8);
    let mut one = vec![0u8; copy];
    // SAFETY: `V: Pod`, as in `update`.
    one[..std::mem::size_of::<V>()].copy_from_slice(unsafe {
        std::slice::from_raw_parts((&value as *const V).cast::<u8>(), std::mem::size_of::<V>())
    });
    let entry: Vec<u8> = one.repeat(cpus);
    let bytes = entry.repeat(indexes.len().min(BATCH_ENTRIES));
    for chunk in indexes.chunks(BATCH_ENTRIES) {
        update_raw(map, name, chunk, &bytes[..chunk.len() * stride], stride)?;
    }
    Ok(())
}

/// Reads `count` entries from index `first` on of the array `map`; for a
/// per-CPU array (`cpus`), each entry's copies, one per possible CPU.
pub fn lookup<V: Pod>(
    map: &Map,
    name: &'static str,
    first: u32,
    count: usize,
    per_cpu: Option<usize>,
) -> Result<Vec<Vec<V>>, LoaderError> {
    check_layout::<V>(map, name)?;
    let fd = fd_of(map, name)?;
    let stride = value_stride::<V>(per_cpu);
    let copies = per_cpu.unwrap_or(1);
    let copy = stride / copies;
    let mut out = Vec::with_capacity(count);
    let mut next = first;
    while out.len() < count {
        let n = (count - out.len()).min(BATCH_ENTRIES);
        let mut keys = vec![0u32; n];
        let mut values = vec![0u8; n * stride];
        // The kernel starts after `in_batch`: none for index 0.
        let before = next.wrapping_sub(1);
        let mut out_batch = 0u32;
        let mut attr = BatchAttr {
            in_batch: if next == 0 {
                0
            } else {
                &before as *const u32 as u64
            },
            out_batch: &mut out_batch as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: n as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        match bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) {
            Ok(()) => {}
            // The end of the array: `count` says how many it read.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(batch_error(name, "reading", e)),
        }
        let got = attr.count as usize;
        if got == 0 {
            return Err(batch_error(
                name,
                "reading",
                std::io::Error::other(format!(
                    "index {next} is past the array's end ({count} entries asked for)"
                )),
            ));
        }
        for (i, key) in keys[..got].iter().enumerate() {
            debug_assert_eq!(*key, next + i as u32);
            let entry = &values[i * stride..(i + 1) * stride];
            out.push(
                (0..copies)
                    .map(|c| {
                        // SAFETY: `V: Pod`; the bytes are one value as the
                        // kernel wrote it, read unaligned.
                        unsafe { std::ptr::read_unaligned(entry[c * copy..].as_ptr().cast::<V>()) }
                    })
                    .collect(),
            );
        }
        next += got as u32;
    }
    Ok(out)
}

/// The `memlock` line of `map`'s fdinfo: the bytes the kernel charges for
/// it.
pub fn memlock(map: &Map, name: &'static str) -> Result<u64, LoaderError> {
    use Map::*;
    let data = match map {
        Array(d) | PerCpuArray(d) | HashMap(d) | PerCpuHashMap(d) | LruHashMap(d)
        | PerCpuLruHashMap(d) | LpmTrie(d) | RingBuf(d) | ProgramArray(d) | Queue(d) | Stack(d)
        | BloomFilter(d) | PerfEventArray(d) | Unsupported(d) => d,
        _ => {
            return Err(LoaderError::Io {
                what: format!("map {name}'s memory"),
                source: std::io::Error::other("a map type netbeast does not pin"),
            });
        }
    };
    let path = format!("/proc/self/fdinfo/{}", data.fd().as_fd().as_raw_fd());
    let text = std::fs::read_to_string(&path).map_err(|source| LoaderError::Io {
        what: path.clone(),
        source,
    })?;
    text.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| LoaderError::Io {
            what: path,
            source: std::io::Error::other("no memlock line"),
        })
}
