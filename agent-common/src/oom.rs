//! OOM kills (`oom:mark_victim`): one ring-buffer record per task the OOM killer picks.
//!
//! Two programs share the tracepoint. The BTF raw tracepoint (`tp_btf/mark_victim`) sees the
//! victim's `task_struct`: its cgroup and tgid; the classic tracepoint
//! (`tracepoint/oom/mark_victim`) reads the record the kernel computed (pid, comm, RSS by kind,
//! uid, oom_score_adj: a stable ABI whose field offsets the agent reads from tracefs). Either may
//! run first (other tools' perf events on the tracepoint decide): the first leaves its half under
//! the victim's pid (`OOM_VICTIMS` or `OOM_PENDING`), the second joins them and emits the event.

/// Ring buffer of `OomEvent` records.
pub const OOM_EVENTS_MAP: &str = "OOM_EVENTS";
/// Per-CPU array, one slot: events that found the ring buffer full.
pub const OOM_EVENTS_LOST_MAP: &str = "OOM_EVENTS_LOST";
/// LRU hash: victim pid → `VictimTask`, left by the BTF raw tracepoint when it runs first.
pub const OOM_VICTIMS_MAP: &str = "OOM_VICTIMS";
/// LRU hash: victim pid → `OomEvent` without its cgroup, left by the classic tracepoint when it
/// runs first.
pub const OOM_PENDING_MAP: &str = "OOM_PENDING";
/// Ring buffer size in bytes (a power of two multiple of the page size).
pub const OOM_EVENTS_BYTES: u32 = 64 * 1024;
/// Victims remembered by pid in each of the two maps (LRU).
pub const OOM_VICTIMS_ENTRIES: u32 = 1024;

/// Read-only globals (`u32`): offsets of the `mark_victim` record's fields, from
/// `/sys/kernel/tracing/events/oom/mark_victim/format`; `FIELD_ABSENT` when this kernel's record
/// lacks the field (older kernels only have `pid`).
pub const FIELD_ABSENT: u32 = u32::MAX;
pub const OOM_FIELD_GLOBALS: [(&str, &str); 9] = [
    ("pid", "OOM_PID_OFFSET"),
    ("comm", "OOM_COMM_OFFSET"),
    ("total_vm", "OOM_TOTAL_VM_OFFSET"),
    ("anon_rss", "OOM_ANON_RSS_OFFSET"),
    ("file_rss", "OOM_FILE_RSS_OFFSET"),
    ("shmem_rss", "OOM_SHMEM_RSS_OFFSET"),
    ("uid", "OOM_UID_OFFSET"),
    ("pgtables", "OOM_PGTABLES_OFFSET"),
    ("oom_score_adj", "OOM_SCORE_ADJ_OFFSET"),
];
/// Read-only global (`u32`): 1 when `comm` is a `__data_loc char[]` (offset and length of the
/// string in the record), 0 when it is an inline `char[16]`.
pub const OOM_COMM_DATA_LOC_GLOBAL: &str = "OOM_COMM_DATA_LOC";

/// `OomEvent::cgroup_source`: the cgroup is the victim task's own (from the BTF raw tracepoint);
/// the only source today, kept on the wire so that another can be told apart.
pub const CGROUP_OF_VICTIM: u32 = 1;

pub const COMM_LEN: usize = 16;

/// What the BTF raw tracepoint learns of the victim task.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VictimTask {
    /// The victim's cgroup id, tagged as the syscall family's ids are (`V1_CGROUP_ID_BIT`).
    pub cgroup_id: u64,
    pub tgid: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<VictimTask>() == 16);

/// One OOM kill. Memory sizes are in KiB, as the tracepoint reports them (`K(pages)`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OomEvent {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub timestamp_ns: u64,
    /// Tagged cgroup id (see `cgroup_source`).
    pub cgroup_id: u64,
    pub total_vm_kib: u64,
    pub anon_rss_kib: u64,
    pub file_rss_kib: u64,
    pub shmem_rss_kib: u64,
    pub pgtables_kib: u64,
    /// The victim's pid (thread id).
    pub pid: u32,
    /// The victim's tgid, 0 when unknown.
    pub tgid: u32,
    pub uid: u32,
    /// Thread id of the task that ran the OOM killer.
    pub current_pid: u32,
    /// `CGROUP_OF_VICTIM`.
    pub cgroup_source: u32,
    pub oom_score_adj: i16,
    pub _pad: u16,
    /// NUL-terminated when shorter than 16 bytes.
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(core::mem::size_of::<OomEvent>() == 96);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]` integers and bytes without implicit padding.
    unsafe impl aya::Pod for super::OomEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VictimTask {}
}
