//! One cgroup's path from its id, without walking the hierarchy: a cgroup id is the kernfs node
//! id, which cgroupfs accepts as a file handle (`FILEID_KERNFS`), so `open_by_handle_at` opens the
//! directory and `/proc/self/fd/<fd>` names it. One syscall per id instead of a walk of every
//! cgroup on the node.
//!
//! It needs CAP_DAC_READ_SEARCH (root has it). Without it, or where the kernel or a seccomp
//! profile refuses the call, the lookups say so once and the caller walks instead.

use std::{
    ffi::OsString,
    fs::File,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStringExt as _,
    },
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
};

use tracing::info;

use super::cgroupfs::{V1_CGROUP_ID_BIT, path_label};

/// `FILEID_KERNFS` (include/linux/exportfs.h): the handle is the 64-bit kernfs node id.
const FILEID_KERNFS: i32 = 0xfe;

/// `struct file_handle` with room for one kernfs id.
#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: u64,
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The cgroup exists; its path relative to its hierarchy's root, as a label.
    Found(String),
    /// No cgroup has this id any more (removed), or it is in no hierarchy kernsight follows.
    Gone,
    /// The lookup could not tell (no permission, no kernel support, a path outside the mount):
    /// only a walk can.
    Unknown,
}

/// The hierarchies' mount points, opened once (the handle names a cgroup within one of them).
#[derive(Debug)]
pub struct CgroupHandles {
    /// (mount point, an open descriptor of it, bits or-ed into its ids)
    mounts: Vec<(PathBuf, File, u64)>,
    /// Cleared at the first refusal that holds for every id (EPERM, ENOSYS, EOPNOTSUPP).
    usable: AtomicBool,
}

impl CgroupHandles {
    /// Opens the mount points of `hierarchies` (mount point, tag); none that opens: `None`.
    pub fn open(hierarchies: &[(PathBuf, u64)]) -> Option<Self> {
        let mounts: Vec<_> = hierarchies
            .iter()
            .filter_map(|(root, tag)| File::open(root).ok().map(|file| (root.clone(), file, *tag)))
            .collect();
        (!mounts.is_empty()).then(|| Self { mounts, usable: AtomicBool::new(true) })
    }

    pub fn usable(&self) -> bool {
        self.usable.load(Ordering::Relaxed)
    }

    /// The path of a tagged cgroup id (`V1_CGROUP_ID_BIT` for the v1 hierarchy's).
    pub fn lookup(&self, tagged_id: u64) -> Lookup {
        let tag = tagged_id & V1_CGROUP_ID_BIT;
        let Some((root, mount, _)) = self.mounts.iter().find(|(_, _, t)| *t == tag) else {
            return Lookup::Gone;
        };
        if !self.usable() {
            return Lookup::Unknown;
        }
        let id = tagged_id & !V1_CGROUP_ID_BIT;
        let mut handle = KernfsHandle { handle_bytes: 8, handle_type: FILEID_KERNFS, id };
        // SAFETY: `handle` is a `struct file_handle` whose `handle_bytes` says how many bytes of
        // `f_handle` follow (8, the id); the kernel only reads it. The descriptor returned, if
        // any, is ours to own.
        let fd = unsafe {
            libc::open_by_handle_at(
                mount.as_raw_fd(),
                (&raw mut handle).cast::<libc::file_handle>(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return self.refused(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor just returned by the kernel, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        match std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
            Ok(target) => relative_label(root, target.into_os_string(), tagged_id),
            Err(_) => Lookup::Unknown,
        }
    }

    fn refused(&self, err: std::io::Error) -> Lookup {
        match err.raw_os_error() {
            // The handle names no cgroup (removed; ids are never reused).
            Some(libc::ESTALE | libc::ENOENT) => Lookup::Gone,
            Some(libc::EPERM | libc::EACCES | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL) => {
                if self.usable.swap(false, Ordering::Relaxed) {
                    info!(
                        "cannot look cgroups up by id ({err}): unknown cgroup ids are found by walking \
                         cgroupfs instead (at most once per metadata.cgroup_walk_interval_milliseconds); \
                         grant CAP_DAC_READ_SEARCH to avoid the walks"
                    );
                }
                Lookup::Unknown
            }
            // Out of descriptors or memory: this id, this time.
            _ => Lookup::Unknown,
        }
    }
}

/// The path below `root` that `/proc/self/fd` gave, as a label; a path outside the mount (a
/// cgroup namespace's view) is `Unknown`.
fn relative_label(root: &Path, target: OsString, tagged_id: u64) -> Lookup {
    let bytes = target.into_vec();
    // A directory removed while it was open reads "<path> (deleted)".
    if bytes.ends_with(b" (deleted)") {
        return Lookup::Gone;
    }
    let root = root.as_os_str().as_encoded_bytes();
    let root = root.strip_suffix(b"/").unwrap_or(root);
    match bytes.strip_prefix(root) {
        Some([]) => Lookup::Found("/".to_owned()),
        Some(rest) if rest.starts_with(b"/") => Lookup::Found(path_label(rest, tagged_id)),
        _ => Lookup::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_labels() {
        let root = Path::new("/sys/fs/cgroup/unified");
        let found = |target: &[u8]| relative_label(root, OsString::from_vec(target.to_vec()), 7);
        assert_eq!(found(b"/sys/fs/cgroup/unified"), Lookup::Found("/".into()));
        assert_eq!(found(b"/sys/fs/cgroup/unified/a/b"), Lookup::Found("/a/b".into()));
        assert_eq!(found(b"/sys/fs/cgroup/unified/a\xffb"), Lookup::Found("/a\\xffb".into()));
        assert_eq!(found(b"/sys/fs/cgroup/unified/a (deleted)"), Lookup::Gone);
        assert_eq!(found(b"/sys/fs/cgroup/unifiedx/a"), Lookup::Unknown);
        assert_eq!(found(b"/elsewhere"), Lookup::Unknown);
    }

    /// The real unified hierarchy: its root's id names "/" (needs root for CAP_DAC_READ_SEARCH;
    /// the integration tests look up cgroups they create).
    #[test]
    fn the_unified_root_is_found_by_its_id() {
        use std::os::unix::fs::MetadataExt as _;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED the_unified_root_is_found_by_its_id: needs root (CAP_DAC_READ_SEARCH)");
            return;
        }
        let Some(root) =
            crate::kernel::mountinfo::read().ok().and_then(|m| super::super::cgroupfs::unified_mount(&m))
        else {
            eprintln!("SKIPPED the_unified_root_is_found_by_its_id: no cgroup2 hierarchy mounted");
            return;
        };
        let id = std::fs::metadata(&root).unwrap().ino();
        let handles = CgroupHandles::open(&[(root.clone(), 0)]).unwrap();
        assert_eq!(handles.lookup(id), Lookup::Found("/".into()), "{}", root.display());
        // An id no cgroup has (ids are never reused, and this one is far past any allocated).
        assert_eq!(handles.lookup((1 << 40) + 12345), Lookup::Gone);
    }

    /// A plain directory is no cgroupfs: its handles are not kernfs ids, so the kernel refuses
    /// them (`Gone` or `Unknown`, never a wrong path).
    #[test]
    fn a_non_kernfs_mount_never_names_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let Some(handles) = CgroupHandles::open(&[(dir.path().to_owned(), 0)]) else {
            panic!("a temporary directory opens")
        };
        assert!(!matches!(handles.lookup(12345), Lookup::Found(_)));
        assert_eq!(handles.lookup(V1_CGROUP_ID_BIT | 5), Lookup::Gone, "no v1 hierarchy here");
    }
}
