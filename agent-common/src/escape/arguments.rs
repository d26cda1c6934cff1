//! What a candidate's arguments say: the registers (device node types, namespace flags,
//! PTRACE_TRACEME, whether an open is for writing), and the names a path or socket address must
//! end with. Pure functions, so that the kernel side, `kernsight trace escape` and the tests
//! decide alike.

use super::{detail, nr};

/// The host-control files an open for writing is a vector for: the kernel runs what
/// `core_pattern` (a `|program`), `uevent_helper`, `modprobe` and a cgroup v1 `release_agent`
/// name, as root on the host; `sysrq-trigger` reboots or crashes it. A successful open is
/// matched on the opened file's own name and file system (`host_file_system`), whatever path
/// reached it; a refused one, which opened nothing, on the last component of the path.
pub const HOST_FILES: [(&[u8], u16); 5] = [
    (b"core_pattern", detail::CORE_PATTERN),
    (b"uevent_helper", detail::UEVENT_HELPER),
    (b"sysrq-trigger", detail::SYSRQ_TRIGGER),
    (b"release_agent", detail::RELEASE_AGENT),
    (b"modprobe", detail::MODPROBE),
];

/// The container runtimes' API sockets a `connect` is a vector for (whoever reaches them starts
/// privileged containers), by name: a successful connect by the name the listening socket was
/// bound to (where a container's spec mounts it, and under which name, does not matter); a
/// refused one by the last component of the address.
pub const RUNTIME_SOCKETS: [(&[u8], u16); 6] = [
    (b"docker.sock", detail::DOCKER),
    (b"cri-dockerd.sock", detail::DOCKER),
    (b"dockershim.sock", detail::DOCKER),
    (b"containerd.sock", detail::CONTAINERD),
    (b"crio.sock", detail::CRIO),
    (b"podman.sock", detail::PODMAN),
];

/// Magic numbers of the file systems the host-control files live on (`statfs(2)`'s `f_type`).
pub const PROC_SUPER_MAGIC: u64 = 0x9fa0;
pub const SYSFS_MAGIC: u64 = 0x6265_6572;
pub const CGROUP_SUPER_MAGIC: u64 = 0x0027_e0eb;

/// The file system (its magic) that host-control file `detail` lives on: a file so named
/// elsewhere (a container's own `/tmp/core_pattern`) controls nothing.
#[inline(always)]
pub const fn host_file_system(detail: u16) -> u64 {
    match detail {
        detail::UEVENT_HELPER => SYSFS_MAGIC,
        detail::RELEASE_AGENT => CGROUP_SUPER_MAGIC,
        _ => PROC_SUPER_MAGIC, // core_pattern, modprobe (/proc/sys/kernel), sysrq-trigger
    }
}

/// Bytes of a path the kernel side reads (the names above are matched at its end).
pub const PATH_BYTES: usize = 128;

/// The detail of the entry of `names` that the path `buf[..len]` ends with as a whole component
/// (after a `/`, or as the whole path). Written with masked indexes and bounded loops for the
/// verifier; `len` is what a string read returned (without the NUL).
#[inline(always)]
pub fn last_component(buf: &[u8; PATH_BYTES], len: usize, names: &[(&[u8], u16)]) -> Option<u16> {
    const MASK: usize = PATH_BYTES - 1;
    let len = len & MASK;
    let mut i = 0;
    while i < names.len() {
        let (name, detail) = names[i];
        i += 1;
        let n = name.len();
        if n > len || n >= 32 {
            continue;
        }
        let start = len - n;
        if start > 0 && buf[(start - 1) & MASK] != b'/' {
            continue;
        }
        let mut j = 0;
        let mut same = true;
        while j < 32 {
            if j >= n {
                break;
            }
            if buf[(start + j) & MASK] != name[j] {
                same = false;
                break;
            }
            j += 1;
        }
        if same {
            return Some(detail);
        }
    }
    None
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
/// O_WRONLY | O_RDWR: the open is for writing.
pub const OPEN_FOR_WRITING: u64 = 0o3;

/// What `args` (the first four argument registers) of candidate `syscall` decide.
#[inline(always)]
pub fn from_registers(syscall: u32, args: [u64; 4]) -> Registers {
    match syscall {
        nr::PIVOT_ROOT | nr::CHROOT => Registers::NotAVector,
        nr::MOUNT | nr::FSOPEN | nr::CLONE3 | nr::ADJTIMEX | nr::CLOCK_ADJTIME => Registers::UserMemory,
        // What was opened (a block device) or, for writing, the path decides.
        nr::OPEN | nr::OPENAT | nr::OPENAT2 | nr::CONNECT => Registers::UserMemory,
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

#[cfg(test)]
mod tests {
    use super::{super::vector, *};

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
    fn host_files_and_runtime_sockets_are_matched_by_their_last_component() {
        let matched = |path: &str, names: &[(&[u8], u16)]| {
            let mut buf = [0u8; PATH_BYTES];
            buf[..path.len()].copy_from_slice(path.as_bytes());
            last_component(&buf, path.len(), names)
        };
        assert_eq!(matched("/proc/sys/kernel/core_pattern", &HOST_FILES), Some(detail::CORE_PATTERN));
        assert_eq!(matched("core_pattern", &HOST_FILES), Some(detail::CORE_PATTERN));
        assert_eq!(matched("/sys/fs/cgroup/x/release_agent", &HOST_FILES), Some(detail::RELEASE_AGENT));
        assert_eq!(matched("/proc/sysrq-trigger", &HOST_FILES), Some(detail::SYSRQ_TRIGGER));
        assert_eq!(matched("/tmp/my_core_pattern", &HOST_FILES), None, "a whole component only");
        assert_eq!(matched("/proc/sys/kernel/core_pattern2", &HOST_FILES), None);
        assert_eq!(matched("/var/run/docker.sock", &RUNTIME_SOCKETS), Some(detail::DOCKER));
        assert_eq!(matched("/run/containerd/containerd.sock", &RUNTIME_SOCKETS), Some(detail::CONTAINERD));
        assert_eq!(matched("/tmp/app.sock", &RUNTIME_SOCKETS), None);
        assert_eq!(vector(nr::OPENAT, detail::SYSRQ_TRIGGER), ("host_file_write", "sysrq_trigger"));
        assert_eq!(vector(nr::CONNECT, detail::CRIO), ("runtime_socket", "crio"));
        assert_eq!(vector(nr::OPENAT, detail::BLOCK_WRITE), ("block_device_open", "write"));
    }
}
