//! Per-interface traffic by protocol: an XDP program on each interface the agent watches,
//! counting frames and bytes (link-layer frame length) by what `parse::classify` finds.
//! It always returns `XDP_PASS`: kernsight observes, it never filters.

use aya_ebpf::{
    bindings::xdp_action::XDP_PASS,
    macros::{map, xdp},
    maps::PerCpuHashMap,
    programs::XdpContext,
};
use kernsight_common::{
    counters::map_full,
    net::{DEFAULT_INTERFACE_TRAFFIC_ENTRIES, InterfaceKey, Traffic},
};

use super::{add_traffic, parse::classify};

#[map]
static NET_INTERFACE_TRAFFIC: PerCpuHashMap<InterfaceKey, Traffic> =
    PerCpuHashMap::with_max_entries(DEFAULT_INTERFACE_TRAFFIC_ENTRIES, 0);

#[xdp]
pub fn ks_net_xdp(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    let protocol = classify(start, end, end);
    let key = InterfaceKey { ifindex: ctx.ingress_ifindex() as u32, protocol };
    let overflow = || InterfaceKey { ifindex: 0, protocol };
    let bytes = end.saturating_sub(start) as u64;
    add_traffic(&NET_INTERFACE_TRAFFIC, &key, overflow, map_full::NET_INTERFACE_TRAFFIC, bytes);
    XDP_PASS
}
