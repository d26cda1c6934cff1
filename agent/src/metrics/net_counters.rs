//! `kernsight_conntrack_entries` / `_limit` and `kernsight_interface_kernel_{drops,errors}_total`:
//! the kernel's own counters, read on each scrape in the agent's namespace and in each
//! configured one (`network.namespaces`, and those of `network.xdp_interfaces`).

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::{encode_counters, encode_gauges};
use crate::kernel::netstat::{self, NamespaceCounters};

/// The namespaces whose conntrack table and interface counters are read: the agent's own ("")
/// and each configured one that can be entered now (the others are reported once).
pub fn namespaces(config: &crate::config::Config) -> Vec<String> {
    let from_xdp = config
        .network
        .xdp_interfaces
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

#[derive(Debug)]
pub struct NetCountersCollector {
    /// Namespaces as configured; "" (the agent's own) first.
    namespaces: Vec<String>,
}

impl NetCountersCollector {
    pub fn new(namespaces: Vec<String>) -> Self {
        Self { namespaces }
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
        let rows = |rx: fn(&netstat::InterfaceCounters) -> u64,
                    tx: fn(&netstat::InterfaceCounters) -> u64| {
            readings.iter().flat_map(move |(netns, r)| {
                r.interfaces.iter().flat_map(move |i| {
                    [("receive", rx(i)), ("transmit", tx(i))].map(|(direction, n)| {
                        (
                            [
                                ("interface", i.interface.clone()),
                                ("netns", (*netns).to_owned()),
                                ("direction", direction.into()),
                            ],
                            n,
                        )
                    })
                })
            })
        };
        encode_counters(
            &mut encoder,
            "kernsight_interface_kernel_drops",
            "Packets the interface dropped, as the kernel counts them (rx_dropped, tx_dropped)",
            rows(|i| i.rx_dropped, |i| i.tx_dropped),
        )?;
        encode_counters(
            &mut encoder,
            "kernsight_interface_kernel_errors",
            "Receive and transmit errors of the interface, as the kernel counts them (rx_errors, tx_errors)",
            rows(|i| i.rx_errors, |i| i.tx_errors),
        )
    }
}
