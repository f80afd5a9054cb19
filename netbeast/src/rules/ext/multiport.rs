//! `-m multiport --sports|--dports|--ports LIST` (libxt_multiport): up to
//! 15 ports or ranges.

use crate::compile::lower::{Atom, Keys, Lowering, key_set, negatable_l4};
use crate::rules::generate::{Dice, Random, Scope};
use netbeast_common::field;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::tcp::port_range_text;
use super::{MatchExt, MatchModule, MatchParser, OptSpec, RuleContext, Value, bang, missing};
use crate::compile::PacketView;
use crate::rules::model::{Match, MultiportKind, PortRange};
use crate::rules::names::Names;
use crate::rules::parse::{MAX_MULTIPORT_PORTS, ParseError, invalid, parse_port};
use netbeast_common::port_header_len;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Multiport {
    pub kind: MultiportKind,
    pub negated: bool,
    pub ports: Vec<PortRange>,
}

/// `22,80,1000:2000`.
pub fn port_list_text(ports: &[PortRange]) -> String {
    ports
        .iter()
        .map(|p| port_range_text(*p))
        .collect::<Vec<_>>()
        .join(",")
}

impl MatchExt for Multiport {
    fn save(&self, out: &mut String) {
        let flag = match self.kind {
            MultiportKind::Source => "--sports",
            MultiportKind::Destination => "--dports",
            MultiportKind::Either => "--ports",
        };
        let _ = write!(
            out,
            " -m multiport{} {flag} {}",
            bang(self.negated),
            port_list_text(&self.ports)
        );
    }

    fn list(&self, out: &mut String, _numeric: bool) {
        self.list_with(out, |p| p.to_string());
    }

    fn list_named(&self, out: &mut String, names: &Names, protocol: u8) {
        self.list_with(out, |p| names.service(p, protocol));
    }

    fn matches(&self, pkt: &PacketView) -> bool {
        let Some((s, d)) = pkt.ports() else {
            return false;
        };
        let hit = self.ports.iter().any(|r| match self.kind {
            MultiportKind::Source => r.contains(s),
            MultiportKind::Destination => r.contains(d),
            MultiportKind::Either => r.contains(s) || r.contains(d),
        });
        hit != self.negated
    }

    fn lower(&self) -> Lowering {
        let set = key_set(
            self.ports
                .iter()
                .map(|r| (u32::from(r.first), u32::from(r.last)))
                .collect(),
        );
        let keys = |f: usize, k: &Keys| Atom::Keys(f, k.clone());
        let outside = negatable_l4(set.clone(), true);
        Lowering::Static(match (self.kind, self.negated) {
            (MultiportKind::Source, n) => vec![vec![keys(field::L4A, &negatable_l4(set, n))]],
            (MultiportKind::Destination, n) => {
                vec![vec![keys(field::L4B, &negatable_l4(set, n))]]
            }
            // Source in P, or source not in P and destination in P: the
            // second alternative excludes the first so that a
            // non-terminating rule acts once.
            (MultiportKind::Either, false) => vec![
                vec![keys(field::L4A, &set)],
                vec![keys(field::L4A, &outside), keys(field::L4B, &set)],
            ],
            // Neither source nor destination in P: one conjunction.
            (MultiportKind::Either, true) => {
                vec![vec![keys(field::L4A, &outside), keys(field::L4B, &outside)]]
            }
        })
    }

    fn check(&self, protocol: Option<u8>) -> Result<(), String> {
        if protocol.and_then(port_header_len).is_none() {
            return Err(
                "-m multiport needs `-p tcp`, `udp`, `udplite`, `sctp` or `dccp`".to_string(),
            );
        }
        Ok(())
    }
}

const LIST: &str = "a port list like 80,443,8000:8080";

static OPTIONS: [OptSpec; 3] = [
    OptSpec {
        names: &["sports", "source-ports"],
        value: Value::One(LIST),
        negatable: true,
    },
    OptSpec {
        names: &["dports", "destination-ports"],
        value: Value::One(LIST),
        negatable: true,
    },
    OptSpec {
        names: &["ports"],
        value: Value::One(LIST),
        negatable: true,
    },
];

pub static MODULE: MatchModule = MatchModule {
    name: "multiport",
    family: None,
    options: &OPTIONS,
    example: "e.g. -p tcp -m multiport --dports 80,443",
    parser: || Box::<MultiportParser>::default(),
    implicit_protocol: None,
    random: Random {
        weight: 4,
        draw: random,
    },
};

#[derive(Debug, Default)]
struct MultiportParser(Option<Multiport>);

impl MatchParser for MultiportParser {
    fn option(
        &mut self,
        option: &'static OptSpec,
        negated: bool,
        values: &[&str],
    ) -> Result<(), ParseError> {
        let ports = parse_multiport_list(&option.flag(), values[0])?;
        let kind = match option.name() {
            "sports" => MultiportKind::Source,
            "dports" => MultiportKind::Destination,
            _ => MultiportKind::Either,
        };
        if self.0.is_some() {
            return Err(ParseError::Repeated {
                option: "--sports/--dports/--ports".into(),
                hint: "; one -m multiport takes one list (add another -m multiport)",
            });
        }
        self.0 = Some(Multiport {
            kind,
            negated,
            ports,
        });
        Ok(())
    }

    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Match, ParseError> {
        let m = self
            .0
            .ok_or_else(|| missing(&MODULE, "--sports, --dports or --ports"))?;
        // xt_multiport's checkentry: a protocol with ports, not negated.
        if rule.plain_protocol().and_then(port_header_len).is_none() {
            return Err(ParseError::NeedsProtocol {
                option: "-m multiport".into(),
                needs: "-p tcp, udp, udplite, sctp or dccp (not negated) earlier in the rule"
                    .into(),
            });
        }
        Ok(Match::Multiport(m))
    }
}

/// `-m multiport` lists: `a,b,c:d`, at most [`MAX_MULTIPORT_PORTS`]
/// entries (a range counts as two).
fn parse_multiport_list(option: &str, text: &str) -> Result<Vec<PortRange>, ParseError> {
    let mut ports = Vec::new();
    let mut used = 0;
    for item in text.split(',') {
        let range = match item.split_once(':') {
            Some((first, last)) => {
                let range = PortRange {
                    first: parse_port(option, first)?,
                    last: parse_port(option, last)?,
                };
                if range.first >= range.last {
                    return Err(invalid(
                        option,
                        "port range",
                        item,
                        "a multiport range must be low:high with low < high",
                    ));
                }
                used += 2;
                range
            }
            None => {
                let port = parse_port(option, item)?;
                used += 1;
                PortRange {
                    first: port,
                    last: port,
                }
            }
        };
        if used > MAX_MULTIPORT_PORTS {
            return Err(invalid(
                option,
                "port list",
                text,
                format!(
                    "too many ports: multiport takes at most {MAX_MULTIPORT_PORTS} (a range counts as two); split it into several rules"
                ),
            ));
        }
        ports.push(range);
    }
    Ok(ports)
}

impl Multiport {
    /// libxt_multiport's print: ` multiport dports 22,80`, each port
    /// written by `port`.
    fn list_with(&self, out: &mut String, port: impl Fn(u16) -> String) {
        let kind = match self.kind {
            MultiportKind::Source => "sports",
            MultiportKind::Destination => "dports",
            MultiportKind::Either => "ports",
        };
        let bang = if self.negated { " !" } else { "" };
        let _ = write!(
            out,
            " multiport {kind} {bang}{}",
            self.ports
                .iter()
                .map(|r| if r.first == r.last {
                    port(r.first)
                } else {
                    format!("{}:{}", port(r.first), port(r.last))
                })
                .collect::<Vec<_>>()
                .join(",")
        );
    }
}

/// One to four ports or ranges, in a rule of a protocol with ports.
fn random(d: &mut Dice, s: &Scope) -> Option<Match> {
    if !matches!(s.plain_protocol(), Some(6 | 17 | 33 | 132 | 136)) {
        return None;
    }
    let kind = d.pick(&[
        MultiportKind::Source,
        MultiportKind::Destination,
        MultiportKind::Either,
    ]);
    let negated = d.chance(s.palette.negate);
    let ports = (0..1 + d.below(4))
        .map(|_| d.port_range(s.palette))
        .collect();
    Some(Match::Multiport(Multiport {
        kind,
        negated,
        ports,
    }))
}
