//! What kernsight's eBPF objects cost: kernel memory per map (per-CPU maps count once per
//! possible CPU), and, while the kernel's BPF statistics are on, run time and runs per program.

use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
    time::Duration,
};

use aya::Ebpf;
use tracing::{info, warn};

/// The maps this process holds, found once after loading: a scrape then reads the fdinfo of
/// these descriptors alone. Scanning every descriptor (programs, links, sockets too) and asking
/// the kernel each map's name was most of the agent's own collector, 2 ms a scrape.
#[derive(Debug)]
pub struct HeldMaps(Vec<HeldMap>);

#[derive(Debug)]
struct HeldMap {
    fd: i32,
    /// The map the descriptor referred to when found: a descriptor closed since (a family
    /// that let its maps go) and reused is not taken for it.
    id: u32,
    name: String,
}

impl HeldMaps {
    /// Every map descriptor in `/proc/self/fdinfo`, each map once however many descriptors refer
    /// to it, named by the object's full map names `names` (the kernel keeps 15 characters).
    pub fn find(names: &[String]) -> Self {
        let mut seen = std::collections::HashSet::new();
        let mut maps = Vec::new();
        let Ok(fds) = std::fs::read_dir("/proc/self/fdinfo") else { return Self(maps) };
        for entry in fds.flatten() {
            let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
            let Some(info) = read_fdinfo(fd) else { continue };
            if seen.insert(info.id) {
                let name = full_name(&kernel_map_name(fd).unwrap_or_default(), names);
                maps.push(HeldMap { fd, id: info.id, name });
            }
        }
        Self(maps)
    }

    /// Kernel memory of each map, by map name, from its descriptor's fdinfo (`memlock`: what
    /// the kernel charges for the map, its per-CPU copies included; for maps that allocate as
    /// they fill, what they hold now).
    pub fn memory(&self) -> BTreeMap<String, u64> {
        let mut memory = BTreeMap::new();
        for map in &self.0 {
            if let Some(info) = read_fdinfo(map.fd).filter(|info| info.id == map.id) {
                *memory.entry(map.name.clone()).or_default() += info.memlock;
            }
        }
        memory
    }
}

fn read_fdinfo(fd: i32) -> Option<MapFdInfo> {
    parse_fdinfo(&std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?)
}

#[derive(Debug, PartialEq, Eq)]
struct MapFdInfo {
    id: u32,
    memlock: u64,
}

/// The fields of a map descriptor's fdinfo that matter here; `None` for other descriptors.
fn parse_fdinfo(text: &str) -> Option<MapFdInfo> {
    let field = |name: &str| {
        text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')?.trim().parse::<u64>().ok())
    };
    Some(MapFdInfo { id: u32::try_from(field("map_id")?).ok()?, memlock: field("memlock")? })
}

/// The object's name for a (possibly truncated) kernel map name.
fn full_name(kernel_name: &str, names: &[String]) -> String {
    if kernel_name.is_empty() {
        return "unnamed".to_owned();
    }
    let mut candidates = names.iter().filter(|name| name.starts_with(kernel_name));
    match (candidates.next(), candidates.next()) {
        (Some(name), None) => name.clone(),
        _ => kernel_name.to_owned(),
    }
}

/// The map's name as the kernel holds it (`BPF_OBJ_GET_INFO_BY_FD` on a descriptor this process
/// owns: no privilege beyond holding it).
fn kernel_map_name(fd: i32) -> Option<String> {
    // The head of `struct bpf_map_info`: type, id, key_size, value_size, max_entries, map_flags,
    // name[16]. The kernel fills at most `info_len` bytes.
    #[repr(C)]
    #[derive(Default)]
    struct MapInfoHead {
        header: [u32; 6],
        name: [u8; 16],
    }
    let mut head = MapInfoHead::default();
    obj_get_info(fd, &mut head)?;
    let len = head.name.iter().position(|&b| b == 0).unwrap_or(head.name.len());
    Some(String::from_utf8_lossy(&head.name[..len]).into_owned())
}

/// The kernel's BPF run-time statistics, on for as long as this lives (they cost two clock reads
/// per program run, for every program on the node, hence opt-in).
pub struct RunStats(#[allow(dead_code)] OwnedFd);

impl std::fmt::Debug for RunStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RunStats").field(&self.0.as_raw_fd()).finish()
    }
}

impl RunStats {
    pub fn enable() -> Option<Self> {
        match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
            Ok(fd) => {
                info!("BPF run-time statistics on (bpf.program_stats)");
                Some(Self(fd))
            }
            Err(err) => {
                warn!("cannot turn on BPF run-time statistics ({err}): program run times are not exported");
                None
            }
        }
    }
}

/// Runs of each named program that the kernel skipped because a BPF program was already running
/// on that CPU (`bpf_prog_info.recursion_misses`, 5.12+: e.g. a softirq's network program
/// interrupting another program, or a program hit again from inside itself). Counted by the
/// kernel whether or not its statistics are on. Programs whose kernel lacks the field are left
/// out.
pub fn recursion_misses<'a>(ebpf: &Ebpf, names: impl Iterator<Item = &'a str>) -> Vec<(&'a str, u64)> {
    names
        .filter_map(|name| {
            let fd = ebpf.program(name)?.fd().ok()?;
            Some((name, program_recursion_misses(fd.as_fd().as_raw_fd())?))
        })
        .collect()
}

/// Offset of `recursion_misses` in `struct bpf_prog_info` (after `run_time_ns` and `run_cnt`;
/// the same on every architecture: the struct is made of fixed-size, 8-byte aligned fields).
const RECURSION_MISSES_OFFSET: usize = 208;

/// `bpf_prog_info.recursion_misses` of the program behind `fd`, or `None` when the kernel's
/// struct ends before it (older than 5.12) or the call fails.
fn program_recursion_misses(fd: i32) -> Option<u64> {
    #[repr(C)]
    struct ProgInfoHead {
        head: [u8; RECURSION_MISSES_OFFSET],
        recursion_misses: u64,
    }
    // Zeroed: the kernel refuses non-zero bytes past its own struct, and copies nothing out
    // through the null pointers (instructions, map ids) of the head.
    let mut info = ProgInfoHead { head: [0; RECURSION_MISSES_OFFSET], recursion_misses: 0 };
    // Older kernels fill less than up to the field's end.
    let filled = obj_get_info(fd, &mut info)?;
    (filled >= size_of::<ProgInfoHead>()).then_some(info.recursion_misses)
}

/// `BPF_OBJ_GET_INFO_BY_FD` of a map or program descriptor this process owns (no privilege
/// beyond holding it) into `info`, the head of the kernel's info struct as a plain `#[repr(C)]`
/// value, zeroed: the number of bytes the kernel filled, or `None` when the call fails.
fn obj_get_info<T>(fd: i32, info: &mut T) -> Option<usize> {
    #[repr(C)]
    struct GetInfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let mut attr = GetInfoAttr {
        bpf_fd: u32::try_from(fd).ok()?,
        info_len: u32::try_from(size_of::<T>()).ok()?,
        info: std::ptr::from_mut(info) as u64,
    };
    // SAFETY: `attr` and `info` outlive the call, and the kernel writes at most `info_len` bytes.
    let result = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, &raw mut attr, size_of::<GetInfoAttr>())
    };
    (result == 0).then_some(attr.info_len as usize)
}

/// Run time and runs of each named program, summed over CPUs since it was loaded.
pub fn program_runs<'a>(ebpf: &Ebpf, names: impl Iterator<Item = &'a str>) -> Vec<(&'a str, Duration, u64)> {
    names
        .filter_map(|name| {
            let info = ebpf.program(name)?.info().ok()?;
            Some((name, info.run_time(), info.run_count()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::fd::FromRawFd as _;

    use super::*;
    use crate::testing::privileged;

    /// A one-entry array map of 4 KiB values named `name`, created with the raw syscall.
    fn array_map(name: &str) -> OwnedFd {
        #[repr(C)]
        struct MapCreateAttr {
            map_type: u32,
            key_size: u32,
            value_size: u32,
            max_entries: u32,
            map_flags: u32,
            inner_map_fd: u32,
            numa_node: u32,
            map_name: [u8; 16],
        }
        const BPF_MAP_CREATE: libc::c_long = 0;
        const BPF_MAP_TYPE_ARRAY: u32 = 2;
        let mut attr = MapCreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: 4096,
            max_entries: 1,
            map_flags: 0,
            inner_map_fd: 0,
            numa_node: 0,
            map_name: [0; 16],
        };
        attr.map_name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: `attr` outlives the call and is the head of `union bpf_attr` for this command.
        let fd = unsafe {
            libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, &raw mut attr, size_of::<MapCreateAttr>())
        };
        assert!(fd >= 0, "BPF_MAP_CREATE: {}", std::io::Error::last_os_error());
        // SAFETY: a new descriptor the call returned, owned by nothing else.
        unsafe { OwnedFd::from_raw_fd(fd as i32) }
    }

    #[test]
    fn held_maps_are_read_by_their_descriptor_and_a_reused_one_is_not_taken_for_them() {
        if !privileged("held_maps_are_read_by_their_descriptor") {
            return;
        }
        // Other tests of this process may hold maps as well: only these two are asserted on.
        let held = array_map("KS_TEST_HELD");
        let names = ["KS_TEST_HELD_FULL_NAME".to_owned()];
        let maps = HeldMaps::find(&names);
        let memory = maps.memory();
        let bytes = memory.get("KS_TEST_HELD_FULL_NAME").copied().unwrap_or_default();
        assert!(bytes >= 4096, "the map's value is charged: {memory:?}");

        // The descriptor now refers to another map (dup2 closes the first and reuses its number
        // at once, so no other test's descriptor can take it in between).
        let other = array_map("KS_TEST_OTHER");
        // SAFETY: both descriptors are this test's own; `held` keeps owning its number.
        assert!(unsafe { libc::dup2(other.as_raw_fd(), held.as_raw_fd()) } >= 0);
        let memory = maps.memory();
        assert!(!memory.contains_key("KS_TEST_HELD_FULL_NAME"), "taken for the map it was: {memory:?}");
        assert!(!memory.contains_key("KS_TEST_OTHER"), "a map not held when found: {memory:?}");
    }

    #[test]
    fn reads_map_fdinfo() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1049\nmap_type:\t6\nkey_size:\t4\n\
                    value_size:\t4096\nmax_entries:\t513\nmap_flags:\t0x0\nmap_extra:\t0x0\n\
                    memlock:\t4263936\nmap_id:\t417\nfrozen:\t0\n";
        assert_eq!(parse_fdinfo(text), Some(MapFdInfo { id: 417, memlock: 4_263_936 }));
        assert_eq!(parse_fdinfo("pos:\t0\nflags:\t0100000\nmnt_id:\t24\nino:\t3\n"), None);
        assert_eq!(parse_fdinfo("map_id:\tx\nmemlock:\t1\n"), None);
    }

    #[test]
    fn names_truncated_maps_by_the_object() {
        let names = ["PROCESS_EVENTS".to_owned(), "PROCESS_EVENTS_LOST".to_owned(), "MAP_FULL".to_owned()];
        assert_eq!(full_name("PROCESS_EVENTS_", &names), "PROCESS_EVENTS_LOST");
        assert_eq!(full_name("MAP_FULL", &names), "MAP_FULL");
        // Ambiguous or unknown: the kernel's name as it is.
        assert_eq!(full_name("PROCESS_EVENT", &names), "PROCESS_EVENT");
        assert_eq!(full_name("", &names), "unnamed");
    }
}
