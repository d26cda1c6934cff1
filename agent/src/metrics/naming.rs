//! Naming cgroup ids for a scrape, with one fallback policy for every collector: the index, a
//! lookup by file handle for ids no lifecycle event named, the root by its id, and otherwise
//! `cgroup_id:<id>` (the cgroup tracker's resolver walks cgroupfs for it, debounced, never the
//! scrape); the overflow id is `other`.

use std::{collections::HashMap, rc::Rc};

use kernsight_common::counters::OVERFLOW_CGROUP_ID;

use crate::{
    kernel::cgroupfs::{CgroupIndex, ROOT_CGROUP_ID, V1_CGROUP_ID_BIT},
    metadata::{
        cgroups::Tracker,
        identity::{Resolver, Workload},
    },
};

/// Label value of what could not be attributed because a bound was reached.
pub(super) const OTHER: &str = "other";

/// Names cgroup ids for one scrape: cgroup id → path (looked up by handle for ids no lifecycle
/// event named) → workload, each id once. A workload is shared, not copied, by the series that
/// name it.
pub(crate) struct CgroupNamer<'a> {
    tracker: &'a Tracker,
    index: std::sync::MutexGuard<'a, CgroupIndex>,
    resolver: &'a Resolver,
    names: HashMap<u64, Rc<Workload>>,
}

impl<'a> CgroupNamer<'a> {
    pub(super) fn new(tracker: &'a Tracker, resolver: &'a Resolver) -> Self {
        Self { tracker, index: tracker.index(), resolver, names: HashMap::new() }
    }

    pub(super) fn name(&mut self, cgroup_id: u64) -> Rc<Workload> {
        self.name_looking_up(cgroup_id, true)
    }

    /// As `name`, but an id that no lookup names asks for no walk: for ids taken from sockets,
    /// which outlive their cgroup (a connection still closing after its pod is gone) and would
    /// otherwise make the agent walk after every scrape.
    pub(super) fn name_without_walk(&mut self, cgroup_id: u64) -> Rc<Workload> {
        self.name_looking_up(cgroup_id, false)
    }

    fn name_looking_up(&mut self, cgroup_id: u64, walk: bool) -> Rc<Workload> {
        if cgroup_id == OVERFLOW_CGROUP_ID {
            return Rc::new(Workload { cgroup: OTHER.to_owned(), ..Workload::default() });
        }
        if let Some(workload) = self.names.get(&cgroup_id) {
            return workload.clone();
        }
        let is_root = cgroup_id & !V1_CGROUP_ID_BIT == ROOT_CGROUP_ID;
        if self.index.resolve(cgroup_id).is_none() && !is_root {
            self.tracker.look_up(&mut self.index, cgroup_id, walk);
        }
        let workload = Rc::new(match self.index.resolve(cgroup_id) {
            Some(path) => self.resolver.workload(path),
            None if is_root => self.resolver.workload("/"),
            // Removed before anything named it: the id is all there is.
            None => Workload { cgroup: format!("cgroup_id:{cgroup_id}"), ..Workload::default() },
        });
        self.names.insert(cgroup_id, workload.clone());
        workload
    }
}
