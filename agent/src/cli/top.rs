//! `kernsight top`: containers ranked by syscalls/s, errors/s, throttling, run-queue delay, CPU
//! waits, memory headroom and reclaim stalls, block I/O latency, network bytes, OOM kills; a live
//! view, or one snapshot with `--once`.

use std::{
    io::{IsTerminal as _, Write as _},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{
    metrics::client::{self as scrape, Sample},
    top::{self, Snapshot, samples},
};

#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// The agent to read (`HOST:PORT` of `kernsight run`). Default: 127.0.0.1:9464, or, if no
    /// agent listens there, one started for this view and stopped with it.
    #[arg(long, value_name = "HOST:PORT")]
    agent: Option<String>,
    /// Time between the two scrapes a rate is computed from, and between refreshes.
    #[arg(long, default_value = "2s", value_parser = crate::duration::parse_positive, value_name = "DURATION")]
    interval: Duration,
    /// Print one snapshot (after one interval) and exit, without screen control.
    #[arg(long)]
    once: bool,
    /// The column to rank by.
    #[arg(long, default_value = "SYSCALLS/S", value_name = "COLUMN")]
    sort: String,
    /// Rows shown.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// One row per workload (a Deployment's pods together) and container name, instead of per
    /// pod: the `workload` label; pods outside Kubernetes and host cgroups keep their rows.
    #[arg(long)]
    by_workload: bool,
}

pub fn run(args: TopArgs) -> anyhow::Result<()> {
    let (_own, address) = super::own_agent::find_or_start(args.agent.as_deref(), "this view")?;
    let read = |address: &str| -> anyhow::Result<Vec<Sample>> {
        let samples = samples(&scrape::fetch(address)?);
        Ok(if args.by_workload { top::by_workload(samples) } else { samples })
    };
    let pod_header = if args.by_workload { "WORKLOAD" } else { "POD" };
    let mut before = read(&address)?;
    let mut at = Instant::now();
    let live = !args.once && std::io::stdout().is_terminal();
    loop {
        std::thread::sleep(args.interval);
        let after = read(&address)?;
        let seconds = at.elapsed().as_secs_f64();
        at = Instant::now();
        let snapshot = Snapshot::new(&before, &after, seconds, &args.sort);
        let table = snapshot.render(args.limit, pod_header);
        let mut out = std::io::stdout().lock();
        let written = if live {
            // Clear and home, then the table: a refresh without a curses library.
            write!(
                out,
                "\x1b[2J\x1b[Hkernsight top: {address}, every {:?} (Ctrl-C to quit)\n\n{table}",
                args.interval
            )
        } else {
            write!(out, "{table}")
        };
        match written.and_then(|()| out.flush()) {
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            other => other.context("writing to stdout")?,
        }
        if args.once {
            return Ok(());
        }
        if !live {
            writeln!(out)?;
        }
        before = after;
    }
}
