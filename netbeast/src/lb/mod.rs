//! `netbeast lb`: load-balanced services in the data plane (DESIGN §10).
//!
//! A service is a VIP:port/protocol with backends, a scheduler and a
//! health check. Its definition lives in the namespace's state directory
//! (`lb.json`, written under the namespace lock by the CLI and by the
//! daemon's health checks); the kernel holds what packets need: the
//! service entry, its lookup table (two generations, switched by one write
//! of the entry) and the backends' addresses (netbeast-ebpf lb.rs).

pub mod health;
pub mod maglev;

use std::{fmt, net::Ipv4Addr, str::FromStr, time::Duration};

use netbeast_common::lb::{
    self as klb, MAX_BACKENDS, MAX_SERVICES, ServiceKey, TABLE_CAPACITY, pick,
};
use serde::{Deserialize, Serialize};

use crate::{
    loader::{Dataplane, LoaderError},
    state::{Namespace, StateError},
};

/// The state file of the services, in the namespace's state directory.
pub const STATE_FILE: &str = "lb.json";
/// HAProxy's defaults: a check every 2 s (`lb add --interval`), up after 2
/// successes, down after 3 failures.
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;
/// Shortest check interval: probes are connections to the backends.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error("{0:?} is not VIP:PORT[/tcp|udp] (e.g. 192.168.0.4:80/tcp)")]
    BadService(String),
    #[error("{0:?} is not IP:PORT (e.g. 10.10.7.14:8080)")]
    BadBackend(String),
    #[error("{0:?} is not a health check: tcp, http:/PATH or none")]
    BadHealth(String),
    #[error("{0:?} is not a duration: a number with ms or s (2s, 500ms)")]
    BadDuration(String),
    #[error("no service {0}: `netbeast lb list` shows the services")]
    NoService(String),
    #[error("service {0} exists already: `netbeast lb del {0}` first to redefine it")]
    ServiceExists(String),
    #[error("service {service} has no backend {backend}")]
    NoBackend { service: String, backend: String },
    #[error(
        "service {0} would be the {MAX_SERVICES}th-plus one: a namespace holds at most \
         {MAX_SERVICES} services (netbeast_common::lb::MAX_SERVICES); delete one first"
    )]
    TooManyServices(String),
    #[error(
        "service {0} holds {MAX_BACKENDS} backends, the most it may (netbeast_common::lb::\
         MAX_BACKENDS); delete one first"
    )]
    TooManyBackends(String),
    #[error("weight {0} is out of range: 1 to {max} (0 is `backend drain`)", max = maglev::MAX_WEIGHT)]
    BadWeight(u32),
    #[error(
        "the weighted ring of service {0} would have more than {TABLE_CAPACITY} entries (the sum \
         of its weights); lower the weights"
    )]
    RingTooLong(String),
    #[error("rise and fall must be at least 1")]
    BadThreshold,
    #[error("the check interval must be at least {MIN_INTERVAL:?}")]
    IntervalTooShort,
    #[error("the service state file {path} is not valid: {source}; fix or remove it")]
    BadStateFile {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

/// How a service picks a backend for a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scheduler {
    /// Maglev: a hash of the connection's 5-tuple into the service's
    /// Maglev table (weighted, consistent; the same on every box).
    Maglev,
    /// A random entry of the Maglev table (weighted).
    Random,
    /// Each backend in turn, weights ignored.
    RoundRobin,
    /// Backends in turn, each as often as its weight (smooth weighted
    /// round-robin, as nginx).
    Weighted,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    None,
    /// A TCP connection to the backend completes.
    Tcp,
    /// `GET PATH` answers 2xx or 3xx.
    Http {
        path: String,
    },
}

impl FromStr for Check {
    type Err = LbError;
    fn from_str(s: &str) -> Result<Self, LbError> {
        match s {
            "none" => Ok(Check::None),
            "tcp" => Ok(Check::Tcp),
            _ => match s.strip_prefix("http:") {
                Some(path) if path.starts_with('/') && !path.contains(char::is_whitespace) => {
                    Ok(Check::Http {
                        path: path.to_string(),
                    })
                }
                _ => Err(LbError::BadHealth(s.to_string())),
            },
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::None => write!(f, "none"),
            Check::Tcp => write!(f, "tcp"),
            Check::Http { path } => write!(f, "http:{path}"),
        }
    }
}

/// `2s`, `500ms`, `1.5s`.
pub fn parse_duration(s: &str) -> Result<Duration, LbError> {
    let bad = || LbError::BadDuration(s.to_string());
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1.0)
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    if !value.is_finite() || value < 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// A service's address: VIP, port, protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Vip {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
}

impl FromStr for Vip {
    type Err = LbError;
    fn from_str(s: &str) -> Result<Self, LbError> {
        let bad = || LbError::BadService(s.to_string());
        let (addr_port, protocol) = match s.rsplit_once('/') {
            Some((a, "tcp")) => (a, Protocol::Tcp),
            Some((a, "udp")) => (a, Protocol::Udp),
            Some(_) => return Err(bad()),
            None => (s, Protocol::Tcp),
        };
        let (addr, port) = addr_port.rsplit_once(':').ok_or_else(bad)?;
        Ok(Vip {
            addr: addr.parse().map_err(|_| bad())?,
            port: port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?,
            protocol,
        })
    }
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        write!(f, "{}:{}/{p}", self.addr, self.port)
    }
}

impl Vip {
    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            vip: u32::from_ne_bytes(self.addr.octets()),
            port: self.port,
            protocol: self.protocol.number(),
            _pad: 0,
        }
    }
}

/// `IP:PORT`.
pub fn parse_backend(s: &str) -> Result<(Ipv4Addr, u16), LbError> {
    let bad = || LbError::BadBackend(s.to_string());
    let (addr, port) = s.rsplit_once(':').ok_or_else(bad)?;
    Ok((
        addr.parse().map_err(|_| bad())?,
        port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?,
    ))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub check: Check,
    pub interval_ms: u64,
    pub rise: u32,
    pub fall: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub weight: u32,
    /// Stable id within the service: what its lookup table holds.
    pub id: u16,
    /// Takes no new connection; existing ones carry on.
    pub drained: bool,
    /// The health check's verdict (true while unchecked).
    pub up: bool,
}

impl Backend {
    pub fn name(&self) -> String {
        format!("{}:{}", self.addr, self.port)
    }

    fn member(&self) -> maglev::Member {
        let a = self.addr.octets();
        let p = self.port.to_be_bytes();
        maglev::Member {
            id: self.id,
            name: [a[0], a[1], a[2], a[3], p[0], p[1]],
            weight: self.weight,
        }
    }

    fn kernel(&self) -> klb::Backend {
        klb::Backend {
            addr: u32::from_ne_bytes(self.addr.octets()),
            port: self.port,
            _pad: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub vip: Vip,
    pub scheduler: Scheduler,
    pub health: Health,
    /// Its slot in the kernel's table maps.
    pub slot: u32,
    /// The table generation the kernel reads.
    pub generation: u32,
    /// Entries of the live table (0: none written yet).
    pub table_size: u32,
    /// Every backend that takes new connections is down: the last table
    /// is kept rather than dropping every new connection.
    pub all_down: bool,
    pub backends: Vec<Backend>,
}

/// Every service of a namespace, as `lb.json` holds them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Services {
    pub services: Vec<Service>,
}

impl Services {
    pub fn load(ns: &Namespace) -> Result<Services, LbError> {
        match ns.read_state_file(STATE_FILE)? {
            None => Ok(Services::default()),
            Some(text) => serde_json::from_str(&text).map_err(|source| LbError::BadStateFile {
                path: ns.state_dir.join(STATE_FILE).display().to_string(),
                source,
            }),
        }
    }

    pub fn save(&self, ns: &Namespace) -> Result<(), LbError> {
        let text = serde_json::to_vec_pretty(self).expect("services serialize");
        ns.write_state_file(STATE_FILE, &text)?;
        Ok(())
    }

    pub fn find(&self, vip: &Vip) -> Option<usize> {
        self.services.iter().position(|s| s.vip == *vip)
    }

    pub fn get_mut(&mut self, vip: &Vip) -> Result<&mut Service, LbError> {
        let i = self
            .find(vip)
            .ok_or_else(|| LbError::NoService(vip.to_string()))?;
        Ok(&mut self.services[i])
    }

    /// Defines a new service (no backends yet).
    pub fn add(&mut self, vip: Vip, scheduler: Scheduler, health: Health) -> Result<(), LbError> {
        if self.find(&vip).is_some() {
            return Err(LbError::ServiceExists(vip.to_string()));
        }
        if health.rise == 0 || health.fall == 0 {
            return Err(LbError::BadThreshold);
        }
        if Duration::from_millis(health.interval_ms) < MIN_INTERVAL {
            return Err(LbError::IntervalTooShort);
        }
        let slot = (0..MAX_SERVICES)
            .find(|s| self.services.iter().all(|x| x.slot != *s))
            .ok_or_else(|| LbError::TooManyServices(vip.to_string()))?;
        self.services.push(Service {
            vip,
            scheduler,
            health,
            slot,
            generation: 0,
            table_size: 0,
            all_down: false,
            backends: Vec::new(),
        });
        Ok(())
    }
}

/// What a service's table is built from.
pub enum TablePlan {
    /// A new table of these entries (backend ids).
    Write(Vec<u16>),
    /// Every backend that may take connections is down: keep the live
    /// table.
    Keep,
}

impl Service {
    /// The backends that take new connections: not drained, and up unless
    /// every one of those is down. `may_keep`: with every serving backend
    /// down, the live table may stay (false after a backend was deleted:
    /// the live table may name it, and its id must not stay reachable).
    pub fn plan(&self, may_keep: bool) -> Result<TablePlan, LbError> {
        let serving: Vec<&Backend> = self
            .backends
            .iter()
            .filter(|b| !b.drained && b.weight > 0)
            .collect();
        let up: Vec<&Backend> = serving.iter().copied().filter(|b| b.up).collect();
        if up.is_empty() && !serving.is_empty() && self.table_size > 0 && may_keep {
            return Ok(TablePlan::Keep);
        }
        let chosen = if up.is_empty() { serving } else { up };
        Ok(TablePlan::Write(self.table_of(&chosen)?))
    }

    fn table_of(&self, chosen: &[&Backend]) -> Result<Vec<u16>, LbError> {
        if chosen.is_empty() {
            return Ok(Vec::new());
        }
        let mut ordered: Vec<&Backend> = chosen.to_vec();
        ordered.sort_by_key(|b| (b.addr, b.port));
        Ok(match self.scheduler {
            Scheduler::Maglev | Scheduler::Random => {
                let members: Vec<maglev::Member> = ordered.iter().map(|b| b.member()).collect();
                maglev::build(&members, maglev::table_size(members.len()))
            }
            Scheduler::RoundRobin => ordered.iter().map(|b| b.id).collect(),
            Scheduler::Weighted => {
                let total: u64 = ordered.iter().map(|b| b.weight as u64).sum();
                if total > TABLE_CAPACITY as u64 {
                    return Err(LbError::RingTooLong(self.vip.to_string()));
                }
                smooth_weighted_ring(&ordered)
            }
        })
    }

    fn pick(&self) -> u32 {
        match self.scheduler {
            Scheduler::Maglev => pick::HASH,
            Scheduler::Random => pick::RANDOM,
            Scheduler::RoundRobin | Scheduler::Weighted => pick::COUNTER,
        }
    }

    /// Makes the kernel's copy of the service what this says: new backends
    /// (`fresh`: ids to write, their pick counters zeroed), then the table in the generation the kernel does not read, then the
    /// switch. Existing connections keep their backend whatever changes
    /// (their conntrack entries hold it).
    pub fn install(
        &mut self,
        dp: &mut Dataplane,
        fresh: &[u16],
        may_keep: bool,
    ) -> Result<(), LbError> {
        // A backend's id names one address and port for its whole life:
        // only new ones (`fresh`) need writing.
        for b in self.backends.iter().filter(|b| fresh.contains(&b.id)) {
            dp.set_lb_backend(self.slot, b.id, &b.kernel())?;
        }
        match self.plan(may_keep)? {
            TablePlan::Keep => self.all_down = true,
            TablePlan::Write(table) => {
                self.all_down = false;
                self.switch(dp, &table)?;
            }
        }
        Ok(())
    }

    fn switch(&mut self, dp: &mut Dataplane, table: &[u16]) -> Result<(), LbError> {
        // The kernel's word on which generation is live, not the file's: a
        // command killed between the switch and the file's update must not
        // make the next one write into the live table.
        let live = match dp.lb_service(&self.vip.key())? {
            Some(s) => s.generation,
            None => self.generation,
        };
        let next = 1 - (live & 1);
        dp.switch_lb_table(&self.vip.key(), self.slot, next, self.pick(), table)?;
        self.generation = next;
        self.table_size = table.len() as u32;
        Ok(())
    }

    /// Adds a backend (or changes its weight); returns its id when new.
    pub fn add_backend(
        &mut self,
        addr: Ipv4Addr,
        port: u16,
        weight: u32,
    ) -> Result<Option<u16>, LbError> {
        if weight == 0 || weight > maglev::MAX_WEIGHT {
            return Err(LbError::BadWeight(weight));
        }
        if let Some(b) = self
            .backends
            .iter_mut()
            .find(|b| b.addr == addr && b.port == port)
        {
            b.weight = weight;
            b.drained = false;
            return Ok(None);
        }
        let id = (0..MAX_BACKENDS as u16)
            .find(|id| self.backends.iter().all(|b| b.id != *id))
            .ok_or_else(|| LbError::TooManyBackends(self.vip.to_string()))?;
        self.backends.push(Backend {
            addr,
            port,
            weight,
            id,
            drained: false,
            up: true,
        });
        Ok(Some(id))
    }

    pub fn backend_mut(&mut self, addr: Ipv4Addr, port: u16) -> Result<&mut Backend, LbError> {
        let vip = self.vip.to_string();
        self.backends
            .iter_mut()
            .find(|b| b.addr == addr && b.port == port)
            .ok_or(LbError::NoBackend {
                service: vip,
                backend: format!("{addr}:{port}"),
            })
    }
}

/// nginx's smooth weighted round-robin: a ring in which each backend
/// appears `weight` times, spread out (1:2:1 gives B A B C, not A B B C).
fn smooth_weighted_ring(backends: &[&Backend]) -> Vec<u16> {
    let total: i64 = backends.iter().map(|b| b.weight as i64).sum();
    let mut current = vec![0i64; backends.len()];
    let mut ring = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, b) in backends.iter().enumerate() {
            current[i] += b.weight as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        ring.push(backends[best].id);
    }
    ring
}

/// Puts back every stored service the kernel does not have (its maps were
/// made anew, e.g. after `detach` of the last interface and a new attach),
/// or, with `all`, every stored service: after an upgrade made some of the
/// lb maps anew (`LB_TABLES`, `LB_BACKENDS`), a service the kernel still
/// has points into tables that are empty now.
pub fn restore(services: &mut Services, dp: &mut Dataplane, all: bool) -> Result<bool, LbError> {
    let mut changed = false;
    for s in &mut services.services {
        if (all || dp.lb_service(&s.vip.key())?.is_none()) && !s.backends.is_empty() {
            let ids: Vec<u16> = s.backends.iter().map(|b| b.id).collect();
            s.table_size = 0;
            s.install(dp, &ids, false)?;
            changed = true;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(scheduler: Scheduler) -> Service {
        let mut s = Services::default();
        s.add(
            "192.168.0.4:80".parse().unwrap(),
            scheduler,
            Health {
                check: Check::Tcp,
                interval_ms: 2000,
                rise: 2,
                fall: 3,
            },
        )
        .unwrap();
        s.services.remove(0)
    }

    #[test]
    fn parses_services_backends_and_checks() {
        let v: Vip = "10.0.0.1:53/udp".parse().unwrap();
        assert_eq!((v.port, v.protocol), (53, Protocol::Udp));
        assert_eq!(v.to_string(), "10.0.0.1:53/udp");
        assert!("10.0.0.1".parse::<Vip>().is_err());
        assert!("10.0.0.1:80/sctp".parse::<Vip>().is_err());
        assert_eq!(
            parse_backend("10.0.0.2:8080").unwrap(),
            ("10.0.0.2".parse().unwrap(), 8080)
        );
        assert_eq!(
            "http:/healthz".parse::<Check>().unwrap(),
            Check::Http {
                path: "/healthz".into()
            }
        );
        assert!("http:healthz".parse::<Check>().is_err());
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
    }

    #[test]
    fn smooth_ring_spreads_weights() {
        let mut s = service(Scheduler::Weighted);
        for (i, w) in [1, 2, 1].into_iter().enumerate() {
            s.add_backend(Ipv4Addr::new(10, 0, 0, 1 + i as u8), 80, w)
                .unwrap();
        }
        let TablePlan::Write(ring) = s.plan(true).unwrap() else {
            panic!("a table")
        };
        assert_eq!(ring, vec![1, 0, 2, 1]);
    }

    #[test]
    fn down_and_drained_backends_leave_the_table_and_all_down_keeps_it() {
        let mut s = service(Scheduler::RoundRobin);
        for i in 0..3u8 {
            s.add_backend(Ipv4Addr::new(10, 0, 0, 1 + i), 80, 1)
                .unwrap();
        }
        s.backends[1].up = false;
        s.backends[2].drained = true;
        let TablePlan::Write(ring) = s.plan(true).unwrap() else {
            panic!("a table")
        };
        assert_eq!(ring, vec![0]);
        s.table_size = 1;
        s.backends[0].up = false;
        assert!(matches!(s.plan(true).unwrap(), TablePlan::Keep));
        // Nothing written yet: balance over the serving ones anyway.
        s.table_size = 0;
        let TablePlan::Write(ring) = s.plan(true).unwrap() else {
            panic!("a table")
        };
        assert_eq!(ring, vec![0, 1]);
    }
}
