//! Directories that only root (or the agent's own user) can change, opened without following a
//! symbolic link anywhere on the way, and worked on relative to their descriptor.
//!
//! bpffs is often mounted world-writable (mode 1777), so anyone on the node could pre-create the
//! pin directory, hold a lock on it, or plant links in it. Every directory kernsight pins in is
//! therefore opened component by component with `O_NOFOLLOW`, and refused unless it belongs to
//! root or to the agent's effective uid and nobody else can write into it. Directories above it
//! may be writable by others only with the sticky bit (as `/sys/fs/bpf` 1777 is): there nobody
//! else can rename or remove what the agent created.

use std::{
    ffi::OsStr,
    os::{
        fd::{AsFd, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Component, Path, PathBuf},
};

use nix::{
    dir::Dir,
    errno::Errno,
    fcntl::{AtFlags, OFlag, openat},
    sys::stat::{FileStat, Mode, SFlag, fstat, fstatat, mkdirat},
    unistd::{UnlinkatFlags, unlinkat},
};

/// Mode of every directory kernsight creates for its pins: nobody else may even look in.
const PRIVATE: u32 = 0o700;
/// A directory nobody but its owner may write into.
const GROUP_OR_OTHER_WRITE: u32 = 0o022;
const STICKY: u32 = 0o1000;
/// Deeper trees than this under a pin directory are not kernsight's: removal stops there.
const MAX_DEPTH: usize = 8;

/// Why a directory is not safe to pin in. Each message names the path, what is wrong and what to
/// do about it.
#[derive(Debug, thiserror::Error)]
pub enum UnsafeDir {
    #[error(
        "{path} is a symbolic link: kernsight pins only in real directories, so that nobody can \
         redirect its maps; remove the link, or set bpf.pin_dir to the real directory"
    )]
    Symlink { path: PathBuf },
    #[error("{path} is not a directory: remove it, or set bpf.pin_dir to another path")]
    NotDirectory { path: PathBuf },
    #[error(
        "{path} belongs to uid {uid}, not to root: whoever owns it could take or swap the pinned \
         maps; remove it (`rm -r {path}`, after checking what is in it) or set bpf.pin_dir elsewhere"
    )]
    Owner { path: PathBuf, uid: u32 },
    #[error(
        "{path} is writable by group or others (mode {mode:04o}): anyone could plant entries in \
         it; `chmod 0700 {path}` or remove it, or set bpf.pin_dir elsewhere"
    )]
    Writable { path: PathBuf, mode: u32 },
    #[error("cannot open {path}: {errno} (is bpffs mounted there, and is this kernsight root?)")]
    Open { path: PathBuf, errno: Errno },
    #[error("cannot create {path}: {errno} (is bpffs mounted there, and is this kernsight root?)")]
    Create { path: PathBuf, errno: Errno },
    #[error("{path} is not an absolute path without `..`: set bpf.pin_dir to one, under the bpffs mount")]
    Relative { path: PathBuf },
}

/// What sits at a name inside a [`SecureDir`], as `lstat` sees it (links are not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A file owned by root or the agent: on bpffs, a pinned object.
    OwnFile,
    Directory,
    Symlink,
    /// Anything else: a file of another owner, a device, a socket.
    Other,
}

impl EntryKind {
    pub fn describe(self) -> &'static str {
        match self {
            Self::OwnFile => "a pinned object",
            Self::Directory => "a directory",
            Self::Symlink => "a symbolic link",
            Self::Other => "a file kernsight did not pin",
        }
    }
}

/// An open directory that passed the checks; names inside it are resolved from its descriptor,
/// never again through its path.
#[derive(Debug)]
pub struct SecureDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl SecureDir {
    /// Opens the absolute `path` (creating missing directories, mode 0700), one component at a
    /// time from `/` without following links. Every directory on the way must be owned by root
    /// or this process's user and not writable by others (unless sticky, for those above the
    /// last); the last must not be writable by others at all.
    pub fn open_path(path: &Path) -> Result<Self, UnsafeDir> {
        if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
            return Err(UnsafeDir::Relative { path: path.to_owned() });
        }
        let root =
            nix::fcntl::open("/", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|errno| UnsafeDir::Open { path: "/".into(), errno })?;
        let mut dir = Self { fd: root, path: PathBuf::from("/") };
        let names: Vec<&OsStr> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(name) => Some(name),
                _ => None,
            })
            .collect();
        for (i, name) in names.iter().enumerate() {
            let last = i + 1 == names.len();
            dir = dir.child(name, if last { Strictness::Private } else { Strictness::Ancestor })?;
        }
        Ok(dir)
    }

    /// Opens (creating it 0700 if missing) the directory `name` inside this one; it must pass the
    /// same checks as the pin directory itself.
    pub fn subdir(&self, name: &str) -> Result<Self, UnsafeDir> {
        self.child(OsStr::new(name), Strictness::Private)
    }

    fn child(&self, name: &OsStr, strictness: Strictness) -> Result<Self, UnsafeDir> {
        let path = self.path.join(name);
        match mkdirat(self.fd.as_fd(), name, Mode::from_bits_truncate(PRIVATE)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            // Read-only or foreign ancestors (e.g. `/sys`) exist already: opening says the rest.
            Err(Errno::EACCES | Errno::EPERM | Errno::EROFS) => {}
            Err(errno) => return Err(UnsafeDir::Create { path, errno }),
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match openat(self.fd.as_fd(), name, flags, Mode::empty()) {
            Ok(fd) => fd,
            // O_NOFOLLOW on a link: ELOOP; O_DIRECTORY on something else: ENOTDIR.
            Err(Errno::ELOOP) => return Err(UnsafeDir::Symlink { path }),
            Err(Errno::ENOTDIR) => {
                let link = fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| kind(&st) == SFlag::S_IFLNK);
                return Err(if link {
                    UnsafeDir::Symlink { path }
                } else {
                    UnsafeDir::NotDirectory { path }
                });
            }
            Err(errno) => return Err(UnsafeDir::Open { path, errno }),
        };
        let stat = fstat(fd.as_fd()).map_err(|errno| UnsafeDir::Open { path: path.clone(), errno })?;
        check(&stat, &path, strictness)?;
        Ok(Self { fd, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// What is at `name` in this directory, without following a link; `None` if nothing.
    pub fn entry(&self, name: &OsStr) -> Result<Option<EntryKind>, Errno> {
        match fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(match kind(&stat) {
                SFlag::S_IFDIR => EntryKind::Directory,
                SFlag::S_IFLNK => EntryKind::Symlink,
                SFlag::S_IFREG if trusted_owner(stat.st_uid) => EntryKind::OwnFile,
                _ => EntryKind::Other,
            })),
            Err(Errno::ENOENT) => Ok(None),
            Err(errno) => Err(errno),
        }
    }

    /// The names in this directory (without `.` and `..`).
    pub fn names(&self) -> Result<Vec<std::ffi::OsString>, Errno> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut dir = Dir::openat(self.fd.as_fd(), ".", flags, Mode::empty())?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let name = entry?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                names.push(std::ffi::OsString::from(OsStr::from_bytes(&name)));
            }
        }
        Ok(names)
    }

    /// Removes `name` from this directory: a link itself (never what it points to), a file or
    /// pin, or a directory tree (its subdirectories opened without following links). Nothing
    /// there is not an error.
    pub fn remove(&self, name: &OsStr) -> Result<(), Errno> {
        remove_at(&self.fd, name, 0)
    }
}

impl From<SecureDir> for OwnedFd {
    fn from(dir: SecureDir) -> Self {
        dir.fd
    }
}

/// How strict the checks on one directory of the path are.
#[derive(Clone, Copy)]
enum Strictness {
    /// Above the pin directory: others may write only where the sticky bit keeps them from
    /// renaming or removing what is not theirs.
    Ancestor,
    /// The pin directory and those inside it: nobody but the owner writes.
    Private,
}

fn check(stat: &FileStat, path: &Path, strictness: Strictness) -> Result<(), UnsafeDir> {
    if !trusted_owner(stat.st_uid) {
        return Err(UnsafeDir::Owner { path: path.to_owned(), uid: stat.st_uid });
    }
    let mode = stat.st_mode & 0o7777;
    let writable = mode & GROUP_OR_OTHER_WRITE != 0;
    let allowed = match strictness {
        Strictness::Ancestor => !writable || mode & STICKY != 0,
        Strictness::Private => !writable,
    };
    if allowed { Ok(()) } else { Err(UnsafeDir::Writable { path: path.to_owned(), mode }) }
}

fn kind(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits())
}

/// Root, or the user kernsight runs as.
fn trusted_owner(uid: u32) -> bool {
    // SAFETY: geteuid has no preconditions.
    uid == 0 || uid == unsafe { libc::geteuid() }
}

fn remove_at(dir: &OwnedFd, name: &OsStr, depth: usize) -> Result<(), Errno> {
    let stat = match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::ENOENT) => return Ok(()),
        Err(errno) => return Err(errno),
    };
    if kind(&stat) != SFlag::S_IFDIR {
        return match unlinkat(dir.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
            Err(Errno::ENOENT) | Ok(()) => Ok(()),
            Err(errno) => Err(errno),
        };
    }
    if depth >= MAX_DEPTH {
        return Err(Errno::ELOOP);
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let child = openat(dir.as_fd(), name, flags, Mode::empty())?;
    let inner = SecureDir { fd: child, path: PathBuf::new() };
    for entry in inner.names()? {
        remove_at(&inner.fd, &entry, depth + 1)?;
    }
    match unlinkat(dir.as_fd(), name, UnlinkatFlags::RemoveDir) {
        Err(Errno::ENOENT) | Ok(()) => Ok(()),
        Err(errno) => Err(errno),
    }
}

#[cfg(test)]
mod tests;
