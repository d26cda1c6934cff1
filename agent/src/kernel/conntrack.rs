//! conntrack: a namespace's statistics and fill (`/proc/net/stat/nf_conntrack`), its addresses
//! (to know which entries a pod opened), and a table's entries by original source address (a
//! ctnetlink dump of the calling thread's namespace, so that `netns::run_in` can dump another).

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::fs::MetadataExt as _,
    path::Path,
};

/// The statistics exported, as the kernel's header names them and as the `event` label says
/// them. The others (`found`, `new`, `delete`... ) are 0 on current kernels or say nothing
/// about failures.
pub const EVENTS: [(&str, &str); 7] = [
    ("insert_failed", "insert_failed"),
    ("drop", "drop"),
    ("early_drop", "early_drop"),
    ("invalid", "invalid"),
    ("icmp_error", "icmp_error"),
    ("clashres", "clash_resolved"),
    ("search_restart", "search_restart"),
];

/// `/proc/net/stat/nf_conntrack`: a header of column names, then one row of hexadecimal
/// counters per CPU. Returns the `EVENTS` present, by label, summed over CPUs. Columns are found
/// by name: kernels add and rename them (older ones have `searched` where 6.x has `clashres`).
pub fn parse_stats(text: &str) -> BTreeMap<&'static str, u64> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else { return BTreeMap::new() };
    let columns: Vec<Option<&'static str>> = header
        .split_whitespace()
        .map(|name| EVENTS.iter().find(|(kernel, _)| *kernel == name).map(|(_, label)| *label))
        .collect();
    let mut sums = BTreeMap::new();
    for line in lines {
        let values: Vec<u64> =
            line.split_whitespace().map_while(|v| u64::from_str_radix(v, 16).ok()).collect();
        if values.len() != columns.len() {
            continue;
        }
        for (label, value) in columns.iter().zip(values) {
            if let Some(label) = label {
                let sum: &mut u64 = sums.entry(*label).or_default();
                *sum = sum.saturating_add(value);
            }
        }
    }
    sums
}

/// The calling thread's namespace's statistics; `None` without conntrack there.
pub fn read_stats() -> Option<BTreeMap<&'static str, u64>> {
    std::fs::read_to_string("/proc/thread-self/net/stat/nf_conntrack").ok().map(|t| parse_stats(&t))
}

/// What `/proc/PID/net` shows of the network namespace of a process. Readable for any
/// process (unlike `/proc/PID/ns/net`, which needs ptrace access): no CAP_SYS_PTRACE or
/// CAP_SYS_ADMIN is needed to read a pod's table.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProcessNamespace {
    /// Entries in its table (the `entries` column); `None` without conntrack.
    pub entries: Option<u64>,
    pub events: BTreeMap<&'static str, u64>,
    /// Its interfaces' addresses: IPv4 local ones, IPv6 global ones; loopback left out.
    pub addresses: Vec<IpAddr>,
}

/// An identity of the network namespace of `pid`, readable without ptrace access: the inode
/// of `/proc/PID/net/dev`, an entry each namespace's procfs creates for itself.
pub fn namespace_key(proc_root: &Path, pid: u32) -> Option<u64> {
    std::fs::metadata(proc_root.join(pid.to_string()).join("net/dev")).ok().map(|m| m.ino())
}

/// Reads the namespace of `pid` through `/proc/PID/net`, keeping at most `max_addresses`.
pub fn read_process_namespace(proc_root: &Path, pid: u32, max_addresses: usize) -> ProcessNamespace {
    let stats = read_process_net(proc_root, pid, "stat/nf_conntrack");
    let mut addresses = read_process_addresses(proc_root, pid);
    addresses.truncate(max_addresses);
    ProcessNamespace {
        entries: stats.as_deref().and_then(parse_entries),
        events: stats.as_deref().map(parse_stats).unwrap_or_default(),
        addresses,
    }
}

/// The conntrack statistics of the namespace of `pid`; empty without conntrack there.
pub fn read_process_events(proc_root: &Path, pid: u32) -> BTreeMap<&'static str, u64> {
    read_process_net(proc_root, pid, "stat/nf_conntrack").map(|t| parse_stats(&t)).unwrap_or_default()
}

/// The addresses of the namespace of `pid`: IPv4 local ones, IPv6 global ones; loopback left
/// out.
pub fn read_process_addresses(proc_root: &Path, pid: u32) -> Vec<IpAddr> {
    let mut addresses =
        read_process_net(proc_root, pid, "fib_trie").map(|t| parse_fib_trie_local(&t)).unwrap_or_default();
    addresses.extend(
        read_process_net(proc_root, pid, "if_inet6").map(|t| parse_if_inet6_global(&t)).unwrap_or_default(),
    );
    addresses
}

fn read_process_net(proc_root: &Path, pid: u32, name: &str) -> Option<String> {
    std::fs::read_to_string(proc_root.join(pid.to_string()).join("net").join(name)).ok()
}

/// The `entries` column of `/proc/net/stat/nf_conntrack`: the namespace's count, the same on
/// every row.
fn parse_entries(text: &str) -> Option<u64> {
    let mut lines = text.lines();
    let column = lines.next()?.split_whitespace().position(|name| name == "entries")?;
    u64::from_str_radix(lines.next()?.split_whitespace().nth(column)?, 16).ok()
}

/// The local IPv4 addresses of `/proc/net/fib_trie`: a `|-- ADDRESS` line followed by a
/// `/32 host LOCAL` one. Loopback addresses are left out; each address once.
pub fn parse_fib_trie_local(text: &str) -> Vec<IpAddr> {
    let mut found: Vec<IpAddr> = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(address) = line.strip_prefix("|-- ") {
            last = address.parse().ok();
        } else if line.starts_with("/32 host LOCAL")
            && let Some(address) = last
            && !address.is_loopback()
            && !found.contains(&IpAddr::V4(address))
        {
            found.push(IpAddr::V4(address));
        }
    }
    found
}

/// The global IPv6 addresses of `/proc/net/if_inet6` (`ADDRESS IFINDEX PREFIX SCOPE FLAGS
/// NAME`, scope 00 global).
pub fn parse_if_inet6_global(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 6 || fields[3] != "00" || fields[0].len() != 32 {
                return None;
            }
            u128::from_str_radix(fields[0], 16).ok().map(|v| IpAddr::V6(Ipv6Addr::from(v)))
        })
        .collect()
}

pub use ctnetlink::{Destination, TableCounts, count_table};

mod ctnetlink;

#[cfg(test)]
mod tests;
