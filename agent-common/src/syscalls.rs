//! Per-cgroup syscall accounting: the maps filled on `raw_syscalls:sys_exit`.

/// Name of the per-CPU hash map `SyscallKey` → `u64` (calls).
pub const SYSCALL_COUNTS_MAP: &str = "SYSCALL_COUNTS";
/// Name of the per-CPU hash map `LatencyKey` → `u64` (calls in that latency bucket).
pub const SYSCALL_LATENCY_MAP: &str = "SYSCALL_LATENCY";
/// Name of the hash map thread id → `sys_enter` timestamp (latency mode only).
pub const SYSCALL_START_MAP: &str = "SYSCALL_START";
/// Name of the per-CPU array of `MapFullCounter` slots.
pub const MAP_FULL_MAP: &str = "MAP_FULL";
/// Name of the read-only global that switches the latency histogram on (non-zero) or off.
pub const LATENCY_ENABLED_GLOBAL: &str = "LATENCY_ENABLED";

/// Default number of (cgroup, syscall, errno) entries in `SYSCALL_COUNTS`.
pub const DEFAULT_COUNT_ENTRIES: u32 = 32_768;
/// Default number of (cgroup, syscall, bucket) entries in `SYSCALL_LATENCY`.
pub const DEFAULT_LATENCY_ENTRIES: u32 = 65_536;
/// Default number of threads that can be inside a syscall at once while latency is measured.
pub const DEFAULT_START_ENTRIES: u32 = 16_384;

/// The cgroup id under which counts land once a map is full: they are never lost, only
/// attributed to this overflow key, which user space creates before attaching.
pub const OVERFLOW_CGROUP_ID: u64 = 0;
/// The syscall number of the overflow key.
pub const OVERFLOW_SYSCALL: u32 = u32::MAX;

/// Number of log2 latency buckets: bucket `b` holds durations in `[2^(b-1), 2^b)` nanoseconds
/// (bucket 0 holds 0 ns); the last bucket also holds everything longer.
pub const LATENCY_BUCKETS: u32 = 40;

/// Slots of `MAP_FULL`: how many updates found a map full and went to the overflow key.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapFullSlot {
    SyscallCounts = 0,
    SyscallLatency = 1,
    SyscallStart = 2,
}

/// Number of slots in `MAP_FULL`.
pub const MAP_FULL_SLOTS: u32 = 3;

/// Key of `SYSCALL_COUNTS`: one entry per cgroup, syscall and outcome.
///
/// `errno` is 0 for calls that succeeded and the positive errno for calls that failed, so the
/// kernel side does exactly one map update per syscall, whatever its outcome.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SyscallKey {
    /// cgroup v2 id (`bpf_get_current_cgroup_id`), the inode number of the cgroup's directory.
    pub cgroup_id: u64,
    /// Syscall number of the running architecture.
    pub syscall: u32,
    /// 0 on success, else the errno the syscall returned.
    pub errno: u32,
}
const _: () = assert!(core::mem::size_of::<SyscallKey>() == 16);

/// Key of `SYSCALL_LATENCY`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LatencyKey {
    pub cgroup_id: u64,
    pub syscall: u32,
    /// log2 bucket, `0..LATENCY_BUCKETS`, or `LATENCY_SUM_BUCKET` for the sum of nanoseconds.
    pub bucket: u32,
}
const _: () = assert!(core::mem::size_of::<LatencyKey>() == 16);

/// Highest errno the kernel returns from a syscall (`MAX_ERRNO`): a return value in
/// `-MAX_ERRNO..=-1` is a failure, anything else a result.
pub const MAX_ERRNO: i64 = 4095;

/// The errno a syscall's return value carries, or 0 when it succeeded.
#[inline(always)]
pub fn errno_of(ret: i64) -> u32 {
    if ret < 0 && ret >= -MAX_ERRNO {
        (-ret) as u32
    } else {
        0
    }
}

/// The log2 bucket of a duration in nanoseconds (see `LATENCY_BUCKETS`).
#[inline(always)]
pub fn latency_bucket(nanos: u64) -> u32 {
    let bits = 64 - nanos.leading_zeros();
    if bits >= LATENCY_BUCKETS {
        LATENCY_BUCKETS - 1
    } else {
        bits
    }
}

/// The bucket index under which `SYSCALL_LATENCY` accumulates the total nanoseconds of a
/// (cgroup, syscall) pair: the histogram's exact `_sum`.
pub const LATENCY_SUM_BUCKET: u32 = LATENCY_BUCKETS;

/// Upper bound, in nanoseconds, of a latency bucket (`None` for the last, open-ended one).
pub fn latency_bucket_upper_nanos(bucket: u32) -> Option<u64> {
    if bucket + 1 >= LATENCY_BUCKETS {
        None
    } else {
        Some(1u64 << bucket)
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integer structs without implicit padding.
    unsafe impl aya::Pod for super::SyscallKey {}
    unsafe impl aya::Pod for super::LatencyKey {}
}
