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
//! `node_nf_conntrack_entries` and `..._limit`). Read at every scrape,
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
use crate::rules::model::{Match, Ruleset, TableName};

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
            Ok(render(&ruleset, &stats, ct.as_ref()))
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
) -> String {
    let mut registry = Registry::default();
    let counters = || Family::<RuleLabels, Counter>::default();
    let (rule_packets, rule_bytes) = (counters(), counters());
    let policy_counters = || Family::<ChainLabels, Counter>::default();
    let (policy_packets, policy_bytes) = (policy_counters(), policy_counters());
    // The raw table once it is in use, as iptables-save shows it.
    let raw = (!ruleset.raw.is_pristine()).then_some((TableName::Raw, &ruleset.raw));
    for (table, t) in [
        (TableName::Filter, &ruleset.filter),
        (TableName::Nat, &ruleset.nat),
    ]
    .into_iter()
    .chain(raw)
    {
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
    registry.register(
        "iptables_rule_packets",
        "Packets that matched the rule",
        rule_packets,
    );
    registry.register(
        "iptables_rule_bytes",
        "Bytes of the packets that matched the rule",
        rule_bytes,
    );
    registry.register(
        "iptables_default_packets",
        "Packets that took the chain's policy",
        policy_packets,
    );
    registry.register(
        "iptables_default_bytes",
        "Bytes of the packets that took the chain's policy",
        policy_bytes,
    );
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
    let mut out = String::new();
    prometheus_text::encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::save::{apply_restore, parse_restore};

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
        let text = render(&ruleset, &[], None);
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
}
