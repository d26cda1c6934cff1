//! OOM kills as they happen: each kill from the kernel is decoded, named (cgroup id → path →
//! workload), logged at warn level with the victim's RSS by kind and its cgroup's memory
//! headroom and reclaim stalls, and counted per cgroup for `kernsight_oom_kills_total` and
//! `kernsight_oom_victim_memory_bytes`.

use std::{fmt::Display, sync::Arc};

use kernsight_common::counters::LATENCY_SUM_BUCKET;
use tracing::{debug, warn};

use crate::{
    bpf::{
        Programs,
        memory_reclaim::ReclaimMaps,
        oom::{CgroupSource, OomKill, OomKills, decode},
        rings::EventRing,
    },
    kernel::{
        mountinfo,
        resources::{self, CgroupDirs},
    },
    metadata::{cgroups::Tracker, identity::Resolver},
};

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
