//! Real-world iptables-save files (tests/fixtures/iptables-save): the
//! shapes Docker and typical host firewalls produce. Each one restores, or
//! is refused with the line and the exact reason; what restores also saves
//! back to itself, compiles, and classifies packets as iptables would.

use std::net::Ipv4Addr;

use netbeast_common::{addr_type, chain, ct_state};

use super::model::{Family, Ruleset, Target};
use super::save::{
    apply_restore, parse_restore, parse_restore_family, parse_restore_table, save, save_family,
};
use super::target::nat::nat_to_text;
use crate::compile::{self, GuardState, Interface, L4Header, PacketView, reference};

const DOCKER_FILTER: &str =
    include_str!("../../../tests/fixtures/iptables-save/docker-filter.rules");
const DOCKER_LEGACY: &str =
    include_str!("../../../tests/fixtures/iptables-save/docker-legacy.rules");
const DOCKER_NFT: &str = include_str!("../../../tests/fixtures/iptables-save/docker-nft.rules");
const HOST: &str = include_str!("../../../tests/fixtures/iptables-save/host-firewall.rules");
const HOST_LOGGING: &str =
    include_str!("../../../tests/fixtures/iptables-save/host-firewall-logging.rules");
const UFW: &str = include_str!("../../../tests/fixtures/iptables-save/ufw.rules");

fn restore(text: &str) -> Result<Ruleset, String> {
    let file = parse_restore(text).map_err(|e| e.to_string())?;
    let mut ruleset = Ruleset::default();
    apply_restore(&mut ruleset, &file, false).map_err(|e| e.to_string())?;
    Ok(ruleset)
}

/// `restore -T filter` (without `-c`: counters start from zero).
fn restore_filter_only(text: &str) -> Ruleset {
    let mut file = parse_restore_table(text, Some("filter")).unwrap();
    file.strip_counters();
    let mut ruleset = Ruleset::default();
    apply_restore(&mut ruleset, &file, false).unwrap();
    ruleset
}

/// The rule lines of a save (what both sides must agree on; headers carry
/// dates and chain lines counters).
fn rule_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect()
}

fn interfaces() -> Vec<Interface> {
    [
        (1, "lo"),
        (2, "eth0"),
        (3, "docker0"),
        (4, "br-5c1a0f3e2d41"),
        (5, "veth1a2b3c"),
    ]
    .into_iter()
    .map(|(ifindex, name)| Interface {
        ifindex,
        name: name.to_string(),
    })
    .collect()
}

fn tcp(src: [u8; 4], dst: [u8; 4], dport: u16, iface_in: u32, iface_out: u32) -> PacketView {
    PacketView {
        src: Ipv4Addr::from(src),
        dst: Ipv4Addr::from(dst),
        addr6: None,
        protocol: 6,
        fragment_offset_nonzero: false,
        l4: Some(L4Header::Ports {
            source: 40000,
            destination: dport,
        }),
        in_ifindex: iface_in,
        out_ifindex: iface_out,
        mac_source: [0x02, 0, 0, 0, 0, 0x42],
        ct_state: ct_state::NEW,
        header: Default::default(),
    }
}

/// What happens to `pkt` in built-in `chain` (filter or nat, either
/// family): the verdict's name and the rules acted on, by the reference
/// (iptables' walk), after checking that the compiled classifier acts on
/// the same rules.
fn verdict(ruleset: &Ruleset, chain: u32, pkt: &PacketView) -> (String, Vec<String>) {
    let compiled = compile::compile(ruleset, &interfaces(), 0).expect("compiles");
    let mut guards = (GuardState::default(), GuardState::default());
    guarded_verdict(ruleset, &compiled, chain, pkt, &mut guards)
}

/// [`verdict`] of a packet in a sequence: stateful matches (statistic,
/// recent) decided by the reference's `guards.0` and the compiled
/// classifier's `guards.1`, which the same packets keep in step.
fn guarded_verdict(
    ruleset: &Ruleset,
    compiled: &compile::CompiledRuleset,
    chain: u32,
    pkt: &PacketView,
    guards: &mut (GuardState, GuardState),
) -> (String, Vec<String>) {
    let (family, table, name) = compile::BUILTIN_CHAINS[chain as usize];
    let table = ruleset.table_in(family, table);
    let want = reference::classify_table_with(table, name, &interfaces(), pkt, &mut guards.0);
    assert_eq!(
        compiled.classify_with(chain, pkt, &mut guards.1),
        want,
        "{name} {pkt:?}"
    );
    let target = want
        .last()
        .map(|hit| &table.chain(&hit.chain).unwrap().rules[hit.rule].target);
    let verdict = match target {
        Some(Target::Accept) => "ACCEPT".to_string(),
        Some(Target::Drop) => "DROP".to_string(),
        Some(Target::Reject(with)) => format!("REJECT {}", with.as_str()),
        Some(Target::Dnat { to, .. }) => format!("DNAT {}", nat_to_text(to)),
        Some(Target::Masquerade { .. }) => "MASQUERADE".to_string(),
        _ => format!("policy {:?}", table.chain(name).unwrap().policy.unwrap()),
    };
    (verdict, want.iter().map(|h| h.to_string()).collect())
}

#[test]
fn docker_filter_table_restores_and_saves_back() {
    let ruleset = restore(DOCKER_FILTER).unwrap();
    assert_eq!(
        rule_lines(&save(&ruleset, false)),
        rule_lines(DOCKER_FILTER)
    );
    let text = save(&ruleset, true);
    assert_eq!(restore(&text).unwrap(), ruleset);
}

#[test]
fn docker_forwarding_behaves_like_iptables() {
    let ruleset = restore(DOCKER_FILTER).unwrap();
    let (eth0, docker0) = (2, 3);
    let container = [172, 17, 0, 2];
    // A new connection from outside to the published port: DOCKER-USER and
    // the isolation stage return, DOCKER accepts.
    let (v, hits) = verdict(
        &ruleset,
        chain::FORWARD,
        &tcp([198, 51, 100, 1], container, 80, eth0, docker0),
    );
    assert_eq!(v, "ACCEPT");
    assert_eq!(
        hits,
        [
            "FORWARD rule 1",
            "DOCKER-USER rule 1",
            "FORWARD rule 2",
            "DOCKER-ISOLATION-STAGE-1 rule 2",
            "FORWARD rule 4",
            "DOCKER rule 1",
        ]
    );
    // Another port: DOCKER ends, FORWARD's policy (DROP) applies.
    let (v, _) = verdict(
        &ruleset,
        chain::FORWARD,
        &tcp([198, 51, 100, 1], container, 81, eth0, docker0),
    );
    assert_eq!(v, "policy Drop");
    // The container going out: isolation stage 2 returns, FORWARD accepts.
    let (v, hits) = verdict(
        &ruleset,
        chain::FORWARD,
        &tcp(container, [198, 51, 100, 1], 443, docker0, eth0),
    );
    assert_eq!(v, "ACCEPT");
    assert_eq!(
        hits,
        [
            "FORWARD rule 1",
            "DOCKER-USER rule 1",
            "FORWARD rule 2",
            "DOCKER-ISOLATION-STAGE-1 rule 1",
            "DOCKER-ISOLATION-STAGE-2 rule 2",
            "DOCKER-ISOLATION-STAGE-1 rule 2",
            "FORWARD rule 5",
        ]
    );
    // Replies to the container: conntrack's ESTABLISHED.
    let mut reply = tcp([198, 51, 100, 1], container, 40000, eth0, docker0);
    reply.ct_state = ct_state::ESTABLISHED;
    assert_eq!(verdict(&ruleset, chain::FORWARD, &reply).0, "ACCEPT");
}

#[test]
fn docker_files_with_nat_restore_and_save_back() {
    for text in [DOCKER_LEGACY, DOCKER_NFT] {
        let ruleset = restore(text).unwrap();
        let saved = save(&ruleset, false);
        assert_eq!(nat_section(&saved), nat_section(text));
        assert_eq!(restore(&save(&ruleset, true)).unwrap(), ruleset);
    }
    // -T filter takes the filter table and skips the rest, as
    // iptables-restore -T does.
    let legacy = restore_filter_only(DOCKER_LEGACY);
    let alone = restore(DOCKER_FILTER).unwrap();
    assert_eq!(save(&legacy, false), save(&alone, false));
    let nft = restore_filter_only(DOCKER_NFT);
    assert_eq!(nft.filter.chain("FORWARD").unwrap().rules.len(), 10);
    compile::compile(&nft, &interfaces(), 1).unwrap();
    let message = parse_restore_table(DOCKER_NFT, Some("security"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        "-T: the security table is not supported yet; netbeast implements the filter, nat, raw \
         and mangle tables"
    );
}

/// Docker's nat table with its `-m addrtype --dst-type LOCAL` left out
/// (every packet counts as local): the rest is what netbeast implements.
fn without_addrtype(text: &str) -> String {
    text.replace("-m addrtype --dst-type LOCAL ", "")
}

/// The lines of the `*nat` section of a save.
fn nat_section(text: &str) -> Vec<&str> {
    rule_lines(text)
        .into_iter()
        .skip_while(|l| *l != "*nat")
        .take_while(|l| *l != "COMMIT")
        .collect()
}

#[test]
fn docker_nat_without_addrtype_restores_saves_back_and_translates() {
    let text = without_addrtype(DOCKER_LEGACY);
    let ruleset = restore(&text).unwrap();
    // Printed after *filter, as iptables-save prints it, and otherwise the
    // same lines.
    let saved = save(&ruleset, false);
    assert_eq!(nat_section(&saved), nat_section(&text));
    assert!(saved.find("*filter").unwrap() < saved.find("*nat").unwrap());
    assert_eq!(restore(&save(&ruleset, true)).unwrap(), ruleset);
    let (eth0, docker0) = (2, 3);
    let me = [192, 168, 1, 2];
    let container = [172, 17, 0, 2];
    // The published port: PREROUTING -> DOCKER -> DNAT.
    let (v, hits) = verdict(
        &ruleset,
        chain::NAT_PREROUTING,
        &tcp([198, 51, 100, 1], me, 8080, eth0, 0),
    );
    assert_eq!(v, "DNAT 172.17.0.2:80");
    assert_eq!(hits, ["PREROUTING rule 1", "DOCKER rule 2"]);
    // From the bridge itself: DOCKER returns, no translation.
    let (v, _) = verdict(
        &ruleset,
        chain::NAT_PREROUTING,
        &tcp(container, me, 8080, docker0, 0),
    );
    assert_eq!(v, "policy Accept");
    // The host's own connections to the port, except to 127.0.0.0/8.
    let mut local = tcp(me, me, 8080, 0, 1);
    assert_eq!(
        verdict(&ruleset, chain::NAT_OUTPUT, &local).0,
        "DNAT 172.17.0.2:80"
    );
    local.dst = Ipv4Addr::new(127, 0, 0, 1);
    assert_eq!(
        verdict(&ruleset, chain::NAT_OUTPUT, &local).0,
        "policy Accept"
    );
    // The container going out is masqueraded, not when it stays on docker0.
    let (v, hits) = verdict(
        &ruleset,
        chain::NAT_POSTROUTING,
        &tcp(container, [198, 51, 100, 1], 443, docker0, eth0),
    );
    assert_eq!(
        (v.as_str(), hits.as_slice()),
        ("MASQUERADE", &["POSTROUTING rule 1".to_string()][..])
    );
    let (v, _) = verdict(
        &ruleset,
        chain::NAT_POSTROUTING,
        &tcp(container, [172, 17, 0, 3], 443, docker0, docker0),
    );
    assert_eq!(v, "policy Accept");
    // Two translations: the DNAT and the MASQUERADE (both rules share it).
    let compiled = compile::compile(&ruleset, &interfaces(), 1).unwrap();
    assert_eq!(
        compiled.nat_targets,
        [
            netbeast_common::NatTarget::default(),
            netbeast_common::NatTarget {
                addr_first: u32::from(Ipv4Addr::from(container)),
                addr_last: u32::from(Ipv4Addr::from(container)),
                port_first: 80,
                port_last: 80,
                flags: netbeast_common::nat_flags::ADDR | netbeast_common::nat_flags::PORTS,
                ..Default::default()
            },
        ]
    );
    // The nft variant, with a second bridge, restores as well.
    let nft = restore(&without_addrtype(DOCKER_NFT)).unwrap();
    assert_eq!(nft.nat.chain("DOCKER").unwrap().rules.len(), 4);
    compile::compile(&nft, &interfaces(), 0).unwrap();
}

#[test]
fn host_firewall_restores_and_behaves_like_iptables() {
    let ruleset = restore(HOST).unwrap();
    assert_eq!(rule_lines(&save(&ruleset, false)), rule_lines(HOST));
    let eth0 = 2;
    let me = [192, 168, 1, 2];
    let check = |src: [u8; 4], dport: u16, want: &str| {
        let pkt = tcp(src, me, dport, eth0, 0);
        let (v, hits) = verdict(&ruleset, chain::INPUT, &pkt);
        assert_eq!(v, want, "from {src:?} to port {dport}: {hits:?}");
    };
    check([198, 51, 100, 1], 443, "ACCEPT");
    check([198, 51, 100, 1], 22, "REJECT tcp-reset");
    check([192, 168, 1, 50], 22, "ACCEPT");
    // .13 is in the trusted subnet but RETURNs from TRUSTED: no ssh.
    check([192, 168, 1, 13], 22, "REJECT tcp-reset");
    check([192, 168, 1, 13], 80, "ACCEPT");
    check([203, 0, 113, 9], 443, "DROP");
    check([198, 51, 100, 7], 443, "DROP");
    let mut blocked_mac = tcp([198, 51, 100, 1], me, 443, eth0, 0);
    blocked_mac.mac_source = [0x02, 0, 0x5e, 0x10, 0, 1];
    assert_eq!(verdict(&ruleset, chain::INPUT, &blocked_mac).0, "DROP");
}

/// The firewall that logs what it drops: LOG is non-terminating, so the
/// DROP after it decides (and the LOG rule is among the hits).
#[test]
fn the_logging_firewall_logs_then_drops() {
    let ruleset = restore(HOST_LOGGING).unwrap();
    let pkt = tcp([198, 51, 100, 1], [192, 168, 1, 2], 80, 0, 0);
    let (v, hits) = verdict(&ruleset, chain::INPUT, &pkt);
    assert_eq!(v, "DROP", "{hits:?}");
    assert!(
        hits.iter().filter(|h| h.contains("LOGDROP")).count() == 2,
        "the LOG rule saw the packet: {hits:?}"
    );
}

#[test]
fn ufw_files_restore_and_save_back() {
    let ufw = restore(UFW).unwrap();
    assert_eq!(rule_lines(&save(&ufw, false)), rule_lines(UFW));
}

const KUBE_PROXY: &str =
    include_str!("../../../tests/fixtures/iptables-save/kube-proxy-1.29.rules");
const KUBE_PROXY_SAVED: &str =
    include_str!("../../../tests/fixtures/iptables-save/kube-proxy-1.29.saved");
const KUBE_PROXY_V6: &str =
    include_str!("../../../tests/fixtures/iptables-save/kube-proxy-1.29-ipv6.rules");
const KUBE_PROXY_V6_SAVED: &str =
    include_str!("../../../tests/fixtures/iptables-save/kube-proxy-1.29-ipv6.saved");

/// `rules` restored into a fresh ruleset as `family`'s restore would.
fn restore_family(text: &str, family: Family) -> Ruleset {
    let file = parse_restore_family(text, None, family).unwrap_or_else(|e| panic!("{e}"));
    let mut ruleset = Ruleset::default();
    apply_restore(&mut ruleset, &file, false).unwrap_or_else(|e| panic!("{e}"));
    ruleset
}

/// kube-proxy 1.29's ruleset of `family` restored, saved, and compared
/// byte for byte with the kernel's save of the same file (`saved`: the
/// rule lines, chain lines and COMMITs, without `#` comments); that save
/// restores to the same ruleset, and it compiles.
fn kube_proxy_round_trip(rules: &str, saved: &str, family: Family) -> Ruleset {
    let ruleset = restore_family(rules, family);
    assert_eq!(
        rule_lines(&save_family(&ruleset, family, false)),
        rule_lines(saved)
    );
    assert_eq!(restore_family(saved, family), ruleset);
    compile::compile(&ruleset, &interfaces(), 0).expect("kube-proxy's ruleset compiles");
    ruleset
}

/// kube-proxy 1.29's ruleset (mangle canaries, KUBE-MARK-MASQ's
/// `--or-mark`, KUBE-POSTROUTING's mark test and `--xor-mark`, the
/// statistic cascade, `-m recent` affinity): restored, it saves as
/// iptables-save printed it (MARK as `--set-xmark`), that save restores to
/// the same ruleset, and it compiles.
#[test]
fn kube_proxy_ruleset_restores_and_saves_as_iptables_does() {
    kube_proxy_round_trip(KUBE_PROXY, KUBE_PROXY_SAVED, Family::V4);
}

/// The same for an IPv6 cluster through ip6tables-restore, its nat rules
/// in kube-proxy's own words (`-m tcp -p tcp`, bare addresses saved as
/// `/128`, `%0.10f` probabilities saved as the kernel rounds them, `-m
/// recent --name X --set` saved with the IPv6 `--mask` and `--rsource`),
/// `[addr]:port` DNAT and an empty KUBE-FIREWALL (its localnet rule is
/// IPv4's): it saves as ip6tables-save printed it, rules reordered chain by
/// chain, and leaves the IPv4 ruleset alone.
#[test]
fn kube_proxy_ipv6_ruleset_restores_and_saves_as_ip6tables_does() {
    let ruleset = kube_proxy_round_trip(KUBE_PROXY_V6, KUBE_PROXY_V6_SAVED, Family::V6);
    assert_eq!(
        save(&ruleset, false),
        save(&Ruleset::default(), false),
        "an IPv6 restore leaves the IPv4 tables as they were"
    );
}

/// An IPv6 TCP packet as [`tcp`] builds an IPv4 one.
fn tcp6(src: &str, dst: &str, dport: u16, iface_in: u32, iface_out: u32) -> PacketView {
    let v4 = tcp([0; 4], [0; 4], dport, iface_in, iface_out);
    // Both addresses global unicast, neither the node's (IPv6's type keys:
    // `addr_type::CLASS6_*` and `ROUTE6_*`).
    let remote = addr_type::CLASS6_UNICAST | addr_type::ROUTE6_NONE;
    PacketView {
        src: Ipv4Addr::UNSPECIFIED,
        dst: Ipv4Addr::UNSPECIFIED,
        addr6: Some((src.parse().unwrap(), dst.parse().unwrap())),
        header: reference::HeaderFields {
            src_type: remote,
            dst_type: remote,
            ..v4.header
        },
        ..v4
    }
}

/// kube-proxy's IPv6 services classify as ip6tables walks them (the
/// compiled classifier acts on the rules the reference does, packet after
/// packet, with statistic and recent state kept in step): a client outside
/// the pods' /56 is marked for masquerade and DNATed by default/web's
/// cascade to each endpoint about a third of the time, by default/sticky's
/// to the first endpoint it drew every time after; a pod's own connection
/// is marked only when it comes back to the pod (hairpin); other
/// destinations and ports pass untranslated.
#[test]
fn kube_proxy_ipv6_services_classify_as_ip6tables_does() {
    let ruleset = restore_family(KUBE_PROXY_V6, Family::V6);
    let compiled = compile::compile(&ruleset, &interfaces(), 0).expect("compiles");
    let mut guards = (GuardState::default(), GuardState::default());
    let mut nat = |src: &str, dst: &str, dport: u16| {
        let pkt = tcp6(src, dst, dport, 2, 0);
        guarded_verdict(
            &ruleset,
            &compiled,
            chain::NAT6_PREROUTING,
            &pkt,
            &mut guards,
        )
    };
    let client = "2001:db8::9";
    let endpoints = ["fd00:10:244:1::2", "fd00:10:244:1::3", "fd00:10:244:1::4"];
    let n = 300;
    let mut landed = [0usize; 3];
    for _ in 0..n {
        let (v, hits) = nat(client, "fd00:10:96::a", 80);
        let e = endpoints
            .iter()
            .position(|e| v == format!("DNAT [{e}]:8080"))
            .unwrap_or_else(|| panic!("web: {v} {hits:?}"));
        landed[e] += 1;
        assert!(
            hits.iter().any(|h| h == "KUBE-SVC-TCOU7JCQXEZGVUNU rule 1")
                && hits.iter().any(|h| h == "KUBE-MARK-MASQ rule 1"),
            "a client outside the pods' network is marked: {hits:?}"
        );
    }
    // About a third each (binomial, 4.42 standard deviations: p = 1e-5).
    let (mean, sd) = (n as f64 / 3.0, (n as f64 * 2.0 / 9.0).sqrt());
    for (e, k) in landed.iter().enumerate() {
        assert!(
            (*k as f64 - mean).abs() <= 4.42 * sd,
            "{}: {k} of {n} ({landed:?})",
            endpoints[e]
        );
    }
    let (first, _) = nat(client, "fd00:10:96::b", 80);
    assert!(
        first.starts_with("DNAT [fd00:10:244:1::"),
        "sticky: {first}"
    );
    for _ in 0..20 {
        assert_eq!(nat(client, "fd00:10:96::b", 80).0, first, "affinity");
    }
    // A pod's connections are marked only when they come back to the pod
    // itself (the KUBE-SEP chain's hairpin rule), never by the service's.
    for _ in 0..12 {
        let (v, hits) = nat("fd00:10:244:1::3", "fd00:10:96::a", 80);
        assert!(v.starts_with("DNAT [fd00:10:244:1::"), "{v}");
        assert!(!hits.iter().any(|h| h == "KUBE-SVC-TCOU7JCQXEZGVUNU rule 1"));
        assert_eq!(
            hits.iter().any(|h| h == "KUBE-MARK-MASQ rule 1"),
            v == "DNAT [fd00:10:244:1::3]:8080",
            "hairpin: {v} {hits:?}"
        );
    }
    // default/local's load balancer IP (externalTrafficPolicy Local): a
    // client outside goes to this node's endpoints unmarked (its address
    // kept); a pod goes by the cluster chain.
    for _ in 0..12 {
        let (v, hits) = nat(client, "fd00:db8:1b::a", 80);
        assert!(
            v == "DNAT [fd00:10:244:1::3]:8080" || v == "DNAT [fd00:10:244:1::4]:8080",
            "local: {v} {hits:?}"
        );
        assert!(
            hits.iter().any(|h| h == "KUBE-EXT-5NHTAJD2HBRGO7XB rule 4")
                && !hits.iter().any(|h| h == "KUBE-MARK-MASQ rule 1"),
            "local: {hits:?}"
        );
        let (v, hits) = nat("fd00:10:244:1::2", "fd00:db8:1b::a", 80);
        assert!(v.starts_with("DNAT [fd00:10:244:1::"), "{v}");
        assert!(
            hits.iter().any(|h| h == "KUBE-EXT-5NHTAJD2HBRGO7XB rule 1"),
            "a pod's: {hits:?}"
        );
    }
    for (dst, port) in [("fd00:10:96::a", 81), ("fd00:10:96::d", 80)] {
        let (v, hits) = nat(client, dst, port);
        assert!(v.starts_with("policy"), "[{dst}]:{port}: {v} {hits:?}");
    }
}

/// The mangle table's built-in chains compile into their own classifier
/// chains (`chain::MANGLE_*`) and turn on `ACTIVE_MANGLE`; a user-defined
/// chain no built-in chain reaches (kube-proxy's canaries) and ACCEPT
/// policies leave the bit clear, so that such a ruleset costs packets
/// nothing.
#[test]
fn mangle_chains_compile_into_their_own_chains() {
    let ruleset =
        restore("*mangle\n:X - [0:0]\n-A X -j MARK --set-mark 1\n-A PREROUTING -j X\nCOMMIT\n")
            .unwrap();
    let compiled = compile::compile(&ruleset, &interfaces(), 0).expect("mangle rules compile");
    let prerouting = &compiled.chains[chain::MANGLE_PREROUTING as usize];
    // The jump and X's MARK, flattened into slots.
    assert!(prerouting.config.rule_count > 0);
    assert_ne!(compiled.active_flags() & netbeast_common::ACTIVE_MANGLE, 0);
    let policy = restore("*mangle\n:FORWARD DROP [0:0]\nCOMMIT\n").unwrap();
    let compiled = compile::compile(&policy, &interfaces(), 0).unwrap();
    assert_eq!(
        compiled.chains[chain::MANGLE_FORWARD as usize]
            .config
            .policy,
        netbeast_common::target::DROP
    );
    assert_ne!(compiled.active_flags() & netbeast_common::ACTIVE_MANGLE, 0);
    let canary = restore("*mangle\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n").unwrap();
    let compiled = compile::compile(&canary, &interfaces(), 0).unwrap();
    assert_eq!(compiled.active_flags() & netbeast_common::ACTIVE_MANGLE, 0);
}
