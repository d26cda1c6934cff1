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
/// Read-only globals (`u32`) of what a successful open returned, read from the kernel's file
/// rather than from the caller's arguments (which a symlink, a long path or another thread
/// can dress up): `OPENED_FILES` is 1 when the kernel's BTF has the members below, else 0 and
/// the caller's path and flags decide; the offsets of `task_struct.files`, `files_struct.fdt`,
/// `fdtable.max_fds`, `fdtable.fd`, `inode.i_mode`, `file.f_mode`, `file.f_path.dentry`,
/// `dentry.d_name.name` and `super_block.s_magic`.
pub const OPENED_FILES_GLOBAL: &str = "OPENED_FILES";
pub const TASK_FILES_OFFSET_GLOBAL: &str = "TASK_FILES_OFFSET";
pub const FILES_FDT_OFFSET_GLOBAL: &str = "FILES_FDT_OFFSET";
pub const FDTABLE_MAX_FDS_OFFSET_GLOBAL: &str = "FDTABLE_MAX_FDS_OFFSET";
pub const FDTABLE_FD_OFFSET_GLOBAL: &str = "FDTABLE_FD_OFFSET";
pub const INODE_MODE_OFFSET_GLOBAL: &str = "INODE_MODE_OFFSET";
pub const FILE_MODE_OFFSET_GLOBAL: &str = "FILE_MODE_OFFSET";
pub const FILE_DENTRY_OFFSET_GLOBAL: &str = "FILE_DENTRY_OFFSET";
pub const DENTRY_NAME_OFFSET_GLOBAL: &str = "DENTRY_NAME_OFFSET";
pub const SB_MAGIC_OFFSET_GLOBAL: &str = "SB_MAGIC_OFFSET";
/// Read-only globals (`u32`) of what a successful connect reached: `UNIX_PEERS` is 1 when the
/// kernel's BTF has the members below (and `OPENED_FILES` is 1), else the caller's address
/// decides; the offsets of `file.private_data`, `socket.sk`, `sock.__sk_common.skc_family`,
/// `unix_sock.peer` and `unix_sock.path.dentry`.
pub const UNIX_PEERS_GLOBAL: &str = "UNIX_PEERS";
pub const FILE_PRIVATE_DATA_OFFSET_GLOBAL: &str = "FILE_PRIVATE_DATA_OFFSET";
pub const SOCKET_SK_OFFSET_GLOBAL: &str = "SOCKET_SK_OFFSET";
pub const SOCK_FAMILY_OFFSET_GLOBAL: &str = "SOCK_FAMILY_OFFSET";
pub const UNIX_PEER_OFFSET_GLOBAL: &str = "UNIX_PEER_OFFSET";
pub const UNIX_DENTRY_OFFSET_GLOBAL: &str = "UNIX_DENTRY_OFFSET";

/// x86_64 syscall numbers the family looks at.
pub mod nr {
    pub const OPEN: u32 = 2;
    pub const CONNECT: u32 = 42;
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
    pub const OPENAT2: u32 = 437;
    pub const OPENAT: u32 = 257;
}

/// The syscalls the exit looks at: each vector's, and `pivot_root` and `chroot`, which only tell
/// the runtime's setup apart (never counted).
pub const CANDIDATES: [u32; 39] = [
    nr::OPEN,
    nr::CONNECT,
    nr::OPENAT,
    nr::OPENAT2,
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
    /// EPERM, EACCES, EROFS or ENOSYS (`denied`).
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
    /// An open for writing of a host-control file, by its name (`HOST_FILES`).
    pub const CORE_PATTERN: u16 = 12;
    pub const UEVENT_HELPER: u16 = 13;
    pub const SYSRQ_TRIGGER: u16 = 14;
    pub const RELEASE_AGENT: u16 = 15;
    pub const MODPROBE: u16 = 16;
    /// A connect to a container runtime's socket, by its name (`RUNTIME_SOCKETS`).
    pub const DOCKER: u16 = 17;
    pub const CONTAINERD: u16 = 18;
    pub const CRIO: u16 = 19;
    pub const PODMAN: u16 = 20;
    /// An open of a block device (the host's disks, where the container can see them), for
    /// reading only or for writing.
    pub const BLOCK_READ: u16 = 21;
    pub const BLOCK_WRITE: u16 = 22;
}

mod arguments;
pub use arguments::*;

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

/// Whether `errno` (positive) means the kernel refused the call on privilege or policy: EPERM,
/// EACCES, ENOSYS (what seccomp profiles return for syscalls they do not name), EROFS (what the
/// runtime mounted read-only: /proc/sys, the masked /proc files).
pub const fn denied(errno: u32) -> bool {
    const EPERM: u32 = 1;
    const EACCES: u32 = 13;
    const EROFS: u32 = 30;
    const ENOSYS: u32 = 38;
    matches!(errno, EPERM | EACCES | EROFS | ENOSYS)
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
        nr::OPEN | nr::OPENAT | nr::OPENAT2 if detail == detail::BLOCK_READ => ("block_device_open", "read"),
        nr::OPEN | nr::OPENAT | nr::OPENAT2 if detail == detail::BLOCK_WRITE => {
            ("block_device_open", "write")
        }
        nr::OPEN | nr::OPENAT | nr::OPENAT2 => ("host_file_write", named(detail)),
        nr::CONNECT => ("runtime_socket", named(detail)),
        _ => ("other", ""),
    }
}

/// The label of a host file's or runtime socket's detail: the file's name (`sysrq-trigger` as
/// `sysrq_trigger`), the runtime's.
fn named(detail: u16) -> &'static str {
    match detail {
        detail::CORE_PATTERN => "core_pattern",
        detail::UEVENT_HELPER => "uevent_helper",
        detail::SYSRQ_TRIGGER => "sysrq_trigger",
        detail::RELEASE_AGENT => "release_agent",
        detail::MODPROBE => "modprobe",
        detail::DOCKER => "docker",
        detail::CONTAINERD => "containerd",
        detail::CRIO => "crio",
        detail::PODMAN => "podman",
        _ => "",
    }
}

/// Every vector, in the order the docs list them.
pub const VECTORS: [&str; 21] = [
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
    "block_device_open",
    "keyctl",
    "userfaultfd",
    "kexec",
    "reboot",
    "swapon",
    "clock",
    "ioport",
    "host_file_write",
    "runtime_socket",
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
    fn permission_errors_are_denials() {
        assert!(denied(1) && denied(13) && denied(30) && denied(38));
        assert!(!denied(2) && !denied(22) && !denied(0));
    }
}
