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
//! access or CAP_SYS_ADMIN needed); each node table is dumped once a refresh. A refresh serves
//! the scrapes of the next `REFRESH` seconds.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::{
    LabelNames, LabelSet, NO_LABELS, encode_counters, encode_gauges, posture::PostureCache, workload_labels,
};
use crate::{
    kernel::{conntrack, netns},
    metadata::identity::{Resolver, Workload},
    posture::ContainerPosture,
};

/// A dump of a busy node's table reads ~100 MB of netlink: at most one per this long.
const REFRESH: Duration = Duration::from_secs(10);

/// Addresses of one pod looked for in the node's tables.
const MAX_ADDRESSES_PER_POD: usize = 16;

#[derive(Debug)]
pub struct PodConntrackCollector {
    resolver: Arc<Resolver>,
    posture: Arc<PostureCache>,
    /// The node's namespaces whose tables are attributed: "" (the agent's own) and the
    /// configured ones.
    node_namespaces: Vec<String>,
    max_entries: u64,
    max_pods: usize,
    proc_root: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last: Option<(Instant, Arc<Reading>)>,
    /// Self metrics, counted since start.
    truncated_dumps: u64,
    failed_dumps: u64,
    skipped_pods: u64,
}

/// One pod network namespace, as last read.
#[derive(Debug, Default)]
struct Pod {
    workload: Workload,
    entries: Option<u64>,
    events: BTreeMap<&'static str, u64>,
    addresses: Vec<IpAddr>,
    /// Node namespace → entries there whose original source is one of `addresses`.
    node_entries: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct Reading {
    pods: Vec<Pod>,
    /// Node namespace → its busiest translated destinations (`TOP_DESTINATIONS`).
    translated: BTreeMap<String, Vec<(conntrack::Destination, u64)>>,
}

/// Translated destinations exported per node namespace: the busiest, where a NAT runs out of
/// source ports first.
const TOP_DESTINATIONS: usize = 10;

impl PodConntrackCollector {
    pub(crate) fn new(
        config: &crate::config::NetworkConfig,
        node_namespaces: Vec<String>,
        resolver: Arc<Resolver>,
        posture: Arc<PostureCache>,
    ) -> Self {
        Self {
            resolver,
            posture,
            node_namespaces,
            max_entries: config.conntrack_dump_max_entries,
            max_pods: config.conntrack_max_pods as usize,
            proc_root: crate::posture::proc_root(),
            state: Mutex::new(State::default()),
        }
    }

    fn reading(&self, state: &mut State) -> Arc<Reading> {
        if let Some((at, reading)) = &state.last
            && at.elapsed() < REFRESH
        {
            return reading.clone();
        }
        let reading = Arc::new(self.read(state));
        state.last = Some((Instant::now(), reading.clone()));
        reading
    }

    fn read(&self, state: &mut State) -> Reading {
        let containers = self.posture.containers();
        let namespaces = pod_namespaces(&self.proc_root, &containers);
        state.skipped_pods += namespaces.len().saturating_sub(self.max_pods) as u64;
        let mut pods: Vec<Pod> = namespaces
            .into_values()
            .take(self.max_pods)
            .map(|(pid, container)| {
                let namespace =
                    conntrack::read_process_namespace(&self.proc_root, pid, MAX_ADDRESSES_PER_POD);
                Pod {
                    workload: pod_workload(self.resolver.workload(&container.cgroup)),
                    entries: namespace.entries,
                    events: namespace.events,
                    addresses: namespace.addresses,
                    node_entries: BTreeMap::new(),
                }
            })
            .collect();

        let by_address: HashMap<IpAddr, usize> =
            pods.iter().enumerate().flat_map(|(i, pod)| pod.addresses.iter().map(move |a| (*a, i))).collect();
        let wanted: HashSet<IpAddr> = by_address.keys().copied().collect();
        let mut translated = BTreeMap::new();
        for namespace in &self.node_namespaces {
            let dump = || conntrack::count_table(&wanted, self.max_entries);
            let result = if namespace.is_empty() {
                dump()
            } else {
                netns::run_in(&netns::path_of(namespace), dump)
                    .unwrap_or_else(|err| Err(std::io::Error::other(err.to_string())))
            };
            match result {
                Ok(counts) => {
                    state.truncated_dumps += u64::from(counts.truncated);
                    for pod in &mut pods {
                        pod.node_entries.insert(namespace.clone(), 0);
                    }
                    for (address, count) in counts.by_source {
                        *pods[by_address[&address]].node_entries.entry(namespace.clone()).or_default() +=
                            count;
                    }
                    let mut busiest: Vec<(conntrack::Destination, u64)> =
                        counts.translated.into_iter().collect();
                    busiest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                    busiest.truncate(TOP_DESTINATIONS);
                    translated.insert(namespace.clone(), busiest);
                }
                Err(err) => {
                    state.failed_dumps += 1;
                    tracing::debug!("conntrack dump of netns {namespace:?}: {err}");
                }
            }
        }
        Reading { pods, translated }
    }
}

/// The pod network namespaces of these containers, by `conntrack::namespace_key`: a process in
/// each (the first container's, in container id order) and that container. Containers in the
/// host's namespace (pid 1's) or the agent's are left out.
fn pod_namespaces<'a>(
    proc_root: &Path,
    containers: &'a [ContainerPosture],
) -> BTreeMap<u64, (u32, &'a ContainerPosture)> {
    let node: Vec<u64> =
        [1, std::process::id()].iter().filter_map(|pid| conntrack::namespace_key(proc_root, *pid)).collect();
    let mut sorted: Vec<&ContainerPosture> = containers.iter().collect();
    sorted.sort_by(|a, b| a.container_id.cmp(&b.container_id));
    let mut namespaces = BTreeMap::new();
    for container in sorted {
        let Some((key, pid)) =
            container.pids.iter().find_map(|pid| Some((conntrack::namespace_key(proc_root, *pid)?, *pid)))
        else {
            continue;
        };
        if !node.contains(&key) {
            namespaces.entry(key).or_insert((pid, container));
        }
    }
    namespaces
}

/// A pod's containers share its network namespace: its series are the pod's (no container,
/// no cgroup). A container outside Kubernetes keeps its own labels.
fn pod_workload(mut workload: Workload) -> Workload {
    if !workload.pod.is_empty() {
        workload.container.clear();
        workload.container_id.clear();
        workload.cgroup.clear();
    }
    workload
}

impl Collector for PodConntrackCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let names = LabelNames::of(&self.resolver);
        let (reading, truncated, failed, skipped) = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let reading = self.reading(&mut state);
            (reading, state.truncated_dumps, state.failed_dumps, state.skipped_pods)
        };
        // Two namespaces can carry one pod's labels (a sandbox being replaced): their series
        // are summed, never repeated.
        let mut entries: BTreeMap<LabelSet, u64> = BTreeMap::new();
        let mut events: BTreeMap<LabelSet, u64> = BTreeMap::new();
        let mut node: BTreeMap<LabelSet, u64> = BTreeMap::new();
        for pod in &reading.pods {
            let labels = workload_labels(&pod.workload, &names, []);
            if let Some(n) = pod.entries {
                *entries.entry(labels.clone()).or_default() += n;
            }
            for (event, n) in &pod.events {
                *events.entry(with(labels.clone(), "event", event)).or_default() += n;
            }
            for (netns, n) in &pod.node_entries {
                *node.entry(with(labels.clone(), "netns", netns)).or_default() += n;
            }
        }
        encode_gauges(
            &mut encoder,
            "kernsight_pod_conntrack_entries",
            "Entries in the conntrack table of the pod's own network namespace (its nf_conntrack_count; the table's bound is the node's nf_conntrack_max)",
            entries.into_iter().map(|(l, n)| (l, n as i64)),
        )?;
        encode_counters(
            &mut encoder,
            "kernsight_pod_conntrack_events",
            "conntrack statistics of the pod's network namespace (/proc/net/stat/nf_conntrack, summed over CPUs): insert_failed, drop and early_drop are connections the table refused or evicted",
            events,
        )?;
        encode_gauges(
            &mut encoder,
            "kernsight_pod_conntrack_node_entries",
            "Entries of the node's conntrack table (netns: \"\" the agent's, else a configured one) whose original source is one of the pod's addresses",
            node.into_iter().map(|(l, n)| (l, n as i64)),
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
        encode_counters(
            &mut encoder,
            "kernsight_conntrack_pods_skipped",
            "Pod network namespaces left unread because network.conntrack_max_pods were read already",
            [(NO_LABELS, skipped)],
        )
    }
}

fn with(mut labels: LabelSet, name: &'static str, value: &str) -> LabelSet {
    labels.push((name.into(), value.to_owned()));
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_series_carry_no_container_and_a_plain_containers_keep_theirs() {
        let pod = Workload {
            namespace: "shop".into(),
            pod: "web-0".into(),
            container: "nginx".into(),
            cgroup: "/x".into(),
            ..Workload::default()
        };
        let w = pod_workload(pod);
        assert_eq!((w.pod.as_str(), w.container.as_str(), w.cgroup.as_str()), ("web-0", "", ""));
        let plain = Workload { container: "job".into(), ..Workload::default() };
        assert_eq!(pod_workload(plain).container, "job");
    }
}
