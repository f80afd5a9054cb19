//! Writes a compiled ruleset into the maps of its (inactive) generation, and
//! reads rule counters back.

use aya::maps::{Array, HashMap, LpmTrie, MapData, lpm_trie::Key};
use netbeast_common::{
    ADDR_EPOCH_MAX, ADDR_HASH_BUCKETS, ADDR_HASH_WAYS, ADDR_TRIE, AddrKey, AddrSlot,
    CLASS_WORD_CHUNK, Capacity, ChainConfig, ConnlimitKey, ConnlimitKey6, ConnlimitList,
    ConnlimitList6, Counter as KernelCounter, HashlimitTable, IfaceKey, KEY_CHUNK,
    MAX_HASHLIMIT_TABLES, MacKey, NatTarget, addr_hash_key, chain_index, connmark_target_index,
    counter_index, field, guard_index, log_target_index, mark_target_index, nat_target_index,
    rule_index, target,
};

use super::{
    Dataplane, LoaderError, batch, map_err,
    written::{self, GenWritten, Written},
};
use crate::{compile::CompiledRuleset, rules::model::Counter};

/// Removes every hash/trie entry of `generation`, then writes `compiled`.
/// Of the arrays of `written::RECORDED`, only the entries whose value the
/// record of what the generation holds does not show are written.
pub(super) fn write(dp: &mut Dataplane, compiled: &CompiledRuleset) -> Result<(), LoaderError> {
    let generation = compiled.generation;
    let g = generation as u8;

    // The generation's next address epoch goes into `CHAINS` first: from
    // here on the record of what the generation held is out of date, and a
    // write cut short leaves it ignored (the kernel's epoch moved on).
    let (previous, epoch) = next_epoch(dp, generation)?;
    let old = take_record(dp, generation, previous)?;
    let mut new = GenWritten {
        epoch,
        ..Default::default()
    };

    // Class headers and words: arrays, overwritten. Entries past this
    // ruleset's are stale but never read (no table names them).
    {
        let headers = &compiled.packed.headers;
        let base = generation * compiled.capacity.classes();
        let ids: Vec<u32> = (base..base + headers.len() as u32).collect();
        written::update(
            dp.map("CLASS_HEADERS")?,
            "CLASS_HEADERS",
            old.as_ref(),
            &mut new,
            &ids,
            headers,
        )?;
    }
    {
        let first = compiled.packed.base / CLASS_WORD_CHUNK as u32;
        let chunks: Vec<[u64; CLASS_WORD_CHUNK]> = compiled
            .packed
            .words
            .chunks(CLASS_WORD_CHUNK)
            .map(|chunk| {
                let mut value = [0u64; CLASS_WORD_CHUNK];
                value[..chunk.len()].copy_from_slice(chunk);
                value
            })
            .collect();
        let indexes: Vec<u32> = (first..first + chunks.len() as u32).collect();
        written::update(
            dp.map("CLASS_WORDS")?,
            "CLASS_WORDS",
            old.as_ref(),
            &mut new,
            &indexes,
            &chunks,
        )?;
    }
    crate::profile::phase("maps: class headers, words");
    // Keyed tables: drop what the generation held before.
    {
        let mut trie: LpmTrie<&mut MapData, AddrKey, u32> =
            LpmTrie::try_from(dp.map_mut("ADDR_CLASSES")?).map_err(map_err("ADDR_CLASSES"))?;
        let stale: Vec<Key<AddrKey>> = trie
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.data().generation == g)
            .collect();
        for k in stale {
            trie.remove(&k).map_err(map_err("ADDR_CLASSES"))?;
        }
        for (c, chain) in compiled.chains.iter().enumerate() {
            // Only the fields the kernel looks up in the trie.
            let in_trie = |f: usize| chain.config.addr_lengths[field::addr_slot(f)][0] == ADDR_TRIE;
            for prefix in chain.addr_prefixes.iter().filter(|p| in_trie(p.field)) {
                let (bits, key) = prefix.trie_key(generation, c as u32);
                trie.insert(&Key::new(bits, key), prefix.class, 0)
                    .map_err(map_err("ADDR_CLASSES"))?;
            }
        }
    }
    crate::profile::phase("maps: address trie");
    {
        let mut ifaces: HashMap<&mut MapData, IfaceKey, u32> =
            HashMap::try_from(dp.map_mut("IFACE_CLASSES")?).map_err(map_err("IFACE_CLASSES"))?;
        let stale: Vec<IfaceKey> = ifaces
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.generation == g)
            .collect();
        for k in stale {
            ifaces.remove(&k).map_err(map_err("IFACE_CLASSES"))?;
        }
        for (c, chain) in compiled.chains.iter().enumerate() {
            for entry in &chain.ifaces {
                let key = IfaceKey {
                    generation: g,
                    chain: c as u8,
                    field: entry.field as u8,
                    _pad: 0,
                    ifindex: entry.ifindex,
                };
                ifaces
                    .insert(key, entry.class, 0)
                    .map_err(map_err("IFACE_CLASSES"))?;
            }
        }
    }
    {
        let mut macs: HashMap<&mut MapData, MacKey, u32> =
            HashMap::try_from(dp.map_mut("MAC_CLASSES")?).map_err(map_err("MAC_CLASSES"))?;
        let stale: Vec<MacKey> = macs
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.generation == g)
            .collect();
        for k in stale {
            macs.remove(&k).map_err(map_err("MAC_CLASSES"))?;
        }
        for (c, chain) in compiled.chains.iter().enumerate() {
            for entry in &chain.macs {
                let key = MacKey {
                    generation: g,
                    chain: c as u8,
                    mac: entry.mac,
                };
                macs.insert(key, entry.class, 0)
                    .map_err(map_err("MAC_CLASSES"))?;
            }
        }
    }

    crate::profile::phase("maps: iface, mac");
    // Arrays: overwrite the generation's slots.
    {
        // Only the key fields a chain uses: the kernel never reads the
        // others' chunks under this configuration, and a length table alone
        // is a thousand chunks.
        let (mut indexes, mut values) = (Vec::new(), Vec::<[u32; KEY_CHUNK]>::new());
        for chain in &compiled.chains {
            for f in (0..field::COUNT).filter(|f| chain.config.fields_used & (1 << f) != 0) {
                for (index, value) in chain.stored_key_chunks(f) {
                    indexes.push(index);
                    values.push(value);
                }
            }
        }
        written::update(
            dp.map("KEY_CLASSES")?,
            "KEY_CLASSES",
            old.as_ref(),
            &mut new,
            &indexes,
            &values,
        )?;
    }
    crate::profile::phase("maps: key classes");
    // The target tables and the guards, before the rules that name them.
    // Entries past the last one are left as they are: no rule of this
    // generation names them. A guard's state is not here: it lives in the
    // state slot its record names (`c`), which the caller has cleared for
    // new guards and kept for the guards of unchanged rules
    // (docs/ARCHITECTURE.md "Guards").
    let mut record = (old.as_ref(), &mut new);
    let g = |index: fn(u32, u32) -> u32| move |n| index(generation, n);
    let capacity = compiled.capacity;
    let sized = |index: fn(Capacity, u32, u32) -> u32| move |n| index(capacity, generation, n);
    update_all(
        dp,
        "NAT_TARGETS",
        &mut record,
        &compiled.nat_targets,
        sized(nat_target_index),
    )?;
    // Only the ip6tables rules' (the kernel reads no other entry).
    let (v6, addrs6): (Vec<u32>, Vec<netbeast_common::NatAddrs6>) = compiled
        .nat_addrs6
        .iter()
        .enumerate()
        .filter(|(_, a)| **a != netbeast_common::NatAddrs6::default())
        .map(|(n, a)| (nat_target_index(capacity, generation, n as u32), *a))
        .unzip();
    written::update(
        dp.map("NAT6_ADDRS")?,
        "NAT6_ADDRS",
        record.0,
        record.1,
        &v6,
        &addrs6,
    )?;
    update_all(
        dp,
        "GUARDS",
        &mut record,
        &compiled.guards,
        sized(guard_index),
    )?;
    write_hashlimit_tables(dp, &compiled.hashlimit_tables)?;
    update_all(
        dp,
        "LOG_TARGETS",
        &mut record,
        &compiled.log_targets,
        g(log_target_index),
    )?;
    update_all(
        dp,
        "MARK_TARGETS",
        &mut record,
        &compiled.mark_targets,
        g(mark_target_index),
    )?;
    let connmarks = &compiled.connmark_targets;
    update_all(
        dp,
        "CONNMARK_TARGETS",
        &mut record,
        connmarks,
        g(connmark_target_index),
    )?;
    crate::profile::phase("maps: nat, guards, log");
    // Every slot's target is one the kernel's table knows: an unknown code
    // is refused here, before anything of the generation is live (the
    // kernel would take it as no target at all, never as a drop).
    for (c, chain) in compiled.chains.iter().enumerate() {
        for (slot, action) in chain.rules.iter().enumerate() {
            if target::flags(action.target) & target::flag::KNOWN == 0 {
                return Err(LoaderError::UnknownTarget {
                    code: action.target,
                    chain: c as u32,
                    slot: slot as u32,
                });
            }
        }
    }
    {
        // A chain's slots are consecutive, from its base.
        let (mut indexes, mut values) = (Vec::new(), Vec::new());
        for chain in &compiled.chains {
            let first = rule_index(compiled.capacity, generation, chain.config.rule_base, 0);
            indexes.extend(first..first + chain.rules.len() as u32);
            values.extend_from_slice(&chain.rules);
        }
        written::update(
            dp.map("RULES")?,
            "RULES",
            old.as_ref(),
            &mut new,
            &indexes,
            &values,
        )?;
    }
    crate::profile::phase("maps: rules");
    {
        // Counters of the generation start from zero; the totals the user
        // sees are the rule's saved base plus these.
        let cpus = possible_cpus()?;
        // The built-in chains' rules and policies, then the rules of the
        // user-defined chains (their own counter range).
        let capacity = compiled.capacity;
        let builtin = compiled.chains.iter().flat_map(|chain| {
            let config = chain.config;
            (0..chain.builtin_rules)
                .map(move |rule| config.counter_base + rule)
                .chain([config.policy_counter])
                .map(move |n| counter_index(capacity, generation, n))
        });
        let user_base = compiled.chains[0].config.user_counter_base;
        let user = (0..compiled.user_chain_rules)
            .map(|n| counter_index(capacity, generation, user_base + n));
        let indexes: Vec<u32> = builtin.chain(user).collect();
        batch::update_per_cpu(
            dp.map("COUNTERS")?,
            "COUNTERS",
            &indexes,
            KernelCounter::default(),
            cpus,
        )?;
    }
    crate::profile::phase("maps: counters");
    write_addr_hash(dp, compiled, previous, epoch)?;
    crate::profile::phase("maps: address hash");
    {
        let mut chains: Array<&mut MapData, ChainConfig> =
            Array::try_from(dp.map_mut("CHAINS")?).map_err(map_err("CHAINS"))?;
        for (c, chain) in compiled.chains.iter().enumerate() {
            let config = ChainConfig {
                addr_epoch: epoch,
                ..chain.config
            };
            chains
                .set(chain_index(generation, c as u32), config, 0)
                .map_err(map_err("CHAINS"))?;
        }
    }
    store_record(dp, generation, new);
    Ok(())
}

/// The entries of `generation` that the record of written entries lists,
/// as the maps hold them (bytes), per array of `written::RECORDED`.
pub(super) fn recorded_entries(
    dp: &Dataplane,
    generation: u32,
) -> Result<Vec<(&'static str, Vec<(u32, Vec<u8>)>)>, LoaderError> {
    use netbeast_common::{ClassHeader, RuleAction};
    fn read<V: aya::Pod>(
        dp: &Dataplane,
        name: &'static str,
        indexes: impl Iterator<Item = u32>,
    ) -> Result<Vec<(u32, Vec<u8>)>, LoaderError> {
        let map = dp.map(name)?;
        indexes
            .map(|ix| {
                let value: V = batch::lookup::<V>(map, name, ix, 1, None)?[0][0];
                // SAFETY: `V: Pod`, plain bytes.
                let bytes = unsafe {
                    std::slice::from_raw_parts(
                        (&value as *const V).cast::<u8>(),
                        std::mem::size_of::<V>(),
                    )
                };
                Ok((ix, bytes.to_vec()))
            })
            .collect()
    }
    let Some(record) = dp
        .written
        .as_ref()
        .and_then(|w| w.gens[generation as usize].as_ref())
    else {
        return Ok(Vec::new());
    };
    use netbeast_common::{ConnmarkTarget, Guard, LogTarget, MarkTarget, NatAddrs6};
    let ix = |slot: usize| record.arrays[slot].iter().map(|e| e.0);
    let name = |slot: usize| written::RECORDED[slot];
    Ok(vec![
        (name(0), read::<ClassHeader>(dp, name(0), ix(0))?),
        (
            name(1),
            read::<[u64; CLASS_WORD_CHUNK]>(dp, name(1), ix(1))?,
        ),
        (name(2), read::<[u32; KEY_CHUNK]>(dp, name(2), ix(2))?),
        (name(3), read::<RuleAction>(dp, name(3), ix(3))?),
        (name(4), read::<NatTarget>(dp, name(4), ix(4))?),
        (name(5), read::<NatAddrs6>(dp, name(5), ix(5))?),
        (name(6), read::<Guard>(dp, name(6), ix(6))?),
        (name(7), read::<LogTarget>(dp, name(7), ix(7))?),
        (name(8), read::<MarkTarget>(dp, name(8), ix(8))?),
        (name(9), read::<ConnmarkTarget>(dp, name(9), ix(9))?),
    ])
}

/// [`written::update`] of every entry of `values`, the `n`th at `index(n)`
/// of the array `name`, against the record pair (what the generation held,
/// what it holds now).
fn update_all<V: aya::Pod>(
    dp: &Dataplane,
    name: &'static str,
    (old, new): &mut (Option<&GenWritten>, &mut GenWritten),
    values: &[V],
    index: impl Fn(u32) -> u32,
) -> Result<usize, LoaderError> {
    let indexes: Vec<u32> = (0..values.len() as u32).map(index).collect();
    written::update(dp.map(name)?, name, *old, new, &indexes, values)
}

/// The address epoch `generation` has, and the one its next write gives it
/// (written into its first `CHAINS` entry now).
fn next_epoch(dp: &mut Dataplane, generation: u32) -> Result<(u32, u32), LoaderError> {
    let mut chains: Array<&mut MapData, ChainConfig> =
        Array::try_from(dp.map_mut("CHAINS")?).map_err(map_err("CHAINS"))?;
    let index = chain_index(generation, 0);
    let config = chains.get(&index, 0).map_err(map_err("CHAINS"))?;
    let previous = config.addr_epoch;
    let epoch = if previous >= ADDR_EPOCH_MAX {
        1
    } else {
        previous + 1
    };
    let marked = ChainConfig {
        addr_epoch: epoch,
        ..config
    };
    chains.set(index, marked, 0).map_err(map_err("CHAINS"))?;
    Ok((previous, epoch))
}

/// The id of the `CHAINS` map: maps made anew have another.
fn chains_map_id(dp: &Dataplane) -> Result<u32, LoaderError> {
    match dp.map("CHAINS")? {
        aya::maps::Map::Array(data) => Ok(data.info().map(|i| i.id()).unwrap_or(0)),
        _ => Ok(0),
    }
}

/// What `generation` holds, if the record (this value's, or the file's
/// when this value has none yet) is about these maps and the epoch the
/// generation had before this write (`previous`). Taken out of the record:
/// the generation is being written.
fn take_record(
    dp: &mut Dataplane,
    generation: u32,
    previous: u32,
) -> Result<Option<GenWritten>, LoaderError> {
    let map_id = chains_map_id(dp)?;
    let path = dp.written_path.clone();
    let record = dp.written.get_or_insert_with(|| match &path {
        Some(path) => Written::load(path, super::object_hash()),
        None => Written::default(),
    });
    if record.map_id != map_id || map_id == 0 {
        *record = Written {
            map_id,
            ..Default::default()
        };
    }
    Ok(record.gens[generation as usize]
        .take()
        .filter(|g| g.epoch == previous))
}

/// Records what `generation` holds now, and stores the record when this
/// data plane has a file for it. A store that fails leaves the file's
/// older record, which the moved epoch makes ignored: it costs a whole
/// write, nothing else, so it is not an error.
fn store_record(dp: &mut Dataplane, generation: u32, new: GenWritten) {
    let Some(record) = dp.written.as_mut() else {
        return;
    };
    record.last = (new.written, new.entries);
    record.gens[generation as usize] = Some(new);
    if let Some(path) = &dp.written_path {
        let _ = record.store(path, super::object_hash());
    }
}

/// Writes each `-m hashlimit` table's max into `HASHLIMIT_TABLES`,
/// keeping the live count the kernel keeps there (a table's buckets
/// outlive ruleset changes, by name). Only entries that are missing or
/// whose max changed are written: a write replaces the whole value, so
/// a bucket the kernel counts meanwhile may be missed in the count.
/// Names no rule uses any more are kept (their buckets are still there)
/// until room is needed for new ones.
fn write_hashlimit_tables(dp: &mut Dataplane, tables: &[(u64, u64)]) -> Result<(), LoaderError> {
    const NAME: &str = "HASHLIMIT_TABLES";
    if tables.len() > MAX_HASHLIMIT_TABLES as usize {
        return Err(LoaderError::TooManyHashlimitTables {
            tables: tables.len(),
            limit: MAX_HASHLIMIT_TABLES,
        });
    }
    let mut map: HashMap<&mut MapData, u64, HashlimitTable> =
        HashMap::try_from(dp.map_mut(NAME)?).map_err(map_err(NAME))?;
    let present: Vec<u64> = map.keys().filter_map(Result::ok).collect();
    let wanted: std::collections::HashSet<u64> = tables.iter().map(|&(name, _)| name).collect();
    let new = tables
        .iter()
        .filter(|(name, _)| !present.contains(name))
        .count();
    if present.len() + new > MAX_HASHLIMIT_TABLES as usize {
        for name in present.iter().filter(|name| !wanted.contains(name)) {
            match map.remove(name) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(NAME)(e)),
            }
        }
    }
    for &(name, max) in tables {
        let live = match map.get(&name, 0) {
            Ok(t) if t.max == max => continue,
            Ok(t) => t.live,
            Err(_) => 0,
        };
        map.insert(name, HashlimitTable { max, live }, 0)
            .map_err(map_err(NAME))?;
    }
    Ok(())
}

/// Clears state slots: their `GUARD_STATE` words (an nth count from zero,
/// a full limit bucket) and the connlimit lists of those in `lists` (one
/// pass over `CONNLIMIT`, only when `lists` is not empty).
pub(super) fn clear_state_slots(
    dp: &mut Dataplane,
    slots: &[u32],
    lists: &[u32],
) -> Result<(), LoaderError> {
    if !slots.is_empty() {
        let mut state: Array<&mut MapData, u64> =
            Array::try_from(dp.map_mut("GUARD_STATE")?).map_err(map_err("GUARD_STATE"))?;
        for &slot in slots {
            state.set(slot, 0, 0).map_err(map_err("GUARD_STATE"))?;
        }
    }
    if !lists.is_empty() {
        let lists: std::collections::HashSet<u32> = lists.iter().copied().collect();
        drop_lists::<ConnlimitKey, ConnlimitList>(dp, "CONNLIMIT", &lists, |k| u32::from(k.guard))?;
        drop_lists::<ConnlimitKey6, ConnlimitList6>(dp, "CONNLIMIT6", &lists, |k| {
            u32::from(k.guard)
        })?;
    }
    Ok(())
}

/// Removes the lists of `map` (`CONNLIMIT` or `CONNLIMIT6`) whose guard
/// slot is in `slots`.
fn drop_lists<K: aya::Pod, V: aya::Pod>(
    dp: &mut Dataplane,
    map: &'static str,
    slots: &std::collections::HashSet<u32>,
    slot_of: impl Fn(&K) -> u32,
) -> Result<(), LoaderError> {
    let mut lists: HashMap<&mut MapData, K, V> =
        HashMap::try_from(dp.map_mut(map)?).map_err(map_err(map))?;
    let stale: Vec<K> = lists
        .keys()
        .filter_map(Result::ok)
        .filter(|k| slots.contains(&slot_of(k)))
        .collect();
    for k in stale {
        // Gone already (evicted by the LRU): as good as removed.
        match lists.remove(&k) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(map_err(map)(e)),
        }
    }
    Ok(())
}

/// Writes the hashed address prefixes into the generation's region of
/// `ADDR_HASH` under `epoch`, the one after `previous` (`next_epoch`). Only
/// the buckets that hold prefixes are written: the others keep entries of
/// older epochs, which never match. When the epochs run out, the region is
/// cleared and they start again.
fn write_addr_hash(
    dp: &mut Dataplane,
    compiled: &CompiledRuleset,
    previous: u32,
    epoch: u32,
) -> Result<(), LoaderError> {
    let generation = compiled.generation;
    let hash = dp.map("ADDR_HASH")?;
    let region = generation * ADDR_HASH_BUCKETS;
    if previous >= ADDR_EPOCH_MAX {
        let empty = vec![[AddrSlot::default(); ADDR_HASH_WAYS]; ADDR_HASH_BUCKETS as usize];
        let indexes: Vec<u32> = (region..region + ADDR_HASH_BUCKETS).collect();
        batch::update(hash, "ADDR_HASH", &indexes, &empty)?;
    }
    let (mut indexes, mut values) = (Vec::new(), Vec::new());
    for (b, slots) in &compiled.addr_hash.buckets {
        let mut value = *slots;
        for slot in value.iter_mut().filter(|s| s.key != 0) {
            slot.key = addr_hash_key(slot.key, epoch);
        }
        // Sealed unless a prefix whose first bucket this is went to its
        // second (the kernel then stops at a miss here: one bucket read).
        if !compiled.addr_hash.overflowed.contains(b) {
            value[0].sealed = epoch;
        }
        indexes.push(region + b);
        values.push(value);
    }
    batch::update(hash, "ADDR_HASH", &indexes, &values)?;
    Ok(())
}

/// The translations of `generation` as the `NAT_TARGETS` map holds them,
/// the first `count`.
pub(super) fn read_nat_targets(
    dp: &Dataplane,
    generation: u32,
    count: usize,
) -> Result<Vec<NatTarget>, LoaderError> {
    let targets: Array<&MapData, NatTarget> =
        Array::try_from(dp.map("NAT_TARGETS")?).map_err(map_err("NAT_TARGETS"))?;
    (0..count as u32)
        .map(|n| {
            targets
                .get(&nat_target_index(dp.capacity(), generation, n), 0)
                .map_err(map_err("NAT_TARGETS"))
        })
        .collect()
}

/// Counters of `rules` user rules and of the policy of `chain` in
/// `generation`, summed over CPUs.
pub(super) fn read_counters(
    dp: &Dataplane,
    generation: u32,
    chain: u32,
    rules: usize,
) -> Result<(Vec<Counter>, Counter), LoaderError> {
    // Where the generation put them: its own configuration says.
    let config = chain_config(dp, generation, chain)?;
    let map = dp.map("COUNTERS")?;
    let cpus = possible_cpus()?;
    // The rules' counters are consecutive: one batch, and one for the
    // policy's.
    let first = counter_index(dp.capacity(), generation, config.counter_base);
    let per_rule = batch::lookup::<KernelCounter>(map, "COUNTERS", first, rules, Some(cpus))?
        .iter()
        .map(|values| sum(values))
        .collect();
    let policy = counter_index(dp.capacity(), generation, config.policy_counter);
    let policy = batch::lookup::<KernelCounter>(map, "COUNTERS", policy, 1, Some(cpus))?;
    Ok((per_rule, sum(&policy[0])))
}

/// The configuration of `chain` in `generation` as the kernel has it (all
/// zeros before the generation was first written).
pub(super) fn chain_config(
    dp: &Dataplane,
    generation: u32,
    chain: u32,
) -> Result<ChainConfig, LoaderError> {
    let chains: Array<&MapData, ChainConfig> =
        Array::try_from(dp.map("CHAINS")?).map_err(map_err("CHAINS"))?;
    chains
        .get(&chain_index(generation, chain), 0)
        .map_err(map_err("CHAINS"))
}

/// A counter's per-CPU values summed.
fn sum(values: &[KernelCounter]) -> Counter {
    values.iter().fold(Counter::default(), |acc, c| Counter {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    })
}

/// The number of possible CPUs: the copies a per-CPU array holds.
fn possible_cpus() -> Result<usize, LoaderError> {
    aya::util::nr_cpus().map_err(|(_, source)| LoaderError::Io {
        what: "the possible CPUs (/sys/devices/system/cpu/possible)".into(),
        source,
    })
}

/// The first `rules` counters of the user-defined chains' rules in
/// `generation` (numbered as `compile::user_chain_counters` says), summed
/// over CPUs.
pub(super) fn read_user_chain_counters(
    dp: &Dataplane,
    generation: u32,
    rules: usize,
) -> Result<Vec<Counter>, LoaderError> {
    let first = counter_index(
        dp.capacity(),
        generation,
        chain_config(dp, generation, 0)?.user_counter_base,
    );
    let values = batch::lookup::<KernelCounter>(
        dp.map("COUNTERS")?,
        "COUNTERS",
        first,
        rules,
        Some(possible_cpus()?),
    )?;
    Ok(values.iter().map(|v| sum(v)).collect())
}
