//! `kernsight diagnose connectivity <pid | container> <destination[:port]>`.

use std::{fmt::Write as _, net::IpAddr, path::Path, process::ExitCode, time::Duration};

use anyhow::{Context as _, bail};

use crate::{
    diagnose::{Report, Request, diagnose, probe::Outcome},
    terminal::Escaped,
};

#[derive(Debug, clap::Args)]
pub struct DiagnoseArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Why can't a workload reach a destination: its addresses and route, the name's
    /// resolution through its nameservers, a TCP connect from its network namespace, and the
    /// drops, conntrack refusals, retransmits and resets the kernel counted meanwhile. Exit
    /// status 0: reachable; 1: not, with the cause; 2: error.
    Connectivity(ConnectivityArgs),
}

#[derive(Debug, clap::Args)]
struct ConnectivityArgs {
    /// A pid, a container id (or its first characters) or a container name.
    target: String,
    /// `HOST[:PORT]` (`[IPV6]:PORT` for an IPv6 address): a name or an address. Without a port
    /// only the name and the route are checked.
    destination: String,
    /// Nameserver to ask instead of those of the workload's /etc/resolv.conf (repeatable).
    #[arg(long, value_name = "ADDRESS")]
    nameserver: Vec<IpAddr>,
    /// How long the connect, and each DNS query, may wait.
    #[arg(long, default_value = "3s", value_parser = crate::duration::parse_positive, value_name = "DURATION")]
    timeout: Duration,
    /// The agent whose drop counters are read (`HOST:PORT`). Default: 127.0.0.1:9464, or one
    /// started for the diagnosis.
    #[arg(long, value_name = "HOST:PORT")]
    agent: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

pub fn run(args: DiagnoseArgs) -> anyhow::Result<ExitCode> {
    let What::Connectivity(args) = args.what;
    let proc_root = crate::posture::proc_root();
    let pid = target_pid(&proc_root, &args.target)?;
    let (host, port) = split_destination(&args.destination)?;
    let (_own, agent) = crate::cli::own_agent::find_or_start(args.agent.as_deref(), "the diagnosis")
        .map_or_else(|err| (None, Err(err.to_string())), |(own, address)| (own, Ok(address)));
    if let Err(why) = &agent {
        eprintln!("no agent: drop reasons will be missing from the evidence ({why})");
    }
    let request =
        Request { pid, host, port, nameservers: args.nameserver, timeout: args.timeout, agent: agent.ok() };
    let report = diagnose(&proc_root, &request)?;
    let rendered = match args.output {
        Output::Json => serde_json::to_string_pretty(&report)? + "\n",
        Output::Text => text(&report),
    };
    super::print(&rendered)?;
    Ok(if report.verdict.reachable { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// A pid, or the first process of the container named.
fn target_pid(proc_root: &Path, target: &str) -> anyhow::Result<u32> {
    if let Ok(pid) = target.parse::<u32>() {
        if !proc_root.join(target).exists() {
            bail!("no process {pid}");
        }
        return Ok(pid);
    }
    let container = crate::posture::find(proc_root, target)?;
    container.pids.first().copied().with_context(|| format!("container {target} has no process left"))
}

/// `HOST[:PORT]`, `[V6]:PORT` or a bare IPv6 address.
fn split_destination(destination: &str) -> anyhow::Result<(String, Option<u16>)> {
    let port = |p: &str| p.parse::<u16>().with_context(|| format!("{destination:?}: {p:?} is not a port"));
    if let Some(rest) = destination.strip_prefix('[') {
        let (host, after) = rest.split_once(']').with_context(|| format!("{destination:?}: no closing ]"))?;
        return Ok((host.to_owned(), after.strip_prefix(':').map(port).transpose()?));
    }
    if destination.parse::<IpAddr>().is_ok() {
        return Ok((destination.to_owned(), None));
    }
    match destination.rsplit_once(':') {
        Some((host, p)) if !host.is_empty() => Ok((host.to_owned(), Some(port(p)?))),
        Some(_) => bail!("{destination:?}: no host before the port"),
        None if destination.is_empty() => bail!("no destination"),
        None => Ok((destination.to_owned(), None)),
    }
}

fn text(report: &Report) -> String {
    let mut out = String::new();
    let list = |items: &mut dyn Iterator<Item = String>| {
        let joined: Vec<String> = items.collect();
        if joined.is_empty() { "-".to_owned() } else { joined.join(", ") }
    };
    let _ = writeln!(
        out,
        "workload     pid {}, addresses {}",
        report.pid,
        list(&mut report.addresses.iter().map(|a| a.to_string()))
    );
    let _ = writeln!(out, "destination  {}", Escaped(&report.destination));
    if let Some(r) = &report.resolution {
        let answer = match r.rcode {
            Some(rcode) => format!(
                "{rcode} in {:.1} ms: {}",
                r.milliseconds,
                list(&mut r.addresses.iter().map(|a| a.to_string()))
            ),
            None => r.error.clone().unwrap_or_default(),
        };
        let _ = writeln!(out, "dns          {} (nameserver {})", Escaped(&answer), r.server);
    }
    match (&report.address, &report.route) {
        (Some(_), Some(route)) => {
            let via = route.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
            let _ = writeln!(out, "route        {} dev {}{via}", route.prefix, Escaped(&route.interface));
        }
        (Some(_), None) => {
            let _ = writeln!(out, "route        none");
        }
        _ => {}
    }
    if let Some(c) = &report.connect {
        let word = match c.outcome {
            Outcome::Connected => "connected",
            Outcome::Refused => "refused",
            Outcome::TimedOut => "timed out",
            Outcome::Unreachable => "unreachable",
            Outcome::Failed => "failed",
        };
        let outcome = match &c.error {
            Some(error) => format!("{word} ({error})"),
            None => word.to_owned(),
        };
        let _ = writeln!(out, "connect      {} {outcome} after {:.1} ms", c.destination, c.milliseconds);
    }
    let e = &report.evidence;
    let counts =
        |m: &std::collections::BTreeMap<&str, u64>| list(&mut m.iter().map(|(k, v)| format!("{k} +{v}")));
    let drops = match &e.drops_unknown {
        Some(why) => format!("unknown ({why})"),
        None => list(&mut e.drops.iter().map(|(k, v)| format!("{k} +{v}"))),
    };
    let _ = writeln!(out, "meanwhile    drops on this node: {drops}");
    let _ = writeln!(out, "             tcp of the workload: {}", counts(&e.tcp));
    let _ = writeln!(
        out,
        "             conntrack: workload {}, node {}",
        counts(&e.pod_conntrack),
        counts(&e.node_conntrack)
    );
    let _ = writeln!(out, "\nverdict      {}: {}", report.verdict.cause, Escaped(&report.verdict.summary));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_with_and_without_ports() {
        let split = |d: &str| split_destination(d).unwrap();
        assert_eq!(split("db.prod:5432"), ("db.prod".into(), Some(5432)));
        assert_eq!(split("10.0.0.1:80"), ("10.0.0.1".into(), Some(80)));
        assert_eq!(split("[fd00::1]:443"), ("fd00::1".into(), Some(443)));
        assert_eq!(split("fd00::1"), ("fd00::1".into(), None));
        assert_eq!(split("example.com"), ("example.com".into(), None));
        assert!(split_destination("db:http").is_err());
        assert!(split_destination(":80").is_err());
        assert!(split_destination("").is_err());
    }
}
