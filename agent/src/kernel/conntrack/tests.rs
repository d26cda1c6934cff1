use proptest::prelude::*;

use super::{
    ctnetlink::{
        Batch, CTA_IP_V4_DST, CTA_IP_V4_SRC, CTA_IP_V6_DST, CTA_IP_V6_SRC, CTA_PROTO_DST_PORT, CTA_PROTO_NUM,
        CTA_TUPLE_IP, CTA_TUPLE_ORIG, CTA_TUPLE_PROTO, CTA_TUPLE_REPLY, MAX_DESTINATIONS, NLMSG_DONE,
        NLMSG_ERROR, parse_batch,
    },
    *,
};
use std::collections::HashSet;

/// A 6.18 `/proc/net/stat/nf_conntrack` of two CPUs.
const STATS: &str = "\
entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
0000001b  00000002 00000000 00000000 0000000a 00000000 00000000 00000000 00000000 00000001 00000000 00000010 00000000  00000000 00000000 00000000 00000003
0000001b  00000001 00000000 00000000 00000005 00000000 00000000 00000000 00000000 00000000 00000004 00000001 00000000  00000000 00000000 00000000 00000000
";

#[test]
fn stats_are_summed_over_cpus_by_column_name() {
    let stats = parse_stats(STATS);
    let expected: BTreeMap<&str, u64> = [
        ("clash_resolved", 3),
        ("drop", 4),
        ("early_drop", 17),
        ("icmp_error", 0),
        ("insert_failed", 1),
        ("invalid", 15),
        ("search_restart", 3),
    ]
    .into();
    assert_eq!(stats, expected);
}

#[test]
fn stats_of_a_kernel_without_clashres_and_broken_rows() {
    // An older header, with `searched` where 6.x has clashres; a row of the wrong width is
    // skipped, not misread.
    let text = "entries searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error expect_new expect_create expect_delete search_restart\n\
                00000001 0 0 0 2 0 0 0 0 0 0 0 0 0 0 0 1\n\
                00000001 0 0 0 2\n";
    let stats = parse_stats(text);
    assert_eq!(stats.get("invalid"), Some(&2));
    assert_eq!(stats.get("search_restart"), Some(&1));
    assert_eq!(stats.get("clash_resolved"), None);
    assert!(parse_stats("").is_empty());
}

fn nla(kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out
}

const NESTED: u16 = 0x8000;

/// A tuple attribute of type `kind`: addresses, TCP and the destination port.
fn tuple_attribute(kind: u16, source: IpAddr, destination: IpAddr, port: u16) -> Vec<u8> {
    let address = |kind4, kind6, a: IpAddr| match a {
        IpAddr::V4(v4) => nla(kind4, &v4.octets()),
        IpAddr::V6(v6) => nla(kind6, &v6.octets()),
    };
    let mut ip = address(CTA_IP_V4_SRC, CTA_IP_V6_SRC, source);
    ip.extend(address(CTA_IP_V4_DST, CTA_IP_V6_DST, destination));
    let mut proto = nla(CTA_PROTO_NUM, &[libc::IPPROTO_TCP as u8]);
    proto.extend(nla(CTA_PROTO_DST_PORT, &port.to_be_bytes()));
    let mut body = nla(CTA_TUPLE_IP | NESTED, &ip);
    body.extend(nla(CTA_TUPLE_PROTO | NESTED, &proto));
    nla(kind | NESTED, &body)
}

/// A ctnetlink entry: `source` to `destination:port`, answered to `reply_to` (the source
/// unless it was translated). The reply tuple comes first: tuples are found by type.
fn entry(source: &str, destination: &str, port: u16, reply_to: &str) -> Vec<u8> {
    let [source, destination, reply_to]: [IpAddr; 3] =
        [source, destination, reply_to].map(|a| a.parse().unwrap());
    let mut body = vec![libc::AF_INET as u8, 0, 0, 0];
    body.extend(tuple_attribute(CTA_TUPLE_REPLY, destination, reply_to, 40000));
    body.extend(tuple_attribute(CTA_TUPLE_ORIG, source, destination, port));
    message(0x0100, &body)
}

fn message(kind: u16, body: &[u8]) -> Vec<u8> {
    let mut out = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&[0; 10]);
    out.extend_from_slice(body);
    out
}

#[test]
fn entries_are_counted_by_original_source_and_translated_ones_by_destination() {
    let pod: IpAddr = "10.1.0.7".parse().unwrap();
    let pod6: IpAddr = "fd00::7".parse().unwrap();
    let wanted: HashSet<IpAddr> = [pod, pod6].into();
    let mut bytes = Vec::new();
    // Two masqueraded to 192.0.2.9:443 behind the node's 203.0.113.1, one to a Service
    // (destination translated only), one from elsewhere, one over IPv6.
    bytes.extend(entry("10.1.0.7", "192.0.2.9", 443, "203.0.113.1"));
    bytes.extend(entry("10.1.0.7", "192.0.2.9", 443, "203.0.113.1"));
    bytes.extend(entry("10.1.0.7", "10.96.0.10", 53, "10.1.0.7"));
    bytes.extend(entry("198.51.100.1", "10.1.0.7", 80, "198.51.100.1"));
    bytes.extend(entry("fd00::7", "fd00::1", 80, "fd00::7"));
    let mut counts = TableCounts::default();
    assert_eq!(parse_batch(&bytes, &wanted, &mut counts).unwrap(), Batch::More);
    assert_eq!(counts.entries, 5);
    assert_eq!(counts.by_source, [(pod, 3), (pod6, 1)].into());
    let masqueraded = Destination {
        translated_source: "203.0.113.1".parse().unwrap(),
        address: "192.0.2.9".parse().unwrap(),
        port: 443,
        protocol: libc::IPPROTO_TCP as u8,
    };
    assert_eq!(counts.translated, [(masqueraded, 2)].into());
    assert_eq!(parse_batch(&message(NLMSG_DONE, &[0; 4]), &wanted, &mut counts).unwrap(), Batch::Done);
}

#[test]
fn translated_destinations_past_the_bound_are_counted_together() {
    let mut counts = TableCounts::default();
    let mut bytes = Vec::new();
    for i in 0..MAX_DESTINATIONS as u32 + 10 {
        let destination = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
        bytes.extend(entry("10.1.0.7", &destination, 80, "203.0.113.1"));
    }
    parse_batch(&bytes, &HashSet::new(), &mut counts).unwrap();
    assert_eq!(counts.translated.len(), MAX_DESTINATIONS);
    assert_eq!(counts.translated_elsewhere, 10);
}

#[test]
fn an_error_message_is_an_error_and_a_truncated_one_is_refused() {
    let mut counts = TableCounts::default();
    let denied = message(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes());
    let err = parse_batch(&denied, &HashSet::new(), &mut counts).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    let mut truncated = entry("10.0.0.1", "10.0.0.2", 80, "10.0.0.1");
    truncated[0] = 255;
    assert!(parse_batch(&truncated, &HashSet::new(), &mut counts).is_err());
}

proptest! {
    /// Whatever the bytes, parsing ends without panicking and counts only wanted sources.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let wanted: HashSet<IpAddr> = ["10.0.0.1".parse().unwrap()].into();
        let mut counts = TableCounts::default();
        let _ = parse_batch(&bytes, &wanted, &mut counts);
        prop_assert!(counts.by_source.keys().all(|k| wanted.contains(k)));
        let _ = parse_stats(&String::from_utf8_lossy(&bytes));
    }

    /// A well-formed entry with any field cut short or corrupted never panics either.
    #[test]
    fn corrupted_entries_never_panic(at in 16usize..200, byte in any::<u8>()) {
        let mut bytes = entry("10.0.0.1", "192.0.2.1", 80, "203.0.113.1");
        if let Some(b) = bytes.get_mut(at) {
            *b = byte;
        }
        let _ = parse_batch(&bytes, &HashSet::new(), &mut TableCounts::default());
    }
}

const FIB_TRIE: &str = "\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
     +-- 10.244.1.0/24 2 0 2
           |-- 10.244.1.17
              /32 host LOCAL
        |-- 10.244.1.255
           /32 link BROADCAST
Local:
     +-- 10.244.1.0/24 2 0 2
           |-- 10.244.1.17
              /32 host LOCAL
";

#[test]
fn local_ipv4_addresses_come_from_fib_trie_once_and_without_loopback() {
    assert_eq!(parse_fib_trie_local(FIB_TRIE), vec!["10.244.1.17".parse::<IpAddr>().unwrap()]);
    assert!(parse_fib_trie_local("|-- not an address\n/32 host LOCAL\n").is_empty());
}

#[test]
fn global_ipv6_addresses_come_from_if_inet6() {
    let text = "00000000000000000000000000000001 01 80 10 80       lo
fd000000000000000000000000000002 04 40 00 82     eth0
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
short 04 40 00 82 eth1
";
    assert_eq!(parse_if_inet6_global(text), vec!["fd00::2".parse::<IpAddr>().unwrap()]);
}

#[test]
fn the_entries_column_is_the_namespaces_count() {
    assert_eq!(parse_entries(STATS), Some(0x1b));
    assert_eq!(parse_entries("entries\n"), None);
}

#[test]
fn this_process_namespace_and_table_can_be_read() {
    let root = Path::new("/proc");
    let me = std::process::id();
    assert_eq!(namespace_key(root, me), namespace_key(root, me));
    assert!(namespace_key(root, me).is_some());
    let namespace = read_process_namespace(root, me, 16);
    assert!(namespace.addresses.iter().all(|a| !a.is_loopback()), "{namespace:?}");
    // The dump needs CAP_NET_ADMIN (nfnetlink refuses others) and conntrack in the kernel.
    match count_table(&HashSet::new(), 1_000_000) {
        Ok(counts) => assert!(counts.by_source.is_empty() && !counts.truncated),
        Err(err) => assert!(
            matches!(err.raw_os_error(), Some(libc::EPERM | libc::EOPNOTSUPP | libc::EPROTONOSUPPORT)),
            "{err}"
        ),
    }
}
