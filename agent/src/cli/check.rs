//! `kernsight check`: can this node run kernsight, and how? Kernel, BTF, cgroup layout, the
//! probed kernel features and the build of the programs they choose, and per probe family: will
//! run, runs with a fallback (which, why) or cannot run (why). Probes only: nothing is attached.
//!
//! Exit status: 0 when every enabled family can run (fallbacks included), 1 when some cannot, 2
//! when the check itself failed (no privileges to probe, unreadable config).

use std::{fmt::Write as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;

use crate::{
    bpf::readiness::{Readiness, Verdict},
    config::Config,
    kernel::{cgroupfs::Hierarchies, preflight},
};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Configuration file (TOML): which families are enabled; without it the embedded default.
    #[arg(long, env = "KERNSIGHT_CONFIG")]
    config: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: Output,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Output {
    Table,
    Json,
}

/// Exit status when some enabled family cannot run.
const CANNOT_RUN_EXIT: u8 = 1;
/// Exit status when the check could not be made.
const ERROR_EXIT: u8 = 2;

pub fn run(args: CheckArgs) -> ExitCode {
    match check(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(CANNOT_RUN_EXIT),
        Err(err) => {
            eprintln!("kernsight: error: {err:#}");
            ExitCode::from(ERROR_EXIT)
        }
    }
}

/// Prints the report; returns whether every enabled family can run.
fn check(args: &CheckArgs) -> anyhow::Result<bool> {
    let config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::embedded(),
    };
    // Probing creates maps and loads test programs: the same privileges as the agent.
    preflight::check_privileges().context("kernsight check probes the kernel as the agent does")?;
    // As the agent does: probes create maps (charged to RLIMIT_MEMLOCK before 5.11), and the
    // OOM family reads its record layout from tracefs.
    preflight::raise_memlock_limit();
    preflight::ensure_mounts(&config.paths.tracefs, &config.paths.bpffs);
    let readiness = Readiness::assess(&config, Hierarchies::detect());
    let rendered = match args.output {
        Output::Json => serde_json::to_string_pretty(&readiness)? + "\n",
        Output::Table => table(&readiness),
    };
    super::print(&rendered)?;
    Ok(readiness.all_enabled_run())
}

fn yes_no(present: bool) -> &'static str {
    if present { "yes" } else { "no" }
}

fn table(r: &Readiness) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "kernel      {}", r.kernel);
    let _ = match &r.btf_error {
        None => writeln!(out, "BTF         yes"),
        Some(err) => writeln!(out, "BTF         no: {err} (every family needs it)"),
    };
    let cgroups = [r.cgroups.unified.as_ref().map(|p| format!("unified at {p}")), r.cgroups.v1.clone()];
    let cgroups: Vec<String> = cgroups.into_iter().flatten().collect();
    let _ = writeln!(out, "cgroups     {} ({})", r.cgroups.layout, cgroups.join(", "));
    let _ = match &r.object_fallback {
        None => writeln!(out, "programs    {} (full build)", r.object),
        Some(why) => writeln!(out, "programs    {} (a build for older kernels: {why})", r.object),
    };
    let f = &r.features;
    let _ = writeln!(
        out,
        "features    cgroup local storage: {}, task local storage: {}, bpf_get_current_task_btf: {}, \
         capability:cap_capable tracepoint: {}, cap_capable in BTF: {}, fentry/fexit: {}",
        yes_no(f.cgroup_storage),
        yes_no(f.task_storage),
        yes_no(f.current_task_btf),
        yes_no(f.cap_capable_tracepoint),
        yes_no(f.cap_capable_function),
        yes_no(f.tracing_programs),
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "{:<14}  {:<20}  {:<16}  WHY", "FAMILY", "STATUS", "IMPLEMENTATION");
    for family in &r.families {
        let implementation = if family.verdict == Verdict::CannotRun { "-" } else { family.implementation };
        let _ = writeln!(
            out,
            "{:<14}  {:<20}  {:<16}  {}",
            family.name,
            family.verdict.describe(),
            implementation,
            family.why.as_deref().unwrap_or("")
        );
    }
    let cannot = r.families.iter().filter(|f| f.verdict == Verdict::CannotRun).count();
    let _ = writeln!(out);
    let _ = if !r.btf {
        writeln!(out, "not ready: no family can run without BTF (exit status 1)")
    } else if cannot == 0 {
        writeln!(out, "ready: every enabled family can run on this node")
    } else {
        // The agent still starts and reports ready: these families are exported as unsupported
        // (`kernsight_probe_supported 0`), the others run.
        writeln!(
            out,
            "incomplete: {cannot} enabled families cannot run on this node; the agent runs the others \
             and reports these as unsupported (exit status 1)"
        )
    };
    out
}
