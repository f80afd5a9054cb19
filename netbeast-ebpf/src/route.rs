//! Which filter chain a packet belongs to: INPUT when it is for this host,
//! FORWARD when the kernel would route it on (DESIGN §2).

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_NOT_FWDED,
        BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams,
    },
    helpers::generated::bpf_fib_lookup,
    macros::map,
    maps::{Array, HashMap},
    programs::XdpContext,
};
use netbeast_common::{LOCAL_ADDR_BUCKETS, LOCAL_ADDR_WAYS, local_addr_bucket, size};

use crate::parse::Packet;

/// The host's own IPv4 addresses (network byte order), every one of them:
/// for programs that have no FIB lookup to fall back on.
#[map]
pub static LOCAL_ADDRS: HashMap<u32, u32> = HashMap::with_max_entries(size::LOCAL_ADDRS, 0);

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

/// ifindex → the interface's primary IPv4 address: the source of ICMP
/// errors that REJECT sends for forwarded packets, and the address of
/// MASQUERADE and REDIRECT.
#[map]
static IFACE_ADDRS: HashMap<u32, u32> = HashMap::with_max_entries(size::IFACES, 0);

#[derive(Clone, Copy)]
pub struct NextHop {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}

pub enum Path {
    /// For this host: INPUT chain.
    Local,
    /// To be routed out of `out_ifindex`: FORWARD chain. `next_hop` holds
    /// the MAC addresses to write when the neighbour is known (fast path).
    Forward {
        out_ifindex: u32,
        next_hop: Option<NextHop>,
    },
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
#[inline(always)]
pub fn path(ctx: &XdpContext, pkt: &Packet) -> Path {
    if cached_local(pkt.keys.dst) || is_multicast_or_broadcast(pkt.keys.dst) {
        return Path::Local;
    }
    fib_path(ctx, pkt)
}

/// Out of line: the FIB parameters (64 bytes) live in this call's frame.
#[inline(never)]
fn fib_path(ctx: &XdpContext, pkt: &Packet) -> Path {
    // SAFETY: plain-old-data struct of integers; all-zero is a valid value.
    let mut params: FibParams = unsafe { core::mem::zeroed() };
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
            &mut params,
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
                Path::Forward {
                    out_ifindex: params.ifindex,
                    next_hop: (rc == BPF_FIB_LKUP_RET_SUCCESS).then_some(NextHop {
                        src_mac: params.smac,
                        dst_mac: params.dmac,
                    }),
                }
            }
        }
        _ => Path::Kernel,
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
