//! `kernsight_runqueue_latency_seconds`, `kernsight_process_execs_total` and
//! `kernsight_process_exits_total`, read from the scheduler families' maps on each scrape.

use std::{collections::BTreeMap, sync::Arc};

use kernsight_common::sched::kind;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::MetricType,
};

use super::{
    LabelNames, encode_counters,
    histogram::{Latency, LatencyHistogram},
    naming::CgroupNamer,
    workload_labels,
};
use crate::{
    bpf::{
        Programs,
        sched::{ProcessMaps, RunqueueMaps},
    },
    metadata::{
        cgroups::Tracker,
        identity::{Resolver, Workload},
    },
};

#[derive(Debug)]
pub struct SchedCollector {
    programs: Arc<Programs>,
    tracker: Arc<Tracker>,
    resolver: Arc<Resolver>,
}

impl SchedCollector {
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

impl Collector for SchedCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Entries that vanish while being read (a cgroup forgotten meanwhile) are skipped.
        let runqueue = self.programs.family::<RunqueueMaps>().map(|maps| maps.read().0);
        let processes = self.programs.family::<ProcessMaps>().map(|maps| maps.read().0);
        if runqueue.is_none() && processes.is_none() {
            return Ok(());
        }
        let mut namer = CgroupNamer::new(&self.tracker, &self.resolver);
        let with_id = LabelNames {
            container_id: self.resolver.container_id_label(),
            pod_labels: self.resolver.pod_label_names(),
        };

        if let Some(rows) = runqueue {
            let mut series: BTreeMap<Workload, Latency> = BTreeMap::new();
            for (key, value) in rows.into_iter().filter(|(_, v)| *v > 0) {
                series.entry(namer.name(key.cgroup_id)).or_default().add(key.bucket, value);
            }
            let mut family = encoder.encode_descriptor(
                "kernsight_runqueue_latency_seconds",
                "Time threads waited on a run queue, from becoming runnable (wakeup or preemption) to running, by workload (log2 buckets in the kernel)",
                None,
                MetricType::Histogram,
            )?;
            for (workload, latency) in series {
                let labels = workload_labels(&workload, &with_id, []);
                LatencyHistogram(&latency).encode(family.encode_family(&labels)?)?;
            }
        }

        if let Some(rows) = processes {
            let mut execs: BTreeMap<Workload, u64> = BTreeMap::new();
            let mut exits: BTreeMap<(Workload, &'static str), u64> = BTreeMap::new();
            for (key, value) in rows.into_iter().filter(|(_, v)| *v > 0) {
                let workload = namer.name(key.cgroup_id);
                if key.kind == kind::EXEC {
                    *execs.entry(workload).or_default() += value;
                } else if let Some(reason) = exit_reason(key.kind) {
                    *exits.entry((workload, reason)).or_default() += value;
                }
            }
            encode_counters(
                &mut encoder,
                "kernsight_process_execs",
                "Successful execs (sched_process_exec), by workload",
                execs.into_iter().map(|(workload, n)| (workload_labels(&workload, &with_id, []), n)),
            )?;
            encode_counters(
                &mut encoder,
                "kernsight_process_exits",
                "Process exits (thread-group leaders), by workload and reason: exited (status 0), failed (non-zero status), signaled, killed (SIGKILL)",
                exits.into_iter().map(|((workload, reason), n)| {
                    (workload_labels(&workload, &with_id, [("reason", reason.to_owned())]), n)
                }),
            )?;
        }
        Ok(())
    }
}
