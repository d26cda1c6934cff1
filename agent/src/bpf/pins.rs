//! Pinned maps: the in-kernel counters live in bpffs under `<pin dir>/v<layout>/`, so that a
//! restart or an upgrade of the agent continues them instead of starting again from zero.
//!
//! - Only aggregation maps are pinned: the counters, and the cgroup slot bookkeeping they depend
//!   on. Caches, per-thread timestamps and ring buffers belong to one agent process.
//! - `MAP_LAYOUT_VERSION` changes whenever a pinned map's key or value changes meaning; pins of
//!   other versions are removed at start-up and the log says so, so they are never misread. A pin
//!   of the right version but another shape (type, key or value size, bound: e.g. after
//!   `syscalls.max_cgroups` changed) is refused by the loader; the caller then replaces the pins.
//! - An agent holds a lock (flock) on the pin directory while it runs: two agents never share
//!   the slot bookkeeping. A second one waits a little (a rolling update), then runs unpinned.

use std::{
    fs::File,
    io,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::EbpfLoader;
use kernsight_common::{
    MAP_LAYOUT_VERSION,
    counters::MAP_FULL_MAP,
    syscalls::{CGROUP_SLOTS_MAP, FREE_SLOTS_MAP, SLOT_ENTRIES_MAP, SLOT_OWNERS_MAP, SYSCALL_ROWS_MAP},
};
use tracing::{info, warn};

/// The maps whose contents outlive the agent: the map-full counters and every family's own.
pub fn pinned_maps() -> impl Iterator<Item = &'static str> {
    std::iter::once(MAP_FULL_MAP).chain(super::FAMILIES.iter().flat_map(|f| f.pinned_maps().iter().copied()))
}

/// The cgroup slot bookkeeping: these maps describe one another (a slot is free, or owned by a
/// cgroup whose local storage names it, and its row holds that cgroup's counts), so they are
/// reused together or not at all.
const SLOT_MAPS: &[&str] =
    &[SYSCALL_ROWS_MAP, SLOT_OWNERS_MAP, FREE_SLOTS_MAP, CGROUP_SLOTS_MAP, SLOT_ENTRIES_MAP];

/// How long a second agent waits for the pin directory before it runs unpinned.
const LOCK_WAIT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("cannot create the pin directory {path}: {source} (is bpffs mounted there?)")]
    Create { path: PathBuf, source: io::Error },
    #[error("{path} is not on a bpf filesystem: set bpf.pin_dir to a directory under the bpffs mount")]
    NotBpffs { path: PathBuf },
    #[error("another kernsight process holds {path}")]
    Busy { path: PathBuf },
    #[error("cannot remove {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
}

/// The pin directory of this agent's layout, locked for as long as this lives.
#[derive(Debug)]
pub struct Pins {
    dir: PathBuf,
    /// Pinned maps that existed before this start (their counts continue).
    reused: Vec<&'static str>,
    _lock: File,
}

impl Pins {
    /// Locks `base`, removes pins of other layout versions and prepares `base/v<layout>`.
    pub fn open(base: &Path) -> Result<Self, PinError> {
        std::fs::create_dir_all(base).map_err(|source| PinError::Create { path: base.to_owned(), source })?;
        if !is_bpffs(base) {
            return Err(PinError::NotBpffs { path: base.to_owned() });
        }
        let lock = lock(base)?;
        let dir = base.join(format!("v{MAP_LAYOUT_VERSION}"));
        for stale in other_versions(base) {
            remove_dir(&stale)?;
            info!(
                dir = %stale.display(),
                "removed maps pinned by a kernsight with another map layout: their counters restart"
            );
        }
        std::fs::create_dir_all(&dir).map_err(|source| PinError::Create { path: dir.clone(), source })?;
        let mut pins = Self { reused: Vec::new(), dir, _lock: lock };
        pins.reused = pinned_maps().filter(|map| pins.path(map).exists()).collect();
        let slot_maps = SLOT_MAPS.iter().filter(|map| pins.reused.contains(map)).count();
        if slot_maps != 0 && slot_maps != SLOT_MAPS.len() {
            warn!(dir = %pins.dir.display(), "some cgroup slot maps are pinned and some not: replacing them all");
            pins.replace()?;
        }
        Ok(pins)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, map: &str) -> PathBuf {
        self.dir.join(map)
    }

    /// Whether `map` was pinned before this start: its contents (counts, slot bookkeeping) carry
    /// on, and must not be initialised again.
    pub fn reused(&self, map: &str) -> bool {
        self.reused.contains(&map)
    }

    /// Makes the loader open (or create and pin) every pinned map at its path.
    pub fn reused_maps(&self) -> &[&'static str] {
        &self.reused
    }

    pub fn apply(&self, loader: &mut EbpfLoader<'_>) {
        for map in pinned_maps() {
            loader.map_pin_path(map, self.path(map));
        }
    }

    /// Removes this layout's pins (e.g. when their shape no longer matches the config): the next
    /// load creates them afresh.
    pub fn replace(&mut self) -> Result<(), PinError> {
        remove_dir(&self.dir)?;
        std::fs::create_dir_all(&self.dir)
            .map_err(|source| PinError::Create { path: self.dir.clone(), source })?;
        self.reused.clear();
        Ok(())
    }
}

/// Removes everything kernsight pinned under `base` (`kernsight cleanup`); returns the number of
/// pins removed. Refuses while an agent holds the directory.
pub fn remove_all(base: &Path) -> Result<usize, PinError> {
    if !base.exists() {
        return Ok(0);
    }
    let _lock = try_lock(base)?.ok_or_else(|| PinError::Busy { path: base.to_owned() })?;
    let mut removed = 0;
    let entries =
        std::fs::read_dir(base).map_err(|source| PinError::Remove { path: base.to_owned(), source })?;
    for entry in entries.flatten() {
        let path = entry.path();
        removed += std::fs::read_dir(&path).map(Iterator::count).unwrap_or(1);
        if path.is_dir() {
            remove_dir(&path)?;
        } else {
            std::fs::remove_file(&path).map_err(|source| PinError::Remove { path, source })?;
        }
    }
    std::fs::remove_dir(base).map_err(|source| PinError::Remove { path: base.to_owned(), source })?;
    Ok(removed)
}

/// Version directories (`v<N>`) other than this layout's.
fn other_versions(base: &Path) -> Vec<PathBuf> {
    let current = format!("v{MAP_LAYOUT_VERSION}");
    let Ok(entries) = std::fs::read_dir(base) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name != current && name.strip_prefix('v').is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .map(|e| e.path())
        .collect()
}

/// Removes a directory of pins (unlinking a pin frees the map once no program or fd holds it).
fn remove_dir(dir: &Path) -> Result<(), PinError> {
    match std::fs::remove_dir_all(dir) {
        Err(source) if source.kind() != io::ErrorKind::NotFound => {
            Err(PinError::Remove { path: dir.to_owned(), source })
        }
        _ => Ok(()),
    }
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}

fn lock(base: &Path) -> Result<File, PinError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        if let Some(lock) = try_lock(base)? {
            return Ok(lock);
        }
        if Instant::now() >= deadline {
            return Err(PinError::Busy { path: base.to_owned() });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An exclusive flock on the directory, or `None` while another process holds it.
fn try_lock(base: &Path) -> Result<Option<File>, PinError> {
    let dir = File::open(base).map_err(|source| PinError::Create { path: base.to_owned(), source })?;
    // SAFETY: flock on a descriptor this function owns.
    let locked = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    Ok(locked.then_some(dir))
}
