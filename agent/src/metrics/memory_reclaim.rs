//! `kernsight_memory_reclaim_stall_seconds`: time tasks spent in direct and memcg reclaim, by
//! workload and kind, read from the `memory_reclaim` family's map on each scrape.

use std::{collections::BTreeMap, sync::Arc};

use kernsight_common::memory_reclaim::kind_name;
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder, metrics::MetricType};

use super::{
    LabelNames, Series,
    histogram::{Latency, encode_histogram},
    naming::CgroupNamer,
};
use crate::{
    bpf::{Programs, memory_reclaim::ReclaimMaps},
    metadata::{
        cgroups::Tracker,
        identity::{Resolver, Workload},
    },
};

#[derive(Debug)]
pub struct ReclaimCollector {
    programs: Arc<Programs>,
    tracker: Arc<Tracker>,
    resolver: Arc<Resolver>,
}

impl ReclaimCollector {
    pub fn new(programs: Arc<Programs>, tracker: Arc<Tracker>, resolver: Arc<Resolver>) -> Self {
        Self { programs, tracker, resolver }
    }
}

impl Collector for ReclaimCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Entries that vanish while being read (a cgroup forgotten meanwhile) are skipped.
        let Some(rows) = self.programs.family::<ReclaimMaps>().map(|maps| maps.read().0) else {
            return Ok(());
        };
        let mut namer = CgroupNamer::new(&self.tracker, &self.resolver);
        let names = LabelNames::of(&self.resolver);
        let mut series: BTreeMap<(Arc<Workload>, &'static str), Latency> = BTreeMap::new();
        for (key, value) in rows.into_iter().filter(|(_, v)| *v > 0) {
            let Some(kind) = kind_name(key.kind) else { continue };
            series.entry((namer.name(key.cgroup_id), kind)).or_default().add(key.bucket, value);
        }
        drop(namer); // every cgroup named: the index goes before the encoding
        let mut family = encoder.encode_descriptor(
            "kernsight_memory_reclaim_stall_seconds",
            "Time tasks spent in memory reclaim, by workload and kind: direct (the node was short of free memory) or memcg (the cgroup or an ancestor was at its limit); log2 buckets in the kernel",
            None,
            MetricType::Histogram,
        )?;
        for ((workload, kind), stalls) in &series {
            let labels = Series::of(workload, &names).with("kind", kind);
            encode_histogram(&mut family, &labels, stalls)?;
        }
        Ok(())
    }
}
