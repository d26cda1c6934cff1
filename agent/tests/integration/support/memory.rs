//! Memory cgroups with a limit, and workloads that go past it (OOM kills the tests cause).

use super::TestCgroup;

pub const MIB: u64 = 1024 * 1024;
/// The limit of `limited_cgroup`.
pub const LIMIT: u64 = 32 * MIB;

/// A memory cgroup limited to `LIMIT`: v1 where memory is a v1 controller, else v2.
pub fn limited_cgroup(tag: &str) -> TestCgroup {
    match super::v1_root("memory") {
        Some(root) => {
            let cgroup = TestCgroup::create_in(&root, tag);
            std::fs::write(cgroup.path.join("memory.limit_in_bytes"), LIMIT.to_string()).expect("limit");
            let memsw = cgroup.path.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                let _ = std::fs::write(memsw, LIMIT.to_string());
            }
            cgroup
        }
        None => {
            let cgroup = TestCgroup::create(tag);
            std::fs::write(cgroup.path.join("memory.max"), LIMIT.to_string()).expect("limit");
            let _ = std::fs::write(cgroup.path.join("memory.swap.max"), "0");
            cgroup
        }
    }
}

/// Maps 64 MiB of anonymous memory and writes every page: past `LIMIT`.
pub fn allocate_past_the_limit() -> i32 {
    touch_anonymous(64 << 20)
}

/// Maps `size` bytes of anonymous memory and writes every page (raw syscalls: safe in a forked
/// child of a threaded process).
pub fn touch_anonymous(size: usize) -> i32 {
    // SAFETY: raw syscalls on memory the child owns.
    unsafe {
        let memory = libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if memory == libc::MAP_FAILED {
            return 2;
        }
        let bytes = memory.cast::<u8>();
        for page in (0..size).step_by(4096) {
            bytes.add(page).write_volatile(1);
        }
        0
    }
}
