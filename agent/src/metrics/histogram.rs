//! Latency histograms as the kernel keeps them (log2 buckets of nanoseconds and an exact sum),
//! exported with fewer, wider buckets.

use std::{collections::BTreeMap, sync::LazyLock};

use kernsight_common::counters::{LATENCY_SUM_BUCKET, LatencyCell};
use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::MetricType,
};

use super::{
    EncodedLabels, Series,
    exposition::Format,
    text::{Text, TextLabels},
};

/// Histogram bucket bounds, as log2 of nanoseconds: 1 µs to 17 s in steps of 4×, so that a
/// series costs 14 buckets instead of the kernel's 40.
const EXPORTED_BUCKETS: [u32; 13] = [10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34];

/// The exported bounds in seconds, without +Inf.
fn bounds_in_seconds() -> impl Iterator<Item = f64> {
    EXPORTED_BUCKETS.iter().map(|&b| (1u64 << b) as f64 / 1e9)
}

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

    /// The counts in the exported buckets (`EXPORTED_BUCKETS`, then +Inf), not cumulative.
    fn exported(&self) -> [u64; EXPORTED_BUCKETS.len() + 1] {
        let mut exported = [0; EXPORTED_BUCKETS.len() + 1];
        for (&bucket, &count) in &self.buckets {
            // Kernel bucket b holds [2^(b-1), 2^b) ns: it belongs under the first bound >= 2^b.
            let slot =
                EXPORTED_BUCKETS.iter().position(|&bound| bucket <= bound).unwrap_or(EXPORTED_BUCKETS.len());
            exported[slot] += count;
        }
        exported
    }

    fn sum_seconds(&self) -> f64 {
        self.sum_nanos as f64 / 1e9
    }
}

/// Writes `latency` as the series `labels` of the histogram family `name` (after
/// `Text::histogram_family`): the lines `encode_histogram` would encode.
pub(super) fn write_histogram(text: &mut Text, name: &str, labels: &impl TextLabels, latency: &Latency) {
    let mut cumulative = latency.exported();
    for i in 1..cumulative.len() {
        cumulative[i] += cumulative[i - 1];
    }
    let count = cumulative[cumulative.len() - 1];
    let bounds = &BOUNDS_TEXT[match text.format() {
        Format::OpenMetrics => 0,
        Format::Text => 1,
    }];
    text.histogram(name, labels, bounds, &cumulative, latency.sum_seconds(), count);
}

/// The exported bounds as each format writes them in `le` (OpenMetrics, then 0.0.4), the last
/// `+Inf`. The formats print floats differently: OpenMetrics the shortest decimal
/// (`0.000001024`), 0.0.4 as Go's `%g` does (`1.024e-06` below 1e-4). `tests` check both
/// against prometheus-client's own encoding.
static BOUNDS_TEXT: LazyLock<[Vec<String>; 2]> = LazyLock::new(|| {
    let go_float = |bound: f64| {
        if (1e-4..1e6).contains(&bound) {
            return format!("{bound}");
        }
        let scientific = format!("{bound:e}");
        let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
        let (sign, digits) = exponent.strip_prefix('-').map_or(("+", exponent), |digits| ("-", digits));
        format!("{mantissa}e{sign}{digits:0>2}")
    };
    let inf = || std::iter::once("+Inf".to_owned());
    [
        bounds_in_seconds().map(|bound| dtoa::Buffer::new().format(bound).to_owned()).chain(inf()).collect(),
        bounds_in_seconds().map(go_float).chain(inf()).collect(),
    ]
});

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
        let exported = self.0.exported();
        let bounds = bounds_in_seconds().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(exported).collect();
        let count = exported.iter().sum();
        encoder.encode_histogram::<NoLabelSet>(self.0.sum_seconds(), count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::{collector::Collector, encoding::DescriptorEncoder, registry::Registry};

    use super::*;

    /// Observations in the first bucket, a middle one, past the last bound, and a sum that
    /// is not a round number of seconds.
    fn latency() -> Latency {
        let mut latency = Latency::default();
        for (bucket, count) in [(3, 2), (10, 1), (11, 5), (21, 7), (36, 1), (39, 3)] {
            latency.add(bucket, count);
        }
        latency.add(LATENCY_SUM_BUCKET, 123_456_789_012);
        latency
    }

    /// Two series: one with labels a tenant chose, one with none.
    const LABELS: [(&str, &str); 2] = [("pod", "we\"b\n"), ("syscall", "read")];

    #[derive(Debug)]
    struct Encoded;

    impl Collector for Encoded {
        fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            let mut family = encoder.encode_descriptor("test_wait", "waits", None, MetricType::Histogram)?;
            LatencyHistogram(&latency()).encode(family.encode_family(&LABELS)?)?;
            LatencyHistogram(&Latency::default()).encode(family.encode_family(&super::super::NO_LABELS)?)
        }
    }

    #[test]
    fn a_written_histogram_is_the_text_prometheus_client_encodes_in_both_formats() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Encoded));
        let (mut open_metrics, mut text) = (String::new(), String::new());
        prometheus_client::encoding::text::encode_registry(&mut open_metrics, &registry).unwrap();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        for (format, expected) in [(Format::OpenMetrics, open_metrics), (Format::Text, text)] {
            let mut out = String::new();
            let mut written = Text::new(&mut out, format);
            written.histogram_family("test_wait", "waits");
            write_histogram(&mut written, "test_wait", &LABELS, &latency());
            write_histogram(&mut written, "test_wait", &super::super::NO_LABELS, &Latency::default());
            assert_eq!(out, expected, "{format:?}");
        }
    }

    #[test]
    fn kernel_buckets_go_under_the_first_bound_at_or_above_them() {
        // Buckets 3, 10 under 2^10 ns; 11 under 2^12; 21 under 2^22; 36 and 39 (the last) past 2^34.
        let exported = latency().exported();
        assert_eq!(exported[0], 3);
        assert_eq!(exported[1], 5);
        assert_eq!(exported[6], 7);
        assert_eq!(exported[EXPORTED_BUCKETS.len()], 4);
        assert_eq!(exported.iter().sum::<u64>(), 19);
    }
}
