//! Loading and attaching the programs of one `kernsight trace` run: only those the trace needs,
//! with its kernel-side filters (process, cgroups, syscall set) set before the verifier sees
//! the code, so that disabled filters cost nothing.

use std::collections::BTreeSet;

use anyhow::Context as _;
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::TracePoint,
};
use kernsight_common::trace::{
    CgroupSyscallKey, LATENCY_SLOTS, SYSCALL_PATH_SHIFT, SYSCALL_TRACED, SyscallCount,
    TRACE_BLOCK_START_ENTRIES, TRACE_BLOCK_START_MAP, TRACE_CGROUP_COUNTS_ENTRIES, TRACE_CGROUP_COUNTS_MAP,
    TRACE_CGROUPS_MAP, TRACE_CGROUPS_MAX, TRACE_COUNT_BY_CGROUP_GLOBAL, TRACE_EVENTS_MAP,
    TRACE_FILTER_CGROUPS_GLOBAL, TRACE_FILTER_TGID_GLOBAL, TRACE_LOST_MAP, TRACE_READER_WAITING_MAP,
    TRACE_RECORD_BYTES_GLOBAL, TRACE_RECORD_MAX, TRACE_SELF_TGID_GLOBAL, TRACE_START_ENTRIES,
    TRACE_SYSCALL_COUNT_ONLY_GLOBAL, TRACE_SYSCALL_COUNTS_MAP, TRACE_SYSCALL_HIST_GLOBAL,
    TRACE_SYSCALL_LATENCY_MAP, TRACE_SYSCALL_SET_GLOBAL, TRACE_SYSCALL_START_MAP, TRACE_SYSCALLS,
};

use super::{
    LoadError,
    cgroup_walk::CgroupOffsets,
    family::Attached as _,
    features::{Features, Object},
    load_and_attach, object_bytes, processes,
    rings::EventRing,
    take_map, task,
};
use crate::{
    config::ObjectChoice,
    kernel::{cgroupfs::Hierarchies, tracefs::Format},
};

/// What the kernel side produces for this trace.
#[derive(Debug, Clone)]
pub enum Source {
    /// Raw records of one classic tracepoint.
    Tracepoint { category: String, name: String, format: Format },
    /// One record per call of the syscalls in `set` (number → index of its path argument).
    Syscalls { set: Vec<(u32, Option<u8>)> },
    /// Calls per syscall number in `set`, counted in the kernel, and with `latency` a log2
    /// histogram of their latency per syscall number.
    SyscallCounts { set: Vec<u32>, latency: bool, by_cgroup: bool },
    /// Exec and exit events of the `processes` family.
    Processes,
    /// One record per completed block request (`kernsight trace io`).
    BlockIo,
    /// The DNS messages of every workload (`kernsight trace dns`): the `dns` family's programs
    /// and ring.
    Dns,
}

/// Kernel-side filters.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// Only this process (thread group id).
    pub tgid: Option<u32>,
    /// Only these (tagged) cgroup ids; `None`: every cgroup.
    pub cgroups: Option<BTreeSet<u64>>,
}

/// The attached programs of one trace and what to read.
pub struct Trace {
    _ebpf: Ebpf,
    /// `Tracepoint` and `Syscalls`: the records.
    pub ring: Option<RingBuf<MapData>>,
    /// With `ring`: the reader's "waiting" word, so that the kernel wakes it once a wait.
    waiting: Option<Array<MapData, u32>>,
    lost: Option<PerCpuArray<MapData, u64>>,
    counts: Option<PerCpuArray<MapData, SyscallCount>>,
    latency: Option<PerCpuArray<MapData, u64>>,
    cgroup_counts: Option<PerCpuHashMap<MapData, CgroupSyscallKey, SyscallCount>>,
    /// The syscall numbers counted (histogram mode reads only theirs).
    traced: Vec<u32>,
    /// `Processes`: exec and exit events.
    pub processes: Option<EventRing>,
}

impl Trace {
    pub fn load(
        source: &Source,
        filters: &Filters,
        hierarchies: &Hierarchies,
        ring_bytes: u32,
    ) -> anyhow::Result<Self> {
        let v1_controller = hierarchies.v1.as_ref().map(|(controller, _)| *controller);
        // Asked before the own parse is made (see there).
        super::features::tracing_programs();
        let own_btf = crate::kernel::btf::Btf::from_sys_fs()?;
        let features = Features::probe(Some(&own_btf));
        let chosen = Object::choose(&features, ObjectChoice::Auto);
        let object = object_bytes(&chosen)?;
        let walk = CgroupOffsets::read(&own_btf, v1_controller)
            .context("cannot find the cgroup of a task in the kernel's BTF")?;
        let task = task::TaskOffsets::read(&own_btf)
            .context("cannot read task_struct members from the kernel's BTF")?;
        let block = match source {
            Source::BlockIo => {
                Some(super::block_io::BlockOffsets::read(&own_btf).map_err(anyhow::Error::msg)?)
            }
            _ => None,
        };
        let block_start_entries = if block.is_some() { TRACE_BLOCK_START_ENTRIES } else { 1 };
        drop(own_btf);
        // Parsed once the own parse is gone (see `super::Programs::load_object`).
        let btf = Btf::from_sys_fs().map_err(LoadError::Btf)?;
        let tgid = filters.tgid.unwrap_or(0);
        let filter_cgroups = u8::from(filters.cgroups.is_some());
        let record_bytes = match source {
            Source::Tracepoint { format, .. } => record_bytes(format),
            _ => 0,
        };
        let mut set = [0u8; TRACE_SYSCALLS];
        let count_only = u8::from(matches!(source, Source::SyscallCounts { .. }));
        let latency = matches!(source, Source::SyscallCounts { latency: true, .. });
        let by_cgroup = matches!(source, Source::SyscallCounts { by_cgroup: true, .. });
        let cgroup_count_entries = if by_cgroup { TRACE_CGROUP_COUNTS_ENTRIES } else { 1 };
        let latency_entries = if latency { TRACE_SYSCALLS as u32 * LATENCY_SLOTS } else { 1 };
        match source {
            Source::Syscalls { set: wanted } => {
                for (nr, path) in wanted {
                    if let Some(flags) = set.get_mut(*nr as usize) {
                        *flags = SYSCALL_TRACED | path.map_or(0, |arg| (arg + 1) << SYSCALL_PATH_SHIFT);
                    }
                }
            }
            Source::SyscallCounts { set: wanted, .. } => {
                for nr in wanted {
                    if let Some(flags) = set.get_mut(*nr as usize) {
                        *flags = SYSCALL_TRACED;
                    }
                }
            }
            _ => {}
        }
        let cgroup_entries =
            filters.cgroups.as_ref().map_or(1, |c| c.len().clamp(1, TRACE_CGROUPS_MAX as usize));
        let self_tgid = std::process::id();
        let hist = u8::from(latency);
        let count_by_cgroup = u8::from(by_cgroup);
        let mut loader = EbpfLoader::new();
        loader.btf(&btf).allow_unsupported_maps();
        // The fallback object's entry times are an LRU hash; the other objects' are in task
        // local storage, which has no bound to set.
        if chosen.is_fallback() {
            loader.map_max_entries(TRACE_SYSCALL_START_MAP, TRACE_START_ENTRIES);
        }
        super::loader::task_globals(&mut loader, &walk, &task);
        if let Some(block) = &block {
            block.set_globals(&mut loader);
        }
        let mut ebpf = loader
            .map_max_entries(TRACE_BLOCK_START_MAP, block_start_entries)
            .override_global(TRACE_FILTER_TGID_GLOBAL, &tgid, true)
            .override_global(TRACE_FILTER_CGROUPS_GLOBAL, &filter_cgroups, true)
            .override_global(TRACE_SELF_TGID_GLOBAL, &self_tgid, true)
            .override_global(TRACE_RECORD_BYTES_GLOBAL, &record_bytes, true)
            .override_global(TRACE_SYSCALL_COUNT_ONLY_GLOBAL, &count_only, true)
            .override_global(TRACE_SYSCALL_HIST_GLOBAL, &hist, true)
            .override_global(TRACE_COUNT_BY_CGROUP_GLOBAL, &count_by_cgroup, true)
            .map_max_entries(TRACE_CGROUP_COUNTS_MAP, cgroup_count_entries)
            .map_max_entries(TRACE_SYSCALL_LATENCY_MAP, latency_entries)
            .override_global(TRACE_SYSCALL_SET_GLOBAL, &set, true)
            .map_max_entries(TRACE_EVENTS_MAP, ring_bytes)
            .map_max_entries(TRACE_CGROUPS_MAP, cgroup_entries as u32)
            .load(object)
            .map_err(LoadError::Object)?;

        if let Some(cgroups) = &filters.cgroups {
            // Borrowed, not taken: the object keeps the map (and its fd) for the programs.
            let map = ebpf.map_mut(TRACE_CGROUPS_MAP).ok_or(LoadError::MissingMap(TRACE_CGROUPS_MAP))?;
            let mut map: HashMap<_, u64, u8> = HashMap::try_from(map)?;
            for id in cgroups.iter().take(TRACE_CGROUPS_MAX as usize) {
                map.insert(id, &1, 0).context("filling the cgroup filter")?;
            }
        }
        let traced = match source {
            Source::SyscallCounts { set, .. } => set.clone(),
            _ => Vec::new(),
        };
        let mut trace = Self {
            _ebpf: ebpf,
            ring: None,
            waiting: None,
            lost: None,
            counts: None,
            latency: None,
            cgroup_counts: None,
            traced,
            processes: None,
        };
        let ebpf = &mut trace._ebpf;
        match source {
            Source::Tracepoint { category, name, .. } => {
                (trace.ring, trace.waiting, trace.lost) = take_records(ebpf)?;
                let program: &mut TracePoint = ebpf
                    .program_mut("ks_trace_tracepoint")
                    .context("program ks_trace_tracepoint missing from the object")?
                    .try_into()?;
                program.load().context("loading ks_trace_tracepoint")?;
                program
                    .attach(category, name)
                    .with_context(|| format!("attaching to tracepoint {category}:{name}"))?;
            }
            Source::Syscalls { .. } => {
                (trace.ring, trace.waiting, trace.lost) = take_records(ebpf)?;
                load_and_attach(
                    ebpf,
                    &btf,
                    &[("ks_trace_sys_enter", "sys_enter"), ("ks_trace_sys_exit", "sys_exit")],
                )?;
            }
            Source::SyscallCounts { latency, by_cgroup, .. } => {
                trace.counts = Some(PerCpuArray::try_from(take_map(ebpf, TRACE_SYSCALL_COUNTS_MAP)?)?);
                if *by_cgroup {
                    trace.cgroup_counts =
                        Some(PerCpuHashMap::try_from(take_map(ebpf, TRACE_CGROUP_COUNTS_MAP)?)?);
                    trace.lost = Some(PerCpuArray::try_from(take_map(ebpf, TRACE_LOST_MAP)?)?);
                }
                if *latency {
                    trace.latency = Some(PerCpuArray::try_from(take_map(ebpf, TRACE_SYSCALL_LATENCY_MAP)?)?);
                    // Enter first: an exit whose enter was not seen is not measured.
                    load_and_attach(
                        ebpf,
                        &btf,
                        &[("ks_trace_sys_enter", "sys_enter"), ("ks_trace_sys_exit", "sys_exit")],
                    )?;
                } else {
                    load_and_attach(ebpf, &btf, &[("ks_trace_sys_exit", "sys_exit")])?;
                }
            }
            Source::BlockIo => {
                (trace.ring, trace.waiting, trace.lost) = take_records(ebpf)?;
                // Completions first: every issue recorded has its completion attached.
                load_and_attach(
                    ebpf,
                    &btf,
                    &[
                        ("ks_trace_block_complete", "block_rq_complete"),
                        ("ks_trace_block_issue", "block_rq_issue"),
                    ],
                )?;
            }
            Source::Dns => {
                use kernsight_common::dns::{DNS_EVENTS_LOST_MAP, DNS_EVENTS_MAP};
                trace.ring = Some(RingBuf::try_from(take_map(ebpf, DNS_EVENTS_MAP)?)?);
                trace.lost = Some(PerCpuArray::try_from(take_map(ebpf, DNS_EVENTS_LOST_MAP)?)?);
                super::net::attach_cgroup(ebpf, hierarchies.unified.as_ref(), super::dns::PROGRAMS)?;
            }
            Source::Processes => {
                let mut maps = processes::attach_processes(
                    ebpf,
                    &btf,
                    kernsight_common::processes::DEFAULT_PROCESS_ENTRIES,
                )?;
                trace.processes = maps.take_events();
            }
        }
        Ok(trace)
    }

    /// Calls and failed calls per (cgroup, syscall) since the start, summed over CPUs (counting
    /// by cgroup); `None` when this trace does not count by cgroup.
    pub fn cgroup_counts(&self) -> Option<Vec<(CgroupSyscallKey, SyscallCount)>> {
        let counts = self.cgroup_counts.as_ref()?;
        let rows = counts
            .iter()
            .filter_map(Result::ok)
            .map(|(key, values)| {
                let total = values.iter().fold(SyscallCount::default(), |sum, v| SyscallCount {
                    calls: sum.calls + v.calls,
                    errors: sum.errors + v.errors,
                });
                (key, total)
            })
            .collect();
        Some(rows)
    }

    /// Removes the counts of `keys`, pairs of cgroups found removed: they count nothing more (a
    /// cgroup id is not reused), and a long trace would fill the map with them.
    pub fn forget_cgroup_counts(&mut self, keys: &[CgroupSyscallKey]) {
        if let Some(counts) = &mut self.cgroup_counts {
            for key in keys {
                // Already gone is what was wanted.
                let _ = counts.remove(key);
            }
        }
    }

    /// Tells the kernel side that the reader is about to wait: the next submit that finds a
    /// batch queued wakes it (and only that one). A trace whose ring is not the trace programs'
    /// own (`dns`, `processes`) is woken by its family's programs as they always do.
    pub fn waiting(&mut self) {
        if let Some(waiting) = &mut self.waiting {
            // Should the update fail, records wait for the reader's poll: late, not lost.
            let _ = waiting.set(0, &1, 0);
        }
    }

    /// Whether the reader's "waiting" word is still set: `Some(false)` once a submit woke it,
    /// `None` for a trace without the word.
    pub fn reader_waits(&self) -> Option<bool> {
        self.waiting.as_ref().map(|waiting| waiting.get(&0, 0).is_ok_and(|word| word != 0))
    }

    /// Whether latency histograms are made in the kernel.
    pub fn has_latency(&self) -> bool {
        self.latency.is_some()
    }

    /// Records the kernel could not queue (ring buffer full), summed over CPUs.
    pub fn lost(&self) -> u64 {
        if let Some(processes) = &self.processes {
            return processes.stats.lost();
        }
        self.lost.as_ref().and_then(|lost| lost.get(&0, 0).ok()).map_or(0, |values| values.iter().sum())
    }

    /// Calls and failed calls per syscall number since the start, summed over CPUs (counting
    /// mode). Never reset: intervals are differences, so no increment is lost to a reset race.
    pub fn syscall_counts(&self) -> Vec<(u32, SyscallCount)> {
        let Some(counts) = &self.counts else { return Vec::new() };
        (0..TRACE_SYSCALLS as u32)
            .filter_map(|nr| {
                let values = counts.get(&nr, 0).ok()?;
                let total = values.iter().fold(SyscallCount::default(), |sum, v| SyscallCount {
                    calls: sum.calls + v.calls,
                    errors: sum.errors + v.errors,
                });
                (total.calls > 0).then_some((nr, total))
            })
            .collect()
    }
}

impl Trace {
    /// Per traced syscall number, its calls per log2 latency bucket since the start, summed
    /// over CPUs (histogram mode). Bucket 0: 0 ns; bucket `b`: `[2^(b-1), 2^b)` ns.
    pub fn syscall_latency(&self) -> Vec<(u32, Vec<u64>)> {
        let Some(latency) = &self.latency else { return Vec::new() };
        self.traced
            .iter()
            .map(|&nr| {
                let buckets = (0..LATENCY_SLOTS)
                    .map(|b| {
                        latency
                            .get(&(nr * LATENCY_SLOTS + b), 0)
                            .map_or(0, |values| values.iter().sum::<u64>())
                    })
                    .collect();
                (nr, buckets)
            })
            .filter(|(_, buckets): &(u32, Vec<u64>)| buckets.iter().any(|&c| c > 0))
            .collect()
    }
}

/// Bytes of a tracepoint record to copy: the fixed part, and room for its dynamic data.
fn record_bytes(format: &Format) -> u32 {
    let fixed = format.fixed_size() as u32;
    let wanted = if format.has_dynamic_fields() { fixed + 512 } else { fixed };
    (wanted.div_ceil(8) * 8).min(TRACE_RECORD_MAX)
}

/// The record ring of the trace programs, with its waiting word and loss count.
type Records = (Option<RingBuf<MapData>>, Option<Array<MapData, u32>>, Option<PerCpuArray<MapData, u64>>);

fn take_records(ebpf: &mut Ebpf) -> anyhow::Result<Records> {
    Ok((
        Some(RingBuf::try_from(take_map(ebpf, TRACE_EVENTS_MAP)?)?),
        Some(Array::try_from(take_map(ebpf, TRACE_READER_WAITING_MAP)?)?),
        Some(PerCpuArray::try_from(take_map(ebpf, TRACE_LOST_MAP)?)?),
    ))
}
