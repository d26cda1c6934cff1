//! The pods of this node as the API server last said, reduced to what attribution needs (uid →
//! owning workload) and bounded: at most `max_pods` pods, names no longer than Kubernetes
//! allows. An API response cannot grow it beyond that, whatever it lists or labels.

use std::{
    collections::HashMap,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::metadata::owner::Owner;

/// The longest name Kubernetes accepts for an object (a DNS subdomain); a longer one did not
/// come from a real API server and is not kept.
pub const MAX_NAME_BYTES: usize = 253;
/// Pod UIDs are 36-character UUIDs; anything much longer is not one.
pub const MAX_UID_BYTES: usize = 64;

#[derive(Debug, Default)]
pub struct PodStore {
    pods: Mutex<HashMap<String, Owner>>,
    max_pods: usize,
    /// Pods the API listed or sent beyond `max_pods`, or with a uid or owner name no real API
    /// server sends: not kept.
    rejected: AtomicU64,
    /// The list and watch requests that fill it.
    pub stats: super::ApiStats,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a uid and an owner can be kept.
fn fits(uid: &str, owner: &Owner) -> bool {
    !uid.is_empty() && uid.len() <= MAX_UID_BYTES && owner.name.len() <= MAX_NAME_BYTES
}

impl PodStore {
    pub fn new(max_pods: usize) -> Self {
        Self { max_pods: max_pods.max(1), ..Self::default() }
    }

    /// The owner the API gave for the pod `uid`, if it is known.
    pub fn owner(&self, uid: &str) -> Option<Owner> {
        lock(&self.pods).get(uid).cloned()
    }

    pub fn len(&self) -> usize {
        lock(&self.pods).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// A pod added or modified; returns whether it is kept.
    pub fn insert(&self, uid: &str, owner: Owner) -> bool {
        let mut pods = lock(&self.pods);
        let full = pods.len() >= self.max_pods && !pods.contains_key(uid);
        if full || !fits(uid, &owner) {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        pods.insert(uid.to_owned(), owner);
        true
    }

    pub fn remove(&self, uid: &str) {
        lock(&self.pods).remove(uid);
    }

    /// A full list replaces what was known: pods deleted while the watch was broken go.
    pub fn replace(&self, listed: impl IntoIterator<Item = (String, Owner)>) {
        let mut pods = HashMap::new();
        for (uid, owner) in listed {
            if (pods.len() >= self.max_pods && !pods.contains_key(&uid)) || !fits(&uid, &owner) {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            pods.insert(uid, owner);
        }
        *lock(&self.pods) = pods;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_keeps_at_most_max_pods_and_no_oversized_names() {
        let store = PodStore::new(3);
        let owner = |name: &str| Owner::new("Deployment", name);
        store.replace((0..10).map(|i| (format!("uid-{i}"), owner("web"))));
        assert_eq!(store.len(), 3);
        assert_eq!(store.rejected(), 7);
        assert!(!store.insert("uid-new", owner("web")), "full");
        let kept = (0..10).map(|i| format!("uid-{i}")).find(|uid| store.owner(uid).is_some()).unwrap();
        assert!(store.insert(&kept, owner("api")), "a known pod is updated even when the store is full");
        assert_eq!(store.owner(&kept), Some(owner("api")));
        store.remove(&kept);
        assert!(!store.insert("u", owner(&"x".repeat(MAX_NAME_BYTES + 1))), "a name no API server sends");
        assert!(!store.insert(&"u".repeat(MAX_UID_BYTES + 1), owner("web")), "a uid that is no UUID");
        assert!(!store.insert("", owner("web")));
        assert!(store.insert("u", owner(&"x".repeat(MAX_NAME_BYTES))));
        assert_eq!(store.len(), 3);
    }
}
