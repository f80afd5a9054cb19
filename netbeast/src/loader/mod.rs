//! The data plane: loads the kernel object, owns its maps (private, or pinned
//! per network namespace), writes compiled rulesets into them, and attaches
//! the programs.

mod batch;
pub mod config;
pub mod ipset;
mod lb;
pub mod links;
pub mod route_watch;
pub mod sizing;
mod sock;
mod tables;
mod written;

pub use sock::{
    SOCK_ATTACH_TYPES, SOCK_PROGRAMS, cgroup_program_ids, netns_cookie, pinned_link_program,
};

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, lpm_trie},
    programs::{
        ProgramError, SchedClassifier, TcAttachType, TestRun, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
    },
};
use netbeast_common::{
    ACTIVE_NAT, ACTIVE_TRACKING, ACTIVE_TRANSLATIONS, Capacity, CtConfig, CtEntry, CtEntryOf,
    CtKey, CtKeyOf,
};
use netbeast_common::{
    LOCAL_ADDR_BUCKETS, LOCAL_ADDR_FREE, LOCAL_ADDR_WAYS, LOCAL_ADDR6_BUCKETS, LOCAL_ADDR6_WAYS,
    iface_guard, local_addr_bucket, local_addr6_bucket, size, stats,
};

use crate::{
    compile::{self, CompileError, CompiledRuleset, GuardSlots, Interface, SlotPlan},
    rules::model::{Counter, Ipv4Net, Ipv6Net, Ruleset},
};

/// The kernel object built by build.rs from netbeast-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netbeast"));

/// Name of the XDP entry point in the object.
const XDP_PROGRAM: &str = "netbeast_xdp";
/// The IPv6 XDP program, tail-called by [`XDP_PROGRAM`] from `IPV6_INGRESS`.
const XDP6_PROGRAM: &str = "netbeast_xdp6";
/// The benchmark's do-nothing XDP_DROP program.
const FLOOR_PROGRAM: &str = "netbeast_floor";
/// The SYN-flood shield, tail-called by the XDP program.
const SHIELD_PROGRAM: &str = "netbeast_shield";
/// `SHIELD`'s slots: the shield, and the XDP program it hands packets back
/// to (`synproxy.rs`).
const SHIELD_SLOT: u32 = 0;
const SHIELD_MAIN_SLOT: u32 = 1;
/// `SHIELD`'s slot of the FORWARD half of `-j SYNPROXY` (the replay to a
/// server behind the router, `netbeast_synfwd`).
const SHIELD_FORWARD_SLOT: u32 = 2;
const SYNFWD_PROGRAM: &str = "netbeast_synfwd";
/// The TC egress entry point (OUTPUT chain).
const EGRESS_PROGRAM: &str = "netbeast_tc_egress";
/// The IPv6 TC egress program, tail-called by [`EGRESS_PROGRAM`] from
/// `IPV6_EGRESS`.
const EGRESS6_PROGRAM: &str = "netbeast_tc_egress6";
/// The TC ingress entry point: sends on what the XDP program hands off.
const INGRESS_PROGRAM: &str = "netbeast_tc_ingress";

/// The `ACTIVE` word's bits from this one up hold the commit sequence
/// number: written in the same single write that switches the generation,
/// it tells which stored ruleset the kernel runs (see
/// `Namespace::write_pending`). The kernel programs read only the low bits
/// (`netbeast_common::ACTIVE_*`).
pub const ACTIVE_SEQ_SHIFT: u32 = 16;
/// Commit sequence numbers wrap at this mask.
pub const ACTIVE_SEQ_MASK: u32 = 0xffff;

/// The maps that hold state (rulesets, counters, connections, addresses):
/// pinned by these names in a namespace's pin dir, shared by every program
/// of the namespace and kept across netbeast versions. The object's other
/// maps are per-run scratch (`PACKET`, `TRACKING`, `QUOTE`,
/// `SOCK_SEARCH`): never pinned, so each load gets its own, laid out as
/// its programs expect; a newer netbeast may change them freely.
pub const MAP_NAMES: [&str; 62] = [
    "IFACE_PATHS",
    "LOG_TARGETS",
    "LOG_EVENTS",
    // `netbeast trace` reads the chains' reports here.
    "TRACE_EVENTS",
    "GUARDS",
    "GUARD_STATE",
    "CT_UNREPLIED",
    "CT_ESTABLISHED",
    "CT_NAT_INDEX",
    "CT6_UNREPLIED",
    "CT6_ESTABLISHED",
    "CT6_NAT_INDEX",
    "NAT_TARGETS",
    "NAT6_ADDRS",
    "MARK_TARGETS",
    "CONNMARK_TARGETS",
    // The settings of one value each (`netbeast_common::Config`): the
    // conntrack timeouts, the route cache's epoch and lease (which the
    // daemon's route watcher writes: another process than the one that
    // loaded the XDP program), the SYN-flood shield's port count, REJECT's
    // ICMP rate limits and budget.
    "CONFIG",
    // REJECT's ICMP rate limits: each destination host's bucket (IPv4,
    // IPv6).
    "ICMP_HOSTS",
    "ICMP6_HOSTS",
    "ACTIVE",
    "CHAINS",
    "RULES",
    "COUNTERS",
    "CLASS_HEADERS",
    "CLASS_WORDS",
    "ADDR_CLASSES",
    "ADDR_HASH",
    "KEY_CLASSES",
    "IFACE_CLASSES",
    "MAC_CLASSES",
    "STATS",
    "LOCAL_ADDRS",
    "LOCAL_ADDR_CACHE",
    "LOCAL_ADDR6_CACHE",
    "ADDR_TYPES",
    "ADDR_TYPES6",
    "IFACE_ADDRS",
    "IFACE_ADDRS6",
    "IFACE_GUARDS",
    "SOCK_NETNS",
    "SOCK_NAT",
    "SOCK_NAT6",
    // nat OUTPUT's marks, written by the socket programs, taken by TC egress.
    "SOCK_MARK",
    "LB_SERVICES",
    "LB_TABLES",
    "LB_BACKENDS",
    "LB_PICKS",
    "LB_RING",
    // The state of -m connlimit, hashlimit and recent (hashlimit's and
    // recent's kept by name across ruleset changes; `netbeast recent`
    // reads recent's).
    "CONNLIMIT",
    "CONNLIMIT6",
    "HASHLIMIT",
    "HASHLIMIT_TABLES",
    "RECENT",
    // ipsets (`netbeast ipset`): their headers and members.
    "IPSET_SETS",
    "IPSET_MEMBERS",
    "IPSET_NETS",
    // The SYN-flood shield: `attach --syn-flood-guard`'s ports, and the
    // program array through which the XDP program reaches the shield (its
    // entries live as long as the pin).
    "SYN_GUARD_PORTS",
    "SHIELD",
    // The connections FORWARD's -j SYNPROXY replays (their sequence
    // offsets): pinned so that they outlive a program reload, and so that
    // their size is the data plane's (`sizing`), chosen once.
    "PROXIED",
    // The IPv6 program the XDP program tail-calls: a program array loses
    // its entries with its last user reference, so it is pinned.
    "IPV6_INGRESS",
    // Likewise the IPv6 TC egress program, tail-called by the TC egress one.
    "IPV6_EGRESS",
    // The forwarding route cache (its epoch and lease are in CONFIG).
    "ROUTE_CACHE",
];

/// An IPv6 address the local address cache may answer for: not `::`,
/// loopback, link-local (fe80::/10: one interface's) or multicast.
fn cacheable6(a: &Ipv6Addr) -> bool {
    !(a.is_unspecified()
        || a.is_loopback()
        || a.is_multicast()
        || a.segments()[0] & 0xffc0 == 0xfe80)
}

/// An IPv6 address's four words as they sit in a packet (what the data
/// plane compares).
pub(crate) fn addr6_words(a: &Ipv6Addr) -> [u32; 4] {
    let o = a.octets();
    std::array::from_fn(|i| {
        u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
    })
}

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("cannot load the netbeast eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("the kernel rejected the XDP program: {0}")]
    Program(#[source] ProgramError),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("map {0} is missing from the eBPF object (a build mismatch: rebuild netbeast)")]
    MissingMap(&'static str),
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(
        "{source}. This data plane's ruleset arrays hold {slots} rule slots (chosen when it \
         was made, `netbeast status` shows them): to give them more, `netbeast save > \
         rules`, `netbeast detach --all`, `netbeast attach IFACE --ruleset-memory SIZE` (up \
         to {} rule slots), `netbeast restore < rules`",
        Capacity::FULL.slots()
    )]
    RulesetCapacity {
        #[source]
        source: CompileError,
        slots: u32,
    },
    #[error(
        "slot {slot} of chain {chain} has target code {code}, which the kernel's table of \
         targets does not know (netbeast_common::target::flags); nothing was applied: this \
         is a netbeast bug, please report it"
    )]
    UnknownTarget { code: u32, chain: u32, slot: u32 },
    #[error("cannot attach to {iface}: {source}")]
    Attach {
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("cannot pin {path}: {message}")]
    Pin { path: PathBuf, message: String },
    #[error("cannot detach the link pinned at {path}: {source}")]
    Unpin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot use {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the data plane pinned in {dir} was made by another netbeast version: map {map} \
         differs. Its rules are still enforced by the programs attached now; to use this \
         version, `netbeast detach` its interfaces and `netbeast attach` them again: the maps \
         whose layout changed are made anew (it says what that resets), the others, conntrack \
         included, are kept"
    )]
    Layout { dir: PathBuf, map: String },
    #[error("BPF_PROG_TEST_RUN failed: {0}")]
    TestRun(#[source] ProgramError),
    #[error(
        "the local routing table has {routes} routes, more than the {limit} netbeast can hold \
         for -m addrtype (size::ADDR_TYPES, and size::ADDR_TYPES6 for the IPv6 local and main \
         tables); remove addresses or routes from the namespace"
    )]
    TooManyLocalRoutes { routes: usize, limit: usize },
    #[error(
        "the ruleset names {tables} -m hashlimit tables (--hashlimit-name), more than the \
         {limit} netbeast keeps (MAX_HASHLIMIT_TABLES); let rules share table names"
    )]
    TooManyHashlimitTables { tables: usize, limit: u32 },
    #[error(
        "the members of all hash:ip, hash:ip,port and bitmap:port sets fill IPSET_MEMBERS \
         ({capacity} entries, sized when the data plane was made; at most ipset::MEMBERS = \
         {max}): delete members, or make the data plane anew with more --table-memory \
         (`netbeast save` and `ipset save`, `netbeast detach --all`, `netbeast attach IFACE \
         --table-memory SIZE`, then restore both)"
    )]
    IpsetMembersFull { capacity: u32, max: u32 },
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> LoaderError {
    move |source| match source {
        // A pinned map of another layout (another netbeast version's pins):
        // say so and how to move on, not just the sizes.
        MapError::InvalidKeySize { size, expected }
        | MapError::InvalidValueSize { size, expected } => LoaderError::Layout {
            dir: PathBuf::from("this namespace's pin directory"),
            map: format!("{name} (its entries are {expected} bytes, this netbeast's {size})"),
        },
        source => LoaderError::Map { name, source },
    }
}

/// An error and its causes on one line (aya's pin errors keep the errno,
/// e.g. EEXIST, in their source).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text += &format!(": {part}");
        }
        source = s.source();
    }
    text
}

/// Pins `link` at `pin`; an error says why (EEXIST: something is pinned
/// there already).
fn pin_link(link: FdLink, pin: &Path) -> Result<(), LoaderError> {
    link.pin(pin).map_err(|e| LoaderError::Pin {
        path: pin.to_path_buf(),
        message: with_causes(&e),
    })?;
    crate::fault::point("loader: link pinned");
    Ok(())
}

/// `sizeof(struct __sk_buff)`, the context a TC test run passes in and
/// reads back (the kernel refuses a shorter buffer for what comes back);
/// its `mark` is at offset 8.
const SKB_CTX_SIZE: usize = 192;

/// Output of one `BPF_PROG_TEST_RUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRunOutput {
    /// `XDP_ABORTED` = 0, `XDP_DROP` = 1, `XDP_PASS` = 2, `XDP_TX` = 3,
    /// `XDP_REDIRECT` = 4.
    pub action: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
}

/// How `attach` asks the kernel to run the XDP program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic (skb) mode.
    Auto,
    Native,
    Skb,
}

pub struct Dataplane {
    /// The kernel object, loaded when programs are needed (attach, test
    /// runs) or when maps must be created. A command that only reads or
    /// changes rules opens the pinned maps instead (`pinned`): loading the
    /// object costs milliseconds (BTF, probes, scratch maps) for nothing.
    ebpf: Option<Ebpf>,
    /// Maps opened from their pins, while `ebpf` is not loaded.
    pinned: std::collections::HashMap<&'static str, aya::maps::Map>,
    /// Where the maps are pinned (None: private maps).
    pin_dir: Option<PathBuf>,
    /// Pinned data planes keep their verified XDP and TC programs here, so
    /// that a later `attach` reuses them instead of running the verifier
    /// again (seconds for these programs). Named after this build's object
    /// and the id of the `ACTIVE` map: a program is reused only by the same
    /// netbeast, with the very maps it was loaded against.
    program_cache: Option<PathBuf>,
    /// The state slots of the generation the kernel runs, when known (the
    /// last ruleset this value switched to, or what the caller restored
    /// with [`Dataplane::set_guard_slots`]): a new generation gives the
    /// guards of unchanged rules the same slots, so they keep their state.
    guard_slots: Option<GuardSlots>,
    /// What each generation's arrays hold (`written`), so that a change
    /// writes only the entries that differ; `None` until the first write
    /// reads it from `written_path`.
    written: Option<written::Written>,
    /// Where the record of written entries is kept between commands (a
    /// namespace's state directory); `None`: only in this value.
    written_path: Option<PathBuf>,
    /// The ruleset arrays' capacity: the pinned maps' (chosen when they
    /// were made), or the build's largest for private maps.
    capacity: Capacity,
}

/// A ruleset written into the inactive generation, not yet switched to
/// (see [`Dataplane::stage`]).
pub struct Staged {
    compiled: CompiledRuleset,
    plan: SlotPlan,
}

impl Staged {
    /// The state slots the staged generation's guards use.
    pub fn slots(&self) -> &GuardSlots {
        &self.plan.slots
    }

    /// How many stateful guards kept the slot (and the state) they had.
    pub fn kept_guards(&self) -> usize {
        self.plan.kept
    }
}

/// Times a program load is tried while the kernel answers EAGAIN: its
/// verifier gives up on a program when the loading thread has a signal
/// pending, which says nothing of the program (seen as a flaky load in the
/// parallel unit tests). libbpf tries as many times.
const PROGRAM_LOAD_ATTEMPTS: usize = 5;

/// Runs `load` (a program's `load()`) again while the kernel answers
/// EAGAIN, up to [`PROGRAM_LOAD_ATTEMPTS`] times.
fn load_retrying(
    mut load: impl FnMut() -> Result<(), aya::programs::ProgramError>,
) -> Result<(), aya::programs::ProgramError> {
    let mut attempt = 1;
    loop {
        match load() {
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN)
                    && attempt < PROGRAM_LOAD_ATTEMPTS =>
            {
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// What a pinned map made anew (empty) costs, in the user's words.
fn what_a_new_map_loses(name: &str) -> &'static str {
    match name {
        "CT_UNREPLIED" | "CT_ESTABLISHED" | "CT_NAT_INDEX" | "CT6_UNREPLIED"
        | "CT6_ESTABLISHED" | "CT6_NAT_INDEX" => {
            "tracked connections and their NAT translations are forgotten (open connections \
             count as new; translated ones may break)"
        }
        "CONFIG" => {
            "conntrack timeouts set with `attach --ct-timeout` are back to defaults; cached \
             routes are dropped"
        }
        "ICMP_HOSTS" | "ICMP6_HOSTS" => "REJECT's ICMP rate limits start with full buckets",
        "COUNTERS" => "rule counters since the last rule change are lost",
        "GUARD_STATE" => "-m limit buckets are full and -m statistic nth counts restart",
        "CONNLIMIT" | "CONNLIMIT6" => "-m connlimit forgets the connections it counted",
        "HASHLIMIT" => "-m hashlimit buckets are full again",
        "HASHLIMIT_TABLES" => {
            "-m hashlimit tables count their buckets from zero (until the old ones are replaced, \
             a table may hold more than its --hashlimit-htable-max)"
        }
        "RECENT" => "-m recent lists are empty",
        "PROXIED" => {
            "connections FORWARD's -j SYNPROXY replays lose their translation (their ends reset \
             them)"
        }
        "IPSET_SETS" | "IPSET_MEMBERS" | "IPSET_NETS" => {
            "ipsets lose their members (`ipset save` before, `ipset restore` after, keeps them)"
        }
        "STATS" => "`netbeast stats` counts restart",
        "LOG_EVENTS" => "LOG events not yet read are lost",
        "SOCK_NAT" | "SOCK_NAT6" => "nat OUTPUT translations of open local sockets are forgotten",
        "SOCK_MARK" => "marks nat OUTPUT gave sockets that have sent nothing yet are forgotten",
        "LB_SERVICES" | "LB_TABLES" | "LB_BACKENDS" | "LB_PICKS" | "LB_RING" => {
            "`netbeast lb` services are installed again from the saved state; connections \
             keep their backend only through conntrack"
        }
        _ => "rebuilt from the stored rules and the interfaces: nothing is lost",
    }
}

/// The pinned maps whose number of entries is part of their layout, at the
/// build's size (`size::*`). The ruleset arrays a [`Capacity`] sizes
/// (`size::by_capacity`) are checked against the pinned ones' capacity
/// instead; the state tables' sizes are chosen at attach.
const SIZED_BY_BUILD: [&str; 3] = ["CHAINS", "ADDR_CLASSES", "GUARD_STATE"];

/// FNV-1a of the kernel object (computed by build.rs): names the
/// verified-program cache and stamps the map-write record.
fn object_hash() -> u64 {
    include!(concat!(env!("OUT_DIR"), "/object_hash.rs"))
}

/// The directory of verified-program caches beside a namespace's maps.
const PROGRAM_CACHE_DIR: &str = "programs";

impl Dataplane {
    /// Loads the object with private, unpinned maps, and loads the XDP
    /// program into the kernel (tests, benchmarks).
    pub fn load_private() -> Result<Dataplane, LoaderError> {
        let ebpf = EbpfLoader::new().load(OBJECT).map_err(LoaderError::Load)?;
        let mut dp = Dataplane {
            ebpf: Some(ebpf),
            pinned: Default::default(),
            pin_dir: None,
            program_cache: None,
            guard_slots: None,
            written: None,
            written_path: None,
            capacity: Capacity::FULL,
        };
        dp.load_program()?;
        Ok(dp)
    }

    /// Opens the maps pinned in `dir`, creating (and pinning) the ones that
    /// don't exist yet. The programs are loaded only when attaching.
    pub fn open_pinned(dir: &Path) -> Result<Dataplane, LoaderError> {
        Self::open_pinned_with(dir, None)
    }

    /// As `open_pinned`; `sizes` sets the keyed state tables' and the
    /// ruleset arrays' sizes when this call creates them (a map's size is
    /// fixed once it exists: see [`sizing`]).
    pub fn open_pinned_with(
        dir: &Path,
        sizes: Option<&sizing::PlaneSizes>,
    ) -> Result<Dataplane, LoaderError> {
        std::fs::create_dir_all(dir).map_err(|source| LoaderError::Io {
            what: format!("the pin directory {}", dir.display()),
            source,
        })?;
        let mut dp = Dataplane {
            ebpf: None,
            pinned: Default::default(),
            pin_dir: Some(dir.to_path_buf()),
            program_cache: None,
            guard_slots: None,
            written: None,
            written_path: None,
            capacity: Capacity::FULL,
        };
        // Every map pinned already (every command after the first attach):
        // open the pins, nothing else. A map missing (a fresh data plane, a
        // killed creation, a version that adds maps) makes the object load,
        // which creates and pins it.
        match Self::open_pins(dir)? {
            Some(maps) => {
                dp.capacity = Self::capacity_of_pins(dir, &maps)?;
                dp.pinned = maps;
            }
            None => dp.load_object(sizes)?,
        }
        Ok(dp)
    }

    /// The first map pinned in `dir` whose layout (type, key and value
    /// sizes) is not this build's: pins of an older or newer netbeast. The
    /// programs would fail the verifier against it and the control plane
    /// would misread it, so loading refuses with this (`attach` migrates
    /// first: [`Dataplane::migrate_layouts`]).
    fn layout_mismatch(dir: &Path) -> Result<Option<String>, LoaderError> {
        Ok(Self::layout_mismatches(dir)?
            .into_iter()
            .next()
            .map(|(_, detail)| detail))
    }

    /// Every map pinned in `dir` whose layout is not this build's, with
    /// what differs.
    pub fn layout_mismatches(dir: &Path) -> Result<Vec<(&'static str, String)>, LoaderError> {
        let object = aya_obj::Object::parse(OBJECT)
            .map_err(|e| LoaderError::Load(aya::EbpfError::ParseError(e)))?;
        let by_capacity =
            size::by_capacity(sizing::pinned_capacity(dir)?.unwrap_or(Capacity::FULL));
        let mut out = Vec::new();
        for name in MAP_NAMES {
            let path = dir.join(name);
            let (Some(wanted), true) = (object.maps.get(name), path.exists()) else {
                continue;
            };
            let info = aya::maps::MapInfo::from_pin(&path)
                .map_err(|source| LoaderError::Map { name, source })?;
            let pinned = (
                info.map_type().ok().map(|t| t as u32),
                info.key_size(),
                info.value_size(),
            );
            let built = (
                Some(wanted.map_type()),
                wanted.key_size(),
                wanted.value_size(),
            );
            // A ruleset table indexed by this build's layout must have its
            // entries: a smaller pinned one (an older build's) would hold
            // only part of a large ruleset.
            let (pinned_size, mut built_size) = (info.max_entries(), wanted.max_entries());
            let mut size_fixed = SIZED_BY_BUILD.contains(&name);
            if let Some(&(_, entries)) = by_capacity.iter().find(|(n, _)| *n == name) {
                // A ruleset array: the size of the pinned ones' capacity
                // (an array without one is made anew with the others').
                size_fixed = true;
                built_size = entries;
            }
            if pinned != built || (size_fixed && pinned_size != built_size) {
                out.push((
                    name,
                    format!(
                        "{name} (pinned: type {:?}, key {} bytes, value {} bytes, {} entries; \
                         this netbeast: type {}, key {} bytes, value {} bytes, {} entries)",
                        pinned.0,
                        pinned.1,
                        pinned.2,
                        pinned_size,
                        built.0.unwrap_or(0),
                        built.1,
                        built.2,
                        built_size
                    ),
                ));
            }
        }
        Ok(out)
    }

    /// An upgrade over pins of another netbeast version: each pinned map
    /// of `dir` whose layout is not this build's is unpinned, so that the
    /// next load makes it anew, empty, in this build's layout; the maps
    /// whose layout did not change (above all conntrack's) stay, with
    /// their contents. Returns, per map made anew, what its emptiness
    /// costs, for the user. The caller makes sure no program of the old
    /// version still runs (they hold the old maps: rules written to the
    /// new ones would not reach them), and installs the stored ruleset
    /// anew afterwards.
    pub fn migrate_layouts(dir: &Path) -> Result<Vec<String>, LoaderError> {
        let mut reset = Vec::new();
        for (name, detail) in Self::layout_mismatches(dir)? {
            let path = dir.join(name);
            std::fs::remove_file(&path).map_err(|source| LoaderError::Io {
                what: format!("the pin {} (to make it anew)", path.display()),
                source,
            })?;
            reset.push(format!(
                "{detail}: made anew; {}",
                what_a_new_map_loses(name)
            ));
        }
        // The verified programs cached for these maps are named by the
        // build and `ACTIVE`'s id only: when another map is made anew they
        // would still be reused, holding the old map (the rules written
        // to the new one never reaching them). Dropped: the next load
        // verifies the programs against the new maps.
        if !reset.is_empty()
            && let Some(parent) = dir.parent()
        {
            let cache = parent.join(PROGRAM_CACHE_DIR);
            match std::fs::remove_dir_all(&cache) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(LoaderError::Io {
                        what: format!("the program cache {} (its maps changed)", cache.display()),
                        source,
                    });
                }
            }
        }
        Ok(reset)
    }

    /// The capacity of the ruleset arrays opened in `maps` (`RULES`' size
    /// says it; the layout check has made sure the others agree).
    fn capacity_of_pins(
        dir: &Path,
        maps: &std::collections::HashMap<&'static str, aya::maps::Map>,
    ) -> Result<Capacity, LoaderError> {
        let name = "RULES";
        let entries = match maps.get(name) {
            Some(aya::maps::Map::Array(data)) => data
                .info()
                .map_err(|source| LoaderError::Map { name, source })?
                .max_entries(),
            _ => return Err(LoaderError::MissingMap(name)),
        };
        sizing::capacity_of(name, size::RULES, entries).ok_or_else(|| LoaderError::Layout {
            dir: dir.to_path_buf(),
            map: format!(
                "RULES has {entries} entries, the size of no ruleset capacity of this netbeast"
            ),
        })
    }

    /// The ruleset arrays' capacity ([`Capacity`]): where each generation's
    /// region starts.
    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// Each of [`MAP_NAMES`] opened from its pin in `dir`; None when one is
    /// not pinned.
    fn open_pins(
        dir: &Path,
    ) -> Result<Option<std::collections::HashMap<&'static str, aya::maps::Map>>, LoaderError> {
        let mut maps = std::collections::HashMap::with_capacity(MAP_NAMES.len());
        for name in MAP_NAMES {
            let path = dir.join(name);
            if !path.exists() {
                return Ok(None);
            }
            let map = MapData::from_pin(&path)
                .and_then(aya::maps::Map::from_map_data)
                .map_err(|source| LoaderError::Map { name, source })?;
            maps.insert(name, map);
        }
        Ok(Some(maps))
    }

    /// Loads the kernel object against the pinned maps (creating and
    /// pinning missing ones), for a command that needs its programs.
    fn load_object(&mut self, sizes: Option<&sizing::PlaneSizes>) -> Result<(), LoaderError> {
        let Some(dir) = self.pin_dir.clone() else {
            return Err(LoaderError::MissingMap(
                "the kernel object (private data plane)",
            ));
        };
        if let Some(map) = Self::layout_mismatch(&dir)? {
            return Err(LoaderError::Layout {
                dir: dir.clone(),
                map,
            });
        }
        let config_existed = dir.join(config::NAME).exists();
        let missing_any = MAP_NAMES.iter().any(|name| !dir.join(name).exists());
        let mut loader = EbpfLoader::new();
        for name in MAP_NAMES {
            loader.map_pin_path(name, dir.join(name));
        }
        // A state table keeps the size it was made with (the pin is reused
        // whatever the object says; said here too, so that the object's
        // view agrees). One made now beside pinned ones (a table a newer
        // version adds, or one an upgrade made anew) takes their share of
        // its default; in a new data plane, the caller's size, or, when the
        // caller has none, the machine's share.
        let pinned = sizing::TableSizes::pinned(&dir)?;
        let following = if pinned.iter().any(Option::is_none) {
            sizing::TableSizes::following(&pinned)?
        } else {
            None
        };
        let auto = if pinned.iter().all(Option::is_none) && sizes.is_none() {
            Some(sizing::TableSizes::auto(sizing::memory_for_auto()?, &[])?)
        } else {
            None
        };
        for ((name, _), pinned) in sizing::STATE_TABLES.iter().zip(pinned) {
            let entries = pinned
                .or_else(|| following.as_ref().and_then(|s| s.get(name)))
                .or_else(|| sizes.and_then(|s| s.tables.get(name)))
                .or_else(|| auto.as_ref().and_then(|s| s.get(name)));
            if let Some(entries) = entries {
                loader.map_max_entries(name, entries);
            }
        }
        // The ruleset arrays likewise: the pinned ones' capacity, else the
        // caller's, else the machine's share; the object's programs index
        // the generations' regions with it (`RULESET_SHIFT`).
        let capacity = match sizing::pinned_capacity(&dir)? {
            Some(pinned) => pinned,
            None => match sizes {
                Some(sizes) => sizes.capacity,
                None => sizing::auto_capacity(sizing::memory_for_auto()?)?,
            },
        };
        for (name, entries) in size::by_capacity(capacity) {
            loader.map_max_entries(name, entries);
        }
        loader.override_global("RULESET_SHIFT", &capacity.shift, true);
        self.capacity = capacity;
        let ebpf = loader.load(OBJECT).map_err(LoaderError::Load)?;
        // Verified programs cached against the old maps do not use a map
        // made just now (a version that adds a pinned map): drop them, so
        // that the programs are verified against it.
        if missing_any && let Some(parent) = dir.parent() {
            let _ = std::fs::remove_dir_all(parent.join(PROGRAM_CACHE_DIR));
        }
        // The object's maps are the pinned ones: one handle each is enough.
        self.pinned.clear();
        self.ebpf = Some(ebpf);
        if !config_existed {
            self.fill_new_config(&dir)?;
        }
        let active_id = match self.map("ACTIVE")? {
            aya::maps::Map::Array(data) => data.info().ok().map(|i| i.id()),
            _ => None,
        };
        if let (Some(id), Some(parent)) = (active_id, dir.parent()) {
            let root = parent.join(PROGRAM_CACHE_DIR);
            let mine = format!("{:016x}-{id}", object_hash());
            // Caches of another build or of maps made anew are dead weight
            // (and hold their old maps): drop them.
            for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy() != mine {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
            self.program_cache = Some(root.join(mine));
        }
        Ok(())
    }

    /// The kernel object, loaded on first use.
    fn ebpf(&mut self) -> Result<&mut Ebpf, LoaderError> {
        if self.ebpf.is_none() {
            self.load_object(None)?;
        }
        Ok(self.ebpf.as_mut().expect("loaded above"))
    }

    /// The program `name` of the kernel object (loaded on first use).
    fn program_mut(
        &mut self,
        name: &'static str,
    ) -> Result<&mut aya::programs::Program, LoaderError> {
        self.ebpf()?
            .program_mut(name)
            .ok_or(LoaderError::MissingMap(name))
    }

    /// Where the verified program `name` is cached, if this data plane has
    /// a cache.
    fn cached_program_path(&self, name: &str) -> Option<PathBuf> {
        self.program_cache.as_ref().map(|d| d.join(name))
    }

    /// Pins a program just verified into the cache. The cache only saves
    /// time: a failure leaves the next attach to verify again.
    fn cache_program(&mut self, name: &'static str) {
        let Some(path) = self.cached_program_path(name) else {
            return;
        };
        if path.exists()
            || path
                .parent()
                .is_none_or(|d| std::fs::create_dir_all(d).is_err())
        {
            return;
        }
        if let Ok(prog) = self.program_mut(name) {
            let _ = prog.pin(&path);
        }
    }

    /// The LOG events' ring buffer, taken out of this data plane (the
    /// programs keep writing into it): for a reader that owns it.
    pub fn take_log_events(
        &mut self,
    ) -> Result<aya::maps::RingBuf<aya::maps::MapData>, LoaderError> {
        let map = match &mut self.ebpf {
            Some(ebpf) => ebpf.take_map("LOG_EVENTS"),
            None => self.pinned.remove("LOG_EVENTS"),
        }
        .ok_or(LoaderError::MissingMap("LOG_EVENTS"))?;
        aya::maps::RingBuf::try_from(map).map_err(map_err("LOG_EVENTS"))
    }

    fn map(&self, name: &'static str) -> Result<&aya::maps::Map, LoaderError> {
        match &self.ebpf {
            Some(ebpf) => ebpf.map(name),
            None => self.pinned.get(name),
        }
        .ok_or(LoaderError::MissingMap(name))
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, LoaderError> {
        match &mut self.ebpf {
            Some(ebpf) => ebpf.map_mut(name),
            None => self.pinned.get_mut(name),
        }
        .ok_or(LoaderError::MissingMap(name))
    }

    fn xdp(&mut self) -> Result<&mut Xdp, LoaderError> {
        self.program_mut(XDP_PROGRAM)?
            .try_into()
            .map_err(LoaderError::Program)
    }

    /// Loads the XDP program into the kernel (runs the verifier) if needed.
    pub fn load_program(&mut self) -> Result<(), LoaderError> {
        let xdp = self.xdp()?;
        if xdp.fd().is_err() {
            load_retrying(|| xdp.load()).map_err(LoaderError::Program)?;
            self.load_shield()?;
        }
        self.load_ipv6_program()
    }

    /// Loads the IPv6 XDP program (runs the verifier) if needed and puts
    /// it into `IPV6_INGRESS`, where the XDP program tail-calls it.
    fn load_ipv6_program(&mut self) -> Result<(), LoaderError> {
        let xdp6: &mut Xdp = self
            .program_mut(XDP6_PROGRAM)?
            .try_into()
            .map_err(LoaderError::Program)?;
        if xdp6.fd().is_err() {
            load_retrying(|| xdp6.load()).map_err(LoaderError::Program)?;
        }
        let fd = xdp6
            .fd()
            .map_err(LoaderError::Program)?
            .try_clone()
            .map_err(|e| LoaderError::Pin {
                path: "IPV6_INGRESS".into(),
                message: format!("cannot duplicate the IPv6 program's fd: {e}"),
            })?;
        let mut array: aya::maps::ProgramArray<&mut MapData> =
            aya::maps::ProgramArray::try_from(self.map_mut("IPV6_INGRESS")?)
                .map_err(map_err("IPV6_INGRESS"))?;
        array.set(0, &fd, 0).map_err(map_err("IPV6_INGRESS"))?;
        Ok(())
    }

    /// Loads the SYN-flood shield (its own program: the verifier checks
    /// it apart from the XDP program's million instructions) and links the
    /// two through the `SHIELD` program array. With the XDP program just
    /// loaded from the same object, so they share the per-run maps.
    fn load_shield(&mut self) -> Result<(), LoaderError> {
        let shield: &mut Xdp = self
            .program_mut(SHIELD_PROGRAM)?
            .try_into()
            .map_err(LoaderError::Program)?;
        if shield.fd().is_err() {
            load_retrying(|| shield.load()).map_err(LoaderError::Program)?;
        }
        let shield_fd = shield
            .fd()
            .map_err(LoaderError::Program)?
            .try_clone()
            .map_err(|source| LoaderError::Io {
                what: "a copy of the shield program's fd".into(),
                source,
            })?;
        let main_fd = self
            .xdp()?
            .fd()
            .map_err(LoaderError::Program)?
            .try_clone()
            .map_err(|source| LoaderError::Io {
                what: "a copy of the XDP program's fd".into(),
                source,
            })?;
        let mut slots: aya::maps::ProgramArray<&mut MapData> =
            aya::maps::ProgramArray::try_from(self.map_mut("SHIELD")?)
                .map_err(map_err("SHIELD"))?;
        slots
            .set(SHIELD_SLOT, &shield_fd, 0)
            .map_err(map_err("SHIELD"))?;
        slots
            .set(SHIELD_MAIN_SLOT, &main_fd, 0)
            .map_err(map_err("SHIELD"))?;
        let synfwd: &mut Xdp = self
            .program_mut(SYNFWD_PROGRAM)?
            .try_into()
            .map_err(LoaderError::Program)?;
        if synfwd.fd().is_err() {
            load_retrying(|| synfwd.load()).map_err(LoaderError::Program)?;
        }
        let synfwd_fd = synfwd
            .fd()
            .map_err(LoaderError::Program)?
            .try_clone()
            .map_err(|source| LoaderError::Io {
                what: "a copy of the SYNPROXY forward program's fd".into(),
                source,
            })?;
        let mut slots = aya::maps::ProgramArray::try_from(self.map_mut("SHIELD")?)
            .map_err(map_err("SHIELD"))?;
        slots
            .set(SHIELD_FORWARD_SLOT, &synfwd_fd, 0)
            .map_err(map_err("SHIELD"))?;
        Ok(())
    }

    /// Attaches the XDP program to `ifindex` and pins the link at
    /// `link_pin`, so it outlives this process. Returns the mode used.
    pub fn attach(
        &mut self,
        iface: &str,
        ifindex: u32,
        mode: AttachMode,
        link_pin: &Path,
    ) -> Result<AttachMode, LoaderError> {
        let mut cached = self
            .cached_program_path(XDP_PROGRAM)
            .filter(|p| p.exists())
            .and_then(|p| Xdp::from_pin(p, aya_obj::programs::XdpAttachType::Interface).ok());
        if cached.is_none() {
            self.load_program()?;
            self.cache_program(XDP_PROGRAM);
        }
        let xdp = match cached.as_mut() {
            Some(xdp) => xdp,
            None => self.xdp()?,
        };
        let attach = |xdp: &mut Xdp, m: XdpMode| xdp.attach_to_if_index(ifindex, m);
        let (id, used) = match mode {
            AttachMode::Native => (attach(xdp, XdpMode::Driver), AttachMode::Native),
            AttachMode::Skb => (attach(xdp, XdpMode::Skb), AttachMode::Skb),
            AttachMode::Auto => match attach(xdp, XdpMode::Driver) {
                Ok(id) => (Ok(id), AttachMode::Native),
                Err(_) => (attach(xdp, XdpMode::Skb), AttachMode::Skb),
            },
        };
        let id = id.map_err(|source| LoaderError::Attach {
            iface: iface.to_string(),
            source,
        })?;
        let link = xdp.take_link(id).map_err(LoaderError::Program)?;
        let fd_link: FdLink = link
            .try_into()
            .map_err(|e: aya::programs::links::LinkError| LoaderError::Pin {
                path: link_pin.to_path_buf(),
                message: format!("the kernel gave no bpf_link for the XDP attachment ({e})"),
            })?;
        // Killed here, the link dies with its last fd: nothing stays attached.
        crate::fault::point("loader: xdp link created");
        pin_link(fd_link, link_pin)?;
        Ok(used)
    }

    /// The TC program `name`, loaded into the kernel (verified) if needed.
    fn classifier(&mut self, name: &'static str) -> Result<&mut SchedClassifier, LoaderError> {
        let tc: &mut SchedClassifier = self
            .program_mut(name)?
            .try_into()
            .map_err(LoaderError::Program)?;
        if tc.fd().is_err() {
            load_retrying(|| tc.load()).map_err(LoaderError::Program)?;
        }
        Ok(tc)
    }

    /// Loads the TC egress program into the kernel (runs the verifier),
    /// with the IPv6 one it tail-calls.
    pub fn load_egress_program(&mut self) -> Result<(), LoaderError> {
        self.classifier(EGRESS_PROGRAM)?;
        self.load_ipv6_egress()
    }

    /// Loads the IPv6 TC egress program (runs the verifier) if needed and
    /// puts it into `IPV6_EGRESS`, where the TC egress program tail-calls
    /// it. The array is pinned, so a cached egress program finds it there.
    fn load_ipv6_egress(&mut self) -> Result<(), LoaderError> {
        let fd = self
            .classifier(EGRESS6_PROGRAM)?
            .fd()
            .map_err(LoaderError::Program)?
            .try_clone()
            .map_err(|source| LoaderError::Io {
                what: "a copy of the IPv6 egress program's fd".into(),
                source,
            })?;
        let mut array: aya::maps::ProgramArray<&mut MapData> =
            aya::maps::ProgramArray::try_from(self.map_mut("IPV6_EGRESS")?)
                .map_err(map_err("IPV6_EGRESS"))?;
        array.set(0, &fd, 0).map_err(map_err("IPV6_EGRESS"))?;
        Ok(())
    }

    /// Loads the TC ingress program into the kernel (runs the verifier).
    pub fn load_ingress_program(&mut self) -> Result<(), LoaderError> {
        self.classifier(INGRESS_PROGRAM).map(|_| ())
    }

    /// Attaches the TC egress program (OUTPUT chain) to `iface` as a tcx
    /// link pinned at `link_pin`.
    pub fn attach_egress(&mut self, iface: &str, link_pin: &Path) -> Result<(), LoaderError> {
        self.attach_tc(EGRESS_PROGRAM, TcAttachType::Egress, iface, link_pin)
    }

    /// Attaches the TC ingress program (the hand-off of REJECT replies and
    /// fast-path frames, see `iface_path`) to `iface` as a tcx link pinned
    /// at `link_pin`.
    pub fn attach_ingress(&mut self, iface: &str, link_pin: &Path) -> Result<(), LoaderError> {
        self.attach_tc(INGRESS_PROGRAM, TcAttachType::Ingress, iface, link_pin)
    }

    fn attach_tc(
        &mut self,
        name: &'static str,
        hook: TcAttachType,
        iface: &str,
        link_pin: &Path,
    ) -> Result<(), LoaderError> {
        let mut cached = self
            .cached_program_path(name)
            .filter(|p| p.exists())
            .and_then(|p| SchedClassifier::from_pin(p).ok());
        if cached.is_none() {
            self.classifier(name)?;
            if name == EGRESS_PROGRAM {
                self.load_ipv6_egress()?;
            }
            self.cache_program(name);
        }
        let tc = match cached.as_mut() {
            Some(tc) => tc,
            None => self.classifier(name)?,
        };
        let attach_err = |source| LoaderError::Attach {
            iface: iface.to_string(),
            source,
        };
        let id = tc.attach(iface, hook).map_err(attach_err)?;
        let link = tc.take_link(id).map_err(attach_err)?;
        let fd_link: FdLink = link
            .try_into()
            .map_err(|e: aya::programs::links::LinkError| LoaderError::Pin {
                path: link_pin.to_path_buf(),
                message: format!(
                    "the kernel gave no tcx link for {name} (Linux ≥ 6.6 needed): {e}"
                ),
            })?;
        crate::fault::point("loader: tcx link created");
        pin_link(fd_link, link_pin)
    }

    /// Detaches the link pinned at `link_pin` (if it is still there): the
    /// pin is the link's only reference, so the link goes with it.
    pub fn detach(link_pin: &Path) -> Result<(), LoaderError> {
        let unpinned = match PinnedLink::from_pin(link_pin) {
            Ok(link) => link.unpin().map(drop),
            Err(_) => std::fs::remove_file(link_pin),
        };
        match unpinned {
            Ok(()) => {
                crate::fault::point("loader: link unpinned");
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(LoaderError::Unpin {
                path: link_pin.to_path_buf(),
                source,
            }),
        }
    }

    /// The commit sequence number of the ruleset the kernel runs (see
    /// [`ACTIVE_SEQ_SHIFT`]).
    pub fn commit_seq(&self) -> Result<u32, LoaderError> {
        Ok((self.active_word()? >> ACTIVE_SEQ_SHIFT) & ACTIVE_SEQ_MASK)
    }

    /// Records `seq` as the commit sequence number in the `ACTIVE` word,
    /// with one write that changes nothing else: for a change that leaves
    /// the compiled tables as they are (see `cli::plane::commit`), so
    /// that the crash protocol of the rule file still holds without a
    /// generation switch.
    pub fn set_commit_seq(&mut self, seq: u32) -> Result<(), LoaderError> {
        let mut active: Array<&mut MapData, u32> =
            Array::try_from(self.map_mut("ACTIVE")?).map_err(map_err("ACTIVE"))?;
        let word = active.get(&0, 0).map_err(map_err("ACTIVE"))?;
        let word = (word & !(ACTIVE_SEQ_MASK << ACTIVE_SEQ_SHIFT))
            | ((seq & ACTIVE_SEQ_MASK) << ACTIVE_SEQ_SHIFT);
        active.set(0, word, 0).map_err(map_err("ACTIVE"))
    }

    /// The generation the kernel reads now.
    pub fn active_generation(&self) -> Result<u32, LoaderError> {
        let active: Array<&MapData, u32> =
            Array::try_from(self.map("ACTIVE")?).map_err(map_err("ACTIVE"))?;
        Ok(active.get(&0, 0).map_err(map_err("ACTIVE"))? & 1)
    }

    /// Compiles `ruleset` into the inactive generation and switches the
    /// data plane to it with one write: no packet sees half a ruleset.
    /// The commit sequence number stays as it was.
    pub fn apply(
        &mut self,
        ruleset: &Ruleset,
        interfaces: &[Interface],
    ) -> Result<(), LoaderError> {
        let seq = self.commit_seq()?;
        self.apply_seq(ruleset, interfaces, seq)
    }

    /// As [`Dataplane::apply`], recording the commit sequence number `seq`
    /// in the same write that switches the generation.
    pub fn apply_seq(
        &mut self,
        ruleset: &Ruleset,
        interfaces: &[Interface],
        seq: u32,
    ) -> Result<(), LoaderError> {
        let staged = self.stage(ruleset, interfaces)?;
        self.switch(staged, seq)
    }

    /// The state slots of the running generation, as far as this value
    /// knows them (see [`Dataplane::set_guard_slots`]).
    pub fn guard_slots(&self) -> Option<&GuardSlots> {
        self.guard_slots.as_ref()
    }

    /// Tells this value the state slots of the generation the kernel runs
    /// (recorded by whoever switched to it), so that the next ruleset
    /// keeps the state of the rules it does not change. `None`: unknown,
    /// every guard of the next ruleset starts fresh.
    pub fn set_guard_slots(&mut self, slots: Option<GuardSlots>) {
        self.guard_slots = slots;
    }

    /// Forgets what the generations' arrays hold: the next write is whole
    /// (tests compare the two ways).
    #[doc(hidden)]
    pub fn forget_written(&mut self) {
        if let Some(written) = &mut self.written {
            written.gens = Default::default();
        }
    }

    /// Of the last ruleset written, the entries of the recorded arrays
    /// (class headers, class words, key chunks, rule slots) written, and
    /// how many it had: a change writes the entries that differ.
    pub fn last_write_entries(&self) -> (usize, usize) {
        self.written.as_ref().map_or((0, 0), |w| w.last)
    }

    /// The entries of `generation` the record of written entries lists, as
    /// the maps hold them, per array: for tests that compare data planes.
    #[doc(hidden)]
    pub fn recorded_entries(
        &self,
        generation: u32,
    ) -> Result<Vec<(&'static str, Vec<(u32, Vec<u8>)>)>, LoaderError> {
        tables::recorded_entries(self, generation)
    }

    /// Removes the record of written entries kept in `dir`: after an
    /// upgrade made maps anew (empty), whatever the record says they hold.
    /// It is stamped with the id of `CHAINS`, which an upgrade may keep
    /// while it makes others anew (a ruleset array of another capacity).
    pub fn drop_written_record(dir: &Path) -> Result<(), LoaderError> {
        let path = dir.join(written::WRITTEN_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(LoaderError::Io {
                what: format!("{} (maps were made anew)", path.display()),
                source,
            }),
        }
    }

    /// Keeps the record of what each generation's arrays hold in the
    /// directory `dir` (a namespace's state directory), so that the next
    /// command's change writes only the entries that differ (`written`).
    pub fn keep_written_in(&mut self, dir: &Path) {
        let path = dir.join(written::WRITTEN_FILE);
        if self.written_path.as_ref() != Some(&path) {
            self.written = None;
            self.written_path = Some(path);
        }
    }

    /// First half of [`Dataplane::apply_seq`]: compiles `ruleset` into the
    /// inactive generation, guards of unchanged rules keeping their state
    /// slots and new ones given zeroed slots. Nothing the kernel runs
    /// changes until [`Dataplane::switch`]; [`Staged::slots`] is what to
    /// record for the next change.
    pub fn stage(
        &mut self,
        ruleset: &Ruleset,
        interfaces: &[Interface],
    ) -> Result<Staged, LoaderError> {
        let next = 1 - self.active_generation()?;
        crate::profile::phase("before compile");
        let hint = self.guard_slots.as_ref().and_then(|g| g.coarsened);
        let mut compiled = compile::compile_hinted(
            ruleset,
            interfaces,
            next,
            compile::Compiling {
                hint,
                capacity: self.capacity,
            },
        )
        .map_err(|e| {
            if self.capacity != Capacity::FULL && e.is_capacity() {
                LoaderError::RulesetCapacity {
                    source: e,
                    slots: self.capacity.slots(),
                }
            } else {
                LoaderError::Compile(e)
            }
        })?;
        crate::profile::phase("compile");
        let plan = compile::assign_state_slots(&mut compiled, self.guard_slots.as_ref());
        tables::write(self, &compiled)?;
        crate::profile::phase("write the maps");
        tables::clear_state_slots(self, &plan.fresh, &plan.fresh_connlimit)?;
        Ok(Staged { compiled, plan })
    }

    /// Second half of [`Dataplane::apply_seq`]: switches the kernel to the
    /// staged generation with one write (recording `seq`), then frees the
    /// state slots of the guards it no longer has.
    pub fn switch(&mut self, staged: Staged, seq: u32) -> Result<(), LoaderError> {
        let Staged { compiled, plan } = staged;
        let next = compiled.generation;
        let mut active: Array<&mut MapData, u32> =
            Array::try_from(self.map_mut("ACTIVE")?).map_err(map_err("ACTIVE"))?;
        let previous = active.get(&0, 0).map_err(map_err("ACTIVE"))?;
        // Conntrack runs only when a rule looks at connection states or
        // the nat table has rules; the nat chains only when they have rules.
        let mut word = next | compiled.active_flags();
        // Connections translated under earlier rules keep their
        // translation (and the tracking it needs) until conntrack is
        // flushed, as netfilter keeps them: a ruleset change never breaks
        // an open connection.
        if word & ACTIVE_NAT != 0 || previous & (ACTIVE_NAT | ACTIVE_TRANSLATIONS) != 0 {
            word |= ACTIVE_TRANSLATIONS | ACTIVE_TRACKING;
        }
        // `netbeast lb` services are not part of the ruleset: they stay.
        if previous & netbeast_common::ACTIVE_LB != 0 {
            word |= netbeast_common::ACTIVE_LB | ACTIVE_TRANSLATIONS | ACTIVE_TRACKING;
        }
        // Nor is a running `netbeast trace`.
        word |= previous & netbeast_common::ACTIVE_TRACE;
        word |= (seq & ACTIVE_SEQ_MASK) << ACTIVE_SEQ_SHIFT;
        crate::fault::point("loader: inactive generation written");
        active.set(0, word, 0).map_err(map_err("ACTIVE"))?;
        crate::fault::point("loader: generation switched");
        self.guard_slots = Some(plan.slots);
        // Hygiene: a new guard's slot is cleared again when it is given
        // out (a packet of the old generation still in flight may touch
        // a freed slot after this), so nothing depends on it.
        // Which freed slots held connlimit lists is not recorded: their
        // lists are looked for among all (only connlimit rules make any).
        // The switch is done: a failure here must not make the command
        // report a change that happened as failed, and costs nothing but
        // memory until the slot is given out (and cleared) again.
        let _ = tables::clear_state_slots(self, &plan.freed, &plan.freed);
        Ok(())
    }

    /// Replaces the set of addresses the XDP program treats as local.
    /// Into the exact table and the packet path's cache, whose every
    /// bucket is rewritten; an address its bucket has no room for is left
    /// out of the cache (the FIB lookup still finds it local).
    pub fn set_local_addresses(&mut self, addrs: &[Ipv4Addr]) -> Result<(), LoaderError> {
        let wanted: Vec<(u32, u32)> = addrs
            .iter()
            .map(|a| (u32::from_ne_bytes(a.octets()), 1))
            .collect();
        self.replace_u32_map("LOCAL_ADDRS", &wanted)?;
        let mut buckets = vec![[LOCAL_ADDR_FREE; LOCAL_ADDR_WAYS]; LOCAL_ADDR_BUCKETS as usize];
        for a in addrs {
            let addr = u32::from_ne_bytes(a.octets());
            let bucket = &mut buckets[local_addr_bucket(addr) as usize];
            if let Some(way) = bucket
                .iter_mut()
                .find(|w| **w == LOCAL_ADDR_FREE || **w == addr)
            {
                *way = addr;
            }
        }
        let name = "LOCAL_ADDR_CACHE";
        let mut cache: Array<&mut MapData, [u32; LOCAL_ADDR_WAYS]> =
            Array::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        for (i, bucket) in buckets.iter().enumerate() {
            cache.set(i as u32, bucket, 0).map_err(map_err(name))?;
        }
        Ok(())
    }

    /// Replaces the IPv6 addresses the IPv6 XDP program finds local
    /// without a FIB lookup (`LOCAL_ADDR6_CACHE`), every bucket rewritten:
    /// the global and unique-local ones of `addrs`; link-local addresses
    /// (one interface's) and those their bucket has no room for are left
    /// to the FIB, which still finds them local.
    pub fn set_local_addresses6(&mut self, addrs: &[Ipv6Addr]) -> Result<(), LoaderError> {
        let mut buckets = vec![[[0u32; 4]; LOCAL_ADDR6_WAYS]; LOCAL_ADDR6_BUCKETS as usize];
        for a in addrs.iter().filter(|a| cacheable6(a)) {
            let words = addr6_words(a);
            let bucket = &mut buckets[local_addr6_bucket(words) as usize];
            if let Some(way) = bucket.iter_mut().find(|w| **w == [0; 4] || **w == words) {
                *way = words;
            }
        }
        let name = "LOCAL_ADDR6_CACHE";
        let mut cache: Array<&mut MapData, [[u32; 4]; LOCAL_ADDR6_WAYS]> =
            Array::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        for (i, bucket) in buckets.iter().enumerate() {
            cache.set(i as u32, bucket, 0).map_err(map_err(name))?;
        }
        Ok(())
    }

    /// Replaces the routes `-m addrtype` looks address types up in: the
    /// local routing table's (table 255) destinations with their route
    /// types (`addr_type::*`), as `state::local_routes` reads them. The
    /// kernel answers the fixed cases (0.0.0.0/8, 224.0.0.0/4,
    /// 255.255.255.255) itself, and UNICAST where no route matches.
    pub fn set_address_types(&mut self, routes: &[(Ipv4Net, u32)]) -> Result<(), LoaderError> {
        let key = |net: &Ipv4Net| {
            let net = Ipv4Net::new(net.addr, net.prefix_len);
            lpm_trie::Key::new(
                u32::from(net.prefix_len),
                u32::from_ne_bytes(net.addr.octets()),
            )
        };
        let wanted = routes.iter().map(|(net, t)| (key(net), *t)).collect();
        self.replace_address_types("ADDR_TYPES", size::ADDR_TYPES, wanted)
    }

    /// [`Dataplane::set_address_types`] for ip6tables: the IPv6 routes of
    /// the local and main tables, as `local_routes::local_routes6` reads
    /// them (`addr_type::key6`: no route is UNREACHABLE).
    pub fn set_address_types6(&mut self, routes: &[(Ipv6Net, u32)]) -> Result<(), LoaderError> {
        let key = |net: &Ipv6Net| {
            let net = Ipv6Net::new(net.addr, net.prefix_len);
            let o = net.addr.octets();
            let word = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            lpm_trie::Key::new(
                u32::from(net.prefix_len),
                [word(0), word(4), word(8), word(12)],
            )
        };
        let wanted = routes.iter().map(|(net, t)| (key(net), *t)).collect();
        self.replace_address_types("ADDR_TYPES6", size::ADDR_TYPES6, wanted)
    }

    /// Makes address type trie `name` hold `wanted` (key, route value).
    fn replace_address_types<K: aya::Pod + PartialEq>(
        &mut self,
        name: &'static str,
        limit: u32,
        wanted: Vec<(lpm_trie::Key<K>, u32)>,
    ) -> Result<(), LoaderError> {
        if wanted.len() > limit as usize {
            return Err(LoaderError::TooManyLocalRoutes {
                routes: wanted.len(),
                limit: limit as usize,
            });
        }
        let mut trie: LpmTrie<&mut MapData, K, u32> =
            LpmTrie::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        let stale: Vec<lpm_trie::Key<K>> = trie
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                !wanted
                    .iter()
                    .any(|(w, _)| w.prefix_len() == k.prefix_len() && w.data() == k.data())
            })
            .collect();
        for k in stale {
            trie.remove(&k).map_err(map_err(name))?;
        }
        for (k, t) in &wanted {
            trie.insert(k, t, 0).map_err(map_err(name))?;
        }
        Ok(())
    }

    /// Replaces what the XDP program knows of the ways out of each
    /// interface: (ifindex, `iface_path` bits).
    pub fn set_interface_paths(&mut self, paths: &[(u32, u32)]) -> Result<(), LoaderError> {
        self.replace_u32_map("IFACE_PATHS", paths)?;
        // The route cache keeps each route's bits of this map.
        self.bump_route_epoch()
    }

    /// Replaces the ifindex → primary address table (ICMP error sources).
    pub fn set_interface_addresses(
        &mut self,
        addrs: &[(u32, Ipv4Addr)],
    ) -> Result<(), LoaderError> {
        let wanted: Vec<(u32, u32)> = addrs
            .iter()
            .map(|(i, a)| (*i, u32::from_ne_bytes(a.octets())))
            .collect();
        self.replace_u32_map("IFACE_ADDRS", &wanted)
    }

    /// Replaces the ifindex → first global IPv6 address table (the
    /// address of ip6tables' MASQUERADE and REDIRECT).
    pub fn set_interface_addresses6(
        &mut self,
        addrs: &[(u32, Ipv6Addr)],
    ) -> Result<(), LoaderError> {
        let wanted: Vec<(u32, [u32; 4])> =
            addrs.iter().map(|(i, a)| (*i, addr6_words(a))).collect();
        self.replace_u32_map("IFACE_ADDRS6", &wanted)
    }

    /// Replaces what the XDP program knows of the interfaces to tell the
    /// frames the kernel discards before netfilter: (ifindex, MAC,
    /// route_localnet). Interfaces left out (and `lo`) are not checked.
    pub fn set_interface_guards(
        &mut self,
        guards: &[(u32, [u8; 6], bool)],
    ) -> Result<(), LoaderError> {
        let name = "IFACE_GUARDS";
        let mut map: Array<&mut MapData, u64> =
            Array::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        // Entries of interfaces that are gone stay: ifindexes are not
        // reused within a namespace, and one rewrite per interface keeps a
        // rule change cheap.
        for &(ifindex, mac, localnet) in guards {
            // Past the table: not checked, as documented with the limit.
            if ifindex >= size::IFACE_GUARDS {
                continue;
            }
            let entry = iface_guard::entry(mac, localnet);
            if map.get(&ifindex, 0).map_err(map_err(name))? != entry {
                map.set(ifindex, entry, 0).map_err(map_err(name))?;
            }
        }
        Ok(())
    }

    /// Replaces the ports `attach --syn-flood-guard` protects, each with
    /// the SYN-ACK options `options` (`netbeast_common::synproxy`).
    pub fn set_syn_guard_ports(&mut self, ports: &[u16], options: u32) -> Result<(), LoaderError> {
        let name = "SYN_GUARD_PORTS";
        let mut map: HashMap<&mut MapData, u16, u32> =
            HashMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        let stale: Vec<u16> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !ports.contains(k))
            .collect();
        for k in stale {
            map.remove(&k).map_err(map_err(name))?;
        }
        for port in ports {
            map.insert(port, options, 0).map_err(map_err(name))?;
        }
        self.config_memory()?
            .syn_guard_ports()
            .store(ports.len() as u32, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// The ports `attach --syn-flood-guard` protects, sorted.
    pub fn syn_guard_ports(&self) -> Result<Vec<u16>, LoaderError> {
        let name = "SYN_GUARD_PORTS";
        let map: HashMap<&MapData, u16, u32> =
            HashMap::try_from(self.map(name)?).map_err(map_err(name))?;
        let mut ports: Vec<u16> = map.keys().filter_map(Result::ok).collect();
        ports.sort_unstable();
        Ok(ports)
    }

    fn replace_u32_map<V: aya::Pod>(
        &mut self,
        name: &'static str,
        wanted: &[(u32, V)],
    ) -> Result<(), LoaderError> {
        let mut map: HashMap<&mut MapData, u32, V> =
            HashMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        let stale: Vec<u32> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !wanted.iter().any(|(w, _)| w == k))
            .collect();
        for k in stale {
            map.remove(&k).map_err(map_err(name))?;
        }
        for (k, v) in wanted {
            map.insert(k, v, 0).map_err(map_err(name))?;
        }
        Ok(())
    }

    /// One `BPF_PROG_TEST_RUN` of the XDP program on `frame`.
    pub fn test_run_xdp(
        &mut self,
        frame: &[u8],
        ingress_ifindex: u32,
    ) -> Result<TestRunOutput, LoaderError> {
        self.load_program()?;
        let xdp = self.xdp()?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex.
        let md: [u32; 6] = [0, frame.len() as u32, 0, ingress_ifindex, 0, 0];
        let ctx: Vec<u8> = md.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let mut out = vec![0u8; frame.len() + 512];
        let result = xdp
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: if ingress_ifindex != 0 {
                    Some(&ctx)
                } else {
                    None
                },
                ..TestRunOptions::new()
            })
            .map_err(LoaderError::TestRun)?;
        out.truncate(result.data_size_out as usize);
        Ok(TestRunOutput {
            action: result.return_value,
            frame: out,
        })
    }

    /// One `BPF_PROG_TEST_RUN` of the TC egress program (OUTPUT) on
    /// `frame`, as the host's own packet leaving by the test run's device
    /// (the namespace's loopback). The IPv6 egress program is loaded and
    /// put where the egress program tail-calls it. Returns the TC action
    /// (`TC_ACT_OK`, `TC_ACT_SHOT`, `TC_ACT_REDIRECT` for an answer handed
    /// back to the host) and the frame as the program left it.
    pub fn test_run_tc_egress(&mut self, frame: &[u8]) -> Result<TestRunOutput, LoaderError> {
        self.load_egress_program()?;
        let tc = self.classifier(EGRESS_PROGRAM)?;
        let mut out = vec![0u8; frame.len() + 512];
        let result = tc
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..TestRunOptions::new()
            })
            .map_err(LoaderError::TestRun)?;
        out.truncate(result.data_size_out as usize);
        Ok(TestRunOutput {
            action: result.return_value,
            frame: out,
        })
    }

    /// One `BPF_PROG_TEST_RUN` of the TC ingress program (the receiving
    /// end of the hand-off) on `frame`, as the first program to see it as
    /// an skb. Returns the TC action (`TC_ACT_OK`, `TC_ACT_REDIRECT` for a
    /// frame it sends on), the frame as the program left it, and the skb's
    /// mark after it (0 before).
    pub fn test_run_tc_ingress(
        &mut self,
        frame: &[u8],
    ) -> Result<(TestRunOutput, u32), LoaderError> {
        self.load_ingress_program()?;
        let tc = self.classifier(INGRESS_PROGRAM)?;
        let mut out = vec![0u8; frame.len() + 512];
        // A zeroed struct __sk_buff: mark 0, the kernel fills the rest.
        let ctx_in = [0u8; SKB_CTX_SIZE];
        let mut ctx_out = [0u8; SKB_CTX_SIZE];
        let result = tc
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx_in),
                ctx_out: Some(&mut ctx_out),
                ..TestRunOptions::new()
            })
            .map_err(LoaderError::TestRun)?;
        out.truncate(result.data_size_out as usize);
        let mark = u32::from_ne_bytes(ctx_out[8..12].try_into().expect("4 bytes"));
        Ok((
            TestRunOutput {
                action: result.return_value,
                frame: out,
            },
            mark,
        ))
    }

    /// Sets or clears `ACTIVE_TRACE` (`netbeast trace`): while it is set,
    /// every chain reports its run on every packet into `TRACE_EVENTS`.
    /// Call under the namespace lock: a ruleset change rewrites the word.
    pub fn set_trace(&mut self, on: bool) -> Result<(), LoaderError> {
        let name = "ACTIVE";
        let mut active: Array<&mut MapData, u32> =
            Array::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        let word = active.get(&0, 0).map_err(map_err(name))?;
        let new = if on {
            word | netbeast_common::ACTIVE_TRACE
        } else {
            word & !netbeast_common::ACTIVE_TRACE
        };
        if new != word {
            active.set(0, new, 0).map_err(map_err(name))?;
        }
        Ok(())
    }

    /// The slot actions of `chain` in `generation` as the kernel has them
    /// (`RULES`), for slots `slots`: what `netbeast trace` checks its
    /// compiled copy of the ruleset against.
    pub fn rule_actions(
        &self,
        generation: u32,
        chain: u32,
        slots: &[u32],
    ) -> Result<Vec<netbeast_common::RuleAction>, LoaderError> {
        let base = tables::chain_config(self, generation, chain)?.rule_base;
        let rules: Array<&MapData, netbeast_common::RuleAction> =
            Array::try_from(self.map("RULES")?).map_err(map_err("RULES"))?;
        slots
            .iter()
            .map(|&slot| {
                rules
                    .get(
                        &netbeast_common::rule_index(self.capacity, generation, base, slot),
                        0,
                    )
                    .map_err(map_err("RULES"))
            })
            .collect()
    }

    /// Removes one connection from both conntrack tables (what a described
    /// packet of `netbeast trace --packet` created). True when one was
    /// there.
    pub fn remove_conntrack_entry(&mut self, key: &CtKey) -> Result<bool, LoaderError> {
        self.remove_conntrack_entry_of(key, ["CT_UNREPLIED", "CT_ESTABLISHED"])
    }

    /// [`remove_conntrack_entry`](Self::remove_conntrack_entry) of the IPv6
    /// tables.
    pub fn remove_conntrack_entry6(
        &mut self,
        key: &netbeast_common::CtKey6,
    ) -> Result<bool, LoaderError> {
        self.remove_conntrack_entry_of(key, ["CT6_UNREPLIED", "CT6_ESTABLISHED"])
    }

    fn remove_conntrack_entry_of<A>(
        &mut self,
        key: &CtKeyOf<A>,
        names: [&'static str; 2],
    ) -> Result<bool, LoaderError>
    where
        CtKeyOf<A>: aya::Pod,
        CtEntryOf<A>: aya::Pod,
    {
        let mut removed = false;
        for name in names {
            let mut map: HashMap<&mut MapData, CtKeyOf<A>, CtEntryOf<A>> =
                HashMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
            removed |= map.remove(key).is_ok();
        }
        Ok(removed)
    }

    /// Global statistics summed over CPUs, indexed by `stats::*`.
    pub fn stats(&self) -> Result<Vec<u64>, LoaderError> {
        let map: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.map("STATS")?).map_err(map_err("STATS"))?;
        let mut stats = (0..stats::COUNT)
            .map(|i| {
                let values = map.get(&i, 0).map_err(map_err("STATS"))?;
                Ok(values.iter().sum())
            })
            .collect::<Result<Vec<u64>, LoaderError>>()?;
        // Counted as its parts (see `stats::PACKETS`).
        stats[stats::PACKETS as usize] = stats::INGRESS_OUTCOMES
            .iter()
            .map(|&i| stats[i as usize])
            .sum();
        Ok(stats)
    }

    /// Live counters of the active generation for `chain`: one per rule
    /// (`rules` of them) and the policy's.
    pub fn chain_counters(
        &self,
        chain: u32,
        rules: usize,
    ) -> Result<(Vec<Counter>, Counter), LoaderError> {
        let generation = self.active_generation()?;
        tables::read_counters(self, generation, chain, rules)
    }

    /// The kernel memory of each pinned map ([`MAP_NAMES`]), in bytes,
    /// as the kernel counts it (`memlock` of the map's fdinfo: since Linux
    /// 6.4 what the map uses now, so tries and hash maps that grow with
    /// the ruleset show their size, preallocated arrays their whole
    /// capacity). For `netbeast status` (issue 17: the footprint on small
    /// machines).
    pub fn map_memory(&self) -> Result<Vec<(&'static str, u64)>, LoaderError> {
        MAP_NAMES
            .iter()
            .map(|&name| Ok((name, batch::memlock(self.map(name)?, name)?)))
            .collect()
    }

    /// The whole `ACTIVE` word: the generation (bit 0) and the
    /// `ACTIVE_TRACKING` / `ACTIVE_NAT` bits.
    pub fn active_word(&self) -> Result<u32, LoaderError> {
        let active: Array<&MapData, u32> =
            Array::try_from(self.map("ACTIVE")?).map_err(map_err("ACTIVE"))?;
        active.get(&0, 0).map_err(map_err("ACTIVE"))
    }

    /// The first `count` translations of the active generation, as the
    /// `NAT_TARGETS` map holds them.
    pub fn nat_targets(
        &self,
        count: usize,
    ) -> Result<Vec<netbeast_common::NatTarget>, LoaderError> {
        let generation = self.active_generation()?;
        tables::read_nat_targets(self, generation, count)
    }

    /// Live counters of the active generation for the first `rules` rules
    /// of the user-defined chains, numbered as
    /// `compile::user_chain_counters` says.
    pub fn user_chain_counters(&self, rules: usize) -> Result<Vec<Counter>, LoaderError> {
        let generation = self.active_generation()?;
        tables::read_user_chain_counters(self, generation, rules)
    }

    /// Verdict and mean cost per run of `repeat` runs of `frame` through
    /// the XDP program, or through the do-nothing floor program.
    pub fn test_run_repeat(
        &mut self,
        frame: &[u8],
        repeat: u32,
        floor: bool,
    ) -> Result<(u32, std::time::Duration), LoaderError> {
        self.test_run_repeat_on(frame, repeat, floor, 0)
    }

    /// [`Self::test_run_repeat`] with the frame arriving on
    /// `ingress_ifindex` (0: `lo`), an interface of the calling thread's
    /// namespace: the FIB lookup of a forwarded packet starts from it.
    pub fn test_run_repeat_on(
        &mut self,
        frame: &[u8],
        repeat: u32,
        floor: bool,
        ingress_ifindex: u32,
    ) -> Result<(u32, std::time::Duration), LoaderError> {
        let name = if floor { FLOOR_PROGRAM } else { XDP_PROGRAM };
        if !floor {
            self.load_ipv6_program()?;
        }
        let xdp: &mut Xdp = self
            .program_mut(name)?
            .try_into()
            .map_err(LoaderError::Program)?;
        if xdp.fd().is_err() {
            load_retrying(|| xdp.load()).map_err(LoaderError::Program)?;
        }
        let mut out = vec![0u8; frame.len() + 512];
        // struct xdp_md, as in `test_run_xdp`.
        let md: [u32; 6] = [0, frame.len() as u32, 0, ingress_ifindex, 0, 0];
        let ctx: Vec<u8> = md.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let result = xdp
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: (ingress_ifindex != 0).then_some(&ctx[..]),
                repeat,
                ..TestRunOptions::new()
            })
            .map_err(LoaderError::TestRun)?;
        Ok((result.return_value, result.duration))
    }

    // -- -m recent lists, for `netbeast recent` --

    /// Every `-m recent` entry: its key and entry.
    pub fn recent_entries(
        &self,
    ) -> Result<Vec<(netbeast_common::RecentKey, netbeast_common::RecentEntry)>, LoaderError> {
        let map: HashMap<&MapData, netbeast_common::RecentKey, netbeast_common::RecentEntry> =
            HashMap::try_from(self.map("RECENT")?).map_err(map_err("RECENT"))?;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for item in map.iter() {
            let (key, entry) = item.map_err(map_err("RECENT"))?;
            // A walk the kernel changes meanwhile can see a key twice.
            if seen.insert((key.name, key.addr)) {
                out.push((key, entry));
            }
        }
        Ok(out)
    }

    // -- conntrack tables, for `netbeast conntrack` and the tests --

    /// Every conntrack entry as the kernel left it, each with `true` when
    /// it is in the established table. Expired entries are included (the
    /// kernel only drops them when a packet finds them): see `CtEntry`'s
    /// `last_seen_ns` and `conntrack_config`.
    pub fn conntrack_entries(&self) -> Result<Vec<(CtKey, CtEntry, bool)>, LoaderError> {
        self.conntrack_entries_of(["CT_UNREPLIED", "CT_ESTABLISHED"])
    }

    /// [`conntrack_entries`](Self::conntrack_entries) of the IPv6 tables.
    pub fn conntrack_entries6(
        &self,
    ) -> Result<Vec<(netbeast_common::CtKey6, netbeast_common::CtEntry6, bool)>, LoaderError> {
        self.conntrack_entries_of(["CT6_UNREPLIED", "CT6_ESTABLISHED"])
    }

    /// The entries of one family's pair of tables: unreplied, established.
    fn conntrack_entries_of<A>(
        &self,
        names: [&'static str; 2],
    ) -> Result<Vec<(CtKeyOf<A>, CtEntryOf<A>, bool)>, LoaderError>
    where
        CtKeyOf<A>: aya::Pod + Eq + std::hash::Hash,
        CtEntryOf<A>: aya::Pod,
    {
        let mut out = Vec::new();
        for (name, established) in [(names[0], false), (names[1], true)] {
            let map: HashMap<&MapData, CtKeyOf<A>, CtEntryOf<A>> =
                HashMap::try_from(self.map(name)?).map_err(map_err(name))?;
            // A walk of a hash map that the kernel changes meanwhile can
            // restart and see a key twice.
            let mut seen = std::collections::HashSet::new();
            for item in map.iter() {
                let (key, entry) = item.map_err(map_err(name))?;
                if seen.insert(key) {
                    out.push((key, entry, established));
                }
            }
        }
        Ok(out)
    }

    /// Each conntrack table's capacity (its map's `max_entries`, fixed
    /// when the data plane was made): unreplied, then established.
    pub fn conntrack_limits(&self) -> Result<[u32; 2], LoaderError> {
        let limit = |name: &'static str| -> Result<u32, LoaderError> {
            let data = match self.map(name)? {
                aya::maps::Map::LruHashMap(d) | aya::maps::Map::HashMap(d) => d,
                _ => return Err(LoaderError::MissingMap(name)),
            };
            Ok(data.info().map_err(map_err(name))?.max_entries())
        };
        Ok([limit("CT_UNREPLIED")?, limit("CT_ESTABLISHED")?])
    }

    /// The conntrack timeouts in force: netfilter's defaults while none
    /// were set (all-zero `Config::conntrack`, as the kernel reads it).
    pub fn conntrack_config(&self) -> Result<CtConfig, LoaderError> {
        let config = self.config_memory()?.conntrack();
        Ok(if config.generic == 0 {
            CtConfig::DEFAULT
        } else {
            config
        })
    }

    /// Sets the conntrack timeouts (seconds); `generic` must not be 0, which
    /// the kernel reads as "never set, use netfilter's defaults".
    pub fn set_conntrack_config(&mut self, config: &CtConfig) -> Result<(), LoaderError> {
        self.config_memory()?.set_conntrack(config);
        Ok(())
    }

    /// Writes one conntrack entry into the unreplied or the established
    /// table, as the kernel would (tests use it to stage entries, e.g. one
    /// stamped by another CPU a moment "later").
    pub fn set_conntrack_entry(
        &mut self,
        key: &CtKey,
        entry: &CtEntry,
        established: bool,
    ) -> Result<(), LoaderError> {
        let name = if established {
            "CT_ESTABLISHED"
        } else {
            "CT_UNREPLIED"
        };
        let mut map: HashMap<&mut MapData, CtKey, CtEntry> =
            HashMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        map.insert(key, entry, 0).map_err(map_err(name))
    }

    /// Empties both conntrack tables and the NAT index; returns how many
    /// connections it deleted.
    pub fn flush_conntrack(&mut self) -> Result<usize, LoaderError> {
        let mut deleted = 0;
        for name in ["CT_UNREPLIED", "CT_ESTABLISHED"] {
            deleted += clear::<CtKey, CtEntry>(self.map_mut(name)?, name)?;
        }
        for name in ["CT6_UNREPLIED", "CT6_ESTABLISHED"] {
            deleted += clear::<netbeast_common::CtKey6, netbeast_common::CtEntry6>(
                self.map_mut(name)?,
                name,
            )?;
        }
        clear::<CtKey, CtKey>(self.map_mut("CT_NAT_INDEX")?, "CT_NAT_INDEX")?;
        clear::<netbeast_common::CtKey6, netbeast_common::CtKey6>(
            self.map_mut("CT6_NAT_INDEX")?,
            "CT6_NAT_INDEX",
        )?;
        // No translated connection is left: unless nat rules make new ones,
        // the next ruleset change sets tracking to what its rules need.
        let mut active: Array<&mut MapData, u32> =
            Array::try_from(self.map_mut("ACTIVE")?).map_err(map_err("ACTIVE"))?;
        let word = active.get(&0, 0).map_err(map_err("ACTIVE"))?;
        if word & ACTIVE_TRANSLATIONS != 0 && word & (ACTIVE_NAT | netbeast_common::ACTIVE_LB) == 0
        {
            active
                .set(0, word & !ACTIVE_TRANSLATIONS, 0)
                .map_err(map_err("ACTIVE"))?;
        }
        Ok(deleted)
    }
}

/// Deletes every entry of a conntrack-keyed hash map; returns how many.
fn clear<K, V: aya::Pod>(map: &mut aya::maps::Map, name: &'static str) -> Result<usize, LoaderError>
where
    K: aya::Pod + Eq + std::hash::Hash,
{
    let mut map: HashMap<&mut MapData, K, V> = HashMap::try_from(map).map_err(map_err(name))?;
    let keys: std::collections::HashSet<K> = map
        .keys()
        .collect::<Result<_, _>>()
        .map_err(map_err(name))?;
    let mut deleted = 0;
    for key in keys {
        match map.remove(&key) {
            Ok(()) => deleted += 1,
            // Gone meanwhile (evicted, or removed by the kernel).
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(map_err(name)(e)),
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::rules::model::*;

    /// build.rs hashes the object it built; the embedded one must be it
    /// (a stale hash would reuse another build's program cache).
    #[test]
    fn the_object_hash_is_the_embedded_object_s() {
        let fnv = OBJECT.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
        assert_eq!(object_hash(), fnv);
    }

    #[test]
    fn the_ipv6_local_cache_holds_global_and_unique_local_addresses() {
        let cached = |a: &str| super::cacheable6(&a.parse().unwrap());
        assert!(cached("fd00::2") && cached("2001:db8::1"));
        for a in ["::", "::1", "fe80::2", "febf::1", "ff02::1"] {
            assert!(!cached(a), "{a}");
        }
        // Words as the packet holds them: its bytes in order.
        let w = super::addr6_words(&"fd00::102".parse().unwrap());
        assert_eq!(w[0].to_ne_bytes(), [0xfd, 0, 0, 0]);
        assert_eq!(w[3].to_ne_bytes(), [0, 0, 1, 2]);
    }

    /// The verifier accepts the XDP program, and an empty ruleset passes
    /// traffic.
    #[test]
    fn program_loads_and_passes_by_default() {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "this test loads BPF programs: run it as root"
        );
        let mut dp = match Dataplane::load_private() {
            Ok(dp) => dp,
            Err(e) => {
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg += &format!(": {s}");
                    src = s.source();
                }
                panic!("{msg}");
            }
        };
        dp.load_egress_program()
            .expect("the verifier accepts the TC egress program");
        dp.apply(&Ruleset::default(), &[]).unwrap();
        let frame = [0u8; 60];
        let out = dp.test_run_xdp(&frame, 0).unwrap();
        assert_eq!(out.action, 2, "XDP_PASS expected");
    }
}

#[cfg(test)]
mod smoke {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::{
        packet::FrameBuilder,
        rules::model::{Match, Negatable, PortRange, Ports, Rule, Target},
    };

    /// A target code outside the kernel's table of targets: the loader
    /// refuses to write it, and the kernel that meets one (written behind
    /// the loader's back here) counts it and passes the packet on: it
    /// never falls through to DROP.
    #[test]
    fn an_unknown_target_is_refused_and_never_drops() {
        let mut dp = Dataplane::load_private().expect("load");
        let mut rs = Ruleset::default();
        let mut r = Rule::new(Target::Drop);
        r.protocol = Some(Negatable::is(17));
        rs.filter.chain_mut("INPUT").unwrap().rules.push(r);
        dp.apply(&rs, &[]).unwrap();
        let dst = Ipv4Addr::new(10, 0, 0, 2);
        dp.set_local_addresses(&[dst]).unwrap();
        let frame = FrameBuilder::udp(Ipv4Addr::new(10, 0, 0, 1), 1000, dst, 9).build();
        assert_eq!(
            dp.test_run_xdp(&frame, 0).unwrap().action,
            1,
            "the DROP rule"
        );

        let unknown = netbeast_common::target::COUNT + 7;
        let next = 1 - dp.active_generation().unwrap();
        let mut compiled = compile::compile(&rs, &[], next).unwrap();
        compiled.chains[0].rules[0].target = unknown;
        match tables::write(&mut dp, &compiled) {
            Err(LoaderError::UnknownTarget { code, .. }) => assert_eq!(code, unknown),
            other => panic!("an unknown target was written: {other:?}"),
        }

        let active = dp.active_generation().unwrap();
        let base = tables::chain_config(&dp, active, netbeast_common::chain::INPUT)
            .unwrap()
            .rule_base;
        let index = netbeast_common::rule_index(dp.capacity(), active, base, 0);
        let mut rules: Array<&mut MapData, netbeast_common::RuleAction> =
            Array::try_from(dp.map_mut("RULES").unwrap()).unwrap();
        let mut action = rules.get(&index, 0).unwrap();
        assert_eq!(action.target, netbeast_common::target::DROP);
        action.target = unknown;
        rules.set(index, action, 0).unwrap();
        let before = dp.stats().unwrap()[stats::UNKNOWN_TARGET as usize];
        assert_eq!(
            dp.test_run_xdp(&frame, 0).unwrap().action,
            2,
            "an unknown target is no verdict: the policy (ACCEPT) decides"
        );
        let after = dp.stats().unwrap()[stats::UNKNOWN_TARGET as usize];
        assert_eq!(after - before, 1);
    }

    /// First match across a 3-rule INPUT chain, counters on the right rule.
    #[test]
    fn drops_on_the_matching_rule() {
        let mut dp = Dataplane::load_private().expect("load");
        let mut rs = Ruleset::default();
        let input = rs.filter.chain_mut("INPUT").unwrap();
        for (port, target) in [(22, Target::Accept), (9, Target::Drop), (9, Target::Accept)] {
            let mut r = Rule::new(target);
            r.protocol = Some(Negatable::is(17));
            r.matches.push(Match::Ports(Ports {
                protocol: 17,
                sport: None,
                dport: Some(Negatable::is(PortRange {
                    first: port,
                    last: port,
                })),
                tcp_flags: None,
                tcp_option: None,
                sctp_chunks: None,
                dccp: None,
            }));
            input.rules.push(r);
        }
        dp.apply(&rs, &[]).unwrap();
        let dst = Ipv4Addr::new(10, 0, 0, 2);
        dp.set_local_addresses(&[dst]).unwrap();
        let frame = FrameBuilder::udp(Ipv4Addr::new(10, 0, 0, 1), 1000, dst, 9).build();
        assert_eq!(dp.test_run_xdp(&frame, 0).unwrap().action, 1);
        let other = FrameBuilder::udp(Ipv4Addr::new(10, 0, 0, 1), 1000, dst, 10).build();
        assert_eq!(dp.test_run_xdp(&other, 0).unwrap().action, 2);
        let (rules, policy) = dp.chain_counters(0, 3).unwrap();
        assert_eq!(rules[1].packets, 1);
        assert_eq!(rules[0].packets + rules[2].packets, 0);
        assert_eq!(policy.packets, 1);
    }
}
