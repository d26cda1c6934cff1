//! Latency histograms as the kernel keeps them (log2 buckets of nanoseconds and an exact sum),
//! exported with fewer, wider buckets.

use std::collections::BTreeMap;

use kernsight_common::counters::{LATENCY_SUM_BUCKET, LatencyCell};
use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::MetricType,
};

use super::{EncodedLabels, Series};

/// Histogram bucket bounds, as log2 of nanoseconds: 1 µs to 17 s in steps of 4×, so that a
/// series costs 14 buckets instead of the kernel's 40.
const EXPORTED_BUCKETS: [u32; 13] = [10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34];

/// Per series: counts in the kernel's log2 buckets, and the exact sum.
#[derive(Default)]
pub(super) struct Latency {
    buckets: BTreeMap<u32, u64>,
    sum_nanos: u64,
}

impl Latency {
    /// Adds a kernel row: a log2 bucket's count, or the sum (`LATENCY_SUM_BUCKET`).
    pub(super) fn add(&mut self, bucket: u32, value: u64) {
        if bucket == LATENCY_SUM_BUCKET {
            self.sum_nanos += value;
        } else {
            *self.buckets.entry(bucket).or_default() += value;
        }
    }

    /// Adds a kernel cell: a log2 bucket's count and the sum of its observations.
    pub(super) fn observe(&mut self, bucket: u32, cell: &LatencyCell) {
        *self.buckets.entry(bucket).or_default() += cell.count;
        self.sum_nanos += cell.sum_nanos;
    }
}

/// Encodes `latency` as the series `labels` of a histogram family. A histogram writes its labels
/// on each of its 16 lines (sum, count, 14 buckets): they are encoded once.
pub(super) fn encode_histogram(
    family: &mut MetricEncoder,
    labels: &Series,
    latency: &Latency,
) -> Result<(), std::fmt::Error> {
    LatencyHistogram(latency).encode(family.encode_family(&EncodedLabels::of(labels))?)
}

/// A `Latency` as a Prometheus histogram with the exported bounds (1 µs to 17 s, steps of 4).
struct LatencyHistogram<'a>(&'a Latency);

impl EncodeMetric for LatencyHistogram<'_> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut exported = [0u64; EXPORTED_BUCKETS.len() + 1];
        for (&bucket, &count) in &self.0.buckets {
            // Kernel bucket b holds [2^(b-1), 2^b) ns: it belongs under the first bound >= 2^b.
            let slot =
                EXPORTED_BUCKETS.iter().position(|&bound| bucket <= bound).unwrap_or(EXPORTED_BUCKETS.len());
            exported[slot] += count;
        }
        let bounds = EXPORTED_BUCKETS.iter().map(|&b| (1u64 << b) as f64 / 1e9).chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(exported).collect();
        let count = exported.iter().sum();
        encoder.encode_histogram::<NoLabelSet>(self.0.sum_nanos as f64 / 1e9, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}
