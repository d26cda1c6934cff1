//! Hash maps for the scrape path, hashed with foldhash under a seed from the operating system.
//!
//! A scrape at 1,000 containers names some 3,000 cgroups once per collector: it hashes their
//! paths, then their workloads (seven strings and the pod's labels), then the series keys each
//! collector sums by workload. With std's SipHash that hashing was about 7 % of the agent's CPU
//! in a profile of back-to-back scrapes.
//!
//! The keys are the tenants' (cgroup paths, pod and container names), so the hash must not let
//! them choose collisions. foldhash has no known seed-independent collisions, but seeds itself
//! from address-space layout and the time; here its shared seed comes from std's `RandomState`,
//! which the operating system seeds, and each map gets its own per-map seed from it too. The
//! maps' order never reaches a scrape's text (series are sorted), so the seed is not shown.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::OnceLock,
};

use foldhash::{
    SharedSeed,
    fast::{FoldHasher, SeedableRandomState},
};

pub type SeededMap<K, V> = HashMap<K, V, Seeded>;

/// foldhash under seeds drawn from std's `RandomState` (see the module comment).
#[derive(Clone, Debug)]
pub struct Seeded(SeedableRandomState);

impl Default for Seeded {
    fn default() -> Self {
        static SHARED: OnceLock<SharedSeed> = OnceLock::new();
        let shared = SHARED.get_or_init(|| SharedSeed::from_u64(RandomState::new().hash_one(0u64)));
        Self(SeedableRandomState::with_seed(RandomState::new().hash_one(1u64), shared))
    }
}

impl BuildHasher for Seeded {
    type Hasher = FoldHasher<'static>;

    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_map_is_seeded_apart_and_a_map_hashes_alike() {
        let (a, b) = (Seeded::default(), Seeded::default());
        let path = "/kubepods/burstable/pod1234/cri-containerd-abcd.scope";
        assert_eq!(a.hash_one(path), a.hash_one(path));
        assert_ne!(a.hash_one(path), b.hash_one(path), "two maps, two seeds");

        let mut map: SeededMap<&str, u32> = SeededMap::default();
        map.insert(path, 1);
        *map.entry(path).or_default() += 1;
        assert_eq!(map.get(path), Some(&2));
    }
}
