//! `kernsight_runqueue_latency_seconds`, read from the `runqueue` family's map on each scrape.

use std::{collections::BTreeMap, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::MetricType,
};

use super::{
    LabelNames,
    histogram::{Latency, LatencyHistogram},
    naming::CgroupNamer,
    workload_labels,
};
use crate::{
    bpf::{Programs, runqueue::RunqueueMaps},
    metadata::{
        cgroups::Tracker,
        identity::{Resolver, Workload},
    },
};

#[derive(Debug)]
pub struct RunqueueCollector {
    programs: Arc<Programs>,
    tracker: Arc<Tracker>,
    resolver: Arc<Resolver>,
}

impl RunqueueCollector {
    pub fn new(programs: Arc<Programs>, tracker: Arc<Tracker>, resolver: Arc<Resolver>) -> Self {
        Self { programs, tracker, resolver }
    }
}

impl Collector for RunqueueCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Entries that vanish while being read (a cgroup forgotten meanwhile) are skipped.
        let Some(rows) = self.programs.family::<RunqueueMaps>().map(|maps| maps.read().0) else {
            return Ok(());
        };
        let mut namer = CgroupNamer::new(&self.tracker, &self.resolver);
        let with_id = LabelNames::of(&self.resolver);
        let mut series: BTreeMap<Workload, Latency> = BTreeMap::new();
        for (key, value) in rows.into_iter().filter(|(_, v)| *v > 0) {
            series.entry(namer.name(key.cgroup_id)).or_default().add(key.bucket, value);
        }
        let mut family = encoder.encode_descriptor(
            "kernsight_runqueue_latency_seconds",
            "Time threads waited on a run queue, from becoming runnable (wakeup or preemption) to running, by workload (log2 buckets in the kernel)",
            None,
            MetricType::Histogram,
        )?;
        for (workload, latency) in series {
            let labels = workload_labels(&workload, &with_id, []);
            LatencyHistogram(&latency).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
