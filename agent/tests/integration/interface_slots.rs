//! The interface slots of the TC and XDP families: a watched interface counts in its slot's row
//! (its index masked by the slot count), and one whose slot another interface holds counts in
//! the family's hash; either way each interface's counts are exact. Rows are pinned: an
//! interface watched again by the next agent goes on from its count, and a slot given to
//! another interface starts from zero. Loopback, which every kernel of the matrix has, counts in
//! its row through tcx links, through clsact filters, and through XDP.

use std::{net::UdpSocket, time::Duration};

use kernsight_common::net::{EGRESS, INGRESS, protocol};

use crate::{
    net_support::Link,
    net_tc::{FRAME_HEADERS, exchange},
    support::{
        self, Agent, PinDir, Sample, config_file, parse, path_str, pinned_per_cpu, privileged, sum_u64_at,
        unique_pin_dir, value,
    },
};

/// `kernsight_common::net::INTERFACE_SLOTS`: indexes 2 and 18 share slot 2.
const SLOTS: u32 = 16;
const PAYLOAD: usize = 200;

/// One family's settings and maps.
struct Family {
    counters: &'static str,
    rows: &'static str,
    hash: &'static str,
    /// The overflow entries the agent creates in the hash: one per protocol (and direction).
    overflow_entries: f64,
    /// Whether it sees what an interface sends (XDP does not).
    transmits: bool,
}

const TC: Family = Family {
    counters: "tc",
    rows: "NET_TC_ROWS",
    hash: "NET_TC_TRAFFIC",
    overflow_entries: 22.0,
    transmits: true,
};
const XDP: Family = Family {
    counters: "xdp",
    rows: "NET_XDP_ROWS",
    hash: "NET_INTERFACE_TRAFFIC",
    overflow_entries: 11.0,
    transmits: false,
};

fn config(family: &Family, entries: &[String]) -> String {
    format!("[network]\ninterface_counters = {:?}\ninterfaces = {entries:?}\n", family.counters)
}

/// UDP frames and bytes (received, sent) on `interface` of `netns`.
fn udp_on(samples: &[Sample], netns: &str, interface: &str) -> [u64; 4] {
    let labels = [("interface", interface), ("netns", netns), ("protocol", "ipv4_udp")];
    [
        "kernsight_interface_packets_total",
        "kernsight_interface_bytes_total",
        "kernsight_interface_transmit_packets_total",
        "kernsight_interface_transmit_bytes_total",
    ]
    .map(|name| value(samples, name, &labels) as u64)
}

/// What `n` frames a to b and `m` frames b to a leave on b's side, then on a's.
fn expected(family: &Family, n: u64, m: u64) -> ([u64; 4], [u64; 4]) {
    let frame = FRAME_HEADERS + PAYLOAD as u64;
    let sent = |count: u64| if family.transmits { [count, count * frame] } else { [0, 0] };
    let ([m_sent, m_bytes], [n_sent, n_bytes]) = (sent(m), sent(n));
    ([n, n * frame, m_sent, m_bytes], [m, m * frame, n_sent, n_bytes])
}

fn map_entries(samples: &[Sample], map: &str) -> f64 {
    value(samples, "kernsight_bpf_map_entries", &[("map", map)])
}

fn counts_exactly_in_slots_and_in_the_hash(family: &Family) {
    let _serial = support::serial();
    // a_if 3: a slot of its own. a_if 18: slot 2, which b_if (2, listed first) holds.
    for (a_index, rows, in_hash) in [(3, 2.0, false), (2 + SLOTS, 1.0, true)] {
        let link = Link::with_indexes(a_index, 2);
        let (_dir, path) = config_file(&config(family, &[link.b_xdp_entry(), link.a_entry()]));
        let agent = Agent::start(&["--config", path_str(&path)]);
        const N: u64 = 30;
        const M: u64 = 17;
        exchange(&link, N as usize, M as usize, PAYLOAD);

        let samples = parse(&agent.scrape());
        let on_b = udp_on(&samples, &link.b.name, &link.b_if);
        let on_a = udp_on(&samples, &link.a.name, &link.a_if);
        let what = format!("{}, a_if index {a_index}", family.counters);
        eprintln!("{what}: b_if {on_b:?}, a_if {on_a:?}");
        assert_eq!((on_b, on_a), expected(family, N, M), "{what}: [received, bytes, sent, bytes]");
        assert_eq!(map_entries(&samples, family.rows), rows, "{what}: slots in use");
        let hash = map_entries(&samples, family.hash);
        // The namespaces are the test's own and silent until the exchange: with both interfaces
        // in rows, the hash holds only its overflow entries.
        if in_hash {
            assert!(hash > family.overflow_entries, "{what}: a_if counts in the hash: {hash} entries");
        } else {
            assert_eq!(hash, family.overflow_entries, "{what}: nothing counted in the hash");
        }
    }
}

#[test]
fn tc_counts_exactly_in_slots_and_in_the_hash_when_two_interfaces_share_one() {
    if !privileged() {
        return;
    }
    counts_exactly_in_slots_and_in_the_hash(&TC);
}

#[test]
fn xdp_counts_exactly_in_slots_and_in_the_hash_when_two_interfaces_share_one() {
    if !privileged() {
        return;
    }
    counts_exactly_in_slots_and_in_the_hash(&XDP);
}

fn pinned_rows_go_on_or_start_from_zero(family: &Family) {
    let _serial = support::serial();
    let pins = PinDir(unique_pin_dir("interface-slots"));
    let pin_dir = path_str(&pins.0).to_owned();
    let link = Link::with_indexes(2 + SLOTS, 2);
    let run = |entry: String, n: u64, m: u64| {
        let (_dir, path) = config_file(&config(family, std::slice::from_ref(&entry)));
        let agent = Agent::start(&["--pin-dir", &pin_dir, "--config", path_str(&path)]);
        exchange(&link, n as usize, m as usize, PAYLOAD);
        let samples = parse(&agent.scrape());
        assert_eq!(map_entries(&samples, family.rows), 1.0, "{entry} has its slot");
        assert!(agent.stop().success(), "clean exit on SIGTERM");
        (udp_on(&samples, &link.b.name, &link.b_if), udp_on(&samples, &link.a.name, &link.a_if))
    };
    let what = family.counters;
    let (first, _) = run(link.b_xdp_entry(), 11, 5);
    assert_eq!(first, expected(family, 11, 5).0, "{what}: b_if, first agent");
    let (second, _) = run(link.b_xdp_entry(), 7, 3);
    assert_eq!(second, expected(family, 18, 8).0, "{what}: b_if, second agent: the pinned row goes on");
    // a_if (18) takes slot 2 from b_if (2): its row starts from zero, not from b_if's counts.
    let (_, third) = run(link.a_entry(), 4, 9);
    assert_eq!(third, expected(family, 4, 9).1, "{what}: a_if, third agent");
}

#[test]
fn tc_rows_go_on_for_the_same_interface_and_start_from_zero_for_another() {
    if !privileged() {
        return;
    }
    pinned_rows_go_on_or_start_from_zero(&TC);
}

#[test]
fn xdp_rows_go_on_for_the_same_interface_and_start_from_zero_for_another() {
    if !privileged() {
        return;
    }
    pinned_rows_go_on_or_start_from_zero(&XDP);
}

/// (frames, bytes) of `what` in `direction` in the row of `slot` of the agent's pinned `map`,
/// over all CPUs (`InterfaceRow`: by protocol, then by direction, 16 bytes a cell).
fn pinned_cell(agent: &Agent, map: &str, slot: u32, what: u32, direction: u32) -> (u64, u64) {
    let pins = agent.pin_dir().expect("the agent's own pin directory");
    let cpus = pinned_per_cpu(pins, map, slot);
    let offset = ((what * 2 + direction) * 16) as usize;
    (sum_u64_at(&cpus, offset), sum_u64_at(&cpus, offset + 8))
}

/// `family` on loopback counts our datagrams in lo's row, read back from the pinned map.
fn loopback_counts_in_its_slot(family: &Family) {
    let _serial = support::serial();
    // The least bound the configuration takes: the hash must still hold its overflow entries.
    let text = format!("{}interface_traffic_max_entries = 32\n", config(family, &["lo".to_owned()]));
    let (_dir, path) = config_file(&text);
    let agent = Agent::start(&["--config", path_str(&path)]);
    // SAFETY: a NUL-terminated name.
    let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    let slot = lo % SLOTS;

    const N: u64 = 400;
    let receiver = UdpSocket::bind("127.0.0.1:0").expect("a loopback socket");
    receiver.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let sender = UdpSocket::bind("127.0.0.1:0").expect("a loopback socket");
    let payload = [7u8; PAYLOAD];
    let mut buffer = [0u8; 2048];
    for _ in 0..N {
        sender.send_to(&payload, receiver.local_addr().unwrap()).expect("sent over loopback");
        assert_eq!(receiver.recv(&mut buffer).expect("received over loopback"), PAYLOAD);
    }

    let samples = parse(&agent.scrape());
    let what = family.counters;
    assert_eq!(map_entries(&samples, family.rows), 1.0, "{what}: lo has its slot:\n{}", agent.log());
    let frame = FRAME_HEADERS + PAYLOAD as u64;
    let mut directions = vec![(INGRESS, "kernsight_interface_packets_total")];
    if family.transmits {
        directions.push((EGRESS, "kernsight_interface_transmit_packets_total"));
    }
    // Other programs of the machine may use loopback too: at least ours are counted.
    for (direction, name) in directions {
        let (frames, bytes) = pinned_cell(&agent, family.rows, slot, protocol::IPV4_UDP, direction);
        eprintln!(
            "{what} on lo (index {lo}), direction {direction}: {frames} UDP frames, {bytes} bytes in its row"
        );
        assert!(
            frames >= N && bytes >= N * frame,
            "{what}, direction {direction}: {frames} frames, {bytes} bytes"
        );
        let exported = value(&samples, name, &[("interface", "lo"), ("protocol", "ipv4_udp")]) as u64;
        assert!(exported >= frames, "{what}: {name}: {exported}, below the row's {frames}");
    }
}

#[test]
fn tc_on_loopback_counts_in_its_slot() {
    if !privileged() {
        return;
    }
    loopback_counts_in_its_slot(&TC);
}

#[test]
fn xdp_on_loopback_counts_in_its_slot() {
    if !privileged() {
        return;
    }
    loopback_counts_in_its_slot(&XDP);
}
