//! The data plane's lifecycle on the command line: `attach`, `detach`,
//! `status`, `gc`, and the reconciliation every command runs first.
//!
//! What is on disk (pins, rule file, records) is checked against what the
//! kernel has before anything is done with it:
//! - identity: state is named by numbers the kernel reuses (the namespace's
//!   inode, interfaces' ifindexes), so it carries what is not reused — the
//!   namespace's cookie, and for each link the device the kernel says it is
//!   attached to. State of a namespace or interface that is gone is removed
//!   and reported, never adopted;
//! - crashes: every command is ordered so that a kill leaves the old state
//!   or the new one plus leftovers that this reconciliation settles: an
//!   interface with one hook of two, socket programs without interfaces,
//!   a rule file written for a kernel switch that may not have happened,
//!   temporary files, an interrupted `detach --all`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use netbeast_common::{CtConfig, size, stats};
use serde_json::json;

use super::{FastPath, Mode, fold_counters, parse_timeouts, route_localnet};
use crate::paths::{FastPathChoice, ForwardPath, IfacePaths, XdpMode};
use crate::{
    compile::{CHAIN_NAMES, NAT_CHAIN_NAMES},
    fault,
    loader::{
        ACTIVE_SEQ_MASK, AttachMode, Dataplane, SOCK_PROGRAMS,
        links::{self, LINK_TYPE_TCX, LINK_TYPE_XDP, LinkState},
        sizing::{self, PlaneSizes, STATE_TABLES, TableMemory, TableSizes},
    },
    rules::{
        journal::Change,
        model::{Family, Match, Policy, Ruleset, TableName},
    },
    state::{self, IfaceRecord, LOCK_DIR, Namespace, STATE_ROOT},
};

/// The two hooks of an attached interface, and their pins' prefixes.
const XDP_PIN: &str = "xdp-";
const TC_PIN: &str = "tc-";
/// The TC ingress hook (the hand-off, `paths`): not needed for the
/// interface to be attached, only for the ways that go through it.
const INGRESS_PIN: &str = "tci-";

fn note(text: impl AsRef<str>) {
    eprintln!("netbeast: {}", text.as_ref());
}

fn xdp_pin(ns: &Namespace, ifindex: u32) -> PathBuf {
    ns.links_dir().join(format!("{XDP_PIN}{ifindex}"))
}

fn tc_pin(ns: &Namespace, ifindex: u32) -> PathBuf {
    ns.links_dir().join(format!("{TC_PIN}{ifindex}"))
}

fn ingress_pin(ns: &Namespace, ifindex: u32) -> PathBuf {
    ns.links_dir().join(format!("{INGRESS_PIN}{ifindex}"))
}

fn ingress_alive(ns: &Namespace, ifindex: u32) -> bool {
    hook_alive(&ingress_pin(ns, ifindex), LINK_TYPE_TCX, ifindex).is_some()
}

/// The link pinned at `pin`, if it is of `link_type` and attached to the
/// device `ifindex` now.
fn hook_alive(pin: &Path, link_type: u32, ifindex: u32) -> Option<LinkState> {
    links::pinned_link_state(pin)
        .ok()
        .filter(|l| l.runs_on(link_type, ifindex))
}

/// The ifindexes that have a pin of either hook.
fn pinned_ifindexes(ns: &Namespace) -> BTreeSet<u32> {
    fs::read_dir(ns.links_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name
                .strip_prefix(XDP_PIN)
                .or_else(|| name.strip_prefix(TC_PIN))
                .or_else(|| name.strip_prefix(INGRESS_PIN))?;
            n.parse().ok()
        })
        .collect()
}

/// Both hooks of `ifindex` are attached to it.
fn fully_attached(ns: &Namespace, ifindex: u32) -> bool {
    hook_alive(&xdp_pin(ns, ifindex), LINK_TYPE_XDP, ifindex).is_some()
        && hook_alive(&tc_pin(ns, ifindex), LINK_TYPE_TCX, ifindex).is_some()
}

/// Attached interfaces: (ifindex, name), both hooks alive.
pub(super) fn attached(ns: &Namespace) -> Vec<(u32, String)> {
    let links = state::links();
    pinned_ifindexes(ns)
        .into_iter()
        .filter(|i| fully_attached(ns, *i))
        .map(|i| {
            let name = links
                .iter()
                .find(|l| l.ifindex == i)
                .map_or_else(|| format!("(ifindex {i})"), |l| l.name.clone());
            (i, name)
        })
        .collect()
}

/// The ways out of each attached interface (`iface_path` bits), as its
/// record says, the hand-off only where the TC ingress program runs.
pub(super) fn interface_paths(ns: &Namespace) -> Vec<(u32, u32)> {
    attached(ns)
        .into_iter()
        .filter_map(|(i, _)| {
            let record = ns.iface_record(i)?;
            Some((i, record.paths().bits(ingress_alive(ns, i))))
        })
        .filter(|(_, bits)| *bits != 0)
        .collect()
}

fn iface_name(ns: &Namespace, ifindex: u32) -> String {
    ns.iface_record(ifindex)
        .map_or_else(|| format!("ifindex {ifindex}"), |r| r.name)
}

/// Detaches every link pinned for the namespace and removes all its state
/// but the lock; marked first, so a kill midway is finished by the next
/// command. Returns how many links it detached.
fn purge(ns: &Namespace) -> Result<usize> {
    ns.mark_removing()?;
    let mut detached = 0;
    if let Ok(entries) = fs::read_dir(ns.links_dir()) {
        for e in entries.flatten() {
            Dataplane::detach(&e.path())?;
            detached += 1;
        }
    }
    ns.remove_all()?;
    Ok(detached)
}

/// What reconciliation did that the command itself cares about.
#[derive(Default)]
pub(super) struct Reconciled {
    /// Interfaces that are gone and whose links were removed, by the name
    /// they had.
    pub gone: Vec<String>,
    /// The stored ruleset, when reconciliation read it (so that it is
    /// parsed once per command: it can be megabytes).
    pub stored: Option<Ruleset>,
}

/// The identity of the state found under the namespace's inode: `Ok(())`
/// when it is this namespace's (or there is none), else the foreign
/// cookie.
fn foreign_owner(ns: &Namespace, dp: Option<&Dataplane>) -> Result<Option<u64>> {
    if let Some(owner) = ns.recorded_owner()
        && owner != ns.cookie
    {
        return Ok(Some(owner));
    }
    if let Some(dp) = dp {
        let pinned = dp.socket_netns()?;
        if pinned != 0 && pinned != ns.cookie {
            return Ok(Some(pinned));
        }
    }
    Ok(None)
}

/// Reconciles the namespace's state with the kernel (see the module's
/// comment), then opens its data plane: the existing one, or a new one
/// when `create` (with maps of `sizes`). `keep`: interfaces the
/// command itself is about to attach or detach, whose half-done state it
/// completes rather than have it rolled back here.
pub(super) fn prepare(
    ns: &Namespace,
    create: bool,
    sizes: Option<&PlaneSizes>,
    keep: &[u32],
) -> Result<(Option<Dataplane>, Reconciled)> {
    let mut done = Reconciled::default();
    ns.check_pins_visible()?;
    if ns.is_removing() {
        let n = purge(ns)?;
        note(format!(
            "finished an interrupted `detach --all` ({n} links detached, state removed)"
        ));
    }
    crate::profile::phase("before prepare");
    let mut dp = if ns.has_dataplane() {
        Some(Dataplane::open_pinned(&ns.maps_dir())?)
    } else {
        None
    };
    crate::profile::phase("open the pinned maps");
    if let Some(cookie) = foreign_owner(ns, dp.as_ref())? {
        drop(dp.take());
        let n = purge(ns)?;
        note(format!(
            "the state under {} and {} belonged to a network namespace that no longer exists \
             (it had this namespace's inode {}, but cookie {cookie}, not {}): removed it \
             ({n} links detached); this namespace starts empty",
            ns.pin_dir.display(),
            ns.state_dir.display(),
            ns.id,
            ns.cookie
        ));
    }
    if let Some(dp) = &mut dp {
        // A data plane of an earlier version, or one whose creation a kill
        // cut short: it is in this namespace's directories and no other
        // owner is recorded, so it is this namespace's. Stamp it.
        if ns.recorded_owner().is_none() {
            ns.record_owner()?;
        }
        if dp.socket_netns()? == 0 {
            dp.set_socket_netns(ns.cookie)?;
        }
    }
    let removed = ns.remove_temporaries()?;
    if removed > 0 {
        note(format!(
            "removed {removed} temporary file(s) that interrupted commands left in {}",
            ns.state_dir.display()
        ));
    }
    let kernel_seq = match &dp {
        Some(dp) => Some(dp.commit_seq()?),
        None => None,
    };
    if let Some(what) = ns.settle_pending(kernel_seq)? {
        note(what);
    }
    reconcile_links(ns, keep, &mut done)?;
    if dp.is_none() && create {
        ns.require_bpffs()?;
        // The owner goes on record before the first pin exists.
        ns.record_owner()?;
        fault::point("prepare: owner recorded");
        let mut new = Dataplane::open_pinned_with(&ns.maps_dir(), sizes)?;
        fault::point("prepare: maps created");
        new.set_socket_netns(ns.cookie)?;
        dp = Some(new);
    }
    if let Some(dp) = &mut dp {
        // REJECT's ICMP errors obey the namespace's limits as they are now
        // (the kernel reads its sysctls at each error; netbeast at each
        // command: a change takes effect at the next one).
        dp.set_icmp_limits(&crate::loader::config::icmp_limits_of_namespace())?;
        dp.set_icmp6_limit(crate::loader::config::icmp6_limit_of_namespace())?;
    }
    crate::profile::phase("reconcile");
    if let Some(dp) = &mut dp {
        let stored = ns.load_stored()?;
        crate::profile::phase("read the rule file");
        let kernel = dp.commit_seq()?;
        let mut ruleset = stored.ruleset;
        if let Some(seq) = stored.seq
            && seq != kernel
        {
            // The kernel runs another ruleset than the stored one (its maps
            // were lost and made anew, say): put the stored one back in
            // force, so that the rules listed are the rules enforced.
            note(format!(
                "the kernel did not run the stored ruleset (commit {seq}, kernel at {kernel}): \
                 reinstalled it"
            ));
            commit(ns, dp, &ruleset)?;
        } else if stored
            .interfaces
            .as_ref()
            .is_some_and(|was| *was != state::interface_snapshot(&state::links()))
        {
            // Interfaces came, went or were renamed since the rules were
            // compiled: `-i`/`-o` names resolve anew (iptables matches
            // names on every packet), counters carried over.
            fold_counters(dp, &mut ruleset)?;
            commit(ns, dp, &ruleset)?;
        }
        // After a commit the counters are in `ruleset` and the new
        // generation's start at zero, so it stays right to fold onto.
        done.stored = Some(ruleset);
    }
    Ok((dp, done))
}

/// Settles the links: a link whose device is gone (or that is not attached
/// where its name says) is removed; an interface with one hook of two is
/// rolled back unless it is in `keep`; records without links go; socket
/// programs go when no interface is attached.
fn reconcile_links(ns: &Namespace, keep: &[u32], done: &mut Reconciled) -> Result<()> {
    for ifindex in pinned_ifindexes(ns) {
        let (xdp, tc) = (xdp_pin(ns, ifindex), tc_pin(ns, ifindex));
        let xdp_alive = hook_alive(&xdp, LINK_TYPE_XDP, ifindex).is_some();
        let tc_alive = hook_alive(&tc, LINK_TYPE_TCX, ifindex).is_some();
        let mut dead = Vec::new();
        for (pin, alive) in [(&xdp, xdp_alive), (&tc, tc_alive)] {
            if pin.exists() && !alive {
                Dataplane::detach(pin)?;
                dead.push(pin);
            }
        }
        // The ingress hook goes with the others, or alone when it is stale.
        let ingress = ingress_pin(ns, ifindex);
        if ingress.exists() && (!ingress_alive(ns, ifindex) || (!xdp_alive && !tc_alive)) {
            Dataplane::detach(&ingress)?;
        }
        if !dead.is_empty() && !xdp_alive && !tc_alive {
            let name = iface_name(ns, ifindex);
            note(format!(
                "{name} (ifindex {ifindex}) is gone: its links were removed"
            ));
            if let Some(r) = ns.iface_record(ifindex) {
                done.gone.push(r.name);
            }
            ns.remove_iface_record(ifindex)?;
            continue;
        }
        if xdp_alive != tc_alive && !keep.contains(&ifindex) {
            // Half attached (a killed attach or detach): back to detached,
            // which a rerun of `attach` completes the other way.
            Dataplane::detach(&xdp)?;
            Dataplane::detach(&tc)?;
            Dataplane::detach(&ingress_pin(ns, ifindex))?;
            ns.remove_iface_record(ifindex)?;
            note(format!(
                "{} was half attached (an interrupted attach or detach): detached it; \
                 `netbeast attach {}` attaches it again",
                iface_name(ns, ifindex),
                iface_name(ns, ifindex)
            ));
        }
    }
    let pinned = pinned_ifindexes(ns);
    for (ifindex, _) in ns.iface_records() {
        if !pinned.contains(&ifindex) && !keep.contains(&ifindex) {
            ns.remove_iface_record(ifindex)?;
        }
    }
    let links_dir = ns.links_dir();
    if pinned.is_empty() && keep.is_empty() && Dataplane::sock_pins(&links_dir) > 0 {
        Dataplane::detach_sock(&links_dir)?;
        note("no interface is attached: detached the socket programs left behind");
    }
    Ok(())
}

/// Compiles and installs `ruleset`, crash-safe: the new rule file is
/// written beside the old, the kernel switched (one write that also records
/// the commit's sequence number), then the file renamed over the old. A
/// kill anywhere leaves the kernel and the rule file agreeing once
/// [`prepare`] has settled it (see `Namespace::write_pending`).
pub(super) fn commit(ns: &Namespace, dp: &mut Dataplane, ruleset: &Ruleset) -> Result<()> {
    commit_change(ns, dp, ruleset, None)
}

/// The first half of a commit's file part: `change` (what the command
/// changed, counters aside) appended to the journal with every counter in
/// the counter file, or, without one or when it does not fit the
/// journal, the whole rule file as `ruleset.next`. True when journaled.
fn write_pending(
    ns: &Namespace,
    ruleset: &Ruleset,
    change: Option<&Change>,
    seq: u32,
    interfaces: &[(u32, String)],
) -> Result<bool> {
    if let Some(change) = change
        && ns.write_pending_change(change, ruleset, seq, interfaces)?
    {
        return Ok(true);
    }
    ns.write_pending(ruleset, seq, interfaces)?;
    Ok(false)
}

fn finish_pending(ns: &Namespace, journaled: bool) -> Result<()> {
    if journaled {
        ns.finish_pending_change()?;
    } else {
        ns.finish_pending()?;
    }
    Ok(())
}

/// [`commit`], given what the command changed: a change that fits the
/// journal is appended to it rather than the rule file written whole
/// (`state::Namespace::write_pending_change`); the compile, the map
/// writes and the switch are the same.
pub(super) fn commit_change(
    ns: &Namespace,
    dp: &mut Dataplane,
    ruleset: &Ruleset,
    change: Option<&Change>,
) -> Result<()> {
    let kernel_seq = dp.commit_seq()?;
    let seq = (kernel_seq + 1) & ACTIVE_SEQ_MASK;
    let links = state::links();
    // The running generation's state slots: the guards of the rules this
    // change does not touch keep them, and their state with them.
    dp.set_guard_slots(ns.load_guard_slots(kernel_seq));
    // What the generations hold: the change writes only what differs.
    dp.keep_written_in(&ns.state_dir);
    crate::profile::phase("before commit");
    let journaled = write_pending(ns, ruleset, change, seq, &state::interface_snapshot(&links))?;
    crate::profile::phase("write the rule file");
    fault::point("commit: pending ruleset written");
    let result = (|| -> Result<()> {
        refresh_interfaces_from(ns, dp, ruleset, &links)?;
        crate::profile::phase("interface facts");
        let staged = dp.stage(ruleset, &state::interfaces(&links))?;
        // Before the switch, so that the slots on record always include
        // those of the generation the kernel runs.
        ns.write_pending_guard_slots(staged.slots(), seq)?;
        dp.switch(staged, seq)?;
        Ok(())
    })();
    if let Err(e) = result {
        // The kernel was not switched: the old file stays the truth.
        // (An error of the switch itself leaves the kernel as it was.)
        let _ = ns.settle_pending(Some(dp.commit_seq()?));
        return Err(e);
    }
    finish_pending(ns, journaled)?;
    crate::profile::phase("rename the rule file");
    fault::point("commit: ruleset file replaced");
    ns.finish_guard_slots()?;
    Ok(())
}

/// Records a change that leaves the compiled tables as they are: `-N`, and
/// `-X` of chains that are empty and that no rule jumps to (iptables
/// refuses to delete any other), change no slot, class, counter number or
/// guard (`compile::tests::empty_chains_change_no_table`). So no compile,
/// no map write and no generation switch: the rule file and the commit's
/// sequence number only, with the same crash protocol as [`commit`]. The
/// running generation's live counters run on, so `stored` must hold the
/// rule file's counter bases, not the folded totals.
pub(super) fn commit_unchanged_tables(
    ns: &Namespace,
    dp: &mut Dataplane,
    stored: &Ruleset,
    change: Option<&Change>,
) -> Result<()> {
    let kernel_seq = dp.commit_seq()?;
    let seq = (kernel_seq + 1) & ACTIVE_SEQ_MASK;
    let links = state::links();
    // Every guard keeps its state slot; the record of the slots follows
    // the sequence number, or the next change would find it stale and
    // start every guard afresh.
    let slots = ns.load_guard_slots(kernel_seq);
    let journaled = write_pending(ns, stored, change, seq, &state::interface_snapshot(&links))?;
    if let Some(slots) = &slots {
        ns.write_pending_guard_slots(slots, seq)?;
    }
    crate::profile::phase("write the rule file");
    fault::point("commit: pending ruleset written");
    if let Err(e) = dp.set_commit_seq(seq) {
        let _ = ns.settle_pending(Some(dp.commit_seq()?));
        return Err(e.into());
    }
    fault::point("commit: sequence number recorded");
    finish_pending(ns, journaled)?;
    crate::profile::phase("rename the rule file");
    fault::point("commit: ruleset file replaced");
    if slots.is_some() {
        ns.finish_guard_slots()?;
    }
    Ok(())
}

/// Writes the facts about the interfaces that hold whichever ruleset runs:
/// local addresses, each interface's primary address, the fast path's
/// interfaces, and route_localnet where a DNAT to loopback needs it.
fn refresh_interfaces(ns: &Namespace, dp: &mut Dataplane, ruleset: &Ruleset) -> Result<()> {
    refresh_interfaces_from(ns, dp, ruleset, &state::links())
}

/// Whether an ip6tables rule of `ruleset` has `-m addrtype`.
fn uses_ipv6_address_types(ruleset: &Ruleset) -> bool {
    ruleset
        .tables()
        .into_iter()
        .filter(|(family, _)| *family == Family::V6)
        .flat_map(|(_, table)| &table.chains)
        .flat_map(|chain| &chain.rules)
        .any(|rule| rule.matches.iter().any(|m| matches!(m, Match::AddrType(_))))
}

fn refresh_interfaces_from(
    ns: &Namespace,
    dp: &mut Dataplane,
    ruleset: &Ruleset,
    links: &[state::Link],
) -> Result<()> {
    let local: Vec<_> = links.iter().flat_map(|l| l.addrs.iter().copied()).collect();
    dp.set_local_addresses(&local)?;
    let local6: Vec<_> = links
        .iter()
        .flat_map(|l| l.addrs6.iter().copied())
        .collect();
    dp.set_local_addresses6(&local6)?;
    let routes = crate::local_routes::local_routes()
        .context("cannot read the local routing table (-m addrtype needs it)")?;
    dp.set_address_types(&routes)?;
    // The IPv6 main table can be large (a full routing table): read only
    // for a ruleset that looks at IPv6 address types.
    if uses_ipv6_address_types(ruleset) {
        let routes6 = crate::local_routes::local_routes6()
            .context("cannot read the IPv6 routing tables (ip6tables -m addrtype needs them)")?;
        dp.set_address_types6(&routes6)?;
    }
    let primary: Vec<_> = links
        .iter()
        .filter_map(|l| l.addrs.first().map(|a| (l.ifindex, *a)))
        .collect();
    dp.set_interface_addresses(&primary)?;
    // ip6tables' MASQUERADE and REDIRECT: the interface's first address
    // that is not link-local (a global or unique-local one) and that the
    // kernel would pick as a source (not deprecated or tentative).
    let unpreferred = state::unpreferred_ipv6();
    let primary6: Vec<_> = links
        .iter()
        .filter_map(|l| {
            l.addrs6
                .iter()
                .find(|a| {
                    !a.is_unicast_link_local()
                        && !a.is_loopback()
                        && !unpreferred.contains(&(l.ifindex, **a))
                })
                .map(|a| (l.ifindex, *a))
        })
        .collect();
    dp.set_interface_addresses6(&primary6)?;
    dp.set_interface_paths(&interface_paths(ns))?;
    if super::has_synproxy(ruleset) {
        super::shield_sysctls()?;
        super::warn_synproxy_wscale(ruleset);
    }
    if super::dnats_to_loopback(ruleset) {
        for (_, name) in attached(ns) {
            route_localnet(&name)?;
        }
    }
    // After route_localnet: it decides whether 127.0.0.0/8 is a martian.
    let guards: Vec<_> = links
        .iter()
        .filter(|l| l.ifindex != LOOPBACK_IFINDEX)
        .filter_map(|l| {
            l.mac
                .map(|mac| (l.ifindex, mac, state::route_localnet(&l.name)))
        })
        .collect();
    for (ifindex, _, _) in guards.iter().filter(|g| g.0 >= size::IFACE_GUARDS) {
        eprintln!(
            "netbeast: interface {ifindex} is past IFACE_GUARDS ({}): frames the kernel \
             discards before netfilter (foreign MAC, bad checksum, martians) are filtered \
             and counted there; raise size::IFACE_GUARDS to cover it",
            size::IFACE_GUARDS
        );
    }
    dp.set_interface_guards(&guards)?;
    Ok(())
}

/// `lo`'s ifindex in every network namespace: its traffic is the host's
/// own, which the kernel routes without the martian checks.
const LOOPBACK_IFINDEX: u32 = 1;

/// For the daemon, on an interface change: what every command does first
/// (links of vanished interfaces removed, `-i`/`-o` names resolved anew,
/// see [`prepare`]), under the lock. Nothing when this namespace has no
/// netbeast state.
pub(crate) fn reconcile_current() -> Result<()> {
    let ns = Namespace::current()?;
    if !ns.has_state() {
        return Ok(());
    }
    let _lock = ns.lock()?;
    let (dp, done) = prepare(&ns, false, None, &[])?;
    // An address may have come or gone without a link event: the facts
    // the data plane reads about the interfaces (local addresses, address
    // types, each interface's primary address) are written anew.
    if let (Some(mut dp), Some(ruleset)) = (dp, done.stored.as_ref()) {
        refresh_interfaces(&ns, &mut dp, ruleset)?;
    }
    Ok(())
}

/// For the daemon, once its namespace was deleted (`ip netns del`): removes
/// the namespace's data plane as `netbeast gc` would (links, pins, socket
/// programs, files, lock). Returns how many links it detached.
pub(crate) fn remove_current() -> Result<usize> {
    let ns = Namespace::current()?;
    let lock_path = Path::new(LOCK_DIR).join(ns.id.to_string());
    let lock = state::lock_file(&lock_path)?;
    let links = if ns.has_state() || ns.pin_dir.exists() {
        purge(&ns)?
    } else {
        0
    };
    // Nobody can wait on it any more: the namespace has no name to enter
    // it by, and this daemon is its last process.
    state::remove_held_lock(&lock_path, lock)?;
    Ok(links)
}

/// The namespace's ruleset with current counters, and its data plane when
/// one exists (or `create` asks for one), after reconciliation.
pub(super) fn open(ns: &Namespace, create: bool) -> Result<(Ruleset, Option<Dataplane>)> {
    let (mut ruleset, dp) = open_stored(ns, create)?;
    if let Some(dp) = &dp {
        fold_counters(dp, &mut ruleset)?;
    }
    crate::profile::phase("read the counters");
    Ok((ruleset, dp))
}

/// As [`open`], with the counters as the rule file holds them: the bases
/// that the running generation's live counts add to.
pub(super) fn open_stored(ns: &Namespace, create: bool) -> Result<(Ruleset, Option<Dataplane>)> {
    let (dp, done) = prepare(ns, create, None, &[])?;
    let ruleset = match done.stored {
        Some(ruleset) => ruleset,
        None => ns.load_ruleset()?,
    };
    Ok((ruleset, dp))
}

/// How `attach` was asked to size the keyed state tables and the ruleset
/// arrays.
pub(super) struct TableRequest {
    /// `--table-memory` (None: not given, which is `auto` for a new data
    /// plane and "keep" for an existing one).
    pub memory: Option<TableMemory>,
    /// `--ruleset-memory` (None as for `memory`).
    pub ruleset_memory: Option<TableMemory>,
    /// `--ct-unreplied-size`, `--ct-established-size`.
    pub ct_unreplied: Option<u32>,
    pub ct_established: Option<u32>,
}

/// The fewest entries `--ct-unreplied-size` and `--ct-established-size`
/// take.
const MIN_CT_TABLE_ENTRIES: u32 = 1024;

impl TableRequest {
    /// The tables given a size of their own (outside the budget).
    fn fixed(&self) -> Vec<(&'static str, u32)> {
        [
            ("CT_UNREPLIED", self.ct_unreplied),
            ("CT_ESTABLISHED", self.ct_established),
        ]
        .into_iter()
        .filter_map(|(name, n)| n.map(|n| (name, n)))
        .collect()
    }

    /// Checks the explicit sizes, and gives the sizes a new data plane
    /// would get.
    fn sizes(&self) -> Result<PlaneSizes> {
        for (name, size) in [
            ("--ct-unreplied-size", self.ct_unreplied),
            ("--ct-established-size", self.ct_established),
        ] {
            if let Some(size) = size
                && !(MIN_CT_TABLE_ENTRIES..=netbeast_common::MAX_CT_TABLE_ENTRIES).contains(&size)
            {
                bail!(
                    "{name} {size}: choose between {MIN_CT_TABLE_ENTRIES} and {} entries \
                     (MAX_CT_TABLE_ENTRIES)",
                    netbeast_common::MAX_CT_TABLE_ENTRIES
                );
            }
        }
        let fixed = self.fixed();
        let tables = match self.memory {
            Some(TableMemory::Bytes(budget)) => TableSizes::for_budget(budget, &fixed)?,
            None | Some(TableMemory::Auto) => TableSizes::auto(sizing::memory_for_auto()?, &fixed)?,
        };
        let capacity = match self.ruleset_memory {
            Some(TableMemory::Bytes(budget)) => sizing::capacity_for_budget(budget)?,
            None | Some(TableMemory::Auto) => sizing::auto_capacity(sizing::memory_for_auto()?)?,
        };
        Ok(PlaneSizes { tables, capacity })
    }

    /// Refuses a request that asks the existing state tables pinned in
    /// `dir` for other sizes than they have: they keep their size for the
    /// data plane's life (remaking them would forget every connection).
    fn check_existing(&self, wanted: &PlaneSizes, dir: &Path) -> Result<()> {
        if self.ruleset_memory.is_some()
            && let Some(have) = sizing::pinned_capacity(dir)?
            && have != wanted.capacity
        {
            bail!(
                "the ruleset arrays of this namespace's data plane were sized when it was made, \
                 and keep their size while it exists: they hold {} rule slots, --ruleset-memory \
                 asks for {}. Attach without --ruleset-memory to keep them, or `netbeast save`, \
                 `netbeast detach --all` (it removes the rules and all state), then attach with \
                 it and `netbeast restore` to make them anew with this size",
                have.slots(),
                wanted.capacity.slots()
            );
        }
        let fixed = self.fixed();
        let pinned = TableSizes::pinned(dir)?;
        let mut differ = Vec::new();
        for (((name, _), have), (_, want)) in
            STATE_TABLES.iter().zip(pinned).zip(wanted.tables.iter())
        {
            let asked = fixed.iter().any(|(n, _)| n == name) || self.memory.is_some();
            if let Some(have) = have
                && asked
                && have != want
            {
                differ.push(format!("{name} has {have} entries, asked {want}"));
            }
        }
        if differ.is_empty() {
            return Ok(());
        }
        let more = if differ.len() > 3 {
            format!(" and {} more", differ.len() - 3)
        } else {
            String::new()
        };
        differ.truncate(3);
        bail!(
            "the state tables of this namespace's data plane were sized when it was made, and \
             keep their size while it exists (they hold its connections): {}{more}. Attach \
             without --table-memory/--ct-*-size to keep them, or `netbeast detach --all` first \
             (it removes the rules and all state; `netbeast save` before and `netbeast restore` \
             after keeps the rules) to make them anew with these sizes",
            differ.join(", ")
        );
    }
}

pub(super) fn run_attach(
    ifaces: &[String],
    mode: Mode,
    fast_path: FastPath,
    ct_timeouts: &[String],
    tables: &TableRequest,
    syn_flood_guard: Option<&str>,
) -> Result<()> {
    let sizes = tables.sizes()?;
    // Bad input changes nothing: check the timeouts and resolve every
    // interface name before anything is created.
    parse_timeouts(CtConfig::DEFAULT, ct_timeouts)?;
    let guard_ports = syn_flood_guard.map(super::parse_guard_ports).transpose()?;
    let targets = ifaces
        .iter()
        .map(|i| Ok((i.as_str(), state::ifindex(i)?)))
        .collect::<Result<Vec<_>>>()?;
    let ns = Namespace::current_for_attach()?;
    let _lock = ns.lock()?;
    // (A data plane another namespace left under this inode is removed
    // below, not kept: its sizes bind nobody.)
    if ns.has_dataplane() && foreign_owner(&ns, None)?.is_none() {
        tables.check_existing(&sizes, &ns.maps_dir())?;
    }
    let migrated = migrate_old_layouts(&ns)?;
    let fresh = !ns.has_state() && !ns.has_dataplane();
    let keep: Vec<u32> = targets.iter().map(|(_, i)| *i).collect();
    let (dp, _) = prepare(&ns, true, Some(&sizes), &keep)?;
    let mut dp = dp.expect("prepared with create");
    let before: Vec<u32> = keep
        .iter()
        .copied()
        .filter(|i| fully_attached(&ns, *i))
        .collect();
    let result = attach_all(
        &ns,
        &mut dp,
        &targets,
        mode,
        fast_path,
        ct_timeouts,
        !migrated.is_empty(),
        guard_ports.as_deref(),
    );
    if let Err(e) = result {
        // Leave nothing half-attached: what this command attached goes,
        // and the data plane too if it created it.
        drop(dp);
        if let Err(undo) = rollback(&ns, &targets, &before, fresh) {
            note(format!("could not undo the failed attach: {undo:#}"));
        }
        return Err(e);
    }
    Ok(())
}

/// Undoes a failed `attach`: detaches the interfaces it was attaching
/// (not those fully attached before it: `before`), then lets the
/// reconciliation drop socket programs no interface needs. `fresh`: the
/// namespace had no state before; it has none after.
fn rollback(ns: &Namespace, targets: &[(&str, u32)], before: &[u32], fresh: bool) -> Result<()> {
    if fresh {
        purge(ns)?;
        return Ok(());
    }
    for (_, ifindex) in targets {
        if !before.contains(ifindex) {
            Dataplane::detach(&xdp_pin(ns, *ifindex))?;
            Dataplane::detach(&tc_pin(ns, *ifindex))?;
            Dataplane::detach(&ingress_pin(ns, *ifindex))?;
            ns.remove_iface_record(*ifindex)?;
        }
    }
    reconcile_links(ns, &[], &mut Reconciled::default())
}

/// An upgrade over the pins of another netbeast version whose maps differ
/// in layout: the maps that changed are made anew (empty) and the others
/// kept — above all conntrack, so open connections carry on — and the
/// user is told what each new map's emptiness costs. Only once no program
/// of that version runs: its programs hold the old maps, and rules written
/// to the new ones would never reach them. Returns what was reset.
fn migrate_old_layouts(ns: &Namespace) -> Result<Vec<String>> {
    if !ns.has_dataplane() {
        return Ok(Vec::new());
    }
    let dir = ns.maps_dir();
    let mismatches = Dataplane::layout_mismatches(&dir)?;
    if mismatches.is_empty() {
        return Ok(Vec::new());
    }
    let running: Vec<String> = pinned_ifindexes(ns)
        .into_iter()
        .filter(|&i| {
            hook_alive(&xdp_pin(ns, i), LINK_TYPE_XDP, i).is_some()
                || hook_alive(&tc_pin(ns, i), LINK_TYPE_TCX, i).is_some()
                || ingress_alive(ns, i)
        })
        .map(|i| iface_name(ns, i))
        .collect();
    if !running.is_empty() {
        let maps: Vec<&str> = mismatches.iter().map(|(name, _)| *name).collect();
        bail!(
            "the data plane pinned in {} was made by another netbeast version (maps {} \
             differ), and {} still run that version's programs, which keep its maps: \
             `netbeast detach {}` (rules, connections and the other state stay pinned), then \
             `netbeast attach` again: the maps that changed are made anew, the others kept",
            dir.display(),
            maps.join(", "),
            running.join(", "),
            running.join(" ")
        );
    }
    // Socket programs of the old version (no interface is attached): the
    // attach below puts this version's in their place.
    let links_dir = ns.links_dir();
    if Dataplane::sock_pins(&links_dir) > 0 {
        Dataplane::detach_sock(&links_dir)?;
    }
    let reset = Dataplane::migrate_layouts(&dir)?;
    for line in &reset {
        note(format!("upgrade: {line}"));
    }
    if !reset.is_empty() {
        Dataplane::drop_written_record(&ns.state_dir)?;
    }
    Ok(reset)
}

#[allow(clippy::too_many_arguments)]
fn attach_all(
    ns: &Namespace,
    dp: &mut Dataplane,
    targets: &[(&str, u32)],
    mode: Mode,
    fast_path: FastPath,
    ct_timeouts: &[String],
    migrated: bool,
    guard_ports: Option<&[u16]>,
) -> Result<()> {
    let mut ruleset = ns.load_ruleset()?;
    fold_counters(dp, &mut ruleset)?;
    let timeouts = parse_timeouts(dp.conntrack_config()?, ct_timeouts)?;
    dp.set_conntrack_config(&timeouts)?;
    let links_dir = ns.links_dir();
    fs::create_dir_all(&links_dir)
        .with_context(|| format!("cannot create {}", links_dir.display()))?;
    // The ruleset goes in before any packet can reach the program; when
    // the kernel runs it already (reconciled just now), only the facts
    // about the interfaces are refreshed.
    // A generation written by an earlier version has no slot file: its
    // guard records name no state slots that these programs can use, so
    // it is written anew (its guards start fresh, as they did then).
    // Maps made anew by an upgrade hold no ruleset, whatever ACTIVE says.
    let kernel_seq = dp.commit_seq()?;
    if !migrated
        && ns.load_stored()?.seq == Some(kernel_seq)
        && ns.load_guard_slots(kernel_seq).is_some()
    {
        refresh_interfaces(ns, dp, &ruleset)?;
    } else {
        commit(ns, dp, &ruleset)?;
    }
    if migrated {
        // `netbeast lb` services, from their saved state, into maps that
        // an upgrade may have made anew: all of them, as a service the
        // kernel kept may point into a table made anew, empty.
        let mut services = crate::lb::Services::load(ns)?;
        if crate::lb::restore(&mut services, dp, true)? {
            services.save(ns)?;
        }
    }
    // `-t nat OUTPUT` for local sockets: once per namespace, not per
    // interface; attaches what an interrupted attach left out.
    if !Dataplane::sock_attached(&links_dir) {
        let cgroup = state::cgroup2_root()?;
        dp.attach_sock(&cgroup, Some(&links_dir))?;
    }
    let mut lines = Vec::new();
    let choice = match fast_path {
        FastPath::Auto => FastPathChoice::Auto,
        FastPath::On => FastPathChoice::On,
        FastPath::Off => FastPathChoice::Off,
    };
    for &(name, ifindex) in targets {
        let (xdp, tc, ingress) = (
            xdp_pin(ns, ifindex),
            tc_pin(ns, ifindex),
            ingress_pin(ns, ifindex),
        );
        let xdp_alive = hook_alive(&xdp, LINK_TYPE_XDP, ifindex).is_some();
        let tc_alive = hook_alive(&tc, LINK_TYPE_TCX, ifindex).is_some();
        let ingress_was_alive = ingress_alive(ns, ifindex);
        let already = xdp_alive && tc_alive && ingress_was_alive;
        let wanted = match mode {
            Mode::Auto => AttachMode::Auto,
            Mode::Native => AttachMode::Native,
            Mode::Skb => AttachMode::Skb,
        };
        // The record goes first: a link on disk always has a name. Its
        // paths are settled once the XDP mode is known.
        let previous = ns.iface_record(ifindex);
        ns.write_iface_record(
            ifindex,
            &IfaceRecord {
                name: name.to_string(),
                fast_path: choice != FastPathChoice::Off,
                paths: previous.as_ref().and_then(|r| r.paths.clone()),
            },
        )?;
        let used = if xdp_alive {
            None
        } else {
            // A pin whose link runs nowhere holds the name: drop it first.
            Dataplane::detach(&xdp)?;
            Some(dp.attach(name, ifindex, wanted, &xdp)?)
        };
        if !tc_alive {
            Dataplane::detach(&tc)?;
            dp.attach_egress(name, &tc)?;
        }
        if !ingress_was_alive {
            Dataplane::detach(&ingress)?;
            dp.attach_ingress(name, &ingress)?;
        }
        let xdp_mode = match used {
            Some(AttachMode::Skb) => XdpMode::Skb,
            Some(_) => XdpMode::Native,
            // Kept: the kernel says how it runs.
            None => match links::xdp_state(ifindex) {
                Ok((_, links::XDP_ATTACHED_SKB)) => XdpMode::Skb,
                _ => XdpMode::Native,
            },
        };
        let paths = IfacePaths::plan(state::driver(name).as_deref(), xdp_mode, choice);
        ns.write_iface_record(
            ifindex,
            &IfaceRecord {
                name: name.to_string(),
                fast_path: paths.forward != ForwardPath::Off,
                paths: Some(paths.clone()),
            },
        )?;
        if let (Mode::Auto, Some(AttachMode::Skb)) = (mode, used) {
            eprintln!(
                "warning: {name}: native XDP is not available, attached in generic (skb) mode"
            )
        }
        let how = match (already, used) {
            (true, _) => "already attached".to_string(),
            (false, Some(_)) => paths.xdp_mode_name().to_string(),
            (false, None) => format!("{} kept, TC hooks completed", paths.xdp_mode_name()),
        };
        lines.push(format!(
            "{name}: attached ({how}); REJECT replies: {} ({}); forwarding fast path into it: \
             {} ({})",
            paths.reject_name(),
            paths.reject_why(),
            paths.forward_name(),
            paths.forward_why()
        ));
    }
    // Now that the links exist, the fast path may use them.
    dp.set_interface_paths(&interface_paths(ns))?;
    if let Some(ports) = guard_ports {
        if !ports.is_empty() {
            super::shield_sysctls()?;
        }
        dp.set_syn_guard_ports(ports, super::guard_options())?;
        lines.push(match ports.len() {
            0 => "SYN-flood guard: off".to_string(),
            n => format!("SYN-flood guard: {n} port(s) shielded with SYN cookies"),
        });
    }
    if super::dnats_to_loopback(&ruleset) {
        for (_, name) in attached(ns) {
            route_localnet(&name)?;
        }
    }
    for line in lines {
        outln!("{line}");
    }
    Ok(())
}

pub(super) fn run_detach(ifaces: &[String], all: bool) -> Result<()> {
    let ns = Namespace::current()?;
    let _lock = ns.lock()?;
    if all {
        // Whatever can be seen goes, even when the identity or the pins
        // cannot be checked: this is the way out of every broken state.
        let n = purge(&ns)?;
        outln!("detached everywhere; rules and state removed ({n} links)");
        return Ok(());
    }
    // An interface that no longer exists is found by the name on record.
    let records = ns.iface_records();
    let targets: Vec<(&str, Option<u32>)> = ifaces
        .iter()
        .map(|name| {
            let ifindex = state::ifindex(name).ok().or_else(|| {
                records
                    .iter()
                    .find(|(_, r)| &r.name == name)
                    .map(|(i, _)| *i)
            });
            (name.as_str(), ifindex)
        })
        .collect();
    let keep: Vec<u32> = targets.iter().filter_map(|(_, i)| *i).collect();
    let (dp, done) = prepare(&ns, false, None, &keep)?;
    let mut lines = Vec::new();
    let mut detached = Vec::new();
    for (name, ifindex) in targets {
        let Some(ifindex) = ifindex else {
            if done.gone.iter().any(|g| g == name) {
                lines.push(format!("{name}: detached (the interface no longer exists)"));
                continue;
            }
            return Err(state::StateError::UnknownInterface(name.to_string()).into());
        };
        let (xdp, tc) = (xdp_pin(&ns, ifindex), tc_pin(&ns, ifindex));
        if !xdp.exists() && !tc.exists() {
            if done.gone.iter().any(|g| g == name) {
                lines.push(format!("{name}: detached (the interface no longer exists)"));
                continue;
            }
            // Its record without links: an interrupted detach; finish it.
            if ns.iface_record(ifindex).is_none() {
                bail!("{name} is not attached (`netbeast status` lists attached interfaces)");
            }
        }
        // Killed between the two, the interface is half attached, which
        // the next command settles (to detached).
        Dataplane::detach(&xdp)?;
        Dataplane::detach(&tc)?;
        // Last: alone, it sends on only what the XDP program handed off.
        Dataplane::detach(&ingress_pin(&ns, ifindex))?;
        detached.push(ifindex);
        let gone = state::ifindex(name).is_err();
        lines.push(if gone {
            format!("{name}: detached (the interface no longer exists)")
        } else {
            format!("{name}: detached")
        });
    }
    // The socket programs serve the namespace while any interface is
    // attached.
    if pinned_ifindexes(&ns).is_empty() {
        Dataplane::detach_sock(&ns.links_dir())?;
    }
    // The records go last: until then, a rerun after a kill finds the
    // interface and finishes detaching it.
    for ifindex in detached {
        ns.remove_iface_record(ifindex)?;
    }
    // The fast path must stop using what is gone.
    if let Some(mut dp) = dp {
        dp.set_interface_paths(&interface_paths(&ns))?;
    }
    for line in lines {
        outln!("{line}");
    }
    Ok(())
}

/// One hook of one interface, as the kernel has it.
struct HookReport {
    /// A pin exists for it.
    pinned: bool,
    /// The pinned link is attached to the interface.
    link: Option<LinkState>,
    /// Program ids the kernel runs on that hook of the device (whoever
    /// attached them); `None` when the device is gone.
    kernel: Option<Vec<u32>>,
}

impl HookReport {
    fn enforced(&self) -> bool {
        match (&self.link, &self.kernel) {
            (Some(l), Some(ids)) => ids.contains(&l.program_id),
            _ => false,
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "pinned": self.pinned,
            "link_attached": self.link.is_some(),
            "program_id": self.link.map(|l| l.program_id),
            "kernel_program_ids": self.kernel,
            "enforced": self.enforced(),
        })
    }
}

struct IfaceReport {
    ifindex: u32,
    name: String,
    exists: bool,
    xdp: HookReport,
    tc_egress: HookReport,
    tc_ingress: HookReport,
    paths: Option<IfacePaths>,
}

impl IfaceReport {
    fn state(&self) -> &'static str {
        let dead = |h: &HookReport| h.pinned && h.link.is_none();
        match (self.xdp.enforced(), self.tc_egress.enforced()) {
            (true, true) => "attached",
            _ if dead(&self.xdp) || dead(&self.tc_egress) => "stale",
            (false, false) if !self.exists => "gone",
            (false, false) => "detached",
            _ => "partial",
        }
    }
}

fn iface_reports(ns: &Namespace) -> Vec<IfaceReport> {
    let links = state::links();
    let mut ifindexes = pinned_ifindexes(ns);
    ifindexes.extend(ns.iface_records().into_iter().map(|(i, _)| i));
    ifindexes
        .into_iter()
        .map(|ifindex| {
            let device = links.iter().find(|l| l.ifindex == ifindex);
            let name = ns
                .iface_record(ifindex)
                .map(|r| r.name)
                .or_else(|| device.map(|d| d.name.clone()))
                .unwrap_or_else(|| format!("ifindex {ifindex}"));
            let exists = device.is_some();
            let xdp_kernel = exists
                .then(|| links::xdp_program_id(ifindex).ok())
                .flatten()
                .map(|id| if id == 0 { vec![] } else { vec![id] });
            let tc_kernel = exists
                .then(|| links::tcx_egress_program_ids(ifindex).ok())
                .flatten();
            let tci_kernel = exists
                .then(|| links::tcx_ingress_program_ids(ifindex).ok())
                .flatten();
            let (xdp, tc) = (xdp_pin(ns, ifindex), tc_pin(ns, ifindex));
            let tci = ingress_pin(ns, ifindex);
            IfaceReport {
                paths: ns.iface_record(ifindex).map(|r| r.paths()),
                tc_ingress: HookReport {
                    pinned: tci.exists(),
                    link: hook_alive(&tci, LINK_TYPE_TCX, ifindex),
                    kernel: tci_kernel,
                },
                ifindex,
                name,
                exists,
                xdp: HookReport {
                    pinned: xdp.exists(),
                    link: hook_alive(&xdp, LINK_TYPE_XDP, ifindex),
                    kernel: xdp_kernel,
                },
                tc_egress: HookReport {
                    pinned: tc.exists(),
                    link: hook_alive(&tc, LINK_TYPE_TCX, ifindex),
                    kernel: tc_kernel,
                },
            }
        })
        .collect()
}

/// The REJECT and fast-path ways the kernel takes for an interface with
/// `paths`: without the TC ingress program, nothing is handed off
/// (replies go by XDP_TX, the kernel forwards what would have been).
fn effective_paths(paths: &IfacePaths, tc_ingress: bool) -> (&'static str, &'static str) {
    if tc_ingress {
        return (paths.reject_name(), paths.forward_name());
    }
    let forward = match paths.forward {
        ForwardPath::TcRedirect => "the kernel (TC ingress missing: `netbeast attach` again)",
        _ => paths.forward_name(),
    };
    ("XDP_TX", forward)
}

fn paths_json(paths: &IfacePaths, tc_ingress: bool) -> serde_json::Value {
    let (reject, forward) = effective_paths(paths, tc_ingress);
    json!({
        "driver": paths.driver,
        "xdp_mode": paths.xdp_mode,
        "reject": reject,
        "reject_why": paths.reject_why(),
        "fast_path_choice": paths.fast_path,
        "fast_path": forward,
        "fast_path_why": paths.forward_why(),
    })
}

/// `status`: reports, changes nothing (the next other command repairs
/// what it finds wrong), so that what it says is what the kernel has.
pub(super) fn run_status(json_out: bool) -> Result<()> {
    let ns = Namespace::current()?;
    let _lock = ns.lock()?;
    ns.check_pins_visible()?;
    let mut mismatches: Vec<String> = Vec::new();
    // Pins of another netbeast version cannot be opened by this one: say
    // so and the way out, and report the rest from the rule file.
    let old_layout = if ns.has_dataplane() {
        Dataplane::layout_mismatches(&ns.maps_dir())?
    } else {
        Vec::new()
    };
    if !old_layout.is_empty() {
        let maps: Vec<&str> = old_layout.iter().map(|(name, _)| *name).collect();
        mismatches.push(format!(
            "the data plane was made by another netbeast version (maps {} differ), so this \
             one cannot read its counters: `netbeast detach` each attached interface, then \
             `netbeast attach` them again (the maps that changed are made anew, connections kept)",
            maps.join(", ")
        ));
    }
    let dp = if ns.has_dataplane() && old_layout.is_empty() {
        Some(Dataplane::open_pinned(&ns.maps_dir())?)
    } else {
        None
    };
    let foreign = foreign_owner(&ns, dp.as_ref())?;
    if let Some(cookie) = foreign {
        mismatches.push(format!(
            "the state under inode {} belongs to a deleted network namespace (cookie {cookie}, \
             this one is {}): it is not this namespace's and the next command removes it",
            ns.id, ns.cookie
        ));
    }
    if ns.is_removing() {
        mismatches.push("an interrupted `detach --all`: the next command finishes it".into());
    }
    let (stored_seq, mut ruleset) = if foreign.is_some() {
        (None, Ruleset::default())
    } else {
        let stored = ns.load_stored()?;
        (stored.seq, stored.ruleset)
    };
    let guard_ports = match (&dp, foreign) {
        (Some(dp), None) => dp.syn_guard_ports().unwrap_or_default(),
        _ => Vec::new(),
    };
    let kernel_seq = match (&dp, foreign) {
        (Some(dp), None) => Some(dp.commit_seq()?),
        _ => None,
    };
    if let (Some(dp), None) = (&dp, foreign) {
        fold_counters(dp, &mut ruleset)?;
    }
    match (stored_seq, kernel_seq) {
        (Some(s), Some(k)) if s != k => mismatches.push(format!(
            "the kernel runs commit {k}, the rule file is commit {s}: the next command settles it"
        )),
        (Some(_), None) if foreign.is_none() && ns.has_state() && old_layout.is_empty() => {
            mismatches.push(
                "the rule file has no data plane in the kernel: the next rule change installs it"
                    .into(),
            )
        }
        _ => {}
    }
    if ns.state_dir.join("ruleset.next").exists() {
        mismatches
            .push("an interrupted rule change is pending: the next command settles it".into());
    }
    let ifaces = if foreign.is_some() {
        Vec::new()
    } else {
        iface_reports(&ns)
    };
    for i in &ifaces {
        match i.state() {
            "attached" => {}
            "detached" if !i.xdp.pinned && !i.tc_egress.pinned => {}
            "gone" | "stale" => mismatches.push(format!(
                "the links pinned for {} (ifindex {}) run nowhere: the interface is gone{} \
                 (the next command removes them)",
                i.name,
                i.ifindex,
                if i.exists {
                    ", and another took its ifindex"
                } else {
                    ""
                }
            )),
            state => mismatches.push(format!(
                "{} is {state}: XDP {}, TC egress {} (the next command settles it)",
                i.name,
                if i.xdp.enforced() {
                    "attached"
                } else {
                    "not attached"
                },
                if i.tc_egress.enforced() {
                    "attached"
                } else {
                    "not attached"
                },
            )),
        }
    }
    let links_dir = ns.links_dir();
    let sock_alive = if foreign.is_some() {
        0
    } else {
        Dataplane::sock_links_alive(&links_dir)
    };
    let any_attached = ifaces.iter().any(|i| i.state() == "attached");
    if sock_alive != 0 && sock_alive != SOCK_PROGRAMS.len() {
        mismatches.push(format!(
            "{sock_alive} of the {} socket programs are attached",
            SOCK_PROGRAMS.len()
        ));
    } else if sock_alive != 0 && !any_attached {
        mismatches.push("socket programs attached without any interface".into());
    }
    let attached_names: Vec<&str> = ifaces
        .iter()
        .filter(|i| i.state() == "attached")
        .map(|i| i.name.as_str())
        .collect();
    let builtins = CHAIN_NAMES
        .iter()
        .map(|name| (TableName::Filter, name))
        .chain(NAT_CHAIN_NAMES.iter().map(|name| (TableName::Nat, name)))
        .chain(
            TableName::Raw
                .builtin_chains()
                .iter()
                .map(|name| (TableName::Raw, name)),
        )
        .chain(
            TableName::Mangle
                .builtin_chains()
                .iter()
                .map(|name| (TableName::Mangle, name)),
        );
    let chains: Vec<_> = builtins
        .filter_map(|(table, n)| Some((table, ruleset.table(table).chain(n)?)))
        .map(|(table, c)| {
            let policy = match c.policy {
                Some(Policy::Drop) => "DROP",
                _ => "ACCEPT",
            };
            (table.as_str(), c.name.clone(), c.rules.len(), policy)
        })
        .collect();
    let stats = match (&dp, foreign) {
        (Some(dp), None) => dp.stats()?,
        _ => vec![0; stats::COUNT as usize],
    };
    let mut memory = match &dp {
        Some(dp) => dp.map_memory()?,
        None => Vec::new(),
    };
    memory.sort_by_key(|&(name, bytes)| (std::cmp::Reverse(bytes), name));
    let memory_total: u64 = memory.iter().map(|(_, b)| b).sum();
    // The keyed state tables' sizes, as they were made (`attach
    // --table-memory`), and what they take.
    let state_tables: Vec<(&str, u32)> = match &dp {
        Some(_) => STATE_TABLES
            .iter()
            .zip(TableSizes::pinned(&ns.maps_dir())?)
            .filter_map(|((name, _), n)| n.map(|n| (*name, n)))
            .collect(),
        None => Vec::new(),
    };
    let state_memory: u64 = memory
        .iter()
        .filter(|(name, _)| state_tables.iter().any(|(n, _)| n == name))
        .map(|(_, b)| b)
        .sum();
    // The ruleset arrays' capacity (`attach --ruleset-memory`), and what
    // they take.
    let capacity = dp.as_ref().map(Dataplane::capacity);
    let ruleset_memory: u64 = memory
        .iter()
        .filter(|(name, _)| {
            netbeast_common::size::by_capacity(netbeast_common::Capacity::FULL)
                .iter()
                .any(|(n, _)| n == name)
        })
        .map(|(_, b)| b)
        .sum();
    if json_out {
        let v = json!({
            "netns": ns.id,
            "netns_cookie": ns.cookie,
            "pins": ns.pin_dir,
            "attached": ifaces.iter().filter(|i| i.state() == "attached")
                .map(|i| json!({"ifindex": i.ifindex, "name": i.name})).collect::<Vec<_>>(),
            "interfaces": ifaces.iter().map(|i| json!({
                "ifindex": i.ifindex,
                "name": i.name,
                "exists": i.exists,
                "state": i.state(),
                "xdp": i.xdp.json(),
                "tc_egress": i.tc_egress.json(),
                "tc_ingress": i.tc_ingress.json(),
                "paths": i.paths.as_ref().map(|p| paths_json(p, i.tc_ingress.enforced())),
            })).collect::<Vec<_>>(),
            "socket_nat": sock_alive == SOCK_PROGRAMS.len(),
            "socket_links_attached": sock_alive,
            "socket_program_ids": if foreign.is_some() { vec![] } else { Dataplane::sock_program_ids(&links_dir) },
            "syn_flood_guard": guard_ports,
            "rules_commit": stored_seq,
            "kernel_commit": kernel_seq,
            "mismatches": mismatches,
            "chains": chains.iter().map(|(t, n, r, p)| json!({"table": t, "name": n, "rules": r, "policy": p})).collect::<Vec<_>>(),
            "stats": stats::NAMES.iter().zip(&stats).map(|(n, v)| (n.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "map_memory_bytes": memory_total,
            "state_tables": state_tables.iter().map(|(n, e)| (n.to_string(), json!(e))).collect::<serde_json::Map<_, _>>(),
            "state_table_memory_bytes": state_memory,
            "ruleset_slots": capacity.map(|c| c.slots()),
            "ruleset_memory_bytes": ruleset_memory,
            "map_memory": memory.iter().map(|(n, b)| (n.to_string(), json!(b))).collect::<serde_json::Map<_, _>>(),
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    outln!(
        "network namespace {} (pins in {})",
        ns.id,
        ns.pin_dir.display()
    );
    if attached_names.is_empty() {
        let stored: usize = chains.iter().map(|(_, _, rules, _)| rules).sum();
        let policies = chains.iter().filter(|c| c.3 == "DROP").count();
        if stored + policies > 0 {
            outln!(
                "attached: none — the rules and policies below are enforced nowhere, every \
                 packet passes (`netbeast attach IFACE`)"
            );
        } else {
            outln!("attached: none (`netbeast attach IFACE`)");
        }
    } else {
        outln!("attached: {}", attached_names.join(", "));
    }
    if sock_alive == SOCK_PROGRAMS.len() {
        outln!("local sockets: nat OUTPUT attached to the root cgroup");
    }
    for i in ifaces.iter().filter(|i| i.state() == "attached") {
        if let Some(p) = &i.paths {
            let (reject, forward) = effective_paths(p, i.tc_ingress.enforced());
            outln!(
                "{}: {}, REJECT replies by {reject}, fast path into it by {forward}",
                i.name,
                p.xdp_mode_name()
            );
        }
    }
    for (table, name, rules, policy) in &chains {
        outln!("{table} {name}: {rules} rules, policy {policy}");
    }
    if !guard_ports.is_empty() {
        outln!(
            "SYN-flood guard: {} ({} SYNs answered with cookies, {} ACKs let through)",
            port_list(&guard_ports),
            stats[stats::SYNPROXY_COOKIES as usize],
            stats[stats::SYNPROXY_ACCEPTED as usize]
        );
    }
    outln!(
        "packets {} (input {}, forward {}), accepted {}, dropped {}, rejected {}",
        stats[stats::PACKETS as usize],
        stats[stats::INPUT as usize],
        stats[stats::FORWARD as usize],
        stats[stats::ACCEPTED as usize],
        stats[stats::DROPPED as usize],
        stats[stats::REJECTED as usize]
    );
    if dp.is_some() {
        const MIB: f64 = 1024.0 * 1024.0;
        let largest: Vec<String> = memory
            .iter()
            .take(4)
            .map(|(n, b)| format!("{n} {:.1}", *b as f64 / MIB))
            .collect();
        outln!(
            "BPF map memory: {:.1} MiB (largest, MiB: {})",
            memory_total as f64 / MIB,
            largest.join(", ")
        );
        let entries = |name: &str| {
            state_tables
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0, |(_, e)| *e)
        };
        outln!(
            "state tables: {:.1} MiB of it, sized when the data plane was made (`attach \
             --table-memory`): conntrack {} established and {} unreplied IPv4 connections, \
             ipset {} members",
            state_memory as f64 / MIB,
            entries("CT_ESTABLISHED"),
            entries("CT_UNREPLIED"),
            entries("IPSET_MEMBERS")
        );
        if let Some(capacity) = capacity {
            outln!(
                "ruleset arrays: {:.1} MiB of it, sized when the data plane was made (`attach \
                 --ruleset-memory`): {} rule slots, {} match classes, {} translations",
                ruleset_memory as f64 / MIB,
                capacity.rules(),
                capacity.classes(),
                capacity.nat_targets()
            );
        }
    }
    for m in &mismatches {
        outln!("mismatch: {m}");
    }
    Ok(())
}

/// Ports as `attach --syn-flood-guard` takes them: runs as `a:b`.
fn port_list(ports: &[u16]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ports.len() {
        let mut j = i;
        while j + 1 < ports.len() && ports[j + 1] == ports[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            ports[i].to_string()
        } else {
            format!("{}:{}", ports[i], ports[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// Network namespaces that can be found from here: every process's and
/// thread's, the named ones, bind mounts of namespaces, and namespaces
/// held open by file descriptors. inode → paths that open them.
fn visible_namespaces() -> BTreeMap<u64, Vec<PathBuf>> {
    let mut found: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    let mut add = |path: PathBuf| {
        if let Ok(m) = fs::metadata(&path) {
            let paths = found.entry(m.ino()).or_default();
            if paths.len() < MAX_PATHS_PER_NAMESPACE {
                paths.push(path);
            }
        }
    };
    for dir in ["/run/netns", "/var/run/netns"] {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            add(e.path());
        }
    }
    if let Ok(info) = fs::read_to_string("/proc/self/mountinfo") {
        for line in info.lines() {
            let (pre, post) = line.split_once(" - ").unwrap_or((line, ""));
            if post.starts_with("nsfs ")
                && let Some(point) = pre.split(' ').nth(4)
                && !point.contains('\\')
            {
                add(PathBuf::from(point));
            }
        }
    }
    for p in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = p.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let proc_dir = p.path();
        for t in fs::read_dir(proc_dir.join("task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            add(t.path().join("ns/net"));
        }
        for f in fs::read_dir(proc_dir.join("fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if fs::read_link(f.path()).is_ok_and(|l| l.to_string_lossy().starts_with("net:[")) {
                add(f.path());
            }
        }
    }
    found
}

/// Enough ways into one namespace to get its cookie from one of them.
const MAX_PATHS_PER_NAMESPACE: usize = 4;

/// The cookie of the namespace `path` opens, read from a thread that
/// enters it.
fn cookie_of(path: &Path) -> Option<u64> {
    let file = fs::File::open(path).ok()?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a valid namespace fd; CLONE_NEWNET changes
            // only this thread, which ends here.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return None;
            }
            crate::loader::netns_cookie().ok()
        })
        .join()
        .ok()
        .flatten()
    })
}

/// `gc`: removes the state of namespaces that no longer exist — their
/// pins (maps, links: the XDP/TC links and the socket programs on the root
/// cgroup go with them), their state directories in /run and their lock
/// files.
pub(super) fn run_gc() -> Result<()> {
    let pin_root = state::bpffs_root(false)?.ok_or(state::StateError::BpffsNotMounted)?;
    let mut ids: BTreeSet<u64> = BTreeSet::new();
    for dir in [
        pin_root.join("netbeast"),
        PathBuf::from(STATE_ROOT),
        PathBuf::from(LOCK_DIR),
    ] {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if let Ok(id) = e.file_name().to_string_lossy().parse::<u64>() {
                ids.insert(id);
            }
        }
    }
    let live = visible_namespaces();
    let (mut removed, mut kept) = (0, 0);
    for id in ids {
        let lock_path = Path::new(LOCK_DIR).join(id.to_string());
        let lock = state::lock_file(&lock_path)?;
        let ns = Namespace::by_id(id, &pin_root);
        let pins_owner = if ns.has_dataplane() {
            Dataplane::open_pinned(&ns.maps_dir())
                .ok()
                .and_then(|dp| dp.socket_netns().ok())
                .filter(|c| *c != 0)
        } else {
            None
        };
        let owner = ns.recorded_owner().or(pins_owner);
        let candidates = live.get(&id);
        // A link still attached to a device means its namespace lives,
        // even if no way into it is visible from here (another mount or
        // pid namespace holding it).
        let devices_attached = pinned_ifindexes(&ns).into_iter().any(|i| {
            hook_alive(&xdp_pin(&ns, i), LINK_TYPE_XDP, i).is_some()
                || hook_alive(&tc_pin(&ns, i), LINK_TYPE_TCX, i).is_some()
        });
        let alive = match (candidates, owner) {
            (None, _) => devices_attached,
            // Unknown owner (an earlier version's state): a namespace with
            // the inode exists, so it may be the owner; keep it.
            (Some(_), None) => true,
            (Some(paths), Some(owner)) => paths.iter().any(|p| cookie_of(p) == Some(owner)),
        };
        if alive {
            kept += 1;
            continue;
        }
        let had_state = ns.has_state() || ns.pin_dir.exists();
        let links = if had_state { purge(&ns)? } else { 0 };
        if had_state {
            outln!(
                "removed the state of deleted network namespace {id}{}: {links} links detached, \
                 pins and rule files removed",
                owner.map_or(String::new(), |c| format!(" (cookie {c})"))
            );
            removed += 1;
        }
        // Nobody can be waiting on the lock of a namespace that is gone
        // but us; a namespace that takes the inode meanwhile locks anew.
        state::remove_held_lock(&lock_path, lock)?;
    }
    outln!("gc: {removed} deleted namespace(s) cleaned, {kept} live namespace(s) kept");
    Ok(())
}
