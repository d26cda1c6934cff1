//! A workload's resource usage and limits, read from cgroupfs (v2 and v1).
//!
//! Everything here is best effort: a file that is missing (controller not enabled, older
//! kernel, PSI disabled) leaves its field empty, and a malformed value is skipped, because the
//! files are read from hierarchies that a container runtime, not kernsight, controls.

use std::{
    collections::BTreeMap,
    path::{Component, Path, PathBuf},
};

use super::{mountinfo::Mount, small_file::Dir};

/// v1 memory and pids limits at or above this are "unlimited": the kernel reports
/// `PAGE_COUNTER_MAX` pages in bytes (2^63 - page size with 4 KiB pages, less with larger
/// pages), and no real limit comes anywhere near 2^62 bytes.
pub const V1_UNLIMITED: u64 = 1 << 62;

/// cgroup files are a few KiB; a larger one is not a cgroup file and is not worth reading.
const MAX_FILE_SIZE: u64 = 1 << 20;

/// Where a workload's cgroup lives: v2 (one dir with all controllers) or v1 (a dir per
/// controller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupDirs {
    V2(PathBuf),
    V1 {
        memory: Option<PathBuf>,
        cpu: Option<PathBuf>,
        cpuacct: Option<PathBuf>,
        pids: Option<PathBuf>,
        blkio: Option<PathBuf>,
    },
}

impl CgroupDirs {
    /// From a cgroup path (as in `/proc/<pid>/cgroup`, relative to each hierarchy's root) and
    /// the host's mounts. v2 is preferred when its hierarchy has the memory controller for that
    /// cgroup; hybrid hosts mount a controller-less v2 hierarchy beside the v1 controllers, and
    /// that one only has PSI, so they get v1.
    pub fn locate(mounts: &[Mount], path: &str) -> Self {
        if let Some(mount) = super::cgroupfs::unified_mount(mounts)
            .and_then(|point| mounts.iter().find(|m| m.fs_type == "cgroup2" && m.mount_point == point))
            && let Some(dir) = join(mount, path)
        {
            // The cgroup's own list says what its parent delegated to it; the root's list is the
            // fallback for a cgroup that is gone (or not yet there).
            let controllers = read_text(&dir.join("cgroup.controllers"))
                .or_else(|| read_text(&mount.mount_point.join("cgroup.controllers")))
                .unwrap_or_default();
            if controllers.split_whitespace().any(|c| c == "memory") {
                return Self::V2(dir);
            }
        }
        let v1 = |controller: &str| {
            mounts
                .iter()
                .find(|m| m.fs_type == "cgroup" && m.super_options.split(',').any(|o| o == controller))
                .and_then(|mount| join(mount, path))
        };
        Self::V1 {
            memory: v1("memory"),
            cpu: v1("cpu"),
            cpuacct: v1("cpuacct"),
            pids: v1("pids"),
            blkio: v1("blkio"),
        }
    }
}

/// The directory of cgroup `path` in the hierarchy mounted by `mount`. A mount of a subtree
/// (inside a cgroup namespace, or a bind mount) has that subtree as its root; paths that climb
/// out of the hierarchy (`..`, as `/proc/<pid>/cgroup` shows for cgroups outside one's
/// namespace) have no directory here.
fn join(mount: &Mount, path: &str) -> Option<PathBuf> {
    let root = mount.root.trim_end_matches('/');
    let relative = match path.strip_prefix(root) {
        Some(rest) if !root.is_empty() && (rest.is_empty() || rest.starts_with('/')) => rest,
        _ => path,
    };
    let relative = Path::new(relative.trim_start_matches('/'));
    if relative.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(mount.mount_point.join(relative))
}

/// A workload's resource usage and limits. Sizes are bytes, times seconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    pub memory_current: Option<u64>,
    /// `None` = unlimited ("max", or v1's huge `PAGE_COUNTER_MAX` value), or unknown.
    pub memory_max: Option<u64>,
    /// v2 only: v1's soft limit means something else (reclaim under global pressure only).
    pub memory_high: Option<u64>,
    /// Bytes by kind: anon, file, kernel, shmem, slab, sock (v2); anon, file, shmem,
    /// mapped_file (v1).
    pub memory_by_kind: BTreeMap<&'static str, u64>,
    /// Memory reclaim cannot free while swap is off: the anon LRU lists (anonymous memory and
    /// shmem/tmpfs), the unevictable list (mlocked, ramfs) and, on v2, the kernel memory that is
    /// not reclaimable (unreclaimable slab, kernel stacks, page tables, percpu, vmalloc, socket
    /// buffers); v1's `memory.stat` has no kernel memory. The parts are disjoint: see
    /// `V2_UNRECLAIMABLE_PARTS`.
    pub memory_unreclaimable: Option<u64>,
    /// v2 `memory.events` (low, high, max, oom, oom_kill, oom_group_kill); v1 oom_kill and
    /// under_oom from `memory.oom_control`.
    pub memory_events: BTreeMap<&'static str, u64>,
    pub cpu_usage_seconds: Option<f64>,
    /// `None` = no quota, or unknown.
    pub cpu_quota_seconds: Option<f64>,
    pub cpu_period_seconds: Option<f64>,
    pub cpu_periods: Option<u64>,
    pub cpu_throttled_periods: Option<u64>,
    pub cpu_throttled_seconds: Option<f64>,
    /// Periods in which the container used burst (`cpu.max.burst`, v1 `cpu.cfs_burst_us`) beyond
    /// its quota: cpu.stat `nr_bursts` (5.14+); `None` on kernels without burst.
    pub cpu_bursts: Option<u64>,
    /// CPU time used beyond the quota out of the burst allowance: v2 `burst_usec`, v1
    /// `burst_time` (ns).
    pub cpu_burst_seconds: Option<f64>,
    pub pids_current: Option<u64>,
    /// `None` = unlimited, or unknown.
    pub pids_max: Option<u64>,
    /// Total stall time in seconds by (resource: cpu|memory|io, some|full); v2 only.
    pub pressure: BTreeMap<(&'static str, &'static str), f64>,
    /// Block I/O by device (major, minor): v2 `io.stat`, v1 `blkio.throttle.io_service*`.
    pub io: BTreeMap<(u32, u32), IoCounts>,
}

impl Resources {
    /// What the kernel can still free under the memory limit before the OOM killer: the limit
    /// minus the unreclaimable memory (0 when that fills it); `None` without a limit.
    pub fn memory_headroom(&self) -> Option<u64> {
        self.memory_max.zip(self.memory_unreclaimable).map(|(limit, used)| limit.saturating_sub(used))
    }
}

/// Block I/O of a cgroup on one device, as the kernel's blk-cgroup counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounts {
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_operations: u64,
    pub write_operations: u64,
}

/// What a cgroup may use: written when its container starts or is resized, so a scrape reads
/// them less often than the usage (`metrics::resources`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub memory_max: Option<u64>,
    pub memory_high: Option<u64>,
    pub cpu_quota_seconds: Option<f64>,
    pub cpu_period_seconds: Option<f64>,
    pub pids_max: Option<u64>,
}

impl Resources {
    /// Sets the limit fields from `limits`.
    pub fn set_limits(&mut self, limits: Limits) {
        let Limits { memory_max, memory_high, cpu_quota_seconds, cpu_period_seconds, pids_max } = limits;
        (self.memory_max, self.memory_high, self.pids_max) = (memory_max, memory_high, pids_max);
        (self.cpu_quota_seconds, self.cpu_period_seconds) = (cpu_quota_seconds, cpu_period_seconds);
    }
}

/// Devices read from one cgroup's I/O files: a node has few; past this the rest are dropped.
pub const MAX_IO_DEVICES: usize = 64;

/// v2 `memory.stat` keys reported as they are.
const V2_MEMORY_KINDS: [&str; 6] = ["anon", "file", "kernel", "shmem", "slab", "sock"];
/// What v2 kernels before 5.18 (no "kernel" key) count as kernel memory.
const V2_KERNEL_PARTS: [&str; 5] = ["kernel_stack", "pagetables", "sec_pagetables", "percpu", "slab"];
/// v1 `memory.stat` keys and the kinds they are reported as.
const V1_MEMORY_KINDS: [(&str, &str); 4] =
    [("rss", "anon"), ("cache", "file"), ("shmem", "shmem"), ("mapped_file", "mapped_file")];
/// v2 `memory.stat` keys whose sum is `memory_unreclaimable`: the LRU lists reclaim cannot
/// shrink without swap (each page is on one list: anon's hold shmem too) and kernel memory that
/// is on no LRU and not reclaimable. Keys a kernel lacks (`sec_pagetables` before 6.2,
/// `vmalloc` before 6.0) count as zero.
pub const V2_UNRECLAIMABLE_PARTS: [&str; 10] = [
    "active_anon",
    "inactive_anon",
    "unevictable",
    "slab_unreclaimable",
    "kernel_stack",
    "pagetables",
    "sec_pagetables",
    "percpu",
    "vmalloc",
    "sock",
];
/// The same for v1 (`total_` variants, which include descendants as v2's do, else the plain
/// keys): the anon and unevictable LRU lists.
pub const V1_UNRECLAIMABLE_PARTS: [&str; 3] = ["active_anon", "inactive_anon", "unevictable"];
const V2_MEMORY_EVENTS: [&str; 6] = ["low", "high", "max", "oom", "oom_kill", "oom_group_kill"];
const V1_MEMORY_EVENTS: [&str; 2] = ["oom_kill", "under_oom"];
const PRESSURE_RESOURCES: [&str; 3] = ["cpu", "memory", "io"];

// Divided by, not multiplied with their inverses: division is correctly rounded, so 100000 us
// is exactly the f64 nearest 0.1 s.
const USEC_PER_SEC: f64 = 1e6;
/// The cgroup's OOM kill count alone (`oom_kill` of v2 `memory.events`, v1
/// `memory.oom_control`): what a scrape of many cgroups needs, without the other files `read`
/// opens. `None` without a memory controller or the key (v1 before 4.13).
pub fn read_oom_kills(dirs: &CgroupDirs) -> Option<u64> {
    let text = match dirs {
        CgroupDirs::V2(dir) => read_text(&dir.join("memory.events"))?,
        CgroupDirs::V1 { memory, .. } => read_text(&memory.as_ref()?.join("memory.oom_control"))?,
    };
    parse_flat_keyed(&text).get("oom_kill").copied()
}

const NSEC_PER_SEC: f64 = 1e9;

/// Reads what the cgroup's files say, usage and limits; missing files leave fields empty, never
/// an error.
pub fn read(dirs: &CgroupDirs) -> Resources {
    let mut r = read_usage(dirs);
    r.set_limits(read_limits(dirs));
    r
}

/// `read` without the limit files: the limit fields stay empty.
pub fn read_usage(dirs: &CgroupDirs) -> Resources {
    match dirs {
        CgroupDirs::V2(dir) => read_v2(dir),
        CgroupDirs::V1 { memory, cpu, cpuacct, pids, blkio } => {
            let mut r = read_v1(memory.as_deref(), cpu.as_deref(), cpuacct.as_deref(), pids.as_deref());
            r.io = blkio.as_deref().map(read_blkio).unwrap_or_default();
            r
        }
    }
}

/// The limit files alone.
pub fn read_limits(dirs: &CgroupDirs) -> Limits {
    match dirs {
        CgroupDirs::V2(dir) => {
            let dir = open_dir(Some(dir));
            let file = |name: &str| read_in(&dir, name);
            let cpu = file("cpu.max").and_then(|t| parse_cpu_max(&t));
            Limits {
                memory_max: file("memory.max").and_then(|t| parse_max(&t)).flatten(),
                memory_high: file("memory.high").and_then(|t| parse_max(&t)).flatten(),
                pids_max: file("pids.max").and_then(|t| parse_max(&t)).flatten(),
                cpu_quota_seconds: cpu.and_then(|(quota, _)| quota).map(|q| q as f64 / USEC_PER_SEC),
                cpu_period_seconds: cpu.map(|(_, period)| period as f64 / USEC_PER_SEC),
            }
        }
        CgroupDirs::V1 { memory, cpu, pids, .. } => {
            let (memory, cpu, pids) =
                (open_dir(memory.as_deref()), open_dir(cpu.as_deref()), open_dir(pids.as_deref()));
            let period = read_in(&cpu, "cpu.cfs_period_us").and_then(|t| parse_u64(&t));
            Limits {
                memory_max: read_in(&memory, "memory.limit_in_bytes")
                    .and_then(|t| parse_v1_limit(&t))
                    .flatten(),
                // v1's soft limit means something else (reclaim under global pressure only).
                memory_high: None,
                pids_max: read_in(&pids, "pids.max").and_then(|t| parse_max(&t)).flatten(),
                // -1 is "no quota"; any other negative value is not something the kernel writes.
                cpu_quota_seconds: read_in(&cpu, "cpu.cfs_quota_us")
                    .and_then(|t| t.trim().parse::<i64>().ok())
                    .and_then(|q| u64::try_from(q).ok())
                    .map(|q| q as f64 / USEC_PER_SEC),
                cpu_period_seconds: period.map(|p| p as f64 / USEC_PER_SEC),
            }
        }
    }
}

fn read_v2(dir: &Path) -> Resources {
    let dir = open_dir(Some(dir));
    let file = |name: &str| read_in(&dir, name);
    let mut r = Resources {
        memory_current: file("memory.current").and_then(|t| parse_u64(&t)),
        pids_current: file("pids.current").and_then(|t| parse_u64(&t)),
        ..Resources::default()
    };

    if let Some(stat) = file("memory.stat").map(|t| parse_flat_keyed(&t)) {
        for kind in V2_MEMORY_KINDS {
            if let Some(&bytes) = stat.get(kind) {
                r.memory_by_kind.insert(kind, bytes);
            }
        }
        r.memory_unreclaimable = sum_present(V2_UNRECLAIMABLE_PARTS.iter().map(|k| stat.get(*k)));
        if !stat.contains_key("kernel") {
            let parts: Vec<u64> = V2_KERNEL_PARTS.iter().filter_map(|k| stat.get(*k).copied()).collect();
            if !parts.is_empty() {
                r.memory_by_kind.insert("kernel", parts.iter().fold(0u64, |a, b| a.saturating_add(*b)));
            }
        }
    }
    if let Some(events) = file("memory.events").map(|t| parse_flat_keyed(&t)) {
        r.memory_events = pick(&events, &V2_MEMORY_EVENTS);
    }

    if let Some(stat) = file("cpu.stat").map(|t| parse_flat_keyed(&t)) {
        r.cpu_usage_seconds = stat.get("usage_usec").map(|&v| v as f64 / USEC_PER_SEC);
        r.cpu_periods = stat.get("nr_periods").copied();
        r.cpu_throttled_periods = stat.get("nr_throttled").copied();
        r.cpu_throttled_seconds = stat.get("throttled_usec").map(|&v| v as f64 / USEC_PER_SEC);
        r.cpu_bursts = stat.get("nr_bursts").copied();
        r.cpu_burst_seconds = stat.get("burst_usec").map(|&v| v as f64 / USEC_PER_SEC);
    }

    r.io = file("io.stat").map(|t| parse_io_stat(&t)).unwrap_or_default();
    for resource in PRESSURE_RESOURCES {
        let Some(text) = file(&format!("{resource}.pressure")) else { continue };
        for (kind, total_usec) in parse_pressure(&text) {
            r.pressure.insert((resource, kind), total_usec as f64 / USEC_PER_SEC);
        }
    }
    r
}

fn read_v1(
    memory: Option<&Path>,
    cpu: Option<&Path>,
    cpuacct: Option<&Path>,
    pids: Option<&Path>,
) -> Resources {
    let (memory, cpu_dir, pids) = (open_dir(memory), open_dir(cpu), open_dir(pids));
    // cpu and cpuacct are one hierarchy where they are mounted together (the usual layout): one
    // directory to open, not two.
    let cpuacct_own = if cpuacct == cpu { None } else { open_dir(cpuacct) };
    let (cpu, cpuacct) = (&cpu_dir, if cpuacct == cpu { &cpu_dir } else { &cpuacct_own });
    let mut r = Resources {
        memory_current: read_in(&memory, "memory.usage_in_bytes").and_then(|t| parse_u64(&t)),
        pids_current: read_in(&pids, "pids.current").and_then(|t| parse_u64(&t)),
        cpu_usage_seconds: read_in(cpuacct, "cpuacct.usage")
            .and_then(|t| parse_u64(&t))
            .map(|ns| ns as f64 / NSEC_PER_SEC),
        ..Resources::default()
    };

    if let Some(stat) = read_in(&memory, "memory.stat").map(|t| parse_flat_keyed(&t)) {
        for (key, kind) in V1_MEMORY_KINDS {
            // The total_* variants include descendant cgroups, as v2's memory.stat does.
            if let Some(&bytes) = stat.get(&format!("total_{key}")).or_else(|| stat.get(key)) {
                r.memory_by_kind.insert(kind, bytes);
            }
        }
        let part = |key: &str| stat.get(&format!("total_{key}")).or_else(|| stat.get(key));
        r.memory_unreclaimable = sum_present(V1_UNRECLAIMABLE_PARTS.iter().map(|k| part(k)));
    }
    if let Some(control) = read_in(&memory, "memory.oom_control").map(|t| parse_flat_keyed(&t)) {
        r.memory_events = pick(&control, &V1_MEMORY_EVENTS);
    }

    if let Some(stat) = read_in(cpu, "cpu.stat").map(|t| parse_flat_keyed(&t)) {
        r.cpu_periods = stat.get("nr_periods").copied();
        r.cpu_throttled_periods = stat.get("nr_throttled").copied();
        r.cpu_throttled_seconds = stat.get("throttled_time").map(|&v| v as f64 / NSEC_PER_SEC);
        r.cpu_bursts = stat.get("nr_bursts").copied();
        r.cpu_burst_seconds = stat.get("burst_time").map(|&v| v as f64 / NSEC_PER_SEC);
    }
    r
}

/// v1 blkio's counts: the `_recursive` files (which include descendants, as v2's io.stat
/// does) where the kernel has them, else the cgroup's own.
fn read_blkio(dir: &Path) -> BTreeMap<(u32, u32), IoCounts> {
    let dir = open_dir(Some(dir));
    let file = |name: &str| read_in(&dir, &format!("{name}_recursive")).or_else(|| read_in(&dir, name));
    let bytes = file("blkio.throttle.io_service_bytes").map(|t| parse_blkio_rwstat(&t)).unwrap_or_default();
    let operations = file("blkio.throttle.io_serviced").map(|t| parse_blkio_rwstat(&t)).unwrap_or_default();
    let mut io: BTreeMap<(u32, u32), IoCounts> = BTreeMap::new();
    for (device, (read, write)) in bytes {
        let counts = io.entry(device).or_default();
        (counts.read_bytes, counts.write_bytes) = (read, write);
    }
    for (device, (read, write)) in operations {
        if io.len() >= MAX_IO_DEVICES && !io.contains_key(&device) {
            continue;
        }
        let counts = io.entry(device).or_default();
        (counts.read_operations, counts.write_operations) = (read, write);
    }
    io
}

/// A `major:minor` device field.
fn parse_device(field: &str) -> Option<(u32, u32)> {
    let (major, minor) = field.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// v2 `io.stat`: a line per device, `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0`
/// (keys in any order, others ignored). Lines without a device, and values that are not
/// numbers, are skipped; at most `MAX_IO_DEVICES` devices.
pub fn parse_io_stat(text: &str) -> BTreeMap<(u32, u32), IoCounts> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let device = parse_device(fields.next()?)?;
            let mut counts = IoCounts::default();
            for field in fields {
                let Some((key, value)) = field.split_once('=') else { continue };
                let Ok(value) = value.parse() else { continue };
                match key {
                    "rbytes" => counts.read_bytes = value,
                    "wbytes" => counts.write_bytes = value,
                    "rios" => counts.read_operations = value,
                    "wios" => counts.write_operations = value,
                    _ => {}
                }
            }
            Some((device, counts))
        })
        .take(MAX_IO_DEVICES)
        .collect()
}

/// v1 blkio rwstat files (`blkio.throttle.io_service_bytes`, `..._serviced`): lines
/// `8:0 Read 4096`, `8:0 Write 0`, ... (`Sync`, `Async`, `Discard`, `Total` ignored), and a last
/// `Total N` line. Returns (read, write) per device, at most `MAX_IO_DEVICES`.
pub fn parse_blkio_rwstat(text: &str) -> BTreeMap<(u32, u32), (u64, u64)> {
    let mut devices: BTreeMap<(u32, u32), (u64, u64)> = BTreeMap::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(device), Some(kind), Some(value), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (Some(device), Ok(value)) = (parse_device(device), value.parse::<u64>()) else { continue };
        if devices.len() >= MAX_IO_DEVICES && !devices.contains_key(&device) {
            continue;
        }
        match kind {
            "Read" => devices.entry(device).or_default().0 = value,
            "Write" => devices.entry(device).or_default().1 = value,
            _ => {}
        }
    }
    devices
}

/// The sum of the parts present; `None` when none is (not a memory.stat of this shape).
fn sum_present<'a>(parts: impl Iterator<Item = Option<&'a u64>>) -> Option<u64> {
    parts.flatten().fold(None, |sum, &part| Some(sum.unwrap_or(0u64).saturating_add(part)))
}

fn pick(map: &BTreeMap<String, u64>, keys: &[&'static str]) -> BTreeMap<&'static str, u64> {
    keys.iter().filter_map(|&k| map.get(k).map(|&v| (k, v))).collect()
}

/// A file's text, its first `MAX_FILE_SIZE` bytes; `None` when it is missing or unreadable.
fn read_text(path: &Path) -> Option<String> {
    super::small_file::read_path(path, MAX_FILE_SIZE).ok()
}

/// The text of the file `name` in a directory opened once (`None`: the directory is missing,
/// and so is every file in it); as [`read_text`].
fn read_in(dir: &Option<Dir>, name: &str) -> Option<String> {
    dir.as_ref()?.read(name, MAX_FILE_SIZE).ok()
}

/// A cgroup directory, opened once for its dozen files.
fn open_dir(path: Option<&Path>) -> Option<Dir> {
    Dir::open(path?).ok()
}

fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Flat keyed files (`memory.stat`, `cpu.stat`, `memory.events`, `memory.oom_control`): one
/// "key value" pair a line. Lines that are not exactly a key and an unsigned number are skipped.
pub fn parse_flat_keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (key, value) = (fields.next()?, fields.next()?);
            if fields.next().is_some() {
                return None;
            }
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Single-value limit files (`memory.max`, `memory.high`, `pids.max`): `Some(None)` for "max"
/// (unlimited), `Some(Some(n))` for a number, `None` for anything else.
pub fn parse_max(text: &str) -> Option<Option<u64>> {
    match text.trim() {
        "max" => Some(None),
        value => value.parse().ok().map(Some),
    }
}

/// v1 limit files (`memory.limit_in_bytes`): as [`parse_max`], with values at or above
/// [`V1_UNLIMITED`] meaning unlimited.
pub fn parse_v1_limit(text: &str) -> Option<Option<u64>> {
    parse_max(text).map(|limit| limit.filter(|&bytes| bytes < V1_UNLIMITED))
}

/// `cpu.max`: "$QUOTA $PERIOD" in microseconds, QUOTA "max" for none. `(None, period)` when
/// there is no quota.
pub fn parse_cpu_max(text: &str) -> Option<(Option<u64>, u64)> {
    let mut fields = text.split_whitespace();
    let (quota, period) = (fields.next()?, fields.next()?);
    if fields.next().is_some() {
        return None;
    }
    let quota = match quota {
        "max" => None,
        quota => Some(quota.parse().ok()?),
    };
    Some((quota, period.parse().ok()?))
}

/// PSI files (`cpu.pressure`, ...): "some avg10=0.00 avg60=0.00 avg300=0.00 total=12345", and a
/// "full" line. Returns (some|full, total stall time in microseconds) for the well-formed lines.
pub fn parse_pressure(text: &str) -> Vec<(&'static str, u64)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let kind = match fields.next()? {
                "some" => "some",
                "full" => "full",
                _ => return None,
            };
            let total = fields.find_map(|f| f.strip_prefix("total="))?.parse().ok()?;
            Some((kind, total))
        })
        .collect()
}

#[cfg(test)]
mod tests;
