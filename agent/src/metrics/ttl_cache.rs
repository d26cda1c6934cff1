//! Short-lived results of reads from cgroupfs, so that scrapes in quick succession (several
//! scrapers, or one that retries) do not read every cgroup's files again.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::kernel::{mountinfo::Mount, resources::CgroupDirs};

/// How long a cgroup's directories, once located, serve: a cgroup does not move, and its
/// controllers change only when its parent's `cgroup.subtree_control` does.
const LOCATION_TTL: Duration = Duration::from_secs(30);

/// Where each cgroup's files are. Locating one reads its `cgroup.controllers` (v2 with the
/// memory controller, else v1), a file read per cgroup that need not be repeated every scrape.
#[derive(Debug)]
pub(super) struct Locations {
    mounts: Vec<Mount>,
    cache: Mutex<TtlCache<CgroupDirs>>,
}

impl Locations {
    pub fn new(mounts: Vec<Mount>) -> Self {
        Self { mounts, cache: Mutex::new(TtlCache::new(LOCATION_TTL)) }
    }

    /// The directories of each cgroup path, by path.
    pub fn dirs<'a>(&self, paths: &'a [String]) -> HashMap<&'a str, CgroupDirs> {
        let locate = |path: &str| CgroupDirs::locate(&self.mounts, path);
        let dirs = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get_all(paths, locate);
        paths.iter().map(String::as_str).zip(dirs).collect()
    }
}

#[derive(Debug)]
pub(super) struct TtlCache<V> {
    ttl: Duration,
    entries: HashMap<String, (Instant, V)>,
    last_sweep: Option<Instant>,
}

impl<V: Clone + Send> TtlCache<V> {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, entries: HashMap::new(), last_sweep: None }
    }

    /// The value of every key, in order: the cached one while younger than the ttl, else
    /// `read(key)`'s. The reads run on a few threads at once (`crate::parallel`).
    pub fn get_all(&mut self, keys: &[String], read: impl Fn(&str) -> V + Sync) -> Vec<V> {
        self.get_all_at(keys, read, Instant::now())
    }

    fn get_all_at(&mut self, keys: &[String], read: impl Fn(&str) -> V + Sync, now: Instant) -> Vec<V> {
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < self.ttl;
        // Entries of keys no longer asked for are dropped once a ttl, so the cache stays as big
        // as the set of cgroups scraped recently.
        if self.last_sweep.is_none_or(|last| !fresh(&last)) {
            self.entries.retain(|_, (at, _)| fresh(at));
            self.last_sweep = Some(now);
        }
        let stale: Vec<&String> = keys
            .iter()
            .filter(|key| !self.entries.get(key.as_str()).is_some_and(|(at, _)| fresh(at)))
            .collect();
        let values = crate::parallel::map(&stale, |key| read(key));
        for (key, value) in stale.into_iter().zip(values) {
            self.entries.insert(key.clone(), (now, value));
        }
        // Every key has an entry now.
        keys.iter().filter_map(|key| self.entries.get(key).map(|(_, value)| value.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_read_again_after_the_ttl_and_forgotten_when_not_asked_for() {
        let mut cache = TtlCache::new(Duration::from_secs(2));
        let keys = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let t0 = Instant::now();
        assert_eq!(cache.get_all_at(&keys(&["a"]), |_| 1, t0), [1]);
        // "a" is cached; "b" is read on its own.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            cache.get_all_at(&keys(&["a", "b"]), |k| if k == "a" { panic!("cached") } else { 2 }, t1),
            [1, 2]
        );
        assert_eq!(cache.get_all_at(&keys(&["b", "a"]), |_| 3, t0 + Duration::from_secs(2)), [2, 3]);
        assert_eq!(cache.entries.len(), 2);
        // "b" is not asked for again: a later sweep drops it.
        assert_eq!(cache.get_all_at(&keys(&["a"]), |_| 4, t0 + Duration::from_secs(5)), [4]);
        assert_eq!(cache.entries.len(), 1);
        // The real clock: a zero ttl always reads.
        let mut uncached = TtlCache::new(Duration::ZERO);
        assert_eq!(uncached.get_all(&keys(&["a"]), |_| 5), [5]);
        assert_eq!(uncached.get_all(&keys(&["a"]), |_| 6), [6]);
    }

    #[test]
    fn many_keys_are_read_once_each_and_returned_in_order() {
        let mut cache = TtlCache::new(Duration::from_secs(2));
        let keys: Vec<String> = (0..1000).map(|i| format!("/kubepods/pod{i}")).collect();
        let reads = std::sync::atomic::AtomicUsize::new(0);
        let read = |key: &str| {
            reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            key.len()
        };
        let now = Instant::now();
        let values = cache.get_all_at(&keys, read, now);
        assert_eq!(values, keys.iter().map(String::len).collect::<Vec<_>>());
        assert_eq!(cache.get_all_at(&keys, read, now), values);
        assert_eq!(reads.into_inner(), 1000, "each key read once, the second time from the cache");
    }
}
