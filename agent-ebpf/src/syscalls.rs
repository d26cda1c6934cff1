//! Per-cgroup syscall accounting on the `sys_enter`/`sys_exit` raw tracepoints.
//!
//! `sys_exit` alone carries the syscall number (in the saved registers) and its return value.
//! The BTF-typed raw tracepoint (`tp_btf`) reads both without a helper call or a perf record.
//! The thread's cgroup and slot come from a per-CPU cache of the last thread seen, named by its
//! `pt_regs` and trusted until the next fork or cgroup move (`attribution`); else the cgroup is
//! found by walking `current` with offsets from the kernel's BTF instead of calling
//! `bpf_get_current_cgroup_id()`. Counting then costs a per-CPU cache check and an inlined
//! per-CPU array increment: no helper call and no hash lookup on the hot path (see
//! `kernsight_common`).

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map},
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, Queue},
    programs::BtfTracePointContext,
};
use kernsight_common::{
    counters::{LatencyCell, OVERFLOW_CGROUP_ID, latency_bucket, map_full},
    syscalls::{
        CgroupCache, DEFAULT_CGROUP_SLOTS, DEFAULT_ERROR_ENTRIES, DEFAULT_LATENCY_ENTRIES, LatencyKey,
        OTHER_ERRNO, OVERFLOW_SLOT, OVERFLOW_SYSCALL, SYSCALL_COLUMNS, SlotEntries, SyscallKey, SyscallRow,
        V1_CGROUP_ID_BIT, bounded_errno, column_of, errno_of, error_quota, latency_quota,
    },
};

use crate::{
    attribution,
    counters::{add_existing, atomic_add, count_map_full, insert_new},
    features::{stored_slot, syscall_start},
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

/// v1 cgroup id → its slot (hybrid and v1 hosts); sized by the agent to the number of slots.
#[map]
static V1_CGROUP_SLOTS: HashMap<u64, u32> = HashMap::with_max_entries(DEFAULT_CGROUP_SLOTS, 0);

#[map]
static SYSCALL_ERRORS: PerCpuHashMap<SyscallKey, u64> =
    PerCpuHashMap::with_max_entries(DEFAULT_ERROR_ENTRIES, 0);

#[map]
static SYSCALL_LATENCY: PerCpuHashMap<LatencyKey, LatencyCell> =
    PerCpuHashMap::with_max_entries(DEFAULT_LATENCY_ENTRIES, 0);

/// The hash entries each slot's cgroup created: what its quota is checked against.
#[map]
static SLOT_ENTRIES: Array<SlotEntries> = Array::with_max_entries(DEFAULT_CGROUP_SLOTS + 1, 0);

/// Set by the agent before load: read-only data, so the verifier prunes the latency code when 0.
#[unsafe(no_mangle)]
static LATENCY_ENABLED: u8 = 0;

/// Entries of `SYSCALL_ERRORS` and `SYSCALL_LATENCY` one slot may create (set by the agent from
/// the maps' bounds and the number of slots).
/// `SYSCALL_COLUMNS - 1`, read as a global so that the compiler keeps the mask: verifiers
/// before 5.13 forget the bounds of a spilled register, so the column, checked before the map
/// lookup and reloaded after it, must be bounded again where it indexes the row.
#[unsafe(no_mangle)]
static COLUMN_MASK: u64 = (SYSCALL_COLUMNS - 1) as u64;
#[unsafe(no_mangle)]
static ERROR_QUOTA: u32 = error_quota(DEFAULT_ERROR_ENTRIES, DEFAULT_CGROUP_SLOTS);
#[unsafe(no_mangle)]
static LATENCY_QUOTA: u32 = latency_quota(DEFAULT_LATENCY_ENTRIES, DEFAULT_CGROUP_SLOTS);

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

/// The cgroup of the thread whose syscall ends (`regs`: its `pt_regs`) and the cgroup's slot:
/// from this CPU's cache when the same thread made the last syscall here in the same
/// attribution epoch (`attribution`), else by walking from the current task. The slot then
/// comes from the cache when the cgroup is the last one seen here, else from where the object
/// keeps each cgroup's slot (`features::stored_slot`: cgroup local storage, or a hash by
/// cgroup id), else it is a new one from the free queue (or the overflow slot, counted, when
/// none is left).
#[inline(always)]
fn attribute(regs: *const u8) -> (u64, u32) {
    let Some(cache) = LAST_CGROUP.get_ptr_mut(0) else {
        return (current_cgroup().1, OVERFLOW_SLOT);
    };
    // SAFETY: this CPU's entry; the program does not run twice at once on one CPU.
    let cache = unsafe { &mut *cache };
    let regs = regs as u64;
    // Read before the walk: a fork or move during it leaves the entry made below stale.
    let epoch = attribution::epoch();
    if epoch != 0 && cache.regs == regs && cache.epoch == epoch {
        return (cache.cgroup_id, cache.slot);
    }
    let (cgroup, cgroup_id) = current_cgroup();
    let slot = if cache.cgroup_id == cgroup_id {
        cache.slot
    } else if cgroup_id & V1_CGROUP_ID_BIT != 0 {
        // The v1 walk's cgroup pointer is not one that `bpf_cgrp_storage_get` accepts (see
        // `V1_CGROUP_SLOTS_MAP`); the verifier knows the bit is set on this path (`id | BIT`)
        // and never reaches the storage call with it.
        slot_by_id(&V1_CGROUP_SLOTS, cgroup_id)
    } else {
        stored_slot(cgroup, cgroup_id)
    };
    if slot != OVERFLOW_SLOT {
        *cache = CgroupCache { regs, epoch, cgroup_id, slot, _pad: 0 };
    }
    (cgroup_id, slot)
}

/// The slot recorded for `cgroup_id` in `slots`, or a new one from the free queue
/// (`OVERFLOW_SLOT`, counted, when none is free). User space removes the entry when it recycles
/// the slot, so `slots` holds one entry per owned slot at most.
#[inline(always)]
pub(crate) fn slot_by_id(slots: &HashMap<u64, u32>, cgroup_id: u64) -> u32 {
    if let Some(slot) = slots.get_ptr(&cgroup_id) {
        // SAFETY: a value of the map, copied out at once.
        return unsafe { *slot };
    }
    let slot = new_slot(cgroup_id);
    if slot == OVERFLOW_SLOT {
        return OVERFLOW_SLOT;
    }
    // Two CPUs may give one new cgroup a slot each: the last one is recorded, both rows name
    // the cgroup as owner and user space adds them up. The map is never full (one entry per
    // owned slot); should the insert fail all the same, the slot still counts for this cgroup
    // (its owner is set) and the failure is counted.
    if slots.insert(&cgroup_id, &slot, 0).is_err() {
        count_map_full(map_full::CGROUP_STORAGE);
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

/// Whether the cgroup of `slot` may create one more entry (`quota` read from `SLOT_ENTRIES`
/// through `used`). Checked before the insert and counted after it, without a fetch (5.10 has
/// no BPF_FETCH): CPUs racing on one cgroup's first errors can each pass the check, so a
/// cgroup may exceed its quota by fewer entries than there are CPUs; the maps have room.
#[inline(always)]
fn under_quota(used: *const u64, quota: u32) -> bool {
    // SAFETY: a value of `SLOT_ENTRIES`; a torn read cannot happen for an aligned u64.
    unsafe { core::ptr::read_volatile(used) < u64::from(quota) }
}

/// Counts a failed call in `SYSCALL_ERRORS` under (the cgroup, syscall column, bounded errno),
/// within the cgroup's quota of entries; past it, under the cgroup's own overflow key
/// (`OVERFLOW_SYSCALL`, `OTHER_ERRNO`), which the quota keeps room for. Cgroups without a slot
/// share the overflow slot's quota and count under `OVERFLOW_CGROUP_ID`.
#[inline(always)]
fn count_error(slot: u32, cgroup_id: u64, column: u32, errno: u32) {
    let cgroup_id = if slot == OVERFLOW_SLOT { OVERFLOW_CGROUP_ID } else { cgroup_id };
    let key = SyscallKey { cgroup_id, syscall: column, errno: bounded_errno(errno) };
    if add_existing(&SYSCALL_ERRORS, &key, 1) {
        return;
    }
    let Some(entries) = SLOT_ENTRIES.get_ptr_mut(slot) else { return };
    // SAFETY: a value of `SLOT_ENTRIES`; only atomic adds write it while programs run.
    let used = unsafe { &raw mut (*entries).errors };
    let quota = global(&ERROR_QUOTA);
    // One entry of the quota is the cgroup's own overflow key.
    if under_quota(used, quota.saturating_sub(1)) {
        if insert_new(&SYSCALL_ERRORS, &key, 1) {
            atomic_add(used, 1);
            return;
        }
    } else {
        count_map_full(map_full::SYSCALL_ERRORS_QUOTA);
    }
    let own = SyscallKey { cgroup_id, syscall: OVERFLOW_SYSCALL, errno: OTHER_ERRNO };
    if add_existing(&SYSCALL_ERRORS, &own, 1) {
        return;
    }
    if under_quota(used, quota) && insert_new(&SYSCALL_ERRORS, &own, 1) {
        atomic_add(used, 1);
        return;
    }
    // The map is full (racing CPUs past their quotas): the overflow key user space created.
    count_map_full(map_full::SYSCALL_ERRORS);
    let overflow =
        SyscallKey { cgroup_id: OVERFLOW_CGROUP_ID, syscall: OVERFLOW_SYSCALL, errno: OTHER_ERRNO };
    add_existing(&SYSCALL_ERRORS, &overflow, 1);
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
    // Where the entry time lives (`features`): in the task itself on kernels with task local
    // storage, an LRU hash by thread id before them.
    let start = syscall_start(true);
    if start.is_null() {
        count_map_full(map_full::SYSCALL_START);
        return 0;
    }
    // SAFETY: the current thread's own value; only its own syscalls write it.
    unsafe { *start = bpf_ktime_get_ns() };
    0
}

/// The entry time at `start` (from `syscall_start`), consumed; `None` when there is none (the
/// call began before the program was attached, or the LRU evicted it).
#[inline(always)]
pub(crate) fn take_start(start: *mut u64) -> Option<u64> {
    if start.is_null() {
        return None;
    }
    // SAFETY: the current thread's own value (see `ks_sys_enter`).
    let entered = unsafe { core::ptr::replace(start, 0) };
    (entered != 0).then_some(entered)
}

#[btf_tracepoint(function = "sys_exit")]
pub fn ks_sys_exit(ctx: BtfTracePointContext) -> i32 {
    // sys_exit(struct pt_regs *regs, long ret)
    let regs: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    // SAFETY: `regs` is a BTF pointer to `struct pt_regs`; the verifier checks the offset.
    // Sign-extended, so that -1 (no syscall) lands in the out-of-range column.
    let syscall = unsafe { load::<SyscallNr>(regs, SYSCALL_NR_OFFSET) } as i64 as u64;
    let (cgroup_id, slot) = attribute(regs);

    // Rows and hash keys use the bounded column, not the number a workload chose
    // (`syscall(1000 + i)`).
    let column = column_of(syscall);
    if let Some(row) = SYSCALL_ROWS.get_ptr_mut(slot) {
        let index = (column as u64 & global(&COLUMN_MASK)) as usize;
        // SAFETY: this CPU's row; only this program writes the rows, and the kernel does not
        // let it nest into itself on one CPU. The mask keeps the index below SYSCALL_COLUMNS
        // (a power of two).
        unsafe { *(*row).calls.get_unchecked_mut(index) += 1 };
    }
    let column = column as u32;
    let errno = errno_of(ret);
    if errno != 0 {
        count_error(slot, cgroup_id, column, errno);
    }
    if global(&LATENCY_ENABLED) != 0 {
        record_latency(slot, cgroup_id, column);
    }
    crate::escape::syscall_exit(regs, syscall, ret, cgroup_id);
    0
}

/// Adds a call's duration to its (cgroup, syscall column) histogram in `SYSCALL_LATENCY`,
/// within the cgroup's quota of entries; past it (or without a slot), under `other`.
#[inline(always)]
fn record_latency(slot: u32, cgroup_id: u64, syscall: u32) {
    let Some(start) = take_start(syscall_start(false)) else { return };
    // SAFETY: helper without preconditions.
    let elapsed = unsafe { bpf_ktime_get_ns() }.saturating_sub(start);
    let Some(entries) = SLOT_ENTRIES.get_ptr_mut(slot) else { return };
    // SAFETY: a value of `SLOT_ENTRIES`; only atomic adds write it while programs run.
    let used = unsafe { &raw mut (*entries).latency };
    // One update: the bucket's count and sum.
    let bucket = latency_bucket(elapsed);
    let key = LatencyKey { cgroup_id, syscall, bucket };
    let overflow = LatencyKey { cgroup_id: OVERFLOW_CGROUP_ID, syscall: OVERFLOW_SYSCALL, bucket };
    let own = slot != OVERFLOW_SLOT
        && (add_existing(&SYSCALL_LATENCY, &key, elapsed) || new_latency_entry(used, &key, elapsed));
    if !own {
        add_existing(&SYSCALL_LATENCY, &overflow, elapsed);
    }
}

/// Creates `key` with `amount` if its cgroup is under its quota (`used`); false, counted, when
/// the quota or the map is exhausted.
#[inline(always)]
fn new_latency_entry(used: *mut u64, key: &LatencyKey, amount: u64) -> bool {
    if !under_quota(used, global(&LATENCY_QUOTA)) {
        count_map_full(map_full::SYSCALL_LATENCY_QUOTA);
        return false;
    }
    if !insert_new(&SYSCALL_LATENCY, key, amount) {
        count_map_full(map_full::SYSCALL_LATENCY);
        return false;
    }
    atomic_add(used, 1);
    true
}
