//! Per-cgroup traffic: `cgroup_skb` programs on the ingress and egress of the cgroup v2 root
//! see every packet a socket of any descendant cgroup receives or sends, whatever network
//! namespace the socket lives in. `skb->len` there is the IP packet (headers included, no
//! link-layer header). The programs always return 1: kernsight observes, it never filters.
//!
//! A packet counts in its cgroup's slot, a per-CPU array row found by masking the cgroup id,
//! when the slot's tag names the cgroup (the agent claims slots for the cgroups it finds in the
//! hash); else in the per-CPU hash by (cgroup, direction). The row costs an inlined array
//! lookup where the hash costs a hash of the key and a bucket walk: 11 ns of the 60 a run took
//! (docs/performance.md, "Traffic counted in slots").

use aya_ebpf::{
    EbpfContext as _,
    bindings::__sk_buff,
    helpers::bpf_skb_cgroup_id,
    macros::{cgroup_skb, map},
    maps::{Array, PerCpuArray, PerCpuHashMap},
    programs::SkBuffContext,
};
use kernsight_common::{
    counters::{OVERFLOW_CGROUP_ID, map_full},
    net::{
        DEFAULT_CGROUP_TRAFFIC_ENTRIES, EGRESS, INGRESS, Traffic, TrafficKey, TrafficRow,
        cgroup_traffic_slots,
    },
};

use super::{add_packet, add_traffic};
use crate::task::global;

#[map]
static NET_CGROUP_TRAFFIC: PerCpuHashMap<TrafficKey, Traffic> =
    PerCpuHashMap::with_max_entries(DEFAULT_CGROUP_TRAFFIC_ENTRIES, 0);

const DEFAULT_SLOTS: u32 = cgroup_traffic_slots(DEFAULT_CGROUP_TRAFFIC_ENTRIES);

#[map]
static NET_TRAFFIC_TAGS: Array<u64> = Array::with_max_entries(DEFAULT_SLOTS, 0);

#[map]
static NET_TRAFFIC_ROWS: PerCpuArray<TrafficRow> = PerCpuArray::with_max_entries(DEFAULT_SLOTS, 0);

/// Slots less one, set by the agent to match the maps' size.
#[unsafe(no_mangle)]
static TRAFFIC_SLOT_MASK: u64 = (DEFAULT_SLOTS - 1) as u64;

/// 1 where the ingress program adds to its slot's counters with plain adds: cgroup_skb ingress
/// runs in the receive softirq or with bottom halves off (`sk_filter` from the protocols'
/// receive paths), which one CPU runs one at a time, and nothing else writes a row's ingress
/// counters. Not on PREEMPT_RT kernels, where a section with bottom halves off can be preempted
/// by another; the egress program runs in process context too, and always adds atomically. An
/// atomic add cost the ingress program 6 ns of its 49 (docs/performance.md).
#[unsafe(no_mangle)]
static INGRESS_PLAIN_ADDS: u8 = 0;

/// Adds the packet to the row of `cgroup_id`'s slot if the slot is the cgroup's; false if not.
#[inline(always)]
fn count_in_slot(cgroup_id: u64, direction: u32, bytes: u64) -> bool {
    let slot = (cgroup_id & global(&TRAFFIC_SLOT_MASK)) as u32;
    let Some(tag) = NET_TRAFFIC_TAGS.get(slot) else { return false };
    // SAFETY: a value of the map; an aligned u64 read whole. A free slot's tag is 0, the id of
    // a packet without a socket's cgroup, which counts in the hash's overflow key.
    if unsafe { core::ptr::read_volatile(tag) } != cgroup_id || cgroup_id == OVERFLOW_CGROUP_ID {
        return false;
    }
    let Some(row) = NET_TRAFFIC_ROWS.get_ptr_mut(slot) else { return false };
    // SAFETY: this CPU's row; adds are atomic but where `INGRESS_PLAIN_ADDS` says why they
    // need not be.
    unsafe {
        let traffic = if direction == INGRESS { &raw mut (*row).ingress } else { &raw mut (*row).egress };
        add_packet(traffic, bytes, direction == INGRESS && global(&INGRESS_PLAIN_ADDS) != 0);
    }
    true
}

/// Allow: the verdict `cgroup_skb` programs return to let the packet through.
pub(super) const ALLOW: i32 = 1;

/// Counts the packet under its socket's cgroup (also called by `traffic_and_dns`).
#[inline(always)]
pub(super) fn count(ctx: &SkBuffContext, direction: u32) {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: the program's own context.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    let bytes = ctx.skb.len().into();
    if count_in_slot(cgroup_id, direction, bytes) {
        return;
    }
    let key = TrafficKey { cgroup_id, direction, _pad: 0 };
    let overflow = || TrafficKey { cgroup_id: OVERFLOW_CGROUP_ID, direction, _pad: 0 };
    add_traffic(&NET_CGROUP_TRAFFIC, &key, overflow, map_full::NET_CGROUP_TRAFFIC, bytes);
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
