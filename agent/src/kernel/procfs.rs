//! Processes and their namespaces from procfs (proc(5)), with a cache keyed by pid.
//!
//! What a process says about itself is untrusted: its name (`comm`) is any 15 bytes but NUL,
//! spaces, `)` and invalid UTF-8 included, and a cgroup name is whatever its creator chose. So the
//! files are read as bytes and decoded lossily, and the parsers skip or default what they cannot
//! read instead of failing or panicking.
//!
//! A pid is only a name for a process while that process lives: once it exits the kernel hands the
//! pid out again. The start time (`/proc/<pid>/stat` field 22, in clock ticks since boot) tells two
//! processes with the same pid apart, so reads and the cache check it.

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
};

use nix::fcntl::AtFlags;

use super::small_file::Dir;

use tracing::debug;

/// The namespaces a process has a link for under `/proc/<pid>/ns/` (the `*_for_children` links
/// are its children's, not its own, and left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NamespaceKind {
    Cgroup,
    Ipc,
    Mnt,
    Net,
    Pid,
    Time,
    User,
    Uts,
}

impl NamespaceKind {
    pub const ALL: [NamespaceKind; 8] = [
        NamespaceKind::Cgroup,
        NamespaceKind::Ipc,
        NamespaceKind::Mnt,
        NamespaceKind::Net,
        NamespaceKind::Pid,
        NamespaceKind::Time,
        NamespaceKind::User,
        NamespaceKind::Uts,
    ];

    /// The link's name under `/proc/<pid>/ns/`, which is also the name in its target `net:[N]`.
    pub fn name(self) -> &'static str {
        match self {
            NamespaceKind::Cgroup => "cgroup",
            NamespaceKind::Ipc => "ipc",
            NamespaceKind::Mnt => "mnt",
            NamespaceKind::Net => "net",
            NamespaceKind::Pid => "pid",
            NamespaceKind::Time => "time",
            NamespaceKind::User => "user",
            NamespaceKind::Uts => "uts",
        }
    }
}

/// A process's namespaces by inode number. `None` where the kernel has no such namespace
/// (time namespaces arrived in 5.6) or the process had none to show (a zombie).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Namespaces {
    pub cgroup: Option<u64>,
    pub ipc: Option<u64>,
    pub mnt: Option<u64>,
    pub net: Option<u64>,
    pub pid: Option<u64>,
    pub time: Option<u64>,
    pub user: Option<u64>,
    pub uts: Option<u64>,
}

impl Namespaces {
    pub fn get(&self, kind: NamespaceKind) -> Option<u64> {
        match kind {
            NamespaceKind::Cgroup => self.cgroup,
            NamespaceKind::Ipc => self.ipc,
            NamespaceKind::Mnt => self.mnt,
            NamespaceKind::Net => self.net,
            NamespaceKind::Pid => self.pid,
            NamespaceKind::Time => self.time,
            NamespaceKind::User => self.user,
            NamespaceKind::Uts => self.uts,
        }
    }

    pub fn set(&mut self, kind: NamespaceKind, inode: Option<u64>) {
        let slot = match kind {
            NamespaceKind::Cgroup => &mut self.cgroup,
            NamespaceKind::Ipc => &mut self.ipc,
            NamespaceKind::Mnt => &mut self.mnt,
            NamespaceKind::Net => &mut self.net,
            NamespaceKind::Pid => &mut self.pid,
            NamespaceKind::Time => &mut self.time,
            NamespaceKind::User => &mut self.user,
            NamespaceKind::Uts => &mut self.uts,
        };
        *slot = inode;
    }

    /// The kinds both sides are known to share (an unknown inode shares nothing), in
    /// [`NamespaceKind`] order.
    pub fn shared_with(&self, other: &Namespaces) -> Vec<NamespaceKind> {
        NamespaceKind::ALL
            .into_iter()
            .filter(|&kind| self.get(kind).is_some() && self.get(kind) == other.get(kind))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The process exited (or its pid now names another process) while or before it was read.
    #[error("cannot read {}: process is gone", path.display())]
    Gone { path: PathBuf },
    #[error(
        "cannot read {}: permission denied (another process's namespaces need root, or \
         CAP_SYS_PTRACE over that process)",
        path.display()
    )]
    PermissionDenied { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot parse {}: {what}", path.display())]
    Malformed { path: PathBuf, what: &'static str },
}

impl ProcError {
    /// Names the reason an I/O error on a procfs file stands for. `ESRCH` is what a file opened
    /// before its process exited answers; `ENOENT` on a file whose pid directory is gone too.
    fn from_io(path: &Path, err: io::Error) -> Self {
        let path = path.to_owned();
        match err.kind() {
            io::ErrorKind::PermissionDenied => ProcError::PermissionDenied { path },
            io::ErrorKind::NotFound if !pid_dir_exists(&path) => ProcError::Gone { path },
            _ if err.raw_os_error() == Some(libc::ESRCH) => ProcError::Gone { path },
            _ => ProcError::Io { path, source: err },
        }
    }
}

/// Whether the `/proc/<pid>` directory above a file under it still exists: a missing file in a
/// live process's directory is some other problem (a fixture, a kernel without the file).
fn pid_dir_exists(file: &Path) -> bool {
    file.ancestors()
        .find(|dir| dir.file_name().and_then(|name| name.to_str()).is_some_and(is_pid_name))
        .is_some_and(Path::is_dir)
}

/// One line of `/proc/<pid>/cgroup`: `hierarchy-ID:controller-list:cgroup-path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLine {
    /// 0 for the unified (v2) hierarchy.
    pub hierarchy_id: u32,
    /// Empty for v2; v1 named hierarchies read `name=systemd`.
    pub controllers: Vec<String>,
    /// Relative to the root of the hierarchy as this process's cgroup namespace sees it.
    pub path: String,
}

/// Parses `/proc/<pid>/cgroup`; malformed lines are skipped.
pub fn parse_cgroup_file(text: &str) -> Vec<CgroupLine> {
    text.lines().filter_map(parse_cgroup_line).collect()
}

/// What the kernel appends to the v2 path of a process whose cgroup was removed (a zombie's).
const DELETED_SUFFIX: &str = " (deleted)";

fn parse_cgroup_line(line: &str) -> Option<CgroupLine> {
    // The path may itself contain ':' (containerd's `slice:prefix:id` names), so only the first
    // two colons separate fields.
    let mut fields = line.splitn(3, ':');
    let hierarchy_id = fields.next()?.parse().ok()?;
    let controllers =
        fields.next()?.split(',').filter(|controller| !controller.is_empty()).map(str::to_owned).collect();
    let path = fields.next()?;
    if !path.starts_with('/') {
        return None;
    }
    // The cgroup it names is still the one the process was in, so the suffix is dropped.
    let path = path.strip_suffix(DELETED_SUFFIX).unwrap_or(path);
    Some(CgroupLine { hierarchy_id, controllers, path: path.to_owned() })
}

/// The parts of `/proc/<pid>/status` the agent uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    /// As the kernel prints it: `\n` and `\\` in the name are escaped.
    pub name: String,
    pub tgid: u32,
    pub ppid: u32,
    /// Real, effective, saved and filesystem uid.
    pub uid: [u32; 4],
    pub gid: [u32; 4],
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub no_new_privs: bool,
    /// 0 disabled, 1 strict, 2 filter.
    pub seccomp: u8,
    pub seccomp_filters: u32,
    /// The pid in each pid namespace, from that of the procfs mount down to the process's own.
    pub ns_pid: Vec<u32>,
}

/// Parses `/proc/<pid>/status`. Missing or malformed fields keep their default: beware that a
/// default uid or gid reads as root.
pub fn parse_status(text: &str) -> Status {
    let mut status = Status::default();
    for line in text.lines() {
        if let Some((key, value)) = line.split_once(':') {
            apply_status_field(&mut status, key, value);
        }
    }
    status
}

fn apply_status_field(status: &mut Status, key: &str, value: &str) {
    let trimmed = value.trim();
    match key {
        // Only the tab after the colon is the kernel's: the name may start or end with spaces.
        "Name" => status.name = value.strip_prefix('\t').unwrap_or(value).to_owned(),
        "Tgid" => set_parsed(&mut status.tgid, trimmed.parse().ok()),
        "PPid" => set_parsed(&mut status.ppid, trimmed.parse().ok()),
        "Uid" => set_parsed(&mut status.uid, four_ids(trimmed)),
        "Gid" => set_parsed(&mut status.gid, four_ids(trimmed)),
        "CapInh" => set_parsed(&mut status.cap_inh, hex_mask(trimmed)),
        "CapPrm" => set_parsed(&mut status.cap_prm, hex_mask(trimmed)),
        "CapEff" => set_parsed(&mut status.cap_eff, hex_mask(trimmed)),
        "CapBnd" => set_parsed(&mut status.cap_bnd, hex_mask(trimmed)),
        "CapAmb" => set_parsed(&mut status.cap_amb, hex_mask(trimmed)),
        "NoNewPrivs" => set_parsed(&mut status.no_new_privs, flag(trimmed)),
        "Seccomp" => set_parsed(&mut status.seccomp, trimmed.parse().ok()),
        "Seccomp_filters" => set_parsed(&mut status.seccomp_filters, trimmed.parse().ok()),
        "NSpid" => set_parsed(&mut status.ns_pid, id_list(trimmed)),
        _ => {}
    }
}

fn set_parsed<T>(field: &mut T, parsed: Option<T>) {
    if let Some(value) = parsed {
        *field = value;
    }
}

/// `Uid:`/`Gid:` lines: four ids, all or nothing, so that a damaged line cannot mix real ids with
/// defaults.
fn four_ids(text: &str) -> Option<[u32; 4]> {
    let mut ids = text.split_whitespace().map(|id| id.parse::<u32>().ok());
    Some([ids.next()??, ids.next()??, ids.next()??, ids.next()??])
}

fn id_list(text: &str) -> Option<Vec<u32>> {
    text.split_whitespace().map(|id| id.parse().ok()).collect()
}

/// Capability sets: 16 hex digits. `from_str_radix` alone would also take a sign.
fn hex_mask(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

fn flag(text: &str) -> Option<bool> {
    match text {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// Field 22 of `/proc/<pid>/stat`, the start time in clock ticks since boot.
///
/// Field 2 is the name in parentheses, and the name may itself hold spaces and `)`; fields after
/// it are numbers, so the last `)` ends it.
pub fn parse_stat_start_time(text: &str) -> Option<u64> {
    let (_, after_name) = text.rsplit_once(')')?;
    // The first field after the name is field 3.
    const START_TIME_AFTER_NAME: usize = 22 - 3;
    after_name.split_whitespace().nth(START_TIME_AFTER_NAME)?.parse().ok()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: tells this process from a later one with the same pid.
    pub start_time: u64,
    pub status: Status,
    pub cgroups: Vec<CgroupLine>,
    pub namespaces: Namespaces,
}

/// Reads one process from `proc_root` (normally `/proc`; tests point it at a fixture tree).
pub fn read_process(proc_root: &Path, pid: u32) -> Result<Process, ProcError> {
    let gone = || ProcError::Gone { path: proc_root.join(pid.to_string()) };
    // Every process is wanted: `None` does not come back.
    read_process_where(proc_root, pid, |_| true, |_| None)?.ok_or_else(gone)
}

/// `read_process` for a walk of `/proc`: `None` once the cgroup file is read when `wanted`
/// turns the process's cgroups down, and the namespaces that `known(start time)` returns instead
/// of reading their links.
///
/// Every file is read through the one directory opened for the pid, so they all describe one
/// process; but the links of a process that exits meanwhile read as missing rather than
/// failing, so when they are read the start time is read again after them, and a process that
/// went away fails as gone.
pub fn read_process_where(
    proc_root: &Path,
    pid: u32,
    wanted: impl FnOnce(&[CgroupLine]) -> bool,
    known: impl FnOnce(u64) -> Option<Namespaces>,
) -> Result<Option<Process>, ProcError> {
    let dir = PidDir::open(proc_root.join(pid.to_string()))?;
    let cgroups = parse_cgroup_file(&dir.read_text("cgroup")?);
    if !wanted(&cgroups) {
        return Ok(None);
    }
    let start_time = read_start_time(&dir)?;
    let status = parse_status(&dir.read_text("status")?);
    let namespaces = match known(start_time) {
        Some(namespaces) => namespaces,
        None => {
            let namespaces = read_namespaces(&dir)?;
            if read_start_time(&dir)? != start_time {
                return Err(ProcError::Gone { path: dir.path.join("stat") });
            }
            namespaces
        }
    };
    Ok(Some(Process { pid, start_time, status, cgroups, namespaces }))
}

/// The host's namespaces: those of pid 1 as seen from `proc_root`.
pub fn host_namespaces(proc_root: &Path) -> Result<Namespaces, ProcError> {
    let dir = proc_root.join("1");
    if !dir.is_dir() {
        // Without this, every link would read as "no such namespace" and the host would seem to
        // have none.
        return Err(ProcError::Gone { path: dir });
    }
    read_namespaces(&PidDir::open(dir)?)
}

/// The pids under `proc_root`, ascending; empty if it cannot be read.
pub fn list_pids(proc_root: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let name = name.to_str()?;
            if is_pid_name(name) { name.parse().ok() } else { None }
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Digits only: `str::parse` would also take `+1`.
fn is_pid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit())
}

/// Most of a `/proc/<pid>` file read: the ones read here are a few KiB.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// A process's directory under `/proc`, opened once. Each of its files is then a lookup of one
/// name (two for `ns/<kind>`) rather than a walk from `/`, and all of them are the files of the
/// process the directory was opened for: a later process with the same pid has another
/// directory, which this one never turns into.
struct PidDir {
    path: PathBuf,
    dir: Dir,
}

impl PidDir {
    fn open(path: PathBuf) -> Result<Self, ProcError> {
        match Dir::open(&path) {
            Ok(dir) => Ok(Self { path, dir }),
            Err(err) => Err(ProcError::from_io(&path, err)),
        }
    }

    fn read_text(&self, name: &str) -> Result<String, ProcError> {
        self.dir.read(name, MAX_FILE_BYTES).map_err(|err| ProcError::from_io(&self.path.join(name), err))
    }
}

fn read_start_time(dir: &PidDir) -> Result<u64, ProcError> {
    parse_stat_start_time(&dir.read_text("stat")?)
        .ok_or_else(|| ProcError::Malformed { path: dir.path.join("stat"), what: "no start time (field 22)" })
}

fn read_namespaces(dir: &PidDir) -> Result<Namespaces, ProcError> {
    let mut namespaces = Namespaces::default();
    for kind in NamespaceKind::ALL {
        namespaces.set(kind, read_namespace(dir, kind)?);
    }
    Ok(namespaces)
}

/// A namespace's inode from its link: the target reads `net:[4026531840]`. Should it read
/// otherwise, the inode of the nsfs file the link resolves to is the same number.
fn read_namespace(dir: &PidDir, kind: NamespaceKind) -> Result<Option<u64>, ProcError> {
    let link = format!("ns/{}", kind.name());
    let error = |errno: nix::errno::Errno| ProcError::from_io(&dir.path.join(&link), errno.into());
    let target = match nix::fcntl::readlinkat(&dir.dir, link.as_str()) {
        Ok(target) => target,
        // No link: this kernel lacks the kind, or the process is a zombie. A process that is gone
        // altogether is caught by the caller's start time check.
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(errno) => return Err(error(errno)),
    };
    let from_text = target
        .to_str()
        .and_then(parse_ns_link)
        .filter(|(name, _)| *name == kind.name())
        .map(|(_, inode)| inode);
    if let Some(inode) = from_text {
        return Ok(Some(inode));
    }
    nix::sys::stat::fstatat(&dir.dir, link.as_str(), AtFlags::empty())
        .map(|stat| Some(stat.st_ino))
        .map_err(error)
}

/// `net:[4026531840]` -> (`net`, 4026531840).
fn parse_ns_link(target: &str) -> Option<(&str, u64)> {
    let (name, rest) = target.split_once(":[")?;
    let digits = rest.strip_suffix(']')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((name, digits.parse().ok()?))
}

/// Processes keyed by pid. An entry is served while its pid still names the same process (same
/// start time), so each `get` costs one read of `/proc/<pid>/stat` instead of a dozen files.
///
/// What a process can change about itself without a new start time (its cgroup when moved, its
/// namespaces after `setns`/`unshare`, its name and credentials after `exec`) is as of the first
/// read: drop the entry with [`ProcessCache::invalidate`] when such an event is seen.
#[derive(Debug)]
pub struct ProcessCache {
    proc_root: PathBuf,
    capacity: usize,
    entries: HashMap<u32, CacheEntry>,
    /// Counts `get`s, to find the least recently used entry.
    tick: u64,
    evictions: u64,
}

#[derive(Debug)]
struct CacheEntry {
    process: Process,
    last_used: u64,
}

impl ProcessCache {
    /// A capacity of 0 is taken as 1: a `get` must have somewhere to keep what it returns.
    pub fn new(proc_root: PathBuf, capacity: usize) -> Self {
        Self { proc_root, capacity: capacity.max(1), entries: HashMap::new(), tick: 0, evictions: 0 }
    }

    /// The live process with this pid, read anew if the pid names another process than the cached
    /// one. `None` if it is gone or cannot be read ([`ProcessCache::try_get`] says why).
    pub fn get(&mut self, pid: u32) -> Option<&Process> {
        match self.try_get(pid) {
            Ok(process) => Some(process),
            Err(err) => {
                debug!(pid, %err, "process not cached");
                None
            }
        }
    }

    /// [`ProcessCache::get`], with the reason a process could not be read.
    pub fn try_get(&mut self, pid: u32) -> Result<&Process, ProcError> {
        self.tick += 1;
        let tick = self.tick;
        if !self.is_current(pid) {
            self.entries.remove(&pid);
            let process = read_process(&self.proc_root, pid)?;
            self.make_room();
            self.entries.insert(pid, CacheEntry { process, last_used: tick });
        }
        // Present: found current or inserted just above.
        let entry = self
            .entries
            .get_mut(&pid)
            .ok_or_else(|| ProcError::Gone { path: self.proc_root.join(pid.to_string()) })?;
        entry.last_used = tick;
        Ok(&entry.process)
    }

    /// Drops the entries of processes that are gone, including pids that now name another process.
    pub fn prune(&mut self) {
        let proc_root = &self.proc_root;
        self.entries.retain(|&pid, entry| {
            PidDir::open(proc_root.join(pid.to_string()))
                .and_then(|dir| read_start_time(&dir))
                .is_ok_and(|start_time| start_time == entry.process.start_time)
        });
    }

    /// Forgets a pid, so that the next `get` reads it anew (after an `exec`, a cgroup move, ...).
    pub fn invalidate(&mut self, pid: u32) {
        self.entries.remove(&pid);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many live entries were dropped to stay within capacity (not counting gone processes).
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    fn is_current(&self, pid: u32) -> bool {
        let Some(entry) = self.entries.get(&pid) else {
            return false;
        };
        PidDir::open(self.proc_root.join(pid.to_string()))
            .and_then(|dir| read_start_time(&dir))
            .is_ok_and(|start_time| start_time == entry.process.start_time)
    }

    /// Evicts least recently used entries until one more fits. A linear scan: it runs only when
    /// the cache is full, and keeps the entries small.
    fn make_room(&mut self) {
        while self.entries.len() >= self.capacity {
            let Some(oldest) =
                self.entries.iter().min_by_key(|(_, entry)| entry.last_used).map(|(&pid, _)| pid)
            else {
                return;
            };
            self.entries.remove(&oldest);
            self.evictions += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt as _, symlink};

    use proptest::prelude::*;

    use super::*;

    const STATUS: &str = "\
Name:\tkube-apiserver
Umask:\t0022
State:\tS (sleeping)
Tgid:\t4242
Ngid:\t0
Pid:\t4242
PPid:\t4100
TracerPid:\t0
Uid:\t1000\t1001\t1002\t1003
Gid:\t2000\t2001\t2002\t2003
FDSize:\t256
Groups:\t
NStgid:\t4242\t1
NSpid:\t4242\t1
NSpgid:\t4242\t1
NSsid:\t4242\t1
VmPeak:\t  1234 kB
Threads:\t12
CapInh:\t0000000000000000
CapPrm:\t00000000a80425fb
CapEff:\t00000000a80425fb
CapBnd:\t000001ffffffffff
CapAmb:\t0000000000000000
NoNewPrivs:\t1
Seccomp:\t2
Seccomp_filters:\t1
Speculation_Store_Bypass:\tthread vulnerable
Cpus_allowed_list:\t0-1
voluntary_ctxt_switches:\t10
";

    const HYBRID_CGROUP: &str = "\
12:hugetlb:/kubepods/burstable/pod2ca4a155-3599-498d-bb9d-4446693fa3ea/0ba8ac17e4e7a31fb82279503552fe94e64bab4745bf6fd2ff231e7c8ca8bed0
11:cpu,cpuacct:/kubepods/burstable/pod2ca4a155-3599-498d-bb9d-4446693fa3ea/0ba8ac17e4e7a31fb82279503552fe94e64bab4745bf6fd2ff231e7c8ca8bed0
4:memory:/process_api/ff47205cefb93217e72523a05e96b9a4
1:name=systemd:/kubepods/burstable/pod2ca4a155-3599-498d-bb9d-4446693fa3ea/0ba8ac17e4e7a31fb82279503552fe94e64bab4745bf6fd2ff231e7c8ca8bed0
0::/kubepods/burstable/pod2ca4a155-3599-498d-bb9d-4446693fa3ea/0ba8ac17e4e7a31fb82279503552fe94e64bab4745bf6fd2ff231e7c8ca8bed0
";

    fn stat_line(pid: u32, comm: &str, start_time: u64) -> String {
        format!(
            "{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 1000 0 0 0 10 5 0 0 20 0 1 0 {start_time} \
             3133440 413 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
        )
    }

    #[test]
    fn parses_status() {
        let status = parse_status(STATUS);
        assert_eq!(
            status,
            Status {
                name: "kube-apiserver".into(),
                tgid: 4242,
                ppid: 4100,
                uid: [1000, 1001, 1002, 1003],
                gid: [2000, 2001, 2002, 2003],
                cap_inh: 0,
                cap_prm: 0xa80425fb,
                cap_eff: 0xa80425fb,
                cap_bnd: 0x1ff_ffff_ffff,
                cap_amb: 0,
                no_new_privs: true,
                seccomp: 2,
                seccomp_filters: 1,
                ns_pid: vec![4242, 1],
            }
        );
    }

    #[test]
    fn status_names_keep_spaces_and_colons() {
        let status = parse_status("Name:\t a: b \nTgid:\t7\n");
        assert_eq!(status.name, " a: b ");
        assert_eq!(status.tgid, 7);
    }

    #[test]
    fn malformed_status_fields_default() {
        let status = parse_status(
            "Tgid:\t-1\nPPid:\tx\nUid:\t1 2 3\nGid:\t1 2 x 4\nCapEff:\t+1\nCapPrm:\tzz\n\
             NoNewPrivs:\t2\nSeccomp:\t300\nSeccomp_filters:\t\nNSpid:\t5 x\nno colon here\n",
        );
        assert_eq!(status, Status::default());
    }

    #[test]
    fn older_kernels_lack_some_status_fields() {
        // No Seccomp_filters (before 5.9), no NoNewPrivs (before 4.10), no CapAmb (before 4.3).
        let old = "Name:\tinit\nTgid:\t1\nPPid:\t0\nCapEff:\t0000003fffffffff\nSeccomp:\t0\n";
        let status = parse_status(old);
        assert_eq!(status.tgid, 1);
        assert_eq!(status.cap_eff, 0x3f_ffff_ffff);
        assert_eq!(status.seccomp_filters, 0);
        assert!(!status.no_new_privs);
        assert!(status.ns_pid.is_empty());
    }

    #[test]
    fn truncated_status_parses_what_is_there() {
        let full = parse_status(STATUS);
        for cut in 0..=STATUS.len() {
            let status = parse_status(&STATUS[..cut]);
            assert!("kube-apiserver".starts_with(&status.name));
        }
        // Cut after a line, the complete lines parse as in the whole file and the rest default.
        let through_uid = STATUS.find("Gid:").unwrap();
        let status = parse_status(&STATUS[..through_uid]);
        assert_eq!((status.tgid, status.ppid, status.uid), (full.tgid, full.ppid, full.uid));
        assert_eq!((status.gid, status.cap_eff, status.ns_pid), ([0; 4], 0, vec![]));
    }

    #[test]
    fn parses_hybrid_cgroup_file() {
        let lines = parse_cgroup_file(HYBRID_CGROUP);
        assert_eq!(lines.len(), 5);
        let cpu = &lines[1];
        assert_eq!(cpu.hierarchy_id, 11);
        assert_eq!(cpu.controllers, ["cpu", "cpuacct"]);
        assert_eq!(lines[3].controllers, ["name=systemd"]);
        let unified = lines.iter().find(|line| line.hierarchy_id == 0).unwrap();
        assert!(unified.controllers.is_empty());
        assert!(unified.path.starts_with("/kubepods/burstable/pod2ca4a155"));
    }

    #[test]
    fn cgroup_paths_may_hold_colons_and_a_deleted_mark() {
        let text = "\
0::/system.slice/containerd.service/kubepods-pod1_2.slice:cri-containerd:abc
0::/kubepods/pod1/gone (deleted)
";
        let lines = parse_cgroup_file(text);
        assert_eq!(
            lines[0].path,
            "/system.slice/containerd.service/kubepods-pod1_2.slice:cri-containerd:abc"
        );
        assert_eq!(lines[1].path, "/kubepods/pod1/gone");
    }

    #[test]
    fn malformed_cgroup_lines_are_skipped() {
        let text = "\n0::\nx::/a\n-1::/a\n3:cpu\n3:cpu:relative\n0::/ok\n4294967296::/too-big\n";
        assert_eq!(
            parse_cgroup_file(text),
            [CgroupLine { hierarchy_id: 0, controllers: vec![], path: "/ok".into() }]
        );
        for cut in 0..=HYBRID_CGROUP.len() {
            for line in parse_cgroup_file(&HYBRID_CGROUP[..cut]) {
                assert!(line.path.starts_with('/'));
            }
        }
    }

    #[test]
    fn start_time_survives_hostile_names() {
        for comm in ["bash", "a b", "(a) b)", ")", "((", ") S 1 2 3 4 5", "", "x\ny"] {
            let stat = stat_line(77, comm, 281175);
            assert_eq!(parse_stat_start_time(&stat), Some(281175), "comm {comm:?}");
        }
    }

    #[test]
    fn start_time_of_damaged_stat() {
        assert_eq!(parse_stat_start_time(""), None);
        assert_eq!(parse_stat_start_time("1 (a"), None);
        assert_eq!(parse_stat_start_time("1 (a) S 1 2 3"), None);
        assert_eq!(parse_stat_start_time(&stat_line(1, "a", 5).replace(" 5 ", " -5 ")), None);
        let full = stat_line(1, "init", 99);
        for cut in 0..full.len() {
            let parsed = parse_stat_start_time(&full[..cut]);
            // Cut inside the number, the prefix parses as a smaller number: still no panic.
            assert!(parsed.is_none() || parsed == Some(9) || parsed == Some(99));
        }
    }

    #[test]
    fn parses_namespace_links() {
        assert_eq!(parse_ns_link("net:[4026531840]"), Some(("net", 4026531840)));
        assert_eq!(parse_ns_link("pid_for_children:[1]"), Some(("pid_for_children", 1)));
        for bad in ["net:[]", "net:[12", "net:4026531840", "net:[-1]", "net:[+1]", "[1]", ""] {
            assert_eq!(parse_ns_link(bad), None, "{bad}");
        }
        assert_eq!(parse_ns_link("net:[99999999999999999999]"), None);
    }

    #[test]
    fn namespaces_compare_by_kind() {
        let mut a = Namespaces::default();
        let mut b = Namespaces::default();
        for (index, kind) in NamespaceKind::ALL.into_iter().enumerate() {
            a.set(kind, Some(100 + index as u64));
            b.set(kind, Some(100 + index as u64));
        }
        b.set(NamespaceKind::Net, Some(7));
        a.set(NamespaceKind::Time, None);
        b.set(NamespaceKind::Time, None);
        assert_eq!(a.get(NamespaceKind::Mnt), Some(102));
        assert_eq!(
            a.shared_with(&b),
            [
                NamespaceKind::Cgroup,
                NamespaceKind::Ipc,
                NamespaceKind::Mnt,
                NamespaceKind::Pid,
                NamespaceKind::User,
                NamespaceKind::Uts,
            ]
        );
        assert_eq!(a.shared_with(&b), b.shared_with(&a));
        assert!(Namespaces::default().shared_with(&Namespaces::default()).is_empty());
    }

    /// A `/proc/<pid>` directory: stat, status, cgroup and `ns/` links whose targets are the
    /// `kind:[inode]` text (dangling, as the real ones are outside nsfs).
    struct FakeProc {
        root: tempfile::TempDir,
    }

    impl FakeProc {
        fn new() -> Self {
            Self { root: tempfile::tempdir().unwrap() }
        }

        fn path(&self) -> &Path {
            self.root.path()
        }

        fn add(&self, pid: u32, name: &str, start_time: u64, net: u64) {
            let dir = self.path().join(pid.to_string());
            std::fs::create_dir_all(dir.join("ns")).unwrap();
            std::fs::write(dir.join("stat"), stat_line(pid, name, start_time)).unwrap();
            std::fs::write(
                dir.join("status"),
                format!("Name:\t{name}\nTgid:\t{pid}\nPPid:\t1\nNSpid:\t{pid}\n"),
            )
            .unwrap();
            std::fs::write(dir.join("cgroup"), "0::/system.slice/sshd.service\n").unwrap();
            for kind in NamespaceKind::ALL {
                // Time namespaces left out, as on a kernel before 5.6.
                if kind == NamespaceKind::Time {
                    continue;
                }
                let inode = if kind == NamespaceKind::Net { net } else { 4026531830 + kind as u64 };
                let link = dir.join("ns").join(kind.name());
                let _ = std::fs::remove_file(&link);
                symlink(format!("{}:[{inode}]", kind.name()), link).unwrap();
            }
        }

        fn set_start_time(&self, pid: u32, name: &str, start_time: u64) {
            let dir = self.path().join(pid.to_string());
            std::fs::write(dir.join("stat"), stat_line(pid, name, start_time)).unwrap();
            std::fs::write(dir.join("status"), format!("Name:\t{name}\nTgid:\t{pid}\n")).unwrap();
        }

        fn remove(&self, pid: u32) {
            std::fs::remove_dir_all(self.path().join(pid.to_string())).unwrap();
        }
    }

    #[test]
    fn reads_a_fixture_process() {
        let proc = FakeProc::new();
        proc.add(1, "systemd", 10, 4026531840);
        proc.add(300, "(a) b)", 5000, 4026532000);
        std::fs::create_dir(proc.path().join("self")).unwrap();
        std::fs::create_dir(proc.path().join("+5")).unwrap();
        assert_eq!(list_pids(proc.path()), [1, 300]);

        let process = read_process(proc.path(), 300).unwrap();
        assert_eq!(process.pid, 300);
        assert_eq!(process.start_time, 5000);
        assert_eq!(process.status.name, "(a) b)");
        assert_eq!(process.status.tgid, 300);
        assert_eq!(process.cgroups[0].path, "/system.slice/sshd.service");
        assert_eq!(process.namespaces.net, Some(4026532000));
        assert_eq!(process.namespaces.time, None);
        assert_eq!(process.namespaces.mnt, Some(4026531830 + NamespaceKind::Mnt as u64));

        let host = host_namespaces(proc.path()).unwrap();
        assert_eq!(host.net, Some(4026531840));
        assert!(!process.namespaces.shared_with(&host).contains(&NamespaceKind::Net));
        assert!(process.namespaces.shared_with(&host).contains(&NamespaceKind::Pid));
    }

    #[test]
    fn a_walk_reads_only_the_cgroup_of_unwanted_processes_and_takes_known_namespaces() {
        let proc = FakeProc::new();
        proc.add(300, "app", 5000, 4026532000);
        // Its links removed: namespaces that come back below were given, not read.
        std::fs::remove_dir_all(proc.path().join("300/ns")).unwrap();
        let unwanted = read_process_where(proc.path(), 300, |_| false, |_| panic!("not asked"));
        assert_eq!(unwanted.unwrap(), None);

        let known = Namespaces { net: Some(7), ..Namespaces::default() };
        let mut asked = None;
        let wanted = |cgroups: &[CgroupLine]| cgroups[0].path == "/system.slice/sshd.service";
        let process = read_process_where(proc.path(), 300, wanted, |start_time| {
            asked = Some(start_time);
            Some(known)
        });
        let process = process.unwrap().unwrap();
        assert_eq!(asked, Some(5000), "asked by the start time it read");
        assert_eq!((process.namespaces, process.status.name.as_str()), (known, "app"));

        // Not known: the links are read, and their absence (a zombie's) is no namespace.
        let read = read_process_where(proc.path(), 300, |_| true, |_| None).unwrap().unwrap();
        assert_eq!(read.namespaces, Namespaces::default());
    }

    #[test]
    fn read_errors_say_what_and_why() {
        let proc = FakeProc::new();
        let gone = read_process(proc.path(), 123).unwrap_err();
        assert!(matches!(gone, ProcError::Gone { .. }));
        assert_eq!(
            gone.to_string(),
            // The process's directory is opened before any of its files.
            format!("cannot read {}/123: process is gone", proc.path().display())
        );
        assert!(matches!(host_namespaces(proc.path()), Err(ProcError::Gone { .. })));

        proc.add(5, "x", 1, 1);
        std::fs::write(proc.path().join("5/stat"), "5 (x) S 1").unwrap();
        let malformed = read_process(proc.path(), 5).unwrap_err();
        assert!(matches!(malformed, ProcError::Malformed { .. }), "{malformed}");
        assert!(malformed.to_string().contains("start time"));

        // A file missing from a live process's directory is not the process being gone.
        proc.add(6, "y", 1, 1);
        std::fs::remove_file(proc.path().join("6/cgroup")).unwrap();
        let missing = read_process(proc.path(), 6).unwrap_err();
        assert!(matches!(missing, ProcError::Io { .. }), "{missing}");
        assert!(missing.to_string().contains("6/cgroup"));

        // A link that does not read `kind:[inode]` falls back to the inode it resolves to.
        proc.add(8, "z", 1, 1);
        let net = proc.path().join("8/ns/net");
        std::fs::remove_file(&net).unwrap();
        symlink("../stat", &net).unwrap();
        let stat_inode = std::fs::metadata(proc.path().join("8/stat")).unwrap().ino();
        assert_eq!(read_process(proc.path(), 8).unwrap().namespaces.net, Some(stat_inode));
        std::fs::remove_file(&net).unwrap();
        symlink("mnt:[5]", &net).unwrap();
        assert!(matches!(read_process(proc.path(), 8), Err(ProcError::Io { .. })));
    }

    #[test]
    fn permission_errors_are_their_own() {
        // Root reads anything, so the mapping is checked on the errors themselves.
        let path = Path::new("/proc/1/ns/net");
        let denied = ProcError::from_io(path, io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(matches!(denied, ProcError::PermissionDenied { .. }));
        assert!(denied.to_string().starts_with("cannot read /proc/1/ns/net: permission denied"));
        let esrch = ProcError::from_io(path, io::Error::from_raw_os_error(libc::ESRCH));
        assert!(matches!(esrch, ProcError::Gone { .. }));
        let other = ProcError::from_io(path, io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(other, ProcError::Io { .. }));
    }

    #[test]
    fn cache_serves_until_the_pid_changes_hands() {
        let proc = FakeProc::new();
        proc.add(100, "first", 1000, 1);
        let mut cache = ProcessCache::new(proc.path().to_owned(), 10);
        assert!(cache.is_empty());
        assert_eq!(cache.get(100).unwrap().status.name, "first");

        // Same start time: the cached entry is served, not the changed file.
        std::fs::write(proc.path().join("100/status"), "Name:\tchanged\n").unwrap();
        assert_eq!(cache.get(100).unwrap().status.name, "first");
        cache.invalidate(100);
        assert_eq!(cache.get(100).unwrap().status.name, "changed");

        // The pid now names another process: read anew.
        proc.set_start_time(100, "second", 2000);
        let process = cache.get(100).unwrap();
        assert_eq!((process.status.name.as_str(), process.start_time), ("second", 2000));
        assert_eq!(cache.len(), 1);

        // Gone: nothing served, and the entry is dropped.
        proc.remove(100);
        assert!(cache.get(100).is_none());
        assert!(matches!(cache.try_get(100), Err(ProcError::Gone { .. })));
        assert!(cache.is_empty());
        assert_eq!(cache.evictions(), 0);
    }

    #[test]
    fn cache_prunes_gone_and_reused_pids() {
        let proc = FakeProc::new();
        for pid in [10, 11, 12] {
            proc.add(pid, "p", 1, 1);
        }
        let mut cache = ProcessCache::new(proc.path().to_owned(), 10);
        for pid in [10, 11, 12] {
            assert!(cache.get(pid).is_some());
        }
        proc.remove(10);
        proc.set_start_time(11, "reused", 2);
        cache.prune();
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(12).unwrap().pid, 12);
        assert_eq!(cache.evictions(), 0);
    }

    #[test]
    fn cache_evicts_the_least_recently_used() {
        let proc = FakeProc::new();
        for pid in 1..=4 {
            proc.add(pid, &format!("p{pid}"), 1, 1);
        }
        let mut cache = ProcessCache::new(proc.path().to_owned(), 2);
        cache.get(1).unwrap();
        cache.get(2).unwrap();
        cache.get(1).unwrap();
        cache.get(3).unwrap();
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.evictions(), 1);
        // 2 was the least recently used: 1 and 3 are still served from the cache.
        std::fs::write(proc.path().join("1/status"), "Name:\tstale\n").unwrap();
        assert_eq!(cache.get(1).unwrap().status.name, "p1");
        assert_eq!(cache.evictions(), 1);
        cache.get(2).unwrap();
        assert_eq!(cache.evictions(), 2);

        let mut tiny = ProcessCache::new(proc.path().to_owned(), 0);
        assert!(tiny.get(4).is_some());
        assert!(tiny.get(3).is_some());
        assert_eq!((tiny.len(), tiny.evictions()), (1, 1));
    }

    #[test]
    fn reads_this_process_from_the_real_procfs() {
        let proc_root = Path::new("/proc");
        let pid = std::process::id();
        let process = read_process(proc_root, pid).unwrap();
        assert_eq!(process.status.tgid, pid);
        // NSpid starts in the pid namespace of the procfs mount, which is this test's.
        assert_eq!(process.status.ns_pid.first(), Some(&pid));
        assert!(!process.status.name.is_empty());
        // The start time is in clock ticks since boot: no later than now, no earlier than pid 1.
        // SAFETY: sysconf reads a constant and touches no memory of ours.
        let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let uptime: f64 = std::fs::read_to_string("/proc/uptime")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(process.start_time as f64 / ticks_per_second <= uptime + 1.0);
        if let Ok(init) = read_process(proc_root, 1) {
            assert!(init.start_time <= process.start_time);
        }
        assert!(process.cgroups.iter().all(|line| line.path.starts_with('/')));
        assert!(!process.cgroups.is_empty());
        assert!(list_pids(proc_root).contains(&pid));

        // Every kind this kernel has shows an inode, and it is the one stat reports.
        for kind in NamespaceKind::ALL {
            let link = proc_root.join(pid.to_string()).join("ns").join(kind.name());
            match std::fs::metadata(&link) {
                Ok(meta) => assert_eq!(process.namespaces.get(kind), Some(meta.ino()), "{kind:?}"),
                Err(_) => assert_eq!(process.namespaces.get(kind), None, "{kind:?}"),
            }
        }

        // Whether this test runs in the host's namespaces or not, sharing is consistent.
        if let Ok(host) = host_namespaces(proc_root) {
            for kind in NamespaceKind::ALL {
                let same = host.get(kind).is_some() && host.get(kind) == process.namespaces.get(kind);
                assert_eq!(process.namespaces.shared_with(&host).contains(&kind), same);
            }
        }

        let mut cache = ProcessCache::new(proc_root.to_owned(), 4);
        assert_eq!(cache.get(pid).map(|p| p.start_time), Some(process.start_time));
    }

    proptest! {
        #[test]
        fn no_text_panics_the_parsers(text in any::<String>()) {
            let _ = parse_status(&text);
            let _ = parse_cgroup_file(&text);
            let _ = parse_stat_start_time(&text);
            let _ = parse_ns_link(&text);
        }

        #[test]
        fn no_near_miss_panics_the_parsers(
            lines in prop::collection::vec(
                prop_oneof![
                    "(Name|Tgid|PPid|Uid|Gid|CapEff|CapBnd|NoNewPrivs|Seccomp|Seccomp_filters|NSpid):[\t 0-9a-fx-]{0,40}",
                    "[0-9]{1,11}:[a-z,=]{0,20}:[/a-z0-9:() -]{0,40}",
                    "[0-9]{1,6} \\([^\n]{0,20}\\)( [0-9-]{1,20}){0,25}",
                ],
                0..20,
            )
        ) {
            let text = lines.join("\n");
            let _ = parse_status(&text);
            for line in parse_cgroup_file(&text) {
                prop_assert!(line.path.starts_with('/'));
            }
            let _ = parse_stat_start_time(&text);
        }
    }
}
