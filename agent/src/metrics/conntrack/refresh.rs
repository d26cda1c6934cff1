//! The reading behind the conntrack-per-pod series, on a thread of its own: a dump of a full
//! node table (262,144 entries) takes ~0.8 s, which no scrape should wait for. The thread reads
//! the pods' namespaces and dumps the node tables, publishes the result, and sleeps 20 times
//! as long as the reading took (10 s at least): at most 5 % of a CPU on the busiest node.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use crate::{
    kernel::{conntrack, netns},
    metadata::identity::{Resolver, Workload},
    metrics::posture::PostureCache,
    posture::ContainerPosture,
};

/// The shortest time between two readings.
const MIN_INTERVAL: Duration = Duration::from_secs(10);
/// Sleep this many times as long as a reading took.
const INTERVAL_PER_READING: u32 = 20;
/// Addresses of one pod looked for in the node's tables.
const MAX_ADDRESSES_PER_POD: usize = 16;
/// Translated destinations exported per node namespace: the busiest, where a NAT runs out of
/// source ports first.
const TOP_DESTINATIONS: usize = 10;

/// One pod network namespace, as last read.
#[derive(Debug, Default)]
pub(super) struct Pod {
    pub workload: Workload,
    pub entries: Option<u64>,
    pub events: BTreeMap<&'static str, u64>,
    pub addresses: Vec<IpAddr>,
    /// Node namespace → entries there whose original source is one of `addresses`.
    pub node_entries: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
pub(super) struct Reading {
    pub pods: Vec<Pod>,
    /// Node namespace → its busiest translated destinations (`TOP_DESTINATIONS`).
    pub translated: BTreeMap<String, Vec<(conntrack::Destination, u64)>>,
}

/// Self metrics, counted since start, and the last reading's duration.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct SelfCounts {
    pub truncated_dumps: u64,
    pub failed_dumps: u64,
    pub skipped_pods: u64,
    pub last_reading: Duration,
}

/// What the collector serves: the latest reading (empty until the first one ends).
#[derive(Debug, Default)]
pub(super) struct Latest {
    pub reading: Arc<Reading>,
    pub counts: SelfCounts,
}

#[derive(Debug)]
pub(super) struct Reader {
    pub resolver: Arc<Resolver>,
    pub posture: Arc<PostureCache>,
    /// The node's namespaces whose tables are attributed: "" (the agent's own) and the
    /// configured ones.
    pub node_namespaces: Vec<String>,
    pub max_entries: u64,
    pub max_pods: usize,
    pub proc_root: PathBuf,
}

/// Starts the thread; it ends at its next wake-up once the returned value is dropped.
pub(super) fn start(reader: Reader) -> Arc<Mutex<Latest>> {
    let latest = Arc::new(Mutex::new(Latest::default()));
    let published: Weak<Mutex<Latest>> = Arc::downgrade(&latest);
    let spawned = std::thread::Builder::new().name("conntrack".into()).spawn(move || {
        let mut tally = SelfCounts::default();
        loop {
            let started = Instant::now();
            let reading = reader.read(&mut tally);
            let took = started.elapsed();
            tally.last_reading = took;
            let Some(latest) = published.upgrade() else { return };
            *latest.lock().unwrap_or_else(|e| e.into_inner()) =
                Latest { reading: Arc::new(reading), counts: tally };
            drop(latest);
            std::thread::sleep((took * INTERVAL_PER_READING).max(MIN_INTERVAL));
        }
    });
    if let Err(err) = spawned {
        tracing::warn!("conntrack per pod is not read: cannot start its thread: {err}");
    }
    latest
}

impl Reader {
    fn read(&self, tally: &mut SelfCounts) -> Reading {
        let containers = self.posture.containers();
        let namespaces = pod_namespaces(&self.proc_root, &containers);
        tally.skipped_pods += namespaces.len().saturating_sub(self.max_pods) as u64;
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
                    tally.truncated_dumps += u64::from(counts.truncated);
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
                    tally.failed_dumps += 1;
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
