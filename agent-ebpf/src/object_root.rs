// What every eBPF object's root needs besides its programs (included by `families.rs` for the
// three builds of kernsight's programs, and by `floor.rs`): a panic handler, which no program
// can reach, and the license the kernel checks.

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL: tracing helpers such as bpf_probe_read_kernel and bpf_ktime_get_ns are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
