//! `kernsight diagnose connectivity`: why can't this workload reach that destination. Walks
//! what an engineer walks by hand, for one workload and one destination: its addresses and the
//! route its namespace picks, the name's resolution through its nameservers (how fast, which
//! rcode), a TCP connect, and what the kernel counted meanwhile (drop reasons, conntrack
//! refusals, retransmits, resets); then names the first thing that failed.
//!
//! It sends only what was asked for: a query per nameserver tried and one connect.

pub mod evidence;
pub mod probe;
pub mod route;
pub mod verdict;

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use serde::Serialize;

use crate::kernel::conntrack;

/// What to diagnose.
#[derive(Debug, Clone)]
pub struct Request {
    /// A process of the workload: its network namespace and resolv.conf are used.
    pub pid: u32,
    /// A name or an address.
    pub host: String,
    /// No port: resolution and route only.
    pub port: Option<u16>,
    /// Instead of the workload's resolv.conf.
    pub nameservers: Vec<IpAddr>,
    pub timeout: Duration,
    /// The agent to read drop reasons from.
    pub agent: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub pid: u32,
    pub destination: String,
    /// The workload's addresses (loopback left out).
    pub addresses: Vec<IpAddr>,
    pub resolution: Option<probe::Resolution>,
    /// The address tried (the first the name resolved to).
    pub address: Option<IpAddr>,
    /// `None`: no route (or nothing to route: the name did not resolve).
    pub route: Option<route::Route>,
    pub connect: Option<probe::Connect>,
    pub evidence: evidence::Evidence,
    pub verdict: verdict::Verdict,
}

#[derive(Debug, thiserror::Error)]
pub enum DiagnoseError {
    #[error("process {0} is gone")]
    Gone(u32),
    #[error(transparent)]
    Netns(#[from] crate::kernel::netns::NetnsError),
}

pub fn diagnose(proc_root: &Path, request: &Request) -> Result<Report, DiagnoseError> {
    let process = proc_root.join(request.pid.to_string());
    if !process.exists() {
        return Err(DiagnoseError::Gone(request.pid));
    }
    let netns = process.join("ns/net");
    let read = |name: &str| std::fs::read_to_string(process.join("net").join(name)).unwrap_or_default();
    let addresses = conntrack::read_process_addresses(proc_root, request.pid);
    let destination = match request.port {
        Some(port) => format!("{}:{port}", request.host),
        None => request.host.clone(),
    };

    let resolution = match request.host.parse::<IpAddr>() {
        Ok(_) => None,
        Err(_) => {
            let servers = if request.nameservers.is_empty() {
                // The workload's own file, through its root (its mount namespace).
                probe::nameservers(
                    &std::fs::read_to_string(process.join("root/etc/resolv.conf")).unwrap_or_default(),
                )
            } else {
                request.nameservers.clone()
            };
            Some(probe::resolve(&netns, &request.host, &servers, request.timeout)?)
        }
    };
    let address = match &resolution {
        None => request.host.parse().ok(),
        Some(r) if r.rcode == Some("NOERROR") => r.addresses.first().copied(),
        Some(_) => None,
    };
    let route = address.and_then(|a| {
        if a.is_loopback() || addresses.contains(&a) {
            return Some(route::Route { interface: "lo".into(), gateway: None, prefix: format!("{a}") });
        }
        route::lookup(&read("route"), &read("ipv6_route"), a)
    });

    let before = evidence::Snapshot::take(proc_root, request.pid, request.agent.as_deref());
    let connect = match (address, &route, request.port) {
        (Some(a), Some(_), Some(port)) => {
            Some(probe::connect(&netns, SocketAddr::new(a, port), request.timeout)?)
        }
        _ => None,
    };
    let evidence = evidence::Snapshot::take(proc_root, request.pid, request.agent.as_deref()).since(&before);
    let verdict =
        verdict::decide(&destination, resolution.as_ref(), route.as_ref(), connect.as_ref(), &evidence);
    Ok(Report {
        pid: request.pid,
        destination,
        addresses,
        resolution,
        address,
        route,
        connect,
        evidence,
        verdict,
    })
}
