//! conntrack: a namespace's statistics and fill (`/proc/net/stat/nf_conntrack`), its addresses
//! (to know which entries a pod opened), and a table's entries by original source address (a
//! ctnetlink dump of the calling thread's namespace, so that `netns::run_in` can dump another).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::fs::MetadataExt as _,
    },
    path::Path,
    time::Duration,
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
/// by name: kernels add and rename them (5.10 has no `clashres`).
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
    let net = proc_root.join(pid.to_string()).join("net");
    let read = |name: &str| std::fs::read_to_string(net.join(name)).ok();
    let stats = read("stat/nf_conntrack");
    let mut addresses = read("fib_trie").map(|t| parse_fib_trie_local(&t)).unwrap_or_default();
    addresses.extend(read("if_inet6").map(|t| parse_if_inet6_global(&t)).unwrap_or_default());
    addresses.truncate(max_addresses);
    ProcessNamespace {
        entries: stats.as_deref().and_then(parse_entries),
        events: stats.as_deref().map(parse_stats).unwrap_or_default(),
        addresses,
    }
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

/// What one dump of a table found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SourceCounts {
    /// Entries whose original source is one of the addresses asked for, by address.
    pub by_source: HashMap<IpAddr, u64>,
    /// Entries read in all.
    pub entries: u64,
    /// The dump stopped at the bound before the table's end.
    pub truncated: bool,
}

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_IP: u16 = 1;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V6_SRC: u16 = 3;
/// Attribute types carry the nested and byte-order flags in their top bits.
const NLA_TYPE_MASK: u16 = 0x3fff;
/// A dump that stalls this long is abandoned (it runs on the scrape path's cache refresh).
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Dumps the calling thread's namespace's conntrack table (both families) and counts the
/// entries whose original source is in `wanted`, reading at most `max_entries` entries.
/// Memory stays bounded by `wanted`, whatever sources the table holds (anyone on the network
/// can make entries).
pub fn count_sources(wanted: &HashSet<IpAddr>, max_entries: u64) -> io::Result<SourceCounts> {
    // SAFETY: a plain socket call; the descriptor is owned below.
    let fd =
        unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval { tv_sec: RECEIVE_TIMEOUT.as_secs() as _, tv_usec: 0 };
    // SAFETY: setsockopt with a timeval of the size given.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    let request = dump_request();
    // SAFETY: sends `request`'s bytes to the kernel (a zeroed sockaddr_nl is the kernel).
    let sent = unsafe {
        let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
        kernel.nl_family = libc::AF_NETLINK as _;
        libc::sendto(
            socket.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut counts = SourceCounts::default();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: receives into `buffer`, within its length.
        let read = unsafe { libc::recv(socket.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        if read < 0 {
            return Err(io::Error::last_os_error());
        }
        match parse_batch(&buffer[..read as usize], wanted, &mut counts)? {
            Batch::Done => return Ok(counts),
            Batch::More if counts.entries >= max_entries => {
                counts.truncated = true;
                return Ok(counts);
            }
            Batch::More => {}
        }
    }
}

/// An `IPCTNL_MSG_CT_GET` dump request for every family.
fn dump_request() -> Vec<u8> {
    let mut request = Vec::with_capacity(20);
    request.extend_from_slice(&20u32.to_ne_bytes());
    request.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET).to_ne_bytes());
    request.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    request.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel assigns one
    request.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]); // nfgenmsg: family, version, res_id
    request
}

#[derive(Debug, PartialEq, Eq)]
enum Batch {
    More,
    Done,
}

/// One `recv`'s netlink messages: each conntrack entry's original source is counted.
fn parse_batch(mut bytes: &[u8], wanted: &HashSet<IpAddr>, counts: &mut SourceCounts) -> io::Result<Batch> {
    while bytes.len() >= 16 {
        let length = u32::from_ne_bytes(bytes[0..4].try_into().unwrap_or_default()) as usize;
        let kind = u16::from_ne_bytes([bytes[4], bytes[5]]);
        if length < 16 || length > bytes.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message"));
        }
        let payload = &bytes[16..length];
        match kind {
            NLMSG_DONE => return Ok(Batch::Done),
            NLMSG_ERROR => {
                let code =
                    payload.get(..4).map_or(0, |c| i32::from_ne_bytes(c.try_into().unwrap_or_default()));
                if code != 0 {
                    return Err(io::Error::from_raw_os_error(-code));
                }
            }
            _ => {
                counts.entries += 1;
                // After the 4-byte nfgenmsg: the entry's attributes.
                if let Some(source) = payload.get(4..).and_then(original_source)
                    && wanted.contains(&source)
                {
                    *counts.by_source.entry(source).or_default() += 1;
                }
            }
        }
        bytes = &bytes[align(length).min(bytes.len())..];
    }
    Ok(Batch::More)
}

fn align(length: usize) -> usize {
    (length + 3) & !3
}

/// The attribute of type `kind` in a run of netlink attributes.
fn attribute(mut attributes: &[u8], kind: u16) -> Option<&[u8]> {
    while attributes.len() >= 4 {
        let length = u16::from_ne_bytes([attributes[0], attributes[1]]) as usize;
        let this = u16::from_ne_bytes([attributes[2], attributes[3]]) & NLA_TYPE_MASK;
        if length < 4 || length > attributes.len() {
            return None;
        }
        if this == kind {
            return Some(&attributes[4..length]);
        }
        attributes = &attributes[align(length).min(attributes.len())..];
    }
    None
}

/// CTA_TUPLE_ORIG → CTA_TUPLE_IP → CTA_IP_V4_SRC or CTA_IP_V6_SRC.
fn original_source(attributes: &[u8]) -> Option<IpAddr> {
    let ip = attribute(attribute(attributes, CTA_TUPLE_ORIG)?, CTA_TUPLE_IP)?;
    if let Some(v4) = attribute(ip, CTA_IP_V4_SRC) {
        return Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(v4).ok()?)));
    }
    attribute(ip, CTA_IP_V6_SRC)
        .and_then(|v6| Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(v6).ok()?))))
}

#[cfg(test)]
mod tests;
