//! Per-container resources from cgroupfs (v2, or v1 on hybrid and v1 hosts): memory by kind and
//! limits, memory events, CPU usage, quota and throttling, pids, and pressure stall time. Read
//! on scrape, cached for a short interval, or shortly ahead of a steady scraper's scrape
//! (`super::read_ahead`).

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use prometheus_client::metrics::MetricType;

use super::{
    EncodedLabels, LabelNames, Series,
    read_ahead::ReadAhead,
    text::{Text, TextCollector},
    ttl_cache::{Locations, TtlCache},
};
use crate::{
    kernel::{
        block_devices::{device_label, device_name},
        resources::{self, Limits, Resources},
    },
    metadata::{
        cgroup_path,
        cgroups::Tracker,
        identity::{Resolver, Workload},
    },
};

/// How long one read of a container's usage files serves scrapes.
const CACHE_TTL: Duration = Duration::from_secs(2);
/// How long one read of its limit files does, at most: a limit changes when the container
/// starts or is resized, and a resize shows this much later at most. A new container's limits
/// are read again at every scrape until it has existed that long (`TtlCache::growing`): its
/// runtime writes them after creating the cgroup. Its age counts from when its cgroup appeared
/// where the agent saw that (`CgroupIndex::appeared`), so that a container that started a
/// second before a read ahead is not read again at the scrape after it. About a third of a
/// container's files are limits: each scrape past the usage cache opens that many fewer.
const LIMITS_TTL: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct ResourceCollector {
    tracker: Arc<Tracker>,
    resolver: Arc<Resolver>,
    cache: Mutex<TtlCache<Resources>>,
    limits: Mutex<TtlCache<Limits>>,
    locations: Arc<Locations>,
    /// `container_paths` as of the index's `changes`: finding them parses each of thousands of
    /// living paths, 2.5 % of the agent's CPU in back-to-back scrapes of 1,000 containers.
    paths: Mutex<(Option<u64>, Arc<ContainerPaths>)>,
}

/// Each live container's own cgroup path, in container id order, and when those that started
/// while the agent followed the kernel's events appeared.
#[derive(Debug, Default)]
struct ContainerPaths {
    paths: Vec<String>,
    appeared: HashMap<String, Instant>,
}

impl ContainerPaths {
    fn appeared(&self, path: &str) -> Option<Instant> {
        self.appeared.get(path).copied()
    }
}

impl ResourceCollector {
    pub fn new(tracker: Arc<Tracker>, resolver: Arc<Resolver>, locations: Arc<Locations>) -> Self {
        let (cache, limits) =
            (Mutex::new(TtlCache::new(CACHE_TTL)), Mutex::new(TtlCache::growing(LIMITS_TTL)));
        Self { tracker, resolver, cache, limits, locations, paths: Mutex::default() }
    }

    /// Each live container's own cgroup path: the shortest of the paths naming its id (a
    /// container's sub-cgroups, and its path in each hierarchy, name it too), in container id
    /// order.
    fn container_paths(&self) -> Arc<ContainerPaths> {
        let index = self.tracker.index();
        let mut cached = lock(&self.paths);
        if cached.0 == Some(index.changes()) {
            return cached.1.clone();
        }
        let mut paths: BTreeMap<String, String> = BTreeMap::new();
        for path in index.alive_paths() {
            let Some(container) = cgroup_path::parse(path) else { continue };
            let entry = paths.entry(container.container_id).or_insert_with(|| path.to_owned());
            if path.len() < entry.len() {
                *entry = path.to_owned();
            }
        }
        let paths: Vec<String> = paths.into_values().collect();
        let appeared = paths.iter().filter_map(|path| Some((path.clone(), index.appeared(path)?))).collect();
        *cached = (Some(index.changes()), Arc::new(ContainerPaths { paths, appeared }));
        cached.1.clone()
    }

    /// `f` of the usage and limits caches, each with how to read one of `paths`, for a scrape at
    /// `scrape_at`.
    fn with_caches<R>(
        &self,
        paths: &[String],
        scrape_at: Instant,
        f: impl FnOnce(Cached<'_, Resources>, Cached<'_, Limits>) -> R,
    ) -> R {
        let dirs = self.locations.dirs(paths, scrape_at);
        let usage = |path: &str| dirs.get(path).map(resources::read_usage).unwrap_or_default();
        let limits = |path: &str| dirs.get(path).map(resources::read_limits).unwrap_or_default();
        let (mut usage_cache, mut limits_cache) = (lock(&self.cache), lock(&self.limits));
        f(
            Cached { cache: &mut usage_cache, read: &usage },
            Cached { cache: &mut limits_cache, read: &limits },
        )
    }
}

/// A cache of values read from cgroupfs, and how to read one.
struct Cached<'a, V> {
    cache: &'a mut TtlCache<V>,
    read: &'a (dyn Fn(&str) -> V + Sync),
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl ReadAhead for ResourceCollector {
    fn read_ahead(&self, scrape_at: Instant) {
        let containers = self.container_paths();
        let paths = &containers.paths;
        self.with_caches(paths, scrape_at, |usage, limits| {
            usage.cache.read_ahead(paths, usage.read, scrape_at);
            let appeared = |path: &str| containers.appeared(path);
            limits.cache.read_ahead_appeared(paths, limits.read, scrape_at, appeared);
        });
    }
}

// Written, not encoded: about 12 samples a container.
impl TextCollector for ResourceCollector {
    fn write(&self, text: &mut Text) {
        let names = LabelNames::of(&self.resolver);
        let containers = self.container_paths();
        let paths = &containers.paths;
        let (mut read, limits) = self.with_caches(paths, Instant::now(), |usage, limits| {
            let appeared = |path: &str| containers.appeared(path);
            (
                usage.cache.get_all(paths, usage.read),
                limits.cache.get_all_appeared(paths, limits.read, appeared),
            )
        });
        for (resources, limits) in read.iter_mut().zip(limits) {
            resources.set_limits(limits);
        }
        let containers: Vec<(Arc<Workload>, Resources)> =
            paths.iter().map(|path| self.resolver.shared_workload(path)).zip(read).collect();
        // Device labels, named from sysfs once a scrape whatever the number of containers.
        let mut devices: BTreeMap<(u32, u32), (String, String)> = BTreeMap::new();
        for (_, r) in &containers {
            for &(major, minor) in r.io.keys() {
                devices.entry((major, minor)).or_insert_with(|| {
                    let name = device_name(Path::new("/sys"), major, minor).unwrap_or_default();
                    (device_label(major, minor), name)
                });
            }
        }

        let mut families: BTreeMap<&'static str, Vec<(Series, f64)>> = BTreeMap::new();
        // About 30 series a container: its labels are encoded once.
        let encoded: Vec<EncodedLabels> =
            containers.iter().map(|(workload, _)| EncodedLabels::of(&Series::of(workload, &names))).collect();
        for ((_, r), encoded) in containers.iter().zip(&encoded) {
            let series = Series::of_encoded(encoded);
            let mut add = |name: &'static str, series, value: f64| {
                families.entry(name).or_default().push((series, value));
            };
            for (name, value) in [
                ("usage_bytes", r.memory_current.map(|v| v as f64)),
                ("unreclaimable_bytes", r.memory_unreclaimable.map(|v| v as f64)),
                ("cpu_usage", r.cpu_usage_seconds),
                ("cpu_quota", r.cpu_quota_seconds),
                ("cpu_period", r.cpu_period_seconds),
                ("cpu_periods", r.cpu_periods.map(|v| v as f64)),
                ("cpu_throttled_periods", r.cpu_throttled_periods.map(|v| v as f64)),
                ("cpu_throttled", r.cpu_throttled_seconds),
                ("cpu_bursts", r.cpu_bursts.map(|v| v as f64)),
                ("cpu_burst", r.cpu_burst_seconds),
                ("pids", r.pids_current.map(|v| v as f64)),
                ("pids_limit", r.pids_max.map(|v| v as f64)),
            ] {
                if let Some(value) = value {
                    add(name, series, value);
                }
            }
            for (kind, bytes) in &r.memory_by_kind {
                add("by_kind", series.with("kind", kind), *bytes as f64);
            }
            for (limit, bytes) in [("max", r.memory_max), ("high", r.memory_high)] {
                if let Some(bytes) = bytes {
                    add("limit", series.with("limit", limit), bytes as f64);
                }
            }
            for (event, count) in &r.memory_events {
                add("events", series.with("event", event), *count as f64);
            }
            for (device, io) in &r.io {
                let (label, name) = &devices[device];
                let series = series.with("device", label).with("device_name", name);
                add("io_read_bytes", series, io.read_bytes as f64);
                add("io_write_bytes", series, io.write_bytes as f64);
                add("io_read_operations", series, io.read_operations as f64);
                add("io_write_operations", series, io.write_operations as f64);
            }
            for ((resource, kind), seconds) in &r.pressure {
                add("pressure", series.with("resource", resource).with("kind", kind), *seconds);
            }
        }

        for (key, name, help, metric_type) in FAMILIES {
            let Some(rows) = families.remove(key) else { continue };
            match metric_type {
                MetricType::Counter => text.counters(name, help, rows),
                _ => text.gauges(name, help, rows),
            }
        }
    }
}

/// (key, name, help, type) of every family, in export order.
const FAMILIES: [(&str, &str, &str, MetricType); 20] = [
    (
        "usage_bytes",
        "kernsight_container_memory_usage_bytes",
        "Memory charged to the container's cgroup (memory.current; v1 memory.usage_in_bytes)",
        MetricType::Gauge,
    ),
    (
        "unreclaimable_bytes",
        "kernsight_container_memory_unreclaimable_bytes",
        "Memory of the container that reclaim cannot free without swap (memory.stat: anon and unevictable LRU lists, with shmem; v2 adds unreclaimable slab, kernel stacks, page tables, percpu, vmalloc, socket buffers): the limit minus this is the headroom before the OOM killer",
        MetricType::Gauge,
    ),
    (
        "by_kind",
        "kernsight_container_memory_bytes",
        "Container memory by kind (memory.stat): anon (heap, stacks), file (page cache), kernel, shmem, slab, sock; v1: anon (rss), file (cache), shmem, mapped_file",
        MetricType::Gauge,
    ),
    (
        "limit",
        "kernsight_container_memory_limit_bytes",
        "Memory limits: max (the OOM limit) and high (v2 throttling); absent when unlimited",
        MetricType::Gauge,
    ),
    (
        "events",
        "kernsight_container_memory_events",
        "memory.events counts (v2: low, high, max, oom, oom_kill, oom_group_kill; v1: oom_kill, under_oom from memory.oom_control)",
        MetricType::Counter,
    ),
    (
        "cpu_usage",
        "kernsight_container_cpu_usage_seconds",
        "CPU time used by the container (cpu.stat usage_usec; v1 cpuacct.usage)",
        MetricType::Counter,
    ),
    (
        "cpu_quota",
        "kernsight_container_cpu_quota_seconds",
        "CPU time the container may use per period (cpu.max; v1 cpu.cfs_quota_us); absent when unlimited",
        MetricType::Gauge,
    ),
    (
        "cpu_period",
        "kernsight_container_cpu_period_seconds",
        "Length of the CFS quota period",
        MetricType::Gauge,
    ),
    (
        "cpu_periods",
        "kernsight_container_cpu_periods",
        "CFS periods in which the container was runnable (cpu.stat nr_periods)",
        MetricType::Counter,
    ),
    (
        "cpu_throttled_periods",
        "kernsight_container_cpu_throttled_periods",
        "Periods in which the container hit its quota and was throttled (nr_throttled)",
        MetricType::Counter,
    ),
    (
        "cpu_throttled",
        "kernsight_container_cpu_throttled_seconds",
        "Time the container's tasks were throttled (throttled_usec; v1 throttled_time)",
        MetricType::Counter,
    ),
    (
        "cpu_bursts",
        "kernsight_container_cpu_bursts",
        "Periods in which the container used its burst allowance beyond its quota (cpu.stat nr_bursts, 5.14+)",
        MetricType::Counter,
    ),
    (
        "cpu_burst",
        "kernsight_container_cpu_burst_seconds",
        "CPU time the container used beyond its quota out of its burst allowance (burst_usec; v1 burst_time)",
        MetricType::Counter,
    ),
    ("pids", "kernsight_container_pids", "Tasks in the container (pids.current)", MetricType::Gauge),
    (
        "pids_limit",
        "kernsight_container_pids_limit",
        "Most tasks the container may have (pids.max); absent when unlimited",
        MetricType::Gauge,
    ),
    (
        "pressure",
        "kernsight_container_pressure_stall_seconds",
        "Pressure stall time (PSI) by resource (cpu, memory, io) and kind (some, full); v2 only",
        MetricType::Counter,
    ),
    (
        "io_read_bytes",
        "kernsight_container_io_read_bytes",
        "Bytes the container read from each block device, as its blk-cgroup counts them (io.stat rbytes; v1 blkio.throttle.io_service_bytes Read)",
        MetricType::Counter,
    ),
    (
        "io_write_bytes",
        "kernsight_container_io_write_bytes",
        "Bytes the container wrote to each block device (io.stat wbytes; v1 blkio.throttle.io_service_bytes Write)",
        MetricType::Counter,
    ),
    (
        "io_read_operations",
        "kernsight_container_io_read_operations",
        "Read operations of the container on each block device (io.stat rios; v1 blkio.throttle.io_serviced Read)",
        MetricType::Counter,
    ),
    (
        "io_write_operations",
        "kernsight_container_io_write_operations",
        "Write operations of the container on each block device (io.stat wios; v1 blkio.throttle.io_serviced Write)",
        MetricType::Counter,
    ),
];
