//! `kernsight_syscalls_total`, `kernsight_syscall_errors_total` and
//! `kernsight_syscall_duration_seconds`, read from the kernel's maps on each scrape.

use std::{borrow::Cow, collections::HashMap, sync::Arc};

use kernsight_common::{
    counters::LatencyCell,
    syscalls::{LatencyKey, OTHER_ERRNO, OUT_OF_RANGE_COLUMN, OVERFLOW_SYSCALL},
};
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder, metrics::MetricType};

use super::{
    LabelNames, Series, encode_counters,
    histogram::{Latency, encode_histogram},
    naming::{CgroupNamer, OTHER, WorkloadId},
    seccomp_drift::SeccompDrift,
};
use crate::{
    bpf::{Programs, syscalls::SyscallMaps},
    kernel::names::{errno_name, syscall_name},
    metadata::{cgroups::Tracker, identity::Resolver},
};

#[derive(Debug)]
pub struct SyscallCollector {
    programs: Arc<Programs>,
    tracker: Arc<Tracker>,
    resolver: Arc<Resolver>,
    /// `kernsight_syscalls_outside_profile_total`, from the same counts (`security.seccomp_drift`).
    drift: Option<SeccompDrift>,
}

impl SyscallCollector {
    pub(crate) fn new(
        programs: Arc<Programs>,
        tracker: Arc<Tracker>,
        resolver: Arc<Resolver>,
        drift: Option<SeccompDrift>,
    ) -> Self {
        Self { programs, tracker, resolver, drift }
    }
}

/// A label value from a table of names, or made for a number outside it.
type Label = Cow<'static, str>;

/// The `syscall` label of a hash key's syscall column: `other` for numbers outside the table
/// and for the overflow keys.
fn syscall_label(column: u32) -> Cow<'static, str> {
    if column == OVERFLOW_SYSCALL || column as usize == OUT_OF_RANGE_COLUMN {
        Cow::Borrowed(OTHER)
    } else {
        syscall_name(column)
    }
}

/// The `errno` label of an error key: `other` for errnos outside the kernel's set and for the
/// overflow keys.
fn errno_label(errno: u32) -> Cow<'static, str> {
    if errno == OTHER_ERRNO { Cow::Borrowed(OTHER) } else { errno_name(errno) }
}

impl Collector for SyscallCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Index before maps: the order the maintenance pass takes them in (the other order
        // deadlocks with it).
        let mut namer = CgroupNamer::new(&self.tracker, &self.resolver);
        let Some(maps) = self.programs.family::<SyscallMaps>() else {
            return Ok(());
        };
        let with_id = LabelNames::of(&self.resolver);

        let (calls, unreadable) = maps.read_calls();
        self.programs.count_read_errors(unreadable);
        let mut by_id: HashMap<(WorkloadId, Cow<'static, str>), u64> = HashMap::new();
        for (cgroup_id, columns) in &calls {
            let workload = namer.id(*cgroup_id);
            for (column, &count) in columns.iter().enumerate().filter(|(_, c)| **c > 0) {
                let syscall = if column == OUT_OF_RANGE_COLUMN {
                    Cow::Borrowed(OTHER)
                } else {
                    syscall_name(column as u32)
                };
                *by_id.entry((workload, syscall)).or_default() += count;
            }
        }
        let series = namer.in_label_order(by_id);
        encode_counters(
            &mut encoder,
            "kernsight_syscalls",
            "Syscalls that returned, by workload and syscall (exit and exit_group never return and are not counted)",
            series.iter().map(|((workload, syscall), n)| {
                (Series::of(workload, &with_id).with("syscall", syscall), *n)
            }),
        )?;
        if let Some(drift) = &self.drift {
            drift.encode(&mut encoder, &series, &with_id)?;
        }

        let (errors, unreadable) = maps.read_errors();
        self.programs.count_read_errors(unreadable);
        let mut by_id: HashMap<(WorkloadId, (Label, Label)), u64> = HashMap::new();
        for (key, count) in errors.into_iter().filter(|(_, n)| *n > 0) {
            let labels = (namer.id(key.cgroup_id), (syscall_label(key.syscall), errno_label(key.errno)));
            *by_id.entry(labels).or_default() += count;
        }
        encode_counters(
            &mut encoder,
            "kernsight_syscall_errors",
            "Syscalls that returned an error, by workload, syscall and errno",
            namer.in_label_order(by_id).iter().map(|((workload, (syscall, errno)), n)| {
                (Series::of(workload, &with_id).with("syscall", syscall).with("errno", errno), *n)
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

fn encode_latency(
    encoder: &mut DescriptorEncoder,
    rows: Vec<(LatencyKey, LatencyCell)>,
    namer: &mut CgroupNamer,
    with_id: &LabelNames,
) -> Result<(), std::fmt::Error> {
    let mut by_id: HashMap<(WorkloadId, Cow<'static, str>), Latency> = HashMap::new();
    for (key, cell) in rows.into_iter().filter(|(_, cell)| cell.count > 0) {
        by_id
            .entry((namer.id(key.cgroup_id), syscall_label(key.syscall)))
            .or_default()
            .observe(key.bucket, &cell);
    }
    let series = namer.in_label_order(by_id);
    let mut family = encoder.encode_descriptor(
        "kernsight_syscall_duration_seconds",
        "Time from syscall entry to exit, by cgroup and syscall (measured in the kernel, log2 buckets)",
        None,
        MetricType::Histogram,
    )?;
    for ((workload, syscall), latency) in &series {
        encode_histogram(&mut family, &Series::of(workload, with_id).with("syscall", syscall), latency)?;
    }
    Ok(())
}
