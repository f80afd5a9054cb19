//! `-j LOG`'s userspace half: reading the kernel's events from the
//! `LOG_EVENTS` ring buffer, turning each into the kernel's own LOG line
//! ([`format`]) or a JSON object, and writing them where the user wants:
//! standard output, a file (appended), or the local syslog (`/dev/log`,
//! facility kern, the rule's level). `netbeast log` and the daemon's log
//! service (`daemon/log.rs`) both use it.
//!
//! A ring buffer has one consumer position: two readers at once (`netbeast
//! log --follow` while the daemon drains) share the events between them.

pub mod format;

use std::{
    ffi::CStr,
    fs::{File, OpenOptions},
    io::Write,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::maps::{Map, MapData, RingBuf};
use netbeast_common::{LOG_EVENT_HAS_UID, LogEvent, log_flags};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(
        "cannot open the log ring buffer {path}: {source} (is netbeast attached in this \
         namespace? run netbeast attach IFACE first)"
    )]
    Open {
        path: PathBuf,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("cannot open {path} to append the log: {source}")]
    OutputFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach the local syslog at {path}: {source} (is a syslog daemon running?)")]
    Syslog {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the log: {0}")]
    Write(#[source] std::io::Error),
}

/// The local syslog socket.
pub const SYSLOG_SOCKET: &str = "/dev/log";

/// The ring buffer of a namespace's data plane, from its pin.
pub fn open_events(maps_dir: &Path) -> Result<RingBuf<MapData>, LogError> {
    let path = maps_dir.join("LOG_EVENTS");
    let open = || -> Result<RingBuf<MapData>, aya::maps::MapError> {
        let data = MapData::from_pin(&path)?;
        RingBuf::try_from(Map::RingBuf(data))
    };
    open().map_err(|source| LogError::Open {
        path: path.clone(),
        source,
    })
}

/// One event, copied out of the ring buffer: a whole `LogEvent`, or a
/// short one (the kernel side reserves `LOG_SHORT_EVENT_BYTES` when the
/// line needs no more of the frame), whose missing frame bytes stay zero
/// (`captured` says how many were copied).
pub fn decode(bytes: &[u8]) -> Option<LogEvent> {
    let head = std::mem::offset_of!(LogEvent, frame);
    if bytes.len() < head {
        return None;
    }
    let n = bytes.len().min(size_of::<LogEvent>());
    let mut ev = std::mem::MaybeUninit::<LogEvent>::zeroed();
    // SAFETY: `LogEvent` is plain old data (integers and byte arrays), for
    // which all zeroes is a value; `n` bytes fit both the source and it.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), ev.as_mut_ptr().cast::<u8>(), n);
        Some(ev.assume_init())
    }
}

/// An interface's name by ifindex, in this namespace.
pub fn iface_name(ifindex: u32) -> Option<String> {
    if ifindex == 0 {
        return None;
    }
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return Some(format!("if{ifindex}"));
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into `buf`.
    Some(
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// The rule's `--log-prefix`.
pub fn prefix(ev: &LogEvent) -> String {
    let p = &ev.target.prefix;
    let end = p.iter().position(|&b| b == 0).unwrap_or(p.len());
    String::from_utf8_lossy(&p[..end]).into_owned()
}

/// The kernel's LOG line for an event, its prefix first, with interface
/// names from `names`.
pub fn kernel_line(ev: &LogEvent, names: &dyn Fn(u32) -> Option<String>) -> String {
    let in_name = names(ev.in_ifindex);
    let out_name = names(ev.out_ifindex);
    let captured = (ev.captured as usize).min(ev.frame.len());
    let input = format::LineInput {
        flags: ev.target.flags,
        in_name: in_name.as_deref(),
        out_name: out_name.as_deref(),
        frame: &ev.frame[..captured],
        frame_len: ev.frame_len as usize,
        l3: ev.l3_offset as usize,
        owner: (ev.event_flags & LOG_EVENT_HAS_UID != 0).then(|| {
            // An unknown gid prints as the kernel prints an unmapped one.
            let gid = if ev.gid == u32::MAX { 65534 } else { ev.gid };
            (ev.uid, gid)
        }),
    };
    format!("{}{}", prefix(ev), format::body(&input))
}

/// Seconds since the epoch (with nanoseconds) of an event's
/// `bpf_ktime_get_boot_ns` time.
pub fn wall_time(boot_ns: u64) -> (i64, u32) {
    let now = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid clock id and timespec.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
    };
    let real = now(libc::CLOCK_REALTIME);
    let boot = now(libc::CLOCK_BOOTTIME);
    let at = real - (boot - boot_ns as i128);
    (
        at.div_euclid(1_000_000_000) as i64,
        at.rem_euclid(1_000_000_000) as u32,
    )
}

/// `Dec  5 14:02:03`: syslog's traditional timestamp, local time.
pub fn syslog_time(secs: i64) -> String {
    let t = secs as libc::time_t;
    // SAFETY: zeroed tm is a valid out-parameter; localtime_r fills it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: pointers to live locals.
    unsafe { libc::localtime_r(&t, &mut tm) };
    let mut buf = [0u8; 32];
    // SAFETY: the format is NUL-terminated, `buf` large enough for it.
    let n = unsafe {
        libc::strftime(
            buf.as_mut_ptr().cast(),
            buf.len(),
            c"%b %e %H:%M:%S".as_ptr(),
            &tm,
        )
    };
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// This host's name, as syslog writes it.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its length.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The name of a built-in chain number.
pub fn chain_name(n: u32) -> &'static str {
    crate::compile::BUILTIN_CHAINS
        .get(n as usize)
        .map_or("?", |&(_, _, name)| name)
}

/// The table of a built-in chain number.
pub fn table_name(n: u32) -> &'static str {
    crate::compile::BUILTIN_CHAINS
        .get(n as usize)
        .map_or("nat", |&(_, table, _)| table.as_str())
}

/// One event as a JSON object with named fields (the line too).
pub fn json_event(ev: &LogEvent, names: &dyn Fn(u32) -> Option<String>, host: &str) -> Value {
    let (secs, nanos) = wall_time(ev.boot_ns);
    let captured = (ev.captured as usize).min(ev.frame.len());
    let frame = &ev.frame[..captured];
    let l3 = ev.l3_offset as usize;
    let mut o = serde_json::Map::new();
    o.insert("time".into(), json!(format!("{secs}.{nanos:09}")));
    o.insert("host".into(), json!(host));
    o.insert("prefix".into(), json!(prefix(ev)));
    o.insert("level".into(), json!(ev.target.level));
    o.insert("table".into(), json!(table_name(ev.chain)));
    o.insert("chain".into(), json!(chain_name(ev.chain)));
    o.insert("log_rule".into(), json!(ev.target.rule));
    o.insert("in".into(), json!(names(ev.in_ifindex).unwrap_or_default()));
    o.insert(
        "out".into(),
        json!(names(ev.out_ifindex).unwrap_or_default()),
    );
    let mac = |b: &[u8]| {
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    if ev.in_ifindex != 0 && frame.len() >= 14 {
        o.insert("mac_dst".into(), json!(mac(&frame[0..6])));
        o.insert("mac_src".into(), json!(mac(&frame[6..12])));
    }
    if let Some(ip) = frame.get(l3..l3 + 20) {
        let be16 = |b: &[u8], i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let addr = |b: &[u8]| std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string();
        o.insert("src".into(), json!(addr(&ip[12..16])));
        o.insert("dst".into(), json!(addr(&ip[16..20])));
        o.insert("len".into(), json!(be16(ip, 2)));
        o.insert("tos".into(), json!(ip[1]));
        o.insert("ttl".into(), json!(ip[8]));
        o.insert("id".into(), json!(be16(ip, 4)));
        let frag = be16(ip, 6);
        o.insert("df".into(), json!(frag & 0x4000 != 0));
        o.insert("mf".into(), json!(frag & 0x2000 != 0));
        o.insert("frag_offset".into(), json!(frag & 0x1fff));
        o.insert("proto".into(), json!(ip[9]));
        let ihl = (ip[0] & 0x0f) as usize * 4;
        let l4 = frame.get(l3 + ihl..).unwrap_or(&[]);
        if frag & 0x1fff == 0 {
            match ip[9] {
                6 | 17 | 136 if l4.len() >= 4 => {
                    o.insert("spt".into(), json!(be16(l4, 0)));
                    o.insert("dpt".into(), json!(be16(l4, 2)));
                    if ip[9] == 6 && l4.len() >= 14 {
                        let names = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
                        let flags: Vec<&str> = (0..8)
                            .rev()
                            .filter(|b| l4[13] & (1 << b) != 0)
                            .map(|b| names[b])
                            .collect();
                        o.insert("tcp_flags".into(), json!(flags));
                    }
                }
                1 if l4.len() >= 2 => {
                    o.insert("icmp_type".into(), json!(l4[0]));
                    o.insert("icmp_code".into(), json!(l4[1]));
                }
                _ => {}
            }
        }
    }
    if ev.event_flags & LOG_EVENT_HAS_UID != 0 && ev.target.flags & log_flags::UID != 0 {
        o.insert("uid".into(), json!(ev.uid));
        if ev.gid != u32::MAX {
            o.insert("gid".into(), json!(ev.gid));
        }
    }
    o.insert("line".into(), json!(kernel_line(ev, names)));
    Value::Object(o)
}

/// Where events go.
pub enum Sink {
    Stdout,
    File(File),
    Syslog(UnixDatagram),
}

impl Sink {
    pub fn file(path: &Path) -> Result<Sink, LogError> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(Sink::File)
            .map_err(|source| LogError::OutputFile {
                path: path.to_path_buf(),
                source,
            })
    }

    pub fn syslog() -> Result<Sink, LogError> {
        let sock = UnixDatagram::unbound().map_err(|source| LogError::Syslog {
            path: SYSLOG_SOCKET,
            source,
        })?;
        sock.connect(SYSLOG_SOCKET)
            .map_err(|source| LogError::Syslog {
                path: SYSLOG_SOCKET,
                source,
            })?;
        Ok(Sink::Syslog(sock))
    }
}

/// How events are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// `TIME HOST kernel: LINE`, as syslog writes the kernel's line.
    Text,
    /// One JSON object a line.
    Json,
}

/// Writes events to sinks, in the chosen style; `only_prefix` keeps the
/// events whose `--log-prefix` starts with it.
pub struct Writer {
    pub sinks: Vec<Sink>,
    pub style: Style,
    pub only_prefix: Option<String>,
    host: String,
    names: std::cell::RefCell<std::collections::HashMap<u32, Option<String>>>,
    /// Events written so far.
    pub written: u64,
}

impl Writer {
    pub fn new(sinks: Vec<Sink>, style: Style, only_prefix: Option<String>) -> Writer {
        Writer {
            sinks,
            style,
            only_prefix,
            host: hostname(),
            names: Default::default(),
            written: 0,
        }
    }

    fn name(&self, ifindex: u32) -> Option<String> {
        self.names
            .borrow_mut()
            .entry(ifindex)
            .or_insert_with(|| iface_name(ifindex))
            .clone()
    }

    /// Writes one event to every sink.
    pub fn write(&mut self, ev: &LogEvent) -> Result<(), LogError> {
        if let Some(p) = &self.only_prefix
            && !prefix(ev).starts_with(p.as_str())
        {
            return Ok(());
        }
        let names = |i| self.name(i);
        let line = kernel_line(ev, &names);
        let (secs, _) = wall_time(ev.boot_ns);
        let stamp = syslog_time(secs);
        let text = match self.style {
            Style::Text => format!("{stamp} {} kernel: {line}\n", self.host),
            Style::Json => format!("{}\n", json_event(ev, &names, &self.host)),
        };
        for sink in &mut self.sinks {
            match sink {
                Sink::Stdout => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(text.as_bytes()).map_err(LogError::Write)?;
                }
                Sink::File(f) => f.write_all(text.as_bytes()).map_err(LogError::Write)?,
                Sink::Syslog(sock) => {
                    // RFC 3164: <facility kern (0) * 8 + level>, then the
                    // time, then the tag; the daemon adds the host.
                    let pri = ev.target.level & 7;
                    let msg = match self.style {
                        Style::Text => format!("<{pri}>{stamp} kernel: {line}"),
                        Style::Json => {
                            format!("<{pri}>{stamp} netbeast: {}", text.trim_end())
                        }
                    };
                    // A full or restarting syslog loses the line, as the
                    // kernel's own log does; the reader never blocks on it.
                    let _ = sock.send(msg.as_bytes());
                }
            }
        }
        self.written += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), LogError> {
        for sink in &mut self.sinks {
            match sink {
                Sink::Stdout => std::io::stdout().flush().map_err(LogError::Write)?,
                Sink::File(f) => f.flush().map_err(LogError::Write)?,
                Sink::Syslog(_) => {}
            }
        }
        Ok(())
    }
}

/// Writes every event the ring buffer holds; returns how many it read.
pub fn drain(ring: &mut RingBuf<MapData>, writer: &mut Writer) -> Result<u64, LogError> {
    let mut n = 0;
    while let Some(item) = ring.next() {
        let ev = decode(&item);
        drop(item);
        if let Some(ev) = ev {
            writer.write(&ev)?;
        }
        n += 1;
    }
    Ok(n)
}

/// Waits until the ring buffer has data or `timeout` passes.
pub fn wait_readable(ring: &RingBuf<MapData>, timeout: Duration) {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: ring.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
}
