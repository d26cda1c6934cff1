//! `kernsight_syscalls_outside_profile_total{...,profile,syscall}`: of the syscalls a container
//! made, those a seccomp profile would deny. Two questions, from the syscall counters already
//! read for `kernsight_syscalls_total` (no second read of the maps):
//! - `profile="runtime-default"`, for containers that run without seccomp: could this pod move
//!   to `RuntimeDefault` without breaking? (`crate::seccomp` says which profile that is.)
//! - `profile=<baseline>`, for the workloads `security.seccomp_baselines` holds to a profile
//!   file: how far has the workload drifted from it?
//!
//! A syscall whose verdict depends on its arguments is not counted: only what the profile
//! denies whatever the arguments.

use std::{borrow::Cow, cmp::Ordering, sync::Arc};

use super::{LabelNames, Series, naming::OTHER, posture::PostureCache, text::Text};
use crate::{
    config::SecurityConfig,
    metadata::identity::{Resolver, Workload},
    posture::SeccompMode,
    seccomp::{Profile, Verdict},
    seeded_hash::SeededMap,
};

/// Label value of the runtime's default profile.
const RUNTIME_DEFAULT: &str = "runtime-default";

/// Syscalls the runtime makes in the container's cgroup before the container's filter applies
/// (runc sets the UTS namespace's names in its init stage, measured: one `sethostname` per
/// container start), which the runtime's default profile denies to the container itself. The
/// counters cannot tell the runtime's call from the workload's, so these are left out of the
/// runtime-default comparison rather than flag every container; a workload that calls them
/// itself is not seen there.
const RUNTIME_SETUP: [&str; 2] = ["sethostname", "setdomainname"];

/// Syscall counts by workload and syscall name, in label order (`CgroupNamer::in_label_order`).
pub(super) type Calls = [((Arc<Workload>, Cow<'static, str>), u64)];

#[derive(Debug)]
struct Baseline {
    namespace: String,
    workload: String,
    /// The `profile` label: the file's name without `.json`.
    label: String,
    profile: Profile,
}

/// What decides a container's comparison with the runtime's default profile.
#[derive(Debug, Clone, Copy)]
struct Confinement {
    /// Seccomp mode 0 in its least confined process.
    unconfined: bool,
    bounding: u64,
}

#[derive(Debug)]
pub(crate) struct SeccompDrift {
    resolver: Arc<Resolver>,
    posture: Arc<PostureCache>,
    profiles: Profiles,
}

/// The profiles the syscalls are compared with.
#[derive(Debug)]
struct Profiles {
    runtime_default: Profile,
    baselines: Vec<Baseline>,
}

impl SeccompDrift {
    /// The profiles the configuration names. One that cannot be read is left out with a warning
    /// that says why; the rest are compared against.
    pub fn new(config: &SecurityConfig, resolver: Arc<Resolver>, posture: Arc<PostureCache>) -> Self {
        let path = &config.runtime_default_profile;
        let runtime_default = if path.as_os_str().is_empty() {
            Profile::runtime_default()
        } else {
            Profile::read(path).unwrap_or_else(|why| {
                tracing::warn!(
                    "security.runtime_default_profile: {why}; comparing with the embedded profile \
                     (containers/common's default) instead"
                );
                Profile::runtime_default()
            })
        };
        let baselines = config
            .seccomp_baselines
            .iter()
            .filter_map(|baseline| match Profile::read(&baseline.profile) {
                Ok(profile) => Some(Baseline {
                    namespace: baseline.namespace.clone(),
                    workload: baseline.workload.clone(),
                    label: baseline.profile.file_stem().map_or_else(
                        || baseline.profile.display().to_string(),
                        |s| s.to_string_lossy().into_owned(),
                    ),
                    profile,
                }),
                Err(why) => {
                    tracing::warn!(
                        "security.seccomp_baselines: {why}; workload {}/{} is not compared with it",
                        baseline.namespace,
                        baseline.workload
                    );
                    None
                }
            })
            .collect();
        Self { resolver, posture, profiles: Profiles { runtime_default, baselines } }
    }

    /// Writes the drift of `calls`, the syscall counts by workload and syscall name.
    pub(super) fn write(&self, text: &mut Text, calls: &Calls, with_id: &LabelNames) {
        let containers = self.posture.containers();
        let confinement: SeededMap<Arc<Workload>, Confinement> = containers
            .iter()
            .map(|c| {
                let seen =
                    Confinement { unconfined: c.seccomp == SeccompMode::Disabled, bounding: c.bounding };
                (self.resolver.shared_workload(&c.cgroup), seen)
            })
            .collect();
        text.counters(
            "kernsight_syscalls_outside_profile",
            "Syscalls a container made that a seccomp profile would deny: profile=runtime-default for containers without seccomp, else a baseline of security.seccomp_baselines",
            self.profiles.outside(calls, &confinement).into_iter().map(
                |((workload, profile, syscall), n)| {
                    (Series::of(workload, with_id).with("profile", profile).with("syscall", syscall), n)
                },
            ),
        );
    }
}

impl Profiles {
    /// (workload, profile label, syscall) → calls the profile would deny.
    fn outside<'a>(
        &'a self,
        calls: &'a Calls,
        confinement: &SeededMap<Arc<Workload>, Confinement>,
    ) -> Vec<((&'a Workload, &'a str, &'a str), u64)> {
        let mut outside = Vec::new();
        // The rows of one workload come together and share one copy of it (`in_label_order`):
        // it is looked up once, not hashed again for each of its syscalls.
        let mut last: Option<(&Workload, Option<&Confinement>)> = None;
        for ((workload, syscall), count) in calls {
            let (workload, count): (&Workload, u64) = (workload, *count);
            if syscall == OTHER || workload.container.is_empty() {
                continue;
            }
            let seen = match last {
                Some((known, seen)) if std::ptr::eq(known, workload) => seen,
                _ => confinement.get(workload),
            };
            last = Some((workload, seen));
            if let Some(seen) = seen.filter(|seen| seen.unconfined)
                && !RUNTIME_SETUP.contains(&syscall.as_ref())
                && self.runtime_default.verdict(syscall, seen.bounding) == Verdict::Denied
            {
                outside.push(((workload, RUNTIME_DEFAULT, syscall.as_ref()), count));
            }
            for baseline in self.baselines_of(workload) {
                // Without the container's posture, no capability is taken as held: the strictest
                // reading of the profile's capability conditions.
                let bounding = seen.map_or(0, |seen| seen.bounding);
                if baseline.profile.verdict(syscall, bounding) == Verdict::Denied {
                    outside.push(((workload, baseline.label.as_str(), syscall.as_ref()), count));
                }
            }
        }
        // In label order, equal keys summed. Most comparisons are between rows of one workload,
        // which compare its address rather than its seven strings.
        let by_workload =
            |a: &Workload, b: &Workload| if std::ptr::eq(a, b) { Ordering::Equal } else { a.cmp(b) };
        outside.sort_unstable_by(|((wa, pa, sa), _), ((wb, pb, sb), _)| {
            by_workload(wa, wb).then_with(|| (pa, sa).cmp(&(pb, sb)))
        });
        outside.dedup_by(|(later, n), (kept, total)| {
            let same = std::ptr::eq(later.0, kept.0) || later.0 == kept.0;
            let same = same && (later.1, later.2) == (kept.1, kept.2);
            if same {
                *total += *n;
            }
            same
        });
        outside
    }

    fn baselines_of<'a>(&'a self, workload: &'a Workload) -> impl Iterator<Item = &'a Baseline> {
        self.baselines.iter().filter(move |b| {
            !workload.workload.is_empty()
                && b.workload == workload.workload
                && b.namespace == workload.namespace
        })
    }
}

#[cfg(test)]
mod tests;
