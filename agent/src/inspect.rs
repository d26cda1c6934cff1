//! One picture of a workload as the kernel sees it (`kernsight inspect`): its processes,
//! namespaces (and which are the host's), cgroup, limits and usage, memory by kind, OOM kills,
//! memory headroom before the OOM killer and reclaim stalls (from a running agent), throttling,
//! pressure, capabilities, seccomp, NoNewPrivs, and user-namespace mapping.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::{
    kernel::{
        mountinfo,
        names::capability_names,
        procfs::{self, NamespaceKind, Process},
        resources::{self, CgroupDirs},
    },
    metadata::{cgroup_path, local},
    metrics::client::{self as scrape, Sample},
};

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(
        "no process or container matches `{0}`: name a pid, a container id (or its first 12 characters), \
         or a container name as podman or `crictl ps` shows it"
    )]
    NotFound(String),
    #[error("`{target}` matches several containers ({matches}): give more of the id")]
    Ambiguous { target: String, matches: String },
}

/// What `inspect` reports.
#[derive(Debug, Serialize)]
pub struct Report {
    pub container_id: Option<String>,
    pub container_name: Option<String>,
    pub cgroup: String,
    pub processes: Vec<ProcessReport>,
    /// Per namespace kind: the inode, and whether it is the host's.
    pub namespaces: BTreeMap<&'static str, NamespaceReport>,
    pub resources: ResourcesReport,
    /// The workload's memory reclaim stalls as a running agent counts them; `None` until
    /// [`reclaim_stalls`] asked one.
    pub reclaim_stalls: Option<ReclaimStalls>,
    /// The cgroup of the memory controller (v1 hierarchies give a host process one of its own):
    /// where `resources` read memory from, and the `cgroup` label of a host process's series.
    #[serde(skip)]
    pub memory_cgroup: String,
}

/// Reclaim stalls of the workload since the agent started, from its
/// `kernsight_memory_reclaim_stall_seconds` histogram (`inspect` has no kernel maps of its own).
#[derive(Debug, Serialize, PartialEq)]
pub struct ReclaimStalls {
    /// The agent asked (`HOST:PORT`).
    pub agent: String,
    /// Why no figures: no agent answered, or it does not export the family.
    pub error: Option<String>,
    /// By kind (`memcg`: the cgroup at its limit; `direct`: the node short of memory).
    pub by_kind: BTreeMap<String, StallFigures>,
}

#[derive(Debug, Default, Serialize, PartialEq)]
pub struct StallFigures {
    pub stalls: u64,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct ProcessReport {
    pub pid: u32,
    pub ppid: u32,
    pub name: String,
    /// The pid inside the process's own pid namespace.
    pub pid_in_namespace: Option<u32>,
    pub uid: u32,
    pub gid: u32,
    /// `/proc/<pid>/uid_map`: how the user namespace maps uids ("0 0 4294967295": not remapped).
    pub uid_map: String,
    pub capabilities: Capabilities,
    /// disabled, strict or filter.
    pub seccomp: &'static str,
    pub seccomp_filters: u32,
    pub no_new_privs: bool,
}

#[derive(Debug, Serialize)]
pub struct Capabilities {
    pub effective: Vec<String>,
    pub permitted: Vec<String>,
    pub bounding: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct NamespaceReport {
    pub inode: Option<u64>,
    pub host: bool,
}

#[derive(Debug, Serialize)]
pub struct ResourcesReport {
    pub memory_usage_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub memory_high_bytes: Option<u64>,
    /// What reclaim cannot free without swap, computed as `kernsight_container_memory_unreclaimable_bytes` is.
    pub memory_unreclaimable_bytes: Option<u64>,
    /// The limit minus the unreclaimable memory: what the kernel can still free before the OOM
    /// killer (0 when the unreclaimable memory already fills the limit). `None` without a limit.
    pub memory_headroom_bytes: Option<u64>,
    /// The headroom as a share of the limit, 0 to 1.
    pub memory_headroom_share: Option<f64>,
    pub memory_bytes: BTreeMap<&'static str, u64>,
    pub memory_events: BTreeMap<&'static str, u64>,
    pub cpu_usage_seconds: Option<f64>,
    pub cpu_quota_seconds: Option<f64>,
    pub cpu_period_seconds: Option<f64>,
    pub cpu_periods: Option<u64>,
    pub cpu_throttled_periods: Option<u64>,
    pub cpu_throttled_seconds: Option<f64>,
    pub pids: Option<u64>,
    pub pids_limit: Option<u64>,
    /// "cpu some" → total stall seconds.
    pub pressure_stall_seconds: BTreeMap<String, f64>,
}

/// Finds the target: a pid, a container id or its prefix, or a container name (podman and
/// CRI-O's conmon), and gathers its report from `proc_root`.
pub fn inspect(proc_root: &Path, target: &str) -> Result<Report, InspectError> {
    let all: Vec<Process> = procfs::list_pids(proc_root)
        .into_iter()
        .filter_map(|pid| procfs::read_process(proc_root, pid).ok())
        .collect();
    let container_of = |process: &Process| {
        process
            .cgroups
            .iter()
            .find_map(|line| cgroup_path::parse(&line.path).map(|c| (c.container_id, line.path.clone())))
    };

    let (container_id, members): (Option<String>, Vec<&Process>) = if let Ok(pid) = target.parse::<u32>() {
        let process =
            all.iter().find(|p| p.pid == pid).ok_or_else(|| InspectError::NotFound(target.into()))?;
        match container_of(process) {
            Some((id, _)) => (
                Some(id.clone()),
                all.iter().filter(|p| container_of(p).is_some_and(|(c, _)| c == id)).collect(),
            ),
            None => (None, vec![process]),
        }
    } else {
        let names = local::conmon_names(proc_root);
        let mut ids: Vec<String> = all.iter().filter_map(|p| container_of(p).map(|(id, _)| id)).collect();
        ids.sort();
        ids.dedup();
        let matches: Vec<&String> = ids
            .iter()
            .filter(|id| id.starts_with(target) || names.get(*id).is_some_and(|name| name == target))
            .collect();
        match matches.as_slice() {
            [] => return Err(InspectError::NotFound(target.into())),
            [id] => {
                let id = (*id).clone();
                let members = all.iter().filter(|p| container_of(p).is_some_and(|(c, _)| c == id)).collect();
                (Some(id), members)
            }
            many => {
                let matches = many.iter().map(|id| id.get(..12).unwrap_or(id)).collect::<Vec<_>>().join(", ");
                return Err(InspectError::Ambiguous { target: target.into(), matches });
            }
        }
    };
    let first = members.first().ok_or_else(|| InspectError::NotFound(target.into()))?;
    let cgroup = container_of(first)
        .map(|(_, path)| path)
        .or_else(|| first.cgroups.iter().find(|l| l.hierarchy_id == 0).map(|l| l.path.clone()))
        .unwrap_or_else(|| "/".into());
    let container_name = container_id.as_ref().and_then(|id| local::conmon_names(proc_root).get(id).cloned());

    // The host's namespaces are pid 1's; where pid 1's cannot be read (a sandboxed init), those
    // of the process running `inspect` on the node stand in.
    let readable = |ns: &procfs::Namespaces| NamespaceKind::ALL.iter().any(|k| ns.get(*k).is_some());
    let host = procfs::host_namespaces(proc_root).ok().filter(readable).or_else(|| {
        procfs::read_process(proc_root, std::process::id()).ok().map(|me| me.namespaces).filter(readable)
    });
    let namespaces = NamespaceKind::ALL
        .into_iter()
        .map(|kind| {
            let inode = first.namespaces.get(kind);
            let is_host = host.as_ref().is_some_and(|h| inode.is_some() && h.get(kind) == inode);
            (kind.name(), NamespaceReport { inode, host: is_host })
        })
        .collect();

    let mounts = mountinfo::read().unwrap_or_default();
    // A host process on v1 hierarchies may sit in a memory cgroup other than its unified one.
    let memory_cgroup = match &container_id {
        Some(_) => cgroup.clone(),
        None => first
            .cgroups
            .iter()
            .find(|l| l.controllers.iter().any(|c| c == "memory"))
            .map_or_else(|| cgroup.clone(), |l| l.path.clone()),
    };
    let dirs = match (CgroupDirs::locate(&mounts, &cgroup), memory_cgroup != cgroup) {
        (CgroupDirs::V1 { cpu, cpuacct, pids, blkio, .. }, true) => {
            let memory = match CgroupDirs::locate(&mounts, &memory_cgroup) {
                CgroupDirs::V1 { memory, .. } => memory,
                CgroupDirs::V2(_) => None,
            };
            CgroupDirs::V1 { memory, cpu, cpuacct, pids, blkio }
        }
        (dirs, _) => dirs,
    };
    let r = resources::read(&dirs);
    let headroom = r.memory_headroom();
    let resources = ResourcesReport {
        memory_usage_bytes: r.memory_current,
        memory_limit_bytes: r.memory_max,
        memory_high_bytes: r.memory_high,
        memory_unreclaimable_bytes: r.memory_unreclaimable,
        memory_headroom_bytes: headroom,
        memory_headroom_share: headroom
            .zip(r.memory_max)
            .filter(|(_, limit)| *limit > 0)
            .map(|(h, limit)| h as f64 / limit as f64),
        memory_bytes: r.memory_by_kind,
        memory_events: r.memory_events,
        cpu_usage_seconds: r.cpu_usage_seconds,
        cpu_quota_seconds: r.cpu_quota_seconds,
        cpu_period_seconds: r.cpu_period_seconds,
        cpu_periods: r.cpu_periods,
        cpu_throttled_periods: r.cpu_throttled_periods,
        cpu_throttled_seconds: r.cpu_throttled_seconds,
        pids: r.pids_current,
        pids_limit: r.pids_max,
        pressure_stall_seconds: r
            .pressure
            .into_iter()
            .map(|((res, kind), s)| (format!("{res} {kind}"), s))
            .collect(),
    };

    let mut processes: Vec<ProcessReport> = members.iter().map(|p| process_report(proc_root, p)).collect();
    processes.sort_by_key(|p| p.pid);
    Ok(Report {
        container_id,
        container_name,
        cgroup,
        processes,
        namespaces,
        resources,
        reclaim_stalls: None,
        memory_cgroup,
    })
}

const RECLAIM_STALLS: &str = "kernsight_memory_reclaim_stall_seconds";

/// The workload's reclaim stalls from the agent at `address`: its series are those of the
/// container (by `container_id`, else the `container` label: short id or name) or, for a host
/// process, of its memory cgroup.
pub fn reclaim_stalls(report: &Report, address: &str) -> ReclaimStalls {
    let (by_kind, error) = match scrape::fetch(address) {
        Ok(body) => {
            let samples = scrape::parse(&body);
            let exported = samples.iter().any(|s| s.name.starts_with(RECLAIM_STALLS))
                || samples.iter().any(|s| {
                    s.name == "kernsight_probe_attached"
                        && s.labels.get("probe").is_some_and(|p| p == "memory_reclaim")
                        && s.value == 1.0
                });
            let error = (!exported).then(|| {
                format!("the agent at {address} does not export {RECLAIM_STALLS} (memory_reclaim off)")
            });
            (stalls_of(report, &samples), error)
        }
        Err(scrape::ScrapeError::Tls(_)) => (
            BTreeMap::new(),
            Some(format!(
                "the agent at {address} serves TLS, which inspect does not speak: name its plain-HTTP port"
            )),
        ),
        Err(_) => (BTreeMap::new(), Some(format!("no agent answered at {address}"))),
    };
    ReclaimStalls { agent: address.to_owned(), error, by_kind }
}

fn stalls_of(report: &Report, samples: &[Sample]) -> BTreeMap<String, StallFigures> {
    let short = report.container_id.as_deref().map(|id| id.get(..12).unwrap_or(id));
    let ours = |s: &Sample| {
        let label = |name: &str| s.labels.get(name).map(String::as_str);
        match (&report.container_id, label("container_id")) {
            (Some(id), Some(labelled)) => labelled == id,
            (Some(_), None) => {
                let container = label("container").unwrap_or_default();
                !container.is_empty()
                    && (Some(container) == short || Some(container) == report.container_name.as_deref())
            }
            (None, _) => {
                label("container").unwrap_or_default().is_empty()
                    && label("cgroup") == Some(&report.memory_cgroup)
            }
        }
    };
    let mut by_kind: BTreeMap<String, StallFigures> = BTreeMap::new();
    for sample in samples.iter().filter(|s| ours(s)) {
        let Some(kind) = sample.labels.get("kind") else { continue };
        let figures = by_kind.entry(kind.clone()).or_default();
        match sample.name.strip_prefix(RECLAIM_STALLS) {
            Some("_count") => figures.stalls += sample.value as u64,
            Some("_sum") => figures.seconds += sample.value,
            _ => {}
        }
    }
    by_kind.retain(|_, f| f.stalls > 0 || f.seconds > 0.0);
    by_kind
}

fn process_report(proc_root: &Path, process: &Process) -> ProcessReport {
    let status = &process.status;
    let uid_map =
        std::fs::read_to_string(PathBuf::from(proc_root).join(process.pid.to_string()).join("uid_map"))
            .map(|map| map.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
    ProcessReport {
        pid: process.pid,
        ppid: status.ppid,
        name: status.name.clone(),
        pid_in_namespace: status.ns_pid.last().copied(),
        uid: status.uid[1],
        gid: status.gid[1],
        uid_map,
        capabilities: Capabilities {
            effective: capability_names(status.cap_eff),
            permitted: capability_names(status.cap_prm),
            bounding: capability_names(status.cap_bnd),
        },
        seccomp: match status.seccomp {
            0 => "disabled",
            1 => "strict",
            _ => "filter",
        },
        seccomp_filters: status.seccomp_filters,
        no_new_privs: status.no_new_privs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reclaim_stalls_are_the_workloads_own_series() {
        let mut report = inspect(Path::new("/proc"), &std::process::id().to_string()).unwrap();
        report.memory_cgroup = "/mine".into();
        let samples = scrape::parse(
            "kernsight_memory_reclaim_stall_seconds_count{namespace=\"\",pod=\"\",container=\"\",cgroup=\"/mine\",kind=\"memcg\"} 7\n\
             kernsight_memory_reclaim_stall_seconds_sum{namespace=\"\",pod=\"\",container=\"\",cgroup=\"/mine\",kind=\"memcg\"} 0.5\n\
             kernsight_memory_reclaim_stall_seconds_bucket{namespace=\"\",pod=\"\",container=\"\",cgroup=\"/mine\",kind=\"memcg\",le=\"+Inf\"} 7\n\
             kernsight_memory_reclaim_stall_seconds_count{namespace=\"\",pod=\"\",container=\"\",cgroup=\"/mine\",kind=\"direct\"} 0\n\
             kernsight_memory_reclaim_stall_seconds_count{namespace=\"\",pod=\"\",container=\"\",cgroup=\"/other\",kind=\"memcg\"} 3\n\
             kernsight_memory_reclaim_stall_seconds_count{namespace=\"ns\",pod=\"p\",container=\"c\",cgroup=\"\",kind=\"memcg\"} 2\n",
        );
        let stalls = stalls_of(&report, &samples);
        assert_eq!(stalls.len(), 1, "{stalls:?}");
        assert_eq!(stalls["memcg"], StallFigures { stalls: 7, seconds: 0.5 });
        // A container: by its name when the agent has no container_id label.
        report.container_id = Some("0123456789abcdef".into());
        report.container_name = Some("c".into());
        assert_eq!(stalls_of(&report, &samples)["memcg"].stalls, 2);
        let missing = reclaim_stalls(&report, "127.0.0.1:1");
        assert_eq!(missing.error.as_deref(), Some("no agent answered at 127.0.0.1:1"));
    }

    #[test]
    fn names_capabilities_by_bit() {
        assert_eq!(capability_names(1 << 10), vec!["CAP_NET_BIND_SERVICE".to_owned()]);
        assert_eq!(capability_names(0), Vec::<String>::new());
        let full = capability_names(u64::MAX);
        assert!(full.contains(&"CAP_SYS_ADMIN".to_owned()) && full.contains(&"CAP_BPF".to_owned()));
    }

    #[test]
    fn inspects_this_process_by_pid() {
        let me = std::process::id();
        let report = inspect(Path::new("/proc"), &me.to_string()).unwrap();
        assert_eq!(report.processes.len(), 1);
        assert_eq!(report.processes[0].pid, me);
        assert!(report.namespaces.contains_key("net"));
        assert!(matches!(
            inspect(Path::new("/proc"), "no-such-container-xyz"),
            Err(InspectError::NotFound(_))
        ));
    }
}
