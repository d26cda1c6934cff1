//! The `runqueue` family's wire types: run-queue latency per cgroup (`sched_wakeup`,
//! `sched_wakeup_new`, `sched_switch`), aggregated in the kernel in a per-CPU hash.

/// When the thread became runnable (ns, `bpf_ktime_get_ns`), 0 once it ran: task local storage,
/// or (the fallback object) an LRU hash keyed by thread id of `RUNQ_START_ENTRIES` entries.
pub const RUNQ_START_MAP: &str = "RUNQ_START";
/// Threads the fallback object's `RUNQ_START` remembers (the runnable ones are far fewer).
pub const RUNQ_START_ENTRIES: u32 = 16_384;
/// Per-CPU hash `RunqKey` → `u64`: switches-in per log2 run-queue latency bucket, and the sum.
pub const RUNQ_LATENCY_MAP: &str = "RUNQ_LATENCY";

/// Read-only globals (`u32`) of the runqueue family: 1 when `sched_switch` passes `prev_state`
/// (5.18+); else the offset of `task_struct.__state` (5.14+) or `.state`, read from `prev`.
pub const SWITCH_HAS_PREV_STATE_GLOBAL: &str = "SWITCH_HAS_PREV_STATE";
pub const TASK_STATE_OFFSET_GLOBAL: &str = "TASK_STATE_OFFSET";

/// Default bound of `RUNQ_LATENCY` ((cgroup, bucket) entries).
pub const DEFAULT_RUNQ_LATENCY_ENTRIES: u32 = 16_384;

/// Key of `RUNQ_LATENCY`: bucket as in `counters::latency_bucket`, or
/// `counters::LATENCY_SUM_BUCKET` for the exact sum of nanoseconds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RunqKey {
    pub cgroup_id: u64,
    pub bucket: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<RunqKey>() == 16);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: a plain `#[repr(C)]` integer struct with explicit padding.
    unsafe impl aya::Pod for super::RunqKey {}
}
