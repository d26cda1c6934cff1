//! Exec and process-exit events through a ring buffer: what ran (path, arguments), who (pid,
//! parent, uid) and where (cgroup); how processes ended. Both are rare next to syscalls, and
//! the agent needs them one by one, not as counts.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_uid_gid, bpf_probe_read_kernel_str_bytes,
        bpf_probe_read_user_buf,
    },
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use kernsight_common::processes::{
    EVENT_ARGS_MAX, EVENT_EXEC, EVENT_EXIT, EVENT_FILENAME_MAX, PROCESS_EVENTS_BYTES, ProcessEvent,
};

use crate::task::{TASK_MM_OFFSET, global, load, task_cgroup, task_exit_code, task_pid, task_tgid};

#[map]
static PROCESS_EVENTS: RingBuf = RingBuf::with_byte_size(PROCESS_EVENTS_BYTES, 0);

#[map]
static PROCESS_EVENTS_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[unsafe(no_mangle)]
static BINPRM_FILENAME_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static TASK_REAL_PARENT_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static MM_ARG_START_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static MM_ARG_END_OFFSET: u32 = 0;

/// Reserves an event with the fields every kind has, or counts the loss.
///
/// # Safety
/// `task` must be a BTF pointer to a `struct task_struct`.
#[inline(always)]
unsafe fn start(kind: u32, task: *const u8) -> Option<aya_ebpf::maps::ring_buf::RingBufEntry<ProcessEvent>> {
    let Some(mut entry) = PROCESS_EVENTS.reserve::<ProcessEvent>(0) else {
        if let Some(lost) = PROCESS_EVENTS_LOST.get_ptr_mut(0) {
            crate::counters::atomic_add(lost, 1);
        }
        return None;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: an exclusive reservation of the right size; BTF reads at offsets from the kernel.
    unsafe {
        let parent: *const u8 = load(task, global(&TASK_REAL_PARENT_OFFSET));
        (*event).kind = kind;
        (*event).pid = task_pid(task);
        (*event).tgid = task_tgid(task);
        (*event).ppid = task_tgid(parent);
        (*event).uid = bpf_get_current_uid_gid() as u32;
        (*event).exit_code = 0;
        (*event).cgroup_id = task_cgroup(task).1;
        (*event).filename_len = 0;
        (*event).args_len = 0;
    }
    Some(entry)
}

/// sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
///
/// # Safety
/// `task` and `bprm` must be the tracepoint's BTF arguments.
#[inline(always)]
pub(crate) unsafe fn exec(task: *const u8, bprm: *const u8) {
    // SAFETY: as documented; `current` is the task that execs, so its memory holds the new
    // program's arguments.
    unsafe {
        let Some(mut entry) = start(EVENT_EXEC, task) else { return };
        let event = entry.as_mut_ptr();
        let filename: *const u8 = load(bprm, global(&BINPRM_FILENAME_OFFSET));
        let buffer = &mut (*event).filename;
        if let Ok(read) = bpf_probe_read_kernel_str_bytes(filename, buffer) {
            (*event).filename_len = read.len() as u32;
        }
        let mm: *const u8 = load(task, global(&TASK_MM_OFFSET));
        let arg_start: u64 = load(mm, global(&MM_ARG_START_OFFSET));
        let arg_end: u64 = load(mm, global(&MM_ARG_END_OFFSET));
        let len = arg_end.saturating_sub(arg_start) as usize;
        let len = if len > EVENT_ARGS_MAX { EVENT_ARGS_MAX } else { len };
        let buffer = &mut (*event).args;
        if len > 0
            && let Some(args) = buffer.get_mut(..len)
            && bpf_probe_read_user_buf(arg_start as *const u8, args).is_ok()
        {
            (*event).args_len = len as u32;
        }
        entry.submit(0);
    }
}

/// sched_process_exit for a thread-group leader.
///
/// # Safety
/// `task` must be the tracepoint's BTF argument.
#[inline(always)]
pub(crate) unsafe fn exit(task: *const u8) {
    // SAFETY: as documented; the exiting task is `current`, whose name is the command's.
    unsafe {
        let Some(mut entry) = start(EVENT_EXIT, task) else { return };
        let event = entry.as_mut_ptr();
        (*event).exit_code = task_exit_code(task);
        if let Ok(comm) = bpf_get_current_comm() {
            let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
            let filename = &mut (*event).filename;
            filename[..comm.len()].copy_from_slice(&comm);
            (*event).filename_len = if len <= EVENT_FILENAME_MAX { len as u32 } else { 0 };
        }
        entry.submit(0);
    }
}
