//! What the programs know of the current task: its cgroup, found by walking kernel structures
//! with member offsets that the agent reads from the running kernel's BTF and sets as read-only
//! globals before loading (CO-RE done in user space: Rust eBPF has no field relocations). The
//! verifier sees the offsets as constants and checks each load against the kernel's types.

use aya_ebpf::{bindings::cgroup, helpers::generated::bpf_get_current_task_btf};
use kernsight_common::syscalls::{NO_V1_SUBSYS, ROOT_CGROUP_ID, V1_CGROUP_ID_BIT};

#[unsafe(no_mangle)]
static TASK_CGROUPS_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CSS_SET_DFL_CGRP_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CGROUP_KN_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static KERNFS_NODE_ID_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static V1_SUBSYS_ID: u32 = NO_V1_SUBSYS;
#[unsafe(no_mangle)]
static CSS_SET_SUBSYS_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CSS_CGROUP_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static TASK_PID_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static TASK_TGID_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static TASK_EXIT_CODE_OFFSET: u32 = 0;

#[inline(always)]
pub(crate) fn global<T: Copy>(value: &'static T) -> T {
    // SAFETY: a plain read of a loader-set global; volatile so that the load stays a map read.
    unsafe { core::ptr::read_volatile(value) }
}

/// Reads a `T` at `offset` bytes into a kernel object the verifier knows the BTF type of.
///
/// # Safety
/// `base` must be a BTF pointer given by the kernel; the verifier checks the access.
#[inline(always)]
pub(crate) unsafe fn load<T: Copy>(base: *const u8, offset: u32) -> T {
    // SAFETY: the caller's BTF pointer; the verifier turns the read into a checked
    // probe-read of the kernel object and rejects the program if it could fault.
    unsafe { core::ptr::read(base.wrapping_add(offset as usize).cast::<T>()) }
}

/// The current task's cgroup and its id: its cgroup in the unified hierarchy, or, for a task in
/// the v2 root on a hybrid or v1 host, its cgroup in the chosen v1 hierarchy (id tagged).
#[inline(always)]
pub(crate) fn current_cgroup() -> (*mut cgroup, u64) {
    // SAFETY: a BTF pointer to the current task.
    unsafe { task_cgroup(bpf_get_current_task_btf() as *const u8) }
}

/// `task`'s cgroup and its id, attributed as `current_cgroup` attributes the current task.
///
/// # Safety
/// `task` must be a BTF pointer to a `struct task_struct`.
#[inline(always)]
pub(crate) unsafe fn task_cgroup(task: *const u8) -> (*mut cgroup, u64) {
    // SAFETY: BTF pointers from the kernel, at offsets read from the kernel's own BTF.
    unsafe {
        let css_set: *const u8 = load(task, global(&TASK_CGROUPS_OFFSET));
        let cgroup: *mut cgroup = load(css_set, global(&CSS_SET_DFL_CGRP_OFFSET));
        let id = cgroup_id(cgroup);
        let v1_subsys = global(&V1_SUBSYS_ID);
        // Pruned by the verifier on pure v2 hosts, where V1_SUBSYS_ID is NO_V1_SUBSYS.
        if id == ROOT_CGROUP_ID && v1_subsys != NO_V1_SUBSYS {
            let subsys_offset = global(&CSS_SET_SUBSYS_OFFSET) + v1_subsys * 8;
            let css: *const u8 = load(css_set, subsys_offset);
            let v1: *mut cgroup = load(css, global(&CSS_CGROUP_OFFSET));
            return (v1, cgroup_id(v1) | V1_CGROUP_ID_BIT);
        }
        (cgroup, id)
    }
}

/// # Safety
/// `cgroup` must be a BTF pointer to a `struct cgroup`.
#[inline(always)]
pub(crate) unsafe fn cgroup_id(cgroup: *mut cgroup) -> u64 {
    // SAFETY: the caller's BTF pointer, then the kernfs node it points to, at offsets read
    // from the kernel's own BTF.
    unsafe {
        let kernfs_node: *const u8 = load(cgroup as *const u8, global(&CGROUP_KN_OFFSET));
        load(kernfs_node, global(&KERNFS_NODE_ID_OFFSET))
    }
}

/// `task->pid` (the thread id).
///
/// # Safety
/// `task` must be a BTF pointer to a `struct task_struct`.
#[inline(always)]
pub(crate) unsafe fn task_pid(task: *const u8) -> u32 {
    // SAFETY: the caller's BTF pointer, at an offset read from the kernel's own BTF.
    unsafe { load::<i32>(task, global(&TASK_PID_OFFSET)) as u32 }
}

/// `task->tgid` (the process id).
///
/// # Safety
/// `task` must be a BTF pointer to a `struct task_struct`.
#[inline(always)]
pub(crate) unsafe fn task_tgid(task: *const u8) -> u32 {
    // SAFETY: the caller's BTF pointer, at an offset read from the kernel's own BTF.
    unsafe { load::<i32>(task, global(&TASK_TGID_OFFSET)) as u32 }
}

/// `task->exit_code` (`status << 8 | signal`).
///
/// # Safety
/// `task` must be a BTF pointer to a `struct task_struct`.
#[inline(always)]
pub(crate) unsafe fn task_exit_code(task: *const u8) -> u32 {
    // SAFETY: the caller's BTF pointer, at an offset read from the kernel's own BTF.
    unsafe { load::<i32>(task, global(&TASK_EXIT_CODE_OFFSET)) as u32 }
}
