//! cgroup lifecycle events (`cgroup:cgroup_mkdir`, `cgroup:cgroup_rmdir`), streamed through a
//! ring buffer so that the agent's cgroup index follows the hierarchy without walking it again.

/// Ring buffer of `CgroupEvent` records.
pub const CGROUP_EVENTS_MAP: &str = "CGROUP_EVENTS";
/// Per-CPU array, one slot: events that found the ring buffer full.
pub const CGROUP_EVENTS_LOST_MAP: &str = "CGROUP_EVENTS_LOST";
/// Ring buffer size in bytes (a power of two multiple of the page size).
pub const CGROUP_EVENTS_BYTES: u32 = 256 * 1024;

/// Read-only globals (`u32`): offsets of `cgroup.root` and `cgroup_root.hierarchy_id`.
pub const CGROUP_ROOT_OFFSET_GLOBAL: &str = "CGROUP_ROOT_OFFSET";
pub const ROOT_HIERARCHY_ID_OFFSET_GLOBAL: &str = "ROOT_HIERARCHY_ID_OFFSET";

pub const CGROUP_MKDIR: u32 = 1;
pub const CGROUP_RMDIR: u32 = 2;

/// Longest path carried; longer ones arrive truncated (`path_len == CGROUP_PATH_MAX`) and the
/// agent resolves that id by walking the hierarchy instead.
pub const CGROUP_PATH_MAX: usize = 256;

/// One mkdir or rmdir.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CgroupEvent {
    /// `CGROUP_MKDIR` or `CGROUP_RMDIR`.
    pub kind: u32,
    /// 0 for the unified hierarchy; the v1 hierarchy's id (first column of /proc/*/cgroup).
    pub hierarchy_id: u32,
    /// The cgroup's id in its hierarchy (untagged).
    pub cgroup_id: u64,
    /// Bytes of `path` in use, terminating NUL included.
    pub path_len: u32,
    pub _pad: u32,
    /// Path relative to the hierarchy's root, NUL-terminated.
    pub path: [u8; CGROUP_PATH_MAX],
}
const _: () = assert!(core::mem::size_of::<CgroupEvent>() == 24 + CGROUP_PATH_MAX);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]` integers and bytes without implicit padding.
    unsafe impl aya::Pod for super::CgroupEvent {}
}
