//! When the syscall exit may trust its per-CPU attribution cache without walking from the
//! current task (`syscalls::attribute`): the epoch its entries were made in, which the
//! programs here end at every fork and every cgroup move.
//!
//! An entry names a thread by the address of its `pt_regs` (the `sys_exit` tracepoint's first
//! argument, at the top of the thread's kernel stack), which the exit has without a helper
//! call: `bpf_get_current_task_btf` and the walk that waits on it were ~24 of the 29.5 ns the
//! exit cost over an empty program (docs/performance.md). While no task is created and none
//! changes cgroup, that address names one live thread and its cgroup does not change:
//! - a kernel stack, and so a `pt_regs` address, passes to a new task only in `copy_process`.
//!   Every task that makes syscalls comes from `kernel_clone`, which fires `sched_process_fork`
//!   before the child can run (io_uring and vhost workers come from `copy_process` alone, and
//!   never return to user space);
//! - a task changes cgroup only by a migration, which fires `cgroup_attach_task` when it is
//!   done (`cgroup_transfer_tasks` for v1 cpuset's), and by nothing else that moves its
//!   unified cgroup or its v1 one.
//!
//! The epoch is 0 until the agent has attached all three programs; an exit that reads 0 walks
//! every call. A syscall that ends on another CPU while its thread is being moved may still
//! count under the cgroup it leaves, as it may with the walk. The cache reads the epoch before
//! the walk and keeps the epoch it read, so a move during the walk makes the entry stale at
//! once; this relies on loads not passing loads, which x86_64 guarantees: the agent turns the
//! epoch on there only.

use aya_ebpf::{
    macros::{btf_tracepoint, map},
    maps::Array,
    programs::BtfTracePointContext,
};

use crate::counters::atomic_add;

#[map]
static ATTRIBUTION_EPOCH: Array<u64> = Array::with_max_entries(1, 0);

/// The epoch now: 0 when cache entries must not be trusted.
#[inline(always)]
pub(crate) fn epoch() -> u64 {
    match ATTRIBUTION_EPOCH.get(0) {
        // SAFETY: the map's value; an aligned u64 read whole.
        Some(epoch) => unsafe { core::ptr::read_volatile(epoch) },
        None => 0,
    }
}

/// Ends the epoch (once the agent has started them).
#[inline(always)]
fn end_epoch() {
    if let Some(epoch) = ATTRIBUTION_EPOCH.get_ptr_mut(0) {
        // SAFETY: the map's value; only atomic adds write it while programs run.
        if unsafe { core::ptr::read_volatile(epoch) } != 0 {
            atomic_add(epoch, 1);
        }
    }
}

/// sched_process_fork(struct task_struct *parent, struct task_struct *child)
#[btf_tracepoint(function = "sched_process_fork")]
pub fn ks_sys_task_forked(_ctx: BtfTracePointContext) -> i32 {
    end_epoch();
    0
}

/// cgroup_attach_task(struct cgroup *dst_cgrp, const char *path, struct task_struct *task,
/// bool threadgroup)
#[btf_tracepoint(function = "cgroup_attach_task")]
pub fn ks_sys_cgroup_attached(_ctx: BtfTracePointContext) -> i32 {
    end_epoch();
    0
}

/// cgroup_transfer_tasks(struct cgroup *dst_cgrp, const char *path, struct task_struct *task,
/// bool threadgroup)
#[btf_tracepoint(function = "cgroup_transfer_tasks")]
pub fn ks_sys_cgroup_transferred(_ctx: BtfTracePointContext) -> i32 {
    end_epoch();
    0
}
