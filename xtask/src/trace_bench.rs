//! `cargo xtask bench trace`: what ad-hoc tracing costs, next to bpftrace doing the same.
//!
//! 1. An open storm: a pinned process makes `openat` calls of a missing file as fast as it can
//!    (or held to a rate: 1M a second is the target's) while a tracer prints one JSON line per
//!    call into a pipe that the benchmark reads and counts: how many events per second reach
//!    the reader, how many are lost, and the tracer's CPU time per million events. The floor
//!    is the same loop with empty programs on the two hooks `trace open` uses (`sys_enter` and
//!    `sys_exit`): what the workload pays for any program there, before one event is written.
//! 2. The per-syscall cost of counting every syscall by syscall number in the kernel:
//!    `kernsight trace syscall --count-by syscall` against bpftrace's
//!    `@[args->id] = count()` and `@[probe] = count()` on `raw_syscalls:sys_exit`, timed on the
//!    `getppid` loop of `bench syscalls`, with an empty program on `sys_exit` as the floor.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use crate::{
    bench::{median, run_pinned, start_bpftrace, start_floor, stop},
    process::{output, workspace_root},
    report::{Row, ratios},
};

const OPENS: u64 = 300_000;
const ROUNDS: usize = 3;
const SYSCALL_CALLS: u64 = 3_000_000;
const MISSING: &str = "/nonexistent-kernsight-bench/file";

/// Both measurements; returns their headline rows for the table `cargo xtask bench` ends with.
pub fn run() -> Result<Vec<Row>, String> {
    let mut rows = open_storm()?;
    rows.extend(count_cost()?);
    Ok(rows)
}

enum Storm {
    Bare,
    /// Empty programs on `sys_enter` and `sys_exit`, the hooks of `trace open`.
    Floor,
    /// Opens per second the loop is held to (0: as fast as it can).
    Kernsight(u64),
    Bpftrace,
}

struct StormResult {
    ns_per_open: f64,
    delivered: u64,
    lost: u64,
    cpu_seconds: f64,
}

fn open_storm() -> Result<Vec<Row>, String> {
    println!("open storm: {OPENS} failing openat calls per run, one printed event each, {ROUNDS} rounds\n");
    let configs = [
        ("bare (nothing attached)", Storm::Bare),
        ("floor: empty programs on sys_enter and sys_exit", Storm::Floor),
        ("kernsight trace open --pid P -o json", Storm::Kernsight(0)),
        ("kernsight, loop held to 1,000,000 opens/s", Storm::Kernsight(1_000_000)),
        ("kernsight, loop held to 300,000 opens/s", Storm::Kernsight(300_000)),
        ("kernsight, loop held to 100,000 opens/s", Storm::Kernsight(100_000)),
        ("bpftrace printf per openat (sys_enter/sys_exit_openat)", Storm::Bpftrace),
    ];
    let mut results: Vec<Vec<StormResult>> = configs.iter().map(|_| Vec::new()).collect();
    for round in 1..=ROUNDS {
        for ((name, storm), results) in configs.iter().zip(&mut results) {
            let r = storm_once(storm)?;
            eprintln!(
                "round {round}/{ROUNDS}: {name:<56} {:7.0} ns/open, delivered {}, lost {}, cpu {:.2} s",
                r.ns_per_open, r.delivered, r.lost, r.cpu_seconds
            );
            results.push(r);
        }
    }
    println!(
        "\n{:<56} {:>10} {:>12} {:>10} {:>8} {:>16}",
        "configuration", "ns/open", "events/s", "delivered", "lost", "cpu s/1M events"
    );
    for ((name, storm), results) in configs.iter().zip(&results) {
        let ns = median(&results.iter().map(|r| r.ns_per_open).collect::<Vec<_>>());
        let delivered = median(&results.iter().map(|r| r.delivered as f64).collect::<Vec<_>>());
        let lost = results.iter().map(|r| r.lost).max().unwrap_or(0);
        let cpu = median(
            &results.iter().map(|r| r.cpu_seconds / r.delivered.max(1) as f64 * 1e6).collect::<Vec<_>>(),
        );
        let rate = 1e9 / ns;
        match storm {
            Storm::Bare | Storm::Floor => {
                println!("{name:<56} {ns:10.0} {rate:12.0} {:>10} {:>8} {:>16}", "-", "-", "-")
            }
            _ => println!("{name:<56} {ns:10.0} {rate:12.0} {delivered:10.0} {lost:8} {cpu:16.2}"),
        }
    }
    println!("(events/s: the rate the traced process ran at; lost: the worst round)\n");
    // Headline rows, per round: the loop bare and on the floor, kernsight as fast as the loop
    // goes and held to the target's 1M opens/s, and bpftrace; what each costs an open over that
    // round's bare loop.
    let ns = |index: usize| results[index].iter().map(|r| r.ns_per_open).collect::<Vec<_>>();
    let added = |index: usize| ns(index).iter().zip(&ns(0)).map(|(ns, bare)| ns - bare).collect::<Vec<_>>();
    let (floor, kernsight, held_to_target, bpftrace) = (1, 2, 3, configs.len() - 1);
    let mut rows = vec![
        Row::new(
            "trace: open storm, bare loop: opens/s",
            "opens/s",
            ns(0).iter().map(|ns| 1e9 / ns).collect(),
        ),
        Row::new("trace: open storm, floor (empty sys_enter + sys_exit): added per open", "ns", added(floor)),
        Row::new(
            "trace: open storm, kernsight trace open held to 1M opens/s: events/s",
            "events/s",
            ns(held_to_target).iter().map(|ns| 1e9 / ns).collect(),
        ),
        Row::new(
            "trace: open storm, kernsight trace open held to 1M opens/s: lost",
            "events",
            results[held_to_target].iter().map(|r| r.lost as f64).collect(),
        ),
    ];
    for (index, tool) in [(kernsight, "kernsight trace open"), (bpftrace, "bpftrace printf")] {
        let runs = &results[index];
        rows.push(Row::new(
            format!("trace: open storm, {tool}: events/s"),
            "events/s",
            runs.iter().map(|r| 1e9 / r.ns_per_open).collect(),
        ));
        rows.push(Row::new(
            format!("trace: open storm, {tool}: lost"),
            "events",
            runs.iter().map(|r| r.lost as f64).collect(),
        ));
        rows.push(Row::new(
            format!("trace: open storm, {tool}: tracer CPU per 1M events"),
            "s",
            runs.iter().map(|r| r.cpu_seconds / r.delivered.max(1) as f64 * 1e6).collect(),
        ));
        rows.push(Row::new(format!("trace: open storm, {tool}: added per open"), "ns", added(index)));
        rows.push(Row::new(
            format!("trace: open storm, {tool}: workload slowdown (target <= 3)"),
            "x",
            ratios(&ns(index), &ns(0)),
        ));
        rows.push(Row::new(
            format!("trace: open storm, {tool}: added per open / floor's"),
            "x",
            ratios(&added(index), &added(floor)),
        ));
    }
    Ok(rows)
}

fn storm_once(storm: &Storm) -> Result<StormResult, String> {
    let rate = match storm {
        Storm::Kernsight(rate) => *rate,
        _ => 0,
    };
    let exe = std::env::current_exe().map_err(|e| format!("cannot find xtask's own binary: {e}"))?;
    let mut command = if output(Command::new("taskset").arg("-V")).is_some() {
        let mut c = Command::new("taskset");
        c.args(["-c", "1"]).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    let mut storm_process = command
        .args(["__open-loop", &OPENS.to_string(), &rate.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the open loop: {e}"))?;
    let pid = storm_process.id().to_string();
    let mut floor = match storm {
        Storm::Floor => Some(start_floor(&["sys_enter", "sys_exit"])?),
        _ => None,
    };
    let mut tracer = match storm {
        Storm::Bare | Storm::Floor => None,
        Storm::Kernsight(_) => {
            let mut command = Command::new(workspace_root().join("target/release/kernsight"));
            command.args(["trace", "open", "--pid", &pid, "-o", "json", "--buffer-mib", "16"]);
            Some(Tracer::start(command, "tracing ")?)
        }
        Storm::Bpftrace => {
            let script = format!(
                r#"BEGIN {{ printf("ready\n"); }}
                tracepoint:syscalls:sys_enter_openat /pid == {pid}/ {{ @path[tid] = args->filename; }}
                tracepoint:syscalls:sys_exit_openat /pid == {pid}/ {{
                    printf("{{\"pid\":%d,\"comm\":\"%s\",\"ret\":%d,\"path\":\"%s\"}}\n",
                           pid, comm, args->ret, str(@path[tid]));
                    delete(@path[tid]);
                }}"#
            );
            let mut command = Command::new("bpftrace");
            command.args(["-e", &script]);
            Some(Tracer::start(command, "ready")?)
        }
    };
    if tracer.is_some() {
        thread::sleep(crate::bench::SETTLE); // as every tracer of the benchmarks
    }
    let cpu = |tracer: &Tracer| crate::agent_bench::cpu_seconds(tracer.child.id()).unwrap_or(0.0);
    let cpu_before = tracer.as_ref().map_or(0.0, cpu);
    if let Some(mut stdin) = storm_process.stdin.take() {
        stdin.write_all(b"go\n").map_err(|e| format!("starting the open loop: {e}"))?;
    }
    let mut out = String::new();
    if let Some(mut stdout) = storm_process.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    let _ = storm_process.wait();
    if let Some(child) = floor.as_mut() {
        stop(child);
    }
    let ns_per_open: f64 =
        out.trim().parse().map_err(|e| format!("the open loop printed `{}`: {e}", out.trim()))?;
    let Some(tracer) = tracer.as_mut() else {
        return Ok(StormResult { ns_per_open, delivered: 0, lost: 0, cpu_seconds: 0.0 });
    };
    // Let the tracer drain what is queued (until its output stops growing), then stop it.
    let mut last = u64::MAX;
    while tracer.lines() != last {
        last = tracer.lines();
        thread::sleep(Duration::from_millis(300));
    }
    let cpu_seconds = cpu(tracer) - cpu_before;
    stop(&mut tracer.child);
    thread::sleep(Duration::from_millis(200)); // the readers see the last lines
    let delivered = tracer.lines();
    Ok(StormResult { ns_per_open, delivered, lost: tracer.lost(), cpu_seconds })
}

/// A tracer whose JSON lines on stdout are counted and whose other lines are kept (for its
/// loss reports).
struct Tracer {
    child: Child,
    lines: Arc<AtomicU64>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Tracer {
    /// Starts `command`; ready once a line of stdout or stderr starts with `ready`.
    fn start(mut command: Command, ready: &'static str) -> Result<Self, String> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {command:?}: {e}"))?;
        let (stdout, stderr) =
            (child.stdout.take().ok_or("no stdout")?, child.stderr.take().ok_or("no stderr")?);
        let lines = Arc::new(AtomicU64::new(0));
        let kept: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let (count, tx_out, keep_out) = (lines.clone(), tx.clone(), kept.clone());
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line.starts_with(ready) {
                    let _ = tx_out.send(());
                }
                // Events are JSON objects; banners and map dumps are not counted.
                if line.starts_with('{') {
                    count.fetch_add(1, Ordering::Relaxed);
                } else {
                    // bpftrace reports losses on stdout ("Lost N events").
                    keep_out.lock().unwrap_or_else(|e| e.into_inner()).push(line.trim_end().to_owned());
                }
                line.clear();
            }
        });
        let keep = kept.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.starts_with(ready) {
                    let _ = tx.send(());
                }
                keep.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            stop(&mut child);
            return Err(format!("{command:?} did not start within 60 s"));
        }
        Ok(Self { child, lines, stderr: kept })
    }

    fn lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }

    /// kernsight: `lost N events`; bpftrace: the sum of its `Lost N events` warnings.
    fn lost(&self) -> u64 {
        let stderr = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        stderr
            .iter()
            .filter_map(|line| {
                let at = line.find("ost ")?;
                line[at + 4..].split(' ').next()?.parse::<u64>().ok()
            })
            .sum()
    }
}

/// `__open-loop N [RATE]`: waits for a line on stdin, makes N openat calls of a missing file
/// (at most RATE per second when given and non-zero), prints ns per call.
pub fn open_loop(args: &[String]) -> Result<(), String> {
    let calls: u64 = args.first().and_then(|n| n.parse().ok()).ok_or("usage: __open-loop CALLS [RATE]")?;
    let rate: u64 = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(0);
    let mut go = String::new();
    let _ = std::io::stdin().read_line(&mut go);
    let started = Instant::now();
    for i in 0..calls {
        let _ = std::hint::black_box(std::fs::File::open(MISSING));
        // Paced in batches of 100: ahead of schedule, wait (spinning keeps the timing exact).
        if rate > 0 && i % 100 == 99 {
            let due = Duration::from_secs_f64((i + 1) as f64 / rate as f64);
            while started.elapsed() < due {
                std::hint::spin_loop();
            }
        }
    }
    println!("{:.2}", started.elapsed().as_nanos() as f64 / calls as f64);
    Ok(())
}

fn count_cost() -> Result<Vec<Row>, String> {
    enum Counter {
        None,
        /// An empty program on `sys_exit`, the hook `--count-by syscall` uses.
        Floor,
        Bpftrace(&'static str),
        Kernsight,
    }
    let configs = [
        ("bare (nothing attached)", Counter::None),
        ("floor: empty program on sys_exit", Counter::Floor),
        (
            "bpftrace: @[args->id] = count() on sys_exit",
            Counter::Bpftrace("tracepoint:raw_syscalls:sys_exit { @[args->id] = count(); }"),
        ),
        (
            "bpftrace: @[probe] = count() on sys_exit",
            Counter::Bpftrace("tracepoint:raw_syscalls:sys_exit { @[probe] = count(); }"),
        ),
        ("kernsight trace syscall --count-by syscall", Counter::Kernsight),
    ];
    println!(
        "getppid loop: {SYSCALL_CALLS} calls per run, every syscall counted machine-wide, {ROUNDS} rounds\n"
    );
    let mut samples: Vec<Vec<f64>> = configs.iter().map(|_| Vec::new()).collect();
    for round in 1..=ROUNDS {
        for ((name, counter), samples) in configs.iter().zip(&mut samples) {
            let mut attached = match counter {
                Counter::None => None,
                Counter::Floor => Some(start_floor(&["sys_exit"])?),
                Counter::Bpftrace(script) => Some(start_bpftrace(script)?),
                Counter::Kernsight => {
                    let mut command = Command::new(workspace_root().join("target/release/kernsight"));
                    command.args(["trace", "syscall", "--count-by", "syscall"]);
                    let tracer = Tracer::start(command, "tracing ")?;
                    thread::sleep(crate::bench::SETTLE);
                    Some(tracer.child)
                }
            };
            let ns = run_pinned("__syscall-loop", SYSCALL_CALLS);
            if let Some(child) = attached.as_mut() {
                stop(child);
            }
            let ns = ns?;
            eprintln!("round {round}/{ROUNDS}: {name:<50} {ns:7.1} ns/syscall");
            samples.push(ns);
        }
    }
    let medians: Vec<f64> = samples.iter().map(|s| median(s)).collect();
    println!("\n{:<50} {:>9} {:>10}", "configuration", "median", "overhead");
    for ((name, _), m) in configs.iter().zip(&medians) {
        println!("{name:<50} {m:7.1}ns {:+8.1}ns", m - medians[0]);
    }
    // Overheads per round, over that round's bare run.
    let bare = &samples[0];
    let overhead =
        |index: usize| samples[index].iter().zip(bare).map(|(ns, bare)| ns - bare).collect::<Vec<_>>();
    let (floor, bpftrace, kernsight) = (1, 2, configs.len() - 1);
    let mut rows: Vec<Row> = [
        (floor, "floor (empty program on sys_exit)"),
        (bpftrace, "bpftrace @[args->id] = count()"),
        (kernsight, "kernsight --count-by syscall"),
    ]
    .into_iter()
    .map(|(index, tool)| {
        Row::new(format!("trace: count every syscall, {tool}: overhead"), "ns/syscall", overhead(index))
    })
    .collect();
    rows.push(Row::new(
        "trace: count every syscall, kernsight --count-by syscall / floor",
        "x",
        ratios(&overhead(kernsight), &overhead(floor)),
    ));
    Ok(rows)
}
