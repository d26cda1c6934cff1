//! What a descriptor that a successful open or connect returned refers to, read from the
//! kernel's own objects: the caller's path and flags can be dressed up (a symlink or a hard link
//! under another name, a path longer than the program reads, flags or an address rewritten by
//! another thread before the exit reads them), the opened file cannot.
//!
//! Each step follows `files->fdt->fd[fd]`: the table as the object reads the current task; the
//! slot, which the verifier cannot bound, and what follows it with `bpf_probe_read_kernel`.
//! Another thread can swap the descriptor in the microseconds between the call and the exit;
//! each try it loses is counted, so it cannot hide the attempts it makes.

use kernsight_common::escape::{HOST_FILES, RUNTIME_SOCKETS, detail, host_file_system, last_component};

use crate::{
    features,
    runtimes::{FILE_INODE_OFFSET, INODE_SB_OFFSET},
    task::{KernelRead, Probe, global},
};

#[unsafe(no_mangle)]
static OPENED_FILES: u32 = 0;
#[unsafe(no_mangle)]
static TASK_FILES_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static FILES_FDT_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static FDTABLE_MAX_FDS_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static FDTABLE_FD_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static INODE_MODE_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static FILE_MODE_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static FILE_DENTRY_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static DENTRY_NAME_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static SB_MAGIC_OFFSET: u32 = 0;

#[unsafe(no_mangle)]
static UNIX_PEERS: u32 = 0;
#[unsafe(no_mangle)]
static FILE_PRIVATE_DATA_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static SOCKET_SK_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static SOCK_FAMILY_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static UNIX_PEER_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static UNIX_DENTRY_OFFSET: u32 = 0;

const S_IFMT: u16 = 0o170000;
const S_IFBLK: u16 = 0o060000;
const S_IFSOCK: u16 = 0o140000;
const FMODE_WRITE: u32 = 0x2;
const AF_UNIX: u16 = 1;

/// Whether successful opens are told by their file (else by the caller's arguments).
#[inline(always)]
pub(super) fn opens_known() -> bool {
    global(&OPENED_FILES) != 0
}

/// Whether successful connects are told by their peer (else by the caller's address).
#[inline(always)]
pub(super) fn connects_known() -> bool {
    global(&OPENED_FILES) != 0 && global(&UNIX_PEERS) != 0
}

/// The vector detail of the file that an open returned as `fd`: a block device (read or
/// write, by how it was opened), or a host-control file opened for writing, by its own name
/// on its own file system; `None` for anything else.
#[inline(always)]
pub(super) fn opened(fd: u64) -> Option<u16> {
    let file = file(fd)?;
    // SAFETY: `file` is a `struct file` the task's table held; every read is checked by the
    // helper; offsets from the kernel's BTF.
    unsafe {
        let inode: *const u8 = Probe::read(file, global(&FILE_INODE_OFFSET));
        if inode.is_null() {
            return None;
        }
        let writing = Probe::read::<u32>(file, global(&FILE_MODE_OFFSET)) & FMODE_WRITE != 0;
        if Probe::read::<u16>(inode, global(&INODE_MODE_OFFSET)) & S_IFMT == S_IFBLK {
            return Some(if writing { detail::BLOCK_WRITE } else { detail::BLOCK_READ });
        }
        if !writing {
            return None;
        }
        let detail = named(Probe::read(file, global(&FILE_DENTRY_OFFSET)), &HOST_FILES)?;
        let sb: *const u8 = Probe::read(inode, global(&INODE_SB_OFFSET));
        let magic: u64 = Probe::read(sb, global(&SB_MAGIC_OFFSET));
        (magic == host_file_system(detail)).then_some(detail)
    }
}

/// The vector detail of the Unix socket `fd` was connected to: the runtime socket named by the
/// path its listener was bound to (`unix_sock.path`, which the kernel copies to the peer a
/// stream connect makes); `None` for any other socket.
#[inline(always)]
pub(super) fn connected(fd: u64) -> Option<u16> {
    let file = file(fd)?;
    // SAFETY: as in `opened`.
    unsafe {
        let inode: *const u8 = Probe::read(file, global(&FILE_INODE_OFFSET));
        if inode.is_null() || Probe::read::<u16>(inode, global(&INODE_MODE_OFFSET)) & S_IFMT != S_IFSOCK {
            return None;
        }
        let socket: *const u8 = Probe::read(file, global(&FILE_PRIVATE_DATA_OFFSET));
        let sock: *const u8 = Probe::read(socket, global(&SOCKET_SK_OFFSET));
        if sock.is_null() || Probe::read::<u16>(sock, global(&SOCK_FAMILY_OFFSET)) != AF_UNIX {
            return None;
        }
        let peer: *const u8 = Probe::read(sock, global(&UNIX_PEER_OFFSET));
        if peer.is_null() {
            return None;
        }
        named(Probe::read(peer, global(&UNIX_DENTRY_OFFSET)), &RUNTIME_SOCKETS)
    }
}

/// The `struct file` at descriptor `fd` of the current task.
#[inline(always)]
fn file(fd: u64) -> Option<*const u8> {
    // SAFETY: the current task, read as the object's features say, each pointer checked before
    // it is followed; offsets from the kernel's BTF.
    unsafe {
        let task = features::current_task();
        let files: *const u8 = features::CurrentRead::read(task, global(&TASK_FILES_OFFSET));
        if files.is_null() {
            return None;
        }
        let table: *const u8 = features::CurrentRead::read(files, global(&FILES_FDT_OFFSET));
        if table.is_null() {
            return None;
        }
        let max_fds: u32 = features::CurrentRead::read(table, global(&FDTABLE_MAX_FDS_OFFSET));
        let slots: *const u8 = features::CurrentRead::read(table, global(&FDTABLE_FD_OFFSET));
        if fd >= u64::from(max_fds) || slots.is_null() {
            return None;
        }
        let file: *const u8 = Probe::read(slots.wrapping_add((fd as usize) * 8), 0);
        (!file.is_null()).then_some(file)
    }
}

/// The detail of the entry of `names` that `dentry`'s own name is.
#[inline(always)]
fn named(dentry: *const u8, names: &[(&[u8], u16)]) -> Option<u16> {
    if dentry.is_null() {
        return None;
    }
    let mut buf = core::mem::MaybeUninit::uninit();
    let buf = super::PathBuffer::zeroed(&mut buf);
    // SAFETY: a dentry's name pointer, read and followed by the helpers, the copy bounded to
    // `buf`.
    let len = unsafe {
        let name: *const u8 = Probe::read(dentry, global(&DENTRY_NAME_OFFSET));
        aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes(name, &mut buf.0).ok()?.len()
    };
    // A name has no '/': it matches only as a whole.
    last_component(&buf.0, len, names)
}
