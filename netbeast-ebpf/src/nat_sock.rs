//! `-t nat OUTPUT` for local sockets (DESIGN §2), as Cilium's socket load
//! balancer does it: instead of rewriting packets, the cgroup `connect4`
//! and `sendmsg4` hooks change the address a socket connects or sends to,
//! and `getpeername4` and `recvmsg4` give the application back the address
//! it asked for. The kernel then routes, picks the source and tracks the
//! connection as if the application had asked for the translated address
//! itself: DNAT of 127.0.0.1 to a remote host needs neither
//! `route_localnet` nor a source NAT, unlike iptables.
//!
//! The programs are attached to the root cgroup, so they run for every
//! socket of the host, in every network namespace; each data plane acts
//! only on sockets of the namespace it serves (`SOCK_NETNS`).
//!
//! A socket is classified by the nat OUTPUT chain with what is known before
//! routing:
//! - destination address, port and protocol: those the application gave;
//! - source address: the one the socket is bound to (or, for `sendmsg`,
//!   given with `IP_PKTINFO`); unbound, the source the kernel will pick
//!   when the destination is local (127.0.0.1 for 127.0.0.0/8, the address
//!   itself for an address of the host); else unknown (0.0.0.0), and rules
//!   with `-s` other than 0.0.0.0/0 do not match;
//! - source port: the bound one, else 0 (the kernel picks it later);
//! - output interface: `lo` for a local destination; else none, since the
//!   route is not known yet (sock_addr programs cannot call
//!   `bpf_fib_lookup`), so rules with `-o` of another interface do not
//!   match;
//! - connection state NEW.
//!
//! Only TCP and UDP sockets are translated. A connected socket is
//! classified once, at `connect`; an unconnected UDP socket at every
//! `sendmsg` with an address (each one counts in the rule counters, where
//! iptables counts the first packet of a conntrack flow). Rule counters
//! count sockets with 0 bytes. The address and port picked in a range
//! depend on the socket only (a hash of its cookie), so one socket keeps
//! talking to one backend.

use aya_ebpf::{
    EbpfContext,
    bindings::bpf_sock_addr,
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::map,
    maps::{Array, HashMap, LruHashMap},
    programs::SockAddrContext,
};
use netbeast_common::{
    RuleAction, TCP_FLAGS_NONE, chain, ct_state, lb::ServiceKey, nat_flags, nat_target_index,
    stats, target,
};

use crate::{
    classify::{Active, Keys, SearchState, Verdict, classify},
    nat::{NAT_TARGETS, offset_port, pick},
    route::LOCAL_ADDRS,
    stats::bump,
};

/// Translated sockets whose original destination is remembered (for
/// `getpeername` and the source of received datagrams). An LRU: entries of
/// closed sockets age out.
const SOCK_NAT_ENTRIES: u32 = 65536;
/// Sockets that can be in the middle of a classification at once, all CPUs
/// together. Far more than the CPUs, since a task can be preempted inside
/// the program; past it a socket is left untranslated and
/// `stats::NAT_SOCKET_BUSY` counts it.
const SOCK_SEARCH_ENTRIES: u32 = 1024;

/// The return value that lets the system call go on (0 would fail it with
/// EPERM; recvmsg4 and getpeername4 must return 1).
const ALLOW: i32 = 1;
const AF_INET: u32 = 2;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
/// `lo` has ifindex 1 in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;
/// 127.0.0.1, network byte order.
const LOOPBACK: u32 = u32::from_ne_bytes([127, 0, 0, 1]);

/// Index 0: the cookie of the network namespace this data plane serves
/// (`SO_NETNS_COOKIE`), written by userspace when it attaches the programs;
/// 0 until then, and the programs do nothing.
#[map]
static SOCK_NETNS: Array<u64> = Array::with_max_entries(1, 0);

/// A translated destination of one socket. Addresses in network byte order,
/// ports in host byte order.
#[repr(C)]
#[derive(Clone, Copy)]
struct SockNatKey {
    cookie: u64,
    addr: u32,
    port: u16,
    protocol: u8,
    _pad: u8,
}

/// The destination the application asked for.
#[repr(C)]
#[derive(Clone, Copy)]
struct SockNatValue {
    addr: u32,
    port: u16,
    _pad: u16,
}

#[map]
static SOCK_NAT: LruHashMap<SockNatKey, SockNatValue> =
    LruHashMap::with_max_entries(SOCK_NAT_ENTRIES, 0);

/// The classifier's search state of a socket being classified, keyed by its
/// cookie: the per-CPU state of the packet programs is not safe here (see
/// `classify`). The socket is locked while the programs run, so one
/// entry has one user; it is removed when the search ends.
#[map]
static SOCK_SEARCH: HashMap<u64, SearchState> = HashMap::with_max_entries(SOCK_SEARCH_ENTRIES, 0);

/// An all-zero search state, never written: what a socket's entry in
/// `SOCK_SEARCH` starts from. Copied from here rather than from the stack,
/// which the socket programs' call chain (classifier, guards) leaves no
/// room for.
#[map]
static SOCK_SEARCH_START: Array<SearchState> = Array::with_max_entries(1, 0);

/// True when the socket belongs to the namespace this data plane serves.
#[inline(always)]
fn ours(ctx: &SockAddrContext) -> bool {
    let Some(want) = SOCK_NETNS.get(0) else {
        return false;
    };
    let want = *want;
    // SAFETY: the helper only reads the context.
    want != 0 && unsafe { bpf_get_netns_cookie(ctx.as_ptr()) } == want
}

#[inline(always)]
fn is_loopback(addr: u32) -> bool {
    u32::from_be(addr) >> 24 == 127
}

/// The socket address fields, read with the exact width the kernel's
/// context rewriting expects.
struct Addr {
    family: u32,
    protocol: u32,
    /// Network byte order.
    ip: u32,
    /// Host byte order.
    port: u16,
}

#[inline(always)]
fn read_addr(sa: *mut bpf_sock_addr) -> Addr {
    // SAFETY: `sa` is the program's context; these fields are readable by
    // every sock_addr attach type.
    unsafe {
        Addr {
            family: core::ptr::read_volatile(&(*sa).user_family),
            protocol: core::ptr::read_volatile(&(*sa).protocol),
            ip: core::ptr::read_volatile(&(*sa).user_ip4),
            // The port is stored in network byte order in the low 16 bits.
            port: u16::from_be(core::ptr::read_volatile(&(*sa).user_port) as u16),
        }
    }
}

#[inline(always)]
fn write_addr(sa: *mut bpf_sock_addr, ip: u32, port: u16) {
    // SAFETY: writable in connect4, sendmsg4, recvmsg4 and getpeername4, at
    // full width.
    unsafe {
        core::ptr::write_volatile(&mut (*sa).user_ip4, ip);
        core::ptr::write_volatile(&mut (*sa).user_port, port.to_be() as u32);
    }
}

#[inline(always)]
fn spread(cookie: u64, salt: u32) -> u32 {
    ((cookie as u32) ^ ((cookie >> 32) as u32) ^ salt).wrapping_mul(0x9e37_79b1)
}

/// Runs the nat OUTPUT chain on a socket; the rule that matched, if any.
#[inline(always)]
fn classify_socket(generation: u32, keys: &Keys, cookie: u64) -> Option<RuleAction> {
    let start = SOCK_SEARCH_START.get(0)?;
    // The guards that read the packet's addresses (`-m recent`, as
    // kube-proxy's session affinity in KUBE-SVC-*, reached from nat
    // OUTPUT) read the socket's instead: what its first packet will carry.
    crate::parse::set_socket_keys(keys);
    if SOCK_SEARCH.insert(cookie, start, 0).is_err() {
        bump(stats::NAT_SOCKET_BUSY);
        return None;
    }
    let verdict = SOCK_SEARCH
        .get_ptr_mut(cookie)
        .map(|st| classify(generation, chain::NAT_OUTPUT, keys, 0, st));
    let _ = SOCK_SEARCH.remove(cookie);
    match verdict? {
        Verdict::Rule(action) => Some(action),
        Verdict::Policy(_) => None,
    }
}

/// Where a DNAT or REDIRECT rule sends `dst:dport` (network order address,
/// host order port); None for any other target (ACCEPT, or one the nat
/// OUTPUT chain cannot hold).
#[inline(always)]
fn destination(
    generation: u32,
    action: &RuleAction,
    dst: u32,
    dport: u16,
    cookie: u64,
) -> Option<(u32, u16)> {
    let to = NAT_TARGETS.get(nat_target_index(generation, action.arg))?;
    let port = if to.flags & nat_flags::OFFSET != 0 {
        // A shifted port map: the port at the one connected to's offset
        // from the base.
        offset_port(to, dport, 0)
    } else if to.flags & nat_flags::PORTS != 0 {
        pick(
            to.port_first as u32,
            to.port_last as u32,
            spread(cookie, 0x5bd1_e995),
        ) as u16
    } else {
        dport
    };
    match action.target {
        target::DNAT => {
            let addr = if to.flags & nat_flags::ADDR != 0 {
                pick(to.addr_first, to.addr_last, spread(cookie, 0)).to_be()
            } else {
                dst
            };
            Some((addr, port))
        }
        target::REDIRECT => Some((LOOPBACK, port)),
        _ => None,
    }
}

/// connect4 and sendmsg4: translate the destination the application gave.
#[inline(always)]
pub fn translate(ctx: &SockAddrContext, sendmsg: bool) -> i32 {
    if !ours(ctx) {
        return ALLOW;
    }
    let active = Active::read();
    if !active.nat() && !active.lb() {
        return ALLOW;
    }
    let sa = ctx.sock_addr;
    let a = read_addr(sa);
    if a.family != AF_INET || (a.protocol != IPPROTO_TCP && a.protocol != IPPROTO_UDP) {
        return ALLOW;
    }
    // SAFETY: the helper only reads the context's socket.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // A `netbeast lb` service: its DNAT comes before nat OUTPUT, as before
    // nat PREROUTING for packets. The source port is not chosen yet when a
    // socket connects, so the socket's cookie stands for the flow in the
    // Maglev hash: each connection is a new draw.
    if active.lb() {
        let key = ServiceKey {
            vip: a.ip,
            port: a.port,
            protocol: a.protocol as u8,
            _pad: 0,
        };
        if let Some(backend) = crate::lb::choose(&key, || spread(cookie, 0x27d4_eb2f)) {
            remember_and_rewrite(sa, cookie, &a, backend.addr, backend.port);
            return ALLOW;
        }
    }
    if !active.nat() {
        return ALLOW;
    }
    // SAFETY: `sk` is always set for sock_addr programs; the fields read are
    // those of `struct bpf_sock` every program type may read.
    let (bound, bound_port, msg_src) = unsafe {
        let sk = core::ptr::read_volatile(&(*sa).__bindgen_anon_1.sk);
        let msg_src = if sendmsg {
            core::ptr::read_volatile(&(*sa).msg_src_ip4)
        } else {
            0
        };
        (
            core::ptr::read_volatile(&(*sk).src_ip4),
            core::ptr::read_volatile(&(*sk).src_port),
            msg_src,
        )
    };
    let loopback = is_loopback(a.ip);
    // SAFETY: only tested for presence.
    let local = loopback || unsafe { LOCAL_ADDRS.get(a.ip) }.is_some();
    let src = if msg_src != 0 {
        msg_src
    } else if bound != 0 {
        bound
    } else if loopback {
        LOOPBACK
    } else if local {
        a.ip
    } else {
        0
    };
    // No packet exists yet: the compiler refuses nat OUTPUT rules that
    // look at the fields only a packet has (length, TTL, TOS, TCP flags).
    let keys = Keys {
        src,
        dst: a.ip,
        protocol: a.protocol as u8,
        ttl: 0,
        tos: 0,
        _pad: 0,
        tcp_flags: TCP_FLAGS_NONE as u16,
        length: 0,
        l4a: bound_port & 0xffff,
        l4b: a.port as u32,
        in_ifindex: 0,
        out_ifindex: if local { LOOPBACK_IFINDEX } else { 0 },
        mac: 0,
        eth_dst: 0,
        ct_state: ct_state::NEW,
    };
    let generation = active.generation();
    let Some(action) = classify_socket(generation, &keys, cookie) else {
        return ALLOW;
    };
    let Some((addr, port)) = destination(generation, &action, a.ip, a.port, cookie) else {
        return ALLOW;
    };
    if addr == a.ip && port == a.port {
        return ALLOW;
    }
    remember_and_rewrite(sa, cookie, &a, addr, port);
    ALLOW
}

/// Points the socket at `addr:port` once the way back (for recvmsg4 and
/// getpeername4) is stored.
#[inline(always)]
fn remember_and_rewrite(sa: *mut bpf_sock_addr, cookie: u64, a: &Addr, addr: u32, port: u16) {
    let key = SockNatKey {
        cookie,
        addr,
        port,
        protocol: a.protocol as u8,
        _pad: 0,
    };
    let original = SockNatValue {
        addr: a.ip,
        port: a.port,
        _pad: 0,
    };
    // Without the reverse entry the application would see the translated
    // peer: translate only when it is stored.
    if SOCK_NAT.insert(key, original, 0).is_ok() {
        write_addr(sa, addr, port);
        bump(stats::NAT_SOCKET);
    }
}

/// recvmsg4 and getpeername4: show the destination the application asked
/// for instead of the translated one. Also after the nat rules are gone:
/// like conntrack, a translated socket keeps its translation.
#[inline(always)]
pub fn reverse(ctx: &SockAddrContext) -> i32 {
    if !ours(ctx) {
        return ALLOW;
    }
    let sa = ctx.sock_addr;
    let a = read_addr(sa);
    if a.family != AF_INET {
        return ALLOW;
    }
    // SAFETY: the helper only reads the context's socket.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = SockNatKey {
        cookie,
        addr: a.ip,
        port: a.port,
        protocol: a.protocol as u8,
        _pad: 0,
    };
    // SAFETY: copied out at once.
    if let Some(original) = unsafe { SOCK_NAT.get(key) } {
        let (addr, port) = (original.addr, original.port);
        write_addr(sa, addr, port);
    }
    ALLOW
}
