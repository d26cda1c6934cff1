//! The walk from a task to its cgroup that every per-cgroup family shares: member offsets for
//! `current->cgroups->dfl_cgrp->kn->id` and `css_set->subsys[i]->cgroup`, read from the running
//! kernel's BTF, and which v1 controller (`enum cgroup_subsys_id`) attributes v2-root tasks.

use kernsight_common::syscalls::NO_V1_SUBSYS;

use crate::kernel::btf::{Btf, BtfError};

#[derive(Debug, Clone, Copy)]
pub struct CgroupOffsets {
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    pub css_set_subsys: u32,
    pub css_cgroup: u32,
    pub v1_subsys: u32,
    pub cgroup_root: u32,
    pub root_hierarchy_id: u32,
}

impl Default for CgroupOffsets {
    fn default() -> Self {
        Self {
            task_cgroups: 0,
            css_set_dfl_cgrp: 0,
            cgroup_kn: 0,
            kernfs_node_id: 0,
            css_set_subsys: 0,
            css_cgroup: 0,
            v1_subsys: NO_V1_SUBSYS,
            cgroup_root: 0,
            root_hierarchy_id: 0,
        }
    }
}

impl CgroupOffsets {
    /// `v1_controller`: the v1 hierarchy that attributes tasks of the v2 root, if any.
    pub fn read(btf: &Btf, v1_controller: Option<&str>) -> Result<Self, BtfError> {
        let v1_subsys = match v1_controller {
            Some(controller) => btf.enum_value(&format!("{controller}_cgrp_id"))?,
            None => NO_V1_SUBSYS,
        };
        Ok(Self {
            task_cgroups: btf.member_offset("task_struct", "cgroups")?,
            css_set_dfl_cgrp: btf.member_offset("css_set", "dfl_cgrp")?,
            cgroup_kn: btf.member_offset("cgroup", "kn")?,
            kernfs_node_id: btf.member_offset("kernfs_node", "id")?,
            css_set_subsys: btf.member_offset("css_set", "subsys")?,
            css_cgroup: btf.member_offset("cgroup_subsys_state", "cgroup")?,
            v1_subsys,
            cgroup_root: btf.member_offset("cgroup", "root")?,
            root_hierarchy_id: btf.member_offset("cgroup_root", "hierarchy_id")?,
        })
    }
}
