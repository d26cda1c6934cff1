//! Keeps the cgroup index current: applies the kernel's mkdir/rmdir events as they arrive, walks
//! the hierarchies only at start-up or after events were lost, and, once a removed cgroup's
//! counts have been exported for the grace period, frees its kernel slot and forgets its path.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tracing::debug;

use crate::{
    bpf::{
        Programs,
        cgroups::{Lifecycle, decode},
        rings::{EventRing, RingStats},
    },
    kernel::cgroupfs::{CgroupIndex, Hierarchies, ROOT_CGROUP_ID, V1_CGROUP_ID_BIT},
};

/// The index and what happened to it, shared by the event task, the maintenance task and the
/// collectors.
#[derive(Debug)]
pub struct Tracker {
    pub index: Mutex<CgroupIndex>,
    hierarchies: Hierarchies,
    pub created: AtomicU64,
    pub removed: AtomicU64,
    /// Events the kernel could not queue, as of the last maintenance pass.
    pub lost: AtomicU64,
    /// Whether events arrive (else the maintenance pass walks the hierarchies each time).
    following: std::sync::atomic::AtomicBool,
}

impl Tracker {
    pub fn new(hierarchies: Hierarchies) -> Self {
        let mut index = hierarchies.index();
        index.rescan();
        Self {
            index: Mutex::new(index),
            hierarchies,
            created: AtomicU64::new(0),
            removed: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            following: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn index(&self) -> std::sync::MutexGuard<'_, CgroupIndex> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The path of a tagged cgroup id for a rare event (an OOM kill, an exec): walks cgroupfs
    /// once if no lifecycle event named it; the root by its id; else `cgroup_id:<id>`.
    pub fn path_of(&self, cgroup_id: u64) -> String {
        let mut index = self.index();
        if index.resolve(cgroup_id).is_none() {
            index.rescan();
        }
        match index.resolve(cgroup_id) {
            Some(path) => path.to_owned(),
            None if cgroup_id & !V1_CGROUP_ID_BIT == ROOT_CGROUP_ID => "/".to_owned(),
            None => format!("cgroup_id:{cgroup_id}"),
        }
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
                    self.index().created(cgroup_id | tag, path);
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
}

/// Applies lifecycle events until the agent stops (or their ring cannot be polled: the
/// maintenance pass then walks cgroupfs each time).
pub async fn follow_events(events: EventRing, tracker: Arc<Tracker>) {
    tracker.following.store(true, Ordering::Relaxed);
    events.follow(|record| tracker.apply(record)).await;
    tracker.following.store(false, Ordering::Relaxed);
}

/// Periodic pass: walk if events are not followed or some were lost, free the kernel slots of
/// cgroups gone for `grace`, then forget their paths.
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
            let mut index = tracker.index();
            if !tracker.following.load(Ordering::Relaxed) || lost_now > lost_before {
                index.rescan();
            }
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
