//! Capability checks (`capability:cap_capable`), counted per (cgroup, capability, result, user
//! namespace) in a per-CPU hash: the hook fires on every privileged operation, so nothing is
//! streamed.

/// Per-CPU hash `CapabilityKey` → `u64`: capability checks.
pub const CAPABILITY_CHECKS_MAP: &str = "CAPABILITY_CHECKS";
/// Default bound of `CAPABILITY_CHECKS` ((cgroup, cap, result, userns) entries).
pub const DEFAULT_CAPABILITY_ENTRIES: u32 = 8_192;

/// Read-only globals (`u32`): offsets of `user_namespace.level` (0 for the initial namespace)
/// and of `task_struct.comm`.
pub const USER_NS_LEVEL_OFFSET_GLOBAL: &str = "USER_NS_LEVEL_OFFSET";
pub const TASK_COMM_OFFSET_GLOBAL: &str = "TASK_COMM_OFFSET";
/// Read-only global (`u32`): offset of `cred.user_ns`, for the fexit program on `cap_capable`.
pub const CRED_USER_NS_OFFSET_GLOBAL: &str = "CRED_USER_NS_OFFSET";

/// Checks made by runc's own processes while they set a container up (`runc:[0:PARENT]`,
/// `runc:[1:CHILD]`, `runc:[2:INIT]`: runc names its stages so) are not counted: they happen in
/// the container's cgroup before the container's process runs, are the same for every
/// container, and are the runtime's, not the workload's. Any process can take that name
/// (`prctl(PR_SET_NAME)`), so the name only selects the candidates: a check is skipped when the
/// task's executable (`mm->exe_file`) is also one of `RUNTIME_BINARIES`, which a process in a
/// container cannot choose (runc re-executes itself through a read-only bind mount of its own
/// binary, the same inode). The prefix, as the first bytes of `comm` read as a little-endian
/// integer, and the mask of its 6 bytes.
pub const RUNC_COMM_PREFIX: u64 = u64::from_le_bytes(*b"runc:[\0\0");
pub const RUNC_COMM_MASK: u64 = 0xffff_ffff_ffff;

/// Hash `RuntimeBinary` → `u8` (1): the container runtimes' executables, filled by user space
/// from `security.runtime_binaries` before attaching.
pub const RUNTIME_BINARIES_MAP: &str = "RUNTIME_BINARIES";
pub const MAX_RUNTIME_BINARIES: u32 = 16;

/// An executable's identity as the kernel sees it: inode number and device (`super_block.s_dev`,
/// the kernel's encoding `major << 20 | minor`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuntimeBinary {
    pub inode: u64,
    pub device: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<RuntimeBinary>() == 16);

/// Read-only globals (`u32`): offsets on the path `mm->exe_file->f_inode->{i_ino,
/// i_sb->s_dev}` (`task_struct.mm` is the shared `processes::TASK_MM_OFFSET_GLOBAL`), read from
/// the running kernel's BTF.
pub const MM_EXE_FILE_OFFSET_GLOBAL: &str = "MM_EXE_FILE_OFFSET";
pub const FILE_INODE_OFFSET_GLOBAL: &str = "FILE_INODE_OFFSET";
pub const INODE_INO_OFFSET_GLOBAL: &str = "INODE_INO_OFFSET";
pub const INODE_SB_OFFSET_GLOBAL: &str = "INODE_SB_OFFSET";
pub const SB_DEV_OFFSET_GLOBAL: &str = "SB_DEV_OFFSET";

/// `CapabilityKey::result`.
pub const GRANTED: u8 = 0;
pub const DENIED: u8 = 1;

/// `CapabilityKey::userns`: the credentials belong to the initial user namespace (the host's),
/// or to a nested one (a capability there is only worth something inside that namespace).
pub const INITIAL_USER_NS: u8 = 0;
pub const NESTED_USER_NS: u8 = 1;

/// Highest capability number the overflow entries are created for (`CAP_LAST_CAP` is 40 on
/// 6.x kernels); checks of higher numbers that find the map full are counted as lost only.
pub const MAX_CAPABILITY: u32 = 63;

/// Key of `CAPABILITY_CHECKS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CapabilityKey {
    /// Tagged as the syscall counters tag it (`V1_CGROUP_ID_BIT`); `OVERFLOW_CGROUP_ID` for
    /// checks that found the map full.
    pub cgroup_id: u64,
    /// The capability number (`CAP_NET_BIND_SERVICE` = 10).
    pub cap: u32,
    /// `GRANTED` or `DENIED`.
    pub result: u8,
    /// `INITIAL_USER_NS` or `NESTED_USER_NS`.
    pub userns: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<CapabilityKey>() == 16);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]` integers with explicit padding.
    unsafe impl aya::Pod for super::CapabilityKey {}
    unsafe impl aya::Pod for super::RuntimeBinary {}
}
