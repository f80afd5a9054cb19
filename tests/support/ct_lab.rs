//! The conntrack program tests' lab, shared by tests/conntrack.rs (IPv4)
//! and tests/conntrack6.rs (IPv6): a data plane whose INPUT chain opens
//! with five counting rules, one per state, and the check that exactly
//! one of them counts each packet sent through the XDP program with
//! `BPF_PROG_TEST_RUN`. Included with
//! `#[path = "support/ct_lab.rs"] mod ct_lab;`.
#![allow(dead_code)]

use netbeast::{
    loader::Dataplane,
    packet::FrameBuilder,
    rules::{command, model::Ruleset, parse},
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

pub const CLIENT_PORT: u16 = 40000;
pub const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0x1e, 0x00, 0x00, 0x01];
pub const SERVER_MAC: [u8; 6] = [0x02, 0x5e, 0x7e, 0x00, 0x00, 0x02];

/// The states in the order of the counting rules that open INPUT.
pub const STATES: [&str; 5] = ["NEW", "ESTABLISHED", "RELATED", "INVALID", "UNTRACKED"];

pub struct Lab {
    pub dp: Dataplane,
    /// The INPUT chain of the family under test (`chain::INPUT`,
    /// `chain::INPUT6`).
    pub input: u32,
    /// The scenario's own rules in that chain, after the counting rules.
    pub rules: usize,
}

/// What a packet did: the state its counting rule names, the XDP action.
#[derive(Debug, PartialEq, Eq)]
pub struct Seen {
    pub state: &'static str,
    pub action: u32,
}

/// The counting rules followed by `rules`, each a line as `iptables`
/// (or, with `ip6`, `ip6tables`) takes it; a line starting with `4 ` is
/// an IPv4 one either way.
pub fn ruleset(rules: &[&str], ip6: bool) -> Ruleset {
    let counting = STATES.map(|s| format!("-A INPUT -m state --state {s}"));
    let mut ruleset = Ruleset::default();
    for line in counting
        .iter()
        .map(String::as_str)
        .chain(rules.iter().copied())
    {
        let (v4, line) = match line.strip_prefix("4 ") {
            Some(rest) => (true, rest),
            None => (!ip6, line),
        };
        let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let cmd = if v4 {
            parse::parse_iptables_args(&args)
        } else {
            parse::parse_ip6tables_args(&args)
        }
        .unwrap_or_else(|e| panic!("rule {line:?} does not parse: {e}"));
        command::apply(&mut ruleset, &cmd)
            .unwrap_or_else(|e| panic!("rule {line:?} cannot be applied: {e}"));
    }
    ruleset
}

impl Lab {
    /// The packet counts of the INPUT chain's rules, in order.
    pub fn counts(&self) -> Vec<u64> {
        let (rules, _) = self
            .dp
            .chain_counters(self.input, STATES.len() + self.rules)
            .expect("reading INPUT counters");
        rules.iter().map(|c| c.packets).collect()
    }

    pub fn stat(&self, index: u32) -> u64 {
        self.dp.stats().expect("reading stats")[index as usize]
    }

    /// Runs `frame` through the XDP program; the state is the one counting
    /// rule that moved.
    pub fn send(&mut self, what: &str, frame: &FrameBuilder) -> Seen {
        let bytes = frame.build();
        let before = self.counts();
        let out = self
            .dp
            .test_run_xdp(&bytes, 0)
            .unwrap_or_else(|e| panic!("{what}: BPF_PROG_TEST_RUN failed: {e}"));
        assert_ne!(out.action, 0, "{what}: XDP_ABORTED");
        let after = self.counts();
        let moved: Vec<&'static str> = STATES
            .iter()
            .enumerate()
            .filter(|(i, _)| after[*i] != before[*i])
            .map(|(_, s)| *s)
            .collect();
        let [state] = moved.as_slice() else {
            panic!("{what}: expected exactly one state rule to count the packet, got {moved:?}");
        };
        Seen {
            state,
            action: out.action,
        }
    }

    /// Sends and checks the state; the packet must pass (policy ACCEPT).
    #[track_caller]
    pub fn expect(&mut self, what: &str, frame: &FrameBuilder, state: &str) {
        let seen = self.send(what, frame);
        assert_eq!(
            seen.state, state,
            "{what}: state {} (expected {state})",
            seen.state
        );
        assert_eq!(seen.action, XDP_PASS, "{what}: action {}", seen.action);
    }
}
