//! kernsight's own health: build, probes, programs, maps.

use std::sync::Arc;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter},
};

use super::{NO_LABELS, encode_counters, encode_gauges, server::Health};
use crate::{
    bpf::{ProbeState, Programs},
    metadata::cgroups::Tracker,
};

#[derive(Debug)]
pub struct AgentCollector {
    programs: Arc<Programs>,
    health: Arc<Health>,
    tracker: Arc<Tracker>,
}

impl AgentCollector {
    pub fn new(programs: Arc<Programs>, health: Arc<Health>, tracker: Arc<Tracker>) -> Self {
        Self { programs, health, tracker }
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
        encode_gauges(
            &mut encoder,
            "kernsight_probe_info",
            "Which implementation of each probe family this kernel runs (a fallback where it lacks a \
             feature: cgroup_id_hash, thread_id_lru, fexit); the value is always 1",
            probes.iter().map(|p| ([("probe", p.name), ("implementation", p.implementation)], 1)),
        )?;
        encode_gauges(
            &mut encoder,
            "kernsight_probe_supported",
            "Whether this kernel can run a probe family (0: a feature it needs is missing, see the log \
             or `kernsight check`; the agent is ready without it)",
            probes
                .iter()
                .map(|p| ([("probe", p.name)], i64::from(!matches!(p.state, ProbeState::Unsupported(_))))),
        )?;
        encode_gauges(
            &mut encoder,
            "kernsight_probe_enabled",
            "Whether a probe family is enabled in the configuration (1) or disabled (0)",
            probes.iter().map(|p| ([("probe", p.name)], i64::from(p.state != ProbeState::Disabled))),
        )?;
        let attached = crate::bpf::attached_programs(probes).len();
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
        encode_gauges(
            &mut encoder,
            "kernsight_bpf_map_memory_bytes",
            "Kernel memory of each eBPF map, per-CPU copies included (the kernel's memlock figure)",
            self.programs.map_memory().into_iter().map(|(map, bytes)| ([("map", map)], bytes as i64)),
        )?;
        let plan = self.programs.map_plan();
        encode_gauges(
            &mut encoder,
            "kernsight_bpf_map_budget_bytes",
            "Kernel memory the eBPF maps may take (config: bpf.map_memory_budget_mebibytes)",
            [(NO_LABELS, plan.budget_bytes as i64)],
        )?;
        encode_gauges(
            &mut encoder,
            "kernsight_bpf_map_planned_bytes",
            "Kernel memory planned for the eBPF maps at start-up, for this node's possible CPUs, after the budget lowered bounds",
            [(NO_LABELS, plan.total_bytes() as i64)],
        )?;
        encode_gauges(
            &mut encoder,
            "kernsight_bpf_map_budget_shrunk_bound",
            "A map bound the memory budget lowered, by config key: the value the agent runs with",
            plan.shrunk.iter().map(|s| ([("key", s.key)], i64::from(s.to))),
        )?;
        let map_rows = self.programs.map_rows();
        encode_gauges(
            &mut encoder,
            "kernsight_bpf_map_entries",
            "Entries in use in a kernsight eBPF map (SYSCALL_ROWS: cgroups with a slot)",
            map_rows.iter().map(|row| ([("map", row.map)], row.entries as i64)),
        )?;
        encode_gauges(
            &mut encoder,
            "kernsight_bpf_map_max_entries",
            "Capacity of a kernsight eBPF map (config: syscalls.max_cgroups, max_error_entries, latency_max_entries, ...)",
            map_rows.iter().map(|row| ([("map", row.map)], i64::from(row.capacity))),
        )?;
        encode_counters(
            &mut encoder,
            "kernsight_bpf_map_read_errors",
            "Map entries that could not be read during a scrape",
            [(NO_LABELS, self.programs.read_errors())],
        )?;
        self.encode_program_runs(&mut encoder)?;
        encode_counters(
            &mut encoder,
            "kernsight_bpf_program_recursion_misses",
            "Runs of each kernsight program the kernel skipped because a BPF program was already running on that CPU (events not counted)",
            self.programs
                .recursion_misses()
                .into_iter()
                .map(|(program, misses)| ([("program", program)], misses)),
        )?;
        self.encode_scrapes(&mut encoder)?;
        self.encode_cgroup_tracking(&mut encoder)
    }
}

impl AgentCollector {
    /// Exported only while the kernel's BPF statistics are on (`bpf.program_stats`).
    fn encode_program_runs(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(runs) = self.programs.program_runs() else { return Ok(()) };
        let mut family = encoder.encode_descriptor(
            "kernsight_bpf_program_run_seconds",
            "Time the kernel spent running each kernsight program (BPF statistics)",
            None,
            MetricType::Counter,
        )?;
        for (program, time, _) in &runs {
            ConstCounter::new(time.as_secs_f64()).encode(family.encode_family(&[("program", *program)])?)?;
        }
        encode_counters(
            encoder,
            "kernsight_bpf_program_runs",
            "Runs of each kernsight program (BPF statistics)",
            runs.iter().map(|(program, _, runs)| ([("program", *program)], *runs)),
        )
    }

    fn encode_scrapes(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = &self.health.scrapes;
        let load =
            |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
        encode_counters(
            encoder,
            "kernsight_scrapes",
            "Responses to /metrics served (this one not yet counted)",
            [(NO_LABELS, load(&stats.count))],
        )?;
        let mut family = encoder.encode_descriptor(
            "kernsight_scrape_duration_seconds",
            "Time spent reading the maps and encoding /metrics responses, summed (divide by kernsight_scrapes_total)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(load(&stats.nanos) as f64 / 1e9).encode(family.encode_family(&NO_LABELS)?)?;
        let mut family = encoder.encode_descriptor(
            "kernsight_scrape_collector_duration_seconds",
            "Time each collector took in those responses, summed: where a scrape's time goes (cgroupfs and /proc reads, map reads, encoding)",
            None,
            MetricType::Counter,
        )?;
        for (collector, nanos) in stats.by_collector() {
            let labels = [("collector", collector)];
            ConstCounter::new(nanos as f64 / 1e9).encode(family.encode_family(&labels)?)?;
        }
        encode_counters(
            encoder,
            "kernsight_scrape_reads_ahead",
            "Reads of cgroupfs and /proc made shortly before a scrape was due, for it to find them cached (scrapers at a steady interval)",
            [(NO_LABELS, load(&stats.read_ahead.reads))],
        )?;
        encode_counters(
            encoder,
            "kernsight_scrape_reads_ahead_late",
            "Reads ahead still reading when the scrape they were for was due: that scrape waited for them or read some files itself",
            [(NO_LABELS, load(&stats.read_ahead.late))],
        )?;
        let mut family = encoder.encode_descriptor(
            "kernsight_scrape_read_ahead_duration_seconds",
            "Time those reads took, summed: scrape time moved before the scrape",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(load(&stats.read_ahead.nanos) as f64 / 1e9)
            .encode(family.encode_family(&NO_LABELS)?)?;
        encode_gauges(
            encoder,
            "kernsight_scrape_series",
            "Samples in the previous /metrics response (watch it for cardinality growth)",
            [(NO_LABELS, load(&stats.series) as i64)],
        )
    }

    fn encode_cgroup_tracking(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let load =
            |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
        let tracker = &self.tracker;
        let (entries, walks, forgotten_early) = {
            let index = tracker.index();
            (index.len(), index.walks(), index.removals_forgotten_early())
        };
        encode_gauges(
            encoder,
            "kernsight_cgroup_index_entries",
            "cgroup id to path entries the agent holds (removed cgroups included until they expire)",
            [(NO_LABELS, entries as i64)],
        )?;
        encode_counters(
            encoder,
            "kernsight_cgroup_removals_forgotten_early",
            "Removed cgroups forgotten before syscalls.forget_after_seconds because 65,536 removals were kept (cgroups created and removed faster than that many per grace period)",
            [(NO_LABELS, forgotten_early)],
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
            "Full walks of the cgroup hierarchies (start-up, lost events, ids no lookup named; at most one per metadata.cgroup_walk_interval_milliseconds)",
            [(NO_LABELS, walks)],
        )?;
        let resolve = &tracker.resolve;
        encode_counters(
            encoder,
            "kernsight_cgroup_walk_requests",
            "Walks of the cgroup hierarchies asked for (an id no lookup named, lost events)",
            [(NO_LABELS, load(&resolve.walk_requests))],
        )?;
        encode_counters(
            encoder,
            "kernsight_cgroup_walk_requests_coalesced",
            "Walk requests answered by a walk another request caused (the debounce at work)",
            [(NO_LABELS, load(&resolve.walk_requests_coalesced))],
        )?;
        encode_counters(
            encoder,
            "kernsight_cgroup_handle_lookups",
            "cgroup ids no lifecycle event named, looked up by file handle: found, gone (removed), unknown (refused: a walk decides)",
            [
                ([("result", "found")], load(&resolve.handle_found)),
                ([("result", "gone")], load(&resolve.handle_gone)),
                ([("result", "unknown")], load(&resolve.handle_unknown)),
            ],
        )?;
        self.encode_rings(encoder)
    }

    fn encode_rings(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rings = self.programs.rings();
        encode_counters(
            encoder,
            "kernsight_decode_errors",
            "Malformed records from the kernel, counted and skipped",
            rings.iter().map(|ring| ([("source", ring.name)], ring.decode_errors())),
        )?;
        encode_counters(
            encoder,
            "kernsight_ring_buffer_events",
            "Records read from each ring buffer (malformed ones included)",
            rings.iter().map(|ring| ([("ring", ring.name)], ring.read())),
        )?;
        encode_counters(
            encoder,
            "kernsight_ring_buffer_lost_events",
            "Records the kernel could not queue because the ring buffer was full (counted in the kernel)",
            rings.iter().map(|ring| ([("ring", ring.name)], ring.lost())),
        )
    }
}
