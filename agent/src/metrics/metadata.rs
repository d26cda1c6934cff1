//! How well attribution works: lookups by source, their latency, and the caches' sizes; and
//! `kernsight_pod_info`, one series per known pod to join workload, node and pod labels on.

use std::{
    borrow::Cow,
    sync::{Arc, atomic::Ordering},
};

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::{encode_counters, encode_gauges};
use crate::metadata::{
    api::store::PodStore,
    identity::{OwnerSource, Resolver, Source},
};

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
            "kernsight_workload_owner_source",
            "Owners given to containers, by source: api (the pod watch of metadata.api_watch, including \
             corrections of owners first taken from labels) or cri (the labels kubelet copies into the sandbox: \
             the watch is off, the API does not know the pod yet, or is unreachable)",
            OwnerSource::ALL
                .into_iter()
                .map(|source| ([("source", source.name())], self.resolver.owners_from(source))),
        )?;
        if let Some(pods) = self.resolver.api_pods() {
            encode_api(&mut encoder, pods)?;
        }
        encode_counters(
            &mut encoder,
            "kernsight_metadata_cache_evictions",
            "Container identities dropped because metadata.max_containers was reached (they are asked for again when seen)",
            [([("cache", "containers")], self.resolver.evictions())],
        )
    }
}

/// The pod watch's requests and store (only when `metadata.api_watch` is on).
fn encode_api(encoder: &mut DescriptorEncoder, pods: &PodStore) -> Result<(), std::fmt::Error> {
    let stats = &pods.stats;
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    encode_counters(
        encoder,
        "kernsight_kubernetes_api_requests",
        "List and watch requests of the pod watch, by result",
        [
            ("list", "ok", &stats.list_ok),
            ("list", "error", &stats.list_error),
            ("watch", "ok", &stats.watch_ok),
            ("watch", "error", &stats.watch_error),
        ]
        .map(|(request, result, counter)| ([("request", request), ("result", result)], load(counter))),
    )?;
    encode_counters(
        encoder,
        "kernsight_kubernetes_api_relists",
        "Watches the API ended with 410 Gone (resourceVersion too old), each followed by a full list",
        [(super::NO_LABELS, load(&stats.gone))],
    )?;
    encode_gauges(
        encoder,
        "kernsight_kubernetes_api_pods",
        "Pods of this node the watch knows an owner for",
        [(super::NO_LABELS, pods.len() as i64)],
    )?;
    encode_counters(
        encoder,
        "kernsight_kubernetes_api_pods_rejected",
        "Pods the API sent that were not kept: beyond metadata.api_max_pods, or with a uid or owner name \
         longer than Kubernetes allows",
        [(super::NO_LABELS, pods.rejected())],
    )
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
                    pod_uid: format!("uid-{pod}"),
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
