//! `kernsight audit`: every container on the node with its findings and their severity, as a
//! table or JSON; the exit status says whether any finding reached `--fail-on`.

use std::{fmt::Write as _, io::Write as _};

use serde::Serialize;

use crate::{
    posture::{
        self, ContainerPosture,
        findings::{Finding, Severity, findings},
    },
    terminal::Escaped,
};

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only these containers (ids, their first characters, or names); all when none is given.
    containers: Vec<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: Output,
    /// Exit with status 2 when a finding of this severity or a higher one is reported.
    #[arg(long, value_enum)]
    fail_on: Option<Severity>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Output {
    Table,
    Json,
}

/// What `audit -o json` prints for each container.
#[derive(Debug, Serialize)]
pub struct Audited {
    #[serde(flatten)]
    pub posture: ContainerPosture,
    pub findings: Vec<Finding>,
}

/// Exit status when `--fail-on` is reached (1 is for errors).
pub const FINDINGS_EXIT: u8 = 2;

/// Audits every container; returns whether a finding reached `--fail-on`.
pub fn run(args: AuditArgs) -> anyhow::Result<bool> {
    let proc_root = posture::proc_root();
    let chosen = if args.containers.is_empty() {
        posture::all(&proc_root)
    } else {
        args.containers.iter().map(|target| posture::find(&proc_root, target)).collect::<Result<_, _>>()?
    };
    let unknown: Vec<String> =
        chosen.iter().filter(|c| !c.namespaces_known).map(ContainerPosture::display_name).collect();
    if !unknown.is_empty() {
        eprintln!(
            "kernsight: warning: the namespaces and mounts of {} could not be read (they need root or \
             CAP_SYS_PTRACE): host namespace, user namespace and host mount findings are left out for them",
            Escaped(&unknown.join(", "))
        );
    }
    let audited: Vec<Audited> =
        chosen.into_iter().map(|posture| Audited { findings: findings(&posture), posture }).collect();
    let rendered = match args.output {
        Output::Json => serde_json::to_string_pretty(&audited)? + "\n",
        Output::Table => table(&audited),
    };
    match std::io::stdout().lock().write_all(rendered.as_bytes()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => return Err(err.into()),
        _ => {}
    }
    Ok(args.fail_on.is_some_and(|threshold| {
        audited.iter().flat_map(|a| &a.findings).any(|finding| finding.severity >= threshold)
    }))
}

fn table(audited: &[Audited]) -> String {
    let mut out = String::new();
    if audited.is_empty() {
        out.push_str("no containers with running processes on this node\n");
        return out;
    }
    let _ = writeln!(out, "{:<12}  {:<24}  {:<8}  FINDING", "CONTAINER", "NAME", "SEVERITY");
    // Names, ids and details come from the workloads (container names, mount paths): escaped.
    for a in audited {
        let id: String = a.posture.container_id.chars().take(12).collect();
        let id = Escaped(&id);
        let name = Escaped(a.posture.name.as_deref().unwrap_or("-"));
        if a.findings.is_empty() {
            let _ = writeln!(out, "{id:<12}  {name:<24}  {:<8}  none", "-");
        }
        for f in &a.findings {
            let _ = writeln!(
                out,
                "{id:<12}  {name:<24}  {:<8}  {}: {}",
                f.severity.name(),
                f.id,
                Escaped(&f.detail)
            );
        }
    }
    out
}
