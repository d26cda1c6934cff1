//! The columns of `kernsight top`: each is computed from two scrapes of the agent's metrics, so a
//! new metric family becomes a column by adding one line to `COLUMNS`. A column whose metrics
//! the agent does not export (its family is disabled or not built in) is not shown.

use std::collections::BTreeMap;

use crate::metrics::client::Sample;

/// A workload: namespace, pod, container, and cgroup (for host processes).
pub type Workload = (String, String, String, String);

#[derive(Debug, Clone, Copy)]
pub enum Compute {
    /// Increase per second of the counters whose name matches.
    Rate(Match),
    /// Increase of the first over the increase of the second, in percent.
    Ratio(Match, Match),
    /// A histogram's mean over the interval: Δ`_sum` / Δ`_count`, shown in milliseconds.
    MeanMillis(&'static str),
    /// The latest value (a counter since the agent started, or a gauge).
    Latest(Match),
    /// Milliseconds per second that a histogram's `_sum` (seconds) grew, for the series whose
    /// label (name, value) is the second, or all of them: how long the workload's threads
    /// waited, per second.
    MillisPerSecond(&'static str, Option<(&'static str, &'static str)>),
    /// What share of the memory limit (`limit="max"`) reclaim could still free before the OOM
    /// killer: 100 × (limit − unreclaimable) / limit, from the latest scrape. Workloads without
    /// a limit have no value.
    HeadroomPercent,
}

/// Which metric names a column sums.
#[derive(Debug, Clone, Copy)]
pub enum Match {
    Exact(&'static str),
    /// Every family with this prefix and suffix (families other kernsight versions may add).
    Around(&'static str, &'static str),
}

impl Match {
    fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(n) => name == *n,
            Self::Around(prefix, suffix) => name.starts_with(prefix) && name.ends_with(suffix),
        }
    }
}

/// The memory limit (`limit="max"` of it) and what reclaim cannot free, for `HeadroomPercent`.
const MEMORY_LIMIT: &str = "kernsight_container_memory_limit_bytes";
const MEMORY_UNRECLAIMABLE: &str = "kernsight_container_memory_unreclaimable_bytes";

pub struct Column {
    pub header: &'static str,
    pub compute: Compute,
    /// Shown even when no workload has a value yet (a zero that matters: no OOM kill).
    pub always: bool,
}

pub const COLUMNS: &[Column] = &[
    Column {
        header: "SYSCALLS/S",
        compute: Compute::Rate(Match::Exact("kernsight_syscalls_total")),
        always: true,
    },
    Column {
        header: "ERRORS/S",
        compute: Compute::Rate(Match::Exact("kernsight_syscall_errors_total")),
        always: true,
    },
    Column {
        header: "THROTTLED%",
        compute: Compute::Ratio(
            Match::Exact("kernsight_container_cpu_throttled_periods_total"),
            Match::Exact("kernsight_container_cpu_periods_total"),
        ),
        always: true,
    },
    Column {
        header: "RUNQ_MS",
        compute: Compute::MeanMillis("kernsight_runqueue_latency_seconds"),
        always: true,
    },
    Column {
        header: "THROTTLED_MS/S",
        compute: Compute::MillisPerSecond("kernsight_cpu_wait_seconds_sum", Some(("reason", "throttled"))),
        always: false,
    },
    Column {
        header: "CONTENDED_MS/S",
        compute: Compute::MillisPerSecond("kernsight_cpu_wait_seconds_sum", Some(("reason", "contention"))),
        always: false,
    },
    Column { header: "HEADROOM%", compute: Compute::HeadroomPercent, always: false },
    Column {
        header: "RECLAIM_MS/S",
        compute: Compute::MillisPerSecond("kernsight_memory_reclaim_stall_seconds_sum", None),
        always: false,
    },
    Column {
        header: "IO_LAT_MS",
        compute: Compute::MeanMillis("kernsight_block_io_latency_seconds"),
        always: false,
    },
    Column {
        header: "NET_B/S",
        compute: Compute::Rate(Match::Around("kernsight_container_network_", "_bytes_total")),
        always: false,
    },
    Column {
        header: "DROPS/S",
        compute: Compute::Rate(Match::Exact("kernsight_container_packet_drops_total")),
        always: false,
    },
    Column {
        header: "OOM_KILLS",
        compute: Compute::Latest(Match::Exact("kernsight_oom_kills_total")),
        always: true,
    },
    Column {
        header: "EXECS/S",
        compute: Compute::Rate(Match::Exact("kernsight_process_execs_total")),
        always: false,
    },
];

fn workload(sample: &Sample) -> Option<Workload> {
    let label = |name: &str| sample.labels.get(name).cloned().unwrap_or_default();
    let key = (label("namespace"), label("pod"), label("container"), label("cgroup"));
    // Agent-wide families carry none of these labels: they are not a workload's.
    (key != Workload::default()).then_some(key)
}

/// Per workload, the sum of the samples that `matches` selects.
fn sums(samples: &[Sample], matches: impl Fn(&str) -> bool) -> BTreeMap<Workload, f64> {
    sums_where(samples, |s| matches(&s.name))
}

/// Per workload, the sum of the samples that `selects` selects.
fn sums_where(samples: &[Sample], selects: impl Fn(&Sample) -> bool) -> BTreeMap<Workload, f64> {
    let mut sums = BTreeMap::new();
    for sample in samples.iter().filter(|s| selects(s)) {
        if let Some(key) = workload(sample) {
            *sums.entry(key).or_insert(0.0) += sample.value;
        }
    }
    sums
}

impl Column {
    /// Whether to show this column: always, or when the agent exports its metrics.
    pub fn available(&self, samples: &[Sample]) -> bool {
        if self.always {
            return true;
        }
        let exported = |m: &Match| samples.iter().any(|s| m.matches(&s.name));
        match &self.compute {
            Compute::Rate(m) | Compute::Latest(m) | Compute::Ratio(m, _) => exported(m),
            Compute::MeanMillis(base) => samples.iter().any(|s| s.name == format!("{base}_count")),
            Compute::MillisPerSecond(name, _) => samples.iter().any(|s| s.name == *name),
            Compute::HeadroomPercent => samples.iter().any(|s| s.name == MEMORY_UNRECLAIMABLE),
        }
    }

    /// Whether the lowest value ranks first: the least headroom is the container to look at.
    pub fn lowest_first(&self) -> bool {
        matches!(self.compute, Compute::HeadroomPercent)
    }

    /// The column's value per workload, from a scrape `seconds` before the other.
    pub fn values(&self, before: &[Sample], after: &[Sample], seconds: f64) -> BTreeMap<Workload, f64> {
        let delta = |m: &Match| {
            let old = sums(before, |n| m.matches(n));
            let mut new = sums(after, |n| m.matches(n));
            for (key, value) in new.iter_mut() {
                // A counter that went down was reset (agent restarted): count from zero.
                let previous = old.get(key).copied().unwrap_or(0.0);
                *value = if *value >= previous { *value - previous } else { *value };
            }
            new
        };
        match &self.compute {
            Compute::Rate(m) => delta(m)
                .into_iter()
                .map(|(k, v)| (k, if seconds > 0.0 { v / seconds } else { 0.0 }))
                .collect(),
            Compute::Ratio(part, whole) => {
                let (part, whole) = (delta(part), delta(whole));
                whole
                    .into_iter()
                    .map(|(k, w)| {
                        let p = part.get(&k).copied().unwrap_or(0.0);
                        (k, if w > 0.0 { 100.0 * p / w } else { 0.0 })
                    })
                    .collect()
            }
            Compute::MeanMillis(base) => {
                let sum_name = format!("{base}_sum");
                let count_name = format!("{base}_count");
                let delta_of = |name: &str| {
                    let old = sums(before, |n| n == name);
                    let mut new = sums(after, |n| n == name);
                    for (key, value) in new.iter_mut() {
                        *value -= old.get(key).copied().unwrap_or(0.0).min(*value);
                    }
                    new
                };
                let (total, count) = (delta_of(&sum_name), delta_of(&count_name));
                count
                    .into_iter()
                    .map(|(k, c)| {
                        let s = total.get(&k).copied().unwrap_or(0.0);
                        (k, if c > 0.0 { 1000.0 * s / c } else { 0.0 })
                    })
                    .collect()
            }
            Compute::Latest(m) => sums(after, |n| m.matches(n)),
            Compute::MillisPerSecond(name, label) => {
                let selects = |s: &Sample| {
                    s.name == *name
                        && label.is_none_or(|(label, want)| s.labels.get(label).is_some_and(|v| v == want))
                };
                let old = sums_where(before, selects);
                let mut new = sums_where(after, selects);
                for (key, value) in new.iter_mut() {
                    // A sum that went down was reset (agent restarted): count from zero.
                    let previous = old.get(key).copied().unwrap_or(0.0);
                    let grew = if *value >= previous { *value - previous } else { *value };
                    *value = if seconds > 0.0 { 1000.0 * grew / seconds } else { 0.0 };
                }
                new
            }
            Compute::HeadroomPercent => {
                let limits = sums_where(after, |s| {
                    s.name == MEMORY_LIMIT && s.labels.get("limit").is_some_and(|l| l == "max")
                });
                let unreclaimable = sums(after, |n| n == MEMORY_UNRECLAIMABLE);
                limits
                    .into_iter()
                    .filter(|(_, limit)| *limit > 0.0)
                    .filter_map(|(k, limit)| {
                        let used = unreclaimable.get(&k).copied()?;
                        Some((k, 100.0 * (limit - used) / limit))
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::client::parse;

    #[test]
    fn rates_ratios_and_means_between_two_scrapes() {
        let before = parse(
            "kernsight_syscalls_total{namespace=\"ns\",pod=\"p\",container=\"c\",cgroup=\"\",syscall=\"read\"} 100\n\
             kernsight_syscalls_total{namespace=\"ns\",pod=\"p\",container=\"c\",cgroup=\"\",syscall=\"write\"} 50\n\
             kernsight_container_cpu_throttled_periods_total{namespace=\"ns\",pod=\"p\",container=\"c\",cgroup=\"\"} 1\n\
             kernsight_container_cpu_periods_total{namespace=\"ns\",pod=\"p\",container=\"c\",cgroup=\"\"} 10\n\
             kernsight_runqueue_latency_seconds_sum{namespace=\"\",pod=\"\",container=\"\",cgroup=\"/x\"} 1\n\
             kernsight_runqueue_latency_seconds_count{namespace=\"\",pod=\"\",container=\"\",cgroup=\"/x\"} 10\n\
             kernsight_cpu_wait_seconds_sum{namespace=\"ns\",pod=\"p\",container=\"c\",cgroup=\"\",reason=\"throttled\"} 2\n\
             kernsight_cpu_wait_seconds_sum{namespace=\"ns\",pod=\"p\",container=\"c\",cgroup=\"\",reason=\"contention\"} 0.5\n\
             kernsight_build_info{version=\"1\"} 1\n",
        );
        let after = parse(
            "kernsight_syscalls_total{namespace=\"ns\",pod=\"p\",container=\"c\",cgroup=\"\",syscall=\"read\"} 300\n\
             kernsight_syscalls_total{namespace=\"ns\",pod=\"p\",container=\"c\",cgroup=\"\",syscall=\"write\"} 150\n\
             kernsight_container_cpu_throttled_periods_total{namespace=\"ns\",pod=\"p\",container=\"c\",cgroup=\"\"} 6\n\
             kernsight_container_cpu_periods_total{namespace=\"ns\",pod=\"p\",container=\"c\",cgroup=\"\"} 30\n\
             kernsight_runqueue_latency_seconds_sum{namespace=\"\",pod=\"\",container=\"\",cgroup=\"/x\"} 1.5\n\
             kernsight_runqueue_latency_seconds_count{namespace=\"\",pod=\"\",container=\"\",cgroup=\"/x\"} 20\n\
             kernsight_cpu_wait_seconds_sum{namespace=\"ns\",pod=\"p\",container=\"c\",cgroup=\"\",reason=\"throttled\"} 3.6\n\
             kernsight_cpu_wait_seconds_sum{namespace=\"ns\",pod=\"p\",container=\"c\",cgroup=\"\",reason=\"contention\"} 0.52\n",
        );
        let key = ("ns".to_owned(), "p".to_owned(), "c".to_owned(), String::new());
        let host = (String::new(), String::new(), String::new(), "/x".to_owned());
        let value = |header: &str, key: &Workload| {
            let column = COLUMNS.iter().find(|c| c.header == header).unwrap();
            column.values(&before, &after, 2.0).get(key).copied()
        };
        assert_eq!(value("SYSCALLS/S", &key), Some(150.0));
        assert_eq!(value("THROTTLED%", &key), Some(25.0));
        assert_eq!(value("RUNQ_MS", &host), Some(50.0));
        // 1.6 s throttled and 20 ms contended waiting over 2 s.
        let close = |got: Option<f64>, want: f64| got.is_some_and(|v| (v - want).abs() < 1e-9);
        assert!(close(value("THROTTLED_MS/S", &key), 800.0), "{:?}", value("THROTTLED_MS/S", &key));
        assert!(close(value("CONTENDED_MS/S", &key), 10.0), "{:?}", value("CONTENDED_MS/S", &key));
        assert_eq!(value("THROTTLED_MS/S", &host), None);
        assert!(!COLUMNS.iter().find(|c| c.header == "NET_B/S").unwrap().available(&after));
        assert!(COLUMNS[0].available(&after));
        assert!(
            COLUMNS.iter().find(|c| c.header == "OOM_KILLS").unwrap().available(&after),
            "a zero that matters"
        );
    }

    #[test]
    fn headroom_reclaim_stalls_and_io_latency_between_two_scrapes() {
        // Two containers with a 64 MiB limit (one of them also under memory.high), one without a
        // limit; reclaim stalls of both kinds and I/O on two devices.
        let workload = |c: &str| format!("namespace=\"ns\",pod=\"p\",container=\"{c}\",cgroup=\"\"");
        let (a, b, free) = (workload("a"), workload("b"), workload("free"));
        let common = format!(
            "kernsight_container_memory_limit_bytes{{{a},limit=\"max\"}} 67108864\n\
             kernsight_container_memory_limit_bytes{{{a},limit=\"high\"}} 33554432\n\
             kernsight_container_memory_limit_bytes{{{b},limit=\"max\"}} 67108864\n\
             kernsight_container_memory_unreclaimable_bytes{{{b}}} 16777216\n\
             kernsight_container_memory_unreclaimable_bytes{{{free}}} 1048576\n\
             kernsight_memory_reclaim_stall_seconds_sum{{{free},kind=\"direct\"}} 0\n"
        );
        let before = parse(&format!(
            "{common}kernsight_container_memory_unreclaimable_bytes{{{a}}} 33554432\n\
             kernsight_memory_reclaim_stall_seconds_sum{{{a},kind=\"memcg\"}} 1\n\
             kernsight_memory_reclaim_stall_seconds_sum{{{a},kind=\"direct\"}} 0.25\n\
             kernsight_block_io_latency_seconds_sum{{{a},device=\"7:0\",device_name=\"loop0\",op=\"read\"}} 0.5\n\
             kernsight_block_io_latency_seconds_count{{{a},device=\"7:0\",device_name=\"loop0\",op=\"read\"}} 100\n\
             kernsight_block_io_latency_seconds_sum{{{a},device=\"8:0\",device_name=\"sda\",op=\"write\"}} 1\n\
             kernsight_block_io_latency_seconds_count{{{a},device=\"8:0\",device_name=\"sda\",op=\"write\"}} 50\n"
        ));
        let after = parse(&format!(
            "{common}kernsight_container_memory_unreclaimable_bytes{{{a}}} 50331648\n\
             kernsight_memory_reclaim_stall_seconds_sum{{{a},kind=\"memcg\"}} 1.3\n\
             kernsight_memory_reclaim_stall_seconds_sum{{{a},kind=\"direct\"}} 0.35\n\
             kernsight_block_io_latency_seconds_sum{{{a},device=\"7:0\",device_name=\"loop0\",op=\"read\"}} 0.8\n\
             kernsight_block_io_latency_seconds_count{{{a},device=\"7:0\",device_name=\"loop0\",op=\"read\"}} 200\n\
             kernsight_block_io_latency_seconds_sum{{{a},device=\"8:0\",device_name=\"sda\",op=\"write\"}} 1.9\n\
             kernsight_block_io_latency_seconds_count{{{a},device=\"8:0\",device_name=\"sda\",op=\"write\"}} 100\n"
        ));
        let key = |c: &str| ("ns".to_owned(), "p".to_owned(), c.to_owned(), String::new());
        let column = |header: &str| COLUMNS.iter().find(|c| c.header == header).unwrap();
        let value = |header: &str, c: &str| column(header).values(&before, &after, 2.0).get(&key(c)).copied();
        let close = |got: Option<f64>, want: f64| got.is_some_and(|v| (v - want).abs() < 1e-9);
        // 64 MiB limit, 48 MiB unreclaimable now (the scrape before does not count): 25 % left;
        // memory.high is not the limit the OOM killer acts at.
        assert!(close(value("HEADROOM%", "a"), 25.0), "{:?}", value("HEADROOM%", "a"));
        assert!(close(value("HEADROOM%", "b"), 75.0), "{:?}", value("HEADROOM%", "b"));
        assert_eq!(value("HEADROOM%", "free"), None, "no limit: `-`");
        // 0.3 s memcg and 0.1 s direct reclaim over 2 s.
        assert!(close(value("RECLAIM_MS/S", "a"), 200.0), "{:?}", value("RECLAIM_MS/S", "a"));
        assert_eq!(value("RECLAIM_MS/S", "b"), None);
        assert_eq!(value("RECLAIM_MS/S", "free"), Some(0.0));
        // 100 reads of 3 ms and 50 writes of 18 ms: (0.3 + 0.9) s over 150 requests.
        assert!(close(value("IO_LAT_MS", "a"), 8.0), "{:?}", value("IO_LAT_MS", "a"));
        for header in ["HEADROOM%", "RECLAIM_MS/S", "IO_LAT_MS"] {
            assert!(column(header).available(&after), "{header}");
            assert!(!column(header).available(&parse("kernsight_syscalls_total{cgroup=\"/x\"} 1\n")));
        }
        // The least headroom first, the container without a limit last.
        let snapshot = crate::top::Snapshot::new(&before, &after, 2.0, "headroom%");
        let order: Vec<&str> = snapshot.rows.iter().map(|(w, _)| w.2.as_str()).collect();
        assert_eq!(order, ["a", "b", "free"]);
    }
}
