//! Syscall arguments made readable where that is simple: how many a syscall takes, which one is
//! a path (read by the kernel side as text), and file descriptors and `AT_FDCWD` as numbers.

use std::fmt::Write as _;

use syscalls::Sysno;

/// (syscall, number of arguments, index of the path argument)
const KNOWN: &[(Sysno, usize, Option<u8>)] = &[
    #[cfg(target_arch = "x86_64")]
    (Sysno::open, 3, Some(0)),
    #[cfg(target_arch = "x86_64")]
    (Sysno::creat, 2, Some(0)),
    #[cfg(target_arch = "x86_64")]
    (Sysno::access, 2, Some(0)),
    #[cfg(target_arch = "x86_64")]
    (Sysno::stat, 2, Some(0)),
    #[cfg(target_arch = "x86_64")]
    (Sysno::lstat, 2, Some(0)),
    #[cfg(target_arch = "x86_64")]
    (Sysno::unlink, 1, Some(0)),
    #[cfg(target_arch = "x86_64")]
    (Sysno::mkdir, 2, Some(0)),
    #[cfg(target_arch = "x86_64")]
    (Sysno::rmdir, 1, Some(0)),
    #[cfg(target_arch = "x86_64")]
    (Sysno::readlink, 3, Some(0)),
    #[cfg(target_arch = "x86_64")]
    (Sysno::chmod, 2, Some(0)),
    #[cfg(target_arch = "x86_64")]
    (Sysno::rename, 2, Some(0)),
    (Sysno::openat, 4, Some(1)),
    (Sysno::openat2, 4, Some(1)),
    (Sysno::faccessat, 3, Some(1)),
    (Sysno::faccessat2, 4, Some(1)),
    #[cfg(target_arch = "x86_64")]
    (Sysno::newfstatat, 4, Some(1)),
    // The same syscall: the syscalls crate names arm64's by its generic table's `fstatat`.
    #[cfg(target_arch = "aarch64")]
    (Sysno::fstatat, 4, Some(1)),
    (Sysno::statx, 5, Some(1)),
    (Sysno::unlinkat, 3, Some(1)),
    (Sysno::mkdirat, 3, Some(1)),
    (Sysno::readlinkat, 4, Some(1)),
    (Sysno::fchmodat, 3, Some(1)),
    (Sysno::renameat2, 5, Some(1)),
    (Sysno::chdir, 1, Some(0)),
    (Sysno::truncate, 2, Some(0)),
    (Sysno::read, 3, None),
    (Sysno::write, 3, None),
    (Sysno::pread64, 4, None),
    (Sysno::pwrite64, 4, None),
    (Sysno::close, 1, None),
    (Sysno::fstat, 2, None),
    (Sysno::lseek, 3, None),
    (Sysno::mmap, 6, None),
    (Sysno::munmap, 2, None),
    (Sysno::mprotect, 3, None),
    (Sysno::brk, 1, None),
    (Sysno::ioctl, 3, None),
    (Sysno::getpid, 0, None),
    (Sysno::getppid, 0, None),
    (Sysno::gettid, 0, None),
    (Sysno::getuid, 0, None),
    (Sysno::sched_yield, 0, None),
    (Sysno::dup, 1, None),
    (Sysno::dup3, 3, None),
    (Sysno::socket, 3, None),
    (Sysno::connect, 3, None),
    (Sysno::accept4, 4, None),
    (Sysno::sendto, 6, None),
    (Sysno::recvfrom, 6, None),
    (Sysno::kill, 2, None),
    (Sysno::tgkill, 3, None),
    (Sysno::futex, 6, None),
    (Sysno::nanosleep, 2, None),
    (Sysno::clock_nanosleep, 4, None),
    (Sysno::exit_group, 1, None),
    (Sysno::epoll_pwait, 6, None),
    (Sysno::ppoll, 5, None),
    (Sysno::execve, 3, None),
    (Sysno::clone, 5, None),
];

/// The index of the path argument of syscall `nr`, if it has one the kernel side can read.
pub fn path_argument(nr: u32) -> Option<u8> {
    KNOWN.iter().find(|(sysno, _, _)| sysno.id() as u32 == nr).and_then(|(_, _, path)| *path)
}

/// `"/etc/hosts", 0x80000` style: the syscall's own number of arguments (six when unknown), the
/// path argument as quoted text, small values in decimal, `AT_FDCWD` by name, others in hex.
#[cfg(test)]
pub fn describe(nr: u32, args: &[u64; 6], has_path: bool, path: &str) -> String {
    let mut text = String::new();
    describe_into(&mut text, nr, args, has_path, path);
    text
}

/// `describe`, written at the end of `text`: this runs for every event of `trace`, a million a
/// second, and the caller keeps one buffer for all of them.
pub fn describe_into(text: &mut String, nr: u32, args: &[u64; 6], has_path: bool, path: &str) {
    let known = KNOWN.iter().find(|(sysno, _, _)| sysno.id() as u32 == nr);
    let count = known.map_or(6, |(_, count, _)| *count);
    let path_at = known.and_then(|(_, _, path)| *path).map(usize::from);
    for (i, &arg) in args.iter().take(count).enumerate() {
        if i > 0 {
            text.push_str(", ");
        }
        if path_at == Some(i) && has_path {
            quoted(text, path);
        } else if is_at_fdcwd(arg) {
            text.push_str("AT_FDCWD");
        } else if arg < 0x10000 {
            text.push_str(itoa::Buffer::new().format(arg));
        } else {
            let _ = write!(text, "{arg:#x}");
        }
    }
}

/// `path` as Rust's `{:?}` quotes it; a path of printable ASCII without quotes or backslashes,
/// the usual one, is copied as it is.
fn quoted(text: &mut String, path: &str) {
    if path.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\') {
        text.push('"');
        text.push_str(path);
        text.push('"');
    } else {
        let _ = write!(text, "{path:?}");
    }
}

/// `AT_FDCWD` (-100) as the register holds it: sign-extended, or as the 32-bit `int` the C
/// library passed (the upper half zero).
fn is_at_fdcwd(arg: u64) -> bool {
    arg as i64 == -100 || arg == u64::from(-100i32 as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_arguments() {
        let openat = Sysno::openat.id() as u32;
        assert_eq!(path_argument(openat), Some(1));
        assert_eq!(path_argument(Sysno::write.id() as u32), None);
        let args = [(-100i64) as u64, 0x7fff_0000, 0x80000, 0, 9, 9];
        assert_eq!(describe(openat, &args, true, "/etc/hosts"), "AT_FDCWD, \"/etc/hosts\", 0x80000, 0");
        assert_eq!(describe(openat, &args, false, ""), "AT_FDCWD, 0x7fff0000, 0x80000, 0");
        // glibc passes the directory as a 32-bit int: the register's upper half is zero.
        let from_libc = [0xffff_ff9c, 0x7fff_0000, 0x80000, 0, 0, 0];
        assert_eq!(describe(openat, &from_libc, false, ""), "AT_FDCWD, 0x7fff0000, 0x80000, 0");
        assert_eq!(
            describe(openat, &[0xffff_ff9b, 0, 0, 0, 0, 0], false, "").split(", ").next(),
            Some("0xffffff9b")
        );
        assert_eq!(describe(Sysno::getppid.id() as u32, &args, false, ""), "");
        assert_eq!(
            describe(Sysno::write.id() as u32, &[1, 0x5555_0000, 6, 0, 0, 0], false, ""),
            "1, 0x55550000, 6"
        );
        assert_eq!(describe(100_000, &[1, 2, 3, 4, 5, 6], false, "").split(", ").count(), 6);
        // Paths are quoted as `{:?}` quotes them, whatever their bytes.
        for path in ["/etc/hosts", "a \"b\" c", "back\\slash", "new\nline\u{1b}[2J", "é~ \u{7f}"] {
            assert_eq!(describe(openat, &args, true, path), format!("AT_FDCWD, {path:?}, 0x80000, 0"));
        }
    }
}
