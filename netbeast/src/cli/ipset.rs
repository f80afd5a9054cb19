//! `ipset` (a multi-call link) and `netbeast ipset`: the ipset command of
//! ipset 7.17 over netbeast's sets, which `-m set` matches. Same syntax,
//! output, save format, messages and exit codes, so programs that drive
//! ipset (fail2ban's ipset actions, firewall scripts) run unchanged.
//!
//! A set's definition (type, family, options, the number of its members'
//! content) lives in `ipsets.json` beside the ruleset; its header (content
//! number, type, family, how many members) in `IPSET_SETS` and its members
//! in `IPSET_MEMBERS` / `IPSET_NETS`, where packets look them up. Adding
//! or removing a member is one map write plus the header's count: no file
//! is written.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;

use netbeast_common::{IpsetHeader, IpsetKey, IpsetValue, ipset as kinds};
use serde::{Deserialize, Serialize};

use super::conntrack::monotonic_now_ns;
use crate::loader::Dataplane;
use crate::loader::ipset::{MemberSlot, net_bits};
use crate::rules::ext::set::{MAX_NAME_LEN, name_number};
use crate::rules::model::{Match, Ruleset, Target};
use crate::state::Namespace;

/// The ipset release whose command line, texts and exit codes this follows.
pub const IPSET_VERSION: &str = "v7.17";
/// ipset's defaults for hash sets.
const DEFAULT_HASHSIZE: u32 = 1024;
const DEFAULT_MAXELEM: u32 = 65536;
/// ipset's smallest hash size (`IPSET_MIMINAL_HASHSIZE`).
const MIN_HASHSIZE: u32 = 64;
/// Bucket size ipset reports for hash types.
const BUCKETSIZE: u32 = 12;
/// The most elements one `add`/`del` of a range or CIDR may stand for
/// (ipset refuses larger expansions of hash:ip too).
pub const MAX_EXPANSION: u64 = 65536;
const NS: u64 = 1_000_000_000;
/// The longest timeout ipset takes (`IPSET_MAX_TIMEOUT`, in seconds).
const MAX_TIMEOUT: u64 = (u32::MAX / 1000) as u64;

/// ipset's exit codes: 1 for what the kernel refuses (and most syntax
/// errors), 2 for an unknown argument or command.
#[derive(Debug)]
pub struct IpsetError {
    pub message: String,
    /// `Try ipset help` follows (exit code 2).
    pub usage: bool,
}

fn fail(message: impl Into<String>) -> IpsetError {
    IpsetError {
        message: message.into(),
        usage: false,
    }
}

fn usage(message: impl Into<String>) -> IpsetError {
    IpsetError {
        message: message.into(),
        usage: true,
    }
}

impl From<anyhow::Error> for IpsetError {
    fn from(e: anyhow::Error) -> Self {
        fail(format!("netbeast: {}", super::chain_of(&e)))
    }
}

impl From<crate::loader::LoaderError> for IpsetError {
    fn from(e: crate::loader::LoaderError) -> Self {
        fail(format!("netbeast: {e}"))
    }
}

impl From<crate::state::StateError> for IpsetError {
    fn from(e: crate::state::StateError) -> Self {
        fail(format!("netbeast: {e}"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetType {
    HashIp,
    HashNet,
    HashIpPort,
    HashNetPort,
    BitmapPort,
}

impl SetType {
    fn parse(text: &str) -> Option<SetType> {
        Some(match text {
            "hash:ip" => SetType::HashIp,
            "hash:net" => SetType::HashNet,
            "hash:ip,port" => SetType::HashIpPort,
            "hash:net,port" => SetType::HashNetPort,
            "bitmap:port" => SetType::BitmapPort,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            SetType::HashIp => "hash:ip",
            SetType::HashNet => "hash:net",
            SetType::HashIpPort => "hash:ip,port",
            SetType::HashNetPort => "hash:net,port",
            SetType::BitmapPort => "bitmap:port",
        }
    }

    /// The kernel revision ipset 7.17 on Linux 6.x creates.
    fn revision(self) -> u32 {
        match self {
            SetType::HashIp => 6,
            SetType::HashNet => 7,
            SetType::HashIpPort => 7,
            SetType::HashNetPort => 8,
            SetType::BitmapPort => 3,
        }
    }

    fn code(self) -> u32 {
        match self {
            SetType::HashIp => kinds::HASH_IP,
            SetType::HashNet => kinds::HASH_NET,
            SetType::HashIpPort => kinds::HASH_IP_PORT,
            SetType::HashNetPort => kinds::HASH_NET_PORT,
            SetType::BitmapPort => kinds::BITMAP_PORT,
        }
    }

    fn dims(self) -> u32 {
        match self {
            SetType::HashIp | SetType::HashNet | SetType::BitmapPort => 1,
            SetType::HashIpPort | SetType::HashNetPort => 2,
        }
    }

    fn net(self) -> bool {
        matches!(self, SetType::HashNet | SetType::HashNetPort)
    }

    fn has_addr(self) -> bool {
        self != SetType::BitmapPort
    }

    fn has_port(self) -> bool {
        matches!(
            self,
            SetType::HashIpPort | SetType::HashNetPort | SetType::BitmapPort
        )
    }
}

/// One set's definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetDef {
    pub name: String,
    pub kind: SetType,
    /// 4 or 6 (bitmap:port: 0).
    pub family: u32,
    pub hashsize: u32,
    pub maxelem: u32,
    /// The default timeout of its members (seconds), when created with
    /// timeout support.
    pub timeout: Option<u32>,
    /// bitmap:port's range.
    pub range: Option<(u16, u16)>,
    pub initval: u32,
    /// The number of its members' content in the maps' keys.
    pub content: u32,
}

impl SetDef {
    fn header(&self, entries: u32) -> IpsetHeader {
        IpsetHeader {
            content: self.content,
            kind: self.kind.code(),
            family: self.family,
            dims: self.kind.dims(),
            entries,
            timeout: self.timeout.map_or(0, |t| kinds::HAS_TIMEOUT | t),
        }
    }

    fn v6(&self) -> bool {
        self.family == 6
    }

    /// The `Header:` line's text and `create`'s options.
    fn options(&self) -> String {
        let mut out = String::new();
        if self.kind == SetType::BitmapPort {
            let (a, b) = self.range.unwrap_or((0, 0));
            let _ = write!(out, "range {a}-{b}");
            if let Some(t) = self.timeout {
                let _ = write!(out, " timeout {t}");
            }
            return out;
        }
        let _ = write!(
            out,
            "family {} hashsize {} maxelem {}",
            if self.v6() { "inet6" } else { "inet" },
            self.hashsize,
            self.maxelem
        );
        if let Some(t) = self.timeout {
            let _ = write!(out, " timeout {t}");
        }
        let _ = write!(
            out,
            " bucketsize {BUCKETSIZE} initval {:#010x}",
            self.initval
        );
        out
    }
}

/// Every set of a namespace, in index order (a destroyed set's index is
/// taken by the next one created, as in the kernel).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Registry {
    pub sets: Vec<Option<SetDef>>,
    pub next_content: u32,
}

impl Registry {
    pub fn load(ns: &Namespace) -> Result<Registry, IpsetError> {
        match ns.read_ipsets()? {
            None => Ok(Registry::default()),
            Some(text) => serde_json::from_slice(&text).map_err(|e| {
                fail(format!(
                    "netbeast: the ipset definitions in {} are damaged ({e}); remove the file \
                     to start without sets",
                    ns.state_dir.join("ipsets.json").display()
                ))
            }),
        }
    }

    fn store(&self, ns: &Namespace) -> Result<(), IpsetError> {
        let text = serde_json::to_vec(self).expect("a registry always serializes");
        Ok(ns.write_ipsets(&text)?)
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.sets
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.name == name))
    }

    fn get(&self, name: &str) -> Result<(usize, SetDef), IpsetError> {
        self.find(name)
            .map(|i| (i, self.sets[i].clone().expect("found")))
            .ok_or_else(|| fail("The set with the given name does not exist"))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sets.iter().flatten().map(|s| s.name.as_str())
    }
}

/// How many rules of the ruleset name the set `name` (`-m set`, `-j
/// SET`): ipset's `References`.
fn references(ruleset: &Ruleset, name: &str) -> usize {
    uses(ruleset)
        .into_iter()
        .filter(|(_, n, _)| n == name)
        .count()
}

/// Every set a rule of the ruleset names, with the option that names it
/// (`--match-set`, `--add-set`, `--del-set`) and whether the rule is an
/// ip6tables one.
fn uses(ruleset: &Ruleset) -> Vec<(&'static str, String, bool)> {
    let mut out = Vec::new();
    for (t, v6) in [
        (&ruleset.filter, false),
        (&ruleset.nat, false),
        (&ruleset.raw, false),
        (&ruleset.mangle, false),
        (&ruleset.filter6, true),
        (&ruleset.raw6, true),
    ] {
        for r in t.chains.iter().flat_map(|c| c.rules.iter()) {
            for m in &r.matches {
                if let Match::Set(s) = m {
                    out.push(("--match-set", s.name.clone(), v6));
                }
            }
            if let Target::Set(s) = &r.target {
                if let Some(add) = &s.add {
                    out.push(("--add-set", add.name.clone(), v6));
                }
                if let Some(del) = &s.del {
                    out.push(("--del-set", del.name.clone(), v6));
                }
            }
        }
    }
    out
}

/// The sets a ruleset's rules name (`-m set`, `-j SET`), each with
/// whether an ip6tables rule names it.
pub fn named_sets(ruleset: &Ruleset) -> BTreeSet<(String, bool)> {
    uses(ruleset)
        .into_iter()
        .map(|(_, name, v6)| (name, v6))
        .collect()
}

/// What a ruleset's set rules cannot have, each as (option, set, reason):
/// as xt_set's checkentry, a set that does not exist or one of the other
/// family (a bitmap:port set has none); and, for `-j SET`, a set type
/// netbeast's kernel side cannot write yet. `None` when every rule is
/// fine.
pub fn refused_sets(
    ns: &Namespace,
    ruleset: &Ruleset,
) -> anyhow::Result<Option<(&'static str, String, String)>> {
    let named: BTreeSet<_> = uses(ruleset).into_iter().collect();
    if named.is_empty() {
        return Ok(None);
    }
    let registry = Registry::load(ns).map_err(|e| anyhow::anyhow!(e.message))?;
    for (option, name, v6) in named {
        let Some(i) = registry.find(&name) else {
            let reason = format!(
                "Set {name} doesn't exist; create it first with `ipset create {name} TYPE`"
            );
            return Ok(Some((option, name, reason)));
        };
        let def = registry.sets[i].as_ref().expect("found");
        let family = def.family;
        if family != 0 && (family == 6) != v6 {
            let reason = format!(
                "The protocol family of set {name} is {}, which is not applicable.",
                if family == 6 { "IPv6" } else { "IPv4" }
            );
            return Ok(Some((option, name, reason)));
        }
        // The kernel side writes exact members only: a packet's address
        // into a hash:net set would need the set's own prefix lengths,
        // its port into a bitmap:port the set's range, neither in the
        // set's header.
        if option != "--match-set" && !matches!(def.kind, SetType::HashIp | SetType::HashIpPort) {
            let reason = format!(
                "-j SET into a set of type {} is not supported yet; netbeast's -j SET writes \
                 hash:ip and hash:ip,port sets",
                def.kind.name()
            );
            return Ok(Some((option, name, reason)));
        }
    }
    Ok(None)
}

// ---- elements ----

/// One element as the user writes it, expanded: an address prefix and/or
/// a protocol and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Element {
    addr: Option<(IpAddr, u8)>,
    port: Option<(u8, u16)>,
}

fn proto_number(name: &str) -> Option<u8> {
    match name {
        "tcp" => Some(6),
        "udp" => Some(17),
        "sctp" => Some(132),
        "udplite" => Some(136),
        "icmp" => Some(1),
        "icmpv6" | "ipv6-icmp" => Some(58),
        _ => {
            if let Ok(n) = name.parse::<u8>() {
                return Some(n);
            }
            let text = std::fs::read_to_string("/etc/protocols").ok()?;
            text.lines()
                .map(|l| l.split('#').next().unwrap_or(""))
                .find_map(|l| {
                    let mut w = l.split_whitespace();
                    let first = w.next()?;
                    let number: u8 = w.next()?.parse().ok()?;
                    (first == name || w.any(|alias| alias == name)).then_some(number)
                })
        }
    }
}

fn proto_name(n: u8) -> String {
    match n {
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        _ => std::fs::read_to_string("/etc/protocols")
            .ok()
            .and_then(|text| {
                text.lines()
                    .map(|l| l.split('#').next().unwrap_or(""))
                    .find_map(|l| {
                        let mut w = l.split_whitespace();
                        let first = w.next()?;
                        (w.next()?.parse::<u8>().ok()? == n).then(|| first.to_string())
                    })
            })
            .unwrap_or_else(|| n.to_string()),
    }
}

/// ICMP types and codes by the names ipset prints and takes.
const ICMP_NAMES: &[(&str, u8, u8)] = &[
    ("echo-reply", 0, 0),
    ("network-unreachable", 3, 0),
    ("host-unreachable", 3, 1),
    ("protocol-unreachable", 3, 2),
    ("port-unreachable", 3, 3),
    ("fragmentation-needed", 3, 4),
    ("source-route-failed", 3, 5),
    ("network-unknown", 3, 6),
    ("host-unknown", 3, 7),
    ("network-prohibited", 3, 9),
    ("host-prohibited", 3, 10),
    ("TOS-network-unreachable", 3, 11),
    ("TOS-host-unreachable", 3, 12),
    ("communication-prohibited", 3, 13),
    ("host-precedence-violation", 3, 14),
    ("precedence-cutoff", 3, 15),
    ("source-quench", 4, 0),
    ("network-redirect", 5, 0),
    ("host-redirect", 5, 1),
    ("TOS-network-redirect", 5, 2),
    ("TOS-host-redirect", 5, 3),
    ("echo-request", 8, 0),
    ("router-advertisement", 9, 0),
    ("router-solicitation", 10, 0),
    ("ttl-zero-during-transit", 11, 0),
    ("ttl-zero-during-reassembly", 11, 1),
    ("ip-header-bad", 12, 0),
    ("required-option-missing", 12, 1),
    ("timestamp-request", 13, 0),
    ("timestamp-reply", 14, 0),
    ("address-mask-request", 17, 0),
    ("address-mask-reply", 18, 0),
];

fn parse_addr(text: &str, v6: bool) -> Result<IpAddr, IpsetError> {
    let family = if v6 { "IPv6" } else { "IPv4" };
    let bad = || {
        fail(format!(
            "Syntax error: cannot parse {text}: resolving to {family} address failed"
        ))
    };
    if v6 {
        text.parse::<Ipv6Addr>().map(IpAddr::V6).map_err(|_| bad())
    } else {
        text.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| bad())
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

/// The prefixes that cover `first..=last` exactly (IPv4).
fn range_prefixes(first: u32, last: u32) -> Vec<(u32, u8)> {
    let mut out = Vec::new();
    let mut at = u64::from(first);
    let end = u64::from(last);
    while at <= end {
        let mut len = 32u8;
        while len > 0 {
            let size = 1u64 << (33 - u32::from(len));
            if at % size != 0 || at + size - 1 > end {
                break;
            }
            len -= 1;
        }
        out.push((at as u32, len));
        at += 1u64 << (32 - u32::from(len));
    }
    out
}

/// The address part of an element: every address (hash:ip) or prefix
/// (hash:net) it stands for.
fn parse_addr_part(text: &str, def: &SetDef) -> Result<Vec<(IpAddr, u8)>, IpsetError> {
    let v6 = def.v6();
    let full: u8 = if v6 { 128 } else { 32 };
    let cidr_error = || fail("The value of the CIDR parameter of the IP address is invalid");
    if let Some((a, b)) = text.split_once('-')
        && !v6
    {
        let (a, b) = (parse_addr(a, false)?, parse_addr(b, false)?);
        let (IpAddr::V4(a), IpAddr::V4(b)) = (a, b) else {
            unreachable!("parsed as IPv4")
        };
        let (a, b) = (u32::from(a), u32::from(b));
        if a > b {
            return Err(fail(
                "Syntax error: range start cannot be greater than range end",
            ));
        }
        if def.kind.net() {
            return Ok(range_prefixes(a, b)
                .into_iter()
                .map(|(p, l)| (IpAddr::V4(Ipv4Addr::from(p)), l))
                .collect());
        }
        if u64::from(b - a) + 1 > MAX_EXPANSION {
            return Err(fail(format!(
                "netbeast: the range {text} stands for more than {MAX_EXPANSION} addresses \
                 (MAX_EXPANSION); use a hash:net set for networks"
            )));
        }
        return Ok((a..=b)
            .map(|x| (IpAddr::V4(Ipv4Addr::from(x)), 32))
            .collect());
    }
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => {
            let len: u8 = l.parse().map_err(|_| cidr_error())?;
            (parse_addr(a, v6)?, len)
        }
        None => (parse_addr(text, v6)?, full),
    };
    if len == 0 || len > full {
        return Err(cidr_error());
    }
    if def.kind.net() {
        return Ok(vec![(mask(addr, len), len)]);
    }
    if v6 && len != full {
        return Err(cidr_error());
    }
    let count = 1u64 << (u32::from(full - len)).min(63);
    if count > MAX_EXPANSION {
        return Err(fail(format!(
            "netbeast: {text} stands for more than {MAX_EXPANSION} addresses (MAX_EXPANSION); \
             use a hash:net set for networks"
        )));
    }
    let IpAddr::V4(base) = mask(addr, len) else {
        return Ok(vec![(addr, full)]);
    };
    Ok((0..count as u32)
        .map(|i| (IpAddr::V4(Ipv4Addr::from(u32::from(base) + i)), 32))
        .collect())
}

/// `[proto:]port[-port]` (or `icmp:TYPE/CODE`, `icmp:NAME`): every
/// (protocol, port) it stands for.
fn parse_port_part(text: &str, def: &SetDef) -> Result<Vec<(u8, u16)>, IpsetError> {
    let (proto, rest) = match text.split_once(':') {
        Some((p, r)) => (
            proto_number(p)
                .ok_or_else(|| fail(format!("Syntax error: cannot parse '{p}' as a protocol")))?,
            r,
        ),
        None => (6, text),
    };
    let icmp = if def.v6() { 58 } else { 1 };
    if proto == icmp && def.kind != SetType::BitmapPort {
        let (t, c) = match ICMP_NAMES.iter().find(|(n, _, _)| *n == rest) {
            Some(&(_, t, c)) if !def.v6() => (t, c),
            _ => {
                let parsed = rest
                    .split_once('/')
                    .and_then(|(t, c)| Some((t.parse::<u8>().ok()?, c.parse::<u8>().ok()?)));
                parsed.ok_or_else(|| {
                    fail(format!(
                        "Syntax error: Cannot parse {rest} as ICMP type/code"
                    ))
                })?
            }
        };
        return Ok(vec![(proto, u16::from(t) << 8 | u16::from(c))]);
    }
    let port = |p: &str| -> Result<u16, IpsetError> {
        p.parse::<u16>()
            .map_err(|_| fail(format!("Syntax error: cannot parse '{p}' as a port")))
    };
    let (first, last) = match rest.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(rest)?;
            (p, p)
        }
    };
    let (first, last) = (first.min(last), first.max(last));
    if !matches!(proto, 6 | 17 | 132 | 136) && def.kind != SetType::BitmapPort {
        if first != 0 || last != 0 {
            return Err(fail(format!(
                "Syntax error: Protocol {} can be used with pseudo port value 0 only.",
                proto_name(proto)
            )));
        }
        return Ok(vec![(proto, 0)]);
    }
    // bitmap:port keeps no protocol.
    let proto = if def.kind == SetType::BitmapPort {
        0
    } else {
        proto
    };
    Ok((first..=last).map(|p| (proto, p)).collect())
}

/// An element's text, expanded into the elements it stands for.
fn parse_element(text: &str, def: &SetDef) -> Result<Vec<Element>, IpsetError> {
    if def.kind == SetType::BitmapPort {
        return Ok(parse_port_part(text, def)?
            .into_iter()
            .map(|p| Element {
                addr: None,
                port: Some(p),
            })
            .collect());
    }
    if def.kind.has_port() {
        let Some((a, p)) = text.split_once(',') else {
            return Err(fail(format!(
                "Syntax error: Second element is missing from {text}."
            )));
        };
        let addrs = parse_addr_part(a, def)?;
        let ports = parse_port_part(p, def)?;
        if addrs.len() as u64 * ports.len() as u64 > MAX_EXPANSION {
            return Err(fail(format!(
                "netbeast: {text} stands for more than {MAX_EXPANSION} elements (MAX_EXPANSION)"
            )));
        }
        let mut out = Vec::new();
        for &addr in &addrs {
            for &port in &ports {
                out.push(Element {
                    addr: Some(addr),
                    port: Some(port),
                });
            }
        }
        return Ok(out);
    }
    Ok(parse_addr_part(text, def)?
        .into_iter()
        .map(|addr| Element {
            addr: Some(addr),
            port: None,
        })
        .collect())
}

fn key_of(e: &Element, def: &SetDef) -> (MemberSlot, IpsetKey) {
    let mut key = IpsetKey {
        set: def.content.to_be(),
        ..IpsetKey::default()
    };
    let mut len = 0;
    if let Some((addr, l)) = e.addr {
        len = l;
        match addr {
            IpAddr::V4(a) => key.addr[0] = u32::from_ne_bytes(a.octets()),
            IpAddr::V6(a) => {
                let o = a.octets();
                for (i, w) in key.addr.iter_mut().enumerate() {
                    *w = u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]);
                }
            }
        }
    }
    if let Some((proto, port)) = e.port {
        key.protocol = proto;
        key.port = port.to_be();
    }
    let slot = if def.kind.net() {
        MemberSlot::Net(net_bits(len))
    } else {
        MemberSlot::Exact
    };
    (slot, key)
}

fn element_of(slot: MemberSlot, key: &IpsetKey, def: &SetDef) -> Element {
    let addr = def.kind.has_addr().then(|| {
        let addr = if def.v6() {
            let mut o = [0u8; 16];
            for (i, w) in key.addr.iter().enumerate() {
                o[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(o))
        } else {
            IpAddr::V4(Ipv4Addr::from(key.addr[0].to_ne_bytes()))
        };
        let len = match slot {
            MemberSlot::Net(bits) => (bits - kinds::NET_KEY_PREFIX_BITS) as u8,
            MemberSlot::Exact => {
                if def.v6() {
                    128
                } else {
                    32
                }
            }
        };
        (addr, len)
    });
    let port = def
        .kind
        .has_port()
        .then(|| (key.protocol, u16::from_be(key.port)));
    Element { addr, port }
}

fn element_text(e: &Element, def: &SetDef) -> String {
    let mut out = String::new();
    if let Some((addr, len)) = e.addr {
        let _ = write!(out, "{addr}");
        let full = if def.v6() { 128 } else { 32 };
        if def.kind.net() && len != full {
            let _ = write!(out, "/{len}");
        }
    }
    if let Some((proto, port)) = e.port {
        if def.kind == SetType::BitmapPort {
            let _ = write!(out, "{port}");
            return out;
        }
        out.push(',');
        let icmp = if def.v6() { 58 } else { 1 };
        if proto == icmp {
            let (t, c) = ((port >> 8) as u8, port as u8);
            match ICMP_NAMES.iter().find(|(_, a, b)| *a == t && *b == c) {
                Some((name, _, _)) if !def.v6() => {
                    let _ = write!(out, "icmp:{name}");
                }
                _ => {
                    let _ = write!(out, "{}:{t}/{c}", proto_name(proto));
                }
            }
        } else {
            let _ = write!(out, "{}:{port}", proto_name(proto));
        }
    }
    out
}

// ---- the command line ----

/// Global flags, wherever they appear (ipset takes them before or after
/// the command).
#[derive(Debug, Default)]
struct Flags {
    exist: bool,
    quiet: bool,
    name_only: bool,
    terse: bool,
    save_output: bool,
    file: Option<String>,
}

/// One session: the namespace, its sets and its maps, opened once for a
/// command or a whole restore.
struct Session {
    ns: Namespace,
    registry: Registry,
    dp: Dataplane,
    ruleset: Ruleset,
    dirty: bool,
}

impl Session {
    fn open(ns: Namespace) -> Result<Session, IpsetError> {
        if !ns.has_dataplane() {
            return Err(fail(
                "netbeast: no data plane in this network namespace: run `netbeast attach \
                 IFACE` first (ipsets live in its maps)",
            ));
        }
        let dp = Dataplane::open_pinned(&ns.maps_dir())?;
        let registry = Registry::load(&ns)?;
        let ruleset = ns.load_ruleset()?;
        Ok(Session {
            ns,
            registry,
            dp,
            ruleset,
            dirty: false,
        })
    }

    fn header(&self, def: &SetDef) -> Result<IpsetHeader, IpsetError> {
        Ok(self
            .dp
            .ipset_header_of(name_number(&def.name))?
            .unwrap_or_else(|| def.header(0)))
    }

    fn set_count(&mut self, def: &SetDef, entries: u32) -> Result<(), IpsetError> {
        self.dp
            .ipset_header(name_number(&def.name), Some(def.header(entries)))?;
        Ok(())
    }

    /// The set's members, expired ones removed (and counted off).
    fn members(&mut self, def: &SetDef) -> Result<Vec<(Element, IpsetValue)>, IpsetError> {
        let now = monotonic_now_ns();
        let mut out = Vec::new();
        let mut expired = Vec::new();
        for (slot, key, v) in self.dp.ipset_members(def.kind.net(), def.content.to_be())? {
            if v.expires != 0 && v.expires <= now {
                expired.push((slot, key));
            } else {
                out.push((element_of(slot, &key, def), v));
            }
        }
        if !expired.is_empty() {
            for (slot, key) in &expired {
                self.dp.ipset_remove(*slot, *key)?;
            }
            let h = self.header(def)?;
            self.set_count(def, h.entries.saturating_sub(expired.len() as u32))?;
        }
        out.sort_by_key(|a| a.0);
        Ok(out)
    }

    fn run(&mut self, args: &[String], flags: &Flags) -> Result<String, IpsetError> {
        let Some(command) = args.first() else {
            return Err(usage("No command specified."));
        };
        let rest = &args[1..];
        let arg = |i: usize, what: &str| -> Result<&String, IpsetError> {
            rest.get(i)
                .ok_or_else(|| usage(format!("Syntax error: {what} is missing")))
        };
        match command.as_str() {
            "create" | "n" | "-N" | "-create" => {
                let name = arg(0, "Set name")?;
                let kind = arg(1, "Set type")?;
                self.create(name, kind, &rest[2..], flags)
            }
            "add" | "a" | "-A" | "-add" | "del" | "d" | "-D" | "-del" | "test" | "t" | "-T"
            | "-test" => {
                let name = arg(0, "Set name")?;
                let elem = arg(1, "Element")?;
                let op = command
                    .trim_start_matches('-')
                    .chars()
                    .next()
                    .unwrap_or('a');
                let op = match op {
                    'A' => 'a',
                    'D' => 'd',
                    'T' => 't',
                    c => c,
                };
                self.element(op, name, elem, &rest[2..], flags)
            }
            "list" | "l" | "-L" | "-list" | "save" | "s" | "-S" | "-save" => {
                let save =
                    matches!(command.as_str(), "save" | "s" | "-S" | "-save") || flags.save_output;
                self.list(rest.first().map(String::as_str), save, flags)
            }
            "flush" | "f" | "-F" | "-flush" => self.flush(rest.first().map(String::as_str)),
            "destroy" | "x" | "-X" | "-destroy" => self.destroy(rest.first().map(String::as_str)),
            "swap" | "w" | "-W" | "-swap" => {
                let a = arg(0, "Set name")?;
                let b = arg(1, "Second set name")?;
                self.swap(a, b)
            }
            "rename" | "e" | "-E" | "-rename" => {
                let a = arg(0, "Set name")?;
                let b = arg(1, "New set name")?;
                self.rename(a, b)
            }
            other => Err(usage(format!(
                "No command specified: unknown argument {other}"
            ))),
        }
    }

    fn create(
        &mut self,
        name: &str,
        kind: &str,
        opts: &[String],
        flags: &Flags,
    ) -> Result<String, IpsetError> {
        if name.len() > MAX_NAME_LEN {
            return Err(fail(format!(
                "Syntax error: setname '{name}' is longer than {MAX_NAME_LEN} characters"
            )));
        }
        let kind = SetType::parse(kind)
            .ok_or_else(|| fail(format!("Syntax error: typename '{kind}' is unknown")))?;
        let mut def = SetDef {
            name: name.to_string(),
            kind,
            family: if kind == SetType::BitmapPort { 0 } else { 4 },
            hashsize: DEFAULT_HASHSIZE,
            maxelem: DEFAULT_MAXELEM,
            timeout: None,
            range: None,
            initval: initval(),
            content: 0,
        };
        let mut i = 0;
        while i < opts.len() {
            let opt = opts[i].as_str();
            let hash_only = matches!(
                opt,
                "family" | "hashsize" | "maxelem" | "bucketsize" | "initval" | "-4" | "-6"
            );
            if hash_only && kind == SetType::BitmapPort {
                return Err(usage(format!("Unknown argument: `{opt}'")));
            }
            match opt {
                "-4" => def.family = 4,
                "-6" => def.family = 6,
                "family" | "hashsize" | "maxelem" | "timeout" | "range" | "bucketsize"
                | "initval" => {
                    let Some(value) = opts.get(i + 1) else {
                        return Err(usage(format!(
                            "Syntax error: option `{opt}' requires an argument"
                        )));
                    };
                    i += 1;
                    let number = |v: &str| -> Result<u32, IpsetError> {
                        parse_number(v).ok_or_else(|| {
                            fail(format!("Syntax error: '{v}' is invalid as number"))
                        })
                    };
                    match opt {
                        "family" => {
                            def.family = match value.as_str() {
                                "inet" | "ipv4" => 4,
                                "inet6" | "ipv6" => 6,
                                _ => {
                                    return Err(fail(format!(
                                        "Syntax error: unknown family {value}"
                                    )));
                                }
                            }
                        }
                        "hashsize" => {
                            let n = number(value)?.max(MIN_HASHSIZE);
                            def.hashsize = n.checked_next_power_of_two().unwrap_or(1 << 31);
                        }
                        "maxelem" => def.maxelem = number(value)?,
                        "timeout" => {
                            let t = number(value)?;
                            if u64::from(t) > MAX_TIMEOUT {
                                return Err(fail(format!(
                                    "Syntax error: '{value}' is out of range 0-{MAX_TIMEOUT}"
                                )));
                            }
                            def.timeout = Some(t)
                        }
                        "range" => {
                            if kind != SetType::BitmapPort {
                                return Err(usage("Unknown argument: `range'"));
                            }
                            let parsed = value.split_once('-').and_then(|(a, b)| {
                                Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?))
                            });
                            let Some((a, b)) = parsed else {
                                return Err(fail(format!(
                                    "Syntax error: cannot parse '{value}' as a port range"
                                )));
                            };
                            def.range = Some((a.min(b), a.max(b)));
                        }
                        // Taken from saves, as ipset does; the bucket size
                        // is fixed here.
                        "initval" => def.initval = number(value)?,
                        _ => {}
                    }
                }
                "counters" | "comment" | "skbinfo" | "forceadd" | "netmask" | "markmask" => {
                    return Err(fail(format!(
                        "netbeast: the set option {opt} is not supported yet; netbeast's \
                         ipset takes family, hashsize, maxelem, timeout and range"
                    )));
                }
                _ => return Err(usage(format!("Unknown argument: `{opt}'"))),
            }
            i += 1;
        }
        if kind == SetType::BitmapPort && def.range.is_none() {
            return Err(usage("Mandatory option `range' is missing"));
        }
        if let Some(i) = self.registry.find(name) {
            // -exist: the same definition is no error.
            let old = self.registry.sets[i].as_ref().expect("found");
            let same = old.kind == def.kind
                && old.family == def.family
                && old.timeout == def.timeout
                && old.range == def.range
                && old.maxelem == def.maxelem;
            if flags.exist && same {
                return Ok(String::new());
            }
            return Err(fail(
                "Set cannot be created: set with the same name already exists",
            ));
        }
        let number = name_number(name);
        if let Some(other) = self.registry.names().find(|n| name_number(n) == number) {
            return Err(fail(format!(
                "netbeast: the set names {name} and {other} have the same number (FNV-1a \
                 hash); choose another name"
            )));
        }
        if self.registry.names().count() >= kinds::SETS as usize {
            return Err(fail(format!(
                "netbeast: a namespace holds at most {} sets (ipset::SETS in netbeast-common)",
                kinds::SETS
            )));
        }
        self.registry.next_content = self.registry.next_content.wrapping_add(1);
        def.content = self.registry.next_content;
        self.dp.ipset_header(number, Some(def.header(0)))?;
        match self.registry.sets.iter().position(Option::is_none) {
            Some(i) => self.registry.sets[i] = Some(def),
            None => self.registry.sets.push(Some(def)),
        }
        self.dirty = true;
        Ok(String::new())
    }

    fn element(
        &mut self,
        op: char,
        name: &str,
        text: &str,
        opts: &[String],
        flags: &Flags,
    ) -> Result<String, IpsetError> {
        let (_, def) = self.registry.get(name)?;
        let mut timeout = def.timeout;
        let mut i = 0;
        while i < opts.len() {
            match opts[i].as_str() {
                "timeout" if op == 'a' => {
                    let v = opts.get(i + 1).ok_or_else(|| {
                        usage("Syntax error: option `timeout' requires an argument")
                    })?;
                    if def.timeout.is_none() {
                        return Err(fail(
                            "Timeout cannot be used: set was created without timeout support",
                        ));
                    }
                    let t = parse_number(v)
                        .ok_or_else(|| fail(format!("Syntax error: '{v}' is invalid as number")))?;
                    timeout = Some(t);
                    i += 2;
                }
                other => return Err(usage(format!("Unknown argument: `{other}'"))),
            }
        }
        let elements = parse_element(text, &def)?;
        if def.kind == SetType::BitmapPort {
            let (a, b) = def.range.expect("bitmap:port has a range");
            if elements
                .iter()
                .any(|e| e.port.is_some_and(|(_, p)| p < a || p > b))
            {
                return Err(fail("Element is out of the range of the set"));
            }
        }
        let now = monotonic_now_ns();
        match op {
            'a' => {
                let expires = match timeout {
                    Some(t) if t > 0 => now + u64::from(t) * NS,
                    _ => 0,
                };
                let mut entries = self.header(&def)?.entries;
                for e in &elements {
                    let (slot, key) = key_of(e, &def);
                    let value = self.dp.ipset_get(slot, key)?;
                    let present = value.is_some();
                    let live = value.filter(|v| v.expires == 0 || v.expires > now);
                    if live.is_some() && !flags.exist && elements.len() == 1 {
                        return Err(fail(
                            "Element cannot be added to the set: it's already added",
                        ));
                    }
                    if !present {
                        if entries >= def.maxelem {
                            return Err(fail(if def.kind == SetType::BitmapPort {
                                "Element cannot be added to the set: set is full"
                            } else {
                                "Hash is full, cannot add more elements"
                            }));
                        }
                        entries += 1;
                    }
                    // A member there already keeps its timeout unless
                    // -exist rewrites it, as the kernel does.
                    if live.is_none() || flags.exist {
                        self.dp.ipset_put(slot, key, IpsetValue { expires })?;
                    }
                }
                self.set_count(&def, entries)?;
                Ok(String::new())
            }
            'd' => {
                let mut entries = self.header(&def)?.entries;
                for e in &elements {
                    let (slot, key) = key_of(e, &def);
                    let value = self.dp.ipset_get(slot, key)?;
                    let live = value.is_some_and(|v| v.expires == 0 || v.expires > now);
                    if value.is_some() {
                        self.dp.ipset_remove(slot, key)?;
                        entries = entries.saturating_sub(1);
                    }
                    if !live && !flags.exist && elements.len() == 1 {
                        self.set_count(&def, entries)?;
                        return Err(fail(
                            "Element cannot be deleted from the set: it's not added",
                        ));
                    }
                }
                self.set_count(&def, entries)?;
                Ok(String::new())
            }
            _ => {
                let mut all = true;
                for e in &elements {
                    let (slot, key) = key_of(e, &def);
                    let found = match slot {
                        // A net set answers for the prefixes that cover
                        // a host address, as the kernel's test does.
                        MemberSlot::Net(bits)
                            if bits == net_bits(if def.v6() { 128 } else { 32 }) =>
                        {
                            self.dp.ipset_lookup_net(bits, key)?
                        }
                        _ => self.dp.ipset_get(slot, key)?,
                    };
                    if !found.is_some_and(|v| v.expires == 0 || v.expires > now) {
                        all = false;
                    }
                }
                if all {
                    // ipset prints its answer on stderr, as a warning.
                    if !flags.quiet {
                        eprintln!("Warning: {text} is in set {name}.");
                    }
                    Ok(String::new())
                } else {
                    Err(IpsetError {
                        message: format!("{text} is NOT in set {name}."),
                        usage: false,
                    })
                }
            }
        }
    }

    fn list(
        &mut self,
        name: Option<&str>,
        save: bool,
        flags: &Flags,
    ) -> Result<String, IpsetError> {
        let defs: Vec<SetDef> = match name {
            Some(n) => vec![self.registry.get(n)?.1],
            None => self.registry.sets.iter().flatten().cloned().collect(),
        };
        let mut out = String::new();
        for (i, def) in defs.iter().enumerate() {
            if flags.name_only {
                let _ = writeln!(out, "{}", def.name);
                continue;
            }
            let members = if flags.terse && !save {
                Vec::new()
            } else {
                self.members(def)?
            };
            let now = monotonic_now_ns();
            let element_line = |(e, v): &(Element, IpsetValue)| {
                let mut line = element_text(e, def);
                if def.timeout.is_some() {
                    let left = if v.expires == 0 {
                        0
                    } else {
                        v.expires.saturating_sub(now) / NS
                    };
                    let _ = write!(line, " timeout {left}");
                }
                line
            };
            if save {
                let _ = writeln!(
                    out,
                    "create {} {} {}",
                    def.name,
                    def.kind.name(),
                    def.options()
                );
                for m in &members {
                    let _ = writeln!(out, "add {} {}", def.name, element_line(m));
                }
                continue;
            }
            if i > 0 {
                out.push('\n');
            }
            let entries = if flags.terse {
                // The count without reading members: the header's.
                self.header(def)?.entries
            } else {
                members.len() as u32
            };
            let _ = writeln!(out, "Name: {}", def.name);
            let _ = writeln!(out, "Type: {}", def.kind.name());
            let _ = writeln!(out, "Revision: {}", def.kind.revision());
            let _ = writeln!(out, "Header: {}", def.options());
            let _ = writeln!(out, "Size in memory: {}", memory_size(def, entries));
            let _ = writeln!(out, "References: {}", references(&self.ruleset, &def.name));
            let _ = write!(out, "Number of entries: {entries}");
            if flags.terse {
                out.push('\n');
                continue;
            }
            out.push_str("\nMembers:\n");
            for m in &members {
                let _ = writeln!(out, "{}", element_line(m));
            }
        }
        Ok(out)
    }

    fn targets(&self, name: Option<&str>) -> Result<Vec<(usize, SetDef)>, IpsetError> {
        match name {
            Some(n) => Ok(vec![self.registry.get(n)?]),
            None => Ok(self
                .registry
                .sets
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.clone().map(|s| (i, s)))
                .collect()),
        }
    }

    fn clear(&mut self, def: &SetDef) -> Result<(), IpsetError> {
        for (slot, key, _) in self.dp.ipset_members(def.kind.net(), def.content.to_be())? {
            self.dp.ipset_remove(slot, key)?;
        }
        Ok(())
    }

    fn flush(&mut self, name: Option<&str>) -> Result<String, IpsetError> {
        for (_, def) in self.targets(name)? {
            self.clear(&def)?;
            self.set_count(&def, 0)?;
        }
        Ok(String::new())
    }

    fn destroy(&mut self, name: Option<&str>) -> Result<String, IpsetError> {
        let targets = self.targets(name)?;
        for (_, def) in &targets {
            if references(&self.ruleset, &def.name) > 0 {
                return Err(fail(
                    "Set cannot be destroyed: it is in use by a kernel component",
                ));
            }
        }
        for (i, def) in targets {
            self.clear(&def)?;
            self.dp.ipset_header(name_number(&def.name), None)?;
            self.registry.sets[i] = None;
        }
        while self.registry.sets.last().is_some_and(Option::is_none) {
            self.registry.sets.pop();
        }
        self.dirty = true;
        Ok(String::new())
    }

    fn swap(&mut self, a: &str, b: &str) -> Result<String, IpsetError> {
        let (i, da) = self.registry.get(a)?;
        let (j, db) = self
            .registry
            .get(b)
            .map_err(|_| fail("The set with the given name does not exist"))?;
        if da.kind != db.kind || da.family != db.family {
            return Err(fail(
                "The sets cannot be swapped: their type does not match",
            ));
        }
        let (ha, hb) = (self.header(&da)?, self.header(&db)?);
        // The names stay where the rules find them; what they hold changes
        // places: each definition takes the other's, under its own name.
        let mut na = db.clone();
        na.name = da.name.clone();
        let mut nb = da.clone();
        nb.name = db.name.clone();
        self.dp
            .ipset_header(name_number(&na.name), Some(na.header(hb.entries)))?;
        self.dp
            .ipset_header(name_number(&nb.name), Some(nb.header(ha.entries)))?;
        self.registry.sets[i] = Some(na);
        self.registry.sets[j] = Some(nb);
        self.dirty = true;
        Ok(String::new())
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<String, IpsetError> {
        let (i, def) = self.registry.get(from)?;
        if self.registry.find(to).is_some() {
            return Err(fail(
                "Set cannot be created: set with the same name already exists",
            ));
        }
        if references(&self.ruleset, from) > 0 {
            return Err(fail(
                "Set cannot be renamed: it is in use by a kernel component",
            ));
        }
        let h = self.header(&def)?;
        let mut new = def.clone();
        new.name = to.to_string();
        self.dp
            .ipset_header(name_number(to), Some(new.header(h.entries)))?;
        self.dp.ipset_header(name_number(from), None)?;
        self.registry.sets[i] = Some(new);
        self.dirty = true;
        Ok(String::new())
    }

    fn finish(&mut self) -> Result<(), IpsetError> {
        if self.dirty {
            self.registry.store(&self.ns)?;
            self.dirty = false;
        }
        Ok(())
    }
}

/// A number as ipset reads it (decimal or 0x hex).
fn parse_number(text: &str) -> Option<u32> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// A new set's hash seed, random as the kernel's (it only shows in
/// `list` and `save`).
fn initval() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most the 4 bytes we own.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 4, 0) };
    u32::from_ne_bytes(b)
}

/// `Size in memory:`, what netbeast's maps spend on the set: a header
/// and, per member, its key and value with the kernel's per-element
/// overhead (a hash element or a trie node). The kernel's ipset reports
/// its own structures' size, which no two implementations share.
fn memory_size(def: &SetDef, entries: u32) -> u64 {
    const HEADER: u64 = 24;
    let per = if def.kind.net() {
        24 + 8 + 48
    } else {
        24 + 8 + 32
    };
    HEADER + u64::from(entries) * per
}

/// Splits the global flags out of the arguments.
fn split_flags(args: &[String]) -> Result<(Flags, Vec<String>), IpsetError> {
    let mut flags = Flags::default();
    let mut rest = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-exist" | "-!" | "--exist" => flags.exist = true,
            "-quiet" | "-q" | "--quiet" => flags.quiet = true,
            "-name" | "-n" | "--name" => flags.name_only = true,
            "-terse" | "-t" | "--terse" => flags.terse = true,
            "-sorted" | "-s" | "--sorted" | "-resolve" | "-r" | "--resolve" => {}
            "-output" | "-o" | "--output" => {
                i += 1;
                match args.get(i).map(String::as_str) {
                    Some("save") => flags.save_output = true,
                    Some("plain") => flags.save_output = false,
                    Some(other) => {
                        return Err(fail(format!(
                            "netbeast: -output {other} is not supported; use plain or save"
                        )));
                    }
                    None => {
                        return Err(usage("Syntax error: option `-output' requires an argument"));
                    }
                }
            }
            "-file" | "-f" | "--file" => {
                i += 1;
                flags.file =
                    Some(args.get(i).cloned().ok_or_else(|| {
                        usage("Syntax error: option `-file' requires an argument")
                    })?);
            }
            _ => rest.push(args[i].clone()),
        }
        i += 1;
    }
    Ok((flags, rest))
}

/// Splits a restore line into words (ipset's restore takes no quoting
/// beyond comments' double quotes, which netbeast does not take).
fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

fn run_inner(args: &[String]) -> Result<String, IpsetError> {
    let (flags, rest) = split_flags(args)?;
    match rest.first().map(String::as_str) {
        Some("version" | "-v" | "-V" | "-version") => {
            return Ok(format!("ipset {IPSET_VERSION}, protocol version: 7\n"));
        }
        Some("help" | "-h" | "-help" | "--help") => {
            return Ok(format!(
                "ipset {IPSET_VERSION} (netbeast {})\n\nUsage: ipset [options] COMMAND\n\n\
                 Commands: create add del test destroy list save restore flush rename swap \
                 version help\nTypes: hash:ip hash:net hash:ip,port hash:net,port bitmap:port\n",
                env!("CARGO_PKG_VERSION")
            ));
        }
        None => return Err(usage("No command specified.")),
        _ => {}
    }
    let ns = Namespace::current()?;
    let _lock = ns.lock()?;
    let mut session = Session::open(ns)?;
    let out = if matches!(rest[0].as_str(), "restore" | "r" | "-R" | "-restore") {
        let reader: Box<dyn BufRead> = match &flags.file {
            Some(path) => Box::new(std::io::BufReader::new(
                std::fs::File::open(path)
                    .map_err(|e| fail(format!("Cannot open {path} for reading: {e}")))?,
            )),
            None => Box::new(std::io::stdin().lock()),
        };
        for (n, line) in reader.lines().enumerate() {
            let line = line.map_err(|e| fail(format!("cannot read the input: {e}")))?;
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed == "COMMIT" {
                continue;
            }
            let (mut line_flags, words) = split_flags(&words(trimmed))?;
            line_flags.exist |= flags.exist;
            line_flags.quiet = true;
            if let Err(e) = session.run(&words, &line_flags) {
                // What was restored before the line stays, as ipset leaves it.
                session.finish()?;
                return Err(IpsetError {
                    message: format!("Error in line {}: {}", n + 1, e.message),
                    usage: e.usage,
                });
            }
        }
        String::new()
    } else {
        session.run(&rest, &flags)?
    };
    session.finish()?;
    Ok(out)
}

/// `ipset ARGS` (or `netbeast ipset ARGS`).
pub fn main(args: &[String]) -> ExitCode {
    match run_inner(args) {
        Ok(text) => {
            out!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            if e.message.ends_with(" is NOT in set ") || e.message.contains(" is NOT in set ") {
                // `test`'s negative answer: a plain line, exit 1.
                eprintln!("{}", e.message);
                return ExitCode::from(1);
            }
            eprintln!("ipset {IPSET_VERSION}: {}", e.message);
            if e.usage {
                eprintln!("Try `ipset help' for more information.");
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
