//! Per-cgroup syscall accounting: the maps that `ks_sys_exit` fills.
//!
//! Hot path: each cgroup that makes syscalls gets a slot, cached per CPU and in the cgroup's own
//! local storage, and each slot owns one row of a per-CPU array with a counter per syscall
//! number. Array updates are inlined by the verifier, so counting a syscall costs no hash
//! lookup; failed calls (rarer) also go to a hash keyed by (cgroup, syscall, errno).

/// Per-CPU array `u32 slot` → `SyscallRow`. Slot `OVERFLOW_SLOT` collects what found no slot.
pub const SYSCALL_ROWS_MAP: &str = "SYSCALL_ROWS";
/// Array `u32 slot` → `u64` cgroup id owning the slot (0: free).
pub const SLOT_OWNERS_MAP: &str = "SLOT_OWNERS";
/// Queue of free slots, filled by user space, popped by the kernel side.
pub const FREE_SLOTS_MAP: &str = "FREE_SLOTS";
/// The slot of each cgroup: cgroup local storage (0 until one is assigned), or (the fallback
/// object) a hash `u64 cgroup id` → `u32 slot` holding the cgroups that got a slot.
pub const CGROUP_SLOTS_MAP: &str = "CGROUP_SLOTS";
/// Per-CPU one-entry cache of the last cgroup seen on that CPU and its slot.
pub const LAST_CGROUP_MAP: &str = "LAST_CGROUP";
/// Per-CPU hash `SyscallKey` → `u64`: failed calls by errno.
pub const SYSCALL_ERRORS_MAP: &str = "SYSCALL_ERRORS";
/// Per-CPU hash `LatencyKey` → `u64`: calls per latency bucket (latency mode).
pub const SYSCALL_LATENCY_MAP: &str = "SYSCALL_LATENCY";
/// LRU hash thread id → `sys_enter` timestamp (latency mode).
pub const SYSCALL_START_MAP: &str = "SYSCALL_START";
/// Per-CPU array of `MapFullSlot` counters.
pub const MAP_FULL_MAP: &str = "MAP_FULL";

/// Read-only globals the agent sets before loading (`u8`: non-zero switches latency on).
pub const LATENCY_ENABLED_GLOBAL: &str = "LATENCY_ENABLED";
/// Read-only globals (`u32`): byte offsets of the members on the path
/// `current->cgroups->dfl_cgrp->kn->id`, read from the running kernel's BTF.
pub const TASK_CGROUPS_OFFSET_GLOBAL: &str = "TASK_CGROUPS_OFFSET";
pub const CSS_SET_DFL_CGRP_OFFSET_GLOBAL: &str = "CSS_SET_DFL_CGRP_OFFSET";
pub const CGROUP_KN_OFFSET_GLOBAL: &str = "CGROUP_KN_OFFSET";
pub const KERNFS_NODE_ID_OFFSET_GLOBAL: &str = "KERNFS_NODE_ID_OFFSET";
/// Read-only globals (`u32`) for hybrid and v1-only hosts: tasks in the v2 root are attributed
/// to their cgroup in the v1 hierarchy of controller `V1_SUBSYS_ID` (an `enum cgroup_subsys_id`
/// value), found at `css_set->subsys[V1_SUBSYS_ID]->cgroup`. `NO_V1_SUBSYS` turns this off.
pub const V1_SUBSYS_ID_GLOBAL: &str = "V1_SUBSYS_ID";
pub const CSS_SET_SUBSYS_OFFSET_GLOBAL: &str = "CSS_SET_SUBSYS_OFFSET";
pub const CSS_CGROUP_OFFSET_GLOBAL: &str = "CSS_CGROUP_OFFSET";
pub const NO_V1_SUBSYS: u32 = u32::MAX;

/// The id of the root cgroup of a hierarchy.
pub const ROOT_CGROUP_ID: u64 = 1;
/// Set in the ids of v1 cgroups: v1 and v2 ids are inode numbers of different filesystems and
/// may collide. Kernel cgroup ids never use the top bit (`generation << 32 | inode`).
pub const V1_CGROUP_ID_BIT: u64 = 1 << 63;

/// Columns of a `SyscallRow`: syscall numbers `0..SYSCALL_COLUMNS - 1` count in their own
/// column; anything else (x32 numbers, -1) in the last one.
pub const SYSCALL_COLUMNS: usize = 512;
pub const OUT_OF_RANGE_COLUMN: usize = SYSCALL_COLUMNS - 1;

/// The slot that collects the syscalls of cgroups that found no free slot.
pub const OVERFLOW_SLOT: u32 = 0;
/// Default number of cgroup slots (kernel memory: 4 KiB per slot per possible CPU).
pub const DEFAULT_CGROUP_SLOTS: u32 = 512;
/// Default number of (cgroup, syscall, errno) entries in `SYSCALL_ERRORS`.
pub const DEFAULT_ERROR_ENTRIES: u32 = 16_384;
/// Default number of (cgroup, syscall, bucket) entries in `SYSCALL_LATENCY`.
pub const DEFAULT_LATENCY_ENTRIES: u32 = 65_536;
/// Number of threads that can be inside a syscall with a recorded start time (LRU).
pub const START_ENTRIES: u32 = 16_384;

/// The cgroup id and syscall number of the overflow key of the hash maps: updates that find
/// the map full land there (user space creates it before attaching), so nothing is lost.
pub const OVERFLOW_CGROUP_ID: u64 = 0;
pub const OVERFLOW_SYSCALL: u32 = u32::MAX;

/// Number of log2 latency buckets: bucket `b` holds durations in `[2^(b-1), 2^b)` ns (bucket 0
/// holds 0 ns); the last bucket also holds everything longer.
pub const LATENCY_BUCKETS: u32 = 40;
/// The bucket index under which `SYSCALL_LATENCY` accumulates the total nanoseconds of a
/// (cgroup, syscall) pair: the histogram's exact `_sum`.
pub const LATENCY_SUM_BUCKET: u32 = LATENCY_BUCKETS;

/// Indexes of `MAP_FULL`: how often each bounded resource was exhausted.
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
    /// Security family (indices 16..=23).
    pub const CAPABILITY_CHECKS: u32 = 16;
    /// Memory reclaim family (24..=25): the stall histogram, then the threads-in-reclaim hash.
    pub const RECLAIM_STALLS: u32 = 24;
    pub const RECLAIM_START: u32 = 25;
    /// Room for every family's indices; each family owns a fixed range.
    pub const COUNT: u32 = 32;
}

/// Calls per syscall number of one cgroup slot.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallRow {
    pub calls: [u64; SYSCALL_COLUMNS],
}
const _: () = assert!(core::mem::size_of::<SyscallRow>() == 8 * SYSCALL_COLUMNS);

impl Default for SyscallRow {
    fn default() -> Self {
        Self { calls: [0; SYSCALL_COLUMNS] }
    }
}

/// The last cgroup a CPU ran a syscall for, and its slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CgroupCache {
    pub cgroup_id: u64,
    pub slot: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<CgroupCache>() == 16);

/// Key of `SYSCALL_ERRORS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SyscallKey {
    /// cgroup v2 id, the inode number of the cgroup's directory.
    pub cgroup_id: u64,
    /// Syscall number of the running architecture.
    pub syscall: u32,
    /// The errno the syscall returned.
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
    if (-MAX_ERRNO..0).contains(&ret) { (-ret) as u32 } else { 0 }
}

/// The column of a syscall number in a `SyscallRow`.
#[inline(always)]
pub fn column_of(syscall: u64) -> usize {
    if syscall < OUT_OF_RANGE_COLUMN as u64 { syscall as usize } else { OUT_OF_RANGE_COLUMN }
}

/// The log2 bucket of a duration in nanoseconds (see `LATENCY_BUCKETS`).
#[inline(always)]
pub fn latency_bucket(nanos: u64) -> u32 {
    let bits = 64 - nanos.leading_zeros();
    if bits >= LATENCY_BUCKETS { LATENCY_BUCKETS - 1 } else { bits }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integer structs without implicit padding.
    unsafe impl aya::Pod for super::SyscallKey {}
    unsafe impl aya::Pod for super::LatencyKey {}
    unsafe impl aya::Pod for super::SyscallRow {}
    unsafe impl aya::Pod for super::CgroupCache {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_only_for_kernel_error_range() {
        assert_eq!(errno_of(-2), 2);
        assert_eq!(errno_of(-4095), 4095);
        assert_eq!(errno_of(-4096), 0); // a valid negative result (e.g. an address), not an errno
        assert_eq!(errno_of(0), 0);
        assert_eq!(errno_of(17), 0);
    }

    #[test]
    fn buckets_are_log2() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(1), 1);
        assert_eq!(latency_bucket(1023), 10);
        assert_eq!(latency_bucket(1024), 11);
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn out_of_range_syscalls_share_the_last_column() {
        assert_eq!(column_of(39), 39);
        assert_eq!(column_of(0x4000_0000), OUT_OF_RANGE_COLUMN);
        assert_eq!(column_of(u64::MAX), OUT_OF_RANGE_COLUMN);
    }
}
