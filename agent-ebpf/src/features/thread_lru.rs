//! Per-thread timestamps before task local storage (5.10): LRU hashes keyed by thread id, so
//! that threads that exit cannot fill them. See `task_storage.rs` for what each one holds.

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::map, maps::LruHashMap};
use kernsight_common::{runqueue::RUNQ_START_ENTRIES, syscalls::START_ENTRIES};

use crate::task::task_pid;

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

/// Where the current thread's syscall-entry time is kept (see `task_storage.rs`). The entry
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
