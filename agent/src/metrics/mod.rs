//! Prometheus metrics: collectors that read the kernel's maps on each scrape, and the HTTP
//! endpoint that serves them.

mod agent;
mod block_io;
mod capabilities;
pub mod client;
mod conntrack;
mod dns;
mod escape;
pub use capabilities::capability_labels;
mod histogram;
mod memory_reclaim;
mod metadata;
mod naming;
mod net;
mod net_counters;
mod oom;
mod posture;
mod processes;
mod resources;
mod runqueue;
mod seccomp_drift;
pub mod server;
mod syscalls;

use std::{borrow::Cow, sync::Arc};

use crate::{
    bpf::Programs,
    events::oom::OomKills,
    metadata::{
        cgroups::Tracker,
        identity::{Resolver, Workload},
    },
};
use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

/// Builds the registry: every collector shares the loaded programs, the cgroup index and the
/// workload resolver.
pub fn registry(
    config: &crate::config::Config,
    programs: Arc<Programs>,
    health: Arc<server::Health>,
    tracker: Arc<Tracker>,
    resolver: Arc<Resolver>,
    kills: Arc<OomKills>,
) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(agent::AgentCollector::new(
        programs.clone(),
        health,
        tracker.clone(),
    )));
    registry.register_collector(Box::new(metadata::MetadataCollector::new(resolver.clone())));
    let mounts = crate::kernel::mountinfo::read().unwrap_or_default();
    registry.register_collector(Box::new(resources::ResourceCollector::new(
        tracker.clone(),
        resolver.clone(),
        mounts,
    )));
    registry.register_collector(Box::new(oom::OomCollector::new(
        kills,
        programs.clone(),
        tracker.clone(),
        resolver.clone(),
    )));
    let posture = Arc::new(posture::PostureCache::new());
    let drift = config
        .security
        .seccomp_drift
        .then(|| seccomp_drift::SeccompDrift::new(&config.security, resolver.clone(), posture.clone()));
    registry.register_collector(Box::new(syscalls::SyscallCollector::new(
        programs.clone(),
        tracker.clone(),
        resolver.clone(),
        drift,
    )));
    registry.register_collector(Box::new(runqueue::RunqueueCollector::new(
        programs.clone(),
        tracker.clone(),
        resolver.clone(),
    )));
    registry.register_collector(Box::new(processes::ProcessesCollector::new(
        programs.clone(),
        tracker.clone(),
        resolver.clone(),
    )));
    registry.register_collector(Box::new(memory_reclaim::ReclaimCollector::new(
        programs.clone(),
        tracker.clone(),
        resolver.clone(),
    )));
    registry.register_collector(Box::new(block_io::BlockIoCollector::new(
        programs.clone(),
        tracker.clone(),
        resolver.clone(),
        config.block_io.max_devices,
    )));
    registry.register_collector(Box::new(dns::DnsCollector::new(
        programs.clone(),
        tracker.clone(),
        resolver.clone(),
    )));
    // Drop reason names as this kernel numbers them; without them, drops are labelled reason_N.
    let format = config.paths.tracefs.join("events/skb/kfree_skb/format");
    let drop_reasons = crate::kernel::tracefs_symbols::read(&format, "reason").unwrap_or_else(|why| {
        tracing::warn!("drop reasons will be labelled by number: {why}");
        Default::default()
    });
    registry.register_collector(Box::new(net::NetCollector::new(
        programs.clone(),
        tracker.clone(),
        resolver.clone(),
        drop_reasons,
    )));
    if config.network.conntrack {
        let namespaces = net_counters::namespaces(config);
        let filter = crate::label_filter::LabelFilter::new(
            &config.network.interface_include,
            &config.network.interface_exclude,
        );
        if config.network.conntrack_pods {
            registry.register_collector(Box::new(conntrack::PodConntrackCollector::new(
                &config.network,
                namespaces.clone(),
                resolver.clone(),
                posture.clone(),
            )));
        }
        registry.register_collector(Box::new(net_counters::NetCountersCollector::new(namespaces, filter)));
    }
    if config.security.posture {
        registry.register_collector(Box::new(posture::PostureCollector::new(resolver.clone(), posture)));
    }
    registry.register_collector(Box::new(escape::EscapeCollector::new(
        programs.clone(),
        tracker.clone(),
        resolver.clone(),
    )));
    registry
        .register_collector(Box::new(capabilities::CapabilityCollector::new(programs, tracker, resolver)));
    registry
}

/// The labels of one series, with names known only at run time (pod labels).
type LabelSet = Vec<(Cow<'static, str>, String)>;

/// Which optional workload labels a series carries (config: `metadata.container_id_label`,
/// `metadata.pod_labels`).
pub(crate) struct LabelNames {
    pub container_id: bool,
    pub pod_labels: Vec<String>,
}

impl LabelNames {
    /// What the resolver was configured to add.
    pub(crate) fn of(resolver: &Resolver) -> Self {
        Self { container_id: resolver.container_id_label(), pod_labels: resolver.pod_label_names() }
    }
}

/// A series' workload labels (`namespace`, `pod`, `container`, `workload_kind`, `workload`,
/// `container_id` when enabled, `cgroup`, the chosen pod labels), then its own.
fn workload_labels<const N: usize>(
    workload: &Workload,
    names: &LabelNames,
    own: [(&'static str, String); N],
) -> LabelSet {
    let mut labels = vec![
        ("namespace".into(), workload.namespace.clone()),
        ("pod".into(), workload.pod.clone()),
        ("container".into(), workload.container.clone()),
        ("workload_kind".into(), workload.workload_kind.clone()),
        ("workload".into(), workload.workload.clone()),
    ];
    if names.container_id {
        labels.push(("container_id".into(), workload.container_id.clone()));
    }
    labels.push(("cgroup".into(), workload.cgroup.clone()));
    for (name, value) in names.pod_labels.iter().zip(&workload.pod_labels) {
        labels.push((Cow::Owned(name.clone()), value.clone()));
    }
    labels.extend(own.into_iter().map(|(k, v)| (Cow::Borrowed(k), v)));
    labels
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
