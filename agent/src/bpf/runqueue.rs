//! The `runqueue` family: `ks_sched_wakeup`, `ks_sched_wakeup_new` and `ks_sched_switch`
//! measure run-queue latency per cgroup, split by why the thread waited (its group throttled,
//! or another task on the CPU) where the kernel's BTF has CFS bandwidth control, and how long
//! each throttle episode lasted where it also has `cfs_rq.throttled_clock_self_time` (6.6+).
//! Waits are timed by the run queue's own clock (`rq.clock`, reached through `se.cfs_rq`) where
//! the kernel has group scheduling, else by `bpf_ktime_get_ns`. Where the scheduler keeps its
//! own account of waits (`sched_info.last_queued`) and `sched.wait_start` is `scheduler`, a
//! wait begins where that account says, so only `sched_switch` runs a program per wait; the
//! wakeup programs then run only to decide the reason, and are not attached without it, nor
//! where the kernel throttles per task (6.18+), where every throttled wait begins at a
//! switch-out (`reason_needs_wakeups`).

use std::time::Duration;

use aya::EbpfLoader;
use kernsight_common::{
    counters::{LATENCY_BUCKETS, LatencyCell, OVERFLOW_CGROUP_ID, map_full},
    runqueue::{
        CFS_RQ_RQ_OFFSET_GLOBAL, CFS_RQ_THROTTLE_COUNT_OFFSET_GLOBAL,
        CFS_RQ_THROTTLED_SELF_TIME_OFFSET_GLOBAL, RQ_CLOCK_GLOBAL, RQ_CLOCK_OFFSET_GLOBAL, RUNQ_LATENCY_MAP,
        RUNQ_START_MAP, RunqKey, SCHED_INFO_GLOBAL, SWITCH_HAS_PREV_STATE_GLOBAL,
        TASK_LAST_QUEUED_OFFSET_GLOBAL, TASK_SE_CFS_RQ_OFFSET_GLOBAL, TASK_STATE_OFFSET_GLOBAL,
        THROTTLE_EPISODE, THROTTLE_EPISODES_GLOBAL, THROTTLE_SEEN_MAP, WAIT_CONTENTION, WAIT_REASON_GLOBAL,
        WAIT_THROTTLED,
    },
};

use super::{
    counters::{CgroupCounters, Row},
    facts::KernelFacts,
    family::{AttachContext, Attached, Family, MapRow, attached_any},
    features::{Implementation, Object},
    load_and_attach,
};
use crate::{
    config::{Config, WaitStart},
    kernel::btf::{Btf, BtfError},
};

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

    fn programs(&self, config: &Config, facts: &KernelFacts) -> Vec<&'static str> {
        attached_programs(facts, config).iter().map(|(p, _)| *p).collect()
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
        let no_sched_info = match (config.sched.wait_start, scheduler_wait_start(facts)) {
            (WaitStart::Scheduler, Err(err)) => Some(format!(
                "waits are stamped by a program on every wakeup, not read from the scheduler's account ({err})"
            )),
            _ => None,
        };
        let limits: Vec<String> = no_episodes.into_iter().chain(no_rq_clock).chain(no_sched_info).collect();
        // Where each wait's start is read: the scheduler's account, or the stamps of the wakeup
        // programs in the task or, without task storage, in an LRU hash by thread id.
        let at_scheduler = starts_at_scheduler(facts, config);
        let name = match (at_scheduler, &facts.object) {
            (true, _) => "sched_info",
            (false, Object::Fallback { .. }) => "thread_id_lru",
            (false, _) => "task_storage",
        };
        match (&facts.object, limits.is_empty()) {
            (Object::Full | Object::HashedSlots { .. }, true) => Implementation::standard(name),
            (Object::Full | Object::HashedSlots { .. }, false) => {
                Implementation::fallback(name, limits.join("; "))
            }
            (Object::Fallback { why }, _) => Implementation::fallback(
                name,
                std::iter::once(format!(
                    "{} stamped in an LRU hash keyed by thread id: {why}",
                    if at_scheduler { "throttled waits are" } else { "waits are" }
                ))
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
        if starts_at_scheduler(facts, config)
            && let Ok(last_queued) = &facts.last_queued_offset
        {
            loader.override_global(SCHED_INFO_GLOBAL, &1u32, true).override_global(
                TASK_LAST_QUEUED_OFFSET_GLOBAL,
                last_queued,
                true,
            );
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
        load_and_attach(cx.ebpf, cx.btf, attached_programs(cx.facts, cx.config))?;
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

/// The programs attached: all three, but `sched_switch` alone where the scheduler's account
/// says when each wait began and no reason is decided at a wakeup.
fn attached_programs(facts: &KernelFacts, config: &Config) -> &'static [(&'static str, &'static str)] {
    if starts_at_scheduler(facts, config) && !reason_needs_wakeups(facts, config) {
        &RUNQUEUE_PROGRAMS[2..]
    } else {
        &RUNQUEUE_PROGRAMS
    }
}

/// Whether the wait reason takes the wakeup programs: it is split, and a wait can begin
/// throttled at a wakeup. Where the kernel throttles per task (6.18+), a task woken into a
/// throttled group is queued and picked like any other, runs its way back to user space, and
/// only there is dequeued and switched out, still runnable: `ks_sched_switch` sees every
/// throttled wait begin.
fn reason_needs_wakeups(facts: &KernelFacts, config: &Config) -> bool {
    split_by_reason(facts, config) && !facts.throttles_per_task
}

/// Whether a wait begins where the scheduler's own account says (`sched.wait_start`, and the
/// kernel keeps that account by the clock the programs read).
fn starts_at_scheduler(facts: &KernelFacts, config: &Config) -> bool {
    config.sched.wait_start == WaitStart::Scheduler && scheduler_wait_start(facts).is_ok()
}

/// The offset of `sched_info.last_queued` in `task_struct` where the programs can take a
/// wait's start from it: it is stamped by the run queue's clock, so the programs must read that
/// clock too (the other, `bpf_ktime_get_ns`, has another origin).
fn scheduler_wait_start(facts: &KernelFacts) -> Result<u32, String> {
    match (&facts.last_queued_offset, &facts.rq_clock_offsets) {
        (Ok(offset), Ok(_)) => Ok(*offset),
        (Err(err), _) => Err(err.clone()),
        (Ok(_), Err(err)) => Err(format!("the run queue's clock cannot be read: {err}")),
    }
}

/// `task_struct.sched_info.last_queued`, if the scheduler keeps it: the member exists with
/// CONFIG_SCHED_INFO, and the account is live if `schedstat` (the agent's own, a file of three
/// numbers: time on the CPU, time waiting, times switched in) counts the agent's own switches.
/// Before 5.14 a kernel with CONFIG_TASK_DELAY_ACCT but not CONFIG_SCHEDSTATS keeps it only
/// while delay accounting is on; such a kernel reports zeros there otherwise.
pub(super) fn last_queued_offset(
    btf: Result<&Btf, &BtfError>,
    schedstat: &std::path::Path,
) -> Result<u32, String> {
    let btf = btf.map_err(|err| format!("cannot read the kernel's BTF: {err}"))?;
    let member =
        |name, member| btf.member_offset(name, member).map_err(|err| format!("{err} (CONFIG_SCHED_INFO)"));
    let offset = member("task_struct", "sched_info")? + member("sched_info", "last_queued")?;
    let text = std::fs::read_to_string(schedstat)
        .map_err(|err| format!("cannot read {}: {err}", schedstat.display()))?;
    match text.split_whitespace().nth(2).and_then(|count| count.parse::<u64>().ok()) {
        Some(switches) if switches > 0 => Ok(offset),
        _ => Err(format!(
            "{} counts no switch of the agent ({:?}): the scheduler keeps no account of waits (CONFIG_SCHEDSTATS off and delay accounting off)",
            schedstat.display(),
            text.trim()
        )),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wakeup_programs_run_only_where_a_wait_can_begin_throttled_at_a_wakeup() {
        let unread = BtfError::Read("no BTF".into());
        let mut facts = KernelFacts::read(Err(&unread), Default::default(), &Config::default());
        facts.last_queued_offset = Ok(0);
        facts.rq_clock_offsets = Ok((0, 0, 0));
        facts.wait_reason_offsets = Ok((0, 0));
        let names = |facts: &KernelFacts, config: &Config| -> Vec<&str> {
            attached_programs(facts, config).iter().map(|(program, _)| *program).collect()
        };
        let all = ["ks_sched_wakeup", "ks_sched_wakeup_new", "ks_sched_switch"];
        let mut config = Config::default();
        assert_eq!(names(&facts, &config), all, "the reason split, group throttling (before 6.18)");
        facts.throttles_per_task = true;
        assert_eq!(names(&facts, &config), ["ks_sched_switch"], "per-task throttling (6.18+)");
        config.sched.wait_start = WaitStart::Wakeup;
        assert_eq!(names(&facts, &config), all, "every wait stamped at its start");
        config.sched.wait_start = WaitStart::Scheduler;
        facts.throttles_per_task = false;
        config.sched.wait_reason = false;
        assert_eq!(names(&facts, &config), ["ks_sched_switch"], "no reason split");
    }

    #[test]
    fn the_schedulers_account_is_used_only_where_it_counts_switches() {
        let Ok(btf) = Btf::from_sys_fs() else {
            assert!(
                std::env::var_os("KERNSIGHT_PRIVILEGED_TESTS").is_none(),
                "no kernel BTF on this machine"
            );
            return eprintln!("skipped: no kernel BTF on this machine");
        };
        let dir = tempfile::tempdir().unwrap();
        let schedstat = dir.path().join("schedstat");
        // On the CPU 1.2 ms, waited 0.3 ms, switched in 42 times: the account is live.
        std::fs::write(&schedstat, "1200000 300000 42\n").unwrap();
        let offset = last_queued_offset(Ok(&btf), &schedstat).unwrap();
        let expected = btf.member_offset("task_struct", "sched_info").unwrap()
            + btf.member_offset("sched_info", "last_queued").unwrap();
        assert_eq!(offset, expected);
        // What a 5.10 kernel without schedstats or delay accounting shows.
        std::fs::write(&schedstat, "0 0 0\n").unwrap();
        let err = last_queued_offset(Ok(&btf), &schedstat).unwrap_err();
        assert!(err.contains("counts no switch") && err.contains("CONFIG_SCHEDSTATS"), "{err}");
        // No file (no CONFIG_SCHED_INFO), or one that is not three numbers.
        let missing = dir.path().join("missing");
        assert!(last_queued_offset(Ok(&btf), &missing).unwrap_err().contains("cannot read"));
        std::fs::write(&schedstat, "garbage").unwrap();
        assert!(last_queued_offset(Ok(&btf), &schedstat).is_err());
        let unread = BtfError::Read("no BTF".into());
        assert!(last_queued_offset(Err(&unread), &schedstat).unwrap_err().contains("BTF"));
    }
}
