//! Where one command's time goes, for profiling the control plane (issue
//! 17, docs/BENCHMARKS.md): with `NETBEAST_PROFILE` set in the
//! environment, [`phase`] records the wall time and the CPU time (the
//! process's, user and system: what a loaded machine does not inflate)
//! since the previous mark under a name, and [`report`] prints the totals
//! to stderr. Without it both cost one check of a flag read once.

use std::{
    sync::{Mutex, OnceLock},
    time::Instant,
};

/// The environment variable that turns the phase timings on.
pub const ENV: &str = "NETBEAST_PROFILE";

struct Marks {
    last: Instant,
    last_cpu: f64,
    /// (phase, wall ms, CPU ms), phases in the order first seen.
    totals: Vec<(&'static str, f64, f64)>,
}

/// The CPU time this process has used, in milliseconds.
fn cpu_ms() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 / 1e6
}

fn marks() -> Option<&'static Mutex<Marks>> {
    static MARKS: OnceLock<Option<Mutex<Marks>>> = OnceLock::new();
    MARKS
        .get_or_init(|| {
            std::env::var_os(ENV).map(|_| {
                Mutex::new(Marks {
                    last: Instant::now(),
                    last_cpu: cpu_ms(),
                    totals: Vec::new(),
                })
            })
        })
        .as_ref()
}

/// Starts the clock (the time before the first [`phase`] counts from
/// here); call it first thing.
pub fn start() {
    let _ = marks();
}

/// Adds the time since the previous mark to `name`.
pub fn phase(name: &'static str) {
    let Some(marks) = marks() else { return };
    let mut m = marks.lock().unwrap_or_else(|e| e.into_inner());
    let (now, cpu) = (Instant::now(), cpu_ms());
    let ms = now.duration_since(m.last).as_secs_f64() * 1e3;
    let cpu_used = cpu - m.last_cpu;
    (m.last, m.last_cpu) = (now, cpu);
    match m.totals.iter_mut().find(|(n, _, _)| *n == name) {
        Some((_, wall, cpu)) => {
            *wall += ms;
            *cpu += cpu_used;
        }
        None => m.totals.push((name, ms, cpu_used)),
    }
}

/// Prints every phase's totals (wall, CPU), one line each, and their sum.
pub fn report() {
    let Some(marks) = marks() else { return };
    phase("rest");
    let m = marks.lock().unwrap_or_else(|e| e.into_inner());
    let wall: f64 = m.totals.iter().map(|t| t.1).sum();
    let cpu: f64 = m.totals.iter().map(|t| t.2).sum();
    for (name, wall, cpu) in &m.totals {
        eprintln!("netbeast profile: {name:<28} {wall:9.2} ms wall {cpu:9.2} ms cpu");
    }
    eprintln!(
        "netbeast profile: {:<28} {wall:9.2} ms wall {cpu:9.2} ms cpu",
        "total"
    );
}
