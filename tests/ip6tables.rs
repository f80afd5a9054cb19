//! `ip6tables` against real ip6tables 1.8, the oracle (issue 16): the same
//! command lines in two twin namespaces, one with real ip6tables and one
//! with netbeast (through links named `ip6tables`, `ip6tables-save`,
//! `ip6tables-restore`, and as `netbeast ip6tables` / `save -6` /
//! `restore -6`); exit codes, then `-S`, `-L` (with and without `-n`,
//! `-v`, `--line-numbers`) and the save text compared byte for byte. The
//! IPv4 ruleset must stay untouched by all of it.
//!
//! Needs root. Run: `cargo test -p netbeast --test ip6tables`.

use std::{
    path::{Path, PathBuf},
    process::Output,
};

use netbeast::netns::{Netns, require_root};

#[path = "support/links.rs"]
mod links;
use links::Links;

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");

/// Commands both must take (exit 0) and end up listing alike.
const ACCEPTED: &[&str] = &[
    "-N MYCH",
    "-N OTHER",
    "-P INPUT DROP",
    "-P FORWARD DROP",
    "-A INPUT -s 2001:db8::/32 ! -d fd00::1 -p tcp --dport 22 -j ACCEPT",
    "-A INPUT -p ipv6-icmp -j ACCEPT",
    "-A INPUT -p icmpv6 -i lo -m comment --comment hello -j MYCH",
    "-A INPUT -p udp -m multiport --dports 53,123:130 -j DROP",
    "-A INPUT -s fd00:0:0:0:0:0:0:1/64 -j RETURN",
    "-A INPUT -m hashlimit --hashlimit-above 1/s --hashlimit-mode srcip --hashlimit-srcmask 64 --hashlimit-name x -j DROP",
    "-A INPUT -p tcp --syn -m connlimit --connlimit-above 4 --connlimit-mask 48 -j REJECT --reject-with tcp-reset",
    "-A INPUT -m iprange ! --src-range 2001:db8::1-2001:db8::ff --dst-range fd00::1-fd00::9 -j DROP",
    "-A INPUT -d fd00::/ffff:ffff:: -p tcp --sport 1024:65535 -j OTHER",
    "-A INPUT -s fd00::1,fd00::2 -p udp --dport 53 -j ACCEPT",
    "-A INPUT -s ::ffff:10.0.0.1 -j DROP",
    "-A INPUT -p 0 -j ACCEPT",
    "-I INPUT 2 -i veth+ ! -p tcp -j ACCEPT",
    "-A FORWARD -i a -o b -p sctp --dport 9 -j ACCEPT",
    "-A OUTPUT -o lo -p tcp -m multiport --sports 80,443 -j ACCEPT",
    "-A MYCH -p icmp -j ACCEPT",
    "-A OTHER -g MYCH",
    "-A OTHER -p tcp -m tcp --tcp-flags SYN,ACK SYN -j DROP",
    "-A INPUT -p ipv6-icmp --icmpv6-type echo-request -j ACCEPT",
    "-A INPUT -p icmpv6 -m icmp6 --icmpv6-type neighbour-advertisement -j ACCEPT",
    "-A INPUT -p ipv6-icmp -m icmp6 ! --icmpv6-type 1/3 -j DROP",
    "-A INPUT -p ipv6-icmp --icmpv6-type 255 -j DROP",
    "-A INPUT -p ipv6-icmp --icmpv6-type 129/4 -j DROP",
    "-A INPUT -p ipv6-icmp --icmpv6-type router-sol -j DROP",
    "-A INPUT -m hl --hl-lt 5 -j DROP",
    "-A INPUT -m hl ! --hl-eq 255 -j DROP",
    "-A FORWARD -m hl --hl-gt 3 -j ACCEPT",
    "-A INPUT -p tcp --syn -j DROP",
    "-A INPUT -p tcp ! --tcp-flags ALL NONE -j DROP",
    "-A INPUT -m length --length 100:200 -j DROP",
    "-A INPUT -m mac --mac-source 02:00:00:00:00:01 -j DROP",
    "-A INPUT -m limit --limit 5/min --limit-burst 7 -j ACCEPT",
    "-A INPUT -m statistic --mode nth --every 3 --packet 1 -j DROP",
    "-A INPUT -m statistic --mode random --probability 0.25 -j DROP",
    "-A INPUT -p tcp -j LOG --log-prefix v6: --log-tcp-options --log-tcp-sequence",
    "-A FORWARD -j LOG --log-level debug --log-ip-options --log-macdecode",
    "-A INPUT -j LOG",
    "-A INPUT -m rt --rt-type 0 -j DROP",
    "-A INPUT -m rt ! --rt-type 1 ! --rt-segsleft 12:23 ! --rt-len 42",
    "-A INPUT -m rt --rt-segsleft 3 -j ACCEPT",
    "-A INPUT -m rt --rt-type 300",
    "-A FORWARD -m rt",
    "-A INPUT -m frag --fragid 1:42 --fraglen 8 --fragres --fragfirst --fragmore",
    "-A INPUT -m frag ! --fragid 5 ! --fraglen 3 --fraglast -j DROP",
    "-A FORWARD -m frag",
    "-A INPUT -m ipv6header --header hop-by-hop,ipv6-route,esp --soft",
    "-A INPUT -m ipv6header ! --header ipv6-nonxt -j DROP",
    "-A INPUT -m ipv6header --header hop,dst,route,frag,auth,esp,none,prot",
    "-A INPUT -m ipv6header --header 255",
    "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    "-A INPUT -m state --state INVALID -j DROP",
    "-A OTHER -m conntrack ! --ctstate NEW --ctdir REPLY --ctstatus ASSURED -j RETURN",
    "-A INPUT -p tcp --dport 23 -j REJECT --reject-with tcp-reset",
    "-A INPUT -p udp -j REJECT",
    "-A FORWARD -j REJECT --reject-with no-route",
    "-A FORWARD -j REJECT --reject-with icmp6-adm-prohibited",
    "-A MYCH -j REJECT --reject-with addr-unreach",
    "-A MYCH -j REJECT --reject-with icmp6-policy-fail",
    "-A MYCH -j REJECT --reject-with icmp6-reject-route",
    "-A OUTPUT -p tcp --dport 25 -j REJECT --reject-with tcp-reset",
    "-A OUTPUT -j REJECT",
    "-D INPUT -p 0 -j ACCEPT",
    "-R INPUT 1 -s 2001:db8::/48 -p tcp --dport 22 -j ACCEPT",
    "-C INPUT -p ipv6-icmp -j ACCEPT",
    "-6 -A OUTPUT -j ACCEPT",
    // The mangle table (issue 18).
    "-t mangle -N MARKS",
    "-t mangle -A PREROUTING -i lo -j MARKS",
    "-t mangle -A MARKS -p tcp --dport 22 -j MARK --set-mark 0x10/0xff",
    "-t mangle -A MARKS -m mark --mark 0x10/0xff -j CONNMARK --save-mark",
    "-t mangle -A INPUT -m connmark ! --mark 0x1 -j CONNMARK --set-xmark 0x1/0xf",
    "-t mangle -A FORWARD -j MARK --or-mark 0x4000",
    "-t mangle -A OUTPUT -j CONNMARK --restore-mark --mask 0xff",
    "-t mangle -A POSTROUTING -m mark --mark 0x4000/0x4000 -j RETURN",
    "-t mangle -P FORWARD DROP",
    // The raw table: Docker 28's IPv6 rule, notrack, user chains, CT.
    "-t raw -N RAWCH",
    "-t raw -A PREROUTING -d fd00:dead:beef::2/128 ! -i docker0 -p tcp -m tcp --dport 80 -j DROP",
    "-t raw -A PREROUTING -p tcp --dport 81 -j CT --notrack",
    "-t raw -A PREROUTING -j RAWCH",
    "-t raw -A RAWCH -s fd00::/64 -j ACCEPT",
    "-t raw -A RAWCH -p ipv6-icmp -j RETURN",
    "-t raw -A RAWCH -j CT --ctevents new,destroy",
    "-t raw -A OUTPUT -p udp --sport 53 -j NOTRACK",
    "-t raw -A OUTPUT -j CT",
    "-t raw -I OUTPUT -o lo -j ACCEPT",
    "-t raw -P OUTPUT DROP",
    // -m addrtype: Docker's nat PREROUTING rule, and the IPv6 types.
    "-t nat -N DOCKER",
    "-t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
    "-A INPUT -m addrtype ! --src-type MULTICAST,UNSPEC --dst-type unicast,LOCAL --limit-iface-in -j ACCEPT",
    "-A FORWARD -m addrtype --src-type ANYCAST ! --dst-type UNREACHABLE --limit-iface-out",
];

/// Commands both refuse, with the same exit code, applying nothing.
const REFUSED: &[(&str, i32)] = &[
    ("-A INPUT -f -j DROP", 2),
    ("-A INPUT -s 10.0.0.1 -j DROP", 2),
    ("-A INPUT -s fd00::/129 -j DROP", 2),
    ("-A INPUT -s fd00::1,fd00::2 ! -d fd00::3 -j NOPE", 2),
    ("-A INPUT -p tcp --dport 99999 -j ACCEPT", 2),
    ("-4 -A INPUT -j ACCEPT", 2),
    ("-C INPUT -p udp -j ACCEPT", 1),
    ("-D INPUT 99", 1),
    ("-A NOCHAIN -j ACCEPT", 1),
    ("-t bogus -L", 3),
    ("-A INPUT -m ttl --ttl-eq 5 -j DROP", 2),
    ("-A INPUT -p ipv6-icmp -m icmp --icmp-type 8 -j DROP", 2),
    ("-A INPUT -m hl --hl-eq 5 --hl-lt 3 -j DROP", 2),
    ("-A INPUT -m hl --hl-eq 256 -j DROP", 2),
    ("-A INPUT -m hl ! --hl-lt 3 -j DROP", 2),
    ("-A INPUT -p tcp --icmpv6-type 8 -j DROP", 2),
    ("-A INPUT --icmpv6-type 8 -j DROP", 2),
    ("-A INPUT -p ipv6-icmp --icmpv6-type bogus -j DROP", 2),
    ("-A INPUT -p ipv6-icmp -m icmp6 -j DROP", 2),
    ("-A INPUT -m ipv6header --header tcp -j DROP", 2),
    ("-A INPUT -m ipv6header -j DROP", 2),
    ("-A INPUT -m frag --fragmore --fraglast -j DROP", 2),
    ("-A INPUT -j REJECT --reject-with icmp-port-unreachable", 2),
    // The address types xt_addrtype refuses for IPv6 ("Invalid argument").
    ("-A INPUT -m addrtype --dst-type BROADCAST -j DROP", 4),
    ("-A INPUT -m addrtype --src-type LOCAL,BLACKHOLE -j DROP", 4),
    ("-A INPUT -m addrtype ! --dst-type PROHIBIT -j DROP", 4),
    ("-A INPUT -m addrtype --dst-type XRESOLVE -j DROP", 4),
];

/// What netbeast's IPv6 side refuses until it has it (ip6tables takes them):
/// exit 2, a message saying so, nothing applied.
const NOT_YET: &[&str] = &[
    "-A INPUT -m conntrack --ctproto tcp -j ACCEPT",
    "-t raw -A PREROUTING -j CT --zone 1",
];

/// The listings compared after the commands.
const LISTINGS: &[&str] = &[
    "-S",
    "-S INPUT",
    "-L -n",
    "-L -n -v",
    "-L -n -v -x --line-numbers",
    "-L",
    "-L INPUT 2 -n",
    "-t mangle -S",
    "-t mangle -L -n -v",
    "-t mangle -L",
    "-t raw -S",
    "-t raw -L -n -v -x --line-numbers",
    "-t raw -L",
];

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Save text without the header and footer lines, which name the tool and
/// the time.
fn body(save: &str) -> String {
    save.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn stdout(out: Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `line` run by the real ip6tables in `oracle` and by netbeast's link in
/// `beast`: what is wrong unless both exit with `rc`.
fn exit_codes_differ(
    oracle: &Netns,
    beast: &Netns,
    link: &Path,
    line: &str,
    rc: i32,
) -> Option<String> {
    let want = oracle.run("ip6tables", &words(line)).unwrap();
    let got = beast.run(link, &words(line)).unwrap();
    (code(&want) != rc || code(&got) != rc).then(|| {
        format!(
            "{line}: want rc {rc}; ip6tables {}, netbeast {} ({})",
            code(&want),
            code(&got),
            String::from_utf8_lossy(&got.stderr).trim()
        )
    })
}

fn listing(ns: &Netns, program: &Path, prefix: &[&str], line: &str) -> (i32, String) {
    let args: Vec<&str> = prefix.iter().copied().chain(words(line)).collect();
    let out = ns.run(program, &args).unwrap();
    (code(&out), stdout(out))
}

#[test]
fn commands_listings_and_saves_as_ip6tables() {
    require_root();
    let oracle = Netns::new("ip6-ipt").unwrap();
    let beast = Netns::new("ip6-nb").unwrap().with_netbeast(NETBEAST);
    let links = Links::new("ip6");
    let real = PathBuf::from("ip6tables");
    let link = links.path("ip6tables");
    let v4_before = beast.netbeast_ok(&["iptables", "-S"]).unwrap();

    let mut failures = Vec::new();
    for (i, line) in ACCEPTED.iter().enumerate() {
        let want = oracle.run(&real, &words(line)).unwrap();
        // Alternate the two ways in: the link and `netbeast ip6tables`.
        let got = if i % 2 == 0 {
            beast.run(&link, &words(line)).unwrap()
        } else {
            let args: Vec<&str> = ["ip6tables"].into_iter().chain(words(line)).collect();
            beast.netbeast(&args).unwrap()
        };
        if code(&want) != 0 || code(&got) != 0 {
            failures.push(format!(
                "{line}: ip6tables rc {} ({}), netbeast rc {} ({})",
                code(&want),
                String::from_utf8_lossy(&want.stderr).trim(),
                code(&got),
                String::from_utf8_lossy(&got.stderr).trim()
            ));
        }
    }
    for (line, rc) in REFUSED {
        failures.extend(exit_codes_differ(&oracle, &beast, &link, line, *rc));
    }
    let before = listing(&beast, &link, &[], "-S").1;
    for line in NOT_YET {
        let got = beast.run(&link, &words(line)).unwrap();
        let message = String::from_utf8_lossy(&got.stderr);
        if code(&got) != 2 || !message.contains("not supported for IPv6 yet") {
            failures.push(format!("{line}: rc {} ({})", code(&got), message.trim()));
        }
    }
    assert_eq!(
        listing(&beast, &link, &[], "-S").1,
        before,
        "refused commands applied nothing"
    );
    for line in LISTINGS {
        let want = listing(&oracle, &real, &[], line);
        for (program, prefix) in [
            (link.clone(), vec![]),
            (PathBuf::from(NETBEAST), vec!["ip6tables"]),
        ] {
            let got = listing(&beast, &program, &prefix, line);
            if got != want {
                failures.push(format!(
                    "{line} ({program:?} {prefix:?}):\n--- ip6tables rc {}\n{}--- netbeast rc {}\n{}",
                    want.0, want.1, got.0, got.1
                ));
            }
        }
    }
    let want_save = body(&stdout(
        oracle.run("ip6tables-save", &[] as &[&str]).unwrap(),
    ));
    for (program, args) in [
        (links.path("ip6tables-save"), vec![]),
        (PathBuf::from(NETBEAST), vec!["save", "-6"]),
    ] {
        let got = body(&stdout(beast.run(&program, &args).unwrap()));
        if got != want_save {
            failures.push(format!(
                "save {program:?}:\n--- ip6tables-save\n{want_save}--- netbeast\n{got}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The IPv4 ruleset never moved.
    assert_eq!(beast.netbeast_ok(&["iptables", "-S"]).unwrap(), v4_before);
    assert!(
        !beast.netbeast_ok(&["save"]).unwrap().contains("2001:db8"),
        "iptables-save shows only the IPv4 ruleset"
    );

    // Restore: the oracle's save through ip6tables-restore (flushing
    // first) and `restore -6 --noflush` onto an empty ruleset.
    let oracle_save = stdout(oracle.run("ip6tables-save", &[] as &[&str]).unwrap());
    beast.run_ok(&link, &["-F"]).unwrap();
    beast.run_ok(&link, &["-X"]).unwrap();
    let restore = beast
        .command(links.path("ip6tables-restore"))
        .stdin(std::process::Stdio::piped())
        .spawn();
    let mut child = restore.unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(oracle_save.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "ip6tables-restore");
    for line in ["-S", "-t raw -S"] {
        assert_eq!(
            listing(&beast, &link, &[], line),
            listing(&oracle, &real, &[], line)
        );
    }
    let out = beast
        .netbeast_with_input(
            &["restore", "-6"],
            "*filter\n-A INPUT -s 10.0.0.1 -j DROP\nCOMMIT\n",
        )
        .unwrap();
    assert_eq!(code(&out), 2, "an IPv4 address in an IPv6 restore file");
    assert_eq!(
        listing(&beast, &link, &[], "-S"),
        listing(&oracle, &real, &[], "-S"),
        "a bad restore file applied nothing"
    );
    assert_eq!(beast.netbeast_ok(&["iptables", "-S"]).unwrap(), v4_before);
}

/// `ip6tables -t nat`: its chains, policies, rules, listings and save as
/// ip6tables 1.8.9 makes them; the IPv4 nat table untouched.
#[test]
fn nat_table_as_ip6tables() {
    require_root();
    let oracle = Netns::new("ip6n-ipt").unwrap();
    let beast = Netns::new("ip6n-nb").unwrap().with_netbeast(NETBEAST);
    let links = Links::new("ip6");
    let real = PathBuf::from("ip6tables");
    let link = links.path("ip6tables");
    let v4_before = beast.netbeast_ok(&["iptables", "-t", "nat", "-S"]).unwrap();
    let mut failures = Vec::new();
    for line in [
        "-t nat -N FWD",
        "-t nat -N OTHER",
        "-t nat -P PREROUTING ACCEPT",
        "-t nat -E OTHER RENAMED",
        "-t nat -N GONE",
        "-t nat -X GONE",
        "-t nat -Z",
    ] {
        failures.extend(exit_codes_differ(&oracle, &beast, &link, line, 0));
    }
    for (line, rc) in [
        ("-t nat -P POSTROUTING DROP", 2),
        ("-t nat -A PREROUTING -j DNAT --to-destination 10.0.0.1", 2),
        ("-t nat -A PREROUTING -j DNAT", 2),
        ("-t nat -A NOCHAIN -j ACCEPT", 1),
    ] {
        failures.extend(exit_codes_differ(&oracle, &beast, &link, line, rc));
    }
    // The translations of PREROUTING and POSTROUTING, as ip6tables takes,
    // lists and saves them.
    for line in [
        "-t nat -A PREROUTING -p tcp --dport 80 -j DNAT --to-destination [fd00::2]:8080",
        "-t nat -A PREROUTING -p udp --dport 53 -j DNAT --to-destination fd00::2-fd00::9",
        "-t nat -A PREROUTING -i eth0 -p tcp --dport 8080 -j REDIRECT --to-ports 80",
        "-t nat -A FWD -p tcp -j DNAT --to-destination [fd00::3]:1000-2000/3000",
        "-t nat -A PREROUTING -d fd00::1/128 -j FWD",
        "-t nat -A POSTROUTING -s fd00:a::/64 -o eth1 -p tcp -j MASQUERADE --to-ports 1024-2047",
        "-t nat -A POSTROUTING -s fd00:b::/64 -p udp -j SNAT --to-source [fd00::1-fd00::4]:2000-3000 --random",
        "-t nat -A POSTROUTING -o eth1 -j MASQUERADE",
        "-t nat -A OUTPUT -d fd00::1/128 -p tcp --dport 80 -j DNAT --to-destination [fd00::2]:8080",
        "-t nat -A OUTPUT -o lo -p udp --dport 53 -j REDIRECT --to-ports 5353",
    ] {
        failures.extend(exit_codes_differ(&oracle, &beast, &link, line, 0));
    }
    // nat OUTPUT's rules see no packet: a match only a packet has is
    // refused there (ip6tables takes it), nothing applied.
    let before = listing(&beast, &link, &[], "-t nat -S").1;
    let got = beast
        .run(&link, &words("-t nat -A OUTPUT -m hl --hl-eq 1 -j ACCEPT"))
        .unwrap();
    let message = String::from_utf8_lossy(&got.stderr);
    if code(&got) == 0 || !message.contains("nat OUTPUT cannot see") {
        failures.push(format!(
            "a nat OUTPUT rule on the hop limit: rc {} ({})",
            code(&got),
            message.trim()
        ));
    }
    assert_eq!(
        listing(&beast, &link, &[], "-t nat -S").1,
        before,
        "a refused rule applied nothing"
    );
    for line in [
        "-t nat -S",
        "-t nat -L -n -v",
        "-t nat -L",
        "-t nat -L FWD -n",
    ] {
        let want = listing(&oracle, &real, &[], line);
        let got = listing(&beast, &link, &[], line);
        if got != want {
            failures.push(format!(
                "{line}:\n--- ip6tables rc {}\n{}--- netbeast rc {}\n{}",
                want.0, want.1, got.0, got.1
            ));
        }
    }
    // ip6tables-save prints the tables in use: netbeast always has its
    // filter table, so only the nat section is compared.
    let nat_section = |save: String| {
        let body = body(&save);
        body.find("*nat").map(|at| body[at..].to_string())
    };
    let want = nat_section(stdout(
        oracle.run("ip6tables-save", &[] as &[&str]).unwrap(),
    ));
    let got = nat_section(beast.netbeast_ok(&["save", "-6"]).unwrap());
    if want.is_none() || got != want {
        failures.push(format!(
            "save:\n--- ip6tables-save\n{want:?}\n--- netbeast\n{got:?}"
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        beast.netbeast_ok(&["iptables", "-t", "nat", "-S"]).unwrap(),
        v4_before,
        "the IPv4 nat table never moved"
    );
    // The saved section restores (flushing), through the link and `-T nat`.
    let saved = beast.netbeast_ok(&["save", "-6", "-t", "nat"]).unwrap();
    beast.run_ok(&link, &["-t", "nat", "-F"]).unwrap();
    beast.run_ok(&link, &["-t", "nat", "-X"]).unwrap();
    let out = beast
        .netbeast_with_input(&["restore", "-6", "-T", "nat"], &saved)
        .unwrap();
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        listing(&beast, &link, &[], "-t nat -S"),
        listing(&oracle, &real, &[], "-t nat -S")
    );
}
