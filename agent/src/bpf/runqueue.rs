//! The `runqueue` family: `ks_sched_wakeup`, `ks_sched_wakeup_new` and `ks_sched_switch`
//! measure run-queue latency per cgroup, split by why the thread waited (its group throttled,
//! or another task on the CPU) where the kernel's BTF has CFS bandwidth control, and how long
//! each throttle episode lasted where it also has `cfs_rq.throttled_clock_self_time` (6.6+).
//! Waits are timed by the run queue's own clock (`rq.clock`, reached through `se.cfs_rq`) where
//! the kernel has group scheduling, else by `bpf_ktime_get_ns`.

use std::time::Duration;

use aya::EbpfLoader;
use kernsight_common::{
    counters::{LATENCY_BUCKETS, LatencyCell, OVERFLOW_CGROUP_ID, map_full},
    runqueue::{
        CFS_RQ_RQ_OFFSET_GLOBAL, CFS_RQ_THROTTLE_COUNT_OFFSET_GLOBAL,
        CFS_RQ_THROTTLED_SELF_TIME_OFFSET_GLOBAL, RQ_CLOCK_GLOBAL, RQ_CLOCK_OFFSET_GLOBAL, RUNQ_LATENCY_MAP,
        RUNQ_START_MAP, RunqKey, SWITCH_HAS_PREV_STATE_GLOBAL, TASK_SE_CFS_RQ_OFFSET_GLOBAL,
        TASK_STATE_OFFSET_GLOBAL, THROTTLE_EPISODE, THROTTLE_EPISODES_GLOBAL, THROTTLE_SEEN_MAP,
        WAIT_CONTENTION, WAIT_REASON_GLOBAL, WAIT_THROTTLED,
    },
};

use super::{
    counters::{CgroupCounters, Row},
    facts::KernelFacts,
    family::{AttachContext, Attached, Family, MapRow, attached_any},
    features::{Implementation, Object},
    load_and_attach,
};
use crate::config::Config;

pub const RUNQUEUE_PROBE: &str = "runqueue";
const RUNQUEUE_PROGRAMS: [(&str, &str); 3] = [
    ("ks_sched_wakeup", "sched_wakeup"),
    ("ks_sched_wakeup_new", "sched_wakeup_new"),
    ("ks_sched_switch", "sched_switch"),
];

/// Run-queue latency per cgroup.
pub struct Runqueue;

impl Family for Runqueue {
    fn name(&self) -> &'static str {
        RUNQUEUE_PROBE
    }

    fn programs(&self, _config: &Config, _facts: &KernelFacts) -> Vec<&'static str> {
        RUNQUEUE_PROGRAMS.iter().map(|(p, _)| *p).collect()
    }

    fn enabled(&self, config: &Config) -> bool {
        config.sched.runqueue_latency
    }

    fn set_enabled(&self, config: &mut Config, on: bool) {
        config.sched.runqueue_latency = on;
    }

    fn unsupported(&self, facts: &KernelFacts, _config: &Config) -> Option<String> {
        facts.need_task().err().or_else(|| match (&facts.task_state_offset, facts.switch_has_prev_state) {
            (Err(err), 0) => Some(format!("sched_switch has no prev_state argument and {err}")),
            _ => None,
        })
    }

    fn implementation(&self, facts: &KernelFacts, config: &Config) -> Implementation {
        let no_episodes = match (split_by_reason(facts, config), &facts.throttle_episode_offset) {
            (true, Err(err)) => Some(format!("throttle episodes are not measured ({err}, Linux 6.6+)")),
            _ => None,
        };
        let no_rq_clock = facts.rq_clock_offsets.as_ref().err().map(|err| {
            format!("waits are timed by bpf_ktime_get_ns, not the run queue's clock ({err}: CONFIG_FAIR_GROUP_SCHED)")
        });
        let limits: Vec<String> = no_episodes.into_iter().chain(no_rq_clock).collect();
        match (&facts.object, limits.is_empty()) {
            (Object::Full | Object::HashedSlots { .. }, true) => Implementation::standard("task_storage"),
            (Object::Full | Object::HashedSlots { .. }, false) => {
                Implementation::fallback("task_storage", limits.join("; "))
            }
            (Object::Fallback { why }, _) => Implementation::fallback(
                "thread_id_lru",
                std::iter::once(format!("runnable-since times in an LRU hash keyed by thread id: {why}"))
                    .chain(limits)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        }
    }

    fn configure<'a>(&self, loader: &mut EbpfLoader<'a>, facts: &'a KernelFacts, config: &Config) {
        loader.override_global(SWITCH_HAS_PREV_STATE_GLOBAL, &facts.switch_has_prev_state, true);
        if let Ok(offset) = &facts.task_state_offset {
            loader.override_global(TASK_STATE_OFFSET_GLOBAL, offset, true);
        }
        if let Ok((se_cfs_rq, cfs_rq_rq, rq_clock)) = &facts.rq_clock_offsets {
            loader
                .override_global(RQ_CLOCK_GLOBAL, &1u32, true)
                .override_global(TASK_SE_CFS_RQ_OFFSET_GLOBAL, se_cfs_rq, true)
                .override_global(CFS_RQ_RQ_OFFSET_GLOBAL, cfs_rq_rq, true)
                .override_global(RQ_CLOCK_OFFSET_GLOBAL, rq_clock, true);
        }
        if config.sched.wait_reason
            && let Ok((se_cfs_rq, throttle_count)) = &facts.wait_reason_offsets
        {
            loader
                .override_global(WAIT_REASON_GLOBAL, &1u32, true)
                .override_global(TASK_SE_CFS_RQ_OFFSET_GLOBAL, se_cfs_rq, true)
                .override_global(CFS_RQ_THROTTLE_COUNT_OFFSET_GLOBAL, throttle_count, true);
            if let Ok(self_time) = &facts.throttle_episode_offset {
                loader.override_global(THROTTLE_EPISODES_GLOBAL, &1u32, true).override_global(
                    CFS_RQ_THROTTLED_SELF_TIME_OFFSET_GLOBAL,
                    self_time,
                    true,
                );
            }
        }
    }

    fn maps(&self) -> &'static [&'static str] {
        &[RUNQ_LATENCY_MAP, RUNQ_START_MAP, THROTTLE_SEEN_MAP]
    }

    fn map_entries(&self, config: &Config) -> Vec<(&'static str, u32)> {
        vec![(RUNQ_LATENCY_MAP, config.sched.runqueue_max_entries)]
    }

    fn idle_maps(&self, config: &Config) -> Vec<&'static str> {
        if config.sched.wait_reason { Vec::new() } else { vec![THROTTLE_SEEN_MAP] }
    }

    fn pinned_maps(&self) -> &'static [&'static str] {
        &[RUNQ_LATENCY_MAP]
    }

    fn bounds(&self) -> &'static [(&'static str, u32)] {
        &[(RUNQ_LATENCY_MAP, map_full::RUNQ_LATENCY), (RUNQ_START_MAP, map_full::RUNQ_START)]
    }

    fn attach(&self, cx: &mut AttachContext<'_>) -> anyhow::Result<Box<dyn Attached>> {
        let overflow = [WAIT_CONTENTION, WAIT_THROTTLED, THROTTLE_EPISODE].into_iter().flat_map(|reason| {
            (0..LATENCY_BUCKETS).map(move |bucket| RunqKey { cgroup_id: OVERFLOW_CGROUP_ID, bucket, reason })
        });
        let latency =
            CgroupCounters::take(cx.ebpf, RUNQ_LATENCY_MAP, cx.config.sched.runqueue_max_entries, overflow)?;
        let by_reason = split_by_reason(cx.facts, cx.config);
        if let (true, Err(err)) = (cx.config.sched.wait_reason, &cx.facts.wait_reason_offsets) {
            tracing::warn!(
                "runqueue: waits are not split into throttled and contention (kernsight_cpu_wait_seconds is not exported): the kernel's BTF lacks CFS bandwidth control ({err})"
            );
        }
        let episodes = by_reason && cx.facts.throttle_episode_offset.is_ok();
        if let (true, Err(err)) = (by_reason, &cx.facts.throttle_episode_offset) {
            tracing::info!(
                "runqueue: throttle episodes are not measured (kernsight_cpu_throttle_episode_seconds is not exported): {err} (Linux 6.6+); throttled waits are"
            );
        }
        // sched_switch last: it consumes what the wakeups record.
        load_and_attach(cx.ebpf, cx.btf, &RUNQUEUE_PROGRAMS)?;
        Ok(Box::new(RunqueueMaps { latency, by_reason, episodes }))
    }
}

/// The maps of the attached `runqueue` family.
pub struct RunqueueMaps {
    latency: CgroupCounters<RunqKey, LatencyCell>,
    /// Whether waits carry their reason (`sched.wait_reason`, and the kernel has CFS bandwidth
    /// control in its BTF).
    pub by_reason: bool,
    /// Whether throttle episodes are measured (`by_reason`, and the kernel's BTF has
    /// `cfs_rq.throttled_clock_self_time`).
    pub episodes: bool,
}

/// Whether waits carry their reason: `sched.wait_reason`, and the kernel's BTF has CFS
/// bandwidth control.
fn split_by_reason(facts: &KernelFacts, config: &Config) -> bool {
    config.sched.wait_reason && facts.wait_reason_offsets.is_ok()
}

impl RunqueueMaps {
    /// Switches-in and the sum of their waits per (cgroup, log2 bucket, reason); throttle
    /// episodes under `THROTTLE_EPISODE`.
    pub fn read(&self) -> (Vec<Row<RunqKey, LatencyCell>>, u64) {
        self.latency.read()
    }
}

impl Attached for RunqueueMaps {
    attached_any!();

    fn map_rows(&self) -> Vec<MapRow> {
        vec![self.latency.map_row()]
    }

    fn recycle(&mut self, gone_for: &mut dyn FnMut(u64) -> Option<Duration>, grace: Duration) -> usize {
        self.latency.recycle(gone_for, grace)
    }
}
