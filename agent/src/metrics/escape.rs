//! `kernsight_escape_attempts_total{...,vector,detail,result}`, read from the `escape` family's
//! map on each scrape: containers only (a host process mounting or loading modules is the host's
//! business), and the overflow series.

use std::{collections::BTreeMap, sync::Arc};

use kernsight_common::escape::{EscapeKey, answer, vector};
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::{LabelNames, Series, encode_counters, naming::CgroupNamer, naming::OTHER};
use crate::{
    bpf::{Programs, escape::EscapeMaps},
    metadata::{
        cgroups::Tracker,
        identity::{Resolver, Workload},
    },
};

#[derive(Debug)]
pub struct EscapeCollector {
    programs: Arc<Programs>,
    tracker: Arc<Tracker>,
    resolver: Arc<Resolver>,
}

impl EscapeCollector {
    pub fn new(programs: Arc<Programs>, tracker: Arc<Tracker>, resolver: Arc<Resolver>) -> Self {
        Self { programs, tracker, resolver }
    }
}

/// The `result` label of an answer.
pub fn result_label(answer: u16) -> &'static str {
    match answer {
        answer::GRANTED => "granted",
        answer::DENIED => "denied",
        _ => "failed",
    }
}

/// (workload, vector, detail, result) → attempts, for containers and the overflow cgroup.
type Attempts = BTreeMap<(Arc<Workload>, &'static str, &'static str, &'static str), u64>;

/// Adds the rows of containers (and of `other`, the map's overflow) to the series.
fn attempts(
    rows: impl IntoIterator<Item = (EscapeKey, u64)>,
    mut name: impl FnMut(u64) -> Arc<Workload>,
) -> Attempts {
    let mut series = Attempts::new();
    for (key, value) in rows.into_iter().filter(|(_, v)| *v > 0) {
        let workload = name(key.cgroup_id);
        if workload.container.is_empty() && workload.cgroup != OTHER {
            continue; // the host's own processes
        }
        let (vector, detail) = vector(key.syscall, key.detail);
        *series.entry((workload, vector, detail, result_label(key.answer))).or_default() += value;
    }
    series
}

impl Collector for EscapeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Index before maps: the order the maintenance pass takes them in (the other order
        // deadlocks with it).
        let mut namer = CgroupNamer::new(&self.tracker, &self.resolver);
        let Some(maps) = self.programs.family::<EscapeMaps>() else {
            return Ok(());
        };
        let with_id = LabelNames::of(&self.resolver);
        // Entries that vanish while being read (a cgroup forgotten meanwhile) are skipped.
        let (rows, _unreadable) = maps.read();
        drop(maps);
        let attempts = attempts(rows, |id| namer.name(id));
        drop(namer); // every cgroup named: the index goes before the encoding
        encode_counters(
            &mut encoder,
            "kernsight_escape_attempts",
            "Attempts at what container escapes are made of (mount, setns, unshare_user, module_load, mknod_device, ...), by container, vector, detail (the file system mounted, the device node made) and result: granted (the call succeeded), denied (EPERM, EACCES or ENOSYS: capabilities, seccomp or LSM refused it), failed (another error)",
            attempts.iter().map(|((workload, vector, detail, result), &n)| {
                let series = Series::of(workload, &with_id);
                (series.with("vector", vector).with("detail", detail).with("result", result), n)
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use kernsight_common::{
        counters::OVERFLOW_CGROUP_ID,
        escape::{detail, nr},
    };

    use super::*;

    fn container(name: &str) -> Arc<Workload> {
        Arc::new(Workload {
            container: name.into(),
            pod: "p".into(),
            namespace: "n".into(),
            ..Workload::default()
        })
    }

    #[test]
    fn containers_and_the_overflow_are_counted_by_vector_and_result() {
        let key = |cgroup_id, syscall, answer, detail| EscapeKey { cgroup_id, syscall, answer, detail };
        let rows = [
            (key(1, nr::MOUNT, answer::DENIED, detail::FS_PROC), 3),
            (key(1, nr::FSOPEN, answer::DENIED, detail::FS_PROC), 2),
            (key(1, nr::UNSHARE, answer::GRANTED, detail::USER_NAMESPACE), 1),
            (key(1, nr::KEYCTL, answer::FAILED, detail::NONE), 0),
            (key(2, nr::MOUNT, answer::GRANTED, detail::FS_OTHER), 7),
            (key(OVERFLOW_CGROUP_ID, 0, answer::GRANTED, 0), 4),
        ];
        let series = attempts(rows, |id| match id {
            1 => container("app"),
            2 => Arc::new(Workload { cgroup: "/system.slice/sshd.service".into(), ..Workload::default() }),
            _ => Arc::new(Workload { cgroup: OTHER.into(), ..Workload::default() }),
        });
        let app = container("app");
        assert_eq!(series.get(&(app.clone(), "mount", "proc", "denied")), Some(&5));
        assert_eq!(series.get(&(app.clone(), "unshare_user", "", "granted")), Some(&1));
        let other = Arc::new(Workload { cgroup: OTHER.into(), ..Workload::default() });
        assert_eq!(series.get(&(other, "other", "", "granted")), Some(&4));
        assert_eq!(series.len(), 3, "no host series, no zero series: {series:?}");
    }
}
