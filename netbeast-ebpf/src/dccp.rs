//! `-m dccp --dccp-types` / `--dccp-option` (xt_dccp): the pipeline's
//! reading of a DCCP header into the packet's per-CPU slot
//! (`Packet::dccp`), while a rule tests them (`ACTIVE_DCCP`). The guard
//! (`guard_kind::DCCP`, `Guard::dccp`) reads only what this left.
//!
//! It runs inside the L4 walk's global functions (`parse.rs`,
//! `netbeast_sctp_walk_xdp`/`_tc`), which copy the header into the
//! slot's walk buffer first: a global function cannot take a pointer
//! into the packet, and out of the pipeline the verifier checks it once.

use netbeast_common::dccp::{
    DccpFacts, GENERIC_HLEN, MAX_HEADER_BYTES, MAX_OPTION_STEPS, option_step, options_start, status,
};

use crate::parse::{PACKET, Packet, SCTP_WALK_BYTES};

/// DCCP's protocol number.
pub const IPPROTO_DCCP: u8 = 33;

/// Where the current packet's DCCP header lies: its offset in the frame,
/// and the bytes from there to the datagram's end. `None` (left
/// `status::NONE`) for anything but DCCP, and for a later fragment,
/// which the kernel's match never matches. `l4`: the header's offset.
#[inline(always)]
pub fn area(pkt: &Packet, l4: usize) -> Option<(u32, usize)> {
    if pkt.fragment || pkt.keys.protocol != IPPROTO_DCCP {
        return None;
    }
    let datagram_len = (pkt.l2_len() + pkt.total_len()).saturating_sub(l4);
    Some((l4 as u32, datagram_len))
}

/// Bytes of the header to copy for [`walk`]: all of it when the datagram
/// holds it (at most `MAX_HEADER_BYTES`, which the walk buffer holds).
#[inline(always)]
pub fn copy_len(datagram_len: usize) -> u32 {
    datagram_len.min(MAX_HEADER_BYTES) as u32
}

/// Reads the copied header into `pkt.dccp`: the type, and the option
/// types xt_dccp's walk meets (in `bpf_loop`, one step verified).
/// `loaded`: the copy of `copy_len(datagram_len)` bytes succeeded.
#[inline(always)]
pub fn walk(pkt: &mut Packet, loaded: bool, datagram_len: usize) {
    pkt.dccp = DccpFacts::default();
    if !loaded || datagram_len < GENERIC_HLEN {
        pkt.dccp.status = status::SHORT;
        return;
    }
    let type_byte = pkt.sctp_copy.bytes[8];
    pkt.dccp.packet_type = u32::from(type_byte >> 1 & 0xf);
    pkt.dccp.status = status::TYPE_ONLY;
    let start = options_start(type_byte);
    let end = usize::from(pkt.sctp_copy.bytes[4]) * 4;
    if end == start {
        pkt.dccp.status = status::OPTIONS;
        return;
    }
    // A data offset short of the type's header, or options past the
    // datagram: xt_dccp drops the packet when it tests an option.
    if end < start || end > datagram_len {
        return;
    }
    pkt.sctp_copy.at = start as u64;
    pkt.sctp_copy.len = end as u32;
    // SAFETY: `step` has the callback signature bpf_loop expects; it keeps
    // its state in this CPU's packet slot.
    unsafe {
        aya_ebpf::helpers::generated::bpf_loop(
            MAX_OPTION_STEPS as u32,
            step as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    pkt.dccp.status = status::OPTIONS;
}

/// One option of the walk (`option_step`); returns 1 (stop) at the end
/// of the option area. Its state is in the packet slot, as the SCTP
/// walk's: the verifier meets every step alike and checks one.
extern "C" fn step(_index: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(p) = PACKET.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's slot, used by this program run only.
    let (copy, facts) = unsafe { (&mut (*p).sctp_copy, &mut (*p).dccp) };
    let at = copy.at as usize;
    if at >= copy.len as usize {
        return 1;
    }
    let (kind, next) = option_step(at, |i| copy.bytes[i & (SCTP_WALK_BYTES - 1)]);
    facts.options[usize::from(kind >> 6) & 3] |= 1u64 << (kind & 63);
    copy.at = next as u64;
    0
}

/// What the pipeline read of the packet this program run parsed, for the
/// guard.
#[inline(always)]
pub fn current() -> Option<&'static DccpFacts> {
    PACKET.get(0).map(|p| &p.dccp)
}
