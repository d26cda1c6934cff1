//! The shape most families count in: a per-CPU hash map keyed by cgroup id (and what the family
//! distinguishes within a cgroup), bounded, with overflow entries under `OVERFLOW_CGROUP_ID`
//! that take the counts once the map is full. One type reads, sizes and recycles all of them.

use std::{
    os::fd::AsFd as _,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{IterableMap as _, MapData, PerCpuHashMap, PerCpuValues},
    util::nr_cpus,
};
use kernsight_common::{
    capabilities::CapabilityKey,
    counters::OVERFLOW_CGROUP_ID,
    escape::EscapeKey,
    net::{DropKey, TcpKey, TrafficKey},
    processes::ProcessKey,
    runqueue::RunqKey,
    syscalls::{LatencyKey, SyscallKey},
};

use super::{
    batch::{self, PerCpuSum},
    family::MapRow,
    take_map,
};

/// One row of a hash map read: a key and its value summed over CPUs (a count, unless said).
pub type Row<K, V = u64> = (K, V);

/// A map key that names the cgroup it counts for.
pub trait CgroupKeyed: aya::Pod {
    fn cgroup_id(&self) -> u64;
}

macro_rules! cgroup_keyed {
    ($($key:ty),*) => {$(
        impl CgroupKeyed for $key {
            fn cgroup_id(&self) -> u64 {
                self.cgroup_id
            }
        }
    )*};
}
cgroup_keyed!(
    SyscallKey,
    LatencyKey,
    RunqKey,
    ProcessKey,
    CapabilityKey,
    TrafficKey,
    TcpKey,
    DropKey,
    EscapeKey
);

/// How long the entry count of a read serves `map_row`: the agent's own figures are encoded
/// after the families' collectors in a scrape (`metrics::registry`), so within a scrape it is
/// that scrape's read.
const READ_COUNT_SERVES: Duration = Duration::from_secs(1);

/// A bounded per-cgroup counter map of a family.
pub struct CgroupCounters<K: aya::Pod, V: aya::Pod = u64> {
    name: &'static str,
    map: PerCpuHashMap<MapData, K, V>,
    pub capacity: u32,
    /// When `read` last read the map, and how many entries it found.
    last_read: Mutex<Option<(Instant, usize)>>,
}

impl<K: CgroupKeyed, V: PerCpuSum> CgroupCounters<K, V> {
    /// Takes the map `name` out of the object and creates its overflow entries (unless a pinned
    /// map already has them: its counts continue).
    pub fn take(
        ebpf: &mut Ebpf,
        name: &'static str,
        capacity: u32,
        overflow: impl IntoIterator<Item = K>,
    ) -> anyhow::Result<Self> {
        let mut map: PerCpuHashMap<MapData, K, V> = PerCpuHashMap::try_from(take_map(ebpf, name)?)?;
        // The overflow entries must exist before the first update can find the map full.
        for key in overflow {
            insert_zeros_if_absent(&mut map, &key)
                .with_context(|| format!("creating {name}'s overflow entries"))?;
        }
        Ok(Self { name, map, capacity, last_read: Mutex::new(None) })
    }

    pub fn map(&self) -> &PerCpuHashMap<MapData, K, V> {
        &self.map
    }

    /// (map, entries in use, bound).
    pub fn map_row(&self) -> MapRow {
        MapRow { map: self.name, entries: self.entries(), capacity: self.capacity }
    }

    /// Entries in use: as the family's collector's read found them a moment ago, else counted
    /// from a batch read where the kernel has it (a few calls, but the per-CPU values come
    /// along: on a node of 64 CPUs, 64 values a key), else key by key (a call per key).
    fn entries(&self) -> usize {
        let last_read = *self.last_read.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, entries)) = last_read
            && at.elapsed() < READ_COUNT_SERVES
        {
            return entries;
        }
        if let Ok(cpus) = nr_cpus()
            && let Ok(rows) = batch::read_summed::<K, V>(self.map.map().fd().as_fd(), cpus.get() as usize)
        {
            return rows.len();
        }
        self.map.keys().filter(Result::is_ok).count()
    }

    /// Removes the entries of cgroups gone for at least `grace` (never the overflow entries);
    /// returns how many went.
    pub fn recycle(&mut self, gone_for: &mut dyn FnMut(u64) -> Option<Duration>, grace: Duration) -> usize {
        self.forget_last_read();
        let stale: Vec<K> = self
            .map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                let id = k.cgroup_id();
                id != OVERFLOW_CGROUP_ID && gone_for(id).is_some_and(|gone| gone >= grace)
            })
            .collect();
        stale.iter().filter(|k| self.map.remove(k).is_ok()).count()
    }

    /// Removes every entry of the cgroups `ids`.
    pub fn forget(&mut self, ids: &[u64]) {
        self.forget_last_read();
        let stale: Vec<K> =
            self.map.keys().filter_map(Result::ok).filter(|k| ids.contains(&k.cgroup_id())).collect();
        for key in stale {
            let _ = self.map.remove(&key);
        }
    }

    /// Entries removed here are not in the last read's count.
    fn forget_last_read(&mut self) {
        *self.last_read.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The values of those of `keys` the map holds, summed over CPUs: a lookup each, where
    /// `read` copies every entry's per-CPU values (megabytes for a full map on a node of 64
    /// CPUs), for a question about one cgroup.
    pub fn read_keys(&self, keys: impl IntoIterator<Item = K>) -> Vec<Row<K, V>> {
        keys.into_iter()
            .filter_map(|key| Some((key, batch::sum_over_cpus(self.map.get(&key, 0).ok()?.iter()))))
            .collect()
    }

    /// Every key's value summed over CPUs, and the number of entries that could not be read.
    pub fn read(&self) -> (Vec<Row<K, V>>, u64) {
        let (rows, errors) = read_per_cpu(&self.map);
        *self.last_read.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), rows.len()));
        (rows, errors)
    }
}

pub fn per_cpu_zeros<T: aya::Pod + Default>() -> anyhow::Result<PerCpuValues<T>> {
    let cpus = nr_cpus().map_err(|(what, err)| anyhow::anyhow!("cannot count CPUs ({what}): {err}"))?;
    Ok(PerCpuValues::try_from(vec![T::default(); cpus.get() as usize])?)
}

/// Creates a zero entry for `key` unless it exists (a pinned map keeps its counts).
pub fn insert_zeros_if_absent<K: aya::Pod, V: aya::Pod + Default>(
    map: &mut PerCpuHashMap<MapData, K, V>,
    key: &K,
) -> anyhow::Result<()> {
    if map.get(key, 0).is_err() {
        map.insert(key, per_cpu_zeros::<V>()?, 0)?;
    }
    Ok(())
}

/// Reads a per-CPU counter map, summing each key's per-CPU values: in a few batch calls where
/// the kernel has them (5.6+), else key by key. Entries that vanish while being read key by key
/// are skipped; the number of errors is returned beside the rows.
pub fn read_per_cpu<K: aya::Pod, V: PerCpuSum>(map: &PerCpuHashMap<MapData, K, V>) -> (Vec<Row<K, V>>, u64) {
    if let Ok(cpus) = nr_cpus()
        && let Ok(rows) = batch::read_summed(map.map().fd().as_fd(), cpus.get() as usize)
    {
        return (rows, 0);
    }
    let mut rows = Vec::new();
    let mut errors = 0;
    for entry in map.iter() {
        match entry {
            Ok((key, values)) => rows.push((key, batch::sum_over_cpus(values.iter()))),
            Err(_) => errors += 1,
        }
    }
    (rows, errors)
}
