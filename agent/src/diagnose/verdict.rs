//! The verdict: the first thing on the path that failed, named from the evidence.

use serde::Serialize;

use super::{
    evidence::Evidence,
    probe::{Connect, Outcome, Resolution},
    route::Route,
};

/// What was found, as an identifier (`cause`) and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub reachable: bool,
    /// `reachable`, `resolved`, `dns_no_answer`, `dns_error`, `dns_no_address`, `no_route`,
    /// `port_closed`, `unreachable`, `conntrack_refused`, `firewall_drop`, `dropped`,
    /// `no_answer`, `connect_error`.
    pub cause: &'static str,
    pub summary: String,
}

/// Conntrack statistics that mean the table refused or evicted a connection.
const CONNTRACK_REFUSALS: [&str; 3] = ["insert_failed", "drop", "early_drop"];

/// Decides from what each step found, in the order a packet meets them.
pub fn decide(
    destination: &str,
    resolution: Option<&Resolution>,
    route: Option<&Route>,
    connect: Option<&Connect>,
    evidence: &Evidence,
) -> Verdict {
    let no = |cause, summary: String| Verdict { reachable: false, cause, summary };
    if let Some(r) = resolution {
        match r.rcode {
            None => {
                let why = r.error.as_deref().unwrap_or("no answer");
                return no(
                    "dns_no_answer",
                    format!("{destination} did not resolve: {why} (nameserver {})", r.server),
                );
            }
            Some(rcode) if rcode != "NOERROR" => {
                return no("dns_error", format!("{destination} did not resolve: {rcode} from {}", r.server));
            }
            Some(_) if r.addresses.is_empty() => {
                return no("dns_no_address", format!("{destination} has no A or AAAA record ({})", r.server));
            }
            Some(_) => {}
        }
    }
    let Some(route) = route else {
        return no("no_route", format!("no route to {destination} in the workload's network namespace"));
    };
    let Some(connect) = connect else {
        return Verdict {
            reachable: true,
            cause: "resolved",
            summary: format!(
                "{destination} resolves and is routed via {} (no port: no connect tried)",
                route.interface
            ),
        };
    };
    let to = connect.destination;
    match connect.outcome {
        Outcome::Connected => Verdict {
            reachable: true,
            cause: "reachable",
            summary: format!(
                "TCP connect to {to} succeeded in {:.1} ms via {}",
                connect.milliseconds, route.interface
            ),
        },
        Outcome::Refused => no(
            "port_closed",
            format!(
                "{to} answered with a reset: nothing listens on port {} there, or a rule rejects it",
                to.port()
            ),
        ),
        Outcome::Unreachable => no(
            "unreachable",
            format!("{to} is unreachable: {}", connect.error.as_deref().unwrap_or("an ICMP error")),
        ),
        Outcome::Failed => no(
            "connect_error",
            format!("connect to {to} failed: {}", connect.error.as_deref().unwrap_or("?")),
        ),
        Outcome::TimedOut => timed_out(to, connect, evidence),
    }
}

/// No answer: conntrack refusals first (they come before any rule), then the kernel's drop
/// reasons on this node, firewall rules by name.
fn timed_out(to: std::net::SocketAddr, connect: &Connect, evidence: &Evidence) -> Verdict {
    let no = |cause, summary: String| Verdict { reachable: false, cause, summary };
    let refusals: u64 = CONNTRACK_REFUSALS
        .iter()
        .map(|e| evidence.pod_conntrack.get(e).unwrap_or(&0) + evidence.node_conntrack.get(e).unwrap_or(&0))
        .sum();
    let waited = connect.milliseconds / 1e3;
    if refusals > 0 {
        return no(
            "conntrack_refused",
            format!(
                "no answer from {to} in {waited:.1} s; conntrack refused or evicted {refusals} connections meanwhile (table full or insert races)"
            ),
        );
    }
    if let Some((_, packets)) = evidence.drops.iter().find(|(reason, _)| reason == "NETFILTER_DROP") {
        return no(
            "firewall_drop",
            format!(
                "no answer from {to} in {waited:.1} s; a firewall rule dropped {packets} packets on this node meanwhile (drop reason NETFILTER_DROP)"
            ),
        );
    }
    if let Some((reason, packets)) = evidence.drops.first() {
        return no(
            "dropped",
            format!(
                "no answer from {to} in {waited:.1} s; the kernel dropped {packets} packets on this node meanwhile, most for {reason}"
            ),
        );
    }
    let unknown = evidence.drops_unknown.as_deref().map(|why| format!(" ({why})")).unwrap_or_default();
    no(
        "no_answer",
        format!(
            "no answer from {to} in {waited:.1} s and no drop on this node{unknown}: the packets left the node; the loss is further on the path, or the host is down"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> Route {
        Route { interface: "eth0".into(), gateway: None, prefix: "10.0.0.0/24".into() }
    }

    fn attempt(outcome: Outcome) -> Connect {
        Connect { destination: "10.0.0.9:80".parse().unwrap(), outcome, milliseconds: 3000.0, error: None }
    }

    #[test]
    fn each_step_names_its_failure() {
        let evidence = Evidence::default();
        let cause = |resolution: Option<&Resolution>,
                     route: Option<&Route>,
                     outcome: Option<Outcome>,
                     e: &Evidence| {
            decide("x", resolution, route, outcome.map(attempt).as_ref(), e).cause
        };
        let nx = Resolution {
            server: "10.96.0.10".parse().unwrap(),
            rcode: Some("NXDOMAIN"),
            milliseconds: 1.0,
            addresses: vec![],
            error: None,
        };
        assert_eq!(cause(Some(&nx), Some(&route()), Some(Outcome::Connected), &evidence), "dns_error");
        let silent = Resolution { rcode: None, ..nx.clone() };
        assert_eq!(cause(Some(&silent), Some(&route()), None, &evidence), "dns_no_answer");
        let empty = Resolution { rcode: Some("NOERROR"), ..nx.clone() };
        assert_eq!(cause(Some(&empty), Some(&route()), None, &evidence), "dns_no_address");
        assert_eq!(cause(None, None, Some(Outcome::Connected), &evidence), "no_route");
        assert_eq!(cause(None, Some(&route()), None, &evidence), "resolved");
        assert_eq!(cause(None, Some(&route()), Some(Outcome::Connected), &evidence), "reachable");
        assert_eq!(cause(None, Some(&route()), Some(Outcome::Refused), &evidence), "port_closed");
        assert_eq!(cause(None, Some(&route()), Some(Outcome::Unreachable), &evidence), "unreachable");
        assert_eq!(cause(None, Some(&route()), Some(Outcome::TimedOut), &evidence), "no_answer");
    }

    #[test]
    fn a_timeout_is_explained_by_what_the_kernel_counted() {
        let timed_out = |evidence: &Evidence| {
            decide("x", None, Some(&route()), Some(&attempt(Outcome::TimedOut)), evidence)
        };
        let firewall = Evidence {
            drops: vec![("NO_SOCKET".into(), 9), ("NETFILTER_DROP".into(), 2)],
            ..Evidence::default()
        };
        let verdict = timed_out(&firewall);
        assert_eq!(verdict.cause, "firewall_drop");
        assert!(verdict.summary.contains("dropped 2 packets"), "{}", verdict.summary);
        let other = Evidence { drops: vec![("TCP_CSUM".into(), 3)], ..Evidence::default() };
        assert_eq!(timed_out(&other).cause, "dropped");
        let full = Evidence { node_conntrack: [("drop", 1)].into(), ..firewall };
        assert_eq!(timed_out(&full).cause, "conntrack_refused");
    }
}
