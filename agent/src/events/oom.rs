//! OOM kills as they happen: each kill from the kernel is decoded, named (cgroup id → path →
//! workload), logged at warn level with the victim's RSS by kind, and counted per cgroup for
//! `kernsight_oom_kills_total` and `kernsight_oom_victim_memory_bytes`.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use tracing::{debug, warn};

use crate::{
    bpf::{
        oom::{CgroupSource, OomKill, decode},
        rings::EventRing,
    },
    metadata::{cgroups::Tracker, identity::Resolver},
};

/// cgroups whose kills are remembered; past it, the one with the oldest last kill is forgotten.
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

/// Reports kills until the agent stops.
pub async fn follow_events(
    events: EventRing,
    kills: Arc<OomKills>,
    tracker: Arc<Tracker>,
    resolver: Arc<Resolver>,
) {
    events
        .follow(|record| match decode(record) {
            Ok(kill) => {
                report(&kills, &tracker, &resolver, kill);
                true
            }
            Err(err) => {
                debug!("skipped an OOM event: {err}");
                false
            }
        })
        .await;
}

fn report(kills: &OomKills, tracker: &Tracker, resolver: &Resolver, kill: OomKill) {
    // Kills are rare: naming (and at worst one walk of cgroupfs) here costs nothing.
    let path = tracker.path_of(kill.cgroup_id);
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
        "OOM kill: {} (pid {}) in {}: anon {:.1} MiB, file {:.1} MiB, shmem {:.1} MiB",
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
    );
    kills.record(path, kill);
}
