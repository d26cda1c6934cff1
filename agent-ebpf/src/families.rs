// The modules of the kernel programs (a probe family each, and what they share), included by
// every object's root (`main.rs`, `hashed_slots.rs`, `fallback.rs`), which differ only in their
// `features` module: a new family is one line here. Their panic handler and license too.
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL: tracing helpers such as bpf_probe_read_kernel and bpf_ktime_get_ns are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
