//! `iptables -L` and `iptables -S` output, column for column as iptables
//! 1.8 prints it (legacy table layout). Without `-n`, addresses and ports
//! are named as iptables names them ([`super::names`]: `localhost`,
//! `loopback/8`, `dpt:ssh`) when the format carries names; `-n` prints
//! protocols as numbers (`6`, `0` for all), as iptables 1.8.9 does.

use std::fmt::Write as _;

use super::command::references;
use super::model::Table;
use super::model::{Chain, Counter, Family, IfaceName, Ipv4Net, Ipv6Net, Negatable, Rule, Target};
use super::names::Names;
use super::parse::protocol_name;
use super::save::{self, CounterStyle, policy_name};

/// How `-L` prints: `-v`, `-n`, `-x` and `--line-numbers`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListFormat {
    pub verbose: bool,
    pub numeric: bool,
    pub exact: bool,
    pub line_numbers: bool,
    /// Host, network and service names for a listing without `-n`; none:
    /// numbers (and `anywhere`).
    pub names: Option<&'static Names>,
    /// The ruleset's family: how a rule without an address prints it
    /// (`0.0.0.0/0` or `::/0`).
    pub family: Family,
}

impl ListFormat {
    /// The names to print, unless `-n` asked for numbers.
    fn names(&self) -> Option<&'static Names> {
        self.names.filter(|_| !self.numeric)
    }

    /// Looks up, all at once, the host names of the addresses of `rules`.
    fn prefetch<'r>(&self, rules: impl IntoIterator<Item = &'r Rule>) {
        if let Some(names) = self.names() {
            names.prefetch_hosts(
                rules
                    .into_iter()
                    .flat_map(|r| [&r.source, &r.destination])
                    .flatten()
                    .filter(|a| a.value.prefix_len != 0 || a.value.mask.is_some())
                    .map(|a| a.value.addr),
            );
        }
    }
}

/// `-L` for every chain of the table: each with its header, a blank line
/// between.
pub fn list_chains(table: &Table, format: &ListFormat) -> String {
    format.prefetch(table.chains.iter().flat_map(|c| &c.rules));
    table
        .chains
        .iter()
        .map(|chain| list_chain(table, chain, format))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `-L CHAIN`: the chain header, the column header and every rule.
/// `table` holds the chain (user-defined chains show how many rules jump
/// to them).
pub fn list_chain(table: &Table, chain: &Chain, format: &ListFormat) -> String {
    format.prefetch(&chain.rules);
    let references = references(table, &chain.name).len();
    let mut out = chain_header(chain, references, format);
    out.push_str(&column_header(format));
    for (index, rule) in chain.rules.iter().enumerate() {
        out.push_str(&rule_line(rule, index + 1, format));
    }
    out
}

/// `-L CHAIN N`: only that rule's line, no headers; nothing when the chain
/// has no rule N (iptables prints nothing and succeeds).
pub fn list_rule(chain: &Chain, position: usize, format: &ListFormat) -> String {
    position
        .checked_sub(1)
        .and_then(|index| chain.rules.get(index))
        .map(|rule| {
            format.prefetch([rule]);
            rule_line(rule, position, format)
        })
        .unwrap_or_default()
}

/// `Chain INPUT (policy ACCEPT)`, with `-v` `(policy DROP 12 packets, 3400 bytes)`.
fn chain_header(chain: &Chain, references: usize, format: &ListFormat) -> String {
    let Some(policy) = chain.policy else {
        return format!("Chain {} ({references} references)\n", chain.name);
    };
    let mut out = format!("Chain {} (policy {}", chain.name, policy_name(policy));
    if format.verbose {
        let Counter { packets, bytes } = chain.policy_counter;
        let _ = write!(
            out,
            " {}packets, {}bytes",
            count(packets, format.exact, false),
            count(bytes, format.exact, false)
        );
    }
    out.push_str(")\n");
    out
}

fn column_header(format: &ListFormat) -> String {
    let mut out = String::new();
    if format.line_numbers {
        let _ = write!(out, "{:<4} ", "num");
    }
    if format.verbose {
        if format.exact {
            let _ = write!(out, "{:>8} {:>10} ", "pkts", "bytes");
        } else {
            let _ = write!(out, "{:>5} {:>5} ", "pkts", "bytes");
        }
    }
    let _ = write!(out, "{:<9}  prot opt", "target");
    if format.verbose {
        let _ = write!(out, " {:<6} {:<6} ", "in", "out");
    }
    let _ = writeln!(out, " {:<19}  {:<19} ", "source", "destination");
    out
}

/// A counter as iptables prints it: exact with `-x`, otherwise rounded to
/// K/M/G/T (powers of 1000) once above 99999. In a table column the number
/// is right-aligned; in the chain header it is not.
pub fn count(n: u64, exact: bool, column: bool) -> String {
    if exact {
        return if column {
            format!("{n:>8} ")
        } else {
            format!("{n} ")
        };
    }
    if n <= 99_999 {
        return if column {
            format!("{n:>5} ")
        } else {
            format!("{n} ")
        };
    }
    let mut value = n;
    for suffix in ['K', 'M', 'G'] {
        value = (value + 500) / 1000;
        if value <= 9999 {
            return if column {
                format!("{value:>4}{suffix} ")
            } else {
                format!("{value}{suffix} ")
            };
        }
    }
    value = (value + 500) / 1000;
    if column {
        format!("{value:>4}T ")
    } else {
        format!("{value}T ")
    }
}

/// One rule's line under the column header.
pub fn rule_line(rule: &Rule, number: usize, format: &ListFormat) -> String {
    let mut out = String::new();
    if format.line_numbers {
        let _ = write!(out, "{number:<4} ");
    }
    if format.verbose {
        out.push_str(&count(rule.counter.packets, format.exact, true));
        out.push_str(&count(rule.counter.bytes, format.exact, true));
    }
    let (protocol_bang, protocol) = if format.numeric {
        // iptables 1.8.9 -n: the number, 0 for all.
        let p = rule.protocol.as_ref();
        let bang = if p.is_some_and(|p| p.negated) {
            '!'
        } else {
            ' '
        };
        (bang, p.map_or(0, |p| p.value).to_string())
    } else {
        protocol_column(rule, false)
    };
    let _ = write!(
        out,
        "{:<9} {protocol_bang}{protocol:<4} {} ",
        target_name(&rule.target),
        fragment_column(rule)
    );
    if format.verbose {
        let any = if format.numeric { "*" } else { "any" };
        let _ = write!(
            out,
            " {:<6} {:<6} ",
            iface_column(&rule.in_iface, any),
            iface_column(&rule.out_iface, any)
        );
    }
    for (bang, text) in address_columns(rule, format.family, format.numeric, format.names()) {
        let _ = write!(out, "{bang}{text:<19} ");
    }
    out.push_str(&match_columns(rule, format.numeric, format.names()));
    out.push('\n');
    out
}

/// The line iptables -v prints for each rule it adds, deletes or checks:
/// `ACCEPT  tcp opt -- in * out *  0.0.0.0/0  -> 0.0.0.0/0   tcp dpt:22`.
pub fn echo_rule(rule: &Rule, family: Family) -> String {
    let (protocol_bang, protocol) = protocol_column(rule, true);
    let [(source_bang, source), (destination_bang, destination)] =
        address_columns(rule, family, true, None);
    format!(
        "{} {protocol_bang}{protocol} opt {} in {} out {} {source_bang}{source} {destination_bang}-> {destination}  {}\n",
        target_name(&rule.target),
        fragment_column(rule),
        iface_column(&rule.in_iface, "*"),
        iface_column(&rule.out_iface, "*"),
        match_columns(rule, true, None)
    )
}

/// `-S`: the policies (`-P`), then the rules (`-A`), with `-c` counters
/// when verbose.
pub fn list_rules<'a>(
    chains: impl IntoIterator<Item = &'a Chain> + Clone,
    counters: bool,
) -> String {
    let mut out = String::new();
    for chain in chains.clone() {
        match chain.policy {
            Some(policy) => {
                let _ = write!(out, "-P {} {}", chain.name, policy_name(policy));
                if counters {
                    let Counter { packets, bytes } = chain.policy_counter;
                    let _ = write!(out, " -c {packets} {bytes}");
                }
                out.push('\n');
            }
            None => {
                let _ = writeln!(out, "-N {}", chain.name);
            }
        }
    }
    for chain in chains {
        for rule in &chain.rules {
            out.push_str(&rule_spec(chain, rule, counters));
        }
    }
    out
}

/// `-S CHAIN N`: that rule only; nothing when there is no rule N.
pub fn list_rule_spec(chain: &Chain, position: usize, counters: bool) -> String {
    position
        .checked_sub(1)
        .and_then(|index| chain.rules.get(index))
        .map(|rule| rule_spec(chain, rule, counters))
        .unwrap_or_default()
}

fn rule_spec(chain: &Chain, rule: &Rule, counters: bool) -> String {
    let style = if counters {
        CounterStyle::Inline
    } else {
        CounterStyle::Omit
    };
    let mut line = save::rule_spec(&chain.name, rule, style);
    line.push('\n');
    line
}

fn target_name(target: &Target) -> &str {
    match target {
        // libxt_CT's NOTRACK is an alias: the kernel's target is CT, and
        // -L names the kernel's (its last column says NOTRACK).
        Target::Ct(_) => "CT",
        _ => target.name(),
    }
}

fn protocol_column(rule: &Rule, numeric: bool) -> (char, String) {
    let (negated, protocol) = rule
        .protocol
        .as_ref()
        .map_or((false, 0), |p| (p.negated, p.value));
    let name =
        protocol_name(protocol, numeric).map_or_else(|| protocol.to_string(), str::to_string);
    (if negated { '!' } else { ' ' }, name)
}

/// The `opt` column: `--`, `-f` or `!f`.
fn fragment_column(rule: &Rule) -> &'static str {
    match rule.fragment {
        None => "--",
        Some(true) => "-f",
        Some(false) => "!f",
    }
}

fn iface_column(iface: &Option<Negatable<IfaceName>>, any: &str) -> String {
    match iface {
        None => any.to_string(),
        Some(iface) => format!(
            "{}{}{}",
            if iface.negated { "!" } else { "" },
            iface.value.name,
            if iface.value.wildcard { "+" } else { "" }
        ),
    }
}

/// The source and destination columns of a rule of `family`.
fn address_columns(
    rule: &Rule,
    family: Family,
    numeric: bool,
    names: Option<&Names>,
) -> [(char, String); 2] {
    match family {
        Family::V4 => [
            address_column(&rule.source, numeric, names),
            address_column(&rule.destination, numeric, names),
        ],
        Family::V6 => [
            address_column6(&rule.source6, numeric),
            address_column6(&rule.destination6, numeric),
        ],
    }
}

/// As ip6tables: `anywhere` (or `::/0` with `-n`), else the address and
/// `/prefix` unless it is a single host. IPv6 addresses are printed as
/// numbers, never looked up by name.
fn address_column6(address: &Option<Negatable<Ipv6Net>>, numeric: bool) -> (char, String) {
    let bang = if address.as_ref().is_some_and(|a| a.negated) {
        '!'
    } else {
        ' '
    };
    let text = match address {
        None if !numeric => "anywhere".to_string(),
        None => "::/0".to_string(),
        Some(a) if a.value.prefix_len == 0 && !numeric => "anywhere".to_string(),
        Some(a) if a.value.prefix_len == 128 => a.value.addr.to_string(),
        Some(a) => a.value.to_string(),
    };
    (bang, text)
}

/// As iptables: `anywhere` (or `0.0.0.0/0` with `-n`), else the address
/// (named: a host, else a network, else the number) and `/prefix` unless
/// it is a single host.
fn address_column(
    address: &Option<Negatable<Ipv4Net>>,
    numeric: bool,
    names: Option<&Names>,
) -> (char, String) {
    let (negated, net) = match address {
        Some(a) => (a.negated, a.value),
        None => (false, Ipv4Net::new([0, 0, 0, 0].into(), 0)),
    };
    let bang = if negated { '!' } else { ' ' };
    let text = if net.prefix_len == 0 && net.mask.is_none() && !numeric {
        "anywhere".to_string()
    } else {
        let addr = names.map_or_else(|| net.addr.to_string(), |n| n.address(net.addr));
        match net.mask {
            // A non-contiguous mask is printed dotted, as iptables does.
            Some(mask) => format!("{addr}/{mask}"),
            None if net.prefix_len == 32 => addr,
            None => format!("{addr}/{}", net.prefix_len),
        }
    };
    (bang, text)
}

/// The matches and target options after the addresses, each with its
/// leading space, as the extensions' print functions write them.
fn match_columns(rule: &Rule, numeric: bool, names: Option<&Names>) -> String {
    let mut out = String::new();
    // iptables' print_firewall marks a goto before the matches.
    if matches!(rule.target, Target::Goto(_)) {
        out.push_str("[goto] ");
    }
    for m in &rule.matches {
        match names {
            Some(names) => m.ext().list_named(
                &mut out,
                names,
                rule.protocol
                    .as_ref()
                    .filter(|p| !p.negated)
                    .map_or(0, |p| p.value),
            ),
            None => m.ext().list(&mut out, numeric),
        }
    }
    rule.target.list(&mut out, numeric);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::command::apply;
    use crate::rules::model::Ruleset;
    #[allow(unused_imports)]
    use crate::rules::model::*;
    use crate::rules::save::test_command;

    fn ruleset(lines: &[&str]) -> Ruleset {
        let mut ruleset = Ruleset::default();
        for line in lines {
            apply(&mut ruleset, &test_command(line)).unwrap_or_else(|e| panic!("'{line}': {e}"));
        }
        ruleset
    }

    fn list(ruleset: &Ruleset, format: ListFormat) -> String {
        list_chains(&ruleset.filter, &format)
    }

    const PLAIN: ListFormat = ListFormat {
        verbose: false,
        numeric: false,
        exact: false,
        line_numbers: false,
        names: None,
        family: Family::V4,
    };
    const NUMERIC: ListFormat = ListFormat {
        numeric: true,
        ..PLAIN
    };

    /// The article's firewall, after its working lines ran (examples 1, 2,
    /// 4 with --dport, 6, 7, 8).
    fn article() -> Ruleset {
        ruleset(&[
            "-A INPUT -p tcp --dport 22 -j ACCEPT",
            "-A INPUT -j DROP",
            "-I INPUT -p tcp --dport 5432 -j ACCEPT",
            "-A OUTPUT -d 192.168.0.1 -p udp --dport 53 -j ACCEPT",
            "-A OUTPUT -j REJECT",
            "-I OUTPUT -d 192.168.0.0/24 -p tcp --dport 443 -j ACCEPT",
        ])
    }

    // Expected outputs were produced by iptables-legacy 1.8.9 on this machine
    // for the same rules, with names (ssh, https, domain) replaced by the
    // numbers netbeast prints; the trailing spaces are iptables' own.
    #[test]
    fn list_like_iptables() {
        let expected = "\
Chain INPUT (policy ACCEPT)
target     prot opt source               destination         
ACCEPT     tcp  --  anywhere             anywhere             tcp dpt:5432
ACCEPT     tcp  --  anywhere             anywhere             tcp dpt:22
DROP       all  --  anywhere             anywhere            

Chain FORWARD (policy ACCEPT)
target     prot opt source               destination         

Chain OUTPUT (policy ACCEPT)
target     prot opt source               destination         
ACCEPT     tcp  --  anywhere             192.168.0.0/24       tcp dpt:443
ACCEPT     udp  --  anywhere             192.168.0.1          udp dpt:53
REJECT     all  --  anywhere             anywhere             reject-with icmp-port-unreachable
";
        assert_eq!(list(&article(), PLAIN), expected);
    }

    /// The nat rules of the article and the nat targets' options.
    fn nat_rules() -> Ruleset {
        ruleset(&[
            "-t nat -A PREROUTING -p tcp --dport 80 -j DNAT --to 127.0.0.1:8080",
            "-t nat -A PREROUTING -p tcp --dport 80 -j REDIRECT --to-ports 8080-8090 --random",
            "-t nat -A PREROUTING -p udp -j DNAT --to-destination :5353",
            "-t nat -A PREROUTING -p tcp -j DNAT --to-destination 10.0.0.1-10.0.0.5:80-90 --random --persistent",
            "-t nat -A OUTPUT -o lo -p tcp -s 127.0.0.1 --dport 80 -j DNAT --to 192.168.0.4:80",
            "-t nat -A POSTROUTING -s 192.168.0.0/24 -o eth0 -j SNAT --to-source 10.10.7.1",
            "-t nat -A POSTROUTING -p tcp -j MASQUERADE --to-ports 1024-2000",
            "-t nat -A POSTROUTING -p udp -j SNAT --to-source 10.0.0.1-10.0.0.2:1000-2000 --random --random-fully --persistent",
            "-t nat -A POSTROUTING -j MASQUERADE --random-fully",
        ])
    }

    // Produced by iptables-legacy 1.8.9 on this machine for the same rules,
    // with the names it looked up (http, localhost) replaced by the numbers
    // netbeast prints.
    #[test]
    fn list_nat_like_iptables() {
        let expected = "\
Chain PREROUTING (policy ACCEPT)
target     prot opt source               destination         
DNAT       tcp  --  anywhere             anywhere             tcp dpt:80 to:127.0.0.1:8080
REDIRECT   tcp  --  anywhere             anywhere             tcp dpt:80 redir ports 8080-8090 random
DNAT       udp  --  anywhere             anywhere             to::5353
DNAT       tcp  --  anywhere             anywhere             to:10.0.0.1-10.0.0.5:80-90 random persistent

Chain INPUT (policy ACCEPT)
target     prot opt source               destination         

Chain OUTPUT (policy ACCEPT)
target     prot opt source               destination         
DNAT       tcp  --  127.0.0.1            anywhere             tcp dpt:80 to:192.168.0.4:80

Chain POSTROUTING (policy ACCEPT)
target     prot opt source               destination         
SNAT       all  --  192.168.0.0/24       anywhere             to:10.10.7.1
MASQUERADE  tcp  --  anywhere             anywhere             masq ports: 1024-2000
SNAT       udp  --  anywhere             anywhere             to:10.0.0.1-10.0.0.2:1000-2000 random random-fully persistent
MASQUERADE  all  --  anywhere             anywhere             random-fully
";
        assert_eq!(list_chains(&nat_rules().nat, &PLAIN), expected);
        // -n -v -x --line-numbers (protocols as numbers, as iptables 1.8.9).
        let verbose = ListFormat {
            verbose: true,
            numeric: true,
            exact: true,
            line_numbers: true,
            names: None,
            family: Family::V4,
        };
        let expected = "\
Chain PREROUTING (policy ACCEPT 0 packets, 0 bytes)
num      pkts      bytes target     prot opt in     out     source               destination         
1           0        0 DNAT       6    --  *      *       0.0.0.0/0            0.0.0.0/0            tcp dpt:80 to:127.0.0.1:8080
2           0        0 REDIRECT   6    --  *      *       0.0.0.0/0            0.0.0.0/0            tcp dpt:80 redir ports 8080-8090 random
3           0        0 DNAT       17   --  *      *       0.0.0.0/0            0.0.0.0/0            to::5353
4           0        0 DNAT       6    --  *      *       0.0.0.0/0            0.0.0.0/0            to:10.0.0.1-10.0.0.5:80-90 random persistent

Chain INPUT (policy ACCEPT 0 packets, 0 bytes)
num      pkts      bytes target     prot opt in     out     source               destination         

Chain OUTPUT (policy ACCEPT 0 packets, 0 bytes)
num      pkts      bytes target     prot opt in     out     source               destination         
1           0        0 DNAT       6    --  *      lo      127.0.0.1            0.0.0.0/0            tcp dpt:80 to:192.168.0.4:80

Chain POSTROUTING (policy ACCEPT 0 packets, 0 bytes)
num      pkts      bytes target     prot opt in     out     source               destination         
1           0        0 SNAT       0    --  *      eth0    192.168.0.0/24       0.0.0.0/0            to:10.10.7.1
2           0        0 MASQUERADE  6    --  *      *       0.0.0.0/0            0.0.0.0/0            masq ports: 1024-2000
3           0        0 SNAT       17   --  *      *       0.0.0.0/0            0.0.0.0/0            to:10.0.0.1-10.0.0.2:1000-2000 random random-fully persistent
4           0        0 MASQUERADE  0    --  *      *       0.0.0.0/0            0.0.0.0/0            random-fully
";
        assert_eq!(list_chains(&nat_rules().nat, &verbose), expected);
    }

    // iptables-nft 1.8.9 -v echoes these lines for the same commands.
    #[test]
    fn nat_rules_echo_like_iptables() {
        let r = ruleset(&[
            "-t nat -A POSTROUTING -p udp -j MASQUERADE --to-ports 1000-2000 --random",
            "-t nat -A PREROUTING -p tcp -j DNAT --to 1.2.3.4:80",
        ]);
        assert_eq!(
            echo_rule(&r.nat.chain("POSTROUTING").unwrap().rules[0], Family::V4),
            "MASQUERADE  udp opt -- in * out *  0.0.0.0/0  -> 0.0.0.0/0   masq ports: 1000-2000 random\n"
        );
        assert_eq!(
            echo_rule(&r.nat.chain("PREROUTING").unwrap().rules[0], Family::V4),
            "DNAT  tcp opt -- in * out *  0.0.0.0/0  -> 0.0.0.0/0   to:1.2.3.4:80\n"
        );
    }

    #[test]
    fn list_rules_of_the_nat_table() {
        // As iptables-legacy 1.8.9 -t nat -S printed them.
        let expected = "\
-P PREROUTING ACCEPT
-P INPUT ACCEPT
-P OUTPUT ACCEPT
-P POSTROUTING ACCEPT
-A PREROUTING -p tcp -m tcp --dport 80 -j DNAT --to-destination 127.0.0.1:8080
-A PREROUTING -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 8080-8090 --random
-A PREROUTING -p udp -j DNAT --to-destination :5353
-A PREROUTING -p tcp -j DNAT --to-destination 10.0.0.1-10.0.0.5:80-90 --random --persistent
-A OUTPUT -s 127.0.0.1/32 -o lo -p tcp -m tcp --dport 80 -j DNAT --to-destination 192.168.0.4:80
-A POSTROUTING -s 192.168.0.0/24 -o eth0 -j SNAT --to-source 10.10.7.1
-A POSTROUTING -p tcp -j MASQUERADE --to-ports 1024-2000
-A POSTROUTING -p udp -j SNAT --to-source 10.0.0.1-10.0.0.2:1000-2000 --random --random-fully --persistent
-A POSTROUTING -j MASQUERADE --random-fully
";
        assert_eq!(list_rules(&nat_rules().nat.chains, false), expected);
    }

    // Checked against iptables-legacy and iptables-nft 1.8.9 in a namespace:
    // states in libxt_conntrack's order, `!` before the match name.
    #[test]
    fn list_connection_states() {
        let r = ruleset(&[
            "-A INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT",
            "-A INPUT -m state ! --state NEW,INVALID -j ACCEPT",
            "-A INPUT -m conntrack ! --ctstate UNTRACKED,NEW -j DROP",
            "-A INPUT -p tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT",
            "-A FORWARD -s 10.10.7.15/32 -d 192.168.0.6/32 -m conntrack --ctstate ESTABLISHED -j ACCEPT",
        ]);
        let expected = "\
Chain INPUT (policy ACCEPT)
target     prot opt source               destination         
ACCEPT     0    --  0.0.0.0/0            0.0.0.0/0            state RELATED,ESTABLISHED
ACCEPT     0    --  0.0.0.0/0            0.0.0.0/0            ! state INVALID,NEW
DROP       0    --  0.0.0.0/0            0.0.0.0/0            ! ctstate NEW,UNTRACKED
ACCEPT     6    --  0.0.0.0/0            0.0.0.0/0            tcp dpt:22 ctstate NEW
";
        assert_eq!(
            list_chain(&r.filter, r.filter.chain("INPUT").unwrap(), &NUMERIC),
            expected
        );
        assert!(
            list_chain(&r.filter, r.filter.chain("FORWARD").unwrap(), &PLAIN).contains(
                "ACCEPT     all  --  10.10.7.15           192.168.0.6          ctstate ESTABLISHED\n"
            )
        );
    }

    #[test]
    fn list_verbose_numeric_line_numbers() {
        let mut r = article();
        r.filter.chain_mut("INPUT").unwrap().rules[1].counter = Counter {
            packets: 1234567,
            bytes: 99999,
        };
        r.filter.chain_mut("INPUT").unwrap().policy_counter = Counter {
            packets: 123456,
            bytes: 7654321,
        };
        let format = ListFormat {
            verbose: true,
            numeric: true,
            exact: false,
            line_numbers: true,
            names: None,
            family: Family::V4,
        };
        let expected = "\
Chain INPUT (policy ACCEPT 123K packets, 7654K bytes)
num   pkts bytes target     prot opt in     out     source               destination         
1        0     0 ACCEPT     6    --  *      *       0.0.0.0/0            0.0.0.0/0            tcp dpt:5432
2    1235K 99999 ACCEPT     6    --  *      *       0.0.0.0/0            0.0.0.0/0            tcp dpt:22
3        0     0 DROP       0    --  *      *       0.0.0.0/0            0.0.0.0/0           
";
        assert_eq!(
            list_chain(&r.filter, r.filter.chain("INPUT").unwrap(), &format),
            expected
        );
    }

    #[test]
    fn list_verbose_exact_names_any() {
        let mut r = ruleset(&["-A FORWARD -o eth0 ! -i + -j ACCEPT", "-P FORWARD DROP"]);
        r.filter.chain_mut("FORWARD").unwrap().rules[0].counter = Counter {
            packets: 100000,
            bytes: 12345678901,
        };
        let exact = ListFormat {
            verbose: true,
            exact: true,
            ..PLAIN
        };
        assert_eq!(
            list_chain(&r.filter, r.filter.chain("FORWARD").unwrap(), &exact),
            "\
Chain FORWARD (policy DROP 0 packets, 0 bytes)
    pkts      bytes target     prot opt in     out     source               destination         
  100000 12345678901 ACCEPT     all  --  !+     eth0    anywhere             anywhere            
"
        );
        let rounded = ListFormat {
            verbose: true,
            ..PLAIN
        };
        assert_eq!(
            list_chain(&r.filter, r.filter.chain("FORWARD").unwrap(), &rounded),
            "\
Chain FORWARD (policy DROP 0 packets, 0 bytes)
 pkts bytes target     prot opt in     out     source               destination         
 100K   12G ACCEPT     all  --  !+     eth0    anywhere             anywhere            
"
        );
        let r = ruleset(&["-A INPUT -p tcp --dport 22 -j ACCEPT"]);
        assert!(
            list_chain(&r.filter, r.filter.chain("INPUT").unwrap(), &rounded)
                .contains("    0     0 ACCEPT     tcp  --  any    any     anywhere             anywhere             tcp dpt:22\n")
        );
    }

    #[test]
    fn counts_round_like_iptables() {
        let cases = [
            (0, "    0 "),
            (99999, "99999 "),
            (100000, " 100K "),
            (1234567, "1235K "),
            (12345678901, "  12G "),
            (99999999999, " 100G "),
            (9999999999999, "  10T "),
            (99999999999999999, "100000T "),
        ];
        for (n, text) in cases {
            assert_eq!(count(n, false, true), text, "{n}");
        }
        assert_eq!(count(1234567, true, true), " 1234567 ");
        assert_eq!(count(123456, false, false), "123K ");
        assert_eq!(count(123456, true, false), "123456 ");
    }

    #[test]
    fn match_columns_like_iptables() {
        let r = ruleset(&[
            "-A INPUT -s 10.1.2.3/255.255.0.0 ! -d 1.2.3.4 -i eth+ -p udp --sport 1000:2000 ! --dport :100 -m comment --comment \"hello world\" -j REJECT --reject-with icmp-host-unreachable",
            "-A INPUT -p tcp -m multiport --dports 80,443,1000:2000 -j ACCEPT",
            "-A INPUT -p tcp -m multiport ! --sports 80,443 -j ACCEPT",
            "-A INPUT -p udp -m multiport --ports 53 -j ACCEPT",
            "-A INPUT -m mac --mac-source aa:bb:cc:dd:ee:ff -j DROP",
            "-A INPUT -m mac ! --mac-source aa:bb:cc:dd:ee:ff -j DROP",
            "-A INPUT -p icmp --icmp-type echo-request -j ACCEPT",
            "-A INPUT -p icmp --icmp-type 3/3 -j ACCEPT",
            "-A INPUT -p icmp ! --icmp-type any -j ACCEPT",
            "-A INPUT -p icmp --icmp-type destination-unreachable -j ACCEPT",
            "-A INPUT -f -j DROP",
            "-A INPUT ! -f -j DROP",
            "-A INPUT ! -p tcp -j DROP",
            "-A INPUT -p 47 -j DROP",
            "-A INPUT -p tcp -j REJECT --reject-with tcp-reset",
            "-A INPUT -p udp --dport 5000: -j REJECT --reject-with icmp-net-prohibited",
            "-A INPUT -p tcp --sport 80:443 --dport 22",
            "-A INPUT -p icmp --icmp-type 3/200",
        ]);
        let chain = r.filter.chain("INPUT").unwrap();
        let expected = "\
Chain INPUT (policy ACCEPT)
target     prot opt source               destination         
REJECT     udp  --  10.1.0.0/16         !1.2.3.4              udp spts:1000:2000 dpts:!0:100 /* hello world */ reject-with icmp-host-unreachable
ACCEPT     tcp  --  anywhere             anywhere             multiport dports 80,443,1000:2000
ACCEPT     tcp  --  anywhere             anywhere             multiport sports  !80,443
ACCEPT     udp  --  anywhere             anywhere             multiport ports 53
DROP       all  --  anywhere             anywhere             MAC aa:bb:cc:dd:ee:ff
DROP       all  --  anywhere             anywhere             MAC ! aa:bb:cc:dd:ee:ff
ACCEPT     icmp --  anywhere             anywhere             icmp echo-request
ACCEPT     icmp --  anywhere             anywhere             icmp port-unreachable
ACCEPT     icmp --  anywhere             anywhere             icmp !any
ACCEPT     icmp --  anywhere             anywhere             icmp destination-unreachable
DROP       all  -f  anywhere             anywhere            
DROP       all  !f  anywhere             anywhere            
DROP      !tcp  --  anywhere             anywhere            
DROP       gre  --  anywhere             anywhere            
REJECT     tcp  --  anywhere             anywhere             reject-with tcp-reset
REJECT     udp  --  anywhere             anywhere             udp dpts:5000:65535 reject-with icmp-net-prohibited
           tcp  --  anywhere             anywhere             tcp spts:80:443 dpt:22
           icmp --  anywhere             anywhere             icmptype 3 code 200
";
        assert_eq!(list_chain(&r.filter, chain, &PLAIN), expected);
        let numeric = list_chain(&r.filter, chain, &NUMERIC);
        let lines: Vec<&str> = numeric.lines().collect();
        assert_eq!(
            lines[2],
            "REJECT     17   --  10.1.0.0/16         !1.2.3.4              udp spts:1000:2000 dpts:!0:100 /* hello world */ reject-with icmp-host-unreachable"
        );
        assert_eq!(
            lines[8],
            "ACCEPT     1    --  0.0.0.0/0            0.0.0.0/0            icmptype 8"
        );
        assert_eq!(
            lines[9],
            "ACCEPT     1    --  0.0.0.0/0            0.0.0.0/0            icmptype 3 code 3"
        );
        assert_eq!(
            lines[10],
            "ACCEPT     1    --  0.0.0.0/0            0.0.0.0/0            icmp !type 255"
        );
        assert_eq!(
            lines[15],
            "DROP       47   --  0.0.0.0/0            0.0.0.0/0           "
        );
    }

    #[test]
    fn single_rule_listing() {
        let r = ruleset(&[
            "-A INPUT -p tcp --dport 22 -j ACCEPT",
            "-A INPUT -s 1.2.3.4 -j DROP",
        ]);
        let input = r.filter.chain("INPUT").unwrap();
        assert_eq!(
            list_rule(input, 2, &PLAIN),
            "DROP       all  --  1.2.3.4              anywhere            \n"
        );
        let format = ListFormat {
            verbose: true,
            numeric: true,
            exact: false,
            line_numbers: true,
            names: None,
            family: Family::V4,
        };
        assert_eq!(
            list_rule(input, 2, &format),
            "2        0     0 DROP       0    --  *      *       1.2.3.4              0.0.0.0/0           \n"
        );
        assert_eq!(list_rule(input, 3, &PLAIN), "");
        assert_eq!(list_rule(input, 0, &PLAIN), "");
    }

    #[test]
    fn list_rules_like_iptables_s() {
        let mut r = ruleset(&[
            "-A INPUT -p tcp --dport 22 -j ACCEPT",
            "-A INPUT -s 1.2.3.4 -j DROP",
            "-A INPUT -m comment --comment \"a,b.c\"",
            "-A OUTPUT -j DROP",
            "-P FORWARD DROP",
        ]);
        assert_eq!(
            list_rules(&r.filter.chains, false),
            "\
-P INPUT ACCEPT
-P FORWARD DROP
-P OUTPUT ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -s 1.2.3.4/32 -j DROP
-A INPUT -m comment --comment \"a,b.c\"
-A OUTPUT -j DROP
"
        );
        let input = r.filter.chain_mut("INPUT").unwrap();
        input.rules[0].counter = Counter {
            packets: 7,
            bytes: 420,
        };
        input.policy_counter = Counter {
            packets: 1,
            bytes: 2,
        };
        let input = r.filter.chain("INPUT").unwrap();
        assert_eq!(
            list_rules([input], true),
            "\
-P INPUT ACCEPT -c 1 2
-A INPUT -p tcp -m tcp --dport 22 -c 7 420 -j ACCEPT
-A INPUT -s 1.2.3.4/32 -c 0 0 -j DROP
-A INPUT -m comment --comment \"a,b.c\" -c 0 0
"
        );
        assert_eq!(
            list_rule_spec(input, 2, false),
            "-A INPUT -s 1.2.3.4/32 -j DROP\n"
        );
        assert_eq!(list_rule_spec(input, 9, false), "");
    }

    #[test]
    fn echo_like_iptables_v() {
        let r = ruleset(&[
            "-A INPUT -s 1.2.3.4 -p tcp --dport 22 -m comment --comment hi -j ACCEPT",
            "-A INPUT -j DROP",
            "-A OUTPUT -p udp -j REJECT",
        ]);
        let input = &r.filter.chain("INPUT").unwrap().rules;
        assert_eq!(
            echo_rule(&input[0], Family::V4),
            "ACCEPT  tcp opt -- in * out *  1.2.3.4  -> 0.0.0.0/0   tcp dpt:22 /* hi */\n"
        );
        assert_eq!(
            echo_rule(&input[1], Family::V4),
            "DROP  all opt -- in * out *  0.0.0.0/0  -> 0.0.0.0/0  \n"
        );
        assert_eq!(
            echo_rule(&r.filter.chain("OUTPUT").unwrap().rules[0], Family::V4),
            "REJECT  udp opt -- in * out *  0.0.0.0/0  -> 0.0.0.0/0   reject-with icmp-port-unreachable\n"
        );
    }
}
