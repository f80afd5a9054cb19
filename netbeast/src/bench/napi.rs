//! The receivers' own core (`--receiver-cpu`): a veth's NAPI as a kernel
//! thread, pinned.
//!
//! Frames the generator hands to a veth with `ndo_xdp_xmit` (live frames,
//! the fan-out's copies) or `ndo_start_xmit` (the packet socket, pktgen)
//! go on the peer's ring, and the peer's NAPI is scheduled on the CPU that
//! sent them: its poll (the receiver's XDP program, and for XDP_PASS the
//! stack and netfilter) runs in that CPU's softirq, right after the send.
//! Generator and receiver then share one core, and a rate is 1 / (the
//! generator's cost + the receiver's). With `threaded` set on the
//! receiving veth (`/sys/class/net/DEV/threaded`, which a veth has while
//! its NAPI is on: an XDP program or GRO), `napi_schedule` wakes the
//! NAPI's kernel thread `napi/DEV-<napi id>` instead, and that thread can
//! be pinned to another CPU: the receiver then has that core to itself.
//!
//! The flag belongs to the device: the bench sets it only on veths it made
//! in its own namespaces, and it goes with them.

use std::{collections::BTreeSet, fs, io, sync::Mutex, time::Duration};

use crate::netns::Netns;

/// A veth has one receive queue, so one NAPI, unless made with more.
const THREADS_PER_VETH: usize = 1;
/// The NAPI thread's SCHED_FIFO priority, the lowest: enough that the
/// processes of a shared machine (SCHED_OTHER) do not take a share of the
/// receiver's core, as they cannot take a softirq's. The kernel's real-time
/// throttling (`sched_rt_runtime_us`, 95% by default) still leaves them
/// the rest.
const RECEIVER_PRIORITY: i32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum NapiError {
    #[error(
        "--receiver-cpu {cpu}: this machine has CPUs 0 to {last}; choose one of them, \
         other than the generator's (--cpu)"
    )]
    NoSuchCpu { cpu: usize, last: usize },
    #[error(
        "--receiver-cpu {0} is the generator's CPU (--cpu): choose another, or leave \
         --receiver-cpu out to run the receivers in the generator's softirq there"
    )]
    GeneratorCpu(usize),
    #[error(
        "cannot make the NAPI of {iface} (namespace {ns}) a thread: {detail} (the kernel needs \
         /sys/class/net/DEV/threaded, Linux 5.12 or later, and the veth's NAPI on); leave \
         --receiver-cpu out to run the receivers in the generator's softirq"
    )]
    Threaded {
        iface: String,
        ns: String,
        detail: String,
    },
    #[error(
        "after threading the NAPI of {iface} (namespace {ns}), {found} new kernel threads \
         named {prefix}* appeared where {THREADS_PER_VETH} was expected (another process \
         threading a device of that name at the same moment?); run the bench again"
    )]
    Threads {
        iface: String,
        ns: String,
        prefix: String,
        found: usize,
    },
    #[error(
        "cannot pin the NAPI thread {pid} of {iface} to CPU {cpu}, or make it SCHED_FIFO: {source}"
    )]
    Pin {
        pid: i32,
        iface: String,
        cpu: usize,
        #[source]
        source: io::Error,
    },
    #[error("cannot list the kernel's NAPI threads in /proc: {0}")]
    Proc(#[source] io::Error),
}

/// A veth's NAPI thread, pinned to a CPU.
#[derive(Clone, Debug)]
pub struct NapiThread {
    pub pid: i32,
    pub cpu: usize,
}

impl NapiThread {
    /// Nanoseconds the thread has run so far (`/proc/PID/schedstat`), and
    /// the CPU it last ran on (`/proc/PID/stat`, field 39); None when the
    /// thread is gone.
    pub fn usage(&self) -> Option<(u64, usize)> {
        let schedstat = fs::read_to_string(format!("/proc/{}/schedstat", self.pid)).ok()?;
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        Some((
            schedstat.split_whitespace().next()?.parse().ok()?,
            last_cpu_of(&stat)?,
        ))
    }
}

/// Field 39 (`processor`) of a `/proc/PID/stat` line: counted after the
/// command's closing parenthesis, since the command may hold spaces.
fn last_cpu_of(stat: &str) -> Option<usize> {
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3 (state).
    rest.split_whitespace().nth(39 - 3)?.parse().ok()
}

/// What a NAPI thread of `iface` is called, as /proc shows it: the
/// kernel's `napi/%s-%d`, cut to TASK_COMM_LEN − 1 bytes.
fn comm_prefix(iface: &str) -> String {
    let mut name = format!("napi/{iface}-");
    name.truncate(15);
    name
}

/// Pids of the kernel threads whose name starts with `prefix`.
fn threads_named(prefix: &str) -> io::Result<BTreeSet<i32>> {
    let mut pids = BTreeSet::new();
    for entry in fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        // A process may end while the list is read.
        if let Ok(comm) = fs::read_to_string(entry.path().join("comm"))
            && comm.trim_end().starts_with(prefix)
        {
            pids.insert(pid);
        }
    }
    Ok(pids)
}

/// Fails unless `cpu` is online and not the generator's.
pub fn check_cpu(cpu: usize, generator: Option<usize>) -> Result<(), NapiError> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpu >= cpus {
        return Err(NapiError::NoSuchCpu {
            cpu,
            last: cpus - 1,
        });
    }
    if generator == Some(cpu) {
        return Err(NapiError::GeneratorCpu(cpu));
    }
    Ok(())
}

/// Makes the NAPI of `iface` in `ns` a kernel thread, pins that thread
/// to `cpu` and makes it real-time ([`RECEIVER_PRIORITY`]). The veth's NAPI must be on already (an XDP program, or GRO),
/// and stay on: a NAPI removed and added again gets a new, unpinned thread.
pub fn thread_and_pin(ns: &Netns, iface: &str, cpu: usize) -> Result<NapiThread, NapiError> {
    check_cpu(cpu, None)?;
    // The thread is told apart by its appearing: one threading at a time.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let prefix = comm_prefix(iface);
    let before = threads_named(&prefix).map_err(NapiError::Proc)?;
    let threaded_error = |detail: String| NapiError::Threaded {
        iface: iface.into(),
        ns: ns.name().into(),
        detail,
    };
    // sysfs shows the devices of the namespace it was mounted in: `ip netns
    // exec` mounts the namespace's own.
    let out = ns
        .command("sh")
        .args([
            "-c",
            "echo 1 > /sys/class/net/\"$0\"/threaded && cat /sys/class/net/\"$0\"/threaded",
            iface,
        ])
        .output()
        .map_err(|e| threaded_error(format!("cannot run ip netns exec: {e}")))?;
    let shown = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || shown != "1" {
        return Err(threaded_error(format!(
            "writing 1 to /sys/class/net/{iface}/threaded: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // The kernel makes the thread before the write returns; its name may
    // show a moment later.
    let mut new = BTreeSet::new();
    for _ in 0..50 {
        let after = threads_named(&prefix).map_err(NapiError::Proc)?;
        new = after.difference(&before).copied().collect();
        if new.len() >= THREADS_PER_VETH {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if new.len() != THREADS_PER_VETH {
        return Err(NapiError::Threads {
            iface: iface.into(),
            ns: ns.name().into(),
            prefix,
            found: new.len(),
        });
    }
    let pid = *new.first().expect("one thread");
    pin(pid, cpu).map_err(|source| NapiError::Pin {
        pid,
        iface: iface.into(),
        cpu,
        source,
    })?;
    Ok(NapiThread { pid, cpu })
}

fn pin(pid: i32, cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; cpu < available_parallelism <=
    // CPU_SETSIZE (checked by the caller).
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(pid, size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let param = libc::sched_param {
        sched_priority: RECEIVER_PRIORITY,
    };
    // SAFETY: a valid sched_param for an existing thread.
    if unsafe { libc::sched_setscheduler(pid, libc::SCHED_FIFO, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_names_are_cut_as_the_kernel_cuts_them() {
        assert_eq!(comm_prefix("nbb-in"), "napi/nbb-in-");
        assert_eq!(comm_prefix("s12"), "napi/s12-");
        // 15 bytes: the kernel's comm is 16 with its NUL.
        assert_eq!(comm_prefix("a-long-veth-name"), "napi/a-long-vet");
    }

    #[test]
    fn the_last_cpu_is_field_39_after_the_command() {
        let fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        // Field 39 holds "39" here; a command with spaces and a parenthesis.
        let stat = format!("1234 (napi/x) y-1) {}", fields.join(" "));
        assert_eq!(last_cpu_of(&stat), Some(39));
        assert_eq!(last_cpu_of("1234 (short) S 1 2"), None);
    }
}
