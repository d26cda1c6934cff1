//! cgroup hierarchies: where they are mounted, and cgroup id → path.
//!
//! A cgroup's id (what `bpf_get_current_cgroup_id()` returns) is the inode number of its
//! directory, so an index is built by walking the hierarchy. Pure v2 hosts mount the unified
//! hierarchy at `/sys/fs/cgroup`, hybrid hosts at `/sys/fs/cgroup/unified` beside v1
//! controllers; v1-only hosts have no unified hierarchy. Tasks that sit in the v2 root are
//! attributed by their cgroup in one v1 hierarchy (memory first), whose ids carry
//! `V1_CGROUP_ID_BIT`; both are found in the mount table.

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::Instant,
};

pub use kernsight_common::syscalls::{ROOT_CGROUP_ID, V1_CGROUP_ID_BIT};
use tracing::debug;

use super::mountinfo::Mount;

/// v1 controllers that attribute tasks of the v2 root, in order of preference: memory is the
/// one every container runtime and kubelet sets up per container.
const V1_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// Mount point of the unified (v2) hierarchy, if the host has one.
pub fn unified_mount(mounts: &[Mount]) -> Option<PathBuf> {
    mounts
        .iter()
        .find(|m| m.fs_type == "cgroup2" && m.root == "/")
        .or_else(|| mounts.iter().find(|m| m.fs_type == "cgroup2"))
        .map(|m| m.mount_point.clone())
}

/// The v1 hierarchy used for tasks of the v2 root: (controller, mount point).
pub fn v1_mount(mounts: &[Mount]) -> Option<(&'static str, PathBuf)> {
    V1_CONTROLLERS.into_iter().find_map(|controller| {
        mounts
            .iter()
            .find(|m| m.fs_type == "cgroup" && m.super_options.split(',').any(|o| o == controller))
            .map(|m| (controller, m.mount_point.clone()))
    })
}

/// The hierarchies kernsight attributes by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchies {
    /// The unified (v2) hierarchy's mount point.
    pub unified: Option<PathBuf>,
    /// The v1 hierarchy for tasks of the v2 root: (controller, mount point).
    pub v1: Option<(&'static str, PathBuf)>,
}

impl Hierarchies {
    pub fn from_mounts(mounts: &[Mount]) -> Self {
        Self { unified: unified_mount(mounts), v1: v1_mount(mounts) }
    }

    /// From this process's mount table; none when it cannot be read.
    pub fn detect() -> Self {
        super::mountinfo::read().map(|mounts| Self::from_mounts(&mounts)).unwrap_or_default()
    }

    pub fn index(&self) -> CgroupIndex {
        CgroupIndex::new(self.unified.clone(), self.v1.as_ref().map(|(_, mount)| mount.clone()))
    }
}

/// cgroup id → path relative to the hierarchy root (`/` for the root, `/a/b` below it), over
/// the unified hierarchy and, where tasks are attributed by it, one v1 hierarchy.
#[derive(Debug)]
pub struct CgroupIndex {
    /// (mount point, bits or-ed into the ids found there)
    hierarchies: Vec<(PathBuf, u64)>,
    paths: HashMap<u64, String>,
    /// Ids the latest walk found.
    alive: HashSet<u64>,
}

impl CgroupIndex {
    pub fn new(unified: Option<PathBuf>, v1: Option<PathBuf>) -> Self {
        let hierarchies =
            unified.map(|root| (root, 0)).into_iter().chain(v1.map(|root| (root, V1_CGROUP_ID_BIT)));
        Self { hierarchies: hierarchies.collect(), paths: HashMap::new(), alive: HashSet::new() }
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The path of a cgroup id, as of the latest walk.
    pub fn resolve(&self, id: u64) -> Option<&str> {
        self.paths.get(&id).map(String::as_str)
    }

    /// Whether the cgroup existed at the latest walk.
    pub fn is_alive(&self, id: u64) -> bool {
        self.alive.contains(&id)
    }

    /// Drops the path of a removed cgroup once its counts are no longer exported.
    pub fn forget(&mut self, id: u64) {
        if !self.alive.contains(&id) {
            self.paths.remove(&id);
        }
    }

    /// Walks the whole hierarchy. Paths of cgroups that were removed are kept until `forget`:
    /// their last counts are still exported under their name.
    pub fn rescan(&mut self) {
        let started = Instant::now();
        self.alive.clear();
        for (root, tag) in &self.hierarchies {
            let mut stack = vec![root.clone()];
            while let Some(dir) = stack.pop() {
                let Ok(meta) = std::fs::metadata(&dir) else { continue };
                let relative = dir.strip_prefix(root).unwrap_or(Path::new(""));
                self.paths.insert(meta.ino() | tag, format!("/{}", relative.display()));
                self.alive.insert(meta.ino() | tag);
                let Ok(entries) = std::fs::read_dir(&dir) else { continue };
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(entry.path());
                    }
                }
            }
        }
        debug!(cgroups = self.paths.len(), elapsed = ?started.elapsed(), "walked the cgroup hierarchies");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::mountinfo;

    #[test]
    fn finds_unified_mount_on_hybrid_and_pure_v2() {
        let hybrid = mountinfo::parse(
            "31 25 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n\
             32 31 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
             35 31 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
        );
        assert_eq!(unified_mount(&hybrid), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let pure = mountinfo::parse("30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        assert_eq!(unified_mount(&pure), Some(PathBuf::from("/sys/fs/cgroup")));
        let v1_only = mountinfo::parse("35 31 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n");
        assert_eq!(unified_mount(&v1_only), None);
    }

    #[test]
    fn indexes_a_directory_tree_by_inode() {
        // A plain directory tree stands in for cgroupfs: ids are inode numbers in both.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("kubepods/pod1")).unwrap();
        let mut index = CgroupIndex::new(Some(dir.path().to_owned()), None);
        index.rescan();
        let pod_ino = std::fs::metadata(dir.path().join("kubepods/pod1")).unwrap().ino();
        let root_ino = std::fs::metadata(dir.path()).unwrap().ino();
        assert_eq!(index.resolve(pod_ino), Some("/kubepods/pod1"));
        assert_eq!(index.resolve(root_ino), Some("/"));
        assert_eq!(index.len(), 3);

        // A cgroup created later is found by the next walk.
        std::fs::create_dir(dir.path().join("late")).unwrap();
        let late_ino = std::fs::metadata(dir.path().join("late")).unwrap().ino();
        assert_eq!(index.resolve(late_ino), None);
        index.rescan();
        assert_eq!(index.resolve(late_ino), Some("/late"));
        assert_eq!(index.resolve(u64::MAX), None);

        // A removed cgroup keeps its path (for its last counts) until it is forgotten.
        std::fs::remove_dir(dir.path().join("late")).unwrap();
        assert!(index.is_alive(late_ino), "until the next walk");
        index.rescan();
        assert!(!index.is_alive(late_ino));
        assert_eq!(index.resolve(late_ino), Some("/late"));
        index.forget(late_ino);
        assert_eq!(index.len(), 3);
        assert!(index.is_alive(pod_ino));
    }
}

#[cfg(test)]
mod v1_tests {
    use super::*;

    #[test]
    fn v1_ids_are_tagged_and_do_not_collide_with_v2() {
        let v2 = tempfile::tempdir().unwrap();
        let v1 = tempfile::tempdir().unwrap();
        std::fs::create_dir(v1.path().join("legacy")).unwrap();
        let mut index = CgroupIndex::new(Some(v2.path().to_owned()), Some(v1.path().to_owned()));
        index.rescan();
        let legacy = std::fs::metadata(v1.path().join("legacy")).unwrap().ino();
        assert_eq!(index.resolve(legacy | V1_CGROUP_ID_BIT), Some("/legacy"));
        assert_eq!(index.resolve(legacy), None);
        let v2_root = std::fs::metadata(v2.path()).unwrap().ino();
        assert_eq!(index.resolve(v2_root), Some("/"));
    }
}
