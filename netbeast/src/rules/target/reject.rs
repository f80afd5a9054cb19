//! `-j REJECT [--reject-with TYPE]` (libipt_REJECT): drop the packet and
//! answer it with an ICMP error or a TCP reset. Filter table only.

use crate::rules::generate::{Dice, Random, Scope};
use std::fmt::Write as _;

use netbeast_common::{reject, target as code};

use super::{TargetModule, TargetParser, check_placement, no_suggestion};
use crate::rules::ext::{OptSpec, RuleContext, Value};
use crate::rules::model::{Family, RejectWith, TableName, Target};
use crate::rules::parse::{ParseError, invalid};

/// `--reject-with` names and aliases, in libipt_REJECT's table order (which
/// decides what an abbreviation means).
const TYPES: &[(&str, &str, RejectWith)] = &[
    (
        "icmp-net-unreachable",
        "net-unreach",
        RejectWith::IcmpNetUnreachable,
    ),
    (
        "icmp-host-unreachable",
        "host-unreach",
        RejectWith::IcmpHostUnreachable,
    ),
    (
        "icmp-proto-unreachable",
        "proto-unreach",
        RejectWith::IcmpProtoUnreachable,
    ),
    (
        "icmp-port-unreachable",
        "port-unreach",
        RejectWith::IcmpPortUnreachable,
    ),
    (
        "icmp-net-prohibited",
        "net-prohib",
        RejectWith::IcmpNetProhibited,
    ),
    (
        "icmp-host-prohibited",
        "host-prohib",
        RejectWith::IcmpHostProhibited,
    ),
    ("tcp-reset", "tcp-rst", RejectWith::TcpReset),
    (
        "icmp-admin-prohibited",
        "admin-prohib",
        RejectWith::IcmpAdminProhibited,
    ),
];

/// ip6tables' `--reject-with` names and aliases, in libip6t_REJECT's
/// table order.
const TYPES6: &[(&str, &str, RejectWith)] = &[
    ("icmp6-no-route", "no-route", RejectWith::Icmp6NoRoute),
    (
        "icmp6-adm-prohibited",
        "adm-prohibited",
        RejectWith::Icmp6AdmProhibited,
    ),
    (
        "icmp6-addr-unreachable",
        "addr-unreach",
        RejectWith::Icmp6AddrUnreachable,
    ),
    (
        "icmp6-port-unreachable",
        "port-unreach",
        RejectWith::Icmp6PortUnreachable,
    ),
    ("tcp-reset", "tcp-reset", RejectWith::TcpReset),
    (
        "icmp6-policy-fail",
        "policy-fail",
        RejectWith::Icmp6PolicyFail,
    ),
    (
        "icmp6-reject-route",
        "reject-route",
        RejectWith::Icmp6RejectRoute,
    ),
];

/// Every answer, for generators.
pub const ALL: [RejectWith; 8] = [
    RejectWith::IcmpNetUnreachable,
    RejectWith::IcmpHostUnreachable,
    RejectWith::IcmpProtoUnreachable,
    RejectWith::IcmpPortUnreachable,
    RejectWith::IcmpNetProhibited,
    RejectWith::IcmpHostProhibited,
    RejectWith::TcpReset,
    RejectWith::IcmpAdminProhibited,
];

/// `--reject-with`: a name, an alias, or a prefix of one (the first in
/// libipt_REJECT's order wins, as in iptables).
pub fn parse_reject_with(text: &str) -> Result<RejectWith, ParseError> {
    parse_reject_with_in(TYPES, text)
}

/// [`parse_reject_with`] for one family's table: ip6tables knows only
/// ICMPv6 answers and tcp-reset.
pub fn parse_reject_with_of(family: Family, text: &str) -> Result<RejectWith, ParseError> {
    match family {
        Family::V4 => parse_reject_with_in(TYPES, text),
        Family::V6 => parse_reject_with_in(TYPES6, text).map_err(|_| {
            invalid(
                "--reject-with",
                "reject type",
                text,
                "use icmp6-port-unreachable (the default), icmp6-no-route, icmp6-adm-prohibited, \
                 icmp6-addr-unreachable, icmp6-policy-fail, icmp6-reject-route or tcp-reset",
            )
        }),
    }
}

fn parse_reject_with_in(
    table: &[(&str, &str, RejectWith)],
    text: &str,
) -> Result<RejectWith, ParseError> {
    let lower = text.to_ascii_lowercase();
    table
        .iter()
        .find(|(name, alias, _)| *name == lower || *alias == lower)
        .or_else(|| {
            table.iter().find(|(name, alias, _)| {
                !lower.is_empty() && (name.starts_with(&lower) || alias.starts_with(&lower))
            })
        })
        .map(|(_, _, with)| *with)
        .ok_or_else(|| {
            invalid(
                "--reject-with",
                "reject type",
                text,
                "use icmp-port-unreachable (the default), icmp-net-unreachable, icmp-host-unreachable, icmp-proto-unreachable, icmp-net-prohibited, icmp-host-prohibited, icmp-admin-prohibited or tcp-reset",
            )
        })
}

/// The answer's code for the kernel (`netbeast_common::reject`).
pub fn kernel_code(with: RejectWith) -> u32 {
    match with {
        RejectWith::IcmpPortUnreachable => reject::ICMP_PORT_UNREACHABLE,
        RejectWith::IcmpHostUnreachable => reject::ICMP_HOST_UNREACHABLE,
        RejectWith::IcmpNetUnreachable => reject::ICMP_NET_UNREACHABLE,
        RejectWith::IcmpProtoUnreachable => reject::ICMP_PROTO_UNREACHABLE,
        RejectWith::IcmpNetProhibited => reject::ICMP_NET_PROHIBITED,
        RejectWith::IcmpHostProhibited => reject::ICMP_HOST_PROHIBITED,
        RejectWith::IcmpAdminProhibited => reject::ICMP_ADMIN_PROHIBITED,
        RejectWith::TcpReset => reject::TCP_RESET,
        RejectWith::Icmp6NoRoute => reject::ICMP6_NO_ROUTE,
        RejectWith::Icmp6AdmProhibited => reject::ICMP6_ADM_PROHIBITED,
        RejectWith::Icmp6AddrUnreachable => reject::ICMP6_ADDR_UNREACHABLE,
        RejectWith::Icmp6PortUnreachable => reject::ICMP6_PORT_UNREACHABLE,
        RejectWith::Icmp6PolicyFail => reject::ICMP6_POLICY_FAIL,
        RejectWith::Icmp6RejectRoute => reject::ICMP6_REJECT_ROUTE,
    }
}

static OPTIONS: [OptSpec; 1] = [OptSpec {
    names: &["reject-with"],
    value: Value::One("a reject type like tcp-reset"),
    negatable: false,
}];

pub static MODULE: TargetModule = TargetModule {
    name: "REJECT",
    options: &OPTIONS,
    example: "-j REJECT --reject-with tcp-reset",
    parser: || Box::new(RejectParser::default()),
    code: code::REJECT,
    tables: &[TableName::Filter],
    chains: None,
    chain_reason: "",
    save,
    list,
    suggest: no_suggestion,
    hidden: false,
    random: Random {
        weight: 2,
        draw: random,
    },
};

/// iptables-save always names the answer, the default too.
fn save(target: &Target, out: &mut String) {
    let Target::Reject(with) = target else {
        unreachable!("the REJECT module saves REJECT")
    };
    let _ = write!(out, " -j REJECT --reject-with {}", with.as_str());
}

fn list(target: &Target, out: &mut String, _numeric: bool) {
    let Target::Reject(with) = target else {
        unreachable!("the REJECT module lists REJECT")
    };
    let _ = write!(out, " reject-with {}", with.as_str());
}

/// The option's text as given: which table names it depends on the
/// family, which `finish` knows.
#[derive(Clone, Debug, Default)]
struct RejectParser {
    with: Option<String>,
}

impl TargetParser for RejectParser {
    fn option(&mut self, option: &'static OptSpec, values: &[&str]) -> Result<(), ParseError> {
        let with = values[0].to_string();
        if self.with.is_some() {
            return Err(ParseError::Repeated {
                option: option.flag(),
                hint: "",
            });
        }
        self.with = Some(with);
        Ok(())
    }

    /// A reset only answers TCP (the kernel's checkentry refuses it for a
    /// rule that does not say `-p tcp`).
    fn finish(self: Box<Self>, rule: &RuleContext) -> Result<Target, ParseError> {
        let with = match (&self.with, rule.family) {
            (Some(text), family) => parse_reject_with_of(family, text)?,
            (None, Family::V4) => RejectWith::IcmpPortUnreachable,
            (None, Family::V6) => RejectWith::Icmp6PortUnreachable,
        };
        if with == RejectWith::TcpReset && rule.plain_protocol() != Some(6) {
            return Err(ParseError::NeedsProtocol {
                option: "--reject-with tcp-reset".into(),
                needs: "-p tcp: only TCP connections can be reset (use icmp-port-unreachable \
                        for others)"
                    .into(),
            });
        }
        check_placement(&MODULE, rule)?;
        Ok(Target::Reject(with))
    }

    fn boxed_clone(&self) -> Box<dyn TargetParser> {
        Box::new(self.clone())
    }
}

/// Filter table only; a reset only in a TCP rule.
fn random(d: &mut Dice, s: &Scope) -> Option<Target> {
    if s.table != TableName::Filter {
        return None;
    }
    let with = if s.plain_protocol() == Some(6) && d.chance(40) {
        RejectWith::TcpReset
    } else if s.family == Family::V6 {
        d.pick(&TYPES6.iter().map(|(.., w)| *w).collect::<Vec<_>>())
    } else {
        let icmp: Vec<RejectWith> = ALL
            .into_iter()
            .filter(|w| *w != RejectWith::TcpReset)
            .collect();
        d.pick(&icmp)
    };
    Some(Target::Reject(with))
}
