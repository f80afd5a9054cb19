//! iptables' own semantics, written plainly from the rule model: walk the
//! rules in order, test every match as the kernel's `ip_packet_match` and
//! the `tcp`/`udp`/`icmp`/`multiport`/`mac` matches do, stop at the first
//! terminating rule. This is the oracle the compiled classifier is tested
//! against; it shares no code with the compiler.
//!
//! One documented difference from iptables: a first fragment whose L4
//! header is cut short makes iptables' port and ICMP matches drop the packet
//! on the spot ("hotdrop"); here, as in netbeast's kernel, such a match is
//! simply false.

use std::net::{Ipv4Addr, Ipv6Addr};

use netbeast_common::{Held, L4_FRAGMENT, L4_NONE};

use super::Interface;
use super::guards::{GuardOracle, GuardState};
use crate::rules::model::{Chain, IfaceName, Match, Negatable, Rule, Table, TableName, Target};

/// What the packet parser read from the L4 header of a first fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4Header {
    /// TCP, UDP, DCCP, SCTP, UDP-Lite (`port_header_len`).
    Ports {
        source: u16,
        destination: u16,
    },
    Icmp {
        icmp_type: u8,
        code: u8,
    },
}

/// The parts of an IPv4 packet the filter rules look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketView {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// An IPv6 packet's source and destination (`src`/`dst` unused then).
    pub addr6: Option<(Ipv6Addr, Ipv6Addr)>,
    pub protocol: u8,
    /// A non-first fragment: it carries no L4 header.
    pub fragment_offset_nonzero: bool,
    /// The L4 header of a first fragment (or unfragmented packet): `None`
    /// for protocols without ports or types, and when the header is cut
    /// short. Ignored on non-first fragments, and when it does not fit the
    /// protocol (ports are TCP/UDP only, type/code ICMP only).
    pub l4: Option<L4Header>,
    /// 0 or an ifindex no interface has when the packet has no such
    /// interface (no input interface in OUTPUT, no output in INPUT).
    pub in_ifindex: u32,
    pub out_ifindex: u32,
    pub mac_source: [u8; 6],
    /// The connection tracking state (`ct_state::*`) conntrack gave it.
    pub ct_state: u32,
    /// The header fields of the other static matches.
    pub header: HeaderFields,
}

/// What `-m length`, `ttl`, `tos`, `dscp`, `pkttype`, `addrtype` and the
/// TCP flag tests look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderFields {
    /// The IPv4 total length.
    pub length: u16,
    pub ttl: u8,
    pub tos: u8,
    /// The TCP flags byte; the tests read it only for TCP first fragments
    /// with a whole header (`PacketView::tcp_flags`).
    pub tcp_flags: u8,
    /// `pkttype::*`.
    pub pkttype: u32,
    /// `addr_type::*` of the source and destination addresses.
    pub src_type: u32,
    pub dst_type: u32,
    /// The option kinds a TCP packet carries (bit `k` of the 256-bit set:
    /// kind `k`, as xt_tcpudp's walk meets them), for `--tcp-option`;
    /// `None` when its options cannot be read (then also for a packet
    /// with a whole TCP header). Read only for TCP first fragments.
    pub tcp_options: Option<[u64; 4]>,
    /// The chunks the walk of an SCTP packet met (`--chunk-types`); read
    /// only for SCTP first fragments with a whole common header.
    pub sctp: netbeast_common::sctp::SctpChunks,
    /// What `-m dccp`'s type and option tests read of a DCCP header
    /// (`dccp::facts`); read only for DCCP first fragments with a whole
    /// port header.
    pub dccp: netbeast_common::dccp::DccpFacts,
    /// The packet's connection, for `-m conntrack`'s tuple, protocol and
    /// expiry options (read only when `ct_state` says it has one).
    pub connection: ConnectionView,
    /// An IPv6 packet's extension headers as ip6tables' header matches
    /// read them (`-m ipv6header`, `-m rt`, `-m frag`).
    pub ipv6_ext: netbeast_common::Ipv6Ext,
}

/// What `-m conntrack` reads of a packet's connection beyond its state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionView {
    pub orig: netbeast_common::CtTuple,
    pub reply: netbeast_common::CtTuple,
    pub protocol: u8,
    /// Whole seconds the entry has left (0 for a connection's first
    /// packet, not confirmed yet).
    pub expires: u64,
}

impl Default for HeaderFields {
    fn default() -> Self {
        HeaderFields {
            length: 60,
            ttl: 64,
            tos: 0,
            tcp_flags: 0x02,
            pkttype: netbeast_common::pkttype::HOST,
            src_type: netbeast_common::addr_type::UNICAST,
            dst_type: netbeast_common::addr_type::UNICAST,
            tcp_options: Some([0; 4]),
            sctp: netbeast_common::sctp::SctpChunks::default(),
            dccp: netbeast_common::dccp::DccpFacts::default(),
            connection: ConnectionView::default(),
            ipv6_ext: netbeast_common::Ipv6Ext::default(),
        }
    }
}

impl PacketView {
    /// The value of address field `f` (`field::ADDR_FIELDS`): the IPv4
    /// address, or the word of the IPv6 address the field holds.
    pub fn addr_word(&self, f: usize) -> Ipv4Addr {
        match self.addr6 {
            None if f == netbeast_common::field::SRC => self.src,
            None if f == netbeast_common::field::DST => self.dst,
            None => Ipv4Addr::UNSPECIFIED,
            Some((src, dst)) => {
                let addr = if netbeast_common::field::is_source(f) {
                    src
                } else {
                    dst
                };
                let word = netbeast_common::field::addr_word(f);
                Ipv4Addr::from((u128::from(addr) >> (96 - 32 * word)) as u32)
            }
        }
    }

    /// Source and destination port, as the `tcp`/`udp`/`multiport` matches
    /// see them: only on TCP/UDP first fragments with a whole header.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.l4 {
            Some(L4Header::Ports {
                source,
                destination,
            }) if !self.fragment_offset_nonzero
                && netbeast_common::port_header_len(self.protocol).is_some() =>
            {
                Some((source, destination))
            }
            _ => None,
        }
    }

    /// The TCP flags, as `--tcp-flags` sees them: only on TCP first
    /// fragments with a whole header.
    pub fn tcp_flags(&self) -> Option<u8> {
        (self.protocol == 6 && self.ports().is_some()).then_some(self.header.tcp_flags)
    }

    /// The TCP option kinds, as `--tcp-option` sees them: only on TCP
    /// first fragments with a whole header and readable options.
    pub fn tcp_options(&self) -> Option<[u64; 4]> {
        self.tcp_flags().and(self.header.tcp_options)
    }

    /// The SCTP chunks, as `--chunk-types` sees them: walked only on SCTP
    /// first fragments with a whole common header (else not walked).
    pub fn sctp_chunks(&self) -> netbeast_common::sctp::SctpChunks {
        if self.protocol == 132 && self.ports().is_some() {
            self.header.sctp
        } else {
            netbeast_common::sctp::SctpChunks::default()
        }
    }

    /// The DCCP header's facts, as `--dccp-types`/`--dccp-option` see
    /// them: read only on DCCP first fragments with a whole port header
    /// (else not read: the tests fail).
    pub fn dccp_facts(&self) -> netbeast_common::dccp::DccpFacts {
        if self.protocol == 33 && self.ports().is_some() {
            self.header.dccp
        } else {
            netbeast_common::dccp::DccpFacts::default()
        }
    }

    /// ICMP type and code, as the `icmp` match sees them.
    pub fn icmp(&self) -> Option<(u8, u8)> {
        match self.l4 {
            Some(L4Header::Icmp { icmp_type, code })
                if !self.fragment_offset_nonzero && self.protocol == 1 =>
            {
                Some((icmp_type, code))
            }
            _ => None,
        }
    }

    /// ICMPv6 type and code, as the `icmp6` match sees them (the header is
    /// `L4Header::Icmp` of an IPv6 packet with protocol 58).
    pub fn icmp6(&self) -> Option<(u8, u8)> {
        match self.l4 {
            Some(L4Header::Icmp { icmp_type, code })
                if !self.fragment_offset_nonzero
                    && self.addr6.is_some()
                    && self.protocol == crate::rules::ext::icmp6::IPPROTO_ICMPV6 =>
            {
                Some((icmp_type, code))
            }
            _ => None,
        }
    }

    /// The keys of the classifier's `field::L4A` and `field::L4B`: ports
    /// for TCP/UDP, type and code for ICMP and ICMPv6, `L4_FRAGMENT` twice for a
    /// non-first fragment, `L4_NONE` twice otherwise.
    pub fn l4_keys(&self) -> (u32, u32) {
        if self.fragment_offset_nonzero {
            (L4_FRAGMENT, L4_FRAGMENT)
        } else if let Some((s, d)) = self.ports() {
            (u32::from(s), u32::from(d))
        } else if let Some((t, c)) = self.icmp().or(self.icmp6()) {
            (u32::from(t), u32::from(c))
        } else {
            (L4_NONE, L4_NONE)
        }
    }
}

/// The rules of `chain`, which must not jump anywhere, that iptables acts
/// on for `pkt`, as 0-based rule numbers: every matching rule without a
/// terminating target, then the first matching rule with one. Empty, or
/// ending in a non-terminating rule, means the chain policy applies.
/// [`classify_table`] follows jumps.
pub fn classify(chain: &Chain, interfaces: &[Interface], pkt: &PacketView) -> Vec<usize> {
    let table = Table {
        name: TableName::Filter,
        chains: vec![chain.clone()],
    };
    classify_table(&table, &chain.name, interfaces, pkt)
        .into_iter()
        .map(|hit| hit.rule)
        .collect()
}

/// A rule iptables acted on: its chain and its 0-based position there.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RuleRef {
    pub chain: String,
    pub rule: usize,
}

impl std::fmt::Display for RuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} rule {}", self.chain, self.rule + 1)
    }
}

/// Steps after which a walk is taken to loop (iptables refuses rulesets
/// whose jumps loop, so a real one never gets here).
const MAX_STEPS: usize = 1 << 20;

/// The rules iptables acts on for `pkt` when it enters built-in chain
/// `chain` of `table`, as `ipt_do_table` walks them: every matching rule
/// without a verdict (no target, `-j CHAIN`, `-g CHAIN`, RETURN), then the
/// first matching rule with one. Empty, or ending in a rule without a
/// verdict, means the policy of `chain` applies.
///
/// `-j CHAIN` remembers the rule after it and goes on at CHAIN's first
/// rule; `-g CHAIN` goes there without remembering; RETURN, or the end of a
/// user-defined chain, goes back to the last rule remembered, or, when
/// there is none, to the policy of the built-in chain.
///
/// Panics if a jump names a chain the table lacks, or if the walk does not
/// end (a loop), both of which iptables refuses up front.
///
/// Stateful matches (`-m statistic`) are decided by a fresh
/// [`GuardState`]; [`classify_table_with`] takes the state to keep.
pub fn classify_table(
    table: &Table,
    chain: &str,
    interfaces: &[Interface],
    pkt: &PacketView,
) -> Vec<RuleRef> {
    classify_table_with(table, chain, interfaces, pkt, &mut GuardState::default())
}

/// [`classify_table`], deciding stateful matches with `oracle`: a rule's
/// are evaluated, in match order, only once its static matches hold, and
/// the first that fails makes the rule not match (as iptables' matches
/// are, except that iptables evaluates every match in the order written:
/// see docs/ARCHITECTURE.md "Guards").
pub fn classify_table_with(
    table: &Table,
    chain: &str,
    interfaces: &[Interface],
    pkt: &PacketView,
    oracle: &mut dyn GuardOracle,
) -> Vec<RuleRef> {
    let name_of = |ifindex: u32| {
        interfaces
            .iter()
            .find(|i| i.ifindex == ifindex)
            .map(|i| i.name.as_str())
    };
    let in_name = name_of(pkt.in_ifindex);
    let out_name = name_of(pkt.out_ifindex);
    let find = |name: &str| {
        table
            .chains
            .iter()
            .position(|c| c.name == name)
            .unwrap_or_else(|| panic!("chain {name} is not in the table"))
    };
    let mut hits = Vec::new();
    let mut returns: Vec<(usize, usize)> = Vec::new();
    let (mut at, mut next) = (find(chain), 0);
    for _ in 0..MAX_STEPS {
        let current = &table.chains[at];
        let Some(rule) = current.rules.get(next) else {
            // The end of a chain: a user-defined chain returns, a built-in
            // one (or a RETURN with nothing to return to) is its policy.
            match returns.pop() {
                Some(back) if current.policy.is_none() => (at, next) = back,
                _ => return hits,
            }
            continue;
        };
        let this = RuleRef {
            chain: current.name.clone(),
            rule: next,
        };
        if !rule_matches(rule, in_name, out_name, pkt) {
            // iptables tests the matches in order: an SCTP or DCCP match
            // drops a packet it cannot read before a later match fails.
            if let Some(prefix) = super::guards::hotdrop_prefix(rule)
                && rule_matches_through(rule, prefix.matches, in_name, out_name, pkt)
                && super::guards::rule_guards_through(rule, prefix.matches)
                    .enumerate()
                    .map(|(n, g)| oracle.decide(table.name, &this, n, &g, pkt))
                    .find(|&held| held != Held::Holds)
                    == Some(Held::Hotdrop)
            {
                return hits;
            }
            next += 1;
            continue;
        }
        // The rule's stateful matches in order, up to the first that
        // fails (the rule does not match) or drops the packet (nothing
        // more is met).
        let held = super::guards::rule_guards(rule)
            .enumerate()
            .map(|(n, g)| oracle.decide(table.name, &this, n, &g, pkt))
            .find(|&held| held != Held::Holds)
            .unwrap_or(Held::Holds);
        match held {
            Held::Holds => {}
            Held::Fails => {
                next += 1;
                continue;
            }
            Held::Hotdrop => return hits,
        }
        hits.push(this);
        match &rule.target {
            Target::Return => match returns.pop() {
                Some(back) => (at, next) = back,
                None => return hits,
            },
            Target::Jump(callee) => {
                returns.push((at, next + 1));
                (at, next) = (find(callee), 0);
            }
            Target::Goto(callee) => (at, next) = (find(callee), 0),
            // The table of targets decides: in the nat table, the first
            // ACCEPT or translation decides a new connection's fate, as a
            // verdict does in the filter table; no target and LOG go on.
            t if t.terminates() => return hits,
            _ => next += 1,
        }
    }
    panic!("the rules of {chain} loop: {hits:?}");
}

/// Whether `rule`'s matches (not its target, nor its stateful matches,
/// which the caller must refuse) hold for `pkt`, as iptables tests them:
/// what `netbeast trace` filters packets with.
pub fn rule_matches_packet(rule: &Rule, interfaces: &[Interface], pkt: &PacketView) -> bool {
    let name_of = |ifindex: u32| {
        interfaces
            .iter()
            .find(|i| i.ifindex == ifindex)
            .map(|i| i.name.as_str())
    };
    rule_matches(rule, name_of(pkt.in_ifindex), name_of(pkt.out_ifindex), pkt)
}

/// Whether `rule` has a stateful match (`-m statistic`, `limit`, ...):
/// testing it would take a packet's credit or draw a number.
pub fn has_stateful_match(rule: &Rule) -> bool {
    // A non-contiguous netmask's guard keeps no state: `rule_matches`
    // tests the address under its mask.
    super::guards::rule_guards(rule).any(|g| g.kind != netbeast_common::guard_kind::ADDR_MASK)
}

/// `value` tested, then flipped by `!`: iptables' `FWINV`.
fn holds<T>(m: &Negatable<T>, test: impl FnOnce(&T) -> bool) -> bool {
    test(&m.value) != m.negated
}

/// An interface netbeast was not told about has a name no pattern can
/// match, except the lone `+` that matches every name.
fn iface_matches(pattern: &IfaceName, name: Option<&str>) -> bool {
    match name {
        Some(name) => pattern.matches(name),
        None => pattern.wildcard && pattern.name.is_empty(),
    }
}

fn rule_matches(
    rule: &Rule,
    in_name: Option<&str>,
    out_name: Option<&str>,
    pkt: &PacketView,
) -> bool {
    rule_matches_through(rule, rule.matches.len(), in_name, out_name, pkt)
}

/// [`rule_matches`] of the address part and the first `matches` matches.
fn rule_matches_through(
    rule: &Rule,
    matches: usize,
    in_name: Option<&str>,
    out_name: Option<&str>,
    pkt: &PacketView,
) -> bool {
    // ip6_packet_match(): an IPv6 rule's addresses; an IPv4 packet meets
    // no IPv6 rule and the other way round (the families' chains are
    // apart anyway).
    if rule.source6.is_some() || rule.destination6.is_some() {
        let Some((src, dst)) = pkt.addr6 else {
            return false;
        };
        if let Some(s) = &rule.source6
            && !holds(s, |net| net.contains(src))
        {
            return false;
        }
        if let Some(d) = &rule.destination6
            && !holds(d, |net| net.contains(dst))
        {
            return false;
        }
    }
    // ip_packet_match(): addresses, interfaces, protocol, fragment flag.
    if let Some(s) = &rule.source
        && !holds(s, |net| net.contains(pkt.src))
    {
        return false;
    }
    if let Some(d) = &rule.destination
        && !holds(d, |net| net.contains(pkt.dst))
    {
        return false;
    }
    if let Some(i) = &rule.in_iface
        && !holds(i, |p| iface_matches(p, in_name))
    {
        return false;
    }
    if let Some(o) = &rule.out_iface
        && !holds(o, |p| iface_matches(p, out_name))
    {
        return false;
    }
    // Protocol 0 (`-p all`) is never tested, even with `!`.
    if let Some(p) = &rule.protocol
        && p.value != 0
        && !holds(p, |&proto| proto == pkt.protocol)
    {
        return false;
    }
    if let Some(fragment) = rule.fragment
        && fragment != pkt.fragment_offset_nonzero
    {
        return false;
    }
    rule.matches[..matches].iter().all(|m| match_holds(m, pkt))
}

fn match_holds(m: &Match, pkt: &PacketView) -> bool {
    m.ext().matches(pkt)
}
