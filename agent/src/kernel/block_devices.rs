//! Names of block devices: `major:minor` → the kernel's name (`DEVNAME` in
//! `/sys/dev/block/<major>:<minor>/uevent`), for the `device` labels of block I/O.

use std::path::Path;

/// Longest device name exported; the kernel's own are far shorter (`nvme0n1`, `dm-12`).
const MAX_NAME: usize = 64;

/// The `device` label of a device: `major:minor`.
pub fn device_label(major: u32, minor: u32) -> String {
    format!("{major}:{minor}")
}

/// The kernel's name of block device `major:minor` under `sys` (`/sys` on a node), if it
/// still exists.
pub fn device_name(sys: &Path, major: u32, minor: u32) -> Option<String> {
    let uevent =
        std::fs::read_to_string(sys.join("dev/block").join(device_label(major, minor)).join("uevent"))
            .ok()?;
    parse_devname(&uevent)
}

/// `DEVNAME=` of a uevent file, if it is a plain name.
pub fn parse_devname(uevent: &str) -> Option<String> {
    let name = uevent.lines().find_map(|line| line.strip_prefix("DEVNAME="))?.trim();
    let plain = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/' | b'!'));
    plain.then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devname_is_read_from_uevent() {
        let uevent = "MAJOR=7\nMINOR=0\nDEVNAME=loop0\nDEVTYPE=disk\nDISKSEQ=9\n";
        assert_eq!(parse_devname(uevent).as_deref(), Some("loop0"));
        assert_eq!(parse_devname("MAJOR=7\n"), None);
        assert_eq!(parse_devname("DEVNAME=a b\n"), None, "not a plain name");
        assert_eq!(parse_devname(&format!("DEVNAME={}\n", "x".repeat(65))), None);
        assert_eq!(device_label(259, 1), "259:1");
    }

    #[test]
    fn a_missing_device_has_no_name() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(device_name(dir.path(), 7, 0), None);
        let device = dir.path().join("dev/block/7:0");
        std::fs::create_dir_all(&device).unwrap();
        std::fs::write(device.join("uevent"), "MAJOR=7\nMINOR=0\nDEVNAME=loop0\n").unwrap();
        assert_eq!(device_name(dir.path(), 7, 0).as_deref(), Some("loop0"));
    }
}
