//! Specialising the kernel programs to the running kernel and the configuration before the
//! verifier sees them: member offsets from the kernel's BTF, tracepoint record layouts and
//! feature flags go in as read-only globals (so the verifier checks every load against real
//! types and prunes what is off), bounds from the config as map sizes, and the pinned maps at
//! their paths.

use aya::{Btf, Ebpf, EbpfError, EbpfLoader};
use kernsight_common::{
    cgroups::{CGROUP_ROOT_OFFSET_GLOBAL, ROOT_HIERARCHY_ID_OFFSET_GLOBAL},
    net as net_wire,
    oom::OOM_COMM_DATA_LOC_GLOBAL,
    sched::{
        BINPRM_FILENAME_OFFSET_GLOBAL, MM_ARG_END_OFFSET_GLOBAL, MM_ARG_START_OFFSET_GLOBAL,
        PROCESS_COUNTS_MAP, RUNQ_LATENCY_MAP, TASK_EXIT_CODE_OFFSET_GLOBAL, TASK_MM_OFFSET_GLOBAL,
        TASK_PID_OFFSET_GLOBAL, TASK_REAL_PARENT_OFFSET_GLOBAL, TASK_TGID_OFFSET_GLOBAL,
    },
    security::{CAPABILITY_CHECKS_MAP, TASK_COMM_OFFSET_GLOBAL, USER_NS_LEVEL_OFFSET_GLOBAL},
    syscalls as wire,
};

use super::{net, pins::Pins, sched, security, syscalls};
use crate::config::Config;

/// What was read from the running kernel for the programs (zeros where BTF or tracefs lacked
/// something: the families that need it then report why and are not attached).
pub struct KernelFacts {
    pub walk: syscalls::CgroupOffsets,
    pub task: sched::TaskOffsets,
    pub security: security::SecurityOffsets,
    pub sock: net::SockOffsets,
    /// (global, offset in the `oom:mark_victim` record) of each field the OOM family reads.
    pub oom_fields: Vec<(&'static str, u32)>,
    pub oom_comm_data_loc: u32,
    pub retransmit_has_err: u32,
    pub kfree_skb_has_rx_sk: u32,
}

/// Sets the globals of the walk from a task to its cgroup and of the task's own fields (pid,
/// parent, exit code, arguments), which the agent's programs and those of `kernsight trace`
/// share.
pub fn task_globals<'a, 'b>(
    loader: &'b mut EbpfLoader<'a>,
    walk: &'a syscalls::CgroupOffsets,
    task: &'a sched::TaskOffsets,
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

/// Loads `object` (maps and programs, none attached yet), opening or creating the pinned maps at
/// their paths when `pins` is given.
pub fn load(
    object: &[u8],
    btf: &Btf,
    facts: &KernelFacts,
    config: &Config,
    pins: Option<&Pins>,
) -> Result<Ebpf, EbpfError> {
    let latency = u8::from(config.syscalls.latency_histogram);
    let slots = config.syscalls.max_cgroups;
    let mut loader = EbpfLoader::new();
    loader
        .override_global(net_wire::SOCK_CGROUP_DATA_OFFSET_GLOBAL, &facts.sock.cgrp_data, true)
        .override_global(net_wire::SOCK_CGROUP_DATA_CGROUP_OFFSET_GLOBAL, &facts.sock.cgrp_data_cgroup, true)
        .override_global(net_wire::SOCK_STATE_OFFSET_GLOBAL, &facts.sock.state, true)
        .override_global(net_wire::SOCK_PROTOCOL_OFFSET_GLOBAL, &facts.sock.protocol, true)
        .override_global(net_wire::SKB_SK_OFFSET_GLOBAL, &facts.sock.skb_sk, true)
        .override_global(net_wire::SKB_TCP_GSO_SEGS_OFFSET_GLOBAL, &facts.sock.skb_tcp_gso_segs, true)
        .override_global(net_wire::RETRANSMIT_HAS_ERR_GLOBAL, &facts.retransmit_has_err, true)
        .override_global(net_wire::KFREE_SKB_HAS_RX_SK_GLOBAL, &facts.kfree_skb_has_rx_sk, true)
        .map_max_entries(net_wire::CGROUP_TRAFFIC_MAP, config.network.cgroup_traffic_max_entries)
        .map_max_entries(net_wire::INTERFACE_TRAFFIC_MAP, config.network.interface_traffic_max_entries)
        .map_max_entries(net_wire::TCP_EVENTS_MAP, config.network.tcp_max_entries)
        .map_max_entries(net_wire::TCP_STARTS_MAP, config.network.tcp_tracked_connections)
        .map_max_entries(net_wire::CGROUP_DROPS_MAP, config.network.drop_max_entries);
    for (global, offset) in &facts.oom_fields {
        loader.override_global(global, offset, true);
    }
    if let Some(pins) = pins {
        pins.apply(&mut loader);
    }
    loader
        .btf(btf)
        .override_global(OOM_COMM_DATA_LOC_GLOBAL, &facts.oom_comm_data_loc, true)
        // RUNQ_START is task local storage, which aya creates but has no user-space type for
        // (nothing reads it from user space).
        .allow_unsupported_maps()
        .override_global(wire::LATENCY_ENABLED_GLOBAL, &latency, true);
    task_globals(&mut loader, &facts.walk, &facts.task)
        .map_max_entries(RUNQ_LATENCY_MAP, config.sched.runqueue_max_entries)
        .map_max_entries(PROCESS_COUNTS_MAP, config.sched.process_max_entries)
        .override_global(USER_NS_LEVEL_OFFSET_GLOBAL, &facts.security.user_ns_level, true)
        .override_global(TASK_COMM_OFFSET_GLOBAL, &facts.security.task_comm, true)
        .map_max_entries(CAPABILITY_CHECKS_MAP, config.security.capability_max_entries)
        .map_max_entries(wire::SYSCALL_ROWS_MAP, slots + 1)
        .map_max_entries(wire::SLOT_OWNERS_MAP, slots + 1)
        .map_max_entries(wire::FREE_SLOTS_MAP, slots)
        .map_max_entries(wire::SYSCALL_ERRORS_MAP, config.syscalls.max_error_entries)
        .map_max_entries(wire::SYSCALL_LATENCY_MAP, config.syscalls.latency_max_entries)
        .load(object)
}
