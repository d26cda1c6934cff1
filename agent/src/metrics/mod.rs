//! Prometheus metrics: collectors that read the kernel's maps on each scrape, and the HTTP
//! endpoint that serves them.

mod agent;
pub mod server;
mod syscalls;

use std::sync::{Arc, Mutex};

use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use tracing::warn;

use crate::{bpf::Programs, kernel::cgroupfs};

/// Builds the registry: every collector shares the loaded programs.
pub fn registry(
    programs: Programs,
    health: Arc<server::Health>,
    hierarchies: &cgroupfs::Hierarchies,
) -> (Registry, Agent) {
    let programs = Arc::new(programs);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(agent::AgentCollector::new(programs.clone(), health)));

    let index = (hierarchies.unified.is_some() || hierarchies.v1.is_some())
        .then(|| Arc::new(Mutex::new(hierarchies.index())));
    if index.is_none() {
        warn!("no cgroup hierarchy is mounted: syscalls are reported under the root cgroup `/`");
    }
    registry.register_collector(Box::new(syscalls::SyscallCollector::new(programs.clone(), index.clone())));
    (registry, Agent { programs, index })
}

/// What the agent's background tasks share with the collectors.
pub struct Agent {
    pub programs: Arc<Programs>,
    pub index: Option<Arc<Mutex<cgroupfs::CgroupIndex>>>,
}

/// The label set of a metric without labels.
const NO_LABELS: [(&str, &str); 0] = [];

/// Encodes one counter family from (labels, value) rows.
fn encode_counters<L: prometheus_client::encoding::EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Encodes one gauge family from (labels, value) rows.
fn encode_gauges<L: prometheus_client::encoding::EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}
