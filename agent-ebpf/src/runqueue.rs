//! The `runqueue` family: run-queue latency, as runqlat measures it. A thread becomes runnable
//! on `sched_wakeup` / `sched_wakeup_new`, or when it is switched out while still runnable
//! (preempted: `prev_state` is `TASK_RUNNING`); `sched_switch` to it then adds the time it
//! waited to a log2 histogram of its cgroup, under the reason it waited for.
//!
//! Where the wait began: with `SCHED_INFO`, the scheduler's own account,
//! `next->sched_info.last_queued`, which the scheduler stamps by the run queue's clock when the
//! thread is queued (or switched out still runnable) and clears just after this tracepoint,
//! when the thread gets the CPU. No program runs at the start of a contended wait then; only a
//! throttled one is stamped in `RUNQ_START`, with the same clock reading (see `wait_start`).
//! Without it (`sched.wait_start = "wakeup"`, or a kernel that keeps no such account), every
//! wait is stamped at its start.
//!
//! The reason is decided when the wait begins: if the task's `se.cfs_rq` has a non-zero
//! `throttle_count` (that cfs_rq or an ancestor is throttled on this CPU: the cgroup used its
//! `cpu.max` / CFS quota), the wait is `throttled`, else `contention`. The reason rides in the
//! lowest bit of the runnable-since timestamp, so the per-task storage stays one u64.
//! - Up to 6.17 a throttled group's entity is dequeued at the switch-out that throttles it (the
//!   throttle happens in `put_prev_task` before the tracepoint), so the running task leaves with
//!   `throttle_count` already set; a wakeup into a throttled group sees it too.
//! - 6.18 throttles per task: a task of a throttled group is dequeued on its way back to user
//!   space and switched out still `TASK_RUNNING`, with `throttle_count` set; unthrottling
//!   re-enqueues it without a wakeup, so the wait that began at that switch-out ends at its next
//!   switch-in and is wholly `throttled`. A task woken into a throttled group is queued and
//!   picked like any other and throttled on its own way back: the agent then attaches no wakeup
//!   program where the scheduler keeps each wait's start.
//! - Not split: a task that was already queued (preempted, not throttled) when its group became
//!   throttled keeps `contention` for that whole wait before 6.18 (on 6.18 it is picked, runs to
//!   user space and starts a new, throttled wait). A single-threaded task under its quota is the
//!   one running when the quota runs out, so its waits are exact; the error is bounded by the
//!   waits of other threads of the group queued at the throttle instant.
//! - A throttled wait runs to the switch-in, so it includes the wait for the CPU after the
//!   unthrottle: a few ms per episode on a busy CPU (cpu.stat's throttled time stops at the
//!   unthrottle).
//!
//! Throttle episodes: where the kernel keeps `cfs_rq.throttled_clock_self_time` (6.6+; the time
//! that cfs_rq was throttled, by itself or an ancestor, summed at each unthrottle), the end of
//! a throttled wait reads it: its growth since the last reading of that cfs_rq is the episode
//! that just ended, added once under `THROTTLE_EPISODE` (the group's other threads find no
//! growth). The reading to compare with is kept per cfs_rq in `THROTTLE_SEEN`, taken when a
//! throttled wait begins if none is kept, so the first episode counts too. Costs a hash lookup
//! at the start and the end of throttled waits only.
//!
//! The clock: each wait is timed by the run queue's own clock, `rq.clock` of the run queue the
//! task's cfs_rq belongs to. The scheduler updates it just before each of the three
//! tracepoints (`ttwu_do_activate`, `wake_up_new_task` and `__schedule` call `update_rq_clock`
//! first), and `/proc/PID/schedstat`'s run-queue wait is measured by it. Reading it is three
//! dependent loads where `bpf_ktime_get_ns` is a helper call through the clocksource, twice per
//! wait: a third of the two programs' cost in the kernel's account (docs/performance.md). A
//! wait that migrates between CPUs begins on one run queue's clock and ends on another's: both
//! follow `sched_clock`, kept in step across CPUs. Kernels without CONFIG_FAIR_GROUP_SCHED (no
//! `se.cfs_rq`) time waits with `bpf_ktime_get_ns`.
//!
//! Cost of the reason per wait: two BTF loads and a compare at its start (the offsets are
//! read-only globals the verifier folds; on a kernel without CFS bandwidth the branch is
//! pruned), a task-storage lookup for a stamp at its end, which a wait on a cfs_rq never
//! throttled skips on 6.6+ (`may_be_stamped`), and the key of the histogram update grows by
//! nothing (the reason replaces padding).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map},
    maps::{LruHashMap, PerCpuHashMap},
    programs::BtfTracePointContext,
};
use kernsight_common::{
    counters::{LatencyCell, OVERFLOW_CGROUP_ID, latency_bucket, map_full},
    runqueue::{
        DEFAULT_RUNQ_LATENCY_ENTRIES, RunqKey, THROTTLE_EPISODE, THROTTLE_SEEN_ENTRIES, THROTTLED_BIT,
        WAIT_CONTENTION, WAIT_THROTTLED,
    },
};

use crate::{
    counters::{add, count_map_full},
    features::runnable_since,
    task::{global, load, task_cgroup, task_pid},
};

/// 1 when `sched_switch` has a `prev_state` argument (5.18+), set by the agent.
#[unsafe(no_mangle)]
static SWITCH_HAS_PREV_STATE: u32 = 1;
/// Before that: the offset of `task_struct.__state` (or `.state` before 5.14).
#[unsafe(no_mangle)]
static TASK_STATE_OFFSET: u32 = 0;
/// 1 when the two offsets below were found in the kernel's BTF, set by the agent.
#[unsafe(no_mangle)]
static WAIT_REASON: u32 = 0;
/// Offset of `task_struct.se.cfs_rq` (CONFIG_FAIR_GROUP_SCHED).
#[unsafe(no_mangle)]
static TASK_SE_CFS_RQ_OFFSET: u32 = 0;
/// Offset of `cfs_rq.throttle_count` (CONFIG_CFS_BANDWIDTH).
#[unsafe(no_mangle)]
static CFS_RQ_THROTTLE_COUNT_OFFSET: u32 = 0;

/// 1 when waits are timed by the run queue's clock (the offsets below and
/// `TASK_SE_CFS_RQ_OFFSET` were found in the kernel's BTF), set by the agent.
#[unsafe(no_mangle)]
static RQ_CLOCK: u32 = 0;
/// Offset of `cfs_rq.rq`.
#[unsafe(no_mangle)]
static CFS_RQ_RQ_OFFSET: u32 = 0;
/// Offset of `rq.clock`.
#[unsafe(no_mangle)]
static RQ_CLOCK_OFFSET: u32 = 0;

/// 1 when throttle episodes are measured (the offset below was found), set by the agent.
#[unsafe(no_mangle)]
static THROTTLE_EPISODES: u32 = 0;
/// Offset of `cfs_rq.throttled_clock_self_time` (6.6+).
#[unsafe(no_mangle)]
static CFS_RQ_THROTTLED_SELF_TIME_OFFSET: u32 = 0;

/// 1 when a wait's start is the scheduler's own `sched_info.last_queued` (CONFIG_SCHED_INFO
/// live, and `RQ_CLOCK`: it is stamped by the same clock), set by the agent.
#[unsafe(no_mangle)]
static SCHED_INFO: u32 = 0;
/// Offset of `task_struct.sched_info.last_queued`.
#[unsafe(no_mangle)]
static TASK_LAST_QUEUED_OFFSET: u32 = 0;

#[map]
static THROTTLE_SEEN: LruHashMap<u64, u64> = LruHashMap::with_max_entries(THROTTLE_SEEN_ENTRIES, 0);

#[map]
static RUNQ_LATENCY: PerCpuHashMap<RunqKey, LatencyCell> =
    PerCpuHashMap::with_max_entries(DEFAULT_RUNQ_LATENCY_ENTRIES, 0);

/// `TASK_RUNNING`: a `prev_state` of 0 means the thread was preempted and is still runnable.
const TASK_RUNNING: u32 = 0;

/// `task`'s `se.cfs_rq`, loaded once per event for the wait reason and the run queue's clock;
/// null where neither is read (the verifier prunes the load with them).
#[inline(always)]
fn task_cfs_rq(task: *const u8) -> *const u8 {
    if global(&WAIT_REASON) == 0 && global(&RQ_CLOCK) == 0 {
        return core::ptr::null();
    }
    // SAFETY: `task` is a BTF `task_struct` pointer; the offset comes from the kernel's BTF.
    unsafe { load(task, global(&TASK_SE_CFS_RQ_OFFSET)) }
}

/// Whether `cfs_rq` (`task_cfs_rq`), or an ancestor, is throttled on its CPU now.
#[inline(always)]
fn is_throttled(cfs_rq: *const u8) -> bool {
    // Pruned by the verifier where the kernel has no CFS bandwidth control.
    if global(&WAIT_REASON) == 0 {
        return false;
    }
    // SAFETY: a BTF `cfs_rq` pointer; the offset comes from the kernel's BTF. A null `cfs_rq`
    // reads as zero (the verifier guards BTF pointer loads).
    unsafe { load::<i32>(cfs_rq, global(&CFS_RQ_THROTTLE_COUNT_OFFSET)) != 0 }
}

/// Now, in ns, by the clock of the run queue `cfs_rq` (`task_cfs_rq`) belongs to (see the
/// module's documentation), or by `bpf_ktime_get_ns` where the kernel has no group scheduling.
/// Never 0 on a running system's run queue; a null cfs_rq reads as 0, which leaves the wait
/// unmeasured.
#[inline(always)]
fn now(cfs_rq: *const u8) -> u64 {
    // Pruned by the verifier: the global is read-only data.
    if global(&RQ_CLOCK) == 0 {
        // SAFETY: helper without preconditions.
        return unsafe { bpf_ktime_get_ns() };
    }
    // SAFETY: a BTF `cfs_rq` pointer; the offsets come from the kernel's BTF, so each load is
    // checked against the member's type (a null pointer reads as zero).
    unsafe {
        let rq: *const u8 = load(cfs_rq, global(&CFS_RQ_RQ_OFFSET));
        load(rq, global(&RQ_CLOCK_OFFSET))
    }
}

/// `cfs_rq.throttled_clock_self_time`: ns that cfs_rq was throttled, up to its last unthrottle.
///
/// # Safety
/// `cfs_rq` must be a BTF `cfs_rq` pointer (or null, which reads as zero).
#[inline(always)]
unsafe fn throttled_self_time(cfs_rq: *const u8) -> u64 {
    // SAFETY: the caller's BTF pointer; the offset comes from the kernel's BTF.
    unsafe { load(cfs_rq, global(&CFS_RQ_THROTTLED_SELF_TIME_OFFSET)) }
}

/// A throttled wait begins on `cfs_rq`: keeps its throttled time so far, unless a reading is
/// kept already (the episode that began is added to it only at the unthrottle).
#[inline(always)]
fn throttled_wait_begins(cfs_rq: *const u8) {
    if global(&THROTTLE_EPISODES) == 0 {
        return;
    }
    let key = cfs_rq as u64;
    if THROTTLE_SEEN.get_ptr(&key).is_none() {
        // SAFETY: a BTF `cfs_rq` pointer from `task_cfs_rq`.
        let so_far = unsafe { throttled_self_time(cfs_rq) };
        // BPF_NOEXIST: a reading kept meanwhile stays.
        let _ = THROTTLE_SEEN.insert(&key, &so_far, BPF_NOEXIST.into());
    }
}

/// A throttled wait on `cfs_rq` (`task_cfs_rq`) ends: the growth of its throttled time since
/// the kept reading is the episode that ended (none when another thread of the group counted
/// it).
#[inline(always)]
fn throttled_wait_ends(cfs_rq: *const u8, cgroup_id: u64) {
    if global(&THROTTLE_EPISODES) == 0 {
        return;
    }
    let key = cfs_rq as u64;
    // SAFETY: a BTF `cfs_rq` pointer.
    let now = unsafe { throttled_self_time(cfs_rq) };
    let Some(seen) = THROTTLE_SEEN.get_ptr_mut(&key) else {
        // Evicted during the wait: keep this reading for the next episode.
        let _ = THROTTLE_SEEN.insert(&key, &now, BPF_NOEXIST.into());
        return;
    };
    // SAFETY: the map's value; one CPU runs its own cfs_rq's switches.
    let before = unsafe { core::mem::replace(&mut *seen, now) };
    // Less: the address was reused by a new cfs_rq; the reading now is its baseline.
    if now > before {
        record(cgroup_id, THROTTLE_EPISODE, now - before);
    }
}

/// Adds one observation of `amount` ns to the log2 histogram of (`cgroup_id`, `reason`): one
/// update, of its bucket's count and sum.
#[inline(always)]
fn record(cgroup_id: u64, reason: u32, amount: u64) {
    let bucket = latency_bucket(amount);
    let key = RunqKey { cgroup_id, bucket, reason };
    let overflow = || RunqKey { cgroup_id: OVERFLOW_CGROUP_ID, bucket, reason };
    add(&RUNQ_LATENCY, &key, overflow, map_full::RUNQ_LATENCY, amount);
}

/// The thread `task` became runnable now: stamps when, and whether its group was throttled.
/// Where the scheduler keeps the start of each wait (`SCHED_INFO`), only a throttled wait is
/// stamped: its reason is known only now.
#[inline(always)]
fn enqueued(task: *const u8) {
    // SAFETY: `task` is a BTF `task_struct` pointer from the tracepoint.
    let tid = unsafe { task_pid(task) };
    if tid == 0 {
        return; // an idle thread
    }
    let cfs_rq = task_cfs_rq(task);
    let throttled = is_throttled(cfs_rq);
    if global(&SCHED_INFO) != 0 && !throttled {
        return;
    }
    let start = runnable_since(task, true);
    if start.is_null() {
        count_map_full(map_full::RUNQ_START); // the kernel could not allocate the storage
        return;
    }
    let reason_bit = if throttled {
        throttled_wait_begins(cfs_rq);
        THROTTLED_BIT
    } else {
        0
    };
    // SAFETY: this task's storage.
    unsafe { *start = (now(cfs_rq) & !THROTTLED_BIT) | reason_bit };
}

/// `task`'s stamp (`enqueued`), cleared: 0 if it has none.
#[inline(always)]
fn take_stamp(task: *const u8) -> u64 {
    let slot = runnable_since(task, false);
    if slot.is_null() {
        return 0; // runnable since before the agent attached
    }
    // SAFETY: the task's own storage; the value is read and cleared.
    unsafe { core::mem::replace(&mut *slot, 0) }
}

/// Whether a wait that ends on `cfs_rq` (`task_cfs_rq`) may have been stamped throttled: not
/// where the kernel keeps how long that cfs_rq was throttled (`THROTTLE_EPISODES`, 6.6+) and
/// it never was. A stamp is made only for a wait that begins throttled, and such a wait ends
/// only after the unthrottle, which adds its length to `throttled_clock_self_time` (the kernel
/// starts that clock when it throttles a cfs_rq with tasks queued, or when one is queued on a
/// throttled one). So the switch-in of a task whose group was never throttled on this CPU needs
/// no task-storage lookup. A wait moved here from another CPU counts from its arrival here (see
/// `docs/performance.md`), where a stamp made on the other CPU never matches anyway.
#[inline(always)]
fn may_be_stamped(cfs_rq: *const u8) -> bool {
    // Pruned by the verifier where the offset was not found: every wait may be stamped there.
    if global(&THROTTLE_EPISODES) == 0 {
        return true;
    }
    // SAFETY: a BTF `cfs_rq` pointer from `task_cfs_rq` (null reads as zero).
    unsafe { throttled_self_time(cfs_rq) != 0 }
}

/// When `task`'s wait (ending on `cfs_rq`, `task_cfs_rq`) began, by its run queue's clock, with
/// its reason in `THROTTLED_BIT`; 0 if it did not wait (switched in twice without becoming
/// runnable in between, or runnable since before the agent attached).
#[inline(always)]
fn wait_start(task: *const u8, cfs_rq: *const u8) -> u64 {
    // Pruned by the verifier: the global is read-only data.
    if global(&SCHED_INFO) == 0 {
        return take_stamp(task);
    }
    // SAFETY: a BTF `task_struct` pointer; the offset comes from the kernel's BTF. The
    // scheduler sets `last_queued` when the task is queued (or switched out still runnable)
    // and clears it when the task gets the CPU, which happens just after this tracepoint.
    let queued = unsafe { load::<u64>(task, global(&TASK_LAST_QUEUED_OFFSET)) } & !THROTTLED_BIT;
    // Stamps are made only where the reason is split (pruned otherwise).
    if global(&WAIT_REASON) != 0 && may_be_stamped(cfs_rq) {
        let stamp = take_stamp(task);
        // This wait's stamp was made as the scheduler queued the task, by the same clock
        // reading. Another is stale: one made at a wakeup that began no wait (the task was
        // still running, or already queued), which a contended wait after it never overwrote.
        // Where the scheduler's account has no start for a stamped wait (seen on 6.18 for a
        // throttled wait about once in each run of the cpu_wait quota test), the stamp is the
        // only start there is.
        if stamp != 0 && (queued == 0 || stamp & !THROTTLED_BIT == queued) {
            return stamp;
        }
    }
    queued
}

/// sched_wakeup(struct task_struct *p)
#[btf_tracepoint(function = "sched_wakeup")]
pub fn ks_sched_wakeup(ctx: BtfTracePointContext) -> i32 {
    enqueued(ctx.arg(0));
    0
}

/// sched_wakeup_new(struct task_struct *p)
#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn ks_sched_wakeup_new(ctx: BtfTracePointContext) -> i32 {
    enqueued(ctx.arg(0));
    0
}

/// sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next,
/// unsigned int prev_state); before 5.18 without `prev_state`, which is then `prev`'s state,
/// or running when `preempt` (as the classic tracepoint reports it).
#[btf_tracepoint(function = "sched_switch")]
pub fn ks_sched_switch(ctx: BtfTracePointContext) -> i32 {
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    // The branch not taken is pruned by the verifier (the global is read-only data), so the
    // fourth argument is never read where the tracepoint has three.
    let still_runnable = if global(&SWITCH_HAS_PREV_STATE) != 0 {
        let prev_state: u32 = ctx.arg(3);
        prev_state == TASK_RUNNING
    } else {
        let preempt: u64 = ctx.arg(0);
        // SAFETY: `prev` is a BTF `task_struct` pointer; the offset comes from its BTF (the low
        // half of `long state` before 5.14: states are small).
        preempt & 1 != 0 || unsafe { load::<u32>(prev, global(&TASK_STATE_OFFSET)) } == TASK_RUNNING
    };
    if still_runnable {
        enqueued(prev);
    }
    // SAFETY: `next` is a BTF `task_struct` pointer from the tracepoint.
    let tid = unsafe { task_pid(next) };
    if tid == 0 {
        return 0;
    }
    let cfs_rq = task_cfs_rq(next);
    let stored = wait_start(next, cfs_rq);
    if stored == 0 {
        return 0;
    }
    let waited = now(cfs_rq).saturating_sub(stored & !THROTTLED_BIT);
    // SAFETY: as above.
    let (_, cgroup_id) = unsafe { task_cgroup(next) };
    let reason = if stored & THROTTLED_BIT != 0 {
        throttled_wait_ends(cfs_rq, cgroup_id);
        WAIT_THROTTLED
    } else {
        WAIT_CONTENTION
    };
    record(cgroup_id, reason, waited);
    0
}
