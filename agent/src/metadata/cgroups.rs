//! Keeps the cgroup index current: applies the kernel's mkdir/rmdir events as they arrive, walks
//! the hierarchies only at start-up or after events were lost, and, once a removed cgroup's
//! counts have been exported for the grace period, frees its kernel slot and forgets its path.
//!
//! An id no event named (its path was cut by the kernel, events were lost) is looked up by its
//! file handle: one syscall, no walk. Where that is refused, it waits for a walk, made by one
//! task off the async workers, at most once per `walk_interval`: requests in between coalesce.
//! A tenant who creates cgroups with long or odd names therefore costs the agent one lookup per
//! cgroup, or at worst one walk per interval, never one walk per cgroup.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use kernsight_common::{counters::OVERFLOW_CGROUP_ID, net::NO_SOCKET_CGROUP_ID};
use tracing::{debug, info, warn};

use crate::{
    bpf::{
        Programs,
        cgroups::{Lifecycle, decode},
        rings::{EventRing, RingStats},
    },
    kernel::{
        cgroup_handle::{CgroupHandles, Lookup},
        cgroupfs::{CgroupIndex, Hierarchies, ROOT_CGROUP_ID, V1_CGROUP_ID_BIT, Walk, path_label},
    },
};

/// Ids kept for the resolver task at most; past it, requests still count and still get their
/// walk, the ids are just not looked up one by one first.
const MAX_PENDING: usize = 4096;

/// How unknown cgroup ids are resolved.
#[derive(Debug, Clone, Copy)]
pub struct Resolution {
    /// At most one walk of the hierarchies per interval.
    pub walk_interval: Duration,
    /// Look ids up by file handle before walking.
    pub by_handle: bool,
}

/// What the resolution of unknown ids cost, for the self-metrics.
#[derive(Debug, Default)]
pub struct ResolveStats {
    pub handle_found: AtomicU64,
    pub handle_gone: AtomicU64,
    pub handle_unknown: AtomicU64,
    /// Requests for a walk (an id no lookup could name, lost events).
    pub walk_requests: AtomicU64,
    /// Requests answered by a walk that another request caused.
    pub walk_requests_coalesced: AtomicU64,
}

/// The index and what happened to it, shared by the event task, the maintenance task, the
/// resolver task and the collectors.
#[derive(Debug)]
pub struct Tracker {
    pub index: Mutex<CgroupIndex>,
    hierarchies: Hierarchies,
    handles: Option<CgroupHandles>,
    walk_interval: Duration,
    /// Ids for the resolver task to look up.
    pending: Mutex<HashSet<u64>>,
    /// Requests for a walk since the resolver's last pass.
    walk_wanted: AtomicU64,
    last_walk: Mutex<Instant>,
    wake: tokio::sync::Notify,
    pub resolve: ResolveStats,
    pub created: AtomicU64,
    pub removed: AtomicU64,
    /// Events the kernel could not queue, as of the last maintenance pass.
    pub lost: AtomicU64,
    /// Whether events arrive (else the maintenance pass asks for a walk each time).
    following: AtomicBool,
}

impl Tracker {
    /// Walks the hierarchies once: the start-up picture.
    pub fn new(hierarchies: Hierarchies, resolution: Resolution) -> Self {
        let mut index = hierarchies.index();
        index.rescan();
        let handles = resolution.by_handle.then(|| CgroupHandles::open(index.roots())).flatten();
        Self {
            index: Mutex::new(index),
            hierarchies,
            handles,
            walk_interval: resolution.walk_interval,
            pending: Mutex::new(HashSet::new()),
            walk_wanted: AtomicU64::new(0),
            last_walk: Mutex::new(Instant::now()),
            wake: tokio::sync::Notify::new(),
            resolve: ResolveStats::default(),
            created: AtomicU64::new(0),
            removed: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            following: AtomicBool::new(false),
        }
    }

    pub fn index(&self) -> std::sync::MutexGuard<'_, CgroupIndex> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The path of a tagged cgroup id for an event (an OOM kill, an exec): the index, else a
    /// lookup by handle; the root by its id; else `cgroup_id:<id>` (and a walk is asked for).
    pub fn path_of(&self, cgroup_id: u64) -> String {
        let mut index = self.index();
        if index.resolve(cgroup_id).is_none() {
            self.look_up(&mut index, cgroup_id, true);
        }
        match index.resolve(cgroup_id) {
            Some(path) => path.to_owned(),
            None if cgroup_id & !V1_CGROUP_ID_BIT == ROOT_CGROUP_ID => "/".to_owned(),
            None => format!("cgroup_id:{cgroup_id}"),
        }
    }

    /// Names an id the index does not know, without walking: by its handle where the kernel
    /// allows it. When only a walk can tell and `walk` is set, asks the resolver task for one.
    pub fn look_up(&self, index: &mut CgroupIndex, cgroup_id: u64, walk: bool) {
        let lookup = self.handles.as_ref().map(|handles| handles.lookup(cgroup_id));
        self.settle(index, cgroup_id, lookup, walk);
    }

    /// Applies what a lookup by handle said (`None`: no lookups here).
    fn settle(&self, index: &mut CgroupIndex, cgroup_id: u64, lookup: Option<Lookup>, walk: bool) {
        match lookup {
            Some(Lookup::Found(path)) => {
                self.resolve.handle_found.fetch_add(1, Ordering::Relaxed);
                index.learn(cgroup_id, path);
            }
            // Removed: a walk would not find it either.
            Some(Lookup::Gone) => {
                self.resolve.handle_gone.fetch_add(1, Ordering::Relaxed);
            }
            outcome => {
                if outcome.is_some() {
                    self.resolve.handle_unknown.fetch_add(1, Ordering::Relaxed);
                }
                if walk {
                    self.request_walk();
                }
            }
        }
    }

    /// Asks the resolver task to look an id up (never on the caller's thread).
    fn request(&self, cgroup_id: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() < MAX_PENDING {
            pending.insert(cgroup_id);
        } else {
            // No room to look each one up: the walk names them all.
            self.walk_wanted.fetch_add(1, Ordering::Relaxed);
            self.resolve.walk_requests.fetch_add(1, Ordering::Relaxed);
        }
        drop(pending);
        self.wake.notify_one();
    }

    /// Asks the resolver task for a walk (made at most once per interval).
    pub fn request_walk(&self) {
        self.resolve.walk_requests.fetch_add(1, Ordering::Relaxed);
        self.walk_wanted.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Applies one record; false if it did not decode.
    fn apply(&self, record: &[u8]) -> bool {
        let event = match decode(record) {
            Ok(event) => event,
            Err(err) => {
                debug!("skipped a cgroup event: {err}");
                return false;
            }
        };
        match event {
            Lifecycle::Created { hierarchy_id, cgroup_id, path } => {
                if let Some(tag) = self.hierarchies.tag_of(hierarchy_id) {
                    self.created.fetch_add(1, Ordering::Relaxed);
                    let id = cgroup_id | tag;
                    match path {
                        Some(path) => self.index().created(id, path_label(&path, id)),
                        // The kernel cut a long path: the resolver task looks the id up.
                        None => self.request(id),
                    }
                }
            }
            Lifecycle::Removed { hierarchy_id, cgroup_id } => {
                if let Some(tag) = self.hierarchies.tag_of(hierarchy_id) {
                    self.removed.fetch_add(1, Ordering::Relaxed);
                    self.index().removed(cgroup_id | tag, Instant::now());
                }
            }
        }
        true
    }

    /// One pass of the resolver task, on a blocking thread: looks the pending ids up; says
    /// whether a walk is still wanted.
    fn look_up_pending(&self) -> bool {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        for id in pending {
            if self.index().resolve(id).is_some() {
                continue;
            }
            // The syscall without holding the index: readers never wait for a batch.
            let lookup = self.handles.as_ref().map(|handles| handles.lookup(id));
            self.settle(&mut self.index(), id, lookup, true);
        }
        self.walk_wanted.load(Ordering::Relaxed) > 0
    }

    /// Walks the hierarchies without holding the index, then applies the picture; the requests
    /// it answers but one were coalesced.
    fn walk(&self) {
        let requests = self.walk_wanted.swap(0, Ordering::Relaxed);
        self.resolve.walk_requests_coalesced.fetch_add(requests.saturating_sub(1), Ordering::Relaxed);
        let roots = self.index().roots().to_vec();
        let walk = Walk::of(&roots);
        self.index().apply(walk);
        *self.last_walk.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// When the next walk may start.
    fn next_walk_at(&self) -> Instant {
        *self.last_walk.lock().unwrap_or_else(|e| e.into_inner()) + self.walk_interval
    }
}

/// Resolves the ids that the events and scrapes could not name, until the agent stops: by
/// handle as they come, by walking at most once per interval.
pub async fn resolve_unknown(tracker: Arc<Tracker>) {
    loop {
        tracker.wake.notified().await;
        let for_lookup = tracker.clone();
        let walk_wanted = tokio::task::spawn_blocking(move || for_lookup.look_up_pending()).await;
        if !matches!(walk_wanted, Ok(true)) {
            continue;
        }
        // Requests that arrive while this waits are answered by the same walk.
        tokio::time::sleep_until(tracker.next_walk_at().into()).await;
        let for_walk = tracker.clone();
        let _ = tokio::task::spawn_blocking(move || for_walk.walk()).await;
    }
}

/// Applies lifecycle events until the agent stops (or their ring cannot be polled: the
/// maintenance pass then walks cgroupfs each time). The index counts as following from the
/// call, not from the task's first poll: a maintenance pass spawned after it but run before it
/// would otherwise see an index that follows nothing and walk for no reason.
pub fn follow_events(events: EventRing, tracker: Arc<Tracker>) -> impl Future<Output = ()> {
    tracker.following.store(true, Ordering::Relaxed);
    async move {
        events.follow(|record| tracker.apply(record)).await;
        tracker.following.store(false, Ordering::Relaxed);
    }
}

/// Forgets at start-up the counts of cgroups that were removed while no agent ran: `counted`
/// are the ids the (continued, pinned) maps held before the start-up walk, so one the walk did
/// not find was gone by then (ids are never reused). Their slots and rows are freed at once
/// instead of being exported as `cgroup_id:<id>` for the grace period. Returns how many.
pub fn forget_removed_while_stopped(tracker: &Tracker, programs: &Programs, counted: &HashSet<u64>) -> usize {
    let mut index = tracker.index();
    if !index.walk_was_complete() {
        warn!(
            "the start-up walk of cgroupfs could not read a hierarchy's root: counts of removed cgroups are kept for syscalls.forget_after_seconds"
        );
        return 0;
    }
    let mut stale = HashSet::new();
    for &id in counted {
        if !is_cgroup_id(id) || index.is_alive(id) {
            continue;
        }
        // A subtree the walk could not read is no proof: where the kernel can say, it decides.
        tracker.look_up(&mut index, id, false);
        if !index.is_alive(id) {
            stale.insert(id);
        }
    }
    drop(index);
    if stale.is_empty() {
        return 0;
    }
    let forgotten = programs.recycle(&mut |id| stale.contains(&id).then_some(Duration::MAX), Duration::ZERO);
    info!(
        cgroups = stale.len(),
        entries = forgotten,
        "forgot the counts of cgroups removed while no agent ran"
    );
    stale.len()
}

/// Whether a map key's id names a cgroup (not an overflow or `no_socket` key, not a root).
fn is_cgroup_id(id: u64) -> bool {
    let untagged = id & !V1_CGROUP_ID_BIT;
    untagged != OVERFLOW_CGROUP_ID && untagged != ROOT_CGROUP_ID && untagged != NO_SOCKET_CGROUP_ID
}

/// Periodic pass: ask for a walk if events are not followed or some were lost, free the kernel
/// slots of cgroups gone for `grace`, then forget their paths.
pub async fn maintain(
    tracker: Arc<Tracker>,
    programs: Arc<Programs>,
    lost: Option<Arc<RingStats>>,
    grace: Duration,
) {
    let mut tick = tokio::time::interval(grace.clamp(Duration::from_secs(1), Duration::from_secs(10)));
    loop {
        tick.tick().await;
        let (tracker, programs) = (tracker.clone(), programs.clone());
        let lost_now = lost.as_ref().map_or(0, |ring| ring.lost());
        // cgroupfs walks and map updates block: off the async workers.
        let _ = tokio::task::spawn_blocking(move || {
            let now = Instant::now();
            let lost_before = tracker.lost.swap(lost_now, Ordering::Relaxed);
            if !tracker.following.load(Ordering::Relaxed) || lost_now > lost_before {
                tracker.request_walk();
            }
            let mut index = tracker.index();
            programs.recycle(&mut |id| index.gone_for(id, now), grace);
            if index.expire(grace, now) > 0 {
                index.shrink();
                // After a burst of short-lived cgroups the agent returns to its size.
                crate::heap::release_free_memory();
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain directory tree stands in for cgroupfs (ids are inode numbers in both); lookups
    /// by handle are off, so only walks can name what events did not.
    fn tracker(root: &std::path::Path, walk_interval: Duration) -> Arc<Tracker> {
        let hierarchies = Hierarchies { unified: Some(root.to_owned()), v1: None, v1_hierarchy_id: None };
        Arc::new(Tracker::new(hierarchies, Resolution { walk_interval, by_handle: false }))
    }

    fn ino(path: &std::path::Path) -> u64 {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap())
    }

    async fn wait_for_walks(tracker: &Tracker, walks: u64) {
        let started = Instant::now();
        while tracker.index().walks() < walks {
            assert!(started.elapsed() < Duration::from_secs(10), "walk {walks} never came");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_unknown_ids_costs_one_walk_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let interval = Duration::from_millis(500);
        let tracker = tracker(dir.path(), interval);
        assert_eq!(tracker.index().walks(), 1, "the start-up walk");
        let resolver = tokio::spawn(resolve_unknown(tracker.clone()));

        // 200 cgroups no event named, each met by an event: the ids are unknown until a walk.
        let mut ids = Vec::new();
        for i in 0..200 {
            let path = dir.path().join(format!("c{i}"));
            std::fs::create_dir(&path).unwrap();
            ids.push(ino(&path));
            assert!(tracker.path_of(ino(&path)).starts_with("cgroup_id:"), "never walks on the caller");
        }
        // The walk waits for the interval since the start-up walk, then answers every request.
        wait_for_walks(&tracker, 2).await;
        let stats = &tracker.resolve;
        assert_eq!(stats.walk_requests.load(Ordering::Relaxed), 200);
        assert_eq!(stats.walk_requests_coalesced.load(Ordering::Relaxed), 199);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(tracker.path_of(*id), format!("/c{i}"));
        }

        // A request right after a walk is held back until the interval has passed.
        let late = dir.path().join("late");
        std::fs::create_dir(&late).unwrap();
        let asked = Instant::now();
        assert!(tracker.path_of(ino(&late)).starts_with("cgroup_id:"));
        wait_for_walks(&tracker, 3).await;
        let waited = asked.elapsed();
        assert!(waited + Duration::from_millis(50) >= interval, "the next walk came after {waited:?}");
        assert_eq!(tracker.path_of(ino(&late)), "/late");
        tokio::time::sleep(interval * 2).await;
        assert_eq!(tracker.index().walks(), 3, "no walk without a request");
        resolver.abort();
    }

    #[test]
    fn cut_paths_wait_for_the_resolver_and_odd_names_are_escaped() {
        use kernsight_common::cgroups::{CGROUP_MKDIR, CGROUP_PATH_MAX};
        let dir = tempfile::tempdir().unwrap();
        let tracker = tracker(dir.path(), Duration::from_secs(1));
        let record = |id: u64, path: &[u8], path_len: u32| {
            crate::bpf::cgroups::tests::record_of(CGROUP_MKDIR, 0, id, path, path_len)
        };
        assert!(tracker.apply(&record(901, b"/t/\xff\xfe\0", 6)));
        assert_eq!(tracker.path_of(901), "/t/\\xff\\xfe");
        assert!(tracker.apply(&record(902, &[b'a'; CGROUP_PATH_MAX], CGROUP_PATH_MAX as u32)));
        assert_eq!(tracker.index().walks(), 1, "a cut path walks nothing on the event task");
        assert!(tracker.pending.lock().unwrap().contains(&902), "it waits for the resolver");
    }
}
