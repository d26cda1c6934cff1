//! The `block_io` family's wire types: block I/O per (cgroup, device, op), counted when a
//! request completes (`block_rq_complete`), timed from its issue (`block_rq_issue`), aggregated
//! in the kernel in a per-CPU hash.

use crate::counters::{LATENCY_BUCKETS, LATENCY_SUM_BUCKET};

/// Per-CPU hash `BlockIoKey` → `u64`: operations, bytes, and the latency histogram (log2
/// buckets of nanoseconds from issue to completion, and the sum).
pub const BLOCK_IO_MAP: &str = "BLOCK_IO";
/// LRU hash request address → `IoStart`: when a request was issued and for which cgroup.
pub const BLOCK_IO_START_MAP: &str = "BLOCK_IO_START";
/// Requests in flight that `BLOCK_IO_START` follows: far more than the queues of a node's
/// devices hold at once; past it the oldest issue is forgotten (its completion is counted, not
/// timed, under the `other` cgroup).
pub const BLOCK_IO_START_ENTRIES: u32 = 16_384;
/// Default bound of `BLOCK_IO` ((cgroup, device, op, slot) entries).
pub const DEFAULT_BLOCK_IO_ENTRIES: u32 = 8_192;

/// Slots of a `BlockIoKey` beside the latency buckets (`0..LATENCY_BUCKETS`) and their sum
/// (`LATENCY_SUM_BUCKET`).
pub mod slot {
    use super::{LATENCY_BUCKETS, LATENCY_SUM_BUCKET};

    /// Requests completed (a partially completed request counts once, when it is done).
    pub const OPERATIONS: u16 = LATENCY_SUM_BUCKET as u16 + 1;
    /// Bytes completed (every partial completion adds its part).
    pub const BYTES: u16 = LATENCY_SUM_BUCKET as u16 + 2;
    /// Slots per (cgroup, device, op).
    pub const COUNT: u16 = BYTES + 1;
    const _: () = assert!(LATENCY_BUCKETS < OPERATIONS as u32);
}

/// Operations of `BlockIoKey`: `REQ_OP_READ` and `REQ_OP_WRITE`; everything else (flush,
/// discard, write zeroes...) is `OTHER`.
pub mod op {
    pub const READ: u16 = 0;
    pub const WRITE: u16 = 1;
    pub const OTHER: u16 = 2;
    pub const COUNT: u16 = 3;
}

/// The `op` label of an `op` number.
pub fn op_name(what: u16) -> Option<&'static str> {
    match what {
        op::READ => Some("read"),
        op::WRITE => Some("write"),
        op::OTHER => Some("other"),
        _ => None,
    }
}

/// A device as the key carries it: `major << 20 | minor`, the kernel's own `dev_t` encoding.
pub const MINOR_BITS: u32 = 20;

/// (major, minor) of a key's `device`.
pub fn device_numbers(device: u32) -> (u32, u32) {
    (device >> MINOR_BITS, device & ((1 << MINOR_BITS) - 1))
}

/// Key of `BLOCK_IO`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockIoKey {
    /// Tagged as the syscall family's ids are (`V1_CGROUP_ID_BIT`); `OVERFLOW_CGROUP_ID` when
    /// the map was full or the issue was not seen.
    pub cgroup_id: u64,
    /// `major << MINOR_BITS | minor` of the whole disk; 0 in the overflow keys.
    pub device: u32,
    /// One of `op`.
    pub op: u16,
    /// A latency bucket, `LATENCY_SUM_BUCKET`, or one of `slot`.
    pub slot: u16,
}
const _: () = assert!(core::mem::size_of::<BlockIoKey>() == 16);

/// Value of `BLOCK_IO_START`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStart {
    /// `bpf_ktime_get_ns` at issue.
    pub issued_ns: u64,
    /// The issuing cgroup (see `BlockIoKey::cgroup_id`).
    pub cgroup_id: u64,
}
const _: () = assert!(core::mem::size_of::<IoStart>() == 16);

/// The overflow entries of `BLOCK_IO` (every op and slot under `cgroup_id`, device 0).
pub fn overflow_keys(cgroup_id: u64) -> impl Iterator<Item = BlockIoKey> {
    (0..op::COUNT).flat_map(move |what| {
        (0..slot::COUNT).map(move |slot| BlockIoKey { cgroup_id, device: 0, op: what, slot })
    })
}

/// Read-only globals (`u32`) of the family, offsets from the kernel's BTF.
/// The argument index of the request in `block_rq_issue` (1 on 5.10, with the queue first).
pub const ISSUE_RQ_ARG_GLOBAL: &str = "BLOCK_ISSUE_RQ_ARG";
/// `request.q`, then `request_queue.disk` (5.15+); when `DISK_VIA_QUEUE` is 0, `request.rq_disk`
/// in `RQ_DISK_OFFSET` instead.
pub const DISK_VIA_QUEUE_GLOBAL: &str = "BLOCK_DISK_VIA_QUEUE";
pub const RQ_Q_OFFSET_GLOBAL: &str = "BLOCK_RQ_Q_OFFSET";
pub const QUEUE_DISK_OFFSET_GLOBAL: &str = "BLOCK_QUEUE_DISK_OFFSET";
pub const RQ_DISK_OFFSET_GLOBAL: &str = "BLOCK_RQ_DISK_OFFSET";
pub const DISK_MAJOR_OFFSET_GLOBAL: &str = "BLOCK_DISK_MAJOR_OFFSET";
pub const DISK_FIRST_MINOR_OFFSET_GLOBAL: &str = "BLOCK_DISK_FIRST_MINOR_OFFSET";
pub const RQ_CMD_FLAGS_OFFSET_GLOBAL: &str = "BLOCK_RQ_CMD_FLAGS_OFFSET";
pub const RQ_DATA_LEN_OFFSET_GLOBAL: &str = "BLOCK_RQ_DATA_LEN_OFFSET";
/// 1 when the kernel has blk-cgroup (`bio.bi_blkg`): the request's first bio names the cgroup
/// that issued it, through `bio.bi_blkg → blkcg_gq.blkcg → blkcg.css.cgroup`.
pub const BLKCG_GLOBAL: &str = "BLOCK_BLKCG";
pub const RQ_BIO_OFFSET_GLOBAL: &str = "BLOCK_RQ_BIO_OFFSET";
pub const BIO_BLKG_OFFSET_GLOBAL: &str = "BLOCK_BIO_BLKG_OFFSET";
pub const BLKG_BLKCG_OFFSET_GLOBAL: &str = "BLOCK_BLKG_BLKCG_OFFSET";
/// `blkcg.css` plus `cgroup_subsys_state.cgroup`.
pub const BLKCG_CGROUP_OFFSET_GLOBAL: &str = "BLOCK_BLKCG_CGROUP_OFFSET";

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integer structs without implicit padding.
    unsafe impl aya::Pod for super::BlockIoKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::IoStart {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_buckets_and_devices_split() {
        assert_eq!(slot::OPERATIONS as u32, LATENCY_SUM_BUCKET + 1);
        assert_eq!(overflow_keys(0).count(), (op::COUNT * slot::COUNT) as usize);
        assert_eq!(device_numbers(7 << MINOR_BITS | 3), (7, 3));
    }
}
