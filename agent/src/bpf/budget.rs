//! The map memory budget. Per-CPU maps cost their value once per *possible* CPU, so the same
//! configuration that takes 194 MiB of kernel memory on a 64-CPU node takes 550 MiB on a
//! 192-CPU one, charged to the agent's memory cgroup. Before anything is loaded, the agent plans
//! the bytes of every map of the object (the kernel's own accounting, `map_mem_usage`, for the
//! map types kernsight uses) from the possible CPU count and the configuration:
//!
//! - maps of families that do not run (disabled, or unsupported by this kernel) and maps a
//!   running family does not use with this configuration (the latency hash with latency off) are
//!   created with one entry, the least the kernel accepts, and are not pinned;
//! - when the plan exceeds `bpf.map_memory_budget_mebibytes`, the bounds in `SHRINK_ORDER` are
//!   lowered in that order, each to the largest value that fits (first pass: to no less than a
//!   quarter of its configured value; second pass: to its minimum), and one line says what was
//!   shrunk. The agent then runs with those bounds: never an exit for want of memory.

use std::collections::{BTreeMap, BTreeSet};

use super::family::Family;
use crate::config::Config;

const MIB: u64 = 1 << 20;

// `enum bpf_map_type` values of the map types kernsight's objects hold.
const HASH: u32 = 1;
const ARRAY: u32 = 2;
const PERCPU_HASH: u32 = 5;
const PERCPU_ARRAY: u32 = 6;
const LRU_HASH: u32 = 9;
const LRU_PERCPU_HASH: u32 = 10;
const QUEUE: u32 = 22;
const SK_STORAGE: u32 = 24;
const RINGBUF: u32 = 27;
const INODE_STORAGE: u32 = 28;
const TASK_STORAGE: u32 = 29;
const CGRP_STORAGE: u32 = 32;

// Sizes of the kernel's own structures (x86-64, 6.x; measured on 6.18 against fdinfo's
// `memlock`, which is `map_mem_usage`). Older kernels differ by a few bytes per map.
const ARRAY_HEADER: u64 = 312; // struct bpf_array (also ~ struct bpf_queue_stack)
const HTAB_HEADER: u64 = 832; // struct bpf_htab
const HTAB_BUCKET: u64 = 16; // struct bucket
const HTAB_ELEM: u64 = 48; // struct htab_elem, before its key
const HTAB_LOCKS_PER_CPU: u64 = 8 * 4; // HASHTAB_MAP_LOCK_COUNT ints per CPU
const RINGBUF_HEADER: u64 = 304;
const RINGBUF_META_PAGES: u64 = 3;
const PAGE: u64 = 4096;
/// What a local-storage map costs with no entries (it grows with the objects it is attached to).
const STORAGE_MAP: u64 = 480;

/// One map as the object defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMap {
    pub name: String,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read the map definitions of kernsight's eBPF object: {0} (rebuild with `cargo xtask build`)")]
pub struct ObjectError(String);

/// The maps of an eBPF object (its `.maps` and data sections).
pub fn object_maps(object: &[u8]) -> Result<Vec<ObjectMap>, ObjectError> {
    let parsed = aya_obj::Object::parse(object).map_err(|err| ObjectError(err.to_string()))?;
    let mut maps: Vec<ObjectMap> = parsed
        .maps
        .iter()
        .map(|(name, map)| ObjectMap {
            name: name.clone(),
            map_type: map.map_type(),
            key_size: map.key_size(),
            value_size: map.value_size(),
            max_entries: map.max_entries(),
        })
        .collect();
    maps.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(maps)
}

/// The number of possible CPUs (`/sys/devices/system/cpu/possible`): per-CPU maps are
/// allocated for each of them, online or not.
pub fn possible_cpus() -> Result<u32, String> {
    aya::util::nr_cpus()
        .map(u32::from)
        .map_err(|(path, err)| format!("cannot read the possible CPUs from {path}: {err}"))
}

fn round8(size: u32) -> u64 {
    u64::from(size).next_multiple_of(8)
}

/// Whether the kernel sizes the map by `max_entries` (local storage has no bound).
fn has_bound(map_type: u32) -> bool {
    !matches!(map_type, SK_STORAGE | INODE_STORAGE | TASK_STORAGE | CGRP_STORAGE)
}

/// The smallest bound the kernel accepts for a map of this type.
fn least_entries(map_type: u32) -> u32 {
    match map_type {
        RINGBUF => PAGE as u32,
        _ => 1,
    }
}

/// Kernel memory of a map of `map.map_type` with `entries` entries on `cpus` possible CPUs:
/// the kernel's `map_mem_usage` for preallocated maps.
pub fn map_bytes(map: &ObjectMap, entries: u32, cpus: u32) -> u64 {
    let (n, cpus) = (u64::from(entries), u64::from(cpus));
    let (key, value) = (round8(map.key_size), round8(map.value_size));
    let buckets = HTAB_BUCKET * n.max(1).next_power_of_two();
    let htab = HTAB_HEADER + buckets + HTAB_LOCKS_PER_CPU * cpus;
    match map.map_type {
        PERCPU_ARRAY => ARRAY_HEADER + n * 8 + n * value * cpus,
        ARRAY => ARRAY_HEADER + n * value,
        QUEUE => ARRAY_HEADER + (n + 1) * u64::from(map.value_size),
        // A per-CPU element holds a pointer to its per-CPU values.
        PERCPU_HASH | LRU_PERCPU_HASH => htab + n * (HTAB_ELEM + key + 8) + n * value * cpus,
        // A plain hash keeps one spare element per CPU, and a pointer to it.
        HASH => htab + (n + cpus) * (HTAB_ELEM + key + value) + 8 * cpus,
        LRU_HASH => htab + n * (HTAB_ELEM + key + value),
        RINGBUF => {
            let data_pages = n / PAGE;
            RINGBUF_HEADER
                + (RINGBUF_META_PAGES + data_pages) * PAGE
                + (RINGBUF_META_PAGES + 2 * data_pages) * 8
        }
        t if !has_bound(t) => STORAGE_MAP,
        _ => ARRAY_HEADER + n * value,
    }
}

/// A configuration bound that sizes maps, as `SHRINK_ORDER` lowers it.
struct Bound {
    key: &'static str,
    field: fn(&mut Config) -> &mut u32,
    /// The least value (the config's own minimum, or what the overflow entries need).
    least: u32,
}

/// The bounds lowered when the plan exceeds the budget, in this order: the opt-in latency
/// histogram first, then the per-cgroup hashes (their cgroups past the bound count under
/// cgroup="other"), and last the syscall rows, which name every cgroup's syscalls and cost
/// 4 KiB per CPU each. Documented in default.toml and docs/deploy.md.
const SHRINK_ORDER: &[Bound] = &[
    Bound { key: "syscalls.latency_max_entries", field: |c| &mut c.syscalls.latency_max_entries, least: 64 },
    Bound {
        key: "network.tcp_tracked_connections",
        field: |c| &mut c.network.tcp_tracked_connections,
        least: 64,
    },
    Bound { key: "sched.runqueue_max_entries", field: |c| &mut c.sched.runqueue_max_entries, least: 64 },
    Bound { key: "network.tcp_max_entries", field: |c| &mut c.network.tcp_max_entries, least: 128 },
    Bound { key: "syscalls.max_error_entries", field: |c| &mut c.syscalls.max_error_entries, least: 16 },
    Bound {
        key: "network.cgroup_traffic_max_entries",
        field: |c| &mut c.network.cgroup_traffic_max_entries,
        least: 16,
    },
    Bound { key: "network.drop_max_entries", field: |c| &mut c.network.drop_max_entries, least: 512 },
    Bound {
        key: "security.capability_max_entries",
        field: |c| &mut c.security.capability_max_entries,
        least: 512,
    },
    Bound { key: "sched.process_max_entries", field: |c| &mut c.sched.process_max_entries, least: 16 },
    Bound { key: "memory.reclaim_max_entries", field: |c| &mut c.memory.reclaim_max_entries, least: 128 },
    Bound { key: "block_io.max_entries", field: |c| &mut c.block_io.max_entries, least: 256 },
    Bound {
        key: "network.interface_traffic_max_entries",
        field: |c| &mut c.network.interface_traffic_max_entries,
        least: 32,
    },
    Bound { key: "syscalls.max_cgroups", field: |c| &mut c.syscalls.max_cgroups, least: 16 },
];

/// One map of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMap {
    pub name: String,
    pub entries: u32,
    pub bytes: u64,
    /// Created at its least size and not pinned: its family does not run, or does not use it
    /// with this configuration.
    pub idle: bool,
    /// Whether the plan sets its bound (local storage has none).
    pub sized: bool,
}

/// A bound the budget lowered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shrunk {
    pub key: &'static str,
    pub from: u32,
    pub to: u32,
}

/// The maps' planned kernel memory, and the configuration the agent runs with to meet it.
#[derive(Debug, Clone)]
pub struct MapPlan {
    pub cpus: u32,
    pub budget_bytes: u64,
    /// The plan of the configuration as written, before any shrinking.
    pub wanted_bytes: u64,
    pub maps: Vec<PlannedMap>,
    pub shrunk: Vec<Shrunk>,
    /// The configuration with the lowered bounds: what the families are loaded and read with.
    pub config: Config,
}

/// What the plan needs to know of the families: which run, which maps they own, use and size.
struct Sizing {
    /// Maps created at their least size and not pinned.
    idle: BTreeSet<&'static str>,
    running: Vec<&'static dyn Family>,
}

impl Sizing {
    fn new(families: &[&'static dyn Family], runs: &dyn Fn(&dyn Family) -> bool, config: &Config) -> Self {
        let mut idle = BTreeSet::new();
        let mut running = Vec::new();
        for &family in families {
            if runs(family) {
                idle.extend(family.idle_maps(config));
                running.push(family);
            } else {
                idle.extend(family.maps().iter().copied());
            }
        }
        Self { idle, running }
    }

    fn maps(&self, objects: &[ObjectMap], config: &Config, cpus: u32) -> Vec<PlannedMap> {
        let sizes: BTreeMap<&str, u32> =
            self.running.iter().flat_map(|family| family.map_entries(config)).collect();
        objects
            .iter()
            .map(|map| {
                let sized = has_bound(map.map_type);
                let idle = sized && self.idle.contains(map.name.as_str());
                let entries = match idle {
                    true => least_entries(map.map_type),
                    false if sized => sizes.get(map.name.as_str()).copied().unwrap_or(map.max_entries),
                    false => map.max_entries,
                };
                PlannedMap {
                    name: map.name.clone(),
                    entries,
                    bytes: map_bytes(map, entries, cpus),
                    idle,
                    sized,
                }
            })
            .collect()
    }

    fn bytes(&self, objects: &[ObjectMap], config: &Config, cpus: u32) -> u64 {
        self.maps(objects, config, cpus).iter().map(|m| m.bytes).sum()
    }
}

impl MapPlan {
    /// Plans the maps of `objects` for `config` on `cpus` possible CPUs; `runs` says whether a
    /// family of `families` runs (enabled and supported). Bounds are lowered in `SHRINK_ORDER`
    /// until the plan fits `budget_bytes`, or every one is at its least.
    pub fn new(
        objects: &[ObjectMap],
        families: &[&'static dyn Family],
        runs: &dyn Fn(&dyn Family) -> bool,
        config: &Config,
        cpus: u32,
        budget_bytes: u64,
    ) -> Self {
        let sizing = Sizing::new(families, runs, config);
        let bytes = |config: &Config| sizing.bytes(objects, config, cpus);
        let wanted_bytes = bytes(config);
        let mut fitted = config.clone();
        // The bounds as written, read through the same accessors.
        let mut written = config.clone();
        let mut shrunk: Vec<Shrunk> = Vec::new();
        // First every bound to no less than a quarter of its value, then to its least.
        for pass in [Pass::Quarter, Pass::Least] {
            for bound in SHRINK_ORDER {
                if bytes(&fitted) <= budget_bytes {
                    break;
                }
                let now = *(bound.field)(&mut fitted);
                let original = *(bound.field)(&mut written);
                let floor = match pass {
                    Pass::Quarter => (original / 4).max(bound.least),
                    Pass::Least => bound.least,
                }
                .min(now);
                let value = largest_fitting(floor, now, |value| {
                    let mut trial = fitted.clone();
                    *(bound.field)(&mut trial) = value;
                    bytes(&trial) <= budget_bytes
                });
                let mut trial = fitted.clone();
                *(bound.field)(&mut trial) = value;
                // A bound whose maps are idle saves nothing: leave it as written.
                if value < now && bytes(&trial) < bytes(&fitted) {
                    fitted = trial;
                    match shrunk.iter_mut().find(|s| s.key == bound.key) {
                        Some(entry) => entry.to = value,
                        None => shrunk.push(Shrunk { key: bound.key, from: original, to: value }),
                    }
                }
            }
        }
        let maps = sizing.maps(objects, &fitted, cpus);
        Self { cpus, budget_bytes, wanted_bytes, maps, shrunk, config: fitted }
    }

    pub fn total_bytes(&self) -> u64 {
        self.maps.iter().map(|m| m.bytes).sum()
    }

    pub fn fits(&self) -> bool {
        self.total_bytes() <= self.budget_bytes
    }

    /// Maps created at their least size (not pinned).
    pub fn idle_maps(&self) -> impl Iterator<Item = &str> {
        self.maps.iter().filter(|m| m.idle).map(|m| m.name.as_str())
    }

    /// The one line that says what the budget changed, or `None` when the plan fits as written.
    pub fn shrink_line(&self) -> Option<String> {
        if self.shrunk.is_empty() && self.fits() {
            return None;
        }
        let changes: Vec<String> =
            self.shrunk.iter().map(|s| format!("{} {} -> {}", s.key, s.from, s.to)).collect();
        let outcome = if self.fits() {
            "shrank".to_owned()
        } else {
            "cannot fit even at the least bounds; loading with".to_owned()
        };
        Some(format!(
            "eBPF maps would take {} of kernel memory on {} possible CPUs, over \
             bpf.map_memory_budget_mebibytes = {}: {outcome} {}; maps now take {} \
             (raise the budget and the pod's memory limit together to keep the bounds: docs/deploy.md)",
            mebibytes(self.wanted_bytes),
            self.cpus,
            self.budget_bytes / MIB,
            changes.join(", "),
            mebibytes(self.total_bytes()),
        ))
    }
}

#[derive(Clone, Copy)]
enum Pass {
    Quarter,
    Least,
}

/// The largest value in `low..=high` for which `fits` holds (`fits` grows as the value falls),
/// or `low` when none does.
fn largest_fitting(low: u32, high: u32, fits: impl Fn(u32) -> bool) -> u32 {
    if fits(high) {
        return high;
    }
    let (mut low, mut high) = (low, high);
    // Invariant: every value above `high` does not fit; `low` fits or is the floor.
    while low < high {
        let mid = low + (high - low).div_ceil(2);
        if fits(mid) { low = mid } else { high = mid - 1 }
    }
    low
}

pub fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

/// The pod's memory beside its maps: the agent's heap, caches and buffers (MiB). The pod's
/// memory limit is the map budget plus this (docs/deploy.md, "Memory").
pub const USER_SPACE_MEBIBYTES: u64 = 128;

/// The node size the default budget, the chart and the kustomize manifests are sized for.
pub const SIZED_FOR_POSSIBLE_CPUS: u32 = 64;

/// The budget (MiB, rounded up to 16) that keeps every bound of `config` on `cpus` possible CPUs:
/// the rule behind the default, the chart's memory limit and the table in docs/deploy.md.
pub fn budget_keeping_bounds(
    objects: &[ObjectMap],
    families: &[&'static dyn Family],
    config: &Config,
    cpus: u32,
) -> u64 {
    let runs = |family: &dyn Family| family.enabled(config);
    let plan = MapPlan::new(objects, families, &runs, config, cpus, u64::MAX);
    plan.wanted_bytes.div_ceil(MIB).next_multiple_of(16)
}

/// `bpf.map_memory_budget_mebibytes` in bytes.
pub fn budget_bytes(config: &Config) -> u64 {
    u64::from(config.bpf.map_memory_budget_mebibytes) * MIB
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::FAMILIES;

    fn objects() -> Vec<ObjectMap> {
        let bytes = crate::bpf::object_bytes(&crate::bpf::features::Object::Full).expect(
            "the unit tests plan the real object: build with its kernel programs (no AYA_BUILD_SKIP)",
        );
        object_maps(bytes).expect("the built object parses")
    }

    fn plan_for(config: &Config, cpus: u32, budget_mib: u64) -> MapPlan {
        let runs = |family: &dyn Family| family.enabled(config);
        MapPlan::new(&objects(), FAMILIES, &runs, config, cpus, budget_mib * MIB)
    }

    fn map<'a>(plan: &'a MapPlan, name: &str) -> &'a PlannedMap {
        plan.maps.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("{name} not in the plan"))
    }

    #[test]
    fn model_matches_what_the_kernel_charged() {
        // fdinfo memlock of the maps of the default configuration, 2 possible CPUs, 6.18.
        let plan = plan_for(&Config::default(), 2, u64::MAX / MIB);
        for (name, measured) in [
            ("SYSCALL_ROWS", 4_206_912),
            ("SLOT_OWNERS", 4416),
            ("FREE_SLOTS", 2364),
            ("SYSCALL_ERRORS", 1_704_832),
            ("CAPABILITY_CHECKS", 852_864),
            ("NET_TCP_STARTS", 5_768_064),
            ("RECLAIM_START", 1_311_760),
            ("CGROUP_EVENTS", 275_784),
            ("OOM_EVENTS", 78_408),
        ] {
            assert_eq!(map(&plan, name).bytes, measured, "{name}");
        }
    }

    #[test]
    fn disabled_latency_and_families_are_not_created_at_size() {
        let config = Config::default();
        let plan = plan_for(&config, 64, 1 << 20);
        assert!(!config.syscalls.latency_histogram);
        assert_eq!(map(&plan, "SYSCALL_LATENCY").entries, 1);
        assert!(map(&plan, "SYSCALL_LATENCY").idle);
        // Entry times live in task local storage here: no bound to set, nothing charged up front.
        assert!(!map(&plan, "SYSCALL_START").sized);
        assert_eq!(map(&plan, "SYSCALL_ROWS").entries, 513);

        let mut off = Config::default();
        off.network.tcp = false;
        off.network.drops = false;
        let plan_off = plan_for(&off, 64, 1 << 20);
        for name in ["NET_TCP_EVENTS", "NET_TCP_STARTS", "NET_CGROUP_DROPS", "NET_DROP_REASONS"] {
            assert_eq!(map(&plan_off, name).entries, 1, "{name}");
            assert!(plan_off.idle_maps().any(|idle| idle == name), "{name}");
        }
        assert!(plan_off.total_bytes() + 10 * MIB < plan.total_bytes());

        let mut latency = Config::default();
        latency.syscalls.latency_histogram = true;
        let with_latency = plan_for(&latency, 64, 1 << 20);
        assert_eq!(map(&with_latency, "SYSCALL_LATENCY").entries, 65536);
        // 65,536 entries x 8 bytes x 64 CPUs, and the entries themselves.
        assert!(with_latency.total_bytes() - plan.total_bytes() > 32 * MIB);
    }

    #[test]
    fn plan_grows_with_possible_cpus() {
        let config = Config::default();
        let [at64, at128, at192] = [64, 128, 192].map(|cpus| plan_for(&config, cpus, 1 << 20));
        for plan in [&at64, &at128, &at192] {
            assert!(plan.shrunk.is_empty() && plan.fits());
        }
        let per_cpu = (at128.total_bytes() - at64.total_bytes()) / 64;
        assert_eq!(at192.total_bytes() - at128.total_bytes(), 64 * per_cpu);
        // Syscall rows: 513 x 4 KiB per CPU; the per-cgroup hashes (8 bytes per entry per CPU,
        // 16 for the run-queue histogram and the traffic) add about 0.7 MiB, the traffic slots
        // 4,096 x 32 bytes; the latency hash is idle.
        assert!((2 * MIB + MIB / 2..3 * MIB + MIB / 4).contains(&per_cpu), "{per_cpu}");
        // What no CPU multiplies: the ring buffers (DNS 2 MiB, traces and events), plain hashes
        // and arrays.
        let fixed = at64.total_bytes() - 64 * per_cpu;
        assert!((5 * MIB..25 * MIB).contains(&fixed), "{fixed}");
        // With the default budget a 64-CPU node keeps every bound; 192 CPUs do not fit.
        let budget = u64::from(Config::default().bpf.map_memory_budget_mebibytes);
        assert!(plan_for(&config, 64, budget).shrunk.is_empty());
        assert!(!plan_for(&config, 192, budget).shrunk.is_empty());
    }

    #[test]
    fn small_budget_gives_a_smaller_configuration_in_order() {
        let config = Config::default();
        // 192 CPUs with the default budget: the per-cgroup hashes to a quarter first, then the
        // rows to what is left.
        let budget = u64::from(config.bpf.map_memory_budget_mebibytes);
        let plan192 = plan_for(&config, 192, budget);
        assert!(plan192.fits(), "{}", plan192.total_bytes());
        assert!(plan192.total_bytes() > (budget - 2) * MIB, "uses the budget: {}", plan192.total_bytes());
        let keys: Vec<&str> = plan192.shrunk.iter().map(|s| s.key).collect();
        assert_eq!(keys.last(), Some(&"syscalls.max_cgroups"), "{keys:?}");
        assert!(!keys.contains(&"syscalls.latency_max_entries"), "latency is off: {keys:?}");
        let rows = plan192.config.syscalls.max_cgroups;
        assert!((128..512).contains(&rows), "{rows}");
        assert_eq!(map(&plan192, "SYSCALL_ROWS").entries, rows + 1);
        assert_eq!(plan192.config.sched.runqueue_max_entries, 16384 / 4);

        // A tight budget on a small node: smaller still, and within it.
        let small = plan_for(&config, 2, 12);
        assert!(small.fits(), "{}", small.total_bytes());
        assert!(small.config.network.tcp_tracked_connections < config.network.tcp_tracked_connections);
        assert!(small.total_bytes() < small.wanted_bytes);
        assert!(small.config.validate().is_ok());

        // Below what the least bounds need: loads at the least, says so, never fails.
        let impossible = plan_for(&config, 192, 1);
        assert!(!impossible.fits());
        assert_eq!(impossible.config.syscalls.max_cgroups, 16);
        assert!(impossible.shrink_line().unwrap().contains("cannot fit even at the least bounds"));
    }

    #[test]
    fn one_line_says_what_was_shrunk() {
        let config = Config::default();
        assert_eq!(plan_for(&config, 64, 1 << 20).shrink_line(), None);
        let plan = plan_for(&config, 128, 200);
        let line = plan.shrink_line().expect("128 CPUs do not fit 200 MiB");
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("on 128 possible CPUs"), "{line}");
        assert!(line.contains("bpf.map_memory_budget_mebibytes = 200"), "{line}");
        let rows = plan.config.syscalls.max_cgroups;
        assert!(line.contains(&format!("syscalls.max_cgroups 512 -> {rows}")), "{line}");
        assert!(line.contains(&format!("maps now take {}", mebibytes(plan.total_bytes()))), "{line}");
    }

    const TABLE_CPUS: [u32; 9] = [4, 8, 16, 32, 64, 96, 128, 192, 256];

    /// The table of docs/deploy.md: CPUs -> map memory, budget and pod memory limit.
    fn memory_table() -> String {
        let config = Config::default();
        let objects = objects();
        let default_budget = u64::from(config.bpf.map_memory_budget_mebibytes);
        let mut table = format!(
            "| possible CPUs | maps, default bounds | `bpf.map_memory_budget_mebibytes` to keep them | pod memory limit | `syscalls.max_cgroups` with the default budget ({default_budget}) |\n\
             |---:|---:|---:|---:|---:|\n"
        );
        for cpus in TABLE_CPUS {
            let wanted = plan_for(&config, cpus, u64::MAX / MIB).wanted_bytes;
            let budget = budget_keeping_bounds(&objects, FAMILIES, &config, cpus);
            let slots = plan_for(&config, cpus, default_budget).config.syscalls.max_cgroups;
            table.push_str(&format!(
                "| {cpus} | {} | {budget} | {}Mi | {slots} |\n",
                mebibytes(wanted),
                budget + USER_SPACE_MEBIBYTES
            ));
        }
        table
    }

    fn repo_file(path: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
    }

    #[test]
    fn default_budget_chart_and_docs_follow_the_rule() {
        let config = Config::default();
        let budget = budget_keeping_bounds(&objects(), FAMILIES, &config, SIZED_FOR_POSSIBLE_CPUS);
        assert_eq!(u64::from(config.bpf.map_memory_budget_mebibytes), budget, "the default budget");
        let limit = format!("{}Mi", budget + USER_SPACE_MEBIBYTES);

        let values: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&repo_file("deploy/helm/kernsight/values.yaml")).unwrap();
        assert_eq!(
            values["config"]["bpf"]["map_memory_budget_mebibytes"].as_u64(),
            Some(budget),
            "values.yaml"
        );
        for key in ["requests", "limits"] {
            assert_eq!(
                values["resources"][key]["memory"].as_str(),
                Some(limit.as_str()),
                "values.yaml resources.{key}"
            );
        }
        let toml: Config =
            Config::parse(&repo_file("deploy/kubernetes/kernsight.toml"), "kernsight.toml").unwrap();
        assert_eq!(
            u64::from(toml.bpf.map_memory_budget_mebibytes),
            budget,
            "deploy/kubernetes/kernsight.toml"
        );
        let daemonset: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&repo_file("deploy/kubernetes/daemonset.yaml")).unwrap();
        let containers = daemonset["spec"]["template"]["spec"]["containers"].as_sequence().unwrap();
        let agent = containers.iter().find(|c| c["name"].as_str() == Some("kernsight")).unwrap();
        for key in ["requests", "limits"] {
            assert_eq!(
                agent["resources"][key]["memory"].as_str(),
                Some(limit.as_str()),
                "daemonset.yaml {key}"
            );
        }

        let docs = repo_file("docs/deploy.md");
        let table = memory_table();
        let (start, end) =
            ("<!-- map memory table: bpf::budget tests -->\n", "<!-- end of map memory table -->");
        let documented = docs.split(start).nth(1).and_then(|rest| rest.split(end).next());
        assert_eq!(documented, Some(table.as_str()), "docs/deploy.md's table; expected:\n{table}");
    }

    #[test]
    fn largest_fitting_searches_the_range() {
        assert_eq!(largest_fitting(16, 512, |v| v <= 300), 300);
        assert_eq!(largest_fitting(16, 512, |_| true), 512);
        assert_eq!(largest_fitting(16, 512, |_| false), 16);
        assert_eq!(largest_fitting(16, 16, |_| false), 16);
    }
}
