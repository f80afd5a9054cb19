//! The rule classifier of DESIGN §4: each field maps the packet's value to a
//! class, a bit vector of the rules that value satisfies; the first rule set
//! in the AND of all vectors is the first match. A summary bitmap per vector
//! lets the search skip words that cannot match, so the cost does not grow
//! with the number of rules.

use core::{ffi::c_void, ptr::read_volatile};

use aya_ebpf::{
    helpers::generated::{bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_loop},
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
};
use netbeast_common::{
    ACTIVE_NAT, ACTIVE_TCP_FLAGS, ACTIVE_TRACKING, ACTIVE_TRANSLATIONS, ADDR_EPOCH_SHIFT,
    ADDR_HASH_BUCKETS, ADDR_HASH_WAYS, ADDR_KEY_HEADER_BITS, ADDR_TRIE, AddrKey, AddrSlot,
    CLASS_ALL, CLASS_WORD_CHUNK, Capacity, ChainConfig, ClassHeader, Counter, Guard, Held,
    IfaceKey, KEY_CHUNK, MAP_NO_PREALLOC, MAX_ADDR_HASH_LENGTHS, MAX_GUARD_CHAIN,
    MAX_GUARDED_SLOTS, MAX_GUARDS, MAX_LOGS_PER_SEARCH, MAX_NONTERMINATING_RULES,
    MAX_SEARCH_FIELDS, MAX_TRACE_HITS, MacKey, MarkTarget, RULE_WORDS, RuleAction, SUMMARY_WORDS,
    addr_hash_base, addr_hash_bucket, addr_hash_key, addr_type, chain, chain_index, counter_index,
    ct_state, field, field::Kind, guard_index, guard_kind, key_chunk_at, limit_take,
    mark_target_index, pkttype, rule_index, size, stats, target,
};

use crate::stats::bump;

/// Index 0: the generation the data plane uses now. Userspace writes the
/// other generation, then flips this one word.
#[map]
static ACTIVE: Array<u32> = Array::with_max_entries(1, 0);
#[map]
static CHAINS: Array<ChainConfig> = Array::with_max_entries(size::CHAINS, 0);
#[map]
static RULES: Array<RuleAction> = Array::with_max_entries(size::RULES, 0);
#[map]
static COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(size::COUNTERS, 0);
#[map]
static CLASS_HEADERS: Array<ClassHeader> = Array::with_max_entries(size::CLASS_HEADERS, 0);
#[map]
static CLASS_WORDS: Array<[u64; CLASS_WORD_CHUNK]> =
    Array::with_max_entries(size::CLASS_WORD_CHUNKS, 0);
#[map]
static ADDR_HASH: Array<[AddrSlot; ADDR_HASH_WAYS]> = Array::with_max_entries(size::ADDR_HASH, 0);
#[map]
static ADDR_CLASSES: LpmTrie<AddrKey, u32> = LpmTrie::with_max_entries(size::ADDR_PREFIXES, 0);
/// The class of every key of every key field (`field::Kind::Keys`), in
/// chunks: see [`key_chunk_index`].
#[map]
static KEY_CLASSES: Array<[u32; KEY_CHUNK]> = Array::with_max_entries(size::KEY_CLASSES, 0);
#[map]
static IFACE_CLASSES: HashMap<IfaceKey, u32> =
    HashMap::with_max_entries(size::IFACES, MAP_NO_PREALLOC);
#[map]
static MAC_CLASSES: HashMap<MacKey, u32> = HashMap::with_max_entries(size::MACS, MAP_NO_PREALLOC);
/// The local routing table's routes (key: the address in network byte
/// order), each with its route type (`addr_type::*`): what `-m addrtype`
/// looks up. Written by userspace with the local addresses.
#[map]
static ADDR_TYPES: LpmTrie<u32, u32> = LpmTrie::with_max_entries(size::ADDR_TYPES, 0);
/// The IPv6 routes of the local and main routing tables (key: the address
/// words in network byte order), each with its route type and interface
/// (`addr_type::route_value`): what an ip6tables `-m addrtype` looks up
/// (`addr_type::key6`). No route is UNREACHABLE, as the kernel's lookup
/// fails. Written by userspace.
#[map]
static ADDR_TYPES6: LpmTrie<[u32; 4], u32> = LpmTrie::with_max_entries(size::ADDR_TYPES6, 0);
/// What the `-j MARK` rules of both generations do to the mark
/// (`MarkTarget`, at `mark_target_index(generation, RuleAction::arg)`).
#[map]
static MARK_TARGETS: Array<MarkTarget> = Array::with_max_entries(size::MARK_TARGETS, 0);
/// The guard records of both generations (`Guard`, written by the loader).
#[map]
static GUARDS: Array<Guard> = Array::with_max_entries(size::GUARDS, 0);
/// Each stateful guard's state (an nth count, a limit bucket), shared by
/// every CPU: exactly every Nth packet matches on a multi-queue NIC.
/// Indexed by the guard's *state slot* (`Guard::c`), which the loader keeps
/// for a rule across ruleset changes, not by its record number: a rule
/// that a change does not touch keeps its state, in place.
#[map]
static GUARD_STATE: Array<u64> = Array::with_max_entries(size::GUARD_STATE, 0);
/// The ruleset arrays' capacity, [`Capacity::shift`]: set by the loader
/// when it loads the object (`EbpfLoader::override_global`), from the size
/// of the pinned maps; read through [`capacity`]. Frozen read-only data:
/// the verifier knows its value.
#[unsafe(no_mangle)]
static RULESET_SHIFT: u32 = Capacity::FULL.shift;

/// The capacity the loader gave the object ([`RULESET_SHIFT`]): where each
/// generation's region of the ruleset arrays starts.
#[inline(always)]
pub fn capacity() -> Capacity {
    Capacity {
        // SAFETY: a static of the object; volatile so that the compiler
        // does not fold in the build's value.
        shift: unsafe { core::ptr::read_volatile(&raw const RULESET_SHIFT) },
    }
}

/// The outcome of each guard the last time this CPU evaluated it:
/// `search sequence << 1 | held`. Requirements (`guard_kind::REQUIRE`)
/// read it; the sequence makes older entries stale without a reset. By
/// record number: a walk runs in one generation, and another walk's words
/// (another generation's included) never equal this walk's, so the two
/// generations share the entries (half the memory: it is per CPU).
#[map]
static GUARD_MEMO: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_GUARDS, 0);

/// The packet values the fields look at. Some fields' keys are derived
/// from these only when a chain uses the field (`key_of`): the packet type
/// from `eth_dst`, the address types from the addresses.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Keys {
    /// Network byte order, as in the packet.
    pub src: u32,
    pub dst: u32,
    pub protocol: u8,
    pub ttl: u8,
    pub tos: u8,
    pub _pad: u8,
    /// The TCP flags byte, or `TCP_FLAGS_NONE` without a whole TCP header.
    pub tcp_flags: u16,
    /// The IPv4 total length.
    pub length: u16,
    pub l4a: u32,
    pub l4b: u32,
    pub in_ifindex: u32,
    pub out_ifindex: u32,
    /// The source MAC's 6 bytes (in packet order) in the low bytes of a
    /// little-endian word: one 8-byte copy. A `[u8; 6]` was copied in
    /// 2-byte pieces and read back in 4-byte ones, stalling store-to-load
    /// forwarding.
    pub mac: u64,
    /// The destination MAC likewise (with the source's first two bytes
    /// above it), or 0 (a unicast MAC: `pkttype::HOST`) where iptables
    /// sees a packet type of host anyway (the TC and socket programs).
    pub eth_dst: u64,
    /// `ct_state::*` of the packet.
    pub ct_state: u32,
}

/// The `ACTIVE` word, read once per packet: bit 0 is the generation the
/// data plane uses; bit 1 (`ACTIVE_TRACKING`) turns connection tracking on,
/// set by userspace when a rule of the active ruleset uses connection
/// states. As with iptables, which loads conntrack only for rules that need
/// it, a ruleset without them pays nothing for tracking.
#[derive(Clone, Copy)]
pub struct Active(u32);

impl Active {
    #[inline(always)]
    pub fn read() -> Active {
        Active(ACTIVE.get(0).copied().unwrap_or(0))
    }

    #[inline(always)]
    pub fn generation(self) -> u32 {
        self.0 & 1
    }

    /// The word for a packet conntrack leaves alone (`-j CT --notrack`):
    /// no tracking, no nat, no translation. One word where three flags
    /// would each take a slot of the caller's stack.
    #[inline(always)]
    pub fn untracked(self) -> Active {
        Active(self.0 & !(ACTIVE_TRACKING | ACTIVE_NAT | ACTIVE_TRANSLATIONS))
    }

    #[inline(always)]
    pub fn tracking(self) -> bool {
        self.0 & ACTIVE_TRACKING != 0
    }

    /// The nat table has rules: new connections go through its chains.
    #[inline(always)]
    pub fn nat(self) -> bool {
        self.0 & ACTIVE_NAT != 0
    }

    /// Translated connections may exist: look their packets up (tracking
    /// must be on too) and translate them.
    #[inline(always)]
    pub fn translations(self) -> bool {
        self.0 & (ACTIVE_NAT | ACTIVE_TRANSLATIONS) != 0 && self.tracking()
    }

    /// `netbeast lb` has services: new connections look for theirs.
    #[inline(always)]
    pub fn lb(self) -> bool {
        self.0 & netbeast_common::ACTIVE_LB != 0
    }

    /// A rule of the active ruleset tests TCP options.
    #[inline(always)]
    pub fn tcp_options(self) -> bool {
        self.0 & netbeast_common::ACTIVE_TCP_OPTIONS != 0
    }

    /// A rule tests TCP options, SCTP chunks or DCCP types or options:
    /// walk them (one test, so the pipeline forks once for all: the
    /// verifier's budget has no room for a second fork there).
    #[inline(always)]
    pub fn l4_walks(self) -> bool {
        self.0
            & (netbeast_common::ACTIVE_TCP_OPTIONS
                | netbeast_common::ACTIVE_SCTP_CHUNKS
                | netbeast_common::ACTIVE_DCCP)
            != 0
    }

    /// The word, for the global functions that test its bits themselves.
    #[inline(always)]
    pub fn bits(self) -> u32 {
        self.0
    }

    /// An IPv6 rule tests extension headers (`ACTIVE_IPV6_HEADERS`).
    #[inline(always)]
    pub fn ipv6_headers(self) -> bool {
        self.0 & netbeast_common::ACTIVE_IPV6_HEADERS != 0
    }

    /// `netbeast trace` runs: packets are traced.
    #[inline(always)]
    pub fn trace(self) -> bool {
        self.0 & netbeast_common::ACTIVE_TRACE != 0
    }

    /// The IPv6 ruleset is in use: IPv6 packets go through its chains.
    #[inline(always)]
    pub fn ipv6(self) -> bool {
        self.0 & netbeast_common::ACTIVE_IPV6 != 0
    }

    /// The raw table is in use: packets run its chain before conntrack.
    #[inline(always)]
    pub fn raw(self) -> bool {
        self.0 & netbeast_common::ACTIVE_RAW != 0
    }

    /// The mangle table is in use: packets run its chains at its hooks.
    #[inline(always)]
    pub fn mangle(self) -> bool {
        self.0 & netbeast_common::ACTIVE_MANGLE != 0
    }

    /// A rule of the active ruleset tests TCP flags.
    #[inline(always)]
    pub fn tcp_flags(self) -> bool {
        self.0 & ACTIVE_TCP_FLAGS != 0
    }
}

/// Outcome of one chain.
pub enum Verdict {
    /// A terminating rule matched (already counted).
    Rule(RuleAction),
    /// Nothing matched: the chain policy applies (already counted).
    Policy(u32),
}

impl Verdict {
    /// The target and its argument as two plain words (a policy's with
    /// argument 0), for a call to pass on: a `&Verdict` passed down
    /// points at the caller's stack, where LLVM may have left the
    /// argument of a policy unwritten, which the verifier refuses to read.
    #[inline(always)]
    pub fn words(&self) -> (u32, u32) {
        match self {
            Verdict::Policy(policy) => (*policy, 0),
            Verdict::Rule(action) => (action.target, action.arg),
        }
    }
}

/// Bumps counter `n` (a chain's `counter_base` plus a slot's counter, or
/// its `policy_counter`) of `generation`.
#[inline(always)]
fn count(generation: u32, n: u32, bytes: u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(counter_index(capacity(), generation, n)) {
        // SAFETY: per-CPU slot.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// The class of prefix `base` in the generation's region of `ADDR_HASH`.
#[inline(always)]
fn hashed_class(generation: u32, epoch: u32, base: u64) -> Option<u32> {
    let key = addr_hash_key(base, epoch);
    let region = generation * ADDR_HASH_BUCKETS;
    let slots = ADDR_HASH.get(region + addr_hash_bucket(base, 0))?;
    for s in slots {
        if s.key == key {
            return Some(s.class);
        }
    }
    // Sealed under this epoch: no prefix whose first bucket this is went to
    // its second (`AddrSlot::sealed`), full or not.
    if slots[0].sealed == epoch {
        return None;
    }
    // A prefix is in its second bucket only while its first is full (of
    // this epoch's prefixes: a bucket is written whole, filled in order).
    if slots[ADDR_HASH_WAYS - 1].key >> ADDR_EPOCH_SHIFT != epoch as u64 {
        return None;
    }
    let slots = ADDR_HASH.get(region + addr_hash_bucket(base, 1))?;
    for s in slots {
        if s.key == key {
            return Some(s.class);
        }
    }
    None
}

/// The class of address `addr` (network byte order) for address field `f`:
/// its prefix lengths probed in the hash, longest first, or the trie.
#[inline(always)]
fn addr_class(cfg: &ChainConfig, generation: u32, chain: u32, f: usize, addr: u32) -> Option<u32> {
    let lengths = &cfg.addr_lengths[field::addr_slot(f) & 7];
    if lengths[0] == ADDR_TRIE {
        return trie_class(generation, chain, f, addr);
    }
    let a = u32::from_be(addr);
    for i in 0..MAX_ADDR_HASH_LENGTHS {
        // Read at each probe rather than held: registers are short here,
        // and the callers' frames leave this function little stack.
        // SAFETY: reads a field of the chain's configuration.
        let len = unsafe { read_volatile(&lengths[i]) };
        if len == 0 {
            break;
        }
        let masked = a & (u32::MAX << ((32 - len as u32) & 31));
        let base = addr_hash_base(cfg.addr_table, f as u32, len as u32, masked);
        if let Some(class) = hashed_class(generation, cfg.addr_epoch, base) {
            return Some(class);
        }
    }
    Some(cfg.default_class[f])
}

#[inline(always)]
fn trie_class(generation: u32, chain: u32, f: usize, addr: u32) -> Option<u32> {
    let key = Key::new(
        ADDR_KEY_HEADER_BITS + 32,
        AddrKey {
            generation: generation as u8,
            chain: chain as u8,
            field: f as u8,
            addr: addr.to_ne_bytes(),
        },
    );
    ADDR_CLASSES.get(&key).copied()
}

#[inline(always)]
fn iface_class(generation: u32, chain: u32, f: usize, ifindex: u32, default: u32) -> u32 {
    let key = IfaceKey {
        generation: generation as u8,
        chain: chain as u8,
        field: f as u8,
        _pad: 0,
        ifindex,
    };
    // SAFETY: the value is copied out at once.
    match unsafe { IFACE_CLASSES.get(&key) } {
        Some(c) => *c,
        None => default,
    }
}

#[inline(always)]
fn mac_class(cfg: &ChainConfig, generation: u32, chain: u32, f: usize, mac: u64) -> u32 {
    let m = mac.to_le_bytes();
    let key = MacKey {
        generation: generation as u8,
        chain: chain as u8,
        mac: [m[0], m[1], m[2], m[3], m[4], m[5]],
    };
    // SAFETY: copied out at once.
    match unsafe { MAC_CLASSES.get(&key) } {
        Some(c) => *c,
        None => cfg.default_class[f],
    }
}

/// The address type of `addr` (network byte order), as xt_addrtype finds
/// it: the fixed cases, else the type of the local table's longest
/// matching route, else UNICAST.
#[inline(always)]
pub fn addr_type_of(addr: u32) -> u32 {
    addr_type_key(addr, 0, 0) & addr_type::TYPE_MASK
}

/// The classifier's address type key of `addr` (`addr_type::*`): its
/// type, and on which of the packet's interfaces it holds
/// (`--limit-iface-in/out`: the route's interface is that one).
#[inline(always)]
fn addr_type_key(addr: u32, in_ifindex: u32, out_ifindex: u32) -> u32 {
    const EVERYWHERE: u32 = addr_type::ON_IN | addr_type::ON_OUT;
    if let Some(t) = addr_type::fixed(u32::from_be(addr)) {
        return t | EVERYWHERE;
    }
    match ADDR_TYPES.get(&Key::new(32, addr)) {
        Some(v) => addr_type::route_key(*v, in_ifindex, out_ifindex),
        None => addr_type::UNICAST | EVERYWHERE,
    }
}

/// The packet type from the destination MAC, as the kernel's
/// `eth_type_trans` sets it for the frames an interface takes.
#[inline(always)]
fn pkttype_of(eth_dst: u64) -> u32 {
    const MAC: u64 = 0xffff_ffff_ffff;
    if eth_dst & MAC == MAC {
        pkttype::BROADCAST
    } else if eth_dst & 1 != 0 {
        // The group bit: the first byte's lowest bit.
        pkttype::MULTICAST
    } else {
        pkttype::HOST
    }
}

/// The key of key field `f`; `None` for a field the kernel has no key for
/// (the caller counts `CLASS_MISSING`). `f` is a constant at every call:
/// the match folds away, and derived keys cost only where used.
#[inline(always)]
fn key_of(f: usize, keys: &Keys) -> Option<u32> {
    Some(match f {
        field::PROTO => keys.protocol as u32,
        field::L4A => keys.l4a,
        field::L4B => keys.l4b,
        field::CT_STATE => keys.ct_state,
        field::TCP_FLAGS => keys.tcp_flags as u32,
        field::LENGTH => keys.length as u32,
        field::TTL => keys.ttl as u32,
        field::TOS => keys.tos as u32,
        field::PKTTYPE => pkttype_of(keys.eth_dst),
        field::SRC_TYPE => addr_type_key(keys.src, keys.in_ifindex, keys.out_ifindex),
        field::DST_TYPE => addr_type_key(keys.dst, keys.in_ifindex, keys.out_ifindex),
        _ => return None,
    })
}

/// The class of field `f` of the packet in `chain`, looked up as the
/// field's kind says.
#[inline(always)]
fn class_of(cfg: &ChainConfig, generation: u32, chain: u32, f: usize, keys: &Keys) -> Option<u32> {
    Some(match field::KINDS[f] {
        Kind::Prefix => match f {
            // `f` is a constant at every call: this folds away.
            field::SRC => addr_class(cfg, generation, chain, f, keys.src)?,
            field::DST => addr_class(cfg, generation, chain, f, keys.dst)?,
            // The IPv6 words past the first: one global function verified
            // once, not six inlined lookups in the search (which took the
            // XDP program past the verifier's million instructions).
            _ => {
                let class = netbeast_addr_class(generation, chain, f as u32, keys);
                if class == NO_CLASS {
                    return None;
                }
                class
            }
        },
        Kind::Iface => {
            let ifindex = if f == field::IN_IFACE {
                keys.in_ifindex
            } else {
                keys.out_ifindex
            };
            iface_class(generation, chain, f, ifindex, cfg.default_class[f])
        }
        Kind::Mac => mac_class(cfg, generation, chain, f, keys.mac),
        // `f` is a constant at every call: this folds away. An IPv6
        // chain's address types: out of line, with their own trie.
        Kind::Keys(_) if (f == field::SRC_TYPE || f == field::DST_TYPE) && chain::ipv6(chain) => {
            let class = netbeast_addr_type6_class(generation, chain, f as u32, keys);
            if class == NO_CLASS {
                return None;
            }
            class
        }
        Kind::Keys(n) => {
            let key = key_of(f, keys)?;
            // Past the field's keys would be another field's table.
            if key >= n {
                return None;
            }
            match key_chunk_at(cfg.key_base[f], cfg.key_span[f], f, key) {
                Some(at) => KEY_CLASSES.get(at)?[key as usize % KEY_CHUNK],
                None => cfg.default_class[f],
            }
        }
    })
}

/// De Bruijn sequence B(2, 6): `(x & -x) * DE_BRUIJN >> 58` is distinct
/// for each of the 64 one-bit words.
const DE_BRUIJN: u64 = 0x03f7_9d71_b4cb_0a89;

/// Bit index of each value of the De Bruijn product's top 6 bits.
static LOWEST_BIT: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        t[((1u64 << i).wrapping_mul(DE_BRUIJN) >> 58) as usize] = i as u8;
        i += 1;
    }
    t
};

/// Index of the lowest set bit of a non-zero word (BPF has no
/// count-trailing-zeros instruction): a multiply and a table load.
#[inline(always)]
fn lowest_bit(x: u64) -> u32 {
    LOWEST_BIT[((x & x.wrapping_neg()).wrapping_mul(DE_BRUIJN) >> 58) as usize] as u32
}

/// Set bits of a word (BPF has no population count instruction).
#[inline(always)]
fn ones(x: u64) -> u32 {
    let x = x - ((x >> 1) & 0x5555_5555_5555_5555);
    let x = (x & 0x3333_3333_3333_3333) + ((x >> 2) & 0x3333_3333_3333_3333);
    let x = (x + (x >> 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    (x.wrapping_mul(0x0101_0101_0101_0101) >> 56) as u32
}

/// Bit of [`netbeast_classify`]'s result set when a rule decided; its
/// target is then in bits 32..63 and its `arg` in bits 0..31. Otherwise
/// bits 0..31 are the chain's policy.
const RULE_DECIDED: u64 = 1 << 63;

/// Runs chain `chain` of the active ruleset on a packet: counts every
/// matching non-terminating rule and the terminating one (or the policy).
/// `st` is the search's working state: the packet's own (`Packet::search`)
/// for the packet programs, which run in softirq context or with softirqs
/// off, so nothing else on the CPU uses it meanwhile; one per socket for
/// the socket programs, which run in process context, where a softirq's
/// XDP or TC program, or another task, would overwrite per-CPU state in the
/// middle of the search.
#[inline(always)]
pub fn classify(
    generation: u32,
    chain: u32,
    keys: &Keys,
    bytes: u64,
    st: *mut SearchState,
) -> Verdict {
    let r = netbeast_classify(generation, chain, bytes, keys, st);
    if r & RULE_DECIDED == 0 {
        return Verdict::Policy(r as u32);
    }
    Verdict::Rule(RuleAction {
        target: ((r & !RULE_DECIDED) >> 32) as u32,
        arg: r as u32,
        counter: 0,
        guard: 0,
    })
}

/// What [`netbeast_addr_class`] returns when the chain has no
/// configuration (a class id is never this).
const NO_CLASS: u32 = u32::MAX - 1;

/// The class in `chain` of address field `f` (any of `field::ADDR_FIELDS`)
/// of the packet: word 0 from `keys`, the IPv6 words past it from the
/// per-CPU slot (`Packet::addr6`: they are not in `Keys`, which the TC and
/// socket programs build on their stacks). A global function, verified
/// once: the IPv6 words' lookups inlined in the search took the XDP
/// program past the verifier's million instructions. Looked up as IPv4
/// addresses are: the address hash for the prefix lengths the compiler
/// hashed, else the LPM trie.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_addr_class(
    generation: u32,
    chain: u32,
    f: u32,
    keys: *const Keys,
) -> u32 {
    let Some(cfg) = CHAINS.get(chain_index(generation, chain)) else {
        return NO_CLASS;
    };
    if keys.is_null() {
        return NO_CLASS;
    }
    // An address field, bounded for the verifier.
    let f = f as usize;
    if f >= field::COUNT || !matches!(field::KINDS[f], Kind::Prefix) {
        return NO_CLASS;
    }
    let addr = if f == field::SRC || f == field::DST {
        // SAFETY: a non-null pointer to a whole `Keys`, which the verifier
        // checked at every call.
        let keys = unsafe { &*keys };
        if f == field::SRC { keys.src } else { keys.dst }
    } else {
        let Some(words) = crate::parse::current_addr6() else {
            return NO_CLASS;
        };
        // One of the six word fields, in `addr6` order (they are numbered
        // alike), bounded for the verifier.
        let i = f.wrapping_sub(field::SRC6_1);
        if i >= 6 {
            return NO_CLASS;
        }
        words[i]
    };
    addr_class(cfg, generation, chain, f, addr).unwrap_or(cfg.default_class[f])
}

/// The class in `chain` of the ip6tables address type key
/// (`addr_type::key6`) of the packet's source (`f` = `field::SRC_TYPE`) or
/// destination: the first address word from `keys`, the others from the
/// per-CPU slot (`Packet::addr6`). A global function, verified once, with
/// the trie's 20-byte key in its own frame (the classifier's frame is on
/// the deepest call chain).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_addr_type6_class(
    generation: u32,
    chain: u32,
    f: u32,
    keys: *const Keys,
) -> u32 {
    let Some(w) = crate::parse::current_addr6() else {
        return NO_CLASS;
    };
    if keys.is_null() {
        return NO_CLASS;
    }
    // SAFETY: a non-null pointer to a whole `Keys`, which the verifier
    // checked at every call.
    let keys = unsafe { &*keys };
    let (f, words) = if f == field::SRC_TYPE as u32 {
        (field::SRC_TYPE, [keys.src, w[0], w[2], w[4]])
    } else {
        (field::DST_TYPE, [keys.dst, w[1], w[3], w[5]])
    };
    let value = ADDR_TYPES6.get(&Key::new(128, words)).copied();
    let host = [
        u32::from_be(words[0]),
        u32::from_be(words[1]),
        u32::from_be(words[2]),
        u32::from_be(words[3]),
    ];
    let key =
        addr_type::key6(host, value, keys.in_ifindex, keys.out_ifindex) & (addr_type::KEYS - 1);
    let Some(cfg) = CHAINS.get(chain_index(generation & 1, chain)) else {
        return NO_CLASS;
    };
    match key_chunk_at(cfg.key_base[f], cfg.key_span[f], f, key) {
        Some(at) => match KEY_CLASSES.get(at) {
            Some(chunk) => chunk[key as usize % KEY_CHUNK],
            None => NO_CLASS,
        },
        None => cfg.default_class[f],
    }
}

/// [`classify`], as a global function: the verifier checks it once, on
/// its own, rather than once for every place a packet may be classified (up
/// to three chains per packet, the REJECT reply of TC egress, the socket
/// programs), which leaves the rest of the program room under the
/// verifier's instruction budget. It takes only scalars and pointers to
/// memory of a known size.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_classify(
    generation: u32,
    chain: u32,
    bytes: u64,
    keys: *const Keys,
    st: *mut SearchState,
) -> u64 {
    let generation = generation & 1;
    let Some(cfg) = CHAINS.get(chain_index(generation, chain)) else {
        return target::ACCEPT as u64;
    };
    if keys.is_null() || st.is_null() {
        return cfg.policy as u64;
    }
    // SAFETY: non-null pointers to a whole `Keys` and `SearchState`, which
    // the verifier checked at every call.
    let (keys, st) = unsafe { (&*keys, &mut *st) };
    let policy = cfg.policy;
    st.log_count = 0;
    st.hit_count = 0;
    st.untrack = 0;
    st.ct_template = 0;
    st.ttl = keys.ttl as u32;
    st.tos = keys.tos as u32;
    st.rewrite = 0;
    // The first slot's guards and `takes_effect` read these (a MARK's
    // entry; the chain's family for `-m connmark`, `-j CONNMARK` and the
    // other tracker-reading guards), before the search's steps record the
    // rest of their state: the slot holds the last search's until then.
    st.generation = generation;
    st.chain = chain;
    match search(cfg, generation, chain, keys, bytes, st) {
        Some(action) => RULE_DECIDED | (action.target as u64) << 32 | action.arg as u64,
        None => {
            count(generation, cfg.policy_counter, bytes);
            policy as u64
        }
    }
}

/// Adds one to the word at `p` atomically (for every CPU) and returns the
/// value before: one BPF_ATOMIC | BPF_FETCH add, which the kernel has
/// taken since 5.12. Written in assembly because LLVM emits it only for
/// `-mcpu=v3`, and the build (aya-build, bpf-linker `--cpu generic`)
/// offers no way to ask for that; `AtomicU64::fetch_add` does not exist on
/// the BPF target (no compare-and-swap at the generic CPU level).
#[inline(always)]
pub(crate) fn fetch_add(p: *mut u64) -> u64 {
    let mut v: u64 = 1;
    // SAFETY: `p` points to a u64 of a map value (8-byte aligned); the
    // instruction reads and writes only that word.
    unsafe {
        core::arch::asm!(
            "{v} = atomic_fetch_add((u64 *)({p} + 0), {v})",
            p = in(reg) p,
            v = inout(reg) v,
        );
    }
    v
}

/// Stores `new` at `p` if it still holds `expected`, atomically for every
/// CPU, and returns what `p` held (one BPF_ATOMIC | BPF_CMPXCHG, in the
/// kernel since 5.12; assembly for the reason `fetch_add` gives).
#[inline(always)]
pub fn compare_exchange(p: *mut u64, expected: u64, new: u64) -> u64 {
    let mut old = expected;
    // SAFETY: `p` points to a u64 of a map value (8-byte aligned); the
    // instruction reads and writes only that word, and takes the expected
    // value in r0 and returns the old one there.
    unsafe {
        core::arch::asm!(
            "r0 = cmpxchg_64({p} + 0, r0, {new})",
            p = in(reg) p,
            new = in(reg) new,
            inout("r0") old,
        );
    }
    old
}

/// What `bpf_loop` hands each try of [`spin_lock`].
#[repr(C)]
struct SpinContext {
    word: *mut u64,
    held: u64,
}

/// One try of [`spin_lock`]; returns 1 (stop) once the lock is taken.
extern "C" fn spin_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `SpinContext` given to bpf_loop.
    let ctx = unsafe { &mut *(ctx as *mut SpinContext) };
    if compare_exchange(ctx.word, 0, 1) == 0 {
        ctx.held = 1;
        return 1;
    }
    0
}

/// Takes the lock word at `word` (0 free, 1 held; released by writing 0
/// with [`compare_exchange`]), trying up to `tries` times; false when other
/// CPUs held it all along. The tries run in `bpf_loop`, so the verifier
/// checks one try, not every iteration of every path into each caller (an
/// unrolled spin of thousands of tries in connlimit and recent took the
/// program past the verifier's million instructions).
pub fn spin_lock(word: *mut u64, tries: u32) -> bool {
    let mut ctx = SpinContext { word, held: 0 };
    // SAFETY: `spin_step` has the callback signature bpf_loop expects, and
    // `ctx` outlives the call.
    unsafe {
        bpf_loop(
            tries,
            spin_step as *mut c_void,
            &mut ctx as *mut SpinContext as *mut c_void,
            0,
        );
    }
    ctx.held != 0
}

/// Tries a rule's `-m limit` bucket can make to take its packet's credit
/// while other CPUs change it. Each failed try means another CPU took
/// credit in between, so running out needs that many packets of the same
/// rule on other CPUs within one try's few instructions; a packet that
/// runs out is counted (`stats::LIMIT_CONTENDED`) and treated as over the
/// limit, never as under it.
const LIMIT_TRIES: u32 = 16;

/// `-m limit`: takes one packet's credit (`cost` ns) from the bucket in
/// state slot `index` (`GUARD_STATE`: its theoretical arrival time, see
/// `netbeast_common::limit_take`), `depth` ns deep; 1 when it had it. One
/// bucket per rule for every CPU, updated with compare-and-exchange:
/// exact, never per-CPU. A global function, verified once: its retry loop
/// inside the guard chain's loop would multiply the verifier's work.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_limit(index: u32, cost: u64, depth: u64) -> u32 {
    let Some(state) = GUARD_STATE.get_ptr_mut(index) else {
        return 0;
    };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: `state` points to this guard's word of `GUARD_STATE`.
    let mut tat = unsafe { core::ptr::read_volatile(state) };
    for _ in 0..LIMIT_TRIES {
        let Some(new) = limit_take(tat, now, cost, depth) else {
            return 0;
        };
        let seen = compare_exchange(state, tat, new);
        if seen == tat {
            return 1;
        }
        tat = seen;
    }
    bump(stats::LIMIT_CONTENDED);
    0
}

/// `-m connlimit` for the current packet: its masked address's live
/// connections (its own included) against the limit. A packet without a
/// connection (INVALID, untracked) is counted with the others but not
/// recorded; a list that cannot be had makes the rule not match. `slot`:
/// the guard's state slot, which names its lists.
#[inline(always)]
fn connlimit_guard(g: &Guard, slot: u32) -> bool {
    let count = if g.b & netbeast_common::CONNLIMIT_V6 != 0 {
        crate::connlimit::netbeast_connlimit6(slot, g.b)
    } else {
        crate::connlimit::netbeast_connlimit(slot, g.b)
    };
    if count == u32::MAX {
        return false;
    }
    (u64::from(count) > g.a) != (g.negated != 0)
}

/// The guards that read the current packet and its connection rather
/// than keep state: `-m conntrack`'s tuples, protocol and expiry,
/// `--tcp-option`, `-m dccp`'s types and options, and `-s`/`-d` under a non-contiguous netmask. Packet programs only: the compiler refuses them where
/// the socket programs classify (nat OUTPUT).
/// Returns a [`Held`] (`-m dccp` may drop the packet).
#[inline(always)]
fn packet_guard(g: &Guard) -> u32 {
    if g.kind == guard_kind::DCCP {
        return crate::dccp::current().map_or(Held::Fails, |f| g.dccp(f)) as u32;
    }
    u32::from(packet_test(g))
}

/// [`packet_guard`]'s kinds that only hold or fail.
#[inline(always)]
fn packet_test(g: &Guard) -> bool {
    let Some(keys) = crate::parse::current_keys() else {
        return false;
    };
    if g.kind == guard_kind::TCP_OPTION {
        return g.holds_tcp_option(crate::parse::current_tcp_options());
    }
    // ip6tables' header matches, on the IPv6 parser's walk (IPv6 chains
    // only: the compiler takes them only there).
    if g.kind >= guard_kind::IPV6_HEADER && g.kind <= guard_kind::IPV6_FRAG {
        let Some(ext) = crate::parse::current_ext6() else {
            return false;
        };
        return if g.kind == guard_kind::IPV6_HEADER {
            g.holds_ipv6_header(ext)
        } else if g.kind == guard_kind::IPV6_RT {
            g.holds_ipv6_rt(ext)
        } else {
            g.holds_ipv6_frag(ext)
        };
    }
    if g.kind == guard_kind::ADDR_MASK {
        return g.holds_addr_mask(u32::from_be(keys.src), u32::from_be(keys.dst));
    }
    if g.kind == guard_kind::MARK {
        return g.holds_mark(crate::parse::current_mark());
    }
    if g.kind == guard_kind::CONNMARK {
        return crate::conntrack::connmark_holds(g, keys.ct_state & ct_state::STATE_MASK);
    }
    crate::conntrack::guard_holds(g, keys.ct_state & ct_state::STATE_MASK)
}

/// One chunk of the walk, as `Guard::sctp_chunks` steps.
/// Its state (`left`, `decided`, the guard) is in the packet slot, not
/// behind a context on the stack: the stack's 512 bytes are shared by
/// every call down to here, and the verifier meets every step alike.
extern "C" fn chunk_test_step(index: u64, _ctx: *mut c_void) -> i64 {
    let Some((c, st)) = crate::parse::current_sctp_chunks() else {
        return 1;
    };
    // SAFETY: this CPU's slot.
    let st = unsafe { &mut *st };
    if index >= u64::from(c.count) {
        return 1;
    }
    let i = index as usize & (netbeast_common::sctp::MAX_SCTP_CHUNKS - 1);
    let mut left = st.left;
    let step = st.test.sctp_step(&mut left, c.types[i], c.flags[i]);
    st.left = left;
    match step {
        Some(outcome) => {
            st.decided = 1 + u64::from(outcome);
            1
        }
        None => 0,
    }
}

/// `-m sctp --chunk-types` on the chunks the pipeline walked: the steps
/// of `Guard::sctp_chunks` in `bpf_loop`, so the verifier checks one
/// chunk's test, not `MAX_SCTP_CHUNKS` of them. Returns a [`Held`]. A
/// global function, verified once.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_sctp_chunks(pad: u32, negated: u32, a: u64, b: u64, c: u64) -> u32 {
    use netbeast_common::sctp::{MAX_SCTP_CHUNKS, status};
    let Some((chunks, state)) = crate::parse::current_sctp_chunks() else {
        return 0;
    };
    if chunks.status == status::NONE {
        return 0;
    }
    // SAFETY: this CPU's slot.
    unsafe {
        (*state).left = a;
        (*state).decided = 0;
        (*state).test = Guard {
            kind: guard_kind::SCTP_CHUNKS,
            next: 0,
            negated,
            _pad: pad,
            a,
            b,
            c,
        };
    }
    // SAFETY: `chunk_test_step` has the callback signature bpf_loop
    // expects; it keeps its state in this CPU's packet slot.
    unsafe {
        bpf_loop(
            MAX_SCTP_CHUNKS as u32,
            chunk_test_step as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    // SAFETY: this CPU's slot.
    let (left, decided) = unsafe { ((*state).left, (*state).decided) };
    let outcome = match decided {
        // SAFETY: as above.
        0 if chunks.status == status::WHOLE => unsafe { (*state).test.sctp_end(left) },
        // The kernel's walk came to a chunk it drops the packet at.
        0 if chunks.status == status::BAD => return Held::Hotdrop as u32,
        0 => return Held::Fails as u32,
        d => d == 2,
    };
    u32::from(outcome != (negated != 0))
}

/// A new search sequence for this CPU's guard outcomes (never 0).
#[inline(always)]
fn next_seq() -> u64 {
    match crate::scratch::guard_scratch() {
        Some(s) => {
            // SAFETY: this CPU's scratch.
            unsafe {
                (*s).guard_seq += 1;
                (*s).guard_seq
            }
        }
        None => 1,
    }
}

/// The memo word of this walk for an outcome (see
/// `GuardScratch::guard_walk_seq`).
#[inline(always)]
fn memo_word(held: bool) -> u64 {
    // SAFETY: this CPU's scratch; `netbeast_guards` wrote it (or returned).
    let seq = crate::scratch::guard_scratch().map_or(0, |s| unsafe {
        read_volatile(&raw const (*s).guard_walk_seq)
    });
    seq | u64::from(held)
}

/// Walks the guard chain starting at `head` (`RuleAction::guard`) of
/// `generation`: requirements are checked against the outcomes recorded
/// in this search (`seq`), the rule's own guards evaluated — nth counts
/// bumped atomically, random numbers drawn — and their outcomes
/// recorded. Stops at the first that fails. 1 when all hold. A global
/// function: verified once, whoever calls it.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_guards(generation: u32, head: u32, seq: u64) -> u32 {
    let generation = generation & 1;
    match crate::scratch::guard_scratch() {
        // SAFETY: this CPU's scratch, used by this program run only.
        Some(s) => unsafe { (*s).guard_walk_seq = seq << 1 },
        None => return 0,
    }
    let mut next = head;
    // The generation's region, read once: a load of the capacity in the
    // loop cost the verifier 72,000 instructions.
    let region = guard_index(capacity(), generation, 0);
    for _ in 0..MAX_GUARD_CHAIN {
        if next == 0 {
            return 1;
        }
        let n = next - 1;
        // The build's bound, not the capacity's (a load the loop would
        // repeat): the compiler numbers a generation's guards below the
        // capacity's, and `GUARD_MEMO` has no entry past it.
        if n >= MAX_GUARDS {
            return 0;
        }
        let Some(g) = GUARDS.get(region + n) else {
            return 0;
        };
        if g.kind == guard_kind::REQUIRE {
            let required = g.a as u32;
            if required >= MAX_GUARDS {
                return 0;
            }
            let want = memo_word(g.negated == 0);
            match GUARD_MEMO.get(required) {
                Some(&memo) if memo == want => {}
                _ => return 0,
            }
        } else if g.kind == guard_kind::RECENT {
            let held = crate::recent::netbeast_recent(g._pad, g.negated, g.a, g.b, g.c) != 0;
            if let Some(memo) = GUARD_MEMO.get_ptr_mut(n) {
                // SAFETY: this CPU's slot.
                unsafe { *memo = memo_word(held) };
            }
            if !held {
                return 0;
            }
        } else if g.kind == guard_kind::SET || g.kind == guard_kind::SET_WRITE {
            // A match, or `-j SET`'s work (last in its rule's chain, it
            // always holds): one function, so that the call chain's stack
            // holds one frame for either.
            let arg = if g.kind == guard_kind::SET {
                g.negated
            } else {
                g.b as u32
            };
            let held = crate::ipset::netbeast_set(g.a as u32, g._pad, arg) != 0;
            if let Some(memo) = GUARD_MEMO.get_ptr_mut(n) {
                // SAFETY: this CPU's slot.
                unsafe { *memo = memo_word(held) };
            }
            if !held {
                return 0;
            }
        } else if g.kind == guard_kind::HASHLIMIT {
            // Three calls side by side (key, slot, take), none nested in
            // another: the guards' frame is the deepest call chain's.
            let slot = if crate::hashlimit::netbeast_hashlimit_key(g._pad, g.c) != 0 {
                crate::hashlimit::netbeast_hashlimit_slot(g.c)
            } else {
                u64::MAX
            };
            let under = crate::hashlimit::netbeast_hashlimit(g._pad, g.a, g.b, g.c, slot) != 0;
            // Matches under the rate (--hashlimit-upto), or over it with
            // --hashlimit-above.
            let held = under != (g.negated != 0);
            if let Some(memo) = GUARD_MEMO.get_ptr_mut(n) {
                // SAFETY: this CPU's slot.
                unsafe { *memo = memo_word(held) };
            }
            if !held {
                return 0;
            }
        } else if g.kind == guard_kind::SCTP_CHUNKS {
            // A hotdrop test only (`GUARD_HOTDROP_ONLY`) never holds.
            let outcome = g.outcome(Held::from_u32(netbeast_sctp_chunks(
                g._pad,
                g.negated & 1,
                g.a,
                g.b,
                g.c,
            ))) as u32;
            if outcome == Held::Hotdrop as u32 {
                bump(stats::HOTDROPPED);
                return outcome;
            }
            let held = outcome != 0;
            if let Some(memo) = GUARD_MEMO.get_ptr_mut(n) {
                // SAFETY: this CPU's slot.
                unsafe { *memo = memo_word(held) };
            }
            if !held {
                return 0;
            }
        } else if g.kind == guard_kind::CONNLIMIT {
            let held = connlimit_guard(&g, g.c as u32);
            if let Some(memo) = GUARD_MEMO.get_ptr_mut(n) {
                // SAFETY: this CPU's slot.
                unsafe { *memo = memo_word(held) };
            }
            if !held {
                return 0;
            }
        } else if g.kind == guard_kind::CT_TUPLE
            || g.kind == guard_kind::CT_PROTO_EXPIRE
            || g.kind == guard_kind::TCP_OPTION
            || g.kind == guard_kind::DCCP
            || g.kind >= guard_kind::IPV6_HEADER && g.kind <= guard_kind::IPV6_FRAG
            || g.kind == guard_kind::ADDR_MASK
            || g.kind == guard_kind::MARK
            || g.kind == guard_kind::CONNMARK
        {
            // Functions of the packet and its connection, no state: the
            // memo only serves requirements. (DCCP's may be a hotdrop test
            // only, which never holds.)
            let outcome = g.outcome(Held::from_u32(packet_guard(&g))) as u32;
            if outcome == Held::Hotdrop as u32 {
                bump(stats::HOTDROPPED);
                return outcome;
            }
            let held = outcome != 0;
            if let Some(memo) = GUARD_MEMO.get_ptr_mut(n) {
                // SAFETY: this CPU's slot.
                unsafe { *memo = memo_word(held) };
            }
            if !held {
                return 0;
            }
        } else if g.kind == guard_kind::LIMIT {
            let held = netbeast_limit(g.c as u32, g.a, g.b) != 0;
            if let Some(memo) = GUARD_MEMO.get_ptr_mut(n) {
                // SAFETY: this CPU's slot.
                unsafe { *memo = memo_word(held) };
            }
            if !held {
                return 0;
            }
        } else {
            let count = if g.counts() {
                let Some(state) = GUARD_STATE.get_ptr_mut(g.c as u32) else {
                    return 0;
                };
                fetch_add(state)
            } else {
                0
            };
            let random = if g.kind == guard_kind::STATISTIC_RANDOM {
                // SAFETY: a helper without arguments.
                unsafe { bpf_get_prandom_u32() }
            } else {
                0
            };
            let held = g.holds(count, random);
            if let Some(memo) = GUARD_MEMO.get_ptr_mut(n) {
                // SAFETY: this CPU's slot.
                unsafe { *memo = memo_word(held) };
            }
            if !held {
                return 0;
            }
        }
        next = g.next;
    }
    0
}

/// Chains of at most this many slots have one word per vector: they are
/// searched with the `word0` of each class header alone.
const SMALL_CHAIN: u32 = 64;

/// Looks up the class of field `f`, one some rule of the chain uses (a
/// field no rule uses matches every slot: the caller skips it), and ANDs
/// its word 0 into the state's `word0`; `large` chains also record the
/// class and fold its first word into the state's `lead_*`. `false` when a
/// table lacks an entry. The running values live in the state, not in
/// registers: with up to sixteen fields' lookups in between they would spill to a
/// stack that the callers' frames leave short.
#[inline(always)]
fn take_field(
    cfg: &ChainConfig,
    f: usize,
    keys: &Keys,
    st: &mut SearchState,
    (generation, chain, large): (u32, u32, bool),
) -> bool {
    let Some(class) = class_of(cfg, generation, chain, f, keys) else {
        return false;
    };
    take_class(class, st, large)
}

/// The fields of an IPv6 source (`source`) or destination.
const fn address_fields(source: bool) -> u32 {
    let mut mask = 0;
    let mut w = 0;
    while w < 4 {
        mask |= 1 << field::addr_field(source, w);
        w += 1;
    }
    mask
}

/// An IPv6 direction's lead word (`ChainConfig::addr6_lead`), taken before
/// the other fields: returns the fields still to take, `used` without the
/// lead word, and without the direction's other words when the lead's
/// class is its default (no rule that names an address can match then:
/// their classes would each hold every slot the lead's does). `None` when
/// a table lacks an entry.
#[inline(always)]
fn take_lead(
    cfg: &ChainConfig,
    source: bool,
    used: u32,
    keys: &Keys,
    st: &mut SearchState,
    (generation, chain, large): (u32, u32, bool),
) -> Option<u32> {
    let Some(w) = netbeast_common::addr6_lead(cfg.addr6_lead, source) else {
        return Some(used);
    };
    // `field::addr_field`, with an index the verifier sees bounded.
    let f = field::ADDR_FIELDS[(2 * w + usize::from(!source)) & 7] as u32;
    let class = netbeast_addr_class(generation, chain, f, keys);
    if class == NO_CLASS || !take_class(class, st, large) {
        return None;
    }
    let default = cfg.default_class.get(f as usize)?;
    if class == *default {
        return Some(used & !address_fields(source));
    }
    Some(used & !(1 << f))
}

/// ANDs class `class` into the search (see [`take_field`]).
#[inline(always)]
fn take_class(class: u32, st: &mut SearchState, large: bool) -> bool {
    // A value every slot of the chain accepts: nothing to AND.
    if class == CLASS_ALL {
        return true;
    }
    let Some(h) = CLASS_HEADERS.get(class) else {
        return false;
    };
    st.word0 &= if h.first == 0 { h.first_word } else { 0 };
    if large {
        let n = st.fields as usize;
        if n < MAX_SEARCH_FIELDS {
            st.classes[n] = class;
        }
        st.fields += 1;
        // The latest first non-zero word, the AND of the first words of
        // the fields that start there, and whether some field starts
        // earlier (its word there must then be read).
        let first = h.first as u32;
        if n == 0 {
            st.lead_first = first;
            st.lead_word = h.first_word;
        } else if first > st.lead_first {
            st.mixed = 1;
            st.lead_first = first;
            st.lead_word = h.first_word;
        } else if first == st.lead_first {
            st.lead_word &= h.first_word;
        } else {
            st.mixed = 1;
        }
        // The blocks where every field so far has bits: where the
        // candidates are when the latest start is not one (see `search`).
        st.blocks &= h.blocks;
    }
    true
}

/// The AND of word `w` over the recorded classes.
#[inline(always)]
fn and_word(st: &SearchState, w: u32) -> Option<u64> {
    let mut acc = u64::MAX;
    for n in 0..MAX_SEARCH_FIELDS {
        if n as u32 >= st.fields {
            break;
        }
        acc &= class_word(st.classes[n], w)?;
    }
    Some(acc)
}

#[inline(always)]
fn search(
    cfg: &ChainConfig,
    generation: u32,
    chain: u32,
    keys: &Keys,
    bytes: u64,
    st: &mut SearchState,
) -> Option<RuleAction> {
    let rule_count = cfg.rule_count;
    if rule_count == 0 {
        return None;
    }
    // Slots past the chain's end, for a chain whose rules all match.
    st.word0 = if rule_count >= 64 {
        u64::MAX
    } else {
        (1u64 << rule_count) - 1
    };
    let large = rule_count > SMALL_CHAIN;
    if large {
        st.fields = 0;
        st.mixed = 0;
        st.lead_first = 0;
        // The candidate blocks: all, until the fields narrow them.
        st.blocks = u64::MAX;
    }
    // One call per field, written out: each inlines its own lookup. The
    // chain's used fields are read once, and tested a group at a time:
    // most chains leave whole groups (addresses, interfaces) unused.
    let chain_facts = (generation, chain, large);
    let mut used = cfg.fields_used;
    if cfg.addr6_lead != 0 {
        let taken = take_lead(cfg, true, used, keys, st, chain_facts)
            .and_then(|used| take_lead(cfg, false, used, keys, st, chain_facts));
        let Some(taken) = taken else {
            bump(stats::CLASS_MISSING);
            return None;
        };
        used = taken;
    }
    macro_rules! take {
        ($f:expr) => {
            if used & (1 << $f) != 0 && !take_field(cfg, $f, keys, st, chain_facts) {
                bump(stats::CLASS_MISSING);
                return None;
            }
        };
    }
    // A group's fields, in field order; the tests of `GROUPS` are
    // constants and fold away.
    macro_rules! group {
        ($g:expr) => {
            if used & field::GROUPS[$g] != 0 {
                take_in!(
                    $g, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
                    21
                );
            }
        };
    }
    macro_rules! take_in {
        ($g:expr, $($f:expr),*) => {
            $(if field::GROUPS[$g] & (1 << $f) != 0 {
                take!($f);
            })*
        };
    }
    const _: () = assert!(field::COUNT == 22, "take_in! lists every field");
    const _: () = assert!(field::GROUPS.len() == 6, "group! runs every group");
    group!(0);
    group!(1);
    group!(2);
    group!(3);
    group!(4);
    group!(5);
    st.rule_base = cfg.rule_base;
    st.counter_base = cfg.counter_base;
    // Word 0 is searched first (below): later candidates start at word 1,
    // and no block is loaded yet.
    st.resume = 1;
    st.candidates = 0;
    // The first candidate is word 0; in a large chain whose word 0 has no
    // match, the first word every field has bits in (no slot before it
    // matches). Most packets end with that candidate's first slot.
    let mut w = 0;
    let mut pending = st.word0;
    // This search's sequence for guard outcomes, once a guard is met.
    let mut seq = 0;
    if pending == 0 && large {
        if st.mixed == 0 && st.lead_first > 0 {
            // Every field starts at `lead_first`: their first words are
            // the AND there. The words before it hold no match; the
            // steps resume past it (its block is loaded without them).
            w = st.lead_first;
            pending = st.lead_word;
            st.resume = w + 1;
            st.blocks &= !((1u64 << ((st.resume / 64) & 63)) - 1);
        } else {
            // Some field has bits before the latest start, or all start at
            // word 0, which just failed (a rule in front that does not
            // constrain a field gives its class a bit in word 0: `-p tcp
            // --syn -j DROP` before UDP rules), so the latest start is
            // only a lower bound, and its word may hold nothing. The first
            // block every field has bits in, and its first word where they
            // all do: taken here rather than in the loop.
            if !first_candidate(st) {
                return None;
            }
            w = st.word_index;
            pending = st.pending;
        }
    }
    if pending != 0 {
        let slot = w * 64 + lowest_bit(pending);
        if slot >= rule_count {
            return None;
        }
        pending &= pending - 1;
        let action = RULES.get(rule_index(capacity(), generation, cfg.rule_base, slot))?;
        // The only test an unguarded slot pays.
        let held = if action.guard == 0 {
            Held::Holds as u32
        } else {
            seq = next_seq();
            netbeast_guards(generation, action.guard, seq)
        };
        if held == Held::Hotdrop as u32 {
            return Some(hotdrop(st, slot));
        }
        if held != 0 {
            count(generation, cfg.counter_base + action.counter, bytes);
            if takes_effect(st, action, slot) {
                return Some(*action);
            }
        }
    } else if !large {
        return None;
    }
    // The rest of the search, in steps: the pending slots of word `w`, the
    // candidate words left in the loaded block, then the candidate blocks
    // (`netbeast_classify` set the generation and the chain).
    st.rule_count = rule_count;
    st.bytes = bytes;
    st.found = 0;
    st.seq = seq;
    st.word_index = w;
    st.pending = pending;
    // A small chain has no word past 0.
    if !large {
        // Volatile: two adjacent zero stores become a `memset` call, a
        // byte loop (`mem`).
        // SAFETY: fields of the search state.
        unsafe {
            core::ptr::write_volatile(&mut st.blocks, 0);
            core::ptr::write_volatile(&mut st.candidates, 0);
        }
    }
    // bpf_loop: the verifier checks `step` once instead of once per
    // iteration and per path into the search.
    let mut ctx = StepContext { st };
    // SAFETY: `step` has the callback signature bpf_loop expects, and `ctx`
    // outlives the call.
    unsafe {
        bpf_loop(
            SEARCH_STEPS,
            step as *mut c_void,
            &mut ctx as *mut StepContext as *mut c_void,
            0,
        );
    }
    let st = ctx.st;
    if st.found == 0 {
        return None;
    }
    Some(RuleAction {
        target: st.target,
        arg: st.arg,
        counter: 0,
        guard: 0,
    })
}

/// Every step either loads one candidate block, loads one candidate word
/// or acts on one matching rule; this bounds the search.
const SEARCH_STEPS: u32 =
    (SUMMARY_WORDS + RULE_WORDS + MAX_NONTERMINATING_RULES + MAX_GUARDED_SLOTS + 1) as u32;

/// The search's moving parts. They live in a map (the per-CPU packet slot
/// for the packet programs, `SOCK_SEARCH` for the socket programs) rather
/// than on the stack so the verifier sees them as unknown values and its
/// states merge at every step. All integers: an all-zero value is a valid
/// start.
#[repr(C)]
pub struct SearchState {
    /// Candidate blocks not loaded yet: the AND of the used fields'
    /// `ClassHeader::blocks`, less the blocks already loaded.
    blocks: u64,
    /// Candidate words of the loaded block (`block`) not visited yet: the
    /// AND of the fields' summaries of that block.
    candidates: u64,
    /// Bits of rule word `word_index` still to act on.
    pending: u64,
    bytes: u64,
    word_index: u32,
    block: u32,
    /// The first word not searched yet when the steps began: the loaded
    /// block that holds it drops the words before it.
    resume: u32,
    generation: u32,
    /// The chain searched (an ip6tables one: the connection is the IPv6
    /// tracker's, `parse::ipv6_search`).
    pub(crate) chain: u32,
    rule_count: u32,
    /// The chain's `ChainConfig::rule_base` and `counter_base`.
    rule_base: u32,
    counter_base: u32,
    /// Used fields recorded below (large chains), in field order.
    fields: u32,
    /// The packet's mark (skb->mark to the kernel): 0 for a packet from
    /// the wire, the socket's for the host's own at TC egress; `-j MARK`
    /// changes it during the search and `-m mark` reads it. It lives in
    /// the per-CPU packet slot, so it carries from one chain to the next
    /// (raw, nat PREROUTING, filter, nat POSTROUTING) as iptables'
    /// skb->mark does; nothing resets it between chains.
    pub mark: u32,
    /// The search's sequence for guard outcomes (`GUARD_MEMO`), 0 until a
    /// guarded slot is met.
    seq: u64,
    /// Set when a terminating rule matched; its target follows.
    found: u32,
    target: u32,
    arg: u32,
    /// While the fields are taken: the AND of their word 0, and (large
    /// chains) their latest first non-zero word, the AND of the first words
    /// of those that start there, and 1 when some start earlier.
    word0: u64,
    lead_word: u64,
    lead_first: u32,
    mixed: u32,
    /// Each recorded field's class. Kept small: the socket programs start
    /// a search from a zeroed state on their stack.
    classes: [u32; MAX_SEARCH_FIELDS],
    /// LOG rules the search met, in rule order (their `RuleAction::arg`):
    /// the pipeline emits their events once the chain is decided.
    pub log_count: u32,
    pub log_args: [u32; MAX_LOGS_PER_SEARCH],
    /// The packet's trace id while `netbeast trace` runs (`ACTIVE_TRACE`),
    /// else 0: set by the pipeline once per packet.
    pub trace_id: u64,
    /// Slots the search acted on, in order (traced packets only; see
    /// `trace.rs`).
    pub hit_count: u32,
    /// 1 when the search met a NOTRACK rule (raw table's `-j CT
    /// --notrack`): the pipeline then leaves the packet out of conntrack.
    pub untrack: u32,
    /// The conntrack template the search gave the packet (raw table's
    /// `-j CT`): `CT_TEMPLATE_SET` once a CT or NOTRACK rule was met, and
    /// the zone in the low 16 bits. The first one decides, as xt_CT leaves
    /// a packet that has a template alone.
    pub ct_template: u32,
    /// The packet's TTL (IPv6: hop limit) as the chain's `-j TTL` / `-j
    /// HL` rules left it (`Keys::ttl` when the search starts), and 1 in
    /// `rewrite` once one of them was met: the pipeline then writes it
    /// into the packet (`rewrite.rs`).
    pub ttl: u32,
    /// Likewise the TOS byte (traffic class) as `-j TOS` / `-j DSCP`
    /// left it; `rewrite` has `REWRITE_TTL` and `REWRITE_TOS` for what
    /// was met.
    pub tos: u32,
    pub rewrite: u32,
    /// What the packet's `-j TCPMSS` rules asked for, in every chain it
    /// met so far (`netbeast_common::tcpmss::merge`; 0: none): the
    /// pipeline writes it as the packet leaves (`tcpmss.rs`).
    pub mss: u32,
    pub hits: [u32; MAX_TRACE_HITS],
}

/// Where block `b`'s summary pair of a class that is not dense sits in
/// `CLASS_WORDS` (`ClassHeader::pair_index`, with this file's bit count).
#[inline(always)]
fn pair_index(h: &ClassHeader, b: u32) -> Option<u32> {
    let b = b & 63;
    if h.blocks & (1u64 << b) == 0 {
        return None;
    }
    Some(h.summaries + 2 * ones(h.blocks & ((1u64 << b) - 1)))
}

/// The summary of block `b` of class `class`: bit `i` set when word
/// `64 * b + i` is non-zero.
#[inline(always)]
fn class_block(class: u32, b: u32) -> Option<u64> {
    let h = CLASS_HEADERS.get(class)?;
    if h.dense != 0 {
        return Some(h.dense_block(b));
    }
    let Some(at) = pair_index(h, b) else {
        return Some(0);
    };
    let chunk = CLASS_WORDS.get(at / CLASS_WORD_CHUNK as u32)?;
    Some(chunk[at as usize % CLASS_WORD_CHUNK])
}

/// Word `w` of class `class`: its `first_word`, 0 outside its non-zero
/// words, else read from `CLASS_WORDS` (a dense class's directly, another's
/// at its rank, through its block's summary pair).
#[inline(always)]
fn class_word(class: u32, w: u32) -> Option<u64> {
    let h = CLASS_HEADERS.get(class)?;
    let first = h.first as u32;
    if w == first {
        return Some(h.first_word);
    }
    let at = if h.dense != 0 {
        if w < first || w > h.last as u32 {
            return Some(0);
        }
        h.offset + w - first
    } else {
        let Some(p) = pair_index(h, w / 64) else {
            return Some(0);
        };
        // A pair starts at an even index: both words are in this entry.
        let chunk = CLASS_WORDS.get(p / CLASS_WORD_CHUNK as u32)?;
        let i = p as usize % CLASS_WORD_CHUNK;
        let summary = chunk[i];
        let rank = chunk[(i | 1) & (CLASS_WORD_CHUNK - 1)];
        let bit = w % 64;
        if summary & (1u64 << bit) == 0 {
            return Some(0);
        }
        h.offset + rank as u32 + ones(summary & ((1u64 << bit) - 1))
    };
    let chunk = CLASS_WORDS.get(at / CLASS_WORD_CHUNK as u32)?;
    Some(chunk[at as usize % CLASS_WORD_CHUNK])
}

/// The AND of block `b`'s summaries over the recorded classes.
#[inline(always)]
fn and_block(st: &SearchState, b: u32) -> Option<u64> {
    let mut acc = u64::MAX;
    for n in 0..MAX_SEARCH_FIELDS {
        if n as u32 >= st.fields {
            break;
        }
        acc &= class_block(st.classes[n], b)?;
    }
    Some(acc)
}

/// Loads the next candidate block: the AND of its summaries (less the
/// words before `resume`) becomes `candidates`. `false` when no candidate
/// block is left.
#[inline(always)]
fn next_block(st: &mut SearchState) -> bool {
    let bits = st.blocks;
    if bits == 0 {
        return false;
    }
    st.blocks = bits & (bits - 1);
    let b = lowest_bit(bits);
    let Some(mut candidates) = and_block(st, b) else {
        bump(stats::CLASS_MISSING);
        return false;
    };
    let r = st.resume;
    if b == r / 64 {
        candidates &= u64::MAX << (r % 64);
    }
    st.block = b;
    st.candidates = candidates;
    true
}

/// Loads the first candidate block and, when it has one, its first
/// candidate word (`word_index`, `pending`; `pending` stays 0 otherwise).
/// `false` when there is none. Out of line: inlined, its lookups grew the
/// frame of `netbeast_classify`, which sits in the deepest call chain,
/// past the 512 bytes of stack all frames share.
#[inline(never)]
fn first_candidate(st: &mut SearchState) -> bool {
    st.pending = 0;
    st.word_index = 0;
    if !next_block(st) {
        return false;
    }
    st.candidates == 0 || next_word(st)
}

/// Moves to the next candidate word of the loaded block (there is one):
/// its AND over the used fields becomes `pending`. `false` when a class
/// cannot be read.
#[inline(always)]
fn next_word(st: &mut SearchState) -> bool {
    let bits = st.candidates;
    st.candidates = bits & bits.wrapping_sub(1);
    let w = st.block * 64 + lowest_bit(bits);
    st.word_index = w;
    match and_word(st, w) {
        Some(p) => {
            st.pending = p;
            true
        }
        None => {
            bump(stats::CLASS_MISSING);
            false
        }
    }
}

/// Acts on the lowest pending slot: counts it, and records its target when
/// it has a verdict. `true` when the search is over (a verdict, or past the
/// chain's last slot).
#[inline(always)]
fn act(st: &mut SearchState) -> bool {
    let slot = st.word_index * 64 + lowest_bit(st.pending);
    if slot >= st.rule_count {
        return true;
    }
    st.pending &= st.pending - 1;
    let Some(action) = RULES.get(rule_index(capacity(), st.generation, st.rule_base, slot)) else {
        return true;
    };
    if action.guard != 0 {
        if st.seq == 0 {
            st.seq = next_seq();
        }
        let held = netbeast_guards(st.generation, action.guard, st.seq);
        if held == 0 {
            // Not matched after all: not counted, the search goes on.
            return false;
        }
        if held == Held::Hotdrop as u32 {
            let drop = hotdrop(st, slot);
            st.target = drop.target;
            st.arg = drop.arg;
            st.found = 1;
            return true;
        }
    }
    count(st.generation, st.counter_base + action.counter, st.bytes);
    if takes_effect(st, action, slot) {
        st.target = action.target;
        st.arg = action.arg;
        st.found = 1;
        return true;
    }
    false
}

/// What a counted slot's target does, from the one table of targets
/// (`target::flags`): `true` when it ends the search. A side effect (LOG)
/// is recorded for the pipeline, which has the packet, to carry out after
/// the search; a traced packet's slot is recorded. A code the table does not know is counted and taken as a
/// rule without a target: never a verdict, so never a drop.
#[inline(always)]
fn takes_effect(st: &mut SearchState, action: &RuleAction, slot: u32) -> bool {
    if st.trace_id != 0 {
        crate::trace::record(st, slot);
    }
    let flags = target::flags(action.target);
    if flags & target::flag::SIDE_EFFECT != 0 {
        let n = st.log_count as usize;
        if n < MAX_LOGS_PER_SEARCH {
            st.log_args[n] = action.arg;
            st.log_count = n as u32 + 1;
        } else {
            bump(stats::LOG_LOST);
        }
    }
    if flags & target::flag::CT_TEMPLATE != 0 && st.ct_template == 0 {
        st.ct_template = CT_TEMPLATE_SET | (action.arg & 0xffff);
        if flags & target::flag::UNTRACK != 0 {
            st.untrack = 1;
        }
    }
    if flags & target::flag::SET_MARK != 0
        && let Some(m) = MARK_TARGETS.get(mark_target_index(st.generation & 1, action.arg))
    {
        st.mark = m.apply(st.mark);
    }
    if flags & target::flag::REWRITE != 0 {
        if action.target == target::TTL {
            st.ttl = netbeast_common::apply_ttl(action.arg, st.ttl as u8) as u32;
            st.rewrite |= REWRITE_TTL;
        } else {
            st.tos = netbeast_common::apply_tos(action.arg, st.tos as u8) as u32;
            st.rewrite |= REWRITE_TOS;
        }
    }
    if flags & target::flag::CONNECTION_MARK != 0 {
        st.mark = crate::conntrack::netbeast_connmark(st.generation, action.arg, st.mark);
    }
    if flags & target::flag::MSS != 0 {
        st.mss = netbeast_common::tcpmss::merge(st.mss, action.arg);
    }
    if flags & target::flag::KNOWN == 0 {
        bump(stats::UNKNOWN_TARGET);
    }
    flags & target::flag::TERMINATING != 0
}

/// A match of slot `slot` dropped the packet on the spot (the kernel's
/// hotdrop, [`Held::Hotdrop`]): the search ends with a DROP, the slot not
/// counted (a traced packet records it: the trace names the rule).
#[inline(always)]
fn hotdrop(st: &mut SearchState, slot: u32) -> RuleAction {
    if st.trace_id != 0 {
        crate::trace::record(st, slot);
    }
    RuleAction {
        target: target::DROP,
        arg: 0,
        counter: 0,
        guard: 0,
    }
}

/// `SearchState::rewrite`: a `-j TTL` / `-j HL` rule was met.
pub const REWRITE_TTL: u32 = 1;
/// `SearchState::rewrite`: a `-j TOS` / `-j DSCP` rule was met.
pub const REWRITE_TOS: u32 = 2;

/// `SearchState::ct_template`: a CT or NOTRACK rule was met.
pub const CT_TEMPLATE_SET: u32 = 1 << 16;

/// What `bpf_loop` hands every step: the search state.
#[repr(C)]
struct StepContext<'a> {
    st: &'a mut SearchState,
}

/// One step of the search; returns 1 to stop the loop.
extern "C" fn step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `StepContext` given to bpf_loop.
    let st = unsafe { &mut *(*(ctx as *mut StepContext)).st };
    if st.pending != 0 {
        if act(st) {
            return 1;
        }
    } else if st.candidates != 0 {
        if !next_word(st) {
            return 1;
        }
    } else if !next_block(st) {
        return 1;
    }
    0
}

/// The policy of a chain, for packets that never reach the rules.
#[inline(always)]
pub fn policy(generation: u32, chain: u32) -> u32 {
    match CHAINS.get(chain_index(generation, chain)) {
        Some(cfg) => cfg.policy,
        None => target::ACCEPT,
    }
}
