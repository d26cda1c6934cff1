//! `kernsight advise`: least-privilege settings from what a workload was seen doing.
//!
//! What was seen comes from one of two places:
//! - a window (`--for DURATION`): the syscall and capability families are loaded in this
//!   process for that long and their per-cgroup counts read at its end;
//! - the running agent (default `--agent 127.0.0.1:9464`): its `/metrics`, counted since it
//!   started (or since the container started, if later).
//!
//! Either way the counts are the kernel's own per-cgroup counters; nothing new runs on the
//! syscall path.

pub mod capabilities;
pub mod seccomp;
pub mod target;
pub mod window;

use std::collections::BTreeMap;

use crate::metrics::client;

pub use target::Target;

/// What a workload was seen doing.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Observed {
    /// Syscall name → calls.
    pub syscalls: BTreeMap<String, u64>,
    /// (capability name, `granted` or `denied`) → checks.
    pub capabilities: BTreeMap<(String, String), u64>,
    /// Where the counts came from, for messages (`the last 30s`, `the agent at ...`).
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AdviseError {
    #[error(transparent)]
    Target(#[from] target::TargetError),
    #[error(
        "no syscalls of {target} were seen in {seen_in}: run the workload during the window (or name the \
         right target); no profile is printed, since an empty one would let nothing run"
    )]
    NoSyscalls { target: String, seen_in: String },
    #[error(
        "the agent at {address} has no series of container {container}: it names containers by their \
         runtime name, and the id is only on series with `metadata.container_id_label = true`; enable that, \
         use --pod NAMESPACE/NAME, or observe with --for DURATION"
    )]
    ContainerNotInAgent { address: String, container: String },
    #[error("cannot reach the kernsight agent: {0}; or observe in this process with --for DURATION")]
    Agent(crate::metrics::client::ScrapeError),
    #[error("{0}")]
    Window(String),
}

/// Whether a series' labels belong to the target.
type SeriesFilter = dyn Fn(&BTreeMap<String, String>) -> bool;

/// What the running agent counted for `target`, from its `/metrics` at `address`.
pub fn from_agent(address: &str, target: &Target) -> Result<Observed, AdviseError> {
    let matches: Box<SeriesFilter> = match target {
        Target::Container(name) => {
            let running = target::running_container(name)?;
            let short: String = running.id.chars().take(12).collect();
            Box::new(move |labels| match labels.get("container_id") {
                Some(id) => *id == running.id,
                None => labels
                    .get("container")
                    .is_some_and(|c| *c == short || running.name.as_deref() == Some(c.as_str())),
            })
        }
        Target::Pod { namespace, name } => {
            let (namespace, name) = (namespace.clone(), name.clone());
            Box::new(move |labels| {
                labels.get("namespace") == Some(&namespace) && labels.get("pod") == Some(&name)
            })
        }
        Target::Cgroup(path) => {
            let path = path.clone();
            Box::new(move |labels| labels.get("cgroup") == Some(&path))
        }
        // Every container of every pod of the workload: their syscalls add up to one profile.
        Target::Workload { namespace, name } => {
            let (namespace, name) = (namespace.clone(), name.clone());
            Box::new(move |labels| {
                labels.get("workload") == Some(&name)
                    && labels.get("workload_kind").is_some_and(|kind| !kind.is_empty())
                    && namespace.as_ref().is_none_or(|n| labels.get("namespace") == Some(n))
            })
        }
    };
    let samples = client::parse(&client::fetch(address).map_err(AdviseError::Agent)?);
    let mut observed =
        Observed { source: format!("the counts of the agent at {address}"), ..Observed::default() };
    let matched: Vec<&client::Sample> =
        samples.iter().filter(|s| s.value > 0.0 && matches(&s.labels)).collect();
    if let Target::Container(container) = target
        && !matched.iter().any(|s| s.name == "kernsight_syscalls_total")
        && !samples.iter().any(|s| s.labels.contains_key("container_id"))
    {
        return Err(AdviseError::ContainerNotInAgent {
            address: address.to_owned(),
            container: container.clone(),
        });
    }
    for sample in matched {
        let count = sample.value as u64;
        match sample.name.as_str() {
            "kernsight_syscalls_total" => {
                if let Some(syscall) = sample.labels.get("syscall").filter(|s| *s != "other") {
                    *observed.syscalls.entry(syscall.clone()).or_default() += count;
                }
            }
            "kernsight_capability_checks_total" => {
                if let (Some(cap), Some(result)) = (sample.labels.get("cap"), sample.labels.get("result")) {
                    *observed.capabilities.entry((cap.clone(), result.clone())).or_default() += count;
                }
            }
            _ => {}
        }
    }
    Ok(observed)
}
