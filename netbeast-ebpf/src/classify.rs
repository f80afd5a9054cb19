//! The rule classifier of DESIGN §4: each field maps the packet's value to a
//! class, a bit vector of the rules that value satisfies; the first rule set
//! in the AND of all vectors is the first match. A summary bitmap per vector
//! lets the search skip words that cannot match, so the cost does not grow
//! with the number of rules.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::generated::bpf_loop,
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
};
use netbeast_common::{
    ACTIVE_NAT, ACTIVE_TRACKING, ACTIVE_TRANSLATIONS, ADDR_KEY_HEADER_BITS, ALL_RULES_CLASS,
    AddrKey, ChainConfig, ClassVector, Counter, IfaceKey, L4_CHUNK, MAX_NONTERMINATING_RULES,
    MAX_RULES_PER_CHAIN, MacKey, RULE_WORDS, RuleAction, chain_index, counter_index, ct_state,
    field, l4_base, rule_index, size, stats, target,
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
static CLASS_VECTORS: HashMap<u32, ClassVector> =
    HashMap::with_max_entries(size::CLASS_VECTORS, BPF_F_NO_PREALLOC);
#[map]
static ADDR_CLASSES: LpmTrie<AddrKey, u32> = LpmTrie::with_max_entries(size::ADDR_PREFIXES, 0);
#[map]
static PROTO_CLASSES: Array<[u32; 256]> = Array::with_max_entries(size::CHAINS, 0);
#[map]
static L4_CLASSES: Array<[u32; L4_CHUNK]> = Array::with_max_entries(size::L4_CLASSES, 0);
#[map]
static IFACE_CLASSES: HashMap<IfaceKey, u32> = HashMap::with_max_entries(size::IFACES, 0);
#[map]
static MAC_CLASSES: HashMap<MacKey, u32> = HashMap::with_max_entries(size::MACS, 0);
#[map]
static CT_CLASSES: Array<[u32; ct_state::KEYS]> = Array::with_max_entries(size::CHAINS, 0);

/// The packet values the fields look at.
pub struct Keys {
    /// Network byte order, as in the packet.
    pub src: u32,
    pub dst: u32,
    pub protocol: u8,
    pub l4a: u32,
    pub l4b: u32,
    pub in_ifindex: u32,
    pub out_ifindex: u32,
    pub mac: [u8; 6],
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
}

/// Outcome of one chain.
pub enum Verdict {
    /// A terminating rule matched (already counted).
    Rule(RuleAction),
    /// Nothing matched: the chain policy applies (already counted).
    Policy(u32),
}

#[inline(always)]
fn count(generation: u32, chain: u32, slot: u32, bytes: u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(counter_index(generation, chain, slot)) {
        // SAFETY: per-CPU slot.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

#[inline(always)]
fn addr_class(generation: u32, chain: u32, f: usize, addr: u32) -> Option<u32> {
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
fn l4_class(generation: u32, chain: u32, which: u32, value: u32) -> Option<u32> {
    let chunk = L4_CLASSES.get(l4_base(generation, chain, which) + value / L4_CHUNK as u32)?;
    Some(chunk[(value as usize) % L4_CHUNK])
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

/// The class vector of field `f`, or the all-ones vector when no rule of the
/// chain looks at `f`.
#[inline(always)]
fn vector(
    cfg: &ChainConfig,
    generation: u32,
    chain: u32,
    f: usize,
    keys: &Keys,
    all: *const ClassVector,
) -> Option<*const ClassVector> {
    if cfg.fields_used & (1 << f) == 0 {
        return Some(all);
    }
    let class = match f {
        field::SRC => addr_class(generation, chain, f, keys.src)?,
        field::DST => addr_class(generation, chain, f, keys.dst)?,
        field::PROTO => {
            let table = PROTO_CLASSES.get(chain_index(generation, chain))?;
            table[keys.protocol as usize]
        }
        field::L4A => l4_class(generation, chain, 0, keys.l4a)?,
        field::L4B => l4_class(generation, chain, 1, keys.l4b)?,
        field::IN_IFACE => iface_class(generation, chain, f, keys.in_ifindex, cfg.default_class[f]),
        field::OUT_IFACE => {
            iface_class(generation, chain, f, keys.out_ifindex, cfg.default_class[f])
        }
        field::CT_STATE => {
            let table = CT_CLASSES.get(chain_index(generation, chain))?;
            table[keys.ct_state as usize & (ct_state::KEYS - 1)]
        }
        _ => {
            let key = MacKey {
                generation: generation as u8,
                chain: chain as u8,
                mac: keys.mac,
            };
            // SAFETY: copied out at once.
            match unsafe { MAC_CLASSES.get(&key) } {
                Some(c) => *c,
                None => cfg.default_class[f],
            }
        }
    };
    CLASS_VECTORS.get_ptr(class)
}

/// Index of the lowest set bit of a non-zero word, without branches (BPF has
/// no count-trailing-zeros instruction).
#[inline(always)]
fn lowest_bit(x: u64) -> u32 {
    let b = x & x.wrapping_neg();
    let nz = |m: u64| -> u32 {
        let y = b & m;
        ((y | y.wrapping_neg()) >> 63) as u32
    };
    (nz(0xffff_ffff_0000_0000) << 5)
        | (nz(0xffff_0000_ffff_0000) << 4)
        | (nz(0xff00_ff00_ff00_ff00) << 3)
        | (nz(0xf0f0_f0f0_f0f0_f0f0) << 2)
        | (nz(0xcccc_cccc_cccc_cccc) << 1)
        | nz(0xaaaa_aaaa_aaaa_aaaa)
}

/// Runs chain `chain` of the active ruleset on a packet: counts every
/// matching non-terminating rule and the terminating one (or the policy).
/// Out of line: a packet may go through three chains (nat PREROUTING, a
/// filter chain, nat POSTROUTING), and the search's vectors then take
/// stack space once, not once per chain.
///
/// For the packet programs, which run in softirq context or with softirqs
/// off: nothing else on the CPU uses the per-CPU search state meanwhile.
#[inline(never)]
pub fn classify(generation: u32, chain: u32, keys: &Keys, bytes: u64) -> Verdict {
    let Some(st) = SEARCH.get_ptr_mut(0) else {
        return Verdict::Policy(policy(generation, chain));
    };
    classify_in(generation, chain, keys, bytes, st)
}

/// `classify` with the search state in `st`, for callers that can be
/// interrupted or preempted (the socket programs run in process context,
/// where a softirq's XDP or TC program, or another task, would overwrite
/// the per-CPU state in the middle of the search).
#[inline(always)]
pub fn classify_in(
    generation: u32,
    chain: u32,
    keys: &Keys,
    bytes: u64,
    st: *mut SearchState,
) -> Verdict {
    let Some(cfg) = CHAINS.get(chain_index(generation, chain)) else {
        return Verdict::Policy(target::ACCEPT);
    };
    let policy = cfg.policy;
    match search(cfg, generation, chain, keys, bytes, st) {
        Some(action) => Verdict::Rule(action),
        None => {
            count(generation, chain, MAX_RULES_PER_CHAIN as u32, bytes);
            Verdict::Policy(policy)
        }
    }
}

#[inline(always)]
fn search(
    cfg: &ChainConfig,
    generation: u32,
    chain: u32,
    keys: &Keys,
    bytes: u64,
    st: *mut SearchState,
) -> Option<RuleAction> {
    let rule_count = cfg.rule_count;
    if rule_count == 0 {
        return None;
    }
    // Fields no rule of the chain looks at use the all-ones vector. Every
    // pointer comes from the same map, so the verifier's paths merge after
    // each field instead of multiplying.
    let Some(all) = CLASS_VECTORS.get_ptr(ALL_RULES_CLASS) else {
        bump(stats::CLASS_MISSING);
        return None;
    };
    let Some(v0) = vector(cfg, generation, chain, field::SRC, keys, all) else {
        bump(stats::CLASS_MISSING);
        return None;
    };
    let Some(v1) = vector(cfg, generation, chain, field::DST, keys, all) else {
        bump(stats::CLASS_MISSING);
        return None;
    };
    let Some(v2) = vector(cfg, generation, chain, field::PROTO, keys, all) else {
        bump(stats::CLASS_MISSING);
        return None;
    };
    let Some(v3) = vector(cfg, generation, chain, field::L4A, keys, all) else {
        bump(stats::CLASS_MISSING);
        return None;
    };
    let Some(v4) = vector(cfg, generation, chain, field::L4B, keys, all) else {
        bump(stats::CLASS_MISSING);
        return None;
    };
    let Some(v5) = vector(cfg, generation, chain, field::IN_IFACE, keys, all) else {
        bump(stats::CLASS_MISSING);
        return None;
    };
    let Some(v6) = vector(cfg, generation, chain, field::OUT_IFACE, keys, all) else {
        bump(stats::CLASS_MISSING);
        return None;
    };
    let Some(v7) = vector(cfg, generation, chain, field::MAC_SOURCE, keys, all) else {
        bump(stats::CLASS_MISSING);
        return None;
    };
    let Some(v8) = vector(cfg, generation, chain, field::CT_STATE, keys, all) else {
        bump(stats::CLASS_MISSING);
        return None;
    };
    // SAFETY: map values stay valid for the whole program run (RCU).
    let (r0, r1, r2, r3, r4, r5, r6, r7, r8) =
        unsafe { (&*v0, &*v1, &*v2, &*v3, &*v4, &*v5, &*v6, &*v7, &*v8) };
    let summary = |i: usize| {
        r0.summary[i]
            & r1.summary[i]
            & r2.summary[i]
            & r3.summary[i]
            & r4.summary[i]
            & r5.summary[i]
            & r6.summary[i]
            & r7.summary[i]
            & r8.summary[i]
    };
    // SAFETY: scratch owned by this program run (see `classify_in`).
    unsafe {
        (*st).current = summary(0);
        (*st).rest = [summary(1), summary(2), summary(3)];
        (*st).pending = 0;
        (*st).base = 0;
        (*st).word_index = 0;
        (*st).generation = generation;
        (*st).chain = chain;
        (*st).rule_count = rule_count;
        (*st).found = 0;
        (*st).bytes = bytes;
    }
    let mut vectors = Vectors {
        v: [v0, v1, v2, v3, v4, v5, v6, v7, v8],
        st,
    };
    // bpf_loop: the verifier checks `step` once instead of once per
    // iteration and per path into the search.
    // SAFETY: `step` has the callback signature bpf_loop expects, and
    // `vectors` outlives the call.
    unsafe {
        bpf_loop(
            SEARCH_STEPS,
            step as *mut c_void,
            &mut vectors as *mut Vectors as *mut c_void,
            0,
        );
    }
    // SAFETY: as above.
    let st = unsafe { &*st };
    if st.found == 0 {
        return None;
    }
    Some(RuleAction {
        target: st.target,
        arg: st.arg,
        counter: 0,
        _pad: 0,
    })
}

/// Every step either moves to the next summary word, loads one candidate
/// word, or acts on one matching rule; this bounds the search.
const SEARCH_STEPS: u32 = (RULE_WORDS + 3 + MAX_NONTERMINATING_RULES + 1) as u32;

/// The class vectors of the packet's fields and the search state, handed
/// to every step.
#[repr(C)]
struct Vectors {
    v: [*const ClassVector; field::COUNT],
    st: *mut SearchState,
}

/// The search's moving parts. They live in a map (per-CPU `SEARCH` for the
/// packet programs) rather than on the stack so the verifier sees them as
/// unknown values and its states merge at every step. All integers: an
/// all-zero value is a valid start.
#[repr(C)]
pub struct SearchState {
    /// Bits of the summary word `base / 64` not yet visited.
    current: u64,
    /// The summary words after it.
    rest: [u64; 3],
    /// Bits of rule word `word_index` still to act on.
    pending: u64,
    bytes: u64,
    base: u32,
    word_index: u32,
    generation: u32,
    chain: u32,
    rule_count: u32,
    /// Set when a terminating rule matched; its target follows.
    found: u32,
    target: u32,
    arg: u32,
}

#[map]
static SEARCH: PerCpuArray<SearchState> = PerCpuArray::with_max_entries(1, 0);

/// One step of the search; returns 1 to stop the loop.
extern "C" fn step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Vectors` given to bpf_loop; its state is the
    // scratch owned by this program run.
    let (vs, st) = unsafe {
        let vs = &*(ctx as *const Vectors);
        (vs, &mut *vs.st)
    };
    if st.pending != 0 {
        let slot = st.word_index * 64 + lowest_bit(st.pending);
        if slot >= st.rule_count {
            return 1;
        }
        st.pending &= st.pending - 1;
        let Some(action) = RULES.get(rule_index(st.generation, st.chain, slot)) else {
            return 1;
        };
        count(st.generation, st.chain, action.counter, st.bytes);
        if action.target != target::NONE {
            st.target = action.target;
            st.arg = action.arg;
            st.found = 1;
            return 1;
        }
    } else if st.current != 0 {
        let w = st.base + lowest_bit(st.current);
        st.current &= st.current - 1;
        st.word_index = w;
        let w = w as usize & (RULE_WORDS - 1);
        // SAFETY: map values stay valid for the whole program run.
        st.pending = unsafe {
            (*vs.v[0]).words[w]
                & (*vs.v[1]).words[w]
                & (*vs.v[2]).words[w]
                & (*vs.v[3]).words[w]
                & (*vs.v[4]).words[w]
                & (*vs.v[5]).words[w]
                & (*vs.v[6]).words[w]
                & (*vs.v[7]).words[w]
                & (*vs.v[8]).words[w]
        };
    } else if st.rest[0] | st.rest[1] | st.rest[2] != 0 {
        st.current = st.rest[0];
        st.rest[0] = st.rest[1];
        st.rest[1] = st.rest[2];
        st.rest[2] = 0;
        st.base += 64;
    } else {
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
