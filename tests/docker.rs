//! Docker's rulesets on netbeast (issue 18): Docker 24's and Docker 28's
//! saved rulesets (`tests/fixtures/docker/`, IPv4 and IPv6, in the exact
//! shape `iptables-save` prints them) restore, save back byte for byte as
//! the kernel's iptables-save prints the same file, and do Docker's job on
//! real packets: a host namespace running the firewall, a "container"
//! namespace behind the host's `docker0` (a veth), and a client outside.
//! The published port (host 8080 -> container 80, nat DOCKER's DNAT after
//! `-m addrtype --dst-type LOCAL`) is reachable, an unpublished one is not,
//! the container's own connections out are masqueraded, and Docker 28's
//! raw-table drop stops direct routing to the container from outside.
//! Every scenario runs with netbeast and with the kernel's iptables as the
//! oracle, with the same expectations.
//!
//! Needs root and the `ipset` package. Run: `cargo test -p netbeast --test docker`.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use netbeast::netns::{
    ConnectOutcome::{self, Connected, Reset, TimedOut},
    Firewall, Netns, comparable_save, peer_server, read_peer_line, require_root, tcp_connect_all,
    tcp_server, tcp_stream, veth_pair,
};

const NETBEAST: &str = env!("CARGO_BIN_EXE_netbeast");
/// A dropped SYN costs one timeout; an answered one takes microseconds.
const TIMEOUT: Duration = Duration::from_secs(1);

include!("support/scenario.rs");

const DOCKER24: &str = include_str!("fixtures/docker/docker24.rules");
const DOCKER24_V6: &str = include_str!("fixtures/docker/docker24-v6.rules");
const DOCKER28: &str = include_str!("fixtures/docker/docker28.rules");
const DOCKER28_V6: &str = include_str!("fixtures/docker/docker28-v6.rules");

/// The ipsets Docker 28 keeps its bridges in (its DOCKER-FORWARD rules
/// match them), as Docker creates them.
const DOCKER28_SETS: [&str; 2] = [
    "create docker-ext-bridges-v4 hash:net",
    "create docker-ext-bridges-v6 hash:net family inet6",
];

/// The topology: client (outside) — host (the firewall; `nbt-h0` outside,
/// `docker0` to the container) — container.
const CLIENT_IFACE: &str = "nbt-c";
const HOST_OUT_IFACE: &str = "nbt-h0";
const BRIDGE: &str = "docker0";
const CONTAINER_IFACE: &str = "nbt-ct";
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 199, 1, 2);
const HOST: Ipv4Addr = Ipv4Addr::new(10, 199, 1, 1);
const BRIDGE_ADDR: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
/// The container's address in the fixtures.
const CONTAINER: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 2);
/// The fixtures publish the container's port 80 as the host's 8080.
const PUBLISHED: u16 = 8080;
const CONTAINER_PORT: u16 = 80;
/// A port the container listens on that no rule publishes.
const UNPUBLISHED: u16 = 81;
/// The client's server, for the container's connections out.
const CLIENT_PORT: u16 = 7000;

struct Docker {
    client: Netns,
    host: Netns,
    container: Netns,
    firewall: Firewall,
}

impl Docker {
    fn new(tag: &str, firewall: Firewall) -> Docker {
        require_root();
        let setup = || -> netbeast::netns::Result<Docker> {
            let client = Netns::new(&format!("{tag}-c"))?;
            let host = firewall.guard(Netns::new(&format!("{tag}-h"))?);
            let container = Netns::new(&format!("{tag}-ct"))?;
            veth_pair(
                &client,
                CLIENT_IFACE,
                &format!("{CLIENT}/24"),
                &host,
                HOST_OUT_IFACE,
                &format!("{HOST}/24"),
            )?;
            veth_pair(
                &host,
                BRIDGE,
                &format!("{BRIDGE_ADDR}/16"),
                &container,
                CONTAINER_IFACE,
                &format!("{CONTAINER}/16"),
            )?;
            host.sysctl("net.ipv4.ip_forward", "1")?;
            container.add_route("default", BRIDGE_ADDR)?;
            // Direct routing: a client that routes the container's
            // network through the host, which Docker 28 guards against.
            client.add_route("172.17.0.0/16", HOST)?;
            firewall.attach(&host, &[HOST_OUT_IFACE, BRIDGE])?;
            Ok(Docker {
                client,
                host,
                container,
                firewall,
            })
        };
        setup().unwrap_or_else(|e| panic!("setting up the Docker topology: {e}"))
    }

    /// `ipset ARGS` in the host: netbeast's under netbeast, the real one
    /// under iptables.
    fn ipset(&self, args: &str) {
        let args: Vec<&str> = args.split_whitespace().collect();
        let result = if self.firewall.is_netbeast() {
            let mut argv = vec!["ipset"];
            argv.extend(&args);
            self.host.netbeast_ok(&argv)
        } else {
            self.host.run_ok("ipset", &args)
        };
        if let Err(e) = result {
            panic!("ipset {}: {e}", args.join(" "));
        }
    }

    /// Restores `rules` in the host as `iptables-restore` (or
    /// `ip6tables-restore` with `v6`) would; any outcome.
    fn restore(&self, rules: &str, v6: bool) -> std::process::Output {
        self.firewall
            .restore_family(&self.host, v6, &[], rules)
            .unwrap_or_else(|e| panic!("restoring: {e}"))
    }

    /// The host's whole ruleset as `iptables-save` (`ip6tables-save`) prints it.
    fn save(&self, v6: bool) -> String {
        self.firewall
            .save_all(&self.host, v6, false)
            .unwrap_or_else(|e| panic!("saving the ruleset: {e}"))
    }

    fn restore_ok(&self, rules: &str) {
        let out = self.restore(rules, false);
        assert!(
            out.status.success(),
            "restoring Docker's ruleset: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Connects from `from` to every address at once and checks each outcome.
    fn expect(&self, from: &Netns, when: &str, expected: &[(SocketAddrV4, ConnectOutcome)]) {
        let addrs: Vec<SocketAddrV4> = expected.iter().map(|(a, _)| *a).collect();
        let outcomes = tcp_connect_all(from, &addrs, TIMEOUT).unwrap();
        let when = format!("{when} ({})", from.name());
        assert_outcomes(&when, "", expected, &outcomes, || self.save(false));
    }

    /// The address the client's server sees when the container connects
    /// to it.
    fn container_seen_as(&self) -> SocketAddrV4 {
        let server = SocketAddrV4::new(CLIENT, CLIENT_PORT);
        let mut stream = tcp_stream(&self.container, None, server, TIMEOUT)
            .unwrap()
            .unwrap_or_else(|outcome| {
                panic!(
                    "container -> {server}: {outcome}, expected a connection\n{}",
                    self.save(false)
                )
            });
        read_peer_line(&mut stream, TIMEOUT)
            .unwrap_or_else(|e| panic!("container -> {server}: {e}"))
    }
}

/// Which Docker: its ruleset and what direct routing to the container's
/// published port (from outside, not through the DNAT) comes to.
#[derive(Clone, Copy)]
enum Version {
    /// Docker 24: the FORWARD chain's DOCKER rule accepts the container's
    /// published port whoever routes to it.
    D24,
    /// Docker 28: the raw table drops it before conntrack.
    D28,
}

impl Version {
    fn rules(self) -> &'static str {
        match self {
            Version::D24 => DOCKER24,
            Version::D28 => DOCKER28,
        }
    }

    fn direct_to_published(self) -> ConnectOutcome {
        match self {
            Version::D24 => Connected,
            Version::D28 => TimedOut,
        }
    }
}

/// The published port through the host, the unpublished one (through the
/// host and routed directly), the container's port routed directly, the
/// host's own connection to its published port (nat OUTPUT's DNAT), and
/// the container going out as the host (MASQUERADE).
fn docker_forwards(version: Version, firewall: Firewall) {
    let docker = Docker::new("docker", firewall);
    let _published = tcp_server(&docker.container, CONTAINER_PORT).unwrap();
    let _unpublished = tcp_server(&docker.container, UNPUBLISHED).unwrap();
    let _client_server = peer_server(
        &docker.client,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT),
    )
    .unwrap();
    if matches!(version, Version::D28) {
        docker.ipset(DOCKER28_SETS[0]);
        docker.ipset("add docker-ext-bridges-v4 172.17.0.0/16");
    }
    // Before Docker's rules, the container's own address answers from
    // outside and its connections out keep their source.
    assert_eq!(docker.container_seen_as().ip(), &CONTAINER, "without rules");
    docker.restore_ok(version.rules());
    docker.expect(
        &docker.client,
        "from outside",
        &[
            (SocketAddrV4::new(HOST, PUBLISHED), Connected),
            (SocketAddrV4::new(HOST, UNPUBLISHED), Reset),
            (
                SocketAddrV4::new(CONTAINER, CONTAINER_PORT),
                version.direct_to_published(),
            ),
            (SocketAddrV4::new(CONTAINER, UNPUBLISHED), TimedOut),
        ],
    );
    docker.expect(
        &docker.host,
        "from the host itself",
        &[(SocketAddrV4::new(HOST, PUBLISHED), Connected)],
    );
    assert_eq!(
        docker.container_seen_as().ip(),
        &HOST,
        "the container's connection out is not masqueraded as the host"
    );
}

fn docker24_forwards(firewall: Firewall) {
    docker_forwards(Version::D24, firewall);
}

fn docker28_forwards(firewall: Firewall) {
    docker_forwards(Version::D28, firewall);
}

scenario!(docker24_forwards);
scenario!(docker28_forwards);

/// The fixtures as they restore and save back on netbeast and on the
/// kernel's iptables, each in its own host.
fn restored_and_saved(firewall: Firewall, rules: &str, v6: bool) -> Result<String, String> {
    let docker = Docker::new("docker-save", firewall);
    for set in DOCKER28_SETS {
        docker.ipset(set);
    }
    let out = docker.restore(rules, v6);
    if out.status.success() {
        Ok(comparable_save(&docker.save(v6)))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// IPv4: both versions restore on netbeast and save back exactly as the
/// kernel's iptables-save prints the same file (its table order, chain
/// order, every match as iptables prints it) — which is the file itself.
#[test]
fn ipv4_rulesets_save_back_as_iptables_save_prints_them() {
    for (name, rules) in [("Docker 24", DOCKER24), ("Docker 28", DOCKER28)] {
        let netbeast = restored_and_saved(Firewall::netbeast(NETBEAST), rules, false)
            .unwrap_or_else(|e| panic!("{name}: netbeast refused the ruleset: {e}"));
        let iptables = restored_and_saved(Firewall::Iptables, rules, false)
            .unwrap_or_else(|e| panic!("{name}: iptables refused the ruleset: {e}"));
        assert_eq!(netbeast, iptables, "{name}: netbeast's save differs");
        assert_eq!(
            netbeast,
            comparable_save(rules),
            "{name}: the fixture is not what iptables-save prints"
        );
    }
}

/// IPv6: Docker's IPv6 rulesets restore and save back as ip6tables-save
/// prints them: their raw and filter tables on their own (Docker 28's raw
/// table drops direct routing to the container), then the whole files, nat
/// table included (`-m addrtype --dst-type LOCAL`, nat OUTPUT).
#[test]
fn ipv6_rulesets_restore_and_save_as_ip6tables() {
    for (name, rules) in [("Docker 24", DOCKER24_V6), ("Docker 28", DOCKER28_V6)] {
        let known = sections(rules, &["raw", "filter"]);
        assert_eq!(
            known.contains("*raw"),
            name == "Docker 28",
            "{name}: the fixture's tables"
        );
        let netbeast = restored_and_saved(Firewall::netbeast(NETBEAST), &known, true)
            .unwrap_or_else(|e| panic!("{name}: netbeast refused the raw and filter tables: {e}"));
        let iptables = restored_and_saved(Firewall::Iptables, &known, true)
            .unwrap_or_else(|e| panic!("{name}: ip6tables refused the raw and filter tables: {e}"));
        assert_eq!(
            netbeast, iptables,
            "{name}: netbeast's ip6tables-save differs"
        );

        let whole_real = restored_and_saved(Firewall::Iptables, rules, true).unwrap();
        assert_eq!(whole_real, comparable_save(rules), "{name}: fixture shape");
        let docker = Docker::new("docker-v6", Firewall::netbeast(NETBEAST));
        for set in DOCKER28_SETS {
            docker.ipset(set);
        }
        // The whole file, nat table included (its `-m addrtype` and nat
        // OUTPUT run for IPv6 too), as ip6tables-save prints it.
        let out = docker.restore(rules, true);
        assert!(
            out.status.success(),
            "{name}: the whole IPv6 file refused: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(comparable_save(&docker.save(true)), whole_real, "{name}");
    }
}

/// The file's sections of the tables `tables`, in the file's order.
fn sections(rules: &str, tables: &[&str]) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in rules.lines() {
        if let Some(table) = line.strip_prefix('*') {
            inside = tables.contains(&table);
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
        if line == "COMMIT" {
            inside = false;
        }
    }
    out
}
