//! Capability checks: `cap_capable` fires once per capability the kernel checks (binding a port
//! below 1024, changing uid, mounting, ...), granted or denied. Counted per (cgroup, capability,
//! result, user namespace of the credentials) in a per-CPU hash; nothing is streamed. The hot
//! path is the cgroup walk and one per-CPU hash update. Checks made by runc while it sets a
//! container up are skipped (see `kernsight_common::security::RUNC_COMM_PREFIX`).

use aya_ebpf::{
    helpers::generated::bpf_get_current_task_btf,
    macros::{btf_tracepoint, map},
    maps::PerCpuHashMap,
    programs::BtfTracePointContext,
};
use kernsight_common::{
    security::{
        CapabilityKey, DEFAULT_CAPABILITY_ENTRIES, DENIED, GRANTED, INITIAL_USER_NS, NESTED_USER_NS,
        RUNC_COMM_MASK, RUNC_COMM_PREFIX,
    },
    syscalls::{OVERFLOW_CGROUP_ID, map_full},
};

use crate::{
    syscalls::add,
    task::{global, load, task_cgroup},
};

#[map]
static CAPABILITY_CHECKS: PerCpuHashMap<CapabilityKey, u64> =
    PerCpuHashMap::with_max_entries(DEFAULT_CAPABILITY_ENTRIES, 0);

#[unsafe(no_mangle)]
static USER_NS_LEVEL_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static TASK_COMM_OFFSET: u32 = 0;

/// cap_capable(const struct cred *cred, struct user_namespace *target_ns,
/// const struct user_namespace *capable_ns, int cap, int ret): `capable_ns` is the credentials'
/// own user namespace; `ret` is 0 when granted, -EPERM when denied.
#[btf_tracepoint(function = "cap_capable")]
pub fn ks_cap_capable(ctx: BtfTracePointContext) -> i32 {
    let capable_ns: *const u8 = ctx.arg(2);
    let cap: i32 = ctx.arg(3);
    let ret: i32 = ctx.arg(4);
    // SAFETY: BTF pointers from the tracepoint and the kernel, at offsets read from its BTF.
    let (level, cgroup_id) = unsafe {
        let task = bpf_get_current_task_btf() as *const u8;
        let comm: u64 = load(task, global(&TASK_COMM_OFFSET));
        if comm & RUNC_COMM_MASK == RUNC_COMM_PREFIX {
            return 0; // the runtime setting a container up
        }
        let level: i32 = load(capable_ns, global(&USER_NS_LEVEL_OFFSET));
        (level, task_cgroup(task).1)
    };
    let key = CapabilityKey {
        cgroup_id,
        cap: cap as u32,
        result: if ret == 0 { GRANTED } else { DENIED },
        userns: if level == 0 { INITIAL_USER_NS } else { NESTED_USER_NS },
        _pad: [0; 2],
    };
    let overflow = CapabilityKey { cgroup_id: OVERFLOW_CGROUP_ID, ..key };
    add(&CAPABILITY_CHECKS, &key, &overflow, map_full::CAPABILITY_CHECKS, 1);
    0
}
