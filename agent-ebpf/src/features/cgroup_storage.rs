//! A cgroup's syscall slot in the cgroup itself (`BPF_MAP_TYPE_CGRP_STORAGE`, 6.2+): freed with
//! the cgroup, no bound to reach. (v1 cgroups are in `V1_CGROUP_SLOTS`, on every build.)

use aya_ebpf::{bindings::cgroup, btf_maps::CgrpStorage, macros::btf_map};
use kernsight_common::{counters::map_full, syscalls::OVERFLOW_SLOT};

use crate::{counters::count_map_full, syscalls::new_slot};

#[btf_map]
static CGROUP_SLOTS: CgrpStorage<u32> = CgrpStorage::new();

/// The slot stored in the cgroup's local storage, or a new one from the free queue
/// (`OVERFLOW_SLOT`, counted, when the storage cannot be created or no slot is free).
/// `cgroup` must be the trusted `css_set->dfl_cgrp` pointer: the helper refuses others.
#[inline(always)]
pub(crate) fn stored_slot(cgroup: *mut cgroup, cgroup_id: u64) -> u32 {
    let mut stored = CGROUP_SLOTS.get_or_insert_ptr_mut(cgroup, None);
    if stored.is_null() {
        // Creating fails with EEXIST when another CPU created this cgroup's storage meanwhile.
        stored = CGROUP_SLOTS.get_ptr_mut(cgroup);
    }
    if stored.is_null() {
        count_map_full(map_full::CGROUP_STORAGE);
        return OVERFLOW_SLOT;
    }
    // SAFETY: a valid storage value returned by the kernel.
    let stored = unsafe { &mut *stored };
    if *stored == OVERFLOW_SLOT {
        let slot = new_slot(cgroup_id);
        if slot == OVERFLOW_SLOT {
            return OVERFLOW_SLOT; // not stored: the next miss tries again
        }
        *stored = slot;
    }
    *stored
}
