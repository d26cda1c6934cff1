//! The syscall accounting family: `ks_sys_exit` (always) and `ks_sys_enter` (latency mode) on the
//! `raw_syscalls` tracepoints, the maps they fill, and the recycling of cgroup slots; and the
//! programs that let the exit trust its per-CPU cache of the last thread's cgroup
//! (`ATTRIBUTION_PROGRAMS`).

use std::{collections::HashMap, os::fd::AsFd as _, time::Duration};

use anyhow::Context as _;
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, IterableMap as _, MapData, PerCpuArray, Queue},
    programs::BtfTracePoint,
    util::nr_cpus,
};
use kernsight_common::{
    counters::{LATENCY_BUCKETS, LatencyCell, OVERFLOW_CGROUP_ID, map_full},
    syscalls::{
        ATTRIBUTION_EPOCH_MAP, CGROUP_SLOTS_MAP, ERROR_QUOTA_GLOBAL, FREE_SLOTS_MAP, LAST_CGROUP_MAP,
        LATENCY_ENABLED_GLOBAL, LATENCY_QUOTA_GLOBAL, LatencyKey, OTHER_ERRNO, OVERFLOW_SLOT,
        OVERFLOW_SYSCALL, SLOT_ENTRIES_MAP, SLOT_OWNERS_MAP, START_ENTRIES, SYSCALL_COLUMNS,
        SYSCALL_ERRORS_MAP, SYSCALL_LATENCY_MAP, SYSCALL_ROWS_MAP, SYSCALL_START_MAP, SlotEntries,
        SyscallKey, SyscallRow, V1_CGROUP_ID_BIT, V1_CGROUP_SLOTS_MAP,
    },
};
use tracing::{debug, warn};

use super::{
    batch,
    counters::{CgroupCounters, Row, per_cpu_zeros},
    facts::KernelFacts,
    family::{AttachContext, Attached, Family, MapRow, attached_any},
    features::Implementation,
    take_map,
};
use crate::config::Config;

pub const PROBE: &str = "syscalls";

/// The programs that end an attribution epoch, with their tracepoints: at every fork (a new
/// task may get a dead one's kernel stack, by which the exit's cache names a thread) and every
/// cgroup move (see `agent-ebpf/src/attribution.rs`).
const ATTRIBUTION_PROGRAMS: [(&str, &str); 3] = [
    ("ks_sys_task_forked", "sched_process_fork"),
    ("ks_sys_cgroup_attached", "cgroup_attach_task"),
    ("ks_sys_cgroup_transferred", "cgroup_transfer_tasks"),
];

/// The syscall family.
pub struct Syscalls;

impl Family for Syscalls {
    fn name(&self) -> &'static str {
        PROBE
    }

    fn programs(&self, config: &Config, _facts: &KernelFacts) -> Vec<&'static str> {
        let mut programs = vec!["ks_sys_exit"];
        programs.extend(ATTRIBUTION_PROGRAMS.iter().map(|&(name, _)| name));
        if config.syscalls.latency_histogram {
            programs.push("ks_sys_enter");
        }
        programs
    }

    fn enabled(&self, config: &Config) -> bool {
        config.syscalls.enabled
    }

    fn set_enabled(&self, config: &mut Config, on: bool) {
        config.syscalls.enabled = on;
    }

    fn unsupported(&self, facts: &KernelFacts, _config: &Config) -> Option<String> {
        facts.need_walk().err()
    }

    fn implementation(&self, facts: &KernelFacts, _config: &Config) -> Implementation {
        match facts.object.why() {
            None => Implementation::standard("cgroup_storage"),
            Some(why) => Implementation::fallback(
                "cgroup_id_hash",
                format!("cgroup slots in a hash keyed by cgroup id: {why}"),
            ),
        }
    }

    fn configure<'a>(&self, loader: &mut EbpfLoader<'a>, facts: &'a KernelFacts, _config: &Config) {
        loader
            .override_global(LATENCY_ENABLED_GLOBAL, &facts.syscall_latency, true)
            .override_global(ERROR_QUOTA_GLOBAL, &facts.error_quota, true)
            .override_global(LATENCY_QUOTA_GLOBAL, &facts.latency_quota, true);
    }

    fn maps(&self) -> &'static [&'static str] {
        &[
            SYSCALL_ROWS_MAP,
            SLOT_OWNERS_MAP,
            FREE_SLOTS_MAP,
            CGROUP_SLOTS_MAP,
            V1_CGROUP_SLOTS_MAP,
            LAST_CGROUP_MAP,
            ATTRIBUTION_EPOCH_MAP,
            SLOT_ENTRIES_MAP,
            SYSCALL_ERRORS_MAP,
            SYSCALL_LATENCY_MAP,
            SYSCALL_START_MAP,
        ]
    }

    fn map_entries(&self, config: &Config) -> Vec<(&'static str, u32)> {
        let slots = config.syscalls.max_cgroups;
        vec![
            // The hashes of slots by cgroup id: one entry per slot at most. (The full object's
            // cgroup local storage has no bound.)
            (CGROUP_SLOTS_MAP, slots),
            (V1_CGROUP_SLOTS_MAP, slots),
            (SYSCALL_ROWS_MAP, slots + 1),
            (SLOT_OWNERS_MAP, slots + 1),
            (SLOT_ENTRIES_MAP, slots + 1),
            (FREE_SLOTS_MAP, slots),
            (SYSCALL_ERRORS_MAP, config.syscalls.max_error_entries),
            (SYSCALL_LATENCY_MAP, config.syscalls.latency_max_entries),
        ]
    }

    fn idle_maps(&self, config: &Config) -> Vec<&'static str> {
        match config.syscalls.latency_histogram {
            true => Vec::new(),
            false => vec![SYSCALL_LATENCY_MAP, SYSCALL_START_MAP],
        }
    }

    fn pinned_maps(&self) -> &'static [&'static str] {
        &[
            SYSCALL_ROWS_MAP,
            SLOT_OWNERS_MAP,
            FREE_SLOTS_MAP,
            CGROUP_SLOTS_MAP,
            V1_CGROUP_SLOTS_MAP,
            SLOT_ENTRIES_MAP,
            SYSCALL_ERRORS_MAP,
            SYSCALL_LATENCY_MAP,
        ]
    }

    fn bounds(&self) -> &'static [(&'static str, u32)] {
        &[
            ("cgroup_slots", map_full::CGROUP_SLOTS),
            ("cgroup_storage", map_full::CGROUP_STORAGE),
            (SYSCALL_ERRORS_MAP, map_full::SYSCALL_ERRORS),
            ("syscall_errors_quota", map_full::SYSCALL_ERRORS_QUOTA),
            (SYSCALL_LATENCY_MAP, map_full::SYSCALL_LATENCY),
            ("syscall_latency_quota", map_full::SYSCALL_LATENCY_QUOTA),
            (SYSCALL_START_MAP, map_full::SYSCALL_START),
        ]
    }

    fn attach(&self, cx: &mut AttachContext<'_>) -> anyhow::Result<Box<dyn Attached>> {
        let slots_by_id = cx.facts.object.slots_by_id();
        Ok(Box::new(attach(cx.ebpf, cx.btf, cx.config, cx.slots_continued, slots_by_id)?))
    }
}

/// Calls of one cgroup, per syscall number (summed over CPUs and over the cgroup's slots).
pub type Calls = Box<[u64; SYSCALL_COLUMNS]>;

/// The maps of an attached syscall family.
pub struct SyscallMaps {
    rows: PerCpuArray<MapData, SyscallRow>,
    owners: Array<MapData, u64>,
    /// The error and latency entries each slot's cgroup created (its quota's use).
    entries: Array<MapData, SlotEntries>,
    free: Queue<MapData, u32>,
    /// The fallback object's cgroup id → slot hash, whose entries recycling removes (cgroup
    /// local storage goes with its cgroup by itself).
    slots_by_id: Option<BpfHashMap<MapData, u64, u32>>,
    /// Both objects' v1 cgroup id → slot hash, whose entries recycling removes too.
    v1_slots: BpfHashMap<MapData, u64, u32>,
    errors: CgroupCounters<SyscallKey>,
    latency: Option<Latency>,
    pub max_cgroups: u32,
}

struct Latency {
    buckets: CgroupCounters<LatencyKey, LatencyCell>,
    /// The fallback object's LRU hash of entry times by thread id (the full object keeps them
    /// in task local storage, which has no bound to report).
    start: Option<BpfHashMap<MapData, u32, u64>>,
}

/// Loads and attaches the family's programs after preparing their maps.
/// `slots_continued`: the slot maps are pinned ones that a previous agent filled; their free
/// queue is already right. `slots_by_id`: the object keeps the slots in a hash by cgroup id.
pub fn attach(
    ebpf: &mut Ebpf,
    btf: &Btf,
    config: &Config,
    slots_continued: bool,
    slots_by_id: bool,
) -> anyhow::Result<SyscallMaps> {
    let rows = PerCpuArray::try_from(take_map(ebpf, SYSCALL_ROWS_MAP)?)?;
    let owners = Array::try_from(take_map(ebpf, SLOT_OWNERS_MAP)?)?;
    let entries = Array::try_from(take_map(ebpf, SLOT_ENTRIES_MAP)?)?;
    let mut free: Queue<MapData, u32> = Queue::try_from(take_map(ebpf, FREE_SLOTS_MAP)?)?;
    let slots_by_id = match slots_by_id {
        true => Some(BpfHashMap::try_from(take_map(ebpf, CGROUP_SLOTS_MAP)?)?),
        false => None,
    };
    let v1_slots = BpfHashMap::try_from(take_map(ebpf, V1_CGROUP_SLOTS_MAP)?)?;
    if !slots_continued {
        for slot in 1..=config.syscalls.max_cgroups {
            free.push(&slot, 0).context("filling the free cgroup slots")?;
        }
    }
    let overflow =
        SyscallKey { cgroup_id: OVERFLOW_CGROUP_ID, syscall: OVERFLOW_SYSCALL, errno: OTHER_ERRNO };
    let errors =
        CgroupCounters::take(ebpf, SYSCALL_ERRORS_MAP, config.syscalls.max_error_entries, [overflow])?;

    let latency = if config.syscalls.latency_histogram {
        let overflow = (0..LATENCY_BUCKETS).map(|bucket| LatencyKey {
            cgroup_id: OVERFLOW_CGROUP_ID,
            syscall: OVERFLOW_SYSCALL,
            bucket,
        });
        let buckets =
            CgroupCounters::take(ebpf, SYSCALL_LATENCY_MAP, config.syscalls.latency_max_entries, overflow)?;
        // Left in the object when it is task local storage: the programs, loaded below, refer
        // to it by its fd.
        let start = match ebpf.map(SYSCALL_START_MAP) {
            Some(aya::maps::Map::LruHashMap(_)) => {
                Some(BpfHashMap::try_from(take_map(ebpf, SYSCALL_START_MAP)?)?)
            }
            _ => None,
        };
        Some(Latency { buckets, start })
    } else {
        None
    };

    if let Err(err) = start_attribution_epochs(ebpf, btf) {
        warn!(
            "syscall accounting walks from the current task at every call, without its per-thread cache: {err:#}"
        );
    }
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
        entries,
        free,
        slots_by_id,
        v1_slots,
        errors,
        latency,
        max_cgroups: config.syscalls.max_cgroups,
    })
}

/// Attaches the programs that end attribution epochs, then starts the first: from then on the
/// exit counts a thread's call under the cgroup it cached for that thread on that CPU, until
/// the next fork or cgroup move.
fn start_attribution_epochs(ebpf: &mut Ebpf, btf: &Btf) -> anyhow::Result<()> {
    // The cache reads the epoch, then the task's cgroup, in that order (attribution.rs).
    anyhow::ensure!(cfg!(target_arch = "x86_64"), "the cache relies on x86_64's load ordering");
    super::load_and_attach(ebpf, btf, &ATTRIBUTION_PROGRAMS)?;
    let map = ebpf.map_mut(ATTRIBUTION_EPOCH_MAP).context("map ATTRIBUTION_EPOCH missing from the object")?;
    let mut epoch: Array<&mut MapData, u64> = Array::try_from(map)?;
    epoch.set(0, &1, 0).context("starting the first attribution epoch")?;
    Ok(())
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut BtfTracePoint> {
    let program =
        ebpf.program_mut(name).with_context(|| format!("program {name} missing from the object"))?;
    Ok(program.try_into()?)
}

impl SyscallMaps {
    /// (slot, owning cgroup id) of every slot in use: the whole table in one or two batch calls
    /// where the kernel has them, rather than a call a slot (4,096 by default, and this is read
    /// twice a scrape: for the counts and for the map's fill).
    fn owned_slots(&self) -> Vec<(u32, u64)> {
        let in_use = |&(slot, id): &(u32, u64)| (1..=self.max_cgroups).contains(&slot) && id != 0;
        match batch::read_plain::<u32, u64>(self.owners.map().fd().as_fd()) {
            Ok(table) => table.into_iter().filter(in_use).collect(),
            Err(_) => (1..=self.max_cgroups)
                .filter_map(|slot| self.owners.get(&slot, 0).ok().map(|id| (slot, id)))
                .filter(in_use)
                .collect(),
        }
    }

    /// Each slot's row of calls per syscall column, with its cgroup id (`OVERFLOW_CGROUP_ID` for
    /// the overflow slot), as one row per possible CPU; returns the number of rows that could not
    /// be read. The rows of slots near one another come in one batch call (4 KiB a CPU each, a
    /// call and an allocation per slot before: a quarter of the syscall collector). Two CPUs can
    /// give one new cgroup a slot each: its id then comes twice.
    pub fn visit_calls(&self, mut visit: impl FnMut(u64, &[SyscallRow])) -> u64 {
        let mut slots = self.owned_slots();
        slots.push((OVERFLOW_SLOT, OVERFLOW_CGROUP_ID));
        slots.sort_unstable();
        let indexes: Vec<u32> = slots.iter().map(|&(slot, _)| slot).collect();
        let owner = |slot: u32| slots[slots.partition_point(|&(s, _)| s < slot)].1;
        let cpus = nr_cpus().map(|cpus| cpus.get() as usize).map_err(|(_, error)| error);
        batch::visit_array_indexes(
            self.rows.map().fd().as_fd(),
            cpus,
            &indexes,
            |slot| self.rows.get(&slot, 0).ok(),
            |slot, rows| visit(owner(slot), rows),
        )
    }

    /// Calls per syscall column, by cgroup id, and the number of rows that could not be read.
    pub fn read_calls(&self) -> (HashMap<u64, Calls>, u64) {
        let mut calls: HashMap<u64, Calls> = HashMap::new();
        let unreadable = self.visit_calls(|cgroup_id, per_cpu| {
            let sums = calls.entry(cgroup_id).or_insert_with(|| Box::new([0; SYSCALL_COLUMNS]));
            for row in per_cpu {
                for (sum, value) in sums.iter_mut().zip(row.calls) {
                    *sum += value;
                }
            }
        });
        (calls, unreadable)
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
        self.errors.read()
    }

    /// Calls and the sum of their durations per (cgroup, syscall, latency bucket), when latency
    /// is measured.
    pub fn read_latency(&self) -> Option<(Vec<Row<LatencyKey, LatencyCell>>, u64)> {
        self.latency.as_ref().map(|l| l.buckets.read())
    }

    /// Frees the slots (and error and latency entries) of cgroups gone for at least `grace`
    /// (`gone_for` answers how long, `None` while the cgroup exists), so that their counts were
    /// exported for that long first; then removes the error and latency entries of any other
    /// cgroup gone that long (entries of cgroups that held no slot: left by an agent of an
    /// earlier version in the pinned maps, or by a slot table replaced while the hash maps were
    /// kept). Returns the ids whose slot was freed, and the number of other entries removed.
    pub fn recycle(
        &mut self,
        gone_for: &mut dyn FnMut(u64) -> Option<Duration>,
        grace: Duration,
    ) -> (Vec<u64>, usize) {
        let mut freed = Vec::new();
        for (slot, cgroup_id) in self.owned_slots() {
            if gone_for(cgroup_id).is_none_or(|gone| gone < grace) {
                continue;
            }
            // Zero the row before the slot can be handed out again; no task is left in the
            // cgroup, so nothing writes the row meanwhile.
            let zeroed =
                per_cpu_zeros::<SyscallRow>().is_ok_and(|zeros| self.rows.set(slot, zeros, 0).is_ok());
            // Gone already when two CPUs gave the cgroup a slot each: not an error.
            if cgroup_id & V1_CGROUP_ID_BIT != 0 {
                let _ = self.v1_slots.remove(&cgroup_id);
            } else if let Some(slots_by_id) = &mut self.slots_by_id {
                let _ = slots_by_id.remove(&cgroup_id);
            }
            // The quota starts again for the slot's next cgroup, once its entries are gone
            // (below, before the slot is pushed back).
            let reset = self.entries.set(slot, &SlotEntries::default(), 0).is_ok();
            if zeroed && reset && self.owners.set(slot, &0, 0).is_ok() {
                freed.push((slot, cgroup_id));
            }
        }
        let ids: Vec<u64> = freed.iter().map(|&(_, id)| id).collect();
        if !ids.is_empty() {
            self.forget_hash_entries(&ids);
            debug!(cgroups = ids.len(), "recycled the slots of removed cgroups");
        }
        // Only now may a new cgroup take the slot: its old entries are gone.
        let freed: Vec<u64> =
            freed.into_iter().filter(|(slot, _)| self.free.push(slot, 0).is_ok()).map(|(_, id)| id).collect();
        let mut others = self.errors.recycle(gone_for, grace);
        if let Some(latency) = &mut self.latency {
            others += latency.buckets.recycle(gone_for, grace);
        }
        if others != 0 {
            debug!(
                entries = others,
                "removed the error and latency entries of removed cgroups without a slot"
            );
        }
        (freed, others)
    }

    fn forget_hash_entries(&mut self, ids: &[u64]) {
        self.errors.forget(ids);
        if let Some(latency) = &mut self.latency {
            latency.buckets.forget(ids);
        }
    }
}

impl Attached for SyscallMaps {
    attached_any!();

    fn map_rows(&self) -> Vec<MapRow> {
        let mut rows = vec![
            MapRow { map: SYSCALL_ROWS_MAP, entries: self.slots_in_use(), capacity: self.max_cgroups },
            self.errors.map_row(),
        ];
        if let Some(latency) = &self.latency {
            rows.push(latency.buckets.map_row());
            if let Some(start) = &latency.start {
                let threads = start.keys().filter(Result::is_ok).count();
                rows.push(MapRow { map: SYSCALL_START_MAP, entries: threads, capacity: START_ENTRIES });
            }
        }
        rows
    }

    fn recycle(&mut self, gone_for: &mut dyn FnMut(u64) -> Option<Duration>, grace: Duration) -> usize {
        let (freed, others) = SyscallMaps::recycle(self, gone_for, grace);
        freed.len() + others
    }
}
