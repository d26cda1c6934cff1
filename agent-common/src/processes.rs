//! The `processes` family's wire types: exec and exit counts per cgroup
//! (`sched_process_exec`, `sched_process_exit`) in a per-CPU hash, and the exec and exit events
//! streamed through a ring buffer.

/// Per-CPU hash `ProcessKey` → `u64`: execs and process exits by kind.
pub const PROCESS_COUNTS_MAP: &str = "PROCESS_COUNTS";

/// Read-only globals (`u32`): offsets of `task_struct.pid`, `.tgid` and `.exit_code`.
pub const TASK_PID_OFFSET_GLOBAL: &str = "TASK_PID_OFFSET";
pub const TASK_TGID_OFFSET_GLOBAL: &str = "TASK_TGID_OFFSET";
pub const TASK_EXIT_CODE_OFFSET_GLOBAL: &str = "TASK_EXIT_CODE_OFFSET";

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
    // SAFETY: a plain `#[repr(C)]` integer struct with explicit padding.
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

/// Ring buffer of `ProcessEvent` records (execs and process exits, one each), and its per-CPU
/// one-slot loss counter.
pub const PROCESS_EVENTS_MAP: &str = "PROCESS_EVENTS";
pub const PROCESS_EVENTS_LOST_MAP: &str = "PROCESS_EVENTS_LOST";
pub const PROCESS_EVENTS_BYTES: u32 = 1 << 20;

/// Read-only globals (`u32`): offsets of `linux_binprm.filename`, `task_struct.real_parent`,
/// `task_struct.mm`, `mm_struct.arg_start` and `mm_struct.arg_end`.
pub const BINPRM_FILENAME_OFFSET_GLOBAL: &str = "BINPRM_FILENAME_OFFSET";
pub const TASK_REAL_PARENT_OFFSET_GLOBAL: &str = "TASK_REAL_PARENT_OFFSET";
pub const TASK_MM_OFFSET_GLOBAL: &str = "TASK_MM_OFFSET";
pub const MM_ARG_START_OFFSET_GLOBAL: &str = "MM_ARG_START_OFFSET";
pub const MM_ARG_END_OFFSET_GLOBAL: &str = "MM_ARG_END_OFFSET";

/// Event kinds.
pub const EVENT_EXEC: u32 = 1;
pub const EVENT_EXIT: u32 = 2;

/// Bytes of the executed file's path and of the argument block carried (longer ones are cut).
pub const EVENT_FILENAME_MAX: usize = 128;
pub const EVENT_ARGS_MAX: usize = 256;

/// One exec or process exit.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessEvent {
    /// `EVENT_EXEC` or `EVENT_EXIT`.
    pub kind: u32,
    pub pid: u32,
    pub tgid: u32,
    /// The parent's tgid.
    pub ppid: u32,
    pub uid: u32,
    /// Exits: `task_struct.exit_code` (`status << 8 | signal`).
    pub exit_code: u32,
    /// Tagged as the syscall counters tag it.
    pub cgroup_id: u64,
    /// Bytes of `filename` in use (exec: the path; exit: the command name), NUL excluded.
    pub filename_len: u32,
    /// Bytes of `args` in use: NUL-separated arguments as the process's memory holds them.
    pub args_len: u32,
    pub filename: [u8; EVENT_FILENAME_MAX],
    pub args: [u8; EVENT_ARGS_MAX],
}
const _: () = assert!(core::mem::size_of::<ProcessEvent>() == 40 + EVENT_FILENAME_MAX + EVENT_ARGS_MAX);

#[cfg(feature = "user")]
mod event_pod {
    // SAFETY: `#[repr(C)]` integers and bytes without implicit padding.
    unsafe impl aya::Pod for super::ProcessEvent {}
}
