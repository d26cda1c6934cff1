//! `cargo xtask bench io`: what the `block_io` programs cost per block I/O.
//!
//! A loop pinned to one CPU reads 4 KiB with `O_DIRECT` from a loop device the benchmark
//! creates over a file of its own (detached at the end): each read is one request issued and
//! completed, so each runs the issue and completion programs once. It runs bare, with bpftrace's
//! empty probes on the two tracepoints (the floor of any program there), and with the agent
//! without and with the family; rounds are interleaved so that drift on the machine spreads
//! over every configuration alike. A loop device's read is some microseconds (a page-cache copy
//! in the loop worker), so the per-I/O cost is a small difference of large numbers: the
//! minimums are printed beside the medians.

use std::{
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    bench::{Stream, agent_command, median, start_and_wait, stop},
    process::output,
    report::Row,
};

const READS: u64 = 50_000;
const WARMUP_READS: u64 = 2_000;
const ROUNDS: usize = 5;
const BLOCK: usize = 4096;
/// The backing file, and the span the reads cycle over (in the backing file's page cache).
const DEVICE_BYTES: u64 = 16 << 20;

#[cfg(target_arch = "x86_64")]
const O_DIRECT: i32 = 0o40000;
#[cfg(target_arch = "aarch64")]
const O_DIRECT: i32 = 0o200000;

enum Tracer {
    None,
    Kernsight(&'static str),
    Bpftrace(&'static str),
}

const CONFIGS: &[(&str, Tracer)] = &[
    ("bare (nothing attached)", Tracer::None),
    (
        "bpftrace: empty probes on block_rq_issue/complete",
        Tracer::Bpftrace("tracepoint:block:block_rq_issue {} tracepoint:block:block_rq_complete {}"),
    ),
    ("kernsight: default without block_io", Tracer::Kernsight("[block_io]\nenabled = false\n")),
    ("kernsight: default (block_io on)", Tracer::Kernsight("")),
];

/// A loop device over a file of the benchmark's own, detached when dropped.
struct LoopDevice {
    device: PathBuf,
    backing: PathBuf,
}

impl LoopDevice {
    fn create(dir: &Path) -> Result<Self, String> {
        let backing = dir.join("disk.img");
        let file = std::fs::File::create(&backing).map_err(|e| format!("{}: {e}", backing.display()))?;
        // Written, not sparse: reads then come from the backing file's page cache.
        let zeros = vec![0u8; 1 << 20];
        for offset in (0..DEVICE_BYTES).step_by(zeros.len()) {
            file.write_all_at(&zeros, offset).map_err(|e| format!("{}: {e}", backing.display()))?;
        }
        let shown = output(Command::new("losetup").args(["-f", "--show"]).arg(&backing))
            .ok_or("losetup -f --show failed: the benchmark needs a loop device (modprobe loop)")?;
        Ok(Self { device: PathBuf::from(shown.trim()), backing })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
        let _ = std::fs::remove_file(&self.backing);
    }
}

pub fn run() -> Result<Vec<Row>, String> {
    let dir = std::env::temp_dir().join(format!("kernsight-bench-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let result = (|| {
        let device = LoopDevice::create(&dir)?;
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
        println!(
            "O_DIRECT 4 KiB reads of {} on one CPU: {READS} reads per run, {ROUNDS} rounds, interleaved\n",
            device.device.display()
        );
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); CONFIGS.len()];
        for round in 1..=ROUNDS {
            for (((name, tracer), file), samples) in CONFIGS.iter().zip(&files).zip(&mut samples) {
                let ns = measure(tracer, file.as_ref(), &device.device)?;
                eprintln!("round {round}/{ROUNDS}: {name:<50} {ns:9.1} ns/read");
                samples.push(ns);
            }
        }
        Ok::<_, String>(samples)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let samples = result?;
    report(&samples);
    let added = samples[3].iter().zip(&samples[2]).map(|(with, without)| with - without).collect();
    let floor = samples[1].iter().zip(&samples[0]).map(|(traced, bare)| traced - bare).collect();
    Ok(vec![
        Row::new("block_io: kernsight added per block I/O", "ns", added),
        Row::new("block_io: bpftrace empty probes per block I/O (floor)", "ns", floor),
    ])
}

fn report(samples: &[Vec<f64>]) {
    let bare = median(&samples[0]);
    let min = |i: usize| samples[i].iter().copied().fold(f64::INFINITY, f64::min);
    println!("\n{:<50} {:>11} {:>11} {:>11} {:>10}", "configuration", "median", "min", "max", "overhead");
    for ((name, _), samples) in CONFIGS.iter().zip(samples) {
        let median = median(samples);
        let low = samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = samples.iter().copied().fold(0.0, f64::max);
        println!("{name:<50} {median:9.1}ns {low:9.1}ns {max:9.1}ns {:+9.1}ns", median - bare);
    }
    println!(
        "\nThe block_io programs add {:.1} ns per I/O next to the rest of the agent (minimums: {:.1} ns); \
         bpftrace's empty probes on the same two tracepoints: {:.1} ns (minimums: {:.1} ns); bare read: \
         {bare:.1} ns",
        median(&samples[3]) - median(&samples[2]),
        min(3) - min(2),
        median(&samples[1]) - bare,
        min(1) - min(0),
    );
}

/// Attaches the tracer, times the read loop pinned to CPU 1, detaches.
fn measure(tracer: &Tracer, config: Option<&PathBuf>, device: &Path) -> Result<f64, String> {
    let mut attached = match (tracer, config) {
        (Tracer::Kernsight(_), Some(file)) => {
            let mut command = agent_command();
            command.arg("--config").arg(file);
            Some(start_and_wait(command, Stream::Stderr, "serving metrics", Duration::ZERO)?.0)
        }
        (Tracer::Bpftrace(script), _) => {
            let mut command = Command::new("bpftrace");
            command.args(["-e", script]);
            Some(start_and_wait(command, Stream::Stdout, "Attaching", Duration::from_secs(2))?.0)
        }
        _ => None,
    };
    let exe = std::env::current_exe().map_err(|e| format!("cannot find xtask's own binary: {e}"));
    let ns = exe.and_then(|exe| {
        let mut command = if output(Command::new("taskset").arg("-V")).is_some() {
            let mut c = Command::new("taskset");
            c.args(["-c", "1"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        command.args(["__direct-read-loop", &READS.to_string()]).arg(device);
        let out = output(&mut command).ok_or("`__direct-read-loop` failed")?;
        out.trim().parse::<f64>().map_err(|e| format!("`__direct-read-loop` printed `{}`: {e}", out.trim()))
    });
    if let Some(child) = attached.as_mut() {
        stop(child);
    }
    ns
}

/// `__direct-read-loop N DEVICE`: N reads of 4 KiB with `O_DIRECT` from DEVICE, cycling over
/// its first `DEVICE_BYTES`, after a warm-up; prints ns per read.
pub fn direct_read_loop(args: &[String]) -> Result<(), String> {
    let (Some(reads), Some(device)) = (args.first().and_then(|n| n.parse::<u64>().ok()), args.get(1)) else {
        return Err("usage: __direct-read-loop READS DEVICE".into());
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_DIRECT)
        .open(device)
        .map_err(|e| format!("{device}: {e}"))?;
    // O_DIRECT needs a buffer aligned to the logical block size: a page is.
    let layout = std::alloc::Layout::from_size_align(BLOCK, BLOCK).map_err(|e| e.to_string())?;
    // SAFETY: a non-zero size; freed below.
    let raw = unsafe { std::alloc::alloc_zeroed(layout) };
    if raw.is_null() {
        return Err("cannot allocate the read buffer".into());
    }
    // SAFETY: `raw` holds BLOCK initialised (zeroed) bytes, owned here until freed.
    let buffer = unsafe { std::slice::from_raw_parts_mut(raw, BLOCK) };
    let blocks = DEVICE_BYTES / BLOCK as u64;
    let mut read =
        |i: u64| file.read_exact_at(buffer, (i % blocks) * BLOCK as u64).map_err(|e| format!("read: {e}"));
    let timed = (|| {
        for i in 0..WARMUP_READS {
            read(i)?;
        }
        let started = Instant::now();
        for i in 0..reads {
            read(i)?;
        }
        Ok::<_, String>(started.elapsed().as_nanos() as f64 / reads as f64)
    })();
    // SAFETY: allocated above with this layout, no longer borrowed.
    unsafe { std::alloc::dealloc(raw, layout) };
    println!("{:.2}", timed?);
    Ok(())
}
