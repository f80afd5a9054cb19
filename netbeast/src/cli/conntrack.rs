//! `netbeast conntrack -L | -F | -C`: the namespace's connection tracking
//! table, shown, emptied and counted in the style of conntrack(8).
//!
//! The kernel keeps connections in two tables (`CT_UNREPLIED` until the
//! first reply, then `CT_ESTABLISHED`) and only notices that an entry has
//! expired when a packet finds it; here an entry whose timeout has run out
//! is gone, as it is for the kernel's next packet, so `-L` and `-C` leave it
//! out.

use anyhow::{Result, bail};
use netbeast_common::{Addr6, CtConfig, CtEntryOf, ct_status, tcp_state};

use crate::{loader::Dataplane, state::Namespace};

const NS_PER_SEC: u64 = 1_000_000_000;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// ICMP echo request and reply: the only ICMP queries worth naming, and
/// the ones conntrack(8) shows for a ping.
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;
const IPPROTO_ICMPV6: u8 = 58;
/// ICMPv6 echo request and reply (RFC 4443), as conntrack(8) shows an
/// IPv6 ping.
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// `-f`: which family's connections `-L` shows (conntrack(8)'s
/// `--family`); without it both, IPv4 first, as conntrack lists all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyFilter {
    Both,
    Ipv4,
    Ipv6,
}

impl FamilyFilter {
    /// conntrack(8)'s `-f` values; anything else is refused in its words.
    pub fn parse(text: &str) -> Result<FamilyFilter> {
        match text {
            "ipv4" => Ok(FamilyFilter::Ipv4),
            "ipv6" => Ok(FamilyFilter::Ipv6),
            other => bail!("`{other}' unsupported protocol: -f takes ipv4 or ipv6"),
        }
    }

    fn v4(self) -> bool {
        self != FamilyFilter::Ipv6
    }

    fn v6(self) -> bool {
        self != FamilyFilter::Ipv4
    }
}

/// What a conntrack line needs of one family's addresses.
pub trait ShownAddr: Copy {
    /// The ICMP of this family: protocol number, conntrack's name for it,
    /// and the echo request and reply types a tracked "connection" has.
    const ICMP: (u8, &'static str, u8, u8);
    /// As conntrack(8) prints it (inet_ntop).
    fn show(&self) -> String;
    /// For a stable order of the lines: the address as a number.
    fn order(&self) -> u128;
}

impl ShownAddr for u32 {
    const ICMP: (u8, &'static str, u8, u8) =
        (IPPROTO_ICMP, "icmp", ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY);
    fn show(&self) -> String {
        std::net::Ipv4Addr::from(self.to_ne_bytes()).to_string()
    }
    fn order(&self) -> u128 {
        u32::from_be_bytes(self.to_ne_bytes()).into()
    }
}

impl ShownAddr for Addr6 {
    const ICMP: (u8, &'static str, u8, u8) = (
        IPPROTO_ICMPV6,
        "icmpv6",
        ICMPV6_ECHO_REQUEST,
        ICMPV6_ECHO_REPLY,
    );
    fn show(&self) -> String {
        self.ip().to_string()
    }
    fn order(&self) -> u128 {
        self.ip().to_bits()
    }
}

/// The words of an `Addr6` (network order bytes in native words) as an
/// address.
trait Ip6 {
    fn ip(&self) -> std::net::Ipv6Addr;
}

impl Ip6 for Addr6 {
    fn ip(&self) -> std::net::Ipv6Addr {
        let mut octets = [0u8; 16];
        for (chunk, word) in octets.chunks_exact_mut(4).zip(self.0) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        std::net::Ipv6Addr::from(octets)
    }
}

/// What `netbeast conntrack` was asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `-L`: one line per connection.
    List,
    /// `-F`: empty the table.
    Flush,
    /// `-C`: the number of connections.
    Count,
}

pub fn run(action: Action, family: FamilyFilter) -> Result<()> {
    let ns = Namespace::current()?;
    let _lock = ns.lock()?;
    let version = env!("CARGO_PKG_VERSION");
    // Without a data plane there is no table, which is an empty one.
    let (dp, _) = super::plane::prepare(&ns, false, None, &[])?;
    match action {
        Action::List => {
            let lines = match &dp {
                Some(dp) => live_lines(dp, family)?,
                None => Vec::new(),
            };
            for line in &lines {
                outln!("{line}");
            }
            eprintln!(
                "netbeast v{version} (conntrack): {} flow entries have been shown.",
                lines.len()
            );
        }
        Action::Count => {
            let count = match &dp {
                Some(dp) => live_lines(dp, FamilyFilter::Both)?.len(),
                None => 0,
            };
            outln!("{count}");
        }
        Action::Flush => {
            let deleted = match dp {
                Some(mut dp) => dp.flush_conntrack()?,
                None => 0,
            };
            eprintln!(
                "netbeast v{version} (conntrack): connection tracking table has been emptied ({deleted} flow entries deleted)."
            );
        }
    }
    Ok(())
}

/// What the daemon's /metrics reports of conntrack, per table
/// (unreplied, established): connections not expired, and capacity.
pub struct ConntrackGauges {
    pub entries: [u64; 2],
    pub limits: [u32; 2],
}

/// [`ConntrackGauges`] of the current namespace, under its lock; `None`
/// without a data plane.
pub(crate) fn gauges() -> Result<Option<ConntrackGauges>> {
    let ns = Namespace::current()?;
    let _lock = ns.lock()?;
    let (dp, _) = super::plane::prepare(&ns, false, None, &[])?;
    let Some(dp) = dp else {
        return Ok(None);
    };
    let config = dp.conntrack_config()?;
    let now = monotonic_now_ns();
    let mut entries = [0u64; 2];
    for (_, entry, established) in dp.conntrack_entries()? {
        if remaining_secs(&entry, now, &config).is_some() {
            entries[usize::from(established)] += 1;
        }
    }
    Ok(Some(ConntrackGauges {
        entries,
        limits: dp.conntrack_limits()?,
    }))
}

/// The `-L` lines of the connections that have not expired: the IPv4
/// ones, then the IPv6 ones (as `family` asks), each in a stable order
/// (protocol, then original source and destination).
fn live_lines(dp: &Dataplane, family: FamilyFilter) -> Result<Vec<String>> {
    let config = dp.conntrack_config()?;
    let now = monotonic_now_ns();
    let mut lines = Vec::new();
    if family.v4() {
        let entries = dp
            .conntrack_entries()?
            .into_iter()
            .map(|(k, e, _)| (e, k.zone));
        lines.extend(sorted_lines(entries, now, &config));
    }
    if family.v6() {
        let entries = dp
            .conntrack_entries6()?
            .into_iter()
            .map(|(k, e, _)| (e, k.zone));
        lines.extend(sorted_lines(entries, now, &config));
    }
    Ok(lines)
}

/// The lines of one family's entries (with their zones) that have not
/// expired, sorted.
fn sorted_lines<A: ShownAddr>(
    entries: impl Iterator<Item = (CtEntryOf<A>, u16)>,
    now: u64,
    config: &CtConfig,
) -> Vec<String> {
    let mut entries: Vec<(CtEntryOf<A>, u16)> = entries.collect();
    entries.sort_by_key(|(e, zone)| {
        (
            e.protocol,
            e.orig_src.order(),
            e.orig_sport,
            e.orig_dst.order(),
            e.orig_dport,
            *zone,
        )
    });
    entries
        .iter()
        .filter_map(|(e, zone)| zoned_entry_line(e, *zone, now, config))
        .collect()
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`, which
/// stamps `CtEntry::last_seen_ns`.
pub fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * NS_PER_SEC + ts.tv_nsec as u64
}

/// The timeout of a connection in its current state, in seconds, as the
/// kernel's conntrack (netbeast-ebpf conntrack.rs `timeout_ns`) applies it.
pub fn timeout_secs<A>(entry: &CtEntryOf<A>, config: &CtConfig) -> u32 {
    config.timeout_secs(entry)
}

/// Whole seconds before the connection expires, `None` once it has.
pub fn remaining_secs<A>(entry: &CtEntryOf<A>, now_ns: u64, config: &CtConfig) -> Option<u64> {
    let timeout = u64::from(timeout_secs(entry, config)) * NS_PER_SEC;
    // An entry stamped after `now` (another CPU, a moment ago) is fresh.
    let idle = now_ns.saturating_sub(entry.last_seen_ns);
    (idle <= timeout).then(|| (timeout - idle) / NS_PER_SEC)
}

/// One line of `conntrack -L`, or `None` when the entry has expired:
///
/// ```text
/// tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=22 packets=3 bytes=180 src=10.0.0.2 dst=10.0.0.1 sport=22 dport=40000 packets=2 bytes=120 [ASSURED]
/// ```
///
/// The second tuple is the reply direction as it appears on the wire: for
/// a DNATed or SNATed connection it differs from the first one inverted,
/// as conntrack shows it.
///
/// `[UNREPLIED]` follows the original direction while no reply has been
/// seen; `[ASSURED]` ends the line of a connection past its handshake (TCP)
/// or with traffic both ways that went on after the reply (UDP), as
/// conntrack marks them. conntrack-tools' `use=` is left out (netbeast has
/// no reference count), and `mark=` unless a CONNMARK rule set one. An IPv6 entry prints the same way, its addresses
/// as inet_ntop writes them and its pings as `icmpv6   58 … type=128`.
/// A connection of zone 0 (the default zone); see [`zoned_entry_line`].
pub fn entry_line<A: ShownAddr>(
    entry: &CtEntryOf<A>,
    now_ns: u64,
    config: &CtConfig,
) -> Option<String> {
    zoned_entry_line(entry, 0, now_ns, config)
}

/// [`entry_line`] of a connection in conntrack zone `zone` (the raw
/// table's `-j CT --zone`): conntrack 1.4.7 prints ` zone=N` after the
/// flags (and after `mark=`, which netbeast leaves out), only for a zone
/// other than 0 — the kernel sends no zone attribute for the default one.
pub fn zoned_entry_line<A: ShownAddr>(
    entry: &CtEntryOf<A>,
    zone: u16,
    now_ns: u64,
    config: &CtConfig,
) -> Option<String> {
    let remaining = remaining_secs(entry, now_ns, config)?;
    let name = match entry.protocol {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        p if p == A::ICMP.0 => A::ICMP.1,
        _ => "unknown",
    };
    let mut line = format!("{name:<8} {} {remaining} ", entry.protocol);
    if entry.protocol == IPPROTO_TCP {
        let state = tcp_state::NAMES
            .get(usize::from(entry.tcp_state))
            .copied()
            .unwrap_or("NONE");
        line += state;
        line.push(' ');
    }
    let src = entry.orig_src.show();
    let dst = entry.orig_dst.show();
    line += &endpoints(entry, &src, &dst, entry.orig_sport, entry.orig_dport, false);
    line += &format!(" packets={} bytes={}", entry.packets[0], entry.bytes[0]);
    let replied = entry.status & ct_status::SEEN_REPLY != 0;
    if !replied {
        line += " [UNREPLIED]";
    }
    line.push(' ');
    // The reply tuple as the kernel recorded it: the original one inverted,
    // or, for a translated connection, what the translation made of it.
    let (reply_src, reply_dst) = (entry.reply_src.show(), entry.reply_dst.show());
    line += &endpoints(
        entry,
        &reply_src,
        &reply_dst,
        entry.reply_sport,
        entry.reply_dport,
        true,
    );
    line += &format!(" packets={} bytes={}", entry.packets[1], entry.bytes[1]);
    if replied && assured(entry) {
        line += " [ASSURED]";
    }
    // conntrack prints `mark=` on every line; netbeast leaves out an
    // unmarked connection's (as `use=`), so the lines stay as they were
    // for rulesets without CONNMARK, and shows the mark a CONNMARK rule
    // gave, where conntrack puts it.
    if entry.mark != 0 {
        line += &format!(" mark={}", entry.mark);
    }
    if zone != 0 {
        line += &format!(" zone={zone}");
    }
    Some(line)
}

/// A connection conntrack would call assured.
fn assured<A>(entry: &CtEntryOf<A>) -> bool {
    match entry.protocol {
        IPPROTO_TCP => matches!(
            entry.tcp_state,
            tcp_state::ESTABLISHED | tcp_state::FIN_WAIT | tcp_state::TIME_WAIT
        ),
        // Netfilter's "stream": the original side spoke again after the reply.
        IPPROTO_UDP => entry.packets[0] >= 2,
        _ => false,
    }
}

/// `src=A dst=B` and the protocol's identifiers of one direction.
fn endpoints<A: ShownAddr>(
    entry: &CtEntryOf<A>,
    src: &str,
    dst: &str,
    sport: u16,
    dport: u16,
    reply: bool,
) -> String {
    match entry.protocol {
        IPPROTO_TCP | IPPROTO_UDP => {
            format!("src={src} dst={dst} sport={sport} dport={dport}")
        }
        p if p == A::ICMP.0 => {
            // Only queries open ICMP connections (echo, for ICMPv6 also the
            // rare node information query, shown as echo), and the echo
            // identifier is both "ports" of the key.
            let (_, _, request, answer) = A::ICMP;
            let icmp_type = if reply { answer } else { request };
            format!("src={src} dst={dst} type={icmp_type} code=0 id={sport}")
        }
        _ => format!("src={src} dst={dst}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netbeast_common::CtEntry;
    use std::net::Ipv4Addr;

    const SEC: u64 = NS_PER_SEC;
    /// A "now" far from zero, so that idle times can be subtracted.
    const NOW: u64 = 1_000_000 * SEC;

    fn raw(a: Ipv4Addr) -> u32 {
        u32::from_ne_bytes(a.octets())
    }

    fn entry(protocol: u8, sport: u16, dport: u16) -> CtEntry {
        CtEntry {
            orig_src: raw(Ipv4Addr::new(10, 0, 0, 1)),
            orig_dst: raw(Ipv4Addr::new(10, 0, 0, 2)),
            orig_sport: sport,
            orig_dport: dport,
            protocol,
            tcp_state: tcp_state::NONE,
            status: 0,
            _pad: 0,
            last_seen_ns: NOW,
            packets: [1, 0],
            bytes: [60, 0],
            reply_src: raw(Ipv4Addr::new(10, 0, 0, 2)),
            reply_dst: raw(Ipv4Addr::new(10, 0, 0, 1)),
            reply_sport: dport,
            reply_dport: sport,
            mark: 0,
        }
    }

    /// A connection of a zone other than 0 ends with conntrack's
    /// ` zone=N`; zone 0 prints none.
    #[test]
    fn zone_follows_the_flags() {
        let mut e = entry(IPPROTO_UDP, 5000, 53);
        let zero = zoned_entry_line(&e, 0, NOW, &CtConfig::DEFAULT).unwrap();
        assert_eq!(zero, line(&e, 0).unwrap());
        assert!(!zero.contains("zone"), "{zero}");
        assert_eq!(
            zoned_entry_line(&e, 7, NOW, &CtConfig::DEFAULT).unwrap(),
            "udp      17 30 src=10.0.0.1 dst=10.0.0.2 sport=5000 dport=53 packets=1 bytes=60 [UNREPLIED] src=10.0.0.2 dst=10.0.0.1 sport=53 dport=5000 packets=0 bytes=0 zone=7"
        );
        e.protocol = IPPROTO_TCP;
        e.tcp_state = tcp_state::ESTABLISHED;
        e.status = ct_status::SEEN_REPLY;
        let tcp = zoned_entry_line(&e, 65535, NOW, &CtConfig::DEFAULT).unwrap();
        assert!(tcp.ends_with(" [ASSURED] zone=65535"), "{tcp}");
    }

    fn line(e: &CtEntry, idle_ns: u64) -> Option<String> {
        entry_line(e, e.last_seen_ns + idle_ns, &CtConfig::DEFAULT)
    }

    #[test]
    fn tcp_established_like_conntrack() {
        let mut e = entry(IPPROTO_TCP, 40000, 22);
        e.tcp_state = tcp_state::ESTABLISHED;
        e.status = ct_status::SEEN_REPLY;
        e.packets = [3, 2];
        e.bytes = [180, 120];
        assert_eq!(
            line(&e, SEC / 2).unwrap(),
            "tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=22 packets=3 bytes=180 src=10.0.0.2 dst=10.0.0.1 sport=22 dport=40000 packets=2 bytes=120 [ASSURED]"
        );
    }

    #[test]
    fn tcp_syn_sent_is_unreplied() {
        let mut e = entry(IPPROTO_TCP, 51000, 443);
        e.tcp_state = tcp_state::SYN_SENT;
        assert_eq!(
            line(&e, 0).unwrap(),
            "tcp      6 120 SYN_SENT src=10.0.0.1 dst=10.0.0.2 sport=51000 dport=443 packets=1 bytes=60 [UNREPLIED] src=10.0.0.2 dst=10.0.0.1 sport=443 dport=51000 packets=0 bytes=0"
        );
        // A SYN-ACK seen, handshake not finished: replied, not yet assured.
        e.tcp_state = tcp_state::SYN_RECV;
        e.status = ct_status::SEEN_REPLY;
        e.packets = [1, 1];
        let text = line(&e, 10 * SEC).unwrap();
        assert!(text.starts_with("tcp      6 50 SYN_RECV src="), "{text}");
        assert!(
            !text.contains("[UNREPLIED]") && !text.contains("[ASSURED]"),
            "{text}"
        );
    }

    #[test]
    fn tcp_closing_states_use_their_timeouts() {
        let mut e = entry(IPPROTO_TCP, 40000, 22);
        e.status = ct_status::SEEN_REPLY;
        for (state, name, timeout) in [
            (tcp_state::FIN_WAIT, "FIN_WAIT", 120),
            (tcp_state::TIME_WAIT, "TIME_WAIT", 120),
            (tcp_state::CLOSE, "CLOSE", 10),
        ] {
            e.tcp_state = state;
            let text = line(&e, 0).unwrap();
            assert!(
                text.starts_with(&format!("tcp      6 {timeout} {name} src=")),
                "{text}"
            );
        }
        // A reset connection is gone 10 s later.
        e.tcp_state = tcp_state::CLOSE;
        assert!(line(&e, 10 * SEC).is_some());
        assert_eq!(line(&e, 10 * SEC + 1), None);
    }

    #[test]
    fn udp_lines_like_conntrack() {
        let e = entry(IPPROTO_UDP, 34386, 5353);
        assert_eq!(
            line(&e, SEC).unwrap(),
            "udp      17 29 src=10.0.0.1 dst=10.0.0.2 sport=34386 dport=5353 packets=1 bytes=60 [UNREPLIED] src=10.0.0.2 dst=10.0.0.1 sport=5353 dport=34386 packets=0 bytes=0"
        );
        // One request, one reply: replied, on the stream timeout, not assured.
        let mut answered = e;
        answered.status = ct_status::SEEN_REPLY;
        answered.packets = [1, 1];
        answered.bytes = [30, 30];
        assert_eq!(
            line(&answered, SEC).unwrap(),
            "udp      17 119 src=10.0.0.1 dst=10.0.0.2 sport=34386 dport=5353 packets=1 bytes=30 src=10.0.0.2 dst=10.0.0.1 sport=5353 dport=34386 packets=1 bytes=30"
        );
        let mut stream = answered;
        stream.packets = [2, 1];
        assert!(line(&stream, SEC).unwrap().ends_with(" [ASSURED]"));
        // Past 30 s without a reply the flow has expired.
        assert_eq!(line(&e, 31 * SEC), None);
    }

    #[test]
    fn translated_connections_show_their_reply_tuple() {
        // 192.168.0.6:40000 -> 10.10.7.15:80, SNATed to 10.10.7.1:40001.
        let mut e = entry(IPPROTO_TCP, 40000, 80);
        e.orig_src = raw(Ipv4Addr::new(192, 168, 0, 6));
        e.orig_dst = raw(Ipv4Addr::new(10, 10, 7, 15));
        e.reply_src = raw(Ipv4Addr::new(10, 10, 7, 15));
        e.reply_dst = raw(Ipv4Addr::new(10, 10, 7, 1));
        e.reply_sport = 80;
        e.reply_dport = 40001;
        e.tcp_state = tcp_state::ESTABLISHED;
        e.status = ct_status::SEEN_REPLY | ct_status::SRC_NAT;
        e.packets = [3, 2];
        e.bytes = [180, 120];
        assert_eq!(
            line(&e, 0).unwrap(),
            "tcp      6 432000 ESTABLISHED src=192.168.0.6 dst=10.10.7.15 sport=40000 dport=80 packets=3 bytes=180 src=10.10.7.15 dst=10.10.7.1 sport=80 dport=40001 packets=2 bytes=120 [ASSURED]"
        );
    }

    #[test]
    fn icmp_echo_like_conntrack() {
        let mut e = entry(IPPROTO_ICMP, 17286, 17286);
        e.status = ct_status::SEEN_REPLY;
        e.packets = [1, 1];
        e.bytes = [84, 84];
        assert_eq!(
            line(&e, SEC).unwrap(),
            "icmp     1 29 src=10.0.0.1 dst=10.0.0.2 type=8 code=0 id=17286 packets=1 bytes=84 src=10.0.0.2 dst=10.0.0.1 type=0 code=0 id=17286 packets=1 bytes=84"
        );
    }

    #[test]
    fn other_protocols_show_addresses_only() {
        let e = entry(47, 0, 0);
        assert_eq!(
            line(&e, 0).unwrap(),
            "unknown  47 600 src=10.0.0.1 dst=10.0.0.2 packets=1 bytes=60 [UNREPLIED] src=10.0.0.2 dst=10.0.0.1 packets=0 bytes=0"
        );
    }

    /// An IPv6 address as the kernel's tables store it.
    fn raw6(text: &str) -> Addr6 {
        let octets = text.parse::<std::net::Ipv6Addr>().unwrap().octets();
        let mut words = [0u32; 4];
        for (word, chunk) in words.iter_mut().zip(octets.chunks_exact(4)) {
            *word = u32::from_ne_bytes(chunk.try_into().unwrap());
        }
        Addr6(words)
    }

    fn entry6(protocol: u8, sport: u16, dport: u16) -> netbeast_common::CtEntry6 {
        netbeast_common::CtEntry6 {
            orig_src: raw6("fd00:77::1"),
            orig_dst: raw6("fd00:77::2"),
            orig_sport: sport,
            orig_dport: dport,
            protocol,
            tcp_state: tcp_state::NONE,
            status: 0,
            _pad: 0,
            last_seen_ns: NOW,
            packets: [1, 0],
            bytes: [60, 0],
            reply_src: raw6("fd00:77::2"),
            reply_dst: raw6("fd00:77::1"),
            reply_sport: dport,
            reply_dport: sport,
            mark: 0,
        }
    }

    /// The lines conntrack 1.4.7 printed for these IPv6 connections (`-L
    /// -f ipv6`, with accounting on: its `mark=0 use=1` left out, as for
    /// IPv4).
    #[test]
    fn ipv6_lines_like_conntrack() {
        let mut ping = entry6(IPPROTO_ICMPV6, 24829, 24829);
        ping.status = ct_status::SEEN_REPLY;
        ping.packets = [1, 1];
        ping.bytes = [104, 104];
        assert_eq!(
            entry_line(&ping, NOW + 2 * SEC, &CtConfig::DEFAULT).unwrap(),
            "icmpv6   58 28 src=fd00:77::1 dst=fd00:77::2 type=128 code=0 id=24829 packets=1 bytes=104 src=fd00:77::2 dst=fd00:77::1 type=129 code=0 id=24829 packets=1 bytes=104"
        );
        let udp = entry6(IPPROTO_UDP, 39936, 5353);
        assert_eq!(
            entry_line(&udp, NOW + SEC, &CtConfig::DEFAULT).unwrap(),
            "udp      17 29 src=fd00:77::1 dst=fd00:77::2 sport=39936 dport=5353 packets=1 bytes=60 [UNREPLIED] src=fd00:77::2 dst=fd00:77::1 sport=5353 dport=39936 packets=0 bytes=0"
        );
        let mut tcp = entry6(IPPROTO_TCP, 57820, 22);
        tcp.orig_src = raw6("2001:db8:0:1::a:1");
        tcp.reply_dst = tcp.orig_src;
        tcp.tcp_state = tcp_state::ESTABLISHED;
        tcp.status = ct_status::SEEN_REPLY;
        assert_eq!(
            entry_line(&tcp, NOW, &CtConfig::DEFAULT).unwrap(),
            "tcp      6 432000 ESTABLISHED src=2001:db8:0:1::a:1 dst=fd00:77::2 sport=57820 dport=22 packets=1 bytes=60 src=fd00:77::2 dst=2001:db8:0:1::a:1 sport=22 dport=57820 packets=0 bytes=0 [ASSURED]"
        );
        // ICMP (protocol 1) in an IPv6 table is no ping of this family.
        let other = entry_line(&entry6(IPPROTO_ICMP, 1, 1), NOW, &CtConfig::DEFAULT).unwrap();
        assert!(other.starts_with("unknown  1 "), "{other}");
        assert!(
            other.contains(" src=fd00:77::1 dst=fd00:77::2 packets=1 "),
            "{other}"
        );
    }

    #[test]
    fn ipv6_lines_sort_by_address_value() {
        let mut a = entry6(IPPROTO_UDP, 1, 2);
        a.orig_src = raw6("fd00::2:0");
        let mut b = a;
        b.orig_src = raw6("fd00::1:ffff");
        let lines = sorted_lines([(a, 0), (b, 0)].into_iter(), NOW, &CtConfig::DEFAULT);
        assert!(lines[0].contains("src=fd00::1:ffff "), "{lines:?}");
        assert!(lines[1].contains("src=fd00::2:0 "), "{lines:?}");
    }

    #[test]
    fn family_names_like_conntrack() {
        assert_eq!(FamilyFilter::parse("ipv6").unwrap(), FamilyFilter::Ipv6);
        assert_eq!(FamilyFilter::parse("ipv4").unwrap(), FamilyFilter::Ipv4);
        let err = FamilyFilter::parse("inet6").unwrap_err().to_string();
        assert!(err.contains("`inet6' unsupported protocol"), "{err}");
    }

    #[test]
    fn configured_timeouts_apply() {
        let config = CtConfig {
            udp: 5,
            ..CtConfig::DEFAULT
        };
        let e = entry(IPPROTO_UDP, 1, 2);
        assert_eq!(remaining_secs(&e, NOW + SEC, &config), Some(4));
        assert_eq!(remaining_secs(&e, NOW + 6 * SEC, &config), None);
        // Stamped a moment after "now" by another CPU: full timeout left.
        assert_eq!(remaining_secs(&e, NOW - 1, &config), Some(5));
    }

    #[test]
    fn monotonic_clock_moves() {
        let a = monotonic_now_ns();
        let b = monotonic_now_ns();
        assert!(a > 0 && b >= a);
    }
}
