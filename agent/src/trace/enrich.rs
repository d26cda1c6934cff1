//! Who an event belongs to: its wall-clock time, and the cgroup, container, pod and namespace
//! of its cgroup id (through the cgroup index and the metadata resolver). Also turns
//! `--container`, `--pod` and `--namespace` into the set of cgroup ids the kernel filters on.

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::kernel::value::{Event, Kind, Name, Text, Value};
use crate::{
    kernel::{
        cgroup_handle::{CgroupHandles, Lookup},
        cgroupfs::{CgroupIndex, Hierarchies, Walk},
    },
    metadata::{cgroup_path, identity::Resolver},
    seeded_hash::SeededMap,
};

/// Fields added to every event (`node` is `NODE_NAME`, empty when unset).
pub const FIELDS: [(&str, Kind); 8] = [
    ("time", Kind::Text),
    ("cgroup", Kind::Text),
    ("container", Kind::Text),
    ("pod", Kind::Text),
    ("namespace", Kind::Text),
    ("workload_kind", Kind::Text),
    ("workload", Kind::Text),
    ("node", Kind::Text),
];

/// How often an unknown cgroup id that no lookup by handle named may trigger a walk of the
/// hierarchies.
const RESCAN_EVERY: Duration = Duration::from_millis(500);

/// How long (ns of event time) the identity of a cgroup is reused before asking the resolver
/// again (it names a container once a runtime answered).
const IDENTITY_TTL_NS: u64 = 1_000_000_000;

/// How often (ns of event time) a trace forgets the cgroups it no longer needs: the identities
/// of cgroups without an event for `FORGET_AFTER`, and the paths of cgroups removed that long
/// ago. A trace may run for days on a node whose pods come and go, or where a workload creates
/// and removes cgroups of its own: without this, every cgroup it ever saw stayed.
const FORGET_EVERY_NS: u64 = 60_000_000_000;
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// Most containers a "no running container matches" error names: a node may run thousands.
const CONTAINERS_LISTED: usize = 20;

/// Most cgroups named by handle during one walk that the walk's picture is told of (`Walking`):
/// a walk takes tens of milliseconds, and each name cost a lookup by handle.
const LEARNED_DURING_WALK_MAX: usize = 4_096;

/// `forget`'s walk of the hierarchies, on a thread of its own: a walk of 5,000 cgroups took
/// 74 ms, in which a storm of a million events a second overruns the ring.
struct Walking {
    thread: std::thread::JoinHandle<Walk>,
    /// The moment the removals it finds are judged at (`CgroupIndex::expire`).
    expire_at: Instant,
    /// The cgroups named by handle while it walked: its picture, begun before some of them
    /// existed, must not mark them gone.
    learned: Vec<(u64, String)>,
}

/// What an event of a cgroup gets: its path, container, pod, namespace and the pod's owner.
struct Identity {
    path: Value,
    container: Value,
    pod: Value,
    namespace: Value,
    workload_kind: Value,
    workload: Value,
    /// The event time it was resolved at (`time_ns`: no clock read per event).
    at_ns: u64,
}

pub struct Enricher {
    /// Per cgroup id: resolving a path and a workload per event would cost more than the rest
    /// of the event's handling. foldhash, not SipHash: looked up twice for every event.
    identities: SeededMap<u64, Identity>,
    /// When (`CLOCK_MONOTONIC`, as event times) `forget` last ran.
    forgot_at_ns: u64,
    index: CgroupIndex,
    /// One syscall per unknown id instead of a walk, where the kernel allows it.
    handles: Option<CgroupHandles>,
    resolver: Arc<Resolver>,
    last_rescan: Instant,
    walking: Option<Walking>,
    /// CLOCK_REALTIME − CLOCK_MONOTONIC, to turn kernel timestamps into wall-clock time.
    realtime_offset_ns: i128,
    names: [Name; 8],
    /// The node's name, the same for every event.
    node: Value,
}

/// Which workloads `--container`, `--pod`, `--workload` and `--namespace` select.
#[derive(Debug, Clone, Default)]
pub struct WorkloadFilter {
    pub container: Option<String>,
    pub pod: Option<String>,
    /// The pods' owner (a Deployment's name, ...: `owner::owner`).
    pub workload: Option<String>,
    pub namespace: Option<String>,
}

impl WorkloadFilter {
    pub fn is_set(&self) -> bool {
        self.container.is_some() || self.pod.is_some() || self.workload.is_some() || self.namespace.is_some()
    }
}

impl Enricher {
    pub fn new(hierarchies: &Hierarchies, resolver: Arc<Resolver>) -> Self {
        let node = Value::text(resolver.node());
        let mut index = hierarchies.index();
        index.rescan();
        Self {
            identities: SeededMap::default(),
            forgot_at_ns: Self::monotonic_ns(),
            handles: CgroupHandles::open(index.roots()),
            index,
            resolver,
            last_rescan: Instant::now(),
            walking: None,
            realtime_offset_ns: clock(libc::CLOCK_REALTIME) - clock(libc::CLOCK_MONOTONIC),
            names: FIELDS.map(|(n, _)| Name::from(n)),
            node,
        }
    }

    /// CLOCK_MONOTONIC now, as `bpf_ktime_get_ns` counts.
    pub fn monotonic_ns() -> u64 {
        u64::try_from(clock(libc::CLOCK_MONOTONIC)).unwrap_or(0)
    }

    /// The cgroup path of an id; an unknown id is looked up by handle, else walks the
    /// hierarchies again (rate-limited; not while `forget`'s walk runs, which will answer).
    fn path_of(&mut self, cgroup_id: u64) -> String {
        if self.index.resolve(cgroup_id).is_none() {
            match self.handles.as_ref().map_or(Lookup::Unknown, |handles| handles.lookup(cgroup_id)) {
                Lookup::Found(path) => {
                    if let Some(walking) = &mut self.walking
                        && walking.learned.len() < LEARNED_DURING_WALK_MAX
                    {
                        walking.learned.push((cgroup_id, path.clone()));
                    }
                    self.index.learn(cgroup_id, path);
                }
                // Removed: a walk would not find it either.
                Lookup::Gone => {}
                Lookup::Unknown if self.walking.is_none() && self.last_rescan.elapsed() >= RESCAN_EVERY => {
                    self.index.rescan();
                    self.last_rescan = Instant::now();
                }
                Lookup::Unknown => {}
            }
        }
        self.index.resolve(cgroup_id).unwrap_or("").to_owned()
    }

    pub fn add(&mut self, event: &mut Event) {
        let time_ns = match event.get("time_ns") {
            Some(Value::UInt(t)) => *t,
            _ => 0,
        };
        let cgroup_id = match event.get("cgroup_id") {
            Some(Value::UInt(id)) => *id,
            _ => 0,
        };
        self.finish_walk(false);
        if time_ns >= self.forgot_at_ns.saturating_add(FORGET_EVERY_NS) {
            self.forget(time_ns, Instant::now());
        }
        let [time, cgroup, container, pod, namespace, workload_kind, workload, node] = self.names.clone();
        event.push(&time, Value::Str(wall_clock(i128::from(time_ns) + self.realtime_offset_ns)));
        let identity = self.identity(cgroup_id, time_ns);
        event.push(&cgroup, identity.path.clone());
        event.push(&container, identity.container.clone());
        event.push(&pod, identity.pod.clone());
        event.push(&namespace, identity.namespace.clone());
        event.push(&workload_kind, identity.workload_kind.clone());
        event.push(&workload, identity.workload.clone());
        event.push(&node, self.node.clone());
    }

    /// Forgets the identities not resolved again for `FORGET_AFTER` before `now_ns` (event
    /// time), and, once a walk of the hierarchies it starts is done (`finish_walk`), the paths
    /// of the cgroups gone for as long at `now`.
    fn forget(&mut self, now_ns: u64, now: Instant) {
        self.forgot_at_ns = now_ns;
        let after = u64::try_from(FORGET_AFTER.as_nanos()).unwrap_or(u64::MAX);
        self.identities.retain(|_, identity| now_ns.saturating_sub(identity.at_ns) < after);
        self.identities.shrink_to_fit();
        if self.walking.is_some() {
            return;
        }
        let roots = self.index.roots().to_vec();
        match std::thread::Builder::new().name("cgroup-walk".into()).spawn(move || Walk::of(&roots)) {
            Ok(thread) => self.walking = Some(Walking { thread, expire_at: now, learned: Vec::new() }),
            // No thread to be had (the pids limit): the walk here, the events waiting.
            Err(_) => {
                self.index.rescan();
                self.settle_walk(now);
            }
        }
    }

    /// Applies `forget`'s walk once it is done, or (`wait`) once it is.
    fn finish_walk(&mut self, wait: bool) {
        if !self.walking.as_ref().is_some_and(|walking| wait || walking.thread.is_finished()) {
            return;
        }
        let Some(walking) = self.walking.take() else { return };
        match walking.thread.join() {
            Ok(walk) => self.index.apply(walk),
            // A walk that panicked: again, here.
            Err(_) => self.index.rescan(),
        }
        for (id, path) in walking.learned {
            self.index.learn(id, path);
        }
        self.settle_walk(walking.expire_at);
    }

    /// After a walk: forgets the paths of the cgroups gone for `FORGET_AFTER` at `now`.
    fn settle_walk(&mut self, now: Instant) {
        self.last_rescan = Instant::now();
        self.index.expire(FORGET_AFTER, now);
        self.index.shrink();
    }

    /// `forget`, once `every` has passed since it last ran, for a trace whose events do not pass
    /// through `add`: counts by cgroup made in the kernel and named at each print (`field_of`).
    pub fn maintain(&mut self, every: Duration) {
        self.finish_walk(false);
        let now_ns = Self::monotonic_ns();
        if now_ns >= self.forgot_at_ns.saturating_add(u64::try_from(every.as_nanos()).unwrap_or(u64::MAX)) {
            self.forget(now_ns, Instant::now());
        }
    }

    /// Whether the cgroup exists, as far as the last walk and the lookups since know.
    pub fn is_alive(&self, cgroup_id: u64) -> bool {
        self.index.is_alive(cgroup_id)
    }

    /// The value of `field` (`cgroup`, `cgroup_id`, `container`, `pod`, `namespace`,
    /// `workload_kind`, `workload`, `node`) for a cgroup id, as events of that cgroup carry it;
    /// `None` for other fields.
    pub fn field_of(&mut self, cgroup_id: u64, field: &str) -> Option<Value> {
        let identity = self.identity(cgroup_id, Self::monotonic_ns());
        Some(match field {
            "cgroup_id" => Value::UInt(cgroup_id),
            "cgroup" => identity.path.clone(),
            "container" => identity.container.clone(),
            "pod" => identity.pod.clone(),
            "namespace" => identity.namespace.clone(),
            "workload_kind" => identity.workload_kind.clone(),
            "workload" => identity.workload.clone(),
            "node" => self.node.clone(),
            _ => return None,
        })
    }

    /// The identity of a cgroup, resolved again when older than `IDENTITY_TTL_NS` at `now_ns`.
    fn identity(&mut self, cgroup_id: u64, now_ns: u64) -> &Identity {
        let fresh = self
            .identities
            .get(&cgroup_id)
            .is_some_and(|i| now_ns >= i.at_ns && now_ns - i.at_ns < IDENTITY_TTL_NS);
        if !fresh {
            let path = self.path_of(cgroup_id);
            let workload = self.resolver.workload(&path);
            let identity = Identity {
                path: Value::text(&path),
                container: Value::text(&workload.container),
                pod: Value::text(&workload.pod),
                namespace: Value::text(&workload.namespace),
                workload_kind: Value::text(&workload.workload_kind),
                workload: Value::text(&workload.workload),
                at_ns: now_ns,
            };
            self.identities.insert(cgroup_id, identity);
        }
        self.identities.entry(cgroup_id).or_insert_with(|| Identity {
            path: Value::empty(),
            container: Value::empty(),
            pod: Value::empty(),
            namespace: Value::empty(),
            workload_kind: Value::empty(),
            workload: Value::empty(),
            at_ns: now_ns,
        })
    }

    /// The cgroup ids of the containers `filter` selects, waiting up to `wait` for the
    /// runtimes to name the containers found. An error lists what runs when none matches.
    pub async fn matching_cgroups(
        &mut self,
        filter: &WorkloadFilter,
        wait: Duration,
    ) -> anyhow::Result<BTreeSet<u64>> {
        self.finish_walk(true);
        self.index.rescan();
        // A container's path may exist in the unified and in a v1 hierarchy: both ids are
        // selected (its tasks are attributed by the v1 one only when in the v2 root). One pass
        // over the living cgroups: a node's tenants decide how many there are.
        let containers: Vec<(u64, String, String)> = self
            .index
            .alive()
            .filter_map(|(cgroup_id, path)| {
                Some((cgroup_id, path.to_owned(), cgroup_path::parse(path)?.container_id))
            })
            .collect();
        for (_, path, _) in &containers {
            let _ = self.resolver.workload(path); // queues the unknown ones for the lookup task
        }
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline && !containers.iter().all(|(_, _, id)| self.resolver.is_known(id)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut selected = BTreeSet::new();
        let mut seen = BTreeSet::new();
        for (cgroup_id, path, id) in &containers {
            let workload = self.resolver.workload(path);
            let described = format!(
                "{}{}{}",
                if workload.namespace.is_empty() {
                    String::new()
                } else {
                    format!("{}/", workload.namespace)
                },
                if workload.pod.is_empty() { String::new() } else { format!("{}/", workload.pod) },
                workload.container
            );
            seen.insert(described);
            let container_ok = filter
                .container
                .as_ref()
                .is_none_or(|c| workload.container == *c || (c.len() >= 4 && id.starts_with(c.as_str())));
            let pod_ok = filter.pod.as_ref().is_none_or(|p| workload.pod == *p);
            let owner_ok = filter.workload.as_ref().is_none_or(|w| workload.workload == *w);
            let namespace_ok = filter.namespace.as_ref().is_none_or(|n| workload.namespace == *n);
            if container_ok && pod_ok && owner_ok && namespace_ok {
                selected.insert(*cgroup_id);
            }
        }
        if selected.is_empty() {
            let running = match seen.len() {
                0 => "none".to_owned(),
                n if n <= CONTAINERS_LISTED => seen.into_iter().collect::<Vec<_>>().join(", "),
                n => {
                    let first: Vec<String> = seen.into_iter().take(CONTAINERS_LISTED).collect();
                    format!("{} and {} more", first.join(", "), n - CONTAINERS_LISTED)
                }
            };
            anyhow::bail!(
                "no running container matches {}: containers on this host: {running}",
                describe(filter)
            );
        }
        Ok(selected)
    }
}

/// The (tagged) ids of the cgroup at `path` and of every cgroup below it. `path` is a directory
/// of a cgroup hierarchy kernsight attributes tasks by, or a path relative to the unified one.
pub fn cgroup_ids(hierarchies: &Hierarchies, path: &str) -> anyhow::Result<BTreeSet<u64>> {
    use std::os::unix::fs::MetadataExt as _;
    let roots: Vec<(std::path::PathBuf, u64)> = hierarchies
        .unified
        .iter()
        .map(|root| (root.clone(), 0))
        .chain(
            hierarchies
                .v1
                .iter()
                .map(|(_, root)| (root.clone(), kernsight_common::syscalls::V1_CGROUP_ID_BIT)),
        )
        .collect();
    let given = std::path::Path::new(path);
    let (dir, tag) = match roots.iter().find(|(root, _)| given.starts_with(root)) {
        Some((_, tag)) => (given.to_path_buf(), *tag),
        None => match roots.first() {
            Some((root, tag)) if !given.is_absolute() || !given.exists() => {
                (root.join(path.trim_start_matches('/')), *tag)
            }
            _ => anyhow::bail!(
                "--cgroup {path} is not under a cgroup hierarchy kernsight reads ({}): give a directory there",
                roots.iter().map(|(r, _)| r.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
        },
    };
    let mut ids = BTreeSet::new();
    let mut stack = vec![dir.clone()];
    while let Some(current) = stack.pop() {
        let meta = match std::fs::metadata(&current) {
            Ok(meta) => meta,
            Err(err) if current == dir => {
                anyhow::bail!("--cgroup {path}: cannot read {}: {err}", dir.display())
            }
            Err(_) => continue, // a child removed meanwhile
        };
        ids.insert(meta.ino() | tag);
        for entry in std::fs::read_dir(&current).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    Ok(ids)
}

fn describe(filter: &WorkloadFilter) -> String {
    let mut parts = Vec::new();
    if let Some(c) = &filter.container {
        parts.push(format!("--container {c}"));
    }
    if let Some(p) = &filter.pod {
        parts.push(format!("--pod {p}"));
    }
    if let Some(w) = &filter.workload {
        parts.push(format!("--workload {w}"));
    }
    if let Some(n) = &filter.namespace {
        parts.push(format!("--namespace {n}"));
    }
    parts.join(" ")
}

fn clock(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and an out-pointer to a local.
    if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
        return 0;
    }
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// `HH:MM:SS.ffffff` (UTC) of nanoseconds since the epoch (outside 1970-2554: midnight).
pub fn wall_clock(epoch_ns: i128) -> Text {
    // 64-bit arithmetic by constants only: a 128-bit division (a call to `__divti3`) and
    // `format!` with padding showed in the tracer's profile (docs/performance.md, "The tracer:
    // one wakeup per wait, and a JSON line for less"). Nanoseconds since the epoch fit 64 bits
    // until 2554.
    let day_micros = u64::try_from(epoch_ns).unwrap_or(0) / 1000 % (86_400 * 1_000_000);
    let mut text = [b':'; 15];
    let fields = [
        day_micros / 3_600_000_000,
        day_micros / 60_000_000 % 60,
        day_micros / 1_000_000 % 60,
        day_micros % 1_000_000 / 10_000,
        day_micros % 10_000 / 100,
        day_micros % 100,
    ];
    // Two digits each at 0, 3, 6 (after `:`, `:`), then 9, 11, 13 (after `.`).
    for (value, at) in fields.into_iter().zip([0, 3, 6, 9, 11, 13]) {
        text[at] = b'0' + (value / 10) as u8;
        text[at + 1] = b'0' + (value % 10) as u8;
    }
    text[8] = b'.';
    Text::from(std::str::from_utf8(&text).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_of(cgroup_id: u64, time_ns: u64) -> Event {
        let mut event = Event::default();
        event.push(&"time_ns".into(), Value::UInt(time_ns));
        event.push(&"cgroup_id".into(), Value::UInt(cgroup_id));
        event
    }

    fn id_of(dir: &std::path::Path) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(dir).unwrap().ino()
    }

    #[test]
    fn a_long_trace_forgets_the_cgroups_that_are_gone() {
        // A tree a workload made: 500 cgroups (directories: the index walks any tree).
        let root = tempfile::tempdir().unwrap();
        let dirs: Vec<_> = (0..500).map(|i| root.path().join(format!("c{i}"))).collect();
        for dir in &dirs {
            std::fs::create_dir(dir).unwrap();
        }
        let hierarchies = Hierarchies { unified: Some(root.path().into()), v1: None, v1_hierarchy_id: None };
        let mut enricher = Enricher::new(&hierarchies, Arc::new(Resolver::new(false, Vec::new(), 16)));
        let start = Enricher::monotonic_ns();
        for (i, dir) in dirs.iter().enumerate() {
            let mut event = event_of(id_of(dir), start);
            enricher.add(&mut event);
            assert_eq!(event.get("cgroup"), Some(&Value::text(&format!("/c{i}"))));
        }
        assert_eq!(enricher.identities.len(), 500);
        let (kept, kept_id) = (&dirs[0], id_of(&dirs[0]));
        for dir in &dirs[1..] {
            std::fs::remove_dir(dir).unwrap();
        }
        // Within the minute nothing is forgotten: events still in the ring may name them.
        let mut event = event_of(kept_id, start + FORGET_EVERY_NS / 2);
        enricher.add(&mut event);
        assert_eq!((enricher.identities.len(), enricher.index.len()), (500, 501));
        // Past it, only the cgroup still busy is known, and the tree's root.
        let later = start + FORGET_EVERY_NS + FORGET_AFTER.as_nanos() as u64;
        enricher.forget(later, Instant::now() + 2 * FORGET_AFTER);
        // The walk runs beside the trace: the index is the same until it is applied.
        assert!(enricher.walking.is_some());
        assert_eq!(enricher.index.len(), 501);
        enricher.finish_walk(true);
        let mut event = event_of(kept_id, later);
        enricher.add(&mut event);
        assert_eq!(event.get("cgroup"), Some(&Value::text("/c0")), "{}", kept.display());
        assert_eq!((enricher.identities.len(), enricher.index.len()), (1, 2));
        assert_eq!(enricher.forgot_at_ns, later);
        assert!(enricher.is_alive(kept_id) && !enricher.is_alive(id_of(root.path()) + 1_000_000));
    }

    /// `containers` cgroups named as containerd's cgroupfs driver names a pod's containers, in a
    /// tree of directories (the index walks any tree), and their ids (64 hex digits).
    fn container_tree(containers: usize) -> (tempfile::TempDir, Vec<String>) {
        let root = tempfile::tempdir().unwrap();
        let ids: Vec<String> = (0..containers).map(|i| format!("{i:08x}{:056x}", 0)).collect();
        for (i, id) in ids.iter().enumerate() {
            let pod = format!("pod{:08x}-0000-0000-0000-{i:012x}", i / 2);
            std::fs::create_dir_all(root.path().join("kubepods/besteffort").join(pod).join(id)).unwrap();
        }
        (root, ids)
    }

    #[tokio::test]
    async fn choosing_a_container_among_thousands_is_one_pass_over_the_cgroups() {
        // Each container was looked up by path among all the cgroups: 20,000 took 123 s (a debug
        // build; `kernsight trace --container` waited that long before tracing).
        const CONTAINERS: usize = 20_000;
        let (root, ids) = container_tree(CONTAINERS);
        let hierarchies = Hierarchies { unified: Some(root.path().into()), v1: None, v1_hierarchy_id: None };
        let mut enricher = Enricher::new(&hierarchies, Arc::new(Resolver::new(false, Vec::new(), 16)));
        let started = Instant::now();
        let wanted = &ids[CONTAINERS / 3];
        let filter = WorkloadFilter { container: Some(wanted[..16].to_owned()), ..WorkloadFilter::default() };
        let selected = enricher.matching_cgroups(&filter, Duration::ZERO).await.unwrap();
        let dir = root.path().join(format!(
            "kubepods/besteffort/pod{:08x}-0000-0000-0000-{:012x}",
            CONTAINERS / 6,
            CONTAINERS / 3
        ));
        assert_eq!(selected, BTreeSet::from([id_of(&dir.join(wanted))]));
        // A generous bound: the whole test, its 20,000 directories made, takes 7 s.
        assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());

        // Nothing matches: the error names some of them, and how many more there are.
        let filter = WorkloadFilter { pod: Some("none-such".into()), ..WorkloadFilter::default() };
        let err = enricher.matching_cgroups(&filter, Duration::ZERO).await.unwrap_err().to_string();
        assert!(err.starts_with("no running container matches --pod none-such"), "{err}");
        assert!(
            err.ends_with(&format!(" and {} more", CONTAINERS - CONTAINERS_LISTED)),
            "{}",
            &err[err.len() - 60..]
        );
        assert_eq!(err.matches(", ").count(), CONTAINERS_LISTED - 1, "{err}");
    }

    #[test]
    fn formats_wall_clock_time() {
        assert_eq!(&*wall_clock(0), "00:00:00.000000");
        let t = ((13 * 3600 + 4 * 60 + 5) * 1_000_000_000i128) + 123_456_789 + 86_400 * 1_000_000_000 * 3;
        assert_eq!(&*wall_clock(t), "13:04:05.123456");
        assert_eq!(&*wall_clock(-5), "00:00:00.000000");
        assert_eq!(&*wall_clock(i128::MAX), "00:00:00.000000");
        assert_eq!(&*wall_clock(86_400 * 1_000_000_000 - 1), "23:59:59.999999");
    }
}
