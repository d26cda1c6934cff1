//! OOM kills as they happen: each kill from the kernel is decoded, named (cgroup id → path →
//! workload), logged at warn level with the victim's RSS by kind and its cgroup's memory
//! headroom and reclaim stalls, and counted per cgroup for `kernsight_oom_kills_total` and
//! `kernsight_oom_victim_memory_bytes`.

use std::{
    collections::BTreeMap,
    fmt::Display,
    sync::{Arc, Mutex},
    time::Duration,
};

use kernsight_common::counters::LATENCY_SUM_BUCKET;
use tracing::{debug, warn};

use crate::{
    bpf::{
        Programs,
        memory_reclaim::ReclaimMaps,
        oom::{CgroupSource, OomKill, decode},
        rings::EventRing,
    },
    kernel::{
        mountinfo,
        resources::{self, CgroupDirs},
    },
    metadata::{cgroups::Tracker, identity::Resolver},
};

/// cgroups whose kills are remembered; past it, the one with the oldest last kill is forgotten.
/// Those of removed cgroups go before (`OomKills::forget`).
const MAX_CGROUPS: usize = 4096;

/// Kills of one cgroup since the agent started.
#[derive(Debug, Clone)]
pub struct CgroupKills {
    /// The cgroup's path when its first kill was seen (`cgroup_id:<id>` if it was unknown).
    pub path: String,
    pub kills: u64,
    /// The last victim in this cgroup.
    pub last: OomKill,
}

/// Kills by tagged cgroup id, shared by the event task and the collectors.
#[derive(Debug, Default)]
pub struct OomKills {
    by_cgroup: Mutex<BTreeMap<u64, CgroupKills>>,
}

impl OomKills {
    /// Forgets the kills of cgroups removed `grace` ago or more, as every per-cgroup series goes
    /// (`syscalls.forget_after_seconds`): a crash-looping pod's or a job's cgroups would otherwise
    /// stay exported, and their workloads named, until 4,096 cgroups had kills. Returns how many.
    pub fn forget(&self, gone_for: &mut dyn FnMut(u64) -> Option<Duration>, grace: Duration) -> usize {
        let mut by_cgroup = self.by_cgroup.lock().unwrap_or_else(|e| e.into_inner());
        let before = by_cgroup.len();
        by_cgroup.retain(|&id, _| gone_for(id).is_none_or(|gone| gone < grace));
        before - by_cgroup.len()
    }

    pub fn snapshot(&self) -> Vec<CgroupKills> {
        self.by_cgroup.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    fn record(&self, path: String, kill: OomKill) {
        let mut by_cgroup = self.by_cgroup.lock().unwrap_or_else(|e| e.into_inner());
        if !by_cgroup.contains_key(&kill.cgroup_id) && by_cgroup.len() >= MAX_CGROUPS {
            let oldest = by_cgroup.iter().min_by_key(|(_, k)| k.last.timestamp_ns).map(|(id, _)| *id);
            if let Some(id) = oldest {
                by_cgroup.remove(&id);
            }
        }
        let entry = by_cgroup.entry(kill.cgroup_id).or_insert_with(|| CgroupKills {
            path,
            kills: 0,
            last: kill.clone(),
        });
        entry.kills += 1;
        entry.last = kill;
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The victim cgroup's memory limit, what reclaim cannot free under it, and the reclaim stalls
/// its tasks went through: how close it ran to the limit, and what that cost, up to the kill.
#[derive(Debug, Default, PartialEq)]
struct MemoryAtKill {
    limit_bytes: Option<u64>,
    unreclaimable_bytes: Option<u64>,
    headroom_bytes: Option<u64>,
    /// Stall count and seconds, all kinds; `None` when the memory_reclaim family does not run.
    reclaim_stalls: Option<(u64, f64)>,
}

impl MemoryAtKill {
    /// Read when the agent handles the kill (the cgroup still exists: its tasks are being killed,
    /// not moved), from cgroupfs as `kernsight_container_memory_unreclaimable_bytes` is, and from
    /// the memory_reclaim family's map. The stall figures only grow, so they hold every stall
    /// up to the kill. The headroom is the cgroup's a few milliseconds after the kernel chose the
    /// victim: the victim's anonymous memory may already be reaped (its RSS at the kill is in
    /// the line beside it), so the headroom can read higher than it was just before the kill.
    /// A per-cgroup cache of earlier scrapes would cover containers only, and only as often as
    /// Prometheus scrapes; kills are rare, so reading here costs nothing on any hot path.
    fn read(programs: &Programs, path: &str, cgroup_id: u64) -> Self {
        let mounts = mountinfo::read().unwrap_or_default();
        let r = resources::read(&CgroupDirs::locate(&mounts, path));
        let reclaim_stalls = programs.family::<ReclaimMaps>().map(|maps| {
            let (mut stalls, mut nanos) = (0u64, 0u64);
            for (key, value) in maps.read_cgroup(cgroup_id) {
                // The log2 buckets count stalls; the sum bucket holds their total nanoseconds.
                if key.bucket == LATENCY_SUM_BUCKET {
                    nanos = nanos.saturating_add(value);
                } else {
                    stalls = stalls.saturating_add(value);
                }
            }
            (stalls, nanos as f64 / 1e9)
        });
        Self {
            limit_bytes: r.memory_max,
            unreclaimable_bytes: r.memory_unreclaimable,
            headroom_bytes: r.memory_headroom(),
            reclaim_stalls,
        }
    }
}

/// A value, or `-` when it is not known (no limit, no memory controller, family off).
fn or_dash(value: Option<impl Display>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Reports kills until the agent stops.
pub async fn follow_events(
    events: EventRing,
    kills: Arc<OomKills>,
    tracker: Arc<Tracker>,
    resolver: Arc<Resolver>,
    programs: Arc<Programs>,
) {
    events
        .follow(|record| match decode(record) {
            Ok(kill) => {
                report(&kills, &tracker, &resolver, &programs, kill);
                true
            }
            Err(err) => {
                debug!("skipped an OOM event: {err}");
                false
            }
        })
        .await;
}

fn report(kills: &OomKills, tracker: &Tracker, resolver: &Resolver, programs: &Programs, kill: OomKill) {
    // Kills are rare: naming (and at worst one walk of cgroupfs) here costs nothing.
    let path = tracker.path_of(kill.cgroup_id);
    let memory = MemoryAtKill::read(programs, &path, kill.cgroup_id);
    let workload = resolver.workload(&path);
    let whose = match kill.cgroup_source {
        CgroupSource::Victim => "victim",
    };
    warn!(
        pid = kill.pid,
        tgid = kill.tgid.unwrap_or_default(),
        comm = %kill.comm,
        uid = kill.uid,
        namespace = %workload.namespace,
        pod = %workload.pod,
        container = %workload.container,
        cgroup = %workload.cgroup,
        cgroup_of = %whose,
        anon_rss_bytes = kill.anon_rss_bytes,
        file_rss_bytes = kill.file_rss_bytes,
        shmem_rss_bytes = kill.shmem_rss_bytes,
        total_vm_bytes = kill.total_vm_bytes,
        pgtables_bytes = kill.pgtables_bytes,
        oom_score_adj = kill.oom_score_adj,
        invoker_pid = kill.current_pid,
        memory_limit_bytes = %or_dash(memory.limit_bytes),
        unreclaimable_bytes = %or_dash(memory.unreclaimable_bytes),
        headroom_bytes = %or_dash(memory.headroom_bytes),
        reclaim_stalls = %or_dash(memory.reclaim_stalls.map(|(count, _)| count)),
        reclaim_stall_seconds = %or_dash(memory.reclaim_stalls.map(|(_, seconds)| format!("{seconds:.6}"))),
        "OOM kill: {} (pid {}) in {}: anon {:.1} MiB, file {:.1} MiB, shmem {:.1} MiB; headroom {} MiB",
        kill.comm,
        kill.pid,
        if workload.container.is_empty() {
            path.clone()
        } else {
            format!("{}/{}/{}", workload.namespace, workload.pod, workload.container)
        },
        mib(kill.anon_rss_bytes),
        mib(kill.file_rss_bytes),
        mib(kill.shmem_rss_bytes),
        or_dash(memory.headroom_bytes.map(|h| format!("{:.1}", mib(h)))),
    );
    kills.record(path, kill);
}
