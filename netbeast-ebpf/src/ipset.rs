//! `-m set --match-set NAME DIRS`: is the packet's address (and port) a
//! member of an ipset? Sets live in maps that `netbeast ipset` writes
//! while packets flow: `IPSET_SETS` holds each set's header by its name's
//! number, `IPSET_MEMBERS` the members of the exact types (hash:ip,
//! hash:ip,port, bitmap:port) in one hash, `IPSET_NETS` those of the
//! prefix types (hash:net, hash:net,port) in one LPM trie. A match costs
//! the header read and one lookup, whatever the set's size.

use aya_ebpf::{
    helpers::generated::bpf_ktime_get_ns,
    macros::map,
    maps::{HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
};
use netbeast_common::{IpsetHeader, IpsetKey, IpsetValue, ipset};

use crate::parse::{current_addr6, current_keys};

/// Maps whose entries are allocated as they are added: a set of a million
/// members costs its memory only once it has them.
const BPF_F_NO_PREALLOC: u32 = 1;

#[map]
static IPSET_SETS: HashMap<u32, IpsetHeader> = HashMap::with_max_entries(ipset::SETS, 0);
#[map]
static IPSET_MEMBERS: HashMap<IpsetKey, IpsetValue> =
    HashMap::with_max_entries(ipset::MEMBERS, BPF_F_NO_PREALLOC);
#[map]
static IPSET_NETS: LpmTrie<IpsetKey, IpsetValue> =
    LpmTrie::with_max_entries(ipset::NETS, BPF_F_NO_PREALLOC);

/// The lookup's addresses and key: the guard runs at the end of a deep
/// call chain (pipeline, classifier, guards) whose stack has no room for
/// them.
pub struct Scratch {
    src: [u32; 4],
    dst: [u32; 4],
    key: NetKey,
}

/// The trie's `Key<IpsetKey>` laid out the same (`Key` is packed, so its
/// fields cannot be borrowed; a `u32` before the 4-aligned key leaves no
/// padding).
#[repr(C)]
pub struct NetKey {
    prefix_len: u32,
    data: IpsetKey,
}

#[map]
static IPSET_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Evaluates a `SET` guard for the current packet: 1 when it matches
/// (`!` applied). `name` is the set name's number, `flags` the
/// `ipset::*` bits. A global function, verified once.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_set(name: u32, flags: u32, negated: u32) -> u32 {
    let invert = negated != 0;
    let Some(keys) = current_keys() else {
        return 0;
    };
    let Some(s) = IPSET_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's scratch, used by this program run only.
    let s = unsafe { &mut *s };
    // SAFETY: a map value, read in place.
    let Some(header) = (unsafe { IPSET_SETS.get(&name) }) else {
        // A set destroyed under a rule (netbeast ipset refuses that): no
        // member.
        return u32::from(invert);
    };
    s.src = [keys.src, 0, 0, 0];
    s.dst = [keys.dst, 0, 0, 0];
    if flags & ipset::V6 != 0 {
        let Some(w) = current_addr6() else {
            return 0;
        };
        s.src = [keys.src, w[0], w[2], w[4]];
        s.dst = [keys.dst, w[1], w[3], w[5]];
    }
    if !header.fill_packet_key(
        flags,
        &s.src,
        &s.dst,
        keys.protocol,
        keys.l4a,
        keys.l4b,
        &mut s.key.data,
    ) {
        return u32::from(invert);
    }
    let expires = if header.kind == ipset::HASH_NET || header.kind == ipset::HASH_NET_PORT {
        s.key.prefix_len =
            ipset::NET_KEY_PREFIX_BITS + if flags & ipset::V6 != 0 { 128 } else { 32 };
        // SAFETY: NetKey has Key<IpsetKey>'s layout, and Key's alignment
        // is 1.
        let key = unsafe { &*(&raw const s.key).cast::<Key<IpsetKey>>() };
        IPSET_NETS.get(key).map(|v| v.expires)
    } else {
        // SAFETY: a map value, read at once.
        unsafe { IPSET_MEMBERS.get(&s.key.data) }.map(|v| v.expires)
    };
    let member = match expires {
        // SAFETY: a helper without arguments.
        Some(e) => e == 0 || unsafe { bpf_ktime_get_ns() } < e,
        None => false,
    };
    u32::from(member != invert)
}
