//! cgroup v2 (unified) hierarchy: where it is mounted, and cgroup id → path.
//!
//! On cgroup v2 a cgroup's id (what `bpf_get_current_cgroup_id()` returns) is the inode number of
//! its directory, so an index is built by walking the hierarchy and refreshed when an unknown id
//! shows up. Hybrid hosts mount the unified hierarchy at `/sys/fs/cgroup/unified`, pure v2 hosts
//! at `/sys/fs/cgroup`; both are found in the mount table.

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::Instant,
};

use tracing::debug;

use super::mountinfo::Mount;

/// The id of the root cgroup of the unified hierarchy.
pub const ROOT_CGROUP_ID: u64 = 1;

/// Mount point of the unified (v2) hierarchy, if the host has one.
pub fn unified_mount(mounts: &[Mount]) -> Option<PathBuf> {
    mounts
        .iter()
        .find(|m| m.fs_type == "cgroup2" && m.root == "/")
        .or_else(|| mounts.iter().find(|m| m.fs_type == "cgroup2"))
        .map(|m| m.mount_point.clone())
}

/// cgroup id → path relative to the hierarchy root (`/` for the root, `/a/b` below it).
#[derive(Debug)]
pub struct CgroupIndex {
    root: PathBuf,
    paths: HashMap<u64, String>,
    /// Ids the latest walk found.
    alive: HashSet<u64>,
}

impl CgroupIndex {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            paths: HashMap::new(),
            alive: HashSet::new(),
        }
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
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let relative = dir.strip_prefix(&self.root).unwrap_or(Path::new(""));
            self.paths
                .insert(meta.ino(), format!("/{}", relative.display()));
            self.alive.insert(meta.ino());
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
        debug!(cgroups = self.paths.len(), elapsed = ?started.elapsed(), "walked the cgroup v2 hierarchy");
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
        assert_eq!(
            unified_mount(&hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = mountinfo::parse("30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        assert_eq!(unified_mount(&pure), Some(PathBuf::from("/sys/fs/cgroup")));
        let v1_only =
            mountinfo::parse("35 31 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n");
        assert_eq!(unified_mount(&v1_only), None);
    }

    #[test]
    fn indexes_a_directory_tree_by_inode() {
        // A plain directory tree stands in for cgroupfs: ids are inode numbers in both.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("kubepods/pod1")).unwrap();
        let mut index = CgroupIndex::new(dir.path().to_owned());
        index.rescan();
        let pod_ino = std::fs::metadata(dir.path().join("kubepods/pod1"))
            .unwrap()
            .ino();
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
