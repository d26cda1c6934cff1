//! `kernsight_oom_kills_total` and `kernsight_oom_victim_memory_bytes` (from the kernel's OOM
//! events since the agent started), and `kernsight_cgroup_oom_kills` (the cgroup's own count,
//! read from cgroupfs, so that kills while the agent was down are not lost).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::{
    LabelNames, NO_LABELS, Series, encode_counters, encode_gauges,
    read_ahead::ReadAhead,
    ttl_cache::{Locations, TtlCache},
};
use crate::{
    bpf::oom::OomKills,
    bpf::{Programs, syscalls::SyscallMaps},
    kernel::{
        cgroupfs::{ROOT_CGROUP_ID, V1_CGROUP_ID_BIT},
        resources,
    },
    metadata::{cgroups::Tracker, identity::Resolver},
};

/// How long one read of a cgroup's OOM kill count serves scrapes.
const CACHE_TTL: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct OomCollector {
    kills: Arc<OomKills>,
    programs: Arc<Programs>,
    tracker: Arc<Tracker>,
    resolver: Arc<Resolver>,
    locations: Arc<Locations>,
    /// Each cgroup's count by path (`None`: no memory controller, or a kernel without the key).
    counts: Mutex<TtlCache<Option<u64>>>,
}

impl OomCollector {
    pub fn new(
        kills: Arc<OomKills>,
        programs: Arc<Programs>,
        tracker: Arc<Tracker>,
        resolver: Arc<Resolver>,
        locations: Arc<Locations>,
    ) -> Self {
        Self { kills, programs, tracker, resolver, locations, counts: Mutex::new(TtlCache::new(CACHE_TTL)) }
    }

    /// `f` of the counts' cache and of how to read the count of one of `paths`, for a scrape at
    /// `scrape_at`.
    fn with_counts<R>(
        &self,
        paths: &[String],
        scrape_at: Instant,
        f: impl FnOnce(&mut TtlCache<Option<u64>>, &(dyn Fn(&str) -> Option<u64> + Sync)) -> R,
    ) -> R {
        let dirs = self.locations.dirs(paths, scrape_at);
        let read = |path: &str| dirs.get(path).and_then(resources::read_oom_kills);
        f(&mut self.counts.lock().unwrap_or_else(|e| e.into_inner()), &read)
    }

    /// Paths of the cgroups that hold a slot in the syscall maps (the workloads kernsight sees).
    fn watched_paths(&self) -> Vec<String> {
        let Some(maps) = self.programs.family::<SyscallMaps>() else {
            return Vec::new();
        };
        let ids = maps.cgroups_with_slot();
        drop(maps);
        let index = self.tracker.index();
        ids.into_iter()
            .filter(|id| id & !V1_CGROUP_ID_BIT != ROOT_CGROUP_ID)
            .filter_map(|id| index.resolve(id).map(str::to_owned))
            .collect()
    }
}

impl ReadAhead for OomCollector {
    fn read_ahead(&self, scrape_at: Instant) {
        let paths = self.watched_paths();
        self.with_counts(&paths, scrape_at, |counts, read| counts.read_ahead(&paths, read, scrape_at));
    }
}

impl Collector for OomCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let names = LabelNames::of(&self.resolver);
        let snapshot = self.kills.snapshot();
        let named: Vec<_> = snapshot.iter().map(|k| (self.resolver.shared_workload(&k.path), k)).collect();
        encode_counters(
            &mut encoder,
            "kernsight_oom_kills",
            "Tasks the kernel's OOM killer killed, by the victim's workload (since the agent started)",
            named.iter().map(|(workload, k)| (Series::of(workload, &names), k.kills)),
        )?;
        encode_gauges(
            &mut encoder,
            "kernsight_oom_victim_memory_bytes",
            "Resident memory of the last OOM victim of the workload when it was killed, by kind (anon: heap and stacks; file: mapped page cache; shmem: shared memory and tmpfs)",
            named.iter().flat_map(|(workload, k)| {
                [
                    ("anon", k.last.anon_rss_bytes),
                    ("file", k.last.file_rss_bytes),
                    ("shmem", k.last.shmem_rss_bytes),
                ]
                .map(|(kind, bytes)| (Series::of(workload, &names).with("kind", kind), bytes as i64))
            }),
        )?;
        encode_counters(
            &mut encoder,
            "kernsight_oom_events_lost",
            "OOM kills the kernel could not queue (ring buffer full)",
            [(NO_LABELS, self.programs.ring("oom_events").map_or(0, |ring| ring.lost()))],
        )?;

        // The cgroup's own count: every kill since the cgroup was created, the agent up or not.
        let paths = self.watched_paths();
        let kills = self.with_counts(&paths, Instant::now(), |counts, read| counts.get_all(&paths, read));
        let counts: BTreeMap<_, i64> = paths
            .iter()
            .zip(kills)
            .filter_map(|(path, kills)| Some((self.resolver.shared_workload(path), kills? as i64)))
            .collect();
        encode_gauges(
            &mut encoder,
            "kernsight_cgroup_oom_kills",
            "OOM kills in the cgroup since it was created, from memory.events (v2) or memory.oom_control (v1), for the cgroups kernsight sees",
            counts.iter().map(|(workload, &n)| (Series::of(workload, &names), n)),
        )
    }
}
