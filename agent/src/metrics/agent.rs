//! kernsight's own health: build, probes, programs, maps.

use std::sync::Arc;

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::{encode_counters, encode_gauges, server::Health};
use crate::bpf::{ProbeState, Programs};

#[derive(Debug)]
pub struct AgentCollector {
    programs: Arc<Programs>,
    health: Arc<Health>,
}

impl AgentCollector {
    pub fn new(programs: Arc<Programs>, health: Arc<Health>) -> Self {
        Self { programs, health }
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
        )
    }
}
