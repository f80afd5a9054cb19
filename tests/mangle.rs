//! Network tests of the mangle table's built-in chains (issue 18): each
//! runs where the kernel's mangle hook is (after conntrack, before nat
//! and filter at the same hook): PREROUTING and INPUT/FORWARD at XDP
//! ingress, POSTROUTING for forwarded packets there too, OUTPUT and
//! POSTROUTING for the host's packets at TC egress. A mark set in mangle
//! is what the filter table's `-m mark` sees; a DROP (rule or policy)
//! drops; ACCEPT ends only the mangle chain. Rule counters are compared
//! with the kernel's. Every scenario also runs against the kernel's
//! iptables (`iptables_oracle`).
//!
//! Needs root. Run: `cargo test -p netbeast --test mangle`.

use std::{net::SocketAddrV4, time::Duration};

use netbeast::netns::{
    ConnectOutcome::{self, Connected, Refused, Reset, TimedOut},
    Firewall, IcmpError, Netns, ROUTED_SERVER_ADDR, ROUTER_CLIENT_ADDR, Routed, Testbed,
    require_root, tcp_connect_all, tcp_server,
};

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
/// A dropped SYN costs one timeout; an answered one takes microseconds.
const TIMEOUT: Duration = Duration::from_secs(1);

include!("support/scenario.rs");

/// Connects from `client` to every address at once and checks each
/// outcome; `ruleset` is shown when one is wrong.
fn expect(
    client: &Netns,
    when: &str,
    expected: &[(SocketAddrV4, ConnectOutcome)],
    ruleset: impl Fn() -> String,
) {
    let addrs: Vec<SocketAddrV4> = expected.iter().map(|(a, _)| *a).collect();
    let outcomes = tcp_connect_all(client, &addrs, TIMEOUT).unwrap();
    assert_outcomes(when, "", expected, &outcomes, ruleset);
}

/// The packet counts of `chain`'s rules in the mangle table, in order, as
/// `iptables -t mangle -L CHAIN -v -x -n` prints them.
fn packet_counts(firewall: &Firewall, host: &Netns, chain: &str) -> Vec<u64> {
    let listing = firewall
        .iptables_ok(host, &format!("-t mangle -L {chain} -v -x -n"))
        .unwrap_or_else(|e| panic!("listing mangle {chain}: {e}"));
    listing
        .lines()
        .skip(2)
        .map(|l| {
            l.split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no packet count in {l:?}:\n{listing}"))
        })
        .collect()
}

/// On the host: a mark set in mangle PREROUTING is what filter INPUT's
/// `-m mark` reads (8080 accepted by it, 7070 without it reset); mangle
/// INPUT's DROP drops (9090); an ACCEPT in mangle PREROUTING ends that
/// chain only (6060: the DROP after it is not reached, filter's REJECT
/// still is); a mark set in mangle OUTPUT is what filter OUTPUT reads
/// (5050's SYN-ACK gets out only with it); mangle POSTROUTING's DROP
/// drops the host's replies (4040). SYN-only rules count one packet per
/// connection, as in the kernel.
fn host_chains(firewall: Firewall) {
    require_root();
    let bed = Testbed::new("mangle-host", firewall)
        .unwrap_or_else(|e| panic!("setting up the testbed: {e}"));
    let servers: Vec<_> = [8080, 7070, 9090, 6060, 5050, 4040]
        .into_iter()
        .map(|p| tcp_server(bed.server(), p).unwrap())
        .collect();
    let at = |p| bed.net.server_addr(p);
    let ruleset = || {
        let mangle = bed.iptables_ok("-t mangle -S").unwrap_or_default();
        format!("{mangle}{}", bed.save().unwrap_or_default())
    };
    for line in [
        "-t mangle -A PREROUTING -p tcp --dport 8080 -j MARK --set-mark 0x5",
        "-t mangle -A PREROUTING -p tcp --syn --dport 8080",
        "-t mangle -A PREROUTING -p tcp --dport 6060 -j ACCEPT",
        "-t mangle -A PREROUTING -p tcp --dport 6060 -j DROP",
        "-t mangle -A INPUT -p tcp --dport 9090 -j DROP",
        "-t mangle -A INPUT -p tcp --syn -m multiport --dports 8080,7070,6060,5050",
        "-t mangle -A OUTPUT -p tcp --sport 5050 -j MARK --set-mark 0x7",
        "-t mangle -A POSTROUTING -p tcp --sport 4040 -j DROP",
        "-A INPUT -p tcp -m multiport --dports 8080,7070 -m mark --mark 0x5 -j ACCEPT",
        "-A INPUT -p tcp -m multiport --dports 8080,7070,6060 -j REJECT --reject-with tcp-reset",
        "-A OUTPUT -p tcp --sport 5050 -m mark ! --mark 0x7 -j DROP",
    ] {
        if let Err(e) = bed.iptables_ok(line) {
            panic!("{line}: {e}");
        }
    }
    let expected = [
        (at(8080), Connected),
        (at(7070), Reset),
        (at(9090), TimedOut),
        (at(6060), Reset),
        (at(5050), Connected),
        (at(4040), TimedOut),
    ];
    expect(bed.client(), "mangle rules on the host", &expected, ruleset);
    // Twice more for the counters, with the answered ports only (a
    // dropped SYN may be sent again within the timeout): the SYN-only
    // rules count each connection's SYN once. mangle INPUT's counts 6060's
    // too: mangle PREROUTING's ACCEPT ended only that chain.
    let answered = [
        (at(8080), Connected),
        (at(7070), Reset),
        (at(6060), Reset),
        (at(5050), Connected),
    ];
    expect(bed.client(), "again", &answered, ruleset);
    expect(bed.client(), "a third time", &answered, ruleset);
    let prerouting = packet_counts(&bed.firewall, bed.server(), "PREROUTING");
    assert_eq!(
        prerouting[1],
        3,
        "mangle PREROUTING's SYN counter:\n{}",
        ruleset()
    );
    let input = packet_counts(&bed.firewall, bed.server(), "INPUT");
    assert_eq!(
        input[1],
        3 * 4,
        "mangle INPUT's SYN counter (4 ports, 3 times):\n{}",
        ruleset()
    );
    // Without the mangle OUTPUT mark, filter OUTPUT drops 5050's replies.
    bed.iptables_ok("-t mangle -F OUTPUT").unwrap();
    expect(
        bed.client(),
        "without the mangle OUTPUT mark",
        &[(at(5050), TimedOut), (at(8080), Connected)],
        ruleset,
    );
    drop(servers);
}

scenario!(host_chains);

/// On the router: mangle FORWARD's DROP drops a forwarded connection
/// (443) and a mark set in mangle PREROUTING is what filter FORWARD's
/// `-m mark` reads (22, rejected by it); mangle POSTROUTING drops a
/// forwarded packet filter FORWARD accepted (8443); mangle INPUT sees the
/// router's own traffic only (its port 22). mangle FORWARD's DROP policy
/// drops every forwarded connection and none to the router itself.
fn router_chains(firewall: Firewall) {
    require_root();
    let bed = Routed::new("mangle-fwd", firewall).unwrap_or_else(|e| panic!("setting up: {e}"));
    let _router_servers = [22].map(|port| tcp_server(&bed.router, port).unwrap());
    let _servers = [22, 80, 443, 8443].map(|port| tcp_server(&bed.server, port).unwrap());
    let router = |port| SocketAddrV4::new(ROUTER_CLIENT_ADDR, port);
    let server = |port| SocketAddrV4::new(ROUTED_SERVER_ADDR, port);
    let ruleset = || {
        bed.firewall
            .iptables_ok(&bed.router, "-t mangle -S")
            .unwrap_or_default()
            + &bed.firewall.save(&bed.router).unwrap_or_default()
    };
    for line in [
        "-t mangle -A PREROUTING -p tcp --dport 22 -j MARK --set-mark 0x9",
        "-t mangle -A FORWARD -p tcp --dport 443 -j DROP",
        "-t mangle -A FORWARD -p tcp --syn -m multiport --dports 22,80",
        "-t mangle -A INPUT -p tcp --dport 22 -j DROP",
        "-t mangle -A POSTROUTING -p tcp --dport 8443 -j DROP",
        "-A FORWARD -p tcp --dport 22 -m mark --mark 0x9 -j REJECT",
    ] {
        bed.iptables_ok(line)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    let expected = [
        (router(22), TimedOut),
        (server(22), Refused(IcmpError::PORT_UNREACHABLE)),
        (server(80), Connected),
        (server(443), TimedOut),
        (server(8443), TimedOut),
    ];
    expect(
        &bed.client,
        "mangle rules on the router",
        &expected,
        ruleset,
    );
    // The SYN counter of mangle FORWARD: 22's and 80's SYNs (both
    // answered at once), twice; the router's own port 22 is INPUT's.
    let answered = [
        (server(22), Refused(IcmpError::PORT_UNREACHABLE)),
        (server(80), Connected),
    ];
    expect(&bed.client, "again", &answered, ruleset);
    let forward = packet_counts(&bed.firewall, &bed.router, "FORWARD");
    assert_eq!(
        forward[1],
        4,
        "mangle FORWARD's SYN counter:\n{}",
        ruleset()
    );
    bed.iptables_ok("-t mangle -F").unwrap();
    bed.iptables_ok("-t mangle -P FORWARD DROP").unwrap();
    expect(
        &bed.client,
        "mangle FORWARD policy DROP",
        &[
            (router(22), Connected),
            (server(80), TimedOut),
            (server(22), TimedOut),
        ],
        ruleset,
    );
    bed.iptables_ok("-t mangle -P FORWARD ACCEPT").unwrap();
    expect(
        &bed.client,
        "mangle FORWARD policy ACCEPT again",
        &[(server(80), Connected), (server(22), Connected)],
        ruleset,
    );
}

scenario!(router_chains);

/// A mark given in mangle PREROUTING is the mark the kernel's stack sees
/// after the chains (skb->mark), as with iptables: a listener with
/// `tcp_fwmark_accept` gives its accepted socket the SYN's mark. netbeast
/// hands it from XDP to its TC ingress program (the hand-off's tag in the
/// frame's source MAC), which sets it.
fn the_mark_reaches_the_stack(firewall: Firewall) {
    use std::{net::TcpListener, os::fd::AsRawFd};
    require_root();
    let bed = Testbed::new("mangle-mark", firewall)
        .unwrap_or_else(|e| panic!("setting up the testbed: {e}"));
    bed.server()
        .sysctl("net.ipv4.tcp_fwmark_accept", "1")
        .unwrap();
    let listener = bed
        .server()
        .in_netns(|| TcpListener::bind(("0.0.0.0", 8080)))
        .unwrap()
        .unwrap();
    bed.iptables_ok("-t mangle -A PREROUTING -p tcp --dport 8080 -j MARK --set-mark 0x2a")
        .unwrap_or_else(|e| panic!("{e}"));
    let accepted = std::thread::spawn(move || {
        let (socket, _) = listener.accept().unwrap();
        let mut mark: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid socket and an int-sized buffer.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_MARK,
                (&mut mark as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "getsockopt(SO_MARK)");
        mark
    });
    let at = bed.net.server_addr(8080);
    expect(
        bed.client(),
        "a marked connection",
        &[(at, Connected)],
        || bed.save().unwrap_or_default(),
    );
    assert_eq!(accepted.join().unwrap(), 0x2a, "the accepted socket's mark");
}

scenario!(the_mark_reaches_the_stack);

/// A client MAC that starts like netbeast's hand-off tags (`06:6e`, a
/// locally administered MAC may; this one would be CPU 0, slot 0,
/// sequence 0xffff): the server's stack sees it unchanged on every frame,
/// with no mark but the one the rules give, as with iptables. netbeast's
/// XDP program gives such a frame a restore-only tag of its own when it
/// passes it up untagged (`stats` `tag_lookalike`), so its TC ingress
/// program cannot take the MAC for another frame's tag
/// (`tests/program.rs` `frames_whose_mac_looks_like_a_tag_keep_it` forges
/// a live one).
fn a_mac_like_a_tag_reaches_the_stack(firewall: Firewall) {
    use netbeast::netns::{CLIENT_ADDR, CLIENT_IFACE, wait_for};
    const MAC: &str = "06:6e:00:00:ff:ff";
    require_root();
    let netbeast = firewall.is_netbeast();
    let bed = Testbed::new("mangle-lookalike", firewall)
        .unwrap_or_else(|e| panic!("setting up the testbed: {e}"));
    bed.client()
        .ip(&["link", "set", "dev", CLIENT_IFACE, "address", MAC])
        .unwrap();
    bed.iptables_ok("-t mangle -A PREROUTING -p tcp --dport 8080 -j MARK --set-mark 0x2a")
        .unwrap_or_else(|e| panic!("{e}"));
    // What the server's stack sees, after every ingress program: the
    // kernel's nftables in the server's namespace counts it.
    let nft = |args: &str| {
        let args: Vec<&str> = args.split_whitespace().collect();
        bed.server().run_ok("nft", &args).unwrap()
    };
    nft("add table ip nbt");
    nft("add chain ip nbt in { type filter hook input priority 0 ; }");
    for rule in [
        "tcp dport 8081 counter",
        &format!("tcp dport 8081 ether saddr {MAC} meta mark 0 counter"),
        "tcp dport 8080 counter",
        &format!("tcp dport 8080 ether saddr {MAC} meta mark 0x2a counter"),
    ] {
        nft(&format!("add rule ip nbt in {rule}"));
    }
    let counts = || -> Vec<u64> {
        nft("list chain ip nbt in")
            .split("counter packets ")
            .skip(1)
            .map(|s| s.split_whitespace().next().unwrap().parse().unwrap())
            .collect()
    };
    let _servers = [8080, 8081].map(|port| tcp_server(bed.server(), port).unwrap());
    let lookalikes = || {
        let text = bed.server().netbeast_ok(&["stats", "--json"]).unwrap();
        let stats: serde_json::Value = serde_json::from_str(&text).unwrap();
        stats["tag_lookalike"]
            .as_u64()
            .expect("a tag_lookalike statistic")
    };
    let before = if netbeast { lookalikes() } else { 0 };
    for _ in 0..3 {
        expect(
            bed.client(),
            "connections from a MAC like a tag",
            &[
                (bed.net.server_addr(8080), Connected),
                (bed.net.server_addr(8081), Connected),
            ],
            || bed.save().unwrap_or_default(),
        );
    }
    // Each connection's last frames may still be on their way.
    let seen = wait_for(Duration::from_secs(2), || {
        let c = counts();
        (c[0] == c[1] && c[2] == c[3] && c[0] >= 6 && c[2] >= 6).then_some(c)
    });
    let c = counts();
    assert!(
        seen.is_some(),
        "frames to 8081 / with {MAC} and no mark: {} / {}; to 8080 / with {MAC} and mark 0x2a: \
         {} / {}",
        c[0],
        c[1],
        c[2],
        c[3]
    );
    let neigh = bed
        .server()
        .ip(&["neigh", "show", &CLIENT_ADDR.to_string()])
        .unwrap();
    assert!(neigh.contains(MAC), "the server's neighbour entry: {neigh}");
    if netbeast {
        // Every unmarked frame from the client got the restore-only tag
        // (its ARP frames too); the marked ones carried the mark's.
        let tagged = lookalikes() - before;
        assert!(
            tagged >= c[0],
            "tag_lookalike {tagged}, below the {} unmarked frames",
            c[0]
        );
    }
}

scenario!(a_mac_like_a_tag_reaches_the_stack);
