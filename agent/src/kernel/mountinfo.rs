//! `/proc/self/mountinfo` parsing (proc(5)): where cgroupfs, tracefs and bpffs are mounted.

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Root of the mount within its filesystem (e.g. `/` or a cgroup namespace's root).
    pub root: String,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub super_options: String,
}

/// Reads the calling process's mount table.
pub fn read() -> std::io::Result<Vec<Mount>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mount> {
    // 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    let (before, after) = line.split_once(" - ")?;
    let mut fields = before.split(' ');
    let root = unescape(fields.nth(3)?);
    let mount_point = PathBuf::from(unescape(fields.next()?));
    let mut after = after.split(' ');
    let fs_type = after.next()?.to_owned();
    let _source = after.next()?;
    let super_options = after.next().unwrap_or_default().to_owned();
    Some(Mount { root, mount_point, fs_type, super_options })
}

/// Undoes the kernel's octal escapes (`\040` for a space) in mountinfo paths.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(octal) = bytes.get(i + 1..i + 4)
            && octal.iter().all(|b| (b'0'..=b'7').contains(b))
        {
            out.push(octal.iter().fold(0u8, |acc, b| acc.wrapping_mul(8).wrapping_add(b - b'0')));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 31 0:30 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
40 25 0:12 / /sys/kernel/tracing rw,nosuid,nodev,noexec,relatime shared:18 - tracefs tracefs rw
41 30 0:40 /my\\040dir /mnt/with\\040space rw - ext4 /dev/vda rw
garbage line without separator
";

    #[test]
    fn parses_hybrid_table() {
        let mounts = parse(HYBRID);
        assert_eq!(mounts.len(), 6);
        let v2 = mounts.iter().find(|m| m.fs_type == "cgroup2").unwrap();
        assert_eq!(v2.mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        let memory = mounts.iter().find(|m| m.super_options.contains("memory")).unwrap();
        assert_eq!(memory.fs_type, "cgroup");
        let spaced = mounts.iter().find(|m| m.fs_type == "ext4").unwrap();
        assert_eq!(spaced.mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(spaced.root, "/my dir");
    }

    #[test]
    fn truncated_lines_do_not_panic() {
        for line in HYBRID.lines() {
            for cut in 0..line.len() {
                if line.is_char_boundary(cut) {
                    let _ = parse(&line[..cut]);
                }
            }
        }
        assert!(parse("1 2 3 - ").is_empty());
        assert_eq!(unescape("\\04"), "\\04");
    }

    proptest::proptest! {
        #[test]
        fn no_text_panics_the_mountinfo_parser(text in proptest::prelude::any::<String>()) {
            let _ = parse(&text);
        }

        #[test]
        fn no_field_soup_panics_the_mountinfo_parser(text in "([0-9]{1,3} ){0,7}(- )?[a-z/ ,=0-9]{0,40}") {
            let _ = parse(&text);
        }
    }
}
