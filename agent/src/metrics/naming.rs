//! Naming cgroup ids for a scrape, with one fallback policy for every collector: the index,
//! at most one walk of cgroupfs per scrape for ids no lifecycle event named, the root by its
//! id, and otherwise `cgroup_id:<id>`; the overflow id is `other`.

use std::collections::HashMap;

use kernsight_common::syscalls::OVERFLOW_CGROUP_ID;

use crate::{
    kernel::cgroupfs::{CgroupIndex, ROOT_CGROUP_ID, V1_CGROUP_ID_BIT},
    metadata::identity::{Resolver, Workload},
};

/// Label value of what could not be attributed because a bound was reached.
pub(super) const OTHER: &str = "other";

/// Names cgroup ids for one scrape: cgroup id → path (walking the hierarchy at most once per
/// scrape, for ids no lifecycle event named) → workload, each id once.
pub(crate) struct CgroupNamer<'a> {
    index: std::sync::MutexGuard<'a, CgroupIndex>,
    resolver: &'a Resolver,
    names: HashMap<u64, Workload>,
    walked: bool,
}

impl<'a> CgroupNamer<'a> {
    pub(super) fn new(index: std::sync::MutexGuard<'a, CgroupIndex>, resolver: &'a Resolver) -> Self {
        Self { index, resolver, names: HashMap::new(), walked: false }
    }

    pub(super) fn name(&mut self, cgroup_id: u64) -> Workload {
        if cgroup_id == OVERFLOW_CGROUP_ID {
            return Workload { cgroup: OTHER.to_owned(), ..Workload::default() };
        }
        if let Some(workload) = self.names.get(&cgroup_id) {
            return workload.clone();
        }
        if self.index.resolve(cgroup_id).is_none() && !self.walked {
            self.index.rescan();
            self.walked = true;
        }
        let workload = match self.index.resolve(cgroup_id) {
            Some(path) => self.resolver.workload(path),
            None if cgroup_id & !V1_CGROUP_ID_BIT == ROOT_CGROUP_ID => self.resolver.workload("/"),
            // Created and removed between two walks: the id is all there is.
            None => Workload { cgroup: format!("cgroup_id:{cgroup_id}"), ..Workload::default() },
        };
        self.names.insert(cgroup_id, workload.clone());
        workload
    }

    /// As `name`, but an id the index does not know is named by its number instead of
    /// triggering a walk: for ids taken from sockets, which outlive their cgroup (a connection
    /// still closing after its pod is gone) and would otherwise make every scrape walk.
    pub(super) fn name_without_walk(&mut self, cgroup_id: u64) -> Workload {
        let known = cgroup_id == OVERFLOW_CGROUP_ID
            || cgroup_id & !V1_CGROUP_ID_BIT == ROOT_CGROUP_ID
            || self.index.resolve(cgroup_id).is_some();
        if known || self.walked {
            return self.name(cgroup_id);
        }
        Workload { cgroup: format!("cgroup_id:{cgroup_id}"), ..Workload::default() }
    }
}
