//! Ad-hoc tracing (`kernsight trace`, see `kernsight_common::trace`): a generic program that
//! copies any tracepoint's raw record into a ring buffer, and syscall programs that either
//! stream one record per call (number, return value, latency, arguments, path) or count calls
//! per syscall number in the kernel. Every program filters first, in the kernel, by process and
//! cgroup (and the syscall ones by syscall number), so unrelated events never cross the ring.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user_str_bytes,
        generated::{bpf_get_current_comm as bpf_get_current_comm_into, bpf_probe_read_kernel},
    },
    macros::{btf_tracepoint, map, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{BtfTracePointContext, TracePointContext},
};
use kernsight_common::trace::{
    BlockIoRecord, CgroupSyscallKey, KIND_BLOCK_IO, KIND_SYSCALL, KIND_TRACEPOINT, LATENCY_SLOTS,
    LATENCY_UNKNOWN, SYSCALL_PATH_SHIFT, SYSCALL_TRACED, SyscallCount, SyscallRecord, TRACE_PATH_MAX,
    TRACE_RECORD_MAX, TRACE_SYSCALLS, TraceHeader,
};

use crate::{
    block_io::{device, issued_request, issuing_cgroup, op_and_remaining},
    features::trace_syscall_start,
    syscalls::{NEVER_RETURNS, SYSCALL_NR_OFFSET, SyscallNr, take_start},
    task::{current_cgroup, global, load},
};

/// Small in the object: the agent never uses it; `kernsight trace` sizes it before loading.
#[map]
static TRACE_EVENTS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

#[map]
static TRACE_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
static TRACE_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(16, 0);

/// One entry in the object: `kernsight trace` sizes it (`TRACE_SYSCALLS * LATENCY_SLOTS`) when
/// it uses it, so that the agent, which loads the same object, does not pay for it per CPU.
#[map]
static TRACE_SYSCALL_LATENCY: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Small in the object, sized by `kernsight trace` when it counts by cgroup.
#[map]
static TRACE_CGROUP_COUNTS: PerCpuHashMap<CgroupSyscallKey, SyscallCount> =
    PerCpuHashMap::with_max_entries(1, 0);

/// Small in the object, sized by `kernsight trace io`.
#[map]
static TRACE_BLOCK_START: LruHashMap<u64, BlockIoRecord> = LruHashMap::with_max_entries(1, 0);

#[map]
static TRACE_SYSCALL_COUNTS: PerCpuArray<SyscallCount> =
    PerCpuArray::with_max_entries(TRACE_SYSCALLS as u32, 0);

#[unsafe(no_mangle)]
static TRACE_FILTER_TGID: u32 = 0;
#[unsafe(no_mangle)]
static TRACE_FILTER_CGROUPS: u8 = 0;
#[unsafe(no_mangle)]
static TRACE_SELF_TGID: u32 = 0;
#[unsafe(no_mangle)]
static TRACE_RECORD_BYTES: u32 = 64;
#[unsafe(no_mangle)]
static TRACE_SYSCALL_COUNT_ONLY: u8 = 0;
#[unsafe(no_mangle)]
static TRACE_SYSCALL_HIST: u8 = 0;
#[unsafe(no_mangle)]
static TRACE_COUNT_BY_CGROUP: u8 = 0;
#[unsafe(no_mangle)]
static TRACE_SYSCALL_SET: [u8; TRACE_SYSCALLS] = [0; TRACE_SYSCALLS];

const HEADER: usize = core::mem::size_of::<TraceHeader>();

/// Queued bytes from which a submit wakes the reader. Below, records wait for the reader's own
/// poll (every few milliseconds): one wakeup per batch instead of one per event, which at high
/// rates costs both sides more than the events themselves.
const WAKEUP_BYTES: u64 = 64 * 1024;

/// Submits on one CPU between two looks at the ring's queued bytes. A look is a helper call
/// that reads the reader's position, a cache line the reader's CPU writes as it consumes, so
/// a look per record was a measurable part of a traced call's exit (docs/performance.md,
/// "The trace hooks' own cost"). Between looks a batch may outgrow `WAKEUP_BYTES` by as many
/// records per CPU; the reader's own poll bounds the wait all the same.
const SUBMITS_PER_LOOK: u64 = 16;

/// Submits on this CPU since the trace began (`SUBMITS_PER_LOOK`). Programs that interrupt
/// each other on one CPU may lose an increment, which only moves the next look.
#[map]
static TRACE_SUBMITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Non-zero while the reader waits (`kernsight_common::trace::TRACE_READER_WAITING_MAP`): the
/// reader sets it before it waits, the submit that wakes it clears it. A wakeup is an
/// `irq_work`, a self-interrupt of the producing CPU (a VM exit under KVM); woken at every look
/// while it was behind, a reader that was already busy cost each traced open 240 ns more
/// (docs/performance.md, "The tracer: one wakeup per wait, and a JSON line for less").
#[map]
static TRACE_READER_WAITING: Array<u32> = Array::with_max_entries(1, 0);

/// The flags of a submit: wake the reader only once a batch is queued and only if it waits,
/// looking at the queue once every `SUBMITS_PER_LOOK` submits of this CPU.
#[inline(always)]
fn wakeup_flags() -> u64 {
    if let Some(submits) = TRACE_SUBMITS.get_ptr_mut(0) {
        // SAFETY: this CPU's counter (see `TRACE_SUBMITS`).
        let submits = unsafe {
            *submits += 1;
            *submits
        };
        if submits % SUBMITS_PER_LOOK != 0 {
            return BPF_RB_NO_WAKEUP as u64;
        }
    }
    if TRACE_EVENTS.query(BPF_RB_AVAIL_DATA as u64) < WAKEUP_BYTES {
        return BPF_RB_NO_WAKEUP as u64;
    }
    let Some(waiting) = TRACE_READER_WAITING.get_ptr_mut(0) else {
        return BPF_RB_NO_WAKEUP as u64;
    };
    // SAFETY: a word of the map. Two CPUs that both see it set both wake the reader: a wakeup
    // too many, nothing lost.
    unsafe {
        if *waiting == 0 {
            return BPF_RB_NO_WAKEUP as u64;
        }
        *waiting = 0;
    }
    BPF_RB_FORCE_WAKEUP as u64
}

/// Argument registers of `struct pt_regs` at `sys_exit` (the saved user registers).
#[cfg(bpf_target_arch = "x86_64")]
const ARG_OFFSETS: [u32; 6] = [14 * 8, 13 * 8, 12 * 8, 7 * 8, 9 * 8, 8 * 8]; // di si dx r10 r8 r9
/// regs[0] holds the return value by then: the first argument is kept in `orig_x0`.
#[cfg(bpf_target_arch = "aarch64")]
const ARG_OFFSETS: [u32; 6] = [34 * 8, 8, 2 * 8, 3 * 8, 4 * 8, 5 * 8];

/// The current thread (`bpf_get_current_pid_tgid`) and its cgroup, when the process and
/// cgroup filters let it through.
#[inline(always)]
fn traced_cgroup() -> Option<(u64, u64)> {
    let pid_tgid = traced_process()?;
    let (_, cgroup_id) = current_cgroup();
    traced(cgroup_id).then_some((pid_tgid, cgroup_id))
}

/// Whether the filters let the current thread through, for a program that records nothing
/// of it: its cgroup is found only when a cgroup filter is set.
#[inline(always)]
fn traced_thread() -> bool {
    // Pruned by the verifier when no cgroup filter is set (read-only global).
    traced_process().is_some() && (global(&TRACE_FILTER_CGROUPS) == 0 || traced(current_cgroup().1))
}

/// The current thread (`bpf_get_current_pid_tgid`), when the process filter lets its process
/// through.
#[inline(always)]
fn traced_process() -> Option<u64> {
    let tgid = global(&TRACE_FILTER_TGID);
    let pid_tgid = bpf_get_current_pid_tgid();
    let current = (pid_tgid >> 32) as u32;
    // Pruned by the verifier when no process filter is set. The tracer's own calls (reading
    // the ring buffer, printing) would otherwise feed back into the trace.
    let filtered = (tgid != 0 && current != tgid) || current == global(&TRACE_SELF_TGID);
    (!filtered).then_some(pid_tgid)
}

/// Whether the cgroup filter lets `cgroup_id` through.
#[inline(always)]
fn traced(cgroup_id: u64) -> bool {
    // SAFETY: the value is only tested for presence.
    global(&TRACE_FILTER_CGROUPS) == 0 || unsafe { TRACE_CGROUPS.get(&cgroup_id) }.is_some()
}

#[inline(always)]
fn count_lost() {
    if let Some(lost) = TRACE_LOST.get_ptr_mut(0) {
        // SAFETY: this CPU's counter; the program does not run twice at once on one CPU.
        unsafe { *lost += 1 };
    }
}

#[inline(always)]
fn fill_header(header: &mut TraceHeader, pid_tgid: u64, cgroup_id: u64, kind: u32) {
    // SAFETY: helper without preconditions.
    header.timestamp_ns = unsafe { bpf_ktime_get_ns() };
    header.cgroup_id = cgroup_id;
    header.pid = pid_tgid as u32;
    header.tgid = (pid_tgid >> 32) as u32;
    header.kind = kind;
    header.len = 0;
    // Written in place by the helper (which zeroes it should it fail): the safe wrapper fills
    // a zeroed copy on the stack, then copies it byte by byte into the record.
    // SAFETY: `comm` is 16 writable bytes.
    unsafe { bpf_get_current_comm_into(header.comm.as_mut_ptr().cast(), header.comm.len() as u32) };
}

/// Any classic tracepoint: attached by `kernsight trace tracepoint:<category>:<name>`.
#[tracepoint]
pub fn ks_trace_tracepoint(ctx: TracePointContext) -> i32 {
    let Some((pid_tgid, cgroup_id)) = traced_cgroup() else { return 0 };
    // A constant for the verifier (read-only global), bounded and 8-byte aligned all the same.
    let mut bytes = global(&TRACE_RECORD_BYTES) & !7;
    if bytes > TRACE_RECORD_MAX {
        bytes = TRACE_RECORD_MAX;
    }
    let Some(mut entry) = TRACE_EVENTS.reserve_bytes(HEADER + bytes as usize, 0) else {
        count_lost();
        return 0;
    };
    let base = entry.as_mut_ptr();
    // SAFETY: an exclusive, 8-byte aligned reservation of HEADER + bytes.
    let header = unsafe { &mut *base.cast::<TraceHeader>() };
    fill_header(header, pid_tgid, cgroup_id, KIND_TRACEPOINT);
    // The record lives in the per-CPU trace buffer, larger than any record: copying a fixed
    // number of bytes past a short record reads that buffer, never unmapped memory.
    // SAFETY: the destination is the reservation's tail of `bytes` bytes.
    let copied = unsafe { bpf_probe_read_kernel(base.add(HEADER).cast::<c_void>(), bytes, ctx.as_ptr()) };
    header.len = if copied == 0 { bytes } else { 0 };
    entry.submit(wakeup_flags());
    0
}

/// The flags of a syscall number (`SYSCALL_TRACED`, path argument), 0 when out of range.
#[inline(always)]
fn syscall_flags(id: u64) -> u8 {
    if id >= TRACE_SYSCALLS as u64 {
        return 0;
    }
    // SAFETY: in bounds; a read of a loader-set read-only global.
    unsafe { core::ptr::read_volatile(TRACE_SYSCALL_SET.as_ptr().add(id as usize)) }
}

/// sys_enter(struct pt_regs *regs, long id): the start time of traced calls (records only).
#[btf_tracepoint(function = "sys_enter")]
pub fn ks_trace_sys_enter(ctx: BtfTracePointContext) -> i32 {
    let id: i64 = ctx.arg(1);
    if syscall_flags(id as u64) & SYSCALL_TRACED == 0 || id == NEVER_RETURNS[0] || id == NEVER_RETURNS[1] {
        return 0;
    }
    if !traced_thread() {
        return 0;
    }
    let start = trace_syscall_start(true);
    if !start.is_null() {
        // SAFETY: the current thread's own value; only its own syscalls write it.
        unsafe { *start = bpf_ktime_get_ns() };
    }
    0
}

/// Counts a call of `syscall` in `cgroup_id`; a pair that finds the map full is counted lost.
#[inline(always)]
fn count_by_cgroup(cgroup_id: u64, syscall: u32, failed: bool) {
    let key = CgroupSyscallKey { cgroup_id, syscall, _pad: 0 };
    if let Some(count) = TRACE_CGROUP_COUNTS.get_ptr_mut(&key) {
        // SAFETY: this CPU's value.
        unsafe {
            (*count).calls += 1;
            (*count).errors += u64::from(failed);
        }
        return;
    }
    let first = SyscallCount { calls: 1, errors: u64::from(failed) };
    // BPF_NOEXIST: another CPU may have created the key since the lookup (values are per CPU,
    // the key shared); then this CPU's zeroed value is there to add to.
    if TRACE_CGROUP_COUNTS.insert(&key, &first, BPF_NOEXIST.into()).is_ok() {
        return;
    }
    match TRACE_CGROUP_COUNTS.get_ptr_mut(&key) {
        // SAFETY: this CPU's value.
        Some(count) => unsafe {
            (*count).calls += 1;
            (*count).errors += u64::from(failed);
        },
        None => count_lost(),
    }
}

/// Adds the time since this thread's `sys_enter` to syscall `id`'s log2 histogram.
#[inline(always)]
fn count_latency(id: u32) {
    let Some(start) = take_start(trace_syscall_start(false)) else {
        return; // began before the trace did
    };
    // SAFETY: helper without preconditions.
    let elapsed = unsafe { bpf_ktime_get_ns() }.saturating_sub(start);
    let mut bucket = 64 - elapsed.leading_zeros();
    if bucket >= LATENCY_SLOTS {
        bucket = LATENCY_SLOTS - 1;
    }
    if let Some(slot) = TRACE_SYSCALL_LATENCY.get_ptr_mut(id * LATENCY_SLOTS + bucket) {
        // SAFETY: this CPU's counter.
        unsafe { *slot += 1 };
    }
}

/// Counts a call of syscall `id` that returned `ret` (`--count-by`), in the kernel, if the
/// filters let the current thread through: by cgroup, or by syscall alone (then without
/// finding the thread's cgroup unless a cgroup filter asks for it).
#[inline(always)]
fn count_call(id: u32, ret: i64) {
    let failed = (-4095..0).contains(&ret);
    // Pruned by the verifier: the globals are read-only data.
    if global(&TRACE_COUNT_BY_CGROUP) != 0 {
        let Some((_, cgroup_id)) = traced_cgroup() else { return };
        if global(&TRACE_SYSCALL_HIST) != 0 {
            count_latency(id);
        }
        count_by_cgroup(cgroup_id, id, failed);
        return;
    }
    if !traced_thread() {
        return;
    }
    if global(&TRACE_SYSCALL_HIST) != 0 {
        count_latency(id);
    }
    if let Some(count) = TRACE_SYSCALL_COUNTS.get_ptr_mut(id) {
        // SAFETY: this CPU's counter.
        unsafe {
            (*count).calls += 1;
            (*count).errors += u64::from(failed);
        }
    }
}

/// sys_exit(struct pt_regs *regs, long ret): a count, or a record of the call.
#[btf_tracepoint(function = "sys_exit")]
pub fn ks_trace_sys_exit(ctx: BtfTracePointContext) -> i32 {
    let regs: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    // SAFETY: `regs` is a BTF pointer to `struct pt_regs`; the verifier checks the offset.
    let id = unsafe { load::<SyscallNr>(regs, SYSCALL_NR_OFFSET) } as i64 as u64;
    let flags = syscall_flags(id);
    if flags & SYSCALL_TRACED == 0 {
        return 0;
    }
    if global(&TRACE_SYSCALL_COUNT_ONLY) != 0 {
        count_call(id as u32, ret);
        return 0;
    }
    let Some((pid_tgid, cgroup_id)) = traced_cgroup() else { return 0 };
    let start = take_start(trace_syscall_start(false));
    let Some(mut entry) = TRACE_EVENTS.reserve::<SyscallRecord>(0) else {
        count_lost();
        return 0;
    };
    // SAFETY: an exclusive reservation of the right size, every field written below.
    let record = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut record.header, pid_tgid, cgroup_id, KIND_SYSCALL);
    record.id = id as u32;
    record._pad = 0;
    record.ret = ret;
    record.latency_ns = match start {
        Some(start) => record.header.timestamp_ns.saturating_sub(start),
        None => LATENCY_UNKNOWN,
    };
    for (arg, offset) in record.args.iter_mut().zip(ARG_OFFSETS) {
        // SAFETY: as above, a BTF load from `struct pt_regs`.
        *arg = unsafe { load::<u64>(regs, offset) };
    }
    record.path[0] = 0;
    let path_arg = (flags >> SYSCALL_PATH_SHIFT) as usize;
    if path_arg > 0 && path_arg <= 6 {
        let pointer = record.args[path_arg - 1] as *const u8;
        // SAFETY: a user pointer, read with the fault-tolerant helper.
        if let Ok(read) = unsafe { bpf_probe_read_user_str_bytes(pointer, &mut record.path) } {
            record.header.len = (read.len() + 1).min(TRACE_PATH_MAX) as u32;
        }
    }
    entry.submit(wakeup_flags());
    0
}

/// block_rq_issue (see `block_io::issued_request`): a traced request's record, kept until it
/// completes. The process filter applies to the task issuing the request, the cgroup filter to
/// the cgroup it is attributed to (as the `block_io` family attributes it).
#[btf_tracepoint(function = "block_rq_issue")]
pub fn ks_trace_block_issue(ctx: BtfTracePointContext) -> i32 {
    let Some(pid_tgid) = traced_process() else { return 0 };
    let rq = issued_request(&ctx);
    // SAFETY: the tracepoint's BTF `struct request` pointer.
    let cgroup_id = unsafe { issuing_cgroup(rq) };
    if !traced(cgroup_id) {
        return 0;
    }
    // SAFETY: as above.
    let ((op, remaining), device) = unsafe { (op_and_remaining(rq), device(rq)) };
    let mut record =
        BlockIoRecord { device, op: op as u32, bytes: remaining as u64, ..BlockIoRecord::default() };
    fill_header(&mut record.header, pid_tgid, cgroup_id, KIND_BLOCK_IO);
    let _ = TRACE_BLOCK_START.insert(&(rq as u64), &record, 0);
    0
}

/// block_rq_complete(struct request *rq, blk_status_t error, unsigned int nr_bytes): the
/// record of a traced request, when its last part completes.
#[btf_tracepoint(function = "block_rq_complete")]
pub fn ks_trace_block_complete(ctx: BtfTracePointContext) -> i32 {
    let rq: *const u8 = ctx.arg(0);
    let error: u64 = ctx.arg(1);
    let nr_bytes: u32 = ctx.arg(2);
    // SAFETY: the tracepoint's BTF `struct request` pointer.
    let (_, remaining) = unsafe { op_and_remaining(rq) };
    if nr_bytes < remaining {
        return 0; // a partial completion: the request goes on
    }
    let address = rq as u64;
    // SAFETY: a value of the map, copied out at once.
    let Some(issued) = (unsafe { TRACE_BLOCK_START.get(&address) }).copied() else {
        return 0; // not traced, or issued before the trace began
    };
    let _ = TRACE_BLOCK_START.remove(&address);
    let Some(mut entry) = TRACE_EVENTS.reserve::<BlockIoRecord>(0) else {
        count_lost();
        return 0;
    };
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut record = issued;
    record.latency_ns = now.saturating_sub(issued.header.timestamp_ns);
    record.header.timestamp_ns = now;
    record.error = (error & 0xff) as u32;
    entry.write(record);
    entry.submit(wakeup_flags());
    0
}
