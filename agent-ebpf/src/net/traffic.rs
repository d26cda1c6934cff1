//! Per-cgroup traffic: `cgroup_skb` programs on the ingress and egress of the cgroup v2 root
//! see every packet a socket of any descendant cgroup receives or sends, whatever network
//! namespace the socket lives in. `skb->len` there is the IP packet (headers included, no
//! link-layer header). The programs always return 1: kernsight observes, it never filters.

use aya_ebpf::{
    EbpfContext as _,
    bindings::__sk_buff,
    helpers::bpf_skb_cgroup_id,
    macros::{cgroup_skb, map},
    maps::PerCpuHashMap,
    programs::SkBuffContext,
};
use kernsight_common::{
    counters::{OVERFLOW_CGROUP_ID, map_full},
    net::{DEFAULT_CGROUP_TRAFFIC_ENTRIES, EGRESS, INGRESS, Traffic, TrafficKey},
};

use super::add_traffic;

#[map]
static NET_CGROUP_TRAFFIC: PerCpuHashMap<TrafficKey, Traffic> =
    PerCpuHashMap::with_max_entries(DEFAULT_CGROUP_TRAFFIC_ENTRIES, 0);

/// Allow: the verdict `cgroup_skb` programs return to let the packet through.
pub(super) const ALLOW: i32 = 1;

/// Counts the packet under its socket's cgroup (also called by `traffic_and_dns`).
#[inline(always)]
pub(super) fn count(ctx: &SkBuffContext, direction: u32) {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: the program's own context.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    let key = TrafficKey { cgroup_id, direction, _pad: 0 };
    let overflow = || TrafficKey { cgroup_id: OVERFLOW_CGROUP_ID, direction, _pad: 0 };
    add_traffic(&NET_CGROUP_TRAFFIC, &key, overflow, map_full::NET_CGROUP_TRAFFIC, ctx.skb.len().into());
}

#[cgroup_skb(ingress)]
pub fn ks_net_ingress(ctx: SkBuffContext) -> i32 {
    count(&ctx, INGRESS);
    ALLOW
}

#[cgroup_skb(egress)]
pub fn ks_net_egress(ctx: SkBuffContext) -> i32 {
    count(&ctx, EGRESS);
    ALLOW
}
