//! The ipset maps (`IPSET_SETS`, `IPSET_MEMBERS`, `IPSET_NETS`), for
//! `netbeast ipset`: one map operation per element, so adding one to a set
//! of any size is one syscall.

use aya::maps::{HashMap, LpmTrie, MapData, MapError, lpm_trie::Key};
use netbeast_common::{IpsetHeader, IpsetKey, IpsetValue, ipset};

use super::{Dataplane, LoaderError, map_err};

/// Where a member lives: the exact types' hash, or the prefix types'
/// trie with the prefix's length in bits (`ipset::NET_KEY_PREFIX_BITS` +
/// the address prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberSlot {
    Exact,
    Net(u32),
}

/// A map error that only says "not there" is no error for a removal.
fn missing(e: &MapError) -> bool {
    matches!(e, MapError::KeyNotFound)
        || matches!(e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::ENOENT))
}

impl Dataplane {
    /// Writes (or with `None` removes) the header of the set whose name's
    /// number is `name`.
    pub fn ipset_header(
        &mut self,
        name: u32,
        header: Option<IpsetHeader>,
    ) -> Result<(), LoaderError> {
        let mut map: HashMap<&mut MapData, u32, IpsetHeader> =
            HashMap::try_from(self.map_mut("IPSET_SETS")?).map_err(map_err("IPSET_SETS"))?;
        match header {
            Some(h) => map.insert(name, h, 0).map_err(map_err("IPSET_SETS")),
            None => match map.remove(&name) {
                Err(e) if missing(&e) => Ok(()),
                other => other.map_err(map_err("IPSET_SETS")),
            },
        }
    }

    /// The header of the set whose name's number is `name`.
    pub fn ipset_header_of(&self, name: u32) -> Result<Option<IpsetHeader>, LoaderError> {
        let map: HashMap<&MapData, u32, IpsetHeader> =
            HashMap::try_from(self.map("IPSET_SETS")?).map_err(map_err("IPSET_SETS"))?;
        match map.get(&name, 0) {
            Ok(h) => Ok(Some(h)),
            Err(e) if missing(&e) => Ok(None),
            Err(e) => Err(map_err("IPSET_SETS")(e)),
        }
    }

    /// Adds or replaces a member.
    pub fn ipset_put(
        &mut self,
        slot: MemberSlot,
        key: IpsetKey,
        value: IpsetValue,
    ) -> Result<(), LoaderError> {
        match slot {
            MemberSlot::Exact => {
                let mut map: HashMap<&mut MapData, IpsetKey, IpsetValue> =
                    HashMap::try_from(self.map_mut("IPSET_MEMBERS")?)
                        .map_err(map_err("IPSET_MEMBERS"))?;
                match map.insert(key, value, 0) {
                    // A new member past the table's capacity (its real
                    // size: `attach --table-memory` may have made it
                    // smaller than `ipset::MEMBERS`).
                    Err(MapError::SyscallError(e))
                        if e.io_error.raw_os_error() == Some(libc::E2BIG) =>
                    {
                        let capacity = match self.map("IPSET_MEMBERS")? {
                            aya::maps::Map::HashMap(d) => {
                                d.info().map_err(map_err("IPSET_MEMBERS"))?.max_entries()
                            }
                            _ => return Err(LoaderError::MissingMap("IPSET_MEMBERS")),
                        };
                        Err(LoaderError::IpsetMembersFull {
                            capacity,
                            max: ipset::MEMBERS,
                        })
                    }
                    other => other.map_err(map_err("IPSET_MEMBERS")),
                }
            }
            MemberSlot::Net(bits) => {
                let mut map: LpmTrie<&mut MapData, IpsetKey, IpsetValue> =
                    LpmTrie::try_from(self.map_mut("IPSET_NETS")?)
                        .map_err(map_err("IPSET_NETS"))?;
                map.insert(&Key::new(bits, key), value, 0)
                    .map_err(map_err("IPSET_NETS"))
            }
        }
    }

    /// Removes a member; `false` when it was not there.
    pub fn ipset_remove(&mut self, slot: MemberSlot, key: IpsetKey) -> Result<bool, LoaderError> {
        let result = match slot {
            MemberSlot::Exact => {
                let mut map: HashMap<&mut MapData, IpsetKey, IpsetValue> =
                    HashMap::try_from(self.map_mut("IPSET_MEMBERS")?)
                        .map_err(map_err("IPSET_MEMBERS"))?;
                map.remove(&key)
            }
            MemberSlot::Net(bits) => {
                let mut map: LpmTrie<&mut MapData, IpsetKey, IpsetValue> =
                    LpmTrie::try_from(self.map_mut("IPSET_NETS")?)
                        .map_err(map_err("IPSET_NETS"))?;
                map.remove(&Key::new(bits, key))
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(e) if missing(&e) => Ok(false),
            Err(e) => Err(map_err("IPSET_NETS")(e)),
        }
    }

    /// A member's value, exactly this key (a trie's longest match is not
    /// asked for: `ipset test` of a net asks for that net).
    pub fn ipset_get(
        &self,
        slot: MemberSlot,
        key: IpsetKey,
    ) -> Result<Option<IpsetValue>, LoaderError> {
        let result = match slot {
            MemberSlot::Exact => {
                let map: HashMap<&MapData, IpsetKey, IpsetValue> =
                    HashMap::try_from(self.map("IPSET_MEMBERS")?)
                        .map_err(map_err("IPSET_MEMBERS"))?;
                map.get(&key, 0)
            }
            MemberSlot::Net(_) => {
                // The trie's lookup is longest-prefix: look among its keys.
                return Ok(self
                    .ipset_members(true, key.set)?
                    .into_iter()
                    .find(|(s, k, _)| *s == slot && *k == key)
                    .map(|(_, _, v)| v));
            }
        };
        match result {
            Ok(v) => Ok(Some(v)),
            Err(e) if missing(&e) => Ok(None),
            Err(e) => Err(map_err("IPSET_MEMBERS")(e)),
        }
    }

    /// The longest-prefix member of a prefix type for `key` (with the full
    /// address length `bits`): what a packet finds.
    pub fn ipset_lookup_net(
        &self,
        bits: u32,
        key: IpsetKey,
    ) -> Result<Option<IpsetValue>, LoaderError> {
        let map: LpmTrie<&MapData, IpsetKey, IpsetValue> =
            LpmTrie::try_from(self.map("IPSET_NETS")?).map_err(map_err("IPSET_NETS"))?;
        match map.get(&Key::new(bits, key), 0) {
            Ok(v) => Ok(Some(v)),
            Err(e) if missing(&e) => Ok(None),
            Err(e) => Err(map_err("IPSET_NETS")(e)),
        }
    }

    /// Every member of the content `set` (big-endian, as in the keys) in
    /// the hash (`net` false) or the trie, with its slot and value.
    pub fn ipset_members(
        &self,
        net: bool,
        set: u32,
    ) -> Result<Vec<(MemberSlot, IpsetKey, IpsetValue)>, LoaderError> {
        let mut out = Vec::new();
        if net {
            let map: LpmTrie<&MapData, IpsetKey, IpsetValue> =
                LpmTrie::try_from(self.map("IPSET_NETS")?).map_err(map_err("IPSET_NETS"))?;
            for key in map.keys() {
                let key = key.map_err(map_err("IPSET_NETS"))?;
                let data = key.data();
                if data.set != set {
                    continue;
                }
                if let Ok(v) = map.get(&key, 0) {
                    out.push((MemberSlot::Net(key.prefix_len()), data, v));
                }
            }
        } else {
            let map: HashMap<&MapData, IpsetKey, IpsetValue> =
                HashMap::try_from(self.map("IPSET_MEMBERS")?).map_err(map_err("IPSET_MEMBERS"))?;
            let mut seen = std::collections::HashSet::new();
            for item in map.iter() {
                let (key, v) = item.map_err(map_err("IPSET_MEMBERS"))?;
                // A walk the kernel changes meanwhile can see a key twice.
                if key.set == set && seen.insert(key) {
                    out.push((MemberSlot::Exact, key, v));
                }
            }
        }
        Ok(out)
    }
}

/// The trie's key length for an address prefix of `len` bits.
pub fn net_bits(len: u8) -> u32 {
    ipset::NET_KEY_PREFIX_BITS + u32::from(len)
}
