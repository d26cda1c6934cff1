//! kernsight's own health: build, probes, programs, maps.

use std::sync::Arc;

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::{NO_LABELS, encode_counters, encode_gauges, server::Health};
use crate::{
    bpf::{ProbeState, Programs},
    metadata::{cgroups::Tracker, oom::OomKills},
};

#[derive(Debug)]
pub struct AgentCollector {
    programs: Arc<Programs>,
    health: Arc<Health>,
    tracker: Arc<Tracker>,
    kills: Arc<OomKills>,
}

impl AgentCollector {
    pub fn new(
        programs: Arc<Programs>,
        health: Arc<Health>,
        tracker: Arc<Tracker>,
        kills: Arc<OomKills>,
    ) -> Self {
        Self { programs, health, tracker, kills }
    }
}

impl Collector for AgentCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_gauges(
            &mut encoder,
            "kernsight_build_info",
            "kernsight build; the value is always 1",
            [([("version", env!("CARGO_PKG_VERSION")), ("arch", std::env::consts::ARCH)], 1)],
        )?;

        let probes = self.health.probes();
        encode_gauges(
            &mut encoder,
            "kernsight_probe_attached",
            "Whether a probe family's programs are attached (1) or not (0: disabled or failed, see the log)",
            probes.iter().map(|p| ([("probe", p.name)], i64::from(p.state == ProbeState::Attached))),
        )?;
        let attached: usize =
            probes.iter().filter(|p| p.state == ProbeState::Attached).map(|p| p.programs.len()).sum();
        encode_gauges(
            &mut encoder,
            "kernsight_bpf_programs_attached",
            "Number of kernsight eBPF programs attached to kernel hooks",
            [(super::NO_LABELS, attached as i64)],
        )?;

        encode_counters(
            &mut encoder,
            "kernsight_bpf_map_full",
            "Map updates that found the map full; their counts went to the series labelled `other`",
            self.programs.map_full_counts().into_iter().map(|(map, n)| ([("map", map)], n)),
        )?;
        self.encode_cgroup_tracking(&mut encoder)
    }
}

impl AgentCollector {
    fn encode_cgroup_tracking(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let load =
            |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
        let tracker = &self.tracker;
        let (entries, walks) = {
            let index = tracker.index();
            (index.len(), index.walks())
        };
        encode_gauges(
            encoder,
            "kernsight_cgroup_index_entries",
            "cgroup id to path entries the agent holds (removed cgroups included until they expire)",
            [(NO_LABELS, entries as i64)],
        )?;
        encode_counters(
            encoder,
            "kernsight_cgroup_events",
            "cgroup lifecycle events applied to the index",
            [
                ([("event", "created")], load(&tracker.created)),
                ([("event", "removed")], load(&tracker.removed)),
            ],
        )?;
        encode_counters(
            encoder,
            "kernsight_cgroup_events_lost",
            "cgroup lifecycle events the kernel could not queue (each loss makes the agent walk cgroupfs)",
            [(NO_LABELS, load(&tracker.lost))],
        )?;
        encode_counters(
            encoder,
            "kernsight_cgroup_walks",
            "Full walks of the cgroup hierarchies (start-up, lost events, unknown ids)",
            [(NO_LABELS, walks)],
        )?;
        encode_counters(
            encoder,
            "kernsight_decode_errors",
            "Malformed records from the kernel, counted and skipped",
            [
                ([("source", "cgroup_events")], load(&tracker.decode_errors)),
                ([("source", "oom_events")], load(&self.kills.decode_errors)),
            ],
        )
    }
}
