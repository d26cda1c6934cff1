//! `cargo xtask bench agent`: what the agent itself costs in CPU (user and system time of all its
//! threads, from /proc/PID/stat) and memory (RSS), idle and while a getppid storm runs on another
//! CPU, with a scrape every 5 s as Prometheus would. The kernel programs' own time is charged to
//! the processes making the syscalls (see `bench syscalls`), not to the agent.

use std::{
    thread,
    time::{Duration, Instant},
};

use crate::{
    bench::{agent_command, run_pinned, stop},
    report::Row,
    scrape_bench::{get, start_agent},
};

const RUNS: usize = 3;
const IDLE_WINDOW: Duration = Duration::from_secs(20);
const SCRAPE_EVERY: Duration = Duration::from_secs(5);
/// About 15 s of getppid at this machine's rate with the agent attached.
const STORM_CALLS: u64 = 50_000_000;

struct Run {
    idle_cpu: f64,
    idle_rss: f64,
    storm_cpu: f64,
    storm_rss: f64,
    storm_rate: f64,
}

pub fn run() -> Result<Vec<Row>, String> {
    println!(
        "agent CPU and RSS: {RUNS} runs; idle for {}s, then a getppid storm; a scrape every {}s\n",
        IDLE_WINDOW.as_secs(),
        SCRAPE_EVERY.as_secs()
    );
    let mut runs = Vec::new();
    for round in 1..=RUNS {
        let run = measure()?;
        eprintln!(
            "run {round}/{RUNS}: idle {:.3}% of a core, {:.1} MiB; storm of {:.2} M syscalls/s: {:.3}% of a core, {:.1} MiB",
            run.idle_cpu,
            run.idle_rss,
            run.storm_rate / 1e6,
            run.storm_cpu,
            run.storm_rss
        );
        runs.push(run);
    }
    let column = |f: fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
    Ok(vec![
        Row::new("agent CPU, idle (scrape every 5 s)", "% of core", column(|r| r.idle_cpu)),
        Row::new("agent RSS, idle", "MiB", column(|r| r.idle_rss)),
        Row::new("getppid storm rate, agent attached", "M calls/s", column(|r| r.storm_rate / 1e6)),
        Row::new("agent CPU during the storm", "% of core", column(|r| r.storm_cpu)),
        Row::new("agent RSS during the storm", "MiB", column(|r| r.storm_rss)),
    ])
}

fn measure() -> Result<Run, String> {
    let (mut agent, address) = start_agent(agent_command())?;
    let pid = agent.id();
    let result = (|| {
        // Warm up: the start-up walk and the first scrape are not steady state.
        get(&address, "/metrics")?;
        thread::sleep(Duration::from_secs(3));

        let (cpu, started) = (cpu_seconds(pid)?, Instant::now());
        while started.elapsed() < IDLE_WINDOW {
            thread::sleep(SCRAPE_EVERY);
            get(&address, "/metrics")?;
        }
        let idle_cpu = (cpu_seconds(pid)? - cpu) / started.elapsed().as_secs_f64() * 100.0;
        let idle_rss = rss_mib(pid);

        let (cpu, started) = (cpu_seconds(pid)?, Instant::now());
        let storm = thread::spawn(|| run_pinned("__syscall-loop", STORM_CALLS));
        let mut next_scrape = started + SCRAPE_EVERY;
        while !storm.is_finished() {
            thread::sleep(Duration::from_millis(100));
            if Instant::now() >= next_scrape {
                get(&address, "/metrics")?;
                next_scrape += SCRAPE_EVERY;
            }
        }
        let storm_cpu = (cpu_seconds(pid)? - cpu) / started.elapsed().as_secs_f64() * 100.0;
        let ns_per_call = storm.join().map_err(|_| "the syscall loop panicked")??;
        Ok(Run { idle_cpu, idle_rss, storm_cpu, storm_rss: rss_mib(pid), storm_rate: 1e9 / ns_per_call })
    })();
    stop(&mut agent);
    result
}

/// User and system time of a process, all threads, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("agent stat: {e}"))?;
    // Fields after the parenthesised command name: state is the 3rd field, utime the 14th.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).ok_or("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks =
        |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).ok_or("malformed /proc/PID/stat");
    Ok((ticks(11)? + ticks(12)?) / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    crate::process::output(std::process::Command::new("getconf").arg("CLK_TCK"))
        .and_then(|out| out.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resident memory of a process in MiB (0 if it cannot be read).
pub(crate) fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// The most resident memory a process has had, in MiB: since it started, or since
/// `reset_peak_rss` (0 if it cannot be read). A pod's memory limit must hold this, not the RSS
/// between two of its busy moments.
pub(crate) fn peak_rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmHWM:")
}

/// Starts `peak_rss_mib` again from the process's RSS now (`clear_refs`' 5, Linux 4.0).
pub(crate) fn reset_peak_rss(pid: u32) -> Result<(), String> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .map_err(|err| format!("cannot reset the peak RSS of {pid}: {err}"))
}

fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix(field).map(str::to_owned)))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}
