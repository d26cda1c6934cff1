//! A scrape's body, encoded by several collectors at once. At 1,000 containers a scrape encodes
//! some 115,000 samples, and the collectors that read the kernel (cgroupfs, maps, `/proc`) and
//! encode them take 80-90 ms of CPU one after the other. Each collector is a registry of its
//! own, encoded into a piece of its own on one of a few threads (or writes its piece itself,
//! `super::text`); the pieces are sent in the order the collectors were added, one after the
//! other, never copied into one.

use std::{
    cmp::Reverse,
    num::NonZeroUsize,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    thread,
    time::Instant,
};

use prometheus_client::{collector::Collector, encoding, registry::Registry};

use super::text::{Text, TextCollector};

/// The two text formats a scraper can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Text,
}

/// Most threads one scrape encodes on: an agent on a large node should not take all of its
/// CPUs while it answers a scrape.
const MAX_ENCODERS: usize = 4;

/// Every collector of a scrape, in the order the body lists them.
#[derive(Debug, Default)]
pub struct Exposition {
    /// Collectors in stages: those of a stage are encoded at once, a stage after the one before.
    stages: Vec<Vec<Part>>,
}

/// What writes one piece of the body.
#[derive(Debug)]
pub(crate) enum Source {
    /// A collector that prometheus-client's encoders encode.
    Encoded(Box<dyn Collector>),
    /// A collector that writes its lines itself (`super::text`).
    Written(Box<dyn TextCollector>),
}

#[derive(Debug)]
struct Part {
    source: PartSource,
    /// How long the last encode took: the longest go first, so that the threads end together.
    last_nanos: AtomicU64,
    /// How long the last piece was: the next is about as long, and growing a piece of megabytes
    /// by doubling would copy it again and again.
    last_len: AtomicUsize,
}

impl Exposition {
    /// A collector encoded alongside the others of its stage.
    pub(crate) fn add(&mut self, source: Source) {
        match self.stages.last_mut() {
            Some(stage) => stage.push(Part::of(source)),
            None => self.stages.push(vec![Part::of(source)]),
        }
    }

    /// A collector encoded once every collector added before it has been: the agent's own
    /// figures report what the others read in the same scrape. Collectors added after it are
    /// encoded alongside it.
    pub(crate) fn add_after_the_rest(&mut self, source: Source) {
        self.stages.push(vec![Part::of(source)]);
    }

    /// Every collector's piece, in the order they were added (with OpenMetrics' end marker).
    pub fn encode(&self, format: Format) -> Result<Vec<String>, std::fmt::Error> {
        let encoders = thread::available_parallelism().map_or(1, NonZeroUsize::get).min(MAX_ENCODERS);
        let mut pieces = Vec::new();
        for stage in &self.stages {
            pieces.extend(encode_stage(stage, format, encoders)?);
        }
        if format == Format::OpenMetrics {
            let mut eof = String::new();
            encoding::text::encode_eof(&mut eof)?;
            pieces.push(eof);
        }
        Ok(pieces)
    }
}

/// A `Source` as a part holds it: prometheus-client encodes a registry, not a collector.
#[derive(Debug)]
enum PartSource {
    Registry(Registry),
    Written(Box<dyn TextCollector>),
}

impl Part {
    fn of(source: Source) -> Self {
        let source = match source {
            Source::Encoded(collector) => {
                let mut registry = Registry::default();
                registry.register_collector(collector);
                PartSource::Registry(registry)
            }
            Source::Written(collector) => PartSource::Written(collector),
        };
        Self { source, last_nanos: AtomicU64::new(0), last_len: AtomicUsize::new(0) }
    }

    fn encode(&self, format: Format) -> Result<String, std::fmt::Error> {
        let started = Instant::now();
        let mut text = String::with_capacity(self.last_len.load(Ordering::Relaxed) / 16 * 17);
        match (&self.source, format) {
            // Without its end marker: the body has one, after the last piece.
            (PartSource::Registry(registry), Format::OpenMetrics) => {
                encoding::text::encode_registry(&mut text, registry)?
            }
            (PartSource::Registry(registry), Format::Text) => {
                encoding::prometheus_text::encode(&mut text, registry)?
            }
            (PartSource::Written(collector), format) => collector.write(&mut Text::new(&mut text, format)),
        }
        self.last_len.store(text.len(), Ordering::Relaxed);
        self.last_nanos.store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(text)
    }
}

/// The pieces of `parts`, in their order, encoded on up to `encoders` threads (this one among
/// them). Each thread takes the next part not yet taken, longest first by the last scrape.
fn encode_stage(parts: &[Part], format: Format, encoders: usize) -> Result<Vec<String>, std::fmt::Error> {
    let mut longest_first: Vec<usize> = (0..parts.len()).collect();
    longest_first.sort_by_key(|&i| Reverse(parts[i].last_nanos.load(Ordering::Relaxed)));
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        while let Some(&i) = longest_first.get(next.fetch_add(1, Ordering::Relaxed)) {
            done.push((i, parts[i].encode(format)));
        }
        done
    };
    let mut done = thread::scope(|scope| {
        // A thread that cannot be made (the pod's pids.max reached) leaves its share to the
        // others, this one at least.
        let helpers: Vec<_> = (1..encoders.min(parts.len()))
            .map_while(|_| thread::Builder::new().name("encode".into()).spawn_scoped(scope, work).ok())
            .collect();
        let mut done = work();
        // A collector that panicked panics here, as it would have on one thread.
        for helper in helpers {
            done.extend(helper.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        done
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, piece)| piece).collect()
}

#[cfg(test)]
mod tests {
    use std::{sync::Mutex, time::Duration};

    use prometheus_client::{
        encoding::{DescriptorEncoder, EncodeMetric as _},
        metrics::{MetricType, gauge::ConstGauge},
    };

    use super::*;

    /// A gauge family `name` of one sample, that takes `delay` to encode and notes which thread
    /// encoded it and when it began and ended.
    #[derive(Debug)]
    struct Sleepy {
        name: &'static str,
        delay: Duration,
        seen: &'static Mutex<Vec<(&'static str, thread::ThreadId, Instant, Instant)>>,
    }

    impl Collector for Sleepy {
        fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            let began = Instant::now();
            thread::sleep(self.delay);
            let mut family = encoder.encode_descriptor(self.name, "a test gauge", None, MetricType::Gauge)?;
            ConstGauge::new(1i64).encode(family.encode_family(&[("l", "v")])?)?;
            self.seen.lock().unwrap().push((self.name, thread::current().id(), began, Instant::now()));
            Ok(())
        }
    }

    fn sleepy(
        name: &'static str,
        millis: u64,
        seen: &'static Mutex<Vec<(&'static str, thread::ThreadId, Instant, Instant)>>,
    ) -> Box<dyn Collector> {
        Box::new(Sleepy { name, delay: Duration::from_millis(millis), seen })
    }

    /// The same collectors through prometheus-client's own single-registry encoders.
    fn one_registry(format: Format, collectors: Vec<Box<dyn Collector>>) -> String {
        let mut registry = Registry::default();
        collectors.into_iter().for_each(|c| registry.register_collector(c));
        let mut body = String::new();
        match format {
            Format::OpenMetrics => encoding::text::encode(&mut body, &registry).unwrap(),
            Format::Text => encoding::prometheus_text::encode(&mut body, &registry).unwrap(),
        }
        body
    }

    #[test]
    fn the_pieces_make_the_body_one_registry_would_in_both_formats() {
        static SEEN: Mutex<Vec<(&str, thread::ThreadId, Instant, Instant)>> = Mutex::new(Vec::new());
        let collectors = || {
            vec![
                sleepy("first", 0, &SEEN),
                sleepy("slow", 30, &SEEN),
                sleepy("third", 0, &SEEN),
                sleepy("last", 0, &SEEN),
            ]
        };
        let mut exposition = Exposition::default();
        let mut all = collectors();
        let last = all.pop().unwrap();
        all.into_iter().for_each(|c| exposition.add(Source::Encoded(c)));
        exposition.add_after_the_rest(Source::Encoded(last));
        for format in [Format::OpenMetrics, Format::Text] {
            // Twice: the second orders the parts by the first's times.
            for _ in 0..2 {
                let pieces = exposition.encode(format).unwrap();
                assert_eq!(pieces.concat(), one_registry(format, collectors()), "{format:?}");
                assert!(pieces.iter().all(|p| p.is_empty() || p.ends_with('\n')), "whole lines: {pieces:?}");
            }
        }
    }

    #[test]
    fn a_stage_is_encoded_on_several_threads_and_the_next_waits_for_it() {
        static SEEN: Mutex<Vec<(&str, thread::ThreadId, Instant, Instant)>> = Mutex::new(Vec::new());
        let mut exposition = Exposition::default();
        for name in ["a", "b", "c", "d"] {
            exposition.add(Source::Encoded(sleepy(name, 40, &SEEN)));
        }
        exposition.add_after_the_rest(Source::Encoded(sleepy("agent", 0, &SEEN)));
        exposition.add(Source::Encoded(sleepy("http", 0, &SEEN)));
        exposition.encode(Format::Text).unwrap();
        let seen = SEEN.lock().unwrap();
        let stage: Vec<_> = seen.iter().filter(|(name, ..)| name.len() == 1).collect();
        let last_end = stage.iter().map(|(.., ended)| *ended).max().unwrap();
        for (name, _, began, _) in seen.iter().filter(|(name, ..)| name.len() > 1) {
            assert!(*began >= last_end, "{name} began before the stage before it ended");
        }
        let threads: std::collections::HashSet<_> = stage.iter().map(|(_, thread, ..)| thread).collect();
        let cpus = thread::available_parallelism().map_or(1, NonZeroUsize::get);
        assert_eq!(threads.len(), cpus.min(MAX_ENCODERS), "four parts, one thread each up to the CPUs");
    }

    /// A gauge family of one sample, written directly.
    #[derive(Debug)]
    struct Written;

    impl TextCollector for Written {
        fn write(&self, text: &mut Text) {
            text.gauges("written", "a written gauge", [([("l", "v")], 2i64)]);
        }
    }

    #[test]
    fn a_written_part_takes_its_place_among_the_encoded_ones() {
        static SEEN: Mutex<Vec<(&str, thread::ThreadId, Instant, Instant)>> = Mutex::new(Vec::new());
        let mut exposition = Exposition::default();
        exposition.add(Source::Encoded(sleepy("first", 20, &SEEN)));
        exposition.add(Source::Written(Box::new(Written)));
        exposition.add(Source::Encoded(sleepy("last", 0, &SEEN)));
        for format in [Format::OpenMetrics, Format::Text] {
            let pieces = exposition.encode(format).unwrap();
            assert!(pieces[0].starts_with("# HELP first "), "{pieces:?}");
            assert_eq!(
                pieces[1],
                "# HELP written a written gauge\n# TYPE written gauge\nwritten{l=\"v\"} 2\n"
            );
            assert!(pieces[2].starts_with("# HELP last "), "{pieces:?}");
        }
    }
}
