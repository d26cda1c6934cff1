//! The four network families, each attached on its own: one that fails (missing capability, no
//! such interface, an old kernel) is reported and leaves the others running.

use std::time::Duration;

use aya::{
    EbpfLoader,
    maps::{MapData, PerCpuArray, PerCpuHashMap},
};
use kernsight_common::{
    counters::{LATENCY_SUM_BUCKET, OVERFLOW_CGROUP_ID, map_full},
    net::{
        CGROUP_DROPS_MAP, CGROUP_TRAFFIC_MAP, CGROUP_TRAFFIC_ROWS_MAP, CGROUP_TRAFFIC_TAGS_MAP,
        DROP_REASON_SLOTS, DROP_REASONS_MAP, DropKey, EGRESS, INGRESS, INGRESS_PLAIN_ADDS_GLOBAL,
        INTERFACE_PLAIN_ADDS_GLOBAL, INTERFACE_TRAFFIC_MAP, InterfaceKey, KFREE_SKB_HAS_REASON_GLOBAL,
        KFREE_SKB_HAS_RX_SK_GLOBAL, RETRANSMIT_HAS_ERR_GLOBAL, SKB_SK_OFFSET_GLOBAL,
        SKB_TCP_GSO_SEGS_OFFSET_GLOBAL, SOCK_CGROUP_DATA_CGROUP_OFFSET_GLOBAL,
        SOCK_CGROUP_DATA_OFFSET_GLOBAL, SOCK_PROTOCOL_OFFSET_GLOBAL, SOCK_STATE_OFFSET_GLOBAL,
        TC_TRAFFIC_MAP, TC_TRAFFIC_ROWS_MAP, TC_TRAFFIC_TAGS_MAP, TCP_EVENTS_MAP, TCP_STARTS_MAP,
        TRAFFIC_SLOT_MASK_GLOBAL, TcTrafficKey, TcpKey, Traffic, TrafficKey, XDP_TRAFFIC_ROWS_MAP,
        XDP_TRAFFIC_TAGS_MAP, cgroup_traffic_slots, protocol, tcp_event,
    },
};

use super::{
    CGROUP_PROBE, CGROUP_PROGRAMS, DROP_PROGRAMS, DROPS_PROBE, InterfaceAttachment, TC_PROBE, TC_PROGRAMS,
    TCP_PROBE, TCP_PROGRAMS, TRAFFIC_AND_DNS_PROGRAMS, TcBackend, TrafficMap, XDP_PROBE, XDP_PROGRAM,
    attach_cgroup, attach_tc, attach_xdp, interface_slots::InterfaceSlots, none_attached, tc::TcLinks,
    traffic_and_dns, traffic_slots::TrafficSlots,
};
use crate::{
    bpf::{
        counters::{CgroupCounters, insert_zeros_if_absent},
        facts::KernelFacts,
        family::{AttachContext, Attached, Family, MapRow, attached_any},
        features::Implementation,
        load_and_attach, take_map,
    },
    config::{Config, InterfaceCounters},
};

/// cgroup_skb, TC and XDP are networking programs: the kernel wants CAP_NET_ADMIN beside CAP_BPF.
pub(crate) fn needs_net_admin() -> Option<String> {
    let granted =
        caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_NET_ADMIN).unwrap_or(false);
    (!granted).then(|| {
        "needs CAP_NET_ADMIN (networking programs): run as root or grant it (the DaemonSet adds NET_ADMIN)"
            .to_owned()
    })
}

/// Both socket families find a socket's cgroup (sock offsets, then the cgroup walk's kn->id).
fn needs_sockets(facts: &KernelFacts) -> Option<String> {
    if let Err(err) = &facts.walk {
        return Some(format!("cannot read a cgroup's id: {err}"));
    }
    facts.sock.as_ref().err().map(|err| format!("cannot read struct sock members: {err}"))
}

fn sock_globals<'a>(loader: &mut EbpfLoader<'a>, facts: &'a KernelFacts) {
    let sock = &facts.offsets.sock;
    loader
        .override_global(SOCK_CGROUP_DATA_OFFSET_GLOBAL, &sock.cgrp_data, true)
        .override_global(SOCK_CGROUP_DATA_CGROUP_OFFSET_GLOBAL, &sock.cgrp_data_cgroup, true)
        .override_global(SOCK_STATE_OFFSET_GLOBAL, &sock.state, true)
        .override_global(SOCK_PROTOCOL_OFFSET_GLOBAL, &sock.protocol, true)
        .override_global(SKB_SK_OFFSET_GLOBAL, &sock.skb_sk, true)
        .override_global(SKB_TCP_GSO_SEGS_OFFSET_GLOBAL, &sock.skb_tcp_gso_segs, true);
}

/// `net_cgroup`: bytes and packets per cgroup, cgroup_skb on the cgroup v2 root.
pub struct CgroupTraffic;

impl Family for CgroupTraffic {
    fn name(&self) -> &'static str {
        CGROUP_PROBE
    }

    fn programs(&self, config: &Config, facts: &KernelFacts) -> Vec<&'static str> {
        if traffic_and_dns(config, facts) { TRAFFIC_AND_DNS_PROGRAMS } else { CGROUP_PROGRAMS }.to_vec()
    }

    fn enabled(&self, config: &Config) -> bool {
        config.network.cgroup_traffic
    }

    fn set_enabled(&self, config: &mut Config, on: bool) {
        config.network.cgroup_traffic = on;
    }

    fn unsupported(&self, _facts: &KernelFacts, _config: &Config) -> Option<String> {
        needs_net_admin()
    }

    fn configure<'a>(&self, loader: &mut EbpfLoader<'a>, facts: &'a KernelFacts, _config: &Config) {
        loader.override_global(TRAFFIC_SLOT_MASK_GLOBAL, &facts.traffic_slot_mask, true).override_global(
            INGRESS_PLAIN_ADDS_GLOBAL,
            &facts.plain_adds_with_bh_off,
            true,
        );
    }

    fn maps(&self) -> &'static [&'static str] {
        &[CGROUP_TRAFFIC_MAP, CGROUP_TRAFFIC_TAGS_MAP, CGROUP_TRAFFIC_ROWS_MAP]
    }

    fn map_entries(&self, config: &Config) -> Vec<(&'static str, u32)> {
        let max_entries = config.network.cgroup_traffic_max_entries;
        let slots = cgroup_traffic_slots(max_entries);
        vec![
            (CGROUP_TRAFFIC_MAP, max_entries),
            (CGROUP_TRAFFIC_TAGS_MAP, slots),
            (CGROUP_TRAFFIC_ROWS_MAP, slots),
        ]
    }

    fn pinned_maps(&self) -> &'static [&'static str] {
        &[CGROUP_TRAFFIC_MAP, CGROUP_TRAFFIC_TAGS_MAP, CGROUP_TRAFFIC_ROWS_MAP]
    }

    fn bounds(&self) -> &'static [(&'static str, u32)] {
        &[(CGROUP_TRAFFIC_MAP, map_full::NET_CGROUP_TRAFFIC)]
    }

    fn attach(&self, cx: &mut AttachContext<'_>) -> anyhow::Result<Box<dyn Attached>> {
        let overflow = [INGRESS, EGRESS].map(|direction| TrafficKey {
            cgroup_id: OVERFLOW_CGROUP_ID,
            direction,
            _pad: 0,
        });
        let capacity = cx.config.network.cgroup_traffic_max_entries;
        let traffic = CgroupCounters::take(cx.ebpf, CGROUP_TRAFFIC_MAP, capacity, overflow)?;
        let slots = TrafficSlots::take(cx.ebpf, cgroup_traffic_slots(capacity))?;
        let root = cx.facts.hierarchies.unified.as_ref();
        let mut fallback_programs = None;
        if !traffic_and_dns(cx.config, cx.facts) {
            attach_cgroup(cx.ebpf, root, CGROUP_PROGRAMS)?;
        } else if let Err(err) = attach_cgroup(cx.ebpf, root, TRAFFIC_AND_DNS_PROGRAMS) {
            // The shared programs are both families' work in one: should the verifier refuse
            // them, each family's own are smaller, and dns attaches its own after this.
            tracing::warn!(
                "the programs net_cgroup shares with dns did not attach ({err:#}): attaching each family's \
                 own, two programs a packet and direction"
            );
            attach_cgroup(cx.ebpf, root, CGROUP_PROGRAMS)?;
            fallback_programs = Some(CGROUP_PROGRAMS.to_vec());
        }
        Ok(Box::new(CgroupTrafficMaps { traffic, slots, fallback_programs }))
    }
}

pub struct CgroupTrafficMaps {
    /// Cgroups without a slot of their own, and what cgroups counted before they got one.
    pub traffic: CgroupCounters<TrafficKey, Traffic>,
    pub slots: TrafficSlots,
    /// Its own programs, when those it shares with dns did not attach.
    fallback_programs: Option<Vec<&'static str>>,
}

impl Attached for CgroupTrafficMaps {
    attached_any!();

    fn programs(&self) -> Option<Vec<&'static str>> {
        self.fallback_programs.clone()
    }

    fn map_rows(&self) -> Vec<MapRow> {
        vec![self.traffic.map_row(), self.slots.map_row()]
    }

    /// Also where slots are given out, to the cgroups the hash holds.
    fn recycle(&mut self, gone_for: &mut dyn FnMut(u64) -> Option<Duration>, grace: Duration) -> usize {
        let removed = self.traffic.recycle(gone_for, grace);
        // The hash's keys in a few batch calls, not a walk of a call a key.
        let mut counted: Vec<u64> = self.traffic.read().0.into_iter().map(|(key, _)| key.cgroup_id).collect();
        counted.sort_unstable();
        counted.dedup();
        match self.slots.maintain(&counted, gone_for, grace) {
            Ok((untagged, given)) if untagged + given > 0 => {
                tracing::debug!(untagged, given, "traffic slots");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!("traffic slots: {err:#}"),
        }
        removed
    }
}

/// Turns one way of counting interfaces on (and with it the other off), or off if it is the
/// one configured.
fn set_interface_counters(config: &mut Config, which: InterfaceCounters, on: bool) {
    let counters = &mut config.network.interface_counters;
    if on {
        *counters = which;
    } else if *counters == which {
        *counters = InterfaceCounters::Off;
    }
}

/// `net_tc`: what arrives on and leaves the node's interfaces, by protocol (the default).
pub struct TcInterfaces;

impl Family for TcInterfaces {
    fn name(&self) -> &'static str {
        TC_PROBE
    }

    fn programs(&self, _config: &Config, _facts: &KernelFacts) -> Vec<&'static str> {
        TC_PROGRAMS.to_vec()
    }

    fn implementation(&self, _facts: &KernelFacts, config: &Config) -> Implementation {
        match TcBackend::chosen(config.network.tc_attach) {
            TcBackend::Tcx => Implementation::standard("tcx"),
            TcBackend::Clsact => Implementation::fallback(
                "clsact",
                "filters of a clsact qdisc (no tcx before kernel 6.6, or network.tc_attach)",
            ),
        }
    }

    fn enabled(&self, config: &Config) -> bool {
        config.network.interface_counters == InterfaceCounters::Tc
    }

    fn set_enabled(&self, config: &mut Config, on: bool) {
        set_interface_counters(config, InterfaceCounters::Tc, on);
    }

    fn unsupported(&self, _facts: &KernelFacts, _config: &Config) -> Option<String> {
        needs_net_admin()
    }

    fn configure<'a>(&self, loader: &mut EbpfLoader<'a>, facts: &'a KernelFacts, _config: &Config) {
        loader.override_global(INTERFACE_PLAIN_ADDS_GLOBAL, &facts.plain_adds_with_bh_off, true);
    }

    fn maps(&self) -> &'static [&'static str] {
        &[TC_TRAFFIC_MAP, TC_TRAFFIC_TAGS_MAP, TC_TRAFFIC_ROWS_MAP]
    }

    fn map_entries(&self, config: &Config) -> Vec<(&'static str, u32)> {
        vec![(TC_TRAFFIC_MAP, config.network.interface_traffic_max_entries)]
    }

    fn pinned_maps(&self) -> &'static [&'static str] {
        &[TC_TRAFFIC_MAP, TC_TRAFFIC_TAGS_MAP, TC_TRAFFIC_ROWS_MAP]
    }

    fn bounds(&self) -> &'static [(&'static str, u32)] {
        &[(TC_TRAFFIC_MAP, map_full::NET_TC_TRAFFIC)]
    }

    fn attach(&self, cx: &mut AttachContext<'_>) -> anyhow::Result<Box<dyn Attached>> {
        let mut traffic: TrafficMap<TcTrafficKey> =
            PerCpuHashMap::try_from(take_map(cx.ebpf, TC_TRAFFIC_MAP)?)?;
        for direction in [INGRESS, EGRESS] {
            for what in 0..protocol::COUNT {
                let overflow = TcTrafficKey { ifindex: 0, protocol: what, direction, _pad: 0 };
                insert_zeros_if_absent(&mut traffic, &overflow)?;
            }
        }
        let backend = TcBackend::chosen(cx.config.network.tc_attach);
        let (attachments, links) = attach_tc(cx.ebpf, &cx.config.network.interfaces, backend)?;
        let watched: Vec<u32> = attachments.iter().filter(|a| a.error.is_none()).map(|a| a.ifindex).collect();
        let slots = InterfaceSlots::claim(cx.ebpf, [TC_TRAFFIC_TAGS_MAP, TC_TRAFFIC_ROWS_MAP], &watched)?;
        let capacity = cx.config.network.interface_traffic_max_entries;
        Ok(Box::new(TcInterfaceMaps { traffic, slots, capacity, attachments, _links: links }))
    }
}

pub struct TcInterfaceMaps {
    /// Interfaces without a slot of their own, and what each counted before it got one.
    pub traffic: TrafficMap<TcTrafficKey>,
    pub slots: InterfaceSlots,
    capacity: u32,
    /// Every configured interface, attached or not (`kernsight_interface_tc_info`).
    pub attachments: Vec<InterfaceAttachment>,
    /// Detaches the programs and removes what the agent added when the state is dropped.
    _links: TcLinks,
}

impl Attached for TcInterfaceMaps {
    attached_any!();

    fn failure(&self) -> Option<String> {
        none_attached(self.attachments.iter().map(|a| (a.target.interface.as_str(), a.error.as_deref())))
    }

    fn map_rows(&self) -> Vec<MapRow> {
        let entries = self.traffic.keys().filter(Result::is_ok).count();
        vec![MapRow { map: TC_TRAFFIC_MAP, entries, capacity: self.capacity }, self.slots.map_row()]
    }
}

/// `net_xdp`: what arrives on the node's interfaces, by protocol, when XDP is configured.
pub struct Interfaces;

impl Family for Interfaces {
    fn name(&self) -> &'static str {
        XDP_PROBE
    }

    fn programs(&self, _config: &Config, _facts: &KernelFacts) -> Vec<&'static str> {
        vec![XDP_PROGRAM]
    }

    fn enabled(&self, config: &Config) -> bool {
        config.network.interface_counters == InterfaceCounters::Xdp
    }

    fn set_enabled(&self, config: &mut Config, on: bool) {
        set_interface_counters(config, InterfaceCounters::Xdp, on);
    }

    fn unsupported(&self, _facts: &KernelFacts, _config: &Config) -> Option<String> {
        needs_net_admin()
    }

    fn configure<'a>(&self, loader: &mut EbpfLoader<'a>, facts: &'a KernelFacts, _config: &Config) {
        loader.override_global(INTERFACE_PLAIN_ADDS_GLOBAL, &facts.plain_adds_with_bh_off, true);
    }

    fn maps(&self) -> &'static [&'static str] {
        &[INTERFACE_TRAFFIC_MAP, XDP_TRAFFIC_TAGS_MAP, XDP_TRAFFIC_ROWS_MAP]
    }

    fn map_entries(&self, config: &Config) -> Vec<(&'static str, u32)> {
        vec![(INTERFACE_TRAFFIC_MAP, config.network.interface_traffic_max_entries)]
    }

    fn pinned_maps(&self) -> &'static [&'static str] {
        &[INTERFACE_TRAFFIC_MAP, XDP_TRAFFIC_TAGS_MAP, XDP_TRAFFIC_ROWS_MAP]
    }

    fn bounds(&self) -> &'static [(&'static str, u32)] {
        &[(INTERFACE_TRAFFIC_MAP, map_full::NET_INTERFACE_TRAFFIC)]
    }

    fn attach(&self, cx: &mut AttachContext<'_>) -> anyhow::Result<Box<dyn Attached>> {
        let mut traffic: TrafficMap<InterfaceKey> =
            PerCpuHashMap::try_from(take_map(cx.ebpf, INTERFACE_TRAFFIC_MAP)?)?;
        for what in 0..protocol::COUNT {
            insert_zeros_if_absent(&mut traffic, &InterfaceKey { ifindex: 0, protocol: what })?;
        }
        let attachments = attach_xdp(cx.ebpf, &cx.config.network.interfaces)?;
        let watched: Vec<u32> = attachments.iter().filter(|a| a.error.is_none()).map(|a| a.ifindex).collect();
        let slots = InterfaceSlots::claim(cx.ebpf, [XDP_TRAFFIC_TAGS_MAP, XDP_TRAFFIC_ROWS_MAP], &watched)?;
        let capacity = cx.config.network.interface_traffic_max_entries;
        Ok(Box::new(InterfaceMaps { traffic, slots, capacity, attachments }))
    }
}

pub struct InterfaceMaps {
    /// Interfaces without a slot of their own, and what each counted before it got one.
    pub traffic: TrafficMap<InterfaceKey>,
    /// Their rows' ingress column.
    pub slots: InterfaceSlots,
    capacity: u32,
    /// Every configured interface, attached or not (the failed ones stay listed:
    /// `kernsight_interface_xdp_info{mode="failed"}`).
    pub attachments: Vec<InterfaceAttachment>,
}

impl Attached for InterfaceMaps {
    attached_any!();

    fn failure(&self) -> Option<String> {
        none_attached(self.attachments.iter().map(|a| (a.target.interface.as_str(), a.error.as_deref())))
    }

    fn map_rows(&self) -> Vec<MapRow> {
        let entries = self.traffic.keys().filter(Result::is_ok).count();
        vec![MapRow { map: INTERFACE_TRAFFIC_MAP, entries, capacity: self.capacity }, self.slots.map_row()]
    }
}

/// `tcp`: connection results, retransmits, resets and durations per cgroup.
pub struct Tcp;

impl Family for Tcp {
    fn name(&self) -> &'static str {
        TCP_PROBE
    }

    fn programs(&self, _config: &Config, _facts: &KernelFacts) -> Vec<&'static str> {
        TCP_PROGRAMS.iter().map(|(p, _)| *p).collect()
    }

    fn enabled(&self, config: &Config) -> bool {
        config.network.tcp
    }

    fn set_enabled(&self, config: &mut Config, on: bool) {
        config.network.tcp = on;
    }

    fn unsupported(&self, facts: &KernelFacts, _config: &Config) -> Option<String> {
        needs_sockets(facts)
    }

    fn configure<'a>(&self, loader: &mut EbpfLoader<'a>, facts: &'a KernelFacts, _config: &Config) {
        sock_globals(loader, facts);
        loader.override_global(RETRANSMIT_HAS_ERR_GLOBAL, &facts.retransmit_has_err, true);
    }

    fn maps(&self) -> &'static [&'static str] {
        &[TCP_EVENTS_MAP, TCP_STARTS_MAP]
    }

    fn map_entries(&self, config: &Config) -> Vec<(&'static str, u32)> {
        vec![
            (TCP_EVENTS_MAP, config.network.tcp_max_entries),
            (TCP_STARTS_MAP, config.network.tcp_tracked_connections),
        ]
    }

    fn pinned_maps(&self) -> &'static [&'static str] {
        &[TCP_EVENTS_MAP]
    }

    fn bounds(&self) -> &'static [(&'static str, u32)] {
        &[(TCP_EVENTS_MAP, map_full::NET_TCP_EVENTS)]
    }

    fn attach(&self, cx: &mut AttachContext<'_>) -> anyhow::Result<Box<dyn Attached>> {
        let overflow = (0..=tcp_event::RESET_RECEIVED)
            .chain((0..=LATENCY_SUM_BUCKET).map(|bucket| tcp_event::DURATION_BUCKETS + bucket))
            .map(|event| TcpKey { cgroup_id: OVERFLOW_CGROUP_ID, event, _pad: 0 });
        let events =
            CgroupCounters::take(cx.ebpf, TCP_EVENTS_MAP, cx.config.network.tcp_max_entries, overflow)?;
        load_and_attach(cx.ebpf, cx.btf, &TCP_PROGRAMS)?;
        Ok(Box::new(TcpMaps { events }))
    }
}

pub struct TcpMaps {
    pub events: CgroupCounters<TcpKey>,
}

impl Attached for TcpMaps {
    attached_any!();

    fn map_rows(&self) -> Vec<MapRow> {
        vec![self.events.map_row()]
    }

    fn recycle(&mut self, gone_for: &mut dyn FnMut(u64) -> Option<Duration>, grace: Duration) -> usize {
        self.events.recycle(gone_for, grace)
    }
}

/// `packet_drops`: the kernel's dropped packets by reason, node-wide and per cgroup.
pub struct Drops;

impl Family for Drops {
    fn name(&self) -> &'static str {
        DROPS_PROBE
    }

    fn programs(&self, _config: &Config, _facts: &KernelFacts) -> Vec<&'static str> {
        DROP_PROGRAMS.iter().map(|(p, _)| *p).collect()
    }

    fn enabled(&self, config: &Config) -> bool {
        config.network.drops
    }

    fn set_enabled(&self, config: &mut Config, on: bool) {
        config.network.drops = on;
    }

    fn unsupported(&self, facts: &KernelFacts, _config: &Config) -> Option<String> {
        needs_sockets(facts)
    }

    fn implementation(&self, facts: &KernelFacts, config: &Config) -> Implementation {
        if facts.kfree_skb_has_reason {
            return Implementation::standard("standard");
        }
        Implementation::fallback(
            "without_reasons",
            format!(
                "every drop counts as NOT_SPECIFIED: {} has no reason field (drop reasons need kernel 5.17; \
                 is tracefs mounted at paths.tracefs?)",
                config.paths.tracefs.join("events/skb/kfree_skb/format").display()
            ),
        )
    }

    fn configure<'a>(&self, loader: &mut EbpfLoader<'a>, facts: &'a KernelFacts, _config: &Config) {
        sock_globals(loader, facts);
        let has_reason: &'static u32 = if facts.kfree_skb_has_reason { &1 } else { &0 };
        loader.override_global(KFREE_SKB_HAS_REASON_GLOBAL, has_reason, true).override_global(
            KFREE_SKB_HAS_RX_SK_GLOBAL,
            &facts.kfree_skb_has_rx_sk,
            true,
        );
    }

    fn maps(&self) -> &'static [&'static str] {
        &[DROP_REASONS_MAP, CGROUP_DROPS_MAP]
    }

    fn map_entries(&self, config: &Config) -> Vec<(&'static str, u32)> {
        vec![(CGROUP_DROPS_MAP, config.network.drop_max_entries)]
    }

    fn pinned_maps(&self) -> &'static [&'static str] {
        &[DROP_REASONS_MAP, CGROUP_DROPS_MAP]
    }

    fn bounds(&self) -> &'static [(&'static str, u32)] {
        &[(CGROUP_DROPS_MAP, map_full::NET_CGROUP_DROPS)]
    }

    fn attach(&self, cx: &mut AttachContext<'_>) -> anyhow::Result<Box<dyn Attached>> {
        let reasons = PerCpuArray::try_from(take_map(cx.ebpf, DROP_REASONS_MAP)?)?;
        let overflow =
            (0..DROP_REASON_SLOTS).map(|reason| DropKey { cgroup_id: OVERFLOW_CGROUP_ID, reason, _pad: 0 });
        let by_cgroup =
            CgroupCounters::take(cx.ebpf, CGROUP_DROPS_MAP, cx.config.network.drop_max_entries, overflow)?;
        load_and_attach(cx.ebpf, cx.btf, &DROP_PROGRAMS)?;
        Ok(Box::new(DropMaps { reasons, by_cgroup }))
    }
}

pub struct DropMaps {
    reasons: PerCpuArray<MapData, u64>,
    pub by_cgroup: CgroupCounters<DropKey>,
}

impl DropMaps {
    /// Drops per reason number (summed over CPUs), non-zero ones only.
    pub fn reasons(&self) -> Vec<(u32, u64)> {
        (0..DROP_REASON_SLOTS)
            .filter_map(|reason| {
                let total: u64 = self.reasons.get(&reason, 0).ok()?.iter().sum();
                (total > 0).then_some((reason, total))
            })
            .collect()
    }
}

impl Attached for DropMaps {
    attached_any!();

    fn map_rows(&self) -> Vec<MapRow> {
        vec![self.by_cgroup.map_row()]
    }

    fn recycle(&mut self, gone_for: &mut dyn FnMut(u64) -> Option<Duration>, grace: Duration) -> usize {
        self.by_cgroup.recycle(gone_for, grace)
    }
}
