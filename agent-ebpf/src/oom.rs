//! OOM kills: `oom:mark_victim` fires once per task the OOM killer picks. Two programs share it
//! (see `kernsight_common::oom`): the BTF raw tracepoint learns the victim task's cgroup and
//! tgid; the classic tracepoint reads the record's RSS fields (computed by the kernel from the
//! victim's mm, which a BTF program could only approximate from per-CPU counters). Both run in
//! the same call of the tracepoint, in an order no one controls: attaching the BTF program first
//! does not make it run first once another tool (bpftrace, a second agent) has a perf event on
//! the tracepoint, since all perf events run from one probe registered by the first of them. So
//! whichever runs first leaves its half under the victim's pid, and the second one joins the
//! two halves and emits the event. Rare events.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes},
    macros::{btf_tracepoint, map, tracepoint},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, TracePointContext},
};
use kernsight_common::oom::{
    CGROUP_OF_VICTIM, COMM_LEN, FIELD_ABSENT, OOM_EVENTS_BYTES, OOM_VICTIMS_ENTRIES, OomEvent, VictimTask,
};

use crate::{
    counters::atomic_add,
    task::{global, task_cgroup, task_pid, task_tgid},
};

#[map]
static OOM_EVENTS: RingBuf = RingBuf::with_byte_size(OOM_EVENTS_BYTES, 0);

#[map]
static OOM_EVENTS_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The BTF program's half, by victim pid, when it ran first.
#[map]
static OOM_VICTIMS: LruHashMap<u32, VictimTask> = LruHashMap::with_max_entries(OOM_VICTIMS_ENTRIES, 0);

/// The classic tracepoint's half (the event without its cgroup), by victim pid, when it ran first.
#[map]
static OOM_PENDING: LruHashMap<u32, OomEvent> = LruHashMap::with_max_entries(OOM_VICTIMS_ENTRIES, 0);

#[unsafe(no_mangle)]
static OOM_PID_OFFSET: u32 = FIELD_ABSENT;
#[unsafe(no_mangle)]
static OOM_COMM_OFFSET: u32 = FIELD_ABSENT;
#[unsafe(no_mangle)]
static OOM_COMM_DATA_LOC: u32 = 1;
#[unsafe(no_mangle)]
static OOM_TOTAL_VM_OFFSET: u32 = FIELD_ABSENT;
#[unsafe(no_mangle)]
static OOM_ANON_RSS_OFFSET: u32 = FIELD_ABSENT;
#[unsafe(no_mangle)]
static OOM_FILE_RSS_OFFSET: u32 = FIELD_ABSENT;
#[unsafe(no_mangle)]
static OOM_SHMEM_RSS_OFFSET: u32 = FIELD_ABSENT;
#[unsafe(no_mangle)]
static OOM_UID_OFFSET: u32 = FIELD_ABSENT;
#[unsafe(no_mangle)]
static OOM_PGTABLES_OFFSET: u32 = FIELD_ABSENT;
#[unsafe(no_mangle)]
static OOM_SCORE_ADJ_OFFSET: u32 = FIELD_ABSENT;

/// mark_victim(struct task_struct *task, uid_t uid)
#[btf_tracepoint(function = "mark_victim")]
pub fn ks_oom_victim_task(ctx: BtfTracePointContext) -> i32 {
    let task: *const u8 = ctx.arg(0);
    // SAFETY: the tracepoint's BTF argument, read at offsets from the kernel's BTF.
    let (pid, victim) = unsafe {
        let (_, cgroup_id) = task_cgroup(task);
        (task_pid(task), VictimTask { cgroup_id, tgid: task_tgid(task), _pad: 0 })
    };
    // SAFETY: copied out of the map at once.
    match unsafe { OOM_PENDING.get(&pid) } {
        Some(&pending) => {
            let _ = OOM_PENDING.remove(&pid);
            submit(pending, &victim);
        }
        None => {
            let _ = OOM_VICTIMS.insert(&pid, &victim, 0);
        }
    }
    0
}

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn ks_oom_mark_victim(ctx: TracePointContext) -> i32 {
    let event = record(&ctx);
    // SAFETY: copied out of the map at once.
    match unsafe { OOM_VICTIMS.get(&event.pid) } {
        Some(&victim) => {
            let _ = OOM_VICTIMS.remove(&event.pid);
            submit(event, &victim);
        }
        None => {
            let _ = OOM_PENDING.insert(&event.pid, &event, 0);
        }
    }
    0
}

/// Emits `event` completed with the victim task's cgroup and tgid (or counts it lost).
#[inline(always)]
fn submit(mut event: OomEvent, victim: &VictimTask) {
    event.cgroup_id = victim.cgroup_id;
    event.tgid = victim.tgid;
    event.cgroup_source = CGROUP_OF_VICTIM;
    if OOM_EVENTS.output(&event, 0).is_err()
        && let Some(lost) = OOM_EVENTS_LOST.get_ptr_mut(0)
    {
        atomic_add(lost, 1);
    }
}

/// A field of the record at a loader-set offset; zero when absent or unreadable.
#[inline(always)]
fn field<T: Copy + Default>(ctx: &TracePointContext, offset: &'static u32) -> T {
    let offset = global(offset);
    if offset == FIELD_ABSENT {
        return T::default();
    }
    // SAFETY: a probe read inside the tracepoint's record.
    unsafe { ctx.read_at::<T>(offset as usize) }.unwrap_or_default()
}

/// The event as the tracepoint's record describes it, without the victim's cgroup and tgid.
#[inline(always)]
fn record(ctx: &TracePointContext) -> OomEvent {
    let pid: i32 = field(ctx, &OOM_PID_OFFSET);
    let mut event = OomEvent {
        // SAFETY: helper without preconditions.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        cgroup_id: 0,
        total_vm_kib: field(ctx, &OOM_TOTAL_VM_OFFSET),
        anon_rss_kib: field(ctx, &OOM_ANON_RSS_OFFSET),
        file_rss_kib: field(ctx, &OOM_FILE_RSS_OFFSET),
        shmem_rss_kib: field(ctx, &OOM_SHMEM_RSS_OFFSET),
        pgtables_kib: field(ctx, &OOM_PGTABLES_OFFSET),
        pid: pid as u32,
        tgid: 0,
        uid: field(ctx, &OOM_UID_OFFSET),
        current_pid: bpf_get_current_pid_tgid() as u32,
        cgroup_source: 0,
        oom_score_adj: field(ctx, &OOM_SCORE_ADJ_OFFSET),
        _pad: 0,
        comm: [0; COMM_LEN],
    };
    let comm_offset = global(&OOM_COMM_OFFSET);
    if comm_offset != FIELD_ABSENT {
        let mut at = comm_offset;
        if global(&OOM_COMM_DATA_LOC) != 0 {
            // __data_loc: the low 16 bits are the string's offset in the record.
            // SAFETY: a probe read inside the tracepoint's record.
            let loc: u32 = unsafe { ctx.read_at::<u32>(comm_offset as usize) }.unwrap_or(0);
            at = loc & 0xffff;
        }
        if at != 0 {
            let src = (ctx.as_ptr() as *const u8).wrapping_add(at as usize);
            // SAFETY: a probe read of the record's string into the event's buffer.
            let _ = unsafe { bpf_probe_read_kernel_str_bytes(src, &mut event.comm) };
        }
    }
    event
}
