//! `-m state --state LIST` (libxt_state) and `-m conntrack` (libxt_conntrack):
//! the packet's connection tracking state (`--ctstate`, with SNAT and DNAT),
//! its direction (`--ctdir`) and its connection's status (`--ctstatus`).
//! All three are bits of one classifier key, the connection key
//! (`ct_state::*`), which the kernel's pipeline fills from conntrack before
//! every chain. The connection's tuples (`--ctorigsrc` ... `--ctrepldstport`),
//! protocol (`--ctproto`) and remaining lifetime (`--ctexpire`) are guards
//! (`guard_kind::CT_TUPLE`, `CT_PROTO_EXPIRE`) that read the packet's
//! conntrack entry after the slot's static match: four addresses, four
//! ports and a time fit no small key (docs/ARCHITECTURE.md, Conntrack-lite).

use crate::compile::lower::{Atom, Lowering, keys_where};
use crate::rules::generate::{Dice, Random, Scope};
use netbeast_common::{Guard, ct_match, ct_state, field, guard_kind};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::{
    MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, bang, missing, once, range,
};
use crate::compile::PacketView;
use crate::rules::model::{CtStates, Match, Negatable, PortRange, StateModule};
use crate::rules::names::Names;
use crate::rules::parse::{ParseError, invalid};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnState {
    /// Which module it was written with, so it prints back the same way.
    pub module: StateModule,
    /// `! --ctstate`.
    pub negated: bool,
    /// `--ctstate` / `--state`; empty when the match has none (`-m
    /// conntrack --ctdir REPLY`).
    pub states: CtStates,
    /// `--ctdir`: `Some(true)` for REPLY.
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub dir: Option<bool>,
    /// `[!] --ctstatus`: (negated, mask of the kernel's `IPS_*` bits,
    /// [`STATUSES`]).
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub status: Option<(bool, u8)>,
    /// `--ctproto`, the tuples' addresses and ports, `--ctexpire`.
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub connection: Connection,
}

/// An address of `--ctorigsrc` & co. as written: iptables keeps the
/// address unmasked (`10.0.0.1/8` lists as such) and compares under the
/// mask, which may be any netmask (`/255.0.255.0`): the guard compares
/// under it as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtAddr {
    pub addr: Ipv4Addr,
    pub mask: Ipv4Addr,
}

impl CtAddr {
    /// The mask, network byte order in a native word (as the kernel reads
    /// addresses).
    fn mask_be(&self) -> u32 {
        u32::from(self.mask).to_be()
    }

    /// `10.0.0.1/8`, `10.0.0.1/255.0.255.0`; `1.2.3.4` for a host
    /// (xtables leaves `/32` out).
    fn text(&self, addr: String) -> String {
        let bits = u32::from(self.mask);
        if bits == u32::MAX {
            addr
        } else if bits.leading_ones() + bits.trailing_zeros() == 32 {
            format!("{addr}/{}", bits.leading_ones())
        } else {
            format!("{addr}/{}", self.mask)
        }
    }
}

/// The options of `-m conntrack` on the connection itself, each `!`-able:
/// xt_conntrack tests them only for a packet with a connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// `--ctproto`: 1..=255.
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub proto: Option<Negatable<u8>>,
    /// `--ctorigsrc`, `--ctorigdst`, `--ctreplsrc`, `--ctrepldst`.
    #[serde(default)]
    pub addrs: [Option<Negatable<CtAddr>>; 4],
    /// `--ctorigsrcport`, `--ctorigdstport`, `--ctreplsrcport`,
    /// `--ctrepldstport`.
    #[serde(default)]
    pub ports: [Option<Negatable<PortRange>>; 4],
    /// `--ctexpire min[:max]`: seconds the entry has left.
    #[serde(default, skip_serializing_if = "crate::rules::model::absent")]
    pub expire: Option<Negatable<(u32, u32)>>,
}

/// The tuple options in libxt_conntrack's order: (address option, port
/// option), original source, original destination, reply source, reply
/// destination.
const TUPLE_OPTIONS: [(&str, &str); 4] = [
    ("ctorigsrc", "ctorigsrcport"),
    ("ctorigdst", "ctorigdstport"),
    ("ctreplsrc", "ctreplsrcport"),
    ("ctrepldst", "ctrepldstport"),
];

impl crate::rules::model::Absent for Connection {
    fn is_absent(&self) -> bool {
        self.is_empty()
    }
}

impl Connection {
    pub fn is_empty(&self) -> bool {
        *self == Connection::default()
    }

    /// Its guards: one per tuple it tests (original, reply) and one for
    /// protocol and expiry, each holding every option of its part.
    pub fn guards(&self) -> Vec<Guard> {
        let mut guards = Vec::new();
        for (reply, (src, dst)) in [(false, (0, 1)), (true, (2, 3))] {
            let mut g = Guard {
                kind: guard_kind::CT_TUPLE,
                _pad: if reply { ct_match::REPLY } else { 0 },
                ..Guard::default()
            };
            let addr = |a: &Option<Negatable<CtAddr>>, bit: u32, pad: &mut u32| {
                a.as_ref().map_or(0, |a| {
                    *pad |= bit | invert(bit, a.negated);
                    u64::from(u32::from(a.value.addr).to_be()) | u64::from(a.value.mask_be()) << 32
                })
            };
            let port = |p: &Option<Negatable<PortRange>>, bit: u32, pad: &mut u32| {
                p.as_ref().map_or(0, |p| {
                    *pad |= bit | invert(bit, p.negated);
                    u64::from(p.value.first) | u64::from(p.value.last) << 16
                })
            };
            g.a = addr(&self.addrs[src], ct_match::SRC_ADDR, &mut g._pad);
            g.b = addr(&self.addrs[dst], ct_match::DST_ADDR, &mut g._pad);
            g.c = port(&self.ports[src], ct_match::SRC_PORT, &mut g._pad)
                | port(&self.ports[dst], ct_match::DST_PORT, &mut g._pad) << 32;
            if g._pad & !ct_match::REPLY != 0 {
                guards.push(g);
            }
        }
        if self.proto.is_some() || self.expire.is_some() {
            let mut g = Guard {
                kind: guard_kind::CT_PROTO_EXPIRE,
                ..Guard::default()
            };
            if let Some(p) = &self.proto {
                g._pad |= ct_match::PROTO | invert(ct_match::PROTO, p.negated);
                g.a = u64::from(p.value);
            }
            if let Some(e) = &self.expire {
                g._pad |= ct_match::EXPIRE | invert(ct_match::EXPIRE, e.negated);
                g.b = u64::from(e.value.0) | u64::from(e.value.1) << 32;
            }
            guards.push(g);
        }
        guards
    }
}

fn invert(bit: u32, negated: bool) -> u32 {
    if negated {
        bit << ct_match::INVERT_SHIFT
    } else {
        0
    }
}

/// `--ctstatus` names and their `IPS_*` bits, in the order iptables
/// prints them (NONE, mask 0, prints when no other does).
pub const STATUSES: [(&str, u8); 4] = [
    ("EXPECTED", 1),
    ("SEEN_REPLY", 2),
    ("ASSURED", 4),
    ("CONFIRMED", 8),
];

fn status_text(mask: u8) -> String {
    if mask == 0 {
        return "NONE".to_string();
    }
    STATUSES
        .iter()
        .filter(|(_, b)| mask & b != 0)
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

impl ConnState {
    /// A `-m state --state` / `-m conntrack --ctstate` match of `states`.
    pub fn states(module: StateModule, negated: bool, states: CtStates) -> Self {
        ConnState {
            module,
            negated,
            states,
            dir: None,
            status: None,
            connection: Connection::default(),
        }
    }

    /// Whether a packet with connection key `key` (`ct_state`'s layout)
    /// meets the match, as xt_conntrack decides: the state test (the
    /// connection's SNAT/DNAT count as states too); then, for a packet
    /// without a connection (INVALID, UNTRACKED), nothing else is tested
    /// and the match holds only if it has a state test; else direction and
    /// status.
    pub fn holds_key(&self, key: u32) -> bool {
        let state = key & ct_state::STATE_MASK;
        if state > ct_state::UNTRACKED {
            return false;
        }
        let has_connection = matches!(
            state,
            ct_state::NEW | ct_state::ESTABLISHED | ct_state::RELATED
        );
        let has_states = self.states.0 != 0;
        if has_states {
            let mut bits = 1u8 << state;
            if has_connection && key & ct_state::SNAT != 0 {
                bits |= CtStates::SNAT;
            }
            if has_connection && key & ct_state::DNAT != 0 {
                bits |= CtStates::DNAT;
            }
            if (self.states.0 & bits != 0) == self.negated {
                return false;
            }
        }
        if !has_connection {
            return has_states;
        }
        if let Some(reply) = self.dir
            && (key & ct_state::REPLY != 0) != reply
        {
            return false;
        }
        if let Some((negated, mask)) = self.status {
            let status = (((key >> ct_state::STATUS_SHIFT) & 7) << 1) as u8;
            if (status & mask != 0) == negated {
                return false;
            }
        }
        true
    }
}

impl MatchExt for ConnState {
    fn save(&self, out: &mut String) {
        let (name, flag) = match self.module {
            StateModule::State => ("state", "--state"),
            StateModule::Conntrack => ("conntrack", "--ctstate"),
        };
        let _ = write!(out, " -m {name}");
        self.options(out, flag, "--");
    }

    fn list(&self, out: &mut String, numeric: bool) {
        let name = match self.module {
            StateModule::State => "state",
            StateModule::Conntrack => "ctstate",
        };
        self.options_with(out, name, "", &|a: &CtAddr| list_addr(a, numeric, None));
    }

    fn list_named(&self, out: &mut String, names: &Names, _protocol: u8) {
        let name = match self.module {
            StateModule::State => "state",
            StateModule::Conntrack => "ctstate",
        };
        self.options_with(out, name, "", &|a: &CtAddr| {
            list_addr(a, false, Some(names))
        });
    }

    /// The static part: the connection key. The connection's own options
    /// are guards, decided by the models' guard oracle.
    fn matches(&self, pkt: &PacketView) -> bool {
        self.holds_key(pkt.ct_state)
    }

    fn lower(&self) -> Lowering {
        let atoms = vec![Atom::Keys(
            field::CT_STATE,
            keys_where(field::CT_STATE, |k| self.holds_key(k)),
        )];
        if self.connection.is_empty() {
            Lowering::all(atoms)
        } else {
            Lowering::Guarded(vec![atoms], self.connection.guards())
        }
    }
}

/// An address as libxt_conntrack's `-L` prints it: `anywhere` for 0.0.0.0
/// (whatever the mask) unless numeric, else the address (named when
/// `names` is given) and its mask.
fn list_addr(a: &CtAddr, numeric: bool, names: Option<&Names>) -> String {
    if !numeric && a.addr == Ipv4Addr::UNSPECIFIED {
        return "anywhere".to_string();
    }
    let addr = match names {
        Some(names) => names.address(a.addr),
        None => a.addr.to_string(),
    };
    a.text(addr)
}

impl ConnState {
    /// The options in libxt_conntrack's order, each with its `!` before it
    /// (`prefix` is `--` for `-S`, nothing for `-L`; `state` the state
    /// option's name).
    fn options(&self, out: &mut String, state: &str, prefix: &str) {
        self.options_with(out, state, prefix, &|a: &CtAddr| a.text(a.addr.to_string()));
    }

    /// [`ConnState::options`], addresses written by `addr`.
    fn options_with(
        &self,
        out: &mut String,
        state: &str,
        prefix: &str,
        addr: &dyn Fn(&CtAddr) -> String,
    ) {
        if self.states.0 != 0 {
            let _ = write!(out, "{} {state} {}", bang(self.negated), self.states.text());
        }
        let c = &self.connection;
        if let Some(p) = &c.proto {
            let _ = write!(out, "{} {prefix}ctproto {}", bang(p.negated), p.value);
        }
        for (a, (option, _)) in c.addrs.iter().zip(TUPLE_OPTIONS) {
            if let Some(a) = a {
                let _ = write!(
                    out,
                    "{} {prefix}{option} {}",
                    bang(a.negated),
                    addr(&a.value)
                );
            }
        }
        for (p, (_, option)) in c.ports.iter().zip(TUPLE_OPTIONS) {
            if let Some(p) = p {
                let _ = write!(
                    out,
                    "{} {prefix}{option} {}",
                    bang(p.negated),
                    super::tcp::port_range_text(p.value)
                );
            }
        }
        if let Some((negated, mask)) = self.status {
            let _ = write!(
                out,
                "{} {prefix}ctstatus {}",
                bang(negated),
                status_text(mask)
            );
        }
        if let Some(e) = &c.expire {
            let (min, max) = e.value;
            let _ = if min == max {
                write!(out, "{} {prefix}ctexpire {min}", bang(e.negated))
            } else {
                write!(out, "{} {prefix}ctexpire {min}:{max}", bang(e.negated))
            };
        }
        if let Some(reply) = self.dir {
            let dir = if reply { "REPLY" } else { "ORIGINAL" };
            let _ = write!(out, " {prefix}ctdir {dir}");
        }
    }
}

const STATES: &str = "a list of states like ESTABLISHED,RELATED";

static STATE_OPTIONS: [OptSpec; 1] = [OptSpec {
    names: &["state"],
    value: Value::One(STATES),
    negatable: true,
}];

const ADDRESS: &str = "an address like 10.0.0.1 or 10.0.0.0/8";
const PORT: &str = "a port or range like 80 or 1024:65535";

const fn option(names: &'static [&'static str], value: &'static str) -> OptSpec {
    OptSpec {
        names,
        value: Value::One(value),
        negatable: true,
    }
}

/// libxt_conntrack's options.
static CONNTRACK_OPTIONS: [OptSpec; 13] = [
    OptSpec {
        names: &["ctstate"],
        value: Value::One(STATES),
        negatable: true,
    },
    OptSpec {
        names: &["ctstatus"],
        value: Value::One("a list of NONE, EXPECTED, SEEN_REPLY, ASSURED, CONFIRMED"),
        negatable: true,
    },
    OptSpec {
        names: &["ctdir"],
        value: Value::One("ORIGINAL or REPLY"),
        negatable: false,
    },
    option(&["ctproto"], "a protocol like tcp or 6"),
    option(&["ctorigsrc"], ADDRESS),
    option(&["ctorigdst"], ADDRESS),
    option(&["ctreplsrc"], ADDRESS),
    option(&["ctrepldst"], ADDRESS),
    option(&["ctorigsrcport"], PORT),
    option(&["ctorigdstport"], PORT),
    option(&["ctreplsrcport"], PORT),
    option(&["ctrepldstport"], PORT),
    option(&["ctexpire"], "seconds, or a range like 10:60"),
];

pub static STATE: MatchModule = MatchModule {
    name: "state",
    family: None,
    options: &STATE_OPTIONS,
    example: "e.g. -m state --state ESTABLISHED,RELATED",
    parser: || Box::new(ConnStateParser::new(StateModule::State)),
    implicit_protocol: None,
    random: Random {
        weight: 2,
        draw: |d, s| random(d, s, StateModule::State),
    },
};

pub static CONNTRACK: MatchModule = MatchModule {
    name: "conntrack",
    family: None,
    options: &CONNTRACK_OPTIONS,
    example: "e.g. -m conntrack --ctstate ESTABLISHED,RELATED",
    parser: || Box::new(ConnStateParser::new(StateModule::Conntrack)),
    implicit_protocol: None,
    random: Random {
        weight: 2,
        draw: |d, s| random(d, s, StateModule::Conntrack),
    },
};

#[derive(Debug)]
struct ConnStateParser {
    module: StateModule,
    states: Option<(bool, CtStates)>,
    dir: Option<bool>,
    status: Option<(bool, u8)>,
    connection: Connection,
}

impl ConnStateParser {
    fn new(module: StateModule) -> Self {
        ConnStateParser {
            module,
            states: None,
            dir: None,
            status: None,
            connection: Connection::default(),
        }
    }
}

/// `addr[/mask]` of `--ctorigsrc` & co.: an address, then a prefix
/// length or any netmask (xtables' host/mask), the address kept as
/// written.
fn parse_ct_addr(option: &str, text: &str) -> Result<CtAddr, ParseError> {
    use crate::rules::parse::{parse_c_number_in, parse_dotted};
    const WHAT: &str = "address";
    let (addr_text, mask_text) = match text.split_once('/') {
        Some((a, m)) => (a, Some(m)),
        None => (text, None),
    };
    if addr_text.contains(':') {
        // An IPv6 tuple address (ip6tables): the tuple guards read the
        // IPv4 tracker only so far.
        return Err(ParseError::Ipv6Unsupported {
            what: format!("{option} {text}"),
            hint: "; ip6tables rules take -m conntrack's --ctstate, --ctstatus and --ctdir so \
                   far"
            .into(),
        });
    }
    let addr = parse_dotted(addr_text, false).ok_or_else(|| {
        invalid(
            option,
            WHAT,
            text,
            "expected an IPv4 address like 10.0.0.1, optionally with /prefix-length or /netmask \
             (host names are not resolved)",
        )
    })?;
    let mask = match mask_text {
        None => Ipv4Addr::BROADCAST,
        Some(m) if m.contains('.') => parse_dotted(m, true)
            .ok_or_else(|| invalid(option, WHAT, text, format!("'{m}' is not a netmask")))?,
        Some(m) => {
            let len = parse_c_number_in(m, 32).ok_or_else(|| {
                invalid(
                    option,
                    WHAT,
                    text,
                    format!("'{m}' is not a prefix length 0-32 or a netmask"),
                )
            })?;
            Ipv4Addr::from(u32::MAX.checked_shl(32 - len as u32).unwrap_or(0))
        }
    };
    Ok(CtAddr { addr, mask })
}

/// `SEEN_REPLY,ASSURED` (any case) as a mask of `IPS_*` bits.
fn parse_statuses(option: &str, text: &str) -> Result<u8, ParseError> {
    let mut mask = 0;
    for item in text.split(',') {
        let upper = item.to_ascii_uppercase();
        if upper == "NONE" {
            continue;
        }
        match STATUSES.iter().find(|(n, _)| *n == upper) {
            Some((_, bit)) => mask |= bit,
            None => {
                return Err(invalid(
                    option,
                    "status",
                    item,
                    "the statuses are NONE, EXPECTED, SEEN_REPLY, ASSURED and CONFIRMED, \
                     listed with commas",
                ));
            }
        }
    }
    Ok(mask)
}

/// `NEW,ESTABLISHED` (any case).
fn parse_ct_states(option: &str, module: StateModule, text: &str) -> Result<CtStates, ParseError> {
    let mut states = CtStates::default();
    for item in text.split(',') {
        let upper = item.to_ascii_uppercase();
        if let Some((_, state)) = CtStates::NAMES.iter().find(|(n, _)| *n == upper) {
            states = states.with(*state);
            continue;
        }
        if module == StateModule::Conntrack
            && let Some((_, bit)) = CtStates::NAT_NAMES.iter().find(|(n, _)| *n == upper)
        {
            states = CtStates(states.0 | bit);
            continue;
        }
        let reason = match (upper.as_str(), module) {
            ("", _) => "a state is missing; list states with commas and no spaces, like ESTABLISHED,RELATED".to_string(),
            ("SNAT" | "DNAT", _) => format!(
                "{upper} is a state of -m conntrack --ctstate; -m state knows INVALID, NEW, ESTABLISHED, RELATED and UNTRACKED"
            ),
            (_, StateModule::State) => "the states are INVALID, NEW, ESTABLISHED, RELATED and UNTRACKED".to_string(),
            (_, StateModule::Conntrack) => "the states are INVALID, NEW, ESTABLISHED, RELATED, UNTRACKED, SNAT and DNAT".to_string(),
        };
        return Err(invalid(option, "state", item, reason));
    }
    Ok(states)
}

impl MatchParser for ConnStateParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        values: &[&str],
    ) -> Result<(), ParseError> {
        let repeated = || ParseError::Repeated {
            option: option.flag(),
            hint: "; give each option once (list values with commas)",
        };
        match option.name() {
            "state" | "ctstate" => {
                let value = parse_ct_states(&option.flag(), self.module, values[0])?;
                if self.states.is_some() {
                    return Err(repeated());
                }
                self.states = Some((negated, value));
            }
            "ctstatus" => {
                let mask = parse_statuses(&option.flag(), values[0])?;
                if self.status.is_some() {
                    return Err(repeated());
                }
                self.status = Some((negated, mask));
            }
            "ctdir" => {
                let reply = match values[0].to_ascii_uppercase().as_str() {
                    "ORIGINAL" => false,
                    "REPLY" => true,
                    _ => {
                        return Err(invalid(
                            &option.flag(),
                            "direction",
                            values[0],
                            "the directions are ORIGINAL and REPLY",
                        ));
                    }
                };
                if self.dir.is_some() {
                    return Err(repeated());
                }
                self.dir = Some(reply);
            }
            "ctproto" => {
                let protocol = crate::rules::parse::parse_protocol(values[0])?;
                if protocol == 0 {
                    let reason = if negated {
                        "! --ctproto all would match every protocol; leave the option out"
                    } else {
                        "--ctproto all would match no connection; leave the option out"
                    };
                    return Err(invalid(&option.flag(), "protocol", values[0], reason));
                }
                let value = Negatable {
                    negated,
                    value: protocol,
                };
                once(&mut self.connection.proto, value, option)?;
            }
            "ctexpire" => {
                let (min, max) = range(option, "time", values[0], u64::from(u32::MAX))?;
                let value = Negatable {
                    negated,
                    value: (min as u32, max as u32),
                };
                once(&mut self.connection.expire, value, option)?;
            }
            name => {
                let Some(n) = TUPLE_OPTIONS
                    .iter()
                    .position(|(a, p)| *a == name || *p == name)
                else {
                    unreachable!("{name} is in CONNTRACK_OPTIONS");
                };
                if name == TUPLE_OPTIONS[n].0 {
                    let value = Negatable {
                        negated,
                        value: parse_ct_addr(&option.flag(), values[0])?,
                    };
                    once(&mut self.connection.addrs[n], value, option)?;
                } else {
                    let value = Negatable {
                        negated,
                        value: super::tcp::parse_port_range(&option.flag(), values[0])?,
                    };
                    once(&mut self.connection.ports[n], value, option)?;
                }
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>, _: &RuleContext) -> Result<Match, ParseError> {
        let module = match self.module {
            StateModule::State => &STATE,
            StateModule::Conntrack => &CONNTRACK,
        };
        let option = match self.module {
            StateModule::State => "--state",
            StateModule::Conntrack => "--ctstate",
        };
        if self.states.is_none()
            && self.dir.is_none()
            && self.status.is_none()
            && self.connection.is_empty()
        {
            return Err(missing(module, option));
        }
        let (negated, states) = self.states.unwrap_or_default();
        Ok(Match::ConnState(ConnState {
            module: self.module,
            negated,
            states,
            dir: self.dir,
            status: self.status,
            connection: self.connection,
        }))
    }
}

/// `--ctexpire` bounds: the first packet's 0, around UDP's and TCP
/// SYN_SENT's timeouts, and the ends.
const EXPIRES: &[u32] = &[0, 1, 29, 30, 119, 120, 431_999, u32::MAX];

/// Some of the connection's own options, each maybe negated, from the
/// palette's addresses and ports.
fn random_connection(d: &mut Dice, s: &Scope) -> Connection {
    let p = s.palette;
    let mut c = Connection::default();
    while c.is_empty() {
        c.proto = d.maybe(25, |d| {
            let v = d.pick(&[1u8, 6, 17, 47]);
            d.negatable(p, v)
        });
        for n in 0..4 {
            c.addrs[n] = d.maybe(20, |d| {
                let addr = d.addr(p);
                let mask = Ipv4Addr::from(d.pick(&[
                    u32::MAX,
                    0xffff_ff00,
                    0xffff_0000,
                    0xff00_0000,
                    0,
                    0xff00_ff00,
                ]));
                d.negatable(p, CtAddr { addr, mask })
            });
            c.ports[n] = d.maybe(20, |d| {
                let r = d.port_range(p);
                d.negatable(p, r)
            });
        }
        c.expire = d.maybe(20, |d| {
            let (a, b) = (d.pick(EXPIRES), d.pick(EXPIRES));
            d.negatable(p, (a.min(b), a.max(b)))
        });
    }
    c
}

/// A non-empty set of states, sometimes negated; for -m conntrack also
/// SNAT/DNAT among them, `--ctdir` and `--ctstatus`, or those alone, and
/// the connection's own options where a packet has a connection (not nat
/// OUTPUT, which runs on sockets).
fn random(d: &mut Dice, s: &Scope, module: StateModule) -> Option<Match> {
    let conntrack = module == StateModule::Conntrack;
    let states = if conntrack && d.chance(20) {
        CtStates(0)
    } else if conntrack {
        CtStates(d.below(127) as u8 + 1)
    } else {
        CtStates((d.below(31) + 1) as u8)
    };
    let dir = (conntrack && d.chance(30)).then(|| d.chance(50));
    let status = (conntrack && d.chance(30)).then(|| (d.chance(25), d.below(16) as u8));
    let (dir, status) = if states.0 == 0 && dir.is_none() && status.is_none() {
        (Some(false), status)
    } else {
        (dir, status)
    };
    let connection = if conntrack && s.has_packet() && d.chance(35) {
        random_connection(d, s)
    } else {
        Connection::default()
    };
    Some(Match::ConnState(ConnState {
        module,
        negated: states.0 != 0 && d.chance(25),
        states,
        dir,
        status,
        connection,
    }))
}
