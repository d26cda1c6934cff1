//! Network families read from the kernel's maps on each scrape:
//! `kernsight_container_network_{receive,transmit}_{bytes,packets}_total` (cgroup_skb),
//! `kernsight_interface_{packets,bytes}_total` (received) and
//! `kernsight_interface_transmit_{packets,bytes}_total` with `kernsight_interface_tc_info` (TC),
//! or the received ones with `kernsight_interface_xdp_info` (XDP, when configured),
//! `kernsight_tcp_*` and `kernsight_packet_drops_total` / `kernsight_container_packet_drops_total`.

use std::{collections::BTreeMap, sync::Arc};

use kernsight_common::net::{
    DROP_REASON_OTHER, DROP_REASON_UNSPECIFIED, EGRESS, INGRESS, InterfaceKey, NO_SOCKET_CGROUP_ID, Traffic,
    protocol, tcp_event,
};
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder, metrics::MetricType};

use super::{
    LabelNames, Series, encode_counters, encode_gauges,
    histogram::{Latency, encode_histogram},
    naming::CgroupNamer,
};
use crate::{
    bpf::{
        Programs,
        family::Attached as _,
        net::{
            CgroupTrafficMaps, DropMaps, InterfaceMaps, InterfaceSlots, TcInterfaceMaps, TcpMaps,
            read_traffic,
        },
    },
    kernel::{netns::Interface, tracefs_symbols::Symbols},
    metadata::{
        cgroups::Tracker,
        identity::{Resolver, Workload},
    },
};

#[derive(Debug)]
pub struct NetCollector {
    programs: Arc<Programs>,
    tracker: Arc<Tracker>,
    resolver: Arc<Resolver>,
    /// Drop reason numbers → names, from this kernel's `skb/kfree_skb/format`.
    reasons: Symbols,
}

impl NetCollector {
    pub fn new(
        programs: Arc<Programs>,
        tracker: Arc<Tracker>,
        resolver: Arc<Resolver>,
        reasons: Symbols,
    ) -> Self {
        Self { programs, tracker, resolver, reasons }
    }

    fn reason_name(&self, reason: u32) -> String {
        reason_name(&self.reasons, reason)
    }
}

/// A drop reason's label: the kernel's name for its number, `NOT_SPECIFIED` for drops of a
/// kernel that gives no reasons (before 5.17), `other` for numbers past the counted slots.
fn reason_name(names: &Symbols, reason: u32) -> String {
    match names.get(&u64::from(reason)) {
        Some(name) => name.clone(),
        None if reason == DROP_REASON_OTHER => "other".to_owned(),
        None if reason == DROP_REASON_UNSPECIFIED => "NOT_SPECIFIED".to_owned(),
        None => format!("reason_{reason}"),
    }
}

/// The `protocol` label of an interface counter's classification.
pub fn protocol_label(what: u32) -> &'static str {
    match what {
        protocol::IPV4_TCP => "ipv4_tcp",
        protocol::IPV4_UDP => "ipv4_udp",
        protocol::IPV4_ICMP => "ipv4_icmp",
        protocol::IPV4_OTHER => "ipv4_other",
        protocol::IPV6_TCP => "ipv6_tcp",
        protocol::IPV6_UDP => "ipv6_udp",
        protocol::IPV6_ICMP => "ipv6_icmp",
        protocol::IPV6_OTHER => "ipv6_other",
        protocol::ARP => "arp",
        protocol::MALFORMED => "malformed",
        _ => "other",
    }
}

/// The workload of a cgroup id, with the id of "no socket" named as such.
fn workload_of(namer: &mut CgroupNamer, cgroup_id: u64) -> Arc<Workload> {
    if cgroup_id == NO_SOCKET_CGROUP_ID {
        return Arc::new(Workload { cgroup: "no_socket".to_owned(), ..Workload::default() });
    }
    namer.name_without_walk(cgroup_id)
}

impl Collector for NetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut namer = CgroupNamer::new(&self.tracker, &self.resolver);
        let names = LabelNames::of(&self.resolver);
        let traffic = self.programs.family::<CgroupTrafficMaps>();
        self.encode_cgroup_traffic(&mut encoder, traffic.as_deref(), &mut namer, &names)?;
        drop(traffic);
        let tc = self.programs.family::<TcInterfaceMaps>();
        let xdp = self.programs.family::<InterfaceMaps>();
        encode_interfaces(&mut encoder, &self.programs, tc.as_deref(), xdp.as_deref())?;
        drop((tc, xdp));
        let tcp = self.programs.family::<TcpMaps>();
        self.encode_tcp(&mut encoder, tcp.as_deref(), &mut namer, &names)?;
        drop(tcp);
        let drops = self.programs.family::<DropMaps>();
        self.encode_drops(&mut encoder, drops.as_deref(), &mut namer, &names)
    }
}

impl NetCollector {
    fn encode_cgroup_traffic(
        &self,
        encoder: &mut DescriptorEncoder,
        maps: Option<&CgroupTrafficMaps>,
        namer: &mut CgroupNamer,
        names: &LabelNames,
    ) -> Result<(), std::fmt::Error> {
        let Some(maps) = maps else {
            return Ok(());
        };
        let mut series: BTreeMap<(u32, Arc<Workload>), Traffic> = BTreeMap::new();
        let mut add = |direction: u32, cgroup_id: u64, traffic: Traffic| {
            if traffic.packets > 0 {
                let sum = series.entry((direction, namer.name_without_walk(cgroup_id))).or_default();
                sum.packets += traffic.packets;
                sum.bytes += traffic.bytes;
            }
        };
        for (key, traffic) in read_traffic(maps.traffic.map()) {
            add(key.direction, key.cgroup_id, traffic);
        }
        // A cgroup with a slot: its row, and what it counted in the hash before it got the slot.
        let (rows, unreadable) = maps.slots.read();
        self.programs.count_read_errors(unreadable);
        for (cgroup_id, row) in rows {
            add(INGRESS, cgroup_id, row.ingress);
            add(EGRESS, cgroup_id, row.egress);
        }
        for (direction, verb, what) in [(INGRESS, "receive", "received"), (EGRESS, "transmit", "sent")] {
            let rows = || series.iter().filter(move |((d, _), _)| *d == direction);
            encode_counters(
                encoder,
                &format!("kernsight_container_network_{verb}_packets"),
                &format!(
                    "IP packets {what} by the sockets of the workload (cgroup_skb on the cgroup v2 root)"
                ),
                rows().map(|((_, w), t)| (Series::of(w, names), t.packets)),
            )?;
            encode_counters(
                encoder,
                &format!("kernsight_container_network_{verb}_bytes"),
                &format!(
                    "Bytes of the IP packets {what} by the sockets of the workload (IP headers included)"
                ),
                rows().map(|((_, w), t)| (Series::of(w, names), t.bytes)),
            )?;
        }
        Ok(())
    }

    fn encode_tcp(
        &self,
        encoder: &mut DescriptorEncoder,
        maps: Option<&TcpMaps>,
        namer: &mut CgroupNamer,
        names: &LabelNames,
    ) -> Result<(), std::fmt::Error> {
        let Some(maps) = maps else {
            return Ok(());
        };
        let (rows, unreadable) = maps.events.read();
        self.programs.count_read_errors(unreadable);
        let mut events: BTreeMap<(Arc<Workload>, u32), u64> = BTreeMap::new();
        let mut durations: BTreeMap<Arc<Workload>, Latency> = BTreeMap::new();
        for (key, value) in rows.into_iter().filter(|(_, v)| *v > 0) {
            let workload = workload_of(namer, key.cgroup_id);
            if key.event >= tcp_event::DURATION_BUCKETS {
                durations.entry(workload).or_default().add(key.event - tcp_event::DURATION_BUCKETS, value);
            } else {
                *events.entry((workload, key.event)).or_default() += value;
            }
        }
        let of = |wanted: u32| events.iter().filter(move |((_, e), _)| *e == wanted);
        let results = [
            (tcp_event::CONNECTED, "connected"),
            (tcp_event::ACCEPTED, "accepted"),
            (tcp_event::FAILED, "failed"),
        ];
        encode_counters(
            encoder,
            "kernsight_tcp_connections",
            "TCP connections by workload and result: connected (SYN_SENT to ESTABLISHED), accepted (SYN_RECV to ESTABLISHED), failed (SYN_SENT to CLOSE: refused, timed out, unreachable)",
            results.into_iter().flat_map(|(event, result)| {
                of(event).map(move |((w, _), n)| (Series::of(w, names).with("result", result), *n))
            }),
        )?;
        encode_counters(
            encoder,
            "kernsight_tcp_retransmits",
            "TCP segments retransmitted, by workload of the socket (tcp:tcp_retransmit_skb)",
            of(tcp_event::RETRANSMIT).map(|((w, _), n)| (Series::of(w, names), *n)),
        )?;
        let resets = [(tcp_event::RESET_SENT, "sent"), (tcp_event::RESET_RECEIVED, "received")];
        encode_counters(
            encoder,
            "kernsight_tcp_resets",
            "TCP resets sent and received, by workload of the socket (cgroup=\"no_socket\": a reset answering a segment no socket owns, e.g. to a closed port)",
            resets.into_iter().flat_map(|(event, direction)| {
                of(event).map(move |((w, _), n)| (Series::of(w, names).with("direction", direction), *n))
            }),
        )?;
        let mut family = encoder.encode_descriptor(
            "kernsight_tcp_connection_duration_seconds",
            "Lifetime of TCP connections that closed, from the first SYN (outgoing) or the end of the handshake (incoming) to CLOSE, by workload",
            None,
            MetricType::Histogram,
        )?;
        for (workload, latency) in &durations {
            encode_histogram(&mut family, &Series::of(workload, names), latency)?;
        }
        Ok(())
    }

    fn encode_drops(
        &self,
        encoder: &mut DescriptorEncoder,
        maps: Option<&DropMaps>,
        namer: &mut CgroupNamer,
        names: &LabelNames,
    ) -> Result<(), std::fmt::Error> {
        let Some(maps) = maps else {
            return Ok(());
        };
        encode_counters(
            encoder,
            "kernsight_packet_drops",
            "Packets the kernel dropped (skb:kfree_skb), by drop reason as this kernel names it",
            maps.reasons().into_iter().map(|(reason, n)| ([("reason", self.reason_name(reason))], n)),
        )?;
        let (rows, unreadable) = maps.by_cgroup.read();
        self.programs.count_read_errors(unreadable);
        let mut series: BTreeMap<(Arc<Workload>, u32), u64> = BTreeMap::new();
        for (key, value) in rows.into_iter().filter(|(_, v)| *v > 0) {
            *series.entry((namer.name_without_walk(key.cgroup_id), key.reason)).or_default() += value;
        }
        let named: Vec<_> =
            series.iter().map(|((w, reason), &n)| (w, self.reason_name(*reason), n)).collect();
        encode_counters(
            encoder,
            "kernsight_container_packet_drops",
            "Dropped packets whose socket is known (sent by it, or found for it on receive), by workload of the socket and drop reason",
            named.iter().map(|(w, reason, n)| (Series::of(w, names).with("reason", reason), *n)),
        )
    }
}

/// Frames and bytes of one (interface, netns, protocol).
type InterfaceSeries = BTreeMap<(String, String, &'static str), Traffic>;

/// Sums `(ifindex, protocol, traffic)` rows into series named after the watched interfaces
/// (`(ifindex, target)` of those attached); other indexes (the overflow entry) are "other".
fn interface_series(
    rows: impl Iterator<Item = (u32, u32, Traffic)>,
    watched: &[(u32, &Interface)],
) -> InterfaceSeries {
    let name_of = |ifindex: u32| {
        watched
            .iter()
            .find(|(index, _)| *index == ifindex)
            .map(|(_, target)| (target.interface.clone(), target.netns.clone()))
            .unwrap_or_else(|| ("other".to_owned(), String::new()))
    };
    let mut series = InterfaceSeries::new();
    for (ifindex, what, traffic) in rows.filter(|(_, _, t)| t.packets > 0) {
        let (interface, netns) = name_of(ifindex);
        let sum = series.entry((interface, netns, protocol_label(what))).or_default();
        sum.packets += traffic.packets;
        sum.bytes += traffic.bytes;
    }
    series
}

/// The labels of an `_info` gauge per watched interface.
fn info_rows(
    attachments: Vec<(&Interface, &'static str)>,
) -> impl Iterator<Item = ([(&'static str, String); 3], i64)> {
    attachments.into_iter().map(|(target, mode)| {
        ([("interface", target.interface.clone()), ("netns", target.netns.clone()), ("mode", mode.into())], 1)
    })
}

/// Each slot's row as (interface, protocol, direction, counts), to add to what the hash holds
/// (an interface with a slot also counted in the hash before it got it).
fn slot_rows(slots: &InterfaceSlots, programs: &Programs) -> Vec<(u32, u32, u32, Traffic)> {
    let (rows, unreadable) = slots.read();
    programs.count_read_errors(unreadable);
    let mut cells = Vec::new();
    for (ifindex, row) in rows {
        for (protocol, by_direction) in (0..).zip(row.by_protocol) {
            cells.push((ifindex, protocol, INGRESS, by_direction[0]));
            cells.push((ifindex, protocol, EGRESS, by_direction[1]));
        }
    }
    cells
}

/// `kernsight_interface_*`: from the TC family (received and transmitted) or the XDP one
/// (received), whichever is configured.
fn encode_interfaces(
    encoder: &mut DescriptorEncoder,
    programs: &Programs,
    tc: Option<&TcInterfaceMaps>,
    xdp: Option<&InterfaceMaps>,
) -> Result<(), std::fmt::Error> {
    encode_gauges(
        encoder,
        "kernsight_interface_tc_info",
        "Interfaces kernsight watches with TC programs on ingress and egress and how: mode tcx (links, kernel 6.6+), clsact (filters of a clsact qdisc), or failed (see the log); the value is always 1",
        info_rows(
            tc.map(|m| m.attachments.iter().map(|a| (&a.target, a.mode)).collect()).unwrap_or_default(),
        ),
    )?;
    encode_gauges(
        encoder,
        "kernsight_interface_xdp_info",
        "Interfaces kernsight watches with XDP (network.interface_counters = \"xdp\") and how: mode native (in the driver), generic (in the stack), or failed (see the log); the value is always 1",
        info_rows(
            xdp.map(|m| m.attachments.iter().map(|a| (&a.target, a.mode)).collect()).unwrap_or_default(),
        ),
    )?;
    // A family that attached to no interface still lists them (failed), but counts nothing.
    let mut received = InterfaceSeries::new();
    let mut transmitted = InterfaceSeries::new();
    if let Some(maps) = tc.filter(|maps| maps.failure().is_none()) {
        let watched: Vec<(u32, &Interface)> =
            maps.attachments.iter().filter(|a| a.error.is_none()).map(|a| (a.ifindex, &a.target)).collect();
        let mut rows: Vec<(u32, u32, u32, Traffic)> = read_traffic(&maps.traffic)
            .into_iter()
            .map(|(key, traffic)| (key.ifindex, key.protocol, key.direction, traffic))
            .collect();
        rows.extend(slot_rows(&maps.slots, programs));
        for (direction, series) in [(INGRESS, &mut received), (EGRESS, &mut transmitted)] {
            let of_direction = rows.iter().filter(|row| row.2 == direction);
            *series =
                interface_series(of_direction.map(|&(ifindex, what, _, t)| (ifindex, what, t)), &watched);
        }
    }
    if let Some(maps) = xdp.filter(|maps| maps.failure().is_none()) {
        let watched: Vec<(u32, &Interface)> =
            maps.attachments.iter().filter(|a| a.error.is_none()).map(|a| (a.ifindex, &a.target)).collect();
        let mut rows: Vec<(u32, u32, Traffic)> = read_traffic::<InterfaceKey>(&maps.traffic)
            .into_iter()
            .map(|(key, traffic)| (key.ifindex, key.protocol, traffic))
            .collect();
        let in_slots = slot_rows(&maps.slots, programs).into_iter();
        rows.extend(in_slots.filter(|row| row.2 == INGRESS).map(|(ifindex, what, _, t)| (ifindex, what, t)));
        received = interface_series(rows.into_iter(), &watched);
    }
    let labels = |(interface, netns, protocol): &(String, String, &'static str)| {
        [("interface", interface.clone()), ("netns", netns.clone()), ("protocol", (*protocol).to_owned())]
    };
    encode_counters(
        encoder,
        "kernsight_interface_packets",
        "Frames received on the interface, by protocol as kernsight's TC (or XDP) program parsed it (malformed: a header that does not fit in the frame); a GRO packet counts once",
        received.iter().map(|(key, t)| (labels(key), t.packets)),
    )?;
    encode_counters(
        encoder,
        "kernsight_interface_bytes",
        "Bytes of the frames received on the interface (link-layer header included), by protocol",
        received.iter().map(|(key, t)| (labels(key), t.bytes)),
    )?;
    encode_counters(
        encoder,
        "kernsight_interface_transmit_packets",
        "Frames the node sent through the interface, by protocol as kernsight's TC egress program parsed it (TC only: XDP does not see them); a GSO packet counts once",
        transmitted.iter().map(|(key, t)| (labels(key), t.packets)),
    )?;
    encode_counters(
        encoder,
        "kernsight_interface_transmit_bytes",
        "Bytes of the frames the node sent through the interface (link-layer header included), by protocol",
        transmitted.iter().map(|(key, t)| (labels(key), t.bytes)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_named_as_the_kernel_names_them_and_unspecified_without_reasons() {
        let names: Symbols =
            [(2, "NOT_SPECIFIED".to_owned()), (3, "NO_SOCKET".to_owned())].into_iter().collect();
        assert_eq!(reason_name(&names, 3), "NO_SOCKET");
        assert_eq!(reason_name(&names, 7), "reason_7");
        assert_eq!(reason_name(&names, DROP_REASON_OTHER), "other");
        // A kernel without reasons (no names at all) counts every drop in the unspecified slot.
        assert_eq!(reason_name(&Symbols::new(), DROP_REASON_UNSPECIFIED), "NOT_SPECIFIED");
    }
}
