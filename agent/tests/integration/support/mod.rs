//! Shared pieces of the integration tests: the skip guard, polling with a deadline, a running
//! agent and its scraped metrics, cgroups, processes and containers the test owns (each removed
//! by its `Drop`, also when the test fails), and raw-syscall workloads.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

mod agent;
pub mod apiserver;
pub mod cgroup;
pub mod containerd;
pub mod image;
pub mod memory;
pub mod podman;
mod process;
pub mod switch_watch;

pub use agent::{
    Agent, PinDir, bpftool_bytes, http_get, pinned_ids, pinned_per_cpu, sum_u64_at, unique_pin_dir,
};
pub use cgroup::{TestCgroup, join_procs, spawn_in, spawn_into, unified_root, v1_root, wait_status};
/// The agent's own parser of the text format (`kernsight top` and `advise` read scrapes with it).
pub use kernsight::metrics::client::Sample;
pub use process::{ChildGuard, wait_gone};
pub use switch_watch::SwitchWatch;

pub const BINARY: &str = env!("CARGO_BIN_EXE_kernsight");

/// Agents count every cgroup on the machine and attach programs to the default route's interface,
/// and some tests read the kernel's log, so tests that start one (or that create cgroups, containers or
/// load) run one at a time, on the whole machine: also against the tests of another checkout.
const SERIAL_LOCK: &str = "/tmp/kernsight-tests.lock";

/// Held while a test runs alone (an exclusive `flock` of `SERIAL_LOCK`, released when dropped).
pub struct Serial {
    _lock: std::fs::File,
}

pub fn serial() -> Serial {
    let open =
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(SERIAL_LOCK);
    // Created by root: read-only is enough to lock it.
    let file = open
        .or_else(|_| std::fs::File::open(SERIAL_LOCK))
        .unwrap_or_else(|e| panic!("cannot open {SERIAL_LOCK}: {e}"));
    // Each call opens its own file description: threads of this process exclude each other too.
    // SAFETY: flock on a descriptor we own; it blocks until the lock is ours.
    let locked = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) };
    assert_eq!(locked, 0, "flock {SERIAL_LOCK}: {}", std::io::Error::last_os_error());
    Serial { _lock: file }
}

/// The running test's name (`module::test`): libtest names each test's thread after its test.
pub fn test_name() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_owned(),
        _ => "this test".to_owned(),
    }
}

/// Whether tests must run rather than skip (`cargo xtask test` as root sets it).
pub fn required() -> bool {
    std::env::var("KERNSIGHT_PRIVILEGED_TESTS").as_deref() == Ok("required")
}

/// Says that the running test skips, and why: `SKIPPED <test>: <why>`.
pub fn skip(why: &str) {
    eprintln!("SKIPPED {}: {why}", test_name());
}

/// Whether privileged tests can run (root: they load eBPF programs and create cgroups). Under
/// `KERNSIGHT_PRIVILEGED_TESTS=required` a missing privilege fails the test instead of skipping it.
/// The C program `source`, built static with musl-gcc into `dir` as `name`: what tests run in
/// containers whose image has no libc. `None` (with a skip) without musl-gcc.
pub fn static_c_program(dir: &Path, name: &str, source: &str) -> Option<PathBuf> {
    let file = dir.join(format!("{name}.c"));
    let binary = dir.join(name);
    std::fs::write(&file, source).unwrap();
    match std::process::Command::new("musl-gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&binary)
        .arg(&file)
        .output()
    {
        Ok(out) if out.status.success() => Some(binary),
        Ok(out) => panic!("musl-gcc: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => {
            skip(&format!("musl-gcc (Debian's musl-tools, which cargo xtask setup installs): {e}"));
            None
        }
    }
}

/// Whether the running kernel is `major.minor` or newer.
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("read the kernel release");
    let mut numbers = release.trim().split(['.', '-']).map(|n| n.parse::<u32>().unwrap_or(0));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0)) >= (major, minor)
}

/// Whether the scheduler keeps its own account of run-queue waits (CONFIG_SCHED_INFO, live):
/// this process's `schedstat` counts its switches. The runqueue family then takes each wait's
/// start from it (`sched.wait_start = "scheduler"`, the default).
pub fn scheduler_keeps_wait_account() -> bool {
    let text = std::fs::read_to_string("/proc/self/schedstat").unwrap_or_default();
    text.split_whitespace().nth(2).and_then(|count| count.parse::<u64>().ok()).is_some_and(|n| n > 0)
}

/// The runqueue family's implementation under the default `sched.wait_start`: `stamped`, the
/// build's own, where the scheduler keeps no account of waits.
pub fn runqueue_implementation(stamped: &'static str) -> &'static str {
    if scheduler_keeps_wait_account() { "sched_info" } else { stamped }
}

pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        let why = "needs root (loads eBPF programs, creates cgroups)";
        assert!(!required(), "{} {why}, and KERNSIGHT_PRIVILEGED_TESTS=required", test_name());
        skip(why);
    }
    root
}

/// Polls `attempt` until it returns `Ok`, for `timeout` at most: quickly at first, then every
/// 250 ms. On timeout, `Err` with the last observation (what `attempt` returned as its error).
pub fn poll<T>(timeout: Duration, mut attempt: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        let last = match attempt() {
            Ok(value) => return Ok(value),
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            return Err(format!("not so after {timeout:?}: {last}"));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// [`poll`], failing the test on timeout with the last observation.
#[track_caller]
pub fn eventually<T>(timeout: Duration, attempt: impl FnMut() -> Result<T, String>) -> T {
    poll(timeout, attempt).unwrap_or_else(|last| panic!("{last}"))
}

/// The samples of a scrape, read with the agent's own parser; every sample line must parse (a
/// line the parser skipped would be a malformed exposition).
#[track_caller]
pub fn parse(text: &str) -> Vec<Sample> {
    let samples = kernsight::metrics::client::parse(text);
    let lines = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).count();
    assert_eq!(samples.len(), lines, "the scrape has lines that are not samples:\n{text}");
    samples
}

/// Sum of the samples of `name` whose labels include all of `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// The items of the `field=[...]` list (`programs`, `ids`) on `probe`'s start-up line of the
/// agent's log, unquoted; empty when the log has no such line.
pub fn probe_log_list(log: &str, probe: &str, field: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(&format!("probe=\"{probe}\"")))
        .find_map(|l| l.split(&format!("{field}=[")).nth(1))
        .and_then(|rest| rest.split(']').next())
        .map(|list| list.split(',').map(|item| item.trim().trim_matches('"').to_owned()).collect())
        .unwrap_or_default()
}

/// The ids of the programs the agent's log says `probe` attached.
pub fn logged_program_ids(log: &str, probe: &str) -> Vec<u32> {
    probe_log_list(log, probe, "ids").iter().filter_map(|id| id.parse().ok()).collect()
}

/// Whether a BPF program of that id is loaded in the kernel.
pub fn program_loaded(id: u32) -> bool {
    let show = std::process::Command::new("bpftool").args(["prog", "show", "id", &id.to_string()]).output();
    show.expect("bpftool (Debian package bpftool)").status.success()
}

/// Waits until none of the programs `ids` is loaded: the kernel frees a detached program after an
/// RCU grace period (5 s at most).
#[track_caller]
pub fn programs_unloaded(ids: &[u32]) {
    eventually(Duration::from_secs(5), || {
        let left: Vec<&u32> = ids.iter().filter(|&&id| program_loaded(id)).collect();
        if left.is_empty() { Ok(()) } else { Err(format!("programs {left:?} are still loaded")) }
    });
}

/// A config file in a temporary directory.
pub fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kernsight.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// Raw syscalls for workloads (no libc wrappers that could cache or substitute calls).
pub fn getppid_times(n: usize) {
    for _ in 0..n {
        // SAFETY: getppid has no arguments.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
}

/// 20 `nanosleep`s of 2 ms (the syscall itself: glibc's `nanosleep` is `clock_nanosleep`); 0.
pub fn sleep_2ms_20_times() -> i32 {
    let two_ms = libc::timespec { tv_sec: 0, tv_nsec: 2_000_000 };
    for _ in 0..20 {
        // SAFETY: a valid timespec, no remainder wanted.
        unsafe { libc::syscall(libc::SYS_nanosleep, &two_ms, std::ptr::null_mut::<libc::timespec>()) };
    }
    0
}

pub fn getpid_times(n: usize) {
    for _ in 0..n {
        // SAFETY: getpid has no arguments.
        unsafe { libc::syscall(libc::SYS_getpid) };
    }
}

/// `openat` of a path that does not exist, `n` times: each fails with ENOENT.
pub fn failing_openat_times(n: usize) {
    let path = c"/nonexistent-kernsight-test/file";
    for _ in 0..n {
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::syscall(libc::SYS_openat, libc::AT_FDCWD, path.as_ptr(), libc::O_RDONLY) };
    }
}
