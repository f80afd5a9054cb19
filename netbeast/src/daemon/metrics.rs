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

use std::{fmt::Write as _, net::SocketAddr, time::Duration};

use anyhow::{Context, Result};
use netbeast_common::stats;
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
    eprintln!("netbeast daemon: metrics: http://{addr}/metrics");
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
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(response.as_bytes()).await?;
    sock.shutdown().await?;
    Ok(())
}

/// A label value as the text format wants it.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics text of a ruleset (counters folded in) and the stats.
pub fn render(
    ruleset: &Ruleset,
    stats_values: &[u64],
    conntrack: Option<&crate::cli::conntrack::ConntrackGauges>,
) -> String {
    let mut out = String::new();
    let mut rules = String::new();
    let mut rule_bytes = String::new();
    let mut policies = String::new();
    let mut policy_bytes = String::new();
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
                let labels = format!(
                    "table=\"{}\",chain=\"{}\",rule=\"{}\",comment=\"{}\"",
                    table.as_str(),
                    label(&chain.name),
                    i + 1,
                    label(&comment)
                );
                let _ = writeln!(
                    rules,
                    "iptables_rule_packets_total{{{labels}}} {}",
                    rule.counter.packets
                );
                let _ = writeln!(
                    rule_bytes,
                    "iptables_rule_bytes_total{{{labels}}} {}",
                    rule.counter.bytes
                );
            }
            if chain.policy.is_some() {
                let labels = format!(
                    "table=\"{}\",chain=\"{}\"",
                    table.as_str(),
                    label(&chain.name)
                );
                let c = chain.policy_counter;
                let _ = writeln!(
                    policies,
                    "iptables_default_packets_total{{{labels}}} {}",
                    c.packets
                );
                let _ = writeln!(
                    policy_bytes,
                    "iptables_default_bytes_total{{{labels}}} {}",
                    c.bytes
                );
            }
        }
    }
    for (name, help, body) in [
        (
            "iptables_rule_packets_total",
            "Packets that matched the rule.",
            &rules,
        ),
        (
            "iptables_rule_bytes_total",
            "Bytes of the packets that matched the rule.",
            &rule_bytes,
        ),
        (
            "iptables_default_packets_total",
            "Packets that took the chain's policy.",
            &policies,
        ),
        (
            "iptables_default_bytes_total",
            "Bytes of the packets that took the chain's policy.",
            &policy_bytes,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        out.push_str(body);
    }
    for (i, name) in stats::NAMES.iter().enumerate() {
        let value = stats_values.get(i).copied().unwrap_or(0);
        let metric = format!("netbeast_{name}_total");
        let _ = writeln!(
            out,
            "# HELP {metric} netbeast stats counter {name}.\n# TYPE {metric} counter\n{metric} {value}"
        );
    }
    // Without a data plane the tables are empty, of no size.
    let (entries, limits) = conntrack.map_or(([0, 0], [0, 0]), |c| (c.entries, c.limits));
    for (metric, help, values) in [
        (
            "netbeast_conntrack_entries",
            "Connections in the conntrack table (not expired).",
            [entries[0], entries[1]],
        ),
        (
            "netbeast_conntrack_entries_limit",
            "Capacity of the conntrack table (attach --ct-*-size).",
            [u64::from(limits[0]), u64::from(limits[1])],
        ),
    ] {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
        for (table, v) in ["unreplied", "established"].iter().zip(values) {
            let _ = writeln!(out, "{metric}{{table=\"{table}\"}} {v}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text format's escapes for label values (prometheus-parse, the
    /// test's parser, does not undo them, so they are checked here).
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a \"b\" \\ c\nd"), "a \\\"b\\\" \\\\ c\\nd");
    }
}
