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
/// container, and are the runtime's, not the workload's. The prefix, as the first bytes of
/// `comm` read as a little-endian integer, and the mask of its 6 bytes.
pub const RUNC_COMM_PREFIX: u64 = u64::from_le_bytes(*b"runc:[\0\0");
pub const RUNC_COMM_MASK: u64 = 0xffff_ffff_ffff;

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
}
