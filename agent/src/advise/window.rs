//! Observing a workload for a window (`--for DURATION`): the syscall and capability families
//! are loaded in this process, and at the window's end their counts are read for the target's
//! cgroups. The target is resolved at the end, so a container started during the window is
//! found, and what its runtime did in its cgroup to start it is counted too.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use super::{AdviseError, Observed, Target, target};
use crate::{
    bpf::{
        Programs,
        capabilities::{Capabilities, CapabilityMaps},
        family::Family,
        syscalls::{SyscallMaps, Syscalls},
    },
    config::Config,
    kernel::{cgroupfs::Hierarchies, names, preflight},
    metrics::capability_labels,
};

/// The families a window loads: nothing else is attached while it runs.
const OBSERVED: &[&dyn Family] = &[&Syscalls, &Capabilities];

/// Loads the counting programs, waits `window`, and reads what `target` did meanwhile.
pub fn observe(target: &Target, window: Duration, cri_socket: &Path) -> Result<Observed, AdviseError> {
    let failed = |e: &dyn std::fmt::Display| AdviseError::Window(e.to_string());
    preflight::check_privileges().map_err(|e| failed(&e))?;
    preflight::check_btf().map_err(|e| failed(&e))?;
    preflight::raise_memlock_limit();
    let mut config = Config::embedded();
    for family in OBSERVED {
        family.set_enabled(&mut config, true);
    }
    // Counts of this window only: maps of its own, never the agent's pinned ones (which hold
    // everything since the agent first started).
    config.bpf.pin_dir = std::path::PathBuf::new();
    preflight::ensure_mounts(&config.paths.tracefs, &config.paths.bpffs);
    // A bad target is cheaper to report before the window than after it.
    if let Target::Cgroup(path) = target {
        target::cgroup_id(&Hierarchies::detect(), path)?;
    }
    let hierarchies = Hierarchies::detect();
    let programs = Programs::load_families(&config, &hierarchies, OBSERVED).map_err(|e| failed(&e))?;
    let Some(syscalls) = programs.family::<SyscallMaps>() else {
        let why = programs
            .probe_statuses()
            .into_iter()
            .find(|p| p.name == crate::bpf::syscalls::PROBE)
            .map_or_else(|| "not loaded".to_owned(), |p| p.state.to_string());
        return Err(AdviseError::Window(format!("the syscall counters could not be attached: {why}")));
    };
    eprintln!("kernsight: observing {} for {window:?}", crate::terminal::Escaped(&target.to_string()));
    let end = Instant::now() + window;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        std::thread::sleep(left.min(Duration::from_millis(500)));
        if left.is_zero() {
            break;
        }
    }

    let ids: Vec<u64> = match target {
        Target::Container(name) => {
            vec![target::cgroup_id(&hierarchies, &target::running_container(name)?.cgroup)?]
        }
        Target::Cgroup(path) => vec![target::cgroup_id(&hierarchies, path)?],
        Target::Pod { namespace, name } => target::pod_containers(namespace, name, cri_socket)?
            .iter()
            .map(|c| target::cgroup_id(&hierarchies, &c.cgroup))
            .collect::<Result<_, _>>()?,
        Target::Workload { namespace, name } => {
            target::workload_containers(namespace.as_deref(), name, cri_socket)?
                .iter()
                .map(|c| target::cgroup_id(&hierarchies, &c.cgroup))
                .collect::<Result<_, _>>()?
        }
    };
    let mut observed = Observed { source: format!("the {window:?} window"), ..Observed::default() };
    let (calls, _) = syscalls.read_calls();
    drop(syscalls);
    for id in &ids {
        for (column, &count) in calls.get(id).into_iter().flat_map(|c| c.iter().enumerate()) {
            if count > 0 && column != kernsight_common::syscalls::OUT_OF_RANGE_COLUMN {
                *observed.syscalls.entry(names::syscall_name(column as u32).into_owned()).or_default() +=
                    count;
            }
        }
    }
    if let Some(maps) = programs.family::<CapabilityMaps>() {
        let (rows, _) = maps.read();
        let mut checks: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (key, count) in rows.into_iter().filter(|(k, n)| *n > 0 && ids.contains(&k.cgroup_id)) {
            let (cap, result) = capability_labels(key.cap, key.result);
            *checks.entry((cap, result.to_owned())).or_default() += count;
        }
        observed.capabilities = checks;
    }
    Ok(observed)
}
