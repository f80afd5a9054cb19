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
use netbeast_common::{IpsetHeader, IpsetKey, IpsetValue, MAP_NO_PREALLOC, ipset};

use crate::parse::{current_addr6, current_keys};

#[map]
static IPSET_SETS: HashMap<u32, IpsetHeader> =
    HashMap::with_max_entries(ipset::SETS, MAP_NO_PREALLOC);
#[map]
static IPSET_MEMBERS: HashMap<IpsetKey, IpsetValue> =
    HashMap::with_max_entries(ipset::MEMBERS, MAP_NO_PREALLOC);
#[map]
static IPSET_NETS: LpmTrie<IpsetKey, IpsetValue> =
    LpmTrie::with_max_entries(ipset::NETS, MAP_NO_PREALLOC);

/// The lookup's addresses and key: the guard runs at the end of a deep
/// call chain (pipeline, classifier, guards) whose stack has no room for
/// them.
pub struct Scratch {
    src: [u32; 4],
    dst: [u32; 4],
    key: NetKey,
    /// What `-j SET` writes, and its guard's flags and timeout.
    value: IpsetValue,
    flags: u32,
    arg: u32,
}

/// The trie's `Key<IpsetKey>` laid out the same (`Key` is packed, so its
/// fields cannot be borrowed; a `u32` before the 4-aligned key leaves no
/// padding).
#[repr(C)]
pub struct NetKey {
    prefix_len: u32,
    data: IpsetKey,
}

impl Scratch {
    /// What a packet that cannot be a member gets: no match (a match
    /// under `!`), or a write that does nothing (which holds).
    #[inline(always)]
    fn miss(&self) -> u32 {
        u32::from(self.flags & (ipset::ADD | ipset::DEL) != 0 || self.arg != 0)
    }
}

#[map]
static IPSET_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Evaluates a `SET` guard for the current packet: 1 when it matches
/// (`!` applied). `name` is the set name's number, `flags` the
/// `ipset::*` bits. A `SET_WRITE` guard (`-j SET`: `flags` holding
/// `ipset::ADD` or `ipset::DEL`, `arg` its `--timeout`) comes here too,
/// builds the same key and writes it ([`write`]); it always holds (1).
/// One global function for both, verified once: the guards' call chain
/// has room for one such frame, not two.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_set(name: u32, flags: u32, arg: u32) -> u32 {
    let Some(keys) = current_keys() else {
        return u32::from(flags & (ipset::ADD | ipset::DEL) != 0);
    };
    let Some(s) = IPSET_SCRATCH.get_ptr_mut(0) else {
        return u32::from(flags & (ipset::ADD | ipset::DEL) != 0);
    };
    // SAFETY: this CPU's scratch, used by this program run only.
    let s = unsafe { &mut *s };
    // Read back from the scratch below, not kept in registers: the key's
    // making would spill them to a stack that has no room.
    s.flags = flags;
    s.arg = arg;
    let Some(header) = IPSET_SETS.get_ptr_mut(&name) else {
        // A set destroyed under a rule (netbeast ipset refuses that): no
        // member.
        return s.miss();
    };
    // SAFETY: a map value, read in place (the stack of the calls down to
    // here has no room for a copy); `write` changes its count atomically.
    let h = unsafe { &*header };
    s.src = [keys.src, 0, 0, 0];
    s.dst = [keys.dst, 0, 0, 0];
    if flags & ipset::V6 != 0 {
        let Some(w) = current_addr6() else {
            return s.miss();
        };
        s.src = [keys.src, w[0], w[2], w[4]];
        s.dst = [keys.dst, w[1], w[3], w[5]];
    }
    if !h.fill_packet_key(
        flags,
        &s.src,
        &s.dst,
        keys.protocol,
        keys.l4a,
        keys.l4b,
        &mut s.key.data,
    ) {
        return s.miss();
    }
    if s.flags & (ipset::ADD | ipset::DEL) != 0 {
        write(s, header);
        return 1;
    }
    let invert = s.arg != 0;
    let expires = if h.kind == ipset::HASH_NET || h.kind == ipset::HASH_NET_PORT {
        s.key.prefix_len =
            ipset::NET_KEY_PREFIX_BITS + if s.flags & ipset::V6 != 0 { 128 } else { 32 };
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

/// `bpf_map_update_elem` flags.
const BPF_NOEXIST: u64 = 1;
const BPF_EXIST: u64 = 2;

/// Adds `delta` (wrapping: `u32::MAX` takes one off) to the word at `p`
/// for every CPU at once: one BPF_ATOMIC add of 32 bits (the old XADD,
/// in every kernel netbeast runs on). Assembly for the reason
/// `classify::fetch_add` gives.
#[inline(always)]
fn atomic_add_u32(p: *mut u32, delta: u32) {
    let v = u64::from(delta);
    // SAFETY: `p` points to a u32 of a map value (4-byte aligned); the
    // instruction reads and writes only that word.
    unsafe {
        core::arch::asm!(
            "lock *(u32 *)({p} + 0) += {v}",
            p = in(reg) p,
            v = in(reg) v,
        );
    }
}

/// Carries out a `SET_WRITE` guard (`-j SET`) with the packet's key in
/// `s.key` and the guard's flags and timeout in `s.flags`, `s.arg`: the
/// key added to (`ipset::ADD`) or deleted from (`ipset::DEL`) the set
/// whose header is at `header`, as xt_SET does: an add of an existing
/// live member changes nothing unless `ipset::EXIST` renews its timeout;
/// a member that expired is replaced; the timeout is `s.arg` seconds when
/// `ipset::TIMEOUT` says it was given, else the set's default, and none
/// for a set without timeout support. The header's member count follows.
/// Exact types only (hash:ip, hash:ip,port): `iptables` refuses the
/// others before a rule reaches here. Its values live in the scratch, not
/// in registers that the map calls would spill to the short stack.
#[inline(always)]
fn write(s: &mut Scratch, header: *mut IpsetHeader) {
    // SAFETY: a map value's fields, read in place.
    let (kind, timeout) = unsafe { ((*header).kind, (*header).timeout) };
    if kind != ipset::HASH_IP && kind != ipset::HASH_IP_PORT {
        return;
    }
    // SAFETY: the map value's count, changed atomically below.
    let entries = unsafe { &raw mut (*header).entries };
    if s.flags & ipset::DEL != 0 {
        if IPSET_MEMBERS.remove(&s.key.data).is_ok() {
            atomic_add_u32(entries, u32::MAX);
        }
        return;
    }
    let seconds = if s.flags & ipset::TIMEOUT != 0 {
        s.arg
    } else {
        timeout & !ipset::HAS_TIMEOUT
    };
    s.value.expires = if timeout & ipset::HAS_TIMEOUT == 0 || seconds == 0 {
        0
    } else {
        // SAFETY: a helper without arguments.
        (unsafe { bpf_ktime_get_ns() }) + u64::from(seconds) * 1_000_000_000
    };
    if IPSET_MEMBERS
        .insert(&s.key.data, &s.value, BPF_NOEXIST)
        .is_ok()
    {
        atomic_add_u32(entries, 1);
        return;
    }
    // There already: renewed with --exist, replaced when it expired.
    if s.flags & ipset::EXIST == 0 {
        // SAFETY: a map value, read at once.
        let live = match unsafe { IPSET_MEMBERS.get(&s.key.data) } {
            // SAFETY: a helper without arguments.
            Some(v) => v.expires == 0 || unsafe { bpf_ktime_get_ns() } < v.expires,
            None => false,
        };
        if live {
            return;
        }
    }
    let _ = IPSET_MEMBERS.insert(&s.key.data, &s.value, BPF_EXIST);
}
