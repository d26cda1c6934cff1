//! The syscall accounting family: `ks_sys_exit` (always) and `ks_sys_enter` (latency mode) on the
//! `raw_syscalls` tracepoints, and the per-CPU maps they fill.

use anyhow::Context as _;
use aya::{
    Btf, Ebpf,
    maps::{HashMap, MapData, PerCpuHashMap, PerCpuValues},
    programs::BtfTracePoint,
    util::nr_cpus,
};
use kernsight_common::syscalls::{
    LATENCY_SUM_BUCKET, LatencyKey, OVERFLOW_CGROUP_ID, OVERFLOW_SYSCALL, SYSCALL_COUNTS_MAP,
    SYSCALL_LATENCY_MAP, SYSCALL_START_MAP, SyscallKey,
};

use super::{ProbeState, ProbeStatus, take_map};
use crate::config::Config;

pub const PROBE: &str = "syscalls";
pub fn status(state: ProbeState, config: &Config) -> ProbeStatus {
    let mut programs = vec!["ks_sys_exit"];
    if config.syscalls.latency_histogram {
        programs.push("ks_sys_enter");
    }
    ProbeStatus { name: PROBE, programs, state }
}

/// The maps of an attached syscall family.
pub struct SyscallMaps {
    counts: PerCpuHashMap<MapData, SyscallKey, u64>,
    latency: Option<Latency>,
    pub counts_capacity: u32,
}

struct Latency {
    buckets: PerCpuHashMap<MapData, LatencyKey, u64>,
    start: HashMap<MapData, u32, u64>,
    capacity: u32,
}

/// One row of a map read: a key and its value summed over CPUs.
pub type Row<K> = (K, u64);

/// Loads and attaches the family's programs; on error nothing of the family stays attached.
pub fn attach(ebpf: &mut Ebpf, btf: &Btf, config: &Config) -> anyhow::Result<SyscallMaps> {
    let mut counts: PerCpuHashMap<MapData, SyscallKey, u64> =
        PerCpuHashMap::try_from(take_map(ebpf, SYSCALL_COUNTS_MAP)?)?;
    // The overflow entries must exist before the first update can find the map full.
    let overflow = SyscallKey { cgroup_id: OVERFLOW_CGROUP_ID, syscall: OVERFLOW_SYSCALL, errno: 0 };
    counts.insert(&overflow, per_cpu_zeros()?, 0).context("creating the overflow entry")?;

    let latency = if config.syscalls.latency_histogram {
        let mut buckets: PerCpuHashMap<MapData, LatencyKey, u64> =
            PerCpuHashMap::try_from(take_map(ebpf, SYSCALL_LATENCY_MAP)?)?;
        for bucket in 0..=LATENCY_SUM_BUCKET {
            let key = LatencyKey { cgroup_id: OVERFLOW_CGROUP_ID, syscall: OVERFLOW_SYSCALL, bucket };
            buckets.insert(&key, per_cpu_zeros()?, 0).context("creating the latency overflow entries")?;
        }
        let start = HashMap::try_from(take_map(ebpf, SYSCALL_START_MAP)?)?;
        Some(Latency { buckets, start, capacity: config.syscalls.latency_max_entries })
    } else {
        None
    };

    let exit: &mut BtfTracePoint = program(ebpf, "ks_sys_exit")?;
    exit.load("sys_exit", btf).context("loading ks_sys_exit (tp_btf/sys_exit)")?;
    if latency.is_some() {
        // Enter first, so that exits find their start time from the first syscall on.
        let enter: &mut BtfTracePoint = program(ebpf, "ks_sys_enter")?;
        enter.load("sys_enter", btf).context("loading ks_sys_enter (tp_btf/sys_enter)")?;
        enter.attach().context("attaching ks_sys_enter")?;
    }
    let exit: &mut BtfTracePoint = program(ebpf, "ks_sys_exit")?;
    exit.attach().context("attaching ks_sys_exit")?;

    Ok(SyscallMaps { counts, latency, counts_capacity: config.syscalls.max_entries })
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut BtfTracePoint> {
    let program = ebpf.program_mut(name).with_context(|| format!("program {name} missing from the object"))?;
    Ok(program.try_into()?)
}

fn per_cpu_zeros() -> anyhow::Result<PerCpuValues<u64>> {
    let cpus = nr_cpus().map_err(|(what, err)| anyhow::anyhow!("cannot count CPUs ({what}): {err}"))?;
    Ok(PerCpuValues::try_from(vec![0u64; cpus.get() as usize])?)
}

/// Reads a per-CPU counter map, summing each key's per-CPU values. Entries that vanish while
/// being read are skipped; the number of errors is returned beside the rows.
fn read_per_cpu<K: aya::Pod>(map: &PerCpuHashMap<MapData, K, u64>) -> (Vec<Row<K>>, u64) {
    let mut rows = Vec::new();
    let mut errors = 0;
    for entry in map.iter() {
        match entry {
            Ok((key, values)) => rows.push((key, values.iter().sum())),
            Err(_) => errors += 1,
        }
    }
    (rows, errors)
}

impl SyscallMaps {
    /// Calls per (cgroup, syscall, errno), and the number of entries that could not be read.
    pub fn read_counts(&self) -> (Vec<Row<SyscallKey>>, u64) {
        read_per_cpu(&self.counts)
    }

    /// Calls per (cgroup, syscall, latency bucket), when latency is measured.
    pub fn read_latency(&self) -> Option<(Vec<Row<LatencyKey>>, u64)> {
        self.latency.as_ref().map(|l| read_per_cpu(&l.buckets))
    }

    pub fn latency_capacity(&self) -> Option<u32> {
        self.latency.as_ref().map(|l| l.capacity)
    }

    /// Threads currently inside a syscall with a recorded start time (latency mode).
    pub fn threads_in_syscall(&self) -> Option<usize> {
        self.latency.as_ref().map(|l| l.start.keys().filter(Result::is_ok).count())
    }
}
