//! One module per iptables extension: each owns what netbeast knows about
//! it — its options and their parsing and checks, its data, its `-S`/save
//! and `-L` text, its meaning for the reference classifier.
//!
//! The parser finds a match's module in [`MATCH_MODULES`] by its `-m` name
//! and hands it the options it declares ([`OptSpec`]); its answers to
//! unknown names and options ("did you mean", "needs -m X", "not supported
//! yet") come from this registry. See docs/ARCHITECTURE.md, "How to add
//! an extension". (The oldest matches — tcp, udp, icmp, multiport, mac,
//! comment, state, conntrack — are still parsed in `parse.rs`.)

use std::fmt::Debug;

use super::model::{Family, Match, Negatable, TableName};
use super::names::Names;
use super::parse::ParseError;
use crate::compile::PacketView;
use crate::compile::lower::Lowering;
use crate::rules::generate::Random;

pub mod addrtype;
pub mod comment;
pub mod connlimit;
pub mod connmark;
pub mod conntrack;
pub mod dscp;
pub mod frag;
pub mod hashlimit;
pub mod hl;
pub mod icmp;
pub mod icmp6;
pub mod iprange;
pub mod ipv6header;
pub mod length;
pub mod limit;
pub mod mac;
pub mod mark;
pub mod multiport;
pub mod pkttype;
pub mod recent;
pub mod rt;
pub mod sctp;
pub mod set;
pub mod statistic;
pub mod tcp;
pub mod tos;
pub mod ttl;

/// What netbeast knows about a match of an extension once it is parsed.
/// `Match::ext` finds a match's module.
pub trait MatchExt {
    /// Its options as `iptables -S` and iptables-save print them, with a
    /// leading space: ` -m ttl --ttl-eq 5`.
    fn save(&self, out: &mut String);
    /// Its text in the last column of `iptables -L` (`numeric` for `-n`),
    /// with a leading space.
    fn list(&self, out: &mut String, numeric: bool);
    /// [`MatchExt::list`] without `-n`, with the names to print (services
    /// of the rule's `protocol`, 0 when none is given): for the modules
    /// that print ports or addresses by name.
    fn list_named(&self, out: &mut String, _names: &Names, _protocol: u8) {
        self.list(out, false);
    }
    /// Whether a packet satisfies it, as the kernel's match decides: the
    /// reference classifier's meaning. A guard's is its static part.
    fn matches(&self, pkt: &PacketView) -> bool;
    /// What it is to the classifier: conditions on its fields, or a guard.
    fn lower(&self) -> Lowering;
    /// What the classifier needs of the rest of the rule, checked again
    /// when a ruleset is compiled (a hand-edited rule file): `protocol`
    /// is the rule's `-p` when given and not negated.
    fn check(&self, _protocol: Option<u8>) -> Result<(), String> {
        Ok(())
    }
}

/// A long option of an extension.
#[derive(Debug, PartialEq, Eq)]
pub struct OptSpec {
    /// Its names without the leading `--`; the first is the one messages
    /// show (`dport`, then its alias `destination-port`).
    pub names: &'static [&'static str],
    /// What it takes.
    pub value: Value,
    /// Whether `!` may come before it.
    pub negatable: bool,
}

/// What an option takes after it.
#[derive(Debug, PartialEq, Eq)]
pub enum Value {
    /// Nothing (`--syn`).
    None,
    /// One value; the text says what, for "requires an argument".
    One(&'static str),
    /// Two values (`--tcp-flags MASK COMP`).
    Two(&'static str),
}

impl OptSpec {
    /// `--name`, as messages show it.
    pub fn flag(&self) -> String {
        format!("--{}", self.names[0])
    }

    /// Its name for the module's own code: the first.
    pub fn name(&self) -> &'static str {
        self.names[0]
    }
}

/// The rest of the rule, which a match is checked against once the rule
/// is complete (as the kernel's checkentry does).
pub struct RuleContext<'a> {
    pub table: TableName,
    pub chain: &'a str,
    pub protocol: Option<&'a Negatable<u8>>,
    /// iptables or ip6tables.
    pub family: super::model::Family,
    /// The match was loaded by `-p` on its first option, not by `-m`.
    pub implicit: bool,
}

impl RuleContext<'_> {
    /// The rule's protocol when given and not negated.
    pub fn plain_protocol(&self) -> Option<u8> {
        self.protocol.filter(|p| !p.negated).map(|p| p.value)
    }
}

/// A match while its options are read.
pub trait MatchParser: Debug {
    /// One of the module's options: `negated` when a `!` came before it,
    /// `values` its arguments (as many as it takes).
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        values: &[&str],
    ) -> Result<(), ParseError>;

    /// The match, once the rule is complete.
    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Match, ParseError>;
}

/// A match extension as the parser sees it.
pub struct MatchModule {
    /// Its `-m` name.
    pub name: &'static str,
    /// The one family whose command has it (`-m ttl` is iptables', `-m hl`
    /// ip6tables'), or `None` for both, as xtables registers it.
    pub family: Option<Family>,
    pub options: &'static [OptSpec],
    /// A rule using it, for messages: `-m ttl --ttl-eq 64`.
    pub example: &'static str,
    pub parser: fn() -> Box<dyn MatchParser>,
    /// The protocol whose `-p` loads it on its first option (`-p tcp
    /// --dport 22` loads `-m tcp`), as iptables does.
    pub implicit_protocol: Option<u8>,
    /// How to draw random instances of it (`rules/generate.rs`).
    pub random: Random<Match>,
}

impl Debug for MatchModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "-m {}", self.name)
    }
}

impl PartialEq for MatchModule {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for MatchModule {}

/// The match modules the parser loads with `-m`.
pub static MATCH_MODULES: &[&MatchModule] = &[
    &tcp::TCP,
    &tcp::UDP,
    &sctp::SCTP,
    &tcp::DCCP,
    &icmp::MODULE,
    &multiport::MODULE,
    &mac::MODULE,
    &mark::MODULE,
    &connmark::MODULE,
    &comment::MODULE,
    &connlimit::MODULE,
    &conntrack::STATE,
    &conntrack::CONNTRACK,
    &addrtype::MODULE,
    &dscp::MODULE,
    &hashlimit::MODULE,
    &iprange::MODULE,
    &length::MODULE,
    &limit::MODULE,
    &pkttype::MODULE,
    &recent::MODULE,
    &set::MODULE,
    &statistic::MODULE,
    &tos::MODULE,
    &ttl::MODULE,
    &icmp6::MODULE,
    &hl::MODULE,
    &frag::MODULE,
    &ipv6header::MODULE,
    &rt::MODULE,
];

/// The module named `name`, whichever family has it.
pub fn match_module(name: &str) -> Option<&'static MatchModule> {
    MATCH_MODULES.iter().copied().find(|m| m.name == name)
}

/// The module named `name` as `family`'s command loads it: none when only
/// the other family has it.
pub fn match_module_for(name: &str, family: Family) -> Option<&'static MatchModule> {
    match_module(name).filter(|m| m.for_family(family))
}

impl MatchModule {
    /// Whether `family`'s command has this match.
    pub fn for_family(&self, family: Family) -> bool {
        self.family.is_none_or(|f| f == family)
    }
}

/// Matches iptables has and netbeast does not implement yet: they get "not
/// supported yet" rather than "unknown".
pub const NOT_SUPPORTED_YET: &[&str] = &[
    "ah",
    "bpf",
    "cgroup",
    "cluster",
    "connbytes",
    "connlabel",
    "cpu",
    "devgroup",
    "ecn",
    "esp",
    "helper",
    "ipcomp",
    "ipvs",
    "nfacct",
    "osf",
    "owner",
    "physdev",
    "policy",
    "quota",
    "rateest",
    "realm",
    "rpfilter",
    "socket",
    "string",
    "tcpmss",
    "time",
    "u32",
    "udplite",
];

/// ip6tables' own matches that netbeast does not implement yet: "not
/// supported yet" from `ip6tables`, as [`NOT_SUPPORTED_YET`] for both.
pub const NOT_SUPPORTED_YET_IPV6: &[&str] = &["dst", "eui64", "hbh", "mh", "srh"];

/// `" !"` before a negated option in save text, as the extensions print it.
pub(crate) fn bang(negated: bool) -> &'static str {
    if negated { " !" } else { "" }
}

/// Stores an option's value, refusing a second one as iptables does.
pub(crate) fn once<T>(
    slot: &mut Option<T>,
    value: T,
    option: &'static OptSpec,
) -> Result<(), ParseError> {
    if slot.is_some() {
        return Err(ParseError::Repeated {
            option: option.flag(),
            hint: "",
        });
    }
    *slot = Some(value);
    Ok(())
}

/// The error of a match given without its mandatory option.
pub(crate) fn missing(module: &'static MatchModule, option: &'static str) -> ParseError {
    ParseError::MissingModuleOption {
        module: format!("-m {}", module.name),
        option,
        example: module.example,
    }
}

/// The first value, which the parser guarantees for options declared
/// with one.
pub(crate) fn value<'v>(option: &OptSpec, values: &[&'v str]) -> &'v str {
    values
        .first()
        .copied()
        .unwrap_or_else(|| panic!("{} is declared with a value", option.flag()))
}

/// A number as xtables reads it (decimal, 0x hex, 0 octal) up to `max`.
pub(crate) fn number(
    option: &OptSpec,
    what: &'static str,
    text: &str,
    max: u64,
) -> Result<u64, ParseError> {
    super::parse::parse_c_number_in(text, max).ok_or_else(|| {
        super::parse::invalid(
            &option.flag(),
            what,
            text,
            format!("expected a number from 0 to {max}"),
        )
    })
}

/// `n`, `a:b`, `a:`, `:b` or `:` with numbers up to `max`, as xtables'
/// range parser reads them (`a:` runs to `max`, `:b` from 0).
pub(crate) fn range(
    option: &OptSpec,
    what: &'static str,
    text: &str,
    max: u64,
) -> Result<(u64, u64), ParseError> {
    let (first, last) = match text.split_once(':') {
        None => {
            let n = number(option, what, text, max)?;
            (n, n)
        }
        Some((a, b)) => (
            if a.is_empty() {
                0
            } else {
                number(option, what, a, max)?
            },
            if b.is_empty() {
                max
            } else {
                number(option, what, b, max)?
            },
        ),
    };
    if first > last {
        return Err(super::parse::invalid(
            &option.flag(),
            what,
            text,
            "the first value is larger than the last; write it as low:high",
        ));
    }
    Ok((first, last))
}

#[cfg(test)]
mod tests {
    use crate::rules::list::{ListFormat, rule_line};
    use crate::rules::parse::{Action, parse_iptables_args};
    use crate::rules::save::{CounterStyle, rule_spec};

    /// Each line as iptables' extension tests write them: the rule, then
    /// `=` (listed as written), the `-S` text it lists as, or nothing for
    /// a rule that must be refused; then OK or FAIL. Checked against
    /// iptables 1.8.9 (nf_tables) by hand, in a scratch namespace.
    const LINES: &[(&str, &str, &[&str])] = &[
        // (chains, RULE;EXPECTED;RESULT lines)
        (
            "INPUT,FORWARD,OUTPUT",
            "",
            &[
                "-m length --length 1;=;OK",
                "-m length --length :2;-m length --length 0:2;OK",
                "-m length --length 4:;-m length --length 4:65535;OK",
                "-m length --length :;-m length --length 0:65535;OK",
                "-m length ! --length 0:65535;=;OK",
                "-m length --length 4:4;-m length --length 4;OK",
                "-m length --length 0x10;-m length --length 16;OK",
                "-m length --length 010;-m length --length 8;OK",
                "-m length --length 0:65536;;FAIL",
                "-m length --length -1:65535;;FAIL",
                "-m length --length 4:3;;FAIL",
                "-m length --length 5 --length 6;;FAIL",
                "-m length;;FAIL",
                "-m ttl --ttl-eq 0;=;OK",
                "-m ttl ! --ttl-eq 255;=;OK",
                "-m ttl --ttl-gt 0;=;OK",
                "-m ttl --ttl-lt 3;=;OK",
                "-m ttl --ttl-eq 0x10;-m ttl --ttl-eq 16;OK",
                "-m ttl --ttl-eq 256;;FAIL",
                "-m ttl --ttl-eq -1;;FAIL",
                "-m ttl ! --ttl-lt 3;;FAIL",
                "-m ttl --ttl-eq 5 --ttl-lt 3;;FAIL",
                "-m ttl;;FAIL",
                "-m iprange --src-range 1.1.1.1-1.1.1.9 ! --dst-range 2.2.2.2-2.2.2.3;=;OK",
                "-m iprange --src-range 1.1.1.1;-m iprange --src-range 1.1.1.1-1.1.1.1;OK",
                "-m iprange --src-range 10.1-10.2;-m iprange --src-range 10.1.0.0-10.2.0.0;OK",
                "-m iprange --src-range 1.1.1.9-1.1.1.1;=;OK",
                "-m iprange --src-range 1.1.1.1-;;FAIL",
                "-m iprange --src-range 1.1.1.1-1.1.1.2 --src-range 1.1.1.1-1.1.1.3;;FAIL",
                "-m iprange;;FAIL",
                "-m pkttype --pkt-type unicast;=;OK",
                "-m pkttype --pkt-type host;-m pkttype --pkt-type unicast;OK",
                "-m pkttype ! --pkt-type broadcast;=;OK",
                "-m pkttype --pkt-type MULTICAST;-m pkttype --pkt-type multicast;OK",
                "-m pkttype --pkt-type otherhost;=;OK",
                "-m pkttype --pkt-type wrong;;FAIL",
                "-m pkttype;;FAIL",
                "-m addrtype --src-type UNSPEC;=;OK",
                "-m addrtype --src-type LOCAL --dst-type LOCAL;=;OK",
                "-m addrtype --src-type LOCAL,UNICAST ! --dst-type BROADCAST;-m addrtype --src-type UNICAST,LOCAL ! --dst-type BROADCAST;OK",
                "-m addrtype --src-type local;-m addrtype --src-type LOCAL;OK",
                "-m addrtype --src-type wrong;;FAIL",
                "-m addrtype --src-type LOCAL --src-type UNICAST;;FAIL",
                "-m addrtype --limit-iface-in;;FAIL",
                "-m addrtype --limit-iface-in --limit-iface-out;;FAIL",
                "-m addrtype --src-type LOCAL --limit-iface-in --limit-iface-out;;FAIL",
                "-m addrtype;;FAIL",
                "-m tos --tos Minimize-Delay;-m tos --tos 0x10/0x3f;OK",
                "-m tos --tos minimize-delay;-m tos --tos 0x10/0x3f;OK",
                "-m tos --tos Normal-Service;-m tos --tos 0x00/0x3f;OK",
                "-m tos --tos 0xff;-m tos --tos 0xff/0xff;OK",
                "-m tos ! --tos 0xff;-m tos ! --tos 0xff/0xff;OK",
                "-m tos --tos 16;-m tos --tos 0x10/0xff;OK",
                "-m tos --tos 0x0f/0x0f;=;OK",
                "-m tos --tos wrong;;FAIL",
                "-m tos --tos 256;;FAIL",
                "-m tos --tos 0x10/0x3f/1;;FAIL",
                "-m tos;;FAIL",
                "-m dscp --dscp 0x00;=;OK",
                "-m dscp --dscp 0x3f;=;OK",
                "-m dscp ! --dscp 0x2e;=;OK",
                "-m dscp --dscp-class EF;-m dscp --dscp 0x2e;OK",
                "-m dscp --dscp-class af41;-m dscp --dscp 0x22;OK",
                "-m dscp --dscp -1;;FAIL",
                "-m dscp --dscp 0x40;;FAIL",
                "-m dscp --dscp 0x3f --dscp-class CS0;;FAIL",
                "-m dscp;;FAIL",
                "-p tcp --syn;-p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN;OK",
                "-p tcp -m tcp --syn;-p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN;OK",
                "-p tcp ! --syn;-p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN;OK",
                "-p tcp -m tcp --tcp-flags FIN,SYN,RST,PSH,ACK,URG SYN;=;OK",
                "-p tcp -m tcp ! --tcp-flags FIN,SYN,RST,PSH,ACK,URG SYN;=;OK",
                "-p tcp --tcp-flags ALL NONE;-p tcp -m tcp --tcp-flags FIN,SYN,RST,PSH,ACK,URG NONE;OK",
                "-p tcp --tcp-flags syn,ack syn;-p tcp -m tcp --tcp-flags SYN,ACK SYN;OK",
                "-p tcp --tcp-flags SYN,ACK ACK --dport 22 --sport 9;-p tcp -m tcp --sport 9 --dport 22 --tcp-flags SYN,ACK ACK;OK",
                "-p tcp --tcp-flags SYN;;FAIL",
                "-p tcp --tcp-flags SYN,FOO SYN;;FAIL",
                "-p tcp --syn --tcp-flags SYN SYN;;FAIL",
                "-p udp --syn;;FAIL",
                "-m tcp --syn;;FAIL",
                "-m statistic --mode random --probability 0.33;-m statistic --mode random --probability 0.33000000007;OK",
                "-m statistic --mode random ! --probability 0.5;-m statistic --mode random ! --probability 0.50000000000;OK",
                "-m statistic --mode random --probability 1;-m statistic --mode random --probability 1.00000000000;OK",
                "-m statistic --mode random --probability 0.00000000001;-m statistic --mode random --probability 0.00000000000;OK",
                "-m statistic --mode nth --every 3 --packet 0;=;OK",
                "-m statistic --mode nth ! --every 5 --packet 2;=;OK",
                "-m statistic;;FAIL",
                "-m statistic --mode random ! --probability 1.1;;FAIL",
                "-m statistic --probability 1;;FAIL",
                "-m statistic --mode random;;FAIL",
                "-m statistic --mode nth ! --every 5;;FAIL",
                "-m statistic --mode nth ! --every 5 --packet 5;;FAIL",
                "-m statistic --mode nth --every 0 --packet 0;;FAIL",
                "-m statistic --mode nth --probability 0.5 --every 2;;FAIL",
                "-m statistic --mode fair;;FAIL",
            ],
        ),
        (
            "INPUT",
            "",
            &[
                "-m addrtype --src-type LOCAL --limit-iface-in;=;OK",
                "-m addrtype ! --dst-type LOCAL,BROADCAST --limit-iface-in;=;OK",
                // No output interface before routing.
                "-m addrtype --dst-type LOCAL --limit-iface-out;;FAIL",
            ],
        ),
        (
            "OUTPUT",
            "",
            &[
                "-m addrtype --src-type LOCAL --limit-iface-out;=;OK",
                // No input interface for the host's own packets.
                "-m addrtype --dst-type LOCAL --limit-iface-in;;FAIL",
            ],
        ),
    ];

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn extension_lines_list_as_iptables_lists_them() {
        for (chains, _, lines) in LINES {
            for chain in chains.split(',') {
                for line in *lines {
                    let [rule, expected, result] = line.split(';').collect::<Vec<_>>()[..] else {
                        panic!("bad line {line}");
                    };
                    let args = words(&format!("-A {chain} {rule}"));
                    let parsed = parse_iptables_args(&args);
                    match (result, parsed) {
                        ("OK", Ok(cmd)) => {
                            let Action::Append { rules, .. } = cmd.action else {
                                panic!("{line}: not an append");
                            };
                            let text = rule_spec(chain, &rules[0], CounterStyle::Omit);
                            let want = if expected == "=" { rule } else { expected };
                            assert_eq!(text, format!("-A {chain} {want}"), "{chain}: {line}");
                        }
                        ("FAIL", Err(_)) => {}
                        ("OK", Err(e)) => panic!("{chain}: {line}: refused: {e}"),
                        (_, Ok(cmd)) => panic!("{chain}: {line}: accepted: {cmd:?}"),
                        _ => panic!("bad result in {line}"),
                    }
                }
            }
        }
    }

    /// `-L` and `-L -n` texts, as iptables 1.8.9 printed them.
    #[test]
    fn extension_columns_as_iptables_lists_them() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "-m length ! --length 0:65535",
                "length !0:65535",
                "length !0:65535",
            ),
            (
                "-m ttl ! --ttl-eq 5",
                "TTL match TTL != 5",
                "TTL match TTL != 5",
            ),
            (
                "-m ttl --ttl-gt 3",
                "TTL match TTL > 3",
                "TTL match TTL > 3",
            ),
            (
                "-m iprange --src-range 1.1.1.1-1.1.1.9 ! --dst-range 2.2.2.2-2.2.2.3",
                "source IP range 1.1.1.1-1.1.1.9 destination IP range ! 2.2.2.2-2.2.2.3",
                "source IP range 1.1.1.1-1.1.1.9 destination IP range ! 2.2.2.2-2.2.2.3",
            ),
            (
                "-m pkttype ! --pkt-type broadcast",
                "PKTTYPE != broadcast",
                "PKTTYPE != broadcast",
            ),
            (
                "-m addrtype --src-type LOCAL,UNICAST ! --dst-type BROADCAST",
                "ADDRTYPE match src-type UNICAST,LOCAL dst-type !BROADCAST",
                "ADDRTYPE match src-type UNICAST,LOCAL dst-type !BROADCAST",
            ),
            (
                "-m addrtype ! --dst-type LOCAL --limit-iface-in",
                "ADDRTYPE match dst-type !LOCAL limit-in",
                "ADDRTYPE match dst-type !LOCAL limit-in",
            ),
            (
                "-m tos --tos Minimize-Delay",
                "tos match Minimize-Delay",
                "tos match0x10/0x3f",
            ),
            (
                "-m tos ! --tos 0x0f/0x0f",
                "tos match!0x0f/0x0f",
                "tos match!0x0f/0x0f",
            ),
            (
                "-m dscp ! --dscp 0x2e",
                "DSCP match !0x2e",
                "DSCP match !0x2e",
            ),
            (
                "-p tcp --syn",
                "tcp flags:FIN,SYN,RST,ACK/SYN",
                "tcp flags:0x17/0x02",
            ),
            (
                "-p tcp ! --tcp-flags ALL NONE",
                "tcp flags:!FIN,SYN,RST,PSH,ACK,URG/NONE",
                "tcp flags:!0x3F/0x00",
            ),
        ];
        for (rule, names, numeric) in cases {
            let args = words(&format!("-A INPUT {rule} -j ACCEPT"));
            let Action::Append { rules, .. } = parse_iptables_args(&args).unwrap().action else {
                panic!("{rule}: not an append");
            };
            for (want, numeric) in [(names, false), (numeric, true)] {
                let format = ListFormat {
                    numeric,
                    ..ListFormat::default()
                };
                let line = rule_line(&rules[0], 1, &format);
                assert!(
                    line.trim_end().ends_with(want),
                    "{rule} (numeric {numeric}): '{line}' should end with '{want}'"
                );
            }
        }
    }
}
