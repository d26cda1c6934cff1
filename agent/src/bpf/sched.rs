//! The scheduler families: `runqueue` (`ks_sched_wakeup`, `ks_sched_wakeup_new`,
//! `ks_sched_switch`: run-queue latency per cgroup) and `processes` (`ks_sched_process_exec`,
//! `ks_sched_process_exit`: execs and process exits per cgroup), and the maps they fill.

use std::time::Duration;

use anyhow::Context as _;
use aya::{
    Btf, Ebpf,
    maps::{MapData, PerCpuHashMap},
};
use kernsight_common::{
    sched::{PROCESS_COUNTS_MAP, ProcessKey, RUNQ_LATENCY_MAP, RunqKey, kind},
    syscalls::{LATENCY_SUM_BUCKET, OVERFLOW_CGROUP_ID},
};

use super::{
    ProbeState, ProbeStatus, load_and_attach,
    syscalls::{Row, insert_zeros_if_absent, read_per_cpu},
    take_map,
};
use crate::kernel::btf;

pub const RUNQUEUE_PROBE: &str = "runqueue";
pub const PROCESSES_PROBE: &str = "processes";
const RUNQUEUE_PROGRAMS: [(&str, &str); 3] = [
    ("ks_sched_wakeup", "sched_wakeup"),
    ("ks_sched_wakeup_new", "sched_wakeup_new"),
    ("ks_sched_switch", "sched_switch"),
];
const PROCESS_PROGRAMS: [(&str, &str); 2] =
    [("ks_sched_process_exec", "sched_process_exec"), ("ks_sched_process_exit", "sched_process_exit")];

pub fn runqueue_status(state: ProbeState) -> ProbeStatus {
    status(RUNQUEUE_PROBE, &RUNQUEUE_PROGRAMS, state)
}

pub fn processes_status(state: ProbeState) -> ProbeStatus {
    status(PROCESSES_PROBE, &PROCESS_PROGRAMS, state)
}

fn status(name: &'static str, programs: &[(&'static str, &str)], state: ProbeState) -> ProbeStatus {
    ProbeStatus { name, programs: programs.iter().map(|(p, _)| *p).collect(), program_ids: Vec::new(), state }
}

/// `task_struct` members the scheduler programs read, from the running kernel's BTF.
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskOffsets {
    pub pid: u32,
    pub tgid: u32,
    pub exit_code: u32,
    pub real_parent: u32,
    pub mm: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub binprm_filename: u32,
}

impl TaskOffsets {
    pub fn read() -> Result<Self, btf::BtfError> {
        let btf = btf::Btf::from_sys_fs()?;
        Ok(Self {
            pid: btf.member_offset("task_struct", "pid")?,
            tgid: btf.member_offset("task_struct", "tgid")?,
            exit_code: btf.member_offset("task_struct", "exit_code")?,
            real_parent: btf.member_offset("task_struct", "real_parent")?,
            mm: btf.member_offset("task_struct", "mm")?,
            mm_arg_start: btf.member_offset("mm_struct", "arg_start")?,
            mm_arg_end: btf.member_offset("mm_struct", "arg_end")?,
            binprm_filename: btf.member_offset("linux_binprm", "filename")?,
        })
    }
}

/// Removes the entries of cgroups gone for at least `grace`; returns how many went.
fn forget<K: aya::Pod>(
    map: &mut PerCpuHashMap<MapData, K, u64>,
    cgroup_of: fn(&K) -> u64,
    gone_for: &mut dyn FnMut(u64) -> Option<Duration>,
    grace: Duration,
) -> usize {
    let stale: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| {
            let id = cgroup_of(k);
            id != OVERFLOW_CGROUP_ID && gone_for(id).is_some_and(|gone| gone >= grace)
        })
        .collect();
    stale.iter().filter(|k| map.remove(k).is_ok()).count()
}

/// The maps of the attached `runqueue` family.
pub struct RunqueueMaps {
    latency: PerCpuHashMap<MapData, RunqKey, u64>,
    pub capacity: u32,
}

pub fn attach_runqueue(ebpf: &mut Ebpf, btf: &Btf, capacity: u32) -> anyhow::Result<RunqueueMaps> {
    let mut latency: PerCpuHashMap<MapData, RunqKey, u64> =
        PerCpuHashMap::try_from(take_map(ebpf, RUNQ_LATENCY_MAP)?)?;
    // The overflow entries must exist before the first update can find the map full.
    for bucket in 0..=LATENCY_SUM_BUCKET {
        let key = RunqKey { cgroup_id: OVERFLOW_CGROUP_ID, bucket, _pad: 0 };
        insert_zeros_if_absent(&mut latency, &key).context("creating the run-queue overflow entries")?;
    }
    // sched_switch last: it consumes what the wakeups record.
    load_and_attach(ebpf, btf, &RUNQUEUE_PROGRAMS)?;
    Ok(RunqueueMaps { latency, capacity })
}

impl RunqueueMaps {
    /// Entries in use, counted by key only (no per-CPU values read): for the map-fill gauge.
    pub fn entries(&self) -> usize {
        self.latency.keys().filter(Result::is_ok).count()
    }

    /// Switches-in per (cgroup, log2 bucket), and the sums (`LATENCY_SUM_BUCKET`).
    pub fn read(&self) -> (Vec<Row<RunqKey>>, u64) {
        read_per_cpu(&self.latency)
    }

    pub fn recycle(&mut self, gone_for: &mut dyn FnMut(u64) -> Option<Duration>, grace: Duration) -> usize {
        forget(&mut self.latency, |k| k.cgroup_id, gone_for, grace)
    }
}

/// The maps of the attached `processes` family.
pub struct ProcessMaps {
    counts: PerCpuHashMap<MapData, ProcessKey, u64>,
    pub capacity: u32,
    /// Taken by the task that reports exec and exit events.
    pub events: Option<super::process_events::ProcessEventReader>,
}

pub fn attach_processes(ebpf: &mut Ebpf, btf: &Btf, capacity: u32) -> anyhow::Result<ProcessMaps> {
    let events = super::process_events::ProcessEventReader::take(ebpf)?;
    let mut counts: PerCpuHashMap<MapData, ProcessKey, u64> =
        PerCpuHashMap::try_from(take_map(ebpf, PROCESS_COUNTS_MAP)?)?;
    for what in 0..kind::COUNT {
        let key = ProcessKey { cgroup_id: OVERFLOW_CGROUP_ID, kind: what, _pad: 0 };
        insert_zeros_if_absent(&mut counts, &key).context("creating the process overflow entries")?;
    }
    load_and_attach(ebpf, btf, &PROCESS_PROGRAMS)?;
    Ok(ProcessMaps { counts, capacity, events: Some(events) })
}

impl ProcessMaps {
    /// Entries in use, counted by key only: for the map-fill gauge.
    pub fn entries(&self) -> usize {
        self.counts.keys().filter(Result::is_ok).count()
    }

    /// Execs and exits per (cgroup, kind).
    pub fn read(&self) -> (Vec<Row<ProcessKey>>, u64) {
        read_per_cpu(&self.counts)
    }

    pub fn recycle(&mut self, gone_for: &mut dyn FnMut(u64) -> Option<Duration>, grace: Duration) -> usize {
        forget(&mut self.counts, |k| k.cgroup_id, gone_for, grace)
    }
}
