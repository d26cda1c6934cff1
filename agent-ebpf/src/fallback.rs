//! The `kernsight-fallback` object: the programs of `main.rs` (keep the two module lists the
//! same) with `features/fallback.rs`, for kernels without cgroup local storage (before 6.2),
//! task local storage or `bpf_get_current_task_btf` (before 5.11): 5.10 and 6.1 among them.
#![no_std]
#![no_main]
// Atomic adds: the BPF target's core has no AtomicU64 (see net::atomic_add).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod capabilities;
mod cgroups;
#[path = "features/fallback.rs"]
mod features;
mod net;
mod oom;
mod processes;
mod runqueue;
mod syscalls;
mod task;
mod trace;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL: tracing helpers such as bpf_probe_read_kernel and bpf_ktime_get_ns are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
