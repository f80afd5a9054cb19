//! Per-network-namespace state (DESIGN §5): where the pins live, the rule
//! source of truth, and the lock that serializes concurrent invocations.

use std::{
    ffi::{CStr, CString},
    fs,
    io::Write,
    net::Ipv4Addr,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    compile::{GuardSlots, Interface},
    fault,
    loader::ACTIVE_SEQ_MASK,
    rules::{
        journal::{self, Change},
        model::Ruleset,
    },
};

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
/// The per-namespace lock files, outside the namespaces' state directories:
/// removing a namespace's state (`detach --all`, a dead owner's cleanup)
/// must never unlink a lock that another command is waiting on.
pub const LOCK_DIR: &str = "/run/netbeast/locks";
/// The stored ruleset, in a namespace's state directory.
const RULESET_FILE: &str = "ruleset.json";
/// The rule file's binary image: what `ruleset.json` parses to, encoded
/// with postcard, read instead of parsing the JSON when its stamp names
/// the rule file as it is and the binary reading it (see [`ImageStamp`]).
const IMAGE_FILE: &str = "ruleset.bin";
/// The image's first bytes: its format (the model's layout is the
/// binary's, see [`ImageStamp`]).
const IMAGE_MAGIC: &[u8; 8] = b"NBIMG\x00\x00\x01";
/// Bytes enough for an image's magic and stamp (ten varints of at most
/// ten bytes each).
const IMAGE_HEAD_MAX: usize = 128;
/// A ruleset written for a commit whose kernel switch may or may not have
/// happened (see [`Namespace::write_pending`]).
const PENDING_FILE: &str = "ruleset.next";
/// The changes committed since the rule file was last written whole, one
/// JSON line each after a header line naming the rule file's commit
/// (ARCHITECTURE.md, "The rule file's journal").
const JOURNAL_FILE: &str = "journal";
/// Every counter of the ruleset the journal ends with: a JSON header line
/// (its commit, the interfaces) and the counters in binary.
const COUNTERS_FILE: &str = "counters";
/// The counter file of a journaled commit whose switch may or may not have
/// happened.
const PENDING_COUNTERS_FILE: &str = "counters.next";
/// Changes appended before the rule file is written whole again: bounds
/// what a read replays and the journal's size.
pub const JOURNAL_MAX_RECORDS: usize = 64;
/// A change carrying more rules than this (a flush of a user chain
/// recreated, a rename that rewrites jumps) is written as a whole rule
/// file: its record would cost as much.
pub const JOURNAL_MAX_RULES: usize = 256;
/// The state slots of the running generation's guards (see
/// [`crate::compile::GuardSlots`]), tagged with its commit sequence number.
const GUARD_SLOTS_FILE: &str = "guard-slots.json";
/// The state slots of a generation about to be switched to.
const PENDING_GUARD_SLOTS_FILE: &str = "guard-slots.next";
/// The cookie of the namespace that owns a state directory.
const OWNER_FILE: &str = "netns-cookie";
/// Present while `detach --all` runs: a later command finishes the removal.
const REMOVING_FILE: &str = "removing";
/// Per-interface records: `iface-<ifindex>`.
const IFACE_PREFIX: &str = "iface-";
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("netbeast needs root (CAP_SYS_ADMIN and CAP_BPF): run it with sudo")]
    NotRoot,
    #[error(
        "bpffs is not reachable from here: `ip netns exec` hides {BPFFS}; run `cargo xtask setup` \
         once, or `netbeast attach IFACE` from the root namespace, which also mounts it at \
         {BPFFS_ALIAS}; or use `netbeast --netns NAME ...` instead of `ip netns exec NAME netbeast ...`"
    )]
    NoBpffs,
    #[error(
        "bpffs is not mounted at {BPFFS}, so the data plane of this namespace cannot be found \
         or created; only `netbeast attach` mounts it: mount it with `mount -t bpf bpf {BPFFS}` \
         (from the mount namespace where netbeast's pins live), or run `netbeast attach IFACE`"
    )]
    BpffsNotMounted,
    #[error(
        "this namespace has netbeast state ({state}) but no bpffs is mounted at {BPFFS} here, so \
         its data plane is out of sight; run netbeast in the mount namespace where its bpffs is \
         mounted (a fresh `mount -t bpf` would be empty, not the one holding the data plane), \
         or `netbeast detach --all` to forget the state"
    )]
    PinsHidden { state: PathBuf },
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
    #[error(
        "another netbeast command holds the lock of this namespace ({}); stopped waiting after \
         {seconds}s (-w {seconds}); wait longer with a larger -w, or without -w",
        path.display()
    )]
    LockBusy { path: PathBuf, seconds: u64 },
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

/// The bpffs directory to pin in. Only `attach` may mount bpffs
/// (`may_mount`): a command that reads or changes rules and found no bpffs
/// would otherwise mount an empty one and build a second, throwaway data
/// plane there while the real one, pinned in a bpffs it cannot see, keeps
/// enforcing the old rules. `None`: no bpffs is visible (and none mounted).
pub fn bpffs_root(may_mount: bool) -> Result<Option<PathBuf>, StateError> {
    if let Ok(dir) = std::env::var("NETBEAST_BPFFS") {
        return Ok(Some(dir.into()));
    }
    if inside_ip_netns_exec() {
        return if is_bpffs(BPFFS_ALIAS) {
            Ok(Some(BPFFS_ALIAS.into()))
        } else {
            Err(StateError::NoBpffs)
        };
    }
    if !is_bpffs(BPFFS) {
        if !may_mount {
            return Ok(None);
        }
        mount("bpf", BPFFS, Some("bpf"), 0)?;
    }
    if !is_bpffs(BPFFS_ALIAS) && may_mount {
        mount(BPFFS, BPFFS_ALIAS, None, libc::MS_BIND)?;
    }
    Ok(Some(BPFFS.into()))
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
///
/// Both are found by the namespace's inode number, which the kernel reuses
/// once a namespace is gone; what proves that they belong to this namespace
/// is its cookie (`SO_NETNS_COOKIE`, never reused while the system runs),
/// recorded with them and checked by every command (see `cli::reconcile`).
pub struct Namespace {
    /// Inode of the calling thread's /proc/thread-self/ns/net: names this
    /// namespace's state.
    pub id: u64,
    /// The namespace's cookie: identifies it for as long as the system runs.
    pub cookie: u64,
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
    /// False when no bpffs is visible (and this command may not mount one).
    bpffs: bool,
}

/// Held while a command reads and rewrites the state; released on drop.
pub struct Lock {
    _file: fs::File,
}

/// What a state directory says about the interface `ifindex`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceRecord {
    /// Its name when it was attached (to name it once it is gone).
    pub name: String,
    /// Whether the FORWARD fast path may send frames out of it.
    pub fast_path: bool,
    /// The ways frames leave it (`None`: recorded by an earlier netbeast).
    #[serde(default)]
    pub paths: Option<crate::paths::IfacePaths>,
}

impl IfaceRecord {
    /// Its paths, or what an earlier netbeast used.
    pub fn paths(&self) -> crate::paths::IfacePaths {
        self.paths
            .clone()
            .unwrap_or_else(|| crate::paths::IfacePaths::legacy(self.fast_path))
    }
}

/// The ruleset file: the ruleset, the commit sequence number the kernel
/// was switched to when it was written (see [`Namespace::write_pending`]),
/// and the interfaces (ifindex, name) its `-i`/`-o` names were resolved
/// against. `seq` goes first: [`stored_seq`] reads it without parsing
/// the rest.
#[derive(Serialize)]
struct StoredRef<'a> {
    seq: u32,
    ruleset: &'a Ruleset,
    interfaces: &'a [(u32, String)],
}

#[derive(Deserialize)]
struct Stored {
    seq: u32,
    ruleset: Ruleset,
    #[serde(default)]
    interfaces: Option<Vec<(u32, String)>>,
}

/// A guard slot file: the commit it describes, and (identity in hex,
/// slot) for each guard that keeps state of its own rule.
#[derive(Serialize, Deserialize)]
struct StoredGuardSlots {
    seq: u32,
    slots: Vec<(String, u32)>,
    /// `GuardSlots::coarsened`; absent in the files of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    coarsened: Option<crate::compile::Coarsening>,
}

/// A stored ruleset and what it was committed with.
pub struct StoredRuleset {
    pub ruleset: Ruleset,
    /// `None`: a file of an earlier version, or no file.
    pub seq: Option<u32>,
    /// The interfaces its names were resolved against (`None`: unknown).
    pub interfaces: Option<Vec<(u32, String)>>,
}

/// Leading text of a ruleset file that carries a sequence number; files of
/// earlier netbeast versions hold the bare ruleset.
const STORED_PREFIX: &str = "{\"seq\":";

/// A file as `stat` names it: the same identity, size and modification
/// time mean the same contents, short of a clock set back and a write
/// of the same size in the same nanosecond.
#[derive(Serialize, Deserialize, PartialEq, Eq, Debug)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileId {
    fn of(path: &Path) -> Option<FileId> {
        let m = fs::metadata(path).ok()?;
        Some(FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        })
    }
}

/// What an image is valid for: the rule file it was made from (written
/// as `ruleset.next` and renamed, so the same inode; an image of a
/// pending file the commit dropped, or of a rule file written since by
/// hand or by another version, names another file and is ignored), and
/// the binary that wrote it (the model's encoding has no field names: a
/// binary built from other sources might read it wrongly, so any other
/// binary ignores it and parses the JSON).
#[derive(Serialize, Deserialize, PartialEq, Eq, Debug)]
struct ImageStamp {
    exe: FileId,
    rules: FileId,
}

impl ImageStamp {
    fn of(rules: &Path) -> Option<ImageStamp> {
        Some(ImageStamp {
            exe: FileId::of(Path::new("/proc/self/exe"))?,
            rules: FileId::of(rules)?,
        })
    }
}

/// The image's contents after its stamp.
#[derive(Deserialize)]
struct Image {
    seq: Option<u32>,
    ruleset: Ruleset,
    interfaces: Option<Vec<(u32, String)>>,
}

/// [`Image`] to write (the same encoding).
#[derive(Serialize)]
struct ImageRef<'a> {
    seq: Option<u32>,
    ruleset: &'a Ruleset,
    interfaces: Option<&'a [(u32, String)]>,
}

/// The stored ruleset of `image` (the bytes of an image file) when it is
/// valid for `stamp`; `None` for anything else (a stale or damaged image).
fn read_image(image: &[u8], stamp: &ImageStamp) -> Option<StoredRuleset> {
    let rest = image.strip_prefix(IMAGE_MAGIC)?;
    let (written, rest) = postcard::take_from_bytes::<ImageStamp>(rest).ok()?;
    if written != *stamp {
        return None;
    }
    let image: Image = postcard::from_bytes(rest).ok()?;
    Some(StoredRuleset {
        ruleset: image.ruleset,
        seq: image.seq,
        interfaces: image.interfaces,
    })
}

/// An image of `stored`, stamped.
fn image_bytes(stored: &ImageRef, stamp: &ImageStamp) -> Vec<u8> {
    let mut bytes = IMAGE_MAGIC.to_vec();
    bytes.extend(postcard::to_stdvec(stamp).expect("a stamp always serializes"));
    bytes.extend(crate::rules::model::to_image(stored));
    bytes
}

/// Parses a ruleset file (of this version, or the bare ruleset of an
/// earlier one).
fn parse_stored(path: &Path, text: &str) -> Result<StoredRuleset, StateError> {
    let corrupt = |e: serde_json::Error| StateError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if text.starts_with(STORED_PREFIX) {
        let stored: Stored = serde_json::from_str(text).map_err(corrupt)?;
        Ok(StoredRuleset {
            ruleset: stored.ruleset,
            seq: Some(stored.seq),
            interfaces: stored.interfaces,
        })
    } else {
        Ok(StoredRuleset {
            ruleset: serde_json::from_str(text).map_err(corrupt)?,
            seq: None,
            interfaces: None,
        })
    }
}

/// The sequence number of a ruleset file without parsing the ruleset.
fn stored_seq(text: &str) -> Option<u32> {
    let rest = text.strip_prefix(STORED_PREFIX)?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

/// The commit a journal continues, from its header line.
fn journal_base(text: &str) -> Option<u32> {
    let rest = text.strip_prefix(JOURNAL_PREFIX)?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

/// Leading text of a journal's header line.
const JOURNAL_PREFIX: &str = "{\"base\":";

#[derive(Serialize, Deserialize)]
struct JournalRecord {
    seq: u32,
    change: Change,
}

#[derive(Serialize, Deserialize)]
struct CountersHeader {
    seq: u32,
    interfaces: Vec<(u32, String)>,
}

/// A journal read against its rule file: the records that count (those
/// up to the commit the counter file describes: a later one was appended
/// by a commit whose switch never happened) and whether lines past them
/// were left out.
struct Journal {
    records: Vec<JournalRecord>,
    dropped: bool,
}

/// Parses `text`, the journal continuing rule file commit `base`, keeping
/// the consecutive records (`base + 1`, `base + 2`, ...) up to `committed`;
/// `None` when the journal continues another rule file (it outlived a
/// whole-file commit, and means nothing).
fn parse_journal(text: &str, base: u32, committed: Option<u32>) -> Option<Journal> {
    let mut lines = text.split_inclusive('\n');
    if journal_base(lines.next()?)? != base {
        return None;
    }
    let mut records = Vec::new();
    let mut expect = (base + 1) & ACTIVE_SEQ_MASK;
    let mut total = 0;
    for line in lines {
        total += 1;
        // A line without its newline is an append a kill cut short.
        let Some(line) = line.strip_suffix('\n') else {
            break;
        };
        let Ok(record) = serde_json::from_str::<JournalRecord>(line) else {
            break;
        };
        if record.seq != expect {
            break;
        }
        expect = (expect + 1) & ACTIVE_SEQ_MASK;
        records.push(record);
    }
    // Keep what the counter file's commit reached. Its file is renamed
    // into place only after the switch, so a record is in force only if
    // it is (or precedes) the counter file's commit: none without one (the
    // first record's switch never happened), none with a counter file of
    // another journal.
    match committed.and_then(|c| records.iter().position(|r| r.seq == c)) {
        Some(at) => records.truncate(at + 1),
        None => records.clear(),
    }
    let dropped = records.len() < total;
    Some(Journal { records, dropped })
}

/// Reads the head of `path`: enough for a sequence number.
fn read_head(path: &Path) -> Option<String> {
    let mut f = fs::File::open(path).ok()?;
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut f, &mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn remove_if_present(path: &Path) -> Result<(), StateError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("cannot remove", path)(e)),
    }
}

fn remove_dir_if_present(path: &Path) -> Result<(), StateError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("cannot remove", path)(e)),
    }
}

/// Writes `text` to `path` atomically: a temporary file beside it,
/// renamed over it. A crash leaves the old file or the new one, and at
/// worst the temporary, which [`Namespace::remove_temporaries`] removes.
///
/// No fsync: the files describe maps, pins and a network namespace that do
/// not outlive the running kernel, and a killed process's writes are in
/// the page cache, which every later reader sees, in the order they were
/// made (a rename after the write it publishes). Only a crash of the whole
/// machine could lose them, and it loses what they describe with them.
/// On a disk-backed `/run` the three fsyncs of a change cost 1 to 4 ms of
/// wall time, more than the rest of a `-N`.
fn write_atomic(dir: &Path, path: &Path, text: &[u8]) -> Result<(), StateError> {
    let name = path.file_name().expect("a file name").to_string_lossy();
    let tmp = dir.join(format!("{name}.{}{TMP_SUFFIX}", std::process::id()));
    let mut f = fs::File::create(&tmp).map_err(io("cannot write", &tmp))?;
    f.write_all(text).map_err(io("cannot write", &tmp))?;
    drop(f);
    fault::point("state: temporary written");
    fs::rename(&tmp, path).map_err(io("cannot replace", path))?;
    Ok(())
}

/// The ipsets' definitions, beside the ruleset (their members are in the
/// pinned maps).
const IPSETS_FILE: &str = "ipsets.json";

/// Temporaries end in this (after the writer's pid).
const TMP_SUFFIX: &str = ".tmp";

impl Namespace {
    /// The state of the current namespace, for a command that may not mount
    /// bpffs (everything but `attach`).
    pub fn current() -> Result<Namespace, StateError> {
        Self::open(false)
    }

    /// The state of the current namespace, mounting bpffs if none is
    /// mounted (`attach`).
    pub fn current_for_attach() -> Result<Namespace, StateError> {
        Self::open(true)
    }

    fn open(may_mount: bool) -> Result<Namespace, StateError> {
        require_root()?;
        // The calling thread's namespace, as the cookie's socket is made
        // in it: /proc/self names the process's main thread, which a
        // thread that entered a namespace (`Netns::in_netns`, the bench)
        // has left behind — its state would land under the wrong inode.
        let ns = Path::new("/proc/thread-self/ns/net");
        let id = fs::metadata(ns).map_err(io("cannot read", ns))?.ino();
        let cookie = crate::loader::netns_cookie().map_err(|source| StateError::Io {
            what: "cannot read the network namespace cookie (SO_NETNS_COOKIE, Linux ≥ 5.14) of",
            path: ns.to_path_buf(),
            source,
        })?;
        let root = bpffs_root(may_mount)?;
        let bpffs = root.is_some();
        let pin_dir = root
            .unwrap_or_else(|| BPFFS.into())
            .join("netbeast")
            .join(id.to_string());
        let state_dir = Path::new(STATE_ROOT).join(id.to_string());
        Ok(Namespace {
            id,
            cookie,
            pin_dir,
            state_dir,
            bpffs,
        })
    }

    /// The state of the namespace with inode `id` as seen from here (gc).
    pub fn by_id(id: u64, pin_root: &Path) -> Namespace {
        Namespace {
            id,
            cookie: 0,
            pin_dir: pin_root.join("netbeast").join(id.to_string()),
            state_dir: Path::new(STATE_ROOT).join(id.to_string()),
            bpffs: true,
        }
    }

    /// Fails unless bpffs is visible: creating a data plane needs it.
    pub fn require_bpffs(&self) -> Result<(), StateError> {
        if self.bpffs {
            Ok(())
        } else {
            Err(StateError::BpffsNotMounted)
        }
    }

    /// Fails when this namespace has state on record but its pins cannot
    /// be seen (no bpffs here): reading or changing rules then would act on
    /// nothing while the real data plane keeps running.
    pub fn check_pins_visible(&self) -> Result<(), StateError> {
        if !self.bpffs && self.state_dir.join(OWNER_FILE).exists() {
            return Err(StateError::PinsHidden {
                state: self.state_dir.clone(),
            });
        }
        Ok(())
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.pin_dir.join("maps")
    }

    pub fn links_dir(&self) -> PathBuf {
        self.pin_dir.join("links")
    }

    /// True once the maps exist (rules applied or an interface attached).
    pub fn has_dataplane(&self) -> bool {
        self.bpffs && self.maps_dir().join("ACTIVE").exists()
    }

    fn ruleset_path(&self) -> PathBuf {
        self.state_dir.join(RULESET_FILE)
    }

    fn pending_path(&self) -> PathBuf {
        self.state_dir.join(PENDING_FILE)
    }

    fn journal_path(&self) -> PathBuf {
        self.state_dir.join(JOURNAL_FILE)
    }

    fn counters_path(&self) -> PathBuf {
        self.state_dir.join(COUNTERS_FILE)
    }

    fn pending_counters_path(&self) -> PathBuf {
        self.state_dir.join(PENDING_COUNTERS_FILE)
    }

    /// The commit the counter file describes (`None`: no file).
    fn counters_seq(&self) -> Option<u32> {
        stored_seq(&read_head(&self.counters_path())?)
    }

    /// The journal continuing rule file commit `base` (`None`: none, or
    /// one left from before the rule file was last written whole).
    fn read_journal(&self, base: u32) -> Result<Option<Journal>, StateError> {
        let path = self.journal_path();
        match fs::read_to_string(&path) {
            Ok(text) => Ok(parse_journal(&text, base, self.counters_seq())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("cannot read", &path)(e)),
        }
    }

    /// Takes the namespace's lock, like `iptables -w`: concurrent commands
    /// run one after the other. Whoever removes a lock file does so while
    /// holding it, and a waiter that then gets the lock of a file no longer
    /// at the path takes the new one instead: two commands never run at
    /// once, whatever removes what.
    pub fn lock(&self) -> Result<Lock, StateError> {
        lock_file(&Path::new(LOCK_DIR).join(self.id.to_string()))
    }

    /// [`Namespace::lock`], giving up after `limit` (`-w SECONDS`).
    pub fn lock_within(&self, limit: Option<Duration>) -> Result<Lock, StateError> {
        lock_file_within(&Path::new(LOCK_DIR).join(self.id.to_string()), limit)
    }

    /// The cookie of the namespace that owns the state directory, if
    /// recorded.
    pub fn recorded_owner(&self) -> Option<u64> {
        fs::read_to_string(self.state_dir.join(OWNER_FILE))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Records this namespace as the owner of the state directory, before
    /// anything else is created in it or in the pin directory.
    pub fn record_owner(&self) -> Result<(), StateError> {
        if self.recorded_owner() == Some(self.cookie) {
            return Ok(());
        }
        fs::create_dir_all(&self.state_dir).map_err(io("cannot create", &self.state_dir))?;
        write_atomic(
            &self.state_dir,
            &self.state_dir.join(OWNER_FILE),
            self.cookie.to_string().as_bytes(),
        )
    }

    /// True when a state directory exists at all.
    pub fn has_state(&self) -> bool {
        self.state_dir.exists()
    }

    /// The ruleset as the user wrote it; rule counters hold the totals
    /// folded in at the last change.
    pub fn load_ruleset(&self) -> Result<Ruleset, StateError> {
        Ok(self.load_stored()?.ruleset)
    }

    fn image_path(&self) -> PathBuf {
        self.state_dir.join(IMAGE_FILE)
    }

    /// True when the rule file has no image this binary would read (its
    /// stamp, at the head of the image, names another rule file or
    /// binary, or there is none); false also when no stamp can be made
    /// (no rule file, no `/proc`), where an image would not be read
    /// anyway.
    fn image_is_stale(&self) -> bool {
        use std::io::Read;
        let Some(stamp) = ImageStamp::of(&self.ruleset_path()) else {
            return false;
        };
        let mut head = Vec::with_capacity(IMAGE_HEAD_MAX);
        let read = fs::File::open(self.image_path())
            .and_then(|f| f.take(IMAGE_HEAD_MAX as u64).read_to_end(&mut head));
        let written = read.ok().and_then(|_| {
            let rest = head.strip_prefix(IMAGE_MAGIC)?;
            postcard::take_from_bytes::<ImageStamp>(rest).ok()
        });
        written.is_none_or(|(written, _)| written != stamp)
    }

    /// The stored ruleset and what it was committed with: from the rule
    /// file's image when it is valid, else from the rule file.
    pub fn load_stored(&self) -> Result<StoredRuleset, StateError> {
        let path = self.ruleset_path();
        let image = ImageStamp::of(&path)
            .and_then(|stamp| read_image(&fs::read(self.image_path()).ok()?, &stamp));
        if let Some(mut stored) = image {
            self.replay_journal(&mut stored)?;
            return Ok(stored);
        }
        match fs::read_to_string(&path) {
            Ok(text) => {
                let mut stored = parse_stored(&path, &text)?;
                drop(text);
                self.replay_journal(&mut stored)?;
                Ok(stored)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StoredRuleset {
                ruleset: Ruleset::default(),
                seq: None,
                interfaces: None,
            }),
            Err(e) => Err(io("cannot read", &path)(e)),
        }
    }

    /// Applies the journal's changes to the rule file's ruleset, and the
    /// counter file's counters and interfaces when it describes the
    /// commit the journal ends with.
    fn replay_journal(&self, stored: &mut StoredRuleset) -> Result<(), StateError> {
        let Some(base) = stored.seq else {
            return Ok(());
        };
        let Some(journal) = self.read_journal(base)? else {
            return Ok(());
        };
        let corrupt = |message: String| StateError::Corrupt {
            path: self.journal_path(),
            message,
        };
        journal::apply_all(
            &mut stored.ruleset,
            journal.records.iter().map(|r| &r.change),
        )
        .map_err(|(n, e)| corrupt(format!("commit {}: {e}", journal.records[n].seq)))?;
        if let Some(last) = journal.records.last() {
            stored.seq = Some(last.seq);
        }
        let path = self.counters_path();
        let Ok(bytes) = fs::read(&path) else {
            return Ok(());
        };
        let Some(split) = bytes.iter().position(|&b| b == b'\n') else {
            return Ok(());
        };
        let Ok(header) = serde_json::from_slice::<CountersHeader>(&bytes[..split]) else {
            return Ok(());
        };
        if Some(header.seq) != stored.seq {
            return Ok(());
        }
        if !journal::decode_counters(&mut stored.ruleset, &bytes[split + 1..]) {
            return Err(StateError::Corrupt {
                path,
                message: "its counters are not as many as the ruleset's rules".into(),
            });
        }
        stored.interfaces = Some(header.interfaces);
        Ok(())
    }

    /// First half of a commit that appends `change` to the journal instead
    /// of writing the rule file whole: writes the counter file of commit
    /// `seq` (`ruleset`'s counters, after the change) beside the current
    /// one, then appends the change. Then the caller switches the kernel
    /// and calls [`Namespace::finish_pending_change`]. A kill in between is
    /// settled as for [`Namespace::write_pending`]: the counter file of the
    /// kernel's commit wins, and journal records past the commit it
    /// describes are dropped. False (and nothing written) when the change
    /// is to be written whole: no rule file yet, a journal at
    /// `JOURNAL_MAX_RECORDS`, or a change past `JOURNAL_MAX_RULES`.
    pub fn write_pending_change(
        &self,
        change: &Change,
        ruleset: &Ruleset,
        seq: u32,
        interfaces: &[(u32, String)],
    ) -> Result<bool, StateError> {
        if change.rule_count() > JOURNAL_MAX_RULES {
            return Ok(false);
        }
        let Some(base) = read_head(&self.ruleset_path()).and_then(|h| stored_seq(&h)) else {
            return Ok(false);
        };
        // A rule file without a valid image (written by an earlier
        // version or another binary: an upgrade) is written whole once,
        // which makes its image, rather than parsed on every call until
        // the journal fills.
        if self.image_is_stale() {
            return Ok(false);
        }
        let journal = self.read_journal(base)?;
        if journal
            .as_ref()
            .is_some_and(|j| j.records.len() >= JOURNAL_MAX_RECORDS || j.dropped)
        {
            return Ok(false);
        }
        let mut counters = serde_json::to_vec(&CountersHeader {
            seq,
            interfaces: interfaces.to_vec(),
        })
        .expect("a header always serializes");
        counters.push(b'\n');
        counters.extend(journal::encode_counters(ruleset));
        write_atomic(&self.state_dir, &self.pending_counters_path(), &counters)?;
        fault::point("state: pending counters written");
        let mut line = serde_json::to_vec(&JournalRecord {
            seq,
            change: change.clone(),
        })
        .expect("a change always serializes");
        line.push(b'\n');
        let path = self.journal_path();
        if journal.is_none() {
            let mut text = format!("{JOURNAL_PREFIX}{base}}}\n").into_bytes();
            text.extend(line);
            write_atomic(&self.state_dir, &path, &text)?;
        } else {
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io("cannot write", &path))?;
            // Not synced, as `write_atomic`'s files are not.
            f.write_all(&line).map_err(io("cannot write", &path))?;
        }
        Ok(true)
    }

    /// Last half of a journaled commit: the kernel runs it; its counter
    /// file becomes the current one.
    pub fn finish_pending_change(&self) -> Result<(), StateError> {
        let (pending, path) = (self.pending_counters_path(), self.counters_path());
        fs::rename(&pending, &path).map_err(io("cannot replace", &path))
    }

    /// First half of a commit: writes the ruleset that the kernel is about
    /// to be switched to, tagged with the switch's sequence number `seq`,
    /// beside the current file. Then the caller switches the kernel, then
    /// calls [`Namespace::finish_pending`]. After a crash anywhere in
    /// between, [`Namespace::settle_pending`] compares `seq` with the
    /// kernel's: equal, the switch happened and the new file wins; else it
    /// did not and the old file stays. The two never disagree.
    pub fn write_pending(
        &self,
        ruleset: &Ruleset,
        seq: u32,
        interfaces: &[(u32, String)],
    ) -> Result<(), StateError> {
        fs::create_dir_all(&self.state_dir).map_err(io("cannot create", &self.state_dir))?;
        let text = serde_json::to_vec(&StoredRef {
            seq,
            ruleset,
            interfaces,
        })
        .expect("the rule model always serializes");
        let pending = self.pending_path();
        write_atomic(&self.state_dir, &pending, &text)?;
        // Its image, stamped with the pending file, which the rename of a
        // switched commit makes the rule file (a dropped one leaves an
        // image no file matches). Only a cache: without a stamp (no
        // /proc) there is none, and the rule file is parsed.
        let Some(stamp) = ImageStamp::of(&pending) else {
            return remove_if_present(&self.image_path());
        };
        let image = ImageRef {
            seq: Some(seq),
            ruleset,
            interfaces: Some(interfaces),
        };
        write_atomic(
            &self.state_dir,
            &self.image_path(),
            &image_bytes(&image, &stamp),
        )
    }

    /// The state slots of the guards of the generation the kernel runs
    /// (commit `kernel_seq`), as the commit that switched to it recorded
    /// them: from the slot file, or from the pending one when a crash came
    /// between the switch and its rename. `None` when no file describes
    /// that commit (a data plane written by an earlier version, a file
    /// lost or damaged): the next ruleset then starts every guard fresh,
    /// which is all that is lost.
    pub fn load_guard_slots(&self, kernel_seq: u32) -> Option<GuardSlots> {
        self.read_guard_slots(kernel_seq, true)
    }

    /// How the compile of the generation the kernel runs (commit
    /// `kernel_seq`) coarsened addresses, read without settling anything
    /// (no lock needed): for `netbeast trace`, which compiles the ruleset
    /// again as the loader did (`compile::compile_hinted`).
    pub fn coarsening(&self, kernel_seq: u32) -> Option<crate::compile::Coarsening> {
        self.read_guard_slots(kernel_seq, false)?.coarsened
    }

    fn read_guard_slots(&self, kernel_seq: u32, settle: bool) -> Option<GuardSlots> {
        [GUARD_SLOTS_FILE, PENDING_GUARD_SLOTS_FILE]
            .into_iter()
            .find_map(|name| {
                let path = self.state_dir.join(name);
                let text = fs::read_to_string(&path).ok()?;
                let stored: StoredGuardSlots = serde_json::from_str(&text).ok()?;
                if stored.seq != kernel_seq {
                    return None;
                }
                let slots = stored
                    .slots
                    .iter()
                    .map(|(id, slot)| Some((u128::from_str_radix(id, 16).ok()?, *slot)))
                    .collect::<Option<_>>()?;
                if settle && name == PENDING_GUARD_SLOTS_FILE {
                    // The switch happened: it is the current record now,
                    // before a next commit writes its own pending one.
                    // (Failing that, the next commit's guards start fresh.)
                    let _ = fs::rename(&path, self.state_dir.join(GUARD_SLOTS_FILE));
                }
                Some(GuardSlots {
                    slots,
                    coarsened: stored.coarsened,
                })
            })
    }

    /// Records the state slots of the generation about to be switched to
    /// (commit `seq`), before the switch; [`Namespace::finish_guard_slots`]
    /// makes them the current ones after it.
    pub fn write_pending_guard_slots(
        &self,
        slots: &GuardSlots,
        seq: u32,
    ) -> Result<(), StateError> {
        fs::create_dir_all(&self.state_dir).map_err(io("cannot create", &self.state_dir))?;
        let mut list: Vec<(String, u32)> = slots
            .slots
            .iter()
            .map(|(id, slot)| (format!("{id:032x}"), *slot))
            .collect();
        list.sort_unstable_by_key(|(_, slot)| *slot);
        let text = serde_json::to_vec(&StoredGuardSlots {
            seq,
            slots: list,
            coarsened: slots.coarsened,
        })
        .expect("slots always serialize");
        write_atomic(
            &self.state_dir,
            &self.state_dir.join(PENDING_GUARD_SLOTS_FILE),
            &text,
        )
    }

    /// After the switch: the pending slot file becomes the current one.
    pub fn finish_guard_slots(&self) -> Result<(), StateError> {
        let (pending, path) = (
            self.state_dir.join(PENDING_GUARD_SLOTS_FILE),
            self.state_dir.join(GUARD_SLOTS_FILE),
        );
        fs::rename(&pending, &path).map_err(io("cannot replace", &path))
    }

    /// Last half of a commit: the kernel runs the pending ruleset; make it
    /// the stored one.
    pub fn finish_pending(&self) -> Result<(), StateError> {
        let (pending, path) = (self.pending_path(), self.ruleset_path());
        fs::rename(&pending, &path).map_err(io("cannot replace", &path))?;
        // The journal and its counters continued the file just replaced:
        // they mean nothing now (and are ignored if a kill leaves them).
        remove_if_present(&self.journal_path())?;
        remove_if_present(&self.counters_path())
    }

    /// Settles a commit that a crash interrupted: keeps the pending ruleset
    /// if the kernel was switched to it (`kernel_seq`), drops it otherwise.
    /// Returns what was done, for the report.
    pub fn settle_pending(&self, kernel_seq: Option<u32>) -> Result<Option<String>, StateError> {
        // The guard slots of the same commit, settled the same way (quietly:
        // losing them costs only state, which a fresh start has anyway).
        let slots = self.state_dir.join(PENDING_GUARD_SLOTS_FILE);
        if let Ok(text) = fs::read_to_string(&slots) {
            let seq = stored_seq(&text);
            if seq.is_some() && seq == kernel_seq {
                self.finish_guard_slots()?;
            } else {
                remove_if_present(&slots)?;
            }
        }
        let pending = self.pending_path();
        let text = match fs::read_to_string(&pending) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return self.settle_journal(kernel_seq);
            }
            Err(e) => return Err(io("cannot read", &pending)(e)),
        };
        let seq = stored_seq(&text);
        // (A journaled commit never runs beside a whole-file one: this only
        // removes what a whole-file commit left stale.)
        let _ = self.settle_journal(kernel_seq)?;
        if seq.is_some() && seq == kernel_seq {
            self.finish_pending()?;
            Ok(Some(
                "an interrupted rule change had reached the kernel: its rule file is now the stored one"
                    .to_string(),
            ))
        } else {
            remove_if_present(&pending)?;
            Ok(Some(
                "an interrupted rule change had not reached the kernel: it was dropped".to_string(),
            ))
        }
    }

    /// Settles a journaled commit that a kill interrupted: its counter file
    /// becomes the current one if the kernel was switched to it, else it
    /// goes; records past the commit the counter file describes (appended,
    /// never switched to) are dropped; a journal and counter file that
    /// continue an older rule file are removed.
    fn settle_journal(&self, kernel_seq: Option<u32>) -> Result<Option<String>, StateError> {
        let pending = self.pending_counters_path();
        if let Some(head) = read_head(&pending) {
            if stored_seq(&head).is_some() && stored_seq(&head) == kernel_seq {
                self.finish_pending_change()?;
            } else {
                remove_if_present(&pending)?;
            }
        }
        let journal = self.journal_path();
        if !journal.exists() {
            return Ok(None);
        }
        let base = read_head(&self.ruleset_path()).and_then(|h| stored_seq(&h));
        let Some(read) = base.map(|b| self.read_journal(b)).transpose()?.flatten() else {
            remove_if_present(&journal)?;
            remove_if_present(&self.counters_path())?;
            return Ok(None);
        };
        if !read.dropped {
            return Ok(None);
        }
        let mut text = format!("{JOURNAL_PREFIX}{}}}\n", base.expect("read")).into_bytes();
        for record in &read.records {
            text.extend(serde_json::to_vec(record).expect("a record always serializes"));
            text.push(b'\n');
        }
        write_atomic(&self.state_dir, &journal, &text)?;
        Ok(Some(
            "an interrupted rule change had not reached the kernel: it was dropped".to_string(),
        ))
    }

    /// Removes temporary files that killed commands left (their writer
    /// is gone: the caller holds the lock, and only a lock holder writes).
    /// Returns how many.
    pub fn remove_temporaries(&self) -> Result<usize, StateError> {
        let Ok(entries) = fs::read_dir(&self.state_dir) else {
            return Ok(0);
        };
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // `ruleset.json.<pid>`: the temporaries of earlier versions.
            let legacy = name
                .strip_prefix("ruleset.json.")
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            if name.ends_with(TMP_SUFFIX) || legacy {
                remove_if_present(&e.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The interfaces on record: (ifindex, record).
    pub fn iface_records(&self) -> Vec<(u32, IfaceRecord)> {
        let mut out: Vec<(u32, IfaceRecord)> = fs::read_dir(&self.state_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let ifindex: u32 = name.strip_prefix(IFACE_PREFIX)?.parse().ok()?;
                let text = fs::read_to_string(e.path()).ok()?;
                Some((ifindex, serde_json::from_str(&text).ok()?))
            })
            .collect();
        out.sort_by_key(|(i, _)| *i);
        out
    }

    pub fn iface_record(&self, ifindex: u32) -> Option<IfaceRecord> {
        let text = fs::read_to_string(self.iface_path(ifindex)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn iface_path(&self, ifindex: u32) -> PathBuf {
        self.state_dir.join(format!("{IFACE_PREFIX}{ifindex}"))
    }

    pub fn write_iface_record(&self, ifindex: u32, record: &IfaceRecord) -> Result<(), StateError> {
        fs::create_dir_all(&self.state_dir).map_err(io("cannot create", &self.state_dir))?;
        let text = serde_json::to_vec(record).expect("a record always serializes");
        write_atomic(&self.state_dir, &self.iface_path(ifindex), &text)
    }

    /// The ipsets' definitions (`netbeast ipset`), as JSON; `None` before
    /// the first set.
    pub fn read_ipsets(&self) -> Result<Option<Vec<u8>>, StateError> {
        let path = self.state_dir.join(IPSETS_FILE);
        match fs::read(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("cannot read", &path)(e)),
        }
    }

    pub fn write_ipsets(&self, text: &[u8]) -> Result<(), StateError> {
        fs::create_dir_all(&self.state_dir).map_err(io("cannot create", &self.state_dir))?;
        write_atomic(&self.state_dir, &self.state_dir.join(IPSETS_FILE), text)
    }

    pub fn remove_iface_record(&self, ifindex: u32) -> Result<(), StateError> {
        remove_if_present(&self.iface_path(ifindex))
    }

    /// Marks the start of `detach --all`: until [`Namespace::remove_all`]
    /// ends, every command first finishes the removal.
    pub fn mark_removing(&self) -> Result<(), StateError> {
        fs::create_dir_all(&self.state_dir).map_err(io("cannot create", &self.state_dir))?;
        let path = self.state_dir.join(REMOVING_FILE);
        fs::write(&path, b"").map_err(io("cannot write", &path))
    }

    pub fn is_removing(&self) -> bool {
        self.state_dir.join(REMOVING_FILE).exists()
    }

    /// Writes a feature's own state file `name` (`lb.json`) in the state
    /// directory, atomically; `detach --all` removes it with the rest.
    pub fn write_state_file(&self, name: &str, text: &[u8]) -> Result<(), StateError> {
        fs::create_dir_all(&self.state_dir).map_err(io("cannot create", &self.state_dir))?;
        write_atomic(&self.state_dir, &self.state_dir.join(name), text)
    }

    /// A feature's state file `name`, `None` when there is none.
    pub fn read_state_file(&self, name: &str) -> Result<Option<String>, StateError> {
        let path = self.state_dir.join(name);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("cannot read", &path)(e)),
        }
    }

    /// Removes every pin and the stored state of this namespace (not its
    /// lock). The mark of [`Namespace::mark_removing`] goes last, so an
    /// interrupted removal is finished by the next command.
    pub fn remove_all(&self) -> Result<(), StateError> {
        remove_dir_if_present(&self.pin_dir)?;
        fault::point("state: pins removed");
        if let Ok(entries) = fs::read_dir(&self.state_dir) {
            for e in entries.flatten() {
                if e.file_name() != REMOVING_FILE {
                    remove_if_present(&e.path())?;
                }
            }
        }
        fault::point("state: files removed");
        remove_dir_if_present(&self.state_dir)
    }
}

/// Opens and locks `path` (see [`Namespace::lock`]).
pub fn lock_file(path: &Path) -> Result<Lock, StateError> {
    let dir = path.parent().expect("a lock file has a directory");
    fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    loop {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io("cannot open", path))?;
        // SAFETY: flock on an open fd.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io("cannot lock", path)(std::io::Error::last_os_error()));
        }
        let held = file.metadata().map_err(io("cannot read", path))?;
        match fs::metadata(path) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                return Ok(Lock { _file: file });
            }
            // Removed (or replaced) by the holder we waited for: lock anew.
            _ => continue,
        }
    }
}

/// How often a bounded wait for the lock ([`lock_file_within`]) tries it.
pub const LOCK_RETRY_INTERVAL: Duration = Duration::from_millis(20);

/// [`lock_file`], giving up after `limit` (iptables' `-w SECONDS`) with
/// [`StateError::LockBusy`]; `None` waits as long as it takes.
pub fn lock_file_within(path: &Path, limit: Option<Duration>) -> Result<Lock, StateError> {
    let Some(limit) = limit else {
        return lock_file(path);
    };
    let dir = path.parent().expect("a lock file has a directory");
    fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    let deadline = std::time::Instant::now() + limit;
    loop {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io("cannot open", path))?;
        // SAFETY: flock on an open fd.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            let held = file.metadata().map_err(io("cannot read", path))?;
            match fs::metadata(path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(Lock { _file: file });
                }
                // Removed by the holder we waited for: try the new file.
                _ => continue,
            }
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io("cannot lock", path)(e));
        }
        if std::time::Instant::now() >= deadline {
            return Err(StateError::LockBusy {
                path: path.to_path_buf(),
                seconds: limit.as_secs(),
            });
        }
        std::thread::sleep(LOCK_RETRY_INTERVAL);
    }
}

/// Removes the lock file at `path`, which the caller holds (`held`): a
/// command waiting on it will notice and lock a new file.
pub fn remove_held_lock(path: &Path, held: Lock) -> Result<(), StateError> {
    remove_if_present(path)?;
    drop(held);
    Ok(())
}

/// An interface of the namespace with its IPv4 addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    pub addrs: Vec<Ipv4Addr>,
    /// Its IPv6 addresses (link-local ones included).
    pub addrs6: Vec<std::net::Ipv6Addr>,
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
                    addrs6: Vec::new(),
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
                } else if !addr.is_null() && (*addr).sa_family as i32 == libc::AF_INET6 {
                    let sin6 = addr as *const libc::sockaddr_in6;
                    let ip = std::net::Ipv6Addr::from((*sin6).sin6_addr.s6_addr);
                    let name = CStr::from_ptr((*p).ifa_name).to_string_lossy();
                    if let Some(l) = out.iter_mut().find(|l| l.name == name) {
                        l.addrs6.push(ip);
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

/// The IPv6 addresses of the current namespace the kernel does not pick
/// as a source (deprecated: preferred lifetime over; tentative; failed
/// duplicate address detection), by interface, from `/proc/net/if_inet6`
/// (getifaddrs does not tell).
pub fn unpreferred_ipv6() -> Vec<(u32, std::net::Ipv6Addr)> {
    // IFA_F_DADFAILED, IFA_F_DEPRECATED, IFA_F_TENTATIVE.
    const UNPREFERRED: u32 = 0x08 | 0x20 | 0x40;
    let text = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (addr, ifindex, flags) = (f.first()?, f.get(1)?, f.get(4)?);
            let bits = u128::from_str_radix(addr, 16).ok()?;
            let ifindex = u32::from_str_radix(ifindex, 16).ok()?;
            let flags = u32::from_str_radix(flags, 16).ok()?;
            (flags & UNPREFERRED != 0).then(|| (ifindex, std::net::Ipv6Addr::from(bits)))
        })
        .collect()
}

/// (ifindex, name) of every link: what `-i`/`-o` names resolve against,
/// stored with the ruleset so that a change is noticed.
pub fn interface_snapshot(links: &[Link]) -> Vec<(u32, String)> {
    let mut out: Vec<(u32, String)> = links.iter().map(|l| (l.ifindex, l.name.clone())).collect();
    out.sort();
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

#[cfg(test)]
mod tests {
    use std::{
        sync::mpsc,
        thread,
        time::{Duration, Instant},
    };

    use super::*;

    /// How long a thread that should be waiting for the lock is watched.
    const WAIT: Duration = Duration::from_millis(200);

    /// Locks `path` on a new thread; the receiver hears once it holds it,
    /// and the thread then holds it until `release` gets a message.
    fn locker(path: &Path) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (acquired_tx, acquired) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let path = path.to_path_buf();
        thread::spawn(move || {
            let lock = lock_file(&path).unwrap();
            acquired_tx.send(()).unwrap();
            let _ = release_rx.recv();
            drop(lock);
        });
        (acquired, release)
    }

    /// A lock file removed by its holder while another command waits on it:
    /// the waiter moves to the new file, so it and a later command still
    /// run one after the other.
    #[test]
    fn a_lock_removed_under_a_waiter_still_serializes() {
        let dir = std::env::temp_dir().join(format!("nbt-lock-{}", std::process::id()));
        let path = dir.join("lock");
        let first = lock_file(&path).unwrap();
        let (waiter_has_it, release_waiter) = locker(&path);
        assert!(
            waiter_has_it.recv_timeout(WAIT).is_err(),
            "the waiter got a held lock"
        );
        remove_held_lock(&path, first).unwrap();
        waiter_has_it
            .recv_timeout(Duration::from_secs(5))
            .expect("the waiter gets the lock once it is released");
        let started = Instant::now();
        let (later_has_it, release_later) = locker(&path);
        assert!(
            later_has_it.recv_timeout(WAIT).is_err(),
            "a later command took the lock while the waiter held it ({:?} after it started)",
            started.elapsed()
        );
        release_waiter.send(()).unwrap();
        later_has_it
            .recv_timeout(Duration::from_secs(5))
            .expect("the later command gets the lock next");
        release_later.send(()).unwrap();
        let _ = fs::remove_dir_all(&dir);
    }

    /// A namespace whose state directory is a scratch directory (no pins).
    fn scratch(tag: &str) -> Namespace {
        let dir = std::env::temp_dir().join(format!("nbt-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        Namespace {
            id: 0,
            cookie: 0,
            pin_dir: dir.join("pins"),
            state_dir: dir.join("state"),
            bpffs: false,
        }
    }

    /// The coarsening a generation's compile used rides with its guard
    /// slots: read back by the next commit (settling a pending record) and
    /// by `netbeast trace` (without settling), for that commit only.
    #[test]
    fn the_coarsening_is_kept_with_the_guard_slots_of_its_commit() {
        let ns = scratch("coarsening");
        let hint = crate::compile::Coarsening {
            source: true,
            rules: 110_018,
        };
        let slots = GuardSlots {
            slots: [(7u128, 3u32)].into_iter().collect(),
            coarsened: Some(hint),
        };
        ns.write_pending_guard_slots(&slots, 5).unwrap();
        // Switched, not yet renamed: trace reads it and leaves it pending.
        assert_eq!(ns.coarsening(5), Some(hint));
        assert_eq!(state_files(&ns), [PENDING_GUARD_SLOTS_FILE]);
        assert_eq!(ns.coarsening(4), None, "another commit's");
        assert_eq!(ns.load_guard_slots(5), Some(slots));
        assert_eq!(state_files(&ns), [GUARD_SLOTS_FILE]);
        // A record of an earlier version has none.
        fs::write(
            ns.state_dir.join(GUARD_SLOTS_FILE),
            r#"{"seq":6,"slots":[]}"#,
        )
        .unwrap();
        assert_eq!(ns.load_guard_slots(6), Some(GuardSlots::default()));
        let _ = fs::remove_dir_all(ns.state_dir.parent().unwrap());
    }

    fn state_files(ns: &Namespace) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&ns.state_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The rule file's image is read while it names the rule file as it
    /// is and the binary reading it; a rule file of an earlier version
    /// (no image: an upgrade), one written since by hand or by another
    /// version, a pending file the commit dropped, another binary's or a
    /// damaged image: the JSON is parsed, and gives the same ruleset.
    #[test]
    fn the_rule_file_image_is_read_only_while_it_names_the_rule_file() {
        use crate::rules::{command, model::Family, parse::parse_args};
        let with = |lines: &[&str]| {
            let mut ruleset = Ruleset::default();
            for line in lines {
                let args: Vec<String> = line.split_whitespace().map(String::from).collect();
                command::apply(&mut ruleset, &parse_args(&args, Family::V4).unwrap()).unwrap();
            }
            ruleset
        };
        let one = with(&["-A INPUT -s 10.0.0.1 -p tcp --dport 22 -j DROP"]);
        let two = with(&[
            "-A INPUT -i eth0 -m conntrack --ctstate NEW -j ACCEPT",
            "-P FORWARD DROP",
        ]);
        let ns = scratch("image");
        let image_of = |ns: &Namespace| {
            let stamp = ImageStamp::of(&ns.ruleset_path()).unwrap();
            read_image(&fs::read(ns.image_path()).ok()?, &stamp)
        };
        // An upgrade: the rule file of a version without images loads.
        fs::create_dir_all(&ns.state_dir).unwrap();
        let old = serde_json::to_vec(&StoredRef {
            seq: 4,
            ruleset: &one,
            interfaces: &[],
        })
        .unwrap();
        fs::write(ns.ruleset_path(), &old).unwrap();
        assert_eq!(ns.load_stored().unwrap().ruleset, one);
        assert!(image_of(&ns).is_none());
        // Its first change is not journaled: the rule file is written
        // whole, with its image, once.
        assert!(ns.image_is_stale());
        let change = journal::diff(&one, &two);
        assert!(!ns.write_pending_change(&change, &two, 5, &[]).unwrap());
        // A whole write makes the image; it is what loads.
        ns.write_pending(&two, 5, &[(3, "eth0".into())]).unwrap();
        ns.finish_pending().unwrap();
        let image = image_of(&ns).expect("the image of the rule file");
        assert_eq!(image.ruleset, two);
        assert_eq!(
            (image.seq, image.interfaces),
            (Some(5), Some(vec![(3, "eth0".into())]))
        );
        assert_eq!(ns.load_stored().unwrap().ruleset, two);
        assert!(!ns.image_is_stale());
        // A pending file the commit dropped: its image names no rule file.
        ns.write_pending(&one, 6, &[]).unwrap();
        assert!(ns.settle_pending(Some(5)).unwrap().is_some());
        assert!(image_of(&ns).is_none());
        assert_eq!(ns.load_stored().unwrap().ruleset, two);
        // A rule file rewritten by another version (or by hand).
        ns.write_pending(&two, 7, &[]).unwrap();
        ns.finish_pending().unwrap();
        fs::write(ns.ruleset_path(), &old).unwrap();
        assert!(image_of(&ns).is_none());
        assert_eq!(ns.load_stored().unwrap().ruleset, one);
        // Another binary's image, or a damaged one.
        ns.write_pending(&two, 8, &[]).unwrap();
        ns.finish_pending().unwrap();
        let good = fs::read(ns.image_path()).unwrap();
        let mut stamp = ImageStamp::of(&ns.ruleset_path()).unwrap();
        assert!(read_image(&good, &stamp).is_some());
        stamp.exe.ino += 1;
        assert!(read_image(&good, &stamp).is_none(), "another binary's");
        for bad in [&good[..good.len() / 2], &good[..4], &[][..]] {
            fs::write(ns.image_path(), bad).unwrap();
            assert!(image_of(&ns).is_none());
            assert_eq!(ns.load_stored().unwrap().ruleset, two);
        }
        let _ = fs::remove_dir_all(ns.state_dir.parent().unwrap());
    }

    /// One commit's file part as `cli::plane` makes it, the kernel switch
    /// being the caller's `kernel` number.
    fn commit(ns: &Namespace, before: &Ruleset, after: &Ruleset, seq: u32, kernel: &mut u32) {
        let change = journal::diff(before, after);
        let ifaces = [(2, format!("veth{seq}"))];
        let journaled = ns
            .write_pending_change(&change, after, seq, &ifaces)
            .unwrap();
        if !journaled {
            ns.write_pending(after, seq, &ifaces).unwrap();
        }
        *kernel = seq;
        if journaled {
            ns.finish_pending_change().unwrap();
        } else {
            ns.finish_pending().unwrap();
        }
    }

    /// Random single-rule commands committed one after the other, past
    /// `JOURNAL_MAX_RECORDS` (so the rule file is written whole again):
    /// after each, the stored ruleset read back (rule file, journal,
    /// counter file) is the one committed, counters and interfaces too;
    /// and a commit killed after its files but before its switch leaves
    /// the previous one, after its switch the new one.
    #[test]
    fn the_journal_reads_back_every_commit_and_settles_a_killed_one() {
        use crate::rules::{command, generate::Dice, model::Family, parse::parse_args};
        let ns = scratch("journal");
        let mut dice = Dice(1717);
        let mut ruleset = Ruleset::default();
        let mut kernel = 1;
        ns.write_pending(&ruleset, 1, &[]).unwrap();
        ns.finish_pending().unwrap();
        // The first journaled commit killed before its switch: no counter
        // file says any record is in force.
        let mut first = ruleset.clone();
        first.filter.chains[0].policy = Some(crate::rules::model::Policy::Drop);
        let change = journal::diff(&ruleset, &first);
        assert!(ns.write_pending_change(&change, &first, 2, &[]).unwrap());
        assert!(ns.settle_pending(Some(kernel)).unwrap().is_some());
        assert_eq!(
            ns.load_stored().unwrap().ruleset,
            ruleset,
            "unswitched first record"
        );
        let mut journaled_reads = 0;
        for step in 0..3 * JOURNAL_MAX_RECORDS {
            let before = ruleset.clone();
            let line = journal::tests::random_command(&mut dice, &ruleset);
            let args: Vec<String> = line.split_whitespace().map(String::from).collect();
            if command::apply(&mut ruleset, &parse_args(&args, Family::V4).unwrap()).is_err() {
                ruleset = before;
                continue;
            }
            for (i, rule) in ruleset
                .filter
                .chains
                .iter_mut()
                .flat_map(|c| &mut c.rules)
                .enumerate()
            {
                rule.counter.packets += (i + step) as u64;
            }
            let seq = kernel + 1;
            if step % 7 == 3 {
                // Killed before the switch: the kernel stays at `kernel`.
                let change = journal::diff(&before, &ruleset);
                if ns
                    .write_pending_change(&change, &ruleset, seq, &[])
                    .unwrap()
                {
                    assert!(ns.settle_pending(Some(kernel)).unwrap().is_some(), "{line}");
                    let stored = ns.load_stored().unwrap();
                    assert_eq!(stored.ruleset, before, "unswitched `{line}` dropped");
                    assert_eq!(stored.seq, Some(kernel));
                    ruleset = before;
                    continue;
                }
            }
            if step % 7 == 5 {
                // Killed after the switch, before the counter file's rename.
                let change = journal::diff(&before, &ruleset);
                if ns
                    .write_pending_change(&change, &ruleset, seq, &[(2, "x".into())])
                    .unwrap()
                {
                    kernel = seq;
                    ns.settle_pending(Some(kernel)).unwrap();
                    let stored = ns.load_stored().unwrap();
                    assert_eq!(stored.ruleset, ruleset, "switched `{line}` kept");
                    assert_eq!(stored.seq, Some(kernel));
                    continue;
                }
            }
            commit(&ns, &before, &ruleset, seq, &mut kernel);
            let stored = ns.load_stored().unwrap();
            assert_eq!(stored.ruleset, ruleset, "after `{line}` (step {step})");
            assert_eq!(stored.seq, Some(kernel));
            assert_eq!(stored.interfaces, Some(vec![(2, format!("veth{seq}"))]));
            let files = state_files(&ns);
            assert!(
                !files
                    .iter()
                    .any(|f| f.ends_with(".next") || f.ends_with(TMP_SUFFIX)),
                "{files:?}"
            );
            if files.iter().any(|f| f == JOURNAL_FILE) {
                journaled_reads += 1;
            }
        }
        assert!(
            journaled_reads > 2 * JOURNAL_MAX_RECORDS,
            "{journaled_reads} journaled"
        );
        // A torn append (no newline) is no commit.
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(ns.journal_path())
            .unwrap();
        f.write_all(b"{\"seq\":").unwrap();
        assert_eq!(ns.load_stored().unwrap().ruleset, ruleset);
        let _ = fs::remove_dir_all(ns.state_dir.parent().unwrap());
    }

    #[test]
    fn the_sequence_number_is_read_from_the_head_of_the_file() {
        assert_eq!(stored_seq("{\"seq\":42,\"ruleset\":{}}"), Some(42));
        assert_eq!(stored_seq("{\"filter\":{}}"), None);
        assert_eq!(stored_seq("{\"seq\":"), None);
    }
}
