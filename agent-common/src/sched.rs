//! Scheduler and process lifecycle: run-queue latency per cgroup (`sched_wakeup`,
//! `sched_wakeup_new`, `sched_switch`) and exec/exit counts per cgroup (`sched_process_exec`,
//! `sched_process_exit`), aggregated in the kernel in per-CPU hashes.

/// Task local storage: when the thread became runnable (ns, `bpf_ktime_get_ns`), 0 once it ran.
pub const RUNQ_START_MAP: &str = "RUNQ_START";
/// Per-CPU hash `RunqKey` → `u64`: switches-in per log2 run-queue latency bucket, and the sum.
pub const RUNQ_LATENCY_MAP: &str = "RUNQ_LATENCY";
/// Per-CPU hash `ProcessKey` → `u64`: execs and process exits by kind.
pub const PROCESS_COUNTS_MAP: &str = "PROCESS_COUNTS";

/// Read-only globals (`u32`): offsets of `task_struct.pid`, `.tgid` and `.exit_code`.
pub const TASK_PID_OFFSET_GLOBAL: &str = "TASK_PID_OFFSET";
pub const TASK_TGID_OFFSET_GLOBAL: &str = "TASK_TGID_OFFSET";
pub const TASK_EXIT_CODE_OFFSET_GLOBAL: &str = "TASK_EXIT_CODE_OFFSET";

/// Default bound of `RUNQ_LATENCY` ((cgroup, bucket) entries).
pub const DEFAULT_RUNQ_LATENCY_ENTRIES: u32 = 16_384;
/// Default bound of `PROCESS_COUNTS` ((cgroup, kind) entries).
pub const DEFAULT_PROCESS_ENTRIES: u32 = 8_192;

/// Kinds of `ProcessKey`.
pub mod kind {
    pub const EXEC: u32 = 0;
    /// A process (thread-group leader) exited with status 0.
    pub const EXITED: u32 = 1;
    /// Exited with a non-zero status.
    pub const FAILED: u32 = 2;
    /// Killed by a signal other than SIGKILL.
    pub const SIGNALED: u32 = 3;
    /// Killed by SIGKILL.
    pub const KILLED: u32 = 4;
    pub const COUNT: u32 = 5;
}

/// `SIGKILL` (the same number on every Linux architecture).
pub const SIGKILL: u32 = 9;

/// The exit kind of a `task_struct.exit_code` (`status << 8 | signal`, as `wait()` sees it).
#[inline(always)]
pub fn exit_kind(exit_code: u32) -> u32 {
    let signal = exit_code & 0x7f;
    if signal == SIGKILL {
        kind::KILLED
    } else if signal != 0 {
        kind::SIGNALED
    } else if (exit_code >> 8) & 0xff == 0 {
        kind::EXITED
    } else {
        kind::FAILED
    }
}

/// Key of `RUNQ_LATENCY`: bucket as in `syscalls::latency_bucket`, or
/// `syscalls::LATENCY_SUM_BUCKET` for the exact sum of nanoseconds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RunqKey {
    pub cgroup_id: u64,
    pub bucket: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<RunqKey>() == 16);

/// Key of `PROCESS_COUNTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProcessKey {
    pub cgroup_id: u64,
    /// One of `kind`.
    pub kind: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ProcessKey>() == 16);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integer structs with explicit padding.
    unsafe impl aya::Pod for super::RunqKey {}
    unsafe impl aya::Pod for super::ProcessKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_by_kind() {
        assert_eq!(exit_kind(0), kind::EXITED);
        assert_eq!(exit_kind(1 << 8), kind::FAILED);
        assert_eq!(exit_kind(255 << 8), kind::FAILED);
        assert_eq!(exit_kind(9), kind::KILLED);
        assert_eq!(exit_kind(15), kind::SIGNALED);
        assert_eq!(exit_kind(11 | 0x80), kind::SIGNALED); // SIGSEGV with a core dump
    }
}
