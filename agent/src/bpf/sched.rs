//! The scheduler families: `runqueue` (`ks_sched_wakeup`, `ks_sched_wakeup_new`,
//! `ks_sched_switch`: run-queue latency per cgroup) and `processes` (`ks_sched_process_exec`,
//! `ks_sched_process_exit`: execs and process exits per cgroup), and the maps they fill.

use std::time::Duration;

use aya::{Btf, Ebpf, EbpfLoader};
use kernsight_common::{
    sched::{
        PROCESS_COUNTS_MAP, PROCESS_EVENTS_LOST_MAP, PROCESS_EVENTS_MAP, ProcessKey, RUNQ_LATENCY_MAP,
        RUNQ_START_MAP, RunqKey, SWITCH_HAS_PREV_STATE_GLOBAL, TASK_STATE_OFFSET_GLOBAL, kind,
    },
    syscalls::{LATENCY_SUM_BUCKET, OVERFLOW_CGROUP_ID, map_full},
};

use super::{
    counters::{CgroupCounters, Row},
    facts::KernelFacts,
    family::{AttachContext, Attached, Family, MapRow, attached_any},
    features::{Implementation, Object},
    load_and_attach,
    rings::EventRing,
};
use crate::{config::Config, kernel::btf};

pub const RUNQUEUE_PROBE: &str = "runqueue";
pub const PROCESSES_PROBE: &str = "processes";
const RUNQUEUE_PROGRAMS: [(&str, &str); 3] = [
    ("ks_sched_wakeup", "sched_wakeup"),
    ("ks_sched_wakeup_new", "sched_wakeup_new"),
    ("ks_sched_switch", "sched_switch"),
];
const PROCESS_PROGRAMS: [(&str, &str); 2] =
    [("ks_sched_process_exec", "sched_process_exec"), ("ks_sched_process_exit", "sched_process_exit")];

/// Run-queue latency per cgroup.
pub struct Runqueue;

impl Family for Runqueue {
    fn name(&self) -> &'static str {
        RUNQUEUE_PROBE
    }

    fn programs(&self, _config: &Config, _facts: &KernelFacts) -> Vec<&'static str> {
        RUNQUEUE_PROGRAMS.iter().map(|(p, _)| *p).collect()
    }

    fn enabled(&self, config: &Config) -> bool {
        config.sched.runqueue_latency
    }

    fn set_enabled(&self, config: &mut Config, on: bool) {
        config.sched.runqueue_latency = on;
    }

    fn unsupported(&self, facts: &KernelFacts, _config: &Config) -> Option<String> {
        facts.need_task().err().or_else(|| match (&facts.task_state_offset, facts.switch_has_prev_state) {
            (Err(err), 0) => Some(format!("sched_switch has no prev_state argument and {err}")),
            _ => None,
        })
    }

    fn implementation(&self, facts: &KernelFacts) -> Implementation {
        match &facts.object {
            Object::Full => Implementation::standard("task_storage"),
            Object::Fallback { why } => Implementation::fallback(
                "thread_id_lru",
                format!("runnable-since times in an LRU hash keyed by thread id: {why}"),
            ),
        }
    }

    fn configure<'a>(&self, loader: &mut EbpfLoader<'a>, facts: &'a KernelFacts, config: &Config) {
        loader
            .override_global(SWITCH_HAS_PREV_STATE_GLOBAL, &facts.switch_has_prev_state, true)
            .map_max_entries(RUNQ_LATENCY_MAP, config.sched.runqueue_max_entries);
        if let Ok(offset) = &facts.task_state_offset {
            loader.override_global(TASK_STATE_OFFSET_GLOBAL, offset, true);
        }
    }

    fn pinned_maps(&self) -> &'static [&'static str] {
        &[RUNQ_LATENCY_MAP]
    }

    fn bounds(&self) -> &'static [(&'static str, u32)] {
        &[(RUNQ_LATENCY_MAP, map_full::RUNQ_LATENCY), (RUNQ_START_MAP, map_full::RUNQ_START)]
    }

    fn attach(&self, cx: &mut AttachContext<'_>) -> anyhow::Result<Box<dyn Attached>> {
        let overflow =
            (0..=LATENCY_SUM_BUCKET).map(|bucket| RunqKey { cgroup_id: OVERFLOW_CGROUP_ID, bucket, _pad: 0 });
        let latency =
            CgroupCounters::take(cx.ebpf, RUNQ_LATENCY_MAP, cx.config.sched.runqueue_max_entries, overflow)?;
        // sched_switch last: it consumes what the wakeups record.
        load_and_attach(cx.ebpf, cx.btf, &RUNQUEUE_PROGRAMS)?;
        Ok(Box::new(RunqueueMaps { latency }))
    }
}

/// Execs and process exits per cgroup, and their event ring.
pub struct Processes;

impl Family for Processes {
    fn name(&self) -> &'static str {
        PROCESSES_PROBE
    }

    fn programs(&self, _config: &Config, _facts: &KernelFacts) -> Vec<&'static str> {
        PROCESS_PROGRAMS.iter().map(|(p, _)| *p).collect()
    }

    fn enabled(&self, config: &Config) -> bool {
        config.sched.processes
    }

    fn set_enabled(&self, config: &mut Config, on: bool) {
        config.sched.processes = on;
    }

    fn unsupported(&self, facts: &KernelFacts, _config: &Config) -> Option<String> {
        facts.need_task().err()
    }

    fn configure<'a>(&self, loader: &mut EbpfLoader<'a>, _facts: &'a KernelFacts, config: &Config) {
        loader.map_max_entries(PROCESS_COUNTS_MAP, config.sched.process_max_entries);
    }

    fn pinned_maps(&self) -> &'static [&'static str] {
        &[PROCESS_COUNTS_MAP]
    }

    fn bounds(&self) -> &'static [(&'static str, u32)] {
        &[(PROCESS_COUNTS_MAP, map_full::PROCESS_COUNTS)]
    }

    fn attach(&self, cx: &mut AttachContext<'_>) -> anyhow::Result<Box<dyn Attached>> {
        Ok(Box::new(attach_processes(cx.ebpf, cx.btf, cx.config.sched.process_max_entries)?))
    }
}

/// Prepares the `processes` maps and attaches its programs (the agent's family, and
/// `kernsight trace exec|exit`, which reads its ring).
pub fn attach_processes(ebpf: &mut Ebpf, btf: &Btf, capacity: u32) -> anyhow::Result<ProcessMaps> {
    let events = EventRing::take(ebpf, "process_events", PROCESS_EVENTS_MAP, PROCESS_EVENTS_LOST_MAP)?;
    let overflow =
        (0..kind::COUNT).map(|what| ProcessKey { cgroup_id: OVERFLOW_CGROUP_ID, kind: what, _pad: 0 });
    let counts = CgroupCounters::take(ebpf, PROCESS_COUNTS_MAP, capacity, overflow)?;
    load_and_attach(ebpf, btf, &PROCESS_PROGRAMS)?;
    Ok(ProcessMaps { counts, events: Some(events) })
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
    pub fn read(btf: &btf::Btf) -> Result<Self, btf::BtfError> {
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

/// The maps of the attached `runqueue` family.
pub struct RunqueueMaps {
    latency: CgroupCounters<RunqKey>,
}

impl RunqueueMaps {
    /// Switches-in per (cgroup, log2 bucket), and the sums (`LATENCY_SUM_BUCKET`).
    pub fn read(&self) -> (Vec<Row<RunqKey>>, u64) {
        self.latency.read()
    }
}

impl Attached for RunqueueMaps {
    attached_any!();

    fn map_rows(&self) -> Vec<MapRow> {
        vec![self.latency.map_row()]
    }

    fn recycle(&mut self, gone_for: &mut dyn FnMut(u64) -> Option<Duration>, grace: Duration) -> usize {
        self.latency.recycle(gone_for, grace)
    }
}

/// The maps of the attached `processes` family.
pub struct ProcessMaps {
    counts: CgroupCounters<ProcessKey>,
    events: Option<EventRing>,
}

impl ProcessMaps {
    /// Execs and exits per (cgroup, kind).
    pub fn read(&self) -> (Vec<Row<ProcessKey>>, u64) {
        self.counts.read()
    }
}

impl Attached for ProcessMaps {
    attached_any!();

    fn map_rows(&self) -> Vec<MapRow> {
        vec![self.counts.map_row()]
    }

    fn recycle(&mut self, gone_for: &mut dyn FnMut(u64) -> Option<Duration>, grace: Duration) -> usize {
        self.counts.recycle(gone_for, grace)
    }

    fn take_events(&mut self) -> Option<EventRing> {
        self.events.take()
    }
}
