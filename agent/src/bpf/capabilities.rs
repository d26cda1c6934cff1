//! The `capabilities` family: `ks_cap_capable` on the `cap_capable` BTF tracepoint counts the
//! capability checks of each cgroup, granted and denied, in the kernel.

use std::time::Duration;

use anyhow::Context as _;
use aya::{Btf, Ebpf, EbpfLoader, programs::FExit};
use kernsight_common::{
    capabilities::{
        CAPABILITY_CHECKS_MAP, CRED_USER_NS_OFFSET_GLOBAL, CapabilityKey, DENIED, GRANTED, INITIAL_USER_NS,
        NESTED_USER_NS, USER_NS_LEVEL_OFFSET_GLOBAL,
    },
    counters::{OVERFLOW_CGROUP_ID, map_full},
};

use super::{
    counters::{CgroupCounters, Row},
    facts::KernelFacts,
    family::{AttachContext, Attached, Family, MapRow, attached_any},
    features::Implementation,
    load_and_attach, runtimes,
};
use crate::{config::Config, kernel::btf};

pub const PROBE: &str = "capabilities";
/// The `capability:cap_capable` BTF tracepoint, where the kernel has it.
const TRACEPOINT_PROGRAMS: [(&str, &str); 1] = [("ks_cap_capable", "cap_capable")];
/// Else fexit on the function `cap_capable` (same checks, same result).
const FEXIT_PROGRAM: &str = "ks_cap_capable_exit";
const FUNCTION: &str = "cap_capable";

/// How the family hooks capability checks on this kernel; `None`: it cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    Tracepoint,
    Fexit,
}

impl Hook {
    fn choose(facts: &KernelFacts) -> Option<Self> {
        let features = &facts.features;
        if features.cap_capable_tracepoint {
            Some(Self::Tracepoint)
        } else if features.cap_capable_function && features.tracing_programs {
            Some(Self::Fexit)
        } else {
            None
        }
    }
}

/// Capability checks per cgroup, granted and denied.
pub struct Capabilities;

impl Family for Capabilities {
    fn name(&self) -> &'static str {
        PROBE
    }

    fn programs(&self, _config: &Config, facts: &KernelFacts) -> Vec<&'static str> {
        match Hook::choose(facts) {
            Some(Hook::Fexit) => vec![FEXIT_PROGRAM],
            _ => TRACEPOINT_PROGRAMS.iter().map(|(p, _)| *p).collect(),
        }
    }

    fn implementation(&self, facts: &KernelFacts, _config: &Config) -> Implementation {
        match Hook::choose(facts) {
            Some(Hook::Fexit) => Implementation::fallback(
                "fexit",
                "fexit on cap_capable: the kernel has no capability:cap_capable tracepoint",
            ),
            _ => Implementation::standard("tracepoint"),
        }
    }

    fn enabled(&self, config: &Config) -> bool {
        config.security.capability_checks
    }

    fn set_enabled(&self, config: &mut Config, on: bool) {
        config.security.capability_checks = on;
    }

    fn unsupported(&self, facts: &KernelFacts, _config: &Config) -> Option<String> {
        facts.need_walk().err().or_else(|| {
            if let Err(err) = &facts.security {
                return Some(format!("cannot read user_namespace, task_struct and cred members: {err}"));
            }
            let features = &facts.features;
            match Hook::choose(facts) {
                Some(_) => None,
                None if !features.cap_capable_function => Some(
                    "the kernel has neither the capability:cap_capable tracepoint nor a cap_capable \
                     function in its BTF for fexit"
                        .into(),
                ),
                None => Some(
                    "the kernel has no capability:cap_capable tracepoint, and no fexit programs \
                     (BPF_PROG_TYPE_TRACING) for the cap_capable function"
                        .into(),
                ),
            }
        })
    }

    fn configure<'a>(&self, loader: &mut EbpfLoader<'a>, facts: &'a KernelFacts, _config: &Config) {
        let offsets = &facts.offsets.security;
        loader.override_global(USER_NS_LEVEL_OFFSET_GLOBAL, &offsets.user_ns_level, true).override_global(
            CRED_USER_NS_OFFSET_GLOBAL,
            &offsets.cred_user_ns,
            true,
        );
        runtimes::configure(loader, offsets);
    }

    fn maps(&self) -> &'static [&'static str] {
        &[CAPABILITY_CHECKS_MAP]
    }

    fn map_entries(&self, config: &Config) -> Vec<(&'static str, u32)> {
        vec![(CAPABILITY_CHECKS_MAP, config.security.capability_max_entries)]
    }

    fn pinned_maps(&self) -> &'static [&'static str] {
        &[CAPABILITY_CHECKS_MAP]
    }

    fn bounds(&self) -> &'static [(&'static str, u32)] {
        &[(CAPABILITY_CHECKS_MAP, map_full::CAPABILITY_CHECKS)]
    }

    fn attach(&self, cx: &mut AttachContext<'_>) -> anyhow::Result<Box<dyn Attached>> {
        let hook = Hook::choose(cx.facts).unwrap_or(Hook::Tracepoint);
        let security = &cx.config.security;
        let maps = attach(cx.ebpf, cx.btf, security.capability_max_entries, hook)?;
        runtimes::recognise(
            cx.ebpf,
            &security.runtime_root,
            &security.runtime_binaries,
            "capability checks",
        )?;
        Ok(Box::new(maps))
    }
}

/// Offsets of `user_namespace.level`, `task_struct.comm`, `cred.user_ns`, and of the path
/// `mm->exe_file->f_inode->{i_ino, i_sb->s_dev}`, from the running kernel's BTF.
#[derive(Debug, Clone, Copy, Default)]
pub struct SecurityOffsets {
    pub user_ns_level: u32,
    pub task_comm: u32,
    pub cred_user_ns: u32,
    pub mm_exe_file: u32,
    pub file_inode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
}

impl SecurityOffsets {
    pub fn read(btf: &btf::Btf) -> Result<Self, btf::BtfError> {
        Ok(Self {
            user_ns_level: btf.member_offset("user_namespace", "level")?,
            task_comm: btf.member_offset("task_struct", "comm")?,
            cred_user_ns: btf.member_offset("cred", "user_ns")?,
            mm_exe_file: btf.member_offset("mm_struct", "exe_file")?,
            file_inode: btf.member_offset("file", "f_inode")?,
            inode_ino: btf.member_offset("inode", "i_ino")?,
            inode_sb: btf.member_offset("inode", "i_sb")?,
            sb_dev: btf.member_offset("super_block", "s_dev")?,
        })
    }
}

/// The highest capability number this kernel knows (`/proc/sys/kernel/cap_last_cap`).
fn last_capability() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(40)
        .min(kernsight_common::capabilities::MAX_CAPABILITY)
}

/// The maps of the attached `capabilities` family.
pub struct CapabilityMaps {
    checks: CgroupCounters<CapabilityKey>,
}

fn attach(ebpf: &mut Ebpf, btf: &Btf, capacity: u32, hook: Hook) -> anyhow::Result<CapabilityMaps> {
    // One overflow entry per (capability, result, user namespace), so that `other` keeps those
    // labels.
    let overflow = (0..=last_capability()).flat_map(|cap| {
        [GRANTED, DENIED].into_iter().flat_map(move |result| {
            [INITIAL_USER_NS, NESTED_USER_NS].into_iter().map(move |userns| CapabilityKey {
                cgroup_id: OVERFLOW_CGROUP_ID,
                cap,
                result,
                userns,
                _pad: [0; 2],
            })
        })
    });
    let checks = CgroupCounters::take(ebpf, CAPABILITY_CHECKS_MAP, capacity, overflow)?;
    match hook {
        Hook::Tracepoint => load_and_attach(ebpf, btf, &TRACEPOINT_PROGRAMS)?,
        Hook::Fexit => {
            let program: &mut FExit = ebpf
                .program_mut(FEXIT_PROGRAM)
                .with_context(|| format!("program {FEXIT_PROGRAM} missing from the object"))?
                .try_into()?;
            program
                .load(FUNCTION, btf)
                .with_context(|| format!("loading {FEXIT_PROGRAM} (fexit/{FUNCTION})"))?;
            program.attach().with_context(|| format!("attaching {FEXIT_PROGRAM}"))?;
        }
    }
    Ok(CapabilityMaps { checks })
}

impl CapabilityMaps {
    /// Checks per (cgroup, capability, result, user namespace).
    pub fn read(&self) -> (Vec<Row<CapabilityKey>>, u64) {
        self.checks.read()
    }
}

impl Attached for CapabilityMaps {
    attached_any!();

    fn map_rows(&self) -> Vec<MapRow> {
        vec![self.checks.map_row()]
    }

    fn recycle(&mut self, gone_for: &mut dyn FnMut(u64) -> Option<Duration>, grace: Duration) -> usize {
        self.checks.recycle(gone_for, grace)
    }
}
