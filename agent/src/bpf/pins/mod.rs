//! Pinned maps: the in-kernel counters live in bpffs under `<pin dir>/v<layout>/`, so that a
//! restart or an upgrade of the agent continues them instead of starting again from zero.
//!
//! - Only aggregation maps are pinned: the counters, and the cgroup slot bookkeeping they depend
//!   on. Caches, per-thread timestamps and ring buffers belong to one agent process.
//! - `MAP_LAYOUT_VERSION` changes whenever a pinned map's key or value changes meaning; pins of
//!   other versions are removed at start-up and the log says so, so they are never misread. A pin
//!   of the right version but another shape (type, key or value size, bound: e.g. after
//!   `syscalls.max_cgroups` changed) is refused by the loader; the caller then replaces the pins.
//! - An agent holds a lock while it runs: two agents never share the slot bookkeeping. A second
//!   one waits a little (a rolling update), then runs unpinned. The lock is a flock on
//!   `<pin dir>/lock`, a directory the agent creates 0700: nobody but root can open it, so
//!   nobody else can hold it.
//! - Nobody else may choose where the maps go: the pin directories are opened without following
//!   links, and refused unless root (or the agent's user) owns them and nobody else can write in
//!   them ([`secure_dir`]); an entry at a pin path that is not a pinned object (a link, a
//!   directory) is removed with a log line and the map is pinned afresh. A refusal is one log
//!   line and the agent runs unpinned: never an exit, never a restart loop.

use std::{
    ffi::OsStr,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::EbpfLoader;
use kernsight_common::{
    MAP_LAYOUT_VERSION,
    counters::MAP_FULL_MAP,
    syscalls::{
        CGROUP_SLOTS_MAP, FREE_SLOTS_MAP, SLOT_ENTRIES_MAP, SLOT_OWNERS_MAP, SYSCALL_ROWS_MAP,
        V1_CGROUP_SLOTS_MAP,
    },
};
use nix::errno::Errno;
use tracing::{info, warn};

pub mod secure_dir;

use secure_dir::{EntryKind, SecureDir, UnsafeDir};

/// The maps whose contents outlive the agent: the map-full counters and every family's own.
pub fn pinned_maps() -> impl Iterator<Item = &'static str> {
    std::iter::once(MAP_FULL_MAP).chain(super::FAMILIES.iter().flat_map(|f| f.pinned_maps().iter().copied()))
}

/// The cgroup slot bookkeeping: these maps describe one another (a slot is free, or owned by a
/// cgroup whose local storage names it, and its row holds that cgroup's counts), so they are
/// reused together or not at all.
const SLOT_MAPS: &[&str] = &[
    SYSCALL_ROWS_MAP,
    SLOT_OWNERS_MAP,
    FREE_SLOTS_MAP,
    CGROUP_SLOTS_MAP,
    V1_CGROUP_SLOTS_MAP,
    SLOT_ENTRIES_MAP,
];

/// How long a second agent waits for the pin directory before it runs unpinned.
const LOCK_WAIT: Duration = Duration::from_secs(15);

/// The lock: a directory that only its owner can open (bpffs holds no regular files, and refuses
/// names with a dot).
pub const LOCK_NAME: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(transparent)]
    Unsafe(#[from] UnsafeDir),
    #[error(
        "{path} is a directory on {found}, not on a bpf filesystem: maps cannot be pinned there. \
         In a pod, the kubelet created the hostPath directory where the node has no bpffs: mount \
         bpffs at /sys/fs/bpf on the node (`mount -t bpf bpf /sys/fs/bpf`; systemd does at boot), \
         then restart the pod; elsewhere set bpf.pin_dir to a directory under a bpffs mount"
    )]
    NotBpffs { path: PathBuf, found: &'static str },
    #[error("another kernsight process holds {path}")]
    Busy { path: PathBuf },
    #[error("cannot lock {path}: {errno}; remove it (`rm -r {path}`) and start kernsight again")]
    Lock { path: PathBuf, errno: Errno },
    #[error("cannot read {path}: {errno} (is this kernsight root?)")]
    Read { path: PathBuf, errno: Errno },
    #[error("cannot remove {path}: {errno}; remove it by hand (`rm -r {path}`)")]
    Remove { path: PathBuf, errno: Errno },
}

/// The pin directory of this agent's layout, locked for as long as this lives.
#[derive(Debug)]
pub struct Pins {
    /// `<pin dir>/v<layout>`, checked and open.
    layout: SecureDir,
    /// `<pin dir>`, checked and open.
    base: SecureDir,
    /// Pinned maps that existed before this start (their counts continue).
    reused: Vec<&'static str>,
    _lock: OwnedFd,
}

impl Pins {
    /// Checks and locks `base`, removes pins of other layout versions and prepares
    /// `base/v<layout>`, removing whatever sits at a pin path and is not a pinned object.
    pub fn open(base: &Path) -> Result<Self, PinError> {
        let base = SecureDir::open_path(base)?;
        if let Some(found) = not_bpffs(&base) {
            return Err(PinError::NotBpffs { path: base.path().to_owned(), found });
        }
        let lock = lock(&base)?;
        let current = format!("v{MAP_LAYOUT_VERSION}");
        for stale in other_versions(&base, &current)? {
            let path = base.path().join(&stale);
            base.remove(&stale).map_err(|errno| PinError::Remove { path: path.clone(), errno })?;
            info!(
                dir = %path.display(),
                "removed maps pinned by a kernsight with another map layout: their counters restart"
            );
        }
        let layout = own_subdir(&base, &current, |_| true)?;
        let mut pins = Self { layout, base, reused: Vec::new(), _lock: lock };
        pins.reused = pins.existing_pins()?;
        let slot_maps = SLOT_MAPS.iter().filter(|map| pins.reused.contains(map)).count();
        if slot_maps != 0 && slot_maps != SLOT_MAPS.len() {
            warn!(dir = %pins.dir().display(), "some cgroup slot maps are pinned and some not: replacing them all");
            pins.replace()?;
        }
        Ok(pins)
    }

    pub fn dir(&self) -> &Path {
        self.layout.path()
    }

    fn path(&self, map: &str) -> PathBuf {
        self.layout.path().join(map)
    }

    /// The maps pinned before this start. Whatever else sits at a pin path (a link, which the
    /// loader would follow; a directory, on which pinning fails) is removed, and the log says so.
    fn existing_pins(&self) -> Result<Vec<&'static str>, PinError> {
        let mut existing = Vec::new();
        for map in pinned_maps() {
            let path = self.path(map);
            match self.layout.entry(OsStr::new(map)) {
                Ok(None) => {}
                Ok(Some(EntryKind::OwnFile)) => existing.push(map),
                Ok(Some(other)) => {
                    self.layout
                        .remove(OsStr::new(map))
                        .map_err(|errno| PinError::Remove { path: path.clone(), errno })?;
                    warn!(
                        "refused {}: {} is not a map kernsight pinned; removed it (not what it points to) \
                         and pinned the map afresh, its counters restart",
                        path.display(),
                        other.describe()
                    );
                }
                Err(errno) => return Err(PinError::Read { path, errno }),
            }
        }
        Ok(existing)
    }

    /// Whether `map` was pinned before this start: its contents (counts, slot bookkeeping) carry
    /// on, and must not be initialised again.
    pub fn reused(&self, map: &str) -> bool {
        self.reused.contains(&map)
    }

    /// The pinned maps that existed before this start.
    pub fn reused_maps(&self) -> &[&'static str] {
        &self.reused
    }

    /// Makes the loader open (or create and pin) every pinned map at its path, except the
    /// `idle` ones: they are created at their least size for this run, and a pin of their
    /// full size (from a run that used them) stays for the next run that does.
    pub fn apply(&self, loader: &mut EbpfLoader<'_>, idle: &[&str]) {
        for map in pinned_maps().filter(|map| !idle.contains(map)) {
            loader.map_pin_path(map, self.path(map));
        }
    }

    /// Removes the pins made since this start (by a load that is about to be retried with
    /// another build): the retry then finds what the previous agent left, and nothing else.
    pub fn forget_new(&self) -> Result<(), PinError> {
        for map in pinned_maps().filter(|map| !self.reused(map)) {
            if let Ok(Some(EntryKind::OwnFile)) = self.layout.entry(OsStr::new(map)) {
                self.layout
                    .remove(OsStr::new(map))
                    .map_err(|errno| PinError::Remove { path: self.path(map), errno })?;
            }
        }
        Ok(())
    }

    /// Removes this layout's pins (e.g. when their shape no longer matches the config): the next
    /// load creates them afresh.
    pub fn replace(&mut self) -> Result<(), PinError> {
        let name = format!("v{MAP_LAYOUT_VERSION}");
        self.base
            .remove(OsStr::new(&name))
            .map_err(|errno| PinError::Remove { path: self.dir().to_owned(), errno })?;
        self.layout = own_subdir(&self.base, &name, |_| true)?;
        self.reused.clear();
        Ok(())
    }
}

/// Removes everything kernsight pinned under `base` (`kernsight cleanup`); returns the number of
/// pins removed. Refuses while an agent holds the directory, and refuses a directory that is not
/// safe (another owner, writable by others, a link): what is in it may not be kernsight's.
pub fn remove_all(base: &Path) -> Result<usize, PinError> {
    if std::fs::symlink_metadata(base).is_err() {
        return Ok(0);
    }
    let dir = SecureDir::open_path(base)?;
    let lock = try_lock(&dir)?.ok_or_else(|| PinError::Busy { path: base.to_owned() })?;
    let mut removed = 0;
    let names = dir.names().map_err(|errno| PinError::Read { path: base.to_owned(), errno })?;
    for name in names.into_iter().filter(|name| name != LOCK_NAME) {
        let path = base.join(&name);
        removed += match dir.entry(&name) {
            Ok(Some(EntryKind::Directory)) => dir.subdir(&name.to_string_lossy()).and_then(|d| {
                d.names().map(|n| n.len()).map_err(|errno| UnsafeDir::Open { path: path.clone(), errno })
            })?,
            _ => 1,
        };
        dir.remove(&name).map_err(|errno| PinError::Remove { path, errno })?;
    }
    dir.remove(OsStr::new(LOCK_NAME))
        .map_err(|errno| PinError::Remove { path: base.join(LOCK_NAME), errno })?;
    drop(lock);
    std::fs::remove_dir(base).map_err(|e| PinError::Remove {
        path: base.to_owned(),
        errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
    })?;
    Ok(removed)
}

/// Version directories (`v<N>`) other than `current`.
fn other_versions(base: &SecureDir, current: &str) -> Result<Vec<std::ffi::OsString>, PinError> {
    let names = base.names().map_err(|errno| PinError::Read { path: base.path().to_owned(), errno })?;
    Ok(names
        .into_iter()
        .filter(|name| {
            let text = name.to_string_lossy();
            text != current && text.strip_prefix('v').is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter(|name| base.entry(name).is_ok_and(|kind| kind == Some(EntryKind::Directory)))
        .collect())
}

/// `None` if `dir` is on bpffs, else the name of the filesystem it is on (for the message: a
/// hostPath directory the kubelet made on a node without bpffs is on the root filesystem).
fn not_bpffs(dir: &SecureDir) -> Option<&'static str> {
    use nix::sys::statfs::{
        BPF_FS_MAGIC, BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, OVERLAYFS_SUPER_MAGIC, SYSFS_MAGIC, TMPFS_MAGIC,
        fstatfs,
    };
    let Ok(fs) = fstatfs(dir.fd().as_fd()) else { return Some("a filesystem that cannot be identified") };
    if fs.filesystem_type() == BPF_FS_MAGIC {
        return None;
    }
    let names = [
        (TMPFS_MAGIC, "tmpfs"),
        (EXT4_SUPER_MAGIC, "ext2/3/4"),
        (BTRFS_SUPER_MAGIC, "btrfs"),
        (OVERLAYFS_SUPER_MAGIC, "overlayfs"),
        (SYSFS_MAGIC, "sysfs"),
    ];
    Some(
        names
            .iter()
            .find(|(magic, _)| *magic == fs.filesystem_type())
            .map_or("another filesystem", |(_, n)| n),
    )
}

fn lock(base: &SecureDir) -> Result<OwnedFd, PinError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        if let Some(lock) = try_lock(base)? {
            return Ok(lock);
        }
        if Instant::now() >= deadline {
            return Err(PinError::Busy { path: base.path().to_owned() });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An exclusive flock on `<base>/lock`, or `None` while another process holds it. The lock
/// directory must not be readable by others either (an open descriptor is all a flock needs).
fn try_lock(base: &SecureDir) -> Result<Option<OwnedFd>, PinError> {
    let dir = own_subdir(base, LOCK_NAME, private)?;
    let path = dir.path().to_owned();
    let fd: OwnedFd = dir.into();
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(Some(fd));
    }
    match Errno::last() {
        Errno::EWOULDBLOCK => Ok(None),
        errno => Err(PinError::Lock { path, errno }),
    }
}

/// The directory `name` of the checked `base`, created 0700 if missing. Whatever else is there
/// (a link, a file, a directory of another owner or open to others, or one `acceptable` refuses)
/// is not kernsight's to use but sits in kernsight's own directory: it is removed (a link, not
/// what it points to), the log says so in one line, and the directory is created afresh.
fn own_subdir(
    base: &SecureDir,
    name: &str,
    acceptable: fn(&SecureDir) -> bool,
) -> Result<SecureDir, PinError> {
    let why = match base.subdir(name) {
        Ok(dir) if acceptable(&dir) => return Ok(dir),
        Ok(dir) => format!("{} is open to other users (mode {:04o})", dir.path().display(), mode(&dir)),
        Err(
            err @ (UnsafeDir::Symlink { .. }
            | UnsafeDir::NotDirectory { .. }
            | UnsafeDir::Owner { .. }
            | UnsafeDir::Writable { .. }),
        ) => err.to_string(),
        Err(err) => return Err(err.into()),
    };
    let path = base.path().join(name);
    base.remove(OsStr::new(name)).map_err(|errno| PinError::Remove { path: path.clone(), errno })?;
    warn!("refused {}: {why}; removed it and created it afresh", path.display());
    Ok(base.subdir(name)?)
}

fn mode(dir: &SecureDir) -> u32 {
    nix::sys::stat::fstat(dir.fd().as_fd()).map_or(0, |st| st.st_mode & 0o7777)
}

/// Whether only the owner may open `dir` (mode 0700 or narrower).
fn private(dir: &SecureDir) -> bool {
    mode(dir) & 0o077 == 0
}
