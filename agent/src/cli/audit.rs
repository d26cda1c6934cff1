//! `kernsight audit`: every container on the node with its findings and their severity, as a
//! table or JSON; the exit status says whether any finding reached `--fail-on`.

use std::{collections::HashMap, fmt::Write as _};

use serde::Serialize;

use crate::{
    metadata::{cri, owner},
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
    /// The CRI socket that names the containers' pods and workloads (default: containerd's,
    /// then CRI-O's); without one they are left empty.
    #[arg(long)]
    cri_socket: Option<std::path::PathBuf>,
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
    #[serde(flatten)]
    pub pod: PodOf,
    pub findings: Vec<Finding>,
}

/// The pod of a container and the workload it belongs to (as the agent's labels name them);
/// empty where the CRI does not know the container.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PodOf {
    pub namespace: String,
    pub pod: String,
    pub workload_kind: String,
    pub workload: String,
}

/// Container id → its pod and workload, from the CRI socket; empty (with a warning) when no
/// runtime answers.
fn pods_by_container(socket: Option<&std::path::Path>) -> HashMap<String, PodOf> {
    let configured: Vec<std::path::PathBuf> = socket.into_iter().map(ToOwned::to_owned).collect();
    let Some(socket) = cri::find_socket(&configured) else {
        return HashMap::new();
    };
    let node = std::env::var("NODE_NAME").unwrap_or_default();
    match cri::list_blocking(&socket, std::time::Duration::from_secs(5)) {
        Ok(listed) => listed
            .into_iter()
            .filter(|c| !c.container_name.is_empty())
            .map(|c| {
                let owner = owner::owner(&c.pod_name, &c.pod_labels, &c.pod_config_source, &node);
                let pod = PodOf {
                    namespace: c.pod_namespace,
                    pod: c.pod_name,
                    workload_kind: owner.kind.to_owned(),
                    workload: owner.name,
                };
                (c.container_id, pod)
            })
            .collect(),
        Err(why) => {
            eprintln!(
                "kernsight: warning: the CRI at {} did not answer ({}): pods and workloads are left out",
                socket.display(),
                Escaped(&why)
            );
            HashMap::new()
        }
    }
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
    let mut pods = pods_by_container(args.cri_socket.as_deref());
    let audited: Vec<Audited> = chosen
        .into_iter()
        .map(|posture| Audited {
            findings: findings(&posture),
            pod: pods.remove(&posture.container_id).unwrap_or_default(),
            posture,
        })
        .collect();
    let rendered = match args.output {
        Output::Json => serde_json::to_string_pretty(&audited)? + "\n",
        Output::Table => table(&audited),
    };
    super::print(&rendered)?;
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
    let _ =
        writeln!(out, "{:<12}  {:<24}  {:<32}  {:<8}  FINDING", "CONTAINER", "NAME", "WORKLOAD", "SEVERITY");
    // Names, ids and details come from the workloads (container names, mount paths): escaped.
    for a in audited {
        let id: String = a.posture.container_id.chars().take(12).collect();
        let id = Escaped(&id);
        let name = Escaped(a.posture.name.as_deref().unwrap_or("-"));
        let workload = match &a.pod {
            PodOf { workload_kind, workload, .. } if !workload_kind.is_empty() => {
                format!("{workload_kind}/{workload}")
            }
            _ => "-".to_owned(),
        };
        let workload = Escaped(&workload);
        if a.findings.is_empty() {
            let _ = writeln!(out, "{id:<12}  {name:<24}  {workload:<32}  {:<8}  none", "-");
        }
        for f in &a.findings {
            let _ = writeln!(
                out,
                "{id:<12}  {name:<24}  {workload:<32}  {:<8}  {}: {}",
                f.severity.name(),
                f.id,
                Escaped(&f.detail)
            );
        }
    }
    out
}
