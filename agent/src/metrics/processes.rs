//! `kernsight_process_execs_total` and `kernsight_process_exits_total`, read from the
//! `processes` family's map on each scrape.

use std::sync::Arc;

use kernsight_common::processes::kind;
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::{
    LabelNames, Series, encode_counters,
    naming::{CgroupNamer, WorkloadId},
};
use crate::{
    bpf::{Programs, processes::ProcessMaps},
    metadata::{cgroups::Tracker, identity::Resolver},
    seeded_hash::SeededMap,
};

#[derive(Debug)]
pub struct ProcessesCollector {
    programs: Arc<Programs>,
    tracker: Arc<Tracker>,
    resolver: Arc<Resolver>,
}

impl ProcessesCollector {
    pub fn new(programs: Arc<Programs>, tracker: Arc<Tracker>, resolver: Arc<Resolver>) -> Self {
        Self { programs, tracker, resolver }
    }
}

/// The `reason` label of an exit kind.
fn exit_reason(what: u32) -> Option<&'static str> {
    match what {
        kind::EXITED => Some("exited"),
        kind::FAILED => Some("failed"),
        kind::SIGNALED => Some("signaled"),
        kind::KILLED => Some("killed"),
        _ => None,
    }
}

impl Collector for ProcessesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Entries that vanish while being read (a cgroup forgotten meanwhile) are skipped.
        let Some(rows) = self.programs.family::<ProcessMaps>().map(|maps| maps.read().0) else {
            return Ok(());
        };
        let mut namer = CgroupNamer::new(&self.tracker, &self.resolver);
        let with_id = LabelNames::of(&self.resolver);
        let mut execs: SeededMap<(WorkloadId, ()), u64> = SeededMap::default();
        let mut exits: SeededMap<(WorkloadId, &'static str), u64> = SeededMap::default();
        for (key, value) in rows.into_iter().filter(|(_, v)| *v > 0) {
            let workload = namer.id(key.cgroup_id);
            if key.kind == kind::EXEC {
                *execs.entry((workload, ())).or_default() += value;
            } else if let Some(reason) = exit_reason(key.kind) {
                *exits.entry((workload, reason)).or_default() += value;
            }
        }
        namer.named_all();
        encode_counters(
            &mut encoder,
            "kernsight_process_execs",
            "Successful execs (sched_process_exec), by workload",
            namer
                .in_label_order(execs)
                .iter()
                .map(|((workload, ()), n)| (Series::of(workload, &with_id), *n)),
        )?;
        encode_counters(
            &mut encoder,
            "kernsight_process_exits",
            "Process exits (thread-group leaders), by workload and reason: exited (status 0), failed (non-zero status), signaled, killed (SIGKILL)",
            namer
                .in_label_order(exits)
                .iter()
                .map(|((workload, reason), n)| (Series::of(workload, &with_id).with("reason", reason), *n)),
        )?;
        Ok(())
    }
}
