//! `netbeast trace`: while `ACTIVE_TRACE` is set, every packet gets an id
//! ([`packet_id`]), the classifier records the slots it acts on
//! (`SearchState::hits`, in `takes_effect`) and, once each chain is
//! decided, [`emit`] puts one `TraceEvent` into `TRACE_EVENTS`: the chain,
//! the packet's keys as that chain saw them, the slots in order and the
//! verdict. Userspace maps the slots back to the rules (the compiler's
//! slot owners) and reads the packet's fate from the last chain. What is
//! reported is what the running program did, not a replay. Clear, the bit
//! costs one test per packet of a word already read; the recording and the
//! event only happen on the traced path. Never waits: a full buffer loses
//! the report (`stats::TRACE_LOST`), never the packet.

use aya_ebpf::{
    helpers::generated::{bpf_get_smp_processor_id, bpf_ktime_get_boot_ns},
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use netbeast_common::{
    MAX_TRACE_HITS, TRACE_ID_CPU_SHIFT, TRACE_RING_BYTES, TraceEvent, TraceKeys, stats,
};

use crate::{
    classify::{Keys, SearchState, Verdict},
    stats::bump,
};

const _: () = assert!(
    size_of::<Keys>() == size_of::<TraceKeys>(),
    "TraceKeys mirrors classify::Keys"
);

/// The reports, for `netbeast trace`.
#[map]
static TRACE_EVENTS: RingBuf = RingBuf::with_byte_size(TRACE_RING_BYTES, 0);

/// Each CPU's count of traced packets: the low bits of their ids.
#[map]
static TRACE_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// A new id for a packet the pipeline traces (never 0: 0 means "not
/// traced").
#[inline(always)]
pub fn packet_id() -> u64 {
    // SAFETY: a helper without arguments.
    let cpu = u64::from(unsafe { bpf_get_smp_processor_id() });
    let n = match TRACE_SEQ.get_ptr_mut(0) {
        Some(p) => {
            // SAFETY: this CPU's slot.
            unsafe {
                *p += 1;
                *p
            }
        }
        None => 1,
    };
    // `n` starts at 1: an id is never 0.
    cpu << TRACE_ID_CPU_SHIFT | (n & ((1 << TRACE_ID_CPU_SHIFT) - 1))
}

/// Records slot `slot` as acted on, for a traced search.
#[inline(always)]
pub fn record(st: &mut SearchState, slot: u32) {
    let n = st.hit_count as usize;
    if n < MAX_TRACE_HITS {
        st.hits[n] = slot;
    }
    st.hit_count = n as u32 + 1;
}

/// Reports chain `chain`'s run on a traced packet (`st.trace_id != 0`).
#[inline(always)]
pub fn emit(generation: u32, chain: u32, keys: &Keys, st: &SearchState, verdict: &Verdict) {
    let verdict = match verdict {
        Verdict::Rule(a) => 1 << 63 | u64::from(a.target) << 32 | u64::from(a.arg),
        Verdict::Policy(p) => u64::from(*p) << 32,
    };
    netbeast_trace(generation << 8 | chain, verdict, keys, st);
}

/// [`emit`] as a BPF global function, verified once on its own (as the LOG
/// emitters are); at most five arguments. `at`: the generation above the
/// low 8 bits, the chain in them. `verdict`: bit 63 set when a rule
/// decided, then its target in bits 32..62 and its `arg` in 0..31; else
/// the policy in bits 32..62.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_trace(
    at: u32,
    verdict: u64,
    keys: *const Keys,
    st: *const SearchState,
) -> u32 {
    if keys.is_null() || st.is_null() {
        return 0;
    }
    let Some(mut entry) = TRACE_EVENTS.reserve::<TraceEvent>(0) else {
        bump(stats::TRACE_LOST);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is the reserved entry, written whole before it is
    // submitted; `keys` and `st` point to whole values (checked by the
    // verifier at every call).
    unsafe {
        let st = &*st;
        (*ev).id = st.trace_id;
        (*ev).boot_ns = bpf_ktime_get_boot_ns();
        // Word by word: a struct assignment becomes a byte loop.
        let from = keys.cast::<u64>();
        let to = core::ptr::addr_of_mut!((*ev).keys).cast::<u64>();
        for w in 0..size_of::<TraceKeys>() / 8 {
            core::ptr::write_volatile(to.add(w), core::ptr::read_volatile(from.add(w)));
        }
        (*ev).generation = at >> 8;
        (*ev).chain = at & 0xff;
        (*ev).decided = (verdict >> 63) as u32;
        (*ev).target = (verdict >> 32) as u32 & !(1 << 31);
        (*ev).arg = verdict as u32;
        (*ev).hit_count = st.hit_count;
        let from = st.hits.as_ptr().cast::<u64>();
        let to = core::ptr::addr_of_mut!((*ev).hits).cast::<u64>();
        for w in 0..MAX_TRACE_HITS / 2 {
            core::ptr::write_volatile(to.add(w), core::ptr::read_volatile(from.add(w)));
        }
        // An IPv6 packet's other address words, from the packet slot.
        let words = crate::parse::current_packet().map_or([0; 6], |p| p.addr6);
        let to = core::ptr::addr_of_mut!((*ev).addr6).cast::<u32>();
        for (w, word) in words.iter().enumerate() {
            core::ptr::write_volatile(to.add(w), *word);
        }
    }
    entry.submit(0);
    0
}
