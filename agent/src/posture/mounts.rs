//! Host directories a container can write to: the writable mounts in its mount namespace of a
//! disk (or network) filesystem, apart from the root filesystem and the files and volumes the
//! runtime keeps per container (hosts, resolv.conf, hostname, kubelet's pod volumes).

use std::path::Path;

/// Filesystems that hold the host's own files.
const HOST_FILESYSTEMS: [&str; 12] =
    ["ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "vfat", "nfs", "nfs4", "cifs", "bcachefs"];

/// Where runtimes keep per-container state and volumes: writable by design, not a host path.
const RUNTIME_STATE: [&str; 7] = [
    "/var/lib/containers/",
    "/run/containers/",
    "/var/run/containers/",
    "/var/lib/docker/",
    "/var/lib/containerd/",
    "/var/lib/kubelet/pods/",
    "/run/containerd/",
];

/// (mount point, host path) of each writable host mount in a mountinfo text.
pub fn writable_host_mounts(mountinfo: &str) -> Vec<(String, String)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // 106 101 254:0 /tmp/dir /data rw,relatime - ext4 /dev/vda rw,...
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let (root, mount_point, options) = (*fields.get(3)?, *fields.get(4)?, *fields.get(5)?);
            let fs_type = after.split(' ').next()?;
            let writable = options.split(',').next() == Some("rw");
            let host_fs = HOST_FILESYSTEMS.contains(&fs_type);
            let runtime_state = RUNTIME_STATE.iter().any(|prefix| root.starts_with(prefix));
            (writable && host_fs && !runtime_state && mount_point != "/")
                .then(|| (unescape(mount_point), unescape(root)))
        })
        .collect()
}

/// The writable host mounts of the process `pid` (empty when its mountinfo cannot be read).
pub fn of_process(proc_root: &Path, pid: u32) -> Vec<(String, String)> {
    std::fs::read_to_string(proc_root.join(pid.to_string()).join("mountinfo"))
        .map(|text| writable_host_mounts(&text))
        .unwrap_or_default()
}

fn unescape(field: &str) -> String {
    field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writable_host_paths() {
        let text = "\
101 61 0:43 / / rw,relatime - overlay overlay rw,lowerdir=/x
103 101 254:0 /etc /hostetc ro,relatime - ext4 /dev/vda rw
106 101 254:0 /tmp/ks-hostdir /data rw,relatime - ext4 /dev/vda rw
109 101 254:0 /run/containers/storage/overlay-containers/abc/userdata/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda rw
110 101 254:0 /var/lib/kubelet/pods/uid/volumes/kubernetes.io~empty-dir/cache /cache rw - xfs /dev/sda rw
111 105 0:42 / /dev/shm rw,nosuid - tmpfs shm rw
112 101 254:0 / /host rw,relatime - ext4 /dev/vda rw
113 101 254:0 /my\\040dir /spaced rw - btrfs /dev/vdb rw
";
        assert_eq!(
            writable_host_mounts(text),
            vec![
                ("/data".to_owned(), "/tmp/ks-hostdir".to_owned()),
                ("/host".to_owned(), "/".to_owned()),
                ("/spaced".to_owned(), "/my dir".to_owned()),
            ]
        );
    }
}
