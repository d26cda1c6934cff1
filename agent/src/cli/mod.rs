//! Command line: one file per subcommand, each thin over the modules that do the work.

mod advise;
mod audit;
mod check;
mod cleanup;
mod diagnose;
mod inspect;
mod own_agent;
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
    /// Can this node run kernsight, and how: kernel, BTF, cgroup layout, and per probe family
    /// whether it will run, runs with a fallback, or cannot run (and why). Probes only: nothing
    /// is attached. Exit status 0: every enabled family can run; 1: some cannot; 2: error.
    Check(check::CheckArgs),
    /// One screen on a process or container: namespaces, cgroup, limits and usage, memory by
    /// kind, headroom before the OOM killer, reclaim stalls (from a running agent), OOM kills,
    /// throttling, pressure, capabilities, seccomp.
    Inspect(inspect::InspectArgs),
    /// Trace events as they happen, filtered in the kernel by process, cgroup, container and
    /// syscall set: exec, exit, open, syscall, tcp, drop, oom, cap, signal, or any tracepoint.
    Trace(Box<trace::TraceArgs>),
    /// Containers ranked by syscalls/s, errors/s, CPU throttling and waits, run-queue delay,
    /// memory headroom, reclaim stalls, block I/O latency, network bytes and OOM kills, from a
    /// running agent (or one started for the view).
    Top(top::TopArgs),
    /// Every container on the node with its security findings (privileged, CAP_SYS_ADMIN, no
    /// seccomp, host namespaces, root without a user namespace, writable host mounts) and their
    /// severity.
    Audit(audit::AuditArgs),
    /// Least-privilege settings from what a workload was seen doing: a seccomp profile, or the
    /// capabilities it used.
    Advise(advise::AdviseArgs),
    /// Walk a problem for one workload: `diagnose connectivity <pid | container>
    /// <destination[:port]>` checks route, DNS and a TCP connect from the workload's network
    /// namespace and names the cause from what the kernel counted.
    Diagnose(diagnose::DiagnoseArgs),
    /// Remove the maps the agent pinned in bpffs (its counters then start again from zero).
    Cleanup(cleanup::CleanupArgs),
}

/// Writes a command's output to stdout. A closed pipe (`| head`) is the reader's choice, not an
/// error.
fn print(text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// A path argument that may be empty (clap's `PathBuf` parser refuses empty values), for options
/// where empty means "off".
fn path_or_empty() -> impl clap::builder::TypedValueParser<Value = std::path::PathBuf> {
    use clap::builder::TypedValueParser as _;
    clap::builder::OsStringValueParser::new().map(std::path::PathBuf::from)
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Check(args) => return check::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Trace(args) => trace::run(*args),
        Command::Top(args) => top::run(args),
        Command::Cleanup(args) => cleanup::run(args),
        Command::Advise(args) => advise::run(args),
        Command::Diagnose(args) => match diagnose::run(args) {
            Ok(code) => return code,
            Err(err) => {
                eprintln!("kernsight: error: {}", crate::terminal::escape(&format!("{err:#}")));
                return ExitCode::from(2);
            }
        },
        Command::Audit(args) => match audit::run(args) {
            Ok(true) => return ExitCode::from(audit::FINDINGS_EXIT),
            Ok(false) => Ok(()),
            Err(err) => Err(err),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line: what failed, why, what to do.
            // Errors may quote what workloads named (a container name that matched twice):
            // escaped for the terminal, line by line.
            let text = format!("{err:#}");
            let lines: Vec<_> = text.lines().map(crate::terminal::escape).collect();
            eprintln!("kernsight: error: {}", lines.join("\n"));
            ExitCode::FAILURE
        }
    }
}
