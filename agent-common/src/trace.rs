//! Ad-hoc tracing (`kernsight trace`): one ring buffer of records filtered in the kernel by
//! process and cgroup, and per-syscall counters for counts that never cross the ring buffer.
//!
//! Two producers share `TRACE_EVENTS`: the generic tracepoint program copies the raw tracepoint
//! record (decoded in user space from tracefs' `format` file) after a `TraceHeader`; the
//! syscall programs write a `SyscallRecord` (number, return value, latency, arguments and the
//! text of a path argument).

/// Ring buffer of `TraceHeader`-prefixed records.
pub const TRACE_EVENTS_MAP: &str = "TRACE_EVENTS";
/// Per-CPU array, one slot: records that found the ring buffer full.
pub const TRACE_LOST_MAP: &str = "TRACE_LOST";
/// `Array<u32>`, one entry: non-zero while the reader waits for a wakeup (set by the reader
/// before it waits, cleared by the submit that wakes it).
pub const TRACE_READER_WAITING_MAP: &str = "TRACE_READER_WAITING";
/// Hash `u64` cgroup id → `u8`: the cgroups traced when `TRACE_FILTER_CGROUPS` is set.
pub const TRACE_CGROUPS_MAP: &str = "TRACE_CGROUPS";
/// LRU hash thread id → `sys_enter` timestamp (ns), for syscall latency.
pub const TRACE_SYSCALL_START_MAP: &str = "TRACE_SYSCALL_START";
/// Per-CPU array `syscall number * LATENCY_SLOTS + log2 bucket` → calls, filled in histogram
/// mode (bucket 0: 0 ns; bucket `b`: `[2^(b-1), 2^b)` ns; the last one also holds longer).
pub const TRACE_SYSCALL_LATENCY_MAP: &str = "TRACE_SYSCALL_LATENCY";
/// Log2 latency buckets per syscall in `TRACE_SYSCALL_LATENCY`.
pub const LATENCY_SLOTS: u32 = 64;
/// Per-CPU hash `CgroupSyscallKey` → `SyscallCount`: counts by cgroup and syscall, filled in
/// counting mode when `TRACE_COUNT_BY_CGROUP` is set.
pub const TRACE_CGROUP_COUNTS_MAP: &str = "TRACE_CGROUP_COUNTS";
/// (cgroup, syscall) pairs `TRACE_CGROUP_COUNTS` holds; calls of pairs that find it full are
/// counted as lost.
pub const TRACE_CGROUP_COUNTS_ENTRIES: u32 = 16_384;
/// `u8`: non-zero makes counting mode count by (cgroup, syscall) in `TRACE_CGROUP_COUNTS`.
pub const TRACE_COUNT_BY_CGROUP_GLOBAL: &str = "TRACE_COUNT_BY_CGROUP";
/// Per-CPU array syscall number → `SyscallCount`, filled in counting mode.
pub const TRACE_SYSCALL_COUNTS_MAP: &str = "TRACE_SYSCALL_COUNTS";

/// Default ring buffer size (bytes, a power of two multiple of the page size).
pub const TRACE_EVENTS_BYTES: u32 = 8 * 1024 * 1024;
/// Most cgroups a trace can be restricted to.
pub const TRACE_CGROUPS_MAX: u32 = 4096;
/// Threads that can be inside a traced syscall at once with a start time (LRU).
pub const TRACE_START_ENTRIES: u32 = 16_384;
/// Syscall numbers `0..TRACE_SYSCALLS` can be traced and counted.
pub const TRACE_SYSCALLS: usize = 512;
/// Most bytes of a raw tracepoint record copied (the fixed part and its `__data_loc` data).
pub const TRACE_RECORD_MAX: u32 = 2048;
/// Most bytes of a syscall's path argument copied (with its NUL).
pub const TRACE_PATH_MAX: usize = 256;

/// Read-only globals set by the loader.
/// `u32`: trace only this process (tgid); 0 traces every process.
pub const TRACE_FILTER_TGID_GLOBAL: &str = "TRACE_FILTER_TGID";
/// `u32`: the tracer's own process, never traced.
pub const TRACE_SELF_TGID_GLOBAL: &str = "TRACE_SELF_TGID";
/// `u8`: non-zero traces only the cgroups in `TRACE_CGROUPS`.
pub const TRACE_FILTER_CGROUPS_GLOBAL: &str = "TRACE_FILTER_CGROUPS";
/// `u32`: bytes of each tracepoint record to copy (at most `TRACE_RECORD_MAX`, a multiple of 8).
pub const TRACE_RECORD_BYTES_GLOBAL: &str = "TRACE_RECORD_BYTES";
/// `u8`: non-zero makes the syscall programs count into `TRACE_SYSCALL_COUNTS` instead of
/// streaming records.
pub const TRACE_SYSCALL_COUNT_ONLY_GLOBAL: &str = "TRACE_SYSCALL_COUNT_ONLY";
/// `u8`: non-zero makes counting mode also fill `TRACE_SYSCALL_LATENCY` (needs `sys_enter`).
pub const TRACE_SYSCALL_HIST_GLOBAL: &str = "TRACE_SYSCALL_HIST";
/// `[u8; TRACE_SYSCALLS]`: per syscall number, `SYSCALL_TRACED` and the path argument.
pub const TRACE_SYSCALL_SET_GLOBAL: &str = "TRACE_SYSCALL_SET";

/// `TRACE_SYSCALL_SET` bit: this syscall is traced.
pub const SYSCALL_TRACED: u8 = 1;
/// `TRACE_SYSCALL_SET` bits 1..=3: 1 + the index of the argument that is a path, or 0.
pub const SYSCALL_PATH_SHIFT: u8 = 1;

/// `TraceHeader::kind`
pub const KIND_TRACEPOINT: u32 = 1;
pub const KIND_SYSCALL: u32 = 2;
pub const KIND_BLOCK_IO: u32 = 3;

/// LRU hash request address → `BlockIoRecord`: each traced request from its issue (with the
/// issuer's process, comm and cgroup) to its completion, sized when `kernsight trace io` runs.
pub const TRACE_BLOCK_START_MAP: &str = "TRACE_BLOCK_START";
/// Requests in flight `TRACE_BLOCK_START` follows in a trace (LRU: the oldest forgotten).
pub const TRACE_BLOCK_START_ENTRIES: u32 = 16_384;

/// `SyscallRecord::latency_ns` when the call started before the trace did.
pub const LATENCY_UNKNOWN: u64 = u64::MAX;

/// The start of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceHeader {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub timestamp_ns: u64,
    /// The current task's cgroup, tagged as the syscall family's ids are.
    pub cgroup_id: u64,
    /// The current thread and process (thread group) ids.
    pub pid: u32,
    pub tgid: u32,
    /// `KIND_TRACEPOINT` or `KIND_SYSCALL`.
    pub kind: u32,
    /// Tracepoint: bytes of raw record that follow. Syscall: bytes of `path` read (with NUL).
    pub len: u32,
    pub comm: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<TraceHeader>() == 48);

/// One syscall, written at `sys_exit`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallRecord {
    pub header: TraceHeader,
    pub id: u32,
    pub _pad: u32,
    pub ret: i64,
    /// Nanoseconds from `sys_enter` to `sys_exit`, or `LATENCY_UNKNOWN`.
    pub latency_ns: u64,
    pub args: [u64; 6],
    pub path: [u8; TRACE_PATH_MAX],
}
const _: () = assert!(core::mem::size_of::<SyscallRecord>() == 48 + 24 + 48 + TRACE_PATH_MAX);

/// One completed block request (`kernsight trace io`), written when its last part completes.
/// The header is the issuer's (its process and comm where the request was issued in its
/// context, a kworker's otherwise; its cgroup as the `block_io` family attributes it), with the
/// completion's time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockIoRecord {
    pub header: TraceHeader,
    /// `major << 20 | minor` (`block_io::MINOR_BITS`).
    pub device: u32,
    /// One of `block_io::op`.
    pub op: u32,
    /// The request's size when issued.
    pub bytes: u64,
    /// Nanoseconds from issue to completion.
    pub latency_ns: u64,
    /// The completion's `blk_status_t` (0: success).
    pub error: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<BlockIoRecord>() == 48 + 32);

/// Key of `TRACE_CGROUP_COUNTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CgroupSyscallKey {
    /// Tagged cgroup id, as in `TraceHeader`.
    pub cgroup_id: u64,
    pub syscall: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<CgroupSyscallKey>() == 16);

/// Calls and failed calls of one syscall number, per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallCount {
    pub calls: u64,
    pub errors: u64,
}
const _: () = assert!(core::mem::size_of::<SyscallCount>() == 16);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]` integers and bytes without implicit padding.
    unsafe impl aya::Pod for super::TraceHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SyscallRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SyscallCount {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CgroupSyscallKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BlockIoRecord {}
}
