//! Short-lived results of reads from cgroupfs, so that scrapes in quick succession (several
//! scrapers, or one that retries) do not read every cgroup's files again.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{
    freshness::Reads,
    kernel::{mountinfo::Mount, resources::CgroupDirs},
    seeded_hash::SeededMap,
};

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

    /// The directories of each cgroup path, by path, as they serve a scrape at `scrape_at` (now,
    /// or a moment ahead when reading ahead of it).
    pub fn dirs<'a>(&self, paths: &'a [String], scrape_at: Instant) -> SeededMap<&'a str, CgroupDirs> {
        let locate = |path: &str| CgroupDirs::locate(&self.mounts, path);
        let dirs = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get_all_for(paths, locate, scrape_at);
        paths.iter().map(String::as_str).zip(dirs).collect()
    }
}

#[derive(Debug)]
pub(super) struct TtlCache<V> {
    ttl: Duration,
    /// An entry serves no longer than its key had been known when it was read (`growing`).
    growing: bool,
    entries: SeededMap<String, Entry<V>>,
    last_sweep: Option<Instant>,
}

#[derive(Debug)]
struct Entry<V> {
    /// The first read is kept across reads while the key is asked for.
    reads: Reads,
    value: V,
}

impl<V: Clone + Send> TtlCache<V> {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, growing: false, entries: SeededMap::default(), last_sweep: None }
    }

    /// A cache whose entries serve for as long as their key had been known when they were read,
    /// up to `max_ttl`: a key read moments after it appeared is read again at the next call, one
    /// known for a minute serves `max_ttl`. For what is written once shortly after a cgroup
    /// appears (its limits, which a runtime writes after creating it).
    pub fn growing(max_ttl: Duration) -> Self {
        Self { growing: true, ..Self::new(max_ttl) }
    }

    /// The value of every key, in order: the cached one while it serves (younger than the ttl),
    /// else `read(key)`'s. The reads run on a few threads at once (`crate::parallel`).
    pub fn get_all(&mut self, keys: &[String], read: impl Fn(&str) -> V + Sync) -> Vec<V> {
        self.get_all_at(keys, read, Instant::now())
    }

    /// Reads now every key whose value would not serve at `scrape_at`, a moment ahead, so that a
    /// scrape then finds it cached (`super::read_ahead`).
    pub fn read_ahead(&mut self, keys: &[String], read: impl Fn(&str) -> V + Sync, scrape_at: Instant) {
        self.refresh(keys, read, scrape_at, Instant::now(), |_| None);
    }

    /// As `get_all`, for a growing cache whose keys' objects appeared at `appeared(key)` where
    /// that is known: a key first read a while after its object appeared has been known since
    /// then, and serves as long.
    pub fn get_all_appeared(
        &mut self,
        keys: &[String],
        read: impl Fn(&str) -> V + Sync,
        appeared: impl Fn(&str) -> Option<Instant>,
    ) -> Vec<V> {
        let now = Instant::now();
        self.refresh(keys, read, now, now, appeared);
        self.values(keys)
    }

    /// As `read_ahead`, with `appeared` as in `get_all_appeared`: a container that started a
    /// second before the read ahead is not read again at the scrape.
    pub fn read_ahead_appeared(
        &mut self,
        keys: &[String],
        read: impl Fn(&str) -> V + Sync,
        scrape_at: Instant,
        appeared: impl Fn(&str) -> Option<Instant>,
    ) {
        self.refresh(keys, read, scrape_at, Instant::now(), appeared);
    }

    /// As `get_all`, reading now what would not serve at `scrape_at`.
    pub fn get_all_for(
        &mut self,
        keys: &[String],
        read: impl Fn(&str) -> V + Sync,
        scrape_at: Instant,
    ) -> Vec<V> {
        self.refresh(keys, read, scrape_at, Instant::now(), |_| None);
        self.values(keys)
    }

    fn get_all_at(&mut self, keys: &[String], read: impl Fn(&str) -> V + Sync, now: Instant) -> Vec<V> {
        self.refresh(keys, read, now, now, |_| None);
        self.values(keys)
    }

    /// The value of every key, in order, once `refresh` has given each an entry.
    fn values(&self, keys: &[String]) -> Vec<V> {
        keys.iter().filter_map(|key| self.entries.get(key).map(|entry| entry.value.clone())).collect()
    }

    /// Reads, at `now`, every key whose entry would not serve at `served_at`; a key read for the
    /// first time has been known since its object `appeared`, where that is known.
    fn refresh(
        &mut self,
        keys: &[String],
        read: impl Fn(&str) -> V + Sync,
        served_at: Instant,
        now: Instant,
        appeared: impl Fn(&str) -> Option<Instant>,
    ) {
        let (ttl, growing) = (self.ttl, self.growing);
        let young = |at: Instant, ttl: Duration| now.saturating_duration_since(at) < ttl;
        let serves = |entry: &Entry<V>| entry.reads.serve(served_at, ttl, growing);
        // Entries of keys no longer asked for are dropped after two ttls, so the cache stays as
        // big as the set of cgroups scraped recently (and an entry that just expired keeps its
        // first read for the read that replaces it).
        if self.last_sweep.is_none_or(|last| !young(last, ttl)) {
            self.entries.retain(|_, entry| young(entry.reads.last(), 2 * ttl));
            self.last_sweep = Some(now);
        }
        let stale: Vec<&String> =
            keys.iter().filter(|key| !self.entries.get(key.as_str()).is_some_and(serves)).collect();
        let values = crate::parallel::map(&stale, |key| read(key));
        for (key, value) in stale.into_iter().zip(values) {
            let reads = match self.entries.get(key.as_str()) {
                Some(entry) => Reads::after(Some(entry.reads), now),
                None => Reads::first(appeared(key), now),
            };
            self.entries.insert(key.clone(), Entry { reads, value });
        }
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
        // "b" is not asked for again: a sweep two ttls after its read drops it.
        assert_eq!(cache.get_all_at(&keys(&["a"]), |_| 4, t0 + Duration::from_secs(5)), [4]);
        assert_eq!(cache.entries.len(), 1);
        // The real clock: a zero ttl always reads.
        let mut uncached = TtlCache::new(Duration::ZERO);
        assert_eq!(uncached.get_all(&keys(&["a"]), |_| 5), [5]);
        assert_eq!(uncached.get_all(&keys(&["a"]), |_| 6), [6]);
    }

    #[test]
    fn a_growing_cache_reads_a_new_key_again_until_it_has_been_known_for_the_ttl() {
        let mut cache = TtlCache::growing(Duration::from_secs(30));
        let keys = vec!["/kubepods/pod1".to_owned()];
        let t0 = Instant::now();
        let at = |seconds: f64| t0 + Duration::from_secs_f64(seconds);
        // Read as it appears (a runtime may not have written its limits yet): read again next time.
        assert_eq!(cache.get_all_at(&keys, |_| "none", at(0.0)), ["none"]);
        assert_eq!(cache.get_all_at(&keys, |_| "64 MiB", at(2.5)), ["64 MiB"]);
        // Known for 2.5 s when read: serves 2.5 s.
        assert_eq!(cache.get_all_at(&keys, |_| panic!("cached"), at(4.9)), ["64 MiB"]);
        assert_eq!(cache.get_all_at(&keys, |_| "64 MiB", at(5.0)), ["64 MiB"]);
        // Known for 5 s when read: serves 5 s, and so on up to the ttl.
        assert_eq!(cache.get_all_at(&keys, |_| panic!("cached"), at(9.9)), ["64 MiB"]);
        assert_eq!(cache.get_all_at(&keys, |_| "128 MiB", at(30.0)), ["128 MiB"]);
        // Known for 30 s: from now on it serves the ttl, read after read.
        for read_at in [60.0, 90.0, 120.0] {
            assert_eq!(cache.get_all_at(&keys, |_| panic!("cached"), at(read_at - 0.1)), ["128 MiB"]);
            assert_eq!(
                cache.get_all_at(&keys, |_| "128 MiB", at(read_at)),
                ["128 MiB"],
                "never past the ttl"
            );
        }
    }

    #[test]
    fn a_key_whose_object_appeared_before_its_first_read_serves_for_the_object_s_age() {
        let mut cache = TtlCache::growing(Duration::from_secs(30));
        let keys = vec!["/kubepods/pod1/a".to_owned(), "/kubepods/pod1/b".to_owned()];
        let t0 = Instant::now();
        let at = |seconds: f64| t0 + Duration::from_secs_f64(seconds);
        // Read ahead at 2.2 s for a scrape at 2.5 s: "a" appeared at 1 s (known 1.2 s when read,
        // so it serves the scrape), "b" at 2.1 s (known 0.1 s: read again at the scrape).
        let appeared = |key: &str| Some(if key.ends_with('a') { at(1.0) } else { at(2.1) });
        cache.refresh(&keys, |_| "64 MiB", at(2.5), at(2.2), appeared);
        let read_at_scrape = std::sync::Mutex::new(Vec::new());
        let read = |key: &str| {
            read_at_scrape.lock().unwrap().push(key.to_owned());
            "64 MiB"
        };
        cache.refresh(&keys, read, at(2.5), at(2.5), appeared);
        assert_eq!(*read_at_scrape.lock().unwrap(), ["/kubepods/pod1/b"]);
        // Without the time it appeared, a first read is read again at the next look.
        let mut unknown = TtlCache::growing(Duration::from_secs(30));
        unknown.refresh(&keys[..1], |_| "64 MiB", at(2.5), at(2.2), |_| None);
        unknown.refresh(&keys[..1], |_| "128 MiB", at(2.5), at(2.5), |_| None);
        assert_eq!(unknown.values(&keys[..1]), ["128 MiB"]);
    }

    #[test]
    fn reading_ahead_reads_what_would_not_serve_then_and_the_scrape_then_reads_nothing() {
        let mut cache = TtlCache::new(Duration::from_secs(2));
        let keys = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let t0 = Instant::now();
        assert_eq!(cache.get_all_at(&keys(&["old"]), |_| 1, t0), [1]);
        // At t0 + 1.5 s, reading ahead for a scrape at t0 + 2.5 s: "old" would be 2.5 s old then,
        // so it is read again; "new" has never been read.
        let scrape_at = t0 + Duration::from_millis(2500);
        cache.refresh(
            &keys(&["old", "new"]),
            |k| if k == "old" { 2 } else { 3 },
            scrape_at,
            t0 + Duration::from_millis(1500),
            |_| None,
        );
        assert_eq!(
            cache.get_all_at(&keys(&["new", "old"]), |k| panic!("{k} was read ahead"), scrape_at),
            [3, 2]
        );
        // A value that still serves at the scrape is not read ahead.
        let next = scrape_at + Duration::from_millis(500);
        cache.refresh(&keys(&["old"]), |_| panic!("serves until t0 + 3.5 s"), next, scrape_at, |_| None);
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
