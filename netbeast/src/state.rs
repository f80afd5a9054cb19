//! Per-network-namespace state (DESIGN §5): where the pins live, the rule
//! source of truth, and the lock that serializes concurrent invocations.

use std::{
    ffi::{CStr, CString},
    fs,
    io::Write,
    net::Ipv4Addr,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use crate::{compile::Interface, rules::model::Ruleset};

/// Where bpffs normally is.
pub const BPFFS: &str = "/sys/fs/bpf";
/// A second view of the same bpffs, outside /sys: `ip netns exec` remounts
/// /sys and hides /sys/fs/bpf, but keeps /run.
pub const BPFFS_ALIAS: &str = "/run/netbeast/bpffs";
/// Rule source and lock files, per namespace.
pub const STATE_ROOT: &str = "/run/netbeast";
/// Where netbeast mounts cgroup2 when none is visible: `ip netns exec`
/// hides /sys/fs/cgroup (the mount then lives only as long as the command,
/// in its private mount namespace; the attachments stay, held by their
/// pinned links).
pub const CGROUP_ALIAS: &str = "/run/netbeast/cgroup";
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("netbeast needs root (CAP_SYS_ADMIN and CAP_BPF): run it with sudo")]
    NotRoot,
    #[error(
        "bpffs is not reachable from here: `ip netns exec` hides {BPFFS}; run `cargo xtask setup` \
         once, or `netbeast status` from the root namespace, which also mounts it at \
         {BPFFS_ALIAS}; or use `netbeast --netns NAME ...` instead of `ip netns exec NAME netbeast ...`"
    )]
    NoBpffs,
    #[error("cannot mount {what} on {path}: {source}")]
    Mount {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the stored ruleset {path} is corrupt ({message}); `netbeast detach --all` resets it")]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "unknown interface '{0}': no such device in this network namespace (`ip link` lists them)"
    )]
    UnknownInterface(String),
    #[error("cannot enter network namespace '{name}' (/run/netns/{name}): {source}")]
    Netns {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn is_bpffs(path: &str) -> bool {
    let Ok(c) = CString::new(path) else {
        return false;
    };
    // SAFETY: statfs on a NUL-terminated path into a zeroed struct.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

fn mount(
    source: &str,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
) -> Result<(), StateError> {
    let err = |source| StateError::Mount {
        what: if fstype == Some("cgroup2") {
            "cgroup2"
        } else {
            "bpffs"
        },
        path: target.to_string(),
        source,
    };
    fs::create_dir_all(target).map_err(err)?;
    let s = CString::new(source).expect("no NUL");
    let t = CString::new(target).expect("no NUL");
    let f = fstype.map(|f| CString::new(f).expect("no NUL"));
    // SAFETY: valid NUL-terminated strings; null data is allowed.
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            f.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// True inside `ip netns exec`, which mounts a sysfs named after the
/// namespace on /sys in a private mount namespace.
fn inside_ip_netns_exec() -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().rev().any(|l| {
        let (pre, post) = l.split_once(" - ").unwrap_or((l, ""));
        let mut pre = pre.split(' ');
        let mount_point = pre.nth(4);
        let mut post = post.split(' ');
        mount_point == Some("/sys") && post.next() == Some("sysfs") && post.next() != Some("sysfs")
    })
}

/// The bpffs directory to pin in, mounting bpffs where needed.
pub fn bpffs_root() -> Result<PathBuf, StateError> {
    if let Ok(dir) = std::env::var("NETBEAST_BPFFS") {
        return Ok(dir.into());
    }
    if inside_ip_netns_exec() {
        return if is_bpffs(BPFFS_ALIAS) {
            Ok(BPFFS_ALIAS.into())
        } else {
            Err(StateError::NoBpffs)
        };
    }
    if !is_bpffs(BPFFS) {
        mount("bpf", BPFFS, Some("bpf"), 0)?;
    }
    if !is_bpffs(BPFFS_ALIAS) {
        mount(BPFFS, BPFFS_ALIAS, None, libc::MS_BIND)?;
    }
    Ok(BPFFS.into())
}

/// The mount point of the root of the cgroup v2 hierarchy (of this cgroup
/// namespace), where the socket programs attach: they then run for every
/// process. Mounts cgroup2 at [`CGROUP_ALIAS`] when no mount of it is
/// visible.
pub fn cgroup2_root() -> Result<PathBuf, StateError> {
    let info = fs::read_to_string("/proc/self/mountinfo")
        .map_err(io("cannot read", Path::new("/proc/self/mountinfo")))?;
    // Fields: id parent dev root mount-point options ... - fstype source ...
    // A bind mount of a sub-cgroup has another root than "/": not that one.
    let found = info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let mut pre = pre.split(' ');
        let root = pre.nth(3)?;
        let mount_point = pre.next()?;
        (post.split(' ').next() == Some("cgroup2") && root == "/" && !mount_point.contains('\\'))
            .then(|| PathBuf::from(mount_point))
    });
    if let Some(path) = found {
        return Ok(path);
    }
    mount("none", CGROUP_ALIAS, Some("cgroup2"), 0)?;
    Ok(CGROUP_ALIAS.into())
}

/// Moves this process into the network namespace `/run/netns/NAME`, like
/// `ip netns exec` but without hiding bpffs.
pub fn enter_netns(name: &str) -> Result<(), StateError> {
    let err = |source| StateError::Netns {
        name: name.to_string(),
        source,
    };
    let f = fs::File::open(Path::new("/run/netns").join(name)).map_err(err)?;
    // SAFETY: setns on a valid namespace fd.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

pub fn require_root() -> Result<(), StateError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(StateError::NotRoot);
    }
    Ok(())
}

/// The data plane and rule state of the current network namespace.
pub struct Namespace {
    /// Inode of /proc/self/ns/net: names this namespace's state.
    pub id: u64,
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
}

/// Held while a command reads and rewrites the state; released on drop.
pub struct Lock {
    _file: fs::File,
}

impl Namespace {
    pub fn current() -> Result<Namespace, StateError> {
        require_root()?;
        let ns = Path::new("/proc/self/ns/net");
        let id = fs::metadata(ns).map_err(io("cannot read", ns))?.ino();
        let pin_dir = bpffs_root()?.join("netbeast").join(id.to_string());
        let state_dir = Path::new(STATE_ROOT).join(id.to_string());
        Ok(Namespace {
            id,
            pin_dir,
            state_dir,
        })
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.pin_dir.join("maps")
    }

    pub fn links_dir(&self) -> PathBuf {
        self.pin_dir.join("links")
    }

    /// True once the maps exist (rules applied or an interface attached).
    pub fn has_dataplane(&self) -> bool {
        self.maps_dir().join("ACTIVE").exists()
    }

    fn ruleset_path(&self) -> PathBuf {
        self.state_dir.join("ruleset.json")
    }

    /// Takes the namespace's lock, like `iptables -w`: concurrent commands
    /// run one after the other.
    pub fn lock(&self) -> Result<Lock, StateError> {
        fs::create_dir_all(&self.state_dir).map_err(io("cannot create", &self.state_dir))?;
        let path = self.state_dir.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("cannot open", &path))?;
        // SAFETY: flock on an open fd.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io("cannot lock", &path)(std::io::Error::last_os_error()));
        }
        Ok(Lock { _file: file })
    }

    /// The ruleset as the user wrote it; rule counters hold the totals
    /// folded in at the last change.
    pub fn load_ruleset(&self) -> Result<Ruleset, StateError> {
        let path = self.ruleset_path();
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ruleset::default()),
            Err(e) => Err(io("cannot read", &path)(e)),
        }
    }

    /// Writes the ruleset atomically: a temporary file renamed over the old.
    pub fn save_ruleset(&self, ruleset: &Ruleset) -> Result<(), StateError> {
        fs::create_dir_all(&self.state_dir).map_err(io("cannot create", &self.state_dir))?;
        let path = self.ruleset_path();
        let tmp = self
            .state_dir
            .join(format!("ruleset.json.{}", std::process::id()));
        let text = serde_json::to_string(ruleset).expect("the rule model always serializes");
        let mut f = fs::File::create(&tmp).map_err(io("cannot write", &tmp))?;
        f.write_all(text.as_bytes())
            .map_err(io("cannot write", &tmp))?;
        f.sync_all().map_err(io("cannot write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("cannot replace", &path))?;
        Ok(())
    }

    /// Removes every pin and the stored ruleset of this namespace.
    pub fn remove_all(&self) -> Result<(), StateError> {
        for dir in [&self.pin_dir, &self.state_dir] {
            match fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("cannot remove", dir)(e)),
            }
        }
        Ok(())
    }
}

/// An interface of the namespace with its IPv4 addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    pub addrs: Vec<Ipv4Addr>,
    /// The Ethernet address (None for links without one).
    pub mac: Option<[u8; 6]>,
}

/// Every interface of the current network namespace.
pub fn links() -> Vec<Link> {
    let mut out: Vec<Link> = Vec::new();
    // SAFETY: if_nameindex returns an array terminated by a zero entry,
    // freed below.
    unsafe {
        let list = libc::if_nameindex();
        if !list.is_null() {
            let mut p = list;
            while (*p).if_index != 0 {
                let name = CStr::from_ptr((*p).if_name).to_string_lossy().into_owned();
                out.push(Link {
                    ifindex: (*p).if_index,
                    name,
                    addrs: Vec::new(),
                    mac: None,
                });
                p = p.add(1);
            }
            libc::if_freenameindex(list);
        }
        let mut ifa: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut ifa) == 0 {
            let mut p = ifa;
            while !p.is_null() {
                let addr = (*p).ifa_addr;
                if !addr.is_null() && (*addr).sa_family as i32 == libc::AF_INET {
                    let sin = addr as *const libc::sockaddr_in;
                    let ip = Ipv4Addr::from(u32::from_be((*sin).sin_addr.s_addr));
                    let name = CStr::from_ptr((*p).ifa_name).to_string_lossy();
                    if let Some(l) = out.iter_mut().find(|l| l.name == name) {
                        l.addrs.push(ip);
                    }
                } else if !addr.is_null() && (*addr).sa_family as i32 == libc::AF_PACKET {
                    let sll = addr as *const libc::sockaddr_ll;
                    let name = CStr::from_ptr((*p).ifa_name).to_string_lossy();
                    if (*sll).sll_halen == 6
                        && let Some(l) = out.iter_mut().find(|l| l.name == name)
                    {
                        let mut mac = [0u8; 6];
                        let addr = (*sll).sll_addr;
                        mac.copy_from_slice(&addr[..6]);
                        l.mac = Some(mac);
                    }
                }
                p = (*p).ifa_next;
            }
            libc::freeifaddrs(ifa);
        }
    }
    out
}

/// `net.ipv4.conf.<name>.route_localnet` of the current namespace (false
/// when it cannot be read: the kernel's default).
pub fn route_localnet(name: &str) -> bool {
    fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{name}/route_localnet"))
        .is_ok_and(|v| v.trim() == "1")
}

/// The links as the compiler sees them (names for `-i`/`-o`).
pub fn interfaces(links: &[Link]) -> Vec<Interface> {
    links
        .iter()
        .map(|l| Interface {
            ifindex: l.ifindex,
            name: l.name.clone(),
        })
        .collect()
}

pub fn ifindex(name: &str) -> Result<u32, StateError> {
    let c = CString::new(name).map_err(|_| StateError::UnknownInterface(name.to_string()))?;
    // SAFETY: NUL-terminated name.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(StateError::UnknownInterface(name.to_string())),
        i => Ok(i),
    }
}

/// The kernel driver behind an interface (`veth`, `virtio_net`...), from
/// the ETHTOOL_GDRVINFO ioctl.
pub fn driver(name: &str) -> Option<String> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut DrvInfo,
        _pad: [u8; 16],
    }
    if name.len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: a datagram socket for the ioctl, a zeroed request naming the
    // interface and pointing at a live DrvInfo, and the socket closed after.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return None;
        }
        let mut info: DrvInfo = std::mem::zeroed();
        info.cmd = ETHTOOL_GDRVINFO;
        let mut req: IfReq = std::mem::zeroed();
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        req.data = &mut info;
        let rc = libc::ioctl(fd, SIOCETHTOOL as _, &mut req);
        libc::close(fd);
        if rc != 0 {
            return None;
        }
        let end = info.driver.iter().position(|b| *b == 0).unwrap_or(32);
        Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
    }
}
