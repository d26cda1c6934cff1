//! `kernsight top`: workloads ranked by what the agent measures (syscalls and errors per
//! second, CPU throttling and waits, memory headroom and reclaim stalls, block I/O latency,
//! network bytes, OOM kills), from two scrapes of a running agent's `/metrics`.

pub mod columns;

use std::collections::BTreeMap;

use crate::metrics::client::{self as scrape, Sample};
use columns::{COLUMNS, Workload};

/// One ranked table: the headers of the columns shown, and a row per workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub headers: Vec<&'static str>,
    pub rows: Vec<(Workload, Vec<Option<f64>>)>,
}

impl Snapshot {
    /// From scrapes `seconds` apart, sorted by the column `sort_by` (highest first).
    pub fn new(before: &[Sample], after: &[Sample], seconds: f64, sort_by: &str) -> Self {
        let shown: Vec<_> = COLUMNS.iter().filter(|c| c.available(after)).collect();
        let values: Vec<BTreeMap<Workload, f64>> =
            shown.iter().map(|c| c.values(before, after, seconds)).collect();
        let mut workloads: Vec<&Workload> = values.iter().flat_map(BTreeMap::keys).collect();
        workloads.sort();
        workloads.dedup();
        let sort = shown.iter().position(|c| c.header.eq_ignore_ascii_case(sort_by)).unwrap_or(0);
        let lowest_first = shown.get(sort).is_some_and(|c| c.lowest_first());
        let mut rows: Vec<(Workload, Vec<Option<f64>>)> = workloads
            .into_iter()
            .map(|w| (w.clone(), values.iter().map(|v| v.get(w).copied()).collect()))
            .collect();
        rows.sort_by(|a, b| {
            let (x, y) = (a.1.get(sort).copied().flatten(), b.1.get(sort).copied().flatten());
            // Rows without a value (`-`) go last either way.
            let order = if lowest_first {
                x.unwrap_or(f64::INFINITY).total_cmp(&y.unwrap_or(f64::INFINITY))
            } else {
                y.unwrap_or(-1.0).total_cmp(&x.unwrap_or(-1.0))
            };
            order.then_with(|| a.0.cmp(&b.0))
        });
        Self { headers: shown.iter().map(|c| c.header).collect(), rows }
    }

    /// An aligned table of the first `limit` rows; `pod_header` names the second column (`POD`,
    /// or `WORKLOAD` after [`by_workload`]).
    pub fn render(&self, limit: usize, pod_header: &str) -> String {
        let mut header = vec!["NAMESPACE".to_owned(), pod_header.to_owned(), "CONTAINER".to_owned()];
        header.extend(self.headers.iter().map(|h| (*h).to_owned()));
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .take(limit)
            .map(|((namespace, pod, container, cgroup), values)| {
                let dash = |s: &str| if s.is_empty() { "-".to_owned() } else { s.to_owned() };
                // Host processes have no container: their cgroup stands in its column.
                let who = if container.is_empty() { dash(cgroup) } else { container.clone() };
                let mut row = vec![dash(namespace), dash(pod), who];
                row.extend(values.iter().map(|v| v.map_or("-".to_owned(), format_value)));
                row
            })
            .collect();
        crate::trace::output::align(&header, &rows)
    }
}

fn format_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 { format!("{value:.0}") } else { format!("{value:.1}") }
}

/// The samples with each pod named by its workload (`Deployment/web`), so that the rows of a
/// workload's pods sum into one per container name. Samples without a workload keep their pod.
pub fn by_workload(mut samples: Vec<Sample>) -> Vec<Sample> {
    for sample in &mut samples {
        let owner = match (sample.labels.get("workload_kind"), sample.labels.get("workload")) {
            (Some(kind), Some(name)) if !name.is_empty() => format!("{kind}/{name}"),
            _ => continue,
        };
        sample.labels.insert("pod".to_owned(), owner);
    }
    samples
}

/// Parses a scrape body.
pub fn samples(body: &str) -> Vec<Sample> {
    scrape::parse(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_workloads_by_the_chosen_column() {
        let line = |cgroup: &str, syscall: &str, v: u32| {
            format!(
                "kernsight_syscalls_total{{namespace=\"\",pod=\"\",container=\"\",cgroup=\"{cgroup}\",syscall=\"{syscall}\"}} {v}\n"
            )
        };
        let before = samples(&(line("/a", "read", 0) + &line("/b", "read", 0)));
        let after = samples(&(line("/a", "read", 10) + &line("/b", "read", 40) + &line("/b", "write", 20)));
        let snapshot = Snapshot::new(&before, &after, 2.0, "syscalls/s");
        assert_eq!(snapshot.headers, vec!["SYSCALLS/S", "ERRORS/S", "THROTTLED%", "RUNQ_MS", "OOM_KILLS"]);
        assert_eq!(
            snapshot.render(10, "POD"),
            "NAMESPACE  POD  CONTAINER  SYSCALLS/S  ERRORS/S  THROTTLED%  RUNQ_MS  OOM_KILLS\n\
             -          -    /b                 30  -         -           -        -\n\
             -          -    /a                  5  -         -           -        -\n"
        );
        assert_eq!(snapshot.render(1, "POD").lines().count(), 2);
    }

    #[test]
    fn by_workload_sums_a_deployments_pods() {
        let line = |pod: &str, kind: &str, name: &str, v: u32| {
            format!(
                "kernsight_syscalls_total{{namespace=\"shop\",pod=\"{pod}\",container=\"nginx\",workload_kind=\"{kind}\",\
                 workload=\"{name}\",cgroup=\"\",syscall=\"read\"}} {v}\n"
            )
        };
        let before = line("web-1", "Deployment", "web", 0) + &line("web-2", "Deployment", "web", 0);
        let after = line("web-1", "Deployment", "web", 20)
            + &line("web-2", "Deployment", "web", 40)
            + &line("debug", "Pod", "debug", 2)
            + &line("podman-job", "", "", 4);
        let (before, after) = (by_workload(samples(&before)), by_workload(samples(&after)));
        let snapshot = Snapshot::new(&before, &after, 2.0, "syscalls/s");
        let table = snapshot.render(10, "WORKLOAD");
        let rows: Vec<&str> = table.lines().collect();
        assert!(rows[0].starts_with("NAMESPACE  WORKLOAD "), "{table}");
        let first: Vec<&str> = rows[1].split_whitespace().take(4).collect();
        assert_eq!(first, ["shop", "Deployment/web", "nginx", "30"], "both pods in one row: {table}");
        assert!(table.contains("podman-job"), "no workload: the pod stays: {table}");
        assert!(table.contains("Pod/debug"), "{table}");
        assert_eq!(rows.len(), 4, "{table}");
    }
}
