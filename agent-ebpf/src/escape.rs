//! The `escape` family: attempts at what container escapes are made of, counted at the syscall
//! exit (`syscalls::ks_sys_exit` calls `syscall_exit`) per (cgroup, syscall, answer, detail).
//!
//! Cost: every syscall pays one load from a read-only bitmap and a shift (pruned entirely when
//! the family is off). Only the ~40 candidate syscalls go on, arguments first: the registers
//! (forks without namespaces, FIFOs, PTRACE_TRACEME end there), then what they point to where it
//! decides: a file system type, up to 128 bytes of a path (refused opens for writing and
//! connects to Unix sockets). A successful open or Unix connect is told by what it returned
//! (`files`): the fd table to the file, its inode and their modes (four loads, four
//! `bpf_probe_read_kernel`), then, for a write or a connect, the name of the file or of the
//! listening socket. Only an attempt looks up the cgroups being set up, checks for runc, and
//! updates the per-CPU hash.
//!
//! The runtime's own calls are not counted:
//! - its setup of a new cgroup: `ks_escape_cgroup_mkdir` remembers each new cgroup in
//!   `ESCAPE_SETUP`; candidates in it are skipped until the first exec there after a
//!   `pivot_root` or `chroot` (`ks_escape_exec`: the entrypoint, after runc's and crun's setup),
//!   or `SETUP_MAX_NS` after the mkdir. A workload runs only after that exec, so it cannot hide
//!   in the window; one that creates a cgroup of its own (which needs write access to cgroupfs)
//!   gets `SETUP_MAX_NS` unseen there.
//! - runc's stages entering a running container (`exec`): `runtimes::runtime_stage`.
//!
//! x86_64 only (syscall numbers and argument registers); on other architectures the exit counts
//! nothing and the agent says the family cannot run.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map},
    maps::{LruHashMap, PerCpuHashMap},
    programs::BtfTracePointContext,
};
use kernsight_common::{
    counters::{OVERFLOW_CGROUP_ID, map_full},
    escape::{
        CANDIDATE_BITS, CANDIDATE_LIMIT, DEFAULT_ESCAPE_ATTEMPTS_ENTRIES, ESCAPE_SETUP_ENTRIES, EscapeKey,
        PATH_BYTES, Registers, SETUP_MAX_NS, SETUP_PIVOTED, answer, denied, from_registers, nr,
    },
    syscalls::V1_CGROUP_ID_BIT,
};

use crate::{
    cgroups::{CGROUP_ROOT_OFFSET, ROOT_HIERARCHY_ID_OFFSET},
    counters::{add, count_map_full},
    features,
    runtimes::runtime_stage,
    task::{cgroup_id, current_cgroup, global, load},
};

#[unsafe(no_mangle)]
static ESCAPE_ENABLED: u32 = 0;

/// `CANDIDATE_BITS`, as read-only data the exit indexes.
static CANDIDATES: [u64; 8] = CANDIDATE_BITS;

/// `CANDIDATES.len() - 1`, read as a global so that the compiler keeps the mask: it knows the
/// syscall is below `CANDIDATE_LIMIT` and would drop a constant one, and verifiers before 5.13
/// forget that bound when the number is spilled and reloaded (as `syscalls::COLUMN_MASK`).
#[unsafe(no_mangle)]
static CANDIDATE_WORD_MASK: u64 = 7;

#[map]
static ESCAPE_ATTEMPTS: PerCpuHashMap<EscapeKey, u64> =
    PerCpuHashMap::with_max_entries(DEFAULT_ESCAPE_ATTEMPTS_ENTRIES, 0);

#[map]
static ESCAPE_SETUP: LruHashMap<u64, u64> = LruHashMap::with_max_entries(ESCAPE_SETUP_ENTRIES, 0);

/// Called by the syscall exit for every syscall: counts an attempt when `syscall` is a
/// candidate, `ret` its return value, `regs` its `pt_regs`.
#[inline(always)]
pub(crate) fn syscall_exit(regs: *const u8, syscall: u64, ret: i64, cgroup_id: u64) {
    if global(&ESCAPE_ENABLED) == 0 || syscall >= u64::from(CANDIDATE_LIMIT) {
        return;
    }
    let index = ((syscall >> 6) & global(&CANDIDATE_WORD_MASK)) as usize;
    // SAFETY: a read-only array, indexed below its length (the mask).
    let word = unsafe { core::ptr::read_volatile(CANDIDATES.get_unchecked(index)) };
    if word >> (syscall & 63) & 1 == 0 {
        return;
    }
    attempt(regs, syscall as u32, ret, cgroup_id);
}

#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
fn attempt(regs: *const u8, syscall: u32, ret: i64, cgroup_id: u64) {
    if syscall == nr::PIVOT_ROOT || syscall == nr::CHROOT {
        being_set_up(cgroup_id, syscall, ret); // they only tell the runtime's setup
        return;
    }
    // clone and clone3 return twice: 0 in the child, whose attempt the parent counts.
    if ret == 0 && (syscall == nr::CLONE || syscall == nr::CLONE3) {
        return;
    }
    // The arguments first: most opens are of ordinary files and most clones make no
    // namespace, and those end here, before any map is looked at.
    let registers = args::registers(regs);
    let detail = match from_registers(syscall, registers) {
        Registers::Detail(detail) => detail,
        Registers::NotAVector => return,
        Registers::UserMemory => match args::from_memory(syscall, registers, ret) {
            Some(detail) => detail,
            None => return, // a clock read, an open of another file...
        },
    };
    if being_set_up(cgroup_id, syscall, ret) {
        return; // the runtime setting the new cgroup up
    }
    // SAFETY: the current task, read as the object's features say.
    if unsafe { runtime_stage::<features::CurrentRead>(features::current_task()) } {
        return; // runc entering the container (exec)
    }
    let answer = match ret {
        0.. => answer::GRANTED,
        _ if denied(ret.unsigned_abs() as u32) => answer::DENIED,
        _ => answer::FAILED,
    };
    let key = EscapeKey { cgroup_id, syscall, answer, detail };
    let overflow = || EscapeKey { cgroup_id: OVERFLOW_CGROUP_ID, syscall: 0, answer, detail: 0 };
    add(&ESCAPE_ATTEMPTS, &key, overflow, map_full::ESCAPE_ATTEMPTS, 1);
}

#[cfg(not(bpf_target_arch = "x86_64"))]
#[inline(always)]
fn attempt(_regs: *const u8, _syscall: u32, _ret: i64, _cgroup_id: u64) {}

/// Whether `cgroup_id` is still being set up by the runtime (its candidates are the runtime's);
/// notes a successful `pivot_root` or `chroot` there, and forgets the cgroup once its time is up.
#[inline(always)]
fn being_set_up(cgroup_id: u64, syscall: u32, ret: i64) -> bool {
    let Some(state) = ESCAPE_SETUP.get_ptr_mut(&cgroup_id) else {
        return false;
    };
    // SAFETY: the map's value, a plain u64; helper without preconditions.
    unsafe {
        let since = *state & !SETUP_PIVOTED;
        if bpf_ktime_get_ns().saturating_sub(since) < SETUP_MAX_NS {
            if ret == 0 && (syscall == nr::PIVOT_ROOT || syscall == nr::CHROOT) {
                *state |= SETUP_PIVOTED;
            }
            return true;
        }
    }
    let _ = ESCAPE_SETUP.remove(&cgroup_id);
    false
}

/// cgroup_mkdir(struct cgroup *cgrp, const char *path): a runtime may be about to set it up.
#[btf_tracepoint(function = "cgroup_mkdir")]
pub fn ks_escape_cgroup_mkdir(ctx: BtfTracePointContext) -> i32 {
    let cgroup: *mut aya_ebpf::bindings::cgroup = ctx.arg(0);
    // SAFETY: the tracepoint's BTF argument, at offsets from the kernel's BTF; helper without
    // preconditions.
    let (id, hierarchy, now) = unsafe {
        let root: *const u8 = load(cgroup as *const u8, global(&CGROUP_ROOT_OFFSET));
        (cgroup_id(cgroup), load::<i32>(root, global(&ROOT_HIERARCHY_ID_OFFSET)), bpf_ktime_get_ns())
    };
    // Tagged as the syscall exit tags a v1 cgroup's id (hierarchy 0 is the unified one).
    let id = if hierarchy == 0 { id } else { id | V1_CGROUP_ID_BIT };
    // An LRU map makes room by evicting, so an insert fails only under memory pressure.
    if ESCAPE_SETUP.insert(&id, &(now & !SETUP_PIVOTED), 0).is_err() {
        count_map_full(map_full::ESCAPE_SETUP);
    }
    0
}

/// sched_process_exec: the first exec in a cgroup after the runtime pivoted into the container's
/// root is the entrypoint's: the setup is over.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn ks_escape_exec(_ctx: BtfTracePointContext) -> i32 {
    let (_, cgroup_id) = current_cgroup();
    if let Some(state) = ESCAPE_SETUP.get_ptr(&cgroup_id)
        // SAFETY: the map's value, a plain u64.
        && unsafe { *state } & SETUP_PIVOTED != 0
    {
        let _ = ESCAPE_SETUP.remove(&cgroup_id);
    }
    0
}

/// What the arguments of a candidate say (x86_64: `pt_regs` holds them at the exit too), where
/// user memory decides.
#[cfg(bpf_target_arch = "x86_64")]
mod args {
    use aya_ebpf::helpers::{bpf_probe_read_user, bpf_probe_read_user_str_bytes};
    use kernsight_common::escape::{
        CLONE_NEWTIME, HOST_FILES, OPEN_FOR_WRITING, RUNTIME_SOCKETS, Registers, detail, last_component,
        namespaces, nr,
    };

    use crate::task::load;

    /// Offsets in `struct pt_regs` of the first four arguments (di, si, dx, r10).
    const ARG_OFFSETS: [u32; 4] = [14 * 8, 13 * 8, 12 * 8, 7 * 8];
    const MS_BIND: u64 = 0x1000;
    const AF_UNIX: u16 = 1;

    /// The first four argument registers.
    #[inline(always)]
    pub(super) fn registers(regs: *const u8) -> [u64; 4] {
        // SAFETY: `regs` is the tracepoint's BTF `pt_regs` pointer; the offsets are in it.
        ARG_OFFSETS.map(|offset| unsafe { load::<u64>(regs, offset) })
    }

    /// The detail that the user memory `args` point to (or, for an open, the file opened)
    /// decides; `None`: no vector after all.
    #[inline(always)]
    pub(super) fn from_memory(syscall: u32, args: [u64; 4], ret: i64) -> Option<u16> {
        match syscall {
            nr::MOUNT => Some(mount(args[0], args[2], args[3])),
            nr::FSOPEN => Some(filesystem(args[0])),
            nr::CLONE3 => {
                // struct clone_args starts with the u64 flags.
                // SAFETY: the helper checks the user address.
                let flags = unsafe { bpf_probe_read_user(args[0] as *const u64) }.ok()?;
                match namespaces(flags, CLONE_NEWTIME) {
                    Registers::Detail(detail) => Some(detail),
                    _ => None,
                }
            }
            nr::ADJTIMEX => clock_change(args[0]),
            nr::CLOCK_ADJTIME => clock_change(args[1]),
            nr::OPEN | nr::OPENAT | nr::OPENAT2 => {
                if ret >= 0 && super::files::opens_known() {
                    return super::files::opened(ret as u64);
                }
                let (path, flags) = match syscall {
                    nr::OPEN => (args[0], args[1]),
                    nr::OPENAT => (args[1], args[2]),
                    // struct open_how starts with the u64 flags.
                    // SAFETY: the helper checks the user address.
                    _ => (args[1], unsafe { bpf_probe_read_user(args[2] as *const u64) }.ok()?),
                };
                if flags & OPEN_FOR_WRITING == 0 {
                    return None;
                }
                path_named(path, &HOST_FILES)
            }
            nr::CONNECT => {
                if ret == 0 && super::files::connects_known() {
                    return super::files::connected(args[0]);
                }
                // struct sockaddr_un: the family, then the path (abstract when it starts with 0).
                let address = args[1];
                // SAFETY: the helper checks the user address.
                let family = unsafe { bpf_probe_read_user(address as *const u16) }.ok()?;
                if family != AF_UNIX || args[2] <= 3 {
                    return None;
                }
                path_named(address + 2, &RUNTIME_SOCKETS)
            }
            _ => Some(detail::NONE),
        }
    }

    /// The detail of the entry of `names` the user path at `path` ends with, if any.
    #[inline(always)]
    fn path_named(path: u64, names: &[(&[u8], u16)]) -> Option<u16> {
        let mut buf = core::mem::MaybeUninit::uninit();
        let buf = super::PathBuffer::zeroed(&mut buf);
        // SAFETY: the helper checks the user address and bounds the copy to `buf`.
        let len = unsafe { bpf_probe_read_user_str_bytes(path as *const u8, &mut buf.0) }.ok()?.len();
        last_component(&buf.0, len, names)
    }

    /// mount(source, target, fstype, flags, data).
    #[inline(always)]
    fn mount(source: u64, fstype: u64, flags: u64) -> u16 {
        if flags & MS_BIND != 0 {
            return detail::FS_BIND;
        }
        match filesystem(fstype) {
            detail::FS_OTHER if starts_with(source, b"/dev/") => detail::FS_BLOCK_DEVICE,
            fs => fs,
        }
    }

    /// The file system type named by the user string at `name`.
    #[inline(always)]
    fn filesystem(name: u64) -> u16 {
        let mut buf = [0u8; 8];
        // SAFETY: the helper checks the user address and bounds the copy to `buf`.
        let Ok(read) = (unsafe { bpf_probe_read_user_str_bytes(name as *const u8, &mut buf) }) else {
            return detail::FS_OTHER;
        };
        match read {
            b"cgroup" | b"cgroup2" => detail::FS_CGROUP,
            b"proc" => detail::FS_PROC,
            b"sysfs" => detail::FS_SYSFS,
            b"devpts" => detail::FS_DEVPTS,
            _ => detail::FS_OTHER,
        }
    }

    #[inline(always)]
    fn starts_with(string: u64, prefix: &[u8; 5]) -> bool {
        // SAFETY: the helper checks the user address.
        unsafe { bpf_probe_read_user(string as *const [u8; 5]) }.is_ok_and(|bytes| &bytes == prefix)
    }

    /// adjtimex/clock_adjtime with a `struct timex` whose `modes` (its first u32) set something.
    #[inline(always)]
    fn clock_change(timex: u64) -> Option<u16> {
        // SAFETY: the helper checks the user address.
        let modes = unsafe { bpf_probe_read_user(timex as *const u32) }.ok()?;
        (modes != 0).then_some(detail::NONE)
    }
}

#[cfg(bpf_target_arch = "x86_64")]
mod files;

/// `PATH_BYTES` zeroed bytes for a string helper to fill, zeroed by volatile stores of eight
/// bytes each: `[0u8; PATH_BYTES]`, aligned or not, compiled to a call to an out-of-line
/// `memset` that stores one byte per loop turn, some 640 instructions for each path read.
#[cfg(bpf_target_arch = "x86_64")]
#[repr(C, align(8))]
struct PathBuffer([u8; PATH_BYTES]);
#[cfg(bpf_target_arch = "x86_64")]
const _: () = assert!(PATH_BYTES.is_multiple_of(8), "PathBuffer is zeroed in words");

#[cfg(bpf_target_arch = "x86_64")]
impl PathBuffer {
    /// `buffer`, zeroed in place: a zeroed value returned would be copied, and LLVM makes that
    /// copy of known zeroes a `memset` again.
    #[inline(always)]
    fn zeroed(buffer: &mut core::mem::MaybeUninit<Self>) -> &mut Self {
        let words = buffer.as_mut_ptr().cast::<u64>();
        let mut i = 0;
        while i < PATH_BYTES / 8 {
            // SAFETY: a word of the buffer, which is 8-aligned and PATH_BYTES (a multiple of
            // eight) long. Volatile, so that the stores are not merged back into a `memset`.
            unsafe { words.add(i).write_volatile(0) };
            i += 1;
        }
        // SAFETY: every byte was written above.
        unsafe { buffer.assume_init_mut() }
    }
}
