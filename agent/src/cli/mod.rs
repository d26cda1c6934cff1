//! Command line: one file per subcommand, each thin over the modules that do the work.

mod inspect;
mod run;
mod top;
pub mod trace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "kernsight", version, about = "eBPF observability for Kubernetes nodes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent: load the kernel programs and serve Prometheus metrics.
    Run(run::RunArgs),
    /// One screen on a process or container: namespaces, cgroup, limits and usage, memory by
    /// kind, OOM kills, throttling, pressure, capabilities, seccomp.
    Inspect(inspect::InspectArgs),
    /// Trace events as they happen, filtered in the kernel by process, cgroup, container and
    /// syscall set: exec, exit, open, syscall, tcp, drop, oom, cap, signal, or any tracepoint.
    Trace(Box<trace::TraceArgs>),
    /// Containers ranked by syscalls/s, errors/s, CPU throttling, run-queue delay, network
    /// bytes and OOM kills, from a running agent (or one started for the view).
    Top(top::TopArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Trace(args) => trace::run(*args),
        Command::Top(args) => top::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line: what failed, why, what to do.
            eprintln!("kernsight: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
