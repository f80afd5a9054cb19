//! `netbeast log`: the LOG rules' events, as the kernel's LOG lines with a
//! syslog timestamp and host (or JSON), to standard output, a file or the
//! local syslog.

use std::{path::PathBuf, time::Duration};

use anyhow::{Result, bail};

use crate::{
    log::{Sink, Style, Writer, drain, open_events, wait_readable},
    state::Namespace,
};

/// How long `--follow` waits for events before it looks again (it also
/// wakes as soon as events arrive).
const FOLLOW_POLL: Duration = Duration::from_millis(500);

#[derive(clap::Args, Debug, Clone)]
pub struct LogArgs {
    /// Keep reading new events until interrupted.
    #[arg(short, long)]
    pub follow: bool,
    /// One JSON object per event, with named fields.
    #[arg(long)]
    pub json: bool,
    /// Append to FILE instead of printing.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Send to the local syslog (/dev/log), facility kern, the rule's level.
    #[arg(long)]
    pub syslog: bool,
    /// Only events whose --log-prefix starts with TEXT.
    #[arg(long, value_name = "TEXT")]
    pub prefix: Option<String>,
}

pub fn run(args: LogArgs) -> Result<()> {
    let ns = Namespace::current()?;
    ns.check_pins_visible()?;
    if !ns.has_dataplane() {
        bail!(
            "no netbeast data plane in this network namespace: attach one (netbeast attach \
             IFACE) and add LOG rules (netbeast iptables -A INPUT ... -j LOG)"
        );
    }
    let mut ring = open_events(&ns.maps_dir())?;
    let mut sinks = Vec::new();
    if let Some(path) = &args.output {
        sinks.push(Sink::file(path)?);
    }
    if args.syslog {
        sinks.push(Sink::syslog()?);
    }
    if sinks.is_empty() {
        sinks.push(Sink::Stdout);
    }
    let style = if args.json { Style::Json } else { Style::Text };
    let mut writer = Writer::new(sinks, style, args.prefix.clone());
    loop {
        drain(&mut ring, &mut writer)?;
        writer.flush()?;
        if !args.follow {
            return Ok(());
        }
        wait_readable(&ring, FOLLOW_POLL);
    }
}
