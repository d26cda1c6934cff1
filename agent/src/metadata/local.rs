//! Container names from what runtimes leave on the node, for containers no CRI socket knows:
//! conmon's command line (podman, CRI-O: `-c <id> ... -n <name>`) and Docker's per-container
//! `config.v2.json`. Both are read off the hot path, by the lookup task.

use std::{collections::HashMap, io::Read as _, path::Path};

use crate::kernel::procfs::list_pids;

/// conmon's command line is a few hundred bytes (ids, paths, a name); past this bound it is not
/// conmon's, and reading it whole would cost every scrape as much as a tenant makes it cost.
const MAX_CMDLINE_BYTES: u64 = 64 * 1024;

/// Container id → name of every container a conmon process watches.
pub fn conmon_names(proc_root: &Path) -> HashMap<String, String> {
    list_pids(proc_root)
        .into_iter()
        .map(|pid| proc_root.join(pid.to_string()))
        // `comm` is 16 bytes: only conmon's own processes have their command line read.
        .filter(|dir| std::fs::read(dir.join("comm")).is_ok_and(|comm| comm.starts_with(b"conmon")))
        .filter_map(|dir| read_bounded(&dir.join("cmdline"), MAX_CMDLINE_BYTES))
        .filter_map(|cmdline| parse_conmon_cmdline(&cmdline))
        .collect()
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

    #[test]
    fn reads_only_conmon_command_lines_and_bounds_them() {
        let proc_root = tempfile::tempdir().unwrap();
        let id = "ddfe954b7c5389fb914bcba5682a287b5b95753dc71125d781046580e741991c";
        let process = |pid: u32, comm: &str, cmdline: &[u8]| {
            let dir = proc_root.path().join(pid.to_string());
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
            std::fs::write(dir.join("cmdline"), cmdline).unwrap();
        };
        process(10, "conmon", format!("/usr/bin/conmon\0-c\0{id}\0-n\0web\0").as_bytes());
        // Not conmon by its comm: its command line is never parsed, whatever it claims.
        process(11, "sleep", b"conmon\0-c\0aa\0-n\0forged\0");
        // conmon by name, but a command line past the bound: skipped, not read whole.
        let mut huge = b"conmon\0-c\0bb\0-n\0big\0".to_vec();
        huge.resize(MAX_CMDLINE_BYTES as usize + 1, b'x');
        process(12, "conmon", &huge);
        let names = conmon_names(proc_root.path());
        assert_eq!(names.len(), 1, "{names:?}");
        assert_eq!(names.get(id).map(String::as_str), Some("web"));
    }

    #[test]
    fn reads_conmon_command_lines() {
        let id = "ddfe954b7c5389fb914bcba5682a287b5b95753dc71125d781046580e741991c";
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
