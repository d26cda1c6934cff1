//! Capability checks: `cap_capable` fires once per capability the kernel checks (binding a port
//! below 1024, changing uid, mounting, ...), granted or denied. Counted per (cgroup, capability,
//! result, user namespace of the credentials) in a per-CPU hash; nothing is streamed. The hot
//! path is the cgroup walk and one per-CPU hash update. Checks made by runc while it sets a
//! container up are skipped: those of a task named like runc's stages whose executable is one of
//! the runtime binaries user space names (`runtimes`).

use aya_ebpf::{
    macros::{btf_tracepoint, fexit, map},
    maps::PerCpuHashMap,
    programs::{BtfTracePointContext, FExitContext},
};
use kernsight_common::{
    capabilities::{
        CapabilityKey, DEFAULT_CAPABILITY_ENTRIES, DENIED, GRANTED, INITIAL_USER_NS, NESTED_USER_NS,
    },
    counters::{OVERFLOW_CGROUP_ID, map_full},
};

use crate::{
    counters::add,
    features,
    runtimes::runtime_stage,
    task::{global, load, task_cgroup_with},
};

#[map]
static CAPABILITY_CHECKS: PerCpuHashMap<CapabilityKey, u64> =
    PerCpuHashMap::with_max_entries(DEFAULT_CAPABILITY_ENTRIES, 0);

#[unsafe(no_mangle)]
static USER_NS_LEVEL_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CRED_USER_NS_OFFSET: u32 = 0;

/// cap_capable(const struct cred *cred, struct user_namespace *target_ns,
/// const struct user_namespace *capable_ns, int cap, int ret): `capable_ns` is the credentials'
/// own user namespace; `ret` is 0 when granted, -EPERM when denied.
#[btf_tracepoint(function = "cap_capable")]
pub fn ks_cap_capable(ctx: BtfTracePointContext) -> i32 {
    count_check(ctx.arg(2), ctx.arg(3), ctx.arg(4));
    0
}

/// The function under that tracepoint, for kernels that do not have the tracepoint (6.12 and
/// older): int cap_capable(const struct cred *cred, struct user_namespace *target_ns, int cap,
/// unsigned int opts), its result after the arguments. The tracepoint's `capable_ns` is
/// `cred->user_ns`, so the counts are the same.
#[fexit(function = "cap_capable")]
pub fn ks_cap_capable_exit(ctx: FExitContext) -> i32 {
    let cred: *const u8 = ctx.arg(0);
    // SAFETY: a BTF pointer from the traced function, at an offset read from the kernel's BTF.
    let capable_ns: *const u8 = unsafe { load(cred, global(&CRED_USER_NS_OFFSET)) };
    count_check(capable_ns, ctx.arg(2), ctx.arg(4));
    0
}

/// Counts one check of `cap` in the credentials' user namespace `capable_ns` (a BTF pointer)
/// with result `ret`, unless the runtime makes it.
#[inline(always)]
fn count_check(capable_ns: *const u8, cap: i32, ret: i32) {
    // SAFETY: the current task read as the object's features say; `capable_ns` is a BTF
    // pointer; offsets read from the kernel's BTF.
    let (level, cgroup_id) = unsafe {
        let task = features::current_task();
        if runtime_stage::<features::CurrentRead>(task) {
            return; // the runtime setting a container up
        }
        let level: i32 = load(capable_ns, global(&USER_NS_LEVEL_OFFSET));
        (level, task_cgroup_with::<features::CurrentRead>(task).1)
    };
    let key = CapabilityKey {
        cgroup_id,
        cap: cap as u32,
        result: if ret == 0 { GRANTED } else { DENIED },
        userns: if level == 0 { INITIAL_USER_NS } else { NESTED_USER_NS },
        _pad: [0; 2],
    };
    let overflow = || CapabilityKey { cgroup_id: OVERFLOW_CGROUP_ID, ..key };
    add(&CAPABILITY_CHECKS, &key, overflow, map_full::CAPABILITY_CHECKS, 1);
}
