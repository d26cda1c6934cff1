//! The `processes` family: `ks_sched_process_exec` and `ks_sched_process_exit` count execs and
//! process exits per cgroup and stream each one through a ring (decoded in `event`).

pub mod event;

use std::time::Duration;

use aya::{Btf, Ebpf, EbpfLoader};
use kernsight_common::{
    counters::{OVERFLOW_CGROUP_ID, map_full},
    processes::{PROCESS_COUNTS_MAP, PROCESS_EVENTS_LOST_MAP, PROCESS_EVENTS_MAP, ProcessKey, kind},
};

use super::{
    counters::{CgroupCounters, Row},
    facts::KernelFacts,
    family::{AttachContext, Attached, Family, MapRow, attached_any},
    load_and_attach,
    rings::EventRing,
};
use crate::config::Config;

pub const PROCESSES_PROBE: &str = "processes";
const PROCESS_PROGRAMS: [(&str, &str); 2] =
    [("ks_sched_process_exec", "sched_process_exec"), ("ks_sched_process_exit", "sched_process_exit")];

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
