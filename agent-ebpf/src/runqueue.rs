//! The `runqueue` family: run-queue latency, as runqlat measures it. A thread becomes runnable
//! on `sched_wakeup` / `sched_wakeup_new`, or when it is switched out while still runnable
//! (preempted: `prev_state` is `TASK_RUNNING`); `sched_switch` to it then adds the time it
//! waited to a log2 histogram of its cgroup.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map},
    maps::PerCpuHashMap,
    programs::BtfTracePointContext,
};
use kernsight_common::{
    runqueue::{DEFAULT_RUNQ_LATENCY_ENTRIES, RunqKey},
    counters::{LATENCY_SUM_BUCKET, OVERFLOW_CGROUP_ID, latency_bucket, map_full},
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

#[map]
static RUNQ_LATENCY: PerCpuHashMap<RunqKey, u64> =
    PerCpuHashMap::with_max_entries(DEFAULT_RUNQ_LATENCY_ENTRIES, 0);

/// `TASK_RUNNING`: a `prev_state` of 0 means the thread was preempted and is still runnable.
const TASK_RUNNING: u32 = 0;

/// Records that the thread `task` became runnable now.
#[inline(always)]
fn enqueued(task: *const u8) {
    // SAFETY: `task` is a BTF `task_struct` pointer from the tracepoint.
    let tid = unsafe { task_pid(task) };
    if tid == 0 {
        return; // an idle thread
    }
    let start = runnable_since(task, true);
    if start.is_null() {
        count_map_full(map_full::RUNQ_START); // the kernel could not allocate the storage
        return;
    }
    // SAFETY: this task's storage; helper without preconditions.
    unsafe { *start = bpf_ktime_get_ns() };
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
    let stored = runnable_since(next, false);
    if stored.is_null() {
        return 0; // runnable since before the agent attached
    }
    // SAFETY: the task's own storage; the value is read and cleared.
    let start = unsafe { core::mem::replace(&mut *stored, 0) };
    if start == 0 {
        return 0; // switched in twice without becoming runnable in between: not measured
    }
    // SAFETY: helper without preconditions.
    let waited = unsafe { bpf_ktime_get_ns() }.saturating_sub(start);
    // SAFETY: as above.
    let (_, cgroup_id) = unsafe { task_cgroup(next) };
    for (bucket, amount) in [(latency_bucket(waited), 1), (LATENCY_SUM_BUCKET, waited)] {
        let key = RunqKey { cgroup_id, bucket, _pad: 0 };
        let overflow = RunqKey { cgroup_id: OVERFLOW_CGROUP_ID, bucket, _pad: 0 };
        add(&RUNQ_LATENCY, &key, &overflow, map_full::RUNQ_LATENCY, amount);
    }
    0
}
