//! A cgroup's syscall slot in a hash keyed by cgroup id, for kernels without cgroup local
//! storage (before 6.2). Bounded by the number of slots, since an entry is only made for a
//! cgroup that got one; user space deletes it when it recycles the slot.

use aya_ebpf::{bindings::cgroup, macros::map, maps::HashMap};
use kernsight_common::syscalls::DEFAULT_CGROUP_SLOTS;

use crate::syscalls::slot_by_id;

/// Unified-hierarchy cgroup id → its slot; sized by the agent to the number of slots.
#[map]
static CGROUP_SLOTS: HashMap<u64, u32> = HashMap::with_max_entries(DEFAULT_CGROUP_SLOTS, 0);

/// The slot recorded for the cgroup, or a new one (see `syscalls::slot_by_id`).
#[inline(always)]
pub(crate) fn stored_slot(_cgroup: *mut cgroup, cgroup_id: u64) -> u32 {
    slot_by_id(&CGROUP_SLOTS, cgroup_id)
}
