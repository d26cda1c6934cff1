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

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tracing::{debug, warn};

use crate::{
    bpf::{
        Programs,
        cgroups::{Lifecycle, LostCounter, decode},
        rings::Rings,
    },
    kernel::cgroupfs::{CgroupIndex, Hierarchies},
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

/// Applies lifecycle events until the agent stops.
pub async fn follow_events(ring: RingBuf<MapData>, tracker: Arc<Tracker>, rings: Arc<Rings>) {
    // SAFETY: the AsyncFd owns the ring buffer, so its fd stays open for as long as it is
    // registered.
    let registered = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) };
    let mut ring = match registered {
        Ok(ring) => ring,
        Err(err) => {
            warn!("cannot poll the cgroup event ring buffer ({err}): cgroups are found by walking cgroupfs");
            return;
        }
    };
    tracker.following.store(true, Ordering::Relaxed);
    loop {
        let Ok(mut guard) = ring.readable_mut().await else {
            warn!("polling the cgroup event ring buffer failed: cgroups are found by walking cgroupfs");
            tracker.following.store(false, Ordering::Relaxed);
            return;
        };
        let ring = guard.get_inner_mut();
        while let Some(record) = ring.next() {
            rings.cgroup_events.count(tracker.apply(&record));
        }
        guard.clear_ready();
    }
}

/// Periodic pass: walk if events are not followed or some were lost, free the kernel slots of
/// cgroups gone for `grace`, then forget their paths.
pub async fn maintain(
    tracker: Arc<Tracker>,
    programs: Arc<Programs>,
    lost: Option<LostCounter>,
    grace: Duration,
) {
    let mut tick = tokio::time::interval(grace.clamp(Duration::from_secs(1), Duration::from_secs(10)));
    loop {
        tick.tick().await;
        let (tracker, programs) = (tracker.clone(), programs.clone());
        let lost_now = lost.as_ref().map_or(0, LostCounter::total);
        // cgroupfs walks and map updates block: off the async workers.
        let _ = tokio::task::spawn_blocking(move || {
            let now = Instant::now();
            let lost_before = tracker.lost.swap(lost_now, Ordering::Relaxed);
            let mut index = tracker.index();
            if !tracker.following.load(Ordering::Relaxed) || lost_now > lost_before {
                index.rescan();
            }
            if let Some(maps) = &programs.syscalls {
                let mut maps = maps.lock().unwrap_or_else(|e| e.into_inner());
                maps.recycle(&mut |id| index.gone_for(id, now), grace);
            }
            if let Some(maps) = &programs.runqueue {
                let mut maps = maps.lock().unwrap_or_else(|e| e.into_inner());
                maps.recycle(&mut |id| index.gone_for(id, now), grace);
            }
            if let Some(maps) = &programs.processes {
                let mut maps = maps.lock().unwrap_or_else(|e| e.into_inner());
                maps.recycle(&mut |id| index.gone_for(id, now), grace);
            }
            programs
                .net
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .recycle(&mut |id| index.gone_for(id, now), grace);
            if let Some(maps) = &programs.capabilities {
                let mut maps = maps.lock().unwrap_or_else(|e| e.into_inner());
                maps.recycle(&mut |id| index.gone_for(id, now), grace);
            }
            if index.expire(grace, now) > 0 {
                index.shrink();
                // After a burst of short-lived cgroups the agent returns to its size.
                crate::heap::release_free_memory();
            }
        })
        .await;
    }
}
