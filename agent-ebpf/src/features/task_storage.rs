//! Per-thread timestamps in the task itself (`BPF_MAP_TYPE_TASK_STORAGE`, 5.11+): the
//! run-queue family's runnable-since time and the syscall-entry times of the latency histogram
//! and of `kernsight trace`. A lookup in the task: no hash, no bound, nothing to delete.

use aya_ebpf::{
    bindings::{
        BPF_F_NO_PREALLOC, BPF_LOCAL_STORAGE_GET_F_CREATE, bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE,
        task_struct,
    },
    helpers::generated::bpf_task_storage_get,
    macros::btf_map,
};

use super::current_task;

/// A BTF-defined task local storage map (`BPF_MAP_TYPE_TASK_STORAGE`), laid out as aya-ebpf's
/// `btf_map_def!` lays out `CgrpStorage` (aya-ebpf 0.3 has no task storage type): the value
/// lives in the task itself and goes with it, so there is no bound to reach and no delete.
#[repr(C)]
pub struct TaskStorage<T> {
    r#type: *const [i32; BPF_MAP_TYPE_TASK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: placeholder pointers patched by the loader, never dereferenced.
unsafe impl<T> Sync for TaskStorage<T> {}

impl<T> TaskStorage<T> {
    pub const fn new() -> Self {
        Self {
            r#type: core::ptr::null(),
            key: core::ptr::null(),
            value: core::ptr::null(),
            max_entries: core::ptr::null(),
            map_flags: core::ptr::null(),
        }
    }

    /// The value of `task`, created (zeroed) when `create` and missing; null if none.
    #[inline(always)]
    fn get(&self, task: *const u8, create: bool) -> *mut T {
        let flags = if create { BPF_LOCAL_STORAGE_GET_F_CREATE.into() } else { 0 };
        let map = core::ptr::from_ref(self).cast_mut().cast();
        // SAFETY: the verifier checks `task` as a BTF task_struct pointer.
        unsafe { bpf_task_storage_get(map, task as *mut task_struct, core::ptr::null_mut(), flags) }.cast()
    }
}

/// When each thread became runnable (ns, `bpf_ktime_get_ns`); 0 once it got a CPU.
#[btf_map]
static RUNQ_START: TaskStorage<u64> = TaskStorage::new();

/// Where `task`'s runnable-since time is kept, created (zeroed) when `create` and missing; null
/// if none (or the kernel could not allocate it).
///
/// `task` must be a BTF `task_struct` pointer.
#[inline(always)]
pub(crate) fn runnable_since(task: *const u8, create: bool) -> *mut u64 {
    RUNQ_START.get(task, create)
}

/// When each thread entered its current syscall (ns), for the latency histogram; 0 once its
/// exit consumed it.
#[btf_map]
static SYSCALL_START: TaskStorage<u64> = TaskStorage::new();

/// The same for `kernsight trace` (its own load of the object: a trace and the agent never
/// share this map).
#[btf_map]
static TRACE_SYSCALL_START: TaskStorage<u64> = TaskStorage::new();

/// Where the current thread's syscall-entry time is kept, created (zeroed) when `create` and
/// missing; null if none. A lookup in the task itself: no hash, no lock, nothing to delete.
#[inline(always)]
pub(crate) fn syscall_start(create: bool) -> *mut u64 {
    SYSCALL_START.get(current_task(), create)
}

/// `syscall_start` for `kernsight trace`.
#[inline(always)]
pub(crate) fn trace_syscall_start(create: bool) -> *mut u64 {
    TRACE_SYSCALL_START.get(current_task(), create)
}
