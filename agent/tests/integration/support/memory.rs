//! Memory cgroups with a limit, and workloads that go past it (OOM kills the tests cause).

use std::{
    ffi::CString,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, Stdio},
};

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

/// Starts `dd` reading 64 MiB of zeros into one buffer (an anonymous allocation past `LIMIT`)
/// in `cgroup`, which it joins before it execs: a fresh process, whose memory at the kill is its
/// own. A child forked from the test binary would carry the test process's heap in its RSS (the
/// pages it shares copy-on-write), which the OOM tests measure.
pub fn spawn_allocating_past_the_limit(cgroup: &Path) -> Child {
    let procs = CString::new(cgroup.join("cgroup.procs").into_os_string().into_encoded_bytes()).unwrap();
    let mut command = Command::new("dd");
    command.args(["if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]);
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: between fork and exec the closure makes raw syscalls only (no allocation).
    unsafe {
        command.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        })
    };
    command.spawn().unwrap_or_else(|e| panic!("dd in {}: {e}", cgroup.display()))
}

/// A `limited_cgroup` whose child cgroups are memory cgroups of their own (their own
/// `memory.stat` and `memory.events`, charged to this one's limit too). On v2 that takes
/// `+memory` in its `cgroup.subtree_control`, which a pure v2 host does not give a new cgroup;
/// the cgroup itself may then hold no process, only its children. A v1 memory cgroup's children
/// are memory cgroups already.
pub fn limited_parent(tag: &str) -> TestCgroup {
    let cgroup = limited_cgroup(tag);
    let control = cgroup.path.join("cgroup.subtree_control");
    if control.exists() {
        std::fs::write(&control, "+memory")
            .unwrap_or_else(|e| panic!("enable +memory in {}: {e}", control.display()));
    }
    cgroup
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
