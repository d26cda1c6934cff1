//! The `capabilities` family: `ks_cap_capable` on the `cap_capable` BTF tracepoint counts the
//! capability checks of each cgroup, granted and denied, in the kernel.

use std::{
    ffi::CString,
    fs::File,
    os::{
        fd::{AsRawFd, FromRawFd},
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use aya::{Btf, Ebpf, EbpfLoader, maps::HashMap, programs::FExit};
use kernsight_common::{
    capabilities::{
        CAPABILITY_CHECKS_MAP, CRED_USER_NS_OFFSET_GLOBAL, CapabilityKey, DENIED, FILE_INODE_OFFSET_GLOBAL,
        GRANTED, INITIAL_USER_NS, INODE_INO_OFFSET_GLOBAL, INODE_SB_OFFSET_GLOBAL, MM_EXE_FILE_OFFSET_GLOBAL,
        NESTED_USER_NS, RUNTIME_BINARIES_MAP, RuntimeBinary, SB_DEV_OFFSET_GLOBAL, TASK_COMM_OFFSET_GLOBAL,
        USER_NS_LEVEL_OFFSET_GLOBAL,
    },
    counters::{OVERFLOW_CGROUP_ID, map_full},
};

use super::{
    counters::{CgroupCounters, Row},
    facts::KernelFacts,
    family::{AttachContext, Attached, Family, MapRow, attached_any},
    features::Implementation,
    load_and_attach,
};
use crate::{config::Config, kernel::btf};

pub const PROBE: &str = "capabilities";
/// The `capability:cap_capable` BTF tracepoint, where the kernel has it.
const TRACEPOINT_PROGRAMS: [(&str, &str); 1] = [("ks_cap_capable", "cap_capable")];
/// Else fexit on the function `cap_capable` (same checks, same result).
const FEXIT_PROGRAM: &str = "ks_cap_capable_exit";
const FUNCTION: &str = "cap_capable";

/// How the family hooks capability checks on this kernel; `None`: it cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    Tracepoint,
    Fexit,
}

impl Hook {
    fn choose(facts: &KernelFacts) -> Option<Self> {
        let features = &facts.features;
        if features.cap_capable_tracepoint {
            Some(Self::Tracepoint)
        } else if features.cap_capable_function && features.tracing_programs {
            Some(Self::Fexit)
        } else {
            None
        }
    }
}

/// Capability checks per cgroup, granted and denied.
pub struct Capabilities;

impl Family for Capabilities {
    fn name(&self) -> &'static str {
        PROBE
    }

    fn programs(&self, _config: &Config, facts: &KernelFacts) -> Vec<&'static str> {
        match Hook::choose(facts) {
            Some(Hook::Fexit) => vec![FEXIT_PROGRAM],
            _ => TRACEPOINT_PROGRAMS.iter().map(|(p, _)| *p).collect(),
        }
    }

    fn implementation(&self, facts: &KernelFacts, _config: &Config) -> Implementation {
        match Hook::choose(facts) {
            Some(Hook::Fexit) => Implementation::fallback(
                "fexit",
                "fexit on cap_capable: the kernel has no capability:cap_capable tracepoint",
            ),
            _ => Implementation::standard("tracepoint"),
        }
    }

    fn enabled(&self, config: &Config) -> bool {
        config.security.capability_checks
    }

    fn set_enabled(&self, config: &mut Config, on: bool) {
        config.security.capability_checks = on;
    }

    fn unsupported(&self, facts: &KernelFacts, _config: &Config) -> Option<String> {
        facts.need_walk().err().or_else(|| {
            if let Err(err) = &facts.security {
                return Some(format!("cannot read user_namespace, task_struct and cred members: {err}"));
            }
            let features = &facts.features;
            match Hook::choose(facts) {
                Some(_) => None,
                None if !features.cap_capable_function => Some(
                    "the kernel has neither the capability:cap_capable tracepoint nor a cap_capable \
                     function in its BTF for fexit"
                        .into(),
                ),
                None => Some(
                    "the kernel has no capability:cap_capable tracepoint, and no fexit programs \
                     (BPF_PROG_TYPE_TRACING) for the cap_capable function"
                        .into(),
                ),
            }
        })
    }

    fn configure<'a>(&self, loader: &mut EbpfLoader<'a>, facts: &'a KernelFacts, _config: &Config) {
        let offsets = &facts.offsets.security;
        loader
            .override_global(USER_NS_LEVEL_OFFSET_GLOBAL, &offsets.user_ns_level, true)
            .override_global(TASK_COMM_OFFSET_GLOBAL, &offsets.task_comm, true)
            .override_global(CRED_USER_NS_OFFSET_GLOBAL, &offsets.cred_user_ns, true)
            .override_global(MM_EXE_FILE_OFFSET_GLOBAL, &offsets.mm_exe_file, true)
            .override_global(FILE_INODE_OFFSET_GLOBAL, &offsets.file_inode, true)
            .override_global(INODE_INO_OFFSET_GLOBAL, &offsets.inode_ino, true)
            .override_global(INODE_SB_OFFSET_GLOBAL, &offsets.inode_sb, true)
            .override_global(SB_DEV_OFFSET_GLOBAL, &offsets.sb_dev, true);
    }

    fn maps(&self) -> &'static [&'static str] {
        &[CAPABILITY_CHECKS_MAP, RUNTIME_BINARIES_MAP]
    }

    fn map_entries(&self, config: &Config) -> Vec<(&'static str, u32)> {
        vec![(CAPABILITY_CHECKS_MAP, config.security.capability_max_entries)]
    }

    fn pinned_maps(&self) -> &'static [&'static str] {
        &[CAPABILITY_CHECKS_MAP]
    }

    fn bounds(&self) -> &'static [(&'static str, u32)] {
        &[(CAPABILITY_CHECKS_MAP, map_full::CAPABILITY_CHECKS)]
    }

    fn attach(&self, cx: &mut AttachContext<'_>) -> anyhow::Result<Box<dyn Attached>> {
        let hook = Hook::choose(cx.facts).unwrap_or(Hook::Tracepoint);
        let security = &cx.config.security;
        let maps = attach(cx.ebpf, cx.btf, security.capability_max_entries, hook)?;
        recognise_runtimes(cx.ebpf, &security.runtime_root, &security.runtime_binaries)?;
        Ok(Box::new(maps))
    }
}

/// Offsets of `user_namespace.level`, `task_struct.comm`, `cred.user_ns`, and of the path
/// `mm->exe_file->f_inode->{i_ino, i_sb->s_dev}`, from the running kernel's BTF.
#[derive(Debug, Clone, Copy, Default)]
pub struct SecurityOffsets {
    pub user_ns_level: u32,
    pub task_comm: u32,
    pub cred_user_ns: u32,
    pub mm_exe_file: u32,
    pub file_inode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
}

impl SecurityOffsets {
    pub fn read(btf: &btf::Btf) -> Result<Self, btf::BtfError> {
        Ok(Self {
            user_ns_level: btf.member_offset("user_namespace", "level")?,
            task_comm: btf.member_offset("task_struct", "comm")?,
            cred_user_ns: btf.member_offset("cred", "user_ns")?,
            mm_exe_file: btf.member_offset("mm_struct", "exe_file")?,
            file_inode: btf.member_offset("file", "f_inode")?,
            inode_ino: btf.member_offset("inode", "i_ino")?,
            inode_sb: btf.member_offset("inode", "i_sb")?,
            sb_dev: btf.member_offset("super_block", "s_dev")?,
        })
    }
}

/// Fills `RUNTIME_BINARIES` with the identities of the runtime executables that exist on the
/// host. None found is not an error: runc's setup checks are then counted in the containers'
/// cgroups, said once in the log.
fn recognise_runtimes(ebpf: &mut Ebpf, runtime_root: &Path, paths: &[PathBuf]) -> anyhow::Result<()> {
    let map = ebpf
        .map_mut(RUNTIME_BINARIES_MAP)
        .with_context(|| format!("map {RUNTIME_BINARIES_MAP} missing from the object"))?;
    let mut binaries: HashMap<_, RuntimeBinary, u8> = HashMap::try_from(map)?;
    // Each root opened once for all the paths.
    let roots: Vec<File> = [Path::new("/proc/1/root"), runtime_root]
        .into_iter()
        .filter_map(|root| File::open(root).ok())
        .collect();
    let mut found = Vec::new();
    for path in paths {
        match host_binary(&roots, path) {
            Ok(binary) => {
                binaries.insert(&binary, &1, 0).with_context(|| format!("recording {}", path.display()))?;
                found.push(path.display().to_string());
            }
            Err(err) => tracing::debug!(path = %path.display(), %err, "not a runtime binary on this host"),
        }
    }
    if found.is_empty() {
        tracing::warn!(
            "none of security.runtime_binaries exists on this host: the capability checks runc makes while it \
             sets a container up are counted in the container's cgroup; name the runtime's path there"
        );
    } else {
        tracing::info!(binaries = %found.join(", "), "capability checks of these runtimes' setup stages are not counted");
    }
    Ok(())
}

/// The identity of the host's file `path`, as the kernel keys it: opened under the first of
/// `roots` that has it, which `recognise_runtimes` gives as `/proc/1/root`
/// (the host's root, for an agent on the host or in a pod with the host's PID namespace and
/// `CAP_SYS_PTRACE`), else under `runtime_root` (where the chart mounts the host's `/usr`), with
/// `RESOLVE_IN_ROOT`, so that absolute symlinks such as `/usr/sbin/runc -> /usr/bin/runc`
/// resolve on the host and not in the agent's image.
fn host_binary(roots: &[File], path: &Path) -> std::io::Result<RuntimeBinary> {
    let mut last = std::io::Error::from(std::io::ErrorKind::NotFound);
    for root in roots {
        match binary_under(root, path) {
            Ok(binary) => return Ok(binary),
            Err(err) => last = err,
        }
    }
    Err(last)
}

fn binary_under(root: &File, path: &Path) -> std::io::Result<RuntimeBinary> {
    let name = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `open_how` is plain integers; zero is "no flags".
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: a valid directory fd, NUL-terminated name and an `open_how` of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            name.as_ptr(),
            &raw const how,
            size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor the call above just opened, owned by nothing else.
    let file = unsafe { File::from_raw_fd(fd as i32) };
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(RuntimeBinary { inode: metadata.ino(), device: kernel_device(metadata.dev()), _pad: 0 })
}

/// `super_block.s_dev` of a device number as `stat` gives it: the kernel's `MKDEV`, 12 bits of
/// major above 20 bits of minor.
fn kernel_device(device: u64) -> u32 {
    (libc::major(device) << 20) | (libc::minor(device) & 0xf_ffff)
}

/// The highest capability number this kernel knows (`/proc/sys/kernel/cap_last_cap`).
fn last_capability() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(40)
        .min(kernsight_common::capabilities::MAX_CAPABILITY)
}

/// The maps of the attached `capabilities` family.
pub struct CapabilityMaps {
    checks: CgroupCounters<CapabilityKey>,
}

fn attach(ebpf: &mut Ebpf, btf: &Btf, capacity: u32, hook: Hook) -> anyhow::Result<CapabilityMaps> {
    // One overflow entry per (capability, result, user namespace), so that `other` keeps those
    // labels.
    let overflow = (0..=last_capability()).flat_map(|cap| {
        [GRANTED, DENIED].into_iter().flat_map(move |result| {
            [INITIAL_USER_NS, NESTED_USER_NS].into_iter().map(move |userns| CapabilityKey {
                cgroup_id: OVERFLOW_CGROUP_ID,
                cap,
                result,
                userns,
                _pad: [0; 2],
            })
        })
    });
    let checks = CgroupCounters::take(ebpf, CAPABILITY_CHECKS_MAP, capacity, overflow)?;
    match hook {
        Hook::Tracepoint => load_and_attach(ebpf, btf, &TRACEPOINT_PROGRAMS)?,
        Hook::Fexit => {
            let program: &mut FExit = ebpf
                .program_mut(FEXIT_PROGRAM)
                .with_context(|| format!("program {FEXIT_PROGRAM} missing from the object"))?
                .try_into()?;
            program
                .load(FUNCTION, btf)
                .with_context(|| format!("loading {FEXIT_PROGRAM} (fexit/{FUNCTION})"))?;
            program.attach().with_context(|| format!("attaching {FEXIT_PROGRAM}"))?;
        }
    }
    Ok(CapabilityMaps { checks })
}

impl CapabilityMaps {
    /// Checks per (cgroup, capability, result, user namespace).
    pub fn read(&self) -> (Vec<Row<CapabilityKey>>, u64) {
        self.checks.read()
    }
}

impl Attached for CapabilityMaps {
    attached_any!();

    fn map_rows(&self) -> Vec<MapRow> {
        vec![self.checks.map_row()]
    }

    fn recycle(&mut self, gone_for: &mut dyn FnMut(u64) -> Option<Duration>, grace: Duration) -> usize {
        self.checks.recycle(gone_for, grace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_take_the_kernels_encoding() {
        // 254:0 (a virtio disk), as stat encodes it and as super_block.s_dev holds it.
        assert_eq!(kernel_device(0xfe00), 254 << 20);
        assert_eq!(kernel_device(libc::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(kernel_device(libc::makedev(259, 300)), (259 << 20) | 300);
    }

    #[test]
    fn a_host_binary_is_found_through_symlinks_and_a_missing_one_is_an_error() {
        let own = std::env::current_exe().expect("current exe");
        let root = [File::open("/").expect("/")];
        let root = &root[..];
        let direct = host_binary(root, &own).expect("own executable");
        let metadata = std::fs::metadata(&own).expect("metadata");
        assert_eq!(direct.inode, metadata.ino());
        let link = std::env::temp_dir().join(format!("kernsight-runtime-link-{}", std::process::id()));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&own, &link).expect("symlink");
        let through_link = host_binary(root, &link);
        let _ = std::fs::remove_file(&link);
        assert_eq!(through_link.expect("through a symlink"), direct);
        assert!(host_binary(root, Path::new("/nonexistent/runc")).is_err());
        assert!(host_binary(root, Path::new("/tmp")).is_err(), "a directory is no binary");
    }
}
