//! One `kernsight trace` run: read records as they come, decode, enrich, filter, then print or
//! aggregate; print (and reset) aggregations and the loss count at each interval and at the end.

use std::{
    collections::BTreeMap,
    os::fd::{AsRawFd, RawFd},
    time::Duration,
};

use anyhow::Context as _;
use kernsight_common::trace::{CgroupSyscallKey, SyscallCount};
use tokio::io::unix::AsyncFd;

use super::{
    aggregate::Aggregator,
    enrich::Enricher,
    filter::Expr,
    output::{JsonLines, TablePrinter},
    record::RecordDecoder,
};
use crate::{
    bpf::trace::{Filters, Trace},
    kernel::names::syscall_name,
    kernel::value::{Event, Value},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// How often queued records are fetched when the kernel has not woken the reader.
const POLL: Duration = Duration::from_millis(10);

/// Printed events are written out in batches of this many bytes.
const FLUSH_BYTES: usize = 64 * 1024;

/// How often a trace that counts by cgroup in the kernel walks the cgroup hierarchies to find
/// the counted cgroups that were removed (tens of milliseconds on a node of thousands).
const COUNTED_CGROUPS_WALK_EVERY: Duration = Duration::from_secs(5);

/// What to do with each event.
pub struct Sink {
    pub format: Format,
    pub columns: Vec<String>,
    pub colour: bool,
    pub filter: Option<Expr>,
    pub aggregator: Option<Aggregator>,
    /// Preset post-processing (readable addresses, names).
    pub adjust: fn(&mut Event),
    pub interval: Option<Duration>,
    pub duration: Option<Duration>,
    /// Process and cgroup filters to apply here, for sources the kernel does not filter
    /// (exec and exit events, which the always-on `processes` family produces; they are rare).
    pub user_filters: Option<Filters>,
}

fn passes(filters: &Filters, event: &Event) -> bool {
    let number = |field: &str| match event.get(field) {
        Some(Value::UInt(v)) => Some(*v),
        _ => None,
    };
    let pid_ok = filters.tgid.is_none_or(|tgid| number("pid") == Some(u64::from(tgid)));
    let cgroup_ok =
        filters.cgroups.as_ref().is_none_or(|set| number("cgroup_id").is_some_and(|id| set.contains(&id)));
    pid_ok && cgroup_ok
}

/// What the run saw, for the end line (and tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub events: u64,
    pub printed: u64,
    pub decode_errors: u64,
    pub lost: u64,
}

/// How events are written out: as a table, or as JSON lines.
struct Writers {
    table: TablePrinter,
    json: JsonLines,
}

struct RingFd(RawFd);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Runs until `--duration` passes or Ctrl-C / SIGTERM; returns what it saw.
pub async fn run(
    mut trace: Trace,
    decoder: RecordDecoder,
    mut enricher: Enricher,
    mut sink: Sink,
) -> anyhow::Result<Totals> {
    let fd = match (&trace.ring, &trace.processes) {
        (Some(ring), _) => Some(ring.as_raw_fd()),
        (None, Some(processes)) => Some(processes.as_raw_fd()),
        (None, None) => None,
    };
    // SAFETY: `trace` owns the fd and outlives the registration (both live until this returns).
    let ready = fd
        .map(|fd| unsafe { AsyncFd::register_with_interest(RingFd(fd), tokio::io::Interest::READABLE) })
        .transpose()?;
    let mut totals = Totals::default();
    let mut out = std::io::stdout().lock();
    let mut ticks =
        sink.interval.map(|every| tokio::time::interval_at(tokio::time::Instant::now() + every, every));
    let end = sink.duration.map(|d| tokio::time::Instant::now() + d);
    // Both registered once, before the loop: a `ctrl_c()` future made afresh in each iteration
    // would miss a SIGINT that arrives while events are being printed.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot handle SIGTERM")?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot handle SIGINT")?;
    let mut reported_lost = 0;
    let mut counted_before: BTreeMap<u32, SyscallCount> = BTreeMap::new();
    let mut latency_before: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    let mut cgroup_before: BTreeMap<CgroupSyscallKey, SyscallCount> = BTreeMap::new();
    let mut writers =
        Writers { table: TablePrinter::new(sink.columns.clone(), sink.colour), json: JsonLines::default() };
    if sink.format == Format::Table && sink.aggregator.is_none() {
        write_out(&mut out, &writers.table.header())?;
    }
    // The kernel wakes this reader only once a batch is queued, and once a wait (see the
    // kernel side): below that, records are fetched by this poll.
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        // Then what was queued before the kernel side knew: its next wakeup is for later records.
        trace.waiting();
        drain(&mut trace, &decoder, &mut enricher, &mut sink, &mut writers, &mut out, &mut totals)?;
        let readable = async {
            match &ready {
                Some(ready) => ready.readable().await.map(Some),
                None => std::future::pending().await,
            }
        };
        let tick = async {
            match &mut ticks {
                Some(ticks) => ticks.tick().await,
                None => std::future::pending().await,
            }
        };
        let finished = async {
            match end {
                Some(end) => tokio::time::sleep_until(end).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            guard = readable => {
                let mut guard = guard.context("polling the ring buffer")?.context("no ring buffer")?;
                drain(&mut trace, &decoder, &mut enricher, &mut sink, &mut writers, &mut out, &mut totals)?;
                guard.clear_ready();
            }
            _ = poll.tick(), if fd.is_some() => {
                drain(&mut trace, &decoder, &mut enricher, &mut sink, &mut writers, &mut out, &mut totals)?;
            }
            _ = tick => {
                drain(&mut trace, &decoder, &mut enricher, &mut sink, &mut writers, &mut out, &mut totals)?;
                let lost = trace.lost();
                print_aggregation(
                    &mut trace,
                    &mut sink,
                    &mut counted_before,
                    &mut latency_before,
                    &mut cgroup_before,
                    &mut enricher,
                    &mut out,
                )?;
                // On stderr, as the summary: stdout stays one format (JSON lines stay JSON).
                eprintln!("lost {} events", lost - reported_lost);
                reported_lost = lost;
            }
            () = finished => break,
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }
    drain(&mut trace, &decoder, &mut enricher, &mut sink, &mut writers, &mut out, &mut totals)?;
    print_aggregation(
        &mut trace,
        &mut sink,
        &mut counted_before,
        &mut latency_before,
        &mut cgroup_before,
        &mut enricher,
        &mut out,
    )?;
    totals.lost = trace.lost();
    let summary = format!(
        "{} events, {} printed, lost {} events{}",
        totals.events,
        totals.printed,
        totals.lost,
        if totals.decode_errors > 0 {
            format!(", {} undecodable records", totals.decode_errors)
        } else {
            String::new()
        }
    );
    // On stderr: stdout stays one format (a table, or JSON lines for jq).
    eprintln!("{summary}");
    Ok(totals)
}

fn write_out(out: &mut impl std::io::Write, text: &str) -> anyhow::Result<()> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // A closed pipe (`| head`) is the reader's choice: stop quietly.
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => other.context("writing to stdout"),
    }
}

fn drain(
    trace: &mut Trace,
    decoder: &RecordDecoder,
    enricher: &mut Enricher,
    sink: &mut Sink,
    writers: &mut Writers,
    out: &mut impl std::io::Write,
    totals: &mut Totals,
) -> anyhow::Result<()> {
    // Written out at FLUSH_BYTES: allocated once at that size, not grown by doubling.
    let mut text = String::with_capacity(FLUSH_BYTES + 4096);
    let now = Enricher::monotonic_ns();
    // One event's room for every record (`RecordDecoder::decode_into`).
    let mut event = Event { fields: Vec::with_capacity(crate::trace::record::EVENT_FIELDS) };
    loop {
        let record = match (&mut trace.ring, &mut trace.processes) {
            (Some(ring), _) => ring.next().map(|r| decoder.decode_into(&r, now, &mut event)),
            (None, Some(processes)) => {
                processes.ring.next().map(|r| decoder.decode_into(&r, now, &mut event))
            }
            (None, None) => None,
        };
        let Some(decoded) = record else { break };
        totals.events += 1;
        match decoded {
            Ok(()) => {}
            Err(crate::trace::record::RecordError::Continuation) => continue,
            Err(_) => {
                totals.decode_errors += 1;
                continue;
            }
        }
        if sink.user_filters.as_ref().is_some_and(|f| !passes(f, &event)) {
            continue;
        }
        enricher.add(&mut event);
        (sink.adjust)(&mut event);
        if sink.filter.as_ref().is_some_and(|f| !f.matches(&event)) {
            continue;
        }
        totals.printed += 1;
        match (&mut sink.aggregator, sink.format) {
            (Some(aggregator), _) => aggregator.add(&event),
            (None, Format::Json) => writers.json.push(&mut text, &event),
            (None, Format::Table) => text.push_str(&writers.table.event(&event)),
        }
        if text.len() > FLUSH_BYTES {
            write_out(out, &text)?;
            text.clear(); // its capacity kept: `mem::take` would grow a new one by doubling
        }
    }
    if !text.is_empty() {
        write_out(out, &text)?;
    }
    Ok(())
}

/// Prints the aggregation of the interval and resets it; kernel counts are differences from
/// the previous print.
fn print_aggregation(
    trace: &mut Trace,
    sink: &mut Sink,
    before: &mut BTreeMap<u32, SyscallCount>,
    latency_before: &mut BTreeMap<u32, Vec<u64>>,
    cgroup_before: &mut BTreeMap<CgroupSyscallKey, SyscallCount>,
    enricher: &mut Enricher,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let Some(aggregator) = &mut sink.aggregator else { return Ok(()) };
    let cgroup_rows = trace.cgroup_counts();
    let by_cgroup = cgroup_rows.is_some();
    if let Some(rows) = cgroup_rows {
        // Which counted cgroups were removed, by a walk every few seconds: their pairs are
        // dropped once idle, else a long trace on a node whose pods come and go would fill the
        // kernel's map with them and count every new pod's calls as lost.
        enricher.maintain(COUNTED_CGROUPS_WALK_EVERY);
        let mut removed = Vec::new();
        for (key, now) in rows {
            let previous = cgroup_before.insert(key, now).unwrap_or_default();
            let calls = now.calls - previous.calls.min(now.calls);
            if calls == 0 {
                if !enricher.is_alive(key.cgroup_id) {
                    removed.push(key);
                }
                continue;
            }
            let values = aggregator
                .spec()
                .by
                .iter()
                .map(|field| match field.as_str() {
                    "syscall" => Value::text(&syscall_name(key.syscall)),
                    other => enricher.field_of(key.cgroup_id, other).unwrap_or_else(Value::empty),
                })
                .collect();
            aggregator.add_count(values, calls);
        }
        trace.forget_cgroup_counts(&removed);
        for key in &removed {
            cgroup_before.remove(key);
        }
    } else if trace.has_latency() {
        let by_syscall = !aggregator.spec().by.is_empty();
        for (nr, now) in trace.syscall_latency() {
            let previous = latency_before.insert(nr, now.clone()).unwrap_or_default();
            let delta: Vec<u64> = now
                .iter()
                .enumerate()
                .map(|(b, c)| c - previous.get(b).copied().unwrap_or(0).min(*c))
                .collect();
            let key = if by_syscall { vec![Value::text(&syscall_name(nr))] } else { Vec::new() };
            aggregator.add_histogram(key, &delta);
        }
    }
    for (nr, now) in trace.syscall_counts().into_iter().filter(|_| !trace.has_latency() && !by_cgroup) {
        let previous = before.insert(nr, now).unwrap_or_default();
        let calls = now.calls - previous.calls.min(now.calls);
        if calls > 0 {
            aggregator.add_count(vec![Value::text(&syscall_name(nr))], calls);
        }
    }
    let text = match sink.format {
        Format::Table => aggregator.render(),
        Format::Json => aggregator.json_lines(),
    };
    aggregator.clear();
    write_out(out, &text)
}
