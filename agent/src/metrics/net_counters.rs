//! `kernsight_conntrack_entries` / `_limit` / `_events_total` and `kernsight_interface_kernel_{drops,errors}_total`:
//! the kernel's own counters, read on each scrape in the agent's namespace and in each
//! configured one (`network.namespaces`, and those of `network.interfaces`).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::{encode_counters, encode_gauges};
use crate::kernel::netstat::{self, NamespaceCounters};
use crate::label_filter::LabelFilter;

/// The namespaces whose conntrack table and interface counters are read: the agent's own ("")
/// and each configured one that can be entered now (the others are reported once).
pub fn namespaces(config: &crate::config::Config) -> Vec<String> {
    let from_xdp = config
        .network
        .interfaces
        .iter()
        .filter_map(|entry| crate::kernel::netns::Interface::parse(entry).ok())
        .map(|target| target.netns);
    let mut namespaces = vec![String::new()];
    for netns in config.network.namespaces.iter().cloned().chain(from_xdp) {
        if namespaces.contains(&netns) {
            continue;
        }
        match crate::kernel::netstat::read(&netns) {
            Ok(_) => namespaces.push(netns),
            Err(err) => {
                tracing::warn!("network.namespaces: {err}; its conntrack and interface counters are not read")
            }
        }
    }
    namespaces
}

/// The value of `interface` for the interfaces a filter leaves out (per-pod veths).
pub const OTHER_INTERFACE: &str = "other";

#[derive(Debug)]
pub struct NetCountersCollector {
    /// Namespaces as configured; "" (the agent's own) first.
    namespaces: Vec<String>,
    /// Which interfaces are series of their own (`network.interface_include`/`_exclude`).
    filter: LabelFilter,
    /// The `other` sums, kept monotonic across interfaces that come and go.
    others: Mutex<OtherInterfaces>,
}

/// Counters of the interfaces summed into `interface="other"`. An interface that goes away (a
/// pod's veth) takes its counts with it; they are kept here (as of the last scrape that saw it),
/// so that the sum never goes down and Prometheus sees no reset.
#[derive(Debug, Default)]
struct OtherInterfaces {
    /// (netns, interface) → its counters at the last scrape, for those present then.
    last: HashMap<(String, String), [u64; 4]>,
    /// netns → counts of the interfaces gone (or recreated under the same name) since start.
    retired: HashMap<String, [u64; 4]>,
}

fn counters_of(i: &netstat::InterfaceCounters) -> [u64; 4] {
    [i.rx_dropped, i.tx_dropped, i.rx_errors, i.tx_errors]
}

fn add(sum: &mut [u64; 4], counts: [u64; 4]) {
    for (s, c) in sum.iter_mut().zip(counts) {
        *s = s.saturating_add(c);
    }
}

impl OtherInterfaces {
    /// This scrape's `other` counters per namespace, from the left-out interfaces present now.
    fn update<'a>(
        &mut self,
        present: impl Iterator<Item = (&'a str, &'a netstat::InterfaceCounters)>,
    ) -> BTreeMap<String, [u64; 4]> {
        let mut now: HashMap<(String, String), [u64; 4]> = HashMap::new();
        for (netns, interface) in present {
            now.insert((netns.to_owned(), interface.interface.clone()), counters_of(interface));
        }
        for (key, before) in self.last.drain() {
            match now.get(&key) {
                // Still there and not recreated: its current counters are in the sum below.
                Some(counts) if counts.iter().zip(before).all(|(c, b)| *c >= b) => {}
                // Gone, or a new interface under the name (its counters restarted).
                _ => add(self.retired.entry(key.0).or_default(), before),
            }
        }
        let mut sums: BTreeMap<String, [u64; 4]> =
            self.retired.iter().map(|(netns, counts)| (netns.clone(), *counts)).collect();
        for ((netns, _), counts) in &now {
            add(sums.entry(netns.clone()).or_default(), *counts);
        }
        self.last = now;
        sums
    }
}

impl NetCountersCollector {
    pub fn new(namespaces: Vec<String>, filter: LabelFilter) -> Self {
        Self { namespaces, filter, others: Mutex::default() }
    }
}

impl Collector for NetCountersCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A namespace that went away since start-up is skipped (start-up logged the others).
        let readings: Vec<(&str, NamespaceCounters)> = self
            .namespaces
            .iter()
            .filter_map(|netns| Some((netns.as_str(), netstat::read(netns).ok()?)))
            .collect();
        let conntrack = || readings.iter().filter_map(|(netns, r)| Some((*netns, r.conntrack?)));
        encode_gauges(
            &mut encoder,
            "kernsight_conntrack_entries",
            "Connections in the conntrack table of the network namespace (nf_conntrack_count)",
            conntrack().map(|(netns, (entries, _))| ([("netns", netns)], entries as i64)),
        )?;
        encode_gauges(
            &mut encoder,
            "kernsight_conntrack_limit",
            "Bound of the conntrack table (nf_conntrack_max); past it new connections are dropped",
            conntrack().map(|(netns, (_, limit))| ([("netns", netns)], limit as i64)),
        )?;
        encode_counters(
            &mut encoder,
            "kernsight_conntrack_events",
            "conntrack statistics of the network namespace (/proc/net/stat/nf_conntrack, summed over CPUs): \
             insert_failed, drop and early_drop are connections the table refused or evicted",
            readings.iter().flat_map(|(netns, r)| {
                r.conntrack_events.iter().map(move |(event, n)| ([("netns", *netns), ("event", *event)], *n))
            }),
        )?;
        // Interfaces of their own, then one `other` per namespace for the rest.
        let mut rows: Vec<(String, String, [u64; 4])> = Vec::new();
        let left_out = readings.iter().flat_map(|(netns, r)| {
            r.interfaces.iter().filter(|i| !self.filter.keeps(&i.interface)).map(move |i| (*netns, i))
        });
        let others = match self.others.lock() {
            Ok(mut others) => others.update(left_out),
            Err(poisoned) => poisoned.into_inner().update(left_out),
        };
        for (netns, r) in &readings {
            for i in r.interfaces.iter().filter(|i| self.filter.keeps(&i.interface)) {
                rows.push((i.interface.clone(), (*netns).to_owned(), counters_of(i)));
            }
        }
        rows.extend(others.into_iter().map(|(netns, counts)| (OTHER_INTERFACE.to_owned(), netns, counts)));
        let series = |rx: usize, tx: usize| {
            rows.iter().flat_map(move |(interface, netns, counts)| {
                [("receive", counts[rx]), ("transmit", counts[tx])].map(|(direction, n)| {
                    (
                        [
                            ("interface", interface.clone()),
                            ("netns", netns.clone()),
                            ("direction", direction.into()),
                        ],
                        n,
                    )
                })
            })
        };
        encode_counters(
            &mut encoder,
            "kernsight_interface_kernel_drops",
            "Packets the interface dropped, as the kernel counts them (rx_dropped, tx_dropped); interfaces left \
             out by network.interface_exclude are summed under interface=\"other\"",
            series(0, 1),
        )?;
        encode_counters(
            &mut encoder,
            "kernsight_interface_kernel_errors",
            "Receive and transmit errors of the interface, as the kernel counts them (rx_errors, tx_errors); \
             interfaces left out by network.interface_exclude are summed under interface=\"other\"",
            series(2, 3),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interface(name: &str, rx_dropped: u64) -> netstat::InterfaceCounters {
        netstat::InterfaceCounters {
            interface: name.into(),
            rx_dropped,
            tx_dropped: 1,
            rx_errors: 0,
            tx_errors: 2,
        }
    }

    #[test]
    fn other_keeps_the_counts_of_interfaces_that_went_away() {
        let mut others = OtherInterfaces::default();
        let (a, b) = (interface("veth1", 10), interface("veth2", 5));
        let sums = others.update([("", &a), ("", &b), ("ns1", &a)].into_iter());
        assert_eq!(sums[""], [15, 2, 0, 4]);
        assert_eq!(sums["ns1"], [10, 1, 0, 2]);
        // veth2 is removed; veth1 counts on; a new veth3 comes.
        let (a, c) = (interface("veth1", 12), interface("veth3", 1));
        let sums = others.update([("", &a), ("", &c)].into_iter());
        assert_eq!(sums[""], [5 + 12 + 1, 1 + 1 + 1, 0, 2 + 2 + 2]);
        assert_eq!(sums["ns1"], [10, 1, 0, 2], "ns1's veth1 went away: kept");
        // veth1 recreated under the same name: its counters restart, the sum does not go down.
        let a = interface("veth1", 0);
        let sums = others.update([("", &a), ("", &c)].into_iter());
        assert_eq!(sums[""], [5 + 12 + 1, 1 + 1 + 1 + 1, 0, 2 + 2 + 2 + 2]);
        assert_eq!(others.last.len(), 2, "only the interfaces present are remembered");
    }
}
