//! Per-interface traffic by direction and protocol: a TC program on the ingress and one on the
//! egress of each interface the agent watches (tcx links where the kernel has them, a clsact
//! filter otherwise), counting frames and bytes by what `parse::classify` finds. Unlike XDP in
//! generic mode, TC asks nothing of the driver (no GRO_HW change, no kernel warning), and it
//! sees what the node sends too.
//!
//! A frame counts in its interface's slot, a per-CPU array row found by masking the interface
//! index, when the slot's tag names the interface (the agent tags the slots of the interfaces it
//! attached to); else in the per-CPU hash by (interface, protocol, direction). The row costs an
//! inlined array lookup where the hash costs a hash of the key and a bucket walk (21 ns of a
//! run's 65: docs/performance.md, "TC counted in slots").
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
        DEFAULT_INTERFACE_TRAFFIC_ENTRIES, EGRESS, INGRESS, TC_TRAFFIC_SLOTS, TcTrafficKey, TcTrafficRow,
        Traffic,
    },
};

use super::{add_traffic, parse::classify};
use crate::{counters::atomic_add, task::global};

#[map]
static NET_TC_TRAFFIC: PerCpuHashMap<TcTrafficKey, Traffic> =
    PerCpuHashMap::with_max_entries(DEFAULT_INTERFACE_TRAFFIC_ENTRIES, 0);

#[map]
static NET_TC_TAGS: Array<u32> = Array::with_max_entries(TC_TRAFFIC_SLOTS, 0);

#[map]
static NET_TC_ROWS: PerCpuArray<TcTrafficRow> = PerCpuArray::with_max_entries(TC_TRAFFIC_SLOTS, 0);

/// 1 where the programs add to their slot's counters with plain adds: both TC hooks run with
/// bottom halves off (ingress in the receive softirq or under `local_bh_disable`, egress under
/// `__dev_queue_xmit`'s `rcu_read_lock_bh`), so one CPU runs one of them at a time, to its end.
/// Not on PREEMPT_RT kernels, where a section with bottom halves off can be preempted.
#[unsafe(no_mangle)]
static TC_PLAIN_ADDS: u8 = 0;

/// Adds the frame to the row of `ifindex`'s slot if the slot is the interface's; false if not.
#[inline(always)]
fn count_in_slot(ifindex: u32, protocol: u32, direction: u32, bytes: u64) -> bool {
    let slot = ifindex & (TC_TRAFFIC_SLOTS - 1);
    let Some(tag) = NET_TC_TAGS.get(slot) else { return false };
    // SAFETY: a value of the map; an aligned u32 read whole. A free slot's tag is 0, which no
    // interface has.
    if unsafe { core::ptr::read_volatile(tag) } != ifindex {
        return false;
    }
    let Some(row) = NET_TC_ROWS.get_ptr_mut(slot) else { return false };
    // SAFETY: this CPU's row; the index is checked against the row's size.
    let Some(traffic) = (unsafe { (*row).by_protocol.get_mut(protocol as usize) }) else { return false };
    let traffic = if direction == INGRESS { &raw mut traffic[0] } else { &raw mut traffic[1] };
    // SAFETY: a counter of this CPU's row; adds are atomic but where `TC_PLAIN_ADDS` says why
    // they need not be.
    unsafe {
        if global(&TC_PLAIN_ADDS) != 0 {
            (*traffic).packets += 1;
            (*traffic).bytes += bytes;
        } else {
            atomic_add(&raw mut (*traffic).packets, 1);
            atomic_add(&raw mut (*traffic).bytes, bytes);
        }
    }
    true
}

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
    if count_in_slot(ifindex, protocol, direction, len.into()) {
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
