//! The `escape` family's wire types: attempts at what container escapes are made of (mounts,
//! namespace changes, module loads, raw device nodes, ...), counted in the kernel at syscall exit
//! per (cgroup, syscall, how the kernel answered, detail), outside the container runtime's own
//! setup of the cgroup.
//!
//! Syscall numbers are x86_64's: the kernel side counts only on that architecture.

/// Per-CPU hash `EscapeKey` → attempts.
pub const ESCAPE_ATTEMPTS_MAP: &str = "ESCAPE_ATTEMPTS";
/// Default bound of `ESCAPE_ATTEMPTS`: a cgroup makes a handful of keys (the syscalls it tries,
/// by answer); past the bound, attempts count under `OVERFLOW_CGROUP_ID`.
pub const DEFAULT_ESCAPE_ATTEMPTS_ENTRIES: u32 = 2_048;
/// LRU hash cgroup id → `bpf_ktime_get_ns()` at its `mkdir`, with `SETUP_PIVOTED` set once the
/// runtime pivoted (or chrooted) into the container's root there: the cgroups a runtime is still
/// setting up, whose candidate syscalls are the runtime's (runc mounts ~70 times, makes device
/// nodes, joins and creates namespaces in the container's cgroup before it execs the
/// entrypoint). An entry ends at the first exec in the cgroup after the pivot, or
/// `SETUP_MAX_NS` after the `mkdir`, whichever comes first.
pub const ESCAPE_SETUP_MAP: &str = "ESCAPE_SETUP";
pub const ESCAPE_SETUP_ENTRIES: u32 = 1_024;
/// The low bit of an `ESCAPE_SETUP` value: the runtime pivoted into the container's root.
pub const SETUP_PIVOTED: u64 = 1;
/// How long after its `mkdir` a cgroup counts as being set up when no exec after a pivot ends
/// it (a runtime that neither pivots nor chroots). runc takes ~100 ms from mkdir to exec here.
pub const SETUP_MAX_NS: u64 = 10_000_000_000;
/// Read-only global (`u32`): 1 when the family runs, else the syscall exit skips it.
pub const ESCAPE_ENABLED_GLOBAL: &str = "ESCAPE_ENABLED";

/// x86_64 syscall numbers the family looks at.
pub mod nr {
    pub const CLONE: u32 = 56;
    pub const PTRACE: u32 = 101;
    pub const MKNOD: u32 = 133;
    pub const PIVOT_ROOT: u32 = 155;
    pub const ADJTIMEX: u32 = 159;
    pub const CHROOT: u32 = 161;
    pub const SETTIMEOFDAY: u32 = 164;
    pub const MOUNT: u32 = 165;
    pub const SWAPON: u32 = 167;
    pub const REBOOT: u32 = 169;
    pub const IOPL: u32 = 172;
    pub const IOPERM: u32 = 173;
    pub const INIT_MODULE: u32 = 175;
    pub const CLOCK_SETTIME: u32 = 227;
    pub const KEXEC_LOAD: u32 = 246;
    pub const ADD_KEY: u32 = 248;
    pub const REQUEST_KEY: u32 = 249;
    pub const KEYCTL: u32 = 250;
    pub const MKNODAT: u32 = 259;
    pub const UNSHARE: u32 = 272;
    pub const PERF_EVENT_OPEN: u32 = 298;
    pub const OPEN_BY_HANDLE_AT: u32 = 304;
    pub const CLOCK_ADJTIME: u32 = 305;
    pub const SETNS: u32 = 308;
    pub const PROCESS_VM_READV: u32 = 310;
    pub const PROCESS_VM_WRITEV: u32 = 311;
    pub const FINIT_MODULE: u32 = 313;
    pub const KEXEC_FILE_LOAD: u32 = 320;
    pub const BPF: u32 = 321;
    pub const USERFAULTFD: u32 = 323;
    pub const OPEN_TREE: u32 = 428;
    pub const MOVE_MOUNT: u32 = 429;
    pub const FSOPEN: u32 = 430;
    pub const FSMOUNT: u32 = 432;
    pub const CLONE3: u32 = 435;
}

/// The syscalls the exit looks at: each vector's, and `pivot_root` and `chroot`, which only tell
/// the runtime's setup apart (never counted).
pub const CANDIDATES: [u32; 35] = [
    nr::CLONE,
    nr::PTRACE,
    nr::MKNOD,
    nr::PIVOT_ROOT,
    nr::ADJTIMEX,
    nr::CHROOT,
    nr::SETTIMEOFDAY,
    nr::MOUNT,
    nr::SWAPON,
    nr::REBOOT,
    nr::IOPL,
    nr::IOPERM,
    nr::INIT_MODULE,
    nr::CLOCK_SETTIME,
    nr::KEXEC_LOAD,
    nr::ADD_KEY,
    nr::REQUEST_KEY,
    nr::KEYCTL,
    nr::MKNODAT,
    nr::UNSHARE,
    nr::PERF_EVENT_OPEN,
    nr::OPEN_BY_HANDLE_AT,
    nr::CLOCK_ADJTIME,
    nr::SETNS,
    nr::PROCESS_VM_READV,
    nr::PROCESS_VM_WRITEV,
    nr::FINIT_MODULE,
    nr::KEXEC_FILE_LOAD,
    nr::BPF,
    nr::USERFAULTFD,
    nr::OPEN_TREE,
    nr::MOVE_MOUNT,
    nr::FSOPEN,
    nr::FSMOUNT,
    nr::CLONE3,
];

/// Syscall numbers below this are in `CANDIDATE_BITS`.
pub const CANDIDATE_LIMIT: u32 = 512;
/// One bit per syscall number below `CANDIDATE_LIMIT`: set for `CANDIDATES`. What the syscall
/// exit tests before anything else (one load and a shift on every syscall).
pub const CANDIDATE_BITS: [u64; 8] = {
    let mut bits = [0u64; 8];
    let mut i = 0;
    while i < CANDIDATES.len() {
        let nr = CANDIDATES[i];
        assert!(nr < CANDIDATE_LIMIT);
        bits[(nr / 64) as usize] |= 1 << (nr % 64);
        i += 1;
    }
    bits
};

/// `EscapeKey::answer`: how the kernel answered.
pub mod answer {
    /// The call succeeded.
    pub const GRANTED: u16 = 0;
    /// EPERM, EACCES, or ENOSYS (what seccomp profiles return for syscalls they do not name).
    pub const DENIED: u16 = 1;
    /// Another error: bad arguments, no such file... (says nothing about the posture).
    pub const FAILED: u16 = 2;
}

/// `EscapeKey::detail`: what the arguments said, where they decide the vector.
pub mod detail {
    pub const NONE: u16 = 0;
    /// `mount`/`fsopen` file system types; a mount whose source is under /dev/ is a block
    /// device; a bind mount (MS_BIND).
    pub const FS_CGROUP: u16 = 1;
    pub const FS_PROC: u16 = 2;
    pub const FS_SYSFS: u16 = 3;
    pub const FS_DEVPTS: u16 = 4;
    pub const FS_BLOCK_DEVICE: u16 = 5;
    pub const FS_BIND: u16 = 6;
    pub const FS_OTHER: u16 = 7;
    /// `mknod` of a device node.
    pub const BLOCK_DEVICE: u16 = 8;
    pub const CHAR_DEVICE: u16 = 9;
    /// `unshare`/`clone` creating a user namespace, or only other namespaces.
    pub const USER_NAMESPACE: u16 = 10;
    pub const OTHER_NAMESPACE: u16 = 11;
}

/// What the first four argument registers of a candidate say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registers {
    /// A vector, with this detail.
    Detail(u16),
    /// Harmless: a FIFO or socket node, PTRACE_TRACEME, a clone or unshare without namespaces,
    /// `pivot_root` and `chroot` (which only tell the runtime's setup apart).
    NotAVector,
    /// Decided by user memory the registers point to (mount's and fsopen's file system type,
    /// clone3's flags, adjtimex's modes): the kernel side reads it.
    UserMemory,
}

const S_IFMT: u64 = 0o170000;
const S_IFCHR: u64 = 0o020000;
const S_IFBLK: u64 = 0o060000;
pub const CLONE_NEWUSER: u64 = 0x1000_0000;
/// CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWPID, NEWNET.
pub const CLONE_OTHER_NAMESPACES: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x2000_0000 | 0x4000_0000;
/// CLONE_NEWTIME: a namespace flag for unshare and clone3 only (clone's low byte is the exit
/// signal).
pub const CLONE_NEWTIME: u64 = 0x80;
const PTRACE_TRACEME: u64 = 0;

/// What `args` (the first four argument registers) of candidate `syscall` decide.
#[inline(always)]
pub fn from_registers(syscall: u32, args: [u64; 4]) -> Registers {
    match syscall {
        nr::PIVOT_ROOT | nr::CHROOT => Registers::NotAVector,
        nr::MOUNT | nr::FSOPEN | nr::CLONE3 | nr::ADJTIMEX | nr::CLOCK_ADJTIME => Registers::UserMemory,
        nr::MKNOD => device(args[1]),
        nr::MKNODAT => device(args[2]),
        nr::UNSHARE => namespaces(args[0], CLONE_NEWTIME),
        nr::CLONE => namespaces(args[0], 0),
        nr::PTRACE if args[0] == PTRACE_TRACEME => Registers::NotAVector,
        _ => Registers::Detail(detail::NONE),
    }
}

/// A mknod `mode` that makes a device node.
#[inline(always)]
fn device(mode: u64) -> Registers {
    match mode & S_IFMT {
        S_IFBLK => Registers::Detail(detail::BLOCK_DEVICE),
        S_IFCHR => Registers::Detail(detail::CHAR_DEVICE),
        _ => Registers::NotAVector,
    }
}

/// unshare/clone `flags` that create namespaces (`time` is CLONE_NEWTIME where it is one).
#[inline(always)]
pub fn namespaces(flags: u64, time: u64) -> Registers {
    if flags & CLONE_NEWUSER != 0 {
        Registers::Detail(detail::USER_NAMESPACE)
    } else if flags & (CLONE_OTHER_NAMESPACES | time) != 0 {
        Registers::Detail(detail::OTHER_NAMESPACE)
    } else {
        Registers::NotAVector
    }
}

/// Key of `ESCAPE_ATTEMPTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EscapeKey {
    pub cgroup_id: u64,
    /// An x86_64 syscall number of `CANDIDATES`.
    pub syscall: u32,
    /// One of `answer`.
    pub answer: u16,
    /// One of `detail`.
    pub detail: u16,
}
const _: () = assert!(core::mem::size_of::<EscapeKey>() == 16);

/// Whether `errno` (positive) means the kernel refused the call on privilege or policy.
pub const fn denied(errno: u32) -> bool {
    const EPERM: u32 = 1;
    const EACCES: u32 = 13;
    const ENOSYS: u32 = 38;
    matches!(errno, EPERM | EACCES | ENOSYS)
}

/// The vector a counted (syscall, detail) is, and the detail label: what the metric says.
pub fn vector(syscall: u32, detail: u16) -> (&'static str, &'static str) {
    let fs = match detail {
        detail::FS_CGROUP => "cgroup",
        detail::FS_PROC => "proc",
        detail::FS_SYSFS => "sysfs",
        detail::FS_DEVPTS => "devpts",
        detail::FS_BLOCK_DEVICE => "block_device",
        detail::FS_BIND => "bind",
        detail::FS_OTHER => "other",
        _ => "",
    };
    match syscall {
        nr::MOUNT | nr::FSOPEN | nr::FSMOUNT | nr::MOVE_MOUNT | nr::OPEN_TREE => ("mount", fs),
        nr::SETNS => ("setns", ""),
        nr::UNSHARE | nr::CLONE | nr::CLONE3 if detail == detail::USER_NAMESPACE => ("unshare_user", ""),
        nr::UNSHARE | nr::CLONE | nr::CLONE3 => ("unshare", ""),
        nr::INIT_MODULE | nr::FINIT_MODULE => ("module_load", ""),
        nr::BPF => ("bpf", ""),
        nr::PERF_EVENT_OPEN => ("perf_event_open", ""),
        nr::PTRACE | nr::PROCESS_VM_READV | nr::PROCESS_VM_WRITEV => ("ptrace", ""),
        nr::OPEN_BY_HANDLE_AT => ("open_by_handle_at", ""),
        nr::MKNOD | nr::MKNODAT if detail == detail::BLOCK_DEVICE => ("mknod_device", "block"),
        nr::MKNOD | nr::MKNODAT => ("mknod_device", "char"),
        nr::ADD_KEY | nr::REQUEST_KEY | nr::KEYCTL => ("keyctl", ""),
        nr::USERFAULTFD => ("userfaultfd", ""),
        nr::KEXEC_LOAD | nr::KEXEC_FILE_LOAD => ("kexec", ""),
        nr::REBOOT => ("reboot", ""),
        nr::SWAPON => ("swapon", ""),
        nr::SETTIMEOFDAY | nr::CLOCK_SETTIME | nr::ADJTIMEX | nr::CLOCK_ADJTIME => ("clock", ""),
        nr::IOPL | nr::IOPERM => ("ioport", ""),
        _ => ("other", ""),
    }
}

/// Every vector, in the order the docs list them.
pub const VECTORS: [&str; 18] = [
    "mount",
    "setns",
    "unshare_user",
    "unshare",
    "module_load",
    "bpf",
    "perf_event_open",
    "ptrace",
    "open_by_handle_at",
    "mknod_device",
    "keyctl",
    "userfaultfd",
    "kexec",
    "reboot",
    "swapon",
    "clock",
    "ioport",
    "other",
];

#[cfg(feature = "user")]
mod pod {
    // SAFETY: a plain `#[repr(C)]` integer struct without padding.
    unsafe impl aya::Pod for super::EscapeKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bitmap_holds_exactly_the_candidates() {
        for nr in 0..CANDIDATE_LIMIT {
            let set = CANDIDATE_BITS[(nr / 64) as usize] >> (nr % 64) & 1 == 1;
            assert_eq!(set, CANDIDATES.contains(&nr), "{nr}");
        }
    }

    #[test]
    fn every_counted_syscall_is_a_named_vector() {
        for &nr in &CANDIDATES {
            if nr == nr::PIVOT_ROOT || nr == nr::CHROOT {
                continue; // never counted
            }
            let (vector, _) = vector(nr, detail::NONE);
            assert!(VECTORS.contains(&vector) && vector != "other", "{nr}: {vector}");
        }
        assert_eq!(vector(nr::UNSHARE, detail::USER_NAMESPACE).0, "unshare_user");
        assert_eq!(vector(nr::CLONE3, detail::OTHER_NAMESPACE).0, "unshare");
        assert_eq!(vector(nr::MOUNT, detail::FS_CGROUP), ("mount", "cgroup"));
        assert_eq!(vector(nr::MKNODAT, detail::BLOCK_DEVICE), ("mknod_device", "block"));
    }

    #[test]
    fn registers_decide_device_nodes_namespaces_and_tracing() {
        let fifo = 0o010600;
        assert_eq!(from_registers(nr::MKNOD, [0, fifo, 0, 0]), Registers::NotAVector);
        assert_eq!(from_registers(nr::MKNODAT, [0, 0, 0o060600, 0]), Registers::Detail(detail::BLOCK_DEVICE));
        assert_eq!(
            from_registers(nr::UNSHARE, [CLONE_NEWUSER, 0, 0, 0]),
            Registers::Detail(detail::USER_NAMESPACE)
        );
        assert_eq!(from_registers(nr::UNSHARE, [0x80, 0, 0, 0]), Registers::Detail(detail::OTHER_NAMESPACE));
        // clone's low byte is the exit signal (SIGCHLD = 17 | CLONE_NEWTIME's bit), a plain fork.
        assert_eq!(from_registers(nr::CLONE, [0x80 | 17, 0, 0, 0]), Registers::NotAVector);
        assert_eq!(from_registers(nr::PTRACE, [0, 0, 0, 0]), Registers::NotAVector);
        assert_eq!(from_registers(nr::PTRACE, [16, 1, 0, 0]), Registers::Detail(detail::NONE));
        assert_eq!(from_registers(nr::MOUNT, [0; 4]), Registers::UserMemory);
    }

    #[test]
    fn permission_errors_are_denials() {
        assert!(denied(1) && denied(13) && denied(38));
        assert!(!denied(2) && !denied(22) && !denied(0));
    }
}
