//! The ring buffers that stream rare events (cgroup lifecycle, OOM kills, execs and exits): one
//! loop follows each, and each is accounted for: records read, records that did not decode, and
//! records the kernel could not queue (counted on the kernel side when a reservation fails).
//! Nothing is lost silently: all three are exported per ring.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use tokio::io::unix::AsyncFd;
use tracing::warn;

use super::take_map;

/// Events the kernel side could not queue (ring buffer full); clones read the same counter.
#[derive(Clone)]
pub struct LostCounter(Arc<PerCpuArray<MapData, u64>>);

impl std::fmt::Debug for LostCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LostCounter").field(&self.total()).finish()
    }
}

impl LostCounter {
    pub fn new(counter: PerCpuArray<MapData, u64>) -> Self {
        Self(Arc::new(counter))
    }

    /// Summed over CPUs.
    pub fn total(&self) -> u64 {
        self.0.get(&0, 0).map(|values| values.iter().sum()).unwrap_or(0)
    }
}

/// Delivery accounting of one ring.
#[derive(Debug)]
pub struct RingStats {
    pub name: &'static str,
    read: AtomicU64,
    decode_errors: AtomicU64,
    lost: LostCounter,
}

impl RingStats {
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

    /// Records lost so far, summed over CPUs.
    pub fn lost(&self) -> u64 {
        self.lost.total()
    }
}

/// A family's event ring: the ring buffer and its accounting.
pub struct EventRing {
    pub ring: RingBuf<MapData>,
    pub stats: Arc<RingStats>,
}

impl std::os::fd::AsRawFd for EventRing {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.ring.as_raw_fd()
    }
}

impl EventRing {
    /// Takes the ring `ring_map` and its loss counter `lost_map` out of the object.
    pub fn take(
        ebpf: &mut aya::Ebpf,
        name: &'static str,
        ring_map: &'static str,
        lost_map: &'static str,
    ) -> anyhow::Result<Self> {
        let ring = RingBuf::try_from(take_map(ebpf, ring_map)?)?;
        let lost = LostCounter::new(PerCpuArray::try_from(take_map(ebpf, lost_map)?)?);
        let stats = RingStats { name, read: AtomicU64::new(0), decode_errors: AtomicU64::new(0), lost };
        Ok(Self { ring, stats: Arc::new(stats) })
    }

    /// Hands every record to `handle` (which says whether it decoded) until polling fails,
    /// which is logged: the caller then knows its events stopped. New losses are logged as
    /// they are seen.
    pub async fn follow(self, handle: impl FnMut(&[u8]) -> bool) {
        self.follow_batches(handle, || {}).await;
    }

    /// As `follow`, calling `after_batch` each time the records queued so far are handled.
    pub async fn follow_batches(self, mut handle: impl FnMut(&[u8]) -> bool, mut after_batch: impl FnMut()) {
        let Self { ring, stats } = self;
        // SAFETY: the AsyncFd owns the ring buffer, so its fd stays open while registered.
        let registered = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) };
        let mut ring = match registered {
            Ok(ring) => ring,
            Err(err) => {
                warn!(ring = stats.name, "cannot poll the ring buffer ({err}): its events are not read");
                return;
            }
        };
        let mut lost_seen = stats.lost();
        loop {
            let Ok(mut guard) = ring.readable_mut().await else {
                warn!(ring = stats.name, "polling the ring buffer failed: its events are no longer read");
                return;
            };
            let ring = guard.get_inner_mut();
            while let Some(record) = ring.next() {
                stats.count(handle(&record));
            }
            guard.clear_ready();
            after_batch();
            let lost = stats.lost();
            if lost > lost_seen {
                warn!(ring = stats.name, lost = lost - lost_seen, "events lost: the ring buffer was full");
                lost_seen = lost;
            }
        }
    }
}
