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
//! - connection state NEW;
//! - mark: the socket's (`SO_MARK`).
//!
//! A mark the chain sets (`-j MARK`, as kube-proxy's KUBE-MARK-MASQ) is
//! kept for the socket's first packet, as the kernel's nat OUTPUT marks
//! that packet: the TC egress program takes it (`take_mark`) when the
//! packet opens its conntrack entry, so filter OUTPUT and nat POSTROUTING
//! (KUBE-POSTROUTING's MASQUERADE) see it, and the connection's later
//! packets do not carry it.
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
    Addr6, FlowAddr, RuleAction, SOCK_NAT_ENTRIES, TCP_FLAGS_NONE, chain, ct_state, lb::ServiceKey,
    nat_flags, nat_target_index, stats, target,
};

use crate::{
    classify::{Active, Keys, SearchState, Verdict, classify},
    conntrack::{V4, V6},
    nat::{NAT_TARGETS, NatFamily, offset_port, pick},
    route::{LOCAL_ADDRS, cached_local6},
    stats::bump,
};

/// Sockets that can be in the middle of a classification at once, all CPUs
/// together. Far more than the CPUs, since a task can be preempted inside
/// the program; past it a socket is left untranslated and
/// `stats::NAT_SOCKET_BUSY` counts it.
const SOCK_SEARCH_ENTRIES: u32 = 1024;

/// The return value that lets the system call go on (0 would fail it with
/// EPERM; recvmsg4 and getpeername4 must return 1).
const ALLOW: i32 = 1;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
/// `lo` has ifindex 1 in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// Index 0: the cookie of the network namespace this data plane serves
/// (`SO_NETNS_COOKIE`), written by userspace when it attaches the programs;
/// 0 until then, and the programs do nothing.
#[map]
static SOCK_NETNS: Array<u64> = Array::with_max_entries(1, 0);

/// A translated destination of one socket. Addresses in network byte order
/// (an IPv6 one's words as they sit in the socket address), ports in host
/// byte order. No padding in either family's key, whose every byte is
/// hashed: the cookie is two words (the same bytes as a `u64`, which
/// would align an IPv6 key to 32 bytes with four of them left unwritten).
#[repr(C)]
#[derive(Clone, Copy)]
struct SockNatKey<A> {
    cookie: [u32; 2],
    addr: A,
    port: u16,
    protocol: u8,
    _pad: u8,
}

/// The destination the application asked for.
#[repr(C)]
#[derive(Clone, Copy)]
struct SockNatValue<A> {
    addr: A,
    port: u16,
    _pad: u16,
}

#[map]
static SOCK_NAT: LruHashMap<SockNatKey<u32>, SockNatValue<u32>> =
    LruHashMap::with_max_entries(SOCK_NAT_ENTRIES, 0);
/// [`SOCK_NAT`] for IPv6 sockets (`ip6tables -t nat OUTPUT`).
#[map]
static SOCK_NAT6: LruHashMap<SockNatKey<Addr6>, SockNatValue<Addr6>> =
    LruHashMap::with_max_entries(SOCK_NAT_ENTRIES, 0);

/// The mark nat OUTPUT gave a socket (by cookie), waiting for the socket's
/// first packet at TC egress (`take_mark`); written only when the chain
/// changed the socket's mark. An LRU: marks of sockets that never send
/// age out.
#[map]
static SOCK_MARK: LruHashMap<u64, u32> = LruHashMap::with_max_entries(SOCK_NAT_ENTRIES, 0);

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

/// What the socket programs need to know of an address family: how its
/// socket addresses are read and written, which of them are local, its
/// nat OUTPUT chain and its table of translated sockets.
trait SockFamily: NatFamily {
    /// `AF_INET`, `AF_INET6`.
    const AF: u32;
    /// The nat OUTPUT chain of the family's ruleset.
    const CHAIN: u32;
    fn table() -> &'static LruHashMap<SockNatKey<Self::Addr>, SockNatValue<Self::Addr>>;
    /// The destination the application gave (`user_ip4`, `user_ip6`).
    fn user_addr(sa: *mut bpf_sock_addr) -> Self::Addr;
    fn set_user_addr(sa: *mut bpf_sock_addr, addr: &Self::Addr);
    /// The source given with `IP_PKTINFO`/`IPV6_PKTINFO` (sendmsg only).
    fn msg_src(sa: *mut bpf_sock_addr) -> Self::Addr;
    /// The address the socket is bound to.
    fn bound(sa: *mut bpf_sock_addr) -> Self::Addr;
    fn is_unspecified(addr: &Self::Addr) -> bool;
    fn is_loopback(addr: &Self::Addr) -> bool;
    /// One of the host's addresses (loopback ones aside).
    fn is_local(addr: &Self::Addr) -> bool;
    /// Puts the addresses where the classifier reads them: `keys` takes
    /// the first words (the whole IPv4 address), the packet slot the rest.
    fn set_addresses(keys: &mut Keys, src: &Self::Addr, dst: &Self::Addr);
}

impl SockFamily for V4 {
    const AF: u32 = AF_INET;
    const CHAIN: u32 = chain::NAT_OUTPUT;
    #[inline(always)]
    fn table() -> &'static LruHashMap<SockNatKey<u32>, SockNatValue<u32>> {
        &SOCK_NAT
    }
    #[inline(always)]
    fn user_addr(sa: *mut bpf_sock_addr) -> u32 {
        // SAFETY: readable by every sock_addr attach type, at full width.
        unsafe { core::ptr::read_volatile(&(*sa).user_ip4) }
    }
    #[inline(always)]
    fn set_user_addr(sa: *mut bpf_sock_addr, addr: &u32) {
        // SAFETY: writable in connect4, sendmsg4, recvmsg4 and getpeername4.
        unsafe { core::ptr::write_volatile(&mut (*sa).user_ip4, *addr) }
    }
    #[inline(always)]
    fn msg_src(sa: *mut bpf_sock_addr) -> u32 {
        // SAFETY: readable in sendmsg4.
        unsafe { core::ptr::read_volatile(&(*sa).msg_src_ip4) }
    }
    #[inline(always)]
    fn bound(sa: *mut bpf_sock_addr) -> u32 {
        // SAFETY: `sk` is always set for sock_addr programs; `src_ip4` is a
        // field of `struct bpf_sock` every program type may read.
        unsafe {
            let sk = core::ptr::read_volatile(&(*sa).__bindgen_anon_1.sk);
            core::ptr::read_volatile(&(*sk).src_ip4)
        }
    }
    #[inline(always)]
    fn is_unspecified(addr: &u32) -> bool {
        *addr == 0
    }
    #[inline(always)]
    fn is_loopback(addr: &u32) -> bool {
        u32::from_be(*addr) >> 24 == 127
    }
    #[inline(always)]
    fn is_local(addr: &u32) -> bool {
        // SAFETY: only tested for presence.
        unsafe { LOCAL_ADDRS.get(addr) }.is_some()
    }
    #[inline(always)]
    fn set_addresses(keys: &mut Keys, src: &u32, dst: &u32) {
        keys.src = *src;
        keys.dst = *dst;
    }
}

impl SockFamily for V6 {
    const AF: u32 = AF_INET6;
    const CHAIN: u32 = chain::NAT6_OUTPUT;
    #[inline(always)]
    fn table() -> &'static LruHashMap<SockNatKey<Addr6>, SockNatValue<Addr6>> {
        &SOCK_NAT6
    }
    #[inline(always)]
    fn user_addr(sa: *mut bpf_sock_addr) -> Addr6 {
        // SAFETY: readable by every sock_addr attach type, word by word.
        unsafe { read_words(&(*sa).user_ip6) }
    }
    #[inline(always)]
    fn set_user_addr(sa: *mut bpf_sock_addr, addr: &Addr6) {
        for i in 0..4 {
            // SAFETY: writable in connect6, sendmsg6, recvmsg6 and
            // getpeername6, word by word.
            unsafe { core::ptr::write_volatile(&mut (*sa).user_ip6[i], addr.0[i]) };
        }
    }
    #[inline(always)]
    fn msg_src(sa: *mut bpf_sock_addr) -> Addr6 {
        // SAFETY: readable in sendmsg6, word by word.
        unsafe { read_words(&(*sa).msg_src_ip6) }
    }
    #[inline(always)]
    fn bound(sa: *mut bpf_sock_addr) -> Addr6 {
        // SAFETY: as for IPv4; `src_ip6` is readable word by word.
        unsafe {
            let sk = core::ptr::read_volatile(&(*sa).__bindgen_anon_1.sk);
            read_words(&(*sk).src_ip6)
        }
    }
    #[inline(always)]
    fn is_unspecified(addr: &Addr6) -> bool {
        addr.0 == [0; 4]
    }
    #[inline(always)]
    fn is_loopback(addr: &Addr6) -> bool {
        *addr == V6::LOOPBACK
    }
    #[inline(always)]
    fn is_local(addr: &Addr6) -> bool {
        // The global and unique-local addresses the IPv6 program finds
        // local without the FIB (link-local ones are not there).
        cached_local6(addr.0)
    }
    #[inline(always)]
    fn set_addresses(keys: &mut Keys, src: &Addr6, dst: &Addr6) {
        keys.src = src.0[0];
        keys.dst = dst.0[0];
        crate::parse::set_socket_addr6(&src.0, &dst.0);
    }
}

/// An IPv6 address of a socket context, read one full word at a time (the
/// only access the kernel's context rewriting takes).
///
/// # Safety
/// `words` must be a readable field of the program's context.
#[inline(always)]
unsafe fn read_words(words: &[u32; 4]) -> Addr6 {
    let mut w = [0u32; 4];
    for (i, word) in w.iter_mut().enumerate() {
        // SAFETY: the caller's field, one word.
        *word = unsafe { core::ptr::read_volatile(&words[i]) };
    }
    Addr6(w)
}

/// The socket address fields, read with the exact width the kernel's
/// context rewriting expects.
struct Addr<A> {
    family: u32,
    protocol: u32,
    ip: A,
    /// Host byte order.
    port: u16,
}

#[inline(always)]
fn read_addr<F: SockFamily>(sa: *mut bpf_sock_addr) -> Addr<F::Addr> {
    // SAFETY: `sa` is the program's context; these fields are readable by
    // every sock_addr attach type.
    let (family, protocol, port) = unsafe {
        (
            core::ptr::read_volatile(&(*sa).user_family),
            core::ptr::read_volatile(&(*sa).protocol),
            // The port is stored in network byte order in the low 16 bits.
            u16::from_be(core::ptr::read_volatile(&(*sa).user_port) as u16),
        )
    };
    Addr {
        family,
        protocol,
        ip: F::user_addr(sa),
        port,
    }
}

#[inline(always)]
fn write_addr<F: SockFamily>(sa: *mut bpf_sock_addr, ip: &F::Addr, port: u16) {
    F::set_user_addr(sa, ip);
    // SAFETY: writable in the four hooks, at full width.
    unsafe { core::ptr::write_volatile(&mut (*sa).user_port, port.to_be() as u32) };
}

/// A socket cookie as `SockNatKey` holds it.
#[inline(always)]
fn cookie_words(cookie: u64) -> [u32; 2] {
    [cookie as u32, (cookie >> 32) as u32]
}

#[inline(always)]
fn spread(cookie: u64, salt: u32) -> u32 {
    ((cookie as u32) ^ ((cookie >> 32) as u32) ^ salt).wrapping_mul(0x9e37_79b1)
}

/// Runs nat OUTPUT `chain` on a socket whose mark is `mark`; the rule that
/// matched, if any. The mark the chain leaves is kept for the socket's
/// first packet (`SOCK_MARK`).
#[inline(always)]
fn classify_socket(
    generation: u32,
    chain: u32,
    keys: &Keys,
    cookie: u64,
    mark: u32,
) -> Option<RuleAction> {
    let start = SOCK_SEARCH_START.get(0)?;
    // The guards that read the packet's addresses (`-m recent`, as
    // kube-proxy's session affinity in KUBE-SVC-*, reached from nat
    // OUTPUT) read the socket's instead: what its first packet will carry.
    crate::parse::set_socket_keys(keys);
    if SOCK_SEARCH.insert(cookie, start, 0).is_err() {
        bump(stats::NAT_SOCKET_BUSY);
        return None;
    }
    let searched = SOCK_SEARCH.get_ptr_mut(cookie).map(|st| {
        // SAFETY: the entry is this socket's alone until removed below.
        unsafe { (*st).mark = mark };
        let verdict = classify(generation, chain, keys, 0, st);
        // SAFETY: as above.
        (verdict, unsafe { (*st).mark })
    });
    let _ = SOCK_SEARCH.remove(cookie);
    let (verdict, left) = searched?;
    if left != mark {
        let _ = SOCK_MARK.insert(&cookie, &left, 0);
    } else {
        // A mark an earlier `sendmsg` of the socket left and no packet
        // took is not this datagram's.
        let _ = SOCK_MARK.remove(&cookie);
    }
    match verdict {
        Verdict::Rule(action) => Some(action),
        Verdict::Policy(_) => None,
    }
}

/// The mark nat OUTPUT gave the socket of the host's packet `skb` (a TC
/// context), taken once: called for the packet that opens the socket's
/// connection.
#[inline(always)]
pub fn take_mark(skb: *mut core::ffi::c_void) -> Option<u32> {
    // SAFETY: the helper reads the skb's socket, if it has one (0 if not).
    let cookie = unsafe { bpf_get_socket_cookie(skb) };
    if cookie == 0 {
        return None;
    }
    // SAFETY: the value is copied out at once.
    let mark = *unsafe { SOCK_MARK.get(&cookie) }?;
    let _ = SOCK_MARK.remove(&cookie);
    Some(mark)
}

/// Where a DNAT or REDIRECT rule sends `dst:dport` (host order port); None
/// for any other target (ACCEPT, or one the nat OUTPUT chain cannot hold).
#[inline(always)]
fn destination<F: SockFamily>(
    generation: u32,
    target: u32,
    arg: u32,
    dst: &F::Addr,
    dport: u16,
    cookie: u64,
) -> Option<(F::Addr, u16)> {
    let to = NAT_TARGETS.get(nat_target_index(
        crate::classify::capacity(),
        generation,
        arg,
    ))?;
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
    match target {
        target::DNAT => {
            let addr = if to.flags & nat_flags::ADDR != 0 {
                F::range_addr(generation, arg, to, spread(cookie, 0))?
            } else {
                *dst
            };
            Some((addr, port))
        }
        target::REDIRECT => Some((F::LOOPBACK, port)),
        _ => None,
    }
}

/// connect4 and sendmsg4: translate the destination the application gave.
#[inline(always)]
pub fn translate(ctx: &SockAddrContext, sendmsg: bool) -> i32 {
    translate_of::<V4>(ctx, sendmsg)
}

/// connect6 and sendmsg6: as [`translate`], with ip6tables' nat OUTPUT.
#[inline(always)]
pub fn translate6(ctx: &SockAddrContext, sendmsg: bool) -> i32 {
    translate_of::<V6>(ctx, sendmsg)
}

#[inline(always)]
fn translate_of<F: SockFamily>(ctx: &SockAddrContext, sendmsg: bool) -> i32 {
    if !ours(ctx) {
        return ALLOW;
    }
    let active = Active::read();
    if !active.nat() && !active.lb() {
        return ALLOW;
    }
    let sa = ctx.sock_addr;
    let a = read_addr::<F>(sa);
    if a.family != F::AF || (a.protocol != IPPROTO_TCP && a.protocol != IPPROTO_UDP) {
        return ALLOW;
    }
    // SAFETY: the helper only reads the context's socket.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // A `netbeast lb` service (IPv4 only): its DNAT comes before nat
    // OUTPUT, as before nat PREROUTING for packets. The source port is not
    // chosen yet when a socket connects, so the socket's cookie stands for
    // the flow in the Maglev hash: each connection is a new draw.
    if F::AF == AF_INET && active.lb() {
        let key = ServiceKey {
            vip: a.ip.fold(),
            port: a.port,
            protocol: a.protocol as u8,
            _pad: 0,
        };
        if let Some(backend) = crate::lb::choose(&key, || spread(cookie, 0x27d4_eb2f)) {
            remember_and_rewrite::<V4>(
                sa,
                cookie,
                a.port,
                a.protocol,
                &a.ip.fold(),
                backend.addr,
                backend.port,
            );
            return ALLOW;
        }
    }
    if !active.nat() {
        return ALLOW;
    }
    // No packet exists yet: the compiler refuses nat OUTPUT rules that
    // look at the fields only a packet has (length, TTL, TOS, TCP flags).
    let mut keys = Keys {
        src: 0,
        dst: 0,
        protocol: a.protocol as u8,
        ttl: 0,
        tos: 0,
        _pad: 0,
        tcp_flags: TCP_FLAGS_NONE as u16,
        length: 0,
        l4a: 0,
        l4b: a.port as u32,
        in_ifindex: 0,
        out_ifindex: 0,
        mac: 0,
        eth_dst: 0,
        ct_state: ct_state::NEW,
    };
    socket_keys::<F>(sa, sendmsg, &mut keys);
    let generation = active.generation();
    // SAFETY: `sk` is always set for sock_addr programs; `mark` is a field
    // of `struct bpf_sock` they may read, at full width.
    let mark = unsafe {
        let sk = core::ptr::read_volatile(&(*sa).__bindgen_anon_1.sk);
        core::ptr::read_volatile(&(*sk).mark)
    };
    let Some(action) = classify_socket(generation, F::CHAIN, &keys, cookie, mark) else {
        return ALLOW;
    };
    apply::<F>(sa, cookie, generation, action.target, action.arg);
    ALLOW
}

/// What the classifier knows of a socket before it has a packet, written
/// into `keys` (and, for IPv6, the packet slot's address words):
/// - destination: the one the application gave;
/// - source: the one given with `sendmsg`, else the bound one; unbound,
///   the source the kernel will pick for a local destination (loopback
///   for loopback, the address itself for one of the host's); else
///   unknown (all zero);
/// - source port: the bound one, else 0;
/// - output interface: `lo` for a local destination, else none.
///
/// Out of line, as [`apply`]: the addresses it holds (four IPv6 ones)
/// are not on the stack under the classifier's call chain.
#[inline(never)]
fn socket_keys<F: SockFamily>(sa: *mut bpf_sock_addr, sendmsg: bool, keys: &mut Keys) {
    let dst = F::user_addr(sa);
    let msg_src = if sendmsg {
        F::msg_src(sa)
    } else {
        Default::default()
    };
    let bound = F::bound(sa);
    // SAFETY: `sk` is always set for sock_addr programs; `src_port` is a
    // field of `struct bpf_sock` every program type may read.
    let bound_port = unsafe {
        let sk = core::ptr::read_volatile(&(*sa).__bindgen_anon_1.sk);
        core::ptr::read_volatile(&(*sk).src_port)
    };
    let loopback = F::is_loopback(&dst);
    let local = loopback || F::is_local(&dst);
    let src = if !F::is_unspecified(&msg_src) {
        msg_src
    } else if !F::is_unspecified(&bound) {
        bound
    } else if loopback {
        F::LOOPBACK
    } else if local {
        dst
    } else {
        Default::default()
    };
    keys.l4a = bound_port & 0xffff;
    keys.out_ifindex = if local { LOOPBACK_IFINDEX } else { 0 };
    F::set_addresses(keys, &src, &dst);
}

/// The outcome of nat OUTPUT's rule `target`/`arg` for the socket: its
/// destination rewritten as a DNAT or REDIRECT says, remembered.
#[inline(never)]
fn apply<F: SockFamily>(
    sa: *mut bpf_sock_addr,
    cookie: u64,
    generation: u32,
    target: u32,
    arg: u32,
) {
    let a = read_addr::<F>(sa);
    let Some((addr, port)) = destination::<F>(generation, target, arg, &a.ip, a.port, cookie)
    else {
        return;
    };
    if addr == a.ip && port == a.port {
        return;
    }
    remember_and_rewrite::<F>(sa, cookie, a.port, a.protocol, &a.ip, addr, port);
}

/// Points the socket at `addr:port` once the way back (for recvmsg and
/// getpeername) is stored: the application gave `dst:dport`.
#[inline(always)]
fn remember_and_rewrite<F: SockFamily>(
    sa: *mut bpf_sock_addr,
    cookie: u64,
    dport: u16,
    protocol: u32,
    dst: &F::Addr,
    addr: F::Addr,
    port: u16,
) {
    let key = SockNatKey {
        cookie: cookie_words(cookie),
        addr,
        port,
        protocol: protocol as u8,
        _pad: 0,
    };
    let original = SockNatValue {
        addr: *dst,
        port: dport,
        _pad: 0,
    };
    // Without the reverse entry the application would see the translated
    // peer: translate only when it is stored.
    if F::table().insert(&key, &original, 0).is_ok() {
        write_addr::<F>(sa, &addr, port);
        bump(stats::NAT_SOCKET);
    }
}

/// recvmsg4 and getpeername4: show the destination the application asked
/// for instead of the translated one. Also after the nat rules are gone:
/// like conntrack, a translated socket keeps its translation.
#[inline(always)]
pub fn reverse(ctx: &SockAddrContext) -> i32 {
    reverse_of::<V4>(ctx)
}

/// recvmsg6 and getpeername6: as [`reverse`].
#[inline(always)]
pub fn reverse6(ctx: &SockAddrContext) -> i32 {
    reverse_of::<V6>(ctx)
}

#[inline(always)]
fn reverse_of<F: SockFamily>(ctx: &SockAddrContext) -> i32 {
    if !ours(ctx) {
        return ALLOW;
    }
    let sa = ctx.sock_addr;
    let a = read_addr::<F>(sa);
    if a.family != F::AF {
        return ALLOW;
    }
    // SAFETY: the helper only reads the context's socket.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = SockNatKey {
        cookie: cookie_words(cookie),
        addr: a.ip,
        port: a.port,
        protocol: a.protocol as u8,
        _pad: 0,
    };
    // SAFETY: copied out at once.
    if let Some(original) = unsafe { F::table().get(&key) } {
        let (addr, port) = (original.addr, original.port);
        write_addr::<F>(sa, &addr, port);
    }
    ALLOW
}
