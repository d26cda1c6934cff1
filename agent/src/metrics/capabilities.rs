//! `kernsight_capability_checks_total`, read from the `capabilities` family's map on each scrape.

use std::sync::Arc;

use kernsight_common::capabilities::{DENIED, NESTED_USER_NS};
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::{
    LabelNames, Series, encode_counters,
    naming::{CgroupNamer, WorkloadId},
};
use crate::{
    bpf::{Programs, capabilities::CapabilityMaps},
    kernel::names::capability_name,
    metadata::{cgroups::Tracker, identity::Resolver},
    seeded_hash::SeededMap,
};

#[derive(Debug)]
pub struct CapabilityCollector {
    programs: Arc<Programs>,
    tracker: Arc<Tracker>,
    resolver: Arc<Resolver>,
}

impl CapabilityCollector {
    pub fn new(programs: Arc<Programs>, tracker: Arc<Tracker>, resolver: Arc<Resolver>) -> Self {
        Self { programs, tracker, resolver }
    }
}

/// The `result` label.
pub fn result_label(result: u8) -> &'static str {
    if result == DENIED { "denied" } else { "granted" }
}

/// The `userns` label: whether the checked credentials live in the host's user namespace.
pub fn userns_label(userns: u8) -> &'static str {
    if userns == NESTED_USER_NS { "nested" } else { "initial" }
}

/// The `cap` and `result` labels of a capability check.
pub fn capability_labels(cap: u32, result: u8) -> (String, &'static str) {
    (capability_name(cap).into_owned(), result_label(result))
}

impl Collector for CapabilityCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Index before maps: the order the maintenance pass takes them in (the other order
        // deadlocks with it).
        let mut namer = CgroupNamer::new(&self.tracker, &self.resolver);
        let Some(maps) = self.programs.family::<CapabilityMaps>() else {
            return Ok(());
        };
        let with_id = LabelNames::of(&self.resolver);
        // Entries that vanish while being read (a cgroup forgotten meanwhile) are skipped.
        let (rows, _unreadable) = maps.read();
        drop(maps);
        let mut by_id: SeededMap<(WorkloadId, (u32, u8, u8)), u64> = SeededMap::default();
        for (key, value) in rows.into_iter().filter(|(_, v)| *v > 0) {
            *by_id.entry((namer.id(key.cgroup_id), (key.cap, key.result, key.userns))).or_default() += value;
        }
        namer.named_all();
        let series = namer.in_label_order(by_id);
        let named: Vec<_> = series
            .iter()
            .map(|((workload, (cap, result, userns)), n)| {
                (workload, capability_name(*cap), result_label(*result), userns_label(*userns), *n)
            })
            .collect();
        encode_counters(
            &mut encoder,
            "kernsight_capability_checks",
            "Capability checks (cap_capable) by workload, capability, result (granted or denied) and the user namespace of the credentials (initial: the host's; nested: a user namespace)",
            named.iter().map(|(workload, cap, result, userns, n)| {
                (
                    Series::of(workload, &with_id)
                        .with("cap", cap)
                        .with("result", result)
                        .with("userns", userns),
                    *n,
                )
            }),
        )
    }
}
