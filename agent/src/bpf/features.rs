//! Feature probing: what the running kernel offers the programs, asked of the kernel itself (a
//! map of the type created and dropped, a helper call given to the verifier, names looked up in
//! its BTF), never inferred from its version number: distributions backport. The facts choose
//! which build of the programs is loaded and which implementation each family runs.

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_map_supported},
};
use tracing::info;

use crate::{config::ObjectChoice, kernel::btf::Btf};

/// Kernel features some programs use, each probed once at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Features {
    /// `BPF_MAP_TYPE_CGRP_STORAGE` (6.2+): the syscall family's slot per cgroup.
    pub cgroup_storage: bool,
    /// `BPF_MAP_TYPE_TASK_STORAGE` (5.11+): the runqueue family's runnable-since time.
    pub task_storage: bool,
    /// `bpf_get_current_task_btf()` (5.11+): the current task read with plain loads.
    pub current_task_btf: bool,
    /// The `capability:cap_capable` BTF tracepoint (newer than 6.12).
    pub cap_capable_tracepoint: bool,
    /// `cap_capable` in the kernel's BTF, for fexit (the fallback of the tracepoint).
    pub cap_capable_function: bool,
    /// BPF trampolines (fentry/fexit programs, `BPF_PROG_TYPE_TRACING`: 5.5+ on x86_64).
    pub tracing_programs: bool,
}

impl Features {
    /// Probes the running kernel; `btf` is its BTF (`None` when it could not be read: then no
    /// BTF name is found).
    pub fn probe(btf: Option<&Btf>) -> Self {
        Self {
            cgroup_storage: probed("cgroup local storage", is_map_supported(MapType::CgrpStorage)),
            task_storage: probed("task local storage", is_map_supported(MapType::TaskStorage)),
            current_task_btf: probed(
                "bpf_get_current_task_btf",
                is_helper_supported(ProgramType::TracePoint, BpfHelper::BPF_FUNC_get_current_task_btf),
            ),
            cap_capable_tracepoint: btf.is_some_and(|btf| btf.has_tracepoint("cap_capable")),
            cap_capable_function: btf.is_some_and(|btf| btf.has_function("cap_capable")),
            tracing_programs: probed(
                "fentry/fexit programs",
                aya::sys::is_program_supported(ProgramType::Tracing),
            ),
        }
    }

    /// What the full build of the programs needs and this kernel lacks, one phrase each.
    pub fn missing_for_full_object(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if !self.cgroup_storage {
            missing.push("cgroup local storage (BPF_MAP_TYPE_CGRP_STORAGE, 6.2+)");
        }
        if !self.task_storage {
            missing.push("task local storage (BPF_MAP_TYPE_TASK_STORAGE, 5.11+)");
        }
        if !self.current_task_btf {
            missing.push("bpf_get_current_task_btf (5.11+)");
        }
        missing
    }
}

/// A probe's answer; a probe that could not ask (an unexpected error) counts as "no" and says so.
fn probed<E: std::fmt::Display>(feature: &str, answer: Result<bool, E>) -> bool {
    answer.unwrap_or_else(|err| {
        info!("probing the kernel for {feature} failed ({err}): taken as missing");
        false
    })
}

/// Which build of the kernel programs is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// `kernsight`: local storage and BTF pointers to the current task.
    Full,
    /// `kernsight-fallback`: hashes and probe reads; `why` says what made it the choice.
    Fallback { why: String },
}

impl Object {
    /// The build for these features and the config's `bpf.object`.
    pub fn choose(features: &Features, choice: ObjectChoice) -> Self {
        if choice == ObjectChoice::Fallback {
            return Self::Fallback { why: "bpf.object = \"fallback\" in the configuration".into() };
        }
        let missing = features.missing_for_full_object();
        if missing.is_empty() {
            Self::Full
        } else {
            Self::Fallback { why: format!("the kernel lacks {}", missing.join(", ")) }
        }
    }

    pub fn is_fallback(&self) -> bool {
        matches!(self, Self::Fallback { .. })
    }

    /// The build's name (its binary in `agent-ebpf`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Full => "kernsight",
            Self::Fallback { .. } => "kernsight-fallback",
        }
    }
}

/// Which implementation of a family runs; `fallback` says why it is not the first choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Implementation {
    pub name: &'static str,
    pub fallback: Option<String>,
}

impl Implementation {
    /// The family's only (or first-choice) implementation.
    pub fn standard(name: &'static str) -> Self {
        Self { name, fallback: None }
    }

    pub fn fallback(name: &'static str, why: impl Into<String>) -> Self {
        Self { name, fallback: Some(why.into()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Features = Features {
        cgroup_storage: true,
        task_storage: true,
        current_task_btf: true,
        cap_capable_tracepoint: true,
        cap_capable_function: true,
        tracing_programs: true,
    };

    #[test]
    fn the_full_object_needs_local_storage_and_btf_current_task() {
        assert_eq!(Object::choose(&ALL, ObjectChoice::Auto), Object::Full);
        let linux_6_1 = Features { cgroup_storage: false, cap_capable_tracepoint: false, ..ALL };
        let Object::Fallback { why } = Object::choose(&linux_6_1, ObjectChoice::Auto) else {
            panic!("6.1 has no cgroup local storage")
        };
        assert_eq!(why, "the kernel lacks cgroup local storage (BPF_MAP_TYPE_CGRP_STORAGE, 6.2+)");
        let linux_5_10 = Features { task_storage: false, current_task_btf: false, ..linux_6_1 };
        assert_eq!(linux_5_10.missing_for_full_object().len(), 3);
        assert!(Object::choose(&ALL, ObjectChoice::Fallback).is_fallback());
    }
}
