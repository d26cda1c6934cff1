//! Start-up checks: each failure is one line that says what is missing and how to fix it.

use std::path::Path;

use caps::{CapSet, Capability};
use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, FsType, TRACEFS_MAGIC, statfs},
};
use tracing::{info, warn};

use super::btf::KERNEL_BTF;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "missing privileges: loading eBPF programs needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) \
         in the effective set, and this process has {held}; run kernsight as root, or grant them \
         (Kubernetes: securityContext.capabilities.add: [BPF, PERFMON])"
    )]
    Privileges { held: String },
    #[error("cannot read this process's capabilities: {0}")]
    Capabilities(String),
    #[error(
        "kernel BTF not found at {KERNEL_BTF}: kernsight needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y (the default on current distributions; kernsight needs nothing \
         else by version, it probes what the kernel offers): use a node image whose kernel has it"
    )]
    NoBtf,
}

pub fn check_privileges() -> Result<(), PreflightError> {
    let effective =
        caps::read(None, CapSet::Effective).map_err(|err| PreflightError::Capabilities(err.to_string()))?;
    let has = |cap| effective.contains(&cap);
    if (has(Capability::CAP_BPF) && has(Capability::CAP_PERFMON)) || has(Capability::CAP_SYS_ADMIN) {
        return Ok(());
    }
    let mut held: Vec<String> = [Capability::CAP_BPF, Capability::CAP_PERFMON, Capability::CAP_SYS_ADMIN]
        .into_iter()
        .filter(|cap| has(*cap))
        .map(|cap| cap.to_string())
        .collect();
    if held.is_empty() {
        held.push("none of them".into());
    }
    Err(PreflightError::Privileges { held: held.join(", ") })
}

pub fn check_btf() -> Result<(), PreflightError> {
    if Path::new(KERNEL_BTF).exists() { Ok(()) } else { Err(PreflightError::NoBtf) }
}

/// Lifts `RLIMIT_MEMLOCK`: kernels before 5.11 charge BPF maps and programs to it (the default
/// of 64 KiB there holds no map of kernsight's), later ones to the memory cgroup. Needs
/// CAP_SYS_RESOURCE; without it the limit stays and, on an old kernel, loading says what failed.
pub fn raise_memlock_limit() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: a valid rlimit for this process.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(
            "cannot lift RLIMIT_MEMLOCK ({}): fine on 5.11 and later, which charge BPF memory to the \
             memory cgroup",
            std::io::Error::last_os_error()
        );
    }
}

/// Mounts tracefs and bpffs where they are missing. A failure is logged, not fatal: only the
/// probes that need the filesystem are affected, and they say so when they attach.
/// (`paths.tracefs` and `paths.bpffs` of the config.)
///
/// bpffs is mounted 0700 (its default is 1777): nobody but root can then pre-create kernsight's
/// pin directory or plant links where its maps go.
pub fn ensure_mounts(tracefs: &Path, bpffs: &Path) {
    ensure_mounted(tracefs, "tracefs", TRACEFS_MAGIC, None);
    ensure_mounted(bpffs, "bpf", BPF_FS_MAGIC, Some(BPFFS_OPTIONS));
}

/// Mount options of a bpffs kernsight mounts itself.
pub const BPFFS_OPTIONS: &str = "mode=0700";

fn ensure_mounted(path: &Path, fs_type: &str, magic: FsType, options: Option<&str>) {
    if statfs(path).is_ok_and(|fs| fs.filesystem_type() == magic) {
        return;
    }
    match mount(
        Some("none"),
        path,
        Some(fs_type),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        options,
    ) {
        Ok(()) => info!(
            "{fs_type} was not mounted: mounted it at {} ({})",
            path.display(),
            options.unwrap_or("defaults")
        ),
        Err(err) => warn!(
            "{fs_type} is not mounted at {} and mounting it failed ({err}): mount it with \
             `mount -t {fs_type}{} none {}` (needs CAP_SYS_ADMIN), or set paths.{} to where it is",
            path.display(),
            options.map(|o| format!(" -o {o}")).unwrap_or_default(),
            path.display(),
            if fs_type == "bpf" { "bpffs" } else { "tracefs" },
        ),
    }
}
