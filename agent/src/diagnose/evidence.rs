//! What the kernel counted while `diagnose` tried: the workload namespace's TCP counters
//! (`/proc/PID/net/snmp`) and conntrack statistics, the node's conntrack statistics, and the
//! drop reasons the agent's `drops` family counted on the node. A snapshot before the attempt,
//! one after; the evidence is what rose in between.

use std::{collections::BTreeMap, path::Path};

use serde::Serialize;

use crate::{kernel::conntrack, metrics::client};

/// TCP counters of `/proc/net/snmp` that speak of a failing connect.
const TCP_COUNTERS: [&str; 5] = ["AttemptFails", "RetransSegs", "OutRsts", "EstabResets", "InErrs"];

/// Counters at one moment.
#[derive(Debug)]
pub struct Snapshot {
    tcp: BTreeMap<&'static str, u64>,
    pod_conntrack: BTreeMap<&'static str, u64>,
    node_conntrack: BTreeMap<&'static str, u64>,
    /// `kernsight_packet_drops_total` by reason; `Err` says why the agent could not be read.
    drops: Result<BTreeMap<String, u64>, String>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self {
            tcp: BTreeMap::new(),
            pod_conntrack: BTreeMap::new(),
            node_conntrack: BTreeMap::new(),
            drops: Ok(BTreeMap::new()),
        }
    }
}

/// What rose during the attempt (zero rises left out).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// Kernel drop reasons on the node, most packets first.
    pub drops: Vec<(String, u64)>,
    /// Why there are no drop figures (no agent to read), if so.
    pub drops_unknown: Option<String>,
    /// The workload namespace's TCP counters.
    pub tcp: BTreeMap<&'static str, u64>,
    /// conntrack statistics of the workload's namespace and of the node's.
    pub pod_conntrack: BTreeMap<&'static str, u64>,
    pub node_conntrack: BTreeMap<&'static str, u64>,
}

impl Snapshot {
    /// Reads the counters of the namespace of `pid` and the node's; `agent` is the running
    /// agent to ask for drop reasons.
    pub fn take(proc_root: &Path, pid: u32, agent: Option<&str>) -> Self {
        let net = proc_root.join(pid.to_string()).join("net");
        let snmp = std::fs::read_to_string(net.join("snmp")).unwrap_or_default();
        Self {
            tcp: snmp_tcp(&snmp),
            pod_conntrack: conntrack::read_process_events(proc_root, pid),
            node_conntrack: conntrack::read_stats().unwrap_or_default(),
            drops: match agent {
                None => Err("no agent to read drop reasons from".into()),
                Some(address) => client::fetch(address)
                    .map(|body| drops_by_reason(&client::parse(&body)))
                    .map_err(|err| format!("agent at {address}: {err}")),
            },
        }
    }

    /// What rose from `before` to this snapshot.
    pub fn since(&self, before: &Snapshot) -> Evidence {
        let (drops, drops_unknown) = match (&before.drops, &self.drops) {
            (Ok(b), Ok(a)) => {
                let mut rose: Vec<(String, u64)> = rises(a, b).collect();
                rose.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
                (rose, None)
            }
            (Err(why), _) | (_, Err(why)) => (Vec::new(), Some(why.clone())),
        };
        Evidence {
            drops,
            drops_unknown,
            tcp: rises(&self.tcp, &before.tcp).collect(),
            pod_conntrack: rises(&self.pod_conntrack, &before.pod_conntrack).collect(),
            node_conntrack: rises(&self.node_conntrack, &before.node_conntrack).collect(),
        }
    }
}

/// The counters of `after` that rose from `before`, by how much (a counter new in `after` rose
/// from 0).
fn rises<'a, K: Ord + Clone>(
    after: &'a BTreeMap<K, u64>,
    before: &'a BTreeMap<K, u64>,
) -> impl Iterator<Item = (K, u64)> + 'a {
    after.iter().filter_map(|(k, v)| {
        Some((k.clone(), v.checked_sub(*before.get(k).unwrap_or(&0)).filter(|d| *d > 0)?))
    })
}

/// The `Tcp:` header and value lines of `/proc/net/snmp`, for `TCP_COUNTERS`.
fn snmp_tcp(text: &str) -> BTreeMap<&'static str, u64> {
    let mut rows = text.lines().filter_map(|line| line.strip_prefix("Tcp:"));
    let (Some(names), Some(values)) = (rows.next(), rows.next()) else { return BTreeMap::new() };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter_map(|(name, value)| {
            let known = TCP_COUNTERS.iter().find(|c| **c == name)?;
            Some((*known, value.parse().ok()?))
        })
        .collect()
}

/// `kernsight_packet_drops_total` summed by reason.
fn drops_by_reason(samples: &[client::Sample]) -> BTreeMap<String, u64> {
    let mut reasons = BTreeMap::new();
    for sample in samples.iter().filter(|s| s.name == "kernsight_packet_drops_total") {
        if let Some(reason) = sample.labels.get("reason") {
            *reasons.entry(reason.to_string()).or_default() += sample.value as u64;
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_rose_between_two_snapshots() {
        let snmp = "Tcp: RtoAlgorithm AttemptFails RetransSegs OutRsts\nTcp: 1 3 10 0\n";
        assert_eq!(snmp_tcp(snmp), [("AttemptFails", 3), ("RetransSegs", 10), ("OutRsts", 0)].into());
        let before = Snapshot {
            tcp: snmp_tcp(snmp),
            drops: Ok([("NO_SOCKET".to_owned(), 5), ("NETFILTER_DROP".to_owned(), 1)].into()),
            ..Snapshot::default()
        };
        let after = Snapshot {
            tcp: snmp_tcp("Tcp: RtoAlgorithm AttemptFails RetransSegs OutRsts\nTcp: 1 4 12 0\n"),
            drops: Ok([("NO_SOCKET".to_owned(), 6), ("NETFILTER_DROP".to_owned(), 4)].into()),
            node_conntrack: [("drop", 2)].into(),
            ..Snapshot::default()
        };
        let evidence = after.since(&before);
        assert_eq!(evidence.drops, vec![("NETFILTER_DROP".to_owned(), 3), ("NO_SOCKET".to_owned(), 1)]);
        assert_eq!(evidence.tcp, [("AttemptFails", 1), ("RetransSegs", 2)].into());
        assert_eq!(evidence.node_conntrack, [("drop", 2)].into());
        let blind = Snapshot { drops: Err("no agent".into()), ..Snapshot::default() };
        assert_eq!(blind.since(&before).drops_unknown.as_deref(), Some("no agent"));
    }
}
