//! The container runtime's own stages: runc names them `runc:[0:PARENT]`, `runc:[1:CHILD]` and
//! `runc:[2:INIT]` while it sets a container up or enters it (`exec`), and runs them from its
//! own executable. What they do in the container's cgroup is the runtime's, not the workload's:
//! the capabilities and escape families leave it out. The name alone would let a workload hide
//! (`prctl(PR_SET_NAME)`); the executable's identity, which user space fills `RUNTIME_BINARIES`
//! with, cannot be taken short of executing the host's runtime binary.

use aya_ebpf::{macros::map, maps::HashMap};
use kernsight_common::capabilities::{MAX_RUNTIME_BINARIES, RUNC_COMM_MASK, RUNC_COMM_PREFIX, RuntimeBinary};

use crate::task::{KernelRead, TASK_MM_OFFSET, global};

#[map]
static RUNTIME_BINARIES: HashMap<RuntimeBinary, u8> = HashMap::with_max_entries(MAX_RUNTIME_BINARIES, 0);

#[unsafe(no_mangle)]
static TASK_COMM_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static MM_EXE_FILE_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
pub(crate) static FILE_INODE_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static INODE_INO_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
pub(crate) static INODE_SB_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static SB_DEV_OFFSET: u32 = 0;

/// Whether `task` is one of runc's stages: named like one, executing a runtime binary.
///
/// # Safety
/// `task` must be what `R` reads from (see `KernelRead`); offsets from the kernel's BTF.
#[inline(always)]
pub(crate) unsafe fn runtime_stage<R: KernelRead>(task: *const u8) -> bool {
    // SAFETY: the caller's task, read through `R`.
    let comm: u64 = unsafe { R::read(task, global(&TASK_COMM_OFFSET)) };
    // SAFETY: as above.
    comm & RUNC_COMM_MASK == RUNC_COMM_PREFIX && unsafe { runs_runtime_binary::<R>(task) }
}

/// Whether `task` executes one of `RUNTIME_BINARIES`: its identity is the inode of
/// `task->mm->exe_file`, which the task cannot choose short of executing that file. A kernel
/// thread (no `mm`) or an unreadable step is not the runtime.
///
/// # Safety
/// `task` must be what `R` reads from (see `KernelRead`); offsets from the kernel's BTF.
#[inline(always)]
unsafe fn runs_runtime_binary<R: KernelRead>(task: *const u8) -> bool {
    // SAFETY: the caller's task, read through `R`; each pointer is checked before it is followed.
    unsafe {
        let mm: *const u8 = R::read(task, global(&TASK_MM_OFFSET));
        if mm.is_null() {
            return false;
        }
        let file: *const u8 = R::read(mm, global(&MM_EXE_FILE_OFFSET));
        if file.is_null() {
            return false;
        }
        let inode: *const u8 = R::read(file, global(&FILE_INODE_OFFSET));
        if inode.is_null() {
            return false;
        }
        let superblock: *const u8 = R::read(inode, global(&INODE_SB_OFFSET));
        if superblock.is_null() {
            return false;
        }
        let binary = RuntimeBinary {
            inode: R::read(inode, global(&INODE_INO_OFFSET)),
            device: R::read(superblock, global(&SB_DEV_OFFSET)),
            _pad: 0,
        };
        RUNTIME_BINARIES.get(&binary).is_some()
    }
}
