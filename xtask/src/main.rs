//! kernsight's developer tasks (what cargo cannot do alone):
//!
//! - `cargo xtask setup`: install what the build and tests need, skipping what is present
//! - `cargo xtask build`: build the agent (kernel programs included), release profile
//! - `cargo xtask run [-- ARGS]`: set up, build, and run `kernsight run` on the embedded config
//! - `cargo xtask test`: set up, then format check, clippy (the kernel programs' too), every
//!   test on this machine's kernel (root-only ones too), then the quick kernel matrix
//!   (`test-kernels --quick`); `cargo xtask test -- ARGS` runs `cargo test ARGS` alone
//! - `cargo xtask bench syscalls`: per-syscall overhead next to bpftrace
//! - `cargo xtask bench sched`: per-context-switch overhead of the scheduler programs
//! - `cargo xtask bench net`: per-packet overhead of the network programs through a veth pair
//! - `cargo xtask bench caps`: per-capability-check overhead of the capability program
//! - `cargo xtask bench io`: per-block-I/O overhead of the block_io programs (a loop device)
//! - `cargo xtask bench scrape [N]`: scrape time and agent RSS with N containers
//! - `cargo xtask bench agent`: agent CPU and RSS, idle and under a syscall storm
//! - `cargo xtask bench trace`: events/s and CPU of `kernsight trace` and the cost of kernel
//!   counting, next to bpftrace
//! - `cargo xtask bench http [N]`: the metrics port under N slow and non-reading connections
//! - `cargo xtask bench`: every suite, then one table of their headline numbers
//! - `cargo xtask test-kernels [--kernel 6.12] [--quick] [--keep]`: the kernel matrix: Debian's
//!   5.10, 6.1 and 6.12 cloud kernels booted under QEMU on pure cgroup v2, each running the
//!   static agent and the integration tests that need no container runtime (`--quick`: a chosen
//!   few); a family × kernel table in target/kernel-matrix.md
//! - `cargo xtask test-kernels --arm64`: the agent cross-built for aarch64 on Debian's arm64 6.1
//!   kernel under qemu-system-aarch64 (families attaching, cgroup v2, exact syscall counts)
//! - `cargo xtask test-kernels --large-node [--kernel 6.1]`: the map budget on 192 possible CPUs
//!   (QEMU `-smp 1,maxcpus=192`), in memory cgroups of the sizes docs/deploy.md gives
//!
//! It depends on nothing but std so that it compiles on the machine's stock toolchain, before
//! `setup` has installed the pinned ones.

mod agent_bench;
mod bench;
mod cadvisor;
mod caps_bench;
mod conntrack_bench;
mod http_bench;
mod io_bench;
mod kernels;
mod net_bench;
mod process;
mod program_stats;
mod report;
mod sched_bench;
mod scrape_bench;
mod setup;
mod trace_bench;

use std::process::ExitCode;

use process::{Step, cargo, is_root, workspace_root};

const USAGE: &str = "usage: cargo xtask <setup | build | run [-- ARGS] | test [-- TEST-ARGS] | bench [SUITE] | test-kernels [OPTIONS]>\n\
                     bench without a suite runs them all; suites: syscalls, sched, net, caps, io, scrape [CONTAINERS], agent, trace\n\
                     test-kernels [--kernel VERSION]... [--quick] [--keep] [--timeout SECONDS] [--large-node | --arm64]: the kernel matrix, the 192-CPU map budget check or the arm64 smoke test (see xtask/src/kernels/mod.rs)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((task, rest)) => (task.as_str(), rest),
        None => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rest = rest.strip_prefix(&["--".to_owned()][..]).unwrap_or(rest);
    let result = match task {
        "setup" => setup::run(),
        "build" => setup::run().and_then(|()| build_release()),
        "run" => setup::run().and_then(|()| build_release()).and_then(|()| run_agent(rest)),
        "test" => setup::run().and_then(|()| test(rest)),
        "bench" => setup::run().and_then(|()| build_release()).and_then(|()| bench::run(rest)),
        "test-kernels" => setup::run().and_then(|()| kernels::run(rest)),
        // Internal: the syscall loop the benchmark times, run as its own process.
        "__syscall-loop" => bench::syscall_loop(rest),
        // Internal: the open storm `bench trace` traces.
        "__open-loop" => trace_bench::open_loop(rest),
        // Internal: the pipe ping-pong `bench sched` times, and its echoing partner.
        "__ping-pong" => sched_bench::ping_pong(rest),
        "__echo" => sched_bench::echo(),
        // Internal: the UDP flood `bench net` times, and its receiver.
        "__udp-send" => net_bench::udp_send(rest),
        "__udp-sink" => net_bench::udp_sink(rest),
        // Internal: the full conntrack table `bench conntrack` reads.
        "__udp-flows" => conntrack_bench::udp_flows(rest),
        // Internal: the setuid(0) loop `bench caps` times.
        "__setuid-loop" => caps_bench::setuid_loop(rest),
        "__kill-loop" => caps_bench::kill_loop(rest),
        // Internal: the O_DIRECT read loop `bench io` times.
        "__direct-read-loop" => io_bench::direct_read_loop(rest),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown task `{other}`\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn build_release() -> Result<(), String> {
    Step::new("build the agent and its kernel programs (release)").run(cargo().args([
        "build",
        "--release",
        "--package",
        "kernsight",
    ]))
}

fn run_agent(args: &[String]) -> Result<(), String> {
    if !is_root() {
        eprintln!("xtask: note: not running as root: the agent needs CAP_BPF and CAP_PERFMON");
    }
    let binary = workspace_root().join("target/release/kernsight");
    let mut command = std::process::Command::new(binary);
    command.arg("run").args(args);
    Step::new("kernsight run (Ctrl-C to stop)").run(&mut command)
}

/// clippy on `agent-ebpf`, which the workspace's clippy does not reach (it is built by
/// agent/build.rs only): checked as aya-build builds it, with the pinned nightly, for
/// `bpfel-unknown-none`, with `core` built from source and the same `--cfg`, in a target
/// directory of its own.
fn ebpf_clippy() -> Result<std::process::Command, String> {
    let nightly = setup::ebpf_nightly()?;
    let mut command = std::process::Command::new("cargo");
    command.arg(format!("+{nightly}")).current_dir(workspace_root());
    // Set by the outer `cargo run` and would override the `+toolchain` selection.
    for var in ["RUSTC", "RUSTDOC", "RUSTUP_TOOLCHAIN", "CARGO", "RUSTC_WORKSPACE_WRAPPER"] {
        command.env_remove(var);
    }
    command
        .args(["clippy", "--package", "kernsight-ebpf", "--bins", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core", "--target-dir"])
        .arg(workspace_root().join("target/clippy-ebpf"))
        .args(["--", "-D", "warnings"]);
    // aya-build's flags (`-Clink-arg=--btf` aside: clippy does not link).
    let arch = std::env::consts::ARCH;
    command.env("CARGO_ENCODED_RUSTFLAGS", format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2"));
    Ok(command)
}

/// rustfmt on `agent-ebpf`, which `cargo fmt` does not reach: its binaries take their modules
/// through `include!`, and its pinned nightly has no rustfmt. The workspace's stable one, with
/// the workspace's `rustfmt.toml`.
fn ebpf_fmt_check() -> Result<std::process::Command, String> {
    let mut files = Vec::new();
    let mut dirs = vec![workspace_root().join("agent-ebpf/src")];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| format!("read {}: {e}", dir.display()))?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut command = std::process::Command::new("rustfmt");
    command.arg(format!("+{}", process::STABLE)).current_dir(workspace_root()).env_remove("RUSTUP_TOOLCHAIN");
    command.args(["--edition", "2024", "--check"]).args(files);
    Ok(command)
}

fn test(args: &[String]) -> Result<(), String> {
    Step::new("check formatting").run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    Step::new("check formatting of the kernel programs (agent-ebpf)").run(&mut ebpf_fmt_check()?)?;
    Step::new("clippy").run(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    Step::new("clippy on the kernel programs (agent-ebpf)").run(&mut ebpf_clippy()?)?;
    let mut command = cargo();
    command.arg("test").args(args);
    if is_root() {
        // Tests that load programs, create cgroups or drop privileges fail instead of skipping.
        command.env("KERNSIGHT_PRIVILEGED_TESTS", "required");
    } else {
        eprintln!("xtask: note: not root: tests that load kernel programs will be skipped");
    }
    Step::new("every test, privileged ones included").run(&mut command)?;
    if !args.is_empty() {
        // A chosen few (`cargo xtask test -- oom::`): this kernel only.
        return Ok(());
    }
    // The same on the kernels clusters run: every family attaching and the tests the quick plan
    // names, on Debian's 5.10, 6.1 and 6.12 under QEMU (about 10 minutes here).
    kernels::run(&["--quick".to_owned()])
}
