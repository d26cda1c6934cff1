//! The `escape` family: attempts at what container escapes are made of, counted per (cgroup,
//! syscall, answer, detail) by the syscalls family's `ks_sys_exit` once this family turns it on;
//! `ks_escape_cgroup_mkdir` and `ks_escape_exec` tell the runtime's setup of a new cgroup apart
//! (`kernsight_common::escape::ESCAPE_SETUP_MAP`), and runc's stages by their executable
//! (`runtimes`).

use std::time::Duration;

use aya::EbpfLoader;
use kernsight_common::{
    counters::{OVERFLOW_CGROUP_ID, map_full},
    escape::{
        DENTRY_NAME_OFFSET_GLOBAL, ESCAPE_ATTEMPTS_MAP, ESCAPE_ENABLED_GLOBAL, ESCAPE_SETUP_MAP, EscapeKey,
        FDTABLE_FD_OFFSET_GLOBAL, FDTABLE_MAX_FDS_OFFSET_GLOBAL, FILE_DENTRY_OFFSET_GLOBAL,
        FILE_MODE_OFFSET_GLOBAL, FILE_PRIVATE_DATA_OFFSET_GLOBAL, FILES_FDT_OFFSET_GLOBAL,
        INODE_MODE_OFFSET_GLOBAL, OPENED_FILES_GLOBAL, SB_MAGIC_OFFSET_GLOBAL, SOCK_FAMILY_OFFSET_GLOBAL,
        SOCKET_SK_OFFSET_GLOBAL, TASK_FILES_OFFSET_GLOBAL, UNIX_DENTRY_OFFSET_GLOBAL,
        UNIX_PEER_OFFSET_GLOBAL, UNIX_PEERS_GLOBAL, answer,
    },
};

use super::{
    counters::{CgroupCounters, Row},
    facts::KernelFacts,
    family::{AttachContext, Attached, Family, MapRow, attached_any},
    features::Implementation,
    load_and_attach, runtimes,
};
use crate::{config::Config, kernel::btf};

pub const PROBE: &str = "escape";
const PROGRAMS: [(&str, &str); 2] =
    [("ks_escape_cgroup_mkdir", "cgroup_mkdir"), ("ks_escape_exec", "sched_process_exec")];

/// Escape attempts per cgroup.
pub struct Escape;

impl Family for Escape {
    fn name(&self) -> &'static str {
        PROBE
    }

    fn programs(&self, _config: &Config, _facts: &KernelFacts) -> Vec<&'static str> {
        PROGRAMS.iter().map(|(p, _)| *p).collect()
    }

    fn enabled(&self, config: &Config) -> bool {
        config.security.escape_attempts
    }

    fn set_enabled(&self, config: &mut Config, on: bool) {
        config.security.escape_attempts = on;
    }

    fn unsupported(&self, facts: &KernelFacts, config: &Config) -> Option<String> {
        if !cfg!(target_arch = "x86_64") {
            return Some("the escape vectors are x86_64 syscall numbers and registers".to_owned());
        }
        if !config.syscalls.enabled {
            return Some(
                "it counts at the syscalls family's exit, which is off (syscalls.enabled = false)".to_owned(),
            );
        }
        facts.need_walk().err().or_else(|| {
            let err = facts.security.as_ref().err()?;
            Some(format!(
                "cannot read the task_struct, mm_struct and file members that tell runc's stages apart: {err}"
            ))
        })
    }

    fn implementation(&self, facts: &KernelFacts, _config: &Config) -> Implementation {
        let missing = match (&facts.file_offsets, &facts.unix_offsets) {
            (Err(err), _) => {
                format!("successful opens are told by the caller's path, block devices not at all: {err}")
            }
            (Ok(_), Err(err)) => format!("successful connects are told by the caller's address: {err}"),
            (Ok(_), Ok(_)) => return Implementation::standard("standard"),
        };
        Implementation::fallback("standard", missing)
    }

    fn configure<'a>(&self, loader: &mut EbpfLoader<'a>, facts: &'a KernelFacts, _config: &Config) {
        // Elsewhere the kernel side has none of the vectors' code, nor its globals.
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        loader.override_global(ESCAPE_ENABLED_GLOBAL, &1u32, true);
        runtimes::configure(loader, &facts.offsets.security);
        let Ok(files) = &facts.file_offsets else { return };
        loader
            .override_global(OPENED_FILES_GLOBAL, &1u32, true)
            .override_global(TASK_FILES_OFFSET_GLOBAL, &files.task_files, true)
            .override_global(FILES_FDT_OFFSET_GLOBAL, &files.files_fdt, true)
            .override_global(FDTABLE_MAX_FDS_OFFSET_GLOBAL, &files.fdtable_max_fds, true)
            .override_global(FDTABLE_FD_OFFSET_GLOBAL, &files.fdtable_fd, true)
            .override_global(INODE_MODE_OFFSET_GLOBAL, &files.inode_mode, true)
            .override_global(FILE_MODE_OFFSET_GLOBAL, &files.file_mode, true)
            .override_global(FILE_DENTRY_OFFSET_GLOBAL, &files.file_dentry, true)
            .override_global(DENTRY_NAME_OFFSET_GLOBAL, &files.dentry_name, true)
            .override_global(SB_MAGIC_OFFSET_GLOBAL, &files.sb_magic, true);
        if let Ok(unix) = &facts.unix_offsets {
            loader
                .override_global(UNIX_PEERS_GLOBAL, &1u32, true)
                .override_global(FILE_PRIVATE_DATA_OFFSET_GLOBAL, &unix.file_private_data, true)
                .override_global(SOCKET_SK_OFFSET_GLOBAL, &unix.socket_sk, true)
                .override_global(SOCK_FAMILY_OFFSET_GLOBAL, &unix.sock_family, true)
                .override_global(UNIX_PEER_OFFSET_GLOBAL, &unix.unix_peer, true)
                .override_global(UNIX_DENTRY_OFFSET_GLOBAL, &unix.unix_dentry, true);
        }
    }

    fn maps(&self) -> &'static [&'static str] {
        &[ESCAPE_ATTEMPTS_MAP, ESCAPE_SETUP_MAP]
    }

    fn map_entries(&self, config: &Config) -> Vec<(&'static str, u32)> {
        vec![(ESCAPE_ATTEMPTS_MAP, config.security.escape_max_entries)]
    }

    fn pinned_maps(&self) -> &'static [&'static str] {
        &[ESCAPE_ATTEMPTS_MAP]
    }

    fn bounds(&self) -> &'static [(&'static str, u32)] {
        &[(ESCAPE_ATTEMPTS_MAP, map_full::ESCAPE_ATTEMPTS), (ESCAPE_SETUP_MAP, map_full::ESCAPE_SETUP)]
    }

    fn attach(&self, cx: &mut AttachContext<'_>) -> anyhow::Result<Box<dyn Attached>> {
        // One overflow entry per answer, so that `other` keeps that label.
        let overflow = [answer::GRANTED, answer::DENIED, answer::FAILED].map(|answer| EscapeKey {
            cgroup_id: OVERFLOW_CGROUP_ID,
            syscall: 0,
            answer,
            detail: 0,
        });
        let attempts = CgroupCounters::take(
            cx.ebpf,
            ESCAPE_ATTEMPTS_MAP,
            cx.config.security.escape_max_entries,
            overflow,
        )?;
        let security = &cx.config.security;
        runtimes::recognise(cx.ebpf, &security.runtime_root, &security.runtime_binaries, "escape attempts")?;
        // The mkdir program first: a cgroup made between the two attaches is then remembered.
        load_and_attach(cx.ebpf, cx.btf, &PROGRAMS)?;
        Ok(Box::new(EscapeMaps { attempts }))
    }
}

/// Offsets on the path from a task to the file behind one of its descriptors
/// (`files->fdt->fd[n]`; `file.f_inode` and `inode.i_sb` are `runtimes`'), and what tells the
/// file apart (its inode's mode, how it was opened, its name, its file system), from the
/// running kernel's BTF.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileOffsets {
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub inode_mode: u32,
    pub file_mode: u32,
    /// `file.f_path.dentry`.
    pub file_dentry: u32,
    /// `dentry.d_name.name`.
    pub dentry_name: u32,
    pub sb_magic: u32,
}

impl FileOffsets {
    pub fn read(btf: &btf::Btf) -> Result<Self, btf::BtfError> {
        let dentry_in_path = btf.member_offset("path", "dentry")?;
        Ok(Self {
            task_files: btf.member_offset("task_struct", "files")?,
            files_fdt: btf.member_offset("files_struct", "fdt")?,
            fdtable_max_fds: btf.member_offset("fdtable", "max_fds")?,
            fdtable_fd: btf.member_offset("fdtable", "fd")?,
            inode_mode: btf.member_offset("inode", "i_mode")?,
            file_mode: btf.member_offset("file", "f_mode")?,
            file_dentry: btf.member_offset("file", "f_path")? + dentry_in_path,
            dentry_name: btf.member_offset("dentry", "d_name")? + btf.member_offset("qstr", "name")?,
            sb_magic: btf.member_offset("super_block", "s_magic")?,
        })
    }
}

/// Offsets from a socket's file to the name its Unix peer was bound to
/// (`file->private_data->sk`, its family, `unix_sock.peer`, `unix_sock.path.dentry`).
#[derive(Debug, Clone, Copy, Default)]
pub struct UnixOffsets {
    pub file_private_data: u32,
    pub socket_sk: u32,
    pub sock_family: u32,
    pub unix_peer: u32,
    pub unix_dentry: u32,
}

impl UnixOffsets {
    pub fn read(btf: &btf::Btf) -> Result<Self, btf::BtfError> {
        Ok(Self {
            file_private_data: btf.member_offset("file", "private_data")?,
            socket_sk: btf.member_offset("socket", "sk")?,
            sock_family: btf.member_offset("sock", "__sk_common")?
                + btf.member_offset("sock_common", "skc_family")?,
            unix_peer: btf.member_offset("unix_sock", "peer")?,
            unix_dentry: btf.member_offset("unix_sock", "path")? + btf.member_offset("path", "dentry")?,
        })
    }
}

/// The map of the attached `escape` family.
pub struct EscapeMaps {
    attempts: CgroupCounters<EscapeKey>,
}

impl EscapeMaps {
    /// Attempts per (cgroup, syscall, answer, detail).
    pub fn read(&self) -> (Vec<Row<EscapeKey>>, u64) {
        self.attempts.read()
    }
}

impl Attached for EscapeMaps {
    attached_any!();

    fn map_rows(&self) -> Vec<MapRow> {
        vec![self.attempts.map_row()]
    }

    fn recycle(&mut self, gone_for: &mut dyn FnMut(u64) -> Option<Duration>, grace: Duration) -> usize {
        self.attempts.recycle(gone_for, grace)
    }
}
