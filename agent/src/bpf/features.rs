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
            tracing_programs: tracing_programs(),
        }
    }

    /// What the full build of the programs needs and this kernel lacks, one phrase each.
    pub fn missing_for_full_object(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if !self.cgroup_storage {
            missing.push(CGROUP_STORAGE);
        }
        missing.extend(self.missing_for_task_storage());
        missing
    }

    /// What the builds that keep timestamps in the task need and this kernel lacks.
    fn missing_for_task_storage(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if !self.task_storage {
            missing.push("task local storage (BPF_MAP_TYPE_TASK_STORAGE, 5.11+)");
        }
        if !self.current_task_btf {
            missing.push("bpf_get_current_task_btf (5.11+)");
        }
        missing
    }
}

/// Whether the kernel loads fentry/fexit programs, asked once a process. aya's probe parses the
/// kernel's BTF itself (15 MiB of heap on 6.18, for a moment): a loader asks before it parses
/// the BTF it keeps, so that the two are never held at once.
pub fn tracing_programs() -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER
        .get_or_init(|| probed("fentry/fexit programs", aya::sys::is_program_supported(ProgramType::Tracing)))
}

const CGROUP_STORAGE: &str = "cgroup local storage (BPF_MAP_TYPE_CGRP_STORAGE, 6.2+)";

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
    /// `kernsight`: local storage and BTF pointers to the current task (6.2+).
    Full,
    /// `kernsight-hashed-slots`: the full build, but a cgroup's syscall slot in a hash by cgroup
    /// id (5.11 to 6.1 have no cgroup local storage); `why` says what made it the choice.
    HashedSlots { why: String },
    /// `kernsight-fallback`: hashes and probe reads (5.10); `why` says what made it the choice.
    Fallback { why: String },
}

impl Object {
    /// The build for these features and the config's `bpf.object`.
    pub fn choose(features: &Features, choice: ObjectChoice) -> Self {
        let lacks = |missing: Vec<&str>| format!("the kernel lacks {}", missing.join(", "));
        match choice {
            ObjectChoice::Fallback => {
                Self::Fallback { why: "bpf.object = \"fallback\" in the configuration".into() }
            }
            ObjectChoice::HashedSlots => match features.missing_for_task_storage() {
                missing if missing.is_empty() => {
                    Self::HashedSlots { why: "bpf.object = \"hashed-slots\" in the configuration".into() }
                }
                missing => Self::Fallback {
                    why: format!(
                        "bpf.object = \"hashed-slots\" in the configuration, but {}",
                        lacks(missing)
                    ),
                },
            },
            ObjectChoice::Auto => match (features.cgroup_storage, features.missing_for_task_storage()) {
                (true, missing) if missing.is_empty() => Self::Full,
                (false, missing) if missing.is_empty() => {
                    Self::HashedSlots { why: lacks(vec![CGROUP_STORAGE]) }
                }
                _ => Self::Fallback { why: lacks(features.missing_for_full_object()) },
            },
        }
    }

    /// The probe-read build, the last resort: nothing older to fall back to.
    pub fn is_fallback(&self) -> bool {
        matches!(self, Self::Fallback { .. })
    }

    /// Whether this build keeps a cgroup's syscall slot in a hash by cgroup id (which the agent
    /// empties as it recycles slots) rather than in the cgroup.
    pub fn slots_by_id(&self) -> bool {
        !matches!(self, Self::Full)
    }

    /// Why this build and not the full one; `None` for the full one.
    pub fn why(&self) -> Option<&str> {
        match self {
            Self::Full => None,
            Self::HashedSlots { why } | Self::Fallback { why } => Some(why),
        }
    }

    /// The build's name (its binary in `agent-ebpf`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Full => "kernsight",
            Self::HashedSlots { .. } => "kernsight-hashed-slots",
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
    fn each_kernel_gets_the_build_of_what_it_has() {
        assert_eq!(Object::choose(&ALL, ObjectChoice::Auto), Object::Full);
        let linux_6_1 = Features { cgroup_storage: false, cap_capable_tracepoint: false, ..ALL };
        let chosen = Object::choose(&linux_6_1, ObjectChoice::Auto);
        assert_eq!(chosen.name(), "kernsight-hashed-slots");
        assert_eq!(
            chosen.why(),
            Some("the kernel lacks cgroup local storage (BPF_MAP_TYPE_CGRP_STORAGE, 6.2+)")
        );
        assert!(chosen.slots_by_id() && !chosen.is_fallback());
        let linux_5_10 = Features { task_storage: false, current_task_btf: false, ..linux_6_1 };
        assert_eq!(linux_5_10.missing_for_full_object().len(), 3);
        let chosen = Object::choose(&linux_5_10, ObjectChoice::Auto);
        assert!(chosen.is_fallback() && chosen.slots_by_id());
        assert_eq!(chosen.why().map(|why| why.matches("5.11+").count()), Some(2), "{chosen:?}");
        // Task local storage without cgroup local storage is not enough for the full build.
        let no_task_storage = Features { task_storage: false, ..ALL };
        assert!(Object::choose(&no_task_storage, ObjectChoice::Auto).is_fallback());
    }

    #[test]
    fn the_configuration_forces_an_older_build_only_where_it_loads() {
        assert!(Object::choose(&ALL, ObjectChoice::Fallback).is_fallback());
        let forced = Object::choose(&ALL, ObjectChoice::HashedSlots);
        assert_eq!(forced.name(), "kernsight-hashed-slots");
        assert!(forced.why().is_some_and(|why| why.contains("bpf.object")));
        let linux_5_10 =
            Features { task_storage: false, current_task_btf: false, cgroup_storage: false, ..ALL };
        let refused = Object::choose(&linux_5_10, ObjectChoice::HashedSlots);
        assert!(refused.is_fallback());
        assert!(
            refused
                .why()
                .is_some_and(|why| why.contains("hashed-slots") && why.contains("task local storage"))
        );
        assert!(!Object::Full.slots_by_id() && Object::Full.why().is_none());
    }
}
