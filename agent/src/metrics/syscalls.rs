//! `kernsight_syscalls_total`, `kernsight_syscall_errors_total` and
//! `kernsight_syscall_duration_seconds`, read from the kernel's maps on each scrape.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use kernsight_common::syscalls::{
    LATENCY_SUM_BUCKET, LatencyKey, OUT_OF_RANGE_COLUMN, OVERFLOW_CGROUP_ID, OVERFLOW_SYSCALL,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::MetricType,
};

use super::{LabelNames, encode_counters, workload_labels};
use crate::{
    bpf::{Programs, syscalls::SyscallMaps},
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
}

impl SyscallCollector {
    pub fn new(programs: Arc<Programs>, tracker: Arc<Tracker>, resolver: Arc<Resolver>) -> Self {
        Self { programs, tracker, resolver }
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
        let Some(maps) = self.programs.family::<SyscallMaps>() else {
            return Ok(());
        };
        // Index before maps: the order the maintenance pass takes them in.
        let mut namer = CgroupNamer::new(self.tracker.index(), &self.resolver);
        let with_id = LabelNames {
            container_id: self.resolver.container_id_label(),
            pod_labels: self.resolver.pod_label_names(),
        };

        let (calls, unreadable) = maps.read_calls();
        self.programs.count_read_errors(unreadable);
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
        self.programs.count_read_errors(unreadable);
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

        if let Some((rows, unreadable)) = maps.read_latency() {
            self.programs.count_read_errors(unreadable);
            drop(maps);
            encode_latency(&mut encoder, rows, &mut namer, &with_id)?;
        }
        Ok(())
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
