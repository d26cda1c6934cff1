//! The `capabilities` family: `ks_cap_capable` on the `cap_capable` BTF tracepoint counts the
//! capability checks of each cgroup, granted and denied, in the kernel.

use std::time::Duration;

use anyhow::Context as _;
use aya::{
    Btf, Ebpf,
    maps::{MapData, PerCpuHashMap},
};
use kernsight_common::{
    security::{CAPABILITY_CHECKS_MAP, CapabilityKey, DENIED, GRANTED, INITIAL_USER_NS, NESTED_USER_NS},
    syscalls::OVERFLOW_CGROUP_ID,
};

use super::{
    ProbeState, ProbeStatus, load_and_attach,
    syscalls::{Row, insert_zeros_if_absent, read_per_cpu},
    take_map,
};
use crate::kernel::btf;

pub const PROBE: &str = "capabilities";
const PROGRAMS: [(&str, &str); 1] = [("ks_cap_capable", "cap_capable")];

pub fn status(state: ProbeState) -> ProbeStatus {
    ProbeStatus {
        name: PROBE,
        programs: PROGRAMS.iter().map(|(p, _)| *p).collect(),
        program_ids: Vec::new(),
        state,
    }
}

/// Offsets of `user_namespace.level` and `task_struct.comm`, from the running kernel's BTF.
#[derive(Debug, Clone, Copy, Default)]
pub struct SecurityOffsets {
    pub user_ns_level: u32,
    pub task_comm: u32,
}

impl SecurityOffsets {
    pub fn read() -> Result<Self, btf::BtfError> {
        let btf = btf::Btf::from_sys_fs()?;
        Ok(Self {
            user_ns_level: btf.member_offset("user_namespace", "level")?,
            task_comm: btf.member_offset("task_struct", "comm")?,
        })
    }
}

/// The highest capability number this kernel knows (`/proc/sys/kernel/cap_last_cap`).
fn last_capability() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(40)
        .min(kernsight_common::security::MAX_CAPABILITY)
}

/// The maps of the attached `capabilities` family.
pub struct CapabilityMaps {
    checks: PerCpuHashMap<MapData, CapabilityKey, u64>,
    pub capacity: u32,
}

pub fn attach(ebpf: &mut Ebpf, btf: &Btf, capacity: u32) -> anyhow::Result<CapabilityMaps> {
    let mut checks: PerCpuHashMap<MapData, CapabilityKey, u64> =
        PerCpuHashMap::try_from(take_map(ebpf, CAPABILITY_CHECKS_MAP)?)?;
    // The overflow entries must exist before the first update can find the map full: one per
    // (capability, result, user namespace), so that `other` keeps those labels.
    for cap in 0..=last_capability() {
        for result in [GRANTED, DENIED] {
            for userns in [INITIAL_USER_NS, NESTED_USER_NS] {
                let key = CapabilityKey { cgroup_id: OVERFLOW_CGROUP_ID, cap, result, userns, _pad: [0; 2] };
                insert_zeros_if_absent(&mut checks, &key)
                    .context("creating the capability overflow entries")?;
            }
        }
    }
    load_and_attach(ebpf, btf, &PROGRAMS)?;
    Ok(CapabilityMaps { checks, capacity })
}

impl CapabilityMaps {
    /// Entries in use, counted by key only: for the map-fill gauge.
    pub fn entries(&self) -> usize {
        self.checks.keys().filter(Result::is_ok).count()
    }

    /// Checks per (cgroup, capability, result, user namespace).
    pub fn read(&self) -> (Vec<Row<CapabilityKey>>, u64) {
        read_per_cpu(&self.checks)
    }

    /// Removes the entries of cgroups gone for at least `grace`; returns how many went.
    pub fn recycle(&mut self, gone_for: &mut dyn FnMut(u64) -> Option<Duration>, grace: Duration) -> usize {
        let stale: Vec<CapabilityKey> = self
            .checks
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                k.cgroup_id != OVERFLOW_CGROUP_ID && gone_for(k.cgroup_id).is_some_and(|gone| gone >= grace)
            })
            .collect();
        stale.iter().filter(|k| self.checks.remove(k).is_ok()).count()
    }
}
