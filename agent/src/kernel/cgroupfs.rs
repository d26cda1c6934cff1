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
    fmt::Write as _,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

pub use kernsight_common::syscalls::{ROOT_CGROUP_ID, V1_CGROUP_ID_BIT};
use tracing::debug;

use super::mountinfo::Mount;
use crate::seeded_hash::SeededMap;

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
    /// That v1 hierarchy's id (the first column of `/proc/self/cgroup`), as lifecycle events
    /// carry it.
    pub v1_hierarchy_id: Option<u32>,
}

impl Hierarchies {
    pub fn new(mounts: &[Mount], proc_self_cgroup: &str) -> Self {
        let v1 = v1_mount(mounts);
        let v1_hierarchy_id =
            v1.as_ref().and_then(|(controller, _)| hierarchy_id(proc_self_cgroup, controller));
        Self { unified: unified_mount(mounts), v1, v1_hierarchy_id }
    }

    /// From this process's mount table and cgroups; none when they cannot be read.
    pub fn detect() -> Self {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        super::mountinfo::read().map(|mounts| Self::new(&mounts, &cgroups)).unwrap_or_default()
    }

    pub fn index(&self) -> CgroupIndex {
        CgroupIndex::new(self.unified.clone(), self.v1.as_ref().map(|(_, mount)| mount.clone()))
    }

    /// The tag of ids of a hierarchy, or `None` for hierarchies kernsight does not attribute by.
    pub fn tag_of(&self, hierarchy_id: u32) -> Option<u64> {
        if hierarchy_id == 0 && self.unified.is_some() {
            Some(0)
        } else if Some(hierarchy_id) == self.v1_hierarchy_id {
            Some(V1_CGROUP_ID_BIT)
        } else {
            None
        }
    }
}

/// The hierarchy id of a v1 controller in `/proc/<pid>/cgroup` text (`4:memory:/...`).
fn hierarchy_id(proc_cgroup: &str, controller: &str) -> Option<u32> {
    proc_cgroup.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let id = fields.next()?.parse().ok()?;
        fields.next()?.split(',').any(|c| c == controller).then_some(id)
    })
}

/// cgroup id → path relative to the hierarchy root (`/` for the root, `/a/b` below it), over
/// the unified hierarchy and, where tasks are attributed by it, one v1 hierarchy. Built by one
/// walk, then kept current by lifecycle events; a removed cgroup keeps its path until
/// `expire` (its last counts are still exported under that name).
#[derive(Debug)]
pub struct CgroupIndex {
    /// (mount point, bits or-ed into the ids found there)
    hierarchies: Vec<(PathBuf, u64)>,
    paths: SeededMap<u64, String>,
    /// Ids that exist now.
    alive: HashSet<u64>,
    /// Ids removed, and when.
    removed: HashMap<u64, Removal>,
    walks: u64,
    walk_complete: bool,
    /// Changes to the living cgroups' paths so far (`changes`).
    changes: u64,
    /// When the cgroups created while the agent followed the kernel's events appeared, by path,
    /// for `APPEARED_KEPT` (`appeared`).
    appeared: HashMap<String, Instant>,
    /// When a full `appeared` was last swept of what it no longer needs keep.
    appeared_swept: Option<Instant>,
    /// Removals forgotten before their time because `MAX_REMOVED_KEPT` were kept.
    removals_forgotten_early: u64,
}

/// How long the time a cgroup appeared is kept: what is written once just after a cgroup
/// appears (its limits) is read again until the cgroup is 30 s old at most (the resource
/// collector's `LIMITS_TTL`); past that its age no longer matters.
const APPEARED_KEPT: Duration = Duration::from_secs(60);
/// Most appearances kept: cgroups created faster than this in `APPEARED_KEPT` (a tenant that
/// may create cgroups) are read as if met at their first read.
const MAX_APPEARED: usize = 16_384;
/// When a cgroup was removed, and whether the kernel reported it (`CgroupIndex::removed`): then
/// it is final, as an id is never reused. A walk made without holding the index, or a lookup by
/// handle, can have met the cgroup just before its removal; what they report must not bring it
/// back to life, where nothing would free its slots again. A removal only inferred from a walk
/// is undone by the next walk that finds the cgroup.
#[derive(Debug, Clone, Copy)]
struct Removal {
    at: Instant,
    reported: bool,
}

/// Most removed cgroups kept (with their paths, for their last counts): past it the oldest
/// removals are forgotten early, and such a cgroup's last counts show as `cgroup_id:<id>`. A
/// workload with a cgroup subtree of its own can create and remove cgroups by the ten thousand a
/// second at no cost to itself: kept for `syscalls.forget_after_seconds` (300 s) each, they
/// were the agent's memory to exhaust. At this bound they are some 15 MiB.
pub const MAX_REMOVED_KEPT: usize = 65_536;
/// A full record is swept at most this often: a tenant creating cgroups as fast as the kernel
/// lets it must not make every creation event a walk of 16,384 entries.
const APPEARED_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

impl CgroupIndex {
    pub fn new(unified: Option<PathBuf>, v1: Option<PathBuf>) -> Self {
        let hierarchies =
            unified.map(|root| (root, 0)).into_iter().chain(v1.map(|root| (root, V1_CGROUP_ID_BIT)));
        Self {
            hierarchies: hierarchies.collect(),
            paths: SeededMap::default(),
            alive: HashSet::new(),
            removed: HashMap::new(),
            walks: 0,
            walk_complete: false,
            changes: 0,
            appeared: HashMap::new(),
            appeared_swept: None,
            removals_forgotten_early: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Full walks of the hierarchies so far.
    pub fn walks(&self) -> u64 {
        self.walks
    }

    /// The path of a (tagged) cgroup id.
    pub fn resolve(&self, id: u64) -> Option<&str> {
        self.paths.get(&id).map(String::as_str)
    }

    /// How many times the living cgroups or their paths have changed: what a reader derived from
    /// `alive_paths` holds while this stays the same.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The paths of the cgroups that exist now (each hierarchy's, so a path can come twice).
    pub fn alive_paths(&self) -> impl Iterator<Item = &str> {
        self.alive().map(|(_, path)| path)
    }

    /// The cgroups that exist now: (tagged id, path), each hierarchy's (so a path can come twice).
    pub fn alive(&self) -> impl Iterator<Item = (u64, &str)> {
        self.alive.iter().filter_map(|&id| Some((id, self.paths.get(&id)?.as_str())))
    }

    pub fn is_alive(&self, id: u64) -> bool {
        self.alive.contains(&id)
    }

    /// How long ago the cgroup was removed; `None` while it exists. An id the index never saw
    /// (created and removed between walks) counts as removed now.
    pub fn gone_for(&mut self, id: u64, now: Instant) -> Option<Duration> {
        if self.alive.contains(&id) {
            return None;
        }
        let removed_at = self.removed.entry(id).or_insert(Removal { at: now, reported: false }).at;
        self.bound_removed();
        Some(now.saturating_duration_since(removed_at))
    }

    fn was_reported_removed(&self, id: u64) -> bool {
        self.removed.get(&id).is_some_and(|r| r.reported)
    }

    /// Removals forgotten before `syscalls.forget_after_seconds` because `MAX_REMOVED_KEPT`
    /// were kept.
    pub fn removals_forgotten_early(&self) -> u64 {
        self.removals_forgotten_early
    }

    /// Forgets the oldest removals past `MAX_REMOVED_KEPT`, down to three quarters of it: a sort
    /// of the record every quarter of its size in removals, not a scan at each.
    fn bound_removed(&mut self) {
        if self.removed.len() <= MAX_REMOVED_KEPT {
            return;
        }
        let mut by_age: Vec<(Instant, u64)> = self.removed.iter().map(|(id, r)| (r.at, *id)).collect();
        by_age.sort_unstable();
        let excess = self.removed.len() - MAX_REMOVED_KEPT / 4 * 3;
        for (_, id) in by_age.into_iter().take(excess) {
            self.removed.remove(&id);
            self.paths.remove(&id);
        }
        self.removals_forgotten_early += excess as u64;
    }

    /// When the cgroup at `path` appeared, if it was created in the last `APPEARED_KEPT` while
    /// the agent followed events.
    pub fn appeared(&self, path: &str) -> Option<Instant> {
        self.appeared.get(path).copied()
    }

    /// A cgroup was created (with its path as a label), now.
    pub fn created(&mut self, id: u64, path: String) {
        let now = Instant::now();
        if self.appeared.len() == MAX_APPEARED
            && self
                .appeared_swept
                .is_none_or(|swept| now.saturating_duration_since(swept) >= APPEARED_SWEEP_INTERVAL)
        {
            self.appeared.retain(|_, at| now.saturating_duration_since(*at) < APPEARED_KEPT);
            self.appeared_swept = Some(now);
        }
        if self.appeared.len() < MAX_APPEARED || self.appeared.contains_key(&path) {
            // The latest creation at a path: a cgroup removed and made again at the same path is
            // as young as the new one (and a path's second hierarchy a moment younger).
            self.appeared.insert(path.clone(), now);
        }
        self.changes += 1;
        self.paths.insert(id, path);
        self.alive.insert(id);
        self.removed.remove(&id);
    }

    /// The kernel reported the cgroup removed, now; final, whether the index knew it or not (a
    /// cgroup whose path the kernel cut is known only once looked up).
    pub fn removed(&mut self, id: u64, now: Instant) {
        if self.alive.remove(&id) {
            self.changes += 1;
        }
        self.removed.entry(id).or_insert(Removal { at: now, reported: false }).reported = true;
        self.bound_removed();
    }

    /// Forgets the paths of cgroups removed more than `grace` ago; returns how many.
    pub fn expire(&mut self, grace: Duration, now: Instant) -> usize {
        let expired: Vec<u64> = self
            .removed
            .iter()
            .filter(|(_, r)| now.duration_since(r.at) >= grace)
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            self.removed.remove(id);
            self.paths.remove(id);
        }
        self.appeared.retain(|_, at| now.saturating_duration_since(*at) < APPEARED_KEPT);
        expired.len()
    }

    /// Gives back the room of forgotten entries (hash maps keep their capacity otherwise).
    pub fn shrink(&mut self) {
        self.paths.shrink_to_fit();
        self.removed.shrink_to_fit();
        self.appeared.shrink_to_fit();
    }

    /// The hierarchies walked: (mount point, bits or-ed into the ids found there).
    pub fn roots(&self) -> &[(PathBuf, u64)] {
        &self.hierarchies
    }

    /// Names a living cgroup found without a walk (by its handle). One reported removed since
    /// the lookup began only gets its name, for its last counts.
    pub fn learn(&mut self, id: u64, path: String) {
        self.changes += 1;
        self.paths.insert(id, path);
        if !self.was_reported_removed(id) && self.alive.insert(id) {
            self.removed.remove(&id);
        }
    }

    /// Walks every hierarchy: the start-up picture, and the fallback when events were lost.
    pub fn rescan(&mut self) {
        let walk = Walk::of(&self.hierarchies);
        self.apply(walk);
    }

    /// Whether the last walk read the root of every hierarchy (else its picture is partial, and
    /// no cgroup may be judged gone for being absent from it).
    pub fn walk_was_complete(&self) -> bool {
        self.walk_complete
    }

    /// Takes the picture of a walk made without holding the index (a walk of thousands of
    /// cgroups takes tens of milliseconds; readers of the index do not wait for it).
    pub fn apply(&mut self, walk: Walk) {
        self.changes += 1;
        // Met by the walk but reported removed since: gone (see `Removal`).
        let found: HashSet<u64> =
            walk.found.keys().filter(|id| !self.was_reported_removed(**id)).copied().collect();
        for gone in self.alive.difference(&found) {
            // Removed after the walk started, or before it: it was gone by the time it ended.
            self.removed.entry(*gone).or_insert(Removal { at: walk.started, reported: false });
        }
        self.alive = found;
        for id in &self.alive {
            self.removed.remove(id);
        }
        self.paths.extend(walk.found);
        self.bound_removed();
        self.walk_complete = walk.complete;
        self.walks += 1;
        debug!(cgroups = self.paths.len(), elapsed = ?walk.started.elapsed(), "walked the cgroup hierarchies");
    }
}

/// One walk of the hierarchies: every cgroup found, by tagged id.
#[derive(Debug)]
pub struct Walk {
    found: HashMap<u64, String>,
    started: Instant,
    /// Every hierarchy's root was read.
    complete: bool,
}

impl Walk {
    /// Walks `hierarchies` (mount point, tag). Names that are not UTF-8 are escaped, never a
    /// reason to walk again (see [`path_label`]).
    pub fn of(hierarchies: &[(PathBuf, u64)]) -> Self {
        let started = Instant::now();
        let mut found = HashMap::new();
        let mut complete = true;
        for (root, tag) in hierarchies {
            let mut stack = vec![root.clone()];
            while let Some(dir) = stack.pop() {
                let Ok(meta) = std::fs::metadata(&dir) else {
                    complete &= dir != *root;
                    continue;
                };
                let id = meta.ino() | tag;
                let relative = dir.strip_prefix(root).unwrap_or(Path::new(""));
                let mut path = b"/".to_vec();
                path.extend_from_slice(relative.as_os_str().as_bytes());
                found.insert(id, path_label(&path, id));
                let Ok(entries) = std::fs::read_dir(&dir) else { continue };
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(entry.path());
                    }
                }
            }
        }
        Self { found, started, complete }
    }
}

/// Longest cgroup label kept, in bytes: tenants choose cgroup names, and a path may be 4 KiB of
/// escaped bytes. Real runtimes' paths are a few hundred bytes.
pub const MAX_PATH_LABEL: usize = 512;

/// A cgroup path as a label: UTF-8 kept, anything else (bytes that are not UTF-8, control
/// characters) escaped as `\xNN`; longer than [`MAX_PATH_LABEL`], cut on a character boundary
/// and ended with `...#<id>` so that two long names stay two labels. The same bytes always give
/// the same label, wherever they came from (walk, lifecycle event, handle).
pub fn path_label(path: &[u8], id: u64) -> String {
    let mut label = String::with_capacity(path.len().min(MAX_PATH_LABEL));
    for chunk in path.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                // `\u{..}` would be needed past 0xff: control characters are below.
                let _ = write!(label, "\\x{:02x}", u32::from(c));
            } else {
                label.push(c);
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(label, "\\x{byte:02x}");
        }
        if label.len() > MAX_PATH_LABEL {
            break;
        }
    }
    if label.len() > MAX_PATH_LABEL {
        let suffix = format!("...#{id}");
        let mut cut = MAX_PATH_LABEL - suffix.len();
        while !label.is_char_boundary(cut) {
            cut -= 1;
        }
        label.truncate(cut);
        label.push_str(&suffix);
    }
    label
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
        let hierarchies = Hierarchies::new(&hybrid, "9:name=systemd:/\n4:memory:/a\n0::/\n");
        assert_eq!(hierarchies.v1_hierarchy_id, Some(4));
        assert_eq!(hierarchies.tag_of(4), Some(V1_CGROUP_ID_BIT));
        assert_eq!(hierarchies.tag_of(0), Some(0));
        assert_eq!(hierarchies.tag_of(9), None);
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

        // A removed cgroup keeps its path (for its last counts) until it expires.
        std::fs::remove_dir(dir.path().join("late")).unwrap();
        assert!(index.is_alive(late_ino), "until the next walk");
        index.rescan();
        assert!(!index.is_alive(late_ino));
        assert_eq!(index.resolve(late_ino), Some("/late"));
        let now = Instant::now();
        assert_eq!(index.expire(Duration::from_secs(60), now), 0);
        assert_eq!(index.expire(Duration::ZERO, now + Duration::from_secs(1)), 1);
        assert_eq!(index.len(), 3);
        assert!(index.is_alive(pod_ino));

        // Events keep it current without walks, and each change of the living set counts.
        let changes = index.changes();
        index.created(4242, "/from-event".into());
        assert_eq!(index.resolve(4242), Some("/from-event"));
        assert_eq!(index.changes(), changes + 1);
        index.removed(4242, now);
        assert!(!index.is_alive(4242));
        index.removed(4242, now);
        index.learn(4343, "/by-handle".into());
        assert_eq!(index.changes(), changes + 3, "a second removal changes nothing");
        assert_eq!(index.expire(Duration::from_secs(5), now + Duration::from_secs(6)), 1);
        assert_eq!(index.resolve(4242), None);
        assert_eq!(index.walks(), 3);
    }

    #[test]
    fn a_removal_the_kernel_reported_is_final_whatever_a_walk_or_lookup_met_before_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pod1")).unwrap();
        let pod = std::fs::metadata(dir.path().join("pod1")).unwrap().ino();
        let mut index = CgroupIndex::new(Some(dir.path().to_owned()), None);
        index.rescan();
        assert!(index.is_alive(pod));
        // A walk meets the cgroup, its removal is reported, then the walk's picture is applied.
        let walk = Walk::of(index.roots());
        let now = Instant::now();
        std::fs::remove_dir(dir.path().join("pod1")).unwrap();
        index.removed(pod, now);
        index.apply(walk);
        assert!(!index.is_alive(pod), "a walk begun before the removal brought it back");
        assert_eq!(index.gone_for(pod, now + Duration::from_secs(3)), Some(Duration::from_secs(3)));
        assert_eq!(index.resolve(pod), Some("/pod1"), "named for its last counts");
        // A cgroup the index never knew (the kernel cut its path): found by handle just before
        // its removal was reported, learned just after.
        index.removed(7_000_001, now);
        index.learn(7_000_001, "/kubepods/pod-long".into());
        assert!(!index.is_alive(7_000_001));
        assert_eq!(index.resolve(7_000_001), Some("/kubepods/pod-long"));
        // Both are forgotten with their removal, so the record stays bounded.
        assert_eq!(index.expire(Duration::from_secs(60), now + Duration::from_secs(61)), 2);
        assert!(index.removed.is_empty() && index.resolve(7_000_001).is_none());
        // A cgroup a partial walk took for removed (the kernel never said so) comes back with the
        // next walk that finds it.
        let root = std::fs::metadata(dir.path()).unwrap().ino();
        index.alive.remove(&root);
        index.removed.insert(root, Removal { at: now, reported: false });
        index.rescan();
        assert!(index.is_alive(root));
    }

    #[test]
    fn removals_kept_are_bounded_whatever_the_rate_of_churn() {
        let mut index = CgroupIndex::new(None, None);
        index.created(u64::MAX - 1, "/kubepods/live".into());
        let now = Instant::now();
        // A workload creating and removing cgroups of its own, all within the grace period.
        let churn = MAX_REMOVED_KEPT as u64 + 10_000;
        for id in 1..=churn {
            index.created(id, format!("/tenant/churn/c{id}"));
            index.removed(id, now + Duration::from_micros(id));
        }
        assert!(index.removed.len() <= MAX_REMOVED_KEPT, "{}", index.removed.len());
        assert_eq!(index.len(), index.removed.len() + 1, "paths of the kept removals and the living one");
        assert_eq!(index.removals_forgotten_early() + index.removed.len() as u64, churn, "each counted");
        // The latest removals are kept, with their paths; the oldest went.
        assert_eq!(index.resolve(churn), Some(format!("/tenant/churn/c{churn}").as_str()));
        assert_eq!(index.resolve(1), None);
        assert!(index.is_alive(u64::MAX - 1) && index.resolve(u64::MAX - 1) == Some("/kubepods/live"));
        // A removal forgotten early counts as gone from the next look at it: its slot is freed a
        // grace period later than it would have been, never kept.
        let later = now + Duration::from_secs(1);
        assert_eq!(index.gone_for(1, later), Some(Duration::ZERO));
        assert_eq!(index.gone_for(churn, later), Some(later - (now + Duration::from_micros(churn))));
    }

    #[test]
    fn when_a_cgroup_appeared_is_kept_for_events_for_a_while_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("walked")).unwrap();
        let mut index = CgroupIndex::new(Some(dir.path().to_owned()), None);
        index.rescan();
        assert_eq!(index.appeared("/walked"), None, "found by a walk: when is not known");
        let before = Instant::now();
        index.created(1, "/kubepods/pod1/c1".into());
        let appeared = index.appeared("/kubepods/pod1/c1").expect("created by an event");
        assert!(appeared >= before && appeared <= Instant::now());
        // The same path made again (or in a second hierarchy): as young as the latest.
        std::thread::sleep(Duration::from_millis(5));
        index.created(1 | V1_CGROUP_ID_BIT, "/kubepods/pod1/c1".into());
        let again = index.appeared("/kubepods/pod1/c1").expect("made again");
        assert!(again > appeared);
        let appeared = again;
        assert_eq!(index.expire(Duration::from_secs(600), appeared + APPEARED_KEPT / 2), 0);
        assert_eq!(index.appeared("/kubepods/pod1/c1"), Some(appeared));
        index.expire(Duration::from_secs(600), appeared + APPEARED_KEPT);
        assert_eq!(index.appeared("/kubepods/pod1/c1"), None, "past the age that matters");
        // A tenant creating cgroups without end: the record stops growing at its bound.
        for id in 0..MAX_APPEARED as u64 + 100 {
            index.created(100 + id, format!("/tenant/c{id}"));
        }
        assert_eq!(index.appeared.len(), MAX_APPEARED);
        assert_eq!(index.appeared(&format!("/tenant/c{}", MAX_APPEARED + 50)), None);
        // Swept once while full, not at each of the 100 creations past the bound.
        let swept = index.appeared_swept.expect("swept when full");
        index.created(1_000_000, "/tenant/one-more".into());
        assert_eq!(index.appeared_swept, Some(swept));
    }
}

#[cfg(test)]
mod label_tests {
    use super::*;

    #[test]
    fn labels_escape_what_is_not_printable_utf8() {
        assert_eq!(path_label(b"/kubepods/pod1", 1), "/kubepods/pod1");
        assert_eq!(path_label("/caf\u{e9}".as_bytes(), 1), "/caf\u{e9}");
        assert_eq!(path_label(b"/a\xffb\xc3", 1), "/a\\xffb\\xc3");
        assert_eq!(path_label(b"/a\x1b[31mred\n", 1), "/a\\x1b[31mred\\x0a");
        // systemd's own escapes are text and stay as they are.
        assert_eq!(
            path_label(b"/system.slice/serial\\x2dgetty.slice", 1),
            "/system.slice/serial\\x2dgetty.slice"
        );
    }

    #[test]
    fn long_labels_are_bounded_and_stay_distinct() {
        let long = [b"/".as_slice(), &[0xffu8; 4000]].concat();
        let (a, b) = (path_label(&long, 7), path_label(&long, 8));
        assert!(a.len() <= MAX_PATH_LABEL && b.len() <= MAX_PATH_LABEL, "{} {}", a.len(), b.len());
        assert!(a.ends_with("...#7") && b.ends_with("...#8"));
        assert_ne!(a, b);
        let wide = "/\u{e9}".repeat(400);
        let cut = path_label(wide.as_bytes(), 9);
        assert!(cut.len() <= MAX_PATH_LABEL && cut.ends_with("...#9"), "{cut}");
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_give_a_bounded_label(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2000), id in proptest::num::u64::ANY) {
            let label = path_label(&bytes, id);
            proptest::prop_assert!(label.len() <= MAX_PATH_LABEL);
            proptest::prop_assert!(!label.chars().any(char::is_control));
            proptest::prop_assert_eq!(label.clone(), path_label(&bytes, id));
        }
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
