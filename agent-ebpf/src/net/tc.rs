//! Per-interface traffic by direction and protocol: a TC program on the ingress and one on the
//! egress of each interface the agent watches (tcx links where the kernel has them, a clsact
//! filter otherwise), counting frames and bytes by what `parse::classify` finds. Unlike XDP in
//! generic mode, TC asks nothing of the driver (no GRO_HW change, no kernel warning), and it
//! sees what the node sends too.
//!
//! The programs return `TC_ACT_UNSPEC` ("no verdict"): the packet goes on unchanged to the
//! programs and filters after them and then on its way. `TC_ACT_OK` would end the chain there
//! (a tcx `TCX_PASS`, or a matching clsact filter), so a CNI's own programs attached after
//! kernsight's would no longer run.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, TC_ACT_UNSPEC},
    macros::{classifier, map},
    maps::PerCpuHashMap,
    programs::TcContext,
};
use kernsight_common::{
    counters::map_full,
    net::{DEFAULT_INTERFACE_TRAFFIC_ENTRIES, EGRESS, INGRESS, TcTrafficKey, Traffic},
};

use super::{add_traffic, parse::classify};

#[map]
static NET_TC_TRAFFIC: PerCpuHashMap<TcTrafficKey, Traffic> =
    PerCpuHashMap::with_max_entries(DEFAULT_INTERFACE_TRAFFIC_ENTRIES, 0);

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
