use std::os::unix::fs::{PermissionsExt as _, symlink};

use super::*;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn creates_missing_directories_private() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("a/b/pins");
    let dir = SecureDir::open_path(&path).unwrap();
    assert_eq!(dir.path(), path);
    for created in [tmp.path().join("a"), tmp.path().join("a/b"), path.clone()] {
        assert_eq!(mode(&created), 0o700, "{} is created 0700", created.display());
    }
    let sub = dir.subdir("v1").unwrap();
    assert_eq!(mode(sub.path()), 0o700);
}

#[test]
fn refuses_relative_paths_and_dot_dot() {
    for path in ["pins", "/tmp/../sys/fs/bpf/kernsight"] {
        let err = SecureDir::open_path(Path::new(path)).unwrap_err();
        assert!(matches!(err, UnsafeDir::Relative { .. }), "{path}: {err}");
    }
}

#[test]
fn refuses_a_link_anywhere_on_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    symlink(&real, tmp.path().join("link")).unwrap();

    let last = SecureDir::open_path(&tmp.path().join("link")).unwrap_err();
    assert!(matches!(&last, UnsafeDir::Symlink { path } if path.ends_with("link")), "{last}");
    let middle = SecureDir::open_path(&tmp.path().join("link/pins")).unwrap_err();
    assert!(matches!(&middle, UnsafeDir::Symlink { path } if path.ends_with("link")), "{middle}");
    assert!(!real.join("pins").exists(), "nothing is created through the link");

    let dangling = tmp.path().join("dangling");
    symlink(tmp.path().join("nowhere"), &dangling).unwrap();
    let err = SecureDir::open_path(&dangling).unwrap_err();
    assert!(matches!(err, UnsafeDir::Symlink { .. }), "{err}");
    assert!(!tmp.path().join("nowhere").exists(), "a dangling link's target is not created");

    let dir = SecureDir::open_path(tmp.path()).unwrap();
    let err = dir.subdir("link").unwrap_err();
    assert!(matches!(err, UnsafeDir::Symlink { .. }), "{err}");
}

#[test]
fn refuses_a_directory_others_can_write() {
    let tmp = tempfile::tempdir().unwrap();
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    let err = SecureDir::open_path(&open).unwrap_err();
    assert!(matches!(err, UnsafeDir::Writable { mode: 0o777, .. }), "{err}");
    assert!(err.to_string().contains("chmod 0700"), "the message says how to fix it: {err}");

    // Above the pin directory, others may write only where the sticky bit protects the entries
    // of others (as in /tmp or a bpffs mounted 1777).
    chmod(&open, 0o1777);
    SecureDir::open_path(&open.join("pins")).unwrap();
    chmod(&open, 0o777);
    let err = SecureDir::open_path(&open.join("pins")).unwrap_err();
    assert!(matches!(&err, UnsafeDir::Writable { path, .. } if path == &open), "{err}");
    // The sticky bit does not make the pin directory itself acceptable.
    chmod(&open, 0o1777);
    let err = SecureDir::open_path(&open).unwrap_err();
    assert!(matches!(err, UnsafeDir::Writable { .. }), "{err}");
}

#[test]
fn refuses_a_directory_of_another_owner() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED refuses_a_directory_of_another_owner: needs root to chown");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    chmod(&foreign, 0o700);
    let err = SecureDir::open_path(&foreign).unwrap_err();
    assert!(matches!(err, UnsafeDir::Owner { uid: 65534, .. }), "{err}");
    assert!(err.to_string().contains("uid 65534"), "{err}");
}

#[test]
fn entries_are_seen_and_removed_without_following_links() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"not kernsight's").unwrap();
    let dir = SecureDir::open_path(&tmp.path().join("pins")).unwrap();
    symlink(&target, dir.path().join("link")).unwrap();
    std::fs::create_dir_all(dir.path().join("tree/deeper")).unwrap();
    std::fs::write(dir.path().join("tree/deeper/file"), b"x").unwrap();
    std::fs::write(dir.path().join("file"), b"x").unwrap();

    assert_eq!(dir.entry(OsStr::new("link")).unwrap(), Some(EntryKind::Symlink));
    assert_eq!(dir.entry(OsStr::new("tree")).unwrap(), Some(EntryKind::Directory));
    assert_eq!(dir.entry(OsStr::new("file")).unwrap(), Some(EntryKind::OwnFile));
    assert_eq!(dir.entry(OsStr::new("missing")).unwrap(), None);
    let mut names = dir.names().unwrap();
    names.sort();
    assert_eq!(names, ["file", "link", "tree"]);

    for name in ["link", "tree", "file", "missing"] {
        dir.remove(OsStr::new(name)).unwrap();
    }
    assert!(dir.names().unwrap().is_empty());
    assert!(target.join("keep").exists(), "removing a link leaves what it points to");
}
