//! `kernsight inspect <pid | container>`: one screen instead of lsns, cat memory.max, getpcaps,
//! grep Seccomp ...

use std::{fmt::Write as _, path::Path};

use crate::{
    inspect::{Report, inspect, reclaim_stalls},
    terminal::Escaped,
};

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// A pid, a container id (or its first characters) or a container name.
    target: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    output: Output,
    /// The running agent to ask for the workload's memory reclaim stalls (`HOST:PORT` of
    /// `kernsight run`); everything else is read from /proc and cgroupfs.
    #[arg(long, default_value = "127.0.0.1:9464", value_name = "HOST:PORT")]
    agent: String,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let mut report = inspect(Path::new("/proc"), &args.target)?;
    report.reclaim_stalls = Some(reclaim_stalls(&report, &args.agent));
    let rendered = match args.output {
        Output::Json => serde_json::to_string_pretty(&report)? + "\n",
        Output::Text => text(&report),
    };
    Ok(super::print(&rendered)?)
}

fn bytes(value: Option<u64>) -> String {
    value.map_or_else(|| "unlimited".to_owned(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
}

/// The screen: names, paths and `comm` come from the workload and are escaped for the terminal.
fn text(report: &Report) -> String {
    let mut out = String::new();
    let r = &report.resources;
    let _ = writeln!(
        out,
        "container  {} {}",
        Escaped(report.container_name.as_deref().unwrap_or("-")),
        Escaped(report.container_id.as_deref().unwrap_or("(host process)"))
    );
    let _ = writeln!(out, "cgroup     {}", Escaped(&report.cgroup));
    let _ = writeln!(
        out,
        "memory     {} used of {} (high {})",
        bytes(r.memory_usage_bytes),
        bytes(r.memory_limit_bytes),
        bytes(r.memory_high_bytes)
    );
    let kinds: Vec<String> = r.memory_bytes.iter().map(|(k, v)| format!("{k} {}", bytes(Some(*v)))).collect();
    let _ = writeln!(out, "           {}", kinds.join(", "));
    let events: Vec<String> = r.memory_events.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(
        out,
        "           events: {}",
        if events.is_empty() { "-".into() } else { events.join(", ") }
    );
    let headroom = match (r.memory_headroom_bytes, r.memory_headroom_share) {
        (Some(h), Some(share)) => format!(
            "{} of the {} limit ({:.0} %): {} unreclaimable",
            bytes(Some(h)),
            bytes(r.memory_limit_bytes),
            100.0 * share,
            bytes(r.memory_unreclaimable_bytes)
        ),
        _ => format!(
            "no limit; {} unreclaimable",
            r.memory_unreclaimable_bytes.map_or("-".into(), |b| bytes(Some(b)))
        ),
    };
    let _ = writeln!(out, "headroom   {headroom}");
    let psi: Vec<String> = ["some", "full"]
        .iter()
        .filter_map(|kind| {
            r.pressure_stall_seconds.get(&format!("memory {kind}")).map(|s| format!("{kind} {s:.2} s"))
        })
        .collect();
    let stalls = match &report.reclaim_stalls {
        Some(stalls) if stalls.error.is_none() => {
            let kinds: Vec<String> = stalls
                .by_kind
                .iter()
                .map(|(kind, f)| format!("{} {} stalls, {:.3} s", Escaped(kind), f.stalls, f.seconds))
                .collect();
            format!(
                "{} (agent {})",
                if kinds.is_empty() { "none".into() } else { kinds.join(", ") },
                stalls.agent
            )
        }
        Some(stalls) => stalls.error.clone().unwrap_or_default(),
        None => "-".into(),
    };
    let _ = writeln!(
        out,
        "reclaim    {stalls}; memory pressure {}",
        if psi.is_empty() { "-".into() } else { psi.join(", ") }
    );
    let quota = match (r.cpu_quota_seconds, r.cpu_period_seconds) {
        (Some(q), Some(p)) if p > 0.0 => format!("{:.2} CPUs ({q} s per {p} s)", q / p),
        _ => "no quota".into(),
    };
    let _ = writeln!(
        out,
        "cpu        {quota}; used {:.2} s; throttled {} of {} periods, {:.2} s",
        r.cpu_usage_seconds.unwrap_or(0.0),
        r.cpu_throttled_periods.unwrap_or(0),
        r.cpu_periods.unwrap_or(0),
        r.cpu_throttled_seconds.unwrap_or(0.0)
    );
    let _ = writeln!(
        out,
        "pids       {} of {}",
        r.pids.unwrap_or(0),
        r.pids_limit.map_or("unlimited".into(), |l| l.to_string())
    );
    if !r.pressure_stall_seconds.is_empty() {
        let psi: Vec<String> =
            r.pressure_stall_seconds.iter().map(|(k, v)| format!("{k} {v:.2} s")).collect();
        let _ = writeln!(out, "pressure   {}", psi.join(", "));
    }
    let shared: Vec<&str> = report.namespaces.iter().filter(|(_, n)| n.host).map(|(k, _)| *k).collect();
    let own: Vec<&str> =
        report.namespaces.iter().filter(|(_, n)| !n.host && n.inode.is_some()).map(|(k, _)| *k).collect();
    let _ = writeln!(
        out,
        "namespaces own: {}; host's: {}",
        own.join(" "),
        if shared.is_empty() { "none".into() } else { shared.join(" ") }
    );
    for p in &report.processes {
        let _ = writeln!(
            out,
            "\npid {} ({}) ppid {} pid-in-ns {} uid {} gid {} uid_map [{}]",
            p.pid,
            Escaped(&p.name),
            p.ppid,
            p.pid_in_namespace.map_or("-".into(), |n| n.to_string()),
            p.uid,
            p.gid,
            Escaped(&p.uid_map)
        );
        let _ = writeln!(
            out,
            "  seccomp {} ({} filters), no_new_privs {}",
            p.seccomp, p.seccomp_filters, p.no_new_privs
        );
        let _ = writeln!(out, "  effective: {}", p.capabilities.effective.join(" "));
        if p.capabilities.bounding != p.capabilities.effective {
            let _ = writeln!(out, "  bounding:  {}", p.capabilities.bounding.join(" "));
        }
    }
    out
}
