//! How well attribution works: lookups by source, their latency, and the caches' sizes; and
//! `kernsight_pod_info`, one series per known pod to join workload, node and pod labels on.

use std::{
    borrow::Cow,
    sync::{Arc, atomic::Ordering},
};

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::{encode_counters, encode_gauges};
use crate::metadata::identity::{Resolver, Source};

#[derive(Debug)]
pub struct MetadataCollector {
    resolver: Arc<Resolver>,
}

impl MetadataCollector {
    pub fn new(resolver: Arc<Resolver>) -> Self {
        Self { resolver }
    }
}

impl Collector for MetadataCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = |source: Source| self.resolver.stats(source);
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        encode_counters(
            &mut encoder,
            "kernsight_metadata_lookups",
            "Container identities asked of a source, by result (found, not_found, error)",
            Source::ALL.into_iter().flat_map(|source| {
                let s = stats(source);
                [("found", &s.found), ("not_found", &s.not_found), ("error", &s.errors)]
                    .map(|(result, counter)| ([("source", source.name()), ("result", result)], load(counter)))
            }),
        )?;
        encode_counters(
            &mut encoder,
            "kernsight_metadata_untrusted",
            "Processes that claimed to speak for a source and were refused, at each lookup that met them \
             (a conmon not run by root from a root-owned, not world- or group-writable executable, or \
             inside a container's cgroup)",
            Source::ALL
                .into_iter()
                .map(|source| ([("source", source.name())], load(&stats(source).untrusted))),
        )?;
        encode_counters(
            &mut encoder,
            "kernsight_metadata_requests",
            "Requests made to a source (one may name many containers)",
            Source::ALL.into_iter().map(|source| ([("source", source.name())], load(&stats(source).lookups))),
        )?;
        let seconds = |source: Source| load(&stats(source).nanos) as f64 / 1e9;
        let mut family = encoder.encode_descriptor(
            "kernsight_metadata_request_seconds",
            "Time spent in requests to a source; divided by kernsight_metadata_requests_total, the latency",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for source in Source::ALL {
            use prometheus_client::encoding::EncodeMetric as _;
            let counter = prometheus_client::metrics::counter::ConstCounter::new(seconds(source));
            counter.encode(family.encode_family(&[("source", source.name())])?)?;
        }
        encode_gauges(
            &mut encoder,
            "kernsight_metadata_cache_entries",
            "Entries of the attribution caches (containers: named containers; pending: waiting for a source)",
            [
                ([("cache", "containers")], self.resolver.known_len() as i64),
                ([("cache", "pending")], self.resolver.wanted_len() as i64),
            ],
        )?;
        let node = self.resolver.node().to_owned();
        let label_names = self.resolver.pod_label_names();
        encode_gauges(
            &mut encoder,
            "kernsight_pod_info",
            "One series per pod the runtime named: its owning workload (from kubelet's labels on the sandbox), \
             the node and the pod labels of metadata.pod_labels; join on namespace and pod",
            self.resolver.pods().into_iter().map(|(namespace, pod, owner, values)| {
                let mut labels: Vec<(Cow<'static, str>, String)> = vec![
                    ("namespace".into(), namespace),
                    ("pod".into(), pod),
                    ("workload_kind".into(), owner.kind.to_owned()),
                    ("workload".into(), owner.name),
                    ("node".into(), node.clone()),
                ];
                labels.extend(label_names.iter().cloned().map(Cow::Owned).zip(values));
                (labels, 1)
            }),
        )?;
        encode_counters(
            &mut encoder,
            "kernsight_metadata_cache_evictions",
            "Container identities dropped because metadata.max_containers was reached (they are asked for again when seen)",
            [([("cache", "containers")], self.resolver.evictions())],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{identity::ContainerInfo, owner::Owner};

    /// 200 pods of two containers with 10 labels each, 2 of them exported: 200 info series,
    /// each with 5 + 2 labels, whatever the pods' other labels.
    #[test]
    fn pod_info_is_one_series_per_pod_with_only_the_chosen_labels() {
        let resolver = Arc::new(
            Resolver::new(false, vec!["app".into(), "team".into()], 1024).with_node("node-7".into()),
        );
        for pod in 0..200 {
            let mut labels: std::collections::BTreeMap<String, String> =
                (0..8).map(|i| (format!("tenant-label-{i}"), format!("value-{pod}-{i}"))).collect();
            labels.insert("app".into(), format!("app-{pod}"));
            labels.insert("team".into(), "payments".into());
            for container in ["main", "sidecar"] {
                let info = ContainerInfo {
                    container: container.into(),
                    pod: format!("web-{pod}"),
                    namespace: "shop".into(),
                    pod_labels: labels.clone(),
                    owner: Owner { kind: "StatefulSet", name: "web".into() },
                };
                resolver.learn(format!("{pod}-{container}"), info);
            }
        }
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(MetadataCollector::new(resolver)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let info: Vec<&str> = text.lines().filter(|l| l.starts_with("kernsight_pod_info{")).collect();
        assert_eq!(info.len(), 200);
        let first = info.iter().find(|l| l.contains("pod=\"web-17\"")).expect("web-17");
        assert_eq!(
            *first,
            "kernsight_pod_info{namespace=\"shop\",pod=\"web-17\",workload_kind=\"StatefulSet\",workload=\"web\",\
             node=\"node-7\",label_app=\"app-17\",label_team=\"payments\"} 1"
        );
        assert!(!text.contains("tenant"), "labels outside the allowlist are never exported");
    }
}
