//! The `kernsight-fallback` object: the programs of `main.rs` (the same modules, listed once in
//! `families.rs`) for kernels without task local storage or `bpf_get_current_task_btf` (before
//! 5.11: 5.10). Each of its `features` costs more than the full build's, which is why the agent
//! loads it only where the kernel lacks them.
#![no_std]
#![no_main]
// Atomic adds: the BPF target's core has no AtomicU64 (see counters::atomic_add).
#![allow(internal_features)]
#![feature(core_intrinsics)]

/// What this build takes from the kernel: the current task read with `bpf_probe_read_kernel`,
/// timestamps in LRU hashes by thread id, a cgroup's syscall slot in a hash by cgroup id.
mod features {
    #[path = "probe_task.rs"]
    mod current;
    #[path = "slot_hash.rs"]
    mod slots;
    #[path = "thread_lru.rs"]
    mod timestamps;
    pub(crate) use self::{current::*, slots::*, timestamps::*};
}
include!("families.rs");
