//! The kernel's limits on the ICMP errors it sends, applied to REJECT's
//! (IPv4; IPv6 below), in `icmp_send`'s order (Linux 6.12 on): an error
//! of a type in `icmp_ratemask` needs the namespace-wide budget to hold
//! a credit (`icmp_global_allow`: `icmp_msgs_per_sec`, `icmp_msgs_burst`
//! deep),
//! then a token of its destination host's bucket (`icmpv4_xrlim_allow`,
//! `inet_peer_xrlim_allow`: one token per `icmp_ratelimit` ms,
//! `XRLIM_BURST_FACTOR` deep); only an error sent takes its credit
//! (`icmp_global_consume`: 0 to 2 at random). An error either refuses is
//! not sent (the packet is still dropped). With the defaults (1000 ms, 6
//! deep) a host whose packets meet REJECT gets 6 errors at once, then one
//! a second: without them netbeast would answer at the rate packets
//! arrive, a reflector for spoofed sources.
//!
//! The values are the namespace's sysctls, copied by userspace into
//! `Config::icmp_limits` at every command. Differences from the kernel:
//! the budget and the hosts' buckets count netbeast's errors alone (the
//! kernel's count its own errors too); a host forgotten by the LRU starts
//! with a full bucket, as the kernel's evicted `inet_peer` does. OUTPUT's
//! REJECT (TC egress, `reject_local.rs`) answers this host, by loopback:
//! as the kernel's, its errors skip the per-host bucket but not the
//! budget.
//!
//! ip6tables' REJECT (`allow6`) obeys `icmp6_send`'s limits the same
//! way: type 1 must be in `net.ipv6.icmp.ratemask` to be limited at all;
//! the budget is IPv4's, shared; each host's bucket (`ICMP6_HOSTS`, keyed
//! by the full address as the kernel's IPv6 `inet_peer`) takes one token
//! per `net.ipv6.icmp.ratelimit` ms, whatever route leads back to the
//! host (Linux 6.18.y and 7.0 dropped the scaling by the route's prefix
//! length, upstream 0201eedb69b2; measured on this kernel by
//! `tests/icmp_limit.rs`). Its OUTPUT errors need none of it:
//! `nf_send_unreach6` gives the host's own packet the loopback device,
//! which `icmp6_send` exempts from the budget, and the error to this host
//! leaves by loopback, exempt from the bucket.

use aya_ebpf::{
    helpers::generated::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    macros::map,
    maps::LruHashMap,
};
use netbeast_common::{
    Addr6, Config, ICMP_HOST_ENTRIES, ICMP_RATE_BURST, ICMP6_HOST_ENTRIES, IcmpLimits,
    icmp6_ratelimit_ms,
};

/// A destination host's bucket.
#[repr(C)]
#[derive(Clone, Copy)]
struct Peer {
    /// When the bucket was last filled (ns).
    last: u64,
    /// Its tokens, in ns of `icmp_ratelimit` periods.
    tokens: u64,
}

/// Each destination host's bucket (its IPv4 address, network order).
#[map]
static ICMP_HOSTS: LruHashMap<u32, Peer> = LruHashMap::with_max_entries(ICMP_HOST_ENTRIES, 0);

/// Each destination host's bucket for ICMPv6 errors (its IPv6 address,
/// as the packet carries it).
#[map]
static ICMP6_HOSTS: LruHashMap<[u32; 4], Peer> =
    LruHashMap::with_max_entries(ICMP6_HOST_ENTRIES, 0);

const NS_PER_MS: u64 = 1_000_000;
const NS_PER_SEC: u64 = 1_000_000_000;
/// A new host's bucket counts as last filled this long ago: full (the
/// kernel's `rate_last = jiffies - 60*HZ`).
const NEW_PEER_AGE: u64 = 60 * NS_PER_SEC;
/// The global budget is topped up at most this often (the kernel's HZ/50).
const GLOBAL_MIN_DELTA: u64 = NS_PER_SEC / 50;
/// The types whose bit `icmp_ratemask` may hold (the kernel's
/// `NR_ICMP_TYPES`, 18: higher types are never limited).
const NR_ICMP_TYPES: u32 = 18;

/// True when an ICMP error of `icmp_type` to `dst` (network order) may be
/// sent now; a refusal is counted by the caller. `per_host` false: the
/// error leaves by loopback (to this host), which `icmpv4_xrlim_allow`
/// exempts from the per-host bucket (the budget still applies).
#[inline(always)]
pub fn allow(dst: u32, icmp_type: u32, per_host: bool) -> bool {
    let Some(config) = crate::config::config() else {
        return true;
    };
    // SAFETY: the map's one value, valid for the run; userspace rewrites
    // the limits in place only when the sysctls changed.
    let limits = unsafe { core::ptr::read_volatile(&raw const (*config).icmp_limits) };
    if icmp_type > NR_ICMP_TYPES || limits.ratemask & (1 << icmp_type) == 0 {
        return true;
    }
    let period = limits.ratelimit_ms as u64 * NS_PER_MS;
    limited(config, limits, |now| {
        !per_host || peer_allow(&ICMP_HOSTS, &dst, period, now)
    })
}

/// [`allow`] for an ICMPv6 destination unreachable to `dst` (ip6tables'
/// REJECT in INPUT or FORWARD), as `icmp6_send` applies its limits.
#[inline(always)]
pub fn allow6(dst: &Addr6) -> bool {
    let Some(config) = crate::config::config() else {
        return true;
    };
    // SAFETY: the map's one value, valid for the run; userspace rewrites
    // the limits in place only when the sysctls changed.
    let limit = unsafe { core::ptr::read_volatile(&raw const (*config).icmp6_limit) };
    let Some(ratelimit_ms) = icmp6_ratelimit_ms(limit) else {
        return true;
    };
    // SAFETY: as above; the budget's settings are IPv4's, shared.
    let limits = unsafe { core::ptr::read_volatile(&raw const (*config).icmp_limits) };
    let period = ratelimit_ms as u64 * NS_PER_MS;
    limited(config, limits, |now| {
        peer_allow(&ICMP6_HOSTS, &dst.0, period, now)
    })
}

/// The order both families' errors take once their type is limited: a
/// credit of the namespace's budget, then `host`'s token (given the
/// time), and only an error sent pays the budget.
#[inline(always)]
fn limited(config: *mut Config, limits: IcmpLimits, host: impl FnOnce(u64) -> bool) -> bool {
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if !global_allow(config, limits.msgs_per_sec, limits.msgs_burst, now) || !host(now) {
        return false;
    }
    global_consume(config);
    true
}

/// `icmp_global_allow`: a credit left, or added now (at most every 20 ms:
/// `msgs_per_sec` a second, up to `msgs_burst`). Concurrent CPUs race as
/// the kernel's do (an error more or fewer).
#[inline(always)]
fn global_allow(config: *mut Config, msgs_per_sec: u32, msgs_burst: u32, now: u64) -> bool {
    // SAFETY: the map's one value, valid for the run.
    let budget = unsafe { &mut (*config).icmp_budget };
    if budget.credit > 0 {
        return true;
    }
    let delta = now.saturating_sub(budget.stamp).min(NS_PER_SEC);
    if delta < GLOBAL_MIN_DELTA {
        return false;
    }
    let incr = msgs_per_sec as u64 * delta / NS_PER_SEC;
    if incr == 0 {
        return false;
    }
    budget.stamp = now;
    budget.credit = (budget.credit + incr as i64).min(msgs_burst as i64);
    true
}

/// `icmp_global_consume`: an error sent costs 0, 1 or 2 credits at random.
#[inline(always)]
fn global_consume(config: *mut Config) {
    // SAFETY: the helper has no preconditions.
    let cost = unsafe { bpf_get_prandom_u32() } % 3;
    // SAFETY: the map's one value, valid for the run.
    unsafe { (*config).icmp_budget.credit -= cost as i64 };
}

/// `inet_peer_xrlim_allow` on `dst`'s bucket in `hosts`: one token per
/// `period` ns, [`ICMP_RATE_BURST`] deep. A period of 0 allows every
/// error and, as the kernel's, leaves the bucket empty (a host answered
/// while `ratelimit` was 0 starts from nothing when it is set again).
#[inline(always)]
fn peer_allow<K>(hosts: &LruHashMap<K, Peer>, dst: &K, period: u64, now: u64) -> bool {
    let peer = match hosts.get_ptr_mut(dst) {
        Some(p) => p,
        None => {
            let new = Peer {
                last: now.saturating_sub(NEW_PEER_AGE),
                tokens: 0,
            };
            // A full table evicts its least recently used host (LRU);
            // an insert that fails anyway leaves this error unlimited,
            // as the kernel's does when it has no memory for a peer.
            if hosts.insert(dst, &new, 0).is_err() {
                return true;
            }
            let Some(p) = hosts.get_ptr_mut(dst) else {
                return true;
            };
            p
        }
    };
    // SAFETY: the map value is valid for the program run.
    let peer = unsafe { &mut *peer };
    let tokens = (peer.tokens + now.saturating_sub(peer.last)).min(ICMP_RATE_BURST * period);
    peer.last = now;
    if tokens >= period {
        peer.tokens = tokens - period;
        true
    } else {
        peer.tokens = tokens;
        false
    }
}
