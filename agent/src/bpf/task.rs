//! What the programs read of a task (`task_struct` and what hangs off it), located in the
//! running kernel's BTF and handed to every object as read-only globals (`loader.rs`).

use crate::kernel::btf;

/// `task_struct` members the programs read (the processes, oom and trace programs), from the running kernel's BTF.
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskOffsets {
    pub pid: u32,
    pub tgid: u32,
    pub exit_code: u32,
    pub real_parent: u32,
    pub mm: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub binprm_filename: u32,
}

impl TaskOffsets {
    pub fn read(btf: &btf::Btf) -> Result<Self, btf::BtfError> {
        Ok(Self {
            pid: btf.member_offset("task_struct", "pid")?,
            tgid: btf.member_offset("task_struct", "tgid")?,
            exit_code: btf.member_offset("task_struct", "exit_code")?,
            real_parent: btf.member_offset("task_struct", "real_parent")?,
            mm: btf.member_offset("task_struct", "mm")?,
            mm_arg_start: btf.member_offset("mm_struct", "arg_start")?,
            mm_arg_end: btf.member_offset("mm_struct", "arg_end")?,
            binprm_filename: btf.member_offset("linux_binprm", "filename")?,
        })
    }
}
