//! cgroups the test creates, and workloads forked into them. A `TestCgroup` is removed with its
//! whole subtree when dropped, its processes killed first: a test that fails half-way (an OOM
//! test with its hog still paused in a child cgroup) leaves nothing behind.

use std::{
    ffi::CString,
    path::{Path, PathBuf},
    time::Duration,
};

use kernsight::kernel::{cgroupfs, mountinfo};

use super::{poll, wait_gone};

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` or `/sys/fs/cgroup/unified`).
pub fn unified_root() -> PathBuf {
    cgroupfs::unified_mount(&mounts()).expect("no cgroup2 hierarchy is mounted")
}

/// Mount point of the v1 hierarchy of `controller`, if the host has one.
pub fn v1_root(controller: &str) -> Option<PathBuf> {
    mounts()
        .into_iter()
        .find(|m| m.fs_type == "cgroup" && m.super_options.split(',').any(|o| o == controller))
        .map(|m| m.mount_point)
}

/// Mount points of every cgroup hierarchy (v1 controllers and the unified one).
pub fn all_roots() -> Vec<PathBuf> {
    mounts()
        .into_iter()
        .filter(|m| m.fs_type == "cgroup" || m.fs_type == "cgroup2")
        .map(|m| m.mount_point)
        .collect()
}

fn mounts() -> Vec<mountinfo::Mount> {
    mountinfo::read().expect("read /proc/self/mountinfo")
}

/// Test cgroups are named `kernsight-test-<pid of the test binary>-<tag>`.
const PREFIX: &str = "kernsight-test-";

/// Removes, in every hierarchy, the test cgroups of test binaries that no longer run: one that
/// was killed (SIGKILL, a CI timeout) ran no `Drop`. Those of running binaries are theirs.
fn remove_stale() {
    for root in all_roots() {
        let Ok(entries) = std::fs::read_dir(&root) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let owner =
                name.to_str().and_then(|n| n.strip_prefix(PREFIX)).and_then(|rest| rest.split_once('-'));
            let stale = owner
                .filter(|(pid, _)| pid.parse::<u32>().is_ok())
                .is_some_and(|(pid, _)| !Path::new("/proc").join(pid).exists());
            if stale {
                eprintln!(
                    "cleanup: removing {} left by a test binary that was killed",
                    entry.path().display()
                );
                remove_tree(&entry.path());
            }
        }
    }
}

/// A cgroup that the test creates and removes (with its subtree and processes) when dropped.
pub struct TestCgroup {
    pub path: PathBuf,
    /// The path as kernsight labels it (relative to the hierarchy's root).
    pub label: String,
}

impl TestCgroup {
    /// A child of the unified (v2) hierarchy's root.
    pub fn create(tag: &str) -> Self {
        Self::create_in(&unified_root(), tag)
    }

    /// A child of the root of the hierarchy mounted at `root`.
    pub fn create_in(root: &Path, tag: &str) -> Self {
        static STALE_REMOVED: std::sync::Once = std::sync::Once::new();
        STALE_REMOVED.call_once(remove_stale);
        let name = format!("{PREFIX}{}-{tag}", std::process::id());
        let path = root.join(&name);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self { path, label: format!("/{name}") }
    }

    /// A child cgroup of this one, removed with it.
    pub fn child(&self, name: &str) -> Self {
        let path = self.path.join(name);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self { path, label: format!("{}/{name}", self.label) }
    }

    /// Runs `workload` in a child in this cgroup (see `spawn_in`) and returns its exit code.
    pub fn run(&self, workload: impl FnOnce() -> i32) -> i32 {
        let status = wait_status(spawn_in(&self.path, workload));
        assert!(libc::WIFEXITED(status), "workload did not exit normally");
        let code = libc::WEXITSTATUS(status);
        assert_ne!(code, JOIN_FAILED, "the workload could not join {}", self.path.display());
        code
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        remove_tree(&self.path);
    }
}

/// The exit code of a child that could not join its cgroup.
pub const JOIN_FAILED: i32 = 101;

/// Forks a child that moves itself into the cgroup directory `dir`, runs `workload` and exits
/// with its return value (`JOIN_FAILED` if it could not join); returns its pid without waiting.
/// The child only makes raw syscalls: safe after fork in a threaded process.
pub fn spawn_in(dir: &Path, workload: impl FnOnce() -> i32) -> i32 {
    let procs = CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: the child calls only async-signal-safe functions and leaves with _exit.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            if !join_procs(&procs) {
                libc::_exit(JOIN_FAILED);
            }
            libc::_exit(workload());
        }
        pid
    }
}

/// Forks a child straight into the unified (v2) cgroup directory `dir` (`clone3` with
/// `CLONE_INTO_CGROUP`, 5.7+: no migration, so no `cgroup_attach_task`), runs `workload` there
/// and exits with its return value; returns its pid without waiting. The child only makes raw
/// syscalls, as after `spawn_in`'s fork (glibc's fork handlers do not run).
pub fn spawn_into(dir: &Path, workload: impl FnOnce() -> i32) -> i32 {
    /// `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2).
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let dir_c = CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a path the test made; the descriptor is closed below in the parent.
    let fd = unsafe { libc::open(dir_c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    assert!(fd >= 0, "open {}: {}", dir.display(), std::io::Error::last_os_error());
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: fd as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without a new stack behaves as fork; the child calls only
    // async-signal-safe functions and leaves with _exit.
    let pid = unsafe { libc::syscall(libc::SYS_clone3, &args, size_of::<CloneArgs>()) };
    if pid == 0 {
        // SAFETY: see above.
        unsafe { libc::_exit(workload()) };
    }
    // SAFETY: the descriptor opened above.
    unsafe { libc::close(fd) };
    assert!(pid > 0, "clone3 into {}: {}", dir.display(), std::io::Error::last_os_error());
    pid as i32
}

/// Writes "0" to `procs` (the calling process joins that cgroup): raw syscalls, safe after
/// fork.
pub fn join_procs(procs: &std::ffi::CStr) -> bool {
    // SAFETY: raw syscalls on a path the caller made.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
        let ok = fd >= 0 && libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
        if fd >= 0 {
            libc::close(fd);
        }
        ok
    }
}

/// Waits for a child of this process; its raw wait status.
pub fn wait_status(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

/// How long a removal waits for killed processes to go and cgroups to become removable.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Kills the processes of a cgroup tree (the test's own: never this process), then removes the
/// tree, leaves first. Problems are reported, never raised: this runs in `Drop`, maybe while a
/// failed test unwinds.
pub fn remove_tree(root: &Path) {
    if !root.exists() {
        return;
    }
    kill_processes_in(root);
    for dir in dirs_deepest_first(root) {
        // A cgroup stays busy for a moment after its last process exits.
        let removed = poll(REMOVE_TIMEOUT, || match std::fs::remove_dir(&dir) {
            Ok(()) => Ok(()),
            Err(_) if !dir.exists() => Ok(()),
            Err(e) => Err(e.to_string()),
        });
        if let Err(e) = removed {
            eprintln!("cleanup: cannot remove cgroup {}: {e}", dir.display());
        }
    }
}

/// SIGKILLs every process in a cgroup tree but this one and waits (bounded) until they are gone.
pub fn kill_processes_in(root: &Path) {
    let me = std::process::id() as i32;
    let pids: Vec<i32> = dirs_deepest_first(root)
        .iter()
        .flat_map(|dir| {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            procs.lines().filter_map(|l| l.parse::<i32>().ok()).collect::<Vec<_>>()
        })
        .filter(|&pid| pid != me)
        .collect();
    for &pid in &pids {
        eprintln!("cleanup: killing process {pid} left in {}", root.display());
        // SAFETY: a process in a cgroup the test created.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    wait_gone(&pids, REMOVE_TIMEOUT);
}

/// A directory tree, children before their parents.
pub fn dirs_deepest_first(root: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![root.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() {
        let children: Vec<PathBuf> = std::fs::read_dir(&dirs[i])
            .into_iter()
            .flatten()
            .flatten()
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
            .map(|entry| entry.path())
            .collect();
        dirs.extend(children);
        i += 1;
    }
    dirs.reverse();
    dirs
}
