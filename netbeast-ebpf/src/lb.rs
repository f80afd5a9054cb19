//! `netbeast lb` services (DESIGN §10): a new connection to a service's
//! VIP:port gets a backend from the service's lookup table, recorded in its
//! pending conntrack entry as a destination translation — a DNAT done
//! before nat PREROUTING. From then on the connection is netbeast's
//! conntrack's like any DNATed one: `nat::translate` rewrites every packet
//! both ways, and a table change never moves it.

use aya_ebpf::{
    helpers::bpf_get_prandom_u32,
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use netbeast_common::{
    MAP_NO_PREALLOC, ct_status,
    lb::{
        self, Backend, MAX_SERVICES, NO_BACKEND, Service, ServiceKey, TABLE_CHUNK, backend_index,
        pick, table_chunk,
    },
};

use crate::{
    classify::fetch_add,
    conntrack::tracking,
    parse::{IPPROTO_TCP, IPPROTO_UDP},
};

/// Services by VIP, port and protocol.
#[map]
pub static LB_SERVICES: HashMap<ServiceKey, Service> =
    HashMap::with_max_entries(MAX_SERVICES, MAP_NO_PREALLOC);

/// Lookup tables: per service slot, two generations of up to
/// `TABLE_CAPACITY` backend ids, in chunks keyed by `table_chunk`. A hash
/// map allocated as chunks are written: a namespace without services holds
/// none (an array of every slot's chunks was 16 MiB, made whether or not a
/// service exists).
#[map]
pub static LB_TABLES: HashMap<u32, [u16; TABLE_CHUNK]> =
    HashMap::with_max_entries(lb::TABLE_CHUNKS, MAP_NO_PREALLOC);

/// Backends by (slot, id).
#[map]
pub static LB_BACKENDS: Array<Backend> = Array::with_max_entries(lb::BACKENDS, 0);

/// New connections given to each backend, by (slot, id), per CPU.
#[map]
pub static LB_PICKS: PerCpuArray<u64> = PerCpuArray::with_max_entries(lb::BACKENDS, 0);

/// Round-robin position of each service slot: one counter shared by all
/// CPUs, moved atomically, so a ring is followed exactly.
#[map]
pub static LB_RING: Array<u64> = Array::with_max_entries(MAX_SERVICES, 0);

/// For a new connection (pending conntrack entry) to a service: picks its
/// backend and records the translation. True when it did; the connection
/// then skips nat PREROUTING, as after a DNAT rule.
#[inline(never)]
pub fn balance() -> bool {
    let Some(t) = tracking() else {
        return false;
    };
    if t.pending == 0 {
        return false;
    }
    let e = &mut t.entry;
    let key = ServiceKey {
        vip: e.orig_dst,
        port: e.orig_dport,
        protocol: e.protocol,
        _pad: 0,
    };
    let flow = || {
        lb::flow_hash(
            e.orig_src,
            e.orig_dst,
            e.orig_sport,
            e.orig_dport,
            e.protocol,
        )
    };
    let Some(backend) = choose(&key, flow) else {
        return false;
    };
    e.reply_src = backend.addr;
    e.reply_sport = backend.port;
    e.status |= ct_status::DST_NAT;
    true
}

/// The backend a new flow to `key` gets, if `key` is a service with a
/// live table, counted in `LB_PICKS`. `flow` is the flow's hash, which the
/// Maglev scheduler looks up (random and round robin ignore it).
#[inline(always)]
pub fn choose(key: &ServiceKey, flow: impl FnOnce() -> u32) -> Option<Backend> {
    if key.protocol != IPPROTO_TCP && key.protocol != IPPROTO_UDP {
        return None;
    }
    // SAFETY: copied out at once.
    let service = (unsafe { LB_SERVICES.get(key) }).copied()?;
    let size = service.table_size;
    if size == 0 || size > lb::TABLE_CAPACITY || service.slot >= MAX_SERVICES {
        return None;
    }
    let draw = match service.pick {
        pick::RANDOM => {
            // SAFETY: no preconditions.
            unsafe { bpf_get_prandom_u32() }
        }
        pick::COUNTER => fetch_add(LB_RING.get_ptr_mut(service.slot)?) as u32,
        _ => flow(),
    };
    let entry = draw % size;
    // SAFETY: read at once; an element replaced or deleted meanwhile is
    // freed only after this program (RCU), as for every hash map.
    let chunk = unsafe { LB_TABLES.get(&table_chunk(service.slot, service.generation, entry)) }?;
    let id = chunk[(entry as usize) % TABLE_CHUNK];
    if id == NO_BACKEND || id as u32 >= lb::MAX_BACKENDS {
        return None;
    }
    let index = backend_index(service.slot, id as u32);
    let backend = *LB_BACKENDS.get(index)?;
    if let Some(n) = LB_PICKS.get_ptr_mut(index) {
        // SAFETY: this CPU's slot.
        unsafe { *n += 1 };
    }
    Some(backend)
}
