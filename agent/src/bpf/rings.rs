//! Delivery accounting of the ring buffers: records read, records that did not decode, and
//! records the kernel could not queue (counted on the kernel side when a reservation fails).
//! Nothing is lost silently: all three are exported per ring.

use std::sync::{
    OnceLock,
    atomic::{AtomicU64, Ordering},
};

use super::cgroups::LostCounter;

#[derive(Debug)]
pub struct RingStats {
    pub name: &'static str,
    read: AtomicU64,
    decode_errors: AtomicU64,
    lost: OnceLock<LostCounter>,
}

impl RingStats {
    pub const fn new(name: &'static str) -> Self {
        Self { name, read: AtomicU64::new(0), decode_errors: AtomicU64::new(0), lost: OnceLock::new() }
    }

    /// The kernel side's count of records it could not queue.
    pub fn watch_losses(&self, lost: LostCounter) {
        let _ = self.lost.set(lost);
    }

    /// One record was read; `decoded`: it was well formed.
    pub fn count(&self, decoded: bool) {
        self.read.fetch_add(1, Ordering::Relaxed);
        if !decoded {
            self.decode_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    pub fn decode_errors(&self) -> u64 {
        self.decode_errors.load(Ordering::Relaxed)
    }

    /// Records lost so far, summed over CPUs (0 until the counter is known).
    pub fn lost(&self) -> u64 {
        self.lost.get().map_or(0, LostCounter::total)
    }
}

/// The agent's ring buffers.
#[derive(Debug)]
pub struct Rings {
    pub cgroup_events: RingStats,
    pub oom_events: RingStats,
    pub process_events: RingStats,
}

impl Default for Rings {
    fn default() -> Self {
        Self {
            cgroup_events: RingStats::new("cgroup_events"),
            oom_events: RingStats::new("oom_events"),
            process_events: RingStats::new("process_events"),
        }
    }
}

impl Rings {
    pub fn all(&self) -> [&RingStats; 3] {
        [&self.cgroup_events, &self.oom_events, &self.process_events]
    }
}
