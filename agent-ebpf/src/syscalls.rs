//! Per-cgroup syscall accounting on the `sys_enter`/`sys_exit` raw tracepoints.
//!
//! `sys_exit` alone carries the syscall number (in the saved registers) and its return value.
//! The BTF-typed raw tracepoint (`tp_btf`) reads both without a helper call or a perf record,
//! and the cgroup is found by walking `current` with offsets from the kernel's BTF instead of
//! calling `bpf_get_current_cgroup_id()`. Counting then costs a per-CPU cache check and an
//! inlined per-CPU array increment: no hash lookup on the hot path (see `kernsight_common`).

use aya_ebpf::{
    bindings::{BPF_NOEXIST, cgroup},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map},
    maps::{Array, LruHashMap, PerCpuArray, PerCpuHashMap, Queue},
    programs::BtfTracePointContext,
};
use kernsight_common::syscalls::{
    CgroupCache, DEFAULT_CGROUP_SLOTS, DEFAULT_ERROR_ENTRIES, DEFAULT_LATENCY_ENTRIES, LATENCY_SUM_BUCKET,
    LatencyKey, OVERFLOW_CGROUP_ID, OVERFLOW_SLOT, OVERFLOW_SYSCALL, START_ENTRIES, SyscallKey, SyscallRow,
    column_of, errno_of, latency_bucket, map_full,
};

use crate::{
    features::stored_slot,
    task::{current_cgroup, global, load},
};

#[map]
static SYSCALL_ROWS: PerCpuArray<SyscallRow> = PerCpuArray::with_max_entries(DEFAULT_CGROUP_SLOTS + 1, 0);

#[map]
static SLOT_OWNERS: Array<u64> = Array::with_max_entries(DEFAULT_CGROUP_SLOTS + 1, 0);

#[map]
static FREE_SLOTS: Queue<u32> = Queue::with_max_entries(DEFAULT_CGROUP_SLOTS, 0);

#[map]
static LAST_CGROUP: PerCpuArray<CgroupCache> = PerCpuArray::with_max_entries(1, 0);

#[map]
static SYSCALL_ERRORS: PerCpuHashMap<SyscallKey, u64> =
    PerCpuHashMap::with_max_entries(DEFAULT_ERROR_ENTRIES, 0);

#[map]
static SYSCALL_LATENCY: PerCpuHashMap<LatencyKey, u64> =
    PerCpuHashMap::with_max_entries(DEFAULT_LATENCY_ENTRIES, 0);

/// LRU so that a thread that never comes back from its syscall cannot fill the map for good.
#[map]
static SYSCALL_START: LruHashMap<u32, u64> = LruHashMap::with_max_entries(START_ENTRIES, 0);

#[map]
pub(crate) static MAP_FULL: PerCpuArray<u64> = PerCpuArray::with_max_entries(map_full::COUNT, 0);

/// Set by the agent before load: read-only data, so the verifier prunes the latency code when 0.
#[unsafe(no_mangle)]
static LATENCY_ENABLED: u8 = 0;

/// The syscall number in `struct pt_regs` (what `syscall_get_nr()` reads on the architecture):
/// its offset, and its type, read as a whole field so the verifier's BTF check accepts it.
#[cfg(bpf_target_arch = "x86_64")]
pub(crate) const SYSCALL_NR_OFFSET: u32 = 15 * 8; // unsigned long orig_ax
#[cfg(bpf_target_arch = "x86_64")]
pub(crate) type SyscallNr = u64;
#[cfg(bpf_target_arch = "aarch64")]
pub(crate) const SYSCALL_NR_OFFSET: u32 = 35 * 8; // s32 syscallno, after regs[31], sp, pc, pstate, orig_x0
#[cfg(bpf_target_arch = "aarch64")]
pub(crate) type SyscallNr = i32;

/// `exit` and `exit_group` never return, so their start time would never be consumed.
#[cfg(bpf_target_arch = "x86_64")]
pub(crate) const NEVER_RETURNS: [i64; 2] = [60, 231];
#[cfg(bpf_target_arch = "aarch64")]
pub(crate) const NEVER_RETURNS: [i64; 2] = [93, 94];

#[inline(always)]
pub(crate) fn count_map_full(index: u32) {
    if let Some(counter) = MAP_FULL.get_ptr_mut(index) {
        // SAFETY: this CPU's counter; the program does not run twice at once on one CPU.
        unsafe { *counter += 1 };
    }
}

/// The slot of a cgroup: from this CPU's cache, else from where the object keeps each cgroup's
/// slot (`features::stored_slot`: cgroup local storage, or a hash by cgroup id), else a new one
/// from the free queue (or the overflow slot, counted, when none is left).
#[inline(always)]
fn slot_of(cgroup: *mut cgroup, cgroup_id: u64) -> u32 {
    let Some(cache) = LAST_CGROUP.get_ptr_mut(0) else {
        return OVERFLOW_SLOT;
    };
    // SAFETY: this CPU's entry; the program does not run twice at once on one CPU.
    let cache = unsafe { &mut *cache };
    if cache.cgroup_id == cgroup_id {
        return cache.slot;
    }
    let slot = stored_slot(cgroup, cgroup_id);
    if slot != OVERFLOW_SLOT {
        *cache = CgroupCache { cgroup_id, slot, _pad: 0 };
    }
    slot
}

/// A free slot for `cgroup_id`, its owner recorded, or `OVERFLOW_SLOT` (counted) when none is
/// left.
#[inline(always)]
pub(crate) fn new_slot(cgroup_id: u64) -> u32 {
    match FREE_SLOTS.pop() {
        Ok(Some(slot)) => {
            // Owner first: user space only reads rows whose owner it knows.
            if SLOT_OWNERS.set(slot, &cgroup_id, 0).is_err() {
                count_map_full(map_full::CGROUP_SLOTS); // slot out of range: cannot happen
                return OVERFLOW_SLOT;
            }
            slot
        }
        _ => {
            // Not recorded: the next miss tries again, once user space has freed slots.
            count_map_full(map_full::CGROUP_SLOTS);
            OVERFLOW_SLOT
        }
    }
}

/// Adds `amount` to `key` in a per-CPU hash of counters; when the map is full the amount goes
/// to the overflow key (which user space creates first) and the miss is counted.
#[inline(always)]
pub(crate) fn add<K>(map: &PerCpuHashMap<K, u64>, key: &K, overflow: &K, full_index: u32, amount: u64) {
    if add_existing(map, key, amount) || map.insert(key, &amount, BPF_NOEXIST.into()).is_ok() {
        return;
    }
    // The insert failed: another CPU may have created the key between our lookup and insert
    // (keys are shared, values per CPU), or the map is full.
    if add_existing(map, key, amount) {
        return;
    }
    count_map_full(full_index);
    add_existing(map, overflow, amount);
}

#[inline(always)]
fn add_existing<K>(map: &PerCpuHashMap<K, u64>, key: &K, amount: u64) -> bool {
    match map.get_ptr_mut(key) {
        Some(value) => {
            // SAFETY: this CPU's value; the program does not run twice at once on one CPU.
            unsafe { *value += amount };
            true
        }
        None => false,
    }
}

#[btf_tracepoint(function = "sys_enter")]
pub fn ks_sys_enter(ctx: BtfTracePointContext) -> i32 {
    if global(&LATENCY_ENABLED) == 0 {
        return 0;
    }
    // sys_enter(struct pt_regs *regs, long id)
    let syscall: i64 = ctx.arg(1);
    if syscall == NEVER_RETURNS[0] || syscall == NEVER_RETURNS[1] {
        return 0;
    }
    let tid = bpf_get_current_pid_tgid() as u32; // lower half: thread id
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // An LRU map makes room by evicting, so an insert fails only under memory pressure.
    if SYSCALL_START.insert(&tid, &now, 0).is_err() {
        count_map_full(map_full::SYSCALL_START);
    }
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn ks_sys_exit(ctx: BtfTracePointContext) -> i32 {
    // sys_exit(struct pt_regs *regs, long ret)
    let regs: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    // SAFETY: `regs` is a BTF pointer to `struct pt_regs`; the verifier checks the offset.
    // Sign-extended, so that -1 (no syscall) lands in the out-of-range column.
    let syscall = unsafe { load::<SyscallNr>(regs, SYSCALL_NR_OFFSET) } as i64 as u64;
    let (cgroup, cgroup_id) = current_cgroup();

    let slot = slot_of(cgroup, cgroup_id);
    if let Some(row) = SYSCALL_ROWS.get_ptr_mut(slot) {
        // SAFETY: this CPU's row; the program does not run twice at once on one CPU.
        unsafe { (*row).calls[column_of(syscall)] += 1 };
    }

    let syscall = syscall as u32;
    let errno = errno_of(ret);
    if errno != 0 {
        let key = SyscallKey { cgroup_id, syscall, errno };
        let overflow = SyscallKey { cgroup_id: OVERFLOW_CGROUP_ID, syscall: OVERFLOW_SYSCALL, errno: 0 };
        add(&SYSCALL_ERRORS, &key, &overflow, map_full::SYSCALL_ERRORS, 1);
    }
    if global(&LATENCY_ENABLED) != 0 {
        record_latency(cgroup_id, syscall);
    }
    0
}

#[inline(always)]
fn record_latency(cgroup_id: u64, syscall: u32) {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the value is copied out before the entry is removed.
    let Some(&start) = (unsafe { SYSCALL_START.get(&tid) }) else {
        return; // entered before the agent attached, or evicted
    };
    let _ = SYSCALL_START.remove(&tid);
    // SAFETY: helper without preconditions.
    let elapsed = unsafe { bpf_ktime_get_ns() }.saturating_sub(start);
    for (bucket, amount) in [(latency_bucket(elapsed), 1), (LATENCY_SUM_BUCKET, elapsed)] {
        let key = LatencyKey { cgroup_id, syscall, bucket };
        let overflow = LatencyKey { cgroup_id: OVERFLOW_CGROUP_ID, syscall: OVERFLOW_SYSCALL, bucket };
        add(&SYSCALL_LATENCY, &key, &overflow, map_full::SYSCALL_LATENCY, amount);
    }
}
