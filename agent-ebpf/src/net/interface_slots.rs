//! Interface slots, for the TC and XDP programs alike: a frame counts in its interface's slot, a
//! per-CPU array row found by masking the interface index, when the slot's tag names the
//! interface (the agent tags the slots of the interfaces it attached to); else the caller counts
//! it in its per-CPU hash. The row costs an inlined array lookup where the hash costs a hash of
//! the key and a bucket walk, and it takes plain adds: ~17 ns of a TC run's 70 together
//! (docs/performance.md, "Interfaces counted in slots").

use aya_ebpf::maps::{Array, PerCpuArray};
use kernsight_common::net::{INGRESS, INTERFACE_SLOTS, InterfaceRow};

use super::add_packet;
use crate::task::global;

/// 1 where the programs add to their slot's counters with plain adds: TC and XDP programs run
/// with bottom halves off (TC ingress and XDP in the receive softirq or under
/// `local_bh_disable`, TC egress under `__dev_queue_xmit`'s `rcu_read_lock_bh`), so one CPU runs
/// one of them at a time, to its end. Not on PREEMPT_RT kernels, where a section with bottom
/// halves off can be preempted.
#[unsafe(no_mangle)]
static INTERFACE_PLAIN_ADDS: u8 = 0;

/// Adds the frame to the row of `ifindex`'s slot if the slot is the interface's; false if not.
#[inline(always)]
pub(super) fn count_in_slot(
    tags: &Array<u32>,
    rows: &PerCpuArray<InterfaceRow>,
    ifindex: u32,
    protocol: u32,
    direction: u32,
    bytes: u64,
) -> bool {
    let slot = ifindex & (INTERFACE_SLOTS - 1);
    let Some(tag) = tags.get(slot) else { return false };
    // SAFETY: a value of the map; an aligned u32 read whole. A free slot's tag is 0, which no
    // interface has.
    if unsafe { core::ptr::read_volatile(tag) } != ifindex {
        return false;
    }
    let Some(row) = rows.get_ptr_mut(slot) else { return false };
    // SAFETY: this CPU's row; the index is checked against the row's size.
    let Some(traffic) = (unsafe { (*row).by_protocol.get_mut(protocol as usize) }) else { return false };
    let traffic = if direction == INGRESS { &raw mut traffic[0] } else { &raw mut traffic[1] };
    // SAFETY: a counter of this CPU's row; adds are atomic but where `INTERFACE_PLAIN_ADDS` says
    // why they need not be.
    unsafe { add_packet(traffic, bytes, global(&INTERFACE_PLAIN_ADDS) != 0) };
    true
}
