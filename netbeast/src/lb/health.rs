//! Health checks of `netbeast lb` backends, a service of `netbeast daemon`.
//!
//! Each backend of a service with a check is probed every interval (±10 %
//! jitter, so probes of many backends do not march in step): a TCP connect,
//! or an HTTP GET answered 2xx or 3xx, within the interval. `fall`
//! consecutive failures take an up backend down, `rise` consecutive
//! successes bring a down one up; each change is written to the services'
//! state file and the service's table is rebuilt without its down backends
//! (under the namespace lock, as a CLI command would). When every serving
//! backend is down the last table is kept (`lb list` says so): dropping
//! every new connection helps no one, and a backend that is only slow to
//! answer the check may still serve.
//!
//! Up/down lives in the state file, so a daemon restart starts from it;
//! consecutive counts start over.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
};

use super::{Check, Services, Vip};
use crate::{daemon::Shutdown, loader::Dataplane, state::Namespace};

/// How often the daemon looks for due probes and for changes to the
/// services (the CLI may add or remove them at any time).
const TICK: Duration = Duration::from_millis(50);
/// Jitter of each interval: ± this fraction.
const JITTER: f64 = 0.1;
/// Most bytes of an HTTP answer read to find its status line.
const HTTP_HEAD_BYTES: usize = 512;

/// The daemon's entry (`daemon::services`).
pub fn service(shutdown: &Shutdown) -> crate::daemon::Service {
    let shutdown = shutdown.clone();
    crate::daemon::Service::new("lb-health", run(shutdown))
}

/// One backend's check state.
struct Tracked {
    check: Check,
    interval: Duration,
    rise: u32,
    fall: u32,
    up: bool,
    successes: u32,
    failures: u32,
    next: Instant,
    probing: bool,
}

type BackendKey = (Vip, Ipv4Addr, u16);

/// xorshift64*: jitter needs no better randomness than this.
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ u64::from(std::process::id()) << 32;
        Jitter(seed | 1)
    }

    fn apply(&mut self, d: Duration) -> Duration {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let unit = (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
        d.mul_f64(1.0 + JITTER * (2.0 * unit - 1.0))
    }
}

async fn run(mut shutdown: Shutdown) -> Result<()> {
    let ns = Namespace::current().context("lb health checks: the namespace's state")?;
    let mut tracked: HashMap<BackendKey, Tracked> = HashMap::new();
    let mut probes: JoinSet<(BackendKey, bool)> = JoinSet::new();
    let mut jitter = Jitter::new();
    let plane = Plane::default();
    if ns.has_dataplane() {
        // Opened now rather than at the first change, which it would delay.
        let (warm, ns_id) = (plane.clone(), ns.id);
        let opened = tokio::task::spawn_blocking(move || {
            let ns = Namespace::current()?;
            anyhow::ensure!(ns.id == ns_id, "the daemon's namespace changed");
            warm.with(&ns, |_| Ok(()))
        })
        .await
        .context("opening the data plane panicked")?;
        if let Err(e) = opened {
            tracing::warn!("{e:#} (opened again at the first change)");
        }
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.stopping() => return Ok(()),
            Some(done) = probes.join_next() => {
                let (key, ok) = done.context("a health probe panicked")?;
                let Some(t) = tracked.get_mut(&key) else { continue };
                t.probing = false;
                if let Some(up) = verdict(t, ok) {
                    // Off the runtime's thread: the lock may be held by a
                    // CLI command, and other services run on this thread.
                    let plane = plane.clone();
                    let changed = tokio::task::spawn_blocking(move || {
                        set_health(&Namespace::current()?, &plane, &key, up)
                    })
                    .await
                    .context("a health update panicked")?;
                    match changed {
                        Ok(note) => tracing::info!("{note}"),
                        // Not fatal: the next probe's verdict tries again.
                        Err(e) => {
                            tracing::error!("{e:#}");
                            t.up = !up;
                        }
                    }
                }
            }
            _ = tick.tick() => {
                sync(&ns, &mut tracked)?;
                let now = Instant::now();
                for (key, t) in tracked.iter_mut() {
                    if t.probing || t.next > now {
                        continue;
                    }
                    t.probing = true;
                    t.next = now + jitter.apply(t.interval);
                    let (key, check, timeout) = (*key, t.check.clone(), t.interval);
                    probes.spawn(async move {
                        let addr = SocketAddrV4::new(key.1, key.2);
                        (key, probe(addr, &check, timeout).await)
                    });
                }
            }
        }
    }
}

/// Counts a probe's outcome; `Some(up)` when the backend changes state.
fn verdict(t: &mut Tracked, ok: bool) -> Option<bool> {
    if ok {
        t.failures = 0;
        t.successes = t.successes.saturating_add(1);
        if !t.up && t.successes >= t.rise {
            t.up = true;
            return Some(true);
        }
    } else {
        t.successes = 0;
        t.failures = t.failures.saturating_add(1);
        if t.up && t.failures >= t.fall {
            t.up = false;
            return Some(false);
        }
    }
    None
}

/// Follows the services file: backends to check appear and go; an up/down
/// state the file changed (a restart, another writer) is taken from it.
fn sync(ns: &Namespace, tracked: &mut HashMap<BackendKey, Tracked>) -> Result<()> {
    let services = Services::load(ns)?;
    let mut seen = Vec::new();
    for s in &services.services {
        if s.health.check == Check::None {
            continue;
        }
        for b in s.backends.iter().filter(|b| !b.drained) {
            let key = (s.vip, b.addr, b.port);
            seen.push(key);
            let interval = Duration::from_millis(s.health.interval_ms);
            let t = tracked.entry(key).or_insert_with(|| Tracked {
                check: s.health.check.clone(),
                interval,
                rise: s.health.rise,
                fall: s.health.fall,
                up: b.up,
                successes: 0,
                failures: 0,
                next: Instant::now(),
                probing: false,
            });
            t.check = s.health.check.clone();
            t.interval = interval;
            t.rise = s.health.rise;
            t.fall = s.health.fall;
            if t.up != b.up {
                t.up = b.up;
                t.successes = 0;
                t.failures = 0;
            }
        }
    }
    tracked.retain(|k, _| seen.contains(k));
    Ok(())
}

/// The data plane, opened once and kept: opening it loads and parses the
/// whole kernel object, a good part of a second, which would come on top of
/// every detection. Reopened when its pins are not the ones it opened (the
/// data plane was removed and made anew).
#[derive(Clone, Default)]
struct Plane(std::sync::Arc<std::sync::Mutex<Option<(u64, Dataplane)>>>);

impl Plane {
    fn with<T>(&self, ns: &Namespace, f: impl FnOnce(&mut Dataplane) -> Result<T>) -> Result<T> {
        use std::os::unix::fs::MetadataExt;
        let pin = ns.maps_dir().join("ACTIVE");
        let ino = std::fs::metadata(&pin)
            .with_context(|| format!("the data plane's pin {}", pin.display()))?
            .ino();
        let mut cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cached.as_ref().is_none_or(|(i, _)| *i != ino) {
            *cached = Some((ino, Dataplane::open_pinned(&ns.maps_dir())?));
        }
        let (_, dp) = cached.as_mut().expect("opened above");
        f(dp)
    }
}

/// Records backend `key` as up or down and rebuilds its service's table,
/// under the namespace lock. Returns what happened, for the log.
fn set_health(ns: &Namespace, plane: &Plane, key: &BackendKey, up: bool) -> Result<String> {
    let _lock = ns.lock()?;
    let mut services = Services::load(ns)?;
    let Ok(service) = services.get_mut(&key.0) else {
        return Ok(format!("{} is gone; nothing to do", key.0));
    };
    let Ok(backend) = service.backend_mut(key.1, key.2) else {
        return Ok(format!("{}:{} left {}; nothing to do", key.1, key.2, key.0));
    };
    backend.up = up;
    if !ns.has_dataplane() {
        services.save(ns)?;
        return Ok(format!("{}:{} of {} is {}", key.1, key.2, key.0, word(up)));
    }
    let service = services.get_mut(&key.0)?;
    plane.with(ns, |dp| Ok(service.install(dp, &[], true)?))?;
    let kept = service.all_down;
    services.save(ns)?;
    Ok(format!(
        "{}:{} of {} is {}{}",
        key.1,
        key.2,
        key.0,
        word(up),
        if kept {
            "; every backend is down: the last table is kept"
        } else {
            ""
        }
    ))
}

fn word(up: bool) -> &'static str {
    if up { "up" } else { "down" }
}

/// One check of `addr`, within `timeout`.
async fn probe(addr: SocketAddrV4, check: &Check, timeout: Duration) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        match check {
            Check::None | Check::Tcp => Some(true),
            Check::Http { path } => {
                let request = format!(
                    "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: netbeast-health\r\n\
                     Connection: close\r\n\r\n"
                );
                stream.write_all(request.as_bytes()).await.ok()?;
                let mut head = Vec::new();
                let mut buf = [0u8; 128];
                while !head.contains(&b'\n') && head.len() < HTTP_HEAD_BYTES {
                    let n = stream.read(&mut buf).await.ok()?;
                    if n == 0 {
                        break;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                Some(http_ok(&head))
            }
        }
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

/// A status line `HTTP/1.x NNN ...` with NNN in 200..=399.
fn http_ok(head: &[u8]) -> bool {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let text = String::from_utf8_lossy(line);
    let mut words = text.split_whitespace();
    let version = words.next().unwrap_or_default();
    let code: u16 = words.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    version.starts_with("HTTP/") && (200..400).contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracked(up: bool) -> Tracked {
        Tracked {
            check: Check::Tcp,
            interval: Duration::from_secs(2),
            rise: 2,
            fall: 3,
            up,
            successes: 0,
            failures: 0,
            next: Instant::now(),
            probing: false,
        }
    }

    #[test]
    fn down_after_fall_failures_up_after_rise_successes() {
        let mut t = tracked(true);
        assert_eq!(verdict(&mut t, false), None);
        assert_eq!(verdict(&mut t, false), None);
        // A success in between starts the count over.
        assert_eq!(verdict(&mut t, true), None);
        assert_eq!(verdict(&mut t, false), None);
        assert_eq!(verdict(&mut t, false), None);
        assert_eq!(verdict(&mut t, false), Some(false));
        assert_eq!(verdict(&mut t, false), None);
        assert_eq!(verdict(&mut t, true), None);
        assert_eq!(verdict(&mut t, true), Some(true));
    }

    #[test]
    fn http_status_lines() {
        assert!(http_ok(b"HTTP/1.1 200 OK\r\n"));
        assert!(http_ok(b"HTTP/1.0 302 Found\r\n"));
        assert!(!http_ok(b"HTTP/1.1 404 Not Found\r\n"));
        assert!(!http_ok(b"HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(!http_ok(b"SSH-2.0-OpenSSH\r\n"));
        assert!(!http_ok(b""));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let mut j = Jitter::new();
        let d = Duration::from_secs(2);
        let spread: Vec<Duration> = (0..1000).map(|_| j.apply(d)).collect();
        assert!(
            spread
                .iter()
                .all(|x| *x >= d.mul_f64(0.9) && *x <= d.mul_f64(1.1))
        );
        assert!(spread.iter().any(|x| *x != spread[0]));
    }
}
