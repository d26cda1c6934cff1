//! kernsight: eBPF observability agent (`kernsight run`) and node-local tool.

mod bpf;
mod cli;
mod config;
mod kernel;
mod logging;
mod metrics;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
