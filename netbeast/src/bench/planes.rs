//! What `netbeast bench` compares: the scenarios, the data planes, the
//! ruleset each data plane gets, and how each one's counters are read.
//!
//! Every data plane gets the same rules: `n - 1` that differ from the
//! traffic only in their source address (`-s 10.x.y.z/32`), then the one
//! that matches. `dnat` adds one nat PREROUTING rule in front of them that
//! sends traffic for the router's address on to the sink; its rule count
//! is FORWARD's, as in `forward`. netbeast and iptables load the very same
//! iptables-save text (with `netbeast restore` and `iptables-restore`);
//! nftables loads its rule-for-rule translation with `nft -f` (each rule
//! with a counter, as iptables-nft adds one to every rule).
//!
//! `lb` is the exception: its axis is the number of backends behind the
//! router's address (the VIP), not a rule count. FORWARD holds the one
//! rule that accepts the traffic; the balancing is each tool's own: a
//! `netbeast lb` service (Maglev), the kube-proxy cascade of `-m statistic
//! --mode random` DNAT rules in nat PREROUTING (loaded into netbeast and
//! into iptables), and an nftables `numgen random` map.

use std::{
    fmt::Write as _,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::{Command, Stdio},
};

use serde::Serialize;

use crate::netns::{ListedChain, Netns, parse_listing};

/// The destination port of all traffic (discard): no socket listens there.
pub const DPORT: u16 = 9;
/// Source ports of the flows start here.
pub const FIRST_PORT: u16 = 1024;

/// Local scenarios: the receiver's subnet, its address, the first source.
pub const LOCAL_RECEIVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
pub const LOCAL_FIRST_SOURCE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Forwarding scenarios: generator side of the router, sink side, sink.
pub const ROUTER_IN: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 254);
pub const ROUTED_FIRST_SOURCE: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const ROUTER_OUT: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
pub const SINK: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
/// `lb`: the backends' subnet, routed by the router through the sink (whose
/// XDP program counts every frame, whichever backend it is for).
pub const BACKEND_NET: Ipv4Addr = Ipv4Addr::new(198, 19, 16, 0);
pub const BACKEND_PREFIX_LEN: u8 = 20;
/// RFC 2544 benchmarking addresses (198.18.0.0/15): /24 subnets.
pub const PREFIX_LEN: u8 = 24;

/// `--family 6`: every IPv4 address of the benchmark written into RFC
/// 5180's benchmarking prefix (2001:2::/48) as its last 32 bits, so the
/// same subnets, sources and rules exist in both families: 198.18.0.254
/// is 2001:2::c612:fe, a /24 a /120.
pub const BENCH_NET6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0);
/// The bits of an IPv6 address above the IPv4 address written into it.
const V6_ABOVE_V4: u8 = 96;

/// The IP version a benchmark's traffic and rules are written for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Ip {
    #[default]
    V4,
    V6,
}

impl Ip {
    /// The address standing for `a` in this family (see [`BENCH_NET6`]).
    pub fn addr(self, a: Ipv4Addr) -> IpAddr {
        match self {
            Ip::V4 => a.into(),
            Ip::V6 => Ipv6Addr::from(BENCH_NET6.to_bits() | u128::from(a.to_bits())).into(),
        }
    }

    /// The prefix length standing for an IPv4 one.
    pub fn prefix_len(self, len: u8) -> u8 {
        match self {
            Ip::V4 => len,
            Ip::V6 => V6_ABOVE_V4 + len,
        }
    }

    /// iptables or ip6tables.
    pub fn iptables(self) -> &'static str {
        match self {
            Ip::V4 => "iptables",
            Ip::V6 => "ip6tables",
        }
    }

    fn restore(self) -> &'static str {
        match self {
            Ip::V4 => "iptables-restore",
            Ip::V6 => "ip6tables-restore",
        }
    }

    /// nftables' family of the benchmark's table, and its source match.
    fn nft(self) -> (&'static str, &'static str) {
        match self {
            Ip::V4 => ("ip", "ip saddr"),
            Ip::V6 => ("ip6", "ip6 saddr"),
        }
    }

    /// The scenarios this family has: IPv6 has no nat, no hashlimit or
    /// LOG behind its rules yet, and no balancer.
    pub fn has(self, scenario: Scenario) -> bool {
        self == Ip::V4
            || matches!(
                scenario,
                Scenario::Drop | Scenario::Pass | Scenario::Forward
            )
    }
}

/// The source of rule `i` of [`rule_lines`] (never the traffic's).
fn rule_source(ip: Ip, i: usize) -> IpAddr {
    ip.addr(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8))
}

/// The nftables table the benchmark creates in its own namespaces.
const NFT_TABLE: &str = "nbbench";
/// Its chain with the benchmark's filter rules, and `dnat`'s nat chain.
const NFT_RULES_CHAIN: &str = "rules";
const NFT_NAT_CHAIN: &str = "nat";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Traffic to this host, dropped by the last rule.
    Drop,
    /// Traffic to this host, accepted by the last rule into the stack (to a
    /// port no socket listens on).
    Pass,
    /// Traffic through a router, accepted by the last FORWARD rule.
    Forward,
    /// Traffic to the router's address, sent on to the sink behind it by a
    /// nat PREROUTING DNAT rule, then accepted by the last FORWARD rule.
    Dnat,
    /// `drop` with a `-m hashlimit` rule in front of the drop: one bucket
    /// per flow (`--hashlimit-mode srcip,srcport`), so `--flows` keys.
    /// Against `drop`, what the buckets cost.
    Limit,
    /// `drop` with a `-j LOG` rule in front of the drop, which every
    /// packet meets, while `netbeast log --follow` drains the events
    /// (netbeast only: iptables' LOG would print every packet to the
    /// kernel log). Against `drop`, what logging costs (issue 15: ≥ 0.8×).
    Log,
    /// Traffic to the router's address (a VIP), balanced over `--backends`
    /// backends behind the router (each connection's first packet picks
    /// one), then accepted by the one FORWARD rule.
    Lb,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::Drop,
        Scenario::Pass,
        Scenario::Forward,
        Scenario::Dnat,
        Scenario::Limit,
        Scenario::Log,
        Scenario::Lb,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Drop => "drop",
            Scenario::Pass => "pass",
            Scenario::Forward => "forward",
            Scenario::Dnat => "dnat",
            Scenario::Limit => "limit",
            Scenario::Log => "log",
            Scenario::Lb => "lb",
        }
    }

    /// Through a router (a second veth pair to a sink behind it).
    pub fn routed(self) -> bool {
        matches!(self, Scenario::Forward | Scenario::Dnat | Scenario::Lb)
    }

    /// Whether `--receiver-cpu` gives this scenario's receivers their own
    /// core. Not `log`: its `netbeast log --follow` reader runs off the
    /// generator's core, where a receiver of its own would then be too.
    pub fn own_receiver_core(self) -> bool {
        self != Scenario::Log
    }

    /// What the scenario's axis counts: FORWARD or INPUT rules, or for `lb`
    /// the backends behind the VIP.
    pub fn axis(self) -> &'static str {
        match self {
            Scenario::Lb => "backends",
            _ => "rules",
        }
    }

    /// The data planes that run this scenario, in table order.
    pub fn planes(self) -> &'static [Plane] {
        match self {
            Scenario::Drop => &[
                Plane::Floor,
                Plane::Netbeast,
                Plane::IptablesRaw,
                Plane::Iptables,
                Plane::NftPrerouting,
                Plane::Nft,
            ],
            Scenario::Pass => &[Plane::Kernel, Plane::Netbeast, Plane::Iptables, Plane::Nft],
            Scenario::Forward => &[
                Plane::RedirectFloor,
                Plane::Kernel,
                Plane::Netbeast,
                Plane::Iptables,
                Plane::Nft,
            ],
            Scenario::Dnat => &[
                Plane::RedirectFloor,
                Plane::Netbeast,
                Plane::Iptables,
                Plane::Nft,
            ],
            // nftables' per-key limits (meters) are another rule language:
            // not translated. (The floor is measured once, under drop.)
            Scenario::Limit => &[Plane::Netbeast, Plane::Iptables],
            Scenario::Log => &[Plane::Netbeast],
            Scenario::Lb => &[
                Plane::RedirectFloor,
                Plane::Netbeast,
                Plane::NetbeastStatistic,
                Plane::Iptables,
                Plane::Nft,
            ],
        }
    }
}

/// The tool family a data plane belongs to (`--planes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Family {
    Netbeast,
    Iptables,
    Nftables,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Plane {
    /// A bare XDP program that drops everything: the fastest this machine
    /// can receive.
    Floor,
    /// A bare XDP program that redirects every frame out of the router's
    /// other interface (MACs written, nothing else): the fastest XDP can
    /// forward here, the forwarding scenarios' yardstick.
    RedirectFloor,
    /// No firewall at all: the kernel's own cost of delivering or
    /// forwarding.
    Kernel,
    /// netbeast attached natively (XDP) on the receiving veth; in `lb`, a
    /// `netbeast lb` service (Maglev).
    Netbeast,
    /// `lb`: netbeast attached as above, balancing with iptables' own
    /// `-m statistic` DNAT cascade (the iptables plane's very rules).
    NetbeastStatistic,
    /// iptables, `-t raw PREROUTING`.
    IptablesRaw,
    /// iptables in the table and chain of the scenario (filter INPUT,
    /// filter FORWARD; nat PREROUTING and filter FORWARD for `dnat`).
    Iptables,
    /// nftables, a prerouting chain at priority -300 (where raw sits).
    #[serde(rename = "nftables-prerouting")]
    NftPrerouting,
    /// nftables, the hook of the scenario (input, forward; nat prerouting
    /// and forward for `dnat`).
    #[serde(rename = "nftables")]
    Nft,
}

impl Plane {
    pub fn family(self) -> Option<Family> {
        match self {
            Plane::Floor | Plane::RedirectFloor | Plane::Kernel => None,
            Plane::Netbeast | Plane::NetbeastStatistic => Some(Family::Netbeast),
            Plane::IptablesRaw | Plane::Iptables => Some(Family::Iptables),
            Plane::NftPrerouting | Plane::Nft => Some(Family::Nftables),
        }
    }

    /// Reference rows (floor, kernel) have no rules.
    pub fn has_rules(self) -> bool {
        self.family().is_some()
    }

    pub fn label(self, scenario: Scenario) -> String {
        let chain = match scenario {
            Scenario::Drop | Scenario::Pass => "INPUT",
            Scenario::Limit => "INPUT hashlimit + DROP",
            Scenario::Log => "INPUT LOG + DROP, reader draining",
            Scenario::Forward => "FORWARD",
            Scenario::Dnat => "DNAT + FORWARD",
            Scenario::Lb => "-m statistic DNAT",
        };
        match self {
            Plane::Floor => "floor (bare XDP_DROP)".into(),
            Plane::RedirectFloor => "floor (bare XDP_REDIRECT)".into(),
            Plane::Kernel => match scenario {
                Scenario::Forward | Scenario::Dnat | Scenario::Lb => {
                    "kernel forwarding, no firewall".into()
                }
                _ => "kernel, no firewall".into(),
            },
            Plane::Netbeast => match scenario {
                Scenario::Forward => "netbeast FORWARD, XDP fast path".into(),
                Scenario::Dnat => "netbeast DNAT + FORWARD, fast path".into(),
                Scenario::Lb => "netbeast lb (maglev), fast path".into(),
                _ => format!("netbeast {chain}"),
            },
            Plane::NetbeastStatistic => "netbeast -m statistic, fast path".into(),
            Plane::IptablesRaw => "iptables raw PREROUTING".into(),
            Plane::Iptables => match scenario {
                Scenario::Drop | Scenario::Pass => "iptables filter INPUT".into(),
                Scenario::Limit => "iptables filter INPUT hashlimit + DROP".into(),
                _ => format!("iptables {chain}"),
            },
            Plane::NftPrerouting => "nftables prerouting -300".into(),
            Plane::Nft => match scenario {
                Scenario::Drop | Scenario::Pass | Scenario::Limit | Scenario::Log => {
                    "nftables input".into()
                }
                Scenario::Forward => "nftables forward".into(),
                Scenario::Dnat => "nftables dnat + forward".into(),
                Scenario::Lb => "nftables numgen random map".into(),
            },
        }
    }

    /// [`Plane::label`] in the words of `ip`'s tools: ip6tables' rows say
    /// so.
    pub fn label_in(self, scenario: Scenario, ip: Ip) -> String {
        let label = self.label(scenario);
        match (ip, self.family()) {
            (Ip::V6, Some(Family::Iptables)) => label.replacen("iptables", "ip6tables", 1),
            _ => label,
        }
    }

    /// Short name for namespace tags and JSON.
    pub fn id(self) -> &'static str {
        match self {
            Plane::Floor => "floor",
            Plane::RedirectFloor => "redirect-floor",
            Plane::Kernel => "kernel",
            Plane::Netbeast => "netbeast",
            Plane::NetbeastStatistic => "netbeast-statistic",
            Plane::IptablesRaw => "iptables-raw",
            Plane::Iptables => "iptables",
            Plane::NftPrerouting => "nftables-prerouting",
            Plane::Nft => "nftables",
        }
    }
}

/// The iptables target of the matching rule (and of the ones before it).
fn target(scenario: Scenario) -> &'static str {
    match scenario {
        Scenario::Drop | Scenario::Limit | Scenario::Log => "DROP",
        Scenario::Pass | Scenario::Forward | Scenario::Dnat | Scenario::Lb => "ACCEPT",
    }
}

/// `dnat`'s translation, after `-A PREROUTING`: the router's address (where
/// the generator sends) becomes the sink's.
pub fn dnat_rule() -> String {
    format!(
        "-d {ROUTER_IN}/32 -p udp -m udp --dport {DPORT} -j DNAT --to-destination {SINK}:{DPORT}"
    )
}

/// `lb`'s backend `i` (from 0): one address each in [`BACKEND_NET`].
pub fn backend(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(BACKEND_NET) + i as u32 + 1)
}

/// Most backends `lb` can address in [`BACKEND_NET`] (less its network and
/// broadcast addresses).
pub const MAX_LB_BACKENDS: usize = (1 << (32 - BACKEND_PREFIX_LEN)) - 2;

/// `lb`'s service as `netbeast lb` names it: the router's address.
pub fn lb_service() -> String {
    format!("{ROUTER_IN}:{DPORT}/udp")
}

/// The kube-proxy / article shape of `n` backends, after `-A PREROUTING`:
/// rule `i` takes `1/(n-i)` of what reaches it (printed with ten decimals
/// as iptables prints it), the last one the rest, so each backend gets
/// `1/n` of the connections.
pub fn statistic_rules(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let statistic = if i + 1 < n {
                format!(
                    " -m statistic --mode random --probability {:.10}",
                    1.0 / (n - i) as f64
                )
            } else {
                String::new()
            };
            format!(
                "-d {ROUTER_IN}/32 -p udp -m udp --dport {DPORT}{statistic} -j DNAT \
                 --to-destination {}:{DPORT}",
                backend(i)
            )
        })
        .collect()
}

/// `limit`'s rule in front of the drop: a bucket per flow that every
/// packet meets (a rate no flow reaches, so the drop decides), counted but
/// without a verdict. The table holds every flow the generator sends
/// (`generator::MAX_FLOWS`, 128,000): the kernel's default max (8 × its
/// default size of 8192) would drop the packets of the flows past 65,536.
pub const HASHLIMIT_RULE: &str = "-p udp -m udp --dport 9 -m hashlimit --hashlimit-upto 1000000/sec --hashlimit-burst 1000000 --hashlimit-mode srcip,srcport --hashlimit-name bench --hashlimit-htable-size 32768 --hashlimit-htable-max 131072";

/// `log`'s rule in front of the drop: every packet meets it.
pub const LOG_RULE: &str = "-p udp -m udp --dport 9 -j LOG --log-prefix \"bench: \"";

/// `--stateful`'s first FORWARD rule (forward, dnat): what a stateful
/// firewall starts with, so every packet meets the connection table. The
/// bench's one-way traffic never gets a reply, stays NEW and goes on.
pub const STATEFUL_RULE: &str = "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT";
/// The same in nftables.
const NFT_STATEFUL_RULE: &str = "ct state established,related counter accept";

/// Whether `--stateful` puts [`STATEFUL_RULE`] in front of `scenario`'s
/// rules.
pub fn stateful_in(scenario: Scenario, stateful: bool) -> bool {
    stateful && matches!(scenario, Scenario::Forward | Scenario::Dnat)
}

/// The rule lines after `-A CHAIN`: `n - 1` that never match, then the one
/// that does (after `limit`'s hashlimit rule).
pub fn rule_lines(scenario: Scenario, n: usize, ip: Ip) -> Vec<String> {
    let target = target(scenario);
    let host = ip.prefix_len(32);
    let mut lines: Vec<String> = (0..n)
        .map(|i| {
            let source = if i + 1 < n {
                format!("-s {}/{host} ", rule_source(ip, i))
            } else {
                String::new()
            };
            format!("{source}-p udp -m udp --dport {DPORT} -j {target}")
        })
        .collect();
    if scenario == Scenario::Limit {
        lines.insert(n - 1, HASHLIMIT_RULE.to_string());
    }
    if scenario == Scenario::Log {
        lines.insert(n - 1, LOG_RULE.to_string());
    }
    lines
}

/// The iptables-save text of `n` rules for a data plane that reads it
/// (netbeast, iptables).
pub fn iptables_text(scenario: Scenario, plane: Plane, n: usize, ip: Ip, stateful: bool) -> String {
    let (table, chains, chain): (&str, &[&str], &str) = match (scenario, plane) {
        (_, Plane::IptablesRaw) => ("raw", &["PREROUTING", "OUTPUT"], "PREROUTING"),
        (Scenario::Drop | Scenario::Pass | Scenario::Limit | Scenario::Log, _) => {
            ("filter", &["INPUT", "FORWARD", "OUTPUT"], "INPUT")
        }
        (Scenario::Forward | Scenario::Dnat | Scenario::Lb, _) => {
            ("filter", &["INPUT", "FORWARD", "OUTPUT"], "FORWARD")
        }
    };
    let nat: Vec<String> = match (scenario, plane) {
        (Scenario::Dnat, _) => vec![dnat_rule()],
        // netbeast lb's service is made with `netbeast lb`, not rules.
        (Scenario::Lb, Plane::NetbeastStatistic | Plane::Iptables) => statistic_rules(n),
        _ => Vec::new(),
    };
    let mut text = String::new();
    if !nat.is_empty() {
        text.push_str("*nat\n");
        for c in ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"] {
            let _ = writeln!(text, ":{c} ACCEPT [0:0]");
        }
        for rule in nat {
            let _ = writeln!(text, "-A PREROUTING {rule}");
        }
        text.push_str("COMMIT\n");
    }
    let _ = writeln!(text, "*{table}");
    for c in chains {
        let _ = writeln!(text, ":{c} ACCEPT [0:0]");
    }
    // lb's axis is its backends: FORWARD holds the one rule that accepts.
    let filter_rules = if scenario == Scenario::Lb { 1 } else { n };
    if stateful_in(scenario, stateful) && plane != Plane::IptablesRaw {
        let _ = writeln!(text, "-A {chain} {STATEFUL_RULE}");
    }
    for line in rule_lines(scenario, filter_rules, ip) {
        let _ = writeln!(text, "-A {chain} {line}");
    }
    text.push_str("COMMIT\n");
    text
}

/// The nftables translation of [`rule_lines`] (and of [`dnat_rule`]), one
/// rule per line, each with a counter.
pub fn nft_text(scenario: Scenario, plane: Plane, n: usize, ip: Ip, stateful: bool) -> String {
    let (hook, priority) = match (scenario, plane) {
        (_, Plane::NftPrerouting) => ("prerouting", -300),
        (Scenario::Drop | Scenario::Pass | Scenario::Limit | Scenario::Log, _) => ("input", 0),
        (Scenario::Forward | Scenario::Dnat | Scenario::Lb, _) => ("forward", 0),
    };
    let verdict = target(scenario).to_lowercase();
    let (nft_family, saddr) = ip.nft();
    let mut text = format!("table {nft_family} {NFT_TABLE} {{\n");
    let n = if scenario == Scenario::Lb {
        // A random number per connection indexes a map of the backends:
        // nftables' own load balancer, one rule whatever the count.
        let map: Vec<String> = (0..n).map(|i| format!("{i} : {}", backend(i))).collect();
        let _ = writeln!(
            text,
            "  chain {NFT_NAT_CHAIN} {{\n    type nat hook prerouting priority -100; policy accept;\n    ip daddr {ROUTER_IN} udp dport {DPORT} counter dnat to numgen random mod {n} map {{ {} }}\n  }}",
            map.join(", ")
        );
        1
    } else {
        n
    };
    if scenario == Scenario::Dnat {
        // Priority -100: where iptables' nat PREROUTING sits (dstnat).
        let _ = writeln!(
            text,
            "  chain {NFT_NAT_CHAIN} {{\n    type nat hook prerouting priority -100; policy accept;\n    ip daddr {ROUTER_IN} udp dport {DPORT} counter dnat to {SINK}:{DPORT}\n  }}"
        );
    }
    let _ = writeln!(
        text,
        "  chain {NFT_RULES_CHAIN} {{\n    type filter hook {hook} priority {priority}; policy accept;"
    );
    if stateful_in(scenario, stateful) && plane != Plane::NftPrerouting {
        let _ = writeln!(text, "    {NFT_STATEFUL_RULE}");
    }
    for i in 0..n {
        let source = if i + 1 < n {
            format!("{saddr} {} ", rule_source(ip, i))
        } else {
            String::new()
        };
        let _ = writeln!(text, "    {source}udp dport {DPORT} counter {verdict}");
    }
    text.push_str("  }\n}\n");
    text
}

#[derive(Debug, thiserror::Error)]
pub enum PlaneError {
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
    #[error("`{command}` failed in {ns}: {message}")]
    Tool {
        command: String,
        ns: String,
        message: String,
    },
    #[error("cannot read the counters of {what}: {message}")]
    Counters { what: String, message: String },
}

/// Runs `program args` in `ns` with `input` on stdin; stdout on success.
pub fn run_with_input(
    ns: &Netns,
    program: &str,
    args: &[&str],
    input: &str,
) -> Result<String, PlaneError> {
    let command = format!("{program} {}", args.join(" "));
    let fail = |message: String| PlaneError::Tool {
        command: command.clone(),
        ns: ns.name().to_string(),
        message,
    };
    let mut child = ns
        .command(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    let mut stdin = child.stdin.take().expect("piped");
    let text = input.to_string();
    // Written from a thread: the child may fill its stdout before reading
    // everything.
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let output = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    let _ = writer.join();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(fail(first_lines(&stderr)));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A tool's complaint in a few lines (a 10,000-line echo helps nobody).
fn first_lines(text: &str) -> String {
    let lines: Vec<&str> = text.trim().lines().take(3).collect();
    lines.join(" / ")
}

/// Loads the ruleset of `plane` into `ns` (whose netbeast binary is set
/// for netbeast).
pub fn load_rules(
    ns: &Netns,
    scenario: Scenario,
    plane: Plane,
    n: usize,
    ip: Ip,
    stateful: bool,
) -> Result<(), PlaneError> {
    match plane {
        Plane::Floor | Plane::RedirectFloor | Plane::Kernel => Ok(()),
        Plane::Netbeast | Plane::NetbeastStatistic => {
            let text = iptables_text(scenario, plane, n, ip, stateful);
            let args: &[&str] = match ip {
                Ip::V4 => &["restore"],
                Ip::V6 => &["restore", "-6"],
            };
            let out = ns.netbeast_with_input(args, &text)?;
            if !out.status.success() {
                return Err(PlaneError::Tool {
                    command: "netbeast restore".into(),
                    ns: ns.name().into(),
                    message: first_lines(&String::from_utf8_lossy(&out.stderr)),
                });
            }
            if scenario == Scenario::Lb && plane == Plane::Netbeast {
                load_lb_service(ns, n)?;
            }
            Ok(())
        }
        Plane::Iptables | Plane::IptablesRaw => run_with_input(
            ns,
            ip.restore(),
            &[],
            &iptables_text(scenario, plane, n, ip, stateful),
        )
        .map(drop),
        Plane::NftPrerouting | Plane::Nft => run_with_input(
            ns,
            "nft",
            &["-f", "-"],
            &nft_text(scenario, plane, n, ip, stateful),
        )
        .map(drop),
    }
}

/// Whether netbeast takes the ruleset of `scenario` at all (`netbeast
/// restore --test`): `dnat` needs its nat table. Err is netbeast's answer.
pub fn netbeast_accepts(
    ns: &Netns,
    scenario: Scenario,
    ip: Ip,
    stateful: bool,
) -> Result<Result<(), String>, PlaneError> {
    let text = iptables_text(scenario, Plane::Netbeast, 1, ip, stateful);
    let args: &[&str] = match ip {
        Ip::V4 => &["restore", "--test"],
        Ip::V6 => &["restore", "-6", "--test"],
    };
    let out = ns.netbeast_with_input(args, &text)?;
    if out.status.success() {
        Ok(Ok(()))
    } else {
        Ok(Err(first_lines(&String::from_utf8_lossy(&out.stderr))))
    }
}

/// What a data plane's own counters say about the traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RuleCounters {
    /// Packets its rules (or policies) dropped.
    pub dropped: u64,
    /// Packets the matching (last) rule counted.
    pub matched: u64,
    /// `dnat`: packets the DNAT rule counted. NAT rules see only each
    /// connection's first packet (conntrack translates the rest), so this
    /// is the number of connections.
    pub translated: Option<u64>,
}

/// The counters of `plane` in `ns` (totals since the rules were loaded).
pub fn rule_counters(
    ns: &Netns,
    scenario: Scenario,
    plane: Plane,
    ip: Ip,
) -> Result<Option<RuleCounters>, PlaneError> {
    let counters_error = |message: String| PlaneError::Counters {
        what: format!("{} in {}", plane.label(scenario), ns.name()),
        message,
    };
    let (table, chain) = match (scenario, plane) {
        (_, Plane::IptablesRaw) => ("raw", "PREROUTING"),
        (Scenario::Drop | Scenario::Pass | Scenario::Limit | Scenario::Log, _) => {
            ("filter", "INPUT")
        }
        (Scenario::Forward | Scenario::Dnat | Scenario::Lb, _) => ("filter", "FORWARD"),
    };
    let listing = |table: &str, chain: &str| -> Result<ListedChain, PlaneError> {
        let args = ["-t", table, "-L", chain, "-v", "-x", "-n"];
        let text = if plane.family() == Some(Family::Netbeast) {
            let mut argv = vec![ip.iptables()];
            argv.extend(args);
            ns.netbeast_ok(&argv)?
        } else {
            ns.run_ok(ip.iptables(), &args)?
        };
        parse_listing(&text, chain).ok_or_else(|| {
            counters_error(format!(
                "unreadable listing of {table} {chain}:\n{}",
                first_lines(&text)
            ))
        })
    };
    let counters = match plane {
        Plane::Floor | Plane::RedirectFloor | Plane::Kernel => return Ok(None),
        Plane::NftPrerouting | Plane::Nft => {
            let nft = |chain| -> Result<RuleCounters, PlaneError> {
                let text = ns.run_ok("nft", &["list", "chain", ip.nft().0, NFT_TABLE, chain])?;
                nft_counters(&text).map_err(counters_error)
            };
            let mut counters = nft(NFT_RULES_CHAIN)?;
            if matches!(scenario, Scenario::Dnat | Scenario::Lb) {
                counters.translated = Some(nft(NFT_NAT_CHAIN)?.matched);
            }
            counters
        }
        Plane::Netbeast | Plane::NetbeastStatistic | Plane::Iptables | Plane::IptablesRaw => {
            let listed = listing(table, chain)?;
            let mut counters = RuleCounters::default();
            for rule in &listed.rules {
                if rule.target == "DROP" {
                    counters.dropped += rule.packets;
                }
            }
            if listed.policy.as_deref() == Some("DROP") {
                counters.dropped += listed.policy_packets;
            }
            counters.matched = listed.rules.last().map_or(0, |r| r.packets);
            if scenario == Scenario::Lb && plane == Plane::Netbeast {
                counters.translated = Some(lb_connections(ns)?.iter().sum());
            } else if matches!(scenario, Scenario::Dnat | Scenario::Lb) {
                let nat = listing("nat", "PREROUTING")?;
                counters.translated = Some(nat.rules.iter().map(|r| r.packets).sum());
            }
            counters
        }
    };
    Ok(Some(counters))
}

/// `netbeast lb list --json`: the connections each backend of the bench's
/// service was given, in backend order.
fn lb_connections(ns: &Netns) -> Result<Vec<u64>, PlaneError> {
    let text = ns.netbeast_ok(&["lb", "list", "--json"])?;
    let error = |message: String| PlaneError::Counters {
        what: format!("netbeast lb list in {}", ns.name()),
        message,
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| error(e.to_string()))?;
    let service = lb_service();
    let backends = v["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["service"] == service.as_str()))
        .and_then(|s| s["backends"].as_array())
        .ok_or_else(|| error(format!("no service {service} in {}", first_lines(&text))))?;
    backends
        .iter()
        .map(|b| {
            b["connections"]
                .as_u64()
                .ok_or_else(|| error(format!("no connection count in {b}")))
        })
        .collect()
}

/// `lb`: the connections each backend was given, by the data plane's own
/// counters (netbeast lb's per-backend picks, the DNAT rules' counters of
/// a `-m statistic` cascade: one rule per backend). None for nftables,
/// whose map has no per-element counter, and for the other scenarios.
pub fn backend_connections(
    ns: &Netns,
    scenario: Scenario,
    plane: Plane,
) -> Result<Option<Vec<u64>>, PlaneError> {
    if scenario != Scenario::Lb {
        return Ok(None);
    }
    match plane {
        Plane::Netbeast => lb_connections(ns).map(Some),
        Plane::NetbeastStatistic | Plane::Iptables => {
            let args = ["-t", "nat", "-L", "PREROUTING", "-v", "-x", "-n"];
            let text = if plane == Plane::Iptables {
                ns.run_ok("iptables", &args)?
            } else {
                let mut argv = vec!["iptables"];
                argv.extend(args);
                ns.netbeast_ok(&argv)?
            };
            let listed =
                parse_listing(&text, "PREROUTING").ok_or_else(|| PlaneError::Counters {
                    what: format!("nat PREROUTING in {}", ns.name()),
                    message: first_lines(&text),
                })?;
            Ok(Some(listed.rules.iter().map(|r| r.packets).collect()))
        }
        _ => Ok(None),
    }
}

/// Sets up `netbeast lb`'s service of `n` backends in `ns` (whose netbeast
/// is attached): no health check (the sink answers nothing; every backend
/// is up), all backends in one `lb backend add`.
pub fn load_lb_service(ns: &Netns, n: usize) -> Result<(), PlaneError> {
    let service = lb_service();
    ns.netbeast_ok(&["lb", "add", &service, "--health", "none"])?;
    let backends: Vec<String> = (0..n).map(|i| format!("{}:{DPORT}", backend(i))).collect();
    let mut args = vec!["lb", "backend", "add", service.as_str()];
    args.extend(backends.iter().map(String::as_str));
    ns.netbeast_ok(&args)?;
    Ok(())
}

/// Counters of `nft list chain` output: every rule line carries
/// `counter packets N bytes M` before its verdict.
fn nft_counters(text: &str) -> Result<RuleCounters, String> {
    let mut counters = RuleCounters::default();
    let mut last = None;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(i) = words.iter().position(|w| *w == "packets") else {
            continue;
        };
        let packets: u64 = words
            .get(i + 1)
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("no packet count in {line:?}"))?;
        if words.last() == Some(&"drop") {
            counters.dropped += packets;
        }
        last = Some(packets);
    }
    counters.matched = last.ok_or("no rule with a counter")?;
    Ok(counters)
}

/// The receiver's UDP counters (`/proc/net/snmp` of its namespace, or
/// `snmp6` for IPv6): datagrams that reached the UDP layer with a valid
/// checksum, with or without a socket.
pub fn udp_delivered(ns: &Netns, ip: Ip) -> Result<u64, PlaneError> {
    let file = match ip {
        Ip::V4 => "/proc/thread-self/net/snmp",
        Ip::V6 => "/proc/thread-self/net/snmp6",
    };
    let text = ns
        .in_netns(|| std::fs::read_to_string(file))?
        .map_err(|e| PlaneError::Counters {
            what: format!("udp in {}", ns.name()),
            message: e.to_string(),
        })?;
    let pairs: Vec<(&str, &str)> = match ip {
        Ip::V4 => {
            let mut lines = text.lines().filter(|l| l.starts_with("Udp: "));
            let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
                return Err(PlaneError::Counters {
                    what: format!("udp in {}", ns.name()),
                    message: "no Udp lines in /proc/net/snmp".into(),
                });
            };
            names
                .split_whitespace()
                .zip(values.split_whitespace())
                .collect()
        }
        // One `Udp6InDatagrams 12` pair a line.
        Ip::V6 => text
            .lines()
            .filter_map(|l| {
                l.split_whitespace()
                    .collect::<Vec<_>>()
                    .get(..2)
                    .map(|p| (p[0], p[1]))
            })
            .filter_map(|(name, value)| name.strip_prefix("Udp6").map(|n| (n, value)))
            .collect(),
    };
    let mut total = 0;
    // Not InErrors: with no socket listening, the kernel counts there only
    // datagrams whose checksum is wrong, which a sound generator never
    // sends (a wrong IPv6 UDP checksum then shows as unaccounted frames).
    for (name, value) in pairs {
        if matches!(name, "InDatagrams" | "NoPorts") {
            total += value.parse::<u64>().unwrap_or(0);
        }
    }
    Ok(total)
}

/// The connections a data plane's table holds in `ns`: netbeast's (`netbeast
/// conntrack -C`, both families) or the kernel's (`nf_conntrack_count`,
/// which iptables and nftables share), for `--stateful`, whose rule makes
/// each of them track every packet. One-way traffic stays unreplied, so
/// each flow is one connection while the run lasts; a datagram whose
/// checksum is wrong is invalid to both and makes none.
pub fn connections(ns: &Netns, plane: Plane) -> Result<u64, PlaneError> {
    let error = |message: String| PlaneError::Counters {
        what: format!("connections in {}", ns.name()),
        message,
    };
    let text = if plane.family() == Some(Family::Netbeast) {
        ns.netbeast_ok(&["conntrack", "-C"])?
    } else {
        ns.sysctl_get("net.netfilter.nf_conntrack_count")?
    };
    text.trim()
        .parse()
        .map_err(|e| error(format!("{e}: {text:?}")))
}

/// netbeast's own drop counter (`netbeast stats --json`).
pub fn netbeast_dropped(ns: &Netns) -> Result<u64, PlaneError> {
    let text = ns.netbeast_ok(&["stats", "--json"])?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| PlaneError::Counters {
        what: format!("netbeast stats in {}", ns.name()),
        message: e.to_string(),
    })?;
    Ok(v["dropped"].as_u64().unwrap_or(0))
}

/// Packets an interface dropped on transmit (`ip -s link`: the veth's
/// peer ring was full), for the router's way out.
pub fn tx_dropped(ns: &Netns, iface: &str) -> Result<u64, PlaneError> {
    let text = ns.ip(&["-s", "-j", "link", "show", "dev", iface])?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| PlaneError::Counters {
        what: format!("{iface} in {}", ns.name()),
        message: e.to_string(),
    })?;
    Ok(v[0]["stats64"]["tx"]["dropped"].as_u64().unwrap_or(0))
}

/// Where a program is found on PATH.
pub fn find_program(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(Into::into))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The Debian package of each tool the benchmark runs.
pub fn package_of(tool: &str) -> &'static str {
    match tool {
        "iptables" | "iptables-restore" | "ip6tables" | "ip6tables-restore" => "iptables",
        "nft" => "nftables",
        "ip" => "iproute2",
        _ => "",
    }
}

/// `iptables -V`, to say in the report which iptables was measured.
pub fn iptables_version() -> String {
    Command::new("iptables")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_texts_write_the_same_rules_in_2001_2() {
        assert_eq!(
            Ip::V6.addr(LOCAL_RECEIVER).to_string(),
            "2001:2::c612:fe",
            "198.18.0.254 as the last 32 bits"
        );
        assert_eq!(Ip::V6.prefix_len(PREFIX_LEN), 120);
        let lines = rule_lines(Scenario::Drop, 2, Ip::V6);
        assert_eq!(
            lines,
            [
                "-s 2001:2::a00:0/128 -p udp -m udp --dport 9 -j DROP",
                "-p udp -m udp --dport 9 -j DROP"
            ]
        );
        let many = rule_lines(Scenario::Drop, 10_000, Ip::V6);
        let unique: std::collections::HashSet<_> = many.iter().collect();
        assert_eq!(unique.len(), 10_000);
        let nft = nft_text(Scenario::Forward, Plane::Nft, 2, Ip::V6, false);
        assert!(nft.starts_with("table ip6 nbbench {"), "{nft}");
        assert!(
            nft.contains("    ip6 saddr 2001:2::a00:0 udp dport 9 counter accept\n"),
            "{nft}"
        );
        assert!(Ip::V6.has(Scenario::Forward) && !Ip::V6.has(Scenario::Dnat));
    }

    #[test]
    fn only_the_last_rule_lacks_a_source() {
        let lines = rule_lines(Scenario::Drop, 3, Ip::V4);
        assert_eq!(lines[0], "-s 10.0.0.0/32 -p udp -m udp --dport 9 -j DROP");
        assert_eq!(lines[1], "-s 10.0.0.1/32 -p udp -m udp --dport 9 -j DROP");
        assert_eq!(lines[2], "-p udp -m udp --dport 9 -j DROP");
        let many = rule_lines(Scenario::Pass, 10_000, Ip::V4);
        assert_eq!(
            many[9_998],
            "-s 10.0.39.14/32 -p udp -m udp --dport 9 -j ACCEPT"
        );
        let unique: std::collections::HashSet<_> = many.iter().collect();
        assert_eq!(unique.len(), 10_000);
    }

    #[test]
    fn stateful_puts_the_established_rule_first_in_forward_and_dnat_only() {
        for scenario in [Scenario::Forward, Scenario::Dnat] {
            let text = iptables_text(scenario, Plane::Iptables, 2, Ip::V4, true);
            let forward: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("-A FORWARD"))
                .collect();
            assert_eq!(forward.len(), 3, "{text}");
            assert_eq!(forward[0], format!("-A FORWARD {STATEFUL_RULE}"));
            let nft = nft_text(scenario, Plane::Nft, 2, Ip::V4, true);
            let first = nft
                .lines()
                .skip_while(|l| !l.contains("type filter hook forward"))
                .nth(1);
            assert_eq!(
                first,
                Some(format!("    {NFT_STATEFUL_RULE}").as_str()),
                "{nft}"
            );
        }
        for scenario in [Scenario::Drop, Scenario::Limit] {
            let text = iptables_text(scenario, Plane::Iptables, 2, Ip::V4, true);
            assert!(!text.contains("ctstate"), "{text}");
            assert!(!nft_text(scenario, Plane::Nft, 2, Ip::V4, true).contains("ct state"));
        }
        assert!(
            !iptables_text(Scenario::Forward, Plane::Iptables, 2, Ip::V4, false)
                .contains("ctstate")
        );
    }

    #[test]
    fn texts_name_the_table_and_chain_of_each_plane() {
        let raw = iptables_text(Scenario::Drop, Plane::IptablesRaw, 2, Ip::V4, false);
        assert!(raw.starts_with("*raw\n:PREROUTING ACCEPT [0:0]\n"), "{raw}");
        assert!(raw.contains("-A PREROUTING -p udp -m udp --dport 9 -j DROP\nCOMMIT\n"));
        let fwd = iptables_text(Scenario::Forward, Plane::Netbeast, 1, Ip::V4, false);
        assert!(fwd.contains("-A FORWARD -p udp -m udp --dport 9 -j ACCEPT"));
        let dnat = iptables_text(Scenario::Dnat, Plane::Iptables, 2, Ip::V4, false);
        assert!(
            dnat.starts_with("*nat\n")
                && dnat.contains(
                    "-A PREROUTING -d 198.18.1.254/32 -p udp -m udp --dport 9 -j DNAT --to-destination 198.19.0.2:9\nCOMMIT\n*filter\n"
                ),
            "{dnat}"
        );
        assert!(
            dnat.ends_with(
                "-A FORWARD -s 10.0.0.0/32 -p udp -m udp --dport 9 -j ACCEPT\n-A FORWARD -p udp -m udp --dport 9 -j ACCEPT\nCOMMIT\n"
            ),
            "{dnat}"
        );
        let nft = nft_text(Scenario::Drop, Plane::NftPrerouting, 2, Ip::V4, false);
        assert!(nft.contains("type filter hook prerouting priority -300; policy accept;"));
        assert!(nft.contains(
            "    ip saddr 10.0.0.0 udp dport 9 counter drop\n    udp dport 9 counter drop\n"
        ));
        let nat = nft_text(Scenario::Dnat, Plane::Nft, 2, Ip::V4, false);
        assert!(
            nat.contains(
                "  chain nat {\n    type nat hook prerouting priority -100; policy accept;\n    ip daddr 198.18.1.254 udp dport 9 counter dnat to 198.19.0.2:9\n  }\n"
            ),
            "{nat}"
        );
        assert!(
            nat.contains(
                "  chain rules {\n    type filter hook forward priority 0; policy accept;\n    ip saddr 10.0.0.0 udp dport 9 counter accept\n    udp dport 9 counter accept\n  }\n}\n"
            ),
            "{nat}"
        );
    }

    /// `lb`: the kube-proxy cascade in nat PREROUTING (1/3, 1/2, the rest)
    /// for netbeast's statistic plane and iptables, none for netbeast lb
    /// (its service is made with `netbeast lb`), one FORWARD rule whatever
    /// the backend count, and nftables' one numgen map rule.
    #[test]
    fn lb_texts_balance_over_the_backends() {
        let cascade = iptables_text(Scenario::Lb, Plane::Iptables, 3, Ip::V4, false);
        assert!(
            cascade.contains(
                "-A PREROUTING -d 198.18.1.254/32 -p udp -m udp --dport 9 -m statistic --mode random --probability 0.3333333333 -j DNAT --to-destination 198.19.16.1:9\n\
                 -A PREROUTING -d 198.18.1.254/32 -p udp -m udp --dport 9 -m statistic --mode random --probability 0.5000000000 -j DNAT --to-destination 198.19.16.2:9\n\
                 -A PREROUTING -d 198.18.1.254/32 -p udp -m udp --dport 9 -j DNAT --to-destination 198.19.16.3:9\nCOMMIT\n"
            ),
            "{cascade}"
        );
        assert!(
            cascade.ends_with("-A FORWARD -p udp -m udp --dport 9 -j ACCEPT\nCOMMIT\n"),
            "{cascade}"
        );
        assert_eq!(
            iptables_text(Scenario::Lb, Plane::NetbeastStatistic, 3, Ip::V4, false),
            cascade
        );
        let service = iptables_text(Scenario::Lb, Plane::Netbeast, 1000, Ip::V4, false);
        assert!(!service.contains("*nat"), "{service}");
        assert_eq!(service.matches("-A FORWARD").count(), 1, "{service}");
        assert_eq!(backend(999), Ipv4Addr::new(198, 19, 19, 232));
        let nft = nft_text(Scenario::Lb, Plane::Nft, 3, Ip::V4, false);
        assert!(
            nft.contains(
                "ip daddr 198.18.1.254 udp dport 9 counter dnat to numgen random mod 3 map { 0 : 198.19.16.1, 1 : 198.19.16.2, 2 : 198.19.16.3 }\n"
            ),
            "{nft}"
        );
        assert_eq!(nft.matches("counter accept").count(), 1, "{nft}");
    }

    #[test]
    fn nft_counters_are_read() {
        let text = "table ip nbbench {\n\tchain rules {\n\t\ttype filter hook input priority filter; policy accept;\n\t\tip saddr 10.0.0.0 udp dport 9 counter packets 0 bytes 0 drop\n\t\tudp dport 9 counter packets 1234 bytes 61700 drop\n\t}\n}\n";
        assert_eq!(
            nft_counters(text).unwrap(),
            RuleCounters {
                dropped: 1234,
                matched: 1234,
                translated: None
            }
        );
        let accept = "udp dport 9 counter packets 7 bytes 350 accept\n";
        assert_eq!(
            nft_counters(accept).unwrap(),
            RuleCounters {
                dropped: 0,
                matched: 7,
                translated: None
            }
        );
        assert!(nft_counters("table ip nbbench {\n}\n").is_err());
    }
}
