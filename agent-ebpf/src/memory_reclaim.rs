//! Memory reclaim stalls: how long tasks wait in direct reclaim (`mm_vmscan_direct_reclaim_*`,
//! the node is short of free memory) and in memcg reclaim (`mm_vmscan_memcg_reclaim_*`, the
//! task's cgroup or an ancestor is at its limit). Both run in the allocating task's context and
//! do not nest (reclaim sets `PF_MEMALLOC`, so it never reclaims again from inside), so a begin
//! records the time under the thread id and the end of either kind adds the time spent to a
//! log2 histogram of the current task's cgroup. Nothing runs outside reclaim: a node that does
//! not reclaim pays nothing.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map},
    maps::{HashMap, PerCpuHashMap},
    programs::BtfTracePointContext,
};
use kernsight_common::{
    counters::{LATENCY_SUM_BUCKET, OVERFLOW_CGROUP_ID, latency_bucket, map_full},
    memory_reclaim::{DEFAULT_RECLAIM_STALL_ENTRIES, RECLAIM_START_ENTRIES, ReclaimKey, kind},
};

use crate::{
    counters::{add, count_map_full},
    task::current_cgroup,
};

#[map]
static RECLAIM_STALLS: PerCpuHashMap<ReclaimKey, u64> =
    PerCpuHashMap::with_max_entries(DEFAULT_RECLAIM_STALL_ENTRIES, 0);

/// Thread id → when it entered reclaim (ns). An entry lives from a begin to its end; the agent
/// attaches the end programs first, so every begin it records has its end attached.
#[map]
static RECLAIM_START: HashMap<u32, u64> = HashMap::with_max_entries(RECLAIM_START_ENTRIES, 0);

/// The current thread id (the low half of pid_tgid).
#[inline(always)]
fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

#[inline(always)]
fn begin() {
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // Overwrites what a thread left behind if an end was ever missed.
    if RECLAIM_START.insert(&current_tid(), &now, 0).is_err() {
        count_map_full(map_full::RECLAIM_START);
    }
}

#[inline(always)]
fn end(what: u32) {
    let tid = current_tid();
    // SAFETY: a value of the map, copied out at once.
    let Some(start) = (unsafe { RECLAIM_START.get(&tid) }).copied() else {
        return; // in reclaim since before the agent attached, or not recorded (map full)
    };
    let _ = RECLAIM_START.remove(&tid);
    // SAFETY: helper without preconditions.
    let stalled = unsafe { bpf_ktime_get_ns() }.saturating_sub(start);
    let (_, cgroup_id) = current_cgroup();
    for (bucket, amount) in [(latency_bucket(stalled), 1), (LATENCY_SUM_BUCKET, stalled)] {
        let key = ReclaimKey { cgroup_id, kind: what, bucket };
        let overflow = || ReclaimKey { cgroup_id: OVERFLOW_CGROUP_ID, kind: what, bucket };
        add(&RECLAIM_STALLS, &key, overflow, map_full::RECLAIM_STALLS, amount);
    }
}

/// mm_vmscan_direct_reclaim_begin(int order, gfp_t gfp_flags)
#[btf_tracepoint(function = "mm_vmscan_direct_reclaim_begin")]
pub fn ks_direct_reclaim_begin(_ctx: BtfTracePointContext) -> i32 {
    begin();
    0
}

/// mm_vmscan_direct_reclaim_end(unsigned long nr_reclaimed)
#[btf_tracepoint(function = "mm_vmscan_direct_reclaim_end")]
pub fn ks_direct_reclaim_end(_ctx: BtfTracePointContext) -> i32 {
    end(kind::DIRECT);
    0
}

/// mm_vmscan_memcg_reclaim_begin(int order, gfp_t gfp_flags)
#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_begin")]
pub fn ks_memcg_reclaim_begin(_ctx: BtfTracePointContext) -> i32 {
    begin();
    0
}

/// mm_vmscan_memcg_reclaim_end(unsigned long nr_reclaimed)
#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_end")]
pub fn ks_memcg_reclaim_end(_ctx: BtfTracePointContext) -> i32 {
    end(kind::MEMCG);
    0
}
