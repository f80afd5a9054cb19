//! The compiled classifier against the reference (iptables' linear
//! semantics) on random rulesets and packets, plus the limits.

use crate::rules::model::{Comment, Icmp, MacSource, Multiport, Ports};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use netbeast_common::{
    CLASS_ALL, Capacity, KEY_CHUNK, L4_FRAGMENT, L4_KEYS, L4_NONE, MAX_GUARDED_SLOTS,
    MAX_GUARDS_PER_RULE, MAX_RULES_PER_CHAIN, NatTarget, addr_type, chain, field, nat_flags,
    pkttype, reject, target,
};
use proptest::prelude::*;

use super::*;
use crate::rules::generate::{self, Dice, Palette, Scope};
use crate::rules::model::{
    Chain, Family, IcmpType, IfaceName, Ipv4Net, Match, MultiportKind, NatFlags, Negatable, Policy,
    PortRange, RejectWith, Rule, Ruleset, Statistic, StatisticMode, TableName, Target,
};

// ---------------------------------------------------------------- pools
// Rule values come from small pools and packets are drawn mostly from the
// same pools, so that packets hit rules, prefix edges and range edges.

const NETS: &[([u8; 4], u8)] = &[
    ([0, 0, 0, 0], 0),
    ([10, 0, 0, 0], 8),
    ([10, 1, 0, 0], 16),
    ([10, 1, 2, 0], 24),
    ([10, 1, 2, 128], 25),
    ([10, 1, 2, 4], 30),
    ([10, 1, 2, 3], 32),
    ([10, 1, 3, 0], 24),
    ([192, 168, 0, 0], 16),
    ([192, 168, 1, 0], 24),
    ([192, 168, 1, 1], 32),
    ([172, 16, 0, 0], 12),
];

/// IPv4 total lengths rules name and packets have (and one or two past).
const LENGTHS: &[u16] = &[0, 20, 28, 40, 60, 100, 576, 1500, 65535];
const TTLS: &[u8] = &[0, 1, 2, 63, 64, 128, 254, 255];
/// TOS bytes (DSCP in the top six bits): best effort, AF11, EF, CS7, and
/// the old Minimize-Delay / Maximize-Throughput bits.
const TOSES: &[u8] = &[0x00, 0x28, 0xb8, 0xe0, 0x10, 0x08, 0x1c];
/// Address types rules name and packets have.
const ADDR_TYPES: &[u32] = &[
    addr_type::UNICAST,
    addr_type::LOCAL,
    addr_type::BROADCAST,
    addr_type::MULTICAST,
    addr_type::BLACKHOLE,
];

const ADDRS: &[[u8; 4]] = &[
    [10, 1, 2, 3],
    [10, 1, 2, 4],
    [10, 1, 2, 7],
    [10, 1, 2, 8],
    [10, 1, 2, 200],
    [10, 1, 3, 9],
    [10, 2, 0, 1],
    [192, 168, 1, 1],
    [192, 168, 1, 2],
    [192, 168, 2, 1],
    [172, 16, 5, 5],
    [172, 32, 0, 1],
    [8, 8, 8, 8],
    [0, 0, 0, 0],
    [255, 255, 255, 255],
];

const PORTS: &[u16] = &[
    0, 1, 22, 53, 79, 80, 81, 443, 1023, 1024, 5432, 8080, 65534, 65535,
];
const ICMP_TYPES: &[u8] = &[0, 3, 8, 11];
const ICMP_CODES: &[u8] = &[0, 1, 3, 4];
const MACS: &[[u8; 6]] = &[
    [0x02, 0, 0, 0, 0, 1],
    [0x02, 0, 0, 0, 0, 2],
    [0x02, 0, 0, 0, 0, 3],
];
/// Patterns as (name, wildcard): exact names, prefixes, the lone `+`, and
/// names no interface has.
const PATTERNS: &[(&str, bool)] = &[
    ("eth0", false),
    ("eth1", false),
    ("eth", true),
    ("eth1", true),
    ("", true),
    ("veth", true),
    ("lo", false),
    ("eth", false),
    ("nothere", false),
    ("w", true),
];

fn interfaces() -> Vec<Interface> {
    [
        (1, "lo"),
        (2, "eth0"),
        (3, "eth1"),
        (4, "eth10"),
        (5, "veth0"),
        (7, "wlan0"),
        (9, "eth"),
    ]
    .into_iter()
    .map(|(ifindex, name)| Interface {
        ifindex,
        name: name.to_string(),
    })
    .collect()
}

// ---------------------------------------------------------------- dice
// Proptest draws one 64-bit seed per rule and per packet, and the shared
// generator (`rules/generate.rs`, built from the extension modules) turns
// each seed into a rule; packets are drawn here. Building rules with
// proptest's own combinators costs ~0.2 ms per rule in debug builds, far
// too slow for 10,000 cases; seeds are cheap, and shrinking still removes
// rules and packets one by one, which is what makes a failure readable.

/// ICMP (type, code) pairs rules name.
const ICMP: &[(u8, Option<u8>)] = &[
    (0, None),
    (3, None),
    (8, None),
    (11, None),
    (0, Some(0)),
    (3, Some(1)),
    (3, Some(3)),
    (3, Some(4)),
    (8, Some(0)),
    (11, Some(1)),
];

/// The pools above, for the shared rule generator: every module, values
/// near the packets', no value from outside the pools.
static PALETTE: Palette = Palette {
    protocols: &[
        (None, 9),
        (Some(6), 12),
        (Some(17), 9),
        (Some(1), 6),
        (Some(0), 1),
        (Some(47), 1),
        (Some(50), 1),
        (Some(132), 3),
    ],
    negate_protocol: 7,
    negated_protocols: &[0, 1, 6, 17, 47],
    negate: 30,
    wild: 0,
    matches: &[2, 4, 5, 4, 3, 2],
    source: 40,
    destination: 30,
    in_iface: 20,
    out_iface: 15,
    fragment: 20,
    fragment_with_l4: true,
    nets: NETS,
    addrs: ADDRS,
    nets6: &[],
    addrs6: &[],
    ports: PORTS,
    ifaces: PATTERNS,
    macs: MACS,
    icmp: ICMP,
    lengths: LENGTHS,
    ttls: TTLS,
    toses: TOSES,
    tos_masks: &[0x3f, 0xff, 0x1c, 0x08, 0x00],
    pkttypes: &[
        pkttype::HOST,
        pkttype::BROADCAST,
        pkttype::MULTICAST,
        pkttype::OTHERHOST,
    ],
    addr_types: ADDR_TYPES,
    nat_addrs: NAT_ADDRS,
    nat_ports: NAT_PORTS,
    names: &["a", "b"],
};

/// Every module the generator has.
fn everything(_: &str) -> bool {
    true
}

/// A rule of `table` reached from `hooks` (none: filter, where the
/// compiler needs no chain), jumping only to `callees`.
fn random_rule(seed: u64, table: TableName, hooks: &[&str], callees: &[String]) -> Rule {
    let scope = Scope {
        family: Family::V4,
        table,
        builtin: None,
        hooks,
        callees,
        palette: &PALETTE,
        allow: &everything,
        protocol: None,
    };
    generate::rule(&mut Dice(seed), &scope)
}

fn addr(d: &mut Dice) -> Ipv4Addr {
    if d.chance(80) {
        Ipv4Addr::from(d.pick(ADDRS))
    } else {
        Ipv4Addr::from(d.next() as u32)
    }
}

fn port(d: &mut Dice) -> u16 {
    match d.weighted(&[4, 1, 1]) {
        0 => d.pick(PORTS),
        1 => d.pick(PORTS).wrapping_add(1),
        _ => d.next() as u16,
    }
}

fn packet(d: &mut Dice) -> PacketView {
    let protocol = match d.weighted(&[4, 3, 2, 1, 1, 1]) {
        0 => 6,
        1 => 17,
        2 => 1,
        3 => d.pick(&[0u8, 47, 50]),
        4 => 132,
        _ => d.next() as u8,
    };
    let truncated = d.chance(8);
    let l4 = match protocol {
        _ if truncated => None,
        6 | 17 | 132 => Some(L4Header::Ports {
            source: port(d),
            destination: port(d),
        }),
        1 => Some(L4Header::Icmp {
            icmp_type: if d.chance(80) {
                d.pick(ICMP_TYPES)
            } else {
                d.next() as u8
            },
            code: if d.chance(80) {
                d.pick(ICMP_CODES)
            } else {
                d.next() as u8
            },
        }),
        _ => None,
    };
    PacketView {
        src: addr(d),
        dst: addr(d),
        addr6: None,
        protocol,
        fragment_offset_nonzero: d.chance(10),
        l4,
        in_ifindex: d.below(10) as u32,
        out_ifindex: d.below(10) as u32,
        mac_source: if d.chance(80) {
            d.pick(MACS)
        } else {
            [0x0a, 0, 0, 0, 0, d.next() as u8]
        },
        // A state and, for one with a connection, the connection
        // key's other bits (`ct_state::*`).
        ct_state: {
            let state = d.below(5) as u32;
            if state <= netbeast_common::ct_state::RELATED {
                state | (d.below(64) as u32) << 3
            } else {
                state
            }
        },
        header: HeaderFields {
            length: if d.chance(80) {
                d.pick(LENGTHS).wrapping_add(d.below(3) as u16)
            } else {
                d.next() as u16
            },
            ttl: if d.chance(80) {
                d.pick(TTLS).wrapping_add(d.below(3) as u8)
            } else {
                d.next() as u8
            },
            tos: if d.chance(70) {
                d.pick(TOSES) | d.below(4) as u8
            } else {
                d.next() as u8
            },
            tcp_flags: d.next() as u8 & if d.chance(80) { 0x3f } else { 0xff },
            pkttype: d.below(pkttype::KEYS as usize) as u32,
            // The type, and on which of the packet's interfaces it holds
            // (`--limit-iface-in/out`).
            src_type: d.pick(ADDR_TYPES) | (d.below(4) as u32) << 4,
            dst_type: d.pick(ADDR_TYPES) | (d.below(4) as u32) << 4,
            tcp_options: d.maybe(90, tcp_option_kinds),
            sctp: sctp_walk(d),
            dccp: dccp_facts(d),
            connection: connection_view(d),
            // IPv4 packets: ip6tables' header matches never apply.
            ipv6_ext: Default::default(),
        },
    }
}

/// A set of option kinds as xt_tcpudp's walk meets them.
fn tcp_option_kinds(d: &mut Dice) -> [u64; 4] {
    let mut kinds = [0u64; 4];
    for _ in 0..d.below(5) {
        let k = d.pick(TCP_OPTION_KINDS);
        kinds[usize::from(k >> 6)] |= 1 << (k & 63);
    }
    kinds
}

/// An SCTP chunk walk: the chunks the rules name (and one they do not),
/// flags anything, ended every way the kernel's walk ends.
fn sctp_walk(d: &mut Dice) -> netbeast_common::sctp::SctpChunks {
    use netbeast_common::sctp::{MAX_SCTP_CHUNKS, SctpChunks, status};
    let mut walk = SctpChunks {
        status: d.pick(&[
            status::WHOLE,
            status::WHOLE,
            status::WHOLE,
            status::CUT,
            status::BAD,
            status::MORE,
        ]),
        ..SctpChunks::default()
    };
    walk.count = if walk.status == status::MORE {
        MAX_SCTP_CHUNKS as u32
    } else {
        d.below(5) as u32 + u32::from(walk.status == status::WHOLE)
    };
    for i in 0..walk.count as usize {
        walk.types[i] = d.pick(&[0u8, 0, 1, 2, 3, 6, 10, 11, 14, 64, 192, 200]);
        walk.flags[i] = d.next() as u8 & if d.chance(80) { 0x0f } else { 0xff };
    }
    walk
}

/// A DCCP header's facts: the types and options the rules name (and
/// others), read every way the kernel's reading ends.
fn dccp_facts(d: &mut Dice) -> netbeast_common::dccp::DccpFacts {
    use netbeast_common::dccp::{DccpFacts, status};
    let mut f = DccpFacts {
        status: d.pick(&[
            status::OPTIONS,
            status::OPTIONS,
            status::OPTIONS,
            status::TYPE_ONLY,
            status::SHORT,
        ]),
        packet_type: d.below(16) as u32,
        options: [0; 4],
    };
    if f.status == status::OPTIONS {
        for _ in 0..d.below(4) {
            let k: u8 = d.pick(&[0, 1, 2, 32, 33, 41, 44, 200, 255]);
            f.options[usize::from(k >> 6)] |= 1 << (k & 63);
        }
    }
    f
}

/// A packet's connection, its tuples from the same pools as the rules'.
fn connection_view(d: &mut Dice) -> ConnectionView {
    let tuple = |d: &mut Dice| netbeast_common::CtTuple {
        src: u32::from(addr(d)).to_be(),
        dst: u32::from(addr(d)).to_be(),
        sport: port(d),
        dport: port(d),
    };
    let orig = tuple(d);
    // Mostly the inverse of the original (no translation).
    let reply = if d.chance(60) {
        netbeast_common::CtTuple {
            src: orig.dst,
            dst: orig.src,
            sport: orig.dport,
            dport: orig.sport,
        }
    } else {
        tuple(d)
    };
    ConnectionView {
        orig,
        reply,
        protocol: d.pick(&[1u8, 6, 17, 47]),
        expires: d.pick(CT_EXPIRES).into(),
    }
}

/// Translation addresses and ports: few, so that rules share translations.
/// `--tcp-option` kinds: end, no-op, MSS, window scale, SACK permitted,
/// SACK, timestamps, and a rare one.
const TCP_OPTION_KINDS: &[u8] = &[1, 2, 3, 4, 5, 8, 30, 254];
/// `--ctexpire` bounds and connections' remaining seconds.
const CT_EXPIRES: &[u32] = &[0, 1, 29, 30, 119, 120, 431_999, u32::MAX];

const NAT_ADDRS: &[[u8; 4]] = &[[10, 9, 0, 1], [10, 9, 0, 2], [192, 168, 9, 9]];
const NAT_PORTS: &[u16] = &[1, 80, 8080, 1024, 65535];

/// The built-in chains that reach a nat chain: DNAT and REDIRECT before
/// routing (PREROUTING, OUTPUT and the user-defined chains they reach),
/// SNAT and MASQUERADE after it (POSTROUTING and its chains).
const DESTINATION: &[&str] = &["PREROUTING", "OUTPUT"];
const SOURCE: &[&str] = &["POSTROUTING"];

/// Seeds of a nat table: PREROUTING, POSTROUTING and OUTPUT rules, and the
/// rules of user-defined chains for DNAT (`D<n>`, reached from PREROUTING
/// and OUTPUT) and for SNAT (`S<n>`, reached from POSTROUTING).
type NatSeeds = (Vec<u64>, Vec<u64>, Vec<u64>, Vec<Vec<u64>>, Vec<Vec<u64>>);

fn nat_seeds() -> impl Strategy<Value = NatSeeds> {
    let short = || prop::collection::vec(any::<u64>(), 0..6);
    let users = || prop::collection::vec(short(), 0..3);
    (short(), short(), short(), users(), users())
}

/// Fills `ruleset`'s nat table from `seeds`; user-defined chain `D<n>` or
/// `S<n>` jumps only to those of its kind with a higher number.
fn add_nat(ruleset: &mut Ruleset, seeds: &NatSeeds) {
    let (pre, post, out, dest, src) = seeds;
    let names = |prefix: &str, n: usize| (0..n).map(|i| format!("{prefix}{i}")).collect::<Vec<_>>();
    let d = names("D", dest.len());
    let s = names("S", src.len());
    let rules = |seeds: &[u64], side, callees: &[String]| -> Vec<Rule> {
        seeds
            .iter()
            .map(|&x| random_rule(x, TableName::Nat, side, callees))
            .collect()
    };
    let nat = &mut ruleset.nat;
    nat.chain_mut("PREROUTING").unwrap().rules = rules(pre, DESTINATION, &d);
    nat.chain_mut("OUTPUT").unwrap().rules = rules(out, DESTINATION, &d);
    nat.chain_mut("POSTROUTING").unwrap().rules = rules(post, SOURCE, &s);
    for (n, seeds) in dest.iter().enumerate() {
        nat.chains
            .push(user_chain(&d[n], rules(seeds, DESTINATION, &d[n + 1..])));
    }
    for (n, seeds) in src.iter().enumerate() {
        nat.chains
            .push(user_chain(&s[n], rules(seeds, SOURCE, &s[n + 1..])));
    }
    nat.chains[4..].sort_by(|a, b| a.name.cmp(&b.name));
}

/// The kernel's translation of a nat rule, computed here from the rule
/// model without the compiler's code: (target code, translation).
fn expected_translation(target: &Target) -> Option<(u32, NatTarget)> {
    let flags_of = |f: &NatFlags| {
        if f.random || f.random_fully {
            nat_flags::RANDOM
        } else {
            0
        }
    };
    let (code, addrs, ports, offset, flags) = match target {
        Target::Dnat { to, flags } => (target::DNAT, to.addrs, to.ports, to.offset, flags),
        Target::Snat { to, flags } => (target::SNAT, to.addrs, to.ports, to.offset, flags),
        Target::Masquerade { ports, flags } => (target::MASQUERADE, None, *ports, None, flags),
        Target::Redirect { ports, flags } => (target::REDIRECT, None, *ports, None, flags),
        _ => return None,
    };
    let mut nat = NatTarget {
        flags: flags_of(flags),
        ..NatTarget::default()
    };
    if let Some(a) = addrs {
        nat.addr_first = u32::from_be_bytes(a.first.octets());
        nat.addr_last = u32::from_be_bytes(a.last.octets());
        nat.flags |= nat_flags::ADDR;
    }
    if let Some(p) = ports {
        nat.port_first = p.first;
        nat.port_last = p.last;
        nat.flags |= nat_flags::PORTS;
        // A shifted port map's base (`ports/base`).
        if let Some(base) = offset {
            nat.port_base = base;
            nat.flags |= nat_flags::OFFSET;
        }
    }
    Some((code, nat))
}

fn chain_of(name: &str, policy: Policy, rules: Vec<Rule>) -> Chain {
    Chain {
        name: name.to_string(),
        policy: Some(policy),
        policy_counter: Default::default(),
        rules,
    }
}

fn ruleset_of(input: Vec<Rule>, forward: Vec<Rule>, output: Vec<Rule>) -> Ruleset {
    let mut ruleset = Ruleset::default();
    ruleset.filter.chains = vec![
        chain_of("INPUT", Policy::Accept, input),
        chain_of("FORWARD", Policy::Drop, forward),
        chain_of("OUTPUT", Policy::Accept, output),
    ];
    ruleset
}

fn rules_from(seeds: &[u64], callees: &[String]) -> Vec<Rule> {
    seeds
        .iter()
        .map(|&s| random_rule(s, TableName::Filter, &[], callees))
        .collect()
}

/// Seeds of a ruleset: (which built-in chain is long, its rules, the two
/// other built-in chains' rules, the user-defined chains' rules).
type RulesetSeeds = (usize, Vec<u64>, Vec<u64>, Vec<u64>, Vec<Vec<u64>>);

/// Seeds of a ruleset: one built-in chain of mostly few rules (where bugs
/// are easy to read), sometimes a few hundred (several words and summary
/// bits in play), two short built-in chains, and up to four short
/// user-defined chains; which built-in chain is the long one varies.
fn ruleset_seeds() -> impl Strategy<Value = RulesetSeeds> {
    let long = prop_oneof![
        10 => 1..12usize,
        4 => 12..70usize,
        1 => 70..300usize,
    ]
    .prop_flat_map(|n| prop::collection::vec(any::<u64>(), n));
    let short = || prop::collection::vec(any::<u64>(), 0..6);
    let users = prop::collection::vec(short(), 0..5);
    (0..3usize, long, short(), short(), users)
}

/// User-defined chain `n` is `U<n>`; it jumps only to chains of a higher
/// number, so jumps never loop (iptables refuses loops before they could
/// reach the compiler).
fn ruleset_from(seeds: &RulesetSeeds) -> Ruleset {
    let (at, long, a, b, users) = seeds;
    let names: Vec<String> = (0..users.len()).map(|n| format!("U{n}")).collect();
    let mut chains = vec![rules_from(a, &names), rules_from(b, &names)];
    chains.insert(*at, rules_from(long, &names));
    let output = chains.pop().unwrap();
    let forward = chains.pop().unwrap();
    let input = chains.pop().unwrap();
    let mut ruleset = ruleset_of(input, forward, output);
    for (n, seeds) in users.iter().enumerate() {
        ruleset.filter.chains.push(Chain {
            name: names[n].clone(),
            policy: None,
            policy_counter: Default::default(),
            rules: rules_from(seeds, &names[n + 1..]),
        });
    }
    ruleset
}

fn packets_from(seeds: &[u64]) -> Vec<PacketView> {
    seeds.iter().map(|&s| packet(&mut Dice(s))).collect()
}

// ---------------------------------------------------------------- checks

/// What the class list promises the loader and the kernel: dense ids,
/// summaries that match the words, no duplicate vectors, no bits past the
/// longest chain.
fn check_classes(compiled: &CompiledRuleset) {
    let base = compiled.generation * compiled.capacity.classes();
    let longest = compiled
        .chains
        .iter()
        .map(|c| c.config.rule_count as usize)
        .max()
        .unwrap();
    let mut seen = std::collections::HashSet::new();
    for (n, class) in compiled.classes.iter().enumerate() {
        assert_eq!(class.id, base + n as u32, "class ids are dense");
        let vector = class.vector();
        let mut summary = [0u64; netbeast_common::SUMMARY_WORDS];
        for (w, &word) in vector.words.iter().enumerate() {
            if word != 0 {
                summary[w / 64] |= 1 << (w % 64);
                assert!(
                    w * 64 < longest,
                    "class {} has bits past every chain",
                    class.id
                );
            }
        }
        assert_eq!(summary, vector.summary, "summary of class {}", class.id);
        let used = longest.div_ceil(64);
        assert!(
            seen.insert(vector.words[..used].to_vec()),
            "class {} is a duplicate",
            class.id
        );
        // The packed form the kernel reads holds the same vector.
        let h = compiled
            .packed
            .header(class.id)
            .expect("a header per class");
        for (b, &block) in vector.summary.iter().enumerate() {
            // Word 0 is read from `first_word`, never through the blocks.
            let past_word0 = if b == 0 { !1 } else { u64::MAX };
            let block = block & past_word0;
            assert_eq!(
                h.blocks & (1 << b) != 0,
                block != 0,
                "blocks of {}",
                class.id
            );
            if block != 0 {
                assert_eq!(
                    compiled.packed.block(class.id, b) & past_word0,
                    block,
                    "packed summary of block {b} of class {}",
                    class.id
                );
            }
        }
        let words = &vector.words;
        let nonzero: Vec<usize> = (0..words.len()).filter(|&w| words[w] != 0).collect();
        let (first, last) = (
            nonzero.first().copied().unwrap_or(0),
            nonzero.last().copied().unwrap_or(0),
        );
        assert_eq!((usize::from(h.first), usize::from(h.last)), (first, last));
        assert_eq!(h.first_word, words[first]);
        let dense = (first..=last).all(|w| words[w] != 0);
        assert_eq!(h.dense != 0, dense);
        for (w, &word) in vector.words.iter().enumerate() {
            if w == 0 || word != 0 {
                assert_eq!(
                    compiled.packed.word(class.id, w),
                    word,
                    "packed word {w} of class {}",
                    class.id
                );
            }
        }
    }
    assert_eq!(compiled.packed.headers.len(), compiled.classes.len());
}

/// What every chain's tables promise: complete, naming existing classes
/// with no bit past the chain's own rules, defaults left out of the entry
/// tables, slots in rule order.
fn check_tables(compiled: &CompiledRuleset) {
    for c in &compiled.chains {
        let count = c.config.rule_count as usize;
        assert_eq!(c.rules.len(), count);
        let mut ids: Vec<u32> = c.config.default_class.to_vec();
        for f in 0..field::COUNT {
            let used = c.config.fields_used & (1 << f) != 0;
            match field::KINDS[f] {
                // A used key field has a class for each of its keys; an
                // unused one no table at all.
                field::Kind::Keys(n) => {
                    assert_eq!(c.key_classes[f].len(), if used { n as usize } else { 0 })
                }
                _ => assert!(c.key_classes[f].is_empty()),
            }
        }
        for table in &c.key_classes {
            // Runs of one class: keep one id per run.
            let mut last = None;
            for &id in table {
                if last != Some(id) {
                    ids.push(id);
                    last = Some(id);
                }
            }
        }
        ids.extend(c.addr_prefixes.iter().map(|p| p.class));
        ids.extend(c.ifaces.iter().map(|e| e.class));
        ids.extend(c.macs.iter().map(|e| e.class));
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            if id == CLASS_ALL {
                continue;
            }
            let v = compiled
                .class(id)
                .expect("every table names an existing class");
            // A value every slot accepts is CLASS_ALL, never a class.
            let all = (0..v.words.len()).all(|w| {
                let lo = w * 64;
                v.words[w]
                    == if count >= lo + 64 {
                        u64::MAX
                    } else if count > lo {
                        (1u64 << (count - lo)) - 1
                    } else {
                        0
                    }
            });
            assert!(
                count == 0 || !all,
                "class {id} holds every slot of its chain"
            );
            for (w, &word) in v.words.iter().enumerate().skip(count / 64) {
                let past = if w == count / 64 {
                    u64::MAX << (count % 64)
                } else {
                    u64::MAX
                };
                assert_eq!(
                    word & past,
                    0,
                    "class {id} has bits past rule {count} in word {w}"
                );
            }
        }
        for f in [field::SRC, field::DST] {
            assert!(
                c.addr_prefixes
                    .iter()
                    .any(|p| p.field == f && p.net.prefix_len == 0),
                "field {f} has its /0 entry"
            );
        }
        for e in &c.ifaces {
            assert_ne!(e.class, c.config.default_class[e.field]);
        }
        for e in &c.macs {
            assert_ne!(e.class, c.config.default_class[field::MAC_SOURCE]);
        }
        // The built-in chain's own rules come in rule order; slots of one
        // rule are consecutive.
        let builtin_name = &c.owners.first().map(|o| o.chain.clone());
        let own: Vec<usize> = c
            .owners
            .iter()
            .zip(&c.rules)
            .filter(|(o, a)| Some(&o.chain) == builtin_name.as_ref() && a.counter == o.rule as u32)
            .map(|(o, _)| o.rule)
            .collect();
        assert!(own.windows(2).all(|p| p[0] <= p[1]), "{own:?}");
        assert_eq!(c.owners.len(), c.rules.len());
    }
}

/// Both sides over a sequence of packets, each with its own guard state
/// (nth counts, random draws) kept from packet to packet and seeded alike:
/// they agree only if they evaluate the same guards in the same order.
/// The time between two packets of `compare`, for limit buckets.
const PACKET_GAP_NS: u64 = 4_000_000;

fn compare(
    ruleset: &Ruleset,
    compiled: &CompiledRuleset,
    packets: &[PacketView],
    seed: u64,
) -> Result<(), TestCaseError> {
    let ifaces = interfaces();
    let builtins = CHAIN_NAMES
        .iter()
        .map(|name| (&ruleset.filter, name))
        .chain(NAT_CHAIN_NAMES.iter().map(|name| (&ruleset.nat, name)));
    let mut reference_guards = GuardState::new(seed);
    let mut compiled_guards = GuardState::new(seed);
    for pkt in packets {
        // Limit buckets refill between packets, on both sides alike.
        reference_guards.advance(PACKET_GAP_NS);
        compiled_guards.advance(PACKET_GAP_NS);
        for (index, (table, name)) in builtins.clone().enumerate() {
            let want =
                reference::classify_table_with(table, name, &ifaces, pkt, &mut reference_guards);
            let c = &compiled.chains[index];
            let (slots, (guarded, passes)) =
                compiled.search_slots(index as u32, pkt, &mut compiled_guards);
            let got: Vec<RuleRef> = slots
                .iter()
                .map(|&slot| c.owners[slot as usize].clone())
                .collect();
            prop_assert_eq!(&got, &want, "chain {} packet {:?}", name, pkt);
            // The translation the kernel would apply is the rule's.
            let last = want
                .last()
                .map(|hit| &table.chain(&hit.chain).unwrap().rules[hit.rule].target);
            if let Some((code, nat)) = last.and_then(expected_translation) {
                let slot = *slots.last().unwrap();
                let action = compiled.chains[index].rules[slot as usize];
                prop_assert_eq!(action.target, code);
                prop_assert_eq!(compiled.nat_targets[action.arg as usize], nat);
            }
            // The compiler's bounds on the search's steps hold: slots
            // without a verdict acted on, slots with guards reached.
            prop_assert!(
                passes <= c.max_passes,
                "chain {} acts on {} slots without a verdict, bound {}",
                name,
                passes,
                c.max_passes
            );
            prop_assert!(
                guarded <= c.max_guarded,
                "chain {} reaches {} guarded slots, bound {}",
                name,
                guarded,
                c.max_guarded
            );
        }
    }
    Ok(())
}

/// Long random chains have more rules without a target than the kernel
/// allows; the emulated search has no such bound, so the comparison lifts
/// the limit (`nonterminating_limit_is_enforced` tests it).
///
/// `None` when the compiler refuses the ruleset for the size of its
/// expansion (a long chain with many conditional RETURNs or gotos of many
/// matches each: about one random ruleset in 15,000); the property tests
/// skip those.
fn compile_unbounded(ruleset: &Ruleset, generation: u32) -> Option<CompiledRuleset> {
    let limits = Limits {
        nonterminating_rules: usize::MAX,
        guarded_slots: usize::MAX,
        // The bounds the comparison checks are then the classes' where
        // those are lower (`steps.rs`), as past the limits.
        class_steps_always: true,
        // Every walk a second built-in chain can take over is taken
        // over, so the comparison checks the copies too.
        reused_walk_slots: 0,
        ..LIMITS
    };
    match compile_with_limits(ruleset, &interfaces(), generation, limits, None) {
        Ok(compiled) => Some(compiled),
        Err(
            CompileError::TooManyTerms { .. }
            | CompileError::TooManyRules { .. }
            | CompileError::TooManyGuardChecks { .. },
        ) => None,
        Err(e) => panic!("random rulesets compile: {e}"),
    }
}

/// Cases of the comparison below: a normal run's, or with
/// `NETBEAST_LONG_TESTS=1` (`cargo xtask test --long`) many more.
fn comparison_cases() -> u32 {
    if std::env::var_os("NETBEAST_LONG_TESTS").is_some() {
        10_000
    } else {
        1_000
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: comparison_cases(),
        // Shrinking removes rules and packets one at a time; a few hundred
        // steps get a failing 300-rule case down to a handful.
        max_shrink_iters: 5_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn compiled_classifier_agrees_with_iptables_semantics(
        rules in ruleset_seeds(),
        nat in nat_seeds(),
        packets in prop::collection::vec(any::<u64>(), 8..16),
        guard_seed in any::<u64>(),
    ) {
        let mut ruleset = ruleset_from(&rules);
        add_nat(&mut ruleset, &nat);
        let packets = packets_from(&packets);
        let compiled = compile_unbounded(&ruleset, 1);
        prop_assume!(compiled.is_some(), "refused for its size");
        let compiled = compiled.unwrap();
        check_classes(&compiled);
        compare(&ruleset, &compiled, &packets, guard_seed)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Every key of every table, walked (too slow for every case above).
    #[test]
    fn every_table_entry_names_a_class(rules in ruleset_seeds(), nat in nat_seeds()) {
        let mut ruleset = ruleset_from(&rules);
        add_nat(&mut ruleset, &nat);
        let compiled = compile_unbounded(&ruleset, 0);
        prop_assume!(compiled.is_some(), "refused for its size");
        let compiled = compiled.unwrap();
        check_classes(&compiled);
        check_tables(&compiled);
    }
}

/// Everything a compile writes into the maps, as text: two compiles that
/// write the same entries give the same text.
fn tables_written(c: &CompiledRuleset) -> String {
    let chains: Vec<_> = c
        .chains
        .iter()
        .map(|ch| {
            (
                ch.config,
                &ch.rules,
                &ch.addr_prefixes,
                &ch.key_classes,
                &ch.ifaces,
                &ch.macs,
                ch.builtin_rules,
            )
        })
        .collect();
    format!(
        "{:?}",
        (
            chains,
            &c.packed.headers,
            &c.packed.words,
            &c.addr_hash.buckets,
            c.user_chain_rules,
            &c.nat_targets,
            &c.log_targets,
            &c.guards,
        )
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// `-N` and `-X` (of an empty chain no rule jumps to) are recorded
    /// without a compile (`cli::plane::commit_unchanged_tables`): that is
    /// right only if an empty, unreferenced user-defined chain, wherever it
    /// stands among the chains, changes no entry the maps get.
    #[test]
    fn empty_chains_change_no_table(
        rules in ruleset_seeds(),
        nat in nat_seeds(),
        at in any::<prop::sample::Index>(),
        in_nat in any::<bool>(),
    ) {
        let mut ruleset = ruleset_from(&rules);
        add_nat(&mut ruleset, &nat);
        let before = compile_unbounded(&ruleset, 1);
        prop_assume!(before.is_some(), "refused for its size");
        let table = if in_nat { &mut ruleset.nat } else { &mut ruleset.filter };
        // First, among, or after the user-defined chains (which are kept
        // in name order).
        let name = ["0-EMPTY", "NBT-EMPTY", "zz-empty"][at.index(3)];
        let position = table.user_chain_position(name);
        table.chains.insert(position, user_chain(name, Vec::new()));
        let after = compile_unbounded(&ruleset, 1).expect("an empty chain adds no limit");
        prop_assert_eq!(tables_written(&before.unwrap()), tables_written(&after));
    }
}

// ---------------------------------------------------------------- unit tests

fn tcp_dport(port: u16, target: Target) -> Rule {
    let mut rule = Rule::new(target);
    rule.protocol = Some(Negatable::is(6));
    rule.matches.push(Match::Ports(Ports {
        protocol: 6,
        sport: None,
        dport: Some(Negatable::is(PortRange {
            first: port,
            last: port,
        })),
        tcp_flags: None,
        tcp_option: None,
        sctp_chunks: None,
        dccp: None,
    }));
    rule
}

fn tcp_packet(sport: u16, dport: u16) -> PacketView {
    PacketView {
        src: Ipv4Addr::new(10, 0, 0, 1),
        dst: Ipv4Addr::new(10, 0, 0, 2),
        addr6: None,
        protocol: 6,
        fragment_offset_nonzero: false,
        l4: Some(L4Header::Ports {
            source: sport,
            destination: dport,
        }),
        in_ifindex: 2,
        out_ifindex: 0,
        mac_source: [0x02, 0, 0, 0, 0, 9],
        ct_state: netbeast_common::ct_state::NEW,
        header: Default::default(),
    }
}

/// The rule numbers of hits in one chain (the unit tests' rulesets have no
/// jumps).
fn numbers(hits: Vec<RuleRef>) -> Vec<usize> {
    hits.into_iter().map(|h| h.rule).collect()
}

fn only_input(rules: Vec<Rule>) -> Ruleset {
    ruleset_of(rules, Vec::new(), Vec::new())
}

#[test]
fn article_firewall_first_match_wins() {
    // -A INPUT -p tcp --dport 22 -j ACCEPT; -A INPUT -j DROP;
    // -A INPUT -p tcp --dport 8080 -j ACCEPT; -I INPUT -p tcp --dport 5432 -j ACCEPT
    let ruleset = only_input(vec![
        tcp_dport(5432, Target::Accept),
        tcp_dport(22, Target::Accept),
        Rule::new(Target::Drop),
        tcp_dport(8080, Target::Accept),
    ]);
    let compiled = compile(&ruleset, &interfaces(), 0).unwrap();
    let input = &compiled.chains[chain::INPUT as usize];
    // The 8080 rule comes after an unconditional DROP: no packet reaches
    // it, and it takes no slot.
    assert_eq!(input.config.rule_count, 3);
    assert_eq!(input.rules[2].target, target::DROP);
    for (dport, want) in [
        (22, vec![1]),
        (5432, vec![0]),
        (8080, vec![2]),
        (80, vec![2]),
    ] {
        assert_eq!(
            numbers(compiled.classify(chain::INPUT, &tcp_packet(40000, dport))),
            want
        );
    }
    // FORWARD is empty: the policy applies.
    assert_eq!(
        compiled.chains[chain::FORWARD as usize].config.policy,
        target::DROP
    );
    assert!(
        compiled
            .classify(chain::FORWARD, &tcp_packet(1, 22))
            .is_empty()
    );
}

#[test]
fn rule_limit_counts_slots() {
    let accept = || {
        let mut rule = Rule::new(Target::Accept);
        rule.protocol = Some(Negatable::is(6));
        rule
    };
    let full = only_input(vec![accept(); MAX_RULES_PER_CHAIN]);
    let compiled = compile(&full, &[], 0).unwrap();
    assert_eq!(
        compiled.chains[chain::INPUT as usize].config.rule_count as usize,
        MAX_RULES_PER_CHAIN
    );
    assert_eq!(
        numbers(compiled.classify(chain::INPUT, &tcp_packet(1, 2))),
        vec![0]
    );
    // No field is used: the search must still stop at rule_count. (Rules
    // after an unconditional verdict take no slot: nothing reaches them.)
    let plain = only_input(vec![Rule::new(Target::Accept), Rule::new(Target::Drop)]);
    let compiled = compile(&plain, &[], 0).unwrap();
    let input = &compiled.chains[chain::INPUT as usize];
    assert_eq!(input.config.fields_used, 0);
    assert_eq!(input.config.rule_count, 1);
    assert_eq!(
        numbers(compiled.classify(chain::INPUT, &tcp_packet(1, 2))),
        vec![0]
    );

    let over = ruleset_of(
        Vec::new(),
        vec![accept(); MAX_RULES_PER_CHAIN + 1],
        Vec::new(),
    );
    let err = compile(&over, &[], 0).err().expect("one rule too many");
    assert_eq!(
        err,
        CompileError::TooManyRules {
            chain: "FORWARD".to_string(),
            slots: MAX_RULES_PER_CHAIN + 1,
            limit: MAX_RULES_PER_CHAIN,
        }
    );
    let message = err.to_string();
    assert!(
        message.contains("FORWARD") && message.contains("262144"),
        "{message}"
    );

    // A `--ports` rule takes two slots.
    let mut either = tcp_dport(1, Target::Drop);
    either.matches = vec![Match::Multiport(Multiport {
        kind: MultiportKind::Either,
        negated: false,
        ports: vec![PortRange {
            first: 80,
            last: 80,
        }],
    })];
    let half = only_input(vec![either.clone(); MAX_RULES_PER_CHAIN / 2]);
    assert!(compile(&half, &[], 0).is_ok());
    let over = only_input(vec![either; MAX_RULES_PER_CHAIN / 2 + 1]);
    assert!(matches!(
        compile(&over, &[], 0),
        Err(CompileError::TooManyRules { slots, .. }) if slots == MAX_RULES_PER_CHAIN + 2
    ));
}

#[test]
fn nonterminating_limit_is_enforced() {
    let count = || Rule::new(Target::None);
    let mut never = Rule::new(Target::None);
    never.protocol = Some(Negatable::is(1));
    never
        .matches
        .push(Match::Icmp(Icmp(Negatable::not(IcmpType::Any))));
    // Rules that can never match don't count.
    let mut rules = vec![count(); MAX_NONTERMINATING_RULES];
    rules.push(never);
    rules.push(Rule::new(Target::Accept));
    let ruleset = only_input(rules.clone());
    let compiled = compile(&ruleset, &[], 0).unwrap();
    let all: Vec<usize> = (0..MAX_NONTERMINATING_RULES).chain([65]).collect();
    assert_eq!(
        numbers(compiled.classify(chain::INPUT, &tcp_packet(1, 2))),
        all
    );
    // One more before the ACCEPT (after it, nothing reaches a rule).
    rules.insert(0, count());
    let err = compile(&only_input(rules), &[], 0).err().unwrap();
    assert_eq!(
        err,
        CompileError::TooManyNonTerminating {
            chain: "INPUT".into(),
            passes: MAX_NONTERMINATING_RULES + 1,
            limit: MAX_NONTERMINATING_RULES
        }
    );
    assert!(
        err.to_string().contains("MAX_NONTERMINATING_RULES"),
        "{err}"
    );
}

#[test]
fn class_word_limit_is_enforced() {
    // 200 rules: one source address each, then one rule without a source.
    // Every source class holds its rule and the last one (two words).
    let mut rules: Vec<Rule> = (0..200u32)
        .map(|i| {
            let mut r = Rule::new(Target::Drop);
            r.source = Some(Negatable::is(Ipv4Net::new(
                Ipv4Addr::from(0x0a00_0000 + i),
                32,
            )));
            r
        })
        .collect();
    rules.push(Rule::new(Target::Accept));
    let ruleset = only_input(rules);
    let limits = Limits {
        class_words: 100,
        ..LIMITS
    };
    let err = compile_with_limits(&ruleset, &[], 0, limits, None)
        .err()
        .expect("over the limit");
    assert_eq!(
        err,
        CompileError::TooManyClassWords {
            limit: 100,
            field: "source address"
        }
    );
    assert!(err.to_string().contains("MAX_CLASS_WORDS"), "{err}");
    let compiled = compile(&ruleset, &[], 0).unwrap();
    check_classes(&compiled);
    assert!(compiled.packed.words.len() > 100);
}

/// `-s NET -j DROP` for each net, then `-j ACCEPT`.
fn sources_dropped(nets: &[Ipv4Net]) -> Ruleset {
    let mut rules: Vec<Rule> = nets
        .iter()
        .map(|&net| {
            let mut r = Rule::new(Target::Drop);
            r.source = Some(Negatable::is(net));
            r
        })
        .collect();
    rules.push(Rule::new(Target::Accept));
    only_input(rules)
}

fn source_packet(src: Ipv4Addr) -> PacketView {
    PacketView {
        src,
        dst: Ipv4Addr::new(192, 0, 2, 1),
        addr6: None,
        protocol: 17,
        fragment_offset_nonzero: false,
        l4: None,
        in_ifindex: 0,
        out_ifindex: 0,
        mac_source: [0; 6],
        ct_state: netbeast_common::ct_state::NEW,
        header: Default::default(),
    }
}

#[test]
fn address_fields_hash_up_to_four_prefix_lengths() {
    let net = |a: [u8; 4], len| Ipv4Net::new(Ipv4Addr::from(a), len);
    let four = [
        net([10, 1, 2, 3], 32),
        net([10, 1, 2, 0], 24),
        net([10, 1, 0, 0], 16),
        net([10, 0, 0, 0], 8),
    ];
    let compiled = compile(&sources_dropped(&four), &[], 0).unwrap();
    let config = &compiled.chains[chain::INPUT as usize].config;
    assert_eq!(config.addr_lengths[0], [32, 24, 16, 8]);
    assert_eq!(
        compiled
            .addr_hash
            .buckets
            .values()
            .flatten()
            .filter(|s| s.key != 0)
            .count(),
        4
    );
    let mut five = four.to_vec();
    five.push(net([10, 1, 2, 0], 28));
    let compiled = compile(&sources_dropped(&five), &[], 0).unwrap();
    let config = &compiled.chains[chain::INPUT as usize].config;
    assert_eq!(config.addr_lengths[0][0], netbeast_common::ADDR_TRIE);
    assert!(compiled.addr_hash.buckets.is_empty());
    // Either way each source's first match is its longest prefix's rule.
    for compiled in [
        compile(&sources_dropped(&four), &[], 0).unwrap(),
        compile(&sources_dropped(&five), &[], 0).unwrap(),
    ] {
        for (src, rule) in [
            ([10, 1, 2, 3], 0),
            ([10, 1, 2, 4], 1),
            ([10, 1, 3, 4], 2),
            ([10, 2, 3, 4], 3),
        ] {
            let got = compiled.classify(chain::INPUT, &source_packet(Ipv4Addr::from(src)));
            assert_eq!(got.last().map(|r| r.rule), Some(rule), "{src:?}");
        }
        let got = compiled.classify(chain::INPUT, &source_packet(Ipv4Addr::new(11, 0, 0, 1)));
        assert_eq!(
            got.last().map(|r| r.rule),
            Some(compiled.chains[0].rules.len() - 1)
        );
    }
}

/// `-s`/`-d` under non-contiguous netmasks: the compiled model (the
/// prefix of the mask's leading ones and a guard) decides as the
/// reference classifier (the address under the whole mask), negated too.
#[test]
fn non_contiguous_netmasks_compile_to_a_prefix_and_a_guard() {
    let masked = |a: [u8; 4], m: [u8; 4], negated: bool| Negatable {
        negated,
        value: Ipv4Net::masked(Ipv4Addr::from(a), Ipv4Addr::from(m)),
    };
    let mut holes = Rule::new(Target::Drop);
    holes.source = Some(masked([10, 0, 12, 0], [255, 0, 255, 0], false));
    let mut low = Rule::new(Target::Drop);
    low.destination = Some(masked([0, 0, 0, 2], [0, 0, 0, 255], false));
    let mut not_low = Rule::new(Target::Drop);
    not_low.source = Some(masked([0, 0, 0, 7], [0, 0, 0, 255], true));
    let ruleset = only_input(vec![holes, low, not_low, Rule::new(Target::Accept)]);
    let compiled = compile(&ruleset, &[], 0).unwrap();
    let table = &ruleset.filter;
    for (src, dst, rule) in [
        ([10, 200, 12, 7], [192, 0, 2, 1], 0),
        ([10, 200, 13, 7], [192, 0, 2, 1], 3),
        ([11, 200, 12, 7], [192, 0, 2, 1], 3),
        ([10, 200, 13, 7], [192, 0, 2, 2], 1),
        ([10, 200, 13, 7], [192, 0, 2, 3], 3),
        ([10, 200, 13, 8], [192, 0, 2, 3], 2),
    ] {
        let mut pkt = source_packet(Ipv4Addr::from(src));
        pkt.dst = Ipv4Addr::from(dst);
        let got = compiled.classify(chain::INPUT, &pkt);
        assert_eq!(got.last().map(|r| r.rule), Some(rule), "{src:?} -> {dst:?}");
        let want = reference::classify_table(table, "INPUT", &[], &pkt);
        assert_eq!(got, want, "{src:?} -> {dst:?}: the reference");
    }
}

/// A block list of 16,000 scattered host addresses: all of them hashed,
/// each found, and neighbours not.
#[test]
fn large_block_lists_are_hashed() {
    let mut x: u32 = 0x1234_5678;
    let addrs: Vec<Ipv4Addr> = (0..16_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            Ipv4Addr::from(x | 1)
        })
        .collect();
    let nets: Vec<Ipv4Net> = addrs.iter().map(|&a| Ipv4Net::new(a, 32)).collect();
    let compiled = compile(&sources_dropped(&nets), &[], 0).unwrap();
    let config = &compiled.chains[chain::INPUT as usize].config;
    assert_eq!(config.addr_lengths[0], [32, 0, 0, 0]);
    let slots = compiled.addr_hash.buckets.values().flatten();
    let mut keys: Vec<u64> = slots.filter(|s| s.key != 0).map(|s| s.key).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 16_000);
    for (i, &a) in addrs.iter().enumerate().step_by(97) {
        let first = compiled.classify(chain::INPUT, &source_packet(a))[0].rule;
        assert!(first <= i && addrs[first] == a, "{a}");
        let neighbour = Ipv4Addr::from(u32::from(a) ^ 1);
        let got = compiled.classify(chain::INPUT, &source_packet(neighbour));
        assert_eq!(got[0].rule, nets.len(), "{neighbour}");
    }
}

/// Sources whose prefixes share the first bucket of `first_of`, in INPUT's
/// source field: `n` of them, from 10.0.0.1 up.
fn sharing_a_first_bucket(n: usize) -> Vec<Ipv4Addr> {
    let base = |a: Ipv4Addr| {
        netbeast_common::addr_hash_base(chain::INPUT, field::SRC as u32, 32, u32::from(a))
    };
    let bucket = |a| netbeast_common::addr_hash_buckets(base(a)).0;
    let first = bucket(Ipv4Addr::new(10, 0, 0, 1));
    (0x0a00_0001u32..)
        .map(Ipv4Addr::from)
        .filter(|&a| bucket(a) == first)
        .take(n)
        .collect()
}

/// A bucket that a prefix overflowed from (four prefixes hashed there
/// first, two more went to their second buckets) is marked, so the loader
/// does not seal it and a lookup there reads the second bucket; a full
/// bucket nothing overflowed from is sealed, and a miss in it reads one.
#[test]
fn only_buckets_nothing_overflowed_from_are_sealed() {
    let sources = sharing_a_first_bucket(7);
    let (rules, absent) = sources.split_at(6);
    let nets: Vec<Ipv4Net> = rules.iter().map(|&a| Ipv4Net::new(a, 32)).collect();
    let base = |a: Ipv4Addr| {
        netbeast_common::addr_hash_base(chain::INPUT, field::SRC as u32, 32, u32::from(a))
    };
    let first = netbeast_common::addr_hash_buckets(base(sources[0])).0;
    for (kept, overflowed) in [(4, false), (6, true)] {
        let compiled = compile(&sources_dropped(&nets[..kept]), &[], 0).unwrap();
        let config = &compiled.chains[chain::INPUT as usize].config;
        assert_eq!(config.addr_table, chain::INPUT);
        assert_eq!(config.addr_lengths[0], [32, 0, 0, 0]);
        let hash = &compiled.addr_hash;
        assert_eq!(
            hash.overflowed.contains(&first),
            overflowed,
            "{kept} prefixes"
        );
        for (i, &a) in sources.iter().enumerate() {
            let got = compiled.classify(chain::INPUT, &source_packet(a));
            let want = if i < kept { i } else { kept };
            assert_eq!(got[0].rule, want, "{a} among {kept} prefixes");
        }
        // The miss: one bucket read when sealed, two when overflowed.
        let (class, reads) = hash.probe(base(absent[0]));
        assert_eq!(class, None);
        assert_eq!(reads, if overflowed { 2 } else { 1 }, "{kept} prefixes");
    }
}

#[test]
fn class_limit_says_where() {
    let rules: Vec<Rule> = (0..10).map(|p| tcp_dport(p, Target::Drop)).collect();
    let ruleset = only_input(rules);
    let limits = Limits {
        classes: 8,
        ..LIMITS
    };
    let err = compile_with_limits(&ruleset, &[], 0, limits, None)
        .err()
        .expect("over the limit");
    assert!(
        matches!(&err, CompileError::TooManyClasses { limit: 8, chain, .. } if chain == "INPUT")
    );
    assert!(err.to_string().contains("MAX_CLASSES"), "{err}");
    assert!(compile(&ruleset, &[], 0).is_ok());
}

#[test]
fn entry_limits() {
    let mut rules = Vec::new();
    for n in 0..5u8 {
        let mut r = Rule::new(Target::Drop);
        r.matches.push(Match::MacSource(MacSource(Negatable::is([
            2, 0, 0, 0, 0, n,
        ]))));
        rules.push(r);
    }
    let ruleset = only_input(rules);
    let limits = Limits {
        mac_entries: 4,
        ..LIMITS
    };
    let err = compile_with_limits(&ruleset, &[], 0, limits, None)
        .err()
        .unwrap();
    assert!(matches!(
        err,
        CompileError::TooManyEntries {
            entries: 5,
            limit: 4,
            ..
        }
    ));
}

#[test]
fn identical_vectors_share_one_class() {
    let rules = vec![
        tcp_dport(22, Target::Accept),
        tcp_dport(80, Target::Accept),
        Rule::new(Target::Drop),
    ];
    let ruleset = ruleset_of(rules.clone(), rules, Vec::new());
    let compiled = compile(&ruleset, &[], 0).unwrap();
    check_tables(&compiled);
    let [input, forward, output, ..] = &compiled.chains;
    assert_eq!(input.key_classes, forward.key_classes);
    assert_eq!(input.config.default_class, forward.config.default_class);
    // Distinct vectors: DROP only (another protocol or port), 22 + DROP,
    // 80 + DROP, and OUTPUT's empty vector; all three rules (unused fields,
    // tcp) is CLASS_ALL, no class. Every key of every field reuses one of
    // these.
    assert_eq!(compiled.classes.len(), 4);
    assert_eq!(input.key_classes[field::PROTO][6], CLASS_ALL);
    let other_ports = input.key_classes[field::L4B][1000];
    assert_eq!(input.key_classes[field::L4B][21], other_ports);
    assert_eq!(input.key_classes[field::L4B][23], other_ports);
    assert_ne!(
        input.key_classes[field::L4B][22],
        input.key_classes[field::L4B][80]
    );
    assert_eq!(output.config.rule_count, 0);
}

#[test]
fn fields_used_follow_the_rules() {
    let used = |rule: Rule| {
        let compiled = compile(&only_input(vec![rule]), &interfaces(), 0).unwrap();
        compiled.chains[chain::INPUT as usize].config.fields_used
    };
    let bit = |f: usize| 1u32 << f;
    let mut comment = Rule::new(Target::Accept);
    comment.matches.push(Match::Comment(Comment("ssh".into())));
    assert_eq!(used(comment), 0);
    let mut all = Rule::new(Target::Accept);
    all.protocol = Some(Negatable::is(0));
    assert_eq!(used(all), 0, "-p all constrains nothing");
    assert_eq!(
        used(tcp_dport(22, Target::Accept)),
        bit(field::PROTO) | bit(field::L4B)
    );
    // A bare `-m tcp` still needs a port header: "any real key" on one L4
    // field (the other is implied).
    let mut bare = tcp_dport(22, Target::Accept);
    bare.matches = vec![Match::Ports(Ports {
        protocol: 6,
        sport: None,
        dport: None,
        tcp_flags: None,
        tcp_option: None,
        sctp_chunks: None,
        dccp: None,
    })];
    assert_eq!(used(bare), bit(field::PROTO) | bit(field::L4B));
    let mut src = Rule::new(Target::Drop);
    src.source = Some(Negatable::not(Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 8)));
    assert_eq!(used(src), bit(field::SRC));
    let mut fragment = Rule::new(Target::Drop);
    fragment.fragment = Some(true);
    assert_eq!(used(fragment), bit(field::L4A));
    let mut either = tcp_dport(1, Target::Drop);
    either.matches = vec![Match::Multiport(Multiport {
        kind: MultiportKind::Either,
        negated: false,
        ports: vec![PortRange {
            first: 80,
            last: 80,
        }],
    })];
    assert_eq!(
        used(either),
        bit(field::PROTO) | bit(field::L4A) | bit(field::L4B)
    );
    let mut ifaces = Rule::new(Target::Accept);
    ifaces.in_iface = Some(Negatable::is(IfaceName {
        name: "eth".into(),
        wildcard: true,
    }));
    ifaces.out_iface = Some(Negatable::is(IfaceName {
        name: "lo".into(),
        wildcard: false,
    }));
    ifaces
        .matches
        .push(Match::MacSource(MacSource(Negatable::is(MACS[0]))));
    assert_eq!(
        used(ifaces),
        bit(field::IN_IFACE) | bit(field::OUT_IFACE) | bit(field::MAC_SOURCE)
    );
}

#[test]
fn generations_offset_class_ids() {
    let ruleset = only_input(vec![tcp_dport(22, Target::Accept)]);
    let g1 = compile(&ruleset, &[], 1).unwrap();
    assert!(g1.classes.iter().all(|c| c.id >= Capacity::FULL.classes()));
    assert_eq!(g1.classes[0].id, Capacity::FULL.classes());
    assert!(
        g1.chains[0].key_classes[field::PROTO]
            .iter()
            .all(|&id| id == CLASS_ALL || g1.class(id).is_some())
    );
    assert_eq!(
        compile(&ruleset, &[], 2).err(),
        Some(CompileError::InvalidGeneration { generation: 2 })
    );
}

#[test]
fn ports_rule_counts_once_on_the_user_rule() {
    // A counting rule (no -j) with --ports 80 before an ACCEPT: a packet
    // from port 80 to port 80 satisfies both halves of the disjunction but
    // must be counted once, on rule 0.
    let mut count = tcp_dport(1, Target::None);
    count.matches = vec![Match::Multiport(Multiport {
        kind: MultiportKind::Either,
        negated: false,
        ports: vec![PortRange {
            first: 80,
            last: 80,
        }],
    })];
    let ruleset = only_input(vec![
        count,
        tcp_dport(80, Target::Reject(RejectWith::TcpReset)),
    ]);
    let compiled = compile(&ruleset, &[], 0).unwrap();
    let input = &compiled.chains[chain::INPUT as usize];
    assert_eq!(input.config.rule_count, 3);
    let counters: Vec<u32> = input.rules.iter().map(|r| r.counter).collect();
    assert_eq!(counters, vec![0, 0, 1]);
    assert_eq!(input.rules[2].arg, reject::TCP_RESET);
    assert_eq!(input.rules[0].target, target::NONE);
    assert_eq!(
        numbers(compiled.classify(chain::INPUT, &tcp_packet(80, 80))),
        vec![0, 1]
    );
    assert_eq!(
        numbers(compiled.classify(chain::INPUT, &tcp_packet(80, 81))),
        vec![0]
    );
    assert_eq!(
        numbers(compiled.classify(chain::INPUT, &tcp_packet(81, 80))),
        vec![0, 1]
    );
    assert!(
        compiled
            .classify(chain::INPUT, &tcp_packet(81, 81))
            .is_empty()
    );
}

#[test]
fn fragments_and_short_headers_have_their_own_keys() {
    let mut not_22 = tcp_dport(22, Target::Drop);
    if let Match::Ports(Ports { dport, .. }) = &mut not_22.matches[0] {
        dport.as_mut().unwrap().negated = true;
    }
    let mut fragment = Rule::new(Target::Accept);
    fragment.fragment = Some(true);
    let ruleset = only_input(vec![not_22, fragment]);
    let compiled = compile(&ruleset, &[], 0).unwrap();
    let input = &compiled.chains[chain::INPUT as usize];
    // `! --dport 22` holds for port 23 but never for fragments or L4_NONE.
    let class = |key: u32| match input.key_classes[field::L4B][key as usize] {
        CLASS_ALL => (1 << input.config.rule_count) - 1,
        id => compiled.class(id).unwrap().words[0],
    };
    assert_eq!(class(23) & 1, 1);
    assert_eq!(class(22) & 1, 0);
    assert_eq!(class(L4_NONE) & 1, 0);
    assert_eq!(class(L4_FRAGMENT) & 1, 0);
    let mut pkt = tcp_packet(1, 23);
    assert_eq!(numbers(compiled.classify(chain::INPUT, &pkt)), vec![0]);
    pkt.fragment_offset_nonzero = true;
    assert_eq!(pkt.l4_keys(), (L4_FRAGMENT, L4_FRAGMENT));
    assert_eq!(numbers(compiled.classify(chain::INPUT, &pkt)), vec![1]);
    pkt.fragment_offset_nonzero = false;
    pkt.l4 = None;
    assert_eq!(pkt.l4_keys(), (L4_NONE, L4_NONE));
    assert!(compiled.classify(chain::INPUT, &pkt).is_empty());
}

#[test]
fn interfaces_outside_the_list_take_the_default_class() {
    let pattern = |name: &str, wildcard| IfaceName {
        name: name.into(),
        wildcard,
    };
    let mut eth = Rule::new(Target::Drop);
    eth.in_iface = Some(Negatable::is(pattern("eth", true)));
    let mut any = Rule::new(Target::None);
    any.in_iface = Some(Negatable::is(pattern("", true)));
    let ruleset = only_input(vec![any, eth]);
    let compiled = compile(&ruleset, &interfaces(), 0).unwrap();
    let input = &compiled.chains[chain::INPUT as usize];
    // eth0, eth1, eth10 and eth differ from the default; lo, veth0, wlan0 don't.
    let mut named: Vec<u32> = input.ifaces.iter().map(|e| e.ifindex).collect();
    named.sort_unstable();
    assert_eq!(named, vec![2, 3, 4, 9]);
    let mut pkt = tcp_packet(1, 2);
    pkt.in_ifindex = 2;
    assert_eq!(numbers(compiled.classify(chain::INPUT, &pkt)), vec![0, 1]);
    pkt.in_ifindex = 42;
    assert_eq!(numbers(compiled.classify(chain::INPUT, &pkt)), vec![0]);
}

#[test]
fn key_chunks_cover_every_key() {
    let ruleset = only_input(vec![tcp_dport(65535, Target::Drop)]);
    let compiled = compile(&ruleset, &[], 0).unwrap();
    let input = &compiled.chains[chain::INPUT as usize];
    let chunks = field::key_chunks(field::L4B) as usize;
    let mut keys = Vec::new();
    for chunk in 0..chunks {
        keys.extend(input.key_chunk(field::L4B, chunk));
    }
    assert_eq!(keys.len(), chunks * KEY_CHUNK);
    assert_eq!(&keys[..L4_KEYS], &input.key_classes[field::L4B][..]);
    assert!(
        input.key_chunk(field::L4B, chunks - 1)[..]
            .iter()
            .skip(2)
            .all(|&c| c == keys[L4_KEYS - 1])
    );
}

#[test]
fn address_prefixes_nest() {
    let net = |a: [u8; 4], len| Ipv4Net::new(Ipv4Addr::from(a), len);
    let mut r0 = Rule::new(Target::Accept);
    r0.source = Some(Negatable::is(net([10, 1, 2, 3], 32)));
    let mut r1 = Rule::new(Target::Drop);
    r1.source = Some(Negatable::not(net([10, 1, 0, 0], 16)));
    let mut r2 = Rule::new(Target::Reject(RejectWith::IcmpHostUnreachable));
    r2.source = Some(Negatable::is(net([10, 0, 0, 0], 8)));
    let ruleset = only_input(vec![r0, r1, r2]);
    let compiled = compile(&ruleset, &[], 0).unwrap();
    let input = &compiled.chains[chain::INPUT as usize];
    let srcs: Vec<_> = input
        .addr_prefixes
        .iter()
        .filter(|p| p.field == field::SRC)
        .map(|p| (p.net, compiled.class(p.class).unwrap().words[0]))
        .collect();
    assert_eq!(
        srcs,
        vec![
            (net([0, 0, 0, 0], 0), 0b010),
            (net([10, 0, 0, 0], 8), 0b110),
            (net([10, 1, 0, 0], 16), 0b100),
            (net([10, 1, 2, 3], 32), 0b101),
        ]
    );
    let from = |a: [u8; 4]| PacketView {
        src: Ipv4Addr::from(a),
        ..tcp_packet(1, 2)
    };
    assert_eq!(
        numbers(compiled.classify(chain::INPUT, &from([10, 1, 2, 3]))),
        vec![0]
    );
    assert_eq!(
        numbers(compiled.classify(chain::INPUT, &from([10, 1, 2, 4]))),
        vec![2]
    );
    assert_eq!(
        numbers(compiled.classify(chain::INPUT, &from([10, 2, 0, 0]))),
        vec![1]
    );
    // Only the DST /0 entry besides the SRC prefixes.
    assert_eq!(input.addr_prefixes.len(), 5);
}

/// A ruleset as a benchmark would load it: 10,000 rules of distinct
/// addresses and ports, some ranges and multiports.
fn big_ruleset(n: usize) -> Ruleset {
    let rules = (0..n)
        .map(|i| {
            let mut r = tcp_dport((i % 60000) as u16 + 1, Target::Drop);
            r.source = Some(Negatable::is(Ipv4Net::new(
                Ipv4Addr::from(0x0a00_0000 + i as u32 * 4),
                if i % 3 == 0 { 30 } else { 32 },
            )));
            if i % 10 == 0 {
                r.matches = vec![Match::Multiport(Multiport {
                    kind: MultiportKind::Destination,
                    negated: false,
                    ports: vec![
                        PortRange {
                            first: i as u16,
                            last: i as u16 + 20,
                        },
                        PortRange {
                            first: 30000,
                            last: 30000 + i as u16,
                        },
                    ],
                })];
            }
            r
        })
        .collect();
    only_input(rules)
}

#[test]
fn ten_thousand_rules_compile_fast() {
    let ruleset = big_ruleset(10_000);
    let started = Instant::now();
    let compiled = compile(&ruleset, &interfaces(), 0).unwrap();
    let took = started.elapsed();
    eprintln!(
        "10,000 rules compiled in {took:?}, {} classes",
        compiled.classes.len()
    );
    // Release builds take a few tens of milliseconds; debug builds are
    // ~10x slower, so the bound only catches a blow-up (such as a loop over
    // every key for every rule).
    let bound = if cfg!(debug_assertions) {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(1)
    };
    assert!(took < bound, "10,000 rules took {took:?}");
    let input = &compiled.chains[chain::INPUT as usize];
    assert_eq!(input.config.rule_count, 10_000);
    // The last rule matches only its own packets.
    let mut pkt = tcp_packet(1, 9_999 + 1);
    pkt.src = Ipv4Addr::from(0x0a00_0000 + 9_999 * 4);
    assert_eq!(numbers(compiled.classify(chain::INPUT, &pkt)), vec![9_999]);
    let reference = reference::classify(&ruleset.filter.chains[0], &[], &pkt);
    assert_eq!(reference, vec![9_999]);
}

/// A chain longer than the old 16,384-slot limit, whose classes spread over
/// many blocks of 64 words (`ClassHeader::blocks`): each host's source
/// class holds its own rule and the catch-all at the end (two words far
/// apart: not dense, two summary pairs), and UDP rules every 4,500 slots
/// give the protocol field a class with a hole per UDP rule. The compiled
/// search (the kernel's steps through the packed headers, summaries and
/// words) agrees with the reference on packets that end in every block.
#[test]
fn chains_past_sixteen_thousand_slots_search_every_block() {
    const N: usize = 20_000;
    let host = |i: usize| Ipv4Addr::from(0x0a00_0000 + i as u32);
    let mut rules: Vec<Rule> = (0..N)
        .map(|i| {
            if i % 4_500 == 4_499 {
                let mut r = Rule::new(Target::Accept);
                r.protocol = Some(Negatable::is(17));
                return r;
            }
            let mut r = tcp_dport((i % 5) as u16 + 1, Target::Drop);
            r.source = Some(Negatable::is(Ipv4Net::new(host(i), 32)));
            r
        })
        .collect();
    let mut last = Rule::new(Target::Accept);
    last.source = Some(Negatable::is(Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 8)));
    rules.push(last);
    let ruleset = only_input(rules);
    let compiled = compile(&ruleset, &[], 1).unwrap();
    assert_eq!(
        compiled.chains[chain::INPUT as usize].config.rule_count as usize,
        N + 1
    );
    check_classes(&compiled);
    let sparse = compiled
        .packed
        .headers
        .iter()
        .filter(|h| h.dense == 0 && h.blocks.count_ones() >= 2)
        .count();
    assert!(sparse > 1_000, "only {sparse} classes span blocks sparsely");
    let mut dice = Dice(17);
    let mut checked = 0;
    for i in (0..N)
        .step_by(397)
        .chain([0, 4_095, 4_096, 16_383, 16_384, N - 1])
    {
        for (protocol, port) in [(6, (i % 5) as u16 + 1), (6, 99), (17, 53)] {
            let mut pkt = tcp_packet(dice.below(60_000) as u16 + 1, port);
            pkt.src = host(i);
            pkt.protocol = protocol;
            let want = reference::classify(&ruleset.filter.chains[0], &[], &pkt);
            assert_eq!(
                numbers(compiled.classify(chain::INPUT, &pkt)),
                want,
                "host {i}, protocol {protocol}, port {port}"
            );
            checked += 1;
        }
    }
    assert!(checked > 100);
}

// ---------------------------------------------------------------- user chains

fn user_chain(name: &str, rules: Vec<Rule>) -> Chain {
    Chain {
        name: name.to_string(),
        policy: None,
        policy_counter: Default::default(),
        rules,
    }
}

fn from_net(a: [u8; 4], len: u8, target: Target) -> Rule {
    let mut rule = Rule::new(target);
    rule.source = Some(Negatable::is(Ipv4Net::new(Ipv4Addr::from(a), len)));
    rule
}

fn refs(hits: &[(&str, usize)]) -> Vec<RuleRef> {
    hits.iter()
        .map(|&(chain, rule)| RuleRef {
            chain: chain.to_string(),
            rule,
        })
        .collect()
}

#[test]
fn jump_goto_and_return_follow_iptables() {
    // INPUT: 0 -s 10/8 -j A; 1 -p tcp --dport 22 -j ACCEPT; 2 DROP
    // A:     0 -s 10.1/16 -j RETURN; 1 -p tcp --dport 22 -g B; 2 -p tcp -j REJECT
    // B:     0 -s 10.2/16 -j ACCEPT (then B ends: back to INPUT after rule 0)
    let mut ruleset = only_input(vec![
        from_net([10, 0, 0, 0], 8, Target::Jump("A".into())),
        tcp_dport(22, Target::Accept),
        Rule::new(Target::Drop),
    ]);
    let mut reject = Rule::new(Target::Reject(RejectWith::TcpReset));
    reject.protocol = Some(Negatable::is(6));
    ruleset.filter.chains.push(user_chain(
        "A",
        vec![
            from_net([10, 1, 0, 0], 16, Target::Return),
            tcp_dport(22, Target::Goto("B".into())),
            reject,
        ],
    ));
    ruleset.filter.chains.push(user_chain(
        "B",
        vec![from_net([10, 2, 0, 0], 16, Target::Accept)],
    ));
    let compiled = compile(&ruleset, &[], 0).unwrap();
    let from = |a: [u8; 4], dport| PacketView {
        src: Ipv4Addr::from(a),
        ..tcp_packet(1, dport)
    };
    type Hits = &'static [(&'static str, usize)];
    let cases: [([u8; 4], u16, Hits); 5] = [
        // Not in 10/8: INPUT only.
        ([192, 168, 0, 1], 22, &[("INPUT", 1)]),
        // RETURN from A: on with INPUT rule 1.
        ([10, 1, 0, 1], 22, &[("INPUT", 0), ("A", 0), ("INPUT", 1)]),
        // Goto B, accepted there.
        ([10, 2, 0, 1], 22, &[("INPUT", 0), ("A", 1), ("B", 0)]),
        // Goto B, B ends: back to INPUT after the jump to A (not to A).
        ([10, 3, 0, 1], 22, &[("INPUT", 0), ("A", 1), ("INPUT", 1)]),
        // Through A to its REJECT.
        ([10, 3, 0, 1], 80, &[("INPUT", 0), ("A", 2)]),
    ];
    for (src, dport, want) in cases {
        let pkt = from(src, dport);
        let want = refs(want);
        assert_eq!(
            reference::classify_table(&ruleset.filter, "INPUT", &[], &pkt),
            want,
            "reference, {src:?} port {dport}"
        );
        assert_eq!(
            compiled.classify(chain::INPUT, &pkt),
            want,
            "{src:?} port {dport}"
        );
    }
    // A RETURN in a built-in chain is its policy.
    let mut builtin_return = only_input(vec![
        from_net([10, 0, 0, 0], 8, Target::Return),
        Rule::new(Target::Accept),
    ]);
    builtin_return.filter.chains[0].policy = Some(Policy::Drop);
    let compiled = compile(&builtin_return, &[], 0).unwrap();
    assert_eq!(
        compiled.classify(chain::INPUT, &from([10, 0, 0, 1], 1)),
        refs(&[("INPUT", 0)])
    );
    assert_eq!(
        compiled.classify(chain::INPUT, &from([11, 0, 0, 1], 1)),
        refs(&[("INPUT", 1)])
    );
}

#[test]
fn user_chain_rules_count_on_their_own_counters() {
    // INPUT and FORWARD both jump to U; U's rules have one counter each,
    // whichever chain they were reached from.
    let mut ruleset = ruleset_of(
        vec![Rule::new(Target::Jump("U".into()))],
        vec![Rule::new(Target::None), Rule::new(Target::Jump("U".into()))],
        Vec::new(),
    );
    ruleset
        .filter
        .chains
        .push(user_chain("T", vec![Rule::new(Target::None)]));
    ruleset.filter.chains.push(user_chain(
        "U",
        vec![tcp_dport(22, Target::Accept), Rule::new(Target::Drop)],
    ));
    let compiled = compile(&ruleset, &[], 1).unwrap();
    assert_eq!(compiled.user_chain_rules, 3);
    let counters = user_chain_counters(&ruleset);
    let numbered: Vec<(&str, u32)> = counters
        .iter()
        .map(|(_, _, c, n)| (c.name.as_str(), *n))
        .collect();
    assert_eq!(numbered, [("T", 0), ("U", 1)]);
    for (c, builtin_rules) in [(chain::INPUT, 1), (chain::FORWARD, 2)] {
        let compiled_chain = &compiled.chains[c as usize];
        assert_eq!(compiled_chain.builtin_rules, builtin_rules);
        let config = compiled_chain.config;
        let kernel_counters: Vec<u32> = compiled_chain
            .rules
            .iter()
            .map(|a| config.counter_base + a.counter)
            .collect();
        let jump = config.counter_base + builtin_rules - 1;
        // U rule 0 is user counter 1, U rule 1 user counter 2.
        let u = |n| config.user_counter_base + n;
        let want: Vec<u32> = (0..builtin_rules - 1)
            .map(|r| config.counter_base + r)
            .chain([jump, u(1), u(2)])
            .collect();
        assert_eq!(kernel_counters, want, "chain {c}");
        assert_eq!(
            compiled_chain.rules[builtin_rules as usize - 1].target,
            target::NONE
        );
    }
}

#[test]
fn whitelists_of_returns_stay_small() {
    // The usual allow list: RETURN for each allowed source (here with a
    // protocol too), then DROP. The negations share their protocol atom, so
    // the DROP needs two slots however long the list is.
    let mut allow = Vec::new();
    for n in 0..200u32 {
        let mut rule = from_net((0x0a00_0000 + (n << 8)).to_be_bytes(), 24, Target::Return);
        rule.protocol = Some(Negatable::is(6));
        allow.push(rule);
    }
    allow.push(Rule::new(Target::Drop));
    let mut ruleset = only_input(vec![
        Rule::new(Target::Jump("ALLOW".into())),
        Rule::new(Target::Accept),
    ]);
    ruleset.filter.chains.push(user_chain("ALLOW", allow));
    let compiled = compile(&ruleset, &[], 0).unwrap();
    let input = &compiled.chains[chain::INPUT as usize];
    // The jump, 200 RETURNs, 2 DROP slots, the ACCEPT.
    assert_eq!(input.config.rule_count, 1 + 200 + 2 + 1);
    let from = |a: [u8; 4]| PacketView {
        src: Ipv4Addr::from(a),
        ..tcp_packet(1, 2)
    };
    assert_eq!(
        compiled.classify(chain::INPUT, &from([10, 0, 7, 1])),
        refs(&[("INPUT", 0), ("ALLOW", 7), ("INPUT", 1)])
    );
    assert_eq!(
        compiled.classify(chain::INPUT, &from([10, 200, 0, 1])),
        refs(&[("INPUT", 0), ("ALLOW", 200)])
    );
}

#[test]
fn too_many_cases_are_refused_naming_the_rule() {
    // Conditional RETURNs with two matches each: the packets after them are
    // "not the first or not the second" for each, and the cases multiply
    // where the compiler cannot tell the matches apart (interface
    // patterns: which names exist is only known when compiling).
    let mut rules = Vec::new();
    for n in 0..4u8 {
        let mut rule = Rule::new(Target::Return);
        rule.in_iface = Some(Negatable::is(IfaceName {
            name: format!("eth{n}"),
            wildcard: true,
        }));
        rule.out_iface = Some(Negatable::is(IfaceName {
            name: format!("veth{n}"),
            wildcard: true,
        }));
        rules.push(rule);
    }
    rules.push(Rule::new(Target::Drop));
    let mut ruleset = ruleset_of(
        Vec::new(),
        vec![Rule::new(Target::Jump("MANY".into()))],
        Vec::new(),
    );
    ruleset.filter.chains.push(user_chain("MANY", rules));
    // Within the real limit it compiles, and right.
    let compiled = compile(&ruleset, &interfaces(), 0).unwrap();
    for (i, o) in [(2, 5), (3, 5), (4, 1), (3, 3), (9, 5)] {
        let p = PacketView {
            in_ifindex: i,
            out_ifindex: o,
            ..tcp_packet(1, 2)
        };
        assert_eq!(
            compiled.classify(chain::FORWARD, &p),
            reference::classify_table(&ruleset.filter, "FORWARD", &interfaces(), &p)
        );
    }
    let limits = Limits {
        terms_per_rule: 4,
        ..LIMITS
    };
    let err = compile_with_limits(&ruleset, &interfaces(), 0, limits, None)
        .err()
        .expect("refused");
    let CompileError::TooManyTerms { builtin, chain, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!((builtin.as_str(), chain.as_str()), ("FORWARD", "MANY"));
    assert!(
        err.to_string()
            .contains("of chain MANY (reached from FORWARD)"),
        "{err}"
    );
    assert!(err.to_string().contains("MAX_TERMS_PER_RULE"), "{err}");
}

#[test]
fn a_packet_passes_one_return_of_an_allow_list() {
    // 100 RETURNs are 100 slots without a verdict, but a packet acts on one
    // of them at most: far below MAX_NONTERMINATING_RULES.
    let allow: Vec<Rule> = (0..100u32)
        .map(|n| from_net((0x0a00_0000 + (n << 8)).to_be_bytes(), 24, Target::Return))
        .chain([Rule::new(Target::Drop)])
        .collect();
    let mut ruleset = only_input(vec![Rule::new(Target::Jump("ALLOW".into()))]);
    ruleset.filter.chains.push(user_chain("ALLOW", allow));
    assert!(compile(&ruleset, &[], 0).is_ok());
    // Counting rules before a jump do add up.
    let mut counting = vec![Rule::new(Target::None); MAX_NONTERMINATING_RULES - 1];
    counting.push(Rule::new(Target::Jump("ALLOW".into())));
    let mut ruleset = only_input(counting);
    ruleset.filter.chains.push(user_chain(
        "ALLOW",
        vec![from_net([10, 0, 0, 0], 8, Target::Return)],
    ));
    assert!(matches!(
        compile(&ruleset, &[], 0),
        Err(CompileError::TooManyNonTerminating { .. })
    ));
}

#[test]
fn loops_in_a_stored_ruleset_are_refused() {
    // The command layer refuses them; a hand-edited ruleset must not hang
    // the compiler.
    let mut ruleset = only_input(vec![Rule::new(Target::Jump("A".into()))]);
    ruleset
        .filter
        .chains
        .push(user_chain("A", vec![Rule::new(Target::Goto("B".into()))]));
    ruleset
        .filter
        .chains
        .push(user_chain("B", vec![Rule::new(Target::Jump("A".into()))]));
    assert!(matches!(
        compile(&ruleset, &[], 0),
        Err(CompileError::JumpLoop { path, .. }) if path == "INPUT -> A -> B -> A"
    ));
    let mut missing = only_input(vec![Rule::new(Target::Jump("GONE".into()))]);
    missing.filter.chains[1].policy = Some(Policy::Drop);
    assert!(matches!(
        compile(&missing, &[], 0),
        Err(CompileError::InvalidRule { rule: 1, .. })
    ));
}

#[test]
fn long_allow_lists_compile_fast() {
    // 5,000 RETURNs, then DROP: each RETURN only needs the NOT of the
    // RETURNs whose source prefix can meet its own (none), the DROP all.
    let allow: Vec<Rule> = (0..5000u32)
        .map(|n| from_net((0x0a00_0000 + (n << 8)).to_be_bytes(), 24, Target::Return))
        .chain([Rule::new(Target::Drop)])
        .collect();
    let mut ruleset = only_input(vec![Rule::new(Target::Jump("ALLOW".into()))]);
    ruleset.filter.chains.push(user_chain("ALLOW", allow));
    // No time bound here (timed assertions fail on a loaded machine): the
    // slot count below is what a blow-up would change, and a cubic
    // compile shows as a test that takes minutes.
    let compiled = compile(&ruleset, &[], 0).unwrap();
    assert_eq!(
        compiled.chains[chain::INPUT as usize].config.rule_count,
        5002
    );
}

// ---------------------------------------------------------------- nat

/// A ruleset built from iptables command lines.
fn typed(lines: &[&str]) -> Ruleset {
    let mut ruleset = Ruleset::default();
    for line in lines {
        crate::rules::command::apply(&mut ruleset, &crate::rules::save::test_command(line))
            .unwrap_or_else(|e| panic!("'{line}': {e}"));
    }
    ruleset
}

fn host(a: [u8; 4]) -> u32 {
    u32::from(Ipv4Addr::from(a))
}

#[test]
fn nat_chains_compile_into_their_slots() {
    let ruleset = typed(&[
        "-A INPUT -p tcp --dport 22 -j ACCEPT",
        "-t nat -A PREROUTING -i eth0 -p tcp --dport 80 -j DNAT --to 10.0.0.2:8080",
        "-t nat -A PREROUTING -i eth0 -p tcp --dport 81 -j DNAT --to 10.0.0.2:8080",
        "-t nat -A PREROUTING -p tcp --dport 443 -j REDIRECT --to-ports 8443 --random",
        "-t nat -A OUTPUT -o lo -p tcp -s 127.0.0.1 --dport 80 -j DNAT --to 192.168.0.4:80",
        "-t nat -A POSTROUTING -o eth1 -j ACCEPT",
        "-t nat -A POSTROUTING -s 192.168.0.0/24 -j SNAT --to-source 10.10.7.1-10.10.7.9 --random-fully",
        "-t nat -A POSTROUTING -o eth0 -j MASQUERADE",
    ]);
    let compiled = compile(&ruleset, &interfaces(), 1).unwrap();
    // The filter chains are as before; the nat ones hold the nat rules.
    assert_eq!(compiled.chains[chain::INPUT as usize].config.rule_count, 1);
    let pre = &compiled.chains[chain::NAT_PREROUTING as usize];
    let post = &compiled.chains[chain::NAT_POSTROUTING as usize];
    let out = &compiled.chains[chain::NAT_OUTPUT as usize];
    assert_eq!(
        [pre, post, out].map(|c| (c.config.rule_count, c.config.policy, c.builtin_rules)),
        [
            (3, target::ACCEPT, 3),
            (3, target::ACCEPT, 3),
            (1, target::ACCEPT, 1)
        ]
    );
    let actions = |c: &CompiledChain| -> Vec<(u32, u32, u32)> {
        c.rules
            .iter()
            .map(|a| (a.target, a.arg, a.counter))
            .collect()
    };
    // Rules 1 and 2 share one translation.
    assert_eq!(
        actions(pre),
        [
            (target::DNAT, 0, 0),
            (target::DNAT, 0, 1),
            (target::REDIRECT, 1, 2)
        ]
    );
    assert_eq!(actions(out), [(target::DNAT, 2, 0)]);
    assert_eq!(
        actions(post),
        [
            (target::ACCEPT, 0, 0),
            (target::SNAT, 3, 1),
            (target::MASQUERADE, 4, 2)
        ]
    );
    assert_eq!(
        compiled.nat_targets,
        [
            NatTarget {
                addr_first: host([10, 0, 0, 2]),
                addr_last: host([10, 0, 0, 2]),
                port_first: 8080,
                port_last: 8080,
                flags: nat_flags::ADDR | nat_flags::PORTS,
                ..Default::default()
            },
            NatTarget {
                port_first: 8443,
                port_last: 8443,
                flags: nat_flags::PORTS | nat_flags::RANDOM,
                ..NatTarget::default()
            },
            NatTarget {
                addr_first: host([192, 168, 0, 4]),
                addr_last: host([192, 168, 0, 4]),
                port_first: 80,
                port_last: 80,
                flags: nat_flags::ADDR | nat_flags::PORTS,
                ..Default::default()
            },
            NatTarget {
                addr_first: host([10, 10, 7, 1]),
                addr_last: host([10, 10, 7, 9]),
                flags: nat_flags::ADDR | nat_flags::RANDOM,
                ..NatTarget::default()
            },
            NatTarget::default(),
        ]
    );
    // Classification in the nat chains: the first translation or ACCEPT.
    let mut pkt = tcp_packet(40000, 80);
    assert_eq!(
        compiled.classify(chain::NAT_PREROUTING, &pkt),
        refs(&[("PREROUTING", 0)])
    );
    pkt.in_ifindex = 3;
    assert!(compiled.classify(chain::NAT_PREROUTING, &pkt).is_empty());
    pkt.out_ifindex = 3;
    assert_eq!(
        compiled.classify(chain::NAT_POSTROUTING, &pkt),
        refs(&[("POSTROUTING", 0)])
    );
    pkt.out_ifindex = 2;
    assert_eq!(
        compiled.classify(chain::NAT_POSTROUTING, &pkt),
        refs(&[("POSTROUTING", 2)])
    );
    assert!(compiled.has_nat_rules());
    assert!(!compiled.uses_conntrack_state());
    assert_eq!(
        compiled.active_flags(),
        netbeast_common::ACTIVE_NAT | netbeast_common::ACTIVE_TRACKING
    );
}

#[test]
fn active_flags_follow_the_ruleset() {
    let flags = |lines: &[&str]| compile(&typed(lines), &[], 0).unwrap().active_flags();
    assert_eq!(flags(&["-A INPUT -j DROP"]), 0);
    assert_eq!(
        flags(&["-A INPUT -m state --state NEW -j DROP"]),
        netbeast_common::ACTIVE_TRACKING
    );
    assert_eq!(
        flags(&["-t nat -A POSTROUTING -j MASQUERADE"]),
        netbeast_common::ACTIVE_NAT | netbeast_common::ACTIVE_TRACKING
    );
    // A counting rule in a nat chain still sends new connections through it.
    assert_eq!(
        flags(&["-t nat -A OUTPUT"]),
        netbeast_common::ACTIVE_NAT | netbeast_common::ACTIVE_TRACKING
    );
    // User-defined nat chains nothing jumps to do not count.
    assert_eq!(flags(&["-t nat -N X", "-t nat -A X -j MASQUERADE"]), 0);
}

#[test]
fn nat_user_chain_counters_follow_the_filter_ones() {
    let ruleset = typed(&[
        "-N F",
        "-A F -j ACCEPT",
        "-A F -j DROP",
        "-A INPUT -j F",
        "-t nat -N A",
        "-t nat -N B",
        "-t nat -A A -p tcp --dport 80 -j DNAT --to 10.0.0.2",
        "-t nat -A B -j MASQUERADE",
        "-t nat -A PREROUTING -j A",
        "-t nat -A OUTPUT -j A",
        "-t nat -A POSTROUTING -j B",
    ]);
    let compiled = compile(&ruleset, &[], 1).unwrap();
    assert_eq!(compiled.user_chain_rules, 4);
    let numbered: Vec<(TableName, &str, u32)> = user_chain_counters(&ruleset)
        .into_iter()
        .map(|(_, t, c, n)| (t, c.name.as_str(), n))
        .collect();
    assert_eq!(
        numbered,
        [
            (TableName::Filter, "F", 0),
            (TableName::Nat, "A", 2),
            (TableName::Nat, "B", 3)
        ]
    );
    // Each slot bumps its user counter, from whichever chain it is in.
    for (c, user) in [
        (chain::NAT_PREROUTING, 2),
        (chain::NAT_OUTPUT, 2),
        (chain::NAT_POSTROUTING, 3),
    ] {
        let slots = &compiled.chains[c as usize].rules;
        let config = compiled.chains[c as usize].config;
        let counters: Vec<u32> = slots
            .iter()
            .map(|a| config.counter_base + a.counter)
            .collect();
        assert_eq!(
            counters,
            [config.counter_base, config.user_counter_base + user],
            "chain {c}"
        );
    }
    // The limit counts every table's rules and the built-in chains'
    // policies: 4 user rules, INPUT's jump, the three nat jumps, and the
    // built-in chains' policies (every table's, `chain::COUNT`).
    let counted = 8 + chain::COUNT;
    let limits = Limits {
        ruleset_counters: counted as u32 - 1,
        ..LIMITS
    };
    assert_eq!(
        compile_with_limits(&ruleset, &[], 0, limits, None).err(),
        Some(CompileError::TooManyRulesetRules {
            rules: counted,
            limit: counted - 1
        })
    );
    let limits = Limits {
        ruleset_counters: counted as u32,
        ..LIMITS
    };
    assert!(compile_with_limits(&ruleset, &[], 0, limits, None).is_ok());
    assert!(
        CompileError::TooManyRulesetRules {
            rules: 17,
            limit: 16
        }
        .to_string()
        .contains("MAX_RULESET_COUNTERS")
    );
}

/// The mangle table's user-defined chains count last: their rules are
/// in `user_chain_rules`, whose counters the loader zeroes for a new
/// generation (left out, they would start from an old generation's).
#[test]
fn mangle_user_chain_rules_are_user_chain_rules() {
    let ruleset = typed(&[
        "-N F",
        "-A F -p tcp --dport 1 -j ACCEPT",
        "-A INPUT -j F",
        "-t mangle -N M",
        "-t mangle -A M -p tcp --dport 2 -j ACCEPT",
        "-t mangle -A M -p tcp --dport 3 -j ACCEPT",
        "-t mangle -A PREROUTING -j M",
    ]);
    let compiled = compile(&ruleset, &[], 0).unwrap();
    assert_eq!(compiled.user_chain_rules, 3);
}

/// The raw table's user-defined chains count last, after the IPv6 filter
/// table's: their rules must count against the limit too, or a ruleset
/// past it would write their counters into the next generation's share.
#[test]
fn raw_user_chain_rules_count_against_the_counter_limit() {
    let ruleset = typed(&[
        "-t raw -N R",
        "-t raw -A R -p tcp --dport 1 -j ACCEPT",
        "-t raw -A R -p tcp --dport 2 -j ACCEPT",
        "-t raw -A PREROUTING -j R",
    ]);
    // The built-in chains' policies (`chain::COUNT`), the jump and R's two
    // rules.
    let counted = chain::COUNT + 3;
    let limits = Limits {
        ruleset_counters: counted as u32 - 1,
        ..LIMITS
    };
    assert_eq!(
        compile_with_limits(&ruleset, &[], 0, limits, None).err(),
        Some(CompileError::TooManyRulesetRules {
            rules: counted,
            limit: counted - 1
        })
    );
    let limits = Limits {
        ruleset_counters: counted as u32,
        ..LIMITS
    };
    assert!(compile_with_limits(&ruleset, &[], 0, limits, None).is_ok());
}

/// The chains' slots and counters do not overlap in the generation's
/// share of `RULES` and `COUNTERS`, and the slot pool's limit is the
/// sum over chains.
#[test]
fn chains_share_the_rule_and_counter_pools() {
    let ruleset = typed(&[
        "-A INPUT -p tcp --dport 1 -j ACCEPT",
        "-A INPUT -p tcp --dport 2 -j ACCEPT",
        "-A OUTPUT -p tcp --dport 3 -j ACCEPT",
        "-t nat -A PREROUTING -p tcp --dport 4 -j DNAT --to 10.0.0.1",
    ]);
    let compiled = compile(&ruleset, &[], 0).unwrap();
    let mut slots = std::collections::HashSet::new();
    let mut counters = std::collections::HashSet::new();
    for chain in &compiled.chains {
        let config = chain.config;
        for (slot, action) in chain.rules.iter().enumerate() {
            assert!(
                slots.insert(config.rule_base + slot as u32),
                "slot taken twice"
            );
            assert!(counters.insert(config.counter_base + action.counter));
        }
        assert!(
            counters.insert(config.policy_counter),
            "policy counter taken twice"
        );
    }
    assert_eq!(slots.len(), 4);
    assert_eq!(counters.len(), 4 + chain::COUNT);
    let limits = Limits {
        ruleset_slots: 3,
        ..LIMITS
    };
    assert_eq!(
        compile_with_limits(&ruleset, &[], 0, limits, None).err(),
        Some(CompileError::TooManyRulesetSlots { slots: 4, limit: 3 })
    );
}

#[test]
fn nat_target_limit_counts_distinct_translations() {
    let lines: Vec<String> = (1..=5)
        .map(|n| {
            format!(
                "-t nat -A PREROUTING -s 10.0.0.{n} -j DNAT --to 10.1.0.{}",
                n % 4
            )
        })
        .collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let ruleset = typed(&lines);
    // 10.1.0.1 twice: four translations.
    let limits = Limits {
        nat_targets: 4,
        ..LIMITS
    };
    let compiled = compile_with_limits(&ruleset, &[], 0, limits, None).unwrap();
    assert_eq!(compiled.nat_targets.len(), 4);
    let limits = Limits {
        nat_targets: 3,
        ..LIMITS
    };
    let err = compile_with_limits(&ruleset, &[], 0, limits, None)
        .err()
        .unwrap();
    assert_eq!(err, CompileError::TooManyNatTargets { limit: 3 });
    assert!(err.to_string().contains("MAX_NAT_TARGETS"), "{err}");
}

#[test]
fn nat_rules_the_kernel_refuses_are_refused() {
    // Stored rulesets (ruleset.json) are checked again: a DNAT that
    // POSTROUTING reaches through a user-defined chain.
    let mut ruleset = typed(&["-t nat -N X", "-t nat -A X -j DNAT --to 10.0.0.2"]);
    ruleset.nat.chain_mut("POSTROUTING").unwrap().rules = vec![Rule::new(Target::Jump("X".into()))];
    let err = compile(&ruleset, &[], 0).err().unwrap();
    assert_eq!(
        err.to_string(),
        "rule 1 of the nat chain X is -j DNAT, but POSTROUTING reaches it, where the kernel \
         refuses it: DNAT changes where a new connection goes, before it is routed: use it in \
         PREROUTING (arriving packets) or OUTPUT (locally sent ones)"
    );
    // DROP in the nat table, DNAT in the filter table.
    let mut ruleset = Ruleset::default();
    ruleset.nat.chain_mut("PREROUTING").unwrap().rules = vec![Rule::new(Target::Drop)];
    assert_eq!(
        compile(&ruleset, &[], 0).err().unwrap().to_string(),
        "rule 1 of chain PREROUTING: -j DROP filters, which the nat table does not (iptables refuses it there too)"
    );
    let mut ruleset = Ruleset::default();
    ruleset.filter.chain_mut("FORWARD").unwrap().rules = vec![Rule::new(Target::Masquerade {
        ports: None,
        flags: NatFlags::default(),
    })];
    assert_eq!(
        compile(&ruleset, &[], 0).err().unwrap().to_string(),
        "rule 1 of chain FORWARD: -j MASQUERADE is a target of the nat table, not of the filter table"
    );
    // Rules in nat INPUT.
    let mut ruleset = Ruleset::default();
    ruleset.nat.chain_mut("INPUT").unwrap().rules = vec![Rule::new(Target::Accept)];
    assert_eq!(
        compile(&ruleset, &[], 0).err(),
        Some(CompileError::NatInputRules { rules: 1 })
    );
    // The IPv6 nat table's rules compile, and make the nat bit.
    for chain in ["PREROUTING", "POSTROUTING", "OUTPUT"] {
        let mut ruleset = Ruleset::default();
        ruleset.nat6.chain_mut(chain).unwrap().rules = vec![Rule::new(Target::Accept)];
        let compiled = compile(&ruleset, &[], 0).unwrap();
        assert_ne!(
            compiled.active_flags() & netbeast_common::ACTIVE_NAT,
            0,
            "{chain}"
        );
    }
}

/// The fields a rule's lowering uses, as the chain's `fields_used` says.
fn input_fields(lines: &[&str]) -> u32 {
    let compiled = compile(&typed(lines), &[], 0).unwrap();
    compiled.chains[chain::INPUT as usize].config.fields_used
}

#[test]
fn header_matches_use_their_fields_only() {
    let bit = |f: usize| 1u32 << f;
    // A flags set without TCP_FLAGS_NONE implies `-p tcp` and a TCP
    // header: `--syn` is one lookup.
    assert_eq!(
        input_fields(&["-A INPUT -p tcp --syn -j DROP"]),
        bit(field::TCP_FLAGS)
    );
    assert_eq!(
        input_fields(&["-A INPUT -p tcp --dport 22 --tcp-flags SYN,ACK SYN -j DROP"]),
        bit(field::TCP_FLAGS) | bit(field::L4B)
    );
    assert_eq!(
        input_fields(&["-A INPUT -m length --length 100:200 -j DROP"]),
        bit(field::LENGTH)
    );
    assert_eq!(
        input_fields(&["-A INPUT -m tos --tos 0x10 -m dscp --dscp 4 -j DROP"]),
        bit(field::TOS)
    );
    assert_eq!(
        input_fields(&["-A INPUT -m addrtype --dst-type LOCAL -j DROP"]),
        bit(field::DST_TYPE)
    );
    // A range is address atoms: no field of its own.
    assert_eq!(
        input_fields(&["-A INPUT -m iprange --src-range 10.0.0.1-10.0.0.6 -j DROP"]),
        bit(field::SRC)
    );
    // A match every key satisfies constrains nothing.
    assert_eq!(
        input_fields(&["-A INPUT -m length --length 0:65535 -j DROP"]),
        0
    );
}

#[test]
fn a_range_is_a_slot_per_prefix_and_its_negation_one() {
    // 10.0.0.1-10.0.0.6: .1/32, .2/31, .4/31, .6/32.
    let positive = compile(
        &typed(&["-A INPUT -m iprange --src-range 10.0.0.1-10.0.0.6 -j DROP"]),
        &[],
        0,
    )
    .unwrap();
    assert_eq!(positive.chains[chain::INPUT as usize].config.rule_count, 4);
    let negated = compile(
        &typed(&["-A INPUT -m iprange ! --src-range 10.0.0.1-10.0.0.6 -j DROP"]),
        &[],
        0,
    )
    .unwrap();
    assert_eq!(negated.chains[chain::INPUT as usize].config.rule_count, 1);
    // The whole address space is one prefix; `-m ttl --ttl-lt 0` can
    // never match and takes no slot.
    let all = compile(
        &typed(&[
            "-A INPUT -m iprange --dst-range 0.0.0.0-255.255.255.255 -j DROP",
            "-A INPUT -m ttl --ttl-lt 0 -j DROP",
        ]),
        &[],
        0,
    )
    .unwrap();
    assert_eq!(all.chains[chain::INPUT as usize].config.rule_count, 1);
    assert_eq!(all.chains[chain::INPUT as usize].config.fields_used, 0);
}

#[test]
fn range_expansion_is_bounded_by_the_terms_limit() {
    // 62 source prefixes times 62 destination prefixes: past
    // MAX_TERMS_PER_RULE.
    let ruleset = typed(&["-A INPUT -m iprange --src-range 0.0.0.1-255.255.255.254 \
         --dst-range 0.0.0.1-255.255.255.254 -j DROP"]);
    assert!(matches!(
        compile(&ruleset, &[], 0),
        Err(CompileError::TooManyTerms { .. })
    ));
}

#[test]
fn packet_only_fields_are_refused_in_nat_output() {
    for (line, name) in [
        ("-t nat -A OUTPUT -p tcp --syn -j ACCEPT", "tcp flags"),
        ("-t nat -A OUTPUT -m length --length 60 -j ACCEPT", "length"),
        ("-t nat -A OUTPUT -m ttl --ttl-eq 64 -j ACCEPT", "ttl"),
        ("-t nat -A OUTPUT -m dscp --dscp 0 -j ACCEPT", "tos"),
    ] {
        let err = compile(&typed(&[line]), &[], 0).err();
        assert_eq!(
            err,
            Some(CompileError::NatOutputField {
                chain: "OUTPUT".into(),
                rule: 1,
                field: name,
            }),
            "{line}"
        );
    }
    // What a socket has: addresses, their types, the protocol and ports.
    let ok = typed(&["-t nat -A OUTPUT -p tcp --dport 80 -m addrtype --dst-type LOCAL -j ACCEPT"]);
    assert!(compile(&ok, &[], 0).is_ok());
    // The filter table's OUTPUT sees packets.
    let filter = typed(&["-A OUTPUT -p tcp --syn -m length --length 60 -j DROP"]);
    assert!(compile(&filter, &[], 0).is_ok());
}

/// Docker's whole ruleset, nat table with `-m addrtype --dst-type LOCAL`
/// included, compiles: PREROUTING and nat OUTPUT look the destination's
/// type up.
#[test]
fn docker_with_addrtype_compiles() {
    for text in [
        include_str!("../../../tests/fixtures/iptables-save/docker-legacy.rules"),
        include_str!("../../../tests/fixtures/iptables-save/docker-nft.rules"),
    ] {
        let file = crate::rules::save::parse_restore(text).unwrap();
        let mut ruleset = Ruleset::default();
        crate::rules::save::apply_restore(&mut ruleset, &file, false).unwrap();
        let compiled = compile(&ruleset, &interfaces(), 0).unwrap();
        let used = |c: u32| compiled.chains[c as usize].config.fields_used;
        assert_ne!(used(chain::NAT_PREROUTING) & (1 << field::DST_TYPE), 0);
        assert_ne!(used(chain::NAT_OUTPUT) & (1 << field::DST_TYPE), 0);
    }
}
// ---------------------------------------------------------------- guards

#[test]
fn nth_cascade_takes_turns_in_both_models() {
    let ruleset = typed(&[
        "-A INPUT -p tcp -m statistic --mode nth --every 3 --packet 0 -j DROP",
        "-A INPUT -p tcp -m statistic --mode nth --every 2 --packet 0 -j REJECT",
        "-A INPUT -p tcp -j ACCEPT",
    ]);
    let compiled = compile(&ruleset, &[], 0).unwrap();
    let (mut reference_guards, mut compiled_guards) = (GuardState::new(1), GuardState::new(1));
    let input = ruleset.filter.chain("INPUT").unwrap();
    let pkt = tcp_packet(1000, 80);
    for i in 0..12 {
        let want = reference::classify_table_with(
            &ruleset.filter,
            "INPUT",
            &[],
            &pkt,
            &mut reference_guards,
        );
        let got = compiled.classify_with(chain::INPUT, &pkt, &mut compiled_guards);
        assert_eq!(got, want, "packet {i}");
        assert_eq!(numbers(got), vec![i % 3], "packet {i}");
    }
    assert_eq!(input.rules.len(), 3);
}

/// kube-proxy's shape: a service chain of guarded jumps to endpoint chains.
fn kube_cascade(endpoints: usize) -> Ruleset {
    let mut lines = vec!["-N SVC".to_string()];
    for e in 0..endpoints {
        lines.push(format!("-N SEP{e}"));
        lines.push(format!("-A SEP{e} -s 10.1.2.3 -j DROP"));
        lines.push(format!("-A SEP{e} -p tcp -j ACCEPT"));
        let probability = 1.0 / (endpoints - e) as f64;
        lines.push(if e + 1 < endpoints {
            format!("-A SVC -m statistic --mode random --probability {probability:.5} -j SEP{e}")
        } else {
            format!("-A SVC -j SEP{e}")
        });
    }
    lines.push("-A INPUT -p tcp --dport 80 -j SVC".to_string());
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    typed(&lines)
}

#[test]
fn guarded_jump_cascades_are_bounded() {
    // Each endpoint costs three guarded slots on the path: the jump and
    // the endpoint's two rules, which carry "the jump's draw held".
    let compiled = compile(&kube_cascade(300), &[], 0).unwrap();
    let input = &compiled.chains[chain::INPUT as usize];
    assert!(input.max_guarded >= 3 * 299 && input.max_guarded <= MAX_GUARDED_SLOTS);
    // One record per draw, one requirement record per endpoint chain.
    assert_eq!(compiled.guards.len(), 2 * 299);
    let err = compile(&kube_cascade(400), &[], 0).err().unwrap();
    assert!(
        matches!(err, CompileError::TooManyGuardedSlots { ref chain, .. } if chain == "INPUT"),
        "{err}"
    );
    assert!(err.to_string().contains("MAX_GUARDED_SLOTS"), "{err}");
    // The endpoints act only when their draw held: over many packets every
    // endpoint gets some, and no packet is accepted twice.
    let ruleset = kube_cascade(4);
    let compiled = compile(&ruleset, &[], 0).unwrap();
    let mut guards = GuardState::new(7);
    let mut per_endpoint = [0usize; 4];
    for _ in 0..4000 {
        let hits = compiled.classify_with(chain::INPUT, &tcp_packet(1000, 80), &mut guards);
        let last = hits.last().unwrap();
        assert_eq!(hits.len(), 3, "{hits:?}");
        let e: usize = last.chain.trim_start_matches("SEP").parse().unwrap();
        per_endpoint[e] += 1;
    }
    for (e, &n) in per_endpoint.iter().enumerate() {
        assert!((850..=1150).contains(&n), "endpoint {e}: {n} of 4000");
    }
}

/// kube-proxy's nat table (its 1.29 shape, tests/fixtures/iptables-save):
/// `services` ClusterIP services 10.96.s/250.(s%250 + 1):80, each a
/// `-m statistic` cascade over `endpoints` endpoint chains that mark
/// hairpin traffic for masquerade and DNAT to 10.244.x.y:8080.
fn kube_services(services: usize, endpoints: usize) -> Ruleset {
    let vip = |s: usize| Ipv4Addr::new(10, 96, (s / 250) as u8, (s % 250 + 1) as u8);
    let endpoint = |n: usize| Ipv4Addr::new(10, 244, (n / 250) as u8, (n % 250 + 1) as u8);
    let mut lines = vec![
        "-t nat -N KUBE-SERVICES".to_string(),
        "-t nat -N KUBE-MARK-MASQ".to_string(),
        "-t nat -N KUBE-POSTROUTING".to_string(),
        "-t nat -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
            .to_string(),
        "-t nat -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
            .to_string(),
        "-t nat -A POSTROUTING -j KUBE-POSTROUTING".to_string(),
        "-t nat -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000".to_string(),
        "-t nat -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN".to_string(),
        "-t nat -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000".to_string(),
        "-t nat -A KUBE-POSTROUTING -j MASQUERADE --random-fully".to_string(),
    ];
    for s in 0..services {
        let (svc, vip) = (format!("KUBE-SVC-{s}"), vip(s));
        let comment = format!("-m comment --comment \"ns/svc{s}:http cluster IP\"");
        lines.push(format!("-t nat -N {svc}"));
        lines.push(format!(
            "-t nat -A KUBE-SERVICES -d {vip}/32 -p tcp {comment} -m tcp --dport 80 -j {svc}"
        ));
        lines.push(format!(
            "-t nat -A {svc} ! -s 10.244.0.0/16 -d {vip}/32 -p tcp {comment} -m tcp --dport 80 \
             -j KUBE-MARK-MASQ"
        ));
        for e in 0..endpoints {
            let (sep, ep) = (format!("KUBE-SEP-{s}-{e}"), endpoint(s * endpoints + e));
            lines.push(format!("-t nat -N {sep}"));
            lines.push(format!("-t nat -A {sep} -s {ep}/32 -j KUBE-MARK-MASQ"));
            lines.push(format!(
                "-t nat -A {sep} -p tcp -m tcp -j DNAT --to-destination {ep}:8080"
            ));
            let left = endpoints - e;
            lines.push(if left > 1 {
                format!(
                    "-t nat -A {svc} -m statistic --mode random --probability {:.11} -j {sep}",
                    1.0 / left as f64
                )
            } else {
                format!("-t nat -A {svc} -j {sep}")
            });
        }
    }
    lines.push("-t nat -A KUBE-SERVICES -m addrtype --dst-type LOCAL -j RETURN".to_string());
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    typed(&lines)
}

#[test]
fn kube_proxy_services_fit_the_search_budget() {
    // Added in chain order, a packet could pass 300 services' jumps and
    // MARKs and reach their guarded cascades; by destination it meets one
    // service's (`steps.rs`), so the nat chains compile.
    let ruleset = kube_services(300, 3);
    let compiled = compile(&ruleset, &[], 0).unwrap();
    for c in [chain::NAT_PREROUTING, chain::NAT_OUTPUT] {
        let chain = &compiled.chains[c as usize];
        assert!(chain.rules.len() > 4_000, "{}", chain.rules.len());
        assert!(chain.max_passes <= 8, "passes {}", chain.max_passes);
        assert!(chain.max_guarded <= 16, "guarded {}", chain.max_guarded);
    }
    // Packets to services (the first, the last, one past the first
    // word's), to a service's other port, from an endpoint to its own
    // service (hairpin: marked twice), and to nothing; each as iptables
    // would, with the bounds checked on every search.
    let packets: Vec<PacketView> = [(0usize, 80u16), (299, 80), (77, 80), (5, 443)]
        .into_iter()
        .map(|(s, port)| PacketView {
            dst: Ipv4Addr::new(10, 96, (s / 250) as u8, (s % 250 + 1) as u8),
            ..tcp_packet(40_000, port)
        })
        .chain([
            PacketView {
                src: Ipv4Addr::new(10, 244, 0, 10),
                dst: Ipv4Addr::new(10, 96, 0, 4),
                ..tcp_packet(40_000, 80)
            },
            tcp_packet(40_000, 80),
        ])
        .collect();
    for seed in 0..5 {
        compare(&ruleset, &compiled, &packets, seed).unwrap();
    }
    // With too little room for the classes, the pods' source addresses
    // of the endpoint chains become guards over their /16 (`coarsened`):
    // the same packets get the same rules, with fewer class words.
    let room = compiled.packed.words.len() as u32 / 4;
    let limits = Limits {
        class_words: room,
        ..LIMITS
    };
    let coarse = compile_with_limits(&ruleset, &[], 0, limits, None).unwrap();
    assert!(coarse.packed.words.len() as u32 <= room);
    let masks = coarse
        .guards
        .iter()
        .filter(|g| g.kind == guard_kind::ADDR_MASK)
        .count();
    assert_eq!(masks, 900, "a guard per endpoint chain's -s");
    for seed in 0..5 {
        compare(&ruleset, &coarse, &packets, seed).unwrap();
    }
    // A field the coarsening does not serve is refused as before.
    let tight = Limits {
        class_words: 10,
        ..LIMITS
    };
    assert!(matches!(
        compile_with_limits(&ruleset, &[], 0, tight, None),
        Err(CompileError::TooManyClassWords { limit: 10, .. })
    ));
    // What the classes cannot tell apart still adds up: services that
    // share one VIP are one packet's cascades, forty times over.
    let mut same = kube_services(40, 3);
    for rule in &mut same.nat.chain_mut("KUBE-SERVICES").unwrap().rules {
        if rule.destination.is_some() {
            rule.destination = Some(Negatable::is(Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 1), 32)));
        }
    }
    let err = compile(&same, &[], 0).err().unwrap();
    assert!(
        matches!(err, CompileError::TooManyNonTerminating { ref chain, passes, .. }
            if chain == "PREROUTING" && passes > MAX_NONTERMINATING_RULES),
        "{err}"
    );
}

/// A slot is a term, and kube-proxy's 10,000 services make 220,000 of
/// them: with a dense array of the 22 key fields' sets a slot took 830
/// bytes, and the flatten's time went to clearing and copying pages.
#[test]
fn a_slot_stays_small() {
    let size = std::mem::size_of::<flatten::Slot<'_>>();
    assert!(size <= 256, "a slot takes {size} bytes");
}

/// nat PREROUTING and OUTPUT both jump to KUBE-SERVICES: the second takes
/// the first's slots (counters shifted to its own base) instead of walking
/// the chain again, and every table is as if it had.
#[test]
fn a_chain_two_built_in_chains_jump_to_is_walked_once() {
    let ruleset = kube_services(300, 3);
    let before = flatten::REUSED.get();
    let reused = compile(&ruleset, &[], 0).unwrap();
    assert_eq!(
        flatten::REUSED.get() - before,
        1,
        "OUTPUT reused PREROUTING's walk"
    );
    let walked = Limits {
        reused_walk_slots: usize::MAX,
        ..LIMITS
    };
    let before = flatten::REUSED.get();
    let again = compile_with_limits(&ruleset, &[], 0, walked, None).unwrap();
    assert_eq!(flatten::REUSED.get(), before);
    for (a, b) in reused.chains.iter().zip(&again.chains) {
        assert_eq!(a.rules, b.rules, "slots and counters");
        assert_eq!(a.owners, b.owners);
        assert_eq!(a.config, b.config);
        assert_eq!((a.max_passes, a.max_guarded), (b.max_passes, b.max_guarded));
    }
    assert_eq!(reused.packed.words, again.packed.words);
    assert_eq!(reused.guards, again.guards);
    // OUTPUT's slots have PREROUTING's terms: it takes PREROUTING's
    // tables rather than building them again, and gets the same.
    let before = TABLES_REUSED.get();
    let shared = compile(&ruleset, &[], 0).unwrap();
    assert_eq!(
        TABLES_REUSED.get() - before,
        1,
        "OUTPUT took PREROUTING's tables"
    );
    REUSE_TABLES.set(false);
    let built = compile(&ruleset, &[], 0);
    REUSE_TABLES.set(true);
    let built = built.unwrap();
    assert_eq!(TABLES_REUSED.get() - before, 1);
    for (a, b) in shared.chains.iter().zip(&built.chains) {
        assert_eq!(a.config, b.config);
        assert_eq!(a.addr_prefixes, b.addr_prefixes);
        assert_eq!(a.key_classes, b.key_classes);
        assert_eq!((&a.ifaces, &a.macs), (&b.ifaces, &b.macs));
    }
    assert_eq!(shared.packed.words, built.packed.words);
    assert_eq!(shared.packed.headers, built.packed.headers);
    // A chain that one built-in chain jumps to twice for the same packets
    // (its second walk has nothing of an earlier built-in chain's to
    // copy) and that another then jumps to: compiled as if walked each time.
    let twice = typed(&[
        "-N web",
        "-A web -p tcp --dport 80 -j ACCEPT",
        "-A web -s 10.0.0.0/8 -j DROP",
        "-A INPUT -j web",
        "-A INPUT -j LOG",
        "-A INPUT -j web",
        "-A OUTPUT -j web",
    ]);
    let every = Limits {
        reused_walk_slots: 0,
        ..LIMITS
    };
    let before = flatten::REUSED.get();
    let a = compile_with_limits(&twice, &[], 0, every, None).unwrap();
    assert_eq!(
        flatten::REUSED.get() - before,
        1,
        "OUTPUT copies INPUT's first walk"
    );
    let b = compile_with_limits(&twice, &[], 0, walked, None).unwrap();
    for (a, b) in a.chains.iter().zip(&b.chains) {
        assert_eq!((&a.rules, &a.owners), (&b.rules, &b.owners));
    }
    // A target nat OUTPUT refuses is refused there, reused or not.
    let mut logged = kube_services(300, 3);
    let services = logged.nat.chain_mut("KUBE-SERVICES").unwrap();
    let mut log = typed(&["-t nat -N X", "-t nat -A X -j LOG"])
        .nat
        .chain("X")
        .unwrap()
        .rules[0]
        .clone();
    log.counter = Default::default();
    services.rules.insert(7, log);
    for limits in [LIMITS, walked] {
        let err = compile_with_limits(&logged, &[], 0, limits, None)
            .err()
            .unwrap();
        assert!(
            matches!(err, CompileError::InvalidRule { ref chain, rule: 8, ref problem }
                if chain == "KUBE-SERVICES" && problem.contains("nat OUTPUT")),
            "{err}"
        );
    }
}

#[test]
fn a_coarsening_hint_skips_the_overflowing_compile_and_changes_nothing() {
    let ruleset = kube_services(300, 3);
    let room = compile(&ruleset, &[], 0).unwrap().packed.words.len() as u32 / 4;
    let limits = Limits {
        class_words: room,
        ..LIMITS
    };
    let rules = ruleset.rule_count();
    // Without a hint: flattened twice, and says how.
    let before = COMPILES.get();
    let unhinted = compile_with_limits(&ruleset, &[], 0, limits, None).unwrap();
    assert_eq!(COMPILES.get() - before, 2);
    let hint = Coarsening {
        source: true,
        rules,
    };
    assert_eq!(unhinted.coarsened, Some(hint));
    // With it: once, to the same tables (what `netbeast trace` relies on
    // when it compiles again with the hint the loader used).
    let before = COMPILES.get();
    let hinted = compile_with_limits(&ruleset, &[], 0, limits, Some(hint)).unwrap();
    assert_eq!(COMPILES.get() - before, 1);
    assert_eq!(hinted.coarsened, Some(hint));
    assert_eq!(hinted.packed.words, unhinted.packed.words);
    assert_eq!(hinted.guards.len(), unhinted.guards.len());
    for (h, u) in hinted.chains.iter().zip(&unhinted.chains) {
        assert_eq!(h.rules, u.rules);
        assert_eq!(h.owners, u.owners);
    }
    // A ruleset that shrank below half the rules the overflow was seen
    // at compiles as if there were no hint: here uncoarsened, as it fits.
    let small = kube_services(20, 3);
    let compiled = compile_with_limits(&small, &[], 0, limits, Some(hint)).unwrap();
    assert_eq!(compiled.coarsened, None);
    assert!(
        !compiled
            .guards
            .iter()
            .any(|g| g.kind == guard_kind::ADDR_MASK)
    );
    // A hint whose coarse compile fails is tried, then the ruleset is
    // compiled as without it (and the error is the uncoarsened one's).
    let destination = Coarsening {
        source: false,
        rules,
    };
    let tight = Limits {
        class_words: 10,
        ..LIMITS
    };
    assert!(matches!(
        compile_with_limits(&ruleset, &[], 0, tight, Some(destination)),
        Err(CompileError::TooManyClassWords { limit: 10, .. })
    ));
    // A hint is a compile's first try, whether or not the ruleset would
    // fit without it (the loader's next compile and the trace's agree).
    let compiled = compile_with_limits(&ruleset, &[], 0, LIMITS, Some(destination)).unwrap();
    assert_eq!(compiled.coarsened, Some(destination));
    assert!(
        compiled
            .guards
            .iter()
            .any(|g| g.kind == guard_kind::ADDR_MASK)
    );
}

#[test]
fn too_many_statistic_matches_on_one_rule_are_refused() {
    let mut rule = Rule::new(Target::Accept);
    for _ in 0..=MAX_GUARDS_PER_RULE {
        rule.matches.push(Match::Statistic(Statistic {
            negated: false,
            mode: StatisticMode::Nth {
                every: 2,
                packet: 0,
            },
        }));
    }
    let err = compile(&only_input(vec![rule]), &[], 0).err().unwrap();
    assert!(err.to_string().contains("MAX_GUARDS_PER_RULE"), "{err}");
}

// ------------------------------------------------------- state slots

/// The state slot of each guard of `compiled` that has one, by owner
/// (chain, rule) in rule order.
fn slots_of(compiled: &CompiledRuleset) -> Vec<((String, usize), u64)> {
    compiled
        .guards
        .iter()
        .zip(&compiled.guard_owners)
        .filter(|(g, _)| g.has_state_slot())
        .map(|(g, owner)| {
            let (_, rule, _) = owner.as_ref().unwrap();
            ((rule.chain.clone(), rule.rule), g.c)
        })
        .collect()
}

const KEPT_RULES: [&str; 3] = [
    "-A INPUT -p tcp --syn --dport 80 -m connlimit --connlimit-above 15 --connlimit-mask 32 -j REJECT --reject-with tcp-reset",
    "-A INPUT -m state --state RELATED,ESTABLISHED -m limit --limit 50/second --limit-burst 150 -j ACCEPT",
    "-A INPUT -p tcp -m statistic --mode nth --every 3 --packet 0 -j DROP",
];

#[test]
fn unchanged_rules_keep_their_state_slots_and_new_ones_get_free_ones() {
    // Without a record of the running generation: fresh, in order, in
    // the generation's half of the slots.
    let first = typed(&KEPT_RULES);
    let mut compiled = compile(&first, &[], 1).unwrap();
    let plan = assign_state_slots(&mut compiled, None);
    let slots = slots_of(&compiled);
    assert_eq!(
        slots.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
        (0..3)
            .map(|n| u64::from(netbeast_common::MAX_STATEFUL_GUARDS + n))
            .collect::<Vec<_>>()
    );
    assert_eq!(plan.fresh.len(), 3);
    assert_eq!(plan.fresh_connlimit, vec![slots[0].1 as u32]);
    assert_eq!(plan.kept, 0);

    // fail2ban's ban above them, a new limit rule below, counters zeroed
    // (-Z): the three keep their slots, wherever they moved; the new rule
    // gets a slot the running generation does not use.
    let mut lines = vec!["-A INPUT -s 10.99.99.99 -j DROP"];
    lines.extend(KEPT_RULES);
    lines.push("-A INPUT -m limit --limit 1/second -j LOG");
    let mut second = typed(&lines);
    for rule in &mut second.filter.chain_mut("INPUT").unwrap().rules {
        rule.counter.packets = 7;
    }
    let mut compiled2 = compile(&second, &[], 0).unwrap();
    let plan2 = assign_state_slots(&mut compiled2, Some(&plan.slots));
    let slots2 = slots_of(&compiled2);
    assert_eq!(plan2.kept, 3);
    for (n, (_, slot)) in slots.iter().enumerate() {
        assert_eq!(
            slots2[n].1, *slot,
            "rule {n} moved down one and kept its slot"
        );
    }
    let new = slots2[3].1 as u32;
    assert!(!plan.slots.slots.values().any(|&s| s == new));
    assert_eq!(plan2.fresh, vec![new]);
    assert!(plan2.freed.is_empty());

    // Deleted: its slot is freed; added again, it starts fresh.
    let mut third = second.clone();
    third.filter.chain_mut("INPUT").unwrap().rules.remove(2);
    let mut compiled3 = compile(&third, &[], 1).unwrap();
    let plan3 = assign_state_slots(&mut compiled3, Some(&plan2.slots));
    assert_eq!(plan3.freed, vec![slots[1].1 as u32]);
    assert_eq!(plan3.kept, 3);
    let mut compiled4 = compile(&second, &[], 0).unwrap();
    let plan4 = assign_state_slots(&mut compiled4, Some(&plan3.slots));
    assert_eq!(plan4.kept, 3);
    assert_eq!(plan4.fresh.len(), 1, "the rule added again starts fresh");
}

#[test]
fn identical_rules_and_inlined_copies_have_one_slot_each() {
    // Two rules of one text: told apart by their occurrence. A user chain
    // jumped to from two places: one slot per rule, shared by its copies.
    let ruleset = typed(&[
        "-N LIM",
        "-A LIM -m limit --limit 5/second -j ACCEPT",
        "-A INPUT -p tcp -j LIM",
        "-A INPUT -p udp -j LIM",
        "-A INPUT -m statistic --mode nth --every 2 --packet 0 -j DROP",
        "-A INPUT -m statistic --mode nth --every 2 --packet 0 -j DROP",
    ]);
    let mut compiled = compile(&ruleset, &[], 0).unwrap();
    let plan = assign_state_slots(&mut compiled, Some(&GuardSlots::default()));
    let slots = slots_of(&compiled);
    assert_eq!(slots.len(), 3, "{slots:?}");
    let mut distinct: Vec<u64> = slots.iter().map(|(_, s)| *s).collect();
    distinct.dedup();
    assert_eq!(distinct.len(), 3);
    assert_eq!(plan.slots.slots.len(), 3);
}

/// ip6tables' matches (icmp6, hl, rt, frag, ipv6header, TCP flags,
/// length) in an IPv6 INPUT chain: the compiled classifier and the
/// reference act on the same rules for a grid of IPv6 packets.
#[test]
fn ipv6_matches_agree_with_the_reference() {
    use crate::rules::{command, parse};
    use netbeast_common::{Ipv6Ext, ipv6_frag, ipv6_mask};
    use std::net::Ipv6Addr;
    let lines = [
        "-A INPUT -p ipv6-icmp --icmpv6-type echo-request -j ACCEPT",
        "-A INPUT -p ipv6-icmp -m icmp6 ! --icmpv6-type 1/4 -j LOG",
        "-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 1/4 -j DROP",
        "-A INPUT -m hl --hl-lt 2 -j DROP",
        "-A INPUT -m hl ! --hl-eq 64 -p tcp --syn -j DROP",
        "-A INPUT -m rt --rt-type 0 -j DROP",
        "-A INPUT -m rt ! --rt-segsleft 1:3 --rt-len 24 -j ACCEPT",
        "-A INPUT -m frag --fragid 100:200 --fragmore -j DROP",
        "-A INPUT -m frag ! --fragid 150 --fraglast -j ACCEPT",
        "-A INPUT -m ipv6header --header hop-by-hop,protocol -j ACCEPT",
        "-A INPUT -m ipv6header ! --header ipv6-route --soft -m length --length 0:100 -j DROP",
        "-A INPUT -p udp -m ipv6header --header ipv6-frag --soft -j RETURN",
    ];
    let mut ruleset = Ruleset::default();
    for line in lines {
        let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let cmd = parse::parse_ip6tables_args(&args).unwrap_or_else(|e| panic!("{line}: {e}"));
        command::apply(&mut ruleset, &cmd).unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    let compiled = compile(&ruleset, &interfaces(), 1).expect("the IPv6 ruleset compiles");
    let c = &compiled.chains[chain::INPUT6 as usize];
    let exts = [
        Ipv6Ext::default(),
        Ipv6Ext {
            mask: ipv6_mask::HOPOPTS,
            ..Ipv6Ext::default()
        },
        Ipv6Ext {
            mask: ipv6_mask::ROUTING,
            rt_type: 0,
            rt_segsleft: 2,
            rt_len: 24,
            ..Ipv6Ext::default()
        },
        Ipv6Ext {
            mask: ipv6_mask::ROUTING,
            rt_type: 2,
            rt_segsleft: 5,
            rt_len: 24,
            ..Ipv6Ext::default()
        },
        Ipv6Ext {
            mask: ipv6_mask::FRAGMENT,
            frag: ipv6_frag::FIRST | ipv6_frag::MORE,
            frag_id: 150,
            ..Ipv6Ext::default()
        },
        Ipv6Ext {
            mask: ipv6_mask::FRAGMENT | ipv6_mask::DSTOPTS,
            frag: 0,
            frag_id: 7,
            ..Ipv6Ext::default()
        },
    ];
    let mut checked = 0;
    let mut reference_guards = GuardState::new(1);
    let mut compiled_guards = GuardState::new(1);
    for ext in exts {
        for (protocol, l4) in [
            (
                58,
                L4Header::Icmp {
                    icmp_type: 128,
                    code: 0,
                },
            ),
            (
                58,
                L4Header::Icmp {
                    icmp_type: 1,
                    code: 4,
                },
            ),
            (
                58,
                L4Header::Icmp {
                    icmp_type: 1,
                    code: 3,
                },
            ),
            (
                6,
                L4Header::Ports {
                    source: 1,
                    destination: 22,
                },
            ),
            (
                17,
                L4Header::Ports {
                    source: 1,
                    destination: 53,
                },
            ),
        ] {
            for (ttl, tcp_flags, length) in [(1, 0x02, 60), (64, 0x02, 200), (63, 0x12, 90)] {
                let mut header = HeaderFields {
                    ttl,
                    tcp_flags,
                    length,
                    ..Default::default()
                };
                // What ends the chain, as the parser's walk gives it.
                header.ipv6_ext = Ipv6Ext {
                    mask: ext.mask | ipv6_mask::PROTO,
                    ..ext
                };
                let pkt = PacketView {
                    src: Ipv4Addr::UNSPECIFIED,
                    dst: Ipv4Addr::UNSPECIFIED,
                    addr6: Some((
                        "fd00::1".parse::<Ipv6Addr>().unwrap(),
                        "fd00::2".parse::<Ipv6Addr>().unwrap(),
                    )),
                    protocol,
                    fragment_offset_nonzero: false,
                    l4: Some(l4),
                    in_ifindex: 2,
                    out_ifindex: 0,
                    mac_source: [2, 0, 0, 0, 0, 1],
                    ct_state: netbeast_common::ct_state::UNTRACKED,
                    header,
                };
                let want = reference::classify_table_with(
                    &ruleset.filter6,
                    "INPUT",
                    &interfaces(),
                    &pkt,
                    &mut reference_guards,
                );
                let (slots, _) = compiled.search_slots(chain::INPUT6, &pkt, &mut compiled_guards);
                let got: Vec<RuleRef> = slots
                    .iter()
                    .map(|&slot| c.owners[slot as usize].clone())
                    .collect();
                assert_eq!(got, want, "packet {pkt:?}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 6 * 5 * 3);
}

/// IPv6 address words are hashed as IPv4 addresses are: a `/128` and a
/// `/64` source give the words they constrain their full or prefix
/// lengths in the address hash (`addr_lengths`), not the trie.
#[test]
fn ipv6_address_words_hash_their_prefix_lengths() {
    use crate::rules::{command, parse};
    let mut ruleset = Ruleset::default();
    for line in [
        "-A INPUT -s fd00:1:2:3::9/128 -j DROP",
        "-A INPUT -s fd00:1:2:4::/64 -j DROP",
    ] {
        let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let cmd = parse::parse_ip6tables_args(&args).unwrap_or_else(|e| panic!("{line}: {e}"));
        command::apply(&mut ruleset, &cmd).unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    let compiled = compile(&ruleset, &interfaces(), 1).expect("the IPv6 ruleset compiles");
    let config = &compiled.chains[chain::INPUT6 as usize].config;
    let lengths = |f: usize| config.addr_lengths[field::addr_slot(f)];
    // Word 0 (fd00:0001) and word 1 (0002:0003 / 0002:0004): whole.
    assert_eq!(lengths(field::SRC), [32, 0, 0, 0]);
    assert_eq!(lengths(field::SRC6_1), [32, 0, 0, 0]);
    // Words 2 and 3: the /128's alone constrains them.
    assert_eq!(lengths(field::SRC6_2), [32, 0, 0, 0]);
    assert_eq!(lengths(field::SRC6_3), [32, 0, 0, 0]);
}

/// Compiles `lines` of `ip6tables` commands.
fn compile6(lines: &[String]) -> CompiledRuleset {
    use crate::rules::{command, parse};
    let mut ruleset = Ruleset::default();
    for line in lines {
        let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let cmd = parse::parse_ip6tables_args(&args).unwrap_or_else(|e| panic!("{line}: {e}"));
        command::apply(&mut ruleset, &cmd).unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    compile(&ruleset, &interfaces(), 1).expect("the IPv6 ruleset compiles")
}

/// An IPv6 direction's lead word (`ChainConfig::addr6_lead`): the word
/// that tells the rules' addresses apart best, among those every rule that
/// names an address constrains; none with a negated address, or with one
/// word looked up. Then a packet whose lead word no rule names is not
/// looked up in the other words, and classifies as the reference does.
#[test]
fn ipv6_lead_words_skip_the_other_words_exactly() {
    let lead = |lines: &[String]| {
        let c = compile6(lines);
        let config = c.chains[chain::INPUT6 as usize].config;
        (
            netbeast_common::addr6_lead(config.addr6_lead, true),
            netbeast_common::addr6_lead(config.addr6_lead, false),
        )
    };
    let blocklist: Vec<String> = (0..50)
        .map(|i| format!("-A INPUT -s 2001:2::a00:{i:x}/128 -p udp --dport 9 -j DROP"))
        .chain(["-A INPUT -p udp --dport 9 -j DROP".to_string()])
        .collect();
    // Words 0 to 2 are the same in every rule: word 3 decides.
    assert_eq!(lead(&blocklist), (Some(3), None));
    // Spread over word 1 (/64s of one /32): word 1.
    let wide: Vec<String> = (0..20)
        .map(|i| format!("-A INPUT -d 2001:db8:{i:x}::/64 -j DROP"))
        .collect();
    assert_eq!(lead(&wide), (None, Some(1)));
    // A /32 constrains word 0 only: the lead is word 0.
    let mut mixed = blocklist.clone();
    mixed.push("-A INPUT -s 2001:3::/32 -j DROP".into());
    assert_eq!(lead(&mixed), (Some(0), None));
    // A negated address: no lead (its rule holds where words differ).
    let mut negated = blocklist.clone();
    negated.push("-A INPUT ! -s 2001:2::a00:7/128 -j ACCEPT".into());
    assert_eq!(lead(&negated), (None, None));
    // One word looked up: nothing to skip.
    let short = vec!["-A INPUT -s 2001:2::/32 -j DROP".to_string()];
    assert_eq!(lead(&short), (None, None));

    // The kernel's search (emulated through its tables) against the
    // reference, for packets that share every word but one with a rule.
    for lines in [&blocklist, &wide, &mixed] {
        let compiled = compile6(lines);
        let mut ruleset = Ruleset::default();
        for line in lines.iter() {
            use crate::rules::{command, parse};
            let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            command::apply(&mut ruleset, &parse::parse_ip6tables_args(&args).unwrap()).unwrap();
        }
        for addr in [
            "2001:2::a00:7",
            "2001:2::a00:77",
            "2001:2::1:a00:7",
            "2001:2:0:1::a00:7",
            "2001:3::a00:7",
            "2001:db8:3::1",
            "2001:db8:33::1",
            "2001:db9:3::1",
        ] {
            let a: std::net::Ipv6Addr = addr.parse().unwrap();
            let pkt = PacketView {
                src: Ipv4Addr::UNSPECIFIED,
                dst: Ipv4Addr::UNSPECIFIED,
                addr6: Some((a, a)),
                protocol: 17,
                fragment_offset_nonzero: false,
                l4: Some(L4Header::Ports {
                    source: 1,
                    destination: 9,
                }),
                in_ifindex: 2,
                out_ifindex: 0,
                mac_source: [2, 0, 0, 0, 0, 1],
                ct_state: netbeast_common::ct_state::UNTRACKED,
                header: HeaderFields::default(),
            };
            let want = reference::classify_table(&ruleset.filter6, "INPUT", &interfaces(), &pkt);
            let got = compiled.classify(chain::INPUT6, &pkt);
            assert_eq!(got, want, "{addr} in {:?}", lines.last());
        }
    }
}

/// A key field keeps only the chunks that differ from its most common
/// class, then its last chunk: `--dport 8080` two chunks of the port field
/// (not 1,025), `--dport 1024:65535` seventeen; every key still has its
/// class (`key_class`, the kernel's reading, agrees with the whole table).
/// The chunks of the generation's chains follow one another from its
/// region, and past the capacity's share the compile is refused.
#[test]
fn key_tables_store_the_chunks_that_differ() {
    let mut wide = tcp_dport(1024, Target::Drop);
    let Match::Ports(ports) = &mut wide.matches[0] else {
        unreachable!()
    };
    ports.dport = Some(Negatable::is(PortRange {
        first: 1024,
        last: 65535,
    }));
    for (rule, stored) in [(tcp_dport(8080, Target::Drop), 2), (wide, 17)] {
        let ruleset = only_input(vec![rule]);
        let compiled = compile(&ruleset, &[], 1).unwrap();
        let input = &compiled.chains[chain::INPUT as usize];
        assert_eq!(input.stored_key_chunks(field::L4B).count(), stored);
        for key in 0..L4_KEYS as u32 {
            assert_eq!(
                input.key_class(field::L4B, key),
                input.key_classes[field::L4B][key as usize],
                "key {key}"
            );
        }
        // In generation 1's region, at the field's home in a chain's
        // whole tables when the capacity is full; one field after another
        // in a smaller one.
        let region = Capacity::FULL.key_chunks();
        let (span, _) = input.stored_key_chunks(field::L4B).next().unwrap();
        let first = input.config.key_span[field::L4B] & 0xffff;
        assert_eq!(span, region + field::key_chunk_offset(field::L4B) + first);
        let how = super::Compiling {
            hint: None,
            capacity: Capacity::SMALLEST,
        };
        let small = super::compile_hinted(&ruleset, &[], 1, how).unwrap();
        let input = &small.chains[chain::INPUT as usize];
        let mut at = Capacity::SMALLEST.key_chunks();
        for f in (0..field::COUNT).filter(|f| input.config.fields_used & (1 << f) != 0) {
            for (index, _) in input.stored_key_chunks(f) {
                assert_eq!(index, at, "field {f}");
                at += 1;
            }
        }
    }
    // 1,261 chunks a generation at the smallest capacity: two chains
    // whose port fields have a port in every other chunk (1,024 chunks
    // each) do not fit.
    let rules: Vec<Rule> = (0..512u16)
        .map(|k| tcp_dport(128 * k + 1, Target::Drop))
        .collect();
    let how = super::Compiling {
        hint: None,
        capacity: Capacity::SMALLEST,
    };
    let two = ruleset_of(rules.clone(), rules, Vec::new());
    let Err(err) = super::compile_hinted(&two, &[], 0, how) else {
        panic!("2,048 key chunks fit 1,261");
    };
    assert!(
        matches!(err, CompileError::TooManyKeyChunks { limit: 1261 }),
        "{err}"
    );
    assert!(err.is_capacity());
    let full = compile(&two, &[], 0).unwrap();
    assert_eq!(
        full.chains[chain::INPUT as usize]
            .stored_key_chunks(field::L4B)
            .count(),
        1024
    );
}

/// iptables tests a rule's matches in order, so `-m sctp --chunk-types`
/// drops a packet whose chunks it cannot read (xt_sctp's hotdrop) even
/// when a later match of the rule (`-m mac`) fails; the classifier tests
/// the static matches first, so the compiler puts a hotdrop test of the
/// rule's matches through the SCTP one ahead of the rule's slots
/// (`guards::hotdrop_prefix`). A stateful match before it (`-m limit`) is
/// spent once per packet, as in iptables.
#[test]
fn a_hotdrop_comes_before_a_later_match_of_the_rule() {
    use crate::rules::{command, parse};
    use netbeast_common::sctp::{SctpChunks, status};
    let ruleset = |lines: &[&str]| {
        let mut ruleset = Ruleset::default();
        for line in lines {
            let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            let cmd = parse::parse_iptables_args(&args).unwrap_or_else(|e| panic!("{line}: {e}"));
            command::apply(&mut ruleset, &cmd).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
        ruleset
    };
    let sctp = |mac: u8, bad: bool| {
        let mut walk = SctpChunks {
            status: if bad { status::BAD } else { status::WHOLE },
            count: u32::from(!bad),
            ..SctpChunks::default()
        };
        walk.types[0] = 0; // DATA
        PacketView {
            protocol: 132,
            mac_source: [0x02, 0, 0, 0, 0, mac],
            header: HeaderFields {
                sctp: walk,
                ..HeaderFields::default()
            },
            ..tcp_packet(40000, 80)
        }
    };
    // Both sides, one guard state each, the same packets in turn.
    let check = |ruleset: &Ruleset, packets: &[(PacketView, Vec<usize>)]| {
        let compiled = compile(ruleset, &interfaces(), 0).unwrap();
        let (mut theirs, mut ours) = (GuardState::new(7), GuardState::new(7));
        for (pkt, want) in packets {
            let reference = reference::classify_table_with(
                &ruleset.filter,
                "INPUT",
                &interfaces(),
                pkt,
                &mut theirs,
            );
            let got = compiled.classify_with(chain::INPUT, pkt, &mut ours);
            assert_eq!(numbers(reference), *want, "iptables' order, {pkt:?}");
            assert_eq!(numbers(got), *want, "compiled, {pkt:?}");
        }
    };
    // The last rule counts every packet that gets past the first: a
    // hotdrop ends the search before it.
    check(
        &ruleset(&[
            "-A INPUT -p sctp -m sctp --chunk-types any DATA -m mac --mac-source 02:00:00:00:00:01 -j ACCEPT",
            "-A INPUT",
        ]),
        &[
            (sctp(9, true), vec![]),
            (sctp(9, false), vec![1]),
            (sctp(1, true), vec![]),
            (sctp(1, false), vec![0]),
        ],
    );
    // The burst of 2 is spent by two packets, not one: the hotdrop test
    // ahead of the rule evaluates the limit and the rule requires it held.
    check(
        &ruleset(&[
            "-A INPUT -p sctp -m limit --limit 1/hour --limit-burst 2 -m sctp --chunk-types any DATA -m mac --mac-source 02:00:00:00:00:01 -j DROP",
            "-A INPUT",
        ]),
        &[
            (sctp(1, false), vec![0]),
            (sctp(1, false), vec![0]),
            (sctp(1, false), vec![1]),
            // The bucket is empty: the limit fails before the chunks are
            // walked, so nothing drops the packet.
            (sctp(9, true), vec![1]),
        ],
    );
    // Nothing follows the SCTP match: no test ahead of the rule.
    let last = ruleset(&[
        "-A INPUT -p sctp -m mac --mac-source 02:00:00:00:00:01 -m sctp --chunk-types any DATA -j ACCEPT",
        "-A INPUT",
    ]);
    let compiled = compile(&last, &interfaces(), 0).unwrap();
    assert_eq!(compiled.chains[chain::INPUT as usize].config.rule_count, 2);
    check(&last, &[(sctp(9, true), vec![1]), (sctp(1, true), vec![])]);
}
