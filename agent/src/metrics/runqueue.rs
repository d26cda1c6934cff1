//! `kernsight_runqueue_latency_seconds` (every wait) and `kernsight_cpu_wait_seconds` (the same
//! waits by `reason`: `throttled` or `contention`), read from the `runqueue` family's map on
//! each scrape. The first is the sum of the second's two reasons. And
//! `kernsight_cpu_throttle_episode_seconds`: how long each throttle episode lasted.

use std::sync::Arc;

use super::{
    LabelNames, Series,
    histogram::{Latency, write_histogram},
    naming::{CgroupNamer, WorkloadId},
    text::{Text, TextCollector},
};
use crate::{
    bpf::{Programs, runqueue::RunqueueMaps},
    metadata::{cgroups::Tracker, identity::Resolver},
    seeded_hash::SeededMap,
};
use kernsight_common::runqueue::{THROTTLE_EPISODE, WAIT_THROTTLED};

#[derive(Debug)]
pub struct RunqueueCollector {
    programs: Arc<Programs>,
    tracker: Arc<Tracker>,
    resolver: Arc<Resolver>,
}

impl RunqueueCollector {
    pub fn new(programs: Arc<Programs>, tracker: Arc<Tracker>, resolver: Arc<Resolver>) -> Self {
        Self { programs, tracker, resolver }
    }
}

// Written, not encoded: at 1,000 containers these are 48,000 lines a scrape (16 a series).
impl TextCollector for RunqueueCollector {
    fn write(&self, text: &mut Text) {
        // Entries that vanish while being read (a cgroup forgotten meanwhile) are skipped.
        let Some((rows, by_reason, measures_episodes)) =
            self.programs.family::<RunqueueMaps>().map(|maps| (maps.read().0, maps.by_reason, maps.episodes))
        else {
            return;
        };
        let mut namer = CgroupNamer::new(&self.tracker, &self.resolver);
        let with_id = LabelNames::of(&self.resolver);
        let mut series: SeededMap<(WorkloadId, ()), Latency> = SeededMap::default();
        let mut by_cause: SeededMap<(WorkloadId, &'static str), Latency> = SeededMap::default();
        let mut episodes: SeededMap<(WorkloadId, ()), Latency> = SeededMap::default();
        for (key, cell) in rows.into_iter().filter(|(_, cell)| cell.count > 0) {
            let workload = namer.id(key.cgroup_id);
            if key.reason == THROTTLE_EPISODE {
                episodes.entry((workload, ())).or_default().observe(key.bucket, &cell);
                continue; // not a wait
            }
            if by_reason {
                by_cause.entry((workload, reason_label(key.reason))).or_default().observe(key.bucket, &cell);
            }
            series.entry((workload, ())).or_default().observe(key.bucket, &cell);
        }
        namer.named_all();
        write(
            text,
            RUNQUEUE_LATENCY,
            namer.in_label_order(series).iter().map(|((w, ()), latency)| (Series::of(w, &with_id), latency)),
        );
        if !by_reason {
            return; // the kernel cannot tell why a task waited (no CFS bandwidth in its BTF)
        }
        write(
            text,
            CPU_WAIT,
            namer
                .in_label_order(by_cause)
                .iter()
                .map(|((w, reason), latency)| (Series::of(w, &with_id).with("reason", reason), latency)),
        );
        if !measures_episodes {
            return; // the kernel's cfs_rq keeps no throttled time of its own (before 6.6)
        }
        write(
            text,
            THROTTLE_EPISODES,
            namer
                .in_label_order(episodes)
                .iter()
                .map(|((w, ()), latency)| (Series::of(w, &with_id), latency)),
        );
    }
}

/// (name, help) of the two histograms.
const RUNQUEUE_LATENCY: (&str, &str) = (
    "kernsight_runqueue_latency_seconds",
    "Time threads waited on a run queue, from becoming runnable (wakeup or preemption) to running, by workload (log2 buckets in the kernel)",
);
const CPU_WAIT: (&str, &str) = (
    "kernsight_cpu_wait_seconds",
    "Time runnable threads waited for a CPU by reason: throttled (their cgroup, or an ancestor, had used its cpu.max / CFS quota when the wait began) or contention (another task had the CPU), by workload (log2 buckets in the kernel)",
);

const THROTTLE_EPISODES: (&str, &str) = (
    "kernsight_cpu_throttle_episode_seconds",
    "How long each throttle episode lasted: the time one CPU's run queue of the workload's cgroup stayed throttled (its cgroup, or an ancestor, had used its cpu.max / CFS quota), from the throttle to the unthrottle, one observation per episode and CPU, by workload (log2 buckets in the kernel)",
);

/// Writes one histogram family with a series per label set.
fn write<'a>(
    text: &mut Text,
    (name, help): (&str, &str),
    series: impl Iterator<Item = (Series<'a>, &'a Latency)>,
) {
    text.histogram_family(name, help);
    for (labels, latency) in series {
        write_histogram(text, name, &labels, latency);
    }
}

/// The `reason` label of a `RunqKey::reason` (an unknown value, which no program writes, counts
/// as contention: the wait happened, its cause is not throttling that the kernel reported).
fn reason_label(reason: u32) -> &'static str {
    match reason {
        WAIT_THROTTLED => "throttled",
        _ => "contention",
    }
}
