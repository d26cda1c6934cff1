//! The `runqueue` family's wire types: run-queue latency per cgroup (`sched_wakeup`,
//! `sched_wakeup_new`, `sched_switch`), aggregated in the kernel in a per-CPU hash.

/// When the thread became runnable (ns, by its run queue's clock where `RQ_CLOCK` is set, else
/// `bpf_ktime_get_ns`; the lowest bit is the wait's reason), 0 once it ran: task local storage,
/// or (the fallback object) an LRU hash keyed by thread id of `RUNQ_START_ENTRIES` entries.
pub const RUNQ_START_MAP: &str = "RUNQ_START";
/// Threads the fallback object's `RUNQ_START` remembers (the runnable ones are far fewer).
pub const RUNQ_START_ENTRIES: u32 = 16_384;
/// Per-CPU hash `RunqKey` → `counters::LatencyCell`: switches-in per log2 run-queue latency
/// bucket, and the sum of their waits.
pub const RUNQ_LATENCY_MAP: &str = "RUNQ_LATENCY";

/// Read-only globals (`u32`) of the runqueue family: 1 when `sched_switch` passes `prev_state`
/// (5.18+); else the offset of `task_struct.__state` (5.14+) or `.state`, read from `prev`.
pub const SWITCH_HAS_PREV_STATE_GLOBAL: &str = "SWITCH_HAS_PREV_STATE";
pub const TASK_STATE_OFFSET_GLOBAL: &str = "TASK_STATE_OFFSET";

/// Read-only globals (`u32`) that tell a throttled wait from a contended one: 1 when the kernel's
/// BTF has the members below (CONFIG_FAIR_GROUP_SCHED and CONFIG_CFS_BANDWIDTH), else 0 and
/// every wait is counted under `WAIT_CONTENTION`; the offset of `sched_entity.cfs_rq` inside
/// `task_struct` (`se` + `cfs_rq`); the offset of `cfs_rq.throttle_count` (non-zero while that
/// cfs_rq or an ancestor is throttled on its CPU).
pub const WAIT_REASON_GLOBAL: &str = "WAIT_REASON";
pub const TASK_SE_CFS_RQ_OFFSET_GLOBAL: &str = "TASK_SE_CFS_RQ_OFFSET";
pub const CFS_RQ_THROTTLE_COUNT_OFFSET_GLOBAL: &str = "CFS_RQ_THROTTLE_COUNT_OFFSET";

/// Read-only globals (`u32`) of the clock waits are timed by: 1 when the kernel's BTF has the
/// members below (CONFIG_FAIR_GROUP_SCHED), else 0 and waits are timed by `bpf_ktime_get_ns`;
/// the offset of `cfs_rq.rq` (the run queue a task's cfs_rq belongs to) and of `rq.clock`.
/// `TASK_SE_CFS_RQ_OFFSET` is set with them. The scheduler updates `rq.clock` just before the
/// three tracepoints fire, so reading it is three loads instead of a clock read per event.
pub const RQ_CLOCK_GLOBAL: &str = "RQ_CLOCK";
pub const CFS_RQ_RQ_OFFSET_GLOBAL: &str = "CFS_RQ_RQ_OFFSET";
pub const RQ_CLOCK_OFFSET_GLOBAL: &str = "RQ_CLOCK_OFFSET";

/// Read-only globals (`u32`) of where a wait's start is read: 1 when it is the scheduler's own
/// account, `task_struct.sched_info.last_queued` (CONFIG_SCHED_INFO, live, and `RQ_CLOCK` set:
/// it is stamped by the run queue's clock), else 0 and a program on each wakeup stamps it in
/// `RUNQ_START`; the offset of `sched_info.last_queued` inside `task_struct`. With 1, only
/// throttled waits are stamped in `RUNQ_START` (their reason is decided when they begin, and on
/// 6.18 a throttled task leaves the run queue, which ends the scheduler's account of its wait).
pub const SCHED_INFO_GLOBAL: &str = "SCHED_INFO";
pub const TASK_LAST_QUEUED_OFFSET_GLOBAL: &str = "TASK_LAST_QUEUED_OFFSET";

/// Read-only globals (`u32`) of throttle episodes: 1 when the kernel's BTF has
/// `cfs_rq.throttled_clock_self_time` (6.6+) and waits are split by reason, else 0; its offset.
pub const THROTTLE_EPISODES_GLOBAL: &str = "THROTTLE_EPISODES";
pub const CFS_RQ_THROTTLED_SELF_TIME_OFFSET_GLOBAL: &str = "CFS_RQ_THROTTLED_SELF_TIME_OFFSET";
/// LRU hash cfs_rq address → its `throttled_clock_self_time` when an episode was last counted
/// (or when a throttled wait began and none was remembered): what tells a new episode from one
/// already counted by another thread of the group.
pub const THROTTLE_SEEN_MAP: &str = "THROTTLE_SEEN";
/// cfs_rqs `THROTTLE_SEEN` remembers (one per throttled cgroup and CPU). Only those throttled
/// now must stay: a reading evicted between episodes is taken again when the next throttled
/// wait begins, before that episode adds to it; one evicted during an episode loses that
/// episode. A 2,048-entry LRU costs about 0.2 MiB.
pub const THROTTLE_SEEN_ENTRIES: u32 = 2_048;

/// `RunqKey::reason`: runnable, not throttled, another task had the CPU (or the reason could not
/// be told on this kernel).
pub const WAIT_CONTENTION: u32 = 0;
/// `RunqKey::reason`: the wait began while the task's cfs_rq, or an ancestor's, was throttled
/// (its cgroup had used its `cpu.max` / CFS quota).
pub const WAIT_THROTTLED: u32 = 1;
/// `RunqKey::reason` of a throttle episode, not a wait: the time one cfs_rq (one cgroup on one
/// CPU) stayed throttled, from the throttle to the unthrottle (the growth of the kernel's
/// `cfs_rq.throttled_clock_self_time`, 6.6+), recorded once by the first of its threads to run
/// again. Not part of the run-queue latency.
pub const THROTTLE_EPISODE: u32 = 2;
/// The bit of a runnable-since timestamp that carries `WAIT_THROTTLED` (the timestamp loses its
/// last nanosecond).
pub const THROTTLED_BIT: u64 = 1;

/// Default bound of `RUNQ_LATENCY` ((cgroup, bucket) entries).
pub const DEFAULT_RUNQ_LATENCY_ENTRIES: u32 = 16_384;

/// Key of `RUNQ_LATENCY`: bucket as in `counters::latency_bucket`; `reason` is
/// `WAIT_CONTENTION` or `WAIT_THROTTLED` (0 in maps pinned before the reason existed), or
/// `THROTTLE_EPISODE` for the durations of throttle episodes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RunqKey {
    pub cgroup_id: u64,
    pub bucket: u32,
    pub reason: u32,
}
const _: () = assert!(core::mem::size_of::<RunqKey>() == 16);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: a plain `#[repr(C)]` integer struct with explicit padding.
    unsafe impl aya::Pod for super::RunqKey {}
}
