//! The trace ring's wakeups on the real kernel: a waiting reader is woken by the submit that
//! finds a batch queued, and only by that one.

use kernsight::{
    bpf::trace::{Filters, Source, Trace},
    kernel::cgroupfs::Hierarchies,
    trace::enrich,
};
use kernsight_common::trace::SyscallRecord;

use crate::support::{self, TestCgroup, path_str, privileged, serial};

/// A failing `openat`'s record in the ring, with the ring's 8-byte header.
const RECORD_BYTES: usize = size_of::<SyscallRecord>() + 8;
/// The kernel side's batch (`WAKEUP_BYTES` in agent-ebpf/src/trace.rs).
const BATCH_BYTES: usize = 64 * 1024;

fn open_under_a_batch() -> i32 {
    support::failing_openat_times(BATCH_BYTES / RECORD_BYTES / 2);
    0
}

fn open_two_batches() -> i32 {
    support::failing_openat_times(2 * BATCH_BYTES / RECORD_BYTES);
    0
}

#[test]
fn a_waiting_reader_is_woken_once_a_batch_is_queued() {
    if !privileged() {
        return;
    }
    let _serial = serial();
    let cgroup = TestCgroup::create("trace-wakeup");
    let hierarchies = Hierarchies::detect();
    let cgroups = enrich::cgroup_ids(&hierarchies, path_str(&cgroup.path)).expect("the test cgroup's id");
    let openat = (libc::SYS_openat as u32, Some(1));
    let filters = Filters { tgid: None, cgroups: Some(cgroups) };
    let mut trace = Trace::load(&Source::Syscalls { set: vec![openat] }, &filters, &hierarchies, 1 << 20)
        .expect("load the trace");

    trace.waiting();
    assert_eq!(cgroup.run(open_under_a_batch), 0);
    assert_eq!(trace.reader_waits(), Some(true), "woken before a batch was queued");
    assert_eq!(cgroup.run(open_two_batches), 0);
    assert_eq!(trace.reader_waits(), Some(false), "two batches queued, the waiting reader not woken");

    let ring = trace.ring.as_mut().expect("the record ring");
    let mut records = 0;
    while ring.next().is_some() {
        records += 1;
    }
    let expected = BATCH_BYTES / RECORD_BYTES / 2 + 2 * BATCH_BYTES / RECORD_BYTES;
    assert_eq!(records, expected, "every open of the cgroup, each once");
    assert_eq!(trace.lost(), 0);
}
