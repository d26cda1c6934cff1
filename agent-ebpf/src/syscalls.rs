//! Per-cgroup syscall accounting on the `sys_enter`/`sys_exit` raw tracepoints.
//!
//! `sys_exit` alone carries the syscall number (in the saved registers) and its return value, so
//! counting costs one program run and one per-CPU map update per syscall. The BTF-typed raw
//! tracepoint (`tp_btf`) reads both without a helper call or a perf record being filled, which is
//! what keeps the always-on cost below that of a classic tracepoint with an empty body.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map},
    maps::{LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::BtfTracePointContext,
};
use kernsight_common::syscalls::{
    DEFAULT_COUNT_ENTRIES, DEFAULT_LATENCY_ENTRIES, DEFAULT_START_ENTRIES, LatencyKey,
    LATENCY_SUM_BUCKET, MAP_FULL_SLOTS, MapFullSlot, OVERFLOW_CGROUP_ID, OVERFLOW_SYSCALL, SyscallKey, errno_of,
    latency_bucket,
};

#[map]
static SYSCALL_COUNTS: PerCpuHashMap<SyscallKey, u64> =
    PerCpuHashMap::with_max_entries(DEFAULT_COUNT_ENTRIES, 0);

#[map]
static SYSCALL_LATENCY: PerCpuHashMap<LatencyKey, u64> =
    PerCpuHashMap::with_max_entries(DEFAULT_LATENCY_ENTRIES, 0);

/// LRU so that a thread that never returns from its syscall (killed in `exit`, for one) cannot
/// fill the map for good: its stale entry is the first to be evicted.
#[map]
static SYSCALL_START: LruHashMap<u32, u64> = LruHashMap::with_max_entries(DEFAULT_START_ENTRIES, 0);

#[map]
static MAP_FULL: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAP_FULL_SLOTS, 0);

/// Set by the agent before load (read-only data: the verifier prunes the latency code when 0).
#[unsafe(no_mangle)]
static LATENCY_ENABLED: u8 = 0;

/// Offset of the syscall number in `struct pt_regs` (`syscall_get_nr()` of the architecture).
#[cfg(bpf_target_arch = "x86_64")]
const SYSCALL_NR_OFFSET: usize = 15 * 8; // orig_ax
#[cfg(bpf_target_arch = "aarch64")]
const SYSCALL_NR_OFFSET: usize = 35 * 8; // syscallno, after regs[31], sp, pc, pstate, orig_x0

#[inline(always)]
fn latency_enabled() -> bool {
    // SAFETY: a plain read of a global the loader sets; volatile so the compiler keeps the load.
    unsafe { core::ptr::read_volatile(&LATENCY_ENABLED) != 0 }
}

#[inline(always)]
fn count_map_full(slot: MapFullSlot) {
    if let Some(counter) = MAP_FULL.get_ptr_mut(slot as u32) {
        // SAFETY: per-CPU slot; only this CPU writes it while the program runs.
        unsafe { *counter += 1 };
    }
}

/// Adds `amount` to `key` in a per-CPU counter map; when the map is full the amount goes to the
/// overflow key (which user space creates first) and the miss is counted, never dropped silently.
#[inline(always)]
fn add<K>(map: &PerCpuHashMap<K, u64>, key: &K, overflow: &K, slot: MapFullSlot, amount: u64) {
    if add_existing(map, key, amount) || map.insert(key, &amount, BPF_NOEXIST.into()).is_ok() {
        return;
    }
    // The insert failed: another CPU may have created the key between our lookup and insert
    // (keys are shared, values per CPU), or the map is full.
    if add_existing(map, key, amount) {
        return;
    }
    count_map_full(slot);
    add_existing(map, overflow, amount);
}

#[inline(always)]
fn add_existing<K>(map: &PerCpuHashMap<K, u64>, key: &K, amount: u64) -> bool {
    match map.get_ptr_mut(key) {
        Some(value) => {
            // SAFETY: this CPU's value; nothing else writes it while the program runs.
            unsafe { *value += amount };
            true
        }
        None => false,
    }
}

/// `exit` and `exit_group` never return, so their start time would never be consumed.
#[cfg(bpf_target_arch = "x86_64")]
const NEVER_RETURNS: [i64; 2] = [60, 231];
#[cfg(bpf_target_arch = "aarch64")]
const NEVER_RETURNS: [i64; 2] = [93, 94];

#[btf_tracepoint(function = "sys_enter")]
pub fn ks_sys_enter(ctx: BtfTracePointContext) -> i32 {
    if !latency_enabled() {
        return 0;
    }
    // sys_enter(struct pt_regs *regs, long id)
    let syscall: i64 = ctx.arg(1);
    if syscall == NEVER_RETURNS[0] || syscall == NEVER_RETURNS[1] {
        return 0;
    }
    // Lower 32 bits: thread id.
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // An LRU map makes room by evicting, so an insert fails only under memory pressure.
    if SYSCALL_START.insert(&tid, &now, 0).is_err() {
        count_map_full(MapFullSlot::SyscallStart);
    }
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn ks_sys_exit(ctx: BtfTracePointContext) -> i32 {
    // sys_exit(struct pt_regs *regs, long ret)
    let regs: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    // SAFETY: `regs` is a BTF pointer to `struct pt_regs`; the verifier checks the offset.
    let syscall = unsafe { *(regs.add(SYSCALL_NR_OFFSET) as *const u64) } as u32;
    // SAFETY: helper without preconditions.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };

    let key = SyscallKey { cgroup_id, syscall, errno: errno_of(ret) };
    let overflow = SyscallKey { cgroup_id: OVERFLOW_CGROUP_ID, syscall: OVERFLOW_SYSCALL, errno: 0 };
    add(&SYSCALL_COUNTS, &key, &overflow, MapFullSlot::SyscallCounts, 1);

    if latency_enabled() {
        record_latency(cgroup_id, syscall);
    }
    0
}

#[inline(always)]
fn record_latency(cgroup_id: u64, syscall: u32) {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the value is copied out before the entry is removed.
    let Some(&start) = (unsafe { SYSCALL_START.get(&tid) }) else {
        // The thread entered its syscall before the agent attached (or the map was full).
        return;
    };
    let _ = SYSCALL_START.remove(&tid);
    // SAFETY: helper without preconditions.
    let elapsed = unsafe { bpf_ktime_get_ns() }.saturating_sub(start);
    let slot = MapFullSlot::SyscallLatency;
    for (bucket, amount) in [(latency_bucket(elapsed), 1), (LATENCY_SUM_BUCKET, elapsed)] {
        let key = LatencyKey { cgroup_id, syscall, bucket };
        let overflow = LatencyKey { cgroup_id: OVERFLOW_CGROUP_ID, syscall: OVERFLOW_SYSCALL, bucket };
        add(&SYSCALL_LATENCY, &key, &overflow, slot, amount);
    }
}
