//! `kernsight_syscalls_total`, `kernsight_syscall_errors_total` and
//! `kernsight_syscall_duration_seconds`, read from the kernel's maps on each scrape.

use std::{
    borrow::Cow,
    sync::{Arc, LazyLock},
};

use super::{
    LabelNames, Series,
    histogram::{Latency, write_histogram},
    naming::{CgroupNamer, OTHER, WorkloadId},
    seccomp_drift::SeccompDrift,
    text::{Text, TextCollector},
};
use crate::{
    bpf::{Programs, syscalls::SyscallMaps},
    kernel::names::{errno_name, syscall_name},
    metadata::{
        cgroups::Tracker,
        identity::{Resolver, Workload},
    },
    seeded_hash::SeededMap,
};
use kernsight_common::{
    counters::LatencyCell,
    syscalls::{LatencyKey, OTHER_ERRNO, OUT_OF_RANGE_COLUMN, SYSCALL_COLUMNS, SyscallRow},
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

/// A syscall column's `syscall` label, ordered as the label is: series keyed by it are summed
/// and sorted by comparing numbers, not names (hashing and comparing the names of some 14,000
/// series was a quarter of the collector at 1,000 containers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct SyscallLabel(u16);

/// Every column's label, made once.
struct ColumnLabels {
    /// By rank: sorted.
    names: Vec<Label>,
    /// Each column's rank.
    ranks: Vec<u16>,
}

static COLUMN_LABELS: LazyLock<ColumnLabels> = LazyLock::new(|| {
    let mut names: Vec<(Label, usize)> = (0..SYSCALL_COLUMNS)
        .map(|column| match column {
            OUT_OF_RANGE_COLUMN => (Cow::Borrowed(OTHER), column),
            _ => (syscall_name(column as u32), column),
        })
        .collect();
    names.sort_unstable();
    let mut ranks = vec![0; SYSCALL_COLUMNS];
    for (rank, (_, column)) in names.iter().enumerate() {
        ranks[*column] = rank as u16;
    }
    ColumnLabels { names: names.into_iter().map(|(name, _)| name).collect(), ranks }
});

const _: () = assert!(SYSCALL_COLUMNS <= u16::MAX as usize);

impl SyscallLabel {
    /// Of a key's syscall column: `other` for numbers outside the table and for the overflow
    /// keys (`OVERFLOW_SYSCALL`).
    fn of(column: u32) -> Self {
        let column = (column as usize).min(OUT_OF_RANGE_COLUMN);
        Self(COLUMN_LABELS.ranks[column])
    }

    fn name(self) -> &'static Label {
        &COLUMN_LABELS.names[usize::from(self.0)]
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
        let mut calls = Vec::new();
        let unreadable = maps.visit_calls(|cgroup_id, per_cpu| add_row(&mut calls, cgroup_id, per_cpu));
        self.programs.count_read_errors(unreadable);
        let (errors, unreadable) = maps.read_errors();
        self.programs.count_read_errors(unreadable);
        let latency = maps.read_latency().map(|(rows, unreadable)| {
            self.programs.count_read_errors(unreadable);
            rows
        });
        drop(maps);

        let calls: Vec<_> =
            calls.into_iter().map(|(cgroup_id, syscall, n)| ((namer.id(cgroup_id), syscall), n)).collect();
        let mut errors_by_id: SeededMap<(WorkloadId, (SyscallLabel, Label)), u64> = SeededMap::default();
        for (key, count) in errors.into_iter().filter(|(_, n)| *n > 0) {
            let labels = (namer.id(key.cgroup_id), (SyscallLabel::of(key.syscall), errno_label(key.errno)));
            *errors_by_id.entry(labels).or_default() += count;
        }
        let latency = latency.map(|rows| latency_by_workload(rows, &mut namer));
        namer.named_all();

        let series: Vec<_> = summed_in_order(namer.in_label_order(calls))
            .map(|((workload, syscall), n)| ((workload, syscall.name().clone()), n))
            .collect();
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
                (Series::of(workload, &with_id).with("syscall", syscall.name()).with("errno", errno), *n)
            }),
        );
        if let Some(latency) = latency {
            write_latency(text, namer.in_label_order(latency), &with_id);
        }
    }
}

/// One slot's row, its CPUs summed, as (cgroup id, syscall, calls) for each syscall it made.
fn add_row(calls: &mut Vec<(u64, SyscallLabel, u64)>, cgroup_id: u64, per_cpu: &[SyscallRow]) {
    let mut summed = [0u64; SYSCALL_COLUMNS];
    for row in per_cpu {
        for (sum, value) in summed.iter_mut().zip(&row.calls) {
            *sum += value;
        }
    }
    let made = summed.iter().enumerate().filter(|(_, n)| **n > 0);
    calls.extend(made.map(|(column, &n)| (cgroup_id, SyscallLabel::of(column as u32), n)));
}

/// Series in label order with the counts of equal neighbours added up: a workload's cgroups
/// (its v1 and v2 cgroups, a restart's) and a cgroup's two slots each give their own row.
fn summed_in_order<K: PartialEq>(
    series: Vec<((Arc<Workload>, K), u64)>,
) -> impl Iterator<Item = ((Arc<Workload>, K), u64)> {
    let mut series = series.into_iter().peekable();
    std::iter::from_fn(move || {
        let ((workload, key), mut n) = series.next()?;
        while let Some(((_, _), more)) =
            series.next_if(|((next, next_key), _)| Arc::ptr_eq(next, &workload) && *next_key == key)
        {
            n += more;
        }
        Some(((workload, key), n))
    })
}

/// The latency histograms' cells, by workload and syscall.
fn latency_by_workload(
    rows: Vec<(LatencyKey, LatencyCell)>,
    namer: &mut CgroupNamer,
) -> SeededMap<(WorkloadId, SyscallLabel), Latency> {
    let mut by_id: SeededMap<(WorkloadId, SyscallLabel), Latency> = SeededMap::default();
    for (key, cell) in rows.into_iter().filter(|(_, cell)| cell.count > 0) {
        by_id
            .entry((namer.id(key.cgroup_id), SyscallLabel::of(key.syscall)))
            .or_default()
            .observe(key.bucket, &cell);
    }
    by_id
}

fn write_latency(
    text: &mut Text,
    series: Vec<((Arc<Workload>, SyscallLabel), Latency)>,
    with_id: &LabelNames,
) {
    const NAME: &str = "kernsight_syscall_duration_seconds";
    text.histogram_family(
        NAME,
        "Time from syscall entry to exit, by cgroup and syscall (measured in the kernel, log2 buckets)",
    );
    for ((workload, syscall), latency) in &series {
        write_histogram(text, NAME, &Series::of(workload, with_id).with("syscall", syscall.name()), latency);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_labels_order_as_their_names_and_name_each_column_once() {
        let labels: Vec<SyscallLabel> = (0..SYSCALL_COLUMNS as u32).map(SyscallLabel::of).collect();
        let mut sorted = labels.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), SYSCALL_COLUMNS, "one label a column");
        let names: Vec<&str> = sorted.iter().map(|label| label.name().as_ref()).collect();
        assert!(names.is_sorted(), "labels compare as their names");
        assert_eq!(SyscallLabel::of(0).name(), "read");
        assert_eq!(SyscallLabel::of(59).name(), "execve");
        for outside in [OUT_OF_RANGE_COLUMN as u32, SYSCALL_COLUMNS as u32, u32::MAX] {
            assert_eq!(SyscallLabel::of(outside).name(), OTHER, "column {outside}");
        }
        // A column the table has no name for keeps its number.
        let unnamed = (0..OUT_OF_RANGE_COLUMN as u32).find(|&c| syscall_name(c).starts_with("syscall_"));
        if let Some(column) = unnamed {
            assert_eq!(SyscallLabel::of(column).name(), &format!("syscall_{column}"));
        }
    }

    #[test]
    fn a_workloads_rows_of_one_syscall_are_added_up() {
        let web = Arc::new(Workload { pod: "web".into(), ..Workload::default() });
        let same_labels = Arc::new(Workload { pod: "web".into(), ..Workload::default() });
        let (read, write) = (SyscallLabel::of(0), SyscallLabel::of(1));
        let series = vec![
            ((web.clone(), read), 1),
            ((web.clone(), read), 2),
            ((web.clone(), write), 4),
            ((same_labels.clone(), write), 8),
            ((web.clone(), write), 16),
        ];
        let summed: Vec<(&str, SyscallLabel, u64)> = summed_in_order(series)
            .map(|((workload, syscall), n)| {
                (if Arc::ptr_eq(&workload, &web) { "web" } else { "other" }, syscall, n)
            })
            .collect();
        // Neighbours only: in label order a workload's rows are together (`in_label_order`
        // gives equal workloads one shared copy).
        assert_eq!(summed, [("web", read, 3), ("web", write, 4), ("other", write, 8), ("web", write, 16)]);
    }
}
