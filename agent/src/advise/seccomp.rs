//! A seccomp profile in the OCI / Docker JSON format from the syscalls a workload made: every
//! syscall seen is allowed, any other fails with EPERM (`defaultAction: SCMP_ACT_ERRNO`).
//! Names are sorted, so the same observation gives the same bytes.

use std::collections::BTreeSet;

use serde::Serialize;

use super::Observed;

/// Allowed whatever was seen: what the runtime needs between loading the filter and the
/// process's first instruction, and what no counter can see. `exit` and `exit_group` never
/// return, so the kernel's syscall counters (which count at syscall exit) never see them. The
/// rest was measured: runc 1.1 (a Go program) loads the filter, then sets the uid and groups,
/// checks the working directory and /proc/self/fd, closes descriptors and execs; the minimal set
/// under which `podman run --runtime runc` still started `/bin/true` (busybox), plus what the Go
/// runtime may do at any moment (futex, signals for preemption, sched_yield, madvise, epoll).
/// A window that includes the container's start sees all this anyway; one that starts later
/// does not, and needs this list. Names this architecture does not have are left out.
pub const RUNTIME_NEEDS: [&str; 40] = [
    "arch_prctl",
    "brk",
    "capget",
    "capset",
    "chdir",
    "close",
    "epoll_pwait",
    "execve",
    "exit",
    "exit_group",
    "fcntl",
    "fstat",
    "fstatfs",
    "futex",
    "getcwd",
    "getdents64",
    "getpid",
    "getppid",
    "gettid",
    "getuid",
    "madvise",
    "mmap",
    "mprotect",
    "munmap",
    "nanosleep",
    "newfstatat",
    "openat",
    "prctl",
    "read",
    "restart_syscall",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sched_yield",
    "setgid",
    "setgroups",
    "setuid",
    "sigaltstack",
    "tgkill",
    "write",
];

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub default_action: &'static str,
    /// EPERM.
    pub default_errno_ret: u32,
    pub architectures: Vec<&'static str>,
    pub syscalls: Vec<Rule>,
}

#[derive(Debug, Serialize)]
pub struct Rule {
    pub names: Vec<String>,
    pub action: &'static str,
    pub comment: String,
}

/// libseccomp's name of the architecture kernsight was built for.
pub fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "SCMP_ARCH_AARCH64",
        "riscv64" => "SCMP_ARCH_RISCV64",
        _ => "SCMP_ARCH_X86_64",
    }
}

fn known_here(name: &str) -> bool {
    name.parse::<syscalls::Sysno>().is_ok()
}

/// The profile; `None` when nothing was seen (an empty allow list would let nothing start).
pub fn profile(observed: &Observed, target: &str) -> Option<Profile> {
    if observed.syscalls.is_empty() {
        return None;
    }
    let seen: BTreeSet<String> = observed.syscalls.keys().cloned().collect();
    let runtime: Vec<String> = RUNTIME_NEEDS
        .iter()
        .filter(|name| known_here(name) && !seen.contains(**name))
        .map(|name| (*name).to_owned())
        .collect();
    let mut syscalls = vec![Rule {
        names: seen.into_iter().collect(),
        action: "SCMP_ACT_ALLOW",
        comment: format!("made by {target} in {}", observed.source),
    }];
    if !runtime.is_empty() {
        syscalls.push(Rule {
            names: runtime,
            action: "SCMP_ACT_ALLOW",
            comment: "needed by the runtime to start the process after loading this filter, and exit (never counted)"
                .into(),
        });
    }
    Some(Profile {
        default_action: "SCMP_ACT_ERRNO",
        default_errno_ret: libc::EPERM as u32,
        architectures: vec![architecture()],
        syscalls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_allows_what_was_seen_sorted_and_the_runtime_needs() {
        let mut observed = Observed { source: "a test".into(), ..Observed::default() };
        assert!(profile(&observed, "x").is_none());
        for name in ["write", "openat", "read", "getdents64"] {
            observed.syscalls.insert(name.into(), 3);
        }
        let p = profile(&observed, "container x").unwrap();
        assert_eq!(p.default_action, "SCMP_ACT_ERRNO");
        assert_eq!(p.default_errno_ret, 1);
        assert_eq!(p.syscalls[0].names, ["getdents64", "openat", "read", "write"]);
        let runtime = &p.syscalls[1].names;
        assert!(runtime.contains(&"exit_group".to_owned()) && runtime.contains(&"execve".to_owned()));
        assert!(!runtime.contains(&"write".to_owned()), "seen ones are not repeated");
        let mut sorted = runtime.clone();
        sorted.sort();
        assert_eq!(&sorted, runtime);
        let json = serde_json::to_string(&p).unwrap();
        assert!(
            json.starts_with(r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,"architectures":["#)
        );
    }
}
