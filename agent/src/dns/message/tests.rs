use proptest::prelude::*;

use super::*;

/// A message with one question for `labels`, as a resolver sends it.
fn message(id: u16, flags: u16, labels: &[&[u8]], qtype: u16) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(&flags.to_be_bytes());
    bytes.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for label in labels {
        bytes.push(label.len() as u8);
        bytes.extend_from_slice(label);
    }
    bytes.push(0);
    bytes.extend_from_slice(&qtype.to_be_bytes());
    bytes.extend_from_slice(&1u16.to_be_bytes());
    bytes
}

#[test]
fn a_query_and_an_nxdomain_answer() {
    let query = parse(&message(0x1234, 0x0100, &[b"db", b"prod", b"svc"], 28)).unwrap();
    assert_eq!(
        query,
        Message {
            id: 0x1234,
            response: false,
            opcode: 0,
            rcode: 0,
            truncated: false,
            answers: 0,
            qtype: 28,
            name: "db.prod.svc.".to_owned()
        }
    );
    let answer = parse(&message(0x1234, 0x8183, &[b"db", b"prod", b"svc"], 28)).unwrap();
    assert!(answer.response);
    assert_eq!(rcode_name(answer.rcode), "NXDOMAIN");
    assert_eq!(qtype_name(answer.qtype), "AAAA");
}

#[test]
fn the_root_and_escaped_bytes() {
    assert_eq!(parse(&message(1, 0, &[], 2)).unwrap().name, ".");
    let name = parse(&message(1, 0, &[b"a\"b c\n", b"x.y"], 1)).unwrap().name;
    assert_eq!(name, "a\\034b\\032c\\010.x\\046y.");
}

#[test]
fn a_name_through_a_backwards_pointer_resumes_after_the_pointer() {
    // Question 1 at 12: "a.b."; the bytes after it point back to it (a second question's name).
    let mut bytes = message(7, 0, &[b"a", b"b"], 1);
    let pointer_at = bytes.len();
    bytes.extend_from_slice(&[0xc0, 12, 0, 5]);
    assert_eq!(read_name(&bytes, pointer_at), Ok(("a.b.".to_owned(), pointer_at + 2)));
}

#[test]
fn loops_forward_pointers_and_reserved_labels_are_malformed() {
    let mut looping = message(7, 0, &[], 1);
    looping.truncate(12);
    looping.extend_from_slice(&[0xc0, 12, 0, 1]);
    assert_eq!(parse(&looping), Err(Malformed::BadPointer));
    let mut forward = message(7, 0, &[], 1);
    forward.truncate(12);
    forward.extend_from_slice(&[0xc0, 20, 0, 1, 0, 0, 0, 0, 0]);
    assert_eq!(parse(&forward), Err(Malformed::BadPointer));
    let mut reserved = message(7, 0, &[], 1);
    reserved[12] = 0x40;
    assert_eq!(parse(&reserved), Err(Malformed::BadLabel));
}

#[test]
fn short_empty_long_and_cut_messages_are_malformed() {
    assert_eq!(parse(&[0; 11]), Err(Malformed::Short));
    let mut none = message(1, 0, &[b"a"], 1);
    none[5] = 0;
    assert_eq!(parse(&none), Err(Malformed::NoQuestion));
    let long: Vec<&[u8]> = vec![&[b'x'; 63]; 4];
    assert_eq!(parse(&message(1, 0, &long, 1)), Err(Malformed::NameTooLong));
    let whole = message(1, 0, &[b"abc"], 1);
    // Up to the type (the class is not read).
    for cut in 12..whole.len() - 2 {
        assert_eq!(parse(&whole[..cut]), Err(Malformed::Truncated), "cut at {cut}");
    }
}

#[test]
fn labels_outside_the_known_sets_are_other() {
    assert_eq!(qtype_name(0xffff), "other");
    assert_eq!(rcode_name(11), "other");
    assert_eq!(rcode_name(15), "other");
    assert_eq!(qtype_name(65), "HTTPS");
    assert_eq!((qtype_name(28), qtype_name(257)), ("AAAA", "CAA"));
    assert_eq!(rcode_name(3), "NXDOMAIN");
}

proptest! {
    // The fuzzing of the parser: any bytes, a result or an error, never a panic, a hang or a
    // name past 255 bytes of wire form (1,020 characters escaped).
    #[test]
    fn any_bytes_parse_or_are_malformed(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(message) = parse(&bytes) {
            prop_assert!(message.name.len() <= 4 * MAX_NAME_LEN);
        }
    }

    // Any bytes after a valid header: pointers, labels and lengths at random.
    #[test]
    fn any_question_bytes_parse_or_are_malformed(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut bytes = message(9, 0x0100, &[], 1);
        bytes.truncate(12);
        bytes.extend_from_slice(&tail);
        let _ = parse(&bytes);
    }

    #[test]
    fn every_well_formed_question_round_trips(
        labels in proptest::collection::vec("[a-z0-9-]{1,20}", 0..8),
        qtype in any::<u16>(),
        id in any::<u16>(),
    ) {
        let wire: Vec<&[u8]> = labels.iter().map(|l| l.as_bytes()).collect();
        let parsed = parse(&message(id, 0x8180, &wire, qtype)).unwrap();
        let expected = if labels.is_empty() { ".".to_owned() } else { format!("{}.", labels.join(".")) };
        prop_assert_eq!(parsed.name, expected);
        prop_assert_eq!((parsed.id, parsed.qtype, parsed.response), (id, qtype, true));
    }
}

/// An answer to `query` with an A record for each of `addresses`, after a CNAME, each record's
/// name a pointer to the question's.
fn answer(query: &[u8], addresses: &[[u8; 4]]) -> Vec<u8> {
    let mut bytes = query.to_vec();
    bytes[2] = 0x81;
    bytes[6..8].copy_from_slice(&((addresses.len() + 1) as u16).to_be_bytes());
    bytes.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 12]);
    for address in addresses {
        bytes.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        bytes.extend_from_slice(address);
    }
    bytes
}

#[test]
fn a_query_is_written_and_the_answers_addresses_read() {
    let query = query(7, "svc.test.", 1).unwrap();
    assert_eq!(query, message(7, 0x0100, &[b"svc", b"test"], 1));
    assert_eq!(parse(&query).unwrap().name, "svc.test.");
    let reply = answer(&query, &[[10, 0, 0, 1], [10, 0, 0, 2]]);
    let addresses = answer_addresses(&reply).unwrap();
    assert_eq!(addresses, ["10.0.0.1".parse::<std::net::IpAddr>().unwrap(), "10.0.0.2".parse().unwrap()]);
    assert_eq!(answer_addresses(&reply[..reply.len() - 2]), Err(Malformed::Truncated));
    for bad in ["", "a..b", &"x".repeat(64), &vec!["y".repeat(60); 5].join(".")] {
        assert_eq!(super::query(1, bad, 1), None, "{bad:?}");
    }
}

proptest! {
    /// Whatever follows a well-formed question, reading its answers never panics.
    #[test]
    fn answers_of_arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..300), count in 0u16..100) {
        let mut bytes = super::query(1, "a.example", 1).unwrap();
        bytes[6..8].copy_from_slice(&count.to_be_bytes());
        bytes.extend(tail);
        let _ = answer_addresses(&bytes);
    }
}
