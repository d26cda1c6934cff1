//! What the programs know of the current task: its cgroup, found by walking kernel structures
//! with member offsets that the agent reads from the running kernel's BTF and sets as read-only
//! globals before loading (CO-RE done in user space: Rust eBPF has no field relocations). The
//! verifier sees the offsets as constants and checks each load against the kernel's types.

use aya_ebpf::{bindings::cgroup, helpers::bpf_probe_read_kernel};
use kernsight_common::syscalls::{NO_V1_SUBSYS, ROOT_CGROUP_ID, V1_CGROUP_ID_BIT};

use crate::features;

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
/// Offset of `task_struct.mm` (set for every family, like the other task offsets).
#[unsafe(no_mangle)]
pub(crate) static TASK_MM_OFFSET: u32 = 0;

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

/// How a walk through kernel structures reads memory.
pub(crate) trait KernelRead {
    /// Reads a `T` (an integer or a pointer) at `offset` bytes into the object at `base`.
    ///
    /// # Safety
    /// `base` must be what the implementation expects (see each).
    unsafe fn read<T: Copy>(base: *const u8, offset: u32) -> T;
}

/// Plain loads from BTF pointers: checked by the verifier, no helper call.
pub(crate) struct Direct;

impl KernelRead for Direct {
    #[inline(always)]
    unsafe fn read<T: Copy>(base: *const u8, offset: u32) -> T {
        // SAFETY: the caller passes a BTF pointer.
        unsafe { load(base, offset) }
    }
}

/// `bpf_probe_read_kernel`, for addresses the verifier has no type for (the current task on
/// kernels without `bpf_get_current_task_btf`); a failed read gives zero, and a walk through a
/// zero pointer gives zeros (cgroup id 0, counted under `other`).
pub(crate) struct Probe;

impl KernelRead for Probe {
    #[inline(always)]
    unsafe fn read<T: Copy>(base: *const u8, offset: u32) -> T {
        let at = base.wrapping_add(offset as usize).cast::<T>();
        // SAFETY: the helper checks the address; integers and pointers are valid when zeroed.
        unsafe { bpf_probe_read_kernel(at).unwrap_or_else(|_| core::mem::zeroed()) }
    }
}

/// The current task's cgroup and its id: its cgroup in the unified hierarchy, or, for a task in
/// the v2 root on a hybrid or v1 host, its cgroup in the chosen v1 hierarchy (id tagged).
#[inline(always)]
pub(crate) fn current_cgroup() -> (*mut cgroup, u64) {
    // SAFETY: the current task, read as the object's features say.
    unsafe { task_cgroup_with::<features::CurrentRead>(features::current_task()) }
}

/// `task`'s cgroup and its id, attributed as `current_cgroup` attributes the current task.
///
/// # Safety
/// `task` must be a BTF pointer to a `struct task_struct`.
#[inline(always)]
pub(crate) unsafe fn task_cgroup(task: *const u8) -> (*mut cgroup, u64) {
    // SAFETY: the caller's BTF pointer, which `Direct` reads with plain loads.
    unsafe { task_cgroup_with::<Direct>(task) }
}

/// `task_cgroup`, reading with `R`.
///
/// # Safety
/// `task` must be a `struct task_struct` that `R` can read.
#[inline(always)]
pub(crate) unsafe fn task_cgroup_with<R: KernelRead>(task: *const u8) -> (*mut cgroup, u64) {
    // SAFETY: kernel pointers, at offsets read from the kernel's own BTF.
    unsafe {
        let css_set: *const u8 = R::read(task, global(&TASK_CGROUPS_OFFSET));
        let cgroup: *mut cgroup = R::read(css_set, global(&CSS_SET_DFL_CGRP_OFFSET));
        let id = cgroup_id_with::<R>(cgroup);
        let v1_subsys = global(&V1_SUBSYS_ID);
        // Pruned by the verifier on pure v2 hosts, where V1_SUBSYS_ID is NO_V1_SUBSYS.
        if id == ROOT_CGROUP_ID && v1_subsys != NO_V1_SUBSYS {
            let subsys_offset = global(&CSS_SET_SUBSYS_OFFSET) + v1_subsys * 8;
            let css: *const u8 = R::read(css_set, subsys_offset);
            let v1: *mut cgroup = R::read(css, global(&CSS_CGROUP_OFFSET));
            return (v1, cgroup_id_with::<R>(v1) | V1_CGROUP_ID_BIT);
        }
        (cgroup, id)
    }
}

/// # Safety
/// `cgroup` must be a BTF pointer to a `struct cgroup`.
#[inline(always)]
pub(crate) unsafe fn cgroup_id(cgroup: *mut cgroup) -> u64 {
    // SAFETY: the caller's BTF pointer.
    unsafe { cgroup_id_with::<Direct>(cgroup) }
}

/// # Safety
/// `cgroup` must be a `struct cgroup` that `R` can read.
#[inline(always)]
unsafe fn cgroup_id_with<R: KernelRead>(cgroup: *mut cgroup) -> u64 {
    // SAFETY: the caller's pointer, then the kernfs node it points to, at offsets read from the
    // kernel's own BTF.
    unsafe {
        let kernfs_node: *const u8 = R::read(cgroup as *const u8, global(&CGROUP_KN_OFFSET));
        R::read(kernfs_node, global(&KERNFS_NODE_ID_OFFSET))
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
