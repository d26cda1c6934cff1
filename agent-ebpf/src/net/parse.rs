//! Bounds-checked classification of an Ethernet frame for the interface counters (XDP and TC): Ethernet, up to two
//! VLAN tags (802.1Q, 802.1ad), IPv4 (IHL and total length checked), IPv6 (up to three
//! extension headers walked), then TCP, UDP, ICMP and ICMPv6. Every read is preceded by a comparison against the frame's end, in the form
//! the verifier tracks (packet pointer + constant or bounded offset <= data_end): a frame that
//! claims more than it holds is classified `MALFORMED`, never read past its end.

use kernsight_common::net::protocol;

use crate::task::global;

/// 0xffff, read as a global so that the compiler keeps the masks below: a length from the
/// frame is added to a packet pointer, and the verifiers of 5.10 to 6.12 lost its bounds on the
/// way there ("math between pkt pointer and register with unbounded min value"); masked right
/// before the addition, it is within [0, 0xffff] for every verifier.
#[unsafe(no_mangle)]
static U16_MASK: usize = 0xffff;

/// A 16-bit length from the frame, bounded where the verifier needs to see it.
#[inline(always)]
fn length16(value: u16) -> usize {
    value as usize & global(&U16_MASK)
}

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
/// Type, code, checksum and the 4 bytes every ICMP and ICMPv6 message carries after them.
const ICMP_MIN_LEN: usize = 8;
/// IPv4 "more fragments" flag and fragment offset mask.
const IP_MF: u16 = 0x2000;
const IP_OFFSET: u16 = 0x1fff;

#[inline(always)]
fn read_u8(at: usize) -> u8 {
    // SAFETY: callers check `at + 1 <= end` first.
    unsafe { *(at as *const u8) }
}

/// Two byte loads, not a 16-bit load and a byte swap: verifiers before 6.x know nothing of the
/// result of a byte swap (`BPF_END`), so a length read that way and added to a packet pointer
/// is refused ("math between pkt pointer and register with unbounded min value"); a shift and
/// an or of two bytes stay within [0, 0xffff] for every verifier.
#[inline(always)]
fn read_be16(at: usize) -> u16 {
    // Callers check `at + 2 <= end` first.
    (u16::from(read_u8(at)) << 8) | u16::from(read_u8(at + 1))
}

/// The protocol of the frame that starts at `start`, is readable up to `end` and is
/// `frame_end - start` bytes long. In XDP the two ends are the same; in TC the frame may go on
/// past the readable (linear) part, in paged data: reads are checked against `end`, and the
/// lengths the headers claim against `frame_end`, so a packet whose payload is paged is not
/// called malformed. A header that is itself paged (rare: drivers put the headers in the linear
/// part, and TCP builds them there) is classified `MALFORMED` too.
#[inline(always)]
pub(super) fn classify(start: usize, end: usize, frame_end: usize) -> u32 {
    if start + ETH_HLEN > end {
        return protocol::MALFORMED;
    }
    let mut ethertype = read_be16(start + 12);
    let mut l3 = start + ETH_HLEN;
    // Two tags at most (QinQ); unrolled so that every offset stays a constant.
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        if l3 + VLAN_HLEN > end {
            return protocol::MALFORMED;
        }
        ethertype = read_be16(l3 + 2);
        l3 += VLAN_HLEN;
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            if l3 + VLAN_HLEN > end {
                return protocol::MALFORMED;
            }
            ethertype = read_be16(l3 + 2);
            l3 += VLAN_HLEN;
        }
    }
    match ethertype {
        ETH_P_IP => ipv4(l3, end, frame_end),
        ETH_P_IPV6 => ipv6(l3, end, frame_end),
        ETH_P_ARP => protocol::ARP,
        _ => protocol::OTHER,
    }
}

#[inline(always)]
fn ipv4(l3: usize, end: usize, frame_end: usize) -> u32 {
    if l3 + IPV4_MIN_HLEN > end {
        return protocol::MALFORMED;
    }
    let version_ihl = read_u8(l3);
    // The mask bounds the header length to 60 for the verifier.
    let header_len = ((version_ihl & 0x0f) as usize) * 4;
    if version_ihl >> 4 != 4 || header_len < IPV4_MIN_HLEN {
        return protocol::MALFORMED;
    }
    let total_len = length16(read_be16(l3 + 2));
    if total_len < header_len || l3 + total_len > frame_end {
        return protocol::MALFORMED;
    }
    let fragment = read_be16(l3 + 6);
    let next = read_u8(l3 + 9);
    let l4 = l3 + header_len;
    if l4 > end {
        return protocol::MALFORMED;
    }
    let packet_end = l3 + total_len;
    // A fragment other than the first carries no L4 header; the first one may be shorter than
    // the L4 datagram it starts.
    let later_fragment = fragment & IP_OFFSET != 0;
    let whole = fragment & (IP_MF | IP_OFFSET) == 0;
    match next {
        IPPROTO_TCP if later_fragment || tcp_fits(l4, packet_end, end) => protocol::IPV4_TCP,
        IPPROTO_UDP if later_fragment || udp_fits(l4, packet_end, end, whole) => protocol::IPV4_UDP,
        IPPROTO_ICMP if later_fragment || l4 + ICMP_MIN_LEN <= packet_end => protocol::IPV4_ICMP,
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP => protocol::MALFORMED,
        _ => protocol::IPV4_OTHER,
    }
}

/// IPv6 extension headers walked before the upper-layer header: hop-by-hop options, routing,
/// destination options (length in 8-byte units after the first 8) and fragment (8 bytes).
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DESTINATION: u8 = 60;
/// At most this many: enough for real traffic (MLD's hop-by-hop, a fragment header), and
/// each one is unrolled code the verifier checks.
const IPV6_MAX_EXTENSIONS: usize = 3;

#[inline(always)]
fn ipv6(l3: usize, end: usize, frame_end: usize) -> u32 {
    if l3 + IPV6_HLEN > end {
        return protocol::MALFORMED;
    }
    if read_u8(l3) >> 4 != 6 {
        return protocol::MALFORMED;
    }
    let payload_len = length16(read_be16(l3 + 4));
    let mut next = read_u8(l3 + 6);
    let mut l4 = l3 + IPV6_HLEN;
    // A payload length of 0 after a hop-by-hop header is a jumbogram (RFC 2675), whose length
    // is in that header: its L4 header is not checked against a length.
    let jumbogram = payload_len == 0 && next == IPV6_HOP_BY_HOP;
    if l4 + payload_len > frame_end {
        return protocol::MALFORMED;
    }
    let packet_end = l4 + payload_len;
    let mut later_fragment = false;
    for _ in 0..IPV6_MAX_EXTENSIONS {
        let length = match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DESTINATION => {
                if l4 + 2 > end {
                    return protocol::MALFORMED;
                }
                (read_u8(l4 + 1) as usize) * 8 + 8
            }
            IPV6_FRAGMENT => {
                if l4 + 8 > end {
                    return protocol::MALFORMED;
                }
                later_fragment = read_be16(l4 + 2) & 0xfff8 != 0;
                8
            }
            _ => break,
        };
        next = read_u8(l4);
        l4 += length;
        if l4 > packet_end && !jumbogram {
            return protocol::MALFORMED;
        }
    }
    if jumbogram || later_fragment {
        return match next {
            IPPROTO_TCP => protocol::IPV6_TCP,
            IPPROTO_UDP => protocol::IPV6_UDP,
            IPPROTO_ICMPV6 => protocol::IPV6_ICMP,
            _ => protocol::IPV6_OTHER,
        };
    }
    match next {
        IPPROTO_TCP if tcp_fits(l4, packet_end, end) => protocol::IPV6_TCP,
        IPPROTO_UDP if udp_fits(l4, packet_end, end, true) => protocol::IPV6_UDP,
        IPPROTO_ICMPV6 if l4 + ICMP_MIN_LEN <= packet_end => protocol::IPV6_ICMP,
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMPV6 => protocol::MALFORMED,
        // More extension headers than walked, or another protocol: counted by the IP version.
        _ => protocol::IPV6_OTHER,
    }
}

/// Whether a TCP header (data offset checked) fits in the packet.
#[inline(always)]
fn tcp_fits(l4: usize, packet_end: usize, end: usize) -> bool {
    if l4 + TCP_MIN_HLEN > packet_end || l4 + TCP_MIN_HLEN > end {
        return false;
    }
    let header_len = ((read_u8(l4 + 12) >> 4) as usize) * 4;
    header_len >= TCP_MIN_HLEN && l4 + header_len <= packet_end
}

/// Whether a UDP header fits, and, for an unfragmented packet, whether its length field agrees.
#[inline(always)]
fn udp_fits(l4: usize, packet_end: usize, end: usize, whole: bool) -> bool {
    if l4 + UDP_HLEN > packet_end || l4 + UDP_HLEN > end {
        return false;
    }
    let length = length16(read_be16(l4 + 4));
    !whole || (length >= UDP_HLEN && l4 + length <= packet_end)
}
