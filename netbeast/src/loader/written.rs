//! What each generation's arrays hold, so that a ruleset change writes only
//! the entries whose value differs (issue 17; docs/ARCHITECTURE.md, "Partial
//! map writes"). A one-rule change leaves most class headers, class words,
//! key chunks and rule slots as they were: the compile is still whole, but
//! the write is the change.
//!
//! The record is a digest per written entry of `RECORDED`'s arrays, per
//! generation, stamped with the generation's address epoch (which every
//! write of a generation advances, in `CHAINS`, *before* it writes anything
//! else: a write cut short leaves the kernel's epoch ahead of the record's,
//! and the record is ignored) and with the `CHAINS` map's id (maps made
//! anew). An ignored or missing record only costs a whole write.

use std::{
    hash::{Hash, Hasher},
    path::Path,
};

use aya::Pod;
use netbeast_common::GENERATIONS;

use super::{LoaderError, batch};

/// The arrays whose entries the record follows, in record order. The
/// others are written whole: `COUNTERS` must start from zero, `ADDR_HASH`'s
/// keys carry the new epoch, `CHAINS` is a few entries. The target tables
/// and `GUARDS` are recorded too: kube-proxy's 10,000 services have 20,000
/// DNAT targets and as many guards, written one system call each (26 ms of
/// a sync) where a sync changes a handful.
pub const RECORDED: [&str; 10] = [
    "CLASS_HEADERS",
    "CLASS_WORDS",
    "KEY_CLASSES",
    "RULES",
    "NAT_TARGETS",
    "NAT6_ADDRS",
    "GUARDS",
    "LOG_TARGETS",
    "MARK_TARGETS",
    "CONNMARK_TARGETS",
];

/// The file, in a namespace's state directory.
pub const WRITTEN_FILE: &str = "tables.written";

/// The file's first eight bytes (its format).
const MAGIC: u64 = u64::from_le_bytes(*b"NBWRIT02");

/// One generation's entries: (index, digest of the value), ascending by
/// index, per array of `RECORDED`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenWritten {
    /// The generation's address epoch once the write was complete.
    pub epoch: u32,
    pub arrays: [Vec<(u32, u64)>; RECORDED.len()],
    /// Of the write that made this record: the entries written, and the
    /// entries it had (not stored).
    pub written: usize,
    pub entries: usize,
}

/// What this process knows the arrays of each generation hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// The `CHAINS` map's id the record is about (0: unknown).
    pub map_id: u32,
    pub gens: [Option<GenWritten>; GENERATIONS],
    /// Of the last write's entries of the recorded arrays: how many were
    /// written, and how many it had (the profile and the tests show it).
    pub last: (usize, usize),
}

/// The digest of one value's bytes (SipHash with fixed keys: the same in
/// every process of one build; another build's digests only differ, which
/// costs writes, never a skipped one).
fn digest<V: Pod>(value: &V) -> u64 {
    // SAFETY: `V: Pod` is plain data without padding; its bytes are its
    // value as the map holds it.
    let bytes = unsafe {
        std::slice::from_raw_parts((value as *const V).cast::<u8>(), std::mem::size_of::<V>())
    };
    let mut h = std::hash::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// The entries of `indexes`/`values` that `old` (ascending, or `None`:
/// nothing known) does not record with the same value, and the record
/// after they are written: `old` with these entries replaced or added.
pub fn changed<V: Pod>(
    old: Option<&[(u32, u64)]>,
    indexes: &[u32],
    values: &[V],
) -> (Vec<u32>, Vec<V>, Vec<(u32, u64)>) {
    assert_eq!(indexes.len(), values.len(), "one value per index");
    let mut new: Vec<(u32, u64, usize)> = indexes
        .iter()
        .zip(values)
        .enumerate()
        .map(|(i, (&ix, v))| (ix, digest(v), i))
        .collect();
    if !new.is_sorted_by_key(|e| e.0) {
        new.sort_unstable_by_key(|e| e.0);
    }
    let old = old.unwrap_or(&[]);
    let mut record = Vec::with_capacity(old.len().max(new.len()));
    let (mut write_ix, mut write_v) = (Vec::new(), Vec::new());
    let mut o = 0;
    for &(ix, d, i) in &new {
        while o < old.len() && old[o].0 < ix {
            record.push(old[o]);
            o += 1;
        }
        let known = o < old.len() && old[o].0 == ix;
        if !(known && old[o].1 == d) {
            write_ix.push(ix);
            write_v.push(values[i]);
        }
        if known {
            o += 1;
        }
        record.push((ix, d));
    }
    record.extend_from_slice(&old[o..]);
    (write_ix, write_v, record)
}

/// Writes the entries of `indexes`/`values` into the array `name` (one of
/// `RECORDED`) that `old` does not record as holding them already, and
/// records them in `new`. Returns how many were written.
pub fn update<V: Pod>(
    map: &aya::maps::Map,
    name: &str,
    old: Option<&GenWritten>,
    new: &mut GenWritten,
    indexes: &[u32],
    values: &[V],
) -> Result<usize, LoaderError> {
    let slot = RECORDED
        .iter()
        .position(|&n| n == name)
        .unwrap_or_else(|| panic!("{name} is not a recorded array"));
    let (ix, vs, record) = changed(old.map(|g| &g.arrays[slot][..]), indexes, values);
    batch::update(map, RECORDED[slot], &ix, &vs)?;
    new.arrays[slot] = record;
    new.written += ix.len();
    new.entries += indexes.len();
    Ok(ix.len())
}

impl Written {
    /// The record as file bytes.
    pub fn encode(&self, object: u64) -> Vec<u8> {
        let entries: usize = self
            .gens
            .iter()
            .flatten()
            .map(|g| g.arrays.iter().map(Vec::len).sum::<usize>())
            .sum();
        let mut out = Vec::with_capacity(32 + entries * 12);
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&object.to_le_bytes());
        out.extend_from_slice(&self.map_id.to_le_bytes());
        for g in &self.gens {
            let Some(g) = g else {
                out.extend_from_slice(&0u32.to_le_bytes());
                continue;
            };
            out.extend_from_slice(&1u32.to_le_bytes());
            out.extend_from_slice(&g.epoch.to_le_bytes());
            for array in &g.arrays {
                out.extend_from_slice(&(array.len() as u32).to_le_bytes());
                for &(ix, d) in array {
                    out.extend_from_slice(&ix.to_le_bytes());
                    out.extend_from_slice(&d.to_le_bytes());
                }
            }
        }
        out
    }

    /// The record of `bytes`, if they are one of this build (`object`).
    pub fn decode(bytes: &[u8], object: u64) -> Option<Written> {
        let mut at = 0;
        let mut take = |n: usize| {
            let s = bytes.get(at..at + n)?;
            at += n;
            Some(s)
        };
        let u32_of = |s: &[u8]| u32::from_le_bytes(s.try_into().expect("4 bytes"));
        let u64_of = |s: &[u8]| u64::from_le_bytes(s.try_into().expect("8 bytes"));
        if u64_of(take(8)?) != MAGIC || u64_of(take(8)?) != object {
            return None;
        }
        let mut written = Written {
            map_id: u32_of(take(4)?),
            ..Default::default()
        };
        for g in &mut written.gens {
            if u32_of(take(4)?) == 0 {
                continue;
            }
            let mut gen_written = GenWritten {
                epoch: u32_of(take(4)?),
                ..Default::default()
            };
            for array in &mut gen_written.arrays {
                let n = u32_of(take(4)?) as usize;
                let raw = take(n.checked_mul(12)?)?;
                *array = raw
                    .chunks_exact(12)
                    .map(|e| (u32_of(&e[..4]), u64_of(&e[4..])))
                    .collect();
                if !array.is_sorted_by_key(|e| e.0) {
                    return None;
                }
            }
            *g = Some(gen_written);
        }
        (take(1).is_none()).then_some(written)
    }

    /// The record stored at `path`, or an empty one (none, damaged, of
    /// another build).
    pub fn load(path: &Path, object: u64) -> Written {
        std::fs::read(path)
            .ok()
            .and_then(|bytes| Written::decode(&bytes, object))
            .unwrap_or_default()
    }

    /// Stores the record at `path` (temporary file and rename). No fsync:
    /// the maps it describes do not outlive a reboot, and a record lost or
    /// stale only costs a whole write (the epoch check).
    pub fn store(&self, path: &Path, object: u64) -> Result<(), LoaderError> {
        let tmp = path.with_extension("tmp");
        let io = |source| LoaderError::Io {
            what: format!("the record of written map entries {}", path.display()),
            source,
        };
        std::fs::write(&tmp, self.encode(object)).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `changed` against a plain model of an array: after any sequence of
    /// writes through it, the array holds what whole writes give, and the
    /// record says what the array holds.
    #[test]
    fn changed_entries_give_the_whole_write() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..200 {
            let (mut whole, mut partial) = (vec![0u64; 64], vec![0u64; 64]);
            let mut record: Option<Vec<(u32, u64)>> = None;
            for _ in 0..20 {
                let mut indexes: Vec<u32> = (0..64).filter(|_| next(3) == 0).collect();
                if next(2) == 0 {
                    indexes.reverse();
                }
                let values: Vec<u64> = indexes.iter().map(|_| next(4)).collect();
                for (&i, &v) in indexes.iter().zip(&values) {
                    whole[i as usize] = v;
                }
                // Now and then the record is lost: a whole write.
                let old = record.take().filter(|_| next(10) != 0);
                let (ix, vs, new) = changed(old.as_deref(), &indexes, &values);
                for (&i, &v) in ix.iter().zip(&vs) {
                    partial[i as usize] = v;
                }
                assert_eq!(whole, partial);
                for &(i, d) in &new {
                    assert_eq!(d, digest(&partial[i as usize]));
                }
                assert!(new.is_sorted_by_key(|e| e.0));
                record = Some(new);
            }
        }
    }

    #[test]
    fn the_record_reads_back_and_refuses_another_build() {
        let written = Written {
            map_id: 7,
            gens: [
                None,
                Some(GenWritten {
                    epoch: 3,
                    arrays: std::array::from_fn(|a| match a {
                        0 => vec![(1, 2), (5, 6)],
                        2 => vec![(0, u64::MAX)],
                        9 => vec![(4, 7)],
                        _ => vec![],
                    }),
                    ..Default::default()
                }),
            ],
            ..Default::default()
        };
        let bytes = written.encode(42);
        assert_eq!(Written::decode(&bytes, 42), Some(written));
        assert_eq!(Written::decode(&bytes, 43), None);
        assert_eq!(Written::decode(&bytes[..bytes.len() - 1], 42), None);
    }
}
