//! DNS per workload: `cgroup_skb` programs on the cgroup v2 root copy every message a socket sends
//! to the DNS port (egress) or receives from it (ingress), UDP or TCP, IPv4 or IPv6 without
//! extension headers, into `DNS_EVENTS`. Nothing is parsed here beyond the IP and transport
//! headers: the agent parses the message (names, types, rcodes) and matches answers to queries.
//! Every other packet costs two header reads and a compare. The programs always return 1.
//!
//! The headers every packet pays for are read straight from the packet (`header`), compared
//! first against the end of its linear part; only a packet paged past its headers takes
//! `bpf_skb_load_bytes`, which reads the pages too. A DNS message's own bytes always take the
//! helper.

use aya_ebpf::{
    EbpfContext as _,
    bindings::__sk_buff,
    helpers::{bpf_ktime_get_ns, bpf_skb_cgroup_id, bpf_skb_load_bytes},
    macros::{cgroup_skb, map},
    maps::{PerCpuArray, RingBuf},
    programs::SkBuffContext,
};
use kernsight_common::dns::{
    DNS_CAPTURE_BYTES, DNS_EVENTS_BYTES, DNS_PORT, DnsEvent, EGRESS, INGRESS, PROTOCOL_TCP, PROTOCOL_UDP,
};

use crate::{counters::atomic_add, task::global};

#[map]
static DNS_EVENTS: RingBuf = RingBuf::with_byte_size(DNS_EVENTS_BYTES, 0);

#[map]
static DNS_EVENTS_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[unsafe(no_mangle)]
static DNS_PORT_NUMBER: u16 = DNS_PORT;

/// `DNS_CAPTURE_BYTES - 1`, read as a global so that the compiler keeps the mask: the length of
/// the copy must be bounded where the verifier sees it.
#[unsafe(no_mangle)]
static DNS_CAPTURE_MASK: u32 = DNS_CAPTURE_BYTES as u32 - 1;

const ALLOW: i32 = 1;
const IPV4_MIN_HLEN: u32 = 20;
const IPV6_HLEN: u32 = 40;
const UDP_HLEN: u32 = 8;
const IP_MF_OFFSET_MASK: u16 = 0x1fff;

/// Where the packet's addresses, ports and payload are.
struct Flow {
    ip_version: u8,
    protocol: u8,
    /// Offset of the source address; the destination follows it.
    addresses: u32,
    source_port: u16,
    destination_port: u16,
    /// Offset of the transport header.
    transport: u32,
}

/// A big-endian 16-bit field, as two bytes (old verifiers know nothing of a byte swap's result).
#[inline(always)]
fn be16(high: u8, low: u8) -> u16 {
    u16::from(high) << 8 | u16::from(low)
}

/// `N` bytes at `offset` from the IP header. Read in place where the packet's linear part holds
/// them (a socket's headers nearly always are): two helper calls a packet cost 40 ns of the
/// 95 ns these programs took on every packet (kernel's account, a UDP flood on loopback).
#[inline(always)]
fn header<const N: usize>(ctx: &SkBuffContext, offset: usize) -> Option<[u8; N]> {
    let at = ctx.data() + offset;
    if at + N <= ctx.data_end() {
        // SAFETY: `at + N` was compared with the end of the packet's linear part just above, in
        // the form the verifier tracks.
        return Some(unsafe { core::ptr::read_unaligned(at as *const [u8; N]) });
    }
    ctx.load::<[u8; N]>(offset).ok()
}

/// The addresses and ports of an IPv4 or IPv6 UDP or TCP packet, from the IP header's first 20
/// bytes and the ports (every packet pays these two reads; the rest only DNS).
#[inline(always)]
fn flow(ctx: &SkBuffContext) -> Option<Flow> {
    let ip = header::<{ IPV4_MIN_HLEN as usize }>(ctx, 0)?;
    let (ip_version, protocol, addresses, transport) = match ip[0] >> 4 {
        4 => {
            let header_len = u32::from(ip[0] & 0x0f) * 4;
            // A later fragment carries no transport header.
            if header_len < IPV4_MIN_HLEN || be16(ip[6], ip[7]) & IP_MF_OFFSET_MASK != 0 {
                return None;
            }
            (4, ip[9], 12, header_len)
        }
        6 => (6, ip[6], 8, IPV6_HLEN),
        _ => return None,
    };
    if protocol != PROTOCOL_UDP && protocol != PROTOCOL_TCP {
        return None;
    }
    let ports = header::<4>(ctx, transport as usize)?;
    Some(Flow {
        ip_version,
        protocol,
        addresses,
        source_port: be16(ports[0], ports[1]),
        destination_port: be16(ports[2], ports[3]),
        transport,
    })
}

/// Where the payload of a DNS packet starts: after the UDP header, or the TCP header's length.
#[inline(always)]
fn payload_offset(ctx: &SkBuffContext, flow: &Flow) -> Option<u32> {
    if flow.protocol == PROTOCOL_UDP {
        return Some(flow.transport + UDP_HLEN);
    }
    let data_offset = ctx.load::<u8>(flow.transport as usize + 12).ok()?;
    Some(flow.transport + u32::from(data_offset >> 4) * 4)
}

/// Copies the packet into `DNS_EVENTS` when it is a DNS message (also called by
/// `traffic_and_dns`).
#[inline(always)]
pub(super) fn capture(ctx: &SkBuffContext, direction: u8) {
    let Some(flow) = flow(ctx) else { return };
    let port = global(&DNS_PORT_NUMBER);
    let (local_port, remote_port) = if direction == EGRESS {
        (flow.source_port, flow.destination_port)
    } else {
        (flow.destination_port, flow.source_port)
    };
    if remote_port != port {
        return;
    }
    let Some(payload_at) = payload_offset(ctx, &flow) else { return };
    let length = ctx.len();
    if length <= payload_at {
        return;
    }
    let payload_len = length - payload_at;
    let Some(mut entry) = DNS_EVENTS.reserve::<DnsEvent>(0) else {
        if let Some(lost) = DNS_EVENTS_LOST.get_ptr_mut(0) {
            atomic_add(lost, 1);
        }
        return;
    };
    let event = entry.as_mut_ptr();
    // In [1, DNS_CAPTURE_BYTES], as the verifier sees it.
    let captured = ((payload_len.min(DNS_CAPTURE_BYTES as u32) - 1) & global(&DNS_CAPTURE_MASK)) + 1;
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    let address_len: u32 = if flow.ip_version == 4 { 4 } else { 16 };
    let (local_at, remote_at) = if direction == EGRESS {
        (flow.addresses, flow.addresses + address_len)
    } else {
        (flow.addresses + address_len, flow.addresses)
    };
    // SAFETY: an exclusive reservation of a whole `DnsEvent`; every copy is bounded by the
    // field it fills, and the helper checks it against the packet.
    let copied = unsafe {
        (*event).timestamp_ns = bpf_ktime_get_ns();
        (*event).cgroup_id = bpf_skb_cgroup_id(skb);
        (*event).local_addr = [0; 16];
        (*event).remote_addr = [0; 16];
        let local = (&raw mut (*event).local_addr).cast();
        let remote = (&raw mut (*event).remote_addr).cast();
        let addresses = if flow.ip_version == 4 {
            bpf_skb_load_bytes(skb.cast(), local_at, local, 4) == 0
                && bpf_skb_load_bytes(skb.cast(), remote_at, remote, 4) == 0
        } else {
            bpf_skb_load_bytes(skb.cast(), local_at, local, 16) == 0
                && bpf_skb_load_bytes(skb.cast(), remote_at, remote, 16) == 0
        };
        (*event).local_port = local_port;
        (*event).remote_port = remote_port;
        (*event).payload_len = payload_len.min(u32::from(u16::MAX)) as u16;
        (*event).captured = captured as u16;
        (*event).ip_version = flow.ip_version;
        (*event).protocol = flow.protocol;
        (*event).direction = direction;
        (*event)._pad = [0; 5];
        let payload = (&raw mut (*event).payload).cast();
        addresses && bpf_skb_load_bytes(skb.cast(), payload_at, payload, captured) == 0
    };
    if copied {
        entry.submit(0);
    } else {
        entry.discard(0);
    }
}

#[cgroup_skb(ingress)]
pub fn ks_dns_ingress(ctx: SkBuffContext) -> i32 {
    capture(&ctx, INGRESS);
    ALLOW
}

#[cgroup_skb(egress)]
pub fn ks_dns_egress(ctx: SkBuffContext) -> i32 {
    capture(&ctx, EGRESS);
    ALLOW
}
