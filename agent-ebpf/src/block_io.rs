//! Block I/O per cgroup and device: `block_rq_issue` remembers when a request was issued and
//! which cgroup issued it, `block_rq_complete` adds the request's bytes, its operation and its
//! issue-to-completion latency (log2 histogram) to the counters of (cgroup, device, op).
//!
//! The issuing cgroup is the one the block layer charges the I/O to: the request's first bio
//! carries its blk-cgroup (`bio->bi_blkg->blkcg->css.cgroup`), which stays the submitter's even
//! when a kworker or a writeback thread issues the request. That cgroup is used when it is a
//! cgroup of the unified hierarchy other than the root; otherwise (the `blkio` controller is a
//! v1 one, as on hybrid hosts, or `io` is not enabled down to the task's cgroup, so the blkcg is
//! an ancestor's) the current task's cgroup at issue is, as every other family attributes.
//!
//! Cost per request: at issue, a few loads through BTF pointers and one LRU hash update; at
//! completion, one LRU lookup and delete and four atomic adds into per-CPU hash values (bytes,
//! operations, bucket, sum), two for a partial completion. No helper beyond the clock and the
//! maps: both run in the block layer's own paths, once per request (not per page or bio).

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map},
    maps::{LruHashMap, PerCpuHashMap},
    programs::BtfTracePointContext,
};
use kernsight_common::{
    block_io::{BLOCK_IO_START_ENTRIES, BlockIoKey, DEFAULT_BLOCK_IO_ENTRIES, IoStart, MINOR_BITS, op, slot},
    counters::{LATENCY_SUM_BUCKET, OVERFLOW_CGROUP_ID, latency_bucket, map_full},
    syscalls::ROOT_CGROUP_ID,
};

use crate::{
    cgroups::{CGROUP_ROOT_OFFSET, ROOT_HIERARCHY_ID_OFFSET},
    counters::add,
    task::{cgroup_id, current_cgroup, global, load},
};

#[unsafe(no_mangle)]
static BLOCK_ISSUE_RQ_ARG: u32 = 0;
#[unsafe(no_mangle)]
static BLOCK_DISK_VIA_QUEUE: u32 = 1;
#[unsafe(no_mangle)]
static BLOCK_RQ_Q_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static BLOCK_QUEUE_DISK_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static BLOCK_RQ_DISK_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static BLOCK_DISK_MAJOR_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static BLOCK_DISK_FIRST_MINOR_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static BLOCK_RQ_CMD_FLAGS_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static BLOCK_RQ_DATA_LEN_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static BLOCK_BLKCG: u32 = 0;
#[unsafe(no_mangle)]
static BLOCK_RQ_BIO_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static BLOCK_BIO_BLKG_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static BLOCK_BLKG_BLKCG_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static BLOCK_BLKCG_CGROUP_OFFSET: u32 = 0;

#[map]
static BLOCK_IO: PerCpuHashMap<BlockIoKey, u64> =
    PerCpuHashMap::with_max_entries(DEFAULT_BLOCK_IO_ENTRIES, 0);

/// Request address → its issue. LRU: a request whose completion is never seen (the agent
/// attached between the two, a driver that ends requests without the tracepoint) is evicted
/// by newer ones instead of filling the map.
#[map]
static BLOCK_IO_START: LruHashMap<u64, IoStart> = LruHashMap::with_max_entries(BLOCK_IO_START_ENTRIES, 0);

/// `REQ_OP_MASK`: the low 8 bits of `cmd_flags` are the operation (`REQ_OP_BITS`, 4.10+).
const REQ_OP_MASK: u32 = 0xff;
const REQ_OP_READ: u32 = 0;
const REQ_OP_WRITE: u32 = 1;

/// The cgroup the request's first bio is charged to, when it is a cgroup of the unified
/// hierarchy below its root; else 0.
///
/// # Safety
/// `rq` must be a BTF pointer to a `struct request`.
#[inline(always)]
unsafe fn blkcg_cgroup_id(rq: *const u8) -> u64 {
    // SAFETY: BTF pointers followed at offsets from the kernel's BTF; a NULL along the way
    // reads as zero (the verifier's checked loads), which ends the walk.
    unsafe {
        let bio: *const u8 = load(rq, global(&BLOCK_RQ_BIO_OFFSET));
        if bio.is_null() {
            return 0;
        }
        let blkg: *const u8 = load(bio, global(&BLOCK_BIO_BLKG_OFFSET));
        if blkg.is_null() {
            return 0;
        }
        let blkcg: *const u8 = load(blkg, global(&BLOCK_BLKG_BLKCG_OFFSET));
        if blkcg.is_null() {
            return 0;
        }
        let cgroup: *mut aya_ebpf::bindings::cgroup = load(blkcg, global(&BLOCK_BLKCG_CGROUP_OFFSET));
        if cgroup.is_null() {
            return 0;
        }
        let root: *const u8 = load(cgroup as *const u8, global(&CGROUP_ROOT_OFFSET));
        if load::<i32>(root, global(&ROOT_HIERARCHY_ID_OFFSET)) != 0 {
            return 0; // a v1 blkio hierarchy: its ids are not the agent's
        }
        let id = cgroup_id(cgroup);
        if id == ROOT_CGROUP_ID { 0 } else { id }
    }
}

/// The request of a `block_rq_issue` hit: `(struct request *rq)`, or on 5.10
/// `(struct request_queue *q, struct request *rq)`.
#[inline(always)]
pub(crate) fn issued_request(ctx: &BtfTracePointContext) -> *const u8 {
    // The branch not taken is pruned: the global is read-only data.
    if global(&BLOCK_ISSUE_RQ_ARG) == 1 { ctx.arg(1) } else { ctx.arg(0) }
}

/// The cgroup that issued `rq`: its blk-cgroup's on the unified hierarchy, else the current
/// task's (see the module's comment).
///
/// # Safety
/// `rq` must be a BTF pointer to a `struct request`.
#[inline(always)]
pub(crate) unsafe fn issuing_cgroup(rq: *const u8) -> u64 {
    let mut cgroup_id = 0;
    if global(&BLOCK_BLKCG) != 0 {
        // SAFETY: the caller's BTF `struct request` pointer.
        cgroup_id = unsafe { blkcg_cgroup_id(rq) };
    }
    if cgroup_id == 0 {
        cgroup_id = current_cgroup().1;
    }
    cgroup_id
}

/// The op of `rq` (`op::READ`, `WRITE`, `OTHER`), and the bytes it has left to complete.
///
/// # Safety
/// `rq` must be a BTF pointer to a `struct request`.
#[inline(always)]
pub(crate) unsafe fn op_and_remaining(rq: *const u8) -> (u16, u32) {
    // SAFETY: the caller's BTF pointer, at offsets from the kernel's BTF.
    let (flags, remaining) = unsafe {
        (
            load::<u32>(rq, global(&BLOCK_RQ_CMD_FLAGS_OFFSET)),
            load::<u32>(rq, global(&BLOCK_RQ_DATA_LEN_OFFSET)),
        )
    };
    let what = match flags & REQ_OP_MASK {
        REQ_OP_READ => op::READ,
        REQ_OP_WRITE => op::WRITE,
        _ => op::OTHER,
    };
    (what, remaining)
}

/// block_rq_issue(struct request *rq); on 5.10 (struct request_queue *q, struct request *rq).
#[btf_tracepoint(function = "block_rq_issue")]
pub fn ks_block_rq_issue(ctx: BtfTracePointContext) -> i32 {
    let rq = issued_request(&ctx);
    // SAFETY: the tracepoint's BTF `struct request` pointer.
    let cgroup_id = unsafe { issuing_cgroup(rq) };
    // SAFETY: helper without preconditions.
    let start = IoStart { issued_ns: unsafe { bpf_ktime_get_ns() }, cgroup_id };
    // A requeued request is issued again: its start is replaced.
    let _ = BLOCK_IO_START.insert(&(rq as u64), &start, 0);
    0
}

/// The device of the request's disk, `major << MINOR_BITS | first_minor`.
///
/// # Safety
/// `rq` must be a BTF pointer to a `struct request`.
#[inline(always)]
pub(crate) unsafe fn device(rq: *const u8) -> u32 {
    // SAFETY: BTF pointers at offsets from the kernel's BTF; a request without a disk reads 0.
    unsafe {
        let disk: *const u8 = if global(&BLOCK_DISK_VIA_QUEUE) != 0 {
            let queue: *const u8 = load(rq, global(&BLOCK_RQ_Q_OFFSET));
            load(queue, global(&BLOCK_QUEUE_DISK_OFFSET))
        } else {
            load(rq, global(&BLOCK_RQ_DISK_OFFSET))
        };
        if disk.is_null() {
            return 0;
        }
        let major = load::<i32>(disk, global(&BLOCK_DISK_MAJOR_OFFSET)) as u32;
        let minor = load::<i32>(disk, global(&BLOCK_DISK_FIRST_MINOR_OFFSET)) as u32;
        major << MINOR_BITS | (minor & ((1 << MINOR_BITS) - 1))
    }
}

#[inline(always)]
fn count(cgroup_id: u64, device: u32, what: u16, slot: u16, amount: u64) {
    let key = BlockIoKey { cgroup_id, device, op: what, slot };
    let overflow = || BlockIoKey { cgroup_id: OVERFLOW_CGROUP_ID, device: 0, op: what, slot };
    add(&BLOCK_IO, &key, overflow, map_full::BLOCK_IO, amount);
}

/// block_rq_complete(struct request *rq, blk_status_t error, unsigned int nr_bytes): called
/// for each part of a request the driver completes (`blk_update_request`), before the
/// request's remaining length (`__data_len`) is reduced by `nr_bytes`: the part that reaches
/// the remaining length is the request's end.
#[btf_tracepoint(function = "block_rq_complete")]
pub fn ks_block_rq_complete(ctx: BtfTracePointContext) -> i32 {
    let rq: *const u8 = ctx.arg(0);
    let nr_bytes: u32 = ctx.arg(2);
    // SAFETY: the tracepoint's BTF `struct request` pointer.
    let ((what, remaining), device) = unsafe { (op_and_remaining(rq), device(rq)) };
    let address = rq as u64;
    // SAFETY: a value of the map, copied out at once.
    let start = unsafe { BLOCK_IO_START.get(&address) }.copied();
    // Not issued while the agent was attached (or evicted): counted, not timed, under `other`.
    let cgroup_id = start.map_or(OVERFLOW_CGROUP_ID, |start| start.cgroup_id);
    if nr_bytes > 0 {
        count(cgroup_id, device, what, slot::BYTES, nr_bytes as u64);
    }
    if nr_bytes < remaining {
        return 0; // a partial completion: the request goes on
    }
    count(cgroup_id, device, what, slot::OPERATIONS, 1);
    if let Some(start) = start {
        let _ = BLOCK_IO_START.remove(&address);
        // SAFETY: helper without preconditions.
        let took = unsafe { bpf_ktime_get_ns() }.saturating_sub(start.issued_ns);
        count(cgroup_id, device, what, latency_bucket(took) as u16, 1);
        count(cgroup_id, device, what, LATENCY_SUM_BUCKET as u16, took);
    }
    0
}
