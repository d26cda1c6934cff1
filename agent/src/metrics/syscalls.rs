//! `kernsight_syscalls_total`, `kernsight_syscall_errors_total` and
//! `kernsight_syscall_duration_seconds`, read from the kernel's maps on each scrape.

use std::{borrow::Cow, collections::HashMap, sync::Arc};

use super::{
    LabelNames, Series,
    histogram::{Latency, write_histogram},
    naming::{CgroupNamer, OTHER, WorkloadId},
    seccomp_drift::SeccompDrift,
    text::{Text, TextCollector},
};
use crate::{
    bpf::{
        Programs,
        syscalls::{Calls, SyscallMaps},
    },
    kernel::names::{errno_name, syscall_name},
    metadata::{
        cgroups::Tracker,
        identity::{Resolver, Workload},
    },
};
use kernsight_common::{
    counters::LatencyCell,
    syscalls::{LatencyKey, OTHER_ERRNO, OUT_OF_RANGE_COLUMN, OVERFLOW_SYSCALL},
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

// Written, not encoded: at 1,000 containers these are some 14,000 series a scrape.
impl TextCollector for SyscallCollector {
    fn write(&self, text: &mut Text) {
        // Index before maps: the order the maintenance pass takes them in (the other order
        // deadlocks with it).
        let mut namer = CgroupNamer::new(&self.tracker, &self.resolver);
        let Some(maps) = self.programs.family::<SyscallMaps>() else {
            return;
        };
        let with_id = LabelNames::of(&self.resolver);
        let (calls, unreadable) = maps.read_calls();
        self.programs.count_read_errors(unreadable);
        let (errors, unreadable) = maps.read_errors();
        self.programs.count_read_errors(unreadable);
        let latency = maps.read_latency().map(|(rows, unreadable)| {
            self.programs.count_read_errors(unreadable);
            rows
        });
        drop(maps);

        let calls = calls_by_workload(&calls, &mut namer);
        let mut errors_by_id: HashMap<(WorkloadId, (Label, Label)), u64> = HashMap::new();
        for (key, count) in errors.into_iter().filter(|(_, n)| *n > 0) {
            let labels = (namer.id(key.cgroup_id), (syscall_label(key.syscall), errno_label(key.errno)));
            *errors_by_id.entry(labels).or_default() += count;
        }
        let latency = latency.map(|rows| latency_by_workload(rows, &mut namer));
        namer.named_all();

        let series = namer.in_label_order(calls);
        text.counters(
            "kernsight_syscalls",
            "Syscalls that returned, by workload and syscall (exit and exit_group never return and are not counted)",
            series.iter().map(|((workload, syscall), n)| {
                (Series::of(workload, &with_id).with("syscall", syscall), *n)
            }),
        );
        if let Some(drift) = &self.drift {
            drift.write(text, &series, &with_id);
        }
        text.counters(
            "kernsight_syscall_errors",
            "Syscalls that returned an error, by workload, syscall and errno",
            namer.in_label_order(errors_by_id).iter().map(|((workload, (syscall, errno)), n)| {
                (Series::of(workload, &with_id).with("syscall", syscall).with("errno", errno), *n)
            }),
        );
        if let Some(latency) = latency {
            write_latency(text, namer.in_label_order(latency), &with_id);
        }
    }
}

/// The slot table's counts, by workload and syscall.
fn calls_by_workload(
    calls: &HashMap<u64, Calls>,
    namer: &mut CgroupNamer,
) -> HashMap<(WorkloadId, Label), u64> {
    let mut by_id = HashMap::new();
    for (cgroup_id, columns) in calls {
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
    by_id
}

/// The latency histograms' cells, by workload and syscall.
fn latency_by_workload(
    rows: Vec<(LatencyKey, LatencyCell)>,
    namer: &mut CgroupNamer,
) -> HashMap<(WorkloadId, Label), Latency> {
    let mut by_id: HashMap<(WorkloadId, Label), Latency> = HashMap::new();
    for (key, cell) in rows.into_iter().filter(|(_, cell)| cell.count > 0) {
        by_id
            .entry((namer.id(key.cgroup_id), syscall_label(key.syscall)))
            .or_default()
            .observe(key.bucket, &cell);
    }
    by_id
}

fn write_latency(text: &mut Text, series: Vec<((Arc<Workload>, Label), Latency)>, with_id: &LabelNames) {
    const NAME: &str = "kernsight_syscall_duration_seconds";
    text.histogram_family(
        NAME,
        "Time from syscall entry to exit, by cgroup and syscall (measured in the kernel, log2 buckets)",
    );
    for ((workload, syscall), latency) in &series {
        write_histogram(text, NAME, &Series::of(workload, with_id).with("syscall", syscall), latency);
    }
}
