//! Prometheus metrics: collectors that read the kernel's maps on each scrape, and the HTTP
//! endpoint that serves them.

mod agent;
mod block_io;
mod capabilities;
pub mod client;
mod conntrack;
mod dns;
mod escape;
pub mod exposition;
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
mod read_ahead;
mod resources;
mod runqueue;
mod seccomp_drift;
mod series;
pub mod server;
mod syscalls;
mod text;
mod ttl_cache;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

pub use read_ahead::Scrapes;
pub(crate) use series::{EncodedLabels, LabelNames, Series};

use crate::{
    bpf::Programs,
    bpf::oom::OomKills,
    metadata::{cgroups::Tracker, identity::Resolver},
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

/// Builds the exposition: every collector shares the loaded programs, the cgroup index and the
/// workload resolver.
pub fn exposition(
    config: &crate::config::Config,
    programs: Arc<Programs>,
    health: Arc<server::Health>,
    tracker: Arc<Tracker>,
    resolver: Arc<Resolver>,
    kills: Arc<OomKills>,
) -> exposition::Exposition {
    let mut exposition = exposition::Exposition::default();
    let timed = |name: &'static str, collector: Arc<dyn Collector>| {
        exposition::Source::Encoded(Box::new(Timed { collector, nanos: health.scrapes.collector(name) }))
    };
    let written = |name: &'static str, collector: Arc<dyn text::TextCollector>| {
        exposition::Source::Written(Box::new(Timed { collector, nanos: health.scrapes.collector(name) }))
    };
    // What reads cgroupfs or `/proc` on a scrape, to read ahead of the next one.
    let mut readers: Vec<Arc<dyn read_ahead::ReadAhead>> = Vec::new();
    exposition.add(timed("metadata", Arc::new(metadata::MetadataCollector::new(resolver.clone()))));
    // Where the cgroup hierarchies are, read once: they are mounted before any container runs.
    // One cache of where each cgroup's files are serves both collectors that read them.
    let mounts = crate::kernel::mountinfo::read().unwrap_or_default();
    let locations = Arc::new(ttl_cache::Locations::new(mounts));
    let resources =
        Arc::new(resources::ResourceCollector::new(tracker.clone(), resolver.clone(), locations.clone()));
    exposition.add(written("resources", resources.clone()));
    readers.push(resources);
    let oom = Arc::new(oom::OomCollector::new(
        kills,
        programs.clone(),
        tracker.clone(),
        resolver.clone(),
        locations,
    ));
    exposition.add(timed("oom", oom.clone()));
    readers.push(oom);
    let posture = Arc::new(posture::PostureCache::new());
    let drift = config
        .security
        .seccomp_drift
        .then(|| seccomp_drift::SeccompDrift::new(&config.security, resolver.clone(), posture.clone()));
    exposition.add(written(
        "syscalls",
        Arc::new(syscalls::SyscallCollector::new(programs.clone(), tracker.clone(), resolver.clone(), drift)),
    ));
    exposition.add(written(
        "runqueue",
        Arc::new(runqueue::RunqueueCollector::new(programs.clone(), tracker.clone(), resolver.clone())),
    ));
    exposition.add(timed(
        "processes",
        Arc::new(processes::ProcessesCollector::new(programs.clone(), tracker.clone(), resolver.clone())),
    ));
    exposition.add(timed(
        "memory_reclaim",
        Arc::new(memory_reclaim::ReclaimCollector::new(programs.clone(), tracker.clone(), resolver.clone())),
    ));
    exposition.add(timed(
        "block_io",
        Arc::new(block_io::BlockIoCollector::new(
            programs.clone(),
            tracker.clone(),
            resolver.clone(),
            config.block_io.max_devices,
        )),
    ));
    exposition.add(timed(
        "dns",
        Arc::new(dns::DnsCollector::new(programs.clone(), tracker.clone(), resolver.clone())),
    ));
    // Drop reason names as this kernel numbers them; without them, drops are labelled reason_N.
    // A kernel before 5.17 has no reasons to name (its drops count as NOT_SPECIFIED).
    let format = config.paths.tracefs.join("events/skb/kfree_skb/format");
    let drop_reasons = crate::kernel::tracefs_symbols::read(&format, "reason").unwrap_or_else(|why| {
        tracing::warn!("drop reasons will be labelled by number: {why}");
        Default::default()
    });
    exposition.add(timed(
        "net",
        Arc::new(net::NetCollector::new(programs.clone(), tracker.clone(), resolver.clone(), drop_reasons)),
    ));
    if config.network.conntrack {
        let namespaces = net_counters::namespaces(config);
        let filter = crate::label_filter::LabelFilter::new(
            &config.network.interface_include,
            &config.network.interface_exclude,
        );
        if config.network.conntrack_pods {
            exposition.add(timed(
                "conntrack_pods",
                Arc::new(conntrack::PodConntrackCollector::new(
                    &config.network,
                    namespaces.clone(),
                    resolver.clone(),
                    posture.clone(),
                )),
            ));
        }
        exposition.add(timed(
            "net_counters",
            Arc::new(net_counters::NetCountersCollector::new(namespaces, filter)),
        ));
    }
    if config.security.posture {
        exposition.add(written(
            "posture",
            Arc::new(posture::PostureCollector::new(resolver.clone(), posture.clone())),
        ));
    }
    exposition.add(timed(
        "escape",
        Arc::new(escape::EscapeCollector::new(programs.clone(), tracker.clone(), resolver.clone())),
    ));
    exposition.add(timed(
        "capabilities",
        Arc::new(capabilities::CapabilityCollector::new(programs.clone(), tracker.clone(), resolver)),
    ));
    // After the rest: the maps' fill it reports is what the collectors above read in this
    // scrape (`CgroupCounters::map_row`), not a second read of every map.
    exposition.add_after_the_rest(timed(
        "agent",
        Arc::new(agent::AgentCollector::new(programs, health.clone(), tracker)),
    ));
    // The `/proc` walk is read ahead only when something takes it.
    if Arc::strong_count(&posture) > 1 {
        readers.push(posture);
    }
    read_ahead::spawn(health.scrapes.read_ahead.clone(), readers);
    exposition
}

/// A collector whose encode time adds up under its name, for
/// `kernsight_scrape_collector_duration_seconds_total`.
#[derive(Debug)]
struct Timed<C: ?Sized> {
    collector: Arc<C>,
    nanos: Arc<AtomicU64>,
}

impl<C: ?Sized> Timed<C> {
    fn timing<T>(&self, work: impl FnOnce(&C) -> T) -> T {
        let started = Instant::now();
        let result = work(&self.collector);
        self.nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        result
    }
}

impl Collector for Timed<dyn Collector> {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.timing(|collector| collector.encode(encoder))
    }
}

impl text::TextCollector for Timed<dyn text::TextCollector> {
    fn write(&self, text: &mut text::Text) {
        self.timing(|collector| collector.write(text))
    }
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

#[cfg(test)]
mod tests {
    use prometheus_client::{encoding::text::encode, registry::Registry};

    use super::*;
    use crate::metadata::identity::Workload;

    /// A collector of one series.
    #[derive(Debug)]
    struct OneSeries;

    impl prometheus_client::collector::Collector for OneSeries {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            let workload = Workload {
                namespace: "shop".into(),
                pod: "web-0".into(),
                container: "app".into(),
                workload_kind: "StatefulSet".into(),
                workload: "web".into(),
                container_id: "abc".into(),
                cgroup: String::new(),
                pod_labels: vec!["checkout".into(), "say \"hi\"\n".into()],
            };
            let names =
                LabelNames { container_id: true, pod_labels: vec!["label_app".into(), "label_note".into()] };
            let series = Series::of(&workload, &names).with("syscall", "read").with("errno", "EPERM");
            encode_counters(&mut encoder, "test_calls", "calls", [(series, 3)])
        }
    }

    /// A collector that takes 20 ms.
    #[derive(Debug)]
    struct Slow;

    impl prometheus_client::collector::Collector for Slow {
        fn encode(&self, _: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            std::thread::sleep(std::time::Duration::from_millis(20));
            Ok(())
        }
    }

    #[test]
    fn a_collectors_time_adds_up_under_its_name() {
        let stats = server::ScrapeStats::default();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Timed {
            collector: Arc::new(Slow) as Arc<dyn Collector>,
            nanos: stats.collector("slow"),
        }));
        registry.register_collector(Box::new(Timed {
            collector: Arc::new(OneSeries) as Arc<dyn Collector>,
            nanos: stats.collector("one"),
        }));
        for _ in 0..2 {
            encode(&mut String::new(), &registry).unwrap();
        }
        let by_collector = stats.by_collector();
        assert_eq!(by_collector.iter().map(|(name, _)| *name).collect::<Vec<_>>(), ["slow", "one"]);
        assert!(by_collector[0].1 >= 40_000_000, "two encodes of 20 ms: {by_collector:?}");
        assert!(by_collector[1].1 < by_collector[0].1, "{by_collector:?}");
    }
}
