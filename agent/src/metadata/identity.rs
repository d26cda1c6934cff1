//! cgroup path → workload identity (namespace, pod, container), without ever blocking a scrape
//! on a runtime: the scrape takes what is known and queues the rest; a background task asks the
//! sources (CRI socket, conmon, Docker's files) and fills the cache for the next scrape.

use std::{
    collections::{HashMap, hash_map::Entry},
    path::PathBuf,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::{api::store::PodStore, cgroup_path, owner::Owner};
use crate::{
    label_filter::LabelFilter,
    pod_labels::{MAX_POD_LABEL_VALUE_BYTES, label_name},
};

/// Labels of one workload. Containers have an empty `cgroup`; host processes only a `cgroup`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Workload {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// The pod's owning workload and its kind (`owner::owner`); empty outside Kubernetes.
    pub workload_kind: String,
    pub workload: String,
    /// Only when `metadata.container_id_label` is on (cardinality).
    pub container_id: String,
    pub cgroup: String,
    /// Values of the pod labels `metadata.pod_labels` asks for, in that order ("" if unset).
    pub pod_labels: Vec<String>,
}

/// What a source knows of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    pub container: String,
    pub pod: String,
    pub namespace: String,
    /// The pod's labels (from the CRI sandbox), when a source knows them.
    pub pod_labels: std::collections::BTreeMap<String, String>,
    /// The pod's owning workload, when a source knows the pod is Kubernetes'.
    pub owner: Owner,
    /// The pod's UID (from the CRI), to find the pod in the API's list.
    pub pod_uid: String,
}

/// Where identities come from, for the self metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Cri,
    Conmon,
    Docker,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::Cri, Source::Conmon, Source::Docker];

    pub fn name(self) -> &'static str {
        match self {
            Self::Cri => "cri",
            Self::Conmon => "conmon",
            Self::Docker => "docker",
        }
    }
}

/// Lookups by source: found, not found, failed, and time spent.
#[derive(Debug, Default)]
pub struct SourceStats {
    pub found: AtomicU64,
    pub not_found: AtomicU64,
    pub errors: AtomicU64,
    /// Processes that claimed to speak for the source and were not believed (conmon).
    pub untrusted: AtomicU64,
    pub lookups: AtomicU64,
    pub nanos: AtomicU64,
}

impl SourceStats {
    pub fn timed<T>(&self, lookup: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = lookup();
        self.lookups.fetch_add(1, Ordering::Relaxed);
        self.nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        result
    }
}

#[derive(Debug)]
struct Known {
    info: ContainerInfo,
    last_used: Instant,
}

#[derive(Debug)]
pub struct Resolver {
    known: Mutex<HashMap<String, Known>>,
    /// Container ids seen in a scrape but not known yet, with when one was last asked for. An id
    /// no source can name (a container of a runtime kernsight does not read, or a cgroup a
    /// workload named like one) stays only while it is asked for (`prune`), and at most
    /// `capacity` are awaited: each is looked up again every round.
    wanted: Mutex<HashMap<String, Instant>>,
    pub wake: tokio::sync::Notify,
    stats: HashMap<&'static str, SourceStats>,
    container_id_label: bool,
    /// Pod labels to export (`metadata.pod_labels`).
    pod_labels: Vec<String>,
    capacity: usize,
    /// Identities dropped because the cache was full (idle ones are not counted).
    evictions: std::sync::atomic::AtomicU64,
    pub proc_root: PathBuf,
    pub docker_root: PathBuf,
    /// Which host cgroups keep their path as `cgroup` label (`metadata.host_scope_*`).
    host_scopes: LabelFilter,
    /// The node's name (`NODE_NAME`, from the pod spec's `spec.nodeName`); empty if unknown.
    node: String,
    /// This node's pods as the Kubernetes API knows them, when `metadata.api_watch` is on.
    api_pods: std::sync::OnceLock<Arc<PodStore>>,
    /// Owners given to containers, by where they came from: the API, or the CRI's labels.
    owner_sources: [AtomicU64; 2],
    /// Bumped after each change to `known`: the names `named` keeps were made before it.
    generation: AtomicU64,
    named: super::named::Named,
}

/// Where a container's owner came from (`kernsight_workload_owner_source_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerSource {
    Api = 0,
    Cri = 1,
}

impl OwnerSource {
    pub const ALL: [OwnerSource; 2] = [OwnerSource::Api, OwnerSource::Cri];

    pub fn name(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Cri => "cri",
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Resolver {
    pub fn new(container_id_label: bool, pod_labels: Vec<String>, capacity: usize) -> Self {
        Self {
            known: Mutex::new(HashMap::new()),
            wanted: Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
            stats: Source::ALL.iter().map(|s| (s.name(), SourceStats::default())).collect(),
            container_id_label,
            pod_labels,
            capacity: capacity.max(1),
            evictions: std::sync::atomic::AtomicU64::new(0),
            proc_root: PathBuf::from("/proc"),
            docker_root: PathBuf::from("/var/lib/docker"),
            host_scopes: LabelFilter::default(),
            node: String::new(),
            api_pods: std::sync::OnceLock::new(),
            owner_sources: Default::default(),
            generation: AtomicU64::new(0),
            named: Default::default(),
        }
    }

    /// The node's name, for `kernsight_pod_info` and for the names of static pods.
    pub fn with_node(mut self, node: String) -> Self {
        self.node = node;
        self
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Owners are taken from `pods` (the API watch) for the pods it knows.
    pub fn use_api_pods(&self, pods: Arc<PodStore>) {
        let _ = self.api_pods.set(pods);
    }

    pub fn api_pods(&self) -> Option<&Arc<PodStore>> {
        self.api_pods.get()
    }

    /// The owner of the pod `pod_uid`: the API's when it knows the pod, else `from_labels()`
    /// (the CRI's labels); counted by source.
    pub fn owner_of(&self, pod_uid: &str, from_labels: impl FnOnce() -> Owner) -> Owner {
        let from_api = self.api_pods().and_then(|pods| pods.owner(pod_uid));
        let source = if from_api.is_some() { OwnerSource::Api } else { OwnerSource::Cri };
        self.owner_sources[source as usize].fetch_add(1, Ordering::Relaxed);
        from_api.unwrap_or_else(from_labels)
    }

    /// Gives the containers named before the API knew their pod the API's owner (each change
    /// counted as an owner from the API).
    pub fn correct_owners(&self, pods: &PodStore) {
        let mut known = lock(&self.known);
        for entry in known.values_mut().filter(|k| !k.info.pod_uid.is_empty()) {
            if let Some(owner) = pods.owner(&entry.info.pod_uid)
                && owner != entry.info.owner
            {
                entry.info.owner = owner;
                self.owner_sources[OwnerSource::Api as usize].fetch_add(1, Ordering::Relaxed);
                self.generation.fetch_add(1, Ordering::Release);
            }
        }
    }

    /// Owners given so far from `source`.
    pub fn owners_from(&self, source: OwnerSource) -> u64 {
        self.owner_sources[source as usize].load(Ordering::Relaxed)
    }

    /// Host cgroups left out by `filter` (transient scopes: one per session, `systemd-run`, ...)
    /// are labelled together, by the parent they share (see [`host_cgroup_label`]).
    pub fn with_host_scope_filter(mut self, filter: LabelFilter) -> Self {
        self.host_scopes = filter;
        self
    }

    /// The `cgroup` label of a host cgroup: its path, or for one the filter leaves out, its
    /// parent's path and `*` with the same suffix (`/user.slice/user-0.slice/session-4.scope` →
    /// `/user.slice/user-0.slice/*.scope`): bounded by the parents, not by the scopes that ever
    /// ran.
    pub fn host_cgroup_label(&self, cgroup_path: &str) -> String {
        if self.host_scopes.keeps(cgroup_path) {
            return cgroup_path.to_owned();
        }
        let (parent, name) = cgroup_path.rsplit_once('/').unwrap_or(("", cgroup_path));
        let suffix = name.rfind('.').map_or("", |dot| &name[dot..]);
        format!("{parent}/*{suffix}")
    }

    pub fn container_id_label(&self) -> bool {
        self.container_id_label
    }

    /// The Prometheus label names of the exported pod labels (`app.kubernetes.io/name` →
    /// `label_app_kubernetes_io_name`, as kube-state-metrics names them).
    pub fn pod_label_names(&self) -> Vec<String> {
        self.pod_labels.iter().map(|name| label_name(name)).collect()
    }

    pub fn stats(&self, source: Source) -> &SourceStats {
        // Every source has an entry from `new`.
        &self.stats[source.name()]
    }

    pub fn known_len(&self) -> usize {
        lock(&self.known).len()
    }

    pub fn evictions(&self) -> u64 {
        self.evictions.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn wanted_len(&self) -> usize {
        lock(&self.wanted).len()
    }

    /// The workload a cgroup path belongs to, with what is known now. An unknown container is
    /// named by its short id until a source names it, and queued for the lookup task.
    pub fn workload(&self, cgroup_path: &str) -> Workload {
        let Some(container) = cgroup_path::parse(cgroup_path) else {
            let pod_labels = vec![String::new(); self.pod_labels.len()];
            return Workload {
                cgroup: self.host_cgroup_label(cgroup_path),
                pod_labels,
                ..Workload::default()
            };
        };
        let id = container.container_id;
        let container_id = if self.container_id_label { id.clone() } else { String::new() };
        if let Some(known) = lock(&self.known).get_mut(&id) {
            known.last_used = Instant::now();
            let info = &known.info;
            let pod_labels = self
                .pod_labels
                .iter()
                .map(|name| info.pod_labels.get(name).cloned().unwrap_or_default())
                .collect();
            return Workload {
                namespace: info.namespace.clone(),
                pod: info.pod.clone(),
                container: info.container.clone(),
                workload_kind: info.owner.kind.to_owned(),
                workload: info.owner.name.clone(),
                container_id,
                cgroup: String::new(),
                pod_labels,
            };
        }
        let short = id.get(..12).unwrap_or(&id).to_owned();
        match lock(&self.wanted).entry(id) {
            Entry::Occupied(mut asked) => *asked.get_mut() = Instant::now(),
            Entry::Vacant(new) => {
                new.insert(Instant::now());
                self.wake.notify_one();
            }
        }
        let pod_labels = vec![String::new(); self.pod_labels.len()];
        Workload { container: short, container_id, pod_labels, ..Workload::default() }
    }

    /// `workload(cgroup_path)`, shared with the other collectors of a scrape: named once a
    /// moment (`super::named`) rather than by each.
    pub fn shared_workload(&self, cgroup_path: &str) -> Arc<Workload> {
        let generation = self.generation.load(Ordering::Acquire);
        self.named.get_or_name(cgroup_path, generation, || self.workload(cgroup_path))
    }

    /// Container ids to look up: they stay wanted until a source names them (`learn`) or no
    /// scrape asks for them any more (`prune`).
    pub fn wanted(&self) -> Vec<String> {
        lock(&self.wanted).keys().cloned().collect()
    }

    /// Records what a source knows; returns whether `id` was new. Of the pod's labels only those
    /// `metadata.pod_labels` exports are kept, cut to their bound: the rest are the tenant's to
    /// choose, as many and as long as the API server takes, and were kept for every container
    /// (1.6 MB of the heap at 1,000 containers with two labels a pod, by `heaptrack`).
    pub fn learn(&self, id: String, mut info: ContainerInfo) -> bool {
        info.pod_labels.retain(|key, value| {
            let exported = self.pod_labels.contains(key);
            if exported {
                *value = bounded_value(value);
            }
            exported
        });
        lock(&self.wanted).remove(&id);
        let mut known = lock(&self.known);
        let new = !known.contains_key(&id);
        known.insert(id, Known { info, last_used: Instant::now() });
        self.generation.fetch_add(1, Ordering::Release);
        new
    }

    /// One entry per pod with a known owner: (namespace, pod, owner, the exported pod labels'
    /// values), sorted. Bounded by the container cache (`metadata.max_containers`).
    pub fn pods(&self) -> Vec<(String, String, Owner, Vec<String>)> {
        let known = lock(&self.known);
        let mut pods: Vec<_> = known
            .values()
            .filter(|k| !k.info.owner.kind.is_empty())
            .map(|k| {
                let info = &k.info;
                let labels =
                    self.pod_labels.iter().map(|name| info.pod_labels.get(name).cloned().unwrap_or_default());
                (info.namespace.clone(), info.pod.clone(), info.owner.clone(), labels.collect())
            })
            .collect();
        pods.sort();
        pods.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        pods
    }

    pub fn is_known(&self, id: &str) -> bool {
        lock(&self.known).contains_key(id)
    }

    /// Whether `id` is known with its pod (from the CRI): what the runtime says of a container
    /// holds for its life (kubelet does not change a sandbox's labels), so a listing need not
    /// learn it again. One known only by name (conmon, Docker's files: the CRI was unreachable
    /// then) is not.
    pub fn knows_pod_of(&self, id: &str) -> bool {
        lock(&self.known).get(id).is_some_and(|known| !known.info.pod_uid.is_empty())
    }

    /// Drops identities no scrape asked for within `idle`, then the least recently used ones
    /// beyond the capacity; and the same of the ids awaiting a name.
    pub fn prune(&self, idle: Duration) {
        self.prune_wanted(idle);
        let mut known = lock(&self.known);
        let now = Instant::now();
        let before = known.len();
        known.retain(|_, k| now.duration_since(k.last_used) < idle);
        if known.len() != before {
            self.generation.fetch_add(1, Ordering::Release);
        }
        let excess = drop_oldest(&mut known, self.capacity, |k| k.last_used);
        if excess > 0 {
            self.generation.fetch_add(1, Ordering::Release);
            self.evictions.fetch_add(excess as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The ids awaiting a name that a scrape asked for within `idle`, at most `capacity` of
    /// them (the most recently asked).
    fn prune_wanted(&self, idle: Duration) {
        let mut wanted = lock(&self.wanted);
        let now = Instant::now();
        wanted.retain(|_, asked| now.duration_since(*asked) < idle);
        drop_oldest(&mut wanted, self.capacity, |asked| *asked);
        wanted.shrink_to(self.capacity);
    }
}

/// Removes the entries of `map` beyond `capacity`, oldest `used` first; returns how many.
fn drop_oldest<V>(map: &mut HashMap<String, V>, capacity: usize, used: impl Fn(&V) -> Instant) -> usize {
    let excess = map.len().saturating_sub(capacity);
    if excess > 0 {
        let mut by_age: Vec<(Instant, String)> = map.iter().map(|(id, v)| (used(v), id.clone())).collect();
        by_age.sort();
        for (_, id) in by_age.into_iter().take(excess) {
            map.remove(&id);
        }
    }
    excess
}

/// `value` cut to [`MAX_POD_LABEL_VALUE_BYTES`] at a character boundary.
fn bounded_value(value: &str) -> String {
    let mut end = value.len().min(MAX_POD_LABEL_VALUE_BYTES);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "ddfe954b7c5389fb914bcba5682a287b5b95753dc71125d781046580e741991c";

    #[test]
    fn transient_host_scopes_share_their_parents_label() {
        let filter = LabelFilter::new(
            &["/system.slice/keep-*.scope".into()],
            &["/system.slice/*.scope".into(), "/user.slice/*.scope".into()],
        );
        let resolver = Resolver::new(false, Vec::new(), 16).with_host_scope_filter(filter);
        let label = |path: &str| resolver.workload(path).cgroup;
        assert_eq!(label("/user.slice/user-0.slice/session-4.scope"), "/user.slice/user-0.slice/*.scope");
        assert_eq!(label("/user.slice/user-0.slice/session-5.scope"), "/user.slice/user-0.slice/*.scope");
        assert_eq!(label("/system.slice/run-r3b2.scope"), "/system.slice/*.scope");
        assert_eq!(label("/system.slice/keep-me.scope"), "/system.slice/keep-me.scope");
        assert_eq!(label("/system.slice/sshd.service"), "/system.slice/sshd.service");
        assert_eq!(label("/init.scope"), "/init.scope");
        // Containers are named by their runtime, never by this filter.
        let id = "a".repeat(64);
        assert_eq!(resolver.workload(&format!("/system.slice/docker-{id}.scope")).cgroup, "");
    }

    #[test]
    fn host_paths_keep_their_cgroup() {
        let resolver = Resolver::new(false, Vec::new(), 16);
        let host = resolver.workload("/system.slice/sshd.service");
        assert_eq!(host, Workload { cgroup: "/system.slice/sshd.service".into(), ..Workload::default() });
        assert!(host.pod_labels.is_empty());
        assert_eq!(resolver.wanted_len(), 0);
    }

    #[test]
    fn unknown_containers_get_their_short_id_then_their_name() {
        let resolver = Resolver::new(true, vec!["app".into()], 16);
        let path = format!("/libpod_parent/libpod-{ID}");
        let first = resolver.workload(&path);
        assert_eq!(first.container, &ID[..12]);
        assert_eq!(first.container_id, ID);
        // The name the collectors share is the same until the container is known.
        let shared = resolver.shared_workload(&path);
        assert_eq!(*shared, first);
        assert!(Arc::ptr_eq(&shared, &resolver.shared_workload(&path)));
        assert_eq!(resolver.wanted(), vec![ID.to_owned()]);

        let info = ContainerInfo {
            container: "web".into(),
            pod: "web-0".into(),
            namespace: "shop".into(),
            pod_labels: [("app".to_owned(), "shop-web".to_owned())].into(),
            owner: Owner { kind: "StatefulSet", name: "web".into() },
            pod_uid: String::new(),
        };
        assert!(resolver.learn(ID.into(), info.clone()));
        // A second container of the same pod: still one pod.
        assert!(resolver.learn("sidecar".into(), ContainerInfo { container: "proxy".into(), ..info }));
        let named = resolver.workload(&path);
        assert_eq!(*resolver.shared_workload(&path), named, "learning names the shared name again");
        assert_eq!(
            (named.namespace.as_str(), named.pod.as_str(), named.container.as_str()),
            ("shop", "web-0", "web")
        );
        assert_eq!((named.workload_kind.as_str(), named.workload.as_str()), ("StatefulSet", "web"));
        assert_eq!(named.cgroup, "");
        let pods = resolver.pods();
        assert_eq!(pods.len(), 1, "{pods:?}");
        assert_eq!(
            (pods[0].0.as_str(), pods[0].1.as_str(), pods[0].2.kind),
            ("shop", "web-0", "StatefulSet")
        );
        assert_eq!(pods[0].3, vec!["shop-web".to_owned()]);
        assert_eq!(named.pod_labels, vec!["shop-web".to_owned()]);
        assert_eq!(first.pod_labels, vec![String::new()], "the label exists before the pod is known");
        assert_eq!(resolver.wanted_len(), 0);
        assert_eq!(resolver.pod_label_names(), vec!["label_app".to_owned()]);
    }

    #[test]
    fn ids_no_source_names_are_awaited_while_asked_for_and_at_most_capacity_of_them() {
        let resolver = Resolver::new(false, Vec::new(), 16);
        let id = |i: u32| format!("{i:064x}");
        let ask = |i: u32| resolver.workload(&format!("/libpod_parent/libpod-{}", id(i)));
        // Cgroups a workload named like containers that no runtime knows.
        for i in 0..100 {
            ask(i);
        }
        assert_eq!(resolver.wanted_len(), 100);
        std::thread::sleep(Duration::from_millis(5));
        let asked_again = [0, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99];
        for i in asked_again {
            ask(i);
        }
        resolver.prune(Duration::from_secs(600));
        let wanted = resolver.wanted();
        assert_eq!(wanted.len(), 16, "at most the capacity");
        assert!(asked_again.iter().all(|&i| wanted.contains(&id(i))), "the most recently asked stay");
        // Nothing asks for the others any more: they go after `idle`.
        std::thread::sleep(Duration::from_millis(30));
        ask(0);
        resolver.prune(Duration::from_millis(20));
        assert_eq!(resolver.wanted(), vec![id(0)]);
        // Named: no longer awaited.
        resolver.learn(id(0), ContainerInfo { container: "web".into(), ..ContainerInfo::default() });
        assert_eq!(resolver.wanted_len(), 0);
        assert_eq!(ask(0).container, "web");
        assert_eq!(resolver.wanted_len(), 0);
    }

    #[test]
    fn a_container_is_known_with_its_pod_only_once_a_source_gave_its_pod() {
        let resolver = Resolver::new(false, Vec::new(), 16);
        assert!(!resolver.knows_pod_of(ID), "unknown");
        resolver.learn(ID.into(), ContainerInfo { container: "web".into(), ..ContainerInfo::default() });
        assert!(!resolver.knows_pod_of(ID), "named by conmon or Docker's files: the CRI may say more");
        let info =
            ContainerInfo { pod: "web-0".into(), pod_uid: "uid-web-0".into(), ..ContainerInfo::default() };
        resolver.learn(ID.into(), info);
        assert!(resolver.knows_pod_of(ID));
        assert!(!resolver.knows_pod_of("other"));
    }

    #[test]
    fn pod_label_values_are_cut_at_the_kubernetes_bound() {
        let resolver = Resolver::new(false, vec!["app".into(), "team".into()], 16);
        let value = format!("{}é", "v".repeat(62));
        let info = ContainerInfo {
            pod: "p".into(),
            pod_labels: [("app".to_owned(), value), ("team".to_owned(), "x".repeat(100_000))].into(),
            owner: Owner::new("Pod", "p"),
            ..ContainerInfo::default()
        };
        resolver.learn(ID.into(), info);
        let labels = resolver.workload(&format!("/docker/{ID}")).pod_labels;
        assert_eq!(labels, vec!["v".repeat(62), "x".repeat(63)], "cut before a split character");
        assert_eq!(resolver.pods()[0].3, labels);
        let kept = lock(&resolver.known)[ID].info.pod_labels.clone();
        assert_eq!(kept.values().map(String::len).sum::<usize>(), 62 + 63, "kept cut, not whole");
    }

    #[test]
    fn only_the_exported_pod_labels_are_kept() {
        let resolver = Resolver::new(false, vec!["team".into()], 16);
        // A tenant's pod with as many labels as it likes.
        let mut pod_labels: std::collections::BTreeMap<String, String> =
            (0..10_000).map(|i| (format!("tenant.example/label-{i}"), "v".repeat(63))).collect();
        pod_labels.insert("team".into(), "payments".into());
        let info = ContainerInfo {
            pod: "p".into(),
            pod_labels,
            owner: Owner::new("Pod", "p"),
            ..ContainerInfo::default()
        };
        resolver.learn(ID.into(), info);
        let kept = lock(&resolver.known)[ID].info.pod_labels.clone();
        assert_eq!(kept.into_iter().collect::<Vec<_>>(), [("team".to_owned(), "payments".to_owned())]);
        assert_eq!(resolver.workload(&format!("/docker/{ID}")).pod_labels, ["payments"]);

        let exporting_none = Resolver::new(false, Vec::new(), 16);
        let info = ContainerInfo {
            pod: "p".into(),
            pod_labels: [("app".to_owned(), "web".to_owned())].into(),
            ..ContainerInfo::default()
        };
        exporting_none.learn(ID.into(), info);
        assert!(lock(&exporting_none.known)[ID].info.pod_labels.is_empty());
    }

    #[test]
    fn container_id_label_is_opt_in_and_cache_is_bounded() {
        let resolver = Resolver::new(false, Vec::new(), 1);
        assert_eq!(resolver.workload(&format!("/docker/{ID}")).container_id, "");
        resolver.learn("a".into(), ContainerInfo::default());
        resolver.learn("b".into(), ContainerInfo::default());
        resolver.prune(Duration::from_secs(600));
        assert_eq!(resolver.known_len(), 1);
        assert_eq!(resolver.evictions(), 1, "the one past the bound is counted");
        let path = format!("/docker/{ID}");
        resolver.learn(ID.into(), ContainerInfo { container: "web".into(), ..ContainerInfo::default() });
        assert_eq!(resolver.shared_workload(&path).container, "web");
        resolver.prune(Duration::ZERO);
        assert_eq!(resolver.known_len(), 0);
        assert_eq!(resolver.evictions(), 1, "idle expiry is not an eviction");
        assert_eq!(resolver.shared_workload(&path).container, &ID[..12], "a pruned identity is not named");
    }
}
