//! Loading the kernel programs, attaching them probe family by probe family, and reading their
//! maps. A family that fails to attach is reported (log, `/readyz`, metrics) while the others run.

pub mod accounting;
pub mod cgroups;
mod loader;
pub mod net;
pub mod oom;
pub mod pins;
pub mod process_events;
pub mod rings;
pub mod sched;
pub mod security;
pub mod syscalls;
pub mod trace;

use std::{fmt, sync::Mutex};

use aya::{
    Btf, Ebpf, EbpfError,
    maps::{MapError, PerCpuArray},
};
use kernsight_common::{
    net as net_wire,
    oom::{FIELD_ABSENT, OOM_FIELD_GLOBALS},
    sched::{PROCESS_COUNTS_MAP, RUNQ_LATENCY_MAP, RUNQ_START_MAP},
    security::CAPABILITY_CHECKS_MAP,
    syscalls::{self as wire, map_full},
};
use tracing::{error, info, warn};

use crate::{config::Config, kernel::cgroupfs::Hierarchies};
use pins::Pins;

/// The object `build.rs` produced from `kernsight-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kernsight"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "this kernsight binary was built without its kernel programs (AYA_BUILD_SKIP=1): \
         rebuild it with `cargo xtask build`"
    )]
    NoObject,
    #[error("cannot read the kernel's BTF: {0}")]
    Btf(#[source] aya::BtfError),
    #[error("the kernel refused kernsight's maps or object: {0}")]
    Object(#[source] aya::EbpfError),
    #[error("map {0} is missing from the eBPF object (agent and kernel side out of sync: rebuild)")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map { name: &'static str, source: aya::maps::MapError },
    #[error(transparent)]
    Pins(#[from] pins::PinError),
}

/// What happened to one probe family at start-up.
#[derive(Debug, Clone)]
pub struct ProbeStatus {
    pub name: &'static str,
    pub programs: Vec<&'static str>,
    /// Kernel ids of the attached programs (as `bpftool prog show` lists them).
    pub program_ids: Vec<u32>,
    pub state: ProbeState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeState {
    Attached,
    Disabled,
    Failed(String),
}

impl fmt::Display for ProbeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Attached => f.write_str("attached"),
            Self::Disabled => f.write_str("disabled by config"),
            Self::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

impl ProbeStatus {
    pub fn log(&self) {
        match &self.state {
            ProbeState::Failed(why) => error!(probe = self.name, "probe failed to attach: {why}"),
            state => {
                info!(probe = self.name, programs = ?self.programs, ids = ?self.program_ids, "probe {state}")
            }
        }
    }
}

/// The loaded object: programs stay attached for as long as this lives (links detach on drop).
pub struct Programs {
    ebpf: Ebpf,
    /// The object's map names (the kernel keeps only 15 characters of each).
    map_names: Vec<String>,
    /// Held while the kernel times the programs (config `bpf.program_stats`).
    run_stats: Option<accounting::RunStats>,
    probes: Vec<ProbeStatus>,
    pub syscalls: Option<Mutex<syscalls::SyscallMaps>>,
    pub runqueue: Option<Mutex<sched::RunqueueMaps>>,
    pub processes: Option<Mutex<sched::ProcessMaps>>,
    pub capabilities: Option<Mutex<security::CapabilityMaps>>,
    /// Taken by the task that keeps the cgroup index current.
    pub cgroup_events: Mutex<Option<cgroups::CgroupEventReader>>,
    /// Taken by the task that reports OOM kills.
    pub oom_events: Mutex<Option<oom::OomEventReader>>,
    /// The network families' maps and XDP attachments.
    pub net: Mutex<net::NetMaps>,
    map_full: PerCpuArray<aya::maps::MapData, u64>,
    /// Held (locked) while the programs run.
    pins: Option<Pins>,
    /// What each ring buffer delivered, could not decode and lost.
    pub rings: std::sync::Arc<rings::Rings>,
}

impl fmt::Debug for Programs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Programs").field("probes", &self.probes).finish_non_exhaustive()
    }
}

impl Programs {
    pub fn load(config: &Config, hierarchies: &Hierarchies) -> Result<Self, LoadError> {
        if OBJECT.is_empty() {
            return Err(LoadError::NoObject);
        }
        let btf = Btf::from_sys_fs().map_err(LoadError::Btf)?;
        // Offsets for the kernel side's walk to the current cgroup; zeros if BTF lacks them, in
        // which case the syscall family reports why and is not attached.
        let v1_controller = hierarchies.v1.as_ref().map(|(controller, _)| *controller);
        let offsets = syscalls::CgroupOffsets::read(v1_controller);
        let zero = syscalls::CgroupOffsets::default();
        let walk = offsets.as_ref().unwrap_or(&zero);
        let task = sched::TaskOffsets::read();
        let task_fields = *task.as_ref().unwrap_or(&sched::TaskOffsets::default());
        let security_offsets = security::SecurityOffsets::read();
        let security_fields = *security_offsets.as_ref().unwrap_or(&security::SecurityOffsets::default());
        // The OOM family's tracepoint record layout (the victim's pid and tgid offsets are the
        // task offsets above).
        let layout = oom::RecordLayout::read(&config.paths.tracefs);
        let sock = net::SockOffsets::read();
        let facts = loader::KernelFacts {
            walk: *walk,
            task: task_fields,
            security: security_fields,
            sock: *sock.as_ref().unwrap_or(&net::SockOffsets::default()),
            oom_fields: OOM_FIELD_GLOBALS
                .iter()
                .map(|(field, global)| (*global, layout.as_ref().map_or(FIELD_ABSENT, |l| l.offset(field))))
                .collect(),
            oom_comm_data_loc: u32::from(layout.as_ref().is_ok_and(|l| l.comm_data_loc)),
            retransmit_has_err: u32::from(net::tracepoint_has_field(
                &config.paths.tracefs,
                "tcp",
                "tcp_retransmit_skb",
                "err",
            )),
            kfree_skb_has_rx_sk: u32::from(net::tracepoint_has_field(
                &config.paths.tracefs,
                "skb",
                "kfree_skb",
                "rx_sk",
            )),
        };
        let load = |pins: Option<&Pins>| loader::load(OBJECT, &btf, &facts, config, pins);
        let mut pins = open_pins(config);
        let mut ebpf = match (load(pins.as_ref()), pins.as_mut()) {
            (Err(EbpfError::MapError(err @ MapError::IncompatiblePinnedMap { .. })), Some(pins)) => {
                warn!(dir = %pins.dir().display(), "pinned maps do not fit this configuration ({err}): replacing them, their counters restart");
                pins.replace()?;
                load(Some(pins))
            }
            (loaded, _) => loaded,
        }
        .map_err(LoadError::Object)?;
        let map_names = ebpf.maps().map(|(name, _)| name.to_owned()).collect();
        let map_full = take_map(&mut ebpf, wire::MAP_FULL_MAP)?;
        let map_full = PerCpuArray::try_from(map_full)
            .map_err(|source| LoadError::Map { name: wire::MAP_FULL_MAP, source })?;

        let mut probes = Vec::new();
        let attached = match &offsets {
            _ if !config.syscalls.enabled => Err(ProbeState::Disabled),
            Err(err) => Err(ProbeState::Failed(format!("cannot find the cgroup of a task: {err}"))),
            Ok(_) => syscalls::attach(&mut ebpf, &btf, config, slots_continued(pins.as_ref()))
                .map_err(|err| ProbeState::Failed(format!("{err:#}"))),
        };
        let syscalls = match attached {
            Ok(maps) => {
                let mut status = syscalls::status(ProbeState::Attached, config);
                status.program_ids = program_ids(&ebpf, &status.programs);
                probes.push(status);
                Some(Mutex::new(maps))
            }
            Err(state) => {
                probes.push(syscalls::status(state, config));
                None
            }
        };

        let attached = match &offsets {
            Err(err) => Err(ProbeState::Failed(format!("cannot find a cgroup's hierarchy: {err}"))),
            Ok(_) => cgroups::attach(&mut ebpf, &btf).map_err(|err| ProbeState::Failed(format!("{err:#}"))),
        };
        let rings = std::sync::Arc::new(rings::Rings::default());
        let cgroup_events = match attached {
            Ok(reader) => {
                rings.cgroup_events.watch_losses(reader.lost.clone());
                let mut status = cgroups::status(ProbeState::Attached);
                status.program_ids = program_ids(&ebpf, &status.programs);
                probes.push(status);
                Some(reader)
            }
            Err(state) => {
                probes.push(cgroups::status(state));
                None
            }
        };

        let attached = match (&offsets, &task, &layout) {
            (Err(err), _, _) => Err(format!("cannot find the cgroup of a task: {err}")),
            (_, Err(err), _) => Err(format!("cannot read task_struct members: {err}")),
            (_, _, Err(err)) => Err(format!("no oom:mark_victim tracepoint: {err:#}")),
            _ => oom::attach(&mut ebpf, &btf).map_err(|err| format!("{err:#}")),
        };
        let oom_events = match attached {
            Ok(reader) => {
                rings.oom_events.watch_losses(reader.lost.clone());
                let mut status = oom::status(ProbeState::Attached);
                status.program_ids = program_ids(&ebpf, &status.programs);
                probes.push(status);
                Some(reader)
            }
            Err(why) => {
                probes.push(oom::status(ProbeState::Failed(why)));
                None
            }
        };

        // Both scheduler families find a task's cgroup (the cgroup walk) and read its pid.
        let sched_ready = match (&offsets, &task) {
            (Err(err), _) => Err(format!("cannot find the cgroup of a task: {err}")),
            (_, Err(err)) => Err(format!("cannot read task_struct members: {err}")),
            _ => Ok(()),
        };
        let attached = match &sched_ready {
            _ if !config.sched.runqueue_latency => Err(ProbeState::Disabled),
            Err(why) => Err(ProbeState::Failed(why.clone())),
            Ok(()) => sched::attach_runqueue(&mut ebpf, &btf, config.sched.runqueue_max_entries)
                .map_err(|err| ProbeState::Failed(format!("{err:#}"))),
        };
        let runqueue = match attached {
            Ok(maps) => {
                let mut status = sched::runqueue_status(ProbeState::Attached);
                status.program_ids = program_ids(&ebpf, &status.programs);
                probes.push(status);
                Some(Mutex::new(maps))
            }
            Err(state) => {
                probes.push(sched::runqueue_status(state));
                None
            }
        };
        let attached = match &sched_ready {
            _ if !config.sched.processes => Err(ProbeState::Disabled),
            Err(why) => Err(ProbeState::Failed(why.clone())),
            Ok(()) => sched::attach_processes(&mut ebpf, &btf, config.sched.process_max_entries)
                .map_err(|err| ProbeState::Failed(format!("{err:#}"))),
        };
        let processes = match attached {
            Ok(maps) => {
                if let Some(reader) = &maps.events {
                    rings.process_events.watch_losses(reader.lost.clone());
                }
                let mut status = sched::processes_status(ProbeState::Attached);
                status.program_ids = program_ids(&ebpf, &status.programs);
                probes.push(status);
                Some(Mutex::new(maps))
            }
            Err(state) => {
                probes.push(sched::processes_status(state));
                None
            }
        };
        let net = net::attach_families(&mut ebpf, &btf, config, hierarchies, &offsets, &sock, &mut probes);
        let run_stats = if config.bpf.program_stats { accounting::RunStats::enable() } else { None };
        let attached = match (&offsets, &security_offsets) {
            _ if !config.security.capability_checks => Err(ProbeState::Disabled),
            (Err(err), _) => Err(ProbeState::Failed(format!("cannot find the cgroup of a task: {err}"))),
            (_, Err(err)) => {
                Err(ProbeState::Failed(format!("cannot read user_namespace and task_struct members: {err}")))
            }
            _ => security::attach(&mut ebpf, &btf, config.security.capability_max_entries)
                .map_err(|err| ProbeState::Failed(format!("{err:#}"))),
        };
        let capabilities = match attached {
            Ok(maps) => {
                let mut status = security::status(ProbeState::Attached);
                status.program_ids = program_ids(&ebpf, &status.programs);
                probes.push(status);
                Some(Mutex::new(maps))
            }
            Err(state) => {
                probes.push(security::status(state));
                None
            }
        };
        Ok(Self {
            ebpf,
            map_names,
            run_stats,
            probes,
            syscalls,
            runqueue,
            processes,
            capabilities,
            cgroup_events: Mutex::new(cgroup_events),
            oom_events: Mutex::new(oom_events),
            net: Mutex::new(net),
            map_full,
            pins,
            rings,
        })
    }

    /// Kernel memory of each map, by name.
    pub fn map_memory(&self) -> std::collections::BTreeMap<String, u64> {
        accounting::map_memory(&self.map_names)
    }

    /// (program, run time, runs) of every attached program, while the kernel's statistics are on.
    pub fn program_runs(&self) -> Option<Vec<(&'static str, std::time::Duration, u64)>> {
        self.run_stats.as_ref()?;
        let attached = self.probes.iter().filter(|p| p.state == ProbeState::Attached);
        Some(accounting::program_runs(&self.ebpf, attached.flat_map(|p| p.programs.iter().copied())))
    }

    /// Where the maps are pinned, if they are.
    pub fn pin_dir(&self) -> Option<&std::path::Path> {
        self.pins.as_ref().map(Pins::dir)
    }

    pub fn probe_statuses(&self) -> Vec<ProbeStatus> {
        self.probes.clone()
    }

    /// How often each bounded kernel resource was found exhausted, summed over CPUs.
    pub fn map_full_counts(&self) -> Vec<(&'static str, u64)> {
        [
            ("cgroup_slots", map_full::CGROUP_SLOTS),
            ("cgroup_storage", map_full::CGROUP_STORAGE),
            (wire::SYSCALL_ERRORS_MAP, map_full::SYSCALL_ERRORS),
            (wire::SYSCALL_LATENCY_MAP, map_full::SYSCALL_LATENCY),
            (wire::SYSCALL_START_MAP, map_full::SYSCALL_START),
            (RUNQ_LATENCY_MAP, map_full::RUNQ_LATENCY),
            (RUNQ_START_MAP, map_full::RUNQ_START),
            (PROCESS_COUNTS_MAP, map_full::PROCESS_COUNTS),
            (net_wire::CGROUP_TRAFFIC_MAP, map_full::NET_CGROUP_TRAFFIC),
            (net_wire::INTERFACE_TRAFFIC_MAP, map_full::NET_INTERFACE_TRAFFIC),
            (net_wire::TCP_EVENTS_MAP, map_full::NET_TCP_EVENTS),
            (net_wire::CGROUP_DROPS_MAP, map_full::NET_CGROUP_DROPS),
            (CAPABILITY_CHECKS_MAP, map_full::CAPABILITY_CHECKS),
        ]
        .into_iter()
        .map(|(name, index)| (name, self.map_full.get(&index, 0).map(|v| v.iter().sum()).unwrap_or(0)))
        .collect()
    }
}

/// Whether the cgroup slots (free queue, owners, rows) carry on from a previous agent, in which
/// case they must not be handed out again.
fn slots_continued(pins: Option<&Pins>) -> bool {
    pins.is_some_and(|pins| pins.reused(wire::FREE_SLOTS_MAP))
}

/// The pin directory, locked; `None` (logged) when pinning is off or impossible.
fn open_pins(config: &Config) -> Option<Pins> {
    let base = &config.bpf.pin_dir;
    if base.as_os_str().is_empty() {
        info!("map pinning is off (bpf.pin_dir is empty): counters restart with the agent");
        return None;
    }
    match Pins::open(base) {
        Ok(pins) => {
            info!(dir = %pins.dir().display(), continued = ?pins.reused_maps(), "maps pinned");
            Some(pins)
        }
        Err(err) => {
            error!("cannot pin maps: {err}; counters restart with the agent");
            None
        }
    }
}

pub(crate) fn program_ids(ebpf: &Ebpf, names: &[&str]) -> Vec<u32> {
    names.iter().filter_map(|name| ebpf.program(name)?.info().ok()).map(|info| info.id()).collect()
}

/// Loads and attaches BTF tracepoint programs, given as (program, tracepoint), in that order.
pub(crate) fn load_and_attach(ebpf: &mut Ebpf, btf: &Btf, programs: &[(&str, &str)]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    for &(name, tracepoint) in programs {
        let program: &mut aya::programs::BtfTracePoint = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the object"))?
            .try_into()?;
        program.load(tracepoint, btf).with_context(|| format!("loading {name} (tp_btf/{tracepoint})"))?;
        program.attach().with_context(|| format!("attaching {name}"))?;
    }
    Ok(())
}

pub(crate) fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, LoadError> {
    ebpf.take_map(name).ok_or(LoadError::MissingMap(name))
}
