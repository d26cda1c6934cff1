//! `kernsight_syscalls_total`, `kernsight_syscall_errors_total` and
//! `kernsight_syscall_duration_seconds`, read from the kernel's maps on each scrape.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use kernsight_common::syscalls::{
    LATENCY_SUM_BUCKET, LatencyKey, OUT_OF_RANGE_COLUMN, OVERFLOW_CGROUP_ID, OVERFLOW_SYSCALL, START_ENTRIES,
    SYSCALL_ERRORS_MAP, SYSCALL_LATENCY_MAP, SYSCALL_ROWS_MAP, SYSCALL_START_MAP,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::MetricType,
};

use super::{LabelNames, NO_LABELS, encode_counters, encode_gauges, workload_labels};
use crate::{
    bpf::Programs,
    kernel::{
        cgroupfs::{CgroupIndex, ROOT_CGROUP_ID, V1_CGROUP_ID_BIT},
        names::{errno_name, syscall_name},
    },
    metadata::{
        cgroups::Tracker,
        identity::{Resolver, Workload},
    },
};

/// Label value of what could not be attributed because a bound was reached.
const OTHER: &str = "other";

/// Histogram bucket bounds, as log2 of nanoseconds: 1 µs to 17 s in steps of 4×, so that a
/// series costs 14 buckets instead of the kernel's 40.
const EXPORTED_BUCKETS: [u32; 13] = [10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34];

#[derive(Debug)]
pub struct SyscallCollector {
    programs: Arc<Programs>,
    tracker: Arc<Tracker>,
    resolver: Arc<Resolver>,
    read_errors: AtomicU64,
}

impl SyscallCollector {
    pub fn new(programs: Arc<Programs>, tracker: Arc<Tracker>, resolver: Arc<Resolver>) -> Self {
        Self { programs, tracker, resolver, read_errors: AtomicU64::new(0) }
    }
}

/// Names cgroup ids for one scrape: cgroup id → path (walking the hierarchy at most once per
/// scrape, for ids no lifecycle event named) → workload, each id once.
pub(super) struct CgroupNamer<'a> {
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

fn syscall_label(syscall: u32) -> Cow<'static, str> {
    if syscall == OVERFLOW_SYSCALL { Cow::Borrowed(OTHER) } else { syscall_name(syscall) }
}

impl Collector for SyscallCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(maps) = &self.programs.syscalls else {
            return Ok(());
        };
        // Index before maps: the order the maintenance pass takes them in.
        let mut namer = CgroupNamer::new(self.tracker.index(), &self.resolver);
        let with_id = LabelNames {
            container_id: self.resolver.container_id_label(),
            pod_labels: self.resolver.pod_label_names(),
        };
        let maps = maps.lock().unwrap_or_else(|e| e.into_inner());

        let (calls, unreadable) = maps.read_calls();
        self.read_errors.fetch_add(unreadable, Ordering::Relaxed);
        let mut series: BTreeMap<(Workload, Cow<'static, str>), u64> = BTreeMap::new();
        for (cgroup_id, columns) in &calls {
            let workload = namer.name(*cgroup_id);
            for (column, &count) in columns.iter().enumerate().filter(|(_, c)| **c > 0) {
                let syscall = if column == OUT_OF_RANGE_COLUMN {
                    Cow::Borrowed(OTHER)
                } else {
                    syscall_name(column as u32)
                };
                *series.entry((workload.clone(), syscall)).or_default() += count;
            }
        }
        encode_counters(
            &mut encoder,
            "kernsight_syscalls",
            "Syscalls that returned, by workload and syscall (exit and exit_group never return and are not counted)",
            series.into_iter().map(|((workload, syscall), n)| {
                (workload_labels(&workload, &with_id, [("syscall", syscall.into_owned())]), n)
            }),
        )?;

        let (errors, unreadable) = maps.read_errors();
        self.read_errors.fetch_add(unreadable, Ordering::Relaxed);
        let error_entries = errors.len();
        let mut series: BTreeMap<(Workload, Cow<'static, str>, Cow<'static, str>), u64> = BTreeMap::new();
        for (key, count) in errors.into_iter().filter(|(_, n)| *n > 0) {
            let errno =
                if key.syscall == OVERFLOW_SYSCALL { Cow::Borrowed(OTHER) } else { errno_name(key.errno) };
            *series.entry((namer.name(key.cgroup_id), syscall_label(key.syscall), errno)).or_default() +=
                count;
        }
        encode_counters(
            &mut encoder,
            "kernsight_syscall_errors",
            "Syscalls that returned an error, by workload, syscall and errno",
            series.into_iter().map(|((workload, syscall, errno), n)| {
                let own = [("syscall", syscall.into_owned()), ("errno", errno.into_owned())];
                (workload_labels(&workload, &with_id, own), n)
            }),
        )?;

        let mut map_rows = vec![
            (SYSCALL_ROWS_MAP, maps.slots_in_use(), maps.max_cgroups),
            (SYSCALL_ERRORS_MAP, error_entries, maps.max_error_entries),
        ];
        if let Some((rows, unreadable)) = maps.read_latency() {
            self.read_errors.fetch_add(unreadable, Ordering::Relaxed);
            map_rows.push((SYSCALL_LATENCY_MAP, rows.len(), maps.latency_capacity().unwrap_or(0)));
            encode_latency(&mut encoder, rows, &mut namer, &with_id)?;
            if let Some(threads) = maps.threads_in_syscall() {
                map_rows.push((SYSCALL_START_MAP, threads, START_ENTRIES));
            }
        }
        drop(maps);
        map_rows.extend(super::sched::map_rows(&self.programs));
        map_rows.extend(super::net::map_rows(&self.programs));
        map_rows.extend(super::capabilities::map_rows(&self.programs));
        encode_gauges(
            &mut encoder,
            "kernsight_bpf_map_entries",
            "Entries in use in a kernsight eBPF map (SYSCALL_ROWS: cgroups with a slot)",
            map_rows.iter().map(|(map, entries, _)| ([("map", *map)], *entries as i64)),
        )?;
        encode_gauges(
            &mut encoder,
            "kernsight_bpf_map_max_entries",
            "Capacity of a kernsight eBPF map (config: syscalls.max_cgroups, max_error_entries, latency_max_entries)",
            map_rows.iter().map(|(map, _, capacity)| ([("map", *map)], i64::from(*capacity))),
        )?;
        encode_counters(
            &mut encoder,
            "kernsight_bpf_map_read_errors",
            "Map entries that could not be read during a scrape",
            [(NO_LABELS, self.read_errors.load(Ordering::Relaxed))],
        )
    }
}

/// Per series: counts in the kernel's log2 buckets, and the exact sum.
#[derive(Default)]
pub(super) struct Latency {
    buckets: BTreeMap<u32, u64>,
    sum_nanos: u64,
}

impl Latency {
    /// Adds a kernel row: a log2 bucket's count, or the sum (`LATENCY_SUM_BUCKET`).
    pub(super) fn add(&mut self, bucket: u32, value: u64) {
        if bucket == LATENCY_SUM_BUCKET {
            self.sum_nanos += value;
        } else {
            *self.buckets.entry(bucket).or_default() += value;
        }
    }
}

fn encode_latency(
    encoder: &mut DescriptorEncoder,
    rows: Vec<(LatencyKey, u64)>,
    namer: &mut CgroupNamer,
    with_id: &LabelNames,
) -> Result<(), std::fmt::Error> {
    let mut series: BTreeMap<(Workload, Cow<'static, str>), Latency> = BTreeMap::new();
    for (key, value) in rows.into_iter().filter(|(_, v)| *v > 0) {
        series
            .entry((namer.name(key.cgroup_id), syscall_label(key.syscall)))
            .or_default()
            .add(key.bucket, value);
    }
    let mut family = encoder.encode_descriptor(
        "kernsight_syscall_duration_seconds",
        "Time from syscall entry to exit, by cgroup and syscall (measured in the kernel, log2 buckets)",
        None,
        MetricType::Histogram,
    )?;
    for ((workload, syscall), latency) in series {
        let labels = workload_labels(&workload, with_id, [("syscall", syscall.into_owned())]);
        LatencyHistogram(&latency).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A `Latency` as a Prometheus histogram with the exported bounds (1 µs to 17 s, steps of 4).
pub(super) struct LatencyHistogram<'a>(pub(super) &'a Latency);

impl EncodeMetric for LatencyHistogram<'_> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut exported = [0u64; EXPORTED_BUCKETS.len() + 1];
        for (&bucket, &count) in &self.0.buckets {
            // Kernel bucket b holds [2^(b-1), 2^b) ns: it belongs under the first bound >= 2^b.
            let slot =
                EXPORTED_BUCKETS.iter().position(|&bound| bucket <= bound).unwrap_or(EXPORTED_BUCKETS.len());
            exported[slot] += count;
        }
        let bounds = EXPORTED_BUCKETS.iter().map(|&b| (1u64 << b) as f64 / 1e9).chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(exported).collect();
        let count = exported.iter().sum();
        encoder.encode_histogram::<NoLabelSet>(self.0.sum_nanos as f64 / 1e9, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}
