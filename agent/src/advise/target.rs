//! What `advise` is about: a container, a pod, or a cgroup; and how each is found in the
//! kernel's per-cgroup counts (cgroup ids) and in the agent's series (labels).

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use crate::{
    kernel::cgroupfs::{Hierarchies, V1_CGROUP_ID_BIT},
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
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Container(c) => write!(f, "container {c}"),
            Self::Pod { namespace, name } => write!(f, "pod {namespace}/{name}"),
            Self::Cgroup(path) => write!(f, "cgroup {path}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Container(#[from] FindError),
    #[error("`{0}` is not a pod: write NAMESPACE/NAME")]
    PodSyntax(String),
    #[error("cgroup {path} does not exist under {roots}: give a path as kernsight's `cgroup` label shows it")]
    NoCgroup { path: String, roots: String },
    #[error("pod {0} has no running container on this node (is the CRI socket right? see --cri-socket)")]
    NoPod(String),
    #[error("cannot ask the CRI for pod {pod}: {why}")]
    Cri { pod: String, why: String },
}

impl Target {
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

/// The ids of the running containers of a pod, through the CRI socket.
pub fn pod_containers(namespace: &str, name: &str, socket: &Path) -> Result<Vec<Running>, TargetError> {
    use crate::metadata::cri::CriClient;
    let pod = format!("{namespace}/{name}");
    let cri_error = |why: String| TargetError::Cri { pod: pod.clone(), why };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| cri_error(e.to_string()))?;
    let listed = runtime.block_on(async {
        let mut client = CriClient::connect(socket, std::time::Duration::from_secs(5)).await?;
        client.containers().await
    });
    let listed = listed.map_err(|e| cri_error(e.to_string()))?;
    let ids: Vec<String> = listed
        .into_iter()
        .filter(|c| c.pod_namespace == namespace && c.pod_name == name && !c.container_name.is_empty())
        .map(|c| c.container_id)
        .collect();
    let running: Vec<Running> = posture::all(&posture::proc_root())
        .into_iter()
        .filter(|c| ids.contains(&c.container_id))
        .map(|c| Running { id: c.container_id, name: c.name, cgroup: c.cgroup })
        .collect();
    if running.is_empty() { Err(TargetError::NoPod(pod)) } else { Ok(running) }
}
