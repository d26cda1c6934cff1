//! Specialising the kernel programs to the running kernel and the configuration before the
//! verifier sees them: member offsets from the kernel's BTF, tracepoint record layouts and
//! feature flags go in as read-only globals (so the verifier checks every load against real
//! types and prunes what is off), the map sizes of the memory plan (`budget`), and the pinned maps at
//! their paths.

use aya::{Btf, Ebpf, EbpfError, EbpfLoader};
use kernsight_common::{
    cgroups::{CGROUP_ROOT_OFFSET_GLOBAL, ROOT_HIERARCHY_ID_OFFSET_GLOBAL},
    processes::{
        BINPRM_FILENAME_OFFSET_GLOBAL, MM_ARG_END_OFFSET_GLOBAL, MM_ARG_START_OFFSET_GLOBAL,
        TASK_EXIT_CODE_OFFSET_GLOBAL, TASK_MM_OFFSET_GLOBAL, TASK_PID_OFFSET_GLOBAL,
        TASK_REAL_PARENT_OFFSET_GLOBAL, TASK_TGID_OFFSET_GLOBAL,
    },
    syscalls as wire,
};

use super::{FAMILIES, budget::MapPlan, cgroup_walk::CgroupOffsets, facts::KernelFacts, pins::Pins, task};

/// Sets the globals of the walk from a task to its cgroup and of the task's own fields (pid,
/// parent, exit code, arguments), which the agent's programs and those of `kernsight trace`
/// share.
pub fn task_globals<'a, 'b>(
    loader: &'b mut EbpfLoader<'a>,
    walk: &'a CgroupOffsets,
    task: &'a task::TaskOffsets,
) -> &'b mut EbpfLoader<'a> {
    loader
        .override_global(wire::TASK_CGROUPS_OFFSET_GLOBAL, &walk.task_cgroups, true)
        .override_global(wire::CSS_SET_DFL_CGRP_OFFSET_GLOBAL, &walk.css_set_dfl_cgrp, true)
        .override_global(wire::CGROUP_KN_OFFSET_GLOBAL, &walk.cgroup_kn, true)
        .override_global(wire::KERNFS_NODE_ID_OFFSET_GLOBAL, &walk.kernfs_node_id, true)
        .override_global(wire::CSS_SET_SUBSYS_OFFSET_GLOBAL, &walk.css_set_subsys, true)
        .override_global(wire::CSS_CGROUP_OFFSET_GLOBAL, &walk.css_cgroup, true)
        .override_global(wire::V1_SUBSYS_ID_GLOBAL, &walk.v1_subsys, true)
        .override_global(CGROUP_ROOT_OFFSET_GLOBAL, &walk.cgroup_root, true)
        .override_global(ROOT_HIERARCHY_ID_OFFSET_GLOBAL, &walk.root_hierarchy_id, true)
        .override_global(TASK_PID_OFFSET_GLOBAL, &task.pid, true)
        .override_global(TASK_TGID_OFFSET_GLOBAL, &task.tgid, true)
        .override_global(TASK_EXIT_CODE_OFFSET_GLOBAL, &task.exit_code, true)
        .override_global(TASK_REAL_PARENT_OFFSET_GLOBAL, &task.real_parent, true)
        .override_global(TASK_MM_OFFSET_GLOBAL, &task.mm, true)
        .override_global(MM_ARG_START_OFFSET_GLOBAL, &task.mm_arg_start, true)
        .override_global(MM_ARG_END_OFFSET_GLOBAL, &task.mm_arg_end, true)
        .override_global(BINPRM_FILENAME_OFFSET_GLOBAL, &task.binprm_filename, true)
}

/// Loads `object` (maps and programs, none attached yet), each family specialising it, every
/// map at the size `plan` gives it, opening or creating the pinned maps at their paths when
/// `pins` is given (idle maps are not pinned).
pub fn load(
    object: &[u8],
    btf: &Btf,
    facts: &KernelFacts,
    plan: &MapPlan,
    pins: Option<&Pins>,
) -> Result<Ebpf, EbpfError> {
    let mut loader = EbpfLoader::new();
    // Task local storage (RUNQ_START) is created by aya but has no user-space type: nothing
    // reads it from user space.
    loader.btf(btf).allow_unsupported_maps();
    task_globals(&mut loader, &facts.offsets.walk, &facts.offsets.task);
    for family in FAMILIES {
        family.configure(&mut loader, facts, &plan.config);
    }
    for map in plan.maps.iter().filter(|map| map.sized) {
        loader.map_max_entries(&map.name, map.entries);
    }
    if let Some(pins) = pins {
        let idle: Vec<&str> = plan.idle_maps().collect();
        pins.apply(&mut loader, &idle);
    }
    loader.load(object)
}
