//! kernsight's kernel programs: one module per probe family, each owning its maps.
#![no_std]
#![no_main]

mod cgroups;
mod oom;
mod process_events;
mod sched;
mod security;
mod syscalls;
mod task;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL: tracing helpers such as bpf_probe_read_kernel and bpf_ktime_get_ns are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
