//! Families whose lines a collector writes into its piece itself, without prometheus-client's
//! encoders: those of the collectors that hold most of a scrape's samples. At 1,000 containers
//! posture writes 53,000 samples (a container's capabilities and namespaces), the run queue's
//! histograms 48,000 lines and the syscall counters 14,000, and prometheus-client spends some
//! 150 ns on a sample: a call through its encoder types and a buffered write for each label,
//! separator and value, then a copy of its buffer into the piece. Written straight into the
//! piece, a sample is the copy of its text. The lines are the ones prometheus-client writes, in
//! both formats: `tests` here, `series::tests` and `histogram::tests` compare them, label
//! values a tenant chose included.

use std::fmt::Debug;

use super::exposition::Format;

/// A collector that writes its families' text itself (`Text`).
pub(crate) trait TextCollector: Debug + Send + Sync {
    fn write(&self, text: &mut Text);
}

/// A series' labels as the text formats write them between the braces.
pub(crate) trait TextLabels {
    /// Appends `name="value"` pairs, comma-separated, each value escaped (`escape_into`).
    /// Returns whether it appended any.
    fn write_labels(&self, out: &mut String) -> bool;
}

impl<const N: usize> TextLabels for [(&str, &str); N] {
    fn write_labels(&self, out: &mut String) -> bool {
        for (i, (name, value)) in self.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_label(out, name, value);
        }
        N > 0
    }
}

/// Appends one `name="value"` pair.
pub(super) fn push_label(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str("=\"");
    escape_into(out, value);
    out.push('"');
}

/// A label value as the text formats escape it: backslash, double quote and line feed.
pub(super) fn escape_into(out: &mut String, value: &str) {
    let mut rest = value;
    while let Some(at) = memchr::memchr3(b'\\', b'"', b'\n', rest.as_bytes()) {
        out.push_str(&rest[..at]);
        out.push_str(match rest.as_bytes()[at] {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            _ => "\\n",
        });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}

/// A sample's value as prometheus-client writes it: integers in decimal, floats as the shortest
/// text that reads back the same (`dtoa`: `1.0`, `0.25`, `1e21`). Non-finite floats are
/// `NaN`, `+Inf` and `-Inf` in the 0.0.4 format, and dtoa's own text in OpenMetrics.
pub(crate) trait TextValue: Copy {
    fn write_to(self, out: &mut String, format: Format);
}

impl TextValue for i64 {
    fn write_to(self, out: &mut String, _: Format) {
        out.push_str(itoa::Buffer::new().format(self));
    }
}

impl TextValue for u64 {
    fn write_to(self, out: &mut String, _: Format) {
        out.push_str(itoa::Buffer::new().format(self));
    }
}

impl TextValue for f64 {
    fn write_to(self, out: &mut String, format: Format) {
        let mut text = dtoa::Buffer::new();
        out.push_str(match format {
            Format::Text if self.is_nan() => "NaN",
            Format::Text if self.is_infinite() => {
                if self > 0.0 {
                    "+Inf"
                } else {
                    "-Inf"
                }
            }
            _ => text.format(self),
        });
    }
}

/// A histogram bucket's bound, as the format writes it.
fn push_le(out: &mut String, bound: &str) {
    out.push_str("le=\"");
    out.push_str(bound);
    out.push('"');
}

/// One collector's piece of the body, in the format the scraper asked for.
pub(crate) struct Text<'a> {
    out: &'a mut String,
    format: Format,
    /// A histogram series' labels, written once for its 16 lines.
    labels: String,
}

impl<'a> Text<'a> {
    pub(super) fn new(out: &'a mut String, format: Format) -> Self {
        Self { out, format, labels: String::new() }
    }

    pub(super) fn format(&self) -> Format {
        self.format
    }

    /// A gauge family from (labels, value) rows: its `# HELP` and `# TYPE` lines, then a line
    /// per row.
    pub(crate) fn gauges<L: TextLabels>(
        &mut self,
        name: &str,
        help: &str,
        rows: impl IntoIterator<Item = (L, impl TextValue)>,
    ) {
        self.descriptor(name, help, "gauge");
        for (labels, value) in rows {
            self.line(name, &labels, value);
        }
    }

    /// A counter family from (labels, value) rows. Its samples are named `name_total`; so is
    /// the family in the 0.0.4 format, and OpenMetrics names it `name`.
    pub(crate) fn counters<L: TextLabels>(
        &mut self,
        name: &str,
        help: &str,
        rows: impl IntoIterator<Item = (L, impl TextValue)>,
    ) {
        let total = format!("{name}_total");
        let family = match self.format {
            Format::OpenMetrics => name,
            Format::Text => &total,
        };
        self.descriptor(family, help, "counter");
        for (labels, value) in rows {
            self.line(&total, &labels, value);
        }
    }

    /// `name{labels} value`, without the braces when there are no labels.
    fn line(&mut self, name: &str, labels: &impl TextLabels, value: impl TextValue) {
        self.out.push_str(name);
        let open = self.out.len();
        self.out.push('{');
        if labels.write_labels(self.out) {
            self.out.push('}');
        } else {
            self.out.truncate(open);
        }
        self.out.push(' ');
        value.write_to(self.out, self.format);
        self.out.push('\n');
    }

    /// A histogram family's `# HELP` and `# TYPE` lines; its series follow (`histogram`).
    pub(crate) fn histogram_family(&mut self, name: &str, help: &str) {
        self.descriptor(name, help, "histogram");
    }

    /// One series of a histogram family, in the order its format lists the lines: `cumulative`
    /// holds the count under each of `bounds` (as the format writes them in `le`, the last
    /// `+Inf`).
    pub(crate) fn histogram(
        &mut self,
        name: &str,
        labels: &impl TextLabels,
        bounds: &[String],
        cumulative: &[u64],
        sum: f64,
        count: u64,
    ) {
        let mut written = std::mem::take(&mut self.labels);
        written.clear();
        labels.write_labels(&mut written);
        let mut number = itoa::Buffer::new();
        let mut sum_text = dtoa::Buffer::new();
        let sum = sum_text.format(sum);
        let buckets = |text: &mut Self, number: &mut itoa::Buffer| {
            for (bound, &below) in bounds.iter().zip(cumulative) {
                text.sample(name, "_bucket", &written, Some(bound), number.format(below));
            }
        };
        match self.format {
            Format::OpenMetrics => {
                self.sample(name, "_sum", &written, None, sum);
                self.sample(name, "_count", &written, None, number.format(count));
                buckets(self, &mut number);
            }
            Format::Text => {
                buckets(self, &mut number);
                self.sample(name, "_sum", &written, None, sum);
                self.sample(name, "_count", &written, None, number.format(count));
            }
        }
        self.labels = written;
    }

    /// `name` + `suffix`, the labels written before and an `le` label, then the value.
    /// OpenMetrics' encoder puts `le` first, the 0.0.4 one last.
    fn sample(&mut self, name: &str, suffix: &str, labels: &str, le: Option<&str>, value: &str) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        if !labels.is_empty() || le.is_some() {
            self.out.push('{');
            match (le, self.format) {
                (None, _) => self.out.push_str(labels),
                (Some(le), Format::OpenMetrics) => {
                    push_le(self.out, le);
                    if !labels.is_empty() {
                        self.out.push(',');
                        self.out.push_str(labels);
                    }
                }
                (Some(le), Format::Text) => {
                    if !labels.is_empty() {
                        self.out.push_str(labels);
                        self.out.push(',');
                    }
                    push_le(self.out, le);
                }
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(value);
        self.out.push('\n');
    }

    fn descriptor(&mut self, name: &str, help: &str, kind: &str) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        match self.format {
            // OpenMetrics' encoder writes the help as it is given.
            Format::OpenMetrics => self.out.push_str(help),
            // The 0.0.4 format escapes backslash and line feed in a help text.
            Format::Text => {
                for c in help.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
            }
        }
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind);
        self.out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::{collector::Collector, encoding::DescriptorEncoder, registry::Registry};

    use super::*;
    use crate::metrics::{NO_LABELS, encode_counters, encode_gauges};

    /// Label values a tenant can choose, with every character the text formats escape.
    const HOSTILE: [&str; 4] = ["plain", "a\"b\\c\nd", "\\\\\"\"\n\n", "ünï \"x\""];

    /// The same rows through prometheus-client, in both formats.
    #[derive(Debug)]
    struct ByPrometheusClient(fn(&mut DescriptorEncoder) -> std::fmt::Result);

    impl Collector for ByPrometheusClient {
        fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            (self.0)(&mut encoder)
        }
    }

    fn by_prometheus_client(family: fn(&mut DescriptorEncoder) -> std::fmt::Result) -> [String; 2] {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ByPrometheusClient(family)));
        let (mut open_metrics, mut text) = (String::new(), String::new());
        prometheus_client::encoding::text::encode_registry(&mut open_metrics, &registry).unwrap();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        [open_metrics, text]
    }

    fn written(family: fn(&mut Text)) -> [String; 2] {
        [Format::OpenMetrics, Format::Text].map(|format| {
            let mut out = String::new();
            family(&mut Text::new(&mut out, format));
            out
        })
    }

    fn rows() -> impl Iterator<Item = ([(&'static str, &'static str); 2], i64)> {
        HOSTILE.into_iter().enumerate().map(|(i, value)| ([("pod", "web-0"), ("note", value)], i as i64 - 2))
    }

    #[test]
    fn gauges_are_written_as_prometheus_client_encodes_them_in_both_formats() {
        let expected = by_prometheus_client(|encoder| {
            encode_gauges(encoder, "test_held", "held \\ by\na container", rows())?;
            encode_gauges(encoder, "test_none", "no labels", [(NO_LABELS, i64::MIN)])?;
            encode_gauges(encoder, "test_empty", "no rows", std::iter::empty::<([(&str, &str); 1], i64)>())
        });
        let written = written(|text| {
            text.gauges("test_held", "held \\ by\na container", rows());
            text.gauges("test_none", "no labels", [(NO_LABELS, i64::MIN)]);
            text.gauges("test_empty", "no rows", std::iter::empty::<([(&str, &str); 1], i64)>());
        });
        assert_eq!(written, expected);
        assert!(written[1].contains(r#"test_held{pod="web-0",note="\\\\\"\"\n\n"} 0"#), "{}", written[1]);
    }

    fn counted() -> impl Iterator<Item = ([(&'static str, &'static str); 2], u64)> {
        rows().map(|(labels, value)| (labels, u64::MAX - value.unsigned_abs()))
    }

    #[test]
    fn counters_are_written_as_prometheus_client_encodes_them_in_both_formats() {
        let expected = by_prometheus_client(|encoder| {
            encode_counters(encoder, "test_calls", "calls \\ made", counted())?;
            encode_counters(encoder, "test_none", "no labels", [(NO_LABELS, 0)])
        });
        let written = written(|text| {
            text.counters("test_calls", "calls \\ made", counted());
            text.counters("test_none", "no labels", [(NO_LABELS, 0u64)]);
        });
        assert_eq!(written, expected);
        assert!(written[0].contains("# TYPE test_calls counter\n"), "{}", written[0]);
        assert!(written[1].contains("# TYPE test_calls_total counter\n"), "{}", written[1]);
    }

    /// Values of the resources' families (seconds, bytes as floats) and the floats' edges.
    const FLOATS: [f64; 11] = [
        0.0,
        1.0,
        0.25,
        -3.5,
        1234567.891,
        1e21,
        5e-324,
        f64::MAX,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];

    fn float_rows() -> [([(&'static str, &'static str); 1], f64); FLOATS.len()] {
        FLOATS.map(|value| ([("pod", "web-0")], value))
    }

    #[test]
    fn float_values_are_written_as_prometheus_client_encodes_them_in_both_formats() {
        use prometheus_client::{
            encoding::EncodeMetric as _,
            metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
        };
        let expected = by_prometheus_client(|encoder| {
            {
                let mut family =
                    encoder.encode_descriptor("test_seconds", "seconds", None, MetricType::Gauge)?;
                for (labels, value) in float_rows() {
                    ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
            let mut family =
                encoder.encode_descriptor("test_used_seconds", "used", None, MetricType::Counter)?;
            for (labels, value) in float_rows() {
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
            Ok(())
        });
        let written = written(|text| {
            text.gauges("test_seconds", "seconds", float_rows());
            text.counters("test_used_seconds", "used", float_rows());
        });
        assert_eq!(written, expected);
        assert!(written[1].contains("test_seconds{pod=\"web-0\"} 0.25\n"), "{}", written[1]);
        assert!(written[1].contains("test_seconds{pod=\"web-0\"} +Inf\n"), "{}", written[1]);
    }
}
