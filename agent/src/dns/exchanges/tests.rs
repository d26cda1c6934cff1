use super::*;

const MS: u64 = 1_000_000;

fn limits() -> Limits {
    Limits { timeout_ns: 1_000 * MS, max_pending: 4, max_cgroups: 3 }
}

/// Room for 128 awaited queries, 16 per cgroup.
fn roomy() -> Limits {
    Limits { timeout_ns: 1_000 * MS, max_pending: 128, max_cgroups: 100 }
}

fn wire(id: u16, flags: u16, name: &[u8], qtype: u16) -> Vec<u8> {
    let mut bytes = [id.to_be_bytes(), flags.to_be_bytes(), [0, 1], [0, 0], [0, 0], [0, 0]].concat();
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(&[0, (qtype >> 8) as u8, qtype as u8, 0, 1]);
    bytes
}

fn segment(cgroup_id: u64, at_ms: u64, egress: bool, port: u16, bytes: Vec<u8>) -> Segment {
    Segment {
        timestamp_ns: at_ms * MS,
        cgroup_id,
        egress,
        tcp: false,
        ip_version: 4,
        local: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        remote: [10, 0, 0, 53, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        local_port: port,
        remote_port: 53,
        bytes,
    }
}

fn query(cgroup_id: u64, at_ms: u64, id: u16, qtype: u16) -> Segment {
    segment(cgroup_id, at_ms, true, 40_000 + id, wire(id, 0x0100, b"svc", qtype))
}

fn answer(cgroup_id: u64, at_ms: u64, id: u16, rcode: u16) -> Segment {
    segment(cgroup_id, at_ms, false, 40_000 + id, wire(id, 0x8180 | rcode, b"svc", 1))
}

#[test]
fn answers_match_their_queries_and_the_rest_time_out() {
    let mut dns = Exchanges::new(limits());
    assert!(matches!(dns.observe(&query(7, 0, 1, 1)), Seen::Query(_)));
    assert!(matches!(dns.observe(&query(7, 1, 2, 28)), Seen::Query(_)));
    assert!(matches!(dns.observe(&query(7, 2, 3, 1)), Seen::Query(_)));
    assert!(matches!(dns.observe(&answer(7, 5, 1, 0)), Seen::Answer(_, Some(l)) if l == 5 * MS));
    assert!(matches!(dns.observe(&answer(7, 9, 2, 3)), Seen::Answer(_, Some(l)) if l == 8 * MS));
    assert!(dns.expire(900 * MS).is_empty(), "not yet");
    assert_eq!(dns.expire(1_002 * MS), vec![TimedOut { cgroup_id: 7, qtype: "A", sent_ns: 2 * MS }]);
    let counts = &dns.counts_by_cgroup()[0].1;
    assert_eq!(counts.queries[0] + counts.queries[7], 3);
    assert_eq!((counts.responses[0], counts.responses[3]), (1, 1), "NOERROR, NXDOMAIN");
    assert_eq!(counts.timeouts[0], 1);
    assert_eq!(counts.latency_buckets.iter().sum::<u64>(), 2);
    assert_eq!(counts.latency_sum_ns, 13 * MS);
    assert_eq!(dns.pending(), 0);
    // An answer after its timeout is counted, but matches nothing.
    assert!(matches!(dns.observe(&answer(7, 1_100, 3, 0)), Seen::Answer(_, None)));
    assert_eq!(dns.unmatched, 1);
}

#[test]
fn a_retry_keeps_the_first_send_and_times_out_once() {
    let mut dns = Exchanges::new(limits());
    dns.observe(&query(7, 0, 1, 1));
    dns.observe(&query(7, 500, 1, 1));
    assert_eq!(dns.expire(10_000 * MS).len(), 1);
    assert_eq!(dns.counts_by_cgroup()[0].1.queries[0], 2, "both sends are queries");
}

#[test]
fn a_flood_of_unanswered_queries_is_bounded_and_counted() {
    let mut dns = Exchanges::new(limits());
    for id in 0..1_000 {
        dns.observe(&query(7, 0, id, 1));
    }
    assert_eq!(dns.pending(), 4);
    assert_eq!(dns.untracked, 996);
    assert_eq!(dns.expire(5_000 * MS).len(), 4);
    assert_eq!(dns.counts_by_cgroup()[0].1.queries[0], 1_000, "every query is counted");
}

#[test]
fn a_flooding_cgroup_takes_its_quota_and_leaves_the_others_timed() {
    let mut dns = Exchanges::new(roomy());
    for id in 0..10_000u16 {
        dns.observe(&query(7, 0, id, 1));
    }
    assert_eq!(dns.pending(), 16, "an eighth of the room");
    assert_eq!(dns.untracked, 10_000 - 16);
    for cgroup in 1..=5 {
        dns.observe(&query(cgroup, 1, 1, 1));
        assert!(matches!(dns.observe(&answer(cgroup, 3, 1, 0)), Seen::Answer(_, Some(l)) if l == 2 * MS));
    }
    dns.observe(&query(1, 4, 2, 1));
    let timed_out = dns.expire(1_004 * MS);
    assert_eq!(timed_out.iter().filter(|t| t.cgroup_id == 1).count(), 1, "timed, so timed out");
    assert_eq!(timed_out.iter().filter(|t| t.cgroup_id == 7).count(), 16);
    // Its quota frees as its queries time out.
    dns.observe(&query(7, 2_000, 1, 1));
    assert_eq!(dns.pending(), 1);
}

#[test]
fn cgroups_past_the_bound_count_as_other_and_gone_ones_are_forgotten() {
    let mut dns = Exchanges::new(limits());
    for cgroup in 1..=10 {
        dns.observe(&query(cgroup, 0, cgroup as u16, 1));
    }
    assert_eq!(dns.cgroups(), 4, "3 and other");
    let other = dns.counts_by_cgroup().into_iter().find(|(id, _)| *id == OVERFLOW_CGROUP_ID).unwrap();
    assert_eq!(other.1.queries[0], 7);
    assert_eq!(dns.forget(&mut |id| id != 2), 2, "other stays");
    assert_eq!(dns.cgroups(), 2);
}

#[test]
fn garbage_and_wrong_directions_are_malformed_on_udp_and_skipped_on_tcp() {
    let mut dns = Exchanges::new(limits());
    assert!(matches!(dns.observe(&segment(7, 0, true, 1, vec![1, 2, 3])), Seen::Malformed(_)));
    // An answer sent to the DNS port from the client's side.
    assert!(matches!(dns.observe(&segment(7, 0, true, 1, wire(1, 0x8180, b"x", 1))), Seen::Malformed(_)));
    let mut tcp = segment(7, 0, true, 1, vec![0xff; 40]);
    tcp.tcp = true;
    assert_eq!(dns.observe(&tcp), Seen::Continuation);
    assert_eq!(dns.counts_by_cgroup()[0].1.malformed, 2);
    assert_eq!(dns.counts_by_cgroup()[0].1.queries.iter().sum::<u64>(), 0);
}

#[test]
fn a_tcp_message_is_read_after_its_length() {
    let mut dns = Exchanges::new(limits());
    let message = wire(9, 0x0100, b"svc", 16);
    let mut framed = (message.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&message);
    let mut segment = segment(7, 0, true, 50_000, framed);
    segment.tcp = true;
    assert!(matches!(dns.observe(&segment), Seen::Query(m) if message::qtype_name(m.qtype) == "TXT"));
}

#[test]
fn records_of_the_wrong_size_or_with_impossible_lengths_do_not_decode() {
    assert!(decode(&[0; 10]).is_err());
    let mut record = vec![0u8; DNS_EVENT_SIZE];
    record[52..54].copy_from_slice(&100u16.to_ne_bytes()); // payload_len
    record[54..56].copy_from_slice(&200u16.to_ne_bytes()); // captured > payload_len
    record[56] = 4;
    assert!(decode(&record).is_err());
    record[54..56].copy_from_slice(&100u16.to_ne_bytes());
    assert_eq!(decode(&record).unwrap().bytes.len(), 100);
    record[56] = 5;
    assert!(decode(&record).is_err(), "IPv5");
}
