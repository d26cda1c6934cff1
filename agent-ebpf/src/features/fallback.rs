//! The same items as `features/full.rs` for kernels without cgroup local storage (before 6.2),
//! task local storage or `bpf_get_current_task_btf()` (before 5.11): the `kernsight-fallback`
//! object. The slot of a cgroup is kept in a hash keyed by cgroup id (bounded by the number of
//! slots, since an entry is only made for a cgroup that got one; user space deletes it when it
//! recycles the slot), run-queue and syscall-entry timestamps in LRU hashes keyed by thread id,
//! and the current task is read with `bpf_probe_read_kernel` from `bpf_get_current_task()`. Each
//! costs more than the full version, which is why the agent loads this object only where the
//! kernel lacks one of them.

use aya_ebpf::{
    bindings::cgroup,
    helpers::{bpf_get_current_pid_tgid, generated::bpf_get_current_task},
    macros::map,
    maps::{HashMap, LruHashMap},
};
use kernsight_common::{
    runqueue::RUNQ_START_ENTRIES,
    syscalls::{DEFAULT_CGROUP_SLOTS, START_ENTRIES},
};

use crate::{
    syscalls::slot_by_id,
    task::{Probe, task_pid},
};

/// How the current task's memory is read: `bpf_get_current_task()` is a plain number to the
/// verifier.
pub(crate) type CurrentRead = Probe;

/// The current task's address (readable with `bpf_probe_read_kernel` only).
#[inline(always)]
pub(crate) fn current_task() -> *const u8 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_get_current_task() as *const u8 }
}

/// Unified-hierarchy cgroup id → its slot; sized by the agent to the number of slots.
#[map]
static CGROUP_SLOTS: HashMap<u64, u32> = HashMap::with_max_entries(DEFAULT_CGROUP_SLOTS, 0);

/// The slot recorded for the cgroup, or a new one (see `syscalls::slot_by_id`).
#[inline(always)]
pub(crate) fn stored_slot(_cgroup: *mut cgroup, cgroup_id: u64) -> u32 {
    slot_by_id(&CGROUP_SLOTS, cgroup_id)
}

/// Thread id → when it became runnable (ns); LRU, so that threads that exit cannot fill it.
#[map]
static RUNQ_START: LruHashMap<u32, u64> = LruHashMap::with_max_entries(RUNQ_START_ENTRIES, 0);

/// Where `task`'s runnable-since time is kept, created (zeroed) when `create` and missing; null
/// if none.
///
/// `task` must be a BTF `task_struct` pointer.
#[inline(always)]
pub(crate) fn runnable_since(task: *const u8, create: bool) -> *mut u64 {
    // SAFETY: a BTF pointer from the tracepoint.
    thread_value(&RUNQ_START, unsafe { task_pid(task) }, create)
}

/// Thread id → when it entered its current syscall (ns), 0 once consumed; LRU, as `RUNQ_START`.
#[map]
static SYSCALL_START: LruHashMap<u32, u64> = LruHashMap::with_max_entries(START_ENTRIES, 0);

/// The same for `kernsight trace`, which sizes it.
#[map]
static TRACE_SYSCALL_START: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16, 0);

/// Where the current thread's syscall-entry time is kept (see `features/full.rs`). The entry
/// stays once made: the next calls of the thread find it with a lookup, where an insert per
/// call would take a new element from the LRU's free list each time.
#[inline(always)]
pub(crate) fn syscall_start(create: bool) -> *mut u64 {
    thread_value(&SYSCALL_START, bpf_get_current_pid_tgid() as u32, create)
}

/// `syscall_start` for `kernsight trace`.
#[inline(always)]
pub(crate) fn trace_syscall_start(create: bool) -> *mut u64 {
    thread_value(&TRACE_SYSCALL_START, bpf_get_current_pid_tgid() as u32, create)
}

/// The value of thread `tid` in `map`, created (zeroed) when `create` and missing; null if none.
#[inline(always)]
fn thread_value(map: &LruHashMap<u32, u64>, tid: u32, create: bool) -> *mut u64 {
    if let Some(value) = map.get_ptr_mut(&tid) {
        return value;
    }
    if !create || map.insert(&tid, &0, 0).is_err() {
        return core::ptr::null_mut();
    }
    map.get_ptr_mut(&tid).unwrap_or(core::ptr::null_mut())
}
