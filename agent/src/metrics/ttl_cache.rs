//! Short-lived results of reads from cgroupfs, so that scrapes in quick succession (several
//! scrapers, or one that retries) do not read every cgroup's files again.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

#[derive(Debug)]
pub(super) struct TtlCache<V> {
    ttl: Duration,
    entries: HashMap<String, (Instant, V)>,
    last_sweep: Option<Instant>,
}

impl<V: Clone> TtlCache<V> {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, entries: HashMap::new(), last_sweep: None }
    }

    /// The value of `key`: the cached one while younger than the ttl, else `read()`'s.
    pub fn get(&mut self, key: &str, read: impl FnOnce() -> V) -> V {
        self.get_at(key, read, Instant::now())
    }

    fn get_at(&mut self, key: &str, read: impl FnOnce() -> V, now: Instant) -> V {
        if let Some((at, value)) = self.entries.get(key)
            && now.saturating_duration_since(*at) < self.ttl
        {
            return value.clone();
        }
        // Entries of keys no longer asked for are dropped once a ttl, so the cache stays as big
        // as the set of cgroups scraped recently.
        if self.last_sweep.is_none_or(|last| now.saturating_duration_since(last) >= self.ttl) {
            let ttl = self.ttl;
            self.entries.retain(|_, (at, _)| now.saturating_duration_since(*at) < ttl);
            self.last_sweep = Some(now);
        }
        let value = read();
        self.entries.insert(key.to_owned(), (now, value.clone()));
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_read_again_after_the_ttl_and_forgotten_when_not_asked_for() {
        let mut cache = TtlCache::new(Duration::from_secs(2));
        let t0 = Instant::now();
        assert_eq!(cache.get_at("a", || 1, t0), 1);
        let unread = || panic!("read a value that was cached");
        assert_eq!(cache.get_at("a", unread, t0 + Duration::from_secs(1)), 1);
        // Another key is read on its own.
        assert_eq!(cache.get_at("b", || 2, t0 + Duration::from_secs(1)), 2);
        assert_eq!(cache.get_at("a", || 3, t0 + Duration::from_secs(2)), 3);
        assert_eq!(cache.entries.len(), 2);
        // "b" is not asked for again: a later sweep drops it.
        assert_eq!(cache.get_at("a", || 4, t0 + Duration::from_secs(5)), 4);
        assert_eq!(cache.entries.len(), 1);
        // The real clock: a zero ttl always reads.
        let mut uncached = TtlCache::new(Duration::ZERO);
        assert_eq!(uncached.get("a", || 5), 5);
        assert_eq!(uncached.get("a", || 6), 6);
    }
}
