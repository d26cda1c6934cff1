//! `cargo xtask bench syscalls`: what always-on syscall accounting costs per syscall, next to
//! the floor (an empty program on the same hook, `kernsight-floor`), bpftrace doing less (an
//! empty probe) and bpftrace doing the same (a count by cgroup and syscall id).
//!
//! A `getppid` loop (always a real syscall: libc does not cache it) runs in its own process,
//! pinned to one CPU, with each tracer attached in turn; rounds are interleaved so that drift
//! on the machine spreads over every configuration alike.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

pub(crate) use crate::report::median;
use crate::{
    process::{is_root, output, workspace_root},
    report::{self, Row},
};

const CALLS: u64 = 5_000_000;
const WARMUP_CALLS: u64 = 200_000;
const ROUNDS: usize = 5;

enum Tracer {
    None,
    /// `kernsight-floor` with these hooks: empty programs, the floor.
    Floor(&'static [&'static str]),
    Bpftrace(&'static str),
    Kernsight(&'static [&'static str]),
    /// The agent with this configuration file (TOML) beside its defaults.
    KernsightConfig(&'static str),
}

struct Config {
    name: &'static str,
    tracer: Tracer,
}

const CONFIGS: &[Config] = &[
    Config { name: "bare (nothing attached)", tracer: Tracer::None },
    Config { name: FLOOR, tracer: Tracer::Floor(&["sys_exit"]) },
    Config { name: FLOOR_BOTH, tracer: Tracer::Floor(&["sys_enter", "sys_exit"]) },
    Config {
        name: "bpftrace: empty probe on raw_syscalls:sys_enter",
        tracer: Tracer::Bpftrace("tracepoint:raw_syscalls:sys_enter {}"),
    },
    Config {
        name: "bpftrace: count by (cgroup, syscall id)",
        tracer: Tracer::Bpftrace("tracepoint:raw_syscalls:sys_exit { @[cgroup, args->id] = count(); }"),
    },
    Config {
        name: "bpftrace: latency histogram by syscall id",
        tracer: Tracer::Bpftrace(
            "tracepoint:raw_syscalls:sys_enter { @s[tid] = nsecs; } \
             tracepoint:raw_syscalls:sys_exit /@s[tid]/ { @[args->id] = hist(nsecs - @s[tid]); delete(@s[tid]); }",
        ),
    },
    Config { name: ACCOUNTING, tracer: Tracer::Kernsight(&[]) },
    Config { name: HISTOGRAM, tracer: Tracer::Kernsight(&["--syscall-latency", "true"]) },
    // The escape family's bit test on every syscall (getppid is no candidate): what it costs
    // the syscalls it does not count.
    Config {
        name: "kernsight: always-on accounting, escape attempts off",
        tracer: Tracer::KernsightConfig("[security]\nescape_attempts = false\n"),
    },
    // The build a kernel without cgroup local storage (5.11 to 6.1) loads: slots found by
    // cgroup id in a hash instead of the cgroup's own storage.
    Config { name: HASHED_SLOTS, tracer: Tracer::KernsightConfig("[bpf]\nobject = \"hashed-slots\"\n") },
    // The build 5.10 loads: the same hash, and every read of the current task a probe read.
    Config { name: FALLBACK, tracer: Tracer::KernsightConfig("[bpf]\nobject = \"fallback\"\n") },
];

const FLOOR: &str = "floor: empty tp_btf program on sys_exit";
/// The histogram's two hooks.
const FLOOR_BOTH: &str = "floor: empty tp_btf programs on sys_enter and sys_exit";
const ACCOUNTING: &str = "kernsight: always-on accounting";
const HISTOGRAM: &str = "kernsight: with latency histogram";
const HASHED_SLOTS: &str = "kernsight: always-on accounting, hashed-slots build";
const FALLBACK: &str = "kernsight: always-on accounting, fallback build";

/// The configurations whose programs `program_costs` prices, and the programs on the syscall
/// hooks each runs.
const PRICED: &[(&str, &[&str])] = &[
    (FLOOR, &["floor_sys_exit"]),
    (FLOOR_BOTH, &["floor_sys_enter", "floor_sys_exit"]),
    (ACCOUNTING, &["ks_sys_exit"]),
    (HISTOGRAM, &["ks_sys_enter", "ks_sys_exit"]),
    (HASHED_SLOTS, &["ks_sys_exit"]),
    (FALLBACK, &["ks_sys_exit"]),
];
/// Runs of each priced configuration (the kernel's account varies little between them).
const PRICED_ROUNDS: usize = 3;

/// The index of the configuration named `name`.
fn config(name: &str) -> usize {
    CONFIGS.iter().position(|c| c.name == name).unwrap_or_else(|| unreachable!("no configuration {name}"))
}

pub const SUITES: &str =
    "syscalls, sched, net, caps, io, scrape [CONTAINERS], agent, trace, http [CONNECTIONS], conntrack";

/// One suite, or all of them (no argument); each prints its own report, and the run ends with
/// one table of every headline number.
pub fn run(args: &[String]) -> Result<(), String> {
    if !is_root() {
        return Err("the benchmarks attach eBPF programs and create cgroups: run them as root".into());
    }
    // The suites turn the kernel's account on only around the runs they price by it.
    let _accounting = crate::program_stats::Accounting::off()?;
    let rows = match args.first().map(String::as_str) {
        Some("syscalls") => syscalls()?,
        Some("scrape") => {
            let containers = args.get(1).map_or(Ok(200), |n| n.parse().map_err(|e| format!("`{n}`: {e}")))?;
            crate::scrape_bench::run(containers)?
        }
        Some("sched") => crate::sched_bench::run()?,
        Some("net") => crate::net_bench::run()?,
        Some("caps") => crate::caps_bench::run()?,
        Some("io") => crate::io_bench::run()?,
        Some("agent") => crate::agent_bench::run()?,
        Some("conntrack") => crate::conntrack_bench::run()?,
        Some("trace") => crate::trace_bench::run()?,
        Some("http") => {
            let connections =
                args.get(1).map_or(Ok(600), |n| n.parse().map_err(|e| format!("`{n}`: {e}")))?;
            crate::http_bench::run(connections)?
        }
        None => {
            let mut rows = syscalls()?;
            rows.extend(crate::sched_bench::run()?);
            rows.extend(crate::net_bench::run()?);
            rows.extend(crate::caps_bench::run()?);
            rows.extend(crate::io_bench::run()?);
            rows.extend(crate::scrape_bench::run(200)?);
            rows.extend(crate::scrape_bench::run(1000)?);
            rows.extend(crate::agent_bench::run()?);
            rows.extend(crate::trace_bench::run()?);
            rows.extend(crate::http_bench::run(600)?);
            rows.extend(crate::conntrack_bench::run()?);
            rows
        }
        Some(other) => return Err(format!("unknown benchmark `{other}`; available: {SUITES}")),
    };
    report::print(&rows);
    Ok(())
}

/// The release agent, unpinned: a benchmark's agents must neither continue the host agent's
/// counters nor wait for its pin directory. `KERNSIGHT_BENCH_AGENT` names another build to run
/// instead (the image's static musl build, say).
pub(crate) fn agent_command() -> Command {
    let agent = std::env::var_os("KERNSIGHT_BENCH_AGENT")
        .map_or_else(|| workspace_root().join("target/release/kernsight"), PathBuf::from);
    let mut command = Command::new(agent);
    command.args(["run", "--listen", "127.0.0.1:0", "--log-level", "info", "--pin-dir", ""]);
    command
}

/// How long every tracer of the per-event suites is left attached before the timed loop: in
/// the first 1.5 s after a tracer started, the pinned `getppid` loop ran up to 8 % slower in
/// some starts (its own CPU time, with nothing else running on either CPU), and 2 s after the
/// start it did not (docs/performance.md, "A slow loop just after a start"). Every tracer
/// waits alike.
pub(crate) const SETTLE: Duration = Duration::from_secs(2);

/// Starts an agent, waits until it serves metrics and then `SETTLE`.
pub(crate) fn start_settled_agent(command: Command) -> Result<Child, String> {
    Ok(start_and_wait(command, Stream::Stderr, "serving metrics", SETTLE)?.0)
}

/// bpftrace running `script`: it prints "Attaching N probes..." and then attaches, which
/// `SETTLE` covers.
pub(crate) fn start_bpftrace(script: &str) -> Result<Child, String> {
    let mut command = Command::new("bpftrace");
    command.args(["-e", script]);
    Ok(start_and_wait(command, Stream::Stdout, "Attaching", SETTLE)?.0)
}

/// `kernsight-floor` holding empty programs on `hooks` (see its documentation), once attached
/// and `SETTLE` after.
pub(crate) fn start_floor(hooks: &[&str]) -> Result<Child, String> {
    let mut command = Command::new(workspace_root().join("target/release/kernsight-floor"));
    command.args(hooks);
    Ok(start_and_wait(command, Stream::Stdout, "attached", SETTLE)?.0)
}

fn syscalls() -> Result<Vec<Row>, String> {
    println!("getppid loop: {CALLS} calls per run, {ROUNDS} rounds, interleaved\n");
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); CONFIGS.len()];
    for round in 1..=ROUNDS {
        for (config, samples) in CONFIGS.iter().zip(&mut samples) {
            let ns = measure(&config.tracer)?;
            eprintln!("round {round}/{ROUNDS}: {:<50} {ns:7.1} ns/syscall", config.name);
            samples.push(ns);
        }
    }
    report(&samples);
    // Per round, each configuration next to the bare loop of the same round.
    let overhead =
        |config: usize| samples[config].iter().zip(&samples[0]).map(|(c, bare)| c - bare).collect();
    let mut rows = vec![Row::new("syscall: bare getppid", "ns", samples[0].clone())];
    for (index, config) in CONFIGS.iter().enumerate().skip(1) {
        rows.push(Row::new(format!("syscall overhead: {}", config.name), "ns/call", overhead(index)));
    }
    let ratio = |of: usize, to: usize| -> Vec<f64> {
        let (of, to): (Vec<f64>, Vec<f64>) = (overhead(of), overhead(to));
        report::ratios(&of, &to)
    };
    rows.push(Row::new(
        "syscall: always-on accounting / floor (target <= 1.25)",
        "x",
        ratio(config(ACCOUNTING), config(FLOOR)),
    ));
    rows.push(Row::new(
        "syscall: latency histogram / always-on accounting (target <= 2)",
        "x",
        ratio(config(HISTOGRAM), config(ACCOUNTING)),
    ));
    rows.push(Row::new(
        "syscall: latency histogram / floor of its two hooks",
        "x",
        ratio(config(HISTOGRAM), config(FLOOR_BOTH)),
    ));
    rows.extend(program_costs()?);
    Ok(rows)
}

/// The loop once more per priced configuration with the kernel's accounting of BPF programs on:
/// ns per call of the programs on the syscall hooks (each runs once a call), the floor's empty
/// programs beside them (their figure is the accounting's own clock reads and the run itself).
fn program_costs() -> Result<Vec<Row>, String> {
    let _accounting = crate::program_stats::Accounting::on()?;
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); PRICED.len()];
    for _ in 0..PRICED_ROUNDS {
        for ((name, programs), samples) in PRICED.iter().zip(&mut samples) {
            let mut attached = attach(&CONFIGS[config(name)].tracer)?;
            let timed = time_loop();
            let costs = crate::program_stats::per_run();
            if let Some(child) = attached.as_mut() {
                stop(child);
            }
            timed?;
            let costs = costs?;
            let ns = crate::program_stats::total(&costs, programs)
                .ok_or_else(|| format!("{name}: not every one of {programs:?} ran: {costs:?}"))?;
            samples.push(ns);
        }
    }
    println!(
        "\nper call, the kernel's own account of the programs on the syscall hooks (kernel.bpf_stats_enabled):"
    );
    let mut rows = Vec::new();
    for ((name, programs), samples) in PRICED.iter().zip(&samples) {
        println!("  {name:<56} {:7.1} ns  ({})", median(samples), programs.join(" + "));
        rows.push(Row::new(format!("syscall, kernel's account per call: {name}"), "ns", samples.clone()));
    }
    let at = |name: &str| {
        let index = PRICED.iter().position(|(n, _)| *n == name);
        &samples[index.unwrap_or_else(|| unreachable!("{name} is not priced"))]
    };
    let ratio = report::ratios;
    rows.push(Row::new(
        "syscall, kernel's account: always-on accounting / empty program",
        "x",
        ratio(at(ACCOUNTING), at(FLOOR)),
    ));
    rows.push(Row::new(
        "syscall, kernel's account: latency histogram / always-on accounting",
        "x",
        ratio(at(HISTOGRAM), at(ACCOUNTING)),
    ));
    rows.push(Row::new(
        "syscall, kernel's account: latency histogram / empty programs on its two hooks",
        "x",
        ratio(at(HISTOGRAM), at(FLOOR_BOTH)),
    ));
    Ok(rows)
}

fn report(samples: &[Vec<f64>]) {
    let medians: Vec<f64> = samples.iter().map(|s| median(s)).collect();
    let bare = medians[0];
    println!("\n{:<50} {:>9} {:>9} {:>9} {:>10}", "configuration", "median", "min", "max", "overhead");
    for ((config, samples), median) in CONFIGS.iter().zip(samples).zip(&medians) {
        let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = samples.iter().copied().fold(0.0, f64::max);
        println!("{:<50} {median:7.1}ns {min:7.1}ns {max:7.1}ns {:+8.1}ns", config.name, median - bare);
    }
    let added = |name: &str| medians[config(name)] - bare;
    let floor = added(FLOOR);
    let empty = medians[config("bpftrace: empty probe on raw_syscalls:sys_enter")] - bare;
    let bpftrace_count = medians[config("bpftrace: count by (cgroup, syscall id)")] - bare;
    let kernsight = added(ACCOUNTING);
    println!(
        "\nkernsight always-on adds {kernsight:.1} ns/syscall: {:.2}x the floor's {floor:.1} ns (target <= 1.25x), \
         {:.2}x bpftrace's empty probe ({empty:.1} ns), {:.2}x bpftrace's count ({bpftrace_count:.1} ns)",
        kernsight / floor,
        kernsight / empty,
        kernsight / bpftrace_count
    );
    println!(
        "the latency histogram adds {:.1} ns/syscall: {:.2}x the always-on accounting (target <= 2x)",
        added(HISTOGRAM),
        added(HISTOGRAM) / kernsight
    );
    if let Some(index) = CONFIGS.iter().position(|c| c.name.ends_with("escape attempts off")) {
        println!(
            "the escape family's test on a non-candidate syscall: {:+.1} ns (always-on with it, minus without)",
            medians[config(ACCOUNTING)] - medians[index]
        );
    }
}

/// Attaches the tracer, times the loop, detaches; returns ns per syscall.
fn measure(tracer: &Tracer) -> Result<f64, String> {
    let mut attached = attach(tracer)?;
    let ns = time_loop();
    if let Some(child) = attached.as_mut() {
        stop(child);
    }
    ns
}

/// Starts `tracer` and waits until it is attached; `None` for the bare run.
fn attach(tracer: &Tracer) -> Result<Option<Child>, String> {
    Ok(match tracer {
        Tracer::None => None,
        Tracer::Bpftrace(script) => Some(start_bpftrace(script)?),
        Tracer::Floor(hooks) => Some(start_floor(hooks)?),
        Tracer::Kernsight(args) => {
            let mut command = agent_command();
            command.args(*args);
            Some(start_settled_agent(command)?)
        }
        Tracer::KernsightConfig(toml) => {
            let path = workspace_root().join("target/bench-agent.toml");
            std::fs::write(&path, toml).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            let mut command = agent_command();
            command.arg("--config").arg(&path);
            Some(start_settled_agent(command)?)
        }
    })
}

fn time_loop() -> Result<f64, String> {
    run_pinned("__syscall-loop", CALLS)
}

/// Runs one of xtask's own timed loops (`task count`) pinned to CPU 1 when `taskset` is there;
/// returns the number it prints (ns per iteration).
pub(crate) fn run_pinned(task: &str, count: u64) -> Result<f64, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find xtask's own binary: {e}"))?;
    let mut command = if output(Command::new("taskset").arg("-V")).is_some() {
        let mut c = Command::new("taskset");
        c.args(["-c", "1"]).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    let out = output(command.args([task, &count.to_string()])).ok_or_else(|| format!("`{task}` failed"))?;
    out.trim().parse().map_err(|e| format!("`{task}` printed `{}`: {e}", out.trim()))
}

/// `__syscall-loop N`: N getppid calls after a warm-up; prints ns per call.
pub fn syscall_loop(args: &[String]) -> Result<(), String> {
    let calls: u64 = args.first().and_then(|n| n.parse().ok()).ok_or("usage: __syscall-loop CALLS")?;
    for _ in 0..WARMUP_CALLS {
        std::hint::black_box(std::os::unix::process::parent_id());
    }
    let started = Instant::now();
    for _ in 0..calls {
        std::hint::black_box(std::os::unix::process::parent_id());
    }
    println!("{:.2}", started.elapsed().as_nanos() as f64 / calls as f64);
    Ok(())
}

pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// Starts a tracer and waits (30 s at most) for a line that says it is attached.
/// Returns the child and the line that said it was ready.
pub(crate) fn start_and_wait(
    mut command: Command,
    stream: Stream,
    ready: &'static str,
    settle: Duration,
) -> Result<(Child, String), String> {
    let (stdout, stderr) = match stream {
        Stream::Stdout => (Stdio::piped(), Stdio::inherit()),
        Stream::Stderr => (Stdio::null(), Stdio::piped()),
    };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    let reader: Box<dyn std::io::Read + Send> = match stream {
        Stream::Stdout => Box::new(child.stdout.take().ok_or("no stdout")?),
        Stream::Stderr => Box::new(child.stderr.take().ok_or("no stderr")?),
    };
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        // Keep draining after the ready line so that the tracer never blocks on a full pipe.
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if line.contains(ready) {
                let _ = tx.send(line);
            }
        }
    });
    let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
        stop(&mut child);
        return Err(format!("{command:?} did not report `{ready}` within 30 s"));
    };
    thread::sleep(settle);
    Ok((child, line))
}

pub(crate) fn stop(child: &mut Child) {
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
