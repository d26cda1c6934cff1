//! kernsight's kernel programs: one module per probe family, each owning its maps. This root
//! builds the `kernsight` object, for kernels with cgroup and task local storage and
//! `bpf_get_current_task_btf` (6.2+). `hashed_slots.rs` and `fallback.rs` build the same
//! programs for older kernels; the three objects differ only in their `features` module.
#![no_std]
#![no_main]
// Atomic adds: the BPF target's core has no AtomicU64 (see counters::atomic_add).
#![allow(internal_features)]
#![feature(core_intrinsics)]

/// What this build takes from the kernel: the current task as a BTF pointer, timestamps in the
/// task, a cgroup's syscall slot in the cgroup.
mod features {
    #[path = "btf_task.rs"]
    mod current;
    #[path = "cgroup_storage.rs"]
    mod slots;
    #[path = "task_storage.rs"]
    mod timestamps;
    pub(crate) use self::{current::*, slots::*, timestamps::*};
}
include!("families.rs");
