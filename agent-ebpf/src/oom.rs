//! OOM kills: `oom:mark_victim` fires once per task the OOM killer picks. Two programs share it
//! (see `kernsight_common::oom`): the BTF raw tracepoint, which the agent attaches first and
//! which therefore runs first, remembers the victim task's cgroup and tgid by pid; the classic
//! tracepoint reads the record's RSS fields (computed by the kernel from the victim's mm, which a
//! BTF program could only approximate from per-CPU counters) and emits the event. Rare events.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes},
    macros::{btf_tracepoint, map, tracepoint},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, TracePointContext},
};
use kernsight_common::oom::{
    CGROUP_OF_CURRENT, CGROUP_OF_VICTIM, COMM_LEN, FIELD_ABSENT, OOM_EVENTS_BYTES, OOM_VICTIMS_ENTRIES,
    OomEvent, VictimTask,
};

use crate::task::{current_cgroup, global, task_cgroup, task_pid, task_tgid};

#[map]
static OOM_EVENTS: RingBuf = RingBuf::with_byte_size(OOM_EVENTS_BYTES, 0);

#[map]
static OOM_EVENTS_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
static OOM_VICTIMS: LruHashMap<u32, VictimTask> = LruHashMap::with_max_entries(OOM_VICTIMS_ENTRIES, 0);

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
    unsafe {
        let (_, cgroup_id) = task_cgroup(task);
        let victim = VictimTask { cgroup_id, tgid: task_tgid(task), _pad: 0 };
        let _ = OOM_VICTIMS.insert(&task_pid(task), &victim, 0);
    }
    0
}

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn ks_oom_mark_victim(ctx: TracePointContext) -> i32 {
    emit(&ctx);
    0
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

#[inline(always)]
fn emit(ctx: &TracePointContext) {
    let Some(mut entry) = OOM_EVENTS.reserve::<OomEvent>(0) else {
        if let Some(lost) = OOM_EVENTS_LOST.get_ptr_mut(0) {
            // SAFETY: this CPU's counter.
            unsafe { *lost += 1 };
        }
        return;
    };
    let event = entry.as_mut_ptr();
    let pid: i32 = field(ctx, &OOM_PID_OFFSET);
    let pid = pid as u32;
    // SAFETY: `event` is an exclusive reservation of the right size.
    unsafe {
        (*event).timestamp_ns = bpf_ktime_get_ns();
        (*event).total_vm_kib = field(ctx, &OOM_TOTAL_VM_OFFSET);
        (*event).anon_rss_kib = field(ctx, &OOM_ANON_RSS_OFFSET);
        (*event).file_rss_kib = field(ctx, &OOM_FILE_RSS_OFFSET);
        (*event).shmem_rss_kib = field(ctx, &OOM_SHMEM_RSS_OFFSET);
        (*event).pgtables_kib = field(ctx, &OOM_PGTABLES_OFFSET);
        (*event).pid = pid;
        (*event).uid = field(ctx, &OOM_UID_OFFSET);
        (*event).current_pid = bpf_get_current_pid_tgid() as u32;
        (*event).oom_score_adj = field(ctx, &OOM_SCORE_ADJ_OFFSET);
        (*event)._pad = 0;
        match OOM_VICTIMS.get(&pid) {
            Some(victim) => {
                (*event).cgroup_id = victim.cgroup_id;
                (*event).tgid = victim.tgid;
                (*event).cgroup_source = CGROUP_OF_VICTIM;
            }
            None => {
                (*event).cgroup_id = current_cgroup().1;
                (*event).tgid = 0;
                (*event).cgroup_source = CGROUP_OF_CURRENT;
            }
        }
        (*event).comm = [0; COMM_LEN];
        let comm_offset = global(&OOM_COMM_OFFSET);
        if comm_offset != FIELD_ABSENT {
            let mut at = comm_offset;
            if global(&OOM_COMM_DATA_LOC) != 0 {
                // __data_loc: the low 16 bits are the string's offset in the record.
                let loc: u32 = ctx.read_at::<u32>(comm_offset as usize).unwrap_or(0);
                at = loc & 0xffff;
            }
            if at != 0 {
                let src = (ctx.as_ptr() as *const u8).wrapping_add(at as usize);
                let _ = bpf_probe_read_kernel_str_bytes(src, &mut (*event).comm);
            }
        }
    }
    entry.submit(0);
}
