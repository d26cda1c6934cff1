//! `kernsight_syscalls_total`, `kernsight_syscall_errors_total` and
//! `kernsight_syscall_duration_seconds`, read from the kernel's per-CPU maps on each scrape.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use kernsight_common::syscalls::{LATENCY_SUM_BUCKET, LatencyKey, OVERFLOW_CGROUP_ID, OVERFLOW_SYSCALL, SYSCALL_COUNTS_MAP, SYSCALL_LATENCY_MAP, SYSCALL_START_MAP};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder},
    metrics::MetricType,
};

use super::{encode_counters, encode_gauges};
use crate::{
    bpf::Programs,
    kernel::{
        cgroupfs::{CgroupIndex, ROOT_CGROUP_ID},
        names::{errno_name, syscall_name},
    },
};

/// Label value of the series that collects counts once a map is full.
const OTHER: &str = "other";

/// Histogram bucket bounds, as log2 of nanoseconds: 1 µs to 17 s in steps of 4×, so that a
/// series costs 14 buckets instead of the kernel's 40.
const EXPORTED_BUCKETS: [u32; 13] = [10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34];

#[derive(Debug)]
pub struct SyscallCollector {
    programs: Arc<Programs>,
    index: Option<Mutex<CgroupIndex>>,
    read_errors: AtomicU64,
}

impl SyscallCollector {
    pub fn new(programs: Arc<Programs>, index: Option<Mutex<CgroupIndex>>) -> Self {
        Self { programs, index, read_errors: AtomicU64::new(0) }
    }

    /// The `cgroup` label of a cgroup id: its path in the v2 hierarchy.
    fn labeller(&self) -> impl FnMut(u64, u32) -> (String, Cow<'static, str>) + '_ {
        let mut index = self.index.as_ref().map(|m| m.lock().unwrap_or_else(|e| e.into_inner()));
        let mut cache: HashMap<u64, String> = HashMap::new();
        move |cgroup_id, syscall| {
            if cgroup_id == OVERFLOW_CGROUP_ID && syscall == OVERFLOW_SYSCALL {
                return (OTHER.to_owned(), Cow::Borrowed(OTHER));
            }
            let cgroup = cache
                .entry(cgroup_id)
                .or_insert_with(|| match index.as_mut() {
                    None => "/".to_owned(),
                    Some(index) => match index.resolve(cgroup_id) {
                        Some(path) => path.to_owned(),
                        None if cgroup_id == ROOT_CGROUP_ID => "/".to_owned(),
                        // Removed before any walk saw it: the id is all that is left.
                        None => format!("cgroup_id:{cgroup_id}"),
                    },
                })
                .clone();
            (cgroup, syscall_name(syscall))
        }
    }
}

type Labels2 = [(&'static str, String); 2];
type Labels3 = [(&'static str, String); 3];

impl Collector for SyscallCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(maps) = &self.programs.syscalls else { return Ok(()) };
        let (rows, errors) = maps.read_counts();
        let entries = rows.len();
        self.read_errors.fetch_add(errors, Ordering::Relaxed);

        let mut label = self.labeller();
        let mut calls: BTreeMap<(String, Cow<'static, str>), u64> = BTreeMap::new();
        let mut failures: BTreeMap<(String, Cow<'static, str>, Cow<'static, str>), u64> = BTreeMap::new();
        for (key, count) in rows {
            let (cgroup, syscall) = label(key.cgroup_id, key.syscall);
            if count == 0 {
                continue; // an overflow entry that was never used
            }
            if key.errno != 0 {
                *failures.entry((cgroup.clone(), syscall.clone(), errno_name(key.errno))).or_default() += count;
            }
            *calls.entry((cgroup, syscall)).or_default() += count;
        }
        encode_counters(
            &mut encoder,
            "kernsight_syscalls",
            "Syscalls that returned, by cgroup and syscall (exit and exit_group never return and are not counted)",
            calls.into_iter().map(|((cgroup, syscall), n)| -> (Labels2, u64) {
                ([("cgroup", cgroup), ("syscall", syscall.into_owned())], n)
            }),
        )?;
        encode_counters(
            &mut encoder,
            "kernsight_syscall_errors",
            "Syscalls that returned an error, by cgroup, syscall and errno",
            failures.into_iter().map(|((cgroup, syscall, errno), n)| -> (Labels3, u64) {
                ([("cgroup", cgroup), ("syscall", syscall.into_owned()), ("errno", errno.into_owned())], n)
            }),
        )?;

        let mut map_rows = vec![(SYSCALL_COUNTS_MAP, entries, maps.counts_capacity)];
        if let Some((rows, errors)) = maps.read_latency() {
            self.read_errors.fetch_add(errors, Ordering::Relaxed);
            let entries = rows.len();
            encode_latency(&mut encoder, rows, &mut label)?;
            map_rows.push((SYSCALL_LATENCY_MAP, entries, maps.latency_capacity().unwrap_or(0)));
            if let Some(threads) = maps.threads_in_syscall() {
                map_rows.push((SYSCALL_START_MAP, threads, kernsight_common::syscalls::DEFAULT_START_ENTRIES));
            }
        }
        drop(label);
        if let Some(index) = &self.index {
            let size = index.lock().unwrap_or_else(|e| e.into_inner()).len();
            encode_gauges(
                &mut encoder,
                "kernsight_cgroup_index_entries",
                "cgroup id to path entries the agent holds",
                [(super::NO_LABELS, size as i64)],
            )?;
        }

        encode_gauges(
            &mut encoder,
            "kernsight_bpf_map_entries",
            "Entries in a kernsight eBPF map",
            map_rows.iter().map(|(map, entries, _)| ([("map", *map)], *entries as i64)),
        )?;
        encode_gauges(
            &mut encoder,
            "kernsight_bpf_map_max_entries",
            "Capacity of a kernsight eBPF map (config: syscalls.max_entries, syscalls.latency_max_entries)",
            map_rows.iter().map(|(map, _, capacity)| ([("map", *map)], i64::from(*capacity))),
        )?;
        encode_counters(
            &mut encoder,
            "kernsight_bpf_map_read_errors",
            "Map entries that could not be read during a scrape",
            [(super::NO_LABELS, self.read_errors.load(Ordering::Relaxed))],
        )
    }
}

/// Per (cgroup, syscall): bucket counts in the kernel's log2 buckets, and the exact sum.
#[derive(Default)]
struct Latency {
    buckets: BTreeMap<u32, u64>,
    sum_nanos: u64,
}

fn encode_latency(
    encoder: &mut DescriptorEncoder,
    rows: Vec<(LatencyKey, u64)>,
    label: &mut impl FnMut(u64, u32) -> (String, Cow<'static, str>),
) -> Result<(), std::fmt::Error> {
    let mut series: BTreeMap<(String, Cow<'static, str>), Latency> = BTreeMap::new();
    for (key, value) in rows {
        if value == 0 {
            continue;
        }
        let entry = series.entry(label(key.cgroup_id, key.syscall)).or_default();
        if key.bucket == LATENCY_SUM_BUCKET {
            entry.sum_nanos += value;
        } else {
            *entry.buckets.entry(key.bucket).or_default() += value;
        }
    }
    let mut family = encoder.encode_descriptor(
        "kernsight_syscall_duration_seconds",
        "Time from syscall entry to exit, by cgroup and syscall (measured in the kernel, log2 buckets)",
        None,
        MetricType::Histogram,
    )?;
    for ((cgroup, syscall), latency) in series {
        let labels: Labels2 = [("cgroup", cgroup), ("syscall", syscall.into_owned())];
        LatencyHistogram(&latency).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

struct LatencyHistogram<'a>(&'a Latency);

impl EncodeMetric for LatencyHistogram<'_> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut exported = [0u64; EXPORTED_BUCKETS.len() + 1];
        for (&bucket, &count) in &self.0.buckets {
            // Kernel bucket b holds [2^(b-1), 2^b) ns: it belongs under the first bound >= 2^b.
            let slot = EXPORTED_BUCKETS.iter().position(|&bound| bucket <= bound).unwrap_or(EXPORTED_BUCKETS.len());
            exported[slot] += count;
        }
        let bounds = EXPORTED_BUCKETS.iter().map(|&b| (1u64 << b) as f64 / 1e9).chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(exported).collect();
        let count = exported.iter().sum();
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(self.0.sum_nanos as f64 / 1e9, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}
