//! Prometheus metrics: collectors that read the kernel's maps on each scrape, and the HTTP
//! endpoint that serves them.

mod agent;
pub mod server;
mod syscalls;

use std::sync::Arc;

use crate::{bpf::Programs, metadata::cgroups::Tracker};
use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

/// Builds the registry: every collector shares the loaded programs and the cgroup index.
pub fn registry(programs: Arc<Programs>, health: Arc<server::Health>, tracker: Arc<Tracker>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(agent::AgentCollector::new(
        programs.clone(),
        health,
        tracker.clone(),
    )));
    registry.register_collector(Box::new(syscalls::SyscallCollector::new(programs, tracker)));
    registry
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
