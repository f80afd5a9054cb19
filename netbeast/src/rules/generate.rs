//! Random rules, built from the extension modules: each match and target
//! module says how to draw an instance of itself that the rest of the rule
//! allows (its `random` entry: a weight and a draw that may decline), and
//! [`rule`] puts a rule together from them. The compiler's property test,
//! the save/restore round trip and `tests/differential.rs` all draw from
//! here, each restricting what it asks for ([`Scope::allow`]) and giving
//! the values to draw from ([`Palette`]): so a new extension is fuzzed and
//! differential-tested once its module can draw itself.
//!
//! Values come from small pools (a palette) so that packets drawn from the
//! same pools hit rules and their edges; [`Palette::wild`] mixes in values
//! from the whole domain, for tests of the text (save/restore).

use std::net::{Ipv4Addr, Ipv6Addr};

use netbeast_common::MAX_GUARDS_PER_RULE;

use crate::compile::lower::Lowering;

use super::ext::MATCH_MODULES;
use super::model::{
    Family, IfaceName, Ipv4Net, Ipv6Net, Match, Negatable, PortRange, Rule, TableName, Target,
};
use super::target::{TARGET_MODULES, jump};

/// splitmix64: a seed's choices, one after another. Property tests draw
/// one seed per rule (cheap, and shrinking removes rules one by one).
#[derive(Clone, Debug)]
pub struct Dice(pub u64);

impl Dice {
    /// The next roll (named as the generators it replaces had it; never
    /// ends, so it is no `Iterator`).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent`%.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn pick<T: Clone>(&mut self, pool: &[T]) -> T {
        pool[self.below(pool.len())].clone()
    }

    /// An index into `weights`, each chosen in proportion to its weight.
    pub fn weighted(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        let mut r = self.next() % total.max(1);
        for (i, &w) in weights.iter().enumerate() {
            if r < w {
                return i;
            }
            r -= w;
        }
        0
    }

    pub fn maybe<T>(&mut self, percent: u64, value: impl FnOnce(&mut Self) -> T) -> Option<T> {
        self.chance(percent).then(|| value(self))
    }

    /// `value`, negated with the palette's odds.
    pub fn negatable<T>(&mut self, palette: &Palette, value: T) -> Negatable<T> {
        Negatable {
            negated: self.chance(palette.negate),
            value,
        }
    }

    /// From the whole domain with the palette's `wild` odds.
    pub fn wild(&mut self, palette: &Palette) -> bool {
        self.chance(palette.wild)
    }

    pub fn net(&mut self, p: &Palette) -> Ipv4Net {
        if self.wild(p) {
            return Ipv4Net::new(Ipv4Addr::from(self.next() as u32), 1 + self.below(32) as u8);
        }
        let (addr, len) = self.pick(p.nets);
        Ipv4Net::new(Ipv4Addr::from(addr), len)
    }

    /// `-s`/`-d`: a net, now and then under a non-contiguous netmask
    /// (`masks`: where the compiler takes one, not in nat OUTPUT): the
    /// net's mask with one of its bits cleared (a wider set, so the
    /// palette's packets still meet it) or one bit past it set (narrower).
    pub fn rule_net(&mut self, p: &Palette, masks: bool) -> Ipv4Net {
        let net = self.net(p);
        if !masks || !self.chance(15) {
            return net;
        }
        let mask = net.netmask();
        let bit = 1u32 << self.below(32);
        let mask = if mask & bit != 0 {
            mask & !bit
        } else {
            mask | bit
        };
        if mask == 0 {
            // No bit left is "anywhere", which a rule stores as no address.
            return net;
        }
        Ipv4Net::masked(net.addr, Ipv4Addr::from(mask))
    }

    pub fn addr(&mut self, p: &Palette) -> Ipv4Addr {
        if self.wild(p) {
            Ipv4Addr::from(self.next() as u32)
        } else {
            Ipv4Addr::from(self.pick(p.addrs))
        }
    }

    /// An IPv6 prefix of the palette (`-s`/`-d` of an ip6tables rule).
    pub fn net6(&mut self, p: &Palette) -> Ipv6Net {
        if self.wild(p) || p.nets6.is_empty() {
            let addr = Ipv6Addr::from(u128::from(self.next()) << 64 | u128::from(self.next()));
            return Ipv6Net::new(addr, 1 + self.below(128) as u8);
        }
        let (addr, len) = self.pick(p.nets6);
        Ipv6Net::new(addr, len)
    }

    /// An IPv6 address of the palette (`-m iprange` of an ip6tables rule).
    pub fn addr6(&mut self, p: &Palette) -> Ipv6Addr {
        if self.wild(p) || p.addrs6.is_empty() {
            Ipv6Addr::from(u128::from(self.next()) << 64 | u128::from(self.next()))
        } else {
            self.pick(p.addrs6)
        }
    }

    pub fn port(&mut self, p: &Palette) -> u16 {
        if self.wild(p) {
            self.next() as u16
        } else {
            self.pick(p.ports)
        }
    }

    /// A single port, or now and then a range between two.
    pub fn port_range(&mut self, p: &Palette) -> PortRange {
        let a = self.port(p);
        let b = if self.chance(35) { self.port(p) } else { a };
        PortRange {
            first: a.min(b),
            last: a.max(b),
        }
    }

    pub fn iface(&mut self, p: &Palette) -> IfaceName {
        if self.wild(p) {
            let len = 1 + self.below(8);
            let name = (0..len)
                .map(|_| (b'a' + self.below(26) as u8) as char)
                .collect();
            return IfaceName {
                name,
                wildcard: self.chance(50),
            };
        }
        let (name, wildcard) = self.pick(p.ifaces);
        IfaceName {
            name: name.to_string(),
            wildcard,
        }
    }

    /// `len` printable ASCII characters at most.
    pub fn text(&mut self, max: usize) -> String {
        let len = self.below(max + 1);
        (0..len)
            .map(|_| (b' ' + self.below(95) as u8) as char)
            .collect()
    }
}

/// The values rules are drawn from. Each test has its own: the compiler's
/// property test pools near its packets' values, the differential harness
/// the addresses of its topology, the save round trip everything.
#[derive(Clone, Debug)]
pub struct Palette {
    /// `-p`, with weights (`None`: no `-p`).
    pub protocols: &'static [(Option<u8>, u64)],
    /// Odds (%) of `! -p`, and the protocols negated then.
    pub negate_protocol: u64,
    pub negated_protocols: &'static [u8],
    /// Odds (%) of `!` before a value that takes one.
    pub negate: u64,
    /// Odds (%) of a value from the whole domain rather than the pools.
    pub wild: u64,
    /// How many matches a rule has: weights of 0, 1, 2, ...
    pub matches: &'static [u64],
    /// Odds (%) of `-s`, `-d`, `-i`, `-o`, `[!] -f`.
    pub source: u64,
    pub destination: u64,
    pub in_iface: u64,
    pub out_iface: u64,
    pub fragment: u64,
    /// Whether `-f` goes with port and ICMP matches (which never match a
    /// later fragment).
    pub fragment_with_l4: bool,
    pub nets: &'static [([u8; 4], u8)],
    pub addrs: &'static [[u8; 4]],
    /// The same for ip6tables rules (`Scope::family` V6): prefixes for
    /// `-s`/`-d`, addresses for `-m iprange`.
    pub nets6: &'static [(Ipv6Addr, u8)],
    pub addrs6: &'static [Ipv6Addr],
    pub ports: &'static [u16],
    pub ifaces: &'static [(&'static str, bool)],
    pub macs: &'static [[u8; 6]],
    /// ICMP (type, code); `--icmp-type any` now and then.
    pub icmp: &'static [(u8, Option<u8>)],
    pub lengths: &'static [u16],
    pub ttls: &'static [u8],
    pub toses: &'static [u8],
    pub tos_masks: &'static [u8],
    /// Packet types (`netbeast_common::pkttype`) and address types
    /// (`netbeast_common::addr_type`).
    pub pkttypes: &'static [u32],
    pub addr_types: &'static [u32],
    /// Translations of the nat targets.
    pub nat_addrs: &'static [[u8; 4]],
    pub nat_ports: &'static [u16],
    /// Names of hashlimit tables and recent lists.
    pub names: &'static [&'static str],
}

/// Where a rule goes, as much of it as its modules need to know.
pub struct Scope<'a> {
    /// iptables' ruleset or ip6tables': which modules exist, which
    /// addresses and answers a rule takes.
    pub family: Family,
    pub table: TableName,
    /// The built-in chain the rule is in, `None` in a user-defined chain
    /// (or when the test does not want `-i`/`-o` checked).
    pub builtin: Option<&'a str>,
    /// The built-in chains that may reach the rule; empty when the test
    /// does not want what depends on it checked (`-m mac` from OUTPUT, the
    /// nat targets' chains, a packet in nat OUTPUT).
    pub hooks: &'a [&'a str],
    /// The user-defined chains a jump or goto may lead to.
    pub callees: &'a [String],
    pub palette: &'a Palette,
    /// Which modules (by `-m`/`-j` name; jumps are "") the test wants.
    pub allow: &'a dyn Fn(&str) -> bool,
    /// The rule's `-p`, once drawn.
    pub protocol: Option<Negatable<u8>>,
}

impl Scope<'_> {
    /// The rule's protocol when given and not negated.
    pub fn plain_protocol(&self) -> Option<u8> {
        self.protocol
            .as_ref()
            .filter(|p| !p.negated)
            .map(|p| p.value)
    }

    /// Whether a rule here has the packet: nat OUTPUT is done on sockets.
    pub fn has_packet(&self) -> bool {
        !(self.table == TableName::Nat && self.hooks.contains(&"OUTPUT"))
    }

    /// Whether packets here have a source MAC (`-m mac`): not those
    /// leaving the host.
    pub fn has_mac(&self) -> bool {
        !self
            .hooks
            .iter()
            .any(|h| matches!(*h, "OUTPUT" | "POSTROUTING"))
    }

    /// Whether every hook is one of `chains` (a nat target's).
    pub fn only_from(&self, chains: &[&str]) -> bool {
        !self.hooks.is_empty() && self.hooks.iter().all(|h| chains.contains(h))
    }
}

/// How a module draws random instances of itself.
pub struct Random<T: 'static> {
    /// How often it is chosen, against the other modules.
    pub weight: u64,
    /// One instance that the rule allows, or `None` (the module declines:
    /// wrong protocol, chain or table).
    pub draw: fn(&mut Dice, &Scope) -> Option<T>,
}

impl<T> Random<T> {
    /// Never drawn: a module the models cannot follow (it rewrites the
    /// packet, or needs what a model packet lacks), tested on packets.
    pub const NEVER: Random<T> = Random {
        weight: 0,
        draw: |_, _| None,
    };
}

/// Tries to draw one of the weighted `choices`, a few times over.
fn draw_one<T>(
    dice: &mut Dice,
    scope: &Scope,
    choices: &[(&'static str, &Random<T>)],
) -> Option<T> {
    let choices: Vec<_> = choices
        .iter()
        .filter(|(name, r)| r.weight > 0 && (scope.allow)(name))
        .collect();
    if choices.is_empty() {
        return None;
    }
    let weights: Vec<u64> = choices.iter().map(|(_, r)| r.weight).collect();
    // Modules that do not fit the rule decline; a few tries find one
    // that does (most rules fit several).
    for _ in 0..8 {
        let (_, random) = choices[dice.weighted(&weights)];
        if let Some(value) = (random.draw)(dice, scope) {
            return Some(value);
        }
    }
    None
}

/// One match of the modules the scope allows, of those its family's
/// command has.
pub fn any_match(dice: &mut Dice, scope: &Scope) -> Option<Match> {
    let choices: Vec<_> = MATCH_MODULES
        .iter()
        .filter(|m| m.for_family(scope.family))
        .map(|m| (m.name, &m.random))
        .collect();
    draw_one(dice, scope, &choices)
}

/// One target of the modules the scope allows (no target if none fits).
pub fn any_target(dice: &mut Dice, scope: &Scope) -> Target {
    let choices: Vec<_> = TARGET_MODULES
        .iter()
        .copied()
        .chain([&jump::MODULE])
        .map(|m| (m.name, &m.random))
        .collect();
    draw_one(dice, scope, &choices).unwrap_or(Target::None)
}

/// A rule that the parser could have produced in `scope` (when the scope
/// names its chain and hooks): its protocol fits its matches, its chain
/// its interfaces, its table and chain its target.
pub fn rule(dice: &mut Dice, scope: &Scope) -> Rule {
    let p = scope.palette;
    let protocol = if dice.chance(p.negate_protocol) {
        Some(Negatable {
            negated: true,
            value: dice.pick(p.negated_protocols),
        })
    } else {
        let weights: Vec<u64> = p.protocols.iter().map(|(_, w)| *w).collect();
        p.protocols[dice.weighted(&weights)]
            .0
            .map(|value| Negatable {
                negated: false,
                value,
            })
    };
    let scope = Scope { protocol, ..*scope };
    let outgoing = matches!(scope.builtin, Some("OUTPUT" | "POSTROUTING"));
    let incoming = matches!(scope.builtin, Some("INPUT" | "PREROUTING"));
    // nat OUTPUT classifies sockets, which have no packet for a
    // non-contiguous netmask's guard to read.
    let masks = scope.has_packet();
    let v6 = scope.family == Family::V6;
    let (source, destination, source6, destination6) = if v6 {
        let source6 = dice
            .maybe(p.source, |d| d.net6(p))
            .map(|n| dice.negatable(p, n));
        let destination6 = dice
            .maybe(p.destination, |d| d.net6(p))
            .map(|n| dice.negatable(p, n));
        (None, None, source6, destination6)
    } else {
        let source = dice
            .maybe(p.source, |d| d.rule_net(p, masks))
            .map(|n| dice.negatable(p, n));
        let destination = dice
            .maybe(p.destination, |d| d.rule_net(p, masks))
            .map(|n| dice.negatable(p, n));
        (source, destination, None, None)
    };
    let in_iface = dice
        .maybe(if outgoing { 0 } else { p.in_iface }, |d| d.iface(p))
        .map(|i| dice.negatable(p, i));
    let out_iface = dice
        .maybe(if incoming { 0 } else { p.out_iface }, |d| d.iface(p))
        .map(|i| dice.negatable(p, i));
    // `-i +` un-negated is every interface: the parser stores no `-i`.
    let every =
        |i: &Negatable<IfaceName>| i.negated || !(i.value.wildcard && i.value.name.is_empty());
    let in_iface = in_iface.filter(every);
    let out_iface = out_iface.filter(every);
    let count = dice.weighted(p.matches);
    // No more stateful matches than a rule may have (the compiler refuses
    // more than MAX_GUARDS_PER_RULE): a draw past that is left out.
    let mut guards = 0;
    let matches: Vec<Match> = (0..count)
        .filter_map(|_| any_match(dice, &scope))
        .filter(|m| {
            let more = match m.ext().lower() {
                Lowering::Guard(_) => 1,
                Lowering::Guarded(_, g) => g.len(),
                Lowering::Static(_) => 0,
            };
            guards += more;
            guards <= MAX_GUARDS_PER_RULE as usize || {
                guards -= more;
                false
            }
        })
        .collect();
    let l4 = matches
        .iter()
        .any(|m| matches!(m, Match::Ports(_) | Match::Multiport(_) | Match::Icmp(_)));
    // ip6tables has no `-f` (`-m frag` instead).
    let fragment = if !v6 && dice.chance(p.fragment) && (p.fragment_with_l4 || !l4) {
        Some(dice.chance(50))
    } else {
        None
    };
    let target = any_target(dice, &scope);
    Rule {
        protocol: scope.protocol,
        source,
        destination,
        source6,
        destination6,
        in_iface,
        out_iface,
        fragment,
        matches,
        target,
        counter: Default::default(),
    }
}
