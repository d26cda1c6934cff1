//! The walk of `/proc` that finds every container's processes, and what one walk keeps for the
//! next: the namespaces of each process, by pid and start time.
//!
//! A process changes its namespaces only by `setns` or `unshare`, and reading them is eight
//! `readlink`s a process, a third of a walk's time. So a walk takes them from the last one
//! while that read serves (`freshness`: up to `NAMESPACES_TTL`, less while the process is new,
//! as a runtime moves a new container's first process into its namespaces after placing it in
//! the cgroup). Capabilities, seccomp and the cgroup are read at every walk.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{
    freshness::Reads,
    kernel::procfs::{self, CgroupLine, Namespaces, Process},
    metadata::cgroup_path,
};

/// The longest a process's namespaces, once read, serve later walks.
const NAMESPACES_TTL: Duration = Duration::from_secs(30);

/// Processes of each container, by container id: (its cgroup path, its processes).
pub type ContainerProcesses = BTreeMap<String, (String, Vec<Process>)>;

/// Walks of `/proc` (one at a time: each takes the lock) that remember the namespaces of the
/// processes they read.
#[derive(Debug)]
pub struct Walker {
    proc_root: PathBuf,
    known: Mutex<HashMap<(u32, u64), Known>>,
}

#[derive(Debug, Clone, Copy)]
struct Known {
    reads: Reads,
    namespaces: Namespaces,
}

impl Known {
    fn serves(&self, now: Instant) -> bool {
        self.reads.serve(now, NAMESPACES_TTL, true)
    }
}

impl Walker {
    pub fn new(proc_root: PathBuf) -> Self {
        Self { proc_root, known: Mutex::new(HashMap::new()) }
    }

    pub fn proc_root(&self) -> &Path {
        &self.proc_root
    }

    /// The processes of every container on the node, by container id (with its cgroup path).
    pub fn container_processes(&self) -> ContainerProcesses {
        self.container_processes_at(Instant::now())
    }

    fn container_processes_at(&self, now: Instant) -> ContainerProcesses {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let last = std::mem::take(&mut *known);
        let read = |&pid: &u32| self.read(pid, &last, now);
        let mut containers = ContainerProcesses::new();
        for (process, remembered) in
            crate::parallel::map(&procfs::list_pids(&self.proc_root), read).into_iter().flatten()
        {
            // Only the processes of this walk are kept: a pid that is gone is forgotten.
            if let Some(remembered) = remembered {
                known.insert((process.pid, process.start_time), remembered);
            }
            if let Some((id, path)) = super::container_of(&process) {
                containers.entry(id).or_insert_with(|| (path, Vec::new())).1.push(process);
            }
        }
        containers
    }

    /// A container's process, with its namespaces as `last` knew them or read now (`None` when
    /// it is not a container's, is gone, or its namespaces could not be read).
    fn read(
        &self,
        pid: u32,
        last: &HashMap<(u32, u64), Known>,
        now: Instant,
    ) -> Option<(Process, Option<Known>)> {
        // The cgroup file first: most processes of a node are not in a container.
        let in_container =
            |cgroups: &[CgroupLine]| cgroups.iter().any(|line| cgroup_path::parse(&line.path).is_some());
        let mut previous = None;
        let from_last = |start_time| {
            previous = last.get(&(pid, start_time)).copied();
            previous.filter(|known| known.serves(now)).map(|known| known.namespaces)
        };
        match procfs::read_process_where(&self.proc_root, pid, in_container, from_last) {
            Ok(Some(process)) => {
                let reads = match previous {
                    Some(known) if known.serves(now) => known.reads,
                    other => Reads::after(other.map(|known| known.reads), now),
                };
                let known = Known { reads, namespaces: process.namespaces };
                Some((process, Some(known)))
            }
            Ok(None) => None,
            // Status and cgroup are world-readable; the namespace links need ptrace access.
            Err(procfs::ProcError::PermissionDenied { .. }) => {
                without_namespaces(&self.proc_root, pid).map(|process| (process, None))
            }
            Err(_) => None, // gone meanwhile
        }
    }
}

/// A process read from its world-readable files only: no namespaces (all `None`).
fn without_namespaces(proc_root: &Path, pid: u32) -> Option<Process> {
    let dir = proc_root.join(pid.to_string());
    let status = procfs::parse_status(&std::fs::read_to_string(dir.join("status")).ok()?);
    let cgroups = procfs::parse_cgroup_file(&std::fs::read_to_string(dir.join("cgroup")).ok()?);
    let start_time = procfs::parse_stat_start_time(&std::fs::read_to_string(dir.join("stat")).ok()?)?;
    Some(Process { pid, start_time, status, cgroups, namespaces: Namespaces::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTAINER: &str = "0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope\n";

    /// A `/proc` with one container process (pid 300) and one host process (pid 1).
    fn fake_proc(net: u64) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (pid, cgroup) in [(1, "0::/init.scope\n"), (300, CONTAINER)] {
            let dir = root.path().join(pid.to_string());
            std::fs::create_dir_all(dir.join("ns")).unwrap();
            std::fs::write(
                dir.join("stat"),
                format!("{pid} (p) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5000 0"),
            )
            .unwrap();
            std::fs::write(dir.join("status"), format!("Name:\tp\nTgid:\t{pid}\n")).unwrap();
            std::fs::write(dir.join("cgroup"), cgroup).unwrap();
        }
        set_net(root.path(), net);
        root
    }

    fn set_net(root: &Path, net: u64) {
        let link = root.join("300/ns/net");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(format!("net:[{net}]"), link).unwrap();
    }

    fn net_of_the_container(walker: &Walker, at: Instant) -> Option<u64> {
        let containers = walker.container_processes_at(at);
        assert_eq!(containers.len(), 1, "only pid 300 is a container's");
        let (_, processes) = containers.values().next().unwrap();
        assert_eq!(processes.iter().map(|p| p.pid).collect::<Vec<_>>(), [300]);
        processes[0].namespaces.net
    }

    #[test]
    fn namespaces_serve_as_long_as_the_process_was_known_up_to_the_ttl() {
        let proc = fake_proc(1);
        let walker = Walker::new(proc.path().to_owned());
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        assert_eq!(net_of_the_container(&walker, at(0)), Some(1));
        // Met at 0: read again at the next walk, whatever its time.
        set_net(proc.path(), 2);
        assert_eq!(net_of_the_container(&walker, at(2)), Some(2));
        // Read at 2, known since 0: serves 2 s.
        set_net(proc.path(), 3);
        assert_eq!(net_of_the_container(&walker, at(3)), Some(2), "served from the last walk");
        assert_eq!(
            net_of_the_container(&walker, at(4)),
            Some(3),
            "read again once as old as the process was"
        );
        // Known for a long time: serves NAMESPACES_TTL, no more.
        assert_eq!(net_of_the_container(&walker, at(100)), Some(3));
        set_net(proc.path(), 4);
        assert_eq!(net_of_the_container(&walker, at(129)), Some(3));
        assert_eq!(net_of_the_container(&walker, at(130)), Some(4));
    }

    #[test]
    fn a_pid_that_changes_hands_is_read_anew() {
        let proc = fake_proc(1);
        let walker = Walker::new(proc.path().to_owned());
        let start = Instant::now();
        assert_eq!(net_of_the_container(&walker, start), Some(1));
        assert_eq!(net_of_the_container(&walker, start + Duration::from_secs(60)), Some(1));
        // Another process with pid 300: another start time.
        let stat = proc.path().join("300/stat");
        std::fs::write(&stat, "300 (p) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 9000 0").unwrap();
        set_net(proc.path(), 2);
        assert_eq!(net_of_the_container(&walker, start + Duration::from_secs(61)), Some(2));
        assert_eq!(walker.known.lock().unwrap().len(), 1, "the old process is forgotten");
    }
}
