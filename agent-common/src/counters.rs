//! What every family's counting maps share: the cgroup id that overflowing updates land under,
//! the log2 latency buckets of all histograms, and the `MAP_FULL` counters that say how often
//! each bounded resource was exhausted. Families depend on this module, never on each other.

/// Per-CPU array `u32` index (see `map_full`) → `u64`: how often each bounded resource was full.
pub const MAP_FULL_MAP: &str = "MAP_FULL";

/// The cgroup id of every family's overflow keys: updates that find a hash map full land under
/// it (user space creates those keys before attaching), so nothing is lost. Errors and latencies
/// of cgroups without a syscall slot are keyed under it too. 0 is no cgroup's id.
pub const OVERFLOW_CGROUP_ID: u64 = 0;

/// Number of log2 latency buckets: bucket `b` holds durations in `[2^(b-1), 2^b)` ns (bucket 0
/// holds 0 ns); the last bucket also holds everything longer.
pub const LATENCY_BUCKETS: u32 = 40;
/// The bucket index under which a histogram map accumulates the total nanoseconds of its key:
/// the histogram's exact `_sum`.
pub const LATENCY_SUM_BUCKET: u32 = LATENCY_BUCKETS;

/// The log2 bucket of a duration in nanoseconds (see `LATENCY_BUCKETS`).
#[inline(always)]
pub fn latency_bucket(nanos: u64) -> u32 {
    let bits = 64 - nanos.leading_zeros();
    if bits >= LATENCY_BUCKETS { LATENCY_BUCKETS - 1 } else { bits }
}

/// The value of the syscall and run-queue histograms' keys (cgroup, what is measured, log2
/// bucket): the bucket's observations and the sum of their nanoseconds. Kept together so that an
/// observation is one map update; the histogram's `_sum` is the sum over its buckets. (The other
/// families' histograms, off the hot paths, keep the sum under `LATENCY_SUM_BUCKET`.)
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyCell {
    pub count: u64,
    pub sum_nanos: u64,
}
const _: () = assert!(core::mem::size_of::<LatencyCell>() == 16);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: a plain `#[repr(C)]` struct of two u64, without padding.
    unsafe impl aya::Pod for super::LatencyCell {}
}

/// Indexes of `MAP_FULL`: each family owns a fixed range.
pub mod map_full {
    /// No free cgroup slot: counted in the overflow slot.
    pub const CGROUP_SLOTS: u32 = 0;
    pub const SYSCALL_ERRORS: u32 = 1;
    pub const SYSCALL_LATENCY: u32 = 2;
    pub const SYSCALL_START: u32 = 3;
    /// The kernel could not give a cgroup its local storage (memory): counted in the overflow slot.
    pub const CGROUP_STORAGE: u32 = 4;
    pub const RUNQ_LATENCY: u32 = 5;
    pub const RUNQ_START: u32 = 6;
    pub const PROCESS_COUNTS: u32 = 7;
    pub const NET_CGROUP_TRAFFIC: u32 = 8;
    pub const NET_INTERFACE_TRAFFIC: u32 = 9;
    pub const NET_TCP_EVENTS: u32 = 10;
    pub const NET_CGROUP_DROPS: u32 = 11;
    /// A cgroup reached its quota of `SYSCALL_ERRORS` entries: counted in its own overflow key.
    pub const SYSCALL_ERRORS_QUOTA: u32 = 12;
    /// A cgroup reached its quota of `SYSCALL_LATENCY` entries: counted under `other`.
    pub const SYSCALL_LATENCY_QUOTA: u32 = 13;
    /// The TC interface counters (network family, beside the XDP ones).
    pub const NET_TC_TRAFFIC: u32 = 14;
    /// Capabilities family (indices 16..=23).
    pub const CAPABILITY_CHECKS: u32 = 16;
    /// Memory reclaim family (24..=25): the stall histogram, then the threads-in-reclaim hash.
    pub const RECLAIM_STALLS: u32 = 24;
    pub const RECLAIM_START: u32 = 25;
    /// Block I/O family (26): the per (cgroup, device, op) counters and histogram.
    pub const BLOCK_IO: u32 = 26;
    /// Escape family (27..=28): the attempts hash, then the LRU of cgroups being set up.
    pub const ESCAPE_ATTEMPTS: u32 = 27;
    pub const ESCAPE_SETUP: u32 = 28;
    /// Room for every family's indices.
    pub const COUNT: u32 = 32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_log2() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(1), 1);
        assert_eq!(latency_bucket(1023), 10);
        assert_eq!(latency_bucket(1024), 11);
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn map_full_indexes_fit_the_map() {
        for index in [
            map_full::SYSCALL_LATENCY_QUOTA,
            map_full::CAPABILITY_CHECKS,
            map_full::RECLAIM_START,
            map_full::BLOCK_IO,
        ] {
            assert!(index < map_full::COUNT);
        }
    }
}
