//! `cargo xtask bench io`: what the `block_io` programs cost per block I/O.
//!
//! A loop pinned to one CPU reads 4 KiB with `O_DIRECT` from a loop device the benchmark
//! creates over a file of its own (detached at the end): each read is one request issued and
//! completed, so each runs the issue and the completion program once. A loop device's read
//! takes tens of microseconds here and varies by as much between runs, so the wall clock cannot
//! show a cost of a few hundred nanoseconds; the kernel's own BPF statistics can: the agent runs
//! with `bpf.program_stats` (run time and runs of each program, while the agent holds the
//! statistics on), and bpftrace's empty probes on the same two tracepoints run beside it, whose
//! run time `bpftool prog show` reports: the floor of any program there. Per round: the run
//! time per run of the issue program plus that of the completion program, for both.

use std::{
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use crate::{
    bench::{agent_command, median, stop},
    process::output,
    report::Row,
    scrape_bench::{get, start_agent},
};

const READS: u64 = 20_000;
const WARMUP_READS: u64 = 2_000;
const ROUNDS: usize = 5;
const BLOCK: usize = 4096;
/// The backing file, and the span the reads cycle over (in the backing file's page cache).
const DEVICE_BYTES: u64 = 16 << 20;

#[cfg(target_arch = "x86_64")]
const O_DIRECT: i32 = 0o40000;
#[cfg(target_arch = "aarch64")]
const O_DIRECT: i32 = 0o200000;

/// The agent's programs, and the names bpftool shows for bpftrace's (15 characters).
const KERNSIGHT_PROGRAMS: [&str; 2] = ["ks_block_rq_issue", "ks_block_rq_complete"];
const BPFTRACE_PROGRAMS: [&str; 2] = ["block_rq_issue", "block_rq_comple"];
const EMPTY_PROBES: &str = "tracepoint:block:block_rq_issue {} tracepoint:block:block_rq_complete {}";

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
        let config = dir.join("config.toml");
        std::fs::write(&config, "[bpf]\nprogram_stats = true\n")
            .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
        println!(
            "O_DIRECT 4 KiB reads of {} on one CPU: {READS} reads per round, {ROUNDS} rounds\n",
            device.device.display()
        );
        let mut rounds = Vec::new();
        for round in 1..=ROUNDS {
            let measured = measure(&config, &device.device)?;
            eprintln!(
                "round {round}/{ROUNDS}: {:8.0} ns/read (wall clock); block_io programs {:6.1} ns/I/O \
                 ({} issue runs); bpftrace empty probes {:6.1} ns/I/O ({} issue runs)",
                measured.wall_ns,
                measured.kernsight_ns,
                measured.kernsight_runs,
                measured.floor_ns,
                measured.floor_runs
            );
            rounds.push(measured);
        }
        Ok::<_, String>(rounds)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let rounds = result?;
    let kernsight: Vec<f64> = rounds.iter().map(|r| r.kernsight_ns).collect();
    let floor: Vec<f64> = rounds.iter().map(|r| r.floor_ns).collect();
    let wall: Vec<f64> = rounds.iter().map(|r| r.wall_ns).collect();
    println!(
        "\nThe block_io programs run {:.1} ns per block I/O (issue + completion, median of {ROUNDS}); \
         bpftrace's empty probes on the same tracepoints {:.1} ns; a read took {:.0} ns (wall clock)",
        median(&kernsight),
        median(&floor),
        median(&wall)
    );
    Ok(vec![
        Row::new("block_io: program run time per block I/O (issue + completion)", "ns", kernsight),
        Row::new("block_io: bpftrace empty probes' run time per block I/O (floor)", "ns", floor),
    ])
}

/// One round's numbers.
struct Measured {
    wall_ns: f64,
    kernsight_ns: f64,
    kernsight_runs: u64,
    floor_ns: f64,
    floor_runs: u64,
}

/// Starts the agent (statistics on) and bpftrace's empty probes, times the read loop pinned to
/// CPU 1, reads both programs' statistics, stops both.
fn measure(config: &Path, device: &Path) -> Result<Measured, String> {
    let mut command = agent_command();
    command.arg("--config").arg(config);
    let (mut agent, address) = start_agent(command)?;
    let result = crate::bench::start_bpftrace(EMPTY_PROBES).and_then(|mut bpftrace| {
        let measured = (|| {
            let wall_ns = read_loop(device)?;
            let metrics = get(&address, "/metrics")?;
            let (kernsight_ns, kernsight_runs) =
                per_io(KERNSIGHT_PROGRAMS.map(|p| agent_stats(&metrics, p)))?;
            let shown =
                output(Command::new("bpftool").args(["prog", "show"])).ok_or("bpftool prog show failed")?;
            let (floor_ns, floor_runs) = per_io(BPFTRACE_PROGRAMS.map(|p| bpftool_stats(&shown, p)))?;
            Ok(Measured { wall_ns, kernsight_ns, kernsight_runs, floor_ns, floor_runs })
        })();
        stop(&mut bpftrace);
        measured
    });
    stop(&mut agent);
    result
}

/// The sum of the programs' run time per run, and the first one's runs, from (ns, runs) each.
fn per_io(stats: [Option<(f64, u64)>; 2]) -> Result<(f64, u64), String> {
    let mut total = 0.0;
    for (ns, runs) in
        stats.iter().map(|s| s.ok_or("a program's statistics are missing")).collect::<Result<Vec<_>, _>>()?
    {
        if runs < READS {
            return Err(format!("{runs} runs for {READS} reads: the program did not see the I/O"));
        }
        total += ns / runs as f64;
    }
    Ok((total, stats[0].map_or(0, |(_, runs)| runs)))
}

/// (run time in ns, runs) of `program` in the agent's metrics.
fn agent_stats(metrics: &str, program: &str) -> Option<(f64, u64)> {
    let sample = |name: &str| {
        let prefix = format!("{name}{{program=\"{program}\"}} ");
        metrics.lines().find_map(|line| line.strip_prefix(&prefix)).and_then(|v| v.trim().parse::<f64>().ok())
    };
    let seconds = sample("kernsight_bpf_program_run_seconds_total")?;
    let runs = sample("kernsight_bpf_program_runs_total")?;
    Some((seconds * 1e9, runs as u64))
}

/// (run_time_ns, run_cnt) of the classic tracepoint program `name` in `bpftool prog show`'s
/// text (`123: tracepoint  name block_rq_issue  tag ...  gpl run_time_ns 1 run_cnt 2`).
fn bpftool_stats(shown: &str, name: &str) -> Option<(f64, u64)> {
    shown.lines().find_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        let named = words.windows(2).any(|w| w == ["name", name]) && words.contains(&"tracepoint");
        let value = |key: &str| words.windows(2).find(|w| w[0] == key).and_then(|w| w[1].parse::<u64>().ok());
        named.then(|| Some((value("run_time_ns")? as f64, value("run_cnt")?))).flatten()
    })
}

/// Runs `__direct-read-loop` pinned to CPU 1; ns per read.
fn read_loop(device: &Path) -> Result<f64, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find xtask's own binary: {e}"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_are_read_from_both_sources() {
        let metrics = "kernsight_bpf_program_run_seconds_total{program=\"ks_block_rq_issue\"} 0.000012\n\
                       kernsight_bpf_program_runs_total{program=\"ks_block_rq_issue\"} 40\n";
        assert_eq!(agent_stats(metrics, "ks_block_rq_issue"), Some((12000.0, 40)));
        assert_eq!(agent_stats(metrics, "ks_block_rq_complete"), None);
        let shown = "2343: tracepoint  name block_rq_issue  tag b11459a0e11ca14c  gpl run_time_ns 900 run_cnt 30\n\
                     \tloaded_at 2026-12-01T11:17:46+0000  uid 0\n\
                     2350: tracing  name ks_block_rq_iss  tag 00  gpl run_time_ns 5 run_cnt 1\n";
        assert_eq!(bpftool_stats(shown, "block_rq_issue"), Some((900.0, 30)));
        assert_eq!(bpftool_stats(shown, "ks_block_rq_iss"), None, "not a classic tracepoint");
    }
}
