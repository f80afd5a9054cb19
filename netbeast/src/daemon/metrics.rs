//! The daemon's Prometheus endpoint (`--metrics ADDR:PORT`, `GET
//! /metrics`): every rule's packets and bytes with table, chain, rule
//! number and comment labels, named as the common iptables exporters name
//! them (`iptables_rule_packets_total`, `iptables_default_packets_total`
//! for policies), and the data plane's `stats` counters as
//! `netbeast_<name>_total` (LOG events and losses among them:
//! `netbeast_log_events_total`, `netbeast_log_lost_total`), and the
//! conntrack gauges: live connections and capacity of each table
//! (`netbeast_conntrack_entries{table=...}`,
//! `netbeast_conntrack_entries_limit{table=...}`, as node_exporter's
//! `node_nf_conntrack_entries` and `..._limit`), and `netbeast lb`'s
//! backends (health, drain, weight, connections: `netbeast_lb_backend_*`).
//! Every table of both families: ip6tables' rules as
//! `ip6tables_rule_packets_total` and so on. Read at every scrape,
//! under the namespace's lock, as `netbeast stats` and `conntrack -C` read
//! them.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result};
use netbeast_common::stats;
use prometheus_client::{
    encoding::{EncodeLabelSet, prometheus_text},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::Shutdown;
use crate::{
    cli::lb::BackendStatus,
    rules::model::{Family as RuleFamily, Match, Ruleset, TableName},
};

/// Longest request head read; a scrape's is a few hundred bytes.
const MAX_REQUEST: usize = 8192;
/// A client that does not send its request within this is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run(addr: SocketAddr, mut shutdown: Shutdown) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for --metrics"))?;
    tracing::info!("serving http://{addr}/metrics");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (sock, _) = accepted.context("accepting a metrics client")?;
                // One scrape at a time: they are cheap and rare.
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, serve(sock)).await;
            }
            _ = shutdown.stopping() => return Ok(()),
        }
    }
}

async fn serve(mut sock: TcpStream) -> Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let request = String::from_utf8_lossy(&head);
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = if path == "/metrics" {
        match crate::cli::counters_snapshot().and_then(|(ruleset, stats)| {
            let ct = crate::cli::conntrack::gauges()?;
            let services = crate::cli::lb::snapshot()?;
            Ok(render(&ruleset, &stats, ct.as_ref(), &services))
        }) {
            Ok(body) => ("200 OK", body),
            Err(e) => ("503 Service Unavailable", format!("{e:#}\n")),
        }
    } else {
        (
            "404 Not Found",
            "only /metrics is served here\n".to_string(),
        )
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        prometheus_text::CONTENT_TYPE,
        body.len()
    );
    sock.write_all(response.as_bytes()).await?;
    sock.shutdown().await?;
    Ok(())
}

/// The labels of a rule's counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    table: String,
    chain: String,
    rule: String,
    comment: String,
}

/// The labels of a policy's counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChainLabels {
    table: String,
    chain: String,
}

/// The label of a conntrack gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConntrackLabels {
    table: String,
}

/// The metrics text of a ruleset (counters folded in) and the stats, in
/// the Prometheus text format (`CONTENT_TYPE`), encoded by
/// prometheus-client: a registry made at each scrape from the values read.
pub fn render(
    ruleset: &Ruleset,
    stats_values: &[u64],
    conntrack: Option<&crate::cli::conntrack::ConntrackGauges>,
    services: &[(crate::lb::Service, Vec<BackendStatus>)],
) -> String {
    let mut registry = Registry::default();
    for family in [RuleFamily::V4, RuleFamily::V6] {
        register_rules(&mut registry, ruleset, family);
    }
    for (i, name) in stats::NAMES.iter().enumerate() {
        let counter = Counter::<u64>::default();
        counter.inc_by(stats_values.get(i).copied().unwrap_or(0));
        registry.register(
            format!("netbeast_{name}"),
            format!("netbeast stats counter {name}"),
            counter,
        );
    }
    // Without a data plane the tables are empty, of no size.
    let (entries, limits) = conntrack.map_or(([0, 0], [0, 0]), |c| (c.entries, c.limits));
    for (metric, help, values) in [
        (
            "netbeast_conntrack_entries",
            "Connections in the conntrack table (not expired)",
            [entries[0], entries[1]],
        ),
        (
            "netbeast_conntrack_entries_limit",
            "Capacity of the conntrack table (attach --ct-*-size)",
            [u64::from(limits[0]), u64::from(limits[1])],
        ),
    ] {
        let family = Family::<ConntrackLabels, Gauge>::default();
        for (table, v) in ["unreplied", "established"].iter().zip(values) {
            family
                .get_or_create(&ConntrackLabels {
                    table: table.to_string(),
                })
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
        registry.register(metric, help, family);
    }
    register_services(&mut registry, services);
    let mut out = String::new();
    prometheus_text::encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

/// The rules' and policies' counters of one family's ruleset, named as
/// the iptables exporters name them (`iptables_rule_packets_total`; the
/// IPv6 ones `ip6tables_…`, as `ip6tables` is the command that lists
/// them). The filter and nat tables always, the others once in use, as
/// `save` shows them.
fn register_rules(registry: &mut Registry, ruleset: &Ruleset, family: RuleFamily) {
    let counters = || Family::<RuleLabels, Counter>::default();
    let (rule_packets, rule_bytes) = (counters(), counters());
    let policy_counters = || Family::<ChainLabels, Counter>::default();
    let (policy_packets, policy_bytes) = (policy_counters(), policy_counters());
    for &table in family.tables() {
        let t = ruleset.table_in(family, table);
        if !matches!(table, TableName::Filter | TableName::Nat) && t.is_pristine() {
            continue;
        }
        for chain in &t.chains {
            for (i, rule) in chain.rules.iter().enumerate() {
                let comment = rule
                    .matches
                    .iter()
                    .find_map(|m| match m {
                        Match::Comment(c) => Some(c.text()),
                        _ => None,
                    })
                    .unwrap_or_default();
                let labels = RuleLabels {
                    table: table.as_str().into(),
                    chain: chain.name.clone(),
                    rule: (i + 1).to_string(),
                    comment: comment.to_string(),
                };
                rule_packets
                    .get_or_create(&labels)
                    .inc_by(rule.counter.packets);
                rule_bytes.get_or_create(&labels).inc_by(rule.counter.bytes);
            }
            if chain.policy.is_some() {
                let labels = ChainLabels {
                    table: table.as_str().into(),
                    chain: chain.name.clone(),
                };
                let c = chain.policy_counter;
                policy_packets.get_or_create(&labels).inc_by(c.packets);
                policy_bytes.get_or_create(&labels).inc_by(c.bytes);
            }
        }
    }
    let command = family.command();
    registry.register(
        format!("{command}_rule_packets"),
        "Packets that matched the rule",
        rule_packets,
    );
    registry.register(
        format!("{command}_rule_bytes"),
        "Bytes of the packets that matched the rule",
        rule_bytes,
    );
    registry.register(
        format!("{command}_default_packets"),
        "Packets that took the chain's policy",
        policy_packets,
    );
    registry.register(
        format!("{command}_default_bytes"),
        "Bytes of the packets that took the chain's policy",
        policy_bytes,
    );
}

/// The labels of a load-balanced service's gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

/// The labels of a backend's metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    service: String,
    backend: String,
}

/// `netbeast lb`'s services, as `lb list` shows them: each backend's
/// health (`netbeast_lb_backend_up`: 1 while its checks say up, 0 down or
/// drained), whether it is drained, its weight, the connections the
/// kernel gave it, its live connections and their packets; and whether
/// every backend of a service is down (the last table kept).
fn register_services(
    registry: &mut Registry,
    services: &[(crate::lb::Service, Vec<BackendStatus>)],
) {
    let gauges = || Family::<BackendLabels, Gauge>::default();
    let (up, drained, weight, active, packets) = (gauges(), gauges(), gauges(), gauges(), gauges());
    let connections = Family::<BackendLabels, Counter>::default();
    let all_down = Family::<ServiceLabels, Gauge>::default();
    let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    for (service, backends) in services {
        let name = service.vip.to_string();
        all_down
            .get_or_create(&ServiceLabels {
                service: name.clone(),
            })
            .set(i64::from(service.all_down));
        for b in backends {
            let labels = BackendLabels {
                service: name.clone(),
                backend: b.backend.clone(),
            };
            up.get_or_create(&labels).set(i64::from(b.state == "up"));
            drained
                .get_or_create(&labels)
                .set(i64::from(b.state == "drained"));
            weight.get_or_create(&labels).set(i64::from(b.weight));
            connections.get_or_create(&labels).inc_by(b.connections);
            active.get_or_create(&labels).set(gauge(b.active));
            packets.get_or_create(&labels).set(gauge(b.packets));
        }
    }
    registry.register(
        "netbeast_lb_backend_up",
        "1 while the backend's health checks say it is up (0: down or drained)",
        up,
    );
    registry.register(
        "netbeast_lb_backend_drained",
        "1 when the backend takes no new connection (lb backend drain)",
        drained,
    );
    registry.register("netbeast_lb_backend_weight", "The backend's weight", weight);
    registry.register(
        "netbeast_lb_backend_connections",
        "Connections the kernel gave the backend",
        connections,
    );
    registry.register(
        "netbeast_lb_backend_active_connections",
        "The backend's live connections (conntrack)",
        active,
    );
    registry.register(
        "netbeast_lb_backend_packets",
        "Packets, both ways, of the backend's live connections",
        packets,
    );
    registry.register(
        "netbeast_lb_service_all_down",
        "1 when every backend of the service is down (its last table is kept)",
        all_down,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::save::{apply_restore, parse_restore, parse_restore_family};

    /// Label values are escaped as the text format wants them (the
    /// integration test's parser does not undo escapes, so they are
    /// checked here), and every metric has its HELP and TYPE.
    #[test]
    fn comments_are_escaped_and_metrics_typed() {
        let mut ruleset = Ruleset::default();
        let file = parse_restore(
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m comment --comment \"a \\\"b\\\" \\\\ c\" -j DROP\nCOMMIT\n",
        )
        .unwrap();
        apply_restore(&mut ruleset, &file, false).unwrap();
        let text = render(&ruleset, &[], None, &[]);
        assert!(
            text.contains(r#"iptables_rule_packets_total{table="filter",chain="INPUT",rule="1",comment="a \"b\" \\ c"} 0"#),
            "{text}"
        );
        for metric in ["iptables_rule_packets_total", "netbeast_conntrack_entries"] {
            assert!(
                text.contains(&format!("# TYPE {metric} ")),
                "{metric}: {text}"
            );
        }
    }

    /// Every table of both families is scraped: mangle's rules (once in
    /// use) beside filter's, and ip6tables' rules under `ip6tables_…`, each
    /// with its own counters.
    #[test]
    fn mangle_and_ipv6_rules_are_scraped() {
        let mut ruleset = Ruleset::default();
        let v4 = parse_restore(
            "*mangle\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p udp -j MARK --set-mark 1\nCOMMIT\n",
        )
        .unwrap();
        apply_restore(&mut ruleset, &v4, false).unwrap();
        let v6 = parse_restore_family(
            "*filter\n:INPUT DROP [0:0]\n-A INPUT -p ipv6-icmp -j ACCEPT\nCOMMIT\n",
            None,
            RuleFamily::V6,
        )
        .unwrap();
        apply_restore(&mut ruleset, &v6, false).unwrap();
        ruleset.mangle.chains[0].rules[0].counter.packets = 3;
        ruleset.filter6.chains[0].rules[0].counter.packets = 5;
        ruleset.filter6.chains[0].policy_counter.packets = 7;
        let text = render(&ruleset, &[], None, &[]);
        for line in [
            r#"iptables_rule_packets_total{table="mangle",chain="PREROUTING",rule="1",comment=""} 3"#,
            r#"ip6tables_rule_packets_total{table="filter",chain="INPUT",rule="1",comment=""} 5"#,
            r#"ip6tables_default_packets_total{table="filter",chain="INPUT"} 7"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        // The raw table is not in use: none of its chains is listed.
        assert!(!text.contains(r#"table="raw""#), "{text}");
    }
}
