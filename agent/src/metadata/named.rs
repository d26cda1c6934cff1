//! Workloads named a moment ago, shared by the collectors of one scrape. Each collector names
//! the cgroups of its series, and at 1,000 containers six of them named the same 3,000 paths
//! one after the other: parsing each path and copying each workload's eight strings was 7 % of
//! the agent's CPU in back-to-back scrapes.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::identity::Workload;
use crate::seeded_hash::SeededMap;

/// How long a name serves: long enough for every collector of a scrape, short enough that the
/// identities' idle timer (`Resolver::prune`, minutes) still sees each workload in use.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// Names by cgroup path, valid while the identities they were made from have not changed
/// (`generation`) and for `FRESH_FOR`. Bounded by the paths named within `FRESH_FOR`, which come
/// from the cgroup index (itself bounded) or the root.
#[derive(Debug, Default)]
pub(super) struct Named {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    generation: u64,
    since: Option<Instant>,
    by_path: SeededMap<Box<str>, Arc<Workload>>,
}

impl Named {
    /// The workload named `path` at `generation` less than `FRESH_FOR` ago, or `name`'s, kept.
    pub(super) fn get_or_name(
        &self,
        path: &str,
        generation: u64,
        name: impl FnOnce() -> Workload,
    ) -> Arc<Workload> {
        let now = Instant::now();
        {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let stale = inner.since.is_none_or(|since| now.duration_since(since) >= FRESH_FOR);
            if stale || inner.generation != generation {
                // Dropped, not cleared: a map sized for a node's worth of paths once should not
                // keep that room after the containers are gone.
                *inner = Inner { generation, since: Some(now), by_path: SeededMap::default() };
            } else if let Some(workload) = inner.by_path.get(path) {
                return workload.clone();
            }
        }
        // Named outside the lock: naming takes the identities' lock, and may queue a lookup.
        let workload = Arc::new(name());
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.generation == generation {
            inner.by_path.insert(path.into(), workload.clone());
        }
        workload
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn workload(cgroup: &str) -> Workload {
        Workload { cgroup: cgroup.into(), ..Workload::default() }
    }

    #[test]
    fn a_path_is_named_once_until_the_identities_change_or_the_name_ages() {
        let named = Named::default();
        let calls = Cell::new(0);
        let name = |path: &str, generation| {
            named.get_or_name(path, generation, || {
                calls.set(calls.get() + 1);
                workload(path)
            })
        };
        let first = name("/a", 1);
        assert!(Arc::ptr_eq(&first, &name("/a", 1)), "the same name, shared");
        assert_eq!(calls.get(), 1);
        assert_eq!(name("/b", 1).cgroup, "/b");
        assert_eq!(calls.get(), 2);

        // Identities learned since: named again.
        assert!(!Arc::ptr_eq(&first, &name("/a", 2)));
        assert_eq!(calls.get(), 3);

        // Aged past FRESH_FOR: named again, so the identities see the workload in use.
        let aged = name("/a", 2);
        named.inner.lock().unwrap().since = Some(Instant::now() - FRESH_FOR);
        assert!(!Arc::ptr_eq(&aged, &name("/a", 2)));
        assert_eq!(calls.get(), 4);
    }
}
