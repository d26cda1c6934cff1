//! The pin directory cannot be taken over: a directory of another user (holding a lock on it),
//! a link at a pin path or in place of the pin directory, and a directory others can write are
//! each either refused in one log line (the agent runs unpinned) or replaced by a clean pin; in
//! every case the agent serves and keeps running. A bpffs the agent mounts itself is 0700; a pin
//! directory that is not on bpffs (a hostPath made on a node without it) leaves the agent unpinned.

use std::{
    ffi::CString,
    os::unix::{
        ffi::OsStrExt as _,
        fs::{DirBuilderExt as _, PermissionsExt as _, symlink},
        process::CommandExt as _,
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use kernsight_common::MAP_LAYOUT_VERSION;

use crate::support::{self, Agent, ChildGuard, path_str, privileged, unique_pin_dir};

/// The unprivileged user of the attacks (`nobody`).
const NOBODY: u32 = 65534;

/// Removes what the test put at a pin path (a directory or a link), also when it fails.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for path in &self.0 {
            match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.is_dir() => drop(std::fs::remove_dir_all(path)),
                Ok(_) => drop(std::fs::remove_file(path)),
                Err(_) => {}
            }
        }
    }
}

fn private_dir(path: &Path) {
    std::fs::DirBuilder::new().mode(0o700).create(path).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A bpffs of the test's own, mounted with bpffs' defaults (root 1777, anyone may enter), in a
/// directory anyone may traverse: the node the attacks of user `nobody` assume, whatever mode
/// this machine's /sys/fs/bpf has (the agent mounts it 0700). Unmounted when dropped.
fn open_bpffs() -> (tempfile::TempDir, Unmount, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    chmod(tmp.path(), 0o755);
    let mount_point = tmp.path().join("bpf");
    std::fs::create_dir(&mount_point).unwrap();
    nix::mount::mount(Some("bpf"), &mount_point, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
        .unwrap_or_else(|e| panic!("mount bpffs at {}: {e}", mount_point.display()));
    (tmp, Unmount(mount_point.clone()), mount_point)
}

/// A process of user `nobody` holding an exclusive flock on `dir` (as `sleep`, which inherits
/// the locked descriptor): killed when dropped, and only it.
fn flock_as_nobody(dir: &Path) -> ChildGuard {
    let path = CString::new(dir.as_os_str().as_bytes()).unwrap();
    let mut command = Command::new("sleep");
    command.arg("600").uid(NOBODY).gid(NOBODY).stdin(Stdio::null());
    // SAFETY: the closure runs in the forked child after setuid and before exec, and calls only
    // async-signal-safe functions (open, flock) on memory prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
            if fd < 0 || libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // spawn returns once the exec happened: the lock is held from then on.
    ChildGuard(command.spawn().unwrap_or_else(|e| panic!("nobody cannot flock {}: {e}", dir.display())))
}

/// Whether the kernel lists a flock by `pid` (the holder) on the inode of `dir`.
fn holds_flock(pid: u32, dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let inode = std::fs::metadata(dir).unwrap().ino();
    let locks = std::fs::read_to_string("/proc/locks").unwrap();
    locks.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&"FLOCK")
            && fields.get(4) == Some(&pid.to_string().as_str())
            && fields.get(5).is_some_and(|id| id.ends_with(&format!(":{inode}")))
    })
}

/// Names in `dir` (empty if it is gone).
fn names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
}

/// The agent's log lines that contain `text`.
fn lines_with(agent: &Agent, text: &str) -> Vec<String> {
    agent.log().lines().filter(|l| l.contains(text)).map(str::to_owned).collect()
}

/// Serves /metrics with the counters of its probes, and is still running a while later.
fn serves_and_runs(agent: &Agent) {
    let scrape = agent.scrape();
    assert!(scrape.contains("kernsight_syscalls_total"), "the agent counts:\n{scrape}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(agent.alive(), "the agent keeps running; log:\n{}", agent.log());
    agent.scrape();
}

/// Refused in exactly one line that says why, with no map pinned.
fn refused_once(agent: &Agent, why: &str) -> String {
    let refusals = lines_with(agent, "cannot pin maps");
    assert_eq!(refusals.len(), 1, "one line says pinning was refused; log:\n{}", agent.log());
    assert!(refusals[0].contains(why), "the line says why ({why}): {}", refusals[0]);
    assert!(lines_with(agent, "maps pinned").is_empty(), "nothing pinned; log:\n{}", agent.log());
    refusals[0].clone()
}

#[test]
fn a_directory_of_another_user_holding_a_lock_on_it_is_refused() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let (_tmp, _unmount, bpffs) = open_bpffs();
    let base = bpffs.join("kernsight");
    let _cleanup = Cleanup(vec![base.clone()]);
    std::fs::create_dir(&base).unwrap();
    std::os::unix::fs::chown(&base, Some(NOBODY), Some(NOBODY)).unwrap();
    chmod(&base, 0o755);
    let holder = flock_as_nobody(&base);
    assert!(holds_flock(holder.id(), &base), "nobody holds the flock on {}", base.display());

    let agent = Agent::start(&["--pin-dir", path_str(&base)]);
    let line = refused_once(&agent, &format!("belongs to uid {NOBODY}"));
    assert!(line.contains(path_str(&base)) && line.contains("rm -r"), "what, where, how to fix: {line}");
    assert!(
        lines_with(&agent, "another kernsight process holds").is_empty(),
        "the foreign lock is not taken for another agent's"
    );
    assert!(names(&base).is_empty(), "nothing pinned in the foreign directory: {:?}", names(&base));
    serves_and_runs(&agent);
    assert!(holds_flock(holder.id(), &base), "the test's lock holder is untouched");
}

#[test]
fn a_lock_held_by_another_user_on_a_root_directory_does_not_stop_pinning() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let (_tmp, _unmount, bpffs) = open_bpffs();
    let base = bpffs.join("kernsight");
    let _cleanup = Cleanup(vec![base.clone()]);
    // As kernsight created it before: root's, 0755, so anyone may open it and flock it.
    std::fs::create_dir(&base).unwrap();
    chmod(&base, 0o755);
    let holder = flock_as_nobody(&base);
    assert!(holds_flock(holder.id(), &base));

    let agent = Agent::start(&["--pin-dir", path_str(&base)]);
    assert_eq!(lines_with(&agent, "maps pinned").len(), 1, "pinned; log:\n{}", agent.log());
    assert!(lines_with(&agent, "another kernsight process holds").is_empty(), "log:\n{}", agent.log());
    let rows = base.join(format!("v{MAP_LAYOUT_VERSION}/SYSCALL_ROWS"));
    assert!(std::fs::symlink_metadata(&rows).is_ok_and(|m| m.is_file()), "{} is pinned", rows.display());
    assert!(holds_flock(agent.pid(), &base.join("lock")), "the agent holds its own lock");
    serves_and_runs(&agent);
}

#[test]
fn dangling_links_at_a_pin_path_and_the_lock_are_replaced() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let base = unique_pin_dir("dangling");
    let nowhere = unique_pin_dir("nowhere");
    let _cleanup = Cleanup(vec![base.clone(), nowhere.clone()]);
    let layout = base.join(format!("v{MAP_LAYOUT_VERSION}"));
    private_dir(&base);
    private_dir(&layout);
    let rows = layout.join("SYSCALL_ROWS");
    symlink(&nowhere, &rows).unwrap();
    // The lock too: a link where the lock directory goes.
    let lock = base.join("lock");
    symlink(&nowhere, &lock).unwrap();

    let agent = Agent::start(&["--pin-dir", path_str(&base)]);
    let refused = lines_with(&agent, "refused");
    assert_eq!(refused.len(), 2, "one line for each entry refused; log:\n{}", agent.log());
    for (path, line) in [(&lock, &refused[0]), (&rows, &refused[1])] {
        assert!(
            line.contains(&format!("refused {}", path.display())) && line.contains("symbolic link"),
            "what and where: {line}"
        );
    }
    assert!(std::fs::symlink_metadata(&lock).is_ok_and(|m| m.is_dir()), "the lock is a directory again");
    assert!(holds_flock(agent.pid(), &lock), "the agent holds its lock");
    assert_eq!(lines_with(&agent, "maps pinned").len(), 1, "pinned; log:\n{}", agent.log());
    assert!(
        std::fs::symlink_metadata(&rows).is_ok_and(|m| m.is_file()),
        "{} is now the pinned map, not a link",
        rows.display()
    );
    assert!(!nowhere.exists(), "nothing was created where the link pointed");
    serves_and_runs(&agent);
    let status = agent.stop();
    assert!(status.success(), "clean exit: {status}");

    // And the next start continues those pins: no failure left behind for the next start.
    let again = Agent::start(&["--pin-dir", path_str(&base)]);
    assert!(lines_with(&again, "refused").is_empty(), "log:\n{}", again.log());
    let pinned = lines_with(&again, "maps pinned");
    assert!(pinned.len() == 1 && pinned[0].contains("SYSCALL_ROWS"), "continued; log:\n{}", again.log());
}

#[test]
fn a_link_in_place_of_the_pin_directory_is_refused() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let base = unique_pin_dir("link");
    let elsewhere = unique_pin_dir("elsewhere");
    let _cleanup = Cleanup(vec![base.clone(), elsewhere.clone()]);
    private_dir(&elsewhere);
    symlink(&elsewhere, &base).unwrap();

    let agent = Agent::start(&["--pin-dir", path_str(&base)]);
    let line = refused_once(&agent, "is a symbolic link");
    assert!(line.contains(path_str(&base)), "where: {line}");
    assert!(names(&elsewhere).is_empty(), "nothing pinned where the link points: {:?}", names(&elsewhere));
    assert!(std::fs::symlink_metadata(&base).is_ok_and(|m| m.file_type().is_symlink()), "the link is left");
    serves_and_runs(&agent);
}

#[test]
fn a_pin_directory_others_can_write_is_refused() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let base = unique_pin_dir("writable");
    let _cleanup = Cleanup(vec![base.clone()]);
    std::fs::create_dir(&base).unwrap();
    chmod(&base, 0o777);

    let agent = Agent::start(&["--pin-dir", path_str(&base)]);
    let line = refused_once(&agent, "writable by group or others (mode 0777)");
    assert!(line.contains(path_str(&base)) && line.contains("chmod 0700"), "where, how to fix: {line}");
    assert!(names(&base).is_empty(), "nothing pinned in it: {:?}", names(&base));
    serves_and_runs(&agent);
}

/// Unmounts a filesystem the test had mounted (lazily: nothing may hold it), also when it fails.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let path = CString::new(self.0.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string; unmounts only the test's own mount point.
        unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn bpffs_mounted_by_the_agent_is_private() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let tmp = tempfile::tempdir().unwrap();
    let mount_point = tmp.path().join("bpf");
    std::fs::create_dir(&mount_point).unwrap();
    let _unmount = Unmount(mount_point.clone());
    let (_config_dir, config) =
        support::config_file(&format!("[paths]\nbpffs = \"{}\"\n", path_str(&mount_point)));
    let base = mount_point.join("kernsight");

    let agent = Agent::start(&["--config", path_str(&config), "--pin-dir", path_str(&base)]);
    let mounted = lines_with(&agent, "bpf was not mounted");
    assert!(
        mounted.len() == 1 && mounted[0].contains(path_str(&mount_point)) && mounted[0].contains("mode=0700"),
        "the log says where and how it mounted bpffs; log:\n{}",
        agent.log()
    );
    let fs = nix::sys::statfs::statfs(&mount_point).unwrap();
    assert_eq!(fs.filesystem_type(), nix::sys::statfs::BPF_FS_MAGIC, "bpffs is mounted there");
    // bpffs always adds the sticky bit to its root; its default permissions are 0777.
    let mode = std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(&mount_point).unwrap()) & 0o777;
    assert_eq!(mode, 0o700, "only root may enter the bpffs the agent mounted (bpffs' default is 1777)");
    assert_eq!(lines_with(&agent, "maps pinned").len(), 1, "pinned; log:\n{}", agent.log());
    let rows = base.join(format!("v{MAP_LAYOUT_VERSION}/SYSCALL_ROWS"));
    assert!(std::fs::symlink_metadata(&rows).is_ok_and(|m| m.is_file()), "{} is pinned", rows.display());
    serves_and_runs(&agent);
}

/// A pod's pin directory is a hostPath the kubelet creates (`DirectoryOrCreate`): on a node
/// without bpffs at /sys/fs/bpf it is a plain directory of another filesystem. The agent says
/// so in one line, with what to do, leaves it empty and serves unpinned.
#[test]
fn a_pin_directory_off_bpffs_is_refused_and_the_agent_runs_unpinned() {
    if !privileged() {
        return;
    }
    let _serial = support::serial();
    let tmp = tempfile::tempdir().unwrap();
    let mount_point = tmp.path().join("node-sys-fs-bpf");
    std::fs::create_dir(&mount_point).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &mount_point,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("mode=0755"),
    )
    .unwrap();
    let _unmount = Unmount(mount_point.clone());
    // As the kubelet makes it: root's, 0755.
    let base = mount_point.join("kernsight");
    std::fs::create_dir(&base).unwrap();
    chmod(&base, 0o755);

    let agent = Agent::start(&["--pin-dir", path_str(&base)]);
    let line = refused_once(&agent, "not on a bpf filesystem");
    assert!(
        line.contains(path_str(&base))
            && line.contains("tmpfs")
            && line.contains("mount -t bpf bpf /sys/fs/bpf"),
        "the line names the directory, what it is on and how to fix the node: {line}"
    );
    assert!(names(&base).is_empty(), "nothing created in it: {:?}", names(&base));
    serves_and_runs(&agent);
}
