//! The current task as a BTF pointer (`bpf_get_current_task_btf()`, 5.11+): its memory is read
//! with plain loads that the verifier checks against the kernel's types.

use aya_ebpf::helpers::generated::bpf_get_current_task_btf;

use crate::task::Direct;

/// How the current task's memory is read: it is a BTF pointer.
pub(crate) type CurrentRead = Direct;

/// The current task, as a BTF pointer.
#[inline(always)]
pub(crate) fn current_task() -> *const u8 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_get_current_task_btf() as *const u8 }
}
