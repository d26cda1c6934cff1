//! Network: traffic per cgroup (`cgroup_skb` ingress and egress on the v2 root), per interface,
//! direction and protocol (TC; XDP for received frames when configured), TCP connection health (`sock` and `tcp` tracepoints) and packet drops by
//! reason (`skb:kfree_skb`), all aggregated in the kernel.

/// Per-CPU hash `TrafficKey` → `Traffic`: packets and bytes per (cgroup, direction).
pub const CGROUP_TRAFFIC_MAP: &str = "NET_CGROUP_TRAFFIC";
/// Array `u64` by slot: the cgroup v2 id whose traffic the slot's row in
/// `CGROUP_TRAFFIC_ROWS_MAP` counts (0: none). A cgroup's slot is its id masked by
/// `TRAFFIC_SLOT_MASK_GLOBAL`; the agent claims it for a cgroup found in `CGROUP_TRAFFIC_MAP`
/// while no other holds it. Cgroups without one count in that hash.
pub const CGROUP_TRAFFIC_TAGS_MAP: &str = "NET_TRAFFIC_TAGS";
/// Per-CPU array `TrafficRow` by slot: packets and bytes of the slot's cgroup per direction.
pub const CGROUP_TRAFFIC_ROWS_MAP: &str = "NET_TRAFFIC_ROWS";
/// Read-only global (`u64`): the number of traffic slots less one (a power of two less one).
pub const TRAFFIC_SLOT_MASK_GLOBAL: &str = "TRAFFIC_SLOT_MASK";
/// Read-only global (`u8`): 1 where the ingress program adds to its row without atomics (not
/// on PREEMPT_RT kernels).
pub const INGRESS_PLAIN_ADDS_GLOBAL: &str = "INGRESS_PLAIN_ADDS";
/// Per-CPU hash `InterfaceKey` → `Traffic`: frames and bytes per (interface, protocol).
pub const INTERFACE_TRAFFIC_MAP: &str = "NET_INTERFACE_TRAFFIC";
/// Per-CPU hash `TcTrafficKey` → `Traffic`: frames and bytes per (interface, direction,
/// protocol), from the TC programs on ingress and egress.
pub const TC_TRAFFIC_MAP: &str = "NET_TC_TRAFFIC";
/// Array `u32` by slot: the interface index whose traffic the slot's row in
/// `TC_TRAFFIC_ROWS_MAP` counts (0: none). An interface's slot is its index masked by
/// `INTERFACE_SLOTS - 1`; the agent tags the slots of the interfaces it attached to, and an
/// interface whose slot another holds counts in `TC_TRAFFIC_MAP`.
pub const TC_TRAFFIC_TAGS_MAP: &str = "NET_TC_TAGS";
/// Per-CPU array `InterfaceRow` by slot: frames and bytes of the slot's interface per protocol
/// and direction.
pub const TC_TRAFFIC_ROWS_MAP: &str = "NET_TC_ROWS";
/// The XDP family's slots, as the TC family's: tags, and rows of which only the ingress column
/// counts; an interface without a slot counts in `INTERFACE_TRAFFIC_MAP`.
pub const XDP_TRAFFIC_TAGS_MAP: &str = "NET_XDP_TAGS";
pub const XDP_TRAFFIC_ROWS_MAP: &str = "NET_XDP_ROWS";
/// Slots of each family's two maps above: a power of two. Nodes watch a few interfaces (those
/// of the default routes, or a configured list); a slot costs 352 bytes a CPU.
pub const INTERFACE_SLOTS: u32 = 16;
/// Read-only global (`u8`): 1 where the TC and XDP programs add to their row without atomics
/// (not on PREEMPT_RT kernels).
pub const INTERFACE_PLAIN_ADDS_GLOBAL: &str = "INTERFACE_PLAIN_ADDS";
/// Per-CPU hash `TcpKey` → `u64`: TCP events per (cgroup, event).
pub const TCP_EVENTS_MAP: &str = "NET_TCP_EVENTS";
/// LRU hash socket address → `TcpStart`: when a connection began, and whose it is.
pub const TCP_STARTS_MAP: &str = "NET_TCP_STARTS";
/// Per-CPU array indexed by drop reason: packets the kernel dropped (`skb:kfree_skb`).
pub const DROP_REASONS_MAP: &str = "NET_DROP_REASONS";
/// Per-CPU hash `DropKey` → `u64`: drops per (cgroup, reason), for packets of a known socket.
pub const CGROUP_DROPS_MAP: &str = "NET_CGROUP_DROPS";

/// Default bounds of the maps above (config `[network]`).
pub const DEFAULT_CGROUP_TRAFFIC_ENTRIES: u32 = 8192;
pub const DEFAULT_INTERFACE_TRAFFIC_ENTRIES: u32 = 1024;
pub const DEFAULT_TCP_EVENTS_ENTRIES: u32 = 16_384;
pub const DEFAULT_TCP_STARTS_ENTRIES: u32 = 65_536;
pub const DEFAULT_CGROUP_DROPS_ENTRIES: u32 = 8192;

/// Traffic slots for a `CGROUP_TRAFFIC_MAP` of `max_entries` (two a cgroup): a power of two, a
/// slot for each cgroup the hash holds, at least 1.
pub const fn cgroup_traffic_slots(max_entries: u32) -> u32 {
    let cgroups = max_entries / 2;
    if cgroups <= 1 { 1 } else { 1 << (31 - cgroups.leading_zeros()) }
}

/// Reasons counted by number in `DROP_REASONS`; larger numbers (a future kernel) count in the
/// last slot.
pub const DROP_REASON_SLOTS: u32 = 256;
pub const DROP_REASON_OTHER: u32 = DROP_REASON_SLOTS - 1;
/// The slot of drops the kernel gives no reason for: every drop before 5.17, whose
/// `skb:kfree_skb` has no reason. Exported as `NOT_SPECIFIED`, the kernel's own name for a drop
/// without a reason (a slot of its own: today's kernels number theirs 2, 5.17's 0).
pub const DROP_REASON_UNSPECIFIED: u32 = DROP_REASON_SLOTS - 2;

/// Read-only globals (`u32`): BTF offsets of `sock.sk_cgrp_data` and
/// `sock_cgroup_data.cgroup` (the socket's v2 cgroup), `sk_buff.sk`.
pub const SOCK_CGROUP_DATA_OFFSET_GLOBAL: &str = "SOCK_CGRP_DATA_OFFSET";
pub const SOCK_CGROUP_DATA_CGROUP_OFFSET_GLOBAL: &str = "SOCK_CGRP_DATA_CGROUP_OFFSET";
pub const SKB_SK_OFFSET_GLOBAL: &str = "SKB_SK_OFFSET";
/// Read-only global (`u32`): BTF offset of `sk_buff.cb` plus that of `tcp_skb_cb.tcp_gso_segs`
/// (the segments a TCP skb holds: what the kernel's `RetransSegs` adds per retransmission).
pub const SKB_TCP_GSO_SEGS_OFFSET_GLOBAL: &str = "SKB_TCP_GSO_SEGS_OFFSET";
/// Read-only globals (`u32`): BTF offsets of `sock.__sk_common.skc_state` and `sock.sk_protocol`.
pub const SOCK_STATE_OFFSET_GLOBAL: &str = "SOCK_STATE_OFFSET";
pub const SOCK_PROTOCOL_OFFSET_GLOBAL: &str = "SOCK_PROTOCOL_OFFSET";
/// Read-only globals (`u32`, 0 or 1): whether this kernel's `tcp_retransmit_skb` has its `err`
/// argument (6.10+) and `kfree_skb` its `reason` (5.17+) and `rx_sk` (6.12+) arguments, from
/// their tracefs `format`. The programs only read arguments the kernel has (the verifier rejects
/// the others).
pub const RETRANSMIT_HAS_ERR_GLOBAL: &str = "RETRANSMIT_HAS_ERR";
pub const KFREE_SKB_HAS_REASON_GLOBAL: &str = "KFREE_SKB_HAS_REASON";
pub const KFREE_SKB_HAS_RX_SK_GLOBAL: &str = "KFREE_SKB_HAS_RX_SK";

/// `TrafficKey::direction`.
pub const INGRESS: u32 = 0;
pub const EGRESS: u32 = 1;

/// `InterfaceKey::protocol`: what the XDP parser found in a frame.
pub mod protocol {
    pub const IPV4_TCP: u32 = 0;
    pub const IPV4_UDP: u32 = 1;
    pub const IPV4_ICMP: u32 = 2;
    pub const IPV4_OTHER: u32 = 3;
    pub const IPV6_TCP: u32 = 4;
    pub const IPV6_UDP: u32 = 5;
    pub const IPV6_ICMP: u32 = 6;
    pub const IPV6_OTHER: u32 = 7;
    pub const ARP: u32 = 8;
    /// Another EtherType (after VLAN tags, if any).
    pub const OTHER: u32 = 9;
    /// A header the frame claims but does not hold: truncated Ethernet, VLAN, IP or L4 header,
    /// IPv4 IHL below 5, an IP length beyond the frame or below the header.
    pub const MALFORMED: u32 = 10;
    pub const COUNT: u32 = 11;
}

/// `TcpKey::event`.
pub mod tcp_event {
    /// SYN_SENT → ESTABLISHED: an outgoing connection succeeded.
    pub const CONNECTED: u32 = 0;
    /// SYN_RECV → ESTABLISHED: an incoming connection was accepted by the kernel.
    pub const ACCEPTED: u32 = 1;
    /// SYN_SENT → CLOSE: an outgoing connection failed (refused, timed out, unreachable).
    pub const FAILED: u32 = 2;
    pub const RETRANSMIT: u32 = 3;
    pub const RESET_SENT: u32 = 4;
    pub const RESET_RECEIVED: u32 = 5;
    /// Connection lifetime histogram: `DURATION_BUCKETS + b` holds connections that lasted
    /// `[2^(b-1), 2^b)` ns (see `counters::latency_bucket`), `DURATION_SUM` their total ns.
    pub const DURATION_BUCKETS: u32 = 16;
    pub const DURATION_SUM: u32 = DURATION_BUCKETS + crate::counters::LATENCY_SUM_BUCKET;
}

/// The cgroup id used for events with no socket to attribute them to (a reset answering a
/// segment for which no socket exists).
pub const NO_SOCKET_CGROUP_ID: u64 = 1 << 62;

/// Packets and bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<Traffic>() == 16);

/// A traffic slot's counts (`CGROUP_TRAFFIC_ROWS_MAP`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficRow {
    pub ingress: Traffic,
    pub egress: Traffic,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TrafficKey {
    /// The socket's cgroup v2 id (`bpf_skb_cgroup_id`); 0: the overflow entry.
    pub cgroup_id: u64,
    /// `INGRESS` or `EGRESS`.
    pub direction: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<TrafficKey>() == 16);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InterfaceKey {
    /// `ingress_ifindex` of the frame; 0: the overflow entry.
    pub ifindex: u32,
    /// One of `protocol`.
    pub protocol: u32,
}
const _: () = assert!(core::mem::size_of::<InterfaceKey>() == 8);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcTrafficKey {
    /// `skb->ifindex`: the interface the TC program runs on; 0: the overflow entry.
    pub ifindex: u32,
    /// One of `protocol`.
    pub protocol: u32,
    /// `INGRESS` or `EGRESS`.
    pub direction: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<TcTrafficKey>() == 16);

/// An interface slot's counts (`TC_TRAFFIC_ROWS_MAP`, `XDP_TRAFFIC_ROWS_MAP`): by protocol,
/// then by direction (`INGRESS`, `EGRESS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceRow {
    pub by_protocol: [[Traffic; 2]; protocol::COUNT as usize],
}
const _: () = assert!(core::mem::size_of::<InterfaceRow>() == 352);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpKey {
    /// The socket's cgroup v2 id, `NO_SOCKET_CGROUP_ID`, or 0 (overflow).
    pub cgroup_id: u64,
    /// One of `tcp_event`.
    pub event: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<TcpKey>() == 16);

/// When a connection began (ns, `bpf_ktime_get_ns`) and the cgroup of its socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStart {
    pub start_ns: u64,
    pub cgroup_id: u64,
}
const _: () = assert!(core::mem::size_of::<TcpStart>() == 16);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DropKey {
    pub cgroup_id: u64,
    pub reason: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<DropKey>() == 16);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]` integer structs with explicit padding.
    unsafe impl aya::Pod for super::Traffic {}
    unsafe impl aya::Pod for super::TrafficKey {}
    unsafe impl aya::Pod for super::TrafficRow {}
    unsafe impl aya::Pod for super::InterfaceKey {}
    unsafe impl aya::Pod for super::TcTrafficKey {}
    unsafe impl aya::Pod for super::InterfaceRow {}
    unsafe impl aya::Pod for super::TcpKey {}
    unsafe impl aya::Pod for super::TcpStart {}
    unsafe impl aya::Pod for super::DropKey {}
}
