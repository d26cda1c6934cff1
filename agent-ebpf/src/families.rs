// The modules of the kernel programs (a probe family each, and what they share), included by
// every object's root (`main.rs`, `hashed_slots.rs`, `fallback.rs`), which differ only in their
// `features` module: a new family is one line here.
mod attribution;
mod block_io;
mod capabilities;
mod cgroups;
mod counters;
mod escape;
mod memory_reclaim;
mod net;
mod oom;
mod processes;
mod runqueue;
mod runtimes;
mod syscalls;
mod task;
mod trace;
include!("object_root.rs");
