//! `netbeast daemon`: the optional long-running process of one network
//! namespace (DESIGN §12). It runs a set of *services* side by side on one
//! tokio runtime — each a future that works until it is told to stop — and
//! stops them all cleanly on SIGTERM or SIGINT.
//!
//! A service is added in one place, [`services`]: a feature that needs a
//! long-running part (following interfaces, draining log events, health
//! checks, metrics) contributes one entry there and keeps its code in its
//! own module.

pub mod links;
pub mod routes;

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
    task::JoinSet,
};
use tracing::{Instrument, error, info, info_span, warn};

/// How long services get to finish their work after the stop signal
/// before the daemon exits without them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub mod log;
pub mod metrics;

/// The daemon's command line.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DaemonArgs {
    /// Append the LOG rules' events to FILE (repeatable).
    #[arg(long = "log-output", value_name = "FILE")]
    pub log_output: Vec<std::path::PathBuf>,
    /// Send the LOG rules' events to the local syslog (/dev/log).
    #[arg(long)]
    pub log_syslog: bool,
    /// Write the LOG rules' events as JSON objects rather than log lines.
    #[arg(long)]
    pub log_json: bool,
    /// Serve Prometheus metrics on ADDR:PORT (GET /metrics).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
}

/// Tells services when to stop: `stopping().await` returns once the daemon
/// has been asked to stop. A service may also stop the whole daemon
/// ([`Shutdown::stop_daemon`]), e.g. when its namespace is gone.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>, Arc<watch::Sender<bool>>);

impl Shutdown {
    /// Waits for the stop signal (at once if it was already given).
    pub async fn stopping(&mut self) {
        // An error means the sender is gone, which also means stop.
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// Whether the stop signal has been given.
    pub fn is_stopping(&self) -> bool {
        *self.0.borrow()
    }

    /// Stops every service and the daemon, which exits 0 (as on SIGTERM).
    pub fn stop_daemon(&self) {
        let _ = self.1.send(true);
    }
}

/// One long-running part of the daemon.
pub struct Service {
    pub name: &'static str,
    pub run: Pin<Box<dyn Future<Output = Result<()>> + Send>>,
}

impl Service {
    pub fn new(name: &'static str, run: impl Future<Output = Result<()>> + Send + 'static) -> Self {
        Service {
            name,
            run: Box::pin(run),
        }
    }
}

/// Every service the daemon runs with these arguments.
fn services(args: &DaemonArgs, shutdown: &Shutdown) -> Vec<Service> {
    let mut services = vec![
        Service::new("links", links::run(shutdown.clone())),
        routes::service(shutdown),
        crate::lb::health::service(shutdown),
    ];
    let log_outputs = log::LogOutputs {
        files: args.log_output.clone(),
        syslog: args.log_syslog,
        json: args.log_json,
    };
    if log_outputs.any() {
        services.push(Service::new("log", log::run(log_outputs, shutdown.clone())));
    }
    if let Some(addr) = args.metrics {
        services.push(Service::new(
            "metrics",
            metrics::run(addr, shutdown.clone()),
        ));
    }
    services
}

/// Runs the daemon in the current network namespace until SIGTERM/SIGINT.
pub fn run(args: DaemonArgs) -> Result<()> {
    // What the daemon says goes to stderr (the journal under systemd),
    // one line per event, each service's lines marked with its name.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .try_init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the daemon's runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: DaemonArgs) -> Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
    let (stop, stop_rx) = watch::channel(false);
    let stop = Arc::new(stop);
    let mut stop_requested = stop_rx.clone();
    let shutdown = Shutdown(stop_rx, stop.clone());
    let mut running = JoinSet::new();
    for service in services(&args, &shutdown) {
        let name = service.name;
        let span = info_span!("service", name);
        span.in_scope(|| info!("started"));
        running.spawn(async move { (name, service.run.instrument(span).await) });
    }
    info!(
        "netbeast daemon: running {} service(s); SIGTERM stops it",
        running.len()
    );
    // A service that fails ends the daemon: a supervisor (systemd) restarts
    // it whole, which is simpler to reason about than a half-running daemon.
    let mut failure = None;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = stop_requested.wait_for(|stop| *stop) => break,
            Some(done) = running.join_next() => match done {
                Ok((name, Ok(()))) => info!(service = name, "finished"),
                Ok((name, Err(e))) => {
                    failure = Some(e.context(format!("service {name} failed")));
                    break;
                }
                Err(e) => {
                    failure = Some(anyhow::anyhow!("a service panicked: {e}"));
                    break;
                }
            },
        }
    }
    info!("netbeast daemon: stopping");
    let _ = stop.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(done) = running.join_next().await {
            match done {
                Ok((name, Ok(()))) => info!(service = name, "stopped"),
                Ok((name, Err(e))) => error!(service = name, "{e:#}"),
                Err(e) => error!("a service panicked: {e}"),
            }
        }
    })
    .await;
    if drained.is_err() {
        warn!(
            "{} service(s) did not stop within {SHUTDOWN_GRACE:?}; exiting without them",
            running.len()
        );
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
