//! The security posture of the containers on this node, from `/proc`: capabilities held
//! (effective, permitted, bounding), whether the bounding set is full ("privileged"), seccomp
//! mode and filter count, NoNewPrivs, whether a process runs as uid 0 and whether a user
//! namespace maps it, and which namespaces are the host's. Used by the posture metrics,
//! `kernsight audit` and `kernsight advise`.
//!
//! A container's posture is the weakest of its processes': the union of their capabilities, the
//! lowest seccomp mode, NoNewPrivs only if every process has it. A process `exec`ed into a
//! container later (`podman exec`) counts like the others.

pub mod findings;
pub mod mounts;
mod walk;

pub use walk::Walker;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{
    kernel::{
        names::capability_names,
        procfs::{self, NamespaceKind, Namespaces, Process},
        small_file,
    },
    metadata::{cgroup_path, local},
};

/// The namespace kinds whose sharing with the host is reported (time namespaces are left out:
/// sharing the host's clock offsets weakens nothing).
pub const NAMESPACES: [NamespaceKind; 7] = [
    NamespaceKind::Pid,
    NamespaceKind::Net,
    NamespaceKind::Ipc,
    NamespaceKind::Uts,
    NamespaceKind::Mnt,
    NamespaceKind::Cgroup,
    NamespaceKind::User,
];

/// Seccomp modes as `/proc/<pid>/status` numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SeccompMode {
    Disabled = 0,
    Strict = 1,
    Filter = 2,
}

impl SeccompMode {
    fn from_status(mode: u8) -> Self {
        match mode {
            0 => Self::Disabled,
            1 => Self::Strict,
            _ => Self::Filter,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Strict => "strict",
            Self::Filter => "filter",
        }
    }
}

/// The posture of one container.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerPosture {
    pub container_id: String,
    /// From conmon (podman, CRI-O) when it runs on this node.
    pub name: Option<String>,
    /// The container's cgroup path, as the workload labels resolve it.
    pub cgroup: String,
    pub pids: Vec<u32>,
    #[serde(serialize_with = "cap_names")]
    pub effective: u64,
    #[serde(serialize_with = "cap_names")]
    pub permitted: u64,
    #[serde(serialize_with = "cap_names")]
    pub bounding: u64,
    /// The bounding set holds every capability the host's init holds (see `full_capability_set`).
    pub privileged: bool,
    pub seccomp: SeccompMode,
    /// Filters of the least filtered process.
    pub seccomp_filters: u32,
    pub no_new_privs: bool,
    /// A process runs with uid 0 (real or effective) in its own user namespace.
    pub runs_as_root: bool,
    /// Its processes have a user namespace of their own (uid 0 inside is not the host's root).
    pub own_user_namespace: bool,
    /// The namespaces it shares with the host (pid 1's), in `NAMESPACES` order.
    pub host_namespaces: Vec<&'static str>,
    /// Writable mounts of host directories: (mount point in the container, host path).
    pub writable_host_mounts: Vec<(String, String)>,
    /// Whether the namespaces (and mounts) of every process could be read: they need root or
    /// CAP_SYS_PTRACE over the process. When false, `host_namespaces`, `own_user_namespace`
    /// and `writable_host_mounts` say nothing.
    pub namespaces_known: bool,
}

fn cap_names<S: serde::Serializer>(mask: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(capability_names(*mask))
}

impl ContainerPosture {
    pub fn shares_host(&self, kind: NamespaceKind) -> bool {
        self.host_namespaces.contains(&kind.name())
    }

    /// The container's name, else the id's first 12 characters.
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.container_id.chars().take(12).collect())
    }
}

/// The full capability set a container can be given: the bounding set of the host's init (a
/// node may itself lack some, as a VM without CAP_SYS_RESOURCE does), else every capability
/// this kernel knows (bits 0..=`/proc/sys/kernel/cap_last_cap`).
pub fn full_capability_set(proc_root: &Path) -> u64 {
    if let Ok(text) = std::fs::read_to_string(proc_root.join("1/status")) {
        let bounding = procfs::parse_status(&text).cap_bnd;
        if bounding != 0 {
            return bounding;
        }
    }
    let last: u32 = std::fs::read_to_string(proc_root.join("sys/kernel/cap_last_cap"))
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(40)
        .min(63);
    if last == 63 { u64::MAX } else { (1u64 << (last + 1)) - 1 }
}

/// The container a process belongs to: its id and cgroup path.
pub fn container_of(process: &Process) -> Option<(String, String)> {
    process
        .cgroups
        .iter()
        .find_map(|line| cgroup_path::parse(&line.path).map(|c| (c.container_id, line.path.clone())))
}

/// The host's namespaces: pid 1's, or where those cannot be read (a sandboxed init), this
/// process's own.
fn host_namespaces(proc_root: &Path) -> Option<Namespaces> {
    let readable = |ns: &Namespaces| NamespaceKind::ALL.iter().any(|k| ns.get(*k).is_some());
    procfs::host_namespaces(proc_root).ok().filter(readable).or_else(|| {
        procfs::read_process(proc_root, std::process::id()).ok().map(|me| me.namespaces).filter(readable)
    })
}

/// Most of a `/proc/<pid>/uid_map` read here (a few hundred bytes).
const MAX_PROC_FILE: u64 = 1 << 16;

/// The posture of every container with a process on the node, ordered by id.
pub fn all(proc_root: &Path) -> Vec<ContainerPosture> {
    all_walked(&Walker::new(proc_root.to_owned()))
}

/// `all`, by a walker that keeps what does not change from one walk to the next.
pub fn all_walked(walker: &Walker) -> Vec<ContainerPosture> {
    let proc_root = walker.proc_root();
    let host = host_namespaces(proc_root);
    let names = local::conmon_names(proc_root);
    let full = full_capability_set(proc_root);
    let containers: Vec<_> = walker.container_processes().into_iter().collect();
    crate::parallel::map(&containers, |(id, (cgroup, processes))| {
        let (id, cgroup) = (id.clone(), cgroup.clone());
        let name = names.get(&id).cloned();
        let mut posture = posture(id, name, cgroup, processes, host.as_ref(), full);
        // /proc shows uids as the host sees them: map them into each process's user
        // namespace, so that root inside a user namespace counts as root.
        posture.runs_as_root = processes.iter().any(|p| {
            let map =
                small_file::read_path(&proc_root.join(p.pid.to_string()).join("uid_map"), MAX_PROC_FILE);
            let map = map.as_deref().unwrap_or("0 0 4294967295");
            [p.status.uid[0], p.status.uid[1]].into_iter().any(|uid| inside_uid(map, uid) == Some(0))
        });
        // One process's view is the container's unless it shares the host's mounts (then
        // every host mount would be listed; `host_mount_namespace` says it already).
        if posture.namespaces_known
            && !posture.shares_host(NamespaceKind::Mnt)
            && let Some(first) = processes.first()
        {
            posture.writable_host_mounts = mounts::of_process(proc_root, first.pid);
        }
        posture
    })
}

/// The uid a host uid has inside a user namespace, from its `uid_map` ("inside outside count"
/// lines); `None` when the namespace does not map it.
pub fn inside_uid(uid_map: &str, host_uid: u32) -> Option<u32> {
    uid_map.lines().find_map(|line| {
        let mut fields = line.split_whitespace().map(|f| f.parse::<u64>().ok());
        let (inside, outside, count) = (fields.next()??, fields.next()??, fields.next()??);
        let uid = u64::from(host_uid);
        (outside <= uid && uid < outside + count)
            .then(|| u32::try_from(inside + uid - outside).ok())
            .flatten()
    })
}

/// The posture of one container from its processes (at least one).
pub fn posture(
    container_id: String,
    name: Option<String>,
    cgroup: String,
    processes: &[Process],
    host: Option<&Namespaces>,
    full_set: u64,
) -> ContainerPosture {
    let union = |field: fn(&procfs::Status) -> u64| processes.iter().fold(0, |acc, p| acc | field(&p.status));
    let bounding = union(|s| s.cap_bnd);
    let host_namespaces = NAMESPACES
        .into_iter()
        .filter(|&kind| {
            host.is_some_and(|host| {
                processes
                    .iter()
                    .any(|p| p.namespaces.get(kind).is_some() && p.namespaces.get(kind) == host.get(kind))
            })
        })
        .map(NamespaceKind::name)
        .collect();
    let namespaces_known = host.is_some()
        && processes.iter().all(|p| NAMESPACES.iter().any(|&kind| p.namespaces.get(kind).is_some()));
    let own_user_namespace = host.is_some_and(|host| {
        processes.iter().all(|p| p.namespaces.user.is_some() && p.namespaces.user != host.user)
    });
    let weakest = processes.iter().min_by_key(|p| (p.status.seccomp, p.status.seccomp_filters));
    ContainerPosture {
        container_id,
        name,
        cgroup,
        pids: processes.iter().map(|p| p.pid).collect(),
        effective: union(|s| s.cap_eff),
        permitted: union(|s| s.cap_prm),
        bounding,
        privileged: bounding & full_set == full_set,
        seccomp: SeccompMode::from_status(weakest.map_or(0, |p| p.status.seccomp)),
        seccomp_filters: weakest.map_or(0, |p| p.status.seccomp_filters),
        no_new_privs: processes.iter().all(|p| p.status.no_new_privs),
        runs_as_root: processes.iter().any(|p| p.status.uid[0] == 0 || p.status.uid[1] == 0),
        own_user_namespace,
        host_namespaces,
        writable_host_mounts: Vec::new(),
        namespaces_known,
    }
}

/// The posture of the container named by `target` (an id, its first characters, or a name).
pub fn find(proc_root: &Path, target: &str) -> Result<ContainerPosture, FindError> {
    let all = all(proc_root);
    let matches: Vec<&ContainerPosture> = all
        .iter()
        .filter(|c| c.container_id.starts_with(target) || c.name.as_deref() == Some(target))
        .collect();
    match matches.as_slice() {
        [] => Err(FindError::NotFound(target.to_owned())),
        [one] => Ok((*one).clone()),
        many => Err(FindError::Ambiguous {
            target: target.to_owned(),
            matches: many.iter().map(|c| c.display_name()).collect::<Vec<_>>().join(", "),
        }),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error(
        "no running container matches `{0}` on this node: name a running container by its id (or its \
         first characters) or its name as `podman ps` or `crictl ps` shows it (an exited container has \
         no processes left to look at)"
    )]
    NotFound(String),
    #[error("`{target}` matches several containers ({matches}): give more of the id")]
    Ambiguous { target: String, matches: String },
}

/// `/proc` unless told otherwise (tests).
pub fn proc_root() -> PathBuf {
    PathBuf::from("/proc")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_host_uids_into_the_namespace() {
        assert_eq!(inside_uid("         0          0 4294967295\n", 0), Some(0));
        assert_eq!(inside_uid("         0          0 4294967295\n", 1000), Some(1000));
        assert_eq!(inside_uid("0 200000 65536\n", 200000), Some(0));
        assert_eq!(inside_uid("0 200000 65536\n", 201000), Some(1000));
        assert_eq!(inside_uid("0 200000 65536\n", 0), None);
        assert_eq!(inside_uid("0 1000 1\n1 100000 65536\n", 100004), Some(5));
        assert_eq!(inside_uid("garbage", 0), None);
    }
}
