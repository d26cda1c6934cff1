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
         CONFIG_DEBUG_INFO_BTF=y (the default on current distributions)"
    )]
    NoBtf,
    #[error(
        "kernel {found} is too old: kernsight needs Linux {}.{} or later (cgroup local storage \
         for BPF); upgrade the node's kernel",
        MIN_KERNEL.0,
        MIN_KERNEL.1
    )]
    KernelTooOld { found: String },
}

/// cgroup local storage (`BPF_MAP_TYPE_CGRP_STORAGE`) arrived in 6.2.
const MIN_KERNEL: (u32, u32) = (6, 2);

/// The (major, minor) of a kernel release string such as `6.18.44-fc-v595`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

pub fn check_kernel_version() -> Result<(), PreflightError> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    match kernel_version(release) {
        Some(version) if version < MIN_KERNEL => {
            Err(PreflightError::KernelTooOld { found: release.to_owned() })
        }
        // Unparseable: let loading say what the kernel refuses.
        _ => Ok(()),
    }
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

/// Mounts tracefs and bpffs where they are missing. A failure is logged, not fatal: only the
/// probes that need the filesystem are affected, and they say so when they attach.
/// (`paths.tracefs` and `paths.bpffs` of the config.)
pub fn ensure_mounts(tracefs: &Path, bpffs: &Path) {
    ensure_mounted(tracefs, "tracefs", TRACEFS_MAGIC);
    ensure_mounted(bpffs, "bpf", BPF_FS_MAGIC);
}

fn ensure_mounted(path: &Path, fs_type: &str, magic: FsType) {
    if statfs(path).is_ok_and(|fs| fs.filesystem_type() == magic) {
        return;
    }
    match mount(
        Some("none"),
        path,
        Some(fs_type),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    ) {
        Ok(()) => info!("{fs_type} was not mounted: mounted it at {}", path.display()),
        Err(err) => warn!(
            "{fs_type} is not mounted at {} and mounting it failed ({err}): mount it with \
             `mount -t {fs_type} none {}` (needs CAP_SYS_ADMIN), or set paths.{} to where it is",
            path.display(),
            path.display(),
            if fs_type == "bpf" { "bpffs" } else { "tracefs" },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(kernel_version("6.18.44-fc-v595"), Some((6, 18)));
        assert_eq!(kernel_version("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(kernel_version("6.2"), Some((6, 2)));
        assert_eq!(kernel_version("garbage"), None);
        assert!(kernel_version("5.15.0").is_some_and(|v| v < MIN_KERNEL));
        assert!(kernel_version("6.2.0").is_some_and(|v| v >= MIN_KERNEL));
    }
}
