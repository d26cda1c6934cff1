//! `cargo xtask bench sched`: what the scheduler programs cost per context switch.
//!
//! Two processes pinned to one CPU play ping-pong over pipes (a byte each way per round trip):
//! each round trip is two wakeups and two context switches, so it is as sched-heavy as a
//! workload gets. It runs bare, then with the agent in four configurations (the last one without
//! the wait reason, to price it); rounds are interleaved so that drift on the machine spreads
//! over every configuration alike.

use std::{
    io::{Read as _, Write as _},
    path::PathBuf,
    process::{Command, Stdio},
    time::Instant,
};

use crate::{
    bench::{agent_command, median, stop},
    report::Row,
};

const ROUND_TRIPS: u64 = 200_000;
const WARMUP_ROUND_TRIPS: u64 = 10_000;
const ROUNDS: usize = 5;

/// (name, agent config file contents; `None`: no agent). The floor comes last, beside them.
const CONFIGS: &[(&str, Option<&str>)] = &[
    ("bare (nothing attached)", None),
    (
        "kernsight: syscalls only (sched families off)",
        Some("[sched]\nrunqueue_latency = false\nprocesses = false\n"),
    ),
    ("kernsight: sched families only (syscalls off)", Some("[syscalls]\nenabled = false\n")),
    ("kernsight: default (syscalls + sched)", Some("")),
    ("kernsight: default without the wait reason", Some("[sched]\nwait_reason = false\n")),
    // The builds older kernels load: run-queue times in the task on 5.11 to 6.1 (as in the
    // full build), in an LRU hash by thread id on 5.10.
    (HASHED_SLOTS, Some("[bpf]\nobject = \"hashed-slots\"\n")),
    (FALLBACK, Some("[bpf]\nobject = \"fallback\"\n")),
    // Every wait stamped by the wakeup programs, as before the scheduler's own account was read.
    (STAMPED, Some("[sched]\nwait_start = \"wakeup\"\n")),
];
const STAMPED: &str = "kernsight: default, waits stamped at wakeup";
const HASHED_SLOTS: &str = "kernsight: default, hashed-slots build";
const FALLBACK: &str = "kernsight: default, fallback build";
const FLOOR: &str = "floor: empty tp_btf programs on the sched hooks";
/// The hooks of the sched families: `sched_switch`, `sched_wakeup`, `sched_wakeup_new`.
const FLOOR_HOOKS: &[&str] = &["sched"];

/// Configurations (of `CONFIGS`, or the floor) whose programs are priced per context switch by
/// the kernel's own account (`program_costs`): each switch of the ping-pong follows one wakeup.
/// (name, the programs that must run, those that run where the agent attaches them.) Where the
/// scheduler keeps its own account of waits, the wakeup programs are not attached without the
/// wait reason, nor with it where the kernel throttles per task (6.18+).
const PRICED: &[(&str, &[&str], &[&str])] = &[
    (FLOOR, &["floor_sched_wakeup", "floor_sched_switch"], &[]),
    ("kernsight: default (syscalls + sched)", &["ks_sched_switch"], &["ks_sched_wakeup"]),
    ("kernsight: default without the wait reason", &["ks_sched_switch"], &[]),
    (HASHED_SLOTS, &["ks_sched_switch"], &["ks_sched_wakeup"]),
    (FALLBACK, &["ks_sched_switch"], &["ks_sched_wakeup"]),
    (STAMPED, &["ks_sched_wakeup", "ks_sched_switch"], &[]),
];
const PRICED_ROUNDS: usize = 3;

pub fn run() -> Result<Vec<Row>, String> {
    let dir = std::env::temp_dir().join(format!("kernsight-bench-sched-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let files: Vec<Option<PathBuf>> = CONFIGS
        .iter()
        .enumerate()
        .map(|(i, (_, text))| {
            text.map(|text| {
                let path = dir.join(format!("config{i}.toml"));
                std::fs::write(&path, text).map(|()| path)
            })
            .transpose()
        })
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot write a config file: {e}"))?;
    println!("pipe ping-pong on one CPU: {ROUND_TRIPS} round trips per run, {ROUNDS} rounds, interleaved\n");
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); CONFIGS.len()];
    let mut floor = Vec::new();
    let result = (|| {
        for round in 1..=ROUNDS {
            for (((name, _), file), samples) in CONFIGS.iter().zip(&files).zip(&mut samples) {
                let ns = measure(file.as_ref())?;
                eprintln!("round {round}/{ROUNDS}: {name:<50} {ns:8.1} ns/round trip");
                samples.push(ns);
            }
            let mut attached = crate::bench::start_floor(FLOOR_HOOKS)?;
            let ns = time_ping_pong();
            stop(&mut attached);
            let ns = ns?;
            eprintln!("round {round}/{ROUNDS}: {FLOOR:<50} {ns:8.1} ns/round trip");
            floor.push(ns);
        }
        Ok::<(), String>(())
    })();
    let priced = result.and_then(|()| program_costs(&files));
    let _ = std::fs::remove_dir_all(&dir);
    let priced = priced?;

    let bare = median(&samples[0]);
    println!("\n{:<50} {:>10} {:>10} {:>10} {:>10}", "configuration", "median", "min", "max", "overhead");
    for ((name, _), samples) in CONFIGS.iter().zip(&samples) {
        let median = median(samples);
        let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = samples.iter().copied().fold(0.0, f64::max);
        println!("{name:<50} {median:8.1}ns {min:8.1}ns {max:8.1}ns {:+9.1}ns", median - bare);
    }
    let sched = median(&samples[3]) - median(&samples[1]);
    println!(
        "\nThe sched families add {sched:.1} ns per round trip over syscall accounting alone \
         ({:.1} ns per context switch: two per round trip)",
        sched / 2.0
    );
    // Per round, next to syscall accounting alone in the same round; two switches a round trip.
    let per_switch: Vec<f64> =
        samples[3].iter().zip(&samples[1]).map(|(all, syscalls)| (all - syscalls) / 2.0).collect();
    let reason: Vec<f64> =
        samples[3].iter().zip(&samples[4]).map(|(with, without)| (with - without) / 2.0).collect();
    println!("Telling throttled from contended waits adds {:.1} ns per context switch", median(&reason));
    let floor_per_switch: Vec<f64> =
        floor.iter().zip(&samples[0]).map(|(f, bare)| (f - bare) / 2.0).collect();
    let ratio = crate::report::ratios(&per_switch, &floor_per_switch);
    println!(
        "{FLOOR}: {:.1} ns per context switch; the sched programs cost {:.2}x that",
        median(&floor_per_switch),
        median(&ratio)
    );
    let mut rows = vec![
        Row::new("sched programs: overhead per context switch", "ns", per_switch),
        Row::new("sched: floor per context switch (empty programs, same hooks)", "ns", floor_per_switch),
        Row::new("sched: programs / floor", "x", ratio),
        Row::new("wait reason (throttled or contention): added cost per context switch", "ns", reason),
    ];
    println!(
        "\nper context switch, the kernel's own account of the wakeup and switch programs (kernel.bpf_stats_enabled):"
    );
    let totals: Vec<Vec<f64>> =
        priced.iter().map(|runs| runs.iter().map(|each| each.iter().sum()).collect()).collect();
    for (((name, required, optional), runs), samples) in PRICED.iter().zip(&priced).zip(&totals) {
        // Each program's median on its own, so that what a change moved can be told apart.
        let split: Vec<String> = required
            .iter()
            .chain(optional.iter())
            .enumerate()
            .map(|(at, program)| match median(&runs.iter().map(|each| each[at]).collect::<Vec<_>>()) {
                ns if ns > 0.0 => format!("{program} {ns:.1}"),
                _ => format!("{program} not attached"),
            })
            .collect();
        println!("  {name:<50} {:7.1} ns  ({})", median(samples), split.join(" + "));
        rows.push(Row::new(
            format!("sched, kernel's account per context switch: {name}"),
            "ns",
            samples.clone(),
        ));
    }
    let to_floor = crate::report::ratios(&totals[1], &totals[0]);
    rows.push(Row::new("sched, kernel's account: default / empty programs", "x", to_floor));
    Ok(rows)
}

/// The ping-pong once more per priced configuration with the kernel's accounting of BPF
/// programs on: ns per run of each of its programs (the wakeup's and the switch's, one run each
/// per context switch; 0 for a program the agent did not attach), for each of `PRICED`, each
/// round.
fn program_costs(files: &[Option<PathBuf>]) -> Result<Vec<Vec<Vec<f64>>>, String> {
    let _accounting = crate::program_stats::Accounting::on()?;
    let mut samples: Vec<Vec<Vec<f64>>> = vec![Vec::new(); PRICED.len()];
    for _ in 0..PRICED_ROUNDS {
        for ((name, required, optional), samples) in PRICED.iter().zip(&mut samples) {
            let mut attached = if *name == FLOOR {
                crate::bench::start_floor(FLOOR_HOOKS)?
            } else {
                let file = CONFIGS
                    .iter()
                    .position(|(config, _)| config == name)
                    .and_then(|index| files[index].as_ref())
                    .ok_or_else(|| format!("no agent configuration named `{name}`"))?;
                let mut command = agent_command();
                command.arg("--config").arg(file);
                crate::bench::start_settled_agent(command)?
            };
            let timed = time_ping_pong();
            let costs = crate::program_stats::per_run();
            stop(&mut attached);
            timed?;
            let costs = costs?;
            let ran = |program: &str| crate::program_stats::total(&costs, &[program]);
            let mut each = required
                .iter()
                .map(|program| {
                    ran(program).ok_or_else(|| format!("{name}: {program} did not run: {costs:?}"))
                })
                .collect::<Result<Vec<f64>, _>>()?;
            each.extend(optional.iter().map(|program| ran(program).unwrap_or(0.0)));
            samples.push(each);
        }
    }
    Ok(samples)
}

/// Starts the agent with `config` (if any), times the ping-pong, stops the agent.
fn measure(config: Option<&PathBuf>) -> Result<f64, String> {
    let mut agent = match config {
        None => None,
        Some(file) => {
            let mut command = agent_command();
            command.arg("--config").arg(file);
            Some(crate::bench::start_settled_agent(command)?)
        }
    };
    let ns = time_ping_pong();
    if let Some(child) = agent.as_mut() {
        stop(child);
    }
    ns
}

fn time_ping_pong() -> Result<f64, String> {
    crate::bench::run_pinned("__ping-pong", ROUND_TRIPS)
}

/// `__ping-pong N`: N round trips with an echoing child (itself, `__echo`, on the same CPU:
/// the affinity is inherited); prints ns per round trip.
pub fn ping_pong(args: &[String]) -> Result<(), String> {
    let trips: u64 = args.first().and_then(|n| n.parse().ok()).ok_or("usage: __ping-pong ROUND_TRIPS")?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find xtask's own binary: {e}"))?;
    let mut child = Command::new(exe)
        .arg("__echo")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the echo process: {e}"))?;
    let mut to = child.stdin.take().ok_or("no stdin")?;
    let mut from = child.stdout.take().ok_or("no stdout")?;
    let mut byte = [0u8; 1];
    let mut trip = |byte: &mut [u8; 1]| -> Result<(), String> {
        to.write_all(byte).map_err(|e| format!("write: {e}"))?;
        from.read_exact(byte).map_err(|e| format!("read: {e}"))
    };
    for _ in 0..WARMUP_ROUND_TRIPS {
        trip(&mut byte)?;
    }
    let started = Instant::now();
    for _ in 0..trips {
        trip(&mut byte)?;
    }
    let elapsed = started.elapsed();
    drop(trip);
    drop(to); // EOF: the echo process exits
    let _ = child.wait();
    println!("{:.2}", elapsed.as_nanos() as f64 / trips as f64);
    Ok(())
}

/// `__echo`: copies stdin to stdout a byte at a time, unbuffered, until EOF.
pub fn echo() -> Result<(), String> {
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let mut byte = [0u8; 1];
    loop {
        match stdin.read(&mut byte) {
            Ok(0) => return Ok(()),
            Ok(_) => {
                stdout.write_all(&byte).map_err(|e| format!("echo write: {e}"))?;
                stdout.flush().map_err(|e| format!("echo flush: {e}"))?;
            }
            Err(e) => return Err(format!("echo read: {e}")),
        }
    }
}
