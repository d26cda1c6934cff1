//! What `kernsight audit` reports of a container's posture: one finding per weakened wall, each
//! with a severity. A privileged container's capability findings are left out: `privileged`
//! already says it holds them all.

use serde::Serialize;

use super::{ContainerPosture, SeccompMode};
use crate::kernel::{
    names::{capability_names, capability_number},
    procfs::NamespaceKind,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// A stable identifier (`privileged`, `host_pid_namespace`, ...), for scripts.
    pub id: &'static str,
    pub severity: Severity,
    /// One line saying what and why it matters.
    pub detail: String,
}

/// Capabilities that each open a way out of the container or into the host's kernel, beyond
/// what runtimes grant by default (CAP_SYS_ADMIN has its own finding).
const DANGEROUS: [&str; 10] = [
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_PTRACE",
    "SYS_BOOT",
    "SYS_TIME",
    "NET_ADMIN",
    "BPF",
    "PERFMON",
    "DAC_READ_SEARCH",
    "MAC_ADMIN",
];

/// Host namespaces that are findings, with their severity. The user namespace is covered by
/// `root_without_user_namespace`; the cgroup namespace is the host's by default on cgroup v1
/// hosts and only shows paths.
const HOST_NAMESPACE_FINDINGS: [(NamespaceKind, &str, Severity, &str); 5] = [
    (
        NamespaceKind::Pid,
        "host_pid_namespace",
        Severity::High,
        "shares the host's pid namespace: sees and can signal every process of the node",
    ),
    (
        NamespaceKind::Net,
        "host_network_namespace",
        Severity::High,
        "shares the host's network namespace: binds host ports, reaches every local service",
    ),
    (
        NamespaceKind::Mnt,
        "host_mount_namespace",
        Severity::Critical,
        "shares the host's mount namespace: sees the host's filesystems",
    ),
    (
        NamespaceKind::Ipc,
        "host_ipc_namespace",
        Severity::Medium,
        "shares the host's IPC namespace: host shared memory and semaphores",
    ),
    (NamespaceKind::Uts, "host_uts_namespace", Severity::Low, "shares the host's hostname (UTS namespace)"),
];

fn has(mask: u64, name: &str) -> bool {
    capability_number(name).is_some_and(|bit| bit < 64 && mask & (1 << bit) != 0)
}

/// The findings of one container, most severe first (then by id).
pub fn findings(posture: &ContainerPosture) -> Vec<Finding> {
    let mut out = Vec::new();
    let held = posture.effective | posture.permitted;
    if posture.privileged {
        out.push(Finding {
            id: "privileged",
            severity: Severity::Critical,
            detail: "its bounding set holds every capability the host's init holds".into(),
        });
    } else {
        if has(held, "SYS_ADMIN") {
            out.push(Finding {
                id: "cap_sys_admin",
                severity: Severity::High,
                detail: "holds CAP_SYS_ADMIN (mount, namespaces, BPF and most of the kernel's admin paths)"
                    .into(),
            });
        }
        let dangerous: u64 = DANGEROUS
            .iter()
            .filter_map(|name| capability_number(name))
            .filter(|&bit| bit < 64)
            .fold(0, |acc, bit| acc | (1 << bit));
        let names = capability_names(held & dangerous);
        if !names.is_empty() {
            out.push(Finding {
                id: "dangerous_capabilities",
                severity: Severity::Medium,
                detail: format!("holds {}", names.join(", ")),
            });
        }
    }
    if posture.seccomp == SeccompMode::Disabled {
        out.push(Finding {
            id: "seccomp_disabled",
            severity: Severity::High,
            detail: "no seccomp filter: every syscall of the kernel is reachable".into(),
        });
    }
    for (kind, id, severity, detail) in HOST_NAMESPACE_FINDINGS {
        if posture.shares_host(kind) {
            out.push(Finding { id, severity, detail: detail.into() });
        }
    }
    if !posture.writable_host_mounts.is_empty() {
        let listed: Vec<String> =
            posture.writable_host_mounts.iter().map(|(at, host)| format!("{at} (host {host})")).collect();
        out.push(Finding {
            id: "writable_host_mount",
            severity: Severity::High,
            detail: format!("can write host directories: {}", listed.join(", ")),
        });
    }
    if posture.runs_as_root && !posture.own_user_namespace && posture.namespaces_known {
        out.push(Finding {
            id: "root_without_user_namespace",
            severity: Severity::Medium,
            detail: "runs as uid 0 in the host's user namespace: root inside is root on the host".into(),
        });
    }
    out.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.id.cmp(b.id)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ContainerPosture {
        ContainerPosture {
            container_id: "a".repeat(64),
            name: None,
            cgroup: String::new(),
            pids: vec![1],
            effective: 1 << 10,
            permitted: 1 << 10,
            bounding: 1 << 10,
            privileged: false,
            seccomp: SeccompMode::Filter,
            seccomp_filters: 1,
            no_new_privs: false,
            runs_as_root: false,
            own_user_namespace: false,
            host_namespaces: vec![],
            writable_host_mounts: vec![],
            namespaces_known: true,
        }
    }

    fn ids(p: &ContainerPosture) -> Vec<&'static str> {
        findings(p).into_iter().map(|f| f.id).collect()
    }

    #[test]
    fn a_confined_non_root_container_has_no_findings() {
        assert!(ids(&base()).is_empty());
    }

    #[test]
    fn privileged_subsumes_capability_findings() {
        let mut p = base();
        p.privileged = true;
        p.effective = u64::MAX;
        p.seccomp = SeccompMode::Disabled;
        p.runs_as_root = true;
        assert_eq!(ids(&p), vec!["privileged", "seccomp_disabled", "root_without_user_namespace"]);
    }

    #[test]
    fn capabilities_and_namespaces() {
        let mut p = base();
        p.effective |= 1 << 21 | 1 << 19; // SYS_ADMIN, SYS_PTRACE
        p.host_namespaces = vec!["pid", "net", "cgroup", "user"];
        assert_eq!(
            ids(&p),
            vec!["cap_sys_admin", "host_network_namespace", "host_pid_namespace", "dangerous_capabilities"]
        );
        p.runs_as_root = true;
        p.own_user_namespace = true;
        assert!(!ids(&p).contains(&"root_without_user_namespace"));
        p.writable_host_mounts = vec![("/data".into(), "/srv/data".into())];
        assert!(ids(&p).contains(&"writable_host_mount"));
        // Unknown namespaces (no ptrace access): nothing is claimed about them.
        let mut unknown = base();
        unknown.runs_as_root = true;
        unknown.namespaces_known = false;
        assert!(ids(&unknown).is_empty());
    }
}
