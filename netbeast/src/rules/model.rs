//! The rule model: what the user wrote, in iptables' terms. The parser builds
//! it, `save` prints it, the compiler turns it into classifier tables.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

pub use super::ext::MatchExt;
pub use super::ext::addrtype::AddrType;
pub use super::ext::comment::Comment;
pub use super::ext::connlimit::Connlimit;
pub use super::ext::conntrack::ConnState;
pub use super::ext::dscp::Dscp;
pub use super::ext::frag::Frag;
pub use super::ext::hashlimit::{HashRate, Hashlimit};
pub use super::ext::hl::Hl;
pub use super::ext::icmp::Icmp;
pub use super::ext::icmp6::Icmp6;
pub use super::ext::iprange::IpRange;
pub use super::ext::ipv6header::Ipv6Header;
pub use super::ext::length::Length;
pub use super::ext::limit::Limit;
pub use super::ext::mac::MacSource;
pub use super::ext::multiport::Multiport;
pub use super::ext::pkttype::PktType;
pub use super::ext::recent::{Recent, RecentCommand};
pub use super::ext::rt::Rt;
pub use super::ext::statistic::{Statistic, StatisticMode};
pub use super::ext::tcp::{Ports, TcpFlags};
pub use super::ext::tos::Tos;
pub use super::ext::ttl::{Ttl, TtlOp};

thread_local! {
    /// Set while the rule file's binary image is encoded ([`to_image`]).
    static IMAGE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A value the rule file's JSON leaves out: an absent option, a false
/// flag, a zero number, a pristine table (read back as the field's
/// default).
pub(crate) trait Absent {
    fn is_absent(&self) -> bool;
}

impl<T> Absent for Option<T> {
    fn is_absent(&self) -> bool {
        self.is_none()
    }
}

impl Absent for bool {
    fn is_absent(&self) -> bool {
        !*self
    }
}

impl Absent for u16 {
    fn is_absent(&self) -> bool {
        *self == 0
    }
}

impl Absent for Table {
    fn is_absent(&self) -> bool {
        self.is_pristine()
    }
}

/// The rule model's `skip_serializing_if`: the JSON rule file leaves
/// absent values out; the binary image writes every field, since its
/// format has no field names and a field left out would shift the next.
pub(crate) fn absent<T: Absent>(value: &T) -> bool {
    value.is_absent() && !IMAGE.with(std::cell::Cell::get)
}

/// `value` in the binary image's encoding (postcard), every field written.
pub(crate) fn to_image<T: Serialize>(value: &T) -> Vec<u8> {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            IMAGE.with(|image| image.set(false));
        }
    }
    IMAGE.with(|image| image.set(true));
    let _reset = Reset;
    postcard::to_stdvec(value).expect("the rule model always serializes")
}

/// A whole ruleset: every table netbeast knows, as `iptables-save` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ruleset {
    pub filter: Table,
    /// Rulesets stored before netbeast had the nat table load with an
    /// empty one.
    #[serde(default = "Table::new_nat")]
    pub nat: Table,
    /// The IPv6 filter table (`ip6tables`), separate from the IPv4 one as
    /// in iptables. Left out of the file while pristine, so IPv4-only rule
    /// files stay as they were, and older files load with an empty one.
    #[serde(
        default = "Table::new_filter",
        skip_serializing_if = "crate::rules::model::absent"
    )]
    pub filter6: Table,
    /// The raw table (`-t raw`: PREROUTING before conntrack, OUTPUT before
    /// conntrack). Left out of the file while pristine, so rule files
    /// without it stay as they were, and older files load with an empty
    /// one.
    #[serde(
        default = "Table::new_raw",
        skip_serializing_if = "crate::rules::model::absent"
    )]
    pub raw: Table,
    /// The mangle table (`-t mangle`): its user-defined chains, and its
    /// built-in chains' policies (ACCEPT). Rules its built-in chains would
    /// run are refused by the compiler (not run yet, docs/FEATURES.md);
    /// kube-proxy and kubelet only make their canary chains here. Left
    /// out of the file while pristine, as `raw`.
    #[serde(
        default = "Table::new_mangle",
        skip_serializing_if = "crate::rules::model::absent"
    )]
    pub mangle: Table,
    /// The IPv6 nat table (`ip6tables -t nat`), separate from the IPv4 one
    /// as in iptables. Left out of the file while pristine, as `filter6`.
    #[serde(
        default = "Table::new_nat",
        skip_serializing_if = "crate::rules::model::absent"
    )]
    pub nat6: Table,
    /// The IPv6 mangle table (`ip6tables -t mangle`), separate from the
    /// IPv4 one as in ip6tables. Left out of the file while pristine, as
    /// `raw`.
    #[serde(
        default = "Table::new_mangle",
        skip_serializing_if = "crate::rules::model::absent"
    )]
    pub mangle6: Table,
    /// The IPv6 raw table (`ip6tables -t raw`), the IPv4 one's twin: run
    /// by the same code in the IPv6 program. Left out of the file while
    /// pristine, as `raw`.
    #[serde(
        default = "Table::new_raw",
        skip_serializing_if = "crate::rules::model::absent"
    )]
    pub raw6: Table,
}

impl Default for Ruleset {
    fn default() -> Self {
        Ruleset {
            filter: Table::new_filter(),
            nat: Table::new_nat(),
            filter6: Table::new_filter(),
            raw: Table::new_raw(),
            mangle: Table::new_mangle(),
            nat6: Table::new_nat(),
            mangle6: Table::new_mangle(),
            raw6: Table::new_raw(),
        }
    }
}

impl Ruleset {
    /// The rules of every chain of every table.
    pub fn rule_count(&self) -> usize {
        self.tables()
            .iter()
            .flat_map(|(_, t)| &t.chains)
            .map(|c| c.rules.len())
            .sum()
    }

    pub fn table(&self, name: TableName) -> &Table {
        match name {
            TableName::Filter => &self.filter,
            TableName::Nat => &self.nat,
            TableName::Raw => &self.raw,
            TableName::Mangle => &self.mangle,
        }
    }

    pub fn table_mut(&mut self, name: TableName) -> &mut Table {
        match name {
            TableName::Filter => &mut self.filter,
            TableName::Nat => &mut self.nat,
            TableName::Raw => &mut self.raw,
            TableName::Mangle => &mut self.mangle,
        }
    }

    /// The table `name` of the address family's ruleset. IPv6 has every
    /// table of IPv4.
    pub fn table_in(&self, family: Family, name: TableName) -> &Table {
        match (family, name) {
            (Family::V4, _) => self.table(name),
            (Family::V6, TableName::Filter) => &self.filter6,
            (Family::V6, TableName::Nat) => &self.nat6,
            (Family::V6, TableName::Mangle) => &self.mangle6,
            (Family::V6, TableName::Raw) => &self.raw6,
        }
    }

    pub fn table_in_mut(&mut self, family: Family, name: TableName) -> &mut Table {
        match (family, name) {
            (Family::V4, _) => self.table_mut(name),
            (Family::V6, TableName::Filter) => &mut self.filter6,
            (Family::V6, TableName::Nat) => &mut self.nat6,
            (Family::V6, TableName::Mangle) => &mut self.mangle6,
            (Family::V6, TableName::Raw) => &mut self.raw6,
        }
    }

    /// Every table of both families, in [`ALL_TABLES`] order.
    pub fn tables(&self) -> [(Family, &Table); TABLES] {
        ALL_TABLES.map(|(family, name)| (family, self.table_in(family, name)))
    }

    /// [`Ruleset::tables`], to change (the same order: a unit test checks
    /// it).
    pub fn tables_mut(&mut self) -> [(Family, &mut Table); TABLES] {
        [
            (Family::V4, &mut self.filter),
            (Family::V4, &mut self.nat),
            (Family::V6, &mut self.filter6),
            (Family::V4, &mut self.raw),
            (Family::V4, &mut self.mangle),
            (Family::V6, &mut self.nat6),
            (Family::V6, &mut self.mangle6),
            (Family::V6, &mut self.raw6),
        ]
    }
}

/// Every table of both families, in the order the counters of their
/// user-defined chains follow one another (`compile::user_chain_counters`)
/// and the journal numbers them: a new table goes at the end, so that no
/// other table's numbers move.
pub const ALL_TABLES: [(Family, TableName); 8] = [
    (Family::V4, TableName::Filter),
    (Family::V4, TableName::Nat),
    (Family::V6, TableName::Filter),
    (Family::V4, TableName::Raw),
    (Family::V4, TableName::Mangle),
    (Family::V6, TableName::Nat),
    (Family::V6, TableName::Mangle),
    (Family::V6, TableName::Raw),
];

/// How many tables a [`Ruleset`] has, of both families.
pub const TABLES: usize = ALL_TABLES.len();

/// The address family of a ruleset: `iptables` edits the IPv4 one,
/// `ip6tables` the IPv6 one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Family {
    #[default]
    V4,
    V6,
}

impl Family {
    /// The command's name, as messages and `-V` print it.
    pub fn command(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    /// The tables the family's ruleset has.
    pub fn tables(self) -> &'static [TableName] {
        match self {
            Family::V4 => &[
                TableName::Filter,
                TableName::Nat,
                TableName::Raw,
                TableName::Mangle,
            ],
            Family::V6 => &[
                TableName::Filter,
                TableName::Nat,
                TableName::Raw,
                TableName::Mangle,
            ],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TableName {
    Filter,
    Nat,
    Raw,
    Mangle,
}

impl TableName {
    pub fn as_str(self) -> &'static str {
        match self {
            TableName::Filter => "filter",
            TableName::Nat => "nat",
            TableName::Raw => "raw",
            TableName::Mangle => "mangle",
        }
    }

    /// The table's built-in chains, in iptables' order.
    pub fn builtin_chains(self) -> &'static [&'static str] {
        match self {
            TableName::Filter => &["INPUT", "FORWARD", "OUTPUT"],
            TableName::Nat => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
            TableName::Raw => &["PREROUTING", "OUTPUT"],
            TableName::Mangle => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub name: TableName,
    /// Built-in chains first, in iptables' order, then user-defined chains
    /// sorted by name (byte order), as iptables lists and saves them.
    pub chains: Vec<Chain>,
}

impl Table {
    pub fn new_filter() -> Self {
        Self::new(TableName::Filter)
    }

    pub fn new_nat() -> Self {
        Self::new(TableName::Nat)
    }

    pub fn new_raw() -> Self {
        Self::new(TableName::Raw)
    }

    pub fn new_mangle() -> Self {
        Self::new(TableName::Mangle)
    }

    /// The table with its built-in chains only, empty, policies ACCEPT.
    pub fn new(name: TableName) -> Self {
        Table {
            name,
            chains: name
                .builtin_chains()
                .iter()
                .map(|name| Chain {
                    name: name.to_string(),
                    policy: Some(Policy::Accept),
                    policy_counter: Counter::default(),
                    rules: Vec::new(),
                })
                .collect(),
        }
    }

    /// True while the table is as netbeast starts it: built-in chains
    /// only, no rules, ACCEPT policies, zero counters. iptables-save prints
    /// only the tables that are in use; netbeast leaves such a nat table
    /// out of its saves the same way.
    pub fn is_pristine(&self) -> bool {
        *self == Self::new(self.name)
    }

    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chain_index(name).map(|i| &self.chains[i])
    }

    pub fn chain_mut(&mut self, name: &str) -> Option<&mut Chain> {
        self.chain_index(name).map(|i| &mut self.chains[i])
    }

    /// Where chain `name` is in `chains`. The built-in chains come first
    /// (five at most), then the user-defined chains sorted by name, as
    /// [`Table::user_chain_position`] keeps them for `-N` and `-E` (and so
    /// every file netbeast writes): found by a binary search, so that a
    /// restore of kube-proxy's tens of thousands of chains does not scan
    /// them all for every rule.
    pub fn chain_index(&self, name: &str) -> Option<usize> {
        let users = self.first_user_chain();
        if let Some(i) = self.chains[..users].iter().position(|c| c.name == name) {
            return Some(i);
        }
        let found = self.chains[users..]
            .binary_search_by(|c| c.name.as_str().cmp(name))
            .ok()
            .map(|i| users + i);
        debug_assert!(
            found.is_some() || self.chains.iter().all(|c| c.name != name),
            "chain {name} is in table {:?} out of order: user-defined chains must be sorted",
            self.name
        );
        found
    }

    /// Where a new user-defined chain `name` goes: after the built-in
    /// chains, in name order.
    pub fn user_chain_position(&self, name: &str) -> usize {
        let users = self.first_user_chain();
        users + self.chains[users..].partition_point(|c| c.name.as_str() < name)
    }

    /// Adds new user-defined chains (none of them in the table yet, no
    /// name twice) where `-N` would put each, in one merge rather than an
    /// insert per chain: a restore declaring kube-proxy's 30,000 chains
    /// moved the chain list 30,000 times.
    pub fn add_user_chains(&mut self, mut new: Vec<Chain>) {
        if new.is_empty() {
            return;
        }
        new.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let users = self.first_user_chain();
        let old = self.chains.split_off(users);
        self.chains.reserve(old.len() + new.len());
        let (mut old, mut new) = (old.into_iter().peekable(), new.into_iter().peekable());
        loop {
            let take_old = match (old.peek(), new.peek()) {
                (Some(o), Some(n)) => o.name < n.name,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if take_old { old.next() } else { new.next() };
            self.chains.extend(next);
        }
    }

    fn first_user_chain(&self) -> usize {
        self.chains
            .iter()
            .position(|c| c.policy.is_none())
            .unwrap_or(self.chains.len())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    pub name: String,
    /// `Some` for built-in chains; user-defined chains have no policy.
    pub policy: Option<Policy>,
    /// Packets and bytes that fell through to the policy.
    pub policy_counter: Counter,
    #[serde(deserialize_with = "rules_with_room")]
    pub rules: Vec<Rule>,
}

/// A chain's rules, read into a vector as long as the encoding says (the
/// rule file's image does; at most `MAX_RULES_PER_CHAIN` reserved ahead):
/// serde's own reading reserves at most 1 MiB and doubles from there,
/// which at 100,000 rules of 296 bytes copied them five times over and
/// touched twice their memory, a third of reading the image.
fn rules_with_room<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Rule>, D::Error> {
    struct Rules;
    impl<'de> serde::de::Visitor<'de> for Rules {
        type Value = Vec<Rule>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of rules")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<Rule>, A::Error> {
            let room = seq.size_hint().unwrap_or(0);
            let mut rules = Vec::with_capacity(room.min(netbeast_common::MAX_RULES_PER_CHAIN));
            while let Some(rule) = seq.next_element()? {
                rules.push(rule);
            }
            Ok(rules)
        }
    }
    d.deserialize_seq(Rules)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Policy {
    Accept,
    Drop,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// `value` or `! value`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Negatable<T> {
    pub negated: bool,
    pub value: T,
}

impl<T> Negatable<T> {
    pub fn is(value: T) -> Self {
        Negatable {
            negated: false,
            value,
        }
    }
    pub fn not(value: T) -> Self {
        Negatable {
            negated: true,
            value,
        }
    }
}

/// An IPv4 prefix, always stored with its host bits cleared (as iptables
/// stores and prints it); as a rule's `-s`/`-d`, possibly under a
/// non-contiguous netmask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    /// The prefix length; with a non-contiguous `mask`, the length of its
    /// leading ones: the prefix that holds every address the mask takes.
    pub prefix_len: u8,
    /// A netmask that is not leading ones (`-s 10.0.12.0/255.0.255.0`,
    /// which iptables takes): `addr` (already masked) is compared under
    /// it. `None` for a prefix, which is what every field but a rule's
    /// `-s`/`-d` holds (`Ipv4Net::new`).
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub mask: Option<Ipv4Addr>,
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Self {
        let mask = prefix_mask(prefix_len);
        Ipv4Net {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix_len,
            mask: None,
        }
    }

    /// `addr` under `mask`, as iptables stores `-s addr/mask`: a prefix
    /// when the mask is leading ones, else the address masked and the
    /// mask kept.
    pub fn masked(addr: Ipv4Addr, mask: Ipv4Addr) -> Self {
        let bits = u32::from(mask);
        let leading = bits.leading_ones() as u8;
        if bits.leading_ones() + bits.trailing_zeros() >= 32 {
            return Ipv4Net::new(addr, leading);
        }
        Ipv4Net {
            addr: Ipv4Addr::from(u32::from(addr) & bits),
            prefix_len: leading,
            mask: Some(mask),
        }
    }

    /// The mask the address is compared under.
    pub fn netmask(&self) -> u32 {
        self.mask.map_or(prefix_mask(self.prefix_len), u32::from)
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.netmask() == u32::from(self.addr)
    }

    /// `addr/len`, or `addr/mask` for a non-contiguous mask: as iptables
    /// prints `-s`/`-d` (`-S`, save, `-L -n`).
    pub fn text(&self) -> String {
        match self.mask {
            Some(mask) => format!("{}/{mask}", self.addr),
            None => format!("{}/{}", self.addr, self.prefix_len),
        }
    }
    /// True when every address of `other` is in `self`.
    pub fn covers(&self, other: &Ipv4Net) -> bool {
        debug_assert!(
            self.mask.is_none() && other.mask.is_none(),
            "prefixes only: {self:?} {other:?}"
        );
        self.prefix_len <= other.prefix_len && self.contains(other.addr)
    }
}

/// An IPv6 prefix, stored with its host bits cleared (as ip6tables stores
/// and prints it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ipv6Net {
    pub addr: Ipv6Addr,
    pub prefix_len: u8,
}

impl Ipv6Net {
    pub fn new(addr: Ipv6Addr, prefix_len: u8) -> Self {
        Ipv6Net {
            addr: Ipv6Addr::from(u128::from(addr) & prefix_mask6(prefix_len)),
            prefix_len,
        }
    }

    pub fn contains(&self, addr: Ipv6Addr) -> bool {
        u128::from(addr) & prefix_mask6(self.prefix_len) == u128::from(self.addr)
    }

    /// The prefix as four stacked 32-bit prefixes, one per word of the
    /// address (most significant first): word `i` is `None` where the
    /// prefix does not reach it. Their conjunction is the prefix
    /// (docs/ARCHITECTURE.md, "IPv6").
    pub fn words(&self) -> [Option<Ipv4Net>; 4] {
        let bits = u128::from(self.addr);
        std::array::from_fn(|i| {
            let start = 32 * i as u8;
            (self.prefix_len > start).then(|| {
                let word = (bits >> (96 - 32 * i)) as u32;
                Ipv4Net::new(Ipv4Addr::from(word), (self.prefix_len - start).min(32))
            })
        })
    }
}

impl std::fmt::Display for Ipv6Net {
    /// As ip6tables -S prints it: `fd00::/64`, a host as `fd00::1/128`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

pub fn prefix_mask6(prefix_len: u8) -> u128 {
    if prefix_len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix_len))
    }
}

pub fn prefix_mask(prefix_len: u8) -> u32 {
    if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix_len))
    }
}

/// An inclusive port range; a single port is `first == last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

/// An interface name as iptables matches it: exact, or a prefix when written
/// with a trailing `+` (`eth+`; a lone `+` matches every interface).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceName {
    /// The name without the trailing `+`.
    pub name: String,
    pub wildcard: bool,
}

impl IfaceName {
    pub fn matches(&self, iface: &str) -> bool {
        if self.wildcard {
            iface.starts_with(&self.name)
        } else {
            iface == self.name
        }
    }
}

/// `--icmp-type`: a type with an optional code, or `any`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IcmpType {
    Any,
    Type { icmp_type: u8, code: Option<u8> },
}

/// Which ports a `-m multiport` match looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MultiportKind {
    Source,
    Destination,
    /// `--ports`: source or destination.
    Either,
}

/// One `-m` module with its options, or the implicit `tcp`/`udp`/`icmp`
/// match that `--dport` and friends load. Kept in the order written, as
/// iptables-save prints them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Match {
    /// `-m tcp` / `-m udp`: `--sport`, `--dport`, `--syn`, `--tcp-flags`.
    Ports(Ports),
    /// `-m icmp --icmp-type`.
    Icmp(Icmp),
    /// `-m multiport --sports/--dports/--ports`, up to 15 ports or ranges.
    Multiport(Multiport),
    /// `-m mac --mac-source`.
    MacSource(MacSource),
    /// `-m comment --comment`: no effect on matching.
    Comment(Comment),
    /// `-m state --state` or `-m conntrack --ctstate`: the packet's
    /// connection tracking state is one of `states`.
    ConnState(ConnState),
    /// `-m length`.
    Length(Length),
    /// `-m ttl`.
    Ttl(Ttl),
    /// `-m iprange`.
    IpRange(IpRange),
    /// `-m pkttype`.
    PktType(PktType),
    /// `-m addrtype`.
    AddrType(AddrType),
    /// `-m tos`.
    Tos(Tos),
    /// `-m dscp`.
    Dscp(Dscp),
    /// `-m statistic`: a guard (stateful), not a classifier field.
    Statistic(Statistic),
    /// `-m limit`: a guard (a token bucket per rule).
    Limit(Limit),
    /// `-m connlimit`: a guard (live connections per masked address).
    Connlimit(Connlimit),
    /// `-m hashlimit`: a guard (a token bucket per key of a named table).
    Hashlimit(Hashlimit),
    /// `-m recent`: a guard (per-name lists of addresses).
    Recent(Recent),
    /// `-m set`: a guard (membership in an ipset).
    Set(super::ext::set::SetMatch),
    /// `-m icmp6 --icmpv6-type` (ip6tables).
    Icmp6(Icmp6),
    /// `-m hl` (ip6tables).
    Hl(Hl),
    /// `-m frag` (ip6tables): a guard on the fragment header.
    Frag(Frag),
    /// `-m ipv6header` (ip6tables): a guard on the extension headers.
    Ipv6Header(Ipv6Header),
    /// `-m rt` (ip6tables): a guard on the routing header.
    Rt(Rt),
    /// `-m mark`: a guard on the packet's mark.
    Mark(super::ext::mark::Mark),
    /// `-m connmark`: a guard on the packet's connection's mark.
    Connmark(super::ext::connmark::Connmark),
}

impl Match {
    /// The match's extension module: everything netbeast knows about it.
    pub fn ext(&self) -> &dyn MatchExt {
        match self {
            Match::Ports(m) => m,
            Match::Icmp(m) => m,
            Match::Multiport(m) => m,
            Match::MacSource(m) => m,
            Match::Comment(m) => m,
            Match::ConnState(m) => m,
            Match::Length(m) => m,
            Match::Ttl(m) => m,
            Match::IpRange(m) => m,
            Match::PktType(m) => m,
            Match::AddrType(m) => m,
            Match::Tos(m) => m,
            Match::Dscp(m) => m,
            Match::Statistic(m) => m,
            Match::Limit(m) => m,
            Match::Connlimit(m) => m,
            Match::Hashlimit(m) => m,
            Match::Recent(m) => m,
            Match::Set(m) => m,
            Match::Icmp6(m) => m,
            Match::Hl(m) => m,
            Match::Frag(m) => m,
            Match::Ipv6Header(m) => m,
            Match::Rt(m) => m,
            Match::Mark(m) => m,
            Match::Connmark(m) => m,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectWith {
    IcmpPortUnreachable,
    IcmpHostUnreachable,
    IcmpNetUnreachable,
    IcmpProtoUnreachable,
    IcmpNetProhibited,
    IcmpHostProhibited,
    IcmpAdminProhibited,
    TcpReset,
    /// ip6tables' answers (libip6t_REJECT): ICMPv6 destination unreachable
    /// codes 0, 1, 3, 4, 5 and 6.
    Icmp6NoRoute,
    Icmp6AdmProhibited,
    Icmp6AddrUnreachable,
    Icmp6PortUnreachable,
    Icmp6PolicyFail,
    Icmp6RejectRoute,
}

impl RejectWith {
    /// One of ip6tables' ICMPv6 answers.
    pub fn is_icmp6(self) -> bool {
        matches!(
            self,
            RejectWith::Icmp6NoRoute
                | RejectWith::Icmp6AdmProhibited
                | RejectWith::Icmp6AddrUnreachable
                | RejectWith::Icmp6PortUnreachable
                | RejectWith::Icmp6PolicyFail
                | RejectWith::Icmp6RejectRoute
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RejectWith::Icmp6NoRoute => "icmp6-no-route",
            RejectWith::Icmp6AdmProhibited => "icmp6-adm-prohibited",
            RejectWith::Icmp6AddrUnreachable => "icmp6-addr-unreachable",
            RejectWith::Icmp6PortUnreachable => "icmp6-port-unreachable",
            RejectWith::Icmp6PolicyFail => "icmp6-policy-fail",
            RejectWith::Icmp6RejectRoute => "icmp6-reject-route",
            RejectWith::IcmpPortUnreachable => "icmp-port-unreachable",
            RejectWith::IcmpHostUnreachable => "icmp-host-unreachable",
            RejectWith::IcmpNetUnreachable => "icmp-net-unreachable",
            RejectWith::IcmpProtoUnreachable => "icmp-proto-unreachable",
            RejectWith::IcmpNetProhibited => "icmp-net-prohibited",
            RejectWith::IcmpHostProhibited => "icmp-host-prohibited",
            RejectWith::IcmpAdminProhibited => "icmp-admin-prohibited",
            RejectWith::TcpReset => "tcp-reset",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// No `-j`: the rule only counts, and the packet goes on.
    None,
    Accept,
    Drop,
    Reject(RejectWith),
    /// `-j CHAIN`: go on in the user-defined chain CHAIN; its end, or a
    /// RETURN there, comes back to the rule after this one.
    Jump(String),
    /// `-g CHAIN`: go on in CHAIN without coming back here; its end, or a
    /// RETURN there, returns to where this rule's chain would have returned
    /// (the rule after the jump that entered it, or the built-in chain's
    /// policy).
    Goto(String),
    /// `-j RETURN`: leave the current chain as if it had ended.
    Return,
    /// `-j DNAT --to-destination`: a new connection's destination becomes
    /// `to` (nat PREROUTING and OUTPUT).
    Dnat {
        to: NatTo,
        flags: NatFlags,
    },
    /// `-j SNAT --to-source`: a new connection's source becomes `to` (nat
    /// POSTROUTING).
    Snat {
        to: NatTo,
        flags: NatFlags,
    },
    /// `-j MASQUERADE [--to-ports]`: SNAT to the address of the interface
    /// the packet leaves through (nat POSTROUTING).
    Masquerade {
        ports: Option<PortRange>,
        flags: NatFlags,
    },
    /// `-j REDIRECT [--to-ports]`: DNAT to the host itself, the address of
    /// the interface the packet came in on (nat PREROUTING and OUTPUT).
    Redirect {
        ports: Option<PortRange>,
        flags: NatFlags,
    },
    /// `-j LOG`: the packet's headers go to the log, and it goes on with
    /// the next rule (`rules/target/log.rs`).
    Log(crate::rules::target::log::Log),
    /// `-j SYNPROXY`: SYNs answered with SYN cookies, ACKs with a valid
    /// one let through (`rules/target/synproxy.rs`).
    Synproxy(crate::rules::target::synproxy::Synproxy),
    /// `-j CT [--notrack]` or `-j NOTRACK` (raw table): the packet is left
    /// out of conntrack (`rules/target/ct.rs`).
    Ct(crate::rules::target::ct::Ct),
    /// `-j MARK`: the packet's mark changes, the search goes on
    /// (`rules/target/mark.rs`).
    Mark(crate::rules::target::mark::Mark),
    /// `-j CONNMARK`: the connection's mark (or the packet's, restored
    /// from it) changes, the search goes on (`rules/target/connmark.rs`).
    Connmark(crate::rules::target::connmark::Connmark),
    /// `-j SET`: the packet's key added to an ipset or deleted from it,
    /// the search goes on (`rules/target/set.rs`).
    Set(crate::rules::target::set::SetTarget),
    /// `-j TTL` (iptables, mangle): the packet's TTL is set, raised or
    /// lowered, the search goes on (`rules/target/ttl.rs`).
    Ttl(crate::rules::target::ttl::Ttl),
    /// `-j HL` (ip6tables, mangle): the same for the hop limit.
    Hl(crate::rules::target::ttl::Ttl),
    /// `-j TOS` (mangle, both families): the TOS byte (traffic class)
    /// changed under a mask (`rules/target/tos.rs`).
    Tos(crate::rules::target::tos::TosTarget),
    /// `-j DSCP` (mangle, both families): the DSCP (six bits of the TOS
    /// byte) set, the ECN bits kept (`rules/target/dscp.rs`).
    Dscp(u8),
    /// `-j TCPMSS` (any table, both families, `-p tcp`): the TCP MSS
    /// option lowered to a value or the path MTU's
    /// (`rules/target/tcpmss.rs`).
    Tcpmss(crate::rules::target::tcpmss::Tcpmss),
}

impl Target {
    /// The user-defined chain this target enters, if any.
    pub fn chain(&self) -> Option<&str> {
        match self {
            Target::Jump(chain) | Target::Goto(chain) => Some(chain),
            _ => None,
        }
    }

    /// The target's name as `-j` takes it and `-L` prints it.
    pub fn name(&self) -> &str {
        match self {
            Target::Jump(chain) | Target::Goto(chain) => chain,
            _ => self.builtin_name(),
        }
    }

    /// The name of a target that is not a chain ("" for none).
    pub fn builtin_name(&self) -> &'static str {
        self.module().map_or("", |m| m.name)
    }

    /// True for the nat table's translating targets.
    pub fn is_nat(&self) -> bool {
        self.module().is_some_and(|m| m.translates())
    }

    /// The built-in nat chains where the kernel accepts this target (and
    /// the user-defined chains only they reach); `None` for targets valid
    /// in every chain. Its module says.
    pub fn nat_chains(&self) -> Option<&'static [&'static str]> {
        self.module().and_then(|m| m.chains)
    }

    /// Why the kernel refuses it in the other chains.
    pub fn chain_reason(&self) -> &'static str {
        self.module().map_or("", |m| m.chain_reason)
    }
}

/// Where DNAT and SNAT translate to: `ip[-ip][:port[-port]]`, each part
/// optional (`--to-destination :8080` keeps the address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatTo {
    /// An inclusive address range; one address is `first == last`.
    pub addrs: Option<AddrRange>,
    pub ports: Option<PortRange>,
    /// `ports/base`: a shifted port map (iptables 1.8.9's
    /// NF_NAT_RANGE_PROTO_OFFSET): the base port as the kernel holds it —
    /// DNAT's (revision 2) as given, SNAT's always 0 (its revision 0 has
    /// no room for the base, so iptables prints `/0`). Only with `ports`.
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub offset: Option<u16>,
    /// An ip6tables translation's address range (`addrs` is then `None`),
    /// as `source6` sits beside `source`: every IPv4 path stays as it was.
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub addrs6: Option<AddrRange6>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrRange {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

/// An inclusive IPv6 address range; one address is `first == last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrRange6 {
    pub first: Ipv6Addr,
    pub last: Ipv6Addr,
}

/// The options of the nat targets that take no value. Which target takes
/// which is the parser's business (DNAT: random, persistent; SNAT: all
/// three; MASQUERADE: random, random-fully; REDIRECT: random).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatFlags {
    /// `--random`: the port is chosen at random rather than kept.
    pub random: bool,
    /// `--random-fully`: ports are fully randomized.
    pub random_fully: bool,
    /// `--persistent`: one client gets the same address of a range for
    /// every connection.
    pub persistent: bool,
}

// The rule file holds every rule: absent options are left out of it
// (a third of a typical rule's text), and read back as `None` (as
// netbeast has always read a missing option).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// `-p`: protocol number; `None` for `all` or no `-p`.
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub protocol: Option<Negatable<u8>>,
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub source: Option<Negatable<Ipv4Net>>,
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub destination: Option<Negatable<Ipv4Net>>,
    /// `-s`/`-d` of an IPv6 rule (`ip6tables`); an IPv4 rule has none and
    /// an IPv6 rule no `source`/`destination`. Kept apart so that every
    /// IPv4 path is what it was; absent from IPv4 rule files.
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub source6: Option<Negatable<Ipv6Net>>,
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub destination6: Option<Negatable<Ipv6Net>>,
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub in_iface: Option<Negatable<IfaceName>>,
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub out_iface: Option<Negatable<IfaceName>>,
    /// `-f` is `Some(true)`, `! -f` is `Some(false)`.
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub fragment: Option<bool>,
    pub matches: Vec<Match>,
    pub target: Target,
    /// Set by `-c` or carried over from the kernel counters.
    pub counter: Counter,
}

impl Rule {
    pub fn new(target: Target) -> Self {
        Rule {
            protocol: None,
            source: None,
            destination: None,
            source6: None,
            destination6: None,
            in_iface: None,
            out_iface: None,
            fragment: None,
            matches: Vec::new(),
            target,
            counter: Counter::default(),
        }
    }

    /// Two rules are the same rule (for `-D` by specification) when they
    /// match the same packets with the same target; counters don't count.
    pub fn same_spec(&self, other: &Rule) -> bool {
        // Field by field, without cloning: `-D` by specification compares
        // with every rule of the chain. The pattern names every field, so
        // a new one cannot be forgotten here.
        let Rule {
            protocol,
            source,
            destination,
            source6,
            destination6,
            in_iface,
            out_iface,
            fragment,
            matches,
            target,
            counter: _,
        } = self;
        *protocol == other.protocol
            && *source == other.source
            && *destination == other.destination
            && *source6 == other.source6
            && *destination6 == other.destination6
            && *in_iface == other.in_iface
            && *out_iface == other.out_iface
            && *fragment == other.fragment
            && *matches == other.matches
            && *target == other.target
    }
}

/// Which module a connection-state match was written with, so it prints
/// back the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateModule {
    /// `-m state --state`
    State,
    /// `-m conntrack --ctstate`
    Conntrack,
}

/// A set of connection tracking states, one bit per state (bit positions
/// are `netbeast_common::ct_state::*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtStates(pub u8);

impl CtStates {
    /// In the order iptables prints them.
    pub const NAMES: [(&'static str, u32); 5] = [
        ("INVALID", netbeast_common::ct_state::INVALID),
        ("NEW", netbeast_common::ct_state::NEW),
        ("RELATED", netbeast_common::ct_state::RELATED),
        ("ESTABLISHED", netbeast_common::ct_state::ESTABLISHED),
        ("UNTRACKED", netbeast_common::ct_state::UNTRACKED),
    ];

    /// `-m conntrack --ctstate SNAT,DNAT`: the connection's translations,
    /// which xt_conntrack tests as states (bits past the real ones).
    pub const SNAT: u8 = 1 << 5;
    pub const DNAT: u8 = 1 << 6;
    pub const NAT_NAMES: [(&'static str, u8); 2] = [("SNAT", Self::SNAT), ("DNAT", Self::DNAT)];

    pub fn contains(self, state: u32) -> bool {
        self.0 & (1 << state) != 0
    }

    pub fn with(self, state: u32) -> Self {
        CtStates(self.0 | (1 << state))
    }

    /// `RELATED,ESTABLISHED`, in iptables' order.
    pub fn text(self) -> String {
        Self::NAMES
            .iter()
            .filter(|(_, s)| self.contains(*s))
            .map(|(n, _)| *n)
            .chain(
                Self::NAT_NAMES
                    .iter()
                    .filter(|(_, b)| self.0 & b != 0)
                    .map(|(n, _)| *n),
            )
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net6(text: &str, len: u8) -> Ipv6Net {
        Ipv6Net::new(text.parse().unwrap(), len)
    }

    #[test]
    fn tables_mut_is_in_all_tables_order() {
        let mut ruleset = Ruleset::default();
        let ptrs: Vec<(Family, *const Table)> = ruleset
            .tables_mut()
            .into_iter()
            .map(|(f, t)| (f, t as *const Table))
            .collect();
        for (i, (family, name)) in ALL_TABLES.into_iter().enumerate() {
            assert_eq!(ptrs[i].0, family);
            assert!(
                std::ptr::eq(ptrs[i].1, ruleset.table_in(family, name)),
                "{family:?} {name:?}"
            );
        }
    }

    fn net4(a: [u8; 4], len: u8) -> Option<Ipv4Net> {
        Some(Ipv4Net::new(Ipv4Addr::from(a), len))
    }

    /// An IPv6 prefix as the classifier's four word prefixes: whole words
    /// as /32, the word it ends in with the rest of its length, none past.
    #[test]
    fn ipv6_prefixes_split_into_word_prefixes() {
        assert_eq!(net6("::", 0).words(), [None, None, None, None]);
        assert_eq!(
            net6("2001:db8::", 32).words(),
            [net4([0x20, 0x01, 0x0d, 0xb8], 32), None, None, None]
        );
        assert_eq!(
            net6("2001:db8:0:0:ab00::", 72).words(),
            [
                net4([0x20, 0x01, 0x0d, 0xb8], 32),
                net4([0, 0, 0, 0], 32),
                net4([0xab, 0, 0, 0], 8),
                None
            ]
        );
        assert_eq!(
            net6("fd00::1", 128).words(),
            [
                net4([0xfd, 0, 0, 0], 32),
                net4([0, 0, 0, 0], 32),
                net4([0, 0, 0, 0], 32),
                net4([0, 0, 0, 1], 32)
            ]
        );
        // Host bits are cleared, as ip6tables stores them.
        assert_eq!(net6("fd00::1", 64), net6("fd00::", 64));
        assert!(net6("fd00::", 64).contains("fd00::ffff".parse().unwrap()));
        assert!(!net6("fd00::", 64).contains("fd00:0:0:1::".parse().unwrap()));
        assert_eq!(net6("fd00::1", 128).to_string(), "fd00::1/128");
    }
}
