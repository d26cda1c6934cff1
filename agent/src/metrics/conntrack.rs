//! conntrack per pod: `kernsight_pod_conntrack_entries` (the pod network namespace's own
//! table), `kernsight_pod_conntrack_events_total` (its statistics: insert failures, drops,
//! early drops, invalid packets), `kernsight_pod_conntrack_node_entries` (entries of the node's
//! tables whose original source is one of the pod's addresses: what the pod costs the node's
//! table, SNAT and Service traffic included) and `kernsight_conntrack_snat_entries`
//! (the node tables' translated entries, for their busiest destinations).
//!
//! Pods are found from the containers' processes (the posture walk of `/proc`): one series per
//! network namespace that is not the host's, labelled with its pod (or, outside Kubernetes,
//! with its first container). A pod's namespace is read through `/proc/PID/net` (no ptrace
//! access or CAP_SYS_ADMIN needed); each node table is dumped once a reading. Readings happen
//! on a thread of their own (`refresh`): a scrape serves the latest and never waits for a dump.

mod refresh;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, gauge::ConstGauge},
};

use super::{LabelNames, NO_LABELS, Series, encode_counters, encode_gauges, posture::PostureCache};
use crate::metadata::identity::{Resolver, Workload};

#[derive(Debug)]
pub struct PodConntrackCollector {
    resolver: Arc<Resolver>,
    latest: Arc<Mutex<refresh::Latest>>,
}

impl PodConntrackCollector {
    /// Starts the readings (`refresh`).
    pub(crate) fn new(
        config: &crate::config::NetworkConfig,
        node_namespaces: Vec<String>,
        resolver: Arc<Resolver>,
        posture: Arc<PostureCache>,
    ) -> Self {
        let latest = refresh::start(refresh::Reader {
            resolver: resolver.clone(),
            posture,
            node_namespaces,
            max_entries: config.conntrack_dump_max_entries,
            max_pods: config.conntrack_max_pods as usize,
            proc_root: crate::posture::proc_root(),
        });
        Self { resolver, latest }
    }
}

impl Collector for PodConntrackCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let names = LabelNames::of(&self.resolver);
        let (reading, counts) = {
            let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
            (latest.reading.clone(), latest.counts)
        };
        let (truncated, failed, skipped) = (counts.truncated_dumps, counts.failed_dumps, counts.skipped_pods);
        // Two namespaces can carry one pod's labels (a sandbox being replaced): their series
        // are summed, never repeated.
        let mut entries: BTreeMap<&Workload, u64> = BTreeMap::new();
        let mut events: BTreeMap<(&Workload, &str), u64> = BTreeMap::new();
        let mut node: BTreeMap<(&Workload, &str), u64> = BTreeMap::new();
        for pod in &reading.pods {
            let workload = &pod.workload;
            if let Some(n) = pod.entries {
                *entries.entry(workload).or_default() += n;
            }
            for (event, n) in &pod.events {
                *events.entry((workload, event)).or_default() += n;
            }
            for (netns, n) in &pod.node_entries {
                *node.entry((workload, netns)).or_default() += n;
            }
        }
        encode_gauges(
            &mut encoder,
            "kernsight_pod_conntrack_entries",
            "Entries in the conntrack table of the pod's own network namespace (its nf_conntrack_count; the table's bound is the node's nf_conntrack_max)",
            entries.iter().map(|(workload, &n)| (Series::of(workload, &names), n as i64)),
        )?;
        encode_counters(
            &mut encoder,
            "kernsight_pod_conntrack_events",
            "conntrack statistics of the pod's network namespace (/proc/net/stat/nf_conntrack, summed over CPUs): insert_failed, drop and early_drop are connections the table refused or evicted",
            events
                .iter()
                .map(|((workload, event), &n)| (Series::of(workload, &names).with("event", event), n)),
        )?;
        encode_gauges(
            &mut encoder,
            "kernsight_pod_conntrack_node_entries",
            "Entries of the node's conntrack table (netns: \"\" the agent's, else a configured one) whose original source is one of the pod's addresses",
            node.iter()
                .map(|((workload, netns), &n)| (Series::of(workload, &names).with("netns", netns), n as i64)),
        )?;
        let protocol = |p: u8| match i32::from(p) {
            libc::IPPROTO_TCP => "tcp".to_owned(),
            libc::IPPROTO_UDP => "udp".to_owned(),
            libc::IPPROTO_SCTP => "sctp".to_owned(),
            other => other.to_string(),
        };
        encode_gauges(
            &mut encoder,
            "kernsight_conntrack_snat_entries",
            "Entries of a node conntrack table whose source was translated (SNAT, masquerade), for the 10 busiest (source, destination, port, protocol): the NAT has ~64k source ports for each",
            reading.translated.iter().flat_map(|(netns, busiest)| {
                busiest.iter().map(move |(d, n)| {
                    (
                        [
                            ("netns", netns.clone()),
                            ("source", d.translated_source.to_string()),
                            ("destination", d.address.to_string()),
                            ("port", d.port.to_string()),
                            ("protocol", protocol(d.protocol)),
                        ],
                        *n as i64,
                    )
                })
            }),
        )?;
        encode_counters(
            &mut encoder,
            "kernsight_conntrack_dumps_truncated",
            "Dumps of a node conntrack table that stopped at network.conntrack_dump_max_entries: the attribution to pods was partial",
            [(NO_LABELS, truncated)],
        )?;
        encode_counters(
            &mut encoder,
            "kernsight_conntrack_dumps_failed",
            "Dumps of a node conntrack table that failed (no nf_conntrack_netlink, no CAP_NET_ADMIN, a namespace gone)",
            [(NO_LABELS, failed)],
        )?;
        let mut family = encoder.encode_descriptor(
            "kernsight_conntrack_reading_seconds",
            "How long the last reading of the pods' namespaces and the node's conntrack tables took (its dumps run on a thread of their own; the next reading comes 20 times as long later, 10 s at least)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(counts.last_reading.as_secs_f64()).encode(family.encode_family(&NO_LABELS)?)?;
        encode_counters(
            &mut encoder,
            "kernsight_conntrack_pods_skipped",
            "Pod network namespaces left unread because network.conntrack_max_pods were read already",
            [(NO_LABELS, skipped)],
        )
    }
}
