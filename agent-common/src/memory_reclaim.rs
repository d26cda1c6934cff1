//! The `memory_reclaim` family: time tasks spend in direct reclaim (the node is short of memory)
//! and in memcg reclaim (their cgroup is at its limit), from the `vmscan` tracepoints, as a log2
//! histogram per (cgroup, kind) in a per-CPU hash.

use crate::counters::LATENCY_SUM_BUCKET;

/// Per-CPU hash `ReclaimKey` → `u64`: reclaim stalls per log2 bucket of nanoseconds, and the sum.
pub const RECLAIM_STALLS_MAP: &str = "RECLAIM_STALLS";
/// Hash thread id → when it entered reclaim (ns, `bpf_ktime_get_ns`), deleted when it leaves.
pub const RECLAIM_START_MAP: &str = "RECLAIM_START";
/// Threads in reclaim at once that `RECLAIM_START` can follow (past it a stall is not timed
/// and `map_full{RECLAIM_START}` grows).
pub const RECLAIM_START_ENTRIES: u32 = 16_384;
/// Default bound of `RECLAIM_STALLS` ((cgroup, kind, bucket) entries).
pub const DEFAULT_RECLAIM_STALL_ENTRIES: u32 = 8_192;

/// Kinds of `ReclaimKey`.
pub mod kind {
    /// `mm_vmscan_direct_reclaim_*`: the allocation found the node (zone) short of free memory.
    pub const DIRECT: u32 = 0;
    /// `mm_vmscan_memcg_reclaim_*`: a charge found the cgroup (or an ancestor) at its limit.
    pub const MEMCG: u32 = 1;
    pub const COUNT: u32 = 2;
}

/// The `kind` label of a `kind` number.
pub fn kind_name(what: u32) -> Option<&'static str> {
    match what {
        kind::DIRECT => Some("direct"),
        kind::MEMCG => Some("memcg"),
        _ => None,
    }
}

/// Key of `RECLAIM_STALLS`: bucket as in `counters::latency_bucket`, or `LATENCY_SUM_BUCKET` for
/// the exact sum of nanoseconds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReclaimKey {
    pub cgroup_id: u64,
    /// One of `kind`.
    pub kind: u32,
    pub bucket: u32,
}
const _: () = assert!(core::mem::size_of::<ReclaimKey>() == 16);

/// Every key a cgroup's stalls can have in `RECLAIM_STALLS`, one per kind and bucket (under
/// `OVERFLOW_CGROUP_ID`: the overflow entries).
pub fn keys_of(cgroup_id: u64) -> impl Iterator<Item = ReclaimKey> {
    (0..kind::COUNT).flat_map(move |what| {
        (0..=LATENCY_SUM_BUCKET).map(move |bucket| ReclaimKey { cgroup_id, kind: what, bucket })
    })
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: a plain `#[repr(C)]` integer struct without implicit padding.
    unsafe impl aya::Pod for super::ReclaimKey {}
}
