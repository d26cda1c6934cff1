//! `kernsight advise seccomp|capabilities (--container ID | --pod NS/NAME | --workload [NS/]NAME |
//! --cgroup PATH)
//! [--for DURATION]`: least-privilege settings from what the workload was seen doing.

use std::path::PathBuf;

use clap::{ArgGroup, Subcommand};

use crate::{
    advise::{self, AdviseError, Observed, Target, capabilities, seccomp, target, window},
    metadata::cri,
    posture,
};

#[derive(Debug, clap::Args)]
pub struct AdviseArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// A seccomp profile (OCI / Docker JSON) allowing the syscalls the workload made.
    Seccomp(Common),
    /// A Kubernetes securityContext: drop ALL, add the capabilities the workload used.
    Capabilities(Common),
}

#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("target").required(true).args(["container", "pod", "workload", "cgroup"])))]
struct Common {
    /// A running container: its id, the id's first characters, or its name.
    #[arg(long)]
    container: Option<String>,
    /// A pod, as NAMESPACE/NAME (its containers together; found through the CRI socket with
    /// --for, by the agent's labels otherwise).
    #[arg(long)]
    pod: Option<String>,
    /// A workload, as NAME or NAMESPACE/NAME (the `workload` label: a Deployment's,
    /// StatefulSet's, ... name): one profile for all its pods' containers, the union of their
    /// syscalls.
    #[arg(long)]
    workload: Option<String>,
    /// A cgroup path as the `cgroup` label shows it (host processes).
    #[arg(long)]
    cgroup: Option<String>,
    /// Observe for this long in this process (30s, 5m) instead of asking the running agent.
    #[arg(long = "for", value_name = "DURATION")]
    window: Option<String>,
    /// The running agent whose counts (since it started) are used without --for.
    #[arg(long, default_value = "127.0.0.1:9464")]
    agent: String,
    /// The CRI socket for --pod with --for (default: containerd's, then CRI-O's).
    #[arg(long)]
    cri_socket: Option<PathBuf>,
}

impl Common {
    fn target(&self) -> Result<Target, target::TargetError> {
        match (&self.container, &self.pod, &self.workload, &self.cgroup) {
            (Some(container), ..) => Ok(Target::Container(container.clone())),
            (_, Some(pod), ..) => Target::pod(pod),
            (_, _, Some(workload), _) => Target::workload(workload),
            (.., Some(cgroup)) => Ok(Target::Cgroup(cgroup.clone())),
            // clap's group makes one of them required.
            _ => Err(target::TargetError::PodSyntax(String::new())),
        }
    }

    fn cri_socket(&self) -> PathBuf {
        cri::find_socket(self.cri_socket.as_slice()).unwrap_or_else(|| PathBuf::from(cri::DEFAULT_SOCKETS[0]))
    }

    fn observe(&self, target: &Target) -> anyhow::Result<Observed> {
        let observed = match &self.window {
            Some(text) => {
                let duration = crate::duration::parse_positive(text).map_err(anyhow::Error::msg)?;
                window::observe(target, duration, &self.cri_socket())?
            }
            None => advise::from_agent(&self.agent, target)?,
        };
        if observed.syscalls.is_empty() {
            return Err(
                AdviseError::NoSyscalls { target: target.to_string(), seen_in: observed.source }.into()
            );
        }
        Ok(observed)
    }

    /// The capabilities the target holds (effective sets), where it is a container, a pod or a
    /// workload.
    fn held(&self, target: &Target) -> anyhow::Result<Option<u64>> {
        let proc_root = posture::proc_root();
        let running = match target {
            Target::Container(name) => return Ok(Some(posture::find(&proc_root, name)?.effective)),
            Target::Cgroup(_) => return Ok(None),
            Target::Pod { namespace, name } => target::pod_containers(namespace, name, &self.cri_socket()),
            Target::Workload { namespace, name } => {
                target::workload_containers(namespace.as_deref(), name, &self.cri_socket())
            }
        };
        // No CRI here: the agent's labels named the pods, and what they hold is not known.
        let Ok(running) = running else { return Ok(None) };
        let ids: Vec<String> = running.into_iter().map(|c| c.id).collect();
        Ok(Some(
            posture::all(&proc_root)
                .iter()
                .filter(|c| ids.contains(&c.container_id))
                .fold(0, |a, c| a | c.effective),
        ))
    }
}

pub fn run(args: AdviseArgs) -> anyhow::Result<()> {
    let rendered = match args.what {
        What::Seccomp(common) => {
            let target = common.target()?;
            let observed = common.observe(&target)?;
            let profile = seccomp::profile(&observed, &target.to_string()).ok_or_else(|| {
                AdviseError::NoSyscalls { target: target.to_string(), seen_in: observed.source.clone() }
            })?;
            serde_json::to_string_pretty(&profile)? + "\n"
        }
        What::Capabilities(common) => {
            let target = common.target()?;
            // Held first: a container that exited is reported before a window is spent on it.
            let held = common.held(&target)?;
            let observed = common.observe(&target)?;
            capabilities::advise(&observed, held).yaml(&target.to_string(), &observed.source)
        }
    };
    Ok(super::print(&rendered)?)
}
