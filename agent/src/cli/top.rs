//! `kernsight top`: containers ranked by syscalls/s, errors/s, throttling, run-queue delay, CPU
//! waits, memory headroom and reclaim stalls, block I/O latency, network bytes, OOM kills; a live
//! view, or one snapshot with `--once`.

use std::{
    io::{BufRead as _, BufReader, IsTerminal as _, Write as _},
    os::unix::process::CommandExt as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    metrics::client::{self as scrape, Sample},
    top::{self, Snapshot, samples},
};

/// Where an agent listens by default (`metrics.listen`).
const DEFAULT_AGENT: &str = "127.0.0.1:9464";

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

/// An agent started for this view; stopped when dropped (or when this process dies).
struct OwnAgent(Child);

impl Drop for OwnAgent {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn start_agent() -> anyhow::Result<(OwnAgent, String)> {
    let exe = std::env::current_exe().context("cannot find the kernsight binary to start an agent")?;
    let mut command = Command::new(exe);
    command
        .args(["run", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: prctl is async-signal-safe; the agent then dies with this view.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = command.spawn().context("cannot start `kernsight run`")?;
    let stderr = child.stderr.take().context("no stderr from the agent")?;
    let agent = OwnAgent(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = BufReader::new(stderr).lines();
    let mut log = Vec::new();
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.split("serving metrics on http://").nth(1) {
            let address = rest.split('/').next().unwrap_or_default().to_owned();
            // Keep draining its log, or the agent blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return Ok((agent, address));
        }
        log.push(line);
    }
    bail!("the agent started for this view did not come up: {}", log.join(" | "))
}

pub fn run(args: TopArgs) -> anyhow::Result<()> {
    let (_own, address) = match &args.agent {
        Some(address) => (None, address.clone()),
        None => match scrape::fetch(DEFAULT_AGENT) {
            Ok(_) => (None, DEFAULT_AGENT.to_owned()),
            Err(err) => {
                match err {
                    scrape::ScrapeError::Tls(_) => eprintln!(
                        "the agent at {DEFAULT_AGENT} serves TLS, which top does not speak yet: starting one for this view"
                    ),
                    _ => eprintln!("no agent at {DEFAULT_AGENT}: starting one for this view"),
                }
                let (agent, address) = start_agent()?;
                (Some(agent), address)
            }
        },
    };
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
