//! Which filter chain a packet belongs to: INPUT when it is for this host,
//! FORWARD when the kernel would route it on (DESIGN §2).

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_NOT_FWDED,
        BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams,
    },
    helpers::generated::{bpf_fib_lookup, bpf_ktime_get_coarse_ns},
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
    programs::XdpContext,
};
use netbeast_common::{
    LOCAL_ADDR_BUCKETS, LOCAL_ADDR_WAYS, LOCAL_ADDR6_BUCKETS, LOCAL_ADDR6_WAYS, MAP_NO_PREALLOC,
    local_addr_bucket, local_addr6_bucket, route_cache, size,
};

use crate::classify::Keys;
use crate::{handoff, parse::Packet};

/// The host's own IPv4 addresses (network byte order), every one of them:
/// for programs that have no FIB lookup to fall back on.
#[map]
pub static LOCAL_ADDRS: HashMap<u32, u32> =
    HashMap::with_max_entries(size::LOCAL_ADDRS, MAP_NO_PREALLOC);

/// The same addresses in buckets (`local_addr_bucket`), for the packet path:
/// a cache that spares the FIB lookup for local traffic with an array
/// lookup instead of a hash lookup; the FIB stays the truth for addresses
/// missing here.
#[map]
static LOCAL_ADDR_CACHE: Array<[u32; LOCAL_ADDR_WAYS]> =
    Array::with_max_entries(LOCAL_ADDR_BUCKETS, 0);

/// `dst` is in the cache. 0.0.0.0 never is: it is what the buckets hold
/// before userspace first writes them.
#[inline(always)]
pub fn cached_local(dst: u32) -> bool {
    if dst == 0 {
        return false;
    }
    match LOCAL_ADDR_CACHE.get(local_addr_bucket(dst)) {
        Some(b) => b[0] == dst || b[1] == dst || b[2] == dst || b[3] == dst,
        None => false,
    }
}

/// The host's global and unique-local IPv6 addresses in buckets
/// (`local_addr6_bucket`): the IPv6 twin of `LOCAL_ADDR_CACHE`.
#[map]
static LOCAL_ADDR6_CACHE: Array<[[u32; 4]; LOCAL_ADDR6_WAYS]> =
    Array::with_max_entries(LOCAL_ADDR6_BUCKETS, 0);

/// The IPv6 address `dst` (its four words, as in the packet) is in the
/// cache. `::` never is: free ways hold it.
#[inline(always)]
pub fn cached_local6(dst: [u32; 4]) -> bool {
    if dst == [0; 4] {
        return false;
    }
    match LOCAL_ADDR6_CACHE.get(local_addr6_bucket(dst)) {
        Some(b) => b[0] == dst || b[1] == dst,
        None => false,
    }
}

/// ifindex → the interface's primary IPv4 address: the source of ICMP
/// errors that REJECT sends for forwarded packets, and the address of
/// MASQUERADE and REDIRECT.
#[map]
static IFACE_ADDRS: HashMap<u32, u32> = HashMap::with_max_entries(size::IFACES, MAP_NO_PREALLOC);
/// ifindex → the interface's first global IPv6 address (words in packet
/// order): the address ip6tables' MASQUERADE and REDIRECT translate to.
#[map]
static IFACE_ADDRS6: HashMap<u32, [u32; 4]> =
    HashMap::with_max_entries(size::IFACES, MAP_NO_PREALLOC);

#[derive(Clone, Copy)]
pub struct NextHop {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// `IFACE_PATHS` of the way out and of the way in (what the fast path
    /// may do with them), kept with the route so a cache hit needs neither
    /// hash lookup.
    pub out_paths: u32,
    pub in_paths: u32,
}

impl NextHop {
    /// A next hop the FIB has no neighbour for: no fast-path bits, so the
    /// kernel forwards (and resolves it). A plain value rather than an
    /// `Option`: the compiler reads a `None`'s payload words anyway, which
    /// the verifier refuses when the stack there holds a pointer.
    pub const UNRESOLVED: NextHop = NextHop {
        src_mac: [0; 6],
        dst_mac: [0; 6],
        out_paths: 0,
        in_paths: 0,
    };
}

/// One cached FIB answer. `stamp` is the epoch sum it was filled under,
/// plus one (an all-zero slot never matches).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RouteSlot {
    stamp: u64,
    src: u32,
    dst: u32,
    in_ifindex: u32,
    out_ifindex: u32,
    /// The protocol and TOS the lookup was made with (`proto | tos << 8`).
    proto_tos: u32,
    out_paths: u32,
    in_paths: u32,
    macs: [u8; 12],
}

/// The forwarding route cache: per CPU (no locks, no sharing of lines),
/// direct-mapped on the lookup's inputs (`route_cache::SLOTS`).
#[map]
static ROUTE_CACHE: PerCpuArray<RouteSlot> = PerCpuArray::with_max_entries(route_cache::SLOTS, 0);

/// One cached IPv6 FIB answer with a known neighbour (the IPv6 twin of
/// `RouteSlot`; the fast path reads the ways from `IFACE_PATHS` itself).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RouteSlot6 {
    stamp: u64,
    src: [u32; 4],
    dst: [u32; 4],
    in_ifindex: u32,
    out_ifindex: u32,
    proto: u32,
    pub macs: [u8; 12],
}

/// The IPv6 forwarding route cache, per CPU and direct-mapped as
/// `ROUTE_CACHE`, under the same epoch and lease.
#[map]
static ROUTE_CACHE6: PerCpuArray<RouteSlot6> =
    PerCpuArray::with_max_entries(route_cache::SLOTS6, 0);

/// The slot of an IPv6 lookup's inputs.
#[inline(always)]
fn slot_of6(src: &[u32; 4], dst: &[u32; 4], in_ifindex: u32) -> u32 {
    let h = (src[3] ^ dst[3].rotate_left(16) ^ dst[2].rotate_left(8) ^ src[2].rotate_left(24))
        ^ in_ifindex.wrapping_mul(0x85eb_ca6b);
    (h.wrapping_mul(0x9e37_79b1) >> 16) & (route_cache::SLOTS6 - 1)
}

/// The cached IPv6 route of `src` → `dst` (protocol `proto`) from
/// `in_ifindex`, valid under the current epoch: `(out_ifindex, slot)`.
#[inline(always)]
pub fn cached_route6(
    src: &[u32; 4],
    dst: &[u32; 4],
    in_ifindex: u32,
    proto: u8,
) -> Option<(u32, &'static RouteSlot6)> {
    let epoch = epoch()?;
    let slot = ROUTE_CACHE6.get(slot_of6(src, dst, in_ifindex))?;
    (slot.stamp == epoch.wrapping_add(1)
        && slot.dst == *dst
        && slot.src == *src
        && slot.in_ifindex == in_ifindex
        && slot.proto == proto as u32)
        .then_some((slot.out_ifindex, slot))
}

/// Keeps an IPv6 FIB answer with a known neighbour in this CPU's cache,
/// under the epoch read before the lookup (`route_epoch`): nothing while
/// no watcher holds the lease.
#[inline(always)]
pub fn remember6(
    src: &[u32; 4],
    dst: &[u32; 4],
    (in_ifindex, out_ifindex, proto): (u32, u32, u8),
    macs: ([u8; 6], [u8; 6]),
    epoch: Option<u64>,
) {
    let Some(epoch) = epoch else {
        return;
    };
    let Some(slot) = ROUTE_CACHE6.get_ptr_mut(slot_of6(src, dst, in_ifindex)) else {
        return;
    };
    let (d, s) = macs;
    // SAFETY: this CPU's slot; nothing else writes it meanwhile.
    unsafe {
        *slot = RouteSlot6 {
            stamp: epoch.wrapping_add(1),
            src: *src,
            dst: *dst,
            in_ifindex,
            out_ifindex,
            proto: proto as u32,
            macs: [
                d[0], d[1], d[2], d[3], d[4], d[5], s[0], s[1], s[2], s[3], s[4], s[5],
            ],
        };
    }
}

/// The epoch a FIB lookup's answer may be cached under (see `epoch`).
#[inline(always)]
pub fn route_epoch() -> Option<u64> {
    epoch()
}

/// The current epoch sum (`Config::route_epoch`: `WATCH_EPOCH` is raised
/// by the daemon's route watcher after every rtnetlink change that may
/// change a FIB lookup's answer, `USER_EPOCH` by the commands when they
/// rewrite `IFACE_PATHS`; a cached route is valid only while their sum is
/// the one it was filled under), or `None` while no watcher
/// holds the lease: then nothing may be read from the cache, nor put in it
/// (a change made while no one watches would never be seen).
#[inline(always)]
fn epoch() -> Option<u64> {
    let config = crate::config::config()?;
    // SAFETY: the map's one value, valid for the run; each word is read
    // once (a writer may change another meanwhile: the lease is read first,
    // so a lease that lapses after it was read still covers this packet,
    // as it would had the packet come a moment earlier).
    let lease = unsafe {
        core::ptr::read_volatile(&(*config).route_epoch[route_cache::LEASE_UNTIL as usize])
    };
    // SAFETY: a helper without arguments.
    if lease <= unsafe { bpf_ktime_get_coarse_ns() } {
        return None;
    }
    // SAFETY: as above.
    let (watch, user) = unsafe {
        (
            core::ptr::read_volatile(&(*config).route_epoch[route_cache::WATCH_EPOCH as usize]),
            core::ptr::read_volatile(&(*config).route_epoch[route_cache::USER_EPOCH as usize]),
        )
    };
    Some(watch.wrapping_add(user))
}

/// The slot of a lookup's inputs.
#[inline(always)]
fn slot_of(src: u32, dst: u32, in_ifindex: u32) -> u32 {
    let h = (src ^ dst.rotate_left(16) ^ in_ifindex.wrapping_mul(0x85eb_ca6b))
        .wrapping_mul(0x9e37_79b1);
    (h >> 16) & (route_cache::SLOTS - 1)
}

pub enum Path {
    /// For this host: INPUT chain.
    Local,
    /// To be routed out of `out_ifindex`: FORWARD chain. The packet's
    /// `next_hop` holds the MAC addresses to write when the neighbour is
    /// known (fast path); [`NextHop::UNRESOLVED`] when it is not.
    Forward { out_ifindex: u32 },
    /// The kernel drops it or answers with an ICMP error before any filter
    /// chain (no route, TTL expiring): left to the kernel.
    Kernel,
}

const AF_INET: u8 = 2;

#[inline(always)]
fn is_multicast_or_broadcast(addr_be: u32) -> bool {
    let a = u32::from_be(addr_be);
    a >> 28 == 0xe || a == u32::MAX
}

/// The chain of `pkt`. Local addresses are decided here, inline; the FIB
/// lookup is out of line.
/// A packet whose route the cache holds costs two array lookups instead of
/// the FIB's trie walk and neighbour hash; the FIB answers the rest.
#[inline(always)]
pub fn path(ctx: &XdpContext, pkt: &mut Packet) -> Path {
    if cached_local(pkt.keys.dst) || is_multicast_or_broadcast(pkt.keys.dst) {
        return Path::Local;
    }
    route(ctx, pkt)
}

/// Out of line, as the FIB lookup was before the cache: inlined, the
/// cached answer's copy made the compiler reuse a stack slot the verifier
/// then refused ("invalid size of register fill").
#[inline(never)]
fn route(ctx: &XdpContext, pkt: &mut Packet) -> Path {
    let in_ifindex = ctx.ingress_ifindex() as u32;
    let k = &pkt.keys;
    let epoch = epoch();
    if let Some(epoch) = epoch
        && let Some(slot) = ROUTE_CACHE.get(slot_of(k.src, k.dst, in_ifindex))
        && slot.stamp == epoch.wrapping_add(1)
        && slot.dst == k.dst
        && slot.src == k.src
        && slot.in_ifindex == in_ifindex
        && slot.proto_tos == k.protocol as u32 | (k.tos as u32) << 8
    {
        // As for a FIB answer: ip_forward() answers expiring TTLs.
        if k.ttl <= 1 {
            return Path::Kernel;
        }
        let m = slot.macs;
        pkt.next_hop = NextHop {
            dst_mac: [m[0], m[1], m[2], m[3], m[4], m[5]],
            src_mac: [m[6], m[7], m[8], m[9], m[10], m[11]],
            out_paths: slot.out_paths,
            in_paths: slot.in_paths,
        };
        return Path::Forward {
            out_ifindex: slot.out_ifindex,
        };
    }
    fib_path(ctx, pkt, epoch)
}

/// Inlined into `route`, out of line: the FIB parameters (64 bytes) live
/// in its frame (one frame: the 512-byte stack is shared by the call
/// chain). `epoch` is the one read before the lookup: a change that lands
/// during it raises the epoch past what the slot is stamped with; `None`
/// (no watcher) caches nothing.
#[inline(always)]
fn fib_path(ctx: &XdpContext, pkt: &mut Packet, epoch: Option<u64>) -> Path {
    let mut params = core::mem::MaybeUninit::uninit();
    // SAFETY: plain-old-data struct of integers; all-zero is a valid value.
    let params: &mut FibParams = unsafe { crate::mem::zeroed(&mut params) };
    params.family = AF_INET;
    params.l4_protocol = pkt.keys.protocol;
    params.ifindex = ctx.ingress_ifindex() as u32;
    params.__bindgen_anon_2.tos = pkt.keys.tos;
    params.__bindgen_anon_3.ipv4_src = pkt.keys.src;
    params.__bindgen_anon_4.ipv4_dst = pkt.keys.dst;
    // tot_len stays 0: the MTU check is the kernel's business after FORWARD.
    // SAFETY: params is a valid, writable bpf_fib_lookup on the stack.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            params,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    } as u32;
    match rc {
        BPF_FIB_LKUP_RET_NOT_FWDED | BPF_FIB_LKUP_RET_FWD_DISABLED => Path::Local,
        BPF_FIB_LKUP_RET_SUCCESS | BPF_FIB_LKUP_RET_NO_NEIGH => {
            if pkt.keys.ttl <= 1 {
                // ip_forward() sends time-exceeded before the FORWARD hook.
                Path::Kernel
            } else {
                pkt.next_hop = if rc == BPF_FIB_LKUP_RET_SUCCESS {
                    let in_ifindex = ctx.ingress_ifindex() as u32;
                    let hop = NextHop {
                        src_mac: params.smac,
                        dst_mac: params.dmac,
                        out_paths: handoff::paths(params.ifindex),
                        in_paths: handoff::paths(in_ifindex),
                    };
                    if let Some(epoch) = epoch {
                        remember(&pkt.keys, in_ifindex, params.ifindex, &hop, epoch);
                    }
                    hop
                } else {
                    // No neighbour yet: the kernel resolves it; nothing
                    // cached.
                    NextHop::UNRESOLVED
                };
                Path::Forward {
                    out_ifindex: params.ifindex,
                }
            }
        }
        _ => Path::Kernel,
    }
}

/// Stores a FIB answer with a next hop in this CPU's cache.
#[inline(always)]
fn remember(k: &Keys, in_ifindex: u32, out_ifindex: u32, hop: &NextHop, epoch: u64) {
    let Some(slot) = ROUTE_CACHE.get_ptr_mut(slot_of(k.src, k.dst, in_ifindex)) else {
        return;
    };
    let (d, s) = (hop.dst_mac, hop.src_mac);
    // SAFETY: this CPU's slot; nothing else writes it meanwhile (an XDP
    // run is not preempted by another on the same CPU).
    unsafe {
        *slot = RouteSlot {
            stamp: epoch.wrapping_add(1),
            src: k.src,
            dst: k.dst,
            in_ifindex,
            out_ifindex,
            proto_tos: k.protocol as u32 | (k.tos as u32) << 8,
            out_paths: hop.out_paths,
            in_paths: hop.in_paths,
            macs: [
                d[0], d[1], d[2], d[3], d[4], d[5], s[0], s[1], s[2], s[3], s[4], s[5],
            ],
        };
    }
}

/// Source address for an ICMP error about a packet that arrived on
/// `ifindex` and was addressed to `dst` (both network byte order).
#[inline(always)]
pub fn reply_source(ifindex: u32, dst: u32, local: bool) -> u32 {
    if local {
        return dst;
    }
    iface_addr(ifindex).unwrap_or(dst)
}

/// The primary address of interface `ifindex` (network byte order): the
/// address MASQUERADE and REDIRECT translate to.
#[inline(always)]
pub fn iface_addr(ifindex: u32) -> Option<u32> {
    // SAFETY: copied out at once.
    unsafe { IFACE_ADDRS.get(&ifindex) }.copied()
}

/// The first global IPv6 address of interface `ifindex`: the address
/// ip6tables' MASQUERADE and REDIRECT translate to.
#[inline(always)]
pub fn iface_addr6(ifindex: u32) -> Option<[u32; 4]> {
    // SAFETY: copied out at once.
    unsafe { IFACE_ADDRS6.get(&ifindex) }.copied()
}
