//! `netbeast recent -L [NAME]`: the `-m recent` lists, as the kernel shows
//! them in `/proc/net/xt_recent/NAME` — one line per address with its TTL,
//! when it was last seen and the times remembered — with times as seconds
//! before now (the kernel prints jiffies). Without NAME, every list, each
//! under a `NAME:` heading, in name order.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Result, bail};
use netbeast_common::{RECENT_STAMPS, RecentEntry};

use super::conntrack::monotonic_now_ns;
use crate::rules::ext::recent::name_number;
use crate::rules::model::Match;
use crate::state::Namespace;

pub fn run(name: Option<&str>) -> Result<()> {
    let ns = Namespace::current()?;
    let _lock = ns.lock()?;
    // The lists' names, from the rules that name them (the kernel keys
    // them by the name's number).
    let ruleset = ns.load_ruleset()?;
    let mut names: BTreeMap<u32, String> = BTreeMap::new();
    for chain in ruleset.tables().into_iter().flat_map(|(_, t)| &t.chains) {
        for rule in &chain.rules {
            for m in &rule.matches {
                if let Match::Recent(r) = m {
                    names.insert(name_number(&r.name), r.name.clone());
                }
            }
        }
    }
    if let Some(name) = name
        && !names.values().any(|n| n == name)
    {
        bail!(
            "no rule names the recent list {name:?}; the lists are {}",
            if names.is_empty() {
                "none (no -m recent rule)".to_string()
            } else {
                names.values().cloned().collect::<Vec<_>>().join(", ")
            }
        );
    }
    let (dp, _) = super::plane::prepare(&ns, false, None, &[])?;
    let entries = match &dp {
        Some(dp) => dp.recent_entries()?,
        None => Vec::new(),
    };
    let now = monotonic_now_ns();
    let mut lists: BTreeMap<String, Vec<(IpAddr, RecentEntry)>> = BTreeMap::new();
    for (key, entry) in entries {
        // A list no rule names any more shows by its number.
        let list = names
            .get(&key.name)
            .cloned()
            .unwrap_or_else(|| format!("#{:08x}", key.name));
        lists.entry(list).or_default().push((key_addr(&key), entry));
    }
    for (list, mut addrs) in lists {
        if name.is_some_and(|n| n != list) {
            continue;
        }
        if name.is_none() {
            outln!("{list}:");
        }
        addrs.sort_by_key(|(a, _)| *a);
        for (addr, e) in addrs {
            outln!("{}", entry_line(addr, &e, now));
        }
    }
    Ok(())
}

/// The address of a list entry's key.
fn key_addr(key: &netbeast_common::RecentKey) -> IpAddr {
    if key.v6 != 0 {
        let mut bytes = [0u8; 16];
        for (chunk, word) in bytes.chunks_exact_mut(4).zip(key.addr) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        IpAddr::V4(Ipv4Addr::from(u32::from_be(key.addr[0])))
    }
}

/// An address as `/proc/net/xt_recent` shows it: IPv4 dotted, IPv6 as
/// eight groups of four hex digits (the kernel's `%pI6`, uncompressed).
fn shown(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => a
            .segments()
            .iter()
            .map(|g| format!("{g:04x}"))
            .collect::<Vec<_>>()
            .join(":"),
    }
}

/// `src=10.0.0.1 ttl: 64 last_seen: 0.412 oldest_pkt: 3 2.104, 1.300, 0.412`
/// (seconds before `now`, oldest first).
fn entry_line(addr: IpAddr, e: &RecentEntry, now: u64) -> String {
    let count = (e.count as usize).min(RECENT_STAMPS);
    // The ring's oldest stamp is at `index` once it has wrapped.
    let start = if count == RECENT_STAMPS {
        e.index as usize % RECENT_STAMPS
    } else {
        0
    };
    let ago = |t: u64| format!("{:.3}", now.saturating_sub(t) as f64 / 1e9);
    let times: Vec<String> = (0..count)
        .map(|i| ago(e.stamps[(start + i) % RECENT_STAMPS]))
        .collect();
    let last = e.stamps[(e.index as usize + RECENT_STAMPS - 1) % RECENT_STAMPS];
    format!(
        "src={} ttl: {} last_seen: {} oldest_pkt: {count} {}",
        shown(addr),
        e.ttl,
        ago(last),
        times.join(", ")
    )
}
