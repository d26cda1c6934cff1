//! Reading the small files of procfs and cgroupfs in as few syscalls as the kernel allows: an
//! open, a read that gets the whole text, a read that finds the end, a close. `std::fs::read`
//! adds a `statx` and an `lseek` to size its buffer (which these files, sized 0 or 4096, do not
//! help with), and a buffer that starts empty grows through several reads; a scrape of 1,000
//! containers reads some 30,000 such files.

use std::{
    fs::File,
    io,
    io::Read as _,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::Path,
};

use nix::{fcntl::OFlag, sys::stat::Mode};

/// Room for a whole file of the usual kind (`memory.stat`, `/proc/<pid>/status`: 1 to 2 KiB).
const FIRST_READ: usize = 4096;

/// The text of `file`, at most `limit` bytes of it, invalid UTF-8 replaced.
pub fn read(file: File, limit: u64) -> io::Result<String> {
    let mut bytes = Vec::with_capacity(FIRST_READ);
    file.take(limit).read_to_end(&mut bytes)?;
    Ok(match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(invalid) => String::from_utf8_lossy(invalid.as_bytes()).into_owned(),
    })
}

/// The text of the file at `path`; as [`read`].
pub fn read_path(path: &Path, limit: u64) -> io::Result<String> {
    read(File::open(path)?, limit)
}

/// A directory opened once (`O_PATH`), so that each of its files costs a lookup of one name
/// rather than a walk of the whole path: cgroupfs revalidates every component at every open, and
/// `/proc` looks the pid up again.
pub struct Dir(OwnedFd);

impl Dir {
    pub fn open(path: &Path) -> io::Result<Self> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        Ok(Self(nix::fcntl::open(path, flags, Mode::empty())?))
    }

    /// The text of the file `name` in the directory (not a symlink); as [`read`].
    pub fn read(&self, name: &str, limit: u64) -> io::Result<String> {
        let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        read(File::from(nix::fcntl::openat(&self.0, name, flags, Mode::empty())?), limit)
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_read_whole_up_to_the_limit_whatever_its_size() {
        let dir = tempfile::tempdir().unwrap();
        for size in [0, 1, FIRST_READ - 1, FIRST_READ, FIRST_READ + 1, 3 * FIRST_READ] {
            let path = dir.path().join(format!("f{size}"));
            let text: String = (0..size).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            std::fs::write(&path, &text).unwrap();
            assert_eq!(read(File::open(&path).unwrap(), 1 << 20).unwrap(), text, "{size} bytes");
            assert_eq!(read(File::open(&path).unwrap(), 10).unwrap(), text[..size.min(10)], "limited");
        }
        let opened = Dir::open(dir.path()).unwrap();
        assert_eq!(opened.read("f1", 100).unwrap(), "a", "through the opened directory");
        assert!(opened.read("missing", 100).is_err());
        std::fs::write(dir.path().join("bad"), b"ok \xff").unwrap();
        assert_eq!(read(File::open(dir.path().join("bad")).unwrap(), 100).unwrap(), "ok \u{fffd}");
    }

    #[test]
    fn a_proc_file_is_read_whole() {
        let text = read(File::open("/proc/self/status").unwrap(), 1 << 20).unwrap();
        assert!(text.starts_with("Name:") && text.contains("\nCapEff:"), "{text}");
    }
}
