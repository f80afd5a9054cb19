//! `netbeast lb`: services with dynamic backends (DESIGN §10).

use std::collections::HashMap;

use anyhow::{Result, bail};
use clap::Subcommand;
use netbeast_common::ct_status;
use serde_json::json;

use crate::{
    lb::{
        self, Check, DEFAULT_FALL, DEFAULT_RISE, Health, Scheduler, Services, Vip, parse_backend,
        parse_duration,
    },
    loader::Dataplane,
    state::Namespace,
};

#[derive(Subcommand)]
pub enum LbCommand {
    /// Define a service: VIP:PORT[/tcp|udp] (tcp when not said).
    Add {
        service: String,
        #[arg(long, value_enum, default_value_t = Scheduler::Maglev)]
        scheduler: Scheduler,
        /// tcp (connect), http:PATH (GET answering 2xx/3xx) or none; run by
        /// `netbeast daemon`.
        #[arg(long, default_value = "tcp")]
        health: String,
        /// Time between checks of a backend (jittered), e.g. 2s, 500ms.
        #[arg(long, default_value = "2s")]
        interval: String,
        /// Successful checks that bring a down backend up.
        #[arg(long, default_value_t = DEFAULT_RISE)]
        rise: u32,
        /// Failed checks that take an up backend down.
        #[arg(long, default_value_t = DEFAULT_FALL)]
        fall: u32,
    },
    /// Remove a service; its connections keep their backends.
    Del { service: String },
    /// Add, delete or drain a backend of a service.
    Backend {
        #[command(subcommand)]
        action: BackendAction,
    },
    /// Services and backends: health, weight, connections, packets.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum BackendAction {
    /// Add backends IP:PORT (or change their weight, or undrain them); the
    /// service's table is rebuilt once for all of them.
    Add {
        service: String,
        #[arg(required = true, num_args = 1..)]
        backends: Vec<String>,
        #[arg(long, default_value_t = 1)]
        weight: u32,
    },
    /// Delete a backend: it takes no new connection; existing ones carry on.
    Del { service: String, backend: String },
    /// Keep a backend for its connections but give it no new one.
    Drain { service: String, backend: String },
}

/// Runs `f` on the namespace's services and data plane under the lock, and
/// saves the services after it.
fn with_services<T>(f: impl FnOnce(&mut Services, &mut Dataplane) -> Result<T>) -> Result<T> {
    let ns = Namespace::current()?;
    let _lock = ns.lock()?;
    let (dp, _) = super::plane::prepare(&ns, false, None, &[])?;
    let Some(mut dp) = dp else {
        bail!(
            "this namespace has no netbeast data plane: `netbeast attach IFACE` first (on the \
             interfaces the service's clients and backends are reached by)"
        );
    };
    let mut services = Services::load(&ns)?;
    lb::restore(&mut services, &mut dp, false)?;
    let out = f(&mut services, &mut dp)?;
    services.save(&ns)?;
    Ok(out)
}

pub fn run(command: LbCommand) -> Result<()> {
    match command {
        LbCommand::Add {
            service,
            scheduler,
            health,
            interval,
            rise,
            fall,
        } => {
            let vip: Vip = service.parse()?;
            let check: Check = health.parse()?;
            let interval = parse_duration(&interval)?;
            with_services(|services, _| {
                services.add(
                    vip,
                    scheduler,
                    Health {
                        check,
                        interval_ms: interval.as_millis() as u64,
                        rise,
                        fall,
                    },
                )?;
                Ok(())
            })
        }
        LbCommand::Del { service } => {
            let vip: Vip = service.parse()?;
            with_services(|services, dp| {
                let i = services
                    .find(&vip)
                    .ok_or_else(|| lb::LbError::NoService(vip.to_string()))?;
                let s = services.services.remove(i);
                dp.remove_lb_service(&vip.key(), s.slot)?;
                Ok(())
            })
        }
        LbCommand::Backend { action } => {
            let (service, backends) = match &action {
                BackendAction::Add {
                    service, backends, ..
                } => (service, backends.clone()),
                BackendAction::Del { service, backend }
                | BackendAction::Drain { service, backend } => (service, vec![backend.clone()]),
            };
            let vip: Vip = service.parse()?;
            // Every address is checked before anything changes.
            let parsed = backends
                .iter()
                .map(|b| parse_backend(b))
                .collect::<Result<Vec<_>, _>>()?;
            let (addr, port) = parsed[0];
            with_services(|services, dp| {
                let s = services.get_mut(&vip)?;
                match action {
                    BackendAction::Add { weight, .. } => {
                        let mut fresh = Vec::new();
                        for (addr, port) in parsed {
                            fresh.extend(s.add_backend(addr, port, weight)?);
                        }
                        s.install(dp, &fresh, true)?;
                    }
                    BackendAction::Del { .. } => {
                        let id = s.backend_mut(addr, port)?.id;
                        s.backends.retain(|b| b.id != id);
                        s.install(dp, &[], false)?;
                    }
                    BackendAction::Drain { .. } => {
                        s.backend_mut(addr, port)?.drained = true;
                        s.install(dp, &[], false)?;
                    }
                }
                Ok(())
            })
        }
        LbCommand::List { json } => list(json),
    }
}

/// A backend of a service: the VIP, and the backend's address and port
/// bytes.
type ServiceBackend = (Vip, [u8; 6]);

/// Live connections and their packets (both ways), per (service, backend)
/// as the conntrack tables hold them.
fn live_connections(dp: &Dataplane) -> Result<HashMap<ServiceBackend, (u64, u64)>> {
    let config = dp.conntrack_config()?;
    let now = super::conntrack::monotonic_now_ns();
    let mut out: HashMap<ServiceBackend, (u64, u64)> = HashMap::new();
    for (_, e, _) in dp.conntrack_entries()? {
        if e.status & ct_status::DST_NAT == 0
            || super::conntrack::remaining_secs(&e, now, &config).is_none()
        {
            continue;
        }
        let protocol = match e.protocol {
            6 => lb::Protocol::Tcp,
            17 => lb::Protocol::Udp,
            _ => continue,
        };
        let vip = Vip {
            addr: e.orig_dst.to_ne_bytes().into(),
            port: e.orig_dport,
            protocol,
        };
        let b = e.reply_src.to_ne_bytes();
        let p = e.reply_sport.to_be_bytes();
        let slot = out
            .entry((vip, [b[0], b[1], b[2], b[3], p[0], p[1]]))
            .or_default();
        slot.0 += 1;
        slot.1 += e.packets[0] + e.packets[1];
    }
    Ok(out)
}

/// One backend as `lb list` and the daemon's metrics show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendStatus {
    pub backend: String,
    pub weight: u32,
    /// "up", "down" (its health check's verdict) or "drained".
    pub state: &'static str,
    /// Connections the kernel gave it so far.
    pub connections: u64,
    /// Its live connections, and their packets both ways.
    pub active: u64,
    pub packets: u64,
}

/// Each service's backends with their state, read from the state file and
/// the kernel (its picks and the conntrack tables).
fn statuses(services: &Services, dp: &Dataplane) -> Result<Vec<Vec<BackendStatus>>> {
    let live = live_connections(dp)?;
    services
        .services
        .iter()
        .map(|s| {
            s.backends
                .iter()
                .map(|b| {
                    let a = b.addr.octets();
                    let p = b.port.to_be_bytes();
                    let (active, packets) = live
                        .get(&(s.vip, [a[0], a[1], a[2], a[3], p[0], p[1]]))
                        .copied()
                        .unwrap_or_default();
                    let state = if b.drained {
                        "drained"
                    } else if b.up {
                        "up"
                    } else {
                        "down"
                    };
                    Ok(BackendStatus {
                        backend: b.name(),
                        weight: b.weight,
                        state,
                        connections: dp.lb_picks(s.slot, b.id)?,
                        active,
                        packets,
                    })
                })
                .collect()
        })
        .collect()
}

/// The current namespace's services and their backends' state, for the
/// daemon's metrics: read only (nothing re-installed, nothing saved), and
/// nothing when the namespace has no service or no data plane.
pub(crate) fn snapshot() -> Result<Vec<(lb::Service, Vec<BackendStatus>)>> {
    let ns = Namespace::current()?;
    let _lock = ns.lock()?;
    let services = Services::load(&ns)?;
    if services.services.is_empty() {
        return Ok(Vec::new());
    }
    let (Some(dp), _) = super::plane::prepare(&ns, false, None, &[])? else {
        return Ok(Vec::new());
    };
    let statuses = statuses(&services, &dp)?;
    Ok(services.services.into_iter().zip(statuses).collect())
}

fn list(json_out: bool) -> Result<()> {
    with_services(|services, dp| {
        let statuses = statuses(services, dp)?;
        let mut rows = Vec::new();
        for (s, backends) in services.services.iter().zip(&statuses) {
            let backends: Vec<_> = backends
                .iter()
                .map(|b| {
                    json!({
                        "backend": b.backend,
                        "weight": b.weight,
                        "state": b.state,
                        "connections": b.connections,
                        "active": b.active,
                        "packets": b.packets,
                    })
                })
                .collect();
            rows.push(json!({
                "service": s.vip.to_string(),
                "scheduler": serde_json::to_value(s.scheduler)?,
                "health": {
                    "check": s.health.check.to_string(),
                    "interval_ms": s.health.interval_ms,
                    "rise": s.health.rise,
                    "fall": s.health.fall,
                },
                "table_size": s.table_size,
                "all_down": s.all_down,
                "backends": backends,
            }));
        }
        if json_out {
            outln!(
                "{}",
                serde_json::to_string_pretty(&json!({ "services": rows }))?
            );
            return Ok(());
        }
        for (s, row) in services.services.iter().zip(&rows) {
            outln!(
                "{} {} health {} every {}ms rise {} fall {}, table of {} entries{}",
                s.vip,
                row["scheduler"].as_str().unwrap_or(""),
                s.health.check,
                s.health.interval_ms,
                s.health.rise,
                s.health.fall,
                s.table_size,
                if s.all_down {
                    " [every backend down: the last table is kept]"
                } else {
                    ""
                }
            );
            for b in row["backends"].as_array().into_iter().flatten() {
                outln!(
                    "  {:<21} weight {:<4} {:<8} connections {:<8} active {:<6} packets {}",
                    b["backend"].as_str().unwrap_or(""),
                    b["weight"],
                    b["state"].as_str().unwrap_or(""),
                    b["connections"],
                    b["active"],
                    b["packets"]
                );
            }
        }
        Ok(())
    })
}
