//! Names for the numbers the kernel hands out, for the architecture kernsight runs on.

use std::borrow::Cow;

/// The syscall's name (`openat`), from the kernel's syscall table for this architecture as the
/// `syscalls` crate generates it; `syscall_<nr>` for numbers the table does not know.
pub fn syscall_name(nr: u32) -> Cow<'static, str> {
    match syscalls::Sysno::new(nr as usize) {
        Some(sysno) => Cow::Borrowed(sysno.name()),
        None => Cow::Owned(format!("syscall_{nr}")),
    }
}

/// The errno's symbolic name (`ENOENT`), from libc's table for this architecture, plus the
/// kernel-internal restart codes (include/linux/errno.h) that `sys_exit` can observe before
/// signal handling turns them into EINTR or a restart.
pub fn errno_name(errno: u32) -> Cow<'static, str> {
    const KERNEL_INTERNAL: [(u32, &str); 5] = [
        (512, "ERESTARTSYS"),
        (513, "ERESTARTNOINTR"),
        (514, "ERESTARTNOHAND"),
        (515, "ENOIOCTLCMD"),
        (516, "ERESTART_RESTARTBLOCK"),
    ];
    if let Some((_, name)) = KERNEL_INTERNAL.iter().find(|(n, _)| *n == errno) {
        return Cow::Borrowed(name);
    }
    // Named once: a trace of failing calls asks for the same few names at a high rate.
    static NAMES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let names = NAMES.get_or_init(|| (0..KNOWN_ERRNOS).map(name_errno).collect());
    match names.get(errno as usize) {
        Some(name) => Cow::Borrowed(name.as_str()),
        None => Cow::Owned(name_errno(errno)),
    }
}

/// Errnos below this are named from a table built once (Linux's go up to 133).
const KNOWN_ERRNOS: u32 = 256;

fn name_errno(errno: u32) -> String {
    match i32::try_from(errno).map(nix::errno::Errno::from_raw) {
        Ok(nix::errno::Errno::UnknownErrno) | Err(_) => format!("errno_{errno}"),
        Ok(known) => format!("{known:?}"),
    }
}

/// ` (did you mean a, b?)` with the (at most three) known names closest to `name`, or nothing.
pub fn did_you_mean(name: &str, known: &[&str]) -> String {
    let mut close: Vec<(f64, &str)> =
        known.iter().map(|k| (strsim::jaro_winkler(name, k), *k)).filter(|(score, _)| *score > 0.8).collect();
    close.sort_by(|a, b| b.0.total_cmp(&a.0));
    let names: Vec<&str> = close.into_iter().take(3).map(|(_, k)| k).collect();
    if names.is_empty() { String::new() } else { format!(" (did you mean {}?)", names.join(", ")) }
}

/// Names of the capabilities the `caps` crate knows (the kernel's), by number.
fn known_capabilities() -> &'static [Option<String>; 64] {
    static NAMES: std::sync::OnceLock<[Option<String>; 64]> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        let mut names = [const { None }; 64];
        for cap in caps::all() {
            if let Some(slot) = names.get_mut(usize::from(cap.index())) {
                *slot = Some(cap.to_string());
            }
        }
        names
    })
}

/// The capability's name (`CAP_NET_BIND_SERVICE`), from the `caps` crate's table of the
/// kernel's capabilities; `CAP_<nr>` for numbers it does not know (a newer kernel).
pub fn capability_name(cap: u32) -> Cow<'static, str> {
    match known_capabilities().get(cap as usize) {
        Some(Some(known)) => Cow::Borrowed(known),
        _ => Cow::Owned(format!("CAP_{cap}")),
    }
}

/// Names of the known capabilities set in a capability mask, by number (`CAP_CHOWN`, ...).
pub fn held_capabilities(mask: u64) -> impl Iterator<Item = &'static str> {
    known_capabilities()
        .iter()
        .enumerate()
        .filter(move |(index, _)| mask & (1u64 << index) != 0)
        .filter_map(|(_, name)| name.as_deref())
}

/// Names of the capabilities set in a capability mask (`CAP_NET_BIND_SERVICE`, ...).
pub fn capability_names(mask: u64) -> Vec<String> {
    held_capabilities(mask).map(str::to_owned).collect()
}

/// The number of a capability named with or without its `CAP_` prefix, in any case
/// (`NET_BIND_SERVICE`, `cap_net_bind_service`).
pub fn capability_number(name: &str) -> Option<u32> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
    caps::all().into_iter().find(|c| c.to_string() == full).map(|c| u32::from(c.index()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_capabilities() {
        assert_eq!(capability_name(10), "CAP_NET_BIND_SERVICE");
        assert_eq!(capability_name(21), "CAP_SYS_ADMIN");
        assert_eq!(capability_name(39), "CAP_BPF");
        assert_eq!(capability_name(99), "CAP_99");
        assert_eq!(capability_number("NET_BIND_SERVICE"), Some(10));
        assert_eq!(capability_number("cap_sys_admin"), Some(21));
        assert_eq!(capability_number("NOPE"), None);
    }

    #[test]
    fn names_syscalls_of_this_architecture() {
        assert_eq!(syscall_name(libc::SYS_getppid as u32), "getppid");
        assert_eq!(syscall_name(libc::SYS_openat as u32), "openat");
        assert_eq!(syscall_name(libc::SYS_write as u32), "write");
        assert_eq!(syscall_name(100_000), "syscall_100000");
    }

    #[test]
    fn names_errnos() {
        assert_eq!(errno_name(libc::ENOENT as u32), "ENOENT");
        assert_eq!(errno_name(libc::EPERM as u32), "EPERM");
        assert_eq!(errno_name(libc::EAGAIN as u32), "EAGAIN");
        assert_eq!(errno_name(512), "ERESTARTSYS");
        assert_eq!(errno_name(4000), "errno_4000");
    }
}
