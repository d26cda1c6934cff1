//! The container runtime's executables (`security.runtime_binaries`), as the kernel side keys
//! them in `RUNTIME_BINARIES` to leave out what runc's stages do in a container's cgroup
//! (`kernsight-ebpf`'s `runtimes`): shared by the capabilities and escape families.

use std::{
    ffi::CString,
    fs::File,
    os::{
        fd::{AsRawFd, FromRawFd},
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use aya::{Ebpf, EbpfLoader, maps::HashMap};
use kernsight_common::capabilities::{
    FILE_INODE_OFFSET_GLOBAL, INODE_INO_OFFSET_GLOBAL, INODE_SB_OFFSET_GLOBAL, MM_EXE_FILE_OFFSET_GLOBAL,
    RUNTIME_BINARIES_MAP, RuntimeBinary, SB_DEV_OFFSET_GLOBAL, TASK_COMM_OFFSET_GLOBAL,
};

use super::capabilities::SecurityOffsets;

/// Sets the offsets the kernel side reads a task's name and executable with.
pub fn configure<'a>(loader: &mut EbpfLoader<'a>, offsets: &'a SecurityOffsets) {
    loader
        .override_global(TASK_COMM_OFFSET_GLOBAL, &offsets.task_comm, true)
        .override_global(MM_EXE_FILE_OFFSET_GLOBAL, &offsets.mm_exe_file, true)
        .override_global(FILE_INODE_OFFSET_GLOBAL, &offsets.file_inode, true)
        .override_global(INODE_INO_OFFSET_GLOBAL, &offsets.inode_ino, true)
        .override_global(INODE_SB_OFFSET_GLOBAL, &offsets.inode_sb, true)
        .override_global(SB_DEV_OFFSET_GLOBAL, &offsets.sb_dev, true);
}

/// Fills `RUNTIME_BINARIES` with the identities of the runtime executables that exist on the
/// host (filling it twice, for two families, records the same entries). None found is not an
/// error: `what` runc's stages make is then counted in the containers' cgroups, said in the log.
pub fn recognise(ebpf: &mut Ebpf, runtime_root: &Path, paths: &[PathBuf], what: &str) -> anyhow::Result<()> {
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
            "none of security.runtime_binaries exists on this host: the {what} runc makes while it \
             sets a container up are counted in the container's cgroup; name the runtime's path there"
        );
    } else {
        tracing::info!(binaries = %found.join(", "), "{what} of these runtimes' setup stages are not counted");
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
