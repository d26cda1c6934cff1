//! Per-cgroup syscall accounting: the maps that `ks_sys_exit` fills.
//!
//! Hot path: each cgroup that makes syscalls gets a slot, cached per CPU and in the cgroup's own
//! local storage, and each slot owns one row of a per-CPU array with a counter per syscall
//! number. Array updates are inlined by the verifier, so counting a syscall costs no hash
//! lookup; failed calls (rarer) also go to a hash keyed by (cgroup, syscall, errno).

use crate::counters::LATENCY_BUCKETS;

/// Per-CPU array `u32 slot` → `SyscallRow`. Slot `OVERFLOW_SLOT` collects what found no slot.
pub const SYSCALL_ROWS_MAP: &str = "SYSCALL_ROWS";
/// Array `u32 slot` → `u64` cgroup id owning the slot (0: free).
pub const SLOT_OWNERS_MAP: &str = "SLOT_OWNERS";
/// Queue of free slots, filled by user space, popped by the kernel side.
pub const FREE_SLOTS_MAP: &str = "FREE_SLOTS";
/// The slot of each cgroup of the unified (v2) hierarchy: cgroup local storage (0 until one is
/// assigned), or (the fallback object) a hash `u64 cgroup id` → `u32 slot` holding the cgroups
/// that got a slot.
pub const CGROUP_SLOTS_MAP: &str = "CGROUP_SLOTS";
/// The slot of each v1 cgroup (hybrid and v1 hosts), in both objects: a hash `u64 cgroup id`
/// (with `V1_CGROUP_ID_BIT`) → `u32 slot`. Local storage cannot hold them: the v1 cgroup is
/// reached through `css_set->subsys[]->cgroup`, which verifiers (6.18.44, for one) do not take
/// as a trusted pointer, and `bpf_cgrp_storage_get` needs one.
pub const V1_CGROUP_SLOTS_MAP: &str = "V1_CGROUP_SLOTS";
/// Per-CPU one-entry cache of the last thread (by its `pt_regs`) and cgroup seen on that CPU,
/// and the cgroup's slot (`CgroupCache`).
pub const LAST_CGROUP_MAP: &str = "LAST_CGROUP";
/// Array of one `u64`: the epoch of `LAST_CGROUP`'s thread entries. 0 (the cache trusts no
/// thread) until the agent has attached the programs that add 1 at each fork and cgroup move.
pub const ATTRIBUTION_EPOCH_MAP: &str = "ATTRIBUTION_EPOCH";
/// Per-CPU hash `SyscallKey` → `u64`: failed calls by errno.
pub const SYSCALL_ERRORS_MAP: &str = "SYSCALL_ERRORS";
/// Array `u32 slot` → `SlotEntries`: how many `SYSCALL_ERRORS` and `SYSCALL_LATENCY` entries
/// the cgroup owning the slot created, against its quota.
pub const SLOT_ENTRIES_MAP: &str = "SLOT_ENTRIES";
/// Per-CPU hash `LatencyKey` → `counters::LatencyCell`: calls per latency bucket and the sum of
/// their durations (latency mode).
pub const SYSCALL_LATENCY_MAP: &str = "SYSCALL_LATENCY";
/// LRU hash thread id → `sys_enter` timestamp (latency mode).
pub const SYSCALL_START_MAP: &str = "SYSCALL_START";

/// Read-only globals the agent sets before loading (`u8`: non-zero switches latency on).
pub const LATENCY_ENABLED_GLOBAL: &str = "LATENCY_ENABLED";
/// Read-only globals (`u32`): entries of `SYSCALL_ERRORS` and of `SYSCALL_LATENCY` one cgroup
/// slot may create (see `error_quota`, `latency_quota`).
pub const ERROR_QUOTA_GLOBAL: &str = "ERROR_QUOTA";
pub const LATENCY_QUOTA_GLOBAL: &str = "LATENCY_QUOTA";
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

/// The syscall number of the overflow key of the hash maps: updates that find the map full land
/// under (`counters::OVERFLOW_CGROUP_ID`, `OVERFLOW_SYSCALL`), created by user space before
/// attaching, so nothing is lost.
pub const OVERFLOW_SYSCALL: u32 = u32::MAX;

/// `SyscallKey::errno` of failures whose errno is outside `KNOWN_ERRNOS` (seccomp's
/// `SECCOMP_RET_ERRNO` lets a process return any errno up to `MAX_ERRNO`). 0 is never a
/// failure's errno. Also the errno of a cgroup's own overflow key (`OVERFLOW_SYSCALL`, 0): the
/// failures past its quota.
pub const OTHER_ERRNO: u32 = 0;
/// The errnos the kernel returns from syscalls (`EPERM` 1 to `EHWPOISON` 133, the same on
/// x86_64 and arm64), each keyed as itself.
pub const MAX_USER_ERRNO: u32 = 133;
/// Kernel-internal restart codes (`ERESTARTSYS` 512 to `ERESTART_RESTARTBLOCK` 516) that
/// `sys_exit` sees before signal handling turns them into `EINTR` or a restart.
pub const KERNEL_RESTART_ERRNOS: core::ops::RangeInclusive<u32> = 512..=516;

/// The errno a failure is keyed by: itself when the kernel could have returned it, else
/// `OTHER_ERRNO`, so that a workload can create at most ~140 errno keys per syscall.
#[inline(always)]
pub fn bounded_errno(errno: u32) -> u32 {
    if (1..=MAX_USER_ERRNO).contains(&errno) || KERNEL_RESTART_ERRNOS.contains(&errno) {
        errno
    } else {
        OTHER_ERRNO
    }
}

/// Entries of `SYSCALL_ERRORS` each cgroup slot may create (the overflow slot's included), so
/// that all slots together fit in `entries` and one cgroup cannot evict another's rows: one of
/// them is kept for the cgroup's own overflow key. At least 2 (one key and the overflow key).
pub const fn error_quota(entries: u32, slots: u32) -> u32 {
    let quota = entries / (slots + 1);
    if quota < 2 { 2 } else { quota }
}

/// Entries of `SYSCALL_LATENCY` each cgroup slot may create; past it, its latencies count under
/// `OVERFLOW_CGROUP_ID` (the overflow keys, one per bucket, come off the map first).
pub const fn latency_quota(entries: u32, slots: u32) -> u32 {
    let room = entries.saturating_sub(LATENCY_BUCKETS);
    let quota = room / (slots + 1);
    if quota < 1 { 1 } else { quota }
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

/// The last syscall a CPU counted: its thread (the address of its `pt_regs`, at the top of the
/// thread's kernel stack), the attribution epoch then, and its cgroup and slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CgroupCache {
    pub regs: u64,
    pub epoch: u64,
    pub cgroup_id: u64,
    pub slot: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<CgroupCache>() == 32);

/// Entries a cgroup slot created in the syscall family's hash maps (value of `SLOT_ENTRIES`).
/// Shared by all CPUs: incremented with atomic adds, zeroed when the slot is recycled.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotEntries {
    pub errors: u64,
    pub latency: u64,
}
const _: () = assert!(core::mem::size_of::<SlotEntries>() == 16);

/// Key of `SYSCALL_ERRORS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SyscallKey {
    /// cgroup v2 id, the inode number of the cgroup's directory; `OVERFLOW_CGROUP_ID` for
    /// cgroups without a slot.
    pub cgroup_id: u64,
    /// The syscall's column (`column_of`): `OUT_OF_RANGE_COLUMN` for numbers outside the
    /// table; `OVERFLOW_SYSCALL` for the overflow keys.
    pub syscall: u32,
    /// `bounded_errno` of the errno the syscall returned.
    pub errno: u32,
}
const _: () = assert!(core::mem::size_of::<SyscallKey>() == 16);

/// Key of `SYSCALL_LATENCY`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LatencyKey {
    /// As in `SyscallKey`.
    pub cgroup_id: u64,
    /// As in `SyscallKey`.
    pub syscall: u32,
    /// log2 bucket, `0..LATENCY_BUCKETS`.
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

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integer structs without implicit padding.
    unsafe impl aya::Pod for super::SyscallKey {}
    unsafe impl aya::Pod for super::LatencyKey {}
    unsafe impl aya::Pod for super::SyscallRow {}
    unsafe impl aya::Pod for super::CgroupCache {}
    unsafe impl aya::Pod for super::SlotEntries {}
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
    fn errnos_outside_the_kernels_set_share_one_key() {
        assert_eq!(bounded_errno(2), 2);
        assert_eq!(bounded_errno(133), 133);
        assert_eq!(bounded_errno(512), 512);
        assert_eq!(bounded_errno(516), 516);
        for chosen in [134, 511, 517, 1000, 4095] {
            assert_eq!(bounded_errno(chosen), OTHER_ERRNO, "{chosen}");
        }
    }

    #[test]
    fn quotas_share_the_maps_between_slots() {
        // The defaults: 513 slots (the overflow slot too) in 16,384 error entries.
        let errors = error_quota(DEFAULT_ERROR_ENTRIES, DEFAULT_CGROUP_SLOTS);
        assert_eq!(errors, 31);
        assert!(513 * errors <= DEFAULT_ERROR_ENTRIES);
        assert_eq!(error_quota(16, 512), 2);
        let latency = latency_quota(DEFAULT_LATENCY_ENTRIES, DEFAULT_CGROUP_SLOTS);
        assert!(513 * latency + LATENCY_BUCKETS <= DEFAULT_LATENCY_ENTRIES);
        assert_eq!(latency, 127);
    }

    #[test]
    fn out_of_range_syscalls_share_the_last_column() {
        assert_eq!(column_of(39), 39);
        assert_eq!(column_of(0x4000_0000), OUT_OF_RANGE_COLUMN);
        assert_eq!(column_of(u64::MAX), OUT_OF_RANGE_COLUMN);
    }
}
