//! The maps of `netbeast lb` (netbeast-ebpf lb.rs): services, their lookup
//! tables in two generations, backends, and the per-backend pick counters.

use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray, PerCpuValues};
use netbeast_common::{
    ACTIVE_LB, ACTIVE_TRACKING, ACTIVE_TRANSLATIONS,
    lb::{
        Backend, CHUNKS_PER_TABLE, NO_BACKEND, Service, ServiceKey, TABLE_CAPACITY, TABLE_CHUNK,
        backend_index, table_chunk,
    },
};

use super::{Dataplane, LoaderError, map_err};

fn cpus() -> Result<usize, LoaderError> {
    aya::util::nr_cpus().map_err(|(_, source)| LoaderError::Io {
        what: "the possible CPUs (/sys/devices/system/cpu/possible)".into(),
        source,
    })
}

impl Dataplane {
    /// The service the kernel has for `key`, if any.
    pub fn lb_service(&self, key: &ServiceKey) -> Result<Option<Service>, LoaderError> {
        let name = "LB_SERVICES";
        let map: HashMap<&MapData, ServiceKey, Service> =
            HashMap::try_from(self.map(name)?).map_err(map_err(name))?;
        match map.get(key, 0) {
            Ok(s) => Ok(Some(s)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(name)(e)),
        }
    }

    /// Writes backend `id` of `slot`, a new one: its pick counter starts at
    /// zero.
    pub fn set_lb_backend(
        &mut self,
        slot: u32,
        id: u16,
        backend: &Backend,
    ) -> Result<(), LoaderError> {
        let index = backend_index(slot, id as u32);
        let name = "LB_BACKENDS";
        let mut map: Array<&mut MapData, Backend> =
            Array::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        map.set(index, backend, 0).map_err(map_err(name))?;
        let name = "LB_PICKS";
        let mut picks: PerCpuArray<&mut MapData, u64> =
            PerCpuArray::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        let zero =
            PerCpuValues::try_from(vec![0u64; cpus()?]).map_err(|source| LoaderError::Io {
                what: "per-CPU pick counters".into(),
                source,
            })?;
        picks.set(index, zero, 0).map_err(map_err(name))?;
        Ok(())
    }

    /// New connections the kernel gave backend `id` of `slot`.
    pub fn lb_picks(&self, slot: u32, id: u16) -> Result<u64, LoaderError> {
        let name = "LB_PICKS";
        let picks: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.map(name)?).map_err(map_err(name))?;
        let values = picks
            .get(&backend_index(slot, id as u32), 0)
            .map_err(map_err(name))?;
        Ok(values.iter().sum())
    }

    /// Writes `table` into generation `generation` of `slot` (the one the
    /// kernel does not read), then switches the service to it with one
    /// update of its `LB_SERVICES` entry.
    pub fn switch_lb_table(
        &mut self,
        key: &ServiceKey,
        slot: u32,
        generation: u32,
        pick: u32,
        table: &[u16],
    ) -> Result<(), LoaderError> {
        assert!(table.len() <= TABLE_CAPACITY as usize);
        // The whole table in one system call (up to 64 chunks of 4 KiB),
        // not one per chunk: most of a backend change's time at 1,000
        // backends is this write and the table's build.
        let (indexes, chunks): (Vec<u32>, Vec<[u16; TABLE_CHUNK]>) = table
            .chunks(TABLE_CHUNK)
            .enumerate()
            .map(|(c, part)| {
                let mut chunk = [NO_BACKEND; TABLE_CHUNK];
                chunk[..part.len()].copy_from_slice(part);
                (
                    table_chunk(slot, generation, (c * TABLE_CHUNK) as u32),
                    chunk,
                )
            })
            .unzip();
        super::batch::update(self.map("LB_TABLES")?, "LB_TABLES", &indexes, &chunks)?;
        // A larger table written there before left chunks past this one's.
        self.drop_lb_chunks(slot, generation, indexes.len() as u32)?;
        crate::fault::point("lb: table written");
        let service = Service {
            slot,
            generation: generation & 1,
            table_size: table.len() as u32,
            pick,
        };
        let name = "LB_SERVICES";
        let mut services: HashMap<&mut MapData, ServiceKey, Service> =
            HashMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        services.insert(key, service, 0).map_err(map_err(name))?;
        self.set_lb_active(true)
    }

    /// Deletes the chunks of `slot`'s table `generation` from chunk
    /// `first` on (`LB_TABLES` is a hash map: what is not deleted stays
    /// allocated).
    fn drop_lb_chunks(
        &mut self,
        slot: u32,
        generation: u32,
        first: u32,
    ) -> Result<(), LoaderError> {
        let name = "LB_TABLES";
        let mut tables: HashMap<&mut MapData, u32, [u16; TABLE_CHUNK]> =
            HashMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        for c in first..CHUNKS_PER_TABLE {
            let index = table_chunk(slot, generation, c * TABLE_CHUNK as u32);
            match tables.remove(&index) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(map_err(name)(e)),
            }
        }
        Ok(())
    }

    /// Removes a service from the kernel: new connections to its VIP are
    /// left alone; existing ones keep their backend (conntrack).
    pub fn remove_lb_service(&mut self, key: &ServiceKey, slot: u32) -> Result<(), LoaderError> {
        let name = "LB_SERVICES";
        let mut services: HashMap<&mut MapData, ServiceKey, Service> =
            HashMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        match services.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(map_err(name)(e)),
        }
        let empty = services.keys().next().is_none();
        let name = "LB_RING";
        let mut ring: Array<&mut MapData, u64> =
            Array::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        ring.set(slot, 0, 0).map_err(map_err(name))?;
        // Its tables' memory, both generations.
        for generation in 0..2 {
            self.drop_lb_chunks(slot, generation, 0)?;
        }
        if empty {
            self.set_lb_active(false)?;
        }
        Ok(())
    }

    /// Sets or clears `ACTIVE_LB` in the `ACTIVE` word. Setting it also
    /// turns tracking and translations on (a balanced connection is a
    /// translated one); clearing it leaves them: connections balanced
    /// before keep their translation until conntrack is flushed.
    fn set_lb_active(&mut self, on: bool) -> Result<(), LoaderError> {
        let name = "ACTIVE";
        let mut active: Array<&mut MapData, u32> =
            Array::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        let word = active.get(&0, 0).map_err(map_err(name))?;
        let new = if on {
            word | ACTIVE_LB | ACTIVE_TRACKING | ACTIVE_TRANSLATIONS
        } else {
            word & !ACTIVE_LB
        };
        if new != word {
            active.set(0, new, 0).map_err(map_err(name))?;
        }
        Ok(())
    }
}
