//! The nat table as far as userspace takes it: what `netbeast restore`
//! and `netbeast save` make of nat rules, against the kernel's own
//! iptables-restore and iptables-save as the oracle, and what the loader
//! writes into the `NAT_TARGETS` map and the `ACTIVE` word.
//!
//! Needs root. Each test makes its own namespaces (`nbt-…`), removed on
//! drop with netbeast's pins. Run: `cargo test -p netbeast --test nat_rules`.

use std::net::Ipv4Addr;

use netbeast::{
    compile::{self, Interface},
    loader::Dataplane,
    netns::{Firewall, Netns, require_root},
    rules::{command, model::Ruleset, parse},
};
use netbeast_common::{
    ACTIVE_NAT, ACTIVE_TRACKING, ACTIVE_TRANSLATIONS, NatTarget, chain, nat_flags,
};

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");

/// Rulesets in iptables-restore format, each with a `*filter` section so
/// that iptables-save prints that table too (it prints only the tables in
/// use; netbeast always has its filter table).
const FILES: &[&str] = &[
    // The article's NAT router, port forwarder and OUTPUT DNAT.
    "*filter
:FORWARD DROP [0:0]
-A FORWARD -s 192.168.0.6 -d 10.10.7.15 -j ACCEPT
-A FORWARD -s 10.10.7.15 -d 192.168.0.6 -m conntrack --ctstate ESTABLISHED -j ACCEPT
COMMIT
*nat
-A POSTROUTING -s 192.168.0.0/24 -o eth0 -j SNAT --to-source 10.10.7.1
-A PREROUTING -p tcp --dport 80 -j DNAT --to 127.0.0.1:8080
-I OUTPUT -o lo -p tcp -s 127.0.0.1 --dport 80 -j DNAT --to 192.168.0.4:80
COMMIT
",
    // Every nat target option, in an order iptables-save reorders.
    "*filter
-A OUTPUT -o lo -j ACCEPT
COMMIT
*nat
-A PREROUTING -p tcp -j DNAT --to-destination 10.0.0.1-10.0.0.5:80-90 --persistent --random
-A PREROUTING -p udp -j DNAT --to-destination :5353
-A PREROUTING -j DNAT --to-destination 10.0.0.1-10.0.0.5
-A PREROUTING -p tcp -m multiport --dports 80,443 -j REDIRECT --to-ports 8080-8090 --random
-A PREROUTING -p tcp -j REDIRECT
-A OUTPUT -p udp --dport 53 -j REDIRECT --to-ports 5353
-A POSTROUTING -p tcp -j SNAT --to-source 10.0.0.1:1000-2000 --random-fully --persistent --random
-A POSTROUTING -p udp -j SNAT --to-source :1000
-A POSTROUTING -p udp -j MASQUERADE --random-fully --to-ports 1000-1000 --random
-A POSTROUTING ! -o lo -j MASQUERADE
COMMIT
",
    // User-defined chains: jumps, gotos, RETURN, ACCEPT, counting rules.
    "*filter
:INPUT ACCEPT [0:0]
-A INPUT -p tcp --dport 22 -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:PORTS - [0:0]
:OUT - [0:0]
:EMPTY - [0:0]
-A PREROUTING -i eth1 -j ACCEPT
-A PREROUTING -j PORTS
-A OUTPUT -g PORTS
-A POSTROUTING -s 10.0.0.0/8
-A POSTROUTING -j OUT
-A PORTS -s 10.9.0.0/16 -j RETURN
-A PORTS -p tcp -m tcp --dport 2222 -j DNAT --to-destination 10.9.0.2:22
-A PORTS -p udp -m udp --sport 53 -j DNAT --to-destination 10.9.0.3
-A OUT -d 10.9.0.0/16 -j RETURN
-A OUT -o eth0 -j MASQUERADE
COMMIT
",
];

/// Text without iptables-save's header and footer comments (they carry
/// dates and versions).
fn without_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn restore_ok(firewall: &Firewall, host: &Netns, args: &[&str], text: &str) {
    let out = firewall.restore(host, args, text).unwrap();
    assert!(
        out.status.success(),
        "restore {args:?} in {} failed: {}\n{text}",
        host.name(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What each side's save prints after each side restored `steps` in turn
/// (each with its restore arguments), comments aside.
fn both_sides(tag: &str, steps: &[(&[&str], &str)], save_args: &[&str]) -> (String, String) {
    let real = Netns::new(&format!("natsave-ipt-{tag}")).unwrap();
    let ours = Netns::new(&format!("natsave-nb-{tag}"))
        .unwrap()
        .with_netbeast(NETBEAST);
    let netbeast = Firewall::netbeast(NETBEAST);
    for (args, text) in steps {
        restore_ok(&Firewall::Iptables, &real, args, text);
        restore_ok(&netbeast, &ours, args, text);
    }
    let real_save = real.run_ok("iptables-save", save_args).unwrap();
    let mut our_args = vec!["save"];
    our_args.extend_from_slice(save_args);
    let our_save = ours.netbeast_ok(&our_args).unwrap();
    (without_comments(&real_save), without_comments(&our_save))
}

#[test]
fn save_after_restore_is_what_iptables_prints() {
    require_root();
    for (n, text) in FILES.iter().enumerate() {
        let (real, ours) = both_sides(&n.to_string(), &[(&[], text)], &[]);
        assert_eq!(ours, real, "file {n}:\n{text}");
        assert!(ours.contains("\n*nat\n"), "{ours}");
    }
}

#[test]
fn counters_and_noflush_restore_as_iptables_does() {
    require_root();
    let base = "*filter
:INPUT ACCEPT [5:500]
[1:60] -A INPUT -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [12:720]
:POSTROUTING ACCEPT [3:180]
:KEEP - [0:0]
[2:120] -A POSTROUTING -o eth0 -j MASQUERADE
[7:420] -A KEEP -p tcp --dport 80 -j DNAT --to 10.0.0.2
-A PREROUTING -j KEEP
COMMIT
";
    // --noflush on the nat table only: appended, KEEP kept and emptied by
    // its chain line as iptables-restore does.
    let more = "*nat
:KEEP - [0:0]
[4:240] -A KEEP -p udp --dport 53 -j DNAT --to 10.0.0.53
-I POSTROUTING -s 10.0.0.0/8 -j SNAT --to-source 192.0.2.1
COMMIT
";
    let (real, ours) = both_sides(
        "counters",
        &[(&["-c"], base), (&["-c", "--noflush"], more)],
        &["-c"],
    );
    assert_eq!(ours, real);
    assert!(ours.contains("[4:240] -A KEEP"), "{ours}");
}

/// A ruleset built by running iptables lines, as `netbeast iptables` would.
fn typed(lines: &[&str]) -> Ruleset {
    let mut ruleset = Ruleset::default();
    for line in lines {
        let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let cmd = parse::parse_iptables_args(&args).unwrap_or_else(|e| panic!("'{line}': {e}"));
        command::apply(&mut ruleset, &cmd).unwrap_or_else(|e| panic!("'{line}': {e}"));
    }
    ruleset
}

fn host(a: [u8; 4]) -> u32 {
    u32::from(Ipv4Addr::from(a))
}

#[test]
fn apply_writes_the_translations_and_the_active_bits() {
    require_root();
    let ns = Netns::new("natmap").unwrap();
    ns.in_netns(|| {
        let mut dp = Dataplane::load_private().expect("loading the data plane");
        let interfaces = [Interface {
            ifindex: 1,
            name: "lo".into(),
        }];
        let nat = typed(&[
            "-t nat -A PREROUTING -p tcp --dport 80 -j DNAT --to 127.0.0.1:8080",
            "-t nat -A PREROUTING -p tcp --dport 443 -j REDIRECT --to-ports 8443-8444 --random",
            "-t nat -A POSTROUTING -s 192.168.0.0/24 -p udp -j SNAT --to-source 10.10.7.1-10.10.7.2:1024-2047",
            "-t nat -A POSTROUTING -o lo -j MASQUERADE --random-fully",
            "-t nat -A OUTPUT -p tcp --dport 80 -j DNAT --to 127.0.0.1:8080",
        ]);
        dp.apply(&nat, &interfaces).unwrap();
        let expected = [
            NatTarget {
                addr_first: host([127, 0, 0, 1]),
                addr_last: host([127, 0, 0, 1]),
                port_first: 8080,
                port_last: 8080,
                flags: nat_flags::ADDR | nat_flags::PORTS,
                ..Default::default()
            },
            NatTarget {
                addr_first: 0,
                addr_last: 0,
                port_first: 8443,
                port_last: 8444,
                flags: nat_flags::PORTS | nat_flags::RANDOM,
                ..Default::default()
            },
            NatTarget {
                addr_first: host([10, 10, 7, 1]),
                addr_last: host([10, 10, 7, 2]),
                port_first: 1024,
                port_last: 2047,
                flags: nat_flags::ADDR | nat_flags::PORTS,
                ..Default::default()
            },
            NatTarget {
                addr_first: 0,
                addr_last: 0,
                port_first: 0,
                port_last: 0,
                flags: nat_flags::RANDOM,
                ..Default::default()
            },
        ];
        // The OUTPUT rule shares the PREROUTING rule's translation.
        assert_eq!(dp.nat_targets(expected.len()).unwrap(), expected);
        let compiled = compile::compile(&nat, &interfaces, 0).unwrap();
        assert_eq!(compiled.nat_targets, expected);
        let word = dp.active_word().unwrap();
        assert_eq!(
            word & (ACTIVE_NAT | ACTIVE_TRACKING),
            ACTIVE_NAT | ACTIVE_TRACKING
        );
        // The nat chains' counters start at zero in the new generation.
        let (rules, policy) = dp.chain_counters(chain::NAT_POSTROUTING, 2).unwrap();
        assert!(rules.iter().all(|c| c.packets == 0) && policy.packets == 0);

        // The next ruleset goes to the other generation, with its own
        // translations; the one before stays untouched until replaced.
        let other = typed(&["-t nat -A PREROUTING -p udp -j DNAT --to :5353"]);
        dp.apply(&other, &interfaces).unwrap();
        let word2 = dp.active_word().unwrap();
        assert_ne!(word2 & 1, word & 1, "the generation switched");
        assert_eq!(
            dp.nat_targets(1).unwrap(),
            [NatTarget {
                addr_first: 0,
                addr_last: 0,
                port_first: 5353,
                port_last: 5353,
                flags: nat_flags::PORTS,
                ..Default::default()
            }]
        );
        // Without nat rules: no nat chains, but connections translated
        // before keep their translation, and the tracking it needs, until
        // conntrack is flushed.
        dp.apply(&typed(&["-A INPUT -j ACCEPT"]), &interfaces)
            .unwrap();
        assert_eq!(
            dp.active_word().unwrap() & (ACTIVE_NAT | ACTIVE_TRACKING | ACTIVE_TRANSLATIONS),
            ACTIVE_TRACKING | ACTIVE_TRANSLATIONS
        );
        dp.flush_conntrack().unwrap();
        dp.apply(&typed(&["-A INPUT -j ACCEPT"]), &interfaces)
            .unwrap();
        assert_eq!(
            dp.active_word().unwrap() & (ACTIVE_NAT | ACTIVE_TRACKING | ACTIVE_TRANSLATIONS),
            0
        );
        dp.apply(
            &typed(&["-A INPUT -m conntrack --ctstate NEW -j ACCEPT"]),
            &interfaces,
        )
        .unwrap();
        assert_eq!(
            dp.active_word().unwrap() & (ACTIVE_NAT | ACTIVE_TRACKING),
            ACTIVE_TRACKING
        );
    })
    .unwrap();
}
