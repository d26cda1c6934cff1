//! Per-interface traffic by protocol: an XDP program on each interface the agent watches,
//! counting frames and bytes (link-layer frame length) by what `parse::classify` finds.
//! A frame counts in its interface's slot (`interface_slots`, the ingress column) or, when the
//! interface has none, in the per-CPU hash by (interface, protocol). It always returns
//! `XDP_PASS`: kernsight observes, it never filters.

use aya_ebpf::{
    bindings::xdp_action::XDP_PASS,
    macros::{map, xdp},
    maps::{Array, PerCpuArray, PerCpuHashMap},
    programs::XdpContext,
};
use kernsight_common::{
    counters::map_full,
    net::{DEFAULT_INTERFACE_TRAFFIC_ENTRIES, INGRESS, INTERFACE_SLOTS, InterfaceKey, InterfaceRow, Traffic},
};

use super::{add_traffic, interface_slots::count_in_slot, parse::classify};

#[map]
static NET_INTERFACE_TRAFFIC: PerCpuHashMap<InterfaceKey, Traffic> =
    PerCpuHashMap::with_max_entries(DEFAULT_INTERFACE_TRAFFIC_ENTRIES, 0);

#[map]
static NET_XDP_TAGS: Array<u32> = Array::with_max_entries(INTERFACE_SLOTS, 0);

#[map]
static NET_XDP_ROWS: PerCpuArray<InterfaceRow> = PerCpuArray::with_max_entries(INTERFACE_SLOTS, 0);

#[xdp]
pub fn ks_net_xdp(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    let protocol = classify(start, end, end);
    let ifindex = ctx.ingress_ifindex() as u32;
    let bytes = end.saturating_sub(start) as u64;
    if count_in_slot(&NET_XDP_TAGS, &NET_XDP_ROWS, ifindex, protocol, INGRESS, bytes) {
        return XDP_PASS;
    }
    let key = InterfaceKey { ifindex, protocol };
    let overflow = || InterfaceKey { ifindex: 0, protocol };
    add_traffic(&NET_INTERFACE_TRAFFIC, &key, overflow, map_full::NET_INTERFACE_TRAFFIC, bytes);
    XDP_PASS
}
