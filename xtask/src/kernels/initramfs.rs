//! The guest's root filesystem, one per kernel and run: busybox, the init and run scripts, the
//! kernel's configuration, the static agent, the integration tests and a few host tools that
//! some tests call (with the libraries they load), packed as a gzip'd newc cpio archive.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use super::{build::Binaries, download::Kernel, plan};
use crate::process::{Step, output, workspace_root};

const INIT: &str = include_str!("../../guest/init.sh");
/// What the guests' scripts share (`result`, `start_agent`, `value`...).
const LIB: &str = include_str!("../../guest/lib.sh");
pub const V2_CHECK: &str = include_str!("../../guest/v2-check.sh");
pub const SYSCALL_CHECK: &str = include_str!("../../guest/syscall-check.sh");
pub const RUN: &str = include_str!("../../guest/run.sh");
/// The x86_64 guests' busybox, the host's (Debian's busybox-static).
pub const BUSYBOX: &str = "/bin/busybox";

/// Seconds a guest waits for the agent to serve, and for one area of the integration tests.
pub struct GuestTimes {
    pub agent_wait: u64,
    pub test_timeout: u64,
}

/// Builds `dir/root` and packs it into `dir/initramfs.gz`; returns the archive's path. The guest
/// runs `areas` of the integration tests (each area with the full names of its tests).
pub fn make(
    dir: &Path,
    kernel: &Kernel,
    binaries: &Binaries,
    areas: &[(String, Vec<String>)],
    times: &GuestTimes,
) -> Result<PathBuf, String> {
    let settings = format!("AGENT_WAIT={}\nTEST_TIMEOUT={}\n", times.agent_wait, times.test_timeout);
    let root = guest_root(dir, kernel, Path::new(BUSYBOX), &binaries.agent, RUN, &settings)?;
    write(&root.join("matrix/v2-check.sh"), V2_CHECK, 0o755)?;
    let mut list = String::new();
    if let Ok(tests) = &binaries.tests {
        // The tests start the agent at the path compiled into them; there the guest has the
        // release agent too: the debug one takes about 50 s to start under TCG (BTF parsing),
        // the release one about 1 s, and the tests drive it only through its command line and
        // HTTP.
        copy_stripped(&binaries.agent, &under(&root, &tests.agent_path))?;
        copy_stripped(&tests.binary, &root.join("tests/integration"))?;
        copy_libraries(&root, &tests.binary)?;
        for (area, names) in areas {
            list.push_str(&format!("{area} {}\n", names.join(" ")));
        }
    }
    write(&root.join("matrix/tests.list"), &list, 0o644)?;
    for tool in plan::HOST_TOOLS {
        copy_with_libraries(&root, Path::new(tool))?;
    }
    for file in plan::REPOSITORY_FILES {
        let path = workspace_root().join(file);
        copy(&path, &under(&root, &path))?;
    }
    // Tests name those files from their crate (`agent/../docs/metrics.md`): the directory must exist.
    let crate_dir = workspace_root().join("agent");
    std::fs::create_dir_all(under(&root, &crate_dir))
        .map_err(|e| format!("mkdir {}: {e}", crate_dir.display()))?;

    pack(dir, &root, kernel)
}

/// What a guest that runs one script holds: busybox, the static agent, other executables and
/// files (each with its path in the guest), the script (as /matrix/run.sh) and its settings (in
/// /matrix/settings).
pub struct ScriptGuest<'a> {
    pub busybox: &'a Path,
    pub agent: &'a Path,
    pub executables: &'a [(&'a Path, &'a str)],
    /// (path in the guest, contents), written executable.
    pub files: &'a [(&'a str, &'a str)],
    pub script: &'a str,
    pub settings: &'a str,
}

/// A guest that runs a script and nothing else; returns the archive's path.
pub fn make_for_script(dir: &Path, kernel: &Kernel, guest: &ScriptGuest) -> Result<PathBuf, String> {
    let root = guest_root(dir, kernel, guest.busybox, guest.agent, guest.script, guest.settings)?;
    for (executable, path) in guest.executables {
        copy_stripped(executable, &under(&root, Path::new(path)))?;
    }
    for (path, text) in guest.files {
        write(&under(&root, Path::new(path)), text, 0o755)?;
    }
    pack(dir, &root, kernel)
}

/// `dir/root` with what every guest has: busybox, the init, the run script, its settings and
/// helpers, the kernel's configuration and modules, and the agent at /usr/bin/kernsight.
fn guest_root(
    dir: &Path,
    kernel: &Kernel,
    busybox: &Path,
    agent: &Path,
    script: &str,
    settings: &str,
) -> Result<PathBuf, String> {
    let root = dir.join("root");
    let _ = std::fs::remove_dir_all(&root);
    if !super::build::is_static(busybox)? {
        return Err(format!("{} is not static: install busybox-static", busybox.display()));
    }
    copy(busybox, &root.join("bin/busybox"))?;
    write(&root.join("init"), INIT, 0o755)?;
    write(&root.join("matrix/lib.sh"), LIB, 0o644)?;
    write(&root.join("matrix/run.sh"), script, 0o755)?;
    write(&root.join("matrix/settings"), settings, 0o644)?;
    copy(&kernel.config, &root.join("matrix/config"))?;
    for module in &kernel.modules {
        let name = module.file_name().ok_or_else(|| format!("{} names no file", module.display()))?;
        copy(module, &root.join("matrix/modules").join(name))?;
    }
    copy_stripped(agent, &root.join("usr/bin/kernsight"))?;
    Ok(root)
}

/// Packs `root` into `dir/initramfs.gz`.
fn pack(dir: &Path, root: &Path, kernel: &Kernel) -> Result<PathBuf, String> {
    let archive = dir.join("initramfs.gz");
    Step::new(format!("pack the guest's initramfs for {}", kernel.name)).run(
        Command::new("sh")
            .arg("-c")
            .arg("find . | cpio -o -H newc --quiet | gzip -1 > \"$0\"")
            .arg(&archive)
            .current_dir(root),
    )?;
    Ok(archive)
}

/// `path` (absolute on the host) inside `root`.
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// A host program at the same path in the guest, with its loader and libraries (from `ldd`).
fn copy_with_libraries(root: &Path, path: &Path) -> Result<(), String> {
    if !path.is_file() {
        return Err(format!(
            "{} is not installed on this machine (cargo xtask setup installs it)",
            path.display()
        ));
    }
    copy(path, &under(root, path))?;
    copy_libraries(root, path)
}

/// The loader and libraries of a host executable (from `ldd`), at their paths in `root`.
fn copy_libraries(root: &Path, path: &Path) -> Result<(), String> {
    // Statically linked executables make ldd fail: then there is nothing to copy.
    let ldd = output(Command::new("ldd").arg(path)).unwrap_or_default();
    for library in libraries(&ldd) {
        let target = under(root, &library);
        if !target.exists() {
            copy(&library, &target)?;
        }
    }
    Ok(())
}

/// Absolute paths in `ldd` output: `libc.so.6 => /lib/.../libc.so.6 (0x...)` and the loader.
fn libraries(ldd: &str) -> Vec<PathBuf> {
    ldd.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = line.split_once("=> ").map_or(line, |(_, after)| after);
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Without debug information: the test binaries shrink from hundreds of MiB to a few. The host's
/// strip reads only x86_64 executables: others (the arm64 smoke test's) are built without debug
/// information and copied as they are.
fn copy_stripped(from: &Path, to: &Path) -> Result<(), String> {
    if !super::build::is_x86_64(from)? {
        return copy(from, to);
    }
    create_parent(to)?;
    let status = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(to)
        .arg(from)
        .status()
        .map_err(|e| format!("cannot run strip (binutils): {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("strip {} failed ({status})", from.display())) }
}

/// Copies the file's contents (symlinks followed), keeping its mode.
fn copy(from: &Path, to: &Path) -> Result<(), String> {
    create_parent(to)?;
    std::fs::copy(from, to).map(drop).map_err(|e| format!("copy {} to {}: {e}", from.display(), to.display()))
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    create_parent(path)?;
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

fn create_parent(path: &Path) -> Result<(), String> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(|e| format!("mkdir {}: {e}", parent.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_library_paths_from_ldd() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibcap-ng.so.0 => /lib/x86_64-linux-gnu/libcap-ng.so.0 (0x00007f87)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f87)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f87)\n";
        assert_eq!(
            libraries(ldd),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libcap-ng.so.0"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }
}
