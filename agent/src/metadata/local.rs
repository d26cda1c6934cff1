//! Container names from what runtimes leave on the node, for containers no CRI socket knows:
//! conmon's command line (podman, CRI-O: `-c <id> ... -n <name>`) and Docker's per-container
//! `config.v2.json`. Both are read off the hot path, by the lookup task.
//!
//! Anyone can start a process called `conmon` with any command line, so a conmon is believed
//! only when it is what the runtime starts: a process of uid 0 (real and effective), running a
//! root-owned executable that neither group nor others may write, outside every container's
//! cgroup. A tenant's process fails the first test, a copied or replaced binary the second, and
//! a container's root (without a user namespace) the third.

use std::{
    collections::HashMap,
    io::Read as _,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::Path,
};

use tracing::debug;

use super::cgroup_path;
use crate::kernel::procfs::{list_pids, parse_cgroup_file};

/// conmon's command line is a few hundred bytes (ids, paths, a name); past this bound it is not
/// conmon's, and reading it whole would cost every scrape as much as a tenant makes it cost.
const MAX_CMDLINE_BYTES: u64 = 64 * 1024;

/// What one pass over `/proc` found: container id → name from every believed conmon, and how
/// many processes called themselves conmon but were not believed.
#[derive(Debug, Default)]
pub struct ConmonScan {
    pub names: HashMap<String, String>,
    pub untrusted: u64,
}

/// Container id → name of every container a believed conmon process watches.
pub fn conmon_names(proc_root: &Path) -> HashMap<String, String> {
    scan_conmons(proc_root).names
}

/// [`conmon_names`], with the count of processes that claimed to be conmon and were refused.
pub fn scan_conmons(proc_root: &Path) -> ConmonScan {
    let mut scan = ConmonScan::default();
    // `comm` is 16 bytes: only processes named conmon are looked at further. Every process's is
    // read, on a few threads.
    let named_conmon = |pid: &u32| {
        let dir = proc_root.join(pid.to_string());
        read_bounded(&dir.join("comm"), 64).is_some_and(|comm| comm.starts_with(b"conmon")).then_some(dir)
    };
    for dir in crate::parallel::map(&list_pids(proc_root), named_conmon).into_iter().flatten() {
        let Some(cmdline) = read_bounded(&dir.join("cmdline"), MAX_CMDLINE_BYTES) else {
            continue;
        };
        let Some((id, name)) = parse_conmon_cmdline(&cmdline) else {
            continue;
        };
        let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
        match vouch_for_conmon(&dir, Path::new(std::ffi::OsStr::from_bytes(argv0))) {
            Ok(()) => {
                scan.names.insert(id, name);
            }
            Err(why) => {
                scan.untrusted += 1;
                debug!(process = %dir.display(), container_id = %id, claimed_name = %name, "not a runtime's conmon, its names are ignored: {why}");
            }
        }
    }
    scan
}

/// Why a process that calls itself conmon is not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Distrust {
    #[error("its {0} could not be read (it ended, or the agent lacks CAP_SYS_PTRACE)")]
    Unreadable(&'static str),
    #[error("it runs as uid {real} (effective {effective}), not root")]
    NotRoot { real: u32, effective: u32 },
    #[error("its executable is owned by uid {owner} with mode {mode:o}: not root's, or writable by others")]
    Executable { owner: u32, mode: u32 },
    #[error("it runs in the cgroup of a container ({0})")]
    InContainer(String),
}

/// Whether the process whose procfs directory is `dir` is a conmon the node's runtime started;
/// `argv0` is the program its command line names.
pub fn vouch_for_conmon(dir: &Path, argv0: &Path) -> Result<(), Distrust> {
    let status = std::fs::read_to_string(dir.join("status")).map_err(|_| Distrust::Unreadable("status"))?;
    // All four ids or none: a damaged line must not read as root.
    let [real, effective, ..] = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(four_ids)
        .ok_or(Distrust::Unreadable("status"))?;
    if real != 0 || effective != 0 {
        return Err(Distrust::NotRoot { real, effective });
    }
    // `exe` resolves to the file the process runs (even if it was since replaced or removed).
    // Following it needs ptrace read access, which a root process's `exe` denies to an agent
    // without CAP_SYS_PTRACE (the DaemonSet's default): then the program its command line names
    // is judged instead, if that is an absolute path. The process runs as root outside any
    // container, so only the host's root started it; this still refuses relative names and
    // binaries others could have written.
    let exe = match std::fs::metadata(dir.join("exe")) {
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied && argv0.is_absolute() => {
            std::fs::metadata(argv0)
        }
        other => other,
    }
    .map_err(|_| Distrust::Unreadable("executable"))?;
    if !exe.is_file() || exe.uid() != 0 || exe.mode() & 0o022 != 0 {
        return Err(Distrust::Executable { owner: exe.uid(), mode: exe.mode() & 0o7777 });
    }
    let cgroups = std::fs::read_to_string(dir.join("cgroup")).map_err(|_| Distrust::Unreadable("cgroup"))?;
    match parse_cgroup_file(&cgroups).into_iter().find(|line| cgroup_path::parse(&line.path).is_some()) {
        Some(line) => Err(Distrust::InContainer(line.path)),
        None => Ok(()),
    }
}

fn four_ids(text: &str) -> Option<[u32; 4]> {
    let mut ids = text.split_whitespace().map(|id| id.parse::<u32>().ok());
    let four = [ids.next()??, ids.next()??, ids.next()??, ids.next()??];
    ids.next().is_none().then_some(four)
}

/// The first `limit` bytes of a file, or `None` if it cannot be read or is longer.
fn read_bounded(path: &Path, limit: u64) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path).ok()?.take(limit + 1).read_to_end(&mut bytes).ok()?;
    (bytes.len() as u64 <= limit).then_some(bytes)
}

/// (container id, name) from a NUL-separated conmon command line.
pub fn parse_conmon_cmdline(cmdline: &[u8]) -> Option<(String, String)> {
    // Invalid UTF-8 becomes "" rather than vanishing, so that no argument shifts into a value.
    let args: Vec<&str> = cmdline.split(|&b| b == 0).map(|a| std::str::from_utf8(a).unwrap_or("")).collect();
    if !args.first()?.rsplit('/').next()?.starts_with("conmon") {
        return None;
    }
    let value = |short: &str, long: &str| {
        args.iter().enumerate().find_map(|(i, arg)| {
            if *arg == short || *arg == long {
                args.get(i + 1).map(|v| (*v).to_owned())
            } else {
                arg.strip_prefix(&format!("{long}=")).map(str::to_owned)
            }
        })
    };
    let id = value("-c", "--cid")?;
    let name = value("-n", "--name")?;
    (!id.is_empty() && !name.is_empty()).then_some((id, name))
}

/// The name Docker gave a container (`"Name": "/web"` in its config.v2.json).
pub fn docker_name(docker_root: &Path, container_id: &str) -> Option<String> {
    if !container_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None; // never let an id walk the filesystem
    }
    let text =
        std::fs::read_to_string(docker_root.join("containers").join(container_id).join("config.v2.json"))
            .ok()?;
    let config: DockerConfig = serde_json::from_str(&text).ok()?;
    let name = config.name.trim_start_matches('/');
    (!name.is_empty()).then(|| name.to_owned())
}

#[derive(serde::Deserialize)]
struct DockerConfig {
    #[serde(rename = "Name")]
    name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "ddfe954b7c5389fb914bcba5682a287b5b95753dc71125d781046580e741991c";

    /// A fixture process: its comm, command line, `Uid:` line, executable and cgroup.
    struct Fixture<'a> {
        comm: &'a str,
        cmdline: &'a [u8],
        uid: &'a str,
        exe: &'a Path,
        cgroup: &'a str,
    }

    /// A conmon as podman starts it: root, /bin/true stands for its root-owned binary.
    fn runtime_conmon(cmdline: &[u8]) -> Fixture<'_> {
        Fixture {
            comm: "conmon",
            cmdline,
            uid: "0\t0\t0\t0",
            exe: Path::new("/bin/true"),
            cgroup: "0::/libpod_parent/conmon",
        }
    }

    fn write_process(proc_root: &Path, pid: u32, process: &Fixture) {
        let dir = proc_root.join(pid.to_string());
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("comm"), format!("{}\n", process.comm)).unwrap();
        std::fs::write(dir.join("cmdline"), process.cmdline).unwrap();
        std::fs::write(dir.join("status"), format!("Name:\t{}\nUid:\t{}\n", process.comm, process.uid))
            .unwrap();
        std::os::unix::fs::symlink(process.exe, dir.join("exe")).unwrap();
        std::fs::write(dir.join("cgroup"), format!("{}\n", process.cgroup)).unwrap();
    }

    #[test]
    fn reads_only_conmon_command_lines_and_bounds_them() {
        let proc_root = tempfile::tempdir().unwrap();
        let cmdline = format!("/usr/bin/conmon\0-c\0{ID}\0-n\0web\0");
        write_process(proc_root.path(), 10, &runtime_conmon(cmdline.as_bytes()));
        // Not conmon by its comm: its command line is never parsed, whatever it claims.
        write_process(
            proc_root.path(),
            11,
            &Fixture { comm: "sleep", ..runtime_conmon(b"conmon\0-c\0aa\0-n\0forged\0") },
        );
        // conmon by name, but a command line past the bound: skipped, not read whole.
        let mut huge = b"conmon\0-c\0bb\0-n\0big\0".to_vec();
        huge.resize(MAX_CMDLINE_BYTES as usize + 1, b'x');
        write_process(proc_root.path(), 12, &runtime_conmon(&huge));
        let names = conmon_names(proc_root.path());
        assert_eq!(names.len(), 1, "{names:?}");
        assert_eq!(names.get(ID).map(String::as_str), Some("web"));
    }

    fn vouch_for_conmon_at(dir: &Path) -> Result<(), Distrust> {
        vouch_for_conmon(dir, Path::new("/usr/bin/conmon"))
    }

    #[test]
    fn believes_only_root_conmons_of_root_owned_binaries_outside_containers() {
        let proc_root = tempfile::tempdir().unwrap();
        let writable = tempfile::NamedTempFile::new().unwrap();
        std::fs::set_permissions(writable.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let spoof = |name: &str| format!("conmon\0-c\0{ID}\0-n\0{name}\0");
        let (nobody, setuid, copied, contained, damaged) =
            (spoof("nobody"), spoof("setuid"), spoof("copied"), spoof("contained"), spoof("damaged"));
        let container_cgroup = format!("0::/libpod_parent/libpod-{}", "a".repeat(64));
        let refused = [
            (20, Fixture { uid: "65534\t65534\t65534\t65534", ..runtime_conmon(nobody.as_bytes()) }),
            // A set-uid root program run by a user under the name conmon.
            (21, Fixture { uid: "65534\t0\t0\t0", ..runtime_conmon(setuid.as_bytes()) }),
            (22, Fixture { exe: writable.path(), ..runtime_conmon(copied.as_bytes()) }),
            (23, Fixture { cgroup: &container_cgroup, ..runtime_conmon(contained.as_bytes()) }),
            // A `Uid:` line that cannot be read whole does not read as root.
            (24, Fixture { uid: "0\t0", ..runtime_conmon(damaged.as_bytes()) }),
        ];
        for (pid, process) in &refused {
            write_process(proc_root.path(), *pid, process);
        }
        let scan = scan_conmons(proc_root.path());
        assert!(scan.names.is_empty(), "{:?}", scan.names);
        assert_eq!(scan.untrusted, refused.len() as u64);
        let dir = |pid: u32| proc_root.path().join(pid.to_string());
        assert_eq!(vouch_for_conmon_at(&dir(20)), Err(Distrust::NotRoot { real: 65534, effective: 65534 }));
        assert!(matches!(vouch_for_conmon_at(&dir(22)), Err(Distrust::Executable { mode: 0o777, .. })));
        assert_eq!(
            vouch_for_conmon_at(&dir(23)),
            Err(Distrust::InContainer(container_cgroup[3..].to_owned()))
        );
        assert_eq!(vouch_for_conmon_at(&dir(24)), Err(Distrust::Unreadable("status")));
        assert_eq!(vouch_for_conmon_at(&proc_root.path().join("99")), Err(Distrust::Unreadable("status")));
        // The runtime's own conmon, beside them, is believed.
        let runtime = format!("/usr/bin/conmon\0-c\0{ID}\0-n\0web\0");
        write_process(proc_root.path(), 30, &runtime_conmon(runtime.as_bytes()));
        assert_eq!(conmon_names(proc_root.path()).get(ID).map(String::as_str), Some("web"));
    }

    #[test]
    fn reads_conmon_command_lines() {
        let id = ID;
        let podman = format!(
            "/usr/bin/conmon\0--api-version\x001\0-c\0{id}\0-u\0{id}\0-n\0kstest-web\0--log-level\0warning\0"
        );
        assert_eq!(parse_conmon_cmdline(podman.as_bytes()), Some((id.to_owned(), "kstest-web".to_owned())));
        let long = format!("conmon\0--cid={id}\0--name=k8s_app_web-0_shop_uid_0\0");
        assert_eq!(
            parse_conmon_cmdline(long.as_bytes()),
            Some((id.to_owned(), "k8s_app_web-0_shop_uid_0".to_owned()))
        );
        assert_eq!(parse_conmon_cmdline(b"/usr/bin/runc\0-c\0x\0-n\0y\0"), None);
        assert_eq!(parse_conmon_cmdline(b"conmon\0-c\0"), None);
        assert_eq!(parse_conmon_cmdline(b""), None);
        assert_eq!(parse_conmon_cmdline(b"conmon\0-n\0\xff\xfe\0-c\0id\0"), None);
    }

    #[test]
    fn reads_docker_names() {
        let root = tempfile::tempdir().unwrap();
        let id = "abc123";
        std::fs::create_dir_all(root.path().join("containers").join(id)).unwrap();
        std::fs::write(
            root.path().join("containers").join(id).join("config.v2.json"),
            r#"{"ID":"abc123","Name":"/web"}"#,
        )
        .unwrap();
        assert_eq!(docker_name(root.path(), id), Some("web".to_owned()));
        assert_eq!(docker_name(root.path(), "../../etc"), None);
        assert_eq!(docker_name(root.path(), "ffff"), None);
    }
}
