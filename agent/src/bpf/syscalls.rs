//! The syscall accounting family: `ks_sys_exit` (always) and `ks_sys_enter` (latency mode) on the
//! `raw_syscalls` tracepoints, the maps they fill, and the recycling of cgroup slots.

use std::{collections::HashMap, time::Duration};

use anyhow::Context as _;
use aya::{
    Btf, Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues, Queue},
    programs::BtfTracePoint,
    util::nr_cpus,
};
use kernsight_common::syscalls::{
    FREE_SLOTS_MAP, LATENCY_SUM_BUCKET, LatencyKey, NO_V1_SUBSYS, OVERFLOW_CGROUP_ID, OVERFLOW_SLOT,
    OVERFLOW_SYSCALL, SLOT_OWNERS_MAP, SYSCALL_COLUMNS, SYSCALL_ERRORS_MAP, SYSCALL_LATENCY_MAP,
    SYSCALL_ROWS_MAP, SYSCALL_START_MAP, SyscallKey, SyscallRow,
};
use tracing::debug;

use super::{ProbeState, ProbeStatus, take_map};
use crate::{config::Config, kernel::btf};

pub const PROBE: &str = "syscalls";

pub fn status(state: ProbeState, config: &Config) -> ProbeStatus {
    let mut programs = vec!["ks_sys_exit"];
    if config.syscalls.latency_histogram {
        programs.push("ks_sys_enter");
    }
    ProbeStatus { name: PROBE, programs, program_ids: Vec::new(), state }
}

/// What the kernel side needs to find a task's cgroup: member offsets for
/// `current->cgroups->dfl_cgrp->kn->id` and `css_set->subsys[i]->cgroup`, from the running
/// kernel's BTF, and which v1 controller (`enum cgroup_subsys_id`) attributes v2-root tasks.
#[derive(Debug, Clone, Copy)]
pub struct CgroupOffsets {
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    pub css_set_subsys: u32,
    pub css_cgroup: u32,
    pub v1_subsys: u32,
    pub cgroup_root: u32,
    pub root_hierarchy_id: u32,
}

impl Default for CgroupOffsets {
    fn default() -> Self {
        Self {
            task_cgroups: 0,
            css_set_dfl_cgrp: 0,
            cgroup_kn: 0,
            kernfs_node_id: 0,
            css_set_subsys: 0,
            css_cgroup: 0,
            v1_subsys: NO_V1_SUBSYS,
            cgroup_root: 0,
            root_hierarchy_id: 0,
        }
    }
}

impl CgroupOffsets {
    /// `v1_controller`: the v1 hierarchy that attributes tasks of the v2 root, if any.
    pub fn read(v1_controller: Option<&str>) -> Result<Self, btf::BtfError> {
        let btf = btf::Btf::from_sys_fs()?;
        let v1_subsys = match v1_controller {
            Some(controller) => btf.enum_value(&format!("{controller}_cgrp_id"))?,
            None => NO_V1_SUBSYS,
        };
        Ok(Self {
            task_cgroups: btf.member_offset("task_struct", "cgroups")?,
            css_set_dfl_cgrp: btf.member_offset("css_set", "dfl_cgrp")?,
            cgroup_kn: btf.member_offset("cgroup", "kn")?,
            kernfs_node_id: btf.member_offset("kernfs_node", "id")?,
            css_set_subsys: btf.member_offset("css_set", "subsys")?,
            css_cgroup: btf.member_offset("cgroup_subsys_state", "cgroup")?,
            v1_subsys,
            cgroup_root: btf.member_offset("cgroup", "root")?,
            root_hierarchy_id: btf.member_offset("cgroup_root", "hierarchy_id")?,
        })
    }
}

/// Calls of one cgroup, per syscall number (summed over CPUs and over the cgroup's slots).
pub type Calls = Box<[u64; SYSCALL_COLUMNS]>;

/// The maps of an attached syscall family.
pub struct SyscallMaps {
    rows: PerCpuArray<MapData, SyscallRow>,
    owners: Array<MapData, u64>,
    free: Queue<MapData, u32>,
    errors: PerCpuHashMap<MapData, SyscallKey, u64>,
    latency: Option<Latency>,
    pub max_cgroups: u32,
    pub max_error_entries: u32,
}

struct Latency {
    buckets: PerCpuHashMap<MapData, LatencyKey, u64>,
    start: BpfHashMap<MapData, u32, u64>,
    capacity: u32,
}

/// Loads and attaches the family's programs after preparing their maps.
/// `slots_continued`: the slot maps are pinned ones that a previous agent filled; their free
/// queue is already right.
pub fn attach(
    ebpf: &mut Ebpf,
    btf: &Btf,
    config: &Config,
    slots_continued: bool,
) -> anyhow::Result<SyscallMaps> {
    let rows = PerCpuArray::try_from(take_map(ebpf, SYSCALL_ROWS_MAP)?)?;
    let owners = Array::try_from(take_map(ebpf, SLOT_OWNERS_MAP)?)?;
    let mut free: Queue<MapData, u32> = Queue::try_from(take_map(ebpf, FREE_SLOTS_MAP)?)?;
    if !slots_continued {
        for slot in 1..=config.syscalls.max_cgroups {
            free.push(&slot, 0).context("filling the free cgroup slots")?;
        }
    }
    let mut errors: PerCpuHashMap<MapData, SyscallKey, u64> =
        PerCpuHashMap::try_from(take_map(ebpf, SYSCALL_ERRORS_MAP)?)?;
    // The overflow entries must exist before the first update can find the map full.
    let overflow = SyscallKey { cgroup_id: OVERFLOW_CGROUP_ID, syscall: OVERFLOW_SYSCALL, errno: 0 };
    insert_zeros_if_absent(&mut errors, &overflow).context("creating the overflow entry")?;

    let latency = if config.syscalls.latency_histogram {
        let mut buckets: PerCpuHashMap<MapData, LatencyKey, u64> =
            PerCpuHashMap::try_from(take_map(ebpf, SYSCALL_LATENCY_MAP)?)?;
        for bucket in 0..=LATENCY_SUM_BUCKET {
            let key = LatencyKey { cgroup_id: OVERFLOW_CGROUP_ID, syscall: OVERFLOW_SYSCALL, bucket };
            insert_zeros_if_absent(&mut buckets, &key).context("creating the latency overflow entries")?;
        }
        let start = BpfHashMap::try_from(take_map(ebpf, SYSCALL_START_MAP)?)?;
        Some(Latency { buckets, start, capacity: config.syscalls.latency_max_entries })
    } else {
        None
    };

    let exit = program(ebpf, "ks_sys_exit")?;
    exit.load("sys_exit", btf).context("loading ks_sys_exit (tp_btf/sys_exit)")?;
    if latency.is_some() {
        // Enter first, so that exits find their start time from the first syscall on.
        let enter = program(ebpf, "ks_sys_enter")?;
        enter.load("sys_enter", btf).context("loading ks_sys_enter (tp_btf/sys_enter)")?;
        enter.attach().context("attaching ks_sys_enter")?;
    }
    program(ebpf, "ks_sys_exit")?.attach().context("attaching ks_sys_exit")?;

    Ok(SyscallMaps {
        rows,
        owners,
        free,
        errors,
        latency,
        max_cgroups: config.syscalls.max_cgroups,
        max_error_entries: config.syscalls.max_error_entries,
    })
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut BtfTracePoint> {
    let program =
        ebpf.program_mut(name).with_context(|| format!("program {name} missing from the object"))?;
    Ok(program.try_into()?)
}

pub(crate) fn per_cpu_zeros<T: aya::Pod + Default>() -> anyhow::Result<PerCpuValues<T>> {
    let cpus = nr_cpus().map_err(|(what, err)| anyhow::anyhow!("cannot count CPUs ({what}): {err}"))?;
    Ok(PerCpuValues::try_from(vec![T::default(); cpus.get() as usize])?)
}

/// Creates a zero entry for `key` unless it exists (a pinned map keeps its counts).
pub(crate) fn insert_zeros_if_absent<K: aya::Pod, V: aya::Pod + Default>(
    map: &mut PerCpuHashMap<MapData, K, V>,
    key: &K,
) -> anyhow::Result<()> {
    if map.get(key, 0).is_err() {
        map.insert(key, per_cpu_zeros::<V>()?, 0)?;
    }
    Ok(())
}

/// One row of a hash map read: a key and its value summed over CPUs.
pub type Row<K> = (K, u64);

/// Reads a per-CPU counter map, summing each key's per-CPU values. Entries that vanish while
/// being read are skipped; the number of errors is returned beside the rows.
pub(crate) fn read_per_cpu<K: aya::Pod>(map: &PerCpuHashMap<MapData, K, u64>) -> (Vec<Row<K>>, u64) {
    let mut rows = Vec::new();
    let mut errors = 0;
    for entry in map.iter() {
        match entry {
            Ok((key, values)) => rows.push((key, values.iter().sum())),
            Err(_) => errors += 1,
        }
    }
    (rows, errors)
}

impl SyscallMaps {
    /// (slot, owning cgroup id) of every slot in use.
    fn owned_slots(&self) -> Vec<(u32, u64)> {
        (1..=self.max_cgroups)
            .filter_map(|slot| self.owners.get(&slot, 0).ok().filter(|&id| id != 0).map(|id| (slot, id)))
            .collect()
    }

    /// Calls per syscall number, by cgroup id (`OVERFLOW_CGROUP_ID` for the overflow slot), and
    /// the number of rows that could not be read.
    pub fn read_calls(&self) -> (HashMap<u64, Calls>, u64) {
        let mut calls: HashMap<u64, Calls> = HashMap::new();
        let mut errors = 0;
        let slots = self.owned_slots().into_iter().chain([(OVERFLOW_SLOT, OVERFLOW_CGROUP_ID)]);
        for (slot, cgroup_id) in slots {
            let Ok(per_cpu) = self.rows.get(&slot, 0) else {
                errors += 1;
                continue;
            };
            // Two CPUs can give one new cgroup a slot each: their rows add up.
            let sums = calls.entry(cgroup_id).or_insert_with(|| Box::new([0; SYSCALL_COLUMNS]));
            for row in per_cpu.iter() {
                for (sum, value) in sums.iter_mut().zip(row.calls) {
                    *sum += value;
                }
            }
        }
        (calls, errors)
    }

    /// Ids of the cgroups holding a slot (the `other` slot excluded), each once.
    pub fn cgroups_with_slot(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.owned_slots().into_iter().map(|(_, id)| id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Slots in use (the `other` slot excluded).
    pub fn slots_in_use(&self) -> usize {
        self.owned_slots().len()
    }

    /// Failed calls per (cgroup, syscall, errno).
    pub fn read_errors(&self) -> (Vec<Row<SyscallKey>>, u64) {
        read_per_cpu(&self.errors)
    }

    /// Calls per (cgroup, syscall, latency bucket), when latency is measured.
    pub fn read_latency(&self) -> Option<(Vec<Row<LatencyKey>>, u64)> {
        self.latency.as_ref().map(|l| read_per_cpu(&l.buckets))
    }

    pub fn latency_capacity(&self) -> Option<u32> {
        self.latency.as_ref().map(|l| l.capacity)
    }

    /// Threads currently inside a syscall with a recorded start time (latency mode).
    pub fn threads_in_syscall(&self) -> Option<usize> {
        self.latency.as_ref().map(|l| l.start.keys().filter(Result::is_ok).count())
    }

    /// Frees the slots (and error and latency entries) of cgroups gone for at least `grace`
    /// (`gone_for` answers how long, `None` while the cgroup exists), so that their counts were
    /// exported for that long first. Returns the ids freed.
    pub fn recycle(
        &mut self,
        gone_for: &mut dyn FnMut(u64) -> Option<Duration>,
        grace: Duration,
    ) -> Vec<u64> {
        let mut freed = Vec::new();
        for (slot, cgroup_id) in self.owned_slots() {
            if gone_for(cgroup_id).is_none_or(|gone| gone < grace) {
                continue;
            }
            // Zero the row before the slot can be handed out again; no task is left in the
            // cgroup, so nothing writes the row meanwhile.
            let zeroed =
                per_cpu_zeros::<SyscallRow>().is_ok_and(|zeros| self.rows.set(slot, zeros, 0).is_ok());
            if zeroed && self.owners.set(slot, &0, 0).is_ok() && self.free.push(&slot, 0).is_ok() {
                freed.push(cgroup_id);
            }
        }
        if !freed.is_empty() {
            self.forget_hash_entries(&freed);
            debug!(cgroups = freed.len(), "recycled the slots of removed cgroups");
        }
        freed
    }

    fn forget_hash_entries(&mut self, ids: &[u64]) {
        let stale: Vec<SyscallKey> =
            self.errors.keys().filter_map(Result::ok).filter(|k| ids.contains(&k.cgroup_id)).collect();
        for key in stale {
            let _ = self.errors.remove(&key);
        }
        if let Some(latency) = &mut self.latency {
            let stale: Vec<LatencyKey> = latency
                .buckets
                .keys()
                .filter_map(Result::ok)
                .filter(|k| ids.contains(&k.cgroup_id))
                .collect();
            for key in stale {
                let _ = latency.buckets.remove(&key);
            }
        }
    }
}
