//! The `memory_reclaim` family: reclaim stalls per cgroup (`ks_direct_reclaim_begin`/`_end`,
//! `ks_memcg_reclaim_begin`/`_end` on the `vmscan` BTF tracepoints) and the map they fill.
//! The programs run only when a task enters or leaves reclaim: nothing on a node that has
//! memory to spare.

use std::time::Duration;

use kernsight_common::{
    counters::{OVERFLOW_CGROUP_ID, map_full},
    memory_reclaim::{RECLAIM_STALLS_MAP, RECLAIM_START_MAP, ReclaimKey, keys_of},
};

use super::{
    counters::{CgroupCounters, CgroupKeyed, Row},
    facts::KernelFacts,
    family::{AttachContext, Attached, Family, MapRow, attached_any},
    load_and_attach,
};
use crate::config::Config;

pub const MEMORY_RECLAIM_PROBE: &str = "memory_reclaim";
/// (program, BTF tracepoint), attached in this order: the ends first, so that every begin
/// recorded has its end attached and the thread's entry is removed.
const PROGRAMS: [(&str, &str); 4] = [
    ("ks_direct_reclaim_end", "mm_vmscan_direct_reclaim_end"),
    ("ks_memcg_reclaim_end", "mm_vmscan_memcg_reclaim_end"),
    ("ks_direct_reclaim_begin", "mm_vmscan_direct_reclaim_begin"),
    ("ks_memcg_reclaim_begin", "mm_vmscan_memcg_reclaim_begin"),
];

impl CgroupKeyed for ReclaimKey {
    fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }
}

/// Time spent in direct and memcg reclaim, per cgroup.
pub struct MemoryReclaim;

impl Family for MemoryReclaim {
    fn name(&self) -> &'static str {
        MEMORY_RECLAIM_PROBE
    }

    fn programs(&self, _config: &Config, _facts: &KernelFacts) -> Vec<&'static str> {
        PROGRAMS.iter().map(|(program, _)| *program).collect()
    }

    fn enabled(&self, config: &Config) -> bool {
        config.memory.reclaim_stalls
    }

    fn set_enabled(&self, config: &mut Config, on: bool) {
        config.memory.reclaim_stalls = on;
    }

    fn unsupported(&self, facts: &KernelFacts, _config: &Config) -> Option<String> {
        // The current task and its cgroup are all the programs read; the tracepoints are in
        // every kernel with memory cgroups (2.6.36+).
        facts.need_walk().err()
    }

    fn maps(&self) -> &'static [&'static str] {
        &[RECLAIM_STALLS_MAP, RECLAIM_START_MAP]
    }

    fn map_entries(&self, config: &Config) -> Vec<(&'static str, u32)> {
        vec![(RECLAIM_STALLS_MAP, config.memory.reclaim_max_entries)]
    }

    fn pinned_maps(&self) -> &'static [&'static str] {
        &[RECLAIM_STALLS_MAP]
    }

    fn bounds(&self) -> &'static [(&'static str, u32)] {
        &[(RECLAIM_STALLS_MAP, map_full::RECLAIM_STALLS), (RECLAIM_START_MAP, map_full::RECLAIM_START)]
    }

    fn attach(&self, cx: &mut AttachContext<'_>) -> anyhow::Result<Box<dyn Attached>> {
        let stalls = CgroupCounters::take(
            cx.ebpf,
            RECLAIM_STALLS_MAP,
            cx.config.memory.reclaim_max_entries,
            keys_of(OVERFLOW_CGROUP_ID),
        )?;
        load_and_attach(cx.ebpf, cx.btf, &PROGRAMS)?;
        Ok(Box::new(ReclaimMaps { stalls }))
    }
}

/// The maps of the attached `memory_reclaim` family.
pub struct ReclaimMaps {
    stalls: CgroupCounters<ReclaimKey>,
}

impl ReclaimMaps {
    /// Stalls per (cgroup, kind, log2 bucket), and the sums (`LATENCY_SUM_BUCKET`); the number
    /// of entries that could not be read.
    pub fn read(&self) -> (Vec<Row<ReclaimKey>>, u64) {
        self.stalls.read()
    }

    /// The stalls of one cgroup, as `read` gives them, by a lookup of each of its keys (an OOM
    /// kill asks this, and a workload can make kills by the hundred a second).
    pub fn read_cgroup(&self, cgroup_id: u64) -> Vec<Row<ReclaimKey>> {
        self.stalls.read_keys(keys_of(cgroup_id))
    }
}

impl Attached for ReclaimMaps {
    attached_any!();

    fn map_rows(&self) -> Vec<MapRow> {
        vec![self.stalls.map_row()]
    }

    fn recycle(&mut self, gone_for: &mut dyn FnMut(u64) -> Option<Duration>, grace: Duration) -> usize {
        self.stalls.recycle(gone_for, grace)
    }
}
