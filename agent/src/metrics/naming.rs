//! Naming cgroup ids for a scrape, with one fallback policy for every collector: the index, a
//! lookup by file handle for ids no lifecycle event named, the root by its id, and otherwise
//! `cgroup_id:<id>` (the cgroup tracker's resolver walks cgroupfs for it, debounced, never the
//! scrape); the overflow id is `other`.

use std::{cell::RefCell, sync::Arc};

use kernsight_common::counters::OVERFLOW_CGROUP_ID;

use crate::{
    kernel::cgroupfs::{CgroupIndex, ROOT_CGROUP_ID, V1_CGROUP_ID_BIT},
    metadata::{
        cgroups::Tracker,
        identity::{Resolver, Workload},
    },
    seeded_hash::SeededMap,
};

/// Label value of what could not be attributed because a bound was reached.
pub(super) const OTHER: &str = "other";

/// A workload named in this scrape: the namer gives equal workloads one id, so that series
/// summed by id are summed by workload while their maps compare a number. Comparing workloads
/// themselves (seven strings, cgroup paths that share long prefixes) on every insert took a
/// quarter of the agent's CPU in a scrape of 1,000 containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct WorkloadId(usize);

/// Names cgroup ids for one scrape: cgroup id → path (looked up by handle for ids no lifecycle
/// event named) → workload, each id once. A workload is shared, not copied, by the series that
/// name it.
///
/// The namer holds the cgroup index from its making (before the collector takes its family's
/// lock: the maintenance pass takes them in that order) until `named_all`: while it is held, no
/// cgroup the collector read can be forgotten before it is named.
pub(crate) struct CgroupNamer<'a> {
    tracker: &'a Tracker,
    /// `None` once `named_all` let it go.
    index: Option<std::sync::MutexGuard<'a, CgroupIndex>>,
    resolver: &'a Resolver,
    ids: SeededMap<u64, WorkloadId>,
    interned: SeededMap<Arc<Workload>, WorkloadId>,
    /// By id.
    workloads: Vec<Arc<Workload>>,
    /// Each workload's `label_order_key`, by id.
    order_keys: Vec<Box<[u8]>>,
    /// Each workload's position in label order, by id: sorted once for all the series a
    /// collector hands out (comparing workloads is most of the sorting), again only when more
    /// workloads have been named since.
    rank: RefCell<Vec<usize>>,
}

impl<'a> CgroupNamer<'a> {
    pub(super) fn new(tracker: &'a Tracker, resolver: &'a Resolver) -> Self {
        Self {
            tracker,
            index: Some(tracker.index()),
            resolver,
            ids: SeededMap::default(),
            interned: SeededMap::default(),
            workloads: Vec::new(),
            order_keys: Vec::new(),
            rank: RefCell::new(Vec::new()),
        }
    }

    pub(super) fn name(&mut self, cgroup_id: u64) -> Arc<Workload> {
        let id = self.id(cgroup_id);
        self.workload(id).clone()
    }

    /// As `name`, but an id that no lookup names asks for no walk: for ids taken from sockets,
    /// which outlive their cgroup (a connection still closing after its pod is gone) and would
    /// otherwise make the agent walk after every scrape.
    pub(super) fn name_without_walk(&mut self, cgroup_id: u64) -> Arc<Workload> {
        let id = self.id_looking_up(cgroup_id, false);
        self.workload(id).clone()
    }

    /// The id of the workload `cgroup_id` belongs to, for series that `in_label_order` hands out.
    pub(super) fn id(&mut self, cgroup_id: u64) -> WorkloadId {
        self.id_looking_up(cgroup_id, true)
    }

    /// Lets the cgroup index go once every cgroup the collector read is named: what is left is
    /// encoding, and collectors encoded at once (`exposition`) would otherwise name their
    /// cgroups one after the other's whole encode. A cgroup named after this takes the index
    /// again for its own lookup, so the caller must then hold no family's lock.
    pub(super) fn named_all(&mut self) {
        self.index = None;
    }

    fn workload(&self, id: WorkloadId) -> &Arc<Workload> {
        &self.workloads[id.0]
    }

    /// Series keyed by workload id and the rest of their labels, sorted as their labels are:
    /// by workload, then by the rest. The workloads are compared once each, not once per series.
    pub(super) fn in_label_order<K: Ord, V>(
        &self,
        series: impl IntoIterator<Item = ((WorkloadId, K), V)>,
    ) -> Vec<((Arc<Workload>, K), V)> {
        let mut rank = self.rank.borrow_mut();
        if rank.len() != self.workloads.len() {
            let mut by_label: Vec<usize> = (0..self.workloads.len()).collect();
            by_label.sort_unstable_by(|&a, &b| self.order_keys[a].cmp(&self.order_keys[b]));
            rank.resize(by_label.len(), 0);
            for (position, &id) in by_label.iter().enumerate() {
                rank[id] = position;
            }
        }
        let mut series: Vec<_> = series.into_iter().collect();
        series.sort_unstable_by(|((a, ka), _), ((b, kb), _)| {
            rank[a.0].cmp(&rank[b.0]).then_with(|| ka.cmp(kb))
        });
        series.into_iter().map(|((id, key), value)| ((self.workload(id).clone(), key), value)).collect()
    }

    fn id_looking_up(&mut self, cgroup_id: u64, walk: bool) -> WorkloadId {
        if cgroup_id == OVERFLOW_CGROUP_ID {
            return self.intern(Arc::new(Workload { cgroup: OTHER.to_owned(), ..Workload::default() }));
        }
        if let Some(&id) = self.ids.get(&cgroup_id) {
            return id;
        }
        let is_root = cgroup_id & !V1_CGROUP_ID_BIT == ROOT_CGROUP_ID;
        let mut taken_again = None;
        let index = match self.index.as_mut() {
            Some(held) => held,
            None => taken_again.insert(self.tracker.index()),
        };
        if index.resolve(cgroup_id).is_none() && !is_root {
            self.tracker.look_up(index, cgroup_id, walk);
        }
        // Named once for all the collectors of a scrape (`Resolver::shared_workload`).
        let workload = match index.resolve(cgroup_id) {
            Some(path) => self.resolver.shared_workload(path),
            None if is_root => self.resolver.shared_workload("/"),
            // Removed before anything named it: the id is all there is.
            None => Arc::new(Workload { cgroup: format!("cgroup_id:{cgroup_id}"), ..Workload::default() }),
        };
        let id = self.intern(workload);
        self.ids.insert(cgroup_id, id);
        id
    }

    /// One id, and one shared copy, per distinct workload (several cgroups can name one: a
    /// container's v1 and v2 cgroups, or a container's and its restart's).
    fn intern(&mut self, workload: Arc<Workload>) -> WorkloadId {
        if let Some(&id) = self.interned.get(&workload) {
            return id;
        }
        let id = WorkloadId(self.workloads.len());
        self.order_keys.push(label_order_key(&workload));
        self.workloads.push(workload.clone());
        self.interned.insert(workload, id);
        id
    }
}

/// A workload's labels as one string that sorts as the workload does: each value followed by a
/// NUL, which sorts before any byte a value holds (label values hold none). One comparison of
/// these instead of one per label: comparing workloads label by label was 5 % of the agent's
/// CPU in scrapes of 1,000 containers, even sorted once per collector.
fn label_order_key(workload: &Workload) -> Box<[u8]> {
    let Workload { namespace, pod, container, workload_kind, workload, container_id, cgroup, pod_labels } =
        workload;
    let values = [namespace, pod, container, workload_kind, workload, container_id, cgroup];
    let values = || values.into_iter().chain(pod_labels);
    let mut key = Vec::with_capacity(values().map(|v| v.len() + 1).sum());
    for value in values() {
        key.extend_from_slice(value.as_bytes());
        key.push(0);
    }
    key.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use std::{os::unix::fs::MetadataExt, time::Duration};

    use super::*;
    use crate::{kernel::cgroupfs::Hierarchies, metadata::cgroups::Resolution};

    #[test]
    fn workloads_sort_by_their_order_keys_as_by_their_labels() {
        let workload = |namespace: &str, pod: &str, cgroup: &str, label: &str| Workload {
            namespace: namespace.into(),
            pod: pod.into(),
            cgroup: cgroup.into(),
            pod_labels: vec![label.into()],
            ..Workload::default()
        };
        // Prefixes of one another, empty values, and a later label deciding.
        let mut workloads = vec![
            workload("shop", "web-1", "", "b"),
            workload("shop", "web", "", "z"),
            workload("shop", "web", "", "a"),
            workload("sho", "zz", "", ""),
            workload("", "", "/kubepods/pod1/b", ""),
            workload("", "", "/kubepods/pod1", ""),
            workload("", "", "/kubepods/pod10", ""),
            workload("shop", "", "", ""),
        ];
        let mut by_key = workloads.clone();
        by_key.sort_by_key(label_order_key);
        workloads.sort();
        assert_eq!(by_key, workloads);
    }

    /// A plain directory tree stands in for cgroupfs (ids are inode numbers in both): a tracker
    /// of it and the ids of its directories `names`.
    fn tracker_of<const N: usize>(names: [&str; N]) -> (tempfile::TempDir, Tracker, [u64; N]) {
        let root = tempfile::tempdir().unwrap();
        let ids = names.map(|name| {
            std::fs::create_dir(root.path().join(name)).unwrap();
            std::fs::metadata(root.path().join(name)).unwrap().ino()
        });
        let hierarchies =
            Hierarchies { unified: Some(root.path().to_owned()), v1: None, v1_hierarchy_id: None };
        let tracker = Tracker::new(
            hierarchies,
            Resolution { walk_interval: Duration::from_secs(60), by_handle: false },
        );
        (root, tracker, ids)
    }

    #[test]
    fn series_come_out_in_label_order_and_one_workload_has_one_id() {
        let (_root, tracker, [b, a, c, zero]) = tracker_of(["b", "a", "c", "0"]);
        let resolver = Resolver::new(false, Vec::new(), 16);
        let mut namer = CgroupNamer::new(&tracker, &resolver);

        // Named out of order, each workload before the next; the root by its v1 and v2 ids is
        // one workload, as is the overflow id met twice.
        let ids = [namer.id(c), namer.id(b), namer.id(a)];
        assert_eq!(namer.id(ROOT_CGROUP_ID), namer.id(ROOT_CGROUP_ID | V1_CGROUP_ID_BIT));
        assert_eq!(namer.id(OVERFLOW_CGROUP_ID), namer.id(OVERFLOW_CGROUP_ID));
        assert_eq!(namer.id(b), ids[1], "a cgroup keeps its id");
        let series = [((ids[1], "x"), 1), ((ids[2], "z"), 2), ((ids[0], "w"), 3), ((ids[2], "y"), 4)];
        let sorted: Vec<_> = namer
            .in_label_order(series)
            .into_iter()
            .map(|((w, key), n)| (w.cgroup.clone(), key, n))
            .collect();
        let expected = [("/a", "y", 4), ("/a", "z", 2), ("/b", "x", 1), ("/c", "w", 3)];
        assert_eq!(sorted, expected.map(|(cgroup, key, n)| (cgroup.to_owned(), key, n)));

        // A workload named after a sort takes its place in the next one.
        let early = namer.id(zero);
        let cgroups: Vec<String> = namer
            .in_label_order([((ids[0], ()), ()), ((early, ()), ()), ((ids[2], ()), ())])
            .into_iter()
            .map(|((w, ()), ())| w.cgroup.clone())
            .collect();
        assert_eq!(cgroups, ["/0", "/a", "/c"]);

        // The next collector's namer is handed the same names, not copies of them.
        let first = namer.name(a);
        drop(namer);
        let mut next = CgroupNamer::new(&tracker, &resolver);
        assert!(Arc::ptr_eq(&first, &next.name(a)));
        assert_eq!(next.id(ROOT_CGROUP_ID), next.id(ROOT_CGROUP_ID | V1_CGROUP_ID_BIT));
    }

    #[test]
    fn the_index_is_held_until_all_is_named_and_taken_again_for_a_late_name() {
        let (_root, tracker, [a, b]) = tracker_of(["a", "b"]);
        let resolver = Resolver::new(false, Vec::new(), 16);
        let mut namer = CgroupNamer::new(&tracker, &resolver);
        assert_eq!(namer.name(a).cgroup, "/a");
        // Another collector's namer, on another thread, waits for this one's `named_all`.
        std::thread::scope(|scope| {
            let (took, taken) = std::sync::mpsc::channel();
            let tracker = &tracker;
            scope.spawn(move || {
                let _index = tracker.index();
                took.send(()).unwrap();
            });
            assert!(taken.recv_timeout(Duration::from_millis(300)).is_err(), "held while naming");
            namer.named_all();
            assert!(taken.recv_timeout(Duration::from_secs(10)).is_ok(), "let go after");
        });
        assert_eq!(namer.name(b).cgroup, "/b", "named later, the index taken again for it");
    }
}
