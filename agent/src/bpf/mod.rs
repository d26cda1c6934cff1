//! Loading the kernel programs, attaching them probe family by probe family, and reading their
//! maps. A family that fails to attach is reported (log, `/readyz`, metrics) while the others run.

pub mod syscalls;

use std::fmt;

use aya::{Btf, Ebpf, EbpfLoader, maps::PerCpuArray};
use kernsight_common::syscalls::{LATENCY_ENABLED_GLOBAL, MAP_FULL_MAP, SYSCALL_COUNTS_MAP, SYSCALL_LATENCY_MAP, SYSCALL_START_MAP};
use tracing::{error, info};

use crate::config::Config;

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
}

/// What happened to one probe family at start-up.
#[derive(Debug, Clone)]
pub struct ProbeStatus {
    pub name: &'static str,
    pub programs: Vec<&'static str>,
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
            state => info!(probe = self.name, programs = ?self.programs, "probe {state}"),
        }
    }
}

/// The loaded object: programs stay attached for as long as this lives (links detach on drop).
pub struct Programs {
    _ebpf: Ebpf,
    probes: Vec<ProbeStatus>,
    pub syscalls: Option<syscalls::SyscallMaps>,
    pub map_full: PerCpuArray<aya::maps::MapData, u64>,
}

impl fmt::Debug for Programs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Programs").field("probes", &self.probes).finish_non_exhaustive()
    }
}

impl Programs {
    pub fn load(config: &Config) -> Result<Self, LoadError> {
        if OBJECT.is_empty() {
            return Err(LoadError::NoObject);
        }
        let btf = Btf::from_sys_fs().map_err(LoadError::Btf)?;
        let latency = u8::from(config.syscalls.latency_histogram);
        let mut ebpf = EbpfLoader::new()
            .btf(&btf)
            .override_global(LATENCY_ENABLED_GLOBAL, &latency, true)
            .map_max_entries(SYSCALL_COUNTS_MAP, config.syscalls.max_entries)
            .map_max_entries(SYSCALL_LATENCY_MAP, config.syscalls.latency_max_entries)
            .load(OBJECT)
            .map_err(LoadError::Object)?;
        let map_full = take_map(&mut ebpf, MAP_FULL_MAP)?;
        let map_full = PerCpuArray::try_from(map_full).map_err(|source| LoadError::Map { name: MAP_FULL_MAP, source })?;

        let mut probes = Vec::new();
        let syscalls = if config.syscalls.enabled {
            match syscalls::attach(&mut ebpf, &btf, config) {
                Ok(maps) => {
                    probes.push(syscalls::status(ProbeState::Attached, config));
                    Some(maps)
                }
                Err(err) => {
                    probes.push(syscalls::status(ProbeState::Failed(format!("{err:#}")), config));
                    None
                }
            }
        } else {
            probes.push(syscalls::status(ProbeState::Disabled, config));
            None
        };
        Ok(Self { _ebpf: ebpf, probes, syscalls, map_full })
    }

    pub fn probe_statuses(&self) -> Vec<ProbeStatus> {
        self.probes.clone()
    }

    /// How many updates found each map full, summed over CPUs, by map name.
    pub fn map_full_counts(&self) -> Vec<(&'static str, u64)> {
        use kernsight_common::syscalls::MapFullSlot;
        [
            (SYSCALL_COUNTS_MAP, MapFullSlot::SyscallCounts),
            (SYSCALL_LATENCY_MAP, MapFullSlot::SyscallLatency),
            (SYSCALL_START_MAP, MapFullSlot::SyscallStart),
        ]
        .into_iter()
        .map(|(name, slot)| {
            let total = self.map_full.get(&(slot as u32), 0).map(|v| v.iter().sum()).unwrap_or(0);
            (name, total)
        })
        .collect()
    }
}

pub(crate) fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, LoadError> {
    ebpf.take_map(name).ok_or(LoadError::MissingMap(name))
}
