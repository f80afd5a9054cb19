//! Fault injection for the crash-safety tests: `NETBEAST_FAULT=N` kills the
//! process with SIGKILL at the N-th fault point it reaches (counting from
//! 1), exactly as an operator's `kill -9` or a power cut would stop it
//! between two steps. The points sit between the steps that change lasting
//! state (pins, links, map switches, renames, unlinks), so a test that runs
//! a command with N = 1, 2, ... until it completes has stopped it at every
//! step. Unset (the normal case), a point costs one relaxed atomic load.

use std::sync::atomic::{AtomicU32, Ordering};

/// The environment variable that arms the hook.
pub const FAULT_ENV: &str = "NETBEAST_FAULT";
/// With this variable set, every point reached is named on stderr (to find
/// which step a fault number stands for).
pub const FAULT_TRACE_ENV: &str = "NETBEAST_FAULT_TRACE";

/// 0: not read yet; u32::MAX: disarmed; otherwise the point to stop at.
static TARGET: AtomicU32 = AtomicU32::new(0);
static REACHED: AtomicU32 = AtomicU32::new(0);

fn target() -> u32 {
    match TARGET.load(Ordering::Relaxed) {
        0 => {
            let armed = std::env::var(FAULT_ENV)
                .ok()
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(u32::MAX);
            TARGET.store(armed, Ordering::Relaxed);
            armed
        }
        t => t,
    }
}

/// A step boundary named `what`: dies here when this is the armed point.
pub fn point(what: &str) {
    let target = target();
    let tracing = std::env::var_os(FAULT_TRACE_ENV).is_some();
    if target == u32::MAX && !tracing {
        return;
    }
    let n = REACHED.fetch_add(1, Ordering::Relaxed) + 1;
    if tracing {
        eprintln!("netbeast: fault point {n}: {what}");
    }
    if n == target {
        // SAFETY: kill on our own pid; SIGKILL cannot be caught, so nothing
        // of ours runs after it (no destructor, no cleanup), as in a crash.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
