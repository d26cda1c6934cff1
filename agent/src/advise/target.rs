//! What `advise` is about: a container, a pod, or a cgroup; and how each is found in the
//! kernel's per-cgroup counts (cgroup ids) and in the agent's series (labels).

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use crate::{
    kernel::cgroupfs::{Hierarchies, V1_CGROUP_ID_BIT},
    metadata::{
        cri::{self, CriContainer},
        owner,
    },
    posture::{self, FindError},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An id, its first characters, or a name (conmon).
    Container(String),
    Pod {
        namespace: String,
        name: String,
    },
    /// A cgroup path as kernsight labels host processes (`/system.slice/x.service`).
    Cgroup(String),
    /// The pods of a workload (a Deployment's, StatefulSet's, ... name as the `workload` label
    /// has it), in one namespace or in any.
    Workload {
        namespace: Option<String>,
        name: String,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Container(c) => write!(f, "container {c}"),
            Self::Pod { namespace, name } => write!(f, "pod {namespace}/{name}"),
            Self::Cgroup(path) => write!(f, "cgroup {path}"),
            Self::Workload { namespace: Some(namespace), name } => write!(f, "workload {namespace}/{name}"),
            Self::Workload { namespace: None, name } => write!(f, "workload {name}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Container(#[from] FindError),
    #[error("`{0}` is not a pod: write NAMESPACE/NAME")]
    PodSyntax(String),
    #[error("`{0}` is not a workload: write NAME or NAMESPACE/NAME")]
    WorkloadSyntax(String),
    #[error("cgroup {path} does not exist under {roots}: give a path as kernsight's `cgroup` label shows it")]
    NoCgroup { path: String, roots: String },
    #[error("{0} has no running container on this node (is the CRI socket right? see --cri-socket)")]
    NoPod(String),
    #[error("cannot ask the CRI for {pod}: {why}")]
    Cri { pod: String, why: String },
}

impl Target {
    /// `NAME` (any namespace) or `NAMESPACE/NAME`.
    pub fn workload(text: &str) -> Result<Self, TargetError> {
        let (namespace, name) = match text.split_once('/') {
            Some((namespace, name)) => (Some(namespace), name),
            None => (None, text),
        };
        if name.is_empty() || name.contains('/') || namespace.is_some_and(str::is_empty) {
            return Err(TargetError::WorkloadSyntax(text.to_owned()));
        }
        Ok(Self::Workload { namespace: namespace.map(str::to_owned), name: name.to_owned() })
    }

    pub fn pod(text: &str) -> Result<Self, TargetError> {
        match text.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self::Pod { namespace: namespace.to_owned(), name: name.to_owned() })
            }
            _ => Err(TargetError::PodSyntax(text.to_owned())),
        }
    }
}

/// A running container found on this node: its full id, conmon name and cgroup path.
#[derive(Debug, Clone)]
pub struct Running {
    pub id: String,
    pub name: Option<String>,
    pub cgroup: String,
}

pub fn running_container(target: &str) -> Result<Running, TargetError> {
    let found = posture::find(&posture::proc_root(), target)?;
    Ok(Running { id: found.container_id, name: found.name, cgroup: found.cgroup })
}

/// The id the kernel side counts a cgroup path under: the unified hierarchy's directory inode,
/// or, for the v2 root on a hybrid host, the v1 hierarchy's with the v1 tag.
pub fn cgroup_id(hierarchies: &Hierarchies, path: &str) -> Result<u64, TargetError> {
    let relative = path.trim_start_matches('/');
    let inode = |root: &Path| std::fs::metadata(root.join(relative)).ok().map(|m| m.ino());
    let unified = hierarchies.unified.as_deref().filter(|_| !relative.is_empty()).and_then(inode);
    let v1 = || hierarchies.v1.as_ref().and_then(|(_, root)| inode(root)).map(|id| id | V1_CGROUP_ID_BIT);
    unified.or_else(v1).ok_or_else(|| TargetError::NoCgroup {
        path: path.to_owned(),
        roots: hierarchies
            .unified
            .iter()
            .chain(hierarchies.v1.iter().map(|(_, root)| root))
            .map(|p: &PathBuf| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" and "),
    })
}

/// The running containers of a pod, through the CRI socket.
pub fn pod_containers(namespace: &str, name: &str, socket: &Path) -> Result<Vec<Running>, TargetError> {
    let pod = Target::Pod { namespace: namespace.to_owned(), name: name.to_owned() };
    cri_containers(&pod, socket, |c| c.pod_namespace == namespace && c.pod_name == name)
}

/// The running containers of every pod of a workload (the owner `owner::owner` names from the
/// CRI's labels, as the agent's `workload` label has it), through the CRI socket.
pub fn workload_containers(
    namespace: Option<&str>,
    name: &str,
    socket: &Path,
) -> Result<Vec<Running>, TargetError> {
    let workload = Target::Workload { namespace: namespace.map(str::to_owned), name: name.to_owned() };
    // Static pods are named by the node (NODE_NAME) in the agent's labels too.
    let node = std::env::var("NODE_NAME").unwrap_or_default();
    cri_containers(&workload, socket, |c| {
        namespace.is_none_or(|n| c.pod_namespace == n)
            && owner::owner(&c.pod_name, &c.pod_labels, &c.pod_config_source, &node).name == name
    })
}

/// The running containers (not sandboxes) the CRI lists that `wanted` keeps.
fn cri_containers(
    target: &Target,
    socket: &Path,
    wanted: impl Fn(&CriContainer) -> bool,
) -> Result<Vec<Running>, TargetError> {
    let listed = cri::list_blocking(socket, std::time::Duration::from_secs(5))
        .map_err(|why| TargetError::Cri { pod: target.to_string(), why })?;
    let ids: Vec<String> = listed
        .into_iter()
        .filter(|c| !c.container_name.is_empty() && wanted(c))
        .map(|c| c.container_id)
        .collect();
    let running: Vec<Running> = posture::all(&posture::proc_root())
        .into_iter()
        .filter(|c| ids.contains(&c.container_id))
        .map(|c| Running { id: c.container_id, name: c.name, cgroup: c.cgroup })
        .collect();
    if running.is_empty() { Err(TargetError::NoPod(target.to_string())) } else { Ok(running) }
}
