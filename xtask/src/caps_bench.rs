//! `cargo xtask bench caps`: what the capability-check program costs per check.
//!
//! Two loops as root, pinned to one CPU, each making exactly one capability check per call:
//! - `kill(pid, 0)` to a process of another user: the permission check asks for CAP_KILL
//!   (`kill_ok_by_cred`) and signal 0 sends nothing, so the call is little more than the check;
//! - `setuid(0)`: `__sys_setuid` checks CAP_SETUID first, then replaces the credentials (about
//!   2 µs here, so the check is a small part of the call and the noise is larger).
//!
//! Each runs bare, then with the agent with and without the capability family; rounds are
//! interleaved so that drift on the machine spreads over every configuration alike.

use std::{path::PathBuf, process::Command, time::Instant};

use crate::{
    bench::{agent_command, median, run_pinned, stop},
    report::Row,
};

const WARMUP_CALLS: u64 = 50_000;
const ROUNDS: usize = 7;

/// (what, xtask's internal task, calls per run).
const LOOPS: [(&str, &str, u64); 2] = [
    ("kill(pid, 0) to another user's process (one CAP_KILL check per call)", "__kill-loop", 2_000_000),
    ("setuid(0) (one CAP_SETUID check per call)", "__setuid-loop", 300_000),
];

enum Tracer {
    None,
    /// An agent with this configuration file's contents.
    Kernsight(&'static str),
    /// bpftrace counting the same thing, for reference.
    Bpftrace(&'static str),
    /// An empty program on the same tracepoint: the floor.
    Floor,
}

const CONFIGS: &[(&str, Tracer)] = &[
    ("bare (nothing attached)", Tracer::None),
    ("kernsight: default without capabilities", Tracer::Kernsight("[security]\ncapability_checks = false\n")),
    ("kernsight: default (capabilities on)", Tracer::Kernsight("")),
    (
        "kernsight: capabilities only",
        Tracer::Kernsight(
            "[syscalls]\nenabled = false\n[sched]\nrunqueue_latency = false\nprocesses = false\n",
        ),
    ),
    (
        "bpftrace: count by (cgroup, cap, ret)",
        Tracer::Bpftrace("tracepoint:capability:cap_capable { @[cgroup, args->cap, args->ret] = count(); }"),
    ),
    ("floor: empty tp_btf program on cap_capable", Tracer::Floor),
];

pub fn run() -> Result<Vec<Row>, String> {
    let dir = std::env::temp_dir().join(format!("kernsight-bench-caps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let files: Vec<Option<PathBuf>> = CONFIGS
        .iter()
        .enumerate()
        .map(|(i, (_, tracer))| match tracer {
            Tracer::Kernsight(text) => {
                let path = dir.join(format!("config{i}.toml"));
                std::fs::write(&path, text).map(|()| Some(path))
            }
            _ => Ok(None),
        })
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot write a config file: {e}"))?;
    let mut rows = Vec::new();
    let result = (|| {
        for (what, task, calls) in LOOPS {
            println!("\n{what}: {calls} calls per run on one CPU, {ROUNDS} rounds, interleaved\n");
            let mut samples: Vec<Vec<f64>> = vec![Vec::new(); CONFIGS.len()];
            for round in 1..=ROUNDS {
                for (((name, tracer), file), samples) in CONFIGS.iter().zip(&files).zip(&mut samples) {
                    let ns = measure(tracer, file.as_ref(), task, calls)?;
                    eprintln!("round {round}/{ROUNDS}: {name:<45} {ns:8.1} ns/call");
                    samples.push(ns);
                }
            }
            report(&samples);
            // Per round: the agent with capabilities next to the agent without, same round.
            let added = samples[2].iter().zip(&samples[1]).map(|(with, without)| with - without).collect();
            let bpftrace = samples[4].iter().zip(&samples[0]).map(|(traced, bare)| traced - bare).collect();
            let floor = samples[5].iter().zip(&samples[0]).map(|(empty, bare)| empty - bare).collect();
            let short = what.split(" (").next().unwrap_or(what);
            rows.push(Row::new(format!("caps: kernsight added per check, {short}"), "ns", added));
            rows.push(Row::new(format!("caps: floor (empty program) added per check, {short}"), "ns", floor));
            rows.push(Row::new(format!("caps: bpftrace count added per check, {short}"), "ns", bpftrace));
        }
        Ok::<(), String>(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result.map(|()| rows)
}

fn report(samples: &[Vec<f64>]) {
    let bare = median(&samples[0]);
    println!("\n{:<45} {:>10} {:>10} {:>10} {:>10}", "configuration", "median", "min", "max", "overhead");
    for ((name, _), samples) in CONFIGS.iter().zip(samples) {
        let median = median(samples);
        let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = samples.iter().copied().fold(0.0, f64::max);
        println!("{name:<45} {median:8.1}ns {min:8.1}ns {max:8.1}ns {:+9.1}ns", median - bare);
    }
    let min = |i: usize| samples[i].iter().copied().fold(f64::INFINITY, f64::min);
    let with = median(&samples[2]) - median(&samples[1]);
    let alone = median(&samples[3]) - bare;
    let bpftrace = median(&samples[4]) - bare;
    let floor = median(&samples[5]) - bare;
    println!("An empty program on the same tracepoint (the floor) adds {floor:.1} ns per check");
    println!(
        "\nThe capability program adds {with:.1} ns per check next to the rest of the agent, \
         {alone:.1} ns on its own (bare loop: {bare:.1} ns per call); from the minimums, which a \
         busy machine disturbs least: {:.1} ns and {:.1} ns. bpftrace counting the same: \
         {bpftrace:.1} ns (minimums: {:.1} ns)",
        min(2) - min(1),
        min(3) - min(0),
        min(4) - min(0)
    );
}

/// Attaches the tracer (an agent with `config`, or bpftrace), times the loop, detaches.
fn measure(tracer: &Tracer, config: Option<&PathBuf>, task: &str, calls: u64) -> Result<f64, String> {
    let mut agent = match (tracer, config) {
        (Tracer::Kernsight(_), Some(file)) => {
            let mut command = agent_command();
            command.arg("--config").arg(file);
            Some(crate::bench::start_settled_agent(command)?)
        }
        (Tracer::Bpftrace(script), _) => Some(crate::bench::start_bpftrace(script)?),
        (Tracer::Floor, _) => Some(crate::bench::start_floor(&["cap_capable"])?),
        _ => None,
    };
    let ns = run_pinned(task, calls);
    if let Some(child) = agent.as_mut() {
        stop(child);
    }
    ns
}

unsafe extern "C" {
    /// libc's `syscall(2)` and `kill(2)`: std links libc, so no crate is needed for them.
    fn syscall(number: i64, ...) -> i64;
    fn kill(pid: i32, signal: i32) -> i32;
}

#[cfg(target_arch = "x86_64")]
const SYS_SETUID: i64 = 105;
#[cfg(target_arch = "aarch64")]
const SYS_SETUID: i64 = 146;

/// The user the target of `__kill-loop` runs as (`nobody`).
const OTHER_UID: u32 = 65534;

/// Runs `call` `calls` times after a warm-up; ns per call.
fn time(calls: u64, mut call: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    for _ in 0..WARMUP_CALLS {
        call()?;
    }
    let started = Instant::now();
    for _ in 0..calls {
        call()?;
    }
    Ok(started.elapsed().as_nanos() as f64 / calls as f64)
}

fn calls_arg(args: &[String], usage: &str) -> Result<u64, String> {
    args.first().and_then(|n| n.parse().ok()).ok_or_else(|| format!("usage: {usage} CALLS"))
}

/// `__setuid-loop N`: N raw `setuid(0)` calls; prints ns per call. Raw, not libc's `setuid`,
/// which in a threaded process would also signal every thread.
pub fn setuid_loop(args: &[String]) -> Result<(), String> {
    let calls = calls_arg(args, "__setuid-loop")?;
    let ns = time(calls, || {
        // SAFETY: setuid(0) as root changes nothing but the credentials' identity.
        let ret = unsafe { syscall(SYS_SETUID, 0i64) };
        if ret != 0 { Err("setuid(0) failed: run as root".to_owned()) } else { Ok(()) }
    })?;
    println!("{ns:.2}");
    Ok(())
}

/// `__kill-loop N`: starts a `sleep` as another user, then N `kill(pid, 0)` to it; prints ns
/// per call.
pub fn kill_loop(args: &[String]) -> Result<(), String> {
    use std::os::unix::process::CommandExt as _;
    let calls = calls_arg(args, "__kill-loop")?;
    let mut target = Command::new("sleep")
        .arg("600")
        .uid(OTHER_UID)
        .gid(OTHER_UID)
        .spawn()
        .map_err(|e| format!("cannot start `sleep` as uid {OTHER_UID}: {e}"))?;
    let pid = target.id() as i32;
    let timed = time(calls, || {
        // SAFETY: signal 0 only checks permission; nothing is sent.
        if unsafe { kill(pid, 0) } != 0 { Err(format!("kill({pid}, 0) failed: run as root")) } else { Ok(()) }
    });
    let _ = target.kill();
    let _ = target.wait();
    println!("{:.2}", timed?);
    Ok(())
}
