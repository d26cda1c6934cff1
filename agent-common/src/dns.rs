//! DNS per workload (`dns` family): the `cgroup_skb` programs on the cgroup v2 root copy the
//! DNS messages a workload's sockets send to port 53 and receive from port 53 (UDP and TCP, IPv4
//! and IPv6) into a ring buffer; the agent parses them (never the kernel: a name is up to 255
//! bytes of labels and compression pointers) and matches answers to queries.

pub const DNS_EVENTS_MAP: &str = "DNS_EVENTS";
pub const DNS_EVENTS_LOST_MAP: &str = "DNS_EVENTS_LOST";
/// Room for 2,048 records in flight: DNS is a few thousand messages a second on a busy node, read
/// as they come; a flood beyond it is counted lost, never blocks a packet.
pub const DNS_EVENTS_BYTES: u32 = 2 * 1024 * 1024;
/// The port the programs watch (global: a test may move it off the privileged port).
pub const DNS_PORT_GLOBAL: &str = "DNS_PORT_NUMBER";
pub const DNS_PORT: u16 = 53;
/// Bytes of a message copied: the header (12), the longest name (255) and its type and class
/// (4), plus TCP's 2-byte length prefix, rounded up. Answers past it are never needed.
pub const DNS_CAPTURE_BYTES: usize = 512;

pub const EGRESS: u8 = 0;
pub const INGRESS: u8 = 1;
pub const PROTOCOL_UDP: u8 = 17;
pub const PROTOCOL_TCP: u8 = 6;

/// One DNS segment or datagram: a query a workload sent (egress to the DNS port) or an answer
/// it received (ingress from it). Addresses are IPv6 or IPv4 in the first 4 bytes, as they were
/// on the wire; ports in host order. `payload` holds `captured` bytes of the UDP or TCP payload,
/// which was `payload_len` bytes long.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DnsEvent {
    pub timestamp_ns: u64,
    pub cgroup_id: u64,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub local_port: u16,
    pub remote_port: u16,
    pub payload_len: u16,
    pub captured: u16,
    /// 4 or 6.
    pub ip_version: u8,
    pub protocol: u8,
    pub direction: u8,
    pub _pad: [u8; 5],
    pub payload: [u8; DNS_CAPTURE_BYTES],
}

/// The size of a record, header included.
pub const DNS_EVENT_SIZE: usize = core::mem::size_of::<DnsEvent>();
/// Where the payload starts in a record.
pub const DNS_PAYLOAD_OFFSET: usize = DNS_EVENT_SIZE - DNS_CAPTURE_BYTES;

const _: () = assert!(DNS_EVENT_SIZE == 64 + DNS_CAPTURE_BYTES);
const _: () = assert!(DNS_CAPTURE_BYTES.is_power_of_two());
