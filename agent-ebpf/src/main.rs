//! kernsight's kernel programs: one module per probe family, each owning its maps. This root
//! builds the `kernsight` object, for kernels with cgroup and task local storage and
//! `bpf_get_current_task_btf` (6.2+); `fallback.rs` builds the same programs as the
//! `kernsight-fallback` object for older kernels. The two differ only in `features`.
#![no_std]
#![no_main]
// Atomic adds: the BPF target's core has no AtomicU64 (see counters::atomic_add).
#![allow(internal_features)]
#![feature(core_intrinsics)]

#[path = "features/full.rs"]
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
