//! The daemon's log service: drains the LOG events' ring buffer as they
//! come, to the configured outputs (`--log-output FILE`, `--log-syslog`,
//! `--log-json`). On stop it reads what the buffer still holds and
//! flushes, so nothing the kernel handed over is lost.

use std::path::PathBuf;

use anyhow::{Context, Result};
use tokio::io::{Interest, unix::AsyncFd};

use super::Shutdown;
use crate::{
    log::{Sink, Style, Writer, drain, open_events},
    state::Namespace,
};

/// What the log service writes where.
#[derive(Clone, Debug, Default)]
pub struct LogOutputs {
    pub files: Vec<PathBuf>,
    pub syslog: bool,
    pub json: bool,
}

impl LogOutputs {
    pub fn any(&self) -> bool {
        !self.files.is_empty() || self.syslog
    }
}

pub async fn run(outputs: LogOutputs, mut shutdown: Shutdown) -> Result<()> {
    let ns = Namespace::current()?;
    let ring = open_events(&ns.maps_dir())?;
    let mut sinks = Vec::new();
    for path in &outputs.files {
        sinks.push(Sink::file(path)?);
    }
    if outputs.syslog {
        sinks.push(Sink::syslog()?);
    }
    let style = if outputs.json {
        Style::Json
    } else {
        Style::Text
    };
    let mut writer = Writer::new(sinks, style, None);
    // SAFETY: the ring buffer owns its map fd, which stays open and the
    // same for as long as the AsyncFd holds it.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(std::io::Error::from)
        .context("cannot watch the log ring buffer")?;
    loop {
        tokio::select! {
            ready = ring.readable_mut() => {
                let mut guard = ready.context("waiting for log events")?;
                drain(guard.get_inner_mut(), &mut writer)?;
                writer.flush()?;
                guard.clear_ready();
            }
            _ = shutdown.stopping() => break,
        }
    }
    // Whatever the kernel handed over before the stop is written.
    drain(ring.get_mut(), &mut writer)?;
    writer.flush()?;
    tracing::info!("{} events written", writer.written);
    Ok(())
}
