//! `netbeast trace`'s userspace half: turning the kernel's per-chain
//! reports (`TraceEvent`, see netbeast-ebpf/src/trace.rs) into the rules a
//! packet matched, in order, and what finally happened to it.
//!
//! The kernel reports *slots* of its compiled chains (a rule of a
//! user-defined chain is inlined into every built-in chain that reaches
//! it). The compiler knows which rule each slot stands for
//! (`CompiledChain::owners`): this module compiles the namespace's ruleset
//! as the loader did, checks each reported slot against the kernel's own
//! `RULES` entry (same target and counter, so the names printed are those
//! of the rules the program ran), and names them.

pub mod describe;

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use aya::maps::{Map, MapData, RingBuf};
use netbeast_common::{
    L4_FRAGMENT, L4_NONE, MAX_TRACE_HITS, TCP_FLAGS_NONE, TRACE_ID_CPU_SHIFT, TraceEvent,
    TraceKeys, addr_type, chain, ct_state, pkttype, target,
};
use serde_json::{Value, json};

use crate::{
    compile::{
        self, CompiledRuleset, Interface,
        reference::{HeaderFields, L4Header, PacketView},
    },
    loader::Dataplane,
    rules::{
        model::{Family, Ipv4Net, Rule, Ruleset, TableName, Target},
        save::{CounterStyle, rule_spec},
    },
};

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(
        "cannot open the trace ring buffer {path}: {source} (a data plane made by an older \
         netbeast has none: netbeast detach --all, then attach again)"
    )]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("cannot compile the ruleset to name the rules the kernel reports: {0}")]
    Compile(#[source] compile::CompileError),
    #[error(transparent)]
    Loader(#[from] crate::loader::LoaderError),
}

/// The `TRACE_EVENTS` ring buffer of a namespace's data plane.
pub fn open_reports(maps_dir: &Path) -> Result<RingBuf<MapData>, TraceError> {
    let path = maps_dir.join("TRACE_EVENTS");
    let open = || -> Result<RingBuf<MapData>, aya::maps::MapError> {
        let data = MapData::from_pin(&path)?;
        RingBuf::try_from(Map::RingBuf(data))
    };
    open().map_err(|source| TraceError::Open {
        path: path.clone(),
        source,
    })
}

/// One report, copied out of the ring buffer.
pub fn decode(bytes: &[u8]) -> Option<TraceEvent> {
    if bytes.len() < size_of::<TraceEvent>() {
        return None;
    }
    // SAFETY: `TraceEvent` is plain old data (integers and arrays of them)
    // and `bytes` holds one; the read is unaligned-safe.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<TraceEvent>()) })
}

/// The CPU a packet id was given on.
pub fn id_cpu(id: u64) -> u64 {
    id >> TRACE_ID_CPU_SHIFT
}

/// A rule the packet matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    pub table: TableName,
    pub chain: String,
    /// 1-based, as `-L --line-numbers` and `-D CHAIN N` count.
    pub rule: usize,
    /// The rule as `iptables -S` prints it.
    pub text: String,
    /// What it did to the packet: a verdict, a jump, or "continue".
    pub verdict: String,
}

/// One built-in chain's run on the packet.
#[derive(Clone, Debug)]
pub struct ChainRun {
    pub table: TableName,
    /// `chain::*`.
    pub chain: u32,
    pub keys: TraceKeys,
    /// An IPv6 packet's source and destination (the keys hold only their
    /// first words); `None` for IPv4.
    pub addr6: Option<(Ipv6Addr, Ipv6Addr)>,
    pub hits: Vec<Hit>,
    /// Rules matched beyond `MAX_TRACE_HITS`, not recorded by the kernel.
    pub unrecorded: u32,
    /// The verdict that ended the chain: a rule's target, or the policy
    /// (`by_policy`).
    pub target: u32,
    pub by_policy: bool,
    /// The deciding rule's target, when a rule decided.
    pub rule_target: Option<Target>,
}

/// A traced packet: its chains in the order it met them, and its fate.
#[derive(Clone, Debug)]
pub struct PacketTrace {
    pub id: u64,
    pub chains: Vec<ChainRun>,
}

/// The name of built-in chain `c` and its table.
pub fn chain_name(c: u32) -> (TableName, &'static str) {
    match crate::compile::BUILTIN_CHAINS.get(c as usize) {
        Some(&(_, table, name)) => (table, name),
        None => (TableName::Nat, "?"),
    }
}

fn table_name(t: TableName) -> &'static str {
    t.as_str()
}

/// What a matched rule did, in a word or two.
fn verdict_of(target: &Target) -> String {
    match target {
        Target::None => "continue".into(),
        Target::Jump(c) => format!("jump to {c}"),
        Target::Goto(c) => format!("goto {c}"),
        Target::Return => "RETURN".into(),
        Target::Log(_) => "LOG, continue".into(),
        Target::Set(_) => "SET, continue".into(),
        other => other.builtin_name().into(),
    }
}

/// Names the rules behind the kernel's reports: the namespace's ruleset
/// compiled as the loader compiles it, once per generation, and checked
/// against the kernel's `RULES`.
pub struct Namer {
    ruleset: Ruleset,
    interfaces: Vec<Interface>,
    /// How the loader compiled it (`compile::compile_hinted`): the same
    /// compile names the same slots.
    how: compile::Compiling,
    compiled: [Option<CompiledRuleset>; 2],
}

impl Namer {
    /// `how`: how the loader compiled it (the coarsening it started from,
    /// `state::Namespace::coarsening`, and the data plane's capacity).
    pub fn new(ruleset: Ruleset, interfaces: Vec<Interface>, how: compile::Compiling) -> Namer {
        Namer {
            ruleset,
            interfaces,
            how,
            compiled: [None, None],
        }
    }

    pub fn interfaces(&self) -> &[Interface] {
        &self.interfaces
    }

    /// Replaces the ruleset (a rule change happened while tracing).
    pub fn reload(
        &mut self,
        ruleset: Ruleset,
        interfaces: Vec<Interface>,
        how: compile::Compiling,
    ) {
        *self = Namer::new(ruleset, interfaces, how);
    }

    fn compiled(&mut self, generation: u32) -> Result<&CompiledRuleset, TraceError> {
        let g = (generation & 1) as usize;
        if self.compiled[g].is_none() {
            let c = compile::compile_hinted(&self.ruleset, &self.interfaces, g as u32, self.how)
                .map_err(TraceError::Compile)?;
            self.compiled[g] = Some(c);
        }
        Ok(self.compiled[g].as_ref().expect("compiled above"))
    }

    /// Whether the kernel's slots for `ev` are the ones this ruleset
    /// compiles to (same target and counter): if not, the ruleset changed
    /// and must be reloaded before naming them.
    pub fn agrees(&mut self, dp: &Dataplane, ev: &TraceEvent) -> Result<bool, TraceError> {
        let slots = recorded(ev);
        let kernel = dp.rule_actions(ev.generation, ev.chain, slots)?;
        let compiled = self.compiled(ev.generation)?;
        let c = &compiled.chains[ev.chain as usize % chain::COUNT];
        Ok(slots.iter().zip(&kernel).all(|(&slot, k)| {
            c.rules
                .get(slot as usize)
                .is_some_and(|r| r.target == k.target && r.counter == k.counter)
        }))
    }

    /// One report as a chain run with its rules named.
    pub fn name(&mut self, ev: &TraceEvent) -> Result<ChainRun, TraceError> {
        let (table_kind, _) = chain_name(ev.chain);
        let family = chain_family(ev.chain);
        let compiled = self.compiled(ev.generation)?;
        let c = &compiled.chains[ev.chain as usize % chain::COUNT];
        let owners: Vec<_> = recorded(ev)
            .iter()
            .filter_map(|&slot| c.owners.get(slot as usize).cloned())
            .collect();
        let table = self.ruleset.table_in(family, table_kind);
        let mut hits = Vec::new();
        let mut last_target = None;
        for owner in owners {
            let Some(ch) = table.chain(&owner.chain) else {
                continue;
            };
            let Some(rule) = ch.rules.get(owner.rule) else {
                continue;
            };
            last_target = Some(rule.target.clone());
            hits.push(Hit {
                table: table_kind,
                chain: owner.chain.clone(),
                rule: owner.rule + 1,
                text: rule_spec(&owner.chain, rule, CounterStyle::Omit),
                verdict: verdict_of(&rule.target),
            });
        }
        let by_policy = ev.decided == 0;
        Ok(ChainRun {
            table: table_kind,
            chain: ev.chain,
            keys: ev.keys,
            addr6: (family == Family::V6).then(|| addresses6(ev)),
            hits,
            unrecorded: ev.hit_count.saturating_sub(MAX_TRACE_HITS as u32),
            target: ev.target,
            by_policy,
            rule_target: if by_policy { None } else { last_target },
        })
    }
}

/// The address family of built-in chain `c`'s ruleset.
pub fn chain_family(c: u32) -> Family {
    crate::compile::BUILTIN_CHAINS
        .get(c as usize)
        .map_or(Family::V4, |&(family, _, _)| family)
}

/// An IPv6 packet's addresses from a report: the first words in the keys,
/// the others as the parser keeps them (`TraceEvent::addr6`).
fn addresses6(ev: &TraceEvent) -> (Ipv6Addr, Ipv6Addr) {
    let w = &ev.addr6;
    let address = |words: [u32; 4]| {
        let mut bytes = [0u8; 16];
        for (i, word) in words.iter().enumerate() {
            bytes[4 * i..4 * i + 4].copy_from_slice(&word.to_ne_bytes());
        }
        Ipv6Addr::from(bytes)
    };
    (
        address([ev.keys.src, w[0], w[2], w[4]]),
        address([ev.keys.dst, w[1], w[3], w[5]]),
    )
}

/// The slots a report recorded.
fn recorded(ev: &TraceEvent) -> &[u32] {
    &ev.hits[..(ev.hit_count as usize).min(MAX_TRACE_HITS)]
}

/// The packet as the reference classifier sees it, from the keys a chain
/// saw. Address types come from `routes` (the local routing table).
pub fn packet_view(run: &ChainRun, routes: &[(Ipv4Net, u32)]) -> PacketView {
    let k = &run.keys;
    let src = Ipv4Addr::from(k.src.to_ne_bytes());
    let dst = Ipv4Addr::from(k.dst.to_ne_bytes());
    let l4 = if k.l4a == L4_NONE || k.l4a == L4_FRAGMENT {
        None
    } else if k.protocol == 1 || (k.protocol == 58 && run.addr6.is_some()) {
        Some(L4Header::Icmp {
            icmp_type: k.l4a as u8,
            code: k.l4b as u8,
        })
    } else {
        Some(L4Header::Ports {
            source: k.l4a as u16,
            destination: k.l4b as u16,
        })
    };
    let mac = k.mac.to_le_bytes();
    // The classifier's address type key: the type and on which of the
    // packet's interfaces the route holds (`--limit-iface-in/out`).
    let everywhere = addr_type::ON_IN | addr_type::ON_OUT;
    let type_of = |a: Ipv4Addr| match addr_type::fixed(u32::from(a)) {
        Some(t) => t | everywhere,
        None => routes
            .iter()
            .filter(|(net, _)| net.contains(a))
            .max_by_key(|(net, _)| net.prefix_len)
            .map_or(addr_type::UNICAST | everywhere, |(_, v)| {
                addr_type::route_key(*v, k.in_ifindex, k.out_ifindex)
            }),
    };
    const MAC: u64 = 0xffff_ffff_ffff;
    PacketView {
        src,
        dst,
        addr6: run.addr6,
        protocol: k.protocol,
        fragment_offset_nonzero: k.l4a == L4_FRAGMENT,
        l4,
        in_ifindex: k.in_ifindex,
        out_ifindex: k.out_ifindex,
        mac_source: [mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]],
        ct_state: k.ct_state,
        header: HeaderFields {
            length: k.length,
            ttl: k.ttl,
            tos: k.tos,
            tcp_flags: if u32::from(k.tcp_flags) == TCP_FLAGS_NONE {
                0
            } else {
                k.tcp_flags as u8
            },
            pkttype: if k.eth_dst & MAC == MAC {
                pkttype::BROADCAST
            } else if k.eth_dst & 1 != 0 {
                pkttype::MULTICAST
            } else {
                pkttype::HOST
            },
            src_type: type_of(src),
            dst_type: type_of(dst),
            // Not in the trace keys: the guards on them (--tcp-option,
            // -m conntrack's tuples) are the kernel's to report.
            tcp_options: None,
            sctp: Default::default(),
            dccp: Default::default(),
            connection: Default::default(),
            ipv6_ext: Default::default(),
        },
    }
}

/// The packet in one line, tcpdump-like: `tcp 10.0.0.5:1234 > 10.0.0.1:80
/// [SYN]`.
/// An IPv6 packet's as `tcp [fd00::5]:1234 > [fd00::1]:80 [SYN]` (the
/// `--packet` syntax).
pub fn describe_run(run: &ChainRun) -> String {
    let k = &run.keys;
    let (src, dst, with_port): (String, String, fn(&str, u32) -> String) = match run.addr6 {
        Some((s, d)) => (s.to_string(), d.to_string(), |a, p| format!("[{a}]:{p}")),
        None => (
            Ipv4Addr::from(k.src.to_ne_bytes()).to_string(),
            Ipv4Addr::from(k.dst.to_ne_bytes()).to_string(),
            |a, p| format!("{a}:{p}"),
        ),
    };
    let ports = k.l4a != L4_NONE && k.l4a != L4_FRAGMENT;
    let (sport, dport) = (with_port(&src, k.l4a), with_port(&dst, k.l4b));
    match k.protocol {
        6 if ports => {
            let flags = if u32::from(k.tcp_flags) == TCP_FLAGS_NONE {
                "?".to_string()
            } else {
                describe::flag_names(k.tcp_flags as u8)
            };
            format!("tcp {sport} > {dport} [{flags}]")
        }
        17 if ports => format!("udp {sport} > {dport}"),
        1 if ports && run.addr6.is_none() => {
            format!("icmp {src} > {dst} type {} code {}", k.l4a, k.l4b)
        }
        58 if ports && run.addr6.is_some() => {
            format!("icmp6 {src} > {dst} type {} code {}", k.l4a, k.l4b)
        }
        p => format!("proto {p} {src} > {dst}"),
    }
}

fn state_name(key: u32) -> &'static str {
    match key & ct_state::STATE_MASK {
        ct_state::NEW => "NEW",
        ct_state::ESTABLISHED => "ESTABLISHED",
        ct_state::RELATED => "RELATED",
        ct_state::INVALID => "INVALID",
        _ => "UNTRACKED",
    }
}

impl PacketTrace {
    /// What finally happened to the packet, from its last chain (and the
    /// translations of the nat chains it met).
    pub fn fate(&self, names: &dyn Fn(u32) -> String) -> String {
        let mut notes = Vec::new();
        for (i, run) in self.chains.iter().enumerate() {
            if run.by_policy {
                continue;
            }
            match (&run.rule_target, self.chains.get(i + 1)) {
                (Some(Target::Dnat { .. } | Target::Redirect { .. }), next) => {
                    // The next chain saw the translated packet.
                    let to = match next {
                        Some(n) => {
                            let dst = Ipv4Addr::from(n.keys.dst.to_ne_bytes());
                            if n.keys.protocol == 6 || n.keys.protocol == 17 {
                                format!("{dst}:{}", n.keys.l4b)
                            } else {
                                dst.to_string()
                            }
                        }
                        None => "(the rule's destination)".into(),
                    };
                    notes.push(format!("destination translated to {to}"));
                }
                (Some(t @ (Target::Snat { .. } | Target::Masquerade { .. })), _) => {
                    notes.push(format!("source translated ({})", t.builtin_name()));
                }
                _ => {}
            }
        }
        let Some(last) = self.chains.last() else {
            return "unknown".into();
        };
        // The filter chain decides; nat POSTROUTING comes after an ACCEPT.
        let decisive = self
            .chains
            .iter()
            .rev()
            .find(|r| r.table == TableName::Filter)
            .unwrap_or(last);
        let (_, cname) = chain_name(decisive.chain);
        let how = if decisive.by_policy {
            format!("by the {cname} policy")
        } else {
            match decisive.hits.last() {
                Some(h) => format!("by {} rule {}", h.chain, h.rule),
                None => format!("by {cname}"),
            }
        };
        let main = match decisive.target {
            target::DROP => format!("dropped {how}"),
            target::REJECT => format!("rejected {how} (an error or reset goes back)"),
            target::ACCEPT => match decisive.chain {
                chain::INPUT => format!("accepted {how}: delivered to the host"),
                chain::FORWARD => format!(
                    "accepted {how}: forwarded out of {}",
                    names(decisive.keys.out_ifindex)
                ),
                chain::OUTPUT => format!(
                    "accepted {how}: sent out of {}",
                    names(decisive.keys.out_ifindex)
                ),
                _ => format!("accepted {how}"),
            },
            other => format!("target {other} {how}"),
        };
        if notes.is_empty() {
            main
        } else {
            format!("{main}; {}", notes.join("; "))
        }
    }

    /// The trace as text: the packet, each rule it matched, its fate.
    pub fn text(&self, names: &dyn Fn(u32) -> String) -> String {
        let Some(first) = self.chains.first() else {
            return String::new();
        };
        let k = &first.keys;
        let mut out = format!("packet {}", describe_run(first));
        if k.in_ifindex != 0 {
            out += &format!(" in {}", names(k.in_ifindex));
        }
        out += &format!(" (ctstate {})\n", state_name(k.ct_state));
        for run in &self.chains {
            let (table, cname) = chain_name(run.chain);
            for h in &run.hits {
                out += &format!(
                    "  {} {} rule {}: {}  => {}\n",
                    table_name(h.table),
                    h.chain,
                    h.rule,
                    h.text,
                    h.verdict
                );
            }
            if run.unrecorded > 0 {
                out += &format!(
                    "  ... {} more rules of {cname} matched (not recorded: MAX_TRACE_HITS is {})\n",
                    run.unrecorded, MAX_TRACE_HITS
                );
            }
            if run.by_policy {
                let policy = if run.target == target::DROP {
                    "DROP"
                } else {
                    "ACCEPT"
                };
                out += &format!("  {} {cname} policy  => {policy}\n", table_name(table));
            }
        }
        out += &format!("  => {}\n", self.fate(names));
        out
    }

    /// The trace as one JSON object.
    pub fn json(&self, names: &dyn Fn(u32) -> String) -> Value {
        let rules: Vec<Value> = self
            .chains
            .iter()
            .flat_map(|run| {
                run.hits.iter().map(|h| {
                    json!({
                        "table": table_name(h.table),
                        "chain": h.chain,
                        "rule": h.rule,
                        "text": h.text,
                        "verdict": h.verdict,
                    })
                })
            })
            .collect();
        let chains: Vec<Value> = self
            .chains
            .iter()
            .map(|run| {
                let (table, name) = chain_name(run.chain);
                json!({
                    "table": table_name(table),
                    "chain": name,
                    "policy": run.by_policy,
                    "unrecorded": run.unrecorded,
                })
            })
            .collect();
        let k = self.chains.first().map(|r| r.keys).unwrap_or_default();
        json!({
            "packet": self.chains.first().map(describe_run),
            "in": (k.in_ifindex != 0).then(|| names(k.in_ifindex)),
            "ctstate": state_name(k.ct_state),
            "chains": chains,
            "rules": rules,
            "fate": self.fate(names),
        })
    }
}

/// Groups reports into packets. The chains of one packet run one after the
/// other on one CPU (softirq, or with softirqs off at TC egress), so a
/// CPU's report of another packet, or a quiet spell, closes it.
#[derive(Default)]
pub struct Grouper {
    open: HashMap<u64, (PacketTrace, std::time::Instant)>,
}

impl Grouper {
    /// Adds one chain run; returns the packets it closed.
    pub fn add(&mut self, id: u64, run: ChainRun) -> Vec<PacketTrace> {
        let cpu = id_cpu(id);
        let mut closed = Vec::new();
        let other: Vec<u64> = self
            .open
            .keys()
            .copied()
            .filter(|&o| o != id && id_cpu(o) == cpu)
            .collect();
        for o in other {
            if let Some((p, _)) = self.open.remove(&o) {
                closed.push(p);
            }
        }
        self.open
            .entry(id)
            .or_insert_with(|| {
                (
                    PacketTrace { id, chains: vec![] },
                    std::time::Instant::now(),
                )
            })
            .0
            .chains
            .push(run);
        closed.sort_by_key(|p| p.id);
        closed
    }

    /// Packets opened more than `quiet` ago (all with a zero `quiet`).
    pub fn close_older(&mut self, quiet: std::time::Duration) -> Vec<PacketTrace> {
        let ids: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, (_, t))| t.elapsed() >= quiet)
            .map(|(id, _)| *id)
            .collect();
        let mut out: Vec<PacketTrace> = ids
            .into_iter()
            .filter_map(|id| self.open.remove(&id).map(|(p, _)| p))
            .collect();
        out.sort_by_key(|p| p.id);
        out
    }
}

/// A trace filter: a rule's matches, as `iptables -A` takes them.
pub struct Filter {
    rule: Option<Rule>,
}

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("bad trace filter: {0}")]
    Parse(String),
    #[error("a trace filter takes matches only, not a target (-j/-g): drop '{0}'")]
    Target(String),
    #[error(
        "a trace filter cannot use stateful matches (-m statistic, limit, hashlimit, \
         connlimit, recent): testing them would change their state"
    )]
    Stateful,
}

impl Filter {
    /// Parses `args` (e.g. `-p tcp --dport 80 -s 10.0.0.5`) with the rule
    /// parser; no arguments trace every packet.
    pub fn parse(args: &[String]) -> Result<Filter, FilterError> {
        if args.is_empty() {
            return Ok(Filter { rule: None });
        }
        // FORWARD takes both -i and -o.
        let mut full = vec!["-A".to_string(), "FORWARD".to_string()];
        full.extend(args.iter().cloned());
        let cmd = crate::rules::parse::parse_iptables_args(&full)
            .map_err(|e| FilterError::Parse(e.to_string()))?;
        let rules = match cmd.action {
            crate::rules::parse::Action::Append { rules, .. } => rules,
            _ => return Err(FilterError::Parse("give matches only".into())),
        };
        if rules.len() != 1 {
            return Err(FilterError::Parse(
                "give at most one source and one destination address".into(),
            ));
        }
        let rule = rules.into_iter().next().expect("one rule");
        if !matches!(rule.target, Target::None) {
            return Err(FilterError::Target(rule.target.name().to_string()));
        }
        if compile::reference::has_stateful_match(&rule) {
            return Err(FilterError::Stateful);
        }
        Ok(Filter { rule: Some(rule) })
    }

    /// Whether the packet, as its first chain saw it, matches.
    pub fn matches(
        &self,
        first: &ChainRun,
        interfaces: &[Interface],
        routes: &[(Ipv4Net, u32)],
    ) -> bool {
        match &self.rule {
            None => true,
            // The filter's addresses are IPv4 (iptables' syntax): an IPv6
            // packet never has them.
            Some(rule)
                if first.addr6.is_some()
                    && (rule.source.is_some() || rule.destination.is_some()) =>
            {
                false
            }
            Some(rule) => compile::reference::rule_matches_packet(
                rule,
                interfaces,
                &packet_view(first, routes),
            ),
        }
    }
}
