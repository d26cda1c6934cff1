//! A ctnetlink dump of the calling thread's namespace's conntrack table: each entry's original
//! source (to attribute it to a pod) and, for entries whose source was translated (SNAT,
//! masquerade), the translated source and the destination (the NAT picks one source port per
//! entry among ~64k for each translated source, destination, port and protocol).
//!
//! A raw `NETLINK_NETFILTER` socket: one request, and a bounded walk of each reply's
//! attributes. Every length is checked against the bytes received.

use std::{
    collections::{HashMap, HashSet},
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::Duration,
};

/// Where translated connections go: the key the NAT picks source ports for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    /// The source address after translation (the node's).
    pub translated_source: IpAddr,
    pub address: IpAddr,
    pub port: u16,
    /// IPPROTO_TCP, IPPROTO_UDP...
    pub protocol: u8,
}

/// Destinations of translated entries kept apart; the rest are counted together.
pub const MAX_DESTINATIONS: usize = 4096;

/// What one dump of a table found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TableCounts {
    /// Entries whose original source is one of the addresses asked for, by address.
    pub by_source: HashMap<IpAddr, u64>,
    /// Entries whose source was translated, by destination (at most `MAX_DESTINATIONS`).
    pub translated: HashMap<Destination, u64>,
    /// Translated entries toward destinations past `MAX_DESTINATIONS`.
    pub translated_elsewhere: u64,
    /// Entries read in all.
    pub entries: u64,
    /// The dump stopped at the bound before the table's end.
    pub truncated: bool,
}

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
pub(super) const NLMSG_ERROR: u16 = 2;
pub(super) const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
pub(super) const CTA_TUPLE_ORIG: u16 = 1;
pub(super) const CTA_TUPLE_REPLY: u16 = 2;
pub(super) const CTA_TUPLE_IP: u16 = 1;
pub(super) const CTA_TUPLE_PROTO: u16 = 2;
pub(super) const CTA_IP_V4_SRC: u16 = 1;
pub(super) const CTA_IP_V4_DST: u16 = 2;
pub(super) const CTA_IP_V6_SRC: u16 = 3;
pub(super) const CTA_IP_V6_DST: u16 = 4;
pub(super) const CTA_PROTO_NUM: u16 = 1;
pub(super) const CTA_PROTO_DST_PORT: u16 = 3;
/// Attribute types carry the nested and byte-order flags in their top bits.
const NLA_TYPE_MASK: u16 = 0x3fff;
/// A dump that stalls this long is abandoned (it runs on the scrape path's cache refresh).
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Dumps the calling thread's namespace's conntrack table (both families), reading at most
/// `max_entries` entries: counts the entries whose original source is in `wanted`, and the
/// translated ones by destination. Memory stays bounded (`wanted`, `MAX_DESTINATIONS`)
/// whatever the table holds (anyone on the network can make entries).
pub fn count_table(wanted: &HashSet<IpAddr>, max_entries: u64) -> io::Result<TableCounts> {
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
    let mut counts = TableCounts::default();
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
pub(super) enum Batch {
    More,
    Done,
}

/// One `recv`'s netlink messages, each conntrack entry counted into `counts`.
pub(super) fn parse_batch(
    mut bytes: &[u8],
    wanted: &HashSet<IpAddr>,
    counts: &mut TableCounts,
) -> io::Result<Batch> {
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
            // After the 4-byte nfgenmsg: the entry's attributes.
            _ => count_entry(payload.get(4..).unwrap_or_default(), wanted, counts),
        }
        bytes = &bytes[align(length).min(bytes.len())..];
    }
    Ok(Batch::More)
}

fn count_entry(attributes: &[u8], wanted: &HashSet<IpAddr>, counts: &mut TableCounts) {
    counts.entries += 1;
    let Some(original) = attribute(attributes, CTA_TUPLE_ORIG).and_then(tuple) else { return };
    if wanted.contains(&original.source) {
        *counts.by_source.entry(original.source).or_default() += 1;
    }
    // The reply goes back to the source the connection was given: not the original one when
    // it was translated.
    let Some(reply) = attribute(attributes, CTA_TUPLE_REPLY).and_then(tuple) else { return };
    if reply.destination == original.source {
        return;
    }
    let destination = Destination {
        translated_source: reply.destination,
        address: original.destination,
        port: original.destination_port,
        protocol: original.protocol,
    };
    let room = counts.translated.len() < MAX_DESTINATIONS;
    match counts.translated.get_mut(&destination) {
        Some(n) => *n += 1,
        None if room => {
            counts.translated.insert(destination, 1);
        }
        None => counts.translated_elsewhere += 1,
    }
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

struct Tuple {
    source: IpAddr,
    destination: IpAddr,
    protocol: u8,
    /// 0 for protocols without ports (ICMP).
    destination_port: u16,
}

/// CTA_TUPLE_IP's addresses and CTA_TUPLE_PROTO's protocol and destination port.
fn tuple(attributes: &[u8]) -> Option<Tuple> {
    let ip = attribute(attributes, CTA_TUPLE_IP)?;
    let v4 = |kind| Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(attribute(ip, kind)?).ok()?)));
    let v6 = |kind| Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(attribute(ip, kind)?).ok()?)));
    let (source, destination) = match v4(CTA_IP_V4_SRC) {
        Some(source) => (source, v4(CTA_IP_V4_DST)?),
        None => (v6(CTA_IP_V6_SRC)?, v6(CTA_IP_V6_DST)?),
    };
    let proto = attribute(attributes, CTA_TUPLE_PROTO);
    let protocol =
        proto.and_then(|p| attribute(p, CTA_PROTO_NUM)).and_then(|n| n.first().copied()).unwrap_or(0);
    let destination_port = proto
        .and_then(|p| attribute(p, CTA_PROTO_DST_PORT))
        .and_then(|port| Some(u16::from_be_bytes(port.try_into().ok()?)))
        .unwrap_or(0);
    Some(Tuple { source, destination, protocol, destination_port })
}
