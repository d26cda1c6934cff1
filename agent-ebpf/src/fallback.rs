//! The `kernsight-fallback` object: the programs of `main.rs` (the same modules, listed once in
//! `families.rs`) with `features/fallback.rs`, for kernels without cgroup local storage (before
//! 6.2), task local storage or `bpf_get_current_task_btf` (before 5.11): 5.10 and 6.1 among them.
#![no_std]
#![no_main]
// Atomic adds: the BPF target's core has no AtomicU64 (see counters::atomic_add).
#![allow(internal_features)]
#![feature(core_intrinsics)]

#[path = "features/fallback.rs"]
mod features;
include!("families.rs");

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL: tracing helpers such as bpf_probe_read_kernel and bpf_ktime_get_ns are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
