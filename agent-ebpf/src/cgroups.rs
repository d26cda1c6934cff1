//! cgroup lifecycle: `cgroup_mkdir` and `cgroup_rmdir` (BTF raw tracepoints) stream the id,
//! hierarchy and path of each cgroup created or removed, so that the agent maps ids to paths and
//! knows when a cgroup is gone without walking cgroupfs. Both events are rare.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel_str_bytes,
    macros::{btf_tracepoint, map},
    maps::{PerCpuArray, RingBuf},
    programs::BtfTracePointContext,
};
use kernsight_common::cgroups::{CGROUP_EVENTS_BYTES, CGROUP_MKDIR, CGROUP_RMDIR, CgroupEvent};

use crate::task::{cgroup_id, global, load};

#[map]
static CGROUP_EVENTS: RingBuf = RingBuf::with_byte_size(CGROUP_EVENTS_BYTES, 0);

#[map]
static CGROUP_EVENTS_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[unsafe(no_mangle)]
pub(crate) static CGROUP_ROOT_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
pub(crate) static ROOT_HIERARCHY_ID_OFFSET: u32 = 0;

#[btf_tracepoint(function = "cgroup_mkdir")]
pub fn ks_cgroup_mkdir(ctx: BtfTracePointContext) -> i32 {
    emit(&ctx, CGROUP_MKDIR);
    0
}

#[btf_tracepoint(function = "cgroup_rmdir")]
pub fn ks_cgroup_rmdir(ctx: BtfTracePointContext) -> i32 {
    emit(&ctx, CGROUP_RMDIR);
    0
}

/// cgroup_mkdir/cgroup_rmdir(struct cgroup *cgrp, const char *path)
#[inline(always)]
fn emit(ctx: &BtfTracePointContext, kind: u32) {
    let cgroup: *mut aya_ebpf::bindings::cgroup = ctx.arg(0);
    let path: *const u8 = ctx.arg(1);
    let Some(mut entry) = CGROUP_EVENTS.reserve::<CgroupEvent>(0) else {
        if let Some(lost) = CGROUP_EVENTS_LOST.get_ptr_mut(0) {
            crate::counters::atomic_add(lost, 1);
        }
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is an exclusive reservation of the right size; `cgroup` and `path` are
    // the tracepoint's BTF arguments, read at offsets from the kernel's BTF.
    unsafe {
        let root: *const u8 = load(cgroup as *const u8, global(&CGROUP_ROOT_OFFSET));
        (*event).kind = kind;
        (*event).hierarchy_id = load::<i32>(root, global(&ROOT_HIERARCHY_ID_OFFSET)) as u32;
        (*event).cgroup_id = cgroup_id(cgroup);
        (*event)._pad = 0;
        (*event).path_len = match bpf_probe_read_kernel_str_bytes(path, &mut (*event).path) {
            Ok(read) => read.len() as u32 + 1,
            Err(_) => 0,
        };
    }
    entry.submit(0);
}
