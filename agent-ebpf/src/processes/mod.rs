//! The `processes` family: `sched_process_exec` counts execs, `sched_process_exit` counts exits
//! of thread-group leaders (processes, not threads) by how they ended; both stream the event
//! through the ring of `events`.

mod events;

use aya_ebpf::{
    macros::{btf_tracepoint, map},
    maps::PerCpuHashMap,
    programs::BtfTracePointContext,
};
use kernsight_common::{
    counters::{OVERFLOW_CGROUP_ID, map_full},
    processes::{DEFAULT_PROCESS_ENTRIES, ProcessKey, exit_kind, kind},
};

use crate::{
    counters::add,
    task::{task_cgroup, task_exit_code, task_pid, task_tgid},
};

#[map]
static PROCESS_COUNTS: PerCpuHashMap<ProcessKey, u64> =
    PerCpuHashMap::with_max_entries(DEFAULT_PROCESS_ENTRIES, 0);

#[inline(always)]
fn count_process(task: *const u8, what: u32) {
    // SAFETY: `task` is a BTF `task_struct` pointer from the tracepoint.
    let (_, cgroup_id) = unsafe { task_cgroup(task) };
    let key = ProcessKey { cgroup_id, kind: what, _pad: 0 };
    let overflow = || ProcessKey { cgroup_id: OVERFLOW_CGROUP_ID, kind: what, _pad: 0 };
    add(&PROCESS_COUNTS, &key, overflow, map_full::PROCESS_COUNTS, 1);
}

/// sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
#[btf_tracepoint(function = "sched_process_exec")]
pub fn ks_sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    count_process(ctx.arg(0), kind::EXEC);
    // SAFETY: the tracepoint's BTF arguments.
    unsafe { events::exec(ctx.arg(0), ctx.arg(2)) };
    0
}

/// sched_process_exit(struct task_struct *p, ...): `exit_code` is set before it fires.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn ks_sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    let task: *const u8 = ctx.arg(0);
    // SAFETY: `task` is a BTF `task_struct` pointer from the tracepoint.
    let (pid, tgid, code) = unsafe { (task_pid(task), task_tgid(task), task_exit_code(task)) };
    if pid != tgid {
        return 0; // a thread, not the process
    }
    count_process(task, exit_kind(code));
    // SAFETY: the tracepoint's BTF argument.
    unsafe { events::exit(task) };
    0
}
