//! Whether this node can run kernsight, and how: the facts the agent reads at start-up (BTF,
//! cgroup hierarchies, probed features, the build of the programs they choose) and, per family,
//! what the agent would do with them. Nothing is loaded or attached: `kernsight check` reports
//! it before a deployment.

use serde::Serialize;

use super::{FAMILIES, facts::KernelFacts, features::Features};
use crate::{
    config::Config,
    kernel::{btf::Btf, cgroupfs::Hierarchies},
};

#[derive(Debug, Serialize)]
pub struct Readiness {
    /// `uname -r`.
    pub kernel: String,
    /// Whether the kernel's BTF could be read (everything needs it), and if not why.
    pub btf: bool,
    pub btf_error: Option<String>,
    pub cgroups: Cgroups,
    /// The build of the programs the agent would load.
    pub object: &'static str,
    /// Why that build is the fallback one, if it is.
    pub object_fallback: Option<String>,
    pub features: Features,
    pub families: Vec<FamilyReadiness>,
}

#[derive(Debug, Serialize)]
pub struct Cgroups {
    /// `v2`, `hybrid`, `v1` or `none`.
    pub layout: &'static str,
    pub unified: Option<String>,
    pub v1: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct FamilyReadiness {
    pub name: &'static str,
    pub verdict: Verdict,
    pub implementation: &'static str,
    /// Why it cannot run, or why it runs with a fallback.
    pub why: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Runs,
    RunsWithFallback,
    CannotRun,
    Disabled,
}

impl Verdict {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Runs => "will run",
            Self::RunsWithFallback => "runs with fallback",
            Self::CannotRun => "cannot run",
            Self::Disabled => "disabled by config",
        }
    }
}

impl Readiness {
    /// Reads the facts as the agent does and judges every family with `config`.
    pub fn assess(config: &Config, hierarchies: Hierarchies) -> Self {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|release| release.trim().to_owned())
            .unwrap_or_else(|err| format!("unknown ({err})"));
        let cgroups = Cgroups {
            layout: match (&hierarchies.unified, &hierarchies.v1) {
                (Some(_), None) => "v2",
                (Some(_), Some(_)) => "hybrid",
                (None, Some(_)) => "v1",
                (None, None) => "none",
            },
            unified: hierarchies.unified.as_ref().map(|path| path.display().to_string()),
            v1: hierarchies
                .v1
                .as_ref()
                .map(|(controller, path)| format!("{controller} at {}", path.display())),
        };
        let btf = Btf::from_sys_fs();
        let facts = KernelFacts::read(btf.as_ref(), hierarchies, config);
        let btf_error = btf.as_ref().err().map(ToString::to_string);
        let families = FAMILIES
            .iter()
            .map(|family| {
                let implementation = family.implementation(&facts, config);
                let (verdict, why) = if !family.enabled(config) {
                    (Verdict::Disabled, None)
                } else if let Some(why) = family.unsupported(&facts, config) {
                    (Verdict::CannotRun, Some(why))
                } else if let Some(why) = implementation.fallback {
                    (Verdict::RunsWithFallback, Some(why))
                } else {
                    (Verdict::Runs, None)
                };
                FamilyReadiness { name: family.name(), verdict, implementation: implementation.name, why }
            })
            .collect();
        Self {
            kernel,
            btf: btf_error.is_none(),
            btf_error,
            cgroups,
            object: facts.object.name(),
            object_fallback: facts.object.why().map(str::to_owned),
            features: facts.features,
            families,
        }
    }

    /// Whether every enabled family can run (with or without a fallback).
    pub fn all_enabled_run(&self) -> bool {
        self.btf && self.families.iter().all(|family| family.verdict != Verdict::CannotRun)
    }
}
