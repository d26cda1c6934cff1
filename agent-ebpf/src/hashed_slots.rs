//! The `kernsight-hashed-slots` object: the programs of `main.rs` (the same modules, listed once
//! in `families.rs`) for kernels with task local storage and `bpf_get_current_task_btf` but
//! without cgroup local storage (5.11 to 6.1). It differs from the full build only in where a
//! cgroup's syscall slot is kept: a hash by cgroup id, looked up when a CPU's last-cgroup cache
//! misses.
#![no_std]
#![no_main]
// Atomic adds: the BPF target's core has no AtomicU64 (see counters::atomic_add).
#![allow(internal_features)]
#![feature(core_intrinsics)]

/// What this build takes from the kernel: the current task as a BTF pointer, timestamps in the
/// task, a cgroup's syscall slot in a hash by cgroup id.
mod features {
    #[path = "btf_task.rs"]
    mod current;
    #[path = "slot_hash.rs"]
    mod slots;
    #[path = "task_storage.rs"]
    mod timestamps;
    pub(crate) use self::{current::*, slots::*, timestamps::*};
}
include!("families.rs");
