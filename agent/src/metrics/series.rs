//! The labels of a series: its workload's, then its own. A scrape of 1,000 containers encodes
//! some 115,000 samples, most of them carrying a workload's seven to ten labels, so a workload's
//! labels can be encoded once (`EncodedLabels`) and written as one piece by the many series that
//! carry them: a workload's capability and namespace gauges, its resource gauges, each line of
//! its histograms.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabel as _, EncodeLabelSet, LabelSetEncoder};

use super::text::{TextLabels, escape_into, push_label};
use crate::metadata::identity::{Resolver, Workload};

/// Which optional workload labels a series carries (config: `metadata.container_id_label`,
/// `metadata.pod_labels`).
pub(crate) struct LabelNames {
    pub container_id: bool,
    pub pod_labels: Vec<String>,
}

impl LabelNames {
    /// What the resolver was configured to add.
    pub(crate) fn of(resolver: &Resolver) -> Self {
        Self { container_id: resolver.container_id_label(), pod_labels: resolver.pod_label_names() }
    }
}

/// Most labels a series adds to its workload's (block I/O's `device`, `device_name` and `op`).
const MAX_OWN_LABELS: usize = 4;

/// Where a series' first labels come from.
#[derive(Clone, Copy)]
enum Base<'a> {
    /// A workload's labels, encoded label by label.
    Workload(&'a Workload, &'a LabelNames),
    /// Labels encoded before, written as one piece.
    Encoded(&'a EncodedLabels),
}

/// The labels of one series, all borrowed: its workload's (`namespace`, `pod`, `container`,
/// `workload_kind`, `workload`, `container_id` when enabled, `cgroup`, the chosen pod labels),
/// then its own. Making one allocates nothing.
#[derive(Clone, Copy)]
pub(crate) struct Series<'a> {
    base: Base<'a>,
    own: [(&'static str, &'a str); MAX_OWN_LABELS],
    own_len: usize,
}

impl<'a> Series<'a> {
    /// A series of `workload` with no labels of its own yet.
    pub(crate) fn of(workload: &'a Workload, names: &'a LabelNames) -> Self {
        Self::with_base(Base::Workload(workload, names))
    }

    /// A series whose first labels were encoded before (`EncodedLabels::of`): a workload's, for
    /// the many series of one workload.
    pub(crate) fn of_encoded(labels: &'a EncodedLabels) -> Self {
        Self::with_base(Base::Encoded(labels))
    }

    fn with_base(base: Base<'a>) -> Self {
        Self { base, own: [("", ""); MAX_OWN_LABELS], own_len: 0 }
    }

    /// Adds a label of the series' own, after the workload's and those added before.
    pub(crate) fn with(mut self, name: &'static str, value: &'a str) -> Self {
        assert!(self.own_len < MAX_OWN_LABELS, "a series has at most {MAX_OWN_LABELS} labels of its own");
        self.own[self.own_len] = (name, value);
        self.own_len += 1;
        self
    }

    fn own(&self) -> &[(&'static str, &'a str)] {
        &self.own[..self.own_len]
    }
}

/// Calls `each` with each label of `workload` that has a value, in order.
///
/// A label whose value is empty is left out: Prometheus and OpenMetrics treat `pod=""` as no
/// `pod` label at all, so the series is the same, and its text some 10 to 50 bytes shorter a
/// line (`cgroup` of a named container; `namespace`, `pod`, `workload_kind` and `workload` of a
/// process no runtime started), at 1,000 containers over 100,000 lines a scrape.
fn workload_labels<E>(
    workload: &Workload,
    names: &LabelNames,
    mut each: impl FnMut(&str, &str) -> Result<(), E>,
) -> Result<(), E> {
    let mut label = |name: &str, value: &str| if value.is_empty() { Ok(()) } else { each(name, value) };
    label("namespace", &workload.namespace)?;
    label("pod", &workload.pod)?;
    label("container", &workload.container)?;
    label("workload_kind", &workload.workload_kind)?;
    label("workload", &workload.workload)?;
    if names.container_id {
        label("container_id", &workload.container_id)?;
    }
    label("cgroup", &workload.cgroup)?;
    for (name, value) in names.pod_labels.iter().zip(&workload.pod_labels) {
        label(name, value)?;
    }
    Ok(())
}

impl EncodeLabelSet for Series<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        match self.base {
            Base::Workload(workload, names) => {
                workload_labels(workload, names, |name, value| (name, value).encode(encoder.encode_label()))?
            }
            Base::Encoded(labels) => labels.encode(encoder)?,
        }
        for &(name, value) in self.own() {
            (name, value).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

impl TextLabels for Series<'_> {
    fn write_labels(&self, out: &mut String) -> bool {
        let start = out.len();
        // A comma before every label but the first.
        let separate = |out: &mut String| {
            if out.len() > start {
                out.push(',');
            }
        };
        match self.base {
            Base::Workload(workload, names) => {
                let Ok(()) = workload_labels(workload, names, |name, value| {
                    separate(out);
                    push_label(out, name, value);
                    Ok::<_, std::convert::Infallible>(())
                });
            }
            Base::Encoded(labels) => {
                labels.write_labels(out);
            }
        }
        for &(name, value) in self.own() {
            separate(out);
            push_label(out, name, value);
        }
        out.len() > start
    }
}

/// A series' labels, encoded once as the text formats write them, to be written by each series
/// (or each line of a histogram) that carries them without encoding them again.
///
/// `head` is every label but the last in full (`namespace="shop",pod="web-0",`…) and the last
/// one's name; `last` is that label's value, unescaped. prometheus-client's text encoders write a
/// label's key as they are given it, so the head goes out as the key of one label and the last
/// value through the value encoder, which escapes it: the text is the same as label by label
/// (`series::tests` checks both formats).
#[derive(Debug, Default)]
pub(crate) struct EncodedLabels {
    head: String,
    last: String,
}

impl EncodedLabels {
    /// The labels of `series`, encoded.
    pub(crate) fn of(series: &Series) -> Self {
        let mut encoded = Self::default();
        match series.base {
            Base::Workload(workload, names) => {
                let Ok(()) = workload_labels(workload, names, |name, value| {
                    encoded.push(name, value);
                    Ok::<_, std::convert::Infallible>(())
                });
            }
            Base::Encoded(labels) => {
                encoded.head.clone_from(&labels.head);
                encoded.last.clone_from(&labels.last);
            }
        }
        for &(name, value) in series.own() {
            encoded.push(name, value);
        }
        encoded
    }

    /// Appends a label: the last one so far goes into the head in full.
    fn push(&mut self, name: &str, value: &str) {
        if !self.head.is_empty() {
            self.head.push_str("=\"");
            escape_into(&mut self.head, &self.last);
            self.head.push_str("\",");
        }
        self.head.push_str(name);
        self.last.clear();
        self.last.push_str(value);
    }
}

impl TextLabels for EncodedLabels {
    fn write_labels(&self, out: &mut String) -> bool {
        if self.head.is_empty() {
            return false; // no labels
        }
        out.push_str(&self.head);
        out.push_str("=\"");
        escape_into(out, &self.last);
        out.push('"');
        true
    }
}

impl EncodeLabelSet for EncodedLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        if self.head.is_empty() {
            return Ok(()); // no labels
        }
        let mut label = encoder.encode_label();
        let mut key = label.encode_label_key()?;
        key.write_str(&self.head)?;
        let mut value = key.encode_label_value()?;
        value.write_str(&self.last)?;
        value.finish()
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::{
        collector::Collector,
        encoding::{DescriptorEncoder, EncodeMetric as _},
        metrics::{MetricType, gauge::ConstGauge},
        registry::Registry,
    };

    use super::*;
    use crate::metrics::{exposition::Format, text::Text};

    /// Values a tenant can choose (a pod's labels, a container's name), with every character
    /// the text formats escape.
    fn hostile_workload() -> Workload {
        Workload {
            namespace: "shop".into(),
            pod: "web-0".into(),
            container: "a\"pp\\".into(),
            workload_kind: "StatefulSet".into(),
            workload: "web".into(),
            container_id: "abc".into(),
            cgroup: String::new(),
            pod_labels: vec!["checkout".into(), "say \"hi\"\n\\n ünï".into()],
        }
    }

    fn names() -> LabelNames {
        LabelNames { container_id: true, pod_labels: vec!["label_app".into(), "label_note".into()] }
    }

    /// Encodes, in both text formats, one gauge family whose series `series` makes.
    #[derive(Debug)]
    struct Family(fn(&Workload, &LabelNames, &mut DescriptorEncoder) -> std::fmt::Result);

    impl Collector for Family {
        fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            (self.0)(&hostile_workload(), &names(), &mut encoder)
        }
    }

    fn gauge(encoder: &mut DescriptorEncoder, labels: &impl EncodeLabelSet) -> std::fmt::Result {
        let mut family = encoder.encode_descriptor("test_held", "held", None, MetricType::Gauge)?;
        ConstGauge::new(1i64).encode(family.encode_family(labels)?)
    }

    fn both_formats(family: Family) -> [String; 2] {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(family));
        let (mut open_metrics, mut text) = (String::new(), String::new());
        prometheus_client::encoding::text::encode(&mut open_metrics, &registry).unwrap();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        [open_metrics, text]
    }

    #[test]
    fn a_series_has_its_workloads_labels_then_its_own_in_order_with_values_escaped() {
        let [_, text] = both_formats(Family(|w, names, encoder| {
            gauge(encoder, &Series::of(w, names).with("syscall", "read").with("errno", "EPERM"))
        }));
        let line = text.lines().find(|l| l.starts_with("test_held")).unwrap();
        assert_eq!(
            line,
            r#"test_held{namespace="shop",pod="web-0",container="a\"pp\\",workload_kind="StatefulSet",workload="web",container_id="abc",label_app="checkout",label_note="say \"hi\"\n\\n ünï",syscall="read",errno="EPERM"} 1"#
        );
    }

    #[test]
    fn labels_without_a_value_are_left_out_in_every_writer() {
        // A process no runtime started: only its cgroup names it. A pod label the pod lacks.
        let host = Workload { cgroup: "/system.slice/cron.service".into(), ..Workload::default() };
        let names = LabelNames { container_id: true, pod_labels: vec!["label_app".into()] };
        let expected = r#"test_held{cgroup="/system.slice/cron.service",errno=""} 1"#;
        let encoded = EncodedLabels::of(&Series::of(&host, &names));
        let mut by_label = String::new();
        let mut text = Text::new(&mut by_label, Format::Text);
        text.gauges("test_held", "held", [(Series::of(&host, &names).with("errno", ""), 1i64)]);
        let mut written_encoded = String::new();
        let mut text = Text::new(&mut written_encoded, Format::Text);
        text.gauges("test_held", "held", [(Series::of_encoded(&encoded).with("errno", ""), 1i64)]);
        // A label of the series' own is written as given, empty or not.
        for body in [by_label, written_encoded] {
            assert_eq!(body.lines().find(|l| l.starts_with("test_held{")), Some(expected), "{body}");
        }
    }

    #[test]
    fn encoded_labels_are_written_as_label_by_label_in_both_formats() {
        let by_label = both_formats(Family(|w, names, encoder| {
            gauge(encoder, &Series::of(w, names).with("cap", "CAP_\"X\"").with("op", "a\nb"))
        }));
        // The workload encoded, its series' own labels label by label.
        let workload_encoded = both_formats(Family(|w, names, encoder| {
            let encoded = EncodedLabels::of(&Series::of(w, names));
            gauge(encoder, &Series::of_encoded(&encoded).with("cap", "CAP_\"X\"").with("op", "a\nb"))
        }));
        // The whole series encoded, as a histogram's lines take it; and encoded twice over.
        let series_encoded = both_formats(Family(|w, names, encoder| {
            let encoded =
                EncodedLabels::of(&Series::of(w, names).with("cap", "CAP_\"X\"").with("op", "a\nb"));
            gauge(encoder, &encoded)
        }));
        let twice = both_formats(Family(|w, names, encoder| {
            let workload = EncodedLabels::of(&Series::of(w, names));
            let encoded =
                EncodedLabels::of(&Series::of_encoded(&workload).with("cap", "CAP_\"X\"").with("op", "a\nb"));
            gauge(encoder, &encoded)
        }));
        assert!(by_label[0].contains(r#"label_note="say \"hi\"\n\\n ünï",cap="CAP_\"X\"",op="a\nb"} 1"#));
        for encoded in [workload_encoded, series_encoded, twice] {
            assert_eq!(encoded, by_label);
        }
    }

    /// The line `super::text` writes for a series, in both formats.
    fn written(series: impl Fn(&Workload, &LabelNames, &mut dyn FnMut(&Series))) -> [String; 2] {
        [Format::OpenMetrics, Format::Text].map(|format| {
            let mut out = String::new();
            let mut text = Text::new(&mut out, format);
            series(&hostile_workload(), &names(), &mut |s| text.gauges("test_held", "held", [(*s, 1i64)]));
            out
        })
    }

    #[test]
    fn a_written_series_is_the_text_prometheus_client_encodes_for_it() {
        let mut expected = both_formats(Family(|w, names, encoder| {
            gauge(encoder, &Series::of(w, names).with("cap", "CAP_\"X\"").with("op", "a\nb"))
        }));
        // A piece has no end marker: the body has one, after the last piece.
        expected[0] = expected[0].strip_suffix("# EOF\n").expect("OpenMetrics' end marker").to_owned();
        // Label by label; the workload encoded; the whole series encoded; the workload
        // encoded and nothing of the series' own.
        let label_by_label =
            written(|w, names, line| line(&Series::of(w, names).with("cap", "CAP_\"X\"").with("op", "a\nb")));
        let workload_encoded = written(|w, names, line| {
            let encoded = EncodedLabels::of(&Series::of(w, names));
            line(&Series::of_encoded(&encoded).with("cap", "CAP_\"X\"").with("op", "a\nb"))
        });
        let series_encoded = written(|w, names, line| {
            let encoded =
                EncodedLabels::of(&Series::of(w, names).with("cap", "CAP_\"X\"").with("op", "a\nb"));
            line(&Series::of_encoded(&encoded))
        });
        for written in [label_by_label, workload_encoded, series_encoded] {
            assert_eq!(written, expected);
        }
        // No labels at all, and only labels of the series' own.
        let none = EncodedLabels::default();
        let [_, text] = written(|_, _, line| {
            line(&Series::of_encoded(&none));
            line(&Series::of_encoded(&none).with("cap", "a\\"));
        });
        assert!(
            text.ends_with(
                "test_held 1\n# HELP test_held held\n# TYPE test_held gauge\ntest_held{cap=\"a\\\\\"} 1\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn encoded_labels_of_one_label_and_of_none() {
        let [_, text] = both_formats(Family(|_, _, encoder| {
            gauge(encoder, &EncodedLabels { head: "cgroup".into(), last: "/a\"b".into() })?;
            let mut family = encoder.encode_descriptor("test_none", "none", None, MetricType::Gauge)?;
            ConstGauge::new(2i64).encode(family.encode_family(&EncodedLabels::default())?)
        }));
        assert!(text.contains("test_held{cgroup=\"/a\\\"b\"} 1\n"), "{text}");
        assert!(text.contains("test_none 2\n"), "{text}");
    }

    #[test]
    #[should_panic(expected = "at most 4 labels of its own")]
    fn a_series_refuses_more_own_labels_than_it_holds() {
        let (workload, names) =
            (Workload::default(), LabelNames { container_id: false, pod_labels: Vec::new() });
        let _ = ["a", "b", "c", "d", "e"].iter().fold(Series::of(&workload, &names), |s, l| s.with(l, "x"));
    }
}
