//! Bounds-checked parsing: Ethernet, up to two VLAN tags, IPv4 (with
//! options and fragments), and the first bytes of TCP, UDP and ICMP. Every
//! access goes through `load`, which checks it against the packet end.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use netbeast_common::sctp::{MAX_SCTP_CHUNKS, SctpChunks, status as sctp_status};
use netbeast_common::{
    Ipv6Ext, Ipv6Walk, L4_FRAGMENT, L4_NONE, MAX_IPV6_EXT_HEADERS, TCP_FLAGS_CUT, TCP_FLAGS_NONE,
    port_header_len,
};

use crate::classify::{Keys, SearchState};

pub const ETH_HLEN: usize = 14;
/// The low six bytes of a little-endian word: a MAC address read with the
/// two bytes after it.
const MAC_MASK: u64 = 0xffff_ffff_ffff;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const VLAN_HLEN: usize = 4;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_SCTP: u8 = 132;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const TCP_HLEN: usize = 20;
pub const ICMP_HLEN: usize = 8;

/// Reads a `T` at `start + offset` if it lies entirely before `end`.
#[inline(always)]
pub fn load<T: Copy>(start: usize, end: usize, offset: usize) -> Option<T> {
    // One opaque pointer for the check and the read: LLVM may neither drop
    // the check nor recompute the address in a way the verifier can't link.
    let p = opaque(start + offset);
    if p + core::mem::size_of::<T>() > end {
        return None;
    }
    // SAFETY: the whole `T` is within [start, end), checked above.
    Some(unsafe { core::ptr::read_unaligned(p as *const T) })
}

/// Writes a `T` at `start + offset` if it lies entirely before `end`.
#[inline(always)]
pub fn store<T: Copy>(start: usize, end: usize, offset: usize, value: T) -> bool {
    let p = opaque(start + offset);
    if p + core::mem::size_of::<T>() > end {
        return false;
    }
    // SAFETY: the whole `T` is within [start, end), checked above.
    unsafe { core::ptr::write_unaligned(p as *mut T, value) };
    true
}

/// Writes an IPv6 address (four words) at `start + offset` if it lies
/// entirely before `end`: one word at a time, where a 16-byte
/// `write_unaligned` becomes a call to a byte-by-byte `memmove` that costs
/// the verifier a state per byte.
#[inline(always)]
pub fn store_addr6(start: usize, end: usize, offset: usize, words: &[u32; 4]) -> bool {
    let p = opaque(start + offset);
    if p + 16 > end {
        return false;
    }
    for (i, w) in words.iter().enumerate() {
        // SAFETY: the 16 bytes are within [start, end), checked above.
        unsafe { core::ptr::write_unaligned((p + 4 * i) as *mut u32, *w) };
    }
    true
}

/// Reads an IPv6 address (four words) at `start + offset`, as
/// [`store_addr6`] writes one.
#[inline(always)]
pub fn load_addr6(start: usize, end: usize, offset: usize) -> Option<[u32; 4]> {
    let p = opaque(start + offset);
    if p + 16 > end {
        return None;
    }
    let mut words = [0u32; 4];
    for (i, w) in words.iter_mut().enumerate() {
        // SAFETY: the 16 bytes are within [start, end), checked above.
        *w = unsafe { core::ptr::read_unaligned((p + 4 * i) as *const u32) };
    }
    Some(words)
}

/// Hides a value's origin from LLVM. After the IPv4 length checks LLVM can
/// prove later packet accesses in bounds and drop their checks, but the
/// verifier only trusts comparisons against the packet end itself.
#[inline(always)]
pub fn opaque(x: usize) -> usize {
    // SAFETY: reads a local.
    unsafe { core::ptr::read_volatile(&x) }
}

impl Packet {
    /// The L2 header length, bounded for the verifier (a packet read back
    /// from the scratch map carries no bounds).
    #[inline(always)]
    pub fn l2_len(&self) -> usize {
        self.l3 & 0x1f
    }

    /// The IPv4 header length (20..=60), bounded for the verifier.
    #[inline(always)]
    pub fn ip_header_len(&self) -> usize {
        self.header_len & 0x3c
    }

    /// IPv4 total length: what iptables counts as the packet's bytes.
    #[inline(always)]
    pub fn total_len(&self) -> usize {
        self.keys.length as usize
    }
}

/// What the pipeline needs to know about an IPv4 packet.
pub struct Packet {
    /// The classifier's keys, parsed in place: a chain runs on them with no
    /// copy (the interfaces and the connection state are set per chain).
    /// Addresses as they sit in the packet (network byte order); `l4a` and
    /// `l4b` are ports, ICMP type/code, or `L4_NONE`/`L4_FRAGMENT`. The
    /// total length, TTL, TOS and TCP flags live there too (read once).
    pub keys: Keys,
    /// Offset of the IPv4 header from the start of the frame.
    pub l3: usize,
    /// IHL in bytes.
    pub header_len: usize,
    pub fragment: bool,
    /// The whole fixed L4 header (TCP 20, UDP 8, ICMP 8 bytes) is present.
    pub l4_complete: bool,
    /// ICMP identifier (echo, timestamp...) when complete.
    pub icmp_id: u16,
    /// Its TCP options, walked only while a rule tests them.
    pub tcp_options: TcpOptions,
    /// Its SCTP chunks, walked only while a rule tests them, and the
    /// bytes they were walked in.
    pub sctp: SctpChunks,
    pub sctp_copy: SctpCopy,
    /// Its DCCP header as `-m dccp`'s type and option tests read it
    /// (`dccp.rs`), read only while a rule tests them; the walk uses
    /// `sctp_copy`'s buffer.
    pub dccp: netbeast_common::dccp::DccpFacts,
    /// The classifier's working state while a chain runs on the packet:
    /// in the same per-CPU slot, found with the packet and not looked up
    /// again for each chain.
    pub search: SearchState,
    /// The IPv6 extension-header walk's next header and offset, kept here
    /// between its steps (`parse_ipv6`): read back from the map, they are
    /// unknown to the verifier, so every way through a step ends in the
    /// same state and it checks the next step once, not once per path.
    pub walk_next: u32,
    pub walk_off: u32,
    /// What `discard::discards6` said of an IPv6 packet the program goes
    /// on with (`NOT_FORWARDED6` or 0), kept here for the routing decision
    /// and read back with a volatile load: a value from the map is unknown
    /// to the verifier, which would otherwise walk the rest of the program
    /// once per value it can have (+197,000 instructions).
    pub kernel6: u32,
    /// Words 1 to 3 of an IPv6 packet's source and destination (network
    /// order), in `field::addr_slot` order from slot 2: source word 1,
    /// destination word 1, source word 2, ... Word 0 is in `keys.src` /
    /// `keys.dst`. Unset for IPv4 packets: IPv4 chains never look them up.
    pub addr6: [u32; 6],
    /// The IPv6 parser's walk of the extension headers, as ip6tables'
    /// header matches read it (`-m ipv6header`, `-m rt`, `-m frag`);
    /// unset for IPv4.
    pub ext6_walk: Ipv6Walk,
    /// The header matches' facts made from `ext6_walk` when a rule asks.
    pub ext6: Ipv6Ext,
    /// An IPv6 first fragment (a fragment header with offset 0 and more
    /// to come): its L4 checksum covers the whole datagram, which
    /// conntrack takes as it is (as for IPv4).
    pub first_fragment6: bool,
    /// Where a FORWARD packet goes next (`route::path` sets it for those
    /// only): here rather than on the stack, which the call chain's 512
    /// bytes have no room for.
    pub next_hop: crate::route::NextHop,
    /// The destination address and port a packet had before nat
    /// PREROUTING's translation rewrote them in this run (`nat::translate`;
    /// bit 16 of the port word set when it did; an IPv6 packet's address
    /// in `dnat_from6`): REJECT answers as the client addressed it
    /// (`nat::untranslate`).
    pub dnat_from: (u32, u32),
    pub dnat_from6: [u32; 4],
}

/// What ip6tables' header matches read of the IPv6 packet this program
/// run parsed (`netbeast_ipv6_facts` made it).
#[inline(always)]
pub fn current_ext6() -> Option<&'static Ipv6Ext> {
    PACKET.get(0).map(|p| &p.ext6)
}

/// Makes the header matches' facts of the IPv6 packet this program run
/// parsed from its walk (`end`: its protocol), into the packet slot. A BPF
/// global function: the verifier checks its loop once, on its own, not
/// under every state of the program around it.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_ipv6_facts(end: u32) -> u32 {
    let Some(p) = PACKET.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot, used by this program run only.
    let p = unsafe { &mut *p };
    p.ext6_walk.facts_into(end as u8, &mut p.ext6);
    0
}

/// The IPv6 address words of the packet this program run parsed (see
/// `Packet::addr6`).
#[inline(always)]
pub fn current_addr6() -> Option<&'static [u32; 6]> {
    PACKET.get(0).map(|p| &p.addr6)
}

/// Bytes of TCP options a header can carry (data offset 15: 60 − 20),
/// rounded up to a power of two so an index masks into the copy.
const TCP_OPTION_BYTES: usize = 64;

/// The option kinds of a TCP packet (`--tcp-option`), as xt_tcpudp's walk
/// meets them: from the first option byte on, a kind 0 (end) or 1 (no-op)
/// takes one byte, any other its length byte's worth (one when that is
/// 0); the walk does not stop at an end-of-options kind.
pub struct TcpOptions {
    /// 1 when `kinds` holds the current packet's walk: a TCP first
    /// fragment with a whole header whose options are all there.
    pub read: u32,
    pub _pad: u32,
    /// Bit `k`: kind `k` was met.
    pub kinds: [u64; 4],
    /// The options, copied from the packet for the walk.
    bytes: [u8; TCP_OPTION_BYTES],
}

/// What `bpf_loop` hands each step of the options walk.
#[repr(C)]
struct OptionWalk {
    options: *mut TcpOptions,
    at: u64,
    len: u64,
}

/// One option of the walk; returns 1 (stop) past the last byte.
extern "C" fn option_step(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `OptionWalk` given to bpf_loop, whose `options`
    // points into this CPU's packet slot.
    let w = unsafe { &mut *(ctx as *mut OptionWalk) };
    if w.at >= w.len {
        return 1;
    }
    // SAFETY: as above.
    let o = unsafe { &mut *w.options };
    let kind = o.bytes[(w.at & 63) as usize];
    o.kinds[(kind >> 6) as usize & 3] |= 1u64 << (kind & 63);
    w.at += if kind < 2 {
        1
    } else {
        match o.bytes[((w.at + 1) & 63) as usize] {
            0 => 1,
            n => u64::from(n),
        }
    };
    0
}

/// Walks the TCP options of the packet into `pkt.tcp_options`. Left
/// unread (the match then fails, where xt_tcpudp drops the packet) when
/// the header is not whole, its data offset is below 5, or its options run
/// past the datagram or the bytes at hand. The walk runs in `bpf_loop`: the
/// verifier checks one step, not forty. Out of line: its caller is the
/// pipeline, whose budget the verifier counts per path.
#[inline(never)]
pub fn read_tcp_options(pkt: &mut Packet, start: usize, end: usize) {
    pkt.tcp_options.read = 0;
    pkt.tcp_options.kinds = [0; 4];
    if pkt.fragment || pkt.keys.protocol != IPPROTO_TCP || !pkt.l4_complete {
        return;
    }
    let l4 = pkt.l2_len() + pkt.ip_header_len();
    let Some(doff) = load::<u8>(start, end, l4 + 12) else {
        return;
    };
    let words = (doff >> 4) as usize;
    if words < 5 {
        return;
    }
    let len = words * 4 - TCP_HLEN;
    if len == 0 {
        pkt.tcp_options.read = 1;
        return;
    }
    if l4 + TCP_HLEN + len > pkt.l2_len() + pkt.total_len() {
        return;
    }
    let from = opaque(start + l4 + TCP_HLEN);
    if from + len > end {
        return;
    }
    let options = &mut pkt.tcp_options as *mut TcpOptions;
    // SAFETY: `len` (at most 40) bytes at `from` are inside the packet
    // (checked); the copy has room for 63.
    let copied = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            (*options).bytes.as_mut_ptr() as *mut _,
            // Masked after `opaque`: LLVM knows `len` is at most 40 and
            // would drop a plain mask, leaving the verifier a length it
            // cannot bound.
            (opaque(len) & (TCP_OPTION_BYTES - 1)) as u32,
            from as *const _,
        )
    };
    if copied != 0 {
        return;
    }
    let mut walk = OptionWalk {
        options,
        at: 0,
        len: len as u64,
    };
    // SAFETY: `option_step` has the callback signature bpf_loop expects,
    // and `walk` outlives the call.
    unsafe {
        aya_ebpf::helpers::generated::bpf_loop(
            TCP_OPTION_BYTES as u32,
            option_step as *mut core::ffi::c_void,
            &mut walk as *mut OptionWalk as *mut core::ffi::c_void,
            0,
        );
    }
    pkt.tcp_options.read = 1;
}

/// SCTP's common header: ports, verification tag, checksum.
const SCTP_HLEN: usize = 12;
/// A chunk header: type, flags, length.
const SCTP_CHUNK_HLEN: usize = 4;

/// Bytes of an SCTP packet's chunks (after its common header) the walk
/// can read: copied from the packet first (`bpf_xdp_load_bytes`,
/// `bpf_skb_load_bytes`), as a global function cannot take a pointer into
/// the packet. Past them, a chunk counts as cut short (`status::CUT`): a
/// 1,500-byte MTU's packet fits. A power of two: the copy's length is
/// masked with it.
pub const SCTP_WALK_BYTES: usize = 2048;

/// The chunk bytes of the current SCTP packet.
pub struct SctpCopy {
    /// 1 when `bytes` holds the current packet's chunks.
    pub ready: u32,
    /// A first fragment (more fragments follow).
    pub more: u32,
    /// Bytes copied, and bytes from the first chunk to the datagram's end.
    pub len: u32,
    pub datagram_len: u32,
    /// The walk's next chunk (from the first chunk's start).
    pub at: u64,
    /// `--chunk-types`' test (`netbeast_sctp_chunks`): the listed types
    /// not met yet, and 0 while undecided or 1 + the outcome. Here for the
    /// same reason as `at`.
    pub left: u64,
    pub decided: u64,
    /// The guard under test (off the stack, whose 512 bytes the calls
    /// down to this test share).
    pub test: netbeast_common::Guard,
    /// The IPv4 header's flags and fragment offset, as loaded.
    pub frag: [u8; 2],
    pub(crate) bytes: [u8; SCTP_WALK_BYTES],
}

/// One chunk of the walk, as xt_sctp steps: its header must lie in the
/// datagram with a length other than 0; the next starts that length,
/// rounded up to 4, further on. Returns 1 (stop) when the walk ends.
/// Its state is in the packet slot, not behind a context on the stack:
/// the stack's 512 bytes are shared by every call down to here, and the
/// verifier meets every step with the same (unknown) values, so it checks
/// one.
extern "C" fn chunk_step(_index: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(p) = PACKET.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's slot, used by this program run only.
    let (c, copy) = unsafe { (&mut (*p).sctp, &mut (*p).sctp_copy) };
    let at = copy.at;
    let datagram_end = u64::from(copy.datagram_len);
    // The kernel's walk reads a first chunk whatever the length (a
    // do-while): an SCTP packet without one is cut short.
    if c.count > 0 && at >= datagram_end {
        // A first fragment's chunks go on in the next fragment: only what
        // the ones here decide is known.
        c.status = if copy.more != 0 {
            sctp_status::CUT
        } else {
            sctp_status::WHOLE
        };
        return 1;
    }
    if c.count as usize >= MAX_SCTP_CHUNKS {
        c.status = sctp_status::MORE;
        return 1;
    }
    if at + SCTP_CHUNK_HLEN as u64 > datagram_end {
        // No whole chunk header where the datagram ends: the kernel drops
        // the packet (a first fragment's goes on in the next one).
        c.status = if copy.more != 0 {
            sctp_status::CUT
        } else {
            sctp_status::BAD
        };
        return 1;
    }
    if at + SCTP_CHUNK_HLEN as u64 > u64::from(copy.len) {
        c.status = sctp_status::CUT;
        return 1;
    }
    let at = at as usize;
    let header = [
        copy.bytes[at & (SCTP_WALK_BYTES - 1)],
        copy.bytes[(at + 1) & (SCTP_WALK_BYTES - 1)],
        copy.bytes[(at + 2) & (SCTP_WALK_BYTES - 1)],
        copy.bytes[(at + 3) & (SCTP_WALK_BYTES - 1)],
    ];
    let len = u16::from_be_bytes([header[2], header[3]]);
    if len == 0 {
        c.status = sctp_status::BAD;
        return 1;
    }
    let i = c.count as usize & (MAX_SCTP_CHUNKS - 1);
    c.types[i] = header[0];
    c.flags[i] = header[1];
    c.count += 1;
    copy.at = at as u64 + ((u64::from(len) + 3) & !3);
    0
}

/// Where the current packet's SCTP chunks lie, for the walk: their offset
/// in the frame, and the offset of its IP header; the bytes to the
/// datagram's end in the slot. `None` for anything but an SCTP packet
/// whose common header is whole, or a later fragment (left unwalked,
/// `status::NONE`). `v6`: an IPv6 packet, whose upper layer starts where
/// the parser's extension-header walk ended (`walk_off`).
#[inline(always)]
fn sctp_chunk_area(pkt: &mut Packet, v6: bool) -> Option<(u32, u32)> {
    pkt.sctp_copy.ready = 0;
    pkt.sctp.status = sctp_status::NONE;
    pkt.sctp.count = 0;
    if pkt.fragment || pkt.keys.protocol != IPPROTO_SCTP || !pkt.l4_complete {
        return None;
    }
    let l3 = pkt.l2_len();
    let from = l4_offset(pkt, v6) + SCTP_HLEN;
    let datagram_len = (l3 + pkt.total_len()).saturating_sub(from);
    pkt.sctp_copy.datagram_len = datagram_len as u32;
    pkt.sctp_copy.len = datagram_len.min(SCTP_WALK_BYTES - 1) as u32;
    Some((from as u32, l3 as u32))
}

/// The offset of the upper-layer header in the frame: after the IPv4
/// header, or where the IPv6 parser's extension-header walk ended.
#[inline(always)]
fn l4_offset(pkt: &Packet, v6: bool) -> usize {
    if v6 {
        (pkt.walk_off & WALK_OFF_MASK) as usize
    } else {
        pkt.l2_len() + pkt.ip_header_len()
    }
}

/// `--chunk-types`' walk of an XDP packet (while `active`, the `ACTIVE`
/// word, has `ACTIVE_SCTP_CHUNKS`): copies its chunks (at most
/// `SCTP_WALK_BYTES`) into the packet's slot with `bpf_xdp_load_bytes`
/// and walks them (`walk_sctp`). A BPF global function, verified once on
/// its own (`ctx` is the program's context): inlined in the pipeline, or
/// out of line but static, the walk took the IPv4 program past the
/// verifier's million instructions. `v6` (non-zero): the packet is the
/// IPv6 program's (ip6tables' `--chunk-types`, the same walk and test).
/// With `ACTIVE_DCCP` it reads a DCCP packet's header instead
/// (`dccp.rs`): one function for both walks, so the pipeline keeps one
/// call and one fork for them.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_sctp_walk_xdp(
    ctx: *mut aya_ebpf::bindings::xdp_md,
    active: u32,
    v6: u32,
) -> u32 {
    use aya_ebpf::helpers::generated::bpf_xdp_load_bytes;
    let Some(pkt) = PACKET.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot, used by this program run only.
    let pkt = unsafe { &mut *pkt };
    pkt.dccp.status = netbeast_common::dccp::status::NONE;
    if ctx.is_null() {
        return 0;
    }
    // `-m dccp`'s header reading (`dccp.rs`), in the same buffer.
    // SAFETY: a helper writing into a buffer of the size given.
    if read_dccp(pkt, active, v6 != 0, |from, to, size| unsafe {
        bpf_xdp_load_bytes(ctx, from, to.cast(), size) == 0
    }) {
        return 0;
    }
    if active & netbeast_common::ACTIVE_SCTP_CHUNKS == 0 {
        return 0;
    }
    let Some((from, l3)) = sctp_chunk_area(pkt, v6 != 0) else {
        return 0;
    };
    let len = pkt.sctp_copy.len & (SCTP_WALK_BYTES as u32 - 1);
    // SAFETY: helpers writing into buffers of the sizes given.
    let loaded = unsafe {
        sctp_fragment_flags(pkt, v6 != 0, |to| {
            bpf_xdp_load_bytes(ctx, l3 + 6, to.cast(), 2) == 0
        }) && (len == 0
            || bpf_xdp_load_bytes(
                ctx,
                from,
                pkt.sctp_copy.bytes.as_mut_ptr().cast(),
                copy_size(len),
            ) == 0)
    };
    let flags = pkt.sctp_copy.frag[0];
    walk_sctp(pkt, loaded, flags);
    0
}

/// `-m dccp`'s reading of a DCCP packet's header (`dccp.rs`) while
/// `active` has `ACTIVE_DCCP`: the header copied into the walk buffer by
/// `load(offset, buffer, size)` (true when it succeeded), then read. True
/// when the packet was DCCP (nothing else to walk then).
#[inline(always)]
fn read_dccp(
    pkt: &mut Packet,
    active: u32,
    v6: bool,
    load: impl FnOnce(u32, *mut u8, u32) -> bool,
) -> bool {
    if active & netbeast_common::ACTIVE_DCCP == 0 {
        return false;
    }
    let Some((from, datagram_len)) = crate::dccp::area(pkt, l4_offset(pkt, v6)) else {
        return false;
    };
    let len = crate::dccp::copy_len(datagram_len);
    let loaded = len != 0 && load(from, pkt.sctp_copy.bytes.as_mut_ptr(), copy_size(len));
    crate::dccp::walk(pkt, loaded, datagram_len);
    true
}

/// Fills `sctp_copy.frag` with what the walk needs of the fragment
/// fields (its byte 0's More Fragments bit, 0x20): an IPv4 packet's
/// header bytes 6 and 7, loaded by `load`; for IPv6 the parser's finding
/// that a fragment header with offset 0 says more follow. False when the
/// load failed.
#[inline(always)]
fn sctp_fragment_flags(pkt: &mut Packet, v6: bool, load: impl FnOnce(*mut u8) -> bool) -> bool {
    if v6 {
        pkt.sctp_copy.frag = [if pkt.first_fragment6 { 0x20 } else { 0 }, 0];
        return true;
    }
    load(pkt.sctp_copy.frag.as_mut_ptr())
}

/// A copy's size (1 to `SCTP_WALK_BYTES`) for `len` (at least 1), in a
/// form the verifier bounds: LLVM drops a plain `len != 0` check it has
/// already made, leaving the helper a size that may be 0.
#[inline(always)]
fn copy_size(len: u32) -> u32 {
    (opaque(len as usize - 1) as u32 & (SCTP_WALK_BYTES as u32 - 1)) + 1
}

/// [`netbeast_sctp_walk_xdp`] for a TC packet (`bpf_skb_load_bytes`).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netbeast_sctp_walk_tc(
    skb: *mut aya_ebpf::bindings::__sk_buff,
    active: u32,
    v6: u32,
) -> u32 {
    use aya_ebpf::helpers::generated::bpf_skb_load_bytes;
    let Some(pkt) = PACKET.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot, used by this program run only.
    let pkt = unsafe { &mut *pkt };
    pkt.dccp.status = netbeast_common::dccp::status::NONE;
    if skb.is_null() {
        return 0;
    }
    // `-m dccp`'s header reading, as in `netbeast_sctp_walk_xdp`.
    // SAFETY: a helper writing into a buffer of the size given.
    if read_dccp(pkt, active, v6 != 0, |from, to, size| unsafe {
        bpf_skb_load_bytes(skb.cast(), from, to.cast(), size) == 0
    }) {
        return 0;
    }
    if active & netbeast_common::ACTIVE_SCTP_CHUNKS == 0 {
        return 0;
    }
    let Some((from, l3)) = sctp_chunk_area(pkt, v6 != 0) else {
        return 0;
    };
    let len = pkt.sctp_copy.len & (SCTP_WALK_BYTES as u32 - 1);
    // SAFETY: helpers writing into buffers of the sizes given.
    let loaded = unsafe {
        sctp_fragment_flags(pkt, v6 != 0, |to| {
            bpf_skb_load_bytes(skb.cast(), l3 + 6, to.cast(), 2) == 0
        }) && (len == 0
            || bpf_skb_load_bytes(
                skb.cast(),
                from,
                pkt.sctp_copy.bytes.as_mut_ptr().cast(),
                copy_size(len),
            ) == 0)
    };
    let flags = pkt.sctp_copy.frag[0];
    walk_sctp(pkt, loaded, flags);
    0
}

/// Walks the copied chunks into the slot's `sctp`, at most
/// `MAX_SCTP_CHUNKS` of them, in `bpf_loop` (the verifier checks one
/// step). `loaded`: the copy succeeded (else nothing is readable: the first
/// chunk is cut short); `flags_byte`: the IPv4 header's byte 6 (MF), or
/// its stand-in for IPv6 (`sctp_fragment_flags`).
#[inline(always)]
fn walk_sctp(pkt: &mut Packet, loaded: bool, flags_byte: u8) {
    if !loaded {
        pkt.sctp_copy.len = 0;
    }
    pkt.sctp_copy.more = u32::from(flags_byte & 0x20 != 0);
    pkt.sctp_copy.ready = 1;
    pkt.sctp_copy.at = 0;
    // SAFETY: `chunk_step` has the callback signature bpf_loop expects,
    // and it keeps its state in this CPU's packet slot.
    unsafe {
        aya_ebpf::helpers::generated::bpf_loop(
            MAX_SCTP_CHUNKS as u32 + 1,
            chunk_step as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            0,
        );
    }
}

/// The SCTP chunks of the packet this program run parsed (walked by
/// `netbeast_sctp_walk_*`), and the slot's scratch for the guard's test.
#[inline(always)]
pub fn current_sctp_chunks() -> Option<(&'static SctpChunks, *mut SctpCopy)> {
    let p = PACKET.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot, used by this program run only.
    unsafe { Some((&(*p).sctp, &mut (*p).sctp_copy as *mut SctpCopy)) }
}

/// The option kinds of the packet this program run parsed, when read
/// (`read_tcp_options`, for the `--tcp-option` guard).
#[inline(always)]
pub fn current_tcp_options() -> Option<&'static [u64; 4]> {
    let p = PACKET.get(0)?;
    (p.tcp_options.read != 0).then_some(&p.tcp_options.kinds)
}

/// The parsed packet of the current program run, written by the parser in
/// place. Parsing knows a lot about the packet on each of its paths
/// (protocol 6 here, a complete header there); read back from a map, those
/// facts are forgotten, so the verifier checks what follows once instead of
/// once per parsing path.
#[map]
pub(crate) static PACKET: PerCpuArray<Packet> = PerCpuArray::with_max_entries(1, 0);

/// The packet the XDP program parsed before it tail-called the shield
/// (same CPU, same run: the per-CPU slot still holds it).
#[inline(always)]
pub fn current_packet() -> Option<&'static Packet> {
    PACKET.get(0)
}

/// [`current_packet`], writable: for the BPF global functions, which get
/// the program's context only and find the packet in its slot.
#[inline(always)]
pub fn current_packet_mut() -> Option<&'static mut Packet> {
    let p = PACKET.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot, used by this program run only; the caller
    // holds no other reference to it across the call that uses this one.
    unsafe { Some(&mut *p) }
}

/// The classifier keys of the packet this program run parsed (packet
/// programs only: the socket programs have no packet), for the guards that
/// look at it (`-m connlimit`).
#[inline(always)]
pub fn current_keys() -> Option<&'static Keys> {
    PACKET.get(0).map(|p| &p.keys)
}

/// The socket programs (nat OUTPUT) have no packet: they put the socket's
/// keys where [`current_keys`] finds a packet's, for `-m recent` and the
/// address guards (`guard_kind::ADDR_MASK`: a non-contiguous netmask, an
/// address the compiler coarsened). The other packet guards are refused
/// there by the compiler.
#[inline(always)]
pub fn set_socket_keys(keys: &Keys) {
    if let Some(p) = PACKET.get_ptr_mut(0) {
        // SAFETY: this CPU's slot. A packet program that interrupts the
        // socket program on this CPU (softirq) overwrites the keys, as it
        // does the per-CPU guard sequence the two already share: a rare
        // race where `-m recent` reads that packet's addresses.
        unsafe { (*p).keys = *keys };
    }
}

/// [`set_socket_keys`]'s IPv6 part: the words of a socket's addresses
/// past the first (which are in its keys), where the classifier reads a
/// packet's (`addr6`).
#[inline(always)]
pub fn set_socket_addr6(src: &[u32; 4], dst: &[u32; 4]) {
    if let Some(p) = PACKET.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, as in `set_socket_keys`.
        unsafe {
            (*p).addr6 = [src[1], dst[1], src[2], dst[2], src[3], dst[3]];
        }
    }
}

/// The current packet's mark (`SearchState::mark`), for `-m mark`
/// (packet programs only, as [`current_keys`]).
#[inline(always)]
pub fn current_mark() -> u32 {
    PACKET.get(0).map_or(0, |p| p.search.mark)
}

/// The current packet's search is of an ip6tables chain: its connection
/// is in the IPv6 tracker (`-m connmark`, `-j CONNMARK`; packet programs
/// only, as [`current_keys`]).
#[inline(always)]
pub fn ipv6_search() -> bool {
    PACKET
        .get(0)
        .is_some_and(|p| netbeast_common::chain::ipv6(p.search.chain))
}

pub enum Parsed {
    /// IPv6, ARP, anything that is not IPv4: passed untouched.
    NotIpv4,
    /// A frame or IPv4 header that cannot be trusted.
    Malformed,
    /// The per-CPU packet slot, valid until the program run ends.
    Ipv4(&'static mut Packet),
    /// IPv6, its header at this offset of the frame (after any VLAN
    /// tags): `ipv6::ingress` parses it when the IPv6 ruleset is in use.
    Ipv6(usize),
}

/// Reads a `u16` at `p` as the packet has it (network byte order kept).
/// Every 16-bit field the parser reads sits at an even offset of the frame:
/// one 2-byte load rather than two byte loads (`read_unaligned`).
///
/// # Safety
/// `p..p + 2` is inside the packet.
#[inline(always)]
unsafe fn read16(p: usize) -> u16 {
    // SAFETY: in bounds (caller); 2-aligned as the frame's start is.
    unsafe { core::ptr::read(p as *const u16) }
}

/// `frame_len` is the whole frame's length: `end - start` in XDP, but in TC
/// `skb->len`, since a big packet of the host keeps only its headers in the
/// linear part that `start..end` covers. The source MAC is left 0: no chain
/// the TC programs run may match it (`-m mac` is refused where OUTPUT
/// reaches, as iptables refuses it), and the TC programs' call chains have
/// no stack to spare for it. The destination MAC is left 0 too (packet type
/// host): iptables' OUTPUT and POSTROUTING see the type the packet came in
/// with, host for forwarded packets (the kernel forwards only those) and for
/// the host's own.
#[inline(always)]
pub fn parse(start: usize, end: usize, frame_len: usize) -> Parsed {
    parse_frame(start, end, frame_len, false)
}

/// [`parse`] for XDP ingress, with the source MAC (`-m mac`).
#[inline(always)]
pub fn parse_ingress(start: usize, end: usize, frame_len: usize) -> Parsed {
    parse_frame(start, end, frame_len, true)
}

#[inline(always)]
fn parse_frame(start: usize, end: usize, frame_len: usize, mac: bool) -> Parsed {
    // One check for the Ethernet header, then plain loads.
    let eth = opaque(start);
    if eth + ETH_HLEN > end {
        return Parsed::Malformed;
    }
    // SAFETY: the 14 bytes at eth are inside the packet (checked).
    let mut proto = unsafe { read16(eth + 12) };
    let mut l3 = ETH_HLEN;
    // Two VLAN tags at most (QinQ); unrolled for the verifier.
    for _ in 0..2 {
        let p = u16::from_be(proto);
        if p != ETH_P_8021Q && p != ETH_P_8021AD {
            break;
        }
        let Some(inner) = load::<u16>(start, end, l3 + 2) else {
            return Parsed::Malformed;
        };
        proto = inner;
        l3 += VLAN_HLEN;
    }
    if u16::from_be(proto) == ETH_P_IPV6 {
        return Parsed::Ipv6(l3);
    }
    if u16::from_be(proto) != ETH_P_IP {
        return Parsed::NotIpv4;
    }
    parse_ipv4(start, eth, end, l3, frame_len, mac)
}

/// `eth` is the frame's start, checked to hold the Ethernet header. Few
/// values are read before the checks, the rest straight into the packet:
/// values held across the checks spill to a stack that the callers' frames
/// leave short.
#[inline(always)]
fn parse_ipv4(
    start: usize,
    eth: usize,
    end: usize,
    l3: usize,
    frame_len: usize,
    mac: bool,
) -> Parsed {
    // One check for the fixed 20 bytes, then plain loads.
    let ip = opaque(start + l3);
    if ip + 20 > end {
        return Parsed::Malformed;
    }
    // SAFETY: the 20 bytes at ip are inside the packet (checked).
    let (ver_ihl, total_len) = unsafe { (*(ip as *const u8), read16(ip + 2)) };
    let header_len = ((ver_ihl & 0x0f) as usize) * 4;
    if ver_ihl >> 4 != 4 || header_len < 20 {
        return Parsed::Malformed;
    }
    let total_len = u16::from_be(total_len) as usize;
    // The header (with options) must fit in the frame, and the total length
    // must neither be shorter than the header nor claim bytes that are not
    // there (trailing Ethernet padding is fine).
    if header_len > 60 || total_len < header_len || l3 + total_len > frame_len {
        return Parsed::Malformed;
    }
    let Some(slot) = PACKET.get_ptr_mut(0) else {
        return Parsed::Malformed;
    };
    // SAFETY: per-CPU scratch, used by this program run only.
    let pkt = unsafe { &mut *slot };
    // Every field written once, the addresses and the MAC as whole words:
    // the parser's cost is mostly its loads and stores. The interfaces and
    // the connection state are the chain's to set.
    // SAFETY: as above; the 14 bytes at eth are inside the packet too. The
    // two 8-byte loads sit at 2-aligned offsets: BPF has one load
    // instruction whatever the alignment, and the verifier lets the JITs
    // of x86-64 and arm64 (efficient unaligned access) run it on packet
    // data. `read_unaligned` would cost eight byte loads: LLVM's BPF
    // backend splits unaligned accesses unless given the
    // `allows-misaligned-mem-access` feature, which aya-build's fixed
    // rustflags leave no way to pass.
    let (fragment, protocol) = unsafe {
        let fragment = u16::from_be(read16(ip + 6)) & 0x1fff != 0;
        let protocol = *((ip + 9) as *const u8);
        // Source and destination, adjacent in the header and in `Keys`.
        let addresses = core::ptr::read((ip + 12) as *const u64);
        pkt.keys.src = addresses as u32;
        pkt.keys.dst = (addresses >> 32) as u32;
        pkt.keys.protocol = protocol;
        if mac {
            pkt.keys.mac = core::ptr::read((eth + 6) as *const u64) & MAC_MASK;
            pkt.keys.eth_dst = core::ptr::read(eth as *const u64);
        } else {
            // Volatile: two adjacent zero stores become a `memset` call, a
            // byte loop (`mem`).
            core::ptr::write_volatile(&mut pkt.keys.mac, 0);
            core::ptr::write_volatile(&mut pkt.keys.eth_dst, 0);
        }
        pkt.l3 = l3;
        pkt.header_len = header_len;
        pkt.keys.length = total_len as u16;
        pkt.keys.tos = *((ip + 1) as *const u8);
        pkt.keys.ttl = *((ip + 8) as *const u8);
        pkt.fragment = fragment;
        pkt.keys.tcp_flags = TCP_FLAGS_NONE as u16;
        pkt.icmp_id = 0;
        (fragment, protocol)
    };
    let (l4a, l4b, complete) = if fragment {
        (L4_FRAGMENT, L4_FRAGMENT, false)
    } else {
        l4_keys(
            pkt,
            start,
            end,
            l3 + header_len,
            start + l3 + total_len,
            protocol,
        )
    };
    pkt.keys.l4a = l4a;
    pkt.keys.l4b = l4b;
    pkt.l4_complete = complete;
    Parsed::Ipv4(pkt)
}

/// The classifier's L4 keys of a first fragment whose L4 header starts at
/// `l4` and whose IPv4 packet ends at `l4_end`, and whether that header is
/// whole; the TCP flags and the ICMP identifier go into `pkt`.
#[inline(always)]
fn l4_keys(
    pkt: &mut Packet,
    start: usize,
    end: usize,
    l4: usize,
    l4_end: usize,
    protocol: u8,
) -> (u32, u32, bool) {
    let needed = match protocol {
        IPPROTO_ICMP => ICMP_HLEN,
        _ => match port_header_len(protocol) {
            Some(n) => n,
            None => return (L4_NONE, L4_NONE, false),
        },
    };
    // One pointer, checked against the real packet end, then read through:
    // the verifier links the check to the reads only when both use it.
    let l4p = opaque(start + l4);
    if l4p + needed > opaque(end) || l4p + needed > l4_end {
        return cut_short(pkt, l4p, end, l4_end, protocol);
    }
    // SAFETY: `needed` >= 8 bytes at l4p are inside the packet (checked).
    let (a, b) = unsafe { (read16(l4p), read16(l4p + 2)) };
    if protocol == IPPROTO_ICMP {
        // SAFETY: ICMP_HLEN (8) bytes at l4p are inside the packet.
        pkt.icmp_id = u16::from_be(unsafe { read16(l4p + 4) });
        // Type and code, the bytes of the first word in packet order.
        ((a & 0xff) as u32, (a >> 8) as u32, true)
    } else {
        if protocol == IPPROTO_TCP {
            // SAFETY: TCP_HLEN (20) bytes at l4p are inside the packet.
            pkt.keys.tcp_flags = unsafe { *((l4p + 13) as *const u8) } as u16;
        }
        (u16::from_be(a) as u32, u16::from_be(b) as u32, true)
    }
}

/// The L4 keys of a header with ports (TCP, UDP, ...) cut short: its ports when their four
/// bytes are there. A tiny first fragment (RFC 1858) is judged on the ports
/// the reassembled datagram will have, as the kernel's reassembly before
/// INPUT lets iptables judge it, and as iptables on nf_tables reads the
/// fields that are there of a truncated header. Its TCP flags, when the
/// header ends before them, are `TCP_FLAGS_CUT` (the pipeline drops such a
/// packet while a rule tests flags); else they are read.
#[inline(always)]
fn cut_short(
    pkt: &mut Packet,
    l4p: usize,
    end: usize,
    l4_end: usize,
    protocol: u8,
) -> (u32, u32, bool) {
    let l4p = opaque(l4p);
    if protocol == IPPROTO_TCP {
        // Checked against the datagram's end, then read checked against
        // the packet's (the one the verifier trusts).
        let flags = if l4p + 14 <= l4_end {
            load::<u8>(l4p, end, 13)
        } else {
            None
        };
        pkt.keys.tcp_flags = flags.map_or(TCP_FLAGS_CUT as u16, u16::from);
    }
    if protocol == IPPROTO_ICMP || l4p + 4 > end || l4p + 4 > l4_end {
        return (L4_NONE, L4_NONE, false);
    }
    // SAFETY: the four bytes at l4p are inside the packet (checked).
    let (a, b) = unsafe { (read16(l4p), read16(l4p + 2)) };
    (u16::from_be(a) as u32, u16::from_be(b) as u32, false)
}

/// What the IPv6 parser made of a frame.
pub enum Parsed6 {
    /// The fixed header is cut, not version 6, or its payload length runs
    /// past the frame: the kernel drops it in `ipv6_rcv`, before
    /// netfilter.
    Kernel,
    /// An extension header runs past the packet or the payload length.
    Malformed,
    /// More than `MAX_IPV6_EXT_HEADERS` extension headers.
    TooDeep,
    /// The per-CPU packet slot with the IPv6 keys written.
    Packet(&'static mut Packet),
}

const IPV6_HLEN: usize = 40;
/// Bounds the walk's offset for the verifier, which marks a packet access
/// checked only for offsets it knows to be below 64 KiB with the access's
/// size added. Never cuts a real one: the walk stays within the payload,
/// and an XDP frame's linear part is at most a page.
pub(crate) const WALK_OFF_MASK: u32 = 0x3fff;
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;

/// Reads a `u32` at `p` as the packet has it. IPv6 addresses sit at
/// 2-aligned offsets of the frame; see `parse_ipv4` on why one load.
///
/// # Safety
/// `p..p + 4` is inside the packet.
#[inline(always)]
unsafe fn read32(p: usize) -> u32 {
    // SAFETY: in bounds (caller).
    unsafe { core::ptr::read(p as *const u32) }
}

/// Parses the IPv6 header at `l3` and walks at most
/// `MAX_IPV6_EXT_HEADERS` extension headers to the upper layer, as the
/// kernel's `ipv6_find_hdr` gives ip6tables' `-p` its protocol: the keys
/// go into the per-CPU packet slot (docs/ARCHITECTURE.md, "IPv6"). Out of
/// line: its frame is not under the classifier's in the call chain.
#[inline(never)]
pub fn parse_ipv6(start: usize, end: usize, l3: usize, frame_len: usize) -> Parsed6 {
    let eth = opaque(start);
    let ip = opaque(start + l3);
    if eth + ETH_HLEN > end || ip + IPV6_HLEN > end {
        return Parsed6::Kernel;
    }
    // SAFETY: the 40 bytes at ip are inside the packet (checked).
    let (version, payload_len, next) = unsafe {
        (
            *(ip as *const u8) >> 4,
            u16::from_be(read16(ip + 4)) as usize,
            *((ip + 6) as *const u8),
        )
    };
    // A jumbogram (payload length 0, RFC 2675) is left to the kernel too:
    // nothing here sends or routes one.
    if version != 6
        || payload_len == 0 && next != NEXTHDR_HOP
        || l3 + IPV6_HLEN + payload_len > frame_len
    {
        return Parsed6::Kernel;
    }
    let Some(slot) = PACKET.get_ptr_mut(0) else {
        return Parsed6::Kernel;
    };
    // SAFETY: per-CPU scratch, used by this program run only.
    let pkt = unsafe { &mut *slot };
    // SAFETY: the 40 bytes at ip and the 14 at eth are inside the packet.
    unsafe {
        pkt.keys.src = read32(ip + 8);
        pkt.keys.dst = read32(ip + 24);
        pkt.addr6 = [
            read32(ip + 12),
            read32(ip + 28),
            read32(ip + 16),
            read32(ip + 32),
            read32(ip + 20),
            read32(ip + 36),
        ];
        pkt.keys.mac = core::ptr::read((eth + 6) as *const u64) & MAC_MASK;
        pkt.keys.eth_dst = core::ptr::read(eth as *const u64);
        pkt.keys.ttl = *((ip + 7) as *const u8);
        // Traffic class: the 4 low bits of byte 0 and the 4 high of byte 1.
        pkt.keys.tos = (*(ip as *const u8) << 4) | (*((ip + 1) as *const u8) >> 4);
    }
    pkt.l3 = l3;
    pkt.header_len = IPV6_HLEN;
    // What ip6tables counts: the IPv6 header and its payload.
    pkt.keys.length = (IPV6_HLEN + payload_len) as u16;
    pkt.keys.tcp_flags = TCP_FLAGS_NONE as u16;
    // Field by field, volatile: plain stores of adjacent zeroes merge into
    // a `memset` call, which the BPF target runs as a byte loop (the
    // 40-byte walk record's cost ~30 ns a packet). Only the walk's count
    // and fragment id: its headers are read up to the count.
    // SAFETY: plain stores into the per-CPU slot.
    unsafe {
        core::ptr::write_volatile(&mut pkt.icmp_id, 0);
        core::ptr::write_volatile(&mut pkt.fragment, false);
        core::ptr::write_volatile(&mut pkt.first_fragment6, false);
        core::ptr::write_volatile(&mut pkt.l4_complete, false);
        core::ptr::write_volatile(&mut pkt.ext6_walk.count, 0);
        core::ptr::write_volatile(&mut pkt.ext6_walk.frag_id, 0);
    }
    let payload_end = l3 + IPV6_HLEN + payload_len;
    // SAFETY: plain stores into the per-CPU slot.
    unsafe {
        core::ptr::write_volatile(&mut pkt.walk_next, next as u32);
        core::ptr::write_volatile(&mut pkt.walk_off, (l3 + IPV6_HLEN) as u32);
    }
    // Most packets carry their upper layer right after the fixed header:
    // no walk, and the offset needs no reading back.
    let (nh, off) = if is_extension_header(next) {
        match walk_extension_headers(pkt, start, end, payload_end) {
            Walked::Upper(nh, off) => (nh, off),
            Walked::LaterFragment => return Parsed6::Packet(pkt),
            Walked::Malformed => return Parsed6::Malformed,
            Walked::TooDeep => return Parsed6::TooDeep,
        }
    } else {
        (next, (l3 + IPV6_HLEN) & WALK_OFF_MASK as usize)
    };
    // The upper layer (or ESP, no next header, ...: classified as what it
    // is, without L4 keys).
    pkt.keys.protocol = nh;
    let (l4a, l4b, complete) = l4_keys6(pkt, start, end, off, start + payload_end, nh);
    pkt.keys.l4a = l4a;
    pkt.keys.l4b = l4b;
    pkt.l4_complete = complete;
    Parsed6::Packet(pkt)
}

/// The next-header values [`parse_ipv6`] walks past.
#[inline(always)]
fn is_extension_header(next: u8) -> bool {
    matches!(
        next,
        NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST | NEXTHDR_AUTH | NEXTHDR_FRAGMENT
    )
}

/// Where [`walk_extension_headers`] ended.
enum Walked {
    /// At the upper layer: its protocol and offset.
    Upper(u8, usize),
    /// At a later fragment's header, its keys written.
    LaterFragment,
    Malformed,
    TooDeep,
}

/// [`parse_ipv6`]'s walk of the extension headers, from the first (named
/// by `pkt.walk_next`, at `pkt.walk_off`) to the upper layer.
#[inline(always)]
fn walk_extension_headers(
    pkt: &mut Packet,
    start: usize,
    end: usize,
    payload_end: usize,
) -> Walked {
    // Unrolled: a few loads and compares per header.
    for step in 0..MAX_IPV6_EXT_HEADERS {
        // SAFETY: plain loads from the per-CPU slot. The offset is bounded
        // for the packet access (`WALK_OFF_MASK`).
        let (nh, off) = unsafe {
            (
                core::ptr::read_volatile(&pkt.walk_next) as u8,
                (core::ptr::read_volatile(&pkt.walk_off) & WALK_OFF_MASK) as usize,
            )
        };
        if !is_extension_header(nh) {
            break;
        }
        // Every extension header starts with its next header and a length
        // byte; a fragment header is 8 bytes, AH counts 4-byte words past
        // the first two, the others 8-byte units past the first.
        let header = opaque(off);
        if header + 8 > payload_end {
            return Walked::Malformed;
        }
        let Some(h) = load::<[u8; 4]>(start, end, header) else {
            return Walked::Malformed;
        };
        let len = match nh {
            NEXTHDR_FRAGMENT => 8,
            NEXTHDR_AUTH => (h[1] as usize + 2) * 4,
            _ => (h[1] as usize + 1) * 8,
        };
        // What `-m ipv6header`, `-m rt` and `-m frag` read, recorded as
        // is (no branch here: every way through a step must end in one
        // state); the guards make sense of it (`Ipv6Ext::from_walk`).
        // SAFETY: plain stores into the per-CPU slot; `step` < 8.
        unsafe {
            core::ptr::write_volatile(
                &mut pkt.ext6_walk.headers[step],
                u32::from_le_bytes([nh, h[1], h[2], h[3]]),
            );
            core::ptr::write_volatile(&mut pkt.ext6_walk.count, step as u32 + 1);
        }
        if nh == NEXTHDR_FRAGMENT {
            // The identification, in the 8 bytes checked above.
            if let Some(id) = load::<[u8; 4]>(start, end, header + 4) {
                // SAFETY: as above.
                unsafe {
                    core::ptr::write_volatile(&mut pkt.ext6_walk.frag_id, u32::from_be_bytes(id))
                };
            }
            let offset = u16::from_be_bytes([h[2], h[3]]) & 0xfff8;
            if offset != 0 {
                // A later fragment: its protocol as its fragment header
                // names it, no ports (ip6tables' `fragoff`).
                pkt.fragment = true;
                pkt.keys.protocol = h[0];
                pkt.keys.l4a = L4_FRAGMENT;
                pkt.keys.l4b = L4_FRAGMENT;
                return Walked::LaterFragment;
            }
            pkt.first_fragment6 = h[3] & 1 != 0;
        }
        if header + len > payload_end {
            return Walked::Malformed;
        }
        // SAFETY: plain stores into the per-CPU slot.
        unsafe {
            core::ptr::write_volatile(&mut pkt.walk_next, h[0] as u32);
            core::ptr::write_volatile(&mut pkt.walk_off, (header + len) as u32);
        }
    }
    // SAFETY: as in the loop.
    let (nh, off) = unsafe {
        (
            core::ptr::read_volatile(&pkt.walk_next) as u8,
            (core::ptr::read_volatile(&pkt.walk_off) & WALK_OFF_MASK) as usize,
        )
    };
    if is_extension_header(nh) {
        return Walked::TooDeep;
    }
    Walked::Upper(nh, off)
}

/// The L4 keys of an IPv6 packet's upper-layer header at `l4` (its
/// payload ends at `l4_end`): the ports when their four bytes are there
/// (as `cut_short` for IPv4), the TCP flags when their byte is. Written
/// apart from `l4_keys`: there the verifier loses the tie between the
/// protocol and the length checked when the protocol comes from the
/// extension-header walk. ICMPv6: type and code (`-m icmp6`), when the
/// 8 bytes the kernel's match reads are there.
#[inline(always)]
fn l4_keys6(
    pkt: &mut Packet,
    start: usize,
    end: usize,
    l4: usize,
    l4_end: usize,
    protocol: u8,
) -> (u32, u32, bool) {
    if protocol == IPPROTO_ICMPV6 {
        let l4p = opaque(start + l4);
        if l4p + ICMP_HLEN > end || l4p + ICMP_HLEN > l4_end {
            return (L4_NONE, L4_NONE, false);
        }
        // SAFETY: ICMP_HLEN (8) bytes at l4p are inside the packet (checked).
        let a = unsafe { read16(l4p) };
        // Type and code, the bytes of the first word in packet order.
        return ((a & 0xff) as u32, (a >> 8) as u32, true);
    }
    let Some(needed) = port_header_len(protocol) else {
        return (L4_NONE, L4_NONE, false);
    };
    let l4p = opaque(start + l4);
    if protocol == IPPROTO_TCP {
        // Checked against the payload's end, then read checked against the
        // packet's (the one the verifier trusts), as `cut_short` does.
        let flags = if l4p + 14 <= l4_end {
            load::<u8>(l4p, end, 13)
        } else {
            None
        };
        pkt.keys.tcp_flags = flags.map_or(TCP_FLAGS_CUT as u16, u16::from);
    }
    let l4p = opaque(l4p);
    if l4p + 4 > end || l4p + 4 > l4_end {
        return (L4_NONE, L4_NONE, false);
    }
    // SAFETY: the four bytes at l4p are inside the packet (checked).
    let (a, b) = unsafe { (read16(l4p), read16(l4p + 2)) };
    let l4p = opaque(l4p);
    let complete = l4p + needed <= end && l4p + needed <= l4_end;
    (u16::from_be(a) as u32, u16::from_be(b) as u32, complete)
}
