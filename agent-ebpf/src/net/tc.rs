//! Per-interface traffic by direction and protocol: a TC program on the ingress and one on the
//! egress of each interface the agent watches (tcx links where the kernel has them, a clsact
//! filter otherwise), counting frames and bytes by what `parse::classify` finds. Unlike XDP in
//! generic mode, TC asks nothing of the driver (no GRO_HW change, no kernel warning), and it
//! sees what the node sends too.
//!
//! A frame counts in its interface's slot (`interface_slots`) or, when the interface has
//! none, in the per-CPU hash by (interface, protocol, direction).
//!
//! The programs return `TC_ACT_UNSPEC` ("no verdict"): the packet goes on unchanged to the
//! programs and filters after them and then on its way. `TC_ACT_OK` would end the chain there
//! (a tcx `TCX_PASS`, or a matching clsact filter), so a CNI's own programs attached after
//! kernsight's would no longer run.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, TC_ACT_UNSPEC},
    macros::{classifier, map},
    maps::{Array, PerCpuArray, PerCpuHashMap},
    programs::TcContext,
};
use kernsight_common::{
    counters::map_full,
    net::{
        DEFAULT_INTERFACE_TRAFFIC_ENTRIES, EGRESS, INGRESS, INTERFACE_SLOTS, InterfaceRow, TcTrafficKey,
        Traffic,
    },
};

use super::{add_traffic, interface_slots::count_in_slot, parse::classify};

#[map]
static NET_TC_TRAFFIC: PerCpuHashMap<TcTrafficKey, Traffic> =
    PerCpuHashMap::with_max_entries(DEFAULT_INTERFACE_TRAFFIC_ENTRIES, 0);

#[map]
static NET_TC_TAGS: Array<u32> = Array::with_max_entries(INTERFACE_SLOTS, 0);

#[map]
static NET_TC_ROWS: PerCpuArray<InterfaceRow> = PerCpuArray::with_max_entries(INTERFACE_SLOTS, 0);

/// Longest frame the length checks need: an IP packet's own length is at most 0xffff, after at
/// most 22 bytes of Ethernet and VLAN headers. A longer (GSO) frame is clamped to it, which
/// keeps the frame's end a packet pointer with a bounded offset for the verifier.
const MAX_CHECKED_FRAME: u32 = 0x1_ffff;

#[inline(always)]
fn count(ctx: &TcContext, direction: u32) {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: the program's own context; `ifindex` is readable by TC programs.
    let ifindex = unsafe { (*skb).ifindex };
    let len = ctx.len();
    let (start, end) = (ctx.data(), ctx.data_end());
    let checked = if len > MAX_CHECKED_FRAME { MAX_CHECKED_FRAME } else { len };
    let protocol = classify(start, end, start + checked as usize);
    if count_in_slot(&NET_TC_TAGS, &NET_TC_ROWS, ifindex, protocol, direction, len.into()) {
        return;
    }
    let key = TcTrafficKey { ifindex, protocol, direction, _pad: 0 };
    let overflow = || TcTrafficKey { ifindex: 0, protocol, direction, _pad: 0 };
    add_traffic(&NET_TC_TRAFFIC, &key, overflow, map_full::NET_TC_TRAFFIC, len.into());
}

#[classifier]
pub fn ks_net_tc_ingress(ctx: TcContext) -> i32 {
    count(&ctx, INGRESS);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn ks_net_tc_egress(ctx: TcContext) -> i32 {
    count(&ctx, EGRESS);
    TC_ACT_UNSPEC
}
