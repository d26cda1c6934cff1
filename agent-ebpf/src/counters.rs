//! Counting in maps, shared by every family: the `MAP_FULL` counters of exhausted bounds and
//! the per-CPU hash counters with an overflow key, whose values are plain counts or latency
//! cells (a bucket's count and the sum of its durations, updated together).
//!
//! Every add here is atomic, even into per-CPU values: the kernel stops a program from nesting
//! into itself on one CPU, but not another program from interrupting it there (a softirq's
//! network program interrupting a task's, a tracepoint hit from an interrupt), and two programs
//! share `MAP_FULL` and some families' maps. A plain `+=` would lose one of the two adds.

use aya_ebpf::{bindings::BPF_NOEXIST, macros::map, maps::PerCpuArray, maps::PerCpuHashMap};
use kernsight_common::counters::{LatencyCell, map_full};

#[map]
pub(crate) static MAP_FULL: PerCpuArray<u64> = PerCpuArray::with_max_entries(map_full::COUNT, 0);

/// Adds `amount` to a counter in a map value.
#[inline(always)]
pub(crate) fn atomic_add(counter: *mut u64, amount: u64) {
    // SAFETY: `counter` points into a map value the kernel gave, 8-byte aligned. The BPF target
    // has no `AtomicU64` in core; the intrinsic compiles to a BPF atomic add (its result unused,
    // so no BPF_FETCH, which 5.10 lacks).
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            counter, amount,
        )
    };
}

/// Counts one exhaustion of the bounded resource `index` (a `map_full` constant).
#[inline(always)]
pub(crate) fn count_map_full(index: u32) {
    if let Some(counter) = MAP_FULL.get_ptr_mut(index) {
        atomic_add(counter, 1);
    }
}

/// A value of a per-CPU hash of counters: what one update adds to it.
pub(crate) trait Counter: Sized {
    /// The value of a new key after its first update with `amount`.
    fn first(amount: u64) -> Self;
    /// Adds one update with `amount` to the value at `value`.
    fn accumulate(value: *mut Self, amount: u64);
}

impl Counter for u64 {
    #[inline(always)]
    fn first(amount: u64) -> Self {
        amount
    }

    #[inline(always)]
    fn accumulate(value: *mut Self, amount: u64) {
        atomic_add(value, amount);
    }
}

/// `amount` is a duration in ns: one observation in the cell's bucket.
impl Counter for LatencyCell {
    #[inline(always)]
    fn first(amount: u64) -> Self {
        LatencyCell { count: 1, sum_nanos: amount }
    }

    #[inline(always)]
    fn accumulate(value: *mut Self, amount: u64) {
        // SAFETY: `value` points to a map value the kernel gave; its fields are 8-byte aligned.
        unsafe {
            atomic_add(&raw mut (*value).count, 1);
            atomic_add(&raw mut (*value).sum_nanos, amount);
        }
    }
}

/// Adds `amount` to `key` in a per-CPU hash of counters; when the map is full the amount goes
/// to the overflow key (which user space creates first) and the miss is counted.
///
/// `overflow` makes that key only when it is needed: built before the lookup, a key that is
/// all zeroes (an ingress packet's, say) became a call to an out-of-line, byte-by-byte
/// `memset` on every event.
#[inline(always)]
pub(crate) fn add<K, V: Counter>(
    map: &PerCpuHashMap<K, V>,
    key: &K,
    overflow: impl FnOnce() -> K,
    full_index: u32,
    amount: u64,
) {
    if add_existing(map, key, amount) || insert_new(map, key, amount) {
        return;
    }
    count_map_full(full_index);
    add_existing(map, &overflow(), amount);
}

/// Adds `amount` to `key` if the map has it.
#[inline(always)]
pub(crate) fn add_existing<K, V: Counter>(map: &PerCpuHashMap<K, V>, key: &K, amount: u64) -> bool {
    match map.get_ptr_mut(key) {
        Some(value) => {
            V::accumulate(value, amount);
            true
        }
        None => false,
    }
}

/// Creates `key` with `amount`, or adds to it when another CPU created it between the caller's
/// lookup and this insert (keys are shared, values per CPU); false when the map is full.
#[inline(always)]
pub(crate) fn insert_new<K, V: Counter>(map: &PerCpuHashMap<K, V>, key: &K, amount: u64) -> bool {
    map.insert(key, &V::first(amount), BPF_NOEXIST.into()).is_ok() || add_existing(map, key, amount)
}
