//! Packet drops by reason (`skb:kfree_skb`, which carries `enum skb_drop_reason` since 5.17;
//! before, every drop counts as unspecified). It fires for every dropped packet, so the common
//! path is one inlined per-CPU array increment indexed by the reason; only drops of packets with
//! a known socket also go to a per-(cgroup, reason) hash.

use aya_ebpf::{
    macros::{btf_tracepoint, map},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::BtfTracePointContext,
};
use kernsight_common::{
    counters::{OVERFLOW_CGROUP_ID, map_full},
    net::{
        DEFAULT_CGROUP_DROPS_ENTRIES, DROP_REASON_OTHER, DROP_REASON_SLOTS, DROP_REASON_UNSPECIFIED, DropKey,
    },
};

use super::{skb_sock, sock_cgroup};
use crate::counters::{add, atomic_add};
use crate::task::global;

#[map]
static NET_DROP_REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_REASON_SLOTS, 0);

#[map]
static NET_CGROUP_DROPS: PerCpuHashMap<DropKey, u64> =
    PerCpuHashMap::with_max_entries(DEFAULT_CGROUP_DROPS_ENTRIES, 0);

#[unsafe(no_mangle)]
static KFREE_SKB_HAS_REASON: u32 = 0;
#[unsafe(no_mangle)]
static KFREE_SKB_HAS_RX_SK: u32 = 0;

/// kfree_skb(struct sk_buff *skb, void *location[, enum skb_drop_reason reason[,
/// struct sock *rx_sk]])
#[btf_tracepoint(function = "kfree_skb")]
pub fn ks_kfree_skb(ctx: BtfTracePointContext) -> i32 {
    // A constant at load time: the verifier never walks the read of an argument the kernel
    // does not have.
    let slot = if global(&KFREE_SKB_HAS_REASON) == 0 {
        DROP_REASON_UNSPECIFIED
    } else {
        let reason: u32 = ctx.arg(2);
        if reason < DROP_REASON_UNSPECIFIED { reason } else { DROP_REASON_OTHER }
    };
    if let Some(counter) = NET_DROP_REASONS.get_ptr_mut(slot) {
        atomic_add(counter, 1);
    }
    // The receiving socket (6.12+) when the stack found one, else the socket the packet belongs
    // to (sent packets).
    let mut sk: *const u8 = core::ptr::null();
    if global(&KFREE_SKB_HAS_RX_SK) != 0 {
        sk = ctx.arg(3);
    }
    if sk.is_null() {
        // SAFETY: the tracepoint's BTF argument.
        sk = unsafe { skb_sock(ctx.arg(0)) };
    }
    // SAFETY: null or a BTF socket pointer.
    if let Some(cgroup_id) = unsafe { sock_cgroup(sk) } {
        let key = DropKey { cgroup_id, reason: slot, _pad: 0 };
        let overflow = || DropKey { cgroup_id: OVERFLOW_CGROUP_ID, reason: slot, _pad: 0 };
        add(&NET_CGROUP_DROPS, &key, overflow, map_full::NET_CGROUP_DROPS, 1);
    }
    0
}
