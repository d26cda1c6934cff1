//! The current task before `bpf_get_current_task_btf()` (5.10): `bpf_get_current_task()` is a
//! plain number to the verifier, so every read of it is a `bpf_probe_read_kernel` call.

use aya_ebpf::helpers::generated::bpf_get_current_task;

use crate::task::Probe;

/// How the current task's memory is read: with `bpf_probe_read_kernel`.
pub(crate) type CurrentRead = Probe;

/// The current task's address (readable with `bpf_probe_read_kernel` only).
#[inline(always)]
pub(crate) fn current_task() -> *const u8 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_get_current_task() as *const u8 }
}
