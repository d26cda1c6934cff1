//! Loading the kernel programs, attaching them probe family by probe family, and reading their
//! maps. A family that fails to attach is reported (log, `/readyz`, metrics) while the others run.

pub mod accounting;
mod batch;
pub mod block_io;
pub mod budget;
pub mod capabilities;
pub mod cgroup_walk;
pub mod cgroups;
pub mod counters;
pub mod dns;
pub mod escape;
pub mod facts;
pub mod family;
pub mod features;
mod loader;
pub mod memory_reclaim;
pub mod net;
pub mod oom;
pub mod pins;
pub mod processes;
pub mod readiness;
pub mod rings;
pub mod runqueue;
pub mod runtimes;
pub mod syscalls;
pub mod task;
pub mod trace;

use std::{
    any::TypeId,
    fmt,
    marker::PhantomData,
    ops::{Deref, DerefMut},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use aya::{
    Btf, Ebpf, EbpfError,
    maps::{MapError, PerCpuArray},
};
use kernsight_common::{
    counters::MAP_FULL_MAP,
    syscalls::{self as wire},
};
use tracing::{error, info, warn};

use crate::{config::Config, kernel::cgroupfs::Hierarchies};
use budget::MapPlan;
use facts::KernelFacts;
use family::{AttachContext, Attached, Family, MapRow};
use pins::Pins;
use rings::{EventRing, RingStats};

/// Every probe family, in start-up order. Adding a family is its own module plus one line here.
pub static FAMILIES: &[&dyn Family] = &[
    &syscalls::Syscalls,
    &cgroups::CgroupLifecycle,
    &oom::Oom,
    &runqueue::Runqueue,
    &processes::Processes,
    &net::CgroupTraffic,
    &net::TcInterfaces,
    &net::Interfaces,
    &net::Tcp,
    &net::Drops,
    &capabilities::Capabilities,
    &memory_reclaim::MemoryReclaim,
    &block_io::BlockIo,
    &dns::Dns,
    &escape::Escape,
];

/// The objects `build.rs` produced from `kernsight-ebpf`: the full one and the two for older
/// kernels (`features::Object`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kernsight"));
static HASHED_SLOTS_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kernsight-hashed-slots"));
static FALLBACK_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kernsight-fallback"));

/// The bytes of the build `object`, or `NoObject` when the binary was built without them.
pub(crate) fn object_bytes(object: &features::Object) -> Result<&'static [u8], LoadError> {
    let bytes = match object {
        features::Object::Full => OBJECT,
        features::Object::HashedSlots { .. } => HASHED_SLOTS_OBJECT,
        features::Object::Fallback { .. } => FALLBACK_OBJECT,
    };
    if bytes.is_empty() { Err(LoadError::NoObject) } else { Ok(bytes) }
}

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
    #[error(transparent)]
    ObjectMaps(#[from] budget::ObjectError),
    /// The pinned maps are the fallback build's (handled by `load_families`, never shown).
    #[error("the pinned maps were made by the fallback build")]
    PinnedByFallback(Option<Pins>),
}

/// Whether a family failed because the verifier refused one of its programs.
fn verifier_refused(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<aya::programs::ProgramError>(),
            Some(aya::programs::ProgramError::LoadError { .. })
        )
    })
}

/// The programs of the attached families, each once: two families may share one
/// (`net::traffic_and_dns`).
pub fn attached_programs(probes: &[ProbeStatus]) -> Vec<&'static str> {
    let mut programs: Vec<&'static str> = Vec::new();
    let attached = probes.iter().filter(|p| p.state == ProbeState::Attached);
    for program in attached.flat_map(|p| p.programs.iter().copied()) {
        if !programs.contains(&program) {
            programs.push(program);
        }
    }
    programs
}

/// What happened to one probe family at start-up.
#[derive(Debug, Clone)]
pub struct ProbeStatus {
    pub name: &'static str,
    pub programs: Vec<&'static str>,
    /// Kernel ids of the attached programs (as `bpftool prog show` lists them).
    pub program_ids: Vec<u32>,
    /// Which implementation runs on this kernel (`kernsight_probe_info`).
    pub implementation: &'static str,
    /// Why that implementation is a fallback, if it is.
    pub fallback: Option<String>,
    pub state: ProbeState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeState {
    Attached,
    Disabled,
    /// The kernel lacks what the family needs (feature probing said so before any load): the
    /// node runs what it can, ready, and says which family it cannot run and why.
    Unsupported(String),
    /// The kernel should run the family and did not (verifier, attach or map error): the
    /// agent is not ready.
    Failed(String),
}

impl fmt::Display for ProbeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Attached => f.write_str("attached"),
            Self::Disabled => f.write_str("disabled by config"),
            Self::Unsupported(why) => write!(f, "not supported by this kernel: {why}"),
            Self::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

impl ProbeStatus {
    pub fn log(&self) {
        match &self.state {
            ProbeState::Failed(why) => error!(probe = self.name, "probe failed to attach: {why}"),
            ProbeState::Unsupported(why) => {
                warn!(probe = self.name, "probe not attached, this kernel cannot run it: {why}")
            }
            state => info!(
                probe = self.name,
                implementation = self.implementation,
                programs = ?self.programs,
                ids = ?self.program_ids,
                "probe {state}{}",
                self.fallback.as_ref().map(|why| format!(" with a fallback: {why}")).unwrap_or_default()
            ),
        }
    }
}

/// An attached family's state, with its type for typed access by its collector.
struct AttachedFamily {
    name: &'static str,
    type_id: TypeId,
    state: Mutex<Box<dyn Attached>>,
}

/// The loaded object: programs stay attached for as long as this lives (links detach on drop).
pub struct Programs {
    ebpf: Ebpf,
    /// The maps held once the families took theirs, for their kernel memory.
    held_maps: accounting::HeldMaps,
    /// Held while the kernel times the programs (config `bpf.program_stats`).
    run_stats: Option<accounting::RunStats>,
    probes: Vec<ProbeStatus>,
    attached: Vec<AttachedFamily>,
    /// Each family's event ring, until its consumer takes it.
    events: Mutex<Vec<(&'static str, EventRing)>>,
    /// What each ring buffer delivered, could not decode and lost.
    rings: Vec<Arc<RingStats>>,
    map_full: PerCpuArray<aya::maps::MapData, u64>,
    /// Held (locked) while the programs run.
    pins: Option<Pins>,
    /// Map entries that could not be read by the collectors (they vanished while being read).
    read_errors: AtomicU64,
    /// The maps' planned kernel memory and the budget it was fitted to.
    plan: MapPlan,
    /// The first family of the full build whose program the verifier refused, and why.
    verifier_refusal: Option<String>,
}

impl fmt::Debug for Programs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Programs").field("probes", &self.probes).finish_non_exhaustive()
    }
}

/// A locked family state of type `T`.
pub struct FamilyGuard<'a, T> {
    guard: MutexGuard<'a, Box<dyn Attached>>,
    _type: PhantomData<T>,
}

impl<T: 'static> Deref for FamilyGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        match self.guard.as_any().downcast_ref() {
            Some(state) => state,
            None => unreachable!("the type was checked when the guard was made"),
        }
    }
}

impl<T: 'static> DerefMut for FamilyGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        match self.guard.as_any_mut().downcast_mut() {
            Some(state) => state,
            None => unreachable!("the type was checked when the guard was made"),
        }
    }
}

impl Programs {
    /// Loads the object specialised to this kernel and config, then attaches every enabled
    /// family on its own: one that cannot run or fails is reported while the others run.
    pub fn load(config: &Config, hierarchies: &Hierarchies) -> Result<Self, LoadError> {
        Self::load_families(config, hierarchies, FAMILIES)
    }

    /// As `load`, attaching only `families` (each still as its config says).
    pub fn load_families(
        config: &Config,
        hierarchies: &Hierarchies,
        families: &[&dyn Family],
    ) -> Result<Self, LoadError> {
        let mut programs = match Self::load_object(config, hierarchies, families, open_pins(config), None) {
            Err(LoadError::PinnedByFallback(pins)) => {
                let why = "the pinned maps of this boot are the fallback build's".to_owned();
                warn!("{why}: loading the fallback kernel programs");
                let pins = without_new_pins(pins);
                return Self::load_object(config, hierarchies, families, pins, Some(why))
                    .inspect(|programs| programs.log_plan());
            }
            loaded => loaded?,
        };
        // Feature probes say what a kernel has, not everything its verifier accepts: a kernel
        // can refuse what the full or hashed-slots build does with a feature it has (6.18.44
        // refuses `bpf_cgrp_storage_get` on the cgroup the hybrid-cgroup walk reaches, which
        // 6.18 builds before it accepted). The fallback build does the same counting without
        // local storage or BTF pointers, so the agent loads that rather than run without the
        // family.
        let programs = match &programs.verifier_refusal {
            Some(refusal) if config.bpf.object == crate::config::ObjectChoice::Auto => {
                let why = format!("the kernel's verifier rejected {refusal}");
                warn!("{why}: loading the fallback kernel programs instead");
                // The same pin directory, still locked, without what the refused load pinned.
                let pins = programs.pins.take();
                drop(programs);
                let pins = without_new_pins(pins);
                Self::load_object(config, hierarchies, families, pins, Some(why))?
            }
            _ => programs,
        };
        programs.log_plan();
        Ok(programs)
    }

    /// The memory plan of the maps that stay, said once.
    fn log_plan(&self) {
        let plan = &self.plan;
        match plan.shrink_line() {
            Some(line) => warn!("{line}"),
            None => info!(
                cpus = plan.cpus,
                budget = %budget::mebibytes(plan.budget_bytes),
                "eBPF maps take {} of kernel memory",
                budget::mebibytes(plan.total_bytes())
            ),
        }
    }

    /// Loads and attaches with the object the kernel's features choose, or the fallback build
    /// for `fallback_because`.
    fn load_object(
        config: &Config,
        hierarchies: &Hierarchies,
        families: &[&dyn Family],
        mut pins: Option<Pins>,
        fallback_because: Option<String>,
    ) -> Result<Self, LoadError> {
        // Asked before the own parse is made (see there).
        features::tracing_programs();
        let own_btf = crate::kernel::btf::Btf::from_sys_fs();
        let mut facts = KernelFacts::read(own_btf.as_ref(), hierarchies.clone(), config);
        if let Some(why) = fallback_because {
            facts.object = features::Object::Fallback { why };
        }
        // The member offsets are read: the parsed types (megabytes) are not needed any more.
        drop(own_btf);
        // aya's parse of the same types (9 MiB of heap on 6.18) only now. The three parses held
        // at once (this one, the own one and the tracing probe's) were the agent's peak of
        // memory: 55 MiB resident at start on an idle node, 21 MiB once started.
        let btf = Btf::from_sys_fs().map_err(LoadError::Btf)?;
        let object = object_bytes(&facts.object)?;
        match facts.object.why() {
            None => info!(object = facts.object.name(), "loading the full kernel programs"),
            Some(why) => {
                warn!(object = facts.object.name(), "loading kernel programs for older kernels: {why}")
            }
        }
        let objects = budget::object_maps(object)?;
        let cpus = budget::possible_cpus().unwrap_or_else(|why| {
            let online = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
            warn!("{why}: planning map memory for the {online} CPUs online");
            online
        });
        let running: Vec<&str> = families
            .iter()
            .filter(|family| family.enabled(config) && family.unsupported(&facts, config).is_none())
            .map(|family| family.name())
            .collect();
        let runs = |family: &dyn Family| running.contains(&family.name());
        let plan_for =
            |budget_bytes: u64| MapPlan::new(&objects, FAMILIES, &runs, config, cpus, budget_bytes);
        let mut plan = plan_for(budget::budget_bytes(config));
        facts.size_quotas(&plan.config);
        let (mut replaced_pins, mut retried_smaller) = (false, false);
        let mut ebpf = loop {
            match loader::load(object, &btf, &facts, &plan, pins.as_ref()) {
                Ok(ebpf) => break ebpf,
                // Pins do not outlive a boot, so the kernel that refused the full build made
                // these with the fallback one: that build again, rather than replace the pins
                // and restart the counters only to be refused again. (The hashed-slots build
                // pins the same maps as the fallback one: it reads the fallback's pins.)
                Err(EbpfError::MapError(MapError::IncompatiblePinnedMap { .. }))
                    if facts.object == features::Object::Full
                        && config.bpf.object == crate::config::ObjectChoice::Auto =>
                {
                    return Err(LoadError::PinnedByFallback(pins));
                }
                Err(EbpfError::MapError(err @ MapError::IncompatiblePinnedMap { .. }))
                    if !replaced_pins && pins.is_some() =>
                {
                    if let Some(pins) = pins.as_mut() {
                        warn!(dir = %pins.dir().display(), "pinned maps do not fit this configuration ({err}): replacing them, their counters restart");
                        pins.replace()?;
                    }
                    replaced_pins = true;
                }
                // The node is short of memory (or the pod at its limit) although the plan fit
                // the budget: once, half the plan, rather than no agent at all.
                Err(EbpfError::MapError(MapError::CreateError { name, io_error }))
                    if !retried_smaller && io_error.raw_os_error() == Some(libc::ENOMEM) =>
                {
                    plan = plan_for(plan.total_bytes() / 2);
                    warn!(
                        "the kernel refused to create map {name} for want of memory ({io_error}): retrying once \
                         with half the map memory. {}",
                        plan.shrink_line().unwrap_or_default()
                    );
                    facts.size_quotas(&plan.config);
                    retried_smaller = true;
                }
                // Whatever else stops the pinned maps (an entry that appeared at a pin path after
                // the checks, a pinned object that is not a map) must not stop the agent, or it
                // would fail again at every start. A map error that has nothing to do with pins
                // fails the unpinned load as well, and is reported then.
                Err(EbpfError::MapError(err)) if pins.is_some() => {
                    error!("cannot pin maps: {err}; loading without pins, counters restart with the agent");
                    pins = None;
                }
                Err(err) => return Err(LoadError::Object(err)),
            }
        };
        // The families are attached and read with the bounds of the plan.
        let sized = plan.config.clone();
        let config = &sized;
        let map_names: Vec<String> = ebpf.maps().map(|(name, _)| name.to_owned()).collect();
        let map_full = take_map(&mut ebpf, MAP_FULL_MAP)?;
        let map_full = PerCpuArray::try_from(map_full)
            .map_err(|source| LoadError::Map { name: MAP_FULL_MAP, source })?;

        let slots_continued = slots_continued(pins.as_ref());
        let mut probes = Vec::new();
        let mut attached = Vec::new();
        let mut events = Vec::new();
        let mut rings = Vec::new();
        let mut verifier_refusal = None;
        for family in families {
            let implementation = family.implementation(&facts, config);
            let mut status = ProbeStatus {
                name: family.name(),
                programs: family.programs(config, &facts),
                program_ids: Vec::new(),
                implementation: implementation.name,
                fallback: implementation.fallback,
                state: ProbeState::Attached,
            };
            if !family.enabled(config) {
                status.state = ProbeState::Disabled;
            } else if let Some(why) = family.unsupported(&facts, config) {
                status.state = ProbeState::Unsupported(why);
            } else {
                let mut cx =
                    AttachContext { ebpf: &mut ebpf, btf: &btf, config, facts: &facts, slots_continued };
                match family.attach(&mut cx) {
                    Ok(mut state) => {
                        if let Some(programs) = state.programs() {
                            status.programs = programs;
                        }
                        if let Some(ring) = state.take_events() {
                            rings.push(ring.stats.clone());
                            events.push((family.name(), ring));
                        }
                        match state.failure() {
                            Some(why) => status.state = ProbeState::Failed(why),
                            None => status.program_ids = program_ids(&ebpf, &status.programs),
                        }
                        let type_id = (*state).as_any().type_id();
                        attached.push(AttachedFamily {
                            name: family.name(),
                            type_id,
                            state: Mutex::new(state),
                        });
                    }
                    Err(err) => {
                        if !facts.object.is_fallback() && verifier_refused(&err) && verifier_refusal.is_none()
                        {
                            let first = format!("{err}");
                            verifier_refusal =
                                Some(format!("{}'s {} ({first})", facts.object.name(), family.name()));
                        }
                        status.state = ProbeState::Failed(format!("{err:#}"))
                    }
                }
            }
            probes.push(status);
        }
        let run_stats = if config.bpf.program_stats { accounting::RunStats::enable() } else { None };
        // After the families: the maps of one that failed are let go with it.
        let held_maps = accounting::HeldMaps::find(&map_names);
        Ok(Self {
            ebpf,
            held_maps,
            run_stats,
            probes,
            attached,
            events: Mutex::new(events),
            rings,
            map_full,
            pins,
            read_errors: AtomicU64::new(0),
            plan,
            verifier_refusal,
        })
    }

    pub fn count_read_errors(&self, entries: u64) {
        self.read_errors.fetch_add(entries, Ordering::Relaxed);
    }

    pub fn read_errors(&self) -> u64 {
        self.read_errors.load(Ordering::Relaxed)
    }

    /// The state of the attached family of type `T`, locked; `None` if it is not attached.
    /// Lock order: whoever also holds the cgroup index takes the index first (the maintenance
    /// pass does, and recycles every family under it).
    pub fn family<T: Attached>(&self) -> Option<FamilyGuard<'_, T>> {
        let family = self.attached.iter().find(|f| f.type_id == TypeId::of::<T>())?;
        let guard = family.state.lock().unwrap_or_else(|e| e.into_inner());
        Some(FamilyGuard { guard, _type: PhantomData })
    }

    /// The event ring of the family `name`, once: its consumer takes it.
    pub fn take_events(&self, name: &str) -> Option<EventRing> {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let at = events.iter().position(|(family, _)| *family == name)?;
        Some(events.swap_remove(at).1)
    }

    /// Delivery accounting of every ring buffer.
    pub fn rings(&self) -> &[Arc<RingStats>] {
        &self.rings
    }

    /// The ring named `name`, if its family is attached.
    pub fn ring(&self, name: &str) -> Option<&RingStats> {
        self.rings.iter().find(|r| r.name == name).map(AsRef::as_ref)
    }

    /// The fill of every bounded map of every attached family.
    pub fn map_rows(&self) -> Vec<MapRow> {
        self.attached
            .iter()
            .flat_map(|f| f.state.lock().unwrap_or_else(|e| e.into_inner()).map_rows())
            .collect()
    }

    /// Removes the entries of cgroups gone for at least `grace`, in every family.
    pub fn recycle(&self, gone_for: &mut dyn FnMut(u64) -> Option<Duration>, grace: Duration) -> usize {
        let mut removed = 0;
        for family in &self.attached {
            let mut state = family.state.lock().unwrap_or_else(|e| e.into_inner());
            let count = state.recycle(gone_for, grace);
            if count > 0 {
                tracing::debug!(family = family.name, entries = count, "forgot removed cgroups");
            }
            removed += count;
        }
        removed
    }

    /// Every cgroup id the attached families hold counts or a slot for (`recycle` as a visitor
    /// that removes nothing).
    pub fn cgroup_ids(&self) -> std::collections::HashSet<u64> {
        let mut ids = std::collections::HashSet::new();
        self.recycle(
            &mut |id| {
                ids.insert(id);
                None
            },
            Duration::ZERO,
        );
        ids
    }

    /// The maps' planned kernel memory, the budget and what was shrunk to meet it.
    pub fn map_plan(&self) -> &MapPlan {
        &self.plan
    }

    /// Kernel memory of each map, by name.
    pub fn map_memory(&self) -> std::collections::BTreeMap<String, u64> {
        self.held_maps.memory()
    }

    /// (program, run time, runs) of every attached program, while the kernel's statistics are on.
    pub fn program_runs(&self) -> Option<Vec<(&'static str, std::time::Duration, u64)>> {
        self.run_stats.as_ref()?;
        Some(accounting::program_runs(&self.ebpf, attached_programs(&self.probes).into_iter()))
    }

    /// (program, runs the kernel skipped because a BPF program was already running on that CPU)
    /// of every attached program, where the kernel counts them (5.12+).
    pub fn recursion_misses(&self) -> Vec<(&'static str, u64)> {
        accounting::recursion_misses(&self.ebpf, attached_programs(&self.probes).into_iter())
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
        FAMILIES
            .iter()
            .flat_map(|family| family.bounds().iter())
            .map(|&(name, index)| (name, self.map_full.get(&index, 0).map(|v| v.iter().sum()).unwrap_or(0)))
            .collect()
    }
}

/// Whether the cgroup slots (free queue, owners, rows) carry on from a previous agent, in which
/// case they must not be handed out again.
fn slots_continued(pins: Option<&Pins>) -> bool {
    pins.is_some_and(|pins| pins.reused(wire::FREE_SLOTS_MAP))
}

/// `pins` without what a load that is about to be retried pinned; `None` (logged) if that
/// cannot be undone.
fn without_new_pins(pins: Option<Pins>) -> Option<Pins> {
    match pins.map(|pins| pins.forget_new().map(|()| pins)).transpose() {
        Ok(pins) => pins,
        Err(err) => {
            error!("cannot pin maps: {err}; counters restart with the agent");
            None
        }
    }
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
